//! `lockstep bench`: a load generator for lockstep and for any etcd v3 endpoint.
//!
//! - **Closed loop** (default): N requests kept in flight; each worker sends its next request
//!   when the last one is answered.
//! - **Open loop** (`--rate R`): requests are due at fixed times (R per second); a request's
//!   latency is measured from when it was due, not from when a worker got to send it, so a
//!   server that falls behind shows its queueing in the latencies instead of hiding it.
//!
//! The same workloads run through lockstep's native client (`--target native`) or through
//! etcd's v3 gRPC API (`--target etcd`: lockstep's etcd gateway, or a real etcd) with one and
//! the same gRPC client code, so the two can be compared request for request. Latencies go
//! into an HDR histogram (p50, p90, p99, p99.9, max); the result prints as a table or, with
//! `--output json`, as one JSON document.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use lockstep_client::ReadConsistency;
use lockstep_etcd::proto::etcdserverpb as pb;
use lockstep_etcd::rpc::k_v_client::KVClient;
use lockstep_etcd::rpc::lease_client::LeaseClient;
use lockstep_kv::{Compare, CompareOp, CompareTarget, KeyRange, Operation, PutRequest, Request};
use serde_json::json;
use tonic::transport::Channel;

use crate::commands::KvClient;
use crate::{ClientArgs, Output};

/// What the benchmark asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Durable writes of one key each.
    Put,
    /// Linearizable reads of one key each (read-index on the leader).
    Get,
    /// Reads served by whichever replica is asked, at once (may be stale).
    GetSerializable,
    /// Linearizable reads and writes, `--read-percent` of them reads.
    Mixed,
    /// Compare-and-set transactions: if the key's version is what was last seen, put.
    Cas,
    /// Lease keep-alives (`--target etcd` only): `--keys` leases are granted first (60 s
    /// each), then each request keeps one alive, each worker on a stream of its own as etcd's
    /// clients do. With `--rate` equal to `--keys`, every lease is renewed once a second.
    KeepAlive,
}

/// Which API the load goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// lockstep's native client protocol.
    Native,
    /// etcd's v3 gRPC API (lockstep's etcd gateway or a real etcd).
    Etcd,
}

/// Measure throughput and latency of a running cluster.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to ask.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    workload: Workload,
    /// Which API to use: `--endpoints` are native client addresses or etcd endpoints.
    #[arg(long, value_enum, default_value_t = Target::Native)]
    target: Target,
    /// Requests in flight at most (closed loop: always).
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
    /// Connections to spread the requests over.
    #[arg(long, default_value_t = 1)]
    connections: u64,
    /// Open loop: requests per second, due at fixed times (0: closed loop).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to run before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Bytes per key (at least 8).
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 128)]
    value_size: usize,
    /// For `mixed`: the share of reads, in percent.
    #[arg(long, default_value_t = 90)]
    read_percent: u8,
    /// Also report throughput, latency and errors per window of this many seconds (0: only
    /// the whole run): a long run shows whether the cluster holds its pace as its state grows.
    #[arg(long, default_value_t = 0.0)]
    window: f64,
    /// Write (or read) keys 0, 1, 2, ... in order, each once, and stop when all `--keys` were
    /// asked for or `--duration` ran out: a store loaded with exactly that many keys.
    #[arg(long)]
    sequential: bool,
    /// First measure this machine's floor for a durable write: `fdatasync` of a small append
    /// to a file in this directory (put it on the servers' file system) and a loopback TCP
    /// round trip; a replicated put at one in flight cannot take less than a sync on the
    /// leader, a round trip and a sync on a follower.
    #[arg(long, value_name = "DIR")]
    floor: Option<std::path::PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Where the requests go.
#[derive(Clone)]
enum Backend {
    Native(Vec<KvClient>),
    Etcd(Vec<KVClient<Channel>>, KeepAlives),
}

/// One request's kind.
#[derive(Clone, Copy)]
enum Op {
    Put,
    Get {
        serializable: bool,
    },
    Cas,
    /// Keep a lease alive (the lease for key number n is n + 1, granted when the run starts).
    KeepAlive {
        lease: i64,
    },
}

/// How long a keep-alive may wait for its answer (then the stream is opened afresh).
const KEEP_ALIVE_WAIT: Duration = Duration::from_secs(10);

/// Keep-alive streams, one per worker (opened when first used, again after a failure).
#[derive(Clone)]
struct KeepAlives {
    clients: Vec<LeaseClient<Channel>>,
    streams: Arc<Vec<tokio::sync::Mutex<Option<KeepAliveStream>>>>,
}

/// An open keep-alive stream: requests in, their answers out in the same order.
struct KeepAliveStream {
    requests: tokio::sync::mpsc::Sender<pb::LeaseKeepAliveRequest>,
    answers: tonic::Streaming<pb::LeaseKeepAliveResponse>,
}

impl KeepAlives {
    /// Keeps lease `id` alive on worker `lane`'s stream.
    async fn keep_alive(&self, lane: usize, id: i64) -> Result<(), String> {
        let mut slot = self.streams[lane % self.streams.len()].lock().await;
        let request = pb::LeaseKeepAliveRequest { id };
        let sent = match slot.as_mut() {
            Some(stream) => stream.requests.send(request).await.is_ok(),
            None => {
                // The first request goes in before the call: a server may send the stream's
                // headers only with its first answer (etcd does).
                let (requests, receiver) = tokio::sync::mpsc::channel(1);
                requests.try_send(request).map_err(|error| error.to_string())?;
                let inbound = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver);
                let mut client = self.clients[lane % self.clients.len()].clone();
                let answers = client
                    .lease_keep_alive(inbound)
                    .await
                    .map_err(|status| status.to_string())?
                    .into_inner();
                *slot = Some(KeepAliveStream { requests, answers });
                true
            }
        };
        let Some(stream) = slot.as_mut() else { return Err("no stream".to_string()) };
        let answer = match sent {
            true => match tokio::time::timeout(KEEP_ALIVE_WAIT, stream.answers.message()).await {
                Ok(answer) => answer.map_err(|status| status.to_string()),
                Err(_) => Err(format!("no answer to a keep-alive in {KEEP_ALIVE_WAIT:?}")),
            },
            false => Err("the keep-alive stream closed".to_string()),
        };
        match answer {
            Ok(Some(answer)) if answer.ttl > 0 => Ok(()),
            Ok(Some(_)) => Err(format!("lease {id} is gone")),
            Ok(None) => {
                *slot = None;
                Err("the keep-alive stream ended".to_string())
            }
            Err(error) => {
                *slot = None;
                Err(error)
            }
        }
    }
}

impl Backend {
    async fn connect(args: &BenchArgs) -> Result<Backend, String> {
        let connections = args.connections.max(1) as usize;
        match args.target {
            Target::Native => {
                let clients = (0..connections)
                    .map(|_| crate::commands::client(&args.client))
                    .collect::<Result<_, _>>()?;
                Ok(Backend::Native(clients))
            }
            Target::Etcd => {
                let mut clients = Vec::new();
                let mut leases = Vec::new();
                let tls = args.client.tls_files()?;
                for n in 0..connections {
                    let endpoint = &args.client.endpoints[n % args.client.endpoints.len()];
                    let scheme = if tls.is_some() { "https" } else { "http" };
                    let url = if endpoint.contains("://") {
                        endpoint.clone()
                    } else {
                        format!("{scheme}://{endpoint}")
                    };
                    let mut channel = Channel::from_shared(url.clone())
                        .map_err(|error| format!("{url}: {error}"))?;
                    if let Some(tls) = &tls {
                        channel = channel
                            .tls_config(grpc_tls(tls, endpoint)?)
                            .map_err(|error| format!("TLS for {url}: {error}"))?;
                    }
                    let channel = channel
                        .connect()
                        .await
                        .map_err(|error| format!("cannot connect to {url}: {error}"))?;
                    leases.push(LeaseClient::new(channel.clone()));
                    clients.push(KVClient::new(channel));
                }
                let streams = (0..args.concurrency).map(|_| Default::default()).collect();
                let keep_alives = KeepAlives { clients: leases, streams: Arc::new(streams) };
                Ok(Backend::Etcd(clients, keep_alives))
            }
        }
    }

    /// Sends one request on connection `lane`.
    async fn send(&self, lane: usize, op: Op, key: Bytes, value: &Bytes) -> Result<(), String> {
        match self {
            Backend::Native(clients) => {
                let client = &clients[lane % clients.len()];
                let outcome = match op {
                    Op::Put => client.write(Request::put(key, value.clone())).await,
                    Op::Get { serializable } => {
                        let consistency = if serializable {
                            ReadConsistency::Follower
                        } else {
                            ReadConsistency::Linearizable
                        };
                        client.read_with(Request::get(key), consistency).await
                    }
                    Op::KeepAlive { .. } => {
                        return Err("keep-alives need --target etcd".to_string());
                    }
                    Op::Cas => {
                        let current = client.read(Request::get(key.clone())).await;
                        let version = match current.map(|answer| answer.response) {
                            Ok(lockstep_kv::Response::Range(range)) => {
                                range.kvs.first().map_or(0, |kv| kv.version as i64)
                            }
                            _ => 0,
                        };
                        let txn = lockstep_kv::TxnRequest {
                            compare: vec![Compare {
                                range: KeyRange::key(key.clone()),
                                op: CompareOp::Equal,
                                target: CompareTarget::Version(version),
                            }],
                            success: vec![Operation::Put(PutRequest {
                                key,
                                value: value.clone(),
                                ..PutRequest::default()
                            })],
                            failure: vec![],
                        };
                        client.write(Request::Txn(txn)).await
                    }
                };
                outcome.map(|_| ()).map_err(|error| error.to_string())
            }
            Backend::Etcd(_, keep_alives) if matches!(op, Op::KeepAlive { .. }) => {
                let Op::KeepAlive { lease } = op else { unreachable!("matched above") };
                keep_alives.keep_alive(lane, lease).await
            }
            Backend::Etcd(clients, _) => {
                let mut client = clients[lane % clients.len()].clone();
                let outcome = match op {
                    Op::KeepAlive { .. } => unreachable!("answered above"),
                    Op::Put => {
                        let put = pb::PutRequest {
                            key: key.to_vec(),
                            value: value.to_vec(),
                            ..Default::default()
                        };
                        client.put(put).await.map(|_| ())
                    }
                    Op::Get { serializable } => {
                        let range = pb::RangeRequest {
                            key: key.to_vec(),
                            serializable,
                            ..Default::default()
                        };
                        client.range(range).await.map(|_| ())
                    }
                    Op::Cas => {
                        let range = pb::RangeRequest { key: key.to_vec(), ..Default::default() };
                        let version = match client.range(range).await {
                            Ok(response) => {
                                response.into_inner().kvs.first().map_or(0, |kv| kv.version)
                            }
                            Err(_) => 0,
                        };
                        use pb::compare::{CompareResult, CompareTarget as Target, TargetUnion};
                        let txn = pb::TxnRequest {
                            compare: vec![pb::Compare {
                                result: CompareResult::Equal as i32,
                                target: Target::Version as i32,
                                key: key.to_vec(),
                                target_union: Some(TargetUnion::Version(version)),
                                range_end: Vec::new(),
                            }],
                            success: vec![pb::RequestOp {
                                request: Some(pb::request_op::Request::RequestPut(
                                    pb::PutRequest {
                                        key: key.to_vec(),
                                        value: value.to_vec(),
                                        ..Default::default()
                                    },
                                )),
                            }],
                            failure: vec![],
                        };
                        client.txn(txn).await.map(|_| ())
                    }
                };
                outcome.map_err(|status| status.to_string())
            }
        }
    }
}

/// Grants leases 1..=count, 60 s each, unless they are held already (from an earlier run: a
/// benchmark script grants them in a run of its own, so that a measured run only renews).
async fn grant_leases(keep_alives: &KeepAlives, count: u64) -> Result<(), String> {
    let mut leases = keep_alives.clients.first().ok_or("no endpoint")?.clone();
    let held = leases
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .map_err(|status| format!("listing leases: {status}"))?
        .into_inner()
        .leases
        .iter()
        .filter(|lease| (1..=count as i64).contains(&lease.id))
        .count();
    if held as u64 == count {
        return Ok(());
    }
    for id in 1..=count as i64 {
        match leases.lease_grant(pb::LeaseGrantRequest { ttl: 60, id }).await {
            Ok(_) => {}
            Err(status) if status.message().contains("lease already exists") => {}
            Err(status) => return Err(format!("granting lease {id}: {status}")),
        }
    }
    Ok(())
}

/// A key of `size` bytes for number `n`.
fn key(n: u64, size: usize) -> Bytes {
    let mut key = format!("bench/{n:010}").into_bytes();
    key.resize(size.max(8), b'.');
    Bytes::from(key)
}

/// A small fast generator for keys and the read/write mix (one per worker).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs the benchmark and prints the result.
pub async fn run(args: BenchArgs) -> Result<(), String> {
    if args.concurrency == 0 || args.keys == 0 || args.client.endpoints.is_empty() {
        return Err("--concurrency, --keys and --endpoints must be given".to_string());
    }
    let floor = match &args.floor {
        Some(dir) => Some(measure_floor(dir).await?),
        None => None,
    };
    if let (Some(floor), Output::Text) = (&floor, args.client.output) {
        println!(
            "floor: fdatasync {:.3} ms, loopback round trip {:.3} ms (p50): a replicated put \
             takes at least {:.3} ms",
            floor.sync_ms_p50,
            floor.round_trip_ms_p50,
            floor.put_ms()
        );
    }
    if args.workload == Workload::KeepAlive && args.target != Target::Etcd {
        return Err("--workload keep-alive needs --target etcd".to_string());
    }
    let backend = Backend::connect(&args).await?;
    if let Backend::Etcd(_, keep_alives) = &backend {
        if args.workload == Workload::KeepAlive {
            grant_leases(keep_alives, args.keys).await?;
        }
    }
    let value = Bytes::from(vec![b'x'; args.value_size]);
    if matches!(
        args.workload,
        Workload::Get | Workload::GetSerializable | Workload::Mixed | Workload::Cas
    ) {
        // Reads need keys to find.
        for n in 0..1_000.min(args.keys) {
            backend
                .send(n as usize, Op::Put, key(n, args.key_size), &value)
                .await
                .map_err(|error| format!("loading keys: {error}"))?;
        }
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let done = Arc::new(AtomicU64::new(0));
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?,
    ));
    let windows = Arc::new(Windows::new(args.window));
    // Open loop: request i is due at start + i / rate; workers take the next due time.
    let open_loop_start = Instant::now();
    let next_ticket = Arc::new(AtomicU64::new(0));
    let next_key = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let backend = backend.clone();
        let value = value.clone();
        let first_error = first_error.clone();
        let (measuring, stop, errors, done, histogram, next_ticket, windows, next_key) = (
            measuring.clone(),
            stop.clone(),
            errors.clone(),
            done.clone(),
            histogram.clone(),
            next_ticket.clone(),
            windows.clone(),
            next_key.clone(),
        );
        let args = args.clone();
        workers.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).ok();
            let mut random =
                Random(0x9e37_79b9_7f4a_7c15 ^ (worker + 1).wrapping_mul(0xff51_afd7_ed55_8ccd));
            while !stop.load(Ordering::Relaxed) {
                let due = if args.rate > 0.0 {
                    let ticket = next_ticket.fetch_add(1, Ordering::Relaxed);
                    let due = open_loop_start + Duration::from_secs_f64(ticket as f64 / args.rate);
                    tokio::time::sleep_until(due.into()).await;
                    due
                } else {
                    Instant::now()
                };
                let n = if args.sequential {
                    let n = next_key.fetch_add(1, Ordering::Relaxed);
                    if n >= args.keys {
                        break;
                    }
                    n
                } else {
                    random.next() % args.keys
                };
                let op = match args.workload {
                    Workload::Put => Op::Put,
                    Workload::Get => Op::Get { serializable: false },
                    Workload::GetSerializable => Op::Get { serializable: true },
                    Workload::Cas => Op::Cas,
                    Workload::KeepAlive => Op::KeepAlive { lease: n as i64 + 1 },
                    Workload::Mixed => {
                        if random.next() % 100 < u64::from(args.read_percent) {
                            Op::Get { serializable: false }
                        } else {
                            Op::Put
                        }
                    }
                };
                let outcome =
                    backend.send(worker as usize, op, key(n, args.key_size), &value).await;
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                match outcome {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        let micros = due.elapsed().as_micros() as u64;
                        if let Some(local) = local.as_mut() {
                            let _ = local.record(micros.max(1));
                        }
                        windows.record(Some(micros));
                    }
                    Err(error) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        windows.record(None);
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert(error);
                        }
                    }
                }
            }
            if let (Some(local), Ok(mut total)) = (local, histogram.lock()) {
                let _ = total.add(local);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup.max(0.0))).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    windows.start(started);
    let measure = Duration::from_secs_f64(args.duration.max(0.1));
    let progress = progress_bar(&args, measure);
    let all_asked = || args.sequential && next_key.load(Ordering::Relaxed) >= args.keys;
    while started.elapsed() < measure && !all_asked() {
        tokio::time::sleep(
            Duration::from_millis(200).min(measure.saturating_sub(started.elapsed())),
        )
        .await;
        if let Some(bar) = &progress {
            let rate =
                done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64().max(0.001);
            bar.set_position(started.elapsed().as_millis() as u64);
            bar.set_message(format!("{rate:.0} requests/s"));
        }
    }
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let histogram = histogram.lock().map_err(|_| "a worker panicked".to_string())?.clone();
    let first_error = first_error.lock().ok().and_then(|first| first.clone());
    let windows = windows.finish(elapsed);
    let errors = errors.load(Ordering::Relaxed);
    report(&args, &histogram, elapsed, errors, first_error, &windows, floor.as_ref());
    Ok(())
}

/// This machine's floor for a durable replicated write (`--floor`).
struct Floor {
    sync_ms_p50: f64,
    round_trip_ms_p50: f64,
}

impl Floor {
    /// A sync on the leader, a round trip to a follower, a sync there.
    fn put_ms(&self) -> f64 {
        2.0 * self.sync_ms_p50 + self.round_trip_ms_p50
    }
}

/// Syncs of 200 small appends to a file in `dir` (removed after), and 1,000 round trips of
/// a 64-byte message over loopback TCP; the medians.
async fn measure_floor(dir: &std::path::Path) -> Result<Floor, String> {
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let median = |mut samples: Vec<f64>| {
        samples.sort_by(f64::total_cmp);
        samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let path = dir.join(format!(".lockstep-floor-{}", std::process::id()));
    let syncs = {
        let mut file = std::fs::File::create(&path)
            .map_err(|error| format!("--floor: cannot create {}: {error}", path.display()))?;
        let mut samples = Vec::with_capacity(200);
        for _ in 0..200 {
            let started = Instant::now();
            file.write_all(&[0u8; 256])
                .and_then(|()| file.sync_data())
                .map_err(|error| format!("--floor: writing {}: {error}", path.display()))?;
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        samples
    };
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| format!("--floor: {error}"))?;
    let address = listener.local_addr().map_err(|error| format!("--floor: {error}"))?;
    let echo = tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let _ = stream.set_nodelay(true);
        let mut buffer = [0u8; 64];
        while stream.read_exact(&mut buffer).await.is_ok() {
            if stream.write_all(&buffer).await.is_err() {
                return;
            }
        }
    });
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|error| format!("--floor: {error}"))?;
    let _ = stream.set_nodelay(true);
    let mut round_trips = Vec::with_capacity(1_000);
    let mut buffer = [0u8; 64];
    for _ in 0..1_000 {
        let started = Instant::now();
        stream.write_all(&buffer).await.map_err(|error| format!("--floor: {error}"))?;
        stream.read_exact(&mut buffer).await.map_err(|error| format!("--floor: {error}"))?;
        round_trips.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    drop(stream);
    let _ = echo.await;
    Ok(Floor { sync_ms_p50: median(syncs), round_trip_ms_p50: median(round_trips) })
}

/// Per-window figures of a run (`--window`).
struct Windows {
    seconds: f64,
    started: Mutex<Option<Instant>>,
    /// Latencies (microseconds) and errors of each window so far.
    windows: Mutex<Vec<(Histogram<u64>, u64)>>,
}

/// One window's figures.
struct WindowReport {
    start_seconds: f64,
    seconds: f64,
    requests: u64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Windows {
    fn new(seconds: f64) -> Windows {
        Windows { seconds, started: Mutex::new(None), windows: Mutex::new(Vec::new()) }
    }

    fn start(&self, at: Instant) {
        if let Ok(mut started) = self.started.lock() {
            *started = Some(at);
        }
    }

    /// Records an answer's latency, or an error (`None`), in the current window.
    fn record(&self, micros: Option<u64>) {
        if self.seconds <= 0.0 {
            return;
        }
        let Some(started) = self.started.lock().ok().and_then(|started| *started) else { return };
        let window = (started.elapsed().as_secs_f64() / self.seconds) as usize;
        let Ok(mut windows) = self.windows.lock() else { return };
        while windows.len() <= window {
            let Ok(histogram) = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3) else {
                return;
            };
            windows.push((histogram, 0));
        }
        match micros {
            Some(micros) => {
                let _ = windows[window].0.record(micros.max(1));
            }
            None => windows[window].1 += 1,
        }
    }

    /// The windows' figures, the last one cut at `elapsed`.
    fn finish(&self, elapsed: Duration) -> Vec<WindowReport> {
        let Ok(windows) = self.windows.lock() else { return Vec::new() };
        let total = elapsed.as_secs_f64();
        windows
            .iter()
            .enumerate()
            .filter_map(|(n, (histogram, errors))| {
                let start_seconds = n as f64 * self.seconds;
                let seconds = (total - start_seconds).min(self.seconds);
                (seconds > 0.0).then(|| WindowReport {
                    start_seconds,
                    seconds,
                    requests: histogram.len(),
                    errors: *errors,
                    p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
                    p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
                    max_ms: histogram.max() as f64 / 1000.0,
                })
            })
            .collect()
    }
}

fn progress_bar(args: &BenchArgs, measure: Duration) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if args.client.output == Output::Json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(measure.as_millis() as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {elapsed}/{duration} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

fn report(
    args: &BenchArgs,
    histogram: &Histogram<u64>,
    elapsed: Duration,
    errors: u64,
    first_error: Option<String>,
    windows: &[WindowReport],
    floor: Option<&Floor>,
) {
    let count = histogram.len();
    let rate = count as f64 / elapsed.as_secs_f64();
    let millis = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    let workload = format!("{:?}", args.workload).to_lowercase();
    let target = format!("{:?}", args.target).to_lowercase();
    match args.client.output {
        Output::Json => println!(
            "{}",
            json!({
                "target": target,
                "workload": workload,
                "concurrency": args.concurrency,
                "connections": args.connections,
                "rate": args.rate,
                "seconds": elapsed.as_secs_f64(),
                "requests": count,
                "errors": errors,
                "first_error": first_error,
                "per_second": rate,
                "latency_ms": {
                    "p50": millis(0.5), "p90": millis(0.9), "p99": millis(0.99),
                    "p99.9": millis(0.999), "max": histogram.max() as f64 / 1000.0,
                },
                "windows": windows.iter().map(|window| json!({
                    "start_seconds": window.start_seconds,
                    "seconds": window.seconds,
                    "requests": window.requests,
                    "per_second": window.requests as f64 / window.seconds,
                    "errors": window.errors,
                    "latency_ms": {
                        "p50": window.p50_ms, "p99": window.p99_ms, "max": window.max_ms,
                    },
                })).collect::<Vec<_>>(),
                "floor": floor.map(|floor| json!({
                    "fdatasync_ms_p50": floor.sync_ms_p50,
                    "loopback_round_trip_ms_p50": floor.round_trip_ms_p50,
                    "replicated_put_ms": floor.put_ms(),
                })),
            })
        ),
        Output::Text => {
            let mode = if args.rate > 0.0 {
                format!("open loop at {:.0}/s, at most {} in flight", args.rate, args.concurrency)
            } else {
                format!("{} in flight", args.concurrency)
            };
            println!(
                "{workload} via {target}, {mode}: {count} requests in {:.1} s = {rate:.0}/s ({errors} errors)",
                elapsed.as_secs_f64()
            );
            println!(
                "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                millis(0.5),
                millis(0.9),
                millis(0.99),
                millis(0.999),
                histogram.max() as f64 / 1000.0
            );
            if let Some(error) = first_error {
                println!("first error: {error}");
            }
            if !windows.is_empty() {
                println!(
                    "{:>8} {:>10} {:>8} {:>9} {:>9} {:>9}",
                    "from s", "requests/s", "errors", "p50 ms", "p99 ms", "max ms"
                );
                for window in windows {
                    println!(
                        "{:>8.0} {:>10.0} {:>8} {:>9.2} {:>9.2} {:>9.2}",
                        window.start_seconds,
                        window.requests as f64 / window.seconds,
                        window.errors,
                        window.p50_ms,
                        window.p99_ms,
                        window.max_ms
                    );
                }
            }
        }
    }
}

/// The gRPC client's TLS from the client's files, for `endpoint`'s host.
pub(crate) fn grpc_tls(
    tls: &lockstep_tls::ClientTls,
    endpoint: &str,
) -> Result<tonic::transport::ClientTlsConfig, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
    };
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
    let mut config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(&tls.ca_file)?))
        .domain_name(host.trim_start_matches('[').trim_end_matches(']').to_string());
    if let Some((cert, key)) = &tls.identity {
        lockstep_tls::load_key(key).map_err(|error| format!("TLS: {error}"))?;
        config = config.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(config)
}
