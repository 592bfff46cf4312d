//! A server's configuration: who it is, where it listens, who its peers are, and how it runs.
//!
//! It reads from TOML (`lockstep serve --config FILE`), and every field can also be given as
//! a flag. A field that is missing or malformed is an error naming the field; nothing is
//! guessed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// With lease reads, the clock drift between replicas allowed for, in ticks.
pub const LEASE_CLOCK_DRIFT_TICKS: u64 = 2;

/// One member of the cluster and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The replica's id (never reused for another replica).
    pub id: u64,
    /// Where replicas reach it (`host:port`).
    pub peer: String,
    /// Where clients reach it (`host:port`).
    pub client: String,
    /// Where it serves etcd's API (`host:port`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<String>,
}

/// See the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// This replica's id: one of `members`.
    pub id: u64,
    /// The cluster's id: a data directory or a peer of another cluster is refused.
    pub cluster_id: u64,
    /// Where this replica keeps its log, hard state and snapshots.
    pub data_dir: PathBuf,
    /// The cluster's initial members (a new cluster starts with them as voters).
    pub members: Vec<Member>,
    /// Address to listen on for peers (default: this member's `peer` address).
    #[serde(default)]
    pub listen_peer: Option<String>,
    /// Address to listen on for clients (default: this member's `client` address).
    #[serde(default)]
    pub listen_client: Option<String>,
    /// Address to serve Prometheus metrics on at `/metrics` (none: no metrics endpoint).
    #[serde(default)]
    pub listen_metrics: Option<String>,
    /// Address to serve etcd's API on (default: this member's `etcd` address, if any).
    #[serde(default)]
    pub listen_etcd: Option<String>,
    /// Milliseconds per tick of the protocol's clock.
    #[serde(default = "default_tick_millis")]
    pub tick_millis: u64,
    /// Heartbeats every this many ticks.
    #[serde(default = "default_heartbeat_ticks")]
    pub heartbeat_ticks: u64,
    /// Elections after a random timeout between this many ticks and twice as many.
    #[serde(default = "default_election_ticks")]
    pub election_ticks: u64,
    /// Take a checkpoint (and compact the log) every this many applied entries.
    #[serde(default = "default_checkpoint_entries")]
    pub checkpoint_entries: u64,
    /// ... once the entries since the last checkpoint add up to at least this percentage of
    /// its size (0: every `checkpoint_entries` regardless). A checkpoint rewrites the whole
    /// state; this keeps what checkpoints write within a constant factor of what the log does.
    #[serde(default = "default_checkpoint_growth_percent")]
    pub checkpoint_growth_percent: u64,
    /// ... and in any case once this many bytes of entries were applied since the last one
    /// (the log since the last checkpoint is held in memory: this bounds it).
    #[serde(default = "default_checkpoint_log_bytes_max")]
    pub checkpoint_log_bytes_max: u64,
    /// Serve linearizable reads under a leader lease instead of a heartbeat round
    /// (assumes clocks whose rates differ by less than the lease margin).
    #[serde(default)]
    pub lease_reads: bool,
    /// This replica joins a running cluster (added with `lockstep member add`): it is not one
    /// of the cluster's initial members. Keep it set on restarts.
    #[serde(default)]
    pub join: bool,
    /// For the key-value service: keep this many revisions of history, compacting older ones
    /// automatically (0: never, as etcd's default; etcd's `--auto-compaction-mode=revision`).
    #[serde(default)]
    pub auto_compact_revisions: u64,
    /// For the key-value service: the leader records in the log what remains of leases it
    /// renewed in memory every this many milliseconds, so that a new leader does not give them
    /// their whole TTL again (etcd's lease checkpoints; 5 minutes, as etcd's).
    #[serde(default = "default_lease_checkpoint_millis")]
    pub lease_checkpoint_millis: u64,
    /// Audit the replicas (compare output chains and state digests, quarantine and repair a
    /// replica that differs; see `docs/auditing.md`).
    #[serde(default = "default_true")]
    pub audit: bool,
    /// Replicas report their output chain to the leader every this many entries.
    #[serde(default = "default_audit_report_interval")]
    pub audit_report_interval: u64,
    /// Every replica takes its state digest at every multiple of this index (and at every
    /// no-op entry); checkpoints are taken there.
    #[serde(default = "default_audit_digest_interval")]
    pub audit_digest_interval: u64,
    /// How a divergent replica is repaired: "auto" (at once) or "manual" (by
    /// `lockstep audit repair ID`).
    #[serde(default)]
    pub audit_repair: RepairSetting,
    /// The leader answers a request only once a majority reported the same output chain at
    /// its entry (a divergent replica's output never reaches a client).
    #[serde(default)]
    pub verified_outputs: bool,
    /// TLS for clients (the client, etcd and metrics ports): this replica's certificate
    /// chain (PEM). With `key_file` and `trusted_ca_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM; readable by its owner only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The authority that issued the members' and clients' certificates: checks the other
    /// members' client ports (which this replica's gateway forwards to) and, with
    /// `client_cert_auth`, clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require clients to present a certificate from `trusted_ca_file`.
    #[serde(default)]
    pub client_cert_auth: bool,
    /// TLS between replicas (mutual, always): this replica's peer certificate, which must
    /// name it (`replica-<id>.cluster-<hex>.lockstep`; see docs/SECURITY.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_cert_file: Option<PathBuf>,
    /// The private key of `peer_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_key_file: Option<PathBuf>,
    /// The authority that issued the replicas' peer certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Listen in plaintext on an address that is not loopback (refused otherwise).
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// Connections open at once on each client-facing port (native client, etcd, metrics);
    /// one more is closed at once, and counted (`lockstep_connections_refused_total`).
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    /// Connections open at once on the peer port (two per peer; more are closed at once).
    #[serde(default = "default_max_peer_connections")]
    pub max_peer_connections: u64,
    /// A native client connection with no request in flight that sends nothing for this long
    /// is closed (clients reconnect when they need to).
    #[serde(default = "default_client_idle_timeout_millis")]
    pub client_idle_timeout_millis: u64,
    /// Requests one native client connection may have waiting for answers; past it, the
    /// connection is not read until answers are written.
    #[serde(default = "default_max_requests_per_connection")]
    pub max_requests_per_connection: u64,
    /// A native client's request frame must arrive whole within this long of its first byte
    /// (a connection cannot hold a large buffer by sending it a byte at a time).
    #[serde(default = "default_client_frame_timeout_millis")]
    pub client_frame_timeout_millis: u64,
    /// gRPC streams open at once on one connection to the etcd port (etcd's
    /// `--max-concurrent-streams`).
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// etcd's API: watchers open at once on this member.
    #[serde(default = "default_max_watchers")]
    pub max_watchers: u64,
    /// etcd's API: watchers open at once on one Watch stream.
    #[serde(default = "default_max_watchers_per_stream")]
    pub max_watchers_per_stream: u64,
    /// etcd's API: bytes of large responses (ranges, transactions) a member holds at once,
    /// built and not yet read by their clients (0: no bound).
    #[serde(default = "default_max_response_bytes_in_flight")]
    pub max_response_bytes_in_flight: u64,
    /// etcd's API: the tokens a member issues, as etcd's `--auth-token`: `simple` (tokens MAC'd
    /// under a key the auth store replicates), or `jwt,priv-key=FILE[,sign-method=EdDSA]`
    /// (JWTs signed with that Ed25519 key, PKCS#8 PEM, readable by its owner only; every
    /// member must have the same).
    #[serde(default = "default_auth_token")]
    pub auth_token: String,
    /// etcd's API: how long a token lives, in seconds (etcd's `--auth-token-ttl`).
    #[serde(default = "default_auth_token_ttl")]
    pub auth_token_ttl: u64,
    /// For the key-value service: leases held at once; a grant past it is refused before it
    /// takes a log entry.
    #[serde(default = "default_max_leases")]
    pub max_leases: u64,
    /// For the key-value service: operations in one branch of a transaction (etcd's
    /// `--max-txn-ops`, 128 by default); a longer one is refused before it takes a log entry.
    /// At most what every replica applies (8192, the key-value service's ceiling).
    #[serde(default = "default_max_txn_ops")]
    pub max_txn_ops: u64,
    /// For the key-value service: the space quota, in bytes of the store as it accounts its
    /// size (etcd's `--quota-backend-bytes`; 2 GiB by default, as etcd's; 0: none). Past it
    /// the leader raises a NOSPACE alarm and writes that grow the store are refused.
    #[serde(default = "default_quota_backend_bytes")]
    pub quota_backend_bytes: u64,
    /// What the log shows: a filter of `tracing`'s (`info`, `warn`, `lockstep_server=debug,
    /// info`, ...). Re-read from the configuration file on SIGHUP.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// How log lines are written: `text` for people, `json` (one object per line) for log
    /// shippers.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// Test only: a deliberately broken server, for showing that fault tests catch it (only
    /// the hidden `--sabotage` flag sets it; a configuration file cannot).
    #[serde(skip)]
    #[doc(hidden)]
    pub sabotage: Option<Sabotage>,
}

/// How a divergent replica is repaired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RepairSetting {
    /// At once.
    #[default]
    Auto,
    /// When an operator runs `lockstep audit repair ID`.
    Manual,
}

/// Test only: how a deliberately broken server is broken. No variant exists unless the crate
/// is built with the `sabotage` feature, which release builds leave off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[doc(hidden)]
pub enum Sabotage {
    /// Answer linearizable reads from the local state on any replica, leader or not, without
    /// a read index.
    #[cfg(feature = "sabotage")]
    UnsafeReads,
    /// Report writes durable when they are handed to the log thread, which writes and syncs
    /// them only once a second.
    #[cfg(feature = "sabotage")]
    EarlyAck,
    /// Apply the client request at this index twice (once), as a state machine that is not
    /// deterministic would: this replica's state and outputs depart from the others'.
    #[cfg(feature = "sabotage")]
    DivergeAt(u64),
}

fn default_max_connections() -> u64 {
    4096
}

fn default_max_peer_connections() -> u64 {
    256
}

fn default_client_idle_timeout_millis() -> u64 {
    600_000
}

fn default_max_requests_per_connection() -> u64 {
    16_384
}

fn default_max_concurrent_streams() -> u32 {
    4096
}

fn default_max_watchers() -> u64 {
    100_000
}

fn default_max_watchers_per_stream() -> u64 {
    10_000
}

fn default_max_leases() -> u64 {
    1_000_000
}

fn default_max_txn_ops() -> u64 {
    128
}

fn default_max_response_bytes_in_flight() -> u64 {
    256 << 20
}

fn default_auth_token() -> String {
    "simple".to_string()
}

fn default_auth_token_ttl() -> u64 {
    300
}

fn default_client_frame_timeout_millis() -> u64 {
    30_000
}

fn default_quota_backend_bytes() -> u64 {
    2 << 30
}

fn default_log_level() -> String {
    "info".to_string()
}

fn default_log_format() -> String {
    "text".to_string()
}

fn default_true() -> bool {
    true
}
fn default_audit_report_interval() -> u64 {
    64
}
fn default_audit_digest_interval() -> u64 {
    16_384
}
fn default_tick_millis() -> u64 {
    50
}
fn default_heartbeat_ticks() -> u64 {
    1
}
fn default_lease_checkpoint_millis() -> u64 {
    300_000
}

fn default_election_ticks() -> u64 {
    10
}
fn default_checkpoint_entries() -> u64 {
    100_000
}
fn default_checkpoint_growth_percent() -> u64 {
    100
}
fn default_checkpoint_log_bytes_max() -> u64 {
    512 << 20
}

/// Why a configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ServerConfig {
    /// A configuration with defaults for everything but identity, place and members.
    pub fn new(id: u64, cluster_id: u64, data_dir: PathBuf, members: Vec<Member>) -> ServerConfig {
        ServerConfig {
            id,
            cluster_id,
            data_dir,
            members,
            listen_peer: None,
            listen_client: None,
            listen_metrics: None,
            listen_etcd: None,
            tick_millis: default_tick_millis(),
            heartbeat_ticks: default_heartbeat_ticks(),
            election_ticks: default_election_ticks(),
            checkpoint_entries: default_checkpoint_entries(),
            checkpoint_growth_percent: default_checkpoint_growth_percent(),
            checkpoint_log_bytes_max: default_checkpoint_log_bytes_max(),
            lease_reads: false,
            join: false,
            auto_compact_revisions: 0,
            lease_checkpoint_millis: default_lease_checkpoint_millis(),
            audit: true,
            audit_report_interval: default_audit_report_interval(),
            audit_digest_interval: default_audit_digest_interval(),
            audit_repair: RepairSetting::Auto,
            verified_outputs: false,
            cert_file: None,
            key_file: None,
            trusted_ca_file: None,
            client_cert_auth: false,
            peer_cert_file: None,
            peer_key_file: None,
            peer_trusted_ca_file: None,
            insecure_plaintext: false,
            max_connections: default_max_connections(),
            max_peer_connections: default_max_peer_connections(),
            client_idle_timeout_millis: default_client_idle_timeout_millis(),
            max_requests_per_connection: default_max_requests_per_connection(),
            client_frame_timeout_millis: default_client_frame_timeout_millis(),
            max_concurrent_streams: default_max_concurrent_streams(),
            max_watchers: default_max_watchers(),
            max_watchers_per_stream: default_max_watchers_per_stream(),
            max_leases: default_max_leases(),
            max_txn_ops: default_max_txn_ops(),
            max_response_bytes_in_flight: default_max_response_bytes_in_flight(),
            auth_token: default_auth_token(),
            auth_token_ttl: default_auth_token_ttl(),
            quota_backend_bytes: default_quota_backend_bytes(),
            log_level: default_log_level(),
            log_format: default_log_format(),
            sabotage: None,
        }
    }

    /// Parses TOML and checks the result.
    pub fn from_toml(text: &str) -> Result<ServerConfig, ConfigError> {
        let config: ServerConfig =
            toml::from_str(text).map_err(|error| ConfigError(error.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks that the values make sense together and that every address parses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |message: String| Err(ConfigError(message));
        if self.id == 0 {
            return fail("id: replica ids start at 1".to_string());
        }
        if self.members.is_empty() {
            return fail("members: at least one member is needed".to_string());
        }
        let mut seen = BTreeMap::new();
        for member in &self.members {
            if member.id == 0 {
                return fail("members: replica ids start at 1".to_string());
            }
            if seen.insert(member.id, ()).is_some() {
                return fail(format!("members: replica {} is listed twice", member.id));
            }
            resolve(&member.peer).map_err(|error| {
                ConfigError(format!("members: replica {}: peer address: {error}", member.id))
            })?;
            resolve(&member.client).map_err(|error| {
                ConfigError(format!("members: replica {}: client address: {error}", member.id))
            })?;
            if let Some(etcd) = &member.etcd {
                resolve(etcd).map_err(|error| {
                    ConfigError(format!("members: replica {}: etcd address: {error}", member.id))
                })?;
            }
        }
        if self.audit_report_interval == 0 {
            return fail("audit_report_interval: at least 1".to_string());
        }
        if self.audit_digest_interval == 0 {
            return fail("audit_digest_interval: at least 1".to_string());
        }
        if self.join && self.members.len() < 2 {
            return fail("join: the other members must be given too".to_string());
        }
        if !seen.contains_key(&self.id) {
            return fail(format!("id: replica {} is not one of the members", self.id));
        }
        for (field, address) in [
            ("listen_peer", &self.listen_peer),
            ("listen_client", &self.listen_client),
            ("listen_metrics", &self.listen_metrics),
            ("listen_etcd", &self.listen_etcd),
        ] {
            if let Some(address) = address {
                resolve(address).map_err(|error| ConfigError(format!("{field}: {error}")))?;
            }
        }
        self.validate_tls()?;
        for (field, value) in [
            ("max_connections", self.max_connections),
            ("max_peer_connections", self.max_peer_connections),
            ("client_idle_timeout_millis", self.client_idle_timeout_millis),
            ("max_requests_per_connection", self.max_requests_per_connection),
            ("client_frame_timeout_millis", self.client_frame_timeout_millis),
            ("max_concurrent_streams", u64::from(self.max_concurrent_streams)),
            ("max_watchers", self.max_watchers),
            ("max_watchers_per_stream", self.max_watchers_per_stream),
            ("max_leases", self.max_leases),
            ("max_txn_ops", self.max_txn_ops),
            ("auth_token_ttl", self.auth_token_ttl),
        ] {
            if value == 0 {
                return fail(format!("{field}: must be at least 1"));
            }
        }
        if self.tick_millis == 0 {
            return fail("tick_millis: must be at least 1".to_string());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return fail(format!("log_format: `text` or `json`, not {:?}", self.log_format));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return fail(
                "election_ticks must exceed heartbeat_ticks, which must be at least 1".to_string(),
            );
        }
        if self.lease_reads && self.election_ticks <= LEASE_CLOCK_DRIFT_TICKS {
            return fail(format!(
                "election_ticks: lease reads need more than {LEASE_CLOCK_DRIFT_TICKS} (the clock \
                 drift they allow for)"
            ));
        }
        if self.lease_checkpoint_millis == 0 {
            return fail("lease_checkpoint_millis: must be at least 1".to_string());
        }
        if self.checkpoint_entries == 0 {
            return fail("checkpoint_entries: must be at least 1".to_string());
        }
        Ok(())
    }

    /// This replica's member entry.
    pub fn me(&self) -> Result<&Member, ConfigError> {
        self.member(self.id).ok_or_else(|| {
            ConfigError(format!("id: replica {} is not one of the members", self.id))
        })
    }

    /// The member entry for `id`.
    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|member| member.id == id)
    }

    /// Where to listen for peers.
    pub fn peer_listen_address(&self) -> Result<SocketAddr, ConfigError> {
        let address = match &self.listen_peer {
            Some(address) => address.clone(),
            None => self.me()?.peer.clone(),
        };
        resolve(&address).map_err(|error| ConfigError(format!("listen_peer: {error}")))
    }

    /// Where to listen for clients.
    pub fn client_listen_address(&self) -> Result<SocketAddr, ConfigError> {
        let address = match &self.listen_client {
            Some(address) => address.clone(),
            None => self.me()?.client.clone(),
        };
        resolve(&address).map_err(|error| ConfigError(format!("listen_client: {error}")))
    }
}

impl ServerConfig {
    /// Whether the client ports speak TLS.
    pub fn client_tls(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Whether the peer port speaks TLS.
    pub fn peer_tls(&self) -> bool {
        self.peer_cert_file.is_some()
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let fail = |message: &str| Err(ConfigError(message.to_string()));
        match (&self.cert_file, &self.key_file, &self.trusted_ca_file) {
            (None, None, None) => {
                if self.client_cert_auth {
                    return fail(
                        "client_cert_auth needs cert_file, key_file and trusted_ca_file \
                         (--cert-file, --key-file, --trusted-ca-file)",
                    );
                }
            }
            (Some(_), Some(_), Some(_)) => {}
            _ => {
                return fail(
                    "cert_file, key_file and trusted_ca_file go together (--cert-file, \
                     --key-file, --trusted-ca-file)",
                )
            }
        }
        match (&self.peer_cert_file, &self.peer_key_file, &self.peer_trusted_ca_file) {
            (None, None, None) | (Some(_), Some(_), Some(_)) => {}
            _ => {
                return fail(
                    "peer_cert_file, peer_key_file and peer_trusted_ca_file go together \
                     (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file)",
                )
            }
        }
        if self.insecure_plaintext {
            return Ok(());
        }
        let me = self.me()?;
        let peer = self.listen_peer.clone().unwrap_or_else(|| me.peer.clone());
        let mut clients = vec![
            (
                "listen_client",
                Some(self.listen_client.clone().unwrap_or_else(|| me.client.clone())),
            ),
            ("listen_etcd", self.listen_etcd.clone().or_else(|| me.etcd.clone())),
            ("listen_metrics", self.listen_metrics.clone()),
        ];
        // This replica dials the other members' peer ports, and its gateway their client
        // ports: in the clear only on loopback too.
        if !self.peer_tls() {
            if let Some(member) = self.members.iter().find(|m| !is_loopback(&m.peer)) {
                return Err(ConfigError(format!(
                    "members: replica {}'s peer address {} is not a loopback address and the \
                     peer port has no TLS: give --peer-cert-file, --peer-key-file and \
                     --peer-trusted-ca-file, or --insecure-plaintext",
                    member.id, member.peer
                )));
            }
        }
        if !self.client_tls() {
            if let Some(member) = self.members.iter().find(|m| !is_loopback(&m.client)) {
                return Err(ConfigError(format!(
                    "members: replica {}'s client address {} is not a loopback address and the \
                     client ports have no TLS: give --cert-file, --key-file and \
                     --trusted-ca-file, or --insecure-plaintext",
                    member.id, member.client
                )));
            }
        }
        if !self.peer_tls() && !is_loopback(&peer) {
            return Err(ConfigError(format!(
                "listen_peer: {peer} is not a loopback address and the peer port has no TLS: \
                 give --peer-cert-file, --peer-key-file and --peer-trusted-ca-file (`lockstep \
                 cert` makes them), or --insecure-plaintext to serve in the clear anyway"
            )));
        }
        if !self.client_tls() {
            for (field, address) in clients.drain(..) {
                if let Some(address) = address.filter(|address| !is_loopback(address)) {
                    return Err(ConfigError(format!(
                        "{field}: {address} is not a loopback address and the client ports \
                         have no TLS: give --cert-file, --key-file and --trusted-ca-file \
                         (`lockstep cert` makes them), or --insecure-plaintext to serve in the \
                         clear anyway"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Where to serve etcd's API, if anywhere.
    pub fn etcd_listen_address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let address = match (&self.listen_etcd, self.me()?.etcd.as_ref()) {
            (Some(address), _) | (None, Some(address)) => address.clone(),
            (None, None) => return Ok(None),
        };
        resolve(&address).map(Some).map_err(|error| ConfigError(format!("listen_etcd: {error}")))
    }
}

/// Whether every address `address` (`host:port`) resolves to is a loopback address.
pub fn is_loopback(address: &str) -> bool {
    match address.to_socket_addrs() {
        Ok(resolved) => {
            let resolved: Vec<SocketAddr> = resolved.collect();
            !resolved.is_empty() && resolved.iter().all(|address| address.ip().is_loopback())
        }
        Err(_) => false,
    }
}

/// Resolves `host:port` to one socket address.
pub fn resolve(address: &str) -> Result<SocketAddr, String> {
    let mut resolved = address
        .to_socket_addrs()
        .map_err(|error| format!("`{address}` is not a host:port address ({error})"))?;
    resolved.next().ok_or_else(|| format!("`{address}` resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> &'static str {
        r#"
id = 1
cluster_id = 7
data_dir = "data/1"

[[members]]
id = 1
peer = "127.0.0.1:7101"
client = "127.0.0.1:7201"

[[members]]
id = 2
peer = "127.0.0.1:7102"
client = "127.0.0.1:7202"
"#
    }

    #[test]
    fn a_config_reads_from_toml_with_defaults() {
        let config = ServerConfig::from_toml(text()).expect("valid");
        assert_eq!(config.id, 1);
        assert_eq!(config.members.len(), 2);
        assert_eq!(config.tick_millis, 50);
        assert_eq!(config.peer_listen_address().expect("peer").port(), 7101);
        let again = ServerConfig::from_toml(&config.to_toml()).expect("round trip");
        assert_eq!(again, config);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let missing = text().replace("cluster_id = 7\n", "");
        let error = ServerConfig::from_toml(&missing).expect_err("missing field");
        assert!(error.0.contains("cluster_id"), "{error}");

        let bad_address = text().replace("127.0.0.1:7202", "127.0.0.1:notaport");
        let error = ServerConfig::from_toml(&bad_address).expect_err("bad address");
        assert!(error.0.contains("replica 2: client address"), "{error}");

        let unknown = format!("{}\ncolour = \"blue\"\n", text().replace("[[members]]", "#"));
        assert!(ServerConfig::from_toml(&unknown).is_err());

        let not_member = text().replace("id = 1\ncluster", "id = 3\ncluster");
        let error = ServerConfig::from_toml(&not_member).expect_err("not a member");
        assert!(error.0.contains("not one of the members"), "{error}");
    }
}
