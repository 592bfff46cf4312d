//! Liveness when repair mechanisms combine: a removed replica, a learner, a replica short of
//! entries its storage lost and a quarantined replica each hold the cluster out of elections
//! in some fault combination unless the election rules let the right replica stand and vote
//! (see `docs/election.md`). The safety checker watches every step.

// Tests may read files and clocks; the purity rules are for `src/` only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod harness;

use std::collections::BTreeSet;

use bytes::Bytes;
use harness::Cluster;
use lockstep_core::{Config, MembershipChange, NodeId, Role};

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

/// Ticks every replica and stabilizes until `done` holds (bounded).
fn run_until(cluster: &mut Cluster, what: &str, done: impl Fn(&Cluster) -> bool) {
    for _ in 0..400 {
        if done(cluster) {
            return;
        }
        for replica in cluster.ids() {
            cluster.node_mut(replica).tick();
        }
        cluster.stabilize();
    }
    panic!("never: {what}");
}

/// A quarantined replica holds the longest log; another voter is short of lost entries from
/// the same term. Neither of the two can be outvoted and the third cannot win without one
/// of them: after two election timeouts without a leader, the quarantined replica stands as
/// a caretaker, takes no proposals, and hands leadership to a voter once it holds its log.
#[test]
fn a_quarantined_replica_with_the_longest_log_hands_leadership_over() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(id(1));
    propose(&mut cluster, id(1), 2);
    cluster.isolate(id(2));
    propose(&mut cluster, id(1), 2);
    assert!(cluster.node(id(3)).last_index() > cluster.node(id(2)).last_index());
    cluster.node_mut(id(3)).set_quarantined(true);
    cluster.crash_and_restart_losing(id(1), true);
    cluster.heal();
    // Step by step: once it has heard no leader for two election timeouts it stands, and
    // the moment it leads it takes no proposals.
    // (The others tick too, so no one still holds a lease for the old leader.)
    let timeout = Config::new(id(3)).election_timeout_ticks_max;
    for _ in 0..timeout {
        for replica in cluster.ids() {
            cluster.node_mut(replica).tick();
        }
        cluster.stabilize();
    }
    assert!(cluster.leaders().is_empty(), "no one else can win");
    for _ in 0..timeout {
        cluster.node_mut(id(3)).tick();
    }
    cluster.tick_until_campaign(id(3));
    for _ in 0..20 {
        for replica in cluster.ids() {
            cluster.process_ready(replica);
        }
        cluster.deliver_all(None);
        if cluster.node(id(3)).role() == Role::Leader {
            break;
        }
    }
    assert_eq!(cluster.node(id(3)).role(), Role::Leader, "the quarantined replica stood and won");
    let refused = cluster.node_mut(id(3)).propose(vec![Bytes::from("x")], 0);
    assert!(refused.is_err(), "a caretaker takes no proposals: {refused:?}");
    run_until(&mut cluster, "a sound voter leads", |cluster| {
        cluster.leaders().first().is_some_and(|leader| *leader != id(3))
    });
    assert!(cluster.node(id(3)).stats().terms_led > 0, "the quarantined replica led a term");
    let leader = cluster.leaders()[0];
    propose(&mut cluster, leader, 1);
    assert!(cluster.node(id(3)).quarantined(), "still quarantined: only a repair clears it");
    assert_eq!(cluster.node(id(1)).lost_through(), None, "1 holds its entries again");
}

/// With the leader gone and the two other voters cut off from each other, only a learner
/// reaches them both: after two election timeouts without a leader it stands, is elected by
/// the voters of its configuration (not counting itself), commits, and hands over.
#[test]
fn a_learner_stands_when_no_voter_can_win() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(id(1));
    start_replica(&mut cluster, 4, |_| {});
    change(&mut cluster, id(1), MembershipChange::AddLearner(id(4)));
    propose(&mut cluster, id(1), 2);
    cluster.isolate(id(1));
    cluster.partition(&[id(2)], &[id(3)]);
    let committed = cluster.node(id(2)).commit_index();
    run_until(&mut cluster, "the learner's no-op commits on the voters", |cluster| {
        cluster.node(id(2)).commit_index() > committed
            && cluster.node(id(3)).commit_index() > committed
    });
    assert!(cluster.node(id(4)).stats().terms_led > 0, "the learner led a term");
    assert_eq!(cluster.node(id(4)).membership().voters, ids(&[1, 2, 3]));
}
