//! A replica's durable state on a [`Disk`]: the write-ahead log and the hard state file, and
//! recovery from them.
//!
//! A write is carried out in two steps, so that a driver can group many writes under one sync
//! (and a simulator can crash a replica between them):
//! 1. [`LogStore::write`] appends the entries (after any truncation) to the log; they are
//!    written, not yet durable. A new hard state is held back.
//! 2. [`LogStore::sync`] syncs the log, and only then stores the newest hard state. The hard
//!    state's commit index therefore never names an entry the log may have lost, which makes
//!    it a valid bound for [`Wal::open_holding`] at recovery. A driver may split it:
//!    [`LogStore::sync_log`] (the log, and the hard state if its term or vote changed: what
//!    acknowledgements and votes need) and later [`LogStore::sync_commit`] (a new commit index
//!    alone, which need not be durable at all).
//!
//! Layout under the replica's directory: `hard-state` (two checksummed copies, see
//! `docs/storage.md`), `wal/` (the log's segments) and `snapshots/` (the latest snapshot:
//! a checkpoint taken here or one received from a leader).
//!
//! Recovery starts from the latest snapshot and the log entries after it. If the log does
//! not continue the snapshot (a snapshot from a leader replaced the log, and the crash came
//! before the log's restart was durable), the log is restarted after the snapshot.
//!
//! A damaged log (when something intact after the damage tells how far it reached) or a
//! damaged snapshot does not stop the replica: a note, `lost-entries`, records the highest
//! index it may have acknowledged, the damaged files are set aside (`*.damaged`), and the
//! replica starts from its last good snapshot (or nothing) with an empty log, out of elections
//! until it holds that far again (`InitialState::lost_through`). See `docs/storage.md`,
//! "Damage repaired from peers".

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use lockstep_core::{
    HardState, InitialState, InstallSnapshot, LogIndex, Membership, Persist, SnapshotMeta,
    StateSnapshot, Term,
};
use lockstep_storage::frame::{
    body_matches, decode_header, encode_frame, FrameKind, FRAME_HEADER_BYTES,
};
use lockstep_storage::{
    Damage, Disk, DurableState, HardStateError, HardStateFile, IoFailure, SnapshotError,
    SnapshotReader, SnapshotReceiver, SnapshotStore, SnapshotWriter, StoredSnapshot, Wal, WalError,
    WalOptions,
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
    /// A snapshot file failed or is damaged.
    Snapshot(SnapshotError),
    /// An earlier write or sync failed, so what is on disk is unknown: reopen the store.
    Failed(String),
}

impl From<SnapshotError> for StoreError {
    fn from(error: SnapshotError) -> StoreError {
        StoreError::Snapshot(error)
    }
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
            StoreError::Snapshot(error) => write!(f, "{error}"),
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

/// The file, beside the hard state, that notes entries the log lost to damage.
const LOST_NOTE: &str = "lost-entries";

/// Entries a replica's log lost to damage and must hold again before it takes part in
/// elections (see `docs/storage.md`): kept in the file `lost-entries` until then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostNote {
    /// The log held entries at least this far (found in it, or committed), any of which this
    /// replica may have acknowledged.
    pub lost_through: LogIndex,
    /// The damaged log was set aside and the log restarted after the snapshot: whatever it
    /// holds now came from leaders. Until then, a restart sets it aside again.
    pub set_aside: bool,
    /// The term of the hard state when the damage was found: every entry this replica may
    /// have acknowledged is of that term or an earlier one (an acknowledgement leaves only
    /// once its term is durable). The replica may vote for a candidate whose last entry is of
    /// a later term: that candidate's log holds every entry those acknowledgements could have
    /// committed. `None` in a note written before the term was recorded (by a version that
    /// could acknowledge entries of a term not yet durable): the replica then votes for no one
    /// until it holds its entries again.
    pub term_max: Option<Term>,
}

/// The note as written before it recorded a term.
#[derive(Deserialize)]
struct LostNoteWithoutTerm {
    lost_through: LogIndex,
    set_aside: bool,
}

impl LostNote {
    /// The note written before a damaged log is set aside: the log held entries through
    /// `found`; the bound is at least the commit index and any earlier note's; the hard state
    /// holds `term`.
    fn setting_aside(
        found: LogIndex,
        commit: LogIndex,
        term: Term,
        earlier: Option<LostNote>,
    ) -> LostNote {
        let earlier_through = earlier.map_or(LogIndex::ZERO, |note| note.lost_through);
        let earlier_term = earlier.and_then(|note| note.term_max).unwrap_or(Term::ZERO);
        LostNote {
            lost_through: found.max(commit).max(earlier_through),
            set_aside: false,
            term_max: Some(term.max(earlier_term)),
        }
    }
}

fn read_lost_note(disk: &dyn Disk, path: &Path) -> Result<Option<LostNote>, StoreError> {
    let file = match disk.open(path, false) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io(IoFailure { operation: "open", path: path.into(), source }))
        }
    };
    let unreadable = || StoreError::Incomplete {
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        detail: format!(
            "{} (which entries the log lost to damage) is unreadable, so how far this replica \
             had acknowledged is unknown",
            path.display()
        ),
    };
    let len = file.len().map_err(|source| {
        StoreError::Io(IoFailure { operation: "read", path: path.into(), source })
    })?;
    if len > 4096 {
        return Err(unreadable());
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_at(0, &mut bytes).map_err(|source| {
        StoreError::Io(IoFailure { operation: "read", path: path.into(), source })
    })?;
    let header = decode_header(&bytes).filter(|header| header.kind == FrameKind::Note);
    let body = header.and_then(|header| {
        bytes
            .get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + header.body_len as usize)
            .filter(|body| body_matches(&header, body))
    });
    let note = body.and_then(|body| {
        postcard::from_bytes::<LostNote>(body).ok().or_else(|| {
            let older = postcard::from_bytes::<LostNoteWithoutTerm>(body).ok()?;
            Some(LostNote {
                lost_through: older.lost_through,
                set_aside: older.set_aside,
                term_max: None,
            })
        })
    });
    note.map(Some).ok_or_else(unreadable)
}

/// Writes the note durably: a temporary file, synced, renamed into place, directory synced.
fn write_lost_note(disk: &dyn Disk, dir: &Path, note: &LostNote) -> Result<(), StoreError> {
    let io = |operation: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io(IoFailure { operation, path, source })
    };
    let path = dir.join(LOST_NOTE);
    let temporary = dir.join(format!("{LOST_NOTE}.tmp"));
    let body = postcard::to_stdvec(note).map_err(|error| StoreError::Failed(error.to_string()))?;
    let frame = encode_frame(FrameKind::Note, 0, &body);
    let mut file = disk.open(&temporary, true).map_err(io("create", &temporary))?;
    file.set_len(0).map_err(io("truncate", &temporary))?;
    file.write_at(0, &frame).map_err(io("write", &temporary))?;
    file.sync_data().map_err(io("sync", &temporary))?;
    disk.rename(&temporary, &path).map_err(io("rename", &temporary))?;
    disk.sync_dir(dir).map_err(io("sync", dir))
}

/// A replica's log and hard state. See the module documentation.
pub struct LogStore {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    /// Entries the log lost to damage and does not hold again yet.
    lost: Option<LostNote>,
    /// The damage this open found in the log.
    repaired: Option<Damage>,
    /// The damaged checkpoint this open set aside, and why.
    repaired_snapshot: Option<String>,
    wal: Wal,
    hard_state: HardStateFile,
    snapshots: SnapshotStore,
    latest: Option<StoredSnapshot>,
    /// The snapshot file being received from a leader, with its digest.
    receiving: Option<(SnapshotReceiver, [u8; 32])>,
    /// The newest hard state written and not yet stored (stored by the next `sync_log` if its
    /// term or vote changed, else by `sync_commit`).
    pending_hard_state: Option<HardState>,
    /// Whether anything was written since the last sync.
    dirty: bool,
    /// Set after any failure: what is on disk is unknown, so nothing more is accepted.
    failed: Option<String>,
    /// The largest command a single entry may carry (see [`LogStore::command_bytes_max`]).
    command_bytes_max: u64,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("wal", &self.wal)
            .field("latest_snapshot", &self.latest.as_ref().map(|stored| &stored.footer.meta))
            .field("failed", &self.failed)
            .finish()
    }
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
                    commit_term: None,
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
        // What was read may be a copy that was written but never synced (a store whose sync
        // failed, then a restart of the process with the page cache intact): store it again,
        // so the term, vote and members this replica is about to act on are durable.
        hard_state.store(&durable)?;
        // The log directory is created (and its parent synced) by the first open; a hard
        // state that was stored means that open completed, unless nothing was ever written.
        let wal_exists = match disk.list(&wal_dir) {
            Ok(_) => true,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
            Err(error) => return Err(io("list", &wal_dir)(error)),
        };
        // The log's first segment is durable before any hard state is stored: a stored term
        // with no log at all means the log was lost.
        // (Unless the log was set aside for damage, and a crash came before a new one began.)
        let noted = read_lost_note(disk.as_ref(), &dir.join(LOST_NOTE))?.is_some();
        if (!wal_exists || !has_log) && durable.hard_state != HardState::default() && !noted {
            return Err(StoreError::Incomplete {
                dir: dir.to_path_buf(),
                detail: format!("a hard state ({}) but no log", durable.hard_state),
            });
        }
        let command_bytes_max = options.segment_bytes / 2;
        let commit = durable.hard_state.commit;
        let term = durable.hard_state.term;
        let note_path = dir.join(LOST_NOTE);
        let mut lost = read_lost_note(disk.as_ref(), &note_path)?;
        if lost.is_some_and(|note| !note.set_aside) {
            // A crash came while the damaged log was being set aside: finish that first.
            Wal::set_aside(disk.as_ref(), &wal_dir)?;
        }
        let mut repaired_snapshot = None;
        let snapshots = SnapshotStore::open(disk.clone(), &dir.join("snapshots"))?;
        let latest = match snapshots.latest().and_then(|latest| match latest {
            Some(stored) => snapshots.verify(&stored).map(|()| Some(stored)),
            None => Ok(None),
        }) {
            Ok(latest) => latest,
            Err(SnapshotError::Corrupt { path, detail }) => {
                // The checkpoint is damaged: the state it held is gone here, and so is the use
                // of the log after it. Set both aside and fetch everything from the others,
                // noting first how far the log reached.
                let found = Wal::highest_index(disk.as_ref(), &wal_dir)?;
                let found = found.unwrap_or(LogIndex::ZERO);
                let note = LostNote::setting_aside(found, commit, term, lost);
                write_lost_note(disk.as_ref(), dir, &note)?;
                snapshots.set_aside(&path)?;
                Wal::set_aside(disk.as_ref(), &wal_dir)?;
                lost = Some(note);
                repaired_snapshot = Some(format!("{}: {detail}", path.display()));
                None
            }
            Err(error) => return Err(error.into()),
        };
        let (snapshot_index, snapshot_term) =
            latest.as_ref().map_or((LogIndex::ZERO, Term::ZERO), |stored| {
                (stored.footer.meta.last_index, stored.footer.meta.last_term)
            });
        // The log must hold what was committed beyond the snapshot; below it, the snapshot does.
        // (Not while entries lost to damage are fetched again: then the log may end below the
        // commit index, and the note's bound, at least that index, keeps them safe.)
        let must_hold =
            if commit > snapshot_index && lost.is_none() { commit } else { LogIndex::ZERO };
        let options = WalOptions { create_if_missing: true, ..options };
        let mut repaired = None;
        // The entry at the commit index must be the committed one (when the log holds it).
        let committed =
            durable.commit_term.filter(|_| commit > snapshot_index).map(|term| (commit, term));
        let opened =
            Wal::open_holding_term(disk.clone(), &wal_dir, options.clone(), must_hold, committed);
        let mut wal = match opened {
            Ok(wal) => wal,
            Err(error) => {
                // Damage in the log: drop the log and fetch it again from the other replicas,
                // if how far it reached is known (else stop, as before). All of it, not only
                // what follows the damage: a damaged frame may have held a truncation, so
                // what precedes it may be entries the log had since replaced.
                let Some(damage) = Wal::survey_damage(disk.as_ref(), &wal_dir, &options, &error)?
                else {
                    return Err(error.into());
                };
                let note = LostNote::setting_aside(damage.found_through, commit, term, lost);
                write_lost_note(disk.as_ref(), dir, &note)?;
                Wal::set_aside(disk.as_ref(), &wal_dir)?;
                lost = Some(note);
                repaired = Some(damage);
                Wal::open(disk.clone(), &wal_dir, options)?
            }
        };
        let holds_entries = wal.last_index() >= wal.first_index();
        let after_gap = wal.first_index() > snapshot_index.next();
        if after_gap && (holds_entries || snapshot_index > LogIndex::ZERO) {
            // The log starts after a gap: entries between the snapshot and it are gone.
            return Err(StoreError::Incomplete {
                dir: dir.to_path_buf(),
                detail: format!(
                    "the log starts at {} but the snapshot ends at {snapshot_index}",
                    wal.first_index()
                ),
            });
        }
        let disagrees = snapshot_index > LogIndex::ZERO
            && wal.first_index() <= snapshot_index
            && wal.term(snapshot_index) != Some(snapshot_term);
        if disagrees {
            if wal.term(snapshot_index).is_some() && commit > snapshot_index {
                // Committed entries that contradict the snapshot: one of them is damaged.
                return Err(StoreError::Incomplete {
                    dir: dir.to_path_buf(),
                    detail: format!(
                        "the log's entry {snapshot_index} disagrees with the snapshot through \
                         it, yet entries through {commit} are committed"
                    ),
                });
            }
            // A snapshot installed from a leader replaced this log, and the crash came before
            // the log's restart was durable: what the log holds belongs to the old history.
            wal.restart_at(snapshot_index.next())?;
            wal.sync()?;
        }
        if let Some(note) = lost {
            // The log holds nothing from before the damage now (it restarts after the
            // snapshot): only entries fetched from leaders from here on. The bound covers the
            // commit index too (a commit stored after the note was written).
            let settled = LostNote {
                lost_through: note.lost_through.max(commit),
                set_aside: true,
                term_max: note.term_max,
            };
            if settled != note {
                write_lost_note(disk.as_ref(), dir, &settled)?;
            }
            lost = Some(settled);
        }
        let first = wal.first_index().max(snapshot_index.next());
        let entries = if wal.last_index() >= first {
            wal.entries(first, wal.last_index(), u64::MAX)?
        } else {
            Vec::new()
        };
        let initial = InitialState {
            hard_state: durable.hard_state,
            snapshot: latest.as_ref().map(|stored| stored.footer.meta.clone()),
            entries,
            membership: durable.membership,
            applied: snapshot_index,
            lost_through: lost.map(|note| note.lost_through),
            lost_term_max: lost.and_then(|note| note.term_max),
        };
        let mut store = LogStore {
            disk,
            dir: dir.to_path_buf(),
            lost,
            repaired,
            repaired_snapshot,
            wal,
            hard_state,
            snapshots,
            latest,
            receiving: None,
            pending_hard_state: None,
            dirty: false,
            failed: None,
            command_bytes_max,
        };
        // The entries may be back already (fetched, and a crash came before the note went).
        store.settle_lost_note()?;
        Ok((store, initial))
    }

    /// The damage this open found in the log and cut it at, if any (the entries after it are
    /// fetched again from the other replicas).
    pub fn repaired_damage(&self) -> Option<&Damage> {
        self.repaired.as_ref()
    }

    /// The damage this open found, in the log or in the checkpoint, said for a person: the
    /// damaged files were set aside and what they held is fetched again from the others.
    pub fn damage_found(&self) -> Option<String> {
        match (&self.repaired, &self.repaired_snapshot) {
            (Some(damage), _) => Some(format!("the write-ahead log is damaged: {damage}")),
            (None, Some(snapshot)) => Some(format!("the latest checkpoint is damaged: {snapshot}")),
            (None, None) => None,
        }
    }

    /// Entries this replica's log lost to damage, while it does not hold that far again.
    pub fn lost_entries(&self) -> Option<LostNote> {
        self.lost
    }

    /// Removes the note of lost entries once the durable log reaches its bound again.
    fn settle_lost_note(&mut self) -> Result<(), StoreError> {
        let Some(note) = self.lost else { return Ok(()) };
        if self.wal.last_index() < note.lost_through {
            return Ok(());
        }
        let path = self.dir.join(LOST_NOTE);
        match self.disk.remove(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io(IoFailure { operation: "remove", path, source }))
            }
        }
        self.disk.sync_dir(&self.dir).map_err(|source| {
            StoreError::Io(IoFailure { operation: "sync", path: self.dir.clone(), source })
        })?;
        self.lost = None;
        Ok(())
    }

    /// The latest durable snapshot (a checkpoint this replica took, or one it received), from
    /// which the state machine must be restored at recovery.
    pub fn latest_snapshot(&self) -> Option<&StoredSnapshot> {
        self.latest.as_ref()
    }

    /// A reader of `snapshot`'s data (checked against its digest at the end).
    pub fn snapshot_reader(&self, snapshot: &StoredSnapshot) -> Result<SnapshotReader, StoreError> {
        Ok(self.snapshots.reader(snapshot)?)
    }

    /// Writes a checkpoint of `state` through `meta` durably; it becomes the latest snapshot.
    pub fn save_checkpoint(
        &mut self,
        meta: SnapshotMeta,
        state: &dyn StateSnapshot,
    ) -> Result<&StoredSnapshot, StoreError> {
        let Some(writer) = self.begin_checkpoint(meta)? else {
            return self.latest.as_ref().ok_or(StoreError::Failed(String::new()));
        };
        let written = write_checkpoint(writer, state);
        self.finish_checkpoint(written)
    }

    /// Starts a checkpoint through `meta`: a writer to fill and finish without holding the
    /// store (see [`write_checkpoint`]), then hand to [`LogStore::finish_checkpoint`]. `None`
    /// when a snapshot at least as new is already the latest (received from a leader).
    pub fn begin_checkpoint(
        &self,
        meta: SnapshotMeta,
    ) -> Result<Option<SnapshotWriter>, StoreError> {
        let newer = |latest: &StoredSnapshot| latest.footer.meta.last_index >= meta.last_index;
        if self.latest.as_ref().is_some_and(newer) {
            return Ok(None);
        }
        Ok(Some(self.snapshots.create(meta, Vec::new())?))
    }

    /// Records a checkpoint written from [`LogStore::begin_checkpoint`]'s writer. A snapshot
    /// received meanwhile that is at least as new stays the latest.
    pub fn finish_checkpoint(
        &mut self,
        written: Result<StoredSnapshot, SnapshotError>,
    ) -> Result<&StoredSnapshot, StoreError> {
        if let (Ok(stored), Some(latest)) = (&written, &self.latest) {
            if latest.footer.meta.last_index >= stored.footer.meta.last_index {
                return self.latest.as_ref().ok_or(StoreError::Failed(String::new()));
            }
        }
        self.settle_latest(written)
    }

    /// Records a snapshot just written as the latest; if writing it failed part way, finds out
    /// from the directory which snapshot is the latest now (the rename may have happened).
    fn settle_latest(
        &mut self,
        stored: Result<StoredSnapshot, SnapshotError>,
    ) -> Result<&StoredSnapshot, StoreError> {
        match stored {
            Ok(stored) => Ok(self.latest.insert(stored)),
            Err(error) => {
                if let Ok(Some(on_disk)) = self.snapshots.latest() {
                    self.latest = Some(on_disk);
                }
                Err(error.into())
            }
        }
    }

    /// Deletes the log's segments wholly below `index` (a durable snapshot covers them).
    pub fn compact(&mut self, index: LogIndex) -> Result<(), StoreError> {
        self.check_usable()?;
        let compacted = self.wal.compact(index);
        self.note_failure(compacted)
    }

    /// The length of the latest snapshot's file, what a transfer sends.
    pub fn snapshot_file_len(&self, snapshot: &StoredSnapshot) -> Result<u64, StoreError> {
        Ok(self.snapshots.file_len(snapshot)?)
    }

    /// `len` bytes of `snapshot`'s file at `offset`.
    pub fn read_snapshot_file(
        &self,
        snapshot: &StoredSnapshot,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; len as usize];
        self.snapshots.read_file_at(snapshot, offset, &mut buf)?;
        Ok(buf)
    }

    /// Takes a chunk of a snapshot file sent by the leader: a chunk of another snapshot than
    /// the one being received starts over. Returns how many bytes of it are held.
    pub fn receive_snapshot_chunk(
        &mut self,
        meta: &SnapshotMeta,
        total_bytes: u64,
        digest: [u8; 32],
        offset: u64,
        data: &[u8],
    ) -> Result<u64, StoreError> {
        let same = self.receiving.as_ref().is_some_and(|(receiver, receiving_digest)| {
            receiver.meta() == meta
                && receiver.total_bytes() == total_bytes
                && *receiving_digest == digest
        });
        if !same {
            if let Some((previous, _)) = self.receiving.take() {
                previous.abandon();
            }
            self.receiving = Some((self.snapshots.receive(meta.clone(), total_bytes)?, digest));
        }
        let Some((receiver, _)) = self.receiving.as_mut() else { return Ok(0) };
        if !data.is_empty() {
            receiver.write(offset, data)?;
        }
        Ok(receiver.received())
    }

    /// How many bytes of the snapshot being received are held.
    pub fn snapshot_bytes_received(&self) -> u64 {
        self.receiving.as_ref().map_or(0, |(receiver, _)| receiver.received())
    }

    /// Checks the received snapshot whole and makes it the latest; returns it.
    pub fn finish_snapshot(&mut self) -> Result<&StoredSnapshot, StoreError> {
        let Some((receiver, digest)) = self.receiving.take() else {
            return Err(StoreError::Snapshot(lockstep_storage::SnapshotError::Corrupt {
                path: PathBuf::new(),
                detail: "no snapshot is being received".to_string(),
            }));
        };
        let stored = receiver.finish(Some(digest));
        self.settle_latest(stored)
    }

    /// The latest durable snapshot as a checkpoint to send (what a transfer names).
    pub fn latest_checkpoint(&self) -> Option<Checkpoint> {
        let stored = self.latest_snapshot()?;
        let total_bytes = self.snapshot_file_len(stored).ok()?;
        Some(Checkpoint {
            meta: stored.footer.meta.clone(),
            total_bytes,
            digest: stored.footer.digest,
        })
    }

    /// `len` bytes at `offset` of `checkpoint`'s file, if it is still the latest.
    pub fn read_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, String> {
        let stored = self
            .latest_snapshot()
            .filter(|stored| {
                stored.footer.meta == checkpoint.meta && stored.footer.digest == checkpoint.digest
            })
            .ok_or_else(|| "the checkpoint was replaced by a newer one".to_string())?;
        self.read_snapshot_file(stored, offset, len).map_err(|error| error.to_string())
    }

    /// Takes a chunk of a snapshot sent by the leader (see
    /// [`LogStore::receive_snapshot_chunk`]).
    pub fn receive_chunk(&mut self, chunk: &InstallSnapshot) -> Result<u64, String> {
        self.receive_snapshot_chunk(
            &chunk.meta,
            chunk.total_bytes,
            chunk.digest,
            chunk.offset,
            &chunk.data,
        )
        .map_err(|error| error.to_string())
    }

    /// A reader of the snapshot being received, checked whole but not yet made durable (it
    /// stays the one being received): to look at it before keeping it.
    pub fn received_reader(&mut self) -> Result<Box<dyn std::io::Read>, String> {
        let Some((receiver, _)) = self.receiving.as_mut() else {
            return Err("no snapshot is being received".to_string());
        };
        let stored = receiver.checked().map_err(|error| error.to_string())?;
        let reader = self.snapshots.reader(&stored).map_err(|error| error.to_string())?;
        Ok(Box::new(reader))
    }

    /// Drops the snapshot being received, if any.
    pub fn abandon_received(&mut self) {
        if let Some((receiver, _)) = self.receiving.take() {
            receiver.abandon();
        }
    }

    /// Finishes the snapshot being received (see [`LogStore::finish_snapshot`]) and returns a
    /// reader of its data, to restore the state machine from.
    pub fn finish_received(&mut self) -> Result<Box<dyn std::io::Read>, String> {
        let stored = self.finish_snapshot().map_err(|error| error.to_string())?.clone();
        let reader = self.snapshot_reader(&stored).map_err(|error| error.to_string())?;
        Ok(Box::new(reader))
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
        self.sync_log()?;
        self.sync_commit()
    }

    /// Makes every write so far durable except a new commit index alone: the log, and the hard
    /// state if its term or vote changed. What a replica acknowledges or votes needs no more;
    /// the commit index need not be durable at all (a replica learns it again from its
    /// leader), so [`LogStore::sync_commit`] may store it after the acknowledgement has gone.
    pub fn sync_log(&mut self) -> Result<(), StoreError> {
        self.check_usable()?;
        if !self.dirty {
            return Ok(());
        }
        let synced = self.wal.sync();
        self.note_failure(synced)?;
        let stored = self.hard_state.state().hard_state;
        if self
            .pending_hard_state
            .is_some_and(|pending| pending.term != stored.term || pending.vote != stored.vote)
        {
            self.store_hard_state()?;
        }
        self.dirty = false;
        let settled = self.settle_lost_note();
        self.note_failure(settled)
    }

    /// Stores a new commit index that [`LogStore::sync_log`] left pending (the log it covers
    /// is durable already).
    pub fn sync_commit(&mut self) -> Result<(), StoreError> {
        self.check_usable()?;
        if self.dirty {
            // Writes since the log was synced: the commit index may cover entries that are
            // not durable yet.
            return Ok(());
        }
        self.store_hard_state()
    }

    /// Stores the pending hard state, if any (the log it covers must be durable).
    fn store_hard_state(&mut self) -> Result<(), StoreError> {
        if let Some(hard_state) = self.pending_hard_state {
            let membership = self.hard_state.state().membership.clone();
            // The entry at the commit index is durable now (the log was synced first): note
            // its term, for recovery to check (see `Wal::open_holding_term`).
            let commit_term = self.wal.term(hard_state.commit).or_else(|| {
                self.latest
                    .as_ref()
                    .map(|stored| &stored.footer.meta)
                    .filter(|meta| meta.last_index == hard_state.commit)
                    .map(|meta| meta.last_term)
            });
            let stored =
                self.hard_state.store(&DurableState { hard_state, membership, commit_term });
            self.note_failure(stored)?;
            self.pending_hard_state = None;
        }
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

/// Writes `state` into a checkpoint writer and makes it durable (no store needed: the slow
/// part of a checkpoint can run while the store goes on writing the log).
pub fn write_checkpoint(
    mut writer: SnapshotWriter,
    state: &dyn StateSnapshot,
) -> Result<StoredSnapshot, SnapshotError> {
    state.write_to(&mut writer).map_err(|source| {
        SnapshotError::Io(IoFailure {
            operation: "write a checkpoint to",
            path: PathBuf::new(),
            source,
        })
    })?;
    writer.finish()
}
