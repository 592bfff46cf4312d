//! State machine safety: if a replica has applied a log entry at a given index, no other
//! replica will ever apply a different entry for that index (Raft, §5.4.3 and Figure 3), and
//! replicas that applied the same entries reach the same state (the state machine approach's
//! premise: a deterministic machine, the same inputs in the same order).

use std::collections::BTreeMap;

use lockstep_core::StateDigest;

use super::EntryId;

/// Remembers what was applied at each index, and the state digest there.
#[derive(Debug, Default)]
pub struct StateMachineSafety {
    applied: BTreeMap<u64, (u64, EntryId)>,
    digests: BTreeMap<u64, (u64, StateDigest)>,
}

impl StateMachineSafety {
    /// A checker that has seen nothing applied.
    pub fn new() -> StateMachineSafety {
        StateMachineSafety::default()
    }

    /// Replica `node` applied `entry` at `index`.
    pub fn applied(&mut self, node: u64, index: u64, entry: EntryId) -> Result<(), String> {
        match self.applied.get(&index) {
            Some(&(first, before)) if before != entry => Err(format!(
                "state machine safety: replica {node} applied term {} at index {index}, \
                 replica {first} applied term {} there{}",
                entry.term,
                before.term,
                if entry.term == before.term { " with different contents" } else { "" }
            )),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(index, (node, entry));
                Ok(())
            }
        }
    }

    /// Replica `node`'s state after applying through `index` has `digest`.
    pub fn digest(&mut self, node: u64, index: u64, digest: StateDigest) -> Result<(), String> {
        match self.digests.get(&index) {
            Some(&(first, before)) if before != digest => Err(format!(
                "state machine safety: replicas {first} and {node} applied through index \
                 {index} but their states differ"
            )),
            Some(_) => Ok(()),
            None => {
                self.digests.insert(index, (node, digest));
                Ok(())
            }
        }
    }

    /// Whether `digest` is the state the replicas reached at `index`, if one is known there.
    pub fn agrees(&self, index: u64, digest: StateDigest) -> Option<bool> {
        self.digests.get(&index).map(|(_, known)| *known == digest)
    }

    /// How many indexes were applied by some replica.
    pub fn applied_count(&self) -> usize {
        self.applied.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_different_entry_or_state_at_an_index_is_caught() {
        let mut checker = StateMachineSafety::new();
        let entry = EntryId { term: 1, hash: 7 };
        checker.applied(1, 1, entry).expect("first");
        checker.applied(2, 1, entry).expect("same");
        assert!(checker.applied(3, 1, EntryId { term: 1, hash: 8 }).is_err());
        checker.digest(1, 1, StateDigest([1; 32])).expect("first");
        assert!(checker.digest(2, 1, StateDigest([2; 32])).is_err());
    }
}
