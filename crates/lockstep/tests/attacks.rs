//! The attacks that used to take a cluster down, replayed against three real servers while a
//! client keeps writing: each is bounded in count and time and sent to 127.0.0.1 only. The
//! writes must go on under the same leader in the same term, with no request failing, their
//! tail latency under a stated bound, and each server's peak resident memory under a stated
//! bound. The test prints what it measured (docs/SECURITY.md, "Attacks replayed", records a
//! run).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use lockstep_etcd::proto::etcdserverpb as pb;
use lockstep_kv::Request;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The slowest write allowed at the 99th percentile while the attacks run (a debug build on
/// two shared cores; an election alone would take longer than this to settle).
const WRITE_P99_MAX: Duration = Duration::from_secs(1);

/// The most resident memory a server may have reached (its high-water mark).
const RESIDENT_BYTES_MAX: u64 = 400 << 20;

/// A server's peak resident memory, from /proc.
fn peak_resident_bytes(pid: u32) -> u64 {
    proc_status_bytes(pid, "VmHWM:")
}

/// A server's resident memory now, from /proc.
fn resident_bytes(pid: u32) -> u64 {
    proc_status_bytes(pid, "VmRSS:")
}

/// A size in bytes from /proc/PID/status (`field` as it is written there, in kB).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// What the writers share.
#[derive(Default)]
struct Writes {
    stop: AtomicBool,
    latencies: Mutex<Vec<Duration>>,
    /// Requests that failed (no answer, or an error from the client).
    failures: AtomicU64,
    /// Puts refused for want of a token (while authentication is turned on and the writers
    /// have none yet).
    unauthenticated: AtomicU64,
    /// The token to write with, once authentication is on.
    token: Mutex<Option<String>>,
}

/// Writes one put after another until told to stop, recording each one's latency and
/// failures.
async fn writer(
    client: lockstep_client::Client<Request, Request, lockstep_kv::Answer>,
    writes: Arc<Writes>,
) {
    use lockstep_kv::{Authorized, KvError, Response};
    let mut n = 0u64;
    while !writes.stop.load(Ordering::Relaxed) {
        let put = Request::put(format!("steady/{}", n % 100), "v");
        let token = writes.token.lock().expect("lock").clone();
        let request = match token {
            Some(token) => Request::As(Box::new(Authorized { token, request: put })),
            None => put,
        };
        let started = Instant::now();
        let outcome = client.write(request).await;
        let took = started.elapsed();
        match outcome {
            Ok(answer) if matches!(answer.response, Response::Error(KvError::Auth(_))) => {
                writes.unauthenticated.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => writes.latencies.lock().expect("lock").push(took),
            Err(_) => {
                writes.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        n += 1;
    }
}

#[test]
fn attacks_replayed_leave_the_leader_serving() {
    let mut cluster = Cluster::new("attacks", 3);
    // The servers' default timing (an election timeout of 0.5 to 1 s), not the tests' faster
    // one: the claim is about a cluster as it is run.
    cluster.tick_millis = 50;
    cluster.extra_args = vec![
        // Frames that never finish are closed sooner than the default 30 s, to keep the test
        // short.
        "--client-frame-timeout-millis".into(),
        "3000".into(),
    ];
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let report = runtime.block_on(async {
        let leader = cluster.leader(Duration::from_secs(20)).await;
        let before = cluster.status(leader).await.expect("the leader answers");
        let writes = Arc::new(Writes::default());
        let writers: Vec<_> =
            (0..4).map(|_| tokio::spawn(writer(cluster.client(), writes.clone()))).collect();
        let mut report = Vec::new();
        let leader_replica = &cluster.replicas[&leader];
        let (client_port, etcd_port, peer_port) =
            (leader_replica.client, leader_replica.etcd, leader_replica.peer);

        // 1. The state digest on demand, 100 times at once (it used to be a pass over the
        // whole state on the replica thread).
        let started = Instant::now();
        let asks: Vec<_> = (0..100)
            .map(|_| {
                let client = cluster.replica_client(leader);
                tokio::spawn(async move { client.status().await.map(|status| status.digest) })
            })
            .collect();
        for ask in asks {
            let digest = ask.await.expect("joined").expect("a status");
            assert!(!digest.is_empty(), "the digest is given");
        }
        let term = cluster.status(leader).await.map_or(0, |status| status.term);
        report.push(
            format!("(term {term}) ")
                + &format!("100 status requests with the digest: {:?}", started.elapsed()),
        );

        // 2. 1,100 idle connections to each client-facing port of the leader.
        let started = Instant::now();
        let mut idle = Vec::new();
        for port in [client_port, etcd_port] {
            for _ in 0..1_100 {
                if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
                    idle.push(stream);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let term = cluster.status(leader).await.map_or(0, |status| status.term);
        report.push(
            format!("(term {term}) ")
                + &format!("2,200 idle connections opened and held 2 s: {:?}", started.elapsed()),
        );
        drop(idle);

        // 3. Six connections to the peer port trickling a byte every 300 ms of a frame that
        // fits the pre-hello limit, for up to 8 s (each is closed at the hello's deadline).
        let started = Instant::now();
        let trickles: Vec<_> = (0..6)
            .map(|_| {
                tokio::spawn(async move {
                    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", peer_port)).await else {
                        return false;
                    };
                    let _ = stream.write_all(&2048u32.to_le_bytes()).await;
                    let started = Instant::now();
                    while started.elapsed() < Duration::from_secs(8) {
                        if stream.write_all(&[1]).await.is_err() {
                            return true;
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    false
                })
            })
            .collect();
        let mut closed = 0;
        for trickle in trickles {
            closed += usize::from(trickle.await.expect("joined"));
        }
        let term = cluster.status(leader).await.map_or(0, |status| status.term);
        report.push(
            format!("(term {term}) ")
                + &format!(
                    "6 peer connections trickling before their hello: {closed} closed, {:?}",
                    started.elapsed()
                ),
        );

        // 4. 50 client connections each announcing an 8 MiB frame and sending 1 MiB of it.
        let started = Instant::now();
        let mut announced = Vec::new();
        for _ in 0..50 {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", client_port)).await {
                let _ = stream.write_all(&(8u32 << 20).to_le_bytes()).await;
                let _ = stream.write_all(&[lockstep_wire::VERSION]).await;
                let _ = stream.write_all(&vec![0u8; 1 << 20]).await;
                announced.push(stream);
            }
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        drop(announced);
        let term = cluster.status(leader).await.map_or(0, |status| status.term);
        report.push(
            format!("(term {term}) ")
                + &format!(
                    "50 client connections with 8 MiB frames begun: {:?}",
                    started.elapsed()
                ),
        );

        // 5. 2,000 idle watchers on four streams, held for 3 s.
        let started = Instant::now();
        let endpoint = format!("http://127.0.0.1:{etcd_port}");
        let channel = tonic::transport::Channel::from_shared(endpoint.clone())
            .expect("an address")
            .connect()
            .await
            .expect("connects");
        let mut streams = Vec::new();
        for stream_number in 0..4 {
            let (requests, receiver) = tokio::sync::mpsc::channel(600);
            let outbound = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver);
            let mut client = lockstep_etcd::rpc::watch_client::WatchClient::new(channel.clone());
            let responses = client.watch(outbound).await.expect("a watch stream").into_inner();
            for n in 0..500 {
                use pb::watch_request::RequestUnion;
                let create = pb::WatchCreateRequest {
                    key: format!("idle/{stream_number}/{n}").into_bytes(),
                    ..Default::default()
                };
                let request =
                    pb::WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
                requests.send(request).await.expect("sent");
            }
            streams.push((requests, responses));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(streams);
        let term = cluster.status(leader).await.map_or(0, |status| status.term);
        report.push(
            format!("(term {term}) ")
                + &format!("2,000 idle watchers held 3 s: {:?}", started.elapsed()),
        );

        // 6. Five transactions of 10,000 operations each (refused before the log).
        let started = Instant::now();
        let mut kv = lockstep_etcd::rpc::k_v_client::KVClient::new(channel.clone());
        for _ in 0..5 {
            let put = |n: usize| pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: format!("t{n}").into_bytes(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            };
            let txn =
                pb::TxnRequest { success: (0..10_000).map(put).collect(), ..Default::default() };
            let refused = kv.txn(txn).await.expect_err("refused");
            assert!(refused.message().contains("too many operations"), "{refused:?}");
        }
        let term = cluster.status(leader).await.map_or(0, |status| status.term);
        report.push(
            format!("(term {term}) ")
                + &format!("5 transactions of 10,000 operations: {:?}", started.elapsed()),
        );

        // 7. Fifty wrong passwords from one address (auth on), slowed down after the third.
        let started = Instant::now();
        let mut auth = lockstep_etcd::rpc::auth_client::AuthClient::new(channel.clone());
        let add = |name: &str, password: &str| pb::AuthUserAddRequest {
            name: name.to_string(),
            password: password.to_string(),
            ..Default::default()
        };
        auth.user_add(add("root", "rootpw")).await.expect("root added");
        auth.user_grant_role(pb::AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        })
        .await
        .expect("root granted");
        auth.auth_enable(pb::AuthEnableRequest {}).await.expect("auth on");
        let token = auth
            .authenticate(pb::AuthenticateRequest {
                name: "root".into(),
                password: "rootpw".into(),
            })
            .await
            .expect("root authenticates")
            .into_inner()
            .token;
        *writes.token.lock().expect("lock") = Some(token.clone());
        let mut wrong = 0;
        let guessing = Instant::now();
        for n in 0..50 {
            if guessing.elapsed() > Duration::from_secs(8) {
                break;
            }
            let guess = pb::AuthenticateRequest { name: "root".into(), password: format!("{n}") };
            if auth.authenticate(guess).await.is_err() {
                wrong += 1;
            }
        }
        let term = cluster.status(leader).await.map_or(0, |status| status.term);
        report.push(
            format!("(term {term}) ")
                + &format!(
                    "wrong passwords from one address: {wrong} refused in {:?}",
                    started.elapsed()
                ),
        );
        let mut disable = tonic::Request::new(pb::AuthDisableRequest {});
        disable.metadata_mut().insert("token", token.parse().expect("ascii"));
        auth.auth_disable(disable).await.expect("auth off");

        writes.stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.await.expect("joined");
        }
        let after = cluster.status(leader).await.expect("the leader answers");
        let now_leader = cluster.leader(Duration::from_secs(5)).await;
        let mut latencies = writes.latencies.lock().expect("lock").clone();
        latencies.sort();
        let p99 = latencies[latencies.len() * 99 / 100];
        let max = latencies.last().copied().unwrap_or_default();
        let peaks: Vec<u64> = cluster
            .replicas
            .values()
            .map(|replica| {
                replica.child.as_ref().map_or(0, |child| peak_resident_bytes(child.id()))
            })
            .collect();
        let term = cluster.status(leader).await.map_or(0, |status| status.term);
        report.push(
            format!("(term {term}) ")
                + &format!(
            "writes during the attacks: {}, failed {}, refused for want of a token while auth \
             was turned on {}, p99 {p99:?}, max {max:?}; term {} -> {}, leader {leader} -> \
             {now_leader}; peak resident MiB per server {:?}",
            latencies.len(),
            writes.failures.load(Ordering::Relaxed),
            writes.unauthenticated.load(Ordering::Relaxed),
            before.term,
            after.term,
            peaks.iter().map(|bytes| bytes >> 20).collect::<Vec<_>>()
        ),
        );
        assert_eq!(writes.failures.load(Ordering::Relaxed), 0, "a write failed: {report:#?}");
        assert!(wrong >= 10, "wrong passwords were refused: {report:#?}");
        assert_eq!(after.term, before.term, "the term moved: {report:#?}");
        assert_eq!(now_leader, leader, "the leader changed: {report:#?}");
        assert!(p99 <= WRITE_P99_MAX, "p99 {p99:?} over {WRITE_P99_MAX:?}: {report:#?}");
        for peak in &peaks {
            assert!(*peak <= RESIDENT_BYTES_MAX, "a server reached {peak} bytes: {report:#?}");
        }
        report
    });
    for line in report {
        println!("{line}");
    }
}

/// A `Range` of every `big/` key sent on its own connection by a client that never reads the
/// answer: with `no_window`, its stream never opens a window; otherwise it keeps HTTP/2's
/// default one and takes what fits, never reading further. What it returns keeps the
/// connection open.
async fn unread_range(port: u16, no_window: bool) -> impl Sized {
    use prost::Message as _;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connects");
    let mut builder = h2::client::Builder::new();
    if no_window {
        builder.initial_window_size(0);
    }
    let (mut client, connection) = builder.handshake::<_, bytes::Bytes>(tcp).await.expect("h2");
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{port}/etcdserverpb.KV/Range"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request");
    let (response, mut body) = client.send_request(request, false).expect("sent");
    let message = pb::RangeRequest {
        key: b"big/".to_vec(),
        range_end: b"big0".to_vec(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    body.send_data(bytes::Bytes::from(frame), true).expect("sent");
    (client, response, body)
}

/// Twelve `Range` requests for 20 MB each on streams whose client never reads (half of them
/// with HTTP/2's default window, half with none): the member holds about its budget of large
/// responses (32 MiB here), not all twelve (240 MB), and writes go on.
#[test]
fn unread_large_responses_hold_at_most_the_budget() {
    let mut cluster = Cluster::new("attacks-unread", 3);
    cluster.tick_millis = 50;
    cluster.extra_args = vec!["--max-response-bytes-in-flight".into(), (32u64 << 20).to_string()];
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let report = runtime.block_on(async {
        let leader = cluster.leader(Duration::from_secs(20)).await;
        let client = cluster.client();
        let value = "v".repeat(100_000);
        for n in 0..200 {
            client.write(Request::put(format!("big/{n:03}"), value.clone())).await.expect("put");
        }
        let pid = cluster.replicas[&leader].child.as_ref().expect("running").id();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = resident_bytes(pid);
        let port = cluster.replicas[&leader].etcd;
        let mut calls = Vec::new();
        for n in 0..12 {
            // Half with HTTP/2's default window that never read past it, half whose streams
            // never open a window at all.
            calls.push(unread_range(port, n % 2 == 0).await);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let during = resident_bytes(pid);
        let write = Instant::now();
        client.write(Request::put("still", "writing")).await.expect("a write during");
        let write_took = write.elapsed();
        let unanswered = calls.len();
        drop(calls);
        let growth = during.saturating_sub(before);
        let line = format!(
            "leader resident before {} MiB, with 12 unread 20 MB responses {} MiB (growth {} \
             MiB); a write meanwhile took {write_took:?}; {unanswered} calls left unread",
            before >> 20,
            during >> 20,
            growth >> 20
        );
        (line, growth)
    });
    let (line, growth) = report;
    println!("{line}");
    assert!(growth < 100 << 20, "far more than the budget is held: {line}");
}
