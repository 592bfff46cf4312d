//! Prometheus metrics at `/metrics`.
//!
//! The server records with the `metrics` facade where things happen (proposals and answers
//! on the replica thread, syncs and their batch sizes on the log thread, bytes and messages
//! on the peer connections); the Prometheus recorder renders them. The endpoint is a minimal
//! HTTP/1.1 responder: `GET /metrics` is answered, anything else gets 404, and a request that
//! is not HTTP closes the connection.
//!
//! Metrics: `lockstep_proposals_total`, `lockstep_answered_total`, `lockstep_refused_total`,
//! `lockstep_reads_total{consistency}`, `lockstep_sync_seconds` (fsync latency histogram),
//! `lockstep_sync_batch_writes` (writes per fsync), `lockstep_event_batch` (events per turn
//! of the replica thread), `lockstep_turn_seconds` (how long each turn took),
//! `lockstep_apply_backlog_entries` (committed entries waiting to be applied),
//! `lockstep_is_leader`, `lockstep_term`, `lockstep_commit_index`,
//! `lockstep_applied_index`, `lockstep_last_index`, `lockstep_elections_started_total`,
//! `lockstep_terms_led_total`, `lockstep_messages_rejected_total`,
//! `lockstep_bytes_in_flight` (appends sent to followers and not yet acknowledged),
//! `lockstep_peer_messages_{sent,received,dropped}_total`, `lockstep_peer_bytes_sent_total`,
//! `lockstep_connections_total{port}`, `lockstep_connections_refused_total{port}`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder for this process (once); returns its handle.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0,
            ];
            let counts = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), &seconds)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Suffix("_writes".to_string()), &counts)
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Suffix("_batch".to_string()), &counts)
                });
            match builder.and_then(|builder| builder.install_recorder()) {
                Ok(handle) => Some(handle),
                Err(error) => {
                    tracing::warn!("metrics are off: {error}");
                    None
                }
            }
        })
        .clone()
}

/// Serves `/metrics` on `listener` until shut down.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<std::sync::Arc<lockstep_tls::Reloading<lockstep_tls::rustls::ServerConfig>>>,
    max_connections: usize,
) {
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!(
                "lockstep_connections_refused_total",
                "port" => "metrics",
                "reason" => "limit"
            )
            .increment(1);
            continue;
        };
        let handle = handle.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match crate::tls::accept(stream, tls.as_deref()).await {
                Ok(stream) => stream,
                Err(reason) => {
                    tracing::debug!("closed a metrics connection: {reason}");
                    return;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &handle)).await;
        });
    }
}

async fn answer(mut stream: lockstep_tls::Conn, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        let count = stream.read(&mut buffer).await?;
        if count == 0 || request.len() > 8192 {
            return Ok(());
        }
        request.extend_from_slice(&buffer[..count]);
    }
    let head = String::from_utf8_lossy(&request);
    let line = head.lines().next().unwrap_or_default();
    let (status, body) = if line.starts_with("GET /metrics ") || line == "GET /metrics" {
        ("200 OK", handle.render())
    } else {
        ("404 Not Found", "only /metrics is served here\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
