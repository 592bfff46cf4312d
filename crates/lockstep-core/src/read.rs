//! Linearizable reads without writing to the log: read-index, and lease reads as an opt-in.
//!
//! See `docs/reads.md`. Read-index (Raft dissertation §6.4):
//! 1. the leader waits until it has committed an entry of its own term, so that its commit
//!    index is at least that of any earlier leader;
//! 2. it records its commit index as the read index;
//! 3. it confirms it is still the leader: a quorum acknowledges a heartbeat sent after the
//!    read arrived (reads that arrive together share one heartbeat round);
//! 4. once the state machine has applied up to the read index, the read is served.
//!
//! A follower forwards the read to the leader, gets the read index back, and serves the read
//! locally once it has applied that far. A lease read skips step 3 while the leader holds a
//! lease: see [`crate::ReadMode::Lease`] for the clock assumption it rests on.

use std::collections::{BTreeMap, VecDeque};

use crate::config::ReadMode;
use crate::message::{MessageBody, ReadIndexRequest, ReadIndexResponse};
use crate::node::{Node, VALUE_MAX};
use crate::output::{Event, ReadError, ReadReady};
use crate::types::{LogIndex, NodeId, ReadId, Role, Term};

/// How many heartbeat rounds' send times a leader remembers for its lease.
const ROUNDS_TRACKED_MAX: usize = 1024;

/// A confirmed read fails if the state machine has not reached its index within this many
/// election timeouts (the replica is cut off, or far behind).
const APPLY_WAIT_ELECTION_TIMEOUTS_MAX: u64 = 4;

/// Who asked for a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadOrigin {
    /// A client of this replica, with its id for the read.
    Local(ReadId),
    /// A follower that forwarded its client's read, with the follower's request number.
    Remote {
        /// The follower.
        follower: NodeId,
        /// The follower's number for the request.
        request: u64,
    },
}

/// A read waiting for its heartbeat round to be acknowledged by a quorum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingRead {
    pub origin: ReadOrigin,
    pub index: LogIndex,
    pub round: u64,
}

/// A read a follower forwarded to the leader.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForwardedRead {
    pub id: ReadId,
    /// The term it was sent in: an answer from another term is not for it.
    pub term: Term,
    pub sent_tick: u64,
}

/// A confirmed read waiting for the state machine to reach its index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConfirmedRead {
    pub read: ReadReady,
    pub confirmed_tick: u64,
}

/// Every read the replica is working on.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReadState {
    /// The latest heartbeat round opened. Never reset, so an answer to an old round can never
    /// confirm a newer read.
    pub round: u64,
    /// When recent rounds were opened: `(round, tick)`, oldest first.
    pub round_sent_ticks: VecDeque<(u64, u64)>,
    /// Reads are waiting for a round that has not been broadcast yet.
    pub broadcast_needed: bool,
    /// Leader: reads waiting for their round, in round order.
    pub pending: VecDeque<PendingRead>,
    /// Leader: reads waiting for the first commit of the term.
    pub awaiting_commit: Vec<ReadOrigin>,
    /// Follower: the number of the next forwarded read. Numbers are never reused, so a late
    /// answer can never be taken for another read, even one with the caller's same id. The
    /// first number is drawn from the seed, so a restarted replica (given a new seed) does not
    /// reuse its numbers either.
    pub next_request: u64,
    /// Follower: reads forwarded to the leader, by request number.
    pub forwarded: BTreeMap<u64, ForwardedRead>,
    /// Confirmed reads waiting for the state machine to reach their index.
    pub confirmed: VecDeque<ConfirmedRead>,
}

impl ReadState {
    /// Opens a new heartbeat round at `tick` and returns its number.
    pub fn open_round(&mut self, tick: u64) -> u64 {
        self.round += 1;
        self.round_sent_ticks.push_back((self.round, tick));
        while self.round_sent_ticks.len() > ROUNDS_TRACKED_MAX {
            self.round_sent_ticks.pop_front();
        }
        self.broadcast_needed = false;
        self.round
    }

    /// Reads in any stage.
    pub fn total(&self) -> usize {
        self.pending.len()
            + self.awaiting_commit.len()
            + self.forwarded.len()
            + self.confirmed.len()
    }
}

impl Node {
    pub(crate) fn start_read(&mut self, id: ReadId) {
        if self.reads.total() >= self.config.pending_reads_max {
            return self.reject_read(ReadOrigin::Local(id), ReadError::TooManyPending);
        }
        match (self.role, self.leader) {
            (Role::Leader, _) => self.leader_read(ReadOrigin::Local(id)),
            (_, Some(leader)) => {
                let request = self.reads.next_request;
                self.reads.next_request = request.wrapping_add(1);
                let forwarded = ForwardedRead { id, term: self.term, sent_tick: self.tick_count };
                self.reads.forwarded.insert(request, forwarded);
                self.send(leader, MessageBody::ReadIndex(ReadIndexRequest { request }));
            }
            (_, None) => self.reject_read(ReadOrigin::Local(id), ReadError::NoLeader),
        }
    }

    fn leader_read(&mut self, origin: ReadOrigin) {
        if self.transfer_target.is_some() || self.quarantined {
            return self.reject_read(origin, ReadError::LeadershipTransfer);
        }
        if self.log.term(self.commit) != Some(self.term) {
            // Until an entry of this term commits, our commit index may lag an earlier
            // leader's: wait.
            self.reads.awaiting_commit.push(origin);
            return;
        }
        let index = self.commit;
        if self.is_single_voter()
            || self.lease_is_valid()
            || crate::config::sabotaged!(self.config, ReadWithoutQuorum)
        {
            return self.confirm_read(origin, index);
        }
        let round = self.reads.round + 1;
        self.reads.pending.push_back(PendingRead { origin, index, round });
        self.reads.broadcast_needed = true;
    }

    pub(crate) fn on_read_index_request(&mut self, from: NodeId, request: u64) {
        let origin = ReadOrigin::Remote { follower: from, request };
        if self.role != Role::Leader {
            return self.reject_read(origin, ReadError::LeaderChanged);
        }
        if self.reads.total() >= self.config.pending_reads_max {
            return self.reject_read(origin, ReadError::TooManyPending);
        }
        self.leader_read(origin);
    }

    pub(crate) fn on_read_index_response(&mut self, from: NodeId, response: ReadIndexResponse) {
        if self.leader != Some(from) {
            // An answer from a former leader: the read was failed over when the leader changed.
            return;
        }
        let Some(forwarded) = self.reads.forwarded.remove(&response.request) else {
            // Already answered, timed out or failed over.
            return;
        };
        if forwarded.term != self.term {
            return self.reject_read(ReadOrigin::Local(forwarded.id), ReadError::LeaderChanged);
        }
        match response.index {
            Some(index) if index.get() <= VALUE_MAX => {
                let read = ReadReady { id: forwarded.id, index };
                let confirmed_tick = self.tick_count;
                self.reads.confirmed.push_back(ConfirmedRead { read, confirmed_tick });
            }
            _ => self.reject_read(ReadOrigin::Local(forwarded.id), ReadError::LeaderChanged),
        }
    }

    /// Confirms the reads whose round a quorum has acknowledged.
    pub(crate) fn advance_reads(&mut self) {
        let quorum_round = self.quorum_read_round();
        while let Some(read) = self.reads.pending.front().copied() {
            if read.round > quorum_round {
                break;
            }
            self.reads.pending.pop_front();
            self.confirm_read(read.origin, read.index);
        }
        // Rounds older than the quorum's are never needed again (the lease uses the newest).
        while self.reads.round_sent_ticks.len() > 1
            && self.reads.round_sent_ticks.get(1).is_some_and(|(round, _)| *round <= quorum_round)
        {
            self.reads.round_sent_ticks.pop_front();
        }
    }

    /// The newest round a quorum (counting this leader) has acknowledged.
    fn quorum_read_round(&self) -> u64 {
        let id = self.config.id;
        let progress = &self.progress;
        self.deciding_membership().quorum_value(&|member| {
            if member == id {
                u64::MAX
            } else {
                progress.get(&member).map_or(0, |p| p.read_round_acked)
            }
        })
    }

    /// Whether the leader may serve reads without a heartbeat round now.
    fn lease_is_valid(&self) -> bool {
        let ReadMode::Lease { clock_drift_ticks_max } = self.config.read_mode else {
            return false;
        };
        if self.transfer_target.is_some() || self.lease_revoked {
            return false;
        }
        let quorum_round = self.quorum_read_round();
        let Some((_, sent_tick)) =
            self.reads.round_sent_ticks.iter().find(|(round, _)| *round == quorum_round)
        else {
            return false;
        };
        // Followers that acknowledged the round refuse votes for at least
        // `election_timeout_ticks_min` of their ticks after receiving it, which was no
        // earlier than `sent_tick`; allow for their clocks running fast.
        let lease_end = sent_tick + self.config.election_timeout_ticks_min - clock_drift_ticks_max;
        self.tick_count < lease_end
    }

    pub(crate) fn on_first_commit_in_term(&mut self) {
        let waiting = std::mem::take(&mut self.reads.awaiting_commit);
        for origin in waiting {
            self.leader_read(origin);
        }
    }

    fn confirm_read(&mut self, origin: ReadOrigin, index: LogIndex) {
        match origin {
            ReadOrigin::Local(id) => {
                let read = ReadReady { id, index };
                let confirmed_tick = self.tick_count;
                self.reads.confirmed.push_back(ConfirmedRead { read, confirmed_tick });
            }
            ReadOrigin::Remote { follower, request } => {
                let response = ReadIndexResponse { request, index: Some(index) };
                self.send(follower, MessageBody::ReadIndexResponse(response));
            }
        }
    }

    pub(crate) fn reject_read(&mut self, origin: ReadOrigin, error: ReadError) {
        match origin {
            ReadOrigin::Local(id) => {
                self.stats.reads_rejected += 1;
                let leader = self.leader.filter(|leader| *leader != self.config.id);
                self.output.events.push(Event::ReadRejected { id, error, leader });
            }
            ReadOrigin::Remote { follower, request } => {
                let response = ReadIndexResponse { request, index: None };
                self.send(follower, MessageBody::ReadIndexResponse(response));
            }
        }
    }

    /// The leader stepped down: reads it had not confirmed fail.
    pub(crate) fn fail_leader_reads(&mut self, error: ReadError) {
        let pending: Vec<ReadOrigin> = self
            .reads
            .pending
            .drain(..)
            .map(|read| read.origin)
            .chain(self.reads.awaiting_commit.drain(..))
            .collect();
        self.reads.broadcast_needed = false;
        for origin in pending {
            self.reject_read(origin, error);
        }
    }

    /// The leader or term changed: reads forwarded to the old leader fail, to be retried.
    pub(crate) fn fail_forwarded_reads(&mut self) {
        let forwarded = std::mem::take(&mut self.reads.forwarded);
        for read in forwarded.into_values() {
            self.reject_read(ReadOrigin::Local(read.id), ReadError::LeaderChanged);
        }
    }

    /// Reads that wait too long fail, so a lost message or a replica cut off never leaves a
    /// client waiting: forwarded reads after an election timeout without an answer, confirmed
    /// reads after a few election timeouts without the state machine reaching their index.
    pub(crate) fn expire_reads(&mut self) {
        let now = self.tick_count;
        let answer_deadline = self.config.election_timeout_ticks_min;
        let apply_deadline =
            self.config.election_timeout_ticks_max * APPLY_WAIT_ELECTION_TIMEOUTS_MAX;
        let expired: Vec<u64> = self
            .reads
            .forwarded
            .iter()
            .filter(|(_, read)| now.saturating_sub(read.sent_tick) >= answer_deadline)
            .map(|(request, _)| *request)
            .collect();
        for request in expired {
            if let Some(read) = self.reads.forwarded.remove(&request) {
                self.reject_read(ReadOrigin::Local(read.id), ReadError::TimedOut);
            }
        }
        while let Some(oldest) = self.reads.confirmed.front().copied() {
            if now.saturating_sub(oldest.confirmed_tick) < apply_deadline {
                break;
            }
            self.reads.confirmed.pop_front();
            self.reject_read(ReadOrigin::Local(oldest.read.id), ReadError::TimedOut);
        }
    }
}
