//! One running copy of a revision.
//!
//! An `http` instance is a long-lived process serving HTTP/1.1 on a Unix socket (or a TCP
//! port for executables that want `PORT`). A `stdio` instance has no process of its own:
//! it is a private scratch directory plus a concurrency slot, and every call runs one
//! process inside it (the classic watchdog contract), so both kinds keep their scratch
//! files across warm calls and lose them when they go idle.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gust_api::wire::LogLine;
use gust_api::{CallId, Protocol, Runtime};
use gust_store::Revision;
use hyper::client::conn::http1::SendRequest;
use sha2::Digest as _;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::watch;

use crate::body::Body;
use crate::confine::{isolation_for, out_of_memory, sandbox_env, sandbox_for};
use crate::interpreters::Interpreters;
use crate::logs::{Logs, now_rfc3339};
use crate::spawn::{self, Launch, SIGKILL, SIGTERM};
use crate::{Error, Result};

/// How every Python invoker process (instance or zygote) is run. -I: ignore PYTHON*
/// variables and the user site; -S: skip site's .pth hooks (the invoker adds
/// site-packages itself); -u: unbuffered output.
pub(crate) const PYTHON_FLAGS: [&str; 3] = ["-I", "-S", "-u"];

/// Lines of an instance's latest output kept to explain a crash.
const LAST_OUTPUT: usize = 12;
/// How long a stopped instance gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// What instances of every revision share: where they live and what they run with.
#[derive(Debug)]
pub struct Context {
    /// Instance directories (scratch and socket) go here.
    pub run_dir: PathBuf,
    /// The built-in invokers' sources, written out at start-up.
    pub invokers_dir: PathBuf,
    /// Python's bytecode cache, kept out of the (shared, digest-named) code directories.
    pub pycache_dir: PathBuf,
    /// Interpreters found at start-up.
    pub interpreters: Interpreters,
    /// Captured output.
    pub logs: Arc<Logs>,
    /// The compiled Java invoker's class directory, compiled on first use (once per
    /// invoker source, cached on disk), or why it could not be.
    pub java_invoker: tokio::sync::OnceCell<std::result::Result<PathBuf, String>>,
    /// The Python zygote, unless the warm pool for Python is off.
    pub zygote: Option<crate::zygote::Zygote>,
    /// Node processes started ahead of need, unless the warm pool for Node is off.
    pub node_spares: Option<Arc<crate::spares::Spares>>,
    /// Limits across every function.
    pub limits: crate::HostLimits,
    /// Instances holding a [`Ticket`] now.
    pub instances: Arc<std::sync::atomic::AtomicU32>,
    /// Where secret values come from.
    pub secrets: Option<Arc<dyn crate::secrets::SecretSource>>,
    /// How instances are confined.
    pub isolation: crate::isolation::Level,
    /// The parent of instances' cgroups, at level `isolated`.
    pub cgroups: Option<Arc<crate::cgroups::Cgroups>>,
    /// Wakes the autoscaler's loop when every pool was quiet: a pool was made, an
    /// instance is starting, a call waits, a pool is held or retired (see
    /// `Supervisor::run_reaper`).
    pub reaper: tokio::sync::Notify,
}

/// A place among the server's `max_instances`, given back when the instance it was
/// taken for is dropped.
#[derive(Debug)]
pub struct Ticket(Arc<std::sync::atomic::AtomicU32>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Why instances of `spec` must start as fresh processes rather than from the warm pool
/// of their runtime; `None` when they can be pooled (or the runtime has no pool).
pub fn unpooled_reason(ctx: &Context, spec: &gust_api::FunctionSpec) -> Option<String> {
    let pooled = match spec.runtime {
        Runtime::Node | Runtime::LambdaNode
            if ctx.isolation.sandboxed() && spec.network == gust_api::Network::None && ctx.node_spares.is_some() =>
        {
            return Some(
                "network = \"none\": a waiting Node process was started with the network, and cannot drop it"
                    .to_owned(),
            );
        }
        Runtime::Python | Runtime::LambdaPython => ctx.zygote.is_some(),
        Runtime::Node | Runtime::LambdaNode => ctx.node_spares.is_some(),
        _ => return None,
    };
    if !pooled {
        return Some(format!("the warm pool for {} is off (gust up --pool)", spec.runtime));
    }
    // The dynamic loader, the C library and the interpreter read these only when a
    // process starts; a pooled process started before they were set would ignore them.
    // (Python's own PYTHON* variables are ignored by every instance: it runs with -I.)
    let startup_only = |k: &str| {
        k.starts_with("LD_")
            || k.starts_with("LC_")
            || k.starts_with("MALLOC_")
            || matches!(k, "LANG" | "LANGUAGE" | "GLIBC_TUNABLES")
            || (matches!(spec.runtime, Runtime::Node | Runtime::LambdaNode)
                && (k.starts_with("NODE_") || k.starts_with("UV_")))
    };
    let keys: Vec<&str> = spec.env.keys().map(String::as_str).filter(|k| startup_only(k)).collect();
    (!keys.is_empty()).then(|| format!("env sets {}, read only when a process starts", keys.join(", ")))
}

/// A started instance process, however it was made.
struct Launched {
    pid: u32,
    stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// Resolves with how the process ended.
    exited: std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>,
    /// Whether it came from a warm pool.
    pooled: bool,
    /// At `isolated`: the cgroup it was started in (a zygote child's is adopted later,
    /// once its pid is known).
    cgroup: Option<crate::cgroups::Group>,
}

impl Launched {
    fn spawned(launch: Launch, cgroup: Option<crate::cgroups::Group>) -> std::io::Result<Self> {
        Ok(Self { cgroup, ..Self::from_child(spawn::spawn(launch)?, false) })
    }

    fn from_child(mut child: tokio::process::Child, pooled: bool) -> Self {
        let stdout = child.stdout.take().map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>);
        let stderr = child.stderr.take().map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>);
        Self {
            pid: child.id().unwrap_or(0),
            stdout,
            stderr,
            exited: Box::pin(async move {
                match child.wait().await {
                    Ok(s) => describe_exit(s),
                    Err(e) => format!("could not be waited for: {e}"),
                }
            }),
            pooled,
            cgroup: None,
        }
    }

    fn forked(f: crate::zygote::Forked) -> Self {
        Self {
            pid: f.pid,
            stdout: Some(Box::new(f.stdout)),
            stderr: Some(Box::new(f.stderr)),
            exited: Box::pin(async move { f.exited.await.unwrap_or_else(|_| "exited".to_owned()) }),
            pooled: true,
            cgroup: None,
        }
    }
}

impl Context {
    /// Takes a place for one more instance among `max_instances`.
    ///
    /// # Errors
    /// [`Error::AtCapacity`] when every place is taken.
    pub fn reserve(&self) -> Result<Ticket> {
        use std::sync::atomic::Ordering;
        let max = self.limits.max_instances;
        self.instances
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .map_err(|_| Error::AtCapacity { max })?;
        Ok(Ticket(self.instances.clone()))
    }

    /// The class directory of the Java invoker, compiling it with `javac` the first time
    /// any server on this data directory needs it.
    async fn java_invoker(&self) -> Result<PathBuf> {
        let unavailable = |detail: String| Error::RuntimeUnavailable { runtime: "java".into(), detail };
        let javac = self.interpreters.javac().ok_or_else(|| unavailable(self.interpreters.java.detail.clone()))?;
        let source = self.invokers_dir.join("Invoker.java");
        let got = self
            .java_invoker
            .get_or_init(|| async move {
                let text = std::fs::read(&source).map_err(|e| format!("read {}: {e}", source.display()))?;
                let hash = hex::encode(sha2::Sha256::digest(&text));
                let classes = source.with_file_name(format!("java-{}", &hash[..16]));
                if classes.join("gust").join("Invoker.class").is_file() {
                    return Ok(classes);
                }
                let tmp = classes.with_extension("tmp");
                let _ = std::fs::remove_dir_all(&tmp);
                let out = tokio::process::Command::new(&javac)
                    .arg("-d")
                    .arg(&tmp)
                    .arg(&source)
                    .output()
                    .await
                    .map_err(|e| format!("could not run {}: {e}", javac.display()))?;
                if !out.status.success() {
                    return Err(format!(
                        "compiling the invoker failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                std::fs::rename(&tmp, &classes).map_err(|e| format!("store the invoker: {e}"))?;
                Ok(classes)
            })
            .await;
        got.clone().map_err(unavailable)
    }
}

/// How a new instance becomes reachable.
enum Ready {
    /// gust bound the listener and passed it in: requests wait in its backlog at once.
    Bound(Target),
    /// The process binds its own `GUST_SOCKET` (or the given `PORT`); poll until it does.
    Poll(Option<SocketAddr>),
}

/// Where the gateway reaches an `http` instance.
#[derive(Debug, Clone)]
pub enum Target {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A loopback TCP port.
    Tcp(SocketAddr),
    /// The instance's own Lambda Runtime API, from which its runtime client pulls calls.
    Lambda(Arc<crate::lambda::Bridge>),
}

/// One running copy of a revision.
#[derive(Debug)]
pub struct Instance {
    /// Unique id, `<revision>-<6 hex>`, as it appears in logs.
    pub id: String,
    /// What it runs.
    pub revision: Arc<Revision>,
    /// Its private directory (scratch and socket); removed when it stops.
    pub dir: PathBuf,
    /// Its scratch directory, given as `TMPDIR`, `HOME` and `GUST_SCRATCH`.
    pub scratch: PathBuf,
    /// When it was started.
    pub started: Instant,
    /// The long-lived process of an `http` instance; `None` for `stdio`.
    pub process: Option<Process>,
    /// Where an `http` instance serves; set once it is known to be ready.
    target: OnceLock<Target>,
    state: Mutex<State>,
    /// Flips to `true` once the process has exited and its output is drained.
    dead: watch::Receiver<bool>,
    /// Responses it has begun, to tell a failure to start from a crash later on.
    answered: std::sync::atomic::AtomicU64,
    /// Whether its process came from a warm pool (a zygote fork or a spare).
    pub pooled: bool,
    /// Its place among the server's `max_instances` (none for a deploy's start-up check
    /// that found every place taken).
    _ticket: Option<Ticket>,
    /// The secrets it reads: their variables (for `stdio` calls) and output masks.
    pub secrets: crate::secrets::Secrets,
    /// Its `basic` sandbox (kept for the calls of a `stdio` instance).
    pub sandbox: Option<Arc<crate::sandbox::Sandbox>>,
    /// Its namespaces to enter, at level `isolated` (kept for the calls of a `stdio`
    /// instance, each of which enters its own).
    pub isolate: Option<spawn::Isolate>,
    /// Its cgroup, at level `isolated`; removed with it.
    pub cgroup: Option<crate::cgroups::Group>,
    /// The read-only copy of its code a confined spare loaded (see `spares.rs`);
    /// removed with it.
    code_slot: Option<PathBuf>,
}

/// The process behind an `http` instance.
#[derive(Debug, Clone)]
pub struct Process {
    /// Its pid, which is also its process group id.
    pub pid: u32,
}

#[derive(Debug, Default)]
struct State {
    /// Keep-alive connections not in use. At most `scale.concurrency` exist, because a
    /// connection is only taken by a call holding a slot.
    idle: Vec<SendRequest<Body>>,
    /// Calls in flight, to tag output lines when exactly one is running.
    calls: Vec<CallId>,
    /// The latest output lines, for crash messages.
    last_output: VecDeque<String>,
    /// How the process ended, once it has.
    exit: Option<String>,
}

impl Instance {
    /// Starts an instance of `revision`. `on_exit` runs once when its process ends (never
    /// for `stdio` instances, which have none).
    ///
    /// # Errors
    /// [`Error::RuntimeUnavailable`] when the interpreter is missing, [`Error::StartFailed`]
    /// when the process cannot start or dies before it is ready, [`Error::Io`].
    pub async fn start(
        ctx: &Arc<Context>,
        revision: &Arc<Revision>,
        deadline: tokio::time::Instant,
        on_exit: Box<dyn FnOnce(Arc<Instance>) + Send>,
        ticket: Option<Ticket>,
    ) -> Result<Arc<Instance>> {
        let spec = &revision.spec;
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let id = format!("{}-{}", revision.id, &suffix[suffix.len() - 6..]);
        let dir = ctx.run_dir.join(&id);
        let scratch = dir.join("scratch");
        let make_dir = || std::fs::create_dir_all(&scratch).map_err(Error::io("create scratch directory", &scratch));
        let (dead_tx, dead_rx) = watch::channel(false);
        if spec.network == gust_api::Network::None && !ctx.isolation.sandboxed() {
            // Running it with the network it asked not to have would be worse than not.
            return Err(Error::StartFailed {
                function: spec.name.to_string(),
                detail: "network = \"none\" is enforced only with `gust up --isolation basic` or `isolated`".to_owned(),
            });
        }
        let secrets = crate::secrets::Secrets::load(ctx.secrets.as_ref(), spec, &scratch).await?;
        if spec.protocol == Protocol::Stdio {
            make_dir()?;
            secrets.write_files(&scratch)?;
            // Every call's process joins this group and enters these namespaces; it then
            // builds a ruleset of its own (its own /proc and /tmp need rules), so the one
            // kept here serves the calls of `basic` only.
            let (cgroup, isolate) = isolation_for(ctx, spec, &id)?;
            let sandbox = if isolate.is_some() { None } else { sandbox_for(ctx, revision, &dir, None)? };
            return Ok(Arc::new(Instance {
                id,
                revision: revision.clone(),
                dir,
                scratch,
                started: Instant::now(),
                process: None,
                target: OnceLock::new(),
                state: Mutex::new(State::default()),
                dead: dead_rx,
                answered: Default::default(),
                pooled: false,
                _ticket: ticket,
                secrets,
                sandbox,
                isolate,
                cgroup,
                code_slot: None,
            }));
        }
        let fail = |detail: String| Error::StartFailed { function: spec.name.to_string(), detail };
        let socket = dir.join("sock");
        let mut env = spawn::base_env(&scratch, &interpreter_dirs(&ctx.interpreters));
        env.extend(gust_env(revision, &id, &ctx.pycache_dir));
        env.push(("GUST_SOCKET".into(), socket.clone().into()));
        env.extend(secrets.env.iter().cloned());
        let poolable = unpooled_reason(ctx, spec).is_none();
        // A Lambda client's Runtime API is bound first: its address is in the environment.
        let mut lambda_api = None;
        if spec.runtime.is_lambda() {
            let (bridge, listener) =
                crate::lambda::Bridge::bind(spec.name.as_str()).map_err(Error::io("bind Runtime API", &dir))?;
            env.extend(crate::lambda::env(revision, &id, &bridge.address()));
            lambda_api = Some((bridge, listener));
        }
        // A spare brings its own directory (socket and scratch), moved to this one's name.
        let spared = match &ctx.node_spares {
            Some(spares) if matches!(spec.runtime, Runtime::Node | Runtime::LambdaNode) && poolable => {
                Self::from_spare(ctx, spares, spec, &dir, &env, &revision.code_dir, &secrets).await
            }
            _ => None,
        };
        // A confined spare brings its code slot (and at `isolated` its own cgroup).
        let (spared, code_slot) = spared.map_or((None, None), |(launched, slot)| (Some(launched), slot));
        if spared.is_none() {
            make_dir()?;
            secrets.write_files(&scratch)?;
        }
        let runtime_api = lambda_api.as_ref().map(|(bridge, _)| bridge.port());
        // A zygote child enters its sandbox itself (from `sandbox_env`); only a process
        // gust spawns gets a prepared one, so the fork path builds none it would not use.
        let forks = spared.is_none()
            && ctx.zygote.is_some()
            && matches!(spec.runtime, Runtime::Python | Runtime::LambdaPython)
            && poolable;
        let (program, args, listen_fd, ready): (PathBuf, Vec<OsString>, Option<OwnedFd>, Ready) = match spec.runtime {
            Runtime::Python | Runtime::Node => {
                let (program, invoker) = match spec.runtime {
                    Runtime::Python => (ctx.interpreters.python.path.clone(), ctx.invokers_dir.join("python.py")),
                    _ => (ctx.interpreters.node.path.clone(), ctx.invokers_dir.join("node.js")),
                };
                let program = program.ok_or_else(|| Error::RuntimeUnavailable {
                    runtime: spec.runtime.to_string(),
                    detail: match spec.runtime {
                        Runtime::Python => ctx.interpreters.python.detail.clone(),
                        _ => ctx.interpreters.node.detail.clone(),
                    },
                })?;
                // A spare came with its listener, moved here with its directory.
                let listener = match spared {
                    Some(_) => None,
                    None => Some(
                        std::os::unix::net::UnixListener::bind(&socket)
                            .map_err(Error::io("bind instance socket", &socket))?,
                    ),
                };
                let mut args: Vec<OsString> = Vec::new();
                if spec.runtime == Runtime::Python {
                    args.extend(PYTHON_FLAGS.map(OsString::from));
                }
                args.push(invoker.into());
                (program, args, listener.map(OwnedFd::from), Ready::Bound(Target::Unix(socket.clone())))
            }
            Runtime::Java => {
                let java = ctx.interpreters.java.path.clone().ok_or_else(|| Error::RuntimeUnavailable {
                    runtime: "java".into(),
                    detail: ctx.interpreters.java.detail.clone(),
                })?;
                let invoker = ctx.java_invoker().await?;
                let code = &revision.code_dir;
                let mut classpath = OsString::from(invoker.as_os_str());
                for part in [code.join("classes"), code.join("*")] {
                    classpath.push(":");
                    classpath.push(part.as_os_str());
                }
                // The JVM binds GUST_SOCKET itself (it cannot adopt an inherited Unix
                // listener on fd 3), so it is polled for readiness like an exec server.
                // Tiered compilation stopped at C1 and the serial collector start fastest.
                let args = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto", "-XX:-UsePerfData", "-cp"]
                    .into_iter()
                    .map(OsString::from)
                    .chain([classpath, "gust.Invoker".into()])
                    .collect();
                (java, args, None, Ready::Poll(None))
            }
            Runtime::Exec => {
                let port = free_port().map_err(|e| fail(format!("no free port: {e}")))?;
                env.push(("PORT".into(), port.to_string().into()));
                (
                    revision.code_dir.join(&spec.handler),
                    Vec::new(),
                    None,
                    Ready::Poll(Some(SocketAddr::from(([127, 0, 0, 1], port)))),
                )
            }
            Runtime::LambdaPython | Runtime::LambdaNode | Runtime::Lambda => {
                let bridge = match &lambda_api {
                    Some((bridge, _)) => bridge.clone(),
                    None => return Err(fail("no Runtime API was bound".into())),
                };
                let (program, args) = match spec.runtime {
                    Runtime::LambdaPython => {
                        let python = ctx.interpreters.python.path.clone().ok_or_else(|| Error::RuntimeUnavailable {
                            runtime: spec.runtime.to_string(),
                            detail: ctx.interpreters.python.detail.clone(),
                        })?;
                        let mut args: Vec<OsString> = PYTHON_FLAGS.map(OsString::from).to_vec();
                        // python.py runs its Lambda client (lambda.py) when the Runtime API is set.
                        args.push(ctx.invokers_dir.join("python.py").into());
                        (python, args)
                    }
                    Runtime::LambdaNode => {
                        let node = ctx.interpreters.node.path.clone().ok_or_else(|| Error::RuntimeUnavailable {
                            runtime: spec.runtime.to_string(),
                            detail: ctx.interpreters.node.detail.clone(),
                        })?;
                        // node.js runs its Lambda client (lambda.js) when the Runtime API is set.
                        (node, vec![ctx.invokers_dir.join("node.js").into()])
                    }
                    _ => (revision.code_dir.join("bootstrap"), Vec::new()),
                };
                // A zygote child is handed a listener as fd 3; a Lambda client pulls its
                // calls instead, so it gets /dev/null there.
                let placeholder = match (spec.runtime, &ctx.zygote) {
                    (Runtime::LambdaPython, Some(_)) if poolable => Some(OwnedFd::from(
                        std::fs::File::open("/dev/null").map_err(Error::io("open", Path::new("/dev/null")))?,
                    )),
                    _ => None,
                };
                (program, args, placeholder, Ready::Bound(Target::Lambda(bridge)))
            }
            Runtime::Shell => return Err(fail("shell functions use the stdio protocol".into())),
        };
        let launch = Launch {
            program: program.clone(),
            args,
            env,
            cwd: revision.code_dir.clone(),
            listen_fd,
            stdin: false,
            sandbox: None,
            isolate: None,
            cpu_seconds: None,
        };
        // Only a process gust spawns itself gets a prepared sandbox and (at `isolated`) a
        // cgroup made here; a spare and a zygote child bring their own.
        let fresh = |launch: &mut Launch| -> Result<Option<crate::cgroups::Group>> {
            launch.sandbox = sandbox_for(ctx, revision, &dir, runtime_api)?;
            let (cgroup, isolate) = isolation_for(ctx, spec, &id)?;
            launch.isolate = isolate;
            Ok(cgroup)
        };
        let launched = match (spared, &ctx.zygote) {
            (Some(spared), _) => Ok(spared),
            (None, Some(zygote)) if forks => {
                let child_env = sandbox_env(ctx, revision, &dir, runtime_api);
                Self::fork_or_spawn(zygote, launch, child_env, fresh).await
            }
            _ => {
                let mut launch = launch;
                fresh(&mut launch).map_err(std::io::Error::other).and_then(|g| Launched::spawned(launch, g))
            }
        }
        .map_err(|e| fail(format!("cannot run `{}`: {e}", program.display())))?;
        let pid = launched.pid;
        // A zygote child made and joined a group of its own, named after its pid.
        let cgroup = match (&ctx.cgroups, forks && launched.pooled) {
            (Some(cgroups), true) => {
                Some(cgroups.adopt(&format!("spare-{pid}"), crate::cgroups::Limits::of(&spec.limits)))
            }
            _ => launched.cgroup,
        };
        let instance = Arc::new(Instance {
            id,
            revision: revision.clone(),
            dir,
            scratch,
            started: Instant::now(),
            process: Some(Process { pid }),
            target: OnceLock::new(),
            state: Mutex::new(State::default()),
            dead: dead_rx,
            answered: Default::default(),
            pooled: launched.pooled,
            _ticket: ticket,
            secrets,
            sandbox: None,
            isolate: None,
            cgroup,
            code_slot,
        });
        if let Some((bridge, listener)) = lambda_api {
            bridge.serve(listener, instance.dead.clone());
        }
        let reader = |stream: &'static str, s: Box<dyn AsyncRead + Send + Unpin>| {
            tokio::spawn(crate::capture::capture(
                ctx.logs.clone(),
                instance.clone(),
                stream,
                s,
                ctx.limits.log_line_max,
            ))
        };
        let readers = [launched.stdout.map(|s| reader("stdout", s)), launched.stderr.map(|s| reader("stderr", s))];
        let watched = instance.clone();
        let exited = launched.exited;
        tokio::spawn(async move {
            let mut how = exited.await;
            if let Some(group) = watched.cgroup.as_ref().filter(|g| g.oom_killed()) {
                how = out_of_memory(group, &how);
            }
            // Let the readers drain what the process wrote last (a traceback, usually),
            // but do not wait on grandchildren that keep the pipes open.
            for r in readers.into_iter().flatten() {
                let _ = tokio::time::timeout(Duration::from_millis(250), r).await;
            }
            watched.lock().exit = Some(how);
            let _ = dead_tx.send(true);
            // Whatever else is left in its group goes too.
            spawn::signal_group(pid, SIGKILL);
            let _ = std::fs::remove_dir_all(&watched.dir);
            if let Some(slot) = &watched.code_slot {
                let _ = std::fs::remove_dir_all(slot);
            }
            on_exit(watched);
        });
        let target = match ready {
            Ready::Bound(target) => target,
            Ready::Poll(port) => instance.wait_ready(port, &socket, deadline).await?,
        };
        let _ = instance.target.set(target);
        Ok(instance)
    }

    /// Takes a spare process of the runtime, if one is ready, and makes it this instance
    /// in `dir` (which must not exist yet); with it come its code slot and (at
    /// `isolated`) its cgroup, given the function's limits first. `None` when there is
    /// none or the hand-over failed; the instance then starts fresh.
    async fn from_spare(
        ctx: &Context,
        spares: &crate::spares::Spares,
        spec: &gust_api::FunctionSpec,
        dir: &Path,
        env: &[(String, OsString)],
        cwd: &Path,
        secrets: &crate::secrets::Secrets,
    ) -> Option<(Launched, Option<PathBuf>)> {
        let mut spare = spares.take()?;
        let mut group = spare.cgroup.take();
        let slot = spare.code_slot.clone();
        if let (Some(cgroups), Some(g)) = (&ctx.cgroups, group.as_mut())
            && let Err(e) = cgroups.set_limits(g, crate::cgroups::Limits::of(&spec.limits))
        {
            tracing::warn!(runtime = spares.runtime, error = %e, "could not limit a warm process; starting fresh");
            return None;
        }
        match spare.become_instance(dir, env, cwd, secrets).await {
            Ok(child) => Some((Launched { cgroup: group, ..Launched::from_child(child, true) }, slot)),
            Err(e) => {
                tracing::warn!(runtime = spares.runtime, error = %e, "warm process hand-over failed; starting fresh");
                if let Some(slot) = &slot {
                    let _ = std::fs::remove_dir_all(slot);
                }
                None
            }
        }
    }

    /// Forks the instance from the zygote; if that fails, starts it fresh (and says why).
    /// `child_env` goes to the zygote child only (it tells it the sandbox to enter); a
    /// fresh start instead gets the sandbox (and cgroup) `fallback` prepares.
    async fn fork_or_spawn(
        zygote: &crate::zygote::Zygote,
        mut launch: Launch,
        child_env: Vec<(String, OsString)>,
        fallback: impl FnOnce(&mut Launch) -> Result<Option<crate::cgroups::Group>>,
    ) -> std::io::Result<Launched> {
        let fresh = move |mut launch: Launch| {
            let cgroup = fallback(&mut launch).map_err(std::io::Error::other)?;
            Launched::spawned(launch, cgroup)
        };
        let Some(listener) = launch.listen_fd.as_ref().map(OwnedFd::try_clone).transpose()? else {
            return fresh(launch);
        };
        let mut env = launch.env.clone();
        env.extend(child_env);
        match zygote.fork(&env, &launch.cwd, listener).await {
            Ok(forked) => {
                launch.listen_fd = None;
                Ok(Launched::forked(forked))
            }
            Err(e) => {
                tracing::warn!(error = %e, "zygote fork failed; starting the instance fresh");
                fresh(launch)
            }
        }
    }

    /// Polls an executable's `PORT` (or `GUST_SOCKET`) until it accepts, it dies or the
    /// deadline passes. Built-in invokers need none of this: their socket is bound before
    /// they start, so the first request simply waits in the backlog.
    async fn wait_ready(
        self: &Arc<Self>,
        addr: Option<SocketAddr>,
        socket: &Path,
        deadline: tokio::time::Instant,
    ) -> Result<Target> {
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(addr) = addr
                && tokio::net::TcpStream::connect(addr).await.is_ok()
            {
                return Ok(Target::Tcp(addr));
            }
            if socket.exists() && tokio::net::UnixStream::connect(socket).await.is_ok() {
                return Ok(Target::Unix(socket.to_path_buf()));
            }
            if self.is_dead() {
                return Err(Error::StartFailed {
                    function: self.function().to_owned(),
                    detail: self.death_detail("exited before it was ready"),
                });
            }
            if tokio::time::Instant::now() + pause > deadline {
                self.kill();
                return Err(Error::StartFailed {
                    function: self.function().to_owned(),
                    detail: match addr {
                        Some(a) => format!("it did not listen on PORT {} or GUST_SOCKET in time", a.port()),
                        None => "it did not listen on GUST_SOCKET in time".to_owned(),
                    },
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// The start-up check a deploy makes before its revision takes traffic: that this
    /// instance can serve, without sending it a call. A built-in Python or Node invoker
    /// answers gust's probe request only once the handler has loaded (and exits with
    /// its traceback when it cannot load); a shell script must parse (`sh -n`). Java and
    /// executable servers were ready when their socket accepted. On failure, the answer
    /// says how the instance ended and its last output.
    pub(crate) async fn check_ready(
        &self,
        ctx: &Context,
        deadline: tokio::time::Instant,
    ) -> std::result::Result<(), String> {
        let spec = &self.revision.spec;
        match (spec.runtime, self.target()) {
            (Runtime::Python | Runtime::Node, Some(Target::Unix(socket))) => {
                match tokio::time::timeout_at(deadline, probe(socket)).await {
                    Ok(Ok(true)) => Ok(()),
                    Ok(_) => {
                        // It closed the probe's connection: it is exiting, traceback last.
                        self.wait_dead(Duration::from_secs(2)).await;
                        Err(self.death_detail("closed its socket before its handler loaded"))
                    }
                    Err(_) => {
                        self.kill();
                        Err(format!(
                            "instance {} did not load its handler within {} (limits.timeout)",
                            self.id,
                            humantime::format_duration(spec.limits.timeout)
                        ))
                    }
                }
            }
            (_, Some(Target::Lambda(bridge))) => crate::lambda::check_ready(self, bridge, deadline).await,
            (Runtime::Shell, _) => check_shell_syntax(ctx, &self.revision, &self.scratch, deadline).await,
            _ => Ok(()),
        }
    }

    /// Where an `http` instance serves (`None` for `stdio`).
    pub fn target(&self) -> Option<&Target> {
        self.target.get()
    }

    /// The function's name.
    pub fn function(&self) -> &str {
        self.revision.spec.name.as_str()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data only; a panic elsewhere cannot leave it half-updated in a harmful way.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a response begun by this instance.
    pub fn answered(&self) {
        self.answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether it has ever begun a response.
    pub fn has_answered(&self) -> bool {
        self.answered.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// Whether its cgroup (at `isolated`) has had a process killed for memory: the
    /// instance is dead or dying.
    pub fn oom_killed(&self) -> bool {
        self.cgroup.as_ref().is_some_and(crate::cgroups::Group::oom_killed)
    }

    /// Whether the process has exited (always `false` for `stdio` instances).
    pub fn is_dead(&self) -> bool {
        *self.dead.borrow()
    }

    /// Waits up to `limit` for the process to be reported dead; true if it is.
    pub async fn wait_dead(&self, limit: Duration) -> bool {
        let mut rx = self.dead.clone();
        tokio::time::timeout(limit, rx.wait_for(|d| *d)).await.is_ok_and(|r| r.is_ok())
    }

    /// "`how it ended`; last output: …" for error messages.
    pub fn death_detail(&self, fallback: &str) -> String {
        let st = self.lock();
        let how = st.exit.clone().unwrap_or_else(|| fallback.to_owned());
        if st.last_output.is_empty() {
            format!("instance {} {how}", self.id)
        } else {
            let out: Vec<&str> = st.last_output.iter().map(String::as_str).collect();
            format!("instance {} {how}; last output: {}", self.id, out.join(" | "))
        }
    }

    /// Takes an idle keep-alive connection, if one is still open.
    pub fn take_connection(&self) -> Option<SendRequest<Body>> {
        let mut st = self.lock();
        while let Some(c) = st.idle.pop() {
            if !c.is_closed() {
                return Some(c);
            }
        }
        None
    }

    /// Returns a connection after a complete exchange.
    pub fn put_connection(&self, conn: SendRequest<Body>) {
        if !conn.is_closed() && !self.is_dead() {
            self.lock().idle.push(conn);
        }
    }

    /// Marks `call` as in flight on this instance (for tagging output).
    pub fn begin_call(&self, call: &CallId) {
        self.lock().calls.push(call.clone());
    }

    /// Marks `call` as done.
    pub fn end_call(&self, call: &CallId) {
        let mut st = self.lock();
        // The slot's own clone of the id: a pointer comparison, whatever the calls in flight.
        if let Some(i) = st.calls.iter().position(|c| c.is(call)) {
            st.calls.swap_remove(i);
        }
    }

    pub(crate) fn current_call(&self) -> Option<String> {
        let st = self.lock();
        (st.calls.len() == 1).then(|| st.calls[0].to_string())
    }

    /// Asks the process to stop (SIGTERM), and kills its group after [`STOP_GRACE`].
    /// For a `stdio` instance, removes its scratch directory.
    pub fn stop(self: &Arc<Self>) {
        match &self.process {
            None => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            Some(p) if !self.is_dead() => {
                let pid = p.pid;
                spawn::signal_group(pid, SIGTERM);
                let me = self.clone();
                tokio::spawn(async move {
                    if !me.wait_dead(STOP_GRACE).await {
                        spawn::signal_group(pid, SIGKILL);
                    }
                });
            }
            Some(_) => {}
        }
    }

    /// Kills the process group at once: for stuck (timed-out) or broken instances.
    pub fn kill(&self) {
        if let Some(p) = &self.process {
            spawn::signal_group(p.pid, SIGKILL);
        }
    }

    /// Records a line of output: into the function's log and the crash-context ring.
    pub(crate) fn output(&self, logs: &Logs, stream: &str, line: String, call_id: Option<String>) {
        let line = self.secrets.mask(line);
        {
            let mut st = self.lock();
            if st.last_output.len() == LAST_OUTPUT {
                st.last_output.pop_front();
            }
            st.last_output.push_back(line.clone());
        }
        logs.append(LogLine {
            ts: now_rfc3339(),
            function: self.function().to_owned(),
            instance: self.id.clone(),
            stream: stream.to_owned(),
            call_id,
            line,
        });
    }
}

/// Sends the built-in invoker gust's probe request; `true` when it answered 204.
async fn probe(socket: &Path) -> std::io::Result<bool> {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
    stream
        .write_all(b"GET /.gust/ready HTTP/1.1\r\nHost: gust\r\nX-Gust-Probe: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await?;
    let mut head = Vec::with_capacity(64);
    while head.len() < 12 {
        let mut buf = [0u8; 64];
        match stream.read(&mut buf).await? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    Ok(head.starts_with(b"HTTP/1.1 204"))
}

/// Parses a shell function's script without running it (`sh -n`), so a syntax error
/// fails the deploy rather than every call.
async fn check_shell_syntax(
    ctx: &Context,
    revision: &Revision,
    scratch: &Path,
    deadline: tokio::time::Instant,
) -> std::result::Result<(), String> {
    let shell = ctx.interpreters.shell.path.clone().unwrap_or_else(|| "/bin/sh".into());
    let script = revision.code_dir.join(&revision.spec.handler);
    let launch = Launch {
        program: shell.clone(),
        args: vec!["-n".into(), script.into_os_string()],
        env: spawn::base_env(scratch, &interpreter_dirs(&ctx.interpreters)),
        cwd: revision.code_dir.clone(),
        listen_fd: None,
        stdin: false,
        sandbox: None,
        isolate: None,
        cpu_seconds: None,
    };
    let child = spawn::spawn(launch).map_err(|e| format!("cannot run `{}`: {e}", shell.display()))?;
    let pid = child.id().unwrap_or(0);
    match tokio::time::timeout_at(deadline, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = text.lines().rev().take(LAST_OUTPUT).collect();
            let lines: Vec<&str> = lines.into_iter().rev().collect();
            Err(format!("`{} -n` found a syntax error: {}", shell.display(), lines.join(" | ")))
        }
        Ok(Err(e)) => Err(format!("could not check the script's syntax: {e}")),
        Err(_) => {
            spawn::signal_group(pid, SIGKILL);
            Err("checking the script's syntax took longer than limits.timeout".to_owned())
        }
    }
}

/// The `GUST_*` variables and the manifest's `env`, shared by both protocols.
pub(crate) fn gust_env(revision: &Revision, instance: &str, pycache: &Path) -> Vec<(String, OsString)> {
    let spec = &revision.spec;
    let mut env: Vec<(String, OsString)> = vec![
        ("GUST_FUNCTION".into(), spec.name.as_str().into()),
        ("GUST_REVISION".into(), revision.id.to_string().into()),
        ("GUST_INSTANCE".into(), instance.into()),
        ("GUST_CODE".into(), revision.code_dir.clone().into()),
        ("GUST_HANDLER".into(), spec.handler.clone().into()),
        ("GUST_CONCURRENCY".into(), spec.scale.concurrency.to_string().into()),
        ("GUST_PYCACHE".into(), pycache.into()),
    ];
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.into())));
    env
}

/// The interpreters' directories, put first on instances' `PATH` so `python3` or `node`
/// inside a function is the same real executable gust found.
pub(crate) fn interpreter_dirs(i: &Interpreters) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for found in [&i.python, &i.node] {
        if let Some(dir) = found.path.as_deref().and_then(Path::parent)
            && !dirs.iter().any(|d| d == dir)
        {
            dirs.push(dir.to_path_buf());
        }
    }
    dirs
}

/// "exited with status 3" / "was killed by signal 9".
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    exit_text(status.code().map(i64::from), status.signal().map(i64::from))
}

/// How a process ended, from its exit code or the signal that killed it (as a zygote
/// reports it for the children gust cannot wait for itself).
pub(crate) fn exit_text(code: Option<i64>, signal: Option<i64>) -> String {
    match (code, signal) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "exited".to_owned(),
    }
}

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
