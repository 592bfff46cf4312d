//! Cluster membership and quorums.
//!
//! A configuration names the voters and the learners. During a joint-consensus change it names
//! two voter sets, and every decision (an election, a commit, a read) needs a majority of each.
//! With one voter set the outgoing set is empty and counts as always agreeing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::{LogIndex, NodeId};

/// Who is in the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The voters of the (incoming) configuration.
    pub voters: BTreeSet<NodeId>,
    /// The voters of the outgoing configuration while a joint change is in progress; empty
    /// otherwise.
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Replicas that receive the log but count toward no quorum.
    pub learners: BTreeSet<NodeId>,
}

/// The outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A quorum granted.
    Won,
    /// A quorum can no longer be reached.
    Lost,
    /// Not decided yet.
    Pending,
}

impl Membership {
    /// A configuration of the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            voters_outgoing: BTreeSet::new(),
            learners: BTreeSet::new(),
        }
    }

    /// Whether `id` votes in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Whether a joint change is in progress.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Every member (voters of both halves and learners), in id order, without duplicates.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(self.voters_outgoing.iter().copied());
        all.extend(self.learners.iter().copied());
        all
    }

    /// Every voter of either half, in id order, without duplicates.
    pub fn all_voters(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(self.voters_outgoing.iter().copied());
        all
    }

    /// Checks the configuration is usable: at least one voter, no id zero, and no id that is
    /// both a voter and a learner.
    pub fn validate(&self) -> Result<(), String> {
        if self.voters.is_empty() {
            return Err("a configuration needs at least one voter".to_string());
        }
        if self.members().contains(&NodeId(0)) {
            return Err("node id 0 is reserved".to_string());
        }
        if let Some(both) = self.learners.iter().find(|id| self.is_voter(**id)) {
            return Err(format!("node {both} is both a voter and a learner"));
        }
        Ok(())
    }

    /// The size this configuration counts for in byte limits.
    pub fn size_bytes(&self) -> u64 {
        8 * (self.voters.len() + self.voters_outgoing.len() + self.learners.len()) as u64
    }

    /// The highest index that a quorum has reached, given each voter's acknowledged index.
    /// A voter missing from `acknowledged` counts as having nothing.
    pub fn committed_index(&self, acknowledged: &dyn Fn(NodeId) -> LogIndex) -> LogIndex {
        LogIndex(self.quorum_value(&|id| acknowledged(id).get()))
    }

    /// The largest value that a quorum of voters has reached: each voter holds `value(id)`,
    /// and the result is at most what a majority of each half holds.
    pub fn quorum_value(&self, value: &dyn Fn(NodeId) -> u64) -> u64 {
        let incoming = majority_value(&self.voters, value);
        if self.voters_outgoing.is_empty() {
            incoming
        } else {
            incoming.min(majority_value(&self.voters_outgoing, value))
        }
    }

    /// The outcome of an election given the votes received so far (true = granted).
    pub fn vote_result(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        let incoming = majority_vote(&self.voters, votes);
        if self.voters_outgoing.is_empty() {
            return incoming;
        }
        let outgoing = majority_vote(&self.voters_outgoing, votes);
        match (incoming, outgoing) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// Whether the voters for which `active` holds form a quorum.
    pub fn is_quorum(&self, active: &dyn Fn(NodeId) -> bool) -> bool {
        let votes: BTreeMap<NodeId, bool> =
            self.all_voters().into_iter().map(|id| (id, active(id))).collect();
        self.vote_result(&votes) == VoteResult::Won
    }
}

/// The largest value that a majority of `voters` have reached.
fn majority_value(voters: &BTreeSet<NodeId>, value: &dyn Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        // An empty half agrees with anything; the other half decides.
        return u64::MAX;
    }
    let mut indexes: Vec<u64> = voters.iter().map(|id| value(*id)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    // With n voters, the (n/2)-th largest value (0-based) is held by n/2 + 1 of them.
    indexes[voters.len() / 2]
}

fn majority_vote(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let quorum = voters.len() / 2 + 1;
    let mut granted = 0;
    let mut missing = 0;
    for id in voters {
        match votes.get(id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    if granted >= quorum {
        VoteResult::Won
    } else if granted + missing >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |set: &BTreeSet<NodeId>| {
            set.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(",")
        };
        write!(f, "voters=({})", list(&self.voters))?;
        if !self.voters_outgoing.is_empty() {
            write!(f, "&&({})", list(&self.voters_outgoing))?;
        }
        if !self.learners.is_empty() {
            write!(f, " learners=({})", list(&self.learners))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(raw: &[u64]) -> BTreeSet<NodeId> {
        raw.iter().map(|id| NodeId(*id)).collect()
    }

    #[test]
    fn committed_index_is_the_majority_minimum() {
        let membership = Membership::with_voters(ids(&[1, 2, 3]));
        let acked = |id: NodeId| LogIndex([5, 9, 7][(id.0 - 1) as usize]);
        assert_eq!(membership.committed_index(&acked), LogIndex(7));
        let even = Membership::with_voters(ids(&[1, 2, 3, 4]));
        let acked = |id: NodeId| LogIndex([5, 9, 7, 1][(id.0 - 1) as usize]);
        assert_eq!(even.committed_index(&acked), LogIndex(5));
    }

    #[test]
    fn joint_quorum_needs_both_halves() {
        let joint = Membership {
            voters: ids(&[1, 2, 3]),
            voters_outgoing: ids(&[3, 4, 5]),
            learners: BTreeSet::new(),
        };
        let acked = |id: NodeId| LogIndex([9, 9, 1, 2, 2][(id.0 - 1) as usize]);
        assert_eq!(joint.committed_index(&acked), LogIndex(2));
        let votes: BTreeMap<NodeId, bool> =
            [(NodeId(1), true), (NodeId(2), true), (NodeId(4), false), (NodeId(5), false)]
                .into_iter()
                .collect();
        assert_eq!(joint.vote_result(&votes), VoteResult::Lost);
    }

    #[test]
    fn vote_result_waits_while_undecided() {
        let membership = Membership::with_voters(ids(&[1, 2, 3]));
        let mut votes = BTreeMap::new();
        votes.insert(NodeId(1), true);
        assert_eq!(membership.vote_result(&votes), VoteResult::Pending);
        votes.insert(NodeId(2), false);
        assert_eq!(membership.vote_result(&votes), VoteResult::Pending);
        votes.insert(NodeId(3), true);
        assert_eq!(membership.vote_result(&votes), VoteResult::Won);
    }
}
