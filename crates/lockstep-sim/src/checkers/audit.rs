//! Auditing: every divergence the simulator injects (a non-deterministic state machine on one
//! replica, a value corrupted in one replica's memory) is found within a bound of entries,
//! repaired, and never lets a wrong output reach a client when outputs are verified.
//!
//! The checker keeps, for every index, the output chain each replica reported when it applied
//! it; the majority's chain there is the right one. An answer a client received is wrong when
//! the chain of the replica that gave it differs from the majority's at the entry it answered.

use std::collections::BTreeMap;

/// A replica may apply this many entries after its state departed before the leader finds
/// it (counting only entries applied while a majority of the other voters could report and
/// while the replica was within [`COMPARED_WINDOW_ENTRIES`] of the leader): a digest point
/// every 16 entries, a report every 4, and room for reports lost or delayed (up to 5% of
/// messages, crashes, elections) while entries keep committing.
pub const DETECTION_BOUND_ENTRIES: u64 = 256;

/// The leader compares its newest 4 digest points (16 entries apart in the simulator) with the
/// others' reports: a replica further behind (a learner catching up) is compared once it has
/// caught up that far, and the entries it applies before then are not counted.
pub const COMPARED_WINDOW_ENTRIES: u64 = 4 * 16;

impl Injected {
    /// A divergence of `kind` on `replica`, departed after `since` if known.
    pub fn new(replica: u64, kind: FaultKind, since: Option<u64>) -> Injected {
        Injected { replica, kind, since, latency: None, comparable: 0, raw: 0, ending: None }
    }

    /// Whether the audit can see it: found already, or its replica applied an entry since.
    /// One after which its replica applied nothing is beyond an audit of states at indexes
    /// (the run may end before any entry follows one injected at its very end).
    pub fn seeable(&self) -> bool {
        self.raw > 0 || self.latency.is_some()
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
    /// those applied while a majority of the other voters ran and could reach the leader, with
    /// at most 5% of messages lost (with fewer, no majority can say which replica is wrong;
    /// with more loss, reports are lost as often as they are sent), and while the replica was
    /// within the leader's compared window.
    pub latency: Option<u64>,
    /// Such entries so far.
    pub comparable: u64,
    /// Entries the replica applied after departing before the audit found it, all of them.
    pub raw: u64,
    /// How it ended, if it has.
    pub ending: Option<Ending>,
}

/// A session request: (session, sequence).
type Request = (u64, u64);

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
    /// index -> the chain replicas reached there while their state was right.
    chains: BTreeMap<u64, u64>,
    /// replica -> (session, sequence) -> (index, chain) of its latest application.
    answered_from: BTreeMap<u64, BTreeMap<Request, (u64, u64)>>,
    delivered: Vec<Delivered>,
}

impl AuditChecker {
    /// A checker with nothing recorded.
    pub fn new() -> AuditChecker {
        AuditChecker::default()
    }

    /// Replica `replica` applied `index` with `chain`, answering `request` if it carried one;
    /// `healthy` if its state was right until then. Healthy replicas must reach one chain at
    /// each index.
    pub fn applied(
        &mut self,
        replica: u64,
        index: u64,
        chain: u64,
        request: Option<(u64, u64)>,
        healthy: bool,
    ) -> Result<(), String> {
        if let Some(request) = request {
            self.answered_from.entry(replica).or_default().insert(request, (index, chain));
        }
        if !healthy {
            return Ok(());
        }
        match self.chains.get(&index) {
            Some(known) if *known != chain => Err(format!(
                "replica {replica} reached chain {chain:016x} at {index} with a right state; \
                 others reached {known:016x}"
            )),
            Some(_) => Ok(()),
            None => {
                self.chains.insert(index, chain);
                Ok(())
            }
        }
    }

    /// Replica `replica`'s state was replaced (restart, snapshot, repair): what it applied
    /// before no longer says what it answers.
    pub fn forget_answers(&mut self, replica: u64) {
        self.answered_from.remove(&replica);
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
    /// differs from the one replicas with a right state reached there).
    pub fn wrong_outputs(&self) -> Vec<(usize, u64, u64)> {
        self.delivered
            .iter()
            .filter(|delivered| {
                self.chains.get(&delivered.index).is_some_and(|right| *right != delivered.chain)
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
            checker.applied(replica, 5, 0xaa, Some((7, 1)), true).expect("agree");
        }
        checker.applied(3, 5, 0xbb, Some((7, 1)), false).expect("a divergent one is not judged");
        checker.delivered(1, 0, (7, 1));
        checker.delivered(3, 1, (7, 1));
        assert_eq!(checker.wrong_outputs(), vec![(1, 3, 5)]);
        assert!(checker.applied(2, 6, 0xcc, None, true).is_ok());
        assert!(checker.applied(1, 6, 0xdd, None, true).is_err());
    }
}
