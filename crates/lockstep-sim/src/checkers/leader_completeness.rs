//! Leader completeness: if a log entry is committed in a given term, that entry will be present
//! in the logs of the leaders of all higher-numbered terms (Raft, §5.4 and Figure 3).
//!
//! The simulator records every entry it sees committed (below some replica's commit index),
//! with a bound on the term it was committed in (the highest term any replica had reached when
//! the commit was first seen), and checks each new leader of a later term. A leader of an
//! older term can still be elected after an entry commits (a slow vote), and need not hold it.

use std::collections::BTreeMap;

use super::EntryId;

/// Remembers committed entries.
#[derive(Debug, Default)]
pub struct LeaderCompleteness {
    /// Index -> (entry, the latest term it can have been committed in).
    committed: BTreeMap<u64, (EntryId, u64)>,
}

impl LeaderCompleteness {
    /// A checker that has seen nothing committed.
    pub fn new() -> LeaderCompleteness {
        LeaderCompleteness::default()
    }

    /// Entry `index` is committed with `entry`, in term `committed_by` or earlier. Two
    /// different committed entries at one index are themselves a violation.
    pub fn committed(
        &mut self,
        node: u64,
        index: u64,
        entry: EntryId,
        committed_by: u64,
    ) -> Result<(), String> {
        let before = self.committed.entry(index).or_insert((entry, committed_by));
        match *before {
            (before, _) if before != entry => Err(format!(
                "replica {node} has committed index {index} with term {} but term {} was \
                 committed there before",
                entry.term, before.term
            )),
            _ => Ok(()),
        }
    }

    /// How many entries are known committed.
    pub fn committed_count(&self) -> usize {
        self.committed.len()
    }

    /// Replica `node` became leader of `term` with `log`, entries from index `first` (those
    /// below are in its snapshot, which holds only committed entries, and are not compared).
    pub fn new_leader(
        &self,
        node: u64,
        term: u64,
        first: u64,
        log: &[EntryId],
    ) -> Result<(), String> {
        for (&index, (entry, committed_by)) in self.committed.range(first..) {
            if *committed_by >= term {
                continue;
            }
            let held = usize::try_from(index - first).ok().and_then(|i| log.get(i));
            if held != Some(entry) {
                return Err(format!(
                    "leader completeness: replica {node} leads term {term} without entry \
                     {index} (term {}) committed earlier; it holds {}",
                    entry.term,
                    match held {
                        Some(other) => format!("term {} there", other.term),
                        None => format!("only {} entries", log.len()),
                    }
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_missing_a_committed_entry_is_caught() {
        let mut checker = LeaderCompleteness::new();
        let one = EntryId { term: 1, hash: 1 };
        let two = EntryId { term: 1, hash: 2 };
        checker.committed(1, 1, one, 1).expect("first");
        checker.committed(1, 2, two, 1).expect("second");
        assert!(checker.new_leader(2, 2, 1, &[one, two]).is_ok());
        assert!(checker.new_leader(2, 2, 1, &[one]).is_err());
        assert!(checker.new_leader(2, 2, 1, &[one, EntryId { term: 1, hash: 3 }]).is_err());
        assert!(checker.new_leader(2, 2, 2, &[two]).is_ok());
        assert!(checker.committed(3, 2, EntryId { term: 2, hash: 4 }, 2).is_err());
        // Committed as late as term 3: a leader of term 3 elected later need not hold it.
        checker.committed(1, 3, EntryId { term: 1, hash: 5 }, 3).expect("third");
        assert!(checker.new_leader(3, 3, 1, &[one, two]).is_ok());
        assert!(checker.new_leader(3, 4, 1, &[one, two]).is_err());
    }
}
