//! Random message sequences, valid or not, never panic a replica or break its invariants.
//!
//! proptest prints the failing case (shrunk) and saves its seed under
//! `proptest-regressions/`; `PROPTEST_CASES=<n>` runs more cases.

// Tests and benchmarks may read files and clocks; the purity rules are for `src/` only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::VecDeque;

use bytes::Bytes;
use lockstep_core::message::{
    AppendRequest, AppendResponse, Heartbeat, HeartbeatResponse, InstallSnapshot,
    InstallSnapshotResponse, LostCheck, ReadIndexRequest, ReadIndexResponse, VoteRequest,
    VoteResponse,
};
use lockstep_core::{
    Command, Config, Entry, EntryPayload, InitialState, LogIndex, Membership, Message, MessageBody,
    Node, NodeId, ReadId, SnapshotMeta, Term,
};
use proptest::prelude::*;

/// Terms and indexes near the interesting edges: small values, and values too large to be real.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0u64..12, 1 => Just(u64::MAX), 1 => Just(u64::MAX / 2), 1 => any::<u64>()]
}

fn node_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![6 => (1u64..=3).prop_map(NodeId), 1 => Just(NodeId(9)), 1 => Just(NodeId(0))]
}

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec((number(), number(), prop::bool::ANY), 0..5).prop_map(|raw| {
        raw.into_iter()
            .map(|(index, term, noop)| Entry {
                term: Term(term),
                index: LogIndex(index),
                payload: if noop {
                    EntryPayload::Noop
                } else {
                    EntryPayload::Command(Command {
                        data: Bytes::from_static(b"x"),
                        timestamp_millis: 0,
                    })
                },
            })
            .collect()
    })
}

/// Appends whose entries follow `prev` (mostly well formed, so they get past validation).
fn consecutive_entries() -> impl Strategy<Value = (u64, u64, Vec<u64>)> {
    (0u64..8, 0u64..6, prop::collection::vec(0u64..7, 0..5))
}

fn body() -> impl Strategy<Value = MessageBody> {
    let vote = || {
        (number(), number(), prop::bool::ANY).prop_map(|(index, term, transfer)| VoteRequest {
            last_log_index: LogIndex(index),
            last_log_term: Term(term),
            leadership_transfer: transfer,
        })
    };
    prop_oneof![
        vote().prop_map(MessageBody::PreVote),
        vote().prop_map(MessageBody::Vote),
        prop::bool::ANY.prop_map(|granted| MessageBody::PreVoteResponse(VoteResponse { granted })),
        prop::bool::ANY.prop_map(|granted| MessageBody::VoteResponse(VoteResponse { granted })),
        (number(), number(), entries(), number()).prop_map(
            |(prev_index, prev_term, entries, commit)| {
                MessageBody::Append(AppendRequest {
                    prev_index: LogIndex(prev_index),
                    prev_term: Term(prev_term),
                    entries,
                    commit: LogIndex(commit),
                })
            }
        ),
        (consecutive_entries(), number()).prop_map(|((prev_index, prev_term, terms), commit)| {
            let mut term = prev_term;
            let entries = terms
                .into_iter()
                .enumerate()
                .map(|(position, bump)| {
                    term += bump % 2;
                    Entry {
                        term: Term(term.max(1)),
                        index: LogIndex(prev_index + 1 + position as u64),
                        payload: EntryPayload::Noop,
                    }
                })
                .collect();
            MessageBody::Append(AppendRequest {
                prev_index: LogIndex(prev_index),
                prev_term: Term(prev_term),
                entries,
                commit: LogIndex(commit),
            })
        }),
        number().prop_map(|index| MessageBody::AppendResponse(AppendResponse::Accepted {
            match_index: LogIndex(index)
        })),
        (number(), number(), number(), any::<bool>()).prop_map(
            |(rejected, hint_index, hint_term, lost)| {
                MessageBody::AppendResponse(AppendResponse::Rejected {
                    rejected_index: LogIndex(rejected),
                    hint_index: LogIndex(hint_index),
                    hint_term: Term(hint_term),
                    lost_entries: lost.then_some(hint_term),
                })
            }
        ),
        (number(), number(), number(), number()).prop_map(|(commit, round, last, term)| {
            MessageBody::Heartbeat(Heartbeat {
                lost_check: (last % 2 == 0).then_some(LostCheck {
                    nonce: term,
                    last_index: LogIndex(last),
                    last_term: Term(term),
                }),
                commit: LogIndex(commit),
                read_round: round,
            })
        }),
        number().prop_map(|round| MessageBody::HeartbeatResponse(HeartbeatResponse {
            read_round: round
        })),
        Just(MessageBody::TimeoutNow),
        number().prop_map(|request| MessageBody::ReadIndex(ReadIndexRequest { request })),
        (number(), prop::option::of(number())).prop_map(|(request, index)| {
            MessageBody::ReadIndexResponse(ReadIndexResponse {
                request,
                index: index.map(LogIndex),
            })
        }),
        (number(), number(), number(), number(), 0usize..64).prop_map(
            |(index, term, offset, total_bytes, length)| MessageBody::InstallSnapshot(
                InstallSnapshot {
                    meta: SnapshotMeta {
                        last_index: LogIndex(index),
                        last_term: Term(term),
                        membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
                    },
                    total_bytes,
                    digest: [7; 32],
                    offset,
                    data: Bytes::from(vec![1u8; length]),
                    checksum: 0,
                }
            )
        ),
        (number(), number(), prop::bool::ANY).prop_map(|(index, next_offset, accepted)| {
            MessageBody::InstallSnapshotResponse(InstallSnapshotResponse {
                last_index: LogIndex(index),
                next_offset,
                accepted,
            })
        }),
    ]
}

#[derive(Clone, Debug)]
enum Action {
    Step(Message),
    Tick(u8),
    Propose(u8),
    Read(u64),
    Transfer(NodeId),
    /// Drain the output; make the oldest `n` writes durable.
    Drain(u8),
}

fn action() -> impl Strategy<Value = Action> {
    let message = (node_id(), prop_oneof![9 => Just(NodeId(1)), 1 => node_id()], number(), body())
        .prop_map(|(from, to, term, body)| Message { from, to, term: Term(term), body });
    prop_oneof![
        10 => message.prop_map(Action::Step),
        3 => (1u8..25).prop_map(Action::Tick),
        2 => (1u8..4).prop_map(Action::Propose),
        1 => any::<u64>().prop_map(Action::Read),
        1 => node_id().prop_map(Action::Transfer),
        4 => (0u8..3).prop_map(Action::Drain),
    ]
}

/// Runs the actions against replica 1 of a three-replica cluster, checking invariants after
/// every one.
fn exercise(actions: Vec<Action>, single: bool) -> Result<(), TestCaseError> {
    let voters: Vec<NodeId> =
        if single { vec![NodeId(1)] } else { vec![NodeId(1), NodeId(2), NodeId(3)] };
    let mut config = Config::new(NodeId(1));
    config.messages_in_flight_max = 3;
    config.pending_reads_max = 8;
    let mut node = Node::new(config, InitialState::new_cluster(voters)).expect("valid");
    let mut unsynced: VecDeque<(LogIndex, Term)> = VecDeque::new();
    for action in actions {
        match action {
            Action::Step(message) => node.step(message),
            Action::Tick(count) => {
                for _ in 0..count {
                    node.tick();
                }
            }
            Action::Propose(count) => {
                let commands = (0..count).map(|_| Bytes::from_static(b"p")).collect();
                let _ = node.propose(commands, 0);
            }
            Action::Read(id) => node.read_index(ReadId(id)),
            Action::Transfer(target) => node.transfer_leadership(target),
            Action::Drain(syncs) => {
                let output = node.take_output();
                if let Some(last) = output.persist.entries.last() {
                    unsynced.push_back((last.index, last.term));
                }
                for _ in 0..syncs {
                    if let Some((index, term)) = unsynced.pop_front() {
                        node.persisted(index, term);
                    }
                }
                if let Some(last) = output.committed.last() {
                    node.applied(last.index);
                }
            }
        }
        if let Err(violation) = node.check_invariants() {
            return Err(TestCaseError::fail(violation));
        }
    }
    Ok(())
}

/// 512 cases by default; `PROPTEST_CASES` asks for more.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|value| value.parse().ok()).unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_messages_never_break_a_replica(actions in prop::collection::vec(action(), 1..120)) {
        exercise(actions, false)?;
    }

    #[test]
    fn random_messages_never_break_a_single_replica(actions in prop::collection::vec(action(), 1..120)) {
        exercise(actions, true)?;
    }
}
