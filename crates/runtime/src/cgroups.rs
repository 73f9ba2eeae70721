//! Control groups for level `isolated`: one per instance, below a parent gust creates at
//! start-up, capping the instance's memory, CPU and number of processes (threads count).
//!
//! Both layouts are handled and told apart at start-up:
//! - **v2** (`/sys/fs/cgroup/cgroup.controllers` exists): one tree. The parent is
//!   `<gust's own cgroup>/gust-<pid>`, with `memory`, `cpu` and `pids` enabled for its
//!   children. A cgroup with processes cannot hand controllers down (the "no internal
//!   processes" rule), so if gust's own cgroup refuses, gust first moves itself into a
//!   `gust-server` leaf beside it.
//! - **v1**: one tree per controller (`/sys/fs/cgroup/memory`, `…/cpu`, `…/pids`); the
//!   parent is `gust-<pid>` below gust's own cgroup in each.
//!
//! An instance's process joins its groups itself, between fork and exec, by writing `0`
//! to each `cgroup.procs` (see `spawn.rs`), so not one instruction of the function runs
//! outside its limits. The first move into a v1 hierarchy waits for an RCU grace period
//! of the kernel (5–20 ms on a small VM), so a Python zygote's waiting child moves into a
//! spare group of its own (`spare-<pid>`) while it waits, and only writes its function's
//! limits there when it becomes one. Parents left by a gust that died are removed at the
//! next start.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";
const V1_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
/// The CFS period quotas are expressed against (100 ms, the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// The limits of one instance's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory (and, on v1, memory plus swap).
    pub memory: u64,
    /// Thousandths of a CPU (1000 = one core).
    pub cpu_millis: u32,
    /// Processes and threads at once.
    pub processes: u32,
}

/// `limits.memory` where a function sets none.
pub const DEFAULT_MEMORY: u64 = 512 << 20;
/// `limits.cpu` where a function sets none: one core.
pub const DEFAULT_CPU_MILLIS: u32 = 1000;
/// `limits.processes` where a function sets none.
pub const DEFAULT_PROCESSES: u32 = 256;
/// The two processes of an instance that wait outside and as init of its PID namespace
/// (see `spawn.rs`), counted on top of `limits.processes`.
const WAITERS: u32 = 2;

impl Limits {
    /// The defaults, for a group made before its function is known.
    pub const DEFAULT: Self =
        Self { memory: DEFAULT_MEMORY, cpu_millis: DEFAULT_CPU_MILLIS, processes: DEFAULT_PROCESSES + WAITERS };

    /// A function's limits, with the defaults where it sets none.
    pub fn of(limits: &gust_api::Limits) -> Self {
        Self {
            memory: limits.memory.unwrap_or(DEFAULT_MEMORY),
            cpu_millis: limits.cpu.unwrap_or(DEFAULT_CPU_MILLIS),
            processes: limits.processes.unwrap_or(DEFAULT_PROCESSES).saturating_add(WAITERS),
        }
    }
}

/// The parent of every instance's group, created for this server.
#[derive(Debug)]
pub struct Cgroups {
    /// `true` for the unified (v2) hierarchy.
    v2: bool,
    /// The parent directories: one on v2, one per controller on v1.
    parents: Vec<PathBuf>,
}

impl Cgroups {
    /// Finds the hierarchy, removes parents of dead servers, and creates this server's.
    ///
    /// # Errors
    /// What is missing or refused, in words an operator can act on.
    pub fn open() -> Result<Self, String> {
        let own =
            std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
        let pid = std::process::id();
        if Path::new(ROOT).join("cgroup.controllers").exists() {
            let path = own_path(&own, |c| c.is_empty()).ok_or("no cgroup v2 entry in /proc/self/cgroup")?;
            let base = Path::new(ROOT).join(path.trim_start_matches('/'));
            sweep(&base);
            let enable = "+memory +cpu +pids";
            let control = base.join("cgroup.subtree_control");
            if std::fs::write(&control, enable).is_err() {
                // gust's own group holds processes: move gust into a leaf beside its parent.
                let leaf = base.join("gust-server");
                std::fs::create_dir_all(&leaf).map_err(|e| format!("creating {}: {e}", leaf.display()))?;
                std::fs::write(leaf.join("cgroup.procs"), pid.to_string())
                    .map_err(|e| format!("moving gust into {}: {e}", leaf.display()))?;
                std::fs::write(&control, enable).map_err(|e| {
                    format!(
                        "cgroup v2: cannot enable memory, cpu and pids below {} ({e}); give gust a delegated \
                         cgroup (e.g. systemd-run -p Delegate=yes)",
                        base.display()
                    )
                })?;
            }
            let parent = base.join(format!("gust-{pid}"));
            std::fs::create_dir_all(&parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
            std::fs::write(parent.join("cgroup.subtree_control"), enable)
                .map_err(|e| format!("enabling controllers in {}: {e}", parent.display()))?;
            return Ok(Self { v2: true, parents: vec![parent] });
        }
        let mut parents = Vec::new();
        for controller in V1_CONTROLLERS {
            let mount = Path::new(ROOT).join(controller);
            if !mount.join("cgroup.procs").exists() {
                return Err(format!("cgroup v1: the {controller} controller is not mounted at {}", mount.display()));
            }
            let path = own_path(&own, |c| c.split(',').any(|c| c == controller)).unwrap_or_else(|| "/".into());
            let base = mount.join(path.trim_start_matches('/'));
            sweep(&base);
            let parent = base.join(format!("gust-{pid}"));
            std::fs::create_dir_all(&parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
            parents.push(parent);
        }
        Ok(Self { v2: false, parents })
    }

    /// `"cgroup v2"` or `"cgroup v1"`.
    pub fn version(&self) -> &'static str {
        if self.v2 { "cgroup v2" } else { "cgroup v1" }
    }

    /// Creates the group of instance `id` with `limits`.
    ///
    /// # Errors
    /// The `io::Error` of creating a directory or writing a limit.
    pub fn create(&self, id: &str, limits: Limits) -> std::io::Result<Group> {
        let mut group = self.adopt(id, limits);
        for d in &group.dirs {
            std::fs::create_dir(d)?;
        }
        self.set_limits(&mut group, limits)?;
        Ok(group)
    }

    /// The group named `name` below the parents, which a zygote child made and joined
    /// itself (see `invokers/python.py`), to be removed with the instance.
    pub fn adopt(&self, name: &str, limits: Limits) -> Group {
        Group { v2: self.v2, dirs: self.parents.iter().map(|p| p.join(name)).collect(), memory: limits.memory }
    }

    /// Gives `group` (a spare's, made with other limits) `limits`.
    ///
    /// # Errors
    /// The `io::Error` of writing a limit that must be set.
    pub fn set_limits(&self, group: &mut Group, limits: Limits) -> std::io::Result<()> {
        for (i, file, value, required) in self.limit_files(limits) {
            let Some(dir) = group.dirs.get(i) else { continue };
            let path = dir.join(file);
            if let Err(e) = std::fs::write(&path, &value)
                && required
            {
                return Err(std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display())));
            }
        }
        group.memory = limits.memory;
        Ok(())
    }

    /// What a group with `limits` has written: (index of the parent, file, value,
    /// whether it must succeed). Swap counts against the memory limit where the kernel
    /// accounts it; past the limit is out of memory, not slow.
    pub fn limit_files(&self, limits: Limits) -> Vec<(usize, &'static str, String, bool)> {
        let quota = u64::from(limits.cpu_millis) * CPU_PERIOD_US / 1000;
        if self.v2 {
            vec![
                (0, "memory.max", limits.memory.to_string(), true),
                (0, "memory.swap.max", "0".into(), false),
                (0, "cpu.max", format!("{quota} {CPU_PERIOD_US}"), true),
                (0, "pids.max", limits.processes.to_string(), true),
            ]
        } else {
            vec![
                (0, "memory.limit_in_bytes", limits.memory.to_string(), true),
                (0, "memory.memsw.limit_in_bytes", limits.memory.to_string(), false),
                (1, "cpu.cfs_period_us", CPU_PERIOD_US.to_string(), true),
                (1, "cpu.cfs_quota_us", quota.to_string(), true),
                (2, "pids.max", limits.processes.to_string(), true),
            ]
        }
    }

    /// The parents' directories (one on v2; memory, cpu and pids on v1).
    pub fn parents(&self) -> &[PathBuf] {
        &self.parents
    }

    /// Removes this server's parents (their groups are gone by then).
    pub fn close(&self) {
        for p in &self.parents {
            remove_tree(p);
        }
    }
}

/// The path of gust's own group in the hierarchy whose controller list `is` accepts
/// (`/proc/self/cgroup` lines are `ID:CONTROLLERS:PATH`).
fn own_path(text: &str, is: impl Fn(&str) -> bool) -> Option<String> {
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        is(controllers).then(|| path.to_owned())
    })
}

/// Removes the `gust-<pid>` parents under `base` whose server is no longer running.
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("gust-")).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            remove_tree(&e.path());
        }
    }
}

/// Removes a group and the groups below it, killing what still runs in them. A group
/// can only go once its last process has been reaped, so this waits for that, briefly.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    for _ in 0..100 {
        kill_members(dir);
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => return,
        }
    }
}

fn kill_members(dir: &Path) {
    let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else { return };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        crate::spawn::signal_process(pid, crate::spawn::SIGKILL);
    }
}

/// One instance's group; removed when dropped (whatever still runs in it is killed).
#[derive(Debug)]
pub struct Group {
    v2: bool,
    dirs: Vec<PathBuf>,
    memory: u64,
}

impl Group {
    /// The `cgroup.procs` files a new process writes `0` to, to join the group.
    pub(crate) fn procs_files(&self) -> Vec<CString> {
        self.dirs.iter().filter_map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok()).collect()
    }

    /// The memory limit, in bytes.
    pub fn memory(&self) -> u64 {
        self.memory
    }

    /// Whether the kernel's OOM killer has killed a process of this group.
    pub fn oom_killed(&self) -> bool {
        // The memory group comes first on v1, and is the only one on v2.
        let Some(dir) = self.dirs.first() else { return false };
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        std::fs::read_to_string(dir.join(file)).is_ok_and(|t| {
            t.lines().filter_map(|l| l.strip_prefix("oom_kill ")).any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
        })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let dirs = std::mem::take(&mut self.dirs);
        let remove = move || dirs.iter().for_each(|d| remove_tree(d));
        // An rmdir of a memory cgroup takes up to a millisecond: not on a runtime thread.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_paths_come_from_the_matching_hierarchy() {
        let text = "9:name=systemd:/\n4:memory:/a/b\n1:cpu,cpuacct:/c\n0::/unified\n";
        assert_eq!(own_path(text, |c| c.split(',').any(|c| c == "memory")).as_deref(), Some("/a/b"));
        assert_eq!(own_path(text, |c| c.split(',').any(|c| c == "cpu")).as_deref(), Some("/c"));
        assert_eq!(own_path(text, str::is_empty).as_deref(), Some("/unified"));
        assert_eq!(own_path(text, |c| c == "pids"), None);
    }
}
