//! Log matching: if two logs contain an entry with the same index and term, the logs are
//! identical in all entries up through that index (Raft, §5.3 and Figure 3). Checked across
//! every pair of live replicas' logs.

use super::EntryId;

/// Checks pairs of logs.
#[derive(Debug, Default)]
pub struct LogMatching;

impl LogMatching {
    /// Checks logs given as (replica id, index of the first entry held, entries from there);
    /// entries below the first are in a snapshot and not compared.
    pub fn check(&self, logs: &[(u64, u64, Vec<EntryId>)]) -> Result<(), String> {
        for (a, (id_a, first_a, log_a)) in logs.iter().enumerate() {
            for (id_b, first_b, log_b) in &logs[a + 1..] {
                check_pair((*id_a, *first_a, log_a), (*id_b, *first_b, log_b))?;
            }
        }
        Ok(())
    }
}

fn check_pair(a: (u64, u64, &[EntryId]), b: (u64, u64, &[EntryId])) -> Result<(), String> {
    let (id_a, first_a, log_a) = a;
    let (id_b, first_b, log_b) = b;
    let at = |first: u64, log: &[EntryId], index: u64| log[(index - first) as usize];
    let low = first_a.max(first_b);
    let high = (first_a + log_a.len() as u64).min(first_b + log_b.len() as u64);
    // The highest index both hold with the same term: everything both hold up to it must be
    // identical.
    let Some(top) = (low..high)
        .rev()
        .find(|&index| at(first_a, log_a, index).term == at(first_b, log_b, index).term)
    else {
        return Ok(());
    };
    for index in low..=top {
        let (x, y) = (at(first_a, log_a, index), at(first_b, log_b, index));
        if x != y {
            return Err(format!(
                "log matching: replicas {id_a} and {id_b} agree on index {top} (term {}) but \
                 differ at index {index}: term {} vs {}{}",
                at(first_a, log_a, top).term,
                x.term,
                y.term,
                if x.term == y.term { " with different contents" } else { "" }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(terms: &[(u64, u64)]) -> Vec<EntryId> {
        terms.iter().map(|&(term, hash)| EntryId { term, hash }).collect()
    }

    #[test]
    fn diverging_suffixes_are_fine_and_a_hidden_difference_is_caught() {
        let checker = LogMatching;
        let a = log(&[(1, 10), (1, 11), (2, 12)]);
        let b = log(&[(1, 10), (1, 11), (3, 13), (3, 14)]);
        assert!(checker.check(&[(1, 1, a.clone()), (2, 1, b)]).is_ok());
        let c = log(&[(1, 10), (1, 99), (2, 12)]);
        assert!(checker.check(&[(1, 1, a.clone()), (3, 1, c)]).is_err());
        let d = log(&[(1, 10), (2, 5), (2, 12)]);
        assert!(checker.check(&[(1, 1, a.clone()), (4, 1, d)]).is_err());
        // A compacted log is compared where both hold entries.
        let e = log(&[(1, 11), (2, 12)]);
        assert!(checker.check(&[(1, 1, a.clone()), (5, 2, e)]).is_ok());
        let f = log(&[(1, 98), (2, 12)]);
        assert!(checker.check(&[(1, 1, a), (6, 2, f)]).is_err());
    }
}
