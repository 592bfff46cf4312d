//! The safety properties of the Raft paper (figure 3), checked over a run.
//!
//! Each check names the property it enforces, so a test can tell which one broke:
//! - **election safety**: at most one leader is elected in a term (§5.2);
//! - **leader append-only**: a leader never overwrites or deletes entries in its log (§5.3);
//! - **log matching**: if two logs hold an entry with the same index and term, they are
//!   identical up to that index (§5.3);
//! - **leader completeness**: an entry committed in a term is in the log of every leader of a
//!   later term (§5.4);
//! - **state machine safety**: no two replicas apply different entries at the same index
//!   (§5.4.3), and no index is ever committed with two different entries.

use std::collections::BTreeMap;

use lockstep_core::{Entry, LogIndex, Node, NodeId, Role, Term};

/// What the checker sees of one replica at one moment.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub commit: LogIndex,
    pub entries: Vec<Entry>,
}

impl NodeView {
    pub fn of(node: &Node) -> NodeView {
        NodeView {
            id: node.id(),
            role: node.role(),
            term: node.term(),
            commit: node.commit_index(),
            entries: node.log_entries().cloned().collect(),
        }
    }
}

#[derive(Debug, Default)]
pub struct SafetyChecker {
    /// The leader seen in each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Each current leader's log when it was last observed.
    leader_logs: BTreeMap<NodeId, (Term, Vec<Entry>)>,
    /// Every entry seen committed, with the term of the replica that saw it.
    committed: BTreeMap<LogIndex, (Entry, Term)>,
    /// Every entry seen applied.
    applied: BTreeMap<LogIndex, Entry>,
}

impl SafetyChecker {
    /// Checks every property against the replicas as they are now.
    pub fn observe(&mut self, nodes: &[NodeView]) -> Result<(), String> {
        self.check_election_safety(nodes)?;
        self.check_leader_append_only(nodes)?;
        check_log_matching(nodes)?;
        self.record_committed(nodes)?;
        self.check_leader_completeness(nodes)?;
        Ok(())
    }

    fn check_election_safety(&mut self, nodes: &[NodeView]) -> Result<(), String> {
        for node in nodes.iter().filter(|node| node.role == Role::Leader) {
            let seen = *self.leaders.entry(node.term).or_insert(node.id);
            if seen != node.id {
                return Err(format!(
                    "election safety: term {} has two leaders, {} and {}",
                    node.term, seen, node.id
                ));
            }
        }
        Ok(())
    }

    fn check_leader_append_only(&mut self, nodes: &[NodeView]) -> Result<(), String> {
        for node in nodes {
            if node.role != Role::Leader {
                self.leader_logs.remove(&node.id);
                continue;
            }
            let current: Vec<Entry> = node.entries.clone();
            if let Some((term, previous)) = self.leader_logs.get(&node.id) {
                if *term == node.term {
                    let kept = previous.len() <= current.len()
                        && previous.iter().zip(&current).all(|(a, b)| a == b);
                    if !kept {
                        return Err(format!(
                            "leader append-only: leader {} of term {} changed its log",
                            node.id, term
                        ));
                    }
                }
            }
            self.leader_logs.insert(node.id, (node.term, current));
        }
        Ok(())
    }

    fn record_committed(&mut self, nodes: &[NodeView]) -> Result<(), String> {
        for node in nodes {
            for entry in node.entries.iter().take_while(|entry| entry.index <= node.commit) {
                match self.committed.get(&entry.index) {
                    Some((seen, _)) if seen != entry => {
                        return Err(format!(
                            "state machine safety: index {} committed as {} and as {} (at node {})",
                            entry.index, seen, entry, node.id
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.committed.insert(entry.index, (entry.clone(), node.term));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_leader_completeness(&self, nodes: &[NodeView]) -> Result<(), String> {
        for leader in nodes.iter().filter(|node| node.role == Role::Leader) {
            for (index, (entry, seen_in_term)) in &self.committed {
                if *seen_in_term > leader.term {
                    continue;
                }
                let held = leader.entries.iter().find(|held| held.index == *index);
                if held != Some(entry) {
                    return Err(format!(
                        "leader completeness: leader {} of term {} lacks committed entry {}",
                        leader.id, leader.term, entry
                    ));
                }
            }
        }
        Ok(())
    }

    /// Records what replica `id` has applied (its whole applied sequence since it started).
    pub fn record_applied(&mut self, id: NodeId, entries: &[Entry]) -> Result<(), String> {
        for entry in entries {
            match self.applied.get(&entry.index) {
                Some(seen) if seen != entry => {
                    return Err(format!(
                        "state machine safety: replica {id} applied {entry} where another applied {seen}"
                    ));
                }
                Some(_) => {}
                None => {
                    self.applied.insert(entry.index, entry.clone());
                }
            }
        }
        Ok(())
    }

    /// How many distinct indexes were seen committed.
    pub fn committed_count(&self) -> usize {
        self.committed.len()
    }

    /// How many terms had a leader.
    pub fn terms_with_leader(&self) -> usize {
        self.leaders.len()
    }
}

/// Log matching: wherever two logs agree on an entry's term, they agree on everything before.
fn check_log_matching(nodes: &[NodeView]) -> Result<(), String> {
    let logs: Vec<(NodeId, Vec<&Entry>)> =
        nodes.iter().map(|node| (node.id, node.entries.iter().collect())).collect();
    for (position, (a_id, a)) in logs.iter().enumerate() {
        for (b_id, b) in &logs[position + 1..] {
            let shared = a.len().min(b.len());
            let Some(last_same_term) = (0..shared).rev().find(|i| a[*i].term == b[*i].term) else {
                continue;
            };
            if let Some(i) = (0..=last_same_term).find(|i| a[*i] != b[*i]) {
                return Err(format!(
                    "log matching: replicas {a_id} and {b_id} agree on entry {} but differ at {}: {} vs {}",
                    a[last_same_term], a[i].index, a[i], b[i]
                ));
            }
        }
    }
    Ok(())
}
