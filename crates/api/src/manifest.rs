//! `gust.toml`: the manifest a function directory carries, and its validation into a
//! [`FunctionSpec`].
//!
//! Validation walks the TOML table by hand instead of deriving `Deserialize` so that it
//! can report *every* problem at once, each with its dotted field name, and so that an
//! unknown key is an error that names the key (a typo must not be silently ignored).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::quantity::{format_bytes, format_duration, parse_bytes, parse_duration};
use crate::{Error, FunctionName, Problem, Result};

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
}

impl Runtime {
    /// Every runtime this build supports, as written in manifests.
    pub const ALL: [Runtime; 4] = [Runtime::Python, Runtime::Node, Runtime::Shell, Runtime::Exec];

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Node => "node",
            Runtime::Shell => "shell",
            Runtime::Exec => "exec",
        }
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
            Runtime::Exec => None,
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
}

impl Protocol {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Stdio => "stdio",
        }
    }
}

/// Per-call limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// One call, from arrival to the last byte of the response. Default 60 s.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Memory an instance may use, in bytes; enforced where the host's isolation allows.
    pub memory: Option<u64>,
    /// The largest request body accepted, in bytes. Default 6 MiB (as AWS Lambda).
    pub max_body: u64,
}

/// How many instances run and how calls wait for them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ScalePolicy {
    /// Calls one instance serves at once. Default 1, or 32 for runtimes that serve
    /// concurrently by nature (`node`, `exec` over `http`).
    pub concurrency: u32,
    /// Instances kept even when idle. Default 0 (scale to zero).
    pub min: u32,
    /// Instances at most. Default 10.
    pub max: u32,
    /// An instance idle this long is stopped. Default 30 s, at least 1 s.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Calls that may wait for a free instance at once; more get 429. Default 100.
    pub queue_depth: u32,
    /// How long a call may wait for a free instance before it gets 429. Default 30 s.
    #[serde(with = "duration_text")]
    pub queue_timeout: Duration,
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
}

/// Entry point for `gust.toml` text.
#[derive(Debug)]
pub struct Manifest;

/// Keys of the manifest that belong to later work; naming them is an error that says so
/// rather than a silent no-op.
const NOT_YET: [&str; 5] = ["build", "input", "output", "routes", "triggers"];

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
        for key in NOT_YET {
            if f.table.remove(key).is_some() {
                f.problem(key, "is not supported by this version of gust yet".to_owned());
            }
        }
        let limits_table = f.table("limits");
        let scale_table = f.table("scale");
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
        let max_body = lf
            .bytes("max_body")
            .or(Some(6 << 20))
            .filter(|b| lf.check(*b >= 1 && *b <= 1 << 30, "max_body", "must be between 1 and 1Gi"));
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
                        format!("is required for the `{r}` runtime: the executable to run, e.g. \"./server\""),
                    ));
                    None
                }
            },
            (None, _) => None,
        };

        let default_concurrency = match (runtime, protocol) {
            (Some(Runtime::Node), _) | (Some(Runtime::Exec), Some(Protocol::Http)) => 32,
            _ => 1,
        };
        let mut sf = Fields::new("scale.", scale_table);
        let concurrency = sf.int("concurrency", default_concurrency, 1, 1000);
        let min = sf.int("min", 0, 0, 1000);
        let max = sf.int("max", 10, 1, 1000);
        if let (Some(min), Some(max)) = (min, max) {
            sf.check(min <= max, "min", "must not be larger than scale.max");
        }
        let idle_timeout = sf
            .duration("idle_timeout", Duration::from_secs(30))
            .filter(|d| sf.check(*d >= Duration::from_secs(1), "idle_timeout", "must be at least 1s"));
        let queue_depth = sf.int("queue_depth", 100, 0, 100_000);
        let queue_timeout = sf
            .duration("queue_timeout", Duration::from_secs(30))
            .filter(|d| sf.check(*d <= Duration::from_secs(3600), "queue_timeout", "must be at most 1h"));
        problems.extend(sf.finish());

        if !problems.is_empty() {
            return Err(Error::InvalidManifest { problems });
        }
        match (
            name,
            runtime,
            handler,
            protocol,
            env,
            timeout,
            max_body,
            concurrency,
            min,
            max,
            idle_timeout,
            queue_depth,
            queue_timeout,
        ) {
            (
                Some(name),
                Some(runtime),
                Some(handler),
                Some(protocol),
                Some(env),
                Some(timeout),
                Some(max_body),
                Some(concurrency),
                Some(min),
                Some(max),
                Some(idle_timeout),
                Some(queue_depth),
                Some(queue_timeout),
            ) => Ok(FunctionSpec {
                name,
                runtime,
                handler,
                protocol,
                env,
                limits: Limits { timeout, memory, max_body },
                scale: ScalePolicy { concurrency, min, max, idle_timeout, queue_depth, queue_timeout },
            }),
            // Every `None` above recorded a problem, so this arm is only reached if a
            // check forgot to: say so rather than panic.
            _ => Err(Error::InvalidManifest { problems: vec![problem("", "manifest is incomplete".to_owned())] }),
        }
    }
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
        if !self.env.is_empty() {
            out.push_str("\n[env]\n");
            for (k, v) in &self.env {
                out.push_str(&format!("{k} = {}\n", toml_str(v)));
            }
        }
        out.push_str(&format!("\n[limits]\ntimeout = \"{}\"\n", format_duration(self.limits.timeout)));
        if let Some(m) = self.limits.memory {
            out.push_str(&format!("memory = \"{}\"\n", format_bytes(m)));
        }
        out.push_str(&format!("max_body = \"{}\"\n", format_bytes(self.limits.max_body)));
        let s = &self.scale;
        out.push_str(&format!(
            "\n[scale]\nconcurrency = {}\nmin = {}\nmax = {}\nidle_timeout = \"{}\"\nqueue_depth = {}\nqueue_timeout = \"{}\"\n",
            s.concurrency,
            s.min,
            s.max,
            format_duration(s.idle_timeout),
            s.queue_depth,
            format_duration(s.queue_timeout)
        ));
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
        Runtime::Node | Runtime::Shell | Runtime::Exec => {
            if path_ok(handler) {
                Ok(())
            } else {
                Err(format!("`{handler}` must be a relative path inside the function directory"))
            }
        }
    }
}

/// Takes typed fields out of one TOML table, recording problems under a dotted prefix;
/// whatever is left at the end is reported as unknown.
struct Fields {
    prefix: &'static str,
    table: toml::Table,
    problems: Vec<Problem>,
}

impl Fields {
    fn new(prefix: &'static str, table: toml::Table) -> Self {
        Self { prefix, table, problems: Vec::new() }
    }

    fn problem(&mut self, key: &str, message: String) {
        self.problems.push(problem(&format!("{}{key}", self.prefix), message));
    }

    /// Records `message` against `key` unless `ok`; returns `ok`.
    fn check(&mut self, ok: bool, key: &str, message: &str) -> bool {
        if !ok {
            self.problem(key, message.to_owned());
        }
        ok
    }

    fn string(&mut self, key: &str, required: bool) -> Option<String> {
        match self.table.remove(key) {
            Some(toml::Value::String(s)) => Some(s),
            Some(other) => {
                self.problem(key, format!("must be a string, not {}", other.type_str()));
                None
            }
            None => {
                if required {
                    self.problem(key, "is required".to_owned());
                }
                None
            }
        }
    }

    fn int(&mut self, key: &str, default: u32, min: u32, max: u32) -> Option<u32> {
        match self.table.remove(key) {
            None => Some(default),
            Some(toml::Value::Integer(i)) if i >= i64::from(min) && i <= i64::from(max) => u32::try_from(i).ok(),
            Some(toml::Value::Integer(_)) => {
                self.problem(key, format!("must be between {min} and {max}"));
                None
            }
            Some(other) => {
                self.problem(key, format!("must be an integer, not {}", other.type_str()));
                None
            }
        }
    }

    fn duration(&mut self, key: &str, default: Duration) -> Option<Duration> {
        match self.string_or_missing(key, "a duration such as \"30s\"")? {
            None => Some(default),
            Some(s) => parse_duration(&s).map_err(|m| self.problem(key, m)).ok(),
        }
    }

    fn bytes(&mut self, key: &str) -> Option<u64> {
        match self.table.remove(key) {
            None => None,
            Some(toml::Value::Integer(i)) => {
                u64::try_from(i).map_err(|_| self.problem(key, "must not be negative".to_owned())).ok()
            }
            Some(toml::Value::String(s)) => parse_bytes(&s).map_err(|m| self.problem(key, m)).ok(),
            Some(other) => {
                self.problem(key, format!("must be a size such as \"6Mi\", not {}", other.type_str()));
                None
            }
        }
    }

    /// `Some(None)` when absent, `Some(Some(s))` for a string, `None` after a problem.
    fn string_or_missing(&mut self, key: &str, what: &str) -> Option<Option<String>> {
        match self.table.remove(key) {
            None => Some(None),
            Some(toml::Value::String(s)) => Some(Some(s)),
            Some(other) => {
                self.problem(key, format!("must be {what}, not {}", other.type_str()));
                None
            }
        }
    }

    fn table(&mut self, key: &str) -> toml::Table {
        match self.table.remove(key) {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                self.problem(key, format!("must be a table, not {}", other.type_str()));
                toml::Table::new()
            }
        }
    }

    fn env(&mut self) -> Option<BTreeMap<String, String>> {
        let table = self.table("env");
        let mut env = BTreeMap::new();
        let mut ok = true;
        for (k, v) in table {
            let field = format!("env.{k}");
            let valid_key = !k.is_empty()
                && !k.as_bytes()[0].is_ascii_digit()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid_key {
                self.problems.push(problem(
                    &field,
                    "is not a valid variable name (letters, digits and `_`, not starting with a digit)".to_owned(),
                ));
                ok = false;
                continue;
            }
            if k.starts_with("GUST_") || k == "PATH" || k == "HOME" || k == "TMPDIR" {
                self.problems.push(problem(&field, "is set by gust and cannot be overridden".to_owned()));
                ok = false;
                continue;
            }
            let value = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    self.problems.push(problem(
                        &field,
                        format!("must be a string, number or boolean, not {}", other.type_str()),
                    ));
                    ok = false;
                    continue;
                }
            };
            if value.contains('\0') {
                self.problems.push(problem(&field, "must not contain a NUL byte".to_owned()));
                ok = false;
                continue;
            }
            env.insert(k, value);
        }
        ok.then_some(env)
    }

    fn finish(mut self) -> Vec<Problem> {
        let unknown: Vec<String> = self.table.keys().cloned().collect();
        for key in unknown {
            self.problem(&key, "is not a known field".to_owned());
        }
        self.problems
    }
}

/// Serde for durations as manifest text (`"30s"`), so stored specs stay readable.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::quantity::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
