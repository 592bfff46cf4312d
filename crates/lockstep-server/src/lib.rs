//! # lockstep-server: any state machine, replicated over TCP
//!
//! This crate runs one replica of a user's [`lockstep_core::StateMachine`] as a network
//! service: the node driver from `lockstep-node`, unchanged, on its own thread; the log
//! written with group commit on a log thread; peers over TCP with a separate stream for state
//! transfer; and the native client protocol from `lockstep-wire`, which `lockstep-client`
//! speaks. The service needs no RPC code from the user: the state machine's input, output and
//! query types travel as they are.
//!
//! ```no_run
//! # async fn run<M>(machine: M) -> Result<(), String>
//! # where M: lockstep_core::StateMachine + Send + 'static, M::Input: Send, M::Query: Send,
//! #       M::Output: Send + serde::Serialize {
//! use lockstep_server::{BoundServer, Member, ServerConfig};
//! let members = vec![
//!     Member { id: 1, peer: "127.0.0.1:7101".into(), client: "127.0.0.1:7201".into(), etcd: None },
//! ];
//! let config = ServerConfig::new(1, 42, "data/1".into(), members);
//! let server = BoundServer::bind(config).await?;
//! server.run(machine, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! Modules: [`config`] (TOML and checks), [`identity`] (which cluster owns a data directory),
//! [`storage`] (the log thread), [`replica`] (the replica thread), [`transport`] (peers),
//! [`clients`] (the client protocol), [`metrics`] (Prometheus), [`server`] (starting and
//! stopping).

#![deny(missing_docs)]

pub mod clients;
pub mod config;
pub mod hosted;
pub mod identity;
pub mod metrics;
pub mod replica;
pub mod server;
pub mod storage;
pub mod tls;
pub mod transport;

pub use config::{ConfigError, Member, RepairSetting, Sabotage, ServerConfig};
pub use server::{BoundServer, Inbox, LocalLink};
pub use tls::Security;
