//! Idle connections to the etcd port are closed: one with no stream open (no request, no
//! watch, no keep-alive stream) that has moved no byte for the idle timeout (as gRPC's
//! `MaxConnectionIdle`). A connection with a stream open is never idle, however quiet.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use tokio::time::Instant;

/// What a connection has been doing.
#[derive(Debug)]
pub struct Activity {
    streams: AtomicUsize,
    /// When it last moved a byte, in milliseconds since `epoch`.
    last_millis: AtomicU64,
    epoch: Instant,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            streams: AtomicUsize::new(0),
            last_millis: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_millis.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_millis.load(Ordering::Relaxed)))
    }

    /// A stream opened: the connection is not idle until it is dropped.
    pub(crate) fn open(self: &Arc<Activity>) -> Stream {
        self.streams.fetch_add(1, Ordering::AcqRel);
        Stream(self.clone())
    }
}

/// An open stream of a connection (see [`Activity::open`]).
#[derive(Debug)]
pub(crate) struct Stream(Arc<Activity>);

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.touch();
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Watches a connection's reads for idleness: `Some(error)` once it has been idle for
/// `timeout` (zero: never), else arms `timer` to look again.
pub(crate) fn poll_idle(
    activity: &Activity,
    timeout: Duration,
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    cx: &mut Context<'_>,
) -> Option<io::Error> {
    if timeout.is_zero() {
        return None;
    }
    loop {
        let idle_for = activity.idle_for();
        let streams = activity.streams.load(Ordering::Acquire);
        if streams == 0 && idle_for >= timeout {
            metrics::counter!("lockstep_connections_idle_closed_total", "port" => "etcd")
                .increment(1);
            return Some(io::Error::new(io::ErrorKind::TimedOut, "idle connection closed"));
        }
        let wait = if streams == 0 { timeout - idle_for } else { timeout };
        let deadline = tokio::time::Instant::now() + wait;
        let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        sleep.as_mut().reset(deadline);
        if sleep.as_mut().poll(cx).is_pending() {
            return None;
        }
    }
}

/// Notes bytes moved.
pub(crate) fn moved(activity: &Activity, bytes: usize) {
    if bytes > 0 {
        activity.touch();
    }
}
