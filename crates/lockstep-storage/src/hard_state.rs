//! The hard state file: term, vote, commit index and membership, in two checksummed copies.
//!
//! The file holds two slots. Each write goes to the slot not holding the newest copy and is
//! synced; a reader takes the valid copy with the higher sequence number. A torn or failed
//! write can damage only the slot being written, so the previous state always survives.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lockstep_core::{HardState, Membership, Term};
use serde::{Deserialize, Serialize};

use crate::disk::{Disk, DiskFile};
use crate::error::{io_failure, IoFailure};
use crate::frame::{body_matches, decode_header, encode_frame, FrameKind, FRAME_HEADER_BYTES};

/// Bytes per slot: a copy must fit in one.
pub const SLOT_BYTES: u64 = 64 << 10;

/// What the hard state file keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    /// Term, vote and commit index.
    pub hard_state: HardState,
    /// The configuration the replica was bootstrapped with (the log and snapshots carry later
    /// ones).
    pub membership: Membership,
    /// The term of the entry at the commit index when this was stored (if the log held it):
    /// recovery checks the log still has that entry there, so that a damaged write that
    /// replaced entries (a truncation) can never bring the replaced ones back under the
    /// commit index. Absent in files written before it existed.
    pub commit_term: Option<Term>,
}

/// The file's body before `commit_term` existed, still read.
#[derive(Deserialize)]
struct DurableStateWithoutCommitTerm {
    hard_state: HardState,
    membership: Membership,
}

/// What can go wrong with the hard state file.
#[derive(Debug)]
pub enum HardStateError {
    /// An I/O operation failed.
    Io(IoFailure),
    /// Neither copy is readable.
    Corrupt {
        /// The file.
        path: PathBuf,
    },
    /// The state does not fit in a slot.
    TooLarge {
        /// Its encoded size.
        bytes: usize,
    },
}

impl fmt::Display for HardStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HardStateError::Io(failure) => write!(f, "hard state: {failure}"),
            HardStateError::Corrupt { path } => write!(
                f,
                "both copies of the hard state in {} are damaged; this replica cannot know its \
                 term or vote and must not rejoin under its id",
                path.display()
            ),
            HardStateError::TooLarge { bytes } => {
                write!(f, "the hard state needs {bytes} bytes, more than a {SLOT_BYTES}-byte slot")
            }
        }
    }
}

impl std::error::Error for HardStateError {}

/// The hard state file. See the module documentation.
#[derive(Debug)]
pub struct HardStateFile {
    path: PathBuf,
    file: Box<dyn DiskFile>,
    /// The sequence number of the newest valid copy (0 if none).
    sequence: u64,
    state: DurableState,
    /// Whether both copies are known to hold `state`'s term, vote and membership: true once a
    /// store wrote both since the file was opened (what `open` read may never have reached the
    /// disk, and the other copy may hold anything).
    twin_current: bool,
}

impl HardStateFile {
    /// Opens the file at `path` and reads the newest valid copy. A missing file is created
    /// holding the default state only if `create_if_missing`: a replica that has run before
    /// must never silently forget its term and vote.
    pub fn open(
        disk: Arc<dyn Disk>,
        path: &Path,
        create_if_missing: bool,
    ) -> Result<HardStateFile, HardStateError> {
        let io_error = |operation| {
            let failure = io_failure(operation, path);
            move |source| HardStateError::Io(failure(source))
        };
        let file = match disk.open(path, false) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound && create_if_missing => {
                create(disk.as_ref(), path)?
            }
            Err(error) => return Err(io_error("open")(error)),
        };
        let len = file.len().map_err(io_error("read"))?;
        let mut best: Option<(u64, DurableState)> = None;
        for slot in 0..2u64 {
            let start = slot * SLOT_BYTES;
            if start >= len {
                continue;
            }
            let mut bytes = vec![0u8; (len - start).min(SLOT_BYTES) as usize];
            file.read_at(start, &mut bytes).map_err(io_error("read"))?;
            if let Some((sequence, state)) = decode_slot(&bytes) {
                if best.as_ref().is_none_or(|(newest, _)| sequence > *newest) {
                    best = Some((sequence, state));
                }
            }
        }
        let Some((sequence, state)) = best else {
            return Err(HardStateError::Corrupt { path: path.to_path_buf() });
        };
        Ok(HardStateFile { path: path.to_path_buf(), file, sequence, state, twin_current: false })
    }

    /// The state as last stored.
    pub fn state(&self) -> &DurableState {
        &self.state
    }

    /// Stores `state` durably: written to one slot and synced, then to the other and synced,
    /// so that after it returns both copies hold its term, vote and membership, and damage to
    /// either one (a bit flip, a bad sector) can never bring back an older term or vote. When
    /// only the commit index (and its term) changed since a store that wrote both, which is
    /// every time the log is synced under load, only the older copy is overwritten: the other
    /// holds the same term, vote and membership, and damage to the new one brings back only
    /// an older commit index, which is safe (a replica learns the commit index from its
    /// leader). One sync instead of two. The first store after `open` always writes both.
    pub fn store(&mut self, state: &DurableState) -> Result<(), HardStateError> {
        let body = postcard::to_stdvec(state).map_err(|_| HardStateError::TooLarge { bytes: 0 })?;
        let sequence = self.sequence + 1;
        let frame = encode_frame(FrameKind::HardState, sequence, &body);
        if frame.len() as u64 > SLOT_BYTES {
            return Err(HardStateError::TooLarge { bytes: frame.len() });
        }
        let io_error = |operation| {
            let failure = io_failure(operation, &self.path);
            move |source| HardStateError::Io(failure(source))
        };
        // A crash during the first write leaves the other slot with the previous state (this
        // one was never acknowledged); during the second, the first slot already has it.
        let only_commit = self.twin_current
            && state.hard_state.term == self.state.hard_state.term
            && state.hard_state.vote == self.state.hard_state.vote
            && state.membership == self.state.membership;
        // Both copies hold the current term and vote (`twin_current`: every change of them,
        // and the first store after opening, writes both), and a lone write overwrites the
        // older copy (the newest is in slot `self.sequence % 2`).
        let slots: &[u64] =
            if only_commit { &[sequence % 2] } else { &[sequence % 2, (sequence + 1) % 2] };
        for &slot in slots {
            self.file.write_at(slot * SLOT_BYTES, &frame).map_err(io_error("write"))?;
            self.file.sync_data().map_err(io_error("sync"))?;
        }
        self.sequence = sequence;
        self.state = state.clone();
        self.twin_current = true;
        Ok(())
    }
}

/// Creates the file holding the default state (sequence 0): written under a temporary name,
/// synced, renamed into place and the directory synced, so that neither a crash nor a torn
/// first store can leave a file with no valid copy.
fn create(disk: &dyn Disk, path: &Path) -> Result<Box<dyn DiskFile>, HardStateError> {
    let temporary = path.with_extension("tmp");
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let io_error = |operation, path: &Path| {
        let failure = io_failure(operation, path);
        move |source| HardStateError::Io(failure(source))
    };
    let body = postcard::to_stdvec(&DurableState::default())
        .map_err(|_| HardStateError::TooLarge { bytes: 0 })?;
    let frame = encode_frame(FrameKind::HardState, 0, &body);
    let mut file = disk.open(&temporary, true).map_err(io_error("create", &temporary))?;
    file.write_at(0, &frame).map_err(io_error("write", &temporary))?;
    file.sync_data().map_err(io_error("sync", &temporary))?;
    disk.rename(&temporary, path).map_err(io_error("rename", &temporary))?;
    disk.sync_dir(dir).map_err(io_error("sync", dir))?;
    Ok(file)
}

fn decode_slot(bytes: &[u8]) -> Option<(u64, DurableState)> {
    let header = decode_header(bytes)?;
    if header.kind != FrameKind::HardState {
        return None;
    }
    let body = bytes.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + header.body_len as usize)?;
    if !body_matches(&header, body) {
        return None;
    }
    let state = postcard::from_bytes::<DurableState>(body).ok().or_else(|| {
        let old = postcard::from_bytes::<DurableStateWithoutCommitTerm>(body).ok()?;
        Some(DurableState {
            hard_state: old.hard_state,
            membership: old.membership,
            commit_term: None,
        })
    })?;
    Some((header.sequence, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{Faults, SimDisk};
    use lockstep_core::{LogIndex, NodeId, Term};

    fn state(term: u64) -> DurableState {
        DurableState {
            hard_state: HardState {
                term: Term(term),
                vote: Some(NodeId(2)),
                commit: LogIndex(term),
            },
            membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
            commit_term: Some(Term(term)),
        }
    }

    #[test]
    fn the_newest_copy_wins_and_survives_a_torn_write_of_the_next() {
        for seed in 0..200 {
            let disk = Arc::new(SimDisk::new(seed, Faults::default()));
            let dir = Path::new("/r");
            disk.create_dir_all(dir).expect("dir");
            let path = dir.join("hard-state");
            let mut file = HardStateFile::open(disk.clone(), &path, true).expect("open");
            file.store(&state(1)).expect("store");
            file.store(&state(2)).expect("store");
            // The third store's write is torn by a crash before its sync.
            let frame = encode_frame(
                FrameKind::HardState,
                3,
                &postcard::to_stdvec(&state(3)).expect("encode"),
            );
            let mut raw = disk.open(&path, false).expect("open");
            raw.write_at(SLOT_BYTES, &frame).expect("write");
            disk.crash();
            let recovered = HardStateFile::open(disk.clone(), &path, true).expect("recover");
            let term = recovered.state().hard_state.term;
            assert!(term == Term(2) || term == Term(3), "seed {seed}: got term {term}");
        }
    }

    #[test]
    fn a_crash_during_the_first_store_leaves_the_default_state() {
        for seed in 0..100 {
            let disk = Arc::new(SimDisk::new(seed, Faults::default()));
            disk.create_dir_all(Path::new("/r")).expect("dir");
            let path = Path::new("/r/hard-state");
            HardStateFile::open(disk.clone(), path, true).expect("open");
            // The first store, torn or lost by a crash before its sync completes.
            let frame = encode_frame(
                FrameKind::HardState,
                1,
                &postcard::to_stdvec(&state(1)).expect("encode"),
            );
            let mut raw = disk.open(path, false).expect("open");
            raw.write_at(SLOT_BYTES, &frame).expect("write");
            disk.crash();
            let file =
                HardStateFile::open(disk.clone(), path, true).expect("a valid copy survives");
            let term = file.state().hard_state.term;
            assert!(term == Term(0) || term == Term(1), "seed {seed}: term {term}");
        }
    }

    #[test]
    fn a_stored_state_survives_a_crash_right_after_creation() {
        let disk = Arc::new(SimDisk::new(3, Faults::default()));
        disk.create_dir_all(Path::new("/r")).expect("dir");
        let path = Path::new("/r/hard-state");
        let mut file = HardStateFile::open(disk.clone(), path, true).expect("open");
        file.store(&state(5)).expect("store");
        disk.crash();
        let file = HardStateFile::open(disk, path, true).expect("reopen");
        assert_eq!(file.state().hard_state.term, Term(5), "the file's name was made durable");
    }

    #[test]
    fn a_new_commit_index_alone_overwrites_the_older_copy_and_damage_brings_back_an_older_commit() {
        let disk = Arc::new(SimDisk::new(2, Faults::default()));
        disk.create_dir_all(Path::new("/r")).expect("dir");
        let path = Path::new("/r/hard-state");
        let mut file = HardStateFile::open(disk.clone(), path, true).expect("open");
        file.store(&state(4)).expect("store"); // sequence 1: both slots
        let mut committed = state(4);
        committed.hard_state.commit = LogIndex(9);
        file.store(&committed).expect("store"); // sequence 2: slot 0 only
        committed.hard_state.commit = LogIndex(10);
        file.store(&committed).expect("store"); // sequence 3: slot 1 only
        let reopened = HardStateFile::open(disk.clone(), path, false).expect("reopen");
        assert_eq!(reopened.state(), &committed);
        // The newest copy (slot 1) damaged: the other has the same term and vote, and the
        // commit index before.
        disk.flip_bit(path, SLOT_BYTES + 30, 3).expect("flip in slot 1");
        let recovered = HardStateFile::open(disk, path, false).expect("the other copy");
        assert_eq!(recovered.state().hard_state.term, Term(4));
        assert_eq!(recovered.state().hard_state.vote, Some(NodeId(2)));
        assert_eq!(recovered.state().hard_state.commit, LogIndex(9));
    }

    #[test]
    fn the_first_store_after_opening_writes_both_copies_even_if_only_the_commit_changed() {
        let disk = Arc::new(SimDisk::new(4, Faults::default()));
        disk.create_dir_all(Path::new("/r")).expect("dir");
        let path = Path::new("/r/hard-state");
        let mut file = HardStateFile::open(disk.clone(), path, true).expect("open");
        file.store(&state(3)).expect("store"); // sequence 1, both slots
                                               // A store of term 4 that wrote its first copy (slot 0) and stopped: the other still
                                               // holds term 3. What `open` reads is term 4.
        let frame =
            encode_frame(FrameKind::HardState, 2, &postcard::to_stdvec(&state(4)).expect("encode"));
        let mut raw = disk.open(path, false).expect("open");
        raw.write_at(0, &frame).expect("write");
        raw.sync_data().expect("sync");
        let mut reopened = HardStateFile::open(disk.clone(), path, false).expect("reopen");
        assert_eq!(reopened.state().hard_state.term, Term(4));
        // Storing what was read (as `LogStore::open` does), then a new commit index alone.
        let read = reopened.state().clone();
        reopened.store(&read).expect("store"); // sequence 3: both slots
        let mut committed = read;
        committed.hard_state.commit = LogIndex(9);
        reopened.store(&committed).expect("store"); // sequence 4: slot 0 only
        let contents = disk.contents(path).expect("the file");
        let slot = |n: u64| decode_slot(&contents[(n * SLOT_BYTES) as usize..]).map(|(_, s)| s);
        assert_eq!(slot(1).map(|s| s.hard_state.term), Some(Term(4)), "term 3 is gone");
        // Either copy damaged: term 4 and its vote, never term 3.
        for damaged in [0, 1] {
            let copy = Arc::new(SimDisk::new(4, Faults::default()));
            copy.create_dir_all(Path::new("/r")).expect("dir");
            let mut raw = copy.open(path, true).expect("create");
            raw.write_at(0, &contents).expect("write");
            raw.sync_data().expect("sync");
            copy.flip_bit(path, damaged * SLOT_BYTES + 30, 3).expect("flip");
            let recovered = HardStateFile::open(copy, path, false).expect("the other copy");
            assert_eq!(recovered.state().hard_state.term, Term(4), "slot {damaged} damaged");
        }
    }

    #[test]
    fn one_damaged_copy_keeps_the_newest_state_and_two_are_reported() {
        let disk = Arc::new(SimDisk::new(1, Faults::default()));
        disk.create_dir_all(Path::new("/r")).expect("dir");
        let path = Path::new("/r/hard-state");
        let mut file = HardStateFile::open(disk.clone(), path, true).expect("open");
        file.store(&state(1)).expect("store");
        file.store(&state(2)).expect("store");
        disk.flip_bit(path, 30, 3).expect("flip in slot 0");
        let recovered = HardStateFile::open(disk.clone(), path, false).expect("the other copy");
        assert_eq!(recovered.state().hard_state.term, Term(2), "never an older vote");
        disk.flip_bit(path, SLOT_BYTES + 30, 3).expect("flip in slot 1");
        let error = HardStateFile::open(disk, path, false).expect_err("both damaged");
        assert!(error.to_string().contains("both copies"), "{error}");
    }

    #[test]
    fn a_missing_file_is_an_error_unless_creating() {
        let disk = Arc::new(SimDisk::new(1, Faults::default()));
        disk.create_dir_all(Path::new("/r")).expect("dir");
        let error =
            HardStateFile::open(disk, Path::new("/r/hard-state"), false).expect_err("missing");
        assert!(error.to_string().contains("/r/hard-state"), "{error}");
    }

    #[test]
    fn garbage_is_reported_not_trusted() {
        let disk = Arc::new(SimDisk::new(1, Faults::default()));
        disk.create_dir_all(Path::new("/r")).expect("dir");
        disk.put(Path::new("/r/hard-state"), b"this is not a hard state file");
        assert!(HardStateFile::open(disk, Path::new("/r/hard-state"), true).is_err());
    }

    #[test]
    fn a_file_written_before_the_commit_term_existed_is_read() {
        #[derive(Serialize)]
        struct Old {
            hard_state: HardState,
            membership: Membership,
        }
        let old = Old { hard_state: state(3).hard_state, membership: state(3).membership };
        let body = postcard::to_stdvec(&old).expect("encodes");
        let frame = encode_frame(FrameKind::HardState, 7, &body);
        let (sequence, decoded) = decode_slot(&frame).expect("read");
        assert_eq!(sequence, 7);
        assert_eq!(decoded.hard_state, state(3).hard_state);
        assert_eq!(decoded.commit_term, None);
    }
}
