//! Seeded simulation runs: sweeps that must find nothing, the same seed giving the same run,
//! and every sabotage switch caught.
//!
//! Replay or widen from the environment:
//! - `LOCKSTEP_SEED=S`: run only seed `S` in the sweeps (prints what it finds);
//! - `LOCKSTEP_SEEDS=N`: sweep `N` seeds instead of the default.

#![cfg_attr(not(feature = "sabotage"), allow(unused_imports))]

use std::collections::BTreeSet;

use lockstep_sim::sim::{run, Report, Sabotage, SimConfig};

fn env(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.parse() {
        Ok(value) => Some(value),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

fn describe(report: &Report, replicas: usize) -> String {
    let mut text = String::new();
    for violation in &report.violations {
        text.push_str(&format!("seed {}: {violation}\n", report.seed));
    }
    text.push_str(&format!(
        "replay: LOCKSTEP_SEED={} cargo test -p lockstep-sim --test simulation, or \
         cargo run -p lockstep-sim --release -- --seed {} --seeds 1 --replicas {replicas} --trace\n",
        report.seed, report.seed
    ));
    text
}

fn sweep(replicas: usize, default_seeds: u64, first_seed: u64) {
    let seeds: Vec<u64> = match env("LOCKSTEP_SEED") {
        Some(seed) => vec![seed],
        None => {
            let count = env("LOCKSTEP_SEEDS").unwrap_or(default_seeds);
            (first_seed..first_seed + count).collect()
        }
    };
    let mut requests = 0;
    let mut crashes = 0;
    let mut transfers = 0;
    for &seed in &seeds {
        let report = run(SimConfig { replicas, ..SimConfig::new(seed) });
        assert!(report.violations.is_empty(), "{}", describe(&report, replicas));
        assert!(report.requests_completed > 0, "seed {seed}: no request completed");
        requests += report.requests_completed;
        crashes += report.crashes;
        transfers += report.state_transfers;
    }
    println!(
        "{} seeds x {replicas} replicas: {requests} requests, {crashes} crashes, {transfers} \
         state transfers, no violation",
        seeds.len()
    );
    if seeds.len() > 20 {
        assert!(crashes > 0, "the nemesis never crashed a replica");
        assert!(transfers > 0, "no follower ever needed a snapshot");
    }
}

#[test]
fn three_replicas_survive_the_nemesis() {
    sweep(3, 200, 0);
}

#[test]
fn five_replicas_survive_the_nemesis() {
    sweep(5, 100, 1_000_000);
}

#[test]
fn batched_proposals_keep_every_property() {
    let seeds: Vec<u64> = match env("LOCKSTEP_SEED") {
        Some(seed) => vec![seed],
        None => (3_000_000..3_000_000 + env("LOCKSTEP_SEEDS").unwrap_or(100)).collect(),
    };
    let (mut requests, mut batched) = (0, 0);
    for &seed in &seeds {
        let report = run(SimConfig { batch: true, clients: 8, ..SimConfig::new(seed) });
        assert!(report.violations.is_empty(), "{} (with --batch)", describe(&report, 3));
        requests += report.requests_completed;
        batched += report.writes_batched;
    }
    println!(
        "{} seeds with batched proposals: {requests} requests, {batched} writes batched",
        seeds.len()
    );
    if seeds.len() > 20 {
        assert!(batched > 0, "no write was ever proposed in a batch with another");
    }
}

#[test]
fn membership_changes_keep_every_property() {
    let seeds: Vec<u64> = match env("LOCKSTEP_SEED") {
        Some(seed) => vec![seed],
        None => (2_000_000..2_000_000 + env("LOCKSTEP_SEEDS").unwrap_or(100)).collect(),
    };
    let mut counts = lockstep_sim::sim::MembershipCounts::default();
    for &seed in &seeds {
        let report = run(SimConfig { membership: true, ..SimConfig::new(seed) });
        assert!(report.violations.is_empty(), "{}", describe(&report, 3));
        let c = report.changes;
        counts.learners_added += c.learners_added;
        counts.promotions += c.promotions;
        counts.removals += c.removals;
        counts.replacements += c.replacements;
        counts.leaders_removed += c.leaders_removed;
    }
    println!("{} seeds with membership changes: {counts:?}", seeds.len());
    if seeds.len() > 20 {
        assert!(counts.learners_added > 0 && counts.promotions > 0, "{counts:?}");
        assert!(counts.removals > 0 && counts.replacements > 0, "{counts:?}");
        assert!(counts.leaders_removed > 0, "{counts:?}");
    }
}

/// Divergences injected on every seed (a state machine non-deterministic on one replica, a
/// value corrupted in one replica's memory): every one found within the bound and repaired,
/// or cleared before found (a restart from a vouched checkpoint, a snapshot); with verified
/// outputs, no client ever gets a wrong answer.
fn divergence_sweep(verified_outputs: bool, first_seed: u64) {
    let seeds: Vec<u64> = match env("LOCKSTEP_SEED") {
        Some(seed) => vec![seed],
        None => (first_seed..first_seed + env("LOCKSTEP_SEEDS").unwrap_or(100)).collect(),
    };
    let (mut injected, mut repaired, mut cleared, mut wrong) = (0, 0, 0, 0);
    let mut latencies = Vec::new();
    for &seed in &seeds {
        let config = SimConfig { divergence: true, verified_outputs, ..SimConfig::new(seed) };
        let report = run(config);
        let flags =
            if verified_outputs { "--divergence --verified-outputs" } else { "--divergence" };
        assert!(report.violations.is_empty(), "{} (with {flags})", describe(&report, 3));
        injected += report.divergences_injected;
        repaired += report.divergences_repaired;
        cleared += report.divergences_cleared;
        wrong += report.wrong_outputs;
        latencies.extend(report.detection_latencies);
    }
    latencies.sort_unstable();
    let median = latencies.get(latencies.len() / 2).copied().unwrap_or(0);
    let max = latencies.last().copied().unwrap_or(0);
    println!(
        "{} seeds, verified outputs {verified_outputs}: {injected} divergences, {} found and \
         {repaired} repaired, {cleared} cleared first; detection latency median {median}, max \
         {max} entries; {wrong} wrong answers delivered",
        seeds.len(),
        latencies.len()
    );
    if seeds.len() > 20 {
        assert!(repaired > 0 && injected > 0, "no divergence was ever found and repaired");
        assert_eq!(repaired, latencies.len() as u64, "a divergence found was not repaired");
        if verified_outputs {
            assert_eq!(wrong, 0);
        } else {
            assert!(wrong > 0, "without verified outputs, no wrong answer ever reached a client");
        }
    }
}

#[test]
fn divergent_replicas_are_found_and_repaired() {
    divergence_sweep(false, 4_000_000);
}

#[test]
fn with_verified_outputs_no_wrong_answer_reaches_a_client() {
    divergence_sweep(true, 5_000_000);
}

/// Bits flipped in stopped replicas' logs (at most a minority short of what they lost at
/// once): every damage found at the restart, the log set aside and fetched again, every
/// property kept, and every such replica back in elections by the end.
fn disk_corruption_sweep(replicas: usize, first_seed: u64, count: u64) {
    let seeds: Vec<u64> = match env("LOCKSTEP_SEED") {
        Some(seed) => vec![seed],
        None => (first_seed..first_seed + env("LOCKSTEP_SEEDS").unwrap_or(count)).collect(),
    };
    let (mut injected, mut set_aside, mut holds, mut left) = (0, 0, 0, 0);
    for &seed in &seeds {
        let config = SimConfig { replicas, disk_corruption: true, ..SimConfig::new(seed) };
        let report = run(config);
        assert!(
            report.violations.is_empty(),
            "{} (with --disk-corruption)",
            describe(&report, replicas)
        );
        injected += report.disk_damage_injected;
        set_aside += report.logs_set_aside;
        holds += report.lost_entry_holds;
        left += report.lost_entry_holds_left;
    }
    println!(
        "{} seeds, {replicas} replicas: {injected} logs damaged, {set_aside} set aside and \
         fetched again, {holds} starts out of elections until then, {left} still at the end",
        seeds.len()
    );
    if seeds.len() > 20 {
        assert!(injected > 0, "no damage was injected");
        assert_eq!(injected, set_aside, "damage went unnoticed");
    }
}

#[test]
fn damaged_logs_are_set_aside_and_fetched_again() {
    disk_corruption_sweep(3, 6_000_000, 100);
    disk_corruption_sweep(5, 7_000_000, 30);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let config = SimConfig { safety_millis: 2_000, ..SimConfig::new(42) };
    let first = run(config.clone());
    let second = run(config);
    assert_eq!(first.trace_hash, second.trace_hash, "one seed, two different runs");
    assert_eq!(first.events, second.events);
    assert_eq!(first.requests_completed, second.requests_completed);
    let other = run(SimConfig { safety_millis: 2_000, ..SimConfig::new(43) });
    assert_ne!(first.trace_hash, other.trace_hash, "the trace hash ignores the run");
}

#[cfg(feature = "sabotage")]
/// Each switch must be caught within this many seeds (they are fixed, so this is exact).
const SABOTAGE_SEEDS: u64 = 300;

#[cfg(feature = "sabotage")]
#[test]
fn every_sabotage_switch_is_caught() {
    let mut summary = Vec::new();
    let mut checkers_tripped = BTreeSet::new();
    for sabotage in Sabotage::ALL {
        if sabotage == Sabotage::CommitPreviousTerm {
            // Random schedules build Raft's figure 8 (three leaders, in a precise order) about
            // once in a few thousand seeds: too rare to sweep for here. The test below replays
            // one that does; the core's scripted `figure8` test shows it deterministically.
            continue;
        }
        // A sabotage of joint consensus needs membership changes to show, one of the audit
        // divergences to find, one of lost entries damaged logs.
        let membership = sabotage == Sabotage::JointNewOnly;
        let divergence = sabotage == Sabotage::AuditNoCompare;
        let disk_corruption = sabotage == Sabotage::IgnoreLostEntries;
        let caught = (0..SABOTAGE_SEEDS).find_map(|seed| {
            let config = SimConfig {
                sabotage,
                membership,
                divergence,
                disk_corruption,
                ..SimConfig::new(seed)
            };
            let report = run(config);
            (!report.violations.is_empty()).then_some(report)
        });
        let Some(report) = caught else {
            panic!("sabotage {sabotage} went unnoticed for {SABOTAGE_SEEDS} seeds");
        };
        let checkers: Vec<&str> = report.violations.iter().map(|v| v.checker).collect();
        checkers_tripped.extend(checkers.iter().copied());
        summary.push(format!("{sabotage}: seed {} caught by {checkers:?}", report.seed));
    }
    println!("{}", summary.join("\n"));
    // Sabotage that breaks safety must trip a safety checker, not only liveness.
    for checker in ["election safety", "linearizability", "exactly-once", "audit"] {
        assert!(checkers_tripped.contains(checker), "{checker} caught nothing: {summary:?}");
    }
}

#[cfg(feature = "sabotage")]
/// A seed whose schedule builds Raft's figure 8. Found with
/// `cargo run -p lockstep-sim --release --features sabotage -- --seeds 8000 --sabotage commit-previous-term`; if a
/// change to the simulator or the protocol moves the schedules, find a new one the same way.
const FIGURE_8_SEED: u64 = 2963;

#[cfg(feature = "sabotage")]
#[test]
fn committing_an_earlier_term_by_counting_is_caught() {
    let report =
        run(SimConfig { sabotage: Sabotage::CommitPreviousTerm, ..SimConfig::new(FIGURE_8_SEED) });
    let checkers: Vec<&str> = report.violations.iter().map(|v| v.checker).collect();
    assert!(
        checkers.contains(&"leader completeness") || checkers.contains(&"state machine safety"),
        "seed {FIGURE_8_SEED} no longer builds figure 8 (caught by {checkers:?}); find another \
         seed with the command above"
    );
    // And the same seed without the sabotage is fine.
    let clean = run(SimConfig::new(FIGURE_8_SEED));
    assert!(clean.violations.is_empty(), "{:?}", clean.violations);
}

/// Found with `--membership --batch`: a new replica's first bootstrap failed while storing its
/// members (a failing disk); the second open read them back from a copy that was never synced
/// and trusted them, so a crash later left the replica with no members on disk. The members
/// are now stored again at such an open.
#[test]
fn a_bootstrap_interrupted_by_a_failing_disk_is_made_durable_at_the_next_open() {
    let config =
        SimConfig { membership: true, batch: true, clients: 8, ..SimConfig::new(6_000_893) };
    let report = run(config);
    assert!(report.violations.is_empty(), "{}", describe(&report, 3));
}

/// Every combination of the fault modes (3 or 5 replicas, with or without membership changes,
/// divergences, damaged disks, batching and verified outputs: 64 in all), a few seeds each,
/// from a first seed drawn afresh for every run and printed, so that the suite covers new
/// seeds each time. `LOCKSTEP_MATRIX_SEED=S` replays from `S`; `LOCKSTEP_MATRIX_SEEDS=N` runs
/// `N` seeds per combination. At depth: `cargo run -p lockstep-sim --release -- --matrix
/// --seeds 1000 --seed S`.
#[test]
fn every_combination_of_modes_keeps_every_property() {
    use lockstep_sim::matrix::{run_matrix, Modes};
    let first_seed = env("LOCKSTEP_MATRIX_SEED").unwrap_or_else(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x6d61_7472_6978);
        hasher.finish() >> 20
    });
    let seeds = env("LOCKSTEP_MATRIX_SEEDS").unwrap_or(3);
    println!("mode matrix from seed {first_seed} ({seeds} per combination); replay with LOCKSTEP_MATRIX_SEED={first_seed}");
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let outcomes = run_matrix(&Modes::all(), SimConfig::new(0), first_seed, seeds, jobs);
    let failures: String = outcomes.iter().map(|outcome| outcome.describe_failures()).collect();
    assert!(failures.is_empty(), "mode matrix from seed {first_seed}:\n{failures}");
    let runs: usize = outcomes.iter().map(|outcome| outcome.reports.len()).sum();
    assert_eq!(runs as u64, 64 * seeds);
    let requests: u64 =
        outcomes.iter().flat_map(|o| o.reports.iter()).map(|r| r.requests_completed).sum();
    assert!(requests > 0);
    println!("{runs} runs, {requests} requests, no violation");
}
