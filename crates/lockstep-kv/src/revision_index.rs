//! The revision index: every kept version's key, in revision order, where watches find the
//! changes from a revision on without scanning every key.
//!
//! Versions are recorded in increasing (revision, sub) order, so the index is a sequence that
//! only grows at its end: it is kept in chunks of exactly [`CHUNK_ENTRIES`] entries (no spare
//! capacity, no tree nodes), about 48 bytes an entry. Compaction rewrites the chunks that hold
//! revisions it reaches.

use bytes::Bytes;

use crate::Revision;

/// Entries per chunk.
const CHUNK_ENTRIES: usize = 1024;

/// A version's place in the store's history and its key.
type IndexEntry = ((Revision, u32), Bytes);

/// See the module documentation.
#[derive(Clone, Debug, Default)]
pub(crate) struct RevisionIndex {
    /// Each chunk non-empty and in order; the last one is filled up to [`CHUNK_ENTRIES`].
    chunks: Vec<Vec<IndexEntry>>,
}

/// Indexes are equal when they hold the same entries, however they are chunked.
impl PartialEq for RevisionIndex {
    fn eq(&self, other: &RevisionIndex) -> bool {
        self.chunks.iter().flatten().eq(other.chunks.iter().flatten())
    }
}

impl Eq for RevisionIndex {}

impl RevisionIndex {
    /// Records `key`'s version at (`revision`, `sub`), which follows every recorded one.
    pub(crate) fn push(&mut self, revision: Revision, sub: u32, key: Bytes) {
        if let Some(last) = self.chunks.last().and_then(|chunk| chunk.last()) {
            assert!(
                last.0 < (revision, sub),
                "revision index: ({revision}, {sub}) recorded after {:?}",
                last.0
            );
        }
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK_ENTRIES => chunk.push(((revision, sub), key)),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_ENTRIES);
                chunk.push(((revision, sub), key));
                self.chunks.push(chunk);
            }
        }
    }

    /// The entries from (`revision`, 0) on, in order.
    pub(crate) fn from(&self, revision: Revision) -> impl Iterator<Item = &IndexEntry> + '_ {
        let start = (revision, 0);
        let chunk =
            self.chunks.partition_point(|chunk| chunk.last().is_some_and(|last| last.0 < start));
        let offset = self
            .chunks
            .get(chunk)
            .map_or(0, |entries| entries.partition_point(|entry| entry.0 < start));
        let first = self.chunks.get(chunk).map(|entries| &entries[offset..]);
        let rest = self.chunks.get(chunk + 1..).unwrap_or(&[]);
        first.into_iter().flatten().chain(rest.iter().flatten())
    }

    /// The entries at or below `revision`, in order.
    pub(crate) fn through(&self, revision: Revision) -> impl Iterator<Item = &IndexEntry> + '_ {
        self.chunks.iter().flatten().take_while(move |entry| entry.0 .0 <= revision)
    }

    /// Keeps, of the entries at or below `through`, those `keep` says to keep (and every entry
    /// after it).
    pub(crate) fn retain_through(
        &mut self,
        through: Revision,
        mut keep: impl FnMut(&(Revision, u32)) -> bool,
    ) {
        let reached = self
            .chunks
            .partition_point(|chunk| chunk.first().is_some_and(|first| first.0 .0 <= through));
        if reached == 0 {
            return;
        }
        let mut kept: Vec<IndexEntry> = Vec::new();
        for chunk in self.chunks.drain(..reached) {
            kept.extend(chunk.into_iter().filter(|entry| entry.0 .0 > through || keep(&entry.0)));
        }
        let repacked: Vec<Vec<IndexEntry>> =
            kept.chunks(CHUNK_ENTRIES).map(<[IndexEntry]>::to_vec).collect();
        self.chunks.splice(0..0, repacked);
    }

    /// An index of `entries` (in any order).
    pub(crate) fn from_entries(mut entries: Vec<IndexEntry>) -> RevisionIndex {
        entries.sort_by_key(|entry| entry.0);
        RevisionIndex {
            chunks: entries.chunks(CHUNK_ENTRIES).map(<[IndexEntry]>::to_vec).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_from_a_revision_and_compacts() {
        let mut index = RevisionIndex::default();
        for revision in 1..=3_000u64 {
            index.push(revision, 0, Bytes::from(format!("k{}", revision % 7)));
            if revision % 3 == 0 {
                index.push(revision, 1, Bytes::from("t"));
            }
        }
        let from: Vec<_> = index.from(2_999).map(|entry| entry.0).collect();
        assert_eq!(from, vec![(2_999, 0), (3_000, 0), (3_000, 1)]);
        assert_eq!(index.from(1).count(), 4_000);
        assert_eq!(index.from(3_001).count(), 0);
        assert_eq!(index.through(3).count(), 4);
        // Keep only the subs of 1 through revision 2,000.
        index.retain_through(2_000, |(_, sub)| *sub == 1);
        assert_eq!(index.through(2_000).count(), 666);
        assert!(index.through(2_000).all(|entry| entry.0 .1 == 1));
        assert_eq!(index.from(2_001).count(), 1_000 + 334);
        index.push(3_001, 0, Bytes::from("after"));
        assert_eq!(index.from(3_001).count(), 1);
        let rebuilt = RevisionIndex::from_entries(index.from(0).cloned().collect());
        assert_eq!(rebuilt.from(0).count(), index.from(0).count());
    }
}
