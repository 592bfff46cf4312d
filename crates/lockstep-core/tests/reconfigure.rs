//! Membership changes: learners catch up and are promoted, voters are replaced through a joint
//! configuration, a leader that removes itself hands over, and bad changes are refused with
//! their reasons. The safety checker watches every step.

// Tests may read files and clocks; the purity rules are for `src/` only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod harness;

use std::collections::BTreeSet;

use bytes::Bytes;
use harness::Cluster;
use lockstep_core::{Config, ConfigError, LogIndex, MembershipChange, NodeId, Role};

fn id(raw: u64) -> NodeId {
    NodeId(raw)
}

fn ids(raw: &[u64]) -> BTreeSet<NodeId> {
    raw.iter().map(|value| NodeId(*value)).collect()
}

/// Starts replica `new` with an empty log, knowing the cluster's current configuration.
fn start_replica(cluster: &mut Cluster, new: u64, configure: impl Fn(&mut Config)) {
    let leader = cluster.leaders()[0];
    let membership = cluster.node(leader).membership().clone();
    cluster.add_replica(id(new), membership, &configure);
}

fn propose(cluster: &mut Cluster, leader: NodeId, count: usize) {
    for round in 0..count {
        cluster
            .node_mut(leader)
            .propose(vec![Bytes::from(format!("w{round}"))], 0)
            .expect("the leader takes proposals");
    }
    cluster.stabilize();
}

fn change(cluster: &mut Cluster, leader: NodeId, change: MembershipChange) {
    cluster.node_mut(leader).propose_membership(change).expect("the change is taken");
    cluster.stabilize();
}

fn the_leader(cluster: &mut Cluster) -> NodeId {
    for _ in 0..200 {
        if let Some(leader) = cluster.leaders().first() {
            return *leader;
        }
        for replica in cluster.ids() {
            cluster.node_mut(replica).tick();
        }
        cluster.stabilize();
    }
    panic!("no leader");
}

#[test]
fn learners_are_promoted_and_the_old_voters_removed_with_the_leader() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(id(1));
    propose(&mut cluster, id(1), 5);
    for new in [4, 5] {
        start_replica(&mut cluster, new, |_| {});
        change(&mut cluster, id(1), MembershipChange::AddLearner(id(new)));
    }
    propose(&mut cluster, id(1), 3);
    let last = cluster.node(id(1)).last_index();
    for learner in [4, 5] {
        assert_eq!(cluster.node(id(learner)).commit_index(), last, "learner {learner} caught up");
        assert_ne!(cluster.node(id(learner)).role(), Role::Leader);
    }
    assert_eq!(cluster.node(id(1)).membership().learners, ids(&[4, 5]));
    change(&mut cluster, id(1), MembershipChange::Promote(id(4)));
    change(&mut cluster, id(1), MembershipChange::Promote(id(5)));
    assert_eq!(cluster.node(id(1)).membership().voters, ids(&[1, 2, 3, 4, 5]));

    // Remove two voters at once, the leader among them: a joint configuration, then the final
    // one, after which the leader hands over and steps down.
    let joint =
        cluster.node_mut(id(1)).propose_membership(MembershipChange::SetVoters(ids(&[3, 4, 5])));
    let joint = joint.expect("taken");
    assert!(cluster.node(id(1)).membership().is_joint(), "two voters change: joint first");
    assert_eq!(cluster.node(id(1)).config_in_flight(), Some(joint.last_index));
    cluster.stabilize();
    let leader = the_leader(&mut cluster);
    assert!(ids(&[3, 4, 5]).contains(&leader), "a remaining voter leads: {leader}");
    assert_ne!(cluster.node(id(1)).role(), Role::Leader, "the removed leader stepped down");
    let membership = cluster.node(leader).membership().clone();
    assert_eq!(membership.voters, ids(&[3, 4, 5]));
    assert!(!membership.is_joint());
    // The cluster goes on committing with its new voters only.
    cluster.isolate(id(1));
    cluster.isolate(id(2));
    propose(&mut cluster, leader, 3);
    let last = cluster.node(leader).last_index();
    for voter in [3, 4, 5] {
        assert_eq!(cluster.node(id(voter)).commit_index(), last, "voter {voter}");
    }
}

#[test]
fn bad_changes_are_refused_with_reasons() {
    let mut cluster = Cluster::new(&[1, 2, 3], |config| config.promotion_lag_max = 5);
    cluster.elect(id(1));
    let refuse = |cluster: &mut Cluster, who: u64, change: MembershipChange| {
        let error = cluster.node_mut(id(who)).propose_membership(change).expect_err("refused");
        println!("{error}");
        error
    };
    assert_eq!(
        refuse(&mut cluster, 2, MembershipChange::AddLearner(id(4))),
        ConfigError::NotLeader { leader: Some(id(1)) }
    );
    assert_eq!(
        refuse(&mut cluster, 1, MembershipChange::AddLearner(id(2))),
        ConfigError::AlreadyMember(id(2))
    );
    assert_eq!(
        refuse(&mut cluster, 1, MembershipChange::Remove(id(9))),
        ConfigError::NotMember(id(9))
    );
    assert_eq!(
        refuse(&mut cluster, 1, MembershipChange::Promote(id(2))),
        ConfigError::NotLearner(id(2))
    );
    assert_eq!(
        refuse(&mut cluster, 1, MembershipChange::SetVoters(ids(&[1, 2, 7]))),
        ConfigError::NotLearnerYet(id(7))
    );
    assert_eq!(
        refuse(&mut cluster, 1, MembershipChange::SetVoters(ids(&[]))),
        ConfigError::LastVoter
    );

    // One change at a time.
    start_replica(&mut cluster, 4, |config| config.promotion_lag_max = 5);
    cluster.node_mut(id(1)).propose_membership(MembershipChange::AddLearner(id(4))).expect("ok");
    let in_flight = refuse(&mut cluster, 1, MembershipChange::Remove(id(3)));
    assert!(matches!(in_flight, ConfigError::InProgress { .. }), "{in_flight:?}");
    cluster.stabilize();

    // A learner far behind is not promoted.
    cluster.isolate(id(4));
    propose(&mut cluster, id(1), 10);
    let behind = refuse(&mut cluster, 1, MembershipChange::Promote(id(4)));
    assert!(
        matches!(behind, ConfigError::LearnerBehind { id: learner, allowed: 5, .. } if learner == id(4))
    );
    assert!(behind.to_string().contains("entries behind"), "{behind}");
    cluster.heal();
    cluster.stabilize();
    propose(&mut cluster, id(1), 1);
    cluster
        .node_mut(id(1))
        .propose_membership(MembershipChange::Promote(id(4)))
        .expect("caught up");
    cluster.stabilize();

    // The last voter cannot be removed.
    let mut single = Cluster::new(&[1], |_| {});
    single.elect(id(1));
    assert_eq!(
        single.node_mut(id(1)).propose_membership(MembershipChange::Remove(id(1))),
        Err(ConfigError::LastVoter)
    );
    assert_eq!(cluster.node(id(1)).commit_index(), cluster.node(id(1)).last_index());
    assert!(cluster.node(id(1)).membership().voters.contains(&id(4)));
    let _ = LogIndex::ZERO;
}

/// A leader promotes a learner only on fresh news of it: what it heard before the learner
/// fell silent may be stale (the learner may have restarted since with its damaged log set
/// aside), and a voter short of entries it lost votes for almost no one. A leader cut off from
/// the learner refuses the promotion once a few heartbeats went unanswered, well before
/// check-quorum would notice, and promotes it again once it answers.
#[test]
fn a_learner_not_heard_from_lately_is_not_promoted() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(id(1));
    start_replica(&mut cluster, 4, |_| {});
    change(&mut cluster, id(1), MembershipChange::AddLearner(id(4)));
    propose(&mut cluster, id(1), 3);

    cluster.isolate(id(4));
    for _ in 0..lockstep_core::PROMOTION_HEARD_HEARTBEATS + 1 {
        cluster.node_mut(id(1)).tick();
        cluster.stabilize();
    }
    assert_eq!(cluster.leaders(), vec![id(1)], "the leader still holds its quorum");
    let progress = cluster.node(id(1)).progress(id(4)).expect("the learner's progress").clone();
    assert!(progress.recent_active, "check-quorum has not run yet: {progress:?}");
    let stale = cluster
        .node_mut(id(1))
        .propose_membership(MembershipChange::Promote(id(4)))
        .expect_err("a learner not heard from lately stays a learner");
    assert_eq!(
        stale,
        ConfigError::LearnerSilent {
            id: id(4),
            silent_ticks: Some(lockstep_core::PROMOTION_HEARD_HEARTBEATS + 1)
        }
    );
    assert!(stale.to_string().contains("has not heard from learner 4"), "{stale}");

    cluster.heal();
    cluster.node_mut(id(1)).tick();
    cluster.stabilize();
    change(&mut cluster, id(1), MembershipChange::Promote(id(4)));
    assert!(cluster.node(id(1)).membership().voters.contains(&id(4)));
    cluster.check();
}
