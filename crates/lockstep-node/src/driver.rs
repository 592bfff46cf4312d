//! The driver: one replica's core, storage, network and replicated state machine, glued in the
//! order safety needs.
//!
//! For every output of the core, the driver:
//! 1. sends the messages that may leave at once;
//! 2. hands the writes to storage as one numbered write, and keeps the messages that promise
//!    them until storage reports that write (and every earlier one) durable; then sends them
//!    and tells the core `persisted`;
//! 3. applies committed entries to the state machine in order, through the session table, and
//!    answers the proposals they carried, at most [`Driver::set_apply_budget`] of them per
//!    call (the rest wait for [`Driver::apply_queued`]), so that a caller that must stay
//!    responsive (ticks, heartbeats, votes) never waits behind a long apply;
//! 4. answers reads the core has confirmed, from the state machine.
//!
//! It reads no clock and starts no thread: time arrives as [`Driver::tick`], durability as
//! [`Driver::write_durable`], so the same code runs under the simulator and under a runtime.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read};

use lockstep_core::message::{AppendResponse, DigestPoint};
use lockstep_core::{
    ApplyContext, Command, Config, ConfigError, Entry, EntryPayload, Event, InitialState,
    InstallSnapshot, LogIndex, MembershipChange, Message, MessageBody, Node, NodeId, Persist,
    ProposeError, ReadError, ReadId, Role, SnapshotMeta, StateMachine, StateSnapshot, Term,
};

use crate::audit::Audit;
use crate::checkpoint::{Checkpoint, Checkpoints};
use serde::{Deserialize, Serialize};

use crate::sessions::{ClientId, SessionCheck, SessionConfig, Sessions};

/// Where the driver sends writes to be made durable.
///
/// A write that fails leaves what is on disk unknown: the replica must stop (fail-stop) and
/// recover from its disk, never go on as if the write had happened.
pub trait Storage {
    /// Starts making `persist` durable as write number `write`. Writes must become durable in
    /// the order submitted; the caller reports each with [`Driver::write_durable`].
    fn submit(&mut self, write: u64, persist: Persist);

    /// The largest command one log entry may carry; the driver refuses bigger proposals
    /// rather than hand storage a write it cannot make.
    fn command_bytes_max(&self) -> u64 {
        u64::MAX
    }

    /// Starts saving `state` as a checkpoint through `meta`, off the apply path; the caller
    /// reports the outcome with [`Driver::checkpoint_saved`] or [`Driver::checkpoint_failed`].
    /// The default keeps no checkpoints.
    fn start_checkpoint(&mut self, meta: SnapshotMeta, state: Box<dyn StateSnapshot>) {
        let _ = (meta, state);
    }

    /// The latest durable checkpoint (taken here or received from a leader), to send to
    /// followers that need it.
    fn latest_checkpoint(&self) -> Option<Checkpoint> {
        None
    }

    /// `len` bytes of `checkpoint`'s file at `offset`.
    fn read_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, String> {
        let _ = (checkpoint, offset, len);
        Err("this storage keeps no checkpoints".to_string())
    }

    /// Drops the log through `index`: a durable checkpoint covers it.
    fn compact(&mut self, index: LogIndex) {
        let _ = index;
    }

    /// Writes a chunk of a snapshot file sent by the leader (a chunk of another snapshot than
    /// the one being received starts it over); returns how many bytes of it are held. A chunk
    /// not at that offset, or past the end, is an error.
    fn receive_snapshot_chunk(&mut self, chunk: &InstallSnapshot) -> Result<u64, String> {
        let _ = chunk;
        Err("this storage cannot receive snapshots".to_string())
    }

    /// How many bytes of the snapshot being received are held.
    fn snapshot_bytes_received(&self) -> u64 {
        0
    }

    /// Checks the received snapshot whole (removing it if damaged), makes it durable as the
    /// latest, and returns a reader of its data.
    fn finish_snapshot(&mut self) -> Result<Box<dyn io::Read>, String> {
        Err("this storage cannot receive snapshots".to_string())
    }

    /// A reader of the snapshot being received, checked whole but not made durable: to look
    /// at before keeping it ([`Storage::finish_snapshot`]) or dropping it
    /// ([`Storage::abandon_snapshot`]).
    fn received_snapshot_reader(&mut self) -> Result<Box<dyn io::Read>, String> {
        Err("this storage cannot receive snapshots".to_string())
    }

    /// Drops the snapshot being received.
    fn abandon_snapshot(&mut self) {}
}

/// Where the driver sends messages to other replicas.
pub trait Transport {
    /// Sends `message` (best effort: the protocol tolerates loss).
    fn send(&mut self, message: Message);
}

/// A client's request: its session, its number in that session, and its input.
///
/// A client numbers its requests 1, 2, 3, ... and sends a number again (with the same input)
/// until it is answered with an output or refused `Stale`; after any other refusal it may
/// retry, or give the number to its next request instead. A session's first request is
/// number 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest<I> {
    /// The client's session.
    pub client: ClientId,
    /// The request's number in the session (1, 2, 3, ...; a retry keeps its number).
    pub sequence: u64,
    /// What the client asks.
    pub input: I,
}

/// The driver's number for a request, returned when it is submitted and named in its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Why a request was not answered with an output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This replica does not lead; try `leader`.
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// The request could not be placed or confirmed now (a transfer, back-pressure, an
    /// election); retry it with the same number.
    Retry(String),
    /// The entry carrying the request was replaced by another leader's: it was not applied;
    /// retry it with the same number.
    Lost,
    /// The request is older than the client's last answered one, or its session expired.
    Stale,
    /// The command in the log could not be decoded (every replica refuses it alike).
    Malformed,
    /// The request is larger than one log entry may be.
    TooLarge {
        /// Its encoded size.
        bytes: u64,
        /// The largest allowed.
        max: u64,
    },
}

/// An answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion<O> {
    /// The request was applied (or had been, for a retry) with this output, or the read
    /// returned it.
    Done {
        /// The request.
        request: RequestId,
        /// Its output.
        output: O,
    },
    /// The request was refused.
    Refused {
        /// The request.
        request: RequestId,
        /// Why.
        refusal: Refusal,
    },
}

/// What goes into the log for a client request.
#[derive(Serialize, Deserialize)]
struct LogCommand<I> {
    version: u8,
    client: ClientId,
    sequence: u64,
    input: I,
}

const LOG_COMMAND_VERSION: u8 = 1;

/// The replicated state: the user's state machine and the session table, changed only by
/// applying committed entries.
pub struct Replicated<M: StateMachine> {
    machine: M,
    sessions: Sessions,
    session_config: SessionConfig,
    sabotage_skip_sessions: bool,
    /// The output chain through the last entry applied.
    chain: Chain,
    /// The chain at every [`CHAIN_POINT_INTERVAL`]th index, the newest [`CHAIN_POINTS_KEPT`].
    chain_points: BTreeMap<LogIndex, u64>,
    /// The chain after each of the newest [`RECENT_CHAINS`] entries applied, oldest first.
    recent: VecDeque<(LogIndex, u64)>,
    /// State digests are taken at every index that is a multiple of this (0: none), and at
    /// every no-op entry when `digests_on`.
    digest_interval: u64,
    digests_on: bool,
    /// The newest [`DIGESTS_KEPT`] digest points, oldest first.
    digests: VecDeque<DigestPoint>,
    /// Digest points not yet handed out by [`Replicated::take_new_digests`].
    new_digests: Vec<DigestPoint>,
    /// The index of the snapshot the state was last restored from.
    restored_from: LogIndex,
}

/// The output chain: a running hash over everything a replica applied, in order. After entry
/// `i`, `chain = xxh3(previous chain, i, its term, xxh3 of its command, xxh3 of the output)`
/// (0 for entries that are no command, fixed markers for malformed or stale commands). Two
/// replicas with equal chains at an index applied the same entries and produced the same
/// outputs up to it; the first index where their chains differ is where one went wrong.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// The last index the chain covers.
    pub index: LogIndex,
    /// Its value.
    pub value: u64,
}

impl Chain {
    /// The chain after one more entry.
    pub fn next(self, index: LogIndex, term: Term, input: u64, output: u64) -> Chain {
        let mut bytes = [0u8; 40];
        bytes[..8].copy_from_slice(&self.value.to_le_bytes());
        bytes[8..16].copy_from_slice(&index.get().to_le_bytes());
        bytes[16..24].copy_from_slice(&term.get().to_le_bytes());
        bytes[24..32].copy_from_slice(&input.to_le_bytes());
        bytes[32..].copy_from_slice(&output.to_le_bytes());
        Chain { index, value: xxhash_rust::xxh3::xxh3_64(&bytes) }
    }
}

/// The chain is kept at every this many indexes (for finding where two replicas part).
pub const CHAIN_POINT_INTERVAL: u64 = 64;

/// This many chain points are kept (the newest).
pub const CHAIN_POINTS_KEPT: usize = 4096;

/// The chain after each of this many newest entries is kept (for finding the exact entry
/// where two replicas part).
pub const RECENT_CHAINS: usize = 4096;

/// This many state digest points are kept (the newest).
pub const DIGESTS_KEPT: usize = 64;

/// Output digests in the chain for commands that produced no output.
const CHAIN_MALFORMED: u64 = 1;
const CHAIN_STALE: u64 = 2;

impl<M: StateMachine> Replicated<M> {
    /// Wraps a state machine in its initial state.
    pub fn new(machine: M, session_config: SessionConfig) -> Replicated<M> {
        Replicated {
            machine,
            sessions: Sessions::new(),
            session_config,
            sabotage_skip_sessions: false,
            chain: Chain::default(),
            chain_points: BTreeMap::new(),
            recent: VecDeque::new(),
            digest_interval: 0,
            digests_on: false,
            digests: VecDeque::new(),
            new_digests: Vec::new(),
            restored_from: LogIndex::ZERO,
        }
    }

    /// The index of the snapshot the state was last restored from (zero: none).
    pub fn restored_from(&self) -> LogIndex {
        self.restored_from
    }

    /// The state digest the audit compares: the state machine's digest, and the session
    /// table's (a wrong session table answers retries wrongly).
    pub fn state_digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.machine.digest().0);
        hasher.update(&self.sessions.encode());
        *hasher.finalize().as_bytes()
    }

    /// Takes the state machine's digest at every no-op entry (a point the leader places) and
    /// at every index that is a multiple of `interval` (0: only at no-ops), for the audit.
    pub fn take_digests(&mut self, interval: u64) {
        self.digests_on = true;
        self.digest_interval = interval;
    }

    /// The state digest taken at `index`, if it was a digest point and is still kept.
    pub fn digest_at(&self, index: LogIndex) -> Option<DigestPoint> {
        self.digests.iter().rev().find(|point| point.index == index).copied()
    }

    /// The newest digest point kept.
    pub fn latest_digest(&self) -> Option<DigestPoint> {
        self.digests.back().copied()
    }

    /// The newest `count` digest points, oldest first.
    pub fn newest_digests(&self, count: usize) -> Vec<DigestPoint> {
        self.digests.iter().skip(self.digests.len().saturating_sub(count)).copied().collect()
    }

    /// Digest points taken since the last call.
    pub fn take_new_digests(&mut self) -> Vec<DigestPoint> {
        std::mem::take(&mut self.new_digests)
    }

    /// The chain at each index in `(after, through]` still known (recent entries, or chain
    /// points for older ones), in order, at most [`RECENT_CHAINS`] of them.
    pub fn chains_between(&self, after: LogIndex, through: LogIndex) -> Vec<(LogIndex, u64)> {
        if after >= through {
            return Vec::new();
        }
        let mut values: Vec<(LogIndex, u64)> = self
            .chain_points
            .range(after.next()..=through)
            .map(|(index, value)| (*index, *value))
            .filter(|(index, _)| self.recent.front().is_none_or(|(first, _)| index < first))
            .collect();
        values.extend(
            self.recent.iter().filter(|(index, _)| *index > after && *index <= through).copied(),
        );
        // The first difference is near `after`: keep the oldest.
        values.truncate(RECENT_CHAINS);
        values
    }

    /// Damages the state machine as a memory error would, through `damage`: for showing that
    /// the audit finds it.
    #[doc(hidden)]
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    /// The output chain through the last entry applied.
    pub fn chain(&self) -> Chain {
        self.chain
    }

    /// The chain at `index`, if it is the current one or a kept chain point.
    pub fn chain_at(&self, index: LogIndex) -> Option<u64> {
        if index == self.chain.index {
            return Some(self.chain.value);
        }
        if let Some((first, _)) = self.recent.front() {
            if index >= *first {
                let offset = (index.get() - first.get()) as usize;
                return self
                    .recent
                    .get(offset)
                    .filter(|(at, _)| *at == index)
                    .map(|(_, value)| *value);
            }
        }
        self.chain_points.get(&index).copied()
    }

    /// Extends the chain with entry `entry` and what applying it gave.
    fn extend_chain(&mut self, entry: &Entry, input: u64, output: u64) {
        self.chain = self.chain.next(entry.index, entry.term, input, output);
        if entry.index.get() % CHAIN_POINT_INTERVAL == 0 {
            self.chain_points.insert(entry.index, self.chain.value);
            while self.chain_points.len() > CHAIN_POINTS_KEPT {
                self.chain_points.pop_first();
            }
        }
        if self.recent.back().is_some_and(|(last, _)| last.next() != entry.index) {
            self.recent.clear();
        }
        self.recent.push_back((entry.index, self.chain.value));
        if self.recent.len() > RECENT_CHAINS {
            self.recent.pop_front();
        }
        let digest_point = matches!(entry.payload, EntryPayload::Noop)
            || (self.digest_interval > 0 && entry.index.get() % self.digest_interval == 0);
        if self.digests_on && digest_point {
            let point = DigestPoint {
                index: entry.index,
                chain: self.chain.value,
                digest: self.state_digest(),
            };
            self.digests.push_back(point);
            if self.digests.len() > DIGESTS_KEPT {
                self.digests.pop_front();
            }
            self.new_digests.push(point);
        }
    }

    /// The state machine.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The state machine and the session table, taken apart.
    pub fn into_parts(self) -> (M, Sessions) {
        (self.machine, self.sessions)
    }

    /// The session table.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Applies one committed entry: what it was and, for a client command, the answer.
    pub fn apply(&mut self, entry: &Entry) -> Applied<M::Output> {
        let EntryPayload::Command(command) = &entry.payload else {
            self.extend_chain(entry, 0, 0);
            return Applied::NotCommand;
        };
        let input = xxhash_rust::xxh3::xxh3_64(&command.data);
        let (applied, output) = self.apply_command(entry, command);
        self.extend_chain(entry, input, output);
        applied
    }

    /// Applies a command: what it did, and the digest of its output for the chain.
    fn apply_command(&mut self, entry: &Entry, command: &Command) -> (Applied<M::Output>, u64) {
        let context = ApplyContext {
            index: entry.index,
            term: entry.term,
            timestamp_millis: command.timestamp_millis,
        };
        self.sessions.expire(context.timestamp_millis, &self.session_config);
        let Ok(decoded) = postcard::from_bytes::<LogCommand<M::Input>>(&command.data) else {
            return (Applied::Malformed, CHAIN_MALFORMED);
        };
        if decoded.version != LOG_COMMAND_VERSION {
            return (Applied::Malformed, CHAIN_MALFORMED);
        }
        let (client, sequence) = (decoded.client, decoded.sequence);
        let check = if cfg!(feature = "sabotage") && self.sabotage_skip_sessions {
            SessionCheck::New
        } else {
            self.sessions.check(client, sequence)
        };
        match check {
            SessionCheck::New => {
                let output = self.machine.apply(decoded.input, &context);
                let recorded = postcard::to_stdvec(&output).unwrap_or_default();
                let digest = xxhash_rust::xxh3::xxh3_64(&recorded);
                self.sessions.record(client, sequence, recorded, context.timestamp_millis);
                (Applied::Fresh { client, sequence, output }, digest)
            }
            SessionCheck::Duplicate(recorded) => match postcard::from_bytes(&recorded) {
                Ok(output) => (
                    Applied::Duplicate { client, sequence, output },
                    xxhash_rust::xxh3::xxh3_64(&recorded),
                ),
                Err(_) => (Applied::Malformed, CHAIN_MALFORMED),
            },
            SessionCheck::Stale { .. } => (Applied::Stale { client, sequence }, CHAIN_STALE),
        }
    }

    /// Takes a consistent view of the replicated state — the session table and the state
    /// machine — for a snapshot. Cheap: the state machine's own snapshot is a cheap view, and
    /// the session table is encoded now; the writing happens later, off the apply path.
    pub fn snapshot(&self) -> ReplicatedSnapshot<M::Snapshot> {
        ReplicatedSnapshot {
            chain: self.chain,
            sessions: self.sessions.encode(),
            machine: self.machine.snapshot(),
        }
    }

    /// Replaces the replicated state with one written by a [`ReplicatedSnapshot`]. Bytes that
    /// do not decode are an error, never a panic; the session table is replaced only if the
    /// whole snapshot was read.
    pub fn restore(&mut self, input: &mut dyn io::Read) -> io::Result<()> {
        let invalid = |detail: String| io::Error::new(io::ErrorKind::InvalidData, detail);
        let mut version = [0u8; 1];
        input.read_exact(&mut version)?;
        let chain = match version[0] {
            // Version 1 had no chain: it starts again from the snapshot.
            1 => Chain::default(),
            SNAPSHOT_VERSION => {
                let (mut index, mut value) = ([0u8; 8], [0u8; 8]);
                input.read_exact(&mut index)?;
                input.read_exact(&mut value)?;
                Chain {
                    index: LogIndex(u64::from_le_bytes(index)),
                    value: u64::from_le_bytes(value),
                }
            }
            other => {
                return Err(invalid(format!(
                    "replicated-state snapshot version {other} is not 1 or {SNAPSHOT_VERSION}"
                )))
            }
        };
        let mut length = [0u8; 8];
        input.read_exact(&mut length)?;
        let length = u64::from_le_bytes(length);
        if length > SESSIONS_BYTES_MAX {
            return Err(invalid(format!("a session table of {length} bytes is not plausible")));
        }
        let mut encoded = Vec::new();
        Read::take(&mut *input, length).read_to_end(&mut encoded)?;
        if encoded.len() as u64 != length {
            return Err(invalid("the snapshot ends inside its session table".to_string()));
        }
        let sessions = Sessions::decode(&encoded).map_err(invalid)?;
        self.machine.restore(input)?;
        // Read to the end: a snapshot reader checks its digest there, and bytes the state
        // machine left unread mean it read something else than was written.
        let mut rest = [0u8; 1];
        if input.read(&mut rest)? != 0 {
            return Err(invalid("the state machine left bytes of the snapshot unread".into()));
        }
        self.sessions = sessions;
        self.chain = chain;
        self.chain_points.clear();
        self.recent.clear();
        self.digests.clear();
        self.new_digests.clear();
        self.restored_from = chain.index;
        if chain.index > LogIndex::ZERO {
            self.chain_points.insert(chain.index, chain.value);
            self.recent.push_back((chain.index, chain.value));
        }
        Ok(())
    }

    /// Makes every request count as new, as if there were no session table: a retry of an
    /// applied request is applied again. Only for showing that the simulator catches it.
    #[doc(hidden)]
    #[cfg(feature = "sabotage")]
    pub fn sabotage_skip_sessions(&mut self) {
        self.sabotage_skip_sessions = true;
    }
}

/// The version byte that starts a replicated-state snapshot (2: with the output chain).
const SNAPSHOT_VERSION: u8 = 2;

/// A session table larger than this in a snapshot is refused as damage.
const SESSIONS_BYTES_MAX: u64 = 1 << 32;

/// A consistent view of the replicated state: the output chain, the session table (encoded)
/// and the state machine's own snapshot. Written as a version byte, the chain's index and
/// value (8 bytes each), the session table's length (8 bytes; all little-endian), the table,
/// then the state machine's bytes.
pub struct ReplicatedSnapshot<S> {
    chain: Chain,
    sessions: Vec<u8>,
    machine: S,
}

impl<S: StateSnapshot> StateSnapshot for ReplicatedSnapshot<S> {
    fn write_to(&self, out: &mut dyn io::Write) -> io::Result<()> {
        out.write_all(&[SNAPSHOT_VERSION])?;
        out.write_all(&self.chain.index.get().to_le_bytes())?;
        out.write_all(&self.chain.value.to_le_bytes())?;
        out.write_all(&(self.sessions.len() as u64).to_le_bytes())?;
        out.write_all(&self.sessions)?;
        self.machine.write_to(out)
    }
}

/// What applying one committed entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied<O> {
    /// The entry was no client command (a leader's no-op or a configuration).
    NotCommand,
    /// The command does not decode (every replica refuses it alike).
    Malformed,
    /// A new request: applied to the state machine, with this output.
    Fresh {
        /// Its session.
        client: ClientId,
        /// Its number.
        sequence: u64,
        /// What the state machine returned.
        output: O,
    },
    /// A retry of the session's last applied request: nothing applied; its recorded output.
    Duplicate {
        /// Its session.
        client: ClientId,
        /// Its number.
        sequence: u64,
        /// The output recorded when it was applied.
        output: O,
    },
    /// Older than the session's last applied request, or its session expired: refused.
    Stale {
        /// Its session.
        client: ClientId,
        /// Its number.
        sequence: u64,
    },
}

impl<O> Applied<O> {
    /// The answer to give the request this entry carried, if it carried one.
    pub fn into_answer(self) -> Option<Result<O, Refusal>> {
        match self {
            Applied::NotCommand => None,
            Applied::Malformed => Some(Err(Refusal::Malformed)),
            Applied::Fresh { output, .. } | Applied::Duplicate { output, .. } => Some(Ok(output)),
            Applied::Stale { .. } => Some(Err(Refusal::Stale)),
        }
    }
}

/// One applied entry as the driver reports it when asked to ([`Driver::record_applies`]): for
/// checkers that compare what replicas applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedRecord {
    /// The entry's index.
    pub index: LogIndex,
    /// Its term.
    pub term: Term,
    /// The session request it carried and whether it was applied fresh (not a duplicate,
    /// stale or malformed).
    pub request: Option<(ClientId, u64, bool)>,
    /// The output chain through it.
    pub chain: u64,
}

/// A write handed to storage and not yet durable.
struct PendingWrite {
    id: u64,
    /// Its last entry, reported to the core once durable.
    last_entry: Option<(LogIndex, Term)>,
    /// Messages that may leave only once it is durable.
    messages: Vec<Message>,
}

/// One replica. See the module documentation.
pub struct Driver<M: StateMachine, D: Storage, T: Transport> {
    pub(crate) node: Node,
    pub(crate) state: Replicated<M>,
    pub(crate) storage: D,
    pub(crate) transport: T,
    next_write: u64,
    writes: VecDeque<PendingWrite>,
    /// Proposals waiting for their entry to apply: index -> (term, request) for each.
    pub(crate) proposals: BTreeMap<LogIndex, Vec<(Term, RequestId)>>,
    /// Reads waiting for the core to confirm them.
    pub(crate) reads: BTreeMap<ReadId, (RequestId, M::Query)>,
    next_request: u64,
    pub(crate) completions: Vec<Completion<M::Output>>,
    /// Applied entries, kept only when asked for.
    applied: Option<Vec<AppliedRecord>>,
    pub(crate) checkpoints: Checkpoints,
    /// Set when this replica can no longer go on (see [`Driver::failure`]).
    pub(crate) failure: Option<String>,
    /// The audit of replicas' chains and digests (see [`crate::audit`]).
    pub(crate) audit: Audit<M::Output>,
    /// Committed entries handed out by the core and not yet applied, in order.
    apply_queue: VecDeque<Entry>,
    /// Entries, and their bytes, that may still be applied before [`Driver::set_apply_budget`]
    /// is called again.
    apply_budget: u64,
    apply_budget_bytes: u64,
    /// A leader refuses proposals while its commit index is more than this many entries ahead
    /// of what was applied.
    apply_backlog_max: u64,
}

/// Proposals are refused while more than this many committed entries wait to be applied,
/// unless [`Driver::set_apply_backlog_max`] says otherwise.
pub const APPLY_BACKLOG_MAX: u64 = 65_536;

impl<M: StateMachine, D: Storage, T: Transport> Driver<M, D, T> {
    /// A replica starting from `initial` (what storage recovered), with `machine` holding the
    /// state as of `initial.applied`.
    pub fn new(
        config: Config,
        initial: InitialState,
        state: Replicated<M>,
        storage: D,
        transport: T,
    ) -> Result<Driver<M, D, T>, String> {
        Ok(Driver {
            node: Node::new(config, initial)?,
            state,
            storage,
            transport,
            next_write: 1,
            writes: VecDeque::new(),
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_request: 1,
            completions: Vec::new(),
            applied: None,
            checkpoints: Checkpoints::default(),
            failure: None,
            audit: Audit::default(),
            apply_queue: VecDeque::new(),
            apply_budget: u64::MAX,
            apply_budget_bytes: u64::MAX,
            apply_backlog_max: APPLY_BACKLOG_MAX,
        })
    }

    /// From now on, apply at most `entries` committed entries of at most `bytes` in all (at
    /// least one entry) until called again (`u64::MAX`, the default: no limit). Entries beyond
    /// the budget wait, in order, for [`Driver::apply_queued`]; everything else (messages,
    /// writes, ticks) goes on meanwhile.
    pub fn set_apply_budget(&mut self, entries: u64, bytes: u64) {
        self.apply_budget = entries;
        self.apply_budget_bytes = bytes;
    }

    /// While leading, refuse proposals (`Retry`) while more than `entries` committed entries
    /// wait to be applied: a state machine that falls behind slows its clients down, never its
    /// elections.
    pub fn set_apply_backlog_max(&mut self, entries: u64) {
        self.apply_backlog_max = entries.max(1);
    }

    /// Committed entries waiting to be applied.
    pub fn apply_backlog(&self) -> u64 {
        self.apply_queue.len() as u64
    }

    /// Applies waiting entries, as many as the budget allows, and carries out what follows.
    pub fn apply_queued(&mut self) {
        if self.failure.is_some() {
            return;
        }
        self.apply_some();
        self.drain();
    }

    /// Entries the core handed out are no longer to be applied: the state was replaced (a
    /// snapshot installed, or a repair) and the core hands out what follows it again.
    pub(crate) fn forget_queued_entries(&mut self) {
        self.apply_queue.clear();
    }

    /// The consensus core, to look at.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The replicated state, to look at.
    pub fn state(&self) -> &Replicated<M> {
        &self.state
    }

    /// The replicated state, to damage on purpose (the simulator's faults).
    #[doc(hidden)]
    pub fn state_mut(&mut self) -> &mut Replicated<M> {
        &mut self.state
    }

    /// The storage, to look at.
    pub fn storage(&self) -> &D {
        &self.storage
    }

    /// The storage, to look at or drive (the simulator completes its writes).
    pub fn storage_mut(&mut self) -> &mut D {
        &mut self.storage
    }

    /// The transport, to look at or drain.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Answers ready since the last call.
    pub fn take_completions(&mut self) -> Vec<Completion<M::Output>> {
        std::mem::take(&mut self.completions)
    }

    /// Keeps a record of every entry applied from now on, for [`Driver::take_applied`].
    pub fn record_applies(&mut self) {
        self.applied.get_or_insert_with(Vec::new);
    }

    /// The entries applied since the last call (if [`Driver::record_applies`] was called).
    pub fn take_applied(&mut self) -> Vec<AppliedRecord> {
        self.applied.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Why this replica must stop, if it must: its state is no longer known good (a snapshot
    /// that passed its checksums could not be restored). Stop it and recover from disk.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// One tick of logical time.
    pub fn tick(&mut self) {
        if self.failure.is_some() {
            return;
        }
        self.node.tick();
        self.compact_step();
        self.tick_transfers();
        self.audit_tick();
        self.drain();
    }

    /// A message from another replica.
    pub fn receive(&mut self, message: Message) {
        if self.failure.is_some() {
            return;
        }
        if let MessageBody::Audit(audit) = message.body {
            self.on_audit(message.from, message.term, *audit);
            self.drain();
            return;
        }
        if let MessageBody::ReadIndex(request) = &message.body {
            if self.node.role() == lockstep_core::Role::Leader
                && message.term == self.node.term()
                && self.audit_refuses_reads_for(message.from)
            {
                // A quarantined replica's reads are not confirmed: its state differs.
                let response = lockstep_core::message::ReadIndexResponse {
                    request: request.request,
                    index: None,
                };
                self.transport.send(Message {
                    from: self.node.id(),
                    to: message.from,
                    term: self.node.term(),
                    body: MessageBody::ReadIndexResponse(response),
                });
                return;
            }
        }
        self.node.step(message);
        self.drain();
    }

    /// Proposes a client request; `timestamp_millis` is this replica's clock (used only if it
    /// leads). The answer comes as a [`Completion`] naming the returned id.
    pub fn propose(
        &mut self,
        request: ClientRequest<M::Input>,
        timestamp_millis: u64,
    ) -> RequestId {
        let ids = self.propose_batch(vec![request], timestamp_millis);
        ids.first().copied().unwrap_or(RequestId(0))
    }

    /// Proposes several client requests at once: one batch of entries in the log, one write
    /// to storage, one round of appends, instead of one of each per request. Answers come as
    /// [`Completion`]s naming the returned ids (one per request, in order).
    pub fn propose_batch(
        &mut self,
        requests: Vec<ClientRequest<M::Input>>,
        timestamp_millis: u64,
    ) -> Vec<RequestId> {
        let mut ids = Vec::with_capacity(requests.len());
        let mut commands = Vec::with_capacity(requests.len());
        let mut proposed = Vec::with_capacity(requests.len());
        let max = self.storage.command_bytes_max();
        for request in requests {
            let id = self.request_id();
            ids.push(id);
            if let Some(failure) = &self.failure {
                let refusal = Refusal::Retry(format!("this replica has stopped: {failure}"));
                self.completions.push(Completion::Refused { request: id, refusal });
                continue;
            }
            let behind = self.node.commit_index().get() - self.node.applied_index().get();
            if behind > self.apply_backlog_max && self.node.role() == Role::Leader {
                let refusal = Refusal::Retry(format!(
                    "the state machine is {behind} entries behind the log; retry shortly"
                ));
                self.completions.push(Completion::Refused { request: id, refusal });
                continue;
            }
            let command = LogCommand {
                version: LOG_COMMAND_VERSION,
                client: request.client,
                sequence: request.sequence,
                input: request.input,
            };
            let Ok(bytes) = postcard::to_stdvec(&command) else {
                self.completions
                    .push(Completion::Refused { request: id, refusal: Refusal::Malformed });
                continue;
            };
            if bytes.len() as u64 > max {
                let refusal = Refusal::TooLarge { bytes: bytes.len() as u64, max };
                self.completions.push(Completion::Refused { request: id, refusal });
                continue;
            }
            commands.push(bytes::Bytes::from(bytes));
            proposed.push(id);
        }
        if commands.is_empty() {
            return ids;
        }
        // Proposed in chunks of at most an append's worth of bytes, so that the core's bound
        // on uncommitted bytes weighs a batch as it would its requests one by one: a prefix
        // gets in, and no batch slips past the bound whole. Still one write and one round of
        // appends: the output is drained once, after every chunk.
        let chunk_bytes = self.node.config().append_bytes_max.max(1);
        let mut refused: Option<Refusal> = None;
        let mut pending = commands.into_iter().zip(proposed).peekable();
        while pending.peek().is_some() {
            let mut chunk = Vec::new();
            let mut chunk_ids = Vec::new();
            let mut bytes = 0u64;
            while let Some((command, _)) = pending.peek() {
                let size = command.len() as u64;
                if !chunk.is_empty() && bytes + size > chunk_bytes {
                    break;
                }
                bytes += size;
                let Some((command, id)) = pending.next() else { break };
                chunk.push(command);
                chunk_ids.push(id);
            }
            if let Some(refusal) = &refused {
                for id in chunk_ids {
                    let refusal = refusal.clone();
                    self.completions.push(Completion::Refused { request: id, refusal });
                }
                continue;
            }
            match self.node.propose(chunk, timestamp_millis) {
                Ok(done) => {
                    // An earlier proposal may wait at one of these indexes too (its entry was
                    // cut from this log, yet another replica may still commit it): each is
                    // settled when the index is applied, by the term of the entry there.
                    for (offset, id) in chunk_ids.into_iter().enumerate() {
                        let index = LogIndex(done.first_index.0 + offset as u64);
                        self.proposals.entry(index).or_default().push((done.term, id));
                    }
                }
                Err(error) => {
                    let refusal = match error {
                        ProposeError::NotLeader { leader } => Refusal::NotLeader { leader },
                        other => Refusal::Retry(other.to_string()),
                    };
                    for id in chunk_ids {
                        let refusal = refusal.clone();
                        self.completions.push(Completion::Refused { request: id, refusal });
                    }
                    refused = Some(refusal);
                }
            }
        }
        self.drain();
        ids
    }

    /// Asks a linearizable read-only question.
    pub fn read(&mut self, query: M::Query) -> RequestId {
        let id = self.request_id();
        if let Some(failure) = &self.failure {
            let refusal = Refusal::Retry(format!("this replica has stopped: {failure}"));
            self.completions.push(Completion::Refused { request: id, refusal });
            return id;
        }
        if self.quarantined() {
            let refusal = Refusal::Retry("this replica is quarantined (its state differs)".into());
            self.completions.push(Completion::Refused { request: id, refusal });
            return id;
        }
        self.reads.insert(ReadId(id.0), (id, query));
        self.node.read_index(ReadId(id.0));
        self.drain();
        id
    }

    /// Proposes a membership change (on the leader). It is in force once appended and done
    /// once its entry (for a joint change, the final one the leader appends after it) commits.
    pub fn change_membership(&mut self, change: MembershipChange) -> Result<LogIndex, ConfigError> {
        let proposed = self.node.propose_membership(change);
        self.drain();
        proposed.map(|proposed| proposed.last_index)
    }

    /// Hands leadership to voter `target`, which must be caught up (within the promotion lag
    /// of the leader's log); the leader stops taking proposals until the transfer ends.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), String> {
        if self.node.role() != lockstep_core::Role::Leader {
            return Err("this replica does not lead".to_string());
        }
        if target == self.node.id() {
            return Err("this replica already leads".to_string());
        }
        if !self.node.membership().voters.contains(&target) {
            return Err(format!("replica {target} is not a voter"));
        }
        if self.audit_refuses_reads_for(target) {
            return Err(format!("replica {target} is quarantined (its state differs)"));
        }
        let matched = self.node.progress(target).map_or(LogIndex::ZERO, |p| p.match_index);
        let behind = self.node.last_index().get().saturating_sub(matched.get());
        let allowed = self.node.config().promotion_lag_max;
        if behind > allowed {
            return Err(format!(
                "replica {target} is {behind} entries behind (at most {allowed} to lead)"
            ));
        }
        self.node.transfer_leadership(target);
        self.drain();
        Ok(())
    }

    /// Storage reports write `write` (and so every earlier one) durable.
    pub fn write_durable(&mut self, write: u64) {
        while self.writes.front().is_some_and(|pending| pending.id <= write) {
            let Some(pending) = self.writes.pop_front() else { break };
            for message in pending.messages {
                self.transport.send(message);
            }
            if let Some((index, term)) = pending.last_entry {
                self.node.persisted(index, term);
            }
        }
        self.drain();
    }

    /// Drops, from messages waiting for writes, acknowledgements of entries above `index`.
    pub(crate) fn withhold_acknowledgements_above(&mut self, index: LogIndex) {
        for pending in &mut self.writes {
            pending.messages.retain(|message| {
                !matches!(
                    message.body,
                    MessageBody::AppendResponse(AppendResponse::Accepted { match_index })
                        if match_index > index
                )
            });
        }
    }

    fn request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    /// Carries out everything the core asks, until it asks nothing more.
    pub(crate) fn drain(&mut self) {
        if self.failure.is_some() {
            return;
        }
        // Each pass either empties the core's output or applies entries and serves reads,
        // which cannot produce new output forever; the bound is a safety net.
        for _ in 0..1024 {
            if self.failure.is_some() {
                // Nothing more is carried out for a replica that must stop (its state may be
                // neither the old one nor the one it was replacing it with).
                return;
            }
            let output = self.node.take_output();
            if output.is_empty() {
                return;
            }
            for message in output.messages {
                self.transport.send(message);
            }
            let last_entry = output
                .persist
                .entries
                .last()
                .map(|entry| (entry.index, entry.term))
                .or(output.persist.snapshot.as_ref().map(|meta| (meta.last_index, meta.last_term)));
            if !output.persist.is_empty() {
                let id = self.next_write;
                self.next_write += 1;
                self.storage.submit(id, output.persist);
                self.writes.push_back(PendingWrite {
                    id,
                    last_entry,
                    messages: output.messages_after_persist,
                });
            } else if let Some(pending) = self.writes.back_mut() {
                // Nothing new to write, but what these messages promise may still be on its
                // way to disk: they wait for the writes before them.
                pending.messages.extend(output.messages_after_persist);
            } else {
                for message in output.messages_after_persist {
                    self.transport.send(message);
                }
            }
            self.apply_queue.extend(output.committed);
            self.apply_some();
            for chunk in output.snapshot_chunks {
                self.on_snapshot_chunk(chunk);
            }
            for answer in output.snapshot_answers {
                self.on_snapshot_answer(answer);
            }
            for read in output.reads {
                if let Some((request, query)) = self.reads.remove(&read.id) {
                    let output = self.state.machine.query(&query);
                    let at = self.state.chain().index;
                    self.complete_read(at, Completion::Done { request, output });
                }
            }
            for event in output.events {
                if let Event::SnapshotNeeded { to, index } = event {
                    self.on_snapshot_needed(to, index);
                    continue;
                }
                if let Event::ReadRejected { id, error, leader } = event {
                    if let Some((request, _)) = self.reads.remove(&id) {
                        let refusal = match error {
                            ReadError::NoLeader | ReadError::LeaderChanged => {
                                Refusal::NotLeader { leader }
                            }
                            other => Refusal::Retry(format!("{other:?}")),
                        };
                        self.completions.push(Completion::Refused { request, refusal });
                    }
                }
            }
        }
    }

    /// Applies queued entries, at most the budget, in order; then tells the core, takes a
    /// checkpoint if one is due, and reports to the audit.
    fn apply_some(&mut self) {
        if self.failure.is_some() {
            return;
        }
        if self.apply_budget == 0 || self.apply_budget_bytes == 0 {
            return;
        }
        // As many entries as the budget allows, and always the first.
        let mut count = 0usize;
        let mut bytes = 0u64;
        let entries_max = usize::try_from(self.apply_budget).unwrap_or(usize::MAX);
        for entry in self.apply_queue.iter().take(entries_max) {
            let size = entry.size_bytes();
            if count > 0 && bytes.saturating_add(size) > self.apply_budget_bytes {
                break;
            }
            count += 1;
            bytes += size;
        }
        if count == 0 {
            return;
        }
        self.apply_budget = self.apply_budget.saturating_sub(count as u64);
        self.apply_budget_bytes = self.apply_budget_bytes.saturating_sub(bytes);
        let batch: Vec<Entry> = self.apply_queue.drain(..count).collect();
        let last = batch[batch.len() - 1].index;
        self.count_applied(batch.len() as u64, bytes);
        let early = cfg!(feature = "sabotage")
            && self.checkpoints.sabotage_off_by_one
            && self.checkpoint_due();
        let mut expected = self.node.applied_index().next();
        for entry in &batch {
            assert!(
                entry.index == expected,
                "entry {} handed out for applying out of order (expected {expected})",
                entry.index
            );
            expected = expected.next();
            if early && entry.index == last {
                self.start_checkpoint(last);
            }
            self.apply(entry);
            if self.audit.config.is_some() {
                // With the audit on, checkpoints are taken only at digest points, where
                // every replica took its state digest, and written only once a majority
                // reported the same digest there: a checkpoint on disk (restarted from,
                // or sent to another replica) is always a state a majority vouched for.
                let digest_point =
                    self.state.latest_digest().is_some_and(|point| point.index == entry.index);
                let wanted = self.audit.checkpoint_wanted == Some(entry.index);
                if wanted {
                    self.audit.checkpoint_wanted = None;
                }
                if digest_point
                    && ((wanted && !self.checkpoints.in_progress)
                        || self.checkpoint_due_at(entry.index))
                {
                    self.hold_checkpoint(entry.index);
                }
            }
        }
        self.node.applied(last);
        if self.audit.config.is_none() && self.checkpoint_due() {
            self.start_checkpoint(last);
        }
        self.audit_after_apply();
    }

    fn apply(&mut self, entry: &Entry) {
        let applied = self.state.apply(entry);
        if let Some(records) = &mut self.applied {
            let request = match &applied {
                Applied::Fresh { client, sequence, .. } => Some((*client, *sequence, true)),
                Applied::Duplicate { client, sequence, .. }
                | Applied::Stale { client, sequence } => Some((*client, *sequence, false)),
                Applied::NotCommand | Applied::Malformed => None,
            };
            records.push(AppliedRecord {
                index: entry.index,
                term: entry.term,
                request,
                chain: self.state.chain().value,
            });
        }
        let Some(waiting) = self.proposals.remove(&entry.index) else { return };
        let mut answer = applied.into_answer();
        for (term, request) in waiting {
            if term != entry.term {
                // Another leader's entry took this index: this proposal was never applied.
                self.completions.push(Completion::Refused { request, refusal: Refusal::Lost });
                continue;
            }
            let completion = match answer.take() {
                Some(Ok(output)) => Completion::Done { request, output },
                Some(Err(refusal)) => Completion::Refused { request, refusal },
                None => Completion::Refused { request, refusal: Refusal::Lost },
            };
            self.complete(entry.index, completion);
        }
    }
}
