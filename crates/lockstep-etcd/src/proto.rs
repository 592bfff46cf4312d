//! Protobuf messages of the etcd v3 API, written by hand with `prost` derives.
//!
//! The field numbers, scalar types and enum values are the ones etcd uses on the
//! wire, so stock etcd clients (etcdctl 3.4/3.5 and the etcd client libraries)
//! interoperate with a server built on these types. Rust field names are plain
//! snake_case; only the numbers matter for the encoding.
//!
//! The two nested modules mirror the protobuf packages: [`mvccpb`] holds the
//! key-value records and watch events, [`etcdserverpb`] holds the request and
//! response messages of the KV, Watch, Lease, Cluster and Maintenance services.

/// Key-value records and change events (protobuf package `mvccpb`).
#[allow(missing_docs)]
pub mod mvccpb {
    /// One key with its value and revision metadata.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        /// The key bytes.
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        /// Revision at which the key was last created.
        #[prost(int64, tag = "2")]
        pub create_revision: i64,
        /// Revision at which the key was last modified.
        #[prost(int64, tag = "3")]
        pub mod_revision: i64,
        /// Number of modifications since the key was created.
        #[prost(int64, tag = "4")]
        pub version: i64,
        /// The value bytes.
        #[prost(bytes = "vec", tag = "5")]
        pub value: Vec<u8>,
        /// Lease attached to the key, or 0 for none.
        #[prost(int64, tag = "6")]
        pub lease: i64,
    }

    /// A single change to a key, delivered to watchers.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        /// Kind of change; see [`event::EventType`].
        #[prost(enumeration = "event::EventType", tag = "1")]
        pub r#type: i32,
        /// The key after a put, or the deleted key for a delete.
        #[prost(message, optional, tag = "2")]
        pub kv: Option<KeyValue>,
        /// The key as it was before this change, when requested.
        #[prost(message, optional, tag = "3")]
        pub prev_kv: Option<KeyValue>,
    }

    /// Types nested in [`Event`].
    pub mod event {
        /// Whether an event stored or removed a key.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
        #[repr(i32)]
        pub enum EventType {
            /// The key was written.
            Put = 0,
            /// The key was removed.
            Delete = 1,
        }
    }
}

/// Requests and responses of the etcd v3 gRPC services (protobuf package `etcdserverpb`).
#[allow(missing_docs)]
pub mod etcdserverpb {
    // ---------------------------------------------------------------- common

    /// Metadata attached to every response.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        /// Cluster identifier of the responder.
        #[prost(uint64, tag = "1")]
        pub cluster_id: u64,
        /// Member identifier of the responder.
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
        /// Store revision at which the request was served.
        #[prost(int64, tag = "3")]
        pub revision: i64,
        /// Raft term at which the request was served.
        #[prost(uint64, tag = "4")]
        pub raft_term: u64,
    }

    // ---------------------------------------------------------------- KV

    /// Reads a key or a key range.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeRequest {
        /// First key of the range (or the only key).
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        /// Exclusive end of the range; empty means just `key`.
        #[prost(bytes = "vec", tag = "2")]
        pub range_end: Vec<u8>,
        /// Maximum number of keys to return; 0 means no limit.
        #[prost(int64, tag = "3")]
        pub limit: i64,
        /// Revision to read at; 0 or less means the latest.
        #[prost(int64, tag = "4")]
        pub revision: i64,
        /// Ordering of the results.
        #[prost(enumeration = "range_request::SortOrder", tag = "5")]
        pub sort_order: i32,
        /// Field the results are sorted by.
        #[prost(enumeration = "range_request::SortTarget", tag = "6")]
        pub sort_target: i32,
        /// Serve from the local member without a linearizable check.
        #[prost(bool, tag = "7")]
        pub serializable: bool,
        /// Return keys without values.
        #[prost(bool, tag = "8")]
        pub keys_only: bool,
        /// Return only the number of matching keys.
        #[prost(bool, tag = "9")]
        pub count_only: bool,
        /// Drop keys whose mod revision is below this.
        #[prost(int64, tag = "10")]
        pub min_mod_revision: i64,
        /// Drop keys whose mod revision is above this.
        #[prost(int64, tag = "11")]
        pub max_mod_revision: i64,
        /// Drop keys whose create revision is below this.
        #[prost(int64, tag = "12")]
        pub min_create_revision: i64,
        /// Drop keys whose create revision is above this.
        #[prost(int64, tag = "13")]
        pub max_create_revision: i64,
    }

    /// Types nested in [`RangeRequest`].
    pub mod range_request {
        /// Direction of sorting.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
        #[repr(i32)]
        pub enum SortOrder {
            /// No sorting (key order).
            None = 0,
            /// Smallest first.
            Ascend = 1,
            /// Largest first.
            Descend = 2,
        }

        /// Key-value field used for sorting.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
        #[repr(i32)]
        pub enum SortTarget {
            /// Sort by key.
            Key = 0,
            /// Sort by version.
            Version = 1,
            /// Sort by create revision.
            Create = 2,
            /// Sort by mod revision.
            Mod = 3,
            /// Sort by value.
            Value = 4,
        }
    }

    /// Result of a [`RangeRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// Matching key-value pairs.
        #[prost(message, repeated, tag = "2")]
        pub kvs: Vec<super::mvccpb::KeyValue>,
        /// True when the limit cut the result short.
        #[prost(bool, tag = "3")]
        pub more: bool,
        /// Total number of keys in the range.
        #[prost(int64, tag = "4")]
        pub count: i64,
    }

    /// Writes one key.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        /// Key to write.
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        /// Value to store.
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
        /// Lease to attach, or 0 for none.
        #[prost(int64, tag = "3")]
        pub lease: i64,
        /// Return the previous key-value pair.
        #[prost(bool, tag = "4")]
        pub prev_kv: bool,
        /// Keep the current value (key must exist).
        #[prost(bool, tag = "5")]
        pub ignore_value: bool,
        /// Keep the current lease (key must exist).
        #[prost(bool, tag = "6")]
        pub ignore_lease: bool,
    }

    /// Result of a [`PutRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// Previous key-value pair, when requested.
        #[prost(message, optional, tag = "2")]
        pub prev_kv: Option<super::mvccpb::KeyValue>,
    }

    /// Deletes a key or a key range.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeleteRangeRequest {
        /// First key of the range (or the only key).
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        /// Exclusive end of the range; empty means just `key`.
        #[prost(bytes = "vec", tag = "2")]
        pub range_end: Vec<u8>,
        /// Return the deleted key-value pairs.
        #[prost(bool, tag = "3")]
        pub prev_kv: bool,
    }

    /// Result of a [`DeleteRangeRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeleteRangeResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// Number of keys removed.
        #[prost(int64, tag = "2")]
        pub deleted: i64,
        /// Removed key-value pairs, when requested.
        #[prost(message, repeated, tag = "3")]
        pub prev_kvs: Vec<super::mvccpb::KeyValue>,
    }

    /// One operation inside a transaction branch.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RequestOp {
        /// The operation to run.
        #[prost(oneof = "request_op::Request", tags = "1, 2, 3, 4")]
        pub request: Option<request_op::Request>,
    }

    /// Types nested in [`RequestOp`].
    pub mod request_op {
        /// Operation kinds allowed in a transaction.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Request {
            /// A read.
            #[prost(message, tag = "1")]
            RequestRange(super::RangeRequest),
            /// A write.
            #[prost(message, tag = "2")]
            RequestPut(super::PutRequest),
            /// A delete.
            #[prost(message, tag = "3")]
            RequestDeleteRange(super::DeleteRangeRequest),
            /// A nested transaction.
            #[prost(message, tag = "4")]
            RequestTxn(super::TxnRequest),
        }
    }

    /// Result of one [`RequestOp`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseOp {
        /// The operation's result.
        #[prost(oneof = "response_op::Response", tags = "1, 2, 3, 4")]
        pub response: Option<response_op::Response>,
    }

    /// Types nested in [`ResponseOp`].
    pub mod response_op {
        /// Result kinds matching [`super::request_op::Request`].
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Response {
            /// Result of a read.
            #[prost(message, tag = "1")]
            ResponseRange(super::RangeResponse),
            /// Result of a write.
            #[prost(message, tag = "2")]
            ResponsePut(super::PutResponse),
            /// Result of a delete.
            #[prost(message, tag = "3")]
            ResponseDeleteRange(super::DeleteRangeResponse),
            /// Result of a nested transaction.
            #[prost(message, tag = "4")]
            ResponseTxn(super::TxnResponse),
        }
    }

    /// A guard condition of a transaction.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Compare {
        /// Comparison operator.
        #[prost(enumeration = "compare::CompareResult", tag = "1")]
        pub result: i32,
        /// Key field being compared.
        #[prost(enumeration = "compare::CompareTarget", tag = "2")]
        pub target: i32,
        /// Key under test.
        #[prost(bytes = "vec", tag = "3")]
        pub key: Vec<u8>,
        /// Value to compare against.
        #[prost(oneof = "compare::TargetUnion", tags = "4, 5, 6, 7, 8")]
        pub target_union: Option<compare::TargetUnion>,
        /// Exclusive end when comparing every key of a range.
        #[prost(bytes = "vec", tag = "64")]
        pub range_end: Vec<u8>,
    }

    /// Types nested in [`Compare`].
    pub mod compare {
        /// Comparison operator.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
        #[repr(i32)]
        pub enum CompareResult {
            /// Equal to.
            Equal = 0,
            /// Greater than.
            Greater = 1,
            /// Less than.
            Less = 2,
            /// Not equal to.
            NotEqual = 3,
        }

        /// Key field being compared.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
        #[repr(i32)]
        pub enum CompareTarget {
            /// The key's version.
            Version = 0,
            /// The key's create revision.
            Create = 1,
            /// The key's mod revision.
            Mod = 2,
            /// The key's value.
            Value = 3,
            /// The key's lease.
            Lease = 4,
        }

        /// Operand of a comparison, matching the chosen target.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum TargetUnion {
            /// Version operand.
            #[prost(int64, tag = "4")]
            Version(i64),
            /// Create revision operand.
            #[prost(int64, tag = "5")]
            CreateRevision(i64),
            /// Mod revision operand.
            #[prost(int64, tag = "6")]
            ModRevision(i64),
            /// Value operand.
            #[prost(bytes = "vec", tag = "7")]
            Value(Vec<u8>),
            /// Lease operand.
            #[prost(int64, tag = "8")]
            Lease(i64),
        }
    }

    /// An atomic if/then/else over the store.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TxnRequest {
        /// Guards; all must hold for the success branch.
        #[prost(message, repeated, tag = "1")]
        pub compare: Vec<Compare>,
        /// Operations run when every guard holds.
        #[prost(message, repeated, tag = "2")]
        pub success: Vec<RequestOp>,
        /// Operations run otherwise.
        #[prost(message, repeated, tag = "3")]
        pub failure: Vec<RequestOp>,
    }

    /// Result of a [`TxnRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TxnResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// True when the success branch ran.
        #[prost(bool, tag = "2")]
        pub succeeded: bool,
        /// Results of the branch that ran, in order.
        #[prost(message, repeated, tag = "3")]
        pub responses: Vec<ResponseOp>,
    }

    /// Discards history below a revision.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CompactionRequest {
        /// Revision to compact up to.
        #[prost(int64, tag = "1")]
        pub revision: i64,
        /// Wait until the compaction is applied to storage.
        #[prost(bool, tag = "2")]
        pub physical: bool,
    }

    /// Result of a [`CompactionRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CompactionResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    // ---------------------------------------------------------------- Watch

    /// A message on the client side of a watch stream.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WatchRequest {
        /// What the client asks for.
        #[prost(oneof = "watch_request::RequestUnion", tags = "1, 2, 3")]
        pub request_union: Option<watch_request::RequestUnion>,
    }

    /// Types nested in [`WatchRequest`].
    pub mod watch_request {
        /// Kinds of watch stream requests.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum RequestUnion {
            /// Start a watcher.
            #[prost(message, tag = "1")]
            CreateRequest(super::WatchCreateRequest),
            /// Stop a watcher.
            #[prost(message, tag = "2")]
            CancelRequest(super::WatchCancelRequest),
            /// Ask for a progress notification.
            #[prost(message, tag = "3")]
            ProgressRequest(super::WatchProgressRequest),
        }
    }

    /// Starts a watcher on a key or range.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WatchCreateRequest {
        /// Key to watch (or start of the range).
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        /// Exclusive end of the watched range; empty means just `key`.
        #[prost(bytes = "vec", tag = "2")]
        pub range_end: Vec<u8>,
        /// First revision to report (inclusive); 0 means from now.
        #[prost(int64, tag = "3")]
        pub start_revision: i64,
        /// Send periodic empty responses carrying progress.
        #[prost(bool, tag = "4")]
        pub progress_notify: bool,
        /// Event kinds to suppress.
        #[prost(enumeration = "watch_create_request::FilterType", repeated, tag = "5")]
        pub filters: Vec<i32>,
        /// Include the previous key-value pair in events.
        #[prost(bool, tag = "6")]
        pub prev_kv: bool,
        /// Watcher id chosen by the client; 0 lets the server choose.
        #[prost(int64, tag = "7")]
        pub watch_id: i64,
        /// Allow splitting large revisions across responses.
        #[prost(bool, tag = "8")]
        pub fragment: bool,
    }

    /// Types nested in [`WatchCreateRequest`].
    pub mod watch_create_request {
        /// Event kinds a watcher can suppress.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
        #[repr(i32)]
        pub enum FilterType {
            /// Drop put events.
            Noput = 0,
            /// Drop delete events.
            Nodelete = 1,
        }
    }

    /// Stops a watcher.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WatchCancelRequest {
        /// Watcher to stop.
        #[prost(int64, tag = "1")]
        pub watch_id: i64,
    }

    /// Asks the server for an immediate progress notification.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WatchProgressRequest {}

    /// A message on the server side of a watch stream.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WatchResponse {
        /// Response metadata; its revision reports progress.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// Watcher this response belongs to.
        #[prost(int64, tag = "2")]
        pub watch_id: i64,
        /// Set on the reply to a create request.
        #[prost(bool, tag = "3")]
        pub created: bool,
        /// Set when the watcher has been stopped.
        #[prost(bool, tag = "4")]
        pub canceled: bool,
        /// Compaction revision when the watcher fell behind compaction.
        #[prost(int64, tag = "5")]
        pub compact_revision: i64,
        /// Why the watcher was stopped.
        #[prost(string, tag = "6")]
        pub cancel_reason: String,
        /// Set when more parts of the same revision follow.
        #[prost(bool, tag = "7")]
        pub fragment: bool,
        /// Events delivered by this response.
        #[prost(message, repeated, tag = "11")]
        pub events: Vec<super::mvccpb::Event>,
    }

    // ---------------------------------------------------------------- Lease

    /// Creates a lease.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LeaseGrantRequest {
        /// Requested time-to-live in seconds.
        #[prost(int64, tag = "1")]
        pub ttl: i64,
        /// Requested lease id; 0 lets the server choose.
        #[prost(int64, tag = "2")]
        pub id: i64,
    }

    /// Result of a [`LeaseGrantRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LeaseGrantResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// Id of the granted lease.
        #[prost(int64, tag = "2")]
        pub id: i64,
        /// Granted time-to-live in seconds.
        #[prost(int64, tag = "3")]
        pub ttl: i64,
        /// Error text, if any.
        #[prost(string, tag = "4")]
        pub error: String,
    }

    /// Revokes a lease and deletes its keys.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LeaseRevokeRequest {
        /// Lease to revoke.
        #[prost(int64, tag = "1")]
        pub id: i64,
    }

    /// Result of a [`LeaseRevokeRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LeaseRevokeResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// Refreshes a lease (sent on a stream).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LeaseKeepAliveRequest {
        /// Lease to refresh.
        #[prost(int64, tag = "1")]
        pub id: i64,
    }

    /// Result of a [`LeaseKeepAliveRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LeaseKeepAliveResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// Lease that was refreshed.
        #[prost(int64, tag = "2")]
        pub id: i64,
        /// New time-to-live in seconds; 0 or less if the lease is gone.
        #[prost(int64, tag = "3")]
        pub ttl: i64,
    }

    /// Asks for a lease's remaining time.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LeaseTimeToLiveRequest {
        /// Lease to inspect.
        #[prost(int64, tag = "1")]
        pub id: i64,
        /// Also list the keys attached to the lease.
        #[prost(bool, tag = "2")]
        pub keys: bool,
    }

    /// Result of a [`LeaseTimeToLiveRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LeaseTimeToLiveResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// Lease that was inspected.
        #[prost(int64, tag = "2")]
        pub id: i64,
        /// Remaining time-to-live in seconds; -1 if expired or unknown.
        #[prost(int64, tag = "3")]
        pub ttl: i64,
        /// Time-to-live granted at creation or last renewal.
        #[prost(int64, tag = "4")]
        pub granted_ttl: i64,
        /// Keys attached to the lease, when requested.
        #[prost(bytes = "vec", repeated, tag = "5")]
        pub keys: Vec<Vec<u8>>,
    }

    /// Lists all leases.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LeaseLeasesRequest {}

    /// One entry of a lease listing.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LeaseStatus {
        /// Lease id.
        #[prost(int64, tag = "1")]
        pub id: i64,
    }

    /// Result of a [`LeaseLeasesRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LeaseLeasesResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// Existing leases.
        #[prost(message, repeated, tag = "2")]
        pub leases: Vec<LeaseStatus>,
    }

    // ---------------------------------------------------------------- Cluster

    /// Description of one cluster member.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Member {
        /// Member id.
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// Human-readable name; empty until the member has started.
        #[prost(string, tag = "2")]
        pub name: String,
        /// URLs used by peers to reach the member.
        #[prost(string, repeated, tag = "3")]
        pub peer_urls: Vec<String>,
        /// URLs used by clients to reach the member.
        #[prost(string, repeated, tag = "4")]
        pub client_urls: Vec<String>,
        /// True for a non-voting learner.
        #[prost(bool, tag = "5")]
        pub is_learner: bool,
    }

    /// Adds a member.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemberAddRequest {
        /// Peer URLs of the new member.
        #[prost(string, repeated, tag = "1")]
        pub peer_urls: Vec<String>,
        /// Add the member as a learner.
        #[prost(bool, tag = "2")]
        pub is_learner: bool,
    }

    /// Result of a [`MemberAddRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemberAddResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// The member that was added.
        #[prost(message, optional, tag = "2")]
        pub member: Option<Member>,
        /// All members after the change.
        #[prost(message, repeated, tag = "3")]
        pub members: Vec<Member>,
    }

    /// Removes a member.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemberRemoveRequest {
        /// Member to remove.
        #[prost(uint64, tag = "1")]
        pub id: u64,
    }

    /// Result of a [`MemberRemoveRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemberRemoveResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// All members after the change.
        #[prost(message, repeated, tag = "2")]
        pub members: Vec<Member>,
    }

    /// Changes a member's peer URLs.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemberUpdateRequest {
        /// Member to update.
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// New peer URLs.
        #[prost(string, repeated, tag = "2")]
        pub peer_urls: Vec<String>,
    }

    /// Result of a [`MemberUpdateRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemberUpdateResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// All members after the change.
        #[prost(message, repeated, tag = "2")]
        pub members: Vec<Member>,
    }

    /// Lists the members.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemberListRequest {
        /// Read the list through consensus rather than locally.
        #[prost(bool, tag = "1")]
        pub linearizable: bool,
    }

    /// Result of a [`MemberListRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemberListResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// All members.
        #[prost(message, repeated, tag = "2")]
        pub members: Vec<Member>,
    }

    /// Turns a learner into a voting member.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemberPromoteRequest {
        /// Learner to promote.
        #[prost(uint64, tag = "1")]
        pub id: u64,
    }

    /// Result of a [`MemberPromoteRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemberPromoteResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// All members after the change.
        #[prost(message, repeated, tag = "2")]
        pub members: Vec<Member>,
    }

    // ---------------------------------------------------------------- Maintenance

    /// Asks a member to defragment its store.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DefragmentRequest {}

    /// The store was defragmented.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DefragmentResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// Asks the leader to hand leadership to another voter.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MoveLeaderRequest {
        /// The member to lead.
        #[prost(uint64, tag = "1")]
        pub target_id: u64,
    }

    /// Leadership moved.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MoveLeaderResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// Asks a member for its status.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusRequest {}

    /// Status of the responding member.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// Server version string.
        #[prost(string, tag = "2")]
        pub version: String,
        /// Physically allocated database size in bytes.
        #[prost(int64, tag = "3")]
        pub db_size: i64,
        /// Id of the member believed to be leader.
        #[prost(uint64, tag = "4")]
        pub leader: u64,
        /// Committed raft index.
        #[prost(uint64, tag = "5")]
        pub raft_index: u64,
        /// Current raft term.
        #[prost(uint64, tag = "6")]
        pub raft_term: u64,
        /// Applied raft index.
        #[prost(uint64, tag = "7")]
        pub raft_applied_index: u64,
        /// Active alarms and health problems.
        #[prost(string, repeated, tag = "8")]
        pub errors: Vec<String>,
        /// Logically used database size in bytes.
        #[prost(int64, tag = "9")]
        pub db_size_in_use: i64,
        /// True when the member is a learner.
        #[prost(bool, tag = "10")]
        pub is_learner: bool,
        /// Version of the on-disk data format.
        #[prost(string, tag = "11")]
        pub storage_version: String,
        /// Configured storage quota in bytes.
        #[prost(int64, tag = "12")]
        pub db_size_quota: i64,
        /// Downgrade state of the cluster.
        #[prost(message, optional, tag = "13")]
        pub downgrade_info: Option<DowngradeInfo>,
    }

    /// Cluster downgrade state, reported in [`StatusResponse`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DowngradeInfo {
        /// True while a downgrade is enabled.
        #[prost(bool, tag = "1")]
        pub enabled: bool,
        /// Version being downgraded to.
        #[prost(string, tag = "2")]
        pub target_version: String,
    }

    /// Hashes the MVCC key space up to a revision.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HashKvRequest {
        /// Revision to hash up to; 0 means the latest.
        #[prost(int64, tag = "1")]
        pub revision: i64,
    }

    /// Result of a [`HashKvRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HashKvResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// The hash value.
        #[prost(uint32, tag = "2")]
        pub hash: u32,
        /// Compaction revision when hashing started.
        #[prost(int64, tag = "3")]
        pub compact_revision: i64,
        /// Revision the hash covers.
        #[prost(int64, tag = "4")]
        pub hash_revision: i64,
    }

    /// Hashes the whole backend.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HashRequest {}

    /// Result of a [`HashRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HashResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// The hash value.
        #[prost(uint32, tag = "2")]
        pub hash: u32,
    }

    /// Kinds of cluster alarm.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum AlarmType {
        /// No alarm; used to query all alarms.
        None = 0,
        /// Storage quota exhausted.
        Nospace = 1,
        /// Data corruption detected.
        Corrupt = 2,
    }

    /// Queries, raises or clears alarms.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AlarmRequest {
        /// What to do.
        #[prost(enumeration = "alarm_request::AlarmAction", tag = "1")]
        pub action: i32,
        /// Member concerned; 0 means all members.
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
        /// Alarm concerned.
        #[prost(enumeration = "AlarmType", tag = "3")]
        pub alarm: i32,
    }

    /// Types nested in [`AlarmRequest`].
    pub mod alarm_request {
        /// Alarm operations.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
        #[repr(i32)]
        pub enum AlarmAction {
            /// List alarms.
            Get = 0,
            /// Raise an alarm.
            Activate = 1,
            /// Clear an alarm.
            Deactivate = 2,
        }
    }

    /// An alarm raised on one member.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AlarmMember {
        /// Member that raised the alarm.
        #[prost(uint64, tag = "1")]
        pub member_id: u64,
        /// The raised alarm.
        #[prost(enumeration = "AlarmType", tag = "2")]
        pub alarm: i32,
    }

    /// Result of an [`AlarmRequest`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AlarmResponse {
        /// Response metadata.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// Alarms matching the request.
        #[prost(message, repeated, tag = "2")]
        pub alarms: Vec<AlarmMember>,
    }

    // The Auth service's messages (etcd's `rpc.proto`, Auth* messages).

    /// Turns authentication on.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthEnableRequest {}

    /// Authentication is on.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthEnableResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// Turns authentication off.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthDisableRequest {}

    /// Authentication is off.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthDisableResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// Asks whether authentication is on.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthStatusRequest {}

    /// Whether authentication is on, and the auth store's revision.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthStatusResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(bool, tag = "2")]
        pub enabled: bool,
        #[prost(uint64, tag = "3")]
        pub auth_revision: u64,
    }

    /// A user's name and password, for a token.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthenticateRequest {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub password: String,
    }

    /// A token for the user.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthenticateResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(string, tag = "2")]
        pub token: String,
    }

    /// Adds a user.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthUserAddRequest {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub password: String,
        #[prost(message, optional, tag = "3")]
        pub options: Option<super::authpb::UserAddOptions>,
        #[prost(string, tag = "4")]
        pub hashed_password: String,
    }

    /// The user was added.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthUserAddResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// Asks a user's roles.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthUserGetRequest {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    /// A user's roles.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthUserGetResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(string, repeated, tag = "2")]
        pub roles: Vec<String>,
    }

    /// Deletes a user.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthUserDeleteRequest {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    /// The user was deleted.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthUserDeleteResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// Changes a user's password.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthUserChangePasswordRequest {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub password: String,
        #[prost(string, tag = "3")]
        pub hashed_password: String,
    }

    /// The password was changed.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthUserChangePasswordResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// Gives a user a role.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthUserGrantRoleRequest {
        #[prost(string, tag = "1")]
        pub user: String,
        #[prost(string, tag = "2")]
        pub role: String,
    }

    /// The role was given.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthUserGrantRoleResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// Takes a role from a user.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthUserRevokeRoleRequest {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub role: String,
    }

    /// The role was taken.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthUserRevokeRoleResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// Adds a role.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthRoleAddRequest {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    /// The role was added.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthRoleAddResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// Asks a role's permissions.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthRoleGetRequest {
        #[prost(string, tag = "1")]
        pub role: String,
    }

    /// A role's permissions.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthRoleGetResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(message, repeated, tag = "2")]
        pub perm: Vec<super::authpb::Permission>,
    }

    /// Asks every user's name.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthUserListRequest {}

    /// Every user's name.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthUserListResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(string, repeated, tag = "2")]
        pub users: Vec<String>,
    }

    /// Asks every role's name.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthRoleListRequest {}

    /// Every role's name.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthRoleListResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(string, repeated, tag = "2")]
        pub roles: Vec<String>,
    }

    /// Deletes a role.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthRoleDeleteRequest {
        #[prost(string, tag = "1")]
        pub role: String,
    }

    /// The role was deleted.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthRoleDeleteResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// Gives a role a permission.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthRoleGrantPermissionRequest {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub perm: Option<super::authpb::Permission>,
    }

    /// The permission was given.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthRoleGrantPermissionResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// Takes a permission from a role.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthRoleRevokePermissionRequest {
        #[prost(string, tag = "1")]
        pub role: String,
        #[prost(bytes = "vec", tag = "2")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub range_end: Vec<u8>,
    }

    /// The permission was taken.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthRoleRevokePermissionResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }
}

/// Users' and roles' records (protobuf package `authpb`).
#[allow(missing_docs)]
pub mod authpb {
    /// Options of a new user.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UserAddOptions {
        /// The user has no password (only a client certificate names it).
        #[prost(bool, tag = "1")]
        pub no_password: bool,
    }

    /// A permission on a key or a range of keys.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Permission {
        /// What it allows; see [`permission::Type`].
        #[prost(enumeration = "permission::Type", tag = "1")]
        pub perm_type: i32,
        /// The first key.
        #[prost(bytes = "vec", tag = "2")]
        pub key: Vec<u8>,
        /// The end of the range (empty: the key alone; `[0]`: every key from it on).
        #[prost(bytes = "vec", tag = "3")]
        pub range_end: Vec<u8>,
    }

    /// Types nested in [`Permission`].
    pub mod permission {
        /// What a permission allows.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
        #[repr(i32)]
        pub enum Type {
            /// Reading.
            Read = 0,
            /// Writing.
            Write = 1,
            /// Both.
            Readwrite = 2,
        }
    }
}
