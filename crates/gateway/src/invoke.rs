//! A call to a function: find its serving revision, enforce the body limit without
//! buffering, forward method, path, query, headers and body, and stamp the answer with
//! `X-Call-Id` and `X-Duration-Seconds`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use gust_api::CallId;
use gust_runtime::Body;
use gust_runtime::body::{LimitedBody, boxed};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::Incoming;

use gust_store::SyncRecord;

use crate::server::Peer;
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
    pub prefix: Option<&'a str>,
    /// Path parameters of a custom route, sent as `X-Gust-Param-<Name>` headers.
    pub params: gust_api::route::Params,
}

/// Serves a call: `/function/{function}{path}`, a custom route, or a function's host.
pub async fn invoke(gw: &Gateway, peer: &Peer, target: Target<'_>, req: Request<Incoming>) -> Response<Body> {
    let function = target.function;
    let arrived = tokio::time::Instant::now();
    let arrived_ms = crate::now_ms();
    // Made with the arrival time, which the record keeps: the id alone finds the record.
    let call = CallId::from_caller_at(
        req.headers().get(&X_CALL_ID).map(HeaderValue::as_bytes),
        u64::try_from(arrived_ms).unwrap_or(0),
    );
    let call_header = HeaderValue::from_str(call.as_str()).ok();
    let method = method_text(req.method());
    let path = req.uri().path_and_query().map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let mut error_text = None;
    let (mut revision, mut cold_start, mut name) = (None, None, None);
    let mut resp = match forward(gw, peer, &target, (&call, call_header.clone()), arrived, req).await {
        Ok(Forwarded { resp, revision: number, cold, function: shared }) => {
            (revision, cold_start, name) = (Some(number), Some(cold), Some(shared));
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
    let record = SyncRecord {
        id: call,
        function: name.unwrap_or_else(|| function.into()),
        method,
        path,
        status: resp.status().as_u16(),
        error: error_text,
        arrived_ms,
        answered_ms: crate::now_ms(),
        revision,
        cold_start,
    };
    call_log::send(gw, record);
    let h = resp.headers_mut();
    if let Some(v) = call_header {
        h.insert(X_CALL_ID, v);
    }
    h.insert(X_DURATION, seconds(arrived.elapsed()));
    resp
}

/// `d` in seconds with six decimals, as `X-Duration-Seconds` has it, written by hand:
/// `format!` with padding costs more than all the rest of the header work.
fn seconds(d: std::time::Duration) -> HeaderValue {
    // Written from the end: six decimals, the point, then the seconds (at most 20 digits).
    let mut text = [b'.'; 27];
    let mut start = text.len();
    let mut micros = d.subsec_micros();
    for _ in 0..6 {
        start -= 1;
        text[start] = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    start -= 1; // the point
    let mut secs = d.as_secs();
    loop {
        start -= 1;
        text[start] = b'0' + (secs % 10) as u8;
        secs /= 10;
        if secs == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&text[start..]).unwrap_or(HeaderValue::from_static("0.000000"))
}

/// The method's name, borrowed for the standard ones (the record outlives the request).
fn method_text(m: &http::Method) -> std::borrow::Cow<'static, str> {
    use http::Method;
    std::borrow::Cow::Borrowed(match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return std::borrow::Cow::Owned(m.as_str().to_owned()),
    })
}

/// A call the function answered: its answer, the number of the revision that did,
/// whether the call waited for an instance to start, and the function's shared name.
struct Forwarded {
    resp: Response<Body>,
    revision: u32,
    cold: bool,
    function: Arc<str>,
}

async fn forward(
    gw: &Gateway,
    peer: &Peer,
    target: &Target<'_>,
    (call, call_header): (&CallId, Option<HeaderValue>),
    arrived: tokio::time::Instant,
    req: Request<Incoming>,
) -> crate::Result<Forwarded> {
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
    // The function sees an origin-form URI of its own path; one already so stays as is.
    if path != original.path() || original.authority().is_some() {
        let uri = match original.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        parts.uri = PathAndQuery::try_from(uri)
            .map(Uri::from)
            .map_err(|e| Error::BadRequest { message: format!("bad path: {e}") })?;
    }
    prepare_headers(&mut parts.headers, peer, &original, target, call_header);
    let exceeded = Arc::new(AtomicBool::new(false));
    let body = boxed(LimitedBody::new(body, limit, exceeded.clone()));
    let deadline = arrived + spec.limits.timeout;
    let (mut resp, cold) =
        gw.supervisor.call(&revision, call, Request::from_parts(parts, body), deadline, exceeded).await?;
    strip(resp.headers_mut(), |_| false);
    Ok(Forwarded { resp, revision: revision.id.number(), cold, function: routing.name.clone() })
}

fn prepare_headers(h: &mut HeaderMap, peer: &Peer, original: &Uri, target: &Target<'_>, call: Option<HeaderValue>) {
    // Callers may not forge parameters or gust's start-up probe: any they sent go with
    // the hop-by-hop headers.
    strip(h, |name| {
        name.as_str().starts_with(PARAM_PREFIX)
            || *name == X_GUST_PROBE
            || *name == LAMBDA_DIRECT
            || *name == LAMBDA_CONTEXT
    });
    let forwarded_for = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => HeaderValue::from_str(&format!("{prior}, {}", peer.addr.ip())).ok(),
        None => peer.forwarded_for.clone(),
    };
    let uri = original.path_and_query().map_or("/", http::uri::PathAndQuery::as_str);
    let host = h.get(header::HOST).filter(|v| v.to_str().is_ok()).cloned();
    let vouched = [
        (X_FORWARDED_FOR, forwarded_for),
        (X_FORWARDED_PROTO, Some(HeaderValue::from_static("http"))),
        (X_FORWARDED_URI, HeaderValue::from_str(uri).ok()),
        (X_FORWARDED_PREFIX, target.prefix.and_then(|p| HeaderValue::from_str(p).ok())),
        (X_FORWARDED_HOST, host),
        (X_CALL_ID, call),
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
/// one pass over the map (it runs twice on every call, and usually finds nothing).
fn strip(h: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) {
    let doomed = |k: &HeaderName| HOP_BY_HOP.contains(k) || *k == header::TRANSFER_ENCODING || also(k);
    if !h.keys().any(doomed) {
        return;
    }
    let mut doomed: Vec<HeaderName> = h.keys().filter(|k| doomed(k)).cloned().collect();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_are_written_in_seconds_with_six_decimals() {
        for (d, text) in [
            (Duration::ZERO, "0.000000"),
            (Duration::from_micros(1), "0.000001"),
            (Duration::from_nanos(1_234_567_890), "1.234567"),
            (Duration::from_secs(86_400), "86400.000000"),
            (Duration::MAX, "18446744073709551615.999999"),
        ] {
            assert_eq!(super::seconds(d).to_str().ok(), Some(text));
        }
    }

    #[test]
    fn standard_methods_are_borrowed_and_others_kept_as_sent() {
        use std::borrow::Cow;
        assert!(matches!(super::method_text(&http::Method::POST), Cow::Borrowed("POST")));
        let custom = http::Method::from_bytes(b"PURGE").unwrap();
        assert!(matches!(super::method_text(&custom), Cow::Owned(ref m) if m == "PURGE"));
    }
}
