//! The trait a user implements to be replicated.
//!
//! A state machine must be deterministic: replicas that start from the same state and apply
//! the same inputs in the same order reach the same state and produce the same outputs. So it
//! must not read a clock, a random source or anything else outside its inputs; what it needs
//! to know about time comes in [`ApplyContext::timestamp_millis`], chosen once by the leader and
//! replicated with the input.

use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{LogIndex, Term};

/// What a state machine learns about the entry it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyContext {
    /// The entry's index in the log.
    pub index: LogIndex,
    /// The term of the leader that created it.
    pub term: Term,
    /// Milliseconds since the Unix epoch on the leader's clock when it proposed the entry;
    /// never decreases from one entry to the next.
    pub timestamp_millis: u64,
}

/// A digest of a state machine's state, compared across replicas to find one that diverged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateDigest(pub [u8; 32]);

/// A consistent, immutable view of a state machine's state, taken at one index and written out
/// while the state machine goes on applying.
pub trait StateSnapshot: Send + 'static {
    /// Writes the view as bytes that [`StateMachine::restore`] reads back.
    fn write_to(&self, out: &mut dyn io::Write) -> io::Result<()>;
}

/// Where a client's request was taken from, for [`StateMachine::admit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client in the replica's own process (a gateway beside it).
    Local,
    /// A client over the network.
    Remote,
}

/// A deterministic state machine that lockstep replicates.
pub trait StateMachine {
    /// What clients send.
    type Input: Serialize + DeserializeOwned;
    /// What clients receive.
    type Output: Serialize + DeserializeOwned;
    /// A read-only question clients ask (served after a linearizable read index).
    type Query: Serialize + DeserializeOwned;
    /// A consistent view of the state, cheap to take.
    type Snapshot: StateSnapshot;

    /// Applies one input and returns its output. Must be deterministic.
    fn apply(&mut self, input: Self::Input, context: &ApplyContext) -> Self::Output;

    /// Answers a read-only question from the current state. Must not change the state.
    fn query(&self, query: &Self::Query) -> Self::Output;

    /// Whether to take `input` from a client at all, decided from the current state by the
    /// replica that takes it, before it is proposed: `Err` answers the client with that output
    /// and takes no log entry. Only a client's first attempt at a request is asked (a retry
    /// may already be in the log, and must meet the log's verdict, not this one), so the
    /// answer is final. `now_millis` is the taking replica's clock. Applying must check
    /// whatever it must again: a replica of another version may have let the input through,
    /// and the state may change before it is applied. By default every input is taken.
    fn admit(
        &self,
        input: &Self::Input,
        origin: Origin,
        now_millis: u64,
    ) -> Result<(), Self::Output> {
        let _ = (input, origin, now_millis);
        Ok(())
    }

    /// Whether `origin` may send `input` at all, whatever the state holds (`Err`: why not):
    /// asked on every attempt of every write on every replica, before anything else. A
    /// refusal ends the request without an answer from the state machine, so the client
    /// cannot tell whether an earlier attempt was applied. By default anything is taken.
    fn screen(&self, input: &Self::Input, origin: Origin) -> Result<(), String> {
        let _ = (input, origin);
        Ok(())
    }

    /// Whether a client may change the cluster's members or run audit actions, given the
    /// credential it sent, if any (`Err`: why not). By default anyone may.
    fn admit_admin(
        &self,
        credential: Option<&str>,
        origin: Origin,
        now_millis: u64,
    ) -> Result<(), String> {
        let _ = (credential, origin, now_millis);
        Ok(())
    }

    /// Whether to answer `query` from a client at all (see [`StateMachine::admit`]), asked
    /// before any read is served. By default every query is answered.
    fn admit_query(
        &self,
        query: &Self::Query,
        origin: Origin,
        now_millis: u64,
    ) -> Result<(), Self::Output> {
        let _ = (query, origin, now_millis);
        Ok(())
    }

    /// Whether `output` is a refusal that [`StateMachine::admit`] or
    /// [`StateMachine::admit_query`] would have given had they been asked at that state (a
    /// permission, a quota, a limit): such a refusal given where a request was applied or
    /// answered is counted, since a member let it through. By default none is.
    fn refuses(&self, output: &Self::Output) -> bool {
        let _ = output;
        false
    }

    /// Takes a consistent view of the current state. It should be cheap (a copy-on-write
    /// clone, for example): the expensive part, writing it out, happens off the apply path.
    fn snapshot(&self) -> Self::Snapshot;

    /// Replaces the whole state with one written by [`StateSnapshot::write_to`]. Bytes that do
    /// not decode are an error, never a panic.
    fn restore(&mut self, input: &mut dyn io::Read) -> io::Result<()>;

    /// A digest of the whole state. Replicas at the same index must have equal digests.
    fn digest(&self) -> StateDigest;
}
