//! The state digest kept current with each change: equal to one recomputed from the whole
//! store after any sequence of requests, carried in checkpoints and checked at restore.

use std::collections::BTreeSet;

use bytes::Bytes;
use lockstep_core::{ApplyContext, LogIndex, StateMachine, StateSnapshot, Term};
use lockstep_kv::{
    CompactRequest, DeleteRequest, KeyRange, KeyValue, Kv, LeaseCheckpointRequest, LeaseEndRequest,
    LeaseGrantRequest, LeaseIdRequest, PutRequest, Request, Response,
};
use proptest::prelude::*;
use serde::Serialize;

fn context(timestamp_millis: u64) -> ApplyContext {
    ApplyContext { index: LogIndex(1), term: Term(1), timestamp_millis }
}

/// Requests that change the store in every way it can change: versions added, history
/// compacted away, leases granted, kept alive, moved between keys, revoked and expired.
fn change() -> impl Strategy<Value = Request> {
    let key = prop::sample::select(vec!["a", "ab", "b", "c"]).prop_map(Bytes::from);
    let value = prop::sample::select(vec!["1", "2"]).prop_map(Bytes::from);
    let lease = 0i64..4;
    prop_oneof![
        (key.clone(), value, lease.clone()).prop_map(|(key, value, lease)| {
            Request::Put(PutRequest { key, value, lease, ..Default::default() })
        }),
        key.prop_map(|key| Request::Delete(DeleteRequest {
            range: KeyRange::prefix(key),
            prev_kv: false
        })),
        (0u64..30).prop_map(|revision| Request::Compact(CompactRequest { revision })),
        (1i64..4, 2i64..5).prop_map(|(id, ttl)| Request::LeaseGrant(LeaseGrantRequest { id, ttl })),
        lease.clone().prop_map(|id| Request::LeaseKeepAlive(LeaseIdRequest { id })),
        lease.clone().prop_map(|id| Request::LeaseRevoke(LeaseIdRequest { id })),
        lease.clone().prop_map(|id| Request::LeaseExpire(LeaseIdRequest { id })),
        lease.clone().prop_map(|id| Request::LeaseMark(LeaseIdRequest { id })),
        (lease.clone(), 0u64..3)
            .prop_map(|(id, term)| Request::LeaseEnd(LeaseEndRequest { id, term })),
        (lease, 0u64..20_000, 0u64..3).prop_map(|(id, remaining, term)| {
            Request::LeaseCheckpoint(LeaseCheckpointRequest { term, leases: vec![(id, remaining)] })
        }),
    ]
}

proptest! {
    /// After every request the digest kept with each change is the one recomputed from the
    /// whole store; a checkpoint taken at any point restores to the same digest.
    #[test]
    fn the_kept_digest_is_the_recomputed_one(
        changes in prop::collection::vec((change(), 0u64..2_000), 1..80),
    ) {
        let mut kv = Kv::new();
        let mut now = 0u64;
        for (request, step) in changes {
            now += step;
            kv.apply(request, &context(now));
            prop_assert_eq!(kv.verify_digest(), Ok(()));
        }
        let mut bytes = Vec::new();
        kv.snapshot().write_to(&mut bytes).expect("writes");
        let mut copy = Kv::new();
        copy.restore(&mut bytes.as_slice()).expect("restores");
        prop_assert_eq!(copy.digest(), kv.digest());
        prop_assert_eq!(copy.verify_digest(), Ok(()));
    }
}

#[test]
fn different_states_have_different_digests() {
    let mut one = Kv::new();
    let mut other = Kv::new();
    one.execute(Request::put("a", "1"));
    other.execute(Request::put("a", "2"));
    assert_ne!(one.digest(), other.digest());
    // The same requests in the same order: the same digest.
    let mut again = Kv::new();
    again.execute(Request::put("a", "1"));
    assert_eq!(one.digest(), again.digest());
    // Compaction forgets versions: the digest follows.
    one.execute(Request::put("a", "3"));
    let before = one.digest();
    one.execute(Request::Compact(CompactRequest { revision: 3 }));
    assert_ne!(one.digest(), before);
    assert_eq!(one.verify_digest(), Ok(()));
}

#[test]
fn a_checkpoint_whose_state_does_not_match_its_digest_is_refused() {
    let mut kv = Kv::new();
    for n in 0..20 {
        kv.execute(Request::put(format!("key-{n}"), "value"));
    }
    let mut bytes = Vec::new();
    kv.snapshot().write_to(&mut bytes).expect("writes");
    // The digest's lanes are the last bytes written but the alarms' count (none here), the
    // auth store and the log time: change one.
    let mut bytes = version_6(&bytes, 0);
    assert_eq!(bytes.last(), Some(&0), "no alarms");
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    let error = Kv::new().restore(&mut bytes.as_slice()).expect_err("refused");
    assert!(error.to_string().contains("digest"), "{error}");
}

/// A checkpoint of the current version as version 6 wrote it (before the auth store and the
/// log time), for a store that never used auth and whose latest entry had log time `now`.
fn version_6(current: &[u8], now_millis: u64) -> Vec<u8> {
    assert_eq!(current.first(), Some(&7));
    let mut suffix = postcard::to_stdvec(&lockstep_kv::AuthStore::default()).expect("encodes");
    suffix.extend(postcard::to_stdvec(&now_millis).expect("encodes"));
    assert!(current.ends_with(&suffix), "a pristine auth store and the log time end it");
    let mut old = current[..current.len() - suffix.len()].to_vec();
    old[0] = 6;
    old
}

/// A version 3 checkpoint (written before the digest was kept in it) as it was encoded.
#[derive(Serialize)]
struct EncodedV3 {
    version: u8,
    revision: u64,
    compacted: u64,
    keys: Vec<(Bytes, Vec<VersionV3>)>,
    leases: Vec<(i64, LeaseV3)>,
}

#[derive(Serialize)]
struct VersionV3 {
    revision: u64,
    sub: u32,
    kv: Option<KeyValue>,
}

#[derive(Serialize)]
struct LeaseV3 {
    ttl: i64,
    deadline_millis: u64,
    keys: BTreeSet<Bytes>,
}

#[test]
fn a_version_3_checkpoint_is_still_read() {
    let value = |revision: u64, version: u64| KeyValue {
        key: Bytes::from("a"),
        value: Bytes::from(format!("{version}")),
        create_revision: 2,
        mod_revision: revision,
        version,
        lease: 0,
    };
    let old = EncodedV3 {
        version: 3,
        revision: 3,
        compacted: 0,
        keys: vec![(
            Bytes::from("a"),
            vec![
                VersionV3 { revision: 2, sub: 0, kv: Some(value(2, 1)) },
                VersionV3 { revision: 3, sub: 0, kv: Some(value(3, 2)) },
            ],
        )],
        leases: vec![],
    };
    let bytes = postcard::to_stdvec(&old).expect("encodes");
    let mut restored = Kv::new();
    restored.restore(&mut bytes.as_slice()).expect("a version 3 checkpoint restores");
    let mut expected = Kv::new();
    expected.execute(Request::put("a", "1"));
    expected.execute(Request::put("a", "2"));
    assert_eq!(restored.digest(), expected.digest());
    assert_eq!(restored.verify_digest(), Ok(()));
}

/// A version 4 checkpoint (before leases were marked renewed) as it was encoded.
#[derive(Serialize)]
struct EncodedV4 {
    version: u8,
    revision: u64,
    compacted: u64,
    keys: Vec<(Bytes, Vec<()>)>,
    leases: Vec<(i64, LeaseV3)>,
    elements: Vec<u8>,
}

#[test]
fn a_version_4_checkpoint_is_still_read() {
    let mut expected = Kv::new();
    expected.execute_at(Request::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 10 }), 1_000);
    // The digest's lanes end a checkpoint but for the alarms (here none: one byte, their
    // count): a lease never renewed hashes as version 4 hashed it, so this store's lanes are
    // what version 4 wrote.
    let mut current = Vec::new();
    expected.snapshot().write_to(&mut current).expect("writes");
    let current = version_6(&current, 1_000);
    let lanes = lockstep_kv::lthash::LANES * 2;
    assert_eq!(current.last(), Some(&0), "no alarms");
    let elements = current[current.len() - 1 - lanes..current.len() - 1].to_vec();
    let old = EncodedV4 {
        version: 4,
        revision: 1,
        compacted: 0,
        keys: vec![],
        leases: vec![(7, LeaseV3 { ttl: 10, deadline_millis: 11_000, keys: BTreeSet::new() })],
        elements,
    };
    let bytes = postcard::to_stdvec(&old).expect("encodes");
    let mut restored = Kv::new();
    restored.restore(&mut bytes.as_slice()).expect("a version 4 checkpoint restores");
    assert_eq!(restored.digest(), expected.digest());
    assert_eq!(restored.verify_digest(), Ok(()));
    let Response::LeaseDeadlines(leases) = restored.query(&Request::LeaseDeadlines).response else {
        panic!("not lease deadlines")
    };
    assert!(!leases[0].renewed && leases[0].deadline_millis == 11_000, "{leases:?}");
}

/// A version 5 checkpoint (before alarms were kept): version 6's bytes without the alarms.
#[test]
fn a_version_5_checkpoint_is_still_read() {
    let mut expected = Kv::new();
    expected.execute(Request::put("a", "1"));
    expected.execute_at(Request::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 10 }), 1_000);
    let mut current = Vec::new();
    expected.snapshot().write_to(&mut current).expect("writes");
    let current = version_6(&current, 1_000);
    assert_eq!(current.first(), Some(&6));
    assert_eq!(current.last(), Some(&0), "no alarms");
    let mut old = current[..current.len() - 1].to_vec();
    old[0] = 5;
    let mut restored = Kv::new();
    restored.restore(&mut old.as_slice()).expect("a version 5 checkpoint restores");
    assert_eq!(restored.digest(), expected.digest());
    assert_eq!(restored.verify_digest(), Ok(()));
    assert_eq!(restored.size_bytes(), expected.size_bytes());
}

/// A version 6 checkpoint (before the auth store was kept) is still read, and a store that
/// never used auth has the digest it had then.
#[test]
fn a_version_6_checkpoint_is_still_read() {
    let mut expected = Kv::new();
    expected.execute(Request::put("a", "1"));
    expected.execute_at(Request::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 10 }), 1_000);
    let mut current = Vec::new();
    expected.snapshot().write_to(&mut current).expect("writes");
    let old = version_6(&current, 1_000);
    let mut restored = Kv::new();
    restored.restore(&mut old.as_slice()).expect("a version 6 checkpoint restores");
    assert_eq!(restored.digest(), expected.digest());
    assert_eq!(restored.verify_digest(), Ok(()));
}

/// The auth store is part of the state: carried by checkpoints, covered by the digest.
#[test]
fn the_auth_store_is_in_checkpoints_and_the_digest() {
    use lockstep_kv::{AuthRequest, AuthResponse};
    let mut kv = Kv::new();
    kv.execute(Request::put("a", "1"));
    let before = kv.digest();
    let add = AuthRequest::UserAdd { name: "root".into(), password_hash: None };
    assert_eq!(kv.execute(Request::Auth(add)), Response::Auth(AuthResponse::Done));
    assert_ne!(kv.digest(), before, "a user changes the digest");
    assert_eq!(kv.verify_digest(), Ok(()));
    let mut bytes = Vec::new();
    kv.snapshot().write_to(&mut bytes).expect("writes");
    let mut copy = Kv::new();
    copy.restore(&mut bytes.as_slice()).expect("restores");
    assert_eq!(copy.digest(), kv.digest());
    assert_eq!(copy.auth(), kv.auth());
}
