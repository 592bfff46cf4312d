//! Plain HTTP on the etcd port, beside gRPC, as etcd serves it: `/health`, `/livez`,
//! `/readyz`, `/version` and `/metrics`, over HTTP/1.1 or HTTP/2, so that load balancers,
//! high-availability tools and `etcdctl check datascale` find what they look for.

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
