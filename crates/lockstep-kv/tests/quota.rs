//! The store's size and its `NoSpace` alarm: what grows the store is refused while the alarm
//! is raised, everything else goes on; the size falls with compaction; alarms are replicated
//! state (in checkpoints and in the digest).

use lockstep_core::{StateMachine, StateSnapshot};
use lockstep_kv::{
    Alarm, AlarmAction, AlarmKind, AlarmRequest, CompactRequest, Kv, KvError, LeaseGrantRequest,
    Operation, PutRequest, Request, Response, TxnRequest, VERSION_OVERHEAD_BYTES,
};

fn alarm(action: AlarmAction) -> Request {
    Request::Alarm(AlarmRequest { action, member: 3, alarm: AlarmKind::NoSpace })
}

fn refused(response: Response) -> bool {
    matches!(response, Response::Error(KvError::NoSpace))
}

#[test]
fn the_size_counts_every_version_kept_and_falls_with_compaction() {
    let mut kv = Kv::new();
    assert_eq!(kv.size_bytes(), 0);
    kv.execute(Request::put("key", "value"));
    assert_eq!(kv.size_bytes(), 3 + 5 + VERSION_OVERHEAD_BYTES);
    kv.execute(Request::put("key", "longer value"));
    assert_eq!(kv.size_bytes(), 2 * (3 + VERSION_OVERHEAD_BYTES) + 5 + 12);
    kv.execute(Request::delete("key"));
    assert_eq!(kv.size_bytes(), 3 * (3 + VERSION_OVERHEAD_BYTES) + 5 + 12);
    let revision = kv.revision();
    kv.execute(Request::Compact(CompactRequest { revision }));
    assert_eq!(kv.size_bytes(), 0, "a key whose history ends deleted is forgotten whole");
}

#[test]
fn a_nospace_alarm_refuses_what_grows_the_store_and_nothing_else() {
    let mut kv = Kv::new();
    kv.execute(Request::put("a", "1"));
    kv.execute(Request::put("b", "2"));
    let Response::Alarms(raised) = kv.execute(alarm(AlarmAction::Activate)) else {
        panic!("alarms")
    };
    assert_eq!(raised.alarms, vec![Alarm { member: 3, alarm: AlarmKind::NoSpace }]);
    assert!(kv.out_of_space());
    let revision = kv.revision();
    assert!(refused(kv.execute(Request::put("c", "3"))));
    assert!(refused(kv.execute(Request::LeaseGrant(LeaseGrantRequest { id: 1, ttl: 60 }))));
    let txn = TxnRequest {
        success: vec![Operation::Put(PutRequest {
            key: "d".into(),
            value: "4".into(),
            ..PutRequest::default()
        })],
        ..TxnRequest::default()
    };
    assert!(refused(kv.execute(Request::Txn(txn))));
    assert_eq!(kv.revision(), revision, "nothing changed");
    // Reads, deletes and compaction go on.
    assert!(
        matches!(kv.execute(Request::get("a")), Response::Range(range) if range.kvs.len() == 1)
    );
    assert!(matches!(kv.execute(Request::delete("a")), Response::Delete(d) if d.deleted == 1));
    let revision = kv.revision();
    assert!(matches!(kv.execute(Request::Compact(CompactRequest { revision })), Response::Compact));
    // Cleared, writes go on.
    kv.execute(alarm(AlarmAction::Deactivate));
    assert!(!kv.out_of_space());
    assert!(matches!(kv.execute(Request::put("c", "3")), Response::Put(_)));
}

#[test]
fn alarms_are_in_checkpoints_and_in_the_digest() {
    let mut kv = Kv::new();
    kv.execute(Request::put("a", "1"));
    let before = kv.digest();
    kv.execute(alarm(AlarmAction::Activate));
    assert_ne!(kv.digest(), before, "an alarm changes the digest");
    let mut bytes = Vec::new();
    kv.snapshot().write_to(&mut bytes).expect("writes");
    let mut restored = Kv::new();
    restored.restore(&mut bytes.as_slice()).expect("restores");
    assert!(restored.out_of_space());
    assert_eq!(restored.digest(), kv.digest());
    assert_eq!(restored.size_bytes(), kv.size_bytes());
    assert_eq!(restored.verify_digest(), Ok(()));
    kv.execute(alarm(AlarmAction::Deactivate));
    assert_eq!(kv.digest(), before, "cleared, the digest is what it was");
    let Response::Alarms(listed) = kv.query(&alarm(AlarmAction::Get)).response else {
        panic!("alarms")
    };
    assert!(listed.alarms.is_empty() && listed.size_bytes == kv.size_bytes());
    let Response::Alarms(written) = kv.execute(alarm(AlarmAction::Activate)) else {
        panic!("alarms")
    };
    assert_eq!(written.size_bytes, 0, "no size in answers through the log");
}

/// With a quota, a request that would take the store past it is refused where it is taken
/// (before the log), whatever the alarm; one that fits is taken.
#[test]
fn a_write_past_the_quota_is_refused_where_it_is_taken() {
    use lockstep_core::Origin;
    let mut kv = Kv::new().with_quota_bytes(10_000);
    let small = Request::put("small", "x".repeat(100));
    assert_eq!(kv.admit_request(&small, Origin::Remote, 0), Ok(()));
    kv.execute(small);
    let big = Request::put("big", "x".repeat(20_000));
    assert_eq!(kv.admit_request(&big, Origin::Remote, 0), Err(KvError::NoSpace));
    // Reads and deletes are never refused for space.
    assert_eq!(kv.admit_request(&Request::delete("small"), Origin::Remote, 0), Ok(()));
    assert_eq!(kv.admit_request(&Request::get("small"), Origin::Remote, 0), Ok(()));
    // The limit is this member's: a store without one takes the same request.
    assert_eq!(Kv::new().admit_request(&big, Origin::Remote, 0), Ok(()));
}

/// A `Corrupt` alarm (raised for a replica the audit quarantined) is a record for the
/// operator: it refuses nothing, is in checkpoints and in the digest like any alarm, and is
/// told apart from `NoSpace`.
#[test]
fn a_corrupt_alarm_refuses_nothing() {
    let mut kv = Kv::new();
    let corrupt =
        |action| Request::Alarm(AlarmRequest { action, member: 3, alarm: AlarmKind::Corrupt });
    let before = kv.digest();
    kv.execute(corrupt(AlarmAction::Activate));
    assert_ne!(kv.digest(), before);
    assert!(!kv.out_of_space());
    assert!(!refused(kv.execute(Request::put("a", "1"))), "writes go on");
    let mut bytes = Vec::new();
    kv.snapshot().write_to(&mut bytes).expect("writes");
    let mut restored = Kv::new();
    restored.restore(&mut bytes.as_slice()).expect("restores");
    assert_eq!(restored.digest(), kv.digest());
    let Response::Alarms(listed) = restored.query(&corrupt(AlarmAction::Get)).response else {
        panic!("alarms")
    };
    assert_eq!(listed.alarms, vec![Alarm { member: 3, alarm: AlarmKind::Corrupt }]);
    kv.execute(alarm(AlarmAction::Activate));
    kv.execute(corrupt(AlarmAction::Deactivate));
    assert!(kv.out_of_space(), "clearing one kind leaves the other");
}
