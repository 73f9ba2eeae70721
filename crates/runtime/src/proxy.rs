//! The `http` protocol: forward a call to an instance over a pooled keep-alive connection
//! and stream the response back, holding the instance's slot until the last byte.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::body::{Body, BoxError, boxed};
use crate::instance::{Instance, Target};
use crate::pool::Slot;
use crate::{Error, Result};

/// How long to wait for a dead instance's exit status before describing a failure.
const DEATH_GRACE: Duration = Duration::from_millis(300);
/// The same for an instance its cgroup killed for memory, which is certainly dying: its
/// exit (freeing what it held) runs under the cgroup's CPU quota and, once the quota is
/// spent, can take longer than `DEATH_GRACE` (the OOM call then failed as "connection
/// closed" instead of "ran out of memory", once in CI).
const OOM_DEATH_GRACE: Duration = Duration::from_secs(5);

/// Sends `req` to the slot's instance; the response body keeps the slot until it ends.
///
/// # Errors
/// [`Error::Timeout`] past `deadline` (the instance is killed), [`Error::BodyTooLarge`]
/// when `exceeded` was set while sending, [`Error::Crashed`] or [`Error::StartFailed`]
/// when the instance broke.
pub async fn call(
    slot: Slot,
    req: Request<Body>,
    deadline: tokio::time::Instant,
    exceeded: Arc<AtomicBool>,
) -> Result<Response<Body>> {
    let instance = slot.instance().clone();
    let spec = &instance.revision.spec;
    // One timer for the whole call, from the wait for a connection to the body's last
    // byte: registered once, where a timeout per step would register and drop one each.
    let mut timer = Box::pin(tokio::time::sleep_until(deadline));
    // A kept connection is used once its previous exchange has wound down (hyper accepts
    // the next request then); one that turns out closed is replaced by a new one.
    let kept = match instance.take_connection() {
        Some(mut c) => match until(&mut timer, c.ready()).await {
            Some(Ok(())) => Some(c),
            Some(Err(_)) => None,
            None => return Err(timed_out(slot)),
        },
        None => None,
    };
    let mut conn = match kept {
        Some(c) => c,
        None => match until(&mut timer, connect(&instance)).await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(broken(slot, &instance, &format!("could not connect: {e}")).await),
            None => return Err(timed_out(slot)),
        },
    };
    match until(&mut timer, conn.send_request(req)).await {
        None => Err(timed_out(slot)),
        Some(Err(e)) => {
            if exceeded.load(Ordering::Acquire) {
                return Err(Error::BodyTooLarge { limit: spec.limits.max_body });
            }
            Err(broken(slot, &instance, &e.to_string()).await)
        }
        Some(Ok(resp)) => {
            instance.answered();
            let (parts, body) = resp.into_parts();
            let complete = http_body::Body::is_end_stream(&body);
            let lease = Lease { slot: Some(slot), conn: Some(conn), complete };
            let body = CallBody { inner: body, lease, deadline: timer, timeout: spec.limits.timeout };
            Ok(Response::from_parts(parts, boxed(body)))
        }
    }
}

/// `work`'s output, or `None` if `timer` fires first (`work` is polled first, so one
/// that is ready at once never touches the timer).
async fn until<F: Future>(timer: &mut Pin<Box<tokio::time::Sleep>>, work: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = work => Some(out),
        () = timer.as_mut() => None,
    }
}

async fn connect(instance: &Instance) -> std::io::Result<SendRequest<Body>> {
    let io = match instance.target() {
        Some(Target::Unix(path)) => {
            let s = tokio::net::UnixStream::connect(path).await?;
            return handshake(s).await;
        }
        Some(Target::Tcp(addr)) => {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            s
        }
        Some(Target::Lambda(_)) | None => return Err(std::io::Error::other("instance has no HTTP address")),
    };
    handshake(io).await
}

async fn handshake<S>(stream: S) -> std::io::Result<SendRequest<Body>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        // Ends when either side closes; errors here surface on the request instead.
        let _ = conn.await;
    });
    Ok(sender)
}

/// The instance broke the exchange. If its process died, it is replaced and the error
/// carries its exit and last output; if it is alive, only this connection was bad.
async fn broken(slot: Slot, instance: &Arc<Instance>, what: &str) -> Error {
    let function = instance.function().to_owned();
    let grace = if instance.oom_killed() { OOM_DEATH_GRACE } else { DEATH_GRACE };
    if instance.wait_dead(grace).await {
        let detail = instance.death_detail("exited");
        let never_served = !instance.has_answered();
        slot.discard();
        if never_served { Error::StartFailed { function, detail } } else { Error::Crashed { function, detail } }
    } else {
        drop(slot);
        Error::Crashed { function, detail: format!("the connection to instance {} failed: {what}", instance.id) }
    }
}

fn timed_out(slot: Slot) -> Error {
    let spec = &slot.instance().revision.spec;
    let err = Error::Timeout { function: spec.name.to_string(), timeout: spec.limits.timeout };
    slot.discard();
    err
}

/// The slot and connection a response body holds until its last byte. Dropped early (the
/// client went away, or the body was never polled because it is empty) it still frees the
/// slot, and returns the connection only if the exchange was complete.
struct Lease {
    slot: Option<Slot>,
    conn: Option<SendRequest<Body>>,
    complete: bool,
}

impl Lease {
    /// The exchange is complete: the connection goes back to the instance for the next
    /// call, and the slot is freed.
    fn finish(&mut self) {
        self.complete = true;
        if let (Some(slot), Some(conn)) = (self.slot.take(), self.conn.take()) {
            slot.instance().put_connection(conn);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // An empty body that was never polled is complete from the start.
        if self.complete {
            self.finish();
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body from an instance, enforcing the call's deadline while it streams.
    struct CallBody {
        #[pin]
        inner: Incoming,
        lease: Lease,
        deadline: Pin<Box<tokio::time::Sleep>>,
        timeout: Duration,
    }
}

/// The error a response body yields when the call's deadline passes mid-stream.
#[derive(Debug, thiserror::Error)]
#[error("the function did not finish its response within {0:?} (limits.timeout)")]
struct StreamTimeout(Duration);

impl http_body::Body for CallBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if this.lease.slot.is_some() && this.deadline.as_mut().poll(cx).is_ready() {
            this.lease.conn = None;
            if let Some(slot) = this.lease.slot.take() {
                slot.discard();
            }
            return Poll::Ready(Some(Err(Box::new(StreamTimeout(*this.timeout)))));
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(None) => {
                this.lease.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.lease.conn = None;
                // Taken either way: a live instance just gets its slot back on drop.
                if let Some(slot) = this.lease.slot.take()
                    && slot.instance().is_dead()
                {
                    slot.discard();
                }
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                // hyper stops polling a body that says it has ended (its last byte came
                // with this frame), so this is where the exchange completes.
                if this.inner.is_end_stream() {
                    this.lease.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
