//! A replica's durable state on a [`Disk`]: the write-ahead log and the hard state file, and
//! recovery from them.
//!
//! A write is carried out in two steps, so that a driver can group many writes under one sync
//! (and a simulator can crash a replica between them):
//! 1. [`LogStore::write`] appends the entries (after any truncation) to the log; they are
//!    written, not yet durable. A new hard state is held back.
//! 2. [`LogStore::sync`] syncs the log, and only then stores the newest hard state. The hard
//!    state's commit index therefore never names an entry the log may have lost, which makes
//!    it a valid bound for [`Wal::open_holding`] at recovery.
//!
//! Layout under the replica's directory: `hard-state` (two checksummed copies, see
//! `docs/storage.md`) and `wal/` (the log's segments).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lockstep_core::{HardState, InitialState, LogIndex, Membership, Persist};
use lockstep_storage::{
    Disk, DurableState, HardStateError, HardStateFile, IoFailure, Wal, WalError, WalOptions,
};

/// What can go wrong with a replica's durable state.
#[derive(Debug)]
pub enum StoreError {
    /// The log failed.
    Wal(WalError),
    /// The hard state file failed.
    HardState(HardStateError),
    /// An I/O operation outside both failed.
    Io(IoFailure),
    /// The directory holds no replica and none was asked to be created.
    NotBootstrapped(PathBuf),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Wal(error) => write!(f, "{error}"),
            StoreError::HardState(error) => write!(f, "{error}"),
            StoreError::Io(failure) => write!(f, "{failure}"),
            StoreError::NotBootstrapped(dir) => write!(
                f,
                "{} holds no replica: start it with the cluster's initial members to create one",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<WalError> for StoreError {
    fn from(error: WalError) -> StoreError {
        StoreError::Wal(error)
    }
}

impl From<HardStateError> for StoreError {
    fn from(error: HardStateError) -> StoreError {
        StoreError::HardState(error)
    }
}

/// A replica's log and hard state. See the module documentation.
#[derive(Debug)]
pub struct LogStore {
    wal: Wal,
    hard_state: HardStateFile,
    /// The newest hard state written and not yet stored (it is stored after the next sync).
    pending_hard_state: Option<HardState>,
    /// Whether anything was written since the last sync.
    dirty: bool,
}

impl LogStore {
    /// Opens the replica in `dir` and recovers what it holds. With `bootstrap`, a directory
    /// that holds no replica yet becomes one of a new cluster of those members (a directory
    /// that does hold one keeps its own state); without it, a missing replica is an error.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        bootstrap: Option<&Membership>,
        options: WalOptions,
    ) -> Result<(LogStore, InitialState), StoreError> {
        let hard_state_path = dir.join("hard-state");
        if bootstrap.is_some() {
            let io = |operation: &'static str, path: &Path| {
                let path = path.to_path_buf();
                move |source| StoreError::Io(IoFailure { operation, path, source })
            };
            disk.create_dir_all(dir).map_err(io("create directory", dir))?;
            let parent = dir.parent().filter(|parent| !parent.as_os_str().is_empty());
            disk.sync_dir(parent.unwrap_or(Path::new("."))).map_err(io("sync", dir))?;
        }
        let mut hard_state =
            match HardStateFile::open(disk.clone(), &hard_state_path, bootstrap.is_some()) {
                Ok(file) => file,
                Err(HardStateError::Io(failure))
                    if failure.source.kind() == std::io::ErrorKind::NotFound =>
                {
                    return Err(StoreError::NotBootstrapped(dir.to_path_buf()));
                }
                Err(error) => return Err(error.into()),
            };
        if let Some(membership) = bootstrap {
            // A file created but never stored (a crash during bootstrap) holds the default:
            // no term, no vote, so nothing was promised yet and bootstrapping again is safe.
            if *hard_state.state() == DurableState::default() {
                hard_state.store(&DurableState {
                    hard_state: HardState::default(),
                    membership: membership.clone(),
                })?;
            }
        }
        let durable = hard_state.state().clone();
        if durable.membership.members().is_empty() {
            return Err(StoreError::NotBootstrapped(dir.to_path_buf()));
        }
        let options = WalOptions { create_if_missing: bootstrap.is_some(), ..options };
        let wal = Wal::open_holding(disk, &dir.join("wal"), options, durable.hard_state.commit)?;
        let entries = if wal.last_index() >= wal.first_index() {
            wal.entries(wal.first_index(), wal.last_index(), u64::MAX)?
        } else {
            Vec::new()
        };
        let initial = InitialState {
            hard_state: durable.hard_state,
            snapshot: None,
            entries,
            membership: durable.membership,
            applied: LogIndex::ZERO,
        };
        let store = LogStore { wal, hard_state, pending_hard_state: None, dirty: false };
        Ok((store, initial))
    }

    /// Writes `persist`'s log changes (not yet durable) and holds back its hard state for the
    /// next [`LogStore::sync`].
    pub fn write(&mut self, persist: &Persist) -> Result<(), StoreError> {
        if persist.truncate_from.is_some() || !persist.entries.is_empty() {
            self.wal.append(persist.truncate_from, &persist.entries)?;
            self.dirty = true;
        }
        if let Some(hard_state) = persist.hard_state {
            self.pending_hard_state = Some(hard_state);
            self.dirty = true;
        }
        Ok(())
    }

    /// Makes every write so far durable: the log first, then the hard state.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        self.wal.sync()?;
        if let Some(hard_state) = self.pending_hard_state.take() {
            let membership = self.hard_state.state().membership.clone();
            self.hard_state.store(&DurableState { hard_state, membership })?;
        }
        self.dirty = false;
        Ok(())
    }

    /// The log.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// The hard state as last stored.
    pub fn stored_hard_state(&self) -> HardState {
        self.hard_state.state().hard_state
    }
}
