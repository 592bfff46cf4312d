//! The verdicts on a run's history once the faults have healed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lockstep_client::Client;
use lockstep_kv::{Answer, EventsRequest, KeyRange, Request, Response};
use lockstep_sim::linearizability::{self, Input, Output, Verdict};

use bytes::Bytes;

use super::workload::{key_bytes, parse_value, Outcome, Record, PREFIX};

/// One check's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &'static str, passed: bool, detail: impl Into<String>) -> Check {
        Check { name, passed, detail: detail.into() }
    }
}

/// The history is linearizable (each key alone; unknown outcomes may or may not have
/// happened).
pub fn linearizable(history: &[Record]) -> Check {
    let operations: Vec<_> = history.iter().filter_map(Record::operation).collect();
    let keys: BTreeSet<u64> = operations.iter().map(|operation| operation.key).collect();
    match linearizability::check(&operations) {
        Verdict::Linearizable => Check::new(
            "linearizable",
            true,
            format!("{} operations on {} keys", operations.len(), keys.len()),
        ),
        Verdict::Violation(violation) => Check::new("linearizable", false, violation.to_string()),
        Verdict::Unknown { key } => Check::new(
            "linearizable",
            false,
            format!("the search for key {key} was too long to conclude"),
        ),
    }
}

/// Every value written, as the store's history (its change events) holds them: value -> the
/// key it was applied to and the number of times.
pub type Applied = BTreeMap<u64, (Bytes, u32)>;

/// Reads the whole history of the harness's keys from lockstep (a linearizable read of the
/// change events from revision 1).
pub async fn applied_lockstep(
    client: &Client<Request, Request, Answer>,
) -> Result<Applied, String> {
    let mut applied = Applied::new();
    let mut from = 1;
    loop {
        let request = Request::Events(EventsRequest {
            range: KeyRange::prefix(PREFIX.as_bytes().to_vec()),
            from,
            limit: 10_000,
            user: None,
        });
        let answer = client.read(request).await.map_err(|error| error.to_string())?;
        let Response::Events(events) = answer.response else {
            return Err(format!("events: unexpected answer {:?}", answer.response));
        };
        let probe = super::workload::key_bytes(u64::MAX);
        for event in &events.events {
            if event.put && event.kv.key != probe {
                if let Some(value) = parse_value(&event.kv.value) {
                    applied.entry(value).or_insert_with(|| (event.kv.key.clone(), 0)).1 += 1;
                }
            }
        }
        if events.events.is_empty() || events.through >= answer.revision {
            return Ok(applied);
        }
        from = events.through + 1;
    }
}

/// Every acknowledged write is in the store's history; no write was applied twice; nothing
/// is there that no client wrote.
pub fn durable_and_once(history: &[Record], applied: &Applied) -> Vec<Check> {
    let mut written = BTreeSet::new();
    let mut lost = Vec::new();
    let mut acknowledged = 0;
    for record in history {
        let value = match record.input {
            Input::Put(value) | Input::CompareAndSet { new: value, .. } => value,
            _ => continue,
        };
        written.insert(value);
        let acked = matches!(record.outcome, Outcome::Ok(Output::Done | Output::Swapped(true)));
        if acked {
            acknowledged += 1;
            match applied.get(&value) {
                None => lost
                    .push(format!("client {} wrote {value} to key {}", record.client, record.key)),
                Some((key, _)) if *key != key_bytes(record.key) => lost.push(format!(
                    "client {} wrote {value} to key {}, applied to {}",
                    record.client,
                    record.key,
                    String::from_utf8_lossy(key)
                )),
                Some(_) => {}
            }
        }
        if record.outcome == Outcome::Ok(Output::Swapped(false)) && applied.contains_key(&value) {
            lost.push(format!("a compare-and-set answered `not swapped` was applied: {value}"));
        }
    }
    let twice: Vec<String> = applied
        .iter()
        .map(|(value, (_, count))| (value, *count))
        .filter(|(_, count)| *count > 1)
        .map(|(value, count)| format!("{value} applied {count} times"))
        .collect();
    let phantom: Vec<String> = applied
        .keys()
        .filter(|value| !written.contains(value))
        .map(|value| format!("{value} never written"))
        .collect();
    let first = |list: &[String]| list.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
    vec![
        Check::new(
            "no acknowledged write lost",
            lost.is_empty(),
            if lost.is_empty() {
                format!("{acknowledged} acknowledged writes, all in the store's history")
            } else {
                format!("{} of {acknowledged} lost: {}", lost.len(), first(&lost))
            },
        ),
        Check::new(
            "no write applied twice",
            twice.is_empty() && phantom.is_empty(),
            if twice.is_empty() && phantom.is_empty() {
                format!("{} values applied, each once", applied.len())
            } else {
                format!("{} {}", first(&twice), first(&phantom))
            },
        ),
    ]
}

/// Waits until every replica has applied the same index and compares their digests.
pub async fn same_digest(clients: &[Client<Request, Request, Answer>], within: Duration) -> Check {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = String::new();
    loop {
        let mut statuses = Vec::new();
        for client in clients {
            match client.status_with(true).await {
                Ok(status) => statuses.push(status),
                Err(error) => {
                    last = format!("a replica does not answer: {error}");
                    break;
                }
            }
        }
        if statuses.len() == clients.len() {
            let applied: BTreeSet<u64> = statuses.iter().map(|status| status.applied).collect();
            let digests: BTreeSet<&str> =
                statuses.iter().map(|status| status.digest.as_str()).collect();
            // The output chains too: the same entries applied with the same answers.
            let chains: BTreeSet<(u64, &str)> =
                statuses.iter().map(|status| (status.chain_index, status.chain.as_str())).collect();
            let summary = statuses
                .iter()
                .map(|status| {
                    format!(
                        "{}@{} {} chain {}",
                        status.id, status.applied, status.digest, status.chain
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            if applied.len() == 1 {
                let same = digests.len() == 1 && chains.len() == 1;
                return Check::new("same state on every replica", same, summary);
            }
            last = format!("not yet at one index: {summary}");
        }
        if tokio::time::Instant::now() >= deadline {
            return Check::new("same state on every replica", false, last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// etcd: the channel to one member, for the checks.
fn etcd_channel(endpoint: &str) -> Result<tonic::transport::Channel, String> {
    super::workload::etcd_channel(endpoint, Duration::from_secs(10))
}

/// Reads the whole history of the harness's keys from etcd: a watch from revision 1 up to the
/// current revision.
pub async fn applied_etcd(endpoint: &str) -> Result<Applied, String> {
    use lockstep_etcd::proto::etcdserverpb as pb;
    use lockstep_etcd::rpc::k_v_client::KVClient;
    use lockstep_etcd::rpc::watch_client::WatchClient;
    let channel = etcd_channel(endpoint)?;
    let mut prefix_end = PREFIX.as_bytes().to_vec();
    if let Some(last) = prefix_end.last_mut() {
        *last += 1;
    }
    let current = KVClient::new(channel.clone())
        .range(pb::RangeRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: prefix_end.clone(),
            count_only: true,
            ..Default::default()
        })
        .await
        .map_err(|status| status.to_string())?
        .into_inner()
        .header
        .map_or(0, |header| header.revision);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: PREFIX.as_bytes().to_vec(),
                range_end: prefix_end,
                start_revision: 1,
                ..Default::default()
            },
        )),
    };
    let (requests, receiver) = tokio::sync::mpsc::channel(1);
    requests.send(create).await.map_err(|error| error.to_string())?;
    let stream = tokio_stream_from(receiver);
    let mut responses = WatchClient::new(channel)
        .watch(stream)
        .await
        .map_err(|status| status.to_string())?
        .into_inner();
    let probe = super::workload::key_bytes(u64::MAX);
    let mut applied = Applied::new();
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen < current {
        let next = tokio::time::timeout_at(deadline, responses.message()).await;
        let response = match next {
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => return Err("the watch ended early".into()),
            Ok(Err(status)) => return Err(status.to_string()),
            Err(_) => return Err(format!("the watch stalled at revision {seen} of {current}")),
        };
        if response.canceled {
            return Err(format!("the watch was canceled: {}", response.cancel_reason));
        }
        for event in response.events {
            let Some(kv) = event.kv else { continue };
            seen = seen.max(kv.mod_revision);
            if event.r#type == 0 && kv.key != probe.as_ref() {
                if let Some(value) = parse_value(&kv.value) {
                    let key = Bytes::from(kv.key.clone());
                    applied.entry(value).or_insert_with(|| (key, 0)).1 += 1;
                }
            }
        }
        if let Some(header) = response.header {
            // Every change up to the header's revision has been sent when no event is left.
            if seen == 0 && header.revision >= current && !response.created {
                seen = current;
            }
        }
    }
    drop(requests);
    Ok(applied)
}

/// A stream of what `receiver` gets (tonic takes a stream for the watch's requests; it stays
/// open while the sender lives, and etcd ends the watch when it closes).
fn tokio_stream_from<T: Send + 'static>(
    receiver: tokio::sync::mpsc::Receiver<T>,
) -> tonic::codegen::tokio_stream::wrappers::ReceiverStream<T> {
    tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// Waits until every etcd member answers HashKV at one revision and compares the hashes.
pub async fn same_hash_etcd(endpoints: &[String], within: Duration) -> Check {
    use lockstep_etcd::proto::etcdserverpb as pb;
    use lockstep_etcd::rpc::maintenance_client::MaintenanceClient;
    let deadline = tokio::time::Instant::now() + within;
    let mut last = String::new();
    loop {
        let mut hashes = Vec::new();
        let mut revision = 0;
        let mut status_failed = false;
        for endpoint in endpoints {
            let Ok(channel) = etcd_channel(endpoint) else { break };
            // The newest revision every member has: the smallest of their own.
            match MaintenanceClient::new(channel).status(pb::StatusRequest {}).await {
                Ok(status) => {
                    let r = status.into_inner().header.map_or(0, |header| header.revision);
                    revision = if revision == 0 { r } else { revision.min(r) };
                }
                Err(status) => {
                    status_failed = true;
                    last = format!("{endpoint}: {status}");
                }
            }
        }
        // Without every member's revision there is no common one to hash at: ask again.
        for endpoint in endpoints.iter().filter(|_| !status_failed && revision > 0) {
            let Ok(channel) = etcd_channel(endpoint) else { break };
            match MaintenanceClient::new(channel).hash_kv(pb::HashKvRequest { revision }).await {
                Ok(response) => hashes.push((endpoint.clone(), response.into_inner().hash)),
                Err(status) => last = format!("{endpoint}: {status}"),
            }
        }
        if hashes.len() == endpoints.len() {
            let distinct: BTreeSet<u32> = hashes.iter().map(|(_, hash)| *hash).collect();
            let summary = hashes
                .iter()
                .map(|(endpoint, hash)| format!("{endpoint} {hash:08x}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Check::new(
                "same state on every replica",
                distinct.len() == 1,
                format!("HashKV at revision {revision}: {summary}"),
            );
        }
        if tokio::time::Instant::now() >= deadline {
            return Check::new("same state on every replica", false, last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
