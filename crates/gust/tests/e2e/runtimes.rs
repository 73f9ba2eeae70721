//! Handler conventions of each runtime (point 5).

use gust_test_support::eventually;

use crate::{gust, manifest};

#[test]
fn python_plain_function_gets_parsed_json_and_returns_json() {
    let g = gust();
    let py =
        "def square(x):\n    return x * x\n\ndef shape(data):\n    return {'got': data, 'type': type(data).__name__}\n";
    g.deploy(
        "square",
        &[("gust.toml", &manifest("square", "python", "handler = \"handler.square\"")), ("handler.py", py)],
    );
    g.deploy(
        "shape",
        &[("gust.toml", &manifest("shape", "python", "handler = \"handler.shape\"")), ("handler.py", py)],
    );
    let r = g.call("POST", "/function/square", b"7", &["Content-Type: application/json"]);
    assert_eq!((r.status, r.text().as_str()), (200, "49"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    // curl -d sends form encoding; a plain function still gets the number.
    assert_eq!(g.post("square", "3").text(), "9");
    let j = g.post("shape", "just text").json();
    assert_eq!((j["got"].as_str(), j["type"].as_str()), (Some("just text"), Some("str")));
    let j = g.call("POST", "/function/shape", br#"{"a": [1]}"#, &["Content-Type: application/json"]).json();
    assert_eq!((j["got"]["a"][0].as_i64(), j["type"].as_str()), (Some(1), Some("dict")));
}

#[test]
fn python_errors_are_500s_with_the_message_and_logged() {
    let g = gust();
    let py = "def handle(e, c):\n    raise ValueError('no good input')\n";
    g.deploy("raises", &[("gust.toml", &manifest("raises", "python", "")), ("handler.py", py)]);
    let r = g.post("raises", "");
    assert_eq!(r.status, 500);
    let j = r.json();
    assert_eq!(j["error"], "handler_error");
    assert_eq!(j["message"], "ValueError: no good input");
    let call = r.header("x-call-id").unwrap().to_owned();
    eventually("the traceback in the log", || {
        let out = g.cli_ok(&["logs", "raises"]);
        out.lines().any(|l| l.contains(&format!("[{call}]")) && l.contains("ValueError: no good input")).then_some(())
    });
    let bad_json = g.call("POST", "/function/raises", b"{nope", &["Content-Type: application/json"]);
    assert_eq!(bad_json.status, 400, "{}", bad_json.text());
}

#[test]
fn node_plain_forms_values_promises_and_async() {
    let g = gust();
    let forms = [
        ("nsquare", "module.exports = (x) => x ** 2;\n", "4", "16"),
        ("npromise", "module.exports = (x) => Promise.resolve({ doubled: x * 2 });\n", "21", "{\"doubled\":42}"),
        ("nasync", "module.exports = async (x) => `hi ${x}`;\n", "there", "hi there"),
        ("nnamed", "exports.handler = (x) => [x, x];\n", "1", "[1,1]"),
        ("nesm", "export default (x) => x + 1;\n", "1", "2"),
    ];
    for (name, code, input, want) in forms {
        let file = if name == "nesm" { "handler.mjs" } else { "handler.js" };
        let m = manifest(name, "node", &format!("handler = \"{file}\""));
        g.deploy(name, &[("gust.toml", &m), (file, code)]);
        let r = g.post(name, input);
        assert_eq!((r.status, r.text().as_str()), (200, want), "{name}");
    }
    let throws = "module.exports = async () => { throw new TypeError('bad thing'); };\n";
    g.deploy("nthrow", &[("gust.toml", &manifest("nthrow", "node", "")), ("handler.js", throws)]);
    let r = g.post("nthrow", "");
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["message"], "TypeError: bad thing");
    eventually("the stack in the log", || g.cli_ok(&["logs", "nthrow"]).contains("TypeError: bad thing").then_some(()));
}

#[test]
fn exec_runs_any_executable_over_stdio_or_http() {
    let g = gust();
    let stdio = "#!/bin/sh\ntr a-z A-Z\n";
    g.deploy("upper", &[("gust.toml", &manifest("upper", "exec", "handler = \"run\"")), ("run", stdio)]);
    assert_eq!(g.post("upper", "shout").text(), "SHOUT");

    // An executable serving HTTP on $PORT, written with Python's standard library.
    let server = r#"#!/usr/bin/env python3
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("served " + self.path + " " + os.environ.get("TARGET", "")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;
    let m = manifest("web", "exec", "handler = \"server\"\nprotocol = \"http\"\n[env]\nTARGET = \"t\"");
    g.deploy("web", &[("gust.toml", &m), ("server", server)]);
    let r = g.call("GET", "/function/web/page?x=1", b"", &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "served /page?x=1 t"));
    assert_eq!(
        g.call("GET", "/function/web/again", b"", &[]).text(),
        "served /again t",
        "warm call on the same server"
    );
}

#[test]
fn shell_failure_is_a_500_and_stderr_is_logged() {
    let g = gust();
    let script = "#!/bin/sh\necho 'about to fail' >&2\nexit 3\n";
    g.deploy("fails", &[("gust.toml", &manifest("fails", "shell", "")), ("handler.sh", script)]);
    let r = g.post("fails", "");
    assert_eq!(r.status, 500);
    let msg = r.json()["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("exited with status 3") && msg.contains("about to fail"), "{msg}");
    let call = r.header("x-call-id").unwrap().to_owned();
    eventually("stderr in the log", || {
        g.cli_ok(&["logs", "fails"]).contains(&format!("stderr [{call}]: about to fail")).then_some(())
    });
}

/// An interpreter gust could not find at start-up: the banner says so and that the pool
/// it would feed is off, a deploy of that runtime fails (422) with the setting that
/// fixes it and takes no traffic, a call answers 503, and other runtimes still serve.
#[test]
fn a_missing_interpreter_fails_its_deploys_with_the_fix_and_leaves_the_rest_serving() {
    let g = crate::gust_env(&[("GUST_PYTHON", "/nonexistent/python3")]);
    assert!(g.banner.contains("pools:     python off (no interpreter)"), "{}", g.banner);
    assert!(g.banner.contains("python     unavailable: `/nonexistent/python3` not found"), "{}", g.banner);
    let dir = g.function(
        "nopy",
        &[("gust.toml", &manifest("nopy", "python", "")), ("handler.py", "def handle(d):\n    return 1\n")],
    );
    let out = g.cli(&["deploy", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("nopy-00001 failed to start") && err.contains("set GUST_PYTHON or --python"), "{err}");
    assert!(err.contains("(HTTP 422)"), "{err}");
    let r = g.post("nopy", "");
    assert_eq!(r.status, 503, "{}", r.text());

    g.deploy("echo", &[("gust.toml", &manifest("echo", "shell", "")), ("handler.sh", "cat\n")]);
    let r = g.post("echo", "still here");
    assert_eq!((r.status, r.text()), (200, "still here".to_owned()));
}
