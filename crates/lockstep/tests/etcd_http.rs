//! The etcd port's plain HTTP paths, with `curl` as HTTP clients and high-availability tools
//! use them: `/health`, `/readyz`, `/livez`, `/version`, `/metrics`, over HTTP/1.1 and HTTP/2
//! beside gRPC on the same port; `/health` says 503 and why while an alarm is raised.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Cluster;

/// `curl` at `path` on the etcd port of replica 1, with `protocol` (`--http1.1` or
/// `--http2-prior-knowledge`): the status code and the body.
fn curl(cluster: &Cluster, protocol: &str, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{}{path}", cluster.replicas[&1].etcd);
    let output = Command::new("curl")
        .args(["-s", "--max-time", "10", protocol, "-w", "\n%{http_code}", &url])
        .output()
        .expect("curl: `bash scripts/test.sh` installs it");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn health_version_and_metrics_over_http() {
    let mut cluster = Cluster::new("etcd-http", 3);
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(cluster.leader(Duration::from_secs(20)));

    for protocol in ["--http1.1", "--http2-prior-knowledge"] {
        let (code, body) = curl(&cluster, protocol, "/health");
        assert_eq!((code, body.as_str()), (200, r#"{"health":"true","reason":""}"#), "{protocol}");
        assert_eq!(curl(&cluster, protocol, "/readyz"), (200, "ok\n".to_string()), "{protocol}");
        assert_eq!(curl(&cluster, protocol, "/livez"), (200, "ok".to_string()), "{protocol}");
        let (code, body) = curl(&cluster, protocol, "/version");
        assert_eq!(code, 200, "{protocol}");
        let version: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert!(version["etcdserver"].as_str().is_some_and(|v| v.starts_with("3.")), "{body}");
        assert!(version["etcdcluster"].is_string(), "{body}");
        let (code, body) = curl(&cluster, protocol, "/metrics");
        assert_eq!(code, 200, "{protocol}");
        assert!(body.contains("lockstep_commit_index"), "{protocol}: {body}");
    }
    // An unknown path is not found; gRPC on the same port goes on (etcdctl).
    let (code, _) = curl(&cluster, "--http1.1", "/nothing-here");
    assert_ne!(code, 200);
    let put = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &cluster.etcd_endpoints(), "put", "k", "v"])
        .output()
        .expect("etcdctl");
    assert!(put.status.success(), "{put:?}");

    // With an alarm raised, /health is 503 and names it.
    runtime.block_on(async {
        use lockstep_etcd::proto::etcdserverpb as pb;
        let endpoint = format!("http://127.0.0.1:{}", cluster.replicas[&1].etcd);
        let mut maintenance =
            lockstep_etcd::rpc::maintenance_client::MaintenanceClient::connect(endpoint)
                .await
                .expect("connects");
        let activate = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Activate as i32,
            member_id: 1,
            alarm: pb::AlarmType::Nospace as i32,
        };
        maintenance.alarm(activate).await.expect("raised");
    });
    let (code, body) = curl(&cluster, "--http1.1", "/health");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(r#""health":"false""#) && body.contains("ALARM NOSPACE"), "{body}");
    // Ready all the same: the member serves reads.
    assert_eq!(curl(&cluster, "--http1.1", "/readyz").0, 200);
}
