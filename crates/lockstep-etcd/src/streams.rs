//! etcd's Lease and Watch services.
//!
//! **Leases** live in the replicated store; granting and revoking go through the log. Keep-alives
//! are answered by the leader's gateway from memory, and the leader alone decides that a lease
//! has expired and writes the expiry through the log, so every replica deletes the same keys
//! at the same revision ([`crate::lessor`] has the rules). A member that does not lead passes
//! keep-alives and time-to-live requests on to the leader's etcd address, as etcd's members do.
//!
//! **Watches** are served by the member the client is connected to, from its own applied
//! state: each watcher asks its replica for the changes to its range after the last revision
//! it delivered, and sends them in revision order. While idle it waits for the replica to
//! apply something (the replica thread publishes its applied index): an idle watcher costs
//! nothing, and a change reaches it as soon as it is applied. A gateway that does not run
//! beside its replica looks every 20 ms instead.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lockstep_kv::{self as kv, Answer, Request, Response};
use tokio::sync::mpsc;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

use crate::gateway::{kv_out, Gateway};
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb;
use crate::rpc::lease_server::Lease;
use crate::rpc::watch_server::Watch;

/// A response stream fed by a channel.
pub struct Outbound<T>(mpsc::Receiver<Result<T, Status>>);

impl<T> tonic::codegen::tokio_stream::Stream for Outbound<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// A fresh lease id: positive, and unlikely to be in use (a collision is refused and retried).
fn lease_id() -> i64 {
    (lockstep_client::random_id() >> 1).max(1) as i64
}

/// Marks a request a member passed to the leader: a member that does not lead answers it
/// with an error rather than passing it on again (leaders in flux could otherwise bounce it).
pub(crate) const FORWARDED: &str = "lockstep-forwarded";

/// Leases per checkpoint entry at most.
const CHECKPOINT_LEASES_MAX: usize = 1_000;

impl Gateway {
    /// While this replica leads: every half second proposes the expiry of every lease past its
    /// deadline, and, once a checkpoint interval, records what remains of leases renewed in
    /// memory ([`crate::lessor`]). Runs until the gateway is dropped.
    pub(crate) fn start_reaping(&self) {
        let gateway = self.downgrade();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(gateway) = Gateway::upgrade(&gateway) else { return };
                let Some(term) = gateway.leading_term() else { continue };
                let Ok(answer) = gateway.read_as_leader(term, Request::LeaseDeadlines).await else {
                    continue;
                };
                let Response::LeaseDeadlines(leases) = answer.response else { continue };
                let expired = {
                    let mut lessor = gateway.lessor();
                    let now = now_millis();
                    if !lessor.enter(term, now) {
                        continue;
                    }
                    lessor.expired(&leases, now)
                };
                // Each expiry names the term that decided it: written in another term's entry
                // (retried at a later leader, say), the store ignores it.
                for id in expired {
                    if gateway.leading_term() != Some(term) {
                        break;
                    }
                    let end = Request::LeaseEnd(kv::LeaseEndRequest { id, term });
                    if let Err(error) = gateway.write_local(end).await {
                        tracing::debug!(lease = id, "expiring a lease failed: {error}");
                    }
                }
                gateway.checkpoint_leases(term, &leases).await;
            }
        });
    }

    /// While this replica leads, every 500 ms: if the store has grown past the quota and no
    /// `NoSpace` alarm is raised, raises one through the log (as etcd's leader does), so that
    /// every member refuses what would grow the store until an operator clears it (`etcdctl
    /// alarm disarm`, after compacting); a quota still exceeded then raises it again.
    pub(crate) fn start_quota_watch(&self) {
        let quota = self.config().quota_bytes;
        if quota == 0 {
            return;
        }
        let gateway = self.downgrade();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(gateway) = Gateway::upgrade(&gateway) else { return };
                // Every member keeps its own view, for refusing before proposing.
                let get = Request::Alarm(kv::AlarmRequest::default());
                let Ok(answer) = gateway.read(get, true).await else { continue };
                let Response::Alarms(listed) = answer.response else { continue };
                let raised =
                    listed.alarms.iter().any(|alarm| alarm.alarm == kv::AlarmKind::NoSpace);
                gateway.set_space(raised, listed.size_bytes);
                // The leader alone raises it, from its applied state confirmed current.
                let Some(term) = gateway.leading_term() else { continue };
                if raised || listed.size_bytes <= quota {
                    continue;
                }
                let get = Request::Alarm(kv::AlarmRequest::default());
                let Ok(answer) = gateway.read_as_leader(term, get).await else { continue };
                let Response::Alarms(listed) = answer.response else { continue };
                let raised =
                    listed.alarms.iter().any(|alarm| alarm.alarm == kv::AlarmKind::NoSpace);
                if raised || listed.size_bytes <= quota {
                    continue;
                }
                tracing::warn!(
                    size = listed.size_bytes,
                    quota,
                    "the store is past its space quota: raising the NOSPACE alarm (writes that \
                     grow it are refused until `etcdctl alarm disarm`, after compaction)"
                );
                gateway.raise_nospace().await;
            }
        });
    }

    /// Every second: each replica the audit has quarantined (as this replica sees it: itself,
    /// and the others too while it leads) gets a `CORRUPT` alarm through the log, once, so
    /// that etcd's tooling (`etcdctl alarm list`) sees what the audit found. The audit repairs
    /// the replica; the alarm stays until an operator clears it (`etcdctl alarm disarm`), as
    /// etcd's does, and refuses nothing meanwhile.
    pub(crate) fn start_corruption_watch(&self) {
        if self.progress().is_none() {
            return;
        }
        let gateway = self.downgrade();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(gateway) = Gateway::upgrade(&gateway) else { return };
                let Ok(status) = gateway.local_status().await else { continue };
                let mut quarantined: Vec<u64> = Vec::new();
                if status.audit.quarantined.is_some() {
                    quarantined.push(status.id);
                }
                if status.role == "leader" {
                    quarantined.extend(
                        status.audit.peers.iter().filter(|peer| peer.quarantined).map(|p| p.id),
                    );
                }
                if quarantined.is_empty() {
                    continue;
                }
                let get = Request::Alarm(kv::AlarmRequest::default());
                let Ok(answer) = gateway.read(get, true).await else { continue };
                let Response::Alarms(listed) = answer.response else { continue };
                for member in quarantined {
                    let raised = listed.alarms.iter().any(|alarm| {
                        alarm.alarm == kv::AlarmKind::Corrupt && alarm.member == member
                    });
                    if !raised {
                        tracing::warn!(
                            member,
                            "the audit quarantined this replica: raising the CORRUPT alarm \
                             (`etcdctl alarm disarm` clears it once the replica is repaired)"
                        );
                        gateway.raise_alarm(kv::AlarmKind::Corrupt, member).await;
                    }
                }
            }
        });
    }

    /// If a checkpoint is due: records in the log what remains of each lease marked renewed
    /// (in entries of `term` only, like expiries). Renewals wait meanwhile: one that read a
    /// lease as marked and promised after the checkpoint measured it would promise more than
    /// the log then records.
    async fn checkpoint_leases(&self, term: u64, leases: &[kv::LeaseDeadline]) {
        if !self.lessor().checkpoint_due(now_millis()) {
            // Renewals are held off only for a checkpoint.
            return;
        }
        let _renewals_wait = self.lease_gate().write().await;
        let due = {
            let mut lessor = self.lessor();
            let now = now_millis();
            if !lessor.enter(term, now) {
                return;
            }
            lessor.checkpoint(leases, now)
        };
        for chunk in due.unwrap_or_default().chunks(CHECKPOINT_LEASES_MAX) {
            let leases = chunk.to_vec();
            let record = Request::LeaseCheckpoint(kv::LeaseCheckpointRequest { term, leases });
            // Renewals stay held off until the checkpoint is applied, or this replica no
            // longer leads in `term` (then it promises nothing more in it): a write that
            // failed may still be committed later in this term, and must find no promise
            // made after its measure.
            loop {
                if self.leading_term() != Some(term) {
                    self.lessor().checkpoint_failed();
                    return;
                }
                match self.write_local(record.clone()).await {
                    Ok(_) => break,
                    Err(error) => {
                        tracing::debug!("a lease checkpoint failed, trying again: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        // The next renewal confirms leadership afresh, after the checkpoint is applied here.
        self.forget_confirmation().await;
    }

    /// Renews lease `id` as the leader in `term`: its TTL in seconds from now, or 0 if it is
    /// gone or expired.
    async fn renew_as_leader(&self, term: u64, id: i64) -> Result<i64, Status> {
        // No checkpoint is measured between this read of the lease and the promise.
        let _checkpoint_waits = self.lease_gate().read().await;
        let mut marked = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            // Confirmed leader lately (one read-index round serves every renewal for a
            // while); the lease as this replica applied it: what the leader applied is what
            // its clients were answered.
            let confirmed = self.confirm_leadership(term).await?;
            let query = Request::LeaseOf(kv::LeaseIdRequest { id });
            let lease = match self.read_local(query).await? {
                Answer { response: Response::LeaseDeadlines(leases), .. } if leases.len() == 1 => {
                    leases[0]
                }
                Answer { response: Response::Error(kv::KvError::LeaseNotFound), .. } => {
                    return Ok(0)
                }
                _ => return Err(Status::internal("lockstep: not a lease")),
            };
            if !lease.renewed && !marked {
                // Expired as this leader sees it: the reaper revokes it.
                if self.lessor().deadline(&lease) <= now_millis() {
                    return Ok(0);
                }
                // The first renewal since the deadline was recorded goes through the log,
                // which marks the lease: a later leader then gives it its whole TTL.
                let mark = Request::LeaseMark(kv::LeaseIdRequest { id });
                match self.write_local(mark).await {
                    Ok(Answer { response: Response::Lease(_), .. }) => {}
                    Ok(_) => return Ok(0),
                    Err(status) if status.code() == tonic::Code::NotFound => return Ok(0),
                    Err(status) => return Err(status),
                }
                // Confirmed afresh once the mark is applied here, so that no leader elected
                // meanwhile can have missed it, and read again.
                self.forget_confirmation().await;
                marked = true;
                continue;
            }
            let mut lessor = self.lessor();
            let now = now_millis();
            // The promise is made while the confirmation is fresh (a pause here would let a
            // leader be elected meanwhile), by the leader of `term` as it last published.
            if self.leading_term() != Some(term) {
                return Err(crate::gateway::not_leading());
            }
            if !self.confirmation_fresh(confirmed) {
                // The confirmation grew stale meanwhile: confirm again (a few times at most).
                if attempts >= 4 {
                    return Err(crate::gateway::not_leading());
                }
                continue;
            }
            if !lessor.enter(term, now) {
                return Err(crate::gateway::not_leading());
            }
            if !lease.renewed || lessor.deadline(&lease) <= now {
                // Expired (the reaper revokes it), or revoked and granted again meanwhile.
                return Ok(0);
            }
            lessor.renew(&lease, now);
            return Ok(lease.ttl);
        }
    }

    /// Renews lease `id` here if this replica leads, else at the leader over `upstream` (a
    /// stream to the leader, opened when first needed; unless `forwarded`: a member passes a
    /// keep-alive on once at most).
    async fn renew(
        &self,
        id: i64,
        forwarded: bool,
        upstream: &mut Option<Upstream>,
    ) -> Result<i64, Status> {
        if let Some(term) = self.leading_term() {
            *upstream = None;
            return self.renew_as_leader(term, id).await;
        }
        if forwarded {
            return Err(crate::gateway::not_leading());
        }
        let request = pb::LeaseKeepAliveRequest { id };
        let sent = match upstream.as_mut() {
            Some(open) => open.requests.send(request).await.is_ok(),
            None => {
                // The request goes in before the call: a leader may send the stream's headers
                // only with its first answer.
                let (requests, receiver) = mpsc::channel(1);
                let _ = requests.try_send(request);
                let inbound = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver);
                let mut call = GrpcRequest::new(inbound);
                call.metadata_mut()
                    .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
                let mut leader = self.leader_leases().await?;
                let answers = leader.lease_keep_alive(call).await?.into_inner();
                *upstream = Some(Upstream { requests, answers });
                true
            }
        };
        let answer = match (sent, upstream.as_mut()) {
            (true, Some(open)) => {
                match tokio::time::timeout(self.timeout(), open.answers.message()).await {
                    Ok(answer) => answer,
                    Err(_) => Err(Status::unavailable("etcdserver: request timed out")),
                }
            }
            _ => Err(Status::unavailable("etcdserver: the keep-alive stream to the leader closed")),
        };
        match answer {
            Ok(Some(answer)) => Ok(answer.ttl),
            Ok(None) => {
                *upstream = None;
                Err(Status::unavailable("etcdserver: the leader ended the keep-alive"))
            }
            Err(status) => {
                // Opened afresh for the next keep-alive (the leader may have changed).
                *upstream = None;
                Err(status)
            }
        }
    }
}

/// A keep-alive stream to the leader, for the keep-alives of one client stream.
pub(crate) struct Upstream {
    requests: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    answers: Streaming<pb::LeaseKeepAliveResponse>,
}

#[tonic::async_trait]
impl Lease for Gateway {
    async fn lease_grant(
        &self,
        request: GrpcRequest<pb::LeaseGrantRequest>,
    ) -> Result<GrpcResponse<pb::LeaseGrantResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        crate::gateway::check_size(&request)?;
        self.check_space(0)?;
        let chosen = request.id == 0;
        for _ in 0..8 {
            let id = if chosen { lease_id() } else { request.id };
            let grant = Request::LeaseGrant(kv::LeaseGrantRequest { id, ttl: request.ttl });
            match self.write_as(&caller, grant).await {
                Ok(answer) => {
                    let Response::Lease(lease) = answer.response else {
                        return Err(Status::internal("lockstep: not a lease"));
                    };
                    return Ok(GrpcResponse::new(pb::LeaseGrantResponse {
                        header: self.header(answer.revision),
                        id: lease.id,
                        ttl: lease.ttl,
                        error: String::new(),
                    }));
                }
                // An id this gateway chose is taken: choose another.
                Err(status) if chosen && status.code() == tonic::Code::FailedPrecondition => {}
                Err(status) => return Err(status),
            }
        }
        Err(Status::unavailable("etcdserver: no free lease id found"))
    }

    async fn lease_revoke(
        &self,
        request: GrpcRequest<pb::LeaseRevokeRequest>,
    ) -> Result<GrpcResponse<pb::LeaseRevokeResponse>, Status> {
        let caller = self.caller(&request)?;
        let id = request.into_inner().id;
        let revoke = Request::LeaseRevoke(kv::LeaseIdRequest { id });
        let answer = self.write_as(&caller, revoke).await?;
        Ok(GrpcResponse::new(pb::LeaseRevokeResponse { header: self.header(answer.revision) }))
    }

    type LeaseKeepAliveStream = Outbound<pb::LeaseKeepAliveResponse>;

    /// Each keep-alive is answered by the leader from memory (see [`crate::lessor`]); a member
    /// that does not lead passes it on. A lease that expired or was revoked is answered with
    /// TTL 0, as etcd does.
    async fn lease_keep_alive(
        &self,
        request: GrpcRequest<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<GrpcResponse<Self::LeaseKeepAliveStream>, Status> {
        let forwarded = request.metadata().contains_key(FORWARDED);
        let mut inbound = request.into_inner();
        let (sender, receiver) = mpsc::channel(64);
        let gateway = self.clone();
        tokio::spawn(async move {
            let mut upstream = None;
            while let Ok(Some(keep_alive)) = inbound.message().await {
                let response = match gateway.renew(keep_alive.id, forwarded, &mut upstream).await {
                    Ok(ttl) => gateway.current().await.map(|answer| pb::LeaseKeepAliveResponse {
                        header: gateway.header(answer.revision),
                        id: keep_alive.id,
                        ttl,
                    }),
                    Err(status) => Err(status),
                };
                if sender.send(response).await.is_err() {
                    return;
                }
            }
        });
        Ok(GrpcResponse::new(Outbound(receiver)))
    }

    /// Answered by the leader, which alone knows how long a lease has left; a member that does
    /// not lead passes it on.
    async fn lease_time_to_live(
        &self,
        request: GrpcRequest<pb::LeaseTimeToLiveRequest>,
    ) -> Result<GrpcResponse<pb::LeaseTimeToLiveResponse>, Status> {
        let forwarded = request.metadata().contains_key(FORWARDED);
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let Some(term) = self.leading_term() else {
            if forwarded {
                return Err(crate::gateway::not_leading());
            }
            let mut leader = self.leader_leases().await?;
            let mut passed = GrpcRequest::new(request);
            passed
                .metadata_mut()
                .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
            // The leader checks the caller as this member would.
            if let Some(token) = self.token_of(&caller).await? {
                if let Ok(value) = tonic::metadata::MetadataValue::try_from(token.as_str()) {
                    passed.metadata_mut().insert("token", value);
                }
            }
            return leader.lease_time_to_live(passed).await;
        };
        let query = self
            .wrap(&caller, Request::LeaseTimeToLive(kv::LeaseIdRequest { id: request.id }))
            .await?;
        match self.read_as_leader(term, query).await {
            Ok(answer) => {
                let Response::Lease(lease) = answer.response else {
                    return Err(Status::internal("lockstep: not a lease"));
                };
                let now = now_millis();
                let deadline = {
                    let mut lessor = self.lessor();
                    if !lessor.enter(term, now) {
                        return Err(crate::gateway::not_leading());
                    }
                    lessor.deadline(&lease.deadline())
                };
                // Whole seconds left, truncated as etcd's.
                let remaining = deadline.saturating_sub(now) / 1000;
                Ok(GrpcResponse::new(pb::LeaseTimeToLiveResponse {
                    header: self.header(answer.revision),
                    id: request.id,
                    ttl: remaining as i64,
                    granted_ttl: lease.ttl,
                    keys: if request.keys {
                        lease.keys.iter().map(|key| key.to_vec()).collect()
                    } else {
                        Vec::new()
                    },
                }))
            }
            // An unknown lease is answered with TTL -1, as etcd does.
            Err(status) if status.code() == tonic::Code::NotFound => {
                let revision = self.current().await?.revision;
                Ok(GrpcResponse::new(pb::LeaseTimeToLiveResponse {
                    header: self.header(revision),
                    id: request.id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: Vec::new(),
                }))
            }
            Err(status) => Err(status),
        }
    }

    async fn lease_leases(
        &self,
        request: GrpcRequest<pb::LeaseLeasesRequest>,
    ) -> Result<GrpcResponse<pb::LeaseLeasesResponse>, Status> {
        let caller = self.caller(&request)?;
        let answer = self.read_as(&caller, Request::LeaseList, false).await?;
        let Response::Leases(leases) = answer.response else {
            return Err(Status::internal("lockstep: not leases"));
        };
        Ok(GrpcResponse::new(pb::LeaseLeasesResponse {
            header: self.header(answer.revision),
            leases: leases.iter().map(|lease| pb::LeaseStatus { id: lease.id }).collect(),
        }))
    }
}

/// Events sent per response at most (a revision is never split).
const EVENTS_PER_RESPONSE: u64 = 1_000;

/// How often an idle watcher looks for changes when the applied index is not published.
const POLL: Duration = Duration::from_millis(20);

/// An idle watcher waiting for the applied index looks again after this long anyway (progress
/// notifications, and a safety net).
const IDLE_LOOK_MAX: Duration = Duration::from_secs(1);

/// How often a watcher that asked for progress notifications gets one while idle.
const PROGRESS_EVERY: Duration = Duration::from_secs(600);

type Sender = mpsc::Sender<Result<pb::WatchResponse, Status>>;

/// What a watch stream knows of one of its watchers.
struct Handle {
    task: tokio::task::JoinHandle<()>,
    /// Its place among the member's watchers.
    _place: crate::gateway::WatcherPlace,
    /// Every change up to this revision has been sent (or filtered out).
    delivered: Arc<AtomicU64>,
    /// Set on cancel: the watcher sends nothing more.
    canceled: Arc<AtomicBool>,
}

struct Watcher {
    id: i64,
    range: kv::KeyRange,
    next: u64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    /// The user who watches: with authentication on, each look checks it may still read the
    /// range, and a permission taken away ends the watch.
    user: Option<String>,
    delivered: Arc<AtomicU64>,
    canceled: Arc<AtomicBool>,
}

impl Watcher {
    async fn send(&self, sender: &Sender, response: pb::WatchResponse) -> bool {
        !self.canceled.load(Ordering::Acquire) && sender.send(Ok(response)).await.is_ok()
    }

    /// Delivers changes until the stream closes or the watcher is canceled.
    async fn run(mut self, gateway: Gateway, sender: Sender) {
        let mut last_sent = Instant::now();
        let mut applied = gateway.progress();
        loop {
            if self.canceled.load(Ordering::Acquire) {
                return;
            }
            // Seen before the read: whatever is applied after it wakes the wait below.
            if let Some(applied) = applied.as_mut() {
                applied.borrow_and_update();
            }
            let request = kv::EventsRequest {
                range: self.range.clone(),
                from: self.next,
                limit: EVENTS_PER_RESPONSE,
                user: self.user.clone(),
            };
            let Ok(answer) = gateway.read_local(Request::Events(request)).await else {
                tokio::time::sleep(POLL).await;
                continue;
            };
            let found = match answer.response {
                Response::Events(found) => found,
                Response::Error(kv::KvError::Compacted { compacted, .. }) => {
                    // The history the watcher needs was compacted away.
                    let canceled = pb::WatchResponse {
                        header: gateway.header(answer.revision),
                        watch_id: self.id,
                        canceled: true,
                        compact_revision: compacted as i64,
                        cancel_reason: "etcdserver: mvcc: required revision has been compacted"
                            .to_string(),
                        ..Default::default()
                    };
                    self.send(&sender, canceled).await;
                    return;
                }
                Response::Error(kv::KvError::Auth(error)) => {
                    let canceled = pb::WatchResponse {
                        header: gateway.header(answer.revision),
                        watch_id: self.id,
                        canceled: true,
                        cancel_reason: format!("etcdserver: {error}"),
                        ..Default::default()
                    };
                    self.send(&sender, canceled).await;
                    return;
                }
                _ => return,
            };
            let events: Vec<mvccpb::Event> = found
                .events
                .into_iter()
                .filter(|event| if event.put { !self.no_put } else { !self.no_delete })
                .map(|event| mvccpb::Event {
                    r#type: if event.put {
                        mvccpb::event::EventType::Put as i32
                    } else {
                        mvccpb::event::EventType::Delete as i32
                    },
                    kv: Some(kv_out(event.kv)),
                    prev_kv: if self.prev_kv { event.prev_kv.map(kv_out) } else { None },
                })
                .collect();
            let through = found.through.max(self.next.saturating_sub(1));
            let progress = self.progress_notify && last_sent.elapsed() >= PROGRESS_EVERY;
            if !events.is_empty() || progress {
                let response = pb::WatchResponse {
                    // Everything up to `through` has been looked at: nothing at or below the
                    // header's revision comes later.
                    header: gateway.header(through),
                    watch_id: self.id,
                    events,
                    ..Default::default()
                };
                if !self.send(&sender, response).await {
                    return;
                }
                last_sent = Instant::now();
            }
            self.next = through + 1;
            self.delivered.store(through, Ordering::Release);
            if found.through >= answer.revision {
                match applied.as_mut() {
                    Some(published) => {
                        let waited = tokio::time::timeout(IDLE_LOOK_MAX, published.changed()).await;
                        if let Ok(Err(_)) = waited {
                            // The replica stopped publishing: look as a remote gateway does.
                            applied = None;
                        }
                    }
                    None => tokio::time::sleep(POLL).await,
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Watch for Gateway {
    type WatchStream = Outbound<pb::WatchResponse>;

    async fn watch(
        &self,
        request: GrpcRequest<Streaming<pb::WatchRequest>>,
    ) -> Result<GrpcResponse<Self::WatchStream>, Status> {
        use crate::proto::etcdserverpb::watch_create_request::FilterType;
        use crate::proto::etcdserverpb::watch_request::RequestUnion;
        let caller = self.caller(&request)?;
        let mut inbound = request.into_inner();
        let (sender, receiver) = mpsc::channel(64);
        let gateway = self.clone();
        tokio::spawn(async move {
            let mut next_id = 0i64;
            let mut watchers: BTreeMap<i64, Handle> = BTreeMap::new();
            while let Ok(Some(request)) = inbound.message().await {
                watchers.retain(|_, handle| !handle.task.is_finished());
                let response = match request.request_union {
                    Some(RequestUnion::CreateRequest(create)) => {
                        let refused = |reason: &str, revision| pb::WatchResponse {
                            header: gateway.header(revision),
                            watch_id: -1,
                            created: true,
                            canceled: true,
                            cancel_reason: reason.to_string(),
                            ..Default::default()
                        };
                        let current = match gateway.current().await {
                            Ok(answer) => answer.revision,
                            Err(status) => {
                                let reason = format!("etcdserver: {}", status.message());
                                if sender.send(Ok(refused(&reason, 0))).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                        };
                        let id = if create.watch_id != 0 {
                            create.watch_id
                        } else {
                            while watchers.contains_key(&next_id) {
                                next_id += 1;
                            }
                            next_id
                        };
                        if watchers.contains_key(&id) {
                            let reason = "etcdserver: watcher ID already in use";
                            if sender.send(Ok(refused(reason, current))).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        let place = match gateway.watcher_place(watchers.len()) {
                            Ok(place) => place,
                            Err(reason) => {
                                if sender.send(Ok(refused(&reason, current))).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                        };
                        let range = kv::KeyRange {
                            key: Bytes::from(create.key.clone()),
                            range_end: Bytes::from(create.range_end.clone()),
                        };
                        let read = kv::PermissionKind::Read;
                        if let Err(status) = gateway.require_permission(&caller, range, read).await
                        {
                            if sender.send(Ok(refused(status.message(), current))).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        let start = if create.start_revision > 0 {
                            create.start_revision as u64
                        } else {
                            current + 1
                        };
                        let created = pb::WatchResponse {
                            header: gateway.header(current),
                            watch_id: id,
                            created: true,
                            ..Default::default()
                        };
                        if sender.send(Ok(created)).await.is_err() {
                            break;
                        }
                        let delivered = Arc::new(AtomicU64::new(start.saturating_sub(1)));
                        let canceled = Arc::new(AtomicBool::new(false));
                        let watcher = Watcher {
                            id,
                            range: kv::KeyRange {
                                key: Bytes::from(create.key),
                                range_end: Bytes::from(create.range_end),
                            },
                            next: start,
                            prev_kv: create.prev_kv,
                            no_put: create.filters.contains(&(FilterType::Noput as i32)),
                            no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
                            progress_notify: create.progress_notify,
                            user: caller.user(),
                            delivered: delivered.clone(),
                            canceled: canceled.clone(),
                        };
                        let task = tokio::spawn(watcher.run(gateway.clone(), sender.clone()));
                        watchers.insert(id, Handle { task, _place: place, delivered, canceled });
                        continue;
                    }
                    Some(RequestUnion::CancelRequest(cancel)) => {
                        if let Some(handle) = watchers.remove(&cancel.watch_id) {
                            handle.canceled.store(true, Ordering::Release);
                            handle.task.abort();
                            let _ = handle.task.await;
                        }
                        let revision = gateway.current().await.map_or(0, |answer| answer.revision);
                        pb::WatchResponse {
                            header: gateway.header(revision),
                            watch_id: cancel.watch_id,
                            canceled: true,
                            ..Default::default()
                        }
                    }
                    Some(RequestUnion::ProgressRequest(_)) => {
                        // The revision every watcher of the stream has reached: no event at or
                        // below it is still to come.
                        let revision = match watchers
                            .values()
                            .map(|handle| handle.delivered.load(Ordering::Acquire))
                            .min()
                        {
                            Some(revision) => revision,
                            None => gateway.current().await.map_or(0, |answer| answer.revision),
                        };
                        pb::WatchResponse {
                            header: gateway.header(revision),
                            watch_id: -1,
                            ..Default::default()
                        }
                    }
                    None => continue,
                };
                if sender.send(Ok(response)).await.is_err() {
                    break;
                }
            }
            for handle in watchers.into_values() {
                handle.canceled.store(true, Ordering::Release);
                handle.task.abort();
            }
        });
        Ok(GrpcResponse::new(Outbound(receiver)))
    }
}
