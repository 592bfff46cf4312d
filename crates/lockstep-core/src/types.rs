//! The protocol's vocabulary: identifiers, terms, log positions and log entries.
//!
//! Every number that means something has its own type, so that a term can never be passed
//! where an index is expected and `index.next()` reads as what it is.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::membership::Membership;

/// The identity of a replica. Zero is reserved for "nobody" and is never a valid member id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    /// Returns the raw id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Raft term: a logical clock that grows by one with every election.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Term(pub u64);

impl Term {
    /// The term before any election.
    pub const ZERO: Term = Term(0);

    /// The term after this one.
    #[must_use]
    pub const fn next(self) -> Term {
        Term(self.0 + 1)
    }

    /// Returns the raw term.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A position in the replicated log. The first entry has index 1; index 0 is the empty
/// prefix that every log shares.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogIndex(pub u64);

impl LogIndex {
    /// The empty prefix before the first entry.
    pub const ZERO: LogIndex = LogIndex(0);

    /// The index after this one.
    #[must_use]
    pub const fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index before this one; the empty prefix stays where it is.
    #[must_use]
    pub const fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    /// This index moved forward by `count` positions.
    #[must_use]
    pub const fn plus(self, count: u64) -> LogIndex {
        LogIndex(self.0 + count)
    }

    /// Returns the raw index.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An identifier the caller picks for a read request, echoed back when the read is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReadId(pub u64);

impl fmt::Display for ReadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A client command as it travels through the log: opaque bytes plus the timestamp the leader
/// chose when it proposed them, so that state machines never read a wall clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The encoded input for the state machine.
    pub data: Bytes,
    /// Milliseconds since the Unix epoch as the proposing leader saw them. Never decreases
    /// along a log (the leader raises a late clock to the last timestamp it has).
    pub timestamp_millis: u64,
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// A command for the user's state machine.
    Command(Command),
    /// The empty entry a new leader appends at the start of its term, so that it can commit
    /// (and learn the commit index of) everything before it.
    Noop,
    /// A new cluster configuration. It takes effect as soon as it is appended to a log.
    Config(Membership),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: EntryPayload,
}

/// Fixed per-entry overhead used when counting bytes for flow control and batching.
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

impl Entry {
    /// The size this entry counts for in byte limits (payload plus a fixed overhead).
    pub fn size_bytes(&self) -> u64 {
        let payload = match &self.payload {
            EntryPayload::Command(command) => command.data.len() as u64 + 8,
            EntryPayload::Noop => 0,
            EntryPayload::Config(membership) => membership.size_bytes(),
        };
        ENTRY_OVERHEAD_BYTES + payload
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} ", self.index, self.term)?;
        match &self.payload {
            EntryPayload::Command(command) => match std::str::from_utf8(&command.data) {
                Ok(text) if text.chars().all(|c| c.is_ascii_graphic()) => write!(f, "{text}"),
                _ => write!(f, "<{} bytes>", command.data.len()),
            },
            EntryPayload::Noop => write!(f, "noop"),
            EntryPayload::Config(membership) => write!(f, "config {membership}"),
        }
    }
}

/// The state a replica must make durable before it acts on it: its current term, the vote it
/// cast in that term, and the highest index it knows to be committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this replica has seen.
    pub term: Term,
    /// The candidate this replica voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest log index known to be committed.
    pub commit: LogIndex,
}

impl fmt::Display for HardState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "term={} vote=", self.term)?;
        match self.vote {
            Some(vote) => write!(f, "{vote}")?,
            None => write!(f, "-")?,
        }
        write!(f, " commit={}", self.commit)
    }
}

/// What a snapshot covers: the log prefix it replaces and the configuration at its end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log index the snapshot includes.
    pub last_index: LogIndex,
    /// The term of that entry.
    pub last_term: Term,
    /// The configuration in force at `last_index`.
    pub membership: Membership,
}

/// The role a replica plays in the current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader (or waits for one) and votes.
    Follower,
    /// Asks for pre-votes without raising its term, to learn whether it could win.
    PreCandidate,
    /// Asks for votes in a new term.
    Candidate,
    /// Orders proposals and replicates the log.
    Leader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        };
        f.write_str(name)
    }
}
