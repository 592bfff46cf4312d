//! Authentication and authorization in the store: what a user's token lets it do, checked
//! where a request is taken ([`Kv::admit_request`]) and again where it is applied.

use bytes::Bytes;
use lockstep_core::{Origin, StateMachine};
use lockstep_kv::{
    AuthError, AuthRequest, AuthResponse, Authorized, KeyRange, Kv, KvError, LeaseGrantRequest,
    Permission, PermissionKind, Request, Response,
};

const NOW: u64 = 1_000_000;

fn ok(response: Response) {
    assert!(!matches!(response, Response::Error(_)), "{response:?}");
}

fn token(kv: &Kv, name: &str) -> String {
    let revision = kv.auth().revision();
    let issue = AuthRequest::Issue { name: name.into(), revision, expires_millis: NOW + 60_000 };
    match kv.query(&Request::Auth(issue)).response {
        Response::Auth(AuthResponse::Token(token)) => token,
        other => panic!("no token: {other:?}"),
    }
}

fn as_user(token: &str, request: Request) -> Request {
    Request::As(Box::new(Authorized { token: token.to_string(), request }))
}

/// A store with auth on: root, and `alice` who may read and write `a/` and read `b/`.
fn store() -> Kv {
    let mut kv = Kv::new();
    let auth = |request| Request::Auth(request);
    ok(kv.execute(auth(AuthRequest::UserAdd { name: "root".into(), password_hash: None })));
    ok(kv.execute(auth(AuthRequest::UserGrantRole { user: "root".into(), role: "root".into() })));
    ok(kv.execute(auth(AuthRequest::UserAdd { name: "alice".into(), password_hash: None })));
    ok(kv.execute(auth(AuthRequest::RoleAdd { name: "r".into() })));
    for (kind, prefix) in [(PermissionKind::ReadWrite, "a/"), (PermissionKind::Read, "b/")] {
        let range = KeyRange::prefix(prefix);
        let permission = Permission { kind, key: range.key, range_end: range.range_end };
        ok(kv.execute(auth(AuthRequest::RoleGrantPermission { name: "r".into(), permission })));
    }
    ok(kv.execute(auth(AuthRequest::UserGrantRole { user: "alice".into(), role: "r".into() })));
    ok(kv.execute(Request::put("b/1", "x")));
    ok(kv.execute(auth(AuthRequest::Enable { token_key: [5; 32], jwt_key: None })));
    kv
}

fn refused(response: Response) -> AuthError {
    match response {
        Response::Error(KvError::Auth(error)) => error,
        other => panic!("not refused by auth: {other:?}"),
    }
}

#[test]
fn a_request_without_a_token_is_refused_once_auth_is_on() {
    let mut kv = store();
    let revision = kv.revision();
    assert_eq!(refused(kv.execute_at(Request::put("a/1", "v"), NOW)), AuthError::UserEmpty);
    assert_eq!(
        kv.admit_request(&Request::put("a/1", "v"), Origin::Local, NOW),
        Err(KvError::Auth(AuthError::UserEmpty))
    );
    let answer = kv.query(&Request::get("b/1"));
    assert!(kv.refuses(&answer), "counted as a refusal where it was answered");
    assert_eq!(refused(answer.response), AuthError::UserEmpty);
    assert!(!kv.refuses(&kv.query(&as_user(&token(&kv, "alice"), Request::get("b/1")))));
    assert_eq!(kv.revision(), revision, "nothing changed");
}

#[test]
fn permissions_decide_reads_and_writes_where_taken_and_where_applied() {
    let mut kv = store();
    let alice = token(&kv, "alice");
    let put = as_user(&alice, Request::put("a/1", "v"));
    assert_eq!(kv.admit_request(&put, Origin::Remote, NOW), Ok(()));
    ok(kv.execute_at(put, NOW));
    ok(kv.query(&as_user(&alice, Request::get("b/1"))).response);
    let denied = as_user(&alice, Request::put("b/1", "v"));
    assert_eq!(
        kv.admit_request(&denied, Origin::Remote, NOW),
        Err(KvError::Auth(AuthError::PermissionDenied))
    );
    let revision = kv.revision();
    assert_eq!(refused(kv.execute_at(denied, NOW)), AuthError::PermissionDenied);
    assert_eq!(kv.revision(), revision);
    assert_eq!(
        refused(kv.query(&as_user(&alice, Request::get("c"))).response),
        AuthError::PermissionDenied
    );
    // Compaction and the auth store's changes need root.
    let compact = Request::Compact(lockstep_kv::CompactRequest { revision: 1 });
    assert_eq!(
        refused(kv.execute_at(as_user(&alice, compact.clone()), NOW)),
        AuthError::PermissionDenied
    );
    let root = token(&kv, "root");
    ok(kv.execute_at(as_user(&root, compact), NOW));
}

#[test]
fn a_change_to_the_auth_store_retires_older_tokens() {
    let mut kv = store();
    let alice = token(&kv, "alice");
    let root = token(&kv, "root");
    let revoke = AuthRequest::UserRevokeRole { user: "alice".into(), role: "r".into() };
    ok(kv.execute_at(as_user(&root, Request::Auth(revoke)), NOW));
    let put = as_user(&alice, Request::put("a/1", "v"));
    assert_eq!(refused(kv.execute_at(put, NOW)), AuthError::OldRevision);
    // A new token carries the user's permissions as they are now.
    let alice = token(&kv, "alice");
    let put = as_user(&alice, Request::put("a/1", "v"));
    assert_eq!(refused(kv.execute_at(put, NOW)), AuthError::PermissionDenied);
}

#[test]
fn expired_and_forged_tokens_are_refused() {
    let mut kv = store();
    let alice = token(&kv, "alice");
    let late = NOW + 60_001;
    assert_eq!(
        refused(kv.execute_at(as_user(&alice, Request::put("a/1", "v")), late)),
        AuthError::InvalidToken
    );
    let mut other = Kv::new();
    ok(other
        .execute(Request::Auth(AuthRequest::UserAdd { name: "root".into(), password_hash: None })));
    ok(other.execute(Request::Auth(AuthRequest::UserGrantRole {
        user: "root".into(),
        role: "root".into(),
    })));
    ok(other.execute(Request::Auth(AuthRequest::UserAdd {
        name: "alice".into(),
        password_hash: None,
    })));
    ok(other.execute(Request::Auth(AuthRequest::Enable { token_key: [6; 32], jwt_key: None })));
    let forged = token(&other, "root");
    assert_eq!(
        refused(kv.execute_at(as_user(&forged, Request::put("b/1", "v")), NOW)),
        AuthError::InvalidToken,
        "a token under another key"
    );
}

#[test]
fn members_requests_come_only_from_the_replicas_own_process() {
    let kv = store();
    let issue = Request::Auth(AuthRequest::Issue {
        name: "root".into(),
        revision: kv.auth().revision(),
        expires_millis: NOW,
    });
    assert_eq!(kv.admit_request(&issue, Origin::Local, NOW), Ok(()));
    assert_eq!(
        kv.admit_request(&issue, Origin::Remote, NOW),
        Err(KvError::Auth(AuthError::PermissionDenied))
    );
    let password = Request::Auth(AuthRequest::Password { name: "root".into() });
    assert!(kv.admit_request(&password, Origin::Remote, NOW).is_err());
    // Even with a valid token: a user cannot have tokens issued for others.
    let alice = token(&kv, "alice");
    assert!(kv.admit_request(&as_user(&alice, issue), Origin::Remote, NOW).is_err());
    // A lease expiry is the leader's own: from the network only with root's token.
    let end = Request::LeaseDeadlines;
    assert!(kv.admit_request(&end, Origin::Remote, NOW).is_err());
    assert_eq!(kv.admit_request(&end, Origin::Local, NOW), Ok(()));
    assert!(kv.admit_request(&as_user(&alice, end.clone()), Origin::Remote, NOW).is_err());
    let root = token(&kv, "root");
    assert_eq!(kv.admit_request(&as_user(&root, end), Origin::Remote, NOW), Ok(()));
}

#[test]
fn revoking_a_lease_needs_write_on_its_keys() {
    let mut kv = store();
    let root = token(&kv, "root");
    let alice = token(&kv, "alice");
    let grant = Request::LeaseGrant(LeaseGrantRequest { id: 9, ttl: 60 });
    ok(kv.execute_at(as_user(&alice, grant), NOW));
    let put = lockstep_kv::PutRequest {
        key: Bytes::from("b/2"),
        value: Bytes::from("v"),
        lease: 9,
        ..Default::default()
    };
    ok(kv.execute_at(as_user(&root, Request::Put(put)), NOW));
    let revoke = Request::LeaseRevoke(lockstep_kv::LeaseIdRequest { id: 9 });
    assert_eq!(
        refused(kv.execute_at(as_user(&alice, revoke.clone()), NOW)),
        AuthError::PermissionDenied
    );
    ok(kv.execute_at(as_user(&root, revoke), NOW));
}

/// What only the replica's own process may send is refused from the network on every attempt
/// ([`Kv::screen_request`]), and password hashes and tokens are never answered through the
/// log, whoever wrote the entry.
#[test]
fn tokens_and_hashes_never_leave_through_the_log_or_the_network() {
    let mut kv = store();
    let revision = kv.auth().revision();
    let issue = Request::Auth(AuthRequest::Issue {
        name: "root".into(),
        revision,
        expires_millis: u64::MAX,
    });
    assert_eq!(refused(kv.execute_at(issue.clone(), NOW)), AuthError::PermissionDenied);
    let password = Request::Auth(AuthRequest::Password { name: "root".into() });
    assert_eq!(refused(kv.execute_at(password.clone(), NOW)), AuthError::PermissionDenied);
    let enable = Request::Auth(AuthRequest::Enable { token_key: [1; 32], jwt_key: None });
    for request in [&issue, &password, &enable, &Request::LeaseDeadlines] {
        assert!(kv.screen_request(request, Origin::Remote).is_err(), "{request:?}");
        assert_eq!(kv.screen_request(request, Origin::Local), Ok(()));
    }
    let alice = token(&kv, "alice");
    assert!(kv.screen_request(&as_user(&alice, issue), Origin::Remote).is_err());
    assert_eq!(kv.screen_request(&Request::put("a/1", "v"), Origin::Remote), Ok(()));
}

/// A token names the store's revision it was issued at: an entry applied at an older one
/// cannot carry it (only a forged token could), though a replica behind may read with it.
#[test]
fn a_token_from_ahead_of_the_store_is_refused_when_applied() {
    let mut kv = store();
    let mut ahead = kv.clone();
    let root = token(&ahead, "root");
    let add = Request::Auth(AuthRequest::RoleAdd { name: "new".into() });
    ok(ahead.execute_at(as_user(&root, add), NOW));
    let alice = token(&ahead, "alice");
    let read = as_user(&alice, Request::get("a/1"));
    assert_eq!(kv.admit_request(&read, Origin::Remote, NOW), Ok(()));
    assert_eq!(
        refused(kv.execute_at(as_user(&alice, Request::put("a/1", "v")), NOW)),
        AuthError::InvalidToken
    );
}

/// A request made as a user never holds another: one nested a hundred thousand times deep is
/// refused at the first level inside, not decoded until the stack runs out.
#[test]
fn nested_requests_are_refused_when_decoded() {
    let one = Request::As(Box::new(Authorized { token: "t".into(), request: Request::Revisions }));
    let bytes = postcard::to_stdvec(&one).expect("encodes");
    let revisions = postcard::to_stdvec(&Request::Revisions).expect("encodes");
    assert!(bytes.ends_with(&revisions));
    let prefix = &bytes[..bytes.len() - revisions.len()];
    let mut nested = Vec::new();
    for _ in 0..100_000 {
        nested.extend_from_slice(prefix);
    }
    nested.extend_from_slice(&revisions);
    let decoded: Result<Request, _> = postcard::from_bytes(&nested);
    assert!(decoded.is_err(), "a nested request was taken");
    let decoded: Request = postcard::from_bytes(&bytes).expect("one level decodes");
    assert_eq!(decoded, one);
}

fn member_token(kv: &Kv, member: u64, expires_millis: u64) -> String {
    let issue = AuthRequest::MemberToken { member, expires_millis };
    match kv.query(&Request::Auth(issue)).response {
        Response::Auth(AuthResponse::Token(token)) => token,
        other => panic!("no member token: {other:?}"),
    }
}

/// A member that does not lead makes its own requests (raising an alarm) through the leader
/// with a member's token: taken from the network and applied, good for nothing else, never
/// issued to the network, and dead once expired, forged or from an earlier token key.
#[test]
fn a_members_token_carries_its_own_requests_and_nothing_else() {
    let mut kv = store();
    let raise = Request::Alarm(lockstep_kv::AlarmRequest {
        action: lockstep_kv::AlarmAction::Activate,
        member: 2,
        alarm: lockstep_kv::AlarmKind::NoSpace,
    });
    assert!(kv.admit_request(&raise, Origin::Remote, NOW).is_err(), "no token, from the network");
    let member = member_token(&kv, 2, NOW + 60_000);
    assert!(lockstep_kv::auth::is_member_token(&member));
    assert_eq!(kv.auth().verify_member(&member, NOW), Ok(2));
    let raised = as_user(&member, raise.clone());
    assert_eq!(kv.admit_request(&raised, Origin::Remote, NOW), Ok(()));
    ok(kv.execute_at(raised, NOW));
    assert!(kv.out_of_space(), "the alarm was raised");

    // A member's automatic compaction.
    let compact = as_user(&member, Request::Compact(lockstep_kv::CompactRequest { revision: 1 }));
    assert_eq!(kv.admit_request(&compact, Origin::Remote, NOW), Ok(()));

    // Nothing but the members' own requests.
    for request in
        [Request::get("a/1"), Request::put("a/1", "v"), Request::Hash(Default::default())]
    {
        let made = as_user(&member, request);
        assert_eq!(
            kv.admit_request(&made, Origin::Remote, NOW),
            Err(KvError::Auth(AuthError::PermissionDenied))
        );
        assert_eq!(refused(kv.execute_at(made, NOW)), AuthError::PermissionDenied);
    }
    let issue = AuthRequest::MemberToken { member: 2, expires_millis: NOW + 60_000 };
    assert!(kv.admit_request(&Request::Auth(issue.clone()), Origin::Remote, NOW).is_err());
    assert!(kv
        .admit_request(&as_user(&member, Request::Auth(issue)), Origin::Remote, NOW)
        .is_err());
    // Not a user's token, nor a user's token a member's.
    assert!(kv.auth().verify(&member, NOW, false).is_err());
    assert!(kv.auth().verify_member(&token(&kv, "root"), NOW).is_err());

    // Expired, forged, or from before the token key changed.
    let clear = Request::Alarm(lockstep_kv::AlarmRequest {
        action: lockstep_kv::AlarmAction::Deactivate,
        member: 2,
        alarm: lockstep_kv::AlarmKind::NoSpace,
    });
    let expired = member_token(&kv, 2, NOW - 1);
    assert_eq!(
        refused(kv.execute_at(as_user(&expired, clear.clone()), NOW)),
        AuthError::InvalidToken
    );
    let mut forged = member.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).expect("hex");
    assert_eq!(
        refused(kv.execute_at(as_user(&forged, clear.clone()), NOW)),
        AuthError::InvalidToken
    );
    let root = token(&kv, "root");
    ok(kv.execute_at(as_user(&root, Request::Auth(AuthRequest::Disable)), NOW));
    ok(kv
        .execute_at(Request::Auth(AuthRequest::Enable { token_key: [6; 32], jwt_key: None }), NOW));
    assert_eq!(
        refused(kv.execute_at(as_user(&member, clear.clone()), NOW)),
        AuthError::InvalidToken
    );
    assert!(kv.out_of_space(), "nothing refused cleared the alarm");
    ok(kv.execute_at(as_user(&member_token(&kv, 2, NOW + 1), clear), NOW));
    assert!(!kv.out_of_space());
}
