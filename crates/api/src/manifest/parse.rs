//! [`Manifest::parse`]: a `gust.toml` table walked field by field into a
//! [`FunctionSpec`], every problem collected with its dotted field name.

use std::time::Duration;

use super::fields::Fields;
use super::{
    FunctionAuth, FunctionSpec, Limits, Manifest, Network, Protocol, Runtime, ScalePolicy, default_build_timeout,
    defaults, delivery, node_handler_file, problem, triggers,
};
use crate::route::{RouteMethod, RoutePattern, RouteSpec};
use crate::{Error, FunctionName, Problem, Result};

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

/// Checks a handler's shape for its runtime; whether the file exists is checked once the
/// code is unpacked.
fn check_handler(runtime: Runtime, handler: &str) -> std::result::Result<(), String> {
    let path_ok =
        |h: &str| !h.is_empty() && !h.starts_with('/') && !h.split('/').any(|c| c == "..") && !h.contains('\0');
    match runtime {
        Runtime::Python => {
            let ident = |s: &str| identifier(s, b"");
            match handler.rsplit_once('.') {
                Some((module, func)) if module.split('.').all(ident) && ident(func) => Ok(()),
                _ => Err(format!("`{handler}` must be `module.function`, e.g. \"handler.handle\"")),
            }
        }
        Runtime::Java => {
            if handler.split('.').all(|s| identifier(s, b"$")) {
                Ok(())
            } else {
                Err(format!("`{handler}` must be a class name, e.g. \"functions.Hello\""))
            }
        }
        Runtime::LambdaPython => {
            // AWS splits at the last dot; the module may be a path (`src/app.handler`).
            let ident = |s: &str| identifier(s, b"");
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

/// An ASCII identifier as Python and Java spell one: letters, digits, `_` and the bytes
/// of `extra` (Java's `$`), not starting with a digit.
fn identifier(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || extra.contains(&b))
}
