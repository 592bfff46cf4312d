//! Storage faults repaired from peers, against real processes: bytes flipped in a stopped
//! replica's write-ahead log are found when it restarts; it sets the damaged log aside,
//! fetches the entries after its checkpoint again from the leader, keeps out of elections
//! until it holds them again, and serves again with the others' state. A single replica,
//! which no one can repair, says so and stops.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{flip_bytes_at, lockstep, segments, write_keys, Cluster};
use lockstep_kv::{KeyRange, RangeRequest, Request, Response};

fn has_damaged_copy(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|entry| entry.file_name().to_string_lossy().ends_with(".seg.damaged"))
        })
        .unwrap_or(false)
}

/// Waits until every replica applied the same index with the same digest and chain.
async fn states_agree(cluster: &Cluster, ids: &[u64], within: Duration) {
    let started = Instant::now();
    loop {
        let mut seen = Vec::new();
        for &id in ids {
            if let Some(status) = cluster.status(id).await {
                seen.push((status.applied, status.digest, status.chain, status.lost_through));
            }
        }
        if seen.len() == ids.len()
            && seen.iter().all(|entry| *entry == seen[0])
            && seen[0].3.is_none()
        {
            return;
        }
        if started.elapsed() > within {
            panic!("the replicas differ: {seen:?}; logs in {}", cluster.dir.0.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_flipped_in_a_stopped_replicas_log_are_repaired_from_its_peers() {
    let mut cluster = Cluster::new("log-repair", 3);
    cluster.start_all();
    cluster.leader(Duration::from_secs(15)).await;
    write_keys(cluster.client(), 0, 800, 16).await;
    states_agree(&cluster, &[1, 2, 3], Duration::from_secs(20)).await;

    // Replica 3 stops; a record in the middle of its log is damaged.
    cluster.kill(3);
    let damaged = flip_bytes_at(&segments(&cluster, 3), "key-000400");

    // Restarted, it finds the damage, sets its log aside and fetches it again.
    cluster.start(3);
    // Writes go on meanwhile; none fails.
    write_keys(cluster.client(), 800, 1_000, 16).await;
    states_agree(&cluster, &[1, 2, 3], Duration::from_secs(30)).await;
    let log = cluster.log(3);
    let damage = log.lines().find(|line| line.contains("the write-ahead log is damaged"));
    let cut = log.lines().find(|line| line.contains("fetched again from the leader"));
    let (Some(damage), Some(cut)) = (damage, cut) else { panic!("no damage reported: {log}") };
    println!("{damage}\n{cut}");
    assert!(cut.contains("set aside"), "{cut}");
    assert!(has_damaged_copy(&cluster.data_dir(3).join("wal")), "the damaged segment is kept");
    let aside = damaged.with_extension("seg.damaged");
    assert!(aside.exists(), "{aside:?} holds the damaged bytes");

    // It serves the damaged key (and the later ones) again from its own state.
    for key in ["key-000400", "key-000799", "key-000999"] {
        let read = cluster
            .replica_client(3)
            .read(Request::Range(RangeRequest { range: KeyRange::key(key), ..Default::default() }))
            .await
            .expect("the repaired replica serves reads");
        let Response::Range(range) = read.response else { panic!("{read:?}") };
        let value = key.replace("key-", "value-").trim_start_matches("value-").to_string();
        let expected = format!("value-{}", value.parse::<u64>().expect("a number"));
        assert_eq!(range.kvs.len(), 1, "{key}: {range:?}");
        assert_eq!(range.kvs[0].value, expected.as_bytes(), "{key}");
    }
    // `lockstep status` shows it healthy.
    let table = lockstep()
        .args(["status", "--endpoints", &cluster.endpoints().join(",")])
        .output()
        .expect("lockstep status");
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(!table.contains("LOG-REPAIR") && !table.contains("QUARANTINED"), "{table}");

    // And it takes part in elections again: the other two are stopped in turn, so unless it
    // leads already, one of the stops takes the leader away and the election that follows
    // needs its vote (or it wins).
    cluster.kill(1);
    write_keys(cluster.client_of(&[2, 3]), 1_000, 1_050, 4).await;
    cluster.start(1);
    cluster.kill(2);
    write_keys(cluster.client_of(&[1, 3]), 1_050, 1_100, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_replica_whose_log_is_damaged_says_so_and_stops() {
    let mut cluster = Cluster::new("log-repair-alone", 1);
    cluster.start_all();
    cluster.leader(Duration::from_secs(15)).await;
    write_keys(cluster.client(), 0, 400, 8).await;
    cluster.kill(1);
    flip_bytes_at(&segments(&cluster, 1), "key-000200");
    cluster.start(1);
    let started = Instant::now();
    let status = loop {
        let child = cluster.replicas.get_mut(&1).and_then(|r| r.child.as_mut()).expect("started");
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "it kept running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let log = cluster.log(1);
    assert!(log.contains("the write-ahead log is damaged"), "{log}");
    assert!(log.contains("no other replica can supply them"), "{log}");
}
