//! Log matching: if two logs contain an entry with the same index and term, the logs are
//! identical in all entries up through that index (Raft, §5.3 and Figure 3). Checked across
//! every pair of live replicas' logs.

use super::EntryId;

/// Checks pairs of logs.
#[derive(Debug, Default)]
pub struct LogMatching;

impl LogMatching {
    /// Checks logs given as entries from index 1 on (`logs[i][j]` is entry `j + 1` of replica
    /// `i`), named by replica id.
    pub fn check(&self, logs: &[(u64, Vec<EntryId>)]) -> Result<(), String> {
        for (a, (id_a, log_a)) in logs.iter().enumerate() {
            for (id_b, log_b) in &logs[a + 1..] {
                check_pair(*id_a, log_a, *id_b, log_b)?;
            }
        }
        Ok(())
    }
}

fn check_pair(id_a: u64, a: &[EntryId], id_b: u64, b: &[EntryId]) -> Result<(), String> {
    // The highest index at which both hold an entry of the same term: everything up to it
    // must be identical.
    let common = a.len().min(b.len());
    let Some(top) = (0..common).rev().find(|&i| a[i].term == b[i].term) else { return Ok(()) };
    for i in 0..=top {
        if a[i] != b[i] {
            return Err(format!(
                "log matching: replicas {id_a} and {id_b} agree on index {} (term {}) but \
                 differ at index {}: term {} vs {}{}",
                top + 1,
                a[top].term,
                i + 1,
                a[i].term,
                b[i].term,
                if a[i].term == b[i].term { " with different contents" } else { "" }
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
        assert!(checker.check(&[(1, a.clone()), (2, b)]).is_ok());
        let c = log(&[(1, 10), (1, 99), (2, 12)]);
        assert!(checker.check(&[(1, a.clone()), (3, c)]).is_err());
        let d = log(&[(1, 10), (2, 5), (2, 12)]);
        assert!(checker.check(&[(1, a), (4, d)]).is_err());
    }
}
