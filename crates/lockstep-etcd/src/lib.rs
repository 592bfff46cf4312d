//! # lockstep-etcd: etcd's v3 API over lockstep
//!
//! A gateway that serves etcd's v3 gRPC API (KV, Watch, Lease, Maintenance, Cluster) from
//! lockstep's replicated key-value store, so `etcdctl` and etcd client libraries work
//! unchanged. [`gateway`] holds KV, Maintenance and Cluster; [`streams`] Lease and Watch;
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
}

pub mod gateway;
mod lessor;
pub mod streams;

pub use gateway::{Gateway, GatewayConfig, GatewayMember, LocalReplica};

use std::future::Future;

/// Serves etcd's API on `listener` with `gateway` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    gateway.start_refreshing();
    gateway.start_reaping();
    let limit = gateway::GRPC_DECODE_MAX;
    tonic::transport::Server::builder()
        .add_service(
            rpc::k_v_server::KVServer::new(gateway.clone()).max_decoding_message_size(limit),
        )
        .add_service(
            rpc::maintenance_server::MaintenanceServer::new(gateway.clone())
                .max_decoding_message_size(limit),
        )
        .add_service(
            rpc::cluster_server::ClusterServer::new(gateway.clone())
                .max_decoding_message_size(limit),
        )
        .add_service(
            rpc::lease_server::LeaseServer::new(gateway.clone()).max_decoding_message_size(limit),
        )
        .add_service(rpc::watch_server::WatchServer::new(gateway).max_decoding_message_size(limit))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
        .map_err(|error| format!("the etcd API server failed: {error}"))
}
