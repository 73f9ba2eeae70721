//! What isolation instances get, and what the host would allow.
//!
//! Every instance runs in its own process group with its own environment (built by gust,
//! not inherited), its own scratch directory and resource limits (no core dumps, a cap on
//! open files, killed with gust). Landlock, seccomp, namespaces and cgroups are detected
//! here and reported, so an operator can see what this host could enforce.

use std::path::Path;

use gust_api::wire::Isolation;

/// The mechanisms applied to every instance by this build.
pub const APPLIED: &[&str] = &[
    "process group (killed as a whole)",
    "environment built by gust",
    "private scratch directory",
    "rlimits (no core dumps, 4096 open files)",
    "killed with gust (parent-death signal)",
    "no_new_privs (no privilege gain through setuid or file capabilities)",
];

/// Probes the host. Cheap: reads a few files under `/proc` and `/sys`.
pub fn detect() -> Isolation {
    let mut allows = Vec::new();
    if let Ok(lsm) = std::fs::read_to_string("/sys/kernel/security/lsm")
        && lsm.split(',').any(|m| m.trim() == "landlock")
    {
        allows.push("landlock".to_owned());
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
    Isolation {
        level: "process".to_owned(),
        applied: APPLIED.iter().map(|s| (*s).to_owned()).collect(),
        host_allows: allows,
    }
}
