//! # lockstep-node: the node driver
//!
//! The one driver that runs a replica: it applies the consensus core's outputs to storage, the
//! network and the replicated state machine in the order safety needs, and it carries client
//! sessions so that a retried request is applied once. It is written against small traits so
//! that the same code runs under the deterministic simulator and under tokio.
//!
//! So far this crate holds the client session table ([`sessions`]); the driver itself follows.

#![deny(missing_docs)]

pub mod sessions;

pub use sessions::{ClientId, SessionCheck, SessionConfig, Sessions};
