//! Authentication and authorization through etcd's API, driven by `etcdctl` against three
//! real servers: users, roles, permissions on prefixes granted and revoked, `auth enable`;
//! what a user may and may not read, write, watch, lease, compact; membership changes and
//! maintenance refused without root; requests refused take no log entry.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Cluster;

fn etcdctl(cluster: &Cluster, user: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(cluster.etcd_endpoints())
        .arg("--command-timeout=10s");
    if let Some(user) = user {
        command.arg(format!("--user={user}"));
    }
    command.args(args).output().unwrap_or_else(|error| {
        panic!("etcdctl cannot run ({error}): `bash scripts/test.sh` installs Debian's etcd-client")
    })
}

/// Runs etcdctl and expects success; its standard output.
fn ok(cluster: &Cluster, user: Option<&str>, args: &[&str]) -> String {
    let output = etcdctl(cluster, user, args);
    assert!(output.status.success(), "etcdctl {args:?} as {user:?} failed: {}", tail(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs etcdctl and expects it to fail with `message` on its standard error.
fn refused(cluster: &Cluster, user: Option<&str>, args: &[&str], message: &str) {
    let output = etcdctl(cluster, user, args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains(message),
        "etcdctl {args:?} as {user:?}: expected a refusal with {message:?}, got {}",
        tail(&output)
    );
}

/// The end of what etcdctl printed (its retries can print pages).
fn tail(output: &Output) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let start = text.len().saturating_sub(1500);
    let start = (start..text.len()).find(|&index| text.is_char_boundary(index)).unwrap_or(0);
    format!("{:?}: ...{}", output.status, &text[start..])
}

/// The log's commit index, as root sees it on member 1.
fn raft_index(cluster: &Cluster) -> u64 {
    let endpoint = cluster.etcd_endpoints();
    let first = endpoint.split(',').next().expect("an endpoint").to_string();
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &first, "--user=root:rootpw", "endpoint", "status", "-w", "json"])
        .output()
        .expect("etcdctl");
    assert!(output.status.success(), "{output:?}");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    status[0]["Status"]["raftIndex"].as_u64().unwrap_or_else(|| panic!("no raft index in {status}"))
}

/// The commit index once it has stayed put for a second.
fn settled_index(cluster: &Cluster) -> u64 {
    let mut last = raft_index(cluster);
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(1));
        let now = raft_index(cluster);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the log kept growing with nothing asked of it");
}

#[test]
fn users_roles_and_permissions_through_etcdctl() {
    let mut cluster = Cluster::new("auth-etcdctl", 3);
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(cluster.leader(Duration::from_secs(20)));
    let root = Some("root:rootpw");
    let alice = Some("alice:alicepw");

    // Before auth is on, anyone manages users and roles, as in etcd.
    assert_eq!(ok(&cluster, None, &["user", "add", "root:rootpw"]), "User root created\n");
    assert_eq!(ok(&cluster, None, &["user", "add", "alice:alicepw"]), "User alice created\n");
    assert_eq!(ok(&cluster, None, &["role", "add", "reader"]), "Role reader created\n");
    ok(&cluster, None, &["role", "grant-permission", "reader", "read", "--prefix", "a/"]);
    ok(&cluster, None, &["role", "grant-permission", "reader", "readwrite", "--prefix", "w/"]);
    ok(&cluster, None, &["user", "grant-role", "alice", "reader"]);
    ok(&cluster, None, &["put", "a/1", "one"]);
    ok(&cluster, None, &["put", "b/1", "secret"]);
    // etcdctl grants root the root role itself when the store asks for it.
    assert_eq!(ok(&cluster, None, &["auth", "enable"]), "Authentication Enabled\n");

    // No credentials, wrong ones, and a user that does not exist.
    refused(&cluster, None, &["put", "a/1", "x"], "user name is empty");
    refused(&cluster, None, &["get", "a/1"], "user name is empty");
    refused(&cluster, Some("alice:wrong"), &["get", "a/1"], "authentication failed");
    refused(&cluster, Some("mallory:pw"), &["get", "a/1"], "authentication failed");

    // What alice may do: read a/, read and write w/; nothing else.
    assert_eq!(ok(&cluster, alice, &["get", "a/1"]), "a/1\none\n");
    assert_eq!(ok(&cluster, alice, &["put", "w/1", "mine"]), "OK\n");
    refused(&cluster, alice, &["put", "a/1", "x"], "permission denied");
    refused(&cluster, alice, &["get", "b/1"], "permission denied");
    refused(&cluster, alice, &["get", "--prefix", "a"], "permission denied");
    refused(&cluster, alice, &["del", "a/1"], "permission denied");
    refused(&cluster, alice, &["compaction", "1"], "permission denied");
    refused(
        &cluster,
        alice,
        &["member", "add", "intruder", "--peer-urls=http://127.0.0.1:1"],
        "permission denied",
    );
    refused(&cluster, alice, &["alarm", "list"], "permission denied");
    refused(&cluster, alice, &["endpoint", "hashkv"], "permission denied");
    refused(&cluster, alice, &["user", "add", "eve:pw"], "permission denied");
    refused(
        &cluster,
        alice,
        &["role", "grant-permission", "reader", "readwrite", "b/"],
        "permission denied",
    );
    // A transaction is checked operation by operation.
    let denied_txn = etcdctl_txn(&cluster, alice, "\n\nput b/1 stolen\n\n\n");
    assert!(denied_txn.contains("permission denied"), "{denied_txn}");
    // A lease may be granted; its keys need permission of their own.
    let granted = ok(&cluster, alice, &["lease", "grant", "60"]);
    let lease = granted.split_whitespace().nth(1).expect("lease id").to_string();
    assert_eq!(ok(&cluster, alice, &["put", "--lease", &lease, "w/leased", "v"]), "OK\n");

    // Keep-alives still renew (the leader reads the lease as a member does).
    let kept = ok(&cluster, alice, &["lease", "keep-alive", "--once", &lease]);
    assert!(kept.contains("keepalived with TTL("), "{kept}");

    // A client of the native protocol cannot have the members' own requests served: tokens
    // for any user and password hashes stay inside a member's process, on every path (a
    // first attempt at the leader, a write at a follower, a read).
    runtime.block_on(async {
        use lockstep_kv::{AuthError, AuthRequest, KvError, Request, Response};
        let leader = cluster.leader(Duration::from_secs(10)).await;
        let follower = (1..=3).find(|&id| id != leader).expect("a follower");
        let issue = || {
            Request::Auth(AuthRequest::Issue {
                name: "root".into(),
                revision: 1,
                expires_millis: u64::MAX,
            })
        };
        let denied = Response::Error(KvError::Auth(AuthError::PermissionDenied));
        let at_leader = cluster.client_of(&[leader]).write(issue()).await.expect("answered");
        assert_eq!(at_leader.response, denied);
        let at_follower = cluster.client_of(&[follower]).write(issue()).await.expect("answered");
        assert_eq!(at_follower.response, denied, "passed on to the leader, and refused there");
        // A retry's form (a plain `Write`, which the leader proposes unless it screens it
        // out), sent by hand.
        let port = cluster.replicas[&leader].client;
        match raw_write(port, issue()).await {
            lockstep_wire::ServerMessage::Refused {
                error: lockstep_wire::ClientError::Rejected(reason),
                ..
            } => assert!(reason.contains("permission denied"), "{reason}"),
            other => panic!("a member's request from the network was taken: {other:?}"),
        }
        // A lease's bookkeeping too (a checkpoint could end any lease early).
        let checkpoint = Request::LeaseCheckpoint(lockstep_kv::LeaseCheckpointRequest {
            term: 0,
            leases: vec![(1, 0)],
        });
        match raw_write(port, checkpoint).await {
            lockstep_wire::ServerMessage::Refused {
                error: lockstep_wire::ClientError::Rejected(reason),
                ..
            } => assert!(reason.contains("permission denied"), "{reason}"),
            other => panic!("a lease checkpoint from the network was taken: {other:?}"),
        }
        let hash = Request::Auth(AuthRequest::Password { name: "root".into() });
        let read = cluster.client().read(hash).await.expect("answered");
        assert_eq!(read.response, denied);
        let enable = Request::Auth(AuthRequest::Enable { token_key: [0; 32], jwt_key: None });
        let enabled = cluster.client_of(&[leader]).write(enable).await.expect("answered");
        assert_eq!(enabled.response, denied, "a token key chosen by a client");
    });

    // Refusals take no log entry.
    // (Once the log is still: the servers' own entries, such as a lease's first record, are
    // not the requests'.)
    let before = settled_index(&cluster);
    for _ in 0..10 {
        refused(&cluster, alice, &["put", "b/1", "x"], "permission denied");
        refused(&cluster, None, &["put", "b/1", "x"], "user name is empty");
    }
    assert_eq!(raft_index(&cluster), before, "no refused request took a log entry");

    // A watch on what alice may not read is canceled; on what she may, it sees the writes.
    let denied_watch = watch_lines(&cluster, alice, "b/", None, 1);
    assert!(denied_watch.is_empty(), "a watch on b/ delivered {denied_watch:?}");
    let seen = watch_lines(&cluster, alice, "w/", Some(("w/2", "two")), 3);
    assert_eq!(seen, ["PUT", "w/2", "two"]);

    // The same through lockstep's own command line and native protocol.
    let native_ok = |user: Option<&str>, args: &[&str]| {
        let output = native(&cluster, user, args);
        assert!(output.status.success(), "lockstep {args:?} as {user:?}: {}", tail(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let native_refused = |user: Option<&str>, args: &[&str], message: &str| {
        let output = native(&cluster, user, args);
        let text = tail(&output);
        assert!(
            !output.status.success() && text.contains(message),
            "lockstep {args:?} as {user:?}: expected {message:?}, got {text}"
        );
    };
    native_refused(None, &["get", "a/1"], "user name is empty");
    native_refused(None, &["put", "w/n", "x"], "user name is empty");
    assert_eq!(native_ok(alice, &["get", "a/1"]), "a/1\tone\n");
    assert_eq!(native_ok(alice, &["put", "w/n", "x"]), "OK\n");
    native_refused(alice, &["put", "b/1", "x"], "permission denied");
    native_refused(Some("alice:wrong"), &["get", "a/1"], "authentication failed");
    native_ok(None, &["member", "list"]);
    native_refused(None, &["member", "remove", "3"], "user name is empty");
    native_refused(alice, &["member", "remove", "3"], "permission denied");
    native_refused(alice, &["audit", "check"], "permission denied");
    native_refused(None, &["compact", "1"], "user name is empty");
    native_ok(root, &["audit", "check"]);
    assert_eq!(native_ok(root, &["put", "b/1", "root's"]), "OK\n");

    // Root may do all of it; a permission taken back is gone at once.
    assert_eq!(ok(&cluster, root, &["put", "a/1", "uno"]), "OK\n");
    ok(&cluster, root, &["member", "list"]);
    ok(&cluster, root, &["endpoint", "hashkv"]);
    ok(&cluster, root, &["role", "revoke-permission", "reader", "a/", "--prefix"]);
    refused(&cluster, alice, &["get", "a/1"], "permission denied");
    let roles = ok(&cluster, root, &["user", "get", "alice"]);
    assert!(roles.contains("reader"), "{roles}");

    // A watch open when its permission is taken away is canceled at once.
    runtime.block_on(async {
        use lockstep_etcd::proto::etcdserverpb as pb;
        use pb::watch_request::RequestUnion;
        let endpoint = format!("http://127.0.0.1:{}", cluster.replicas[&1].etcd);
        let channel = tonic::transport::Channel::from_shared(endpoint)
            .expect("an address")
            .connect()
            .await
            .expect("connects");
        let mut auth = lockstep_etcd::rpc::auth_client::AuthClient::new(channel.clone());
        let login = pb::AuthenticateRequest { name: "alice".into(), password: "alicepw".into() };
        let token = auth.authenticate(login).await.expect("alice").into_inner().token;
        let (requests, receiver) = tokio::sync::mpsc::channel(4);
        let mut watch = tonic::Request::new(
            tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver),
        );
        watch.metadata_mut().insert("token", token.parse().expect("ascii"));
        let mut client = lockstep_etcd::rpc::watch_client::WatchClient::new(channel);
        let mut responses = client.watch(watch).await.expect("a watch stream").into_inner();
        let create = pb::WatchCreateRequest {
            key: b"w/".to_vec(),
            range_end: b"w0".to_vec(),
            ..Default::default()
        };
        let create = pb::WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
        requests.send(create).await.expect("sent");
        let created = next_watch_response(&mut responses).await;
        assert!(created.created && !created.canceled, "{created:?}");
        ok(&cluster, root, &["role", "revoke-permission", "reader", "w/", "--prefix"]);
        let canceled = next_watch_response(&mut responses).await;
        assert!(canceled.canceled, "the watch went on: {canceled:?}");
        assert!(canceled.cancel_reason.contains("permission denied"), "{canceled:?}");
    });
    ok(&cluster, root, &["user", "delete", "alice"]);
    refused(&cluster, alice, &["get", "w/1"], "authentication failed");
    // Root cannot lock everyone out.
    refused(&cluster, root, &["user", "delete", "root"], "invalid auth management");

    // Off again: anyone may write.
    assert_eq!(ok(&cluster, root, &["auth", "disable"]), "Authentication Disabled\n");
    assert_eq!(ok(&cluster, None, &["put", "b/1", "public"]), "OK\n");
}

/// The next response on a watch stream, within 10 s.
async fn next_watch_response(
    responses: &mut tonic::Streaming<lockstep_etcd::proto::etcdserverpb::WatchResponse>,
) -> lockstep_etcd::proto::etcdserverpb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("in time")
        .expect("a response")
        .expect("the stream is open")
}

/// Sends `input` to the native client port `port` as a plain `Write` (a retry's form) and
/// returns the answer.
async fn raw_write(
    port: u16,
    input: lockstep_kv::Request,
) -> lockstep_wire::ServerMessage<lockstep_kv::Answer> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connects");
    let message =
        lockstep_wire::ClientMessage::<lockstep_kv::Request, lockstep_kv::Request>::Write {
            id: 1,
            client: 0x5eed,
            sequence: 1,
            input,
        };
    let frame = lockstep_wire::encode(lockstep_wire::Kind::Client, &message).expect("encodes");
    stream.write_all(&frame).await.expect("sent");
    let mut decoder = lockstep_wire::Decoder::new(1 << 20);
    let mut buffer = vec![0u8; 4096];
    loop {
        if let Some((_, body)) = decoder.next_frame().expect("a frame") {
            return lockstep_wire::decode(&body).expect("an answer");
        }
        let read = stream.read(&mut buffer).await.expect("reads");
        assert!(read > 0, "the connection closed without an answer");
        decoder.extend(&buffer[..read]);
    }
}

/// Runs `lockstep` (the native client) against the cluster as `user`.
fn native(cluster: &Cluster, user: Option<&str>, args: &[&str]) -> Output {
    let mut command = common::lockstep();
    command.args(args).arg("--endpoints").arg(cluster.endpoints().join(","));
    if let Some(user) = user {
        command.arg(format!("--user={user}"));
    }
    command.output().expect("run lockstep")
}

fn etcdctl_txn(cluster: &Cluster, user: Option<&str>, script: &str) -> String {
    use std::io::Write;
    let mut command = Command::new("etcdctl");
    command.env("ETCDCTL_API", "3").arg("--endpoints").arg(cluster.etcd_endpoints());
    if let Some(user) = user {
        command.arg(format!("--user={user}"));
    }
    let mut child = command
        .arg("txn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl txn");
    child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write");
    let output = child.wait_with_output().expect("wait");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `etcdctl watch --prefix prefix` as `user`, puts `write` (as root) once it is set up,
/// and returns the first `wanted` lines it printed within a few seconds.
fn watch_lines(
    cluster: &Cluster,
    user: Option<&str>,
    prefix: &str,
    write: Option<(&str, &str)>,
    wanted: usize,
) -> Vec<String> {
    let mut command = Command::new("etcdctl");
    command.env("ETCDCTL_API", "3").arg("--endpoints").arg(cluster.etcd_endpoints());
    if let Some(user) = user {
        command.arg(format!("--user={user}"));
    }
    let mut watch = command
        .args(["watch", "--prefix", prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let (lines, seen) = std::sync::mpsc::channel();
    let out = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    if let Some((key, value)) = write {
        ok(cluster, Some("root:rootpw"), &["put", key, value]);
    }
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while received.len() < wanted && Instant::now() < deadline {
        if let Ok(line) = seen.recv_timeout(Duration::from_millis(100)) {
            received.push(line);
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    received
}

/// With `--auth-token jwt,priv-key=FILE`, members issue EdDSA JWTs (etcd's format) that any
/// member checks; a JWT signed with another key, or a token of the other kind, is refused.
#[test]
fn jwt_tokens_signed_by_the_members_key() {
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};
    use lockstep_etcd::proto::etcdserverpb as pb;
    let mut cluster = Cluster::new("auth-jwt", 3);
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let pem = key.to_pkcs8_pem(LineEnding::LF).expect("PEM");
    let key_file = cluster.data_dir(0).with_file_name("jwt-key.pem");
    lockstep_tls::issue::write_private(&key_file, &pem).expect("written");
    cluster.extra_args = vec![
        "--auth-token".into(),
        format!("jwt,priv-key={},sign-method=EdDSA", key_file.display()),
    ];
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(cluster.leader(Duration::from_secs(20)));
    ok(&cluster, None, &["user", "add", "root:rootpw"]);
    ok(&cluster, None, &["user", "add", "bob:bobpw"]);
    ok(&cluster, None, &["auth", "enable"]);
    assert_eq!(ok(&cluster, Some("root:rootpw"), &["put", "k", "v"]), "OK\n");
    refused(&cluster, Some("bob:bobpw"), &["get", "k"], "permission denied");
    refused(&cluster, Some("bob:wrong"), &["get", "k"], "authentication failed");

    runtime.block_on(async {
        let mut tokens = Vec::new();
        for id in 1..=3 {
            let endpoint = format!("http://127.0.0.1:{}", cluster.replicas[&id].etcd);
            let channel = tonic::transport::Channel::from_shared(endpoint)
                .expect("an address")
                .connect()
                .await
                .expect("connects");
            let mut auth = lockstep_etcd::rpc::auth_client::AuthClient::new(channel.clone());
            let request =
                pb::AuthenticateRequest { name: "root".into(), password: "rootpw".into() };
            let token = auth.authenticate(request).await.expect("authenticated").into_inner().token;
            assert_eq!(token.matches('.').count(), 2, "a JWT: {token}");
            tokens.push((channel, token));
        }
        let get = |channel: tonic::transport::Channel, token: String| async move {
            let mut kv = lockstep_etcd::rpc::k_v_client::KVClient::new(channel);
            let mut request =
                tonic::Request::new(pb::RangeRequest { key: b"k".to_vec(), ..Default::default() });
            request.metadata_mut().insert("token", token.parse().expect("ascii"));
            kv.range(request).await
        };
        // Any member's token works on any member.
        let (first, _) = tokens[0].clone();
        for (_, token) in &tokens {
            let answer = get(first.clone(), token.clone()).await.expect("read with a JWT");
            assert_eq!(answer.into_inner().kvs[0].value, b"v");
        }
        // Signed with another key, or tampered with: refused.
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let forged = lockstep_kv::auth::jwt::sign(&other, "root", 100, u64::MAX / 2);
        let refusal = get(first.clone(), forged).await.expect_err("refused");
        assert_eq!(refusal.code(), tonic::Code::Unauthenticated, "{refusal:?}");
        assert!(refusal.message().contains("invalid auth token"), "{refusal:?}");
        // One character of the signature changed.
        let mut tampered: Vec<char> = tokens[0].1.chars().collect();
        let at = tampered.len() - 10;
        tampered[at] = if tampered[at] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        let refusal = get(first.clone(), tampered).await.expect_err("refused");
        assert_eq!(refusal.code(), tonic::Code::Unauthenticated, "{refusal:?}");
    });
}

/// With client certificates required, a request with no token is made as the user its
/// certificate's common name names (as etcd's `--client-cert-auth`); a token, when given,
/// names the user instead.
#[test]
fn a_client_certificate_names_the_user() {
    let mut cluster = Cluster::new("auth-cn", 3);
    cluster.with_tls();
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(cluster.leader(Duration::from_secs(20)));
    let files = cluster.tls.clone().expect("TLS files");
    let run = |user: Option<&str>, args: &[&str]| {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(cluster.etcd_endpoints())
            .arg("--cacert")
            .arg(files.ca())
            .arg("--cert")
            .arg(files.client())
            .arg("--key")
            .arg(files.client_key())
            .arg("--command-timeout=10s");
        if let Some(user) = user {
            command.arg(format!("--user={user}"));
        }
        command.args(args).output().expect("etcdctl runs")
    };
    let succeeds = |user: Option<&str>, args: &[&str]| {
        let output = run(user, args);
        assert!(output.status.success(), "etcdctl {args:?}: {}", tail(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // The certificates `Cluster::with_tls` makes name the client "lockstep client".
    succeeds(None, &["user", "add", "root:rootpw"]);
    succeeds(None, &["user", "add", "lockstep client", "--no-password"]);
    succeeds(None, &["role", "add", "app"]);
    succeeds(None, &["role", "grant-permission", "app", "readwrite", "--prefix", "app/"]);
    succeeds(None, &["user", "grant-role", "lockstep client", "app"]);
    assert_eq!(succeeds(None, &["auth", "enable"]), "Authentication Enabled\n");

    assert_eq!(succeeds(None, &["put", "app/1", "by certificate"]), "OK\n");
    assert_eq!(succeeds(None, &["get", "app/1", "--print-value-only"]), "by certificate\n");
    let denied = run(None, &["put", "other", "x"]);
    let text = tail(&denied);
    assert!(!denied.status.success() && text.contains("permission denied"), "{text}");
    // A token names its own user, over the certificate's.
    assert_eq!(succeeds(Some("root:rootpw"), &["put", "other", "by root"]), "OK\n");
    // A user without a password cannot authenticate with one.
    let login = run(Some("lockstep client:anything"), &["get", "app/1"]);
    let text = tail(&login);
    assert!(!login.status.success() && text.contains("authentication failed"), "{text}");
}

/// With authentication on, a member that does not lead raises NOSPACE through the leader
/// with a member's token when a write through it finds no room: the alarm is raised, and no
/// user's credentials were needed for it.
#[test]
fn a_follower_raises_nospace_with_auth_on() {
    let mut cluster = Cluster::new("auth-quota", 3);
    cluster.extra_args = vec!["--quota-backend-bytes".into(), "100000".into()];
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let leader = runtime.block_on(cluster.leader(Duration::from_secs(20)));
    ok(&cluster, None, &["user", "add", "root:rootpw"]);
    ok(&cluster, None, &["user", "add", "writer:writerpw"]);
    ok(&cluster, None, &["role", "add", "w"]);
    ok(&cluster, None, &["role", "grant-permission", "w", "readwrite", "--prefix", "big/"]);
    ok(&cluster, None, &["user", "grant-role", "writer", "w"]);
    ok(&cluster, None, &["auth", "enable"]);
    let follower = cluster
        .replicas
        .iter()
        .find(|(id, _)| **id != leader)
        .map(|(_, replica)| format!("127.0.0.1:{}", replica.etcd))
        .expect("a follower");
    let at_follower = |args: &[&str]| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &follower, "--command-timeout=10s", "--user=writer:writerpw"])
            .args(args)
            .output()
            .expect("etcdctl")
    };
    let value = "x".repeat(10_000);
    let started = Instant::now();
    let mut refusal = None;
    for n in 0.. {
        assert!(started.elapsed() < Duration::from_secs(60), "no NOSPACE after {n} puts");
        let output = at_follower(&["put", &format!("big/{n}"), &value]);
        if !output.status.success() {
            refusal = Some(String::from_utf8_lossy(&output.stderr).into_owned());
            break;
        }
        // Each member looks at the store's size every 500 ms.
        if n >= 8 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let refusal = refusal.expect("refused");
    assert!(refusal.contains("database space exceeded"), "{refusal}");
    // The store stopped short of the quota (a put that would pass it is refused before it
    // is proposed), so the leader's own look never finds it past: the follower raised it.
    let started = Instant::now();
    loop {
        let alarms = ok(&cluster, Some("root:rootpw"), &["alarm", "list"]);
        if alarms.contains("alarm:NOSPACE") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no alarm raised: {alarms:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
