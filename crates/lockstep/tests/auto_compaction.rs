//! `lockstep serve --auto-compact-revisions N`: the leader compacts the history older than the
//! newest N revisions, through the log, so every replica forgets the same history.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use lockstep_kv::{KeyRange, RangeRequest, Request, Response};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_old_history() {
    let mut cluster = Cluster::new("auto-compaction", 3);
    cluster.extra_args = vec!["--auto-compact-revisions".to_string(), "100".to_string()];
    cluster.start_all();
    cluster.leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    for i in 0..400 {
        client.write(Request::put(format!("k{}", i % 10), format!("v{i}"))).await.expect("write");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut compacted = Vec::new();
        for id in 1..=3 {
            let answer = cluster.replica_client(id).read(Request::Revisions).await.expect("read");
            let Response::Revisions { current, compacted: at } = answer.response else {
                panic!("not revisions: {answer:?}")
            };
            compacted.push((current, at));
        }
        let done = compacted.iter().all(|(current, at)| *current == 401 && *at >= 301 - 10);
        if done {
            // Every replica refuses the forgotten history alike.
            for id in 1..=3 {
                let old = Request::Range(RangeRequest {
                    range: KeyRange::key("k1"),
                    revision: 2,
                    ..RangeRequest::default()
                });
                let answer = cluster.replica_client(id).read(old).await.expect("read");
                assert!(
                    matches!(
                        answer.response,
                        Response::Error(lockstep_kv::KvError::Compacted { .. })
                    ),
                    "replica {id}: {answer:?}"
                );
            }
            break;
        }
        assert!(Instant::now() < deadline, "no automatic compaction: {compacted:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
