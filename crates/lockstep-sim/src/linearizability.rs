//! A linearizability checker for key-value histories.
//!
//! A history is linearizable if every operation can be given one instant between its call and
//! its return, such that applying the operations one at a time in the order of those instants
//! to a single copy of the store gives every operation the result it actually returned
//! (Herlihy and Wing, 1990).
//!
//! The search is the Wing–Gong algorithm with Lowe's improvements ("Testing for
//! linearizability", 2017): walk the history's events in time order; at each call, try to
//! linearize that operation now (if the model agrees with its result) and continue, or skip
//! it and try a later one; at a return of an operation not yet linearized, backtrack.
//! Configurations already explored — the set of linearized operations together with the model
//! state — are remembered and never explored again.
//!
//! Two things keep it fast and honest:
//! - **Split per key.** Every operation touches one key, and linearizability is local (a
//!   history is linearizable iff each object's sub-history is), so each key is checked alone.
//! - **Requests with no answer** (a client timed out, or crashed) may have taken effect or
//!   not. Such an operation has no return event: it may be linearized at any instant after its
//!   call, with any result, or never. One known to have taken effect whose answer cannot be
//!   judged returns [`Output::Unknown`]: it is linearized before its return, with any result.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

/// A value stored under a key.
pub type Value = u64;

/// A key.
pub type Key = u64;

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Input {
    /// Set the key's value.
    Put(Value),
    /// Read the key.
    Get,
    /// Set the key to `new` if it currently holds `expected` (`None`: is absent).
    CompareAndSet {
        /// The value the key must hold.
        expected: Option<Value>,
        /// The value to store.
        new: Value,
    },
    /// Remove the key.
    Delete,
}

/// What the store answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Output {
    /// A put or delete was applied.
    Done,
    /// The value a read saw.
    Value(Option<Value>),
    /// Whether a compare-and-set applied.
    Swapped(bool),
    /// Never a store's answer: the operation took effect before it returned, but its answer
    /// cannot be judged (a write answered by a replica whose state had diverged). The checker
    /// accepts any result for it.
    Unknown,
}

/// One client operation as recorded: when it was called, and when and how it returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued it (for reports).
    pub client: u64,
    /// The key it touches.
    pub key: Key,
    /// What was asked.
    pub input: Input,
    /// When it was called.
    pub call: u64,
    /// When it returned and with what, or `None` if no answer was ever seen.
    pub returned: Option<(u64, Output)>,
}

/// Applies `input` to a register holding `state`: the new state and the output.
fn apply(state: Option<Value>, input: &Input) -> (Option<Value>, Output) {
    match input {
        Input::Put(value) => (Some(*value), Output::Done),
        Input::Get => (state, Output::Value(state)),
        Input::CompareAndSet { expected, new } => {
            if state == *expected {
                (Some(*new), Output::Swapped(true))
            } else {
                (state, Output::Swapped(false))
            }
        }
        Input::Delete => (None, Output::Done),
    }
}

/// Why a history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key whose operations cannot be ordered.
    pub key: Key,
    /// A small sub-history of that key that is still not linearizable, in call order.
    pub history: Vec<Operation>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "not linearizable: key {} ({} operations):", self.key, self.history.len())?;
        for operation in &self.history {
            write!(
                f,
                "  client {} {:?} called at {}",
                operation.client, operation.input, operation.call
            )?;
            match &operation.returned {
                Some((time, output)) => writeln!(f, ", returned {output:?} at {time}")?,
                None => writeln!(f, ", no answer")?,
            }
        }
        Ok(())
    }
}

/// How much searching one key may take before the checker gives up.
pub const STEPS_MAX: u64 = 500_000_000;

/// The outcome of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable,
    /// Some key's is not.
    Violation(Violation),
    /// The search for `key` exceeded [`STEPS_MAX`]; nothing was concluded.
    Unknown {
        /// The key.
        key: Key,
    },
}

/// Checks a whole history, key by key. A violation comes with a shrunk sub-history.
pub fn check(history: &[Operation]) -> Verdict {
    let mut by_key: BTreeMap<Key, Vec<Operation>> = BTreeMap::new();
    for operation in history {
        by_key.entry(operation.key).or_default().push(operation.clone());
    }
    for (key, operations) in by_key {
        match check_key(&operations) {
            Some(true) => {}
            Some(false) => {
                return Verdict::Violation(Violation { key, history: shrink(operations) });
            }
            None => return Verdict::Unknown { key },
        }
    }
    Verdict::Linearizable
}

/// Removes operations one at a time while the rest is still not linearizable.
fn shrink(mut operations: Vec<Operation>) -> Vec<Operation> {
    let mut position = 0;
    while position < operations.len() {
        let mut smaller = operations.clone();
        smaller.remove(position);
        if check_key(&smaller) == Some(false) {
            operations = smaller;
        } else {
            position += 1;
        }
    }
    operations.sort_by_key(|operation| operation.call);
    operations
}

#[derive(Clone, Copy, Debug)]
enum Event {
    Call(usize),
    Return(usize),
}

/// The configurations explored (linearized operations and the state after them), none of
/// which led to a linearization (or which is being explored now).
///
/// Operations with no answer are optional: one not linearized yet may still be linearized
/// later, or never. So a configuration with the same answered operations linearized and the
/// same state as one explored, but with a superset of its unanswered operations used, has no
/// future the explored one lacks, and is pruned too. Without this, a few unanswered writes
/// beside an operation pending across the whole history made the search explore every subset
/// of them at every point (2^16 subsets in one simulated history).
struct Seen {
    /// The operations with no answer that take part (at most 64; beyond that, configurations
    /// are compared exactly), each with its bit in the mask of those used.
    unanswered: Vec<(usize, u64)>,
    /// The linearized-set words with those operations' bits cleared.
    answered_mask: Vec<u64>,
    /// By the answered operations linearized and the state: the masks of unanswered
    /// operations used with which that configuration was explored.
    explored: HashMap<(Vec<u64>, Option<Value>), Vec<u64>>,
}

impl Seen {
    fn new(operations: &[Operation]) -> Seen {
        let unanswered: Vec<(usize, u64)> = operations
            .iter()
            .enumerate()
            .filter(|(_, operation)| operation.returned.is_none())
            .take(64)
            .enumerate()
            .map(|(bit, (id, _))| (id, 1u64 << bit))
            .collect();
        let mut answered_mask = vec![u64::MAX; operations.len().div_ceil(64)];
        for (id, _) in &unanswered {
            answered_mask[id / 64] &= !(1 << (id % 64));
        }
        Seen { unanswered, answered_mask, explored: HashMap::new() }
    }

    /// Records the configuration; false if it (or one at least as free) was explored.
    fn insert(&mut self, linearized: &[u64], state: Option<Value>) -> bool {
        let answered: Vec<u64> =
            linearized.iter().zip(&self.answered_mask).map(|(word, mask)| word & mask).collect();
        let used = self
            .unanswered
            .iter()
            .filter(|(id, _)| linearized[id / 64] & (1 << (id % 64)) != 0)
            .fold(0u64, |used, (_, bit)| used | bit);
        let masks = self.explored.entry((answered, state)).or_default();
        if masks.iter().any(|&explored| explored & !used == 0) {
            return false;
        }
        masks.retain(|&explored| used & !explored != 0);
        masks.push(used);
        true
    }
}

/// Checks one key's operations. `Some(true)`: linearizable; `Some(false)`: not; `None`: the
/// search was too long to finish.
fn check_key(operations: &[Operation]) -> Option<bool> {
    // Events in time order; at equal times returns come first (an operation that returned at
    // t precedes one called at t). Operations with no answer have no return event.
    let mut events: Vec<(u64, u8, Event)> = Vec::with_capacity(operations.len() * 2);
    for (id, operation) in operations.iter().enumerate() {
        events.push((operation.call, 1, Event::Call(id)));
        if let Some((time, _)) = &operation.returned {
            // An operation that returns the instant it was called still returns after its
            // own call (and so overlaps the calls at that instant).
            let order = if *time <= operation.call { 2 } else { 0 };
            events.push(((*time).max(operation.call), order, Event::Return(id)));
        }
    }
    events.sort_by_key(|(time, order, event)| {
        let id = match event {
            Event::Call(id) | Event::Return(id) => *id,
        };
        (*time, *order, id)
    });
    let events: Vec<Event> = events.into_iter().map(|(_, _, event)| event).collect();
    // A doubly linked list over the events, so linearized operations can be lifted out and
    // put back in O(1).
    let count = events.len();
    let head = count; // sentinel
    let mut next: Vec<usize> = (1..=count + 1).collect();
    let mut previous: Vec<usize> = (0..=count).map(|i| if i == 0 { head } else { i - 1 }).collect();
    next.resize(count + 1, count);
    next[head] = if count == 0 { head } else { 0 };
    if count > 0 {
        next[count - 1] = head;
        previous[0] = head;
    }
    previous[head] = if count == 0 { head } else { count - 1 };
    let mut return_position: Vec<Option<usize>> = vec![None; operations.len()];
    for (position, event) in events.iter().enumerate() {
        if let Event::Return(id) = event {
            return_position[*id] = Some(position);
        }
    }
    let lift = |next: &mut Vec<usize>, previous: &mut Vec<usize>, position: usize| {
        let (before, after) = (previous[position], next[position]);
        next[before] = after;
        previous[after] = before;
    };
    let unlift = |next: &mut Vec<usize>, previous: &mut Vec<usize>, position: usize| {
        let (before, after) = (previous[position], next[position]);
        next[before] = position;
        previous[after] = position;
    };

    let words = operations.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state: Option<Value> = None;
    let mut seen = Seen::new(operations);
    // The stack of linearized operations: (call position, state before it).
    let mut stack: Vec<(usize, Option<Value>)> = Vec::new();
    let mut cursor = next[head];
    let mut steps = 0u64;
    // Completed operations not yet linearized. When none is left, what remains are calls of
    // operations with no answer, which may never have taken effect: done.
    let mut completed_left = return_position.iter().filter(|position| position.is_some()).count();
    loop {
        steps += 1;
        if steps > STEPS_MAX {
            return None;
        }
        if completed_left == 0 {
            return Some(true);
        }
        if cursor != head {
            match events[cursor] {
                Event::Call(id) => {
                    let operation = &operations[id];
                    let (new_state, output) = apply(state, &operation.input);
                    let agrees = operation
                        .returned
                        .as_ref()
                        .is_none_or(|(_, seen)| *seen == output || *seen == Output::Unknown);
                    if agrees {
                        let mut marked = linearized.clone();
                        marked[id / 64] |= 1 << (id % 64);
                        if seen.insert(&marked, new_state) {
                            stack.push((cursor, state));
                            linearized = marked;
                            state = new_state;
                            lift(&mut next, &mut previous, cursor);
                            if let Some(position) = return_position[id] {
                                lift(&mut next, &mut previous, position);
                                completed_left -= 1;
                            }
                            cursor = next[head];
                            continue;
                        }
                    }
                    cursor = next[cursor];
                    continue;
                }
                Event::Return(_) => {}
            }
        }
        // A return of an operation not yet linearized (or the end of the list): undo the
        // last choice and try the next candidate after it.
        let Some((position, before)) = stack.pop() else { return Some(false) };
        let Event::Call(id) = events[position] else { return Some(false) };
        state = before;
        linearized[id / 64] &= !(1 << (id % 64));
        if let Some(return_at) = return_position[id] {
            unlift(&mut next, &mut previous, return_at);
            completed_left += 1;
        }
        unlift(&mut next, &mut previous, position);
        cursor = next[position];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, input: Input, call: u64, returned: Option<(u64, Output)>) -> Operation {
        Operation { client, key: 1, input, call, returned }
    }

    fn done(time: u64) -> Option<(u64, Output)> {
        Some((time, Output::Done))
    }

    fn read(time: u64, value: Option<Value>) -> Option<(u64, Output)> {
        Some((time, Output::Value(value)))
    }

    #[test]
    fn an_empty_history_is_linearizable() {
        assert_eq!(check(&[]), Verdict::Linearizable);
    }

    #[test]
    fn sequential_reads_see_the_last_write() {
        let history = [
            op(1, Input::Put(1), 0, done(1)),
            op(1, Input::Get, 2, read(3, Some(1))),
            op(1, Input::Put(2), 4, done(5)),
            op(1, Input::Get, 6, read(7, Some(2))),
        ];
        assert_eq!(check(&history), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_not_linearizable() {
        let history = [
            op(1, Input::Put(1), 0, done(1)),
            op(1, Input::Put(2), 2, done(3)),
            op(2, Input::Get, 4, read(5, Some(1))),
        ];
        let Verdict::Violation(violation) = check(&history) else { panic!("must be caught") };
        assert_eq!(violation.key, 1);
        // The shrunk history still shows the problem: the second write and the stale read.
        assert!(violation.history.len() <= 3);
        assert!(violation.to_string().contains("not linearizable"));
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The read overlaps both writes: it may see either.
        for seen in [Some(1), Some(2)] {
            let history = [
                op(1, Input::Put(1), 0, done(10)),
                op(2, Input::Put(2), 1, done(11)),
                op(3, Input::Get, 2, read(12, seen)),
            ];
            assert_eq!(check(&history), Verdict::Linearizable, "read {seen:?}");
        }
    }

    #[test]
    fn two_reads_cannot_see_writes_in_opposite_orders() {
        // Reads of 1 then 2 by one client, and 2 then 1 by another, all after both writes
        // began and ordered in real time: no single order explains them.
        let history = [
            op(1, Input::Put(1), 0, done(100)),
            op(2, Input::Put(2), 0, done(100)),
            op(3, Input::Get, 10, read(11, Some(1))),
            op(3, Input::Get, 12, read(13, Some(2))),
            op(4, Input::Get, 14, read(15, Some(1))),
        ];
        assert!(matches!(check(&history), Verdict::Violation(_)));
    }

    #[test]
    fn an_unanswered_write_may_have_taken_effect() {
        let history = [op(1, Input::Put(1), 0, None), op(2, Input::Get, 5, read(6, Some(1)))];
        assert_eq!(check(&history), Verdict::Linearizable);
    }

    #[test]
    fn an_unanswered_write_may_never_have_taken_effect() {
        let history = [
            op(1, Input::Put(1), 0, None),
            op(2, Input::Get, 5, read(6, None)),
            op(2, Input::Get, 7, read(8, None)),
        ];
        assert_eq!(check(&history), Verdict::Linearizable);
    }

    #[test]
    fn a_write_whose_answer_cannot_be_judged_took_effect_before_it_returned() {
        let unknown = Some((1, Output::Unknown));
        let seen =
            [op(1, Input::Put(1), 0, unknown.clone()), op(2, Input::Get, 2, read(3, Some(1)))];
        assert_eq!(check(&seen), Verdict::Linearizable);
        let missed =
            [op(1, Input::Put(1), 0, unknown.clone()), op(2, Input::Get, 2, read(3, None))];
        assert!(matches!(check(&missed), Verdict::Violation(_)));
        // Any result is accepted for it: a compare-and-set that did not apply, too.
        let cas = Input::CompareAndSet { expected: Some(7), new: 8 };
        let refused = [op(1, cas, 0, unknown), op(2, Input::Get, 2, read(3, None))];
        assert_eq!(check(&refused), Verdict::Linearizable);
    }

    #[test]
    fn an_unanswered_write_takes_effect_once_not_twice() {
        // Seen, then gone, then seen again without any other write: impossible.
        let history = [
            op(1, Input::Put(1), 0, None),
            op(2, Input::Get, 5, read(6, Some(1))),
            op(2, Input::Delete, 7, done(8)),
            op(2, Input::Get, 9, read(10, Some(1))),
        ];
        assert!(matches!(check(&history), Verdict::Violation(_)));
    }

    #[test]
    fn a_read_cannot_see_a_write_called_after_it_returned() {
        let history = [op(2, Input::Get, 0, read(1, Some(7))), op(1, Input::Put(7), 2, done(3))];
        assert!(matches!(check(&history), Verdict::Violation(_)));
    }

    #[test]
    fn compare_and_set_results_are_checked() {
        let swapped = |time, ok| Some((time, Output::Swapped(ok)));
        let ok_history = [
            op(1, Input::Put(1), 0, done(1)),
            op(2, Input::CompareAndSet { expected: Some(1), new: 2 }, 2, swapped(3, true)),
            op(3, Input::CompareAndSet { expected: Some(1), new: 3 }, 4, swapped(5, false)),
            op(1, Input::Get, 6, read(7, Some(2))),
        ];
        assert_eq!(check(&ok_history), Verdict::Linearizable);
        let both_swapped = [
            op(1, Input::Put(1), 0, done(1)),
            op(2, Input::CompareAndSet { expected: Some(1), new: 2 }, 2, swapped(10, true)),
            op(3, Input::CompareAndSet { expected: Some(1), new: 3 }, 2, swapped(10, true)),
        ];
        assert!(matches!(check(&both_swapped), Verdict::Violation(_)));
    }

    #[test]
    fn keys_are_independent() {
        let mut history =
            vec![op(1, Input::Put(1), 0, done(1)), op(1, Input::Get, 2, read(3, Some(1)))];
        let mut other = op(2, Input::Get, 2, read(3, None));
        other.key = 2;
        history.push(other);
        assert_eq!(check(&history), Verdict::Linearizable);
        let mut wrong = op(2, Input::Get, 4, read(5, Some(9)));
        wrong.key = 2;
        history.push(wrong);
        let Verdict::Violation(violation) = check(&history) else { panic!("must be caught") };
        assert_eq!(violation.key, 2);
        assert_eq!(violation.history.len(), 1, "shrunk to the one impossible read");
    }

    use proptest::prelude::*;

    /// A history that is linearizable by construction: operations take effect in a random
    /// order at random instants, and each is called before and returns after its instant.
    fn linearizable_history() -> impl Strategy<Value = Vec<Operation>> {
        prop::collection::vec((0u8..4, 0u64..4, 0u64..30, 0u64..30, 0u8..8), 1..40).prop_map(
            |raw| {
                let mut state = None;
                raw.into_iter()
                    .enumerate()
                    .map(|(position, (kind, value, before, after, answer))| {
                        let instant = position as u64 * 10 + 100;
                        let input = match kind {
                            0 => Input::Put(value),
                            1 => Input::Get,
                            2 => Input::CompareAndSet { expected: Some(value % 2), new: value },
                            _ => Input::Delete,
                        };
                        let (after_state, output) = apply(state, &input);
                        state = after_state;
                        let returned = (answer != 0).then_some((instant + after, output));
                        op(position as u64, input, instant - before, returned)
                    })
                    .collect()
            },
        )
    }

    proptest! {
        #[test]
        fn histories_built_linearizable_are_accepted(history in linearizable_history()) {
            prop_assert_eq!(check(&history), Verdict::Linearizable);
        }

        #[test]
        fn a_read_of_a_never_written_value_is_rejected(mut history in linearizable_history()) {
            let last = history.iter().map(|o| o.returned.as_ref().map_or(o.call, |(t, _)| *t)).max().unwrap_or(0);
            history.push(op(99, Input::Get, last + 1, read(last + 2, Some(1_000))));
            prop_assert!(matches!(check(&history), Verdict::Violation(_)));
        }
    }

    #[test]
    fn many_concurrent_clients_are_checked_quickly() {
        // 8 clients, 200 rounds of overlapping writes and reads of a counter-like register,
        // generated linearizable by construction: each round's effects happen in client order
        // inside the round's window, and reads return what that order gives.
        let mut history = Vec::new();
        let mut value: Option<Value> = None;
        let mut time = 0;
        for round in 0..200u64 {
            let start = time;
            for client in 0..8u64 {
                let input = if (round + client) % 3 == 0 {
                    Input::Get
                } else {
                    Input::Put(round * 8 + client)
                };
                let (after, output) = apply(value, &input);
                value = after;
                let returned =
                    if (round * 7 + client) % 11 == 0 { None } else { Some((start + 20, output)) };
                history.push(op(client, input, start + client, returned));
            }
            time += 30;
        }
        assert_eq!(check(&history), Verdict::Linearizable);
    }
}
