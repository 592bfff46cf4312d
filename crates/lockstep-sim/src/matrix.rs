//! The mode matrix: every combination of the simulator's fault modes, each run over seeds.
//!
//! Each mode is clean alone; faults combine in production (a disk goes bad in the week an
//! operator replaces a replica), and combinations failed where no mode alone did. The matrix
//! runs them all: 3 or 5 replicas times every subset of `--membership`, `--divergence`,
//! `--disk-corruption`, `--batch` and `--verified-outputs`, 64 combinations.
//!
//! A mode added to [`SimConfig`] joins the matrix here: a new field in [`Modes`], set in
//! [`Modes::apply`], named in [`Modes::flags`] and counted in [`Modes::all`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::sim::{run, Report, SimConfig};

/// One combination of modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modes {
    /// Replicas per cluster (3 or 5).
    pub replicas: usize,
    /// Membership changes during the faults.
    pub membership: bool,
    /// Divergences injected, found and repaired by the audit.
    pub divergence: bool,
    /// Damaged logs and checkpoints at restarts.
    pub disk_corruption: bool,
    /// Writes proposed in batches.
    pub batch: bool,
    /// Answers wait for a majority's output chain.
    pub verified_outputs: bool,
}

/// The number of on/off modes in [`Modes`].
const SWITCHES: u32 = 5;

impl Modes {
    /// Every combination: 3 and 5 replicas, each with every subset of the switches.
    pub fn all() -> Vec<Modes> {
        let mut all = Vec::new();
        for replicas in [3, 5] {
            for mask in 0..(1u32 << SWITCHES) {
                let on = |bit: u32| mask & (1 << bit) != 0;
                all.push(Modes {
                    replicas,
                    membership: on(0),
                    divergence: on(1),
                    disk_corruption: on(2),
                    batch: on(3),
                    verified_outputs: on(4),
                });
            }
        }
        all
    }

    /// `config` with these modes.
    pub fn apply(&self, config: SimConfig) -> SimConfig {
        SimConfig {
            replicas: self.replicas,
            membership: self.membership,
            divergence: self.divergence,
            disk_corruption: self.disk_corruption,
            batch: self.batch,
            verified_outputs: self.verified_outputs,
            ..config
        }
    }

    /// The command-line flags that select these modes.
    pub fn flags(&self) -> String {
        let mut flags = format!("--replicas {}", self.replicas);
        for (on, flag) in [
            (self.membership, " --membership"),
            (self.divergence, " --divergence"),
            (self.disk_corruption, " --disk-corruption"),
            (self.batch, " --batch"),
            (self.verified_outputs, " --verified-outputs"),
        ] {
            if on {
                flags.push_str(flag);
            }
        }
        flags
    }
}

/// What one combination came to.
#[derive(Debug)]
pub struct Outcome {
    /// The combination.
    pub modes: Modes,
    /// Its runs, in seed order.
    pub reports: Vec<Report>,
}

impl Outcome {
    /// The runs that found a violation.
    pub fn failed(&self) -> impl Iterator<Item = &Report> {
        self.reports.iter().filter(|report| !report.violations.is_empty())
    }

    /// What failed and how to replay it, one block per failed seed.
    pub fn describe_failures(&self) -> String {
        let mut text = String::new();
        for report in self.failed() {
            for violation in &report.violations {
                text.push_str(&format!(
                    "seed {} ({}): {violation}\n",
                    report.seed,
                    self.modes.flags()
                ));
            }
            text.push_str(&format!(
                "  replay: cargo run -p lockstep-sim --release -- --seed {} --seeds 1 {} --trace\n",
                report.seed,
                self.modes.flags()
            ));
        }
        text
    }
}

/// Runs `seeds` seeds from `first_seed` for every combination in `modes`, on `jobs` threads,
/// each run configured by `base` and then the combination.
pub fn run_matrix(
    modes: &[Modes],
    base: SimConfig,
    first_seed: u64,
    seeds: u64,
    jobs: usize,
) -> Vec<Outcome> {
    let runs: Vec<(usize, u64)> = (0..modes.len())
        .flat_map(|combination| (0..seeds).map(move |offset| (combination, offset)))
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Report)>> = Mutex::new(Vec::with_capacity(runs.len()));
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let at = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(combination, offset)) = runs.get(at) else { break };
                let config = SimConfig { seed: first_seed.wrapping_add(offset), ..base.clone() };
                let report = run(modes[combination].apply(config));
                if let Ok(mut results) = results.lock() {
                    results.push((combination, report));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    results.sort_by_key(|(combination, report)| (*combination, report.seed));
    let mut outcomes: Vec<Outcome> =
        modes.iter().map(|modes| Outcome { modes: *modes, reports: Vec::new() }).collect();
    for (combination, report) in results {
        outcomes[combination].reports.push(report);
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_holds_every_combination_once() {
        let all = Modes::all();
        assert_eq!(all.len(), 64);
        let flags: std::collections::BTreeSet<String> = all.iter().map(Modes::flags).collect();
        assert_eq!(flags.len(), 64, "no combination twice");
        assert!(flags.contains(
            "--replicas 5 --membership --divergence --disk-corruption --batch --verified-outputs"
        ));
        assert!(flags.contains("--replicas 3"));
    }
}
