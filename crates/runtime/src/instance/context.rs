//! What every instance shares ([`Context`]), and the places among `max_instances` they
//! hold ([`Ticket`]).

use std::path::PathBuf;
use std::sync::Arc;

use gust_api::Runtime;
use sha2::Digest as _;

use crate::interpreters::Interpreters;
use crate::logs::Logs;
use crate::{Error, Result};

/// What instances of every revision share: where they live and what they run with.
#[derive(Debug)]
pub struct Context {
    /// Instance directories (scratch and socket) go here.
    pub run_dir: PathBuf,
    /// The built-in invokers' sources, written out at start-up.
    pub invokers_dir: PathBuf,
    /// Python's bytecode cache, kept out of the (shared, digest-named) code directories.
    pub pycache_dir: PathBuf,
    /// Interpreters found at start-up.
    pub interpreters: Interpreters,
    /// Captured output.
    pub logs: Arc<Logs>,
    /// The compiled Java invoker's class directory, compiled on first use (once per
    /// invoker source, cached on disk), or why it could not be.
    pub java_invoker: tokio::sync::OnceCell<std::result::Result<PathBuf, String>>,
    /// The Python zygote, unless the warm pool for Python is off.
    pub zygote: Option<crate::zygote::Zygote>,
    /// Node processes started ahead of need, unless the warm pool for Node is off.
    pub node_spares: Option<Arc<crate::spares::Spares>>,
    /// Limits across every function.
    pub limits: crate::HostLimits,
    /// Instances holding a [`Ticket`] now.
    pub instances: Arc<std::sync::atomic::AtomicU32>,
    /// Where secret values come from.
    pub secrets: Option<Arc<dyn crate::secrets::SecretSource>>,
    /// How instances are confined.
    pub isolation: crate::isolation::Level,
    /// The parent of instances' cgroups, at level `isolated`.
    pub cgroups: Option<Arc<crate::cgroups::Cgroups>>,
    /// Wakes the autoscaler's loop when every pool was quiet: a pool was made, an
    /// instance is starting, a call waits, a pool is held or retired (see
    /// `Supervisor::run_reaper`).
    pub reaper: tokio::sync::Notify,
}

/// A place among the server's `max_instances`, given back when the instance it was
/// taken for is dropped.
#[derive(Debug)]
pub struct Ticket(Arc<std::sync::atomic::AtomicU32>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Why instances of `spec` must start as fresh processes rather than from the warm pool
/// of their runtime; `None` when they can be pooled (or the runtime has no pool).
pub fn unpooled_reason(ctx: &Context, spec: &gust_api::FunctionSpec) -> Option<String> {
    let pooled = match spec.runtime {
        Runtime::Node | Runtime::LambdaNode
            if ctx.isolation.sandboxed() && spec.network == gust_api::Network::None && ctx.node_spares.is_some() =>
        {
            return Some(
                "network = \"none\": a waiting Node process was started with the network, and cannot drop it"
                    .to_owned(),
            );
        }
        Runtime::Python | Runtime::LambdaPython => ctx.zygote.is_some(),
        Runtime::Node | Runtime::LambdaNode => ctx.node_spares.is_some(),
        _ => return None,
    };
    if !pooled {
        return Some(format!("the warm pool for {} is off (gust up --pool)", spec.runtime));
    }
    // The dynamic loader, the C library and the interpreter read these only when a
    // process starts; a pooled process started before they were set would ignore them.
    // (Python's own PYTHON* variables are ignored by every instance: it runs with -I.)
    let startup_only = |k: &str| {
        k.starts_with("LD_")
            || k.starts_with("LC_")
            || k.starts_with("MALLOC_")
            || matches!(k, "LANG" | "LANGUAGE" | "GLIBC_TUNABLES")
            || (matches!(spec.runtime, Runtime::Node | Runtime::LambdaNode)
                && (k.starts_with("NODE_") || k.starts_with("UV_")))
    };
    let keys: Vec<&str> = spec.env.keys().map(String::as_str).filter(|k| startup_only(k)).collect();
    (!keys.is_empty()).then(|| format!("env sets {}, read only when a process starts", keys.join(", ")))
}

impl Context {
    /// Takes a place for one more instance among `max_instances`.
    ///
    /// # Errors
    /// [`Error::AtCapacity`] when every place is taken.
    pub fn reserve(&self) -> Result<Ticket> {
        use std::sync::atomic::Ordering;
        let max = self.limits.max_instances;
        self.instances
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .map_err(|_| Error::AtCapacity { max })?;
        Ok(Ticket(self.instances.clone()))
    }

    /// The class directory of the Java invoker, compiling it with `javac` the first time
    /// any server on this data directory needs it.
    pub(super) async fn java_invoker(&self) -> Result<PathBuf> {
        let unavailable = |detail: String| Error::RuntimeUnavailable { runtime: "java".into(), detail };
        let javac = self.interpreters.javac().ok_or_else(|| unavailable(self.interpreters.java.detail.clone()))?;
        let source = self.invokers_dir.join("Invoker.java");
        let got = self
            .java_invoker
            .get_or_init(|| async move {
                let text = std::fs::read(&source).map_err(|e| format!("read {}: {e}", source.display()))?;
                let hash = hex::encode(sha2::Sha256::digest(&text));
                let classes = source.with_file_name(format!("java-{}", &hash[..16]));
                if classes.join("gust").join("Invoker.class").is_file() {
                    return Ok(classes);
                }
                let tmp = classes.with_extension("tmp");
                let _ = std::fs::remove_dir_all(&tmp);
                let out = tokio::process::Command::new(&javac)
                    .arg("-d")
                    .arg(&tmp)
                    .arg(&source)
                    .output()
                    .await
                    .map_err(|e| format!("could not run {}: {e}", javac.display()))?;
                if !out.status.success() {
                    return Err(format!(
                        "compiling the invoker failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                std::fs::rename(&tmp, &classes).map_err(|e| format!("store the invoker: {e}"))?;
                Ok(classes)
            })
            .await;
        got.clone().map_err(unavailable)
    }
}
