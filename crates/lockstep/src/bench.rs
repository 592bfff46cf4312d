//! `lockstep bench`: a closed-loop load generator over the native client.
//!
//! N requests are kept in flight over one pipelined connection for a duration (after a
//! warm-up); throughput and latency percentiles come from an HDR histogram. This is the
//! first step of the benchmark suite: the etcd side-by-side runs build on it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use lockstep_client::ReadConsistency;
use lockstep_kv::Request;
use serde_json::json;

use crate::{ClientArgs, Output};

/// What the benchmark asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Durable writes of one key each.
    Put,
    /// Linearizable reads of one key each (read-index on the leader).
    Get,
    /// Reads from whichever replica the client is connected to (may be stale).
    GetSerializable,
}

/// Measure throughput and latency of a running cluster (closed loop).
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to ask.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    workload: Workload,
    /// Requests kept in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to run before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs the benchmark and prints the result.
pub async fn run(args: BenchArgs) -> Result<(), String> {
    if args.concurrency == 0 || args.keys == 0 {
        return Err("--concurrency and --keys must be at least 1".to_string());
    }
    let client = crate::commands::client(&args.client);
    let value = Bytes::from(vec![b'x'; args.value_size]);
    if args.workload != Workload::Put {
        // Reads need keys to find.
        let load = 1_000.min(args.keys);
        for key in 0..load {
            client
                .write(Request::put(format!("bench/{key:08}"), value.clone()))
                .await
                .map_err(|error| format!("loading keys: {error}"))?;
        }
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
    ));
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let client = client.clone();
        let value = value.clone();
        let (measuring, stop, errors, histogram) =
            (measuring.clone(), stop.clone(), errors.clone(), histogram.clone());
        let (workload, keys) = (args.workload, args.keys);
        workers.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
            let mut n = worker.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            while !stop.load(Ordering::Relaxed) {
                n = n
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let key = format!("bench/{:08}", (n >> 33) % keys.max(1));
                let started = Instant::now();
                let outcome = match workload {
                    Workload::Put => client.write(Request::put(key, value.clone())).await,
                    Workload::Get => {
                        client.read_with(Request::get(key), ReadConsistency::Linearizable).await
                    }
                    Workload::GetSerializable => {
                        client.read_with(Request::get(key), ReadConsistency::Follower).await
                    }
                };
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                match outcome {
                    Ok(_) => {
                        if let Some(local) = local.as_mut() {
                            let micros = started.elapsed().as_micros() as u64;
                            let _ = local.record(micros.max(1));
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let (Some(local), Ok(mut total)) = (local, histogram.lock()) {
                let _ = total.add(local);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup.max(0.0))).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration.max(0.1))).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let histogram = histogram.lock().map_err(|_| "a worker panicked".to_string())?.clone();
    let count = histogram.len();
    let rate = count as f64 / elapsed.as_secs_f64();
    let millis = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    let errors = errors.load(Ordering::Relaxed);
    match args.client.output {
        Output::Json => println!(
            "{}",
            json!({
                "workload": format!("{:?}", args.workload).to_lowercase(),
                "concurrency": args.concurrency,
                "seconds": elapsed.as_secs_f64(),
                "requests": count,
                "errors": errors,
                "per_second": rate,
                "latency_ms": {
                    "p50": millis(0.5), "p90": millis(0.9), "p99": millis(0.99),
                    "p99.9": millis(0.999), "max": histogram.max() as f64 / 1000.0,
                },
            })
        ),
        Output::Text => {
            println!(
                "{:?} at {} in flight: {count} requests in {:.1} s = {rate:.0}/s ({errors} errors)",
                args.workload,
                args.concurrency,
                elapsed.as_secs_f64()
            );
            println!(
                "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                millis(0.5),
                millis(0.9),
                millis(0.99),
                millis(0.999),
                histogram.max() as f64 / 1000.0
            );
        }
    }
    Ok(())
}
