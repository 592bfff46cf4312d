//! What travels inside frames: the peer handshake and the native client protocol.
//!
//! The client protocol is generic over a state machine's input, output and query types, so a
//! user's state machine gets a network service and a typed client without writing RPC code.
//! Requests carry an id chosen by the client, so many can be in flight on one connection
//! (multiplexed and pipelined); answers name it and may come in any order.

use serde::{Deserialize, Serialize};

/// The first frame on a connection between replicas ([`crate::Kind::Hello`]): who is calling,
/// for which cluster, on which stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHello {
    /// The cluster: a replica of another cluster is refused.
    pub cluster_id: u64,
    /// The calling replica.
    pub from: u64,
    /// The replica called.
    pub to: u64,
    /// Which stream: consensus messages, or snapshot chunks (kept apart so a big snapshot
    /// never delays a heartbeat).
    pub stream: PeerStream,
}

/// The two streams between a pair of replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerStream {
    /// Consensus messages.
    Consensus,
    /// Snapshot chunks and their answers.
    Snapshots,
}

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadConsistency {
    /// Linearizable, confirmed by a quorum round (read-index). The default.
    #[default]
    Linearizable,
    /// Linearizable under the clock assumption of leader leases (no round trip).
    Lease,
    /// From whichever replica answers, possibly stale.
    Follower,
}

/// A client's message to a replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage<I, Q> {
    /// A request that goes through the log, in the client's session.
    Write {
        /// The client's id for this request on this connection.
        id: u64,
        /// The session.
        client: u64,
        /// The request's number in the session (a retry keeps it).
        sequence: u64,
        /// What to apply.
        input: I,
    },
    /// A read-only question.
    Read {
        /// The client's id for this request on this connection.
        id: u64,
        /// The question.
        query: Q,
        /// How to serve it.
        consistency: ReadConsistency,
    },
    /// The replica's status.
    Status {
        /// The client's id for this request on this connection.
        id: u64,
        /// Also compute the digest of the whole state (costs a pass over it).
        digest: bool,
    },
    /// Look at or change the cluster's members (changes go to the leader, in the client's
    /// session, so a retried change is made once).
    Members {
        /// The client's id for this request on this connection.
        id: u64,
        /// The session.
        client: u64,
        /// The request's number in the session (a retry keeps it).
        sequence: u64,
        /// What to do.
        request: MemberRequest,
    },
    /// An audit request (answered by the leader).
    Audit {
        /// The client's id for this request on this connection.
        id: u64,
        /// What is asked.
        request: AuditRequest,
    },
    /// A write's first attempt, as [`ClientMessage::Write`] otherwise: the replica may refuse
    /// it before it takes a log entry ([`ServerMessage::Denied`]), and that refusal is final,
    /// since no earlier attempt can be in the log. Retries are sent as `Write`.
    WriteFirst {
        /// The client's id for this request on this connection.
        id: u64,
        /// The session.
        client: u64,
        /// The request's number in the session.
        sequence: u64,
        /// What to apply.
        input: I,
    },
    /// A request made with a user's credential (a token the state machine issued): what
    /// membership changes and audit actions need once the state machine checks users.
    Authenticated {
        /// The credential.
        token: String,
        /// The request (one that needs a credential: no nesting, so that decoding is bounded).
        request: AdminRequest,
    },
}

/// A request that may need a user's credential ([`ClientMessage::Authenticated`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// As [`ClientMessage::Members`].
    Members {
        /// The client's id for this request on this connection.
        id: u64,
        /// The session.
        client: u64,
        /// The request's number in the session.
        sequence: u64,
        /// What to do.
        request: MemberRequest,
    },
    /// As [`ClientMessage::Audit`].
    Audit {
        /// The client's id for this request on this connection.
        id: u64,
        /// What is asked.
        request: AuditRequest,
    },
}

impl AdminRequest {
    /// The request as a message of its own.
    pub fn into_message<I, Q>(self) -> ClientMessage<I, Q> {
        match self {
            AdminRequest::Members { id, client, sequence, request } => {
                ClientMessage::Members { id, client, sequence, request }
            }
            AdminRequest::Audit { id, request } => ClientMessage::Audit { id, request },
        }
    }

    /// `message` as an admin request, if it is one (else it is given back).
    pub fn from_message<I, Q>(
        message: ClientMessage<I, Q>,
    ) -> Result<AdminRequest, Box<ClientMessage<I, Q>>> {
        match message {
            ClientMessage::Members { id, client, sequence, request } => {
                Ok(AdminRequest::Members { id, client, sequence, request })
            }
            ClientMessage::Audit { id, request } => Ok(AdminRequest::Audit { id, request }),
            other => Err(Box::new(other)),
        }
    }
}

impl<I, Q> ClientMessage<I, Q> {
    /// The client's id for this request.
    pub fn id(&self) -> u64 {
        match self {
            ClientMessage::Write { id, .. }
            | ClientMessage::Read { id, .. }
            | ClientMessage::Status { id, .. }
            | ClientMessage::Members { id, .. }
            | ClientMessage::Audit { id, .. }
            | ClientMessage::WriteFirst { id, .. } => *id,
            ClientMessage::Authenticated { request, .. } => match request {
                AdminRequest::Members { id, .. } | AdminRequest::Audit { id, .. } => *id,
            },
        }
    }
}

/// A request about the cluster's members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRequest {
    /// The members, as this replica knows them (answered by any replica).
    List,
    /// Record a new replica's addresses, then add it as a learner (it receives the log and
    /// counts toward no quorum until promoted).
    Add {
        /// Its id (never used before in this cluster).
        id: u64,
        /// Where replicas reach it.
        peer: String,
        /// Where clients reach it.
        client: String,
        /// Where it serves etcd's API, if it does.
        etcd: Option<String>,
    },
    /// Make a caught-up learner a voter.
    Promote {
        /// The learner.
        id: u64,
    },
    /// Remove a voter or learner.
    Remove {
        /// The replica.
        id: u64,
    },
    /// Hand leadership to a caught-up voter (answered once the leader has started the
    /// transfer; it ends within an election timeout, or the leader carries on).
    Transfer {
        /// The voter to lead.
        id: u64,
    },
}

/// A member as a replica knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its id.
    pub id: u64,
    /// Where replicas reach it (empty if not known).
    pub peer: String,
    /// Where clients reach it (empty if not known).
    pub client: String,
    /// Where it serves etcd's API, if it does.
    pub etcd: Option<String>,
    /// Whether it votes (false: a learner).
    pub voter: bool,
}

/// Why a request was not answered with an output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientError {
    /// This replica does not lead: ask the leader (at its client address, if known).
    NotLeader {
        /// The leader's id, if known.
        leader: Option<u64>,
        /// The leader's client address, if known.
        address: Option<String>,
    },
    /// Not done now (an election, a transfer, back-pressure); retry with the same number.
    Retry(String),
    /// The request is older than the session's last answered one, or the session expired.
    Stale,
    /// The request is larger than a log entry may be.
    TooLarge {
        /// Its size.
        bytes: u64,
        /// The most allowed.
        max: u64,
    },
    /// The request does not decode as this service's input.
    Malformed(String),
    /// The replica cannot serve (stopping, failed).
    Unavailable(String),
    /// The request can never be carried out as asked (a membership change the
    /// configuration does not allow, say); retrying it will not help.
    Rejected(String),
}

/// A replica's status, for `lockstep status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Its id.
    pub id: u64,
    /// Its role ("leader", "follower", ...).
    pub role: String,
    /// Its term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Its commit index.
    pub commit: u64,
    /// Its applied index.
    pub applied: u64,
    /// The last index its latest checkpoint covers.
    pub checkpoint: u64,
    /// The digest of its state, hex.
    pub digest: String,
    /// The cluster it belongs to.
    pub cluster_id: u64,
    /// Where clients reach it.
    pub client_address: String,
    /// The last index in its log.
    pub last_index: u64,
    /// The index its log is durable through.
    pub persisted: u64,
    /// The voters of its latest configuration.
    pub voters: Vec<u64>,
    /// The learners of its latest configuration.
    pub learners: Vec<u64>,
    /// Why it stopped serving, if it did.
    pub failure: Option<String>,
    /// The last index its output chain covers (its applied index).
    pub chain_index: u64,
    /// The output chain there: a running hash over every entry applied and its output, hex.
    /// Replicas with the same chain at the same index applied the same and answered the same.
    pub chain: String,
    /// The audit of replicas as this replica sees it.
    pub audit: AuditView,
    /// Its log lost entries through this index to damage (cut off at restart) and does not
    /// hold them again yet: it fetches them from the leader and takes no part in elections
    /// until it does.
    pub lost_through: Option<u64>,
}

/// What a replica publishes, after each turn that changed it, to components running in its
/// process (the etcd gateway): never sent over the network, so it carries no version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Its applied index.
    pub applied: u64,
    /// Its term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
}

/// The audit as one replica sees it (see `docs/auditing.md`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditView {
    /// Whether the audit runs.
    pub enabled: bool,
    /// Whether answers wait until a majority reported the same output chain.
    pub verified_outputs: bool,
    /// Why this replica is quarantined (serves no reads, casts no votes), if it is.
    pub quarantined: Option<String>,
    /// Leader: the newest index whose output chain a majority of voters reported alike.
    pub agreed: u64,
    /// The newest digest point whose state digest a majority reported alike (as leader:
    /// found; otherwise: told).
    pub agreed_digest: u64,
    /// This replica's newest state digest point.
    pub digest_index: u64,
    /// The digest there, hex.
    pub digest: String,
    /// Divergences found (as leader) or told of, oldest first.
    pub history: Vec<String>,
    /// Leader: each other replica.
    pub peers: Vec<PeerAuditView>,
    /// Divergent replicas found (as leader).
    pub divergences_found: u64,
    /// Times this replica found itself divergent while leading.
    pub self_quarantines: u64,
    /// Repairs this replica completed.
    pub repairs_done: u64,
}

/// What a leader knows of another replica's audit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAuditView {
    /// The replica.
    pub id: u64,
    /// The newest index where its chain equals the leader's.
    pub agreed: u64,
    /// The newest index it reported.
    pub reported: u64,
    /// Whether it is quarantined.
    pub quarantined: bool,
    /// Whether a repair is under way.
    pub repairing: bool,
}

/// What an operator asks of the audit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditRequest {
    /// Compare now: the leader places a digest point every replica reports at once.
    Check,
    /// Repair this quarantined replica now (for manual repair).
    Repair {
        /// The replica.
        id: u64,
    },
}

/// A replica's answer to a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage<O> {
    /// Done, with the output.
    Done {
        /// The request's id.
        id: u64,
        /// The output.
        output: O,
    },
    /// Refused.
    Refused {
        /// The request's id.
        id: u64,
        /// Why.
        error: ClientError,
    },
    /// The replica's status.
    Status {
        /// The request's id.
        id: u64,
        /// The status.
        status: Box<ReplicaStatus>,
    },
    /// The members (after a change: as the change leaves them, once it is in the log).
    Members {
        /// The request's id.
        id: u64,
        /// The members.
        members: Vec<MemberInfo>,
    },
    /// An audit request was taken: for a check, the index of the digest point placed (0 for
    /// a repair).
    Audit {
        /// The request's id.
        id: u64,
        /// The digest point's index.
        index: u64,
    },
    /// Refused before it was proposed or read, with the state machine's answer (a permission
    /// denied, a quota reached): nothing was applied, and the request's number in its session
    /// was not used.
    Denied {
        /// The request's id.
        id: u64,
        /// The state machine's answer.
        output: O,
    },
}

impl<O> ServerMessage<O> {
    /// The id of the request this answers.
    pub fn id(&self) -> u64 {
        match self {
            ServerMessage::Done { id, .. }
            | ServerMessage::Refused { id, .. }
            | ServerMessage::Status { id, .. }
            | ServerMessage::Members { id, .. }
            | ServerMessage::Audit { id, .. }
            | ServerMessage::Denied { id, .. } => *id,
        }
    }
}
