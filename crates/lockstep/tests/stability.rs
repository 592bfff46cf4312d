//! A leader holds under sustained load: 60 s of closed-loop puts at 256 in flight against three
//! real servers, audit on, history kept; the leader never changes and no request fails.
//!
//! A liveness assertion, not a timing one: however fast this machine is, a replica thread that
//! falls silent for an election timeout (an apply, a digest, a checkpoint or a lock on its
//! heartbeat path) shows as a new term. Throughput per 10 s window is printed for the reader;
//! `bash bench/soak.sh` is the ten-minute version on a release build.

mod common;

use std::time::Duration;

use common::{lockstep, Cluster};

const SECONDS: u64 = 60;
const CONCURRENCY: u64 = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_holds_under_a_minute_of_puts() {
    let mut cluster = Cluster::new("stability", 3);
    cluster.start_all();
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let mut terms = Vec::new();
    for id in 1..=3 {
        let status = cluster.status(id).await.expect("every replica answers its status");
        terms.push(status.term);
    }
    eprintln!("replica {leader} leads, terms {terms:?}; {SECONDS} s of puts at {CONCURRENCY}");

    let endpoints = cluster.endpoints().join(",");
    let bench = tokio::task::spawn_blocking(move || {
        lockstep()
            .args(["bench", "--endpoints", &endpoints, "--workload", "put"])
            .args(["--concurrency", &CONCURRENCY.to_string()])
            .args(["--duration", &SECONDS.to_string(), "--window", "10", "--output", "json"])
            .output()
            .expect("lockstep bench runs")
    })
    .await
    .expect("the bench task");
    assert!(bench.status.success(), "{}", String::from_utf8_lossy(&bench.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&bench.stdout).expect("lockstep bench prints JSON");
    for window in report["windows"].as_array().into_iter().flatten() {
        eprintln!(
            "from {:>3} s: {:>7.0} puts/s, p99 {:>8.2} ms, {} errors",
            window["start_seconds"],
            window["per_second"],
            window["latency_ms"]["p99"],
            window["errors"]
        );
    }

    let after_leader = cluster.leader(Duration::from_secs(5)).await;
    let mut after = Vec::new();
    for id in 1..=3 {
        let status = cluster.status(id).await.expect("every replica answers its status");
        after.push(status.term);
    }
    eprintln!(
        "{} puts, {} errors; replica {after_leader} leads, terms {after:?}",
        report["requests"], report["errors"]
    );
    if after != terms || after_leader != leader {
        // Why, as the replicas saw it: long turns of a replica thread, and who led when.
        for id in 1..=3 {
            let log = cluster.log(id);
            let noted: Vec<&str> = log
                .lines()
                .filter(|line| line.contains("WARN") || line.contains("leads"))
                .collect();
            eprintln!("replica {id}'s log, {} lines noted:", noted.len());
            for line in noted.iter().rev().take(30).rev() {
                eprintln!("  {line}");
            }
        }
    }
    assert_eq!(report["errors"], 0, "requests failed: {}", report["first_error"]);
    assert!(report["requests"].as_u64().unwrap_or(0) > 0, "no request was answered");
    assert_eq!(after, terms, "the term changed under load: a leader was lost");
    assert_eq!(after_leader, leader, "the leader changed under load");
}
