//! Membership changes: learners, single-step and joint-consensus changes, safe promotion, and
//! a leader that removes itself.
//!
//! A change is an entry in the log and takes effect as soon as it is appended (Raft
//! dissertation, §4.1). Only one change is in flight at a time: a change is refused while a
//! configuration entry is uncommitted or a joint configuration is in force.
//!
//! - Adding or removing one voter, or adding, promoting or removing a learner, is a single
//!   step: the new configuration's majorities overlap the old one's.
//! - Any other change of the voters goes through a **joint** configuration: old and new voters
//!   both decide (a majority of each) until the leader, once the joint entry commits, appends
//!   the new configuration alone.
//! - A new voter must be a learner first, caught up to within
//!   [`crate::Config::promotion_lag_max`] entries of the leader, so that adding it never costs
//!   availability.
//! - A leader that is not a voter of a committed configuration hands leadership to the most
//!   caught-up voter (timeout-now) and steps down.

use std::collections::BTreeSet;
use std::fmt;

use crate::membership::Membership;
use crate::message::MessageBody;
use crate::node::Node;
use crate::output::Proposed;
use crate::types::{Entry, EntryPayload, LogIndex, NodeId, Role};

/// A learner is promoted only if the leader heard from it within this many heartbeat
/// intervals (see `Node::check_caught_up`).
pub const PROMOTION_HEARD_HEARTBEATS: u64 = 3;

/// A membership change a client asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a replica as a learner: it receives the log but counts toward no quorum.
    AddLearner(NodeId),
    /// Make a caught-up learner a voter.
    Promote(NodeId),
    /// Remove a replica (voter or learner).
    Remove(NodeId),
    /// Make exactly these the voters: learners among them are promoted (each must be caught
    /// up), voters not among them are removed. A change of more than one voter goes through a
    /// joint configuration.
    SetVoters(BTreeSet<NodeId>),
}

/// Why a membership change was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// This replica does not lead.
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// Another change is still in flight (its entry uncommitted, or a joint configuration in
    /// force).
    InProgress {
        /// The index of the configuration entry still in flight.
        index: LogIndex,
    },
    /// A leadership transfer is under way.
    LeadershipTransfer,
    /// The leader has not yet committed an entry of its own term, so it cannot know whether an
    /// earlier leader's change is still in flight.
    NotReady,
    /// The replica is already a member.
    AlreadyMember(NodeId),
    /// The replica is not a member.
    NotMember(NodeId),
    /// The replica is not a learner.
    NotLearner(NodeId),
    /// A new voter must first be added as a learner and catch up.
    NotLearnerYet(NodeId),
    /// The change would leave no voter.
    LastVoter,
    /// The learner is too far behind the leader to become a voter.
    LearnerBehind {
        /// The learner.
        id: NodeId,
        /// How many entries behind.
        behind: u64,
        /// The most allowed.
        allowed: u64,
    },
    /// The leader has not heard from the learner lately: what it knows of it may be stale.
    LearnerSilent {
        /// The learner.
        id: NodeId,
        /// Ticks since the leader last heard from it (`None`: not in this term).
        silent_ticks: Option<u64>,
    },
    /// The resulting configuration is not valid.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NotLeader { leader: Some(leader) } => {
                write!(f, "this replica does not lead; replica {leader} does")
            }
            ConfigError::NotLeader { leader: None } => {
                write!(f, "this replica does not lead, and no leader is known")
            }
            ConfigError::InProgress { index } => write!(
                f,
                "the configuration change at index {index} is still in progress; one change at \
                 a time"
            ),
            ConfigError::LeadershipTransfer => {
                write!(f, "a leadership transfer is under way; try again when it ends")
            }
            ConfigError::NotReady => write!(
                f,
                "the leader has not committed an entry of its term yet; try again in a moment"
            ),
            ConfigError::AlreadyMember(id) => write!(f, "replica {id} is already a member"),
            ConfigError::NotMember(id) => write!(f, "replica {id} is not a member"),
            ConfigError::NotLearner(id) => write!(f, "replica {id} is not a learner"),
            ConfigError::NotLearnerYet(id) => write!(
                f,
                "replica {id} is not a learner: add it as a learner first and promote it once \
                 it has caught up"
            ),
            ConfigError::LastVoter => {
                write!(f, "the change would leave the cluster without a voter")
            }
            ConfigError::LearnerBehind { id, behind, allowed } => write!(
                f,
                "learner {id} is {behind} entries behind the leader (at most {allowed} to be \
                 promoted); try again once it has caught up"
            ),
            ConfigError::LearnerSilent { id, silent_ticks: Some(ticks) } => write!(
                f,
                "the leader has not heard from learner {id} for {ticks} ticks, so what it knows \
                 of the learner may be stale; try again once the learner answers"
            ),
            ConfigError::LearnerSilent { id, silent_ticks: None } => write!(
                f,
                "the leader has not heard from learner {id} in its term yet; try again once the \
                 learner answers"
            ),
            ConfigError::Invalid(reason) => write!(f, "invalid configuration: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Node {
    /// Proposes a membership change (leader only). Returns where its entry was appended; it is
    /// in force from then on, and done when that entry commits (for a joint change, when the
    /// final configuration the leader then appends commits).
    pub fn propose_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<Proposed, ConfigError> {
        if self.role != Role::Leader {
            return Err(ConfigError::NotLeader { leader: self.leader });
        }
        if self.quarantined {
            return Err(ConfigError::NotLeader { leader: None });
        }
        if self.transfer_target.is_some() {
            return Err(ConfigError::LeadershipTransfer);
        }
        // Until an entry of this term commits, a change an earlier leader appended may yet
        // commit, unseen here: a second change could then decide with a disjoint majority
        // (the single-server change bug, Ongaro's raft-dev erratum).
        if self.log.term(self.commit) != Some(self.term) {
            return Err(ConfigError::NotReady);
        }
        if let Some(index) = self.config_in_flight() {
            return Err(ConfigError::InProgress { index });
        }
        let current = self.membership.clone();
        let target = self.target_of(&current, change)?;
        target.validate().map_err(ConfigError::Invalid)?;
        let changed_voters = current.voters.symmetric_difference(&target.voters).count();
        let next = if changed_voters <= 1 {
            target
        } else {
            Membership {
                voters: target.voters,
                voters_outgoing: current.voters,
                learners: target.learners,
            }
        };
        Ok(self.append_config(next))
    }

    /// The index of a configuration entry not yet committed, or of a joint configuration in
    /// force, if any: a change is in flight.
    pub fn config_in_flight(&self) -> Option<LogIndex> {
        let last = self.last_config_index();
        if last > self.commit || self.membership.is_joint() {
            Some(last)
        } else {
            None
        }
    }

    /// The index of the last configuration entry in the log (the snapshot point if none).
    pub fn last_config_index(&self) -> LogIndex {
        self.last_config.max(self.log.snapshot_index())
    }

    /// Finds the last configuration entry in the log again (after a truncation or a snapshot
    /// replaced entries); appends keep it current without a scan.
    pub(crate) fn find_last_config(&mut self) {
        self.last_config = self
            .log
            .entries()
            .filter(|entry| matches!(entry.payload, EntryPayload::Config(_)))
            .map(|entry| entry.index)
            .last()
            .unwrap_or(LogIndex::ZERO);
    }

    fn target_of(
        &self,
        current: &Membership,
        change: MembershipChange,
    ) -> Result<Membership, ConfigError> {
        let mut target = current.clone();
        match change {
            MembershipChange::AddLearner(id) => {
                if current.contains(id) {
                    return Err(ConfigError::AlreadyMember(id));
                }
                target.learners.insert(id);
            }
            MembershipChange::Promote(id) => {
                if !current.learners.contains(&id) {
                    return Err(ConfigError::NotLearner(id));
                }
                self.check_caught_up(id)?;
                target.learners.remove(&id);
                target.voters.insert(id);
            }
            MembershipChange::Remove(id) => {
                if !current.contains(id) {
                    return Err(ConfigError::NotMember(id));
                }
                target.learners.remove(&id);
                target.voters.remove(&id);
                if target.voters.is_empty() {
                    return Err(ConfigError::LastVoter);
                }
            }
            MembershipChange::SetVoters(voters) => {
                if voters.is_empty() {
                    return Err(ConfigError::LastVoter);
                }
                for id in voters.difference(&current.voters) {
                    if !current.learners.contains(id) {
                        return Err(ConfigError::NotLearnerYet(*id));
                    }
                    self.check_caught_up(*id)?;
                }
                target.learners = current.learners.difference(&voters).copied().collect();
                target.voters = voters;
            }
        }
        Ok(target)
    }

    /// A learner may become a voter only when it is alive, replicating, past the snapshot, and
    /// within `promotion_lag_max` entries of the leader, as it answered within the last
    /// [`PROMOTION_HEARD_HEARTBEATS`] heartbeat intervals. (What the leader knows of a learner
    /// it has not heard from lately may be stale: the learner may have restarted since with a
    /// damaged log set aside, and a voter short of entries it lost votes for almost no one. A
    /// leader cut off from the cluster would otherwise promote such a learner on old news,
    /// into a configuration in which no one can be elected.)
    fn check_caught_up(&self, id: NodeId) -> Result<(), ConfigError> {
        let allowed = self.config.promotion_lag_max;
        let last = self.log.last_index().get();
        let Some(progress) = self.progress.get(&id) else {
            return Err(ConfigError::LearnerBehind { id, behind: last, allowed });
        };
        let behind = last.saturating_sub(progress.match_index.get());
        let window =
            self.config.heartbeat_interval_ticks.saturating_mul(PROMOTION_HEARD_HEARTBEATS);
        let silent_ticks = progress.heard_tick.map(|tick| self.tick_count.saturating_sub(tick));
        if silent_ticks.is_none_or(|ticks| ticks > window) {
            return Err(ConfigError::LearnerSilent { id, silent_ticks });
        }
        let replicating = progress.state == crate::progress::ProgressState::Replicate
            && progress.recent_active
            && progress.match_index > LogIndex::ZERO
            && progress.match_index >= self.log.snapshot_index();
        if behind > allowed || !replicating {
            return Err(ConfigError::LearnerBehind { id, behind, allowed });
        }
        Ok(())
    }

    fn append_config(&mut self, membership: Membership) -> Proposed {
        let index = self.log.last_index().next();
        let entry = Entry { term: self.term, index, payload: EntryPayload::Config(membership) };
        self.append_to_log(entry);
        if self.is_single_voter() {
            self.maybe_commit();
        }
        Proposed { term: self.term, first_index: index, last_index: index }
    }

    /// After the commit index advanced on a leader: leave a committed joint configuration, or
    /// step down if a committed configuration no longer has this replica as a voter.
    pub(crate) fn after_commit_advanced(&mut self) {
        // (A caretaker leaves configuration changes to the leader it hands over to.)
        if self.role != Role::Leader || self.last_config_index() > self.commit || self.quarantined {
            return;
        }
        if self.membership.is_joint() {
            let finished = Membership {
                voters: self.membership.voters.clone(),
                voters_outgoing: BTreeSet::new(),
                learners: self.membership.learners.clone(),
            };
            self.append_config(finished);
            return;
        }
        if !self.membership.voters.contains(&self.config.id) {
            self.hand_over_and_step_down();
        }
    }

    /// This leader is no longer a voter: tell the most caught-up voter to campaign at once, and
    /// step down.
    fn hand_over_and_step_down(&mut self) {
        let last_index = self.log.last_index();
        let best = self
            .membership
            .voters
            .iter()
            .filter_map(|id| self.progress.get(id).map(|progress| (progress.match_index, *id)))
            .max();
        // Tell everyone the commit index first: the configuration that removed this leader is
        // committed, and followers should know it.
        self.broadcast_heartbeat();
        if let Some((matched, id)) = best {
            if matched == last_index {
                self.send(id, MessageBody::TimeoutNow);
            }
        }
        let term = self.term;
        self.become_follower(term, None);
    }
}
