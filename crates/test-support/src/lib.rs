//! The end-to-end harness: [`Gust`] runs the real `gust` binary on a free port with its
//! own data directory and kills it on drop; [`Resp`] is an answer fetched with `curl` (a
//! real third-party client); [`eventually`] polls a condition with a deadline instead of
//! sleeping.
//!
//! Panicking is how this crate reports failure: it only runs inside tests.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running `gust up`.
pub struct Gust {
    child: Option<Child>,
    bin: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its data directory.
    pub data: PathBuf,
    /// A scratch directory for the test (function sources, go-files).
    pub work: PathBuf,
    /// What it printed on stdout before it was ready (the banner).
    pub banner: String,
    _tmp: Option<tempfile::TempDir>,
    stderr_log: PathBuf,
    /// The server's token, sent by [`Gust::cli`] and [`Gust::call`] once [`Gust::use_token`] ran.
    token: Option<String>,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    /// The status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Gust {
    /// Starts `bin up` with a fresh data directory.
    pub fn start(bin: &str) -> Self {
        let tmp = tempfile::Builder::new().prefix("gust-e2e-").tempdir().unwrap();
        let data = tmp.path().join("data");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Self::start_with(bin, &data, &work, Some(tmp), &[])
    }

    /// Starts `bin up` with extra environment variables. With `GUST_ISOLATION=isolated`
    /// the data directory is under `/var/tmp`: at that level each instance sees `/tmp`
    /// as its own empty tmpfs, so gust refuses a data directory there.
    pub fn start_env(bin: &str, env: &[(&str, &str)]) -> Self {
        let isolated = env.contains(&("GUST_ISOLATION", "isolated"));
        let base = if isolated { PathBuf::from("/var/tmp") } else { std::env::temp_dir() };
        let tmp = tempfile::Builder::new().prefix("gust-e2e-").tempdir_in(base).unwrap();
        let data = tmp.path().join("data");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Self::start_with(bin, &data, &work, Some(tmp), env)
    }

    /// Starts another server on the same data directory (after [`Gust::stop`]).
    pub fn restart(mut self) -> Self {
        let tmp = self._tmp.take();
        let (bin, data, work) = (self.bin.clone(), self.data.clone(), self.work.clone());
        drop(self);
        Self::start_with(bin.to_str().unwrap(), &data, &work, tmp, &[])
    }

    fn start_with(bin: &str, data: &Path, work: &Path, tmp: Option<tempfile::TempDir>, env: &[(&str, &str)]) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let ready = work.join(format!("ready-{n}"));
        let stderr_log = work.join(format!("gust-{n}.stderr"));
        let mut cmd = Command::new(bin);
        // GUST_LISTEN among `env` replaces the loopback default (a flag would win over it).
        let listen = env.iter().find(|(k, _)| *k == "GUST_LISTEN").map_or("127.0.0.1:0", |(_, v)| *v);
        cmd.args(["up", "--listen", listen, "--data"])
            .arg(data)
            .arg("--ready-file")
            .arg(&ready)
            .env("GUST_LOG", "info")
            // Tests pick their level; most test mechanisms at `none` (the default, `auto`,
            // has its own test).
            .env("GUST_ISOLATION", "none")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let started = Instant::now();
        while !ready.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("gust up exited with {status}: {}", std::fs::read_to_string(&stderr_log).unwrap_or_default());
            }
            assert!(started.elapsed() < DEADLINE, "gust up did not become ready");
            std::thread::sleep(Duration::from_millis(10));
        }
        let addr = std::fs::read_to_string(&ready).unwrap();
        // The banner is printed before the ready file is written; read it without blocking
        // on the rest of stdout by draining it on a thread.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut banner = String::new();
            while let Some(Ok(l)) = lines.next() {
                let done = l.trim_start().starts_with("functions:");
                banner.push_str(&l);
                banner.push('\n');
                if done {
                    break;
                }
            }
            let _ = tx.send(banner);
            for _ in lines {}
        });
        let banner = rx.recv_timeout(DEADLINE).unwrap_or_default();
        Gust {
            child: Some(child),
            bin: PathBuf::from(bin),
            url: format!("http://{addr}"),
            data: data.to_path_buf(),
            work: work.to_path_buf(),
            banner,
            _tmp: tmp,
            stderr_log,
            token: None,
        }
    }

    /// The server's token, from `<data>/token`.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data.join("token")).unwrap().trim().to_owned()
    }

    /// From now on the CLI and [`Gust::call`] send the server's token.
    pub fn use_token(&mut self) {
        self.token = Some(self.token());
    }

    /// The server's stderr so far (its log).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Runs `gust ARGS` against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).env("GUST_URL", &self.url).env_remove("GUST_TOKEN").current_dir(&self.work);
        if let Some(t) = &self.token {
            cmd.env("GUST_TOKEN", t);
        }
        cmd.output().unwrap()
    }

    /// Runs `gust ARGS` and asserts it succeeded; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "gust {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes a function directory under the work dir: `files` are `(path, contents)`;
    /// paths ending in `.sh` or named `run`, `server` or `bootstrap` are made executable.
    pub fn function(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            let exe = path.ends_with(".sh") || ["run", "server", "bootstrap"].contains(path);
            if exe {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        dir
    }

    /// Writes and deploys a function; returns the deploy output.
    pub fn deploy(&self, name: &str, files: &[(&str, &str)]) -> String {
        let dir = self.function(name, files);
        self.cli_ok(&["deploy", dir.to_str().unwrap()])
    }

    /// Calls `METHOD URL-PATH` with curl; `body` is sent as is.
    pub fn call(&self, method: &str, path: &str, body: &[u8], headers: &[&str]) -> Resp {
        match &self.token {
            Some(t) => {
                let auth = format!("Authorization: Bearer {t}");
                let all: Vec<&str> = headers.iter().copied().chain([auth.as_str()]).collect();
                curl(&format!("{}{path}", self.url), method, body, &all)
            }
            None => curl(&format!("{}{path}", self.url), method, body, headers),
        }
    }

    /// `POST /function/NAME` with `body`.
    pub fn post(&self, name: &str, body: &str) -> Resp {
        self.call("POST", &format!("/function/{name}"), body.as_bytes(), &[])
    }

    /// `GET /function/NAME`.
    pub fn get(&self, name: &str) -> Resp {
        self.call("GET", &format!("/function/{name}"), b"", &[])
    }

    /// `GET /api/v1/functions/NAME` as JSON.
    pub fn describe(&self, name: &str) -> serde_json::Value {
        let r = self.call("GET", &format!("/api/v1/functions/{name}"), b"", &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Pids of the function's running instances.
    pub fn instance_pids(&self, name: &str) -> Vec<u32> {
        let d = self.describe(name);
        d["instances"].as_array().unwrap().iter().filter_map(|i| i["pid"].as_u64()).map(|p| p as u32).collect()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        signal(child.id(), libc::SIGTERM);
        wait_with_deadline(&mut child)
    }

    /// Sends SIGTERM without waiting; returns the child to wait on.
    pub fn terminate(&mut self) -> Child {
        let child = self.child.take().unwrap();
        signal(child.id(), libc::SIGTERM);
        child
    }
}

impl Drop for Gust {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGKILL);
            let _ = c.wait();
        }
    }
}

/// Waits for `child` with [`DEADLINE`].
pub fn wait_with_deadline(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < DEADLINE, "process did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid we started; no memory involved.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|fields| fields.first().is_none_or(|state| state != "Z"))
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces), from
/// the state on: `[0]` state, `[1]` ppid, `[2]` pgid, `[11]` utime, `[12]` stime.
/// `None` when the process does not exist.
pub fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')')?.1.split_whitespace().map(str::to_owned).collect())
}

/// Polls `f` until it returns `Some`, failing the test after [`DEADLINE`].
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request with curl.
pub fn curl(url: &str, method: &str, body: &[u8], headers: &[&str]) -> Resp {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir();
    let hfile = dir.join(format!("gust-e2e-h-{}-{n}", std::process::id()));
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "--max-time", "60", "-X", method, "-D"]).arg(&hfile).args(["-o", "-"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if !body.is_empty() || method == "POST" || method == "PUT" || method == "PATCH" {
        cmd.args(["--data-binary", "@-"]);
    }
    cmd.arg(url).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("curl must be installed");
    let mut stdin = child.stdin.take().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut stdin, &body);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    let head = std::fs::read_to_string(&hfile).unwrap_or_default();
    let _ = std::fs::remove_file(&hfile);
    parse_head(&head, out.stdout)
        .unwrap_or_else(|| panic!("curl {method} {url} failed: {}", String::from_utf8_lossy(&out.stderr)))
}

fn parse_head(head: &str, body: Vec<u8>) -> Option<Resp> {
    // With redirects or 100-continue there may be several heads; the last one counts.
    let block = head.split("\r\n\r\n").filter(|b| b.starts_with("HTTP/")).last()?;
    let mut lines = block.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Resp { status, headers, body })
}

/// A streaming request: curl's stdout, read line by line as it arrives.
pub struct Stream {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Stream {
    /// Starts `curl -N URL` (no buffering).
    pub fn open(url: &str) -> Self {
        let mut child = Command::new("curl")
            .args(["-s", "-N", "--max-time", "60", url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Stream { child, lines }
    }

    /// The next line, or `None` at the end.
    pub fn next_line(&mut self) -> Option<String> {
        self.lines.next().map(|l| l.unwrap())
    }

    /// Whether curl is still running (the response has not ended).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `.tar.gz` with raw entry names, for hostile-archive tests.
pub fn raw_targz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }
    out
}

/// Reads a whole file, or an empty string.
pub fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Sends `n` POSTs to `path` at once (one thread and one connection each, released
/// together) and returns their status codes; a connection that fails counts as 0.
pub fn burst(base_url: &str, path: &str, body: &str, n: usize) -> Vec<u16> {
    let addr = base_url.trim_start_matches("http://").to_owned();
    let start = std::sync::Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (addr, path, body, start) = (addr.clone(), path.to_owned(), body.to_owned(), start.clone());
            std::thread::spawn(move || {
                use std::io::{Read as _, Write as _};
                let Ok(mut s) = std::net::TcpStream::connect(&addr) else { return 0 };
                let _ = s.set_read_timeout(Some(DEADLINE * 2));
                start.wait();
                let req = format!(
                    "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(req.as_bytes()).is_err() {
                    return 0;
                }
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap_or(0)).collect()
}
