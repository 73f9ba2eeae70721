//! What confines an instance, per isolation level: its `basic` sandbox (the paths it may
//! read and write, its TCP ports under `network = "none"`), the broad sandbox of the
//! Python zygote, what a zygote child is told to enter itself, and at `isolated` its
//! cgroup and namespaces. `instance.rs` decides when; this module says what.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gust_store::Revision;

use crate::instance::Context;
use crate::interpreters::Interpreters;
use crate::spawn;
use crate::{Error, Result};

/// The `basic` sandbox of an instance living in `dir` (`None` at level `none`): read and
/// execute the system, the interpreters' installations, gust's invokers and this
/// revision's code; write its own directory (scratch and socket) and its own slice of the
/// bytecode cache. Everything else of the data directory — the database, the token,
/// other functions' code, scratch and cache — is out of reach.
pub(crate) fn sandbox_for(
    ctx: &Context,
    revision: &Revision,
    dir: &Path,
    runtime_api: Option<u16>,
) -> Result<Option<Arc<crate::sandbox::Sandbox>>> {
    if !ctx.isolation.sandboxed() {
        return Ok(None);
    }
    let (read, write) = sandbox_paths(ctx, revision, dir);
    let paths = crate::sandbox::Paths {
        read: read.iter().map(PathBuf::as_path).collect(),
        write: write.iter().map(PathBuf::as_path).collect(),
        tcp_only_to: tcp_only_to(revision, runtime_api),
    };
    let sandbox = crate::sandbox::Sandbox::new(&paths).map_err(|e| Error::StartFailed {
        function: revision.spec.name.to_string(),
        detail: format!("cannot build its sandbox: {e}"),
    })?;
    Ok(Some(Arc::new(sandbox)))
}

/// For `network = "none"`: the TCP ports it may still connect to (its Runtime API).
pub(crate) fn tcp_only_to(revision: &Revision, runtime_api: Option<u16>) -> Option<Vec<u16>> {
    (revision.spec.network == gust_api::Network::None).then(|| runtime_api.into_iter().collect())
}

/// What every sandbox lets be read: the system and the interpreters' installations.
pub(crate) fn system_paths(interpreters: &Interpreters) -> Vec<PathBuf> {
    let system = ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/opt", "/proc", "/sys", "/dev"];
    let mut out: Vec<PathBuf> = system.iter().map(PathBuf::from).collect();
    out.extend(
        [&interpreters.python, &interpreters.node, &interpreters.java]
            .into_iter()
            .filter_map(|found| found.path.as_deref())
            .filter_map(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf)),
    );
    out
}

/// The paths one instance may read and write (see [`sandbox_for`]); a zygote child
/// gets them in `GUST_SANDBOX_READ` and `GUST_SANDBOX_WRITE` and applies them itself.
pub(crate) fn sandbox_paths(ctx: &Context, revision: &Revision, dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let code = &revision.code_dir;
    let own_cache = ctx.pycache_dir.join(code.strip_prefix("/").unwrap_or(code));
    let _ = std::fs::create_dir_all(&own_cache);
    let mut read = system_paths(&ctx.interpreters);
    read.extend([ctx.invokers_dir.clone(), code.clone()]);
    (read, vec![dir.to_path_buf(), own_cache, PathBuf::from("/dev/null")])
}

/// At level `isolated`: the instance's cgroup (created here, with its limits) and the
/// namespaces its process enters (a network one as
/// [`crate::isolation::own_network_namespace`] says).
pub(crate) fn isolation_for(
    ctx: &Context,
    spec: &gust_api::FunctionSpec,
    id: &str,
) -> Result<(Option<crate::cgroups::Group>, Option<spawn::Isolate>)> {
    let Some(cgroups) = &ctx.cgroups else { return Ok((None, None)) };
    let limits = crate::cgroups::Limits::of(&spec.limits);
    let group = cgroups.create(id, limits).map_err(|e| Error::StartFailed {
        function: spec.name.to_string(),
        detail: format!("cannot create its {}: {e}", cgroups.version()),
    })?;
    let isolate = namespaces(spec, group.procs_files());
    Ok((Some(group), Some(isolate)))
}

/// The namespaces (and private mounts) an instance of `spec` enters, joining the groups
/// whose `cgroup.procs` files are `cgroup_procs`.
fn namespaces(spec: &gust_api::FunctionSpec, cgroup_procs: Vec<std::ffi::CString>) -> spawn::Isolate {
    spawn::Isolate {
        cgroup_procs,
        no_network: crate::isolation::own_network_namespace(spec),
        hostname: std::ffi::CString::new(spec.name.as_str()).unwrap_or_default(),
        tmpfs: tmpfs_options(crate::cgroups::Limits::of(&spec.limits).memory),
    }
}

/// The mount options of an instance's private `/tmp` and `/dev/shm`: as large as its
/// memory limit, which their pages count against anyway.
fn tmpfs_options(memory: u64) -> std::ffi::CString {
    std::ffi::CString::new(format!("mode=1777,size={memory}")).unwrap_or_default()
}

/// How an instance the kernel killed for its memory ended, in words.
pub(crate) fn out_of_memory(group: &crate::cgroups::Group, how: &str) -> String {
    format!(
        "ran out of memory (limits.memory = {}) and was killed by the kernel ({how})",
        gust_api::quantity::format_bytes(group.memory())
    )
}

/// The Python zygote's sandbox under `basic`: what any of its children could need (all
/// code, all instance directories, the whole bytecode cache) but nothing else of the data
/// directory (the database, the token, logs). Each child narrows it to its function.
///
/// # Errors
/// [`Error::Io`] when the ruleset cannot be built.
pub(crate) fn zygote_sandbox(
    interpreters: &Interpreters,
    invokers: &Path,
    data: &Path,
    run: &Path,
    pycache: &Path,
) -> Result<crate::sandbox::Sandbox> {
    let mut read = system_paths(interpreters);
    read.extend([invokers.to_path_buf(), data.join("code")]);
    let write = [run.to_path_buf(), pycache.to_path_buf(), PathBuf::from("/dev/null")];
    let paths = crate::sandbox::Paths {
        read: read.iter().map(PathBuf::as_path).collect(),
        write: write.iter().map(PathBuf::as_path).collect(),
        tcp_only_to: None,
    };
    crate::sandbox::Sandbox::new(&paths).map_err(Error::io("build the zygote's sandbox", run))
}

/// `GUST_SANDBOX_READ`, `GUST_SANDBOX_WRITE` (and, for `network = "none"`,
/// `GUST_SANDBOX_TCP`: the ports it may connect to) for a zygote child under `basic`;
/// under `isolated` also `GUST_ISOLATE` (its cgroup limits and namespaces, as JSON; it
/// makes and joins a group of its own, `spare-<pid>`) and `GUST_SECCOMP` (the filter it
/// installs itself, in hex).
pub(crate) fn sandbox_env(
    ctx: &Context,
    revision: &Revision,
    dir: &Path,
    runtime_api: Option<u16>,
) -> Vec<(String, OsString)> {
    if !ctx.isolation.sandboxed() {
        return Vec::new();
    }
    let (read, mut write) = sandbox_paths(ctx, revision, dir);
    if ctx.cgroups.is_some() {
        // Its own tmpfs there by then, made by the child itself before it adds its rules.
        write.extend([PathBuf::from("/tmp"), PathBuf::from("/dev/shm")]);
    }
    let join = |paths: Vec<PathBuf>| std::env::join_paths(paths).unwrap_or_default();
    let mut env = vec![("GUST_SANDBOX_READ".into(), join(read)), ("GUST_SANDBOX_WRITE".into(), join(write))];
    if let Some(ports) = tcp_only_to(revision, runtime_api) {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        env.push(("GUST_SANDBOX_TCP".into(), ports.join(",").into()));
    }
    if let Some(cgroups) = &ctx.cgroups {
        let iso = namespaces(&revision.spec, Vec::new());
        let text = |c: &std::ffi::CString| c.to_string_lossy().into_owned();
        // The child is (or now goes) in a spare group of its own; these are its limits.
        let limits = cgroups.limit_files(crate::cgroups::Limits::of(&revision.spec.limits));
        let spec = serde_json::json!({
            "parents": cgroups.parents(),
            "limits": limits,
            "flags": iso.unshare_flags(),
            "hostname": text(&iso.hostname),
            "tmpfs": text(&iso.tmpfs),
        });
        env.push(("GUST_ISOLATE".into(), spec.to_string().into()));
        env.push(("GUST_SECCOMP".into(), crate::sandbox::filter_hex().into()));
    }
    env
}

/// How a Node spare is confined under `basic` and `isolated` (see `spares.rs`): it may
/// read the system, the interpreters, gust's invokers and its code slot, and write its
/// own directory; at `isolated` it also gets its namespaces (host name `gust`, the
/// host's network: a function with `network = "none"` starts fresh) and a spare cgroup
/// with the default limits, which a cold start replaces with the function's.
pub(crate) fn spare_confinement(
    interpreters: &Interpreters,
    invokers: &Path,
    cgroups: Option<Arc<crate::cgroups::Cgroups>>,
) -> crate::spares::Confine {
    let mut read = system_paths(interpreters);
    read.push(invokers.to_path_buf());
    Box::new(move |dir: &Path, slot: &Path| {
        let mut readable: Vec<&Path> = read.iter().map(PathBuf::as_path).collect();
        readable.push(slot);
        let paths =
            crate::sandbox::Paths { read: readable, write: vec![dir, Path::new("/dev/null")], tcp_only_to: None };
        let sandbox = Arc::new(crate::sandbox::Sandbox::new(&paths)?);
        let Some(cgroups) = &cgroups else {
            return Ok(crate::spares::Confinement { sandbox: Some(sandbox), ..Default::default() });
        };
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let limits = crate::cgroups::Limits::DEFAULT;
        let group = cgroups.create(&name, limits)?;
        let isolate = spawn::Isolate {
            cgroup_procs: group.procs_files(),
            no_network: false,
            hostname: c"gust".to_owned(),
            tmpfs: tmpfs_options(limits.memory),
        };
        Ok(crate::spares::Confinement { sandbox: Some(sandbox), isolate: Some(isolate), cgroup: Some(group) })
    })
}
