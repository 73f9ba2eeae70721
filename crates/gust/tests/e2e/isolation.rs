//! Instance isolation (issue 8, points 1–3): with `--isolation basic` hostile functions
//! in every runtime that can try are refused — reading another function's code, gust's
//! database or token, writing outside their scratch, mount, ptrace, signalling processes
//! outside the instance — and the server keeps serving. With `isolated` each instance
//! also has its own PID, mount, UTS, IPC (and for `network = "none"` network) namespace,
//! a private /tmp, and a cgroup: memory past the limit fails the call with "out of
//! memory" and replaces the instance, a fork bomb stops at the process limit, a spinning
//! function is throttled to its CPU share. `none` is reported as such.

use gust_test_support::Gust;

use crate::{gust, gust_env, manifest};

/// Tries everything named in the JSON body (`paths` to read, `write` to write) and
/// reports each outcome; `ok` only for what succeeded.
const PY_HOSTILE: &str = r#"import ctypes, json, os
def handle(e, c):
    req = e.body
    out = {}
    def attempt(name, f):
        try:
            f()
            out[name] = "ok"
        except Exception as ex:
            out[name] = type(ex).__name__
    for name, path in req["read"].items():
        attempt(name, lambda p=path: open(p, "rb").read(1) if os.path.isfile(p) else os.listdir(p))
    scratch = os.path.join(os.environ["GUST_SCRATCH"], "f")
    for name, path in req["write"].items():
        attempt(name, lambda p=(scratch if path == "SCRATCH" else path): open(p, "w").write("x"))
    libc = ctypes.CDLL(None, use_errno=True)
    out["mount"] = "ok" if libc.mount(b"none", os.environ["GUST_SCRATCH"].encode(), b"tmpfs", 0, None) == 0 else os.strerror(ctypes.get_errno())
    out["ptrace"] = "ok" if libc.ptrace(0, 0, None, None) == 0 else os.strerror(ctypes.get_errno())
    attempt("kill_gust", lambda: os.kill(req["gust_pid"], 0))
    return out
"#;

const JS_HOSTILE: &str = r#"const fs = require('fs');
module.exports = async (e, c) => {
  const req = e.body;
  const out = {};
  const attempt = (name, f) => { try { f(); out[name] = 'ok'; } catch (err) { out[name] = err.code || String(err); } };
  for (const [name, p] of Object.entries(req.read)) attempt(name, () => fs.statSync(p).isDirectory() ? fs.readdirSync(p) : fs.readFileSync(p));
  const scratch = process.env.GUST_SCRATCH + '/f';
  for (const [name, p] of Object.entries(req.write)) attempt(name, () => fs.writeFileSync(p === 'SCRATCH' ? scratch : p, 'x'));
  attempt('kill_gust', () => process.kill(req.gust_pid, 0));
  return out;
};
"#;

const SH_HOSTILE: &str = r#"#!/bin/sh
# The body's lines: the database path, another function's code directory.
read db
read code
cat "$db" >/dev/null 2>&1 && echo "db=ok" || echo "db=denied"
ls "$code" >/dev/null 2>&1 && echo "code=ok" || echo "code=denied"
echo x > /tmp/gust-iso-sh 2>/dev/null && echo "tmp=ok" || echo "tmp=denied"
echo x > "$GUST_SCRATCH/mine" && echo "scratch=ok" || echo "scratch=denied"
"#;

/// The code directory of `function`'s current revision, found from outside.
fn code_dir(g: &Gust, function: &str) -> String {
    let d = g.describe(function);
    let digest = d["revisions"][0]["code_digest"].as_str().map(str::to_owned);
    let code = g.data.join("code");
    let dirs: Vec<_> = std::fs::read_dir(&code).unwrap().flatten().map(|e| e.path()).collect();
    let found = digest
        .and_then(|dg| {
            dirs.iter().find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&dg))).cloned()
        })
        .unwrap_or_else(|| dirs[0].clone());
    found.to_string_lossy().into_owned()
}

#[test]
fn under_basic_hostile_functions_are_refused_in_every_runtime_and_the_server_keeps_serving() {
    let g = gust_env(&[("GUST_ISOLATION", "basic")]);
    assert!(g.banner.contains("isolation: basic"), "{}", g.banner);
    let info = g.call("GET", "/api/v1/info", b"", &[]).json();
    assert_eq!(info["isolation"]["level"], "basic");
    let applied = info["isolation"]["applied"].to_string();
    assert!(applied.contains("landlock") && applied.contains("seccomp"), "{applied}");

    // A victim whose code the others try to read.
    g.deploy(
        "victim",
        &[
            ("gust.toml", &manifest("victim", "python", "")),
            ("handler.py", "def handle(x):\n    return 'secret sauce'\n"),
        ],
    );
    let victim = code_dir(&g, "victim");
    let db = g.data.join("gust.db").to_string_lossy().into_owned();
    let token = g.data.join("token").to_string_lossy().into_owned();
    let victim_scratch = g.data.join("run").to_string_lossy().into_owned();
    let body = serde_json::json!({
        "read": {"db": db, "token": token, "victim_code": victim, "other_scratch": victim_scratch, "own_code": "gust.toml"},
        "write": {"outside": g.data.join("planted").to_string_lossy(), "tmp": "/tmp/gust-iso-planted", "scratch": "SCRATCH"},
        "gust_pid": g.pid(),
    })
    .to_string();

    g.deploy("py", &[("gust.toml", &manifest("py", "python", "")), ("handler.py", PY_HOSTILE)]);
    let r = g.call("POST", "/function/py", body.as_bytes(), &["Content-Type: application/json"]);
    assert_eq!(r.status, 200, "{}", r.text());
    let o = r.json();
    for denied in ["db", "token", "victim_code", "other_scratch", "outside", "tmp"] {
        assert_eq!(o[denied], "PermissionError", "python {denied}: {o}");
    }
    assert_eq!((o["own_code"].as_str(), o["scratch"].as_str()), (Some("ok"), Some("ok")), "{o}");
    assert_eq!(
        (o["mount"].as_str(), o["ptrace"].as_str()),
        (Some("Operation not permitted"), Some("Operation not permitted")),
        "{o}"
    );
    assert_eq!(o["kill_gust"], "PermissionError", "{o}");

    g.deploy("js", &[("gust.toml", &manifest("js", "node", "")), ("handler.js", JS_HOSTILE)]);
    let r = g.call("POST", "/function/js", body.as_bytes(), &["Content-Type: application/json"]);
    assert_eq!(r.status, 200, "{}", r.text());
    let o = r.json();
    for denied in ["db", "token", "victim_code", "other_scratch", "outside", "tmp"] {
        assert_eq!(o[denied], "EACCES", "node {denied}: {o}");
    }
    assert_eq!(o["own_code"], "ok", "{o}");
    assert_eq!(o["kill_gust"], "EPERM", "{o}");

    g.deploy("sh", &[("gust.toml", &manifest("sh", "shell", "")), ("handler.sh", SH_HOSTILE)]);
    let r = g.call("POST", "/function/sh", format!("{db}\n{victim}\n").as_bytes(), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    for line in ["db=denied", "code=denied", "tmp=denied", "scratch=ok"] {
        assert!(r.text().contains(line), "shell {line}: {}", r.text());
    }
    assert!(
        !std::path::Path::new("/tmp/gust-iso-sh").exists() && !std::path::Path::new("/tmp/gust-iso-planted").exists()
    );
    assert!(!g.data.join("planted").exists());

    // Python still forks from the zygote, its child narrowed to its function; Node comes
    // from a waiting process that was sandboxed from the start and got its code through
    // its read-only slot.
    for f in ["py", "js"] {
        let d = g.describe(f);
        assert_eq!(d["scaling"][0]["pooled_starts"], 1, "{f}: {d}");
        assert!(d["isolation"].as_str().unwrap().starts_with("basic: Landlock"), "{d}");
    }
    // The victim and the server are unharmed.
    assert_eq!(g.get("victim").text(), "secret sauce");
}

#[test]
fn the_default_level_is_the_strongest_the_host_allows_and_an_unknown_one_or_a_data_directory_under_tmp_is_refused() {
    // With no --isolation: this host (root, Landlock, seccomp, namespaces, cgroups) allows
    // `isolated`, unless the data directory is under /tmp; then `basic`, saying why.
    let strongest = |dir: &std::path::Path| {
        let mut out = std::process::Command::new(env!("CARGO_BIN_EXE_gust"))
            .args(["up", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir)
            .env_remove("GUST_ISOLATION")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(out.stdout.take().unwrap());
        let mut banner = String::new();
        while !banner.contains("pools:") {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() == 0 {
                break;
            }
            banner.push_str(&line);
        }
        let _ = out.kill();
        let _ = out.wait();
        banner
    };
    let var = tempfile::Builder::new().prefix("gust-e2e-").tempdir_in("/var/tmp").unwrap();
    let banner = strongest(&var.path().join("data"));
    assert!(banner.contains("isolation: isolated ("), "{banner}");
    assert!(banner.contains("the strongest this host allows (--isolation auto)\n"), "{banner}");
    let tmp = tempfile::Builder::new().prefix("gust-e2e-").tempdir().unwrap();
    let banner = strongest(&tmp.path().join("data"));
    assert!(banner.contains("isolation: basic ("), "{banner}");
    assert!(banner.contains("not `isolated`: the data directory") && banner.contains("is under /tmp"), "{banner}");

    let g = gust();
    assert_eq!(g.call("GET", "/api/v1/info", b"", &[]).json()["isolation"]["level"], "none");
    let up = |level: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gust"))
            .args(["up", "--listen", "127.0.0.1:0", "--isolation", level])
            .env("GUST_DATA", g.work.join("other"))
            .output()
            .unwrap()
    };
    let out = up("tight");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown level `tight`; expected none, basic or isolated"), "{err}");
    // The test's work directory is under /tmp, which every isolated instance sees as its own.
    assert!(g.work.starts_with("/tmp"));
    let out = up("isolated");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is under /tmp") && err.contains("choose another --data"), "{err}");
}

/// Reports what an instance sees of itself and the host, or misbehaves as asked: `oom`
/// allocates without end, `forks` forks until refused, `spin` burns CPU for a second
/// and reports its cgroup's throttling.
const PY_PROBE: &str = r#"import json, os, signal, socket, time
def handle(e, c):
    what = e.body.get("do")
    out = {}
    def attempt(name, f):
        try:
            out[name] = f()
        except Exception as ex:
            out[name] = type(ex).__name__
    if what == "oom":
        hog = []
        while True:
            hog.append(bytearray(8 << 20))
    if what == "forks":
        kids = []
        while True:
            try:
                pid = os.fork()
            except OSError as ex:
                out["stopped_by"] = type(ex).__name__
                break
            if pid == 0:
                signal.pause()
                os._exit(0)
            kids.append(pid)
        for k in kids:
            os.kill(k, signal.SIGKILL)
            os.waitpid(k, 0)
        out["forked"] = len(kids)
        return out
    if what == "spin":
        groups = {l.split(":")[1]: l.split(":", 2)[2] for l in open("/proc/self/cgroup").read().splitlines()}
        cpu = groups.get("cpu") or groups.get("cpu,cpuacct")
        path = "/sys/fs/cgroup/cpu" + cpu if cpu else "/sys/fs/cgroup" + groups[""]
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            pass
        stat = dict(l.split() for l in open(path + "/cpu.stat"))
        out["throttled"] = int(stat.get("nr_throttled", 0))
        return out
    out["pid"] = os.getpid()
    out["hostname"] = socket.gethostname()
    attempt("pids", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
    attempt("tmp_before", lambda: os.listdir("/tmp"))
    attempt("tmp_write", lambda: open("/tmp/" + e.body["mark"], "w").write("x") and "ok")
    attempt("shm_write", lambda: open("/dev/shm/" + e.body["mark"], "w").write("x") and "ok")
    attempt("db", lambda: open(e.body["db"], "rb").read(1) and "ok")
    attempt("interfaces", lambda: sorted(n for _, n in socket.if_nameindex()))
    def udp():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"x", ("192.0.2.1", 9))
        return "sent"
    attempt("udp", udp)
    attempt("cgroup", lambda: "gust-" in open("/proc/self/cgroup").read())
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    out["mount"] = "ok" if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0 else os.strerror(ctypes.get_errno())
    out["unshare"] = "ok" if libc.unshare(0x20000) == 0 else os.strerror(ctypes.get_errno())
    return out
"#;

#[test]
fn under_isolated_instances_get_namespaces_a_private_tmp_and_cgroup_limits() {
    let mut g = gust_env(&[("GUST_ISOLATION", "isolated")]);
    assert!(g.banner.contains("isolation: isolated"), "{}", g.banner);
    let info = g.call("GET", "/api/v1/info", b"", &[]).json();
    assert_eq!(info["isolation"]["level"], "isolated");
    let applied = info["isolation"]["applied"].to_string();
    assert!(applied.contains("namespaces") && applied.contains("cgroup") && applied.contains("landlock"), "{applied}");
    let db = g.data.join("gust.db").to_string_lossy().into_owned();
    let probe = |mark: &str| serde_json::json!({"mark": mark, "db": db}).to_string();
    let json = ["Content-Type: application/json"];

    let limits = "[limits]\nmemory = \"64Mi\"\ncpu = \"100m\"\nprocesses = 16\n";
    g.deploy("probe", &[("gust.toml", &manifest("probe", "python", limits)), ("handler.py", PY_PROBE)]);
    g.deploy("other", &[("gust.toml", &manifest("other", "python", "")), ("handler.py", PY_PROBE)]);
    g.deploy(
        "offline",
        &[("gust.toml", &manifest("offline", "python", "network = \"none\"")), ("handler.py", PY_PROBE)],
    );

    // Its own PID namespace (it is PID 2, under a waiting init), host name and /tmp.
    let r = g.call("POST", "/function/probe", probe("first").as_bytes(), &json);
    assert_eq!(r.status, 200, "{}", r.text());
    let o = r.json();
    assert_eq!(o["pid"], 2, "{o}");
    assert_eq!(o["pids"], serde_json::json!([1, 2]), "{o}");
    assert_eq!(o["hostname"], "probe", "{o}");
    assert_eq!(o["tmp_before"], serde_json::json!([]), "{o}");
    assert_eq!((o["tmp_write"].as_str(), o["shm_write"].as_str()), (Some("ok"), Some("ok")), "{o}");
    assert_eq!(o["db"], "PermissionError", "{o}");
    assert_eq!(o["cgroup"], true, "{o}");
    // Landlock and seccomp as at `basic`, though it came from the zygote (which has
    // neither there: the child entered them itself, after its namespaces).
    assert_eq!(
        (o["mount"].as_str(), o["unshare"].as_str()),
        (Some("Operation not permitted"), Some("Operation not permitted")),
        "{o}"
    );
    assert_eq!(g.describe("probe")["scaling"][0]["pooled_starts"], 1);
    // `gust describe` says how it is confined, with its limits.
    let text = g.cli_ok(&["describe", "probe"]);
    assert!(
        text.contains("Isolation: isolated: ") && text.contains("cgroup: memory 64Mi, cpu 100m, processes 16"),
        "{text}"
    );
    let offline = g.describe("offline")["isolation"].as_str().unwrap().to_owned();
    assert!(offline.contains("a network namespace of its own"), "{offline}");
    assert!(o["interfaces"].as_array().unwrap().len() > 1, "the host's network: {o}");
    assert_eq!(o["udp"], "sent", "{o}");
    // Another function's /tmp is its own: nothing of the first is visible there.
    let o = g.call("POST", "/function/other", probe("second").as_bytes(), &json).json();
    assert_eq!(o["tmp_before"], serde_json::json!([]), "{o}");
    assert_eq!(o["pid"], 2, "{o}");
    assert!(!std::path::Path::new("/tmp/first").exists() && !std::path::Path::new("/tmp/second").exists());
    // network = "none": a network namespace with only a loopback (down).
    let o = g.call("POST", "/function/offline", probe("third").as_bytes(), &json).json();
    assert_eq!(o["interfaces"], serde_json::json!(["lo"]), "{o}");
    assert_eq!(o["udp"], "OSError", "{o}");

    // A fork bomb stops at limits.processes; the instance goes on serving.
    let r = g.call("POST", "/function/probe", br#"{"do": "forks"}"#, &json);
    assert_eq!(r.status, 200, "{}", r.text());
    let o = r.json();
    assert_eq!(o["stopped_by"], "BlockingIOError", "{o}");
    assert!(o["forked"].as_u64().unwrap() < 16, "{o}");

    // Spinning is held to limits.cpu by the cgroup's quota.
    let o = g.call("POST", "/function/probe", br#"{"do": "spin"}"#, &json).json();
    assert!(o["throttled"].as_u64().is_some_and(|n| n > 0), "{o}");

    // Memory past limits.memory: the call fails saying so, the instance is replaced.
    let r = g.call("POST", "/function/probe", br#"{"do": "oom"}"#, &json);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("ran out of memory (limits.memory = 64Mi)"), "{}", r.text());
    let r = g.call("POST", "/function/probe", probe("again").as_bytes(), &json);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tmp_before"], serde_json::json!([]), "a new instance, a new /tmp: {}", r.text());
    assert_eq!(g.call("POST", "/function/other", probe("fine").as_bytes(), &json).status, 200);

    // Node past its memory: the same clear error; a shell fork bomb is held to its
    // processes until the call's deadline ends the whole namespace.
    let hog = "module.exports = () => { const a = []; for (;;) a.push(Buffer.alloc(8 << 20, 1)); };\n";
    g.deploy(
        "jshog",
        &[("gust.toml", &manifest("jshog", "node", "[limits]\nmemory = \"64Mi\"\n")), ("handler.js", hog)],
    );
    let r = g.post("jshog", "");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("ran out of memory (limits.memory = 64Mi)"), "{}", r.text());
    // The script itself stays until its deadline (`wait` is a builtin, so it needs no
    // fork): ending at once, it would take the bomb's namespace down with it before the
    // bomb reached its limit on a busy machine.
    let bomb = "#!/bin/bash\nb() { b | b & }\nb\nwhile :; do wait; done\n";
    let limits = "[limits]\ntimeout = \"2s\"\nprocesses = 32\n";
    g.deploy("bomb", &[("gust.toml", &manifest("bomb", "shell", limits)), ("handler.sh", bomb)]);
    let r = g.post("bomb", "");
    assert!(r.status == 200 || r.status == 504, "{}", r.text());
    // The limit was hit, and nothing of the bomb outlives the call: when the script
    // ends, so does its PID namespace. (The function's groups are looked at together: an
    // instance of it that is going away may still have one.)
    let groups: Vec<String> = walk(std::path::PathBuf::from(format!("/sys/fs/cgroup/pids/gust-{}", g.pid())), 1)
        .into_iter()
        .filter(|d| d.contains("/bomb-"))
        .collect();
    let read = |group: &str, f: &str| std::fs::read_to_string(format!("{group}/{f}")).unwrap_or_default();
    let seen: Vec<String> = groups
        .iter()
        .map(|d| format!("{d}: events {:?}, max {:?}", read(d, "pids.events").trim(), read(d, "pids.max").trim()))
        .collect();
    assert!(
        groups.iter().any(|d| read(d, "pids.events").trim().strip_prefix("max ").is_some_and(|n| n != "0")),
        "the bomb never met pids.max (status {}): {seen:?}",
        r.status
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while groups.iter().any(|d| !matches!(read(d, "pids.current").trim(), "0" | "")) {
        assert!(std::time::Instant::now() < deadline, "left running: {seen:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(g.call("POST", "/function/other", probe("after").as_bytes(), &json).status, 200);

    // Every runtime gets the same: Node and a shell call.
    // Node from a waiting process started in its namespaces, sandbox and a spare cgroup
    // (its host name is then gust's); its code is a read-only slot of its own.
    let js = "const fs = require('fs'), os = require('os');\nmodule.exports = () => {\n  let write;\n  try { fs.writeFileSync(__filename, '//'); write = 'ok'; } catch (e) { write = e.code; }\n  return { pid: process.pid, host: os.hostname(), write };\n};\n";
    g.deploy("js", &[("gust.toml", &manifest("js", "node", "")), ("handler.js", js)]);
    assert_eq!(g.post("js", "").json(), serde_json::json!({"pid": 2, "host": "gust", "write": "EACCES"}));
    assert_eq!(g.describe("js")["scaling"][0]["pooled_starts"], 1);
    let sh = "#!/bin/sh\necho \"pid=$$ host=$(cat /proc/sys/kernel/hostname)\"\nls /tmp | wc -l\ngrep -E '^Max (cpu time|processes|open files|core)' /proc/self/limits | tr -s ' '\n";
    g.deploy("sh", &[("gust.toml", &manifest("sh", "shell", "")), ("handler.sh", sh)]);
    let r = g.post("sh", "");
    // And the rlimits of a one-call process: no more CPU seconds than its deadline.
    assert_eq!(
        r.text(),
        "pid=2 host=sh\n0\nMax cpu time 61 62 seconds \nMax core file size 0 0 bytes \n\
         Max processes 16384 16384 processes \nMax open files 4096 4096 files \n",
        "{}",
        r.text()
    );
    let lp = "import os, socket\ndef handler(event, context):\n    return [os.getpid(), socket.gethostname()]\n";
    g.deploy("lp", &[("gust.toml", &manifest("lp", "lambda-python", "handler = \"app.handler\"")), ("app.py", lp)]);
    let r = g.call("POST", "/2015-03-31/functions/lp/invocations", b"{}", &[]);
    assert_eq!(r.json(), serde_json::json!([2, "lp"]), "{}", r.text());
    // Java (built by javac at deploy) and an exec program are held the same way.
    let m = manifest("jprobe", "java", "handler = \"h.Probe\"\nbuild = \"javac -d classes src/h/*.java\"");
    g.deploy("jprobe", &[("gust.toml", &m), ("src/h/Probe.java", JAVA_PROBE)]);
    assert_eq!(g.post("jprobe", &db).text(), "AccessDeniedException 2 2");
    let sh = "#!/bin/sh\ncat \"$1\" >/dev/null 2>&1 && echo db=ok || echo db=denied\necho pid=$$\n";
    g.deploy("xprobe", &[("gust.toml", &manifest("xprobe", "exec", "handler = \"probe.sh\"")), ("probe.sh", sh)]);
    assert_eq!(g.post("xprobe", &db).text(), "db=denied\npid=2\n");

    // Gone with the server: the instances' cgroups and their parent.
    let pid = g.pid();
    g.stop();
    let parent = format!("gust-{pid}");
    let left: Vec<String> = ["memory", "cpu", "pids"]
        .iter()
        .flat_map(|c| walk(std::path::Path::new("/sys/fs/cgroup").join(c), 3))
        .filter(|p| p.contains(&parent))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Reads the file named in the body; reports how that went, how many processes it can
/// see, and its own pid.
const JAVA_PROBE: &str = r#"package h;
import java.nio.file.*;
public class Probe implements java.util.function.Function<String, String> {
    public String apply(String db) {
        String read;
        try { Files.readAllBytes(Path.of(db)); read = "ok"; } catch (Exception e) { read = e.getClass().getSimpleName(); }
        long seen;
        try (var s = Files.list(Path.of("/proc"))) {
            seen = s.filter(p -> p.getFileName().toString().matches("[0-9]+")).count();
        } catch (Exception e) { seen = -1; }
        return read + " " + seen + " " + ProcessHandle.current().pid();
    }
}
"#;

/// Directories up to `depth` levels below `dir`.
fn walk(dir: std::path::PathBuf, depth: usize) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            out.push(e.path().to_string_lossy().into_owned());
            if depth > 1 {
                out.extend(walk(e.path(), depth - 1));
            }
        }
    }
    out
}

/// Tries to listen on a TCP port and to connect to gust's; reports each outcome.
const PY_NET: &str = r#"import socket
def handle(e, c):
    out = {}
    try:
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1); out["listen"] = "ok"
    except OSError as ex:
        out["listen"] = type(ex).__name__
    try:
        s = socket.create_connection(("127.0.0.1", int(e.body)), timeout=5); out["connect"] = "ok"
    except OSError as ex:
        out["connect"] = type(ex).__name__
    return out
"#;

#[test]
fn with_network_none_a_function_can_neither_listen_nor_connect_but_a_lambda_reaches_its_runtime_api() {
    let g = gust_env(&[("GUST_ISOLATION", "basic")]);
    let port = g.url.rsplit(':').next().unwrap().to_owned();
    g.deploy("open", &[("gust.toml", &manifest("open", "python", "")), ("handler.py", PY_NET)]);
    assert_eq!(g.post("open", &port).json(), serde_json::json!({"listen": "ok", "connect": "ok"}));
    g.deploy("closed", &[("gust.toml", &manifest("closed", "python", "network = \"none\"")), ("handler.py", PY_NET)]);
    let r = g.post("closed", &port);
    assert_eq!(
        r.json(),
        serde_json::json!({"listen": "PermissionError", "connect": "PermissionError"}),
        "{}",
        r.text()
    );
    let js = "const net = require('net');\nmodule.exports = (port) => new Promise((resolve) => {\n  const srv = net.createServer();\n  srv.on('error', (e) => resolve({ listen: e.code }));\n  srv.listen(0, '127.0.0.1', () => { srv.close(); resolve({ listen: 'ok' }); });\n});\n";
    g.deploy("jsnet", &[("gust.toml", &manifest("jsnet", "node", "network = \"none\"")), ("handler.js", js)]);
    assert_eq!(g.post("jsnet", &port).json(), serde_json::json!({"listen": "EACCES"}));
    // A Lambda client keeps its own Runtime API (and nothing else).
    let lp = "import socket\ndef handler(event, context):\n    try:\n        socket.create_connection(('127.0.0.1', int(event['port'])), timeout=5)\n        return 'reached'\n    except OSError as e:\n        return type(e).__name__\n";
    g.deploy(
        "lnet",
        &[
            ("gust.toml", &manifest("lnet", "lambda-python", "handler = \"app.handler\"\nnetwork = \"none\"")),
            ("app.py", lp),
        ],
    );
    let r = g.call("POST", "/2015-03-31/functions/lnet/invocations", format!("{{\"port\": {port}}}").as_bytes(), &[]);
    assert_eq!(r.json(), "PermissionError", "{}", r.text());
    // At level none the setting cannot be honoured, so the deploy says so.
    let plain = gust();
    let dir = plain.function(
        "closed",
        &[("gust.toml", &manifest("closed", "python", "network = \"none\"")), ("handler.py", PY_NET)],
    );
    let out = plain.cli(&["deploy", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--isolation basic"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
