//! Compaction and snapshot installation in the core: a leader that compacted past a follower
//! asks for a snapshot, routes its chunks, and the follower continues after it.

// Tests may read files and clocks; the purity rules are for `src/` only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod harness;

use bytes::Bytes;
use harness::Cluster;
use lockstep_core::{
    Event, InstallSnapshot, InstallSnapshotResponse, LogIndex, MessageBody, NodeId, RejectReason,
    SnapshotMeta,
};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);

fn propose(cluster: &mut Cluster, count: usize) {
    for round in 0..count {
        cluster
            .node_mut(A)
            .propose(vec![Bytes::from(format!("x{round}"))], 0)
            .expect("the leader takes proposals");
        cluster.stabilize();
    }
}

fn chunk(meta: &SnapshotMeta, offset: u64, data: &[u8], total_bytes: u64) -> InstallSnapshot {
    InstallSnapshot {
        meta: meta.clone(),
        total_bytes,
        digest: [9; 32],
        offset,
        data: Bytes::copy_from_slice(data),
        checksum: 0,
    }
}

/// A three-replica cluster where C missed entries that A and B compacted away.
fn compacted_past_c() -> (Cluster, SnapshotMeta) {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(A);
    propose(&mut cluster, 3);
    cluster.isolate(C);
    propose(&mut cluster, 5);
    // The safety checker compares logs position by position from index 1; compacted logs
    // start later, so this test checks what it needs itself.
    cluster.checks_enabled = false;
    let applied = cluster.node(A).applied_index();
    assert!(cluster.node(C).last_index() < applied);
    for id in [A, B] {
        cluster.node_mut(id).compact(applied);
        assert_eq!(cluster.node(id).log_entries().next().map(|e| e.index), None);
    }
    let meta = SnapshotMeta {
        last_index: applied,
        last_term: cluster.node(A).term(),
        membership: cluster.node(A).membership().clone(),
    };
    cluster.heal();
    (cluster, meta)
}

#[test]
fn a_follower_behind_the_compacted_log_gets_a_snapshot_and_catches_up() {
    let (mut cluster, meta) = compacted_past_c();
    // The leader finds it cannot append to C and asks for a snapshot.
    let mut needed = None;
    for _ in 0..50 {
        cluster.node_mut(A).tick();
        let output = cluster.take_output(A);
        cluster.sync_all(A);
        cluster.apply(A);
        for event in &output.events {
            if let Event::SnapshotNeeded { to, index } = event {
                needed = Some((*to, *index));
            }
        }
        if needed.is_some() {
            break;
        }
        cluster.deliver_all(None);
        cluster.take_output(C);
        cluster.sync_all(C);
    }
    assert_eq!(needed, Some((C, meta.last_index)), "the leader asks for a snapshot for C");

    // The driver offers the snapshot (an empty first chunk), then sends it whole.
    let body = b"state machine bytes";
    let total = body.len() as u64;
    assert!(cluster.node_mut(A).send_snapshot_chunk(C, chunk(&meta, 0, &[], total)));
    cluster.take_output(A);
    cluster.deliver_all(Some(&[C]));
    let output = cluster.take_output(C);
    assert_eq!(output.snapshot_chunks.len(), 1, "the chunk reaches C's driver");
    assert_eq!(output.snapshot_chunks[0].from, A);
    cluster.node_mut(C).answer_snapshot_chunk(
        A,
        InstallSnapshotResponse { last_index: meta.last_index, next_offset: 0, accepted: true },
    );
    cluster.take_output(C);
    cluster.deliver_all(Some(&[A]));
    let output = cluster.take_output(A);
    assert_eq!(output.snapshot_answers.len(), 1, "C's answer reaches A's driver");
    assert_eq!(output.snapshot_answers[0].answer.next_offset, 0);

    assert!(cluster.node_mut(A).send_snapshot_chunk(C, chunk(&meta, 0, body, total)));
    cluster.take_output(A);
    cluster.deliver_all(Some(&[C]));
    let output = cluster.take_output(C);
    assert_eq!(output.snapshot_chunks.len(), 1);

    // C's driver has the whole snapshot, restores its state machine, and installs it.
    assert!(cluster.node(C).wants_snapshot(&meta));
    assert!(cluster.node_mut(C).install_snapshot(A, meta.clone()));
    // (The harness's state machine is its list of applied entries: the snapshot replaced it.)
    let replica = cluster.replica_mut(C);
    replica.applied.clear();
    replica.to_apply.clear();
    assert_eq!(cluster.node(C).applied_index(), meta.last_index);
    assert_eq!(cluster.node(C).commit_index(), meta.last_index);
    let output = cluster.take_output(C);
    assert_eq!(output.persist.snapshot.as_ref(), Some(&meta), "C's log restarts after it");
    assert!(output.persist.entries.is_empty());
    assert!(output
        .messages_after_persist
        .iter()
        .any(|message| message.to == A && matches!(message.body, MessageBody::AppendResponse(_))));
    cluster.sync_all(C);
    // Installing it again changes nothing.
    assert!(!cluster.node_mut(C).install_snapshot(A, meta.clone()));

    // C acknowledges, the leader appends from there, and new entries reach everyone.
    cluster.stabilize();
    propose(&mut cluster, 2);
    let last = cluster.node(A).last_index();
    for id in [A, B, C] {
        assert_eq!(cluster.node(id).commit_index(), last, "replica {id}");
        assert_eq!(cluster.node(id).applied_index(), last, "replica {id}");
    }
    assert_eq!(cluster.node(C).stats().snapshots_installed, 1);

    // C restarts from its disk: the snapshot point and the entries after it.
    cluster.crash_and_restart(C);
    assert_eq!(cluster.node(C).last_index(), last);
    assert!(cluster.node(C).applied_index() >= meta.last_index);
}

#[test]
fn a_snapshot_the_follower_already_has_is_answered_with_its_commit() {
    let (mut cluster, meta) = compacted_past_c();
    let older = SnapshotMeta { last_index: LogIndex(1), ..meta.clone() };
    assert!(!cluster.node(B).wants_snapshot(&older));
    // A leader whose progress waits on no snapshot cannot send one.
    assert!(!cluster.node_mut(A).send_snapshot_chunk(B, chunk(&older, 0, &[], 0)));
    // B answers an old snapshot by telling how far it matches, and hands its driver nothing.
    let message = lockstep_core::Message {
        from: A,
        to: B,
        term: cluster.node(A).term(),
        body: MessageBody::InstallSnapshot(chunk(&older, 0, &[], 0)),
    };
    cluster.node_mut(B).step(message);
    let output = cluster.take_output(B);
    assert!(output.snapshot_chunks.is_empty());
    assert!(output.messages_after_persist.iter().any(|message| matches!(
        message.body,
        MessageBody::AppendResponse(lockstep_core::message::AppendResponse::Accepted { .. })
    )));
}

#[test]
fn an_answer_to_no_transfer_and_a_bad_chunk_are_refused() {
    let (mut cluster, meta) = compacted_past_c();
    let term = cluster.node(A).term();
    let answer = lockstep_core::Message {
        from: B,
        to: A,
        term,
        body: MessageBody::InstallSnapshotResponse(InstallSnapshotResponse {
            last_index: meta.last_index,
            next_offset: 10,
            accepted: true,
        }),
    };
    cluster.node_mut(A).step(answer);
    let output = cluster.take_output(A);
    assert!(output.snapshot_answers.is_empty());
    assert!(output.events.iter().any(|event| matches!(
        event,
        Event::MessageRejected { reason: RejectReason::SnapshotUnexpected, .. }
    )));

    // A chunk that claims to run past the snapshot's end is refused before anything sees it.
    let mut bad = chunk(&meta, 5, b"0123456789", 8);
    bad.meta.last_index = LogIndex(meta.last_index.get() + 100);
    let message =
        lockstep_core::Message { from: A, to: C, term, body: MessageBody::InstallSnapshot(bad) };
    cluster.node_mut(C).step(message);
    let output = cluster.take_output(C);
    assert!(output.snapshot_chunks.is_empty());
    assert!(output.events.iter().any(|event| matches!(event, Event::MessageRejected { .. })));
}
