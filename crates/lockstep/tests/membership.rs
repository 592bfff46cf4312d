//! Membership changes on real processes: a fourth replica is added with `lockstep member add`,
//! started with `--join`, catches up as a learner, is promoted; then an original replica is
//! removed and stopped, and the three that remain carry on with equal state.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{lockstep, Cluster};
use lockstep_kv::Request;

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
