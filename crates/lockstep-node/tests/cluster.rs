//! Three drivers with in-memory storage and network: a request is applied once however often
//! it is retried, reads see acknowledged writes, and messages that promise a write leave only
//! once it is durable.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};

use lockstep_core::{
    ApplyContext, Config, InitialState, Message, NodeId, Persist, StateDigest, StateMachine,
    StateSnapshot,
};
use lockstep_node::{
    ClientId, ClientRequest, Completion, Driver, Refusal, Replicated, RequestId, SessionConfig,
    Storage, Transport,
};
use serde::{Deserialize, Serialize};

/// A key-value map that counts how many inputs it applied.
#[derive(Default)]
struct Kv {
    map: BTreeMap<String, String>,
    applied: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum KvInput {
    Put(String, String),
}

struct KvSnapshot(Vec<u8>);

impl StateSnapshot for KvSnapshot {
    fn write_to(&self, out: &mut dyn io::Write) -> io::Result<()> {
        out.write_all(&self.0)
    }
}

impl StateMachine for Kv {
    type Input = KvInput;
    type Output = Option<String>;
    type Query = String;
    type Snapshot = KvSnapshot;

    fn apply(&mut self, input: KvInput, _: &ApplyContext) -> Option<String> {
        self.applied += 1;
        let KvInput::Put(key, value) = input;
        self.map.insert(key, value)
    }

    fn query(&self, key: &String) -> Option<String> {
        self.map.get(key).cloned()
    }

    fn snapshot(&self) -> KvSnapshot {
        KvSnapshot(postcard::to_stdvec(&self.map.iter().collect::<Vec<_>>()).unwrap_or_default())
    }

    fn restore(&mut self, _: &mut dyn io::Read) -> io::Result<()> {
        Ok(())
    }

    fn digest(&self) -> StateDigest {
        StateDigest([0; 32])
    }
}

/// Writes wait here until the test makes them durable.
#[derive(Default)]
struct MemoryStorage {
    pending: VecDeque<(u64, Persist)>,
}

impl Storage for MemoryStorage {
    fn submit(&mut self, write: u64, persist: Persist) {
        self.pending.push_back((write, persist));
    }

    fn command_bytes_max(&self) -> u64 {
        1024
    }
}

#[derive(Clone, Default)]
struct Network(Arc<Mutex<VecDeque<Message>>>);

impl Network {
    /// Everything in flight, removed from the network.
    fn take(&self) -> Vec<Message> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect()
    }

    /// How many messages in flight `node` sent.
    fn sent_by(&self, node: u64) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|m| m.from == NodeId(node))
            .count()
    }
}

impl Transport for Network {
    fn send(&mut self, message: Message) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push_back(message);
    }
}

type KvDriver = Driver<Kv, MemoryStorage, Network>;

struct Cluster {
    drivers: BTreeMap<NodeId, KvDriver>,
    network: Network,
    completions: Vec<(NodeId, Completion<Option<String>>)>,
}

impl Cluster {
    fn new() -> Cluster {
        let ids = [NodeId(1), NodeId(2), NodeId(3)];
        let network = Network::default();
        let drivers = ids
            .iter()
            .map(|id| {
                let driver = Driver::new(
                    Config::new(*id),
                    InitialState::new_cluster(ids),
                    Replicated::new(Kv::default(), SessionConfig::default()),
                    MemoryStorage::default(),
                    network.clone(),
                )
                .expect("valid");
                (*id, driver)
            })
            .collect();
        Cluster { drivers, network, completions: Vec::new() }
    }

    fn driver(&mut self, id: u64) -> &mut KvDriver {
        self.drivers.get_mut(&NodeId(id)).expect("exists")
    }

    /// Makes every pending write durable and delivers every message, until quiet.
    fn settle(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            for (id, driver) in self.drivers.iter_mut() {
                while let Some((write, _)) = driver.storage_mut().pending.pop_front() {
                    driver.write_durable(write);
                    moved = true;
                }
                for completion in driver.take_completions() {
                    self.completions.push((*id, completion));
                }
            }
            for message in self.network.take() {
                moved = true;
                if let Some(driver) = self.drivers.get_mut(&message.to) {
                    driver.receive(message);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn elect(&mut self, id: u64) {
        for _ in 0..100 {
            self.driver(id).tick();
            self.settle();
            if self.driver(id).node().role() == lockstep_core::Role::Leader {
                return;
            }
        }
        panic!("{id} was not elected");
    }

    /// The answer replica `node` gave to its request `request` (request ids are per replica).
    fn answer(&self, node: u64, request: RequestId) -> Option<&Completion<Option<String>>> {
        let answers = self.completions.iter().filter(|(id, _)| *id == NodeId(node));
        answers.map(|(_, completion)| completion).find(|completion| match completion {
            Completion::Done { request: r, .. } | Completion::Refused { request: r, .. } => {
                *r == request
            }
        })
    }
}

fn put(client: u64, sequence: u64, key: &str, value: &str) -> ClientRequest<KvInput> {
    ClientRequest {
        client: ClientId(client),
        sequence,
        input: KvInput::Put(key.into(), value.into()),
    }
}

#[test]
fn a_retried_request_is_applied_once_and_answered_alike() {
    let mut cluster = Cluster::new();
    cluster.elect(1);
    let first = cluster.driver(1).propose(put(9, 1, "k", "v1"), 1);
    cluster.settle();
    assert_eq!(cluster.answer(1, first), Some(&Completion::Done { request: first, output: None }));
    // The client did not hear the answer and retries: same session, same number.
    let retry = cluster.driver(1).propose(put(9, 1, "k", "v1"), 2);
    cluster.settle();
    assert_eq!(cluster.answer(1, retry), Some(&Completion::Done { request: retry, output: None }));
    for id in 1..=3 {
        assert_eq!(cluster.driver(id).state().machine().applied, 1, "replica {id} applied it once");
    }
    // An older request of the same client is refused.
    let next = cluster.driver(1).propose(put(9, 2, "k", "v2"), 3);
    cluster.settle();
    assert_eq!(
        cluster.answer(1, next),
        Some(&Completion::Done { request: next, output: Some("v1".into()) })
    );
    let old = cluster.driver(1).propose(put(9, 1, "k", "v1"), 4);
    cluster.settle();
    assert_eq!(
        cluster.answer(1, old),
        Some(&Completion::Refused { request: old, refusal: Refusal::Stale })
    );
}

#[test]
fn reads_see_acknowledged_writes_on_the_leader_and_on_followers() {
    let mut cluster = Cluster::new();
    cluster.elect(1);
    let write = cluster.driver(1).propose(put(1, 1, "x", "42"), 1);
    cluster.settle();
    assert!(matches!(cluster.answer(1, write), Some(Completion::Done { .. })));
    for id in 1..=3 {
        let read = cluster.driver(id).read("x".to_string());
        cluster.settle();
        assert_eq!(
            cluster.answer(id, read),
            Some(&Completion::Done { request: read, output: Some("42".into()) }),
            "read on replica {id}"
        );
    }
}

#[test]
fn a_follower_refuses_proposals_with_the_leader_id() {
    let mut cluster = Cluster::new();
    cluster.elect(1);
    let request = cluster.driver(2).propose(put(1, 1, "x", "1"), 1);
    cluster.settle();
    assert_eq!(
        cluster.answer(2, request),
        Some(&Completion::Refused {
            request,
            refusal: Refusal::NotLeader { leader: Some(NodeId(1)) }
        })
    );
}

#[test]
fn acknowledgements_wait_for_the_write_they_promise() {
    let mut cluster = Cluster::new();
    cluster.elect(1);
    cluster.driver(1).propose(put(1, 1, "x", "1"), 1);
    // Deliver the leader's append to 2, but keep 2's write pending.
    for message in cluster.network.take().into_iter().filter(|m| m.to == NodeId(2)) {
        cluster.driver(2).receive(message);
    }
    assert!(!cluster.driver(2).storage_mut().pending.is_empty(), "2 has a write pending");
    assert_eq!(cluster.network.sent_by(2), 0, "2 acknowledges nothing before its write is durable");
    let (write, _) = cluster.driver(2).storage_mut().pending.pop_front().expect("pending");
    cluster.driver(2).write_durable(write);
    let sent_by_2 = cluster.network.sent_by(2);
    assert_eq!(sent_by_2, 1, "then its acknowledgement leaves");
}

#[test]
fn a_request_too_large_for_the_log_is_refused_before_it_is_proposed() {
    let mut cluster = Cluster::new();
    cluster.elect(1);
    let last = cluster.driver(1).node().last_index();
    let request = cluster.driver(1).propose(put(1, 1, "x", &"v".repeat(2000)), 1);
    assert_eq!(cluster.driver(1).node().last_index(), last, "nothing was appended");
    cluster.settle();
    assert!(matches!(
        cluster.answer(1, request),
        Some(Completion::Refused { refusal: Refusal::TooLarge { max: 1024, .. }, .. })
    ));
}

#[test]
fn a_batch_of_proposals_is_answered_request_by_request() {
    let mut cluster = Cluster::new();
    cluster.elect(1);
    let before = cluster.driver(1).node().last_index();
    // Two sessions, a retry of the first request inside the same batch, and one too large.
    let batch = vec![
        put(1, 1, "a", "1"),
        put(2, 1, "b", "2"),
        put(1, 1, "a", "1"),
        put(1, 2, "a", &"v".repeat(2000)),
        put(1, 2, "a", "3"),
    ];
    let ids = cluster.driver(1).propose_batch(batch, 1);
    assert_eq!(ids.len(), 5);
    // One entry per request that fits, all in one go.
    assert_eq!(cluster.driver(1).node().last_index().0, before.0 + 4);
    cluster.settle();
    assert_eq!(
        cluster.answer(1, ids[0]),
        Some(&Completion::Done { request: ids[0], output: None })
    );
    assert_eq!(
        cluster.answer(1, ids[1]),
        Some(&Completion::Done { request: ids[1], output: None })
    );
    // The retry is answered as the first was, and applied once.
    assert_eq!(
        cluster.answer(1, ids[2]),
        Some(&Completion::Done { request: ids[2], output: None })
    );
    assert!(matches!(
        cluster.answer(1, ids[3]),
        Some(Completion::Refused { refusal: Refusal::TooLarge { .. }, .. })
    ));
    assert_eq!(
        cluster.answer(1, ids[4]),
        Some(&Completion::Done { request: ids[4], output: Some("1".into()) })
    );
    for id in 1..=3 {
        assert_eq!(cluster.driver(id).state().machine().applied, 3, "replica {id}");
    }
    // On a follower, the whole batch is refused with the leader's id.
    let refused =
        cluster.driver(2).propose_batch(vec![put(3, 1, "c", "1"), put(4, 1, "d", "1")], 2);
    cluster.settle();
    for id in refused {
        assert!(matches!(
            cluster.answer(2, id),
            Some(Completion::Refused { refusal: Refusal::NotLeader { .. }, .. })
        ));
    }
}
