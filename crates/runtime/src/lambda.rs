//! The `lambda` protocol: each instance gets its own AWS Lambda Runtime API
//! (`/2018-06-01/runtime/…`) on a loopback port, named by `AWS_LAMBDA_RUNTIME_API`, and
//! its runtime client pulls calls from it, so unmodified Lambda handlers and the official
//! runtime interface clients run as they do on AWS.
//!
//! A call becomes an invocation: an HTTP call as an API Gateway v2 event (the handler's
//! result mapped back to HTTP), a Lambda Invoke API call ([`DIRECT`]) as its payload
//! untouched. It waits in the instance's queue until the client's `GET …/next` takes it,
//! and ends with the client's `POST …/{id}/response` or `…/{id}/error`, the instance's
//! death, or the deadline — which kills the instance, as Lambda does.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gust_api::lambda::{FunctionError, HttpCall, RuntimeApiRoute};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot, watch};

use crate::body::{Body, full};
use gust_store::Revision;

use crate::instance::{Instance, Target};
use crate::pool::Slot;
use crate::{Error, Result};

/// Marks a call from the Lambda Invoke API: its body is the event, passed untouched, and
/// a function error is answered as Lambda's Invoke API answers it (200 with
/// `X-Amz-Function-Error`). The gateway sets it and strips it from callers.
pub const DIRECT: &str = "x-gust-lambda-direct";
/// The client context of a direct call (the Invoke API's `X-Amz-Client-Context`,
/// decoded), passed to the client as `Lambda-Runtime-Client-Context`. The gateway sets it
/// and strips it from callers.
pub const CLIENT_CONTEXT: &str = "x-gust-lambda-client-context";
/// The header a direct call's answer carries when the function failed.
pub const FUNCTION_ERROR: &str = "x-amz-function-error";
/// The largest response a function may post: Lambda's 6 MB synchronous payload limit.
pub const MAX_RESPONSE: usize = 6 * 1024 * 1024;
/// The largest error document a function may post.
const MAX_ERROR: usize = 1024 * 1024;
/// Finished request ids remembered, to tell a second answer (403) from a bad id (400).
const REMEMBERED: usize = 64;
/// How long to wait for a dead instance's exit status before describing a failure.
const DEATH_GRACE: Duration = Duration::from_millis(300);

/// How an invocation ended, as the runtime client reported it.
#[derive(Debug)]
enum Outcome {
    /// `POST …/response`.
    Response(Bytes),
    /// `POST …/error`: the document as posted, and what it says.
    Error(Bytes, FunctionError),
}

/// A call waiting for the runtime client.
struct Invocation {
    id: String,
    event: Bytes,
    deadline_ms: u64,
    client_context: Option<String>,
    reply: oneshot::Sender<Outcome>,
}

/// Where the runtime client is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Started; has not asked for work yet (initialising).
    Starting,
    /// Has asked for work at least once: initialised.
    Polling,
    /// Reported that initialisation failed.
    InitFailed(String),
}

/// One instance's Runtime API.
#[derive(Debug)]
pub struct Bridge {
    addr: SocketAddr,
    arn: String,
    queue: mpsc::UnboundedSender<Invocation>,
    waiting: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    state: Mutex<BridgeState>,
    phase: watch::Sender<Phase>,
}

#[derive(Debug, Default)]
struct BridgeState {
    in_flight: HashMap<String, oneshot::Sender<Outcome>>,
    finished: VecDeque<String>,
}

impl std::fmt::Debug for Invocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocation").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Bridge {
    /// Binds a Runtime API for one instance of `function` on a free loopback port.
    pub(crate) fn bind(function: &str) -> std::io::Result<(Arc<Self>, std::net::TcpListener)> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let (queue, waiting) = mpsc::unbounded_channel();
        let bridge = Arc::new(Self {
            addr: listener.local_addr()?,
            arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{function}"),
            queue,
            waiting: tokio::sync::Mutex::new(waiting),
            state: Mutex::new(BridgeState::default()),
            phase: watch::channel(Phase::Starting).0,
        });
        Ok((bridge, listener))
    }

    /// The loopback port it serves on.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub(crate) fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Serves the Runtime API until `dead` turns true (the process has exited); then its
    /// connections, and any `next` poll, end with it.
    pub(crate) fn serve(self: &Arc<Self>, listener: std::net::TcpListener, mut dead: watch::Receiver<bool>) {
        let me = self.clone();
        tokio::spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = dead.wait_for(|d| *d) => return,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let bridge = me.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                let bridge = bridge.clone();
                                async move { Ok::<_, std::convert::Infallible>(bridge.handle(req).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BridgeState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the runtime client has reported about its start.
    pub(crate) fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// The init error the client reported, if it did.
    fn init_error(&self) -> Option<String> {
        match &*self.phase.borrow() {
            Phase::InitFailed(e) => Some(e.clone()),
            _ => None,
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        match gust_api::lambda::route(req.method().as_str(), &path) {
            RuntimeApiRoute::Next => self.next().await,
            RuntimeApiRoute::Response(id) => {
                let id = id.to_owned();
                match read(req, MAX_RESPONSE).await {
                    Ok(body) => self.finish(&id, Outcome::Response(body)),
                    Err(Read::TooLarge) => {
                        let e = FunctionError {
                            error_type: "Function.ResponseSizeTooLarge".into(),
                            error_message: format!(
                                "Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE} bytes)."
                            ),
                        };
                        let answer = self.finish(&id, Outcome::Error(Bytes::from(e.to_json()), e.clone()));
                        if answer.status().is_success() { api_error(StatusCode::PAYLOAD_TOO_LARGE, &e) } else { answer }
                    }
                    Err(Read::Broken(e)) => bad_request(&e),
                }
            }
            RuntimeApiRoute::Error(id) => {
                let id = id.to_owned();
                let header = error_type_header(&req);
                match read(req, MAX_ERROR).await {
                    Ok(body) => {
                        let parsed = FunctionError::parse(&body, header.as_deref());
                        self.finish(&id, Outcome::Error(body, parsed))
                    }
                    Err(Read::TooLarge) => too_large(MAX_ERROR),
                    Err(Read::Broken(e)) => bad_request(&e),
                }
            }
            RuntimeApiRoute::InitError => {
                let header = error_type_header(&req);
                match read(req, MAX_ERROR).await {
                    Ok(body) => {
                        let e = FunctionError::parse(&body, header.as_deref());
                        self.phase.send_replace(Phase::InitFailed(e.to_string()));
                        accepted()
                    }
                    Err(Read::TooLarge) => too_large(MAX_ERROR),
                    Err(Read::Broken(e)) => bad_request(&e),
                }
            }
            RuntimeApiRoute::WrongMethod(allow) => {
                let mut resp = api_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &FunctionError { error_type: "MethodNotAllowed".into(), error_message: format!("use {allow}") },
                );
                resp.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static(allow));
                resp
            }
            RuntimeApiRoute::NotFound => api_error(
                StatusCode::NOT_FOUND,
                &FunctionError {
                    error_type: "NotFound".into(),
                    error_message: format!("{path} is not part of the Runtime API gust serves"),
                },
            ),
        }
    }

    /// `GET …/next`: the long poll. Waits for a call whose caller is still there.
    async fn next(&self) -> Response<Body> {
        self.phase.send_if_modified(|p| {
            let starting = *p == Phase::Starting;
            if starting {
                *p = Phase::Polling;
            }
            starting
        });
        let inv = loop {
            let got = self.waiting.lock().await.recv().await;
            match got {
                // The sender lives in `self`, so the queue never closes while this runs.
                None => return api_error(StatusCode::INTERNAL_SERVER_ERROR, &shutting_down()),
                Some(inv) if inv.reply.is_closed() => {}
                Some(inv) => break inv,
            }
        };
        self.lock().in_flight.insert(inv.id.clone(), inv.reply);
        let mut resp = Response::new(full(inv.event));
        let h = resp.headers_mut();
        let trace = trace_id();
        for (name, value) in [
            ("lambda-runtime-aws-request-id", inv.id.as_str()),
            ("lambda-runtime-deadline-ms", &inv.deadline_ms.to_string()),
            ("lambda-runtime-invoked-function-arn", self.arn.as_str()),
            ("lambda-runtime-trace-id", &trace),
            ("content-type", "application/json"),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        }
        if let Some(v) = inv.client_context.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
            h.insert("lambda-runtime-client-context", v);
        }
        resp
    }

    /// Completes invocation `id` with `outcome`, if it is in flight.
    fn finish(&self, id: &str, outcome: Outcome) -> Response<Body> {
        let reply = {
            let mut st = self.lock();
            let reply = st.in_flight.remove(id);
            if reply.is_some() {
                if st.finished.len() == REMEMBERED {
                    st.finished.pop_front();
                }
                st.finished.push_back(id.to_owned());
            } else if st.finished.iter().any(|f| f == id) {
                return api_error(
                    StatusCode::FORBIDDEN,
                    &FunctionError {
                        error_type: "InvalidStateTransition".into(),
                        error_message: format!("invocation {id} was already answered"),
                    },
                );
            }
            reply
        };
        match reply {
            Some(tx) => {
                // The caller may have gone (client disconnect); the answer is then unwanted.
                let _ = tx.send(outcome);
                accepted()
            }
            None => api_error(
                StatusCode::BAD_REQUEST,
                &FunctionError {
                    error_type: "InvalidRequestID".into(),
                    error_message: format!("no invocation {id} is in progress"),
                },
            ),
        }
    }

    /// Queues an invocation; unique ids even when callers reuse a call id.
    fn submit(
        &self,
        id: &str,
        event: Bytes,
        deadline_ms: u64,
        client_context: Option<String>,
    ) -> oneshot::Receiver<Outcome> {
        let (reply, rx) = oneshot::channel();
        let id = if self.lock().in_flight.contains_key(id) {
            format!("{id}-{}", &uuid::Uuid::now_v7().simple().to_string()[20..])
        } else {
            id.to_owned()
        };
        // The receiver lives in `self`; sending fails only if it was dropped, and then the
        // caller sees the instance die.
        let _ = self.queue.send(Invocation { id, event, deadline_ms, client_context, reply });
        rx
    }
}

enum Read {
    TooLarge,
    Broken(String),
}

async fn read(req: Request<Incoming>, limit: usize) -> std::result::Result<Bytes, Read> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(Read::TooLarge),
        Err(e) => Err(Read::Broken(e.to_string())),
    }
}

fn error_type_header(req: &Request<Incoming>) -> Option<String> {
    req.headers().get("lambda-runtime-function-error-type").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn accepted() -> Response<Body> {
    let mut resp = Response::new(full(&br#"{"status":"OK"}"#[..]));
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

fn api_error(status: StatusCode, e: &FunctionError) -> Response<Body> {
    let mut resp = Response::new(full(e.to_json()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn bad_request(detail: &str) -> Response<Body> {
    api_error(
        StatusCode::BAD_REQUEST,
        &FunctionError {
            error_type: "InvalidRequest".into(),
            error_message: format!("could not read the body: {detail}"),
        },
    )
}

fn too_large(limit: usize) -> Response<Body> {
    api_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &FunctionError {
            error_type: "RequestEntityTooLarge".into(),
            error_message: format!("the body is larger than {limit} bytes"),
        },
    )
}

fn shutting_down() -> FunctionError {
    FunctionError { error_type: "ServiceException".into(), error_message: "the instance is stopping".into() }
}

/// An X-Ray trace header of the shape the clients pass on (`_X_AMZN_TRACE_ID`).
fn trace_id() -> String {
    let hex = uuid::Uuid::now_v7().simple().to_string();
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("Root=1-{secs:08x}-{};Parent={};Sampled=0", &hex[8..32], &hex[16..32])
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Serves one call on the slot's (lambda) instance.
///
/// # Errors
/// [`Error::BodyTooLarge`], [`Error::BadRequest`], [`Error::Timeout`] (the instance is
/// killed), [`Error::StartFailed`] when the runtime client failed to initialise,
/// [`Error::Crashed`] when the instance died, [`Error::BadAnswer`] for a result that
/// claims to be an HTTP response but is not one.
pub async fn call(
    slot: Slot,
    req: Request<Body>,
    deadline: tokio::time::Instant,
    exceeded: Arc<AtomicBool>,
) -> Result<Response<Body>> {
    let instance = slot.instance().clone();
    let spec = &instance.revision.spec;
    let Some(Target::Lambda(bridge)) = instance.target().cloned() else {
        return Err(Error::Crashed { function: spec.name.to_string(), detail: "instance has no Runtime API".into() });
    };
    let arrived_ms = epoch_ms();
    let (parts, body) = req.into_parts();
    let body = crate::body::collect(body, deadline, &exceeded, spec).await?;
    let direct = parts.headers.contains_key(DIRECT);
    let event = if direct {
        body
    } else {
        let headers: Vec<(&str, &[u8])> = parts.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
        Bytes::from(gust_api::lambda::http_event(&HttpCall {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers,
            body: &body,
            request_id: slot.call().as_str(),
            time_ms: i64::try_from(arrived_ms).unwrap_or(i64::MAX),
        }))
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let deadline_ms = epoch_ms() + u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
    let client_context = match direct {
        true => parts.headers.get(CLIENT_CONTEXT).and_then(|v| v.to_str().ok()).map(str::to_owned),
        false => None,
    };
    let reply = bridge.submit(slot.call().as_str(), event, deadline_ms, client_context);
    let outcome = tokio::select! {
        r = reply => r.ok(),
        _ = instance.wait_dead(Duration::MAX) => None,
        () = tokio::time::sleep_until(deadline) => {
            let err = Error::Timeout { function: spec.name.to_string(), timeout: spec.limits.timeout };
            slot.discard();
            return Err(err);
        }
    };
    let Some(outcome) = outcome else {
        return Err(died(slot, &instance, &bridge).await);
    };
    instance.answered();
    drop(slot);
    let mut resp = match (outcome, direct) {
        (Outcome::Response(result), true) => json_response(StatusCode::OK, result),
        (Outcome::Error(doc, _), true) => {
            let mut resp = json_response(StatusCode::OK, doc);
            resp.headers_mut().insert(FUNCTION_ERROR, HeaderValue::from_static("Unhandled"));
            resp
        }
        (Outcome::Response(result), false) => {
            let answer = gust_api::lambda::http_answer(&result)
                .map_err(|detail| Error::BadAnswer { function: spec.name.to_string(), detail })?;
            let mut resp = Response::new(full(answer.body));
            *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
            for (k, v) in answer.headers {
                if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
                    resp.headers_mut().append(k, v);
                }
            }
            resp
        }
        // API Gateway answers a function error with 500; gust says what the error was.
        (Outcome::Error(_, e), false) => json_response(StatusCode::INTERNAL_SERVER_ERROR, Bytes::from(e.to_json())),
    };
    resp.headers_mut().remove(http::header::CONTENT_LENGTH);
    Ok(resp)
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The instance died with the call in flight or queued: the client's init error if it
/// reported one, else how the process ended.
async fn died(slot: Slot, instance: &Arc<Instance>, bridge: &Bridge) -> Error {
    let function = instance.function().to_owned();
    instance.wait_dead(DEATH_GRACE).await;
    let never_served = !instance.has_answered();
    slot.discard();
    match bridge.init_error() {
        Some(e) => Error::StartFailed { function, detail: format!("the runtime client failed to initialise: {e}") },
        None if never_served => Error::StartFailed { function, detail: instance.death_detail("exited") },
        None => Error::Crashed { function, detail: instance.death_detail("exited") },
    }
}

/// The start-up check of a lambda instance: it is ready once its runtime client asks for
/// work; an init error it reports, or its death, fails the revision with what it said.
pub(crate) async fn check_ready(
    instance: &Instance,
    bridge: &Bridge,
    deadline: tokio::time::Instant,
) -> std::result::Result<(), String> {
    let mut phase = bridge.phase();
    let settled = tokio::select! {
        p = phase.wait_for(|p| *p != Phase::Starting) => p.map(|p| p.clone()).ok(),
        _ = instance.wait_dead(Duration::MAX) => None,
        () = tokio::time::sleep_until(deadline) => {
            instance.kill();
            return Err(format!(
                "instance {} did not ask for work within {} (limits.timeout)",
                instance.id,
                humantime::format_duration(instance.revision.spec.limits.timeout)
            ));
        }
    };
    match settled {
        Some(Phase::Polling) => Ok(()),
        Some(Phase::InitFailed(e)) => {
            instance.kill();
            Err(format!("the runtime client failed to initialise: {e}"))
        }
        _ => {
            instance.wait_dead(DEATH_GRACE).await;
            match bridge.init_error() {
                Some(e) => Err(format!("the runtime client failed to initialise: {e}")),
                None => Err(instance.death_detail("exited before it asked for work")),
            }
        }
    }
}

/// The environment the Lambda runtime clients read (AWS's names and meanings): where the
/// Runtime API is, the function's name, version, memory and timeout, the handler and the
/// task root. `AWS_LAMBDA_MAX_CONCURRENCY` only when an instance takes several calls at
/// once, as clients switch to their concurrent mode when it is set.
pub(crate) fn env(revision: &Revision, instance: &str, api: &str) -> Vec<(String, OsString)> {
    let spec = &revision.spec;
    let memory_mb = spec.limits.memory.map_or(128, |b| b >> 20);
    let mut env: Vec<(String, OsString)> = vec![
        ("AWS_LAMBDA_RUNTIME_API".into(), api.into()),
        ("AWS_LAMBDA_FUNCTION_NAME".into(), spec.name.as_str().into()),
        ("AWS_LAMBDA_FUNCTION_VERSION".into(), revision.id.to_string().into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), memory_mb.to_string().into()),
        ("AWS_LAMBDA_FUNCTION_TIMEOUT".into(), spec.limits.timeout.as_secs().max(1).to_string().into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME".into(), format!("/aws/lambda/{}", spec.name).into()),
        ("AWS_LAMBDA_LOG_STREAM_NAME".into(), instance.into()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE".into(), "on-demand".into()),
        ("_HANDLER".into(), spec.handler.clone().into()),
        ("LAMBDA_TASK_ROOT".into(), revision.code_dir.clone().into()),
        ("LAMBDA_RUNTIME_DIR".into(), revision.code_dir.clone().into()),
        ("AWS_EXECUTION_ENV".into(), format!("gust_{}", spec.runtime).into()),
        ("TZ".into(), ":UTC".into()),
    ];
    if spec.scale.concurrency > 1 {
        env.push(("AWS_LAMBDA_MAX_CONCURRENCY".into(), spec.scale.concurrency.to_string().into()));
    }
    // The manifest's env comes last, so a function may set what it needs differently.
    env.retain(|(k, _)| !spec.env.contains_key(k));
    env
}
