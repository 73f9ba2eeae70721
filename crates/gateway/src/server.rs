//! [`Gateway`] (what handlers share) and [`serve`] (the accept loop and its drain).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gust_api::RevisionId;
use gust_api::wire::Info;
use gust_runtime::{Body, Supervisor};
use gust_store::{Retention, Serving, Store};
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::busy_poll::BusyPoll;
use crate::registry::Routing;
use crate::router::{Api, Route, route};
use crate::{Error, Registry, calls, control, events, invoke, routes, topics};

/// How the gateway runs (from flags and environment, not from manifests).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The largest deploy upload accepted, in bytes. Default 100 MiB.
    pub max_upload: u64,
    /// How long a client may take to send request headers. Default 30 s.
    pub header_timeout: Duration,
    /// The most bytes a request's line and headers may take (431 past it). Default 64 KiB,
    /// at least 8 KiB (hyper's floor).
    pub max_header_bytes: usize,
    /// With a domain, `NAME.DOMAIN` in the `Host` header reaches function `NAME` at its
    /// root, as Knative's routes do, and `TAG-NAME.DOMAIN` its tagged revision (Knative's
    /// default tag template). Default none.
    pub domain: Option<String>,
    /// How long revisions out of service are kept ([`Retention`], Knative's defaults).
    pub retention: Retention,
    /// How long the records of succeeded and failed calls are kept. Default 24 h.
    pub call_retention: Duration,
    /// Sync call records waiting to be written at most; past it they are dropped and
    /// counted, never calls delayed. Default 16,384; at least 1.
    pub record_backlog: usize,
    /// The server's token; `None` only in tests and embedders that want no auth at all
    /// (then private functions cannot be called).
    pub auth: Option<crate::Auth>,
    /// The addresses callbacks may reach; by default no loopback, private or link-local one.
    pub outbound: crate::outbound::OutboundPolicy,
    /// How long after each request a runtime thread keeps polling for ready sockets
    /// instead of sleeping ([`crate::busy_poll`]). Default zero: off.
    pub busy_poll: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_upload: 100 << 20,
            header_timeout: Duration::from_secs(30),
            max_header_bytes: 64 << 10,
            domain: None,
            retention: Retention::default(),
            call_retention: Duration::from_secs(24 * 3600),
            record_backlog: crate::call_log::BACKLOG,
            auth: None,
            outbound: crate::outbound::OutboundPolicy::default(),
            busy_poll: Duration::ZERO,
        }
    }
}

/// How often revisions are checked against the retention besides after each deploy and
/// traffic change: often enough next to ages counted in hours.
const COLLECT_EVERY: Duration = Duration::from_secs(600);

/// What every handler shares.
#[derive(Debug)]
pub struct Gateway {
    /// Deploys, listings, removals.
    pub store: Arc<Store>,
    /// Runs calls.
    pub supervisor: Arc<Supervisor>,
    /// Serving revisions, read on every call.
    pub registry: Registry,
    /// `GET /api/v1/info`.
    pub info: Info,
    /// `http://host:port`, the base of function URLs.
    pub base_url: String,
    /// Limits of this gateway.
    pub config: GatewayConfig,
    /// Flips to `true` at shutdown; ends `logs -f` streams so the drain can finish.
    pub shutdown: watch::Receiver<bool>,
    /// Wakes the async-call dispatcher: a call was accepted, redriven or finished.
    pub calls_ready: tokio::sync::Notify,
    /// Wakes idle topic consumers: a message was published.
    pub topic_published: tokio::sync::Notify,
    /// Consumers' answers for publishers waiting for a reply.
    pub replies: std::sync::Mutex<crate::topics::Replies>,
    /// Records of answered sync calls, for the writer ([`crate::call_log`]).
    pub call_log: tokio::sync::mpsc::Sender<crate::call_log::Entry>,
    /// Sync call records dropped because the writer fell behind.
    pub calls_unrecorded: std::sync::atomic::AtomicU64,
    /// Busy polling after requests, when `config.busy_poll` is not zero.
    pub busy_poll: Option<BusyPoll>,
}

impl Gateway {
    /// Whether `headers` carry the server's token.
    pub fn authorized(&self, headers: &http::HeaderMap) -> bool {
        self.config.auth.as_ref().is_some_and(|a| a.allows(headers))
    }

    /// Refuses a call to a private function (`auth = "token"`) made without the token.
    ///
    /// # Errors
    /// [`Error::Unauthorized`].
    pub fn check_caller(&self, spec: &gust_api::FunctionSpec, headers: &http::HeaderMap) -> crate::Result<()> {
        if spec.auth == gust_api::FunctionAuth::Token && !self.authorized(headers) {
            return Err(Error::Unauthorized);
        }
        Ok(())
    }

    /// The URL of a function.
    pub fn function_url(&self, name: &str) -> String {
        format!("{}/function/{name}", self.base_url)
    }

    /// Runs `f` on the store off the async threads: every store call blocks (SQLite,
    /// file I/O).
    ///
    /// # Errors
    /// The store's error, or [`Error::Internal`] if the task panicked.
    pub async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> gust_store::Result<T> + Send + 'static,
    ) -> crate::Result<T> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Error::Internal(format!("store task failed: {e}")))??)
    }

    /// Forgets revisions out of service past the retention, and code no revision uses
    /// (revisions with a pool — serving, draining, being checked — stay), and trims
    /// topics by age. A failure is logged: the next deploy or tick tries again.
    pub async fn collect_garbage(&self) {
        let supervisor = self.supervisor.clone();
        let retention = self.config.retention;
        let now = std::time::SystemTime::now();
        match self.with_store(move |s| s.collect_garbage(retention, now, |r| supervisor.has_pool(r))).await {
            Ok(collected) => self.supervisor.forget_code(&collected.code_dirs),
            Err(error) => tracing::warn!(%error, "revision garbage collection failed"),
        }
        let kept = i64::try_from(self.config.call_retention.as_millis()).unwrap_or(i64::MAX);
        let before = i64::try_from(now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis()))
            .unwrap_or(i64::MAX)
            .saturating_sub(kept);
        match self.with_store(move |s| s.prune_calls(before)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(calls = n, "pruned call records"),
            Err(error) => tracing::warn!(%error, "pruning call records failed"),
        }
        // Topics' retention by age (size is applied at each publish).
        match self.with_store(Store::trim_topics).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(messages = n, "trimmed topics"),
            Err(error) => tracing::warn!(%error, "trimming topics failed"),
        }
    }

    /// Collects garbage now and then every ten minutes (`COLLECT_EVERY`) until `shutdown` flips, so
    /// revisions age out without a deploy to trigger it.
    pub async fn run_collector(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(COLLECT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.collect_garbage().await,
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
            }
        }
    }

    /// Reloads the custom routes from the store into the registry.
    ///
    /// # Errors
    /// The store's, when it cannot be read.
    pub async fn reload_routes(&self) -> crate::Result<()> {
        let routes = self.with_store(Store::routes).await?;
        self.registry.set_routes(routes);
        Ok(())
    }

    /// Puts what `serving` names in service and routes `function`'s calls by it: the
    /// supervisor first, so no call reaches a revision whose pool is still retired.
    /// `new` is a revision just deployed, which starts its initial instances.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store's answer lacks the latest revision.
    pub fn put_in_service(&self, function: &str, serving: Serving, new: Option<&RevisionId>) -> crate::Result<()> {
        let routing = Routing::new(serving)
            .ok_or_else(|| Error::Internal(format!("function `{function}` has no latest revision")))?;
        self.supervisor.serve(function, routing.revisions(), new);
        self.registry.set(function, Arc::new(routing));
        // Its `[async]` settings may let more of its queued calls run now.
        self.calls_ready.notify_one();
        Ok(())
    }

    /// The function (and tag) a `Host` header names for the configured domain:
    /// `NAME.DOMAIN`, or `TAG-NAME.DOMAIN` for one of its tags (Knative's default tag
    /// template). A deployed function's own name wins over a tag reading of it.
    fn host_function(&self, req: &Request<Incoming>) -> Option<(String, Option<String>)> {
        let domain = self.config.domain.as_deref()?;
        let host = req.headers().get(http::header::HOST)?.to_str().ok()?.to_ascii_lowercase();
        let host = host.as_str();
        let host =
            host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
        let label = host.strip_suffix(domain)?.strip_suffix('.')?;
        if self.registry.contains(label) {
            return Some((label.to_owned(), None));
        }
        label.match_indices('-').find_map(|(i, _)| {
            let (tag, name) = (&label[..i], &label[i + 1..]);
            let routing = self.registry.get(name)?;
            routing.has_tag(tag).then(|| (name.to_owned(), Some(tag.to_owned())))
        })
    }

    /// Answers one request. Never fails: every error becomes a response.
    pub async fn handle(self: Arc<Self>, peer: &Peer, req: Request<Incoming>) -> Response<Body> {
        // A clone of the URI shares its bytes (a reference count), where the path alone
        // would be copied.
        let uri = req.uri().clone();
        let path = uri.path();
        if let Some((function, tag)) = self.host_function(&req) {
            let target =
                invoke::Target { function: &function, tag: tag.as_deref(), path, prefix: None, params: Vec::new() };
            return invoke::invoke(&self, peer, target, req).await;
        }
        match route(req.method(), path) {
            Route::Invoke { function, tag, path: sub, prefix } => {
                let target = invoke::Target { function, tag, path: sub, prefix: Some(prefix), params: Vec::new() };
                invoke::invoke(&self, peer, target, req).await
            }
            Route::AsyncInvoke { function, path: sub } => {
                let function = function.to_owned();
                let sub = sub.to_owned();
                calls::accept(&self, &function, &sub, req).await.unwrap_or_else(|e| e.into_response(None))
            }
            Route::Call(_) | Route::Api(_)
                if self.config.auth.as_ref().is_some_and(|a| a.control) && !self.authorized(req.headers()) =>
            {
                Error::Unauthorized.into_response(None)
            }
            Route::Call(id) => calls::get(&self, id).await.unwrap_or_else(|e| e.into_response(None)),
            Route::Events => events::ingest(&self, req).await.unwrap_or_else(|e| e.into_response(None)),
            Route::LambdaInvoke(name) => {
                let name = gust_api::route::percent_decode(name);
                crate::lambda_api::invoke(&self, &name, req).await
            }
            Route::Health => control::health(),
            Route::Api(api) => {
                let result = match api {
                    Api::Info => control::info(&self),
                    Api::Auth if self.authorized(req.headers()) => {
                        Ok(control::json(http::StatusCode::OK, &serde_json::json!({"authenticated": true})))
                    }
                    Api::Auth => Err(Error::Unauthorized),
                    Api::List => control::list(&self),
                    Api::Deploy => control::deploy(&self, req).await,
                    Api::Describe(name) => control::describe(&self, name).await,
                    Api::Remove(name) => control::remove(&self, name).await,
                    Api::Logs(name) => control::logs(&self, name, req.uri().query()).await,
                    Api::Traffic(name) => control::traffic(&self, name).await,
                    Api::SetTraffic(name) => control::set_traffic(&self, name, req).await,
                    Api::Rollback(name) => control::rollback(&self, name, req).await,
                    Api::Calls(name) => calls::list(&self, name, req.uri().query()).await,
                    Api::Redrive(name) => calls::dead_letters(&self, name, req, false).await,
                    Api::Purge(name) => calls::dead_letters(&self, name, req, true).await,
                    Api::Topics => topics::list(&self).await,
                    Api::CreateTopic => topics::create(&self, req).await,
                    Api::Topic(name) => topics::describe(&self, name).await,
                    Api::RemoveTopic(name) => topics::remove(&self, name).await,
                    Api::Publish(name) => topics::publish(&self, name, req).await,
                    Api::Secrets => crate::secrets::list(&self).await,
                    Api::PutSecret(name, replace) => crate::secrets::put(&self, name, req, replace).await,
                    Api::RemoveSecret(name) => crate::secrets::remove(&self, name).await,
                    Api::Routes => routes::list(&self),
                    Api::CreateRoute => routes::create(&self, req).await,
                    Api::RemoveRoute => routes::remove(&self, req.uri().query()).await,
                };
                result.unwrap_or_else(|e| e.into_response(None))
            }
            Route::NotFound => match self.registry.find_route(req.method().as_str(), path) {
                Some((function, params)) => {
                    let target = invoke::Target { function: &function, tag: None, path, prefix: None, params };
                    invoke::invoke(&self, peer, target, req).await
                }
                None => Error::RouteNotFound { path: path.to_owned() }.into_response(None),
            },
            Route::MethodNotAllowed { allow } => Error::MethodNotAllowed { allow }.into_response(None),
        }
    }
}

/// The other end of a connection, worked out once per connection rather than per call.
#[derive(Debug)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// Its IP address as an `X-Forwarded-For` element.
    pub forwarded_for: Option<HeaderValue>,
}

impl Peer {
    /// The peer at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, forwarded_for: HeaderValue::from_str(&addr.ip().to_string()).ok() }
    }
}

/// Accepts connections on `listener` until `shutdown` flips, then stops accepting and
/// waits up to `grace` for open requests to finish.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>, grace: Duration) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(gateway.config.header_timeout)
        .max_buf_size(gateway.config.max_header_bytes.max(8192))
        .keep_alive(true);
    let spinner = gateway.busy_poll.is_some().then(|| {
        let gw = gateway.clone();
        tokio::spawn(async move {
            if let Some(busy) = &gw.busy_poll {
                busy.run().await;
            }
        })
    });
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        };
        let _ = stream.set_nodelay(true);
        let gw = gateway.clone();
        let peer = Arc::new(Peer::new(peer));
        let svc = hyper::service::service_fn(move |req| {
            let (gw, peer) = (gw.clone(), peer.clone());
            async move {
                let Some(busy) = &gw.busy_poll else {
                    return Ok::<_, Infallible>(gw.handle(&peer, req).await);
                };
                // Both ends of a request extend the spin: its answer and the client's next
                // request are what a sleeping thread would be woken for.
                busy.touch();
                let response = gw.clone().handle(&peer, req).await;
                busy.touch();
                Ok(response)
            }
        });
        let conn = http.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if let Some(spinner) = spinner {
        spinner.abort();
    }
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace = ?grace, "connections still open after the drain deadline");
    }
}
