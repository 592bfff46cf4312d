//! The replica thread: the node driver, fed by two channels.
//!
//! Messages from peers and clients' requests arrive as [`Event`]s on a bounded channel (when
//! the thread falls behind, the network tasks stop reading and TCP pushes back). Ticks of the
//! clock and the storage threads' reports arrive as [`Control`]s on an unbounded channel, so
//! the storage threads never block on the replica thread. Every input is stamped with the
//! instant it was sent, and the thread takes the two channels merged in that order (a control
//! first on a tie): time never falls behind an input that arrived later (a leader's lease is
//! measured in ticks), and after a stall the acknowledgements that arrived during it are
//! counted before the ticks that came after them. The thread hands each input to the driver,
//! then routes the answers to the clients' connections. It is the only place the driver, and
//! so the state machine, runs: the network tasks only decode and encode.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lockstep_core::message::{Divergence, DivergenceKind};
use lockstep_core::{
    ConfigError, LogIndex, MembershipChange, Message, NodeId, Origin, Role, StateMachine, Term,
};
use lockstep_node::{
    ClientId, ClientRequest, Completion, Driver, Refusal, RequestId, SessionCheck,
};
use lockstep_wire::{
    AuditRequest, AuditView, ClientError, ClientMessage, MemberInfo, MemberRequest, PeerAuditView,
    Progress, ReadConsistency, ReplicaStatus, ServerMessage,
};
use tokio::sync::mpsc;

use crate::hosted::{HostInput, HostOutput, Hosted, MemberAddress};
use crate::storage::{StorageReport, ThreadedStorage};
use crate::transport::PeerOutbox;

/// Committed entries one turn of the replica thread applies at most (a few milliseconds of
/// work for small commands), and their bytes at most (at least one entry); the rest wait for
/// the next turns, after the inputs that arrived.
pub const APPLY_ENTRIES_PER_TURN: u64 = 2_048;
/// See [`APPLY_ENTRIES_PER_TURN`].
pub const APPLY_BYTES_PER_TURN: u64 = 4 << 20;

/// A turn of the replica thread that takes this long or longer is logged with where its time
/// went (heartbeats wait behind it).
const TURN_MILLIS_NOTED: u128 = 100;

/// This thread's time on a CPU, in nanoseconds: tells a long turn that worked from one that
/// waited.
fn thread_cpu_nanos() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (now.tv_sec.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec.max(0) as u64)
}

/// The machine's monotonic clock in microseconds: the same clock in every process on the
/// machine, so the entry trace of three replicas can be laid side by side.
fn monotonic_micros() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (now.tv_sec.max(0) as u64)
        .saturating_mul(1_000_000)
        .saturating_add(now.tv_nsec.max(0) as u64 / 1_000)
}

/// `at` on the machine's monotonic clock, in microseconds.
fn monotonic_micros_at(at: Instant) -> u64 {
    monotonic_micros().saturating_sub(at.elapsed().as_micros() as u64)
}

/// The stages of an entry's life on one replica that the entry trace reports: in its log
/// (proposed, on a leader; received, on a follower), durable, committed, applied (and, on the
/// leader, answered in the same turn).
const TRACE_STAGES: [&str; 4] = ["log", "durable", "committed", "applied"];

/// At most this many entries of one stage are reported in one turn.
const TRACE_PER_TURN_MAX: u64 = 16;

/// The entry trace (`LOCKSTEP_TRACE_EVERY=N`): every `N`th log index, each replica logs when
/// the entry reached each stage here, with the start of the turn that saw it and when that
/// turn's first input was queued, on the machine's monotonic clock (`bench/trace.sh` lays
/// the three replicas' lines side by side). Off (0) by default.
#[derive(Default)]
struct EntryTrace {
    every: u64,
    /// Per stage, the index it had reached at the end of the last turn.
    seen: [u64; 4],
}

impl EntryTrace {
    fn from_environment() -> EntryTrace {
        let every = std::env::var("LOCKSTEP_TRACE_EVERY")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        EntryTrace { every, seen: [0; 4] }
    }
}

/// Where a client connection's answers go.
pub type Reply<O> = mpsc::UnboundedSender<ServerMessage<O>>;

/// A network input to the replica thread.
pub enum Event<M: StateMachine> {
    /// A message from a peer.
    Peer(Message),
    /// A client's request, where to answer it, and where the client is.
    Client(ClientMessage<M::Input, M::Query>, Reply<M::Output>, Origin),
}

/// A control input to the replica thread, taken before any waiting [`Event`].
pub enum Control {
    /// A tick of the protocol's clock.
    Tick,
    /// A report from the log or checkpoint thread.
    Storage(StorageReport),
    /// Stop: finish queued writes, then return.
    Shutdown,
}

/// An input with the instant it was sent.
pub type Stamped<T> = (Instant, T);

/// The replica thread's inputs.
pub struct Inputs<M: StateMachine> {
    /// Ticks and storage reports.
    pub control: mpsc::UnboundedReceiver<Stamped<Control>>,
    /// Peer messages and client requests.
    pub events: mpsc::Receiver<Stamped<Event<M>>>,
    /// The runtime, to wait on both channels.
    pub runtime: tokio::runtime::Handle,
}

/// The next input of either channel, taken in the order they were sent.
enum Next<M: StateMachine> {
    Control(Control),
    Event(Event<M>),
}

impl<M: StateMachine> Inputs<M> {
    /// The earlier of the two channels' next inputs, without waiting (`held` keeps the
    /// later one taken so far).
    fn try_next(&mut self, held: &mut Held<M>) -> Option<Next<M>> {
        if held.control.is_none() {
            held.control = self.control.try_recv().ok();
        }
        if held.event.is_none() {
            held.event = self.events.try_recv().ok();
        }
        match (&held.control, &held.event) {
            (Some((control_at, _)), Some((event_at, _))) if event_at < control_at => {
                held.event.take().map(|(_, event)| Next::Event(event))
            }
            (Some(_), _) => held.control.take().map(|(_, control)| Next::Control(control)),
            (None, Some(_)) => held.event.take().map(|(_, event)| Next::Event(event)),
            (None, None) => None,
        }
    }

    /// Waits until either channel has an input (false once both are closed).
    fn wait(&mut self, held: &mut Held<M>) -> bool {
        if held.control.is_some() || held.event.is_some() {
            return true;
        }
        let Inputs { control, events, runtime } = self;
        let next = runtime.block_on(async {
            tokio::select! {
                biased;
                Some(control) = control.recv() => Some(Ok(control)),
                Some(event) = events.recv() => Some(Err(event)),
                else => None,
            }
        });
        match next {
            Some(Ok(control)) => held.control = Some(control),
            Some(Err(event)) => held.event = Some(event),
            None => return false,
        }
        true
    }
}

/// Inputs taken from their channels and not yet handled.
struct Held<M: StateMachine> {
    control: Option<Stamped<Control>>,
    event: Option<Stamped<Event<M>>>,
}

/// A request waiting for the driver's answer.
enum Waiting<O> {
    /// A client's write or read: answered with its output.
    Client(u64, Reply<O>),
    /// A new member's addresses going through the log: once recorded, it is added.
    MemberAdd(u64, Reply<O>, u64),
}

/// A client's write taken this turn: the request, the client's id for it, where to answer.
type PendingWrite<M> =
    (ClientRequest<HostInput<<M as StateMachine>::Input>>, u64, Reply<<M as StateMachine>::Output>);

/// A membership change waiting for its configuration entry to commit.
struct PendingChange<O> {
    id: u64,
    reply: Reply<O>,
    /// The entry, and the term it was appended in.
    index: LogIndex,
    term: Term,
}

/// The replica thread's state.
pub struct Replica<M: StateMachine> {
    pub(crate) driver: Driver<Hosted<M>, ThreadedStorage, PeerOutbox>,
    waiting: BTreeMap<RequestId, Waiting<M::Output>>,
    /// Linearizable reads from the network, admitted when answered (see `client_as`).
    rechecks: BTreeMap<RequestId, M::Query>,
    /// The address book as the configuration gave it (the replicated one adds to it).
    configured: BTreeMap<u64, MemberAddress>,
    /// The address book's change count and the configuration index when the transport was
    /// last told of them.
    peers_seen: Option<(u64, LogIndex)>,
    /// Membership changes in the log, answered once their entry commits.
    changing: Vec<PendingChange<M::Output>>,
    /// Client writes taken this turn, proposed together at its end (one batch of entries,
    /// one write, one round of appends).
    writes: Vec<PendingWrite<M>>,
    cluster_id: u64,
    /// Client addresses by replica id, to tell clients where the leader is.
    client_addresses: BTreeMap<u64, String>,
    was_leader: bool,
    was_quarantined: bool,
    /// Test only (a deliberately broken server): linearizable reads answered from the local
    /// state, leader or not.
    pub(crate) unsafe_reads: bool,
    /// `LOCKSTEP_TRACE_EVERY`: see [`EntryTrace`].
    trace: EntryTrace,
    /// Where the applied index, term and leader are published after each turn that changed
    /// them.
    pub(crate) progress: Option<tokio::sync::watch::Sender<Progress>>,
}

impl<M: StateMachine> Replica<M> {
    /// A replica thread around `driver`.
    pub fn new(
        driver: Driver<Hosted<M>, ThreadedStorage, PeerOutbox>,
        cluster_id: u64,
        configured: BTreeMap<u64, MemberAddress>,
    ) -> Replica<M> {
        let client_addresses =
            configured.values().map(|member| (member.id, member.client.clone())).collect();
        Replica {
            driver,
            waiting: BTreeMap::new(),
            rechecks: BTreeMap::new(),
            configured,
            peers_seen: None,
            changing: Vec::new(),
            writes: Vec::new(),
            cluster_id,
            client_addresses,
            was_leader: false,
            was_quarantined: false,
            unsafe_reads: false,
            progress: None,
            trace: EntryTrace::from_environment(),
        }
    }

    /// Runs until shut down or until the replica must stop (then returns why). Either way,
    /// every write already handed to the log thread is finished before it returns.
    pub fn run(mut self, inputs: &mut Inputs<M>) -> Result<(), String> {
        let result = self.serve(inputs);
        inputs.events.close();
        inputs.control.close();
        let reason = "this replica is stopping; retry with another";
        self.refuse_everything(reason);
        // Requests still queued are answered too (a client in this process would otherwise
        // wait out its attempt), and no component here goes on believing this replica leads.
        while let Ok((_, event)) = inputs.events.try_recv() {
            if let Event::Client(message, reply, _) = event {
                let error = ClientError::Retry(reason.to_string());
                let _ = reply.send(ServerMessage::Refused { id: message.id(), error });
            }
        }
        if let Some(progress) = &self.progress {
            progress.send_modify(|progress| progress.leader = None);
        }
        self.driver.storage_mut().stop();
        result
    }

    fn serve(&mut self, inputs: &mut Inputs<M>) -> Result<(), String> {
        let mut held = Held { control: None, event: None };
        loop {
            // Committed entries still to apply: take what arrived meanwhile, then apply more,
            // without waiting for an input.
            if self.driver.apply_backlog() == 0 && !inputs.wait(&mut held) {
                return Ok(());
            }
            // A turn applies a bounded number of entries, so that ticks, heartbeats and votes
            // never wait behind a long apply; the rest waits for the next turn.
            self.driver.set_apply_budget(APPLY_ENTRIES_PER_TURN, APPLY_BYTES_PER_TURN);
            let turn_started = Instant::now();
            let queued_at = [held.control.as_ref().map(|c| c.0), held.event.as_ref().map(|e| e.0)]
                .into_iter()
                .flatten()
                .min();
            let cpu_before = thread_cpu_nanos();
            let applied_before = self.driver.node().applied_index();
            let mut handled = 0u64;
            let mut controls = 0u64;
            let mut stop = false;
            while !stop && handled < 4096 {
                match inputs.try_next(&mut held) {
                    Some(Next::Control(control)) => {
                        controls += 1;
                        stop = !self.control(control)?;
                    }
                    Some(Next::Event(event)) => {
                        handled += 1;
                        self.handle(event);
                    }
                    None => break,
                }
            }
            metrics::histogram!("lockstep_event_batch").record(handled as f64);
            let inputs_done = turn_started.elapsed();
            if !stop && self.driver.apply_backlog() > 0 {
                self.driver.apply_queued();
            }
            let apply_done = turn_started.elapsed();
            metrics::gauge!("lockstep_apply_backlog_entries")
                .set(self.driver.apply_backlog() as f64);
            if stop {
                // Writes taken in the turn that stops are refused, not proposed.
                return Ok(());
            }
            self.propose_writes();
            // Progress is published before this turn's answers leave: whoever sees an answer
            // then sees the term and leader it was given in, or later ones (the etcd
            // gateway's lessor relies on it: a replica that stepped down in this turn must not
            // look like the leader to the reader of an answer it gave in this turn).
            self.publish_progress();
            self.answer();
            self.settle_changes();
            self.sync_peers();
            self.driver.transport_mut().flush();
            self.observe();
            self.trace_entries(turn_started, queued_at);
            let took = turn_started.elapsed();
            metrics::histogram!("lockstep_turn_seconds").record(took.as_secs_f64());
            if took.as_millis() >= TURN_MILLIS_NOTED {
                // A long turn holds heartbeats back: say where it went.
                // A repair may have moved the applied index back.
                let applied =
                    self.driver.node().applied_index().get().saturating_sub(applied_before.get());
                let on_cpu_millis = thread_cpu_nanos().saturating_sub(cpu_before) / 1_000_000;
                tracing::warn!(
                    "a turn of the replica thread took {} ms: {handled} inputs and {controls} ticks \
                     or storage reports in {} ms, {applied} entries applied ({} ms after the \
                     inputs), answers and messages {} ms; on a CPU {on_cpu_millis} ms, the rest \
                     waiting (for a CPU, a lock or the disk)",
                    took.as_millis(),
                    inputs_done.as_millis(),
                    (apply_done - inputs_done).as_millis(),
                    (took - apply_done).as_millis()
                );
            }
            if let Some(failure) = self.driver.failure() {
                return Err(failure.to_string());
            }
            if stop {
                return Ok(());
            }
        }
    }

    fn handle(&mut self, event: Event<M>) {
        match event {
            Event::Peer(message) => self.driver.receive(message),
            Event::Client(message, reply, origin) => self.client(message, reply, origin),
        }
    }

    /// Handles one control input; false to stop.
    fn control(&mut self, control: Control) -> Result<bool, String> {
        match control {
            Control::Tick => self.driver.tick(),
            Control::Storage(report) => match report {
                StorageReport::Durable(write) => self.driver.write_durable(write),
                StorageReport::CheckpointSaved(meta) => self.driver.checkpoint_saved(&meta),
                StorageReport::CheckpointFailed(reason) => {
                    tracing::warn!("a checkpoint could not be written: {reason}");
                    self.driver.checkpoint_failed();
                }
                StorageReport::Failed(reason) => {
                    return Err(format!(
                        "the log could not be written ({reason}); what is on disk is unknown, so \
                         this replica stops: restart it to recover from its disk"
                    ));
                }
            },
            Control::Shutdown => return Ok(false),
        }
        Ok(true)
    }

    fn client(
        &mut self,
        message: ClientMessage<M::Input, M::Query>,
        reply: Reply<M::Output>,
        origin: Origin,
    ) {
        self.client_as(message, reply, origin, None);
    }

    /// Whether this replica may refuse a request for good from its state (a write's first
    /// attempt, numbered `sequence` in session `client`): only a leader proposes, so only it
    /// decides, and only once it has applied everything committed and an entry of its own
    /// term (a new leader's applied state may lag what its predecessor acknowledged), while
    /// its state is not in doubt (quarantined), and if the session has not seen the number
    /// (a client that broke the first-attempt rule gets the log's verdict, not this one).
    fn may_deny(&self, client: u64, sequence: u64) -> bool {
        let node = self.driver.node();
        let applied = node.applied_index();
        node.role() == Role::Leader
            && !self.driver.quarantined()
            && applied == node.commit_index()
            && node.log_term(applied) == Some(node.term())
            && self.driver.state().sessions().check(ClientId(client), sequence) == SessionCheck::New
    }

    /// Handles a client's request, made with `credential` if it sent one.
    fn client_as(
        &mut self,
        message: ClientMessage<M::Input, M::Query>,
        reply: Reply<M::Output>,
        origin: Origin,
        credential: Option<String>,
    ) {
        let administers = match &message {
            ClientMessage::Members { request, .. } => *request != MemberRequest::List,
            ClientMessage::Audit { .. } => true,
            _ => false,
        };
        if administers {
            let machine = self.driver.state().machine().machine();
            if let Err(reason) = machine.admit_admin(credential.as_deref(), origin, now_millis()) {
                metrics::counter!("lockstep_requests_denied_total").increment(1);
                let error = ClientError::Rejected(reason);
                let _ = reply.send(ServerMessage::Refused { id: message.id(), error });
                return;
            }
        }
        match message {
            ClientMessage::Authenticated { token, request } => {
                self.client_as(request.into_message(), reply, origin, Some(token));
            }
            ClientMessage::WriteFirst { id, client, sequence, input } => {
                if self.may_deny(client, sequence) {
                    let machine = self.driver.state().machine().machine();
                    if let Err(output) = machine.admit(&input, origin, now_millis()) {
                        metrics::counter!("lockstep_requests_denied_total").increment(1);
                        let _ = reply.send(ServerMessage::Denied { id, output });
                        return;
                    }
                }
                let write = ClientMessage::Write { id, client, sequence, input };
                self.client_as(write, reply, origin, credential);
            }
            ClientMessage::Write { id, client, sequence, input } => {
                // Screened by the one that proposes (a follower refuses every write alike).
                let leads = self.driver.node().role() == Role::Leader;
                let machine = self.driver.state().machine().machine();
                let screened = if leads { machine.screen(&input, origin) } else { Ok(()) };
                if let Err(reason) = screened {
                    metrics::counter!("lockstep_requests_denied_total").increment(1);
                    let error = ClientError::Rejected(reason);
                    let _ = reply.send(ServerMessage::Refused { id, error });
                    return;
                }
                metrics::counter!("lockstep_proposals_total").increment(1);
                let input = HostInput::User(input);
                let request = ClientRequest { client: ClientId(client), sequence, input };
                self.writes.push((request, id, reply));
            }
            ClientMessage::Read { id, query, consistency } => {
                // A read served from the state as it is now is admitted now; a linearizable
                // one from the network when it is answered, from the state it is answered
                // from (not a lagging follower's, nor one from before a change such as
                // authentication turned on).
                let now = matches!(consistency, ReadConsistency::Follower)
                    || cfg!(feature = "sabotage") && self.unsafe_reads;
                if now {
                    let machine = self.driver.state().machine().machine();
                    if let Err(output) = machine.admit_query(&query, origin, now_millis()) {
                        metrics::counter!("lockstep_requests_denied_total").increment(1);
                        let _ = reply.send(ServerMessage::Denied { id, output });
                        return;
                    }
                }
                self.read(id, query, consistency, reply, origin);
            }
            ClientMessage::Status { id, digest } => {
                let _ =
                    reply.send(ServerMessage::Status { id, status: Box::new(self.status(digest)) });
            }
            ClientMessage::Members { id, client, sequence, request } => {
                self.members_request(id, client, sequence, request, reply);
            }
            ClientMessage::Audit { id, request } => self.audit_request(id, request, reply),
        }
    }

    /// Serves a read the state machine admitted.
    fn read(
        &mut self,
        id: u64,
        query: M::Query,
        consistency: ReadConsistency,
        reply: Reply<M::Output>,
        origin: Origin,
    ) {
        match consistency {
            ReadConsistency::Follower if self.driver.quarantined() => {
                let error = ClientError::Retry(
                    "this replica is quarantined (its state differs); ask another".into(),
                );
                let _ = reply.send(ServerMessage::Refused { id, error });
            }
            _ if cfg!(feature = "sabotage") && self.unsafe_reads => {
                let output = self.driver.state().machine().machine().query(&query);
                let _ = reply.send(ServerMessage::Done { id, output });
            }
            ReadConsistency::Follower => {
                let output = self.driver.state().machine().machine().query(&query);
                metrics::counter!("lockstep_reads_total", "consistency" => "follower").increment(1);
                let _ = reply.send(ServerMessage::Done { id, output });
            }
            // Lease reads are the core's choice (`lease_reads` in the configuration);
            // both are linearizable.
            ReadConsistency::Linearizable | ReadConsistency::Lease => {
                metrics::counter!("lockstep_reads_total", "consistency" => "linearizable")
                    .increment(1);
                // A copy through its encoding (queries need not be `Clone`).
                let recheck = match origin {
                    Origin::Remote => postcard::to_stdvec(&query)
                        .ok()
                        .and_then(|bytes| postcard::from_bytes::<M::Query>(&bytes).ok()),
                    Origin::Local => None,
                };
                if origin == Origin::Remote && recheck.is_none() {
                    let error = ClientError::Malformed("the query does not encode".into());
                    let _ = reply.send(ServerMessage::Refused { id, error });
                    return;
                }
                let request = self.driver.read(query);
                if let Some(query) = recheck {
                    self.rechecks.insert(request, query);
                }
                self.waiting.insert(request, Waiting::Client(id, reply));
            }
        }
    }

    fn audit_request(&mut self, id: u64, request: AuditRequest, reply: Reply<M::Output>) {
        let node = self.driver.node();
        if node.role() != Role::Leader {
            let leader = node.leader();
            let error = self.client_error(Refusal::NotLeader { leader });
            let _ = reply.send(ServerMessage::Refused { id, error });
            return;
        }
        let answer = match request {
            AuditRequest::Check => match self.driver.audit_check() {
                Ok(index) => ServerMessage::Audit { id, index: index.get() },
                Err(reason) => ServerMessage::Refused { id, error: ClientError::Retry(reason) },
            },
            AuditRequest::Repair { id: replica } => match self.driver.repair(NodeId(replica)) {
                Ok(()) => ServerMessage::Audit { id, index: 0 },
                Err(reason) => ServerMessage::Refused { id, error: ClientError::Rejected(reason) },
            },
        };
        let _ = reply.send(answer);
    }

    fn members_request(
        &mut self,
        id: u64,
        client: u64,
        sequence: u64,
        request: MemberRequest,
        reply: Reply<M::Output>,
    ) {
        let change = match request {
            MemberRequest::List => {
                let _ = reply.send(ServerMessage::Members { id, members: self.members() });
                return;
            }
            MemberRequest::Add { id: member, peer, client: address, etcd } => {
                if member == 0 {
                    let error = ClientError::Rejected("replica ids start at 1".to_string());
                    let _ = reply.send(ServerMessage::Refused { id, error });
                    return;
                }
                // A client address may be left empty (not known yet): etcd's MemberAdd gives
                // peer addresses only.
                let client_given = (!address.is_empty()).then_some(("client", &address));
                for (what, value) in [("peer", &peer)].into_iter().chain(client_given) {
                    if let Err(reason) = crate::config::resolve(value) {
                        let error = ClientError::Rejected(format!("{what} address: {reason}"));
                        let _ = reply.send(ServerMessage::Refused { id, error });
                        return;
                    }
                }
                let record = MemberAddress { id: member, peer, client: address, etcd };
                // An id names one replica forever: one of the configured members, or one
                // recorded with other addresses, is taken (a retry records the same ones).
                let recorded = self.driver.state().machine().addresses().get(&member);
                let taken = match recorded {
                    Some(recorded) => *recorded != record,
                    None => {
                        self.configured.contains_key(&member)
                            || self.driver.node().membership().contains(NodeId(member))
                    }
                };
                if taken {
                    let reason = format!(
                        "replica id {member} is taken (a member, or recorded with other \
                         addresses); ids are never reused: choose a new one"
                    );
                    let error = ClientError::Rejected(reason);
                    let _ = reply.send(ServerMessage::Refused { id, error });
                    return;
                }
                // First the addresses, through the log (in the client's session); the change
                // follows once they are recorded.
                let input = HostInput::Address(record);
                let request = ClientRequest { client: ClientId(client), sequence, input };
                let request = self.driver.propose(request, now_millis());
                self.waiting.insert(request, Waiting::MemberAdd(id, reply, member));
                return;
            }
            MemberRequest::Promote { id: member } => MembershipChange::Promote(NodeId(member)),
            MemberRequest::Remove { id: member } => MembershipChange::Remove(NodeId(member)),
            MemberRequest::Transfer { id: member } => {
                let node = self.driver.node();
                let answer = if node.role() != Role::Leader {
                    let leader = node.leader();
                    ServerMessage::Refused {
                        id,
                        error: self.client_error(Refusal::NotLeader { leader }),
                    }
                } else {
                    match self.driver.transfer_leadership(NodeId(member)) {
                        Ok(()) => ServerMessage::Members { id, members: self.members() },
                        // A voter too far behind may catch up: worth a retry.
                        Err(reason) if reason.contains("behind") => {
                            ServerMessage::Refused { id, error: ClientError::Retry(reason) }
                        }
                        Err(reason) => {
                            ServerMessage::Refused { id, error: ClientError::Rejected(reason) }
                        }
                    }
                };
                let _ = reply.send(answer);
                return;
            }
        };
        self.change_members(id, change, reply);
    }

    /// Proposes a membership change, answered once its entry commits; a change already made
    /// (a retry) counts as made once the configuration that made it commits.
    fn change_members(&mut self, id: u64, change: MembershipChange, reply: Reply<M::Output>) {
        let node = self.driver.node();
        let already = match &change {
            MembershipChange::AddLearner(member) => node.membership().contains(*member),
            MembershipChange::Promote(member) => node.membership().voters.contains(member),
            MembershipChange::Remove(member) => !node.membership().contains(*member),
            MembershipChange::SetVoters(_) => false,
        };
        let outcome = if already {
            Ok(node.last_config_index())
        } else {
            self.driver.change_membership(change)
        };
        let error = match outcome {
            Ok(index) => {
                let term = self.driver.node().log_term(index).unwrap_or(self.driver.node().term());
                self.changing.push(PendingChange { id, reply, index, term });
                return;
            }
            Err(ConfigError::NotLeader { leader }) => {
                self.client_error(Refusal::NotLeader { leader })
            }
            Err(
                error @ (ConfigError::InProgress { .. }
                | ConfigError::LeadershipTransfer
                | ConfigError::NotReady
                | ConfigError::LearnerBehind { .. }
                | ConfigError::LearnerSilent { .. }),
            ) => ClientError::Retry(error.to_string()),
            Err(error) => ClientError::Rejected(error.to_string()),
        };
        let _ = reply.send(ServerMessage::Refused { id, error });
    }

    /// Answers the membership changes whose entries committed (or were replaced).
    fn settle_changes(&mut self) {
        if self.changing.is_empty() {
            return;
        }
        let node = self.driver.node();
        let commit = node.commit_index();
        let mut settled = Vec::new();
        self.changing.retain_mut(|pending| {
            let term_now = node.log_term(pending.index);
            let replaced = term_now.is_some_and(|term| term != pending.term);
            let committed = commit >= pending.index && !replaced;
            if committed || replaced {
                settled.push((pending.id, pending.reply.clone(), committed));
                false
            } else {
                true
            }
        });
        for (id, reply, committed) in settled {
            let message = if committed {
                ServerMessage::Members { id, members: self.members() }
            } else {
                let reason = "the change was replaced by another leader's log; retry it";
                ServerMessage::Refused { id, error: ClientError::Retry(reason.to_string()) }
            };
            let _ = reply.send(message);
        }
    }

    /// The members of the latest configuration, with what is known of their addresses.
    pub fn members(&self) -> Vec<MemberInfo> {
        let membership = self.driver.node().membership();
        let voters = membership.all_voters();
        let recorded = self.driver.state().machine().addresses();
        voters
            .iter()
            .chain(membership.learners.iter())
            .map(|member| {
                let address = recorded.get(&member.0).or_else(|| self.configured.get(&member.0));
                MemberInfo {
                    id: member.0,
                    peer: address.map(|a| a.peer.clone()).unwrap_or_default(),
                    client: address.map(|a| a.client.clone()).unwrap_or_default(),
                    etcd: address.and_then(|a| a.etcd.clone()),
                    voter: voters.contains(member),
                }
            })
            .collect()
    }

    /// Keeps the transport dialling exactly the members it has addresses for (and the
    /// configured ones), as the address book and the configuration change.
    fn sync_peers(&mut self) {
        let node = self.driver.node();
        let hosted = self.driver.state().machine();
        let seen = (hosted.address_changes(), node.last_config_index());
        if self.peers_seen == Some(seen) {
            return;
        }
        self.peers_seen = Some(seen);
        let mut wanted: BTreeMap<NodeId, String> = BTreeMap::new();
        for member in node.membership().members() {
            let address =
                hosted.addresses().get(&member.0).or_else(|| self.configured.get(&member.0));
            if let Some(address) = address {
                wanted.insert(member, address.peer.clone());
            }
        }
        // The configured members too: a joining replica must answer the leader before the
        // log has told it who the members are.
        for (id, address) in &self.configured {
            wanted.entry(NodeId(*id)).or_insert_with(|| address.peer.clone());
        }
        for address in hosted.addresses().values() {
            if !address.client.is_empty() {
                self.client_addresses.insert(address.id, address.client.clone());
            }
        }
        let transport = self.driver.transport_mut();
        transport.retain_peers(|id| wanted.contains_key(&id));
        for (id, peer) in wanted {
            transport.ensure_peer(id, &peer);
        }
    }

    /// Refuses every request taken and not answered (the replica stops): the clients retry
    /// elsewhere instead of waiting for their timeout.
    fn refuse_everything(&mut self, reason: &str) {
        let refuse = |id, reply: &Reply<M::Output>| {
            let error = ClientError::Retry(reason.to_string());
            let _ = reply.send(ServerMessage::Refused { id, error });
        };
        for (_, id, reply) in std::mem::take(&mut self.writes) {
            refuse(id, &reply);
        }
        self.rechecks.clear();
        for waiting in std::mem::take(&mut self.waiting).into_values() {
            match waiting {
                Waiting::Client(id, reply) | Waiting::MemberAdd(id, reply, _) => refuse(id, &reply),
            }
        }
        for pending in std::mem::take(&mut self.changing) {
            refuse(pending.id, &pending.reply);
        }
    }

    /// Proposes the writes taken this turn, as one batch.
    fn propose_writes(&mut self) {
        if self.writes.is_empty() {
            return;
        }
        let writes = std::mem::take(&mut self.writes);
        metrics::histogram!("lockstep_proposal_batch").record(writes.len() as f64);
        let (requests, answers): (Vec<_>, Vec<_>) =
            writes.into_iter().map(|(request, id, reply)| (request, (id, reply))).unzip();
        let ids = self.driver.propose_batch(requests, now_millis());
        for (request, (id, reply)) in ids.into_iter().zip(answers) {
            self.waiting.insert(request, Waiting::Client(id, reply));
        }
    }

    /// Routes the driver's answers to the connections that asked.
    fn answer(&mut self) {
        for completion in self.driver.take_completions() {
            let (request, message) = match completion {
                Completion::Done { request, output } => (request, Ok(output)),
                Completion::Refused { request, refusal } => (request, Err(refusal)),
            };
            let recheck = self.rechecks.remove(&request);
            let Some(waiting) = self.waiting.remove(&request) else { continue };
            let (id, reply, adding) = match waiting {
                Waiting::Client(id, reply) => (id, reply, None),
                Waiting::MemberAdd(id, reply, member) => (id, reply, Some(member)),
            };
            if let (Some(query), Ok(HostOutput::User(_))) = (&recheck, &message) {
                let machine = self.driver.state().machine().machine();
                if let Err(output) = machine.admit_query(query, Origin::Remote, now_millis()) {
                    metrics::counter!("lockstep_requests_denied_total").increment(1);
                    let _ = reply.send(ServerMessage::Denied { id, output });
                    continue;
                }
            }
            let message = match (message, adding) {
                (Ok(HostOutput::User(output)), _) => {
                    metrics::counter!("lockstep_answered_total").increment(1);
                    let machine = self.driver.state().machine().machine();
                    if machine.refuses(&output) {
                        // Refused where it was applied or answered, not before.
                        metrics::counter!("lockstep_requests_denied_late_total").increment(1);
                    }
                    ServerMessage::Done { id, output }
                }
                (Ok(HostOutput::Recorded(recorded)), Some(member)) if recorded == member => {
                    self.sync_peers();
                    self.change_members(id, MembershipChange::AddLearner(NodeId(member)), reply);
                    continue;
                }
                (Ok(HostOutput::Taken(taken)), Some(member)) if taken == member => {
                    let reason = format!(
                        "replica id {member} is taken (recorded with other addresses); ids are \
                         never reused: choose a new one"
                    );
                    ServerMessage::Refused { id, error: ClientError::Rejected(reason) }
                }
                (Ok(HostOutput::Recorded(_) | HostOutput::Taken(_)), _) => ServerMessage::Refused {
                    id,
                    error: ClientError::Malformed(
                        "an address record answered another request".into(),
                    ),
                },
                (Err(refusal), _) => {
                    metrics::counter!("lockstep_refused_total").increment(1);
                    ServerMessage::Refused { id, error: self.client_error(refusal) }
                }
            };
            // A closed connection no longer wants its answer.
            let _ = reply.send(message);
        }
    }

    fn client_error(&self, refusal: Refusal) -> ClientError {
        match refusal {
            Refusal::NotLeader { leader } => ClientError::NotLeader {
                leader: leader.map(|leader| leader.0),
                address: leader.and_then(|leader| self.client_addresses.get(&leader.0).cloned()),
            },
            Refusal::Retry(reason) => ClientError::Retry(reason),
            Refusal::Lost => ClientError::Retry(
                "the request's entry was replaced by another leader's; retry it".to_string(),
            ),
            Refusal::Stale => ClientError::Stale,
            Refusal::Malformed => {
                ClientError::Malformed("the request does not decode as this service's input".into())
            }
            Refusal::TooLarge { bytes, max } => ClientError::TooLarge { bytes, max },
        }
    }

    /// Logs the traced entries that reached a stage in this turn (see [`EntryTrace`]).
    fn trace_entries(&mut self, turn_started: Instant, queued_at: Option<Instant>) {
        let every = self.trace.every;
        if every == 0 {
            return;
        }
        let node = self.driver.node();
        let reached = [
            node.last_index().get(),
            node.persisted_index().get(),
            node.commit_index().get(),
            node.applied_index().get(),
        ];
        let leads = node.role() == Role::Leader;
        let (turn_us, queued_us) =
            (monotonic_micros_at(turn_started), queued_at.map_or(0, monotonic_micros_at));
        let at_us = monotonic_micros();
        for (slot, stage) in TRACE_STAGES.iter().enumerate() {
            let before = self.trace.seen[slot];
            let now = reached[slot];
            self.trace.seen[slot] = now;
            if now <= before {
                continue;
            }
            let mut index = (before / every + 1) * every;
            let mut reported = 0;
            while index <= now && reported < TRACE_PER_TURN_MAX {
                tracing::info!(
                    target: "lockstep::trace",
                    index,
                    stage,
                    leads,
                    at_us,
                    turn_us,
                    queued_us,
                    "entry trace"
                );
                index += every;
                reported += 1;
            }
        }
    }

    fn publish_progress(&self) {
        let node = self.driver.node();
        if let Some(published) = &self.progress {
            let now = Progress {
                applied: node.applied_index().get(),
                term: node.term().0,
                leader: node.leader().map(|leader| leader.0),
            };
            published.send_if_modified(|seen| {
                let changed = *seen != now;
                *seen = now;
                changed
            });
        }
    }

    fn observe(&mut self) {
        self.publish_progress();
        let node = self.driver.node();
        let leader = node.role() == Role::Leader;
        if leader != self.was_leader {
            match leader {
                true => tracing::info!(term = node.term().0, "this replica leads"),
                false => tracing::info!(term = node.term().0, "this replica no longer leads"),
            }
        }
        self.was_leader = leader;
        let stats = node.stats();
        metrics::gauge!("lockstep_is_leader").set(f64::from(u8::from(leader)));
        metrics::gauge!("lockstep_term").set(node.term().0 as f64);
        metrics::gauge!("lockstep_commit_index").set(node.commit_index().0 as f64);
        metrics::gauge!("lockstep_applied_index").set(node.applied_index().0 as f64);
        metrics::gauge!("lockstep_last_index").set(node.last_index().0 as f64);
        metrics::counter!("lockstep_elections_started_total").absolute(stats.elections_started);
        metrics::counter!("lockstep_terms_led_total").absolute(stats.terms_led);
        metrics::counter!("lockstep_messages_rejected_total").absolute(stats.messages_rejected);
        let in_flight: u64 = node
            .membership()
            .members()
            .iter()
            .filter_map(|&id| node.progress(id))
            .map(|progress| progress.inflights.bytes())
            .sum();
        metrics::gauge!("lockstep_bytes_in_flight").set(in_flight as f64);
        let audit = self.driver.audit_stats();
        metrics::gauge!("lockstep_audit_quarantined")
            .set(f64::from(u8::from(self.driver.quarantined())));
        metrics::counter!("lockstep_audit_divergences_found_total")
            .absolute(audit.divergences_found);
        metrics::counter!("lockstep_audit_self_quarantines_total").absolute(audit.self_quarantines);
        metrics::counter!("lockstep_audit_repairs_total").absolute(audit.repairs_done);
        metrics::counter!("lockstep_audit_outputs_verified_total").absolute(audit.outputs_verified);
        if self.driver.quarantined() != self.was_quarantined {
            self.was_quarantined = self.driver.quarantined();
            match self.was_quarantined {
                true => tracing::warn!(
                    "this replica is quarantined: its state differs from the majority's"
                ),
                false => tracing::info!("this replica is repaired and serves again"),
            }
        }
    }

    /// This replica's status; the state's digest only if asked for (what it costs is the
    /// state machine's: the key-value store keeps its digest current, other machines may not).
    pub fn status(&self, with_digest: bool) -> ReplicaStatus {
        let node = self.driver.node();
        let membership = node.membership();
        let digest = with_digest.then(|| self.driver.state().machine().digest());
        ReplicaStatus {
            id: node.id().0,
            role: role_name(node.role()).to_string(),
            term: node.term().0,
            leader: node.leader().map(|leader| leader.0),
            commit: node.commit_index().0,
            applied: node.applied_index().0,
            checkpoint: self.driver.storage().latest_checkpoint_index().map_or(0, |index| index.0),
            digest: digest
                .map(|digest| digest.0.iter().map(|byte| format!("{byte:02x}")).collect())
                .unwrap_or_default(),
            cluster_id: self.cluster_id,
            client_address: self.client_addresses.get(&node.id().0).cloned().unwrap_or_default(),
            last_index: node.last_index().0,
            persisted: node.persisted_index().0,
            voters: membership.all_voters().iter().map(|id: &NodeId| id.0).collect(),
            learners: membership.learners.iter().map(|id| id.0).collect(),
            failure: self.driver.failure().map(str::to_string),
            chain_index: self.driver.state().chain().index.get(),
            chain: format!("{:016x}", self.driver.state().chain().value),
            audit: self.audit_view(),
            lost_through: node.lost_through().map(|index| index.0),
        }
    }

    /// The audit as this replica sees it, for the status.
    fn audit_view(&self) -> AuditView {
        let status = self.driver.audit_status();
        let describe = |divergence: &Divergence| {
            format!(
                "replica {} differs ({}) at {} {}: expected {:016x}, found {:016x}; {} (found at \
                 commit {})",
                divergence.replica,
                match divergence.kind {
                    DivergenceKind::Output => "output chain",
                    DivergenceKind::State => "state digest",
                },
                if divergence.exact { "entry" } else { "report" },
                divergence.index,
                divergence.expected,
                divergence.found,
                divergence.entry,
                divergence.detected_at
            )
        };
        let (digest_index, digest) = status.latest_digest.map_or((0, String::new()), |point| {
            (point.index.get(), point.digest.iter().map(|byte| format!("{byte:02x}")).collect())
        });
        AuditView {
            enabled: status.enabled,
            verified_outputs: status.verified_outputs,
            quarantined: status.quarantined.as_ref().map(describe),
            agreed: status.agreed.get(),
            agreed_digest: status.agreed_digest.get(),
            digest_index,
            digest,
            history: status
                .history
                .iter()
                .map(|record| match record.repaired_at {
                    Some(at) => format!("{}; repaired from {at}", describe(&record.divergence)),
                    None => describe(&record.divergence),
                })
                .collect(),
            peers: status
                .peers
                .iter()
                .map(|peer| PeerAuditView {
                    id: peer.id.get(),
                    agreed: peer.agreed.get(),
                    reported: peer.reported.get(),
                    quarantined: peer.quarantined,
                    repairing: peer.repairing,
                })
                .collect(),
            divergences_found: status.stats.divergences_found,
            self_quarantines: status.stats.self_quarantines,
            repairs_done: status.stats.repairs_done,
        }
    }
}

/// How a role prints.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
        #[allow(unreachable_patterns)]
        _ => "learner",
    }
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}
