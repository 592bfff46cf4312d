//! Exactly-once: a session request is applied to the state machine at most once on each
//! replica, however often the client retried it and however many leaders it went through.

use std::collections::{BTreeMap, BTreeSet};

/// Remembers, per replica, which session requests it applied fresh.
#[derive(Debug, Default)]
pub struct ExactlyOnce {
    applied: BTreeMap<u64, BTreeSet<(u64, u64)>>,
    /// Where each request was applied fresh, on any replica: a request applied at two
    /// indexes was applied twice (a replica restored from a snapshot cannot tell alone).
    applied_at: BTreeMap<(u64, u64), u64>,
}

impl ExactlyOnce {
    /// A checker that has seen nothing applied.
    pub fn new() -> ExactlyOnce {
        ExactlyOnce::default()
    }

    /// Replica `node` restarted and rebuilds its state from the log: forget what it applied.
    pub fn restarted(&mut self, node: u64) {
        self.applied.remove(&node);
    }

    /// Replica `node` applied request `sequence` of session `client` to its state machine.
    pub fn applied(
        &mut self,
        node: u64,
        index: u64,
        client: u64,
        sequence: u64,
    ) -> Result<(), String> {
        if !self.applied.entry(node).or_default().insert((client, sequence)) {
            return Err(format!(
                "exactly-once: replica {node} applied request {sequence} of session {client} a \
                 second time, at index {index}"
            ));
        }
        match self.applied_at.insert((client, sequence), index) {
            Some(before) if before != index => Err(format!(
                "exactly-once: request {sequence} of session {client} was applied at index \
                 {before} and again at index {index} (replica {node})"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_application_is_caught_but_a_restart_starts_over() {
        let mut checker = ExactlyOnce::new();
        checker.applied(1, 1, 7, 1).expect("first");
        checker.applied(2, 1, 7, 1).expect("another replica");
        assert!(checker.applied(1, 2, 7, 1).is_err());
        checker.restarted(2);
        checker.applied(2, 1, 7, 1).expect("after a restart");
        // Applied fresh at another index, even by a replica that forgot (a snapshot restore).
        checker.restarted(1);
        assert!(checker.applied(1, 5, 7, 1).is_err());
    }
}
