//! A key's history: its versions, oldest first, as the store keeps them in memory.
//!
//! Most keys have one version (a key written once, or a history compacted down to its current
//! value): that one is held inline, with no allocation of its own. A key written again holds
//! its versions in shared chunks of 32 and a tail, so that a checkpoint's view (a clone of the
//! whole map) shares them and a write afterwards copies the tail and the chunks' pointers, not
//! the key's whole history. A version keeps
//! neither the key (the history's) nor its modification revision (the version's own).

use bytes::Bytes;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{KeyValue, Revision};

/// One version of a key: its value from `revision` on, or its deletion at `revision`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Version {
    /// The revision of the change.
    pub(crate) revision: Revision,
    /// Its place among the changes of that revision (a transaction makes several).
    pub(crate) sub: u32,
    /// The value from then on; `None`: deleted then.
    pub(crate) value: Option<Value>,
}

/// A value and etcd's metadata for it, less the key and the modification revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Value {
    pub(crate) value: Bytes,
    pub(crate) create_revision: Revision,
    pub(crate) version: u64,
    pub(crate) lease: i64,
}

impl Version {
    /// The version of a change to `kv` (`None`: a deletion) at `revision`.
    pub(crate) fn new(revision: Revision, sub: u32, kv: Option<KeyValue>) -> Version {
        let value = kv.map(|kv| Value {
            value: kv.value,
            create_revision: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
        });
        Version { revision, sub, value }
    }

    /// The key-value this version holds for `key` (`None`: deleted).
    pub(crate) fn key_value(&self, key: &Bytes) -> Option<KeyValue> {
        self.value.as_ref().map(|value| KeyValue {
            key: key.clone(),
            value: value.value.clone(),
            create_revision: value.create_revision,
            mod_revision: self.revision,
            version: value.version,
            lease: value.lease,
        })
    }

    /// Whether this version holds a value (it is not a deletion).
    pub(crate) fn is_put(&self) -> bool {
        self.value.is_some()
    }
}

/// A key's versions, oldest first; never empty. See the module documentation.
#[derive(Clone, Debug)]
pub(crate) enum History {
    One(Version),
    Many(Arc<Chunked>),
}

/// Versions sealed in shared chunks of [`CHUNK_VERSIONS`] and a tail being filled: a clone
/// copies the chunks' pointers and the tail, never the sealed versions. A chunk partly
/// compacted away keeps its dropped versions in memory until the rest of it goes (at most
/// [`CHUNK_VERSIONS`] less one per key).
#[derive(Clone, Debug)]
pub(crate) struct Chunked {
    /// Versions of the first sealed chunk already dropped (compacted away).
    skip: usize,
    sealed: Vec<Arc<[Version]>>,
    tail: Vec<Version>,
}

/// Versions per sealed chunk.
const CHUNK_VERSIONS: usize = 32;

impl Chunked {
    fn len(&self) -> usize {
        self.sealed.len() * CHUNK_VERSIONS + self.tail.len() - self.skip
    }

    fn get(&self, position: usize) -> Option<&Version> {
        let absolute = position.checked_add(self.skip)?;
        let chunk = absolute / CHUNK_VERSIONS;
        match self.sealed.get(chunk) {
            Some(sealed) => sealed.get(absolute % CHUNK_VERSIONS),
            None => self.tail.get(absolute - self.sealed.len() * CHUNK_VERSIONS),
        }
    }

    fn push(&mut self, version: Version) {
        self.tail.push(version);
        if self.tail.len() == CHUNK_VERSIONS {
            let full = std::mem::take(&mut self.tail);
            self.sealed.push(Arc::from(full));
        }
    }

    /// Drops the `count` oldest versions (fewer than it holds) and returns them.
    fn drop_oldest(&mut self, count: usize) -> Vec<Version> {
        assert!(count < self.len(), "dropping {count} of {} versions", self.len());
        let gone: Vec<Version> =
            (0..count).filter_map(|position| self.get(position)).cloned().collect();
        let mut absolute = self.skip + count;
        let whole = (absolute / CHUNK_VERSIONS).min(self.sealed.len());
        self.sealed.drain(..whole);
        absolute -= whole * CHUNK_VERSIONS;
        if self.sealed.is_empty() {
            self.tail.drain(..absolute);
            self.skip = 0;
        } else {
            self.skip = absolute;
        }
        gone
    }
}

impl History {
    /// A history of one version.
    pub(crate) fn new(first: Version) -> History {
        History::One(first)
    }

    /// Adds the newest version.
    pub(crate) fn push(&mut self, version: Version) {
        match self {
            History::One(only) => {
                let mut many = Chunked { skip: 0, sealed: Vec::new(), tail: Vec::with_capacity(4) };
                many.push(only.clone());
                many.push(version);
                *self = History::Many(Arc::new(many));
            }
            History::Many(many) => Arc::make_mut(many).push(version),
        }
    }

    /// How many versions it holds.
    pub(crate) fn len(&self) -> usize {
        match self {
            History::One(_) => 1,
            History::Many(many) => many.len(),
        }
    }

    /// The version at `position` (0: the oldest).
    pub(crate) fn get(&self, position: usize) -> Option<&Version> {
        match self {
            History::One(only) => (position == 0).then_some(only),
            History::Many(many) => many.get(position),
        }
    }

    /// The newest version.
    pub(crate) fn last(&self) -> &Version {
        match self {
            History::One(only) => only,
            History::Many(many) => many
                .get(many.len() - 1)
                .expect("a history is never empty (the store removes it first)"),
        }
    }

    /// The versions, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Version> + '_ {
        (0..self.len()).filter_map(|position| self.get(position))
    }

    /// The first position whose version is at or after (`revision`, `sub`).
    fn first_from(&self, revision: Revision, sub: u32) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = (low + high) / 2;
            match self.get(middle) {
                Some(version) if (version.revision, version.sub) < (revision, sub) => {
                    low = middle + 1
                }
                _ => high = middle,
            }
        }
        low
    }

    /// Where the version of (`revision`, `sub`) is, if kept.
    pub(crate) fn position(&self, revision: Revision, sub: u32) -> Option<usize> {
        let position = self.first_from(revision, sub);
        self.get(position)
            .is_some_and(|version| version.revision == revision && version.sub == sub)
            .then_some(position)
    }

    /// The number of versions at or below `revision` (so the newest of them, if any, is at
    /// that count less one).
    pub(crate) fn count_through(&self, revision: Revision) -> usize {
        match revision.checked_add(1) {
            Some(next) => self.first_from(next, 0),
            None => self.len(),
        }
    }

    /// The version current at `revision`, if the key had one then (a deletion included).
    pub(crate) fn at(&self, revision: Revision) -> Option<&Version> {
        self.count_through(revision).checked_sub(1).and_then(|position| self.get(position))
    }

    /// Removes the `count` oldest versions and returns them, and whether none is left (the
    /// caller then removes the history).
    pub(crate) fn drop_oldest(&mut self, count: usize) -> (Vec<Version>, bool) {
        if count == 0 {
            return (Vec::new(), false);
        }
        if count >= self.len() {
            return (self.iter().cloned().collect(), true);
        }
        let History::Many(many) = self else {
            unreachable!("a history of one version has no fewer to keep");
        };
        let gone = Arc::make_mut(many).drop_oldest(count);
        if many.len() == 1 {
            let only = many.get(0).cloned().expect("one version is left");
            *self = History::One(only);
        }
        (gone, false)
    }

    /// A history of `versions` (oldest first); `None` if there are none.
    pub(crate) fn from_versions(versions: Vec<Version>) -> Option<History> {
        let mut versions = versions.into_iter();
        let mut history = History::new(versions.next()?);
        for version in versions {
            history.push(version);
        }
        Some(history)
    }
}

/// Histories are equal when they hold the same versions, however they hold them.
impl PartialEq for History {
    fn eq(&self, other: &History) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for History {}

impl Serialize for History {
    /// As a sequence of versions, oldest first.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        // The length first: the encoding (postcard) needs it.
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for version in self.iter() {
            seq.serialize_element(version)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(revision: Revision) -> Version {
        let value = (revision % 5 != 0).then(|| Value {
            value: Bytes::from(revision.to_string()),
            create_revision: 1,
            version: revision,
            lease: 0,
        });
        Version { revision, sub: 0, value }
    }

    /// Against a plain vector: every position, every revision, across chunk boundaries, after
    /// dropping the oldest versions in steps of every size, and with a clone (a checkpoint's
    /// view) left untouched by later changes.
    #[test]
    fn behaves_as_a_vector_of_versions() {
        for drop_step in [1usize, 3, 31, 32, 33, 70] {
            let mut model: Vec<Version> = Vec::new();
            let mut history: Option<History> = None;
            let mut revision = 0;
            for round in 0..6 {
                for _ in 0..(40 + round * 7) {
                    revision += 2;
                    model.push(version(revision));
                    match history.as_mut() {
                        Some(history) => history.push(version(revision)),
                        None => history = Some(History::new(version(revision))),
                    }
                }
                let view = history.clone();
                let view_model = model.clone();
                let kept = history.as_mut().expect("some versions");
                let count = drop_step.min(model.len());
                let (gone, emptied) = kept.drop_oldest(count);
                let expected: Vec<Version> = model.drain(..count).collect();
                assert_eq!(gone, expected);
                assert_eq!(emptied, model.is_empty());
                if emptied {
                    history = None;
                    continue;
                }
                let kept = history.as_ref().expect("kept");
                assert_eq!(kept.iter().cloned().collect::<Vec<_>>(), model);
                assert_eq!(kept.last(), model.last().expect("some"));
                for (position, expected) in model.iter().enumerate() {
                    assert_eq!(kept.get(position), Some(expected));
                    assert_eq!(kept.position(expected.revision, 0), Some(position));
                    assert_eq!(kept.position(expected.revision + 1, 0), None);
                }
                for probe in 0..=revision + 1 {
                    let expected = model.iter().rev().find(|version| version.revision <= probe);
                    assert_eq!(kept.at(probe), expected, "at {probe}");
                }
                let view = view.expect("a view");
                assert_eq!(view.iter().cloned().collect::<Vec<_>>(), view_model);
            }
        }
    }
}
