//! The gateway: etcd's v3 KV, Maintenance and Cluster services, answered by the replicated
//! key-value store through lockstep's native client.
//!
//! Beside its replica (as `lockstep serve` runs it) the gateway reaches that replica in
//! process ([`LocalReplica`]: requests handed over as values, progress published by the
//! replica thread) and the other replicas, the leader among them, over the network.
//!
//! Each replica runs a gateway. Writes and linearizable reads go to the cluster (the client
//! finds the leader and retries under a session, so a write is applied once); serializable
//! reads and status are answered by this replica alone, as etcd's are. Response headers carry
//! the cluster id, this member's id, the store's revision after the request and the raft term.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lockstep_client::{
    Client, ClientOptions, Error as ClientError, InProcess, MemberInfo, MemberRequest, Progress,
    ReadConsistency, ReplicaStatus,
};
use lockstep_kv::{self as kv, Answer, KvError, Request, Response};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use crate::lessor::Lessor;
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb;
use crate::rpc::cluster_server::Cluster;
use crate::rpc::k_v_server::KV;
use crate::rpc::lease_client::LeaseClient;
use crate::rpc::maintenance_server::Maintenance;
use tonic::transport::Channel;

/// The etcd API level this gateway speaks (what `Status` reports as the version).
pub const API_VERSION: &str = "3.5.0";

/// The largest request accepted, as etcd's default `--max-request-bytes` (1.5 MiB).
pub const REQUEST_BYTES_MAX: usize = 3 << 19;

/// The largest gRPC message taken: a request plus 512 KiB, as etcd's.
pub const GRPC_RECEIVE_MAX: usize = REQUEST_BYTES_MAX + (512 << 10);

/// The largest message the gRPC layer decodes at all (bigger ones are refused unread).
pub const GRPC_DECODE_MAX: usize = 64 << 20;

/// Refuses a request larger than etcd would take, as etcd does: over the message limit with
/// gRPC's resource-exhausted error, over the request limit with etcd's own.
pub(crate) fn check_size(request: &impl prost::Message) -> Result<(), Status> {
    let length = request.encoded_len();
    if length > GRPC_RECEIVE_MAX {
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({length} vs. {GRPC_RECEIVE_MAX})"
        )));
    }
    if length > REQUEST_BYTES_MAX {
        return Err(Status::invalid_argument("etcdserver: request is too large"));
    }
    Ok(())
}

/// A member the gateway can reach (the member list itself comes from the cluster).
#[derive(Clone, Debug)]
pub struct GatewayMember {
    /// The replica's id.
    pub id: u64,
    /// Where lockstep's native clients reach it.
    pub client: String,
}

/// What a gateway needs to know.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The cluster's id.
    pub cluster_id: u64,
    /// This replica's id.
    pub member_id: u64,
    /// Every member.
    pub members: Vec<GatewayMember>,
    /// How long a request may take before it fails as unavailable.
    pub timeout: Duration,
    /// The replica this gateway runs beside, when it runs in the same process (`None`: the
    /// gateway reaches its replica over the network and polls what it needs, and hands every
    /// lease keep-alive to the leader's gateway).
    pub local: Option<LocalReplica>,
    /// A new leader gives a lease that may have been renewed in a deposed leader's memory its
    /// whole TTL plus this (time for that leader to learn it was deposed, with a margin), and
    /// a deadline an earlier leader recorded this much more (its clock may differ). See
    /// [`crate::lessor`].
    pub lease_extension: Duration,
    /// How often the leader records in the log what remains of leases renewed in its memory.
    pub lease_checkpoint_every: Duration,
    /// How long a quorum's confirmation that this replica leads serves lease renewals: at most
    /// a quarter of `lease_extension`, and less than the shortest election timeout (voters
    /// that confirmed a leader refuse other candidates that long, with check-quorum), so that
    /// a deposed leader's answers are at most that stale.
    pub leader_confirmed_for: Duration,
    /// TLS for what the gateway dials: the members' client ports and the leader's etcd port
    /// (`None`: plaintext).
    pub tls: Option<GatewayTls>,
    /// Watchers open at once on this member; one more is refused (canceled at creation).
    pub max_watchers: usize,
    /// Watchers open at once on one Watch stream.
    pub max_watchers_per_stream: usize,
    /// Operations in one branch of a transaction (etcd's `--max-txn-ops`); a longer one is
    /// refused here, before it takes a log entry.
    pub max_txn_ops: usize,
    /// The space quota in bytes of the store as it accounts its size (etcd's
    /// `--quota-backend-bytes`; 0: none): past it, the leader raises a `NoSpace` alarm through
    /// the log, and every member refuses what would grow the store until it is cleared.
    pub quota_bytes: u64,
    /// The tokens it issues.
    pub tokens: TokenConfig,
    /// Bytes of large responses (ranges, transactions) held at once, built and not yet read
    /// by their clients (0: no bound); see `budget.rs`.
    pub response_bytes_max: u64,
}

/// The tokens a member issues when a client authenticates.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    /// How long a token lives (etcd's `--auth-token-ttl`).
    pub ttl: Duration,
    /// Sign JWTs with this Ed25519 key (etcd's `--auth-token jwt`; every member must have the
    /// same); `None`: tokens MAC'd under the auth store's own key.
    pub jwt: Option<std::sync::Arc<ed25519_dalek::SigningKey>>,
}

impl Default for TokenConfig {
    fn default() -> TokenConfig {
        TokenConfig { ttl: crate::auth::TOKEN_TTL, jwt: None }
    }
}

/// How the gateway dials other members over TLS.
#[derive(Clone, Debug)]
pub struct GatewayTls {
    /// For the members' native client ports (re-read when its files change).
    pub members: std::sync::Arc<lockstep_tls::Reloading<lockstep_tls::rustls::ClientConfig>>,
    /// The authority that the leader's etcd port's certificate comes from (PEM).
    pub ca_file: std::path::PathBuf,
    /// This member's certificate and key, presented to the leader's etcd port.
    pub cert_file: std::path::PathBuf,
    /// See `cert_file`.
    pub key_file: std::path::PathBuf,
}

/// The gateway's replica in its own process.
#[derive(Clone, Debug)]
pub struct LocalReplica {
    /// Requests reach it as values: no socket, no encoding.
    pub link: InProcess<Request, Request, Answer>,
    /// Its applied index, term and leader, published by its replica thread after each turn
    /// that changed them: watchers wait on it, headers and leadership read it.
    pub progress: tokio::sync::watch::Receiver<Progress>,
}

type KvClient = Client<Request, Request, Answer>;

pub(crate) struct Shared {
    config: GatewayConfig,
    /// The cluster: leader discovery, sessions, retries.
    cluster: KvClient,
    /// This replica alone: serializable reads and status.
    local: KvClient,
    /// The latest raft term seen here, for headers.
    term: AtomicU64,
    /// Lease deadlines promised while this replica leads.
    lessor: std::sync::Mutex<Lessor>,
    /// Renewals hold it shared, a lease checkpoint exclusively (see `checkpoint_leases`).
    lease_gate: tokio::sync::RwLock<()>,
    /// The term this replica was last confirmed leader in by a quorum, and when the round
    /// that confirmed it started.
    confirmed: tokio::sync::Mutex<Option<(u64, std::time::Instant)>>,
    /// A channel to the leader's etcd port, where keep-alives and what only the leader's own
    /// process may propose go while this replica does not lead (with the leader's id: a new
    /// leader needs a new channel).
    leader_channel: tokio::sync::Mutex<Option<(u64, Channel)>>,
    /// Watchers open on this member.
    pub(crate) watchers_open: Arc<std::sync::atomic::AtomicUsize>,
    /// Whether this member's replica last showed a NOSPACE alarm, and the store's size then
    /// (refreshed every 500 ms): requests that would grow the store are refused before they
    /// take a log entry.
    pub(crate) space: std::sync::Mutex<(bool, u64)>,
    /// Tokens issued for certificates, failed authentications, password hashing.
    auth: crate::auth::AuthState,
    /// Room for large responses.
    responses: crate::budget::ResponseBudget,
}

/// The gateway; clone it into each service.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    /// A gateway for member `config.member_id`.
    pub fn new(config: GatewayConfig) -> Gateway {
        let endpoints: Vec<String> = config.members.iter().map(|m| m.client.clone()).collect();
        let own = config
            .members
            .iter()
            .find(|member| member.id == config.member_id)
            .map(|member| member.client.clone())
            .unwrap_or_default();
        let options = ClientOptions {
            timeout: config.timeout,
            attempt_timeout: config.timeout.min(Duration::from_secs(3)),
            consistency: ReadConsistency::Linearizable,
            tls: config.tls.as_ref().map(|tls| tls.members.clone()),
            token: None,
            stay: false,
        };
        // The local client never follows a leader elsewhere: what it asks (password hashes,
        // tokens, the members' own requests) only this replica's own process may ask it.
        let local_options =
            ClientOptions { consistency: ReadConsistency::Follower, stay: true, ..options.clone() };
        let (cluster, local) = match &config.local {
            Some(local) => (
                Client::with_local(endpoints, options, local.link.clone()),
                Client::with_local(vec![own], local_options, local.link.clone()),
            ),
            None => (Client::new(endpoints, options), Client::new(vec![own], local_options)),
        };
        let lessor = Lessor::new(
            config.lease_extension.as_millis() as u64,
            config.lease_checkpoint_every.as_millis() as u64,
        );
        Gateway {
            shared: Arc::new(Shared {
                cluster,
                local,
                term: AtomicU64::new(0),
                lessor: std::sync::Mutex::new(lessor),
                lease_gate: tokio::sync::RwLock::new(()),
                confirmed: tokio::sync::Mutex::new(None),
                leader_channel: tokio::sync::Mutex::new(None),
                watchers_open: Arc::default(),
                space: std::sync::Mutex::new((false, 0)),
                auth: crate::auth::AuthState::default(),
                responses: crate::budget::ResponseBudget::new(config.response_bytes_max),
                config,
            }),
        }
    }

    /// Keeps the raft term for headers fresh (every 100 ms) until the gateway is dropped; a
    /// gateway beside its replica reads the published term instead.
    pub fn start_refreshing(&self) {
        if self.shared.config.local.is_some() {
            return;
        }
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            loop {
                let Some(shared) = weak.upgrade() else { return };
                if let Ok(status) = shared.local.status_with(false).await {
                    shared.term.store(status.term, Ordering::Relaxed);
                }
                drop(shared);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    /// Refuses a request that would grow the store by about `cost` bytes when a NOSPACE
    /// alarm is raised or the store would pass the quota (as etcd's quota check before it
    /// proposes): it takes no log entry. Applying refuses again while the alarm is raised.
    pub(crate) fn check_space(&self, cost: u64) -> Result<(), Status> {
        let quota = self.shared.config.quota_bytes;
        if quota == 0 {
            return Ok(());
        }
        let (alarmed, size) =
            *self.shared.space.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if alarmed {
            metrics::counter!("lockstep_writes_refused_nospace_total").increment(1);
            return Err(kv_status(&KvError::NoSpace));
        }
        if size.saturating_add(cost) > quota {
            self.found_no_room();
            return Err(kv_status(&KvError::NoSpace));
        }
        Ok(())
    }

    /// As etcd: the member that finds no room raises the alarm through the log (once: its
    /// view says raised from now on, until its next look at the store).
    fn found_no_room(&self) {
        metrics::counter!("lockstep_writes_refused_nospace_total").increment(1);
        if self.shared.config.quota_bytes == 0 {
            return;
        }
        let (alarmed, size) =
            *self.shared.space.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if alarmed {
            return;
        }
        self.set_space(true, size);
        let gateway = self.clone();
        tokio::spawn(async move { gateway.raise_nospace().await });
    }

    /// Raises the NOSPACE alarm through the log, in this member's name.
    pub(crate) async fn raise_nospace(&self) {
        self.raise_alarm(kv::AlarmKind::NoSpace, self.shared.config.member_id).await;
    }

    /// Raises `alarm` for `member` through the log (with authentication on, with a member's
    /// token: a member that does not lead sends it to the leader).
    pub(crate) async fn raise_alarm(&self, alarm: kv::AlarmKind, member: u64) {
        let raise =
            Request::Alarm(kv::AlarmRequest { action: kv::AlarmAction::Activate, member, alarm });
        let raise = match self.member_token().await {
            Some(token) => Request::As(Box::new(kv::Authorized { token, request: raise })),
            None => raise,
        };
        // Through the leader, wherever it is.
        let raised = self.shared.cluster.write(raise).await.map_err(client_status);
        if let Err(error) = raised.and_then(check) {
            tracing::debug!("raising the {alarm:?} alarm failed: {error}");
        }
    }

    pub(crate) fn set_space(&self, alarmed: bool, size: u64) {
        *self.shared.space.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            (alarmed, size);
    }

    pub(crate) fn config(&self) -> &GatewayConfig {
        &self.shared.config
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<Shared> {
        Arc::downgrade(&self.shared)
    }

    pub(crate) fn upgrade(weak: &std::sync::Weak<Shared>) -> Option<Gateway> {
        weak.upgrade().map(|shared| Gateway { shared })
    }

    /// The term in which this replica leads, as its replica thread last published (`None` if
    /// it does not lead, or the gateway does not run beside it).
    pub(crate) fn leading_term(&self) -> Option<u64> {
        let local = self.shared.config.local.as_ref()?;
        if local.progress.has_changed().is_err() {
            return None;
        }
        let progress = local.progress.borrow();
        (progress.leader == Some(self.shared.config.member_id)).then_some(progress.term)
    }

    /// A linearizable read that this replica answered as leader in `term`. A replica leads at
    /// most once in a term, so if it led in `term` when the read was handed over and still does
    /// once it is answered, it led throughout, and the read was confirmed by a quorum in
    /// `term` (a follower's read would have been answered by another leader: refused here).
    pub(crate) async fn read_as_leader(
        &self,
        term: u64,
        request: Request,
    ) -> Result<Answer, Status> {
        if self.leading_term() != Some(term) {
            return Err(not_leading());
        }
        let answer = self
            .shared
            .local
            .read_with(request, ReadConsistency::Linearizable)
            .await
            .map_err(client_status)?;
        if self.leading_term() != Some(term) {
            return Err(not_leading());
        }
        check(answer)
    }

    /// The lessor, locked.
    pub(crate) fn lessor(&self) -> std::sync::MutexGuard<'_, Lessor> {
        // A panic while it was held left nothing half-changed that matters: every change is
        // one insert or one clear.
        self.shared.lessor.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes sure a quorum confirmed this replica as leader in `term` in a round that started
    /// less than `leader_confirmed_for` ago (one round serves every caller in that time;
    /// callers meanwhile wait for the one in progress); returns when that round started. A
    /// promise made while it is fresh ([`Gateway::confirmation_fresh`]) is safe: a leader
    /// elected after this one cannot have been elected before the round started, and gives
    /// renewed leases their whole TTL from its election plus the extension.
    pub(crate) async fn confirm_leadership(&self, term: u64) -> Result<std::time::Instant, Status> {
        let mut confirmed = self.shared.confirmed.lock().await;
        if let Some((at_term, started)) = *confirmed {
            // Reused for the first half of its life, so that it is still fresh when the
            // caller makes its promise.
            if at_term == term && started.elapsed() < self.shared.config.leader_confirmed_for / 2 {
                return Ok(started);
            }
        }
        let started = std::time::Instant::now();
        self.read_as_leader(term, Request::Revisions).await?;
        *confirmed = Some((term, started));
        Ok(started)
    }

    /// Whether a confirmation whose round started at `started` still serves.
    pub(crate) fn confirmation_fresh(&self, started: std::time::Instant) -> bool {
        started.elapsed() < self.shared.config.leader_confirmed_for
    }

    /// The next renewal confirms leadership with a round of its own.
    pub(crate) async fn forget_confirmation(&self) {
        *self.shared.confirmed.lock().await = None;
    }

    /// How long a request may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.shared.config.timeout
    }

    /// Renewals hold it shared, a lease checkpoint exclusively.
    pub(crate) fn lease_gate(&self) -> &tokio::sync::RwLock<()> {
        &self.shared.lease_gate
    }

    /// A client of the leader's Lease service (its etcd address from the member list).
    pub(crate) async fn leader_leases(&self) -> Result<LeaseClient<Channel>, Status> {
        Ok(LeaseClient::new(self.leader_channel().await?))
    }

    /// The leader this member's replica knows of.
    pub(crate) async fn leader(&self) -> Result<Option<u64>, Status> {
        Ok(match &self.shared.config.local {
            Some(local) => local.progress.borrow().leader,
            None => self.local_status().await?.leader,
        })
    }

    /// A channel to the leader's etcd port (its address from the member list).
    pub(crate) async fn leader_channel(&self) -> Result<Channel, Status> {
        let leader =
            self.leader().await?.ok_or_else(|| Status::unavailable("etcdserver: no leader"))?;
        let mut cached = self.shared.leader_channel.lock().await;
        if let Some((id, channel)) = cached.as_ref() {
            if *id == leader {
                return Ok(channel.clone());
            }
        }
        let members =
            self.shared.local.members(MemberRequest::List).await.map_err(client_status)?;
        let address = members
            .iter()
            .find(|member| member.id == leader)
            .and_then(|member| member.etcd.clone())
            .ok_or_else(|| {
                Status::unavailable(format!(
                    "etcdserver: the leader (member {leader:x}) serves no etcd API"
                ))
            })?;
        let scheme = if self.shared.config.tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|error| Status::internal(format!("the leader's etcd address: {error}")))?
            .connect_timeout(self.shared.config.timeout);
        if let Some(tls) = &self.shared.config.tls {
            endpoint = endpoint.tls_config(grpc_tls(tls, &address)?).map_err(|error| {
                Status::unavailable(format!("TLS to the leader's etcd port: {error}"))
            })?;
        }
        let channel = endpoint.connect_lazy();
        *cached = Some((leader, channel.clone()));
        Ok(channel)
    }

    /// A place for one more watcher, unless this member or `stream_watchers` (the watchers
    /// of one stream) is at its limit: then why not.
    pub(crate) fn watcher_place(&self, stream_watchers: usize) -> Result<WatcherPlace, String> {
        let config = &self.shared.config;
        if stream_watchers >= config.max_watchers_per_stream {
            metrics::counter!("lockstep_watchers_refused_total").increment(1);
            return Err(format!(
                "etcdserver: too many watchers on this stream ({}; the limit: \
                 max_watchers_per_stream)",
                config.max_watchers_per_stream
            ));
        }
        let open = &self.shared.watchers_open;
        let taken = open.fetch_add(1, Ordering::AcqRel);
        let place = WatcherPlace(open.clone());
        if taken >= config.max_watchers {
            metrics::counter!("lockstep_watchers_refused_total").increment(1);
            return Err(format!(
                "etcdserver: too many watchers on this member ({}; the limit: max_watchers)",
                config.max_watchers
            ));
        }
        Ok(place)
    }

    /// The replica's published progress, when the gateway runs beside it.
    pub(crate) fn progress(&self) -> Option<tokio::sync::watch::Receiver<Progress>> {
        self.shared.config.local.as_ref().map(|local| local.progress.clone())
    }

    pub(crate) fn header(&self, revision: u64) -> Option<pb::ResponseHeader> {
        let term = match &self.shared.config.local {
            Some(local) => local.progress.borrow().term,
            None => self.shared.term.load(Ordering::Relaxed),
        };
        Some(pb::ResponseHeader {
            cluster_id: self.shared.config.cluster_id,
            member_id: self.shared.config.member_id,
            revision: revision as i64,
            raft_term: term,
        })
    }

    pub(crate) async fn write(&self, request: Request) -> Result<Answer, Status> {
        let answer = self.shared.cluster.write(request).await.map_err(client_status)?;
        if answer.response == Response::Error(KvError::NoSpace) {
            // The leader found no room before this member's view of the store did.
            self.found_no_room();
        }
        check(answer)
    }

    pub(crate) async fn read(
        &self,
        request: Request,
        serializable: bool,
    ) -> Result<Answer, Status> {
        let answer = if serializable {
            self.shared.local.read(request).await
        } else {
            self.shared.cluster.read(request).await
        };
        check(answer.map_err(client_status)?)
    }

    /// This replica's current revision, in the answer's `revision` (a cheap read).
    pub(crate) async fn current(&self) -> Result<Answer, Status> {
        self.read(Request::Revisions, true).await
    }

    /// A read whose answer, if large, has room in the member's budget (see `budget.rs`): an
    /// answer that finds none is dropped while it waits for room, then read again, so that
    /// what waits holds no memory.
    pub(crate) async fn read_in_budget(
        &self,
        caller: &crate::auth::Caller,
        request: Request,
        serializable: bool,
    ) -> Result<(Answer, Option<crate::budget::Held>), Status> {
        let answer = self.read_as(caller, request.clone(), serializable).await?;
        let bytes = response_bytes(&answer.response);
        match self.shared.responses.try_hold(bytes) {
            Ok(held) => return Ok((answer, held)),
            Err(Some(refused)) => return Err(refused),
            Err(None) => {}
        }
        drop(answer);
        let held = self.shared.responses.hold(bytes, self.shared.config.timeout).await?;
        let answer = self.read_as(caller, request, serializable).await?;
        Ok((answer, held))
    }

    /// Room in the member's budget for the gRPC response to `response` (see `budget.rs`).
    pub(crate) async fn hold_room(
        &self,
        response: &Response,
    ) -> Result<Option<crate::budget::Held>, Status> {
        let bytes = response_bytes(response);
        self.shared.responses.hold(bytes, self.shared.config.timeout).await
    }

    /// A write that only this member's own process may propose (a lease's bookkeeping, an
    /// alarm it raises, `auth enable`): handed to its replica, which must lead.
    pub(crate) async fn write_local(&self, request: Request) -> Result<Answer, Status> {
        let answer = self.shared.local.write(request).await.map_err(client_status)?;
        check(answer)
    }

    /// A read of this replica's state, with the store's refusals as they are.
    pub(crate) async fn read_local(&self, request: Request) -> Result<Answer, Status> {
        self.shared.local.read(request).await.map_err(client_status)
    }

    /// A linearizable read answered by this replica, with the store's refusals as they are.
    pub(crate) async fn read_local_linearizable(&self, request: Request) -> Result<Answer, Status> {
        self.shared
            .local
            .read_with(request, ReadConsistency::Linearizable)
            .await
            .map_err(client_status)
    }

    pub(crate) fn auth_state(&self) -> &crate::auth::AuthState {
        &self.shared.auth
    }

    pub(crate) async fn local_status(&self) -> Result<ReplicaStatus, Status> {
        let status = self.shared.local.status_with(false).await.map_err(client_status)?;
        self.shared.term.store(status.term, Ordering::Relaxed);
        Ok(status)
    }
}

/// What a request that only the leader answers gets from a member that does not lead (etcd
/// clients retry it).
pub(crate) fn not_leading() -> Status {
    Status::unavailable("etcdserver: not leader")
}

/// A refused answer as etcd's error.
fn check(answer: Answer) -> Result<Answer, Status> {
    match &answer.response {
        Response::Error(error) => Err(kv_status(error)),
        _ => Ok(answer),
    }
}

/// The gRPC status etcd answers for each refusal (codes and messages as etcd's).
pub fn kv_status(error: &KvError) -> Status {
    match error {
        KvError::Compacted { .. } => {
            Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
        }
        KvError::FutureRevision { .. } => {
            Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
        }
        KvError::KeyNotFound => Status::invalid_argument("etcdserver: key not found"),
        KvError::LeaseNotFound => Status::not_found("etcdserver: requested lease not found"),
        KvError::LeaseExists => Status::failed_precondition("etcdserver: lease already exists"),
        KvError::LeaseProvided => Status::invalid_argument("etcdserver: lease is provided"),
        KvError::LeaseInvalid => Status::out_of_range("etcdserver: too large lease TTL"),
        KvError::DuplicateKey => {
            Status::invalid_argument("etcdserver: duplicate key given in txn request")
        }
        KvError::EmptyKey => Status::invalid_argument("etcdserver: key is not provided"),
        KvError::ValueProvided => Status::invalid_argument("etcdserver: value is provided"),
        KvError::TooManyOps { .. } => {
            Status::invalid_argument("etcdserver: too many operations in txn request")
        }
        KvError::NotReadOnly => Status::internal("etcdserver: a write was served as a read"),
        KvError::NoSpace => Status::resource_exhausted("etcdserver: mvcc: database space exceeded"),
        KvError::Auth(error) => crate::auth::auth_status(error),
        KvError::TooManyLeases { .. } => Status::resource_exhausted(format!("etcdserver: {error}")),
    }
}

fn client_status(error: ClientError) -> Status {
    match error {
        ClientError::Timeout { .. } => Status::unavailable("etcdserver: request timed out"),
        ClientError::TooLarge { .. } => {
            Status::invalid_argument("etcdserver: request is too large")
        }
        ClientError::Stale => Status::unavailable("etcdserver: request timed out"),
        ClientError::Malformed(reason) => Status::internal(reason),
        ClientError::NoEndpoints => Status::unavailable("etcdserver: no leader"),
        ClientError::NotLeader { .. } => not_leading(),
        ClientError::Rejected(reason) => {
            Status::failed_precondition(format!("etcdserver: {reason}"))
        }
    }
}

fn revision(value: i64) -> u64 {
    value.max(0) as u64
}

pub(crate) fn kv_out(kv: kv::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key.to_vec(),
        create_revision: kv.create_revision as i64,
        mod_revision: kv.mod_revision as i64,
        version: kv.version as i64,
        value: kv.value.to_vec(),
        lease: kv.lease,
    }
}

fn range_in(request: pb::RangeRequest) -> kv::RangeRequest {
    use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
    kv::RangeRequest {
        range: kv::KeyRange {
            key: Bytes::from(request.key),
            range_end: Bytes::from(request.range_end),
        },
        limit: request.limit.max(0) as u64,
        revision: revision(request.revision),
        keys_only: request.keys_only,
        count_only: request.count_only,
        sort_order: match SortOrder::try_from(request.sort_order) {
            Ok(SortOrder::Ascend) => kv::SortOrder::Ascend,
            Ok(SortOrder::Descend) => kv::SortOrder::Descend,
            _ => kv::SortOrder::None,
        },
        sort_target: match SortTarget::try_from(request.sort_target) {
            Ok(SortTarget::Version) => kv::SortTarget::Version,
            Ok(SortTarget::Create) => kv::SortTarget::Create,
            Ok(SortTarget::Mod) => kv::SortTarget::Mod,
            Ok(SortTarget::Value) => kv::SortTarget::Value,
            _ => kv::SortTarget::Key,
        },
        min_mod_revision: revision(request.min_mod_revision),
        max_mod_revision: revision(request.max_mod_revision),
        min_create_revision: revision(request.min_create_revision),
        max_create_revision: revision(request.max_create_revision),
    }
}

fn put_in(request: pb::PutRequest) -> kv::PutRequest {
    kv::PutRequest {
        key: Bytes::from(request.key),
        value: Bytes::from(request.value),
        prev_kv: request.prev_kv,
        ignore_value: request.ignore_value,
        lease: request.lease,
        ignore_lease: request.ignore_lease,
    }
}

fn delete_in(request: pb::DeleteRangeRequest) -> kv::DeleteRequest {
    kv::DeleteRequest {
        range: kv::KeyRange {
            key: Bytes::from(request.key),
            range_end: Bytes::from(request.range_end),
        },
        prev_kv: request.prev_kv,
    }
}

fn compare_in(compare: pb::Compare) -> Result<kv::Compare, Status> {
    use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    let op = match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => kv::CompareOp::Equal,
        Ok(CompareResult::NotEqual) => kv::CompareOp::NotEqual,
        Ok(CompareResult::Greater) => kv::CompareOp::Greater,
        Ok(CompareResult::Less) => kv::CompareOp::Less,
        Err(_) => return Err(Status::invalid_argument("etcdserver: unknown compare result")),
    };
    // What is compared is `target`; the value to compare with is read from the union (its
    // zero value when the union holds another field), as etcd does.
    let union = compare.target_union;
    let number =
        |wanted: fn(&TargetUnion) -> Option<i64>| union.as_ref().and_then(wanted).unwrap_or(0);
    let target = match CompareTarget::try_from(compare.target) {
        Ok(CompareTarget::Version) => kv::CompareTarget::Version(number(|union| match union {
            TargetUnion::Version(version) => Some(*version),
            _ => None,
        })),
        Ok(CompareTarget::Create) => {
            kv::CompareTarget::CreateRevision(number(|union| match union {
                TargetUnion::CreateRevision(revision) => Some(*revision),
                _ => None,
            }))
        }
        Ok(CompareTarget::Mod) => kv::CompareTarget::ModRevision(number(|union| match union {
            TargetUnion::ModRevision(revision) => Some(*revision),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv::CompareTarget::Lease(number(|union| match union {
            TargetUnion::Lease(lease) => Some(*lease),
            _ => None,
        })),
        Ok(CompareTarget::Value) => kv::CompareTarget::Value(match union {
            Some(TargetUnion::Value(value)) => Bytes::from(value),
            _ => Bytes::new(),
        }),
        Err(_) => return Err(Status::invalid_argument("etcdserver: unknown compare target")),
    };
    Ok(kv::Compare {
        range: kv::KeyRange {
            key: Bytes::from(compare.key),
            range_end: Bytes::from(compare.range_end),
        },
        op,
        target,
    })
}

fn operations_in(operations: Vec<pb::RequestOp>) -> Result<Vec<kv::Operation>, Status> {
    use crate::proto::etcdserverpb::request_op::Request as Op;
    operations
        .into_iter()
        .map(|operation| match operation.request {
            Some(Op::RequestRange(range)) => Ok(kv::Operation::Range(range_in(range))),
            Some(Op::RequestPut(put)) => Ok(kv::Operation::Put(put_in(put))),
            Some(Op::RequestDeleteRange(delete)) => Ok(kv::Operation::Delete(delete_in(delete))),
            Some(Op::RequestTxn(_)) => {
                Err(Status::unimplemented("lockstep: nested transactions are not supported yet"))
            }
            None => Err(Status::invalid_argument("etcdserver: empty operation in txn request")),
        })
        .collect()
}

/// About how many bytes a response's encoding takes (keys, values and their metadata).
fn response_bytes(response: &Response) -> u64 {
    let kv_bytes = |kv: &kv::KeyValue| (kv.key.len() + kv.value.len()) as u64 + 48;
    match response {
        Response::Range(range) => range.kvs.iter().map(kv_bytes).sum(),
        Response::Txn(txn) => txn.responses.iter().map(response_bytes).sum(),
        Response::Delete(delete) => delete.prev_kvs.iter().map(kv_bytes).sum(),
        Response::Put(put) => put.prev_kv.as_ref().map_or(0, kv_bytes),
        _ => 0,
    }
}

fn range_out(range: kv::RangeResponse, header: Option<pb::ResponseHeader>) -> pb::RangeResponse {
    pb::RangeResponse {
        header,
        kvs: range.kvs.into_iter().map(kv_out).collect(),
        more: range.more,
        count: range.count as i64,
    }
}

fn put_out(put: kv::PutResponse, header: Option<pb::ResponseHeader>) -> pb::PutResponse {
    pb::PutResponse { header, prev_kv: put.prev_kv.map(kv_out) }
}

fn delete_out(
    delete: kv::DeleteResponse,
    header: Option<pb::ResponseHeader>,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header,
        deleted: delete.deleted as i64,
        prev_kvs: delete.prev_kvs.into_iter().map(kv_out).collect(),
    }
}

fn txn_out(
    txn: kv::TxnResponse,
    header: Option<pb::ResponseHeader>,
    inner: &dyn Fn() -> Option<pb::ResponseHeader>,
) -> pb::TxnResponse {
    use crate::proto::etcdserverpb::response_op::Response as Op;
    let responses = txn
        .responses
        .into_iter()
        .filter_map(|response| {
            let response = match response {
                Response::Range(range) => Op::ResponseRange(range_out(range, inner())),
                Response::Put(put) => Op::ResponsePut(put_out(put, inner())),
                Response::Delete(delete) => Op::ResponseDeleteRange(delete_out(delete, inner())),
                Response::Txn(txn) => Op::ResponseTxn(txn_out(txn, inner(), inner)),
                _ => return None,
            };
            Some(pb::ResponseOp { response: Some(response) })
        })
        .collect();
    pb::TxnResponse { header, succeeded: txn.succeeded, responses }
}

fn unexpected() -> Status {
    Status::internal("lockstep: the store answered with an unexpected response")
}

#[tonic::async_trait]
impl KV for Gateway {
    async fn range(
        &self,
        request: GrpcRequest<pb::RangeRequest>,
    ) -> Result<GrpcResponse<pb::RangeResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        check_size(&request)?;
        let serializable = request.serializable;
        let request = Request::Range(range_in(request));
        let (answer, held) = self.read_in_budget(&caller, request, serializable).await?;
        match answer.response {
            Response::Range(range) => {
                let mut response =
                    GrpcResponse::new(range_out(range, self.header(answer.revision)));
                if let Some(held) = held {
                    response.extensions_mut().insert(held);
                }
                Ok(response)
            }
            _ => Err(unexpected()),
        }
    }

    async fn put(
        &self,
        request: GrpcRequest<pb::PutRequest>,
    ) -> Result<GrpcResponse<pb::PutResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        check_size(&request)?;
        self.check_space(
            (request.key.len() + request.value.len()) as u64 + kv::VERSION_OVERHEAD_BYTES,
        )?;
        let answer = self.write_as(&caller, Request::Put(put_in(request))).await?;
        match answer.response {
            Response::Put(put) => Ok(GrpcResponse::new(put_out(put, self.header(answer.revision)))),
            _ => Err(unexpected()),
        }
    }

    async fn delete_range(
        &self,
        request: GrpcRequest<pb::DeleteRangeRequest>,
    ) -> Result<GrpcResponse<pb::DeleteRangeResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        check_size(&request)?;
        let answer = self.write_as(&caller, Request::Delete(delete_in(request))).await?;
        // Applied: never reported failed for want of room (see `txn`).
        let held = self.hold_room(&answer.response).await.unwrap_or(None);
        match answer.response {
            Response::Delete(delete) => {
                let mut response =
                    GrpcResponse::new(delete_out(delete, self.header(answer.revision)));
                if let Some(held) = held {
                    response.extensions_mut().insert(held);
                }
                Ok(response)
            }
            _ => Err(unexpected()),
        }
    }

    async fn txn(
        &self,
        request: GrpcRequest<pb::TxnRequest>,
    ) -> Result<GrpcResponse<pb::TxnResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        check_size(&request)?;
        let txn = kv::TxnRequest {
            compare: request.compare.into_iter().map(compare_in).collect::<Result<_, _>>()?,
            success: operations_in(request.success)?,
            failure: operations_in(request.failure)?,
        };
        let request = Request::Txn(txn);
        // Refused here, before it takes a log entry (applying checks again).
        request.check_with(self.config().max_txn_ops).map_err(|error| kv_status(&error))?;
        if let Request::Txn(txn) = &request {
            let cost: u64 = txn
                .success
                .iter()
                .chain(&txn.failure)
                .map(|operation| match operation {
                    kv::Operation::Put(put) => {
                        (put.key.len() + put.value.len()) as u64 + kv::VERSION_OVERHEAD_BYTES
                    }
                    _ => 0,
                })
                .sum();
            if cost > 0 {
                self.check_space(cost)?;
            }
        }
        let (answer, held) = if request.is_read_only() {
            self.read_in_budget(&caller, request, false).await?
        } else {
            // A write is not read again, and is never reported failed once it is applied:
            // its answer waits for room, and goes without if none comes.
            let answer = self.write_as(&caller, request).await?;
            let held = self.hold_room(&answer.response).await.unwrap_or(None);
            (answer, held)
        };
        match answer.response {
            Response::Txn(txn) => {
                let held = held;
                let revision = answer.revision;
                // As etcd's: the operations' own headers carry the revision alone.
                let inner =
                    || Some(pb::ResponseHeader { revision: revision as i64, ..Default::default() });
                let mut response = GrpcResponse::new(txn_out(txn, self.header(revision), &inner));
                if let Some(held) = held {
                    response.extensions_mut().insert(held);
                }
                Ok(response)
            }
            _ => Err(unexpected()),
        }
    }

    async fn compact(
        &self,
        request: GrpcRequest<pb::CompactionRequest>,
    ) -> Result<GrpcResponse<pb::CompactionResponse>, Status> {
        let caller = self.caller(&request)?;
        let revision = revision(request.into_inner().revision);
        let compact = Request::Compact(kv::CompactRequest { revision });
        let answer = self.write_as(&caller, compact).await?;
        Ok(GrpcResponse::new(pb::CompactionResponse { header: self.header(answer.revision) }))
    }
}

impl Gateway {
    /// Every alarm raised.
    async fn alarm_list(
        &self,
        caller: &crate::auth::Caller,
    ) -> Result<GrpcResponse<pb::AlarmResponse>, Status> {
        let get = Request::Alarm(kv::AlarmRequest::default());
        let answer = self.read_as(caller, get, false).await?;
        self.alarm_response(answer)
    }

    fn alarm_response(&self, answer: Answer) -> Result<GrpcResponse<pb::AlarmResponse>, Status> {
        let Response::Alarms(listed) = answer.response else { return Err(unexpected()) };
        Ok(GrpcResponse::new(pb::AlarmResponse {
            header: self.header(answer.revision),
            alarms: listed
                .alarms
                .into_iter()
                .map(|alarm| pb::AlarmMember {
                    member_id: alarm.member,
                    alarm: match alarm.alarm {
                        kv::AlarmKind::NoSpace => pb::AlarmType::Nospace as i32,
                        kv::AlarmKind::Corrupt => pb::AlarmType::Corrupt as i32,
                    },
                })
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl Maintenance for Gateway {
    async fn alarm(
        &self,
        request: GrpcRequest<pb::AlarmRequest>,
    ) -> Result<GrpcResponse<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction as Action;
        let caller = self.caller(&request)?;
        self.require_root(&caller).await?;
        let request = request.into_inner();
        let action = match Action::try_from(request.action) {
            Ok(Action::Get) => kv::AlarmAction::Get,
            Ok(Action::Activate) => kv::AlarmAction::Activate,
            Ok(Action::Deactivate) => kv::AlarmAction::Deactivate,
            Err(_) => return Err(Status::invalid_argument("etcdserver: unknown alarm action")),
        };
        let kind = match (pb::AlarmType::try_from(request.alarm), action) {
            (Ok(pb::AlarmType::Nospace), _) => kv::AlarmKind::NoSpace,
            (Ok(pb::AlarmType::Corrupt), _) => kv::AlarmKind::Corrupt,
            // Listing all, or clearing none: the kind does not matter.
            (Ok(pb::AlarmType::None), kv::AlarmAction::Get | kv::AlarmAction::Deactivate) => {
                kv::AlarmKind::NoSpace
            }
            _ => return Err(Status::invalid_argument("etcdserver: no such alarm")),
        };
        if action == kv::AlarmAction::Activate
            && !self.shared.config.members.iter().any(|member| member.id == request.member_id)
        {
            return Err(Status::invalid_argument(format!(
                "etcdserver: member {:x} is not a member of this cluster",
                request.member_id
            )));
        }
        if action == kv::AlarmAction::Deactivate
            && pb::AlarmType::try_from(request.alarm) == Ok(pb::AlarmType::None)
        {
            // etcd clears nothing for NONE; `etcdctl alarm disarm` names each alarm listed.
            return self.alarm_list(&caller).await;
        }
        let alarm =
            Request::Alarm(kv::AlarmRequest { action, member: request.member_id, alarm: kind });
        let answer = if action == kv::AlarmAction::Get {
            self.read_as(&caller, alarm, false).await?
        } else {
            self.write_as(&caller, alarm).await?
        };
        if let Response::Alarms(listed) = &answer.response {
            // This member's view follows at once (the others' at their next look).
            let raised = listed.alarms.iter().any(|alarm| alarm.alarm == kv::AlarmKind::NoSpace);
            let size = self.shared.space.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).1;
            self.set_space(raised, size);
        }
        self.alarm_response(answer)
    }

    async fn status(
        &self,
        _: GrpcRequest<pb::StatusRequest>,
    ) -> Result<GrpcResponse<pb::StatusResponse>, Status> {
        let status = self.local_status().await?;
        let answer = self.current().await?;
        let alarms = Request::Alarm(kv::AlarmRequest::default());
        let size = match self.read(alarms, true).await?.response {
            Response::Alarms(listed) => listed.size_bytes as i64,
            _ => 0,
        };
        Ok(GrpcResponse::new(pb::StatusResponse {
            header: self.header(answer.revision),
            version: API_VERSION.to_string(),
            db_size: size,
            leader: status.leader.unwrap_or(0),
            raft_index: status.commit,
            raft_term: status.term,
            raft_applied_index: status.applied,
            errors: status.failure.into_iter().collect(),
            db_size_in_use: size,
            is_learner: status.learners.contains(&status.id),
            storage_version: String::new(),
            db_size_quota: self.shared.config.quota_bytes as i64,
            downgrade_info: None,
        }))
    }

    async fn hash(
        &self,
        request: GrpcRequest<pb::HashRequest>,
    ) -> Result<GrpcResponse<pb::HashResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require_root(&caller).await?;
        let hash = Request::Hash(kv::HashRequest { revision: 0 });
        let answer = self.read_as(&caller, hash, true).await?;
        match answer.response {
            Response::Hash(hash) => Ok(GrpcResponse::new(pb::HashResponse {
                header: self.header(answer.revision),
                hash: hash.hash,
            })),
            _ => Err(unexpected()),
        }
    }

    async fn hash_kv(
        &self,
        request: GrpcRequest<pb::HashKvRequest>,
    ) -> Result<GrpcResponse<pb::HashKvResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require_root(&caller).await?;
        let revision = revision(request.into_inner().revision);
        let answer =
            self.read_as(&caller, Request::Hash(kv::HashRequest { revision }), true).await?;
        match answer.response {
            Response::Hash(hash) => Ok(GrpcResponse::new(pb::HashKvResponse {
                header: self.header(answer.revision),
                hash: hash.hash,
                // Never compacted: -1, as etcd says.
                compact_revision: match hash.compact_revision {
                    0 => -1,
                    revision => revision as i64,
                },
                hash_revision: hash.hash_revision as i64,
            })),
            _ => Err(unexpected()),
        }
    }

    /// Nothing to do: the store lives in memory, and each checkpoint writes it out whole and
    /// compact (and removes the one before). Answered as etcd answers a defragmentation, for
    /// root, so that etcd's tooling that defragments on a schedule works unchanged.
    async fn defragment(
        &self,
        request: GrpcRequest<pb::DefragmentRequest>,
    ) -> Result<GrpcResponse<pb::DefragmentResponse>, Status> {
        self.require_root(&self.caller(&request)?).await?;
        let answer = self.current().await?;
        Ok(GrpcResponse::new(pb::DefragmentResponse { header: self.header(answer.revision) }))
    }

    /// Hands leadership to another voter (etcd's `move-leader`), answered once it leads: only
    /// the leader takes it (`etcdserver: not leader` elsewhere, as etcd), and only for a voter.
    async fn move_leader(
        &self,
        request: GrpcRequest<pb::MoveLeaderRequest>,
    ) -> Result<GrpcResponse<pb::MoveLeaderResponse>, Status> {
        self.require_root(&self.caller(&request)?).await?;
        let target = request.into_inner().target_id;
        if self.leading_term().is_none() {
            return Err(not_leading());
        }
        let members =
            self.shared.local.members(MemberRequest::List).await.map_err(client_status)?;
        if !members.iter().any(|member| member.id == target && member.voter) {
            return Err(Status::failed_precondition("etcdserver: bad leader transferee"));
        }
        if target != self.shared.config.member_id {
            // The replica of this process: it leads (a client that stays fails at once if it
            // no longer does).
            self.shared
                .local
                .members(MemberRequest::Transfer { id: target })
                .await
                .map_err(client_status)?;
            let started = std::time::Instant::now();
            loop {
                let leader = self.progress().map(|progress| progress.borrow().leader);
                if leader == Some(Some(target)) {
                    break;
                }
                if started.elapsed() > self.shared.config.timeout {
                    return Err(Status::unavailable(
                        "etcdserver: request timed out, leader transfer took too long",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let answer = self.current().await?;
        Ok(GrpcResponse::new(pb::MoveLeaderResponse { header: self.header(answer.revision) }))
    }
}

/// A member id for etcd's MemberAdd: random, above every id an operator would choose.
fn fresh_member_id() -> u64 {
    (lockstep_client::random_id() >> 1) | (1 << 32)
}

/// `host:port` of a URL like `http://host:port`.
fn address_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.trim_end_matches('/').to_string()
}

impl Gateway {
    fn member_out(member: &MemberInfo) -> pb::Member {
        pb::Member {
            id: member.id,
            name: if member.client.is_empty() {
                String::new()
            } else {
                format!("replica-{}", member.id)
            },
            peer_urls: vec![format!("http://{}", member.peer)],
            client_urls: member.etcd.iter().map(|etcd| format!("http://{etcd}")).collect(),
            is_learner: !member.voter,
        }
    }

    async fn change(&self, request: MemberRequest) -> Result<(u64, Vec<pb::Member>), Status> {
        let members = self.shared.cluster.members(request).await.map_err(client_status)?;
        let revision = self.current().await.map_or(0, |answer| answer.revision);
        Ok((revision, members.iter().map(Gateway::member_out).collect()))
    }
}

#[tonic::async_trait]
impl Cluster for Gateway {
    async fn member_add(
        &self,
        request: GrpcRequest<pb::MemberAddRequest>,
    ) -> Result<GrpcResponse<pb::MemberAddResponse>, Status> {
        self.require_root(&self.caller(&request)?).await?;
        let request = request.into_inner();
        let Some(peer) = request.peer_urls.first().map(|url| address_of(url)) else {
            return Err(Status::invalid_argument("etcdserver: no peer URL given"));
        };
        let known =
            self.shared.cluster.members(MemberRequest::List).await.map_err(client_status)?;
        if known.iter().any(|member| member.peer == peer) {
            return Err(Status::failed_precondition("etcdserver: Peer URLs already exists"));
        }
        // A fresh random id, as etcd's: ids are never reused, and two concurrent adds never
        // pick the same one.
        let id = fresh_member_id();
        let add = MemberRequest::Add { id, peer, client: String::new(), etcd: None };
        let (revision, members) = self.change(add).await?;
        if !request.is_learner {
            // lockstep adds a replica as a learner and promotes it once it has caught up.
            let cluster = self.shared.cluster.clone();
            tokio::spawn(async move {
                // Answered once the promotion commits; refused for good once the member is
                // gone; given up after ten minutes.
                let deadline = std::time::Instant::now() + Duration::from_secs(600);
                while std::time::Instant::now() < deadline {
                    match cluster.members(MemberRequest::Promote { id }).await {
                        Ok(_) => return,
                        Err(lockstep_client::Error::Rejected(reason)) => {
                            tracing::warn!(member = id, "cannot promote: {reason}");
                            return;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                    }
                }
            });
        }
        let member = members.iter().find(|member| member.id == id).cloned();
        Ok(GrpcResponse::new(pb::MemberAddResponse {
            header: self.header(revision),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: GrpcRequest<pb::MemberRemoveRequest>,
    ) -> Result<GrpcResponse<pb::MemberRemoveResponse>, Status> {
        self.require_root(&self.caller(&request)?).await?;
        let id = request.into_inner().id;
        let known =
            self.shared.cluster.members(MemberRequest::List).await.map_err(client_status)?;
        if !known.iter().any(|member| member.id == id) {
            return Err(Status::not_found("etcdserver: member not found"));
        }
        let (revision, members) = self.change(MemberRequest::Remove { id }).await?;
        Ok(GrpcResponse::new(pb::MemberRemoveResponse { header: self.header(revision), members }))
    }

    async fn member_update(
        &self,
        _: GrpcRequest<pb::MemberUpdateRequest>,
    ) -> Result<GrpcResponse<pb::MemberUpdateResponse>, Status> {
        Err(Status::unimplemented(
            "lockstep: moving a member to new peer URLs is not supported yet",
        ))
    }

    async fn member_list(
        &self,
        _: GrpcRequest<pb::MemberListRequest>,
    ) -> Result<GrpcResponse<pb::MemberListResponse>, Status> {
        let members =
            self.shared.local.members(MemberRequest::List).await.map_err(client_status)?;
        let answer = self.current().await?;
        Ok(GrpcResponse::new(pb::MemberListResponse {
            header: self.header(answer.revision),
            members: members.iter().map(Gateway::member_out).collect(),
        }))
    }

    async fn member_promote(
        &self,
        request: GrpcRequest<pb::MemberPromoteRequest>,
    ) -> Result<GrpcResponse<pb::MemberPromoteResponse>, Status> {
        self.require_root(&self.caller(&request)?).await?;
        let id = request.into_inner().id;
        let (revision, members) = self.change(MemberRequest::Promote { id }).await?;
        Ok(GrpcResponse::new(pb::MemberPromoteResponse { header: self.header(revision), members }))
    }
}

/// The gRPC client's TLS for the leader's etcd port at `address`, read from the files now (a
/// new leader's connection uses certificates rotated since).
fn grpc_tls(tls: &GatewayTls, address: &str) -> Result<tonic::transport::ClientTlsConfig, Status> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|error| {
            Status::unavailable(format!("cannot read {}: {error}", path.display()))
        })
    };
    let host = match address.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => address,
    };
    // The key file must be readable by its owner only, as everywhere else.
    lockstep_tls::load_key(&tls.key_file)
        .map_err(|error| Status::unavailable(format!("TLS to the leader: {error}")))?;
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(&tls.ca_file)?))
        .identity(tonic::transport::Identity::from_pem(read(&tls.cert_file)?, read(&tls.key_file)?))
        .domain_name(host.to_string()))
}

/// One watcher's place among the member's watchers, given back when dropped.
pub(crate) struct WatcherPlace(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for WatcherPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
