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

/// A leader appended a configuration that removes it, and no one else received it; then a
/// voter's storage lost its log (it votes for no one until it holds it again). The remaining
/// voters lack the removal and cannot win without the removed leader's vote, which it refuses
/// them (its log is longer): only the removed replica, campaigning under the configuration
/// that removes it, can be elected, commit the removal and hand over.
#[test]
fn a_replica_removed_by_an_uncommitted_configuration_stands_when_the_others_need_its_log() {
    let mut cluster = Cluster::new(&[1, 2, 3, 4], |_| {});
    cluster.elect(id(1));
    propose(&mut cluster, id(1), 3);
    cluster.isolate(id(1));
    cluster.node_mut(id(1)).propose_membership(MembershipChange::Remove(id(1))).expect("taken");
    cluster.stabilize();
    assert_eq!(cluster.node(id(1)).membership().voters, ids(&[2, 3, 4]));
    assert_eq!(cluster.node(id(2)).membership().voters, ids(&[1, 2, 3, 4]));
    // The leader restarts (a follower now, its removal in its log), and 4 loses its log.
    cluster.crash_and_restart(id(1));
    cluster.crash_and_restart_losing(id(4), true);
    assert!(cluster.node(id(4)).lost_through().is_some(), "4 is short of lost entries");
    cluster.heal();
    let leader = the_leader(&mut cluster);
    // Whoever leads first, the removal ends committed and a remaining voter leads.
    let leader = if leader == id(1) {
        cluster.stabilize();
        the_leader(&mut cluster)
    } else {
        leader
    };
    assert!(ids(&[2, 3, 4]).contains(&leader), "a remaining voter leads: {leader}");
    let membership = cluster.node(leader).membership().clone();
    assert_eq!(membership.voters, ids(&[2, 3, 4]));
    assert!(cluster.node(leader).commit_index() >= cluster.node(leader).last_config_index());
}

/// A voter that missed the configuration adding a new voter still answers that voter's vote
/// requests: the newcomer's election may need its vote.
#[test]
fn a_voter_behind_on_the_configuration_votes_for_a_member_it_does_not_know_yet() {
    // Without check-quorum no replica ignores vote requests for having heard a leader lately.
    let mut cluster = Cluster::new(&[1, 2, 3], |config| config.check_quorum = false);
    cluster.elect(id(1));
    start_replica(&mut cluster, 4, |config| config.check_quorum = false);
    cluster.isolate(id(3));
    change(&mut cluster, id(1), MembershipChange::AddLearner(id(4)));
    propose(&mut cluster, id(1), 2);
    change(&mut cluster, id(1), MembershipChange::Promote(id(4)));
    propose(&mut cluster, id(1), 2);
    assert_eq!(cluster.node(id(1)).membership().voters, ids(&[1, 2, 3, 4]));
    assert!(!cluster.node(id(3)).membership().contains(id(4)), "3 never heard of 4");
    // The leader goes; 3 returns. 4 needs three votes of four: its own, 2's and 3's.
    cluster.heal();
    cluster.isolate(id(1));
    cluster.tick_until_campaign(id(4));
    cluster.stabilize();
    assert_eq!(cluster.node(id(4)).role(), Role::Leader, "3 voted for a member it did not know");
}

/// A replica whose storage lost entries it had acknowledged votes only for a candidate whose
/// last entry is of a later term than the term it held when the entries were lost: such a
/// candidate holds every entry those acknowledgements could have committed; one whose log
/// ends in that term or an earlier one may lack them and is refused.
#[test]
fn a_replica_short_of_lost_entries_votes_only_for_logs_from_later_terms() {
    let mut cluster = Cluster::new(&[1, 2, 3], |config| config.check_quorum = false);
    cluster.elect(id(1));
    propose(&mut cluster, id(1), 2);
    let lost_term = cluster.node(id(3)).term();
    cluster.crash_and_restart_losing(id(3), true);
    assert!(cluster.node(id(3)).lost_through().is_some());

    // 2's log ends in the term 3 lost entries in: 3 refuses it.
    cluster.isolate(id(1));
    cluster.tick_until_campaign(id(2));
    cluster.stabilize();
    assert_ne!(cluster.node(id(2)).role(), Role::Leader, "3 refused a log ending in its term");

    // 2 wins with 1 while 3 is away, and writes in a later term.
    cluster.heal();
    cluster.isolate(id(3));
    cluster.crash_and_restart(id(1));
    cluster.tick_until_campaign(id(2));
    cluster.stabilize();
    assert_eq!(cluster.node(id(2)).role(), Role::Leader);
    propose(&mut cluster, id(2), 1);
    assert!(cluster.node(id(1)).last_term() > lost_term);

    // 1's log now ends in a later term: with 2 gone, 3's vote elects it.
    cluster.heal();
    cluster.isolate(id(2));
    cluster.tick_until_campaign(id(1));
    cluster.stabilize();
    assert_eq!(cluster.node(id(1)).role(), Role::Leader, "3 voted for a log from a later term");
    propose(&mut cluster, id(1), 1);
    assert_eq!(cluster.node(id(3)).lost_through(), None, "3 holds its entries again");
}
