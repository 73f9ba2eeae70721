//! [`Gateway`] (what handlers share) and [`serve`] (the accept loop and its drain).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gust_api::wire::Info;
use gust_runtime::{Body, Supervisor};
use gust_store::Store;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::router::{Api, Route, route};
use crate::{Error, Registry, control, invoke};

/// How the gateway runs (from flags and environment, not from manifests).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The largest deploy upload accepted, in bytes. Default 100 MiB.
    pub max_upload: u64,
    /// How long a client may take to send request headers. Default 30 s.
    pub header_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self { max_upload: 100 << 20, header_timeout: Duration::from_secs(30) }
    }
}

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
}

impl Gateway {
    /// The URL of a function.
    pub fn function_url(&self, name: &str) -> String {
        format!("{}/function/{name}", self.base_url)
    }

    /// Answers one request. Never fails: every error becomes a response.
    pub async fn handle(self: Arc<Self>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        match route(req.method(), &path) {
            Route::Invoke { function, path: sub } => invoke::invoke(&self, peer, function, sub, req).await,
            Route::Health => control::health(),
            Route::Api(api) => {
                let result = match api {
                    Api::Info => control::info(&self),
                    Api::List => control::list(&self),
                    Api::Deploy => control::deploy(&self, req).await,
                    Api::Describe(name) => control::describe(&self, name).await,
                    Api::Remove(name) => control::remove(&self, name).await,
                    Api::Logs(name) => control::logs(&self, name, req.uri().query()).await,
                };
                result.unwrap_or_else(|e| e.into_response(None))
            }
            Route::NotFound => Error::RouteNotFound { path }.into_response(None),
            Route::MethodNotAllowed { allow } => Error::MethodNotAllowed { allow }.into_response(None),
        }
    }
}

/// Accepts connections on `listener` until `shutdown` flips, then stops accepting and
/// waits up to `grace` for open requests to finish.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>, grace: Duration) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(gateway.config.header_timeout).keep_alive(true);
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
        let svc = hyper::service::service_fn(move |req| {
            let gw = gw.clone();
            async move { Ok::<_, Infallible>(gw.handle(peer, req).await) }
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
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace = ?grace, "connections still open after the drain deadline");
    }
}
