//! What a leader knows about each follower's log, and how fast it may send to it.
//!
//! A follower is in one of three states (as in etcd's tracker):
//! - **probe**: the leader does not know where the follower's log matches its own. It sends
//!   one append at a time and waits for the answer (or the next heartbeat) before the next.
//! - **replicate**: the logs match up to `match_index`. The leader streams appends
//!   optimistically, advancing `next_index` as it sends, bounded by messages and bytes in
//!   flight.
//! - **snapshot**: the follower needs entries the leader has compacted; the leader sends a
//!   snapshot and nothing else until the follower reports it installed.

use std::collections::VecDeque;

use crate::types::LogIndex;

/// The replication state of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Finding the point where the logs match, one append at a time.
    Probe,
    /// Streaming appends.
    Replicate,
    /// Waiting for a snapshot that ends at `pending_index` to be installed.
    Snapshot {
        /// The snapshot's last index.
        pending_index: LogIndex,
    },
}

/// Appends in flight to one follower, oldest first, with their sizes.
#[derive(Clone, Debug, Default)]
pub struct Inflights {
    messages: VecDeque<(LogIndex, u64)>,
    bytes: u64,
}

impl Inflights {
    /// Records an append whose last entry is `last_index`, carrying `bytes`.
    pub fn add(&mut self, last_index: LogIndex, bytes: u64) {
        if let Some((previous, _)) = self.messages.back() {
            assert!(*previous < last_index, "in-flight appends must advance");
        }
        self.messages.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Forgets every append whose last entry is at or below `index` (the follower has it).
    pub fn free_up_to(&mut self, index: LogIndex) {
        while let Some((last, bytes)) = self.messages.front().copied() {
            if last > index {
                break;
            }
            self.messages.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Whether another append must wait.
    pub fn is_full(&self, messages_max: usize, bytes_max: u64) -> bool {
        self.messages.len() >= messages_max || self.bytes >= bytes_max
    }

    /// The number of appends in flight.
    pub fn count(&self) -> usize {
        self.messages.len()
    }

    /// The entry bytes in flight.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Forgets everything in flight.
    pub fn clear(&mut self) {
        self.messages.clear();
        self.bytes = 0;
    }
}

/// What the leader knows about one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to match the leader's log (and be durable at the follower).
    pub match_index: LogIndex,
    /// The next index to send.
    pub next_index: LogIndex,
    /// How the leader sends to this follower.
    pub state: ProgressState,
    /// In probe state: an append was sent and its answer has not arrived.
    pub probe_sent: bool,
    /// Appends in flight (replicate state).
    pub inflights: Inflights,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// The leader's tick when it last heard from this follower in this term (`None`: not
    /// yet). Its progress may be stale by then: the follower may have restarted with less.
    pub heard_tick: Option<u64>,
    /// The highest read round this follower acknowledged.
    pub read_round_acked: u64,
    /// The highest commit index sent to this follower.
    pub commit_sent: LogIndex,
    /// `match_index` when the follower last answered a heartbeat: if it has not moved by the
    /// next answer, appends were probably lost.
    pub match_at_last_heartbeat: LogIndex,
    /// Whether this follower votes (learners do not).
    pub is_voter: bool,
    /// The follower said it lost entries, with this number: heartbeats echo it.
    pub lost_nonce: Option<u64>,
}

impl Progress {
    /// Notes an answer from the follower, heard at the leader's `tick`.
    pub fn heard(&mut self, tick: u64) {
        self.recent_active = true;
        self.heard_tick = Some(tick);
    }

    /// A follower about which nothing is known yet; the leader probes from `next_index`.
    pub fn new(next_index: LogIndex, is_voter: bool) -> Progress {
        Progress {
            match_index: LogIndex::ZERO,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::default(),
            recent_active: false,
            heard_tick: None,
            read_round_acked: 0,
            commit_sent: LogIndex::ZERO,
            match_at_last_heartbeat: LogIndex::ZERO,
            is_voter,
            lost_nonce: None,
        }
    }

    /// Starts probing after the last known match.
    pub fn become_probe(&mut self) {
        if let ProgressState::Snapshot { pending_index } = self.state {
            self.next_index = self.match_index.max(pending_index).next();
        } else {
            self.next_index = self.match_index.next();
        }
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.clear();
    }

    /// Starts streaming after the last known match.
    pub fn become_replicate(&mut self) {
        self.next_index = self.match_index.next();
        self.state = ProgressState::Replicate;
        self.probe_sent = false;
        self.inflights.clear();
    }

    /// The snapshot transfer failed: probe again from the last known match.
    pub fn snapshot_aborted(&mut self) {
        if matches!(self.state, ProgressState::Snapshot { .. }) {
            self.next_index = self.match_index.next();
            self.state = ProgressState::Probe;
            self.probe_sent = false;
            self.inflights.clear();
        }
    }

    /// Waits for a snapshot ending at `pending_index`.
    pub fn become_snapshot(&mut self, pending_index: LogIndex) {
        self.state = ProgressState::Snapshot { pending_index };
        self.probe_sent = false;
        self.inflights.clear();
    }

    /// Records that the follower holds everything up to `index`. Returns whether this was
    /// news.
    pub fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        if index >= self.next_index {
            self.next_index = index.next();
        }
        updated
    }

    /// Handles a rejected append for `rejected_index`; `hint_next` is where the follower's
    /// hint says to try next. Returns false if the rejection is stale (it answers an append
    /// the leader has already moved past).
    pub fn maybe_decrease(&mut self, rejected_index: LogIndex, hint_next: LogIndex) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected_index <= self.match_index {
                    return false;
                }
                self.next_index = self.match_index.next();
                true
            }
            ProgressState::Probe | ProgressState::Snapshot { .. } => {
                if self.next_index.prev() != rejected_index {
                    return false;
                }
                let next_index = rejected_index.min(hint_next).max(self.match_index.next());
                if next_index == self.next_index {
                    // The follower refuses what it acknowledged before (it lost entries it had
                    // promised to keep: a wiped or lying disk). Probing the same index again at
                    // once would only ping-pong; wait for the next heartbeat.
                    return false;
                }
                self.next_index = next_index;
                self.probe_sent = false;
                true
            }
        }
    }

    /// Whether the leader must hold further appends to this follower.
    pub fn is_paused(&self, messages_max: usize, bytes_max: u64) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(messages_max, bytes_max),
            ProgressState::Snapshot { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_free_in_order() {
        let mut inflights = Inflights::default();
        inflights.add(LogIndex(3), 100);
        inflights.add(LogIndex(5), 50);
        inflights.add(LogIndex(9), 10);
        assert!(inflights.is_full(3, u64::MAX));
        assert!(inflights.is_full(10, 160));
        inflights.free_up_to(LogIndex(5));
        assert_eq!((inflights.count(), inflights.bytes()), (1, 10));
        inflights.free_up_to(LogIndex(100));
        assert_eq!((inflights.count(), inflights.bytes()), (0, 0));
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut progress = Progress::new(LogIndex(10), true);
        // Probe: only a rejection of the last probe (prev = next - 1 = 9) counts.
        assert!(!progress.maybe_decrease(LogIndex(5), LogIndex(1)));
        assert!(progress.maybe_decrease(LogIndex(9), LogIndex(4)));
        assert_eq!(progress.next_index, LogIndex(4));
        progress.maybe_update(LogIndex(3));
        progress.become_replicate();
        assert_eq!(progress.next_index, LogIndex(4));
        // Replicate: a rejection at or below the match is stale.
        assert!(!progress.maybe_decrease(LogIndex(3), LogIndex(1)));
        assert!(progress.maybe_decrease(LogIndex(6), LogIndex(1)));
        assert_eq!(progress.next_index, LogIndex(4));
    }
}
