//! etcd's own command-line client, `etcdctl` (Debian's etcd-client package, which
//! `scripts/test.sh` installs), against a three-replica lockstep cluster: put, get with prefix
//! and revision, del, txn in its interactive form, watch, leases with attached keys, member
//! list, endpoint status and endpoint hashkv, move-leader and defrag.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Cluster;

fn etcdctl(cluster: &Cluster, args: &[&str]) -> Output {
    etcdctl_command(cluster, args).output().unwrap_or_else(|error| {
        panic!("etcdctl cannot run ({error}): `bash scripts/test.sh` installs Debian's etcd-client")
    })
}

fn etcdctl_command(cluster: &Cluster, args: &[&str]) -> Command {
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(cluster.etcd_endpoints())
        .arg("--command-timeout=10s")
        .args(args);
    command
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "etcdctl failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(output)).expect("etcdctl printed JSON")
}

#[test]
fn etcdctl_works_against_lockstep() {
    let mut cluster = Cluster::new("etcdctl", 3);
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(cluster.leader(Duration::from_secs(20)));

    // put, get, get at a revision, get with a prefix, del.
    assert_eq!(stdout(&etcdctl(&cluster, &["put", "foo", "bar"])), "OK\n");
    let first = json(&etcdctl(&cluster, &["get", "foo", "-w", "json"]));
    let first_revision = first["header"]["revision"].as_i64().expect("a revision");
    assert_eq!(stdout(&etcdctl(&cluster, &["put", "foo", "baz"])), "OK\n");
    assert_eq!(stdout(&etcdctl(&cluster, &["get", "foo"])), "foo\nbaz\n");
    let rev = format!("--rev={first_revision}");
    assert_eq!(stdout(&etcdctl(&cluster, &["get", "foo", &rev])), "foo\nbar\n");
    assert_eq!(stdout(&etcdctl(&cluster, &["put", "fob", "1"])), "OK\n");
    assert_eq!(stdout(&etcdctl(&cluster, &["get", "--prefix", "fo"])), "fob\n1\nfoo\nbaz\n");
    assert_eq!(
        stdout(&etcdctl(&cluster, &["get", "--prefix", "--keys-only", "fo"])),
        "fob\n\nfoo\n\n"
    );
    assert_eq!(stdout(&etcdctl(&cluster, &["del", "fob"])), "1\n");
    assert_eq!(stdout(&etcdctl(&cluster, &["get", "fob"])), "");
    let got = json(&etcdctl(&cluster, &["get", "foo", "-w", "json"]));
    assert_eq!(got["kvs"][0]["version"], 2);
    assert_eq!(got["header"]["member_id"].as_u64().map(|id| (1..=3).contains(&id)), Some(true));

    // txn, in etcdctl's interactive form: compares, a blank line, success ops, a blank line,
    // failure ops.
    let txn = |script: &str| {
        let mut child = etcdctl_command(&cluster, &["txn"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl txn");
        child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write");
        stdout(&child.wait_with_output().expect("wait"))
    };
    let succeeded = txn("value(\"foo\") = \"baz\"\n\nput foo qux\nget foo\n\nget foo\n\n");
    assert_eq!(succeeded, "SUCCESS\n\nOK\n\nfoo\nqux\n", "a range sees the put before it");
    let failed = txn("value(\"foo\") = \"baz\"\n\nput foo never\n\nget foo\n\n");
    assert_eq!(failed, "FAILURE\n\nfoo\nqux\n");

    // watch: a write shows up in a running watch.
    let mut watch = etcdctl_command(&cluster, &["watch", "--prefix", "w/"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let (lines, seen) = mpsc::channel();
    let out = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500)); // the watch is set up
    assert_eq!(stdout(&etcdctl(&cluster, &["put", "w/1", "hello"])), "OK\n");
    assert_eq!(stdout(&etcdctl(&cluster, &["del", "w/1"])), "1\n");
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.len() < 5 && Instant::now() < deadline {
        if let Ok(line) = seen.recv_timeout(Duration::from_millis(100)) {
            received.push(line);
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(received, ["PUT", "w/1", "hello", "DELETE", "w/1"], "the watch saw the writes");

    // Leases: grant, attach a key, time to live with keys, keep alive, revoke (the key goes).
    let granted = stdout(&etcdctl(&cluster, &["lease", "grant", "60"]));
    let lease = granted.split_whitespace().nth(1).expect("lease id").to_string();
    assert!(granted.ends_with("granted with TTL(60s)\n"), "{granted}");
    assert_eq!(stdout(&etcdctl(&cluster, &["put", "--lease", &lease, "leased", "v"])), "OK\n");
    let alive = stdout(&etcdctl(&cluster, &["lease", "timetolive", "--keys", &lease]));
    assert!(
        alive.contains("granted with TTL(60s)") && alive.contains("attached keys([leased])"),
        "{alive}"
    );
    let kept = stdout(&etcdctl(&cluster, &["lease", "keep-alive", "--once", &lease]));
    assert_eq!(kept, format!("lease {lease} keepalived with TTL(60)\n"));
    assert!(stdout(&etcdctl(&cluster, &["lease", "list"])).contains(&lease));
    assert_eq!(
        stdout(&etcdctl(&cluster, &["lease", "revoke", &lease])),
        format!("lease {lease} revoked\n")
    );
    assert_eq!(stdout(&etcdctl(&cluster, &["get", "leased"])), "");
    // A lease that is not kept alive expires, and its keys with it.
    let short = stdout(&etcdctl(&cluster, &["lease", "grant", "2"]));
    let short = short.split_whitespace().nth(1).expect("lease id").to_string();
    assert_eq!(stdout(&etcdctl(&cluster, &["put", "--lease", &short, "brief", "v"])), "OK\n");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !stdout(&etcdctl(&cluster, &["get", "brief"])).is_empty() {
        assert!(Instant::now() < deadline, "the lease did not expire");
        std::thread::sleep(Duration::from_millis(250));
    }

    // member list, endpoint status, endpoint hashkv.
    let members = stdout(&etcdctl(&cluster, &["member", "list"]));
    assert_eq!(members.lines().count(), 3, "{members}");
    for replica in cluster.replicas.values() {
        assert!(members.contains(&format!("http://127.0.0.1:{}", replica.etcd)), "{members}");
    }
    // member add (a learner, not started), list, remove.
    let spare = common::free_ports(1)[0];
    let peer_url = format!("--peer-urls=http://127.0.0.1:{spare}");
    let added = stdout(&etcdctl(&cluster, &["member", "add", "spare", &peer_url, "--learner"]));
    assert!(added.contains("added to cluster"), "{added}");
    let new_id = added.split_whitespace().nth(1).expect("the new member's id").to_string();
    let members = stdout(&etcdctl(&cluster, &["member", "list"]));
    assert_eq!(members.lines().count(), 4, "{members}");
    let line = format!("{new_id}, unstarted, , http://127.0.0.1:{spare}, , true");
    assert!(members.contains(&line), "{members}");
    let removed = stdout(&etcdctl(&cluster, &["member", "remove", &new_id]));
    assert!(removed.contains("removed from cluster"), "{removed}");
    assert_eq!(stdout(&etcdctl(&cluster, &["member", "list"])).lines().count(), 3);
    let missing = etcdctl(&cluster, &["member", "remove", "99"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("member not found"), "{missing:?}");

    let status = json(&etcdctl(&cluster, &["endpoint", "status", "-w", "json"]));
    let statuses = status.as_array().expect("one per endpoint");
    assert_eq!(statuses.len(), 3);
    let leaders: Vec<_> = statuses.iter().map(|s| s["Status"]["leader"].clone()).collect();
    assert!(leaders.iter().all(|leader| *leader == leaders[0]), "one leader: {status}");
    let hashes = json(&etcdctl(&cluster, &["endpoint", "hashkv", "-w", "json"]));
    let hashes: Vec<_> = hashes
        .as_array()
        .expect("one per endpoint")
        .iter()
        .map(|h| h["HashKV"]["hash"].clone())
        .collect();
    assert_eq!(hashes.len(), 3);
    assert!(hashes.iter().all(|hash| *hash == hashes[0] && hash.as_u64().is_some()), "{hashes:?}");

    // Errors as etcd's: a compacted revision.
    let current = json(&etcdctl(&cluster, &["get", "foo", "-w", "json"]))["header"]["revision"]
        .as_i64()
        .expect("revision");
    assert!(stdout(&etcdctl(&cluster, &["compact", &current.to_string()])).contains("compacted"));
    let refused = etcdctl(&cluster, &["get", "foo", &rev]);
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("required revision has been compacted"), "{error}");
}

/// The space quota through etcd's tools: a cluster filled past a small quota raises NOSPACE,
/// refuses what would grow it with etcd's error, serves reads and deletes, and takes writes
/// again once compacted and disarmed.
#[test]
fn a_cluster_past_its_quota_raises_nospace_and_recovers_after_compaction_and_disarm() {
    let mut cluster = Cluster::new("etcdctl-quota", 3);
    cluster.extra_args = vec!["--quota-backend-bytes".into(), "100000".into()];
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(cluster.leader(Duration::from_secs(20)));

    // Through the native protocol, a write that alone would pass the quota is refused before
    // it takes a log entry (no alarm is raised yet).
    runtime.block_on(async {
        let huge = lockstep_kv::Request::put("huge", "x".repeat(150_000));
        let answer = cluster.client().write(huge).await.expect("answered");
        assert_eq!(answer.response, lockstep_kv::Response::Error(lockstep_kv::KvError::NoSpace));
    });

    let value = "x".repeat(10_000);
    let started = Instant::now();
    let mut refusal = None;
    for n in 0.. {
        assert!(started.elapsed() < Duration::from_secs(60), "no NOSPACE after {n} puts");
        let output = etcdctl(&cluster, &["put", &format!("big/{n}"), &value]);
        if !output.status.success() {
            refusal = Some(String::from_utf8_lossy(&output.stderr).into_owned());
            break;
        }
        // The leader looks at the store's size every 500 ms.
        if n >= 10 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let refusal = refusal.expect("refused");
    assert!(refusal.contains("database space exceeded"), "{refusal}");
    let alarms = stdout(&etcdctl(&cluster, &["alarm", "list"]));
    assert!(alarms.contains("alarm:NOSPACE"), "{alarms}");
    let status = json(&etcdctl(&cluster, &["endpoint", "status", "-w", "json"]));
    let db_size = status[0]["Status"]["dbSize"].as_i64().unwrap_or_default();
    // A put that would pass the quota is refused before it is proposed: the store stops
    // within one put of it.
    assert!(
        db_size > 100_000 - 10_100 && db_size <= 100_000,
        "dbSize reports the store's size, short of the quota: {status}"
    );

    // Reads and deletes go on; growing writes stay refused.
    assert_eq!(stdout(&etcdctl(&cluster, &["get", "big/0", "--print-value-only"])).trim(), value);
    let deleted = stdout(&etcdctl(&cluster, &["del", "big/", "--prefix"]));
    assert!(deleted.trim().parse::<u64>().unwrap_or(0) >= 9, "{deleted}");
    assert!(!etcdctl(&cluster, &["put", "small", "1"]).status.success(), "still refused");

    // Compacted and disarmed, writes are taken again.
    let revision = json(&etcdctl(&cluster, &["get", "small", "-w", "json"]))["header"]["revision"]
        .as_i64()
        .expect("a revision");
    stdout(&etcdctl(&cluster, &["compact", &revision.to_string()]));
    stdout(&etcdctl(&cluster, &["alarm", "disarm"]));
    assert_eq!(stdout(&etcdctl(&cluster, &["alarm", "list"])).trim(), "");
    // Each member looks at the store every 500 ms: within a second every one takes writes.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(stdout(&etcdctl(&cluster, &["put", "small", "1"])), "OK\n");
}

/// `etcdctl move-leader` hands leadership to the voter named (answered once it leads; refused
/// for an id that is not a member), and `etcdctl defrag` is answered on every member.
#[test]
fn move_leader_and_defrag() {
    let mut cluster = Cluster::new("etcdctl-move-leader", 3);
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let leader = runtime.block_on(cluster.leader(Duration::from_secs(20)));
    let target = (1..=3).find(|id| *id != leader).expect("another member");
    let moved = stdout(&etcdctl(&cluster, &["move-leader", &format!("{target:x}")]));
    assert!(
        moved.contains(&format!("Leadership transferred from {leader:x} to {target:x}")),
        "{moved}"
    );
    let now = runtime.block_on(cluster.leader(Duration::from_secs(5)));
    assert_eq!(now, target, "the member named leads");
    assert_eq!(stdout(&etcdctl(&cluster, &["put", "after", "move"])), "OK\n");

    let refused = etcdctl(&cluster, &["move-leader", "abc"]);
    assert!(!refused.status.success(), "a move to no member was taken: {refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("bad leader transferee"),
        "{refused:?}"
    );

    let defragmented = stdout(&etcdctl(&cluster, &["defrag"]));
    assert_eq!(
        defragmented.matches("Finished defragmenting etcd member").count(),
        3,
        "{defragmented}"
    );
}
