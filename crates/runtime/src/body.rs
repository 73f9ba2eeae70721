//! The body type that flows between the gateway and instances, and the request-body limit.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

/// Any error inside a body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body, boxed so that requests and responses of every protocol share a type.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes` whole.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

pin_project_lite::pin_project! {
    /// Passes a request body through, failing it once more than `limit` bytes have gone
    /// by. The body is never buffered whole: bytes stream on until the limit is crossed,
    /// then the stream errors and [`LimitedBody::exceeded`] tells the caller why.
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        seen: u64,
        limit: u64,
        exceeded: Arc<AtomicBool>,
    }
}

impl<B> LimitedBody<B> {
    /// Wraps `inner` with a limit of `limit` bytes; `flag` is set when it is crossed.
    pub fn new(inner: B, limit: u64, flag: Arc<AtomicBool>) -> Self {
        Self { inner, seen: 0, limit, exceeded: flag }
    }
}

/// The error a [`LimitedBody`] yields past its limit.
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than {limit} bytes")]
pub struct TooLarge {
    /// The limit in bytes.
    pub limit: u64,
}

impl<B> http_body::Body for LimitedBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    if *this.seen > *this.limit {
                        this.exceeded.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(Box::new(TooLarge { limit: *this.limit }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads a whole request body for protocols that need it at once (`stdio`, `lambda`).
///
/// # Errors
/// [`crate::Error::BodyTooLarge`] past `limits.max_body` (`exceeded` was set by the
/// [`LimitedBody`]), [`crate::Error::BadRequest`] when the body broke off,
/// [`crate::Error::Timeout`] past `deadline`.
pub(crate) async fn collect(
    body: Body,
    deadline: tokio::time::Instant,
    exceeded: &AtomicBool,
    spec: &gust_api::FunctionSpec,
) -> crate::Result<Bytes> {
    match tokio::time::timeout_at(deadline, body.collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(if exceeded.load(Ordering::Acquire) {
            crate::Error::BodyTooLarge { limit: spec.limits.max_body }
        } else {
            crate::Error::BadRequest { detail: e.to_string() }
        }),
        Err(_) => Err(crate::Error::Timeout { function: spec.name.to_string(), timeout: spec.limits.timeout }),
    }
}
