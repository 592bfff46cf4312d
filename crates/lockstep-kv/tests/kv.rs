//! The store's semantics, as etcd defines them, and its determinism.

use bytes::Bytes;
use lockstep_core::{ApplyContext, LogIndex, StateMachine, StateSnapshot, Term};
use lockstep_kv::{
    CompactRequest, Compare, CompareOp, CompareTarget, DeleteRequest, HashRequest, KeyRange, Kv,
    KvError, Operation, PutRequest, RangeRequest, Request, Response, SortOrder, SortTarget,
    TxnRequest,
};
use proptest::prelude::*;

fn range(kv: &mut Kv, request: RangeRequest) -> lockstep_kv::RangeResponse {
    match kv.execute(Request::Range(request)) {
        Response::Range(range) => range,
        other => panic!("not a range: {other:?}"),
    }
}

fn keys(response: &lockstep_kv::RangeResponse) -> Vec<&[u8]> {
    response.kvs.iter().map(|kv| kv.key.as_ref()).collect()
}

#[test]
fn revisions_versions_and_recreation() {
    let mut kv = Kv::new();
    assert_eq!(kv.revision(), 1);
    kv.execute(Request::put("a", "1"));
    kv.execute(Request::put("a", "2"));
    kv.execute(Request::put("b", "1"));
    let a =
        &range(&mut kv, RangeRequest { range: KeyRange::key("a"), ..Default::default() }).kvs[0];
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 3, 2));
    assert_eq!(kv.revision(), 4);
    // Deleting nothing changes nothing, not even the revision.
    kv.execute(Request::delete("zzz"));
    assert_eq!(kv.revision(), 4);
    kv.execute(Request::delete("a"));
    assert_eq!(kv.revision(), 5);
    kv.execute(Request::put("a", "3"));
    let a =
        &range(&mut kv, RangeRequest { range: KeyRange::key("a"), ..Default::default() }).kvs[0];
    assert_eq!((a.create_revision, a.mod_revision, a.version), (6, 6, 1), "recreated");
}

#[test]
fn ranges_as_etcd_spells_them() {
    let mut kv = Kv::new();
    for key in ["a", "ab", "abc", "b", "c"] {
        kv.execute(Request::put(key, key));
    }
    let prefix =
        range(&mut kv, RangeRequest { range: KeyRange::prefix("ab"), ..Default::default() });
    assert_eq!(keys(&prefix), [b"ab".as_ref(), b"abc"]);
    let from = KeyRange { key: Bytes::from("b"), range_end: Bytes::from_static(&[0]) };
    assert_eq!(
        keys(&range(&mut kv, RangeRequest { range: from, ..Default::default() })),
        [b"b".as_ref(), b"c"]
    );
    let half_open = KeyRange { key: Bytes::from("a"), range_end: Bytes::from("b") };
    let limited =
        range(&mut kv, RangeRequest { range: half_open.clone(), limit: 2, ..Default::default() });
    assert_eq!((keys(&limited).len(), limited.count, limited.more), (2, 3, true));
    let counted = range(
        &mut kv,
        RangeRequest { range: half_open.clone(), count_only: true, ..Default::default() },
    );
    assert_eq!((counted.kvs.len(), counted.count), (0, 3));
    let bare =
        range(&mut kv, RangeRequest { range: half_open, keys_only: true, ..Default::default() });
    assert!(bare.kvs.iter().all(|kv| kv.value.is_empty()));
    let backwards = KeyRange { key: Bytes::from("c"), range_end: Bytes::from("a") };
    assert_eq!(range(&mut kv, RangeRequest { range: backwards, ..Default::default() }).count, 0);
    assert_eq!(lockstep_kv::prefix_end(&[0x61, 0xff]), Bytes::from_static(&[0x62]));
    assert_eq!(lockstep_kv::prefix_end(&[0xff]), Bytes::from_static(&[0]));
}

#[test]
fn deletes_puts_and_their_previous_values() {
    let mut kv = Kv::new();
    kv.execute(Request::put("k", "v1"));
    let Response::Put(put) = kv.execute(Request::Put(PutRequest {
        key: Bytes::from("k"),
        value: Bytes::from("v2"),
        prev_kv: true,
        ..Default::default()
    })) else {
        panic!()
    };
    assert_eq!(put.prev_kv.map(|kv| kv.value), Some(Bytes::from("v1")));
    let Response::Put(_) = kv.execute(Request::Put(PutRequest {
        key: Bytes::from("k"),
        ignore_value: true,
        ..Default::default()
    })) else {
        panic!()
    };
    let k =
        &range(&mut kv, RangeRequest { range: KeyRange::key("k"), ..Default::default() }).kvs[0];
    assert_eq!(
        (k.value.as_ref(), k.version),
        (b"v2".as_ref(), 3),
        "the value kept, the version raised"
    );
    let before = kv.revision();
    let missing = kv.execute(Request::Put(PutRequest {
        key: Bytes::from("nope"),
        ignore_value: true,
        ..Default::default()
    }));
    assert_eq!(missing, Response::Error(KvError::KeyNotFound));
    assert_eq!(kv.revision(), before);
    kv.execute(Request::put("k2", "x"));
    let Response::Delete(deleted) =
        kv.execute(Request::Delete(DeleteRequest { range: KeyRange::prefix("k"), prev_kv: true }))
    else {
        panic!()
    };
    assert_eq!((deleted.deleted, deleted.prev_kvs.len()), (2, 2));
    assert!(kv.is_empty());
}

#[test]
fn transactions_compare_then_act_at_one_revision() {
    let mut kv = Kv::new();
    kv.execute(Request::put("x", "1"));
    let revision = kv.revision();
    let swap = |expected: &str, new: &str| TxnRequest {
        compare: vec![Compare {
            range: KeyRange::key("x"),
            op: CompareOp::Equal,
            target: CompareTarget::Value(Bytes::from(expected.to_string())),
        }],
        success: vec![
            Operation::Put(PutRequest {
                key: Bytes::from("x"),
                value: Bytes::from(new.to_string()),
                ..Default::default()
            }),
            Operation::Put(PutRequest {
                key: Bytes::from("y"),
                value: Bytes::from(new.to_string()),
                ..Default::default()
            }),
        ],
        failure: vec![Operation::Range(RangeRequest {
            range: KeyRange::key("x"),
            ..Default::default()
        })],
    };
    let Response::Txn(done) = kv.execute(Request::Txn(swap("1", "2"))) else { panic!() };
    assert!(done.succeeded);
    assert_eq!(kv.revision(), revision + 1, "two puts, one revision");
    let Response::Txn(failed) = kv.execute(Request::Txn(swap("1", "3"))) else { panic!() };
    assert!(!failed.succeeded);
    assert_eq!(kv.revision(), revision + 1, "a failed compare with a read changes nothing");
    let Response::Range(read) = &failed.responses[0] else { panic!() };
    assert_eq!(read.kvs[0].value, Bytes::from("2"));
    // Comparisons on metadata, and on an absent key.
    let holds = |kv: &mut Kv, compare: Compare| {
        let Response::Txn(txn) =
            kv.execute(Request::Txn(TxnRequest { compare: vec![compare], ..Default::default() }))
        else {
            panic!()
        };
        txn.succeeded
    };
    let x = |op, target| Compare { range: KeyRange::key("x"), op, target };
    assert!(holds(&mut kv, x(CompareOp::Equal, CompareTarget::Version(2))));
    assert!(holds(&mut kv, x(CompareOp::Equal, CompareTarget::CreateRevision(revision as i64))));
    assert!(holds(&mut kv, x(CompareOp::Greater, CompareTarget::ModRevision(revision as i64))));
    let absent = Compare {
        range: KeyRange::key("none"),
        op: CompareOp::Equal,
        target: CompareTarget::CreateRevision(0),
    };
    assert!(holds(&mut kv, absent));
    let absent_value = Compare {
        range: KeyRange::key("none"),
        op: CompareOp::Equal,
        target: CompareTarget::Value(Bytes::new()),
    };
    assert!(!holds(&mut kv, absent_value));
    // Writing one key twice in a transaction is refused, and changes nothing.
    let twice = TxnRequest {
        success: vec![
            Operation::Put(PutRequest {
                key: Bytes::from("z"),
                value: Bytes::from("1"),
                ..Default::default()
            }),
            Operation::Put(PutRequest {
                key: Bytes::from("z"),
                value: Bytes::from("2"),
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    let before = kv.clone();
    assert_eq!(kv.execute(Request::Txn(twice)), Response::Error(KvError::DuplicateKey));
    assert_eq!(kv, before);
}

#[test]
fn past_revisions_are_read_until_compacted() {
    let mut kv = Kv::new();
    kv.execute(Request::put("a", "1")); // revision 2
    kv.execute(Request::put("a", "2")); // 3
    kv.execute(Request::put("b", "x")); // 4
    kv.execute(Request::delete("a")); // 5
    let at = |kv: &Kv, revision: u64| -> Result<Vec<(String, u64)>, KvError> {
        match kv
            .query(&Request::Range(RangeRequest {
                range: KeyRange { key: Bytes::from("a"), range_end: Bytes::from_static(&[0]) },
                revision,
                ..Default::default()
            }))
            .response
        {
            Response::Range(range) => Ok(range
                .kvs
                .iter()
                .map(|kv| (String::from_utf8_lossy(&kv.value).into_owned(), kv.version))
                .collect()),
            Response::Error(error) => Err(error),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(at(&kv, 2), Ok(vec![("1".to_string(), 1)]));
    assert_eq!(at(&kv, 3), Ok(vec![("2".to_string(), 2)]));
    assert_eq!(at(&kv, 4), Ok(vec![("2".to_string(), 2), ("x".to_string(), 1)]));
    assert_eq!(at(&kv, 5), Ok(vec![("x".to_string(), 1)]));
    assert_eq!(at(&kv, 0), at(&kv, 5));
    assert_eq!(at(&kv, 9), Err(KvError::FutureRevision { requested: 9, current: 5 }));

    // Compacting to 4 keeps what was current at 4 and after; 3 and below are gone.
    let hash_before = kv.query(&Request::Hash(HashRequest { revision: 5 })).response;
    assert_eq!(kv.execute(Request::Compact(CompactRequest { revision: 4 })), Response::Compact);
    assert_eq!(kv.revision(), 5, "a compaction is not a change");
    assert_eq!(at(&kv, 3), Err(KvError::Compacted { requested: 3, compacted: 4 }));
    assert_eq!(at(&kv, 4), Ok(vec![("2".to_string(), 2), ("x".to_string(), 1)]));
    assert_eq!(at(&kv, 5), Ok(vec![("x".to_string(), 1)]));
    assert_ne!(kv.query(&Request::Hash(HashRequest { revision: 5 })).response, hash_before);
    assert_eq!(
        kv.execute(Request::Compact(CompactRequest { revision: 4 })),
        Response::Error(KvError::Compacted { requested: 4, compacted: 4 })
    );
    assert_eq!(
        kv.execute(Request::Compact(CompactRequest { revision: 6 })),
        Response::Error(KvError::FutureRevision { requested: 6, current: 5 })
    );
    // Compacting past the deletion forgets the deleted key entirely.
    assert_eq!(kv.execute(Request::Compact(CompactRequest { revision: 5 })), Response::Compact);
    assert_eq!(at(&kv, 5), Ok(vec![("x".to_string(), 1)]));
    // A recreated key starts over at version 1.
    kv.execute(Request::put("a", "again"));
    assert_eq!(at(&kv, 0), Ok(vec![("again".to_string(), 1), ("x".to_string(), 1)]));
    // A write sent as a read is refused.
    assert_eq!(kv.query(&Request::put("a", "x")).response, Response::Error(KvError::NotReadOnly));
}

#[test]
fn ranges_sort_filter_and_limit_as_etcd() {
    let mut kv = Kv::new();
    for (key, value) in [("a", "3"), ("b", "1"), ("c", "2")] {
        kv.execute(Request::put(key, value)); // revisions 2, 3, 4
    }
    kv.execute(Request::put("a", "0")); // 5: a at version 2
    let range = |request: RangeRequest| -> (Vec<String>, u64, bool) {
        let Response::Range(range) = kv.query(&Request::Range(request)).response else {
            panic!("not a range")
        };
        let keys = range.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned());
        (keys.collect(), range.count, range.more)
    };
    let all = KeyRange { key: Bytes::from("a"), range_end: Bytes::from_static(&[0]) };
    let by = |order, target| RangeRequest {
        range: all.clone(),
        sort_order: order,
        sort_target: target,
        ..Default::default()
    };
    let keys = |keys: &[&str]| keys.iter().map(|key| key.to_string()).collect::<Vec<_>>();
    assert_eq!(range(by(SortOrder::Descend, SortTarget::Key)).0, keys(&["c", "b", "a"]));
    assert_eq!(range(by(SortOrder::None, SortTarget::Value)).0, keys(&["a", "b", "c"]));
    assert_eq!(range(by(SortOrder::Descend, SortTarget::Mod)).0, keys(&["a", "c", "b"]));
    assert_eq!(range(by(SortOrder::Ascend, SortTarget::Create)).0, keys(&["a", "b", "c"]));
    assert_eq!(range(by(SortOrder::Descend, SortTarget::Version)).0, keys(&["a", "b", "c"]));
    // Sorting happens before the limit; count is everything in the range.
    let limited = RangeRequest { limit: 2, ..by(SortOrder::Descend, SortTarget::Key) };
    assert_eq!(range(limited), (keys(&["c", "b"]), 3, true));
    let filtered = RangeRequest { min_mod_revision: 4, ..by(SortOrder::None, SortTarget::Key) };
    assert_eq!(range(filtered), (keys(&["a", "c"]), 3, false));
    let created = RangeRequest { max_create_revision: 3, ..by(SortOrder::None, SortTarget::Key) };
    assert_eq!(range(created).0, keys(&["a", "b"]));
}

const CONTEXT: ApplyContext =
    ApplyContext { index: LogIndex(1), term: Term(1), timestamp_millis: 0 };

fn request() -> impl Strategy<Value = Request> {
    let key = prop::sample::select(vec!["a", "ab", "b", "ba", "c"]).prop_map(Bytes::from);
    let value = prop::sample::select(vec!["1", "2", "3"]).prop_map(Bytes::from);
    prop_oneof![
        (key.clone(), value.clone()).prop_map(|(key, value)| Request::Put(PutRequest {
            key,
            value,
            ..Default::default()
        })),
        key.clone().prop_map(|key| Request::Delete(DeleteRequest {
            range: KeyRange::prefix(key),
            prev_kv: false
        })),
        (key.clone(), value.clone(), value).prop_map(|(key, expected, new)| Request::Txn(
            TxnRequest {
                compare: vec![Compare {
                    range: KeyRange::key(key.clone()),
                    op: CompareOp::Equal,
                    target: CompareTarget::Value(expected)
                }],
                success: vec![Operation::Put(PutRequest { key, value: new, ..Default::default() })],
                failure: vec![],
            }
        )),
        (key, 0u64..40).prop_map(|(key, revision)| Request::Range(RangeRequest {
            range: KeyRange::prefix(key),
            revision,
            ..Default::default()
        })),
        (0u64..40).prop_map(|revision| Request::Compact(CompactRequest { revision })),
        (0u64..40).prop_map(|revision| Request::Hash(HashRequest { revision })),
        (0u64..40, 0u64..4).prop_map(|(from, limit)| Request::Events(lockstep_kv::EventsRequest {
            range: KeyRange { key: Bytes::from_static(&[0]), range_end: Bytes::from_static(&[0]) },
            from,
            limit,
            user: None,
        })),
    ]
}

proptest! {
    /// Two replicas applying the same requests agree on every answer and their digests, and a
    /// snapshot taken midway restores a replica that then agrees too.
    #[test]
    fn replicas_agree_and_snapshots_round_trip(requests in prop::collection::vec(request(), 1..60), cut in 0usize..60) {
        let mut a = Kv::new();
        let mut b = Kv::new();
        let mut restored: Option<Kv> = None;
        for (position, request) in requests.into_iter().enumerate() {
            if position == cut {
                let mut bytes = Vec::new();
                a.snapshot().write_to(&mut bytes).expect("writes");
                let mut copy = Kv::new();
                copy.restore(&mut bytes.as_slice()).expect("restores");
                prop_assert_eq!(copy.digest(), a.digest());
                restored = Some(copy);
            }
            let answer = a.apply(request.clone(), &CONTEXT);
            prop_assert_eq!(&b.apply(request.clone(), &CONTEXT), &answer);
            if let Some(copy) = restored.as_mut() {
                prop_assert_eq!(&copy.apply(request, &CONTEXT), &answer);
            }
        }
        prop_assert_eq!(a.digest(), b.digest());
    }
}

proptest! {
    /// Every revision from the compaction revision on reads exactly the state the store had
    /// at that revision (checked against a copy of the whole map taken at every revision).
    #[test]
    fn every_kept_revision_reads_as_it_was(requests in prop::collection::vec(request(), 1..80)) {
        let mut kv = Kv::new();
        let all = KeyRange { key: Bytes::from_static(&[0]), range_end: Bytes::from_static(&[0]) };
        let read = |kv: &Kv, revision: u64| match kv.query(&Request::Range(RangeRequest {
            range: all.clone(),
            revision,
            ..Default::default()
        })).response {
            Response::Range(range) => Ok(range.kvs),
            Response::Error(error) => Err(error),
            other => panic!("{other:?}"),
        };
        // states[r] = the whole store at revision r.
        let mut states = vec![Vec::new(), read(&kv, 0).expect("reads")];
        for request in requests {
            kv.apply(request, &CONTEXT);
            while (states.len() as u64) <= kv.revision() {
                states.push(read(&kv, 0).expect("reads"));
            }
            for revision in 1..=kv.revision() {
                let got = read(&kv, revision);
                if revision < kv.compact_revision() {
                    let compacted = matches!(got, Err(KvError::Compacted { .. }));
                    prop_assert!(compacted, "{:?}", got);
                } else {
                    prop_assert_eq!(got.as_ref(), Ok(&states[revision as usize]));
                }
            }
        }
    }
}

#[test]
fn a_damaged_snapshot_is_an_error() {
    let mut kv = Kv::new();
    assert!(kv.restore(&mut &b"\\x07\\xff\\xff"[..]).is_err());
    assert!(kv.restore(&mut &b""[..]).is_err());
}

#[test]
fn etcd_rules_for_transactions_and_bad_requests() {
    let mut kv = Kv::new();
    kv.execute(Request::put("x", "1"));
    let succeeds = |kv: &mut Kv, txn: TxnRequest| match kv.execute(Request::Txn(txn)) {
        Response::Txn(txn) => Ok(txn.succeeded),
        Response::Error(error) => Err(error),
        other => panic!("{other:?}"),
    };
    let compare = |range: KeyRange, op, target| TxnRequest {
        compare: vec![Compare { range, op, target }],
        ..Default::default()
    };
    // A value comparison on an absent key never holds, whatever the operator.
    let absent =
        compare(KeyRange::key("none"), CompareOp::NotEqual, CompareTarget::Value(Bytes::from("x")));
    assert_eq!(succeeds(&mut kv, absent), Ok(false));
    // A range holding no key compares as one absent key.
    let empty = compare(KeyRange::prefix("zz"), CompareOp::Greater, CompareTarget::Version(0));
    assert_eq!(succeeds(&mut kv, empty), Ok(false));
    let empty = compare(KeyRange::prefix("zz"), CompareOp::Equal, CompareTarget::Version(0));
    assert_eq!(succeeds(&mut kv, empty), Ok(true));
    // (Compacted, so that old revisions are refused below.)
    let compact_to = kv.revision();
    assert_eq!(
        kv.execute(Request::Compact(CompactRequest { revision: compact_to })),
        Response::Compact
    );
    // A put inside a range the same branch deletes, or a key put twice in the branch not
    // taken: refused before anything is compared, and nothing changes.
    let before = kv.clone();
    let put = |key: &str| {
        Operation::Put(PutRequest {
            key: Bytes::from(key.to_string()),
            value: Bytes::from("v"),
            ..Default::default()
        })
    };
    let overlap = TxnRequest {
        success: vec![
            Operation::Delete(DeleteRequest { range: KeyRange::prefix("a"), prev_kv: false }),
            put("ab"),
        ],
        ..Default::default()
    };
    assert_eq!(succeeds(&mut kv, overlap), Err(KvError::DuplicateKey));
    let twice_elsewhere = TxnRequest { failure: vec![put("q"), put("q")], ..Default::default() };
    assert_eq!(succeeds(&mut kv, twice_elsewhere), Err(KvError::DuplicateKey));
    // A range in a transaction below the compaction revision is refused like a plain one.
    let old = TxnRequest {
        success: vec![Operation::Range(RangeRequest {
            range: KeyRange::key("x"),
            revision: 1,
            ..Default::default()
        })],
        ..Default::default()
    };
    assert!(matches!(succeeds(&mut kv, old), Err(KvError::Compacted { .. })));
    // Bad requests.
    assert_eq!(kv.execute(Request::put("", "v")), Response::Error(KvError::EmptyKey));
    let provided = Request::Put(PutRequest {
        key: Bytes::from("x"),
        value: Bytes::from("v"),
        ignore_value: true,
        ..Default::default()
    });
    assert_eq!(kv.execute(provided), Response::Error(KvError::ValueProvided));
    // A transaction longer than a member takes (`max_txn_ops`, 128 by default) is refused
    // where it is taken; applying allows what any member could have taken, and no more.
    let long = |ops: usize| TxnRequest {
        success: (0..ops).map(|i| put(&format!("k{i}"))).collect(),
        ..Default::default()
    };
    let taken = |kv: &Kv, ops: usize| {
        kv.admit_request(&Request::Txn(long(ops)), lockstep_core::Origin::Remote, 0)
    };
    assert_eq!(taken(&kv, 128), Ok(()));
    assert_eq!(taken(&kv, 129), Err(KvError::TooManyOps { ops: 129, max: 128 }));
    let generous = kv.clone().with_txn_ops_max(300);
    assert_eq!(taken(&generous, 300), Ok(()));
    assert_eq!(taken(&generous, 301), Err(KvError::TooManyOps { ops: 301, max: 300 }));
    // The leader screens every attempt of a write with it too (a retried write is not
    // admitted again), from the network and from its own process.
    for origin in [lockstep_core::Origin::Remote, lockstep_core::Origin::Local] {
        assert_eq!(
            kv.screen_request(&Request::Txn(long(129)), origin),
            Err(KvError::TooManyOps { ops: 129, max: 128 })
        );
    }
    let ceiling = lockstep_kv::TXN_OPS_CEILING;
    assert!(matches!(
        succeeds(&mut kv, long(ceiling + 1)),
        Err(KvError::TooManyOps { max, .. }) if max == ceiling
    ));
    assert_eq!(kv, before, "nothing refused changed anything");
    assert_eq!(succeeds(&mut kv.clone(), long(200)), Ok(true), "applying allows more than 128");
    // A read-only transaction served as a query changes nothing and answers like a write would.
    let read = TxnRequest {
        compare: vec![Compare {
            range: KeyRange::key("x"),
            op: CompareOp::Equal,
            target: CompareTarget::Value(Bytes::from("1")),
        }],
        success: vec![Operation::Range(RangeRequest {
            range: KeyRange::key("x"),
            ..Default::default()
        })],
        failure: vec![],
    };
    let answer = kv.query(&Request::Txn(read.clone()));
    assert_eq!(answer.response, kv.execute(Request::Txn(read)));
}

#[test]
fn leases_hold_keys_until_revoked_or_expired_in_log_time() {
    use lockstep_kv::{LeaseGrantRequest, LeaseIdRequest};
    let mut kv = Kv::new();
    let grant = |id, ttl| Request::LeaseGrant(LeaseGrantRequest { id, ttl });
    let lease = |id| LeaseIdRequest { id };
    assert!(
        matches!(kv.execute_at(grant(7, 10), 1_000), Response::Lease(info) if info.deadline_millis == 11_000)
    );
    assert_eq!(kv.execute_at(grant(7, 10), 1_000), Response::Error(KvError::LeaseExists));
    assert_eq!(kv.execute_at(grant(0, 10), 1_000), Response::Error(KvError::LeaseInvalid));
    let put = |key: &str, lease| {
        Request::Put(PutRequest {
            key: Bytes::from(key.to_string()),
            value: Bytes::from("v"),
            lease,
            ..Default::default()
        })
    };
    assert_eq!(kv.execute_at(put("a", 9), 1_000), Response::Error(KvError::LeaseNotFound));
    kv.execute_at(put("a", 7), 1_000);
    kv.execute_at(put("b", 7), 1_000);
    kv.execute_at(put("c", 0), 1_000);
    kv.execute_at(put("b", 0), 1_000); // b leaves the lease
    let Response::Lease(info) = kv.query(&Request::LeaseTimeToLive(lease(7))).response else {
        panic!()
    };
    assert_eq!(info.keys, vec![Bytes::from("a")]);
    // Renewed at 5 s: the deadline moves; an expiry proposed at 12 s finds it alive.
    kv.execute_at(Request::LeaseKeepAlive(lease(7)), 5_000);
    assert!(matches!(kv.execute_at(Request::LeaseExpire(lease(7)), 12_000), Response::Lease(_)));
    let Response::LeaseDeadlines(leases) = kv.query(&Request::LeaseDeadlines).response else {
        panic!()
    };
    assert_eq!(leases[0].deadline_millis, 15_000);
    let before = kv.revision();
    assert_eq!(kv.execute_at(Request::LeaseExpire(lease(7)), 15_000), Response::LeaseRevoked);
    assert_eq!(kv.revision(), before + 1, "the lease's keys are deleted at one revision");
    let all = KeyRange { key: Bytes::from_static(&[0]), range_end: Bytes::from_static(&[0]) };
    let keys = range(&mut kv, RangeRequest { range: all, ..Default::default() });
    let names: Vec<_> = keys.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(names, vec![Bytes::from("b"), Bytes::from("c")]);
    assert_eq!(kv.execute(Request::LeaseRevoke(lease(7))), Response::Error(KvError::LeaseNotFound));
}

#[test]
fn events_come_in_revision_order_with_previous_values() {
    use lockstep_kv::EventsRequest;
    let mut kv = Kv::new();
    kv.execute(Request::put("b", "1")); // 2
    kv.execute(Request::put("a", "1")); // 3
    kv.execute(Request::Txn(TxnRequest {
        success: vec![
            Operation::Put(PutRequest {
                key: Bytes::from("b"),
                value: Bytes::from("2"),
                ..Default::default()
            }),
            Operation::Delete(DeleteRequest { range: KeyRange::key("a"), prev_kv: false }),
        ],
        ..Default::default()
    })); // 4: b=2 then a deleted
    let all = KeyRange { key: Bytes::from_static(&[0]), range_end: Bytes::from_static(&[0]) };
    let events = |from, limit| match kv
        .query(&Request::Events(EventsRequest { range: all.clone(), from, limit, user: None }))
        .response
    {
        Response::Events(events) => events,
        other => panic!("{other:?}"),
    };
    let got = events(3, 0);
    let summary: Vec<(bool, String, u64)> = got
        .events
        .iter()
        .map(|event| {
            (event.put, String::from_utf8_lossy(&event.kv.key).into_owned(), event.kv.mod_revision)
        })
        .collect();
    assert_eq!(summary, vec![(true, "a".into(), 3), (true, "b".into(), 4), (false, "a".into(), 4)]);
    assert_eq!(got.events[1].prev_kv.as_ref().map(|kv| kv.value.clone()), Some(Bytes::from("1")));
    assert_eq!(got.through, 4);
    let limited = events(2, 2);
    assert_eq!(limited.events.len(), 2);
    assert_eq!(limited.through, 3);
}

#[test]
fn overlapping_deletes_in_one_transaction_delete_once() {
    use lockstep_kv::EventsRequest;
    let mut kv = Kv::new();
    kv.execute(Request::put("ab", "1"));
    let before = kv.revision();
    let txn = TxnRequest {
        success: vec![
            Operation::Delete(DeleteRequest { range: KeyRange::prefix("a"), prev_kv: true }),
            Operation::Delete(DeleteRequest { range: KeyRange::key("ab"), prev_kv: true }),
        ],
        ..Default::default()
    };
    let Response::Txn(done) = kv.execute(Request::Txn(txn)) else { panic!("not a txn") };
    let deleted: Vec<u64> = done
        .responses
        .iter()
        .map(|response| match response {
            Response::Delete(delete) => delete.deleted,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(deleted, vec![1, 0], "the second delete finds nothing left");
    let all = KeyRange { key: Bytes::from_static(&[0]), range_end: Bytes::from_static(&[0]) };
    let Response::Events(events) = kv
        .query(&Request::Events(EventsRequest {
            range: all,
            from: before + 1,
            limit: 0,
            user: None,
        }))
        .response
    else {
        panic!()
    };
    assert_eq!(events.events.len(), 1, "one deletion event");
}

#[test]
fn a_late_keep_alive_does_not_revive_an_expired_lease() {
    use lockstep_kv::{LeaseGrantRequest, LeaseIdRequest};
    let mut kv = Kv::new();
    kv.execute_at(Request::LeaseGrant(LeaseGrantRequest { id: 1, ttl: 5 }), 0);
    kv.execute_at(
        Request::Put(PutRequest { key: Bytes::from("k"), lease: 1, ..Default::default() }),
        0,
    );
    assert_eq!(
        kv.execute_at(Request::LeaseKeepAlive(LeaseIdRequest { id: 1 }), 6_000),
        Response::LeaseRevoked
    );
    assert_eq!(
        kv.execute_at(Request::LeaseKeepAlive(LeaseIdRequest { id: 1 }), 6_001),
        Response::Error(KvError::LeaseNotFound)
    );
    assert!(kv.is_empty());
    let both = Request::Put(PutRequest {
        key: Bytes::from("k"),
        lease: 1,
        ignore_lease: true,
        ..Default::default()
    });
    assert_eq!(kv.execute(both), Response::Error(KvError::LeaseProvided));
}

#[test]
fn a_lease_checkpoint_records_what_remains_and_a_marked_renewal_marks_it() {
    use lockstep_kv::{
        LeaseCheckpointRequest, LeaseDeadline, LeaseEndRequest, LeaseGrantRequest, LeaseIdRequest,
    };
    let mut kv = Kv::new();
    let deadlines = |kv: &Kv| match kv.query(&Request::LeaseDeadlines).response {
        Response::LeaseDeadlines(deadlines) => deadlines,
        other => panic!("{other:?}"),
    };
    kv.execute_at(Request::LeaseGrant(LeaseGrantRequest { id: 1, ttl: 10 }), 1_000);
    kv.execute_at(Request::LeaseGrant(LeaseGrantRequest { id: 2, ttl: 10 }), 1_000);
    let granted = LeaseDeadline { id: 1, ttl: 10, deadline_millis: 11_000, renewed: false };
    assert_eq!(deadlines(&kv)[0], granted);
    // A plain renewal through the log (as older logs hold them) renews without marking.
    kv.execute_at(Request::LeaseKeepAlive(LeaseIdRequest { id: 1 }), 2_000);
    assert_eq!(deadlines(&kv)[0], LeaseDeadline { deadline_millis: 12_000, ..granted });
    // A marked renewal: its leader may promise more from memory from now on.
    kv.execute_at(Request::LeaseMark(LeaseIdRequest { id: 1 }), 3_000);
    assert_eq!(
        deadlines(&kv)[0],
        LeaseDeadline { deadline_millis: 13_000, renewed: true, ..granted }
    );
    // A checkpoint in an entry of another term than its leader's changes nothing.
    let checkpoint = |term| {
        Request::LeaseCheckpoint(LeaseCheckpointRequest {
            term,
            leases: vec![(1, 9_500), (2, 4_000), (3, 1)],
        })
    };
    assert_eq!(kv.execute_in(checkpoint(4), 5_000, 5), Response::LeasesCheckpointed(0));
    assert!(deadlines(&kv)[0].renewed);
    // In its own term it records what the leader measured as remaining, and clears the mark;
    // a lease no longer held is passed over.
    let before = kv.revision();
    assert_eq!(kv.execute_in(checkpoint(5), 5_000, 5), Response::LeasesCheckpointed(2));
    assert_eq!(kv.revision(), before, "a checkpoint changes no key");
    let after = deadlines(&kv);
    assert_eq!(after[0], LeaseDeadline { deadline_millis: 14_500, ..granted });
    assert_eq!(after[1], LeaseDeadline { id: 2, deadline_millis: 9_000, ..granted });
    // An expiry is decided by the leader of its entry's term, and checked against the
    // recorded deadline.
    let end = |term| Request::LeaseEnd(LeaseEndRequest { id: 2, term });
    assert!(matches!(kv.execute_in(end(5), 9_500, 6), Response::Lease(_)), "another term's");
    assert!(matches!(kv.execute_in(end(6), 8_999, 6), Response::Lease(_)), "before the deadline");
    assert_eq!(kv.execute_in(end(6), 9_000, 6), Response::LeaseRevoked);
    // A marked renewal renews a lease past its recorded deadline (its leader found it alive);
    // a plain one revokes it.
    kv.execute_at(Request::LeaseGrant(LeaseGrantRequest { id: 3, ttl: 10 }), 10_000);
    kv.execute_at(Request::LeaseGrant(LeaseGrantRequest { id: 4, ttl: 10 }), 10_000);
    assert!(matches!(
        kv.execute_at(Request::LeaseMark(LeaseIdRequest { id: 3 }), 25_000),
        Response::Lease(info) if info.deadline_millis == 35_000 && info.renewed
    ));
    assert_eq!(
        kv.execute_at(Request::LeaseKeepAlive(LeaseIdRequest { id: 4 }), 25_000),
        Response::LeaseRevoked
    );
    assert!(Request::LeaseDeadlines.is_read_only());
    assert!(!Request::LeaseCheckpoint(LeaseCheckpointRequest::default()).is_read_only());
    assert!(!Request::LeaseMark(LeaseIdRequest { id: 1 }).is_read_only());
}
