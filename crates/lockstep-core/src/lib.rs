//! # lockstep-core: Raft as a pure state machine
//!
//! This crate is the consensus protocol of lockstep and nothing else. It does no I/O, reads no
//! clock, starts no thread and draws randomness only from a seed it is given. Inputs go in;
//! one [`Output`] comes out, saying what to write, what to send, what to apply and which reads
//! to serve. The same code therefore runs under a deterministic simulator and under a real
//! runtime, and its tests assert exact outputs.
//!
//! ## A tour
//!
//! A one-replica cluster elects itself, and a proposal commits once the driver reports its own
//! write durable:
//!
//! ```
//! use bytes::Bytes;
//! use lockstep_core::{Config, InitialState, Node, NodeId, Role};
//!
//! let id = NodeId(1);
//! let mut node = Node::new(Config::new(id), InitialState::new_cluster([id])).unwrap();
//!
//! // Time passes in ticks; after an election timeout the replica campaigns and, being the
//! // only voter, wins at once.
//! while node.role() != Role::Leader {
//!     node.tick();
//! }
//!
//! let proposed = node.propose(vec![Bytes::from("x=1")], 0).unwrap();
//!
//! // The driver's loop: take the output, do what it says, report back.
//! let mut applied = Vec::new();
//! for _ in 0..3 {
//!     let output = node.take_output();
//!     // 1. send output.messages (none: there are no peers);
//!     // 2. write output.persist durably, then send output.messages_after_persist;
//!     if let Some(last) = output.persist.entries.last() {
//!         node.persisted(last.index, last.term);
//!     }
//!     // 3. apply the committed entries in order.
//!     for entry in &output.committed {
//!         applied.push(entry.index);
//!         node.applied(entry.index);
//!     }
//! }
//! assert!(applied.contains(&proposed.last_index));
//! ```
//!
//! The mechanisms, each with a page under `docs/`:
//! - [`election`]: timeouts, pre-vote, check-quorum, leadership transfer;
//! - [`replication`]: pipelined appends, fast backtracking, the commit rule;
//! - [`read`]: read-index and lease reads;
//! - [`membership`]: configurations and (joint) quorums;
//! - [`reconfigure`]: membership changes (learners, joint consensus, safe promotion);
//! - [`output`]: the order in which a driver must carry out an output.

#![deny(missing_docs)]

pub mod config;
pub mod election;
pub mod log;
pub mod membership;
pub mod message;
pub mod node;
pub mod output;
pub mod progress;
pub mod read;
pub mod reconfigure;
pub mod replication;
pub mod rng;
pub mod state_machine;
pub mod types;

pub use config::{Config, ReadMode, Sabotage};
pub use membership::Membership;
pub use message::{AuditMessage, InstallSnapshot, InstallSnapshotResponse, Message, MessageBody};
pub use node::{InitialState, Node};
pub use output::{
    Event, Output, Persist, ProposeError, Proposed, ReadError, ReadReady, RejectReason,
    SnapshotAnswer, SnapshotChunk, Stats,
};
pub use reconfigure::{ConfigError, MembershipChange, PROMOTION_HEARD_HEARTBEATS};
pub use state_machine::{ApplyContext, Origin, StateDigest, StateMachine, StateSnapshot};
pub use types::{
    Command, Entry, EntryPayload, HardState, LogIndex, NodeId, ReadId, Role, SnapshotMeta, Term,
};
