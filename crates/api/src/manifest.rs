//! `gust.toml`: the manifest a function directory carries, and its validation into a
//! [`FunctionSpec`].
//!
//! Validation walks the TOML table by hand instead of deriving `Deserialize` so that it
//! can report *every* problem at once, each with its dotted field name, and so that an
//! unknown key is an error that names the key (a typo must not be silently ignored).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::quantity::{format_bytes, format_duration};
use crate::route::{RouteMethod, RoutePattern, RouteSpec};
use crate::{Error, FunctionName, Problem, Result};

pub use delivery::{Backoff, DeliveryPolicy};
use fields::{Fields, duration_text};
pub use triggers::TriggerSpec;

/// How an instance is started and spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A Python handler run by the built-in invoker (HTTP on a Unix socket).
    Python,
    /// A Node.js handler run by the built-in invoker (HTTP on a Unix socket).
    Node,
    /// A shell script, one process per call (the classic watchdog contract).
    Shell,
    /// Any executable, speaking `stdio` (one process per call) or `http`.
    Exec,
    /// A JVM class implementing `java.util.function.Function`, run by the built-in invoker.
    Java,
    /// An AWS Lambda Python handler (`def handler(event, context)`), run by gust's
    /// built-in Lambda runtime client over the Runtime API.
    #[serde(rename = "lambda-python")]
    LambdaPython,
    /// An AWS Lambda Node handler (`exports.handler = async (event, context) => …`), run
    /// by gust's built-in Lambda runtime client over the Runtime API.
    #[serde(rename = "lambda-node")]
    LambdaNode,
    /// A Lambda custom runtime: the code's `bootstrap` executable, using any Lambda
    /// runtime client (`awslambdaric`, `aws-lambda-ric`, the `lambda_runtime` crate, curl).
    Lambda,
}

impl Runtime {
    /// Every runtime this build supports, as written in manifests.
    pub const ALL: [Runtime; 8] = [
        Runtime::Python,
        Runtime::Node,
        Runtime::Shell,
        Runtime::Exec,
        Runtime::Java,
        Runtime::LambdaPython,
        Runtime::LambdaNode,
        Runtime::Lambda,
    ];

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Node => "node",
            Runtime::Shell => "shell",
            Runtime::Exec => "exec",
            Runtime::Java => "java",
            Runtime::LambdaPython => "lambda-python",
            Runtime::LambdaNode => "lambda-node",
            Runtime::Lambda => "lambda",
        }
    }

    /// Whether instances speak the Lambda Runtime API.
    pub fn is_lambda(self) -> bool {
        matches!(self, Runtime::LambdaPython | Runtime::LambdaNode | Runtime::Lambda)
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The handler used when the manifest names none.
    pub fn default_handler(self) -> Option<&'static str> {
        match self {
            Runtime::Python => Some("handler.handle"),
            Runtime::Node => Some("handler.js"),
            Runtime::Shell => Some("handler.sh"),
            // What the AWS console writes for a new function.
            Runtime::LambdaPython => Some("lambda_function.lambda_handler"),
            Runtime::LambdaNode => Some("index.handler"),
            Runtime::Lambda => Some("function.handler"),
            Runtime::Exec | Runtime::Java => None,
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The wire between the gateway and an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The instance serves HTTP/1.1 on `GUST_SOCKET` (or `PORT`) and lives across calls.
    Http,
    /// One process per call: body on stdin, response on stdout, metadata in env.
    Stdio,
    /// The instance pulls calls from gust over the AWS Lambda Runtime API.
    Lambda,
}

impl Protocol {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Stdio => "stdio",
            Protocol::Lambda => "lambda",
        }
    }
}

/// Per-call limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// One call, from arrival to the last byte of the response. Default 60 s.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Memory an instance may use, in bytes; enforced at isolation `isolated` (its
    /// cgroup), where the default is 512 MiB.
    pub memory: Option<u64>,
    /// CPU an instance may use, in thousandths of a core (`cpu = "500m"`, `"2"` or
    /// `0.5`, as Kubernetes writes it); enforced at isolation `isolated`, where the
    /// default is one core.
    #[serde(default)]
    pub cpu: Option<u32>,
    /// Processes and threads an instance may run at once; enforced at isolation
    /// `isolated`, where the default is 256.
    #[serde(default)]
    pub processes: Option<u32>,
    /// The largest request body accepted, in bytes. Default 6 MiB (as AWS Lambda).
    pub max_body: u64,
    /// How long a deploy's build (dependencies and the `build` command) may run. Default 10 min.
    #[serde(with = "duration_text", default = "default_build_timeout")]
    pub build_timeout: Duration,
}

fn default_build_timeout() -> Duration {
    Duration::from_secs(600)
}

/// How many instances run and how calls wait for them. The scaling knobs are Knative's
/// KPA (`autoscaling.knative.dev/*`) with its defaults.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ScalePolicy {
    /// Calls one instance serves at once (Knative's `containerConcurrency`). Default 1,
    /// or 32 for runtimes that serve concurrently by nature (`node`, `java`, `exec` over
    /// `http`).
    pub concurrency: u32,
    /// Concurrency per instance the autoscaler aims for, before `target_utilization`.
    /// Default: `concurrency`. (0 in specs stored before it existed, read as `concurrency`.)
    #[serde(default)]
    pub target: u32,
    /// Percent of `target` to aim for, leaving room for bursts. Default 70.
    #[serde(default = "defaults::utilization")]
    pub target_utilization: u32,
    /// Instances kept even when idle. Default 0 (scale to zero).
    pub min: u32,
    /// Instances at most. Default 10.
    pub max: u32,
    /// Instances a new revision starts with and keeps for one stable window. Default 1.
    #[serde(default = "defaults::initial")]
    pub initial: u32,
    /// The window the steady instance count averages over. Default 60 s.
    #[serde(with = "duration_text", default = "defaults::stable_window")]
    pub stable_window: Duration,
    /// The burst window, as a percentage of the stable window. Default 10 (6 s).
    #[serde(default = "defaults::panic_window")]
    pub panic_window_percentage: u32,
    /// Burst demand, as a percentage of the instances ready, that starts panic mode
    /// (no scale-down until a stable window passes below it). Default 200.
    #[serde(default = "defaults::panic_threshold")]
    pub panic_threshold_percentage: u32,
    /// At most this many times the ready instances per decision. Default 1000.
    #[serde(default = "defaults::up_rate")]
    pub max_scale_up_rate: u32,
    /// At least the ready instances divided by this per decision. Default 2.
    #[serde(default = "defaults::down_rate")]
    pub max_scale_down_rate: u32,
    /// A scale-down waits until it has been wanted for this long. Default 0 s.
    #[serde(with = "duration_text", default = "defaults::zero")]
    pub scale_down_delay: Duration,
    /// How long the last instance stays once none is wanted. Default 30 s.
    #[serde(with = "duration_text", default = "defaults::grace")]
    pub scale_to_zero_grace: Duration,
    /// Calls that may wait for a free instance at once; more get 429. Default 100.
    pub queue_depth: u32,
    /// How long a call may wait for a free instance before it gets 429. Default 30 s.
    #[serde(with = "duration_text")]
    pub queue_timeout: Duration,
}

impl ScalePolicy {
    /// The autoscaler's target concurrency per instance.
    pub fn target(&self) -> u32 {
        if self.target == 0 { self.concurrency } else { self.target }
    }

    /// The burst window.
    pub fn panic_window(&self) -> Duration {
        self.stable_window * self.panic_window_percentage / 100
    }
}

/// Knative's KPA defaults (`config/core/configmaps/autoscaler.yaml`), for specs stored
/// before a knob existed and for manifests that leave it out.
mod defaults {
    use std::time::Duration;

    pub(super) fn utilization() -> u32 {
        70
    }
    pub(super) fn initial() -> u32 {
        1
    }
    pub(super) fn stable_window() -> Duration {
        Duration::from_secs(60)
    }
    pub(super) fn panic_window() -> u32 {
        10
    }
    pub(super) fn panic_threshold() -> u32 {
        200
    }
    pub(super) fn up_rate() -> u32 {
        1000
    }
    pub(super) fn down_rate() -> u32 {
        2
    }
    pub(super) fn zero() -> Duration {
        Duration::ZERO
    }
    pub(super) fn grace() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn delivery() -> super::DeliveryPolicy {
        super::DeliveryPolicy::defaults(10)
    }
}

/// A validated function: everything gust needs to run it, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FunctionSpec {
    /// The function's name.
    pub name: FunctionName,
    /// How instances are started.
    pub runtime: Runtime,
    /// What to run, in the runtime's terms (module.function, file, script, executable).
    pub handler: String,
    /// How the gateway speaks to instances.
    pub protocol: Protocol,
    /// Environment variables given to every instance.
    pub env: BTreeMap<String, String>,
    /// Per-call limits.
    pub limits: Limits,
    /// Scaling and queueing.
    pub scale: ScalePolicy,
    /// A shell command run at deploy in the function's directory; what the directory
    /// holds afterwards is the revision's code.
    #[serde(default)]
    pub build: Option<String>,
    /// Extra HTTP routes leading to the function, besides `/function/NAME`.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// How async calls are delivered (`[async]`); specs stored before it existed read
    /// with the defaults for `scale.max` 10.
    #[serde(default = "defaults::delivery", rename = "async")]
    pub delivery: DeliveryPolicy,
    /// CloudEvents filters that deliver events to it (`[[triggers]]`).
    #[serde(default)]
    pub triggers: Vec<TriggerSpec>,
    /// A topic it consumes: each message is a call, in order within a partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// A topic its results (of calls from `input`) are appended to, so functions chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Who may call it over HTTP: anyone (the default), or only callers with the
    /// server's token (`auth = "token"`).
    #[serde(default)]
    pub auth: FunctionAuth,
    /// Whether its instances may use TCP (`network = "none"`: no listening, no connecting,
    /// enforced with isolation `basic`).
    #[serde(default, skip_serializing_if = "Network::is_full")]
    pub network: Network,
    /// Secrets (by name, see `gust secret create`) its instances may read, as files
    /// named after them in `$GUST_SECRETS`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Environment variables set to a listed secret's value: variable → secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
}

/// What network a function's instances get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Whatever the host gives gust.
    #[default]
    Full,
    /// No TCP: binding and connecting are refused (a Lambda client still reaches its own
    /// Runtime API).
    None,
}

impl Network {
    fn is_full(&self) -> bool {
        *self == Network::Full
    }
}

/// Who may call a function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionAuth {
    /// Anyone who can reach the gateway (OpenFaaS and Knative functions are public too).
    #[default]
    None,
    /// Only callers sending the server's token (`Authorization: Bearer …`).
    Token,
}

/// Entry point for `gust.toml` text.
#[derive(Debug)]
pub struct Manifest;

impl Manifest {
    /// The name of the manifest file in a function directory.
    pub const FILE_NAME: &'static str = "gust.toml";

    /// Parses and validates a manifest.
    ///
    /// # Errors
    /// [`Error::InvalidManifest`] listing every problem found, each with its field.
    pub fn parse(text: &str) -> Result<FunctionSpec> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::InvalidManifest {
            problems: vec![Problem { field: String::new(), message: format!("not valid TOML: {}", e.message()) }],
        })?;
        let mut f = Fields::new("", table);
        let name = f.string("name", true).and_then(|n| match FunctionName::new(&n) {
            Ok(n) => Some(n),
            Err(Error::InvalidName { reason, .. }) => {
                f.problem("name", format!("`{n}` is not a valid name: {reason}"));
                None
            }
            Err(e) => {
                f.problem("name", e.to_string());
                None
            }
        });
        let runtime = f.string("runtime", true).and_then(|r| {
            let parsed = Runtime::parse(&r);
            if parsed.is_none() {
                let all: Vec<_> = Runtime::ALL.iter().map(|r| r.as_str()).collect();
                f.problem("runtime", format!("unknown runtime `{r}`; expected one of: {}", all.join(", ")));
            }
            parsed
        });
        let handler = f.string("handler", false);
        let protocol = f.string("protocol", false);
        let env = f.env();
        let build = f.string("build", false).filter(|b| {
            let ok = !b.trim().is_empty() && !b.contains('\0');
            if !ok {
                f.problem("build", "must be a non-empty shell command, e.g. \"make\"".to_owned());
            }
            ok
        });
        let network = match f.string("network", false).as_deref() {
            None | Some("full") => Some(Network::Full),
            Some("none") => Some(Network::None),
            Some(other) => {
                f.problem("network", format!("unknown `{other}`; expected \"full\" or \"none\""));
                None
            }
        };
        let auth = match f.string("auth", false).as_deref() {
            None | Some("none") => Some(FunctionAuth::None),
            Some("token") => Some(FunctionAuth::Token),
            Some(other) => {
                f.problem("auth", format!("unknown `{other}`; expected \"none\" or \"token\""));
                None
            }
        };
        let secrets = f.strings("secrets").and_then(|names| {
            let mut ok = true;
            for (i, n) in names.iter().enumerate() {
                if FunctionName::new(n).is_err() {
                    f.problem("secrets", format!("`{n}` is not a valid secret name (lowercase letters, digits, `-`)"));
                    ok = false;
                } else if names[..i].contains(n) {
                    f.problem("secrets", format!("`{n}` is listed twice"));
                    ok = false;
                }
            }
            ok.then_some(names)
        });
        let secret_env = f.env_table("secret_env").and_then(|env| {
            let listed = secrets.clone().unwrap_or_default();
            let mut ok = true;
            for (var, name) in &env {
                if !listed.contains(name) {
                    f.problem(
                        &format!("secret_env.{var}"),
                        format!("names secret `{name}`, which is not in `secrets`"),
                    );
                    ok = false;
                }
            }
            ok.then_some(env)
        });
        let routes = routes(&mut f);
        let mut topic = |key: &str| match f.string(key, false) {
            None => Some(None),
            Some(t) => match FunctionName::new(&t) {
                Ok(_) => Some(Some(t)),
                Err(e) => {
                    f.problem(key, format!("is not a valid topic name: {e}"));
                    None
                }
            },
        };
        let input = topic("input");
        let output = topic("output");
        let triggers = triggers::parse(&mut f);
        let limits_table = f.table("limits");
        let scale_table = f.table("scale");
        let async_table = f.table("async");
        let mut problems = f.finish();

        let mut lf = Fields::new("limits.", limits_table);
        let timeout = lf.duration("timeout", Duration::from_secs(60)).filter(|d| {
            lf.check(
                *d >= Duration::from_millis(100) && *d <= Duration::from_secs(3600),
                "timeout",
                "must be between 100ms and 1h",
            )
        });
        let memory = lf.bytes("memory");
        if let Some(m) = memory {
            lf.check(m >= 16 << 20, "memory", "must be at least 16Mi");
        }
        let cpu = lf.cpu("cpu");
        let processes = lf.optional_int("processes", 8, 1 << 20);
        let max_body = lf
            .bytes("max_body")
            .or(Some(6 << 20))
            .filter(|b| lf.check(*b >= 1 && *b <= 1 << 30, "max_body", "must be between 1 and 1Gi"));
        let build_timeout = lf.duration("build_timeout", default_build_timeout()).filter(|d| {
            lf.check(
                *d >= Duration::from_secs(1) && *d <= Duration::from_secs(7200),
                "build_timeout",
                "must be between 1s and 2h",
            )
        });
        problems.extend(lf.finish());

        let protocol = match (runtime, protocol.as_deref()) {
            (Some(Runtime::Exec), None) => Some(Protocol::Stdio),
            (Some(Runtime::Exec), Some("stdio")) => Some(Protocol::Stdio),
            (Some(Runtime::Exec), Some("http")) => Some(Protocol::Http),
            (Some(Runtime::Exec), Some(other)) => {
                problems.push(problem("protocol", format!("unknown protocol `{other}`; expected `http` or `stdio`")));
                None
            }
            (Some(r), Some(p)) => {
                problems
                    .push(problem("protocol", format!("`{p}` is for the `exec` runtime only; `{r}` chooses its own")));
                None
            }
            (Some(Runtime::Shell), None) => Some(Protocol::Stdio),
            (Some(r), None) if r.is_lambda() => Some(Protocol::Lambda),
            (Some(_), None) => Some(Protocol::Http),
            (None, _) => None,
        };
        let handler = match (runtime, handler) {
            (Some(r), Some(h)) => {
                check_handler(r, &h).map_err(|m| problems.push(problem("handler", m))).ok().map(|()| h)
            }
            (Some(r), None) => match r.default_handler() {
                Some(h) => Some(h.to_owned()),
                None => {
                    problems.push(problem(
                        "handler",
                        match r {
                            Runtime::Java => "is required for the `java` runtime: the class implementing \
                                              java.util.function.Function, e.g. \"functions.Hello\""
                                .to_owned(),
                            _ => format!("is required for the `{r}` runtime: the executable to run, e.g. \"./server\""),
                        },
                    ));
                    None
                }
            },
            (None, _) => None,
        };

        let default_concurrency = match (runtime, protocol) {
            (Some(Runtime::Node | Runtime::Java), _) | (Some(Runtime::Exec), Some(Protocol::Http)) => 32,
            _ => 1,
        };
        let mut sf = Fields::new("scale.", scale_table);
        let concurrency = sf.int("concurrency", default_concurrency, 1, 1000);
        let min = sf.int("min", 0, 0, 1000);
        let max = sf.int("max", 10, 1, 1000);
        if let (Some(min), Some(max)) = (min, max) {
            sf.check(min <= max, "min", "must not be larger than scale.max");
        }
        let target = sf.int("target", concurrency.unwrap_or(1), 1, 1000);
        let target_utilization = sf.int("target_utilization", defaults::utilization(), 1, 100);
        let initial = sf.int("initial", defaults::initial(), 0, 1000);
        if let (Some(initial), Some(max)) = (initial, max) {
            sf.check(initial <= max, "initial", "must not be larger than scale.max");
        }
        let hour = Duration::from_secs(3600);
        let stable_window = sf.duration("stable_window", defaults::stable_window()).filter(|d| {
            sf.check(*d >= Duration::from_secs(1) && *d <= hour, "stable_window", "must be between 1s and 1h")
        });
        let panic_window_percentage = sf.int("panic_window_percentage", defaults::panic_window(), 1, 100);
        let panic_threshold_percentage = sf.int("panic_threshold_percentage", defaults::panic_threshold(), 110, 1000);
        let max_scale_up_rate = sf.int("max_scale_up_rate", defaults::up_rate(), 2, 100_000);
        let max_scale_down_rate = sf.int("max_scale_down_rate", defaults::down_rate(), 2, 1000);
        let scale_down_delay = sf
            .duration("scale_down_delay", defaults::zero())
            .filter(|d| sf.check(*d <= hour, "scale_down_delay", "must be at most 1h"));
        let scale_to_zero_grace = sf
            .duration("scale_to_zero_grace", defaults::grace())
            .filter(|d| sf.check(*d <= hour, "scale_to_zero_grace", "must be at most 1h"));
        if sf.table.remove("idle_timeout").is_some() {
            sf.problem(
                "idle_timeout",
                "was replaced by Knative's scaling knobs: an instance is stopped when the autoscaler no longer \
                 needs it, and the last one scale.stable_window + scale.scale_to_zero_grace after the last call"
                    .to_owned(),
            );
        }
        let queue_depth = sf.int("queue_depth", 100, 0, 100_000);
        let queue_timeout = sf
            .duration("queue_timeout", Duration::from_secs(30))
            .filter(|d| sf.check(*d <= Duration::from_secs(3600), "queue_timeout", "must be at most 1h"));
        problems.extend(sf.finish());
        let (delivery, delivery_problems) = delivery::parse(async_table, max.unwrap_or(10));
        problems.extend(delivery_problems);

        if !problems.is_empty() {
            return Err(Error::InvalidManifest { problems });
        }
        // Every `None` recorded a problem, so with none recorded all are `Some`; should a
        // check forget to record one, say so rather than panic.
        let spec = (|| {
            Some(FunctionSpec {
                name: name?,
                runtime: runtime?,
                handler: handler?,
                protocol: protocol?,
                env: env?,
                limits: Limits {
                    timeout: timeout?,
                    memory,
                    cpu: cpu?,
                    processes: processes?,
                    max_body: max_body?,
                    build_timeout: build_timeout?,
                },
                scale: ScalePolicy {
                    concurrency: concurrency?,
                    min: min?,
                    max: max?,
                    target: target?,
                    target_utilization: target_utilization?,
                    initial: initial?,
                    stable_window: stable_window?,
                    panic_window_percentage: panic_window_percentage?,
                    panic_threshold_percentage: panic_threshold_percentage?,
                    max_scale_up_rate: max_scale_up_rate?,
                    max_scale_down_rate: max_scale_down_rate?,
                    scale_down_delay: scale_down_delay?,
                    scale_to_zero_grace: scale_to_zero_grace?,
                    queue_depth: queue_depth?,
                    queue_timeout: queue_timeout?,
                },
                build,
                routes: routes?,
                delivery: delivery?,
                triggers: triggers?,
                input: input?,
                output: output?,
                auth: auth?,
                network: network?,
                secrets: secrets?,
                secret_env: secret_env?,
            })
        })();
        spec.ok_or_else(|| Error::InvalidManifest { problems: vec![problem("", "manifest is incomplete".to_owned())] })
    }
}

/// `[[routes]]`: each a table with `path` and an optional `method` (default any).
fn routes(f: &mut Fields) -> Option<Vec<RouteSpec>> {
    let items = match f.table.remove("routes") {
        None => return Some(Vec::new()),
        Some(toml::Value::Array(items)) => items,
        Some(other) => {
            f.problem("routes", format!("must be an array of tables ([[routes]]), not {}", other.type_str()));
            return None;
        }
    };
    let mut out: Vec<RouteSpec> = Vec::new();
    let mut ok = true;
    for (i, item) in items.into_iter().enumerate() {
        let field = |k: &str| format!("routes[{i}].{k}");
        let toml::Value::Table(mut t) = item else {
            f.problems.push(problem(&format!("routes[{i}]"), "must be a table with `path` and `method`".to_owned()));
            ok = false;
            continue;
        };
        let method = match t.remove("method") {
            None => Some(RouteMethod::ANY),
            Some(toml::Value::String(m)) => {
                RouteMethod::parse(&m).map_err(|e| f.problems.push(problem(&field("method"), e))).ok()
            }
            Some(other) => {
                f.problems.push(problem(&field("method"), format!("must be a string, not {}", other.type_str())));
                None
            }
        };
        let path = match t.remove("path") {
            None => {
                f.problems.push(problem(&field("path"), "is required, e.g. \"/users/{id}\"".to_owned()));
                None
            }
            Some(toml::Value::String(p)) => {
                RoutePattern::parse(&p).map_err(|e| f.problems.push(problem(&field("path"), e))).ok()
            }
            Some(other) => {
                f.problems.push(problem(&field("path"), format!("must be a string, not {}", other.type_str())));
                None
            }
        };
        for key in t.keys() {
            f.problems.push(problem(&field(key), "is not a known field".to_owned()));
            ok = false;
        }
        match (method, path) {
            (Some(method), Some(path)) => {
                let route = RouteSpec { method, path };
                if let Some(prior) = out.iter().find(|r| r.conflicts_with(&route)) {
                    f.problems.push(problem(&format!("routes[{i}]"), format!("`{route}` conflicts with `{prior}`")));
                    ok = false;
                }
                out.push(route);
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

impl FunctionSpec {
    /// The spec as `gust.toml` text, with every default written out.
    pub fn to_toml(&self) -> String {
        let mut out = format!(
            "name = \"{}\"\nruntime = \"{}\"\nhandler = {}\n",
            self.name,
            self.runtime,
            toml_str(&self.handler)
        );
        if self.runtime == Runtime::Exec {
            out.push_str(&format!("protocol = \"{}\"\n", self.protocol.as_str()));
        }
        if self.auth == FunctionAuth::Token {
            out.push_str("auth = \"token\"\n");
        }
        if self.network == Network::None {
            out.push_str("network = \"none\"\n");
        }
        if !self.secrets.is_empty() {
            let names: Vec<String> = self.secrets.iter().map(|s| toml_str(s)).collect();
            out.push_str(&format!("secrets = [{}]\n", names.join(", ")));
        }
        if let Some(b) = &self.build {
            out.push_str(&format!("build = {}\n", toml_str(b)));
        }
        for (key, topic) in [("input", &self.input), ("output", &self.output)] {
            if let Some(t) = topic {
                out.push_str(&format!("{key} = {}\n", toml_str(t)));
            }
        }
        if !self.env.is_empty() {
            out.push_str("\n[env]\n");
            for (k, v) in &self.env {
                out.push_str(&format!("{k} = {}\n", toml_str(v)));
            }
        }
        if !self.secret_env.is_empty() {
            out.push_str("\n[secret_env]\n");
            for (k, v) in &self.secret_env {
                out.push_str(&format!("{k} = {}\n", toml_str(v)));
            }
        }
        out.push_str(&format!("\n[limits]\ntimeout = \"{}\"\n", format_duration(self.limits.timeout)));
        if let Some(m) = self.limits.memory {
            out.push_str(&format!("memory = \"{}\"\n", format_bytes(m)));
        }
        if let Some(c) = self.limits.cpu {
            out.push_str(&format!("cpu = \"{c}m\"\n"));
        }
        if let Some(p) = self.limits.processes {
            out.push_str(&format!("processes = {p}\n"));
        }
        out.push_str(&format!("max_body = \"{}\"\n", format_bytes(self.limits.max_body)));
        out.push_str(&format!("build_timeout = \"{}\"\n", format_duration(self.limits.build_timeout)));
        let s = &self.scale;
        out.push_str(&format!(
            "\n[scale]\nconcurrency = {}\ntarget = {}\ntarget_utilization = {}\nmin = {}\nmax = {}\ninitial = {}\n",
            s.concurrency,
            s.target(),
            s.target_utilization,
            s.min,
            s.max,
            s.initial
        ));
        out.push_str(&format!(
            "stable_window = \"{}\"\npanic_window_percentage = {}\npanic_threshold_percentage = {}\n",
            format_duration(s.stable_window),
            s.panic_window_percentage,
            s.panic_threshold_percentage
        ));
        out.push_str(&format!(
            "max_scale_up_rate = {}\nmax_scale_down_rate = {}\nscale_down_delay = \"{}\"\nscale_to_zero_grace = \"{}\"\n",
            s.max_scale_up_rate,
            s.max_scale_down_rate,
            format_duration(s.scale_down_delay),
            format_duration(s.scale_to_zero_grace)
        ));
        out.push_str(&format!(
            "queue_depth = {}\nqueue_timeout = \"{}\"\n",
            s.queue_depth,
            format_duration(s.queue_timeout)
        ));
        out.push_str(&self.delivery.to_toml());
        for r in &self.routes {
            out.push_str(&format!("\n[[routes]]\nmethod = \"{}\"\npath = {}\n", r.method, toml_str(r.path.as_str())));
        }
        for t in &self.triggers {
            out.push_str("\n[[triggers]]\n");
            if let Some(expr) = &t.schedule {
                out.push_str(&format!("schedule = {}\n", toml_str(expr)));
            }
            if let Some(tz) = &t.timezone {
                out.push_str(&format!("timezone = {}\n", toml_str(tz)));
            }
            for (key, conditions) in
                [("exact", &t.filter.exact), ("prefix", &t.filter.prefix), ("suffix", &t.filter.suffix)]
            {
                if !conditions.is_empty() {
                    let parts: Vec<String> = conditions.iter().map(|(k, v)| format!("{k} = {}", toml_str(v))).collect();
                    out.push_str(&format!("{key} = {{ {} }}\n", parts.join(", ")));
                }
            }
        }
        out
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn problem(field: &str, message: String) -> Problem {
    Problem { field: field.to_owned(), message }
}

/// Checks a handler's shape for its runtime; whether the file exists is checked once the
/// code is unpacked.
fn check_handler(runtime: Runtime, handler: &str) -> std::result::Result<(), String> {
    let path_ok =
        |h: &str| !h.is_empty() && !h.starts_with('/') && !h.split('/').any(|c| c == "..") && !h.contains('\0');
    match runtime {
        Runtime::Python => {
            let ident = |s: &str| {
                !s.is_empty()
                    && !s.as_bytes()[0].is_ascii_digit()
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            };
            match handler.rsplit_once('.') {
                Some((module, func)) if module.split('.').all(ident) && ident(func) => Ok(()),
                _ => Err(format!("`{handler}` must be `module.function`, e.g. \"handler.handle\"")),
            }
        }
        Runtime::Java => {
            let ident = |s: &str| {
                !s.is_empty()
                    && !s.as_bytes()[0].is_ascii_digit()
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
            };
            if handler.split('.').all(ident) {
                Ok(())
            } else {
                Err(format!("`{handler}` must be a class name, e.g. \"functions.Hello\""))
            }
        }
        Runtime::LambdaPython => {
            // AWS splits at the last dot; the module may be a path (`src/app.handler`).
            let ident = |s: &str| {
                !s.is_empty()
                    && !s.as_bytes()[0].is_ascii_digit()
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            };
            match handler.rsplit_once('.') {
                Some((module, func)) if module.split(['.', '/']).all(ident) && ident(func) => Ok(()),
                _ => Err(format!("`{handler}` must be `module.function`, e.g. \"lambda_function.lambda_handler\"")),
            }
        }
        Runtime::LambdaNode => match node_handler_file(handler) {
            Some((file, export)) if path_ok(file) && !export.is_empty() && !export.contains('/') => Ok(()),
            _ => Err(format!("`{handler}` must be `file.export`, e.g. \"index.handler\"")),
        },
        Runtime::Lambda => {
            if handler.is_empty() || handler.len() > 256 || handler.chars().any(char::is_control) {
                Err("must be 1–256 printable characters; it reaches `bootstrap` as `_HANDLER`".to_owned())
            } else {
                Ok(())
            }
        }
        Runtime::Node | Runtime::Shell | Runtime::Exec => {
            if path_ok(handler) {
                Ok(())
            } else {
                Err(format!("`{handler}` must be a relative path inside the function directory"))
            }
        }
    }
}

/// A `lambda-node` handler's module path and export, split as AWS splits them: at the
/// first dot of the last path segment (`src/app.nested.fn` is `src/app`, `nested.fn`).
pub fn node_handler_file(handler: &str) -> Option<(&str, &str)> {
    let segment = handler.rfind('/').map_or(0, |i| i + 1);
    let dot = segment + handler[segment..].find('.')?;
    Some((&handler[..dot], &handler[dot + 1..]))
}

mod delivery;
mod fields;
mod triggers;

#[cfg(test)]
mod tests;
