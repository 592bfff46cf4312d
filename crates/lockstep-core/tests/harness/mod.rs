//! A small hand-driven multi-replica harness for the core's tests and benchmark.
//!
//! Each replica has a core, a "disk" (what survived the last sync), writes that were handed out
//! but not yet synced, and a state machine that is just the list of applied entries. The
//! network is a list of messages in flight that the test delivers, drops or reorders as it
//! likes. Nothing here reads a clock or a global random source: runs replay exactly.
//!
//! The full deterministic simulator, with faulty disks and clients, is `lockstep-sim`; this is
//! only what the core's own tests need.

#![allow(dead_code)]

pub mod checker;
pub mod script;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use lockstep_core::{
    Config, Entry, HardState, InitialState, LogIndex, Membership, Message, Node, NodeId, Output,
    Persist, ReadId, ReadReady, Term,
};

pub use checker::SafetyChecker;

/// What a replica's disk holds.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    /// The snapshot the log continues after, if any.
    pub snapshot: Option<lockstep_core::SnapshotMeta>,
    pub entries: Vec<Entry>,
    /// Storage cut the log at damage and may have lost acknowledged entries through here; kept
    /// (as the larger of every cut's bound) until the durable log reaches it again.
    pub lost_through: Option<LogIndex>,
    /// The hard state's term when the entries were lost (as storage's note records it).
    pub lost_term_max: Option<Term>,
}

impl Disk {
    /// Writes `persist` in the order the output contract gives.
    pub fn write(&mut self, persist: &Persist) {
        if let Some(meta) = &persist.snapshot {
            self.entries.clear();
            self.snapshot = Some(meta.clone());
        }
        if let Some(from) = persist.truncate_from {
            self.entries.retain(|entry| entry.index < from);
        }
        for entry in &persist.entries {
            let start = self.snapshot.as_ref().map_or(LogIndex(1), |meta| meta.last_index.next());
            let expected = self.entries.last().map_or(start, |last| last.index.next());
            assert_eq!(entry.index, expected, "appended entries must continue the disk's log");
            self.entries.push(entry.clone());
        }
        if let Some(hard_state) = persist.hard_state {
            self.hard_state = hard_state;
        }
    }
}

/// A write handed out by the core and not yet durable, with what waits for it.
#[derive(Clone, Debug)]
pub struct PendingWrite {
    pub persist: Persist,
    pub messages_after_persist: Vec<Message>,
}

/// One replica.
#[derive(Debug)]
pub struct Replica {
    pub node: Node,
    pub config: Config,
    pub disk: Disk,
    pub unsynced: VecDeque<PendingWrite>,
    /// The state machine: every entry applied, in order, since the last restart.
    pub applied: Vec<Entry>,
    /// Reads the replica has served: (read, the applied index when served).
    pub reads_served: Vec<(ReadReady, LogIndex)>,
    /// Committed entries handed out but not applied yet (applied on the next `apply`).
    pub to_apply: VecDeque<Entry>,
    pub restarts: u64,
}

/// A cluster of replicas and the messages between them.
#[derive(Debug)]
pub struct Cluster {
    pub replicas: BTreeMap<NodeId, Replica>,
    pub membership: Membership,
    pub network: VecDeque<Message>,
    /// Directed links that drop everything: (from, to).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub checker: SafetyChecker,
    /// Check invariants and safety after every input.
    pub checks_enabled: bool,
    /// Record the first violation instead of panicking (for tests that expect one).
    pub record_violations: bool,
    /// The first violation found, when recording.
    pub violation: Option<String>,
    /// Reads asked for and not yet served: the highest commit index any replica knew when
    /// the read was asked for. A linearizable read must reflect at least that.
    pub reads_requested: BTreeMap<(NodeId, ReadId), LogIndex>,
}

impl Cluster {
    /// A new cluster of `ids`, each configured by `configure`.
    pub fn new(ids: &[u64], configure: impl Fn(&mut Config)) -> Cluster {
        let membership = Membership::with_voters(ids.iter().map(|id| NodeId(*id)));
        let mut cluster = Cluster {
            replicas: BTreeMap::new(),
            membership,
            network: VecDeque::new(),
            cut: BTreeSet::new(),
            checker: SafetyChecker::default(),
            checks_enabled: true,
            record_violations: false,
            violation: None,
            reads_requested: BTreeMap::new(),
        };
        for id in ids {
            let membership = cluster.membership.clone();
            cluster.add_replica(NodeId(*id), membership, &configure);
        }
        cluster
    }

    /// Starts replica `id` with an empty log, knowing the configuration `membership`.
    pub fn add_replica(
        &mut self,
        id: NodeId,
        membership: Membership,
        configure: &dyn Fn(&mut Config),
    ) {
        let mut config = Config::new(id);
        configure(&mut config);
        let initial = InitialState { membership, ..InitialState::new_cluster([id]) };
        let node = Node::new(config.clone(), initial).expect("valid configuration");
        let replica = Replica {
            node,
            config,
            disk: Disk::default(),
            unsynced: VecDeque::new(),
            applied: Vec::new(),
            reads_served: Vec::new(),
            to_apply: VecDeque::new(),
            restarts: 0,
        };
        self.replicas.insert(id, replica);
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.replicas.keys().copied().collect()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.replicas[&id].node
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.replica_mut(id).node
    }

    pub fn replica_mut(&mut self, id: NodeId) -> &mut Replica {
        self.replicas.get_mut(&id).unwrap_or_else(|| panic!("no replica {id}"))
    }

    /// The replicas that currently believe they lead, with their terms.
    pub fn leaders(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .filter(|(_, replica)| replica.node.role() == lockstep_core::Role::Leader)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Runs the invariant and safety checks; panics with the first violation.
    pub fn check(&mut self) {
        if !self.checks_enabled {
            return;
        }
        if let Err(violation) = self.try_check() {
            self.report(violation);
        }
    }

    fn report(&mut self, violation: String) {
        if self.record_violations {
            self.violation.get_or_insert(violation);
        } else {
            panic!("{violation}");
        }
    }

    pub fn try_check(&mut self) -> Result<(), String> {
        for replica in self.replicas.values() {
            replica.node.check_invariants()?;
        }
        let nodes: Vec<checker::NodeView> =
            self.replicas.values().map(|replica| checker::NodeView::of(&replica.node)).collect();
        self.checker.observe(&nodes)
    }

    /// Takes a replica's output, hands its writes to the (unsynced) disk queue, puts its
    /// immediate messages on the network, and queues its committed entries for applying.
    pub fn take_output(&mut self, id: NodeId) -> Output {
        let output = self.node_mut(id).take_output();
        let replica = self.replica_mut(id);
        if !output.persist.is_empty() || !output.messages_after_persist.is_empty() {
            replica.unsynced.push_back(PendingWrite {
                persist: output.persist.clone(),
                messages_after_persist: output.messages_after_persist.clone(),
            });
        }
        replica.to_apply.extend(output.committed.iter().cloned());
        let applied_index = replica.node.applied_index();
        for read in &output.reads {
            replica.reads_served.push((*read, applied_index));
        }
        for read in &output.reads {
            self.check_read(id, read, applied_index);
        }
        for event in &output.events {
            if let lockstep_core::Event::ReadRejected { id: read, .. } = event {
                self.reads_requested.remove(&(id, *read));
            }
        }
        self.network.extend(output.messages.iter().cloned());
        self.check();
        output
    }

    /// Asks replica `id` for a read, remembering what it must reflect.
    pub fn read_index(&mut self, id: NodeId, read: ReadId) {
        let known_commit = self
            .replicas
            .values()
            .map(|replica| replica.node.commit_index())
            .max()
            .unwrap_or_default();
        self.reads_requested.insert((id, read), known_commit);
        self.node_mut(id).read_index(read);
        self.check();
    }

    /// Read linearizability: a read served at index `read.index` must reflect every entry
    /// committed anywhere before it was asked for, and the replica must have applied it.
    fn check_read(&mut self, id: NodeId, read: &ReadReady, applied_index: LogIndex) {
        let Some(required) = self.reads_requested.remove(&(id, read.id)) else { return };
        if read.index < required {
            self.report(format!(
                "read linearizability: read {} at replica {id} has index {} but index {} was \
                 committed before it was asked for",
                read.id, read.index, required
            ));
        } else if applied_index < read.index {
            self.report(format!(
                "read linearizability: replica {id} served read {} at index {} having applied \
                 only {applied_index}",
                read.id, read.index
            ));
        }
    }

    /// Makes the oldest unsynced write of `id` durable, releases what waited for it and
    /// reports it to the core. Returns false if there was none.
    pub fn sync_one(&mut self, id: NodeId) -> bool {
        let replica = self.replica_mut(id);
        let Some(write) = replica.unsynced.pop_front() else { return false };
        replica.disk.write(&write.persist);
        let durable_last = replica.disk.entries.last().map(|entry| entry.index).or(replica
            .disk
            .snapshot
            .as_ref()
            .map(|meta| meta.last_index));
        if replica.disk.lost_through.is_some_and(|through| durable_last >= Some(through)) {
            replica.disk.lost_through = None;
            replica.disk.lost_term_max = None;
        }
        let last_written = write
            .persist
            .entries
            .last()
            .map(|last| (last.index, last.term))
            .or(write.persist.snapshot.as_ref().map(|meta| (meta.last_index, meta.last_term)));
        if let Some((index, term)) = last_written {
            replica.node.persisted(index, term);
        }
        self.network.extend(write.messages_after_persist);
        self.check();
        true
    }

    /// Syncs every write of `id`.
    pub fn sync_all(&mut self, id: NodeId) {
        while self.sync_one(id) {}
    }

    /// Applies the committed entries handed out to `id`.
    pub fn apply(&mut self, id: NodeId) {
        let replica = self.replica_mut(id);
        let mut batch: Vec<Entry> = Vec::new();
        while let Some(entry) = replica.to_apply.pop_front() {
            let expected = replica
                .applied
                .last()
                .map_or(replica.node.applied_index().next(), |previous| previous.index.next());
            assert_eq!(entry.index, expected, "entries are applied in order without gaps");
            replica.applied.push(entry.clone());
            batch.push(entry);
        }
        if let Some(last) = batch.last() {
            replica.node.applied(last.index);
            if !self.checks_enabled {
                return;
            }
            if let Err(violation) = self.checker.record_applied(id, &batch) {
                self.report(violation);
            }
        }
        self.check();
    }

    /// Takes the output of `id`, makes it durable at once and applies it: one full turn of a
    /// synchronous driver. Returns the output.
    pub fn process_ready(&mut self, id: NodeId) -> Output {
        let output = self.take_output(id);
        self.sync_all(id);
        self.apply(id);
        output
    }

    /// Delivers one message (dropping it if its link is cut). Returns whether it arrived.
    pub fn deliver(&mut self, message: Message) -> bool {
        if self.cut.contains(&(message.from, message.to))
            || !self.replicas.contains_key(&message.to)
        {
            return false;
        }
        self.node_mut(message.to).step(message);
        self.check();
        true
    }

    /// Delivers every message in flight (including ones produced meanwhile, up to a bound),
    /// optionally only those addressed to `to`. Returns (delivered, dropped).
    pub fn deliver_all(&mut self, to: Option<&[NodeId]>) -> (Vec<Message>, Vec<Message>) {
        let mut delivered = Vec::new();
        let mut dropped = Vec::new();
        let pending: Vec<Message> = self.network.drain(..).collect();
        for message in pending {
            if to.is_some_and(|targets| !targets.contains(&message.to)) {
                self.network.push_back(message);
                continue;
            }
            if self.deliver(message.clone()) {
                delivered.push(message);
            } else {
                dropped.push(message);
            }
        }
        (delivered, dropped)
    }

    /// Runs every replica as a synchronous driver and delivers every message until nothing
    /// moves (bounded). Returns a transcript.
    pub fn stabilize(&mut self) -> Vec<String> {
        let mut transcript = Vec::new();
        for _ in 0..1000 {
            let mut moved = false;
            for id in self.ids() {
                let output = self.process_ready(id);
                if !output.is_empty() {
                    moved = true;
                    transcript.push(format!("> {id} handling output"));
                    transcript.extend(script::format_output(&output));
                }
            }
            if !self.network.is_empty() {
                moved = true;
                let (delivered, dropped) = self.deliver_all(None);
                for message in delivered {
                    transcript.push(format!("  deliver {message}"));
                }
                for message in dropped {
                    transcript.push(format!("  dropped {message}"));
                }
            }
            if !moved {
                return transcript;
            }
        }
        panic!("cluster did not stabilize");
    }

    /// Crashes `id` (its unsynced writes are lost, and its volatile state) and restarts it from
    /// its disk.
    pub fn crash_and_restart(&mut self, id: NodeId) {
        self.crash_and_restart_losing(id, false);
    }

    /// Crashes `id` and, if `lose`, restarts it as storage that found damage in its log does:
    /// every entry after the snapshot is gone (set aside), and the replica is told it may
    /// have acknowledged entries through the highest it held.
    pub fn crash_and_restart_losing(&mut self, id: NodeId, lose: bool) {
        let membership = self.membership.clone();
        let replica = self.replica_mut(id);
        replica.unsynced.clear();
        replica.to_apply.clear();
        replica.applied.clear();
        replica.restarts += 1;
        let mut config = replica.config.clone();
        config.random_seed = config.random_seed.wrapping_add(replica.restarts.wrapping_mul(7919));
        if lose {
            let last = replica.disk.entries.last().map(|entry| entry.index);
            replica.disk.lost_through = replica.disk.lost_through.max(last);
            let term = replica.disk.hard_state.term;
            replica.disk.lost_term_max = replica.disk.lost_term_max.max(Some(term));
            replica.disk.entries.clear();
        }
        let lost_through = replica.disk.lost_through;
        let lost_term_max = replica.disk.lost_term_max;
        let initial = InitialState {
            hard_state: replica.disk.hard_state,
            snapshot: replica.disk.snapshot.clone(),
            entries: replica.disk.entries.clone(),
            membership,
            applied: LogIndex::ZERO,
            lost_through,
            lost_term_max,
        };
        replica.node = Node::new(config, initial).expect("a replica restarts from its own disk");
        self.check();
    }

    /// Cuts both directions between every member of `a` and every member of `b`.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for x in a {
            for y in b {
                self.cut.insert((*x, *y));
                self.cut.insert((*y, *x));
            }
        }
    }

    /// Cuts `id` off from everyone else.
    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.ids().into_iter().filter(|other| *other != id).collect();
        self.partition(&[id], &others);
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Ticks `id` until it starts an election (bounded by its largest timeout).
    pub fn tick_until_campaign(&mut self, id: NodeId) {
        let bound = self.replicas[&id].config.election_timeout_ticks_max + 1;
        for _ in 0..bound {
            let campaigns = |node: &Node| {
                let stats = node.stats();
                stats.pre_votes_started + stats.elections_started
            };
            let before = campaigns(self.node(id));
            self.node_mut(id).tick();
            self.check();
            if campaigns(self.node(id)) != before {
                return;
            }
        }
        panic!("node {id} did not campaign within {bound} ticks");
    }

    /// Elects `id`: it campaigns and the cluster stabilizes. Panics if it did not win.
    pub fn elect(&mut self, id: NodeId) {
        self.tick_until_campaign(id);
        self.stabilize();
        assert_eq!(self.node(id).role(), lockstep_core::Role::Leader, "node {id} was not elected");
    }
}
