//! Leader election: timeouts, pre-vote, votes, roles, check-quorum and leadership transfer.
//!
//! See `docs/election.md`. The rules, with the paper sections they follow:
//! - a follower that hears nothing for a randomized election timeout campaigns (§5.2);
//! - with pre-vote it first asks whether it could win, without raising its term, so that a
//!   replica returning from a partition cannot depose a healthy leader (dissertation §9.6);
//! - a vote is granted at most once per term, and only to a candidate whose log is at least
//!   as up to date (§5.4.1); the vote is durable before the answer leaves;
//! - with check-quorum a leader that has not heard from a quorum for an election timeout
//!   steps down, and a follower that hears from a leader refuses to vote for an election
//!   timeout (dissertation §6.2 and §4.2.3);
//! - leadership transfer brings the target up to date and sends it timeout-now (§3.10).

use crate::membership::Membership;
use crate::membership::VoteResult;
use crate::message::{MessageBody, VoteRequest, VoteResponse};
use crate::node::Node;
use crate::output::{Event, ReadError, RejectReason};
use crate::progress::Progress;
use crate::types::{Entry, EntryPayload, LogIndex, NodeId, Role, Term};

impl Node {
    /// Whether this replica still hears from a leader, so vote requests should be ignored.
    pub(crate) fn in_lease(&self) -> bool {
        if !self.config.check_quorum {
            return false;
        }
        let timeout = self.config.election_timeout_ticks_min;
        let heard_from_leader = self.leader.is_some() && self.election_elapsed < timeout;
        // With lease reads a restarted replica cannot know whether it promised not to vote
        // before it crashed, so it keeps the promise for its first election timeout.
        let lease_reads = matches!(self.config.read_mode, crate::config::ReadMode::Lease { .. });
        heard_from_leader || (lease_reads && self.tick_count < timeout)
    }

    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        // Who may stand is `may_campaign`'s to say. Everyone keeps counting: once it has not
        // heard from a leader for an election timeout it no longer holds the leader's lease,
        // and grants votes that may be needed. A replica that is not a voter of its own
        // configuration (a learner, or one an uncommitted configuration removes) always asks
        // for pre-votes first, so it cannot raise anyone's term in vain.
        if self.election_elapsed >= self.randomized_election_timeout
            && self.may_campaign()
            && !self.quarantine_holds()
            && !self.holds_for_lost_entries()
        {
            self.election_elapsed = 0;
            let pre_vote = self.config.pre_vote || !self.membership.is_voter(self.config.id);
            self.campaign(pre_vote, false);
        }
    }

    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_timeout_ticks_min {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                let id = self.config.id;
                let progress = &self.progress;
                let active = |member: NodeId| {
                    member == id || progress.get(&member).is_some_and(|p| p.recent_active)
                };
                if !self.deciding_membership().is_quorum(&active) {
                    self.become_follower(self.term, None);
                    return;
                }
                for progress in self.progress.values_mut() {
                    progress.recent_active = false;
                }
            }
        }
        if self.transfer_target.is_some() {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_timeout_ticks_min {
                if let Some(target) = self.transfer_target.take() {
                    self.output.events.push(Event::TransferAborted { target, reason: "timed out" });
                }
            }
        }
        self.hand_over_as_caretaker();
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Starts an election: a pre-vote round if `pre_vote`, else a real one. `transfer` marks
    /// vote requests as asked for by the old leader.
    pub(crate) fn campaign(&mut self, pre_vote: bool, transfer: bool) {
        if !self.may_campaign() || self.quarantine_holds() || self.holds_for_lost_entries() {
            return;
        }
        let (term, body): (Term, fn(VoteRequest) -> MessageBody) = if pre_vote {
            self.reset(self.term);
            self.stats.pre_votes_started += 1;
            self.set_role(Role::PreCandidate);
            self.set_leader(None);
            (self.term.next(), MessageBody::PreVote)
        } else {
            self.reset(self.term.next());
            self.vote = Some(self.config.id);
            self.set_role(Role::Candidate);
            self.set_leader(None);
            self.stats.elections_started += 1;
            (self.term, MessageBody::Vote)
        };
        self.votes.insert(self.config.id, true);
        if self.deciding_membership().vote_result(&self.votes) == VoteResult::Won {
            // A single voter wins at once.
            if pre_vote {
                self.campaign(false, transfer);
            } else {
                self.become_leader();
            }
            return;
        }
        let request = VoteRequest {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            leadership_transfer: transfer,
        };
        // Learners are asked too (their answers count for nothing): one that was made a voter
        // by a configuration this candidate has not received yet learns the term, and a
        // voter that never hears of the terms of candidates behind on the configuration would
        // campaign a term behind them for ever.
        for voter in self.membership.members() {
            if voter == self.config.id {
                continue;
            }
            if pre_vote {
                // A pre-vote promises nothing and may leave at once.
                self.send_with_term(voter, term, body(request.clone()));
            } else {
                // Our term and vote for ourselves must be durable before we ask.
                self.send_after_persist(voter, body(request.clone()));
            }
        }
    }

    /// Whether a quarantine keeps this replica out of elections. It does while the others can
    /// hold one without it; once no leader has been heard of for two full election timeouts,
    /// it votes and stands again (its log is sound: only what it applied is in doubt), so
    /// that quarantined replicas can never keep the cluster from electing a leader to repair
    /// them, even when one of them holds the longest log. Elected, it is a caretaker: it
    /// takes no requests and hands leadership to a voter as soon as one holds its log
    /// ([`Node::hand_over_as_caretaker`]).
    pub(crate) fn quarantine_holds(&self) -> bool {
        self.quarantined && self.leaderless_ticks < 2 * self.config.election_timeout_ticks_max
    }

    /// A quarantined leader's one task: bring a voter's log up to its own and hand leadership
    /// over (a leadership transfer, so proposals are refused meanwhile; answers from its
    /// state are refused by the driver anyway). The target is the most caught-up voter other
    /// than the one tried last; a transfer that times out is followed by another.
    pub(crate) fn hand_over_as_caretaker(&mut self) {
        if self.role != Role::Leader || !self.quarantined || self.transfer_target.is_some() {
            return;
        }
        let id = self.config.id;
        let last = self.caretaker_target;
        let target = self
            .membership
            .all_voters()
            .iter()
            .filter(|voter| **voter != id)
            .map(|voter| {
                let matched = self.progress.get(voter).map_or(LogIndex::ZERO, |p| p.match_index);
                (Some(*voter) != last, matched, std::cmp::Reverse(*voter))
            })
            .max()
            .map(|(_, _, std::cmp::Reverse(voter))| voter);
        if let Some(target) = target {
            self.caretaker_target = Some(target);
            self.start_transfer(target);
        }
    }

    /// Whether this replica may stand for election. A voter of the configuration in force
    /// may. So may one that the configuration in force removes (or makes a learner) while
    /// that configuration is not known to be committed, and a learner that has heard no
    /// leader for two full election timeouts: either may hold entries, a configuration among
    /// them, that the voters lack and cannot elect a leader without (a voter whose log is
    /// ahead refuses them, and a voter short of entries its storage lost refuses all but the
    /// newest logs), so without it the cluster could stay leaderless for good. As leader it
    /// counts only the votes and acknowledgements of the configuration's voters, and hands
    /// over once its configuration is committed, as a leader that removes itself does (a
    /// leader may manage a configuration it is not part of; Raft dissertation §4.2.2).
    /// Elections stay safe because votes are counted in the candidate's latest configuration,
    /// whether or not the candidate belongs to it. A replica whose removal it knows to be
    /// committed never stands.
    pub(crate) fn may_campaign(&self) -> bool {
        let id = self.config.id;
        if self.membership.is_voter(id) {
            return true;
        }
        let latest = self.last_config_index();
        if latest > self.commit && self.membership_before(latest).is_voter(id) {
            return true;
        }
        self.membership.learners.contains(&id)
            && self.leaderless_ticks >= 2 * self.config.election_timeout_ticks_max
    }

    /// The configuration in force just before the entry at `index`: the last configuration
    /// entry below it, else the snapshot's or bootstrap. (Walks back from `index`: asked only
    /// of a replica that an uncommitted configuration removes.)
    fn membership_before(&self, index: LogIndex) -> Membership {
        let mut at = index;
        while at > self.log.snapshot_index().next() {
            at = at.prev();
            if let Some(Entry { payload: EntryPayload::Config(membership), .. }) =
                self.log.entry(at)
            {
                return membership.clone();
            }
        }
        self.base_membership.clone()
    }

    pub(crate) fn on_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        request: &VoteRequest,
        pre_vote: bool,
    ) {
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term)
            || crate::config::sabotaged!(self.config, VoteTwice);
        let up_to_date = self.log.is_up_to_date(request.last_log_index, request.last_log_term)
            || crate::config::sabotaged!(self.config, IgnoreLogUpToDate);
        // A quarantined replica stays out of elections while the others can hold one without
        // it (`quarantine_holds`), except to elect the replica it hands leadership to.
        let quarantine_holds = self.quarantine_holds() && !request.leadership_transfer;
        // A replica whose storage lost entries it may have acknowledged votes, until its log
        // holds that far again, only for a candidate whose last entry is of a later term than
        // any of those entries: a leader may have counted the acknowledgements, and a
        // candidate lacking what they committed must not win with this replica's help. A log
        // ending in a later term holds every entry committed in earlier terms (Raft §5.4.3:
        // its last entry came from a leader that held them, and log matching gives the
        // rest). Without that exception, replicas short of entries together with a removed
        // one could keep a cluster from ever electing a leader. (Unlike the quarantine this
        // has no release: it is what keeps committed entries.)
        let lost_holds = self.holds_for_lost_entries()
            && self.lost_term_max.is_none_or(|term| request.last_log_term <= term);
        let granted = can_vote && up_to_date && !quarantine_holds && !lost_holds;
        let response = VoteResponse { granted };
        if pre_vote {
            // A granted pre-vote answers in the term it was asked about; a refusal in ours, so
            // a candidate behind us learns the newer term.
            let reply_term = if granted { term } else { self.term };
            self.send_with_term(from, reply_term, MessageBody::PreVoteResponse(response));
        } else {
            // (The double-voting sabotage grants without recording a second vote.)
            if granted
                && (self.vote.is_none() || !crate::config::sabotaged!(self.config, VoteTwice))
            {
                self.vote = Some(from);
                self.election_elapsed = 0;
            }
            self.send_after_persist(from, MessageBody::VoteResponse(response));
        }
    }

    pub(crate) fn on_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        granted: bool,
        pre_vote: bool,
    ) {
        let expected = match (self.role, pre_vote) {
            (Role::PreCandidate, true) => {
                (granted && term == self.term.next()) || (!granted && term == self.term)
            }
            (Role::Candidate, false) => term == self.term,
            // Late answers to an election that is already decided.
            _ => false,
        };
        if !expected || !self.membership.is_voter(from) {
            return;
        }
        // A voter grants at most once a term: a refusal after its grant is the late answer to
        // a request of an earlier term (refused in this one), and changes nothing.
        if !granted && self.votes.get(&from) == Some(&true) {
            return;
        }
        self.votes.insert(from, granted);
        match self.deciding_membership().vote_result(&self.votes) {
            VoteResult::Won if pre_vote => self.campaign(false, false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    pub(crate) fn on_timeout_now(&mut self, from: NodeId) {
        if self.role == Role::Leader
            || self.leader != Some(from)
            || !self.membership.is_voter(self.config.id)
            || self.quarantined
            || self.holds_for_lost_entries()
        {
            self.reject_from(from, "TimeoutNow", RejectReason::Unexpected);
            return;
        }
        self.campaign(false, true);
    }

    /// Handles contact from the leader of the current term (append, heartbeat, snapshot).
    /// Returns false if the message must be ignored.
    pub(crate) fn accept_leader_contact(&mut self, from: NodeId, kind: &'static str) -> bool {
        match self.role {
            Role::Leader => {
                // Two leaders in one term cannot happen; refuse rather than corrupt anything.
                self.reject_from(from, kind, RejectReason::Unexpected);
                return false;
            }
            Role::Candidate | Role::PreCandidate => self.become_follower(self.term, Some(from)),
            Role::Follower => match self.leader {
                Some(leader) if leader != from => {
                    // A second leader for the same term: refuse it.
                    self.reject_from(from, kind, RejectReason::Unexpected);
                    return false;
                }
                _ => self.set_leader(Some(from)),
            },
        }
        self.election_elapsed = 0;
        self.leaderless_ticks = 0;
        true
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.set_role(Role::Follower);
        self.set_leader(leader);
    }

    pub(crate) fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate, "only a candidate becomes leader");
        self.reset(self.term);
        self.set_role(Role::Leader);
        self.set_leader(Some(self.config.id));
        self.stats.terms_led += 1;
        let next_index = self.log.last_index().next();
        for member in self.membership.members() {
            if member == self.config.id {
                continue;
            }
            let mut progress = Progress::new(next_index, self.membership.is_voter(member));
            // Give every follower a full election timeout before check-quorum counts it.
            progress.recent_active = true;
            self.progress.insert(member, progress);
        }
        // A no-op at the start of the term: committing it commits everything before it
        // (§5.4.2) and tells the leader its commit index (needed for read-index, §6.4).
        let noop =
            crate::types::Entry { term: self.term, index: next_index, payload: EntryPayload::Noop };
        self.append_to_log(noop);
        if self.is_single_voter() {
            self.maybe_commit();
        }
        self.hand_over_as_caretaker();
    }

    /// Moves to `term` (forgetting the vote if it is newer) and clears per-role state.
    pub(crate) fn reset(&mut self, term: Term) {
        assert!(term >= self.term, "terms never go backwards");
        if term > self.term {
            self.term = term;
            self.vote = None;
            // Reads forwarded in an older term will get no answer.
            self.fail_forwarded_reads();
        }
        self.lease_revoked = false;
        let was_leader = self.role == Role::Leader;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_timeout = self
            .rng
            .range(self.config.election_timeout_ticks_min, self.config.election_timeout_ticks_max);
        self.votes.clear();
        self.progress.clear();
        self.uncommitted_bytes = 0;
        if let Some(target) = self.transfer_target.take() {
            self.output.events.push(Event::TransferAborted { target, reason: "role changed" });
        }
        if was_leader {
            self.fail_leader_reads(ReadError::LeaderChanged);
        }
    }

    pub(crate) fn set_role(&mut self, role: Role) {
        self.role = role;
        if self.role_reported != (role, self.term) {
            self.role_reported = (role, self.term);
            self.output.events.push(Event::RoleChanged { role, term: self.term });
        }
    }

    pub(crate) fn set_leader(&mut self, leader: Option<NodeId>) {
        if self.leader == leader {
            return;
        }
        self.leader = leader;
        self.output.events.push(Event::LeaderChanged { leader, term: self.term });
        self.fail_forwarded_reads();
    }

    pub(crate) fn start_transfer(&mut self, target: NodeId) {
        let abort = |node: &mut Node, reason: &'static str| {
            node.output.events.push(Event::TransferAborted { target, reason });
        };
        if self.role != Role::Leader {
            return abort(self, "not the leader");
        }
        if target == self.config.id {
            return;
        }
        if !self.membership.is_voter(target) {
            return abort(self, "target is not a voter");
        }
        if let Some(current) = self.transfer_target {
            if current == target {
                return;
            }
            if self.lease_revoked {
                // Timeout-now already went to `current`; a second target would only split
                // the vote.
                return abort(self, "another transfer is completing");
            }
            self.output
                .events
                .push(Event::TransferAborted { target: current, reason: "superseded" });
        }
        self.transfer_target = Some(target);
        // The transfer must finish within one election timeout.
        self.transfer_elapsed = 0;
        if !self.maybe_send_timeout_now(target) {
            self.nudge_follower(target);
        }
    }

    /// Sends timeout-now to the transfer target once its log matches ours.
    pub(crate) fn maybe_send_timeout_now(&mut self, target: NodeId) -> bool {
        if self.transfer_target != Some(target) {
            return false;
        }
        let caught_up =
            self.progress.get(&target).is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send(target, MessageBody::TimeoutNow);
            // Voters will now vote for the target even though they promised us not to.
            self.lease_revoked = true;
        }
        caught_up
    }
}
