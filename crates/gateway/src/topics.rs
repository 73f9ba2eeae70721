//! Topics at the edge and their consumers.
//!
//! The API creates, lists, describes and removes topics and publishes to them (the
//! message is on disk before the answer). [`run`] keeps one consumer per partition of
//! every function with `input = "TOPIC"`: it reads the partition from the function's
//! committed offset, calls the function with each message in turn (so order holds within
//! a partition), appends a successful result to the function's `output` topic, then
//! commits. A message that still fails after the function's `[async]` retries is
//! dead-lettered as a call (so `gust dlq` shows and redrives it) and passed. A publisher
//! that asked for the reply gets the first consumer's answer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gust_api::{CallId, FunctionName};
use gust_runtime::Body;
use gust_runtime::body::full;
use gust_store::{Attempted, CallResult, CallStatus, Message, NewCall, TopicInfo};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::control::{json, read_json};
use crate::dispatch::{Failure, Outcome};
use crate::router::query_pairs;
use crate::{Error, Gateway, Result};

/// The largest message accepted, in bytes.
pub const MAX_MESSAGE: u64 = 1 << 20;
/// Partitions a topic may have at most.
const MAX_PARTITIONS: u32 = 64;
/// How long a publisher waits for a reply at most.
const REPLY_WAIT: Duration = Duration::from_secs(60);
/// How long the consumers go unreconciled with the functions deployed when nothing
/// changes (a deploy, a removal or a topic change reconciles them at once): the bound on
/// how long a consumer that stopped by itself stays stopped.
const RECONCILE: Duration = Duration::from_secs(30);
/// How long an idle consumer waits before it looks again: a publish wakes it at once, so
/// this only bounds the damage of a wake-up that never came.
const IDLE: Duration = Duration::from_secs(10);
/// How long a consumer waits after a failure to read its topic.
const RETRY_READ: Duration = Duration::from_millis(250);
/// How long past a retry's wait its function keeps an instance.
const HOLD: Duration = Duration::from_secs(2);
/// Replies kept for publishers that ask after the consumer is done.
const KEPT_REPLIES: usize = 1024;

/// `POST /api/v1/topics`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CreateTopic {
    /// The topic's name (a DNS label, like a function's).
    pub name: String,
    /// Partitions; default 1.
    #[serde(default)]
    pub partitions: Option<u32>,
    /// Messages older than this go, e.g. `"24h"` (the default).
    #[serde(default)]
    pub retention: Option<String>,
    /// A partition holding more bodies than this loses its oldest, e.g. `"1Gi"` (the default).
    #[serde(default)]
    pub retention_bytes: Option<String>,
}

/// A topic as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct TopicView {
    /// Its name.
    pub name: String,
    /// Its partitions.
    pub partitions: u32,
    /// Its retention age, e.g. `24h`.
    pub retention: String,
    /// Its retention size per partition, in bytes.
    pub retention_bytes: i64,
    /// Per partition: the kept range, and each consumer's committed offset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<PartitionView>,
}

/// One partition and its consumers.
#[derive(Debug, Serialize, Deserialize)]
pub struct PartitionView {
    /// The partition.
    pub partition: u32,
    /// The oldest offset kept.
    pub start: i64,
    /// The offset the next message gets.
    pub end: i64,
    /// Consumer → the offset it resumes at (the messages before it are done).
    pub consumers: std::collections::BTreeMap<String, i64>,
}

/// Where a published message went.
#[derive(Debug, Serialize, Deserialize)]
pub struct Published {
    /// The topic.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset there.
    pub offset: i64,
}

/// A consumer's answer to one message, for a publisher waiting for it.
#[derive(Debug, Clone)]
struct Reply {
    function: String,
    result: std::result::Result<CallResult, String>,
}

type MessageKey = (String, u32, i64);

/// Replies by message, and publishers waiting for them.
#[derive(Debug, Default)]
pub struct Replies {
    done: HashMap<MessageKey, Reply>,
    order: VecDeque<MessageKey>,
    waiting: HashMap<MessageKey, Vec<oneshot::Sender<Reply>>>,
}

impl Replies {
    fn deliver(&mut self, key: MessageKey, reply: Reply) {
        if let Some(waiters) = self.waiting.remove(&key) {
            for w in waiters {
                let _ = w.send(reply.clone());
            }
            return;
        }
        if self.order.len() == KEPT_REPLIES
            && let Some(old) = self.order.pop_front()
        {
            self.done.remove(&old);
        }
        self.order.push_back(key.clone());
        self.done.insert(key, reply);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain maps; valid whatever panicked.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn topic_name(name: &str) -> Result<String> {
    FunctionName::new(name)
        .map(|n| n.as_str().to_owned())
        .map_err(|e| Error::BadRequest { message: format!("`{name}` is not a valid topic name: {e}") })
}

/// `POST /api/v1/topics` with a [`CreateTopic`]: 201.
///
/// # Errors
/// 400 for bad settings, 409 when it exists.
pub async fn create(gw: &Gateway, req: Request<Incoming>) -> Result<Response<Body>> {
    let c: CreateTopic = read_json(req).await?;
    let bad = |message: String| Error::BadRequest { message };
    let name = topic_name(&c.name)?;
    let partitions = c.partitions.unwrap_or(1);
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(bad(format!("partitions must be 1–{MAX_PARTITIONS}, not {partitions}")));
    }
    let age = gust_api::quantity::parse_duration(c.retention.as_deref().unwrap_or("24h"))
        .map_err(|e| bad(format!("retention: {e}")))?;
    let bytes = gust_api::quantity::parse_bytes(c.retention_bytes.as_deref().unwrap_or("1Gi"))
        .map_err(|e| bad(format!("retention_bytes: {e}")))?;
    let info = TopicInfo {
        name,
        partitions,
        retention_ms: i64::try_from(age.as_millis()).unwrap_or(i64::MAX),
        retention_bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
    };
    let stored = info.clone();
    gw.with_store(move |s| s.create_topic(&stored)).await?;
    gw.registry.touch();
    tracing::info!(topic = info.name, partitions, "topic created");
    Ok(json(StatusCode::CREATED, &view(&info, Vec::new())))
}

fn view(t: &TopicInfo, state: Vec<PartitionView>) -> TopicView {
    let age = Duration::from_millis(u64::try_from(t.retention_ms).unwrap_or(0));
    TopicView {
        name: t.name.clone(),
        partitions: t.partitions,
        retention: humantime::format_duration(age).to_string(),
        retention_bytes: t.retention_bytes,
        state,
    }
}

/// `GET /api/v1/topics`.
///
/// # Errors
/// The store's.
pub async fn list(gw: &Gateway) -> Result<Response<Body>> {
    let topics = gw.with_store(|s| s.topics()).await?;
    let views: Vec<TopicView> = topics.iter().map(|t| view(t, Vec::new())).collect();
    Ok(json(StatusCode::OK, &views))
}

/// `GET /api/v1/topics/{name}`: the partitions and where each consumer is.
///
/// # Errors
/// 404 for an unknown topic.
pub async fn describe(gw: &Gateway, name: &str) -> Result<Response<Body>> {
    let consumers: Vec<String> = consumers_of(gw, name);
    let owned = name.to_owned();
    let (info, state) = gw
        .with_store(move |s| {
            let info = s.topic(&owned)?;
            let mut views = Vec::new();
            for p in s.partitions(&owned)? {
                let mut at = std::collections::BTreeMap::new();
                for c in &consumers {
                    at.insert(c.clone(), s.committed(c, &owned, p.partition)?);
                }
                views.push(PartitionView { partition: p.partition, start: p.start, end: p.end, consumers: at });
            }
            Ok((info, views))
        })
        .await?;
    Ok(json(StatusCode::OK, &view(&info, state)))
}

/// `DELETE /api/v1/topics/{name}`.
///
/// # Errors
/// 404 for an unknown topic.
pub async fn remove(gw: &Gateway, name: &str) -> Result<Response<Body>> {
    let owned = name.to_owned();
    gw.with_store(move |s| s.remove_topic(&owned)).await?;
    gw.registry.touch();
    Ok(json(StatusCode::OK, &serde_json::json!({ "removed": name })))
}

/// The functions whose latest ready revision consumes `topic`.
fn consumers_of(gw: &Gateway, topic: &str) -> Vec<String> {
    gw.registry
        .all()
        .iter()
        .filter_map(|r| r.latest.as_ref())
        .filter(|r| r.spec.input.as_deref() == Some(topic))
        .map(|r| r.spec.name.to_string())
        .collect()
}

/// `POST /api/v1/topics/{name}/messages[?key=K][&reply=true]`: appends the body; 201
/// with where it went, or, with `reply`, the first consumer's answer (200 with its body,
/// `X-Gust-Function`, `X-Gust-Partition`, `X-Gust-Offset`).
///
/// # Errors
/// 404 for an unknown topic, 413 past [`MAX_MESSAGE`], 409 for `reply` with no
/// consumer, 504 when no reply comes within a minute.
pub async fn publish(gw: &Gateway, name: &str, req: Request<Incoming>) -> Result<Response<Body>> {
    let mut key = None;
    let mut reply = false;
    for (k, v) in query_pairs(req.uri().query()) {
        match k {
            "key" => key = Some(v),
            "reply" => reply = matches!(v.as_str(), "" | "1" | "true"),
            other => {
                return Err(Error::BadRequest { message: format!("unknown parameter `{other}`; use key and reply") });
            }
        }
    }
    if reply && consumers_of(gw, name).is_empty() {
        return Err(Error::BadRequest { message: format!("no function consumes topic `{name}`: nothing would reply") });
    }
    let body = crate::body::read_whole(req, MAX_MESSAGE).await?.1;
    let owned = name.to_owned();
    // Messages without a key spread over the partitions.
    let fallback = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let key_for_store = key.clone();
    let (partition, offset) =
        gw.with_store(move |s| s.publish(&owned, key_for_store.as_deref(), &body, fallback)).await?;
    gw.topic_published.notify_waiters();
    let placed = Published { topic: name.to_owned(), partition, offset };
    if !reply {
        return Ok(json(StatusCode::CREATED, &placed));
    }
    let wanted = (name.to_owned(), partition, offset);
    let rx = {
        let mut r = lock(&gw.replies);
        if let Some(done) = r.done.remove(&wanted) {
            return Ok(reply_response(&placed, done));
        }
        let (tx, rx) = oneshot::channel();
        r.waiting.entry(wanted).or_default().push(tx);
        rx
    };
    match tokio::time::timeout(REPLY_WAIT, rx).await {
        Ok(Ok(done)) => Ok(reply_response(&placed, done)),
        _ => {
            Err(gust_runtime::Error::Timeout { function: format!("the consumers of {name}"), timeout: REPLY_WAIT }
                .into())
        }
    }
}

fn reply_response(placed: &Published, reply: Reply) -> Response<Body> {
    let (status, body, ctype) = match reply.result {
        Ok(r) => {
            let ctype = r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.clone());
            (StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK), r.body, ctype)
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.into_bytes(), Some("text/plain; charset=utf-8".to_owned())),
    };
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    for (k, v) in [
        ("x-gust-function", Some(reply.function)),
        ("x-gust-partition", Some(placed.partition.to_string())),
        ("x-gust-offset", Some(placed.offset.to_string())),
        ("content-type", ctype),
    ] {
        if let Some(v) = v.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(HeaderName::from_static(k), v);
        }
    }
    resp
}

/// Keeps a consumer running per partition of every function's input topic until
/// `shutdown` flips.
pub async fn run(gw: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let mut consumers: HashMap<(String, String, u32), JoinHandle<()>> = HashMap::new();
    let mut changes = gw.registry.changes();
    loop {
        changes.mark_unchanged();
        let wanted: Vec<(String, String)> = gw
            .registry
            .all()
            .iter()
            .filter_map(|r| r.latest.as_ref())
            .filter_map(|r| Some((r.spec.name.to_string(), r.spec.input.clone()?)))
            .collect();
        // The partition counts are read only when some function consumes a topic.
        let topics =
            if wanted.is_empty() { Vec::new() } else { gw.with_store(|s| s.topics()).await.unwrap_or_default() };
        let mut keep = Vec::new();
        for (function, topic) in wanted {
            let Some(t) = topics.iter().find(|t| t.name == topic) else { continue };
            for p in 0..t.partitions {
                let k = (function.clone(), topic.clone(), p);
                if consumers.get(&k).is_none_or(JoinHandle::is_finished) {
                    let task = tokio::spawn(consume(gw.clone(), function.clone(), topic.clone(), p, shutdown.clone()));
                    consumers.insert(k.clone(), task);
                }
                keep.push(k);
            }
        }
        consumers.retain(|k, task| {
            let kept = keep.contains(k);
            if !kept {
                task.abort();
            }
            kept
        });
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE) => {}
            _ = changes.changed() => {}
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        }
    }
    for (_, task) in consumers.drain() {
        let _ = task.await;
    }
}

/// One function's consumer of one partition.
async fn consume(
    gw: Arc<Gateway>,
    function: String,
    topic: String,
    partition: u32,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    // Where this consumer is: read from the store once, then kept here, since only this
    // consumer moves it.
    let mut from = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Listening before the read: a message published while it runs still wakes us.
        let published = gw.topic_published.notified();
        tokio::pin!(published);
        published.as_mut().enable();
        let (f, t, at) = (function.clone(), topic.clone(), from);
        let next = gw
            .with_store(move |s| {
                let from = match at {
                    Some(n) => n,
                    None => s.committed(&f, &t, partition)?,
                };
                Ok((from, s.next_message(&t, partition, from)?))
            })
            .await
            .map(|(at, msg)| {
                from = Some(at);
                msg
            });
        let msg = match next {
            Ok(Some(m)) => m,
            Ok(None) => {
                tokio::select! {
                    () = published => {}
                    () = tokio::time::sleep(IDLE) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                continue;
            }
            Err(e) => {
                tracing::error!(function, topic, partition, error = %e, "could not read a topic");
                tokio::time::sleep(RETRY_READ).await;
                continue;
            }
        };
        let Some(routing) = gw.registry.get(&function) else { return };
        let Some(latest) = routing.latest.clone() else { return };
        let spec = latest.spec.clone();
        let outcome = deliver(&gw, &function, &topic, &msg).await;
        let revision = outcome.revision;
        let answer = outcome.answer.map_err(|f| f.error);
        let ok = matches!(&answer, Ok(r) if r.status < 400);
        let retryable = match &answer {
            Ok(r) => crate::dispatch::retryable(r.status),
            Err(_) => true,
        };
        if !ok && retryable && failures < spec.delivery.retries {
            failures += 1;
            let wait = spec.delivery.wait_before(failures + 1);
            // The message is still unconsumed: the function keeps an instance through
            // the wait (while a call runs, its instance is busy and stays anyway).
            gw.supervisor.hold(&latest, std::time::Instant::now() + wait + HOLD);
            tokio::time::sleep(wait).await;
            continue;
        }
        failures = 0;
        let mut answer = answer;
        if ok && let (Some(out), Ok(r)) = (&spec.output, &answer) {
            let (out, key, body) = (out.clone(), msg.key.clone(), r.body.clone());
            if let Err(e) = gw.with_store(move |s| s.publish(&out, key.as_deref(), &body, partition)).await {
                tracing::error!(function, error = %e, "could not append a result to the output topic");
                answer = Err(format!("could not append the result to the output topic: {e}"));
            } else {
                gw.topic_published.notify_waiters();
            }
        }
        if !ok {
            dead_letter(&gw, &function, &topic, &msg, revision, &answer).await;
        }
        let (f, t) = (function.clone(), topic.clone());
        if let Err(e) = gw.with_store(move |s| s.commit_offset(&f, &t, partition, msg.offset + 1)).await {
            tracing::error!(function, topic, partition, error = %e, "could not commit an offset");
            continue;
        }
        from = Some(msg.offset + 1);
        let key = (topic.clone(), partition, msg.offset);
        lock(&gw.replies).deliver(key, Reply { function: function.clone(), result: answer });
    }
}

/// Calls `function` with one message, as a sync call would go.
async fn deliver(gw: &Gateway, function: &str, topic: &str, msg: &Message) -> Outcome {
    let Some(revision) = gw.registry.get(function).and_then(|r| r.pick(None).cloned()) else {
        let error = format!("function `{function}` takes no calls now");
        return Outcome { revision: None, cold_start: None, answer: Err(Failure { error, status: 503, retry: true }) };
    };
    let id = message_call_id(function, topic, msg);
    let mut req = Request::new(full(Bytes::from(msg.body.clone())));
    *req.method_mut() = Method::POST;
    let h = req.headers_mut();
    let key = msg.key.clone().unwrap_or_default();
    for (k, v) in [
        ("x-gust-topic", topic.to_owned()),
        ("x-gust-partition", msg.partition.to_string()),
        ("x-gust-offset", msg.offset.to_string()),
        ("x-gust-key", key),
        (crate::invoke::CALL_ID, id.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(k), v);
        }
    }
    crate::dispatch::run_to_end(gw, &revision, &id, req, MAX_MESSAGE).await
}

fn message_call_id(function: &str, topic: &str, msg: &Message) -> CallId {
    let id = format!("msg-{topic}-{}-{}-{function}", msg.partition, msg.offset);
    CallId::from_caller(Some(id.as_bytes()))
}

/// A message the function still failed after its retries: kept as a dead call (its
/// request is the message), so `gust dlq` shows and redrives it.
async fn dead_letter(
    gw: &Gateway,
    function: &str,
    topic: &str,
    msg: &Message,
    revision: Option<String>,
    answer: &std::result::Result<CallResult, String>,
) {
    let id = message_call_id(function, topic, msg);
    let call = NewCall {
        id: id.clone(),
        function: function.to_owned(),
        method: "POST".to_owned(),
        path: "/".to_owned(),
        headers: vec![("x-gust-topic".into(), topic.to_owned()), ("x-gust-offset".into(), msg.offset.to_string())],
        body: msg.body.clone(),
        callback_url: None,
    };
    let record = Attempted {
        revision,
        cold_start: None,
        result: answer.as_ref().ok().cloned(),
        error: answer.as_ref().err().cloned(),
        retry_at_ms: None,
        status: CallStatus::Dead,
    };
    let stored = gw.with_store(move |s| s.bury(&call, &record)).await;
    if let Err(e) = stored {
        tracing::error!(function, topic, error = %e, "could not dead-letter a message");
    }
    tracing::warn!(function, topic, partition = msg.partition, offset = msg.offset, call_id = %id, "message dead-lettered");
}
