//! Entries committed per second through a three-replica cluster of cores, with no I/O: the
//! ceiling the protocol itself puts on throughput.
//!
//! Each iteration proposes one batch on the leader and runs the replicas as synchronous
//! drivers (take the output, treat its writes as durable at once, deliver its messages, apply
//! its committed entries) until the leader has applied the batch. The driver here moves
//! outputs instead of recording them, so the figures are the core's cost, not a test
//! harness's. Run with `cargo bench -p lockstep-core --bench commit`.

#![allow(missing_docs)]
// Benchmarks may read clocks; the purity rules are for `src/` only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lockstep_core::{Config, InitialState, LogIndex, Message, Node, NodeId, Role};

/// Start a fresh cluster after this many entries, so memory stays bounded (the core keeps its
/// log in memory until snapshots compact it).
const ENTRIES_PER_CLUSTER_MAX: u64 = 100_000;

struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    network: VecDeque<Message>,
}

impl Cluster {
    fn new() -> (Cluster, NodeId) {
        let ids = [NodeId(1), NodeId(2), NodeId(3)];
        let nodes = ids
            .iter()
            .map(|id| {
                let node = Node::new(Config::new(*id), InitialState::new_cluster(ids))
                    .expect("valid configuration");
                (*id, node)
            })
            .collect();
        let mut cluster = Cluster { nodes, network: VecDeque::new() };
        let leader = NodeId(1);
        while cluster.nodes[&leader].role() != Role::Leader {
            if let Some(node) = cluster.nodes.get_mut(&leader) {
                node.tick();
            }
            cluster.run();
        }
        (cluster, leader)
    }

    /// One synchronous turn for every replica, then delivery, until nothing moves.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            for node in self.nodes.values_mut() {
                let output = node.take_output();
                moved |= !output.is_empty();
                self.network.extend(output.messages);
                if let Some(last) = output.persist.entries.last() {
                    node.persisted(last.index, last.term);
                }
                self.network.extend(output.messages_after_persist);
                if let Some(last) = output.committed.last() {
                    node.applied(last.index);
                }
            }
            while let Some(message) = self.network.pop_front() {
                moved = true;
                if let Some(node) = self.nodes.get_mut(&message.to) {
                    node.step(message);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn run_until_applied(&mut self, leader: NodeId, index: LogIndex) {
        while self.nodes[&leader].applied_index() < index {
            self.run();
        }
    }
}

fn commit_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit");
    for batch in [1usize, 64, 1024] {
        let commands: Vec<Bytes> = (0..batch).map(|_| Bytes::from(vec![7u8; 128])).collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::new("3 replicas, 128-byte commands", batch),
            &batch,
            |b, _| {
                b.iter_custom(|iterations| {
                    let (mut cluster, mut leader) = Cluster::new();
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iterations {
                        if cluster.nodes[&leader].last_index().get() > ENTRIES_PER_CLUSTER_MAX {
                            (cluster, leader) = Cluster::new();
                        }
                        let start = Instant::now();
                        let leader_node = cluster.nodes.get_mut(&leader).expect("leader exists");
                        let proposed = leader_node
                            .propose(commands.clone(), 0)
                            .expect("the leader accepts proposals");
                        cluster.run_until_applied(leader, proposed.last_index);
                        elapsed += start.elapsed();
                    }
                    elapsed
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, commit_throughput);
criterion_main!(benches);
