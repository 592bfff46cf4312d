//! The clients: each issues reads, writes and compare-and-sets on a few keys at a time and
//! records every operation's call and completion (ok, failed, or unknown).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep_client::{Client, ClientOptions, ReadConsistency};
use lockstep_etcd::proto::etcdserverpb as pb;
use lockstep_etcd::rpc::k_v_client::KVClient;
use lockstep_kv::{
    Answer, Compare, CompareOp, CompareTarget, KeyRange, Operation as KvOperation, PutRequest,
    Request, Response, TxnRequest,
};
use lockstep_sim::linearizability::{Input, Operation, Output};
use serde::Serialize;
use tonic::transport::Channel;

/// The prefix of every key the harness writes.
pub const PREFIX: &str = "chaos/";

/// The key for number `key`.
pub fn key_bytes(key: u64) -> Bytes {
    Bytes::from(format!("{PREFIX}{key:010}"))
}

/// A value as stored.
fn value_bytes(value: u64) -> Bytes {
    Bytes::from(value.to_string())
}

/// A stored value back as a number.
pub fn parse_value(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A channel to the etcd member at `endpoint` (connected on first use); calls and connecting
/// give up after `timeout`.
pub fn etcd_channel(endpoint: &str, timeout: Duration) -> Result<Channel, String> {
    Ok(Channel::from_shared(format!("http://{endpoint}"))
        .map_err(|error| error.to_string())?
        .timeout(timeout)
        .connect_timeout(timeout)
        .connect_lazy())
}

/// How one client reaches the system.
#[derive(Clone)]
pub enum Backend {
    /// lockstep's native client: one that follows the leader for writes, and one starting
    /// on each replica for reads (reads go to a replica chosen at random; a correct replica
    /// that does not lead sends the client on).
    Native {
        writer: Client<Request, Request, Answer>,
        readers: Vec<Client<Request, Request, Answer>>,
    },
    /// etcd's v3 API (a real etcd): writes through one member, reads through any.
    Etcd(Vec<KVClient<Channel>>),
}

/// Why an operation did not complete.
#[derive(Debug)]
pub struct Failure {
    /// It certainly took no effect (it may be left out of the history).
    pub definite: bool,
    pub reason: String,
}

impl Backend {
    /// Native clients over `endpoints`, the first the writer starts on.
    pub fn native(endpoints: Vec<String>, timeout: Duration) -> Backend {
        let options = ClientOptions {
            timeout,
            attempt_timeout: timeout / 4,
            consistency: ReadConsistency::Linearizable,
            tls: super::client_tls(),
            token: None,
            stay: false,
        };
        let readers = (0..endpoints.len())
            .map(|first| {
                let mut order = endpoints.clone();
                order.rotate_left(first);
                Client::new(order, options.clone())
            })
            .collect();
        Backend::Native { writer: Client::new(endpoints, options), readers }
    }

    /// etcd clients on `endpoints`, the first the writer.
    pub fn etcd(endpoints: &[String], timeout: Duration) -> Result<Backend, String> {
        let mut clients = Vec::new();
        for endpoint in endpoints {
            clients.push(KVClient::new(etcd_channel(endpoint, timeout)?));
        }
        Ok(Backend::Etcd(clients))
    }

    /// Carries out one operation; a read goes to replica `pick` (modulo their number).
    pub async fn call(&self, key: u64, input: &Input, pick: usize) -> Result<Output, Failure> {
        match self {
            Backend::Native { writer, readers } => {
                let client = match input {
                    Input::Get => &readers[pick % readers.len()],
                    _ => writer,
                };
                native(client, key, input).await
            }
            Backend::Etcd(clients) => {
                let client = match input {
                    Input::Get => &clients[pick % clients.len()],
                    _ => &clients[0],
                };
                etcd(client.clone(), key, input).await
            }
        }
    }
}

async fn native(
    client: &Client<Request, Request, Answer>,
    key: u64,
    input: &Input,
) -> Result<Output, Failure> {
    let unknown = |error: lockstep_client::Error| Failure {
        // A write may have been applied whatever the error says about the last attempt.
        definite: false,
        reason: error.to_string(),
    };
    match input {
        Input::Get => {
            let answer = client.read(Request::get(key_bytes(key))).await.map_err(unknown)?;
            match answer.response {
                Response::Range(range) => {
                    Ok(Output::Value(range.kvs.first().and_then(|kv| parse_value(&kv.value))))
                }
                other => Err(Failure { definite: true, reason: format!("answer {other:?}") }),
            }
        }
        Input::Put(value) => {
            let put = PutRequest {
                key: key_bytes(key),
                value: value_bytes(*value),
                ..PutRequest::default()
            };
            let answer = client.write(Request::Put(put)).await.map_err(unknown)?;
            match answer.response {
                Response::Put(_) => Ok(Output::Done),
                other => Err(Failure { definite: false, reason: format!("answer {other:?}") }),
            }
        }
        Input::CompareAndSet { expected, new } => {
            let target = match expected {
                Some(value) => CompareTarget::Value(value_bytes(*value)),
                None => CompareTarget::Version(0),
            };
            let txn = TxnRequest {
                compare: vec![Compare {
                    range: KeyRange::key(key_bytes(key)),
                    op: CompareOp::Equal,
                    target,
                }],
                success: vec![KvOperation::Put(PutRequest {
                    key: key_bytes(key),
                    value: value_bytes(*new),
                    ..PutRequest::default()
                })],
                failure: vec![],
            };
            let answer = client.write(Request::Txn(txn)).await.map_err(unknown)?;
            match answer.response {
                Response::Txn(txn) => Ok(Output::Swapped(txn.succeeded)),
                other => Err(Failure { definite: false, reason: format!("answer {other:?}") }),
            }
        }
        Input::Delete => Err(Failure { definite: true, reason: "not used".into() }),
    }
}

async fn etcd(mut client: KVClient<Channel>, key: u64, input: &Input) -> Result<Output, Failure> {
    let unknown = |status: tonic::Status| Failure {
        // A request that never left (no connection could be made) certainly had no effect;
        // any other failure may have come after the request reached the leader.
        definite: status.code() == tonic::Code::Unavailable
            && status.message().contains("tcp connect error"),
        reason: status.to_string(),
    };
    match input {
        Input::Get => {
            let range = pb::RangeRequest { key: key_bytes(key).to_vec(), ..Default::default() };
            let response = client.range(range).await.map_err(unknown)?.into_inner();
            Ok(Output::Value(response.kvs.first().and_then(|kv| parse_value(&kv.value))))
        }
        Input::Put(value) => {
            let put = pb::PutRequest {
                key: key_bytes(key).to_vec(),
                value: value_bytes(*value).to_vec(),
                ..Default::default()
            };
            client.put(put).await.map_err(unknown)?;
            Ok(Output::Done)
        }
        Input::CompareAndSet { expected, new } => {
            use pb::compare::{CompareResult, CompareTarget as Target, TargetUnion};
            let (target, union) = match expected {
                Some(value) => (Target::Value, TargetUnion::Value(value_bytes(*value).to_vec())),
                None => (Target::Version, TargetUnion::Version(0)),
            };
            let txn = pb::TxnRequest {
                compare: vec![pb::Compare {
                    result: CompareResult::Equal as i32,
                    target: target as i32,
                    key: key_bytes(key).to_vec(),
                    target_union: Some(union),
                    range_end: Vec::new(),
                }],
                success: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                        key: key_bytes(key).to_vec(),
                        value: value_bytes(*new).to_vec(),
                        ..Default::default()
                    })),
                }],
                failure: vec![],
            };
            let response = client.txn(txn).await.map_err(unknown)?.into_inner();
            Ok(Output::Swapped(response.succeeded))
        }
        Input::Delete => Err(Failure { definite: true, reason: "not used".into() }),
    }
}

/// One recorded operation, as written to `history.jsonl`.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub client: u64,
    pub key: u64,
    pub input: Input,
    /// Microseconds since the run began.
    pub call: u64,
    /// When it completed and how: ok (with the output), failed (certainly no effect), or
    /// unknown (no answer: it may or may not have taken effect).
    pub outcome: Outcome,
    pub end: u64,
    pub error: Option<String>,
}

/// How an operation ended.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub enum Outcome {
    Ok(Output),
    Failed,
    Unknown,
}

impl Record {
    /// The operation as the linearizability checker takes it (`None`: left out, it certainly
    /// had no effect).
    pub fn operation(&self) -> Option<Operation> {
        let returned = match &self.outcome {
            Outcome::Ok(output) => Some((self.end, output.clone())),
            Outcome::Failed => return None,
            Outcome::Unknown => None,
        };
        Some(Operation {
            client: self.client,
            key: self.key,
            input: self.input.clone(),
            call: self.call,
            returned,
        })
    }
}

/// The shared history.
pub type History = Arc<Mutex<Vec<Record>>>;

/// What the clients do.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Operations per second across all clients.
    pub rate: f64,
    /// Keys in use at a time.
    pub keys: u64,
    /// A new set of keys every this long (keeps each key's history short for the checker).
    pub key_period: Duration,
    /// How many clients share the rate.
    pub clients: usize,
}

/// Runs client `id` until `stop`, recording into `history`.
pub async fn client(
    id: u64,
    backend: Backend,
    workload: Workload,
    started: Instant,
    seed: u64,
    history: History,
    stop: Arc<AtomicBool>,
) {
    let mut random = super::Random::new(seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut counter = 0u64;
    let mut last_seen: std::collections::BTreeMap<u64, Option<u64>> = Default::default();
    let pause = Duration::from_secs_f64(workload.clients as f64 / workload.rate.max(0.1));
    while !stop.load(Ordering::Relaxed) {
        let period =
            (started.elapsed().as_millis() / workload.key_period.as_millis().max(1)) as u64;
        let key = period * workload.keys + random.below(workload.keys);
        counter += 1;
        let value = (id + 1) << 40 | counter;
        let input = match random.below(10) {
            0..=4 => Input::Get,
            5..=7 => Input::Put(value),
            _ => Input::CompareAndSet {
                expected: last_seen.get(&key).copied().flatten(),
                new: value,
            },
        };
        let call = started.elapsed().as_micros() as u64;
        let result = backend.call(key, &input, random.below(3) as usize).await;
        let end = started.elapsed().as_micros() as u64;
        let (outcome, error) = match result {
            Ok(output) => {
                match (&input, &output) {
                    (_, Output::Value(value)) => {
                        last_seen.insert(key, *value);
                    }
                    (Input::Put(value), _) | (Input::CompareAndSet { new: value, .. }, _)
                        if output != Output::Swapped(false) =>
                    {
                        last_seen.insert(key, Some(*value));
                    }
                    _ => {}
                }
                (Outcome::Ok(output), None)
            }
            Err(failure) => {
                let outcome = if failure.definite || input == Input::Get {
                    // A read that failed changed nothing.
                    Outcome::Failed
                } else {
                    Outcome::Unknown
                };
                (outcome, Some(failure.reason))
            }
        };
        // After an unknown outcome, wait longer: each one stays open to the checker for good.
        let pause_after = match outcome {
            Outcome::Ok(_) => None,
            Outcome::Failed => Some(pause.max(Duration::from_millis(50))),
            Outcome::Unknown => Some(Duration::from_millis(250)),
        };
        if let Ok(mut history) = history.lock() {
            history.push(Record { client: id, key, input, call, outcome, end, error });
        }
        let jitter = Duration::from_micros(random.below(pause.as_micros() as u64 + 1));
        tokio::time::sleep(pause_after.unwrap_or(jitter * 2)).await;
    }
}
