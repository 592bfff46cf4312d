//! Crash tests of the write-ahead log on the simulated disk: random appends, truncations,
//! compactions, syncs and crashes at random points. After every restart the log must hold
//! exactly what the acknowledged operations left, in order: the state after the last
//! acknowledged sync, possibly followed by some of the operations written after it (a crash
//! keeps or loses unsynced writes, and tears at most the last one), and never anything that
//! was truncated before.
//!
//! A failure prints its seed; replay it with
//! `LOCKSTEP_SEED=<seed> cargo test -p lockstep-storage --test crash replay -- --nocapture`.
//! `LOCKSTEP_SEEDS=<n>` sets how many seeds the sweep runs.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use lockstep_core::rng::SeededRng;
use lockstep_core::{Command, Entry, EntryPayload, LogIndex, Term};
use lockstep_storage::{Disk, Faults, SimDisk, Wal, WalError, WalOptions};

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        frame_bytes_max: 4096,
        cache_bytes_max: 600,
        create_if_missing: true,
        #[cfg(feature = "sabotage")]
        sabotage_skip_sync: false,
    }
}

fn entry(index: u64, term: u64, size: usize, tag: u64) -> Entry {
    let mut data = format!("{index}/{term}/{tag}:").into_bytes();
    data.resize(data.len().max(size), b'.');
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Command { data: Bytes::from(data), timestamp_millis: tag }),
    }
}

fn read_all(wal: &Wal) -> Vec<Entry> {
    if wal.last_index() < wal.first_index() {
        return Vec::new();
    }
    wal.entries(wal.first_index(), wal.last_index(), u64::MAX).expect("entries read back")
}

/// Opens the log; an injected I/O error while opening is retried after another crash, as an
/// operator would restart the replica. Anything else is a finding.
fn open_retrying(disk: &Arc<SimDisk>, dir: &Path, options: &WalOptions) -> Result<Wal, String> {
    let mut attempts = 0;
    loop {
        match Wal::open(disk.clone(), dir, options.clone()) {
            Ok(wal) => return Ok(wal),
            Err(WalError::Io(_)) if attempts < 50 => {
                attempts += 1;
                disk.crash();
            }
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// Runs one seeded schedule; returns a description of the first violation.
fn run(seed: u64, steps: usize) -> Result<usize, String> {
    run_with(seed, steps, options(), Faults::default())
}

fn run_with(seed: u64, steps: usize, options: WalOptions, faults: Faults) -> Result<usize, String> {
    let disk = Arc::new(SimDisk::new(seed, faults));
    let dir = Path::new("/replica/wal");
    let mut rng = SeededRng::new(seed ^ 0xC0FFEE);
    let mut wal = open_retrying(&disk, dir, &options)?;
    // The log as of the last acknowledged sync, and the states after each unsynced append.
    let mut durable: Vec<Entry> = Vec::new();
    let mut candidates: Vec<Vec<Entry>> = vec![Vec::new()];
    let mut current: Vec<Entry> = Vec::new();
    let mut term = 1u64;
    let mut tag = 0u64;
    let mut compacted_below = LogIndex(1);
    // The highest compaction index asked for: a compaction that fails part way may still have
    // removed (durably) some segments below it.
    let mut compaction_asked_below = LogIndex(1);
    let mut crashes = 0;
    for _ in 0..steps {
        let mut crash_now = false;
        let roll = rng.range(0, 100);
        match roll {
            0..=49 => {
                // Append a few entries, sometimes after truncating a suffix.
                let next = current.last().map_or(compacted_below.get(), |e| e.index.get() + 1);
                let truncate = if rng.range(0, 5) == 0 && !current.is_empty() {
                    let low = compacted_below.get().max(current[0].index.get());
                    let from = rng.range(low, next + 1);
                    Some(LogIndex(from))
                } else {
                    None
                };
                if truncate.is_some() {
                    term += 1;
                }
                let start = truncate.map_or(next, |from| from.get());
                let count = rng.range(1, 5);
                let batch: Vec<Entry> = (0..count)
                    .map(|offset| {
                        tag += 1;
                        entry(start + offset, term, rng.range(1, 200) as usize, tag)
                    })
                    .collect();
                if wal.append(truncate, &batch).is_err() {
                    // An injected write error: nothing was acknowledged; restart.
                    crash_now = true;
                } else if let Some(from) = truncate {
                    current.retain(|e| e.index < from);
                    candidates.push(current.clone());
                }
                if !crash_now {
                    // An append split into several frames may survive a crash in part: every
                    // prefix of it is a state the log may recover to.
                    for entry in batch {
                        current.push(entry);
                        candidates.push(current.clone());
                    }
                }
            }
            50..=74 => {
                if wal.sync().is_err() {
                    // An injected sync error: what is on disk is unknown; restart.
                    crash_now = true;
                } else {
                    durable = current.clone();
                    candidates = vec![durable.clone()];
                }
            }
            75..=84 => {
                let got = read_all(&wal);
                if got != current {
                    return Err(format!(
                        "reads disagree before a crash: {} entries vs {}",
                        got.len(),
                        current.len()
                    ));
                }
            }
            85..=89 => {
                // Compact below a synced index (the caller's contract: committed and snapshotted).
                if let Some(last) = durable.last() {
                    let below = LogIndex(rng.range(compacted_below.get(), last.index.get() + 1));
                    compaction_asked_below = compaction_asked_below.max(below);
                    if wal.compact(below).is_err() {
                        // Removals not made durable may come back at the crash.
                        crash_now = true;
                    } else {
                        compacted_below = compacted_below.max(wal.first_index());
                        let first = wal.first_index();
                        for state in candidates.iter_mut().chain([&mut durable, &mut current]) {
                            state.retain(|e| e.index >= first);
                        }
                    }
                }
            }
            _ => crash_now = true,
        }
        if crash_now {
            {
                crashes += 1;
                disk.crash();
                wal = open_retrying(&disk, dir, &options)
                    .map_err(|error| format!("reopen after crash {crashes}: {error}"))?;
                let recovered = read_all(&wal);
                let first = wal.first_index();
                if first > compacted_below.max(compaction_asked_below) {
                    return Err(format!(
                        "after crash {crashes} the log starts at {first}, but only entries below \
                         {compaction_asked_below} were compacted"
                    ));
                }
                let matches = candidates.iter().any(|candidate| {
                    let trimmed: Vec<&Entry> =
                        candidate.iter().filter(|e| e.index >= first).collect();
                    trimmed.len() == recovered.len()
                        && trimmed.iter().zip(&recovered).all(|(a, b)| *a == b)
                });
                if !matches {
                    let last = |log: &[Entry]| log.last().map(|e| (e.index.get(), e.term.get()));
                    return Err(format!(
                        "after crash {crashes} the log holds {} entries ending at {:?}; acknowledged \
                         state ends at {:?} with {} candidate states",
                        recovered.len(),
                        last(&recovered),
                        last(&durable),
                        candidates.len()
                    ));
                }
                current = recovered;
                durable = current.clone();
                candidates = vec![durable.clone()];
                compacted_below = compacted_below.max(first);
                term += 1;
            }
        }
    }
    Ok(crashes)
}

fn seeds(default: u64) -> u64 {
    std::env::var("LOCKSTEP_SEEDS").ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

#[test]
fn the_log_survives_random_crashes_with_exactly_what_was_acknowledged() {
    let mut crashes = 0;
    for seed in 0..seeds(2000) {
        match run(seed, 200) {
            Ok(count) => crashes += count,
            Err(violation) => panic!(
                "seed {seed}: {violation}\nreplay: LOCKSTEP_SEED={seed} cargo test -p lockstep-storage \
                 --test crash replay -- --nocapture"
            ),
        }
    }
    println!("{crashes} crashes recovered");
    assert!(crashes > 1000, "the sweep must crash often: {crashes}");
}

#[cfg(feature = "sabotage")]
#[test]
fn the_crash_test_catches_a_log_that_acknowledges_unsynced_writes() {
    let broken = WalOptions { sabotage_skip_sync: true, ..options() };
    let caught =
        (0..200).find_map(|seed| run_with(seed, 200, broken.clone(), Faults::default()).err());
    let violation = caught.expect("a log that never syncs must be caught");
    println!("{violation}");
    assert!(violation.contains("after crash") || violation.contains("corrupt"), "{violation}");
}

/// A run on a disk that lies: bits flip and sectors go bad at crashes. Reopening (bounded by
/// the lowest last index any acceptable state has, as a replica bounds it by its commit index)
/// and reading everything back must either report the damage or give a log that is a prefix
/// of an acceptable state, never wrong entries. Returns whether damage was reported.
fn run_on_a_lying_disk(seed: u64) -> Result<bool, String> {
    let faults = Faults {
        bit_flip_per_million: 40_000,
        bad_sector_per_million: 10_000,
        ..Faults::default()
    };
    let disk = Arc::new(SimDisk::new(seed, faults));
    let dir = Path::new("/replica/wal");
    let mut rng = SeededRng::new(seed ^ 0xBAD);
    let mut wal = match Wal::open(disk.clone(), dir, options()) {
        Ok(wal) => wal,
        Err(_) => return Ok(true),
    };
    let mut current: Vec<Entry> = Vec::new();
    let mut candidates: Vec<Vec<Entry>> = vec![Vec::new()];
    let mut tag = 0;
    for _ in 0..150 {
        match rng.range(0, 10) {
            0..=5 => {
                let next = current.last().map_or(1, |e| e.index.get() + 1);
                let batch: Vec<Entry> = (0..rng.range(1, 4))
                    .map(|offset| {
                        tag += 1;
                        entry(next + offset, 1, rng.range(1, 150) as usize, tag)
                    })
                    .collect();
                if wal.append(None, &batch).is_err() {
                    return Ok(true);
                }
                for entry in batch {
                    current.push(entry);
                    candidates.push(current.clone());
                }
            }
            6..=8 => {
                if wal.sync().is_err() {
                    return Ok(true);
                }
                candidates = vec![current.clone()];
            }
            _ => {
                disk.crash();
                let bound = candidates
                    .iter()
                    .map(|c| c.last().map_or(0, |e| e.index.get()))
                    .min()
                    .unwrap_or(0);
                wal = match Wal::open_holding(disk.clone(), dir, options(), LogIndex(bound)) {
                    Ok(wal) => wal,
                    Err(WalError::Corrupt { .. } | WalError::Io(_)) => return Ok(true),
                    Err(error) => return Err(format!("unexpected error: {error}")),
                };
                let recovered = if wal.last_index() < wal.first_index() {
                    Vec::new()
                } else {
                    match wal.entries(wal.first_index(), wal.last_index(), u64::MAX) {
                        Ok(entries) => entries,
                        Err(WalError::Corrupt { .. } | WalError::Io(_)) => return Ok(true),
                        Err(error) => return Err(format!("unexpected error: {error}")),
                    }
                };
                let prefix_of_candidate = candidates.iter().any(|candidate| {
                    recovered.len() <= candidate.len()
                        && candidate.iter().zip(&recovered).all(|(a, b)| a == b)
                });
                if !prefix_of_candidate || (recovered.len() as u64) < bound {
                    return Err(format!(
                        "a lying disk went unnoticed: recovered {} entries, at least {bound} were synced",
                        recovered.len()
                    ));
                }
                current = recovered;
                candidates = vec![current.clone()];
            }
        }
    }
    Ok(false)
}

#[test]
fn a_lying_disk_is_reported_never_believed() {
    let mut reported = 0;
    for seed in 0..seeds(2000) / 4 {
        match run_on_a_lying_disk(seed) {
            Ok(true) => reported += 1,
            Ok(false) => {}
            Err(violation) => panic!("seed {seed} on a lying disk: {violation}"),
        }
    }
    let runs = seeds(2000) / 4;
    println!("damage reported in {reported} of {runs} runs");
    assert!(reported > 0, "the faults must bite");
    assert!(reported < runs, "some runs must recover through crashes despite the faults");
}

#[test]
fn the_log_survives_crashes_with_appends_split_across_frames() {
    let small_frames = WalOptions { frame_bytes_max: 300, ..options() };
    for seed in 0..seeds(2000) / 4 {
        if let Err(violation) = run_with(seed, 200, small_frames.clone(), Faults::default()) {
            panic!("seed {seed} with small frames: {violation}");
        }
    }
}

#[test]
fn the_log_survives_write_and_sync_errors_as_crashes() {
    let faults = Faults {
        write_error_per_million: 20_000,
        sync_error_per_million: 20_000,
        ..Faults::default()
    };
    for seed in 0..seeds(2000) / 4 {
        if let Err(violation) = run_with(seed, 200, options(), faults) {
            panic!("seed {seed} with I/O errors: {violation}");
        }
    }
}

#[test]
fn compaction_after_an_unsynced_truncation_keeps_the_synced_entries() {
    // Entries 1..=60 synced across several segments; then a truncation back into an older
    // segment, not yet synced, and a compaction below an index that now lives in the newest
    // segment. A crash must not lose synced entries that were never compacted.
    let disk = Arc::new(SimDisk::new(5, Faults::default()));
    let dir = Path::new("/replica/wal");
    let mut wal = Wal::open(disk.clone(), dir, options()).expect("open");
    let entries: Vec<Entry> = (1..=60).map(|index| entry(index, 1, 150, index)).collect();
    for chunk in entries.chunks(4) {
        wal.append(None, chunk).expect("append");
    }
    wal.sync().expect("sync");
    wal.append(Some(LogIndex(5)), &[entry(5, 2, 10, 1000), entry(6, 2, 10, 1001)])
        .expect("truncate");
    wal.compact(LogIndex(5)).expect("compact");
    disk.crash();
    let wal = Wal::open(disk, dir, options()).expect("reopen");
    assert!(wal.first_index() <= LogIndex(5), "the log starts at {}", wal.first_index());
    assert_eq!(wal.last_index(), LogIndex(6), "the truncation was made durable by the compaction");
}

#[test]
fn opening_below_the_committed_index_is_reported_not_cut() {
    let (disk, _) = synced_log(5);
    // The last synced frame is damaged and nothing was written after it: alone, that looks
    // like a torn write. The committed index says otherwise.
    let contents = disk.contents(&segment_path(1)).expect("segment");
    let last_frame = *frame_offsets(&contents).last().expect("frames");
    disk.flip_bit(&segment_path(1), last_frame as u64 + 40, 4).expect("flip");
    let error = Wal::open_holding(disk.clone(), Path::new("/replica/wal"), options(), LogIndex(5))
        .expect_err("reported");
    assert!(error.to_string().contains("committed"), "{error}");
    // Nothing was cut: with the bit restored the log is whole again.
    disk.flip_bit(&segment_path(1), last_frame as u64 + 40, 4).expect("flip back");
    let wal =
        Wal::open_holding(disk, Path::new("/replica/wal"), options(), LogIndex(5)).expect("whole");
    assert_eq!(wal.last_index(), LogIndex(5));
}

#[test]
fn entries_that_skip_an_index_are_refused_even_in_an_empty_log() {
    let disk = Arc::new(SimDisk::new(1, Faults::default()));
    let mut wal = Wal::open(disk, Path::new("/replica/wal"), options()).expect("open");
    let error = wal.append(None, &[entry(1, 1, 10, 1), entry(3, 1, 10, 3)]).expect_err("a gap");
    assert!(matches!(error, WalError::Invalid(_)), "{error}");
}

#[test]
fn replay() {
    let seed =
        std::env::var("LOCKSTEP_SEED").ok().and_then(|value| value.parse().ok()).unwrap_or(0);
    match run(seed, 200) {
        Ok(crashes) => println!("seed {seed}: {crashes} crashes, all recovered"),
        Err(violation) => panic!("seed {seed}: {violation}"),
    }
}

// ----- corruption is reported, not truncated away ---------------------------------------

/// The offsets of every frame (anything starting with the frame magic) in a segment.
fn frame_offsets(contents: &[u8]) -> Vec<usize> {
    (0..contents.len())
        .step_by(8)
        .filter(|offset| contents[*offset..].starts_with(&0x4C4B_5354u32.to_le_bytes()))
        .collect()
}

fn segment_path(number: u64) -> std::path::PathBuf {
    Path::new("/replica/wal").join(format!("wal-{number:020}.seg"))
}

/// A log of `count` synced single-entry appends.
fn synced_log(count: u64) -> (Arc<SimDisk>, Vec<Entry>) {
    let disk = Arc::new(SimDisk::new(9, Faults::default()));
    let mut wal = Wal::open(disk.clone(), Path::new("/replica/wal"), options()).expect("open");
    let entries: Vec<Entry> = (1..=count).map(|index| entry(index, 1, 40, index)).collect();
    for entry in &entries {
        wal.append(None, std::slice::from_ref(entry)).expect("append");
        wal.sync().expect("sync");
    }
    (disk, entries)
}

#[test]
fn a_flipped_bit_inside_the_log_is_reported_with_file_offset_and_entries() {
    let (disk, _) = synced_log(5);
    // The second record frame of the first segment: past the header frame and one record frame.
    let contents = disk.contents(&segment_path(1)).expect("segment");
    let second_frame = *frame_offsets(&contents).get(2).expect("three frames");
    disk.flip_bit(&segment_path(1), second_frame as u64 + 40, 2).expect("flip");
    let error =
        Wal::open(disk, Path::new("/replica/wal"), options()).expect_err("corruption is reported");
    match &error {
        WalError::Corrupt { offset, intact_through, found_again_from, .. } => {
            assert_eq!(*offset, second_frame as u64);
            assert_eq!(*intact_through, Some(LogIndex(1)));
            assert_eq!(*found_again_from, Some(LogIndex(3)));
        }
        other => panic!("expected corruption, got {other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("wal-00000000000000000001.seg") && message.contains("intact"),
        "{message}"
    );
}

#[test]
fn damage_in_a_complete_segment_is_reported() {
    let (disk, _) = synced_log(200);
    assert!(disk.contents(&segment_path(2)).is_some(), "the log spans several segments");
    let contents = disk.contents(&segment_path(1)).expect("segment 1");
    let last_frame = *frame_offsets(&contents).last().expect("frames");
    disk.flip_bit(&segment_path(1), last_frame as u64 + 30, 0).expect("flip");
    let error = Wal::open(disk, Path::new("/replica/wal"), options()).expect_err("reported");
    assert!(matches!(error, WalError::Corrupt { .. }), "{error}");
}

#[test]
fn a_bit_flipped_after_opening_is_caught_on_read() {
    let (disk, entries) = synced_log(3);
    let wal = Wal::open(
        disk.clone(),
        Path::new("/replica/wal"),
        WalOptions { cache_bytes_max: 0, ..options() },
    )
    .expect("open");
    let contents = disk.contents(&segment_path(1)).expect("segment");
    let needle = b"2/1/2:";
    let at = contents
        .windows(needle.len())
        .position(|window| window == needle)
        .expect("entry 2 on disk");
    disk.flip_bit(&segment_path(1), at as u64, 1).expect("flip");
    assert_eq!(
        wal.entries(LogIndex(1), LogIndex(1), u64::MAX).expect("entry 1"),
        vec![entries[0].clone()]
    );
    let error = wal.entries(LogIndex(2), LogIndex(2), u64::MAX).expect_err("caught");
    assert!(matches!(error, WalError::Corrupt { .. }), "{error}");
}

#[test]
fn a_latent_bad_sector_is_an_error_naming_the_file() {
    let (disk, _) = synced_log(3);
    disk.add_bad_sector(&segment_path(1), 100).expect("bad sector");
    let error = Wal::open(disk, Path::new("/replica/wal"), options()).expect_err("reported");
    assert!(error.to_string().contains("wal-00000000000000000001.seg"), "{error}");
}

// ----- bad input ------------------------------------------------------------------------

#[test]
fn a_garbage_segment_is_reported() {
    let disk = Arc::new(SimDisk::new(1, Faults::default()));
    disk.create_dir_all(Path::new("/replica/wal")).expect("dir");
    disk.put(&segment_path(1), &[0xAB; 5000]);
    let error = Wal::open(disk, Path::new("/replica/wal"), options()).expect_err("reported");
    assert!(error.to_string().contains("segment header"), "{error}");
}

#[test]
fn a_segment_cut_short_loses_only_its_unacknowledged_tail() {
    let (disk, entries) = synced_log(4);
    let contents = disk.contents(&segment_path(1)).expect("segment");
    let last_frame = *frame_offsets(&contents).last().expect("frames");
    // The file ends in the middle of its last frame, as a torn write would leave it.
    disk.put(&segment_path(1), &contents[..last_frame + 30]);
    let wal =
        Wal::open(disk, Path::new("/replica/wal"), options()).expect("a torn tail is cut off");
    assert_eq!(read_all(&wal), entries[..3].to_vec());
}

#[test]
fn a_missing_directory_is_an_error_when_not_asked_to_create_it() {
    let disk = Arc::new(SimDisk::new(1, Faults::default()));
    let options = WalOptions { create_if_missing: false, ..options() };
    let error = Wal::open(disk, Path::new("/nowhere/wal"), options).expect_err("reported");
    assert!(error.to_string().contains("/nowhere/wal"), "{error}");
}

#[test]
fn a_full_disk_is_an_error_and_nothing_acknowledged_is_lost() {
    let disk =
        Arc::new(SimDisk::new(1, Faults { capacity_bytes: Some(3 * 4096), ..Faults::default() }));
    let dir = Path::new("/replica/wal");
    let mut wal = Wal::open(disk.clone(), dir, options()).expect("open");
    let mut acknowledged = Vec::new();
    let mut failure = None;
    for index in 1..=500 {
        let entry = entry(index, 1, 100, index);
        match wal.append(None, std::slice::from_ref(&entry)).and_then(|()| wal.sync()) {
            Ok(()) => acknowledged.push(entry),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    let error = failure.expect("the disk fills up");
    assert!(error.to_string().contains("no space left"), "{error}");
    disk.crash();
    let wal = Wal::open(disk, dir, options()).expect("reopen");
    assert_eq!(read_all(&wal), acknowledged);
}

#[test]
fn a_failed_sync_poisons_the_log_until_it_is_reopened() {
    let disk = Arc::new(SimDisk::new(1, Faults::default()));
    let dir = Path::new("/replica/wal");
    let mut wal = Wal::open(disk.clone(), dir, options()).expect("open");
    wal.append(None, &[entry(1, 1, 10, 1)]).expect("append");
    disk.set_faults(Faults { sync_error_per_million: 1_000_000, ..Faults::default() });
    assert!(wal.sync().is_err());
    disk.set_faults(Faults::default());
    let error = wal.append(None, &[entry(2, 1, 10, 2)]).expect_err("poisoned");
    assert!(matches!(error, WalError::Poisoned(_)), "{error}");
}

#[test]
fn a_batch_larger_than_a_segment_is_split_across_segments() {
    let disk = Arc::new(SimDisk::new(11, Faults::default()));
    let dir = Path::new("/wal");
    let options = WalOptions { segment_bytes: 4096, frame_bytes_max: 1 << 20, ..options() };
    let mut wal = Wal::open(disk.clone(), dir, options.clone()).expect("opens");
    // Ten entries of 1,500 bytes: each fits in a segment, the batch does not.
    let entries: Vec<Entry> = (1..=10).map(|index| entry(index, 1, 1500, index)).collect();
    wal.append(None, &entries).expect("a batch of entries that each fit is written");
    wal.sync().expect("syncs");
    drop(wal);
    disk.crash();
    let wal = Wal::open(disk, dir, options).expect("reopens");
    assert_eq!(read_all(&wal), entries);
}

#[test]
fn a_restart_after_a_snapshot_drops_the_old_log_and_survives_a_crash() {
    let disk = Arc::new(SimDisk::new(12, Faults::default()));
    let dir = Path::new("/wal");
    let options = WalOptions { segment_bytes: 4096, ..options() };
    let mut wal = Wal::open(disk.clone(), dir, options.clone()).expect("opens");
    let old: Vec<Entry> = (1..=5).map(|index| entry(index, 1, 300, index)).collect();
    wal.append(None, &old).expect("appends");
    wal.sync().expect("syncs");
    // A snapshot through 9 (term 2) arrives from the leader: the log restarts at 10.
    wal.restart_at(LogIndex(10)).expect("restarts");
    assert_eq!(wal.first_index(), LogIndex(10));
    assert!(read_all(&wal).is_empty());
    let new: Vec<Entry> = (10..=12).map(|index| entry(index, 2, 300, index)).collect();
    wal.append(None, &new).expect("appends after the restart");
    wal.sync().expect("syncs");
    drop(wal);
    disk.crash();
    let mut wal = Wal::open(disk.clone(), dir, options.clone()).expect("reopens");
    assert_eq!(wal.first_index(), LogIndex(10));
    assert_eq!(read_all(&wal), new);
    // Compaction then removes the old log's segments; what remains still reads back.
    wal.compact(LogIndex(11)).expect("compacts");
    drop(wal);
    disk.crash();
    let wal = Wal::open(disk, dir, options).expect("reopens");
    assert_eq!(read_all(&wal), new);
}

#[test]
fn an_unsynced_restart_lost_in_a_crash_leaves_the_old_log() {
    let disk = Arc::new(SimDisk::new(13, Faults::default()));
    let dir = Path::new("/wal");
    let mut wal = Wal::open(disk.clone(), dir, options()).expect("opens");
    let old: Vec<Entry> = (1..=3).map(|index| entry(index, 1, 10, index)).collect();
    wal.append(None, &old).expect("appends");
    wal.sync().expect("syncs");
    wal.restart_at(LogIndex(8)).expect("restarts");
    drop(wal);
    disk.crash();
    let wal = Wal::open(disk, dir, options()).expect("reopens");
    let after = read_all(&wal);
    assert!(after == old || after.is_empty(), "either the old log or the restart: {after:?}");
}
