//! A bank ledger: a user-defined state machine. Nothing in it knows about networks or logs;
//! lockstep replicates it, serves it and gives it a typed client.

use std::collections::BTreeMap;
use std::io;

use lockstep_core::{ApplyContext, StateDigest, StateMachine, StateSnapshot};
use serde::{Deserialize, Serialize};

/// What clients ask the ledger to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Open an account with an initial balance.
    Open { account: String, balance: u64 },
    /// Move money between accounts; refused if the payer has too little.
    Transfer { from: String, to: String, amount: u64 },
}

/// What clients ask without changing anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// One account's balance.
    Balance(String),
    /// The sum of every balance (constant under transfers).
    Total,
    /// How many transfers were applied.
    Transfers,
}

/// The ledger's answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Done; the balances of the accounts involved afterwards.
    Ok(Vec<(String, u64)>),
    /// A balance or total.
    Amount(u64),
    /// Refused, and why.
    Refused(String),
}

/// The replicated state.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    accounts: BTreeMap<String, u64>,
    transfers: u64,
}

/// A ledger's snapshot: a copy of its accounts.
pub struct LedgerSnapshot(Vec<u8>);

impl StateSnapshot for LedgerSnapshot {
    fn write_to(&self, out: &mut dyn io::Write) -> io::Result<()> {
        out.write_all(&self.0)
    }
}

const FORMAT: u8 = 1;

impl Ledger {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![FORMAT];
        let body = postcard::to_stdvec(&(&self.accounts, self.transfers)).unwrap_or_default();
        bytes.extend_from_slice(&body);
        bytes
    }
}

impl StateMachine for Ledger {
    type Input = Command;
    type Output = Outcome;
    type Query = Query;
    type Snapshot = LedgerSnapshot;

    fn apply(&mut self, command: Command, _: &ApplyContext) -> Outcome {
        match command {
            Command::Open { account, balance } => {
                if self.accounts.contains_key(&account) {
                    return Outcome::Refused(format!("account {account} exists"));
                }
                self.accounts.insert(account.clone(), balance);
                Outcome::Ok(vec![(account, balance)])
            }
            Command::Transfer { from, to, amount } => {
                let (Some(&payer), Some(&payee)) =
                    (self.accounts.get(&from), self.accounts.get(&to))
                else {
                    return Outcome::Refused("no such account".to_string());
                };
                if from == to {
                    return Outcome::Refused("a transfer needs two accounts".to_string());
                }
                if payer < amount {
                    return Outcome::Refused(format!("{from} holds {payer}, less than {amount}"));
                }
                let Some(received) = payee.checked_add(amount) else {
                    return Outcome::Refused(format!("{to} cannot hold that much"));
                };
                self.accounts.insert(from.clone(), payer - amount);
                self.accounts.insert(to.clone(), received);
                self.transfers += 1;
                Outcome::Ok(vec![(from, payer - amount), (to, received)])
            }
        }
    }

    fn query(&self, query: &Query) -> Outcome {
        match query {
            Query::Balance(account) => match self.accounts.get(account) {
                Some(&balance) => Outcome::Amount(balance),
                None => Outcome::Refused(format!("no account {account}")),
            },
            Query::Total => {
                let total =
                    self.accounts.values().try_fold(0u64, |sum, &balance| sum.checked_add(balance));
                match total {
                    Some(total) => Outcome::Amount(total),
                    None => Outcome::Refused("the total does not fit in 64 bits".to_string()),
                }
            }
            Query::Transfers => Outcome::Amount(self.transfers),
        }
    }

    fn snapshot(&self) -> LedgerSnapshot {
        LedgerSnapshot(self.encode())
    }

    fn restore(&mut self, input: &mut dyn io::Read) -> io::Result<()> {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        let bad = |detail: String| io::Error::new(io::ErrorKind::InvalidData, detail);
        match bytes.split_first() {
            Some((&FORMAT, body)) => {
                let (accounts, transfers) =
                    postcard::from_bytes(body).map_err(|error| bad(error.to_string()))?;
                *self = Ledger { accounts, transfers };
                Ok(())
            }
            _ => Err(bad("not a ledger snapshot".to_string())),
        }
    }

    fn digest(&self) -> StateDigest {
        StateDigest(*blake3::hash(&self.encode()).as_bytes())
    }
}
