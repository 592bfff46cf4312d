//! A server's log: JSON lines for log shippers (`--log-format json`), and the level re-read
//! from the configuration file on SIGHUP, while it runs.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use lockstep_etcd::proto::etcdserverpb as pb;
use lockstep_etcd::rpc::k_v_client::KVClient;
use lockstep_kv::Request;

/// Waits until replica `id`'s log holds a line that `found` accepts.
fn wait_for_line(cluster: &Cluster, id: u64, what: &str, found: impl Fn(&str) -> bool) {
    let started = Instant::now();
    loop {
        if cluster.log(id).lines().any(&found) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no {what} in:\n{}", cluster.log(id));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends SIGHUP to replica `id`.
fn hang_up(cluster: &Cluster, id: u64) {
    let pid = cluster.replicas[&id].child.as_ref().expect("running").id();
    let signalled = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(signalled.success());
}

#[test]
fn json_lines_and_a_level_changed_on_sighup() {
    let mut cluster = Cluster::new("logging", 1);
    let file = cluster.dir.0.join("replica.toml");
    std::fs::write(&file, "log_level = \"warn\"\nlog_format = \"json\"\n").expect("written");
    cluster.extra_args = vec!["--config".into(), file.display().to_string()];
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(cluster.leader(Duration::from_secs(20)));

    // Every line is one JSON object; the harness's RUST_LOG=info wins over the file at start.
    wait_for_line(&cluster, 1, "JSON line saying it leads", |line| {
        serde_json::from_str::<serde_json::Value>(line).is_ok_and(|object| {
            object["level"] == "INFO" && object["message"] == "this replica leads"
        })
    });
    for line in cluster.log(1).lines().filter(|line| !line.trim().is_empty()) {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(object["timestamp"].is_string() && object["level"].is_string(), "{line}");
    }
    assert!(!cluster.log(1).contains("\"DEBUG\""), "no debug lines before the change");

    // The file now asks for debug lines; SIGHUP makes them appear.
    std::fs::write(&file, "log_level = \"debug\"\nlog_format = \"json\"\n").expect("written");
    hang_up(&cluster, 1);
    wait_for_line(&cluster, 1, "note of the new level", |line| line.contains("the log level"));
    // Through etcd's API: its HTTP/2 stack says what it does at the debug level.
    runtime.block_on(async {
        cluster.client().write(Request::put("k", "v")).await.expect("a write");
        let endpoint = format!("http://127.0.0.1:{}", cluster.replicas[&1].etcd);
        let mut kv = KVClient::connect(endpoint).await.expect("connects");
        kv.range(pb::RangeRequest { key: b"k".to_vec(), ..Default::default() })
            .await
            .expect("a read");
    });
    wait_for_line(&cluster, 1, "debug line", |line| line.contains("\"level\":\"DEBUG\""));

    // A level that is not a filter is reported and changes nothing; the server goes on.
    std::fs::write(&file, "log_level = \"no=such=level\"\n").expect("written");
    hang_up(&cluster, 1);
    wait_for_line(&cluster, 1, "refusal of the bad level", |line| line.contains("is not a filter"));
    runtime.block_on(async {
        cluster.client().write(Request::put("k", "w")).await.expect("still serving");
    });
}

#[test]
fn a_bad_log_format_is_refused_at_start() {
    let output = common::lockstep()
        .args(["serve", "--id", "1", "--cluster-id", "7", "--data-dir", "/nonexistent/x"])
        .args(["--member", "1=127.0.0.1:1,127.0.0.1:2", "--log-format", "xml"])
        .output()
        .expect("lockstep runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("log_format"), "{stderr}");
}
