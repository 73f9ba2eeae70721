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

/// Where a call goes and what the function is told about how it was reached.
#[derive(Debug)]
pub struct Target<'a> {
    /// The function.
    pub function: &'a str,
    /// The path the function sees.
    pub path: &'a str,
    /// The part of the URL before `path` (`/function/NAME`), for `X-Forwarded-Prefix`.
    pub prefix: Option<String>,
    /// Path parameters of a custom route, sent as `X-Gust-Param-<Name>` headers.
    pub params: gust_api::route::Params,
}

/// Serves a call: `/function/{function}{path}`, a custom route, or a function's host.
pub async fn invoke(gw: &Gateway, peer: SocketAddr, target: Target<'_>, req: Request<Incoming>) -> Response<Body> {
    let function = target.function;
    let arrived = tokio::time::Instant::now();
    let call = CallId::from_caller(req.headers().get(CALL_ID).map(HeaderValue::as_bytes));
    let mut resp = match forward(gw, peer, &target, &call, arrived, req).await {
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
    target: &Target<'_>,
    call: &CallId,
    arrived: tokio::time::Instant,
    req: Request<Incoming>,
) -> crate::Result<Response<Body>> {
    let (function, path) = (target.function, target.path);
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
    let uri = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    parts.uri = uri.parse::<Uri>().map_err(|e| Error::BadRequest { message: format!("bad path: {e}") })?;
    prepare_headers(&mut parts.headers, peer, &original, target, call);
    let exceeded = Arc::new(AtomicBool::new(false));
    let body = boxed(LimitedBody::new(body, limit, exceeded.clone()));
    let deadline = arrived + spec.limits.timeout;
    let mut resp = gw.supervisor.call(&revision, call, Request::from_parts(parts, body), deadline, exceeded).await?;
    strip_hop_by_hop(resp.headers_mut());
    Ok(resp)
}

fn prepare_headers(h: &mut HeaderMap, peer: SocketAddr, original: &Uri, target: &Target<'_>, call: &CallId) {
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
        ("x-forwarded-prefix", target.prefix.clone()),
        ("x-forwarded-host", host.and_then(|v| v.to_str().ok().map(str::to_owned))),
        (CALL_ID, Some(call.to_string())),
    ];
    for (name, value) in pairs {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(name, v);
        } else {
            // Never pass on a caller's own value of a header gust vouches for.
            h.remove(name);
        }
    }
    // Callers may not forge parameters: drop any they sent, then add the route's.
    let forged: Vec<HeaderName> = h.keys().filter(|k| k.as_str().starts_with(PARAM_PREFIX)).cloned().collect();
    for k in forged {
        h.remove(k);
    }
    for (name, value) in &target.params {
        let header = format!("{PARAM_PREFIX}{}", name.replace('_', "-"));
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(header.as_bytes()), HeaderValue::from_str(value)) {
            h.insert(k, v);
        }
    }
}

/// Path parameters reach the function as `X-Gust-Param-<Name>` headers (Fission sends
/// `X-Fission-Params-<Name>`), which stdio functions see as `Http_X_Gust_Param_<Name>`.
pub const PARAM_PREFIX: &str = "x-gust-param-";

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
