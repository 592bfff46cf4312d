//! # lockstep-etcd: etcd's v3 API over lockstep
//!
//! A gateway that serves etcd's v3 gRPC API (KV, Watch, Lease, Maintenance, Cluster, Auth) from
//! lockstep's replicated key-value store, so `etcdctl` and etcd client libraries work
//! unchanged. [`gateway`] holds KV, Maintenance and Cluster; [`streams`] Lease and Watch; `auth`
//! users, roles and who makes each request;
//! [`proto`] the messages, defined by hand with field numbers matching etcd's.

#![deny(missing_docs)]

pub mod proto;

/// The gRPC service glue, generated at build time from Rust descriptions (see `build.rs`).
#[allow(missing_docs, clippy::all)]
pub mod rpc {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.KV.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.Cluster.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.Maintenance.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.Watch.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.Lease.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.Auth.rs"));
}

mod auth;
mod budget;
pub mod gateway;
pub mod http;
mod idle;
mod lessor;
pub mod streams;

pub use gateway::{Gateway, GatewayConfig, GatewayMember, GatewayTls, LocalReplica, TokenConfig};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use lockstep_tls::{rustls, Conn, Reloading};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// Serves etcd's API on `listener` with `gateway` until `shutdown` completes; in TLS with
/// `tls` (offering HTTP/2 by ALPN; re-read when its files change).
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
    tls: Option<Arc<Reloading<rustls::ServerConfig>>>,
    limits: EtcdLimits,
    metrics: Option<http::RenderMetrics>,
) -> Result<(), String> {
    gateway.start_refreshing();
    gateway.start_reaping();
    gateway.start_quota_watch();
    gateway.start_corruption_watch();
    let limit = gateway::GRPC_DECODE_MAX;
    let grpc = tonic::service::Routes::new(
        rpc::k_v_server::KVServer::new(gateway.clone()).max_decoding_message_size(limit),
    )
    .add_service(
        rpc::maintenance_server::MaintenanceServer::new(gateway.clone())
            .max_decoding_message_size(limit),
    )
    .add_service(
        rpc::cluster_server::ClusterServer::new(gateway.clone()).max_decoding_message_size(limit),
    )
    .add_service(
        rpc::lease_server::LeaseServer::new(gateway.clone()).max_decoding_message_size(limit),
    )
    .add_service(
        rpc::auth_server::AuthServer::new(gateway.clone()).max_decoding_message_size(limit),
    )
    .add_service(
        rpc::watch_server::WatchServer::new(gateway.clone()).max_decoding_message_size(limit),
    );
    // The plain HTTP paths beside the gRPC services (tonic's router is axum's).
    let routes =
        grpc.into_axum_router().merge(http::routes(gateway, metrics)).fallback(http::not_found);
    tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .layer(budget::HoldLayer)
        .add_routes(tonic::service::Routes::from(routes))
        .serve_with_incoming_shutdown(incoming(listener, tls, limits), shutdown)
        .await
        .map_err(|error| format!("the etcd API server failed: {error}"))
}

/// What the etcd port admits.
#[derive(Clone, Copy, Debug)]
pub struct EtcdLimits {
    /// Connections open at once; one more is closed at once (and counted).
    pub max_connections: usize,
    /// gRPC streams (requests, watches, keep-alive streams) open at once on one connection.
    pub max_concurrent_streams: u32,
    /// A connection with no stream open that moves no byte this long is closed (zero: never).
    pub idle_timeout: std::time::Duration,
}

/// A connection to the etcd port, after its TLS handshake if the port has TLS; it holds its
/// place among the port's connections until it is dropped.
struct Accepted {
    conn: Conn,
    _place: tokio::sync::OwnedSemaphorePermit,
    activity: Arc<idle::Activity>,
    idle_timeout: std::time::Duration,
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Who is at the other end of an etcd connection.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// Its address.
    pub address: Option<std::net::SocketAddr>,
    /// The common name of its client certificate, if it presented one: the user it names
    /// when a request carries no token (as etcd's `--client-cert-auth`).
    pub common_name: Option<String>,
    /// What the connection has been doing (its open streams keep it from being idle).
    pub(crate) activity: Option<Arc<idle::Activity>>,
}

impl Connected for Accepted {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Self::ConnectInfo {
        Peer {
            address: self.conn.tcp().peer_addr().ok(),
            common_name: self.conn.peer_certificate().and_then(lockstep_tls::common_name),
            activity: Some(self.activity.clone()),
        }
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if let Poll::Ready(outcome) = Pin::new(&mut this.conn).poll_read(cx, buf) {
            idle::moved(&this.activity, buf.filled().len() - before);
            return Poll::Ready(outcome);
        }
        match idle::poll_idle(&this.activity, this.idle_timeout, &mut this.idle_timer, cx) {
            Some(error) => Poll::Ready(Err(error)),
            None => Poll::Pending,
        }
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.conn).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &outcome {
            idle::moved(&this.activity, *written);
        }
        outcome
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.conn).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = &outcome {
            idle::moved(&this.activity, *written);
        }
        outcome
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_shutdown(cx)
    }
}

/// The etcd port's connections: each accepted and (with `tls`) put through its handshake on a
/// task of its own, so that a slow or refused handshake holds up no other connection. A
/// connection refused (plaintext on a TLS port, a TLS hello on a plaintext one, a certificate
/// that does not verify) is logged and counted.
fn incoming(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<Reloading<rustls::ServerConfig>>>,
    limits: EtcdLimits,
) -> ReceiverStream<std::io::Result<Accepted>> {
    let max_connections = limits.max_connections;
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = sender.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, address) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!("accepting an etcd connection failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = open.clone().try_acquire_owned() else {
                metrics::counter!(
                    "lockstep_connections_refused_total",
                    "port" => "etcd",
                    "reason" => "limit"
                )
                .increment(1);
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let sender = sender.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match lockstep_tls::accept(tcp, tls.as_deref()).await {
                    Ok(conn) => {
                        let accepted = Accepted {
                            conn,
                            _place: permit,
                            activity: idle::Activity::new(),
                            idle_timeout: limits.idle_timeout,
                            idle_timer: None,
                        };
                        let _ = sender.send(Ok(accepted)).await;
                    }
                    Err(reason) => {
                        metrics::counter!("lockstep_connections_refused_total", "port" => "etcd")
                            .increment(1);
                        tracing::warn!(%address, "closed an etcd connection: {reason}");
                    }
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}
