//! `gust.toml`: the manifest a function directory carries, and its validation into a
//! [`FunctionSpec`].
//!
//! Validation walks the TOML table by hand instead of deriving `Deserialize` so that it
//! can report *every* problem at once, each with its dotted field name, and so that an
//! unknown key is an error that names the key (a typo must not be silently ignored).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::route::RouteSpec;
use crate::{FunctionName, Problem};

pub use delivery::{Backoff, DeliveryPolicy};
use fields::duration_text;
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

fn problem(field: &str, message: String) -> Problem {
    Problem { field: field.to_owned(), message }
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
mod parse;
mod to_toml;
mod triggers;

#[cfg(test)]
mod tests;
