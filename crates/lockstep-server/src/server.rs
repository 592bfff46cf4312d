//! Starting and stopping one replica: listeners, the log thread, the replica thread, the
//! peer connections and the clock.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep_core::{Config, Membership, NodeId, ReadMode, StateMachine};
use lockstep_node::{
    AuditConfig, CheckpointPolicy, Driver, LogStore, RepairMode, Replicated, SessionConfig,
};
use lockstep_storage::{RealDisk, WalOptions};
use lockstep_wire::{ClientMessage, Progress};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::clients::listen_clients;
#[cfg(feature = "sabotage")]
use crate::config::Sabotage;
use crate::config::{RepairSetting, ServerConfig};
use crate::hosted::{Hosted, MemberAddress};
use crate::identity;
use crate::replica::{Control, Event, Inputs, Replica, Reply, Stamped};
use crate::storage::ThreadedStorage;
use crate::tls::Security;
use crate::transport::{bind, listen_peers, start_peers};

/// Whether `$config` asks for the sabotage `$pattern`: always false in a build without the
/// `sabotage` feature (no sabotage exists there).
macro_rules! sabotaged {
    ($config:expr, $pattern:pat) => {{
        #[cfg(feature = "sabotage")]
        let sabotaged = matches!($config.sabotage, Some($pattern));
        #[cfg(not(feature = "sabotage"))]
        let sabotaged = false;
        sabotaged
    }};
}

/// Events queued for the replica thread before senders wait (back-pressure on clients and
/// peers).
const EVENT_QUEUE: usize = 65_536;

/// A server whose listeners are bound: [`BoundServer::run`] starts it.
pub struct BoundServer {
    config: ServerConfig,
    peer_listener: tokio::net::TcpListener,
    client_listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    progress: watch::Sender<Progress>,
    security: Security,
    /// Connections open at once on each client-facing port: `max_connections`, lowered if
    /// the process may not open that many files and still leave the peers theirs.
    max_connections: usize,
}

/// The queue of the replica thread's requests from clients and peers, made before the server
/// runs so that a component in the same process can be handed a [`LocalLink`] to it first.
pub struct Inbox<M: StateMachine> {
    sender: mpsc::Sender<Stamped<Event<M>>>,
    receiver: mpsc::Receiver<Stamped<Event<M>>>,
}

impl<M: StateMachine> Inbox<M> {
    /// An empty queue.
    pub fn new() -> Inbox<M> {
        let (sender, receiver) = mpsc::channel(EVENT_QUEUE);
        Inbox { sender, receiver }
    }

    /// A handle on the queue for a client in this process.
    pub fn local(&self) -> LocalLink<M> {
        LocalLink { events: self.sender.clone() }
    }
}

impl<M: StateMachine> Default for Inbox<M> {
    fn default() -> Inbox<M> {
        Inbox::new()
    }
}

/// A client's way to the replica thread from the same process: the requests and answers of
/// the native protocol, handed over as values (no socket, no encoding). The requests wait in
/// the same bounded queue as those from the network; the client bounds its requests in flight
/// (`lockstep_client::InProcess`), as a network connection's window does.
pub struct LocalLink<M: StateMachine> {
    events: mpsc::Sender<Stamped<Event<M>>>,
}

impl<M: StateMachine> Clone for LocalLink<M> {
    fn clone(&self) -> LocalLink<M> {
        LocalLink { events: self.events.clone() }
    }
}

impl<M: StateMachine> LocalLink<M> {
    /// Queues `message`; its answer comes on `reply`. False once the replica has stopped.
    pub async fn submit(
        &self,
        message: ClientMessage<M::Input, M::Query>,
        reply: Reply<M::Output>,
    ) -> bool {
        self.events
            .send((Instant::now(), Event::Client(message, reply, lockstep_core::Origin::Local)))
            .await
            .is_ok()
    }
}

impl BoundServer {
    /// Checks `config` and binds its listeners; nothing is written yet, so a port in use or a
    /// bad address changes nothing.
    pub async fn bind(config: ServerConfig) -> Result<BoundServer, String> {
        config.validate().map_err(|error| format!("configuration: {error}"))?;
        let peer = config.peer_listen_address().map_err(|error| error.to_string())?;
        let client = config.client_listen_address().map_err(|error| error.to_string())?;
        let peer_listener = bind(peer, "peers").await?;
        let client_listener = bind(client, "clients").await?;
        let metrics_listener = match &config.listen_metrics {
            Some(address) => {
                let address = crate::config::resolve(address)
                    .map_err(|error| format!("configuration: listen_metrics: {error}"))?;
                Some(bind(address, "metrics").await?)
            }
            None => None,
        };
        // The addresses were checked as names; check what was bound too (a name may resolve
        // differently from one lookup to the next).
        if !config.insecure_plaintext {
            let bound = [
                (peer_listener.local_addr().ok(), config.peer_tls(), "peer"),
                (client_listener.local_addr().ok(), config.client_tls(), "client"),
                (
                    metrics_listener.as_ref().and_then(|l| l.local_addr().ok()),
                    config.client_tls(),
                    "metrics",
                ),
            ];
            for (address, tls, port) in bound {
                if let Some(address) = address.filter(|a| !tls && !a.ip().is_loopback()) {
                    return Err(format!(
                        "configuration: the {port} port is bound to {address}, not a loopback \
                         address, without TLS (see --insecure-plaintext)"
                    ));
                }
            }
        }
        let security = Security::load(&config)?;
        let max_connections = open_files_for(&config);
        let (progress, _) = watch::channel(Progress::default());
        Ok(BoundServer {
            config,
            peer_listener,
            client_listener,
            metrics_listener,
            progress,
            security,
            max_connections,
        })
    }

    /// Connections open at once on each client-facing port (see `max_connections`; lowered
    /// to what the open-files limit allows, leaving the peers theirs).
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The TLS configurations of the replica's ports (for the etcd gateway in the same
    /// process), re-read when their files change once the server runs.
    pub fn security(&self) -> Security {
        self.security.clone()
    }

    /// The replica's applied index, term and leader, published after every turn of its thread
    /// that changed them: a component in the same process (the etcd gateway) waits on them
    /// instead of polling.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// The bound peer and client addresses.
    pub fn addresses(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (self.peer_listener.local_addr().ok(), self.client_listener.local_addr().ok())
    }

    /// Opens (or creates) the replica's data directory, recovers it, and serves `machine`
    /// until `shutdown` completes or the replica must stop (then returns why).
    pub async fn run<M, F>(self, machine: M, shutdown: F) -> Result<(), String>
    where
        M: StateMachine + Send + 'static,
        M::Input: Send,
        M::Query: Send,
        M::Output: Send + Serialize,
        F: Future<Output = ()>,
    {
        self.run_with(machine, Inbox::new(), shutdown).await
    }

    /// As [`BoundServer::run`], taking requests from `inbox`, to which links may have been
    /// handed out already ([`Inbox::local`]).
    pub async fn run_with<M, F>(
        self,
        machine: M,
        inbox: Inbox<M>,
        shutdown: F,
    ) -> Result<(), String>
    where
        M: StateMachine + Send + 'static,
        M::Input: Send,
        M::Query: Send,
        M::Output: Send + Serialize,
        F: Future<Output = ()>,
    {
        let BoundServer {
            config,
            peer_listener,
            client_listener,
            metrics_listener,
            progress,
            security,
            max_connections,
        } = self;
        let claimed = identity::claim(&config.data_dir, config.cluster_id, config.id)?;
        // A replica joining a running cluster starts from the others' initial members, without
        // itself: it votes and campaigns only once the cluster's log makes it a voter.
        let initial = config.members.iter().filter(|m| !config.join || m.id != config.id);
        let membership = Membership::with_voters(initial.map(|m| NodeId(m.id)));
        let (store, initial) = LogStore::open(
            Arc::new(RealDisk),
            &config.data_dir,
            // A joined replica's own log says who the members are once it has started: its
            // member list may change between restarts.
            (claimed || !config.join).then_some(&membership),
            WalOptions::default(),
        )
        .map_err(|error| error.to_string())?;
        if let Some(damage) = store.damage_found() {
            tracing::warn!(replica = config.id, "{damage}");
        }
        if let Some(note) = store.lost_entries() {
            let votes = match note.term_max {
                Some(term) => format!(
                    "does not stand for election and votes only for a candidate whose log ends \
                     in a term after {term} (the entries it lost are of that term or earlier)"
                ),
                None => "takes no part in elections".to_string(),
            };
            tracing::warn!(
                replica = config.id,
                "the damaged files were set aside (kept as *.damaged): the log restarts after \
                 the latest checkpoint (entry {}), and the entries after it, through at least \
                 {}, are fetched again from the leader; until it holds them, this replica \
                 {votes}",
                initial.applied,
                note.lost_through
            );
        }
        #[cfg_attr(not(feature = "sabotage"), allow(unused_mut))]
        let mut hosted = Hosted::new(machine);
        #[cfg(feature = "sabotage")]
        if let Some(Sabotage::DivergeAt(index)) = config.sabotage {
            hosted.sabotage_diverge_at(index);
        }
        let mut state = Replicated::new(hosted, SessionConfig::default());
        if let Some(stored) = store.latest_snapshot().cloned() {
            let mut reader = store.snapshot_reader(&stored).map_err(|error| error.to_string())?;
            state.restore(&mut reader).map_err(|error| {
                format!(
                    "the latest snapshot in {} does not restore: {error}",
                    config.data_dir.display()
                )
            })?;
        }
        tracing::info!(
            replica = config.id,
            cluster = config.cluster_id,
            term = initial.hard_state.term.0,
            applied = initial.applied.0,
            entries = initial.entries.len(),
            "recovered"
        );

        let Inbox { sender: events, receiver } = inbox;
        let (control, control_receiver) = mpsc::unbounded_channel::<Stamped<Control>>();
        let mut inputs = Inputs {
            control: control_receiver,
            events: receiver,
            runtime: tokio::runtime::Handle::current(),
        };
        let (stop, stopped) = watch::channel(false);
        let reports = control.clone();
        let storage = ThreadedStorage::start_with(
            store,
            Arc::new(move |report| {
                reports.send((Instant::now(), Control::Storage(report))).is_ok()
            }),
            sabotaged!(config, Sabotage::EarlyAck),
        )
        .map_err(|error| format!("cannot start the log thread: {error}"))?;
        let peers: BTreeMap<u64, String> =
            config.members.iter().map(|member| (member.id, member.peer.clone())).collect();
        let configured: BTreeMap<u64, MemberAddress> = config
            .members
            .iter()
            .map(|member| {
                let address = MemberAddress {
                    id: member.id,
                    peer: member.peer.clone(),
                    client: member.client.clone(),
                    etcd: member.etcd.clone(),
                };
                (member.id, address)
            })
            .collect();
        // Peers have a network thread of their own: heartbeats, votes and acknowledgements
        // never wait behind clients' requests on the client network thread.
        let peer_runtime = start_peer_runtime(stopped.clone())?;
        let outbox = start_peers(
            config.id,
            config.cluster_id,
            &peers,
            stopped.clone(),
            peer_runtime.clone(),
            security.peers_out.clone(),
        );

        let mut core = Config::new(NodeId(config.id));
        core.heartbeat_interval_ticks = config.heartbeat_ticks;
        core.election_timeout_ticks_min = config.election_ticks;
        core.election_timeout_ticks_max = config.election_ticks.saturating_mul(2);
        if config.lease_reads {
            core.read_mode =
                ReadMode::Lease { clock_drift_ticks_max: crate::config::LEASE_CLOCK_DRIFT_TICKS };
        }
        // Fresh at every start (the operating system's randomness, through the standard
        // library's hasher keys): election timeouts, read numbers and the number a replica
        // that lost entries draws for its notices must not repeat across restarts.
        core.random_seed = {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one((config.id, std::process::id()))
        };
        core.validate().map_err(|error| format!("configuration: {error}"))?;
        let mut driver = Driver::new(core, initial, state, storage, outbox)?;
        driver.set_checkpoint_policy(CheckpointPolicy {
            entries: config.checkpoint_entries,
            growth_percent: config.checkpoint_growth_percent,
            log_bytes_max: config.checkpoint_log_bytes_max,
            ..CheckpointPolicy::default()
        });
        if config.audit {
            driver.set_audit(AuditConfig {
                report_interval: config.audit_report_interval,
                digest_interval: config.audit_digest_interval,
                repair: match config.audit_repair {
                    RepairSetting::Auto => RepairMode::Automatic,
                    RepairSetting::Manual => RepairMode::Manual,
                },
                verified_outputs: config.verified_outputs,
            });
        }
        let mut replica = Replica::new(driver, config.cluster_id, configured);
        replica.progress = Some(progress);
        if sabotaged!(config, Sabotage::UnsafeReads) {
            replica.unsafe_reads = true;
        }
        if let Some(sabotage) = config.sabotage {
            tracing::warn!(
                "started with the test-only sabotage {sabotage:?}: this server is unsafe"
            );
        }
        let (finished, outcome) = oneshot::channel();
        std::thread::Builder::new()
            .name("lockstep-replica".to_string())
            .spawn(move || {
                let result = replica.run(&mut inputs);
                let _ = finished.send(result);
            })
            .map_err(|error| format!("cannot start the replica thread: {error}"))?;

        peer_runtime.spawn(listen_peers(
            peer_listener,
            config.id,
            config.cluster_id,
            events.clone(),
            stopped.clone(),
            security.peers_in.clone(),
            usize::try_from(config.max_peer_connections).unwrap_or(usize::MAX),
        ));
        tokio::spawn(listen_clients(
            client_listener,
            events.clone(),
            stopped.clone(),
            security.clients.clone(),
            crate::clients::ClientLimits {
                max_connections,
                idle_timeout: Duration::from_millis(config.client_idle_timeout_millis),
                max_requests: usize::try_from(config.max_requests_per_connection)
                    .unwrap_or(usize::MAX),
                frame_timeout: Duration::from_millis(config.client_frame_timeout_millis),
            },
        ));
        security.watch(stopped.clone());
        // The clock runs on its own thread, so no network work can delay it; ticks missed
        // while the thread was not scheduled are sent at once when it is, so the protocol's
        // clock never falls behind real time for long. It stops when the replica thread does.
        let ticks = control.clone();
        let tick = Duration::from_millis(config.tick_millis);
        std::thread::Builder::new()
            .name("lockstep-clock".to_string())
            .spawn(move || {
                let mut due = Instant::now() + tick;
                loop {
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    while due <= Instant::now() {
                        if ticks.send((Instant::now(), Control::Tick)).is_err() {
                            return;
                        }
                        due += tick;
                    }
                }
            })
            .map_err(|error| format!("cannot start the clock thread: {error}"))?;
        if let Some(listener) = metrics_listener {
            match crate::metrics::install() {
                Some(handle) => {
                    // Says so where operators look: ports off loopback in the clear.
                    if config.insecure_plaintext && !(config.client_tls() && config.peer_tls()) {
                        metrics::gauge!("lockstep_insecure_plaintext").set(1.0);
                    }
                    tokio::spawn(crate::metrics::serve(
                        listener,
                        handle,
                        stopped.clone(),
                        security.clients.clone(),
                        max_connections,
                    ));
                }
                None => tracing::warn!("the metrics endpoint is off: no recorder"),
            }
        }
        tracing::info!(replica = config.id, "serving");

        tokio::pin!(shutdown);
        tokio::pin!(outcome);
        drop(events);
        // If this future is dropped before it finishes, the replica thread is still told to
        // stop (and so finishes its writes and closes the store).
        let _stop_on_drop = StopOnDrop(control.clone());
        let result = tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down: finishing queued writes");
                // Connections and the clock stop first, so nothing new arrives.
                let _ = stop.send(true);
                let _ = control.send((Instant::now(), Control::Shutdown));
                outcome.await.unwrap_or_else(|_| Err("the replica thread panicked".to_string()))
            }
            result = &mut outcome => {
                result.unwrap_or_else(|_| Err("the replica thread panicked".to_string()))
            }
        };
        let _ = stop.send(true);
        match &result {
            Ok(()) => tracing::info!("stopped: every queued write is durable"),
            Err(reason) => tracing::error!("stopped: {reason}"),
        }
        result
    }
}

/// Raises the soft limit on open files to the hard one (connections are files), and returns
/// how many connections each client-facing port may hold: `max_connections`, or less when the
/// process may not open that many files on three ports and still leave the peer port its
/// `max_peer_connections` and the log, checkpoints and outgoing connections their room (a port
/// that runs out of file descriptors cannot accept: clients must never crowd out peers).
fn open_files_for(config: &ServerConfig) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    const RESERVED: u64 = 256;
    let configured = usize::try_from(config.max_connections).unwrap_or(usize::MAX);
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum || (limit.current.is_some() && limit.maximum.is_none()) {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!("cannot raise the open files limit: {error}");
        }
    }
    let Some(files) = getrlimit(Resource::Nofile).current else { return configured };
    let left = files.saturating_sub(config.max_peer_connections.saturating_add(RESERVED));
    let fits = usize::try_from(left / 3).unwrap_or(usize::MAX).max(1);
    if fits < configured {
        tracing::warn!(
            "the process may open {files} files: each client-facing port takes at most {fits} \
             connections (not max_connections {configured}), leaving the peer port its {} and \
             {RESERVED} for the rest; raise `ulimit -n` for more",
            config.max_peer_connections
        );
        return fits;
    }
    configured
}

/// The runtime of the peer connections, on a thread of its own ("lockstep-peers") until
/// `stopped` says to stop (or its sender is gone); its tasks end with it.
fn start_peer_runtime(
    mut stopped: watch::Receiver<bool>,
) -> Result<tokio::runtime::Handle, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the peer network runtime: {error}"))?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("lockstep-peers".to_string())
        .spawn(move || {
            runtime.block_on(async move {
                while !*stopped.borrow_and_update() {
                    if stopped.changed().await.is_err() {
                        break;
                    }
                }
            });
        })
        .map_err(|error| format!("cannot start the peer network thread: {error}"))?;
    Ok(handle)
}

/// Tells the replica thread to stop when dropped.
struct StopOnDrop(mpsc::UnboundedSender<Stamped<Control>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send((Instant::now(), Control::Shutdown));
    }
}
