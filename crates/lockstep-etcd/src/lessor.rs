//! The leader's lessor: lease deadlines kept in the leader's memory, as etcd keeps them.
//!
//! A keep-alive costs no log entry. The leader answers it from memory (the lease now expires
//! its TTL after this moment), and only the leader decides that a lease has expired, writing
//! the expiry through the log. What the log records of a lease is its deadline as of its
//! grant, its last checkpoint, or its last renewal through the log, and whether it was
//! **renewed** since that deadline was recorded ([`lockstep_kv::LeaseInfo::renewed`]):
//!
//! - the first keep-alive after a grant or a checkpoint goes through the log, marking the
//!   lease renewed (one entry); later ones are answered from memory;
//! - every checkpoint interval the leader writes what remains of each renewed lease (one entry
//!   for many leases), which clears the mark;
//! - a new leader takes a lease that is not marked at its recorded deadline, plus an extension
//!   for the clock of the leader that recorded it: no leader promised more. A marked one may
//!   have been promised more than the log knows, by a leader now gone, so it gets its whole
//!   TTL again from the new leader's election, plus the extension (time for the old leader to
//!   learn it was deposed; etcd's rule).
//!
//! So a lease kept alive costs at most two entries per checkpoint interval however often it
//! is kept alive, and a lease whose holder is gone expires within its TTL of its last renewal,
//! extended at most once per leader change and never past the next checkpoint.
//!
//! What keeps the promises (the gateway's part, in `streams.rs` and `gateway.rs`):
//! - a promise is made while a quorum's confirmation that this replica leads in its term is
//!   fresh: the confirming round (a read-index read, `read_as_leader`) started less than
//!   `leader_confirmed_for` before (a tick less than the shortest election timeout, at most a
//!   quarter of the extension). A leader elected later was elected after that round started,
//!   so it gives the lease its whole TTL from a later moment. One round serves the renewals of
//!   half that time; the lease itself is read from the leader's applied state. The replica
//!   thread publishes its term and leader before the answers of each turn leave, so an answer
//!   given after it stepped down is never taken as the leader's;
//! - expiries and checkpoints name the term whose leader decided them, and the store ignores
//!   them in an entry of any other term: retried at a later leader, or left in a log a later
//!   leader commits, they cannot undo that leader's promises (a later leader promises only
//!   after its own first entry, so after any such entry, is applied);
//! - no renewal reads a lease between the moment a checkpoint measures what remains and the
//!   moment it is applied, or the replica no longer leads (the checkpoint holds renewals off,
//!   retrying a write that failed), so the log never records less than was promised;
//! - the mark is written only for a lease this leader finds alive, and renews any lease still
//!   held (the store does not judge it by a deadline an earlier leader recorded);
//! - memory is per term: a replica that leads again after another did has forgotten what it
//!   promised before, and starts as a new leader.

use std::collections::BTreeMap;

use lockstep_kv::LeaseDeadline;

/// What the leader remembers of leases in one term.
#[derive(Debug)]
pub(crate) struct Lessor {
    /// The term whose memory this is (0: none yet).
    term: u64,
    /// When this replica took leadership in `term` (milliseconds since the Unix epoch).
    promoted_millis: u64,
    /// Added to a marked lease's TTL at promotion: time for a deposed leader to stop promising.
    extension_millis: u64,
    /// How often renewed leases are checkpointed.
    checkpoint_every_millis: u64,
    /// When the last checkpoint was written (or, before the first, the promotion).
    checkpointed_millis: u64,
    /// Deadlines promised in memory during `term`, by lease.
    promised: BTreeMap<i64, u64>,
}

impl Lessor {
    pub(crate) fn new(extension_millis: u64, checkpoint_every_millis: u64) -> Lessor {
        Lessor {
            term: 0,
            promoted_millis: 0,
            extension_millis,
            checkpoint_every_millis,
            checkpointed_millis: 0,
            promised: BTreeMap::new(),
        }
    }

    /// This replica leads in `term` at `now`: a term it has not led in before starts afresh,
    /// forgetting every promise of an earlier one. False if `term` is older than one already
    /// entered (the caller's view of leadership is stale; it must not promise anything).
    pub(crate) fn enter(&mut self, term: u64, now_millis: u64) -> bool {
        if term < self.term {
            return false;
        }
        if term > self.term {
            self.term = term;
            self.promoted_millis = now_millis;
            self.checkpointed_millis = now_millis;
            self.promised.clear();
        }
        true
    }

    /// When `lease` expires, as this leader sees it: never before the deadline the log
    /// recorded, nor before what this leader promised. A lease marked renewed gets its whole
    /// TTL from this leader's election (a deposed leader may have promised that much), and a
    /// deadline that may have been recorded by an earlier leader, on its clock, gets the
    /// extension too. (A deadline recorded at time `t` is at most `t` plus the TTL, so one
    /// more than a TTL past the election was recorded in this term, on this clock.)
    pub(crate) fn deadline(&self, lease: &LeaseDeadline) -> u64 {
        let ttl = ttl_millis(lease.ttl);
        let recorded_earlier = lease.deadline_millis < self.promoted_millis.saturating_add(ttl);
        let mut deadline = lease.deadline_millis;
        if recorded_earlier {
            deadline = deadline.saturating_add(self.extension_millis);
        }
        if lease.renewed {
            let whole =
                self.promoted_millis.saturating_add(ttl).saturating_add(self.extension_millis);
            deadline = deadline.max(whole);
        }
        self.promised.get(&lease.id).map_or(deadline, |&promised| promised.max(deadline))
    }

    /// Renews `lease` at `now` (it must be marked renewed in the log already, so a new leader
    /// honours the promise): it now expires its TTL from `now`.
    pub(crate) fn renew(&mut self, lease: &LeaseDeadline, now_millis: u64) {
        assert!(lease.renewed, "a lease is renewed in memory only once the log marks it");
        let deadline = now_millis.saturating_add(ttl_millis(lease.ttl));
        let promised = self.promised.entry(lease.id).or_insert(deadline);
        *promised = (*promised).max(deadline);
    }

    /// The leases of `leases` that have expired by `now`, and forgets what it promised for
    /// leases no longer held.
    pub(crate) fn expired(&mut self, leases: &[LeaseDeadline], now_millis: u64) -> Vec<i64> {
        let held: std::collections::BTreeSet<i64> = leases.iter().map(|lease| lease.id).collect();
        self.promised.retain(|id, _| held.contains(id));
        leases
            .iter()
            .filter(|lease| self.deadline(lease) <= now_millis)
            .map(|lease| lease.id)
            .collect()
    }

    /// Whether a checkpoint is due at `now`.
    pub(crate) fn checkpoint_due(&self, now_millis: u64) -> bool {
        now_millis >= self.checkpointed_millis.saturating_add(self.checkpoint_every_millis)
    }

    /// If a checkpoint is due at `now`: what remains of each lease marked renewed (which the
    /// checkpoint records and unmarks). Leases not marked have their deadline in the log.
    pub(crate) fn checkpoint(
        &mut self,
        leases: &[LeaseDeadline],
        now_millis: u64,
    ) -> Option<Vec<(i64, u64)>> {
        if !self.checkpoint_due(now_millis) {
            return None;
        }
        // Due again a whole interval on, unless it fails (`checkpoint_failed`).
        self.checkpointed_millis = now_millis;
        Some(
            leases
                .iter()
                .filter(|lease| lease.renewed)
                .map(|lease| (lease.id, self.deadline(lease).saturating_sub(now_millis)))
                .collect(),
        )
    }
}

impl Lessor {
    /// The checkpoint last handed out was not written: it is due again at once.
    pub(crate) fn checkpoint_failed(&mut self) {
        self.checkpointed_millis = 0;
    }
}

fn ttl_millis(ttl: i64) -> u64 {
    (ttl.max(0) as u64).saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: i64, deadline_millis: u64, renewed: bool) -> LeaseDeadline {
        LeaseDeadline { id, ttl: 10, deadline_millis, renewed }
    }

    #[test]
    fn a_new_leader_honours_recorded_deadlines_and_gives_marked_leases_their_whole_ttl() {
        let mut lessor = Lessor::new(2_000, 60_000);
        assert!(lessor.enter(5, 100_000));
        // Not marked: no leader promised more than the log recorded, on its clock (the
        // extension allows for the difference between clocks).
        assert_eq!(lessor.deadline(&lease(1, 104_000, false)), 106_000);
        // Marked: a deposed leader may have promised up to its TTL from any moment before the
        // election, so the whole TTL from the election, and an election timeout more.
        assert_eq!(lessor.deadline(&lease(2, 90_000, true)), 112_000);
        let both = [lease(1, 104_000, false), lease(2, 90_000, true)];
        assert_eq!(lessor.expired(&both, 106_000), [1]);
        // A deadline recorded in this term, on this clock, is taken as it is.
        assert_eq!(lessor.deadline(&lease(3, 150_000, false)), 150_000);
        // A lease marked long after the election keeps the deadline the mark recorded.
        assert_eq!(lessor.deadline(&lease(4, 500_000, true)), 500_000);
    }

    #[test]
    fn a_renewal_promises_the_ttl_from_now_and_a_new_term_forgets_it() {
        let mut lessor = Lessor::new(2_000, 60_000);
        lessor.enter(5, 100_000);
        let marked = lease(1, 111_000, true);
        assert_eq!(lessor.deadline(&marked), 112_000, "the whole TTL from the election");
        lessor.renew(&marked, 150_000);
        assert_eq!(lessor.deadline(&marked), 160_000);
        // An older renewal never shortens a promise.
        lessor.renew(&marked, 140_000);
        assert_eq!(lessor.deadline(&marked), 160_000);
        assert!(lessor.expired(&[marked], 159_999).is_empty());
        assert_eq!(lessor.expired(&[marked], 160_000), [1]);
        // A stale view of the term promises nothing; a new term starts afresh.
        assert!(!lessor.enter(4, 170_000));
        assert!(lessor.enter(7, 170_000));
        assert_eq!(lessor.deadline(&marked), 182_000);
    }

    #[test]
    fn promises_for_leases_no_longer_held_are_forgotten() {
        let mut lessor = Lessor::new(0, 60_000);
        lessor.enter(1, 0);
        lessor.renew(&lease(1, 0, true), 50_000);
        lessor.expired(&[], 50_000);
        assert_eq!(lessor.deadline(&lease(1, 0, true)), 10_000, "the promise went with the lease");
    }

    #[test]
    fn a_checkpoint_is_due_once_an_interval_and_records_what_marked_leases_have_left() {
        let mut lessor = Lessor::new(2_000, 60_000);
        lessor.enter(3, 0);
        let leases = [lease(1, 30_000, false), lease(2, 5_000, true)];
        lessor.renew(&leases[1], 55_000);
        assert_eq!(lessor.checkpoint(&leases, 59_999), None);
        assert_eq!(lessor.checkpoint(&leases, 60_000), Some(vec![(2, 5_000)]));
        assert_eq!(lessor.checkpoint(&leases, 60_001), None, "not again before the next interval");
        lessor.checkpoint_failed();
        assert_eq!(lessor.checkpoint(&leases, 60_002), Some(vec![(2, 4_998)]), "again at once");
    }
}
