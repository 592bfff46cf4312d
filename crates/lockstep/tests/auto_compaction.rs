//! `lockstep serve --auto-compact-revisions N`: the leader compacts the history older than the
//! newest N revisions, through the log, so every replica forgets the same history; with
//! authentication on too (the leader compacts with a member's token, needing no user's).

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use lockstep_etcd::proto::etcdserverpb as pb;
use lockstep_kv::{Authorized, KeyRange, RangeRequest, Request, Response};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_old_history() {
    compacts_old_history("auto-compaction", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_old_history_with_auth_on() {
    compacts_old_history("auto-compaction-auth", true).await;
}

async fn compacts_old_history(name: &str, auth: bool) {
    let mut cluster = Cluster::new(name, 3);
    cluster.extra_args = vec!["--auto-compact-revisions".to_string(), "100".to_string()];
    cluster.start_all();
    cluster.leader(Duration::from_secs(20)).await;
    // With authentication on, every request is made as root.
    let token = if auth { Some(enable_auth(&cluster).await) } else { None };
    let made = |request: Request| match &token {
        Some(token) => Request::As(Box::new(Authorized { token: token.clone(), request })),
        None => request,
    };
    let client = cluster.client();
    let first = match client.read(made(Request::Revisions)).await.expect("read").response {
        Response::Revisions { current, .. } => current,
        other => panic!("not revisions: {other:?}"),
    };
    for i in 0..400 {
        let put = Request::put(format!("k{}", i % 10), format!("v{i}"));
        client.write(made(put)).await.expect("write");
    }
    let last = first + 400;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut compacted = Vec::new();
        for id in 1..=3 {
            let answer =
                cluster.replica_client(id).read(made(Request::Revisions)).await.expect("read");
            let Response::Revisions { current, compacted: at } = answer.response else {
                panic!("not revisions: {answer:?}")
            };
            compacted.push((current, at));
        }
        let done = compacted.iter().all(|(current, at)| *current == last && *at >= last - 110);
        if done {
            // Every replica refuses the forgotten history alike.
            for id in 1..=3 {
                let old = Request::Range(RangeRequest {
                    range: KeyRange::key("k1"),
                    revision: first + 1,
                    ..RangeRequest::default()
                });
                let answer = cluster.replica_client(id).read(made(old)).await.expect("read");
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

/// Adds root, turns authentication on with etcdctl, and returns a token for root.
async fn enable_auth(cluster: &Cluster) -> String {
    cluster.enable_auth();
    let first = cluster.etcd_endpoints().split(',').next().expect("an endpoint").to_string();
    let mut auth = lockstep_etcd::rpc::auth_client::AuthClient::connect(format!("http://{first}"))
        .await
        .expect("connects");
    let request = pb::AuthenticateRequest { name: "root".into(), password: "rootpw".into() };
    auth.authenticate(request).await.expect("root authenticates").into_inner().token
}
