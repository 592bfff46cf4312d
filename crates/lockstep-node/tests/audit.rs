//! The audit's messages are network input: random ones (any index, any value, truncated
//! chains, chunks of no checkpoint, answers to nothing) from any member in the current term,
//! to the leader and to the followers, never panic a replica, and the cluster still commits.

#[path = "common/blobs.rs"]
mod blobs;
#[path = "common/cluster.rs"]
mod cluster;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cluster::Cluster;
use lockstep_core::message::{
    AuditMessage, ChainReport, DigestPoint, Divergence, DivergenceKind, RepairAnswer, RepairChunk,
};
use lockstep_core::{
    InstallSnapshot, LogIndex, Membership, Message, MessageBody, NodeId, SnapshotMeta, Term,
};
use lockstep_node::{AuditConfig, CheckpointPolicy};
use lockstep_storage::{Disk, Faults, SimDisk};
use proptest::prelude::*;

fn index() -> impl Strategy<Value = LogIndex> {
    prop_oneof![0..64u64, Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()].prop_map(LogIndex)
}

fn point() -> impl Strategy<Value = DigestPoint> {
    (index(), any::<u64>(), any::<[u8; 32]>()).prop_map(|(index, chain, digest)| DigestPoint {
        index,
        chain,
        digest,
    })
}

fn divergence() -> impl Strategy<Value = Divergence> {
    (1..4u64, index(), any::<bool>(), any::<u64>(), any::<u64>(), index()).prop_map(
        |(replica, index, exact, expected, found, detected_at)| Divergence {
            replica: NodeId(replica),
            kind: if exact { DivergenceKind::Output } else { DivergenceKind::State },
            index,
            exact,
            expected,
            found,
            entry: "random".to_string(),
            detected_at,
        },
    )
}

fn chunk() -> impl Strategy<Value = InstallSnapshot> {
    (index(), 0..4u64, any::<u64>(), prop::collection::vec(any::<u8>(), 0..64), any::<bool>())
        .prop_map(|(last_index, term, offset, data, good_checksum)| {
            let checksum = if good_checksum { crc32c::crc32c(&data) } else { 7 };
            InstallSnapshot {
                meta: SnapshotMeta {
                    last_index,
                    last_term: Term(term),
                    membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
                },
                total_bytes: offset.saturating_add(data.len() as u64),
                digest: [3; 32],
                offset,
                data: Bytes::from(data),
                checksum,
            }
        })
}

fn audit_message() -> impl Strategy<Value = AuditMessage> {
    prop_oneof![
        (
            index(),
            any::<u64>(),
            prop::collection::vec(point(), 0..3),
            index(),
            any::<bool>(),
            index()
        )
            .prop_map(
                |(applied, chain, digests, log_first, quarantined, restored_from)| {
                    AuditMessage::Report(ChainReport {
                        applied,
                        chain,
                        digests,
                        log_first,
                        quarantined,
                        restored_from,
                    })
                }
            ),
        (index(), index())
            .prop_map(|(after, through)| AuditMessage::ChainsRequest { after, through }),
        prop::collection::vec((index(), any::<u64>()), 0..8)
            .prop_map(|values| AuditMessage::Chains { values }),
        divergence().prop_map(AuditMessage::Quarantine),
        (chunk(), any::<[u8; 32]>(), any::<u64>()).prop_map(|(chunk, state_digest, chain)| {
            AuditMessage::RepairChunk(RepairChunk { chunk, state_digest, chain })
        }),
        (index(), any::<u64>(), any::<bool>(), prop::option::of(".{0,20}")).prop_map(
            |(index, next_offset, repaired, refused)| {
                AuditMessage::RepairAnswer(RepairAnswer { index, next_offset, repaired, refused })
            }
        ),
        point().prop_map(AuditMessage::Agreed),
        index().prop_map(|index| AuditMessage::Cleared { index }),
    ]
}

fn cluster(root: &Path) -> Cluster {
    let disk: Arc<dyn Disk> = Arc::new(SimDisk::new(7, Faults::default()));
    let policy =
        CheckpointPolicy { entries: 16, trailing_entries: 4, ..CheckpointPolicy::default() };
    let mut cluster = Cluster::new(disk, root, policy);
    let audit = AuditConfig { report_interval: 4, digest_interval: 8, ..AuditConfig::default() };
    for id in [1, 2, 3] {
        cluster.driver(NodeId(id)).set_audit(audit);
    }
    cluster
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_audit_messages_never_break_a_replica(
        messages in prop::collection::vec((1..4u64, 1..4u64, audit_message()), 1..24),
    ) {
        let mut cluster = cluster(Path::new("/audit"));
        cluster.elect();
        for key in 0..20 {
            cluster.put(key, Bytes::from(vec![key as u8; 8]));
        }
        for (from, to, message) in messages {
            if from == to {
                continue;
            }
            let term = cluster.driver(NodeId(to)).node().term();
            let message = Message {
                from: NodeId(from),
                to: NodeId(to),
                term,
                body: MessageBody::Audit(Box::new(message)),
            };
            cluster.driver(NodeId(to)).receive(message);
            cluster.settle();
        }
        for id in [1, 2, 3] {
            prop_assert!(cluster.driver(NodeId(id)).failure().is_none());
        }
        // Quarantined replicas still acknowledge appends: the cluster still commits.
        cluster.tick(60);
        let leader = cluster.elect();
        let before = cluster.driver(leader).node().commit_index();
        cluster.put(100, Bytes::from_static(b"after"));
        prop_assert!(cluster.driver(leader).node().commit_index() > before || cluster.leader() != Some(leader));
    }
}
