//! A blob store for tests and benchmarks: keys to byte values.
//!
//! Its snapshot view is cheap the way a real state machine's should be: the map is split into
//! shards held behind `Arc`s, a view clones the shard pointers, and the first write to a shard
//! after a view copies that shard alone (copy-on-write).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use lockstep_core::{ApplyContext, StateDigest, StateMachine, StateSnapshot};

const SHARDS: u64 = 1024;

type Shard = Arc<BTreeMap<u64, Bytes>>;

/// Keys to values, in copy-on-write shards.
pub struct Blobs {
    shards: Vec<Shard>,
}

impl Default for Blobs {
    fn default() -> Blobs {
        Blobs { shards: (0..SHARDS).map(|_| Shard::default()).collect() }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Put {
    pub key: u64,
    pub value: Bytes,
}

/// The shards as they were when the view was taken.
pub struct BlobsView(Vec<Shard>);

impl StateSnapshot for BlobsView {
    fn write_to(&self, out: &mut dyn io::Write) -> io::Result<()> {
        let count: usize = self.0.iter().map(|shard| shard.len()).sum();
        out.write_all(&(count as u64).to_le_bytes())?;
        for shard in &self.0 {
            for (key, value) in shard.iter() {
                out.write_all(&key.to_le_bytes())?;
                out.write_all(&(value.len() as u64).to_le_bytes())?;
                out.write_all(value)?;
            }
        }
        Ok(())
    }
}

fn read_u64(input: &mut dyn io::Read) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    input.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

impl StateMachine for Blobs {
    type Input = Put;
    type Output = u64;
    type Query = u64;
    type Snapshot = BlobsView;

    fn apply(&mut self, input: Put, _: &ApplyContext) -> u64 {
        let shard = &mut self.shards[(input.key % SHARDS) as usize];
        Arc::make_mut(shard).insert(input.key, input.value);
        input.key
    }

    fn query(&self, key: &u64) -> u64 {
        self.shards[(key % SHARDS) as usize].get(key).map_or(0, |value| value.len() as u64)
    }

    fn snapshot(&self) -> BlobsView {
        BlobsView(self.shards.clone())
    }

    fn restore(&mut self, input: &mut dyn io::Read) -> io::Result<()> {
        let count = read_u64(input)?;
        let mut shards: Vec<BTreeMap<u64, Bytes>> = (0..SHARDS).map(|_| BTreeMap::new()).collect();
        for _ in 0..count {
            let key = read_u64(input)?;
            let len = read_u64(input)?;
            if len > 1 << 30 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "value too large"));
            }
            let mut value = vec![0u8; len as usize];
            input.read_exact(&mut value)?;
            shards[(key % SHARDS) as usize].insert(key, Bytes::from(value));
        }
        self.shards = shards.into_iter().map(Arc::new).collect();
        Ok(())
    }

    fn digest(&self) -> StateDigest {
        let mut hasher = blake3::Hasher::new();
        for shard in &self.shards {
            for (key, value) in shard.iter() {
                hasher.update(&key.to_le_bytes());
                hasher.update(value);
            }
        }
        StateDigest(*hasher.finalize().as_bytes())
    }
}
