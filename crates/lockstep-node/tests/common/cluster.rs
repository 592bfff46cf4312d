//! A cluster of real drivers for tests: `LogStore`s on one disk (simulated or real), messages
//! delivered in order at once, writes synced and checkpoints written as soon as they are asked
//! for. Replicas can be cut off, restarted from their disk, and added.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use lockstep_core::{
    Config, LogIndex, Membership, Message, MessageBody, NodeId, Role, StateDigest, StateMachine,
};
use lockstep_node::{
    CheckpointPolicy, ClientId, ClientRequest, Completion, Driver, LocalStorage, LogStore,
    Replicated, SessionConfig, Transport,
};
use lockstep_storage::{Disk, WalOptions};

use super::blobs::{Blobs, Put};

#[derive(Default)]
pub struct Outbox(pub VecDeque<Message>);

impl Transport for Outbox {
    fn send(&mut self, message: Message) {
        self.0.push_back(message);
    }
}

pub type BlobDriver = Driver<Blobs, LocalStorage, Outbox>;

pub struct Cluster {
    pub disk: Arc<dyn Disk>,
    pub root: PathBuf,
    pub ids: Vec<NodeId>,
    pub drivers: BTreeMap<NodeId, BlobDriver>,
    /// Replicas cut off from everyone.
    pub isolated: Vec<NodeId>,
    pub policy: CheckpointPolicy,
    pub options: WalOptions,
    /// Largest message delivered (bytes of chunk data), to show chunks stay small.
    pub largest_chunk: usize,
    pub next_sequence: u64,
}

impl Cluster {
    pub fn new(disk: Arc<dyn Disk>, root: &Path, policy: CheckpointPolicy) -> Cluster {
        let ids = vec![NodeId(1), NodeId(2), NodeId(3)];
        let mut cluster = Cluster {
            disk,
            root: root.to_path_buf(),
            ids: ids.clone(),
            drivers: BTreeMap::new(),
            isolated: Vec::new(),
            policy,
            options: WalOptions { segment_bytes: 8 << 20, ..WalOptions::default() },
            largest_chunk: 0,
            next_sequence: 1,
        };
        for id in ids {
            cluster.start(id, true);
        }
        cluster
    }

    pub fn start(&mut self, id: NodeId, bootstrap: bool) {
        let membership = Membership::with_voters(self.ids.iter().copied());
        let dir = self.root.join(format!("replica-{}", id.0));
        let (store, initial) = LogStore::open(
            self.disk.clone(),
            &dir,
            bootstrap.then_some(&membership),
            self.options.clone(),
        )
        .expect("the replica opens");
        let mut state = Replicated::new(Blobs::default(), SessionConfig::default());
        if let Some(stored) = store.latest_snapshot().cloned() {
            let mut reader = store.snapshot_reader(&stored).expect("reader");
            state.restore(&mut reader).expect("the replica restores its snapshot");
        }
        let mut config = Config::new(id);
        config.append_bytes_max = 4 << 20;
        let mut driver =
            Driver::new(config, initial, state, LocalStorage::new(store), Outbox::default())
                .expect("a valid replica");
        driver.set_checkpoint_policy(self.policy);
        self.drivers.insert(id, driver);
    }

    /// Starts a new, empty replica `id` that joins knowing `membership` (which names it).
    pub fn add_replica(&mut self, id: NodeId, membership: &Membership) {
        let dir = self.root.join(format!("replica-{}", id.0));
        let (store, initial) =
            LogStore::open(self.disk.clone(), &dir, Some(membership), self.options.clone())
                .expect("the new replica opens");
        let state = Replicated::new(Blobs::default(), SessionConfig::default());
        let mut driver = Driver::new(
            Config::new(id),
            initial,
            state,
            LocalStorage::new(store),
            Outbox::default(),
        )
        .expect("a valid replica");
        driver.set_checkpoint_policy(self.policy);
        self.drivers.insert(id, driver);
        self.ids.push(id);
    }

    /// Stops replica `id` for good.
    pub fn stop(&mut self, id: NodeId) {
        self.drivers.remove(&id);
        self.ids.retain(|other| *other != id);
    }

    pub fn driver(&mut self, id: NodeId) -> &mut BlobDriver {
        self.drivers.get_mut(&id).expect("a replica of the cluster")
    }

    /// Runs every replica until nothing moves: messages delivered (except to or from isolated
    /// replicas), writes synced and reported, checkpoints written and reported.
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            for id in self.ids.clone() {
                let driver = self.driver(id);
                let write = driver.storage_mut().take_submitted();
                if write > 0 {
                    driver.storage_mut().sync().expect("the disk syncs");
                    driver.write_durable(write);
                    moved = true;
                }
                if let Some((meta, state)) = driver.storage_mut().take_checkpoint() {
                    driver
                        .storage_mut()
                        .save_checkpoint(meta.clone(), state.as_ref())
                        .expect("the checkpoint is written");
                    driver.checkpoint_saved(&meta);
                    moved = true;
                }
                let messages: Vec<Message> = driver.transport_mut().0.drain(..).collect();
                for message in messages {
                    moved = true;
                    if self.isolated.contains(&message.from) || self.isolated.contains(&message.to)
                    {
                        continue;
                    }
                    if let MessageBody::InstallSnapshot(chunk) = &message.body {
                        self.largest_chunk = self.largest_chunk.max(chunk.data.len());
                    }
                    let to = message.to;
                    if let Some(driver) = self.drivers.get_mut(&to) {
                        driver.receive(message);
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster did not settle");
    }

    pub fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for id in self.ids.clone() {
                self.driver(id).tick();
            }
            self.settle();
        }
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.drivers
            .iter()
            .find(|(_, driver)| driver.node().role() == Role::Leader)
            .map(|(id, _)| *id)
    }

    pub fn elect(&mut self) -> NodeId {
        for _ in 0..100 {
            if let Some(leader) = self.leader() {
                return leader;
            }
            self.tick(1);
        }
        panic!("no leader was elected");
    }

    /// Puts `value` under `key` through the leader and waits for the answer.
    pub fn put(&mut self, key: u64, value: Bytes) {
        let leader = self.elect();
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let request = ClientRequest { client: ClientId(7), sequence, input: Put { key, value } };
        let id = self.driver(leader).propose(request, 0);
        self.settle();
        let answered = self.driver(leader).take_completions().into_iter().any(
            |completion| matches!(completion, Completion::Done { request, .. } if request == id),
        );
        assert!(answered, "put {key} was answered");
    }

    pub fn digest(&self, id: NodeId) -> (LogIndex, StateDigest) {
        let driver = &self.drivers[&id];
        (driver.node().applied_index(), driver.state().machine().digest())
    }
}
