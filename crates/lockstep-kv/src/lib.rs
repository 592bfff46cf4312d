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
//! It keeps only the current state (no history): a range at a past revision is refused as
//! compacted, one at a future revision as not yet reached. Not yet modelled (the etcd API
//! issue adds them): history and compaction, leases, range sorting and revision filters,
//! nested transactions.
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

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;

use bytes::Bytes;
use lockstep_core::{ApplyContext, StateDigest, StateMachine, StateSnapshot};
use serde::{Deserialize, Serialize};

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
    /// Read at this revision (0: the current one). Only the current revision is kept.
    pub revision: Revision,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
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
    /// The version (0 for an absent key).
    Version(u64),
    /// The create revision (0 for an absent key).
    CreateRevision(Revision),
    /// The modification revision (0 for an absent key).
    ModRevision(Revision),
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

    /// Whether the request only reads (and so may be served by a read-index read).
    pub fn is_read_only(&self) -> bool {
        match self {
            Request::Range(_) => true,
            Request::Txn(txn) => txn
                .success
                .iter()
                .chain(&txn.failure)
                .all(|operation| matches!(operation, Operation::Range(_))),
            Request::Put(_) | Request::Delete(_) => false,
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
    /// The revision asked for is older than the current one, which is all that is kept.
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// The revision asked for has not been reached.
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// A put with `ignore_value` for a key that does not exist.
    KeyNotFound,
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
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::Compacted { requested, current } => write!(
                f,
                "revision {requested} has been compacted (only the current revision, {current}, \
                 is kept)"
            ),
            KvError::FutureRevision { requested, current } => {
                write!(f, "revision {requested} is a future revision (the current is {current})")
            }
            KvError::KeyNotFound => f.write_str("key not found"),
            KvError::DuplicateKey => f.write_str("a transaction changes the same key twice"),
            KvError::NotReadOnly => f.write_str("the request is not read-only"),
            KvError::EmptyKey => f.write_str("the key is empty"),
            KvError::ValueProvided => f.write_str("a value was given with ignore_value"),
            KvError::TooManyOps { ops, max } => {
                write!(f, "the transaction has {ops} operations; at most {max} are allowed")
            }
        }
    }
}

impl std::error::Error for KvError {}

/// The most operations in one branch of a transaction (etcd's default).
pub const TXN_OPS_MAX: usize = 128;

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
    /// Refused; nothing changed.
    Error(KvError),
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
    keys: BTreeMap<Bytes, KeyValue>,
    /// The revision of the last change (1 for an empty store that never changed, as etcd).
    revision: Revision,
}

impl Kv {
    /// An empty store at revision 1.
    pub fn new() -> Kv {
        Kv { keys: BTreeMap::new(), revision: 1 }
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.revision.max(1)
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Executes a request: reads read, writes write (at most one new revision per request).
    pub fn execute(&mut self, request: Request) -> Response {
        match request {
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
        }
    }

    /// Runs `change` at the next revision, which becomes current only if it changed something.
    fn write(&mut self, change: impl FnOnce(&mut Kv, Revision) -> (Response, bool)) -> Response {
        let next = self.revision() + 1;
        let (response, changed) = change(self, next);
        if changed {
            self.revision = next;
        }
        response
    }

    fn range(&self, request: &RangeRequest) -> Response {
        if let Err(error) = check_range(&request.range) {
            return Response::Error(error);
        }
        let current = self.revision();
        if request.revision != 0 && request.revision < current {
            return Response::Error(KvError::Compacted { requested: request.revision, current });
        }
        if request.revision > current {
            return Response::Error(KvError::FutureRevision {
                requested: request.revision,
                current,
            });
        }
        Response::Range(self.read(request))
    }

    fn read(&self, request: &RangeRequest) -> RangeResponse {
        if request.range.is_backwards() {
            return RangeResponse::default();
        }
        let mut response = RangeResponse::default();
        for kv in self.keys.range(request.range.bounds()).map(|(_, kv)| kv) {
            response.count += 1;
            if request.count_only {
                continue;
            }
            if request.limit != 0 && response.kvs.len() as u64 >= request.limit {
                response.more = true;
                continue;
            }
            let mut kv = kv.clone();
            if request.keys_only {
                kv.value = Bytes::new();
            }
            response.kvs.push(kv);
        }
        response
    }

    fn put(&mut self, request: PutRequest, revision: Revision) -> (Response, bool) {
        let previous = self.keys.get(&request.key).cloned();
        let value = if request.ignore_value {
            match &previous {
                Some(previous) => previous.value.clone(),
                None => return (Response::Error(KvError::KeyNotFound), false),
            }
        } else {
            request.value
        };
        let kv = match &previous {
            Some(previous) => KeyValue {
                key: request.key.clone(),
                value,
                create_revision: previous.create_revision,
                mod_revision: revision,
                version: previous.version + 1,
            },
            None => KeyValue {
                key: request.key.clone(),
                value,
                create_revision: revision,
                mod_revision: revision,
                version: 1,
            },
        };
        self.keys.insert(request.key, kv);
        let prev_kv = if request.prev_kv { previous } else { None };
        (Response::Put(PutResponse { prev_kv }), true)
    }

    fn delete(&mut self, request: &DeleteRequest, _revision: Revision) -> (Response, bool) {
        if request.range.is_backwards() {
            return (Response::Delete(DeleteResponse::default()), false);
        }
        let doomed: Vec<Bytes> =
            self.keys.range(request.range.bounds()).map(|(key, _)| key.clone()).collect();
        let mut response = DeleteResponse { deleted: doomed.len() as u64, prev_kvs: Vec::new() };
        for key in doomed {
            if let Some(kv) = self.keys.remove(&key) {
                if request.prev_kv {
                    response.prev_kvs.push(kv);
                }
            }
        }
        let changed = response.deleted > 0;
        (Response::Delete(response), changed)
    }

    fn compare(&self, compare: &Compare) -> bool {
        let holds = |kv: Option<&KeyValue>| {
            let ordering = match (&compare.target, kv) {
                (CompareTarget::Value(_), None) => return false,
                (CompareTarget::Value(value), Some(kv)) => kv.value.cmp(value),
                (CompareTarget::Version(version), kv) => kv.map_or(0, |kv| kv.version).cmp(version),
                (CompareTarget::CreateRevision(revision), kv) => {
                    kv.map_or(0, |kv| kv.create_revision).cmp(revision)
                }
                (CompareTarget::ModRevision(revision), kv) => {
                    kv.map_or(0, |kv| kv.mod_revision).cmp(revision)
                }
            };
            match compare.op {
                CompareOp::Equal => ordering.is_eq(),
                CompareOp::NotEqual => ordering.is_ne(),
                CompareOp::Greater => ordering.is_gt(),
                CompareOp::Less => ordering.is_lt(),
            }
        };
        if compare.range.range_end.is_empty() {
            return holds(self.keys.get(&compare.range.key));
        }
        if compare.range.is_backwards() {
            return holds(None);
        }
        let mut any = false;
        for (_, kv) in self.keys.range(compare.range.bounds()) {
            any = true;
            if !holds(Some(kv)) {
                return false;
            }
        }
        any || holds(None)
    }

    /// Checks a transaction before comparing anything, as etcd does: no empty keys, no branch
    /// too long, and in each branch no key put twice nor put inside a range it deletes.
    fn check_txn(txn: &TxnRequest) -> Result<(), KvError> {
        for compare in &txn.compare {
            if compare.range.key.is_empty() {
                return Err(KvError::EmptyKey);
            }
        }
        for branch in [&txn.success, &txn.failure] {
            if branch.len() > TXN_OPS_MAX {
                return Err(KvError::TooManyOps { ops: branch.len(), max: TXN_OPS_MAX });
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
            if puts.iter().any(|key| deletes.iter().any(|range| range.contains(key))) {
                return Err(KvError::DuplicateKey);
            }
        }
        Ok(())
    }

    /// Checks the revisions the ranges of a branch ask for.
    fn check_branch_reads(&self, branch: &[Operation]) -> Result<(), KvError> {
        let current = self.revision();
        for operation in branch {
            if let Operation::Range(range) = operation {
                if range.revision != 0 && range.revision < current {
                    return Err(KvError::Compacted { requested: range.revision, current });
                }
                if range.revision > current {
                    return Err(KvError::FutureRevision { requested: range.revision, current });
                }
            }
        }
        Ok(())
    }

    /// A transaction that only reads, answered without changing anything.
    fn read_txn(&self, txn: &TxnRequest) -> Response {
        if let Err(error) = Kv::check_txn(txn) {
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
                Operation::Range(range) => responses.push(Response::Range(self.read(range))),
                _ => return Response::Error(KvError::NotReadOnly),
            }
        }
        Response::Txn(TxnResponse { succeeded, responses })
    }

    fn txn(&mut self, txn: TxnRequest) -> Response {
        if let Err(error) = Kv::check_txn(&txn) {
            return Response::Error(error);
        }
        let succeeded = txn.compare.iter().all(|compare| self.compare(compare));
        let branch = if succeeded { txn.success } else { txn.failure };
        if let Err(error) = self.check_branch_reads(&branch) {
            return Response::Error(error);
        }
        // A put that keeps an absent key's value fails: check before changing anything, so a
        // transaction is all or nothing (no put lies inside a delete of the same branch).
        let missing = branch.iter().any(|operation| {
            matches!(operation, Operation::Put(put) if put.ignore_value && !self.keys.contains_key(&put.key))
        });
        if missing {
            return Response::Error(KvError::KeyNotFound);
        }
        self.write(|kv, revision| {
            let mut changed = false;
            let mut responses = Vec::with_capacity(branch.len());
            for operation in branch {
                let response = match operation {
                    Operation::Range(range) => Response::Range(kv.read(&range)),
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

/// A view of the store for a checkpoint: the keys and the revision as they were.
#[derive(Clone, Debug)]
pub struct KvSnapshot {
    keys: BTreeMap<Bytes, KeyValue>,
    revision: Revision,
}

/// The encoded form of a snapshot.
#[derive(Serialize, Deserialize)]
struct Encoded {
    version: u8,
    revision: Revision,
    keys: Vec<KeyValue>,
}

const SNAPSHOT_VERSION: u8 = 1;

impl StateSnapshot for KvSnapshot {
    fn write_to(&self, out: &mut dyn io::Write) -> io::Result<()> {
        let encoded = Encoded {
            version: SNAPSHOT_VERSION,
            revision: self.revision,
            keys: self.keys.values().cloned().collect(),
        };
        let bytes = postcard::to_stdvec(&encoded).map_err(io::Error::other)?;
        out.write_all(&bytes)
    }
}

impl StateMachine for Kv {
    type Input = Request;
    type Output = Answer;
    type Query = Request;
    type Snapshot = KvSnapshot;

    fn apply(&mut self, input: Request, _: &ApplyContext) -> Answer {
        let response = self.execute(input);
        Answer { revision: self.revision(), response }
    }

    /// Answers a read; a request that would write is refused here (send it through the log).
    fn query(&self, query: &Request) -> Answer {
        let response = match query {
            Request::Range(range) => self.range(range),
            Request::Txn(txn) if query.is_read_only() => self.read_txn(txn),
            _ => Response::Error(KvError::NotReadOnly),
        };
        Answer { revision: self.revision(), response }
    }

    fn snapshot(&self) -> KvSnapshot {
        KvSnapshot { keys: self.keys.clone(), revision: self.revision() }
    }

    fn restore(&mut self, input: &mut dyn io::Read) -> io::Result<()> {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        let invalid = |detail: String| io::Error::new(io::ErrorKind::InvalidData, detail);
        let encoded: Encoded = postcard::from_bytes(&bytes)
            .map_err(|error| invalid(format!("key-value snapshot does not decode: {error}")))?;
        if encoded.version != SNAPSHOT_VERSION {
            return Err(invalid(format!(
                "key-value snapshot version {} is unknown",
                encoded.version
            )));
        }
        self.keys = encoded.keys.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        self.revision = encoded.revision;
        Ok(())
    }

    fn digest(&self) -> StateDigest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.revision().to_le_bytes());
        for kv in self.keys.values() {
            for field in [&kv.key, &kv.value] {
                hasher.update(&(field.len() as u64).to_le_bytes());
                hasher.update(field);
            }
            hasher.update(&kv.create_revision.to_le_bytes());
            hasher.update(&kv.mod_revision.to_le_bytes());
            hasher.update(&kv.version.to_le_bytes());
        }
        StateDigest(*hasher.finalize().as_bytes())
    }
}
