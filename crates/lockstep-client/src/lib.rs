//! # lockstep-client: a typed client for any replicated state machine
//!
//! A [`Client`] speaks lockstep's native protocol to a cluster serving a state machine whose
//! input, query and output types are `I`, `Q` and `O`. It
//! - keeps one connection and multiplexes every request over it: requests from many tasks are
//!   pipelined, and answers are matched to them by id;
//! - finds the leader: a replica that does not lead says which one does, and the client moves
//!   there; an unreachable replica makes it try the next endpoint;
//! - retries a write under its client session with the same sequence number until it is
//!   answered, so a write retried after a lost answer or a failed leader is applied once;
//! - reads linearizably by default (read-index on the leader), or from whichever replica it
//!   is connected to with [`ReadConsistency::Follower`] (possibly stale);
//! - gives up after [`ClientOptions::timeout`] with a typed [`Error`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), lockstep_client::Error> {
//! use lockstep_client::{Client, ClientOptions};
//! // A counter service whose input and query are u64 and whose output is u64.
//! let client: Client<u64, u64, u64> =
//!     Client::new(vec!["127.0.0.1:7201".into()], ClientOptions::default());
//! let total = client.write(5).await?;
//! let read = client.read(0).await?;
//! # let _ = (total, read);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep_tls::{rustls, Conn, Reloading};
pub use lockstep_wire::{
    AdminRequest, AuditRequest, AuditView, ClientError, ClientMessage, MemberInfo, MemberRequest,
    PeerAuditView, Progress, ReadConsistency, ReplicaStatus, ServerMessage,
};
use lockstep_wire::{Decoder, Kind};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// The largest answer frame accepted.
const FRAME_BYTES_MAX: u64 = 64 << 20;

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Give up on a request after this long (a write's outcome is then unknown).
    pub timeout: Duration,
    /// Give up on one attempt (and try again, maybe elsewhere) after this long.
    pub attempt_timeout: Duration,
    /// How reads are served unless a call says otherwise.
    pub consistency: ReadConsistency,
    /// Connect with TLS (the configuration is taken anew for each connection, so certificates
    /// rotated on disk are used from the next connection on).
    pub tls: Option<Arc<Reloading<rustls::ClientConfig>>>,
    /// A user's credential (a token the state machine issued), sent with membership changes
    /// and audit actions, which need one once the state machine checks users. Requests to
    /// the state machine carry theirs in their input.
    pub token: Option<String>,
    /// Talk only to the endpoints given, never to a leader a replica names instead: a client
    /// of one replica (for what only that replica may answer). A write that its replica
    /// cannot take, since another leads, fails at once with [`Error::NotLeader`].
    pub stay: bool,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(5),
            consistency: ReadConsistency::Linearizable,
            tls: None,
            token: None,
            stay: false,
        }
    }
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No answer within the timeout. For a write, it may or may not have been applied.
    Timeout {
        /// How long the client tried.
        waited: Duration,
        /// The last reason it had to try again.
        last: String,
    },
    /// The request is older than the session's last answered one, or the session expired.
    /// If the request had been sent before (a retry), it may have been applied.
    Stale,
    /// The request is larger than the cluster accepts.
    TooLarge {
        /// Its size.
        bytes: u64,
        /// The most allowed.
        max: u64,
    },
    /// The cluster could not decode the request, or the client could not decode the answer.
    Malformed(String),
    /// The client was given no endpoint.
    NoEndpoints,
    /// The cluster will never carry out the request as asked (a membership change the
    /// configuration does not allow, say).
    Rejected(String),
    /// Another replica leads, and the client stays with its own ([`ClientOptions::stay`]).
    NotLeader {
        /// The replica that leads.
        leader: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout { waited, last } => {
                write!(f, "no answer after {:.1} s (last: {last})", waited.as_secs_f64())
            }
            Error::Stale => f.write_str("the request is stale (its session expired)"),
            Error::TooLarge { bytes, max } => {
                write!(f, "the request is {bytes} bytes; the cluster accepts at most {max}")
            }
            Error::Malformed(reason) => write!(f, "malformed: {reason}"),
            Error::NoEndpoints => f.write_str("no endpoints given"),
            Error::Rejected(reason) => write!(f, "refused: {reason}"),
            Error::NotLeader { leader } => {
                write!(f, "replica {leader} leads, and this client stays with its own")
            }
        }
    }
}

impl std::error::Error for Error {}

type Pending<O> = Arc<Mutex<HashMap<u64, oneshot::Sender<ServerMessage<O>>>>>;

/// Where a replica in the client's process sends its answers.
pub type Answers<O> = mpsc::UnboundedSender<ServerMessage<O>>;

/// Hands a request to a replica in the client's process, its answer to come on the given
/// sender; completes with false once that replica has stopped.
pub type Submit<I, Q, O> = Arc<
    dyn Fn(ClientMessage<I, Q>, Answers<O>) -> Pin<Box<dyn Future<Output = bool> + Send>>
        + Send
        + Sync,
>;

/// A replica in the same process as the client (the etcd gateway beside its replica): the
/// client reaches it by handing over requests and answers as values, with no socket and no
/// encoding, and reaches every other replica over the network as usual. Leader discovery,
/// sessions and retries are the same either way.
pub struct InProcess<I, Q, O> {
    /// The client address of that replica: the endpoint this link stands for.
    pub endpoint: String,
    /// How a request reaches it.
    pub submit: Submit<I, Q, O>,
}

impl<I, Q, O> fmt::Debug for InProcess<I, Q, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcess").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl<I, Q, O> Clone for InProcess<I, Q, O> {
    fn clone(&self) -> Self {
        InProcess { endpoint: self.endpoint.clone(), submit: self.submit.clone() }
    }
}

/// How a connection carries requests.
enum Link<I, Q, O> {
    /// Frames to a socket's writer task.
    Socket(mpsc::UnboundedSender<Bytes>),
    /// Values to a replica in this process, at most `room`'s permits of them in flight.
    InProcess { submit: Submit<I, Q, O>, answers: Answers<O>, room: Arc<Semaphore> },
}

/// Requests one in-process connection may have in flight: the replica's queue, shared with
/// its peers' messages, is never filled by one client (as a network connection's window).
const IN_PROCESS_IN_FLIGHT_MAX: usize = 16_384;

/// One connection to one replica, shared by every request.
struct Connection<I, Q, O> {
    endpoint: String,
    link: Link<I, Q, O>,
    pending: Pending<O>,
    alive: Arc<AtomicBool>,
    /// Why the connection ended, when the reader knows.
    lost: Arc<Mutex<Option<String>>>,
}

impl<I: Serialize, Q: Serialize, O: DeserializeOwned + Send + 'static> Connection<I, Q, O> {
    /// A connection to the replica in this process: its answers are routed to their waiters
    /// by a task that ends when the connection and every request it sent are gone.
    fn in_process(local: &InProcess<I, Q, O>) -> Connection<I, Q, O> {
        let (answers, mut receiver) = mpsc::unbounded_channel::<ServerMessage<O>>();
        let pending: Pending<O> = Arc::default();
        {
            let pending = pending.clone();
            tokio::spawn(async move {
                while let Some(answer) = receiver.recv().await {
                    let waiter = lock(&pending).remove(&answer.id());
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(answer);
                    }
                }
            });
        }
        Connection {
            endpoint: local.endpoint.clone(),
            link: Link::InProcess {
                submit: local.submit.clone(),
                answers,
                room: Arc::new(Semaphore::new(IN_PROCESS_IN_FLIGHT_MAX)),
            },
            pending,
            alive: Arc::new(AtomicBool::new(true)),
            lost: Arc::default(),
        }
    }

    async fn open(
        endpoint: &str,
        timeout: Duration,
        tls: Option<&Reloading<rustls::ClientConfig>>,
    ) -> Result<Connection<I, Q, O>, String> {
        let stream = tokio::time::timeout(timeout, connect(endpoint, tls))
            .await
            .map_err(|_| format!("connecting to {endpoint} timed out"))??;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (frames, mut outgoing) = mpsc::unbounded_channel::<Bytes>();
        let pending: Pending<O> = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        {
            let alive = alive.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::with_capacity(64 << 10);
                while let Some(frame) = outgoing.recv().await {
                    buffer.clear();
                    buffer.extend_from_slice(&frame);
                    while buffer.len() < (1 << 20) {
                        match outgoing.try_recv() {
                            Ok(frame) => buffer.extend_from_slice(&frame),
                            Err(_) => break,
                        }
                    }
                    // TLS holds what it encrypted until flushed.
                    if writer.write_all(&buffer).await.is_err() || writer.flush().await.is_err() {
                        break;
                    }
                }
                alive.store(false, Ordering::Release);
            });
        }
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        {
            let pending = pending.clone();
            let alive = alive.clone();
            let lost = lost.clone();
            let endpoint = endpoint.to_string();
            let plaintext = tls.is_none();
            tokio::spawn(async move {
                let mut decoder = Decoder::new(FRAME_BYTES_MAX);
                let mut buffer = vec![0u8; 64 << 10];
                let mut answered = false;
                'reading: loop {
                    let read = reader.read(&mut buffer).await;
                    let refused = matches!(&read, Ok(0))
                        || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
                    let count = match read {
                        _ if refused && plaintext && !answered => {
                            *lock(&lost) = Some(format!(
                                "{endpoint} closed the connection without answering (if it \
                                 serves TLS, give --cacert, and --cert and --key if it asks \
                                 for a client certificate)"
                            ));
                            break;
                        }
                        Ok(0) => break,
                        Err(error) => {
                            *lock(&lost) = Some(format!("the connection to {endpoint}: {error}"));
                            break;
                        }
                        Ok(count) => count,
                    };
                    answered = true;
                    decoder.extend(&buffer[..count]);
                    loop {
                        let frame = match decoder.next_frame() {
                            Ok(Some(frame)) => frame,
                            Ok(None) => break,
                            Err(error) => {
                                tracing::warn!(%endpoint, "bad answer frame: {error}");
                                break 'reading;
                            }
                        };
                        let answer: ServerMessage<O> = match lockstep_wire::decode(&frame.1) {
                            Ok(answer) => answer,
                            Err(error) => {
                                tracing::warn!(%endpoint, "undecodable answer: {error}");
                                break 'reading;
                            }
                        };
                        if let ServerMessage::Refused { id: 0, error } = &answer {
                            tracing::warn!(%endpoint, "the server closed the connection: {error:?}");
                            *lock(&lost) =
                                Some(format!("{endpoint} closed the connection: {error:?}"));
                            break 'reading;
                        }
                        let waiter = lock(&pending).remove(&answer.id());
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(answer);
                        }
                    }
                }
                alive.store(false, Ordering::Release);
                // Dropping the waiters tells every request in flight that its answer is lost.
                lock(&pending).clear();
            });
        }
        Ok(Connection {
            endpoint: endpoint.to_string(),
            link: Link::Socket(frames),
            pending,
            alive,
            lost,
        })
    }

    /// Sends request `id` and returns where its answer will come, with the room it takes
    /// until then (in process). The caller removes `id` from `pending` however it ends.
    async fn send(
        &self,
        id: u64,
        message: ClientMessage<I, Q>,
    ) -> Result<(oneshot::Receiver<ServerMessage<O>>, Option<OwnedSemaphorePermit>), String> {
        let (sender, receiver) = oneshot::channel();
        lock(&self.pending).insert(id, sender);
        let mut permit = None;
        let sent = self.alive.load(Ordering::Acquire)
            && match &self.link {
                Link::Socket(frames) => match lockstep_wire::encode(Kind::Client, &message) {
                    Ok(frame) => frames.send(frame).is_ok(),
                    Err(error) => return Err(error.to_string()),
                },
                Link::InProcess { submit, answers, room } => {
                    permit = room.clone().acquire_owned().await.ok();
                    let sent = permit.is_some() && submit(message, answers.clone()).await;
                    if !sent {
                        self.alive.store(false, Ordering::Release);
                    }
                    sent
                }
            };
        if !sent {
            return Err(format!("the connection to {} is closed", self.endpoint));
        }
        Ok((receiver, permit))
    }
}

/// Removes a request's waiter when dropped.
struct Forget<'a, O> {
    pending: &'a Pending<O>,
    id: u64,
}

impl<O> Drop for Forget<'_, O> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.id);
    }
}

/// Connects to `endpoint` (`host:port`), in TLS when `tls` is given, checking that the
/// server's certificate names the endpoint's host.
async fn connect(
    endpoint: &str,
    tls: Option<&Reloading<rustls::ClientConfig>>,
) -> Result<Conn, String> {
    let tcp = TcpStream::connect(endpoint)
        .await
        .map_err(|error| format!("cannot connect to {endpoint}: {error}"))?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else { return Ok(Conn::Plain(tcp)) };
    let name = lockstep_tls::server_name(endpoint)?;
    let connector = lockstep_tls::tokio_rustls::TlsConnector::from(tls.current());
    match connector.connect(name, tcp).await {
        Ok(stream) => Ok(Conn::Client(Box::new(stream))),
        Err(error) => Err(format!(
            "TLS with {endpoint} failed: {error} (does it serve TLS, with a certificate from the \
             authority given?)"
        )),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A client session: its id, the number of its next request, and when it was last used.
#[derive(Clone, Copy, Debug)]
struct Session {
    client: u64,
    next: u64,
    used: Instant,
}

/// Sessions idle longer than this are dropped rather than reused: the cluster forgets idle
/// sessions after 10 minutes, and a forgotten session's next request would be refused.
const SESSION_IDLE_MAX: Duration = Duration::from_secs(300);

/// The connection in use, if any, and the index of the endpoint to try next.
type Current<I, Q, O> = (Option<Arc<Connection<I, Q, O>>>, usize);

struct Shared<I, Q, O> {
    endpoints: Vec<String>,
    /// The replica in this process, reached without a socket, if there is one.
    local: Option<InProcess<I, Q, O>>,
    /// The connection in use, and the index of the endpoint to try next when it fails.
    current: tokio::sync::Mutex<Current<I, Q, O>>,
    next_id: AtomicU64,
    /// Idle sessions: each request in flight holds its own, so pipelined writes never race
    /// within a session.
    sessions: Mutex<Vec<Session>>,
}

/// See the crate documentation. Cloning gives another handle on the same connection.
pub struct Client<I, Q, O> {
    shared: Arc<Shared<I, Q, O>>,
    options: ClientOptions,
    types: PhantomData<fn(I, Q) -> O>,
}

impl<I, Q, O> Clone for Client<I, Q, O> {
    fn clone(&self) -> Self {
        Client { shared: self.shared.clone(), options: self.options.clone(), types: PhantomData }
    }
}

/// What one attempt came to (short-lived: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Attempt<O> {
    Answer(ServerMessage<O>),
    /// Try again (elsewhere, maybe), for this reason.
    Again(String),
}

impl<I, Q, O> Client<I, Q, O>
where
    I: Serialize + Clone,
    Q: Serialize + Clone,
    O: DeserializeOwned + Send + 'static,
{
    /// A client of the cluster reachable at `endpoints` (client addresses, `host:port`). It
    /// connects when first used.
    pub fn new(endpoints: Vec<String>, options: ClientOptions) -> Client<I, Q, O> {
        Client::build(endpoints, options, None)
    }

    /// A client of the cluster reachable at `endpoints`, one of which is the replica `local`
    /// in this process: that one is reached through `local`, the others over the network.
    pub fn with_local(
        endpoints: Vec<String>,
        options: ClientOptions,
        local: InProcess<I, Q, O>,
    ) -> Client<I, Q, O> {
        Client::build(endpoints, options, Some(local))
    }

    fn build(
        endpoints: Vec<String>,
        options: ClientOptions,
        local: Option<InProcess<I, Q, O>>,
    ) -> Client<I, Q, O> {
        Client {
            shared: Arc::new(Shared {
                endpoints,
                local,
                current: tokio::sync::Mutex::new((None, 0)),
                next_id: AtomicU64::new(1),
                sessions: Mutex::new(Vec::new()),
            }),
            options,
            types: PhantomData,
        }
    }

    /// Applies `input` once (retrying under its session as needed) and returns its output.
    pub async fn write(&self, input: I) -> Result<O, Error> {
        let mut session = {
            let mut idle = lock(&self.shared.sessions);
            idle.retain(|session| session.used.elapsed() < SESSION_IDLE_MAX);
            idle.pop()
        }
        .unwrap_or_else(|| Session { client: random_id(), next: 1, used: Instant::now() });
        let sequence = session.next;
        let client = session.client;
        let input = &input;
        let outcome = self
            .call_attempts(
                |id, first| match first {
                    // No earlier attempt can be in the log: the replica may refuse this one
                    // for good before proposing it.
                    true => ClientMessage::<I, Q>::WriteFirst {
                        id,
                        client,
                        sequence,
                        input: input.clone(),
                    },
                    false => {
                        ClientMessage::<I, Q>::Write { id, client, sequence, input: input.clone() }
                    }
                },
                |answer| match answer {
                    ServerMessage::Done { output, .. } => Ok((output, true)),
                    ServerMessage::Denied { output, .. } => Ok((output, false)),
                    _ => Err(Error::Malformed("a write was answered with something else".into())),
                },
            )
            .await;
        match outcome {
            Ok((output, applied)) => {
                // A denied request took no number (the next request may have it) and left
                // the session as idle as it was.
                if applied {
                    session.next += 1;
                    session.used = Instant::now();
                }
                lock(&self.shared.sessions).push(session);
                Ok(output)
            }
            // After anything else the session's state is unknown (the request may yet
            // apply): it is dropped, and a new one is started for the next request.
            Err(error) => Err(error),
        }
    }

    /// The cluster's members, or changes them (a change goes to the leader and is made once,
    /// however often it is retried); answers with the members as the change leaves them.
    pub async fn members(&self, request: MemberRequest) -> Result<Vec<MemberInfo>, Error> {
        let session = Session { client: random_id(), next: 1, used: Instant::now() };
        self.call_for(
            |id| {
                self.with_credential(ClientMessage::<I, Q>::Members {
                    id,
                    client: session.client,
                    sequence: session.next,
                    request: request.clone(),
                })
            },
            |answer| match answer {
                ServerMessage::Members { members, .. } => Ok(members),
                _ => Err(Error::Malformed("not a member list".to_string())),
            },
        )
        .await
    }

    /// Asks the leader for an audit action: for a check, the index of the digest point it
    /// placed (every replica reports its state digest there); for a repair, 0.
    pub async fn audit(&self, request: AuditRequest) -> Result<u64, Error> {
        self.call_for(
            |id| {
                self.with_credential(ClientMessage::<I, Q>::Audit { id, request: request.clone() })
            },
            |answer| match answer {
                ServerMessage::Audit { index, .. } => Ok(index),
                _ => Err(Error::Malformed("not an audit answer".to_string())),
            },
        )
        .await
    }

    /// `message` with this client's credential, if it has one.
    fn with_credential(&self, message: ClientMessage<I, Q>) -> ClientMessage<I, Q> {
        let Some(token) = &self.options.token else { return message };
        match AdminRequest::from_message(message) {
            Ok(request) => ClientMessage::Authenticated { token: token.clone(), request },
            Err(message) => *message,
        }
    }

    /// Answers `query` with the client's default consistency.
    pub async fn read(&self, query: Q) -> Result<O, Error> {
        self.read_with(query, self.options.consistency).await
    }

    /// Answers `query` with `consistency`.
    pub async fn read_with(&self, query: Q, consistency: ReadConsistency) -> Result<O, Error> {
        self.call(|id| ClientMessage::<I, Q>::Read { id, query: query.clone(), consistency }).await
    }

    /// The status of the replica this client is connected to (connecting if needed), with
    /// the digest of its state.
    pub async fn status(&self) -> Result<ReplicaStatus, Error> {
        self.status_with(true).await
    }

    /// The status, with the state's digest only if `digest` (computing it reads the whole
    /// state: leave it out when polling).
    pub async fn status_with(&self, digest: bool) -> Result<ReplicaStatus, Error> {
        if self.shared.endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < self.options.timeout {
            let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            match self.attempt(ClientMessage::<I, Q>::Status { id, digest }, id).await {
                Attempt::Answer(ServerMessage::Status { status, .. }) => return Ok(*status),
                Attempt::Answer(_) => return Err(Error::Malformed("not a status".to_string())),
                Attempt::Again(reason) => {
                    last = reason;
                    self.move_on(None).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        Err(Error::Timeout { waited: started.elapsed(), last })
    }

    async fn call(&self, make: impl Fn(u64) -> ClientMessage<I, Q>) -> Result<O, Error> {
        self.call_for(make, |answer| match answer {
            ServerMessage::Done { output, .. } | ServerMessage::Denied { output, .. } => Ok(output),
            _ => Err(Error::Malformed("a request was answered with something else".to_string())),
        })
        .await
    }

    /// Sends a request until it is answered (following the leader, retrying what may be
    /// retried), and makes of the answer what `accept` does.
    async fn call_for<T>(
        &self,
        make: impl Fn(u64) -> ClientMessage<I, Q>,
        accept: impl Fn(ServerMessage<O>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.call_attempts(|id, _| make(id), accept).await
    }

    /// [`Client::call_for`], telling `make` whether no earlier attempt can have been proposed
    /// (every earlier one was refused by a replica that does not lead).
    async fn call_attempts<T>(
        &self,
        make: impl Fn(u64, bool) -> ClientMessage<I, Q>,
        accept: impl Fn(ServerMessage<O>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        if self.shared.endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let started = Instant::now();
        let mut last = String::new();
        let mut backoff = Duration::from_millis(10);
        let mut unsent = true;
        while started.elapsed() < self.options.timeout {
            let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            let message = make(id, unsent);
            let reads = matches!(message, ClientMessage::Read { .. });
            let outcome = self.attempt(message, id).await;
            if !matches!(
                outcome,
                Attempt::Answer(ServerMessage::Refused {
                    error: ClientError::NotLeader { .. },
                    ..
                })
            ) {
                unsent = false;
            }
            let again = match outcome {
                Attempt::Answer(ServerMessage::Refused { error, .. }) => match error {
                    // A client that stays asks its replica again: a read forwarded to a leader
                    // that changed or had too many, or anything during an election. A write
                    // there is for another replica to take.
                    ClientError::NotLeader { leader: Some(leader), .. }
                        if self.options.stay && !reads =>
                    {
                        return Err(Error::NotLeader { leader });
                    }
                    ClientError::NotLeader { leader, .. } if self.options.stay => match leader {
                        Some(leader) => format!("replica {leader} leads"),
                        None => "no leader yet".to_string(),
                    },
                    ClientError::NotLeader { leader, address } => {
                        let moved = self.move_on(address.as_deref()).await;
                        if moved {
                            backoff = Duration::from_millis(10);
                            continue;
                        }
                        match leader {
                            Some(leader) => format!("replica {leader} leads"),
                            None => "no leader yet".to_string(),
                        }
                    }
                    ClientError::Retry(reason) | ClientError::Unavailable(reason) => reason,
                    ClientError::Stale => return Err(Error::Stale),
                    ClientError::TooLarge { bytes, max } => {
                        return Err(Error::TooLarge { bytes, max })
                    }
                    ClientError::Malformed(reason) => return Err(Error::Malformed(reason)),
                    ClientError::Rejected(reason) => return Err(Error::Rejected(reason)),
                },
                Attempt::Answer(answer) => return accept(answer),
                Attempt::Again(reason) => {
                    self.move_on(None).await;
                    reason
                }
            };
            last = again;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        Err(Error::Timeout { waited: started.elapsed(), last })
    }

    async fn attempt(&self, message: ClientMessage<I, Q>, id: u64) -> Attempt<O> {
        let connection = match self.connection().await {
            Ok(connection) => connection,
            Err(reason) => return Attempt::Again(reason),
        };
        // However the attempt ends (answered, timed out, failed, or dropped by its caller),
        // its waiter goes.
        let _forget = Forget { pending: &connection.pending, id };
        // The whole attempt, handing the request over included (a replica in this process
        // whose queue is full takes it only when there is room), has one deadline.
        let deadline = tokio::time::Instant::now() + self.options.attempt_timeout;
        let late = || Attempt::Again(format!("{} did not answer in time", connection.endpoint));
        let (answer, _room) =
            match tokio::time::timeout_at(deadline, connection.send(id, message)).await {
                Ok(Ok(sent)) => sent,
                Ok(Err(reason)) => return Attempt::Again(reason),
                Err(_) => return late(),
            };
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(answer)) => Attempt::Answer(answer),
            Ok(Err(_)) => {
                Attempt::Again(lock(&connection.lost).clone().unwrap_or_else(|| {
                    format!("the connection to {} was lost", connection.endpoint)
                }))
            }
            Err(_) => late(),
        }
    }

    /// The connection in use, opening one to the next endpoint if there is none.
    async fn connection(&self) -> Result<Arc<Connection<I, Q, O>>, String> {
        let mut current = self.shared.current.lock().await;
        if let Some(connection) = &current.0 {
            if connection.alive.load(Ordering::Acquire) {
                return Ok(connection.clone());
            }
        }
        let endpoints = &self.shared.endpoints;
        let endpoint = endpoints[current.1 % endpoints.len()].clone();
        match self.open(&endpoint).await {
            Ok(connection) => {
                let connection = Arc::new(connection);
                current.0 = Some(connection.clone());
                Ok(connection)
            }
            Err(reason) => {
                current.0 = None;
                current.1 = (current.1 + 1) % endpoints.len();
                Err(reason)
            }
        }
    }

    /// Leaves the current replica: for `leader` if given (true if that is a change), else for
    /// the next endpoint.
    async fn move_on(&self, leader: Option<&str>) -> bool {
        let mut current = self.shared.current.lock().await;
        let here = current.0.as_ref().map(|connection| connection.endpoint.clone());
        match leader {
            Some(leader) if here.as_deref() != Some(leader) => {
                let endpoints = &self.shared.endpoints;
                match endpoints.iter().position(|endpoint| endpoint == leader) {
                    Some(index) => current.1 = index,
                    // A leader this client was not told of: connect to it all the same.
                    None => {
                        drop(current);
                        return self.connect_to(leader).await;
                    }
                }
                current.0 = None;
                true
            }
            Some(_) => false,
            None => {
                if let Some(here) = here {
                    let endpoints = &self.shared.endpoints;
                    let index = endpoints.iter().position(|endpoint| *endpoint == here);
                    current.1 = index.map_or(0, |index| index + 1) % endpoints.len().max(1);
                }
                current.0 = None;
                false
            }
        }
    }

    async fn connect_to(&self, endpoint: &str) -> bool {
        let Ok(connection) = self.open(endpoint).await else {
            return false;
        };
        let mut current = self.shared.current.lock().await;
        current.0 = Some(Arc::new(connection));
        true
    }
}

impl<I, Q, O> Client<I, Q, O>
where
    I: Serialize,
    Q: Serialize,
    O: DeserializeOwned + Send + 'static,
{
    /// A connection to `endpoint`: in process if it is the local replica's.
    async fn open(&self, endpoint: &str) -> Result<Connection<I, Q, O>, String> {
        match &self.shared.local {
            Some(local) if local.endpoint == endpoint => Ok(Connection::in_process(local)),
            _ => {
                Connection::open(
                    endpoint,
                    self.options.attempt_timeout,
                    self.options.tls.as_deref(),
                )
                .await
            }
        }
    }
}

/// A random nonzero id (sessions, lease ids, member ids): different on every call, in every
/// process, with overwhelming probability.
pub fn random_id() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}
