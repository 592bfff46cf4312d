//! The `lockstep` command: run a replicated key-value server, start a local cluster, read and
//! write keys, show status. `lockstep --help` lists the commands; `lockstep up` (what
//! `cargo run --release` runs) starts a local three-replica cluster.

mod bench;
mod cert;
mod chaos;
mod commands;
mod serve;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lockstep_tls::{rustls, ClientTls, Reloading};

/// lockstep: a replicated key-value store (state machine replication with Raft).
///
/// Start a local cluster with `lockstep up`, then in another terminal:
/// `lockstep put greeting hello`, `lockstep get greeting`, `lockstep status`.
#[derive(Parser, Debug)]
#[command(name = "lockstep", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a local cluster of server processes on loopback (the default command).
    Up(up::UpArgs),
    /// Run one replica (see `lockstep serve --help` for the configuration file).
    Serve(Box<serve::ServeArgs>),
    /// Make a cluster's TLS certificates (docs/SECURITY.md).
    Cert(cert::CertArgs),
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Also print the value it replaced.
        #[arg(long)]
        prev_kv: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Read a key, or every key with a prefix.
    Get {
        /// The key (or prefix, with --prefix).
        key: String,
        /// Read every key that starts with KEY.
        #[arg(long)]
        prefix: bool,
        /// At most this many keys (0: no limit).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
        /// Print only how many keys match.
        #[arg(long)]
        count_only: bool,
        /// Read as the keys were at this revision (0: now).
        #[arg(long, default_value_t = 0)]
        rev: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a key, or every key with a prefix.
    Del {
        /// The key (or prefix, with --prefix).
        key: String,
        /// Delete every key that starts with KEY.
        #[arg(long)]
        prefix: bool,
        /// Also print what was deleted.
        #[arg(long)]
        prev_kv: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List keys in order, from START (inclusive) to END (exclusive).
    Scan {
        /// The first key (default: the smallest).
        start: Option<String>,
        /// The key to stop before (default: no end).
        end: Option<String>,
        /// At most this many keys (0: no limit).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A transaction: if every comparison holds, run the success operations, else the
    /// failure ones, all at one revision.
    ///
    /// Comparisons: `value(KEY) = V`, `version(KEY) > N`, `create(KEY) = N`, `mod(KEY) < N`
    /// (operators `=`, `!=`, `>`, `<`). Operations: `put KEY VALUE`, `del KEY`, `get KEY`.
    ///
    /// Example: lockstep txn --compare 'value(lock) = free' --success 'put lock mine'
    /// --failure 'get lock'
    Txn {
        /// A comparison (repeat for several; all must hold).
        #[arg(long)]
        compare: Vec<String>,
        /// An operation run if every comparison holds (repeatable).
        #[arg(long)]
        success: Vec<String>,
        /// An operation run otherwise (repeatable).
        #[arg(long)]
        failure: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show each replica: role, term, commit and applied index, checkpoint, state digest, lag.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Measure throughput and latency against a running cluster (closed loop).
    Bench(bench::BenchArgs),
    /// Run a real 3-server cluster under faults (kills, pauses, partitions, packet loss, a
    /// full disk) and check what its clients saw (needs root, `ip netns` and `nft`).
    Chaos(chaos::ChaosArgs),
    /// The delay proxy `lockstep chaos` runs in each server's network namespace.
    #[command(hide = true)]
    ChaosProxy(chaos::ProxyArgs),
    /// List the cluster's members, or add, promote or remove one.
    Member {
        #[command(subcommand)]
        action: MemberAction,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The audit of replicas: per replica the latest output chain index a majority agreed
    /// on, its newest state digest, whether it is quarantined, and the divergences found.
    Audit {
        #[command(subcommand)]
        action: Option<AuditAction>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Forget the history before a revision (reads below it are refused from then on).
    Compact {
        /// The revision.
        revision: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// What `lockstep member` does.
#[derive(Subcommand, Debug, Clone)]
enum MemberAction {
    /// The members, voters and learners, with their addresses.
    List,
    /// Add a replica as a learner: record its addresses, then add it. Start it with
    /// `lockstep serve --join` and the cluster's members (itself included); promote it once it
    /// has caught up.
    Add {
        /// Its id (never used before in this cluster).
        id: u64,
        /// Where replicas reach it.
        #[arg(long)]
        peer: String,
        /// Where clients reach it.
        #[arg(long)]
        client: String,
        /// Where it serves etcd's API, if it does.
        #[arg(long)]
        etcd: Option<String>,
    },
    /// Make a caught-up learner a voter.
    Promote {
        /// The learner's id.
        id: u64,
    },
    /// Remove a voter or learner (the cluster must keep a voter).
    Remove {
        /// The replica's id.
        id: u64,
    },
    /// Hand leadership to a caught-up voter.
    Transfer {
        /// The voter's id.
        id: u64,
    },
}

/// What `lockstep audit` does besides showing.
#[derive(Subcommand, Debug, Clone)]
enum AuditAction {
    /// Compare now: the leader places a digest point; every replica reports its state digest
    /// there; then show the result.
    Check,
    /// Repair a quarantined replica now (with `audit_repair = "manual"`).
    Repair {
        /// The replica's id.
        id: u64,
    },
}

/// Options every client command takes.
#[derive(Args, Debug, Clone)]
struct ClientArgs {
    /// The cluster's client addresses, comma-separated.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103",
        env = "LOCKSTEP_ENDPOINTS"
    )]
    endpoints: Vec<String>,
    /// How to print results.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Give up after this many seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    timeout: f64,
    /// How reads are served: `linearizable` (a read-index round on the leader), `lease` (under
    /// the leader's lease if the servers run with --lease-reads, else as linearizable), or
    /// `serializable` (by whichever replica answers, at once; may be stale).
    #[arg(long, global = true, value_enum, default_value_t = Consistency::Linearizable)]
    consistency: Consistency,
    /// Short for --consistency serializable.
    #[arg(long, global = true)]
    serializable: bool,
    /// TLS: the authority that the servers' certificates come from (PEM). Without TLS flags,
    /// `lockstep-data/tls/` is used if it exists (a cluster from `lockstep up --tls`).
    #[arg(long, id = "tls_cacert", global = true, value_name = "FILE", env = "LOCKSTEP_CACERT")]
    cacert: Option<PathBuf>,
    /// TLS: this client's certificate (PEM), for servers that require one.
    #[arg(long, id = "tls_cert", global = true, value_name = "FILE", env = "LOCKSTEP_CERT")]
    cert: Option<PathBuf>,
    /// TLS: the key of --cert (PEM, readable by its owner only).
    #[arg(long = "key", id = "tls_key", global = true, value_name = "FILE", env = "LOCKSTEP_KEY")]
    key_file: Option<PathBuf>,
    /// Authenticate as this user, `name:password` (prompted for when left out), as etcdctl's
    /// --user: needed once authentication is on (`etcdctl auth enable`).
    #[arg(long, global = true, value_name = "NAME[:PASSWORD]", env = "LOCKSTEP_USER")]
    user: Option<String>,
}

/// How reads are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Consistency {
    /// Read-index on the leader: never stale.
    Linearizable,
    /// The leader's lease (servers with --lease-reads): never stale while clocks behave.
    Lease,
    /// Any replica, at once: may be stale.
    Serializable,
}

impl ClientArgs {
    /// The TLS files the flags give, or the local cluster's (`lockstep-data/tls/`, made by
    /// `lockstep up --tls`) when no flag is given and it exists: the authority, and this
    /// client's certificate and key. `None`: plaintext.
    fn tls_files(&self) -> Result<Option<ClientTls>, String> {
        let local = lockstep_tls::issue::ClusterFiles {
            dir: lockstep_tls::cluster_dir(&default_data_dir()),
        };
        Ok(Some(match (&self.cacert, &self.cert, &self.key_file) {
            (None, None, None) if local.ca().exists() => ClientTls {
                ca_file: local.ca(),
                identity: Some((local.client(), local.client_key())),
                alpn: Vec::new(),
            },
            (None, None, None) => return Ok(None),
            (Some(ca), None, None) => {
                ClientTls { ca_file: ca.clone(), identity: None, alpn: Vec::new() }
            }
            (Some(ca), Some(cert), Some(key)) => ClientTls {
                ca_file: ca.clone(),
                identity: Some((cert.clone(), key.clone())),
                alpn: Vec::new(),
            },
            _ => return Err("TLS: give --cacert, with --cert and --key together".to_string()),
        }))
    }

    /// The TLS configuration of [`ClientArgs::tls_files`].
    fn tls(&self) -> Result<Option<Arc<Reloading<rustls::ClientConfig>>>, String> {
        match self.tls_files()? {
            Some(tls) => tls.reloading().map(Some).map_err(|error| format!("TLS: {error}")),
            None => Ok(None),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout.clamp(0.1, 3600.0))
    }
}

/// How results print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// For people.
    Text,
    /// One JSON document, for scripts.
    Json,
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Up(up::UpArgs::default()));
    // A server's work is on its replica, log and checkpoint threads; its network tasks need
    // one worker (fewer threads contending for the cores: measured faster on small machines).
    let workers = match &command {
        Command::Serve(_) => std::env::var("LOCKSTEP_NETWORK_THREADS")
            .ok()
            .and_then(|threads| threads.parse::<usize>().ok())
            .filter(|&threads| threads > 0)
            .unwrap_or(1),
        _ => std::thread::available_parallelism().map_or(2, |cores| cores.get()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Up(args) => {
                init_logging("warn");
                up::run(args).await
            }
            // Its log is set up from its configuration.
            Command::Serve(args) => serve::run(*args).await,
            Command::Cert(args) => {
                init_logging("error");
                cert::run(args)
            }
            Command::Bench(args) => {
                init_logging("error");
                bench::run(args).await
            }
            Command::Chaos(args) => {
                init_logging("off");
                chaos::run(args).await
            }
            Command::ChaosProxy(args) => {
                init_logging("off");
                chaos::run_proxy(args).await
            }
            other => {
                init_logging("error");
                commands::run(other).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The default data directory of `lockstep up`.
fn default_data_dir() -> PathBuf {
    PathBuf::from("lockstep-data")
}
