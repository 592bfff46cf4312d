//! # lockstep-node: the node driver
//!
//! The one driver that runs a replica: it applies the consensus core's outputs to storage, the
//! network and the replicated state machine in the order safety needs, and it carries client
//! sessions so that a retried request is applied once. It is written against small traits so
//! that the same code runs under the deterministic simulator and under tokio.
//!
//! [`driver`] holds the driver and the replicated state (state machine plus sessions);
//! [`sessions`] the session table; [`store`] a replica's log and hard state on a disk, and
//! recovery from them.

#![deny(missing_docs)]

pub mod audit;
pub mod checkpoint;
pub mod driver;
pub mod local;
pub mod sessions;
pub mod store;

pub use audit::{AuditConfig, AuditStats, AuditStatus, DivergenceRecord, PeerAudit, RepairMode};
pub use checkpoint::{Checkpoint, CheckpointPolicy, CheckpointStats, TransferProgress};
pub use driver::{
    Applied, AppliedRecord, Chain, ClientRequest, Completion, Driver, Refusal, Replicated,
    ReplicatedSnapshot, RequestId, Storage, Transport, CHAIN_POINTS_KEPT, CHAIN_POINT_INTERVAL,
};
pub use local::LocalStorage;
pub use sessions::{ClientId, SessionCheck, SessionConfig, Sessions};
pub use store::{write_checkpoint, LogStore, LostNote, StoreError};
