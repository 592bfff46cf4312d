//! The knobs of one replica's protocol core, with the limits that bound its memory.

use crate::types::NodeId;

/// How `read_index` confirms that this replica is still the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Confirm leadership with a heartbeat round acknowledged by a quorum. Safe under any
    /// timing: costs one round trip per batch of reads.
    ReadIndex,
    /// Serve reads without a round trip while the leader holds a lease: a quorum
    /// acknowledged a heartbeat sent less than `election_timeout_ticks_min -
    /// clock_drift_ticks_max` ticks ago.
    ///
    /// **Clock assumption**: every replica's tick runs at a rate within
    /// `clock_drift_ticks_max` ticks per election timeout of every other's. Followers refuse
    /// to vote for `election_timeout_ticks_min` ticks after they hear from the leader (and
    /// after they start), so no other leader can be elected while the lease holds. A clock
    /// that jumps or a process paused longer than the margin breaks this; use `ReadIndex`
    /// when that cannot be ruled out.
    Lease {
        /// The largest drift, in ticks per election timeout, between any two replicas.
        clock_drift_ticks_max: u64,
    },
}

/// Deliberately broken behaviours, for tests that show the safety checkers catch a broken
/// build. Only `None` exists unless the crate is built with the `sabotage` feature, which
/// release builds leave off.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sabotage {
    /// Behave correctly.
    #[default]
    None,
    /// Grant every vote request, even after voting for someone else in the same term.
    #[cfg(feature = "sabotage")]
    VoteTwice,
    /// Grant votes without checking that the candidate's log is up to date.
    #[cfg(feature = "sabotage")]
    IgnoreLogUpToDate,
    /// Commit entries of earlier terms by counting replicas (the figure-8 bug).
    #[cfg(feature = "sabotage")]
    CommitPreviousTerm,
    /// Confirm reads without a heartbeat round.
    #[cfg(feature = "sabotage")]
    ReadWithoutQuorum,
    /// In a joint configuration, let the incoming voters decide alone (the old and the new
    /// configuration can then decide independently).
    #[cfg(feature = "sabotage")]
    JointNewOnly,
    /// Campaign and vote at once after storage lost acknowledged entries
    /// ([`crate::InitialState::lost_through`]), instead of waiting to hold them again.
    #[cfg(feature = "sabotage")]
    IgnoreLostEntries,
}

/// Whether `$config` has the sabotage `$variant`: always false in a build without the
/// `sabotage` feature (the variant does not exist there).
macro_rules! sabotaged {
    ($config:expr, $variant:ident) => {{
        #[cfg(feature = "sabotage")]
        let sabotaged = $config.sabotage == $crate::config::Sabotage::$variant;
        #[cfg(not(feature = "sabotage"))]
        let sabotaged = false;
        sabotaged
    }};
}
pub(crate) use sabotaged;

/// The configuration of one replica's consensus core.
#[derive(Clone, Debug)]
pub struct Config {
    /// This replica's id; never zero.
    pub id: NodeId,
    /// The shortest election timeout. Followers wait at least this long without hearing
    /// from a leader before they campaign; a leader steps down (with `check_quorum`) when a
    /// quorum has been silent this long.
    pub election_timeout_ticks_min: u64,
    /// Election timeouts are drawn uniformly from `min..max`, which must hold at least two
    /// values: with a single one, two replicas that campaign in step stay in step for ever
    /// (each election ends as the last did, and the next starts at the same offset).
    pub election_timeout_ticks_max: u64,
    /// A leader sends heartbeats this often.
    pub heartbeat_interval_ticks: u64,
    /// Ask for pre-votes before raising the term, so that a replica rejoining after a
    /// partition cannot depose a healthy leader.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down, and
    /// followers that hear from a leader refuse votes for an election timeout.
    pub check_quorum: bool,
    /// How reads are confirmed.
    pub read_mode: ReadMode,
    /// At most this many append messages in flight to one follower.
    pub messages_in_flight_max: usize,
    /// At most this many entry bytes in flight to one follower.
    pub bytes_in_flight_max: u64,
    /// At most this many entry bytes in one append message (one entry is always allowed).
    pub append_bytes_max: u64,
    /// At most this many committed entry bytes handed out for applying in one output.
    pub apply_bytes_max: u64,
    /// At most this many committed entries handed out for applying and not yet reported
    /// applied: a state machine that falls behind holds the rest in the log, not in memory.
    pub apply_entries_in_flight_max: u64,
    /// A leader refuses proposals while this many bytes of its log are uncommitted.
    pub uncommitted_bytes_max: u64,
    /// At most this many reads waiting for confirmation or for the state machine to catch up.
    pub pending_reads_max: usize,
    /// A learner is promoted to voter only within this many entries of the leader's log.
    pub promotion_lag_max: u64,
    /// Seeds the generator for election timeouts. Give every replica a different seed.
    pub random_seed: u64,
    #[doc(hidden)]
    pub sabotage: Sabotage,
}

impl Config {
    /// A configuration with production defaults for replica `id`: a 10-20 tick election
    /// timeout and a heartbeat every tick (at 100 ms a tick: elections after 1-2 s).
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_timeout_ticks_min: 10,
            election_timeout_ticks_max: 20,
            heartbeat_interval_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::ReadIndex,
            messages_in_flight_max: 256,
            bytes_in_flight_max: 16 << 20,
            append_bytes_max: 1 << 20,
            apply_bytes_max: 4 << 20,
            apply_entries_in_flight_max: 65_536,
            uncommitted_bytes_max: 64 << 20,
            promotion_lag_max: 1_000,
            pending_reads_max: 64 << 10,
            random_seed: id.0,
            sabotage: Sabotage::None,
        }
    }

    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if self.id == NodeId(0) {
            return Err("node id 0 is reserved".to_string());
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err("heartbeat_interval_ticks must be at least 1".to_string());
        }
        if self.election_timeout_ticks_min <= self.heartbeat_interval_ticks {
            return Err(format!(
                "election_timeout_ticks_min ({}) must exceed heartbeat_interval_ticks ({})",
                self.election_timeout_ticks_min, self.heartbeat_interval_ticks
            ));
        }
        if self.election_timeout_ticks_max < self.election_timeout_ticks_min.saturating_add(2) {
            return Err(format!(
                "election_timeout_ticks_max ({}) must exceed election_timeout_ticks_min ({}) by \
                 at least 2: timeouts are drawn from min..max, and a single value leaves \
                 candidates that campaign in step in step for ever",
                self.election_timeout_ticks_max, self.election_timeout_ticks_min
            ));
        }
        if let ReadMode::Lease { clock_drift_ticks_max } = self.read_mode {
            if !self.check_quorum {
                return Err("lease reads need check_quorum".to_string());
            }
            if clock_drift_ticks_max >= self.election_timeout_ticks_min {
                return Err(
                    "clock_drift_ticks_max must be below election_timeout_ticks_min".to_string()
                );
            }
        }
        if self.messages_in_flight_max == 0 {
            return Err("messages_in_flight_max must be at least 1".to_string());
        }
        if self.bytes_in_flight_max == 0 || self.append_bytes_max == 0 || self.apply_bytes_max == 0
        {
            return Err("byte limits must be at least 1".to_string());
        }
        if self.pending_reads_max == 0 {
            return Err("pending_reads_max must be at least 1".to_string());
        }
        if self.apply_entries_in_flight_max == 0 {
            return Err("apply_entries_in_flight_max must be at least 1".to_string());
        }
        Ok(())
    }
}
