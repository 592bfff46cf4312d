//! Log replication: the leader's appends and heartbeats, the follower's log repair, and the
//! commit rule.
//!
//! See `docs/replication.md`. The rules, with the paper sections they follow:
//! - an append carries the `(index, term)` of the entry before its first entry; a follower
//!   accepts it only if its log holds that entry (the log matching property, §5.3);
//! - on a conflict the follower removes the conflicting entry and everything after it, and
//!   never a committed entry;
//! - a rejection carries a hint (the follower's last index whose term is at most the probe's)
//!   so the leader skips a whole term per round trip instead of one entry;
//! - the leader commits an entry only by counting replicas of an entry of its own term (§5.4.2,
//!   figure 8), and counts itself only for what its own disk has made durable;
//! - appends are pipelined per follower, bounded by messages and bytes in flight; new
//!   proposals are sent when the output is drained, so a burst of proposals leaves in one
//!   append.

use crate::message::{
    AppendRequest, AppendResponse, Heartbeat, HeartbeatResponse, LostCheck, MessageBody,
};
use crate::node::Node;
use crate::output::{Event, RejectReason};
use crate::progress::ProgressState;
use crate::types::{LogIndex, NodeId, Role, Term};

impl Node {
    /// Sends whatever each follower is ready for: new entries, probes, commit updates and a
    /// pending read round.
    pub(crate) fn flush_leader(&mut self) {
        let followers: Vec<NodeId> = self.progress.keys().copied().collect();
        if self.reads.broadcast_needed {
            self.broadcast_heartbeat();
        }
        for follower in followers {
            self.flush_follower(follower);
        }
    }

    fn flush_follower(&mut self, to: NodeId) {
        let last_index = self.log.last_index();
        let mut sent_any = false;
        // Each pass sends one append; the in-flight limit bounds the loop.
        for _ in 0..=self.config.messages_in_flight_max {
            let Some(progress) = self.progress.get(&to) else { return };
            if progress
                .is_paused(self.config.messages_in_flight_max, self.config.bytes_in_flight_max)
            {
                break;
            }
            let must_send = match progress.state {
                // A probe is worth sending while we do not know the follower holds everything.
                ProgressState::Probe => progress.match_index < last_index,
                ProgressState::Replicate => progress.next_index <= last_index,
                ProgressState::Snapshot { .. } => false,
            };
            if !must_send {
                break;
            }
            if !self.send_append(to) {
                break;
            }
            sent_any = true;
        }
        if !sent_any {
            self.maybe_send_commit(to);
        }
    }

    /// Sends one append from the follower's next index. Returns whether one was sent.
    fn send_append(&mut self, to: NodeId) -> bool {
        let last_index = self.log.last_index();
        let commit = self.commit;
        let Some(progress) = self.progress.get(&to) else { return false };
        let prev_index = progress.next_index.prev();
        let Some(prev_term) = self.log.term(prev_index) else {
            self.need_snapshot(to);
            return false;
        };
        let entries = self.log.slice(progress.next_index, last_index, self.config.append_bytes_max);
        let bytes: u64 = entries.iter().map(|entry| entry.size_bytes()).sum();
        let last_sent = entries.last().map_or(prev_index, |entry| entry.index);
        let Some(progress) = self.progress.get_mut(&to) else { return false };
        match progress.state {
            ProgressState::Replicate => {
                progress.next_index = last_sent.next();
                progress.inflights.add(last_sent, bytes);
            }
            ProgressState::Probe => progress.probe_sent = true,
            ProgressState::Snapshot { .. } => return false,
        }
        progress.commit_sent = progress.commit_sent.max(commit.min(last_sent));
        let append = AppendRequest { prev_index, prev_term, entries, commit };
        self.send(to, MessageBody::Append(append));
        true
    }

    /// Tells a follower about a commit index it has not heard of, with a heartbeat (which
    /// cannot be rejected, unlike an empty append racing the pipeline).
    fn maybe_send_commit(&mut self, to: NodeId) {
        let commit = self.commit;
        let read_round = self.reads.round;
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let Some(progress) = self.progress.get_mut(&to) else { return };
        let commit_for_follower = commit.min(progress.match_index);
        if commit_for_follower <= progress.commit_sent {
            return;
        }
        progress.commit_sent = commit_for_follower;
        let lost_check =
            progress.lost_nonce.map(|nonce| LostCheck { nonce, last_index, last_term });
        let heartbeat = Heartbeat { commit: commit_for_follower, read_round, lost_check };
        self.send(to, MessageBody::Heartbeat(heartbeat));
    }

    /// Sends a heartbeat to every follower, opening a new read round.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        let round = self.reads.open_round(self.tick_count);
        let commit = self.commit;
        let followers: Vec<(NodeId, LogIndex, Option<u64>)> = self
            .progress
            .iter_mut()
            .map(|(id, progress)| {
                // Never tell a follower to commit beyond what it is known to hold.
                let commit_for_follower = commit.min(progress.match_index);
                progress.commit_sent = progress.commit_sent.max(commit_for_follower);
                (*id, commit_for_follower, progress.lost_nonce)
            })
            .collect();
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for (follower, commit_for_follower, lost_nonce) in followers {
            let lost_check = lost_nonce.map(|nonce| LostCheck { nonce, last_index, last_term });
            let heartbeat =
                Heartbeat { commit: commit_for_follower, read_round: round, lost_check };
            self.send(follower, MessageBody::Heartbeat(heartbeat));
        }
        if self.progress.is_empty() {
            // Nobody to ask: a single voter confirms its own rounds.
            self.advance_reads();
        }
    }

    pub(crate) fn on_append(&mut self, from: NodeId, append: AppendRequest) {
        if !self.accept_leader_contact(from, "Append") {
            return;
        }
        let mut append = append;
        if append.prev_index < self.commit {
            // Our log matches every later leader's up to our commit index (leader
            // completeness), so only entries after it are news. A duplicated or reordered
            // append can start earlier: check its overlap agrees, then trim it.
            let overlap_agrees = append
                .entries
                .iter()
                .take_while(|entry| entry.index <= self.commit)
                .all(|entry| self.log.term(entry.index).is_none_or(|term| term == entry.term));
            if !overlap_agrees {
                self.reject_from(from, "Append", RejectReason::ConflictsWithCommitted);
                return;
            }
            append.entries.retain(|entry| entry.index > self.commit);
            append.prev_index = self.commit;
            // The commit index is never below the snapshot point, so its term is known.
            append.prev_term = self.log.term(self.commit).unwrap_or_default();
            if append.entries.is_empty() {
                let response = AppendResponse::Accepted { match_index: self.commit };
                self.send_after_persist(from, MessageBody::AppendResponse(response));
                return;
            }
        }
        if !self.log.matches(append.prev_index, append.prev_term) {
            let hint_index = self.log.last_index_with_term_at_most(
                append.prev_index.min(self.log.last_index()),
                append.prev_term,
            );
            let hint_term = self.log.term(hint_index).unwrap_or_default();
            let response = AppendResponse::Rejected {
                rejected_index: append.prev_index,
                hint_index,
                hint_term,
                lost_entries: self.holds_for_lost_entries().then_some(self.lost_nonce),
            };
            self.send_after_persist(from, MessageBody::AppendResponse(response));
            return;
        }
        let last_new = append.prev_index.plus(append.entries.len() as u64);
        let conflict = append
            .entries
            .iter()
            .find(|entry| !self.log.matches(entry.index, entry.term))
            .map(|entry| entry.index);
        if let Some(conflict) = conflict {
            if conflict <= self.commit {
                self.reject_from(from, "Append", RejectReason::ConflictsWithCommitted);
                return;
            }
            if conflict <= self.log.last_index() {
                self.truncate_log(conflict);
            }
            let skip = (conflict.get() - append.prev_index.get() - 1) as usize;
            for entry in append.entries.into_iter().skip(skip) {
                self.append_to_log(entry);
            }
        }
        self.commit_to(append.commit.min(last_new));
        let response = AppendResponse::Accepted { match_index: last_new };
        self.send_after_persist(from, MessageBody::AppendResponse(response));
    }

    pub(crate) fn on_append_response(&mut self, from: NodeId, response: AppendResponse) {
        if self.role != Role::Leader {
            // A late answer from a term we led; nothing to do with it now.
            return;
        }
        let last_index = self.log.last_index();
        match response {
            AppendResponse::Accepted { match_index } => {
                if match_index > last_index {
                    self.reject_from(from, "AppendResponse", RejectReason::IndexOutOfRange);
                    return;
                }
                let tick = self.tick_count;
                let Some(progress) = self.progress.get_mut(&from) else { return };
                progress.heard(tick);
                if !progress.maybe_update(match_index) {
                    return;
                }
                match progress.state {
                    ProgressState::Probe => progress.become_replicate(),
                    ProgressState::Snapshot { pending_index } if match_index >= pending_index => {
                        progress.become_probe();
                        progress.become_replicate();
                    }
                    ProgressState::Snapshot { .. } => {}
                    ProgressState::Replicate => progress.inflights.free_up_to(match_index),
                }
                self.maybe_commit();
                self.maybe_send_timeout_now(from);
            }
            AppendResponse::Rejected { rejected_index, hint_index, hint_term, lost_entries } => {
                if let Some(nonce) = lost_entries {
                    self.on_follower_lost_entries(from, hint_index, hint_term, nonce);
                    if rejected_index > last_index {
                        // Sent unasked from the follower's own log, which may be longer.
                        return;
                    }
                }
                if rejected_index > last_index {
                    self.reject_from(from, "AppendResponse", RejectReason::IndexOutOfRange);
                    return;
                }
                let hint_next = self.log.last_index_with_term_at_most(hint_index, hint_term).next();
                let tick = self.tick_count;
                let Some(progress) = self.progress.get_mut(&from) else { return };
                progress.heard(tick);
                if progress.maybe_decrease(rejected_index, hint_next)
                    && progress.state == ProgressState::Replicate
                {
                    progress.become_probe();
                }
            }
        }
    }

    pub(crate) fn on_heartbeat(&mut self, from: NodeId, heartbeat: Heartbeat) {
        if !self.accept_leader_contact(from, "Heartbeat") {
            return;
        }
        // The leader caps the commit index at what we hold; a log that lost its unsynced tail
        // in a crash may hold less, so cap again.
        self.commit_to(heartbeat.commit.min(self.log.last_index()));
        if let Some(check) = heartbeat.lost_check {
            // The leader heard our notice from this run before it sent this, so its log then
            // held everything we had acknowledged to it. If our log is exactly its whole log
            // (log matching), we hold every entry our lost acknowledgements could commit.
            if self.lost_through.is_some()
                && check.nonce == self.lost_nonce
                && self.log.last_index() == check.last_index
                && self.log.term(check.last_index) == Some(check.last_term)
            {
                self.lost_through = None;
            }
        }
        if self.holds_for_lost_entries() {
            // Storage lost entries this replica had acknowledged: the leader may believe it
            // holds them, and an idle leader would then send nothing. Say what is held.
            let last_index = self.log.last_index();
            let response = AppendResponse::Rejected {
                rejected_index: last_index,
                hint_index: last_index,
                hint_term: self.log.last_term(),
                lost_entries: Some(self.lost_nonce),
            };
            self.send_after_persist(from, MessageBody::AppendResponse(response));
        }
        // After the notice: on one connection, the leader learns that its news of this
        // replica is stale before it hears from it again (it promotes a learner only on
        // fresh news).
        let response = HeartbeatResponse { read_round: heartbeat.read_round };
        self.send_after_persist(from, MessageBody::HeartbeatResponse(response));
    }

    /// Leader: `from` says its storage lost entries it had acknowledged and that its log holds
    /// (at most) through `held`, of term `held_term` there. Its earlier acknowledgements beyond
    /// that no longer say what it holds: lower its match to `held` (to nothing if our logs
    /// differ there) and probe from there. (What was committed stays committed; the follower
    /// keeps out of elections until it holds those entries again.)
    fn on_follower_lost_entries(
        &mut self,
        from: NodeId,
        held: LogIndex,
        held_term: Term,
        nonce: u64,
    ) {
        let agrees = self.log.term(held) == Some(held_term);
        let last_index = self.log.last_index();
        let tick = self.tick_count;
        let Some(progress) = self.progress.get_mut(&from) else { return };
        progress.heard(tick);
        progress.lost_nonce = Some(nonce);
        if (agrees && held >= progress.match_index)
            || matches!(progress.state, ProgressState::Snapshot { .. })
        {
            return;
        }
        let matched = if agrees { held.min(progress.match_index) } else { LogIndex::ZERO };
        progress.match_index = matched;
        progress.commit_sent = progress.commit_sent.min(matched);
        progress.match_at_last_heartbeat = progress.match_at_last_heartbeat.min(matched);
        progress.become_probe();
        // Probe right after what it holds; fast backtracking finds where the logs agree.
        progress.next_index = held.min(last_index).next().max(matched.next());
    }

    pub(crate) fn on_heartbeat_response(&mut self, from: NodeId, response: HeartbeatResponse) {
        if self.role != Role::Leader {
            return;
        }
        if response.read_round > self.reads.round {
            self.reject_from(from, "HeartbeatResponse", RejectReason::IndexOutOfRange);
            return;
        }
        let tick = self.tick_count;
        let Some(progress) = self.progress.get_mut(&from) else { return };
        progress.heard(tick);
        progress.read_round_acked = progress.read_round_acked.max(response.read_round);
        self.nudge_follower_on_heartbeat(from);
        self.advance_reads();
    }

    /// The follower answered a heartbeat: if it seems to have lost appends, catch it up.
    fn nudge_follower_on_heartbeat(&mut self, to: NodeId) {
        let (messages_max, bytes_max) =
            (self.config.messages_in_flight_max, self.config.bytes_in_flight_max);
        let Some(progress) = self.progress.get_mut(&to) else { return };
        // Appends still in flight may simply be slower than the heartbeat: only when the
        // follower has acknowledged nothing new since its last heartbeat answer, or the
        // pipeline is full, is a loss likely enough to act on.
        let stalled = progress.match_index == progress.match_at_last_heartbeat
            || progress.inflights.is_full(messages_max, bytes_max);
        progress.match_at_last_heartbeat = progress.match_index;
        if stalled || progress.state != ProgressState::Replicate {
            self.nudge_follower(to);
        }
    }

    /// The follower is alive but may have lost appends: make sure it is caught up.
    pub(crate) fn nudge_follower(&mut self, to: NodeId) {
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&to) else { return };
        match progress.state {
            // A lost probe may be retried.
            ProgressState::Probe => progress.probe_sent = false,
            // An empty append after the last one sent costs little: the follower accepts it
            // if it has everything, or rejects it and the leader falls back to probing from
            // the last match.
            ProgressState::Replicate if progress.match_index < last_index => {
                self.send_empty_append(to);
            }
            _ => {}
        }
    }

    /// Sends an append with no entries after the last index sent, outside flow control.
    /// The entries follower `to` needs are compacted: only a snapshot helps.
    fn need_snapshot(&mut self, to: NodeId) {
        let snapshot_index = self.log.snapshot_index();
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.become_snapshot(snapshot_index);
        }
        self.output.events.push(Event::SnapshotNeeded { to, index: snapshot_index });
    }

    fn send_empty_append(&mut self, to: NodeId) {
        let Some(progress) = self.progress.get(&to) else { return };
        let prev_index = progress.next_index.prev();
        let Some(prev_term) = self.log.term(prev_index) else {
            self.need_snapshot(to);
            return;
        };
        let commit = self.commit;
        let append = AppendRequest { prev_index, prev_term, entries: Vec::new(), commit };
        self.send(to, MessageBody::Append(append));
    }

    /// Advances the commit index to what a quorum holds, if that entry is of this term.
    pub(crate) fn maybe_commit(&mut self) {
        let id = self.config.id;
        let persisted = self.persisted_index;
        let progress = &self.progress;
        let acknowledged = |member: NodeId| {
            if member == id {
                persisted
            } else {
                progress.get(&member).map_or(LogIndex::ZERO, |p| p.match_index)
            }
        };
        let quorum_index = self.deciding_membership().committed_index(&acknowledged);
        if quorum_index <= self.commit {
            return;
        }
        // Figure 8: an entry of an earlier term is never committed by counting replicas; it
        // commits when an entry of this term after it does.
        if self.log.term(quorum_index) != Some(self.term)
            && !crate::config::sabotaged!(self.config, CommitPreviousTerm)
        {
            return;
        }
        let previous = self.commit;
        self.commit_to(quorum_index);
        let committed_bytes = self.log.size_bytes_between(previous.next(), quorum_index);
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(committed_bytes);
        if self.log.term(previous) != Some(self.term) {
            // The first commit of this term: reads held back until now can proceed.
            self.on_first_commit_in_term();
        }
        self.after_commit_advanced();
    }

    pub(crate) fn commit_to(&mut self, index: LogIndex) {
        if index > self.commit {
            assert!(index <= self.log.last_index(), "commit {index} beyond the log");
            self.commit = index;
        }
    }
}

/// Checks an append's entries are consecutive after `prev_index`, with terms that never go
/// backwards, start no lower than `prev_term` and never exceed the message's term.
pub(crate) fn append_is_well_formed(
    append: &AppendRequest,
    message_term: crate::types::Term,
) -> bool {
    if append.prev_term > message_term {
        return false;
    }
    let last_index = append.prev_index.get().checked_add(append.entries.len() as u64);
    if last_index.is_none_or(|last| last > crate::node::VALUE_MAX) {
        return false;
    }
    let mut previous = (append.prev_index, append.prev_term);
    for entry in &append.entries {
        if entry.index != previous.0.next() || entry.term < previous.1 || entry.term > message_term
        {
            return false;
        }
        previous = (entry.index, entry.term);
    }
    true
}
