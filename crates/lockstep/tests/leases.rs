//! Leases as etcd keeps them, on real processes: keep-alives answered from the leader's memory
//! (no log entry for each), passed on to the leader by the other members, expiry decided by
//! the leader, and a lease that outlives its leader but not its holder.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use lockstep_etcd::proto::etcdserverpb as pb;
use lockstep_etcd::rpc::k_v_client::KVClient;
use lockstep_etcd::rpc::lease_client::LeaseClient;
use tonic::transport::Channel;

struct Member {
    leases: LeaseClient<Channel>,
    kv: KVClient<Channel>,
}

async fn member(cluster: &Cluster, id: u64) -> Member {
    let endpoint = format!("http://127.0.0.1:{}", cluster.replicas[&id].etcd);
    let channel = Channel::from_shared(endpoint).expect("uri").connect_lazy();
    Member { leases: LeaseClient::new(channel.clone()), kv: KVClient::new(channel) }
}

/// One keep-alive: the TTL it was answered with.
async fn keep_alive(member: &mut Member, id: i64) -> Result<i64, tonic::Status> {
    let once = tonic::codegen::tokio_stream::once(pb::LeaseKeepAliveRequest { id });
    let mut answers = member.leases.lease_keep_alive(once).await?.into_inner();
    let answer = answers.message().await?.ok_or_else(|| tonic::Status::aborted("no answer"))?;
    Ok(answer.ttl)
}

/// Whether `key` is present, read linearizably (retried while the cluster elects a leader).
async fn present(member: &mut Member, key: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let request = pb::RangeRequest { key: key.as_bytes().to_vec(), ..Default::default() };
        match member.kv.range(request).await {
            Ok(answer) => return answer.into_inner().count > 0,
            Err(status) => {
                assert!(Instant::now() < deadline, "reading {key}: {status}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn grant_with_key(member: &mut Member, ttl: i64, key: &str) -> i64 {
    let id = member
        .leases
        .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id;
    let put = pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        lease: id,
        ..Default::default()
    };
    member.kv.put(put).await.expect("put with the lease");
    id
}

async fn commit_index(cluster: &Cluster, id: u64) -> u64 {
    cluster.status(id).await.expect("the leader answers").commit
}

#[test]
fn keep_alives_cost_no_log_entries_and_a_lease_outlives_its_leader_but_not_its_holder() {
    let mut cluster = Cluster::new("leases", 3);
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let leader = cluster.leader(Duration::from_secs(20)).await;
        let others: Vec<u64> =
            cluster.replicas.keys().copied().filter(|&id| id != leader).collect();
        let mut at_leader = member(&cluster, leader).await;
        let mut at_follower = member(&cluster, others[0]).await;
        let mut at_survivor = member(&cluster, others[1]).await;
        let lease = grant_with_key(&mut at_follower, 5, "held").await;

        // The first renewal marks the lease through the log; the next hundred, through the
        // leader and through a member that passes them on, cost no entry.
        assert_eq!(keep_alive(&mut at_follower, lease).await.expect("renewed"), 5);
        let before = commit_index(&cluster, leader).await;
        for round in 0..100 {
            let member = if round % 2 == 0 { &mut at_leader } else { &mut at_follower };
            assert_eq!(keep_alive(member, lease).await.expect("renewed"), 5);
        }
        let after = commit_index(&cluster, leader).await;
        assert!(after - before <= 1, "100 keep-alives took {} log entries", after - before);
        // The time to live comes from the leader's memory, whoever is asked.
        let asked = pb::LeaseTimeToLiveRequest { id: lease, keys: true };
        let left = at_follower.leases.lease_time_to_live(asked).await.expect("ttl").into_inner();
        assert!((4..=5).contains(&left.ttl), "{left:?}");
        assert_eq!(left.keys, vec![b"held".to_vec()]);

        // The leader dies while the lease is kept alive, once a second, through the others:
        // the new leader keeps it.
        cluster.kill(leader);
        let kept_until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < kept_until {
            // Answers fail while there is no leader; the holder keeps trying, as etcd's do.
            let _ = keep_alive(&mut at_survivor, lease).await;
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        assert!(present(&mut at_survivor, "held").await, "the lease expired while kept alive");
        // A lease granted long after the election (more than a TTL) is renewed as any other.
        let late = grant_with_key(&mut at_survivor, 2, "late").await;
        assert_eq!(keep_alive(&mut at_survivor, late).await.expect("renewed"), 2);
        assert_eq!(keep_alive(&mut at_survivor, late).await.expect("renewed"), 2);
        assert_eq!(keep_alive(&mut at_survivor, lease).await.expect("renewed"), 5);
        let last_renewal = Instant::now();

        // Its holder stops: it expires within its TTL (and the leader's half-second look).
        while present(&mut at_survivor, "held").await {
            assert!(last_renewal.elapsed() < Duration::from_secs(8), "the lease never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let expired_after = last_renewal.elapsed();
        assert!(expired_after >= Duration::from_millis(4_900), "expired early: {expired_after:?}");
        assert_eq!(keep_alive(&mut at_survivor, lease).await.expect("answered"), 0);
    });
}

#[test]
fn a_checkpoint_keeps_a_new_leader_from_extending_a_lease_whose_holder_is_gone() {
    let mut cluster = Cluster::new("lease-checkpoints", 3);
    cluster.extra_args = vec!["--lease-checkpoint-millis".to_string(), "1000".to_string()];
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let leader = cluster.leader(Duration::from_secs(20)).await;
        let survivor = cluster.replicas.keys().copied().find(|&id| id != leader).expect("two");
        let mut at_leader = member(&cluster, leader).await;
        let mut at_survivor = member(&cluster, survivor).await;
        let lease = grant_with_key(&mut at_leader, 20, "brief").await;
        // Renewed twice (the second from memory), then its holder is gone.
        keep_alive(&mut at_leader, lease).await.expect("renewed");
        tokio::time::sleep(Duration::from_millis(500)).await;
        keep_alive(&mut at_leader, lease).await.expect("renewed");
        let last_renewal = Instant::now();
        // Checkpoints record what remains; ten seconds on, the leader dies.
        tokio::time::sleep(Duration::from_secs(10)).await;
        cluster.kill(leader);
        // Without the checkpoints the new leader would give the lease its whole TTL again from
        // its election (past 30 s after the last renewal); with them, the lease ends on time,
        // and not before.
        let mut seen_at = Duration::ZERO;
        while present(&mut at_survivor, "brief").await {
            seen_at = last_renewal.elapsed();
            assert!(seen_at < Duration::from_secs(25), "the new leader extended the lease");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(seen_at >= Duration::from_millis(19_000), "expired early: {seen_at:?}");
    });
}
