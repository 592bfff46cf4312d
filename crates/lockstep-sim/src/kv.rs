//! The key-value state machine the simulator replicates: one register per key, with put, get,
//! compare-and-set and delete (the operations the linearizability checker models).

use std::collections::BTreeMap;
use std::io;

use lockstep_core::{ApplyContext, LogIndex, StateDigest, StateMachine, StateSnapshot};
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
    /// A fault the simulator injects: the next write applied here stores a wrong value, as a
    /// state machine that read a per-replica random number would.
    diverge_next: Option<Value>,
    /// Where this replica's state departed from what the log says, if it did.
    diverged_at: Option<LogIndex>,
}

/// The bit a fault sets in a value: no client ever writes it, so a value that has it came from
/// a divergent replica.
pub const WRONG: Value = 1 << 62;

/// The key a fault writes to (no client uses it).
pub const NOISE_KEY: Key = 1 << 40;

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

    /// Makes the next write applied here non-deterministic: it stores a wrong value.
    /// `noise` makes the wrong value this fault's own.
    pub fn diverge_next_write(&mut self, noise: Value) {
        self.diverge_next = Some(noise);
    }

    /// Corrupts the state in memory, as a memory error would: one value gets the [`WRONG`]
    /// bit (or a key appears). `at` is the index applied so far.
    /// `noise` makes the wrong value this fault's own.
    pub fn corrupt(&mut self, key: Key, at: LogIndex, noise: Value) {
        self.values.insert(NOISE_KEY + 1, WRONG | noise);
        let value = self.values.get(&key).copied().unwrap_or(0) ^ (WRONG | noise);
        self.values.insert(key, value);
        self.diverged_at.get_or_insert(at);
    }

    /// Where this replica's state departed from the log's, if a fault made it.
    pub fn diverged_at(&self) -> Option<LogIndex> {
        self.diverged_at
    }
}

impl StateMachine for KvMachine {
    type Input = KvInput;
    type Output = Output;
    type Query = Key;
    type Snapshot = KvSnapshot;

    fn apply(&mut self, request: KvInput, context: &ApplyContext) -> Output {
        let current = self.get(request.key);
        let fault = |machine: &mut KvMachine, value: Value| {
            if let Some(noise) = machine.diverge_next.take() {
                machine.diverged_at.get_or_insert(context.index.prev());
                // As if it had read a random number of its own: kept under a key no client
                // uses, so the state stays wrong even after the value below is overwritten.
                machine.values.insert(NOISE_KEY, WRONG | noise);
                value ^ (WRONG | noise)
            } else {
                value
            }
        };
        match request.input {
            Input::Put(value) => {
                let value = fault(self, value);
                self.values.insert(request.key, value);
                Output::Done
            }
            Input::Get => Output::Value(current),
            Input::CompareAndSet { expected, new } => {
                let swapped = current == expected;
                if swapped {
                    let new = fault(self, new);
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
        // A restored state is whatever the snapshot held: the simulator judges it afresh.
        self.diverged_at = None;
        self.diverge_next = None;
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
