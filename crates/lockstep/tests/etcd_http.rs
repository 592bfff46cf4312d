//! The etcd port's plain HTTP paths, with `curl` as HTTP clients and high-availability tools
//! use them: `/health`, `/readyz`, `/livez`, `/version`, `/metrics`, over HTTP/1.1 and HTTP/2
//! beside gRPC on the same port; `/health` says 503 and why while an alarm is raised; and
//! etcd's JSON gateway (`/v3/kv/...`, `/v3/maintenance/status`).

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

/// `curl -X POST` of `body` to `path`: the status code and the body as JSON.
fn post(cluster: &Cluster, path: &str, body: &str) -> (u16, serde_json::Value) {
    post_as(cluster, None, path, body)
}

/// [`post`] with `token` in the `Authorization` header.
fn post_as(
    cluster: &Cluster,
    token: Option<&str>,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let url = format!("http://127.0.0.1:{}{path}", cluster.replicas[&1].etcd);
    let mut command = Command::new("curl");
    command.args(["-s", "--max-time", "10", "-X", "POST", "-d", body, "-w", "\n%{http_code}"]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: {token}")]);
    }
    let output = command.arg(&url).output().expect("curl: `bash scripts/test.sh` installs it");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let json = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    (code.trim().parse().unwrap_or(0), json)
}

/// etcd's JSON gateway as its documentation uses it with curl: keys and values in base64,
/// revisions as strings, defaults left out, errors as `{"error", "code", "message"}`.
#[test]
fn the_json_gateway() {
    let mut cluster = Cluster::new("etcd-json", 3);
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(cluster.leader(Duration::from_secs(20)));

    // foo = bar, then foo = baz with the previous value.
    let (code, put) = post(&cluster, "/v3/kv/put", r#"{"key": "Zm9v", "value": "YmFy"}"#);
    assert_eq!(code, 200, "{put}");
    let first: i64 =
        put["header"]["revision"].as_str().expect("a string").parse().expect("a number");
    assert!(put["header"]["cluster_id"].is_string() && put.get("prev_kv").is_none(), "{put}");
    let (code, put) =
        post(&cluster, "/v3/kv/put", r#"{"key": "Zm9v", "value": "YmF6", "prevKv": true}"#);
    assert_eq!(code, 200, "{put}");
    assert_eq!(put["prev_kv"]["value"], "YmFy", "{put}");
    assert_eq!(put["prev_kv"]["version"], "1", "{put}");

    let (code, range) = post(&cluster, "/v3/kv/range", r#"{"key": "Zm9v"}"#);
    assert_eq!(code, 200, "{range}");
    assert_eq!(range["count"], "1", "{range}");
    let kv = &range["kvs"][0];
    assert_eq!((kv["key"].as_str(), kv["value"].as_str()), (Some("Zm9v"), Some("YmF6")), "{range}");
    assert_eq!(kv["create_revision"], first.to_string(), "{range}");
    assert_eq!(kv["version"], "2", "{range}");
    assert!(kv.get("lease").is_none(), "no lease: left out: {range}");
    // An older revision, as a number.
    let older = format!(r#"{{"key": "Zm9v", "revision": {first}}}"#);
    let (_, range) = post(&cluster, "/v3/kv/range", &older);
    assert_eq!(range["kvs"][0]["value"], "YmFy", "{range}");

    let (code, status) = post(&cluster, "/v3/maintenance/status", "{}");
    assert_eq!(code, 200, "{status}");
    assert!(status["version"].is_string() && status["raftIndex"].is_string(), "{status}");

    let (code, deleted) = post(&cluster, "/v3/kv/deleterange", r#"{"key": "Zm9v"}"#);
    assert_eq!((code, deleted["deleted"].as_str()), (200, Some("1")), "{deleted}");
    let revision = deleted["header"]["revision"].as_str().expect("a revision").to_string();
    let compact = format!(r#"{{"revision": "{revision}"}}"#);
    let (code, compacted) = post(&cluster, "/v3/kv/compaction", &compact);
    assert_eq!(code, 200, "{compacted}");

    // Errors as grpc-gateway gives them.
    let (code, error) = post(&cluster, "/v3/kv/range", &older);
    assert_eq!(code, 400, "{error}");
    assert_eq!(error["code"], 11, "OutOfRange: {error}");
    assert!(error["error"].as_str().is_some_and(|e| e.contains("compacted")), "{error}");
    let (code, error) = post(&cluster, "/v3/kv/put", r#"{"key": "not base64!"}"#);
    assert_eq!((code, error["code"].as_i64()), (400, Some(3)), "{error}");
    let (code, _) = post(&cluster, "/v3/kv/put", "{not json");
    assert_eq!(code, 400);

    // Leases: granted, a key put under one, its time to live with its keys, listed, revoked.
    let (code, granted) = post(&cluster, "/v3/lease/grant", r#"{"TTL": 60}"#);
    assert_eq!(code, 200, "{granted}");
    assert_eq!(granted["TTL"], "60", "{granted}");
    let id = granted["ID"].as_str().expect("an id").to_string();
    let put = format!(r#"{{"key": "bGVhc2Vk", "value": "eA==", "lease": "{id}"}}"#);
    assert_eq!(post(&cluster, "/v3/kv/put", &put).0, 200);
    let ask = format!(r#"{{"ID": "{id}", "keys": true}}"#);
    let (code, alive) = post(&cluster, "/v3/lease/timetolive", &ask);
    assert_eq!(code, 200, "{alive}");
    assert_eq!(
        (alive["ID"].as_str(), alive["grantedTTL"].as_str()),
        (Some(id.as_str()), Some("60"))
    );
    assert_eq!(alive["keys"], serde_json::json!(["bGVhc2Vk"]), "{alive}");
    let (_, leases) = post(&cluster, "/v3/kv/lease/leases", "{}");
    assert_eq!(leases["leases"], serde_json::json!([{ "ID": id }]), "{leases}");
    let revoke = format!(r#"{{"ID": "{id}"}}"#);
    assert_eq!(post(&cluster, "/v3/lease/revoke", &revoke).0, 200);
    let (_, gone) = post(&cluster, "/v3/kv/range", r#"{"key": "bGVhc2Vk"}"#);
    assert!(gone.get("kvs").is_none(), "the lease took its key: {gone}");
    let (code, error) = post(&cluster, "/v3/lease/revoke", &revoke);
    assert_eq!((code, error["code"].as_i64()), (404, Some(5)), "{error}");

    // With authentication on, a token from /v3/auth/authenticate in `Authorization`.
    cluster.enable_auth();
    let (code, refused) = post(&cluster, "/v3/kv/put", r#"{"key": "YQ==", "value": "Yg=="}"#);
    assert_eq!(code, 400, "{refused}");
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("user name is empty")));
    let (code, wrong) =
        post(&cluster, "/v3/auth/authenticate", r#"{"name": "root", "password": "nope"}"#);
    assert_eq!(code, 400, "{wrong}");
    let (code, authenticated) =
        post(&cluster, "/v3/auth/authenticate", r#"{"name": "root", "password": "rootpw"}"#);
    assert_eq!(code, 200, "{authenticated}");
    let token = authenticated["token"].as_str().expect("a token");
    let (code, put) =
        post_as(&cluster, Some(token), "/v3/kv/put", r#"{"key": "YQ==", "value": "Yg=="}"#);
    assert_eq!(code, 200, "{put}");
}
