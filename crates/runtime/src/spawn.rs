//! Launching an instance's (or a build's) process: a fresh environment, its own process
//! group, rlimits, `no_new_privs`, a parent-death signal and, for built-in invokers, a
//! pre-bound listening socket as fd 3; at level `isolated` also its cgroup and its own
//! mount, PID, IPC, UTS (and, for `network = "none"`, network) namespaces.
//!
//! This is the only module that may use `unsafe`: `pre_exec` runs between fork and exec,
//! where only async-signal-safe calls are allowed. The closure below makes raw syscalls
//! on data prepared before the fork and allocates nothing.
#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The fd number a pre-bound listening socket is given in the child (systemd's
/// `SD_LISTEN_FDS_START`).
pub const LISTEN_FD: i32 = 3;

/// The open-file cap of every instance.
pub const MAX_OPEN_FILES: u64 = 4096;

/// `RLIMIT_NPROC` of every process gust starts: processes and threads of gust's user, all
/// together (the kernel counts per user, not per process tree, and ignores it for root),
/// so it is set high enough for a desktop user's other programs: a backstop against a
/// fork bomb taking the machine, not a per-instance limit (the cgroup is, at `isolated`).
pub const MAX_USER_PROCESSES: u64 = 16_384;

/// The rlimits of a process gust starts: no core dumps, [`MAX_OPEN_FILES`],
/// [`MAX_USER_PROCESSES`], and for a one-call process `cpu_seconds` of CPU time (SIGXCPU
/// at the soft limit, SIGKILL a second later): its call cannot use more CPU than its
/// deadline allows, even on several threads. Long-lived instances get no CPU-time limit,
/// which would count every call they ever served.
fn rlimits(cpu_seconds: Option<u64>) -> [(libc::__rlimit_resource_t, libc::rlimit); 4] {
    let both = |n: u64| libc::rlimit { rlim_cur: n, rlim_max: n };
    let cpu = match cpu_seconds {
        Some(s) => libc::rlimit { rlim_cur: s, rlim_max: s.saturating_add(1) },
        None => both(libc::RLIM_INFINITY),
    };
    [
        (libc::RLIMIT_CORE, both(0)),
        (libc::RLIMIT_NOFILE, both(MAX_OPEN_FILES)),
        (libc::RLIMIT_NPROC, both(MAX_USER_PROCESSES)),
        (libc::RLIMIT_CPU, cpu),
    ]
}

/// Everything needed to start one process.
#[derive(Debug)]
pub struct Launch {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// The whole environment; nothing of gust's own is inherited.
    pub env: Vec<(String, OsString)>,
    /// The working directory (the function's code).
    pub cwd: PathBuf,
    /// A listening socket to hand over as fd 3.
    pub listen_fd: Option<OwnedFd>,
    /// Whether stdin is a pipe (stdio protocol) or `/dev/null`.
    pub stdin: bool,
    /// The `basic` sandbox to enter just before exec, if any.
    pub sandbox: Option<std::sync::Arc<crate::sandbox::Sandbox>>,
    /// The namespaces and cgroup of level `isolated`, if any.
    pub isolate: Option<Isolate>,
    /// CPU seconds the process may use, for a one-call (`stdio`) process.
    pub cpu_seconds: Option<u64>,
}

/// What a process enters at level `isolated`, prepared before the fork.
#[derive(Debug, Clone)]
pub struct Isolate {
    /// The `cgroup.procs` files of the instance's groups, which the process joins first.
    pub cgroup_procs: Vec<CString>,
    /// Also a network namespace: nothing but a loopback interface that is down.
    pub no_network: bool,
    /// The host name in its UTS namespace.
    pub hostname: CString,
    /// Mount options of its private `/tmp` and `/dev/shm` (tmpfs).
    pub tmpfs: CString,
}

/// Starts the process with stdout and stderr piped.
///
/// # Errors
/// The `io::Error` of the fork or exec.
pub fn spawn(launch: Launch) -> std::io::Result<tokio::process::Child> {
    let mut cmd = command(&launch);
    let listen_raw = launch.listen_fd.as_ref().map(AsRawFd::as_raw_fd);
    // Prepared here, so the child only passes them to two syscalls.
    let sandbox = launch.sandbox.as_ref().map(|s| (s.ruleset_fd(), s.filter(), s.handled()));
    let isolate = launch.isolate.clone();
    let limits = rlimits(launch.cpu_seconds);
    // SAFETY: the closure runs in the child between fork and exec. It only makes raw
    // syscalls (dup2, fcntl, setrlimit, prctl, and in `enter` open, write, unshare, mount,
    // clone, waitpid) on integers and C strings captured by value; it does not allocate,
    // lock or touch Rust state shared with other threads.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = listen_raw {
                if fd != LISTEN_FD && libc::dup2(fd, LISTEN_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // dup2 clears close-on-exec on the new fd, but not when fd was already 3.
                let flags = libc::fcntl(LISTEN_FD, libc::F_GETFD);
                if flags < 0 || libc::fcntl(LISTEN_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (resource, limit) in &limits {
                libc::setrlimit(*resource, limit);
            }
            // Best effort: fires when the thread that forked exits, and tokio's worker
            // threads live as long as the server.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            // Nothing it runs can gain privileges through setuid binaries or file caps.
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(iso) = &isolate {
                enter(iso)?;
            }
            // Last: the filter also governs whatever the hook would do after it.
            if let Some((fd, filter, handled)) = &sandbox {
                if isolate.is_some() {
                    // The namespace's own /proc, /tmp and /dev/shm are new file systems,
                    // which no rule made before the fork can name.
                    crate::sandbox::add_rules_here(*fd, *handled, &OWN_MOUNTS)?;
                }
                crate::sandbox::apply(*fd, filter)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(launch.sandbox);
    // The parent's copy of the listener must close now: if the child dies, connections
    // waiting in the backlog are then reset instead of hanging.
    drop(launch.listen_fd);
    child
}

impl Isolate {
    /// The namespaces it unshares.
    pub fn unshare_flags(&self) -> libc::c_int {
        let flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        if self.no_network { flags | libc::CLONE_NEWNET } else { flags }
    }
}

/// The file systems [`enter`] mounts, and whether the instance may write to them.
const OWN_MOUNTS: [(&std::ffi::CStr, bool); 3] = [(c"/proc", false), (c"/tmp", true), (c"/dev/shm", true)];

/// Level `isolated`, in the child between fork and exec: joins the instance's cgroups,
/// unshares the namespaces, makes `/tmp` and `/dev/shm` private, and forks twice, so that
/// the process that goes on to exec is PID 2 of its own PID namespace (an unshared PID
/// namespace holds only the children of the caller):
///
/// - the process gust started stays outside, waits for the namespace's init and exits as
///   it did (re-raising the signal that killed it); it ignores SIGTERM, which reaches the
///   function through the process group, so a polite stop stays polite;
/// - the init (PID 1) mounts the namespace's own `/proc`, reaps orphans, and exits as the
///   function did; when it exits, the kernel kills whatever is left in the namespace;
/// - the function, PID 2, returns to exec.
///
/// The two waiting processes hold none of gust's descriptors (`close_range`), so pipes
/// and the listener close when the function ends, and die with their parent.
///
/// # Safety
/// Only in a freshly forked child: it forks with the raw syscall (no `atfork` handlers,
/// which could take locks other threads of gust held at the fork) and never returns in
/// the two waiting processes.
unsafe fn enter(iso: &Isolate) -> std::io::Result<()> {
    let err = std::io::Error::last_os_error;
    // SAFETY (caller): a forked child; every call below reads only memory `iso` owns.
    unsafe {
        for path in &iso.cgroup_procs {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(err());
            }
            // "0" is the writing process itself, on v1 and v2.
            let written = libc::write(fd, c"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(err());
            }
        }
        if libc::unshare(iso.unshare_flags()) != 0 {
            return Err(err());
        }
        // Nothing mounted here propagates back to the host.
        let none = std::ptr::null();
        if libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, none.cast()) != 0 {
            return Err(err());
        }
        for target in [c"/tmp", c"/dev/shm"] {
            let fs = c"tmpfs".as_ptr();
            if libc::mount(fs, target.as_ptr(), fs, libc::MS_NOSUID | libc::MS_NODEV, iso.tmpfs.as_ptr().cast()) != 0 {
                return Err(err());
            }
        }
        libc::sethostname(iso.hostname.as_ptr(), iso.hostname.as_bytes().len());
        // Here, outside: wait for the init. In the init (PID 1): its own /proc.
        fork_leaving_waiter(true)?;
        let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if libc::mount(c"proc".as_ptr(), c"/proc".as_ptr(), c"proc".as_ptr(), proc_flags, none.cast()) != 0 {
            return Err(err());
        }
        // The init waits for the function, which goes on.
        fork_leaving_waiter(false)?;
    }
    Ok(())
}

/// Forks; the parent becomes a waiting process ([`wait_then_exit`]) and never returns,
/// the child (gone with it) goes on.
///
/// # Safety
/// As [`enter`].
unsafe fn fork_leaving_waiter(outside: bool) -> std::io::Result<()> {
    // SAFETY (caller): raw clone, prctl and, in the parent, wait_then_exit.
    unsafe {
        let child = fork_raw();
        if child < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if child > 0 {
            wait_then_exit(child, outside);
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
    }
    Ok(())
}

/// fork(2) without the C library's `atfork` handlers.
///
/// # Safety
/// As fork: the child must only make async-signal-safe calls.
unsafe fn fork_raw() -> libc::pid_t {
    // SAFETY: clone with only SIGCHLD and no new stack is fork.
    let r = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) };
    libc::pid_t::try_from(r).unwrap_or(-1)
}

/// One of the two waiting processes of [`enter`]: closes every descriptor, waits for
/// `child` (the init also reaps whatever else ends up its child), and exits as it did.
///
/// # Safety
/// Only in a process forked by [`enter`].
unsafe fn wait_then_exit(child: libc::pid_t, outside: bool) -> ! {
    // SAFETY (caller): raw syscalls on integers and a status word on the stack.
    unsafe {
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        if outside {
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_IGN);
            }
        }
        let mut status = 0;
        loop {
            let r = libc::waitpid(if outside { child } else { -1 }, &mut status, 0);
            if r == child {
                break;
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                libc::_exit(127);
            }
        }
        // The init cannot be killed by a signal from inside its namespace, so it reports
        // a signal as 128 + its number, which the outside process turns back into one.
        let signal = if libc::WIFSIGNALED(status) {
            Some(libc::WTERMSIG(status))
        } else {
            let code = libc::WEXITSTATUS(status);
            if !outside || !(129..160).contains(&code) {
                libc::_exit(code);
            }
            Some(code - 128)
        };
        if let Some(sig) = signal {
            if outside {
                libc::signal(sig, libc::SIG_DFL);
                libc::kill(libc::getpid(), sig);
            }
            libc::_exit(128 + sig);
        }
        libc::_exit(127)
    }
}

/// Starts the short-lived process of one `stdio` call. Unlike [`spawn`] it sets no
/// `pre_exec` hook, so the standard library starts it with `posix_spawn` (a vfork-style
/// clone that copies none of the server's page tables and triggers no copy-on-write in
/// its other threads): about half a millisecond less per call than a fork of gust.
/// What the hook does is done otherwise:
/// - `no_new_privs` is set on the spawning thread, which the child inherits;
/// - the rlimits are applied with `prlimit(2)` right after the spawn returns, so the
///   program's first microseconds run under gust's own limits;
/// - there is no parent-death signal: the process lives at most until the call's
///   deadline, and should gust die first its pipes close, so its next write ends it.
///
/// Long-lived instances keep [`spawn`], for the listener on fd 3 and the death signal.
///
/// # Errors
/// The `io::Error` of the spawn, or of setting `no_new_privs`.
pub fn spawn_call(launch: Launch) -> std::io::Result<tokio::process::Child> {
    // SAFETY: prctl(2) on the calling thread with integer arguments; it touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let child = command(&launch).spawn()?;
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        for (resource, limit) in rlimits(launch.cpu_seconds) {
            // SAFETY: prlimit(2) reads `limit`, a valid rlimit on the stack, and writes
            // nothing (the old-limit pointer is null). A child that already exited makes
            // it fail with ESRCH, which is harmless.
            unsafe {
                libc::prlimit(pid, resource, &limit, std::ptr::null_mut());
            }
        }
    }
    Ok(child)
}

/// The command both ways of starting share: the program in its own process group, with
/// gust's environment only, in its directory, its output piped.
fn command(launch: &Launch) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&launch.program);
    cmd.args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(if launch.stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    cmd
}

/// Sends `signal` to the whole process group led by `pid`.
pub fn signal_group(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid > 0 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// Sends `signal` to one process.
pub fn signal_process(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid > 0 {
        // SAFETY: kill(2) on one process id; no memory is involved.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// `SIGTERM`, for a polite stop.
pub const SIGTERM: i32 = libc::SIGTERM;
/// `SIGKILL`, for a stuck or late instance.
pub const SIGKILL: i32 = libc::SIGKILL;

/// The environment every instance starts from: a fixed `PATH` (with the interpreters'
/// directories first), its scratch directory as `HOME` and `TMPDIR`, and a UTF-8 locale.
pub fn base_env(scratch: &Path, extra_path: &[PathBuf]) -> Vec<(String, OsString)> {
    let mut path = OsString::new();
    for dir in extra_path {
        path.push(dir.as_os_str());
        path.push(":");
    }
    path.push("/usr/local/bin:/usr/bin:/bin");
    vec![
        ("PATH".to_owned(), path),
        ("HOME".to_owned(), scratch.as_os_str().to_owned()),
        ("TMPDIR".to_owned(), scratch.as_os_str().to_owned()),
        ("GUST_SCRATCH".to_owned(), scratch.as_os_str().to_owned()),
        ("LANG".to_owned(), "C.UTF-8".into()),
    ]
}

/// Sends `data` over a Unix stream socket with `fds` attached (`SCM_RIGHTS`): the kernel
/// gives the receiver its own copies of the descriptors. Used to hand a zygote the
/// listener and pipes of the instance it is to fork.
///
/// # Errors
/// The `io::Error` of `sendmsg` or of writing the rest of `data`.
pub fn send_with_fds(
    sock: &std::os::unix::net::UnixStream,
    data: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> std::io::Result<()> {
    use std::io::Write as _;
    let raw: Vec<libc::c_int> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let payload = std::mem::size_of_val(raw.as_slice());
    let payload_u32 = u32::try_from(payload).map_err(|_| std::io::Error::other("too many descriptors"))?;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload_u32) } as usize;
    // u64 elements keep the control buffer aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` zeroed, aligned bytes, which CMSG_SPACE sized
    // for one header and `payload` bytes of data; CMSG_FIRSTHDR therefore returns a
    // non-null pointer inside it, and CMSG_DATA leaves room for `payload` bytes. `iov`
    // and `control` outlive the sendmsg call; `data` is only read.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(std::io::Error::other("no room for the control message"));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(payload_u32) as _;
        std::ptr::copy_nonoverlapping(raw.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), payload);
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    let sent = usize::try_from(sent).map_err(|_| std::io::Error::last_os_error())?;
    // The descriptors travelled with the first byte; whatever did not fit follows.
    (&*sock).write_all(&data[sent..])
}
