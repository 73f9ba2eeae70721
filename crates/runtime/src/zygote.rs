//! The Python zygote: one interpreter that has loaded the invoker and its imports, and
//! forks a child per cold start that becomes the instance (as in SOCK, Oakes et al.,
//! ATC 2018). A fork costs about a millisecond where a fresh interpreter costs ten.
//!
//! The zygote is started by gust like any instance (own process group, rlimits,
//! `no_new_privs`, parent-death signal, an environment gust builds). Requests go to it
//! on a Unix socket as its fd 3: a JSON line with the instance's environment and working
//! directory, with the instance's pre-bound listener and the write ends of its stdout and
//! stderr pipes attached (`SCM_RIGHTS`). Its stdout carries JSON lines back: the pid of
//! each child, and how each child ended (gust is not the children's parent, so it cannot
//! wait for them itself). A child puts itself in its own process group, dies with the
//! zygote (`PR_SET_PDEATHSIG`), and inherits the zygote's limits; per-instance isolation
//! applied after the fork slots in at that point of `_become` in the invoker.
//!
//! gust keeps a few children forked ahead of need ("spares"): for each it makes a socket
//! pair and sends the zygote one end (`{"spare": true}`); the child forked for it walks a
//! cold start's paths once (the rehearsal) and waits on that end. A cold start sends the
//! instance's request straight to the oldest spare, so it costs neither the fork, nor the
//! copy-on-write faults of a child's first steps, nor a hop through the zygote; a
//! replacement is asked for once no cold start has followed for 50 ms (`QUIET`). With no
//! spare left (a burst), the zygote forks a child for the request itself. The zygote's
//! objects are frozen out of the collector (`gc.freeze`) so no child's collection copies
//! them.
//!
//! If the zygote dies, its children die with it, are reported gone, and the next cold
//! start brings up a new zygote.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::{Notify, oneshot};

use crate::instance::{PYTHON_FLAGS, exit_text};
use crate::spawn::{self, Launch, SIGKILL};

/// How long a zygote may take to start, or to answer one fork.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// How long no cold start must have been asked for before replacement spares are: a fork
/// and the new child's rehearsal would compete for the CPU with the cold starts of a burst.
const QUIET: Duration = Duration::from_millis(50);

/// A forked instance process.
#[derive(Debug)]
pub struct Forked {
    /// Its pid, which is also its process group.
    pub pid: u32,
    /// The read end of its stdout.
    pub stdout: pipe::Receiver,
    /// The read end of its stderr.
    pub stderr: pipe::Receiver,
    /// Resolves with how it ended ("exited with status 3").
    pub exited: oneshot::Receiver<String>,
}

/// Starts Python instances by forking them from a pre-loaded interpreter.
#[derive(Debug)]
pub struct Zygote {
    python: PathBuf,
    invoker: PathBuf,
    dir: PathBuf,
    env: Vec<(String, OsString)>,
    /// Spares to keep.
    waiting: usize,
    live: tokio::sync::Mutex<Option<Live>>,
    /// Under `basic`, the zygote's own (broad) sandbox: every child inherits its seccomp
    /// filter, and adds a Landlock layer of its own function before loading it.
    sandbox: Option<Arc<crate::sandbox::Sandbox>>,
}

#[derive(Debug)]
struct Live {
    pid: u32,
    shared: Arc<Mutex<Shared>>,
    /// Woken when a spare is taken or dies, and when the zygote is gone.
    refill: Arc<Notify>,
}

/// A child forked ahead of need, waiting on its socket for an instance's request.
#[derive(Debug)]
struct Spare {
    pid: u32,
    sock: UnixStream,
}

/// A request the zygote has yet to answer.
#[derive(Debug)]
enum Asked {
    /// A child for an instance now; its pid goes to the caller.
    Fork(oneshot::Sender<Result<u32, String>>),
    /// A spare, to wait on this end of its socket pair.
    Spare(UnixStream),
}

/// What the reader of the zygote's replies shares with the forking side.
#[derive(Debug)]
struct Shared {
    /// The zygote's end of requests. Sending and queueing in `asked` happen under this
    /// one lock, so replies (which come in request order) match their requests.
    ctl: UnixStream,
    dead: bool,
    /// Requests waiting for their reply, in the order they were sent.
    asked: VecDeque<Asked>,
    /// Spares ready, the longest waiting (so the longest rehearsed) first.
    spares: VecDeque<Spare>,
    /// When the last cold start was asked for.
    cold_at: Instant,
    /// Children whose end someone waits for.
    exits: HashMap<u32, oneshot::Sender<String>>,
    /// Ends reported before anyone waited for them (a child that died at once).
    early: HashMap<u32, String>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // Plain maps; every update leaves them consistent.
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Sends one request with `fds`, queued for its reply as `asked`.
    fn ask(&mut self, request: &[u8], fds: &[std::os::fd::BorrowedFd<'_>], asked: Asked) -> std::io::Result<()> {
        spawn::send_with_fds(&self.ctl, request, fds)?;
        self.asked.push_back(asked);
        Ok(())
    }

    /// How `pid` (a child just handed its instance) ends: from now on, or already.
    fn watch_exit(&mut self, pid: u32) -> oneshot::Receiver<String> {
        let (tx, rx) = oneshot::channel();
        match self.early.remove(&pid) {
            Some(how) => {
                let _ = tx.send(how);
            }
            None => {
                self.exits.insert(pid, tx);
            }
        }
        rx
    }

    /// Spares ready plus those asked for.
    fn spares_coming(&self) -> usize {
        self.spares.len() + self.asked.iter().filter(|a| matches!(a, Asked::Spare(_))).count()
    }

    /// Asks for spares until `waiting` are ready or coming.
    fn ask_spares(&mut self, waiting: usize) {
        while !self.dead && self.spares_coming() < waiting {
            let pair = UnixStream::pair();
            let sent =
                pair.and_then(|(ours, theirs)| self.ask(b"{\"spare\": true}\n", &[theirs.as_fd()], Asked::Spare(ours)));
            if let Err(e) = sent {
                tracing::warn!(error = %e, "could not ask the Python zygote for a spare");
                return;
            }
        }
    }
}

impl Zygote {
    /// A zygote that will run `invoker --zygote` with `python` in `dir`, with `env` (the
    /// base environment; each child gets its own in full), with `waiting` spares.
    pub fn new(
        python: PathBuf,
        invoker: PathBuf,
        dir: PathBuf,
        env: Vec<(String, OsString)>,
        waiting: usize,
        sandbox: Option<Arc<crate::sandbox::Sandbox>>,
    ) -> Self {
        Self { python, invoker, dir, env, waiting, live: tokio::sync::Mutex::new(None), sandbox }
    }

    /// How many children it keeps forked and waiting.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Starts the zygote unless it is running, so the first cold start finds it ready.
    ///
    /// # Errors
    /// Why it could not start.
    pub async fn warm_up(&self) -> Result<(), String> {
        let mut live = self.live.lock().await;
        self.ensure(&mut live).await.map(|_| ())
    }

    async fn ensure<'a>(&self, live: &'a mut Option<Live>) -> Result<&'a Live, String> {
        if live.as_ref().is_none_or(|l| lock(&l.shared).dead) {
            *live = Some(self.start().await?);
        }
        live.as_ref().ok_or_else(|| "the zygote is not running".to_owned())
    }

    async fn start(&self) -> Result<Live, String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("create {}: {e}", self.dir.display()))?;
        let (ctl, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let mut child = spawn::spawn(Launch {
            program: self.python.clone(),
            args: PYTHON_FLAGS
                .map(OsString::from)
                .into_iter()
                .chain([self.invoker.clone().into(), "--zygote".into()])
                .collect(),
            env: self.env.clone(),
            cwd: self.dir.clone(),
            listen_fd: Some(OwnedFd::from(theirs)),
            stdin: false,
            sandbox: self.sandbox.clone(),
            isolate: None,
            cpu_seconds: None,
        })
        .map_err(|e| format!("cannot run {}: {e}", self.python.display()))?;
        let pid = child.id().unwrap_or(0);
        let shared = Arc::new(Mutex::new(Shared {
            ctl,
            dead: false,
            asked: VecDeque::new(),
            spares: VecDeque::new(),
            cold_at: Instant::now(),
            exits: HashMap::new(),
            early: HashMap::new(),
        }));
        let refill = Arc::new(Notify::new());
        let (ready_tx, ready_rx) = oneshot::channel();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(read_replies(out, shared.clone(), refill.clone(), ready_tx));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::warn!(zygote = pid, "{line}");
                }
            });
        }
        tokio::spawn(async move {
            let status = child.wait().await;
            tracing::debug!(zygote = pid, ?status, "python zygote exited");
        });
        match tokio::time::timeout(ANSWER_WITHIN, ready_rx).await {
            Ok(Ok(())) => {
                tracing::debug!(zygote = pid, "python zygote ready");
                lock(&shared).ask_spares(self.waiting);
                tokio::spawn(keep_spares(shared.clone(), refill.clone(), self.waiting));
                Ok(Live { pid, shared, refill })
            }
            _ => {
                spawn::signal_group(pid, SIGKILL);
                Err("the Python zygote did not start".to_owned())
            }
        }
    }

    /// Forks an instance with `env` (its whole environment) in `cwd`, serving on
    /// `listener`.
    ///
    /// # Errors
    /// Why the fork failed; the caller then starts the instance fresh.
    pub async fn fork(&self, env: &[(String, OsString)], cwd: &Path, listener: OwnedFd) -> Result<Forked, String> {
        let (out_w, stdout) = pipe::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (err_w, stderr) = pipe::pipe().map_err(|e| format!("pipe: {e}"))?;
        // The child writes with ordinary blocking writes.
        let out_w = out_w.into_blocking_fd().map_err(|e| format!("pipe: {e}"))?;
        let err_w = err_w.into_blocking_fd().map_err(|e| format!("pipe: {e}"))?;
        let env: serde_json::Map<String, serde_json::Value> =
            env.iter().map(|(k, v)| (k.clone(), v.to_string_lossy().into_owned().into())).collect();
        let mut request = serde_json::json!({ "env": env, "cwd": cwd.to_string_lossy() }).to_string();
        request.push('\n');

        // The lock covers starting the zygote and sending, not the wait for the pid: the
        // zygote answers requests in the order they came (so are they queued in `asked`),
        // and a burst of cold starts is then one stream of requests, not a queue of round
        // trips.
        let (rx, zygote_pid, shared) = {
            let mut live = self.live.lock().await;
            let zygote = self.ensure(&mut live).await?;
            let fds = [listener.as_fd(), out_w.as_fd(), err_w.as_fd()];
            let mut sh = lock(&zygote.shared);
            sh.cold_at = Instant::now();
            while let Some(spare) = sh.spares.pop_front() {
                zygote.refill.notify_one();
                let exited = sh.watch_exit(spare.pid);
                // A spare that died meanwhile has closed its end, and the send fails (its
                // exit, reported or not yet, goes to the receiver dropped here).
                if spawn::send_with_fds(&spare.sock, request.as_bytes(), &fds).is_ok() {
                    return Ok(Forked { pid: spare.pid, stdout, stderr, exited });
                }
            }
            let (tx, rx) = oneshot::channel();
            if let Err(e) = sh.ask(request.as_bytes(), &fds, Asked::Fork(tx)) {
                return Err(format!("could not reach the zygote: {e}"));
            }
            (rx, zygote.pid, zygote.shared.clone())
        };
        // Only the child may hold the write ends, so its pipes close when it ends.
        drop((listener, out_w, err_w));
        let pid = match tokio::time::timeout(ANSWER_WITHIN, rx).await {
            Ok(Ok(Ok(pid))) => pid,
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => return Err("the zygote went away".to_owned()),
            Err(_) => {
                spawn::signal_group(zygote_pid, SIGKILL);
                return Err("the zygote did not answer".to_owned());
            }
        };
        let exited = lock(&shared).watch_exit(pid);
        Ok(Forked { pid, stdout, stderr, exited })
    }

    /// Stops the zygote (its children go with it).
    pub fn stop(&self) {
        if let Ok(live) = self.live.try_lock()
            && let Some(l) = live.as_ref()
        {
            spawn::signal_group(l.pid, SIGKILL);
        }
    }
}

/// Keeps `waiting` spares: after one is taken (or dies), asks for replacements once no
/// cold start has been asked for in [`QUIET`]. Ends with the zygote.
async fn keep_spares(shared: Arc<Mutex<Shared>>, refill: Arc<Notify>, waiting: usize) {
    loop {
        refill.notified().await;
        loop {
            let since = lock(&shared).cold_at.elapsed();
            match QUIET.checked_sub(since) {
                Some(left) if !left.is_zero() => tokio::time::sleep(left).await,
                _ => break,
            }
        }
        let mut sh = lock(&shared);
        if sh.dead {
            return;
        }
        sh.ask_spares(waiting);
    }
}

/// Reads the zygote's JSON lines until it exits, then reports every child gone.
async fn read_replies(
    out: tokio::process::ChildStdout,
    shared: Arc<Mutex<Shared>>,
    refill: Arc<Notify>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            tracing::warn!("python zygote said: {line}");
            continue;
        };
        let mut sh = lock(&shared);
        if msg.get("ready").is_some() {
            if let Some(r) = ready.take() {
                let _ = r.send(());
            }
        } else if let Some(pid) = msg.get("pid").and_then(serde_json::Value::as_u64) {
            let pid = u32::try_from(pid).map_err(|_| "bad pid".to_owned());
            match (sh.asked.pop_front(), pid) {
                (Some(Asked::Fork(tx)), pid) => {
                    let _ = tx.send(pid);
                }
                (Some(Asked::Spare(sock)), Ok(pid)) => match sh.early.remove(&pid) {
                    // It died before its pid came: ask for another.
                    Some(_) => refill.notify_one(),
                    None => sh.spares.push_back(Spare { pid, sock }),
                },
                (Some(Asked::Spare(_)) | None, _) => {}
            }
        } else if let Some(error) = msg.get("error").and_then(serde_json::Value::as_str) {
            match sh.asked.pop_front() {
                Some(Asked::Fork(tx)) => {
                    let _ = tx.send(Err(format!("the zygote refused: {error}")));
                }
                Some(Asked::Spare(_)) => tracing::warn!("the Python zygote refused a spare: {error}"),
                None => {}
            }
        } else if let Some(pid) =
            msg.get("exit").and_then(serde_json::Value::as_u64).and_then(|p| u32::try_from(p).ok())
        {
            let how = exit_text(
                msg.get("code").and_then(serde_json::Value::as_i64),
                msg.get("signal").and_then(serde_json::Value::as_i64),
            );
            if let Some(tx) = sh.exits.remove(&pid) {
                let _ = tx.send(how);
            } else if let Some(i) = sh.spares.iter().position(|s| s.pid == pid) {
                sh.spares.remove(i);
                refill.notify_one();
            } else {
                // A child whose pid has not come yet, or one just handed its instance.
                sh.early.insert(pid, how);
            }
        }
    }
    let mut sh = lock(&shared);
    sh.dead = true;
    refill.notify_one();
    for asked in sh.asked.drain(..) {
        if let Asked::Fork(tx) = asked {
            let _ = tx.send(Err("the zygote exited".to_owned()));
        }
    }
    for spare in sh.spares.drain(..) {
        spawn::signal_group(spare.pid, SIGKILL);
    }
    for (pid, tx) in sh.exits.drain() {
        // They die with the zygote (parent-death signal); make sure of it.
        spawn::signal_group(pid, SIGKILL);
        let _ = tx.send("was killed because its Python zygote exited".to_owned());
    }
}
