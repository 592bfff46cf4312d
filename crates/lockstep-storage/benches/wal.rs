//! Append throughput and latency of the write-ahead log with group commit, beside the raw
//! floor of this disk measured in the same run: a loop of one write plus one `fdatasync` of the
//! same size, which is what an append costs without batching.
//!
//! ```sh
//! cargo bench -p lockstep-storage --bench wal -- [--seconds 2] [--dir target/wal-bench]
//! ```
//!
//! Each appender submits one entry and waits until it is durable, then submits the next.

#![allow(missing_docs)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep_core::{Command, Entry, EntryPayload, LogIndex, Term};
use lockstep_storage::{BatchLimits, GroupCommit, RealDisk, Wal, WalOptions};

struct Measured {
    operations: u64,
    elapsed: Duration,
    latencies_micros: Vec<u64>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, fraction: f64) -> u64 {
        if self.latencies_micros.is_empty() {
            return 0;
        }
        self.latencies_micros.sort_unstable();
        let position = ((self.latencies_micros.len() as f64 - 1.0) * fraction).round() as usize;
        self.latencies_micros[position]
    }
}

/// One write plus one fdatasync at a time, at the end of a growing file.
fn raw_floor(dir: &Path, size: usize, duration: Duration) -> Measured {
    let path = dir.join(format!("floor-{size}"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("floor file");
    // Preallocate, as the log does, so each sync is a data sync only.
    let preallocated = 64 << 20;
    file.write_all_at(&vec![0u8; preallocated], 0).expect("preallocate");
    file.sync_all().expect("sync");
    let buffer = vec![7u8; size];
    let mut offset = 0u64;
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let began = Instant::now();
        file.write_all_at(&buffer, offset).expect("write");
        file.sync_data().expect("fdatasync");
        latencies.push(began.elapsed().as_micros() as u64);
        offset = (offset + size as u64) % (preallocated as u64 - size as u64);
    }
    let elapsed = start.elapsed();
    let _ = std::fs::remove_file(&path);
    Measured { operations: latencies.len() as u64, elapsed, latencies_micros: latencies }
}

fn entry(index: u64, data: &Bytes) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Command(Command { data: data.clone(), timestamp_millis: 0 }),
    }
}

fn group_commit(dir: &Path, size: usize, appenders: usize, duration: Duration) -> Measured {
    let wal_dir = dir.join(format!("wal-{size}-{appenders}"));
    let _ = std::fs::remove_dir_all(&wal_dir);
    let options = WalOptions { segment_bytes: 64 << 20, ..WalOptions::default() };
    let wal = Wal::open(Arc::new(RealDisk), &wal_dir, options).expect("open the log");
    let writer =
        Arc::new(GroupCommit::start(wal, BatchLimits::default()).expect("start the writer"));
    let next = Arc::new(Mutex::new(1u64));
    let data = Bytes::from(vec![7u8; size]);
    let start = Instant::now();
    let threads: Vec<_> = (0..appenders)
        .map(|_| {
            let writer = Arc::clone(&writer);
            let next = Arc::clone(&next);
            let data = data.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while start.elapsed() < duration {
                    let began = Instant::now();
                    let pending = {
                        // Indexes are taken and submitted under one lock, so the log sees them in order.
                        let mut next = next.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                        let pending = writer.submit(None, vec![entry(*next, &data)]);
                        *next += 1;
                        pending
                    };
                    pending.wait().expect("the append is durable");
                    latencies.push(began.elapsed().as_micros() as u64);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for thread in threads {
        latencies.extend(thread.join().expect("appender"));
    }
    let elapsed = start.elapsed();
    drop(writer);
    let _ = std::fs::remove_dir_all(&wal_dir);
    Measured { operations: latencies.len() as u64, elapsed, latencies_micros: latencies }
}

fn argument(name: &str) -> Option<String> {
    let arguments: Vec<String> = std::env::args().collect();
    arguments
        .iter()
        .position(|argument| argument == name)
        .and_then(|position| arguments.get(position + 1).cloned())
}

fn main() {
    let seconds: f64 = argument("--seconds").and_then(|value| value.parse().ok()).unwrap_or(2.0);
    let duration = Duration::from_secs_f64(seconds);
    let dir = PathBuf::from(argument("--dir").unwrap_or_else(|| "target/wal-bench".to_string()));
    std::fs::create_dir_all(&dir).expect("bench directory");
    println!("| entry | appenders | appends/s | p50 µs | p99 µs | max µs | vs. write+fdatasync |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for size in [128usize, 4096] {
        let mut floor = raw_floor(&dir, size, duration);
        let floor_rate = floor.rate();
        println!(
            "| {size} B | raw write+fdatasync | {:.0} | {} | {} | {} | 1.0x |",
            floor_rate,
            floor.percentile(0.5),
            floor.percentile(0.99),
            floor.percentile(1.0)
        );
        for appenders in [1usize, 16, 256] {
            let mut measured = group_commit(&dir, size, appenders, duration);
            println!(
                "| {size} B | {appenders} | {:.0} | {} | {} | {} | {:.1}x |",
                measured.rate(),
                measured.percentile(0.5),
                measured.percentile(0.99),
                measured.percentile(1.0),
                measured.rate() / floor_rate
            );
        }
    }
}
