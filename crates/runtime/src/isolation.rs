//! What isolation instances get, and what the host would allow.
//!
//! Every instance runs in its own process group with its own environment (built by gust,
//! not inherited), its own scratch directory and resource limits (no core dumps, a cap on
//! open files, killed with gust). Landlock, seccomp, namespaces and cgroups are detected
//! here and reported, so an operator can see what this host could enforce.

use std::path::Path;

use gust_api::wire::Isolation;

/// How instances are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// Process hygiene only (the mechanisms in [`APPLIED`]).
    #[default]
    None,
    /// Also a Landlock ruleset per instance (the system and its own code read-only, its
    /// own directory writable; no signals or abstract sockets beyond itself from ABI 6)
    /// and a seccomp filter against dangerous syscalls.
    Basic,
    /// `Basic`, and its own mount, PID, IPC and UTS namespaces (a network one for
    /// `network = "none"`), a private `/tmp` and `/dev/shm`, and a cgroup capping its
    /// memory, CPU and processes.
    Isolated,
}

impl Level {
    /// The name `--isolation` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Basic => "basic",
            Level::Isolated => "isolated",
        }
    }

    /// Whether instances get the Landlock ruleset and seccomp filter (`basic` and up).
    pub fn sandboxed(self) -> bool {
        self != Level::None
    }

    /// Whether instances get namespaces and a cgroup.
    pub fn isolated(self) -> bool {
        self == Level::Isolated
    }

    /// Parses `--isolation`, checking the host can give it.
    ///
    /// # Errors
    /// What is unknown or what the host lacks.
    pub fn parse(text: &str) -> Result<Self, String> {
        let level = match text {
            "none" => return Ok(Level::None),
            "basic" => Level::Basic,
            "isolated" => Level::Isolated,
            other => return Err(format!("unknown level `{other}`; expected none, basic or isolated")),
        };
        let mut missing = Vec::new();
        if crate::sandbox::landlock_abi().is_none() {
            missing.push("Landlock (Linux 5.13+, enabled in the kernel's LSM list)");
        }
        if !seccomp_available() {
            missing.push("seccomp");
        }
        if level == Level::Isolated {
            if effective_uid() != Some(0) {
                missing.push("root (gust unshares namespaces and writes cgroups itself)");
            }
            if !["pid", "mnt", "ipc", "uts", "net"].iter().all(|ns| Path::new("/proc/self/ns").join(ns).exists()) {
                missing.push("PID, mount, IPC, UTS and network namespaces");
            }
        }
        if missing.is_empty() {
            Ok(level)
        } else {
            Err(format!("`{text}` needs {}, which this host lacks", missing.join(" and ")))
        }
    }
}

/// The mechanisms applied to every instance by this build.
pub const APPLIED: &[&str] = &[
    "process group (killed as a whole)",
    "environment built by gust",
    "private scratch directory",
    "rlimits (no core dumps, 4096 open files, 16384 processes of gust's user, a one-call process's deadline in CPU seconds)",
    "killed with gust (parent-death signal)",
    "no_new_privs (no privilege gain through setuid or file capabilities)",
];

/// What `basic` adds to [`APPLIED`].
pub const BASIC: &[&str] = &[
    "landlock (system and own code read-only, own directory writable, no signals beyond itself)",
    "seccomp (ptrace, mount, kexec, bpf, keyctl, modules, namespaces, clock setting refused)",
];

/// Whether, at `isolated`, instances of `spec` get a network namespace of their own: for
/// `network = "none"` where gust reaches the function over a Unix socket or pipes. A
/// Lambda client (its Runtime API is on loopback TCP) and an `exec` HTTP server (it may
/// serve on `PORT`) keep the host's network, fenced by `basic`'s TCP rules instead.
pub fn own_network_namespace(spec: &gust_api::FunctionSpec) -> bool {
    spec.network == gust_api::Network::None
        && !spec.runtime.is_lambda()
        && (spec.runtime != gust_api::Runtime::Exec || spec.protocol == gust_api::Protocol::Stdio)
}

/// How instances of `spec` are confined at `level`, in words (for `gust describe`).
pub fn confinement(level: Level, spec: &gust_api::FunctionSpec) -> String {
    let no_net = spec.network == gust_api::Network::None;
    match level {
        Level::None => "none: own process group, environment and scratch directory, rlimits".to_owned(),
        Level::Basic => format!(
            "basic: Landlock (its code and the system read-only, its directory writable), seccomp{}",
            if no_net { "; network none: no TCP bind or connect" } else { "" }
        ),
        Level::Isolated => {
            let limits = crate::cgroups::Limits::of(&spec.limits);
            let net = match (no_net, own_network_namespace(spec)) {
                (false, _) => "the host's network",
                (true, true) => "a network namespace of its own (no network)",
                (true, false) => "no TCP bind or connect (Landlock; it keeps the host's network namespace)",
            };
            format!(
                "isolated: Landlock, seccomp, PID, mount, IPC and UTS namespaces, private /tmp; {net}; cgroup: \
                 memory {}, cpu {}m, processes {}",
                gust_api::quantity::format_bytes(limits.memory),
                limits.cpu_millis,
                spec.limits.processes.unwrap_or(crate::cgroups::DEFAULT_PROCESSES)
            )
        }
    }
}

/// The strongest level this host allows for a server whose data directory is `data`,
/// and, when that is not `isolated`, why not (for `gust up` to say).
pub fn strongest(data: &Path) -> (Level, Option<String>) {
    let why_not = match Level::parse("isolated") {
        Ok(_) if under_tmp(data) => format!(
            "not `isolated`: the data directory {} is under /tmp, which each instance would see as its own",
            data.display()
        ),
        Ok(_) if !cgroup_controllers() => "not `isolated`: no memory, cpu and pids cgroup controllers".to_owned(),
        Ok(level) => return (level, None),
        Err(e) => format!("not `isolated`: {e}"),
    };
    match Level::parse("basic") {
        Ok(level) => (level, Some(why_not)),
        Err(e) => (Level::None, Some(format!("{why_not}; not `basic`: {e}"))),
    }
}

fn under_tmp(data: &Path) -> bool {
    let real = data.canonicalize().ok().or_else(|| data.parent().and_then(|p| p.canonicalize().ok()));
    real.as_deref().unwrap_or(data).starts_with("/tmp")
}

/// Whether the memory, cpu and pids controllers are there (v2: enabled at the root; v1:
/// mounted where gust looks for them).
fn cgroup_controllers() -> bool {
    let root = Path::new("/sys/fs/cgroup");
    match std::fs::read_to_string(root.join("cgroup.controllers")) {
        Ok(list) => ["memory", "cpu", "pids"].iter().all(|c| list.split_whitespace().any(|l| l == *c)),
        Err(_) => ["memory", "cpu", "pids"].iter().all(|c| root.join(c).join("cgroup.procs").exists()),
    }
}

/// Whether the kernel has seccomp (`/proc/self/status` then has a `Seccomp:` line).
fn seccomp_available() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.contains("Seccomp:"))
}

/// The effective user id, from `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What `isolated` adds to [`BASIC`].
pub const ISOLATED: &[&str] = &[
    "namespaces (mount, PID, IPC, UTS; network for network = \"none\")",
    "private /tmp and /dev/shm",
    "cgroup (memory, CPU, processes)",
];

/// Probes the host and reports `level`. Cheap: one syscall and a few files under `/proc`
/// and `/sys`.
pub fn detect(level: Level) -> Isolation {
    let mut allows = Vec::new();
    if let Some(abi) = crate::sandbox::landlock_abi() {
        allows.push(format!("landlock (ABI {abi})"));
    }
    if seccomp_available() {
        allows.push("seccomp".to_owned());
    }
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    if userns {
        allows.push("user namespaces".to_owned());
    }
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        allows.push("cgroup v2".to_owned());
    } else {
        let v1: Vec<&str> =
            ["memory", "cpu", "pids"].into_iter().filter(|c| Path::new("/sys/fs/cgroup").join(c).is_dir()).collect();
        if !v1.is_empty() {
            allows.push(format!("cgroup v1 ({})", v1.join(", ")));
        }
    }
    let mut applied: Vec<String> = APPLIED.iter().map(|s| (*s).to_owned()).collect();
    if level.sandboxed() {
        applied.extend(BASIC.iter().map(|s| (*s).to_owned()));
    }
    if level.isolated() {
        applied.extend(ISOLATED.iter().map(|s| (*s).to_owned()));
    }
    Isolation { level: level.as_str().to_owned(), applied, host_allows: allows }
}
