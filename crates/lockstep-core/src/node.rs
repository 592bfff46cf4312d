//! One replica's protocol state and its inputs.
//!
//! [`Node`] is the whole protocol for one replica. The mechanisms live in their own files as
//! further `impl Node` blocks: [`crate::election`] (timeouts, pre-vote, votes, roles,
//! leadership transfer), [`crate::replication`] (appends, conflicts, commit) and
//! [`crate::read`] (read-index and lease reads).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::log::RaftLog;
use crate::membership::Membership;
use crate::message::{
    AppendResponse, HeartbeatResponse, InstallSnapshot, InstallSnapshotResponse, Message,
    MessageBody,
};
use crate::output::{
    Event, Output, ProposeError, Proposed, RejectReason, SnapshotAnswer, SnapshotChunk, Stats,
};
use crate::progress::Progress;
use crate::read::{ConfirmedRead, ReadState};
use crate::rng::SeededRng;
use crate::types::{
    Command, Entry, EntryPayload, HardState, LogIndex, NodeId, ReadId, Role, SnapshotMeta, Term,
};

/// What a replica recovered from its disk (or, for a new cluster, how it starts).
#[derive(Clone, Debug)]
pub struct InitialState {
    /// The durable hard state.
    pub hard_state: HardState,
    /// The latest snapshot, if any; the log continues after it.
    pub snapshot: Option<SnapshotMeta>,
    /// The durable log entries after the snapshot, consecutive.
    pub entries: Vec<Entry>,
    /// The configuration to use when neither the snapshot nor the log holds one (the
    /// configuration a new cluster is bootstrapped with).
    pub membership: Membership,
    /// The index the state machine has already applied (at least the snapshot's index).
    pub applied: LogIndex,
    /// Set when storage found damage and set this replica's log aside: it held entries
    /// through this index, and may have acknowledged them to a leader, which may count that
    /// acknowledgement towards a commit. Until its log reaches this index again (from leaders),
    /// or a leader that heard from it since says it holds that leader's whole log, the replica
    /// neither campaigns nor votes, and tells the leader it lost entries, so that no leader
    /// lacking them can be elected with its help.
    pub lost_through: Option<LogIndex>,
    /// With `lost_through`: the term of the hard state when the damage was found, so at least
    /// the term of every entry the replica may have acknowledged. While it is short of lost
    /// entries it may vote for a candidate whose last entry is of a later term (whose log
    /// holds every entry those acknowledgements could have committed, by the same argument
    /// as Raft's election restriction, §5.4.3). `None`: it votes for no one until it holds its
    /// entries again.
    pub lost_term_max: Option<Term>,
}

impl InitialState {
    /// A replica of a brand-new cluster of `voters`, with an empty log.
    pub fn new_cluster(voters: impl IntoIterator<Item = NodeId>) -> InitialState {
        InitialState {
            hard_state: HardState::default(),
            snapshot: None,
            entries: Vec::new(),
            membership: Membership::with_voters(voters),
            applied: LogIndex::ZERO,
            lost_through: None,
            lost_term_max: None,
        }
    }
}

/// Messages carrying a term or index above this are refused: no real cluster gets near it,
/// and it keeps every `next()` far from overflowing.
pub const VALUE_MAX: u64 = u64::MAX / 2;

/// A log write handed out to the driver and not yet reported durable.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriteInFlight {
    /// The write's last entry, which the driver reports in `persisted`.
    pub last_index: LogIndex,
    pub last_term: Term,
    /// Where the write truncates the log first, if it does.
    pub truncate_from: Option<LogIndex>,
}

/// Checks what a message's body claims before anything acts on it (its term included):
/// entries must follow `prev_index` consecutively with sane terms, and no index may be absurd.
fn check_body(message: &Message) -> Result<(), RejectReason> {
    let in_range = |index: LogIndex| index.get() <= VALUE_MAX;
    let ok = match &message.body {
        MessageBody::PreVote(request) | MessageBody::Vote(request) => {
            in_range(request.last_log_index) && request.last_log_term.get() <= VALUE_MAX
        }
        MessageBody::Append(append) => {
            if !crate::replication::append_is_well_formed(append, message.term) {
                return Err(RejectReason::MalformedEntries);
            }
            in_range(append.commit)
        }
        MessageBody::AppendResponse(crate::message::AppendResponse::Accepted { match_index }) => {
            in_range(*match_index)
        }
        MessageBody::AppendResponse(crate::message::AppendResponse::Rejected {
            rejected_index,
            hint_index,
            hint_term,
            ..
        }) => {
            in_range(*rejected_index)
                && hint_index <= rejected_index
                && hint_term.get() <= VALUE_MAX
        }
        MessageBody::Heartbeat(heartbeat) => {
            in_range(heartbeat.commit)
                && heartbeat.lost_check.is_none_or(|check| {
                    in_range(check.last_index) && check.last_term.get() <= VALUE_MAX
                })
        }
        MessageBody::ReadIndexResponse(response) => response.index.is_none_or(in_range),
        MessageBody::InstallSnapshot(chunk) => {
            let length = chunk.data.len() as u64;
            in_range(chunk.meta.last_index)
                && chunk.meta.last_term <= message.term
                && length <= crate::message::SNAPSHOT_CHUNK_BYTES_MAX
                && chunk.offset.checked_add(length).is_some_and(|end| end <= chunk.total_bytes)
                && chunk.meta.membership.validate().is_ok()
        }
        MessageBody::InstallSnapshotResponse(response) => in_range(response.last_index),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(RejectReason::OutOfRange)
    }
}

/// The Raft protocol for one replica, as a pure state machine.
///
/// Feed it inputs ([`Node::step`], [`Node::tick`], [`Node::propose`], [`Node::read_index`],
/// [`Node::persisted`], [`Node::applied`], [`Node::transfer_leadership`]), then drain what it
/// asks for with [`Node::take_output`]. See [`crate::output`] for the order in which a driver
/// must carry out an output.
#[derive(Debug)]
pub struct Node {
    pub(crate) config: Config,
    pub(crate) rng: SeededRng,

    // Durable state (mirrors what the disk holds once the handed-out outputs are written).
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) commit: LogIndex,
    pub(crate) log: RaftLog,
    /// The configuration from the snapshot or bootstrap; log entries override it.
    pub(crate) base_membership: Membership,
    pub(crate) membership: Membership,

    /// The hard state last handed out for persisting.
    pub(crate) hard_state_sent: HardState,
    /// Log writes handed out and not yet reported durable, oldest first.
    pub(crate) writes_in_flight: VecDeque<WriteInFlight>,
    /// The disk's log ends here as of the newest write reported durable.
    pub(crate) durable_index: LogIndex,
    /// The log is durable up to here and no write still under way will remove any of it.
    pub(crate) persisted_index: LogIndex,

    // Volatile state.
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    /// The (role, term) last reported in an event.
    pub(crate) role_reported: (Role, Term),
    /// Ticks since boot; the core's only notion of time.
    pub(crate) tick_count: u64,
    /// Followers and candidates: ticks since the last election reset. Leaders: ticks since the
    /// last check-quorum round.
    pub(crate) election_elapsed: u64,
    pub(crate) heartbeat_elapsed: u64,
    pub(crate) randomized_election_timeout: u64,
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    pub(crate) transfer_target: Option<NodeId>,
    /// Ticks since the current leadership transfer started.
    pub(crate) transfer_elapsed: u64,
    /// This leader sent timeout-now in this term: another replica may be elected before the
    /// lease would end, so lease reads are off until the term ends.
    pub(crate) lease_revoked: bool,
    pub(crate) reads: ReadState,
    /// Largest command timestamp in the log, so timestamps never go backwards.
    pub(crate) timestamp_millis_max: u64,
    /// Leader: bytes of entries proposed in this term and not yet committed.
    pub(crate) uncommitted_bytes: u64,

    /// The index of the last configuration entry in the log (zero if none is held).
    pub(crate) last_config: LogIndex,
    /// Entries up to here have been handed out for applying.
    pub(crate) handed_out_index: LogIndex,
    /// The state machine has applied up to here (reported by the driver).
    pub(crate) applied_index: LogIndex,

    /// The driver's audit found this replica's state wrong: it neither campaigns nor votes
    /// until repaired.
    pub(crate) quarantined: bool,
    /// Ticks since this replica last heard from a leader (or led).
    pub(crate) leaderless_ticks: u64,
    /// A quarantined leader: the voter it last tried to hand leadership to.
    pub(crate) caretaker_target: Option<NodeId>,
    /// Storage lost entries through this index that this replica may have acknowledged
    /// ([`InitialState::lost_through`]): no campaigning, and votes only for candidates whose
    /// last entry is of a term after `lost_term_max`, until the log reaches it.
    pub(crate) lost_through: Option<LogIndex>,
    /// [`InitialState::lost_term_max`].
    pub(crate) lost_term_max: Option<Term>,
    /// This replica's number for its lost-entries notices in this run (see
    /// [`crate::message::LostCheck`]).
    pub(crate) lost_nonce: u64,

    pub(crate) output: Output,
    pub(crate) stats: Stats,
}

impl Node {
    /// A replica starting from `initial`. Fails with a readable reason if the configuration
    /// or the recovered state is inconsistent.
    pub fn new(config: Config, initial: InitialState) -> Result<Node, String> {
        config.validate()?;
        let (snapshot_index, snapshot_term, base_membership) = match initial.snapshot {
            Some(meta) => (meta.last_index, meta.last_term, meta.membership),
            None => (LogIndex::ZERO, Term::ZERO, initial.membership),
        };
        base_membership.validate()?;
        RaftLog::validate(snapshot_index, snapshot_term, &initial.entries)
            .map_err(|reason| format!("recovered log is inconsistent: {reason}"))?;
        let log = RaftLog::new(snapshot_index, snapshot_term, initial.entries);
        let mut hard_state = initial.hard_state;
        let stored = initial.hard_state;
        // An output's entries and hard state are two writes; a crash between them leaves one
        // without the other, in either order. Both cases are safe to repair:
        // - entries of a newer term without the hard state that raised the term: adopt that
        //   term with no vote. Any vote cast in it left only after the hard state was durable,
        //   so it never left. The adopted term is written before anything else leaves (the
        //   hard state last sent is the stored one): every entry this replica acknowledges is
        //   then of its durable term or an earlier one, which storage relies on when it notes
        //   the term of entries lost to damage.
        // - a commit index beyond the entries it was written with: commit is only what this
        //   replica knew; the entries are committed on a quorum whatever it remembers.
        if log.last_term() > hard_state.term {
            hard_state.term = log.last_term();
            hard_state.vote = None;
        }
        let commit = hard_state.commit.min(log.last_index()).max(snapshot_index);
        let applied = initial.applied.max(snapshot_index);
        if applied > commit {
            return Err(format!("applied index {applied} is beyond the commit index {commit}"));
        }
        let mut rng = SeededRng::new(config.random_seed);
        let randomized_election_timeout =
            rng.range(config.election_timeout_ticks_min, config.election_timeout_ticks_max);
        let timestamp_millis_max = log
            .entries()
            .filter_map(|entry| match &entry.payload {
                EntryPayload::Command(command) => Some(command.timestamp_millis),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let persisted_index = log.last_index();
        // A stream of its own, so that drawing it leaves the election timeouts unchanged.
        let first_read_request =
            SeededRng::new(config.random_seed ^ 0x5EED_0F12_EAD5).next_u64() >> 1;
        let mut node = Node {
            rng,
            term: hard_state.term,
            vote: hard_state.vote,
            commit,
            log,
            membership: base_membership.clone(),
            base_membership,
            hard_state_sent: HardState { term: stored.term, vote: stored.vote, commit },
            writes_in_flight: VecDeque::new(),
            durable_index: persisted_index,
            persisted_index,
            role: Role::Follower,
            leader: None,
            role_reported: (Role::Follower, hard_state.term),
            tick_count: 0,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            transfer_target: None,
            transfer_elapsed: 0,
            lease_revoked: false,
            reads: ReadState { next_request: first_read_request, ..ReadState::default() },
            timestamp_millis_max,
            uncommitted_bytes: 0,
            last_config: LogIndex::ZERO,
            handed_out_index: applied,
            applied_index: applied,
            quarantined: false,
            leaderless_ticks: 0,
            caretaker_target: None,
            lost_through: initial.lost_through.filter(|&through| through > persisted_index),
            lost_term_max: initial.lost_term_max,
            // A stream of its own, so that drawing it leaves the election timeouts unchanged.
            lost_nonce: SeededRng::new(config.random_seed ^ 0x0010_57E2_71E5).next_u64(),
            output: Output::default(),
            stats: Stats::default(),
            config,
        };
        node.membership = node.membership_from_log();
        node.find_last_config();
        if let Some(through) = node.lost_through {
            // Alone in a configuration (or in one half of a joint one), it can never be
            // outvoted: no leader could ever be elected without it.
            let alone = |voters: &std::collections::BTreeSet<NodeId>| {
                voters.len() == 1 && voters.contains(&node.config.id)
            };
            if alone(&node.membership.voters) || alone(&node.membership.voters_outgoing) {
                return Err(format!(
                    "this replica's log lost entries through {through} to damage, and it is the \
                     only voter: no other replica can supply them"
                ));
            }
        }
        Ok(node)
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Handles a message from another replica. Invalid or stale messages change nothing and
    /// are reported as [`Event::MessageRejected`].
    pub fn step(&mut self, message: Message) {
        if let Err(reason) = self.check_envelope(&message).and_then(|()| check_body(&message)) {
            self.reject(&message, reason);
            return;
        }
        if message.term > self.term && !self.membership.contains(message.from) {
            if let MessageBody::Vote(request) = &message.body {
                // A stranger's vote request is answered (see `check_envelope`), but one that
                // could not be granted does not raise our term: a replica removed long ago,
                // behind on the log, must not depose a leader that runs without pre-vote and
                // check-quorum.
                if !self.log.is_up_to_date(request.last_log_index, request.last_log_term) {
                    self.reject(&message, RejectReason::UnknownSender);
                    return;
                }
            }
        }
        if message.term > self.term {
            let transfer = match &message.body {
                MessageBody::PreVote(request) | MessageBody::Vote(request) => {
                    Some(request.leadership_transfer)
                }
                _ => None,
            };
            if transfer == Some(false) && self.in_lease() {
                // A leader is still heard from: a candidate with a higher term is most likely a
                // replica that was partitioned away. Ignoring it keeps the leader stable.
                self.reject(&message, RejectReason::LeaderStillActive);
                return;
            }
            match &message.body {
                MessageBody::PreVote(_) => {}
                MessageBody::PreVoteResponse(response) if response.granted => {}
                MessageBody::Append(_)
                | MessageBody::Heartbeat(_)
                | MessageBody::InstallSnapshot(_) => {
                    self.become_follower(message.term, Some(message.from));
                }
                _ => self.become_follower(message.term, None),
            }
        } else if message.term < self.term {
            self.on_stale_term(message);
            return;
        }
        let Message { from, term, body, .. } = message;
        match body {
            MessageBody::PreVote(request) => self.on_vote_request(from, term, &request, true),
            MessageBody::Vote(request) => self.on_vote_request(from, term, &request, false),
            MessageBody::PreVoteResponse(response) => {
                self.on_vote_response(from, term, response.granted, true);
            }
            MessageBody::VoteResponse(response) => {
                self.on_vote_response(from, term, response.granted, false);
            }
            MessageBody::Append(append) => self.on_append(from, append),
            MessageBody::AppendResponse(response) => self.on_append_response(from, response),
            MessageBody::Heartbeat(heartbeat) => self.on_heartbeat(from, heartbeat),
            MessageBody::HeartbeatResponse(response) => {
                self.on_heartbeat_response(from, response);
            }
            MessageBody::TimeoutNow => self.on_timeout_now(from),
            MessageBody::ReadIndex(request) => self.on_read_index_request(from, request.request),
            MessageBody::ReadIndexResponse(response) => {
                self.on_read_index_response(from, response);
            }
            MessageBody::InstallSnapshot(chunk) => {
                if !self.accept_leader_contact(from, "InstallSnapshot") {
                    return;
                }
                if chunk.meta.last_index <= self.commit {
                    // Everything it covers is committed here already: tell the leader how far
                    // this log matches, and it goes back to appending.
                    self.reject_from(from, "InstallSnapshot", RejectReason::SnapshotOutdated);
                    let response = AppendResponse::Accepted { match_index: self.commit };
                    self.send_after_persist(from, MessageBody::AppendResponse(response));
                    return;
                }
                self.output.snapshot_chunks.push(SnapshotChunk { from, chunk });
            }
            // Audit messages are the driver's: the core carries them and nothing more.
            MessageBody::Audit(_) => {}
            MessageBody::InstallSnapshotResponse(answer) => {
                let expected = self.role == Role::Leader
                    && self.progress.get(&from).is_some_and(|progress| {
                        matches!(progress.state, crate::progress::ProgressState::Snapshot { .. })
                    });
                if !expected {
                    self.reject_from(
                        from,
                        "InstallSnapshotResponse",
                        RejectReason::SnapshotUnexpected,
                    );
                    return;
                }
                let tick = self.tick_count;
                if let Some(progress) = self.progress.get_mut(&from) {
                    progress.heard(tick);
                }
                self.output.snapshot_answers.push(SnapshotAnswer { from, answer });
            }
        }
    }

    /// Advances logical time by one tick: drives election timeouts, heartbeats, check-quorum
    /// and the expiry of a leadership transfer.
    pub fn tick(&mut self) {
        self.tick_count += 1;
        self.leaderless_ticks = match self.role {
            Role::Leader => 0,
            _ => self.leaderless_ticks.saturating_add(1),
        };
        self.expire_reads();
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    /// Proposes a batch of commands. On the leader they are appended to its log (one entry
    /// each) and replicated in as few appends as the limits allow; the result says where they
    /// landed. Anywhere else the batch is refused with the leader's id, never dropped
    /// silently. `timestamp_millis` is the leader's wall clock, handed to the state machine
    /// with each command; it is raised if needed so that timestamps never go backwards.
    pub fn propose(
        &mut self,
        commands: Vec<Bytes>,
        timestamp_millis: u64,
    ) -> Result<Proposed, ProposeError> {
        let result = self.try_propose(commands, timestamp_millis);
        if let Err(error) = result {
            self.stats.proposals_rejected += 1;
            self.output.events.push(Event::ProposalRejected { error });
        }
        result
    }

    fn try_propose(
        &mut self,
        commands: Vec<Bytes>,
        timestamp_millis: u64,
    ) -> Result<Proposed, ProposeError> {
        if commands.is_empty() {
            return Err(ProposeError::Empty);
        }
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.quarantined {
            // A caretaker (see `hand_over_as_caretaker`) writes nothing but its term's no-op.
            return Err(ProposeError::NotLeader { leader: None });
        }
        if let Some(target) = self.transfer_target {
            return Err(ProposeError::LeadershipTransfer { target });
        }
        let timestamp_millis = timestamp_millis.max(self.timestamp_millis_max);
        let first_index = self.log.last_index().next();
        let entries: Vec<Entry> = commands
            .into_iter()
            .enumerate()
            .map(|(position, data)| Entry {
                term: self.term,
                index: first_index.plus(position as u64),
                payload: EntryPayload::Command(Command { data, timestamp_millis }),
            })
            .collect();
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes.saturating_add(bytes) > self.config.uncommitted_bytes_max
        {
            return Err(ProposeError::Backpressure);
        }
        self.uncommitted_bytes += bytes;
        let last_index = first_index.plus(entries.len() as u64 - 1);
        for entry in entries {
            self.append_to_log(entry);
        }
        if self.is_single_voter() {
            // Nothing to wait for but our own disk.
            self.maybe_commit();
        }
        Ok(Proposed { term: self.term, first_index, last_index })
    }

    /// Asks for a linearizable read. When it is safe to read the local state machine (this
    /// replica has applied at least the read index, and the index was confirmed current by a
    /// quorum or a lease), `id` appears in [`Output::reads`]; if it cannot be confirmed it
    /// appears as [`Event::ReadRejected`].
    pub fn read_index(&mut self, id: ReadId) {
        self.start_read(id);
    }

    /// The driver reports that the write whose last entry is `(index, term)` is durable, and
    /// with it every write handed out before it. Writes become durable in the order they were
    /// handed out; report each one (a group commit reports every write of the group, in
    /// order). A report that matches no write under way is ignored.
    pub fn persisted(&mut self, index: LogIndex, term: Term) {
        let Some(position) = self
            .writes_in_flight
            .iter()
            .position(|write| write.last_index == index && write.last_term == term)
        else {
            return;
        };
        self.writes_in_flight.drain(..=position);
        self.durable_index = index;
        self.update_persisted_index();
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// Recomputes how far the log is durable to stay: up to the newest durable write, but
    /// below any truncation still to be written (until then the disk holds entries the log no
    /// longer has, and a crash would bring them back).
    pub(crate) fn update_persisted_index(&mut self) {
        let pending_truncations = self
            .writes_in_flight
            .iter()
            .filter_map(|write| write.truncate_from)
            .chain(self.output.persist.truncate_from)
            .chain(self.output.persist.snapshot.as_ref().map(|meta| meta.last_index.next()));
        let mut persisted = self.durable_index.min(self.log.last_index());
        for truncate_from in pending_truncations {
            persisted = persisted.min(truncate_from.prev());
        }
        self.persisted_index = persisted;
    }

    /// The driver reports that the state machine has applied every entry up to `index`.
    ///
    /// # Panics
    /// If `index` was never handed out for applying: that is a bug in the driver.
    pub fn applied(&mut self, index: LogIndex) {
        assert!(
            index <= self.handed_out_index,
            "applied index {index} was never handed out (handed out up to {})",
            self.handed_out_index
        );
        self.applied_index = self.applied_index.max(index);
    }

    /// A durable snapshot of the state machine covers the log through `index`: forget the
    /// entries up to it (at most up to what was applied). A follower that needs them later
    /// gets the snapshot instead ([`Event::SnapshotNeeded`]).
    pub fn compact(&mut self, index: LogIndex) {
        let index = index.min(self.applied_index);
        if index <= self.log.snapshot_index() {
            return;
        }
        self.base_membership = self.membership_at(index);
        self.log.compact(index);
    }

    /// Whether a snapshot through `meta` would bring this replica forward: it follows a
    /// leader and has not committed that far. Check before restoring the state machine.
    pub fn wants_snapshot(&self, meta: &SnapshotMeta) -> bool {
        self.role == Role::Follower
            && meta.last_index > self.commit
            && meta.last_term <= self.term
            && meta.last_index.get() <= VALUE_MAX
            && meta.membership.validate().is_ok()
    }

    /// The driver has made the snapshot `meta` from leader `from` durable and restored the
    /// state machine from it: the log continues after it (keeping the entries after it if
    /// this log holds its last entry, else starting over), and the leader is told. Ignored
    /// unless [`Node::wants_snapshot`] holds. Returns whether it was installed.
    pub fn install_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) -> bool {
        if !self.wants_snapshot(&meta) {
            return false;
        }
        let (index, term) = (meta.last_index, meta.last_term);
        // Keep the entries after the snapshot only if this log holds its last entry durably,
        // with no write still under way that would truncate it: otherwise a crash could
        // leave the disk's log disagreeing with the snapshot.
        if self.log.term(index) == Some(term) && self.persisted_index >= index {
            self.log.compact(index);
        } else {
            self.log.restart_after(index, term);
            // Whatever this log was about to write is gone with it, and writes still under
            // way hold entries of the old log: their reports no longer count.
            self.output.persist.entries.clear();
            self.output.persist.truncate_from = None;
            self.output.persist.snapshot = Some(meta.clone());
            // Acknowledgements of entries that will now never be written must not leave.
            self.output.messages_after_persist.retain(|message| {
                !matches!(
                    message.body,
                    MessageBody::AppendResponse(AppendResponse::Accepted { match_index })
                        if match_index > index
                )
            });
            self.writes_in_flight.clear();
            self.durable_index = index;
        }
        self.base_membership = meta.membership;
        self.find_last_config();
        self.on_membership_changed();
        self.commit = self.commit.max(index);
        self.applied_index = index;
        self.handed_out_index = index;
        self.update_persisted_index();
        self.stats.snapshots_installed += 1;
        let response = AppendResponse::Accepted { match_index: index };
        self.send_after_persist(from, MessageBody::AppendResponse(response));
        true
    }

    /// Leader: sends a chunk of a snapshot to follower `to`, which waits for one. Returns
    /// false (sending nothing) if this replica no longer leads or `to` no longer waits.
    pub fn send_snapshot_chunk(&mut self, to: NodeId, chunk: InstallSnapshot) -> bool {
        let waiting = self.role == Role::Leader
            && self.progress.get(&to).is_some_and(|progress| match progress.state {
                crate::progress::ProgressState::Snapshot { pending_index } => {
                    chunk.meta.last_index >= pending_index
                }
                _ => false,
            });
        if waiting {
            self.send(to, MessageBody::InstallSnapshot(chunk));
        }
        waiting
    }

    /// Follower: answers a snapshot chunk from leader `to` (see [`Output::snapshot_chunks`]).
    pub fn answer_snapshot_chunk(&mut self, to: NodeId, answer: InstallSnapshotResponse) {
        self.send(to, MessageBody::InstallSnapshotResponse(answer));
    }

    /// Leader: follower `to` holds the whole snapshot (and has installed it, or had no use
    /// for it): probe it from after the snapshot, and it answers how far its log matches.
    pub fn snapshot_sent(&mut self, to: NodeId) {
        if let Some(progress) = self.progress.get_mut(&to) {
            if matches!(progress.state, crate::progress::ProgressState::Snapshot { .. }) {
                progress.become_probe();
            }
        }
    }

    /// Leader: the snapshot transfer to `to` failed or stalled; go back to probing it, which
    /// asks for a snapshot again if it still needs one.
    pub fn snapshot_aborted(&mut self, to: NodeId) {
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.snapshot_aborted();
        }
    }

    /// Takes this replica out of elections, or puts it back: the driver's audit found its
    /// state wrong (or repaired it). A quarantined replica does not campaign and refuses votes
    /// and pre-votes while the others can elect a leader without it (see
    /// `quarantine_holds`); a quarantined leader steps down at once. It still takes appends
    /// (its log is sound; only what it applied is in doubt), so it keeps counting towards
    /// commits.
    pub fn set_quarantined(&mut self, quarantined: bool) {
        self.quarantined = quarantined;
        if quarantined && self.role != Role::Follower {
            self.become_follower(self.term, None);
        }
    }

    /// Whether this replica is quarantined ([`Node::set_quarantined`]).
    pub fn quarantined(&self) -> bool {
        self.quarantined
    }

    /// The index through which this replica's log lost entries it may have acknowledged, while
    /// its log has not reached it again ([`InitialState::lost_through`]); `None` once it has.
    pub fn lost_through(&self) -> Option<LogIndex> {
        self.lost_through.filter(|&through| self.log.last_index() < through)
    }

    /// Whether lost entries keep this replica out of elections (clearing the hold once the
    /// log reached the lost index again).
    pub(crate) fn holds_for_lost_entries(&mut self) -> bool {
        if self.lost_through.is_some_and(|through| self.log.last_index() >= through)
            || crate::config::sabotaged!(self.config, IgnoreLostEntries)
        {
            self.lost_through = None;
        }
        self.lost_through.is_some()
    }

    /// Hands the committed entries after `index` out for applying again: the driver replaced
    /// the state machine with a checkpoint through `index` (a repair). Refused (false) if the
    /// log no longer holds the entry after `index`, or `index` is past what was applied.
    pub fn rewind_applied(&mut self, index: LogIndex) -> bool {
        if index < self.log.snapshot_index() || index > self.applied_index {
            return false;
        }
        self.applied_index = index;
        self.handed_out_index = index;
        true
    }

    /// Leader: appends an empty entry (a point every replica applies at the same place, for
    /// the driver's audit). Refused anywhere but on a leader, or during a transfer.
    pub fn propose_noop(&mut self) -> Result<LogIndex, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.quarantined {
            // A caretaker (see `hand_over_as_caretaker`) writes nothing but its term's no-op.
            return Err(ProposeError::NotLeader { leader: None });
        }
        if let Some(target) = self.transfer_target {
            return Err(ProposeError::LeadershipTransfer { target });
        }
        let index = self.log.last_index().next();
        self.append_to_log(Entry { term: self.term, index, payload: EntryPayload::Noop });
        if self.is_single_voter() {
            self.maybe_commit();
        }
        Ok(index)
    }

    /// The first index of the log held (entries before it are covered by a snapshot).
    pub fn first_index(&self) -> LogIndex {
        self.log.snapshot_index().next()
    }

    /// Asks the leader to hand leadership to `target`. The leader stops taking proposals,
    /// brings the target up to date, then tells it to campaign at once. Gives up after an
    /// election timeout.
    pub fn transfer_leadership(&mut self, target: NodeId) {
        self.start_transfer(target);
    }

    /// Drains everything the core wants done since the last drain. See [`crate::output`] for
    /// the order in which to do it.
    pub fn take_output(&mut self) -> Output {
        if self.role == Role::Leader {
            self.flush_leader();
        }
        let hard_state = self.hard_state();
        if hard_state != self.hard_state_sent {
            self.output.persist.hard_state = Some(hard_state);
            self.hard_state_sent = hard_state;
        }
        let persist = &self.output.persist;
        let last_written = persist
            .entries
            .last()
            .map(|last| (last.index, last.term))
            .or(persist.snapshot.as_ref().map(|meta| (meta.last_index, meta.last_term)));
        if let Some((last_index, last_term)) = last_written {
            // A restart after a snapshot removes everything after it, like a truncation.
            let restart = persist.snapshot.as_ref().map(|meta| meta.last_index.next());
            self.writes_in_flight.push_back(WriteInFlight {
                last_index,
                last_term,
                truncate_from: restart.or(persist.truncate_from),
            });
        } else {
            // A truncation is always followed by the entries that replace what it removed.
            assert!(persist.truncate_from.is_none(), "a write that only truncates");
        }
        self.hand_out_committed();
        self.release_reads();
        std::mem::take(&mut self.output)
    }

    // ----- queries ------------------------------------------------------------------------

    /// This replica's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The configuration this replica runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader this replica knows of in the current term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The hard state as it stands (it is persisted through the outputs).
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.commit }
    }

    /// The highest committed index known here.
    pub fn commit_index(&self) -> LogIndex {
        self.commit
    }

    /// The index of the last log entry.
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// The term of the last log entry.
    pub fn last_term(&self) -> Term {
        self.log.last_term()
    }

    /// The log is durable up to here.
    pub fn persisted_index(&self) -> LogIndex {
        self.persisted_index
    }

    /// The state machine has applied up to here.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// The configuration in force (the latest in the log).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The entries held in memory (everything after the snapshot point).
    pub fn log_entries(&self) -> impl Iterator<Item = &Entry> {
        self.log.entries()
    }

    /// The entry at `index`, if the log still holds it.
    pub fn log_entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// The term at `index`, if the log still holds it.
    pub fn log_term(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }

    /// What the leader knows about `follower`.
    pub fn progress(&self, follower: NodeId) -> Option<&Progress> {
        self.progress.get(&follower)
    }

    /// The replica leadership is being handed to, if a transfer is under way.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer_target
    }

    /// Counters for metrics.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Ticks since this replica started.
    pub fn tick_count(&self) -> u64 {
        self.tick_count
    }

    // ----- helpers shared by the mechanisms -----------------------------------------------

    pub(crate) fn is_single_voter(&self) -> bool {
        let voters = self.membership.all_voters();
        voters.len() == 1 && voters.contains(&self.config.id)
    }

    /// A message that may leave at once.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let message = Message { from: self.config.id, to, term: self.term, body };
        self.output.messages.push(message);
    }

    /// A message with an explicit term (pre-vote requests and grants).
    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let message = Message { from: self.config.id, to, term, body };
        self.output.messages.push(message);
    }

    /// A message that may leave only once this output's writes are durable.
    pub(crate) fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        let message = Message { from: self.config.id, to, term: self.term, body };
        self.output.messages_after_persist.push(message);
    }

    pub(crate) fn reject(&mut self, message: &Message, reason: RejectReason) {
        self.reject_from(message.from, message.body.kind(), reason);
    }

    pub(crate) fn reject_from(&mut self, from: NodeId, kind: &'static str, reason: RejectReason) {
        self.stats.messages_rejected += 1;
        self.output.events.push(Event::MessageRejected { from, kind, reason });
    }

    fn check_envelope(&self, message: &Message) -> Result<(), RejectReason> {
        if message.to != self.config.id {
            return Err(RejectReason::WrongRecipient);
        }
        if message.from == self.config.id {
            return Err(RejectReason::FromSelf);
        }
        // A leader may be a member this replica does not know of yet (it was added by a
        // configuration entry this replica has not received): its appends, heartbeats,
        // snapshots and hand-overs are how this replica learns of it. So may a candidate:
        // a replica behind on the configuration is still a voter of the newer one, and its
        // vote may be the one the cluster needs (servers answer vote requests without
        // consulting their configuration, Raft dissertation §4.1; whom to vote for is decided
        // by terms and logs alone, and the candidate counts votes in its own configuration).
        // Anything else from a stranger (answers, reads) is refused.
        let from_leader_or_candidate = matches!(
            message.body,
            MessageBody::Append(_)
                | MessageBody::Heartbeat(_)
                | MessageBody::InstallSnapshot(_)
                | MessageBody::TimeoutNow
                | MessageBody::Vote(_)
                | MessageBody::PreVote(_)
        );
        if !from_leader_or_candidate && !self.membership.contains(message.from) {
            return Err(RejectReason::UnknownSender);
        }
        if message.term == Term::ZERO {
            return Err(RejectReason::ZeroTerm);
        }
        if message.term.get() > VALUE_MAX {
            return Err(RejectReason::OutOfRange);
        }
        Ok(())
    }

    fn on_stale_term(&mut self, message: Message) {
        match &message.body {
            MessageBody::Append(_) | MessageBody::Heartbeat(_)
                if self.config.check_quorum
                    || self.config.pre_vote
                    || self.quarantined
                    || self.lost_through.is_some() =>
            {
                // A leader from an older term that was cut off. With pre-vote it could never
                // learn of the newer term through a vote request, so tell it: any message
                // with our term makes it step down. Nor can it from a replica that does not
                // campaign (quarantined, or short of entries its storage lost), which would
                // otherwise never hear from a leader again.
                let response = HeartbeatResponse { read_round: 0 };
                self.send(message.from, MessageBody::HeartbeatResponse(response));
                self.reject(&message, RejectReason::StaleTerm);
            }
            MessageBody::PreVote(_) => {
                let response = crate::message::VoteResponse { granted: false };
                self.send(message.from, MessageBody::PreVoteResponse(response));
                self.reject(&message, RejectReason::StaleTerm);
            }
            MessageBody::Vote(_) => {
                // A refusal in our term (Raft's RequestVote reply carries the current term), so
                // a candidate behind learns the newer term. It may hear of it no other way: a
                // replica behind on the configuration does not know the candidate is a voter
                // and sends it nothing, and two such candidates would otherwise campaign past
                // each other's terms for ever. A refusal promises nothing: it leaves at once.
                let response = crate::message::VoteResponse { granted: false };
                self.send(message.from, MessageBody::VoteResponse(response));
                self.reject(&message, RejectReason::StaleTerm);
            }
            MessageBody::ReadIndex(request) => {
                // The follower fails the read over when it learns our newer term.
                let response =
                    crate::message::ReadIndexResponse { request: request.request, index: None };
                self.send(message.from, MessageBody::ReadIndexResponse(response));
                self.reject(&message, RejectReason::StaleTerm);
            }
            _ => self.reject(&message, RejectReason::StaleTerm),
        }
    }

    /// Appends one entry to the log and to the pending writes.
    pub(crate) fn append_to_log(&mut self, entry: Entry) {
        if let EntryPayload::Command(command) = &entry.payload {
            self.timestamp_millis_max = self.timestamp_millis_max.max(command.timestamp_millis);
        }
        let is_config = matches!(entry.payload, EntryPayload::Config(_));
        if is_config {
            self.last_config = entry.index;
        }
        self.log.push(entry.clone());
        self.output.persist.entries.push(entry);
        if is_config {
            self.on_membership_changed();
        }
    }

    /// Removes the log from `from` on, here and (through the pending writes) on disk.
    pub(crate) fn truncate_log(&mut self, from: LogIndex) {
        assert!(from > self.commit, "truncating committed entry {from} (commit {})", self.commit);
        let had_config = self
            .log
            .entries()
            .any(|entry| entry.index >= from && matches!(entry.payload, EntryPayload::Config(_)));
        self.log.truncate_from(from);
        let persist = &mut self.output.persist;
        match persist.entries.first().map(|entry| entry.index) {
            // Only pending (unwritten) entries are affected.
            Some(first) if from > first => persist.entries.retain(|entry| entry.index < from),
            _ => {
                persist.entries.clear();
                let truncate_from = persist.truncate_from.map_or(from, |index| index.min(from));
                persist.truncate_from = Some(truncate_from);
            }
        }
        self.update_persisted_index();
        if had_config {
            self.find_last_config();
            self.on_membership_changed();
        }
    }

    /// The configuration in force: the last one in the log, else the snapshot's or bootstrap.
    fn membership_from_log(&self) -> Membership {
        self.membership_at(self.log.last_index())
    }

    /// The configuration whose quorums decide: the one in force (but see the sabotage).
    pub(crate) fn deciding_membership(&self) -> std::borrow::Cow<'_, Membership> {
        if crate::config::sabotaged!(self.config, JointNewOnly) && self.membership.is_joint() {
            let mut alone = self.membership.clone();
            alone.voters_outgoing.clear();
            std::borrow::Cow::Owned(alone)
        } else {
            std::borrow::Cow::Borrowed(&self.membership)
        }
    }

    /// The configuration in force at `index`: the last one in the log up to it, else the
    /// snapshot's or bootstrap.
    pub fn membership_at(&self, index: LogIndex) -> Membership {
        self.log
            .entries()
            .take_while(|entry| entry.index <= index)
            .filter_map(|entry| match &entry.payload {
                EntryPayload::Config(membership) => Some(membership),
                _ => None,
            })
            .last()
            .cloned()
            .unwrap_or_else(|| self.base_membership.clone())
    }

    /// A configuration entry was appended or truncated: the new one takes effect now.
    fn on_membership_changed(&mut self) {
        self.membership = self.membership_from_log();
        if self.role != Role::Leader {
            return;
        }
        let members = self.membership.members();
        self.progress.retain(|id, _| members.contains(id));
        let next_index = self.log.last_index().next();
        for id in members {
            if id == self.config.id {
                continue;
            }
            let is_voter = self.membership.is_voter(id);
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next_index, is_voter))
                .is_voter = is_voter;
        }
    }

    /// Hands out committed, durable entries for applying, up to the byte limit and the limit
    /// of entries handed out but not yet applied.
    fn hand_out_committed(&mut self) {
        let window_end = LogIndex(
            self.applied_index.get().saturating_add(self.config.apply_entries_in_flight_max),
        );
        let ready_to = self.commit.min(self.persisted_index).min(window_end);
        if ready_to <= self.handed_out_index {
            return;
        }
        let entries =
            self.log.slice(self.handed_out_index.next(), ready_to, self.config.apply_bytes_max);
        if let Some(last) = entries.last() {
            self.handed_out_index = last.index;
        }
        self.output.committed.extend(entries);
    }

    /// Serves confirmed reads whose index the state machine has reached.
    fn release_reads(&mut self) {
        let applied = self.applied_index;
        let (ready, waiting): (Vec<ConfirmedRead>, Vec<ConfirmedRead>) =
            self.reads.confirmed.drain(..).partition(|confirmed| confirmed.read.index <= applied);
        self.reads.confirmed = waiting.into();
        self.output.reads.extend(ready.into_iter().map(|confirmed| confirmed.read));
    }

    // ----- invariants ---------------------------------------------------------------------

    /// Checks every invariant of this replica's state; tests call it after every step.
    /// Returns a description of the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        let id = self.config.id;
        let fail = |what: String| Err(format!("node {id}: {what}"));
        RaftLog::validate(
            self.log.snapshot_index(),
            self.log.term(self.log.snapshot_index()).unwrap_or_default(),
            &self.log.entries().cloned().collect::<Vec<_>>(),
        )
        .or_else(|reason| fail(format!("log: {reason}")))?;
        if self.log.last_term() > self.term {
            return fail(format!(
                "last log term {} above term {}",
                self.log.last_term(),
                self.term
            ));
        }
        if self.commit > self.log.last_index() {
            return fail(format!(
                "commit {} beyond last index {}",
                self.commit,
                self.log.last_index()
            ));
        }
        if self.commit < self.log.snapshot_index() {
            return fail("commit below the snapshot".to_string());
        }
        if self.persisted_index > self.log.last_index() {
            return fail(format!("persisted {} beyond last index", self.persisted_index));
        }
        if !(self.applied_index <= self.handed_out_index && self.handed_out_index <= self.commit) {
            return fail(format!(
                "applied {} <= handed out {} <= commit {} does not hold",
                self.applied_index, self.handed_out_index, self.commit
            ));
        }
        if self.handed_out_index > self.persisted_index.max(self.log.snapshot_index()) {
            return fail("handed out entries that are not durable".to_string());
        }
        let scanned = self
            .log
            .entries()
            .filter(|entry| matches!(entry.payload, EntryPayload::Config(_)))
            .map(|entry| entry.index)
            .last()
            .unwrap_or(self.log.snapshot_index());
        if self.last_config_index() != scanned {
            return fail(format!(
                "the last configuration entry is {scanned}, not {} as recorded",
                self.last_config_index()
            ));
        }
        if self.membership != self.membership_from_log() {
            return fail("membership differs from the log's latest configuration".to_string());
        }
        match self.role {
            Role::Leader => {
                if self.leader != Some(id) || self.vote != Some(id) {
                    return fail("a leader must lead and have voted for itself".to_string());
                }
                let expected: Vec<NodeId> =
                    self.membership.members().into_iter().filter(|member| *member != id).collect();
                let tracked: Vec<NodeId> = self.progress.keys().copied().collect();
                if expected != tracked {
                    return fail(format!("progress tracks {tracked:?}, members are {expected:?}"));
                }
                for (follower, progress) in &self.progress {
                    if progress.match_index > self.log.last_index()
                        || progress.next_index <= progress.match_index
                        || progress.next_index > self.log.last_index().next()
                    {
                        return fail(format!(
                            "progress of {follower}: match {} next {} last {}",
                            progress.match_index,
                            progress.next_index,
                            self.log.last_index()
                        ));
                    }
                    if progress.inflights.count() > self.config.messages_in_flight_max {
                        return fail(format!("too many appends in flight to {follower}"));
                    }
                }
                if self.log.term(self.commit).is_some_and(|term| term > self.term) {
                    return fail("commit points at a future term".to_string());
                }
            }
            Role::Candidate => {
                if self.vote != Some(id) || self.leader.is_some() {
                    return fail("a candidate votes for itself and knows no leader".to_string());
                }
            }
            Role::PreCandidate | Role::Follower => {
                if self.leader == Some(id) {
                    return fail("a non-leader names itself leader".to_string());
                }
            }
        }
        if self.role != Role::Leader {
            if !self.progress.is_empty() {
                return fail("only a leader tracks progress".to_string());
            }
            if self.transfer_target.is_some() {
                return fail("only a leader transfers leadership".to_string());
            }
            if !self.reads.pending.is_empty() || !self.reads.awaiting_commit.is_empty() {
                return fail("only a leader confirms reads".to_string());
            }
        }
        if self.reads.total() > self.config.pending_reads_max {
            return fail("too many pending reads".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { term: Term(term), index: LogIndex(index), payload: EntryPayload::Noop }
    }

    fn recover(hard_state: HardState, entries: Vec<Entry>) -> Result<Node, String> {
        let initial = InitialState {
            hard_state,
            snapshot: None,
            entries,
            membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
            applied: LogIndex::ZERO,
            lost_through: None,
            lost_term_max: None,
        };
        Node::new(Config::new(NodeId(1)), initial)
    }

    #[test]
    fn entries_written_without_their_hard_state_raise_the_term_without_a_vote() {
        let hard_state = HardState { term: Term(2), vote: Some(NodeId(2)), commit: LogIndex(1) };
        let mut node = recover(hard_state, vec![entry(1, 1), entry(2, 3)]).expect("recoverable");
        assert_eq!(node.term(), Term(3));
        assert_eq!(node.hard_state().vote, None);
        node.check_invariants().expect("consistent");
        // The adopted term is made durable first: nothing acknowledged outruns it.
        let output = node.take_output();
        let written = output.persist.hard_state.expect("the adopted term is written");
        assert_eq!((written.term, written.vote), (Term(3), None));
    }

    #[test]
    fn a_hard_state_written_without_its_entries_keeps_commit_within_the_log() {
        let hard_state = HardState { term: Term(1), vote: None, commit: LogIndex(5) };
        let node = recover(hard_state, vec![entry(1, 1), entry(2, 1)]).expect("recoverable");
        assert_eq!(node.commit_index(), LogIndex(2));
        node.check_invariants().expect("consistent");
    }

    #[test]
    fn a_log_with_a_gap_is_refused_with_a_reason() {
        let error = recover(HardState::default(), vec![entry(1, 1), entry(3, 1)])
            .expect_err("a gap is not recoverable here");
        assert!(error.contains("does not follow"), "{error}");
    }

    #[test]
    fn a_bad_configuration_is_refused_with_a_reason() {
        let mut config = Config::new(NodeId(1));
        config.election_timeout_ticks_max = config.election_timeout_ticks_min;
        let error = Node::new(config, InitialState::new_cluster([NodeId(1)]))
            .expect_err("an empty timeout range is refused");
        assert!(error.contains("election_timeout_ticks_max"), "{error}");
    }

    #[test]
    fn a_timeout_range_of_one_value_is_refused() {
        // Two candidates whose timeouts cannot differ stay in step: found by the simulator
        // (seed 14000120 of `--membership --divergence --disk-corruption --batch`, before
        // this rule, which that seed no longer draws), where a candidate behind on the
        // configuration reached every term just before the only replica that could win asked
        // for its vote.
        let mut config = Config::new(NodeId(1));
        config.election_timeout_ticks_max = config.election_timeout_ticks_min + 1;
        let error = Node::new(config.clone(), InitialState::new_cluster([NodeId(1)]))
            .expect_err("a range of one value is refused");
        assert!(error.contains("at least 2"), "{error}");
        config.election_timeout_ticks_max = config.election_timeout_ticks_min + 2;
        assert!(Node::new(config, InitialState::new_cluster([NodeId(1)])).is_ok());
    }
}
