//! How long a checkpoint stalls the apply path, against how long writing it takes.
//!
//! Builds a replicated blob store of `--megabytes` (default 1024) in 1 KiB values, then:
//! 1. takes the checkpoint's view (`Replicated::snapshot`): the only part on the apply path;
//! 2. writes the view to a snapshot file on the real file system on another thread, while this
//!    thread keeps applying entries, and records the longest gap between two applies;
//! 3. for reference, the same applies with no checkpoint running.
//!
//! `cargo bench -p lockstep-node --bench checkpoint -- --megabytes 1024`

// Benchmarks read clocks and files.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "../tests/common/blobs.rs"]
mod blobs;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blobs::{Blobs, Put};
use bytes::Bytes;
use lockstep_core::{ApplyContext, LogIndex, Membership, NodeId, SnapshotMeta, StateMachine, Term};
use lockstep_node::{Replicated, SessionConfig};
use lockstep_storage::{RealDisk, SnapshotStore};

const VALUE_BYTES: usize = 1024;

fn main() {
    let mut megabytes = 1024u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--megabytes" {
            megabytes = args.next().and_then(|value| value.parse().ok()).unwrap_or(megabytes);
        }
    }
    let values = megabytes * (1 << 20) / VALUE_BYTES as u64;
    let context = ApplyContext { index: LogIndex(1), term: Term(1), timestamp_millis: 0 };

    let started = Instant::now();
    let mut machine = Blobs::default();
    for key in 0..values {
        let value = Bytes::from(vec![(key % 251) as u8; VALUE_BYTES]);
        machine.apply(Put { key, value }, &context);
    }
    let state = Replicated::new(machine, SessionConfig::default());
    println!(
        "built {megabytes} MiB in {values} values in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 1. The view: what the apply path pays.
    let started = Instant::now();
    let view = state.snapshot();
    let stall = started.elapsed();

    // 2. Writing it, on another thread, while this one applies.
    let dir =
        std::env::temp_dir().join(format!("lockstep-checkpoint-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = SnapshotStore::open(Arc::new(RealDisk), &dir).expect("a snapshot directory");
    let meta = SnapshotMeta {
        last_index: LogIndex(values),
        last_term: Term(1),
        membership: Membership::with_voters([NodeId(1)]),
    };
    let writing = Arc::new(AtomicBool::new(true));
    let writer_done = Arc::clone(&writing);
    let writer = std::thread::spawn(move || {
        let started = Instant::now();
        let mut writer = store.create(meta, Vec::new()).expect("a snapshot file");
        lockstep_core::StateSnapshot::write_to(&view, &mut writer).expect("written");
        let stored = writer.finish().expect("durable");
        writer_done.store(false, Ordering::Release);
        (started.elapsed(), stored.footer.data_len)
    });
    let (mut machine, _) = state.into_parts();
    let during = apply_while(&mut machine, || writing.load(Ordering::Acquire), values);
    let (write_time, bytes) = writer.join().expect("the writer finishes");

    // 3. The same applies with nothing else running, for reference.
    let deadline = Instant::now() + write_time;
    let alone = apply_while(&mut machine, || Instant::now() < deadline, values * 2);

    println!("checkpoint view (apply path stalled): {:.3} ms", stall.as_secs_f64() * 1e3);
    println!(
        "checkpoint written off the apply path: {} MiB in {:.2} s ({:.0} MiB/s)",
        bytes >> 20,
        write_time.as_secs_f64(),
        (bytes >> 20) as f64 / write_time.as_secs_f64()
    );
    println!(
        "stall / full write: {:.5} ({:.0}x shorter)",
        stall.as_secs_f64() / write_time.as_secs_f64(),
        write_time.as_secs_f64() / stall.as_secs_f64().max(1e-9)
    );
    println!(
        "applies while writing: {} ({:.0}/s), longest gap {:.3} ms",
        during.0,
        during.0 as f64 / write_time.as_secs_f64(),
        during.1.as_secs_f64() * 1e3
    );
    println!(
        "applies alone, same time: {} ({:.0}/s), longest gap {:.3} ms",
        alone.0,
        alone.0 as f64 / write_time.as_secs_f64(),
        alone.1.as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Applies 1 KiB puts to the state machine while `go()`; returns how many and the longest time
/// between two.
fn apply_while(machine: &mut Blobs, go: impl Fn() -> bool, first_key: u64) -> (u64, Duration) {
    let context = ApplyContext { index: LogIndex(1), term: Term(1), timestamp_millis: 0 };
    let value = Bytes::from(vec![7u8; VALUE_BYTES]);
    let mut count = 0u64;
    let mut longest = Duration::ZERO;
    let mut last = Instant::now();
    while go() {
        let put = Put { key: first_key + count, value: value.clone() };
        machine.apply(put, &context);
        count += 1;
        let now = Instant::now();
        longest = longest.max(now - last);
        last = now;
    }
    (count, longest)
}
