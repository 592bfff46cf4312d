//! The command as a newcomer uses it: `lockstep up`, then put/get/del/scan/txn/status against
//! it, JSON output, the metrics endpoint, and Ctrl-C stopping everything.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_ports, lockstep, TempDir};

fn client(endpoints: &str, args: &[&str]) -> Output {
    lockstep().args(args).arg("--endpoints").arg(endpoints).output().expect("run lockstep")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A port base with PORT+1..3, PORT+101..103, PORT+201..203 free (checked just before use),
/// outside the ephemeral range (see `free_ports`).
fn port_base() -> u16 {
    for _ in 0..100 {
        let base = free_ports(1)[0].saturating_sub(300).max(10_000);
        let all_free = [1u16, 2, 3, 101, 102, 103, 201, 202, 203]
            .iter()
            .all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free port range");
}

#[test]
fn up_then_the_client_commands() {
    let dir = TempDir::new("up");
    let base = port_base();
    let mut up = lockstep()
        .args(["up", "--port", &base.to_string(), "--etcd-port", "0", "--data-dir"])
        .arg(dir.0.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lockstep up");
    let endpoints =
        (1..=3).map(|n| format!("127.0.0.1:{}", base + n)).collect::<Vec<_>>().join(",");

    // Wait for a leader.
    let started = Instant::now();
    loop {
        let output = client(&endpoints, &["status", "--output", "json"]);
        if stdout(&output).contains("\"role\":\"leader\"") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no leader: {output:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let output = client(&endpoints, &["put", "greeting", "hello"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output), "OK\n");
    let output = client(&endpoints, &["put", "greeting", "hi", "--prev-kv", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    assert_eq!(json["response"]["prev_kv"]["value"], "hello");
    assert_eq!(json["response"]["prev_kv"]["version"], 1);

    // History: the first value is still there at its revision until compacted.
    let output = client(&endpoints, &["get", "greeting", "--rev", "2"]);
    assert_eq!(stdout(&output), "greeting\thello\n", "{output:?}");
    assert!(client(&endpoints, &["compact", "3"]).status.success());
    let output = client(&endpoints, &["get", "greeting", "--rev", "2"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("has been compacted"), "{output:?}");
    for (key, value) in [("fruit/apple", "red"), ("fruit/kiwi", "green"), ("veg/leek", "white")] {
        assert!(client(&endpoints, &["put", key, value]).status.success());
    }
    let output = client(&endpoints, &["get", "fruit/", "--prefix"]);
    assert_eq!(stdout(&output), "fruit/apple\tred\nfruit/kiwi\tgreen\n");
    for consistency in ["lease", "serializable"] {
        let output = client(&endpoints, &["get", "greeting", "--consistency", consistency]);
        assert!(output.status.success(), "{output:?}");
    }
    let output = client(&endpoints, &["get", "fruit/", "--prefix", "--count-only"]);
    assert_eq!(stdout(&output), "2\n");
    let output = client(&endpoints, &["scan", "fruit/kiwi", "veg/zzz"]);
    assert_eq!(stdout(&output), "fruit/kiwi\tgreen\ngreeting\thi\nveg/leek\twhite\n");
    let output = client(&endpoints, &["scan", "--limit", "1", "--keys-only"]);
    assert_eq!(stdout(&output), "fruit/apple\n(more: 4 in all)\n");

    let output = client(
        &endpoints,
        &[
            "txn",
            "--compare",
            "value(greeting) = hi",
            "--success",
            "put greeting bye",
            "--failure",
            "get greeting",
        ],
    );
    assert_eq!(stdout(&output), "SUCCESS\nOK\n", "{output:?}");
    let output = client(
        &endpoints,
        &[
            "txn",
            "--compare",
            "value(greeting) = hi",
            "--success",
            "put greeting bye",
            "--failure",
            "get greeting",
        ],
    );
    assert_eq!(stdout(&output), "FAILURE\ngreeting\tbye\n", "{output:?}");
    let output = client(&endpoints, &["txn", "--compare", "colour(x) = 1"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("expected TARGET(KEY) OP VALUE"));

    let output = client(&endpoints, &["del", "fruit/", "--prefix"]);
    assert_eq!(stdout(&output), "2\n");
    let output = client(&endpoints, &["get", "fruit/apple"]);
    assert_eq!(stdout(&output), "");

    // Status: a table with every replica, and the same in JSON.
    let output = client(&endpoints, &["status"]);
    let table = stdout(&output);
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
    assert_eq!(table.matches("leader").count(), 1, "{table}");
    let output = client(&endpoints, &["status", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    let replicas = json["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 3);
    assert!(replicas.iter().all(|replica| replica["voters"].as_array().map(Vec::len) == Some(3)));

    // A short benchmark.
    let output = client(
        &endpoints,
        &[
            "bench",
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--concurrency",
            "8",
            "--output",
            "json",
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    assert!(json["requests"].as_u64().is_some_and(|requests| requests > 0), "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert!(json["latency_ms"]["p99"].as_f64().is_some_and(|p99| p99 > 0.0), "{json}");

    // Metrics from a replica.
    let mut stream = TcpStream::connect(("127.0.0.1", base + 201)).expect("metrics port");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("ask");
    let mut page = String::new();
    stream.read_to_string(&mut page).expect("read");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    for metric in ["lockstep_commit_index", "lockstep_sync_seconds_bucket", "lockstep_term"] {
        assert!(page.contains(metric), "{metric} missing: {page}");
    }

    // An unreachable cluster is a clear error, not a hang.
    let unreachable = format!("127.0.0.1:{}", free_ports(1)[0]);
    let output = client(&unreachable, &["get", "x", "--timeout", "1"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect"), "{output:?}");

    // A replica killed with SIGKILL is restarted by `up` and catches up.
    let replica_dir = dir.0.join("data/replica-1");
    let killed = Command::new("pkill")
        .args(["-9", "-f", &format!("{} --listen-metrics", replica_dir.display())])
        .status()
        .expect("pkill");
    assert!(killed.success(), "replica 1 was running");
    assert!(client(&endpoints, &["put", "while-down", "yes"]).status.success());
    let started = Instant::now();
    loop {
        let output = client(&endpoints, &["status", "--output", "json"]);
        let json: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
        let replicas = json["replicas"].as_array().expect("replicas").clone();
        let applied: Vec<_> = replicas.iter().map(|replica| replica["applied"].clone()).collect();
        if replicas[0]["id"] == 1 && applied.iter().all(|value| *value == applied[1]) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "replica 1 did not come back: {json}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Ctrl-C stops every replica.
    let pid = up.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().expect("kill");
    let started = Instant::now();
    loop {
        if let Some(status) = up.try_wait().expect("wait") {
            assert!(status.success(), "lockstep up exited with {status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "lockstep up did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    up.stdout.take().expect("stdout").read_to_string(&mut out).expect("read");
    assert!(out.contains("stopping the replicas"), "{out}");
    assert!(out.contains("replica 1 exited"), "{out}");
    assert!(out.contains("replica 1 restarted"), "{out}");
    for n in 1..=3 {
        let log =
            std::fs::read_to_string(dir.0.join(format!("data/replica-{n}.log"))).expect("log");
        assert!(log.contains("stopped: every queued write is durable"), "replica {n}: {log}");
        assert!(TcpStream::connect(("127.0.0.1", base + n)).is_err(), "replica {n} still listens");
    }
}
