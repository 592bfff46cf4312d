//! The simulator's checkers, one file per property. Each is fed what the simulator observes
//! and answers `Err` with a description the moment its property fails.
//!
//! | property | file | what it enforces |
//! |---|---|---|
//! | election safety | [`election_safety`] | at most one leader per term (Raft §5.2, Figure 3) |
//! | log matching | [`log_matching`] | logs that hold an entry with the same index and term are identical up to it (§5.3) |
//! | leader completeness | [`leader_completeness`] | a leader's log holds every entry committed in earlier terms (§5.4) |
//! | state machine safety | [`state_machine_safety`] | every replica applies the same entry at each index and reaches the same state (§5.4.3) |
//! | durability | [`durability`] | every acknowledged write is applied by every replica at the end |
//! | exactly-once | [`exactly_once`] | no session request is applied twice |
//! | auditing | [`audit`] | every injected divergence found within a bound and repaired; no wrong output delivered with verified outputs |
//! | linearizability | [`crate::linearizability`] | the clients' history could come from one copy of the store |

pub mod audit;
pub mod durability;
pub mod election_safety;
pub mod exactly_once;
pub mod leader_completeness;
pub mod log_matching;
pub mod state_machine_safety;

pub use durability::Durability;
pub use election_safety::ElectionSafety;
pub use exactly_once::ExactlyOnce;
pub use leader_completeness::LeaderCompleteness;
pub use log_matching::LogMatching;
pub use state_machine_safety::StateMachineSafety;

/// An entry as checkers compare it: its term and a hash of its whole contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryId {
    /// The entry's term.
    pub term: u64,
    /// A hash of the entry (index, term and payload).
    pub hash: u64,
}
