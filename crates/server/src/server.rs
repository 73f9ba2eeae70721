//! [`Server`]: start-up, serving, and the ordered drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gust_api::wire::{Info, Interpreter};
use gust_gateway::{Gateway, Registry};
use gust_runtime::interpreters::{Found, Interpreters};
use gust_runtime::{Supervisor, SupervisorConfig};
use gust_store::{ArchiveLimits, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::{Config, Error, Result};

/// Entry point.
#[derive(Debug)]
pub struct Server;

/// A started server: bound, loaded, ready to serve.
#[derive(Debug)]
pub struct Running {
    listener: TcpListener,
    gateway: Arc<Gateway>,
    supervisor: Arc<Supervisor>,
    shutdown_tx: watch::Sender<bool>,
    config: Config,
    /// Records of answered sync calls, for their writer.
    call_log: tokio::sync::mpsc::Receiver<gust_gateway::call_log::Entry>,
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
}

impl Server {
    /// Opens the store, finds interpreters, binds the listener and loads every deployed
    /// function, so that once this returns the server can answer at once.
    ///
    /// # Errors
    /// [`Error::Bind`], [`Error::Store`], [`Error::Runtime`], [`Error::Write`].
    pub async fn start(config: Config) -> Result<Running> {
        let dir = config.data_dir.clone();
        let settings = config.interpreters.clone();
        let (store, interpreters) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&dir, ArchiveLimits::default()).map_err(|source| Error::Store { dir, source })?;
            Ok::<_, Error>((store, Interpreters::discover(&settings)))
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        let store = Arc::new(store);
        let supervisor = Supervisor::new(SupervisorConfig {
            data_dir: config.data_dir.clone(),
            interpreters: interpreters.clone(),
            pools: config.pools,
            limits: config.limits,
            secrets: Some(store.clone() as Arc<dyn gust_runtime::secrets::SecretSource>),
            isolation: config.isolation,
        })
        .map_err(|source| Error::Runtime { dir: config.data_dir.clone(), source })?;
        let listener =
            TcpListener::bind(config.listen).await.map_err(|source| Error::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { addr: config.listen, source })?;

        let registry = Registry::default();
        let loaded = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.serving_all())
                .await
                .map_err(|e| Error::Task(e.to_string()))?
                .map_err(|source| Error::Store { dir: config.data_dir.clone(), source })?
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let base_url = format!("http://{}", public_addr(addr));
        let token_file = config.auth.token_file.clone().unwrap_or_else(|| config.data_dir.join("token"));
        let token = {
            let path = token_file.clone();
            tokio::task::spawn_blocking(move || read_or_create_token(&path))
                .await
                .map_err(|e| Error::Task(e.to_string()))??
        };
        // Beyond loopback the control API is never open.
        let control = config.auth.required || !config.listen.ip().is_loopback();
        let mut gateway_config = config.gateway.clone();
        gateway_config.auth = Some(gust_gateway::Auth::new(&token, control));
        let info = Info {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            listen: base_url.clone(),
            data_dir: config.data_dir.display().to_string(),
            isolation: gust_runtime::isolation::detect(config.isolation),
            interpreters: describe(&interpreters),
            auth: gust_api::wire::AuthInfo { control_api: control, token_file: token_file.display().to_string() },
            calls_unrecorded: 0,
            busy_poll: gust_api::wire::BusyPollInfo::default(),
            pools: {
                let pools = supervisor.warm_pools();
                gust_api::wire::PoolsInfo { python: pools.python, node: pools.node }
            },
        };
        let busy_poll = (!config.gateway.busy_poll.is_zero())
            .then(|| gust_gateway::busy_poll::BusyPoll::new(config.gateway.busy_poll));
        if busy_poll.is_some() && tokio::runtime::Handle::current().metrics().num_workers() > 1 {
            // The spin polls the I/O driver only when its thread holds it; a second worker
            // asleep in the driver takes the wake-ups the spin was for.
            tracing::warn!("busy polling is on with more than one runtime worker thread: it will seldom help");
        }
        // A channel of no room would panic: the CLI refuses 0, an embedder gets 1.
        let (log_tx, log_rx) = tokio::sync::mpsc::channel(config.gateway.record_backlog.max(1));
        let gateway = Arc::new(Gateway {
            store,
            supervisor: supervisor.clone(),
            registry,
            info,
            base_url,
            config: gateway_config,
            shutdown: shutdown_rx,
            calls_ready: tokio::sync::Notify::new(),
            topic_published: tokio::sync::Notify::new(),
            replies: std::sync::Mutex::default(),
            call_log: log_tx,
            calls_unrecorded: std::sync::atomic::AtomicU64::new(0),
            busy_poll,
        });
        for serving in loaded {
            let function = serving.function.to_string();
            gateway
                .put_in_service(&function, serving, None)
                .map_err(|e| Error::Task(format!("loading {function}: {e}")))?;
        }
        gateway.reload_routes().await.map_err(|e| Error::Task(format!("loading routes: {e}")))?;
        if let Some(path) = &config.ready_file {
            // Written whole then renamed, so a reader never sees half an address.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, addr.to_string())
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|source| Error::Write { path: path.clone(), source })?;
        }
        Ok(Running { listener, gateway, supervisor, shutdown_tx, config, call_log: log_rx, addr })
    }
}

impl Running {
    /// What `GET /api/v1/info` reports: for the start-up banner.
    pub fn info(&self) -> &Info {
        &self.gateway.info
    }

    /// The number of functions loaded from the store.
    pub fn functions(&self) -> usize {
        self.gateway.registry.all().len()
    }

    /// Serves until `stop` resolves, then drains: stop accepting, let calls in flight
    /// finish (up to the drain timeout), stop every instance.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        let Running { listener, gateway, supervisor, shutdown_tx, config, call_log, .. } = self;
        let shutdown_rx = shutdown_tx.subscribe();
        let reaper = tokio::spawn(supervisor.clone().run_reaper(shutdown_tx.subscribe()));
        let collector = tokio::spawn(gateway.clone().run_collector(shutdown_tx.subscribe()));
        let dispatcher = tokio::spawn(gust_gateway::dispatch::run(gateway.clone(), shutdown_tx.subscribe()));
        let schedules = tokio::spawn(gust_gateway::cron::run(gateway.clone(), shutdown_tx.subscribe()));
        let consumers = tokio::spawn(gust_gateway::topics::run(gateway.clone(), shutdown_tx.subscribe()));
        let records = gust_gateway::call_log::start(gateway.clone(), call_log).map_err(Error::Thread)?;
        let grace = config.drain_timeout;
        let serving = tokio::spawn(gust_gateway::serve(listener, gateway.clone(), shutdown_rx, grace));
        stop.await;
        tracing::info!(grace = ?grace, "shutting down: draining calls in flight");
        let started = tokio::time::Instant::now();
        let _ = shutdown_tx.send(true);
        if let Err(e) = serving.await {
            tracing::error!(error = %e, "gateway task failed");
        }
        let left = grace.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
        supervisor.shutdown(left).await;
        for (task, name) in [
            (reaper, "reaper"),
            (collector, "garbage collector"),
            (dispatcher, "dispatcher"),
            (schedules, "schedules"),
            (consumers, "topic consumers"),
        ] {
            if let Err(e) = task.await {
                tracing::error!(error = %e, task = name, "task failed");
            }
        }
        // Last: every call has been answered and recorded by now.
        let _ = gateway.call_log.send(gust_gateway::call_log::Entry::Finish).await;
        if tokio::task::spawn_blocking(move || records.join()).await.map_or(true, |joined| joined.is_err()) {
            tracing::error!(task = "call records", "task failed");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The address clients should use: a wildcard bind is reached on loopback.
fn public_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr }
}

fn describe(i: &Interpreters) -> Vec<Interpreter> {
    let one = |runtime: &str, f: &Found| Interpreter {
        runtime: runtime.to_owned(),
        path: f.path.as_ref().map(|p| p.display().to_string()),
        detail: f.detail.clone(),
    };
    vec![one("python", &i.python), one("node", &i.node), one("shell", &i.shell), one("java", &i.java)]
}

/// The server's token: the file's first line, or, when the file does not exist, 256
/// random bits in hex written to a new file only the owner may read.
fn read_or_create_token(path: &std::path::Path) -> Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let fail = |detail: String| Error::Token { path: path.to_path_buf(), detail };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.lines().next().unwrap_or_default().trim().to_owned();
            if token.len() < 16 {
                return Err(fail("it must hold a token of at least 16 characters on its first line".into()));
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| fail(format!("no randomness: {e}")))?;
            let token = hex::encode(bytes);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| fail(e.to_string()))?;
            f.write_all(format!("{token}\n").as_bytes()).map_err(|e| fail(e.to_string()))?;
            Ok(token)
        }
        Err(e) => Err(fail(e.to_string())),
    }
}
