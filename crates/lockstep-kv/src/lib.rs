//! # lockstep-kv: the key-value state machine
//!
//! An ordered map of byte keys to byte values with etcd's data model, so that an etcd-compatible
//! API can serve it without changing its semantics:
//!
//! - a global **revision**, raised by one for every request that changes something (a put, a
//!   delete that deleted something, a transaction whose chosen branch wrote);
//! - per key its **create revision** (when it was created, since its last deletion), its
//!   **modification revision** (its last change) and its **version** (changes since creation,
//!   starting at 1);
//! - **ranges** as etcd spells them: `range_end` empty means the key alone, `[0]` means every key
//!   from `key` on, anything else the half-open range `[key, range_end)`;
//! - **transactions**: comparisons on value, version, create or modification revision, then the
//!   success or the failure branch of puts, deletes and ranges, all at one revision.
//!
//! It keeps every key's **history** (multi-version, as etcd's MVCC store): a range can read
//! any revision from the **compaction revision** on; a compaction forgets the versions that
//! are no longer current at its revision, and a read below it is refused. Ranges sort and
//! filter by revisions as etcd's do. A hash of the history up to a revision lets replicas be
//! compared (etcd's HashKV). Leases live in log time: a lease's deadline is measured against
//! each entry's timestamp, and its expiry is ordered through the log. The log records a lease's
//! deadline at its grant, its checkpoints and its renewals through the log, and marks a lease
//! renewed since its last checkpoint; the leader keeps later renewals in memory (the etcd
//! gateway's lessor). Not yet modelled: nested transactions.
//!
//! The state's **digest** is kept current as the store changes: every version kept and every
//! lease is an element of an [`LtHash`], added when it appears and subtracted when it goes
//! (compaction, a lease's change), so the digest at any index costs one element hash per
//! change and never a pass over the store. A checkpoint carries it, and a restore recomputes it
//! from what it read and refuses a state whose digest differs.
//!
//! ```
//! use lockstep_kv::{Kv, Request, Response};
//!
//! let mut kv = Kv::new();
//! kv.execute(Request::put("a", "1"));
//! kv.execute(Request::put("a", "2"));
//! let Response::Range(range) = kv.execute(Request::get("a")) else { unreachable!() };
//! assert_eq!(range.kvs[0].value, "2");
//! assert_eq!(range.kvs[0].version, 2);
//! assert_eq!(kv.revision(), 3);
//! ```

#![deny(missing_docs)]

pub mod auth;
mod history;
pub mod lthash;
mod revision_index;

use std::collections::{BTreeMap, BTreeSet};

use imbl::OrdMap;
use std::io;
use std::ops::Bound;

use bytes::Bytes;
use lockstep_core::{ApplyContext, StateDigest, StateMachine, StateSnapshot};
use serde::{Deserialize, Serialize};

pub use auth::{AuthError, AuthRequest, AuthResponse, AuthStore, Permission, PermissionKind};
use history::{History, Version};
pub use lthash::LtHash;
use revision_index::RevisionIndex;

/// A revision of the whole store.
pub type Revision = u64;

/// A key and its value with etcd's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// The revision at which the key was created (since its last deletion).
    pub create_revision: Revision,
    /// The revision of its last change.
    pub mod_revision: Revision,
    /// Changes since creation, starting at 1.
    pub version: u64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// Which keys a request names, as etcd spells it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    /// The first key.
    pub key: Bytes,
    /// Empty: `key` alone. `[0]`: every key from `key` on. Otherwise the end, excluded.
    pub range_end: Bytes,
}

impl KeyRange {
    /// Just `key`.
    pub fn key(key: impl Into<Bytes>) -> KeyRange {
        KeyRange { key: key.into(), range_end: Bytes::new() }
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Bytes>) -> KeyRange {
        let key: Bytes = prefix.into();
        KeyRange { range_end: prefix_end(&key), key }
    }

    fn bounds(&self) -> (Bound<Bytes>, Bound<Bytes>) {
        let start = Bound::Included(self.key.clone());
        if self.range_end.is_empty() {
            (start.clone(), start)
        } else if self.range_end.as_ref() == [0] {
            (start, Bound::Unbounded)
        } else {
            (start, Bound::Excluded(self.range_end.clone()))
        }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        if self.range_end.is_empty() {
            return self.key.as_ref() == key;
        }
        if self.range_end.as_ref() == [0] {
            return key >= self.key.as_ref();
        }
        key >= self.key.as_ref() && key < self.range_end.as_ref()
    }

    /// Whether the range is empty by construction (an end at or before the start).
    fn is_backwards(&self) -> bool {
        !self.range_end.is_empty() && self.range_end.as_ref() != [0] && self.range_end <= self.key
    }
}

fn check_range(range: &KeyRange) -> Result<(), KvError> {
    if range.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

fn check_put(put: &PutRequest) -> Result<(), KvError> {
    if put.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if put.ignore_value && !put.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if put.ignore_lease && put.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// The end of the range of keys starting with `prefix` (etcd's `GetPrefixRangeEnd`): the
/// prefix with its last byte below 0xff raised by one; every key when there is none.
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(&[0])
}

/// Read keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    /// Which keys.
    pub range: KeyRange,
    /// At most this many keys (0: no limit).
    pub limit: u64,
    /// Read at this revision (0: the current one); refused below the compaction revision.
    pub revision: Revision,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// The order of the keys returned (by key when not given, as stored).
    pub sort_order: SortOrder,
    /// What to sort by.
    pub sort_target: SortTarget,
    /// Only keys last modified at or after this revision (0: no bound).
    pub min_mod_revision: Revision,
    /// Only keys last modified at or before this revision (0: no bound).
    pub max_mod_revision: Revision,
    /// Only keys created at or after this revision (0: no bound).
    pub min_create_revision: Revision,
    /// Only keys created at or before this revision (0: no bound).
    pub max_create_revision: Revision,
}

/// The order of a range's keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    /// As stored (by key), unless a sort target other than the key is given (then ascending).
    #[default]
    None,
    /// Ascending.
    Ascend,
    /// Descending.
    Descend,
}

/// What a range's keys are sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The modification revision.
    Mod,
    /// The value.
    Value,
}

/// Set a key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the current value (only the metadata changes); refused if the key is absent.
    pub ignore_value: bool,
    /// Attach the key to this lease (0: none); refused if the lease does not exist.
    pub lease: i64,
    /// Keep the key's current lease; refused if the key is absent.
    pub ignore_lease: bool,
}

/// Delete keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    /// Which keys.
    pub range: KeyRange,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

/// What a comparison looks at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The value (a comparison of the value of an absent key never holds, as in etcd).
    Value(Bytes),
    /// The version (0 for an absent key). Signed, as etcd's: `version > -1` holds for any key.
    Version(i64),
    /// The create revision (0 for an absent key).
    CreateRevision(i64),
    /// The modification revision (0 for an absent key).
    ModRevision(i64),
    /// The lease the key is attached to (0 for none, or an absent key).
    Lease(i64),
}

/// How a comparison compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    /// Equal.
    Equal,
    /// Not equal.
    NotEqual,
    /// Greater than.
    Greater,
    /// Less than.
    Less,
}

/// One comparison of a transaction: it holds if it holds for every key of the range; a single
/// absent key, or a range holding no key, is compared as an absent key (version, create and
/// modification revision 0; a value comparison never holds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// Which keys.
    pub range: KeyRange,
    /// How.
    pub op: CompareOp,
    /// Against what.
    pub target: CompareTarget,
}

/// An operation inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Read.
    Range(RangeRequest),
    /// Write.
    Put(PutRequest),
    /// Delete.
    Delete(DeleteRequest),
}

/// Compare, then do one branch or the other, at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    /// Every comparison must hold for the success branch.
    pub compare: Vec<Compare>,
    /// Done if every comparison holds.
    pub success: Vec<Operation>,
    /// Done otherwise.
    pub failure: Vec<Operation>,
}

/// A request to the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Read keys.
    Range(RangeRequest),
    /// Set a key.
    Put(PutRequest),
    /// Delete keys.
    Delete(DeleteRequest),
    /// A transaction.
    Txn(TxnRequest),
    /// Forget the history before a revision.
    Compact(CompactRequest),
    /// A hash of the history up to a revision (read-only), to compare replicas.
    Hash(HashRequest),
    /// Grant a lease.
    LeaseGrant(LeaseGrantRequest),
    /// Revoke a lease, deleting its keys.
    LeaseRevoke(LeaseIdRequest),
    /// Renew a lease: it expires its TTL after this request's log time.
    LeaseKeepAlive(LeaseIdRequest),
    /// Revoke a lease if it has expired by this request's log time (the leader proposes it
    /// when it sees the deadline pass; every replica decides alike from the log).
    LeaseExpire(LeaseIdRequest),
    /// A lease's TTL, deadline and keys (read-only).
    LeaseTimeToLive(LeaseIdRequest),
    /// Every lease (read-only).
    LeaseList,
    /// The current and compaction revisions (read-only, cheap).
    Revisions,
    /// The changes to a range from a revision on, in revision order (read-only): what a watch
    /// delivers.
    Events(EventsRequest),
    /// Record how long each listed lease has left, as the leader of `term` measured it: its
    /// deadline becomes this entry's log time plus what remains, and it is no longer marked
    /// renewed (the leader's lease checkpoint; see [`LeaseInfo::renewed`]). Ignored in an entry
    /// of another term: a later leader may have promised more.
    LeaseCheckpoint(LeaseCheckpointRequest),
    /// Every lease's id, TTL, deadline and mark, without its keys (read-only): what the
    /// leader's lessor looks through.
    LeaseDeadlines,
    /// Renew a lease through the log and mark it renewed: its leader may renew it further in
    /// memory from now on. Unlike [`Request::LeaseKeepAlive`] it renews a lease past its
    /// recorded deadline too (only the leader decides expiries).
    LeaseMark(LeaseIdRequest),
    /// The leader of `term` found the lease past its deadline: revoke it, if this entry is of
    /// that term and the recorded deadline has passed by its log time. In an entry of another
    /// term it is ignored: a later leader may have promised more than the log recorded.
    LeaseEnd(LeaseEndRequest),
    /// List, raise or clear alarms (etcd's Alarm): while a `NoSpace` alarm is raised every
    /// request that would grow the store is refused ([`KvError::NoSpace`]). Listing is
    /// read-only and also tells the store's size as it accounts it.
    Alarm(AlarmRequest),
    /// Users, roles and permissions (etcd's Auth service; see [`auth`]).
    Auth(AuthRequest),
    /// A request made as the user a token names: with authentication on, checked against that
    /// user's permissions where it is taken and again where it is applied.
    As(Box<Authorized>),
    /// One lease without its keys (read-only; answered as [`Response::LeaseDeadlines`] of
    /// one): what the leader's lessor reads at each renewal.
    LeaseOf(LeaseIdRequest),
}

/// A request and the token of the user who makes it. It never holds another: decoding refuses
/// one inside another (so that a crafted request cannot nest without bound and exhaust the
/// decoder's stack).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Authorized {
    /// The token ([`AuthRequest::Issue`]).
    pub token: String,
    /// The request.
    pub request: Request,
}

impl<'de> Deserialize<'de> for Authorized {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Authorized, D::Error> {
        use std::cell::Cell;
        thread_local! {
            /// How many `Authorized` are being decoded on this thread, one inside another.
            static DEPTH: Cell<u32> = const { Cell::new(0) };
        }
        /// Leaves one level when dropped, however decoding ends.
        struct Level;
        impl Drop for Level {
            fn drop(&mut self) {
                DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
            }
        }
        #[derive(Deserialize)]
        struct Fields {
            token: String,
            request: Request,
        }
        let outer = DEPTH.with(|depth| {
            let level = depth.get();
            depth.set(level + 1);
            level
        });
        let _level = Level;
        if outer > 0 {
            return Err(serde::de::Error::custom("a request made as a user holds another"));
        }
        let fields = Fields::deserialize(deserializer)?;
        Ok(Authorized { token: fields.token, request: fields.request })
    }
}

/// Where a request was taken from, for [`Kv::admit`].
pub use lockstep_core::Origin;

/// What to do with alarms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmAction {
    /// List them (read-only).
    #[default]
    Get,
    /// Raise one.
    Activate,
    /// Clear one.
    Deactivate,
}

/// An alarm request: `alarm` for `member` (both ignored for [`AlarmAction::Get`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmRequest {
    /// List, raise or clear.
    pub action: AlarmAction,
    /// The member that raised it.
    pub member: u64,
    /// Which alarm.
    pub alarm: AlarmKind,
}

/// Which alarm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlarmKind {
    /// The store grew past a member's space quota: writes that grow it are refused.
    #[default]
    NoSpace,
    /// The audit found the member's state or outputs differ from the others' (it is
    /// quarantined and repaired from them): a record for the operator, who clears it; nothing
    /// is refused for it.
    Corrupt,
}

/// A raised alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Alarm {
    /// The member that raised it.
    pub member: u64,
    /// Which.
    pub alarm: AlarmKind,
}

/// The alarms raised, and the store's size.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmResponse {
    /// Every alarm raised.
    pub alarms: Vec<Alarm>,
    /// The store's size as it accounts it ([`Kv::size_bytes`]), in answers to reads (0 in
    /// answers to requests through the log).
    pub size_bytes: u64,
}

/// How long leases have left, as the leader of `term` measured it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseCheckpointRequest {
    /// The term of the leader that measured.
    pub term: u64,
    /// (lease id, milliseconds left); a lease no longer held is passed over.
    pub leases: Vec<(i64, u64)>,
}

/// A lease the leader of `term` found expired.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEndRequest {
    /// The lease.
    pub id: i64,
    /// The term of the leader that found it expired.
    pub term: u64,
}

/// Grant lease `id` (which the caller chose, nonzero and unused) for `ttl` seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrantRequest {
    /// The lease's id.
    pub id: i64,
    /// Its time to live, in seconds.
    pub ttl: i64,
}

/// Names a lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseIdRequest {
    /// The lease's id.
    pub id: i64,
}

/// The changes to `range` at revisions `from` and later.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsRequest {
    /// Which keys.
    pub range: KeyRange,
    /// The first revision wanted (refused below the compaction revision).
    pub from: Revision,
    /// Stop after the revision holding the `limit`th event (0: no limit).
    pub limit: u64,
    /// For this user's watch: refused unless the user may read `range` now (checked at each
    /// request, so a permission taken away ends the watch; see [`auth`]).
    pub user: Option<String>,
}

/// Forget every version of every key that is not current at `revision` (the history before
/// it); reads below it are refused from then on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactRequest {
    /// The revision to compact to.
    pub revision: Revision,
}

/// Hash the history kept up to `revision` (0: the current one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashRequest {
    /// The revision to hash up to.
    pub revision: Revision,
}

impl Request {
    /// Read one key.
    pub fn get(key: impl Into<Bytes>) -> Request {
        Request::Range(RangeRequest { range: KeyRange::key(key), ..RangeRequest::default() })
    }

    /// Set one key.
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Request {
        Request::Put(PutRequest { key: key.into(), value: value.into(), ..PutRequest::default() })
    }

    /// Delete one key.
    pub fn delete(key: impl Into<Bytes>) -> Request {
        Request::Delete(DeleteRequest { range: KeyRange::key(key), prev_kv: false })
    }

    /// The checks that need no state (empty keys, ranges, a transaction's length and shape):
    /// the replica that receives a request makes them before it takes a log entry, and
    /// applying makes them again. A transaction may hold up to [`TXN_OPS_MAX`] operations in a
    /// branch.
    pub fn check(&self) -> Result<(), KvError> {
        self.check_with(TXN_OPS_MAX)
    }

    /// [`Request::check`], with a transaction allowed `txn_ops_max` operations in a branch.
    pub fn check_with(&self, txn_ops_max: usize) -> Result<(), KvError> {
        match self {
            Request::As(authorized) => match &authorized.request {
                Request::As(_) => Err(KvError::Auth(AuthError::Invalid(
                    "a request made as a user holds another".into(),
                ))),
                inner => inner.check_with(txn_ops_max),
            },
            Request::Range(range) => check_range(&range.range),
            Request::Put(put) => check_put(put),
            Request::Delete(delete) => check_range(&delete.range),
            Request::Txn(txn) => Kv::check_txn(txn, txn_ops_max),
            _ => Ok(()),
        }
    }

    /// Whether the request is one the members make themselves (lease expiries and checkpoints,
    /// alarms, what watchers poll): with authentication on, taken without a token only from a
    /// client in the replica's own process.
    pub fn is_members(&self) -> bool {
        matches!(
            self,
            Request::LeaseExpire(_)
                | Request::LeaseCheckpoint(_)
                | Request::LeaseDeadlines
                | Request::LeaseMark(_)
                | Request::LeaseEnd(_)
                | Request::LeaseOf(_)
                | Request::Alarm(_)
                | Request::Events(_)
                | Request::Revisions
        )
    }

    /// Whether the request only reads (and so may be served by a read-index read).
    pub fn is_read_only(&self) -> bool {
        match self {
            Request::Alarm(alarm) => alarm.action == AlarmAction::Get,
            Request::Auth(auth) => auth.is_read_only(),
            Request::As(authorized) => authorized.request.is_read_only(),
            Request::Range(_)
            | Request::Hash(_)
            | Request::LeaseTimeToLive(_)
            | Request::LeaseList
            | Request::Revisions
            | Request::Events(_)
            | Request::LeaseOf(_)
            | Request::LeaseDeadlines => true,
            Request::Txn(txn) => txn
                .success
                .iter()
                .chain(&txn.failure)
                .all(|operation| matches!(operation, Operation::Range(_))),
            Request::Put(_)
            | Request::Delete(_)
            | Request::Compact(_)
            | Request::LeaseGrant(_)
            | Request::LeaseRevoke(_)
            | Request::LeaseKeepAlive(_)
            | Request::LeaseExpire(_)
            | Request::LeaseCheckpoint(_)
            | Request::LeaseMark(_)
            | Request::LeaseEnd(_) => false,
        }
    }
}

/// Keys read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    /// The keys (empty with `count_only`).
    pub kvs: Vec<KeyValue>,
    /// How many keys the range holds (beyond the limit too).
    pub count: u64,
    /// Whether the limit left keys out.
    pub more: bool,
}

/// A key set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// The previous key-value, if asked for and there was one.
    pub prev_kv: Option<KeyValue>,
}

/// Keys deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    /// How many.
    pub deleted: u64,
    /// The deleted key-values, if asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// A transaction's outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    /// Whether every comparison held (the success branch ran).
    pub succeeded: bool,
    /// The responses of the branch that ran, in order.
    pub responses: Vec<Response>,
}

/// Why a request was refused (nothing changed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvError {
    /// The revision asked for is below the compaction revision: its history is gone.
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The compaction revision: the history before it is gone.
        compacted: Revision,
    },
    /// The revision asked for has not been reached.
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// A put with `ignore_value` or `ignore_lease` for a key that does not exist.
    KeyNotFound,
    /// A put names a lease that does not exist.
    LeaseNotFound,
    /// A lease with that id exists already.
    LeaseExists,
    /// A put gives a lease and also asks to keep the key's current one.
    LeaseProvided,
    /// A lease's time to live is too long or its id is not allowed.
    LeaseInvalid,
    /// A transaction writes the same key twice.
    DuplicateKey,
    /// A request that writes was sent as a read.
    NotReadOnly,
    /// A request names the empty key.
    EmptyKey,
    /// A put with `ignore_value` also gives a value.
    ValueProvided,
    /// A transaction branch has more operations than allowed.
    TooManyOps {
        /// How many.
        ops: usize,
        /// The most allowed.
        max: usize,
    },
    /// A `NoSpace` alarm is raised: requests that would grow the store are refused until it
    /// is cleared.
    NoSpace,
    /// Refused by authentication or authorization, or by the auth store.
    Auth(AuthError),
    /// A lease grant past the most leases a member holds (refused before the log).
    TooManyLeases {
        /// The most allowed.
        max: usize,
    },
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::Compacted { requested, compacted } => write!(
                f,
                "required revision {requested} has been compacted (the history starts at \
                 {compacted})"
            ),
            KvError::FutureRevision { requested, current } => {
                write!(f, "revision {requested} is a future revision (the current is {current})")
            }
            KvError::KeyNotFound => f.write_str("key not found"),
            KvError::LeaseNotFound => f.write_str("requested lease not found"),
            KvError::LeaseExists => f.write_str("lease already exists"),
            KvError::LeaseProvided => f.write_str("lease is provided"),
            KvError::LeaseInvalid => f.write_str("lease id or time to live is not allowed"),
            KvError::DuplicateKey => f.write_str("a transaction changes the same key twice"),
            KvError::NotReadOnly => f.write_str("the request is not read-only"),
            KvError::EmptyKey => f.write_str("the key is empty"),
            KvError::ValueProvided => f.write_str("a value was given with ignore_value"),
            KvError::TooManyOps { ops, max } => {
                write!(f, "the transaction has {ops} operations; at most {max} are allowed")
            }
            KvError::NoSpace => write!(f, "database space exceeded"),
            KvError::Auth(error) => write!(f, "{error}"),
            KvError::TooManyLeases { max } => {
                write!(f, "too many leases (at most {max}: the limit is max_leases)")
            }
        }
    }
}

impl std::error::Error for KvError {}

/// The most operations in one branch of a transaction that a member takes by default
/// (etcd's `--max-txn-ops` default); each member may set its own, up to [`TXN_OPS_CEILING`].
pub const TXN_OPS_MAX: usize = 128;

/// The most operations in one branch of a transaction that is applied. Members refuse longer
/// ones where they take them, by their own `max_txn_ops` (at most this); applying checks this
/// ceiling, the same on every replica, so that the members' differing limits never make
/// replicas differ.
pub const TXN_OPS_CEILING: usize = 8192;

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Keys read.
    Range(RangeResponse),
    /// A key set.
    Put(PutResponse),
    /// Keys deleted.
    Delete(DeleteResponse),
    /// A transaction's outcome.
    Txn(TxnResponse),
    /// The history was compacted.
    Compact,
    /// The hash of the history.
    Hash(HashResponse),
    /// A lease.
    Lease(LeaseInfo),
    /// Leases.
    Leases(Vec<LeaseInfo>),
    /// A lease was revoked (and its keys deleted).
    LeaseRevoked,
    /// Changes, in revision order.
    Events(EventsResponse),
    /// The current and compaction revisions.
    Revisions {
        /// The current revision.
        current: Revision,
        /// The compaction revision (0: never compacted).
        compacted: Revision,
    },
    /// Refused; nothing changed.
    Error(KvError),
    /// Leases without their keys.
    LeaseDeadlines(Vec<LeaseDeadline>),
    /// A lease checkpoint was recorded for this many leases.
    LeasesCheckpointed(u64),
    /// The alarms raised (after the request), and the store's size.
    Alarms(AlarmResponse),
    /// The auth store's answer.
    Auth(AuthResponse),
}

/// A lease without its keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDeadline {
    /// Its id.
    pub id: i64,
    /// The time to live it was granted, in seconds.
    pub ttl: i64,
    /// When it expires, as recorded in the log (see [`LeaseInfo::deadline_millis`]).
    pub deadline_millis: u64,
    /// See [`LeaseInfo::renewed`].
    pub renewed: bool,
}

/// A lease as the store holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Its id.
    pub id: i64,
    /// The time to live it was granted, in seconds.
    pub ttl: i64,
    /// When it expires, in log time (milliseconds since the Unix epoch), as the log last
    /// recorded it: at its grant, its last renewal through the log, or its last checkpoint.
    pub deadline_millis: u64,
    /// The keys attached to it.
    pub keys: Vec<Bytes>,
    /// Renewed through the log since its deadline was last checkpointed: its leader may have
    /// renewed it further in memory, past `deadline_millis`, so a new leader gives it its whole
    /// TTL again from its election (etcd's rule).
    pub renewed: bool,
}

impl LeaseInfo {
    /// The lease without its keys.
    pub fn deadline(&self) -> LeaseDeadline {
        LeaseDeadline {
            id: self.id,
            ttl: self.ttl,
            deadline_millis: self.deadline_millis,
            renewed: self.renewed,
        }
    }
}

/// What happened to a key at a revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Put (true) or deleted (false).
    pub put: bool,
    /// The key-value after the change (for a deletion: the key, with its deletion revision).
    pub kv: KeyValue,
    /// The key-value before the change, if there was one.
    pub prev_kv: Option<KeyValue>,
}

/// Changes in revision order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsResponse {
    /// The changes.
    pub events: Vec<Event>,
    /// Every change up to this revision has been given (the next request starts after it).
    pub through: Revision,
}

/// A hash of the history up to a revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashResponse {
    /// The hash (32 bits, as etcd's).
    pub hash: u32,
    /// The revision hashed up to.
    pub hash_revision: Revision,
    /// The compaction revision then.
    pub compact_revision: Revision,
}

/// A response with the store's revision after the request, as etcd's headers carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The revision after the request.
    pub revision: Revision,
    /// The response.
    pub response: Response,
}

/// The store. See the crate documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    /// Every key's versions since the compaction revision, oldest first. A key whose history
    /// holds only its deletion (or nothing) is removed at compaction.
    ///
    /// A persistent map: a checkpoint's view is a clone that shares every node, so taking one
    /// costs nothing on the apply path, and writes copy only the path they change.
    keys: OrdMap<Bytes, History>,
    /// The revision of the last change (1 for an empty store that never changed, as etcd).
    revision: Revision,
    /// Reads below this revision are refused: their history is gone (0: never compacted).
    compacted: Revision,
    /// Changes made so far at the revision being written (their `sub`).
    changes: u32,
    /// Leases by id.
    leases: BTreeMap<i64, Lease>,
    /// Every kept version's key, by (revision, sub): where watches find changes from a
    /// revision on without scanning every key (derived from `keys`; rebuilt at restore).
    by_revision: RevisionIndex,
    /// Every kept version and every lease, hashed as a set (see the crate documentation);
    /// updated with each change.
    elements: LtHash,
    /// The alarms raised (replicated: changed only through the log).
    alarms: BTreeSet<Alarm>,
    /// The size of every kept version as the store accounts it ([`Kv::size_bytes`]); derived
    /// from `keys`, kept up to date with each change.
    size_bytes: u64,
    /// Users, roles and permissions (replicated).
    auth: AuthStore,
    /// The log time of the latest entry applied (derived from the log, not replicated): what
    /// a token's expiry is measured against when a read is answered.
    log_time_millis: u64,
    /// Leases held at once; a grant past it is refused where it is taken (this member's
    /// limit, not replicated).
    leases_max: usize,
    /// Operations in a transaction's branch; a longer one is refused where it is taken (this
    /// member's limit, at most [`TXN_OPS_CEILING`], which applying checks).
    txn_ops_max: usize,
    /// The space quota (0: none): a request that would take the store past it is refused
    /// where it is taken (this member's limit, not replicated; the NOSPACE alarm is what
    /// every replica applies alike).
    quota_bytes: u64,
}

/// A lease: its time to live, its deadline in log time, its keys, and whether it was renewed
/// since its deadline was last checkpointed ([`LeaseInfo::renewed`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    ttl: i64,
    deadline_millis: u64,
    keys: BTreeSet<Bytes>,
    renewed: bool,
}

/// A lease as version 3 and 4 snapshots hold it (none was marked renewed).
#[derive(Deserialize)]
struct LeaseV4 {
    ttl: i64,
    deadline_millis: u64,
    keys: BTreeSet<Bytes>,
}

impl From<LeaseV4> for Lease {
    fn from(old: LeaseV4) -> Lease {
        Lease { ttl: old.ttl, deadline_millis: old.deadline_millis, keys: old.keys, renewed: false }
    }
}

/// The shortest time to live a lease is granted (shorter asks are raised to it), in seconds.
pub const LEASE_TTL_MIN: i64 = 2;

/// The longest time to live a lease may ask for, in seconds (as etcd's).
pub const LEASE_TTL_MAX: i64 = 9_000_000_000;

/// The key-value of `key`, whose history is `history`, at `revision` (`None`: absent then).
fn at(key: &Bytes, history: &History, revision: Revision) -> Option<KeyValue> {
    history.at(revision)?.key_value(key)
}

/// The current key-value of `key`, whose history is `history`.
fn current(key: &Bytes, history: &History) -> Option<KeyValue> {
    history.last().key_value(key)
}

impl Kv {
    /// An empty store at revision 1.
    pub fn new() -> Kv {
        Kv {
            keys: OrdMap::new(),
            revision: 1,
            compacted: 0,
            changes: 0,
            leases: BTreeMap::new(),
            by_revision: RevisionIndex::default(),
            elements: LtHash::new(),
            alarms: BTreeSet::new(),
            size_bytes: 0,
            auth: AuthStore::default(),
            log_time_millis: 0,
            leases_max: usize::MAX,
            txn_ops_max: TXN_OPS_MAX,
            quota_bytes: 0,
        }
    }

    /// The store, refusing where they are taken requests that would grow it past
    /// `quota_bytes` as it accounts its size ([`Kv::size_bytes`]; 0: no quota).
    pub fn with_quota_bytes(mut self, quota_bytes: u64) -> Kv {
        self.quota_bytes = quota_bytes;
        self
    }

    /// The store, refusing lease grants past `max` leases where they are taken
    /// ([`Kv::admit_request`]).
    pub fn with_leases_max(mut self, max: usize) -> Kv {
        self.leases_max = max;
        self
    }

    /// The store, refusing where they are taken transactions with more than `max` operations
    /// in a branch (etcd's `--max-txn-ops`; 128 by default). `max` is at most
    /// [`TXN_OPS_CEILING`], what applying allows.
    pub fn with_txn_ops_max(mut self, max: usize) -> Kv {
        assert!(
            (1..=TXN_OPS_CEILING).contains(&max),
            "max_txn_ops must be between 1 and {TXN_OPS_CEILING}, not {max}"
        );
        self.txn_ops_max = max;
        self
    }

    /// The auth store.
    pub fn auth(&self) -> &AuthStore {
        &self.auth
    }

    /// The store's size as it accounts it: for every version kept, its key and value and
    /// [`VERSION_OVERHEAD_BYTES`]. What a space quota is measured against (etcd's `dbSize`);
    /// it falls when compaction forgets versions.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Whether a `NoSpace` alarm is raised.
    pub fn out_of_space(&self) -> bool {
        self.alarms.iter().any(|alarm| alarm.alarm == AlarmKind::NoSpace)
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.revision.max(1)
    }

    /// The compaction revision: reads below it are refused (0: never compacted).
    pub fn compact_revision(&self) -> Revision {
        self.compacted
    }

    /// How many keys the store holds now.
    pub fn len(&self) -> usize {
        self.keys.values().filter(|history| history.last().is_put()).count()
    }

    /// Whether the store holds no key now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Executes a request at log time 0 (see [`Kv::execute_at`]).
    pub fn execute(&mut self, request: Request) -> Response {
        self.execute_at(request, 0)
    }

    /// Executes a request in an entry of term 0 (see [`Kv::execute_in`]).
    pub fn execute_at(&mut self, request: Request, now_millis: u64) -> Response {
        self.execute_in(request, now_millis, 0)
    }

    /// Executes a request: reads read, writes write (at most one new revision per request).
    /// `now_millis` is the request's log time, which lease deadlines are measured in; `term`
    /// the term of its entry (requests that only the leader of a term may decide check it).
    pub fn execute_in(&mut self, request: Request, now_millis: u64, term: u64) -> Response {
        self.log_time_millis = self.log_time_millis.max(now_millis);
        let caller = match self.admission(&request, now_millis, true) {
            Ok(caller) => caller,
            Err(error) => return Response::Error(KvError::Auth(error)),
        };
        let request = match request {
            Request::As(authorized) => authorized.request,
            request => request,
        };
        if let Request::Auth(auth) = request {
            if auth.is_read_only() && auth.is_member_only() {
                // Password hashes and tokens are never answers through the log (which any
                // client can write to, and whose answers every replica keeps).
                return Response::Error(KvError::Auth(AuthError::PermissionDenied));
            }
            return self.auth_change(auth, caller.as_deref());
        }
        if self.out_of_space() && grows(&request) {
            return Response::Error(KvError::NoSpace);
        }
        match request {
            Request::Alarm(alarm) => self.alarm(alarm),
            Request::Range(range) => self.range(&range),
            Request::Put(put) => match check_put(&put) {
                Ok(()) => self.write(|kv, revision| kv.put(put, revision)),
                Err(error) => Response::Error(error),
            },
            Request::Delete(delete) => match check_range(&delete.range) {
                Ok(()) => self.write(|kv, revision| kv.delete(&delete, revision)),
                Err(error) => Response::Error(error),
            },
            Request::Txn(txn) => self.txn(txn),
            Request::Compact(compact) => self.compact(compact.revision),
            Request::LeaseGrant(grant) => self.grant(grant, now_millis),
            Request::LeaseRevoke(lease) => self.revoke(lease.id),
            Request::LeaseKeepAlive(lease) => self.renew(lease.id, now_millis, false),
            Request::LeaseMark(lease) => self.renew(lease.id, now_millis, true),
            Request::LeaseEnd(end) if end.term != term => match self.leases.get(&end.id) {
                Some(held) => Response::Lease(lease_info(end.id, held)),
                None => Response::Error(KvError::LeaseNotFound),
            },
            Request::LeaseEnd(end) => self.expire(end.id, now_millis),
            Request::LeaseCheckpoint(checkpoint) if checkpoint.term != term => {
                Response::LeasesCheckpointed(0)
            }
            Request::LeaseExpire(lease) => self.expire(lease.id, now_millis),
            Request::LeaseCheckpoint(checkpoint) => {
                let mut recorded = 0;
                for (id, remaining_millis) in checkpoint.leases {
                    let changed = self.change_lease(id, |held| {
                        held.deadline_millis = now_millis.saturating_add(remaining_millis);
                        held.renewed = false;
                    });
                    recorded += u64::from(changed.is_some());
                }
                Response::LeasesCheckpointed(recorded)
            }
            query => self.read_only(&query),
        }
    }

    /// Who makes `request`, if authentication is on and it names a user: its token verified
    /// at `now_millis` and its permissions checked. A request without a token is let through
    /// only if it is one of the members' own ([`Request::is_members`]: whether the member
    /// that took it may make it was decided there, by [`Kv::admit_request`]) or the auth store's
    /// (which checks its own).
    fn admission(
        &self,
        request: &Request,
        now_millis: u64,
        applying: bool,
    ) -> Result<Option<String>, AuthError> {
        let (inner, token) = match request {
            Request::As(authorized) => (&authorized.request, Some(authorized.token.as_str())),
            request => (request, None),
        };
        if let Request::As(_) = inner {
            return Err(AuthError::Invalid("a request made as a user holds another".into()));
        }
        if !self.auth.enabled() {
            return Ok(None);
        }
        let Some(token) = token else {
            return if matches!(inner, Request::Auth(_)) || inner.is_members() {
                Ok(None)
            } else {
                Err(AuthError::UserEmpty)
            };
        };
        if auth::is_member_token(token) {
            // A member's own request (or its automatic compaction) made through another
            // member: its token is good for nothing else.
            self.auth.verify_member(token, now_millis)?;
            let members = inner.is_members() || matches!(inner, Request::Compact(_));
            return if members { Ok(None) } else { Err(AuthError::PermissionDenied) };
        }
        let user = self.auth.verify(token, now_millis, applying)?;
        self.authorize(user, inner)?;
        Ok(Some(user.to_string()))
    }

    /// Whether `user` may make `request` (the auth store's own requests are checked by it).
    fn authorize(&self, user: &str, request: &Request) -> Result<(), AuthError> {
        let allowed = |range: &KeyRange, kind| {
            if self.auth.permits(user, range, kind) {
                Ok(())
            } else {
                Err(AuthError::PermissionDenied)
            }
        };
        let root = || {
            if self.auth.is_root(user) {
                Ok(())
            } else {
                Err(AuthError::PermissionDenied)
            }
        };
        let put_allowed = |put: &PutRequest| {
            let key = KeyRange::key(put.key.clone());
            allowed(&key, PermissionKind::Write)?;
            if put.prev_kv {
                allowed(&key, PermissionKind::Read)?;
            }
            Ok(())
        };
        let delete_allowed = |delete: &DeleteRequest| {
            allowed(&delete.range, PermissionKind::Write)?;
            if delete.prev_kv {
                allowed(&delete.range, PermissionKind::Read)?;
            }
            Ok(())
        };
        let operation = |operation: &Operation| match operation {
            Operation::Range(range) => allowed(&range.range, PermissionKind::Read),
            Operation::Put(put) => put_allowed(put),
            Operation::Delete(delete) => delete_allowed(delete),
        };
        match request {
            Request::Auth(_) => Ok(()),
            Request::As(_) => Err(AuthError::PermissionDenied),
            Request::Range(range) => allowed(&range.range, PermissionKind::Read),
            Request::Events(events) => allowed(&events.range, PermissionKind::Read),
            Request::Put(put) => put_allowed(put),
            Request::Delete(delete) => delete_allowed(delete),
            Request::Txn(txn) => {
                for compare in &txn.compare {
                    allowed(&compare.range, PermissionKind::Read)?;
                }
                txn.success.iter().chain(&txn.failure).try_for_each(operation)
            }
            Request::LeaseRevoke(lease) => match self.leases.get(&lease.id) {
                Some(held) => held.keys.iter().try_for_each(|key| {
                    allowed(&KeyRange::key(key.clone()), PermissionKind::Write)
                }),
                None => Ok(()),
            },
            Request::LeaseGrant(_)
            | Request::LeaseKeepAlive(_)
            | Request::LeaseTimeToLive(_)
            | Request::LeaseList
            | Request::Revisions => Ok(()),
            Request::Compact(_)
            | Request::Hash(_)
            | Request::Alarm(_)
            | Request::LeaseExpire(_)
            | Request::LeaseCheckpoint(_)
            | Request::LeaseDeadlines
            | Request::LeaseOf(_)
            | Request::LeaseMark(_)
            | Request::LeaseEnd(_) => root(),
        }
    }

    /// Changes (or reads) the auth store for `caller`, keeping the digest current.
    fn auth_change(&mut self, request: AuthRequest, caller: Option<&str>) -> Response {
        let before = (!self.auth.is_pristine()).then(|| self.auth.element());
        let revision = self.auth.revision();
        let outcome = self.auth.change(request, caller);
        if self.auth.revision() != revision {
            if let Some(before) = before {
                self.elements.remove(&before);
            }
            self.elements.add(&self.auth.element());
        }
        match outcome {
            Ok(response) => Response::Auth(response),
            Err(error) => Response::Error(KvError::Auth(error)),
        }
    }

    /// Whether to take `request` from a client at all, before it is proposed or answered
    /// (at `now_millis` on the taking member's clock, which a token's expiry is measured
    /// against): the checks that need no state, the space quota, and, with authentication
    /// on, the user's token and permissions. The members' own requests (lease expiries and
    /// checkpoints, alarms, watch polls, password checks and token issues) are taken only
    /// from a client in the replica's own process ([`Origin::Local`]) once authentication is
    /// on, and password checks and token issues always.
    pub fn admit_request(
        &self,
        request: &Request,
        origin: Origin,
        now_millis: u64,
    ) -> Result<(), KvError> {
        request.check_with(self.txn_ops_max)?;
        self.screen_request(request, origin)?;
        let inner = match request {
            Request::As(authorized) => &authorized.request,
            request => request,
        };
        self.admission(request, now_millis, false).map_err(KvError::Auth)?;
        if self.out_of_space() && grows(inner) {
            return Err(KvError::NoSpace);
        }
        if self.quota_bytes > 0 && grows(inner) {
            // As etcd's quota: the store's size now and what the request would add.
            let added: u64 = match inner {
                Request::Put(put) => put_size(put),
                Request::Txn(txn) => txn
                    .success
                    .iter()
                    .chain(&txn.failure)
                    .map(|operation| match operation {
                        Operation::Put(put) => put_size(put),
                        _ => 0,
                    })
                    .sum(),
                _ => 0,
            };
            if self.size_bytes.saturating_add(added) > self.quota_bytes {
                return Err(KvError::NoSpace);
            }
        }
        if let Request::LeaseGrant(_) = inner {
            if self.leases.len() >= self.leases_max {
                return Err(KvError::TooManyLeases { max: self.leases_max });
            }
        }
        Ok(())
    }

    /// Whether `origin` may send `request` at all: the members' own requests only from the
    /// replica's own process while authentication is on, and the lease's bookkeeping,
    /// password hashes, tokens and turning authentication on only from there, ever; and a
    /// transaction no longer than this member takes (`max_txn_ops`). Checked on every attempt
    /// of every request by the leader, and on every read.
    pub fn screen_request(&self, request: &Request, origin: Origin) -> Result<(), KvError> {
        let inner = match request {
            Request::As(authorized) => &authorized.request,
            request => request,
        };
        if let Request::Txn(txn) = inner {
            Kv::check_txn(txn, self.txn_ops_max)?;
        }
        if origin == Origin::Local {
            return Ok(());
        }
        let members_only = match request {
            Request::Auth(auth) => auth.is_member_only(),
            Request::As(authorized) => match &authorized.request {
                Request::Auth(auth) => auth.is_member_only(),
                _ => false,
            },
            // What watchers poll, the revisions and alarms are for anyone while authentication
            // is off (as every request is); the lease's bookkeeping (expiries, checkpoints,
            // marks, deadlines) only a member makes, ever.
            request => {
                request.is_members()
                    && (self.auth.enabled()
                        || !matches!(
                            request,
                            Request::Events(_) | Request::Revisions | Request::Alarm(_)
                        ))
            }
        };
        if members_only {
            return Err(KvError::Auth(AuthError::PermissionDenied));
        }
        Ok(())
    }

    /// Lists, raises or clears an alarm.
    fn alarm(&mut self, request: AlarmRequest) -> Response {
        let alarm = Alarm { member: request.member, alarm: request.alarm };
        match request.action {
            AlarmAction::Get => {}
            AlarmAction::Activate => {
                if self.alarms.insert(alarm) {
                    self.elements.add(&alarm_element(&alarm));
                }
            }
            AlarmAction::Deactivate => {
                if self.alarms.remove(&alarm) {
                    self.elements.remove(&alarm_element(&alarm));
                }
            }
        }
        // Through the log the answer carries no size: an answer is replicated output (kept
        // in sessions, compared by the audit), and the size is an accounting that may change
        // between versions.
        Response::Alarms(AlarmResponse {
            alarms: self.alarms.iter().copied().collect(),
            size_bytes: 0,
        })
    }

    fn alarms_response(&self) -> Response {
        Response::Alarms(AlarmResponse {
            alarms: self.alarms.iter().copied().collect(),
            size_bytes: self.size_bytes,
        })
    }

    /// Answers a request that only reads, for `caller` (see [`Kv::admission`]).
    fn read_as(&self, request: &Request, caller: Option<&str>) -> Response {
        match request {
            Request::Auth(auth) if auth.is_read_only() => match self.auth.read(auth, caller) {
                Ok(response) => Response::Auth(response),
                Err(error) => Response::Error(KvError::Auth(error)),
            },
            request => self.read_only(request),
        }
    }

    /// Answers a request that only reads.
    fn read_only(&self, request: &Request) -> Response {
        match request {
            Request::Alarm(alarm) if alarm.action == AlarmAction::Get => self.alarms_response(),
            Request::Range(range) => self.range(range),
            Request::Txn(txn) if request.is_read_only() => self.read_txn(txn),
            Request::Hash(hash) => self.hash(hash.revision),
            Request::LeaseTimeToLive(lease) => match self.leases.get(&lease.id) {
                Some(held) => Response::Lease(lease_info(lease.id, held)),
                None => Response::Error(KvError::LeaseNotFound),
            },
            Request::LeaseOf(lease) => match self.leases.get(&lease.id) {
                Some(held) => Response::LeaseDeadlines(vec![LeaseDeadline {
                    id: lease.id,
                    ttl: held.ttl,
                    deadline_millis: held.deadline_millis,
                    renewed: held.renewed,
                }]),
                None => Response::Error(KvError::LeaseNotFound),
            },
            Request::LeaseList => Response::Leases(
                self.leases.iter().map(|(&id, lease)| lease_info(id, lease)).collect(),
            ),
            Request::Events(events) => self.events(events),
            Request::Revisions => {
                Response::Revisions { current: self.revision(), compacted: self.compacted }
            }
            Request::LeaseDeadlines => Response::LeaseDeadlines(
                self.leases
                    .iter()
                    .map(|(&id, lease)| LeaseDeadline {
                        id,
                        ttl: lease.ttl,
                        deadline_millis: lease.deadline_millis,
                        renewed: lease.renewed,
                    })
                    .collect(),
            ),
            _ => Response::Error(KvError::NotReadOnly),
        }
    }

    fn grant(&mut self, grant: LeaseGrantRequest, now_millis: u64) -> Response {
        if grant.id <= 0 || grant.ttl > LEASE_TTL_MAX {
            return Response::Error(KvError::LeaseInvalid);
        }
        if self.leases.contains_key(&grant.id) {
            return Response::Error(KvError::LeaseExists);
        }
        let ttl = grant.ttl.max(LEASE_TTL_MIN);
        let lease = Lease {
            ttl,
            deadline_millis: deadline(now_millis, ttl),
            keys: BTreeSet::new(),
            renewed: false,
        };
        let info = lease_info(grant.id, &lease);
        self.elements.add(&lease_element(grant.id, &lease));
        self.leases.insert(grant.id, lease);
        Response::Lease(info)
    }

    /// Renews lease `id` through the log at `now_millis`. A plain renewal after the recorded
    /// deadline revokes the lease instead (its expiry was not yet ordered); a marked one
    /// (`mark`) renews any lease still held: its leader, which alone decides expiries, found it
    /// alive (its deadline may have been recorded by an earlier leader, on another clock).
    fn renew(&mut self, id: i64, now_millis: u64, mark: bool) -> Response {
        match self.leases.get(&id) {
            Some(held) if !mark && held.deadline_millis <= now_millis => self.revoke(id),
            Some(_) => {
                let info = self.change_lease(id, |held| {
                    held.deadline_millis = deadline(now_millis, held.ttl);
                    held.renewed |= mark;
                });
                info.map_or(Response::Error(KvError::LeaseNotFound), Response::Lease)
            }
            None => Response::Error(KvError::LeaseNotFound),
        }
    }

    /// Revokes lease `id` if its recorded deadline has passed by `now_millis`.
    fn expire(&mut self, id: i64, now_millis: u64) -> Response {
        match self.leases.get(&id) {
            Some(held) if held.deadline_millis <= now_millis => self.revoke(id),
            Some(held) => Response::Lease(lease_info(id, held)),
            None => Response::Error(KvError::LeaseNotFound),
        }
    }

    /// Changes lease `id` (if held), keeping the digest's element for it current; returns the
    /// lease as it is after the change.
    fn change_lease(&mut self, id: i64, change: impl FnOnce(&mut Lease)) -> Option<LeaseInfo> {
        let lease = self.leases.get_mut(&id)?;
        self.elements.remove(&lease_element(id, lease));
        change(lease);
        self.elements.add(&lease_element(id, lease));
        Some(lease_info(id, lease))
    }

    /// Removes lease `id` and deletes its keys, at one new revision if it had any.
    fn revoke(&mut self, id: i64) -> Response {
        let Some(lease) = self.leases.remove(&id) else {
            return Response::Error(KvError::LeaseNotFound);
        };
        self.elements.remove(&lease_element(id, &lease));
        self.write(|kv, revision| {
            let mut changed = false;
            for key in lease.keys {
                if kv.keys.get(&key).is_some_and(|history| history.last().is_put()) {
                    kv.record(key, revision, None);
                    changed = true;
                }
            }
            (Response::LeaseRevoked, changed)
        })
    }

    /// The changes to a range from a revision on, in revision order (found through the
    /// revision index: the cost is the changes since `from`, not the keys in the range).
    fn events(&self, request: &EventsRequest) -> Response {
        if let Some(user) = &request.user {
            if self.auth.enabled() && !self.auth.permits(user, &request.range, PermissionKind::Read)
            {
                return Response::Error(KvError::Auth(AuthError::PermissionDenied));
            }
        }
        if request.from < self.compacted {
            return Response::Error(KvError::Compacted {
                requested: request.from,
                compacted: self.compacted,
            });
        }
        let mut events = Vec::new();
        let mut through = self.revision();
        for &((revision, sub), ref key) in self.by_revision.from(request.from) {
            if !request.range.contains(key) {
                continue;
            }
            if request.limit != 0 && events.len() as u64 >= request.limit {
                // Never split a revision: stop before the next one.
                if revision != through {
                    break;
                }
            }
            let Some(history) = self.keys.get(key) else { continue };
            let Some(position) = history.position(revision, sub) else { continue };
            let Some(version) = history.get(position) else { continue };
            let prev_kv = position
                .checked_sub(1)
                .and_then(|before| history.get(before))
                .and_then(|before| before.key_value(key));
            let kv = version.key_value(key).unwrap_or_else(|| KeyValue {
                key: key.clone(),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: revision,
                version: 0,
                lease: 0,
            });
            events.push(Event { put: version.is_put(), kv, prev_kv });
            through = revision;
        }
        // Without a limit reached, everything up to the current revision has been seen.
        if request.limit == 0 || (events.len() as u64) < request.limit {
            through = self.revision();
        }
        Response::Events(EventsResponse { events, through })
    }

    /// Runs `change` at the next revision, which becomes current only if it changed something.
    fn write(&mut self, change: impl FnOnce(&mut Kv, Revision) -> (Response, bool)) -> Response {
        let next = self.revision() + 1;
        self.changes = 0;
        let (response, changed) = change(self, next);
        if changed {
            self.revision = next;
        }
        response
    }

    /// Records a change of `key` at `revision`.
    fn record(&mut self, key: Bytes, revision: Revision, kv: Option<KeyValue>) {
        let sub = self.changes;
        self.changes += 1;
        let version = Version::new(revision, sub, kv);
        self.elements.add(&version_element(&key, &version));
        self.size_bytes = self.size_bytes.saturating_add(version_size(&key, &version));
        // One lookup for a key already kept; the index shares the map's copy of the key, not
        // the request's.
        match self.keys.get_key_value_mut(&key) {
            Some((kept, history)) => {
                self.by_revision.push(revision, sub, kept.clone());
                history.push(version);
            }
            None => {
                self.by_revision.push(revision, sub, key.clone());
                self.keys.insert(key, History::new(version));
            }
        }
    }

    /// Checks that `revision` (0: the current one) can be read; returns the revision to read.
    fn readable(&self, revision: Revision) -> Result<Revision, KvError> {
        let current = self.revision();
        if revision == 0 {
            return Ok(current);
        }
        if revision < self.compacted {
            return Err(KvError::Compacted { requested: revision, compacted: self.compacted });
        }
        if revision > current {
            return Err(KvError::FutureRevision { requested: revision, current });
        }
        Ok(revision)
    }

    fn range(&self, request: &RangeRequest) -> Response {
        if let Err(error) = check_range(&request.range) {
            return Response::Error(error);
        }
        match self.readable(request.revision) {
            Ok(revision) => Response::Range(self.read(request, revision)),
            Err(error) => Response::Error(error),
        }
    }

    /// The keys of `range` as they were at `revision`, in key order.
    fn keys_at<'a>(
        &'a self,
        range: &KeyRange,
        revision: Revision,
    ) -> impl Iterator<Item = KeyValue> + 'a {
        let keys = if range.is_backwards() { None } else { Some(self.keys.range(range.bounds())) };
        keys.into_iter().flatten().filter_map(move |(key, history)| at(key, history, revision))
    }

    /// A range at `revision` (checked readable), as etcd answers it: count everything in the
    /// range, filter by revisions, sort, then cut at the limit.
    fn read(&self, request: &RangeRequest, revision: Revision) -> RangeResponse {
        let mut response = RangeResponse::default();
        let filtered = request.min_mod_revision != 0
            || request.max_mod_revision != 0
            || request.min_create_revision != 0
            || request.max_create_revision != 0;
        let sort_order = match (request.sort_order, request.sort_target) {
            (SortOrder::None, SortTarget::Key) => SortOrder::None,
            (SortOrder::None, _) => SortOrder::Ascend,
            (order, _) => order,
        };
        let mut kvs = Vec::new();
        for kv in self.keys_at(&request.range, revision) {
            response.count += 1;
            if request.count_only {
                continue;
            }
            let keep = (request.min_mod_revision == 0
                || kv.mod_revision >= request.min_mod_revision)
                && (request.max_mod_revision == 0 || kv.mod_revision <= request.max_mod_revision)
                && (request.min_create_revision == 0
                    || kv.create_revision >= request.min_create_revision)
                && (request.max_create_revision == 0
                    || kv.create_revision <= request.max_create_revision);
            if !keep {
                continue;
            }
            // Without sorting or filtering, keys past the limit are only counted.
            if !filtered
                && sort_order == SortOrder::None
                && request.limit != 0
                && kvs.len() as u64 >= request.limit
            {
                response.more = true;
                continue;
            }
            kvs.push(kv);
        }
        if sort_order != SortOrder::None {
            // A stable sort: keys stay in key order among equals.
            kvs.sort_by(|a, b| {
                let ordering = match request.sort_target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                };
                if sort_order == SortOrder::Descend {
                    ordering.reverse()
                } else {
                    ordering
                }
            });
        }
        if request.limit != 0 && kvs.len() as u64 > request.limit {
            kvs.truncate(request.limit as usize);
            response.more = true;
        }
        response.kvs = kvs
            .into_iter()
            .map(|mut kv| {
                if request.keys_only {
                    kv.value = Bytes::new();
                }
                kv
            })
            .collect();
        response
    }

    fn put(&mut self, request: PutRequest, revision: Revision) -> (Response, bool) {
        let previous =
            self.keys.get(&request.key).and_then(|history| current(&request.key, history));
        let value = if request.ignore_value {
            match &previous {
                Some(previous) => previous.value.clone(),
                None => return (Response::Error(KvError::KeyNotFound), false),
            }
        } else {
            request.value
        };
        let lease = if request.ignore_lease {
            match &previous {
                Some(previous) => previous.lease,
                None => return (Response::Error(KvError::KeyNotFound), false),
            }
        } else {
            request.lease
        };
        if lease != 0 && !self.leases.contains_key(&lease) {
            return (Response::Error(KvError::LeaseNotFound), false);
        }
        if let Some(previous) = &previous {
            if previous.lease != 0 && previous.lease != lease {
                self.change_lease(previous.lease, |old| {
                    old.keys.remove(&request.key);
                });
            }
        }
        if lease != 0 {
            self.change_lease(lease, |held| {
                held.keys.insert(request.key.clone());
            });
        }
        let kv = KeyValue {
            key: request.key.clone(),
            value,
            create_revision: previous
                .as_ref()
                .map_or(revision, |previous| previous.create_revision),
            mod_revision: revision,
            version: previous.as_ref().map_or(1, |previous| previous.version + 1),
            lease,
        };
        self.record(request.key, revision, Some(kv));
        let prev_kv = if request.prev_kv { previous } else { None };
        (Response::Put(PutResponse { prev_kv }), true)
    }

    fn delete(&mut self, request: &DeleteRequest, revision: Revision) -> (Response, bool) {
        // At the revision being written: a delete earlier in the same transaction has already
        // removed what it deleted.
        let doomed: Vec<KeyValue> = self.keys_at(&request.range, revision).collect();
        let mut response = DeleteResponse { deleted: doomed.len() as u64, prev_kvs: Vec::new() };
        for kv in doomed {
            if kv.lease != 0 {
                self.change_lease(kv.lease, |lease| {
                    lease.keys.remove(&kv.key);
                });
            }
            self.record(kv.key.clone(), revision, None);
            if request.prev_kv {
                response.prev_kvs.push(kv);
            }
        }
        let changed = response.deleted > 0;
        (Response::Delete(response), changed)
    }

    /// Forgets the history before `revision`. It does not change the revision.
    fn compact(&mut self, revision: Revision) -> Response {
        let current = self.revision();
        if revision <= self.compacted {
            return Response::Error(KvError::Compacted {
                requested: revision,
                compacted: self.compacted,
            });
        }
        if revision > current {
            return Response::Error(KvError::FutureRevision { requested: revision, current });
        }
        // Keep, for every key, the version current at `revision` (unless it is a deletion) and
        // all after.
        let first_kept = |history: &History| {
            let through = history.count_through(revision);
            match through.checked_sub(1).and_then(|at| history.get(at)) {
                Some(version) if version.is_put() => through - 1,
                Some(_) => through,
                None => 0,
            }
        };
        // Only keys with a version at or below `revision` can lose one: the revision index names
        // them.
        let candidates: BTreeSet<Bytes> =
            self.by_revision.through(revision).map(|(_, key)| key.clone()).collect();
        let trimmed: Vec<Bytes> = candidates
            .into_iter()
            .filter(|key| self.keys.get(key).is_some_and(|history| first_kept(history) > 0))
            .collect();
        let mut forgotten = BTreeSet::new();
        for key in trimmed {
            let Some(history) = self.keys.get_mut(&key) else { continue };
            let cut = first_kept(history);
            let (gone, emptied) = history.drop_oldest(cut);
            for gone in gone {
                forgotten.insert((gone.revision, gone.sub));
                self.elements.remove(&version_element(&key, &gone));
                self.size_bytes = self.size_bytes.saturating_sub(version_size(&key, &gone));
            }
            if emptied {
                self.keys.remove(&key);
            }
        }
        self.by_revision.retain_through(revision, |version| !forgotten.contains(version));
        self.compacted = revision;
        Response::Compact
    }

    /// A hash of every version kept up to `revision`; at the current one (0), the state
    /// machine's digest (what the audit compares across replicas: history, compaction point,
    /// leases), so that etcd's HashKV shows it.
    fn hash(&self, requested: Revision) -> Response {
        let revision = match self.readable(requested) {
            Ok(revision) => revision,
            Err(error) => return Response::Error(error),
        };
        if requested == 0 {
            let digest = StateMachine::digest(self).0;
            return Response::Hash(HashResponse {
                hash: u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]),
                hash_revision: revision,
                compact_revision: self.compacted,
            });
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.compacted.to_le_bytes());
        for (key, history) in &self.keys {
            for version in history.iter().filter(|version| version.revision <= revision) {
                hash_version(&mut hasher, key, version);
            }
        }
        let digest = hasher.finalize();
        let bytes = digest.as_bytes();
        Response::Hash(HashResponse {
            hash: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            hash_revision: revision,
            compact_revision: self.compacted,
        })
    }

    fn compare(&self, compare: &Compare) -> bool {
        let holds = |kv: Option<&KeyValue>| {
            let ordering = match (&compare.target, kv) {
                (CompareTarget::Value(_), None) => return false,
                (CompareTarget::Value(value), Some(kv)) => kv.value.cmp(value),
                (CompareTarget::Version(version), kv) => {
                    kv.map_or(0, |kv| kv.version as i64).cmp(version)
                }
                (CompareTarget::CreateRevision(revision), kv) => {
                    kv.map_or(0, |kv| kv.create_revision as i64).cmp(revision)
                }
                (CompareTarget::ModRevision(revision), kv) => {
                    kv.map_or(0, |kv| kv.mod_revision as i64).cmp(revision)
                }
                (CompareTarget::Lease(lease), kv) => kv.map_or(0, |kv| kv.lease).cmp(lease),
            };
            match compare.op {
                CompareOp::Equal => ordering.is_eq(),
                CompareOp::NotEqual => ordering.is_ne(),
                CompareOp::Greater => ordering.is_gt(),
                CompareOp::Less => ordering.is_lt(),
            }
        };
        if compare.range.range_end.is_empty() {
            let key = &compare.range.key;
            return holds(self.keys.get(key).and_then(|history| current(key, history)).as_ref());
        }
        let mut any = false;
        for kv in self.keys_at(&compare.range, self.revision()) {
            any = true;
            if !holds(Some(&kv)) {
                return false;
            }
        }
        any || holds(None)
    }

    /// Checks a transaction before comparing anything, as etcd does: no empty keys, no branch
    /// too long, and in each branch no key put twice nor put inside a range it deletes.
    fn check_txn(txn: &TxnRequest, max: usize) -> Result<(), KvError> {
        if txn.compare.len() > max {
            return Err(KvError::TooManyOps { ops: txn.compare.len(), max });
        }
        for compare in &txn.compare {
            if compare.range.key.is_empty() {
                return Err(KvError::EmptyKey);
            }
        }
        for branch in [&txn.success, &txn.failure] {
            if branch.len() > max {
                return Err(KvError::TooManyOps { ops: branch.len(), max });
            }
            let mut puts: Vec<&Bytes> = Vec::new();
            let mut deletes: Vec<&KeyRange> = Vec::new();
            for operation in branch {
                match operation {
                    Operation::Range(range) => check_range(&range.range)?,
                    Operation::Put(put) => {
                        check_put(put)?;
                        puts.push(&put.key);
                    }
                    Operation::Delete(delete) => {
                        check_range(&delete.range)?;
                        deletes.push(&delete.range);
                    }
                }
            }
            puts.sort();
            if puts.windows(2).any(|pair| pair[0] == pair[1]) {
                return Err(KvError::DuplicateKey);
            }
            // The first key put at or after each deleted range's start is in the range if any
            // is: sorted, this stays quick for the longest branches allowed.
            let inside = |range: &&KeyRange| {
                let first = puts.partition_point(|key| key.as_ref() < range.key.as_ref());
                puts.get(first).is_some_and(|key| range.contains(key))
            };
            if deletes.iter().any(inside) {
                return Err(KvError::DuplicateKey);
            }
        }
        Ok(())
    }

    /// Checks the revisions the ranges of a branch ask for.
    fn check_branch_reads(&self, branch: &[Operation]) -> Result<(), KvError> {
        for operation in branch {
            if let Operation::Range(range) = operation {
                self.readable(range.revision)?;
            }
        }
        Ok(())
    }

    /// A range inside a transaction: at its own revision, or else at `now` (a writing
    /// transaction's own revision, so that it sees its earlier operations, as etcd's do).
    fn read_in_txn(&self, range: &RangeRequest, now: Revision) -> RangeResponse {
        let revision = if range.revision == 0 { now } else { range.revision };
        self.read(range, revision)
    }

    /// A transaction that only reads, answered without changing anything.
    fn read_txn(&self, txn: &TxnRequest) -> Response {
        if let Err(error) = Kv::check_txn(txn, TXN_OPS_CEILING) {
            return Response::Error(error);
        }
        let succeeded = txn.compare.iter().all(|compare| self.compare(compare));
        let branch = if succeeded { &txn.success } else { &txn.failure };
        if let Err(error) = self.check_branch_reads(branch) {
            return Response::Error(error);
        }
        let mut responses = Vec::with_capacity(branch.len());
        for operation in branch {
            match operation {
                Operation::Range(range) => {
                    responses.push(Response::Range(self.read_in_txn(range, self.revision())));
                }
                _ => return Response::Error(KvError::NotReadOnly),
            }
        }
        Response::Txn(TxnResponse { succeeded, responses })
    }

    fn txn(&mut self, txn: TxnRequest) -> Response {
        if let Err(error) = Kv::check_txn(&txn, TXN_OPS_CEILING) {
            return Response::Error(error);
        }
        let succeeded = txn.compare.iter().all(|compare| self.compare(compare));
        let branch = if succeeded { txn.success } else { txn.failure };
        if let Err(error) = self.check_branch_reads(&branch) {
            return Response::Error(error);
        }
        // A put that keeps an absent key's value or lease, or names a lease that does not
        // exist, fails: check before changing anything, so a transaction is all or nothing (no
        // put lies inside a delete of the same branch).
        for operation in &branch {
            if let Operation::Put(put) = operation {
                let present =
                    self.keys.get(&put.key).is_some_and(|history| history.last().is_put());
                if (put.ignore_value || put.ignore_lease) && !present {
                    return Response::Error(KvError::KeyNotFound);
                }
                if put.lease != 0 && !put.ignore_lease && !self.leases.contains_key(&put.lease) {
                    return Response::Error(KvError::LeaseNotFound);
                }
            }
        }
        self.write(|kv, revision| {
            let mut changed = false;
            let mut responses = Vec::with_capacity(branch.len());
            for operation in branch {
                let response = match operation {
                    Operation::Range(range) => Response::Range(kv.read_in_txn(&range, revision)),
                    Operation::Put(put) => {
                        let (response, did) = kv.put(put, revision);
                        changed |= did;
                        response
                    }
                    Operation::Delete(delete) => {
                        let (response, did) = kv.delete(&delete, revision);
                        changed |= did;
                        response
                    }
                };
                responses.push(response);
            }
            (Response::Txn(TxnResponse { succeeded, responses }), changed)
        })
    }
}

/// A lease's deadline: `ttl` seconds after `now_millis`.
fn deadline(now_millis: u64, ttl: i64) -> u64 {
    now_millis.saturating_add((ttl.max(0) as u64).saturating_mul(1000))
}

fn lease_info(id: i64, lease: &Lease) -> LeaseInfo {
    LeaseInfo {
        id,
        ttl: lease.ttl,
        deadline_millis: lease.deadline_millis,
        keys: lease.keys.iter().cloned().collect(),
        renewed: lease.renewed,
    }
}

fn hash_version(hasher: &mut blake3::Hasher, key: &[u8], version: &Version) {
    hasher.update(&version_element(key, version));
}

/// A kept version as an element of the state's digest: every field, each length-prefixed or
/// of fixed width. Unique: no two versions share a (revision, sub).
fn version_element(key: &[u8], version: &Version) -> Vec<u8> {
    let value_len = version.value.as_ref().map_or(0, |value| value.value.len());
    let mut out = Vec::with_capacity(64 + key.len() + value_len);
    out.push(b'v');
    out.extend_from_slice(&(key.len() as u64).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&version.revision.to_le_bytes());
    out.extend_from_slice(&version.sub.to_le_bytes());
    match &version.value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            out.extend_from_slice(&(value.value.len() as u64).to_le_bytes());
            out.extend_from_slice(&value.value);
            out.extend_from_slice(&value.create_revision.to_le_bytes());
            out.extend_from_slice(&value.version.to_le_bytes());
            out.extend_from_slice(&value.lease.to_le_bytes());
        }
    }
    out
}

/// What a version counts for in [`Kv::size_bytes`] besides its key and value.
pub const VERSION_OVERHEAD_BYTES: u64 = 48;

/// A version's size as the store accounts it.
fn version_size(key: &[u8], version: &Version) -> u64 {
    let value = version.value.as_ref().map_or(0, |value| value.value.len());
    (key.len() + value) as u64 + VERSION_OVERHEAD_BYTES
}

/// Whether `request` could grow the store: refused while a `NoSpace` alarm is raised (as
/// etcd: puts, transactions that put, lease grants; deletes, reads and compaction go on).
/// What a put adds to the store's size as it accounts it (at most: a put of an unchanged
/// value adds a version all the same).
fn put_size(put: &PutRequest) -> u64 {
    (put.key.len() + put.value.len()) as u64 + VERSION_OVERHEAD_BYTES
}

fn grows(request: &Request) -> bool {
    match request {
        Request::Put(_) | Request::LeaseGrant(_) => true,
        Request::Txn(txn) => txn
            .success
            .iter()
            .chain(&txn.failure)
            .any(|operation| matches!(operation, Operation::Put(_))),
        _ => false,
    }
}

/// An alarm, as an element of the state's digest.
fn alarm_element(alarm: &Alarm) -> [u8; 10] {
    let mut out = [0u8; 10];
    out[0] = b'a';
    out[1..9].copy_from_slice(&alarm.member.to_le_bytes());
    out[9] = match alarm.alarm {
        AlarmKind::NoSpace => 1,
        AlarmKind::Corrupt => 2,
    };
    out
}

/// A lease as an element of the state's digest (its keys count; which keys follows from the
/// versions). Unique: lease ids are.
fn lease_element(id: i64, lease: &Lease) -> [u8; 33] {
    let mut out = [0u8; 33];
    // The mark is in the tag, so a lease never renewed hashes as snapshots before the mark
    // existed recorded it.
    out[0] = if lease.renewed { b'L' } else { b'l' };
    out[1..9].copy_from_slice(&id.to_le_bytes());
    out[9..17].copy_from_slice(&lease.ttl.to_le_bytes());
    out[17..25].copy_from_slice(&lease.deadline_millis.to_le_bytes());
    out[25..33].copy_from_slice(&(lease.keys.len() as u64).to_le_bytes());
    out
}

/// A view of the store for a checkpoint: the history and the revisions as they were.
#[derive(Clone, Debug)]
pub struct KvSnapshot {
    keys: OrdMap<Bytes, History>,
    revision: Revision,
    compacted: Revision,
    leases: BTreeMap<i64, Lease>,
    elements: LtHash,
    alarms: BTreeSet<Alarm>,
    auth: AuthStore,
    log_time_millis: u64,
}

/// The encoded form of a snapshot (version 7: with the digest's elements, checked at restore,
/// each lease's renewed mark, the alarms raised, and the auth store).
#[derive(Serialize, Deserialize)]
struct Encoded {
    version: u8,
    revision: Revision,
    compacted: Revision,
    keys: Vec<(Bytes, Vec<Version>)>,
    leases: Vec<(i64, Lease)>,
    elements: Vec<u8>,
    alarms: Vec<Alarm>,
    auth: AuthStore,
    log_time_millis: u64,
}

/// The encoded form of a version 6 snapshot (no auth store), still read.
#[derive(Deserialize)]
struct EncodedV6 {
    version: u8,
    revision: Revision,
    compacted: Revision,
    keys: Vec<(Bytes, Vec<Version>)>,
    leases: Vec<(i64, Lease)>,
    elements: Vec<u8>,
    alarms: Vec<Alarm>,
}

/// The encoded form of a version 5 snapshot (no alarms), still read.
#[derive(Deserialize)]
struct EncodedV5 {
    version: u8,
    revision: Revision,
    compacted: Revision,
    keys: Vec<(Bytes, Vec<Version>)>,
    leases: Vec<(i64, Lease)>,
    elements: Vec<u8>,
}

/// The encoded form of a version 4 snapshot (no lease marked renewed), still read.
#[derive(Deserialize)]
struct EncodedV4 {
    version: u8,
    revision: Revision,
    compacted: Revision,
    keys: Vec<(Bytes, Vec<Version>)>,
    leases: Vec<(i64, LeaseV4)>,
    elements: Vec<u8>,
}

/// The encoded form of a version 3 snapshot (no digest elements; each version with its key
/// and modification revision), still read.
#[derive(Deserialize)]
struct EncodedV3 {
    version: u8,
    revision: Revision,
    compacted: Revision,
    keys: Vec<(Bytes, Vec<VersionV3>)>,
    leases: Vec<(i64, LeaseV4)>,
}

/// A version as version 3 snapshots hold it.
#[derive(Deserialize)]
struct VersionV3 {
    revision: Revision,
    sub: u32,
    kv: Option<KeyValue>,
}

const SNAPSHOT_VERSION: u8 = 7;

/// The encoded form of a snapshot, borrowed from the view (it encodes as [`Encoded`]).
#[derive(Serialize)]
struct EncodedView<'a> {
    version: u8,
    revision: Revision,
    compacted: Revision,
    #[serde(serialize_with = "serialize_keys")]
    keys: &'a OrdMap<Bytes, History>,
    #[serde(serialize_with = "serialize_leases")]
    leases: &'a BTreeMap<i64, Lease>,
    elements: Vec<u8>,
    #[serde(serialize_with = "serialize_alarms")]
    alarms: &'a BTreeSet<Alarm>,
    auth: &'a AuthStore,
    log_time_millis: u64,
}

/// The alarms as a sequence.
fn serialize_alarms<S: serde::Serializer>(
    alarms: &&BTreeSet<Alarm>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(alarms.iter())
}

/// The keys and their histories as a sequence of pairs, streamed from the map.
fn serialize_keys<S: serde::Serializer>(
    keys: &&OrdMap<Bytes, History>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(keys.iter())
}

/// The leases as a sequence of pairs.
fn serialize_leases<S: serde::Serializer>(
    leases: &&BTreeMap<i64, Lease>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(leases.iter())
}

impl StateSnapshot for KvSnapshot {
    fn write_to(&self, out: &mut dyn io::Write) -> io::Result<()> {
        let encoded = EncodedView {
            version: SNAPSHOT_VERSION,
            revision: self.revision,
            compacted: self.compacted,
            keys: &self.keys,
            leases: &self.leases,
            elements: self.elements.to_bytes(),
            alarms: &self.alarms,
            auth: &self.auth,
            log_time_millis: self.log_time_millis,
        };
        // Streamed: the encoding is never held whole in memory.
        let mut buffered = io::BufWriter::new(out);
        postcard::to_io(&encoded, &mut buffered).map_err(io::Error::other)?;
        io::Write::flush(&mut buffered)
    }
}

impl Kv {
    /// The digest's elements recomputed from the whole store: what `elements` must equal. A
    /// pass over every version kept: for restores and offline checks only.
    fn elements_recomputed(&self) -> LtHash {
        let mut elements = LtHash::new();
        for (key, history) in &self.keys {
            for version in history.iter() {
                elements.add(&version_element(key, version));
            }
        }
        for (id, lease) in &self.leases {
            elements.add(&lease_element(*id, lease));
        }
        for alarm in &self.alarms {
            elements.add(&alarm_element(alarm));
        }
        // A store that never used auth hashes as one from before it existed.
        if !self.auth.is_pristine() {
            elements.add(&self.auth.element());
        }
        elements
    }

    /// Checks the digest kept up to date with each change against one recomputed from the
    /// whole store (a full pass: `lockstep audit verify` runs it on a data directory).
    pub fn verify_digest(&self) -> Result<(), String> {
        let recomputed = self.elements_recomputed();
        if recomputed != self.elements {
            return Err(format!(
                "the store's digest kept with each change ({}) differs from the one recomputed \
                 from its contents ({})",
                self.elements.checksum().to_hex(),
                recomputed.checksum().to_hex()
            ));
        }
        Ok(())
    }
}

impl StateMachine for Kv {
    type Input = Request;
    type Output = Answer;
    type Query = Request;
    type Snapshot = KvSnapshot;

    fn apply(&mut self, input: Request, context: &ApplyContext) -> Answer {
        let response = self.execute_in(input, context.timestamp_millis, context.term.0);
        Answer { revision: self.revision(), response }
    }

    /// Answers a read; a request that would write is refused here (send it through the log).
    /// A token's expiry is measured against the log time of the latest entry applied (the
    /// member that took the read checked it against its clock: [`Kv::admit_request`]).
    fn query(&self, query: &Request) -> Answer {
        let response = match self.admission(query, self.log_time_millis, false) {
            Err(error) => Response::Error(KvError::Auth(error)),
            Ok(caller) => match query {
                Request::As(authorized) => self.read_as(&authorized.request, caller.as_deref()),
                query => self.read_as(query, caller.as_deref()),
            },
        };
        Answer { revision: self.revision(), response }
    }

    fn admit(&self, input: &Request, origin: Origin, now_millis: u64) -> Result<(), Answer> {
        self.admit_request(input, origin, now_millis)
            .map_err(|error| Answer { revision: self.revision(), response: Response::Error(error) })
    }

    fn admit_query(&self, query: &Request, origin: Origin, now_millis: u64) -> Result<(), Answer> {
        self.admit(query, origin, now_millis)
    }

    fn screen(&self, input: &Request, origin: Origin) -> Result<(), String> {
        self.screen_request(input, origin).map_err(|error| error.to_string())
    }

    /// Authentication's refusals and the limits' (space, a transaction's length, leases).
    fn refuses(&self, output: &Answer) -> bool {
        matches!(
            output.response,
            Response::Error(
                KvError::Auth(_)
                    | KvError::NoSpace
                    | KvError::TooManyOps { .. }
                    | KvError::TooManyLeases { .. }
            )
        )
    }

    /// With authentication on, only root changes members and runs audit actions: a client in
    /// the replica's own process (the etcd gateway) has checked that itself.
    fn admit_admin(
        &self,
        credential: Option<&str>,
        origin: Origin,
        now_millis: u64,
    ) -> Result<(), String> {
        if !self.auth.enabled() || origin == Origin::Local {
            return Ok(());
        }
        let Some(token) = credential else {
            return Err(format!("{}: this needs the root role", AuthError::UserEmpty));
        };
        let user = self.auth.verify(token, now_millis, false).map_err(|error| error.to_string())?;
        if !self.auth.is_root(user) {
            return Err(format!("{}: this needs the root role", AuthError::PermissionDenied));
        }
        Ok(())
    }

    fn snapshot(&self) -> KvSnapshot {
        KvSnapshot {
            keys: self.keys.clone(),
            revision: self.revision(),
            compacted: self.compacted,
            leases: self.leases.clone(),
            elements: self.elements.clone(),
            alarms: self.alarms.clone(),
            auth: self.auth.clone(),
            log_time_millis: self.log_time_millis,
        }
    }

    fn restore(&mut self, input: &mut dyn io::Read) -> io::Result<()> {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        let invalid = |detail: String| io::Error::new(io::ErrorKind::InvalidData, detail);
        let undecodable = |error: postcard::Error| {
            invalid(format!("key-value snapshot does not decode: {error}"))
        };
        let digest = |elements: &[u8]| {
            LtHash::from_bytes(elements).ok_or_else(|| {
                invalid(format!(
                    "key-value snapshot digest is {} bytes, not {}",
                    elements.len(),
                    lthash::LANES * 2
                ))
            })
        };
        let mut alarms = Vec::new();
        let mut auth = AuthStore::default();
        let mut log_time_millis = 0;
        let (revision, compacted, keys, leases, written) = match bytes.first() {
            Some(&SNAPSHOT_VERSION) => {
                let encoded: Encoded = postcard::from_bytes(&bytes).map_err(undecodable)?;
                let elements = digest(&encoded.elements)?;
                alarms = encoded.alarms;
                auth = encoded.auth;
                log_time_millis = encoded.log_time_millis;
                (encoded.revision, encoded.compacted, encoded.keys, encoded.leases, Some(elements))
            }
            Some(6) => {
                let encoded: EncodedV6 = postcard::from_bytes(&bytes).map_err(undecodable)?;
                assert_eq!(encoded.version, 6, "the version byte was read as 6");
                let elements = digest(&encoded.elements)?;
                alarms = encoded.alarms;
                (encoded.revision, encoded.compacted, encoded.keys, encoded.leases, Some(elements))
            }
            Some(5) => {
                let encoded: EncodedV5 = postcard::from_bytes(&bytes).map_err(undecodable)?;
                assert_eq!(encoded.version, 5, "the version byte was read as 5");
                let elements = digest(&encoded.elements)?;
                (encoded.revision, encoded.compacted, encoded.keys, encoded.leases, Some(elements))
            }
            Some(4) => {
                let encoded: EncodedV4 = postcard::from_bytes(&bytes).map_err(undecodable)?;
                assert_eq!(encoded.version, 4, "the version byte was read as 4");
                let elements = digest(&encoded.elements)?;
                let leases = encoded.leases.into_iter().map(|(id, old)| (id, old.into())).collect();
                (encoded.revision, encoded.compacted, encoded.keys, leases, Some(elements))
            }
            Some(3) => {
                let encoded: EncodedV3 = postcard::from_bytes(&bytes).map_err(undecodable)?;
                assert_eq!(encoded.version, 3, "the version byte was read as 3");
                let keys = encoded
                    .keys
                    .into_iter()
                    .map(|(key, versions)| {
                        let versions = versions
                            .into_iter()
                            .map(|old| Version::new(old.revision, old.sub, old.kv))
                            .collect();
                        (key, versions)
                    })
                    .collect();
                let leases = encoded.leases.into_iter().map(|(id, old)| (id, old.into())).collect();
                (encoded.revision, encoded.compacted, keys, leases, None)
            }
            Some(other) => {
                return Err(invalid(format!("key-value snapshot version {other} is unknown")))
            }
            None => return Err(invalid("key-value snapshot is empty".to_string())),
        };
        let mut histories = OrdMap::new();
        for (key, versions) in keys {
            let Some(history) = History::from_versions(versions) else {
                return Err(invalid("key-value snapshot holds a key with no versions".to_string()));
            };
            histories.insert(key, history);
        }
        let mut restored = Kv {
            keys: histories,
            revision,
            compacted,
            changes: 0,
            leases: leases.into_iter().collect(),
            by_revision: RevisionIndex::default(),
            elements: LtHash::new(),
            alarms: alarms.into_iter().collect(),
            size_bytes: 0,
            auth,
            log_time_millis,
            leases_max: self.leases_max,
            txn_ops_max: self.txn_ops_max,
            quota_bytes: self.quota_bytes,
        };
        restored.size_bytes = restored
            .keys
            .iter()
            .flat_map(|(key, history)| {
                history.iter().map(move |version| version_size(key, version))
            })
            .sum();
        restored.by_revision = RevisionIndex::from_entries(
            restored
                .keys
                .iter()
                .flat_map(|(key, history)| {
                    history
                        .iter()
                        .map(move |version| ((version.revision, version.sub), key.clone()))
                })
                .collect(),
        );
        restored.elements = restored.elements_recomputed();
        if let Some(written) = written {
            if written != restored.elements {
                return Err(invalid(format!(
                    "key-value snapshot holds a state whose digest ({}) is not the one written \
                     with it ({})",
                    restored.elements.checksum().to_hex(),
                    written.checksum().to_hex()
                )));
            }
        }
        *self = restored;
        Ok(())
    }

    fn digest(&self) -> StateDigest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.revision().to_le_bytes());
        hasher.update(&self.compacted.to_le_bytes());
        hasher.update(self.elements.checksum().as_bytes());
        StateDigest(*hasher.finalize().as_bytes())
    }
}
