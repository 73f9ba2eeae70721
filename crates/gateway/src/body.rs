//! Bodies the gateway handles itself: a response fed from a channel, for streams it
//! writes (`logs -f`), and whole request bodies read under a limit.

use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Request, header};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use gust_runtime::body::{BoxError, LimitedBody};

use crate::{Error, Result};

/// Refuses a request whose `Content-Length` is over `limit` before a byte of it is read.
///
/// # Errors
/// 413 ([`gust_runtime::Error::BodyTooLarge`]).
pub(crate) fn check_declared(headers: &HeaderMap, limit: u64) -> Result<()> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(gust_runtime::Error::BodyTooLarge { limit }.into());
    }
    Ok(())
}

/// Reads a whole request body of at most `limit` bytes, refusing a larger declared
/// length before reading; returns the request's head and its body.
///
/// # Errors
/// 413 past `limit`, 400 when the body breaks off.
pub(crate) async fn read_whole(req: Request<Incoming>, limit: u64) -> Result<(http::request::Parts, Bytes)> {
    check_declared(req.headers(), limit)?;
    let (parts, body) = req.into_parts();
    let exceeded = Arc::new(AtomicBool::new(false));
    match LimitedBody::new(body, limit, exceeded.clone()).collect().await {
        Ok(c) => Ok((parts, c.to_bytes())),
        Err(_) if exceeded.load(Ordering::Acquire) => Err(gust_runtime::Error::BodyTooLarge { limit }.into()),
        Err(e) => Err(Error::BadRequest { message: format!("could not read the body: {e}") }),
    }
}

/// Ends when every sender is gone.
pub(crate) struct ChannelBody {
    pub(crate) rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
