//! Auditing: finding a replica whose state or outputs differ from the majority's, taking it out
//! of service and repairing it.
//!
//! - **Reports.** Every replica but the leader tells the leader its output chain where it
//!   stands ([`crate::Chain`]) once every [`AuditConfig::report_interval`] entries (after every
//!   batch applied with verified outputs), with its newest state digests, in an audit message
//!   sent together with the append answers it gives anyway.
//! - **State digests.** Every replica takes the state machine's digest at the same indexes:
//!   every no-op entry (the leader places one when it needs a point now) and every multiple of
//!   [`AuditConfig::digest_interval`].
//! - **Comparison.** The leader compares each report with its own chain (and digest) at the
//!   same index. A replica that differs where a majority of voters, the leader included,
//!   agrees is divergent: the leader records where (narrowed down to the exact entry with the
//!   replica's recent chains, searched by bisection), tells it, and no longer confirms reads
//!   for it. A leader that a majority of voters differs from quarantines itself and steps down;
//!   the next leader finds it the same way.
//! - **Quarantine.** A divergent replica serves no reads, refuses votes, never campaigns and
//!   answers no request with an output; it still takes appends (its log is sound).
//! - **Repair.** The leader places a no-op, checkpoints there, and once a majority of voters
//!   reported the same state digest and chain there it streams that checkpoint to the
//!   quarantined replica, which restores it, checks the state digest against the agreed one,
//!   re-applies its own log after it and rejoins. Automatic by default; [`RepairMode::Manual`]
//!   waits for [`Driver::repair`].
//! - **Verified outputs** ([`AuditConfig::verified_outputs`]): the leader holds each answer
//!   until a majority of voters, itself included, reported the same chain at or after its
//!   entry, so a divergent replica's output never reaches a client.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use lockstep_core::message::{
    AuditMessage, ChainReport, DigestPoint, Divergence, DivergenceKind, RepairAnswer, RepairChunk,
};
use lockstep_core::{
    EntryPayload, InstallSnapshot, LogIndex, Message, MessageBody, NodeId, Role, StateMachine, Term,
};

use crate::checkpoint::Checkpoint;
use crate::driver::{Chain, Completion, Driver, Refusal, RequestId, Storage, Transport};

/// Whether a divergent replica repairs itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RepairMode {
    /// As soon as it is found (the default).
    #[default]
    Automatic,
    /// Only when an operator asks ([`Driver::repair`], `lockstep audit repair ID`).
    Manual,
}

/// How the audit runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// A replica reports its chain after every this many entries (at least 1).
    pub report_interval: u64,
    /// State digests are taken at every multiple of this index (0: only at the leader's
    /// no-ops).
    pub digest_interval: u64,
    /// Whether a divergent replica repairs itself.
    pub repair: RepairMode,
    /// The leader releases an answer only once a majority of voters reported the same chain.
    pub verified_outputs: bool,
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            report_interval: 64,
            digest_interval: 16_384,
            repair: RepairMode::Automatic,
            verified_outputs: false,
        }
    }
}

/// Counters of the audit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Reports received (as leader).
    pub reports_received: u64,
    /// Divergent replicas found (as leader).
    pub divergences_found: u64,
    /// Times this replica found itself divergent while leading, and stepped down.
    pub self_quarantines: u64,
    /// Repairs started (as leader).
    pub repairs_started: u64,
    /// Repairs completed (this replica repaired from a checkpoint).
    pub repairs_done: u64,
    /// Repair checkpoints refused (digest or chain not the agreed one, or not usable yet).
    pub repair_refusals: u64,
    /// Answers held until verified, and released.
    pub outputs_verified: u64,
    /// Answers held and then refused (this replica stopped leading before they were
    /// verified).
    pub outputs_unverified: u64,
}

/// One divergence found, and when it was repaired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DivergenceRecord {
    /// Where and how the replica differed.
    pub divergence: Divergence,
    /// The checkpoint index it was repaired from, once it was.
    pub repaired_at: Option<LogIndex>,
}

/// What the leader knows of one replica's audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAudit {
    /// The replica.
    pub id: NodeId,
    /// The newest index where its chain equals the leader's.
    pub agreed: LogIndex,
    /// The newest index it reported.
    pub reported: LogIndex,
    /// Its newest state digest that equals the leader's.
    pub agreed_digest: Option<LogIndex>,
    /// Whether it is quarantined.
    pub quarantined: bool,
    /// Whether a repair is under way.
    pub repairing: bool,
}

/// The audit as one replica sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditStatus {
    /// Whether the audit runs.
    pub enabled: bool,
    /// Whether answers wait for verification.
    pub verified_outputs: bool,
    /// Why this replica is quarantined, if it is.
    pub quarantined: Option<Divergence>,
    /// Leader: the newest index whose chain a majority of voters reported alike.
    pub agreed: LogIndex,
    /// The newest digest point a majority reported alike (as leader: found; otherwise: told).
    pub agreed_digest: LogIndex,
    /// This replica's newest state digest.
    pub latest_digest: Option<DigestPoint>,
    /// Divergences this replica found (as leader) or was told of, newest last.
    pub history: Vec<DivergenceRecord>,
    /// Leader: each other replica.
    pub peers: Vec<PeerAudit>,
    /// Counters.
    pub stats: AuditStats,
}

/// How many differing state digests of one replica the leader keeps.
const DIFFERENCES_KEPT: usize = 8;
/// How many divergence records are kept.
const HISTORY_KEPT: usize = 32;
/// How many digest points of each replica the leader keeps.
const PEER_DIGESTS_KEPT: usize = 16;
/// How many of its newest digest points a report carries.
const DIGESTS_PER_REPORT: usize = 2;
/// A replica repeats its report after this many ticks without one (a report may be lost).
const REPORT_REPEAT_TICKS: u64 = 20;
/// A leader that applied nothing new for this many ticks places a digest point if the state
/// changed since the last one.
const IDLE_DIGEST_TICKS: u64 = 20;
/// The leader places at most one no-op for a checkpoint every this many ticks.
const NOOP_TICKS: u64 = 10;
/// The leader checks its newest this many digest points against the others' together.
const DIGESTS_COMPARED: usize = 4;
/// Answers held this many ticks without the verified index moving are refused (retry).
const HELD_STALL_TICKS: u64 = 100;
/// A repair that hears nothing for this many ticks asks again where to go on from.
const REPAIR_ASK_TICKS: u64 = 10;
/// A repair that makes no progress for this many ticks starts over.
const REPAIR_STALL_TICKS: u64 = 100;

#[derive(Debug, Default)]
struct Peer {
    agreed: LogIndex,
    reported: LogIndex,
    log_first: LogIndex,
    applied: LogIndex,
    /// Differences seen, not yet judged: the first output difference, and the newest state
    /// digests that differ (each judged on its own: a digest is backed only by others'
    /// digests at the same point).
    differs: Vec<Divergence>,
    /// The difference it was found divergent by.
    found: Option<Divergence>,
    /// A report past what the leader has applied, compared once it has.
    pending: Option<(LogIndex, u64)>,
    /// Its digest points, and whether each was compared.
    digests: BTreeMap<LogIndex, (DigestPoint, bool)>,
    agreed_digest: Option<LogIndex>,
    quarantined: bool,
    /// Its `restored_from` when it was quarantined: a new one means its state was replaced.
    quarantined_from: LogIndex,
    /// Its latest `restored_from`.
    restored_from: LogIndex,
    /// The newest agreed point sent to it once it had applied it.
    agreed_sent: LogIndex,
    /// A checkpoint it refused for good (the next repair makes a fresh one).
    bad_checkpoint: Option<LogIndex>,
    repair: Option<OutgoingRepair>,
}

#[derive(Debug, Default)]
struct OutgoingRepair {
    /// The checkpoint being sent, with the digest point it was agreed at.
    checkpoint: Option<(Checkpoint, DigestPoint)>,
    acked: u64,
    sent: u64,
    idle_ticks: u64,
}

/// The driver's audit state (see the module documentation).
pub(crate) struct Audit<O> {
    pub(crate) config: Option<AuditConfig>,
    /// The term in which `peers` was gathered (as leader).
    term: Term,
    peers: BTreeMap<NodeId, Peer>,
    /// Leader: take a checkpoint right after applying this no-op.
    pub(crate) checkpoint_wanted: Option<LogIndex>,
    pub(crate) quarantined: Option<Divergence>,
    last_report: LogIndex,
    ticks_since_report: u64,
    applied_seen: LogIndex,
    idle_ticks: u64,
    ticks_since_noop: u64,
    history: VecDeque<DivergenceRecord>,
    /// Leader, verified outputs: answers waiting for a majority's chain at their index.
    held: BTreeMap<LogIndex, Vec<Completion<O>>>,
    pub(crate) stats: AuditStats,
    pub(crate) sabotage_no_compare: bool,
    /// The newest digest point where a majority of voters reported the same state digest
    /// (as leader: found; otherwise: told by the leader).
    pub(crate) agreed_digest: LogIndex,
    /// Leader: the newest agreed digest point.
    agreed_point: Option<DigestPoint>,
    /// Leader: the verified index last seen, and for how many ticks it has not moved while
    /// answers were held.
    verified_seen: LogIndex,
    held_stall_ticks: u64,
    /// Checkpoints taken at digest points and not yet written: each is written once a
    /// majority reports the same digest there (newest last).
    pub(crate) pending_checkpoints: VecDeque<PendingCheckpoint>,
}

/// A checkpoint held until a majority vouches for its state.
pub(crate) struct PendingCheckpoint {
    pub(crate) point: DigestPoint,
    pub(crate) meta: lockstep_core::SnapshotMeta,
    pub(crate) state: Box<dyn lockstep_core::StateSnapshot>,
}

/// How many checkpoints may wait for agreement at once.
const PENDING_CHECKPOINTS_MAX: usize = 4;

impl<O> Default for Audit<O> {
    fn default() -> Audit<O> {
        Audit {
            config: None,
            term: Term(0),
            peers: BTreeMap::new(),
            checkpoint_wanted: None,
            quarantined: None,
            last_report: LogIndex::ZERO,
            ticks_since_report: 0,
            applied_seen: LogIndex::ZERO,
            idle_ticks: 0,
            ticks_since_noop: NOOP_TICKS,
            history: VecDeque::new(),
            held: BTreeMap::new(),
            stats: AuditStats::default(),
            sabotage_no_compare: false,
            agreed_digest: LogIndex::ZERO,
            agreed_point: None,
            verified_seen: LogIndex::ZERO,
            held_stall_ticks: 0,
            pending_checkpoints: VecDeque::new(),
        }
    }
}

impl<O> Audit<O> {
    fn record(&mut self, divergence: Divergence) {
        let same = |record: &DivergenceRecord| {
            record.divergence.replica == divergence.replica && record.repaired_at.is_none()
        };
        if let Some(record) = self.history.iter_mut().rev().find(|record| same(record)) {
            record.divergence = divergence;
            return;
        }
        if self.history.len() == HISTORY_KEPT {
            self.history.pop_front();
        }
        self.history.push_back(DivergenceRecord { divergence, repaired_at: None });
    }

    fn record_repaired(&mut self, replica: NodeId, index: LogIndex) {
        if let Some(record) = self
            .history
            .iter_mut()
            .rev()
            .find(|record| record.divergence.replica == replica && record.repaired_at.is_none())
        {
            record.repaired_at = Some(index);
        }
    }
}

impl<M: StateMachine, D: Storage, T: Transport> Driver<M, D, T> {
    /// Turns the audit on (see the module documentation). Call before the first input.
    pub fn set_audit(&mut self, config: AuditConfig) {
        let config = AuditConfig { report_interval: config.report_interval.max(1), ..config };
        self.state.take_digests(config.digest_interval);
        self.audit.config = Some(config);
    }

    /// Turns the comparison off (reports still flow, nothing is ever found divergent). Only for
    /// showing that the simulator's checkers catch it.
    #[doc(hidden)]
    #[cfg(feature = "sabotage")]
    pub fn sabotage_audit_no_compare(&mut self) {
        self.audit.sabotage_no_compare = true;
    }

    /// The audit's counters.
    pub fn audit_stats(&self) -> AuditStats {
        self.audit.stats
    }

    /// Whether this replica does the leader's share of the audit: it leads and is not
    /// quarantined. A quarantined replica may lead only as a caretaker that hands leadership
    /// over (see `lockstep_core::Node` elections); its own state is in doubt, so it compares
    /// no one, quarantines no one and repairs no one.
    fn audits_as_leader(&self) -> bool {
        self.node.role() == Role::Leader && self.audit.quarantined.is_none()
    }

    /// Whether this replica is quarantined (found divergent and not yet repaired).
    pub fn quarantined(&self) -> bool {
        self.audit.quarantined.is_some()
    }

    /// Leader: the replicas it holds quarantined (itself, if it found itself divergent).
    pub fn quarantined_replicas(&self) -> Vec<NodeId> {
        let mut found: Vec<NodeId> = Vec::new();
        if self.audit.quarantined.is_some() {
            found.push(self.node.id());
        }
        if self.node.role() == Role::Leader && self.audit.term == self.node.term() {
            found.extend(
                self.audit.peers.iter().filter(|(_, peer)| peer.quarantined).map(|(id, _)| *id),
            );
        }
        found
    }

    /// The audit as this replica sees it.
    pub fn audit_status(&self) -> AuditStatus {
        let audit = &self.audit;
        let leading = self.node.role() == Role::Leader && audit.term == self.node.term();
        let peers = if leading {
            audit
                .peers
                .iter()
                .map(|(id, peer)| PeerAudit {
                    id: *id,
                    agreed: peer.agreed,
                    reported: peer.reported,
                    agreed_digest: peer.agreed_digest,
                    quarantined: peer.quarantined,
                    repairing: peer.repair.is_some(),
                })
                .collect()
        } else {
            Vec::new()
        };
        AuditStatus {
            enabled: audit.config.is_some(),
            verified_outputs: audit.config.is_some_and(|config| config.verified_outputs),
            quarantined: audit.quarantined.clone(),
            agreed: if leading { self.verified_index() } else { LogIndex::ZERO },
            agreed_digest: audit.agreed_digest,
            latest_digest: self.state.latest_digest(),
            history: audit.history.iter().cloned().collect(),
            peers,
            stats: audit.stats,
        }
    }

    /// Leader: places a no-op now, a point where every replica takes its state digest and
    /// reports; the comparison follows as the reports arrive. Returns its index.
    pub fn audit_check(&mut self) -> Result<LogIndex, String> {
        if self.audit.config.is_none() {
            return Err("auditing is off on this replica".to_string());
        }
        let index = self.node.propose_noop().map_err(|error| error.to_string())?;
        self.drain();
        Ok(index)
    }

    /// Leader: repairs replica `id` now (for [`RepairMode::Manual`], or to repair again).
    pub fn repair(&mut self, id: NodeId) -> Result<(), String> {
        if self.audit.config.is_none() {
            return Err("auditing is off on this replica".to_string());
        }
        if !self.audits_as_leader() {
            return Err("this replica does not lead (or is quarantined itself)".to_string());
        }
        if id == self.node.id() {
            return Err("a leader is never repaired; it steps down when it differs".to_string());
        }
        if !self.node.membership().contains(id) {
            return Err(format!("replica {id} is not a member"));
        }
        self.audit_leader_term();
        let peer = self.audit.peers.entry(id).or_default();
        if !peer.quarantined {
            return Err(format!("replica {id} is not quarantined"));
        }
        self.start_repair(id);
        self.drain();
        Ok(())
    }

    // ----- hooks the driver calls ------------------------------------------------------------

    /// An audit message from another replica.
    pub(crate) fn on_audit(&mut self, from: NodeId, term: Term, message: AuditMessage) {
        if self.audit.config.is_none() || term != self.node.term() {
            return;
        }
        // Network input: only from another member of the cluster.
        if from == self.node.id() || !self.node.membership().contains(from) {
            return;
        }
        let leading = self.audits_as_leader();
        let from_leader = !leading && self.node.leader() == Some(from);
        match message {
            AuditMessage::Report(report) if leading => self.on_report(from, report),
            AuditMessage::Chains { values } if leading => self.on_chains(from, values),
            AuditMessage::RepairAnswer(answer) if leading => self.on_repair_answer(from, answer),
            AuditMessage::ChainsRequest { after, through } if from_leader => {
                let values = self.state.chains_between(after, through);
                self.send_audit(from, AuditMessage::Chains { values });
            }
            AuditMessage::Quarantine(divergence)
                if from_leader && divergence.replica == self.node.id() =>
            {
                self.enter_quarantine(divergence);
            }
            AuditMessage::RepairChunk(chunk) if from_leader => self.on_repair_chunk(from, chunk),
            AuditMessage::Cleared { index } if from_leader && self.audit.quarantined.is_some() => {
                self.audit.quarantined = None;
                self.audit.record_repaired(self.node.id(), index);
                self.node.set_quarantined(false);
                self.audit.last_report = LogIndex::ZERO;
            }
            AuditMessage::Agreed(point) if from_leader => {
                // (Sent again once this replica has applied the point: a checkpoint held there
                // is written then.)
                self.audit.agreed_digest = self.audit.agreed_digest.max(point.index);
                self.write_agreed_checkpoint(&point);
            }
            _ => {}
        }
    }

    /// Called after entries were applied: reports, comparisons of reports that waited for the
    /// leader to apply, verified answers, repairs waiting for a checkpoint.
    pub(crate) fn audit_after_apply(&mut self) {
        let Some(config) = self.audit.config else { return };
        if self.audits_as_leader() {
            self.audit_leader_term();
            let pending: Vec<(NodeId, LogIndex, u64)> = self
                .audit
                .peers
                .iter_mut()
                .filter_map(|(id, peer)| peer.pending.take().map(|(i, v)| (*id, i, v)))
                .collect();
            let compared = !pending.is_empty();
            for (id, index, value) in pending {
                self.compare_chain(id, index, value);
            }
            // Digests reported before this leader took its own: compare them now that it has.
            let digested = self.state.latest_digest().map_or(LogIndex::ZERO, |point| point.index);
            let waiting: Vec<NodeId> = self
                .audit
                .peers
                .iter()
                .filter(|(_, peer)| {
                    peer.digests.iter().any(|(index, (_, seen))| !seen && *index <= digested)
                })
                .map(|(id, _)| *id)
                .collect();
            let compared = compared || !waiting.is_empty();
            for id in waiting {
                self.compare_digests(id);
            }
            if digested > self.audit.agreed_digest {
                self.update_agreed_digest();
            }
            if compared {
                self.evaluate();
            }
            self.release_verified();
            if self.audit.peers.values().any(|peer| peer.repair.is_some()) {
                self.progress_repairs();
            }
        } else {
            let applied = self.state.chain().index;
            let interval = config.report_interval;
            let crossed = applied.get() / interval > self.audit.last_report.get() / interval;
            let new_digests = !self.state.take_new_digests().is_empty();
            if applied > self.audit.last_report && (config.verified_outputs || crossed)
                || new_digests
            {
                self.send_report();
            }
        }
    }

    /// Called every tick.
    pub(crate) fn audit_tick(&mut self) {
        if self.audit.config.is_none() {
            return;
        }
        self.audit.ticks_since_noop = self.audit.ticks_since_noop.saturating_add(1);
        let applied = self.state.chain().index;
        if applied == self.audit.applied_seen {
            self.audit.idle_ticks = self.audit.idle_ticks.saturating_add(1);
        } else {
            self.audit.applied_seen = applied;
            self.audit.idle_ticks = 0;
        }
        if self.audits_as_leader() {
            self.audit_leader_term();
            // Digest points are for followers' reports; a leader has no use for the list.
            self.state.take_new_digests();
            // Answers held while the verified index stands still: nothing will verify them
            // soon (a majority is down or quarantined); the clients ask again later.
            let verified = self.verified_index();
            if self.audit.held.is_empty() || verified != self.audit.verified_seen {
                self.audit.verified_seen = verified;
                self.audit.held_stall_ticks = 0;
            } else {
                self.audit.held_stall_ticks += 1;
                if self.audit.held_stall_ticks >= HELD_STALL_TICKS {
                    self.audit.held_stall_ticks = 0;
                    self.release_held_unverified();
                }
            }
            // Entries applied since the last digest point and nothing new for a while: place
            // one, so that a state that went wrong is found even when no more writes come.
            let digested = self.state.latest_digest().map_or(LogIndex::ZERO, |point| point.index);
            if self.audit.idle_ticks >= IDLE_DIGEST_TICKS
                && digested < applied
                && self.audit.ticks_since_noop >= NOOP_TICKS
                && self.node.propose_noop().is_ok()
            {
                self.audit.ticks_since_noop = 0;
            }
            let ids: Vec<NodeId> = self.audit.peers.keys().copied().collect();
            for id in ids {
                let Some(repair) = self.audit.peers.get_mut(&id).and_then(|p| p.repair.as_mut())
                else {
                    continue;
                };
                repair.idle_ticks += 1;
                if repair.idle_ticks >= REPAIR_STALL_TICKS {
                    // Start over: a fresh checkpoint, sent from its first byte.
                    *repair = OutgoingRepair::default();
                } else if repair.checkpoint.is_some() && repair.idle_ticks % REPAIR_ASK_TICKS == 0 {
                    // Nothing heard for a while (a chunk lost, or the replica was not ready):
                    // ask where to go on from.
                    self.send_repair_chunks(id, true);
                }
            }
            self.progress_repairs();
        } else {
            self.release_held_unverified();
            self.audit.ticks_since_report += 1;
            if self.audit.ticks_since_report >= REPORT_REPEAT_TICKS {
                self.send_report();
            }
        }
    }

    /// Whether a read-index request from `from` must be refused (it is quarantined).
    pub(crate) fn audit_refuses_reads_for(&self, from: NodeId) -> bool {
        self.audit.peers.get(&from).is_some_and(|peer| peer.quarantined)
            && self.audit.term == self.node.term()
    }

    /// Where the answer to a request applied at `index` goes: to the client now, or (verified
    /// outputs, on a leader) held until a majority reported the same chain there.
    pub(crate) fn complete(&mut self, index: LogIndex, completion: Completion<M::Output>) {
        if self.audit.quarantined.is_some() {
            // A divergent replica answers nothing with an output of its own.
            let request = completion_request(&completion);
            let refusal = Refusal::Retry("this replica is quarantined (its state differs)".into());
            self.completions.push(Completion::Refused { request, refusal });
            return;
        }
        let verified = self.audit.config.is_some_and(|config| config.verified_outputs);
        // Answers worked out from the replicated state (an output, or a refusal the session
        // table decided) are verified; the driver's own refusals are not.
        let from_state = matches!(
            completion,
            Completion::Done { .. }
                | Completion::Refused { refusal: Refusal::Stale | Refusal::Malformed, .. }
        );
        if verified && from_state {
            if self.node.role() == Role::Leader {
                if index <= self.verified_index() {
                    // A majority already reported the same chain at or after it.
                    self.audit.stats.outputs_verified += 1;
                    self.completions.push(completion);
                } else {
                    self.audit.held.entry(index).or_default().push(completion);
                }
            } else {
                // Only a leader learns the others' chains: a replica that proposed this and
                // no longer leads cannot verify it. The client asks again (same number), and
                // whoever leads answers from its session table.
                self.audit.stats.outputs_unverified += 1;
                let request = completion_request(&completion);
                let refusal = Refusal::Retry(
                    "this replica no longer leads: the answer could not be verified".to_string(),
                );
                self.completions.push(Completion::Refused { request, refusal });
            }
            return;
        }
        self.completions.push(completion);
    }

    /// Where the answer to a read served from the state as of `index` goes: with verified
    /// outputs only a leader answers (held like any answer), others send the client to it.
    pub(crate) fn complete_read(&mut self, index: LogIndex, completion: Completion<M::Output>) {
        let verified = self.audit.config.is_some_and(|config| config.verified_outputs);
        if verified && self.node.role() != Role::Leader && self.audit.quarantined.is_none() {
            let request = completion_request(&completion);
            let refusal = Refusal::NotLeader { leader: self.node.leader() };
            self.completions.push(Completion::Refused { request, refusal });
            return;
        }
        self.complete(index, completion);
    }

    // ----- leader ----------------------------------------------------------------------------

    /// Forgets what was gathered in an earlier term.
    fn audit_leader_term(&mut self) {
        if self.audit.term != self.node.term() {
            self.audit.term = self.node.term();
            self.audit.peers.clear();
            self.audit.checkpoint_wanted = None;
        }
    }

    fn on_report(&mut self, from: NodeId, report: ChainReport) {
        self.audit_leader_term();
        self.audit.stats.reports_received += 1;
        let peer = self.audit.peers.entry(from).or_default();
        if peer.quarantined && !report.quarantined {
            if report.restored_from != peer.quarantined_from {
                // Its state was replaced since it was found (a restart from a checkpoint a
                // majority vouched for, or a snapshot): judge it afresh from here.
                *peer = Peer::default();
                self.audit.record_repaired(from, report.restored_from);
            } else {
                // It was never told, or the notice was lost: tell it again.
                let notice = peer.found.clone();
                if let Some(divergence) = notice {
                    self.send_audit(from, AuditMessage::Quarantine(divergence));
                }
            }
        }
        let agreed_point = self.audit.agreed_point;
        let peer = self.audit.peers.entry(from).or_default();
        if let Some(point) = agreed_point {
            if point.index > peer.agreed_sent && report.applied >= point.index {
                // It has applied the agreed point now: a checkpoint it holds there can be
                // written.
                peer.agreed_sent = point.index;
                self.send_audit(from, AuditMessage::Agreed(point));
            }
        }
        let peer = self.audit.peers.entry(from).or_default();
        if !peer.quarantined && peer.restored_from != report.restored_from {
            // Its state was replaced since its last report (a restart from a checkpoint a
            // majority vouched for, a snapshot): the differences noted before say nothing of
            // it now. (Its digest points stay: they still vouch for what it held, and one it
            // reports again with another value is compared afresh.)
            peer.differs.clear();
            peer.pending = None;
        }
        peer.restored_from = report.restored_from;
        peer.reported = peer.reported.max(report.applied);
        peer.applied = report.applied;
        peer.log_first = report.log_first;
        for point in &report.digests {
            match peer.digests.get(&point.index) {
                Some((known, _)) if known == point => {}
                // New, or reported again with another value (its state was rebuilt since, a
                // replay from its log after a restart, say): compared afresh. Kept as first
                // reported, a stale difference outlived the state it described.
                _ => {
                    peer.digests.insert(point.index, (*point, false));
                }
            }
        }
        while peer.digests.len() > PEER_DIGESTS_KEPT {
            peer.digests.pop_first();
        }
        let newly_quarantined = report.quarantined && !peer.quarantined;
        if newly_quarantined {
            // Told by an earlier leader: it stays out until repaired.
            peer.quarantined = true;
            peer.quarantined_from = report.restored_from;
            peer.found.get_or_insert_with(|| Divergence {
                replica: from,
                kind: DivergenceKind::Output,
                index: report.applied,
                exact: false,
                expected: 0,
                found: report.chain,
                entry: "found by an earlier leader".to_string(),
                detected_at: report.applied,
            });
            // Narrow it down to the entry where it parted, as if found here.
            let (after, through) = (peer.agreed, report.applied);
            self.send_audit(from, AuditMessage::ChainsRequest { after, through });
        }
        self.compare_chain(from, report.applied, report.chain);
        self.compare_digests(from);
        self.update_agreed_digest();
        self.evaluate();
        self.release_verified();
        if newly_quarantined && self.repair_mode() == RepairMode::Automatic {
            self.start_repair(from);
        }
        self.progress_repairs();
    }

    fn repair_mode(&self) -> RepairMode {
        self.audit.config.map_or(RepairMode::Automatic, |config| config.repair)
    }

    fn compare_chain(&mut self, from: NodeId, index: LogIndex, value: u64) {
        if index > self.state.chain().index {
            if let Some(peer) = self.audit.peers.get_mut(&from) {
                peer.pending = Some((index, value));
            }
            return;
        }
        let Some(own) = self.state.chain_at(index) else { return };
        if own == value {
            if let Some(peer) = self.audit.peers.get_mut(&from) {
                peer.agreed = peer.agreed.max(index);
                // Chains that agree here agree everywhere before (or the replica's state was
                // replaced by a snapshot since): an older output difference is gone.
                peer.differs
                    .retain(|known| known.kind != DivergenceKind::Output || known.index > index);
            }
            return;
        }
        let divergence = Divergence {
            replica: from,
            kind: DivergenceKind::Output,
            index,
            exact: false,
            expected: own,
            found: value,
            entry: self.describe_entry(index),
            detected_at: self.node.commit_index(),
        };
        self.note_difference(from, divergence);
    }

    fn compare_digests(&mut self, from: NodeId) {
        let applied = self.state.chain().index;
        let unchecked: Vec<DigestPoint> = match self.audit.peers.get(&from) {
            Some(peer) => peer
                .digests
                .values()
                .filter(|(point, compared)| !compared && point.index <= applied)
                .map(|(point, _)| *point)
                .collect(),
            None => return,
        };
        for point in unchecked {
            if let Some((_, compared)) =
                self.audit.peers.get_mut(&from).and_then(|peer| peer.digests.get_mut(&point.index))
            {
                *compared = true;
            }
            let Some(own) = self.state.digest_at(point.index) else { continue };
            if own.chain != point.chain {
                self.compare_chain(from, point.index, point.chain);
                continue;
            }
            if own.digest == point.digest {
                let healed = self.audit.peers.get(&from).is_some_and(|peer| {
                    peer.quarantined
                        && peer.found.as_ref().is_some_and(|found| point.index > found.detected_at)
                });
                if healed {
                    // Quarantined, and now the same state and chain as this leader at a point
                    // placed after it was found (it restarted and replayed its log right): it
                    // rejoins without a repair.
                    if let Some(peer) = self.audit.peers.get_mut(&from) {
                        let restored_from = peer.restored_from;
                        *peer = Peer { restored_from, ..Peer::default() };
                    }
                    self.audit.record_repaired(from, point.index);
                    self.send_audit(from, AuditMessage::Cleared { index: point.index });
                }
                if let Some(peer) = self.audit.peers.get_mut(&from) {
                    peer.agreed = peer.agreed.max(point.index);
                    peer.agreed_digest = peer.agreed_digest.max(Some(point.index));
                    // Same state and chain here: whatever differed before is gone.
                    peer.differs.retain(|known| known.index > point.index);
                }
                continue;
            }
            let divergence = Divergence {
                replica: from,
                kind: DivergenceKind::State,
                index: point.index,
                exact: false,
                expected: digest_prefix(&own.digest),
                found: digest_prefix(&point.digest),
                entry: format!("state digest at {} (outputs alike so far)", point.index),
                detected_at: self.node.commit_index(),
            };
            self.note_difference(from, divergence);
        }
    }

    /// Finds the newest digest point a majority agrees on; tells every replica when it moves
    /// (each writes the checkpoint it holds there, if its state was the same).
    fn update_agreed_digest(&mut self) {
        let newest = self.state.newest_digests(crate::driver::DIGESTS_KEPT).into_iter().rev().find(
            |point| {
                point.index > self.audit.agreed_digest && self.digest_agreed(point.index, point)
            },
        );
        let Some(point) = newest else { return };
        self.audit.agreed_digest = point.index;
        self.audit.agreed_point = Some(point);
        let me = self.node.id();
        let peers: Vec<NodeId> =
            self.node.membership().members().into_iter().filter(|id| *id != me).collect();
        for id in peers {
            let applied = self.audit.peers.get(&id).map_or(LogIndex::ZERO, |peer| peer.applied);
            if applied >= point.index {
                if let Some(peer) = self.audit.peers.get_mut(&id) {
                    peer.agreed_sent = point.index;
                }
                self.send_audit(id, AuditMessage::Agreed(point));
            }
        }
        self.write_agreed_checkpoint(&point);
    }

    /// Holds a checkpoint of the state just after applying digest point `index` until a
    /// majority vouches for it.
    pub(crate) fn hold_checkpoint(&mut self, index: LogIndex) {
        let Some(point) = self.state.digest_at(index) else { return };
        let Some(last_term) = self.node.log_term(index) else { return };
        let meta = lockstep_core::SnapshotMeta {
            last_index: index,
            last_term,
            membership: self.node.membership_at(index),
        };
        let state: Box<dyn lockstep_core::StateSnapshot> = Box::new(self.state.snapshot());
        self.audit.pending_checkpoints.push_back(PendingCheckpoint { point, meta, state });
        while self.audit.pending_checkpoints.len() > PENDING_CHECKPOINTS_MAX {
            self.audit.pending_checkpoints.pop_front();
        }
        if self.audits_as_leader() {
            // A single voter, or reports that came first, may vouch at once.
            self.update_agreed_digest();
        }
    }

    /// A majority reported `point`: write the checkpoint held there if this replica's state
    /// was the same; drop older ones.
    fn write_agreed_checkpoint(&mut self, point: &DigestPoint) {
        while self.audit.pending_checkpoints.front().is_some_and(|p| p.point.index < point.index) {
            self.audit.pending_checkpoints.pop_front();
        }
        let Some(front) = self.audit.pending_checkpoints.front() else { return };
        if front.point.index != point.index {
            return;
        }
        let Some(pending) = self.audit.pending_checkpoints.pop_front() else { return };
        if pending.point != *point
            || self.checkpoints.in_progress
            || self.quarantined()
            || self.transfers_under_way()
        {
            return;
        }
        self.start_checkpoint_from(pending.meta, pending.state);
    }

    fn note_difference(&mut self, from: NodeId, divergence: Divergence) {
        let Some(peer) = self.audit.peers.get_mut(&from) else { return };
        let kind = divergence.kind;
        match kind {
            DivergenceKind::Output => {
                if let Some(known) = peer.differs.iter_mut().find(|known| known.kind == kind) {
                    if divergence.index < known.index {
                        *known = divergence;
                    }
                    return;
                }
            }
            DivergenceKind::State => {
                if peer
                    .differs
                    .iter()
                    .any(|known| known.kind == kind && known.index == divergence.index)
                {
                    return;
                }
                let states = peer.differs.iter().filter(|known| known.kind == kind).count();
                if states >= DIFFERENCES_KEPT {
                    if let Some(oldest) = peer.differs.iter().position(|known| known.kind == kind) {
                        peer.differs.remove(oldest);
                    }
                }
            }
        }
        peer.differs.push(divergence);
    }

    /// Judges the differences seen: a replica that differs where a majority agrees is
    /// divergent; a leader that a majority differs from is.
    fn evaluate(&mut self) {
        if cfg!(feature = "sabotage") && self.audit.sabotage_no_compare
            || self.audit.quarantined.is_some()
        {
            return;
        }
        // Nothing differs and nobody is quarantined: nothing to judge.
        if self.audit.peers.values().all(|peer| peer.differs.is_empty() && !peer.quarantined) {
            return;
        }
        let membership = self.node.membership().clone();
        let me = self.node.id();
        let peers = &self.audit.peers;
        // A quorum (each half of a joint configuration) of other voters differs from this
        // leader: it is the one that differs.
        let dissent = membership.all_voters().contains(&me)
            && membership.is_quorum(&|voter| {
                voter != me
                    && peers
                        .get(&voter)
                        .is_some_and(|peer| !peer.quarantined && !peer.differs.is_empty())
            });
        // Or a quorum of other voters, quarantined ones included, reported one and the same
        // state at a recent digest point, and it is not this leader's.
        let outvoted =
            self.state.newest_digests(DIGESTS_COMPARED).into_iter().rev().find_map(|own| {
                let mut groups: BTreeMap<([u8; 32], u64), Vec<NodeId>> = BTreeMap::new();
                for (id, peer) in peers.iter() {
                    if let Some((point, _)) = peer.digests.get(&own.index) {
                        if point.digest != own.digest || point.chain != own.chain {
                            groups.entry((point.digest, point.chain)).or_default().push(*id);
                        }
                    }
                }
                groups.into_iter().find_map(|((digest, chain), group)| {
                    let quorum = membership.all_voters().contains(&me)
                        && membership.is_quorum(&|voter| group.contains(&voter));
                    quorum.then(|| Divergence {
                        replica: me,
                        kind: if chain == own.chain {
                            DivergenceKind::State
                        } else {
                            DivergenceKind::Output
                        },
                        index: own.index,
                        exact: false,
                        expected: if chain == own.chain { digest_prefix(&digest) } else { chain },
                        found: if chain == own.chain {
                            digest_prefix(&own.digest)
                        } else {
                            own.chain
                        },
                        entry: format!("state digest at {}", own.index),
                        detected_at: self.node.commit_index(),
                    })
                })
            });
        if let Some(divergence) = outvoted {
            self.audit.stats.self_quarantines += 1;
            self.enter_quarantine(divergence);
            return;
        }
        if dissent {
            let first = peers
                .values()
                .filter(|peer| !peer.quarantined)
                .flat_map(|peer| peer.differs.iter())
                .min_by_key(|divergence| divergence.index)
                .cloned();
            if let Some(first) = first {
                let divergence = Divergence {
                    replica: me,
                    expected: first.found,
                    found: first.expected,
                    ..first
                };
                self.audit.stats.self_quarantines += 1;
                self.enter_quarantine(divergence);
            }
            return;
        }
        let judged: Vec<(NodeId, Divergence)> = peers
            .iter()
            .filter(|(_, peer)| !peer.quarantined)
            .filter_map(|(id, peer)| {
                let backed = |divergence: &Divergence| {
                    // Chains that agree say the outputs agree, nothing of the state: a state
                    // digest is backed only by the same digest at the same point.
                    let own_digest = self.state.digest_at(divergence.index);
                    let backs = |other: &Peer| match divergence.kind {
                        DivergenceKind::Output => other.agreed >= divergence.index,
                        DivergenceKind::State => own_digest.is_some_and(|own| {
                            other
                                .digests
                                .get(&divergence.index)
                                .is_some_and(|(point, _)| *point == own)
                        }),
                    };
                    // A quorum of voters, this leader included and the replica judged left
                    // out, agrees where it differs.
                    membership.is_quorum(&|voter| {
                        voter == me
                            || (voter != *id
                                && peers
                                    .get(&voter)
                                    .is_some_and(|other| !other.quarantined && backs(other)))
                    })
                };
                // An output difference first (it names an entry), then the earliest digest.
                let mut candidates: Vec<&Divergence> = peer.differs.iter().collect();
                candidates.sort_by_key(|known| (known.kind != DivergenceKind::Output, known.index));
                candidates.into_iter().find(|known| backed(known)).map(|known| (*id, known.clone()))
            })
            .collect();
        for (id, divergence) in judged {
            self.found_divergent(id, divergence);
        }
    }

    fn found_divergent(&mut self, id: NodeId, divergence: Divergence) {
        let Some(peer) = self.audit.peers.get_mut(&id) else { return };
        peer.found = Some(divergence.clone());
        peer.quarantined = true;
        peer.quarantined_from = peer.restored_from;
        let after = peer.agreed;
        self.audit.stats.divergences_found += 1;
        self.audit.record(divergence.clone());
        let narrow = divergence.kind == DivergenceKind::Output;
        let through = divergence.index;
        self.send_audit(id, AuditMessage::Quarantine(divergence));
        if narrow {
            self.send_audit(id, AuditMessage::ChainsRequest { after, through });
        }
        if self.repair_mode() == RepairMode::Automatic {
            self.start_repair(id);
        }
    }

    /// The divergent replica's chains over the window where it parted: find the first entry
    /// where they differ from this leader's (the chain differs from there on, so a bisection
    /// over the values finds it).
    fn on_chains(&mut self, from: NodeId, values: Vec<(LogIndex, u64)>) {
        let Some(known) = self.audit.peers.get(&from).and_then(|peer| peer.found.clone()) else {
            return;
        };
        let comparable: Vec<(LogIndex, u64, u64)> = values
            .into_iter()
            .filter(|(index, _)| *index <= known.index)
            .filter_map(|(index, value)| Some((index, value, self.state.chain_at(index)?)))
            .collect();
        let first_differing = comparable.partition_point(|(_, value, own)| value == own);
        let Some((index, found, expected)) = comparable.get(first_differing).copied() else {
            return;
        };
        let exact = first_differing > 0 && comparable[first_differing - 1].0.next() == index
            || self.audit.peers.get(&from).is_some_and(|peer| peer.agreed.next() == index);
        let divergence = Divergence {
            index,
            exact,
            expected,
            found,
            entry: self.describe_entry(index),
            ..known
        };
        if let Some(peer) = self.audit.peers.get_mut(&from) {
            peer.found = Some(divergence.clone());
        }
        self.audit.record(divergence.clone());
        self.send_audit(from, AuditMessage::Quarantine(divergence));
    }

    fn describe_entry(&self, index: LogIndex) -> String {
        match self.node.log_entry(index) {
            Some(entry) => match &entry.payload {
                EntryPayload::Command(command) => format!(
                    "entry {index} (term {}): a command of {} bytes, xxh3 {:016x}",
                    entry.term,
                    command.data.len(),
                    xxhash_rust::xxh3::xxh3_64(&command.data)
                ),
                EntryPayload::Noop => format!("entry {index} (term {}): a no-op", entry.term),
                EntryPayload::Config(_) => {
                    format!("entry {index} (term {}): a configuration", entry.term)
                }
            },
            None => format!("entry {index} (no longer in the leader's log)"),
        }
    }

    /// The newest index whose chain a majority of voters (this leader included) reported alike.
    fn verified_index(&self) -> LogIndex {
        let me = self.node.id();
        let applied = self.state.chain().index;
        self.node.membership().committed_index(&|id| {
            if id == me {
                applied
            } else {
                self.audit
                    .peers
                    .get(&id)
                    .filter(|peer| !peer.quarantined)
                    .map_or(LogIndex::ZERO, |peer| peer.agreed)
            }
        })
    }

    fn release_verified(&mut self) {
        if self.audit.held.is_empty() {
            return;
        }
        if self.node.role() != Role::Leader || self.audit.quarantined.is_some() {
            self.release_held_unverified();
            return;
        }
        let verified = self.verified_index();
        while let Some(entry) = self.audit.held.first_entry() {
            if *entry.key() > verified {
                break;
            }
            let completions = entry.remove();
            self.audit.stats.outputs_verified += completions.len() as u64;
            self.completions.extend(completions);
        }
    }

    /// No longer leading: answers still held were never verified; the client retries (with the
    /// same number, answered from the session table by whoever leads).
    fn release_held_unverified(&mut self) {
        for (_, completions) in std::mem::take(&mut self.audit.held) {
            for completion in completions {
                self.audit.stats.outputs_unverified += 1;
                let request = completion_request(&completion);
                let refusal =
                    Refusal::Retry("the answer could not be verified by a majority".to_string());
                self.completions.push(Completion::Refused { request, refusal });
            }
        }
    }

    fn start_repair(&mut self, id: NodeId) {
        let Some(peer) = self.audit.peers.get_mut(&id) else { return };
        if peer.repair.is_none() {
            peer.repair = Some(OutgoingRepair::default());
            self.audit.stats.repairs_started += 1;
        }
        self.progress_repairs();
    }

    /// Moves each repair on: find (or make) a checkpoint a majority agrees with, then stream it.
    fn progress_repairs(&mut self) {
        let ids: Vec<NodeId> = self
            .audit
            .peers
            .iter()
            .filter(|(_, peer)| peer.repair.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let has_checkpoint = self
                .audit
                .peers
                .get(&id)
                .and_then(|peer| peer.repair.as_ref())
                .is_some_and(|repair| repair.checkpoint.is_some());
            if has_checkpoint {
                continue;
            }
            if let Some(found) = self.agreed_checkpoint(id) {
                if let Some(repair) = self.audit.peers.get_mut(&id).and_then(|p| p.repair.as_mut())
                {
                    repair.checkpoint = Some(found);
                    repair.acked = 0;
                    repair.sent = 0;
                    repair.idle_ticks = 0;
                }
                self.send_repair_chunks(id, true);
                continue;
            }
            self.want_checkpoint();
        }
    }

    /// Places a no-op to checkpoint at (a digest point every replica reports), at most one
    /// every [`NOOP_TICKS`] ticks and none while one is on its way.
    fn want_checkpoint(&mut self) {
        if self.audit.checkpoint_wanted.is_some() || self.audit.ticks_since_noop < NOOP_TICKS {
            return;
        }
        if let Ok(wanted) = self.node.propose_noop() {
            self.audit.checkpoint_wanted = Some(wanted);
            self.audit.ticks_since_noop = 0;
        }
    }

    /// Whether a quorum of voters (this leader included; each half of a joint configuration)
    /// reported `own` at `index`.
    fn digest_agreed(&self, index: LogIndex, own: &DigestPoint) -> bool {
        let me = self.node.id();
        self.node.membership().is_quorum(&|voter| {
            voter == me
                || self.audit.peers.get(&voter).is_some_and(|other| {
                    !other.quarantined
                        && other.digests.get(&index).is_some_and(|(point, _)| point == own)
                })
        })
    }

    /// This leader's latest checkpoint, if it is at a digest point where a majority of voters
    /// reported the same digest and chain, and replica `id` can re-apply its log after it.
    fn agreed_checkpoint(&self, id: NodeId) -> Option<(Checkpoint, DigestPoint)> {
        let checkpoint = self.storage.latest_checkpoint()?;
        let index = checkpoint.meta.last_index;
        let own = self.state.digest_at(index)?;
        let peer = self.audit.peers.get(&id)?;
        if index.get().saturating_add(1) < peer.log_first.get() || index > peer.applied {
            return None;
        }
        if peer.bad_checkpoint == Some(index) {
            return None;
        }
        self.digest_agreed(index, &own).then_some((checkpoint, own))
    }

    fn send_repair_chunks(&mut self, to: NodeId, offer: bool) {
        let policy = self.checkpoints.policy.unwrap_or_default();
        let chunk_bytes =
            policy.chunk_bytes.clamp(1, lockstep_core::message::SNAPSHOT_CHUNK_BYTES_MAX);
        let window = chunk_bytes.saturating_mul(policy.chunks_in_flight.max(1));
        loop {
            let Some(repair) = self.audit.peers.get(&to).and_then(|p| p.repair.as_ref()) else {
                return;
            };
            let Some((checkpoint, point)) = repair.checkpoint.clone() else { return };
            let total = checkpoint.total_bytes;
            let (offset, data) = if offer {
                (0, Bytes::new())
            } else {
                if repair.sent >= total || repair.sent - repair.acked >= window {
                    return;
                }
                let offset = repair.sent;
                let len = chunk_bytes.min(total - offset);
                match self.storage.read_checkpoint(&checkpoint, offset, len) {
                    Ok(data) => (offset, Bytes::from(data)),
                    Err(_) => {
                        // Replaced by a newer checkpoint: start over with a fresh one.
                        if let Some(repair) =
                            self.audit.peers.get_mut(&to).and_then(|p| p.repair.as_mut())
                        {
                            *repair = OutgoingRepair::default();
                        }
                        return;
                    }
                }
            };
            let len = data.len() as u64;
            let chunk = InstallSnapshot {
                meta: checkpoint.meta.clone(),
                total_bytes: total,
                digest: checkpoint.digest,
                offset,
                checksum: crc32c::crc32c(&data),
                data,
            };
            let message = RepairChunk { chunk, state_digest: point.digest, chain: point.chain };
            self.send_audit(to, AuditMessage::RepairChunk(message));
            if offer {
                return;
            }
            if let Some(repair) = self.audit.peers.get_mut(&to).and_then(|p| p.repair.as_mut()) {
                repair.sent = offset + len;
            }
        }
    }

    fn on_repair_answer(&mut self, from: NodeId, answer: RepairAnswer) {
        let Some(peer) = self.audit.peers.get_mut(&from) else { return };
        let Some(repair) = peer.repair.as_mut() else { return };
        let Some((checkpoint, _)) = &repair.checkpoint else { return };
        if checkpoint.meta.last_index != answer.index {
            return;
        }
        repair.idle_ticks = 0;
        if answer.repaired {
            *peer = Peer::default();
            self.audit.record_repaired(from, answer.index);
            return;
        }
        if let Some(reason) = answer.refused {
            self.audit.stats.repair_refusals += 1;
            if reason.starts_with(REFUSED_FOR_GOOD) {
                // This checkpoint will never do: make a fresh one.
                *repair = OutgoingRepair::default();
                peer.bad_checkpoint = Some(answer.index);
            } else if reason.starts_with(NOT_QUARANTINED) {
                // It never got the notice: send it again, and the chunks after it.
                repair.acked = 0;
                repair.sent = 0;
                let notice = peer.found.clone();
                if let Some(divergence) = notice {
                    self.send_audit(from, AuditMessage::Quarantine(divergence));
                }
            } else {
                repair.acked = answer.next_offset;
                repair.sent = answer.next_offset;
            }
            return;
        }
        if answer.next_offset <= repair.acked {
            // No progress: the answer to an offer (chunks were lost on the way): resend from
            // what the replica holds.
            repair.sent = answer.next_offset;
        }
        repair.acked = answer.next_offset;
        repair.sent = repair.sent.max(repair.acked);
        self.send_repair_chunks(from, false);
    }

    // ----- any replica -----------------------------------------------------------------------

    fn send_audit(&mut self, to: NodeId, message: AuditMessage) {
        let message = Message {
            from: self.node.id(),
            to,
            term: self.node.term(),
            body: MessageBody::Audit(Box::new(message)),
        };
        self.transport.send(message);
    }

    fn send_report(&mut self) {
        let Some(leader) = self.node.leader() else { return };
        if leader == self.node.id() {
            return;
        }
        let chain = self.state.chain();
        let digests = self.state.newest_digests(DIGESTS_PER_REPORT);
        let report = ChainReport {
            applied: chain.index,
            chain: chain.value,
            digests,
            log_first: self.node.first_index(),
            quarantined: self.audit.quarantined.is_some(),
            restored_from: self.state.restored_from(),
        };
        self.audit.last_report = chain.index;
        self.audit.ticks_since_report = 0;
        self.send_audit(leader, AuditMessage::Report(report));
    }

    /// The replicated state was replaced by a checkpoint a majority vouched for (a snapshot
    /// from the leader): whatever this replica got wrong before is gone.
    pub(crate) fn audit_state_replaced(&mut self, index: LogIndex) {
        if self.audit.quarantined.take().is_some() {
            self.audit.record_repaired(self.node.id(), index);
            self.node.set_quarantined(false);
        }
        self.audit.pending_checkpoints.clear();
        self.audit.last_report = LogIndex::ZERO;
    }

    fn enter_quarantine(&mut self, divergence: Divergence) {
        self.audit.record(divergence.clone());
        self.audit.quarantined = Some(divergence);
        self.node.set_quarantined(true);
        self.release_held_unverified();
        // Reads waiting here would be answered from a state the majority disagrees with.
        let waiting: Vec<RequestId> =
            std::mem::take(&mut self.reads).into_values().map(|(request, _)| request).collect();
        for request in waiting {
            let refusal = Refusal::Retry("this replica is quarantined (its state differs)".into());
            self.completions.push(Completion::Refused { request, refusal });
        }
    }

    fn on_repair_chunk(&mut self, from: NodeId, message: RepairChunk) {
        let RepairChunk { chunk, state_digest, chain } = message;
        let index = chunk.meta.last_index;
        let answer = |next_offset: u64, repaired: bool, refused: Option<String>| RepairAnswer {
            index,
            next_offset,
            repaired,
            refused,
        };
        let refuse = |driver: &mut Self, next_offset: u64, why: String| {
            driver.audit.stats.repair_refusals += 1;
            let refused = answer(next_offset, false, Some(why));
            driver.send_audit(from, AuditMessage::RepairAnswer(refused));
        };
        if self.audit.quarantined.is_none() {
            // Never told (or told and repaired since): the leader sends the notice again if it
            // still holds this replica divergent.
            refuse(self, 0, format!("{NOT_QUARANTINED}: this replica holds itself healthy"));
            return;
        }
        if index.get().saturating_add(1) < self.node.first_index().get() {
            let why = format!(
                "{REFUSED_FOR_GOOD}: checkpoint {index} is older than this replica's log (from {})",
                self.node.first_index()
            );
            refuse(self, 0, why);
            return;
        }
        if index > self.node.applied_index() || self.checkpoints.in_progress {
            let why = "not ready: the checkpoint is past what was applied here, or a checkpoint \
                       is being written"
                .to_string();
            refuse(self, 0, why);
            return;
        }
        if crc32c::crc32c(&chunk.data) != chunk.checksum {
            let held = self.storage.snapshot_bytes_received();
            refuse(self, held, format!("chunk at byte {} fails its CRC32C", chunk.offset));
            return;
        }
        let received = match self.storage.receive_snapshot_chunk(&chunk) {
            Ok(received) => received,
            Err(error) => {
                let held = self.storage.snapshot_bytes_received();
                refuse(self, held, error);
                return;
            }
        };
        if received < chunk.total_bytes {
            self.send_audit(from, AuditMessage::RepairAnswer(answer(received, false, None)));
            return;
        }
        // Restore it before it is kept, and keep it only if it is the state the majority
        // reported: until then, what is on disk stays as it was.
        let mut reader = match self.storage.received_snapshot_reader() {
            Ok(reader) => reader,
            Err(error) => {
                self.storage.abandon_snapshot();
                refuse(self, 0, format!("{REFUSED_FOR_GOOD}: checkpoint {index}: {error}"));
                return;
            }
        };
        let restored = self.state.restore(&mut reader).map_err(|error| error.to_string());
        // Entries handed out before and not yet applied follow a state that is gone.
        self.forget_queued_entries();
        let checked = restored.and_then(|()| {
            let digest = self.state.state_digest();
            let restored_chain = self.state.chain();
            if digest == state_digest && restored_chain == (Chain { index, value: chain }) {
                Ok(())
            } else {
                Err(format!(
                    "it restores to digest {:016x} and chain {:016x}; the majority reported \
                     {:016x} and {chain:016x}",
                    digest_prefix(&digest),
                    restored_chain.value,
                    digest_prefix(&state_digest)
                ))
            }
        });
        if let Err(why) = checked {
            // The state in memory is now neither this replica's nor the majority's, and the
            // log applied after it would not match: this replica stops (its disk keeps what it
            // had; a restart recovers from its own vouched checkpoint and log).
            self.storage.abandon_snapshot();
            refuse(self, 0, format!("{REFUSED_FOR_GOOD}: checkpoint {index}: {why}"));
            self.failure = Some(format!("repair from checkpoint {index} failed: {why}"));
            return;
        }
        if let Err(error) = self.storage.finish_snapshot() {
            // The state in memory is the agreed one; the disk keeps its older checkpoint (a
            // restart replays the log from there).
            let note = format!("the repair checkpoint {index} could not be kept: {error}");
            if self.checkpoints.refusals.len() == crate::checkpoint::REFUSALS_KEPT {
                self.checkpoints.refusals.pop_front();
            }
            self.checkpoints.refusals.push_back(note);
        }
        if !self.node.rewind_applied(index) {
            self.failure = Some(format!(
                "repair from checkpoint {index}: the log no longer holds the entries after it"
            ));
            return;
        }
        self.restored_at(index);
        self.audit.quarantined = None;
        self.audit.record_repaired(self.node.id(), index);
        self.audit.stats.repairs_done += 1;
        self.audit.last_report = LogIndex::ZERO;
        self.audit.pending_checkpoints.clear();
        self.node.set_quarantined(false);
        self.send_audit(from, AuditMessage::RepairAnswer(answer(chunk.total_bytes, true, None)));
    }
}

/// A refusal that starts with this is final for that checkpoint: the leader makes a new one.
const REFUSED_FOR_GOOD: &str = "refused";
/// A refusal that starts with this says the replica holds itself healthy (it never got the
/// notice): the leader sends it again.
const NOT_QUARANTINED: &str = "not quarantined";

fn digest_prefix(digest: &[u8; 32]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

fn completion_request<O>(completion: &Completion<O>) -> RequestId {
    match completion {
        Completion::Done { request, .. } | Completion::Refused { request, .. } => *request,
    }
}
