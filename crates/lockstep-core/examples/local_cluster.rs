//! A local three-replica cluster of lockstep cores, in one process and in memory: it elects a
//! leader, replicates commands, loses its leader to a partition, elects another, and brings the
//! old leader back up to date. Every step is checked against Raft's safety properties.
//!
//! `cargo run -p lockstep-core --example local_cluster [-- --seed N]`

// An example may use the harness's files and clocks; the purity rules are for `src/` only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
#![allow(missing_docs)]

#[path = "../tests/harness/mod.rs"]
mod harness;

use bytes::Bytes;
use harness::Cluster;
use lockstep_core::{Config, Event, NodeId};

/// Runs the cluster for one tick: every replica ticks, then outputs are carried out and
/// messages delivered until nothing moves. Prints the events.
fn run_tick(cluster: &mut Cluster) {
    for id in cluster.ids() {
        cluster.node_mut(id).tick();
    }
    for _ in 0..100 {
        let mut moved = false;
        for id in cluster.ids() {
            let output = cluster.process_ready(id);
            for event in &output.events {
                if matches!(
                    event,
                    Event::RoleChanged { .. } | Event::LeaderChanged { leader: Some(_), .. }
                ) {
                    println!("  replica {id}: {event}");
                }
            }
            moved |= !output.is_empty();
        }
        if !cluster.network.is_empty() {
            cluster.deliver_all(None);
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

fn run_until_leader(cluster: &mut Cluster, among: &[NodeId]) -> NodeId {
    for tick in 1..=500 {
        run_tick(cluster);
        if let Some(leader) = cluster.leaders().into_iter().find(|id| among.contains(id)) {
            println!(
                "  ... replica {leader} leads term {} after {tick} ticks",
                cluster.node(leader).term()
            );
            return leader;
        }
    }
    panic!("no leader elected");
}

fn propose(cluster: &mut Cluster, leader: NodeId, commands: &[&str]) {
    let batch = commands.iter().map(|command| Bytes::from(command.to_string())).collect();
    let proposed = cluster.node_mut(leader).propose(batch, 0).expect("the leader takes proposals");
    println!(
        "  proposed {:?} at indexes {}..{}",
        commands, proposed.first_index, proposed.last_index
    );
    for _ in 0..3 {
        run_tick(cluster);
    }
}

fn show(cluster: &Cluster) {
    for id in cluster.ids() {
        let node = cluster.node(id);
        let commands: Vec<String> = cluster.replicas[&id]
            .applied
            .iter()
            .filter_map(|entry| match &entry.payload {
                lockstep_core::EntryPayload::Command(command) => {
                    Some(String::from_utf8_lossy(&command.data).into_owned())
                }
                _ => None,
            })
            .collect();
        println!(
            "  replica {id}: {:<9} term {} commit {} applied {:?}",
            node.role().to_string(),
            node.term(),
            node.commit_index(),
            commands
        );
    }
}

fn main() {
    let seed: u64 = std::env::args()
        .skip_while(|argument| argument != "--seed")
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    println!("Three replicas start (seed {seed}); time is ticks.");
    let mut cluster = Cluster::new(&[1, 2, 3], |config: &mut Config| {
        config.random_seed = seed.wrapping_mul(31).wrapping_add(config.id.0);
    });
    let all = cluster.ids();
    let leader = run_until_leader(&mut cluster, &all);

    println!("\nThe leader replicates a batch of commands:");
    propose(&mut cluster, leader, &["x=1", "y=2", "z=3"]);
    show(&cluster);

    println!(
        "\nThe leader is cut off; the others elect a new leader (the old one, hearing from no"
    );
    println!("quorum, steps down after two election timeouts):");
    cluster.isolate(leader);
    let others: Vec<NodeId> = all.iter().copied().filter(|id| *id != leader).collect();
    let new_leader = run_until_leader(&mut cluster, &others);
    propose(&mut cluster, new_leader, &["x=4"]);
    show(&cluster);

    println!("\nThe partition heals; the old leader steps down and catches up:");
    cluster.heal();
    for _ in 0..5 {
        run_tick(&mut cluster);
    }
    show(&cluster);
    println!("\nEvery step was checked for election safety, log matching, leader completeness");
    println!("and state machine safety. Same seed, same run.");
}
