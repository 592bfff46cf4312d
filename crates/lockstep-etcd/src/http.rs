//! Plain HTTP on the etcd port, beside gRPC, as etcd serves it: `/health`, `/livez`,
//! `/readyz`, `/version` and `/metrics`, over HTTP/1.1 or HTTP/2, so that load balancers,
//! high-availability tools and `etcdctl check datascale` find what they look for; and part
//! of etcd's JSON gateway (see [`json_gateway`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use lockstep_kv::{self as kv, Request};

use crate::gateway::{Gateway, API_VERSION};

/// Renders the process's metrics in Prometheus's text format.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// How long a health check's read may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The HTTP paths, to serve beside the gRPC services.
pub(crate) fn routes(gateway: Gateway, metrics: Option<RenderMetrics>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/readyz", get(readyz))
        .route("/livez", get(|| async { "ok" }))
        .route("/version", get(version))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    match metrics {
                        Some(render) => (
                            StatusCode::OK,
                            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                            render(),
                        )
                            .into_response(),
                        None => (StatusCode::NOT_FOUND, "metrics are off\n").into_response(),
                    }
                }
            }),
        )
        .merge(json_gateway())
        .with_state(gateway)
}

/// What a path no route takes gets: a gRPC call, gRPC's `Unimplemented` (as tonic answers
/// one); anything else, 404.
pub(crate) async fn not_found(headers: axum::http::HeaderMap) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    if grpc {
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/grpc"), (GRPC_STATUS, "12")])
            .into_response()
    } else {
        (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
    }
}

const GRPC_STATUS: header::HeaderName = header::HeaderName::from_static("grpc-status");

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// As etcd's: healthy when no alarm is raised and a linearizable read is answered (a leader
/// serves, with a quorum behind it); otherwise 503 and why.
async fn health(State(gateway): State<Gateway>) -> Response {
    match check(&gateway, false).await {
        Ok(()) => json(StatusCode::OK, r#"{"health":"true","reason":""}"#.to_string()),
        Err(reason) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "health": "false", "reason": reason }).to_string(),
        ),
    }
}

/// Ready when this member knows a leader and answers reads from its own state.
async fn readyz(State(gateway): State<Gateway>) -> Response {
    match check(&gateway, true).await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

async fn check(gateway: &Gateway, ready_only: bool) -> Result<(), String> {
    if !ready_only {
        let alarms = tokio::time::timeout(
            CHECK_TIMEOUT,
            gateway.read(Request::Alarm(kv::AlarmRequest::default()), true),
        )
        .await
        .map_err(|_| "the alarms could not be read in time".to_string())?
        .map_err(|status| format!("the alarms could not be read: {}", status.message()))?;
        if let kv::Response::Alarms(listed) = alarms.response {
            if let Some(alarm) = listed.alarms.first() {
                let name = match alarm.alarm {
                    kv::AlarmKind::NoSpace => "NOSPACE",
                    kv::AlarmKind::Corrupt => "CORRUPT",
                };
                return Err(format!("ALARM {name}"));
            }
        }
    }
    let leader = gateway.leader().await.map_err(|status| status.message().to_string())?;
    if leader.is_none() {
        return Err("RAFT NO LEADER".to_string());
    }
    let serializable = ready_only;
    tokio::time::timeout(CHECK_TIMEOUT, gateway.read(Request::Revisions, serializable))
        .await
        .map_err(|_| "a read was not answered in time".to_string())?
        .map_err(|status| format!("a read failed: {}", status.message()))?;
    Ok(())
}

/// The etcd version this API answers as (as `Status.version`).
async fn version() -> Response {
    json(
        StatusCode::OK,
        serde_json::json!({ "etcdserver": API_VERSION, "etcdcluster": API_VERSION }).to_string(),
    )
}

// ------------------------------------------------------------------ etcd's JSON gateway

/// A JSON request body over this is refused (etcd's request limit, with room for base64).
const JSON_BODY_MAX: usize = 4 << 20;

/// etcd's JSON gateway (grpc-gateway's mapping): a POST of the request as JSON (fields by
/// their proto names or in camelCase, bytes in base64, 64-bit integers as numbers or strings)
/// to `/v3/<service>/<method>`, answered with the response as JSON (proto names, bytes in
/// base64, 64-bit integers as strings, fields at their default left out); the token, if any,
/// in the `Authorization` header. Served: `kv/range`, `kv/put`, `kv/deleterange`, `kv/txn`,
/// `kv/compaction`, `maintenance/status`, `lease/grant`, `lease/revoke`, `lease/timetolive`,
/// `lease/leases` (also under `kv/lease/`, as etcd 3.4 has them), `auth/authenticate`.
pub(crate) fn json_gateway() -> Router<Gateway> {
    use axum::routing::post;
    Router::new()
        .route("/v3/kv/range", post(kv_range))
        .route("/v3/kv/put", post(kv_put))
        .route("/v3/kv/deleterange", post(kv_delete_range))
        .route("/v3/kv/txn", post(kv_txn))
        .route("/v3/kv/compaction", post(kv_compaction))
        .route("/v3/maintenance/status", post(maintenance_status))
        .route("/v3/lease/grant", post(lease_grant))
        .route("/v3/lease/revoke", post(lease_revoke))
        .route("/v3/kv/lease/revoke", post(lease_revoke))
        .route("/v3/lease/timetolive", post(lease_time_to_live))
        .route("/v3/kv/lease/timetolive", post(lease_time_to_live))
        .route("/v3/lease/leases", post(lease_leases))
        .route("/v3/kv/lease/leases", post(lease_leases))
        .route("/v3/auth/authenticate", post(authenticate))
}

type Json = serde_json::Value;

/// The request's body as JSON (empty: `{}`), and its parts as a gRPC request of `make`'s
/// message would have them (metadata from the headers, the connection's extensions).
async fn json_request<T>(
    request: axum::extract::Request,
    make: impl FnOnce(&Json) -> Result<T, String>,
) -> Result<tonic::Request<T>, Response> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, JSON_BODY_MAX).await.map_err(|error| {
        gateway_error(&tonic::Status::invalid_argument(format!("the body: {error}")))
    })?;
    let json: Json = if bytes.iter().all(u8::is_ascii_whitespace) {
        Json::Object(Default::default())
    } else {
        serde_json::from_slice(&bytes).map_err(|error| {
            gateway_error(&tonic::Status::invalid_argument(format!("not JSON: {error}")))
        })?
    };
    let message =
        make(&json).map_err(|error| gateway_error(&tonic::Status::invalid_argument(error)))?;
    Ok(tonic::Request::from_http(http::Request::from_parts(parts, message)))
}

/// A field by its proto name or its camelCase one.
fn field<'a>(json: &'a Json, name: &str) -> Option<&'a Json> {
    json.get(name).or_else(|| {
        let mut camel = String::with_capacity(name.len());
        let mut upper = false;
        for c in name.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                camel.extend(c.to_uppercase());
                upper = false;
            } else {
                camel.push(c);
            }
        }
        json.get(&camel)
    })
}

fn bytes_field(json: &Json, name: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    match field(json, name) {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::String(text)) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|error| format!("{name}: not base64: {error}")),
        Some(other) => Err(format!("{name}: base64 text expected, not {other}")),
    }
}

fn int_field(json: &Json, name: &str) -> Result<i64, String> {
    match field(json, name) {
        None | Some(Json::Null) => Ok(0),
        Some(Json::Number(number)) => {
            number.as_i64().ok_or_else(|| format!("{name}: not a 64-bit integer"))
        }
        Some(Json::String(text)) => {
            text.parse().map_err(|_| format!("{name}: not a 64-bit integer: {text:?}"))
        }
        Some(other) => Err(format!("{name}: an integer expected, not {other}")),
    }
}

fn bool_field(json: &Json, name: &str) -> Result<bool, String> {
    match field(json, name) {
        None | Some(Json::Null) => Ok(false),
        Some(Json::Bool(value)) => Ok(*value),
        Some(other) => Err(format!("{name}: true or false expected, not {other}")),
    }
}

/// An enum field by its name or its number.
fn enum_field(json: &Json, name: &str, names: &[&str]) -> Result<i32, String> {
    match field(json, name) {
        None | Some(Json::Null) => Ok(0),
        Some(Json::String(text)) => names
            .iter()
            .position(|known| known == text)
            .map(|index| index as i32)
            .ok_or_else(|| format!("{name}: one of {names:?} expected, not {text:?}")),
        Some(Json::Number(number)) => number
            .as_i64()
            .and_then(|value| i32::try_from(value).ok())
            .ok_or_else(|| format!("{name}: not an enum value")),
        Some(other) => Err(format!("{name}: an enum expected, not {other}")),
    }
}

/// Puts what is not at its default into `object`, as grpc-gateway leaves defaults out.
struct Out(serde_json::Map<String, Json>);

impl Out {
    fn new() -> Out {
        Out(serde_json::Map::new())
    }
    fn int(mut self, name: &str, value: i64) -> Out {
        if value != 0 {
            self.0.insert(name.into(), Json::String(value.to_string()));
        }
        self
    }
    fn uint(mut self, name: &str, value: u64) -> Out {
        if value != 0 {
            self.0.insert(name.into(), Json::String(value.to_string()));
        }
        self
    }
    fn bytes(mut self, name: &str, value: &[u8]) -> Out {
        use base64::Engine;
        if !value.is_empty() {
            let text = base64::engine::general_purpose::STANDARD.encode(value);
            self.0.insert(name.into(), Json::String(text));
        }
        self
    }
    fn flag(mut self, name: &str, value: bool) -> Out {
        if value {
            self.0.insert(name.into(), Json::Bool(true));
        }
        self
    }
    fn text(mut self, name: &str, value: &str) -> Out {
        if !value.is_empty() {
            self.0.insert(name.into(), Json::String(value.to_string()));
        }
        self
    }
    fn value(mut self, name: &str, value: Option<Json>) -> Out {
        if let Some(value) = value {
            self.0.insert(name.into(), value);
        }
        self
    }
    fn list(mut self, name: &str, values: Vec<Json>) -> Out {
        if !values.is_empty() {
            self.0.insert(name.into(), Json::Array(values));
        }
        self
    }
    fn done(self) -> Json {
        Json::Object(self.0)
    }
}

fn header_out(header: Option<&crate::proto::etcdserverpb::ResponseHeader>) -> Option<Json> {
    header.map(|header| {
        Out::new()
            .uint("cluster_id", header.cluster_id)
            .uint("member_id", header.member_id)
            .int("revision", header.revision)
            .uint("raft_term", header.raft_term)
            .done()
    })
}

fn kv_out(kv: &crate::proto::mvccpb::KeyValue) -> Json {
    Out::new()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision)
        .int("mod_revision", kv.mod_revision)
        .int("version", kv.version)
        .bytes("value", &kv.value)
        .int("lease", kv.lease)
        .done()
}

/// A gRPC failure as grpc-gateway answers it: the HTTP status for its code, and
/// `{"error", "code", "message"}`.
fn gateway_error(status: &tonic::Status) -> Response {
    use tonic::Code;
    let http = match status.code() {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = serde_json::json!({
        "error": status.message(),
        "code": status.code() as i32,
        "message": status.message(),
    });
    json(http, body.to_string())
}

fn answer<T>(
    outcome: Result<tonic::Response<T>, tonic::Status>,
    out: impl Fn(&T) -> Json,
) -> Response {
    match outcome {
        Ok(response) => json(StatusCode::OK, out(response.get_ref()).to_string()),
        Err(status) => gateway_error(&status),
    }
}

async fn kv_range(State(gateway): State<Gateway>, request: axum::extract::Request) -> Response {
    use crate::rpc::k_v_server::KV;
    let request = match json_request(request, range_in).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    answer(gateway.range(request).await, range_out)
}

fn range_in(json: &Json) -> Result<crate::proto::etcdserverpb::RangeRequest, String> {
    Ok(crate::proto::etcdserverpb::RangeRequest {
        key: bytes_field(json, "key")?,
        range_end: bytes_field(json, "range_end")?,
        limit: int_field(json, "limit")?,
        revision: int_field(json, "revision")?,
        sort_order: enum_field(json, "sort_order", &["NONE", "ASCEND", "DESCEND"])?,
        sort_target: enum_field(
            json,
            "sort_target",
            &["KEY", "VERSION", "CREATE", "MOD", "VALUE"],
        )?,
        serializable: bool_field(json, "serializable")?,
        keys_only: bool_field(json, "keys_only")?,
        count_only: bool_field(json, "count_only")?,
        min_mod_revision: int_field(json, "min_mod_revision")?,
        max_mod_revision: int_field(json, "max_mod_revision")?,
        min_create_revision: int_field(json, "min_create_revision")?,
        max_create_revision: int_field(json, "max_create_revision")?,
    })
}

fn range_out(response: &crate::proto::etcdserverpb::RangeResponse) -> Json {
    Out::new()
        .value("header", header_out(response.header.as_ref()))
        .list("kvs", response.kvs.iter().map(kv_out).collect())
        .flag("more", response.more)
        .int("count", response.count)
        .done()
}

async fn kv_put(State(gateway): State<Gateway>, request: axum::extract::Request) -> Response {
    use crate::rpc::k_v_server::KV;
    let request = match json_request(request, put_in).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    answer(gateway.put(request).await, put_out)
}

fn put_in(json: &Json) -> Result<crate::proto::etcdserverpb::PutRequest, String> {
    Ok(crate::proto::etcdserverpb::PutRequest {
        key: bytes_field(json, "key")?,
        value: bytes_field(json, "value")?,
        lease: int_field(json, "lease")?,
        prev_kv: bool_field(json, "prev_kv")?,
        ignore_value: bool_field(json, "ignore_value")?,
        ignore_lease: bool_field(json, "ignore_lease")?,
    })
}

fn put_out(response: &crate::proto::etcdserverpb::PutResponse) -> Json {
    Out::new()
        .value("header", header_out(response.header.as_ref()))
        .value("prev_kv", response.prev_kv.as_ref().map(kv_out))
        .done()
}

async fn kv_delete_range(
    State(gateway): State<Gateway>,
    request: axum::extract::Request,
) -> Response {
    use crate::rpc::k_v_server::KV;
    let request = match json_request(request, delete_in).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    answer(gateway.delete_range(request).await, delete_out)
}

fn delete_in(json: &Json) -> Result<crate::proto::etcdserverpb::DeleteRangeRequest, String> {
    Ok(crate::proto::etcdserverpb::DeleteRangeRequest {
        key: bytes_field(json, "key")?,
        range_end: bytes_field(json, "range_end")?,
        prev_kv: bool_field(json, "prev_kv")?,
    })
}

fn delete_out(response: &crate::proto::etcdserverpb::DeleteRangeResponse) -> Json {
    Out::new()
        .value("header", header_out(response.header.as_ref()))
        .int("deleted", response.deleted)
        .list("prev_kvs", response.prev_kvs.iter().map(kv_out).collect())
        .done()
}

/// Transactions nested deeper than this are refused (etcd's own limit is the gRPC decoder's).
const TXN_DEPTH_MAX: usize = 16;

fn txn_in(json: &Json) -> Result<crate::proto::etcdserverpb::TxnRequest, String> {
    txn_in_at(json, 0)
}

fn txn_in_at(json: &Json, depth: usize) -> Result<crate::proto::etcdserverpb::TxnRequest, String> {
    use crate::proto::etcdserverpb as pb;
    use pb::compare::TargetUnion;
    use pb::request_op::Request as Op;
    if depth > TXN_DEPTH_MAX {
        return Err(format!("transactions nested more than {TXN_DEPTH_MAX} deep"));
    }
    let list = |name: &str| match field(json, name) {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => Ok(items.clone()),
        Some(other) => Err(format!("{name}: a list expected, not {other}")),
    };
    let compare = list("compare")?
        .iter()
        .map(|item| {
            let target =
                enum_field(item, "target", &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"])?;
            let union = if field(item, "version").is_some() {
                Some(TargetUnion::Version(int_field(item, "version")?))
            } else if field(item, "create_revision").is_some() {
                Some(TargetUnion::CreateRevision(int_field(item, "create_revision")?))
            } else if field(item, "mod_revision").is_some() {
                Some(TargetUnion::ModRevision(int_field(item, "mod_revision")?))
            } else if field(item, "value").is_some() {
                Some(TargetUnion::Value(bytes_field(item, "value")?))
            } else if field(item, "lease").is_some() {
                Some(TargetUnion::Lease(int_field(item, "lease")?))
            } else {
                None
            };
            Ok(pb::Compare {
                result: enum_field(item, "result", &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"])?,
                target,
                key: bytes_field(item, "key")?,
                target_union: union,
                range_end: bytes_field(item, "range_end")?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let ops = |name: &str| {
        list(name)?
            .iter()
            .map(|item| {
                let request = if let Some(range) = field(item, "request_range") {
                    Some(Op::RequestRange(range_in(range)?))
                } else if let Some(put) = field(item, "request_put") {
                    Some(Op::RequestPut(put_in(put)?))
                } else if let Some(delete) = field(item, "request_delete_range") {
                    Some(Op::RequestDeleteRange(delete_in(delete)?))
                } else if let Some(txn) = field(item, "request_txn") {
                    Some(Op::RequestTxn(txn_in_at(txn, depth + 1)?))
                } else {
                    None
                };
                Ok(pb::RequestOp { request })
            })
            .collect::<Result<Vec<_>, String>>()
    };
    Ok(pb::TxnRequest { compare, success: ops("success")?, failure: ops("failure")? })
}

fn txn_out(response: &crate::proto::etcdserverpb::TxnResponse) -> Json {
    use crate::proto::etcdserverpb::response_op::Response as Op;
    let responses = response
        .responses
        .iter()
        .map(|op| match &op.response {
            Some(Op::ResponseRange(range)) => {
                Out::new().value("response_range", Some(range_out(range)))
            }
            Some(Op::ResponsePut(put)) => Out::new().value("response_put", Some(put_out(put))),
            Some(Op::ResponseDeleteRange(delete)) => {
                Out::new().value("response_delete_range", Some(delete_out(delete)))
            }
            Some(Op::ResponseTxn(txn)) => Out::new().value("response_txn", Some(txn_out(txn))),
            None => Out::new(),
        })
        .map(Out::done)
        .collect();
    Out::new()
        .value("header", header_out(response.header.as_ref()))
        .flag("succeeded", response.succeeded)
        .list("responses", responses)
        .done()
}

async fn kv_txn(State(gateway): State<Gateway>, request: axum::extract::Request) -> Response {
    use crate::rpc::k_v_server::KV;
    let request = match json_request(request, txn_in).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    answer(gateway.txn(request).await, txn_out)
}

async fn kv_compaction(
    State(gateway): State<Gateway>,
    request: axum::extract::Request,
) -> Response {
    use crate::proto::etcdserverpb as pb;
    use crate::rpc::k_v_server::KV;
    let request = match json_request(request, |json| {
        Ok(pb::CompactionRequest {
            revision: int_field(json, "revision")?,
            physical: bool_field(json, "physical")?,
        })
    })
    .await
    {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    answer(gateway.compact(request).await, |response: &pb::CompactionResponse| {
        Out::new().value("header", header_out(response.header.as_ref())).done()
    })
}

async fn maintenance_status(
    State(gateway): State<Gateway>,
    request: axum::extract::Request,
) -> Response {
    use crate::proto::etcdserverpb as pb;
    use crate::rpc::maintenance_server::Maintenance;
    let request = match json_request(request, |_| Ok(pb::StatusRequest {})).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    answer(gateway.status(request).await, |response: &pb::StatusResponse| {
        Out::new()
            .value("header", header_out(response.header.as_ref()))
            .text("version", &response.version)
            .int("dbSize", response.db_size)
            .uint("leader", response.leader)
            .uint("raftIndex", response.raft_index)
            .uint("raftTerm", response.raft_term)
            .uint("raftAppliedIndex", response.raft_applied_index)
            .list(
                "errors",
                response.errors.iter().map(|error| Json::String(error.clone())).collect(),
            )
            .int("dbSizeInUse", response.db_size_in_use)
            .flag("isLearner", response.is_learner)
            .done()
    })
}

async fn lease_grant(State(gateway): State<Gateway>, request: axum::extract::Request) -> Response {
    use crate::proto::etcdserverpb as pb;
    use crate::rpc::lease_server::Lease;
    let request = match json_request(request, |json| {
        Ok(pb::LeaseGrantRequest { ttl: int_field(json, "TTL")?, id: int_field(json, "ID")? })
    })
    .await
    {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    answer(gateway.lease_grant(request).await, |response: &pb::LeaseGrantResponse| {
        Out::new()
            .value("header", header_out(response.header.as_ref()))
            .int("ID", response.id)
            .int("TTL", response.ttl)
            .text("error", &response.error)
            .done()
    })
}

async fn lease_revoke(State(gateway): State<Gateway>, request: axum::extract::Request) -> Response {
    use crate::proto::etcdserverpb as pb;
    use crate::rpc::lease_server::Lease;
    let request = match json_request(request, |json| {
        Ok(pb::LeaseRevokeRequest { id: int_field(json, "ID")? })
    })
    .await
    {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    answer(gateway.lease_revoke(request).await, |response: &pb::LeaseRevokeResponse| {
        Out::new().value("header", header_out(response.header.as_ref())).done()
    })
}

async fn lease_time_to_live(
    State(gateway): State<Gateway>,
    request: axum::extract::Request,
) -> Response {
    use crate::proto::etcdserverpb as pb;
    use crate::rpc::lease_server::Lease;
    let request = match json_request(request, |json| {
        Ok(pb::LeaseTimeToLiveRequest {
            id: int_field(json, "ID")?,
            keys: bool_field(json, "keys")?,
        })
    })
    .await
    {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    answer(gateway.lease_time_to_live(request).await, |response: &pb::LeaseTimeToLiveResponse| {
        use base64::Engine;
        let keys = response
            .keys
            .iter()
            .map(|key| Json::String(base64::engine::general_purpose::STANDARD.encode(key)))
            .collect();
        Out::new()
            .value("header", header_out(response.header.as_ref()))
            .int("ID", response.id)
            .int("TTL", response.ttl)
            .int("grantedTTL", response.granted_ttl)
            .list("keys", keys)
            .done()
    })
}

async fn lease_leases(State(gateway): State<Gateway>, request: axum::extract::Request) -> Response {
    use crate::proto::etcdserverpb as pb;
    use crate::rpc::lease_server::Lease;
    let request = match json_request(request, |_| Ok(pb::LeaseLeasesRequest {})).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    answer(gateway.lease_leases(request).await, |response: &pb::LeaseLeasesResponse| {
        let leases =
            response.leases.iter().map(|lease| Out::new().int("ID", lease.id).done()).collect();
        Out::new()
            .value("header", header_out(response.header.as_ref()))
            .list("leases", leases)
            .done()
    })
}

async fn authenticate(State(gateway): State<Gateway>, request: axum::extract::Request) -> Response {
    use crate::proto::etcdserverpb as pb;
    use crate::rpc::auth_server::Auth;
    let text = |json: &Json, name: &str| match field(json, name) {
        None | Some(Json::Null) => Ok(String::new()),
        Some(Json::String(text)) => Ok(text.clone()),
        Some(other) => Err(format!("{name}: text expected, not {other}")),
    };
    let request = match json_request(request, |json| {
        Ok(pb::AuthenticateRequest { name: text(json, "name")?, password: text(json, "password")? })
    })
    .await
    {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    answer(gateway.authenticate(request).await, |response: &pb::AuthenticateResponse| {
        Out::new()
            .value("header", header_out(response.header.as_ref()))
            .text("token", &response.token)
            .done()
    })
}
