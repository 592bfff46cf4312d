//! # lockstep-sim: the deterministic simulator and its checkers
//!
//! This crate will run many replicas of the real node driver through seeded faults. Today it
//! holds the first of its checkers: [`linearizability`], which decides whether a recorded
//! history of key-value operations could have come from one copy of the store, each operation
//! taking effect at one instant between its call and its return.

#![deny(missing_docs)]

pub mod linearizability;
