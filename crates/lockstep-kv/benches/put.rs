//! The cost of applying one put to the store, as every replica does for every write: the map
//! lookups, the history kept for the key, the revision index and the state digest (LtHash).
//!
//! Fills a store with `--keys` keys (default 10,000) of 16 bytes with 128-byte values, then
//! applies `--puts` puts (default 1,000,000) cycling over them, as `lockstep bench` writes, and
//! prints the time per put. History is kept (never compacted), so the store grows as a user's
//! does.
//!
//! `cargo bench -p lockstep-kv --bench put -- --keys 10000 --puts 1000000`

// Benchmarks read clocks.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::Instant;

use lockstep_kv::{Kv, Request};

fn main() {
    let mut keys = 10_000u64;
    let mut puts = 1_000_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|value| value.parse().ok());
        match arg.as_str() {
            "--keys" => keys = value.unwrap_or(keys),
            "--puts" => puts = value.unwrap_or(puts),
            _ => {}
        }
    }
    let key = |n: u64| format!("key-{:012}", n % keys).into_bytes();
    let value = vec![7u8; 128];
    let mut kv = Kv::new();
    for n in 0..keys {
        kv.execute_in(Request::put(key(n), value.clone()), 0, 1);
    }
    let started = Instant::now();
    for n in 0..puts {
        kv.execute_in(Request::put(key(n), value.clone()), 0, 1);
    }
    let elapsed = started.elapsed();
    println!(
        "{} puts over {} keys: {:.2} µs per put (revision {})",
        puts,
        keys,
        elapsed.as_secs_f64() * 1e6 / puts as f64,
        kv.revision()
    );
}
