//! A bound on the bytes of large responses a member holds at once.
//!
//! A gRPC response is encoded whole and then waits in the HTTP/2 stream until the client reads
//! it: a client that asks for large ranges on many streams and never reads would pin as much
//! memory as it likes (ten unread streams held 480 MB). A large response (over
//! [`SMALL_BYTES`]) takes room in the member's budget before it is built, and gives it back
//! only when its body is dropped: after its last byte has gone to the connection, or the
//! stream or connection ended. When the budget is spent, a large response waits its turn (up
//! to the request's timeout) and is then refused; one larger than the whole budget is refused
//! at once, with the advice to page through the range with `limit`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// Responses up to this size take no room (their bytes are bounded by the streams' cap).
pub const SMALL_BYTES: u64 = 64 << 10;

/// The budget, in KiB (a semaphore's permits are counted in `u32`).
#[derive(Debug)]
pub(crate) struct ResponseBudget {
    room: Arc<Semaphore>,
    kib_max: u32,
}

/// Room held by a response until its body is dropped.
#[derive(Clone, Debug)]
pub(crate) struct Held(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

impl ResponseBudget {
    /// A budget of `bytes` (0: none).
    pub(crate) fn new(bytes: u64) -> ResponseBudget {
        let kib_max = u32::try_from(bytes / 1024).unwrap_or(u32::MAX >> 4);
        let kib_max = kib_max.min(Semaphore::MAX_PERMITS as u32);
        ResponseBudget { room: Arc::new(Semaphore::new(kib_max as usize)), kib_max }
    }

    /// Room for a response of about `bytes` if there is some now: `Ok(None)` for a small
    /// response (or with no budget), `Err(None)` if the budget is spent for now.
    pub(crate) fn try_hold(&self, bytes: u64) -> Result<Option<Held>, Option<Status>> {
        let Some(kib) = self.kib(bytes).map_err(Some)? else { return Ok(None) };
        match self.room.clone().try_acquire_many_owned(kib) {
            Ok(permit) => Ok(Some(Held(Arc::new(permit)))),
            Err(_) => Err(None),
        }
    }

    /// How many KiB a response of `bytes` holds (`None`: small, or no budget); refused if it
    /// would take more than the whole budget.
    fn kib(&self, bytes: u64) -> Result<Option<u32>, Status> {
        if bytes <= SMALL_BYTES || self.kib_max == 0 {
            return Ok(None);
        }
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        if kib > self.kib_max {
            metrics::counter!("lockstep_responses_refused_total", "reason" => "too_large")
                .increment(1);
            return Err(Status::resource_exhausted(format!(
                "etcdserver: the response would be {bytes} bytes, more than this member holds \
                 at once ({} bytes; the limit is max_response_bytes_in_flight): ask for fewer \
                 keys (limit) and page through the range",
                u64::from(self.kib_max) * 1024
            )));
        }
        Ok(Some(kib))
    }

    /// Room for a response of about `bytes`, waiting up to `wait` for it (`None` for a small
    /// response, or with no budget).
    pub(crate) async fn hold(&self, bytes: u64, wait: Duration) -> Result<Option<Held>, Status> {
        let Some(kib) = self.kib(bytes)? else { return Ok(None) };
        match tokio::time::timeout(wait, self.room.clone().acquire_many_owned(kib)).await {
            Ok(Ok(permit)) => Ok(Some(Held(Arc::new(permit)))),
            _ => {
                metrics::counter!("lockstep_responses_refused_total", "reason" => "busy")
                    .increment(1);
                Err(Status::resource_exhausted(
                    "etcdserver: too many large responses are waiting to be read; retry",
                ))
            }
        }
    }
}

/// Moves a response's [`Held`] room from its extensions into its body, so that the room is
/// given back when the body is dropped.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HoldLayer;

impl<S> tower_layer::Layer<S> for HoldLayer {
    type Service = Hold<S>;

    fn layer(&self, inner: S) -> Hold<S> {
        Hold { inner }
    }
}

/// See [`HoldLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Hold<S> {
    inner: S,
}

impl<S, RequestBody, Body> tower_service::Service<http::Request<RequestBody>> for Hold<S>
where
    S: tower_service::Service<http::Request<RequestBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    Body: http_body::Body<Data = bytes::Bytes>,
{
    type Response = http::Response<HeldBody<Body>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        // The stream is open until its response body is dropped (for a watch: until it ends).
        let stream = request
            .extensions()
            .get::<crate::Peer>()
            .and_then(|peer| peer.activity.as_ref())
            .map(|activity| activity.open());
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            let held = response.extensions_mut().remove::<Held>();
            Ok(response.map(|body| HeldBody {
                body: Box::pin(body),
                rest: bytes::Bytes::new(),
                _held: held,
                _stream: stream,
            }))
        })
    }
}

/// The most bytes handed to HTTP/2 at once: it takes a slice only when the stream has room
/// in its send window, so a response whose client does not read stays in this body (and
/// holds its room) instead of leaving it whole for HTTP/2's buffer.
const SLICE_BYTES: usize = 64 << 10;

/// A response body and the room its response holds.
pub(crate) struct HeldBody<B> {
    body: Pin<Box<B>>,
    /// What is left of the data frame being handed out in slices.
    rest: bytes::Bytes,
    _held: Option<Held>,
    _stream: Option<crate::idle::Stream>,
}

impl<B: http_body::Body<Data = bytes::Bytes>> http_body::Body for HeldBody<B> {
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            match this.body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
        let slice = this.rest.split_to(this.rest.len().min(SLICE_BYTES));
        Poll::Ready(Some(Ok(http_body::Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
