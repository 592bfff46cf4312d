//! The client commands: put, get, del, scan, txn, status.

use bytes::Bytes;
use lockstep_client::{
    AuditRequest, Client, ClientOptions, MemberRequest, ReadConsistency, ReplicaStatus,
};
use lockstep_kv::{
    Answer, CompactRequest, Compare, CompareOp, CompareTarget, DeleteRequest, KeyRange, KeyValue,
    Operation, PutRequest, RangeRequest, Request, Response, TxnRequest,
};
use serde_json::{json, Value};

use crate::{AuditAction, ClientArgs, Command, Consistency, MemberAction, Output};

/// The client of the key-value service.
pub type KvClient = Client<Request, Request, Answer>;

pub fn client(args: &ClientArgs) -> Result<KvClient, String> {
    client_with(args, None)
}

/// The client, sending `token` with membership changes and audit actions.
fn client_with(args: &ClientArgs, token: Option<String>) -> Result<KvClient, String> {
    let options = ClientOptions {
        timeout: args.timeout(),
        attempt_timeout: args.timeout().min(std::time::Duration::from_secs(3)),
        consistency: match (args.serializable, args.consistency) {
            (true, _) | (_, Consistency::Serializable) => ReadConsistency::Follower,
            (false, Consistency::Lease) => ReadConsistency::Lease,
            (false, Consistency::Linearizable) => ReadConsistency::Linearizable,
        },
        tls: args.tls()?,
        token,
        stay: false,
    };
    Ok(Client::new(args.endpoints.clone(), options))
}

/// With `--user`, a token for that user: its password is checked by a member's etcd port
/// (found in the member list), which issues the token, as `etcdctl --user` does.
async fn token(args: &ClientArgs) -> Result<Option<String>, String> {
    let Some(user) = &args.user else { return Ok(None) };
    let (name, password) = match user.split_once(':') {
        Some((name, password)) => (name.to_string(), password.to_string()),
        None => {
            let prompt = format!("Password for {user}: ");
            let password = rpassword::prompt_password(prompt)
                .map_err(|error| format!("reading the password: {error}"))?;
            (user.clone(), password)
        }
    };
    let members = client(args)?
        .members(MemberRequest::List)
        .await
        .map_err(|error| format!("finding the members' etcd ports: {error}"))?;
    let addresses: Vec<String> = members.into_iter().filter_map(|member| member.etcd).collect();
    if addresses.is_empty() {
        return Err("--user needs a member that serves etcd's API, and none does".to_string());
    }
    let tls = args.tls_files()?;
    let mut last = String::new();
    for address in addresses {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|error| format!("{address}: {error}"))?
            .connect_timeout(args.timeout())
            .timeout(args.timeout());
        if let Some(tls) = &tls {
            endpoint = endpoint
                .tls_config(crate::bench::grpc_tls(tls, &address)?)
                .map_err(|error| format!("TLS to {address}: {error}"))?;
        }
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(error) => {
                last = format!("{address}: {error}");
                continue;
            }
        };
        let mut auth = lockstep_etcd::rpc::auth_client::AuthClient::new(channel);
        let request = lockstep_etcd::proto::etcdserverpb::AuthenticateRequest {
            name: name.clone(),
            password: password.clone(),
        };
        match auth.authenticate(request).await {
            Ok(answer) => return Ok(Some(answer.into_inner().token)),
            // A refusal is the cluster's answer; only a member that cannot answer is passed.
            Err(status) if status.code() != tonic::Code::Unavailable => {
                return Err(status.message().to_string())
            }
            Err(status) => last = format!("{address}: {}", status.message()),
        }
    }
    Err(format!("no member could authenticate {name}: {last}"))
}

/// `request` made as the user of `token`.
fn as_user(token: &Option<String>, request: Request) -> Request {
    match token {
        Some(token) => {
            Request::As(Box::new(lockstep_kv::Authorized { token: token.clone(), request }))
        }
        None => request,
    }
}

/// Runs a client command.
pub async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Put { key, value, prev_kv, client: args } => {
            let request = Request::Put(PutRequest {
                key: Bytes::from(key),
                value: Bytes::from(value),
                prev_kv,
                ..PutRequest::default()
            });
            let answer = write(&args, request).await?;
            print_answer(&args, &answer)
        }
        Command::Get { key, prefix, limit, keys_only, count_only, rev, client: args } => {
            let range = if prefix { KeyRange::prefix(key) } else { KeyRange::key(key) };
            let request = Request::Range(RangeRequest {
                range,
                limit,
                revision: rev,
                keys_only,
                count_only,
                ..RangeRequest::default()
            });
            let answer = read(&args, request).await?;
            print_answer(&args, &answer)
        }
        Command::Del { key, prefix, prev_kv, client: args } => {
            let range = if prefix { KeyRange::prefix(key) } else { KeyRange::key(key) };
            let answer = write(&args, Request::Delete(DeleteRequest { range, prev_kv })).await?;
            print_answer(&args, &answer)
        }
        Command::Scan { start, end, limit, keys_only, client: args } => {
            let key = Bytes::from(start.unwrap_or_else(|| "\0".to_string()));
            let range_end = Bytes::from(end.unwrap_or_else(|| "\0".to_string()));
            let request = Request::Range(RangeRequest {
                range: KeyRange { key, range_end },
                limit,
                keys_only,
                ..RangeRequest::default()
            });
            let answer = read(&args, request).await?;
            print_answer(&args, &answer)
        }
        Command::Txn { compare, success, failure, client: args } => {
            let txn = TxnRequest {
                compare: compare
                    .iter()
                    .map(|text| parse_compare(text))
                    .collect::<Result<_, _>>()?,
                success: success
                    .iter()
                    .map(|text| parse_operation(text))
                    .collect::<Result<_, _>>()?,
                failure: failure
                    .iter()
                    .map(|text| parse_operation(text))
                    .collect::<Result<_, _>>()?,
            };
            let request = Request::Txn(txn);
            let answer = if request.is_read_only() {
                read(&args, request).await?
            } else {
                write(&args, request).await?
            };
            print_answer(&args, &answer)
        }
        Command::Status { client: args } => status(&args).await,
        Command::Member { action, client: args } => member(action, &args).await,
        Command::Audit { action, client: args } => audit(action, &args).await,
        Command::Compact { revision, client: args } => {
            let answer = write(&args, Request::Compact(CompactRequest { revision })).await?;
            print_answer(&args, &answer)
        }
        Command::Up(_)
        | Command::Serve(_)
        | Command::Cert(_)
        | Command::Bench(_)
        | Command::Chaos(_)
        | Command::ChaosProxy(_) => Err("not a client command".to_string()),
    }
}

async fn write(args: &ClientArgs, request: Request) -> Result<Answer, String> {
    let token = token(args).await?;
    let request = as_user(&token, request);
    client(args)?.write(request).await.map_err(|error| error.to_string())
}

async fn read(args: &ClientArgs, request: Request) -> Result<Answer, String> {
    let token = token(args).await?;
    let request = as_user(&token, request);
    client(args)?.read(request).await.map_err(|error| error.to_string())
}

/// Parses `value(KEY) = V`, `version(KEY) > N`, `create(KEY) = N`, `mod(KEY) != N`.
pub fn parse_compare(text: &str) -> Result<Compare, String> {
    let usage = || {
        format!(
            "--compare `{text}`: expected TARGET(KEY) OP VALUE, with TARGET one of value, \
             version, create, mod and OP one of =, !=, >, <"
        )
    };
    let open = text.find('(').ok_or_else(usage)?;
    let close = text.rfind(')').ok_or_else(usage)?;
    if close < open {
        return Err(usage());
    }
    let target = text[..open].trim();
    let key = &text[open + 1..close];
    let rest = text[close + 1..].trim_start();
    let (op, value) = if let Some(value) = rest.strip_prefix("!=") {
        (CompareOp::NotEqual, value)
    } else if let Some(value) = rest.strip_prefix('=') {
        (CompareOp::Equal, value)
    } else if let Some(value) = rest.strip_prefix('>') {
        (CompareOp::Greater, value)
    } else if let Some(value) = rest.strip_prefix('<') {
        (CompareOp::Less, value)
    } else {
        return Err(usage());
    };
    let value = value.trim();
    let number = || value.parse::<i64>().map_err(|_| usage());
    let target = match target {
        "value" => CompareTarget::Value(Bytes::from(value.to_string())),
        "version" => CompareTarget::Version(number()?),
        "create" => CompareTarget::CreateRevision(number()?),
        "mod" => CompareTarget::ModRevision(number()?),
        _ => return Err(usage()),
    };
    Ok(Compare { range: KeyRange::key(key.to_string()), op, target })
}

/// Parses `put KEY VALUE`, `del KEY`, `get KEY`.
pub fn parse_operation(text: &str) -> Result<Operation, String> {
    let usage = || format!("operation `{text}`: expected `put KEY VALUE`, `del KEY` or `get KEY`");
    let mut words = text.trim().splitn(3, ' ');
    let verb = words.next().ok_or_else(usage)?;
    let key = words.next().filter(|key| !key.is_empty()).ok_or_else(usage)?.to_string();
    let value = words.next();
    match (verb, value) {
        ("put", Some(value)) => Ok(Operation::Put(PutRequest {
            key: Bytes::from(key),
            value: Bytes::from(value.to_string()),
            ..PutRequest::default()
        })),
        ("del", None) => {
            Ok(Operation::Delete(DeleteRequest { range: KeyRange::key(key), prev_kv: false }))
        }
        ("get", None) => Ok(Operation::Range(RangeRequest {
            range: KeyRange::key(key),
            ..RangeRequest::default()
        })),
        _ => Err(usage()),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn kv_json(kv: &KeyValue) -> Value {
    json!({
        "key": text(&kv.key),
        "value": text(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    })
}

fn lease_json(lease: &lockstep_kv::LeaseInfo) -> Value {
    json!({
        "id": lease.id,
        "ttl": lease.ttl,
        "deadline_millis": lease.deadline_millis,
        "keys": lease.keys.iter().map(|key| text(key)).collect::<Vec<_>>(),
        "renewed": lease.renewed,
    })
}

fn response_json(response: &Response) -> Value {
    match response {
        Response::Range(range) => json!({
            "kvs": range.kvs.iter().map(kv_json).collect::<Vec<_>>(),
            "count": range.count,
            "more": range.more,
        }),
        Response::Put(put) => json!({ "prev_kv": put.prev_kv.as_ref().map(kv_json) }),
        Response::Delete(delete) => json!({
            "deleted": delete.deleted,
            "prev_kvs": delete.prev_kvs.iter().map(kv_json).collect::<Vec<_>>(),
        }),
        Response::Txn(txn) => json!({
            "succeeded": txn.succeeded,
            "responses": txn.responses.iter().map(response_json).collect::<Vec<_>>(),
        }),
        Response::Compact => json!({}),
        Response::Hash(hash) => json!({
            "hash": hash.hash,
            "hash_revision": hash.hash_revision,
            "compact_revision": hash.compact_revision,
        }),
        Response::Lease(lease) => lease_json(lease),
        Response::Leases(leases) => {
            json!({ "leases": leases.iter().map(lease_json).collect::<Vec<_>>() })
        }
        Response::LeaseRevoked => json!({}),
        Response::Revisions { current, compacted } => {
            json!({ "current": current, "compacted": compacted })
        }
        Response::Events(events) => json!({
            "through": events.through,
            "events": events.events.iter().map(|event| json!({
                "type": if event.put { "PUT" } else { "DELETE" },
                "kv": kv_json(&event.kv),
                "prev_kv": event.prev_kv.as_ref().map(kv_json),
            })).collect::<Vec<_>>(),
        }),
        Response::LeaseDeadlines(leases) => json!({
            "leases": leases.iter().map(|lease| json!({
                "id": lease.id,
                "ttl": lease.ttl,
                "deadline_millis": lease.deadline_millis,
                "renewed": lease.renewed,
            })).collect::<Vec<_>>(),
        }),
        Response::LeasesCheckpointed(count) => json!({ "checkpointed": count }),
        Response::Alarms(listed) => json!({
            "alarms": listed.alarms.iter().map(|alarm| json!({
                "member": alarm.member,
                "alarm": format!("{:?}", alarm.alarm),
            })).collect::<Vec<_>>(),
            "size_bytes": listed.size_bytes,
        }),
        Response::Auth(auth) => auth_json(auth),
        Response::Error(error) => json!({ "error": error.to_string() }),
    }
}

fn auth_json(response: &lockstep_kv::AuthResponse) -> Value {
    use lockstep_kv::AuthResponse;
    match response {
        AuthResponse::Done => json!({}),
        AuthResponse::Status { enabled, revision } => {
            json!({ "enabled": enabled, "auth_revision": revision })
        }
        AuthResponse::User(roles) => json!({ "roles": roles }),
        AuthResponse::Names(names) => json!({ "names": names }),
        AuthResponse::Role(permissions) => json!({
            "permissions": permissions.iter().map(|permission| json!({
                "kind": format!("{:?}", permission.kind),
                "key": text(&permission.key),
                "range_end": text(&permission.range_end),
            })).collect::<Vec<_>>(),
        }),
        // Neither is ever asked through the command line (members ask them of their own
        // replica): shown without their secrets.
        AuthResponse::Password { revision, .. } => json!({ "auth_revision": revision }),
        AuthResponse::Token(_) => json!({ "token": "(issued)" }),
    }
}

fn print_response(response: &Response, lines: &mut Vec<String>) {
    match response {
        Response::Range(range) => {
            for kv in &range.kvs {
                if kv.value.is_empty() && kv.version > 0 && kv.create_revision > 0 {
                    lines.push(text(&kv.key));
                } else {
                    lines.push(format!("{}\t{}", text(&kv.key), text(&kv.value)));
                }
            }
            if range.kvs.is_empty() && range.count > 0 {
                lines.push(range.count.to_string());
            }
            if range.more {
                lines.push(format!("(more: {} in all)", range.count));
            }
        }
        Response::Put(put) => {
            lines.push("OK".to_string());
            if let Some(prev) = &put.prev_kv {
                lines.push(format!("previous: {}\t{}", text(&prev.key), text(&prev.value)));
            }
        }
        Response::Delete(delete) => {
            lines.push(delete.deleted.to_string());
            for prev in &delete.prev_kvs {
                lines.push(format!("{}\t{}", text(&prev.key), text(&prev.value)));
            }
        }
        Response::Txn(txn) => {
            lines.push(if txn.succeeded { "SUCCESS" } else { "FAILURE" }.to_string());
            for response in &txn.responses {
                print_response(response, lines);
            }
        }
        Response::Compact => lines.push("compacted".to_string()),
        Response::Hash(hash) => lines.push(hash.hash.to_string()),
        Response::Lease(lease) => lines.push(format!("lease {} ttl {}", lease.id, lease.ttl)),
        Response::Leases(leases) => {
            lines
                .extend(leases.iter().map(|lease| format!("lease {} ttl {}", lease.id, lease.ttl)));
        }
        Response::LeaseRevoked => lines.push("revoked".to_string()),
        Response::Revisions { current, compacted } => {
            lines.push(format!("revision {current}, compacted {compacted}"));
        }
        Response::Events(events) => {
            for event in &events.events {
                let kind = if event.put { "PUT" } else { "DELETE" };
                lines.push(format!("{kind}\t{}\t{}", text(&event.kv.key), text(&event.kv.value)));
            }
        }
        Response::LeaseDeadlines(leases) => {
            lines.extend(leases.iter().map(|lease| {
                format!("lease {} ttl {} deadline {}", lease.id, lease.ttl, lease.deadline_millis)
            }));
        }
        Response::LeasesCheckpointed(count) => lines.push(format!("checkpointed {count}")),
        Response::Alarms(listed) => {
            for alarm in &listed.alarms {
                lines.push(format!("member {} alarm {:?}", alarm.member, alarm.alarm));
            }
            lines.push(format!("size {} bytes", listed.size_bytes));
        }
        Response::Auth(auth) => lines.push(auth_json(auth).to_string()),
        Response::Error(error) => lines.push(format!("error: {error}")),
    }
}

fn print_answer(args: &ClientArgs, answer: &Answer) -> Result<(), String> {
    match args.output {
        Output::Json => {
            let document = json!({
                "revision": answer.revision,
                "response": response_json(&answer.response),
            });
            println!("{document}");
        }
        Output::Text => {
            let mut lines = Vec::new();
            print_response(&answer.response, &mut lines);
            for line in lines {
                println!("{line}");
            }
        }
    }
    match &answer.response {
        Response::Error(error) => Err(error.to_string()),
        _ => Ok(()),
    }
}

async fn member(action: MemberAction, args: &ClientArgs) -> Result<(), String> {
    let request = match action {
        MemberAction::List => MemberRequest::List,
        MemberAction::Add { id, peer, client, etcd } => {
            MemberRequest::Add { id, peer, client, etcd }
        }
        MemberAction::Promote { id } => MemberRequest::Promote { id },
        MemberAction::Remove { id } => MemberRequest::Remove { id },
        MemberAction::Transfer { id } => MemberRequest::Transfer { id },
    };
    let token = if request == MemberRequest::List { None } else { token(args).await? };
    let members =
        client_with(args, token)?.members(request).await.map_err(|error| error.to_string())?;
    match args.output {
        Output::Json => {
            let members: Vec<Value> = members
                .iter()
                .map(|member| {
                    json!({
                        "id": member.id,
                        "voter": member.voter,
                        "peer": member.peer,
                        "client": member.client,
                        "etcd": member.etcd,
                    })
                })
                .collect();
            println!("{}", json!({ "members": members }));
        }
        Output::Text => {
            println!("{:<4} {:<8} {:<21} {:<21} ETCD", "ID", "ROLE", "PEER", "CLIENT");
            for member in &members {
                println!(
                    "{:<4} {:<8} {:<21} {:<21} {}",
                    member.id,
                    if member.voter { "voter" } else { "learner" },
                    member.peer,
                    member.client,
                    member.etcd.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(())
}

/// The status of every endpoint, asked in parallel.
pub async fn statuses(
    args: &ClientArgs,
    digest: bool,
) -> Vec<(String, Result<ReplicaStatus, String>)> {
    let mut tasks = Vec::new();
    for endpoint in &args.endpoints {
        let mut single = args.clone();
        single.endpoints = vec![endpoint.clone()];
        single.timeout = single.timeout.min(2.0);
        tasks.push((
            endpoint.clone(),
            tokio::spawn(async move {
                client(&single)?.status_with(digest).await.map_err(|e| e.to_string())
            }),
        ));
    }
    let mut results = Vec::new();
    for (endpoint, task) in tasks {
        let result = task.await.unwrap_or_else(|error| Err(error.to_string()));
        results.push((endpoint, result));
    }
    results
}

async fn status(args: &ClientArgs) -> Result<(), String> {
    let results = statuses(args, true).await;
    let newest_commit = results
        .iter()
        .filter_map(|(_, result)| result.as_ref().ok().map(|status| status.commit))
        .max()
        .unwrap_or(0);
    match args.output {
        Output::Json => {
            let replicas: Vec<Value> = results
                .iter()
                .map(|(endpoint, result)| match result {
                    Ok(status) => json!({
                        "endpoint": endpoint,
                        "id": status.id,
                        "role": status.role,
                        "term": status.term,
                        "leader": status.leader,
                        "commit": status.commit,
                        "applied": status.applied,
                        "last_index": status.last_index,
                        "persisted": status.persisted,
                        "checkpoint": status.checkpoint,
                        "digest": status.digest,
                        "chain_index": status.chain_index,
                        "chain": status.chain,
                        "lag": newest_commit.saturating_sub(status.applied),
                        "voters": status.voters,
                        "learners": status.learners,
                        "cluster_id": status.cluster_id,
                        "failure": status.failure,
                        "audit": serde_json::to_value(&status.audit).unwrap_or(Value::Null),
                        "lost_through": status.lost_through,
                    }),
                    Err(error) => json!({ "endpoint": endpoint, "error": error }),
                })
                .collect();
            println!("{}", json!({ "replicas": replicas }));
        }
        Output::Text => {
            println!(
                "{:<4} {:<21} {:<10} {:>6} {:>10} {:>10} {:>10} {:<16} {:<16} {:>6} {:<11}",
                "ID",
                "ADDRESS",
                "ROLE",
                "TERM",
                "COMMIT",
                "APPLIED",
                "CHECKPOINT",
                "DIGEST",
                "CHAIN",
                "LAG",
                "AUDIT"
            );
            for (endpoint, result) in &results {
                match result {
                    Ok(status) => println!(
                        "{:<4} {:<21} {:<10} {:>6} {:>10} {:>10} {:>10} {:<16} {:<16} {:>6} {:<11}",
                        status.id,
                        endpoint,
                        status.role,
                        status.term,
                        status.commit,
                        status.applied,
                        status.checkpoint,
                        status.digest.get(..16).unwrap_or(&status.digest),
                        status.chain,
                        newest_commit.saturating_sub(status.applied),
                        audit_word(status),
                    ),
                    Err(error) => println!("{:<4} {endpoint:<21} unreachable: {error}", "?"),
                }
            }
        }
    }
    let diagnosis = election_diagnosis(&results);
    match args.output {
        // (In JSON it is the last line, after the replicas.)
        Output::Json if !diagnosis.is_empty() => println!("{}", json!({ "diagnosis": diagnosis })),
        Output::Json => {}
        Output::Text => {
            for line in &diagnosis {
                println!("{line}");
            }
        }
    }
    if results.iter().all(|(_, result)| result.is_err()) {
        return Err("no replica answered".to_string());
    }
    Ok(())
}

/// When no replica that answered knows of a leader: which replicas hold themselves out of
/// elections and why, and whether those short of entries lost to damage are a majority of
/// the voters (then no leader can be elected without a log newer than theirs; see
/// docs/storage.md, "When a majority lost its data"). Empty while a leader is known.
fn election_diagnosis(results: &[(String, Result<ReplicaStatus, String>)]) -> Vec<String> {
    let answered: Vec<&ReplicaStatus> =
        results.iter().filter_map(|(_, result)| result.as_ref().ok()).collect();
    if answered.is_empty() || answered.iter().any(|status| status.leader.is_some()) {
        return Vec::new();
    }
    let mut lines = vec!["no leader is known to any replica that answered".to_string()];
    for status in &answered {
        if let Some(through) = status.lost_through {
            lines.push(format!(
                "  replica {}: its log lost entries through {through} to damage; it does not \
                 stand for election, and votes only for a log newer than what it lost, until a \
                 leader sends them again",
                status.id
            ));
        }
        if status.audit.quarantined.is_some() {
            lines.push(format!(
                "  replica {}: quarantined (its state differs from the majority's); it votes \
                 and stands again after two election timeouts without a leader, and hands \
                 leadership over if elected",
                status.id
            ));
        }
    }
    let voters: std::collections::BTreeSet<u64> =
        answered.iter().flat_map(|status| status.voters.iter().copied()).collect();
    let short: Vec<u64> = answered
        .iter()
        .filter(|status| status.lost_through.is_some() && voters.contains(&status.id))
        .map(|status| status.id)
        .collect();
    if !voters.is_empty() && short.len() > voters.len() / 2 {
        lines.push(format!(
            "  {} of the {} voters ({short:?}) lost entries they may have acknowledged: a leader \
             can be elected only from a log that ends in a later term than theirs. If no voter \
             holds one, bring back a voter whose disk is intact; see docs/storage.md, \"When a \
             majority lost its data\"",
            short.len(),
            voters.len()
        ));
    }
    let unreachable = results.len() - answered.len();
    if unreachable > 0 {
        lines.push(format!("  {unreachable} replica(s) did not answer"));
    }
    lines
}

/// A replica's audit in one word: `ok`, `QUARANTINED`, `LOG-REPAIR` (fetching entries its
/// log lost to damage), or `off`.
fn audit_word(status: &ReplicaStatus) -> &'static str {
    match (&status.audit.quarantined, status.lost_through, status.audit.enabled) {
        (Some(_), _, _) => "QUARANTINED",
        (None, Some(_), _) => "LOG-REPAIR",
        (None, None, true) => "ok",
        (None, None, false) => "off",
    }
}

async fn audit(action: Option<AuditAction>, args: &ClientArgs) -> Result<(), String> {
    let checked = match action {
        None => None,
        Some(AuditAction::Repair { id }) => {
            let client = client_with(args, token(args).await?)?;
            client.audit(AuditRequest::Repair { id }).await.map_err(|e| e.to_string())?;
            if args.output == Output::Text {
                println!("repairing replica {id}");
            }
            return Ok(());
        }
        Some(AuditAction::Check) => {
            let client = client_with(args, token(args).await?)?;
            let index = client.audit(AuditRequest::Check).await.map_err(|e| e.to_string())?;
            // Wait until every replica that answers has reported the point (or time is up).
            let started = std::time::Instant::now();
            while started.elapsed() < args.timeout() {
                let results = statuses(args, false).await;
                let reported = leader_of(&results).is_some_and(|leader| {
                    leader.audit.peers.iter().all(|peer| peer.quarantined || peer.reported >= index)
                });
                if reported {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Some(index)
        }
    };
    let results = statuses(args, false).await;
    let leader = leader_of(&results).cloned();
    match args.output {
        Output::Json => {
            let replicas: Vec<Value> = results
                .iter()
                .map(|(endpoint, result)| match result {
                    Ok(status) => json!({
                        "endpoint": endpoint,
                        "id": status.id,
                        "role": status.role,
                        "applied": status.applied,
                        "chain": status.chain,
                        "agreed": agreed_of(status, leader.as_ref()),
                        "audit": serde_json::to_value(&status.audit).unwrap_or(Value::Null),
                    }),
                    Err(error) => json!({ "endpoint": endpoint, "error": error }),
                })
                .collect();
            println!("{}", json!({ "checked_at": checked, "replicas": replicas }));
        }
        Output::Text => {
            if let Some(index) = checked {
                println!("compared at digest point {index}");
            }
            println!(
                "{:<4} {:<10} {:>10} {:>10} {:>10} {:<16} {:<11}",
                "ID", "ROLE", "APPLIED", "AGREED", "DIGEST AT", "DIGEST", "AUDIT"
            );
            for (endpoint, result) in &results {
                match result {
                    Ok(status) => println!(
                        "{:<4} {:<10} {:>10} {:>10} {:>10} {:<16} {:<11}",
                        status.id,
                        status.role,
                        status.applied,
                        agreed_of(status, leader.as_ref())
                            .map_or("-".to_string(), |a| a.to_string()),
                        status.audit.digest_index,
                        status.audit.digest.get(..16).unwrap_or(&status.audit.digest),
                        audit_word(status),
                    ),
                    Err(error) => println!("{:<4} {endpoint} unreachable: {error}", "?"),
                }
            }
            let mut history: Vec<String> = Vec::new();
            for status in results.iter().filter_map(|(_, result)| result.as_ref().ok()) {
                if let Some(why) = &status.audit.quarantined {
                    history.push(format!("replica {} is quarantined: {why}", status.id));
                }
                for line in &status.audit.history {
                    if !history.contains(line) {
                        history.push(line.clone());
                    }
                }
            }
            if history.is_empty() {
                println!("no divergence found");
            } else {
                println!("divergences:");
                for line in history {
                    println!("  {line}");
                }
            }
        }
    }
    if results.iter().all(|(_, result)| result.is_err()) {
        return Err("no replica answered".to_string());
    }
    Ok(())
}

/// The status of the replica that says it leads, among `results`.
fn leader_of(results: &[(String, Result<ReplicaStatus, String>)]) -> Option<&ReplicaStatus> {
    results
        .iter()
        .filter_map(|(_, result)| result.as_ref().ok())
        .find(|status| status.role == "leader")
}

/// The newest index where `status`'s replica agrees with a majority: as the leader sees it.
fn agreed_of(status: &ReplicaStatus, leader: Option<&ReplicaStatus>) -> Option<u64> {
    let leader = leader?;
    if leader.id == status.id {
        return Some(leader.audit.agreed);
    }
    leader.audit.peers.iter().find(|peer| peer.id == status.id).map(|peer| peer.agreed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_and_operations_parse() {
        let compare = parse_compare("value(lock) = free").expect("value");
        assert_eq!(compare.target, CompareTarget::Value(Bytes::from("free")));
        assert_eq!(compare.op, CompareOp::Equal);
        let compare = parse_compare("version(k) != 3").expect("version");
        assert_eq!((compare.op, compare.target), (CompareOp::NotEqual, CompareTarget::Version(3)));
        assert!(parse_compare("mod(k) ~ 3").is_err());
        assert!(parse_compare("size(k) = 3").is_err());
        assert!(parse_compare("version(k) = x").is_err());
        assert!(
            matches!(parse_operation("put k hello world"), Ok(Operation::Put(p)) if p.value == "hello world")
        );
        assert!(matches!(parse_operation("del k"), Ok(Operation::Delete(_))));
        assert!(parse_operation("get").is_err());
        assert!(parse_operation("del k v").is_err());
    }

    #[test]
    fn without_a_leader_status_names_who_holds_out_and_a_lost_majority() {
        let replica = |id: u64, lost: Option<u64>| ReplicaStatus {
            id,
            voters: vec![1, 2, 3],
            lost_through: lost,
            ..ReplicaStatus::default()
        };
        let answered =
            |replicas: Vec<ReplicaStatus>| -> Vec<(String, Result<ReplicaStatus, String>)> {
                replicas.into_iter().map(|status| (format!("r{}", status.id), Ok(status))).collect()
            };
        let one_short = election_diagnosis(&answered(vec![
            replica(1, Some(40)),
            replica(2, None),
            replica(3, None),
        ]));
        assert!(
            one_short[1].contains("replica 1: its log lost entries through 40"),
            "{one_short:?}"
        );
        assert!(!one_short.iter().any(|line| line.contains("of the 3 voters")), "{one_short:?}");
        let two_short = election_diagnosis(&answered(vec![
            replica(1, Some(40)),
            replica(2, Some(41)),
            replica(3, None),
        ]));
        assert!(
            two_short.iter().any(|line| line.contains("2 of the 3 voters ([1, 2])")),
            "{two_short:?}"
        );
        let led = election_diagnosis(&answered(vec![
            ReplicaStatus { leader: Some(3), ..replica(1, Some(40)) },
            replica(2, Some(41)),
        ]));
        assert!(led.is_empty(), "a leader is known: {led:?}");
    }
}
