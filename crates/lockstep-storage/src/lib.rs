//! # lockstep-storage: the durable log and hard state
//!
//! A replica may only acknowledge what it will still have after `kill -9` or a power cut, and
//! must notice when its disk lies. This crate keeps a replica's log in a segmented write-ahead
//! log ([`Wal`]) and its hard state in a file with two checksummed copies ([`HardStateFile`]),
//! both over the small [`Disk`] trait, with a real implementation ([`RealDisk`]) and a
//! simulated one ([`SimDisk`]) that loses unsynced writes at a crash and injects faults.
//!
//! ```
//! use std::path::Path;
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use lockstep_core::{Command, Entry, EntryPayload, LogIndex, Term};
//! use lockstep_storage::{Faults, SimDisk, Wal, WalOptions};
//!
//! let disk = Arc::new(SimDisk::new(1, Faults::default()));
//! let dir = Path::new("/replica/wal");
//! let mut wal = Wal::open(disk.clone(), dir, WalOptions::default()).unwrap();
//! let entry = Entry {
//!     term: Term(1),
//!     index: LogIndex(1),
//!     payload: EntryPayload::Command(Command { data: Bytes::from("x=1"), timestamp_millis: 0 }),
//! };
//! wal.append(None, &[entry.clone()]).unwrap();
//! wal.sync().unwrap();
//! disk.crash(); // unsynced writes are lost; synced ones stay
//! let wal = Wal::open(disk, dir, WalOptions::default()).unwrap();
//! assert_eq!(wal.entries(LogIndex(1), LogIndex(1), u64::MAX).unwrap(), vec![entry]);
//! ```
//!
//! See `docs/storage.md` for the formats and the recovery rules.

#![deny(missing_docs)]

pub mod disk;
pub mod error;
pub mod frame;
pub mod group;
pub mod hard_state;
pub mod snapshot;
pub mod wal;

pub use disk::{Disk, DiskFile, Faults, RealDisk, SimDisk};
pub use error::IoFailure;
pub use group::{AppendResult, BatchLimits, GroupCommit, PendingAppend};
pub use hard_state::{DurableState, HardStateError, HardStateFile};
pub use snapshot::{
    SnapshotError, SnapshotFooter, SnapshotReader, SnapshotReceiver, SnapshotStore, SnapshotWriter,
    StoredSnapshot,
};
pub use wal::{Damage, Wal, WalError, WalOptions};
