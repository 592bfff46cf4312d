//! Data-driven protocol scripts: a command, `----`, and the exact output it must produce.
//!
//! ```text
//! # comments and blank lines before a command are kept
//! cluster voters=1,2,3
//! ----
//! ok
//! ```
//!
//! Set `LOCKSTEP_REWRITE=1` to rewrite the expected outputs from what the code does now; then
//! read the diff before committing it.

use std::fmt::Write as _;
use std::path::Path;

use bytes::Bytes;
use lockstep_core::message::{
    AppendRequest, AppendResponse, Heartbeat, HeartbeatResponse, VoteRequest, VoteResponse,
};
use lockstep_core::{
    Command, Config, Entry, EntryPayload, HardState, InitialState, LogIndex, Message, MessageBody,
    Node, NodeId, Output, ReadId, ReadMode, Term,
};

use super::Cluster;

/// One command of a script.
struct Case {
    preamble: Vec<String>,
    command: String,
    expected: String,
    line: usize,
}

fn parse(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut preamble = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((number, line)) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            preamble.push(line.to_string());
            continue;
        }
        let command = line.to_string();
        match lines.next() {
            Some((_, "----")) => {}
            _ => panic!("line {}: expected ---- after the command {command:?}", number + 1),
        }
        let mut expected = String::new();
        while let Some((_, output)) = lines.peek() {
            if output.is_empty() {
                break;
            }
            expected.push_str(output);
            expected.push('\n');
            lines.next();
        }
        cases.push(Case {
            preamble: std::mem::take(&mut preamble),
            command,
            expected,
            line: number + 1,
        });
    }
    cases
}

/// Runs the script at `path`, comparing (or with `LOCKSTEP_REWRITE` set, rewriting) outputs.
pub fn run_file(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path:?}: {error}"));
    let rewrite = std::env::var_os("LOCKSTEP_REWRITE").is_some();
    let mut runner = Runner { cluster: None };
    let mut rewritten = String::new();
    for case in parse(&text) {
        let actual = runner.run(&case.command);
        let actual = if actual.ends_with('\n') { actual } else { format!("{actual}\n") };
        for line in &case.preamble {
            rewritten.push_str(line);
            rewritten.push('\n');
        }
        writeln!(rewritten, "{}\n----\n{}", case.command, actual.trim_end()).ok();
        if !rewrite && actual != case.expected {
            panic!(
                "{}:{}: `{}` produced\n{}\nbut the script expects\n{}\n(set LOCKSTEP_REWRITE=1 to \
                 rewrite the expected output)",
                path.display(),
                case.line,
                case.command,
                actual,
                case.expected
            );
        }
    }
    if rewrite {
        // Keep a single trailing newline.
        let rewritten = format!("{}\n", rewritten.trim_end());
        std::fs::write(path, rewritten).unwrap_or_else(|error| panic!("{path:?}: {error}"));
    }
}

/// Formats an output as the scripts show it: one line per action.
pub fn format_output(output: &Output) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(from) = output.persist.truncate_from {
        lines.push(format!("  persist: truncate from {from}"));
    }
    for entry in &output.persist.entries {
        lines.push(format!("  persist: append {entry}"));
    }
    if let Some(hard_state) = output.persist.hard_state {
        lines.push(format!("  persist: hard state {hard_state}"));
    }
    for message in &output.messages {
        lines.push(format!("  send: {message}"));
    }
    for message in &output.messages_after_persist {
        lines.push(format!("  send after persist: {message}"));
    }
    for entry in &output.committed {
        lines.push(format!("  apply: {entry}"));
    }
    for read in &output.reads {
        lines.push(format!("  read ready: id={} index={}", read.id, read.index));
    }
    for event in &output.events {
        lines.push(format!("  event: {event}"));
    }
    lines
}

struct Runner {
    cluster: Option<Cluster>,
}

/// A command's words: positional arguments and `key=value` options.
struct Args<'a> {
    positional: Vec<&'a str>,
    options: Vec<(&'a str, &'a str)>,
}

impl<'a> Args<'a> {
    fn parse(words: &[&'a str]) -> Args<'a> {
        let mut positional = Vec::new();
        let mut options = Vec::new();
        for word in words {
            match word.split_once('=') {
                Some((key, value)) => options.push((key, value)),
                None => positional.push(*word),
            }
        }
        Args { positional, options }
    }

    fn option(&self, key: &str) -> Option<&'a str> {
        self.options.iter().find(|(name, _)| *name == key).map(|(_, value)| *value)
    }

    fn id(&self, position: usize) -> NodeId {
        NodeId(parse_number(self.positional.get(position).copied().unwrap_or("missing id")))
    }

    fn ids(&self) -> Vec<NodeId> {
        self.positional.iter().map(|word| NodeId(parse_number(word))).collect()
    }
}

fn parse_number(word: &str) -> u64 {
    word.parse().unwrap_or_else(|_| panic!("not a number: {word:?}"))
}

fn parse_list(list: &str) -> Vec<u64> {
    if list.is_empty() {
        return Vec::new();
    }
    list.split(',').map(parse_number).collect()
}

/// Parses `index@term`.
fn parse_position(text: &str) -> (LogIndex, Term) {
    let (index, term) =
        text.split_once('@').unwrap_or_else(|| panic!("expected index@term: {text:?}"));
    (LogIndex(parse_number(index)), Term(parse_number(term)))
}

impl Runner {
    fn cluster(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("the script must start with `cluster`")
    }

    fn run(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (name, rest) = words.split_first().expect("empty command");
        let args = Args::parse(rest);
        let mut out = Vec::new();
        match *name {
            "cluster" => {
                let voters = parse_list(args.option("voters").expect("voters=..."));
                let configure = |config: &mut Config| configure(config, &args);
                self.cluster = Some(Cluster::new(&voters, configure));
                out.push("ok".to_string());
            }
            "set-log" => {
                let id = args.id(0);
                let terms = parse_list(args.option("terms").unwrap_or(""));
                let commit = LogIndex(args.option("commit").map_or(0, parse_number));
                let term = Term(
                    args.option("term").map_or(terms.last().copied().unwrap_or(0), parse_number),
                );
                self.set_log(id, &terms, term, commit);
                out.push("ok".to_string());
            }
            "tick" | "tick-heartbeat" | "tick-election" => {
                let id = args.id(0);
                let config = self.cluster().node(id).config().clone();
                let count = match *name {
                    "tick-heartbeat" => config.heartbeat_interval_ticks,
                    "tick-election" => config.election_timeout_ticks_min,
                    _ => args.positional.get(1).map_or(1, |word| parse_number(word)),
                };
                for _ in 0..count {
                    self.cluster().node_mut(id).tick();
                    self.cluster().check();
                }
                out.push(state_line(self.cluster().node(id)));
            }
            "campaign" => {
                let id = args.id(0);
                self.cluster().tick_until_campaign(id);
                out.push(state_line(self.cluster().node(id)));
            }
            "propose" => {
                let id = args.id(0);
                let commands: Vec<Bytes> =
                    args.positional[1..].iter().map(|word| Bytes::from(word.to_string())).collect();
                let timestamp = args.option("time").map_or(0, parse_number);
                match self.cluster().node_mut(id).propose(commands, timestamp) {
                    Ok(proposed) => out.push(format!(
                        "proposed {}..{} at term {}",
                        proposed.first_index, proposed.last_index, proposed.term
                    )),
                    Err(error) => out.push(format!("rejected: {error}")),
                }
                self.cluster().check();
            }
            "read-index" => {
                let id = args.id(0);
                let read = ReadId(parse_number(args.positional[1]));
                self.cluster().node_mut(id).read_index(read);
                self.cluster().check();
                out.push("ok".to_string());
            }
            "transfer-leadership" => {
                let id = args.id(0);
                let target = args.id(1);
                self.cluster().node_mut(id).transfer_leadership(target);
                self.cluster().check();
                out.push("ok".to_string());
            }
            "process-ready" => {
                for id in args.ids() {
                    let output = self.cluster().process_ready(id);
                    out.push(format!("> {id} handling output"));
                    out.extend(format_output(&output));
                }
            }
            "take-output" => {
                // Hand the output to the driver without making its writes durable yet.
                for id in args.ids() {
                    let output = self.cluster().take_output(id);
                    out.push(format!("> {id} handling output (not synced)"));
                    out.extend(format_output(&output));
                }
            }
            "sync" => {
                let id = args.id(0);
                let write = self.cluster().replicas[&id].unsynced.front().cloned();
                match write {
                    Some(write) => {
                        self.cluster().sync_one(id);
                        let last =
                            write.persist.entries.last().map_or("no entries".to_string(), |e| {
                                format!("last entry {}@{}", e.index, e.term)
                            });
                        out.push(format!("synced a write of {id} ({last})"));
                        for message in &write.messages_after_persist {
                            out.push(format!("  send after persist: {message}"));
                        }
                    }
                    None => out.push(format!("{id} has no unsynced write")),
                }
                let node = self.cluster().node(id);
                out.push(format!(
                    "  persisted={} commit={}",
                    node.persisted_index(),
                    node.commit_index()
                ));
            }
            "apply" => {
                let id = args.id(0);
                self.cluster().apply(id);
                out.push(format!("applied={}", self.cluster().node(id).applied_index()));
            }
            "deliver-msgs" => {
                let targets = args.ids();
                let filter = if targets.is_empty() { None } else { Some(targets.as_slice()) };
                let (delivered, dropped) = self.cluster().deliver_all(filter);
                out.extend(delivered.iter().map(|message| format!("{message}")));
                out.extend(dropped.iter().map(|message| format!("dropped: {message}")));
                if delivered.is_empty() && dropped.is_empty() {
                    out.push("no messages".to_string());
                }
            }
            "drop-msgs" => {
                let targets = args.ids();
                let cluster = self.cluster();
                let (drop, keep): (Vec<Message>, Vec<Message>) = cluster
                    .network
                    .drain(..)
                    .partition(|message| targets.is_empty() || targets.contains(&message.to));
                cluster.network = keep.into();
                out.extend(drop.iter().map(|message| format!("dropped: {message}")));
            }
            "stabilize" => {
                out.extend(self.cluster().stabilize());
            }
            "isolate" => {
                let id = args.id(0);
                self.cluster().isolate(id);
                out.push("ok".to_string());
            }
            "partition" => {
                // partition 1,2 3,4,5
                let a: Vec<NodeId> =
                    parse_list(args.positional[0]).into_iter().map(NodeId).collect();
                let b: Vec<NodeId> =
                    parse_list(args.positional[1]).into_iter().map(NodeId).collect();
                self.cluster().partition(&a, &b);
                out.push("ok".to_string());
            }
            "heal" => {
                self.cluster().heal();
                out.push("ok".to_string());
            }
            "crash" => {
                let id = args.id(0);
                self.cluster().crash_and_restart(id);
                out.push(state_line(self.cluster().node(id)));
            }
            "crash-losing" => {
                // Restarts as if storage had found damage and set the log aside.
                let id = args.id(0);
                self.cluster().crash_and_restart_losing(id, true);
                out.push(state_line(self.cluster().node(id)));
            }
            "status" => {
                for id in args.ids() {
                    out.extend(status_lines(self.cluster().node(id)));
                }
            }
            "raft-state" => {
                let cluster = self.cluster();
                for id in cluster.ids() {
                    out.push(state_line(cluster.node(id)));
                }
            }
            "log" => {
                let id = args.id(0);
                let node = self.cluster().node(id);
                out.push(format!("commit={} last={}", node.commit_index(), node.last_index()));
                for entry in node.log_entries() {
                    out.push(format!("{entry}"));
                }
            }
            "inject" => {
                let message = parse_message(&args);
                out.push(format!("step {message}"));
                let to = message.to;
                self.cluster().node_mut(to).step(message);
                self.cluster().check();
            }
            "stats" => {
                let id = args.id(0);
                out.push(format!("{:?}", self.cluster().node(id).stats()));
            }
            other => panic!("unknown command {other:?}"),
        }
        let mut text = out.join("\n");
        if text.is_empty() {
            text.push_str("ok");
        }
        text.push('\n');
        text
    }

    /// Replaces replica `id` with one whose durable log has the given terms.
    fn set_log(&mut self, id: NodeId, terms: &[u64], term: Term, commit: LogIndex) {
        let entries: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(position, entry_term)| Entry {
                term: Term(*entry_term),
                index: LogIndex(position as u64 + 1),
                payload: EntryPayload::Command(Command {
                    data: Bytes::from(format!("t{entry_term}")),
                    timestamp_millis: 0,
                }),
            })
            .collect();
        let cluster = self.cluster();
        let membership = cluster.membership.clone();
        let replica = cluster.replica_mut(id);
        replica.disk.entries = entries.clone();
        replica.disk.hard_state = HardState { term, vote: None, commit };
        let initial = InitialState {
            hard_state: replica.disk.hard_state,
            snapshot: None,
            entries,
            membership,
            applied: LogIndex::ZERO,
            lost_through: None,
            lost_term_max: None,
        };
        replica.node = Node::new(replica.config.clone(), initial).expect("valid log");
        replica.applied.clear();
        replica.to_apply.clear();
    }
}

fn configure(config: &mut Config, args: &Args) {
    if let Some(value) = args.option("pre-vote") {
        config.pre_vote = value == "true";
    }
    if let Some(value) = args.option("check-quorum") {
        config.check_quorum = value == "true";
    }
    if let Some(value) = args.option("election") {
        let bounds = parse_list(value);
        config.election_timeout_ticks_min = bounds[0];
        config.election_timeout_ticks_max = bounds[1];
    }
    if let Some(value) = args.option("heartbeat") {
        config.heartbeat_interval_ticks = parse_number(value);
    }
    if let Some(value) = args.option("inflight") {
        config.messages_in_flight_max = parse_number(value) as usize;
    }
    if let Some(value) = args.option("append-bytes") {
        config.append_bytes_max = parse_number(value);
    }
    if let Some(value) = args.option("lease-drift") {
        config.read_mode = ReadMode::Lease { clock_drift_ticks_max: parse_number(value) };
    }
}

fn state_line(node: &Node) -> String {
    let leader = node.leader().map_or("none".to_string(), |leader| leader.to_string());
    format!("{} is {} at term {}, leader {}", node.id(), node.role(), node.term(), leader)
}

fn status_lines(node: &Node) -> Vec<String> {
    let mut lines = vec![state_line(node)];
    lines.push(format!(
        "  last={} commit={} persisted={} applied={}",
        node.last_index(),
        node.commit_index(),
        node.persisted_index(),
        node.applied_index()
    ));
    if let Some(through) = node.lost_through() {
        lines.push(format!("  lost entries through {through}: out of elections"));
    }
    for follower in node.membership().members() {
        if let Some(progress) = node.progress(follower) {
            lines.push(format!(
                "  {follower}: {:?} match={} next={} inflight={}",
                progress.state,
                progress.match_index,
                progress.next_index,
                progress.inflights.count()
            ));
        }
    }
    lines
}

/// Parses `inject FROM TO KIND term=N ...` into a message.
fn parse_message(args: &Args) -> Message {
    let from = args.id(0);
    let to = args.id(1);
    let kind = args.positional.get(2).copied().expect("message kind");
    let term = Term(args.option("term").map_or(0, parse_number));
    let vote_request = || {
        let (last_log_index, last_log_term) = parse_position(args.option("last").unwrap_or("0@0"));
        VoteRequest {
            last_log_index,
            last_log_term,
            leadership_transfer: args.option("transfer") == Some("true"),
        }
    };
    let body = match kind {
        "Vote" => MessageBody::Vote(vote_request()),
        "PreVote" => MessageBody::PreVote(vote_request()),
        "VoteResponse" => MessageBody::VoteResponse(VoteResponse {
            granted: args.option("granted") == Some("true"),
        }),
        "PreVoteResponse" => MessageBody::PreVoteResponse(VoteResponse {
            granted: args.option("granted") == Some("true"),
        }),
        "Append" => {
            let (prev_index, prev_term) = parse_position(args.option("prev").unwrap_or("0@0"));
            let entries = args
                .option("entries")
                .unwrap_or("")
                .split(',')
                .filter(|text| !text.is_empty())
                .map(|text| {
                    let (index, term) = parse_position(text);
                    Entry {
                        term,
                        index,
                        payload: EntryPayload::Command(Command {
                            data: Bytes::from(format!("t{}", term)),
                            timestamp_millis: 0,
                        }),
                    }
                })
                .collect();
            let commit = LogIndex(args.option("commit").map_or(0, parse_number));
            MessageBody::Append(AppendRequest { prev_index, prev_term, entries, commit })
        }
        "AppendResponse" => match args.option("match") {
            Some(index) => MessageBody::AppendResponse(AppendResponse::Accepted {
                match_index: LogIndex(parse_number(index)),
            }),
            None => {
                let (hint_index, hint_term) = parse_position(args.option("hint").unwrap_or("0@0"));
                MessageBody::AppendResponse(AppendResponse::Rejected {
                    rejected_index: LogIndex(args.option("rejected").map_or(0, parse_number)),
                    hint_index,
                    hint_term,
                    lost_entries: args.option("lost").map(parse_number),
                })
            }
        },
        "Heartbeat" => MessageBody::Heartbeat(Heartbeat {
            lost_check: None,
            commit: LogIndex(args.option("commit").map_or(0, parse_number)),
            read_round: args.option("round").map_or(0, parse_number),
        }),
        "HeartbeatResponse" => MessageBody::HeartbeatResponse(HeartbeatResponse {
            read_round: args.option("round").map_or(0, parse_number),
        }),
        "TimeoutNow" => MessageBody::TimeoutNow,
        "ReadIndex" => MessageBody::ReadIndex(lockstep_core::message::ReadIndexRequest {
            request: args.option("request").map_or(0, parse_number),
        }),
        other => panic!("cannot inject {other:?}"),
    };
    Message { from, to, term, body }
}
