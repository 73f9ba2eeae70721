//! [`Supervisor`]: the runtime's front door. It owns one [`Pool`] per revision, routes a
//! call to the right protocol, runs the idle reaper and drains everything at shutdown.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gust_api::wire::{CallError, InstanceInfo, RevisionScale};
use gust_api::{CallId, Protocol, RevisionId};
use gust_store::Revision;
use http::{Request, Response};

use crate::body::Body;
use crate::instance::{Context, STOP_GRACE};
use crate::interpreters::Interpreters;
use crate::logs::{Logs, now_rfc3339};
use crate::pool::{Closed, Pool};
use crate::{Error, Result, lambda, proxy, stdio};

/// How often the autoscaler decides. Knative ticks every 2 s; a quarter second follows a
/// short stable window closely, and a decision costs microseconds.
const REAP_EVERY: Duration = Duration::from_millis(250);

/// What the supervisor needs to know about this host.
#[derive(Debug)]
pub struct SupervisorConfig {
    /// The data directory; the supervisor uses `run/`, `invokers/`, `cache/` and `logs/`.
    pub data_dir: PathBuf,
    /// Interpreters found at start-up.
    pub interpreters: Interpreters,
    /// Warm processes kept per runtime.
    pub pools: WarmPools,
    /// Limits across every function.
    pub limits: HostLimits,
    /// Where instances' secrets come from (the store); `None` keeps none.
    pub secrets: Option<Arc<dyn crate::secrets::SecretSource>>,
    /// How instances are confined.
    pub isolation: crate::isolation::Level,
}

/// Limits across every function on this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// Instances running at once, all functions together (`--max-instances`). Default 256.
    pub max_instances: u32,
    /// The longest line of output kept whole; longer lines are split (`--log-line-max`).
    /// Default 16 KiB.
    pub log_line_max: usize,
    /// The most output bytes one call may log; the rest is dropped with a line saying so
    /// (`--log-call-max`). Default 1 MiB.
    pub log_call_max: u64,
}

impl Default for HostLimits {
    fn default() -> Self {
        Self { max_instances: 256, log_line_max: crate::logs::MAX_LINE, log_call_max: 1 << 20 }
    }
}

/// Warm processes kept per runtime, so a cold start skips the interpreter's start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmPools {
    /// Python children the zygote keeps forked and waiting for a function; 0 runs no
    /// zygote (every Python instance is a fresh interpreter).
    pub python: u32,
    /// Node processes kept started and waiting for a function (0: none).
    pub node: u32,
}

impl WarmPools {
    /// Every pool off.
    pub const OFF: Self = Self { python: 0, node: 0 };

    /// The default size of each pool: one waiting process per core, at most four. A
    /// burst of cold starts beyond that forks (Python) or starts fresh (Node) while the
    /// pool refills. A waiting Node process holds about 40 MB; a waiting Python child
    /// shares nearly all of its memory with the zygote.
    pub fn default_size() -> u32 {
        std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(4)).clamp(1, 4)
    }
}

impl Default for WarmPools {
    fn default() -> Self {
        Self { python: Self::default_size(), node: Self::default_size() }
    }
}

/// Runs every function's instances.
#[derive(Debug)]
pub struct Supervisor {
    ctx: Arc<Context>,
    /// Pools by revision id. Several revisions of one function serve at once (traffic
    /// splits, tags) and old ones drain. Every revision in service has a pool, made by
    /// [`Supervisor::serve`] before any call is routed to it.
    pools: Mutex<HashMap<RevisionId, Arc<Pool>>>,
    shutting_down: AtomicBool,
}

impl Supervisor {
    /// Prepares the directories and writes the built-in invokers out.
    ///
    /// # Errors
    /// [`Error::Io`] when the data directory cannot be written.
    pub fn new(config: SupervisorConfig) -> Result<Arc<Self>> {
        let run_dir = config.data_dir.join("run");
        // Instances of a previous run are gone; their directories are stale.
        let _ = std::fs::remove_dir_all(&run_dir);
        let invokers_dir = config.data_dir.join("invokers");
        let pycache_dir = config.data_dir.join("cache").join("pycache");
        for d in [&run_dir, &invokers_dir, &pycache_dir] {
            std::fs::create_dir_all(d).map_err(Error::io("create directory", d))?;
        }
        for (name, text) in [
            ("python.py", include_str!("invokers/python.py")),
            ("node.js", include_str!("invokers/node.js")),
            ("lambda.py", include_str!("invokers/lambda.py")),
            ("lambda.js", include_str!("invokers/lambda.js")),
            ("Invoker.java", include_str!("invokers/Invoker.java")),
        ] {
            let path = invokers_dir.join(name);
            std::fs::write(&path, text).map_err(Error::io("write invoker", &path))?;
        }
        let path_dirs = crate::instance::interpreter_dirs(&config.interpreters);
        // Under `basic` the zygote runs in a broad sandbox that each child narrows; under
        // `isolated` it has none (its children unshare and mount) and each child enters
        // the whole sandbox itself.
        let basic = config.isolation == crate::isolation::Level::Basic;
        let cgroups = match config.isolation.isolated() {
            true => {
                // Every instance sees its own empty tmpfs at /tmp: what is under the host's
                // (code, invokers, its own directory) would be out of its sight.
                let data = config.data_dir.canonicalize().unwrap_or_else(|_| config.data_dir.clone());
                if data.starts_with("/tmp") {
                    return Err(Error::Isolation(format!(
                        "the data directory {} is under /tmp, which each instance sees as its own private \
                         tmpfs at level `isolated`; choose another --data",
                        data.display()
                    )));
                }
                Some(Arc::new(crate::cgroups::Cgroups::open().map_err(Error::Isolation)?))
            }
            false => None,
        };
        let zygote = match (&config.interpreters.python.path, config.pools.python) {
            (Some(python), waiting) if waiting > 0 => {
                let dir = run_dir.join("zygote-python");
                let mut env = crate::spawn::base_env(&dir.join("scratch"), &path_dirs);
                if let Some(cgroups) = &cgroups {
                    // Its waiting children move into spare groups below these ahead of need.
                    let parents = std::env::join_paths(cgroups.parents()).unwrap_or_default();
                    env.push(("GUST_CGROUP_PARENTS".into(), parents));
                }
                let sandbox = match basic {
                    true => Some(Arc::new(crate::confine::zygote_sandbox(
                        &config.interpreters,
                        &invokers_dir,
                        &config.data_dir,
                        &run_dir,
                        &pycache_dir,
                    )?)),
                    false => None,
                };
                Some(crate::zygote::Zygote::new(
                    python.clone(),
                    invokers_dir.join("python.py"),
                    dir,
                    env,
                    usize::try_from(waiting).unwrap_or(usize::MAX),
                    sandbox,
                ))
            }
            _ => None,
        };
        let node_spares = match (&config.interpreters.node.path, config.pools.node) {
            (Some(node), n) if n > 0 => {
                let confine = config
                    .isolation
                    .sandboxed()
                    .then(|| crate::confine::spare_confinement(&config.interpreters, &invokers_dir, cgroups.clone()));
                Some(Arc::new(crate::spares::Spares::new(
                    "node",
                    node.clone(),
                    vec![invokers_dir.join("node.js").into(), "--generic".into()],
                    usize::try_from(n).unwrap_or(usize::MAX),
                    run_dir.clone(),
                    path_dirs,
                    confine,
                )))
            }
            _ => None,
        };
        let logs_dir = config.data_dir.join("logs");
        let logs = Arc::new(
            Logs::open(&logs_dir, config.limits.log_call_max).map_err(Error::io("create directory", &logs_dir))?,
        );
        let ctx = Arc::new(Context {
            run_dir,
            invokers_dir,
            pycache_dir,
            interpreters: config.interpreters,
            logs,
            java_invoker: tokio::sync::OnceCell::new(),
            zygote,
            node_spares,
            limits: config.limits,
            instances: Arc::new(std::sync::atomic::AtomicU32::new(0)),
            secrets: config.secrets,
            isolation: config.isolation,
            cgroups,
            reaper: tokio::sync::Notify::new(),
        });
        if let Some(spares) = &ctx.node_spares {
            tokio::spawn(spares.clone().run());
        }
        if ctx.zygote.is_some() {
            let warm = ctx.clone();
            tokio::spawn(async move {
                if let Some(z) = warm.zygote.as_ref()
                    && let Err(e) = z.warm_up().await
                {
                    tracing::warn!(error = %e, "the python zygote did not start; python instances start fresh");
                }
            });
        }
        Ok(Arc::new(Self { ctx, pools: Mutex::new(HashMap::new()), shutting_down: AtomicBool::new(false) }))
    }

    /// The captured output of every function.
    pub fn logs(&self) -> &Arc<Logs> {
        &self.ctx.logs
    }

    /// The interpreters in use.
    pub fn interpreters(&self) -> &Interpreters {
        &self.ctx.interpreters
    }

    /// The warm pools as they run: a runtime's is off (0) when asked to be, or when its
    /// interpreter was not found, whatever size was asked for.
    pub fn warm_pools(&self) -> WarmPools {
        let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        WarmPools {
            python: self.ctx.zygote.as_ref().map_or(0, |z| size(z.waiting())),
            node: self.ctx.node_spares.as_ref().map_or(0, |s| size(s.size())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RevisionId, Arc<Pool>>> {
        // A map of handles only; safe to use after a panic elsewhere.
        self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts `revisions` of `function` in service: their pools stop retiring (and keep
    /// `scale.min`); every other revision of it retires, its instances stopping as they go
    /// idle, so calls in flight finish. `new` is a revision just deployed, which starts
    /// `scale.initial` instances at once, as Knative does; one resumed after a restart
    /// starts only `scale.min`.
    pub fn serve(&self, function: &str, revisions: &[Arc<Revision>], new: Option<&RevisionId>) {
        let kept: Vec<Arc<Pool>> = revisions
            .iter()
            .map(|r| {
                let initial = if new == Some(&r.id) { r.spec.scale.initial } else { 0 };
                let pool = self
                    .lock()
                    .entry(r.id.clone())
                    .or_insert_with(|| Pool::new(self.ctx.clone(), r.clone(), initial))
                    .clone();
                pool.resume();
                pool
            })
            .collect();
        for other in self.pools_of(function) {
            if !kept.iter().any(|p| Arc::ptr_eq(p, &other)) {
                other.retire();
            }
        }
        for pool in kept {
            pool.autoscale();
        }
    }

    /// A deploy's start-up check of `revision`, before it takes traffic: one instance is
    /// started and checked ([`Pool::probe`]). It stays, in the pool calls will use, when
    /// `scale.initial` wants instances; a revision that fails leaves no pool behind.
    ///
    /// # Errors
    /// Why the revision cannot start, with its instance's last output.
    pub async fn probe(&self, revision: &Arc<Revision>) -> std::result::Result<(), String> {
        let initial = revision.spec.scale.initial;
        let pool = self
            .lock()
            .entry(revision.id.clone())
            .or_insert_with(|| Pool::new(self.ctx.clone(), revision.clone(), initial))
            .clone();
        let checked = pool.probe(initial > 0).await;
        if checked.is_err() {
            self.lock().remove(&revision.id);
            pool.close(Closed::Removed);
        }
        checked
    }

    /// Keeps at least one instance of `revision` until `until` (and starts one if there
    /// is none at the next tick): work for it is waiting, as a topic's unconsumed
    /// messages between retries, so it must not scale to zero meanwhile.
    pub fn hold(&self, revision: &Arc<Revision>, until: std::time::Instant) {
        self.pool(revision).hold(until);
    }

    /// Whether `revision` has a pool: it is in service, or drains calls, or is being
    /// checked. Garbage collection keeps such revisions, whose code is in use.
    pub fn has_pool(&self, revision: &RevisionId) -> bool {
        self.lock().contains_key(revision)
    }

    /// Deletes what instances left behind for code directories that are gone: Python's
    /// bytecode, kept under the cache by the code's absolute path.
    pub fn forget_code(&self, dirs: &[PathBuf]) {
        for dir in dirs {
            let cached = self.ctx.pycache_dir.join(dir.strip_prefix("/").unwrap_or(dir));
            if let Err(e) = std::fs::remove_dir_all(&cached)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %cached.display(), error = %e, "could not delete cached bytecode");
            }
        }
    }

    /// The pool of `revision`. Every revision in service has one, so a call that finds
    /// none raced a traffic change that took its revision out of service: the pool made
    /// for it serves that call and starts retired.
    fn pool(&self, revision: &Arc<Revision>) -> Arc<Pool> {
        let mut pools = self.lock();
        // Looked up before it is cloned as a key: this runs on every call.
        if let Some(pool) = pools.get(&revision.id) {
            return pool.clone();
        }
        let pool = Pool::new(self.ctx.clone(), revision.clone(), 0);
        pool.retire();
        pools.insert(revision.id.clone(), pool.clone());
        pool
    }

    /// Serves one call on `revision`. `deadline` is when the call's `limits.timeout`
    /// runs out, counted from its arrival; `exceeded` is set by the request body's limit.
    /// The answer comes with whether the call waited for an instance started for it.
    ///
    /// # Errors
    /// Any [`Error`]; each is one answer the gateway gives.
    pub async fn call(
        &self,
        revision: &Arc<Revision>,
        call: &CallId,
        req: Request<Body>,
        deadline: tokio::time::Instant,
        exceeded: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<(Response<Body>, bool)> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let pool = self.pool(revision);
        let slot = pool.acquire(call).await?;
        let cold = slot.cold();
        let resp = match revision.spec.protocol {
            Protocol::Http => proxy::call(slot, req, deadline, exceeded).await,
            Protocol::Stdio => stdio::call(slot, req, deadline, exceeded).await,
            Protocol::Lambda => lambda::call(slot, req, deadline, exceeded).await,
        }?;
        Ok((resp, cold))
    }

    /// Remembers a failed call for `gust describe`.
    pub fn record_error(&self, function: &str, call: &CallId, status: u16, message: &str) {
        self.ctx.logs.record_error(
            function,
            CallError { at: now_rfc3339(), call_id: call.to_string(), status, message: message.to_owned() },
        );
    }

    /// Stops every instance of `function` and forgets its pools and logs.
    pub fn remove_function(&self, function: &str) {
        let removed: Vec<Arc<Pool>> =
            self.lock().extract_if(|_, p| p.revision().spec.name.as_str() == function).map(|(_, p)| p).collect();
        for pool in removed {
            pool.close(Closed::Removed);
        }
        self.ctx.logs.remove(function);
    }

    /// Instances of `function`, over all its revisions.
    pub fn instances(&self, function: &str) -> Vec<InstanceInfo> {
        self.pools_of(function).iter().flat_map(|p| p.infos()).collect()
    }

    /// The pools of every revision of `function`, taken out of the lock so that asking
    /// them for details never holds it.
    fn pools_of(&self, function: &str) -> Vec<Arc<Pool>> {
        self.lock().values().filter(|p| p.revision().spec.name.as_str() == function).cloned().collect()
    }

    /// The autoscaler's view of each revision of `function` that has a pool, newest first.
    pub fn scaling(&self, function: &str) -> Vec<RevisionScale> {
        let mut out: Vec<RevisionScale> = self.pools_of(function).iter().map(|p| p.scale_info()).collect();
        out.sort_by(|a, b| b.revision.cmp(&a.revision));
        out
    }

    /// Ticks every pool's autoscaler and forgets drained retired pools, until `shutdown`
    /// flips. When every pool is quiet (no instance, none starting, no call waiting,
    /// nothing wanted) there is nothing to decide until a call comes, so it sleeps until
    /// a pool wakes it ([`Context::reaper`]): an idle server does not tick.
    pub async fn run_reaper(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(REAP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quiet = false;
        loop {
            tokio::select! {
                _ = tick.tick(), if !quiet => {}
                () = self.ctx.reaper.notified(), if quiet => tick.reset(),
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
            }
            let pools: Vec<(RevisionId, Arc<Pool>)> = self.lock().iter().map(|(k, p)| (k.clone(), p.clone())).collect();
            let ticks: Vec<(RevisionId, crate::pool::Tick)> =
                pools.into_iter().map(|(k, p)| (k, p.autoscale())).collect();
            let done: Vec<&RevisionId> = ticks.iter().filter(|(_, t)| t.forget).map(|(k, _)| k).collect();
            if !done.is_empty() {
                let mut map = self.lock();
                for k in done {
                    map.remove(k);
                }
            }
            // A pool that stops being quiet after this look wakes the loop, whose permit
            // is kept if it is not waiting yet.
            quiet = ticks.iter().all(|(_, t)| t.quiet);
        }
    }

    /// How instances are confined.
    pub fn isolation(&self) -> crate::isolation::Level {
        self.ctx.isolation
    }

    /// Refuses new calls, waits up to `grace` for calls in flight, then stops every
    /// instance and waits (briefly) for them to exit.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutting_down.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let busy: u32 = self.lock().values().map(|p| p.in_flight()).sum();
            if busy == 0 || tokio::time::Instant::now() >= deadline {
                if busy > 0 {
                    tracing::warn!(calls = busy, "drain deadline passed; stopping instances with calls in flight");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pools: Vec<Arc<Pool>> = self.lock().drain().map(|(_, p)| p).collect();
        let instances: Vec<_> = pools.iter().flat_map(|p| p.close(Closed::Shutdown)).collect();
        for i in instances {
            if i.process.is_some() {
                i.wait_dead(STOP_GRACE + Duration::from_millis(500)).await;
            }
        }
        // Last: its children are instances, and they have had their drain.
        if let Some(z) = &self.ctx.zygote {
            z.stop();
        }
        if let Some(s) = &self.ctx.node_spares {
            s.close();
        }
        if let Some(c) = self.ctx.cgroups.clone() {
            let _ = tokio::task::spawn_blocking(move || c.close()).await;
        }
    }
}
