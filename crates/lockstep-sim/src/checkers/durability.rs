//! Durability: a write acknowledged to a client is never lost. Once the faults heal and every
//! replica has caught up, each one must have applied every acknowledged write.

use std::collections::BTreeSet;

/// Remembers acknowledged writes.
#[derive(Debug, Default)]
pub struct Durability {
    acknowledged: BTreeSet<(u64, u64)>,
}

impl Durability {
    /// A checker with nothing acknowledged.
    pub fn new() -> Durability {
        Durability::default()
    }

    /// Request `sequence` of session `client` was acknowledged as applied.
    pub fn acknowledged(&mut self, client: u64, sequence: u64) {
        self.acknowledged.insert((client, sequence));
    }

    /// How many writes were acknowledged.
    pub fn acknowledged_count(&self) -> usize {
        self.acknowledged.len()
    }

    /// Replica `node`, caught up, has applied request `sequence` of session `client` when
    /// `applied(client, sequence)` (for example: its session table has recorded it).
    pub fn check_replica(
        &self,
        node: u64,
        applied: impl Fn(u64, u64) -> bool,
    ) -> Result<(), String> {
        let lost: Vec<&(u64, u64)> = self
            .acknowledged
            .iter()
            .filter(|(client, sequence)| !applied(*client, *sequence))
            .collect();
        if lost.is_empty() {
            return Ok(());
        }
        Err(format!(
            "durability: replica {node} never applied {} acknowledged write(s), e.g. (session, \
             request) {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let mut checker = Durability::new();
        checker.acknowledged(1, 1);
        checker.acknowledged(1, 2);
        let mut applied = BTreeSet::from([(1, 1), (1, 2), (2, 1)]);
        assert!(checker.check_replica(1, |c, s| applied.contains(&(c, s))).is_ok());
        applied.remove(&(1, 2));
        assert!(checker.check_replica(1, |c, s| applied.contains(&(c, s))).is_err());
    }
}
