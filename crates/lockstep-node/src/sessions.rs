//! Client sessions: exactly-once application of retried requests.
//!
//! A client numbers its requests 1, 2, 3, ... and retries a request with the same number until
//! it gets an answer. The session table, part of the replicated state, remembers for each client
//! the highest number applied and its output:
//!
//! - a request numbered above it is new: apply it, then record its output;
//! - a request with that number is a retry of the last one: answer with the recorded output,
//!   apply nothing;
//! - a request numbered below it is older than the client's last answer: the client has moved
//!   on, so it is refused.
//!
//! Sessions expire when idle longer than [`SessionConfig::expiry_millis`], measured in the
//! timestamps the leader stamps on log entries, so every replica expires the same sessions at the
//! same index; and when there are more than [`SessionConfig::sessions_max`], the least recently
//! active go first. Nothing here reads a clock.
//!
//! A request from an expired session is refused, never taken for new: the table remembers up to
//! `sessions_max` expired clients, and refuses any unknown client whose request is numbered
//! above 1. The one case it cannot tell apart is a client whose session expired *and* was
//! forgotten, retrying its very first request: keep `expiry_millis` far above how long clients
//! retry.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A client's identity, chosen by the client (at random, say) and kept across its retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

/// Limits of the session table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// A session idle longer than this (in log timestamps) expires.
    pub expiry_millis: u64,
    /// At most this many sessions; beyond, the least recently active expire.
    pub sessions_max: usize,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig { expiry_millis: 10 * 60 * 1000, sessions_max: 100_000 }
    }
}

/// What the table says about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCheck {
    /// Not seen before: apply it.
    New,
    /// A retry of the client's last applied request: here is its output, apply nothing.
    Duplicate(Vec<u8>),
    /// Older than the client's last applied request (or from an expired session): refuse.
    Stale {
        /// The highest request number applied for this client, if its session is alive.
        last_applied: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    last_sequence: u64,
    last_output: Vec<u8>,
    last_active_millis: u64,
}

/// The session table. Deterministic: it iterates only ordered maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sessions {
    by_client: BTreeMap<ClientId, Session>,
    /// (last active, client): the expiry order.
    by_activity: BTreeSet<(u64, ClientId)>,
    /// Clients whose sessions expired, so a late request from one is refused rather than taken
    /// for a new client's first request (bounded like the sessions themselves): client ->
    /// the log time it expired.
    expired: BTreeMap<ClientId, u64>,
    /// (expiry time, client): the order in which expired clients are forgotten.
    expired_order: BTreeSet<(u64, ClientId)>,
}

/// The encoded form of the table, for snapshots.
#[derive(Serialize, Deserialize)]
struct Encoded {
    version: u8,
    sessions: Vec<(ClientId, Session)>,
    expired: Vec<(ClientId, u64)>,
}

const ENCODING_VERSION: u8 = 2;

impl Sessions {
    /// An empty table.
    pub fn new() -> Sessions {
        Sessions::default()
    }

    /// How many sessions are alive.
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    /// Whether no session is alive.
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// The highest request number applied for `client`, if its session is alive.
    pub fn last_applied(&self, client: ClientId) -> Option<u64> {
        self.by_client.get(&client).map(|session| session.last_sequence)
    }

    /// What to do with request `sequence` of `client`.
    pub fn check(&self, client: ClientId, sequence: u64) -> SessionCheck {
        match self.by_client.get(&client) {
            Some(session) if sequence > session.last_sequence => SessionCheck::New,
            Some(session) if sequence == session.last_sequence => {
                SessionCheck::Duplicate(session.last_output.clone())
            }
            Some(session) => SessionCheck::Stale { last_applied: Some(session.last_sequence) },
            // A client whose session expired may have had requests applied that it never heard
            // about; taking its next one as new could apply a retry twice.
            None if self.expired.contains_key(&client) => {
                SessionCheck::Stale { last_applied: None }
            }
            // A client starts at 1: an unknown one further on had a session that expired and
            // was forgotten, and this may be a retry of something applied then.
            None if sequence > 1 => SessionCheck::Stale { last_applied: None },
            None => SessionCheck::New,
        }
    }

    /// Records that request `sequence` of `client` was applied with `output`, at log time
    /// `now_millis`.
    pub fn record(&mut self, client: ClientId, sequence: u64, output: Vec<u8>, now_millis: u64) {
        if let Some(previous) = self.by_client.get(&client) {
            self.by_activity.remove(&(previous.last_active_millis, client));
        }
        if let Some(expired_at) = self.expired.remove(&client) {
            self.expired_order.remove(&(expired_at, client));
        }
        let session = Session {
            last_sequence: sequence,
            last_output: output,
            last_active_millis: now_millis,
        };
        self.by_activity.insert((now_millis, client));
        self.by_client.insert(client, session);
    }

    /// Expires sessions idle since before `now_millis - expiry_millis`, and the least recently
    /// active beyond `sessions_max`. Call it with each applied entry's log timestamp. Returns
    /// how many expired.
    pub fn expire(&mut self, now_millis: u64, config: &SessionConfig) -> usize {
        let cutoff = now_millis.saturating_sub(config.expiry_millis);
        let mut expired = 0;
        while let Some(&(active, client)) = self.by_activity.first() {
            let idle = active < cutoff;
            let over = self.by_client.len() > config.sessions_max;
            if !idle && !over {
                break;
            }
            self.by_activity.pop_first();
            self.by_client.remove(&client);
            self.expired.insert(client, now_millis);
            self.expired_order.insert((now_millis, client));
            expired += 1;
        }
        // Remember expired clients no longer than live ones: the oldest are forgotten first.
        while self.expired.len() > config.sessions_max {
            let Some((_, client)) = self.expired_order.pop_first() else { break };
            self.expired.remove(&client);
        }
        expired
    }

    /// Encodes the table for a snapshot.
    pub fn encode(&self) -> Vec<u8> {
        let encoded = Encoded {
            version: ENCODING_VERSION,
            sessions: self
                .by_client
                .iter()
                .map(|(client, session)| (*client, session.clone()))
                .collect(),
            expired: self.expired.iter().map(|(client, at)| (*client, *at)).collect(),
        };
        postcard::to_stdvec(&encoded).unwrap_or_default()
    }

    /// Decodes a table written by [`Sessions::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Sessions, String> {
        let encoded: Encoded = postcard::from_bytes(bytes)
            .map_err(|error| format!("session table does not decode: {error}"))?;
        if encoded.version != ENCODING_VERSION {
            return Err(format!(
                "session table version {} is not {ENCODING_VERSION}",
                encoded.version
            ));
        }
        let mut sessions = Sessions::new();
        for (client, session) in encoded.sessions {
            sessions.by_activity.insert((session.last_active_millis, client));
            sessions.by_client.insert(client, session);
        }
        for (client, at) in encoded.expired {
            sessions.expired.insert(client, at);
            sessions.expired_order.insert((at, client));
        }
        Ok(sessions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CONFIG: SessionConfig = SessionConfig { expiry_millis: 1000, sessions_max: 3 };

    #[test]
    fn a_retry_returns_the_recorded_output_and_an_old_request_is_refused() {
        let mut sessions = Sessions::new();
        let client = ClientId(7);
        assert_eq!(sessions.check(client, 1), SessionCheck::New);
        sessions.record(client, 1, b"one".to_vec(), 0);
        assert_eq!(sessions.check(client, 1), SessionCheck::Duplicate(b"one".to_vec()));
        assert_eq!(sessions.check(client, 2), SessionCheck::New);
        sessions.record(client, 2, b"two".to_vec(), 10);
        assert_eq!(sessions.check(client, 1), SessionCheck::Stale { last_applied: Some(2) });
        assert_eq!(sessions.check(client, 2), SessionCheck::Duplicate(b"two".to_vec()));
    }

    #[test]
    fn idle_sessions_expire_by_log_time_and_their_clients_are_refused() {
        let mut sessions = Sessions::new();
        sessions.record(ClientId(1), 1, Vec::new(), 0);
        sessions.record(ClientId(2), 1, Vec::new(), 900);
        assert_eq!(sessions.expire(1500, &CONFIG), 1);
        assert_eq!(sessions.check(ClientId(1), 2), SessionCheck::Stale { last_applied: None });
        assert_eq!(sessions.check(ClientId(2), 2), SessionCheck::New);
        assert_eq!(sessions.check(ClientId(3), 1), SessionCheck::New);
        // An unknown client further on than its first request had a session before.
        assert_eq!(sessions.check(ClientId(4), 2), SessionCheck::Stale { last_applied: None });
    }

    #[test]
    fn beyond_the_limit_the_least_recently_active_expire() {
        let mut sessions = Sessions::new();
        for client in 1..=5u64 {
            sessions.record(ClientId(client), 1, Vec::new(), client * 10);
        }
        sessions.expire(60, &CONFIG);
        assert_eq!(sessions.len(), 3);
        assert!(matches!(sessions.check(ClientId(1), 2), SessionCheck::Stale { .. }));
        assert_eq!(sessions.check(ClientId(5), 2), SessionCheck::New);
    }

    proptest! {
        /// Two replicas fed the same log agree exactly, and a table survives a snapshot.
        #[test]
        fn the_table_is_deterministic_and_round_trips(
            log in prop::collection::vec((0u64..6, 1u64..5, 0u64..200), 0..200)
        ) {
            let mut a = Sessions::new();
            let mut b = Sessions::new();
            let mut now = 0;
            for (client, sequence, advance) in log {
                now += advance;
                for table in [&mut a, &mut b] {
                    table.expire(now, &CONFIG);
                    if table.check(ClientId(client), sequence) == SessionCheck::New {
                        table.record(ClientId(client), sequence, vec![sequence as u8], now);
                    }
                }
            }
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(Sessions::decode(&a.encode()).expect("decodes"), a);
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Sessions::decode(b"\xff\xff\xff").is_err());
    }
}
