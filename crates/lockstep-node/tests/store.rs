//! A replica's durable state and its replicated state across crashes: the log store recovers
//! exactly what was synced, and a snapshot of the replicated state carries the session table.

use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use lockstep_core::{
    ApplyContext, Command, Entry, EntryPayload, HardState, LogIndex, Membership, NodeId, Persist,
    SnapshotMeta, StateDigest, StateMachine, StateSnapshot, Term,
};
use lockstep_node::{Applied, ClientId, LogStore, Replicated, SessionConfig, StoreError};
use lockstep_storage::{Faults, SimDisk, WalOptions};
use serde::Serialize;

/// A counter: adds its input, returns the new total.
#[derive(Default)]
struct Counter(u64);

struct CounterSnapshot(u64);

impl StateSnapshot for CounterSnapshot {
    fn write_to(&self, out: &mut dyn io::Write) -> io::Result<()> {
        out.write_all(&self.0.to_le_bytes())
    }
}

impl StateMachine for Counter {
    type Input = u64;
    type Output = u64;
    type Query = ();
    type Snapshot = CounterSnapshot;

    fn apply(&mut self, input: u64, _: &ApplyContext) -> u64 {
        self.0 += input;
        self.0
    }

    fn query(&self, _: &()) -> u64 {
        self.0
    }

    fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot(self.0)
    }

    fn restore(&mut self, input: &mut dyn io::Read) -> io::Result<()> {
        let mut bytes = [0u8; 8];
        input.read_exact(&mut bytes)?;
        self.0 = u64::from_le_bytes(bytes);
        Ok(())
    }

    fn digest(&self) -> StateDigest {
        let mut digest = [0u8; 32];
        digest[..8].copy_from_slice(&self.0.to_le_bytes());
        StateDigest(digest)
    }
}

/// The log command format the driver writes (version, client, sequence, input).
#[derive(Serialize)]
struct LogCommand {
    version: u8,
    client: ClientId,
    sequence: u64,
    input: u64,
}

fn command(index: u64, client: u64, sequence: u64, input: u64) -> Entry {
    let data =
        postcard::to_stdvec(&LogCommand { version: 1, client: ClientId(client), sequence, input })
            .expect("encodes");
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Command(Command { data: Bytes::from(data), timestamp_millis: 0 }),
    }
}

#[test]
fn a_snapshot_carries_the_session_table() {
    let mut state = Replicated::new(Counter::default(), SessionConfig::default());
    assert!(matches!(state.apply(&command(1, 7, 1, 5)), Applied::Fresh { output: 5, .. }));
    assert!(matches!(state.apply(&command(2, 8, 1, 2)), Applied::Fresh { output: 7, .. }));
    let mut bytes = Vec::new();
    state.snapshot().write_to(&mut bytes).expect("writes");

    let mut restored = Replicated::new(Counter::default(), SessionConfig::default());
    restored.restore(&mut bytes.as_slice()).expect("restores");
    assert_eq!(restored.machine().0, 7);
    // A retry that arrives after the snapshot is answered from the table, not applied again.
    assert!(matches!(restored.apply(&command(3, 7, 1, 5)), Applied::Duplicate { output: 5, .. }));
    assert!(matches!(restored.apply(&command(4, 7, 2, 1)), Applied::Fresh { output: 8, .. }));
    assert_eq!(restored.machine().0, 8);

    // Damage is an error, not a panic.
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 9;
    assert!(restored.restore(&mut wrong_version.as_slice()).is_err());
    assert!(restored.restore(&mut &bytes[..5]).is_err());
    let mut huge = bytes.clone();
    // After the version byte: the chain's index and value, then the session table's length.
    huge[17..25].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(restored.restore(&mut huge.as_slice()).is_err());
}

/// A counter that, from index `skew_from` on, answers one more than it should: a replica
/// gone wrong.
struct Skewed {
    counter: Counter,
    skew_from: u64,
}

impl StateMachine for Skewed {
    type Input = u64;
    type Output = u64;
    type Query = ();
    type Snapshot = CounterSnapshot;

    fn apply(&mut self, input: u64, context: &ApplyContext) -> u64 {
        let total = self.counter.apply(input, context);
        if context.index.get() >= self.skew_from {
            total + 1
        } else {
            total
        }
    }
    fn query(&self, query: &()) -> u64 {
        self.counter.query(query)
    }
    fn snapshot(&self) -> CounterSnapshot {
        self.counter.snapshot()
    }
    fn restore(&mut self, input: &mut dyn io::Read) -> io::Result<()> {
        self.counter.restore(input)
    }
    fn digest(&self) -> StateDigest {
        self.counter.digest()
    }
}

#[test]
fn the_output_chain_is_equal_where_replicas_agree_and_parts_where_one_answers_differently() {
    let mut good = Replicated::new(Counter::default(), SessionConfig::default());
    let mut twin = Replicated::new(Counter::default(), SessionConfig::default());
    let skewed = Skewed { counter: Counter::default(), skew_from: 151 };
    let mut bad = Replicated::new(skewed, SessionConfig::default());
    for index in 1..=200 {
        let entry = if index % 50 == 0 { noop(index, 1) } else { command(index, 7, index, 3) };
        good.apply(&entry);
        twin.apply(&entry);
        bad.apply(&entry);
        assert_eq!(good.chain().index, LogIndex(index));
        assert_eq!(good.chain(), twin.chain(), "the same entries and outputs: the same chain");
        if index < 151 {
            assert_eq!(good.chain(), bad.chain(), "equal before the skew ({index})");
        } else {
            assert_ne!(good.chain(), bad.chain(), "different from the skew on ({index})");
        }
    }
    // The state is the same (the skew is in the outputs only): the chain sees it anyway.
    assert_eq!(good.machine().digest(), bad.machine().digest());
    // Chain points every 64 indexes tell where the two parted: equal at 128, not at 192.
    assert_eq!(good.chain_at(LogIndex(128)), bad.chain_at(LogIndex(128)));
    assert!(good.chain_at(LogIndex(128)).is_some());
    assert_ne!(good.chain_at(LogIndex(192)), bad.chain_at(LogIndex(192)));
    // The newest entries are kept one by one: they name the exact entry where they parted.
    assert_eq!(good.chain_at(LogIndex(150)), bad.chain_at(LogIndex(150)));
    assert_ne!(good.chain_at(LogIndex(151)), bad.chain_at(LogIndex(151)));
    let window = bad.chains_between(LogIndex(128), LogIndex(192));
    assert_eq!(window.len(), 64, "every index in (128, 192]");
    let first = window.iter().find(|(index, value)| good.chain_at(*index) != Some(*value));
    assert_eq!(first.map(|(index, _)| *index), Some(LogIndex(151)));
    assert!(bad.chains_between(LogIndex(192), LogIndex(128)).is_empty(), "an empty window");
}

#[test]
fn a_snapshot_carries_the_output_chain() {
    let mut state = Replicated::new(Counter::default(), SessionConfig::default());
    for index in 1..=70 {
        state.apply(&command(index, 7, index, 1));
    }
    let mut bytes = Vec::new();
    state.snapshot().write_to(&mut bytes).expect("writes");
    let mut restored = Replicated::new(Counter::default(), SessionConfig::default());
    restored.restore(&mut bytes.as_slice()).expect("restores");
    assert_eq!(restored.chain(), state.chain());
    assert_eq!(restored.chain_at(LogIndex(70)), state.chain_at(LogIndex(70)));
    state.apply(&command(71, 7, 71, 1));
    restored.apply(&command(71, 7, 71, 1));
    assert_eq!(restored.chain(), state.chain(), "and goes on alike");

    // A snapshot of the first format (no chain) still restores; the chain starts again.
    let mut first_format = vec![1u8];
    first_format.extend_from_slice(&bytes[17..]);
    let mut old = Replicated::new(Counter::default(), SessionConfig::default());
    old.restore(&mut first_format.as_slice()).expect("restores the first format");
    assert_eq!(old.machine().0, 70);
    assert_eq!(old.chain().index, LogIndex::ZERO);
}

fn noop(index: u64, term: u64) -> Entry {
    Entry { term: Term(term), index: LogIndex(index), payload: EntryPayload::Noop }
}

fn members() -> Membership {
    Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)])
}

fn open(
    disk: &SimDisk,
    bootstrap: bool,
) -> Result<(LogStore, lockstep_core::InitialState), StoreError> {
    let membership = members();
    LogStore::open(
        Arc::new(disk.clone()),
        Path::new("/data/replica"),
        bootstrap.then_some(&membership),
        WalOptions { segment_bytes: 4096, ..WalOptions::default() },
    )
}

#[test]
fn the_store_recovers_what_was_synced_and_nothing_else() {
    let disk = SimDisk::new(3, Faults::default());
    assert!(matches!(open(&disk, false), Err(StoreError::NotBootstrapped(_))));

    let (mut store, initial) = open(&disk, true).expect("bootstraps");
    assert!(initial.entries.is_empty());
    assert_eq!(initial.membership, members());
    let voted = HardState { term: Term(2), vote: Some(NodeId(2)), commit: LogIndex(2) };
    store
        .write(&Persist {
            snapshot: None,
            truncate_from: None,
            entries: vec![noop(1, 1), noop(2, 2)],
            hard_state: Some(voted),
        })
        .expect("writes");
    store.sync().expect("syncs");
    // Written, never synced: a crash may lose it, and the stored hard state must not name it.
    let later = HardState { term: Term(3), vote: Some(NodeId(3)), commit: LogIndex(3) };
    store
        .write(&Persist {
            snapshot: None,
            truncate_from: None,
            entries: vec![noop(3, 3)],
            hard_state: Some(later),
        })
        .expect("writes");
    drop(store);
    disk.crash();

    // Restarting with the bootstrap members keeps the replica's own state.
    let (_, initial) = open(&disk, true).expect("recovers");
    assert_eq!(initial.hard_state, voted);
    assert_eq!(initial.membership, members());
    let indexes: Vec<u64> = initial.entries.iter().map(|entry| entry.index.get()).collect();
    assert!(indexes == [1, 2] || indexes == [1, 2, 3], "recovered {indexes:?}");
    assert_eq!(initial.applied, LogIndex::ZERO);
}

#[test]
fn a_truncation_survives_a_crash_once_synced() {
    let disk = SimDisk::new(4, Faults::default());
    let (mut store, _) = open(&disk, true).expect("bootstraps");
    store
        .write(&Persist {
            snapshot: None,
            truncate_from: None,
            entries: vec![noop(1, 1), noop(2, 1), noop(3, 1)],
            hard_state: Some(HardState { term: Term(1), vote: None, commit: LogIndex(1) }),
        })
        .expect("writes");
    store
        .write(&Persist {
            snapshot: None,
            truncate_from: Some(LogIndex(2)),
            entries: vec![noop(2, 2)],
            hard_state: Some(HardState { term: Term(2), vote: None, commit: LogIndex(1) }),
        })
        .expect("writes");
    store.sync().expect("syncs");
    drop(store);
    disk.crash();
    let (_, initial) = open(&disk, false).expect("recovers");
    let log: Vec<(u64, u64)> =
        initial.entries.iter().map(|entry| (entry.index.get(), entry.term.get())).collect();
    assert_eq!(log, [(1, 1), (2, 2)]);
    assert_eq!(initial.hard_state.term, Term(2));
}

#[test]
fn a_failing_disk_is_an_error_not_a_panic() {
    let disk = SimDisk::new(5, Faults::default());
    let (mut store, _) = open(&disk, true).expect("bootstraps");
    disk.set_faults(Faults { sync_error_per_million: 1_000_000, ..Faults::default() });
    store
        .write(&Persist {
            snapshot: None,
            truncate_from: None,
            entries: vec![noop(1, 1)],
            hard_state: None,
        })
        .expect("writes");
    assert!(store.sync().is_err());
    // The log refuses to go on after a failed sync (what is on disk is unknown).
    assert!(store
        .write(&Persist {
            snapshot: None,
            truncate_from: None,
            entries: vec![noop(2, 1)],
            hard_state: None
        })
        .is_err());
}

#[test]
fn a_failed_sync_is_never_reported_durable_later() {
    let disk = SimDisk::new(6, Faults::default());
    let (mut store, _) = open(&disk, true).expect("bootstraps");
    let voted = HardState { term: Term(7), vote: Some(NodeId(2)), commit: LogIndex::ZERO };
    store
        .write(&Persist {
            snapshot: None,
            truncate_from: None,
            entries: Vec::new(),
            hard_state: Some(voted),
        })
        .expect("writes");
    disk.set_faults(Faults { sync_error_per_million: 1_000_000, ..Faults::default() });
    assert!(store.sync().is_err(), "the hard state could not be stored");
    disk.set_faults(Faults::default());
    // A retry must not pretend the vote is durable now.
    assert!(matches!(store.sync(), Err(StoreError::Failed(_))));
    drop(store);
    disk.crash();
    let (_, initial) = open(&disk, false).expect("recovers");
    assert_ne!(initial.hard_state, voted);
}

#[test]
fn a_damaged_or_foreign_directory_is_refused() {
    let disk = SimDisk::new(7, Faults::default());
    let (mut store, _) = open(&disk, true).expect("bootstraps");
    store
        .write(&Persist {
            snapshot: None,
            truncate_from: None,
            entries: vec![noop(1, 1)],
            hard_state: Some(HardState {
                term: Term(1),
                vote: Some(NodeId(1)),
                commit: LogIndex(1),
            }),
        })
        .expect("writes");
    store.sync().expect("syncs");
    drop(store);

    // Started again with other initial members: refused, not silently rebuilt.
    let others = Membership::with_voters([NodeId(1), NodeId(2)]);
    let refused = LogStore::open(
        Arc::new(disk.clone()),
        Path::new("/data/replica"),
        Some(&others),
        WalOptions { segment_bytes: 4096, ..WalOptions::default() },
    );
    assert!(matches!(refused, Err(StoreError::MembersDiffer { .. })));

    // The hard state lost but the log still there: bootstrapping again would forget the vote.
    use lockstep_storage::Disk;
    disk.remove(Path::new("/data/replica/hard-state")).expect("removes");
    let error = open(&disk, true).expect_err("refused");
    assert!(matches!(error, StoreError::Incomplete { .. }), "{error}");
    assert!(error.to_string().contains("must not rejoin"), "{error}");
}

/// A state with nothing in it, for checkpoints in these tests.
struct Empty;

impl StateSnapshot for Empty {
    fn write_to(&self, _: &mut dyn io::Write) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_log_compacted_past_a_lost_snapshot_is_refused() {
    let disk = SimDisk::new(8, Faults::default());
    let (mut store, _) = open(&disk, true).expect("bootstraps");
    let entries: Vec<Entry> = (1..=200)
        .map(|index| Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Command(Command {
                data: Bytes::from(vec![0u8; 200]),
                timestamp_millis: 0,
            }),
        })
        .collect();
    store
        .write(&Persist {
            snapshot: None,
            truncate_from: None,
            entries,
            hard_state: Some(HardState { term: Term(1), vote: None, commit: LogIndex(200) }),
        })
        .expect("writes");
    store.sync().expect("syncs");
    let meta =
        SnapshotMeta { last_index: LogIndex(150), last_term: Term(1), membership: members() };
    store.save_checkpoint(meta.clone(), &Empty).expect("checkpoint");
    store.compact(LogIndex(150)).expect("compacts");
    assert!(store.wal().first_index() > LogIndex(1), "segments were removed");
    let snapshot = store.latest_snapshot().expect("held").path.clone();
    drop(store);
    // Restarted normally: the snapshot and the log after it.
    let (_, initial) = open(&disk, false).expect("recovers");
    assert_eq!(initial.snapshot, Some(meta));
    assert_eq!(initial.applied, LogIndex(150));
    assert_eq!(initial.entries.first().map(|entry| entry.index), Some(LogIndex(151)));
    // The snapshot file lost: the log starts after a gap, and the store says so.
    use lockstep_storage::Disk;
    disk.remove(&snapshot).expect("removes");
    let error = open(&disk, false).expect_err("refused");
    assert!(
        error.to_string().contains("gap") || error.to_string().contains("starts at"),
        "{error}"
    );
}

/// An entry holding a 200-byte command of `fill` bytes, easy to find in a segment file.
fn filled(index: u64, term: u64, fill: u8) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Command {
            data: Bytes::from(vec![fill; 200]),
            timestamp_millis: 0,
        }),
    }
}

/// Writes entries `from..=to` (200-byte commands, one write and sync each, so each is a frame
/// of its own), with the commit index at `commit`.
fn write_frames(store: &mut LogStore, from: u64, to: u64, commit: u64) {
    for index in from..=to {
        let entry = filled(index, 1, index as u8);
        let hard_state = HardState { term: Term(1), vote: None, commit: LogIndex(commit) };
        store
            .write(&Persist {
                snapshot: None,
                truncate_from: None,
                entries: vec![entry],
                hard_state: Some(hard_state),
            })
            .expect("writes");
        store.sync().expect("syncs");
    }
}

/// The offset in the segment file of the frame holding entry `index`'s payload bytes.
fn offset_of_entry(bytes: &[u8], index: u64) -> usize {
    let marker = vec![index as u8; 200];
    bytes.windows(200).position(|window| window == marker.as_slice()).expect("entry is in the file")
}

#[test]
fn a_damaged_log_record_is_cut_off_noted_and_fetched_again() {
    use lockstep_storage::Disk;
    let disk = SimDisk::new(9, Faults::default());
    let (mut store, _) = open(&disk, true).expect("bootstraps");
    write_frames(&mut store, 1, 12, 6);
    let segments: Vec<String> = disk.list(Path::new("/data/replica/wal")).expect("lists");
    drop(store);
    // Flip a byte inside entry 5's record, in whichever segment holds it.
    let (segment, offset) = segments
        .iter()
        .filter(|name| name.ends_with(".seg"))
        .find_map(|name| {
            let path = Path::new("/data/replica/wal").join(name);
            let bytes = disk.contents(&path)?;
            let marker = vec![5u8; 200];
            bytes
                .windows(200)
                .any(|w| w == marker.as_slice())
                .then(|| (path, offset_of_entry(&bytes, 5)))
        })
        .expect("entry 5 is on disk");
    disk.flip_bit(&segment, offset as u64 + 17, 3).expect("flips");

    // Reopened: the damaged log is set aside whole (a damaged frame may have held a
    // truncation, so even what precedes it may be stale), the lost bound noted and handed on.
    let (store, initial) = open(&disk, false).expect("a damaged log is set aside, not refused");
    let damage = store.repaired_damage().expect("the damage is reported").clone();
    assert_eq!(damage.intact_through, Some(LogIndex(4)), "{damage}");
    assert_eq!(damage.found_through, LogIndex(12), "{damage}");
    assert!(initial.entries.is_empty(), "{:?}", initial.entries);
    assert_eq!(initial.lost_through, Some(LogIndex(12)));
    let note = store.lost_entries().expect("noted");
    assert_eq!((note.lost_through, note.set_aside), (LogIndex(12), true));
    let names = disk.list(Path::new("/data/replica/wal")).expect("lists");
    assert!(names.iter().any(|name| name.ends_with(".seg.damaged")), "{names:?}: kept aside");
    drop(store);

    // Restarted again before anything was fetched: the note still holds the bound.
    disk.crash();
    let (mut store, initial) = open(&disk, false).expect("recovers");
    assert_eq!(initial.lost_through, Some(LogIndex(12)));
    assert!(initial.entries.is_empty());
    // Entries 1..=12 arrive again from a leader; once durable the note goes.
    write_frames(&mut store, 1, 11, 6);
    assert!(store.lost_entries().is_some(), "short of the bound");
    write_frames(&mut store, 12, 12, 12);
    assert_eq!(store.lost_entries(), None);
    drop(store);
    disk.crash();
    let (store, initial) = open(&disk, false).expect("recovers");
    assert_eq!(initial.lost_through, None);
    assert_eq!(initial.entries.len(), 12);
    assert!(store.repaired_damage().is_none());
}

#[test]
fn damage_to_the_last_frame_with_nothing_after_it_stops_the_replica() {
    let disk = SimDisk::new(10, Faults::default());
    let (mut store, _) = open(&disk, true).expect("bootstraps");
    write_frames(&mut store, 1, 3, 3);
    drop(store);
    let path = Path::new("/data/replica/wal/wal-00000000000000000001.seg");
    let bytes = disk.contents(path).expect("segment");
    disk.flip_bit(path, offset_of_entry(&bytes, 3) as u64 + 9, 1).expect("flips");
    // Entry 3 was committed, so this is damage, not a torn write; but nothing after it tells
    // how far the log reached, so it cannot be cut safely.
    let error = open(&disk, false).expect_err("refused");
    assert!(error.to_string().contains("committed"), "{error}");
}

#[test]
fn a_damaged_segment_header_sets_the_segment_and_all_after_it_aside() {
    use lockstep_storage::Disk;
    let disk = SimDisk::new(11, Faults::default());
    let (mut store, _) = open(&disk, true).expect("bootstraps");
    // 4096-byte segments: many segments.
    write_frames(&mut store, 1, 40, 40);
    drop(store);
    let dir = Path::new("/data/replica/wal");
    let mut segments: Vec<String> =
        disk.list(dir).expect("lists").into_iter().filter(|n| n.ends_with(".seg")).collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    disk.flip_bit(&dir.join(&segments[1]), 2, 0).expect("flips the second segment's magic");
    let (_, initial) = open(&disk, false).expect("set aside");
    assert!(initial.entries.is_empty());
    assert_eq!(initial.lost_through, Some(LogIndex(40)));
    let names = disk.list(dir).expect("lists");
    let aside = names.iter().filter(|name| name.ends_with(".damaged")).count();
    assert_eq!(aside, segments.len(), "{names:?}");
}

#[test]
/// The limit no log of this kind escapes (docs/storage.md): damage to the last synced frames,
/// when no later frame records them as synced, reads like a write torn at a crash, and is cut
/// off as one.
fn damage_no_later_frame_proves_synced_reads_like_a_torn_write() {
    let disk = SimDisk::new(12, Faults::default());
    let (mut store, _) = open(&disk, true).expect("bootstraps");
    write_frames(&mut store, 1, 4, 4);
    // Entries 5 and 6 in two frames under one sync: no later frame proves 5 was synced.
    for index in [5u64, 6] {
        let entry = filled(index, 1, index as u8);
        store
            .write(&Persist {
                snapshot: None,
                truncate_from: None,
                entries: vec![entry],
                hard_state: None,
            })
            .expect("writes");
    }
    store.sync().expect("syncs");
    drop(store);
    let path = Path::new("/data/replica/wal/wal-00000000000000000001.seg");
    let bytes = disk.contents(path).expect("segment");
    disk.flip_bit(path, offset_of_entry(&bytes, 5) as u64 + 50, 6).expect("flips");
    let (store, initial) = open(&disk, false).expect("cut as torn");
    assert_eq!(initial.entries.len(), 4);
    assert_eq!(initial.lost_through, None);
    assert!(store.damage_found().is_none());
}

#[test]
fn a_damaged_log_after_a_checkpoint_restarts_after_it_and_a_crash_mid_way_finishes_the_job() {
    use lockstep_storage::Disk;
    let disk = SimDisk::new(13, Faults::default());
    let (mut store, _) = open(&disk, true).expect("bootstraps");
    write_frames(&mut store, 1, 30, 30);
    let meta = SnapshotMeta { last_index: LogIndex(20), last_term: Term(1), membership: members() };
    store.save_checkpoint(meta, &Empty).expect("checkpoint");
    drop(store);
    let dir = Path::new("/data/replica/wal");
    let mut segments: Vec<String> =
        disk.list(dir).expect("lists").into_iter().filter(|n| n.ends_with(".seg")).collect();
    segments.sort();
    let first = dir.join(&segments[0]);
    let bytes = disk.contents(&first).expect("segment");
    disk.flip_bit(&first, offset_of_entry(&bytes, 3) as u64 + 30, 2).expect("flips");
    let note = dir.parent().expect("parent").join("lost-entries");
    let (store, initial) = open(&disk, false).expect("set aside");
    assert!(disk.contents(&note).is_some());
    assert!(initial.entries.is_empty());
    assert_eq!(initial.applied, LogIndex(20), "the checkpoint stays");
    assert_eq!(initial.lost_through, Some(LogIndex(30)));
    assert_eq!(store.wal().first_index(), LogIndex(21), "the log restarts after the checkpoint");
    drop(store);

    // As if the crash had come after the note was written and before the log was set aside:
    // the damaged segments back in place, the note saying so. The next open finishes the job.
    for name in disk.list(dir).expect("lists") {
        if let Some(original) = name.strip_suffix(".damaged") {
            disk.rename(&dir.join(&name), &dir.join(original)).expect("renames back");
        }
    }
    // (In the note's first format, without the term: a tuple encodes as those fields do.)
    let pending = (LogIndex(30), false);
    let body = postcard::to_stdvec(&pending).expect("encodes");
    let frame =
        lockstep_storage::frame::encode_frame(lockstep_storage::frame::FrameKind::Note, 0, &body);
    disk.put(&note, &frame);
    let (store, initial) = open(&disk, false).expect("finishes setting the log aside");
    assert!(initial.entries.is_empty(), "no stale entry comes back");
    assert_eq!(initial.lost_through, Some(LogIndex(30)));
    assert_eq!(store.wal().first_index(), LogIndex(21));
    assert_eq!(store.lost_entries().map(|note| note.set_aside), Some(true));
    // A note without its term (an older version's) keeps none: the replica votes for no one
    // until it holds its entries again.
    assert_eq!(initial.lost_term_max, None);
    assert_eq!(store.lost_entries().and_then(|note| note.term_max), None);
    drop(store);
    disk.crash();
    let (mut store, initial) = open(&disk, false).expect("recovers");
    assert_eq!(initial.lost_through, Some(LogIndex(30)));
    write_frames(&mut store, 21, 30, 30);
    assert_eq!(store.lost_entries(), None);
    assert!(disk.contents(&note).is_none(), "the note goes once the log holds that far");
}

#[test]
fn a_damaged_checkpoint_is_set_aside_with_the_log_and_everything_fetched_again() {
    use lockstep_storage::Disk;
    let disk = SimDisk::new(14, Faults::default());
    let (mut store, _) = open(&disk, true).expect("bootstraps");
    write_frames(&mut store, 1, 30, 30);
    let meta = SnapshotMeta { last_index: LogIndex(20), last_term: Term(1), membership: members() };
    store.save_checkpoint(meta, &CounterSnapshot(77)).expect("checkpoint");
    store.compact(LogIndex(20)).expect("compacts");
    let snapshot = store.latest_snapshot().expect("held").path.clone();
    drop(store);
    disk.flip_bit(&snapshot, 3, 4).expect("flips a bit of the checkpoint's data");

    let (store, initial) = open(&disk, false).expect("set aside, not refused");
    let found = store.damage_found().expect("reported");
    assert!(found.contains("checkpoint is damaged") && found.contains("BLAKE3"), "{found}");
    assert!(store.latest_snapshot().is_none());
    assert_eq!(initial.snapshot, None);
    assert_eq!(initial.applied, LogIndex::ZERO);
    assert!(initial.entries.is_empty());
    assert_eq!(initial.lost_through, Some(LogIndex(30)));
    let names = disk.list(Path::new("/data/replica/snapshots")).expect("lists");
    assert!(names.iter().any(|name| name.ends_with(".snap.damaged")), "{names:?}");
    drop(store);
    // Opened again: nothing more to find, the note still holds.
    let (store, initial) = open(&disk, false).expect("recovers");
    assert!(store.damage_found().is_none());
    assert_eq!(initial.lost_through, Some(LogIndex(30)));
}

#[test]
fn a_damaged_truncation_cannot_bring_replaced_entries_back_under_the_commit_index() {
    let disk = SimDisk::new(15, Faults::default());
    let (mut store, _) = open(&disk, true).expect("bootstraps");
    write_frames(&mut store, 1, 10, 5);
    // A new leader replaces 6..=10 with entries of term 2, committed through 7, in one write.
    let replacement: Vec<Entry> =
        (6..=7).map(|index| filled(index, 2, 100 + index as u8)).collect();
    store
        .write(&Persist {
            snapshot: None,
            truncate_from: Some(LogIndex(6)),
            entries: replacement,
            hard_state: Some(HardState { term: Term(2), vote: None, commit: LogIndex(7) }),
        })
        .expect("writes");
    store.sync().expect("syncs");
    drop(store);
    // Its frame, the last one written, is damaged: it reads like a write torn at a crash, and
    // cutting it would bring back entries 6..=10 of term 1 under commit index 7.
    let path = Path::new("/data/replica/wal/wal-00000000000000000001.seg");
    let bytes = disk.contents(path).expect("segment");
    disk.flip_bit(path, offset_of_entry(&bytes, 106) as u64 + 40, 2).expect("flips");
    let error = open(&disk, false).expect_err("refused, not applied wrong");
    let text = error.to_string();
    assert!(text.contains("committed there is of term 2"), "{text}");
}

#[test]
fn sync_log_stores_a_new_term_or_vote_and_leaves_a_new_commit_index_alone_for_later() {
    let disk = SimDisk::new(6, Faults::default());
    let (mut store, _) = open(&disk, true).expect("bootstraps");
    let voted = HardState { term: Term(2), vote: Some(NodeId(2)), commit: LogIndex(0) };
    let write = |store: &mut LogStore, entries, hard_state| {
        store
            .write(&Persist { snapshot: None, truncate_from: None, entries, hard_state })
            .expect("writes")
    };
    // A new term and vote: stored by `sync_log`, before anything is acknowledged.
    write(&mut store, vec![noop(1, 2), noop(2, 2)], Some(voted));
    store.sync_log().expect("syncs");
    // A new commit index alone: the log is durable, the commit index not yet.
    let committed = HardState { commit: LogIndex(2), ..voted };
    write(&mut store, vec![noop(3, 2)], Some(committed));
    store.sync_log().expect("syncs");
    drop(store);
    disk.crash();
    let (mut store, initial) = open(&disk, false).expect("recovers");
    assert_eq!(initial.hard_state.term, Term(2));
    assert_eq!(initial.hard_state.vote, Some(NodeId(2)));
    assert_eq!(initial.hard_state.commit, LogIndex(0), "the commit index was not stored");
    let indexes: Vec<u64> = initial.entries.iter().map(|entry| entry.index.get()).collect();
    assert_eq!(indexes, [1, 2, 3], "every entry synced is kept");
    // `sync_commit` stores it.
    write(&mut store, vec![], Some(committed));
    store.sync_log().expect("syncs");
    store.sync_commit().expect("stores the commit index");
    drop(store);
    disk.crash();
    let (_, initial) = open(&disk, false).expect("recovers");
    assert_eq!(initial.hard_state, committed);
}
