//! The core's view of its log: every entry after the last snapshot, in memory.
//!
//! The log here is what the disk will hold once the outputs handed out so far are written.
//! Keeping the entries since the last snapshot in memory (as etcd does) lets the core answer
//! every term lookup and build every append without I/O; snapshots and compaction bound its
//! size.

use std::collections::VecDeque;

use crate::types::{Entry, LogIndex, Term};

/// The entries after the snapshot point.
#[derive(Clone, Debug)]
pub struct RaftLog {
    /// The last index covered by the snapshot (zero if none).
    snapshot_index: LogIndex,
    /// The term of the entry at `snapshot_index`.
    snapshot_term: Term,
    /// Entries `snapshot_index + 1 ..= last_index`.
    entries: VecDeque<Entry>,
}

impl RaftLog {
    /// A log that starts after `(snapshot_index, snapshot_term)` and holds `entries`.
    ///
    /// The entries must be consecutive from `snapshot_index + 1` with non-decreasing terms;
    /// the caller checks this (recovery reports a broken log as an error, not a panic).
    pub fn new(snapshot_index: LogIndex, snapshot_term: Term, entries: Vec<Entry>) -> RaftLog {
        RaftLog { snapshot_index, snapshot_term, entries: entries.into() }
    }

    /// Checks that `entries` may follow `(snapshot_index, snapshot_term)`.
    pub fn validate(
        snapshot_index: LogIndex,
        snapshot_term: Term,
        entries: &[Entry],
    ) -> Result<(), String> {
        let mut previous = (snapshot_index, snapshot_term);
        for entry in entries {
            if entry.index != previous.0.next() {
                return Err(format!(
                    "entry index {} does not follow index {}",
                    entry.index, previous.0
                ));
            }
            if entry.term < previous.1 {
                return Err(format!(
                    "entry {} has term {} below the previous term {}",
                    entry.index, entry.term, previous.1
                ));
            }
            previous = (entry.index, entry.term);
        }
        Ok(())
    }

    /// The first index held in memory (one past the snapshot).
    pub fn first_index(&self) -> LogIndex {
        self.snapshot_index.next()
    }

    /// The index of the last entry (the snapshot index if the log is empty).
    pub fn last_index(&self) -> LogIndex {
        self.snapshot_index.plus(self.entries.len() as u64)
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |entry| entry.term)
    }

    /// The snapshot point.
    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    /// The term at `index`, if the log still knows it (compacted indexes below the snapshot
    /// and indexes past the end have none).
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[self.offset(index)].term)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(&self.entries[self.offset(index)])
    }

    /// Whether the log holds an entry `(index, term)` (or it is the snapshot point).
    pub fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Whether a log ending at `(last_index, last_term)` is at least as up to date as this
    /// one (Raft §5.4.1).
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Clones entries from `from` on, up to `to` inclusive, stopping before `bytes_max` is
    /// exceeded (the first entry is always included so that progress is possible).
    pub fn slice(&self, from: LogIndex, to: LogIndex, bytes_max: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        if from <= self.snapshot_index || from > to {
            return out;
        }
        let to = to.min(self.last_index());
        let mut bytes = 0u64;
        let mut index = from;
        while index <= to {
            let entry = &self.entries[self.offset(index)];
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
        out
    }

    /// The bytes (as counted for flow control) of the entries `from..=to` held in memory.
    pub fn size_bytes_between(&self, from: LogIndex, to: LogIndex) -> u64 {
        let from = from.max(self.first_index());
        let to = to.min(self.last_index());
        if from > to {
            return 0;
        }
        self.entries.range(self.offset(from)..=self.offset(to)).map(Entry::size_bytes).sum()
    }

    /// The largest index at or below `index` whose term is at most `term` (fast backtracking:
    /// entries above it cannot match a log whose entry at `index` has `term`). Returns the
    /// snapshot point if nothing in memory qualifies.
    pub fn last_index_with_term_at_most(&self, index: LogIndex, term: Term) -> LogIndex {
        let mut index = index.min(self.last_index());
        while index > self.snapshot_index {
            if self.entries[self.offset(index)].term <= term {
                return index;
            }
            index = index.prev();
        }
        self.snapshot_index
    }

    /// Appends one entry; it must continue the log.
    pub fn push(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index().next(), "appended entry must continue the log");
        assert!(entry.term >= self.last_term(), "entry terms must not go backwards");
        self.entries.push_back(entry);
    }

    /// Removes every entry at `index` and above.
    pub fn truncate_from(&mut self, index: LogIndex) {
        assert!(index > self.snapshot_index, "cannot truncate into the snapshot");
        let keep = (index.get() - self.first_index().get()) as usize;
        self.entries.truncate(keep);
    }

    /// Forgets every entry up to `index`, which a durable snapshot covers: the log now starts
    /// after it. Does nothing for an index at or below the current start; `index` must be
    /// held.
    pub fn compact(&mut self, index: LogIndex) {
        if index <= self.snapshot_index {
            return;
        }
        let term = self.term(index).expect("compacting to an index the log holds");
        let drop = self.offset(index) + 1;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Replaces the whole log with a snapshot point: no entries, continuing after
    /// `(index, term)`.
    pub fn restart_after(&mut self, index: LogIndex, term: Term) {
        self.entries.clear();
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// The term of the entry the snapshot point covers.
    pub fn snapshot_term(&self) -> Term {
        self.snapshot_term
    }

    /// The entries held in memory, in order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    fn offset(&self, index: LogIndex) -> usize {
        (index.get() - self.first_index().get()) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;

    fn log_with_terms(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(position, term)| Entry {
                term: Term(*term),
                index: LogIndex(position as u64 + 1),
                payload: EntryPayload::Noop,
            })
            .collect();
        RaftLog::new(LogIndex(0), Term(0), entries)
    }

    #[test]
    fn terms_and_bounds() {
        let log = log_with_terms(&[1, 1, 2, 3]);
        assert_eq!(log.last_index(), LogIndex(4));
        assert_eq!(log.last_term(), Term(3));
        assert_eq!(log.term(LogIndex(0)), Some(Term(0)));
        assert_eq!(log.term(LogIndex(3)), Some(Term(2)));
        assert_eq!(log.term(LogIndex(5)), None);
    }

    #[test]
    fn backtracking_skips_whole_terms() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 5, 5]);
        assert_eq!(log.last_index_with_term_at_most(LogIndex(7), Term(4)), LogIndex(5));
        assert_eq!(log.last_index_with_term_at_most(LogIndex(7), Term(1)), LogIndex(2));
        assert_eq!(log.last_index_with_term_at_most(LogIndex(9), Term(9)), LogIndex(7));
        assert_eq!(log.last_index_with_term_at_most(LogIndex(7), Term(0)), LogIndex(0));
    }

    #[test]
    fn slice_respects_byte_limit_but_always_returns_one() {
        let log = log_with_terms(&[1, 1, 1, 1]);
        assert_eq!(log.slice(LogIndex(1), LogIndex(4), 1).len(), 1);
        assert_eq!(log.slice(LogIndex(1), LogIndex(4), u64::MAX).len(), 4);
        assert_eq!(log.slice(LogIndex(3), LogIndex(9), u64::MAX).len(), 2);
    }

    #[test]
    fn compaction_and_restart_move_the_start() {
        let mut log = log_with_terms(&[1, 1, 2, 3]);
        log.compact(LogIndex(2));
        assert_eq!(log.first_index(), LogIndex(3));
        assert_eq!(log.term(LogIndex(2)), Some(Term(1)));
        assert_eq!(log.term(LogIndex(1)), None);
        assert_eq!(log.last_index(), LogIndex(4));
        log.compact(LogIndex(1));
        assert_eq!(log.first_index(), LogIndex(3));
        log.restart_after(LogIndex(9), Term(4));
        assert_eq!(log.last_index(), LogIndex(9));
        assert_eq!(log.last_term(), Term(4));
        assert_eq!(log.entries().count(), 0);
    }

    #[test]
    fn validate_finds_gaps_and_backward_terms() {
        let entry = |index: u64, term: u64| Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Noop,
        };
        assert!(RaftLog::validate(LogIndex(0), Term(0), &[entry(1, 1), entry(2, 2)]).is_ok());
        assert!(RaftLog::validate(LogIndex(0), Term(0), &[entry(1, 1), entry(3, 1)]).is_err());
        assert!(RaftLog::validate(LogIndex(0), Term(0), &[entry(1, 2), entry(2, 1)]).is_err());
        assert!(RaftLog::validate(LogIndex(5), Term(3), &[entry(6, 2)]).is_err());
    }
}
