//! Delivery of async calls: [`run`] claims due calls from the store, at most
//! `async.concurrency` of each function at once, runs each on the function's revision
//! picked by its traffic (the same path a sync call takes), records the answer, retries
//! timeouts, 408, 429 and 5xx with back-off and jitter, dead-letters calls out of
//! attempts or age, and POSTs final results to the call's callback URL.
//!
//! A claimed call is marked running with one more attempt before it starts, so a crash
//! of gust mid-call leaves it running in the store; the next start queues it again
//! (at-least-once, the extra attempt visible in the record).

use crate::outbound::OutboundPolicy;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gust_api::{DeliveryPolicy, FunctionName};
use gust_runtime::Body;
use gust_runtime::body::full;
use gust_store::{Attempted, CallResult, CallStatus, StoredCall};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{Error, Gateway};

/// The longest answer kept for a call; a longer one fails the call.
pub const MAX_RESULT: u64 = 6 << 20;
/// The longest the dispatcher sleeps with nothing due. Everything that queues a call or
/// frees a place for one wakes it (an accept, an event, a schedule, a redrive, a deploy,
/// an attempt's end), and it sleeps until the earliest retry is due; this is only a
/// safety net, so an idle server does not poll its store.
const IDLE: Duration = Duration::from_secs(10);
/// Attempts at POSTing a callback, and the time each may take.
const CALLBACK_TRIES: u32 = 3;
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Async calls in flight, by function.
type InFlight = Arc<Mutex<HashMap<String, u32>>>;

/// Delivers async calls until `shutdown` flips, then waits for the attempts it began
/// (gust's drain ends them).
pub async fn run(gw: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let in_flight: InFlight = Arc::default();
    let mut attempts = JoinSet::new();
    loop {
        let mut free: HashMap<String, u32> = {
            let busy = lock(&in_flight);
            gw.registry
                .all()
                .iter()
                .map(|r| {
                    let name = r.newest.spec.name.to_string();
                    let limit = policy_of(r).concurrency;
                    let used = busy.get(&name).copied().unwrap_or(0);
                    (name, limit.saturating_sub(used))
                })
                .collect()
        };
        let now = crate::now_ms();
        // A call of a function that is gone is claimed too, to be dead-lettered.
        let claimed = gw
            .with_store(move |s| {
                let calls = s.claim(now, |f| match free.get_mut(f) {
                    Some(0) => false,
                    Some(n) => {
                        *n -= 1;
                        true
                    }
                    None => true,
                })?;
                Ok((calls, s.next_due()?))
            })
            .await;
        let wait = match claimed {
            Ok((calls, next_due)) => {
                let progress = !calls.is_empty();
                for call in calls {
                    *lock(&in_flight).entry(call.call.function.clone()).or_default() += 1;
                    attempts.spawn(attempt(gw.clone(), call, in_flight.clone()));
                }
                match next_due {
                    Some(due) if due > now => IDLE.min(Duration::from_millis(u64::try_from(due - now).unwrap_or(0))),
                    // More were due than one claim takes.
                    Some(_) if progress => Duration::ZERO,
                    // Nothing queued, or what is due waits for a place its function's
                    // attempts free (each one's end wakes this loop).
                    _ => IDLE,
                }
            }
            Err(error) => {
                tracing::error!(%error, "could not claim async calls");
                Duration::from_secs(1)
            }
        };
        while let Some(done) = attempts.try_join_next() {
            if let Err(error) = done {
                tracing::error!(%error, "an async call's task failed");
            }
        }
        tokio::select! {
            _ = gw.calls_ready.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        }
    }
    while let Some(done) = attempts.join_next().await {
        if let Err(error) = done {
            tracing::error!(%error, "an async call's task failed");
        }
    }
}

fn lock(m: &InFlight) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
    // Counters only; valid whatever panicked.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn policy_of(routing: &crate::registry::Routing) -> &DeliveryPolicy {
    &routing.current().spec.delivery
}

/// Whether an answer with `status` may change if the call is tried again: timeouts,
/// 408, 429 and 5xx (Knative's and Lambda's rule).
pub(crate) fn retryable(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// What one attempt came to.
pub(crate) struct Outcome {
    /// The revision it ran on, if it got that far.
    pub(crate) revision: Option<String>,
    /// Whether it waited for an instance to start.
    pub(crate) cold_start: Option<bool>,
    /// The whole answer, or why there is none.
    pub(crate) answer: std::result::Result<CallResult, Failure>,
}

/// An attempt that got no answer: why, and whether trying again may help.
pub(crate) struct Failure {
    /// Why, in words.
    pub(crate) error: String,
    /// The status a sync call would have been answered with (504 for a timeout, 502 for
    /// a crash, 429 for no capacity, …).
    pub(crate) status: u16,
    /// Whether trying again may help.
    pub(crate) retry: bool,
}

/// Runs one attempt of `call`, records it, and POSTs the result if it is final.
async fn attempt(gw: Arc<Gateway>, call: StoredCall, in_flight: InFlight) {
    let mut outcome = deliver(&gw, &call).await;
    if let Some(hops) = event_hops(&call)
        && let Ok(answer) = &outcome.answer
        && let Err(failure) = reply(&gw, &call, answer, hops).await
    {
        outcome.answer = Err(failure);
    }
    let policy = gw.registry.get(&call.call.function).map(|r| policy_of(&r).clone());
    let retryable = match &outcome.answer {
        Ok(r) => retryable(r.status),
        Err(f) => f.retry,
    };
    let now = crate::now_ms();
    let retry_at = policy.as_ref().filter(|_| retryable).and_then(|p| {
        let wait = jitter(p.wait_before(call.attempts + 1));
        let due = now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        let age_limit = call.age_from_ms + i64::try_from(p.max_age.as_millis()).unwrap_or(i64::MAX);
        (call.attempts <= p.retries && due < age_limit).then_some(due)
    });
    let status = match (&outcome.answer, retryable) {
        (_, true) => CallStatus::Dead,
        (Ok(r), false) if r.status < 400 => CallStatus::Succeeded,
        _ => CallStatus::Failed,
    };
    let (result, error) = match outcome.answer {
        Ok(r) => (Some(r), None),
        Err(f) => (None, Some(f.error)),
    };
    let record = Attempted {
        revision: outcome.revision,
        cold_start: outcome.cold_start,
        result,
        error,
        retry_at_ms: retry_at,
        status,
    };
    let id = call.call.id.clone();
    let stored = record.clone();
    if let Err(e) = gw.with_store(move |s| s.attempted(&id, &stored)).await {
        tracing::error!(call_id = %call.call.id, error = %e, "could not record an async call's attempt");
    }
    if let Some(n) = lock(&in_flight).get_mut(&call.call.function) {
        *n = n.saturating_sub(1);
    }
    gw.calls_ready.notify_one();
    tracing::debug!(call_id = %call.call.id, status = status.as_str(), retry = retry_at.is_some(), "async call attempted");
    if retry_at.is_none()
        && let Some(url) = &call.call.callback_url
    {
        callback(&gw.config.outbound, url, &call, &record, now).await;
    }
}

/// For an event delivery: how many replies led to it.
fn event_hops(call: &StoredCall) -> Option<u32> {
    call.call.headers.iter().find(|(k, _)| k == crate::events::HOPS.as_str()).and_then(|(_, v)| v.parse().ok())
}

/// An event delivery's answer that is itself a CloudEvent (a 2xx other than 202, as the
/// spec has it) goes back into the broker. A malformed one fails the delivery, as in
/// Knative; a reply chain past [`crate::events::MAX_HOPS`] is dropped and logged.
async fn reply(gw: &Gateway, call: &StoredCall, answer: &CallResult, hops: u32) -> std::result::Result<(), Failure> {
    if !(200..300).contains(&answer.status) || answer.status == 202 {
        return Ok(());
    }
    let headers: Vec<(&str, &str)> = answer.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    match gust_api::event::parse(&headers, &answer.body) {
        Ok(None) => Ok(()),
        Ok(Some(_)) if hops >= crate::events::MAX_HOPS => {
            tracing::warn!(call_id = %call.call.id, hops, "reply event dropped: the chain of replies is too long");
            Ok(())
        }
        Ok(Some(event)) => crate::events::route(gw, &event, hops + 1).await.map(|_| ()).map_err(|e| Failure {
            error: format!("could not store the reply event: {e}"),
            status: 500,
            retry: true,
        }),
        Err(reason) => {
            Err(Failure { error: format!("the reply is a malformed CloudEvent: {reason}"), status: 502, retry: true })
        }
    }
}

/// Sends the call to its function as a sync call would go, and reads the whole answer.
async fn deliver(gw: &Gateway, call: &StoredCall) -> Outcome {
    let fail = |error: String, retry: bool| Outcome {
        revision: None,
        cold_start: None,
        answer: Err(Failure { error, status: 503, retry }),
    };
    let function = &call.call.function;
    let Some(routing) = FunctionName::new(function).ok().and_then(|_| gw.registry.get(function)) else {
        // Retryable, but with no policy left to retry by: dead-lettered, so a redeploy
        // and a redrive can still deliver it.
        return fail(format!("function `{function}` was removed"), true);
    };
    let Some(revision) = routing.pick(None).cloned() else {
        let why = routing.failure.clone().unwrap_or_else(|| "no revision takes its calls".to_owned());
        return fail(format!("function `{function}` cannot take calls: {why}"), true);
    };
    let req = match request(call) {
        Ok(r) => r,
        Err(e) => return fail(format!("the stored request is unusable: {e}"), false),
    };
    run_to_end(gw, &revision, &call.call.id, req, MAX_RESULT).await
}

/// Runs `req` on `revision` as a sync call goes, and reads its whole answer, at most
/// `max` bytes of it, by the call's deadline.
pub(crate) async fn run_to_end(
    gw: &Gateway,
    revision: &Arc<gust_store::Revision>,
    id: &gust_api::CallId,
    req: Request<Body>,
    max: u64,
) -> Outcome {
    let spec = &revision.spec;
    let deadline = tokio::time::Instant::now() + spec.limits.timeout;
    let exceeded = Arc::new(AtomicBool::new(false));
    let started = gw.supervisor.call(revision, id, req, deadline, exceeded).await;
    let revision_id = Some(revision.id.to_string());
    let (resp, cold) = match started {
        Ok(r) => r,
        Err(e) => {
            let error = Error::from(e);
            let status = error.status().as_u16();
            return Outcome {
                revision: revision_id,
                cold_start: None,
                answer: Err(Failure { error: error.to_string(), status, retry: retryable(status) }),
            };
        }
    };
    let cold_start = Some(cold);
    let (parts, mut body) = resp.into_parts();
    let mut kept: Vec<u8> = Vec::new();
    let broke = |error: String, status: u16, retry: bool| Outcome {
        revision: revision_id.clone(),
        cold_start,
        answer: Err(Failure { error, status, retry }),
    };
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                let why =
                    format!("the function did not finish its answer within {:?} (limits.timeout)", spec.limits.timeout);
                return broke(why, 504, true);
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return broke(format!("the answer broke off: {e}"), 502, true),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if (kept.len() + data.len()) as u64 > max {
                        let why = format!("the function answered with more than {max} bytes, the most kept");
                        return broke(why, 502, false);
                    }
                    kept.extend_from_slice(&data);
                }
            }
        }
    }
    let headers =
        parts.headers.iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned()))).collect();
    // A Lambda function's error answers the Invoke API with 200 and this header; as an
    // attempt it failed (and is retried, as Lambda retries async function errors).
    let status = match parts.headers.contains_key(gust_runtime::lambda::FUNCTION_ERROR) {
        true => 500,
        false => parts.status.as_u16(),
    };
    Outcome { revision: revision_id, cold_start, answer: Ok(CallResult { status, headers, body: kept }) }
}

/// The stored request, as the function will see it, with its call id.
fn request(call: &StoredCall) -> std::result::Result<Request<Body>, String> {
    let method = Method::from_bytes(call.call.method.as_bytes()).map_err(|e| e.to_string())?;
    let uri: Uri = call.call.path.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let mut req = Request::new(full(Bytes::from(call.call.body.clone())));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    for (k, v) in &call.call.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            h.append(k, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(call.call.id.as_str()) {
        h.insert(HeaderName::from_static(crate::invoke::CALL_ID), v);
    }
    Ok(req)
}

/// ±20% of `wait`, so retries of many calls failed together spread out.
fn jitter(wait: Duration) -> Duration {
    let r = RandomState::new().hash_one(crate::now_ms()) % 401;
    wait.mul_f64(0.8 + r as f64 / 1000.0)
}

/// POSTs the final result to the call's callback URL, with `X-Call-Id`,
/// `X-Function-Status` (the function's status, or 500 when it never answered, with
/// `X-Call-Status` saying `failed` or `dead`) and `X-Duration-Seconds`. Tried
/// [`CALLBACK_TRIES`] times; a failure is logged and does not change the call.
async fn callback(policy: &OutboundPolicy, url: &str, call: &StoredCall, a: &Attempted, now: i64) {
    let status = a.result.as_ref().map_or(500, |r| r.status);
    let seconds = (now - call.accepted_ms).max(0) as f64 / 1000.0;
    for n in 1..=CALLBACK_TRIES {
        match tokio::time::timeout(CALLBACK_TIMEOUT, post(policy, url, call, a, status, seconds)).await {
            Ok(Ok(code)) if code < 500 => {
                tracing::debug!(call_id = %call.call.id, code, "callback delivered");
                return;
            }
            Ok(Ok(code)) => {
                tracing::warn!(call_id = %call.call.id, url, code, try_ = n, "callback answered with an error")
            }
            Ok(Err(e)) => tracing::warn!(call_id = %call.call.id, url, error = %e, try_ = n, "callback failed"),
            Err(_) => tracing::warn!(call_id = %call.call.id, url, try_ = n, "callback timed out"),
        }
        tokio::time::sleep(Duration::from_secs(u64::from(n))).await;
    }
}

/// One POST of a callback. The host is resolved and checked by `policy`, and the
/// connection made to a checked address; redirects are not followed (a 3xx is an
/// answer), and only the status of the answer is read, never its body.
async fn post(
    policy: &OutboundPolicy,
    url: &str,
    call: &StoredCall,
    a: &Attempted,
    status: u16,
    seconds: f64,
) -> std::io::Result<u16> {
    use std::io::Error as IoError;
    let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| IoError::other(e.to_string()))?;
    let host = uri.host().ok_or_else(|| IoError::other("no host"))?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let addrs = policy.resolve(&host, port).await.map_err(IoError::other)?;
    let stream = tokio::net::TcpStream::connect(&addrs[..]).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| IoError::other(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let body = a
        .result
        .as_ref()
        .map(|r| r.body.clone())
        .or_else(|| a.error.clone().map(String::into_bytes))
        .unwrap_or_default();
    let mut req = Request::new(full(Bytes::from(body)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e: http::uri::InvalidUri| IoError::other(e.to_string()))?;
    let h = req.headers_mut();
    let host_header = match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let content_type = a
        .result
        .as_ref()
        .and_then(|r| r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.clone()));
    for (k, v) in [
        ("host", Some(host_header)),
        ("x-call-id", Some(call.call.id.to_string())),
        ("x-function-status", Some(status.to_string())),
        ("x-call-status", Some(a.status.as_str().to_owned())),
        ("x-duration-seconds", Some(format!("{seconds:.6}"))),
        ("content-type", content_type),
    ] {
        if let Some(v) = v.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(HeaderName::from_static(k), v);
        }
    }
    let resp = sender.send_request(req).await.map_err(|e| IoError::other(e.to_string()))?;
    Ok(resp.status().as_u16())
}
