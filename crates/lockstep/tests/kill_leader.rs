//! Three real server processes: 10,000 keys written through the client, the leader killed
//! with SIGKILL while writes go on, the leader restarted; every acknowledged key is found on
//! every replica, and the replicas' state digests are equal.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{write_keys, Cluster};
use lockstep_kv::{KeyRange, RangeRequest, Request, Response};

const FIRST: u64 = 10_000;
const SECOND: u64 = 3_000;
const CONCURRENCY: u64 = 64;

/// Every key with the `key-` prefix that replica `id` holds.
async fn keys_on(cluster: &Cluster, id: u64) -> BTreeMap<String, String> {
    let request =
        Request::Range(RangeRequest { range: KeyRange::prefix("key-"), ..RangeRequest::default() });
    let answer = cluster.replica_client(id).read(request).await.expect("a follower read");
    let Response::Range(range) = answer.response else { panic!("not a range: {answer:?}") };
    range
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_loses_no_acknowledged_write() {
    let mut cluster = Cluster::new("kill-leader", 3);
    cluster.start_all();
    let leader = cluster.leader(Duration::from_secs(20)).await;
    eprintln!("replica {leader} leads; writing {FIRST} keys");

    let started = Instant::now();
    let mut acknowledged = write_keys(cluster.client(), 0, FIRST, CONCURRENCY).await;
    let elapsed = started.elapsed();
    eprintln!(
        "{FIRST} keys in {:.2} s ({:.0} writes/s, {CONCURRENCY} in flight, debug build)",
        elapsed.as_secs_f64(),
        FIRST as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(acknowledged.len() as u64, FIRST);

    let leader = cluster.leader(Duration::from_secs(5)).await;
    eprintln!("killing the leader, replica {leader}, with SIGKILL while writing {SECOND} more");
    let writing = tokio::spawn(write_keys(cluster.client(), FIRST, FIRST + SECOND, CONCURRENCY));
    tokio::time::sleep(Duration::from_millis(150)).await;
    cluster.kill(leader);
    let more = writing.await.expect("the writers");
    assert_eq!(more.len() as u64, SECOND, "every write is acknowledged after failover");
    acknowledged.extend(more);
    let new_leader = cluster.leader(Duration::from_secs(20)).await;
    assert_ne!(new_leader, leader, "a new leader took over");

    eprintln!("restarting replica {leader}");
    cluster.start(leader);

    // Wait until every replica has applied the same index, then compare.
    let deadline = Instant::now() + Duration::from_secs(60);
    let statuses = loop {
        let mut statuses = Vec::new();
        for id in 1..=3 {
            statuses.push(cluster.status(id).await);
        }
        let settled = statuses.iter().all(|status| {
            status.as_ref().is_some_and(|status| {
                status.applied == status.commit
                    && Some(status.applied) == statuses[0].as_ref().map(|first| first.applied)
            })
        });
        if settled {
            break statuses.into_iter().flatten().collect::<Vec<_>>();
        }
        assert!(
            Instant::now() < deadline,
            "the replicas did not converge: {statuses:?}\nlog of {leader}:\n{}",
            cluster.log(leader)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for status in &statuses {
        eprintln!(
            "replica {}: {} term {} applied {} digest {}",
            status.id,
            status.role,
            status.term,
            status.applied,
            &status.digest[..16]
        );
        assert_eq!(status.digest, statuses[0].digest, "digests differ: {statuses:?}");
    }

    for id in 1..=3 {
        let held = keys_on(&cluster, id).await;
        let missing: Vec<&String> =
            acknowledged.keys().filter(|key| held.get(*key) != acknowledged.get(*key)).collect();
        assert!(
            missing.is_empty(),
            "replica {id} lacks {} acknowledged keys, e.g. {:?}",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
        assert_eq!(held.len(), acknowledged.len(), "replica {id} holds keys nobody wrote");
    }
}
