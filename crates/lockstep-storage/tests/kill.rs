//! The log on the real file system survives `kill -9`: a child process appends and syncs
//! entries through group commit, printing each index once it is durable; the parent kills it
//! with SIGKILL at a random moment, reopens the log, and checks that it holds every entry the
//! child reported, intact and in order, and nothing else but later entries of the same run.
//!
//! The seed of a failing round is printed; `LOCKSTEP_SEED=<seed>` replays the schedule of kill
//! times (the child's progress depends on the machine, so a replay is close, not exact).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep_core::rng::SeededRng;
use lockstep_core::{Entry, EntryPayload, LogIndex, Term};
use lockstep_storage::{BatchLimits, GroupCommit, RealDisk, Wal, WalOptions};

const CHILD_DIR: &str = "LOCKSTEP_WAL_CHILD_DIR";

fn options() -> WalOptions {
    // Small segments, so kills land during rollovers too.
    WalOptions { segment_bytes: 64 << 10, ..WalOptions::default() }
}

/// The entry the child writes at `index`: recognisable, and of varying size.
fn entry(index: u64) -> Entry {
    let mut data = format!("entry {index}:").into_bytes();
    data.resize(16 + (index % 97) as usize * 13, b'a' + (index % 26) as u8);
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Command(lockstep_core::Command {
            data: Bytes::from(data),
            timestamp_millis: index,
        }),
    }
}

/// The child: appends forever from where the log ends, eight appenders at a time, printing
/// each index once it is durable. Does nothing unless started by the parent.
#[test]
fn child_appender() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let wal =
        Wal::open(Arc::new(RealDisk), Path::new(&dir), options()).expect("child opens the log");
    let start = wal.last_index().next().get();
    let writer = GroupCommit::start(wal, BatchLimits::default()).expect("writer");
    let mut index = start;
    loop {
        let pending: Vec<_> = (0..8)
            .map(|offset| (index + offset, writer.submit(None, vec![entry(index + offset)])))
            .collect();
        for (durable, pending) in pending {
            pending.wait().expect("durable");
            println!("{durable}");
        }
        index += 8;
    }
}

/// One child, killed at a random moment. `before` is what earlier rounds acknowledged.
fn round(seed: u64, dir: &Path, before: u64) -> Result<u64, String> {
    let mut rng = SeededRng::new(seed);
    let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["--exact", "child_appender", "--nocapture", "--test-threads", "1"])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let kill_after = Duration::from_millis(rng.range(20, 400));
    // Read acknowledgements on a thread, so the kill lands at its moment however fast they come.
    let reader = std::thread::spawn(move || {
        let mut acknowledged = 0u64;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(index) = line.trim().parse::<u64>() {
                acknowledged = acknowledged.max(index);
            }
        }
        acknowledged
    });
    let started = Instant::now();
    while started.elapsed() < kill_after {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the child exited on its own: {status}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().map_err(|e| format!("SIGKILL failed: {e}"))?;
    let _ = child.wait();
    let acknowledged = reader.join().map_err(|_| "reader thread panicked")?.max(before);
    let wal = Wal::open(Arc::new(RealDisk), dir, options()).map_err(|e| format!("reopen: {e}"))?;
    if wal.last_index() < LogIndex(acknowledged) {
        return Err(format!(
            "the child acknowledged index {acknowledged} but the log ends at {}",
            wal.last_index()
        ));
    }
    let entries =
        wal.entries(LogIndex(1), wal.last_index(), u64::MAX).map_err(|e| e.to_string())?;
    for (position, found) in entries.iter().enumerate() {
        let expected = entry(position as u64 + 1);
        if *found != expected {
            return Err(format!("entry {} is not what was written", position + 1));
        }
    }
    Ok(acknowledged)
}

#[test]
fn the_log_survives_sigkill_with_every_acknowledged_entry() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kill-test");
    let _ = std::fs::remove_dir_all(&base);
    let first_seed =
        std::env::var("LOCKSTEP_SEED").ok().and_then(|value| value.parse().ok()).unwrap_or(1);
    let rounds = if std::env::var("LOCKSTEP_SEED").is_ok() { 1 } else { 12 };
    let dir = base.join("wal");
    let mut previous = 0;
    for seed in first_seed..first_seed + rounds {
        // The same log through every round: each child continues where the last was killed.
        match round(seed, &dir, previous) {
            Ok(acknowledged) => previous = acknowledged,
            Err(violation) => panic!("seed {seed}: {violation}\nreplay: LOCKSTEP_SEED={seed}"),
        }
    }
    println!("{rounds} kills; {previous} entries acknowledged and recovered");
    assert!(previous > 0, "the child acknowledged nothing");
    let _ = std::fs::remove_dir_all(&base);
}
