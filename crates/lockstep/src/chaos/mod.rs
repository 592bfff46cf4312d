//! `lockstep chaos`: real servers, real faults, and a verdict on what the clients saw.
//!
//! The harness starts three servers (`lockstep serve`, or etcd as the control), each in a
//! network namespace of its own joined by a bridge; runs concurrent clients that record every
//! operation's call and completion; injects faults on a schedule drawn from a seed (kills,
//! pauses, partitions, packet loss, a full disk); heals everything; and then checks that the
//! history is linearizable, that no acknowledged write was lost and none applied twice, that
//! every replica holds the same state, and that the cluster served again within a bound. A
//! failing run keeps its folder (history, server logs, faults, summary) and prints how to run
//! it again. Everything the harness creates is removed when it ends, and leftovers of a run
//! that was killed are removed by the next.

mod cluster;
mod net;
mod proxy;
mod verdict;
mod workload;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use lockstep_client::{Client, ClientOptions};
use lockstep_kv::{Answer, Request};
use lockstep_sim::linearizability::Input;
use serde::Serialize;

use cluster::Cluster;
pub use cluster::{Sabotage, System};
use net::{Loopback, Namespaces, Network, Port};
pub use proxy::{run as run_proxy, ProxyArgs};
use verdict::Check;
use workload::{Backend, History, Outcome, Record, Workload};

/// A small deterministic generator for the schedule and the clients' choices.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Random {
        Random(seed)
    }
    /// splitmix64.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    /// A duration between `low` and `high`.
    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(self.below(span + 1))
    }
}

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    /// SIGKILL one server, a majority, or all of them; restart them at the heal.
    Kill,
    /// SIGSTOP one server (often the leader); SIGCONT at the heal.
    Pause,
    /// Cut the network: a minority from the majority, the leader from the rest, a bridge
    /// (one server sees both sides, they do not see each other), or one way only.
    Partition,
    /// Drop a share of the packets between servers at random.
    Loss,
    /// Fill the disk one server's data is on.
    DiskFull,
    /// Delay what the servers send each other, through the harness's proxy.
    Delay,
    /// Ask the leader to hand leadership to another server (lockstep only).
    Transfer,
    /// Remove a follower from the cluster and wipe its data; at the heal, add it back under a
    /// new id, catch it up as a learner and promote it (lockstep, in namespaces).
    Member,
}

impl Nemesis {
    const ALL: [Nemesis; 8] = [
        Nemesis::Kill,
        Nemesis::Pause,
        Nemesis::Partition,
        Nemesis::Loss,
        Nemesis::DiskFull,
        Nemesis::Delay,
        Nemesis::Transfer,
        Nemesis::Member,
    ];

    fn name(self) -> &'static str {
        match self {
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
            Nemesis::Partition => "partition",
            Nemesis::Loss => "loss",
            Nemesis::DiskFull => "disk-full",
            Nemesis::Delay => "delay",
            Nemesis::Transfer => "transfer",
            Nemesis::Member => "member",
        }
    }

    fn parse_list(text: &str) -> Result<Vec<Nemesis>, String> {
        if text == "all" {
            return Ok(Nemesis::ALL.to_vec());
        }
        if text == "none" {
            return Ok(Vec::new());
        }
        let mut kinds = BTreeSet::new();
        for name in text.split(',').map(str::trim) {
            let kind =
                Nemesis::ALL.into_iter().find(|kind| kind.name() == name).ok_or_else(|| {
                    format!(
                        "--nemesis: unknown fault `{name}` (all, none, or a list of kill, pause, \
                     partition, loss, disk-full, delay, transfer, member)"
                    )
                })?;
            kinds.insert(kind);
        }
        Ok(kinds.into_iter().collect())
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) =
        text.split_at(text.find(|c: char| c.is_alphabetic()).unwrap_or(text.len()));
    let number: f64 = number.parse().map_err(|_| format!("`{text}`: expected e.g. 90s, 5m, 1h"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    if !(0.0..=7.0 * 86_400.0).contains(&seconds) {
        return Err(format!("`{text}`: out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `lockstep chaos`.
#[derive(Args, Debug, Clone)]
pub struct ChaosArgs {
    /// How long to inject faults (e.g. 90s, 5m, 30m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Faults: all, none, or a list of kill, pause, partition, loss, disk-full, delay,
    /// transfer, member.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// The seed the schedule and the clients' choices come from (random if not given).
    #[arg(long)]
    seed: Option<u64>,
    /// The system under test (etcd: the control, through its v3 API).
    #[arg(long, value_enum, default_value = "lockstep")]
    system: System,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Operations per second across all clients.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Mean seconds a fault lasts, and between faults.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    interval: Duration,
    /// After the last heal the cluster must serve a write within this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    recovery_bound: Duration,
    /// Where runs keep their folders (a failing run's is kept).
    #[arg(long, default_value = "target/chaos")]
    dir: PathBuf,
    /// Keep the run's folder even when it passes.
    #[arg(long)]
    keep: bool,
    /// The lockstep binary to run as the servers (default: this one).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Where the servers run: each in a network namespace (needs root, `ip netns`, `nft`), or
    /// all on loopback with the harness relaying between them; auto picks namespaces when it
    /// can.
    #[arg(long, value_enum, default_value = "auto")]
    network: NetworkMode,
    /// Test only: start lockstep deliberately broken; the run must fail.
    #[arg(long, value_enum, hide = true)]
    sabotage: Option<Sabotage>,
    /// TLS on every port of every server, client certificates required (lockstep only):
    /// certificates made for the run under its folder.
    #[arg(long)]
    tls: bool,
}

/// Where the servers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkMode {
    /// Namespaces when the machine allows, loopback otherwise.
    Auto,
    /// Each server in a network namespace of its own, faults through nftables.
    Namespaces,
    /// Every server on loopback, links relayed (and faulted) by the harness.
    Loopback,
}

/// One fault as injected.
#[derive(Clone, Debug, Serialize)]
struct Fault {
    kind: Nemesis,
    what: String,
    /// It took effect (a refused transfer, say, did not).
    effective: bool,
    /// Seconds since the run began.
    at: f64,
    healed: f64,
    /// Seconds from the heal to the next acknowledged write (if one came before the next
    /// fault).
    recovered_after: Option<f64>,
}

/// What a run prints and writes as `summary.json`.
#[derive(Debug, Serialize)]
struct Summary {
    system: String,
    network: String,
    seed: u64,
    duration_seconds: f64,
    nemeses: Vec<Nemesis>,
    sabotage: Option<String>,
    operations: usize,
    ok: usize,
    failed: usize,
    unknown: usize,
    faults: Vec<Fault>,
    server_starts: Vec<u32>,
    recovery_seconds: Option<f64>,
    checks: Vec<Check>,
    passed: bool,
}

/// Runs the harness; an error (or a failed verdict) gives a nonzero exit.
pub async fn run(args: ChaosArgs) -> Result<(), String> {
    let mut nemeses = Nemesis::parse_list(&args.nemesis)?;
    if args.clients == 0 || args.rate <= 0.0 {
        return Err("--clients and --rate must be above 0".into());
    }
    if args.sabotage.is_some() && !cfg!(feature = "sabotage") {
        return Err(crate::serve::NO_SABOTAGE.into());
    }
    if args.system == System::Etcd && args.tls {
        return Err("--tls applies to lockstep only".into());
    }
    if args.system == System::Etcd && args.sabotage.is_some() {
        return Err("--sabotage applies to lockstep only".into());
    }
    // Signals are caught from here on, so that an interrupt while the network is being set
    // up still ends in the cleanup.
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|error| error.to_string())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|error| error.to_string())?;
    let explicit = args.nemesis != "all";
    let namespaces = match args.network {
        NetworkMode::Namespaces => {
            net::available()?;
            true
        }
        NetworkMode::Loopback => false,
        NetworkMode::Auto => match net::available() {
            Ok(()) => true,
            Err(why) => {
                println!("network: loopback with relays ({why})");
                false
            }
        },
    };
    if args.system == System::Etcd {
        // Leadership transfer goes through etcd's MoveLeader, which lockstep's etcd API
        // does not define; membership changes need new etcd members started by hand.
        let before = nemeses.len();
        nemeses.retain(|kind| !matches!(kind, Nemesis::Transfer | Nemesis::Member));
        if nemeses.len() < before {
            if explicit {
                return Err("etcd takes no transfer or member faults".into());
            }
            println!("etcd: without transfer and member");
        }
    }
    if namespaces {
        for removed in net::sweep() {
            eprintln!("removed a leftover of an earlier run: {removed}");
        }
    } else {
        // A full disk needs a mount; etcd's peers cannot be relayed (each member must be
        // told the others' real addresses), so only its processes can be faulted.
        let keep: &[Nemesis] = match args.system {
            System::Lockstep => &[
                Nemesis::Kill,
                Nemesis::Pause,
                Nemesis::Partition,
                Nemesis::Loss,
                Nemesis::Delay,
                Nemesis::Transfer,
            ],
            System::Etcd => &[Nemesis::Kill, Nemesis::Pause],
        };
        let dropped: Vec<&str> =
            nemeses.iter().filter(|kind| !keep.contains(kind)).map(|kind| kind.name()).collect();
        if !dropped.is_empty() {
            if explicit {
                return Err(format!(
                    "on loopback (no network namespaces) there is no {} fault; run as root \
                     with `ip netns` and `nft` for them",
                    dropped.join(", ")
                ));
            }
            println!("on loopback, without: {}", dropped.join(", "));
        }
        nemeses.retain(|kind| keep.contains(kind));
    }
    let seed = args.seed.unwrap_or_else(lockstep_client::random_id);
    let system = match args.system {
        System::Lockstep => "lockstep",
        System::Etcd => "etcd",
    };
    let folder = args.dir.join(format!("{system}-{seed}"));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).map_err(|error| format!("{}: {error}", folder.display()))?;
    let folder = std::fs::canonicalize(&folder).map_err(|error| error.to_string())?;
    let rerun = format!(
        "lockstep chaos --system {system} --network {} --seed {seed} --duration {}s --nemesis {} \
         --clients {} --rate {} --interval {}s{}{}",
        if namespaces { "namespaces" } else { "loopback" },
        args.duration.as_secs_f64(),
        args.nemesis,
        args.clients,
        args.rate,
        args.interval.as_secs_f64(),
        args.sabotage.map_or(String::new(), |sabotage| format!(" --sabotage {}", sabotage.name())),
        if args.tls { " --tls" } else { "" },
    );
    println!("chaos: {system}, seed {seed}, {:?} of faults ({})", args.duration, args.nemesis);
    println!("run folder: {}", folder.display());

    let binary = match &args.binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(|error| error.to_string())?,
    };
    let mut network = if namespaces {
        let mut network = Namespaces::create(3)?;
        let peer_port = match args.system {
            System::Lockstep => Port::Peer,
            System::Etcd => Port::EtcdPeer,
        };
        network.start_proxies(&binary, peer_port.number())?;
        Network::Namespaces(network)
    } else {
        Network::Loopback(Loopback::create(3, args.system == System::Lockstep).await?)
    };
    println!("network: {}", network.name());
    let small_disk = nemeses.contains(&Nemesis::DiskFull).then_some(256);
    let mut cluster =
        Cluster::new(args.system, binary, args.sabotage, &folder, 3, small_disk, seed)?;
    if args.tls {
        let hosts: Vec<String> = (0..3)
            .filter_map(|index| {
                let address = network.listen(index, Port::Client);
                address.rsplit_once(':').map(|(host, _)| host.to_string())
            })
            .collect();
        let files = cluster.use_tls(hosts)?;
        let tls = lockstep_tls::ClientTls {
            ca_file: files.ca(),
            identity: Some((files.client(), files.client_key())),
            alpn: Vec::new(),
        };
        let config = tls.reloading().map_err(|error| format!("TLS: {error}"))?;
        let _ = CLIENT_TLS.set(config);
        println!("tls: on every port ({})", files.dir.display());
    }
    let outcome = {
        let interrupted = async {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            Err::<Summary, String>("interrupted".into())
        };
        tokio::select! {
            result = session(&args, &nemeses, seed, &mut network, &mut cluster, &folder) => result,
            result = interrupted => result,
        }
    };
    cluster.stop();
    drop(cluster);
    drop(network);
    let summary = match outcome {
        Ok(summary) => summary,
        Err(error) => {
            println!("run folder kept: {}\nrerun: {rerun}", folder.display());
            return Err(error);
        }
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|error| error.to_string())?;
    let _ = std::fs::write(folder.join("summary.json"), &json);
    print_summary(&summary);
    if summary.passed {
        if !args.keep {
            let _ = std::fs::remove_dir_all(&folder);
        }
        Ok(())
    } else {
        println!("run folder kept: {}\nrerun: {rerun}", folder.display());
        Err("the verdict is FAIL".into())
    }
}

fn print_summary(summary: &Summary) {
    println!();
    println!(
        "operations: {} (ok {}, failed {}, unknown {})",
        summary.operations, summary.ok, summary.failed, summary.unknown
    );
    let mut kinds: Vec<(Nemesis, usize)> = Vec::new();
    let idle = summary.faults.iter().filter(|fault| !fault.effective).count();
    for fault in summary.faults.iter().filter(|fault| fault.effective) {
        match kinds.iter_mut().find(|(kind, _)| *kind == fault.kind) {
            Some((_, count)) => *count += 1,
            None => kinds.push((fault.kind, 1)),
        }
    }
    let kinds: Vec<String> =
        kinds.iter().map(|(kind, count)| format!("{} {count}", kind.name())).collect();
    println!(
        "faults: {} ({}){}",
        summary.faults.len() - idle,
        kinds.join(", "),
        if idle > 0 { format!("; {idle} more without effect") } else { String::new() }
    );
    let mut recoveries: Vec<f64> =
        summary.faults.iter().filter_map(|fault| fault.recovered_after).collect();
    recoveries.sort_by(f64::total_cmp);
    if let (Some(median), Some(max)) = (recoveries.get(recoveries.len() / 2), recoveries.last()) {
        println!(
            "time to the first acknowledged write after a heal: median {median:.2} s, max {max:.2} s \
             ({} of {} heals; the others saw none before the next fault)",
            recoveries.len(),
            summary.faults.len()
        );
    }
    if let Some(recovery) = summary.recovery_seconds {
        println!("after the final heal: serving again in {recovery:.2} s");
    }
    println!("server starts: {:?}", summary.server_starts);
    for check in &summary.checks {
        println!("{} {}: {}", if check.passed { "PASS" } else { "FAIL" }, check.name, check.detail);
    }
    println!("verdict: {}", if summary.passed { "PASS" } else { "FAIL" });
}

/// Client endpoints: server `index`'s client address.
fn endpoint(system: System, network: &Network, index: usize) -> String {
    match system {
        System::Lockstep => network.listen(index, Port::Client),
        System::Etcd => network.listen(index, Port::Etcd),
    }
}

/// The clients' TLS, when the run has TLS (`--tls`).
static CLIENT_TLS: std::sync::OnceLock<
    std::sync::Arc<lockstep_tls::Reloading<lockstep_tls::rustls::ClientConfig>>,
> = std::sync::OnceLock::new();

/// The clients' TLS configuration, if the run has TLS.
pub fn client_tls(
) -> Option<std::sync::Arc<lockstep_tls::Reloading<lockstep_tls::rustls::ClientConfig>>> {
    CLIENT_TLS.get().cloned()
}

/// A native client on exactly one replica (for status).
fn pinned(network: &Network, index: usize) -> Client<Request, Request, Answer> {
    native(network, &[index], Duration::from_secs(2), Duration::from_millis(500))
}

/// A native client over the replicas at `indexes` (tried in that order).
fn native(
    network: &Network,
    indexes: &[usize],
    timeout: Duration,
    attempt_timeout: Duration,
) -> Client<Request, Request, Answer> {
    let options =
        ClientOptions { timeout, attempt_timeout, tls: client_tls(), ..ClientOptions::default() };
    let endpoints = indexes.iter().map(|&index| endpoint(System::Lockstep, network, index));
    Client::new(endpoints.collect(), options)
}

/// The leader, as the replicas say (lockstep only).
async fn leader(network: &Network, servers: usize) -> Option<usize> {
    for index in 0..servers {
        let status = tokio::time::timeout(Duration::from_millis(500), async {
            pinned(network, index).status_with(false).await
        })
        .await;
        if let Ok(Ok(status)) = status {
            if status.role == "leader" {
                return Some(index);
            }
        }
    }
    None
}

/// The leader, as etcd's members say.
async fn etcd_leader(network: &Network, servers: usize) -> Option<usize> {
    use lockstep_etcd::proto::etcdserverpb as pb;
    use lockstep_etcd::rpc::maintenance_client::MaintenanceClient;
    for index in 0..servers {
        let address = endpoint(System::Etcd, network, index);
        let Ok(channel) = workload::etcd_channel(&address, Duration::from_millis(500)) else {
            continue;
        };
        let mut client = MaintenanceClient::new(channel);
        let asked = client.status(pb::StatusRequest {});
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_millis(500), asked).await {
            let status = status.into_inner();
            if status.header.is_some_and(|header| header.member_id == status.leader) {
                return Some(index);
            }
        }
    }
    None
}

/// A backend for client `id`: it starts on server `id % 3`.
fn backend(
    system: System,
    network: &Network,
    id: usize,
    timeout: Duration,
) -> Result<Backend, String> {
    let servers = 3;
    let order: Vec<String> =
        (0..servers).map(|k| endpoint(system, network, (id + k) % servers)).collect();
    match system {
        System::Lockstep => Ok(Backend::native(order, timeout)),
        System::Etcd => Backend::etcd(&order, timeout),
    }
}

/// Writes a probe until one is acknowledged; the time it took.
async fn serving(system: System, network: &Network, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut attempt = 0;
    while started.elapsed() < within {
        if let Ok(backend) = backend(system, network, attempt, Duration::from_secs(1)) {
            if backend.call(u64::MAX, &Input::Put(0), 0).await.is_ok() {
                return Some(started.elapsed());
            }
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn session(
    args: &ChaosArgs,
    nemeses: &[Nemesis],
    seed: u64,
    network: &mut Network,
    cluster: &mut Cluster,
    folder: &std::path::Path,
) -> Result<Summary, String> {
    for index in 0..cluster.len() {
        cluster.start(network, index)?;
    }
    if serving(args.system, network, Duration::from_secs(30)).await.is_none() {
        return Err("the cluster did not start serving within 30 s (see the server logs)".into());
    }
    let started = Instant::now();
    let history: History = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workload = Workload {
        rate: args.rate,
        keys: 4,
        key_period: Duration::from_secs(5),
        clients: args.clients,
    };
    let mut clients = Vec::new();
    for id in 0..args.clients {
        let backend = backend(args.system, network, id, Duration::from_secs(2))?;
        clients.push(tokio::spawn(workload::client(
            id as u64,
            backend,
            workload.clone(),
            started,
            seed,
            history.clone(),
            stop.clone(),
        )));
    }
    let mut faults_log =
        std::fs::File::create(folder.join("faults.log")).map_err(|error| error.to_string())?;
    let mut random = Random::new(seed);
    let mut faults = Vec::new();
    let at = |instant: Instant| instant.duration_since(started).as_secs_f64();
    tokio::time::sleep(random.between(args.interval / 2, args.interval)).await;
    // Every kind once per round, in an order drawn from the seed.
    let mut bag: Vec<Nemesis> = Vec::new();
    while !nemeses.is_empty() && started.elapsed() < args.duration {
        if bag.is_empty() {
            bag = nemeses.to_vec();
            for i in (1..bag.len()).rev() {
                bag.swap(i, random.below(i as u64 + 1) as usize);
            }
        }
        let Some(first) = bag.pop() else { break };
        let mut kinds = vec![first];
        // A quarter of the time a second fault, of another kind, at the same time.
        if random.below(4) == 0 {
            kinds.extend(bag.pop());
        }
        let mut injected = Vec::new();
        for kind in kinds {
            let begun = Instant::now();
            let (what, effective) =
                inject(kind, &mut random, network, cluster, args.system).await?;
            let _ = writeln!(faults_log, "{:8.2} {} {what}", at(begun), kind.name());
            println!("{:8.2}s {}: {what}", at(begun), kind.name());
            injected.push((kind, what, effective, begun));
        }
        tokio::time::sleep(random.between(args.interval / 2, args.interval * 3 / 2)).await;
        for note in heal(network, cluster).await? {
            let _ = writeln!(faults_log, "{:8.2} {note}", at(Instant::now()));
            println!("{:8.2}s heal: {note}", at(Instant::now()));
        }
        let healed = Instant::now();
        let _ = writeln!(faults_log, "{:8.2} heal", at(healed));
        for (kind, what, effective, begun) in injected {
            faults.push(Fault {
                kind,
                what,
                effective,
                at: at(begun),
                healed: at(healed),
                recovered_after: None,
            });
        }
        tokio::time::sleep(random.between(args.interval / 2, args.interval * 3 / 2)).await;
    }
    if nemeses.is_empty() {
        tokio::time::sleep(args.duration).await;
    }
    // The final heal, then the cluster must serve within the bound.
    for note in heal(network, cluster).await? {
        let _ = writeln!(faults_log, "{:8.2} {note}", at(Instant::now()));
    }
    let recovery = serving(args.system, network, args.recovery_bound).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let mut records = history.lock().map(|history| history.clone()).unwrap_or_default();
    // Final reads of every key, so that a lost last write shows.
    let keys: BTreeSet<u64> = records.iter().map(|record| record.key).collect();
    let reader = backend(args.system, network, 0, Duration::from_secs(5))?;
    let mut unread = Vec::new();
    for &key in &keys {
        // A read that fails is tried again (through each server in turn): without it the
        // key's last value has no witness.
        let mut read = None;
        for attempt in 0..6 {
            let call = started.elapsed().as_micros() as u64;
            let result = reader.call(key, &Input::Get, attempt).await;
            let end = started.elapsed().as_micros() as u64;
            if let Ok(output) = result {
                read = Some(Record {
                    client: u64::MAX,
                    key,
                    input: Input::Get,
                    call,
                    outcome: Outcome::Ok(output),
                    end,
                    error: None,
                });
                break;
            }
        }
        match read {
            Some(record) => records.push(record),
            None => unread.push(key),
        }
    }
    // Time to the first acknowledged write after each heal.
    for fault in &mut faults {
        let healed_micros = (fault.healed * 1e6) as u64;
        fault.recovered_after = records
            .iter()
            .filter(|record| record.call >= healed_micros && record.input != Input::Get)
            .filter(|record| matches!(record.outcome, Outcome::Ok(_)))
            .map(|record| record.end)
            .min()
            .map(|end| (end - healed_micros) as f64 / 1e6);
    }
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(folder.join("history.jsonl")).map_err(|error| error.to_string())?,
    );
    for record in &records {
        if let Ok(line) = serde_json::to_string(record) {
            let _ = writeln!(file, "{line}");
        }
    }
    drop(file);

    let mut checks = Vec::new();
    checks.push(Check::new(
        "serves again after the final heal",
        recovery.is_some(),
        match recovery {
            Some(time) => {
                format!("a write acknowledged {:.2} s after the heal", time.as_secs_f64())
            }
            None => format!("no write acknowledged within {:?}", args.recovery_bound),
        },
    ));
    checks.push(Check::new(
        "every key read after the heal",
        unread.is_empty(),
        if unread.is_empty() {
            format!("{} keys", keys.len())
        } else {
            format!("{} of {} keys could not be read: {unread:?}", unread.len(), keys.len())
        },
    ));
    checks.push(verdict::linearizable(&records));
    match args.system {
        System::Lockstep => {
            let auditor = pinned_any(network);
            match verdict::applied_lockstep(&auditor).await {
                Ok(applied) => checks.extend(verdict::durable_and_once(&records, &applied)),
                Err(error) => checks.push(Check::new(
                    "no acknowledged write lost",
                    false,
                    format!("could not read the store's history: {error}"),
                )),
            }
            let replicas: Vec<_> = (0..cluster.len()).map(|index| pinned(network, index)).collect();
            checks.push(verdict::same_digest(&replicas, Duration::from_secs(20)).await);
        }
        System::Etcd => {
            match verdict::applied_etcd(&endpoint(System::Etcd, network, 0)).await {
                Ok(applied) => checks.extend(verdict::durable_and_once(&records, &applied)),
                Err(error) => checks.push(Check::new(
                    "no acknowledged write lost",
                    false,
                    format!("could not read the store's history: {error}"),
                )),
            }
            let endpoints: Vec<String> =
                (0..cluster.len()).map(|index| endpoint(System::Etcd, network, index)).collect();
            checks.push(verdict::same_hash_etcd(&endpoints, Duration::from_secs(20)).await);
        }
    }
    let count = |wanted: fn(&Outcome) -> bool| {
        records.iter().filter(|record| record.client != u64::MAX && wanted(&record.outcome)).count()
    };
    let passed = checks.iter().all(|check| check.passed);
    Ok(Summary {
        system: format!("{:?}", args.system).to_lowercase(),
        network: network.name().to_string(),
        seed,
        duration_seconds: args.duration.as_secs_f64(),
        nemeses: nemeses.to_vec(),
        sabotage: args.sabotage.map(|sabotage| format!("{sabotage:?}")),
        operations: count(|_| true),
        ok: count(|outcome| matches!(outcome, Outcome::Ok(_))),
        failed: count(|outcome| *outcome == Outcome::Failed),
        unknown: count(|outcome| *outcome == Outcome::Unknown),
        faults,
        server_starts: cluster.starts(),
        recovery_seconds: recovery.map(|time| time.as_secs_f64()),
        checks,
        passed,
    })
}

/// A native client that may use any replica.
fn pinned_any(network: &Network) -> Client<Request, Request, Answer> {
    native(network, &[0, 1, 2], Duration::from_secs(10), Duration::from_secs(2))
}

/// Removes every fault: network rules, the disk filler; resumes and restarts servers; adds
/// removed servers back under new ids. What it did beyond the routine.
async fn heal(network: &mut Network, cluster: &mut Cluster) -> Result<Vec<String>, String> {
    network.heal()?;
    if let Some(filler) = cluster.filler() {
        let _ = std::fs::remove_file(filler);
    }
    cluster.restore(network)?;
    let mut notes = Vec::new();
    for index in cluster.removed() {
        notes.push(rejoin(network, cluster, index).await?);
    }
    Ok(notes)
}

/// Adds removed server `index` back under a new id: records it (a learner), starts it with
/// `--join`, and promotes it once it has caught up.
async fn rejoin(network: &Network, cluster: &mut Cluster, index: usize) -> Result<String, String> {
    use lockstep_wire::MemberRequest;
    let id = cluster.fresh_id();
    let client = pinned_any(network);
    let add = MemberRequest::Add {
        id,
        peer: network.listen(index, Port::Peer),
        client: network.listen(index, Port::Client),
        etcd: Some(network.listen(index, Port::Etcd)),
    };
    let mut outcome = Err(String::new());
    for _ in 0..3 {
        // A retry of an add that was made is answered as made (same id, same addresses).
        outcome = client.members(add.clone()).await.map_err(|error| error.to_string());
        if outcome.is_ok() {
            break;
        }
    }
    if let Err(error) = outcome {
        // Still removed: the next heal tries again (under another new id).
        return Ok(format!("server {} could not be added back as {id}: {error}", index + 1));
    }
    cluster.replace(index, id);
    cluster.start(network, index)?;
    let mut promoted = Err(String::new());
    for _ in 0..3 {
        promoted =
            client.members(MemberRequest::Promote { id }).await.map_err(|error| error.to_string());
        if promoted.is_ok() {
            break;
        }
    }
    Ok(match promoted {
        Ok(_) => format!("server {} added back as replica {id} and promoted", index + 1),
        Err(error) => {
            format!("server {} added back as replica {id}, not promoted: {error}", index + 1)
        }
    })
}

/// Injects one fault of `kind`; what it did.
async fn inject(
    kind: Nemesis,
    random: &mut Random,
    network: &mut Network,
    cluster: &mut Cluster,
    system: System,
) -> Result<(String, bool), String> {
    let servers = cluster.len();
    // Whether the fault took effect (a transfer refused, say, did not).
    let mut effective = true;
    let leader = match system {
        System::Lockstep => leader(network, servers).await,
        System::Etcd => etcd_leader(network, servers).await,
    };
    let one = |random: &mut Random| -> usize {
        // Half the time the leader, when known.
        match leader {
            Some(leader) if random.below(2) == 0 => leader,
            _ => random.below(servers as u64) as usize,
        }
    };
    let name = |set: &BTreeSet<usize>| {
        set.iter().map(|index| (index + 1).to_string()).collect::<Vec<_>>().join(",")
    };
    let what = match kind {
        Nemesis::Kill => {
            // One, a majority, or all: as likely each (a whole rack losing power is what
            // tests durability).
            let how_many = match random.below(3) {
                0 => 1,
                1 => servers / 2 + 1,
                _ => servers,
            };
            let mut targets = BTreeSet::from([one(random)]);
            while targets.len() < how_many {
                targets.insert(random.below(servers as u64) as usize);
            }
            for &index in &targets {
                cluster.kill(index)?;
            }
            format!("SIGKILL servers {}", name(&targets))
        }
        Nemesis::Pause => {
            let target = one(random);
            cluster.pause(target)?;
            format!(
                "SIGSTOP server {}{}",
                target + 1,
                if Some(target) == leader { " (leader)" } else { "" }
            )
        }
        Nemesis::Partition => {
            let all: BTreeSet<usize> = (0..servers).collect();
            match random.below(4) {
                0 => {
                    let lone = one(random);
                    let rest: BTreeSet<usize> =
                        all.iter().copied().filter(|&i| i != lone).collect();
                    let single = BTreeSet::from([lone]);
                    network.cut(&single, &rest)?;
                    network.cut(&rest, &single)?;
                    format!(
                        "partition {{{}}} | {{{}}}{}",
                        name(&single),
                        name(&rest),
                        if Some(lone) == leader { " (the leader isolated)" } else { "" }
                    )
                }
                1 => {
                    // A bridge: the middle one sees both others; they do not see each other.
                    let middle = random.below(servers as u64) as usize;
                    let ends: Vec<usize> = all.iter().copied().filter(|&i| i != middle).collect();
                    let (a, b) = (BTreeSet::from([ends[0]]), BTreeSet::from([ends[1]]));
                    network.cut(&a, &b)?;
                    network.cut(&b, &a)?;
                    format!(
                        "bridge through server {}: {} and {} cut",
                        middle + 1,
                        ends[0] + 1,
                        ends[1] + 1
                    )
                }
                2 => {
                    // One way: nothing reaches the leader (or one server); it still sends.
                    let deaf = one(random);
                    let rest: BTreeSet<usize> =
                        all.iter().copied().filter(|&i| i != deaf).collect();
                    network.cut(&rest, &BTreeSet::from([deaf]))?;
                    format!("one way: nothing reaches server {}", deaf + 1)
                }
                _ => {
                    // Every server alone.
                    for a in 0..servers {
                        network.cut(&BTreeSet::from([a]), &all)?;
                    }
                    "every server alone".to_string()
                }
            }
        }
        Nemesis::Loss => {
            let percent = [10, 30, 60][random.below(3) as usize];
            network.lose(percent)?;
            format!("{percent}% of packets between servers dropped")
        }
        Nemesis::DiskFull => match (cluster.filler(), cluster.small_disk_server()) {
            (Some(filler), Some(server)) => {
                fill(&filler);
                format!("server {}'s disk filled", server + 1)
            }
            _ => {
                effective = false;
                "no small disk".to_string()
            }
        },
        Nemesis::Member => {
            let Some(leader) = leader else {
                return Ok(("no leader to change the members".to_string(), false));
            };
            let target = (leader + 1 + random.below(servers as u64 - 1) as usize) % servers;
            let id = cluster.id(target);
            let client = pinned_any(network);
            // Without an answer the removal may still have happened: ask again (a removal
            // already made is answered as made once its configuration commits).
            let mut outcome = Err(String::new());
            for _ in 0..3 {
                let asked = client.members(lockstep_wire::MemberRequest::Remove { id });
                outcome = match tokio::time::timeout(Duration::from_secs(10), asked).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err("no answer".to_string()),
                };
                if outcome.is_ok() {
                    break;
                }
            }
            match outcome {
                Ok(()) => {
                    cluster.remove(target)?;
                    format!("server {} (replica {id}) removed, its data wiped", target + 1)
                }
                Err(error) => {
                    effective = false;
                    format!("removing replica {id} failed: {error}")
                }
            }
        }
        Nemesis::Transfer => {
            let Some(leader) = leader else {
                return Ok(("no leader to transfer from".to_string(), false));
            };
            let target = (leader + 1 + random.below(servers as u64 - 1) as usize) % servers;
            let client = pinned_any(network);
            let request = lockstep_wire::MemberRequest::Transfer { id: cluster.id(target) };
            match tokio::time::timeout(Duration::from_secs(3), client.members(request)).await {
                Ok(Ok(_)) => format!("leadership from server {} to {}", leader + 1, target + 1),
                Ok(Err(error)) => {
                    effective = false;
                    format!(
                        "leadership from server {} to {} refused: {error}",
                        leader + 1,
                        target + 1
                    )
                }
                Err(_) => {
                    effective = false;
                    "leadership transfer: no answer".to_string()
                }
            }
        }
        Nemesis::Delay => {
            let millis = [20, 100, 300][random.below(3) as usize];
            if random.below(2) == 0 {
                let all = (0..servers).collect();
                network.delay(&all, millis)?;
                format!("{millis} ms each way on every link")
            } else {
                let target = one(random);
                network.delay(&BTreeSet::from([target]), millis)?;
                format!("{millis} ms each way on every link of server {}", target + 1)
            }
        }
    };
    Ok((what, effective))
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &std::path::Path) {
    let Ok(mut file) = std::fs::File::create(path) else { return };
    let block = vec![0u8; 1 << 20];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_fault_lists_parse_or_say_why_not() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(Nemesis::parse_list("all"), Ok(Nemesis::ALL.to_vec()));
        assert_eq!(Nemesis::parse_list("none"), Ok(Vec::new()));
        assert_eq!(
            Nemesis::parse_list("pause, kill,pause"),
            Ok(vec![Nemesis::Kill, Nemesis::Pause])
        );
        let error = Nemesis::parse_list("kill,flood").expect_err("unknown");
        assert!(error.contains("flood"), "{error}");
    }

    #[test]
    fn the_schedule_generator_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Random::new(7), Random::new(7));
        for _ in 0..1000 {
            let x = a.below(5);
            assert_eq!(x, b.below(5));
            assert!(x < 5);
        }
        assert_eq!(Random::new(1).below(0), 0);
    }
}
