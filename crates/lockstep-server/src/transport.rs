//! Peer transport: TCP connections between replicas.
//!
//! Each replica dials every other replica twice: one connection for consensus messages and
//! one for snapshot chunks, so that a large state transfer never delays a heartbeat. A
//! connection starts with a [`PeerHello`] naming the cluster, the sender and the recipient;
//! the listener refuses a hello from another cluster or for another replica. Frames carry a
//! version byte and a CRC32C (see `lockstep-wire`); a frame that is too large, fails its
//! checksum or does not decode closes that connection with a logged reason.
//!
//! With TLS (the peer files in the configuration) every peer connection is mutual TLS: the
//! dialler asks for the certificate of the replica it dials ([`lockstep_tls::replica_name`]),
//! and the listener checks that the dialler's certificate names the replica its hello claims
//! to be; a connection that fails either is refused, counted
//! (`lockstep_connections_refused_total{port="peer"}`) and logged.
//!
//! Outbound messages are queued per peer and stream in bounded queues; a full queue drops the
//! batch (the protocol retransmits), so a slow or dead peer never holds memory or the replica
//! thread. A dropped connection is redialled with exponential backoff (50 ms to 1 s).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep_core::{Message, MessageBody, NodeId, StateMachine};
use lockstep_tls::rustls::{ClientConfig, ServerConfig as TlsServerConfig};
use lockstep_tls::{Conn, Reloading};
use lockstep_wire::{Decoder, Kind, PeerHello, PeerStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::replica::{Event, Stamped};

/// The largest peer frame accepted: a full append or snapshot chunk with room to spare.
pub const PEER_FRAME_BYTES_MAX: u64 = 64 << 20;

/// The largest frame accepted before a peer's hello: what a hello needs, with room to spare.
const HELLO_FRAME_BYTES_MAX: u64 = 4 << 10;

/// A peer connection must have said who it is within this long of being accepted.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// A peer that takes no 64 KiB of a write within this long is dropped (and redialled).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Batches queued per peer and stream before new ones are dropped.
const QUEUE_BATCHES: usize = 1024;

struct PeerQueues {
    consensus: mpsc::Sender<Vec<Message>>,
    snapshots: mpsc::Sender<Vec<Message>>,
    pending_consensus: Vec<Message>,
    pending_snapshots: Vec<Message>,
}

/// The driver's [`lockstep_node::Transport`]: messages wait per peer until
/// [`PeerOutbox::flush`], then go to that peer's connection task as one batch.
pub struct PeerOutbox {
    peers: BTreeMap<NodeId, PeerQueues>,
    /// Each peer's address, as its connection tasks dial it.
    addresses: BTreeMap<NodeId, String>,
    me: u64,
    cluster_id: u64,
    runtime: tokio::runtime::Handle,
    shutdown: watch::Receiver<bool>,
    /// Dialling with TLS: this replica's peer certificate and the peers' authority.
    tls: Option<Arc<Reloading<ClientConfig>>>,
}

impl lockstep_node::Transport for PeerOutbox {
    fn send(&mut self, message: Message) {
        let Some(queues) = self.peers.get_mut(&message.to) else {
            metrics::counter!("lockstep_peer_messages_dropped_total").increment(1);
            tracing::debug!(to = %message.to, "no address for replica; message dropped");
            return;
        };
        if matches!(message.body, MessageBody::InstallSnapshot(_)) {
            queues.pending_snapshots.push(message);
        } else {
            queues.pending_consensus.push(message);
        }
    }
}

impl PeerOutbox {
    /// Hands every waiting message to its connection task.
    pub fn flush(&mut self) {
        for queues in self.peers.values_mut() {
            for (pending, queue) in [
                (&mut queues.pending_consensus, &queues.consensus),
                (&mut queues.pending_snapshots, &queues.snapshots),
            ] {
                if pending.is_empty() {
                    continue;
                }
                let batch = std::mem::take(pending);
                let count = batch.len() as u64;
                match queue.try_send(batch) {
                    Ok(()) => {
                        metrics::counter!("lockstep_peer_messages_sent_total").increment(count)
                    }
                    Err(_) => {
                        metrics::counter!("lockstep_peer_messages_dropped_total").increment(count)
                    }
                }
            }
        }
    }
}

impl PeerOutbox {
    /// Stops dialling the peers `keep` refuses (their connection tasks end).
    pub fn retain_peers(&mut self, keep: impl Fn(NodeId) -> bool) {
        self.peers.retain(|id, _| keep(*id));
        self.addresses.retain(|id, _| keep(*id));
    }

    /// Makes sure replica `id` is dialled at `address` (a new peer, or one that moved).
    pub fn ensure_peer(&mut self, id: NodeId, address: &str) {
        if id.0 == self.me || self.addresses.get(&id).map(String::as_str) == Some(address) {
            return;
        }
        // A peer that moved: its old connection tasks end when their queues close.
        self.peers.remove(&id);
        let mut senders = Vec::new();
        for stream in [PeerStream::Consensus, PeerStream::Snapshots] {
            let (sender, receiver) = mpsc::channel(QUEUE_BATCHES);
            let hello = PeerHello { cluster_id: self.cluster_id, from: self.me, to: id.0, stream };
            self.runtime.spawn(dial(
                hello,
                address.to_string(),
                receiver,
                self.shutdown.clone(),
                self.tls.clone(),
            ));
            senders.push(sender);
        }
        let snapshots = senders.pop();
        let consensus = senders.pop();
        if let (Some(consensus), Some(snapshots)) = (consensus, snapshots) {
            self.peers.insert(
                id,
                PeerQueues {
                    consensus,
                    snapshots,
                    pending_consensus: Vec::new(),
                    pending_snapshots: Vec::new(),
                },
            );
            self.addresses.insert(id, address.to_string());
        }
    }
}

/// Starts a connection task per peer and stream; returns the outbox that feeds them.
pub fn start_peers(
    me: u64,
    cluster_id: u64,
    peers: &BTreeMap<u64, String>,
    shutdown: watch::Receiver<bool>,
    runtime: tokio::runtime::Handle,
    tls: Option<Arc<Reloading<ClientConfig>>>,
) -> PeerOutbox {
    let mut outbox = PeerOutbox {
        peers: BTreeMap::new(),
        addresses: BTreeMap::new(),
        me,
        cluster_id,
        runtime,
        shutdown,
        tls,
    };
    for (&id, address) in peers {
        outbox.ensure_peer(NodeId(id), address);
    }
    outbox
}

/// One outbound connection: dial, say hello, write batches; redial after any error.
async fn dial(
    hello: PeerHello,
    address: String,
    mut batches: mpsc::Receiver<Vec<Message>>,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<Arc<Reloading<ClientConfig>>>,
) {
    let kind = match hello.stream {
        PeerStream::Consensus => Kind::Peer,
        PeerStream::Snapshots => Kind::Snapshot,
    };
    let mut backoff = Duration::from_millis(50);
    let mut failures = 0u64;
    loop {
        let connected = tokio::select! {
            _ = shutdown.changed() => return,
            connected = tokio::time::timeout(
                Duration::from_secs(5),
                connect(&address, hello.cluster_id, hello.to, tls.as_deref()),
            ) => connected,
        };
        let mut stream = match connected {
            Ok(Ok(stream)) => stream,
            outcome => {
                failures += 1;
                if failures == 1 || failures % 64 == 0 {
                    let reason = match outcome {
                        Ok(Err(error)) => error,
                        _ => "timed out".to_string(),
                    };
                    if tls.is_some() && reason.starts_with("TLS") {
                        // Certificates that do not fit are an operator's business: say so.
                        tracing::warn!(to = hello.to, %address, "cannot reach replica: {reason}");
                    } else {
                        tracing::debug!(to = hello.to, %address, "cannot reach replica: {reason}");
                    }
                }
                // Messages queued while the peer is unreachable are stale by the time it is
                // back: drop them rather than replay them. A closed queue: no longer a peer.
                loop {
                    match batches.try_recv() {
                        Ok(_) => {}
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if failures > 0 {
            tracing::debug!(to = hello.to, %address, "connected to replica");
        }
        failures = 0;
        backoff = Duration::from_millis(50);
        let Ok(greeting) = lockstep_wire::encode(Kind::Hello, &hello) else { return };
        if !matches!(
            tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&greeting)).await,
            Ok(Ok(()))
        ) {
            continue;
        }
        let mut buffer = Vec::with_capacity(64 << 10);
        loop {
            let batch = tokio::select! {
                _ = shutdown.changed() => return,
                batch = batches.recv() => batch,
            };
            let Some(batch) = batch else { return };
            buffer.clear();
            encode_batch(kind, batch, &mut buffer);
            while buffer.len() < (1 << 20) {
                match batches.try_recv() {
                    Ok(batch) => encode_batch(kind, batch, &mut buffer),
                    Err(_) => break,
                }
            }
            // A peer that stopped reading (dead host, half-open connection) is redialled
            // rather than waited on.
            if let Err(reason) = write_with_progress(&mut stream, &buffer).await {
                tracing::debug!(to = hello.to, "peer connection dropped: {reason}");
                break;
            }
            metrics::counter!("lockstep_peer_bytes_sent_total").increment(buffer.len() as u64);
        }
    }
}

/// Dials replica `to` at `address`, in TLS asking for its certificate when `tls` is given.
async fn connect(
    address: &str,
    cluster_id: u64,
    to: u64,
    tls: Option<&Reloading<ClientConfig>>,
) -> Result<Conn, String> {
    let tcp = TcpStream::connect(address).await.map_err(|error| error.to_string())?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else { return Ok(Conn::Plain(tcp)) };
    let name = lockstep_tls::rustls::pki_types::ServerName::try_from(lockstep_tls::replica_name(
        cluster_id, to,
    ))
    .map_err(|error| format!("TLS: {error}"))?;
    let connector = lockstep_tls::tokio_rustls::TlsConnector::from(tls.current());
    match connector.connect(name, tcp).await {
        Ok(stream) => Ok(Conn::Client(Box::new(stream))),
        Err(error) => Err(format!("TLS: {error}")),
    }
}

/// Writes `buffer` in pieces, each of which must go within [`WRITE_TIMEOUT`]: a slow link
/// still makes progress, a peer that stopped reading is given up on.
async fn write_with_progress(stream: &mut Conn, buffer: &[u8]) -> Result<(), String> {
    for piece in buffer.chunks(64 << 10) {
        match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(piece)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err("the peer stopped reading".to_string()),
        }
    }
    // TLS buffers what it encrypts: push it out.
    match tokio::time::timeout(WRITE_TIMEOUT, stream.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("the peer stopped reading".to_string()),
    }
}

fn encode_batch(kind: Kind, batch: Vec<Message>, buffer: &mut Vec<u8>) {
    for message in batch {
        match lockstep_wire::encode(kind, &message) {
            Ok(frame) => buffer.extend_from_slice(&frame),
            Err(error) => tracing::error!("a message could not be encoded: {error}"),
        }
    }
}

/// Accepts connections until shut down, serving each on its own task with `serve` (after a
/// TLS handshake, with `tls`); a connection refused in the handshake or closed by `serve` for
/// bad input is logged and counted under `port`.
///
/// At most `max_connections` are open at once: one more is closed as soon as it is accepted
/// (counted with `reason="limit"`), so that the connections open, and the other ports, keep
/// their share of the process's file descriptors.
pub async fn accept<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    port: &'static str,
    tls: Option<Arc<Reloading<TlsServerConfig>>>,
    max_connections: usize,
    serve: F,
) where
    F: Fn(Conn, watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let serve = Arc::new(serve);
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, address)) => {
                metrics::counter!("lockstep_connections_total", "port" => port).increment(1);
                let Ok(permit) = open.clone().try_acquire_owned() else {
                    metrics::counter!(
                        "lockstep_connections_refused_total",
                        "port" => port,
                        "reason" => "limit"
                    )
                    .increment(1);
                    if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                        warned = Some(Instant::now());
                        tracing::warn!(
                            %address,
                            "refusing {port} connections: {max_connections} are open (the \
                             limit; see max_connections)"
                        );
                    }
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let serve = serve.clone();
                let tls = tls.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let outcome = match crate::tls::accept(stream, tls.as_deref()).await {
                        Ok(conn) => serve(conn, shutdown).await,
                        Err(reason) => Err(reason),
                    };
                    if let Err(reason) = outcome {
                        metrics::counter!("lockstep_connections_refused_total", "port" => port)
                            .increment(1);
                        tracing::warn!(%address, "closed a {port} connection: {reason}");
                    }
                });
            }
            Err(error) => {
                tracing::warn!("accepting a {port} connection failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts peer connections until shut down.
pub async fn listen_peers<M: StateMachine + 'static>(
    listener: TcpListener,
    me: u64,
    cluster_id: u64,
    events: mpsc::Sender<Stamped<Event<M>>>,
    shutdown: watch::Receiver<bool>,
    tls: Option<Arc<Reloading<TlsServerConfig>>>,
    max_connections: usize,
) where
    M::Input: Send,
    M::Query: Send,
    M::Output: Send,
{
    accept(listener, shutdown, "peer", tls, max_connections, move |stream, shutdown| {
        let events = events.clone();
        async move { serve_peer(stream, me, cluster_id, &events, shutdown).await }
    })
    .await;
}

/// Reads one inbound peer connection; returns why it was closed, if for bad input.
async fn serve_peer<M: StateMachine>(
    mut stream: Conn,
    me: u64,
    cluster_id: u64,
    events: &mpsc::Sender<Stamped<Event<M>>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    // Until it has said who it is, a connection gets what a hello needs: a small frame, within
    // a deadline for the whole hello (not for each read: a byte at a time does not extend it).
    let mut decoder = Decoder::new(HELLO_FRAME_BYTES_MAX);
    let mut buffer = vec![0u8; 64 << 10];
    let mut hello: Option<PeerHello> = None;
    let hello_due = tokio::time::Instant::now() + HELLO_TIMEOUT;
    loop {
        let read = if hello.is_none() {
            match tokio::time::timeout_at(hello_due, stream.read(&mut buffer)).await {
                Ok(read) => read,
                Err(_) => return Err("no hello within 5 s".to_string()),
            }
        } else {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                read = stream.read(&mut buffer) => read,
            }
        };
        let count = match read {
            Ok(0) => return Ok(()),
            Ok(count) => count,
            Err(error) => {
                tracing::debug!("peer connection ended: {error}");
                return Ok(());
            }
        };
        decoder.extend(&buffer[..count]);
        while let Some((kind, body)) = decoder.next_frame().map_err(|error| error.to_string())? {
            match &hello {
                None => {
                    if kind != Kind::Hello {
                        return Err(format!("expected a hello, got a {kind:?} frame"));
                    }
                    let greeting: PeerHello =
                        lockstep_wire::decode(&body).map_err(|error| error.to_string())?;
                    if greeting.cluster_id != cluster_id {
                        return Err(format!(
                            "replica {} belongs to cluster {}, this is cluster {cluster_id}",
                            greeting.from, greeting.cluster_id
                        ));
                    }
                    if greeting.to != me {
                        return Err(format!(
                            "replica {} dialled replica {}, this is replica {me}",
                            greeting.from, greeting.to
                        ));
                    }
                    if stream.is_tls() {
                        let named = stream.peer_certificate().is_some_and(|certificate| {
                            lockstep_tls::certifies_replica(certificate, cluster_id, greeting.from)
                        });
                        if !named {
                            metrics::counter!("lockstep_peer_identity_refused_total").increment(1);
                            return Err(format!(
                                "a peer claiming to be replica {} presented a certificate that \
                                 does not name it ({})",
                                greeting.from,
                                lockstep_tls::replica_name(cluster_id, greeting.from)
                            ));
                        }
                    }
                    hello = Some(greeting);
                    decoder.set_frame_bytes_max(PEER_FRAME_BYTES_MAX);
                }
                Some(greeting) => {
                    if kind != Kind::Peer && kind != Kind::Snapshot {
                        return Err(format!("expected a peer message, got a {kind:?} frame"));
                    }
                    let message: Message =
                        lockstep_wire::decode(&body).map_err(|error| error.to_string())?;
                    if message.from.0 != greeting.from || message.to.0 != me {
                        return Err(format!(
                            "a message from {} to {} on replica {}'s connection",
                            message.from, message.to, greeting.from
                        ));
                    }
                    metrics::counter!("lockstep_peer_messages_received_total").increment(1);
                    if events.send((Instant::now(), Event::Peer(message))).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Binds a listener, with a clear error when the address is taken.
pub async fn bind(address: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(address).await.map_err(|error| {
        if error.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "cannot listen for {what} on {address}: the address is in use by another process"
            )
        } else {
            format!("cannot listen for {what} on {address}: {error}")
        }
    })
}
