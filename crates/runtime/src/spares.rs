//! Generic warm processes for runtimes without a zygote (Node.js): interpreters started
//! ahead of need, each with a listening socket already bound as its fd 3, blocked on
//! reading one specialisation message from stdin. A cold start takes one, moves its
//! directory to the new instance's name, and writes it the instance's environment and
//! working directory; the process applies them and loads the function's code. What the
//! cold start saves is the interpreter's own start-up (node: ~30 ms here).
//!
//! A spare is started exactly like a fresh instance (`spawn::spawn`: own process group,
//! rlimits, `no_new_privs`, parent-death signal, an environment gust builds) and serves
//! one function for its whole life: it is never handed back. Taken spares are replaced
//! in the background, so taking one never waits for a start.
//!
//! Under isolation `basic` and `isolated` a spare starts inside its sandbox, which it
//! cannot narrow later: it may read the system, the interpreters, gust's invokers and an
//! empty *code slot* beside its directory (`<dir>.code`, read-only), and write only its
//! directory. When it becomes an instance, gust fills the slot with hard links to the
//! revision's code (a copy where links cannot be made) and the function loads from
//! there; so no spare ever sees another function's code, and its own stays read-only.
//! At `isolated` it also starts in its namespaces and a spare cgroup, whose limits are
//! set to the function's when it is taken.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, ChildStdin};
use tokio::sync::Notify;

use crate::spawn::{self, Launch, SIGKILL};

/// A started, not yet specialised runtime process.
#[derive(Debug)]
pub struct Spare {
    /// The process; its stdout and stderr are still piped to gust, unread until taken.
    /// `None` once it has become an instance.
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    /// Its directory: `sock` (bound) and `scratch`. Renamed to the instance's on take.
    dir: PathBuf,
    /// Under a sandbox: the read-only directory its function's code is linked into.
    pub code_slot: Option<PathBuf>,
    /// At `isolated`: its cgroup, given the function's limits when taken.
    pub cgroup: Option<crate::cgroups::Group>,
}

impl Spare {
    fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Makes the spare an instance: moves its directory (socket and scratch) to `dir`,
    /// which must not exist, and writes it the instance's whole environment and working
    /// directory; it then loads the function. stdin is closed after the message, as a
    /// fresh instance's is `/dev/null`.
    ///
    /// # Errors
    /// When the directory cannot be moved or the process is gone; the spare is then
    /// killed and its directory (wherever it is) removed.
    pub async fn become_instance(
        mut self,
        dir: &Path,
        env: &[(String, OsString)],
        cwd: &Path,
        secrets: &crate::secrets::Secrets,
    ) -> std::io::Result<Child> {
        std::fs::rename(&self.dir, dir)?;
        self.dir = dir.to_path_buf();
        // Before the process learns who it is, so its code finds them at once.
        secrets.write_files(&dir.join("scratch")).map_err(std::io::Error::other)?;
        let mut env: serde_json::Map<String, serde_json::Value> =
            env.iter().map(|(k, v)| (k.clone(), v.to_string_lossy().into_owned().into())).collect();
        let mut cwd = cwd.to_path_buf();
        if let Some(slot) = self.code_slot.clone() {
            let (code, into) = (cwd.clone(), slot.clone());
            tokio::task::spawn_blocking(move || link_tree(&code, &into)).await.map_err(std::io::Error::other)??;
            env.insert("GUST_CODE".into(), slot.to_string_lossy().into_owned().into());
            cwd = slot;
        }
        let mut msg = serde_json::json!({ "env": env, "cwd": cwd.to_string_lossy() }).to_string();
        msg.push('\n');
        let mut stdin = self.stdin.take().ok_or_else(|| std::io::Error::other("already specialised"))?;
        stdin.write_all(msg.as_bytes()).await?;
        stdin.shutdown().await?;
        self.child.take().ok_or_else(|| std::io::Error::other("already specialised"))
    }
}

/// Fills `slot` with `code`'s tree: directories made, files hard-linked (copied where a
/// link cannot be made, as across file systems), symbolic links recreated.
fn link_tree(code: &Path, slot: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(code)? {
        let entry = entry?;
        let (from, to) = (entry.path(), slot.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir(&to)?;
            link_tree(&from, &to)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

impl Drop for Spare {
    fn drop(&mut self) {
        // Still here: it never became an instance (shutdown, a failed hand-over).
        if let Some(child) = &self.child {
            if let Some(pid) = child.id() {
                spawn::signal_group(pid, SIGKILL);
            }
            let _ = std::fs::remove_dir_all(&self.dir);
            if let Some(slot) = &self.code_slot {
                let _ = std::fs::remove_dir_all(slot);
            }
        }
    }
}

/// What confines one spare.
#[derive(Debug, Default)]
pub struct Confinement {
    /// Its sandbox.
    pub sandbox: Option<Arc<crate::sandbox::Sandbox>>,
    /// At `isolated`: its namespaces.
    pub isolate: Option<spawn::Isolate>,
    /// At `isolated`: its spare cgroup.
    pub cgroup: Option<crate::cgroups::Group>,
}

/// How a spare is confined, given its directory and its code slot.
pub type Confine = Box<dyn Fn(&Path, &Path) -> std::io::Result<Confinement> + Send + Sync>;

/// A runtime's pool of spares.
pub struct Spares {
    /// The runtime's name, for messages.
    pub runtime: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    size: usize,
    run_dir: PathBuf,
    extra_path: Vec<PathBuf>,
    /// Oldest first: the longest-waiting spare has surely finished warming up.
    ready: Mutex<VecDeque<Spare>>,
    wanted: Notify,
    closed: AtomicBool,
    /// Under a sandbox: how each spare is confined.
    confine: Option<Confine>,
}

impl std::fmt::Debug for Spares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spares")
            .field("runtime", &self.runtime)
            .field("size", &self.size)
            .field("confined", &self.confine.is_some())
            .finish_non_exhaustive()
    }
}

impl Spares {
    /// A pool of `size` processes running `program args` (the caller adds the flag that
    /// makes its invoker wait for specialisation), their directories under `run_dir`.
    pub fn new(
        runtime: &'static str,
        program: PathBuf,
        args: Vec<OsString>,
        size: usize,
        run_dir: PathBuf,
        extra_path: Vec<PathBuf>,
        confine: Option<Confine>,
    ) -> Self {
        Self {
            runtime,
            program,
            args,
            size,
            run_dir,
            extra_path,
            ready: Mutex::new(VecDeque::new()),
            wanted: Notify::new(),
            closed: AtomicBool::new(false),
            confine,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Spare>> {
        // A list of processes; every update leaves it consistent.
        self.ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many processes it keeps waiting.
    pub fn size(&self) -> usize {
        self.size
    }

    /// A live spare, if one is ready; the pool refills in the background.
    pub fn take(&self) -> Option<Spare> {
        let mut ready = self.lock();
        let mut taken = None;
        while let Some(mut spare) = ready.pop_front() {
            // One that died while waiting (killed by hand, out of memory) is dropped.
            if spare.alive() {
                taken = Some(spare);
                break;
            }
        }
        drop(ready);
        self.wanted.notify_one();
        taken
    }

    /// Keeps the pool full until [`Spares::close`].
    pub async fn run(self: Arc<Self>) {
        while !self.closed.load(Ordering::Acquire) {
            while self.lock().len() < self.size && !self.closed.load(Ordering::Acquire) {
                match self.start() {
                    Ok(spare) => self.lock().push_back(spare),
                    Err(e) => {
                        tracing::warn!(runtime = self.runtime, error = %e, "could not start a warm process");
                        break;
                    }
                }
            }
            self.wanted.notified().await;
        }
        self.lock().clear();
    }

    /// Kills the spares and stops refilling.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.lock().clear();
        self.wanted.notify_one();
    }

    fn start(&self) -> std::io::Result<Spare> {
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let dir = self.run_dir.join(format!("spare-{}-{}", self.runtime, &suffix[suffix.len() - 12..]));
        let scratch = dir.join("scratch");
        std::fs::create_dir_all(&scratch)?;
        let socket = dir.join("sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket)?;
        let mut env = spawn::base_env(&scratch, &self.extra_path);
        // Where it calls itself once to warm up.
        env.push(("GUST_SOCKET".to_owned(), socket.into()));
        let code_slot = self.confine.as_ref().map(|_| dir.with_extension("code"));
        let confined = match (&self.confine, &code_slot) {
            (Some(confine), Some(slot)) => std::fs::create_dir(slot).and_then(|()| confine(&dir, slot)),
            _ => Ok(Confinement::default()),
        };
        let launched = confined.and_then(|Confinement { sandbox, isolate, cgroup }| {
            let child = spawn::spawn(Launch {
                program: self.program.clone(),
                args: self.args.clone(),
                env,
                cwd: dir.clone(),
                listen_fd: Some(OwnedFd::from(listener)),
                stdin: true,
                sandbox,
                isolate,
                cpu_seconds: None,
            })?;
            Ok((child, cgroup))
        });
        let (mut child, cgroup) = match launched {
            Ok(started) => started,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                if let Some(slot) = &code_slot {
                    let _ = std::fs::remove_dir_all(slot);
                }
                return Err(e);
            }
        };
        let stdin = child.stdin.take();
        Ok(Spare { child: Some(child), stdin, dir, code_slot, cgroup })
    }
}
