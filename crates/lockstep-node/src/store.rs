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
    /// The directory holds part of a replica (a log without a hard state, or a hard state
    /// without a log): it was damaged or partly restored, and must not be trusted.
    Incomplete {
        /// The directory.
        dir: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// The replica was bootstrapped with other members than the ones given now.
    MembersDiffer {
        /// The members stored at bootstrap.
        stored: Box<Membership>,
        /// The members given now.
        given: Box<Membership>,
    },
    /// An earlier write or sync failed, so what is on disk is unknown: reopen the store.
    Failed(String),
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
            StoreError::Incomplete { dir, detail } => write!(
                f,
                "{} holds part of a replica ({detail}): it was damaged or partly restored; this \
                 replica cannot know what it promised and must not rejoin under its id",
                dir.display()
            ),
            StoreError::MembersDiffer { stored, given } => write!(
                f,
                "this replica was created as a member of {stored}, not {given}: leave the initial \
                 members as they were (later changes go through the log)"
            ),
            StoreError::Failed(reason) => {
                write!(f, "the store must be reopened after an earlier failure: {reason}")
            }
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
    /// Set after any failure: what is on disk is unknown, so nothing more is accepted.
    failed: Option<String>,
    /// The largest command a single entry may carry (see [`LogStore::command_bytes_max`]).
    command_bytes_max: u64,
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
        let wal_dir = dir.join("wal");
        let io = |operation: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io(IoFailure { operation, path, source })
        };
        let has_hard_state = match disk.list(dir) {
            Ok(names) => names.iter().any(|name| name == "hard-state"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
            Err(error) => return Err(io("list", dir)(error)),
        };
        let has_log = match disk.list(&wal_dir) {
            Ok(names) => !names.is_empty(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
            Err(error) => return Err(io("list", &wal_dir)(error)),
        };
        if has_log && !has_hard_state {
            return Err(StoreError::Incomplete {
                dir: dir.to_path_buf(),
                detail: "a log but no hard state".to_string(),
            });
        }
        let creating = !has_hard_state;
        if creating {
            if bootstrap.is_none() {
                return Err(StoreError::NotBootstrapped(dir.to_path_buf()));
            }
            // One level at a time, each made durable in its parent, so no ancestor created
            // here can vanish in a crash and take the replica with it.
            let mut levels: Vec<&Path> = dir.ancestors().collect();
            levels.reverse();
            for level in levels.into_iter().filter(|level| !level.as_os_str().is_empty()) {
                let Some(parent) = level.parent() else { continue };
                let exists = match disk.list(level) {
                    Ok(_) => true,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
                    Err(error) => return Err(io("list", level)(error)),
                };
                if !exists {
                    disk.create_dir_all(level).map_err(io("create directory", level))?;
                    let parent =
                        if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
                    disk.sync_dir(parent).map_err(io("sync", parent))?;
                }
            }
        }
        let mut hard_state = HardStateFile::open(disk.clone(), &hard_state_path, creating)?;
        if let Some(membership) = bootstrap {
            // A file created but never stored (a crash during bootstrap) holds the default:
            // no term, no vote, no log, so nothing was promised yet and bootstrapping again is
            // safe.
            if *hard_state.state() == DurableState::default() && !has_log {
                hard_state.store(&DurableState {
                    hard_state: HardState::default(),
                    membership: membership.clone(),
                })?;
            }
            let stored = &hard_state.state().membership;
            if stored != membership {
                return Err(StoreError::MembersDiffer {
                    stored: Box::new(stored.clone()),
                    given: Box::new(membership.clone()),
                });
            }
        }
        let durable = hard_state.state().clone();
        if durable.membership.members().is_empty() {
            return Err(StoreError::NotBootstrapped(dir.to_path_buf()));
        }
        // The log directory is created (and its parent synced) by the first open; a hard
        // state that was stored means that open completed, unless nothing was ever written.
        let wal_exists = match disk.list(&wal_dir) {
            Ok(_) => true,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
            Err(error) => return Err(io("list", &wal_dir)(error)),
        };
        // The log's first segment is durable before any hard state is stored: a stored term
        // with no log at all means the log was lost.
        if (!wal_exists || !has_log) && durable.hard_state != HardState::default() {
            return Err(StoreError::Incomplete {
                dir: dir.to_path_buf(),
                detail: format!("a hard state ({}) but no log", durable.hard_state),
            });
        }
        let command_bytes_max = options.segment_bytes / 2;
        let options = WalOptions { create_if_missing: true, ..options };
        let wal = Wal::open_holding(disk, &wal_dir, options, durable.hard_state.commit)?;
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
        let store = LogStore {
            wal,
            hard_state,
            pending_hard_state: None,
            dirty: false,
            failed: None,
            command_bytes_max,
        };
        Ok((store, initial))
    }

    /// Writes `persist`'s log changes (not yet durable) and holds back its hard state for the
    /// next [`LogStore::sync`]. After any failure the store refuses everything: reopen it.
    pub fn write(&mut self, persist: &Persist) -> Result<(), StoreError> {
        self.check_usable()?;
        if let Some(meta) = &persist.snapshot {
            let restarted = self.wal.restart_at(meta.last_index.next());
            self.note_failure(restarted)?;
            self.dirty = true;
        }
        if persist.truncate_from.is_some() || !persist.entries.is_empty() {
            let written = self.wal.append(persist.truncate_from, &persist.entries);
            self.note_failure(written)?;
            self.dirty = true;
        }
        if let Some(hard_state) = persist.hard_state {
            self.pending_hard_state = Some(hard_state);
            self.dirty = true;
        }
        Ok(())
    }

    /// Makes every write so far durable: the log first, then the hard state. After any
    /// failure the store refuses everything: reopen it.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.check_usable()?;
        if !self.dirty {
            return Ok(());
        }
        let synced = self.wal.sync();
        self.note_failure(synced)?;
        if let Some(hard_state) = self.pending_hard_state {
            let membership = self.hard_state.state().membership.clone();
            let stored = self.hard_state.store(&DurableState { hard_state, membership });
            self.note_failure(stored)?;
            self.pending_hard_state = None;
        }
        self.dirty = false;
        Ok(())
    }

    /// The largest command one entry may carry: a bigger one could never be written, so the
    /// driver refuses it before it reaches the log.
    pub fn command_bytes_max(&self) -> u64 {
        self.command_bytes_max
    }

    fn check_usable(&self) -> Result<(), StoreError> {
        match &self.failed {
            Some(reason) => Err(StoreError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    fn note_failure<E: Into<StoreError>>(
        &mut self,
        result: Result<(), E>,
    ) -> Result<(), StoreError> {
        result.map_err(|error| {
            let error = error.into();
            self.failed = Some(error.to_string());
            error
        })
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
