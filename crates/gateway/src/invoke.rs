//! A call to a function: find its serving revision, enforce the body limit without
//! buffering, forward method, path, query, headers and body, and stamp the answer with
//! `X-Call-Id` and `X-Duration-Seconds`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use gust_api::CallId;
use gust_runtime::Body;
use gust_runtime::body::{LimitedBody, boxed};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;

use crate::{Error, Gateway};

/// The call id header, read from callers and set on every answer.
pub const CALL_ID: &str = "x-call-id";
/// Seconds from arrival to the function's response headers.
pub const DURATION: &str = "x-duration-seconds";

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), dropped both ways.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Serves `/function/{function}{path}`.
pub async fn invoke(
    gw: &Gateway,
    peer: SocketAddr,
    function: &str,
    path: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let arrived = tokio::time::Instant::now();
    let call = CallId::from_caller(req.headers().get(CALL_ID).map(HeaderValue::as_bytes));
    let mut resp = match forward(gw, peer, function, path, &call, arrived, req).await {
        Ok(resp) => {
            if resp.status().is_server_error() {
                gw.supervisor.record_error(
                    function,
                    &call,
                    resp.status().as_u16(),
                    "the function answered with a server error",
                );
            }
            resp
        }
        Err(error) => {
            let status = error.status();
            if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
                tracing::debug!(function, call_id = %call, %error, "call failed");
                gw.supervisor.record_error(function, &call, status.as_u16(), &error.to_string());
            }
            error.into_response(Some(&call))
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(call.as_str()) {
        h.insert(CALL_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{:.6}", arrived.elapsed().as_secs_f64())) {
        h.insert(DURATION, v);
    }
    resp
}

async fn forward(
    gw: &Gateway,
    peer: SocketAddr,
    function: &str,
    path: &str,
    call: &CallId,
    arrived: tokio::time::Instant,
    req: Request<Incoming>,
) -> crate::Result<Response<Body>> {
    let revision =
        gw.registry.get(function).ok_or_else(|| Error::FunctionNotFound { function: function.to_owned() })?;
    let spec = &revision.spec;
    let limit = spec.limits.max_body;
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        // Refused before a byte of the body is read.
        return Err(gust_runtime::Error::BodyTooLarge { limit }.into());
    }
    let (mut parts, body) = req.into_parts();
    let original = parts.uri.clone();
    let target = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    parts.uri = target.parse::<Uri>().map_err(|e| Error::BadRequest { message: format!("bad path: {e}") })?;
    prepare_headers(&mut parts.headers, peer, &original, function, call);
    let exceeded = Arc::new(AtomicBool::new(false));
    let body = boxed(LimitedBody::new(body, limit, exceeded.clone()));
    let deadline = arrived + spec.limits.timeout;
    let mut resp = gw.supervisor.call(&revision, call, Request::from_parts(parts, body), deadline, exceeded).await?;
    strip_hop_by_hop(resp.headers_mut());
    Ok(resp)
}

fn prepare_headers(h: &mut HeaderMap, peer: SocketAddr, original: &Uri, function: &str, call: &CallId) {
    strip_hop_by_hop(h);
    let host = h.get(header::HOST).cloned();
    let forwarded_for = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    let pairs = [
        ("x-forwarded-for", Some(forwarded_for)),
        ("x-forwarded-proto", Some("http".to_owned())),
        ("x-forwarded-uri", Some(original.to_string())),
        ("x-forwarded-prefix", Some(format!("/function/{function}"))),
        ("x-forwarded-host", host.and_then(|v| v.to_str().ok().map(str::to_owned))),
        (CALL_ID, Some(call.to_string())),
    ];
    for (name, value) in pairs {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(name, v);
        }
    }
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(named.iter()) {
        h.remove(name);
    }
    h.remove(header::TRANSFER_ENCODING);
}
