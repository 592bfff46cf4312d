//! The verdicts on a run's history once the faults have healed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lockstep_client::Client;
use lockstep_kv::{Answer, EventsRequest, KeyRange, Request, Response};
use lockstep_sim::linearizability::{self, Input, Output, Verdict};

use super::workload::{parse_value, Outcome, Record, PREFIX};

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
/// number of times it was applied.
pub type Applied = BTreeMap<u64, u32>;

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
        });
        let answer = client.read(request).await.map_err(|error| error.to_string())?;
        let Response::Events(events) = answer.response else {
            return Err(format!("events: unexpected answer {:?}", answer.response));
        };
        let probe = super::workload::key_bytes(u64::MAX);
        for event in &events.events {
            if event.put && event.kv.key != probe {
                if let Some(value) = parse_value(&event.kv.value) {
                    *applied.entry(value).or_default() += 1;
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
            if !applied.contains_key(&value) {
                lost.push(format!("client {} wrote {value} to key {}", record.client, record.key));
            }
        }
        if record.outcome == Outcome::Ok(Output::Swapped(false)) && applied.contains_key(&value) {
            lost.push(format!("a compare-and-set answered `not swapped` was applied: {value}"));
        }
    }
    let twice: Vec<String> = applied
        .iter()
        .filter(|(_, &count)| count > 1)
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
            let summary = statuses
                .iter()
                .map(|status| format!("{}@{} {}", status.id, status.applied, status.digest))
                .collect::<Vec<_>>()
                .join(", ");
            if applied.len() == 1 {
                return Check::new("same state on every replica", digests.len() == 1, summary);
            }
            last = format!("not yet at one index: {summary}");
        }
        if tokio::time::Instant::now() >= deadline {
            return Check::new("same state on every replica", false, last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
