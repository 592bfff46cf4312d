//! Election safety: at most one leader can be elected in a given term (Raft, §5.2 and
//! Figure 3). Fed every (term, leader) the simulator sees after each event, across crashes.

use std::collections::BTreeMap;

/// Remembers who led each term.
#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<u64, u64>,
}

impl ElectionSafety {
    /// A checker that has seen nothing.
    pub fn new() -> ElectionSafety {
        ElectionSafety::default()
    }

    /// Replica `node` leads `term`.
    pub fn observe_leader(&mut self, term: u64, node: u64) -> Result<(), String> {
        match self.leaders.insert(term, node) {
            Some(other) if other != node => {
                Err(format!("two leaders in term {term}: replicas {other} and {node}"))
            }
            _ => Ok(()),
        }
    }

    /// How many terms had a leader.
    pub fn terms_led(&self) -> usize {
        self.leaders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_leader_in_a_term_is_caught() {
        let mut checker = ElectionSafety::new();
        assert!(checker.observe_leader(1, 1).is_ok());
        assert!(checker.observe_leader(1, 1).is_ok());
        assert!(checker.observe_leader(2, 2).is_ok());
        assert!(checker.observe_leader(1, 3).is_err());
    }
}
