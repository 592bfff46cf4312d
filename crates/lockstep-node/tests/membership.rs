//! Reconfiguration through real drivers while a client keeps writing: three voters, two
//! learners added and promoted, then the two original voters removed, the leader among them.
//! No request fails except ones answered "retry" and retried, and no acknowledged write is
//! lost. Also: leadership transfer refuses a replica that is not caught up.

// Tests may read files and clocks.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "common/blobs.rs"]
mod blobs;
#[path = "common/cluster.rs"]
mod cluster;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use blobs::Put;
use bytes::Bytes;
use cluster::Cluster;
use lockstep_core::{MembershipChange, NodeId, StateMachine};
use lockstep_node::{CheckpointPolicy, ClientId, ClientRequest, Completion, Refusal};
use lockstep_storage::{Disk, Faults, SimDisk};

fn ids(raw: &[u64]) -> BTreeSet<NodeId> {
    raw.iter().map(|id| NodeId(*id)).collect()
}

/// A client writing key after key through whoever leads, retrying what is refused.
struct Client {
    sequence: u64,
    acknowledged: Vec<u64>,
    retried: u64,
}

impl Client {
    fn put(&mut self, cluster: &mut Cluster, key: u64) {
        self.sequence += 1;
        let value = Bytes::from(format!("value {key}"));
        for _ in 0..200 {
            let leader = cluster.elect();
            let request = ClientRequest {
                client: ClientId(42),
                sequence: self.sequence,
                input: Put { key, value: value.clone() },
            };
            let id = cluster.driver(leader).propose(request, 0);
            cluster.settle();
            let answer = cluster.driver(leader).take_completions().into_iter().find(|c| match c {
                Completion::Done { request, .. } | Completion::Refused { request, .. } => {
                    *request == id
                }
            });
            match answer {
                Some(Completion::Done { .. }) => {
                    self.acknowledged.push(key);
                    return;
                }
                Some(Completion::Refused {
                    refusal: Refusal::NotLeader { .. } | Refusal::Retry(_) | Refusal::Lost,
                    ..
                })
                | None => {
                    self.retried += 1;
                    cluster.tick(1);
                }
                Some(other) => panic!("put {key} failed: {other:?}"),
            }
        }
        panic!("put {key} never succeeded");
    }
}

fn change(cluster: &mut Cluster, client: &mut Client, key: &mut u64, change: MembershipChange) {
    for _ in 0..200 {
        let leader = cluster.elect();
        match cluster.driver(leader).change_membership(change.clone()) {
            Ok(_) => {
                cluster.settle();
                return;
            }
            Err(error) => {
                // Not caught up yet, or the previous change still in flight: keep writing.
                println!("{change:?}: {error}");
                *key += 1;
                client.put(cluster, *key);
                cluster.tick(1);
            }
        }
    }
    panic!("{change:?} never went through");
}

#[test]
fn voters_are_replaced_while_a_client_writes() {
    let disk: Arc<dyn Disk> = Arc::new(SimDisk::new(3, Faults::default()));
    let policy =
        CheckpointPolicy { entries: 25, trailing_entries: 5, ..CheckpointPolicy::default() };
    let mut cluster = Cluster::new(disk, Path::new("/cluster"), policy);
    let mut client = Client { sequence: 0, acknowledged: Vec::new(), retried: 0 };
    let mut key = 0;
    let leader = cluster.elect();
    for _ in 0..40 {
        key += 1;
        client.put(&mut cluster, key);
    }
    for new in [4, 5] {
        let leader = cluster.elect();
        cluster
            .driver(leader)
            .change_membership(MembershipChange::AddLearner(NodeId(new)))
            .expect("a learner is added");
        let membership = cluster.drivers[&leader].node().membership().clone();
        cluster.add_replica(NodeId(new), &membership);
        cluster.settle();
        for _ in 0..10 {
            key += 1;
            client.put(&mut cluster, key);
        }
    }
    change(&mut cluster, &mut client, &mut key, MembershipChange::Promote(NodeId(4)));
    change(&mut cluster, &mut client, &mut key, MembershipChange::Promote(NodeId(5)));
    let current = cluster.elect();
    assert_eq!(cluster.drivers[&current].node().membership().voters, ids(&[1, 2, 3, 4, 5]));
    assert_eq!(cluster.elect(), leader, "the leader has not changed yet");

    // Remove the two original voters, the leader among them: one joint change.
    // The leader is one of the original three; remove it and one other original voter.
    let kept = [1, 2, 3].map(NodeId).into_iter().find(|id| *id != leader && *id != NodeId(1));
    let kept = kept.unwrap_or(NodeId(3));
    let remaining: BTreeSet<NodeId> = [kept, NodeId(4), NodeId(5)].into_iter().collect();
    change(&mut cluster, &mut client, &mut key, MembershipChange::SetVoters(remaining.clone()));
    for _ in 0..30 {
        key += 1;
        client.put(&mut cluster, key);
    }
    let new_leader = cluster.elect();
    assert!(remaining.contains(&new_leader), "a remaining voter leads: {new_leader}");
    let membership = cluster.drivers[&new_leader].node().membership().clone();
    assert_eq!(membership.voters, remaining);
    assert!(!membership.is_joint());
    for gone in [1, 2, 3].map(NodeId).into_iter().filter(|id| !remaining.contains(id)) {
        cluster.stop(gone);
    }
    for _ in 0..10 {
        key += 1;
        client.put(&mut cluster, key);
    }
    cluster.tick(5);

    // No acknowledged write is lost, and the remaining replicas agree.
    let final_leader = cluster.elect();
    let expected = cluster.digest(final_leader);
    for id in remaining {
        assert_eq!(cluster.digest(id), expected, "replica {id} agrees");
        let machine = cluster.drivers[&id].state().machine();
        for written in &client.acknowledged {
            assert!(machine.query(written) > 0, "replica {id} lost write {written}");
        }
    }
    println!(
        "{} writes acknowledged, {} retried, none failed",
        client.acknowledged.len(),
        client.retried
    );
}

#[test]
fn leadership_moves_only_to_a_caught_up_voter() {
    let disk: Arc<dyn Disk> = Arc::new(SimDisk::new(4, Faults::default()));
    let mut cluster = Cluster::new(disk, Path::new("/cluster"), CheckpointPolicy::default());
    let leader = cluster.elect();
    let others: Vec<NodeId> =
        [1, 2, 3].map(NodeId).into_iter().filter(|id| *id != leader).collect();
    // One follower falls far behind.
    let lagging = others[0];
    cluster.isolated.push(lagging);
    for key in 0..1_200 {
        cluster.put(key, Bytes::from_static(b"x"));
    }
    let refused = cluster.driver(leader).transfer_leadership(lagging).expect_err("refused");
    assert!(refused.contains("behind"), "{refused}");
    assert!(cluster.driver(leader).transfer_leadership(NodeId(9)).is_err());
    // A caught-up one takes over.
    let target = others[1];
    cluster.driver(leader).transfer_leadership(target).expect("transferred");
    cluster.settle();
    cluster.tick(3);
    assert_eq!(cluster.elect(), target);
}
