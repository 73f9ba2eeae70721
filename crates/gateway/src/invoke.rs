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

use gust_store::SyncRecord;

use crate::{Error, Gateway, call_log};

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
    /// The tag naming one of its revisions (`/function/NAME@TAG`); else the `Gust-Tag`
    /// header's, else the traffic split picks.
    pub tag: Option<&'a str>,
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
    let arrived_ms = crate::now_ms();
    let call = CallId::from_caller(req.headers().get(&X_CALL_ID).map(HeaderValue::as_bytes));
    let method = req.method().to_string();
    let path = req.uri().path_and_query().map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let mut error_text = None;
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
            error_text = Some(error.to_string());
            error.into_response(Some(&call))
        }
    };
    let ext = resp.extensions();
    call_log::send(
        gw,
        SyncRecord {
            id: call.clone(),
            function: function.to_owned(),
            method,
            path,
            status: resp.status().as_u16(),
            error: error_text,
            arrived_ms,
            answered_ms: crate::now_ms(),
            revision: ext.get::<gust_api::RevisionId>().map(ToString::to_string),
            cold_start: ext.get::<gust_runtime::ColdStart>().map(|c| c.0),
        },
    );
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(call.as_str()) {
        h.insert(X_CALL_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{:.6}", arrived.elapsed().as_secs_f64())) {
        h.insert(X_DURATION, v);
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
    let routing = gw.registry.get(function).ok_or_else(|| Error::FunctionNotFound { function: function.to_owned() })?;
    let tag = target.tag.or_else(|| req.headers().get(&GUST_TAG).and_then(|v| v.to_str().ok()));
    let revision = routing
        .pick(tag)
        .ok_or_else(|| match (&routing.failure, tag) {
            (Some(detail), None | Some("latest")) => {
                Error::NotReady { function: function.to_owned(), detail: detail.clone() }
            }
            _ => Error::TagNotFound { function: function.to_owned(), tag: tag.unwrap_or_default().to_owned() },
        })?
        .clone();
    let spec = &revision.spec;
    gw.check_caller(spec, req.headers())?;
    let limit = spec.limits.max_body;
    crate::body::check_declared(req.headers(), limit)?;
    let (mut parts, body) = req.into_parts();
    // The server's token is never passed on to a function.
    if gw.authorized(&parts.headers) {
        parts.headers.remove(header::AUTHORIZATION);
    }
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
    strip(resp.headers_mut(), |_| false);
    resp.extensions_mut().insert(revision.id.clone());
    Ok(resp)
}

fn prepare_headers(h: &mut HeaderMap, peer: SocketAddr, original: &Uri, target: &Target<'_>, call: &CallId) {
    // Callers may not forge parameters or gust's start-up probe: any they sent go with
    // the hop-by-hop headers.
    strip(h, |name| {
        name.as_str().starts_with(PARAM_PREFIX)
            || *name == X_GUST_PROBE
            || *name == LAMBDA_DIRECT
            || *name == LAMBDA_CONTEXT
    });
    let forwarded_for = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    let uri = original.path_and_query().map_or("/", http::uri::PathAndQuery::as_str);
    let host = h.get(header::HOST).filter(|v| v.to_str().is_ok()).cloned();
    let vouched = [
        (X_FORWARDED_FOR, HeaderValue::from_str(&forwarded_for).ok()),
        (X_FORWARDED_PROTO, Some(HeaderValue::from_static("http"))),
        (X_FORWARDED_URI, HeaderValue::from_str(uri).ok()),
        (X_FORWARDED_PREFIX, target.prefix.as_deref().and_then(|p| HeaderValue::from_str(p).ok())),
        (X_FORWARDED_HOST, host),
        (X_CALL_ID, HeaderValue::from_str(call.as_str()).ok()),
    ];
    for (name, value) in vouched {
        match value {
            Some(v) => {
                h.insert(name, v);
            }
            // Never pass on a caller's own value of a header gust vouches for.
            None => {
                h.remove(name);
            }
        }
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

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_CALL_ID: HeaderName = HeaderName::from_static(CALL_ID);
const X_DURATION: HeaderName = HeaderName::from_static(DURATION);
/// gust's start-up check of a revision; the invokers answer it without calling the
/// function, so a caller must never get to send it.
const X_GUST_PROBE: HeaderName = HeaderName::from_static("x-gust-probe");
/// Marks a Lambda Invoke API call; only the gateway's own Invoke API sets it.
const LAMBDA_DIRECT: HeaderName = HeaderName::from_static(gust_runtime::lambda::DIRECT);
/// A Lambda Invoke API call's client context; only the gateway's Invoke API sets it.
const LAMBDA_CONTEXT: HeaderName = HeaderName::from_static(gust_runtime::lambda::CLIENT_CONTEXT);
/// Names the revision a call goes to by its tag, as the URL's `@TAG` does (Knative's
/// `Knative-Serving-Tag`).
const GUST_TAG: HeaderName = HeaderName::from_static("gust-tag");

/// Drops the hop-by-hop headers, those named in `Connection`, and any `also` picks, in
/// one pass over the map (it runs twice on every call).
fn strip(h: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) {
    let mut doomed: Vec<HeaderName> =
        h.keys().filter(|k| HOP_BY_HOP.contains(k) || *k == header::TRANSFER_ENCODING || also(k)).cloned().collect();
    doomed.extend(
        h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
    );
    for name in doomed {
        h.remove(name);
    }
}
