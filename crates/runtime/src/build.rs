//! Deploy-time builds: installing a function's dependencies and running its manifest
//! `build` command, in the staged copy of its code, before it becomes a revision.
//!
//! [`plan`] decides what to run from the runtime and the files present
//! (`requirements.txt` → pip into `.gust/python`; `package.json` → `npm ci`/`npm install`
//! into `node_modules`; then `build = "…"` through `/bin/sh -c`) and derives the cache
//! key: the same source tree built the same way with the same toolchain gives the same
//! key, so [`run`] happens once per key and a redeploy reuses the stored output.
//!
//! A build runs like an instance, in its own process group with an environment gust
//! builds and rlimits, plus a deadline (`limits.build_timeout`) after which the whole
//! group is killed. Unlike an instance it sees the toolchain settings of gust's own
//! environment (`PATH`, `HOME`, `PIP_*`, `npm_config_*`, `CARGO_*`, `JAVA_HOME`, proxies
//! and CA bundles, …), since that is where users configure offline indexes and caches.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gust_api::{FunctionSpec, Runtime};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::interpreters::{Interpreters, which};
use crate::spawn::{self, Launch, SIGKILL};
use crate::{Error, Result};

/// Lines of output kept for the error of a failed build.
pub const TAIL_LINES: usize = 40;

/// Where Python dependencies are installed inside the code; the invoker puts it on `sys.path`.
pub const PYTHON_DEPS_DIR: &str = ".gust/python";

/// Bumped when what a build does changes, so old cache entries are not reused.
const RECIPE_VERSION: &str = "gust-build-1";

/// What a deploy's build will run, and its cache key.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The build cache key: source digest, steps and toolchain versions.
    pub key: String,
    /// Commands, run in order in the code directory.
    pub steps: Vec<Step>,
    /// The whole build's deadline.
    pub timeout: Duration,
}

/// One command of a build.
#[derive(Debug, Clone)]
pub struct Step {
    /// What the user sees, e.g. `pip install -r requirements.txt`.
    pub label: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

/// Progress of a build, streamed to the deploying client.
#[derive(Debug, Clone)]
pub enum Event {
    /// A step starts.
    Step(String),
    /// A line of a step's output.
    Line(String),
}

/// Decides what building `spec`'s code in `dir` takes; `None` when it needs no build.
///
/// # Errors
/// [`Error::RuntimeUnavailable`] when a step needs a tool gust cannot find (pip's
/// interpreter, npm).
pub fn plan(spec: &FunctionSpec, dir: &Path, source_digest: &str, interpreters: &Interpreters) -> Result<Option<Plan>> {
    let mut steps = Vec::new();
    let mut toolchain = String::new();
    if matches!(spec.runtime, Runtime::Python | Runtime::LambdaPython) && dir.join("requirements.txt").is_file() {
        let python = interpreters.python.require("python")?;
        toolchain.push_str(&format!("python {} {}\n", python.display(), interpreters.python.detail));
        steps.push(Step {
            label: "pip install -r requirements.txt".into(),
            program: python,
            args: [
                "-m",
                "pip",
                "install",
                "--no-input",
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "--no-compile",
                "--target",
                PYTHON_DEPS_DIR,
                "-r",
                "requirements.txt",
            ]
            .map(OsString::from)
            .to_vec(),
        });
    }
    if matches!(spec.runtime, Runtime::Node | Runtime::LambdaNode) && dir.join("package.json").is_file() {
        let node = interpreters.node.require("node")?;
        let npm = node
            .parent()
            .map(|d| d.join("npm"))
            .filter(|p| p.is_file())
            .or_else(|| which("npm", &std::env::var("PATH").unwrap_or_default()));
        let npm = npm.ok_or_else(|| Error::RuntimeUnavailable {
            runtime: "node".into(),
            detail: format!("npm is needed to install package.json dependencies; none next to {}", node.display()),
        })?;
        toolchain.push_str(&format!("node {} {}\n", node.display(), interpreters.node.detail));
        let locked = dir.join("package-lock.json").is_file() || dir.join("npm-shrinkwrap.json").is_file();
        let verb = if locked { "ci" } else { "install" };
        steps.push(Step {
            label: format!("npm {verb}"),
            program: npm,
            args: [verb, "--omit=dev", "--no-audit", "--no-fund", "--no-update-notifier"].map(OsString::from).to_vec(),
        });
    }
    if let Some(cmd) = &spec.build {
        steps.push(Step { label: cmd.clone(), program: PathBuf::from("/bin/sh"), args: vec!["-c".into(), cmd.into()] });
    }
    if steps.is_empty() {
        return Ok(None);
    }
    let mut h = Sha256::new();
    h.update(format!("{RECIPE_VERSION}\n{source_digest}\n{}\n{toolchain}", spec.runtime));
    for s in &steps {
        h.update(format!("{}\0{:?}\0{:?}\n", s.label, s.program, s.args));
    }
    let key = hex::encode(h.finalize());
    Ok(Some(Plan { key, steps, timeout: spec.limits.build_timeout }))
}

/// Runs `plan` in `dir`, sending progress to `events` (a closed receiver means the
/// client went away: the build is killed and the deploy abandoned).
///
/// # Errors
/// [`Error::BuildFailed`] with the failing step, the tail of its output and, when the
/// output says so, which package could not be fetched.
pub async fn run(function: &str, plan: &Plan, dir: &Path, events: &mpsc::Sender<Event>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + plan.timeout;
    let scratch = dir.with_extension("build-tmp");
    std::fs::create_dir_all(&scratch).map_err(Error::io("create build scratch directory", &scratch))?;
    let result = run_steps(function, plan, dir, &scratch, deadline, events).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn run_steps(
    function: &str,
    plan: &Plan,
    dir: &Path,
    scratch: &Path,
    deadline: tokio::time::Instant,
    events: &mpsc::Sender<Event>,
) -> Result<()> {
    let env = build_env(function, scratch);
    for step in &plan.steps {
        let _ = events.send(Event::Step(step.label.clone())).await;
        let launch = Launch {
            program: step.program.clone(),
            args: step.args.clone(),
            env: env.clone(),
            cwd: dir.to_path_buf(),
            listen_fd: None,
            stdin: false,
            sandbox: None,
            isolate: None,
            cpu_seconds: None,
        };
        let failed = |message: String, tail: Vec<String>| Error::BuildFailed {
            function: function.to_owned(),
            step: step.label.clone(),
            message,
            log_tail: tail,
        };
        let mut child = spawn::spawn(launch).map_err(|e| failed(format!("could not start: {e}"), Vec::new()))?;
        let pid = child.id().unwrap_or(0);
        let (line_tx, mut line_rx) = mpsc::channel::<String>(256);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(out, line_tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(err, line_tx.clone()));
        }
        drop(line_tx);
        let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::with_capacity(TAIL_LINES);
        let mut fetch: Option<String> = None;
        let mut client_gone = false;
        let outcome = loop {
            tokio::select! {
                line = line_rx.recv() => match line {
                    Some(line) => {
                        fetch = fetch.or_else(|| unfetchable(&line));
                        if tail.len() == TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line.clone());
                        if !client_gone && events.send(Event::Line(line)).await.is_err() {
                            client_gone = true;
                            spawn::signal_group(pid, SIGKILL);
                        }
                    }
                    // Both pipes closed: the step is ending; collect its status.
                    None => break tokio::time::timeout_at(deadline, child.wait()).await,
                },
                () = tokio::time::sleep_until(deadline) => {
                    break tokio::time::timeout_at(deadline, child.wait()).await;
                }
            }
        };
        let tail: Vec<String> = tail.into();
        match outcome {
            Ok(Ok(_)) if client_gone => {
                return Err(failed("the deploying client went away; build abandoned".into(), tail));
            }
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => {
                let message = match fetch {
                    Some(f) => format!("{f} ({} {})", step.label, crate::instance::describe_exit(status)),
                    None => format!("`{}` {}", step.label, crate::instance::describe_exit(status)),
                };
                return Err(failed(message, tail));
            }
            Ok(Err(e)) => return Err(failed(format!("could not wait for it: {e}"), tail)),
            Err(_) => {
                spawn::signal_group(pid, SIGKILL);
                let _ = child.wait().await;
                return Err(failed(
                    format!(
                        "the build did not finish within {} (limits.build_timeout)",
                        humantime::format_duration(plan.timeout)
                    ),
                    tail,
                ));
            }
        }
    }
    Ok(())
}

async fn forward_lines(pipe: impl AsyncRead + Unpin, tx: mpsc::Sender<String>) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if tx.send(line).await.is_err() {
            return;
        }
    }
}

/// Environment variables of gust's own that builds see: toolchains, package indexes and
/// caches, proxies and CA bundles. Everything else (and every `PYTHON*`, `NODE_OPTIONS`,
/// `GUST_*`) is left out so a build is reproducible from its inputs.
fn passes_through(name: &str) -> bool {
    const EXACT: [&str; 16] = [
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "JAVA_HOME",
        "CC",
        "CXX",
        "CFLAGS",
        "LDFLAGS",
        "MAKEFLAGS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GOPATH",
        "GOFLAGS",
    ];
    const PREFIXES: [&str; 8] =
        ["PIP_", "npm_config_", "NPM_CONFIG_", "CARGO_", "RUSTUP_", "GOPROXY", "GOCACHE", "UV_"];
    let proxy = name.eq_ignore_ascii_case("http_proxy")
        || name.eq_ignore_ascii_case("https_proxy")
        || name.eq_ignore_ascii_case("no_proxy");
    proxy || EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

fn build_env(function: &str, scratch: &Path) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = std::env::vars_os()
        .filter_map(|(k, v)| k.into_string().ok().filter(|k| passes_through(k)).map(|k| (k, v)))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    env.extend([
        ("LANG".to_owned(), OsString::from("C.UTF-8")),
        ("TMPDIR".to_owned(), scratch.as_os_str().to_owned()),
        ("GUST_FUNCTION".to_owned(), function.into()),
        ("GUST_BUILD".to_owned(), "1".into()),
    ]);
    // pip's advice to root about virtual environments does not apply: it installs into
    // the revision's own directory (`--target`, which PEP 668 markers also allow).
    if !env.iter().any(|(k, _)| k == "PIP_ROOT_USER_ACTION") {
        env.push(("PIP_ROOT_USER_ACTION".into(), "ignore".into()));
    }
    env
}

/// Recognises a package manager saying it could not fetch a package, and names it.
pub fn unfetchable(line: &str) -> Option<String> {
    let line = line.trim();
    if let Some(pkg) = line.strip_prefix("ERROR: No matching distribution found for ") {
        return Some(format!("could not fetch package `{}`: pip found no matching distribution", pkg.trim()));
    }
    if let Some(rest) = line.strip_prefix("ERROR: Could not find a version that satisfies the requirement ") {
        let pkg = rest.split(" (").next().unwrap_or(rest).trim();
        return Some(format!("could not fetch package `{pkg}`: pip found no version that satisfies it"));
    }
    let npm = line.strip_prefix("npm ERR! ").or_else(|| line.strip_prefix("npm error "))?;
    if let Some(rest) = npm.strip_prefix("404 Not Found - GET ") {
        let url = rest.split_whitespace().next().unwrap_or(rest);
        let pkg = url.rsplit('/').next().unwrap_or(url).replace("%2f", "/").replace("%2F", "/");
        return Some(format!("could not fetch package `{pkg}`: the npm registry has no such package"));
    }
    if npm.contains("request to ") && (npm.contains("only-if-cached") || npm.contains("ENOTCACHED")) {
        let url = npm.split("request to ").nth(1)?.split_whitespace().next()?;
        let pkg = url.rsplit('/').next().unwrap_or(url).replace("%2f", "/").replace("%2F", "/");
        return Some(format!("could not fetch package `{pkg}`: it is not in the npm cache and npm is offline"));
    }
    if npm.starts_with("code ENOTFOUND") || npm.starts_with("errno ENOTFOUND") {
        return Some("could not reach the npm registry (ENOTFOUND)".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_managers_name_the_package_they_could_not_fetch() {
        let cases = [
            ("ERROR: No matching distribution found for nosuchpkg==1.0", Some("`nosuchpkg==1.0`")),
            (
                "ERROR: Could not find a version that satisfies the requirement nosuchpkg (from versions: none)",
                Some("`nosuchpkg`"),
            ),
            ("npm ERR! 404 Not Found - GET https://registry.npmjs.org/left-padx - Not found", Some("`left-padx`")),
            ("npm error 404 Not Found - GET https://registry.npmjs.org/@scope%2fpkg - Not found", Some("`@scope/pkg`")),
            (
                "npm ERR! request to https://registry.npmjs.org/leftpad failed: cache mode is 'only-if-cached' but no cached response is available.",
                Some("`leftpad`"),
            ),
            ("Collecting requests", None),
            ("npm WARN deprecated", None),
        ];
        for (line, want) in cases {
            let got = unfetchable(line);
            match want {
                Some(w) => assert!(got.as_deref().is_some_and(|g| g.contains(w)), "{line}: {got:?}"),
                None => assert_eq!(got, None, "{line}"),
            }
        }
    }

    #[test]
    fn only_toolchain_settings_pass_through() {
        for yes in ["PATH", "PIP_FIND_LINKS", "npm_config_cache", "CARGO_HOME", "https_proxy", "JAVA_HOME"] {
            assert!(passes_through(yes), "{yes}");
        }
        for no in ["PYTHONPATH", "NODE_OPTIONS", "GUST_DATA", "AWS_SECRET_ACCESS_KEY", "LD_PRELOAD"] {
            assert!(!passes_through(no), "{no}");
        }
    }
}
