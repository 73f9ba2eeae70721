//! Instance isolation (issue 8, points 1–3): with `--isolation basic` hostile functions
//! in every runtime that can try are refused — reading another function's code, gust's
//! database or token, writing outside their scratch, mount, ptrace, signalling processes
//! outside the instance — and the server keeps serving. `none` is reported as such.

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

    // Python still forks from the zygote, its child narrowed to its function; Node
    // starts fresh under basic, and says why.
    let s = &g.describe("py")["scaling"][0];
    assert_eq!(s["pooled_starts"], 1, "{s}");
    let s = &g.describe("js")["scaling"][0];
    assert!(s["unpooled_reason"].as_str().unwrap().contains("basic"), "{s}");
    // The victim and the server are unharmed.
    assert_eq!(g.get("victim").text(), "secret sauce");
}

#[test]
fn the_default_level_is_reported_and_an_unknown_or_unbuilt_one_is_refused() {
    let g = gust();
    assert_eq!(g.call("GET", "/api/v1/info", b"", &[]).json()["isolation"]["level"], "none");
    for (level, says) in [("isolated", "not built yet"), ("tight", "unknown level")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gust"))
            .args(["up", "--listen", "127.0.0.1:0", "--isolation", level])
            .env("GUST_DATA", g.work.join("other"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{level}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{level}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
