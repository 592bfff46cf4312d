//! `lockstep-sim`: runs seeds of the deterministic simulator and reports what the checkers found.
//!
//! ```text
//! cargo run -p lockstep-sim --release -- --seeds 500
//! cargo run -p lockstep-sim --release -- --seed 1234 --seeds 1 --replicas 5 --verbose
//! cargo run -p lockstep-sim --release --features sabotage -- --seeds 50 --sabotage skip-sessions
//! cargo run -p lockstep-sim --release -- --matrix --seeds 1000   # every mode combination
//! ```

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::Parser;
use lockstep_sim::sim::{run, Report, Sabotage, SimConfig};

/// Runs seeded simulations of a lockstep cluster under faults and checks every run.
#[derive(Parser, Debug)]
#[command(name = "lockstep-sim", version)]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed (runs `seed`, `seed + 1`, ...).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replicas per cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    replicas: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Simulated milliseconds of faults per run.
    #[arg(long, default_value_t = 4_000)]
    safety_millis: u64,
    /// Simulated milliseconds the healed cluster has to finish.
    #[arg(long, default_value_t = 10_000)]
    liveness_millis: u64,
    /// Break the system on purpose, to see the checkers catch it: vote-unpersisted,
    /// vote-twice, commit-previous-term, read-without-read-index, ack-before-sync,
    /// skip-sessions, checkpoint-off-by-one, joint-new-only, audit-no-compare (with
    /// --divergence), ignore-lost-entries (with --disk-corruption).
    #[arg(long, default_value = "none", value_parser = parse_sabotage)]
    sabotage: Sabotage,
    /// Runs at once (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Print a line for every seed.
    #[arg(long)]
    verbose: bool,
    /// Print each run's notable events as they happen (use with one seed).
    #[arg(long)]
    trace: bool,
    /// Change the membership during the faults (add, promote, remove, replace, remove the
    /// leader).
    #[arg(long)]
    membership: bool,
    /// Propose the writes reaching a replica within a millisecond as one batch.
    #[arg(long)]
    batch: bool,
    /// Inject divergences during the faults (a state machine non-deterministic on one
    /// replica, a value corrupted in one replica's memory), with the audit on to find and
    /// repair them.
    #[arg(long)]
    divergence: bool,
    /// Turn on the audit's verified outputs (answers wait for a majority's chain).
    #[arg(long)]
    verified_outputs: bool,
    /// Damage restarting replicas' logs on disk (a bit flipped in a record), at most a
    /// minority at a time: they set the log aside and fetch it again from the others.
    #[arg(long)]
    disk_corruption: bool,
    /// Run `--seeds` seeds for every combination of 3 or 5 replicas and the modes above
    /// (`--membership`, `--divergence`, `--disk-corruption`, `--batch`, `--verified-outputs`),
    /// instead of one combination; prints one line per combination.
    #[arg(long)]
    matrix: bool,
}

/// `--matrix`: every combination, a line each, the failures with their replay commands.
fn run_matrix(args: &Args, jobs: usize) -> ExitCode {
    use lockstep_sim::matrix::{run_matrix, Modes};
    let started = Instant::now();
    let base = SimConfig {
        clients: args.clients,
        safety_millis: args.safety_millis,
        liveness_millis: args.liveness_millis,
        sabotage: args.sabotage,
        ..SimConfig::new(0)
    };
    let modes = Modes::all();
    let outcomes = run_matrix(&modes, base, args.seed, args.seeds, jobs);
    let mut violations = 0;
    let mut seeds = 0;
    for outcome in &outcomes {
        let failed = outcome.failed().count();
        violations += failed;
        seeds += outcome.reports.len();
        let requests: u64 = outcome.reports.iter().map(|report| report.requests_completed).sum();
        println!(
            "{:<80} seeds {:>5}  requests {:>8}  violations {failed}",
            outcome.modes.flags(),
            outcome.reports.len(),
            requests
        );
        print!("{}", outcome.describe_failures());
    }
    println!(
        "matrix: {} combinations, {seeds} seeds from {} in {:.0} s, violations: {violations}",
        outcomes.len(),
        args.seed,
        started.elapsed().as_secs_f64()
    );
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_sabotage(name: &str) -> Result<Sabotage, String> {
    Sabotage::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Sabotage::ALL.iter().map(|switch| switch.name()).collect();
        if names.is_empty() {
            return format!(
                "no sabotage named {name:?}: this build has no sabotage switches (they compile \
                 only with the `sabotage` cargo feature: --features sabotage)"
            );
        }
        format!("no sabotage named {name:?}; choose one of: none, {}", names.join(", "))
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    if args.matrix {
        return run_matrix(&args, jobs);
    }
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let reports: Mutex<Vec<Report>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let offset = next.fetch_add(1, Ordering::Relaxed);
                if offset >= args.seeds {
                    break;
                }
                let config = SimConfig {
                    seed: args.seed.wrapping_add(offset),
                    replicas: args.replicas as usize,
                    clients: args.clients,
                    safety_millis: args.safety_millis,
                    liveness_millis: args.liveness_millis,
                    sabotage: args.sabotage,
                    trace: args.trace,
                    membership: args.membership,
                    batch: args.batch,
                    divergence: args.divergence,
                    verified_outputs: args.verified_outputs,
                    disk_corruption: args.disk_corruption,
                    ..SimConfig::new(0)
                };
                let report = run(config);
                if args.verbose {
                    println!(
                        "seed {}: {} simulated ms, {} events, {} requests, {} crashes, {} terms, \
                         {} committed, {} checkpoints, {} transfers, {} violations",
                        report.seed,
                        report.simulated_millis,
                        report.events,
                        report.requests_completed,
                        report.crashes,
                        report.terms_led,
                        report.entries_committed,
                        report.checkpoints,
                        report.state_transfers,
                        report.violations.len()
                    );
                }
                if let Ok(mut reports) = reports.lock() {
                    reports.push(report);
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    reports.sort_by_key(|report| report.seed);
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let failed: Vec<&Report> =
        reports.iter().filter(|report| !report.violations.is_empty()).collect();
    for report in &failed {
        for violation in &report.violations {
            println!("seed {}: {violation}", report.seed);
        }
        let (features, sabotage) = match args.sabotage {
            Sabotage::None => ("", String::new()),
            #[allow(unreachable_patterns)]
            other => (" --features sabotage", format!(" --sabotage {other}")),
        };
        println!(
            "  replay: cargo run -p lockstep-sim --release{features} -- --seed {} --seeds 1 --replicas {} \
             --clients {} --safety-millis {} --liveness-millis {}{sabotage}{}{} --verbose\n",
            report.seed,
            args.replicas,
            args.clients,
            args.safety_millis,
            args.liveness_millis,
            if args.membership { " --membership" } else { "" },
            if args.batch { " --batch" } else { "" }
        );
        if args.divergence || args.verified_outputs || args.disk_corruption {
            println!(
                "  (add{}{}{})\n",
                if args.divergence { " --divergence" } else { "" },
                if args.verified_outputs { " --verified-outputs" } else { "" },
                if args.disk_corruption { " --disk-corruption" } else { "" }
            );
        }
    }
    let requests: u64 = reports.iter().map(|report| report.requests_completed).sum();
    let crashes: u64 = reports.iter().map(|report| report.crashes).sum();
    let checkpoints: u64 = reports.iter().map(|report| report.checkpoints).sum();
    let transfers: u64 = reports.iter().map(|report| report.state_transfers).sum();
    if args.membership {
        let sum = |kind: fn(&Report) -> u64| reports.iter().map(kind).sum::<u64>();
        println!(
            "membership changes committed: {} learners added, {} promotions, {} removals, {} \
             joint replacements, {} removing the leader",
            sum(|r| r.changes.learners_added),
            sum(|r| r.changes.promotions),
            sum(|r| r.changes.removals),
            sum(|r| r.changes.replacements),
            sum(|r| r.changes.leaders_removed)
        );
    }
    if args.divergence || args.verified_outputs {
        let sum = |kind: fn(&Report) -> u64| reports.iter().map(kind).sum::<u64>();
        let mut latencies: Vec<u64> =
            reports.iter().flat_map(|r| r.detection_latencies.iter().copied()).collect();
        latencies.sort_unstable();
        let median = latencies.get(latencies.len() / 2).copied().unwrap_or(0);
        let max = latencies.last().copied().unwrap_or(0);
        println!(
            "divergences: {} injected, {} found ({} repaired), {} cleared before found (a \
             restart or a snapshot); detection latency in entries: median {median}, max {max}; \
             wrong outputs delivered: {} (verified outputs {})",
            sum(|r| r.divergences_injected),
            latencies.len(),
            sum(|r| r.divergences_repaired),
            sum(|r| r.divergences_cleared),
            sum(|r| r.wrong_outputs),
            if args.verified_outputs { "on" } else { "off" }
        );
    }
    if args.disk_corruption {
        let sum = |kind: fn(&Report) -> u64| reports.iter().map(kind).sum::<u64>();
        println!(
            "disk damage: {} bits flipped in stopped replicas' logs and checkpoints; {} found \
             at the restart, the damaged files set aside and fetched again; {} starts short of \
             lost entries (out of elections until held again), {} still short at the end",
            sum(|r| r.disk_damage_injected),
            sum(|r| r.logs_set_aside),
            sum(|r| r.lost_entry_holds),
            sum(|r| r.lost_entry_holds_left)
        );
    }
    let simulated: u64 = reports.iter().map(|report| report.simulated_millis).sum();
    println!(
        "{} replicas, sabotage {}: {} requests completed, {} crashes, {} checkpoints, {} state \
         transfers, {:.0} simulated s in {elapsed:.1} s ({:.0} requests/s, {:.0} seeds/hour)",
        args.replicas,
        args.sabotage,
        requests,
        crashes,
        checkpoints,
        transfers,
        simulated as f64 / 1000.0,
        requests as f64 / elapsed,
        reports.len() as f64 * 3600.0 / elapsed
    );
    println!("seeds: {}, violations: {}", reports.len(), failed.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
