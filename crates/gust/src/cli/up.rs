//! `gust up`: run the platform.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use gust_api::quantity::{parse_bytes, parse_duration};
use gust_server::{Config, Server};

use super::UsageError;

#[derive(Debug, Args)]
pub(crate) struct Up {
    /// Address to serve on.
    #[arg(long, env = "GUST_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Data directory: SQLite database, code, logs, instance scratch. Default
    /// `~/.local/share/gust`.
    #[arg(long, env = "GUST_DATA")]
    data: Option<PathBuf>,
    /// How long shutdown waits for calls in flight, e.g. "30s".
    #[arg(long, env = "GUST_DRAIN_TIMEOUT", default_value = "30s")]
    drain_timeout: String,
    /// The most a request's line and headers may take, e.g. "64Ki" (8Ki–1Mi); past it
    /// the answer is 431.
    #[arg(long, env = "GUST_MAX_HEADER_SIZE", default_value = "64Ki")]
    max_header_size: String,
    /// Largest deploy upload, e.g. "100Mi".
    #[arg(long, env = "GUST_MAX_UPLOAD", default_value = "100Mi")]
    max_upload: String,
    /// Python interpreter for `python` functions (a path or a name on PATH).
    #[arg(long, env = "GUST_PYTHON")]
    python: Option<String>,
    /// Node.js executable for `node` functions (a path or a name on PATH).
    #[arg(long, env = "GUST_NODE")]
    node: Option<String>,
    /// The `java` of a JDK 17+ for `java` functions (a path or a name on PATH).
    #[arg(long, env = "GUST_JAVA")]
    java: Option<String>,
    /// Serve function NAME at `http://NAME.DOMAIN/` too (point a wildcard DNS name or
    /// /etc/hosts entries at gust), as Knative routes do.
    #[arg(long, env = "GUST_DOMAIN")]
    domain: Option<String>,
    /// Warm pools per runtime, e.g. `python=2,node=2`: `python=N` runs the Python zygote
    /// with N children forked and waiting for a function (`python=0`: no zygote, each
    /// instance is a fresh interpreter); `node=N` keeps N Node processes started and
    /// waiting (`node=0`: none); `off` turns every pool off. Each defaults to one per
    /// core, at most 4.
    #[arg(long, env = "GUST_POOL", default_value = "")]
    pool: String,
    /// Revisions without traffic or a tag kept whatever their age (Knative's
    /// min-non-active-revisions).
    #[arg(long, env = "GUST_REVISION_KEEP", default_value_t = 20)]
    revision_keep: u32,
    /// Beyond those, revisions without traffic older than this are deleted with their
    /// unused code, e.g. "48h" (Knative's retain-since-create-time).
    #[arg(long, env = "GUST_REVISION_MAX_AGE", default_value = "48h")]
    revision_max_age: String,
    /// At most this many revisions without traffic are kept, whatever their age
    /// (Knative's max-non-active-revisions).
    #[arg(long, env = "GUST_REVISION_MAX", default_value_t = 1000)]
    revision_max: u32,
    /// How long records of succeeded and failed calls (sync and async) are kept, e.g.
    /// "24h"; dead-lettered calls stay until redriven or purged.
    #[arg(long, env = "GUST_CALL_RETENTION", default_value = "24h")]
    call_retention: String,
    /// Records of answered sync calls waiting to be written at most; past it, records
    /// are dropped and counted (`calls_unrecorded` in `GET /api/v1/info`), never calls
    /// delayed.
    #[arg(long, env = "GUST_CALL_RECORD_BACKLOG", default_value_t = gust_server::config::CALL_RECORD_BACKLOG)]
    call_record_backlog: usize,
    /// Require the server's token for the control API (`/api/v1`, `/calls`) even on
    /// loopback. Listening on any other address always requires it.
    #[arg(long, env = "GUST_AUTH", value_parser = clap::builder::BoolishValueParser::new())]
    auth: bool,
    /// Read the server's token from this file instead of `<data>/token` (created with
    /// 256 random bits, readable only by its owner, when missing).
    #[arg(long, env = "GUST_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Addresses async callbacks may reach besides public ones: CIDR ranges, addresses,
    /// `loopback`, `private`, `link-local`, comma-separated (default: none of them).
    #[arg(long, env = "GUST_OUTBOUND_ALLOW", default_value = "")]
    outbound_allow: String,
    /// Instances running at once, every function together; a call that needs one more
    /// gets 503.
    #[arg(long, env = "GUST_MAX_INSTANCES", default_value_t = 256)]
    max_instances: u32,
    /// The longest line of a function's output kept whole, e.g. "16Ki" (1Ki–1Mi); longer
    /// lines are split.
    #[arg(long, env = "GUST_LOG_LINE_MAX", default_value = "16Ki")]
    log_line_max: String,
    /// The most output one call may log, e.g. "1Mi" ("0": no cap); the rest is dropped
    /// with a line saying so.
    #[arg(long, env = "GUST_LOG_CALL_MAX", default_value = "1Mi")]
    log_call_max: String,
    /// How instances are confined: `none` (process hygiene only), `basic` (also a
    /// Landlock ruleset and a seccomp filter per instance), `isolated` (also mount, PID,
    /// IPC, UTS and, for `network = "none"`, network namespaces, a private /tmp, and a
    /// cgroup capping memory, CPU and processes; needs root), or `auto`: the strongest
    /// this host allows (and `gust up` says why not a stronger one).
    #[arg(long, env = "GUST_ISOLATION", default_value = "auto")]
    isolation: String,
    /// Busy polling: for this long after each request (e.g. "250us"; "0": off), a thread
    /// polls for ready sockets instead of sleeping, cutting the wake-up latency of each
    /// hop (large on VMs) for CPU. Runs gust's async work on one thread. At most 100ms.
    #[arg(long, env = "GUST_BUSY_POLL", default_value = "0")]
    busy_poll: String,
    /// Write the bound address here once ready (useful with port 0).
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

/// The longest `--busy-poll` window: past it, spinning costs a core for nothing a
/// sleeping thread would not do as well.
const MAX_BUSY_POLL: Duration = Duration::from_millis(100);

impl Up {
    /// One worker thread when busy polling (see `gust_gateway::busy_poll`), else one per
    /// core. An unreadable `--busy-poll` leaves the default; `config` reports it.
    pub(crate) fn worker_threads(&self) -> Option<usize> {
        busy_poll(&self.busy_poll).ok().filter(|d| !d.is_zero()).map(|_| 1)
    }

    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let (config, why_not_stronger) = self.config()?;
        let running = Server::start(config.clone()).await?;
        let info = running.info();
        println!("gust {} listening on {}", info.version, info.listen);
        println!("  data:      {}", info.data_dir);
        if info.auth.control_api {
            println!("  auth:      the control API needs the token in {} (`gust login`)", info.auth.token_file);
        } else {
            println!(
                "  auth:      control API open on loopback; private functions need the token in {}",
                info.auth.token_file
            );
        }
        println!("  isolation: {} ({})", info.isolation.level, info.isolation.applied.join(", "));
        if self.isolation == "auto" {
            let why = why_not_stronger.map_or_else(String::new, |w| format!("; {w}"));
            println!("             the strongest this host allows (--isolation auto){why}");
        }
        // The pools as they run; one that is off for want of its interpreter says so.
        let pool = |runtime: &str, size: u32, what: &str| match size {
            0 if info.interpreters.iter().any(|i| i.runtime == runtime && i.path.is_none()) => {
                "off (no interpreter)".to_owned()
            }
            0 => "off".to_owned(),
            n => format!("{n} ({what})"),
        };
        println!(
            "  pools:     python {}, node {}",
            pool("python", info.pools.python, "zygote children waiting"),
            pool("node", info.pools.node, "processes waiting")
        );
        if info.busy_poll.window_us > 0 {
            println!("  busy poll: {} µs after each request, on one runtime thread", info.busy_poll.window_us);
        }
        if !info.isolation.host_allows.is_empty() {
            println!("  host also allows: {}", info.isolation.host_allows.join(", "));
        }
        for i in &info.interpreters {
            match &i.path {
                Some(p) => println!("  {:<7}    {p} {}", i.runtime, i.detail),
                None => println!("  {:<7}    unavailable: {}", i.runtime, i.detail),
            }
        }
        println!("  functions: {}", running.functions());
        running.run(stop_signal()).await?;
        Ok(())
    }

    /// The server's configuration and, for `--isolation auto`, why it is not a stronger level.
    fn config(&self) -> anyhow::Result<(Config, Option<String>)> {
        let mut problems = Vec::new();
        let drain = parse_duration(&self.drain_timeout)
            .map_err(|e| problems.push(format!("--drain-timeout: {e}")))
            .unwrap_or(Duration::from_secs(30));
        let max_upload =
            parse_bytes(&self.max_upload).map_err(|e| problems.push(format!("--max-upload: {e}"))).unwrap_or(100 << 20);
        let max_header_bytes = parse_bytes(&self.max_header_size)
            .map_err(|e| problems.push(format!("--max-header-size: {e}")))
            .ok()
            .filter(|b| {
                let ok = (8 << 10..=1 << 20).contains(b);
                if !ok {
                    problems.push("--max-header-size: must be between 8Ki and 1Mi".to_owned());
                }
                ok
            })
            .unwrap_or(64 << 10);
        let log_line_max = parse_bytes(&self.log_line_max)
            .map_err(|e| problems.push(format!("--log-line-max: {e}")))
            .ok()
            .filter(|b| {
                let ok = (1 << 10..=1 << 20).contains(b);
                if !ok {
                    problems.push("--log-line-max: must be between 1Ki and 1Mi".to_owned());
                }
                ok
            })
            .unwrap_or(16 << 10);
        let log_call_max = if self.log_call_max.trim() == "0" {
            0
        } else {
            parse_bytes(&self.log_call_max)
                .map_err(|e| problems.push(format!("--log-call-max: {e}")))
                .unwrap_or(1 << 20)
        };
        if self.max_instances == 0 {
            problems.push("--max-instances: must be at least 1".to_owned());
        }
        let pools = parse_pools(&self.pool).map_err(|e| problems.push(format!("--pool: {e}"))).unwrap_or_default();
        let max_age = parse_duration(&self.revision_max_age)
            .map_err(|e| problems.push(format!("--revision-max-age: {e}")))
            .unwrap_or(Duration::from_secs(48 * 3600));
        if self.revision_max < self.revision_keep {
            problems.push(format!(
                "--revision-max ({}) is below --revision-keep ({}): nothing could be kept",
                self.revision_max, self.revision_keep
            ));
        }
        let retention = gust_server::config::Retention { keep: self.revision_keep, max_age, max: self.revision_max };
        let call_retention = parse_duration(&self.call_retention)
            .map_err(|e| problems.push(format!("--call-retention: {e}")))
            .unwrap_or(Duration::from_secs(24 * 3600));
        if self.call_record_backlog == 0 {
            problems.push("--call-record-backlog: must be at least 1".to_owned());
        }
        let busy_poll =
            busy_poll(&self.busy_poll).map_err(|e| problems.push(format!("--busy-poll: {e}"))).unwrap_or_default();
        let outbound = gust_server::config::OutboundPolicy::parse(&self.outbound_allow)
            .map_err(|e| problems.push(format!("--outbound-allow: {e}")))
            .unwrap_or_default();
        let data_choice = self.data.clone().or_else(default_data_dir);
        let (isolation, why_not_stronger) = match (self.isolation.as_str(), &data_choice) {
            ("auto", Some(data)) => gust_server::config::strongest_isolation(data),
            (text, _) => (
                gust_server::config::IsolationLevel::parse(text)
                    .map_err(|e| problems.push(format!("--isolation: {e}")))
                    .unwrap_or_default(),
                None,
            ),
        };
        let data = match data_choice {
            Some(d) => d,
            None => {
                problems.push("HOME is not set: pass --data or GUST_DATA".to_owned());
                PathBuf::new()
            }
        };
        if !problems.is_empty() {
            return Err(UsageError(problems.join("\n")).into());
        }
        std::fs::create_dir_all(&data).with_context(|| format!("creating data directory {}", data.display()))?;
        let data = std::fs::canonicalize(&data).unwrap_or(data);
        let config = Config {
            listen: self.listen,
            data_dir: data,
            drain_timeout: drain,
            ready_file: self.ready_file.clone(),
            interpreters: gust_server::config::InterpreterSettings {
                python: self.python.clone(),
                node: self.node.clone(),
                java: self.java.clone(),
                path_var: std::env::var("PATH").ok(),
            },
            gateway: gust_server::config::GatewayConfig {
                call_retention,
                record_backlog: self.call_record_backlog,
                outbound,
                busy_poll,
                max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(64 << 10),
                ..gust_gateway_config(max_upload, self.domain.clone(), retention)
            },
            pools,
            isolation,
            limits: gust_server::config::HostLimits {
                max_instances: self.max_instances,
                log_line_max: usize::try_from(log_line_max).unwrap_or(16 << 10),
                log_call_max,
            },
            auth: gust_server::config::AuthSettings { required: self.auth, token_file: self.token_file.clone() },
        };
        Ok((config, why_not_stronger))
    }
}

fn gust_gateway_config(
    max_upload: u64,
    domain: Option<String>,
    retention: gust_server::config::Retention,
) -> gust_server::config::GatewayConfig {
    let domain = domain.map(|d| d.trim_start_matches('.').to_ascii_lowercase()).filter(|d| !d.is_empty());
    gust_server::config::GatewayConfig { max_upload, domain, retention, ..Default::default() }
}

/// A `--busy-poll` window: "0" or a duration up to [`MAX_BUSY_POLL`].
fn busy_poll(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let window = parse_duration(text).map_err(|e| e.to_string())?;
    if window > MAX_BUSY_POLL {
        return Err(format!("at most {}ms: longer spins only burn a core", MAX_BUSY_POLL.as_millis()));
    }
    Ok(window)
}

/// `~/.local/share/gust`, where `gust up` keeps its data unless told otherwise.
pub(crate) fn default_data_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share/gust"))
}

/// More waiting processes than this is a typo, not a plan (a Node one holds ~40 MB).
const MAX_POOL: u32 = 64;

/// `python=2,node=2` (sizes not named keep their defaults) or `off`.
fn parse_pools(text: &str) -> Result<gust_server::config::WarmPools, String> {
    let mut pools = gust_server::config::WarmPools::default();
    if text.trim() == "off" {
        return Ok(gust_server::config::WarmPools::OFF);
    }
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (runtime, size) = item.split_once('=').ok_or_else(|| format!("`{item}` is not RUNTIME=SIZE"))?;
        let size: u32 = size.trim().parse().map_err(|_| format!("`{item}`: the size must be a whole number"))?;
        match runtime.trim() {
            "python" | "node" if size > MAX_POOL => {
                return Err(format!("{}=N: at most {MAX_POOL} waiting processes", runtime.trim()));
            }
            "python" => pools.python = size,
            "node" => pools.node = size,
            other => return Err(format!("`{other}` has no warm pool (python and node have)")),
        }
    }
    Ok(pools)
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        // Without signal handlers the process still dies on a signal, just without a drain.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
