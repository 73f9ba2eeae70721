//! The control API under `/api/v1`: deploy, list, describe, remove, logs, traffic,
//! rollback, info.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use gust_api::wire::{
    BuildInfo, DeployEvent, DeployResponse, FunctionDetail, FunctionSummary, LogLine, RevisionInfo, RollbackRequest,
    TrafficInfo, TrafficTarget, TrafficUpdate,
};
use gust_api::{FunctionName, Traffic};
use gust_runtime::body::{LimitedBody, boxed, full};
use gust_runtime::{Body, build};
use gust_store::{Built, DeployTraffic, Serving, Staged};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::body::ChannelBody;
use crate::router::query_pairs;
use crate::{Error, Gateway, Result};

/// Log lines returned by default when the caller does not say how many.
const DEFAULT_TAIL: usize = 100;

/// `GET /healthz`: 200 once the server serves at all.
pub fn health() -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

/// `GET /api/v1/info`.
pub fn info(gw: &Gateway) -> Result<Response<Body>> {
    let info = gust_api::wire::Info {
        calls_unrecorded: gw.calls_unrecorded.load(std::sync::atomic::Ordering::Relaxed),
        busy_poll: gw.busy_poll.as_ref().map(crate::busy_poll::BusyPoll::info).unwrap_or_default(),
        ..gw.info.clone()
    };
    Ok(json(StatusCode::OK, &info))
}

/// `GET /api/v1/functions`.
pub fn list(gw: &Gateway) -> Result<Response<Body>> {
    let rows: Vec<FunctionSummary> = gw
        .registry
        .all()
        .into_iter()
        .map(|routing| {
            let r = &routing.newest;
            FunctionSummary {
                name: r.spec.name.to_string(),
                runtime: r.spec.runtime.to_string(),
                revision: r.id.to_string(),
                instances: gw.supervisor.instances(r.spec.name.as_str()).len(),
                url: gw.function_url(r.spec.name.as_str()),
            }
        })
        .collect();
    Ok(json(StatusCode::OK, &rows))
}

/// `POST /api/v1/functions[?traffic=none][&tag=TAG]`: the body is a `.tar.gz` of the
/// function directory. The new revision takes every call unless `traffic=none`; `tag`
/// names it (`/function/NAME@TAG`).
///
/// With `Accept: application/x-ndjson` the answer is a 200 stream of [`DeployEvent`]s —
/// build steps and output as they happen, then `done` or `failed` — once the upload is
/// unpacked and its manifest valid; otherwise one JSON answer when everything is over.
pub async fn deploy(gw: &Arc<Gateway>, req: Request<Incoming>) -> Result<Response<Body>> {
    let mut intent = DeployTraffic::default();
    for (k, v) in query_pairs(req.uri().query()) {
        match (k, v.as_str()) {
            ("traffic", "none") => intent.no_traffic = true,
            ("traffic", "all") => intent.no_traffic = false,
            ("tag", _) => intent.tag = Some(v),
            (other, _) => {
                return Err(Error::BadRequest {
                    message: format!("unknown deploy option `{other}={v}`; use traffic=none|all and tag=TAG"),
                });
            }
        }
    }
    let streamed = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    let limit = gw.config.max_upload;
    let exceeded = Arc::new(AtomicBool::new(false));
    let body = LimitedBody::new(req.into_body(), limit, exceeded.clone());
    let bytes: Bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) if exceeded.load(std::sync::atomic::Ordering::Acquire) => return Err(Error::UploadTooLarge { limit }),
        Err(e) => return Err(Error::BadRequest { message: format!("could not read the upload: {e}") }),
    };
    let mut staged = gw.with_store(move |s| s.stage(&bytes[..])).await?;
    staged.traffic = intent;
    check_topics(gw, &staged.spec).await?;
    let plan = build::plan(&staged.spec, staged.dir(), staged.source_digest.as_str(), gw.supervisor.interpreters())?;
    let (events_tx, mut events_rx) = mpsc::channel::<build::Event>(256);
    if !streamed {
        // Nobody reads the progress; keep the channel drained so the build never waits.
        tokio::spawn(async move { while events_rx.recv().await.is_some() {} });
        let (resp, changed) = finish_deploy(gw, staged, plan, &events_tx).await?;
        let status = if changed { StatusCode::CREATED } else { StatusCode::OK };
        return Ok(json(status, &resp));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let gw = gw.clone();
    tokio::spawn(async move {
        let forward = {
            let tx = tx.clone();
            async move {
                while let Some(e) = events_rx.recv().await {
                    let event = match e {
                        build::Event::Step(s) => DeployEvent::Step(s),
                        build::Event::Line(l) => DeployEvent::Line(l),
                    };
                    if tx.send(event_line(&event)).await.is_err() {
                        // The client is gone: dropping the receiver stops the build.
                        return;
                    }
                }
            }
        };
        let forwarder = tokio::spawn(forward);
        let outcome = finish_deploy(&gw, staged, plan, &events_tx).await;
        drop(events_tx);
        let _ = forwarder.await;
        let last = match outcome {
            Ok((resp, _)) => DeployEvent::Done(resp),
            Err(e) => DeployEvent::Failed { status: e.status().as_u16(), error: e.body(None) },
        };
        let _ = tx.send(event_line(&last)).await;
    });
    Ok(ndjson(boxed(ChannelBody { rx })))
}

/// Builds (or reuses a cached build), records the revision, checks that it starts, and
/// only then gives it the deploy's traffic and puts it in service. A revision that fails
/// its check is kept, marked failed, and the deploy answers why while the revisions
/// serving before go on serving.
async fn finish_deploy(
    gw: &Gateway,
    staged: Staged,
    plan: Option<build::Plan>,
    events: &mpsc::Sender<build::Event>,
) -> Result<(DeployResponse, bool)> {
    let function = staged.spec.name.to_string();
    let intent = staged.traffic.clone();
    let (outcome, build_info) = match plan {
        None => {
            let outcome = gw.with_store(move |s| s.commit(staged, None)).await?;
            (outcome, None)
        }
        Some(plan) => {
            let steps: Vec<String> = plan.steps.iter().map(|s| s.label.clone()).collect();
            let key = plan.key.clone();
            let cached = gw.with_store(move |s| s.cached_build(&key)).await?;
            match cached {
                Some(digest) => {
                    let _ =
                        events.send(build::Event::Step(format!("reusing the build of these sources ({digest})"))).await;
                    let outcome = gw.with_store(move |s| s.commit(staged, Some(Built::Cached(digest)))).await?;
                    (outcome, Some(BuildInfo { steps, cached: true, seconds: 0.0 }))
                }
                None => {
                    if staged.spec.build.is_none() {
                        // Dependencies alone cannot create the handler: check it before
                        // spending minutes installing them.
                        staged.check_handler()?;
                    }
                    let started = std::time::Instant::now();
                    build::run(&function, &plan, staged.dir(), events).await?;
                    let seconds = started.elapsed().as_secs_f64();
                    tracing::info!(function, seconds, "built");
                    let outcome =
                        gw.with_store(move |s| s.commit(staged, Some(Built::Fresh { key: &plan.key }))).await?;
                    (outcome, Some(BuildInfo { steps, cached: false, seconds }))
                }
            }
        }
    };
    let revision = outcome.revision;
    let name = revision.spec.name.clone();
    let serving = if outcome.changed {
        let _ = events.send(build::Event::Step(format!("starting {} to check it", revision.id))).await;
        let checked = gw.supervisor.probe(&Arc::new(revision.clone())).await;
        let id = revision.id.clone();
        let result = checked.clone();
        let serving = gw.with_store(move |s| s.settle(&id, result, &intent)).await?;
        if let Err(detail) = checked {
            let instead = match serving.latest {
                Some(n) => format!("{name}-{n:05} keeps serving"),
                None => "the function has no revision that serves".to_owned(),
            };
            // A function's first revision must still be known, to answer its calls.
            gw.put_in_service(&function, serving, None)?;
            tracing::warn!(function, revision = %revision.id, "revision failed to start");
            return Err(Error::RevisionFailed { revision: revision.id.to_string(), detail, serving: instead });
        }
        serving
    } else {
        gw.with_store(move |s| s.serving(&name)).await?
    };
    let (percent, tags) = traffic_of(&serving.traffic, serving.latest, revision.id.number());
    gw.put_in_service(&function, serving, outcome.changed.then_some(&revision.id))?;
    if outcome.changed {
        // Only a new revision can have replaced the function's manifest routes.
        gw.reload_routes().await?;
        tracing::info!(function = %revision.spec.name, revision = %revision.id, "deployed");
        gw.collect_garbage().await;
    }
    let resp = DeployResponse {
        function: revision.spec.name.to_string(),
        revision: revision.id.to_string(),
        changed: outcome.changed,
        url: gw.function_url(revision.spec.name.as_str()),
        traffic_percent: percent,
        tags,
        code_digest: revision.code_digest.to_string(),
        build: build_info,
    };
    Ok((resp, outcome.changed))
}

/// The topics a manifest names as `input` and `output` must exist before it deploys.
async fn check_topics(gw: &Gateway, spec: &gust_api::FunctionSpec) -> Result<()> {
    let named: Vec<(&'static str, String)> = [("input", &spec.input), ("output", &spec.output)]
        .into_iter()
        .filter_map(|(k, t)| Some((k, t.clone()?)))
        .collect();
    if named.is_empty() {
        return Ok(());
    }
    let known: Vec<String> = gw.with_store(|s| s.topics()).await?.into_iter().map(|t| t.name).collect();
    let problems: Vec<gust_api::Problem> = named
        .into_iter()
        .filter(|(_, t)| !known.contains(t))
        .map(|(field, t)| gust_api::Problem {
            field: field.to_owned(),
            message: format!("topic `{t}` does not exist; create it first with `gust topic create {t}`"),
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(gust_store::Error::from(gust_api::Error::InvalidManifest { problems }).into())
}

fn event_line(event: &DeployEvent) -> Bytes {
    let mut line = serde_json::to_vec(event).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    Bytes::from(line)
}

/// `GET /api/v1/functions/{name}`.
pub async fn describe(gw: &Gateway, name: &str) -> Result<Response<Body>> {
    let fname = function_name(name)?;
    let (revisions, latest, traffic) = gw.with_store(move |s| s.revisions(&fname)).await?;
    // What the function runs: its latest ready revision, else its newest.
    let serving = revisions
        .iter()
        .find(|r| Some(r.id.number()) == latest)
        .or(revisions.first())
        .ok_or_else(|| Error::Internal(format!("function `{name}` has no revision")))?;
    let scaling = gw.supervisor.scaling(name);
    let instances = gw.supervisor.instances(name);
    let detail = FunctionDetail {
        isolation: gust_runtime::isolation::confinement(gw.supervisor.isolation(), &serving.spec),
        name: name.to_owned(),
        url: gw.function_url(name),
        spec: serving.spec.clone(),
        manifest: serving.spec.to_toml(),
        revisions: revisions
            .iter()
            .map(|r| {
                let (percent, tags) = traffic_of(&traffic, latest, r.id.number());
                let id = r.id.to_string();
                RevisionInfo {
                    instances: instances.iter().filter(|i| i.revision == id).count(),
                    id,
                    code_digest: r.code_digest.to_string(),
                    created_at: humantime::format_rfc3339_seconds(r.created_at).to_string(),
                    traffic_percent: u8::try_from(percent).unwrap_or(100),
                    tags,
                    latest: Some(r.id.number()) == latest,
                    status: r.status,
                    failure: r.failure.clone(),
                }
            })
            .collect(),
        instances,
        queued: scaling.iter().map(|s| s.queued).sum(),
        scaling,
        recent_errors: gw.supervisor.logs().recent_errors(name),
    };
    Ok(json(StatusCode::OK, &detail))
}

/// A function's name from a URL; one that cannot be a name names no function.
fn function_name(name: &str) -> Result<FunctionName> {
    FunctionName::new(name).map_err(|_| Error::FunctionNotFound { function: name.to_owned() })
}

/// A revision's share of calls and its tags.
fn traffic_of(traffic: &Traffic, latest: Option<u32>, revision: u32) -> (u32, Vec<String>) {
    let percent = traffic.resolve(latest).iter().find(|(r, _)| *r == revision).map_or(0, |(_, p)| *p);
    (percent, traffic.tags_of(revision))
}

/// `GET /api/v1/functions/{name}/traffic`.
pub async fn traffic(gw: &Gateway, name: &str) -> Result<Response<Body>> {
    let fname = function_name(name)?;
    let serving = gw.with_store(move |s| s.serving(&fname)).await?;
    Ok(json(StatusCode::OK, &traffic_info(name, &serving)))
}

/// `PUT /api/v1/functions/{name}/traffic` with a [`TrafficUpdate`]: applied whole or not
/// at all, then put in service at once.
pub async fn set_traffic(gw: &Gateway, name: &str, req: Request<Incoming>) -> Result<Response<Body>> {
    let update: TrafficUpdate = read_json(req).await?;
    let force = update.force;
    change_traffic(gw, name, force, move |fname, t, latest, _| t.apply(fname, &update, latest)).await
}

/// `POST /api/v1/functions/{name}/rollback` with a [`RollbackRequest`]: every call to
/// the named revision, or to the one before the revision taking most calls now.
pub async fn rollback(gw: &Gateway, name: &str, req: Request<Incoming>) -> Result<Response<Body>> {
    let request: RollbackRequest = read_json(req).await?;
    change_traffic(gw, name, false, move |fname, t, latest, ready| {
        t.rollback(fname, request.revision.as_deref(), latest, ready)
    })
    .await
}

async fn change_traffic(
    gw: &Gateway,
    name: &str,
    force: bool,
    change: impl FnOnce(&FunctionName, &Traffic, u32, &[u32]) -> std::result::Result<Traffic, String> + Send + 'static,
) -> Result<Response<Body>> {
    let fname = function_name(name)?;
    let serving = gw
        .with_store(move |s| s.update_traffic(&fname, force, |t, latest, ready| change(&fname, t, latest, ready)))
        .await?;
    let info = traffic_info(name, &serving);
    gw.put_in_service(name, serving, None)?;
    gw.collect_garbage().await;
    tracing::info!(function = name, traffic = ?info.targets.iter().map(|t| (&t.revision, t.percent)).collect::<Vec<_>>(), "traffic changed");
    Ok(json(StatusCode::OK, &info))
}

/// The revisions in service (each has a share, a tag, or is the latest) and their place.
fn traffic_info(name: &str, serving: &Serving) -> TrafficInfo {
    let targets = serving
        .revisions
        .iter()
        .map(|r| {
            let (percent, tags) = traffic_of(&serving.traffic, serving.latest, r.id.number());
            TrafficTarget { revision: r.id.to_string(), percent, tags, latest: Some(r.id.number()) == serving.latest }
        })
        .collect();
    TrafficInfo { function: name.to_owned(), targets }
}

/// A small JSON request body (at most 64 KiB); an empty body is the type's default.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned + Default>(req: Request<Incoming>) -> Result<T> {
    const LIMIT: u64 = 64 << 10;
    let exceeded = Arc::new(AtomicBool::new(false));
    let bytes = LimitedBody::new(req.into_body(), LIMIT, exceeded)
        .collect()
        .await
        .map_err(|e| Error::BadRequest { message: format!("could not read the request body: {e}") })?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::BadRequest { message: format!("bad JSON body: {e}") })
}

/// `DELETE /api/v1/functions/{name}`: stops its instances and forgets it.
pub async fn remove(gw: &Gateway, name: &str) -> Result<Response<Body>> {
    let fname = function_name(name)?;
    gw.with_store(move |s| s.remove(&fname)).await?;
    gw.registry.remove(name);
    gw.supervisor.remove_function(name);
    // Its routes went with it in the store.
    gw.reload_routes().await?;
    tracing::info!(function = name, "removed");
    Ok(json(StatusCode::OK, &serde_json::json!({ "removed": name })))
}

/// `GET /api/v1/functions/{name}/logs?tail=N&follow=true`: newline-delimited JSON
/// [`LogLine`]s; with `follow`, the stream stays open and carries new lines as they come.
pub async fn logs(gw: &Gateway, name: &str, query: Option<&str>) -> Result<Response<Body>> {
    if !gw.registry.contains(name) {
        return Err(Error::FunctionNotFound { function: name.to_owned() });
    }
    let mut tail = DEFAULT_TAIL;
    let mut follow = false;
    for (k, v) in query_pairs(query) {
        match k {
            "tail" => {
                tail =
                    v.parse().map_err(|_| Error::BadRequest { message: format!("tail must be a number, not `{v}`") })?
            }
            "follow" => follow = matches!(v.as_str(), "" | "1" | "true"),
            other => {
                return Err(Error::BadRequest { message: format!("unknown parameter `{other}`; use tail and follow") });
            }
        }
    }
    // Subscribe before reading the file so no line falls between the two.
    let live = follow.then(|| gw.supervisor.logs().follow(name));
    let logs = gw.supervisor.logs().clone();
    let owned = name.to_owned();
    let past = tokio::task::spawn_blocking(move || logs.tail(&owned, tail))
        .await
        .map_err(|e| Error::Internal(format!("log read failed: {e}")))?;
    let mut text = String::new();
    for line in &past {
        push_line(&mut text, line);
    }
    let Some(mut live) = live else {
        return Ok(ndjson(full(text)));
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut shutdown = gw.shutdown.clone();
    let last_ts = past.last().map(|l| l.ts.clone());
    tokio::spawn(async move {
        if tx.send(Bytes::from(text)).await.is_err() {
            return;
        }
        loop {
            let line = tokio::select! {
                l = live.recv() => l,
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                _ = tx.closed() => return,
            };
            match line {
                Ok(line) => {
                    if last_ts.as_ref().is_some_and(|t| line.ts < *t) {
                        continue;
                    }
                    let mut out = String::new();
                    push_line(&mut out, &line);
                    if tx.send(Bytes::from(out)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let note = format!("{{\"gust\":\"skipped {n} lines: the reader fell behind\"}}\n");
                    if tx.send(Bytes::from(note)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(ndjson(boxed(ChannelBody { rx })))
}

fn push_line(out: &mut String, line: &LogLine) {
    if let Ok(s) = serde_json::to_string(line) {
        out.push_str(&s);
        out.push('\n');
    }
}

fn ndjson(body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    resp
}

pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned());
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
