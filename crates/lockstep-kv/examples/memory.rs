//! Resident memory the store takes per version kept: puts of 128-byte values to a number of
//! distinct keys, the history kept (never compacted), as a replica holds them.
//!
//!   cargo run --release -p lockstep-kv --example memory -- PUTS KEYS
//!   (defaults: 1,000,000 puts to 1,000,000 keys)

use lockstep_core::{ApplyContext, LogIndex, StateMachine, Term};
use lockstep_kv::{Kv, PutRequest, Request};

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1).map(|arg| arg.parse::<u64>());
    let puts = args.next().and_then(Result::ok).unwrap_or(1_000_000);
    let keys = args.next().and_then(Result::ok).unwrap_or(1_000_000).max(1);
    let before = resident_kib();
    let mut kv = Kv::new();
    let value = bytes::Bytes::from(vec![b'x'; 128]);
    for n in 0..puts {
        let mut key = format!("bench/{:010}", n % keys).into_bytes();
        key.resize(16, b'.');
        // As the log delivers it: a value of its own, decoded from the entry.
        let request = Request::Put(PutRequest {
            key: key.into(),
            value: bytes::Bytes::copy_from_slice(&value),
            ..PutRequest::default()
        });
        let context = ApplyContext { index: LogIndex(n + 1), term: Term(1), timestamp_millis: 0 };
        kv.apply(request, &context);
    }
    let after = resident_kib();
    let bytes = (after.saturating_sub(before)) * 1024;
    println!(
        "{puts} puts to {keys} keys (16-byte keys, 128-byte values): {} MiB resident, {} bytes \
         per version kept",
        bytes >> 20,
        bytes / puts.max(1)
    );
    std::hint::black_box(&kv);
}
