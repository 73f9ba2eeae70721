//! Starting an instance: a zygote fork, a warm spare, or a fresh process, and waiting
//! until it can be reached.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gust_api::{Protocol, Runtime};
use gust_store::Revision;
use tokio::io::AsyncRead;
use tokio::sync::watch;

use super::{Context, Instance, PYTHON_FLAGS, Process, State, Target, Ticket, describe_exit, unpooled_reason};
use crate::confine::{isolation_for, out_of_memory, sandbox_env, sandbox_for};
use crate::interpreters::Interpreters;
use crate::spawn::{self, Launch, SIGKILL};
use crate::{Error, Result};

/// Resolves with how an instance's process ended ("exited with status 3").
type Exited = std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>;

/// A started instance process, however it was made.
struct Launched {
    pid: u32,
    stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// Resolves with how the process ended.
    exited: Exited,
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

/// How a new instance becomes reachable.
enum Ready {
    /// gust bound the listener and passed it in: requests wait in its backlog at once.
    Bound(Target),
    /// The process binds its own `GUST_SOCKET` (or the given `PORT`); poll until it does.
    Poll(Option<SocketAddr>),
}

/// What [`command`] decided: how to run an instance's process and reach it.
struct Command {
    program: PathBuf,
    args: Vec<OsString>,
    /// The listener gust bound for it, passed as fd 3.
    listen_fd: Option<OwnedFd>,
    ready: Ready,
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
        let lambda_bridge = lambda_api.as_ref().map(|(bridge, _)| bridge.clone());
        let Command { program, args, listen_fd, ready } =
            command(ctx, revision, &socket, &mut env, spared.is_some(), poolable, lambda_bridge).await?;
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
        watch_exit(ctx, &instance, launched.stdout, launched.stderr, launched.exited, dead_tx, on_exit);
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
}

/// Captures an instance's output and, once its process has ended and its output is
/// drained, marks it dead, kills what is left of its process group, removes its
/// directory and runs `on_exit`.
fn watch_exit(
    ctx: &Context,
    instance: &Arc<Instance>,
    stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    exited: Exited,
    dead_tx: watch::Sender<bool>,
    on_exit: Box<dyn FnOnce(Arc<Instance>) + Send>,
) {
    let pid = instance.process.as_ref().map_or(0, |p| p.pid);
    let reader = |stream: &'static str, s: Box<dyn AsyncRead + Send + Unpin>| {
        tokio::spawn(crate::capture::capture(ctx.logs.clone(), instance.clone(), stream, s, ctx.limits.log_line_max))
    };
    let readers = [stdout.map(|s| reader("stdout", s)), stderr.map(|s| reader("stderr", s))];
    let watched = instance.clone();
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
}

/// How to run an `http` instance's process: the program and arguments for its runtime,
/// the listener gust binds for it (none when a warm spare brought its own, or when the
/// process binds its socket itself), and how to know it is ready. An `exec` server's
/// `PORT` is added to `env`.
async fn command(
    ctx: &Context,
    revision: &Revision,
    socket: &Path,
    env: &mut Vec<(String, OsString)>,
    spared: bool,
    poolable: bool,
    lambda: Option<Arc<crate::lambda::Bridge>>,
) -> Result<Command> {
    let spec = &revision.spec;
    let fail = |detail: String| Error::StartFailed { function: spec.name.to_string(), detail };
    let (program, args, listen_fd, ready) = match spec.runtime {
        Runtime::Python | Runtime::Node => {
            let (interpreter, invoker) = match spec.runtime {
                Runtime::Python => (&ctx.interpreters.python, ctx.invokers_dir.join("python.py")),
                _ => (&ctx.interpreters.node, ctx.invokers_dir.join("node.js")),
            };
            let program = interpreter.require(spec.runtime)?;
            // A spare came with its listener, moved here with its directory.
            let listener = if spared {
                None
            } else {
                Some(
                    std::os::unix::net::UnixListener::bind(socket)
                        .map_err(Error::io("bind instance socket", socket))?,
                )
            };
            let mut args: Vec<OsString> = Vec::new();
            if spec.runtime == Runtime::Python {
                args.extend(PYTHON_FLAGS.map(OsString::from));
            }
            args.push(invoker.into());
            (program, args, listener.map(OwnedFd::from), Ready::Bound(Target::Unix(socket.to_path_buf())))
        }
        Runtime::Java => {
            let java = ctx.interpreters.java.require("java")?;
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
            let Some(bridge) = lambda else {
                return Err(fail("no Runtime API was bound".into()));
            };
            let (program, args) = match spec.runtime {
                Runtime::LambdaPython => {
                    let python = ctx.interpreters.python.require(spec.runtime)?;
                    let mut args: Vec<OsString> = PYTHON_FLAGS.map(OsString::from).to_vec();
                    // python.py runs its Lambda client (lambda.py) when the Runtime API is set.
                    args.push(ctx.invokers_dir.join("python.py").into());
                    (python, args)
                }
                Runtime::LambdaNode => {
                    let node = ctx.interpreters.node.require(spec.runtime)?;
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
    Ok(Command { program, args, listen_fd, ready })
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

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
