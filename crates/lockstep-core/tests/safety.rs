//! The safety properties of the Raft paper, checked after every input of randomized runs,
//! and proof that each checker catches a deliberately broken core.
//!
//! Every run is fixed by its seed. A failure prints the seed; replay one run with
//! `LOCKSTEP_SEED=<seed> cargo test -p lockstep-core --test safety replay -- --nocapture`.
//! `LOCKSTEP_SEEDS=<n>` changes how many seeds the sweeps run.

// Tests and benchmarks may read files and clocks; the purity rules are for `src/` only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod harness;

use bytes::Bytes;
use harness::checker::{NodeView, SafetyChecker};
use harness::Cluster;
use lockstep_core::rng::SeededRng;
use lockstep_core::{Config, Entry, EntryPayload, LogIndex, NodeId, ReadId, Role, Sabotage, Term};

/// How one randomized run is set up.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    replicas: u64,
    steps: usize,
    pre_vote: bool,
    check_quorum: bool,
    sabotage: Sabotage,
    /// Some crashes also lose the end of the durable log, as storage that cut its log at
    /// damage does (the replica is told it may have acknowledged what was lost).
    lose_entries: bool,
}

impl Scenario {
    fn new(replicas: u64) -> Scenario {
        Scenario {
            replicas,
            steps: 2000,
            pre_vote: true,
            check_quorum: true,
            sabotage: Sabotage::None,
            lose_entries: false,
        }
    }
}

/// What a run did, to show the runs exercise the protocol.
#[derive(Debug, Default)]
struct RunSummary {
    terms_with_leader: usize,
    committed: usize,
    reads_served: usize,
    crashes: usize,
    losses: usize,
}

/// Runs one randomized schedule: random ticks, deliveries (in any order), drops, duplicates,
/// proposals, reads, syncs, applies, crashes, partitions and transfers; then heals the
/// network and requires the cluster to elect a leader and commit a last proposal everywhere.
/// Returns the first safety violation, if any.
fn run(seed: u64, scenario: Scenario) -> Result<RunSummary, String> {
    let ids: Vec<u64> = (1..=scenario.replicas).collect();
    let mut cluster = Cluster::new(&ids, |config: &mut Config| {
        config.pre_vote = scenario.pre_vote;
        config.check_quorum = scenario.check_quorum;
        config.election_timeout_ticks_min = 10;
        config.election_timeout_ticks_max = 20;
        config.messages_in_flight_max = 4;
        config.sabotage = scenario.sabotage;
        config.random_seed = seed.wrapping_mul(1000).wrapping_add(config.id.0);
    });
    cluster.record_violations = true;
    let mut rng = SeededRng::new(seed);
    let node_ids = cluster.ids();
    let pick = |rng: &mut SeededRng| node_ids[rng.range(0, node_ids.len() as u64) as usize];
    let mut summary = RunSummary::default();
    let mut next_command = 0u64;
    let mut next_read = 0u64;
    for _ in 0..scenario.steps {
        if cluster.violation.is_some() {
            break;
        }
        let roll = rng.range(0, 1000);
        match roll {
            0..=249 => {
                let id = pick(&mut rng);
                cluster.node_mut(id).tick();
                cluster.check();
            }
            250..=549 => {
                if !cluster.network.is_empty() {
                    let position = rng.range(0, cluster.network.len() as u64) as usize;
                    if let Some(message) = cluster.network.remove(position) {
                        // Sometimes the network delivers a message twice.
                        if rng.range(0, 50) == 0 {
                            cluster.network.push_back(message.clone());
                        }
                        cluster.deliver(message);
                    }
                }
            }
            550..=579 => {
                if !cluster.network.is_empty() {
                    let position = rng.range(0, cluster.network.len() as u64) as usize;
                    cluster.network.remove(position);
                }
            }
            580..=729 => {
                let id = pick(&mut rng);
                cluster.take_output(id);
            }
            730..=829 => {
                let id = pick(&mut rng);
                cluster.sync_one(id);
            }
            830..=889 => {
                let id = pick(&mut rng);
                cluster.apply(id);
            }
            890..=959 => {
                let id = pick(&mut rng);
                let count = rng.range(1, 4);
                let commands = (0..count)
                    .map(|_| {
                        next_command += 1;
                        Bytes::from(format!("c{next_command}"))
                    })
                    .collect();
                let _ = cluster.node_mut(id).propose(commands, 0);
                cluster.check();
            }
            960..=979 => {
                let id = pick(&mut rng);
                next_read += 1;
                cluster.read_index(id, ReadId(next_read));
            }
            980..=985 => {
                let id = pick(&mut rng);
                summary.crashes += 1;
                // Damage is survivable while a majority holds every committed entry: at most
                // a minority of replicas may be short of entries they lost at once.
                let damaged = cluster
                    .replicas
                    .values()
                    .filter(|replica| replica.disk.lost_through.is_some())
                    .count() as u64;
                let room = damaged < (scenario.replicas - 1) / 2
                    || (damaged == (scenario.replicas - 1) / 2
                        && cluster.replica_mut(id).disk.lost_through.is_some());
                if scenario.lose_entries && room && rng.range(0, 2) == 0 {
                    summary.losses += 1;
                    cluster.crash_and_restart_losing(id, true);
                } else {
                    cluster.crash_and_restart(id);
                }
            }
            986..=991 => {
                cluster.heal();
                if rng.range(0, 2) == 0 {
                    let id = pick(&mut rng);
                    cluster.isolate(id);
                }
            }
            _ => {
                let id = pick(&mut rng);
                let target = pick(&mut rng);
                cluster.node_mut(id).transfer_leadership(target);
                cluster.check();
            }
        }
    }
    if let Some(violation) = cluster.violation.take() {
        return Err(violation);
    }
    liveness_phase(&mut cluster)?;
    if let Some(violation) = cluster.violation.take() {
        return Err(violation);
    }
    summary.terms_with_leader = cluster.checker.terms_with_leader();
    summary.committed = cluster.checker.committed_count();
    summary.reads_served =
        cluster.replicas.values().map(|replica| replica.reads_served.len()).sum();
    Ok(summary)
}

/// With the network healed and every replica running, a leader must be elected and a new
/// proposal must commit and be applied everywhere, within a bound.
fn liveness_phase(cluster: &mut Cluster) -> Result<(), String> {
    cluster.heal();
    let rounds_max = 300;
    // (index, term) of the last proposal; proposed again if a leader change discards it.
    let mut proposed: Option<(LogIndex, Term)> = None;
    for _ in 0..rounds_max {
        for id in cluster.ids() {
            cluster.node_mut(id).tick();
        }
        cluster.stabilize();
        if let Some(violation) = cluster.violation.clone() {
            return Err(violation);
        }
        if let Some(leader) = cluster.leaders().first().copied() {
            let lost = proposed.is_none_or(|(index, term)| {
                cluster.node(leader).log_term(index).is_some_and(|held| held != term)
                    || cluster.node(leader).last_index() < index
            });
            if lost {
                if let Ok(result) = cluster.node_mut(leader).propose(vec![Bytes::from("last")], 0) {
                    proposed = Some((result.last_index, result.term));
                }
            }
        }
        if let Some((index, term)) = proposed {
            // Every replica applied it, and none is still out of elections for entries its
            // storage lost (the leader's echo releases one that holds its whole log).
            let everywhere = cluster.replicas.values().all(|replica| {
                replica.node.applied_index() >= index
                    && replica.node.log_term(index) == Some(term)
                    && replica.node.lost_through().is_none()
            });
            if everywhere {
                return Ok(());
            }
        }
    }
    let states: Vec<String> = cluster
        .replicas
        .values()
        .map(|replica| {
            let node = &replica.node;
            let progress: Vec<String> = node
                .membership()
                .members()
                .into_iter()
                .filter_map(|id| {
                    node.progress(id)
                        .map(|p| format!("{id}:{:?}/{}/{}", p.state, p.match_index, p.next_index))
                })
                .collect();
            format!(
                "{} {} t{} last={} commit={} persisted={} applied={} {progress:?}",
                node.id(),
                node.role(),
                node.term(),
                node.last_index(),
                node.commit_index(),
                node.persisted_index(),
                node.applied_index()
            )
        })
        .collect();
    Err(format!(
        "liveness: no proposal committed everywhere within {rounds_max} rounds after healing: \
         proposed {proposed:?}; {states:?}"
    ))
}

fn seeds(default: u64) -> u64 {
    std::env::var("LOCKSTEP_SEEDS").ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// Runs `count` seeds from `first`; panics with the seed of the first violation.
fn sweep(first: u64, count: u64, scenario: Scenario) -> Vec<RunSummary> {
    let mut summaries = Vec::new();
    for seed in first..first + count {
        match run(seed, scenario) {
            Ok(summary) => summaries.push(summary),
            Err(violation) => panic!(
                "seed {seed} ({scenario:?}): {violation}\nreplay: LOCKSTEP_SEED={seed} cargo test \
                 -p lockstep-core --test safety replay -- --nocapture"
            ),
        }
    }
    summaries
}

#[cfg(feature = "sabotage")]
/// Searches seeds for one where the sabotaged core breaks a property; returns the violation.
fn find_violation(count: u64, scenario: Scenario) -> Option<(u64, String)> {
    (0..count).find_map(|seed| run(seed, scenario).err().map(|violation| (seed, violation)))
}

#[test]
fn three_replicas_keep_every_property_under_random_faults() {
    let summaries = sweep(0, seeds(300), Scenario::new(3));
    let terms: usize = summaries.iter().map(|s| s.terms_with_leader).sum();
    let committed: usize = summaries.iter().map(|s| s.committed).sum();
    let reads: usize = summaries.iter().map(|s| s.reads_served).sum();
    let crashes: usize = summaries.iter().map(|s| s.crashes).sum();
    println!("3 replicas: {terms} terms led, {committed} entries committed, {reads} reads, {crashes} crashes");
    // The runs must exercise the protocol, or they prove nothing.
    assert!(terms > summaries.len() * 2, "too few elections: {terms}");
    assert!(committed > summaries.len() * 5, "too few commits: {committed}");
    assert!(reads > 0, "no read was served");
}

#[test]
fn five_replicas_keep_every_property_under_random_faults() {
    let summaries = sweep(10_000, seeds(150), Scenario::new(5));
    let committed: usize = summaries.iter().map(|s| s.committed).sum();
    println!("5 replicas: {committed} entries committed over {} runs", summaries.len());
    assert!(committed > summaries.len() * 5, "too few commits: {committed}");
}

#[test]
fn replicas_that_lose_acknowledged_entries_keep_every_property() {
    let scenario = Scenario { lose_entries: true, ..Scenario::new(3) };
    let summaries = sweep(30_000, seeds(200), scenario);
    let losses: usize = summaries.iter().map(|s| s.losses).sum();
    let committed: usize = summaries.iter().map(|s| s.committed).sum();
    println!("3 replicas losing entries: {losses} logs set aside, {committed} entries committed");
    assert!(losses > summaries.len(), "too few logs cut: {losses}");
    let scenario = Scenario { lose_entries: true, ..Scenario::new(5) };
    sweep(40_000, seeds(100), scenario);
}

#[cfg(feature = "sabotage")]
#[test]
fn leader_completeness_checker_catches_votes_after_lost_entries() {
    let scenario =
        Scenario { lose_entries: true, sabotage: Sabotage::IgnoreLostEntries, ..Scenario::new(3) };
    let (seed, violation) = find_violation(500, scenario)
        .expect("voting before lost entries are held again must be caught");
    println!("seed {seed}: {violation}");
    assert!(
        violation.contains("leader completeness") || violation.contains("state machine safety"),
        "{violation}"
    );
}

#[test]
fn without_pre_vote_or_check_quorum_every_property_still_holds() {
    let scenario = Scenario { pre_vote: false, check_quorum: false, ..Scenario::new(3) };
    sweep(20_000, seeds(150), scenario);
}

/// Replays one seed given in `LOCKSTEP_SEED` (or seed 0), printing what it did.
#[test]
fn replay() {
    let seed =
        std::env::var("LOCKSTEP_SEED").ok().and_then(|value| value.parse().ok()).unwrap_or(0);
    let replicas =
        std::env::var("LOCKSTEP_REPLICAS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut scenario = Scenario::new(replicas);
    if std::env::var("LOCKSTEP_PRE_VOTE").is_ok_and(|value| value == "false") {
        scenario.pre_vote = false;
        scenario.check_quorum = false;
    }
    scenario.lose_entries = std::env::var("LOCKSTEP_LOSE_ENTRIES").is_ok_and(|v| v == "true");
    match run(seed, scenario) {
        Ok(summary) => println!("seed {seed}: {summary:?}"),
        Err(violation) => panic!("seed {seed}: {violation}"),
    }
}

#[test]
fn runs_replay_exactly_from_their_seed() {
    let first = run(7, Scenario::new(3)).expect("seed 7 is safe");
    let second = run(7, Scenario::new(3)).expect("seed 7 is safe");
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
}

// ----- each checker catches a broken core -----------------------------------------------

#[cfg(feature = "sabotage")]
#[test]
fn election_safety_checker_catches_double_votes() {
    let scenario = Scenario { sabotage: Sabotage::VoteTwice, ..Scenario::new(3) };
    let (seed, violation) =
        find_violation(200, scenario).expect("double voting must be caught within 200 seeds");
    println!("seed {seed}: {violation}");
    assert!(violation.contains("election safety"), "{violation}");
}

#[cfg(feature = "sabotage")]
#[test]
fn leader_completeness_checker_catches_votes_for_stale_logs() {
    let scenario = Scenario { sabotage: Sabotage::IgnoreLogUpToDate, ..Scenario::new(3) };
    let (seed, violation) =
        find_violation(200, scenario).expect("voting for stale logs must be caught");
    println!("seed {seed}: {violation}");
    assert!(
        violation.contains("leader completeness") || violation.contains("state machine safety"),
        "{violation}"
    );
}

/// A leader cut off from the others while they elect a new leader and commit a write: a read
/// it serves must not miss that write. Returns the violation found, if any.
fn stale_leader_read(sabotage: Sabotage) -> Option<String> {
    let mut cluster = Cluster::new(&[1, 2, 3], |config: &mut Config| config.sabotage = sabotage);
    cluster.record_violations = true;
    let (one, two) = (NodeId(1), NodeId(2));
    cluster.elect(one);
    cluster.isolate(one);
    // 2 and 3 stop hearing from 1 and, once their election timeouts pass, elect one of them.
    let mut new_leader = None;
    for _ in 0..200 {
        for id in [two, NodeId(3)] {
            cluster.node_mut(id).tick();
        }
        cluster.stabilize();
        new_leader =
            [two, NodeId(3)].into_iter().find(|id| cluster.node(*id).role() == Role::Leader);
        if new_leader.is_some() {
            break;
        }
    }
    let new_leader = new_leader.expect("2 or 3 is elected");
    let _ = cluster.node_mut(new_leader).propose(vec![Bytes::from("w")], 0);
    cluster.stabilize();
    assert!(cluster.node(new_leader).commit_index() > cluster.node(one).commit_index());
    // 1 still believes it leads and is asked for a read.
    assert_eq!(cluster.node(one).role(), Role::Leader);
    cluster.read_index(one, ReadId(1));
    for _ in 0..3 {
        cluster.process_ready(one);
        cluster.deliver_all(None);
    }
    cluster.violation.take()
}

#[test]
fn a_cut_off_leader_serves_no_stale_read() {
    assert_eq!(stale_leader_read(Sabotage::None), None);
}

#[cfg(feature = "sabotage")]
#[test]
fn read_checker_catches_reads_without_a_quorum() {
    let violation =
        stale_leader_read(Sabotage::ReadWithoutQuorum).expect("a stale read must be caught");
    assert!(violation.contains("read linearizability"), "{violation}");
}

/// Figure 8, driven by hand: with the sabotage, the leader of term 3 commits the term-1 entry
/// by counting, and the checker sees it committed and later overwritten.
fn figure8(sabotage: Sabotage) -> Option<String> {
    let mut cluster = Cluster::new(&[1, 2, 3], |config: &mut Config| {
        config.pre_vote = false;
        config.check_quorum = false;
        config.append_bytes_max = 1;
        config.sabotage = sabotage;
    });
    cluster.record_violations = true;
    let (one, two, three) = (NodeId(1), NodeId(2), NodeId(3));
    cluster.elect(one);
    // (a) 1 appends 2@1 and it reaches nobody.
    cluster.isolate(one);
    let _ = cluster.node_mut(one).propose(vec![Bytes::from("x")], 0);
    cluster.stabilize();
    // (b) 1 crashes; 3 wins term 2 and its no-op reaches nobody.
    cluster.crash_and_restart(one);
    cluster.tick_until_campaign(three);
    for _ in 0..2 {
        for id in [three, two] {
            cluster.process_ready(id);
        }
        cluster.deliver_all(None);
    }
    cluster.process_ready(three);
    assert_eq!(cluster.node(three).role(), Role::Leader);
    cluster.network.clear();
    // (c) 3 crashes; 1 wins (eventually) and repairs 2 with 2@1 but not its own no-op.
    cluster.crash_and_restart(three);
    cluster.heal();
    cluster.isolate(three);
    for attempt in 0.. {
        if cluster.node(one).role() == Role::Leader {
            break;
        }
        assert!(attempt < 5, "1 was not elected: {}", cluster.node(one).role());
        cluster.tick_until_campaign(one);
        for _ in 0..3 {
            for id in [one, two] {
                cluster.process_ready(id);
            }
            cluster.deliver_all(None);
        }
    }
    // Deliver until 2 has acknowledged index 2, then lose the append carrying the no-op.
    for _ in 0..6 {
        if cluster.node(one).progress(two).is_some_and(|p| p.match_index >= LogIndex(2)) {
            break;
        }
        for id in [one, two] {
            cluster.process_ready(id);
        }
        cluster.deliver_all(None);
    }
    cluster.process_ready(one);
    cluster.network.clear();
    assert_eq!(cluster.node(one).progress(two).map(|p| p.match_index), Some(LogIndex(2)));
    assert_eq!(cluster.node(one).last_index(), LogIndex(3));
    // (d) 1 crashes; 3 wins with 2's vote and overwrites index 2.
    cluster.crash_and_restart(one);
    cluster.heal();
    cluster.isolate(one);
    for _ in 0..3 {
        cluster.tick_until_campaign(three);
        cluster.stabilize();
        if cluster.node(three).role() == Role::Leader {
            break;
        }
    }
    assert_eq!(cluster.node(three).role(), Role::Leader, "3 wins with 2's vote");
    cluster.violation.take()
}

#[test]
fn figure8_scenario_is_safe() {
    assert_eq!(figure8(Sabotage::None), None);
}

#[cfg(feature = "sabotage")]
#[test]
fn state_machine_safety_checker_catches_commits_of_earlier_terms() {
    let violation = figure8(Sabotage::CommitPreviousTerm).expect("the figure-8 bug must be caught");
    assert!(
        violation.contains("state machine safety") || violation.contains("leader completeness"),
        "{violation}"
    );
}

// The two properties no sabotage of the real core reaches are shown on synthetic views.

fn entry(index: u64, term: u64) -> Entry {
    Entry { term: Term(term), index: LogIndex(index), payload: EntryPayload::Noop }
}

fn view(id: u64, role: Role, term: u64, commit: u64, log: &[(u64, u64)]) -> NodeView {
    NodeView {
        id: NodeId(id),
        role,
        term: Term(term),
        commit: LogIndex(commit),
        entries: log.iter().map(|(index, term)| entry(*index, *term)).collect(),
    }
}

#[test]
fn leader_append_only_checker_catches_a_leader_rewriting_its_log() {
    let mut checker = SafetyChecker::default();
    let before = view(1, Role::Leader, 2, 0, &[(1, 1), (2, 2)]);
    checker.observe(&[before]).expect("a fresh leader is fine");
    let after = view(1, Role::Leader, 2, 0, &[(1, 1)]);
    let violation = checker.observe(&[after]).expect_err("a shrinking leader log is caught");
    assert!(violation.contains("leader append-only"), "{violation}");
}

#[test]
fn log_matching_checker_catches_logs_that_agree_late_but_differ_early() {
    let mut checker = SafetyChecker::default();
    let a = view(1, Role::Follower, 3, 0, &[(1, 1), (2, 2), (3, 3)]);
    let b = view(2, Role::Follower, 3, 0, &[(1, 1), (2, 1), (3, 3)]);
    let violation = checker.observe(&[a, b]).expect_err("diverging prefixes are caught");
    assert!(violation.contains("log matching"), "{violation}");
}

#[test]
fn election_safety_checker_catches_two_leaders_in_a_term() {
    let mut checker = SafetyChecker::default();
    let a = view(1, Role::Leader, 4, 0, &[]);
    let b = view(2, Role::Leader, 4, 0, &[]);
    let violation = checker.observe(&[a, b]).expect_err("two leaders in one term are caught");
    assert!(violation.contains("election safety"), "{violation}");
}

#[test]
fn leader_completeness_checker_catches_a_leader_without_a_committed_entry() {
    let mut checker = SafetyChecker::default();
    let follower = view(2, Role::Follower, 3, 2, &[(1, 1), (2, 1)]);
    checker.observe(std::slice::from_ref(&follower)).expect("committing is fine");
    let leader = view(1, Role::Leader, 4, 0, &[(1, 1)]);
    let violation =
        checker.observe(&[leader, follower]).expect_err("a leader lacking a commit is caught");
    assert!(violation.contains("leader completeness"), "{violation}");
}
