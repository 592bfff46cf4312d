//! A client given a replica in its own process reaches that replica without a socket, and
//! every other replica (the leader it is sent to, the next endpoint when the local one has
//! stopped) over the network, with the same retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lockstep_client::{
    Answers, Client, ClientError, ClientMessage, ClientOptions, InProcess, ServerMessage,
};
use lockstep_wire::{Decoder, Kind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An address nothing listens on: a client that tried it over the network would time out.
const UNREACHABLE: &str = "127.0.0.1:1";

fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(5),
        attempt_timeout: Duration::from_secs(1),
        ..ClientOptions::default()
    }
}

fn request_id(message: &ClientMessage<u64, u64>) -> u64 {
    message.id()
}

fn input(message: &ClientMessage<u64, u64>) -> u64 {
    match message {
        ClientMessage::Write { input, .. } | ClientMessage::WriteFirst { input, .. } => *input,
        ClientMessage::Read { query, .. } => *query,
        _ => 0,
    }
}

/// A write's session and number, whichever attempt it is.
fn session_of(message: &ClientMessage<u64, u64>) -> Option<(u64, u64)> {
    match message {
        ClientMessage::Write { client, sequence, .. }
        | ClientMessage::WriteFirst { client, sequence, .. } => Some((*client, *sequence)),
        _ => None,
    }
}

/// A replica in this process that answers every request with `answer`, counting requests.
fn local(
    count: Arc<AtomicU64>,
    answer: impl Fn(&ClientMessage<u64, u64>) -> Option<ServerMessage<u64>> + Send + Sync + 'static,
) -> InProcess<u64, u64, u64> {
    let answer = Arc::new(answer);
    InProcess {
        endpoint: UNREACHABLE.to_string(),
        submit: Arc::new(move |message, answers: Answers<u64>| {
            count.fetch_add(1, Ordering::Relaxed);
            let reply = answer(&message);
            Box::pin(async move {
                match reply {
                    Some(reply) => answers.send(reply).is_ok(),
                    // The replica has stopped.
                    None => false,
                }
            })
        }),
    }
}

type Sessions = Arc<std::sync::Mutex<Vec<(u64, u64)>>>;

/// A replica over TCP that answers every write and read with its input plus 1000.
async fn remote(count: Arc<AtomicU64>) -> String {
    remote_recording(count, Sessions::default()).await
}

/// As [`remote`], recording each write's session and sequence number.
async fn remote_recording(count: Arc<AtomicU64>, sessions: Sessions) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            let sessions = sessions.clone();
            tokio::spawn(async move {
                let mut decoder = Decoder::new(1 << 20);
                let mut buffer = vec![0u8; 4096];
                loop {
                    let Ok(read) = stream.read(&mut buffer).await else { return };
                    if read == 0 {
                        return;
                    }
                    decoder.extend(&buffer[..read]);
                    while let Ok(Some((_, body))) = decoder.next_frame() {
                        let message: ClientMessage<u64, u64> =
                            lockstep_wire::decode(&body).expect("a request");
                        count.fetch_add(1, Ordering::Relaxed);
                        if let Some(session) = session_of(&message) {
                            sessions.lock().expect("lock").push(session);
                        }
                        let answer = ServerMessage::Done {
                            id: request_id(&message),
                            output: input(&message) + 1000,
                        };
                        let frame = lockstep_wire::encode(Kind::Client, &answer).expect("encode");
                        if stream.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn the_local_replica_is_reached_without_a_socket() {
    let count = Arc::new(AtomicU64::new(0));
    let link = local(count.clone(), |message| {
        Some(ServerMessage::Done { id: request_id(message), output: input(message) * 2 })
    });
    let client: Client<u64, u64, u64> =
        Client::with_local(vec![UNREACHABLE.to_string()], options(), link);
    for value in 1..=100 {
        assert_eq!(client.write(value).await, Ok(value * 2));
        assert_eq!(client.read(value).await, Ok(value * 2));
    }
    assert_eq!(count.load(Ordering::Relaxed), 200);
}

#[tokio::test]
async fn a_local_follower_sends_the_client_to_the_leader_over_the_network() {
    let local_count = Arc::new(AtomicU64::new(0));
    let remote_count = Arc::new(AtomicU64::new(0));
    let leader = remote(remote_count.clone()).await;
    let address = leader.clone();
    let link = local(local_count.clone(), move |message| {
        Some(ServerMessage::Refused {
            id: request_id(message),
            error: ClientError::NotLeader { leader: Some(2), address: Some(address.clone()) },
        })
    });
    let client: Client<u64, u64, u64> =
        Client::with_local(vec![UNREACHABLE.to_string(), leader], options(), link);
    assert_eq!(client.write(7).await, Ok(1007));
    assert_eq!(client.write(8).await, Ok(1008));
    assert_eq!(local_count.load(Ordering::Relaxed), 1, "asked the local follower once");
    assert_eq!(remote_count.load(Ordering::Relaxed), 2);
}

/// A client that stays with its replica is never sent to the leader: a write its follower
/// cannot take fails at once, and a read the follower could not serve this time (the leader
/// it forwarded it to changed) is asked of the follower again.
#[tokio::test]
async fn a_client_that_stays_is_not_sent_to_the_leader() {
    let local_count = Arc::new(AtomicU64::new(0));
    let remote_count = Arc::new(AtomicU64::new(0));
    let leader = remote(remote_count.clone()).await;
    let reads = Arc::new(AtomicU64::new(0));
    let not_leader = move |id| ServerMessage::Refused {
        id,
        error: ClientError::NotLeader { leader: Some(2), address: Some(leader.clone()) },
    };
    let link = local(local_count.clone(), move |message| match message {
        ClientMessage::Read { id, .. } if reads.fetch_add(1, Ordering::Relaxed) == 0 => {
            Some(not_leader(*id))
        }
        ClientMessage::Read { id, query, .. } => {
            Some(ServerMessage::Done { id: *id, output: *query })
        }
        message => Some(not_leader(request_id(message))),
    });
    let options = ClientOptions { stay: true, ..options() };
    let client: Client<u64, u64, u64> =
        Client::with_local(vec![UNREACHABLE.to_string()], options, link);
    assert_eq!(client.write(7).await, Err(lockstep_client::Error::NotLeader { leader: 2 }));
    assert_eq!(client.read(5).await, Ok(5), "read by the follower, not the leader");
    assert_eq!(local_count.load(Ordering::Relaxed), 3, "the write once, the read twice");
    assert_eq!(remote_count.load(Ordering::Relaxed), 0, "the leader was never asked");
}

#[tokio::test]
async fn a_stopped_local_replica_is_passed_over() {
    let local_count = Arc::new(AtomicU64::new(0));
    let remote_count = Arc::new(AtomicU64::new(0));
    let other = remote(remote_count.clone()).await;
    let link = local(local_count.clone(), |_| None);
    let client: Client<u64, u64, u64> =
        Client::with_local(vec![UNREACHABLE.to_string(), other], options(), link);
    assert_eq!(client.write(3).await, Ok(1003));
    assert_eq!(local_count.load(Ordering::Relaxed), 1);
    assert_eq!(remote_count.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_local_replica_that_takes_nothing_fails_the_request_in_time() {
    // A replica whose queue never has room: handing a request over never completes.
    let link: InProcess<u64, u64, u64> = InProcess {
        endpoint: UNREACHABLE.to_string(),
        submit: Arc::new(|_, _| Box::pin(std::future::pending())),
    };
    let options = ClientOptions {
        timeout: Duration::from_millis(600),
        attempt_timeout: Duration::from_millis(200),
        ..ClientOptions::default()
    };
    let client: Client<u64, u64, u64> =
        Client::with_local(vec![UNREACHABLE.to_string()], options, link);
    let outcome = tokio::time::timeout(Duration::from_secs(5), client.write(1)).await;
    match outcome {
        Ok(Err(lockstep_client::Error::Timeout { .. })) => {}
        other => panic!("expected a timeout within the client's limit, got {other:?}"),
    }
}

#[tokio::test]
async fn a_write_retried_from_the_local_replica_elsewhere_keeps_its_session() {
    let seen = Sessions::default();
    let remote_seen = Sessions::default();
    let remote_count = Arc::new(AtomicU64::new(0));
    let leader = remote_recording(remote_count.clone(), remote_seen.clone()).await;
    let address = leader.clone();
    let record = seen.clone();
    let link = local(Arc::new(AtomicU64::new(0)), move |message| {
        if let Some(session) = session_of(message) {
            record.lock().expect("lock").push(session);
        }
        Some(ServerMessage::Refused {
            id: request_id(message),
            error: ClientError::NotLeader { leader: Some(2), address: Some(address.clone()) },
        })
    });
    let client: Client<u64, u64, u64> =
        Client::with_local(vec![UNREACHABLE.to_string(), leader], options(), link);
    assert_eq!(client.write(7).await, Ok(1007));
    let seen = seen.lock().expect("lock").clone();
    let remote_seen = remote_seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(remote_seen, seen, "the retry on the leader is the same request of one session");
}

/// A write refused before it was proposed keeps its number for the next request of its
/// session; only a first attempt, or one after refusals from replicas that do not lead, is
/// sent as one the replica may refuse for good.
#[tokio::test]
async fn a_denied_write_leaves_its_number_and_only_first_attempts_may_be_denied() {
    let seen: Arc<std::sync::Mutex<Vec<(bool, u64, u64)>>> = Arc::default();
    let record = seen.clone();
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let link = local(Arc::new(AtomicU64::new(0)), move |message| {
        let call = counter.fetch_add(1, Ordering::Relaxed);
        let (first, client, sequence) = match message {
            ClientMessage::WriteFirst { client, sequence, .. } => (true, *client, *sequence),
            ClientMessage::Write { client, sequence, .. } => (false, *client, *sequence),
            _ => return None,
        };
        record.lock().expect("lock").push((first, client, sequence));
        let id = request_id(message);
        Some(match call {
            // The first write is denied; the second refused as a retry would be; then done.
            0 => ServerMessage::Denied { id, output: 1 },
            1 => ServerMessage::Refused { id, error: ClientError::Retry("busy".into()) },
            _ => ServerMessage::Done { id, output: 2 },
        })
    });
    let client: Client<u64, u64, u64> =
        Client::with_local(vec![UNREACHABLE.to_string()], options(), link);
    assert_eq!(client.write(7).await, Ok(1), "the denial is the answer");
    assert_eq!(client.write(8).await, Ok(2));
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[0].0 && seen[1].0, "each request's first attempt may be denied: {seen:?}");
    assert!(!seen[2].0, "a retry after an ambiguous refusal may not: {seen:?}");
    assert_eq!(seen[0].1, seen[1].1, "one session");
    assert_eq!(seen[0].2, seen[1].2, "the denied request's number is used again");
    assert_eq!(seen[1].2, seen[2].2);
}
