//! [`Hosted`]: the user's state machine plus what the server itself replicates, the members'
//! addresses.
//!
//! A membership change in the log names replicas by id only; where to reach a new replica
//! must reach every replica too, in the same order. So the server wraps the user's state
//! machine: its inputs are the user's, or an address record, and its snapshots carry the
//! address book before the user's state. The user's state machine sees only its own inputs.

use std::collections::BTreeMap;
use std::io::{self, Read};

use lockstep_core::{ApplyContext, Origin, StateDigest, StateMachine, StateSnapshot};
use serde::{Deserialize, Serialize};

/// Where a member is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddress {
    /// Its id.
    pub id: u64,
    /// Where replicas reach it.
    pub peer: String,
    /// Where clients reach it.
    pub client: String,
    /// Where it serves etcd's API, if it does.
    pub etcd: Option<String>,
}

/// An input of the hosted state machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostInput<I> {
    /// The user's input.
    User(I),
    /// Record a member's addresses.
    Address(MemberAddress),
}

/// An output of the hosted state machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostOutput<O> {
    /// The user's output.
    User(O),
    /// The addresses of this member were recorded (or already were, the same).
    Recorded(u64),
    /// This id is recorded with other addresses: ids are single-use, so it is refused.
    Taken(u64),
}

/// See the module documentation.
pub struct Hosted<M> {
    machine: M,
    addresses: BTreeMap<u64, MemberAddress>,
    /// Raised by every change of the address book (not replicated: for the transport).
    changes: u64,
    /// Test only: apply the user request at this index twice (see `Sabotage::DivergeAt`).
    diverge_at: Option<u64>,
}

impl<M> Hosted<M> {
    /// Hosts `machine`, with no address recorded yet.
    pub fn new(machine: M) -> Hosted<M> {
        Hosted { machine, addresses: BTreeMap::new(), changes: 0, diverge_at: None }
    }

    /// Test only: apply the user request at `index` twice, once, as a state machine that is
    /// not deterministic would (this replica's state and outputs depart from the others').
    #[doc(hidden)]
    #[cfg(feature = "sabotage")]
    pub fn sabotage_diverge_at(&mut self, index: u64) {
        self.diverge_at = Some(index);
    }

    /// The user's state machine.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The recorded addresses.
    pub fn addresses(&self) -> &BTreeMap<u64, MemberAddress> {
        &self.addresses
    }

    /// A number that changes whenever the address book does.
    pub fn address_changes(&self) -> u64 {
        self.changes
    }
}

/// A snapshot of the hosted state machine: the address book, then the user's snapshot.
pub struct HostedSnapshot<S> {
    addresses: Vec<u8>,
    inner: S,
}

const FORMAT: u8 = 1;

/// The largest address book a snapshot may claim to hold.
const ADDRESS_BOOK_BYTES_MAX: u64 = 64 << 20;

impl<S: StateSnapshot> StateSnapshot for HostedSnapshot<S> {
    fn write_to(&self, out: &mut dyn io::Write) -> io::Result<()> {
        out.write_all(&[FORMAT])?;
        out.write_all(&(self.addresses.len() as u64).to_le_bytes())?;
        out.write_all(&self.addresses)?;
        self.inner.write_to(out)
    }
}

impl<M: StateMachine> StateMachine for Hosted<M> {
    type Input = HostInput<M::Input>;
    type Output = HostOutput<M::Output>;
    type Query = M::Query;
    type Snapshot = HostedSnapshot<M::Snapshot>;

    fn apply(&mut self, input: Self::Input, context: &ApplyContext) -> Self::Output {
        match input {
            HostInput::User(input) => {
                if self.diverge_at == Some(context.index.get()) {
                    self.diverge_at = None;
                    // Applied twice: the first time's effect is what departs.
                    let again = postcard::to_stdvec(&input)
                        .ok()
                        .and_then(|bytes| postcard::from_bytes::<M::Input>(&bytes).ok());
                    if let Some(again) = again {
                        let _ = self.machine.apply(again, context);
                    }
                }
                HostOutput::User(self.machine.apply(input, context))
            }
            HostInput::Address(address) => {
                let id = address.id;
                match self.addresses.get(&id) {
                    Some(recorded) if *recorded == address => HostOutput::Recorded(id),
                    // A replica id names one replica forever (the book never forgets one).
                    Some(_) => HostOutput::Taken(id),
                    None => {
                        self.addresses.insert(id, address);
                        self.changes += 1;
                        HostOutput::Recorded(id)
                    }
                }
            }
        }
    }

    fn query(&self, query: &Self::Query) -> Self::Output {
        HostOutput::User(self.machine.query(query))
    }

    fn admit(
        &self,
        input: &Self::Input,
        origin: Origin,
        now_millis: u64,
    ) -> Result<(), Self::Output> {
        match input {
            HostInput::User(input) => {
                self.machine.admit(input, origin, now_millis).map_err(HostOutput::User)
            }
            // Made by the server itself.
            HostInput::Address(_) => Ok(()),
        }
    }

    fn admit_query(
        &self,
        query: &Self::Query,
        origin: Origin,
        now_millis: u64,
    ) -> Result<(), Self::Output> {
        self.machine.admit_query(query, origin, now_millis).map_err(HostOutput::User)
    }

    fn screen(&self, input: &Self::Input, origin: Origin) -> Result<(), String> {
        match input {
            HostInput::User(input) => self.machine.screen(input, origin),
            HostInput::Address(_) => Ok(()),
        }
    }

    fn admit_admin(
        &self,
        credential: Option<&str>,
        origin: Origin,
        now_millis: u64,
    ) -> Result<(), String> {
        self.machine.admit_admin(credential, origin, now_millis)
    }

    fn refuses(&self, output: &Self::Output) -> bool {
        match output {
            HostOutput::User(output) => self.machine.refuses(output),
            HostOutput::Recorded(_) | HostOutput::Taken(_) => false,
        }
    }

    fn snapshot(&self) -> Self::Snapshot {
        let addresses: Vec<&MemberAddress> = self.addresses.values().collect();
        HostedSnapshot {
            addresses: postcard::to_stdvec(&addresses).unwrap_or_default(),
            inner: self.machine.snapshot(),
        }
    }

    fn restore(&mut self, input: &mut dyn io::Read) -> io::Result<()> {
        let invalid = |detail: &str| io::Error::new(io::ErrorKind::InvalidData, detail.to_string());
        let mut header = [0u8; 9];
        input.read_exact(&mut header)?;
        if header[0] != FORMAT {
            return Err(invalid("not a snapshot of a hosted state machine"));
        }
        let length = u64::from_le_bytes(header[1..].try_into().unwrap_or_default());
        if length > ADDRESS_BOOK_BYTES_MAX {
            return Err(invalid("the snapshot's address book is implausibly large"));
        }
        let mut book = Vec::new();
        input.take(length).read_to_end(&mut book)?;
        if book.len() as u64 != length {
            return Err(invalid("the snapshot's address book is cut short"));
        }
        let addresses: Vec<MemberAddress> =
            postcard::from_bytes(&book).map_err(|_| invalid("the address book does not decode"))?;
        self.machine.restore(input)?;
        self.addresses = addresses.into_iter().map(|address| (address.id, address)).collect();
        self.changes += 1;
        Ok(())
    }

    fn digest(&self) -> StateDigest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.machine.digest().0);
        let addresses: Vec<&MemberAddress> = self.addresses.values().collect();
        hasher.update(&postcard::to_stdvec(&addresses).unwrap_or_default());
        StateDigest(*hasher.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_core::{LogIndex, Term};

    /// A counter: inputs add, queries read.
    #[derive(Default)]
    struct Counter(u64);

    struct CounterSnapshot(u64);

    impl StateSnapshot for CounterSnapshot {
        fn write_to(&self, out: &mut dyn io::Write) -> io::Result<()> {
            out.write_all(&self.0.to_le_bytes())
        }
    }

    impl StateMachine for Counter {
        type Input = u64;
        type Output = u64;
        type Query = ();
        type Snapshot = CounterSnapshot;
        fn apply(&mut self, input: u64, _: &ApplyContext) -> u64 {
            self.0 += input;
            self.0
        }
        fn query(&self, _: &()) -> u64 {
            self.0
        }
        fn snapshot(&self) -> CounterSnapshot {
            CounterSnapshot(self.0)
        }
        fn restore(&mut self, input: &mut dyn io::Read) -> io::Result<()> {
            let mut bytes = [0u8; 8];
            input.read_exact(&mut bytes)?;
            self.0 = u64::from_le_bytes(bytes);
            Ok(())
        }
        fn digest(&self) -> StateDigest {
            StateDigest([self.0 as u8; 32])
        }
    }

    const CONTEXT: ApplyContext =
        ApplyContext { index: LogIndex(1), term: Term(1), timestamp_millis: 0 };

    fn address(id: u64, peer: &str) -> MemberAddress {
        MemberAddress { id, peer: peer.to_string(), client: "c:1".to_string(), etcd: None }
    }

    #[test]
    fn addresses_are_recorded_once_and_ids_never_change_hands() {
        let mut hosted = Hosted::new(Counter::default());
        assert_eq!(hosted.apply(HostInput::User(5), &CONTEXT), HostOutput::User(5));
        let four = address(4, "p:4");
        assert_eq!(
            hosted.apply(HostInput::Address(four.clone()), &CONTEXT),
            HostOutput::Recorded(4)
        );
        assert_eq!(hosted.apply(HostInput::Address(four), &CONTEXT), HostOutput::Recorded(4));
        assert_eq!(
            hosted.apply(HostInput::Address(address(4, "elsewhere:4")), &CONTEXT),
            HostOutput::Taken(4)
        );
        assert_eq!(hosted.addresses()[&4].peer, "p:4");
    }

    #[test]
    fn snapshots_carry_the_book_and_the_state_and_refuse_damage() {
        let mut hosted = Hosted::new(Counter::default());
        hosted.apply(HostInput::User(7), &CONTEXT);
        hosted.apply(HostInput::Address(address(9, "p:9")), &CONTEXT);
        let mut bytes = Vec::new();
        hosted.snapshot().write_to(&mut bytes).expect("writes");
        let mut copy = Hosted::new(Counter::default());
        copy.restore(&mut bytes.as_slice()).expect("restores");
        assert_eq!(copy.machine().0, 7);
        assert_eq!(copy.addresses(), hosted.addresses());
        assert_eq!(copy.digest(), hosted.digest());
        for damaged in
            [&bytes[..3], &[2u8; 20][..], &[1, 255, 255, 255, 255, 255, 255, 255, 255][..]]
        {
            assert!(Hosted::new(Counter::default()).restore(&mut &damaged[..]).is_err());
        }
    }
}
