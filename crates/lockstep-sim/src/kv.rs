//! The key-value state machine the simulator replicates: one register per key, with put, get,
//! compare-and-set and delete (the operations the linearizability checker models).

use std::collections::BTreeMap;
use std::io;

use lockstep_core::{ApplyContext, StateDigest, StateMachine, StateSnapshot};
use serde::{Deserialize, Serialize};

use crate::linearizability::{Input, Key, Output, Value};

/// A request to the store: an operation on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvInput {
    /// The key.
    pub key: Key,
    /// The operation.
    pub input: Input,
}

/// The store: a map from keys to values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvMachine {
    values: BTreeMap<Key, Value>,
}

/// A copy of the store's state.
#[derive(Clone, Debug)]
pub struct KvSnapshot(BTreeMap<Key, Value>);

impl StateSnapshot for KvSnapshot {
    fn write_to(&self, out: &mut dyn io::Write) -> io::Result<()> {
        let bytes = postcard::to_stdvec(&self.0).map_err(io::Error::other)?;
        out.write_all(&bytes)
    }
}

impl KvMachine {
    /// An empty store.
    pub fn new() -> KvMachine {
        KvMachine::default()
    }

    /// The value under `key`.
    pub fn get(&self, key: Key) -> Option<Value> {
        self.values.get(&key).copied()
    }
}

impl StateMachine for KvMachine {
    type Input = KvInput;
    type Output = Output;
    type Query = Key;
    type Snapshot = KvSnapshot;

    fn apply(&mut self, request: KvInput, _context: &ApplyContext) -> Output {
        let current = self.get(request.key);
        match request.input {
            Input::Put(value) => {
                self.values.insert(request.key, value);
                Output::Done
            }
            Input::Get => Output::Value(current),
            Input::CompareAndSet { expected, new } => {
                let swapped = current == expected;
                if swapped {
                    self.values.insert(request.key, new);
                }
                Output::Swapped(swapped)
            }
            Input::Delete => {
                self.values.remove(&request.key);
                Output::Done
            }
        }
    }

    fn query(&self, key: &Key) -> Output {
        Output::Value(self.get(*key))
    }

    fn snapshot(&self) -> KvSnapshot {
        KvSnapshot(self.values.clone())
    }

    fn restore(&mut self, input: &mut dyn io::Read) -> io::Result<()> {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        self.values = postcard::from_bytes(&bytes)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
        Ok(())
    }

    fn digest(&self) -> StateDigest {
        let bytes = postcard::to_stdvec(&self.values).unwrap_or_default();
        StateDigest(*blake3::hash(&bytes).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_core::{LogIndex, Term};

    const CONTEXT: ApplyContext =
        ApplyContext { index: LogIndex(1), term: Term(1), timestamp_millis: 0 };

    #[test]
    fn operations_and_a_snapshot_round_trip() {
        let mut kv = KvMachine::new();
        assert_eq!(kv.apply(KvInput { key: 1, input: Input::Put(5) }, &CONTEXT), Output::Done);
        let cas = Input::CompareAndSet { expected: Some(4), new: 6 };
        assert_eq!(kv.apply(KvInput { key: 1, input: cas }, &CONTEXT), Output::Swapped(false));
        let cas = Input::CompareAndSet { expected: Some(5), new: 6 };
        assert_eq!(kv.apply(KvInput { key: 1, input: cas }, &CONTEXT), Output::Swapped(true));
        assert_eq!(kv.query(&1), Output::Value(Some(6)));
        let mut bytes = Vec::new();
        kv.snapshot().write_to(&mut bytes).expect("writes");
        let mut restored = KvMachine::new();
        restored.restore(&mut bytes.as_slice()).expect("restores");
        assert_eq!(restored.digest(), kv.digest());
        assert_eq!(kv.apply(KvInput { key: 1, input: Input::Delete }, &CONTEXT), Output::Done);
        assert_eq!(kv.query(&1), Output::Value(None));
        assert_ne!(restored.digest(), kv.digest());
        assert!(restored.restore(&mut &b"\xff\xff\xff\xff"[..]).is_err());
    }
}
