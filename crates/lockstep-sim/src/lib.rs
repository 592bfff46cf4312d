//! # lockstep-sim: the deterministic simulator and its checkers
//!
//! [`sim`] runs a cluster of replicas of the real node driver ([`lockstep_node::Driver`]) over
//! simulated disks ([`lockstep_storage::SimDisk`]) and a simulated network, with clients that
//! use sessions and retry, and a nemesis that partitions, drops, duplicates, delays, crashes
//! and fails disks — all from one seed, so any failure replays exactly.
//!
//! [`checkers`] holds one checker per property (election safety, log matching, leader
//! completeness, state machine safety, durability, exactly-once), and [`linearizability`] the
//! Wing–Gong/Lowe checker for the clients' history. [`kv`] is the key-value state machine the
//! simulation replicates. [`matrix`] runs every combination of the fault modes.
//!
//! ```
//! use lockstep_sim::sim::{run, SimConfig};
//!
//! let report = run(SimConfig { safety_millis: 500, ..SimConfig::new(7) });
//! assert!(report.violations.is_empty(), "{:?}", report.violations);
//! assert_eq!(report.trace_hash, run(SimConfig { safety_millis: 500, ..SimConfig::new(7) }).trace_hash);
//! ```

#![deny(missing_docs)]

pub mod checkers;
pub mod kv;
pub mod linearizability;
pub mod matrix;
pub mod sim;
