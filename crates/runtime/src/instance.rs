//! One running copy of a revision.
//!
//! An `http` instance is a long-lived process serving HTTP/1.1 on a Unix socket (or a TCP
//! port for executables that want `PORT`). A `stdio` instance has no process of its own:
//! it is a private scratch directory plus a concurrency slot, and every call runs one
//! process inside it (the classic watchdog contract), so both kinds keep their scratch
//! files across warm calls and lose them when they go idle.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gust_api::CallId;
use gust_api::wire::LogLine;
use gust_store::Revision;
use hyper::client::conn::http1::SendRequest;
use tokio::sync::watch;

use crate::body::Body;
use crate::logs::{Logs, now_rfc3339};
use crate::spawn::{self, SIGKILL, SIGTERM};

mod check;
mod context;
mod start;

pub use context::{Context, Ticket, unpooled_reason};
pub(crate) use start::{gust_env, interpreter_dirs};

/// How every Python invoker process (instance or zygote) is run. -I: ignore PYTHON*
/// variables and the user site; -S: skip site's .pth hooks (the invoker adds
/// site-packages itself); -u: unbuffered output.
pub(crate) const PYTHON_FLAGS: [&str; 3] = ["-I", "-S", "-u"];

/// Lines of an instance's latest output kept to explain a crash.
const LAST_OUTPUT: usize = 12;
/// How long a stopped instance gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

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
