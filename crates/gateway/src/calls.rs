//! Async calls at the edge: `POST /async-function/{name}` stores the call and answers 202
//! once it is on disk; `GET /calls/{id}` shows a call's record; the control API lists a
//! function's calls and redrives or purges its dead letters. Delivery is
//! [`crate::dispatch`]'s.

use gust_api::CallId;
use gust_api::wire::{AsyncAccepted, CallAnswer, CallRecord, DlqAnswer, DlqRequest, base64};
use gust_runtime::Body;
use gust_store::{CallStatus, NewCall, StoredCall};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::control::json;
use crate::router::query_pairs;
use crate::{Error, Gateway, Result};

/// Where the result of an async call is POSTed once it is final.
pub const CALLBACK_URL: HeaderName = HeaderName::from_static("x-callback-url");

/// Calls listed when the caller does not say how many.
const DEFAULT_LIMIT: u32 = 50;
/// The most calls one listing returns.
const MAX_LIMIT: u32 = 1000;
/// Log lines searched for a call's own lines (from the end of the function's log).
const LOG_WINDOW: usize = 5000;

/// Headers that describe the hop, not the call: not stored with it.
const NOT_STORED: [HeaderName; 8] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    CALLBACK_URL,
];

/// `POST /async-function/{function}{path}`: validates and stores the call, wakes the
/// dispatcher, and answers 202 with `X-Call-Id` and `Location: /calls/{id}`.
///
/// # Errors
/// 404 for an unknown function, 413 past its `limits.max_body`, 400 for a bad
/// `X-Callback-Url`, 409 for a call id another function's call has.
pub async fn accept(gw: &Gateway, function: &str, path: &str, req: Request<Incoming>) -> Result<Response<Body>> {
    let routing = gw.registry.get(function).ok_or_else(|| Error::FunctionNotFound { function: function.to_owned() })?;
    let spec = &routing.current().spec;
    gw.check_caller(spec, req.headers())?;
    let limit = spec.limits.max_body;
    crate::body::check_declared(req.headers(), limit)?;
    let callback_url = match req.headers().get(&CALLBACK_URL) {
        None => None,
        Some(v) => Some(check_callback(gw, v).await?),
    };
    let id = CallId::from_caller(req.headers().get(crate::invoke::CALL_ID).map(HeaderValue::as_bytes));
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let method = req.method().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter(|(k, _)| !NOT_STORED.contains(k) && k.as_str() != crate::invoke::CALL_ID)
        // The server's token is neither stored nor passed on to the function.
        .filter(|(k, _)| *k != header::AUTHORIZATION || !gw.authorized(req.headers()))
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = crate::body::read_whole(req, limit).await?.1.to_vec();
    let call = NewCall {
        id: id.clone(),
        function: function.to_owned(),
        method,
        path: path_and_query,
        headers,
        body,
        callback_url,
    };
    let fresh = enqueue(gw, call, spec.delivery.max_queued).await?;
    let location = format!("/calls/{id}");
    let answer = AsyncAccepted {
        call_id: id.to_string(),
        location: location.clone(),
        status: if fresh { "queued" } else { "duplicate" }.to_owned(),
    };
    let mut resp = json(StatusCode::ACCEPTED, &answer);
    let h = resp.headers_mut();
    if let (Ok(i), Ok(l)) = (HeaderValue::from_str(id.as_str()), HeaderValue::from_str(&location)) {
        h.insert(HeaderName::from_static(crate::invoke::CALL_ID), i);
        h.insert(header::LOCATION, l);
    }
    Ok(resp)
}

/// Stores an async call and wakes the dispatcher; `false` when a call with its id was
/// already stored (an idempotent retry).
///
/// # Errors
/// 409 for an id another function's call has, 429 when the function already has
/// `max_queued` calls pending; store failures.
pub(crate) async fn enqueue(gw: &Gateway, call: NewCall, max_queued: u32) -> Result<bool> {
    let fresh = gw.with_store(move |s| s.enqueue(&call, max_queued)).await?;
    gw.calls_ready.notify_one();
    Ok(fresh)
}

/// A callback URL must be an absolute `http://` URL with a host whose addresses gust may
/// reach ([`crate::outbound`]); it is checked again when the callback is made.
async fn check_callback(gw: &Gateway, value: &HeaderValue) -> Result<String> {
    let bad = |why: &str| Error::BadRequest { message: format!("X-Callback-Url: {why}") };
    let text = value.to_str().map_err(|_| bad("not visible ASCII"))?;
    let uri: http::Uri = text.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(bad("https is not supported yet; use an http:// URL")),
        _ => return Err(bad("must be an absolute http:// URL")),
    }
    let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
        return Err(bad("has no host"));
    };
    gw.config.outbound.resolve(host, uri.port_u16().unwrap_or(80)).await.map_err(|why| bad(&why))?;
    Ok(text.to_owned())
}

/// `GET /calls/{id}`: the call's record with the log lines it wrote.
///
/// # Errors
/// 404 for an unknown call.
pub async fn get(gw: &Gateway, id: &str) -> Result<Response<Body>> {
    let owned = id.to_owned();
    let call =
        gw.with_store(move |s| s.call(&owned)).await?.ok_or_else(|| Error::CallNotFound { id: id.to_owned() })?;
    let logs = gw.supervisor.logs().clone();
    let function = call.call.function.clone();
    let wanted = call.call.id.to_string();
    let lines = tokio::task::spawn_blocking(move || logs.tail(&function, LOG_WINDOW))
        .await
        .map_err(|e| Error::Internal(format!("log read failed: {e}")))?;
    let mut rec = record(&call);
    rec.logs = lines.into_iter().filter(|l| l.call_id.as_deref() == Some(wanted.as_str())).collect();
    Ok(json(StatusCode::OK, &rec))
}

/// `GET /api/v1/functions/{name}/calls?status=S&limit=N`: the newest calls first.
///
/// # Errors
/// 400 for a bad parameter.
pub async fn list(gw: &Gateway, function: &str, query: Option<&str>) -> Result<Response<Body>> {
    let mut status = None;
    let mut limit = DEFAULT_LIMIT;
    for (k, v) in query_pairs(query) {
        match k {
            "status" => {
                status = Some(CallStatus::parse(&v).ok_or_else(|| Error::BadRequest {
                    message: format!("unknown status `{v}`; use queued, running, succeeded, failed or dead"),
                })?)
            }
            "limit" => {
                limit =
                    v.parse::<u32>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| Error::BadRequest {
                        message: format!("limit must be 1–{MAX_LIMIT}, not `{v}`"),
                    })?
            }
            other => {
                return Err(Error::BadRequest {
                    message: format!("unknown parameter `{other}`; use status and limit"),
                });
            }
        }
    }
    let owned = function.to_owned();
    let calls = gw.with_store(move |s| s.calls(&owned, status, limit)).await?;
    let rows: Vec<CallRecord> = calls.iter().map(record).collect();
    Ok(json(StatusCode::OK, &rows))
}

/// `POST /api/v1/functions/{name}/dlq/redrive` (`purge` when `purge`): one dead call, or
/// all of them.
///
/// # Errors
/// 400 for a bad body, 404 when a named call is not a dead call of the function.
pub async fn dead_letters(gw: &Gateway, function: &str, req: Request<Incoming>, purge: bool) -> Result<Response<Body>> {
    let request: DlqRequest = crate::control::read_json(req).await?;
    let (owned, id) = (function.to_owned(), request.id.clone());
    let n = gw
        .with_store(move |s| if purge { s.purge(&owned, id.as_deref()) } else { s.redrive(&owned, id.as_deref()) })
        .await?;
    if let Some(id) = request.id
        && n == 0
    {
        return Err(Error::CallNotFound { id: format!("{id} (no dead call of {function} has it)") });
    }
    if !purge {
        gw.calls_ready.notify_one();
    }
    tracing::info!(function, calls = n, action = if purge { "purge" } else { "redrive" }, "dead letters");
    Ok(json(StatusCode::OK, &DlqAnswer { function: function.to_owned(), calls: n }))
}

/// A stored call as the API shows it.
pub(crate) fn record(c: &StoredCall) -> CallRecord {
    let when = crate::rfc3339_ms;
    CallRecord {
        id: c.call.id.to_string(),
        function: c.call.function.clone(),
        status: c.status.as_str().to_owned(),
        attempts: c.attempts,
        accepted_at: when(c.accepted_ms),
        started_at: c.started_ms.map(when),
        ended_at: c.ended_ms.map(when),
        duration_seconds: c.ended_ms.map(|end| (end - c.accepted_ms).max(0) as f64 / 1000.0),
        revision: c.revision.clone(),
        cold_start: c.cold_start,
        callback_url: c.call.callback_url.clone(),
        result: c.result.as_ref().map(|r| {
            let (body, body_base64) = match std::str::from_utf8(&r.body) {
                Ok(text) => (Some(text.to_owned()), None),
                Err(_) => (None, Some(base64(&r.body))),
            };
            CallAnswer { status: r.status, headers: r.headers.clone(), body, body_base64 }
        }),
        error: c.error.clone(),
        logs: Vec::new(),
    }
}
