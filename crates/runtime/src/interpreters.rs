//! Finding interpreters once, at start-up.
//!
//! Version managers put shims on `PATH` (pyenv's `python3` is a shell script that costs
//! ~80 ms per start), so each interpreter is asked for its real executable
//! (`sys.executable`, `process.execPath`) and that path is what instances run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One interpreter: where it is, or why it is missing.
#[derive(Debug, Clone)]
pub struct Found {
    /// The real executable, shims resolved; `None` when not usable.
    pub path: Option<PathBuf>,
    /// Its version, or the reason it is missing and how to fix that.
    pub detail: String,
}

impl Found {
    /// The executable, or why `runtime` cannot run here ([`crate::Error::RuntimeUnavailable`],
    /// with the reason and fix found at start-up).
    ///
    /// # Errors
    /// [`crate::Error::RuntimeUnavailable`] when it was not found.
    pub fn require(&self, runtime: impl std::fmt::Display) -> crate::Result<PathBuf> {
        self.path.clone().ok_or_else(|| crate::Error::RuntimeUnavailable {
            runtime: runtime.to_string(),
            detail: self.detail.clone(),
        })
    }
}

/// The interpreters instances may need.
#[derive(Debug, Clone)]
pub struct Interpreters {
    /// For `python` functions.
    pub python: Found,
    /// For `node` functions.
    pub node: Found,
    /// For `shell` functions: bash, else `/bin/sh`.
    pub shell: Found,
    /// For `java` functions: the `java` of a JDK (its `javac` compiles gust's invoker once).
    pub java: Found,
}

/// Where to look: explicit settings win over `PATH`.
#[derive(Debug, Clone, Default)]
pub struct InterpreterSettings {
    /// `--python` / `GUST_PYTHON`: a path or a name to find on `PATH`.
    pub python: Option<String>,
    /// `--node` / `GUST_NODE`.
    pub node: Option<String>,
    /// `--java` / `GUST_JAVA`.
    pub java: Option<String>,
    /// The `PATH` to search (the server's own).
    pub path_var: Option<String>,
}

impl Interpreters {
    /// Finds and resolves every interpreter. Blocking: it runs each one once.
    pub fn discover(settings: &InterpreterSettings) -> Self {
        let path_var = settings.path_var.clone().unwrap_or_default();
        let python = resolve(
            settings.python.as_deref().unwrap_or("python3"),
            &path_var,
            &["-c", "import sys; print(sys.executable); print(sys.version.split()[0])"],
            "set GUST_PYTHON or --python to a Python 3 interpreter",
        );
        let node = resolve(
            settings.node.as_deref().unwrap_or("node"),
            &path_var,
            &["-p", "process.execPath + '\\n' + process.version"],
            "set GUST_NODE or --node to a Node.js executable",
        );
        let shell = match which("bash", &path_var) {
            Some(p) => Found { path: Some(canonical(&p)), detail: "bash".into() },
            None => Found { path: Some(PathBuf::from("/bin/sh")), detail: "/bin/sh (bash not found)".into() },
        };
        let java = resolve_java(settings.java.as_deref().unwrap_or("java"), &path_var);
        Self { python, node, shell, java }
    }

    /// `javac` next to the `java` in use.
    pub fn javac(&self) -> Option<PathBuf> {
        self.java.path.as_ref().and_then(|j| j.parent()).map(|d| d.join("javac")).filter(|p| p.is_file())
    }
}

/// Java has no one-line way to print its own path, but `-XshowSettings:properties` lists
/// `java.home`: the real installation behind any alternatives link or version-manager shim.
fn resolve_java(name: &str, path_var: &str) -> Found {
    let hint = "set GUST_JAVA or --java to the java of a JDK 17 or newer";
    let Some(candidate) = which(name, path_var) else {
        return Found { path: None, detail: format!("`{name}` not found on PATH; {hint}") };
    };
    let Ok(out) = run_probe(&candidate, &["-XshowSettings:properties", "-version"], path_var) else {
        return Found { path: None, detail: format!("`{}` could not run; {hint}", candidate.display()) };
    };
    let text = String::from_utf8_lossy(&out.stderr);
    let prop = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key).and_then(|r| r.trim_start().strip_prefix('=')))
            .map(|v| v.trim().to_owned())
    };
    let (Some(home), Some(version)) = (prop("java.home"), prop("java.version")) else {
        return Found { path: None, detail: format!("`{}` did not report java.home; {hint}", candidate.display()) };
    };
    let java = Path::new(&home).join("bin").join("java");
    let major: u32 = version.split(['.', '-', '+']).next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if major < 17 {
        return Found { path: None, detail: format!("java {version} is too old; {hint}") };
    }
    if !Path::new(&home).join("bin").join("javac").is_file() {
        return Found { path: None, detail: format!("{home} is a JRE without javac; {hint}") };
    }
    Found { path: Some(java), detail: version }
}

fn resolve(name: &str, path_var: &str, probe: &[&str], hint: &str) -> Found {
    let Some(candidate) = which(name, path_var) else {
        return Found { path: None, detail: format!("`{name}` not found on PATH; {hint}") };
    };
    match run_probe(&candidate, probe, path_var) {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let mut lines = text.lines();
            let real = lines.next().map(PathBuf::from).filter(|p| p.is_absolute() && p.exists());
            let version = lines.next().unwrap_or("").trim().to_owned();
            Found { path: Some(real.unwrap_or(candidate)), detail: version }
        }
        Ok(o) => Found {
            path: None,
            detail: format!("`{}` failed: {}; {hint}", candidate.display(), String::from_utf8_lossy(&o.stderr).trim()),
        },
        Err(e) => Found { path: None, detail: format!("`{}` could not run: {e}; {hint}", candidate.display()) },
    }
}

/// Runs an interpreter once to learn what it really is. The environment is clean but for
/// `PATH` and `HOME`, so shims and hooks see what instances see.
fn run_probe(candidate: &Path, args: &[&str], path_var: &str) -> std::io::Result<std::process::Output> {
    Command::new(candidate)
        .args(args)
        .env_clear()
        .env("PATH", path_var)
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .output()
}

/// Looks `name` up on `path_var` unless it already contains a `/`.
pub fn which(name: &str, path_var: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exe = |p: &Path| p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exe(&p).then_some(p);
    }
    path_var.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join(name)).find(|p| is_exe(p))
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_finds_sh() {
        assert!(which("sh", "/nonexistent:/bin:/usr/bin").is_some());
        assert!(which("surely-not-a-command-xyz", "/bin:/usr/bin").is_none());
        assert!(which("/bin/sh", "").is_some());
    }

    #[test]
    fn missing_interpreter_says_how_to_fix() {
        let found = resolve("no-such-python", "/bin", &[], "set GUST_PYTHON");
        assert!(found.path.is_none());
        assert!(found.detail.contains("GUST_PYTHON"), "{}", found.detail);
    }
}
