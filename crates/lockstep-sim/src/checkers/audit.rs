//! Auditing: every divergence the simulator injects (a non-deterministic state machine on one
//! replica, a value corrupted in one replica's memory) is found within a bound of entries,
//! repaired, and never lets a wrong output reach a client when outputs are verified.
//!
//! The checker keeps, for every index, the output chain each replica reported when it applied
//! it; the majority's chain there is the right one. An answer a client received is wrong when
//! the chain of the replica that gave it differs from the majority's at the entry it answered.

use std::collections::{BTreeMap, BTreeSet};

/// A replica may apply this many entries after its state departed before the leader finds
/// it: a digest point every 16 entries, a report every 4, and room for the reports and the
/// leader's answers to travel while entries keep committing.
pub const DETECTION_BOUND_ENTRIES: u64 = 128;

impl Injected {
    /// A divergence of `kind` on `replica`, departed after `since` if known.
    pub fn new(replica: u64, kind: FaultKind, since: Option<u64>) -> Injected {
        Injected { replica, kind, since, latency: None, comparable: 0, raw: 0, ending: None }
    }
}

/// What was injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The next write applied on one replica stores a wrong value, and a per-replica random
    /// number under a key no client uses.
    NonDeterministic,
    /// A value in one replica's memory is changed.
    Corruption,
}

/// How an injected divergence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Found by the audit, then repaired from a checkpoint a majority agreed with.
    Repaired,
    /// The replica's state became right again before the audit found it (it restarted from a
    /// checkpoint older than the fault, or was sent a snapshot).
    Cleared,
}

/// One injected divergence.
#[derive(Clone, Debug)]
pub struct Injected {
    /// The replica (its id).
    pub replica: u64,
    /// What was done.
    pub kind: FaultKind,
    /// The last index applied before its state departed (known once the fault fired).
    pub since: Option<u64>,
    /// Entries the replica applied after departing before the audit found it, counting only
    /// those applied while a majority of the other voters ran and could reach the leader (with
    /// fewer, no majority can say which replica is wrong).
    pub latency: Option<u64>,
    /// Such entries so far.
    pub comparable: u64,
    /// Entries the replica applied after departing before the audit found it, all of them.
    pub raw: u64,
    /// How it ended, if it has.
    pub ending: Option<Ending>,
}

/// An answer a client received for a write, with where it came from.
#[derive(Clone, Copy, Debug)]
struct Delivered {
    operation: usize,
    replica: u64,
    index: u64,
    chain: u64,
}

/// The audit checker's records.
#[derive(Debug, Default)]
pub struct AuditChecker {
    /// Every divergence injected, in order.
    pub injected: Vec<Injected>,
    /// index -> chain -> replicas that reported it.
    chains: BTreeMap<u64, BTreeMap<u64, BTreeSet<u64>>>,
    /// replica -> (session, sequence) -> (index, chain) of its latest application.
    answered_from: BTreeMap<u64, BTreeMap<(u64, u64), (u64, u64)>>,
    delivered: Vec<Delivered>,
}

impl AuditChecker {
    /// A checker with nothing recorded.
    pub fn new() -> AuditChecker {
        AuditChecker::default()
    }

    /// Replica `replica` applied `index` with `chain`, answering `request` if it carried one.
    pub fn applied(&mut self, replica: u64, index: u64, chain: u64, request: Option<(u64, u64)>) {
        self.chains.entry(index).or_default().entry(chain).or_default().insert(replica);
        if let Some(request) = request {
            self.answered_from.entry(replica).or_default().insert(request, (index, chain));
        }
    }

    /// A client received replica `replica`'s answer to `request` (a write) as `operation`.
    pub fn delivered(&mut self, replica: u64, operation: usize, request: (u64, u64)) {
        let from = self.answered_from.get(&replica).and_then(|answers| answers.get(&request));
        if let Some(&(index, chain)) = from {
            self.delivered.push(Delivered { operation, replica, index, chain });
        }
    }

    /// The active (not ended) divergence on `replica`, if any.
    pub fn active(&mut self, replica: u64) -> Option<&mut Injected> {
        self.injected
            .iter_mut()
            .rev()
            .find(|injected| injected.replica == replica && injected.ending.is_none())
    }

    /// Whether any injected divergence has not ended.
    pub fn any_active(&self) -> bool {
        self.injected.iter().any(|injected| injected.ending.is_none())
    }

    /// The operations whose answers were wrong (the answering replica's chain at the entry
    /// differs from the one most replicas reported there), given `voters` replicas.
    pub fn wrong_outputs(&self, voters: usize) -> Vec<(usize, u64, u64)> {
        let majority = voters / 2 + 1;
        self.delivered
            .iter()
            .filter(|delivered| {
                let Some(at) = self.chains.get(&delivered.index) else { return false };
                at.iter().any(|(chain, replicas)| {
                    replicas.len() >= majority && *chain != delivered.chain
                })
            })
            .map(|delivered| (delivered.operation, delivered.replica, delivered.index))
            .collect()
    }

    /// Detection latencies recorded (entries), sorted.
    pub fn latencies(&self) -> Vec<u64> {
        let mut latencies: Vec<u64> =
            self.injected.iter().filter_map(|injected| injected.latency).collect();
        latencies.sort_unstable();
        latencies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_from_a_replica_whose_chain_differs_from_the_majority_is_wrong() {
        let mut checker = AuditChecker::new();
        for replica in [1, 2] {
            checker.applied(replica, 5, 0xaa, Some((7, 1)));
        }
        checker.applied(3, 5, 0xbb, Some((7, 1)));
        checker.delivered(1, 0, (7, 1));
        checker.delivered(3, 1, (7, 1));
        assert_eq!(checker.wrong_outputs(3), vec![(1, 3, 5)]);
    }
}
