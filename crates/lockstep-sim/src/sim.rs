//! The simulation: replicas running the real node driver over simulated disks and a simulated
//! network, clients with sessions, and a nemesis, all driven by one seeded random source.
//!
//! Time is simulated in microseconds. Everything that happens is an event in one queue ordered
//! by (time, sequence number), so a seed fixes the run exactly; [`Report::trace_hash`] is a
//! hash of every event in order, which two runs of one seed must share.
//!
//! A run has two phases:
//! 1. **Safety**: the nemesis partitions the network (symmetric, one-way, isolating the
//!    leader), drops, duplicates and delays messages, crashes replicas (one, or a majority at
//!    once) and restarts them, and the disks fail writes and syncs now and then; clients keep
//!    issuing requests and retrying.
//! 2. **Liveness**: every fault heals, every replica restarts; within a bound the cluster
//!    must elect a leader, answer every outstanding request and bring every replica to the
//!    same commit index and state.
//!
//! The checkers watch throughout (see [`crate::checkers`]); the clients' history is checked
//! for linearizability at the end.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lockstep_core::rng::SeededRng;
use lockstep_core::{
    Config, Entry, LogIndex, Membership, MembershipChange, Message, NodeId, ReadMode, Role,
    Sabotage as CoreSabotage,
};
use lockstep_node::StoreError;
use lockstep_node::{
    AuditConfig, CheckpointPolicy, ClientId, ClientRequest, Completion, Driver, LocalStorage,
    Refusal, RepairMode, Replicated, RequestId, SessionConfig, Transport,
};
use lockstep_storage::{Faults, HardStateError, SimDisk, WalError, WalOptions};
use xxhash_rust::xxh3::Xxh3;

use crate::checkers::audit::{
    AuditChecker, Ending, FaultKind, Injected, COMPARED_WINDOW_ENTRIES, DETECTION_BOUND_ENTRIES,
};
use crate::checkers::{
    Durability, ElectionSafety, EntryId, ExactlyOnce, LeaderCompleteness, LogMatching,
    StateMachineSafety,
};
use crate::kv::{KvInput, KvMachine};
use crate::linearizability::{self, Input, Operation, Output, Verdict};

/// Microseconds of simulated time.
type Time = u64;

const MILLIS: Time = 1_000;

/// Whether `$sabotage` is the switch `$variant`: always false in a build without the
/// `sabotage` feature (the variant does not exist there).
macro_rules! sabotaged {
    ($sabotage:expr, $variant:ident) => {{
        #[cfg(feature = "sabotage")]
        let sabotaged = $sabotage == Sabotage::$variant;
        #[cfg(not(feature = "sabotage"))]
        let sabotaged = {
            let _ = &$sabotage;
            false
        };
        sabotaged
    }};
}

/// Deliberately broken builds, to show that the checkers catch them. Only `None` exists
/// unless the crate is built with the `sabotage` feature, which release builds leave off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sabotage {
    /// Nothing broken.
    None,
    /// Store the term but not the vote: a restarted replica can vote twice in one term.
    #[cfg(feature = "sabotage")]
    VoteUnpersisted,
    /// Grant every vote request, even a second one in the same term.
    #[cfg(feature = "sabotage")]
    VoteTwice,
    /// Commit an earlier term's entries by counting replicas (Raft's figure 8).
    #[cfg(feature = "sabotage")]
    CommitPreviousTerm,
    /// Serve reads from the local state machine, without read-index.
    #[cfg(feature = "sabotage")]
    ReadWithoutReadIndex,
    /// Report writes durable without syncing them.
    #[cfg(feature = "sabotage")]
    AckBeforeSync,
    /// Apply every request as new, as if there were no session table.
    #[cfg(feature = "sabotage")]
    SkipSessions,
    /// Take checkpoints one entry early, labelled as if after that entry.
    #[cfg(feature = "sabotage")]
    CheckpointOffByOne,
    /// In a joint configuration, let the new voters decide alone.
    #[cfg(feature = "sabotage")]
    JointNewOnly,
    /// The leader never compares the chains and digests replicas report (shows with
    /// divergence faults).
    #[cfg(feature = "sabotage")]
    AuditNoCompare,
    /// A replica whose log was set aside for damage votes and campaigns at once, instead of
    /// waiting to hold what it lost again (shows with disk corruption).
    #[cfg(feature = "sabotage")]
    IgnoreLostEntries,
}

impl Sabotage {
    /// Every switch that breaks something (none in a build without the `sabotage` feature).
    #[cfg(not(feature = "sabotage"))]
    pub const ALL: [Sabotage; 0] = [];
    /// Every switch that breaks something.
    #[cfg(feature = "sabotage")]
    pub const ALL: [Sabotage; 10] = [
        Sabotage::VoteUnpersisted,
        Sabotage::VoteTwice,
        Sabotage::CommitPreviousTerm,
        Sabotage::ReadWithoutReadIndex,
        Sabotage::AckBeforeSync,
        Sabotage::SkipSessions,
        Sabotage::CheckpointOffByOne,
        Sabotage::JointNewOnly,
        Sabotage::AuditNoCompare,
        Sabotage::IgnoreLostEntries,
    ];

    /// The switch's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Sabotage::None => "none",
            #[cfg(feature = "sabotage")]
            Sabotage::VoteUnpersisted => "vote-unpersisted",
            #[cfg(feature = "sabotage")]
            Sabotage::VoteTwice => "vote-twice",
            #[cfg(feature = "sabotage")]
            Sabotage::CommitPreviousTerm => "commit-previous-term",
            #[cfg(feature = "sabotage")]
            Sabotage::ReadWithoutReadIndex => "read-without-read-index",
            #[cfg(feature = "sabotage")]
            Sabotage::AckBeforeSync => "ack-before-sync",
            #[cfg(feature = "sabotage")]
            Sabotage::SkipSessions => "skip-sessions",
            #[cfg(feature = "sabotage")]
            Sabotage::CheckpointOffByOne => "checkpoint-off-by-one",
            #[cfg(feature = "sabotage")]
            Sabotage::JointNewOnly => "joint-new-only",
            #[cfg(feature = "sabotage")]
            Sabotage::AuditNoCompare => "audit-no-compare",
            #[cfg(feature = "sabotage")]
            Sabotage::IgnoreLostEntries => "ignore-lost-entries",
        }
    }

    /// The switch named `name`.
    pub fn from_name(name: &str) -> Option<Sabotage> {
        std::iter::once(Sabotage::None).chain(Sabotage::ALL).find(|switch| switch.name() == name)
    }
}

impl fmt::Display for Sabotage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed that fixes the whole run.
    pub seed: u64,
    /// Replicas in the cluster.
    pub replicas: usize,
    /// Concurrent clients, each with its own session.
    pub clients: usize,
    /// Keys the clients touch.
    pub keys: u64,
    /// Simulated milliseconds of faults.
    pub safety_millis: u64,
    /// Simulated milliseconds within which the healed cluster must finish everything.
    pub liveness_millis: u64,
    /// What to break on purpose.
    pub sabotage: Sabotage,
    /// Print notable events (starts, crashes, leaders, faults, answers) as they happen.
    pub trace: bool,
    /// Change the membership during the faults: add learners, promote them, remove voters (the
    /// leader too), replace voters through joint configurations.
    pub membership: bool,
    /// Writes reaching a replica within a millisecond are proposed together as one batch
    /// (`Driver::propose_batch`, as the server does), instead of one by one.
    pub batch: bool,
    /// Inject divergences (a state machine non-deterministic on one replica, a value
    /// corrupted in one replica's memory) during the faults, with the audit on to find and
    /// repair them.
    pub divergence: bool,
    /// The audit's verified outputs: answers wait for a majority's chain (reads go through
    /// the log).
    pub verified_outputs: bool,
    /// Damage a restarting replica's log on disk (a bit flipped in a record frame that intact
    /// frames follow) while at most a minority is short of entries it lost: the replica sets
    /// its log aside and fetches it again from the others.
    pub disk_corruption: bool,
}

impl SimConfig {
    /// A run of `seed` with the defaults: 3 replicas, 4 clients on 3 keys, 4 s of faults and
    /// 10 s to recover.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            replicas: 3,
            clients: 4,
            keys: 3,
            safety_millis: 4_000,
            liveness_millis: 10_000,
            sabotage: Sabotage::None,
            trace: false,
            membership: false,
            batch: false,
            divergence: false,
            verified_outputs: false,
            disk_corruption: false,
        }
    }
}

/// A property that failed.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The checker that caught it.
    pub checker: &'static str,
    /// What it found.
    pub detail: String,
    /// When (simulated microseconds).
    pub time: u64,
    /// The events just before it, oldest first.
    pub around: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[{}] at {} ms: {}", self.checker, self.time / MILLIS, self.detail)?;
        if !self.around.is_empty() {
            writeln!(f, "  the events before it:")?;
            for line in &self.around {
                writeln!(f, "    {line}")?;
            }
        }
        Ok(())
    }
}

/// What a run did and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Properties that failed: the first violation of each, in the order found.
    pub violations: Vec<Violation>,
    /// A hash of every event, in order.
    pub trace_hash: u64,
    /// Events processed.
    pub events: u64,
    /// Client requests answered.
    pub requests_completed: u64,
    /// Writes proposed in a batch with at least one other (with `batch`).
    pub writes_batched: u64,
    /// Client requests never answered (a session expired; none in a passing run's end).
    pub requests_unanswered: u64,
    /// Writes acknowledged.
    pub writes_acknowledged: u64,
    /// Replica crashes.
    pub crashes: u64,
    /// Terms that had a leader.
    pub terms_led: u64,
    /// Entries committed.
    pub entries_committed: u64,
    /// Messages dropped by partitions and loss.
    pub messages_dropped: u64,
    /// Simulated milliseconds the run lasted.
    pub simulated_millis: u64,
    /// Checkpoints made durable.
    pub checkpoints: u64,
    /// Snapshots sent whole to a follower and installed there.
    pub state_transfers: u64,
    /// Committed membership changes, by kind.
    pub changes: MembershipCounts,
    /// Divergences injected (that took effect).
    pub divergences_injected: u64,
    /// Divergences the audit found and repaired.
    pub divergences_repaired: u64,
    /// Divergences cleared before the audit found them (a restart from an older checkpoint,
    /// or a snapshot from the leader).
    pub divergences_cleared: u64,
    /// For each divergence found: entries its replica applied after departing, before.
    pub detection_latencies: Vec<u64>,
    /// Answers a client received that differ from the majority's (reads included).
    pub wrong_outputs: u64,
    /// Bits flipped in a stopped replica's log records.
    pub disk_damage_injected: u64,
    /// Damaged logs a replica set aside at its restart, to fetch again from the others.
    pub logs_set_aside: u64,
    /// Replicas started short of entries their storage lost (taking no part in elections).
    pub lost_entry_holds: u64,
    /// Replicas still short of them at the end (their log shorter than what they lost, and
    /// the leader's release not yet heard).
    pub lost_entry_holds_left: u64,
}

/// Committed membership changes of each kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MembershipCounts {
    /// Learners added.
    pub learners_added: u64,
    /// Learners promoted to voters (one at a time).
    pub promotions: u64,
    /// Voters removed (one at a time).
    pub removals: u64,
    /// Voters replaced in one joint change (a new one in, an old one out).
    pub replacements: u64,
    /// Changes that removed the leader that proposed them.
    pub leaders_removed: u64,
}

// ----- the world ---------------------------------------------------------------------------

/// A client's request as it travels to a replica.
#[derive(Clone, Debug)]
struct Wire {
    client: usize,
    operation: usize,
    session: ClientId,
    sequence: u64,
    request: KvInput,
}

#[derive(Debug)]
enum Event {
    Tick {
        node: usize,
        incarnation: u64,
    },
    CheckpointDone {
        node: usize,
        incarnation: u64,
    },
    Membership,
    /// A message arrives, unless its sender crashed before it left (`departs`).
    Deliver {
        to: usize,
        message: Message,
        sender: (usize, u64),
        departs: Time,
    },
    Request {
        node: usize,
        wire: Wire,
    },
    Reply {
        client: usize,
        operation: usize,
        answer: Result<Output, Refusal>,
    },
    Sync {
        node: usize,
        incarnation: u64,
    },
    LateSync {
        node: usize,
        incarnation: u64,
    },
    /// A replica applies committed entries that waited (a slow state machine: see
    /// `World::apply_budget`).
    Apply {
        node: usize,
        incarnation: u64,
    },
    /// The writes a replica has gathered are proposed as one batch.
    Flush {
        node: usize,
        incarnation: u64,
    },
    Timeout {
        client: usize,
        attempt: u64,
    },
    Send {
        client: usize,
        attempt: u64,
    },
    Think {
        client: usize,
    },
    Nemesis,
    Restart {
        node: usize,
    },
    Kill {
        node: usize,
        incarnation: u64,
        restart_after: Time,
    },
    Heal,
    /// A divergence is injected into one replica.
    Diverge,
}

impl Event {
    fn code(&self) -> u8 {
        match self {
            Event::Tick { .. } => 1,
            Event::Deliver { .. } => 2,
            Event::Request { .. } => 3,
            Event::Reply { .. } => 4,
            Event::Sync { .. } => 5,
            Event::Timeout { .. } => 6,
            Event::Send { .. } => 7,
            Event::Think { .. } => 8,
            Event::Nemesis => 9,
            Event::Restart { .. } => 10,
            Event::Heal => 11,
            Event::LateSync { .. } => 12,
            Event::Kill { .. } => 13,
            Event::CheckpointDone { .. } => 14,
            Event::Membership => 15,
            Event::Flush { .. } => 16,
            Event::Diverge => 17,
            Event::Apply { .. } => 18,
        }
    }
}

/// The driver's transport: messages wait here until the simulator routes them.
#[derive(Default)]
struct Outbox(Vec<Message>);

impl Transport for Outbox {
    fn send(&mut self, message: Message) {
        self.0.push(message);
    }
}

type SimDriver = Driver<KvMachine, LocalStorage, Outbox>;

struct Replica {
    id: NodeId,
    disk: SimDisk,
    driver: Option<SimDriver>,
    incarnation: u64,
    tick_micros: Time,
    clock_offset_millis: u64,
    sync_scheduled: bool,
    apply_scheduled: bool,
    /// Requests in the driver: which client operation each answers.
    requests: BTreeMap<RequestId, (usize, usize)>,
    /// Writes gathered for the next batch (with `batch`), and which operations they answer.
    batch: Vec<(ClientRequest<crate::kv::KvInput>, (usize, usize))>,
    /// Committed entries already given to the checkers.
    checked_commit: u64,
    was_leader_in: Option<u64>,
    /// The last (term, vote) seen.
    last_vote: Option<(u64, NodeId)>,
    /// Snapshots this incarnation installed from a leader (as last seen).
    installed: u64,
    checkpoint_scheduled: bool,
    /// Started and not removed: crashes restart it.
    active: bool,
    /// The configuration a joining replica starts with (it names it as a learner).
    bootstrap: Option<Membership>,
    /// Its store was created on its disk.
    created: bool,
    /// The last index whose application was given to the checkers (an index at or below it
    /// again means the replica re-applies after a repair).
    last_applied_seen: u64,
    /// Repairs this incarnation completed (as last seen).
    repairs_seen: u64,
    /// A bit was flipped in its log since it last started: the next start must find it.
    damage_pending: bool,
    /// Where: the file, the offset and the byte as flipped.
    damage_at: Option<(PathBuf, u64, u8)>,
    /// The configuration it held when it last stopped (it may hold a newer one than the
    /// cluster committed, and lead with it when it returns).
    membership_seen: Option<Membership>,
}

struct Client {
    session: ClientId,
    generation: u64,
    next_sequence: u64,
    /// The operation in flight: its index in the history and what travels.
    current: Option<(usize, Wire)>,
    target: usize,
    attempt: u64,
    next_value: u64,
    stopping: bool,
}

/// The whole simulated world.
struct World {
    /// Committed entries a replica applies per turn, when this seed has a slow state machine.
    apply_budget: Option<u64>,
    config: SimConfig,
    rng: SeededRng,
    now: Time,
    queue: BTreeMap<(Time, u64), Event>,
    next_event: u64,
    replicas: Vec<Replica>,
    clients: Vec<Client>,
    membership: Membership,
    core_config: Config,
    // Network faults.
    blocked: BTreeSet<(usize, usize)>,
    loss_per_mille: u64,
    duplicate_per_mille: u64,
    delay_spread_micros: Time,
    healed: Option<Time>,
    /// The chance that a new leader is killed soon after it wins, or a replica right after it
    /// votes (varies by seed).
    kill_per_mille: u64,
    /// How replicas take checkpoints and send them (varies by seed; none in some).
    checkpoint_policy: Option<CheckpointPolicy>,
    /// When each (replica, incarnation) crashed.
    crashed_at: BTreeMap<(usize, u64), Time>,
    /// Membership changes: the configuration last seen committed, the voter a replacement
    /// will remove once its learner is ready, and the leader a change removed.
    committed_membership: Membership,
    committed_config_index: LogIndex,
    replacing: Option<NodeId>,
    removed_leader: Option<NodeId>,
    first_violation_event: u64,
    // Records.
    history: Vec<Operation>,
    trace: Xxh3,
    recent: VecDeque<String>,
    report: Report,
    // Checkers.
    election_safety: ElectionSafety,
    log_matching: LogMatching,
    leader_completeness: LeaderCompleteness,
    state_machine_safety: StateMachineSafety,
    durability: Durability,
    exactly_once: ExactlyOnce,
    audit: AuditChecker,
    /// Reads answered with a value only a divergent replica holds: (operation).
    wrong_reads: Vec<usize>,
    /// Other reads a divergent replica answered from its own state.
    unjudged_reads: Vec<usize>,
}

const RECENT_MAX: usize = 40;
const DATA_DIR: &str = "/replica";

/// Runs one simulation.
pub fn run(config: SimConfig) -> Report {
    let mut world = World::new(config);
    world.run();
    world.report.trace_hash = world.trace.digest();
    world.report
}

fn entry_id(entry: &Entry) -> EntryId {
    let bytes = postcard::to_stdvec(entry).unwrap_or_default();
    EntryId { term: entry.term.get(), hash: xxhash_rust::xxh3::xxh3_64(&bytes) }
}

impl World {
    fn new(config: SimConfig) -> World {
        let mut rng = SeededRng::new(config.seed);
        // With membership changes, spare ids for replicas that join later (never reused: a
        // replica that left does not come back under its id).
        let spare = if config.membership { 4 } else { 0 };
        let ids: Vec<NodeId> = (1..=(config.replicas + spare) as u64).map(NodeId).collect();
        let membership = Membership::with_voters(ids[..config.replicas].iter().copied());
        let initial_membership = membership.clone();
        let mut core_config = Config::new(NodeId(1));
        // Vary the protocol's options across seeds, so each is exercised under faults.
        core_config.pre_vote = rng.range(0, 4) != 0;
        core_config.check_quorum = rng.range(0, 4) != 0;
        if core_config.check_quorum && rng.range(0, 4) == 0 {
            core_config.read_mode = ReadMode::Lease { clock_drift_ticks_max: 2 };
        }
        // Narrow timeout ranges make split votes and rival candidates in one term common. (At
        // least two values: `Config::validate` refuses a range of one. The generator is called
        // as before, so only seeds that drew 11 run differently.)
        core_config.election_timeout_ticks_max = rng.range(11, 21).max(12);
        core_config.messages_in_flight_max =
            if rng.range(0, 3) == 0 { 1 } else { rng.range(2, 64) as usize };
        // Some seeds send one entry per append, which splits a new leader's first entries.
        core_config.append_bytes_max = if rng.range(0, 3) == 0 { 1 } else { rng.range(64, 4096) };
        core_config.sabotage = match config.sabotage {
            #[cfg(feature = "sabotage")]
            Sabotage::VoteTwice => CoreSabotage::VoteTwice,
            #[cfg(feature = "sabotage")]
            Sabotage::CommitPreviousTerm => CoreSabotage::CommitPreviousTerm,
            #[cfg(feature = "sabotage")]
            Sabotage::JointNewOnly => CoreSabotage::JointNewOnly,
            #[cfg(feature = "sabotage")]
            Sabotage::IgnoreLostEntries => CoreSabotage::IgnoreLostEntries,
            #[allow(unreachable_patterns)]
            _ => CoreSabotage::None,
        };
        let replicas = ids
            .iter()
            .map(|&id| {
                // Clocks tick at rates up to 2% apart.
                let tick_micros = 10 * MILLIS - 100 + rng.range(0, 200);
                let disk = SimDisk::new(rng.next_u64(), Faults::default());
                Replica {
                    id,
                    disk,
                    driver: None,
                    incarnation: 0,
                    tick_micros,
                    clock_offset_millis: 1_700_000_000_000 + rng.range(0, 2_000),
                    sync_scheduled: false,
                    apply_scheduled: false,
                    requests: BTreeMap::new(),
                    batch: Vec::new(),
                    checked_commit: 0,
                    was_leader_in: None,
                    last_vote: None,
                    installed: 0,
                    checkpoint_scheduled: false,
                    active: id.get() <= config.replicas as u64,
                    bootstrap: None,
                    created: false,
                    damage_pending: false,
                    damage_at: None,
                    membership_seen: None,
                    last_applied_seen: 0,
                    repairs_seen: 0,
                }
            })
            .collect();
        let clients = (0..config.clients)
            .map(|index| Client {
                session: ClientId(index as u64 * 1_000 + 1),
                generation: 0,
                next_sequence: 1,
                current: None,
                target: 0,
                attempt: 0,
                next_value: (index as u64 + 1) * 1_000_000,
                stopping: false,
            })
            .collect();
        // The last profile is churn: leaders come and go every few tens of milliseconds, which
        // is what it takes to build rare histories like Raft's figure 8.
        let kill_per_mille = [0, 100, 300, 600, 900][rng.range(0, 5) as usize];
        // Checkpoints every few dozen entries, small chunks, a short trailing log: followers
        // that fall behind need state transfers.
        let checkpoint_policy = (sabotaged!(config.sabotage, CheckpointOffByOne)
            || rng.range(0, 5) != 0)
            .then(|| CheckpointPolicy {
                entries: rng.range(16, 64),
                bytes: 1 << 20,
                growth_percent: 0,
                log_bytes_max: u64::MAX,
                trailing_entries: rng.range(0, 16),
                chunk_bytes: rng.range(32, 512),
                chunks_in_flight: rng.range(1, 5),
                transfer_timeout_ticks: 20,
            });
        // Some seeds apply committed entries a few at a time, a millisecond or two after they
        // commit (a slow state machine): reads, answers, checkpoints and repairs wait for it.
        // Drawn from a generator of its own, so that seeds with a prompt state machine keep
        // the schedules they had before this fault existed.
        let mut apply_rng = SeededRng::new(config.seed ^ 0x5eed_a991_7000_0001);
        let apply_budget = (apply_rng.range(0, 3) == 0).then(|| apply_rng.range(1, 17));
        if let Some(budget) = apply_budget {
            // The core hands out only a few entries ahead of what was applied.
            core_config.apply_entries_in_flight_max = apply_rng.range(1, 4 * budget + 1);
        }
        let report = Report { seed: config.seed, ..Report::default() };
        World {
            apply_budget,
            config,
            rng,
            now: 0,
            queue: BTreeMap::new(),
            next_event: 0,
            replicas,
            clients,
            membership,
            core_config,
            blocked: BTreeSet::new(),
            loss_per_mille: 0,
            duplicate_per_mille: 0,
            delay_spread_micros: 2 * MILLIS,
            healed: None,
            kill_per_mille,
            checkpoint_policy,
            crashed_at: BTreeMap::new(),
            committed_membership: initial_membership,
            committed_config_index: LogIndex::ZERO,
            replacing: None,
            removed_leader: None,
            first_violation_event: 0,
            history: Vec::new(),
            trace: Xxh3::new(),
            recent: VecDeque::new(),
            report,
            election_safety: ElectionSafety::new(),
            log_matching: LogMatching,
            leader_completeness: LeaderCompleteness::new(),
            state_machine_safety: StateMachineSafety::new(),
            durability: Durability::new(),
            exactly_once: ExactlyOnce::new(),
            audit: AuditChecker::new(),
            wrong_reads: Vec::new(),
            unjudged_reads: Vec::new(),
        }
    }

    fn schedule(&mut self, delay: Time, event: Event) {
        let key = (self.now + delay, self.next_event);
        self.next_event += 1;
        self.queue.insert(key, event);
    }

    fn violation(&mut self, checker: &'static str, detail: String) {
        // The first violation of each property is kept; the run goes on so that every checker
        // a fault trips gets to say so.
        if self.report.violations.iter().any(|violation| violation.checker == checker) {
            return;
        }
        if self.report.violations.is_empty() {
            self.first_violation_event = self.report.events;
        }
        self.report.violations.push(Violation {
            checker,
            detail,
            time: self.now,
            around: self.recent.iter().cloned().collect(),
        });
    }

    fn check(&mut self, checker: &'static str, result: Result<(), String>) {
        if let Err(detail) = result {
            self.violation(checker, detail);
        }
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if self.recent.len() == RECENT_MAX {
            self.recent.pop_front();
        }
        let line = line();
        if self.config.trace {
            eprintln!("{:>10.3} ms  {line}", self.now as f64 / MILLIS as f64);
        }
        self.recent.push_back(format!("{:>8.3} ms  {line}", self.now as f64 / MILLIS as f64));
    }

    // ----- the main loop -----------------------------------------------------------------

    fn run(&mut self) {
        for node in 0..self.replicas.len() {
            if self.replicas[node].active {
                self.start(node);
            }
        }
        for client in 0..self.clients.len() {
            let delay = self.rng.range(0, 50 * MILLIS);
            self.schedule(delay, Event::Think { client });
        }
        let first_nemesis = self.rng.range(100 * MILLIS, 500 * MILLIS);
        self.schedule(first_nemesis, Event::Nemesis);
        if self.config.membership {
            let first = self.rng.range(200 * MILLIS, 400 * MILLIS);
            self.schedule(first, Event::Membership);
        }
        if self.config.divergence {
            let first = self.rng.range(100 * MILLIS, 400 * MILLIS);
            self.schedule(first, Event::Diverge);
        }
        self.schedule(self.config.safety_millis * MILLIS, Event::Heal);
        let deadline = (self.config.safety_millis + self.config.liveness_millis) * MILLIS;
        let mut since_log_check = 0u32;
        while let Some(((time, _), event)) = self.queue.pop_first() {
            self.now = time;
            if time > deadline {
                self.count_lost_entry_holds_left();
                self.report_liveness_failure();
                self.check_audit();
                self.check_linearizability();
                break;
            }
            self.report.events += 1;
            self.trace_event(&event);
            self.handle(event);
            self.observe();
            if self.config.membership {
                self.observe_membership();
            }
            since_log_check += 1;
            if since_log_check >= 512 {
                since_log_check = 0;
                self.check_logs();
            }
            // A broken run can spin: give it a while to trip other checkers, then stop.
            if !self.report.violations.is_empty()
                && self.report.events > self.first_violation_event + 200_000
            {
                break;
            }
            if self.healed.is_some() && self.finished() {
                self.final_checks();
                break;
            }
        }
        self.report.simulated_millis = self.now / MILLIS;
        self.report.terms_led = self.election_safety.terms_led() as u64;
        self.report.entries_committed = self.leader_completeness.committed_count() as u64;
        self.report.writes_acknowledged = self.durability.acknowledged_count() as u64;
        self.report.requests_unanswered =
            self.history.iter().filter(|operation| operation.returned.is_none()).count() as u64;
    }

    fn trace_event(&mut self, event: &Event) {
        self.trace.update(&self.now.to_le_bytes());
        self.trace.update(&[event.code()]);
        match event {
            Event::Deliver { to, message, .. } => {
                self.trace.update(&(*to as u64).to_le_bytes());
                self.trace.update(&postcard::to_stdvec(message).unwrap_or_default());
            }
            Event::Tick { node, .. }
            | Event::Sync { node, .. }
            | Event::LateSync { node, .. }
            | Event::Flush { node, .. }
            | Event::Apply { node, .. }
            | Event::Kill { node, .. }
            | Event::CheckpointDone { node, .. }
            | Event::Restart { node } => self.trace.update(&(*node as u64).to_le_bytes()),
            Event::Request { node, wire } => {
                self.trace.update(&(*node as u64).to_le_bytes());
                self.trace.update(&postcard::to_stdvec(&wire.request).unwrap_or_default());
                self.trace.update(&wire.session.0.to_le_bytes());
                self.trace.update(&wire.sequence.to_le_bytes());
            }
            Event::Reply { client, operation, answer } => {
                self.trace.update(&(*client as u64).to_le_bytes());
                self.trace.update(&(*operation as u64).to_le_bytes());
                self.trace.update(format!("{answer:?}").as_bytes());
            }
            Event::Timeout { client, attempt } | Event::Send { client, attempt } => {
                self.trace.update(&(*client as u64).to_le_bytes());
                self.trace.update(&attempt.to_le_bytes());
            }
            Event::Think { client } => self.trace.update(&(*client as u64).to_le_bytes()),
            Event::Nemesis | Event::Heal | Event::Membership | Event::Diverge => {}
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick { node, incarnation } => {
                if self.replicas[node].incarnation != incarnation {
                    return;
                }
                if let Some(driver) = self.replicas[node].driver.as_mut() {
                    driver.tick();
                    let period = self.replicas[node].tick_micros;
                    self.schedule(period, Event::Tick { node, incarnation });
                    self.pump(node);
                }
            }
            Event::Deliver { to, message, sender, departs } => {
                if self.crashed_at.get(&sender).is_some_and(|&crashed| crashed < departs) {
                    // Still in the sender's buffers when it crashed.
                    self.report.messages_dropped += 1;
                    return;
                }
                if let Some(driver) = self.replicas[to].driver.as_mut() {
                    driver.receive(message);
                    self.pump(to);
                }
            }
            Event::Request { node, wire } => self.request(node, wire),
            Event::Reply { client, operation, answer } => self.reply(client, operation, answer),
            Event::Sync { node, incarnation } => self.sync(node, incarnation),
            Event::LateSync { node, incarnation } => self.late_sync(node, incarnation),
            Event::Flush { node, incarnation } => self.flush(node, incarnation),
            Event::Apply { node, incarnation } => {
                if self.replicas[node].incarnation != incarnation {
                    return;
                }
                self.replicas[node].apply_scheduled = false;
                if let (Some(driver), Some(budget)) =
                    (self.replicas[node].driver.as_mut(), self.apply_budget)
                {
                    driver.set_apply_budget(budget, u64::MAX);
                    driver.apply_queued();
                    self.pump(node);
                }
            }
            Event::Timeout { client, attempt } => {
                if self.clients[client].attempt == attempt && self.clients[client].current.is_some()
                {
                    let target = self.rng.range(0, self.replicas.len() as u64) as usize;
                    self.clients[client].target = target;
                    self.send(client);
                }
            }
            Event::Send { client, attempt } => {
                if self.clients[client].attempt == attempt {
                    self.send(client);
                }
            }
            Event::Think { client } => self.next_operation(client),
            Event::Nemesis => self.nemesis(),
            Event::Restart { node } => {
                if self.replicas[node].driver.is_none() && self.replicas[node].active {
                    self.start(node);
                }
            }
            Event::Kill { node, incarnation, restart_after } => {
                if self.replicas[node].incarnation == incarnation && self.healed.is_none() {
                    self.crash(node, "nemesis: at a fragile moment");
                    self.schedule(restart_after, Event::Restart { node });
                }
            }
            Event::CheckpointDone { node, incarnation } => self.checkpoint_done(node, incarnation),
            Event::Membership => self.change_membership(),
            Event::Heal => self.heal(),
            Event::Diverge => self.diverge(),
        }
    }

    // ----- replicas ----------------------------------------------------------------------

    fn start(&mut self, node: usize) {
        if self.config.disk_corruption
            && self.replicas[node].created
            && !self.replicas[node].damage_pending
            && self.rng.range(0, 2) == 0
        {
            self.damage_log(node);
        }
        let replica = &mut self.replicas[node];
        // The initial members are given until the replica has been created on its disk once; a
        // restart after that must find it there.
        let bootstrap =
            (!replica.created).then(|| replica.bootstrap.as_ref().unwrap_or(&self.membership));
        replica.incarnation += 1;
        let disk: Arc<SimDisk> = Arc::new(replica.disk.clone());
        let options = WalOptions { segment_bytes: 64 << 10, ..WalOptions::default() };
        let opened = lockstep_node::LogStore::open(disk, Path::new(DATA_DIR), bootstrap, options);
        let (store, initial) = match opened {
            Ok(opened) => {
                replica.created = true;
                opened
            }
            Err(error) if is_injected_io_error(&error) => {
                // The disk failed again while recovering: try later, as an operator would.
                let id = replica.id;
                self.note(|| format!("replica {id} cannot start yet: {error}"));
                let delay = self.rng.range(10 * MILLIS, 300 * MILLIS);
                self.schedule(delay, Event::Restart { node });
                return;
            }
            Err(error) => {
                let id = replica.id;
                self.violation(
                    "recovery",
                    format!("replica {id} cannot recover from its disk after a crash: {error}"),
                );
                return;
            }
        };
        let id = self.replicas[node].id;
        if let Some(damage) = store.damage_found() {
            let line = format!("replica {id} sets damaged files aside: {damage}");
            self.report.logs_set_aside += 1;
            self.note(|| line);
        } else if self.replicas[node].damage_pending {
            // Whether the damaged byte is still where it was flipped.
            let still_there =
                self.replicas[node].damage_at.as_ref().is_some_and(|(path, at, byte)| {
                    self.replicas[node]
                        .disk
                        .contents(path)
                        .and_then(|bytes| bytes.get(*at as usize).copied())
                        == Some(*byte)
                });
            if store.lost_entries().is_some() {
                // An earlier start found the damage and noted it, then failed (the disk)
                // before it was done; this one finished setting the files aside. (A replica
                // still short of lost entries is never damaged again, so the note is this
                // damage's.)
                self.report.logs_set_aside += 1;
            } else if !still_there {
                // An earlier start that then failed (the disk) discarded the damaged bytes
                // with what held them: a log a snapshot had replaced, restarted after it.
            } else {
                self.violation(
                    "disk damage",
                    format!("replica {id} started from a damaged log without finding the damage"),
                );
            }
        }
        self.replicas[node].damage_pending = false;
        if initial.lost_through.is_some() {
            self.report.lost_entry_holds += 1;
        }
        let replica = &mut self.replicas[node];
        let mut config = self.core_config.clone();
        config.id = replica.id;
        config.random_seed = self.rng.next_u64();
        let mut state = Replicated::new(KvMachine::new(), SessionConfig::default());
        #[cfg(feature = "sabotage")]
        if sabotaged!(self.config.sabotage, SkipSessions) {
            state.sabotage_skip_sessions();
        }
        // Recovery starts from the latest snapshot, then replays the log after it.
        if let Some(stored) = store.latest_snapshot().cloned() {
            let restored = store
                .snapshot_reader(&stored)
                .map_err(|error| error.to_string())
                .and_then(|mut reader| state.restore(&mut reader).map_err(|e| e.to_string()));
            if let Err(error) = restored {
                let id = replica.id;
                self.violation(
                    "recovery",
                    format!("replica {id} cannot restore its snapshot: {error}"),
                );
                return;
            }
        }
        #[cfg_attr(not(feature = "sabotage"), allow(unused_mut))]
        let mut storage = LocalStorage::new(store);
        #[cfg(feature = "sabotage")]
        if sabotaged!(self.config.sabotage, VoteUnpersisted) {
            storage.sabotage_drop_votes();
        }
        let mut driver = match Driver::new(config, initial, state, storage, Outbox::default()) {
            Ok(driver) => driver,
            Err(error) => {
                let id = replica.id;
                self.violation(
                    "recovery",
                    format!("replica {id} refuses its recovered state: {error}"),
                );
                return;
            }
        };
        driver.record_applies();
        if let Some(budget) = self.apply_budget {
            driver.set_apply_budget(budget, u64::MAX);
            driver.set_apply_backlog_max(budget * 8);
        }
        if let Some(policy) = self.checkpoint_policy {
            driver.set_checkpoint_policy(policy);
        }
        #[cfg(feature = "sabotage")]
        if sabotaged!(self.config.sabotage, CheckpointOffByOne) {
            driver.sabotage_checkpoint_off_by_one();
        }
        if self.config.divergence || self.config.verified_outputs {
            driver.set_audit(AuditConfig {
                report_interval: 4,
                digest_interval: 16,
                repair: RepairMode::Automatic,
                verified_outputs: self.config.verified_outputs,
            });
        }
        #[cfg(feature = "sabotage")]
        if sabotaged!(self.config.sabotage, AuditNoCompare) {
            driver.sabotage_audit_no_compare();
        }
        replica.driver = Some(driver);
        replica.sync_scheduled = false;
        replica.apply_scheduled = false;
        replica.checkpoint_scheduled = false;
        replica.installed = 0;
        replica.requests.clear();
        replica.batch.clear();
        replica.checked_commit = 0;
        replica.was_leader_in = None;
        replica.last_applied_seen = 0;
        replica.repairs_seen = 0;
        let (id, incarnation) = (replica.id.get(), replica.incarnation);
        self.audit.forget_answers(id);
        // A non-deterministic write that never happened before the crash never will.
        if let Some(active) = self.audit.active(id) {
            if active.since.is_none() {
                active.ending = Some(Ending::Cleared);
            }
        }
        self.exactly_once.restarted(id);
        self.note(|| format!("replica {id} starts"));
        let first_tick = self.rng.range(0, self.replicas[node].tick_micros);
        self.schedule(first_tick, Event::Tick { node, incarnation });
    }

    fn crash(&mut self, node: usize, why: &str) {
        if self.replicas[node].driver.is_none() {
            return;
        }
        // Let the checkers see the replica as it was, before its memory is gone.
        self.observe();
        self.check_logs();
        let replica = &mut self.replicas[node];
        if let Some(driver) = replica.driver.take() {
            replica.membership_seen = Some(driver.node().membership().clone());
        }
        replica.disk.crash();
        self.crashed_at.insert((node, replica.incarnation), self.now);
        replica.incarnation += 1;
        replica.requests.clear();
        replica.batch.clear();
        self.report.crashes += 1;
        let id = replica.id;
        self.note(|| format!("replica {id} crashes ({why})"));
    }

    /// A replica whose disk failed stops, and an operator restarts it a little later.
    fn fail_stop(&mut self, node: usize, why: &str) {
        self.crash(node, why);
        let delay = self.rng.range(10 * MILLIS, 300 * MILLIS);
        self.schedule(delay, Event::Restart { node });
    }

    /// Routes what a replica's driver produced: messages, answers, applied entries, writes.
    fn pump(&mut self, node: usize) {
        let backlog = self.replicas[node].driver.as_ref().map_or(0, |d| d.apply_backlog());
        if backlog > 0 && !self.replicas[node].apply_scheduled {
            self.replicas[node].apply_scheduled = true;
            let incarnation = self.replicas[node].incarnation;
            let delay = self.rng.range(100, 2_000);
            self.schedule(delay, Event::Apply { node, incarnation });
        }
        let Some(driver) = self.replicas[node].driver.as_mut() else { return };
        let messages = std::mem::take(&mut driver.transport_mut().0);
        let completions = driver.take_completions();
        let applied = driver.take_applied();
        let failed = driver.storage().failure().or(driver.failure()).map(String::from);
        let checkpoint_pending = driver.storage_mut().checkpoint_pending();
        let installed = driver.checkpoint_stats().transfers_received;
        let needs_sync =
            driver.storage_mut().submitted() > 0 && !self.replicas[node].sync_scheduled;
        for message in messages {
            self.route(node, message);
        }
        let id = self.replicas[node].id.get();
        let repairs =
            self.replicas[node].driver.as_ref().map_or(0, |d| d.audit_stats().repairs_done);
        if repairs > self.replicas[node].repairs_seen || installed > self.replicas[node].installed {
            // Its state was replaced by a checkpoint: answers from before say nothing now.
            self.replicas[node].repairs_seen = repairs;
            self.audit.forget_answers(id);
        }
        // When this replica's state departed (a fault that fired in this batch).
        let diverged_at = driver_diverged_at(self.replicas[node].driver.as_ref());
        let departed = match self.audit.active(id) {
            Some(active) => {
                if active.since.is_none() {
                    active.since = diverged_at;
                }
                active.since
            }
            None => None,
        };
        for record in &applied {
            // An answer is the output of the request's fresh application (a retry is answered
            // with what was recorded then): that is the entry to judge it by.
            let request = record
                .request
                .filter(|(_, _, fresh)| *fresh)
                .map(|(client, sequence, _)| (client.0, sequence));
            let index = record.index.get();
            let healthy = departed.is_none_or(|since| index <= since);
            let result = self.audit.applied(id, index, record.chain, request, healthy);
            self.check("audit", result);
        }
        for completion in completions {
            let (request, answer) = match completion {
                Completion::Done { request, output } => (request, Ok(output)),
                Completion::Refused { request, refusal } => (request, Err(refusal)),
            };
            if let Some((client, operation)) = self.replicas[node].requests.remove(&request) {
                if let Ok(output) = &answer {
                    self.note_delivered(node, client, operation, output);
                }
                self.answer(client, operation, answer);
            }
        }
        let last_applied = applied.last().map(|record| record.index);
        let applied_indexes: Vec<u64> = applied.iter().map(|record| record.index.get()).collect();
        for record in applied {
            if record.index.get() <= self.replicas[node].last_applied_seen {
                // Re-applied after a repair replaced the state: count its applications anew.
                self.exactly_once.restarted(id);
            }
            self.replicas[node].last_applied_seen = record.index.get();
            let entry = self.replicas[node]
                .driver
                .as_ref()
                .and_then(|driver| driver.node().log_entry(record.index).map(entry_id));
            if let Some(entry) = entry {
                let result = self.state_machine_safety.applied(id, record.index.get(), entry);
                self.check("state machine safety", result);
            }
            if let Some((client, sequence, true)) = record.request {
                let result = self.exactly_once.applied(id, record.index.get(), client.0, sequence);
                self.check("exactly-once", result);
            }
        }
        self.observe_divergence(node);
        let comparable = self.majority_can_compare(node) && self.within_compared_window(node);
        if let Some(active) = self.audit.active(id) {
            if let (Some(since), None) = (active.since, active.latency) {
                let after = last_applied_count(&applied_indexes, since);
                active.raw += after;
                if comparable {
                    active.comparable += after;
                }
            }
        }
        let divergent = self.audit.active(id).is_some_and(|active| active.since.is_some());
        if installed > self.replicas[node].installed {
            // A snapshot from the leader replaced this replica's state: from here on it
            // applies only what follows it, and its state there must be everyone's.
            self.replicas[node].installed = installed;
            self.report.state_transfers += 1;
            self.exactly_once.restarted(id);
            if let Some(driver) = self.replicas[node].driver.as_ref() {
                let index = driver.node().applied_index().get();
                let digest = lockstep_core::StateMachine::digest(driver.state().machine());
                self.note(|| format!("replica {id} installs a snapshot through {index}"));
                if !divergent {
                    let result = self.state_machine_safety.digest(id, index, digest);
                    self.check("state machine safety", result);
                }
            }
        }
        // The state now is the state after the last entry applied, unless a snapshot
        // installed after those entries in the same step replaced it (checked above).
        if let Some(last) = last_applied.filter(|_| !divergent) {
            if let Some(driver) = self.replicas[node]
                .driver
                .as_ref()
                .filter(|driver| driver.node().applied_index() == last)
            {
                let digest = lockstep_core::StateMachine::digest(driver.state().machine());
                let result = self.state_machine_safety.digest(id, last.get(), digest);
                self.check("state machine safety", result);
            }
        }
        if let Some(reason) = failed {
            self.fail_stop(node, &format!("disk failure: {reason}"));
            return;
        }
        if checkpoint_pending && !self.replicas[node].checkpoint_scheduled {
            self.replicas[node].checkpoint_scheduled = true;
            let incarnation = self.replicas[node].incarnation;
            let delay = self.rng.range(MILLIS, 20 * MILLIS);
            self.schedule(delay, Event::CheckpointDone { node, incarnation });
        }
        if needs_sync {
            self.replicas[node].sync_scheduled = true;
            let incarnation = self.replicas[node].incarnation;
            let delay = self.rng.range(50, 2 * MILLIS);
            self.schedule(delay, Event::Sync { node, incarnation });
        }
    }

    fn sync(&mut self, node: usize, incarnation: u64) {
        let sabotage = self.config.sabotage;
        let replica = &mut self.replicas[node];
        if replica.incarnation != incarnation {
            return;
        }
        replica.sync_scheduled = false;
        let Some(driver) = replica.driver.as_mut() else { return };
        let storage = driver.storage_mut();
        let write = storage.take_submitted();
        if write == 0 {
            return;
        }
        if sabotaged!(sabotage, AckBeforeSync) {
            // Acknowledge now, sync a little later: a crash in between loses what was promised.
            driver.write_durable(write);
            self.pump(node);
            let delay = self.rng.range(5 * MILLIS, 50 * MILLIS);
            self.schedule(delay, Event::LateSync { node, incarnation });
            return;
        }
        match storage.sync() {
            Ok(()) => {
                driver.write_durable(write);
                self.pump(node);
            }
            Err(error) => {
                self.fail_stop(node, &format!("sync failed: {error}"));
            }
        }
    }

    /// Writes the checkpoint the driver handed over (it was taken earlier; applying went on).
    fn checkpoint_done(&mut self, node: usize, incarnation: u64) {
        let replica = &mut self.replicas[node];
        if replica.incarnation != incarnation {
            return;
        }
        replica.checkpoint_scheduled = false;
        let Some(driver) = replica.driver.as_mut() else { return };
        let Some((meta, state)) = driver.storage_mut().take_checkpoint() else { return };
        let saved = driver.storage_mut().save_checkpoint(meta.clone(), state.as_ref()).is_ok();
        if saved {
            driver.checkpoint_saved(&meta);
            self.report.checkpoints += 1;
        } else {
            driver.checkpoint_failed();
        }
        self.pump(node);
    }

    fn late_sync(&mut self, node: usize, incarnation: u64) {
        let replica = &mut self.replicas[node];
        if replica.incarnation != incarnation {
            return;
        }
        let Some(driver) = replica.driver.as_mut() else { return };
        if let Err(error) = driver.storage_mut().sync() {
            self.fail_stop(node, &format!("sync failed: {error}"));
        }
    }

    fn route(&mut self, from: usize, message: Message) {
        let Some(to) = (message.to.get() as usize).checked_sub(1) else { return };
        if to >= self.replicas.len() || self.blocked.contains(&(from, to)) {
            self.report.messages_dropped += 1;
            return;
        }
        if self.rng.range(0, 1000) < self.loss_per_mille {
            self.report.messages_dropped += 1;
            return;
        }
        let copies = if self.rng.range(0, 1000) < self.duplicate_per_mille { 2 } else { 1 };
        // A message spends a moment in the sender's buffers: a crash then loses it.
        let departs = self.now + self.rng.range(0, 300);
        let sender = (from, self.replicas[from].incarnation);
        for _ in 0..copies {
            let delay = departs - self.now + self.delay();
            let message = message.clone();
            self.schedule(delay, Event::Deliver { to, message, sender, departs });
        }
    }

    fn delay(&mut self) -> Time {
        let base = self.rng.range(100, 100 + self.delay_spread_micros);
        // Now and then a much slower message, which reorders it behind later ones.
        if self.rng.range(0, 100) < 3 {
            base + self.rng.range(0, 30 * MILLIS)
        } else {
            base
        }
    }

    /// After every event: who leads, what is committed.
    fn observe(&mut self) {
        for node in 0..self.replicas.len() {
            let replica = &self.replicas[node];
            let Some(driver) = replica.driver.as_ref() else { continue };
            let core = driver.node();
            let id = core.id().get();
            let term = core.term().get();
            let commit = core.commit_index().get();
            let leading = core.role() == Role::Leader;
            let vote = core.hard_state().vote.map(|candidate| (term, candidate));
            let first =
                core.log_entries().next().map_or(core.last_index().get() + 1, |e| e.index.get());
            let new_leader_log: Option<Vec<EntryId>> = (leading
                && replica.was_leader_in != Some(term))
            .then(|| core.log_entries().map(entry_id).collect());
            let from = replica.checked_commit;
            let newly: Vec<(u64, EntryId)> = (from + 1..=commit)
                .filter_map(|index| core.log_entry(LogIndex(index)))
                .map(|entry| (entry.index.get(), entry_id(entry)))
                .collect();
            if leading {
                let result = self.election_safety.observe_leader(term, id);
                self.check("election safety", result);
            }
            if let Some(log) = new_leader_log {
                let result = self.leader_completeness.new_leader(id, term, first, &log);
                self.check("leader completeness", result);
                self.replicas[node].was_leader_in = Some(term);
                self.note(|| format!("replica {id} leads term {term}"));
                // New leaders are the most fragile moment: kill some soon after they win, with
                // their first entries half replicated.
                if self.healed.is_none() && self.rng.range(0, 1000) < self.kill_per_mille {
                    let incarnation = self.replicas[node].incarnation;
                    let delay = match self.rng.range(0, 3) {
                        0 => self.rng.range(0, MILLIS / 2),
                        1 => self.rng.range(0, 5 * MILLIS),
                        _ => self.rng.range(0, 30 * MILLIS),
                    };
                    let restart_after = self.restart_delay();
                    self.schedule(delay, Event::Kill { node, incarnation, restart_after });
                }
            }
            if vote.is_some() && vote != self.replicas[node].last_vote {
                self.replicas[node].last_vote = vote;
                // A replica that just voted, killed and back at once, must remember its vote.
                if self.healed.is_none() && self.rng.range(0, 1000) < self.kill_per_mille / 2 {
                    let incarnation = self.replicas[node].incarnation;
                    let delay = self.rng.range(0, 2 * MILLIS);
                    let restart_after = self.rng.range(MILLIS, 10 * MILLIS);
                    self.schedule(delay, Event::Kill { node, incarnation, restart_after });
                }
            }
            if leading && commit > from && self.healed.is_none() {
                // A leader that just advanced its commit index, killed before it tells anyone:
                // what it committed must survive on the others.
                if self.rng.range(0, 4000) < self.kill_per_mille {
                    let incarnation = self.replicas[node].incarnation;
                    let delay = self.rng.range(0, MILLIS / 2);
                    let restart_after = self.restart_delay();
                    self.schedule(delay, Event::Kill { node, incarnation, restart_after });
                }
            }
            for (index, entry) in newly {
                // The replica that sees the commit is in the committing leader's term or a
                // later one: the entry was committed in `term` at the latest.
                let bound = term;
                let result = self.leader_completeness.committed(id, index, entry, bound);
                self.check("leader completeness", result);
            }
            self.replicas[node].checked_commit = commit.max(from);
        }
    }

    fn check_logs(&mut self) {
        let logs: Vec<(u64, u64, Vec<EntryId>)> = self
            .replicas
            .iter()
            .filter_map(|replica| {
                let core = replica.driver.as_ref()?.node();
                let first = core
                    .log_entries()
                    .next()
                    .map_or(core.last_index().get() + 1, |e| e.index.get());
                Some((replica.id.get(), first, core.log_entries().map(entry_id).collect()))
            })
            .collect();
        let result = self.log_matching.check(&logs);
        self.check("log matching", result);
        // Each replica's own invariants (the core's self-check), now and then.
        let broken: Vec<String> = self
            .replicas
            .iter()
            .filter_map(|replica| replica.driver.as_ref()?.node().check_invariants().err())
            .collect();
        if let Some(reason) = broken.into_iter().next() {
            self.violation("invariants", reason);
        }
    }

    // ----- clients -----------------------------------------------------------------------

    fn next_operation(&mut self, client: usize) {
        if self.clients[client].stopping || self.clients[client].current.is_some() {
            return;
        }
        let key = self.rng.range(0, self.config.keys);
        let input = match self.rng.range(0, 20) {
            0..=5 => Input::Put(self.fresh_value(client)),
            6..=12 => Input::Get,
            13..=17 => {
                // Expect the value this client last saw, or another recent one, or absence.
                let expected = self
                    .history
                    .iter()
                    .rev()
                    .filter(|operation| operation.key == key)
                    .find_map(|operation| match (&operation.input, &operation.returned) {
                        (Input::Put(value), _) => Some(Some(*value)),
                        (Input::CompareAndSet { new, .. }, _) => Some(Some(*new)),
                        (_, Some((_, Output::Value(value)))) => Some(*value),
                        _ => None,
                    })
                    .unwrap_or(None);
                Input::CompareAndSet { expected, new: self.fresh_value(client) }
            }
            _ => Input::Delete,
        };
        let operation = self.history.len();
        self.history.push(Operation {
            client: self.clients[client].session.0,
            key,
            input: input.clone(),
            call: self.now,
            returned: None,
        });
        let verified_reads = self.config.verified_outputs;
        let state = &mut self.clients[client];
        let sequence = if input == Input::Get && !verified_reads {
            0
        } else {
            // (With verified outputs a read goes through the log, as a request of the session.)
            state.next_sequence += 1;
            state.next_sequence - 1
        };
        let wire = Wire {
            client,
            operation,
            session: state.session,
            sequence,
            request: KvInput { key, input },
        };
        state.current = Some((operation, wire));
        self.send(client);
    }

    fn fresh_value(&mut self, client: usize) -> u64 {
        self.clients[client].next_value += 1;
        self.clients[client].next_value
    }

    fn send(&mut self, client: usize) {
        let state = &mut self.clients[client];
        let Some((_, wire)) = state.current.clone() else { return };
        state.attempt += 1;
        let (attempt, node) = (state.attempt, state.target);
        let timeout = self.rng.range(100 * MILLIS, 400 * MILLIS);
        self.schedule(timeout, Event::Timeout { client, attempt });
        if self.rng.range(0, 1000) < self.loss_per_mille {
            return;
        }
        let delay = self.delay();
        self.schedule(delay, Event::Request { node, wire });
    }

    fn request(&mut self, node: usize, wire: Wire) {
        let local_millis = self.local_millis(node);
        let sabotage = self.config.sabotage;
        let Some(driver) = self.replicas[node].driver.as_mut() else { return };
        let (client, operation) = (wire.client, wire.operation);
        if wire.request.input == Input::Get && !self.config.verified_outputs {
            if sabotaged!(sabotage, ReadWithoutReadIndex) {
                let output = driver.state().machine().get(wire.request.key);
                self.answer(client, operation, Ok(Output::Value(output)));
                return;
            }
            let request = driver.read(wire.request.key);
            self.replicas[node].requests.insert(request, (client, operation));
        } else {
            let request = ClientRequest {
                client: wire.session,
                sequence: wire.sequence,
                input: wire.request,
            };
            if self.config.batch {
                let replica = &mut self.replicas[node];
                if replica.batch.is_empty() {
                    let incarnation = replica.incarnation;
                    self.schedule(MILLIS, Event::Flush { node, incarnation });
                }
                self.replicas[node].batch.push((request, (client, operation)));
                return;
            }
            let request = driver.propose(request, local_millis);
            self.replicas[node].requests.insert(request, (client, operation));
        }
        self.pump(node);
    }

    /// Proposes the writes replica `node` gathered, as one batch.
    fn flush(&mut self, node: usize, incarnation: u64) {
        let local_millis = self.local_millis(node);
        let replica = &mut self.replicas[node];
        if replica.incarnation != incarnation {
            return;
        }
        let gathered = std::mem::take(&mut replica.batch);
        if gathered.len() > 1 {
            self.report.writes_batched += gathered.len() as u64;
        }
        let replica = &mut self.replicas[node];
        let Some(driver) = replica.driver.as_mut() else { return };
        let (requests, operations): (Vec<_>, Vec<_>) = gathered.into_iter().unzip();
        let ids = driver.propose_batch(requests, local_millis);
        for (id, operation) in ids.into_iter().zip(operations) {
            replica.requests.insert(id, operation);
        }
        self.pump(node);
    }

    fn local_millis(&self, node: usize) -> u64 {
        let replica = &self.replicas[node];
        // A clock running at the replica's tick rate.
        replica.clock_offset_millis + self.now * 10 / replica.tick_micros
    }

    /// Sends an answer back to the client, over the network.
    fn answer(&mut self, client: usize, operation: usize, answer: Result<Output, Refusal>) {
        if self.rng.range(0, 1000) < self.loss_per_mille {
            return;
        }
        let delay = self.delay();
        self.schedule(delay, Event::Reply { client, operation, answer });
    }

    fn reply(&mut self, client: usize, operation: usize, answer: Result<Output, Refusal>) {
        let Some((current, wire)) = self.clients[client].current.clone() else { return };
        if current != operation {
            return;
        }
        match answer {
            Ok(output) => {
                let session = wire.session.0;
                self.note(|| format!("session {session}: {:?} -> {output:?}", wire.request));
                self.history[operation].returned = Some((self.now, output));
                self.report.requests_completed += 1;
                if wire.request.input != Input::Get {
                    self.durability.acknowledged(wire.session.0, wire.sequence);
                }
                self.finish_operation(client);
            }
            Err(Refusal::NotLeader { leader }) => {
                let target = match leader {
                    Some(leader) => leader.get() as usize - 1,
                    None => self.rng.range(0, self.replicas.len() as u64) as usize,
                };
                self.retry(client, target.min(self.replicas.len() - 1));
            }
            Err(Refusal::Retry(_) | Refusal::Lost) => {
                // Usually the same replica again; now and then another, as a client that
                // rotates does (the one it asks may be cut off from the cluster for good).
                let target = if self.rng.range(0, 4) == 0 {
                    self.rng.range(0, self.replicas.len() as u64) as usize
                } else {
                    self.clients[client].target
                };
                self.retry(client, target);
            }
            Err(Refusal::Stale) => {
                // The session expired: whether the request applied is unknown. Start a new
                // session; the operation stays unanswered in the history.
                let state = &mut self.clients[client];
                state.generation += 1;
                state.session = ClientId(client as u64 * 1_000 + 1 + state.generation);
                state.next_sequence = 1;
                self.finish_operation(client);
            }
            Err(Refusal::TooLarge { bytes, max }) => {
                self.violation("driver", format!("a {bytes}-byte request refused (max {max})"));
            }
            Err(Refusal::Malformed) => {
                self.violation("driver", format!("a well-formed request was refused: {wire:?}"));
            }
        }
    }

    fn retry(&mut self, client: usize, target: usize) {
        let state = &mut self.clients[client];
        state.target = target;
        state.attempt += 1;
        let attempt = state.attempt;
        let backoff = self.rng.range(MILLIS, 10 * MILLIS);
        self.schedule(backoff, Event::Send { client, attempt });
    }

    fn finish_operation(&mut self, client: usize) {
        self.clients[client].current = None;
        self.clients[client].attempt += 1;
        let think = self.rng.range(0, 5 * MILLIS);
        self.schedule(think, Event::Think { client });
    }

    // ----- the nemesis -------------------------------------------------------------------

    fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (node, replica) in self.replicas.iter().enumerate() {
            let Some(driver) = replica.driver.as_ref() else { continue };
            if driver.node().role() == Role::Leader {
                let term = driver.node().term().get();
                if best.is_none_or(|(best_term, _)| term > best_term) {
                    best = Some((term, node));
                }
            }
        }
        best.map(|(_, node)| node)
    }

    /// How long a replica killed at a fragile moment stays down.
    fn restart_delay(&mut self) -> Time {
        if self.kill_per_mille >= 900 {
            self.rng.range(2 * MILLIS, 40 * MILLIS)
        } else {
            self.rng.range(5 * MILLIS, 200 * MILLIS)
        }
    }

    fn nemesis(&mut self) {
        if self.healed.is_some() {
            return;
        }
        let n = self.replicas.len();
        match self.rng.range(0, 16) {
            0..=1 => {
                // A symmetric partition into two sides.
                self.blocked.clear();
                let side: Vec<bool> = (0..n).map(|_| self.rng.range(0, 2) == 0).collect();
                for a in 0..n {
                    for b in 0..n {
                        if side[a] != side[b] {
                            self.blocked.insert((a, b));
                        }
                    }
                }
                self.note(|| format!("nemesis: partition {side:?}"));
            }
            2 => {
                // One-way losses on a few links.
                for _ in 0..self.rng.range(1, n as u64 + 1) {
                    let a = self.rng.range(0, n as u64) as usize;
                    let b = self.rng.range(0, n as u64) as usize;
                    if a != b {
                        self.blocked.insert((a, b));
                    }
                }
                let blocked = self.blocked.clone();
                self.note(|| format!("nemesis: one-way blocks {blocked:?}"));
            }
            3..=4 => {
                if let Some(leader) = self.leader() {
                    self.blocked.clear();
                    for other in (0..n).filter(|&other| other != leader) {
                        self.blocked.insert((leader, other));
                        self.blocked.insert((other, leader));
                    }
                    let id = leader + 1;
                    self.note(|| format!("nemesis: isolate the leader {id}"));
                }
            }
            5..=7 => {
                self.blocked.clear();
                self.note(|| "nemesis: heal the network".to_string());
            }
            8..=10 => {
                let node = self.rng.range(0, n as u64) as usize;
                self.crash(node, "nemesis");
                let delay = self.rng.range(10 * MILLIS, 1_000 * MILLIS);
                self.schedule(delay, Event::Restart { node });
            }
            11 => {
                // A majority at once: whatever was acknowledged must survive on their disks.
                let leader = self.leader();
                let mut nodes: Vec<usize> = (0..n).collect();
                if let Some(leader) = leader {
                    nodes.swap(0, leader);
                }
                for &node in nodes.iter().take(n / 2 + 1) {
                    self.crash(node, "nemesis: majority");
                    let delay = self.rng.range(10 * MILLIS, 500 * MILLIS);
                    self.schedule(delay, Event::Restart { node });
                }
            }
            12..=13 => {
                self.loss_per_mille = [0, 0, 10, 50, 200][self.rng.range(0, 5) as usize];
                self.duplicate_per_mille = [0, 10, 50][self.rng.range(0, 3) as usize];
                self.delay_spread_micros =
                    [MILLIS, 3 * MILLIS, 20 * MILLIS][self.rng.range(0, 3) as usize];
                let (loss, duplicate) = (self.loss_per_mille, self.duplicate_per_mille);
                self.note(|| format!("nemesis: loss {loss}‰ duplication {duplicate}‰"));
            }
            _ => {
                // Disks that fail now and then (each failure crashes its replica).
                let faulty = self.rng.range(0, n as u64) as usize;
                for (node, replica) in self.replicas.iter().enumerate() {
                    let faults = if node == faulty {
                        Faults {
                            write_error_per_million: 2_000,
                            sync_error_per_million: 5_000,
                            ..Faults::default()
                        }
                    } else {
                        Faults::default()
                    };
                    replica.disk.set_faults(faults);
                }
                let id = faulty + 1;
                self.note(|| format!("nemesis: replica {id}'s disk starts failing"));
            }
        }
        let next = if self.kill_per_mille >= 900 {
            self.rng.range(20 * MILLIS, 150 * MILLIS)
        } else {
            self.rng.range(50 * MILLIS, 400 * MILLIS)
        };
        self.schedule(next, Event::Nemesis);
    }

    /// One step of the membership plan, on the leader: promote a learner (completing a
    /// replacement if one is pending), or add a learner, remove a voter, or start a
    /// replacement.
    fn change_membership(&mut self) {
        let next = self.rng.range(100 * MILLIS, 400 * MILLIS);
        if self.healed.is_some() {
            return;
        }
        self.schedule(next, Event::Membership);
        let Some(leader) = self.leader() else { return };
        let Some(driver) = self.replicas[leader].driver.as_ref() else { return };
        if driver.node().config_in_flight().is_some() {
            return;
        }
        let leader_id = self.replicas[leader].id;
        let current = driver.node().membership().clone();
        let voters: Vec<NodeId> = current.voters.iter().copied().collect();
        let change = if let Some(&learner) = current.learners.iter().next() {
            match self.replacing {
                Some(old) if current.voters.contains(&old) => {
                    let mut voters = current.voters.clone();
                    voters.remove(&old);
                    voters.insert(learner);
                    MembershipChange::SetVoters(voters)
                }
                _ => MembershipChange::Promote(learner),
            }
        } else {
            let spare = self.replicas.iter().position(|replica| {
                !replica.active && !replica.created && replica.bootstrap.is_none()
            });
            match (self.rng.range(0, 3), spare) {
                (1, _) if voters.len() > self.config.replicas => {
                    // Shrink, the leader itself one time in three.
                    let pick = if self.rng.range(0, 3) == 0 {
                        leader_id
                    } else {
                        voters[self.rng.range(0, voters.len() as u64) as usize]
                    };
                    MembershipChange::Remove(pick)
                }
                (2, Some(spare)) if voters.len() >= self.config.replicas => {
                    let old = if self.rng.range(0, 3) == 0 {
                        leader_id
                    } else {
                        voters[self.rng.range(0, voters.len() as u64) as usize]
                    };
                    self.replacing = Some(old);
                    MembershipChange::AddLearner(self.replicas[spare].id)
                }
                (_, Some(spare)) => MembershipChange::AddLearner(self.replicas[spare].id),
                _ => return,
            }
        };
        let removes_leader = match &change {
            MembershipChange::Remove(id) => *id == leader_id,
            MembershipChange::SetVoters(voters) => !voters.contains(&leader_id),
            _ => false,
        };
        let Some(driver) = self.replicas[leader].driver.as_mut() else { return };
        let described = format!("{change:?}");
        match driver.change_membership(change.clone()) {
            Ok(index) => {
                let membership = driver.node().membership().clone();
                self.note(|| format!("membership: {described} at {index} -> {membership}"));
                if removes_leader {
                    self.removed_leader = Some(leader_id);
                }
                if membership.is_joint() && self.rng.range(0, 2) == 0 {
                    // The fragile moment of a joint change: before the entry reaches them, cut
                    // the voters that stay (the leader aside) and those that leave off from the
                    // leader and the voters that arrive. Only joint consensus keeps the two
                    // sides from deciding alone.
                    let incoming: BTreeSet<usize> = membership
                        .voters
                        .difference(&membership.voters_outgoing)
                        .chain(std::iter::once(&leader_id))
                        .map(|id| (id.get() - 1) as usize)
                        .collect();
                    self.blocked.clear();
                    for a in 0..self.replicas.len() {
                        for b in 0..self.replicas.len() {
                            if incoming.contains(&a) != incoming.contains(&b) {
                                self.blocked.insert((a, b));
                            }
                        }
                    }
                    self.note(|| format!("nemesis: partition the joint change along {incoming:?}"));
                }
                if let MembershipChange::AddLearner(id) = change {
                    // The new replica starts empty, knowing the configuration that names it.
                    let node = (id.get() - 1) as usize;
                    self.replicas[node].bootstrap = Some(membership);
                    self.replicas[node].active = true;
                    self.start(node);
                }
                self.pump(leader);
            }
            Err(error) => {
                self.note(|| format!("membership: {described} refused: {error}"));
            }
        }
    }

    /// Counts the changes that committed, and stops replicas that were removed.
    fn observe_membership(&mut self) {
        let Some(leader) = self.leader() else { return };
        let Some(driver) = self.replicas[leader].driver.as_ref() else { return };
        if driver.node().config_in_flight().is_some() {
            return;
        }
        // Committed configurations only move forward; a leader cut off in an old term may still
        // show an older one.
        let index = driver.node().last_config_index();
        if index <= self.committed_config_index {
            return;
        }
        self.committed_config_index = index;
        let now = driver.node().membership().clone();
        let before = std::mem::replace(&mut self.committed_membership, now.clone());
        if before == now {
            return;
        }
        let added_learners = now.learners.difference(&before.learners).count() as u64;
        let new_voters: Vec<NodeId> = now.voters.difference(&before.voters).copied().collect();
        let gone_voters: Vec<NodeId> = before.voters.difference(&now.voters).copied().collect();
        let counts = &mut self.report.changes;
        counts.learners_added += added_learners;
        match (new_voters.len(), gone_voters.len()) {
            (0, 0) => {}
            (1, 0) => counts.promotions += 1,
            (0, _) => counts.removals += gone_voters.len() as u64,
            _ => counts.replacements += 1,
        }
        if let Some(removed) = self.removed_leader {
            if gone_voters.contains(&removed) {
                counts.leaders_removed += 1;
                self.removed_leader = None;
            }
        }
        if self.replacing.is_some_and(|old| gone_voters.contains(&old)) {
            self.replacing = None;
        }
        self.note(|| format!("membership committed: {now}"));
        // Replicas no longer members stop for good.
        let removed: Vec<usize> = (0..self.replicas.len())
            .filter(|&node| {
                let replica = &self.replicas[node];
                replica.active && before.contains(replica.id) && !now.contains(replica.id)
            })
            .collect();
        for node in removed {
            self.replicas[node].active = false;
            self.crash(node, "removed from the cluster");
        }
    }

    fn heal(&mut self) {
        self.healed = Some(self.now);
        self.blocked.clear();
        self.loss_per_mille = 0;
        self.duplicate_per_mille = 0;
        self.delay_spread_micros = 2 * MILLIS;
        for replica in &self.replicas {
            replica.disk.set_faults(Faults::default());
        }
        for node in 0..self.replicas.len() {
            if self.replicas[node].driver.is_none() && self.replicas[node].active {
                self.start(node);
            }
        }
        for client in &mut self.clients {
            client.stopping = true;
        }
        self.note(|| "heal: every fault ends; clients finish what they started".to_string());
    }

    /// Flips one bit in stopped replica `node`'s latest checkpoint, or in a record frame of
    /// its log whose damage can be
    /// found (a later frame records it as synced, or its segment is complete: damage to the
    /// last synced frames cannot be told from a write torn at a crash, see docs/storage.md),
    /// if at most a minority would then be short of entries it lost.
    fn damage_log(&mut self, node: usize) {
        if self.short_of_lost(node) || !self.faults_leave_quorum(node) {
            return;
        }
        // A quarter of the time the latest checkpoint, if there is one; else a log record.
        let snapshots = Path::new(DATA_DIR).join("snapshots");
        let checkpoint = lockstep_storage::Disk::list(&self.replicas[node].disk, &snapshots)
            .unwrap_or_default()
            .into_iter()
            .filter(|name| name.ends_with(".snap"))
            .max()
            .map(|name| snapshots.join(name))
            .and_then(|path| {
                let len = self.replicas[node].disk.contents(&path).map_or(0, |bytes| bytes.len());
                (len > 0).then_some((path, 0, len as u64))
            });
        let target = match checkpoint {
            Some(checkpoint) if self.rng.range(0, 4) == 0 => checkpoint,
            _ => {
                let wal = Path::new(DATA_DIR).join("wal");
                let disk = &self.replicas[node].disk;
                let Ok(frames) = lockstep_storage::wal::record_frames(disk, &wal) else { return };
                let provable: Vec<_> = frames.into_iter().filter(|frame| frame.3).collect();
                if provable.is_empty() {
                    return;
                }
                let (path, offset, len, _) =
                    provable[self.rng.range(0, provable.len() as u64) as usize].clone();
                (path, offset, len)
            }
        };
        let (path, offset, len) = target;
        let at = offset + self.rng.range(0, len);
        let bit = self.rng.range(0, 8) as u8;
        if self.replicas[node].disk.flip_bit(&path, at, bit).is_ok() {
            self.report.disk_damage_injected += 1;
            self.replicas[node].damage_pending = true;
            let flipped = self.replicas[node]
                .disk
                .contents(&path)
                .and_then(|bytes| bytes.get(at as usize).copied())
                .unwrap_or(0);
            self.replicas[node].damage_at = Some((path.clone(), at, flipped));
            let id = self.replicas[node].id;
            self.note(|| {
                format!("replica {id}: bit {bit} of byte {at} in {} flipped", path.display())
            });
        }
    }

    /// Whether the faulty replicas (short of entries their storage lost, or divergent), with
    /// `node` one of them, still leave a quorum of sound voters in every configuration that
    /// may decide: the one the cluster committed and each one a replica holds or held when it
    /// stopped. Counting against every replica slot instead let faults reach a majority of a
    /// three-voter configuration while four spare replicas sat outside it, and the nemesis
    /// then caused a loss of data no protocol can repair.
    fn faults_leave_quorum(&self, node: usize) -> bool {
        let faulty: BTreeSet<NodeId> = (0..self.replicas.len())
            .filter(|&other| other == node || self.short_of_lost(other))
            .map(|other| self.replicas[other].id)
            .chain(
                self.audit
                    .injected
                    .iter()
                    .filter(|injected| injected.ending.is_none())
                    .map(|injected| NodeId(injected.replica)),
            )
            .collect();
        let held = self.replicas.iter().filter_map(|replica| match &replica.driver {
            Some(driver) => Some(driver.node().membership()),
            None => replica.membership_seen.as_ref(),
        });
        std::iter::once(&self.committed_membership)
            .chain(held)
            .all(|membership| membership.is_quorum(&|id| !faulty.contains(&id)))
    }

    /// Whether replica `node`'s log was damaged and it does not hold what it lost again yet.
    fn short_of_lost(&self, node: usize) -> bool {
        let replica = &self.replicas[node];
        replica.damage_pending
            || replica.disk.contents(&Path::new(DATA_DIR).join("lost-entries")).is_some()
    }

    // ----- the end -----------------------------------------------------------------------

    /// Whether the healed cluster has finished: a leader, every request answered, every
    /// replica up and applied through the leader's commit index, which covers its whole log.
    fn finished(&self) -> bool {
        if self.clients.iter().any(|client| client.current.is_some()) {
            return false;
        }
        let members = self.committed_membership.members();
        if self.audit.injected.iter().any(|injected| {
            injected.since.is_some()
                && injected.ending.is_none()
                && injected.seeable()
                && members.contains(&NodeId(injected.replica))
        }) {
            return false;
        }
        let Some(leader) = self.leader() else { return false };
        let Some(driver) = self.replicas[leader].driver.as_ref() else { return false };
        let commit = driver.node().commit_index();
        if commit < driver.node().last_index() {
            return false;
        }
        let members = driver.node().membership().members();
        self.replicas.iter().filter(|replica| members.contains(&replica.id)).all(|replica| {
            replica.driver.as_ref().is_some_and(|driver| {
                driver.node().applied_index() == commit && driver.node().last_index() == commit
            })
        })
    }

    fn report_liveness_failure(&mut self) {
        let outstanding: Vec<String> = self
            .clients
            .iter()
            .filter_map(|client| client.current.as_ref())
            .map(|(_, wire)| format!("{:?} from session {}", wire.request, wire.session.0))
            .collect();
        let replicas: Vec<String> = self
            .replicas
            .iter()
            .map(|replica| match replica.driver.as_ref() {
                Some(driver) => {
                    let core = driver.node();
                    let progress: Vec<String> = self
                        .replicas
                        .iter()
                        .filter_map(|other| {
                            core.progress(other.id).map(|p| {
                                format!(
                                    "{}:{:?} match {} next {} inflight-full {}",
                                    other.id,
                                    p.state,
                                    p.match_index,
                                    p.next_index,
                                    p.is_paused(256, 16 << 20)
                                )
                            })
                        })
                        .collect();
                    format!(
                        "{} {} term {} leader {:?} {} commit {} applied {} last {} first {:?} {:?} \
                         {progress:?}",
                        replica.id,
                        core.role(),
                        core.term(),
                        core.leader(),
                        core.membership(),
                        core.commit_index(),
                        core.applied_index(),
                        core.last_index(),
                        core.log_entries().next().map(|entry| entry.index),
                        driver.checkpoint_stats(),
                    ) + &format!(
                        "{}{} transfers {:?} latest checkpoint {:?}",
                        if core.quarantined() { " quarantined" } else { "" },
                        core.lost_through()
                            .map(|i| format!(" short-through {i}"))
                            .unwrap_or_default(),
                        driver.transfers(),
                        lockstep_node::Storage::latest_checkpoint(driver.storage())
                            .map(|checkpoint| checkpoint.meta.last_index)
                    ) + &driver
                        .snapshot_refusals()
                        .last()
                        .map(|reason| format!(" last refusal: {reason}"))
                        .unwrap_or_default()
                }
                None => format!("{} down", replica.id),
            })
            .collect();
        let healed = self.healed.unwrap_or(0) / MILLIS;
        self.violation(
            "liveness",
            format!(
                "{} ms after the faults healed (at {healed} ms) the cluster has not finished: \
                 outstanding requests {outstanding:?}; replicas {replicas:?}",
                self.config.liveness_millis
            ),
        );
    }

    // ----- divergence ----------------------------------------------------------------------

    /// Injects a divergence into one running replica (one at a time).
    fn diverge(&mut self) {
        if self.healed.is_some() {
            return;
        }
        let next = self.rng.range(200 * MILLIS, 700 * MILLIS);
        self.schedule(next, Event::Diverge);
        // One faulty replica at a time within the budget: a replica short of entries its
        // storage lost counts too.
        if self.audit.any_active() {
            return;
        }
        let running: Vec<usize> = (0..self.replicas.len())
            .filter(|&node| self.replicas[node].driver.is_some() && self.replicas[node].active)
            .collect();
        if running.is_empty() {
            return;
        }
        let node = running[self.rng.range(0, running.len() as u64) as usize];
        if !self.faults_leave_quorum(node) {
            return;
        }
        let corruption = self.rng.range(0, 2) == 0;
        let key = self.rng.range(0, self.config.keys);
        // Each fault its own wrong value: two faults never make the same mistake.
        let noise = self.rng.next_u64() >> 2;
        let replica = &mut self.replicas[node];
        let id = replica.id.get();
        let Some(driver) = replica.driver.as_mut() else { return };
        let applied = driver.node().applied_index();
        let machine = driver.state_mut().machine_mut();
        let (kind, since) = if corruption {
            machine.corrupt(key, applied, noise);
            (FaultKind::Corruption, Some(applied.get()))
        } else {
            machine.diverge_next_write(noise);
            (FaultKind::NonDeterministic, None)
        };
        self.audit.injected.push(Injected::new(id, kind, since));
        self.note(|| format!("divergence: {kind:?} on replica {id} (applied {applied})"));
    }

    /// Follows the divergence on replica `node` (and, on a leader, the replicas it holds
    /// quarantined): when it took effect, when the audit found it, when it ended.
    fn observe_divergence(&mut self, node: usize) {
        let Some(driver) = self.replicas[node].driver.as_ref() else { return };
        let id = self.replicas[node].id.get();
        let applied = driver.node().applied_index().get();
        let diverged_at = driver.state().machine().diverged_at();
        let quarantined = driver.quarantined_replicas();
        let digest = lockstep_core::StateMachine::digest(driver.state().machine());
        let agrees = self.state_machine_safety.agrees(applied, digest);
        if let Some(active) = self.audit.active(id) {
            if active.since.is_none() {
                active.since = diverged_at.map(LogIndex::get);
            }
            if let Some(since) = active.since {
                if active.latency.is_none() && quarantined.contains(&NodeId(id)) {
                    active.latency = Some(active.comparable);
                }
                if applied > since && agrees == Some(true) {
                    let ending =
                        if active.latency.is_some() { Ending::Repaired } else { Ending::Cleared };
                    active.ending = Some(ending);
                    self.note(|| {
                        format!("divergence on replica {id} ends: {ending:?} at {applied}")
                    });
                }
            }
        }
        for found in quarantined {
            let Some(found_node) = self.replicas.iter().position(|r| r.id == found) else {
                continue;
            };
            let found_applied = self.replicas[found_node]
                .driver
                .as_ref()
                .map_or(0, |driver| driver.node().applied_index().get());
            let ever =
                self.audit.injected.iter().any(|i| i.replica == found.get() && i.since.is_some());
            if !ever {
                self.violation(
                    "audit",
                    format!("replica {found} was quarantined, yet its state never departed"),
                );
                continue;
            }
            if let Some(active) = self.audit.active(found.get()) {
                if let (Some(since), None) = (active.since, active.latency) {
                    active.latency = Some(active.comparable);
                    let (comparable, raw) = (active.comparable, active.raw);
                    self.note(|| {
                        format!(
                            "divergence on replica {found} found (since {since}, applied \
                             {found_applied}; {comparable} entries while comparable, {raw} in all)"
                        )
                    });
                }
            }
        }
    }

    /// A client got `output` from replica `node`: note where it came from, to judge it.
    fn note_delivered(&mut self, node: usize, client: usize, operation: usize, output: &Output) {
        let Some((current, wire)) = self.clients[client].current.as_ref() else { return };
        if *current != operation {
            return;
        }
        let id = self.replicas[node].id.get();
        if wire.request.input == Input::Get && !self.config.verified_outputs {
            // Answered from the replica's own state, not through the log: from a divergent
            // replica (not yet found), it is no answer the linearizability check can judge.
            let divergent = self.audit.active(id).is_some_and(|active| active.since.is_some());
            if matches!(output, Output::Value(Some(value)) if value & crate::kv::WRONG != 0) {
                self.wrong_reads.push(operation);
            } else if divergent {
                self.unjudged_reads.push(operation);
            }
            return;
        }
        self.audit.delivered(id, operation, (wire.session.0, wire.sequence));
    }

    /// Whether a majority of voters other than `node` run and can reach the leader (and the
    /// leader them), with at most 5% of messages lost: only then can the audit tell which
    /// replica differs in a bounded number of entries.
    fn majority_can_compare(&self, node: usize) -> bool {
        // Under heavy message loss reports are lost as often as they are sent.
        if self.loss_per_mille > 50 {
            return false;
        }
        let Some(leader) = self.leader() else { return false };
        let voters = &self.committed_membership.voters;
        let reachable = self
            .replicas
            .iter()
            .enumerate()
            .filter(|(other, replica)| {
                *other != node
                    && voters.contains(&replica.id)
                    && replica.driver.is_some()
                    && (*other == leader
                        || (!self.blocked.contains(&(*other, leader))
                            && !self.blocked.contains(&(leader, *other))))
            })
            .count();
        reachable > voters.len() / 2
    }

    /// Whether replica `node` has applied to within the leader's compared window of digest
    /// points (see [`COMPARED_WINDOW_ENTRIES`]).
    fn within_compared_window(&self, node: usize) -> bool {
        let applied = |node: usize| {
            self.replicas[node].driver.as_ref().map(|driver| driver.node().applied_index().get())
        };
        match (self.leader().and_then(applied), applied(node)) {
            (Some(leader), Some(own)) => own + COMPARED_WINDOW_ENTRIES >= leader,
            _ => false,
        }
    }

    /// Every injected divergence found within the bound and ended; wrong answers counted (none
    /// allowed with verified outputs).
    fn check_audit(&mut self) {
        if !self.config.divergence && !self.config.verified_outputs {
            return;
        }
        let members = self.committed_membership.members();
        let injected = self.audit.injected.clone();
        for divergence in injected.iter().filter(|i| i.since.is_some()) {
            let member = members.contains(&NodeId(divergence.replica));
            if let Some(latency) = divergence.latency {
                if latency > DETECTION_BOUND_ENTRIES {
                    self.violation(
                        "audit",
                        format!(
                            "replica {}'s divergence ({:?}) was found {latency} entries after it \
                             happened (bound {DETECTION_BOUND_ENTRIES})",
                            divergence.replica, divergence.kind
                        ),
                    );
                }
            }
            if divergence.ending.is_none() && member && divergence.seeable() {
                self.violation(
                    "audit",
                    format!(
                        "replica {}'s divergence ({:?}, after index {}) was {}",
                        divergence.replica,
                        divergence.kind,
                        divergence.since.unwrap_or(0),
                        if divergence.latency.is_some() {
                            "found but never repaired"
                        } else {
                            "never found"
                        }
                    ),
                );
            }
        }
        let wrong = self.audit.wrong_outputs();
        self.report.wrong_outputs = (wrong.len() + self.wrong_reads.len()) as u64;
        if self.config.verified_outputs {
            if let Some((operation, replica, index)) = wrong.first() {
                self.violation(
                    "audit",
                    format!(
                        "with verified outputs, a client received replica {replica}'s answer to \
                         operation {operation} (entry {index}), which differs from the majority's"
                    ),
                );
            }
        }
        self.report.divergences_injected =
            injected.iter().filter(|i| i.since.is_some()).count() as u64;
        self.report.divergences_repaired =
            injected.iter().filter(|i| i.ending == Some(Ending::Repaired)).count() as u64;
        self.report.divergences_cleared = injected
            .iter()
            .filter(|i| i.since.is_some() && i.ending == Some(Ending::Cleared))
            .count() as u64;
        self.report.detection_latencies = self.audit.latencies();
    }

    /// Counts the replicas still short of entries their storage lost.
    fn count_lost_entry_holds_left(&mut self) {
        self.report.lost_entry_holds_left = self
            .replicas
            .iter()
            .filter_map(|replica| replica.driver.as_ref())
            .filter(|driver| driver.node().lost_through().is_some())
            .count() as u64;
    }

    fn final_checks(&mut self) {
        self.count_lost_entry_holds_left();
        self.check_logs();
        let mut digests = Vec::new();
        let members = self
            .leader()
            .and_then(|leader| self.replicas[leader].driver.as_ref())
            .map(|driver| driver.node().membership().members())
            .unwrap_or_default();
        for replica in self.replicas.iter().filter(|replica| members.contains(&replica.id)) {
            let Some(driver) = replica.driver.as_ref() else { continue };
            let id = replica.id.get();
            digests.push((
                id,
                driver.node().applied_index(),
                lockstep_core::StateMachine::digest(driver.state().machine()),
            ));
        }
        self.check_audit();
        for (id, index, digest) in digests {
            if self.audit.active(id).is_none_or(|active| active.since.is_none()) {
                let result = self.state_machine_safety.digest(id, index.get(), digest);
                self.check("state machine safety", result);
            }
            let Some(driver) =
                self.replicas.iter().find(|r| r.id.get() == id).and_then(|r| r.driver.as_ref())
            else {
                continue;
            };
            let sessions = driver.state().sessions();
            let result = self.durability.check_replica(id, |client, sequence| {
                sessions.last_applied(ClientId(client)).is_some_and(|last| last >= sequence)
            });
            self.check("durability", result);
        }
        self.check_linearizability();
    }

    /// The clients' history (an operation without an answer may or may not have happened, so
    /// this holds whether or not the cluster finished).
    fn check_linearizability(&mut self) {
        // Wrong answers (from a divergent replica, outputs not verified) were counted by the
        // audit check; the history holds what a correct store could have answered: a wrong
        // read is left out, a write answered wrongly took effect before its answer came, with
        // a result no one can judge (`Output::Unknown`). (Counting it as unanswered instead,
        // free to take effect or not at any time after its call, left the search dozens of
        // such writes to place in every order.)
        let mut wrong: BTreeSet<usize> =
            self.audit.wrong_outputs().iter().map(|wrong| wrong.0).collect();
        wrong.extend(self.wrong_reads.iter().copied());
        wrong.extend(self.unjudged_reads.iter().copied());
        let history: Vec<Operation> = self
            .history
            .iter()
            .enumerate()
            .filter(|(operation, entry)| !(wrong.contains(operation) && entry.input == Input::Get))
            .map(|(operation, entry)| {
                let mut entry = entry.clone();
                if wrong.contains(&operation) {
                    if let Some((_, output)) = entry.returned.as_mut() {
                        *output = Output::Unknown;
                    }
                }
                entry
            })
            .collect();
        match linearizability::check(&history) {
            Verdict::Linearizable => {}
            Verdict::Violation(violation) => {
                self.violation("linearizability", violation.to_string());
            }
            Verdict::Unknown { key } => {
                self.violation(
                    "linearizability",
                    format!("the search for key {key} exceeded its budget: nothing concluded"),
                );
            }
        }
    }
}

/// Where the replica's state departed from its log, if a fault made it.
fn driver_diverged_at(driver: Option<&SimDriver>) -> Option<u64> {
    driver.and_then(|driver| driver.state().machine().diverged_at()).map(LogIndex::get)
}

/// How many of `indexes` are after `since`.
fn last_applied_count(indexes: &[u64], since: u64) -> u64 {
    indexes.iter().filter(|index| **index > since).count() as u64
}

/// Whether recovery failed on an I/O error the disk injected (as opposed to finding damage).
fn is_injected_io_error(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Io(_)
            | StoreError::Snapshot(lockstep_storage::SnapshotError::Io(_))
            | StoreError::Wal(WalError::Io(_) | WalError::Poisoned(_))
            | StoreError::HardState(HardStateError::Io(_))
    )
}
