//! Entries committed per second through a three-replica cluster of cores, with no I/O: the
//! ceiling the protocol itself puts on throughput.
//!
//! Each iteration proposes one batch on the leader and runs the replicas as synchronous
//! drivers (take the output, "write" it to an in-memory disk, deliver messages, apply) until
//! the leader has applied the batch. Run with `cargo bench -p lockstep-core --bench commit`.

// Tests and benchmarks may read files and clocks; the purity rules are for `src/` only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
#![allow(missing_docs)]

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use harness::Cluster;
use lockstep_core::{Config, NodeId, Role};

/// Start a fresh cluster after this many entries, so memory stays bounded (the core keeps its
/// log in memory until snapshots compact it).
const ENTRIES_PER_CLUSTER_MAX: u64 = 200_000;

fn new_cluster() -> (Cluster, NodeId) {
    let mut cluster = Cluster::new(&[1, 2, 3], |config: &mut Config| {
        config.messages_in_flight_max = 256;
    });
    cluster.checks_enabled = false;
    let leader = NodeId(1);
    cluster.elect(leader);
    assert_eq!(cluster.node(leader).role(), Role::Leader);
    (cluster, leader)
}

/// Runs every replica until the leader has applied `index`.
fn drive_until_applied(cluster: &mut Cluster, leader: NodeId, index: lockstep_core::LogIndex) {
    let ids = cluster.ids();
    while cluster.node(leader).applied_index() < index {
        for id in &ids {
            cluster.take_output(*id);
            cluster.sync_all(*id);
            cluster.apply(*id);
        }
        let messages: Vec<_> = cluster.network.drain(..).collect();
        for message in messages {
            cluster.deliver(message);
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
                    let (mut cluster, mut leader) = new_cluster();
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iterations {
                        if cluster.node(leader).last_index().get() > ENTRIES_PER_CLUSTER_MAX {
                            (cluster, leader) = new_cluster();
                        }
                        let start = Instant::now();
                        let proposed = cluster
                            .node_mut(leader)
                            .propose(commands.clone(), 0)
                            .expect("the leader accepts proposals");
                        drive_until_applied(&mut cluster, leader, proposed.last_index);
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
