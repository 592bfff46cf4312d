//! Membership changes on real processes: a fourth replica is added with `lockstep member add`,
//! started with `--join`, catches up as a learner, is promoted; then an original replica is
//! removed and stopped, and the three that remain carry on with equal state. And the same
//! change while a replica restarts with a damaged log (faults combine in production).

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{flip_bytes_at, lockstep, segments, write_keys, Cluster};
use lockstep_kv::{KeyRange, RangeRequest, Request, Response};

fn member(cluster: &Cluster, args: &[&str]) -> Output {
    lockstep()
        .arg("member")
        .args(args)
        .arg("--endpoints")
        .arg(cluster.endpoints()[..3].join(","))
        .args(["--output", "json", "--timeout", "30"])
        .output()
        .expect("run lockstep member")
}

fn members(output: &Output) -> Vec<(u64, bool)> {
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    json["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["id"].as_u64().expect("id"), m["voter"].as_bool().expect("voter")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_added_promoted_and_another_removed() {
    let mut cluster = Cluster::new("membership", 3);
    cluster.start_all();
    cluster.leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    for i in 0..200 {
        client.write(Request::put(format!("before/{i:03}"), "v")).await.expect("write");
    }

    // Add replica 4: its addresses go through the log, then it is a learner.
    cluster.add_replica(4);
    let new = &cluster.replicas[&4];
    let (peer, client_address, etcd) = (
        format!("127.0.0.1:{}", new.peer),
        format!("127.0.0.1:{}", new.client),
        format!("127.0.0.1:{}", new.etcd),
    );
    let added = member(
        &cluster,
        &["add", "4", "--peer", &peer, "--client", &client_address, "--etcd", &etcd],
    );
    assert_eq!(members(&added), vec![(1, true), (2, true), (3, true), (4, false)]);
    // Adding it again (a retry, say) changes nothing.
    let again = member(
        &cluster,
        &["add", "4", "--peer", &peer, "--client", &client_address, "--etcd", &etcd],
    );
    assert_eq!(members(&again), vec![(1, true), (2, true), (3, true), (4, false)]);
    // Ids are never reused: not with other addresses, not an initial member's.
    for id in ["4", "1"] {
        let taken =
            member(&cluster, &["add", id, "--peer", "127.0.0.1:1", "--client", "127.0.0.1:2"]);
        assert!(!taken.status.success());
        let error = String::from_utf8_lossy(&taken.stderr);
        assert!(error.contains(&format!("replica id {id} is taken")), "{error}");
    }
    cluster.start(4);

    // It catches up as a learner, then is promoted.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leader = cluster.leader(Duration::from_secs(10)).await;
        let (Some(lead), Some(learner)) = (cluster.status(leader).await, cluster.status(4).await)
        else {
            assert!(Instant::now() < deadline, "replica 4 never answered: {}", cluster.log(4));
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if learner.applied >= lead.commit && lead.commit > 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica 4 did not catch up: {learner:?}\n{}",
            cluster.log(4)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let promoted = member(&cluster, &["promote", "4"]);
    assert_eq!(members(&promoted), vec![(1, true), (2, true), (3, true), (4, true)]);

    // Remove replica 1 and stop it; the others carry on.
    let removed = member(&cluster, &["remove", "1"]);
    assert_eq!(members(&removed), vec![(2, true), (3, true), (4, true)]);
    cluster.kill(1);
    let remaining = Cluster::client_of(&cluster, &[2, 3, 4]);
    for i in 0..100 {
        remaining
            .write(Request::put(format!("after/{i:03}"), "v"))
            .await
            .expect("write after the changes");
    }
    // Every remaining replica reaches the same state.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut statuses = Vec::new();
        for id in [2, 3, 4] {
            statuses.push(cluster.status(id).await);
        }
        let first = statuses[0].clone();
        let settled = statuses.iter().all(|status| {
            status.as_ref().zip(first.as_ref()).is_some_and(|(status, first)| {
                status.applied == first.applied
                    && status.applied == status.commit
                    && status.digest == first.digest
            })
        });
        if settled {
            let voters = first.map(|status| status.voters).unwrap_or_default();
            assert_eq!(voters, vec![2, 3, 4]);
            break;
        }
        assert!(Instant::now() < deadline, "the replicas did not converge: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bad changes are refused with a reason, and change nothing.
    let last = member(&cluster, &["remove", "9"]);
    assert!(last.status.success(), "removing a replica that is not a member is a no-op");
    let refused = member(&cluster, &["promote", "7"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused"), "{refused:?}");
}

/// Waits until replica `id` has applied everything the leader committed (past `at_least`).
async fn caught_up(cluster: &Cluster, id: u64, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leader = cluster.leader(Duration::from_secs(20)).await;
        if let (Some(lead), Some(status)) = (cluster.status(leader).await, cluster.status(id).await)
        {
            if status.applied >= lead.commit && lead.commit > at_least {
                return;
            }
        }
        assert!(Instant::now() < deadline, "replica {id} did not catch up: {}", cluster.log(id));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The production shape of a fault combination: while a fourth replica is added (a learner,
/// then promoted) and an original one removed, another original restarts with a damaged log,
/// sets it aside and fetches it again. Writes go on throughout; the cluster keeps a leader,
/// every acknowledged write is read back, and the three remaining replicas agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_restarting_during_a_membership_change_loses_nothing() {
    let mut cluster = Cluster::new("membership-damage", 3);
    cluster.start_all();
    cluster.leader(Duration::from_secs(20)).await;
    let mut acknowledged = write_keys(cluster.client(), 0, 400, 16).await;

    // Replica 4 is added as a learner and started.
    cluster.add_replica(4);
    let new = &cluster.replicas[&4];
    let (peer, client_address, etcd) = (
        format!("127.0.0.1:{}", new.peer),
        format!("127.0.0.1:{}", new.client),
        format!("127.0.0.1:{}", new.etcd),
    );
    let added = member(
        &cluster,
        &["add", "4", "--peer", &peer, "--client", &client_address, "--etcd", &etcd],
    );
    assert_eq!(members(&added), vec![(1, true), (2, true), (3, true), (4, false)]);
    cluster.start(4);

    // Meanwhile replica 3 stops, and a record of its log is damaged; it restarts while the
    // learner catches up and writes go on.
    cluster.kill(3);
    flip_bytes_at(&segments(&cluster, 3), "key-000200");
    cluster.start(3);
    acknowledged.extend(write_keys(cluster.client_of(&[1, 2]), 400, 800, 16).await);
    caught_up(&cluster, 4, 400).await;

    // The learner is promoted and replica 1 removed, while replica 3 may still be short of
    // what it lost.
    let promoted = member(&cluster, &["promote", "4"]);
    assert_eq!(members(&promoted), vec![(1, true), (2, true), (3, true), (4, true)]);
    let removed = member(&cluster, &["remove", "1"]);
    assert_eq!(members(&removed), vec![(2, true), (3, true), (4, true)]);
    cluster.kill(1);
    let remaining = cluster.client_of(&[2, 3, 4]);
    acknowledged.extend(write_keys(remaining.clone(), 800, 1_000, 16).await);

    // The damage was found and repaired from the others.
    let log = cluster.log(3);
    assert!(log.contains("the write-ahead log is damaged"), "no damage reported: {log}");

    // Every acknowledged write is there, read linearizably.
    for (key, value) in &acknowledged {
        let read = remaining
            .read(Request::Range(RangeRequest {
                range: KeyRange::key(key.clone()),
                ..Default::default()
            }))
            .await
            .expect("a read");
        let Response::Range(range) = read.response else { panic!("{read:?}") };
        assert_eq!(range.kvs.len(), 1, "{key} was acknowledged and is gone");
        assert_eq!(range.kvs[0].value, value.as_bytes(), "{key}");
    }
    assert_eq!(acknowledged.len(), 1_000);

    // The three that remain agree, and each can lead: stopping one at a time still leaves a
    // leader that takes writes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut statuses = Vec::new();
        for id in [2, 3, 4] {
            statuses.push(cluster.status(id).await);
        }
        let first = statuses[0].clone();
        let settled = statuses.iter().all(|status| {
            status.as_ref().zip(first.as_ref()).is_some_and(|(status, first)| {
                status.applied == first.applied
                    && status.digest == first.digest
                    && status.lost_through.is_none()
            })
        });
        if settled {
            break;
        }
        assert!(Instant::now() < deadline, "the replicas did not converge: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for stopped in [2, 4] {
        cluster.kill(stopped);
        let others: Vec<u64> = [2, 3, 4].into_iter().filter(|id| *id != stopped).collect();
        write_keys(cluster.client_of(&others), 1_000 + stopped * 10, 1_005 + stopped * 10, 2).await;
        cluster.start(stopped);
        caught_up(&cluster, stopped, 0).await;
    }
}
