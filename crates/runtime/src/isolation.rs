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
}

impl Level {
    /// The name `--isolation` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Basic => "basic",
        }
    }

    /// Parses `--isolation`, checking the host can give it.
    ///
    /// # Errors
    /// What is unknown or what the host lacks.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "none" => Ok(Level::None),
            "basic" => {
                let mut missing = Vec::new();
                if crate::sandbox::landlock_abi().is_none() {
                    missing.push("Landlock (Linux 5.13+, enabled in the kernel's LSM list)");
                }
                if !std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.contains("Seccomp:")) {
                    missing.push("seccomp");
                }
                if missing.is_empty() {
                    Ok(Level::Basic)
                } else {
                    Err(format!("`basic` needs {}, which this host lacks", missing.join(" and ")))
                }
            }
            "isolated" => Err("`isolated` (namespaces and cgroups per instance) is not built yet; use `basic`".into()),
            other => Err(format!("unknown level `{other}`; expected none or basic")),
        }
    }
}

/// The mechanisms applied to every instance by this build.
pub const APPLIED: &[&str] = &[
    "process group (killed as a whole)",
    "environment built by gust",
    "private scratch directory",
    "rlimits (no core dumps, 4096 open files)",
    "killed with gust (parent-death signal)",
    "no_new_privs (no privilege gain through setuid or file capabilities)",
];

/// What `basic` adds to [`APPLIED`].
pub const BASIC: &[&str] = &[
    "landlock (system and own code read-only, own directory writable, no signals beyond itself)",
    "seccomp (ptrace, mount, kexec, bpf, keyctl, modules, namespaces, clock setting refused)",
];

/// Probes the host and reports `level`. Cheap: one syscall and a few files under `/proc`
/// and `/sys`.
pub fn detect(level: Level) -> Isolation {
    let mut allows = Vec::new();
    if let Some(abi) = crate::sandbox::landlock_abi() {
        allows.push(format!("landlock (ABI {abi})"));
    }
    if std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.contains("Seccomp:")) {
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
    if level == Level::Basic {
        applied.extend(BASIC.iter().map(|s| (*s).to_owned()));
    }
    Isolation { level: level.as_str().to_owned(), applied, host_allows: allows }
}
