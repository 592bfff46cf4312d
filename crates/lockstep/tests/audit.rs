//! Auditing against real processes: three servers, one of them started with a test-only flag
//! that makes its state machine apply one request twice (as a non-deterministic state machine
//! would). `lockstep status` shows it quarantined within the bound, its reads are refused, and
//! it is repaired (by `lockstep audit repair` with manual repair, at once with automatic), its
//! state equal to the others' again; no client request fails but for retried ones.

// Every test here runs a replica built to diverge (`--sabotage diverge-at`).
#![cfg(feature = "sabotage")]

mod common;

use std::time::{Duration, Instant};

use common::{lockstep, write_keys, Cluster};
use lockstep_kv::{KeyRange, RangeRequest, Request, Response};
use serde_json::Value;

/// Writers at once.
const WRITERS: u64 = 16;
/// The entry replica 3 applies twice.
const DIVERGE_AT: u64 = 300;
/// Reports every 16 entries, digests every 64: the divergence must be found before the
/// leader commits this many entries past it.
const BOUND: u64 = 2 * 64 + 16;

fn cluster(name: &str, repair: &str) -> Cluster {
    let mut cluster = Cluster::new(name, 3);
    cluster.extra_args = vec![
        "--audit-report-interval".into(),
        "16".into(),
        "--audit-digest-interval".into(),
        "64".into(),
        "--audit-repair".into(),
        repair.into(),
    ];
    cluster.replica_args.insert(3, vec!["--sabotage".into(), format!("diverge-at={DIVERGE_AT}")]);
    cluster
}

/// `lockstep status --output json` against the cluster: each replica's JSON, by id.
fn status(cluster: &Cluster) -> Vec<Value> {
    let output = lockstep()
        .args(["status", "--output", "json", "--endpoints", &cluster.endpoints().join(",")])
        .output()
        .expect("run lockstep status");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    parsed["replicas"].as_array().cloned().unwrap_or_default()
}

fn replica(statuses: &[Value], id: u64) -> Option<&Value> {
    statuses.iter().find(|status| status["id"].as_u64() == Some(id))
}

/// Waits until `check` holds on the cluster's status, or panics after `within`.
fn wait_for(cluster: &Cluster, within: Duration, what: &str, check: impl Fn(&[Value]) -> bool) {
    let started = Instant::now();
    loop {
        let statuses = status(cluster);
        if check(&statuses) {
            return;
        }
        if started.elapsed() > within {
            panic!(
                "{what}: not within {within:?}; last status {statuses:#?}; logs in {}",
                cluster.dir.0.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The replicas' digests once all three applied the same index (writes stopped).
async fn digests_agree(cluster: &Cluster) {
    let started = Instant::now();
    loop {
        let mut seen = Vec::new();
        for id in 1..=3 {
            if let Some(status) = cluster.status(id).await {
                seen.push((status.applied, status.digest, status.chain));
            }
        }
        if seen.len() == 3 && seen.iter().all(|entry| *entry == seen[0]) {
            return;
        }
        if started.elapsed() > Duration::from_secs(20) {
            panic!("the replicas' states differ: {seen:?}; logs in {}", cluster.dir.0.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The members with a CORRUPT alarm raised, through etcd's API (at replica 1).
async fn corrupt_alarms(cluster: &Cluster) -> Vec<u64> {
    use lockstep_etcd::proto::etcdserverpb as pb;
    let endpoint = format!("http://127.0.0.1:{}", cluster.replicas[&1].etcd);
    let Ok(mut maintenance) =
        lockstep_etcd::rpc::maintenance_client::MaintenanceClient::connect(endpoint).await
    else {
        return Vec::new();
    };
    let list = pb::AlarmRequest::default();
    let Ok(listed) = maintenance.alarm(list).await else { return Vec::new() };
    listed
        .into_inner()
        .alarms
        .iter()
        .filter(|alarm| alarm.alarm == pb::AlarmType::Corrupt as i32)
        .map(|alarm| alarm.member_id)
        .collect()
}

/// The commit index at which the leader found replica 3, from its history line.
fn found_at(statuses: &[Value]) -> Option<u64> {
    statuses
        .iter()
        .flat_map(|status| status["audit"]["history"].as_array().cloned().unwrap_or_default())
        .find_map(|line| {
            let line = line.as_str()?.to_string();
            if !line.starts_with("replica 3 differs") {
                return None;
            }
            let at = line.split("found at commit ").nth(1)?;
            at.trim_end_matches(|c: char| !c.is_ascii_digit()).split(')').next()?.parse().ok()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergent_replica_is_quarantined_then_repaired_by_the_operator() {
    let mut cluster = cluster("audit-manual", "manual");
    cluster.start_all();
    cluster.leader(Duration::from_secs(15)).await;
    write_keys(cluster.client(), 0, 1_000, WRITERS).await;

    // Quarantined, found at the entry it applied twice, within the bound.
    // (The first notice names the report that differed; the exact entry follows once the
    // leader has compared the replica's recent chains.)
    wait_for(&cluster, Duration::from_secs(20), "replica 3 quarantined", |statuses| {
        replica(statuses, 3).is_some_and(|status| {
            status["audit"]["quarantined"].as_str().is_some_and(|line| line.contains(" at entry "))
        })
    });
    let statuses = status(&cluster);
    let line = replica(&statuses, 3).and_then(|s| s["audit"]["quarantined"].as_str()).unwrap_or("");
    assert!(
        line.contains(&format!("at entry {DIVERGE_AT}:")),
        "the divergence names its entry: {line}"
    );
    let found = found_at(&statuses).expect("the leader's history names replica 3");
    assert!(found <= DIVERGE_AT + BOUND, "found at commit {found}, bound {}", DIVERGE_AT + BOUND);
    for id in [1, 2] {
        let status = replica(&statuses, id).expect("a replica answers");
        assert!(status["audit"]["quarantined"].is_null(), "replica {id} is healthy: {status}");
    }
    // A quarantined replica serves no reads, even serializable ones.
    let read = cluster
        .replica_client(3)
        .read(Request::Range(RangeRequest {
            range: KeyRange::key("key-000001"),
            ..Default::default()
        }))
        .await;
    assert!(read.is_err(), "a quarantined replica answered a read: {read:?}");
    // `lockstep status` says so in its table too.
    let table = lockstep()
        .args(["status", "--endpoints", &cluster.endpoints().join(",")])
        .output()
        .expect("lockstep status");
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.contains("QUARANTINED"), "{table}");
    // etcd's tooling sees it too: a CORRUPT alarm for replica 3.
    let started = Instant::now();
    while !corrupt_alarms(&cluster).await.contains(&3) {
        assert!(started.elapsed() < Duration::from_secs(10), "no CORRUPT alarm for replica 3");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The operator repairs it; it serves again, with the same state as the others.
    let repaired = lockstep()
        .args(["audit", "repair", "3", "--endpoints", &cluster.endpoints().join(",")])
        .output()
        .expect("lockstep audit repair");
    assert!(repaired.status.success(), "{}", String::from_utf8_lossy(&repaired.stderr));
    wait_for(&cluster, Duration::from_secs(30), "replica 3 repaired", |statuses| {
        replica(statuses, 3).is_some_and(|status| {
            status["audit"]["quarantined"].is_null()
                && status["audit"]["repairs_done"].as_u64().unwrap_or(0) >= 1
        })
    });
    write_keys(cluster.client(), 1_000, 1_200, WRITERS).await;
    digests_agree(&cluster).await;
    let read = cluster
        .replica_client(3)
        .read(Request::Range(RangeRequest {
            range: KeyRange::key("key-001100"),
            ..Default::default()
        }))
        .await
        .expect("the repaired replica serves reads");
    assert!(
        matches!(read.response, Response::Range(ref range) if range.kvs.len() == 1),
        "{read:?}"
    );
    // `lockstep audit` shows the history.
    let audit = lockstep()
        .args(["audit", "--endpoints", &cluster.endpoints().join(",")])
        .output()
        .expect("lockstep audit");
    let audit = String::from_utf8_lossy(&audit.stdout).to_string();
    assert!(audit.contains("replica 3 differs") && audit.contains("repaired from"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergent_replica_is_repaired_at_once_by_default() {
    let mut cluster = cluster("audit-auto", "auto");
    cluster.start_all();
    cluster.leader(Duration::from_secs(15)).await;
    write_keys(cluster.client(), 0, 1_000, WRITERS).await;
    wait_for(&cluster, Duration::from_secs(30), "replica 3 found and repaired", |statuses| {
        found_at(statuses).is_some()
            && replica(statuses, 3).is_some_and(|status| {
                status["audit"]["quarantined"].is_null()
                    && status["audit"]["repairs_done"].as_u64().unwrap_or(0) >= 1
            })
    });
    let found = found_at(&status(&cluster)).expect("found");
    assert!(found <= DIVERGE_AT + BOUND, "found at commit {found}, bound {}", DIVERGE_AT + BOUND);
    digests_agree(&cluster).await;
    // `lockstep audit check` compares at a fresh digest point: all agree.
    let check = lockstep()
        .args(["audit", "check", "--endpoints", &cluster.endpoints().join(",")])
        .output()
        .expect("lockstep audit check");
    let text = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(check.status.success() && text.contains("compared at digest point"), "{text}");
    assert!(!text.contains("QUARANTINED"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergent_leader_steps_down_and_is_repaired() {
    let mut cluster = cluster("audit-leader", "auto");
    cluster.start_all();
    let leader = cluster.leader(Duration::from_secs(15)).await;
    // Make the replica that will diverge the leader before it does.
    if leader != 3 {
        let mut moved = false;
        for _ in 0..50 {
            // A transfer whose answer was lost as leadership moved may still have happened.
            if cluster.leader(Duration::from_secs(5)).await == 3 {
                moved = true;
                break;
            }
            let transfer = lockstep()
                .args(["member", "transfer", "3", "--endpoints", &cluster.endpoints().join(",")])
                .output()
                .expect("lockstep member transfer");
            if !transfer.status.success() {
                eprintln!("transfer: {}", String::from_utf8_lossy(&transfer.stderr).trim());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(moved, "replica 3 never took over; logs in {}", cluster.dir.0.display());
    }
    write_keys(cluster.client(), 0, 1_000, WRITERS).await;
    // It finds itself outvoted, steps down, and the next leader repairs it.
    wait_for(
        &cluster,
        Duration::from_secs(30),
        "replica 3 stepped down and repaired",
        |statuses| {
            found_at(statuses).is_some()
                && replica(statuses, 3).is_some_and(|status| {
                    status["role"] != "leader"
                        && status["audit"]["quarantined"].is_null()
                        && status["audit"]["self_quarantines"].as_u64().unwrap_or(0) >= 1
                        && status["audit"]["repairs_done"].as_u64().unwrap_or(0) >= 1
                })
        },
    );
    let found = found_at(&status(&cluster)).expect("found");
    assert!(found <= DIVERGE_AT + BOUND, "found at commit {found}, bound {}", DIVERGE_AT + BOUND);
    digests_agree(&cluster).await;
}
