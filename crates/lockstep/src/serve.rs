//! `lockstep serve`: one replica of the key-value service.

use std::path::PathBuf;

use clap::Args;
use lockstep_etcd::{Gateway, GatewayConfig, GatewayMember, GatewayTls, LocalReplica};
use lockstep_kv::{self as kv, Kv};
use lockstep_server::{BoundServer, Inbox, LocalLink, Member, ServerConfig};

/// Run one replica of the key-value service.
///
/// Give a TOML file with --config, flags, or both (flags override the file). A file looks
/// like:
///
///   id = 1
///   cluster_id = 42
///   data_dir = "/var/lib/lockstep/1"
///   [[members]]
///   id = 1
///   peer = "10.0.0.1:7201"
///   client = "10.0.0.1:7101"
///   (one [[members]] table per replica)
///
/// Optional: listen_peer, listen_client (default: this member's addresses), listen_metrics
/// (none), tick_millis (50),
/// heartbeat_ticks (1), election_ticks (10), checkpoint_entries (100000),
/// checkpoint_growth_percent (100), lease_reads (false), audit (true),
/// audit_report_interval (64), audit_digest_interval (16384), audit_repair ("auto"),
/// verified_outputs (false),
/// join (false), auto_compact_revisions (0: never), lease_checkpoint_millis (300000);
/// TLS (docs/SECURITY.md): cert_file, key_file, trusted_ca_file, client_cert_auth,
/// peer_cert_file, peer_key_file, peer_trusted_ca_file, insecure_plaintext; limits
/// (docs/SECURITY.md): max_connections (4096 per port), max_peer_connections (256),
/// client_idle_timeout_millis (600000), max_requests_per_connection (16384),
/// client_frame_timeout_millis (30000),
/// max_concurrent_streams (4096), max_watchers (100000), max_watchers_per_stream (10000),
/// max_leases (1000000), max_txn_ops (128); max_response_bytes_in_flight (268435456; 0: none);
/// auth_token ("simple"), auth_token_ttl (300);
/// quota_backend_bytes (2147483648; 0: none); log_level ("info"; re-read on SIGHUP), log_format
/// ("text" or "json").
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// A TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This replica's id (one of the members).
    #[arg(long)]
    id: Option<u64>,
    /// The cluster's id.
    #[arg(long)]
    cluster_id: Option<u64>,
    /// Where this replica keeps its data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A member as ID=PEER_ADDRESS,CLIENT_ADDRESS[,ETCD_ADDRESS] (repeat for each; replaces
    /// the file's).
    #[arg(long = "member", value_name = "ID=PEER,CLIENT[,ETCD]")]
    members: Vec<String>,
    /// Listen for peers here (default: this member's peer address).
    #[arg(long)]
    listen_peer: Option<String>,
    /// Listen for clients here (default: this member's client address).
    #[arg(long)]
    listen_client: Option<String>,
    /// Serve Prometheus metrics at http://ADDRESS/metrics.
    #[arg(long)]
    listen_metrics: Option<String>,
    /// Serve etcd's v3 API here (default: this member's etcd address, if given).
    #[arg(long)]
    listen_etcd: Option<String>,
    /// Milliseconds per protocol tick.
    #[arg(long)]
    tick_millis: Option<u64>,
    /// Heartbeat every this many ticks.
    #[arg(long)]
    heartbeat_ticks: Option<u64>,
    /// Elections after between this many ticks and twice as many.
    #[arg(long)]
    election_ticks: Option<u64>,
    /// Checkpoint every this many applied entries.
    #[arg(long)]
    checkpoint_entries: Option<u64>,
    /// ... once the log since the last checkpoint is this percentage of its size (0: always).
    #[arg(long)]
    checkpoint_growth_percent: Option<u64>,
    /// ... and in any case once this many bytes of log were applied since the last one.
    #[arg(long)]
    checkpoint_log_bytes_max: Option<u64>,
    /// Serve linearizable reads under a leader lease.
    #[arg(long)]
    lease_reads: bool,
    /// Join a running cluster this replica was added to with `lockstep member add` (it is
    /// not one of the initial members; keep the flag on restarts).
    #[arg(long)]
    join: bool,
    /// Keep this many revisions of history, compacting older ones automatically (0: never).
    #[arg(long)]
    auto_compact_revisions: Option<u64>,
    /// Record what remains of leases renewed in the leader's memory every this many
    /// milliseconds.
    #[arg(long)]
    lease_checkpoint_millis: Option<u64>,
    /// Turn the audit of replicas off (it is on by default).
    #[arg(long)]
    no_audit: bool,
    /// Replicas report their output chain to the leader every this many entries.
    #[arg(long)]
    audit_report_interval: Option<u64>,
    /// Every replica takes its state digest at every multiple of this index.
    #[arg(long)]
    audit_digest_interval: Option<u64>,
    /// Repair a divergent replica at once (auto) or only on `lockstep audit repair ID`
    /// (manual).
    #[arg(long, value_parser = parse_repair)]
    audit_repair: Option<lockstep_server::RepairSetting>,
    /// Answer a request only once a majority reported the same output chain at its entry.
    #[arg(long)]
    verified_outputs: bool,
    /// Test only: start deliberately broken (unsafe-reads, early-ack, diverge-at=INDEX), to
    /// show fault tests catch it.
    #[arg(long, hide = true, value_parser = parse_sabotage)]
    sabotage: Option<lockstep_server::Sabotage>,
    /// TLS on the client ports (native, etcd, metrics): this replica's certificate (PEM).
    #[arg(long, value_name = "FILE")]
    cert_file: Option<PathBuf>,
    /// The key of --cert-file (PEM, readable by its owner only).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// The authority of the members' and clients' certificates (PEM).
    #[arg(long, value_name = "FILE")]
    trusted_ca_file: Option<PathBuf>,
    /// Require clients to present a certificate from --trusted-ca-file.
    #[arg(long)]
    client_cert_auth: bool,
    /// Mutual TLS between replicas: this replica's peer certificate, which must name it.
    #[arg(long, value_name = "FILE")]
    peer_cert_file: Option<PathBuf>,
    /// The key of --peer-cert-file.
    #[arg(long, value_name = "FILE")]
    peer_key_file: Option<PathBuf>,
    /// The authority of the replicas' peer certificates.
    #[arg(long, value_name = "FILE")]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Serve in plaintext on addresses that are not loopback (refused otherwise).
    #[arg(long)]
    insecure_plaintext: bool,
    /// Connections open at once on each client-facing port (client, etcd, metrics).
    #[arg(long)]
    max_connections: Option<u64>,
    /// Connections open at once on the peer port.
    #[arg(long)]
    max_peer_connections: Option<u64>,
    /// Close a native client connection idle (nothing in flight, nothing sent) this long.
    #[arg(long)]
    client_idle_timeout_millis: Option<u64>,
    /// Requests one native client connection may have waiting for answers.
    #[arg(long)]
    max_requests_per_connection: Option<u64>,
    /// A native client's request frame must arrive whole within this long.
    #[arg(long)]
    client_frame_timeout_millis: Option<u64>,
    /// gRPC streams open at once on one etcd connection.
    #[arg(long)]
    max_concurrent_streams: Option<u32>,
    /// Watchers open at once on this member (etcd's API).
    #[arg(long)]
    max_watchers: Option<u64>,
    /// Watchers open at once on one Watch stream (etcd's API).
    #[arg(long)]
    max_watchers_per_stream: Option<u64>,
    /// Leases held at once in the store; a grant past it is refused.
    #[arg(long)]
    max_leases: Option<u64>,
    /// Operations in one branch of a transaction (etcd's flag; at most 8192); a longer one is
    /// refused before it takes a log entry.
    #[arg(long)]
    max_txn_ops: Option<u64>,
    /// Bytes of large responses through etcd's API held at once, built and not yet read by
    /// their clients (0: no bound).
    #[arg(long)]
    max_response_bytes_in_flight: Option<u64>,
    /// The tokens issued when a client authenticates (etcd's flag): `simple`, or
    /// `jwt,priv-key=FILE[,sign-method=EdDSA]` (an Ed25519 key in PKCS#8 PEM, the same on
    /// every member).
    #[arg(long)]
    auth_token: Option<String>,
    /// How long a token lives, in seconds (etcd's flag).
    #[arg(long)]
    auth_token_ttl: Option<u64>,
    /// The space quota of the store, in bytes (etcd's flag; 0: none).
    #[arg(long)]
    quota_backend_bytes: Option<u64>,
    /// Print the resulting configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// What the log shows (a `tracing` filter: `info`, `debug`, `lockstep_server=debug,info`);
    /// without it, `RUST_LOG` if set, else the file's `log_level`. The file's is re-read on
    /// SIGHUP while this flag is not given.
    #[arg(long)]
    log_level: Option<String>,
    /// How log lines are written: `text` or `json` (one object per line).
    #[arg(long)]
    log_format: Option<String>,
}

/// The message for a sabotage asked of a build that has none.
pub const NO_SABOTAGE: &str = "this build has no sabotage switches: they compile only with the \
                               `sabotage` cargo feature (`cargo build --features sabotage`), \
                               which release builds leave off";

#[cfg(not(feature = "sabotage"))]
fn parse_sabotage(_text: &str) -> Result<lockstep_server::Sabotage, String> {
    Err(NO_SABOTAGE.to_string())
}

#[cfg(feature = "sabotage")]
fn parse_sabotage(text: &str) -> Result<lockstep_server::Sabotage, String> {
    if let Some(index) = text.strip_prefix("diverge-at=") {
        let index = index.parse().map_err(|_| format!("diverge-at={index}: not an index"))?;
        return Ok(lockstep_server::Sabotage::DivergeAt(index));
    }
    match text {
        "unsafe-reads" => Ok(lockstep_server::Sabotage::UnsafeReads),
        "early-ack" => Ok(lockstep_server::Sabotage::EarlyAck),
        _ => Err(format!("unknown sabotage `{text}` (unsafe-reads, early-ack, diverge-at=INDEX)")),
    }
}

fn parse_repair(text: &str) -> Result<lockstep_server::RepairSetting, String> {
    match text {
        "auto" => Ok(lockstep_server::RepairSetting::Auto),
        "manual" => Ok(lockstep_server::RepairSetting::Manual),
        _ => Err(format!("unknown repair mode `{text}` (auto, manual)")),
    }
}

fn parse_member(text: &str) -> Result<Member, String> {
    let usage =
        || format!("--member `{text}`: expected ID=PEER_ADDRESS,CLIENT_ADDRESS[,ETCD_ADDRESS]");
    let (id, addresses) = text.split_once('=').ok_or_else(usage)?;
    let mut addresses = addresses.split(',').map(|address| address.trim().to_string());
    let peer = addresses.next().filter(|peer| !peer.is_empty()).ok_or_else(usage)?;
    let client = addresses.next().ok_or_else(usage)?;
    let etcd = addresses.next();
    if addresses.next().is_some() {
        return Err(usage());
    }
    let id = id.trim().parse().map_err(|_| usage())?;
    Ok(Member { id, peer, client, etcd })
}

/// The configuration the file and flags give.
pub fn config(args: &ServeArgs) -> Result<ServerConfig, String> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            let mut table: toml::Table =
                text.parse().map_err(|error| format!("{}: {error}", path.display()))?;
            // Flags may supply what the file leaves out: merge before checking.
            if let Some(id) = args.id {
                table.insert("id".into(), toml::Value::Integer(id as i64));
            }
            if let Some(cluster_id) = args.cluster_id {
                table.insert("cluster_id".into(), toml::Value::Integer(cluster_id as i64));
            }
            if let Some(dir) = &args.data_dir {
                table.insert("data_dir".into(), toml::Value::String(dir.display().to_string()));
            }
            if !args.members.is_empty() {
                let members: Vec<Member> =
                    args.members.iter().map(|text| parse_member(text)).collect::<Result<_, _>>()?;
                let members = toml::Value::try_from(&members).map_err(|error| error.to_string())?;
                table.insert("members".into(), members);
            }
            let merged = toml::to_string(&table).map_err(|error| error.to_string())?;
            let parsed: ServerConfig =
                toml::from_str(&merged).map_err(|error| format!("{}: {error}", path.display()))?;
            parsed
        }
        None => {
            let missing = |flag: &str| {
                format!("{flag} is required (or give a configuration file with --config)")
            };
            let id = args.id.ok_or_else(|| missing("--id"))?;
            let cluster_id = args.cluster_id.ok_or_else(|| missing("--cluster-id"))?;
            let data_dir = args.data_dir.clone().ok_or_else(|| missing("--data-dir"))?;
            if args.members.is_empty() {
                return Err(missing("--member"));
            }
            ServerConfig::new(id, cluster_id, data_dir, Vec::new())
        }
    };
    if !args.members.is_empty() {
        config.members =
            args.members.iter().map(|text| parse_member(text)).collect::<Result<_, _>>()?;
    }
    if let Some(address) = &args.listen_peer {
        config.listen_peer = Some(address.clone());
    }
    if let Some(address) = &args.listen_client {
        config.listen_client = Some(address.clone());
    }
    if let Some(address) = &args.listen_metrics {
        config.listen_metrics = Some(address.clone());
    }
    if let Some(address) = &args.listen_etcd {
        config.listen_etcd = Some(address.clone());
    }
    if let Some(value) = args.tick_millis {
        config.tick_millis = value;
    }
    if let Some(value) = args.heartbeat_ticks {
        config.heartbeat_ticks = value;
    }
    if let Some(value) = args.election_ticks {
        config.election_ticks = value;
    }
    if let Some(value) = args.checkpoint_entries {
        config.checkpoint_entries = value;
    }
    if let Some(sabotage) = args.sabotage {
        config.sabotage = Some(sabotage);
    }
    if let Some(value) = args.checkpoint_growth_percent {
        config.checkpoint_growth_percent = value;
    }
    if let Some(value) = args.checkpoint_log_bytes_max {
        config.checkpoint_log_bytes_max = value;
    }
    if args.no_audit {
        config.audit = false;
    }
    if let Some(value) = args.audit_report_interval {
        config.audit_report_interval = value;
    }
    if let Some(value) = args.audit_digest_interval {
        config.audit_digest_interval = value;
    }
    if let Some(value) = args.audit_repair {
        config.audit_repair = value;
    }
    if args.verified_outputs {
        config.verified_outputs = true;
    }
    if args.lease_reads {
        config.lease_reads = true;
    }
    if args.join {
        config.join = true;
    }
    if let Some(every) = args.lease_checkpoint_millis {
        config.lease_checkpoint_millis = every;
    }
    if let Some(keep) = args.auto_compact_revisions {
        config.auto_compact_revisions = keep;
    }
    for (field, flag) in [
        (&mut config.cert_file, &args.cert_file),
        (&mut config.key_file, &args.key_file),
        (&mut config.trusted_ca_file, &args.trusted_ca_file),
        (&mut config.peer_cert_file, &args.peer_cert_file),
        (&mut config.peer_key_file, &args.peer_key_file),
        (&mut config.peer_trusted_ca_file, &args.peer_trusted_ca_file),
    ] {
        if let Some(path) = flag {
            *field = Some(path.clone());
        }
    }
    if args.client_cert_auth {
        config.client_cert_auth = true;
    }
    if let Some(value) = args.max_connections {
        config.max_connections = value;
    }
    if let Some(value) = args.max_peer_connections {
        config.max_peer_connections = value;
    }
    if let Some(value) = args.client_idle_timeout_millis {
        config.client_idle_timeout_millis = value;
    }
    if let Some(value) = args.max_requests_per_connection {
        config.max_requests_per_connection = value;
    }
    if let Some(value) = args.client_frame_timeout_millis {
        config.client_frame_timeout_millis = value;
    }
    if let Some(value) = args.max_concurrent_streams {
        config.max_concurrent_streams = value;
    }
    if let Some(value) = args.max_watchers {
        config.max_watchers = value;
    }
    if let Some(value) = args.max_watchers_per_stream {
        config.max_watchers_per_stream = value;
    }
    if let Some(value) = args.max_leases {
        config.max_leases = value;
    }
    if let Some(value) = args.max_txn_ops {
        config.max_txn_ops = value;
    }
    if let Some(value) = args.max_response_bytes_in_flight {
        config.max_response_bytes_in_flight = value;
    }
    if let Some(value) = &args.auth_token {
        config.auth_token = value.clone();
    }
    if let Some(value) = args.auth_token_ttl {
        config.auth_token_ttl = value;
    }
    if let Some(value) = args.quota_backend_bytes {
        config.quota_backend_bytes = value;
    }
    if args.insecure_plaintext {
        config.insecure_plaintext = true;
    }
    if let Some(value) = &args.log_level {
        config.log_level = value.clone();
    }
    if let Some(value) = &args.log_format {
        config.log_format = value.clone();
    }
    config.validate().map_err(|error| format!("configuration: {error}"))?;
    if config.max_txn_ops > kv::TXN_OPS_CEILING as u64 {
        return Err(format!(
            "configuration: max_txn_ops: at most {} (what every replica applies), not {}",
            kv::TXN_OPS_CEILING,
            config.max_txn_ops
        ));
    }
    Ok(config)
}

/// Runs the replica until SIGTERM or Ctrl-C.
pub async fn run(args: ServeArgs) -> Result<(), String> {
    let config = config(&args)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let levels = init_logging(&args, &config)?;
    tokio::spawn(reload_on_hangup(args.clone(), levels));
    let tokens = token_config(&config)?;
    let server = BoundServer::bind(config.clone()).await?;
    let security = server.security();
    let max_connections = server.max_connections();
    if config.insecure_plaintext && !(config.client_tls() && config.peer_tls()) {
        tracing::warn!(
            "--insecure-plaintext: ports off loopback serve without TLS; anyone who can reach \
             them can read and change the data and the cluster"
        );
    }
    let etcd = match config.etcd_listen_address().map_err(|error| error.to_string())? {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|error| format!("cannot listen for etcd's API on {address}: {error}"))?,
        ),
        None => None,
    };
    let (peer, client) = server.addresses();
    let progress = server.progress();
    let inbox = Inbox::<Kv>::new();
    tracing::info!(
        replica = config.id,
        peers = ?peer,
        clients = ?client,
        data = %config.data_dir.display(),
        "listening"
    );
    let (stop_etcd, etcd_stopped) = tokio::sync::watch::channel(false);
    if let (true, Ok(me)) = (config.auto_compact_revisions > 0, config.me()) {
        let link = in_process(me.client.clone(), inbox.local());
        tokio::spawn(auto_compact(config.clone(), link, etcd_stopped.clone()));
    }
    let etcd_task = etcd.map(|listener| {
        let gateway = Gateway::new(GatewayConfig {
            cluster_id: config.cluster_id,
            member_id: config.id,
            members: config
                .members
                .iter()
                .map(|member| GatewayMember { id: member.id, client: member.client.clone() })
                .collect(),
            timeout: std::time::Duration::from_secs(10),
            local: config.me().ok().map(|me| LocalReplica {
                link: in_process(me.client.clone(), inbox.local()),
                progress: progress.clone(),
            }),
            // Twice the longest election timeout: a deposed leader steps down within two of the
            // shortest (check-quorum), and a margin for clocks and delays.
            lease_extension: std::time::Duration::from_millis(
                config.tick_millis.saturating_mul(config.election_ticks).saturating_mul(4),
            ),
            lease_checkpoint_every: std::time::Duration::from_millis(
                config.lease_checkpoint_millis,
            ),
            // A tick less than the shortest election timeout (a quarter of the extension is a
            // whole one).
            leader_confirmed_for: std::time::Duration::from_millis(
                config.tick_millis.saturating_mul(config.election_ticks.saturating_sub(1)),
            ),
            tls: match (&security.members_out, &security.member_files) {
                (Some(members), Some((ca, cert, key))) => Some(GatewayTls {
                    members: members.clone(),
                    ca_file: ca.clone(),
                    cert_file: cert.clone(),
                    key_file: key.clone(),
                }),
                _ => None,
            },
            max_watchers: usize::try_from(config.max_watchers).unwrap_or(usize::MAX),
            max_watchers_per_stream: usize::try_from(config.max_watchers_per_stream)
                .unwrap_or(usize::MAX),
            max_txn_ops: usize::try_from(config.max_txn_ops).unwrap_or(kv::TXN_OPS_CEILING),
            quota_bytes: config.quota_backend_bytes,
            response_bytes_max: config.max_response_bytes_in_flight,
            tokens: tokens.clone(),
        });
        let mut stopped = etcd_stopped.clone();
        tokio::spawn(lockstep_etcd::serve(
            listener,
            gateway,
            async move {
                let _ = stopped.changed().await;
            },
            security.etcd.clone(),
            lockstep_etcd::EtcdLimits {
                max_connections,
                max_concurrent_streams: config.max_concurrent_streams,
                idle_timeout: std::time::Duration::from_millis(config.client_idle_timeout_millis),
            },
            // `/metrics` on the etcd port too, as etcd serves it.
            lockstep_server::metrics::install().map(|handle| {
                let render: lockstep_etcd::http::RenderMetrics =
                    std::sync::Arc::new(move || handle.render());
                render
            }),
        ))
    });
    let kv = Kv::new()
        .with_leases_max(usize::try_from(config.max_leases).unwrap_or(usize::MAX))
        .with_txn_ops_max(usize::try_from(config.max_txn_ops).unwrap_or(kv::TXN_OPS_CEILING))
        .with_quota_bytes(config.quota_backend_bytes);
    let result = server.run_with(kv, inbox, shutdown_signal()).await;
    let _ = stop_etcd.send(true);
    if let Some(task) = etcd_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    result
}

/// The gateway's way to `link`, the replica serving clients at `endpoint` in this process.
fn in_process(
    endpoint: String,
    link: LocalLink<Kv>,
) -> lockstep_client::InProcess<lockstep_kv::Request, lockstep_kv::Request, lockstep_kv::Answer> {
    lockstep_client::InProcess {
        endpoint,
        submit: std::sync::Arc::new(move |message, answers| {
            let link = link.clone();
            Box::pin(async move { link.submit(message, answers).await })
        }),
    }
}

/// While this replica leads, compacts the history older than the newest
/// `auto_compact_revisions` revisions, every 5 seconds (a compaction goes through the log),
/// through `link` to the replica in this process; with authentication on, with a member's
/// token.
async fn auto_compact(
    config: ServerConfig,
    link: lockstep_client::InProcess<kv::Request, kv::Request, kv::Answer>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    use lockstep_client::{Client, ClientOptions, ReadConsistency};
    use lockstep_kv::{Answer, AuthRequest, AuthResponse, CompactRequest, Request, Response};
    let keep = config.auto_compact_revisions;
    let Ok(me) = config.me() else { return };
    let options = ClientOptions {
        consistency: ReadConsistency::Follower,
        stay: true,
        ..ClientOptions::default()
    };
    let local: Client<Request, Request, Answer> =
        Client::with_local(vec![me.client.clone()], options, link);
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
        let leads = local.status_with(false).await.is_ok_and(|status| status.role == "leader");
        if !leads {
            continue;
        }
        let Ok(answer) = local.read(Request::Revisions).await else { continue };
        let Response::Revisions { current, compacted } = answer.response else { continue };
        // Compact in steps of a tenth of what is kept, not after every revision.
        let target = current.saturating_sub(keep);
        if target > compacted && target - compacted >= (keep / 10).max(1) {
            let compact = Request::Compact(CompactRequest { revision: target });
            let expires_millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64)
                .saturating_add(60_000);
            let issue = AuthRequest::MemberToken { member: config.id, expires_millis };
            let compact = match local.read(Request::Auth(issue)).await.map(|answer| answer.response)
            {
                Ok(Response::Auth(AuthResponse::Token(token))) => {
                    Request::As(Box::new(kv::Authorized { token, request: compact }))
                }
                _ => compact,
            };
            match local.write(compact).await {
                Ok(_) => tracing::info!(revision = target, "compacted the history"),
                Err(error) => tracing::debug!("automatic compaction failed: {error}"),
            }
        }
    }
}

/// Where a server's log level can be changed while it runs.
type Levels =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The server's log: the level from `--log-level`, else `RUST_LOG`, else the configuration's
/// `log_level`; lines as text or JSON (`log_format`).
fn init_logging(args: &ServeArgs, config: &ServerConfig) -> Result<Levels, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = match (&args.log_level, std::env::var("RUST_LOG")) {
        (None, Ok(from_env)) if !from_env.is_empty() => from_env,
        _ => config.log_level.clone(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .map_err(|error| format!("configuration: log_level {level:?}: {error}"))?;
    let (filter, levels) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let initialized = if config.log_format == "json" {
        registry.with(lines.json().flatten_event(true)).try_init()
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        registry.with(lines.with_ansi(ansi)).try_init()
    };
    initialized.map_err(|error| format!("cannot start the log: {error}"))?;
    Ok(levels)
}

/// On each SIGHUP, re-reads the configuration file's `log_level` (unless `--log-level` fixed
/// it) and shows from then on what it asks for; a file that does not parse is reported and
/// changes nothing. (Certificates are re-read on SIGHUP too, by the TLS layer.)
async fn reload_on_hangup(args: ServeArgs, levels: Levels) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        return;
    };
    while hangups.recv().await.is_some() {
        if args.log_level.is_some() || args.config.is_none() {
            continue;
        }
        let level = match config(&args) {
            Ok(config) => config.log_level,
            Err(error) => {
                tracing::warn!("SIGHUP: the configuration file was not re-read: {error}");
                continue;
            }
        };
        match tracing_subscriber::EnvFilter::try_new(&level) {
            Ok(filter) => match levels.reload(filter) {
                Ok(()) => tracing::warn!(log_level = %level, "SIGHUP: the log level is now this"),
                Err(error) => tracing::warn!("SIGHUP: the log level was not changed: {error}"),
            },
            Err(error) => tracing::warn!("SIGHUP: log_level {level:?} is not a filter: {error}"),
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// The tokens this member issues, from `auth_token` (etcd's `--auth-token`) and
/// `auth_token_ttl`.
fn token_config(config: &ServerConfig) -> Result<lockstep_etcd::TokenConfig, String> {
    let ttl = std::time::Duration::from_secs(config.auth_token_ttl);
    let mut parts = config.auth_token.split(',');
    match parts.next().map(str::trim) {
        Some("simple") if parts.next().is_none() => {
            Ok(lockstep_etcd::TokenConfig { ttl, jwt: None })
        }
        Some("jwt") => {
            let mut key_file = None;
            for part in parts {
                match part.split_once('=') {
                    Some(("priv-key", path)) => key_file = Some(PathBuf::from(path)),
                    Some(("sign-method", "EdDSA")) => {}
                    Some(("sign-method", other)) => {
                        return Err(format!(
                            "auth_token: sign-method {other} is not offered (only EdDSA)"
                        ))
                    }
                    // etcd's key names that need nothing here: the public key follows from
                    // the private one, and the TTL is auth_token_ttl.
                    Some(("pub-key" | "ttl", _)) => {}
                    _ => return Err(format!("auth_token: {part:?} is not understood")),
                }
            }
            let key_file = key_file.ok_or("auth_token: jwt needs priv-key=FILE")?;
            let key = lockstep_tls::load_key(&key_file)
                .map_err(|error| format!("auth_token: {error}"))?;
            use ed25519_dalek::pkcs8::DecodePrivateKey;
            let key =
                ed25519_dalek::SigningKey::from_pkcs8_der(key.secret_der()).map_err(|error| {
                    format!(
                        "auth_token: {} is not an Ed25519 key in PKCS#8 ({error})",
                        key_file.display()
                    )
                })?;
            Ok(lockstep_etcd::TokenConfig { ttl, jwt: Some(std::sync::Arc::new(key)) })
        }
        _ => Err(format!(
            "auth_token: {:?} is neither simple nor jwt,priv-key=FILE",
            config.auth_token
        )),
    }
}
