//! What the core asks its driver to do after an input.
//!
//! The ordering rules are part of the type. A driver handles an [`Output`] in this order:
//!
//! 1. send [`Output::messages`] at once (they depend on nothing unwritten);
//! 2. write [`Output::persist`]: first remove the log from `truncate_from` on, then append
//!    `entries`, then store `hard_state`; make all of it durable;
//! 3. only once this output's writes **and every earlier output's writes** are durable, send
//!    [`Output::messages_after_persist`] (votes and acknowledgements that promise what was
//!    written, possibly by an earlier output), and report `persisted(last index, last term)`
//!    for each write that appended entries, in order. Writes become durable in the order
//!    the outputs were handed out;
//! 4. apply [`Output::committed`] to the state machine in order and report `applied(index)`;
//! 5. serve [`Output::reads`] (each is already safe: the state machine has applied its index).
//!
//! Steps 1 and 2 may overlap: a leader writes its own log while its appends travel, and counts
//! itself toward a quorum only once `persisted` says so.

use std::fmt;

use crate::message::{InstallSnapshot, InstallSnapshotResponse, Message};
use crate::types::{Entry, HardState, LogIndex, NodeId, ReadId, Role, SnapshotMeta, Term};

/// Everything the core produced since the last drain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// What must be made durable.
    pub persist: Persist,
    /// Messages that may leave now.
    pub messages: Vec<Message>,
    /// Messages that may leave only once `persist` is durable.
    pub messages_after_persist: Vec<Message>,
    /// Committed entries to apply, in log order, continuing from the last batch.
    pub committed: Vec<Entry>,
    /// Reads that are now safe to serve from the local state machine.
    pub reads: Vec<ReadReady>,
    /// Follower: snapshot chunks from the leader, for the driver to write (then answer with
    /// [`crate::Node::answer_snapshot_chunk`], and once whole and checked, restore the state
    /// machine from it and call [`crate::Node::install_snapshot`]).
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// Leader: followers' answers to snapshot chunks, for the driver streaming them.
    pub snapshot_answers: Vec<SnapshotAnswer>,
    /// Things that happened, for the driver, clients, logs and metrics.
    pub events: Vec<Event>,
}

/// A snapshot chunk that arrived from the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The leader.
    pub from: NodeId,
    /// The chunk.
    pub chunk: InstallSnapshot,
}

/// A follower's answer to a snapshot chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotAnswer {
    /// The follower.
    pub from: NodeId,
    /// Its answer.
    pub answer: InstallSnapshotResponse,
}

impl Output {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.messages.is_empty()
            && self.messages_after_persist.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.snapshot_chunks.is_empty()
            && self.snapshot_answers.is_empty()
            && self.events.is_empty()
    }
}

/// Writes to make durable, in this order: restart after a snapshot, truncate, append, hard
/// state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persist {
    /// A snapshot (already durable: the driver installed it) replaces the whole log through
    /// its last index; the log restarts after it, whatever it held before.
    pub snapshot: Option<SnapshotMeta>,
    /// Remove every log entry at this index or above before appending.
    pub truncate_from: Option<LogIndex>,
    /// Entries to append, consecutive, continuing the log after the truncation.
    pub entries: Vec<Entry>,
    /// The new hard state, if it changed.
    pub hard_state: Option<HardState>,
}

impl Persist {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.truncate_from.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
    }
}

/// A read that may now be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadReady {
    /// The caller's id for the read.
    pub id: ReadId,
    /// The read index: the state machine has applied at least this far.
    pub index: LogIndex,
}

/// Why the core refused a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This replica is not the leader; `leader` is the one it knows of, if any.
    NotLeader {
        /// The current leader, if known.
        leader: Option<NodeId>,
    },
    /// The leader is handing over to `target` and takes no new proposals meanwhile.
    LeadershipTransfer {
        /// The replica that is about to lead.
        target: NodeId,
    },
    /// Too much of the log is uncommitted; retry after some of it commits.
    Backpressure,
    /// The batch was empty.
    Empty,
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(leader) } => {
                write!(f, "not the leader; the leader is {leader}")
            }
            ProposeError::NotLeader { leader: None } => {
                write!(f, "not the leader; no leader is known")
            }
            ProposeError::LeadershipTransfer { target } => {
                write!(f, "leadership is moving to {target}")
            }
            ProposeError::Backpressure => write!(f, "too many uncommitted entries"),
            ProposeError::Empty => write!(f, "empty proposal"),
        }
    }
}

impl std::error::Error for ProposeError {}

/// Where an accepted proposal landed in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposed {
    /// The term of the new entries.
    pub term: Term,
    /// The index of the first command.
    pub first_index: LogIndex,
    /// The index of the last command.
    pub last_index: LogIndex,
}

/// Why the core refused a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The message is addressed to another replica.
    WrongRecipient,
    /// The sender is not a member of the configuration.
    UnknownSender,
    /// The message claims to come from this replica.
    FromSelf,
    /// The message carries term zero, which no real message has.
    ZeroTerm,
    /// A term or index is too large to be real.
    OutOfRange,
    /// The message is from an older term.
    StaleTerm,
    /// A vote request arrived while this replica still hears from a leader.
    LeaderStillActive,
    /// The entries of an append are not consecutive after `prev_index`, or their terms go
    /// backwards or beyond the message's term.
    MalformedEntries,
    /// An append would overwrite committed entries.
    ConflictsWithCommitted,
    /// A response acknowledges an index the leader never sent.
    IndexOutOfRange,
    /// A message that this role does not expect in this term (for example an append from a
    /// second leader of the same term).
    Unexpected,
    /// A snapshot chunk or answer that does not belong to a transfer under way.
    SnapshotUnexpected,
    /// A snapshot no newer than what this replica has committed (answered with how far its
    /// log matches instead).
    SnapshotOutdated,
}

/// Why a read could not be confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// No leader is known (an election is under way).
    NoLeader,
    /// The leader changed or stepped down before the read was confirmed.
    LeaderChanged,
    /// Too many reads are waiting.
    TooManyPending,
    /// The leader is transferring leadership.
    LeadershipTransfer,
    /// The leader did not answer a forwarded read within an election timeout.
    TimedOut,
}

/// Things that happened during an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// This replica's role changed.
    RoleChanged {
        /// The new role.
        role: Role,
        /// In this term.
        term: Term,
    },
    /// This replica learned who leads (or that nobody is known to).
    LeaderChanged {
        /// The leader, if known.
        leader: Option<NodeId>,
        /// In this term.
        term: Term,
    },
    /// A proposal was refused.
    ProposalRejected {
        /// Why.
        error: ProposeError,
    },
    /// A read was refused; retry it, elsewhere if `leader` says so.
    ReadRejected {
        /// The caller's id for the read.
        id: ReadId,
        /// Why.
        error: ReadError,
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// A message was refused and changed nothing.
    MessageRejected {
        /// The sender the message claimed.
        from: NodeId,
        /// The kind of message.
        kind: &'static str,
        /// Why.
        reason: RejectReason,
    },
    /// A leadership transfer was refused or gave up.
    TransferAborted {
        /// The intended new leader.
        target: NodeId,
        /// Why.
        reason: &'static str,
    },
    /// The leader must send a snapshot to `to`: the entries it needs are compacted. Send one
    /// whose last index is at least `index` with [`crate::Node::send_snapshot_chunk`].
    SnapshotNeeded {
        /// The follower.
        to: NodeId,
        /// The log is compacted through here.
        index: LogIndex,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::RoleChanged { role, term } => write!(f, "became {role} at term {term}"),
            Event::LeaderChanged { leader: Some(leader), term } => {
                write!(f, "leader is {leader} at term {term}")
            }
            Event::LeaderChanged { leader: None, term } => write!(f, "no leader at term {term}"),
            Event::ProposalRejected { error } => write!(f, "proposal rejected: {error}"),
            Event::ReadRejected { id, error, leader } => {
                write!(f, "read {id} rejected: {error:?}")?;
                if let Some(leader) = leader {
                    write!(f, " (leader {leader})")?;
                }
                Ok(())
            }
            Event::MessageRejected { from, kind, reason } => {
                write!(f, "rejected {kind} from {from}: {reason:?}")
            }
            Event::TransferAborted { target, reason } => {
                write!(f, "transfer to {target} aborted: {reason}")
            }
            Event::SnapshotNeeded { to, index } => {
                write!(f, "snapshot through at least {index} needed for {to}")
            }
        }
    }
}

/// Counters the core keeps for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages refused as invalid or stale.
    pub messages_rejected: u64,
    /// Proposals refused.
    pub proposals_rejected: u64,
    /// Reads refused.
    pub reads_rejected: u64,
    /// Pre-vote rounds this replica started.
    pub pre_votes_started: u64,
    /// Elections this replica started (real ones, not pre-votes).
    pub elections_started: u64,
    /// Times this replica became leader.
    pub terms_led: u64,
    /// Snapshots this replica installed from a leader.
    pub snapshots_installed: u64,
}
