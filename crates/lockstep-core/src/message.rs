//! The messages replicas exchange.
//!
//! Every message carries its sender, its recipient and the sender's term; the body says what
//! it is. The core validates every field of a message it receives before acting on it: a
//! message is network input and may be stale, duplicated, reordered or malformed.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};

/// A message from one replica to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Would you vote for me in `term`? Changes no state at the recipient.
    PreVote(VoteRequest),
    /// The answer to a pre-vote.
    PreVoteResponse(VoteResponse),
    /// Vote for me in `term`.
    Vote(VoteRequest),
    /// The answer to a vote request.
    VoteResponse(VoteResponse),
    /// Append entries after `prev_index` (the leader's replication message).
    Append(AppendRequest),
    /// The answer to an append.
    AppendResponse(AppendResponse),
    /// The leader is alive; carries the commit index and a read round to acknowledge.
    Heartbeat(Heartbeat),
    /// The answer to a heartbeat.
    HeartbeatResponse(HeartbeatResponse),
    /// Campaign now, without waiting for a timeout or asking for pre-votes (leadership
    /// transfer).
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of a local read.
    ReadIndex(ReadIndexRequest),
    /// The leader's answer to a forwarded read.
    ReadIndexResponse(ReadIndexResponse),
    /// One chunk of a snapshot, for a follower whose next entry the leader has compacted.
    InstallSnapshot(InstallSnapshot),
    /// The answer to a snapshot chunk.
    InstallSnapshotResponse(InstallSnapshotResponse),
    /// Auditing between replicas: output chain reports, divergence verdicts, repairs. The
    /// consensus core carries these but never acts on them; the driver does
    /// ([`AuditMessage`]).
    Audit(Box<AuditMessage>),
}

/// A request for a vote or a pre-vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    /// The index of the candidate's last entry.
    pub last_log_index: LogIndex,
    /// The term of the candidate's last entry.
    pub last_log_term: Term,
    /// The campaign was asked for by the leader (timeout-now), so voters that still hear
    /// from that leader vote anyway.
    pub leadership_transfer: bool,
}

/// The answer to a vote or pre-vote request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteResponse {
    /// Whether the vote was granted.
    pub granted: bool,
}

/// The leader's replication message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendRequest {
    /// The index just before the first entry.
    pub prev_index: LogIndex,
    /// The term of the entry at `prev_index`.
    pub prev_term: Term,
    /// Consecutive entries starting at `prev_index + 1`.
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub commit: LogIndex,
}

/// The answer to an append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResponse {
    /// The follower's log matches the leader's up to `match_index` (and the follower has
    /// made that durable).
    Accepted {
        /// The last index known to match.
        match_index: LogIndex,
    },
    /// The follower's log does not contain an entry matching `(prev_index, prev_term)`.
    Rejected {
        /// The `prev_index` of the rejected append.
        rejected_index: LogIndex,
        /// Fast backtracking: the largest index at or below `rejected_index` whose term is
        /// at most the append's `prev_term`, bounded by the follower's last index...
        hint_index: LogIndex,
        /// ...and the follower's term at `hint_index`. The leader skips straight to the last
        /// index of its own log whose term is at most this.
        hint_term: Term,
        /// Set when the follower's storage lost entries it had acknowledged (damage: it set
        /// its log aside): the leader must not take its earlier acknowledgements as what it
        /// holds now, and sends again from the hint. The number is the follower's, drawn at
        /// its restart, for the leader to echo ([`Heartbeat::lost_check`]). Also sent unasked,
        /// in answer to heartbeats, while the follower's log is short of what it lost.
        lost_entries: Option<u64>,
    },
}

/// The leader's heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The leader's commit index, capped at what the follower is known to hold.
    pub commit: LogIndex,
    /// The leader's read round when it sent this; echoed in the response.
    pub read_round: u64,
    /// To a follower that said it lost entries: its number echoed, with the leader's last
    /// entry when it sent this. Sent after the leader heard the follower after its restart,
    /// so the leader's log then held everything the follower had acknowledged to it; once the
    /// follower's log ends at exactly that entry it holds the leader's whole log (log
    /// matching), so nothing it lost that is not in it can ever be committed, and it takes
    /// part in elections again.
    pub lost_check: Option<LostCheck>,
}

/// A leader's answer, inside a heartbeat, to a follower that lost entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostCheck {
    /// The number the follower sent with its `lost_entries` rejection.
    pub nonce: u64,
    /// The leader's last index when it sent this...
    pub last_index: LogIndex,
    /// ...and its term there.
    pub last_term: Term,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The read round of the heartbeat being answered.
    pub read_round: u64,
}

/// A read forwarded from a follower to the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexRequest {
    /// The follower's number for the request; never reused by that follower.
    pub request: u64,
}

/// The leader's answer to a forwarded read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexResponse {
    /// The follower's number for the request.
    pub request: u64,
    /// The index the follower must apply before serving the read, or `None` if the leader
    /// could not confirm its leadership.
    pub index: Option<LogIndex>,
}

/// One chunk of a snapshot the leader streams to a follower whose entries it compacted away.
///
/// The core only routes chunks: the driver on each side reads and writes the snapshot's bytes
/// (see [`crate::output::Output::snapshot_chunks`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The snapshot's whole length in bytes.
    pub total_bytes: u64,
    /// A digest of the whole snapshot, naming it: a transfer resumes only into the same one.
    pub digest: [u8; 32],
    /// The byte offset of this chunk in the snapshot.
    pub offset: u64,
    /// The chunk's bytes (empty in the first message of a transfer, which asks the follower
    /// where to start).
    pub data: Bytes,
    /// CRC32C of `data`.
    pub checksum: u32,
}

/// The largest chunk a snapshot message may carry.
pub const SNAPSHOT_CHUNK_BYTES_MAX: u64 = 16 << 20;

/// A follower's answer to a snapshot chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotResponse {
    /// The snapshot's last index.
    pub last_index: LogIndex,
    /// The follower holds the snapshot's bytes up to here: send from here on.
    pub next_offset: u64,
    /// Whether the chunk was taken (false: it was refused, see the follower's events; the
    /// leader resumes from `next_offset`).
    pub accepted: bool,
}

impl MessageBody {
    /// A short name of the kind of message, for events and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::PreVote(_) => "PreVote",
            MessageBody::PreVoteResponse(_) => "PreVoteResponse",
            MessageBody::Vote(_) => "Vote",
            MessageBody::VoteResponse(_) => "VoteResponse",
            MessageBody::Append(_) => "Append",
            MessageBody::AppendResponse(_) => "AppendResponse",
            MessageBody::Heartbeat(_) => "Heartbeat",
            MessageBody::HeartbeatResponse(_) => "HeartbeatResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex(_) => "ReadIndex",
            MessageBody::ReadIndexResponse(_) => "ReadIndexResponse",
            MessageBody::InstallSnapshot(_) => "InstallSnapshot",
            MessageBody::InstallSnapshotResponse(_) => "InstallSnapshotResponse",
            MessageBody::Audit(audit) => audit.kind(),
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} {} term={}", self.from, self.to, self.body.kind(), self.term)?;
        match &self.body {
            MessageBody::PreVote(request) | MessageBody::Vote(request) => {
                write!(f, " last={}@{}", request.last_log_index, request.last_log_term)?;
                if request.leadership_transfer {
                    write!(f, " transfer")?;
                }
            }
            MessageBody::PreVoteResponse(response) | MessageBody::VoteResponse(response) => {
                write!(f, " {}", if response.granted { "granted" } else { "rejected" })?;
            }
            MessageBody::Append(append) => {
                write!(
                    f,
                    " prev={}@{} commit={} entries=[",
                    append.prev_index, append.prev_term, append.commit
                )?;
                for (position, entry) in append.entries.iter().enumerate() {
                    if position > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{entry}")?;
                }
                write!(f, "]")?;
            }
            MessageBody::AppendResponse(AppendResponse::Accepted { match_index }) => {
                write!(f, " accepted match={match_index}")?;
            }
            MessageBody::AppendResponse(AppendResponse::Rejected {
                rejected_index,
                hint_index,
                hint_term,
                lost_entries,
            }) => {
                write!(f, " rejected index={rejected_index} hint={hint_index}@{hint_term}")?;
                if lost_entries.is_some() {
                    write!(f, " lost")?;
                }
            }
            MessageBody::Heartbeat(heartbeat) => {
                write!(f, " commit={} round={}", heartbeat.commit, heartbeat.read_round)?;
            }
            MessageBody::HeartbeatResponse(response) => {
                write!(f, " round={}", response.read_round)?;
            }
            MessageBody::TimeoutNow => {}
            MessageBody::ReadIndex(request) => write!(f, " request={}", request.request)?,
            MessageBody::ReadIndexResponse(response) => {
                write!(f, " request={} index=", response.request)?;
                match response.index {
                    Some(index) => write!(f, "{index}")?,
                    None => write!(f, "none")?,
                }
            }
            MessageBody::InstallSnapshot(chunk) => {
                write!(
                    f,
                    " snapshot={}@{} offset={} bytes={} of {}",
                    chunk.meta.last_index,
                    chunk.meta.last_term,
                    chunk.offset,
                    chunk.data.len(),
                    chunk.total_bytes
                )?;
            }
            MessageBody::InstallSnapshotResponse(response) => {
                write!(
                    f,
                    " snapshot={} next={} {}",
                    response.last_index,
                    response.next_offset,
                    if response.accepted { "accepted" } else { "rejected" }
                )?;
            }
            MessageBody::Audit(audit) => write!(f, " {audit}")?,
        }
        Ok(())
    }
}

/// Auditing messages: how replicas compare what they applied, and how a divergent replica is
/// told and repaired. The consensus core never acts on them (see the node driver's audit).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditMessage {
    /// A replica to its leader: its output chain where it stands, and state digests taken
    /// since its last report.
    Report(ChainReport),
    /// The leader to a replica: send your chain at each index in `(after, through]`.
    ChainsRequest {
        /// The last index known to agree.
        after: LogIndex,
        /// The first index known to differ.
        through: LogIndex,
    },
    /// The answer: the chain at each index asked for that this replica still holds.
    Chains {
        /// `(index, chain)`, in index order.
        values: Vec<(LogIndex, u64)>,
    },
    /// The leader to a replica: a majority disagrees with you from this point on; stop
    /// serving reads and voting.
    Quarantine(Divergence),
    /// The leader to a quarantined replica: a chunk of a checkpoint whose state digest a
    /// majority reported, to repair from.
    RepairChunk(RepairChunk),
    /// A quarantined replica's answer to a repair chunk.
    RepairAnswer(RepairAnswer),
    /// The leader to every replica: a majority of voters reported this state digest and
    /// chain at this index. A replica with the same there writes the checkpoint it holds for
    /// it: only states a majority vouched for are written.
    Agreed(DigestPoint),
    /// The leader to a quarantined replica: your state and chain equal the leader's again at
    /// this digest point (placed after you were found): leave quarantine.
    Cleared {
        /// The digest point.
        index: LogIndex,
    },
}

/// A replica's report of what it applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    /// The last index applied, and the output chain through it.
    pub applied: LogIndex,
    /// The chain through `applied`.
    pub chain: u64,
    /// State digests taken at digest points since the last report.
    pub digests: Vec<DigestPoint>,
    /// The first index of the replica's log (it can re-apply from a checkpoint no older).
    pub log_first: LogIndex,
    /// Whether the replica holds itself quarantined.
    pub quarantined: bool,
    /// The index of the checkpoint its state was last replaced from (restart, snapshot,
    /// repair): a change says the state the leader judged is gone.
    pub restored_from: LogIndex,
}

/// The state digest a replica took at a digest point, with its chain there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestPoint {
    /// The index applied when the digest was taken.
    pub index: LogIndex,
    /// The output chain through it.
    pub chain: u64,
    /// The state machine's digest there.
    pub digest: [u8; 32],
}

/// What part of a replica differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DivergenceKind {
    /// Its output chain: it applied something differently or answered differently.
    Output,
    /// Its state digest at a digest point, with the same outputs.
    State,
}

/// Where a replica departs from the majority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// The divergent replica.
    pub replica: NodeId,
    /// What differs.
    pub kind: DivergenceKind,
    /// The first index where it differs (for output: the exact entry once narrowed down; for
    /// state: the digest point).
    pub index: LogIndex,
    /// Whether `index` is exact (narrowed down to one entry) or the first report that
    /// differed.
    pub exact: bool,
    /// The majority's chain (or the first 8 bytes of its digest) there.
    pub expected: u64,
    /// The divergent replica's.
    pub found: u64,
    /// The entry at `index`, as the leader describes it.
    pub entry: String,
    /// The leader's commit index when it found the divergence.
    pub detected_at: LogIndex,
}

/// A chunk of the checkpoint a quarantined replica repairs from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairChunk {
    /// The chunk, as a snapshot transfer would send it.
    pub chunk: InstallSnapshot,
    /// The state digest a majority reported at the checkpoint's index.
    pub state_digest: [u8; 32],
    /// The output chain a majority reported there.
    pub chain: u64,
}

/// A quarantined replica's answer to a repair chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairAnswer {
    /// The checkpoint's index.
    pub index: LogIndex,
    /// Bytes held: send from here.
    pub next_offset: u64,
    /// The replica restored the checkpoint, checked its digest and rejoined.
    pub repaired: bool,
    /// Why a chunk or the checkpoint was refused, if it was.
    pub refused: Option<String>,
}

impl AuditMessage {
    /// A short name of the kind of message.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditMessage::Report(_) => "AuditReport",
            AuditMessage::ChainsRequest { .. } => "AuditChainsRequest",
            AuditMessage::Chains { .. } => "AuditChains",
            AuditMessage::Quarantine(_) => "AuditQuarantine",
            AuditMessage::RepairChunk(_) => "AuditRepairChunk",
            AuditMessage::RepairAnswer(_) => "AuditRepairAnswer",
            AuditMessage::Agreed(_) => "AuditAgreed",
            AuditMessage::Cleared { .. } => "AuditCleared",
        }
    }
}

impl fmt::Display for AuditMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditMessage::Report(report) => write!(
                f,
                "applied={} chain={:016x} digests={} log_first={}{}",
                report.applied,
                report.chain,
                report.digests.len(),
                report.log_first,
                if report.quarantined { " quarantined" } else { "" }
            ),
            AuditMessage::ChainsRequest { after, through } => write!(f, "({after}, {through}]"),
            AuditMessage::Chains { values } => write!(f, "values={}", values.len()),
            AuditMessage::Agreed(point) => write!(f, "index={}", point.index),
            AuditMessage::Cleared { index } => write!(f, "index={index}"),
            AuditMessage::Quarantine(divergence) => write!(
                f,
                "replica={} {:?} index={}{}",
                divergence.replica,
                divergence.kind,
                divergence.index,
                if divergence.exact { "" } else { " (first report)" }
            ),
            AuditMessage::RepairChunk(chunk) => write!(
                f,
                "checkpoint={} offset={} bytes={} of {}",
                chunk.chunk.meta.last_index,
                chunk.chunk.offset,
                chunk.chunk.data.len(),
                chunk.chunk.total_bytes
            ),
            AuditMessage::RepairAnswer(answer) => write!(
                f,
                "checkpoint={} next={}{}{}",
                answer.index,
                answer.next_offset,
                if answer.repaired { " repaired" } else { "" },
                answer.refused.as_deref().map(|why| format!(" refused: {why}")).unwrap_or_default()
            ),
        }
    }
}
