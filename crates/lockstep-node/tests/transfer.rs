//! Checkpoints, compaction and state transfer through real drivers and `LogStore`s: a follower
//! left behind while the others compacted past it receives a checkpoint in chunks, installs it
//! and catches up; after a restart it recovers from that checkpoint; bad chunks are refused and
//! never installed. One test runs a 200 MB state machine on the real file system and measures
//! the memory the transfer takes on both sides.

// Tests may read files and clocks.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use lockstep_core::{InstallSnapshot, LogIndex, Message, MessageBody, NodeId, SnapshotMeta};
use lockstep_node::{CheckpointPolicy, Storage};
use lockstep_storage::{Disk, Faults, RealDisk, SimDisk, WalOptions};

// ----- memory accounting ---------------------------------------------------------------------

/// A field of /proc/self/status, in bytes (Linux).
fn status_bytes(field: &str) -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// Resets the process's peak resident size to its current one (Linux: clear_refs 5).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[path = "common/blobs.rs"]
mod blobs;

#[path = "common/cluster.rs"]
mod cluster;
use cluster::Cluster;

fn small_policy() -> CheckpointPolicy {
    CheckpointPolicy {
        entries: 20,
        bytes: 1 << 30,
        growth_percent: 0,
        log_bytes_max: u64::MAX,
        trailing_entries: 5,
        chunk_bytes: 512,
        chunks_in_flight: 2,
        transfer_timeout_ticks: 10,
    }
}

/// Writes `count` values of `size` bytes with replica 3 cut off, so the others checkpoint and
/// compact past it; returns the cluster with 3 still cut off.
fn leave_three_behind(cluster: &mut Cluster, count: u64, size: usize) {
    cluster.elect();
    cluster.put(0, Bytes::from_static(b"before"));
    cluster.isolated.push(NodeId(3));
    // Make sure replica 3 is not the leader.
    while cluster.leader().is_none_or(|leader| leader == NodeId(3)) {
        cluster.tick(1);
    }
    for key in 1..=count {
        let value: Vec<u8> = (0..size).map(|i| (i as u64 * 31 + key) as u8).collect();
        cluster.put(key, Bytes::from(value));
    }
    let leader = cluster.elect();
    let first_held = cluster.drivers[&leader].node().log_entries().next().map(|e| e.index);
    let behind = cluster.drivers[&NodeId(3)].node().last_index();
    assert!(
        first_held.is_some_and(|first| first > behind.next()),
        "the leader compacted past replica 3 ({first_held:?} vs {behind})"
    );
}

#[test]
fn a_follower_left_behind_receives_a_checkpoint_and_recovers_from_it() {
    let disk: Arc<dyn Disk> = Arc::new(SimDisk::new(1, Faults::default()));
    let mut cluster = Cluster::new(disk, Path::new("/cluster"), small_policy());
    leave_three_behind(&mut cluster, 100, 200);
    cluster.isolated.clear();
    cluster.tick(60);
    let leader = cluster.elect();
    assert!(cluster.drivers[&leader].checkpoint_stats().transfers_sent >= 1);
    let stats = cluster.drivers[&NodeId(3)].checkpoint_stats();
    assert_eq!(stats.transfers_received, 1, "{stats:?}");
    assert!(cluster.largest_chunk <= 512, "chunks of at most the policy's size");
    cluster.put(1000, Bytes::from_static(b"after"));
    let expected = cluster.digest(leader);
    for id in [NodeId(1), NodeId(2), NodeId(3)] {
        assert_eq!(cluster.digest(id), expected, "replica {id} agrees");
    }
    // Replica 3 restarts from its disk: the received checkpoint plus the log after it.
    cluster.drivers.remove(&NodeId(3));
    cluster.start(NodeId(3), false);
    cluster.tick(30);
    cluster.put(1001, Bytes::from_static(b"after the restart"));
    let leader = cluster.elect();
    let expected = cluster.digest(leader);
    assert_eq!(cluster.digest(NodeId(3)), expected);
}

#[test]
fn bad_chunks_are_refused_and_never_installed() {
    let disk: Arc<dyn Disk> = Arc::new(SimDisk::new(2, Faults::default()));
    let mut cluster = Cluster::new(disk, Path::new("/cluster"), small_policy());
    leave_three_behind(&mut cluster, 60, 50);
    let leader = cluster.elect();
    let term = cluster.drivers[&leader].node().term();
    let commit = cluster.drivers[&leader].node().commit_index();
    let meta = SnapshotMeta {
        last_index: commit,
        last_term: cluster.drivers[&leader].node().log_term(commit).expect("held"),
        membership: cluster.drivers[&leader].node().membership().clone(),
    };
    let chunk = |offset: u64, data: &'static [u8], checksum: u32| InstallSnapshot {
        meta: meta.clone(),
        total_bytes: 100,
        digest: [1; 32],
        offset,
        data: Bytes::from_static(data),
        checksum,
    };
    let send = |cluster: &mut Cluster, chunk: InstallSnapshot| {
        let message = Message {
            from: leader,
            to: NodeId(3),
            term,
            body: MessageBody::InstallSnapshot(chunk),
        };
        cluster.driver(NodeId(3)).receive(message);
        cluster.driver(NodeId(3)).transport_mut().0.drain(..).collect::<Vec<Message>>()
    };
    let refused = |answers: &[Message]| {
        answers.iter().any(|message| {
            matches!(&message.body, MessageBody::InstallSnapshotResponse(answer) if !answer.accepted)
        })
    };
    // A chunk whose checksum does not match its bytes.
    let answers = send(&mut cluster, chunk(0, b"0123456789", 12345));
    assert!(refused(&answers), "{answers:?}");
    // A chunk out of order (nothing was received yet, so it must start at 0).
    let good = crc32c::crc32c(b"0123456789");
    let answers = send(&mut cluster, chunk(50, b"0123456789", good));
    assert!(refused(&answers), "{answers:?}");
    // A whole "snapshot" whose bytes are no snapshot file: refused at the end.
    let body: &'static [u8] = &[7u8; 100];
    let mut whole = chunk(0, body, crc32c::crc32c(body));
    whole.total_bytes = 100;
    let answers = send(&mut cluster, whole);
    assert!(refused(&answers), "{answers:?}");
    let stats = cluster.drivers[&NodeId(3)].checkpoint_stats();
    assert_eq!(stats.transfers_received, 0);
    assert_eq!(stats.chunks_refused, 3, "{stats:?}");
    let reasons: Vec<&str> = cluster.drivers[&NodeId(3)].snapshot_refusals().collect();
    assert!(reasons[0].contains("CRC32C"), "{reasons:?}");
    assert!(reasons[1].contains("arrived while 0 bytes were written"), "{reasons:?}");
    assert!(reasons[2].contains("footer"), "{reasons:?}");
    // A snapshot older than what replica 3 has committed never reaches its driver: its core
    // answers with how far its log matches.
    let old = SnapshotMeta { last_index: LogIndex(1), ..meta.clone() };
    let mut stale = chunk(0, b"", crc32c::crc32c(b""));
    stale.meta = old;
    let answers = send(&mut cluster, stale);
    assert!(answers.iter().all(|m| !matches!(m.body, MessageBody::InstallSnapshotResponse(_))));
    assert_eq!(cluster.drivers[&NodeId(3)].checkpoint_stats().chunks_refused, 3);
    assert_eq!(cluster.drivers[&NodeId(3)].node().stats().snapshots_installed, 0);
    // The cluster still heals by a real transfer.
    cluster.isolated.clear();
    cluster.tick(60);
    assert_eq!(cluster.drivers[&NodeId(3)].checkpoint_stats().transfers_received, 1);
    let leader = cluster.elect();
    let expected = cluster.digest(leader);
    assert_eq!(cluster.digest(NodeId(3)), expected);
}

/// With a growth condition, a checkpoint waits until the log since the last one is as large as
/// that checkpoint: a state that keeps growing is rewritten less and less often.
#[test]
fn checkpoints_wait_for_the_log_to_grow_by_the_set_percentage_of_the_last_one() {
    let count = |growth_percent, log_bytes_max| {
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new(3, Faults::default()));
        let policy = CheckpointPolicy { growth_percent, log_bytes_max, ..small_policy() };
        let mut cluster = Cluster::new(disk, Path::new("/cluster"), policy);
        let leader = cluster.elect();
        // Every key is new: the state grows by what each entry carries.
        for key in 1..=400 {
            cluster.put(key, Bytes::from(vec![key as u8; 100]));
        }
        let stats = cluster.drivers[&leader].checkpoint_stats();
        let checkpoint = cluster.drivers[&leader].storage().latest_checkpoint();
        (stats.checkpoints_saved, checkpoint)
    };
    let (every_20, _) = count(0, u64::MAX);
    let (grown, latest) = count(100, u64::MAX);
    assert!(every_20 >= 15, "a checkpoint every 20 entries: {every_20}");
    // Each checkpoint holds every value so far, so each waits for as many new bytes as all
    // before: the count grows with the logarithm of the writes, not linearly.
    assert!((3..=8).contains(&grown), "checkpoints with growth 100%: {grown} (vs {every_20})");
    let latest = latest.expect("a checkpoint");
    assert!(latest.meta.last_index.get() > 200, "checkpoints still taken: {latest:?}");
    // A cap on the log since the last checkpoint (it is held in memory) takes a checkpoint
    // once that much was applied, whatever the growth rule says: about every 40 entries here.
    let (capped, _) = count(100, 40 * 100);
    assert!(capped >= 9, "checkpoints with growth 100% and a log capped at 4,000 bytes: {capped}");
    eprintln!(
        "checkpoints: {every_20} every 20 entries, {grown} with growth 100%, {capped} with the \
         log capped"
    );
}

/// 200 MB of state on the real file system: the transfer runs in 1 MiB chunks with 4 in
/// flight, and its peak memory beyond the replicas' own state stays under a stated bound.
#[test]
fn a_200_mb_state_is_transferred_in_chunks_within_a_memory_bound() {
    let root = std::env::temp_dir().join(format!("lockstep-transfer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("a temporary directory");
    let policy = CheckpointPolicy {
        entries: 50,
        bytes: 150 << 20,
        growth_percent: 0,
        log_bytes_max: u64::MAX,
        trailing_entries: 2,
        chunk_bytes: 1 << 20,
        chunks_in_flight: 4,
        transfer_timeout_ticks: 50,
    };
    let mut cluster = Cluster::new(Arc::new(RealDisk), &root, policy);
    cluster.options = WalOptions { segment_bytes: 64 << 20, ..WalOptions::default() };
    const VALUE: usize = 1 << 20;
    const VALUES: u64 = 200;
    leave_three_behind(&mut cluster, VALUES, VALUE);
    let measured = reset_peak();
    let before = status_bytes("VmRSS:").unwrap_or(0);
    cluster.isolated.clear();
    cluster.tick(40);
    let peak = status_bytes("VmHWM:").unwrap_or(0);
    let after = status_bytes("VmRSS:").unwrap_or(0);
    let stats = cluster.drivers[&NodeId(3)].checkpoint_stats();
    assert_eq!(stats.transfers_received, 1, "{stats:?}");
    let leader = cluster.elect();
    let expected = cluster.digest(leader);
    assert_eq!(cluster.digest(NodeId(3)), expected, "replica 3 caught up");
    let state_bytes = VALUES as usize * VALUE;
    // Replica 3 now holds the whole state (it held almost none before); whatever else the
    // process grew by while the transfer ran, on both sides, is the transfer's overhead.
    let overhead = peak.saturating_sub(before).saturating_sub(state_bytes);
    println!(
        "200 MB transfer: resident before {} MiB, peak {} MiB, after {} MiB; beyond the \
         received state the transfer took {} MiB; largest chunk {} KiB",
        before >> 20,
        peak >> 20,
        after >> 20,
        overhead >> 20,
        cluster.largest_chunk >> 10
    );
    assert!(cluster.largest_chunk <= 1 << 20);
    const OVERHEAD_MAX: usize = 64 << 20;
    if measured {
        assert!(
            overhead < OVERHEAD_MAX,
            "the transfer took {} MiB beyond the state it moved (bound {} MiB)",
            overhead >> 20,
            OVERHEAD_MAX >> 20
        );
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&root);
}
