//! The same requests to a real three-member etcd (Debian's etcd-server, started here on
//! loopback) and to a three-replica lockstep, through one gRPC client; the responses are
//! compared field by field. Only what must differ is set aside: the cluster and member ids and
//! the raft term in headers, and the hash values of HashKV (different hash functions; the
//! revisions they cover are compared). Every other difference fails the test; the ones that
//! remain by design are listed in docs/ETCD-COMPATIBILITY.md.

mod common;

use std::fmt::Debug;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_ports, Cluster, TempDir};
use lockstep_etcd::proto::etcdserverpb as pb;
use lockstep_etcd::rpc::k_v_client::KVClient;
use lockstep_etcd::rpc::lease_client::LeaseClient;
use lockstep_etcd::rpc::maintenance_client::MaintenanceClient;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::request_op::Request as Op;
use tonic::transport::Channel;

/// A three-member etcd on loopback, stopped when dropped.
struct Etcd {
    children: Vec<Child>,
    clients: Vec<String>,
    _dir: TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = TempDir::new("etcd-reference");
        let ports = free_ports(6);
        let peers: Vec<String> =
            (0..3).map(|n| format!("http://127.0.0.1:{}", ports[n * 2 + 1])).collect();
        let clients: Vec<String> =
            (0..3).map(|n| format!("http://127.0.0.1:{}", ports[n * 2])).collect();
        let initial: Vec<String> = (0..3).map(|n| format!("n{n}={}", peers[n])).collect();
        let children = (0..3)
            .map(|n| {
                let log = std::fs::File::create(dir.0.join(format!("etcd-{n}.log"))).expect("log");
                Command::new("etcd")
                    .args(["--name", &format!("n{n}")])
                    .arg("--data-dir")
                    .arg(dir.0.join(format!("n{n}")))
                    .args(["--listen-client-urls", &clients[n]])
                    .args(["--advertise-client-urls", &clients[n]])
                    .args(["--listen-peer-urls", &peers[n]])
                    .args(["--initial-advertise-peer-urls", &peers[n]])
                    .args(["--initial-cluster", &initial.join(",")])
                    .args(["--initial-cluster-state", "new", "--initial-cluster-token", "conformance"])
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap_or_else(|error| {
                        panic!("etcd cannot start ({error}): `bash scripts/test.sh` installs Debian's etcd-server")
                    })
            })
            .collect();
        Etcd { children, clients, _dir: dir }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One side of the comparison: gRPC clients of one member.
struct Side {
    kv: KVClient<Channel>,
    lease: LeaseClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
}

impl Side {
    async fn connect(endpoint: &str) -> Side {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let channel =
                match Channel::from_shared(endpoint.to_string()).expect("uri").connect().await {
                    Ok(channel) => channel,
                    Err(error) => {
                        assert!(Instant::now() < deadline, "{endpoint} never came up: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
            let mut side = Side {
                kv: KVClient::new(channel.clone()),
                lease: LeaseClient::new(channel.clone()),
                maintenance: MaintenanceClient::new(channel),
            };
            // Ready once a linearizable read is answered (a leader is elected).
            let probe = pb::RangeRequest { key: b"probe".to_vec(), ..Default::default() };
            match side.kv.range(probe).await {
                Ok(_) => return side,
                Err(status) => {
                    assert!(Instant::now() < deadline, "{endpoint} never served: {status}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// A codec that sends raw bytes as the message.
#[derive(Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Sends `bytes` as the request of method `path`; returns the status code it gets.
async fn raw_call(endpoint: &str, path: &'static str, bytes: Vec<u8>) -> tonic::Code {
    let channel =
        Channel::from_shared(endpoint.to_string()).expect("uri").connect().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    match grpc.unary(tonic::Request::new(bytes), path, Raw).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// A response with what must differ set aside: ids and terms in every header.
fn normalized<T: Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> String {
    match result {
        Ok(response) => {
            let text = format!("{:?}", response.into_inner());
            let mut out = String::new();
            let mut rest = text.as_str();
            // cluster_id: N, member_id: N, raft_term: N -> 0
            while let Some(position) = ["cluster_id: ", "member_id: ", "raft_term: "]
                .iter()
                .filter_map(|field| rest.find(field).map(|at| (at, field.len())))
                .min()
            {
                let (at, length) = position;
                out.push_str(&rest[..at + length]);
                rest = &rest[at + length..];
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                out.push('0');
                rest = &rest[digits..];
            }
            out.push_str(rest);
            out
        }
        Err(status) => format!("error {:?}: {}", status.code(), status.message()),
    }
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

fn range(key: &str, range_end: &str) -> pb::RangeRequest {
    pb::RangeRequest { key: key.into(), range_end: range_end.into(), ..Default::default() }
}

fn compare(
    key: &str,
    target: CompareTarget,
    result: CompareResult,
    union: TargetUnion,
) -> pb::Compare {
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        target_union: Some(union),
        range_end: Vec::new(),
    }
}

fn op(request: Op) -> pb::RequestOp {
    pb::RequestOp { request: Some(request) }
}

/// Sends the same step to both sides and records whether they agree.
macro_rules! step {
    ($differences:ident, $etcd:ident, $lockstep:ident, $name:expr, |$side:ident| $call:expr) => {{
        let expected = {
            let $side = &mut $etcd;
            normalized($call.await)
        };
        let got = {
            let $side = &mut $lockstep;
            normalized($call.await)
        };
        if expected != got {
            $differences.push(format!("{}:\n  etcd:     {expected}\n  lockstep: {got}", $name));
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockstep_answers_as_etcd_does() {
    let etcd = Etcd::start();
    let mut cluster = Cluster::new("conformance", 3);
    cluster.start_all();
    let mut e = Side::connect(&etcd.clients[0]).await;
    let first = cluster.replicas.values().next().expect("a replica").etcd;
    let mut l = Side::connect(&format!("http://127.0.0.1:{first}")).await;
    let mut differences: Vec<String> = Vec::new();

    // Puts, previous values, versions and revisions.
    step!(differences, e, l, "put a", |s| s.kv.put(put("a", "1")));
    step!(differences, e, l, "put a again with prev_kv", |s| s
        .kv
        .put(pb::PutRequest { prev_kv: true, ..put("a", "2") }));
    step!(differences, e, l, "put b", |s| s.kv.put(put("b", "1")));
    step!(differences, e, l, "put c", |s| s.kv.put(put("c", "3")));
    step!(differences, e, l, "ignore_value on an existing key", |s| s.kv.put(pb::PutRequest {
        ignore_value: true,
        prev_kv: true,
        ..put("c", "")
    }));
    step!(differences, e, l, "ignore_value on an absent key", |s| s
        .kv
        .put(pb::PutRequest { ignore_value: true, ..put("zz", "") }));
    step!(differences, e, l, "ignore_value with a value", |s| s
        .kv
        .put(pb::PutRequest { ignore_value: true, ..put("c", "x") }));
    step!(differences, e, l, "empty key", |s| s.kv.put(put("", "x")));

    // Ranges: one key, a range, everything, limits, counts, keys only, sorting, filters, past
    // and future revisions.
    step!(differences, e, l, "get a", |s| s.kv.range(range("a", "")));
    step!(differences, e, l, "get an absent key", |s| s.kv.range(range("nope", "")));
    step!(differences, e, l, "range a..c", |s| s.kv.range(range("a", "c")));
    step!(differences, e, l, "everything from a", |s| s.kv.range(range("a", "\0")));
    step!(differences, e, l, "everything", |s| s.kv.range(range("\0", "\0")));
    step!(differences, e, l, "backwards range", |s| s.kv.range(range("c", "a")));
    step!(differences, e, l, "limit 2", |s| s
        .kv
        .range(pb::RangeRequest { limit: 2, ..range("a", "\0") }));
    step!(differences, e, l, "count only", |s| s
        .kv
        .range(pb::RangeRequest { count_only: true, ..range("a", "\0") }));
    step!(differences, e, l, "keys only", |s| s
        .kv
        .range(pb::RangeRequest { keys_only: true, ..range("a", "\0") }));
    step!(differences, e, l, "sorted descending by key, limit 2", |s| s
        .kv
        .range(pb::RangeRequest { sort_order: 2, sort_target: 0, limit: 2, ..range("a", "\0") }));
    step!(differences, e, l, "sorted by value (order not given)", |s| s
        .kv
        .range(pb::RangeRequest { sort_target: 4, ..range("a", "\0") }));
    step!(differences, e, l, "sorted ascending by mod revision", |s| s
        .kv
        .range(pb::RangeRequest { sort_order: 1, sort_target: 3, ..range("a", "\0") }));
    step!(differences, e, l, "min mod revision 4", |s| s
        .kv
        .range(pb::RangeRequest { min_mod_revision: 4, ..range("a", "\0") }));
    step!(differences, e, l, "max create revision 3", |s| s
        .kv
        .range(pb::RangeRequest { max_create_revision: 3, ..range("a", "\0") }));
    step!(differences, e, l, "at revision 2", |s| s
        .kv
        .range(pb::RangeRequest { revision: 2, ..range("a", "") }));
    step!(differences, e, l, "at a future revision", |s| s
        .kv
        .range(pb::RangeRequest { revision: 100, ..range("a", "") }));
    step!(differences, e, l, "serializable", |s| s
        .kv
        .range(pb::RangeRequest { serializable: true, ..range("a", "") }));

    // Deletes.
    step!(differences, e, l, "delete b with prev_kv", |s| s.kv.delete_range(
        pb::DeleteRangeRequest { key: b"b".to_vec(), range_end: Vec::new(), prev_kv: true }
    ));
    step!(differences, e, l, "delete an absent key", |s| s.kv.delete_range(
        pb::DeleteRangeRequest { key: b"b".to_vec(), range_end: Vec::new(), prev_kv: false }
    ));
    step!(differences, e, l, "put b back (version starts over)", |s| s.kv.put(put("b", "again")));
    step!(differences, e, l, "get b", |s| s.kv.range(range("b", "")));

    // Transactions.
    let txn_success = || pb::TxnRequest {
        compare: vec![compare(
            "a",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b"2".to_vec()),
        )],
        success: vec![op(Op::RequestPut(put("a", "3"))), op(Op::RequestRange(range("a", "")))],
        failure: vec![op(Op::RequestRange(range("a", "")))],
    };
    step!(differences, e, l, "txn that succeeds (put then range)", |s| s.kv.txn(txn_success()));
    step!(differences, e, l, "the same txn, now failing", |s| s.kv.txn(txn_success()));
    step!(differences, e, l, "txn on version and mod revision", |s| s.kv.txn(pb::TxnRequest {
        compare: vec![
            compare("a", CompareTarget::Version, CompareResult::Greater, TargetUnion::Version(1)),
            compare("b", CompareTarget::Mod, CompareResult::Less, TargetUnion::ModRevision(100)),
            compare(
                "zz",
                CompareTarget::Create,
                CompareResult::Equal,
                TargetUnion::CreateRevision(0)
            ),
        ],
        success: vec![
            op(Op::RequestDeleteRange(pb::DeleteRangeRequest {
                key: b"c".to_vec(),
                range_end: Vec::new(),
                prev_kv: true
            })),
            op(Op::RequestPut(pb::PutRequest { prev_kv: true, ..put("d", "4") })),
        ],
        failure: vec![],
    }));
    step!(differences, e, l, "txn comparing a value of an absent key", |s| s.kv.txn(
        pb::TxnRequest {
            compare: vec![compare(
                "none",
                CompareTarget::Value,
                CompareResult::NotEqual,
                TargetUnion::Value(b"x".to_vec())
            )],
            success: vec![op(Op::RequestPut(put("never", "1")))],
            failure: vec![op(Op::RequestRange(range("a", "\0")))],
        }
    ));
    step!(differences, e, l, "txn putting a key twice", |s| s.kv.txn(pb::TxnRequest {
        compare: vec![],
        success: vec![op(Op::RequestPut(put("x", "1"))), op(Op::RequestPut(put("x", "2")))],
        failure: vec![],
    }));
    step!(differences, e, l, "txn with too many operations", |s| s.kv.txn(pb::TxnRequest {
        compare: vec![],
        success: (0..129).map(|i| op(Op::RequestPut(put(&format!("k{i}"), "v")))).collect(),
        failure: vec![],
    }));
    step!(differences, e, l, "txn with overlapping deletes", |s| s.kv.txn(pb::TxnRequest {
        compare: vec![],
        success: vec![
            op(Op::RequestDeleteRange(pb::DeleteRangeRequest {
                key: b"d".to_vec(),
                range_end: b"e".to_vec(),
                prev_kv: true
            })),
            op(Op::RequestDeleteRange(pb::DeleteRangeRequest {
                key: b"d".to_vec(),
                range_end: Vec::new(),
                prev_kv: true
            })),
        ],
        failure: vec![],
    }));
    step!(differences, e, l, "txn: version of an absent key > -1", |s| s.kv.txn(pb::TxnRequest {
        compare: vec![compare(
            "absent",
            CompareTarget::Version,
            CompareResult::Greater,
            TargetUnion::Version(-1)
        )],
        success: vec![op(Op::RequestRange(range("a", "")))],
        failure: vec![],
    }));
    step!(differences, e, l, "txn: target and union disagree", |s| s.kv.txn(pb::TxnRequest {
        compare: vec![compare(
            "a",
            CompareTarget::Mod,
            CompareResult::Greater,
            TargetUnion::Version(1)
        )],
        success: vec![op(Op::RequestRange(range("a", "")))],
        failure: vec![op(Op::RequestRange(range("b", "")))],
    }));
    step!(differences, e, l, "put with a lease and ignore_lease", |s| s.kv.put(pb::PutRequest {
        lease: 5,
        ignore_lease: true,
        ..put("a", "x")
    }));
    step!(differences, e, l, "read-only txn", |s| s.kv.txn(pb::TxnRequest {
        compare: vec![],
        success: vec![op(Op::RequestRange(range("a", "\0")))],
        failure: vec![],
    }));

    // Leases: grant with an id, attach, revoke (keys go), unknown leases.
    step!(differences, e, l, "lease grant", |s| s
        .lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 4242 }));
    step!(differences, e, l, "lease grant again", |s| s
        .lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 4242 }));
    step!(differences, e, l, "put with the lease", |s| s
        .kv
        .put(pb::PutRequest { lease: 4242, ..put("leased", "v") }));
    step!(differences, e, l, "put with an unknown lease", |s| s
        .kv
        .put(pb::PutRequest { lease: 99, ..put("leased2", "v") }));
    step!(differences, e, l, "get the leased key", |s| s.kv.range(range("leased", "")));
    step!(differences, e, l, "lease revoke", |s| s
        .lease
        .lease_revoke(pb::LeaseRevokeRequest { id: 4242 }));
    step!(differences, e, l, "the leased key is gone", |s| s.kv.range(range("leased", "")));
    step!(differences, e, l, "revoke an unknown lease", |s| s
        .lease
        .lease_revoke(pb::LeaseRevokeRequest { id: 4242 }));
    step!(differences, e, l, "time to live of an unknown lease", |s| s
        .lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 4242, keys: true }));

    // Compaction.
    step!(differences, e, l, "compact to 5", |s| s
        .kv
        .compact(pb::CompactionRequest { revision: 5, physical: true }));
    step!(differences, e, l, "read below the compaction", |s| s
        .kv
        .range(pb::RangeRequest { revision: 4, ..range("a", "") }));
    step!(differences, e, l, "read at the compaction", |s| s
        .kv
        .range(pb::RangeRequest { revision: 5, ..range("a", "\0") }));
    step!(differences, e, l, "compact to 5 again", |s| s
        .kv
        .compact(pb::CompactionRequest { revision: 5, physical: false }));
    step!(differences, e, l, "compact to the future", |s| s
        .kv
        .compact(pb::CompactionRequest { revision: 1000, physical: false }));

    // Requests larger than etcd accepts: over its request limit (1.5 MiB), and over its gRPC
    // message limit (2 MiB).
    step!(differences, e, l, "a 1.75 MiB value", |s| s.kv.put(put("big", &"x".repeat(7 << 18))));
    step!(differences, e, l, "a 2 MiB value", |s| s.kv.put(put("big", &"x".repeat(2 << 20))));

    // Malformed payloads: bytes that are not the message the method takes. The status code
    // must be etcd's (the wording is each gRPC library's own); the server must go on serving.
    let garbage: [(&str, Vec<u8>); 4] = [
        ("/etcdserverpb.KV/Range", vec![0xff; 16]),
        ("/etcdserverpb.KV/Put", vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        ("/etcdserverpb.KV/Txn", vec![0x12, 0x05, 0x0a, 0x03]),
        ("/etcdserverpb.Lease/LeaseGrant", vec![0x08]),
    ];
    for (path, bytes) in garbage {
        let expected = raw_call(&etcd.clients[0], path, bytes.clone()).await;
        let got = raw_call(&format!("http://127.0.0.1:{first}"), path, bytes).await;
        if expected != got {
            differences.push(format!("garbage to {path}: etcd {expected:?}, lockstep {got:?}"));
        }
    }
    step!(differences, e, l, "still serving after garbage", |s| s.kv.range(range("a", "")));

    // HashKV: the hashes differ by design (different functions); revisions must agree.
    let hash_e = e
        .maintenance
        .hash_kv(pb::HashKvRequest { revision: 0 })
        .await
        .expect("etcd hashkv")
        .into_inner();
    let hash_l = l
        .maintenance
        .hash_kv(pb::HashKvRequest { revision: 0 })
        .await
        .expect("lockstep hashkv")
        .into_inner();
    let revisions =
        |h: &pb::HashKvResponse| (h.header.as_ref().map(|h| h.revision), h.compact_revision);
    if revisions(&hash_e) != revisions(&hash_l) {
        differences.push(format!(
            "hashkv revisions: etcd {:?}, lockstep {:?}",
            revisions(&hash_e),
            revisions(&hash_l)
        ));
    }

    // etcd's JSON gateway: the same POSTs to both, the JSON compared with the headers' ids and
    // terms set aside (and errors' HTTP status, code and message).
    let json_steps: &[(&str, &str)] = &[
        ("/v3/kv/put", r#"{"key": "ai9h", "value": "MQ=="}"#),
        ("/v3/kv/put", r#"{"key": "ai9h", "value": "Mg==", "prev_kv": true}"#),
        ("/v3/kv/put", r#"{"key": "ai9i", "value": "Mw==", "lease": "0"}"#),
        ("/v3/kv/range", r#"{"key": "ai8=", "range_end": "ajA="}"#),
        ("/v3/kv/range", r#"{"key": "ai8=", "rangeEnd": "ajA=", "keys_only": true, "limit": 1}"#),
        ("/v3/kv/range", r#"{"key": "ai9h", "revision": "1"}"#),
        ("/v3/kv/deleterange", r#"{"key": "ai9i", "prev_kv": true}"#),
        ("/v3/kv/range", r#"{"key": "bm9uZQ=="}"#),
        ("/v3/kv/put", r#"{"value": "eA=="}"#),
        (
            "/v3/kv/txn",
            r#"{"compare": [{"result": "EQUAL", "target": "VALUE", "key": "ai9h", "value": "Mg=="}],
                "success": [{"request_put": {"key": "ai9h", "value": "Mw==", "prev_kv": true}}],
                "failure": [{"request_range": {"key": "ai9h"}}]}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare": [{"result": "EQUAL", "target": "VALUE", "key": "ai9h", "value": "Mg=="}],
                "success": [{"request_put": {"key": "ai9h", "value": "Mw=="}}],
                "failure": [{"request_range": {"key": "ai9h"}}, {"requestRange": {"key": "ai8="}}]}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare": [{"target": "VERSION", "key": "ai9h", "version": "3"},
                            {"target": "MOD", "result": "LESS", "key": "ai9h", "mod_revision": 1000}],
                "success": [{"request_delete_range": {"key": "ai9h", "prev_kv": true}},
                            {"request_put": {"key": "ai9j", "value": "NA=="}}]}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"success": [{"request_put": {"key": "ai9r"}}, {"request_put": {"key": "ai9r"}}]}"#,
        ),
        ("/v3/lease/grant", r#"{"ID": 4242, "TTL": 60}"#),
        ("/v3/lease/grant", r#"{"ID": "4242", "TTL": 60}"#),
        ("/v3/kv/lease/revoke", r#"{"ID": 4242}"#),
        ("/v3/lease/revoke", r#"{"ID": 4242}"#),
        ("/v3/auth/authenticate", r#"{"name": "nobody", "password": "x"}"#),
    ];
    let lockstep_http = format!("http://127.0.0.1:{first}");
    for &(path, body) in json_steps {
        let expected = json_post(&etcd.clients[0], path, body);
        let got = json_post(&lockstep_http, path, body);
        if expected != got {
            differences.push(format!("JSON {path} {body}: etcd {expected}, lockstep {got}"));
        }
    }

    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// A POST of `body` to `endpoint` + `path` with curl: the HTTP status and the JSON answered,
/// with what must differ between clusters (ids and terms in headers) taken out.
fn json_post(endpoint: &str, path: &str, body: &str) -> String {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "10", "-X", "POST", "-d", body, "-w", "\n%{http_code}"])
        .arg(format!("{endpoint}{path}"))
        .output()
        .expect("curl: `bash scripts/test.sh` installs it");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let mut json: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    if let Some(header) = json.get_mut("header").and_then(|header| header.as_object_mut()) {
        for varies in ["cluster_id", "member_id", "raft_term"] {
            header.remove(varies);
        }
    }
    format!("{} {json}", code.trim())
}
