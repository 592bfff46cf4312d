//! Checkpoints, compaction and state transfer, as the driver runs them.
//!
//! - **Checkpoints.** After applying, the driver checks its [`CheckpointPolicy`]: once enough
//!   entries or bytes were applied since the last checkpoint, it takes a consistent view of
//!   the replicated state (cheap: the state machine's snapshot view and the encoded session
//!   table) and hands it to storage, which writes it out, off the apply path, and reports back
//!   with [`Driver::checkpoint_saved`]. Applying goes on meanwhile.
//! - **Compaction.** Once a checkpoint is durable, the log up to it, minus a trailing margin
//!   kept for slow followers, is dropped from memory and from disk.
//! - **Sending.** A leader whose follower needs compacted entries streams it the latest
//!   checkpoint's file: first an empty chunk that asks where to start (so a transfer resumes
//!   after a dropped connection or a leader change), then chunks of
//!   [`CheckpointPolicy::chunk_bytes`], at most [`CheckpointPolicy::chunks_in_flight`] ahead of
//!   the follower's answers. A transfer that stalls is resumed from the last answer, and
//!   abandoned after a few tries. Heartbeats and other followers' appends go on meanwhile.
//! - **Receiving.** A follower checks each chunk's CRC32C and offset, writes it to a temporary
//!   file, and once the file is whole checks it against its BLAKE3 digest, makes it durable,
//!   restores the replicated state from it and tells the core, which continues the log after
//!   it. A crash anywhere before leaves the previous state intact.

use std::collections::BTreeMap;

use bytes::Bytes;
use lockstep_core::{
    InstallSnapshot, InstallSnapshotResponse, LogIndex, NodeId, Role, SnapshotAnswer,
    SnapshotChunk, SnapshotMeta, StateMachine,
};

use crate::driver::{Completion, Driver, Refusal, Storage, Transport};

/// When to take checkpoints and how to send them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Take a checkpoint after this many entries applied since the last one.
    pub entries: u64,
    /// ... or after this many bytes of entries applied since the last one.
    pub bytes: u64,
    /// ... but only once the entries applied since the last checkpoint add up to at least this
    /// percentage of that checkpoint's size (0: no such condition). Each checkpoint rewrites
    /// the whole state, so without it a large state rewritten every `entries` entries costs
    /// more than the writes themselves; with it, the bytes checkpoints write stay within a
    /// constant factor of the bytes the log takes (as Redis's `auto-aof-rewrite-percentage`),
    /// at the price of a log (and its replay at restart) up to that percentage of the state.
    pub growth_percent: u64,
    /// ... and in any case once this many bytes of entries were applied since the last one,
    /// however large the state: the log since the last checkpoint is held in memory, and this
    /// bounds it.
    pub log_bytes_max: u64,
    /// Keep this many entries below a checkpoint in the log, so that a follower only a little
    /// behind catches up from the log rather than by a transfer.
    pub trailing_entries: u64,
    /// Bytes per chunk of a transfer.
    pub chunk_bytes: u64,
    /// Chunks a transfer may send ahead of the follower's answers.
    pub chunks_in_flight: u64,
    /// Ticks without an answer before a transfer resumes from the last answer.
    pub transfer_timeout_ticks: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> CheckpointPolicy {
        CheckpointPolicy {
            entries: 10_000,
            bytes: 64 << 20,
            growth_percent: 0,
            log_bytes_max: u64::MAX,
            trailing_entries: 1_000,
            chunk_bytes: 1 << 20,
            chunks_in_flight: 4,
            transfer_timeout_ticks: 50,
        }
    }
}

/// A durable checkpoint storage holds: what it covers, and its file's length and digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// Its file's length.
    pub total_bytes: u64,
    /// The BLAKE3 digest of its data, naming it in transfers.
    pub digest: [u8; 32],
}

/// What the driver did with checkpoints and transfers, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoints started.
    pub checkpoints_started: u64,
    /// Checkpoints storage reported durable.
    pub checkpoints_saved: u64,
    /// Transfers this replica finished sending.
    pub transfers_sent: u64,
    /// Snapshots this replica received whole and installed.
    pub transfers_received: u64,
    /// Chunks refused (bad checksum, out of order, past the end, storage failure).
    pub chunks_refused: u64,
    /// Transfers abandoned after stalling.
    pub transfers_abandoned: u64,
}

/// How far a transfer to a follower has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferProgress {
    /// The follower.
    pub to: NodeId,
    /// The snapshot's last index.
    pub index: LogIndex,
    /// Bytes the follower holds.
    pub acknowledged: u64,
    /// Bytes sent.
    pub sent: u64,
    /// The snapshot file's length.
    pub total: u64,
}

/// A transfer this leader is sending.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    checkpoint: Checkpoint,
    /// The follower holds the file up to here.
    acked: u64,
    /// Sent up to here.
    sent: u64,
    idle_ticks: u64,
    retries: u32,
    /// The offset last resent from after a refusal: further refusals naming it are answers to
    /// chunks sent before the resend, not news.
    rewound_to: Option<u64>,
}

/// How many refusal reasons are kept.
pub const REFUSALS_KEPT: usize = 16;

/// Transfers are abandoned after this many stalls in a row.
const TRANSFER_RETRIES_MAX: u32 = 3;

/// The driver's checkpoint and transfer state.
#[derive(Debug, Default)]
pub(crate) struct Checkpoints {
    pub(crate) policy: Option<CheckpointPolicy>,
    entries_since: u64,
    bytes_since: u64,
    pub(crate) in_progress: bool,
    /// The index of the last checkpoint started.
    last_index: LogIndex,
    /// The size of the latest durable checkpoint, once asked of storage (`None`: ask again).
    latest_bytes: std::cell::Cell<Option<Option<u64>>>,
    outgoing: BTreeMap<NodeId, Outgoing>,
    /// Followers that need a snapshot through at least this index, newer than any checkpoint
    /// held: tried again each tick.
    waiting: BTreeMap<NodeId, LogIndex>,
    pub(crate) stats: CheckpointStats,
    /// Why recent chunks were refused, newest last (at most [`REFUSALS_KEPT`]).
    pub(crate) refusals: std::collections::VecDeque<String>,
    /// Test-only: checkpoints are taken one entry early but labelled as if after it.
    pub(crate) sabotage_off_by_one: bool,
    /// The in-memory log is compacted through here, a step at a time (see
    /// [`COMPACTION_ENTRIES_PER_STEP`]).
    compact_through: LogIndex,
}

/// Entries the in-memory log drops at once: dropping millions of entries (a large state's log
/// between two checkpoints) would hold the replica thread for a long time in one go.
pub const COMPACTION_ENTRIES_PER_STEP: u64 = 32_768;

impl<M: StateMachine, D: Storage, T: Transport> Driver<M, D, T> {
    /// Takes checkpoints (and compacts the log and sends state to followers that need it) by
    /// `policy`. Without a policy, no checkpoint is taken.
    pub fn set_checkpoint_policy(&mut self, policy: CheckpointPolicy) {
        self.checkpoints.policy = Some(policy);
    }

    /// What the driver did with checkpoints and transfers.
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        self.checkpoints.stats
    }

    /// Transfers this leader is sending, and followers waiting for a checkpoint that covers
    /// them.
    pub fn transfers(&self) -> (Vec<TransferProgress>, Vec<NodeId>) {
        let sending = self
            .checkpoints
            .outgoing
            .iter()
            .map(|(to, outgoing)| TransferProgress {
                to: *to,
                index: outgoing.checkpoint.meta.last_index,
                acknowledged: outgoing.acked,
                sent: outgoing.sent,
                total: outgoing.checkpoint.total_bytes,
            })
            .collect();
        (sending, self.checkpoints.waiting.keys().copied().collect())
    }

    /// Why recent snapshot chunks were refused (bad checksum, out of order, damaged file),
    /// newest last.
    pub fn snapshot_refusals(&self) -> impl Iterator<Item = &str> {
        self.checkpoints.refusals.iter().map(String::as_str)
    }

    /// Storage made the checkpoint through `meta` durable: compact the log below it.
    pub fn checkpoint_saved(&mut self, meta: &SnapshotMeta) {
        self.checkpoints.in_progress = false;
        self.checkpoints.latest_bytes.set(None);
        self.checkpoints.stats.checkpoints_saved += 1;
        let trailing = self.checkpoints.policy.map_or(0, |policy| policy.trailing_entries);
        let index = LogIndex(meta.last_index.get().saturating_sub(trailing));
        if index > LogIndex::ZERO {
            self.checkpoints.compact_through = self.checkpoints.compact_through.max(index);
            self.compact_step();
        }
        self.drain();
    }

    /// Compacts the log a step further towards the last checkpoint (called at each checkpoint
    /// saved and each tick): the core's entries in memory, and storage's no further, so that
    /// the log on disk always starts at or before the core's first index (which repairs and
    /// transfers judge checkpoints by).
    pub(crate) fn compact_step(&mut self) {
        let target = self.checkpoints.compact_through;
        let first = self.node.first_index();
        if target < first {
            return;
        }
        let step =
            LogIndex(target.get().min(first.get().saturating_add(COMPACTION_ENTRIES_PER_STEP)));
        self.node.compact(step);
        let compacted = LogIndex(self.node.first_index().get().saturating_sub(1));
        if compacted >= first {
            self.storage.compact(compacted);
        }
    }

    /// Storage could not save the checkpoint; a later one is tried.
    pub fn checkpoint_failed(&mut self) {
        self.checkpoints.in_progress = false;
    }

    /// Makes checkpoints wrong by one entry: taken before the last entry of a batch is
    /// applied, yet labelled as covering it. Only for showing the simulator catches it.
    #[doc(hidden)]
    #[cfg(feature = "sabotage")]
    pub fn sabotage_checkpoint_off_by_one(&mut self) {
        self.checkpoints.sabotage_off_by_one = true;
    }

    /// Whether the policy asks for a checkpoint now.
    pub(crate) fn checkpoint_due(&self) -> bool {
        self.checkpoint_due_at(self.node.applied_index())
    }

    /// Whether a checkpoint is due once entry `applied` is applied.
    pub(crate) fn checkpoint_due_at(&self, applied: LogIndex) -> bool {
        let Some(policy) = self.checkpoints.policy else { return false };
        // A new checkpoint would replace the file a transfer is reading: wait for it.
        !self.checkpoints.in_progress
            && self.checkpoints.outgoing.is_empty()
            && self.audit.quarantined.is_none()
            && applied > self.checkpoints.last_index
            && (((self.checkpoints.entries_since >= policy.entries
                || self.checkpoints.bytes_since >= policy.bytes)
                && self.grown_enough(policy.growth_percent))
                || self.checkpoints.bytes_since >= policy.log_bytes_max)
    }

    /// Whether the entries applied since the last checkpoint add up to `percent` of its size.
    fn grown_enough(&self, percent: u64) -> bool {
        if percent == 0 {
            return true;
        }
        // Asked of storage once per checkpoint, not per batch applied (storage may lock).
        let latest = match self.checkpoints.latest_bytes.get() {
            Some(known) => known,
            None => {
                let known = self.storage.latest_checkpoint().map(|latest| latest.total_bytes);
                self.checkpoints.latest_bytes.set(Some(known));
                known
            }
        };
        let Some(latest) = latest else { return true };
        u128::from(self.checkpoints.bytes_since) * 100 >= u128::from(latest) * u128::from(percent)
    }

    /// Counts applied entries toward the policy.
    /// The replicated state was restored from a checkpoint through `index` (a repair): count
    /// from there.
    /// Whether a snapshot transfer to a follower is under way (a new checkpoint would replace
    /// the file it reads).
    pub(crate) fn transfers_under_way(&self) -> bool {
        !self.checkpoints.outgoing.is_empty()
    }

    pub(crate) fn restored_at(&mut self, index: LogIndex) {
        self.checkpoints.last_index = index;
        self.checkpoints.entries_since = 0;
        self.checkpoints.bytes_since = 0;
        self.checkpoints.latest_bytes.set(None);
    }

    pub(crate) fn count_applied(&mut self, entries: u64, bytes: u64) {
        self.checkpoints.entries_since += entries;
        self.checkpoints.bytes_since += bytes;
    }

    /// Hands a view of the replicated state as of `index` to storage. `index` must be the
    /// index the state is at (save for the sabotage).
    pub(crate) fn start_checkpoint(&mut self, index: LogIndex) {
        let Some(last_term) = self.node.log_term(index) else { return };
        let meta = SnapshotMeta {
            last_index: index,
            last_term,
            membership: self.node.membership_at(index),
        };
        let state = Box::new(self.state.snapshot());
        self.start_checkpoint_from(meta, state);
    }

    /// Hands `state` (taken through `meta`) to storage to write.
    pub(crate) fn start_checkpoint_from(
        &mut self,
        meta: SnapshotMeta,
        state: Box<dyn lockstep_core::StateSnapshot>,
    ) {
        self.checkpoints.in_progress = true;
        self.checkpoints.last_index = meta.last_index;
        self.checkpoints.entries_since = 0;
        self.checkpoints.bytes_since = 0;
        self.checkpoints.stats.checkpoints_started += 1;
        self.storage.start_checkpoint(meta, state);
    }

    // ----- sending --------------------------------------------------------------------------

    /// How to send: the policy's settings, or the defaults on a replica that takes no
    /// checkpoints itself (it may still hold one it received), kept within what messages allow.
    fn transfer_policy(&self) -> CheckpointPolicy {
        let policy = self.checkpoints.policy.unwrap_or_default();
        CheckpointPolicy {
            chunk_bytes: policy
                .chunk_bytes
                .clamp(1, lockstep_core::message::SNAPSHOT_CHUNK_BYTES_MAX),
            chunks_in_flight: policy.chunks_in_flight.max(1),
            transfer_timeout_ticks: policy.transfer_timeout_ticks.max(1),
            ..policy
        }
    }

    /// The core asks for a snapshot through at least `index` for `to`.
    pub(crate) fn on_snapshot_needed(&mut self, to: NodeId, index: LogIndex) {
        self.checkpoints.waiting.remove(&to);
        // (With the audit on, every checkpoint written is one a majority vouched for.)
        match self.storage.latest_checkpoint() {
            Some(checkpoint) if checkpoint.meta.last_index >= index => {
                let outgoing = Outgoing {
                    checkpoint,
                    acked: 0,
                    sent: 0,
                    idle_ticks: 0,
                    retries: 0,
                    rewound_to: None,
                };
                self.checkpoints.outgoing.insert(to, outgoing);
                self.offer(to);
            }
            // No checkpoint covers it yet (one is being written): the follower waits in
            // snapshot state, and the next tick tries again.
            _ => {
                self.checkpoints.waiting.insert(to, index);
            }
        }
    }

    /// Sends the empty first chunk, which asks the follower where to start.
    fn offer(&mut self, to: NodeId) {
        let Some(outgoing) = self.checkpoints.outgoing.get(&to) else { return };
        let chunk = chunk_of(&outgoing.checkpoint, 0, Bytes::new());
        if !self.node.send_snapshot_chunk(to, chunk) {
            self.checkpoints.outgoing.remove(&to);
        }
    }

    /// A follower answered a chunk.
    pub(crate) fn on_snapshot_answer(&mut self, answer: SnapshotAnswer) {
        let SnapshotAnswer { from, answer } = answer;
        let Some(outgoing) = self.checkpoints.outgoing.get_mut(&from) else { return };
        if answer.last_index != outgoing.checkpoint.meta.last_index {
            return;
        }
        let total = outgoing.checkpoint.total_bytes;
        let held = answer.next_offset.min(total);
        outgoing.idle_ticks = 0;
        outgoing.retries = 0;
        if answer.accepted && held >= outgoing.acked {
            outgoing.acked = held;
            outgoing.sent = outgoing.sent.max(held);
            if outgoing.rewound_to.is_some_and(|point| point < held) {
                outgoing.rewound_to = None;
            }
        } else if outgoing.rewound_to != Some(held) {
            // Refused (a chunk lost or damaged on the way), or the follower holds less than it
            // said before (it restarted): resend from what it holds, once per such point; the
            // answers to chunks already on their way say nothing new.
            outgoing.acked = held;
            outgoing.sent = held;
            outgoing.rewound_to = Some(held);
        } else {
            return;
        }
        if outgoing.acked >= total && answer.accepted {
            // The follower has it all and installed it before answering: append from there.
            self.checkpoints.outgoing.remove(&from);
            self.checkpoints.stats.transfers_sent += 1;
            self.node.snapshot_sent(from);
            return;
        }
        self.send_chunks(from);
    }

    /// Sends chunks to `to` up to the window.
    fn send_chunks(&mut self, to: NodeId) {
        let policy = self.transfer_policy();
        let window = policy.chunk_bytes.saturating_mul(policy.chunks_in_flight);
        loop {
            let Some(outgoing) = self.checkpoints.outgoing.get(&to) else { return };
            let total = outgoing.checkpoint.total_bytes;
            if outgoing.sent >= total || outgoing.sent - outgoing.acked >= window {
                return;
            }
            let offset = outgoing.sent;
            let len = policy.chunk_bytes.min(total - offset);
            let data = match self.storage.read_checkpoint(&outgoing.checkpoint, offset, len) {
                Ok(data) => Bytes::from(data),
                Err(_) => {
                    // The checkpoint is unreadable (replaced by a newer one, or damaged): start
                    // over, which picks the latest.
                    self.checkpoints.outgoing.remove(&to);
                    self.node.snapshot_aborted(to);
                    return;
                }
            };
            let chunk = chunk_of(&outgoing.checkpoint, offset, data);
            if !self.node.send_snapshot_chunk(to, chunk) {
                self.checkpoints.outgoing.remove(&to);
                return;
            }
            if let Some(outgoing) = self.checkpoints.outgoing.get_mut(&to) {
                outgoing.sent = offset + len;
            }
        }
    }

    /// One tick: transfers without answers resume, and are abandoned after a few tries.
    pub(crate) fn tick_transfers(&mut self) {
        if self.node.role() != Role::Leader {
            self.checkpoints.outgoing.clear();
            self.checkpoints.waiting.clear();
            return;
        }
        let waiting = std::mem::take(&mut self.checkpoints.waiting);
        for (to, index) in waiting {
            self.on_snapshot_needed(to, index);
        }
        let timeout = self.transfer_policy().transfer_timeout_ticks;
        let stalled: Vec<NodeId> = self
            .checkpoints
            .outgoing
            .iter_mut()
            .filter_map(|(to, outgoing)| {
                outgoing.idle_ticks += 1;
                (outgoing.idle_ticks >= timeout).then_some(*to)
            })
            .collect();
        for to in stalled {
            let Some(outgoing) = self.checkpoints.outgoing.get_mut(&to) else { continue };
            outgoing.retries += 1;
            outgoing.idle_ticks = 0;
            outgoing.sent = outgoing.acked;
            if outgoing.retries > TRANSFER_RETRIES_MAX {
                self.checkpoints.outgoing.remove(&to);
                self.checkpoints.stats.transfers_abandoned += 1;
                self.node.snapshot_aborted(to);
            } else {
                self.offer(to);
            }
        }
    }

    // ----- receiving ------------------------------------------------------------------------

    /// A chunk arrived from the leader.
    pub(crate) fn on_snapshot_chunk(&mut self, chunk: SnapshotChunk) {
        let SnapshotChunk { from, chunk } = chunk;
        let last_index = chunk.meta.last_index;
        if crc32c::crc32c(&chunk.data) != chunk.checksum {
            let reason = format!(
                "chunk at byte {} of snapshot {last_index} fails its CRC32C checksum",
                chunk.offset
            );
            self.refuse_chunk(from, last_index, reason);
            return;
        }
        let received = match self.storage.receive_snapshot_chunk(&chunk) {
            Ok(received) => received,
            Err(error) => {
                self.refuse_chunk(from, last_index, error);
                return;
            }
        };
        if received < chunk.total_bytes {
            let answer =
                InstallSnapshotResponse { last_index, next_offset: received, accepted: true };
            self.node.answer_snapshot_chunk(from, answer);
            return;
        }
        self.install(from, chunk.meta, chunk.total_bytes);
    }

    fn refuse_chunk(&mut self, to: NodeId, last_index: LogIndex, reason: String) {
        self.checkpoints.stats.chunks_refused += 1;
        if self.checkpoints.refusals.len() == REFUSALS_KEPT {
            self.checkpoints.refusals.pop_front();
        }
        self.checkpoints.refusals.push_back(reason);
        let next_offset = self.storage.snapshot_bytes_received();
        let answer = InstallSnapshotResponse { last_index, next_offset, accepted: false };
        self.node.answer_snapshot_chunk(to, answer);
    }

    /// The whole snapshot arrived: check it, restore from it, install it.
    fn install(&mut self, from: NodeId, meta: SnapshotMeta, total_bytes: u64) {
        let last_index = meta.last_index;
        let done = InstallSnapshotResponse { last_index, next_offset: total_bytes, accepted: true };
        if !self.node.wants_snapshot(&meta) {
            // Committed this far meanwhile: nothing to install.
            self.node.answer_snapshot_chunk(from, done);
            return;
        }
        let restored = match self.storage.finish_snapshot() {
            Ok(mut reader) => self.state.restore(&mut reader),
            Err(error) => {
                // Damaged in transit or on disk: it was removed; start over from byte 0.
                self.refuse_chunk(from, last_index, error);
                return;
            }
        };
        // Entries handed out before and not yet applied are older than the state now.
        self.forget_queued_entries();
        if let Err(error) = restored {
            // The snapshot passed its checksums yet the state machine cannot read it: this
            // replica's state is unknown now, and it must stop.
            self.failure = Some(format!("restoring snapshot {last_index} failed: {error}"));
            return;
        }
        if !self.node.install_snapshot(from, meta) {
            self.failure = Some(format!(
                "snapshot {last_index} was restored but the consensus core refused it"
            ));
            return;
        }
        // Acknowledgements of entries after the snapshot, still waiting for their writes, may
        // name entries the log no longer has: they must not leave (the leader learns how far
        // this log matches from the answer to the snapshot).
        self.withhold_acknowledgements_above(last_index);
        self.checkpoints.stats.transfers_received += 1;
        self.audit_state_replaced(last_index);
        self.checkpoints.last_index = last_index;
        self.checkpoints.entries_since = 0;
        self.checkpoints.bytes_since = 0;
        self.checkpoints.latest_bytes.set(None);
        self.node.answer_snapshot_chunk(from, done);
        // Proposals this replica made at indexes the snapshot covers: whether they were applied
        // is unknown here; retrying with the same number is answered right.
        let covered: Vec<LogIndex> =
            self.proposals.range(..=last_index).map(|(index, _)| *index).collect();
        for index in covered {
            for (_, request) in self.proposals.remove(&index).unwrap_or_default() {
                let refusal = Refusal::Retry("a snapshot from the leader replaced the log".into());
                self.completions.push(Completion::Refused { request, refusal });
            }
        }
    }
}

fn chunk_of(checkpoint: &Checkpoint, offset: u64, data: Bytes) -> InstallSnapshot {
    InstallSnapshot {
        meta: checkpoint.meta.clone(),
        total_bytes: checkpoint.total_bytes,
        digest: checkpoint.digest,
        offset,
        checksum: crc32c::crc32c(&data),
        data,
    }
}
