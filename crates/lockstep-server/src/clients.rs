//! The native client protocol: frames of [`ClientMessage`] in, [`ServerMessage`] out.
//!
//! A connection carries many requests at once: each names an id chosen by the client, and its
//! answer names the same id, in whatever order answers are ready. A frame that is too large,
//! fails its checksum or does not decode as this service's request is answered with a
//! `Malformed` refusal (id 0) saying why, and the connection is closed; nothing reaches the
//! replica.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep_core::StateMachine;
use lockstep_tls::rustls::ServerConfig as TlsServerConfig;
use lockstep_tls::{Conn, Reloading};
use lockstep_wire::{ClientError, ClientMessage, Decoder, Kind, ServerMessage};
use serde::Serialize;
use tokio::io::WriteHalf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};

use crate::replica::{Event, Stamped};

/// The largest client frame accepted.
pub const CLIENT_FRAME_BYTES_MAX: u64 = 8 << 20;

/// Accepts client connections until shut down.
pub async fn listen_clients<M>(
    listener: TcpListener,
    events: mpsc::Sender<Stamped<Event<M>>>,
    shutdown: watch::Receiver<bool>,
    tls: Option<Arc<Reloading<TlsServerConfig>>>,
    limits: ClientLimits,
) where
    M: StateMachine + 'static,
    M::Input: Send,
    M::Query: Send,
    M::Output: Send + Serialize,
{
    let max_connections = limits.max_connections;
    crate::transport::accept(
        listener,
        shutdown,
        "client",
        tls,
        max_connections,
        move |stream, shutdown| serve_client::<M>(stream, events.clone(), shutdown, limits),
    )
    .await;
}

/// What one native client connection may take.
#[derive(Clone, Copy, Debug)]
pub struct ClientLimits {
    /// Connections open at once on the port.
    pub max_connections: usize,
    /// A connection with nothing in flight that sends nothing this long is closed.
    pub idle_timeout: Duration,
    /// Requests waiting for answers on one connection.
    pub max_requests: usize,
    /// A request frame must arrive whole within this long of its first byte.
    pub frame_timeout: Duration,
}

async fn serve_client<M>(
    stream: Conn,
    events: mpsc::Sender<Stamped<Event<M>>>,
    mut shutdown: watch::Receiver<bool>,
    limits: ClientLimits,
) -> Result<(), String>
where
    M: StateMachine + 'static,
    M::Input: Send,
    M::Query: Send,
    M::Output: Send + Serialize,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let (reply, answers) = mpsc::unbounded_channel::<ServerMessage<M::Output>>();
    let window = Arc::new(Window::default());
    let writing = tokio::spawn(write_answers::<M::Output>(writer, answers, window.clone()));
    let mut decoder = Decoder::new(CLIENT_FRAME_BYTES_MAX);
    let mut buffer = vec![0u8; 64 << 10];
    // Since when part of a frame has waited for the rest: a frame must arrive whole within
    // `frame_timeout`, so that a connection cannot hold a large buffer by trickling.
    let mut partial_since: Option<tokio::time::Instant> = None;
    let outcome = 'reading: loop {
        let due = partial_since.map(|since| since + limits.frame_timeout);
        let wait = due.map_or(limits.idle_timeout, |due| {
            due.saturating_duration_since(tokio::time::Instant::now()).min(limits.idle_timeout)
        });
        let read = tokio::select! {
            _ = shutdown.changed() => break Ok(()),
            read = tokio::time::timeout(wait, reader.read(&mut buffer)) => read,
        };
        let read = match read {
            Ok(read) => read,
            Err(_) if due.is_some_and(|due| tokio::time::Instant::now() >= due) => {
                metrics::counter!("lockstep_connections_slow_frame_closed_total").increment(1);
                break Err(format!(
                    "a request frame took longer than {} ms to arrive whole",
                    limits.frame_timeout.as_millis()
                ));
            }
            // Idle: closed unless answers are still on their way.
            Err(_) if partial_since.is_none() && window.in_flight.load(Ordering::Acquire) == 0 => {
                metrics::counter!("lockstep_connections_idle_closed_total", "port" => "client")
                    .increment(1);
                break Ok(());
            }
            Err(_) => continue,
        };
        let count = match read {
            Ok(0) | Err(_) => break Ok(()),
            Ok(count) => count,
        };
        decoder.extend(&buffer[..count]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => break 'reading Err(error.to_string()),
            };
            let (kind, body) = frame;
            if kind != Kind::Client {
                break 'reading Err(format!("expected a client request, got a {kind:?} frame"));
            }
            let message: ClientMessage<M::Input, M::Query> = match lockstep_wire::decode(&body) {
                Ok(message) => message,
                Err(error) => break 'reading Err(error.to_string()),
            };
            // A client that sends without reading its answers is not read any further until
            // it catches up: its answers never pile up without bound.
            let open = tokio::select! {
                _ = shutdown.changed() => false,
                open = window.open(limits.max_requests) => open,
            };
            if !open {
                break 'reading Ok(());
            }
            if events
                .send((
                    Instant::now(),
                    Event::Client(message, reply.clone(), lockstep_core::Origin::Remote),
                ))
                .await
                .is_err()
            {
                break 'reading Ok(());
            }
        }
        partial_since = match decoder.buffered() {
            0 => None,
            _ => Some(partial_since.unwrap_or_else(tokio::time::Instant::now)),
        };
    };
    if let Err(reason) = &outcome {
        let refusal = ClientError::Malformed(format!("closing the connection: {reason}"));
        let _ = reply.send(ServerMessage::Refused { id: 0, error: refusal });
    }
    drop(reply);
    // Answers still on their way are written before the connection closes (the replica
    // thread holds a sender for each pending request).
    if outcome.is_err() {
        let _ = tokio::time::timeout(Duration::from_secs(1), writing).await;
    }
    outcome
}

/// How many of a connection's requests wait for answers to be written.
#[derive(Default)]
struct Window {
    in_flight: AtomicUsize,
    room: Notify,
    /// The answers can no longer be written: stop reading requests.
    closed: AtomicBool,
}

impl Window {
    /// Counts one more request, first waiting while `max` are in flight; false once the
    /// connection's answers can no longer be written.
    async fn open(&self, max: usize) -> bool {
        loop {
            let room = self.room.notified();
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            if self.in_flight.load(Ordering::Acquire) < max {
                break;
            }
            room.await;
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// The answers can no longer be written.
    fn shut(&self) {
        self.closed.store(true, Ordering::Release);
        self.room.notify_waiters();
        self.room.notify_one();
    }

    /// `count` answers were written.
    fn close(&self, count: usize) {
        let _ = self.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_flight| {
            Some(in_flight.saturating_sub(count))
        });
        self.room.notify_one();
    }
}

async fn write_answers<O: Serialize>(
    mut writer: WriteHalf<Conn>,
    mut answers: mpsc::UnboundedReceiver<ServerMessage<O>>,
    window: Arc<Window>,
) {
    let mut buffer = Vec::with_capacity(64 << 10);
    while let Some(answer) = answers.recv().await {
        buffer.clear();
        push_frame(&answer, &mut buffer);
        let mut count = 1;
        while buffer.len() < (1 << 20) {
            match answers.try_recv() {
                Ok(answer) => {
                    push_frame(&answer, &mut buffer);
                    count += 1;
                }
                Err(_) => break,
            }
        }
        // TLS holds what it encrypted until flushed.
        let written = async {
            writer.write_all(&buffer).await?;
            writer.flush().await
        };
        if written.await.is_err() {
            // The client is gone: its reader must not wait for room that never comes.
            window.shut();
            return;
        }
        window.close(count);
    }
    window.shut();
    let _ = writer.shutdown().await;
}

fn push_frame<O: Serialize>(answer: &ServerMessage<O>, buffer: &mut Vec<u8>) {
    match lockstep_wire::encode(Kind::Client, answer) {
        Ok(frame) => buffer.extend_from_slice(&frame),
        Err(error) => tracing::error!("an answer could not be encoded: {error}"),
    }
}
