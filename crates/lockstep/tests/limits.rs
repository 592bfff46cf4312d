//! Admission limits on real processes: connections over a port's cap are closed at once while
//! the cluster keeps its leader and serves; idle client connections are closed; a peer port
//! gives an unidentified connection only what a hello needs, within a deadline; a transaction
//! too long is refused before it takes a log entry.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use lockstep_etcd::proto::etcdserverpb as pb;
use lockstep_etcd::rpc::k_v_client::KVClient;
use lockstep_kv::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the server closes `stream` within `within` (reads end or fail).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 64];
    matches!(tokio::time::timeout(within, stream.read(&mut buffer)).await, Ok(Ok(0)) | Ok(Err(_)))
}

/// Opens `count` connections to `port`; they, and how many the server closed within `within`.
async fn open_many(port: u16, count: usize, within: Duration) -> (Vec<TcpStream>, usize) {
    let mut open = Vec::new();
    for _ in 0..count {
        open.push(TcpStream::connect(("127.0.0.1", port)).await.expect("connects"));
    }
    let mut refused = 0;
    for stream in &mut open {
        if closed_within(stream, within).await {
            refused += 1;
        }
    }
    (open, refused)
}

#[test]
fn connections_over_the_cap_idle_ones_and_unidentified_peers_are_closed_and_the_leader_stays() {
    let mut cluster = Cluster::new("limits", 3);
    cluster.extra_args = vec![
        "--max-connections".into(),
        "20".into(),
        "--client-idle-timeout-millis".into(),
        "1500".into(),
        "--max-watchers-per-stream".into(),
        "5".into(),
        "--max-watchers".into(),
        "8".into(),
        "--max-txn-ops".into(),
        "200".into(),
    ];
    cluster.start_all();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let leader = cluster.leader(Duration::from_secs(20)).await;
        let client = cluster.client();
        client.write(Request::put("before", "x")).await.expect("a write");
        let before = cluster.status(leader).await.expect("the leader answers");

        // 40 idle connections to each client-facing port of the leader: the 20 over the cap
        // are closed at once.
        for port in [cluster.replicas[&leader].client, cluster.replicas[&leader].etcd] {
            let (_idle, refused) = open_many(port, 40, Duration::from_millis(300)).await;
            assert!(refused >= 20, "port {port}: {refused} of 40 connections closed at once");
            assert!(refused < 40, "port {port}: the cap admits 20 (some held by peers' gateways)");
        }

        // The idle native connections are closed after their timeout, and clients get in; so
        // is an idle connection to the etcd port.
        let mut idle_etcd =
            TcpStream::connect(("127.0.0.1", cluster.replicas[&leader].etcd)).await.expect("in");
        // HTTP/2's preface and an empty SETTINGS frame, then nothing.
        idle_etcd.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("written");
        idle_etcd.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.expect("written");
        // What the server sends (its settings) is read; then the connection must end.
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            let mut buffer = [0u8; 256];
            loop {
                match idle_etcd.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "an idle etcd connection stayed open");
        for n in 0..50 {
            client.write(Request::put(format!("k{n}"), "v")).await.expect("writes go on");
        }

        // A peer connection that announces a large frame before its hello is closed at once.
        let peer = cluster.replicas[&leader].peer;
        let mut stream = TcpStream::connect(("127.0.0.1", peer)).await.expect("connects");
        stream.write_all(&(64u32 << 20).to_le_bytes()).await.expect("written");
        stream.write_all(&[0u8; 4096]).await.expect("written");
        assert!(closed_within(&mut stream, Duration::from_secs(2)).await, "large pre-hello frame");

        // One that trickles a byte at a time is closed at the hello's deadline (5 s), however
        // often it sends.
        let mut stream = TcpStream::connect(("127.0.0.1", peer)).await.expect("connects");
        let started = Instant::now();
        let mut closed = false;
        while started.elapsed() < Duration::from_secs(10) {
            if stream.write_all(&[1]).await.is_err() {
                closed = true;
                break;
            }
            if closed_within(&mut stream, Duration::from_millis(500)).await {
                closed = true;
                break;
            }
        }
        assert!(closed, "a trickling connection was closed");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(8), "closed at the hello deadline, not later: {took:?}");

        // A transaction longer than `--max-txn-ops` (200 here) is refused before it takes a
        // log entry; one of 200 is taken.
        let endpoint = format!("http://127.0.0.1:{}", cluster.replicas[&leader].etcd);
        let mut kv = KVClient::connect(endpoint).await.expect("connects");
        let put = |n: usize| pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: format!("t{n}").into_bytes(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        };
        let txn = pb::TxnRequest { success: (0..200).map(put).collect(), ..Default::default() };
        assert!(kv.txn(txn).await.expect("200 operations are taken").into_inner().succeeded);
        let commit = cluster.status(leader).await.expect("the leader answers").commit;
        for ops in [201, 10_000, 10_000, 10_000, 10_000] {
            let txn = pb::TxnRequest { success: (0..ops).map(put).collect(), ..Default::default() };
            let status = kv.txn(txn).await.expect_err("refused");
            assert!(status.message().contains("too many operations"), "{status:?}");
        }
        let after = cluster.status(leader).await.expect("the leader answers");
        assert_eq!(after.commit, commit, "no log entry was taken for refused transactions");

        // Watchers: 5 on one stream, the 6th refused; 3 more on another, then the member's 8
        // are taken; a stream closed gives its places back.
        let endpoint = format!("http://127.0.0.1:{}", cluster.replicas[&leader].etcd);
        let channel = tonic::transport::Channel::from_shared(endpoint)
            .expect("an address")
            .connect()
            .await
            .expect("connects");
        let first = watch_stream(&channel).await;
        let second = watch_stream(&channel).await;
        let mut first = first;
        let mut second = second;
        for n in 0..5 {
            assert_eq!(create_watcher(&mut first, n).await, None, "watcher {n} on the first");
        }
        let refused = create_watcher(&mut first, 5).await.expect("the 6th is refused");
        assert!(refused.contains("on this stream"), "{refused}");
        for n in 0..3 {
            assert_eq!(create_watcher(&mut second, n).await, None, "watcher {n} on the second");
        }
        let refused = create_watcher(&mut second, 3).await.expect("the member's 9th is refused");
        assert!(refused.contains("on this member"), "{refused}");
        drop(first);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(create_watcher(&mut second, 4).await, None, "places are given back");
        // A connection with watches open is not idle, however quiet (past the 1.5 s timeout).
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(create_watcher(&mut second, 5).await, None, "a watching connection stays");

        // Through all of it, the same leader in the same term.
        assert_eq!(after.term, before.term, "the term moved");
        assert_eq!(cluster.leader(Duration::from_secs(5)).await, leader, "the leader changed");
    });
}

/// A Watch stream: where to send requests, and its responses.
struct WatchStream {
    requests: tokio::sync::mpsc::Sender<pb::WatchRequest>,
    responses: tonic::Streaming<pb::WatchResponse>,
}

async fn watch_stream(channel: &tonic::transport::Channel) -> WatchStream {
    let (requests, receiver) = tokio::sync::mpsc::channel(16);
    let outbound = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver);
    let mut client = lockstep_etcd::rpc::watch_client::WatchClient::new(channel.clone());
    let responses = client.watch(outbound).await.expect("a watch stream").into_inner();
    WatchStream { requests, responses }
}

/// Creates watcher `n` on `stream`: `None` if created, else why it was refused.
async fn create_watcher(stream: &mut WatchStream, n: usize) -> Option<String> {
    use pb::watch_request::RequestUnion;
    let create =
        pb::WatchCreateRequest { key: format!("watched/{n}").into_bytes(), ..Default::default() };
    let request = pb::WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
    stream.requests.send(request).await.expect("sent");
    let response = tokio::time::timeout(Duration::from_secs(10), stream.responses.message())
        .await
        .expect("an answer in time")
        .expect("a response")
        .expect("the stream is open");
    assert!(response.created, "{response:?}");
    response.canceled.then_some(response.cancel_reason)
}

/// Under a low open-files limit, the client-facing ports take fewer connections than
/// configured, so that clients cannot crowd out the peers; and a request frame trickled a byte
/// at a time is closed at its deadline.
#[test]
fn client_ports_fit_the_open_files_limit_and_slow_frames_are_closed() {
    let mut cluster = Cluster::new("limits-files", 1);
    let args = cluster.serve_args(1);
    let log = std::fs::File::create(cluster.log_path(1)).expect("a log");
    let command = "ulimit -n 400 && exec \"$0\" \"$@\" --max-peer-connections 10 \
                   --client-frame-timeout-millis 2000";
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .arg(env!("CARGO_BIN_EXE_lockstep"))
        .args(&args)
        .stdout(log.try_clone().expect("a log"))
        .stderr(log)
        .spawn()
        .expect("starts");
    cluster.replicas.get_mut(&1).expect("replica 1").child = Some(child);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        cluster.leader(Duration::from_secs(20)).await;
        let logged = cluster.log(1);
        // 400 files, less 10 for peers and 256 for the rest: 44 on each of three ports.
        assert!(logged.contains("takes at most 44 connections"), "{logged}");
        let port = cluster.replicas[&1].client;
        let (open, refused) = open_many(port, 60, Duration::from_millis(200)).await;
        assert!(refused >= 16, "{refused} of 60 connections closed at once");
        drop(open);

        // A frame announced as 1 MiB, sent a byte at a time: closed at the frame deadline.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connects");
        stream.write_all(&(1u32 << 20).to_le_bytes()).await.expect("written");
        let started = Instant::now();
        let mut closed = false;
        while started.elapsed() < Duration::from_secs(10) {
            if stream.write_all(&[7]).await.is_err()
                || closed_within(&mut stream, Duration::from_millis(300)).await
            {
                closed = true;
                break;
            }
        }
        let took = started.elapsed();
        assert!(closed && took < Duration::from_secs(5), "closed after {took:?}");
        let client = cluster.client();
        client.write(Request::put("still", "serving")).await.expect("a write after");
    });
}
