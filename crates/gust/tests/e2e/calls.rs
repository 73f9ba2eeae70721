//! What a call carries in and out (points 4, 9): method, path, query, headers, body,
//! status, response headers, streaming, call ids, and `gust invoke`.

use gust_test_support::{Stream, eventually};

use crate::{gust, manifest};

const PY_ECHO: &str = r#"
def handle(event, context):
    return {
        "statusCode": 201,
        "headers": {"X-Echo": "yes"},
        "body": {
            "method": event.method,
            "path": event.path,
            "query": event.query,
            "header": event.headers.get("x-custom"),
            "body": event.body,
            "call_id": context.call_id,
        },
    }
"#;

#[test]
fn any_method_and_sub_path_reach_the_function_with_everything() {
    let g = gust();
    g.deploy("echo", &[("gust.toml", &manifest("echo", "python", "")), ("handler.py", PY_ECHO)]);
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let r = g.call(
            method,
            "/function/echo/any/sub/path?a=1&b=two",
            br#"{"n": 5}"#,
            &["X-Custom: hi", "Content-Type: application/json", "X-Call-Id: my-call-1"],
        );
        assert_eq!(r.status, 201, "{method}: {}", r.text());
        assert_eq!(r.header("x-echo"), Some("yes"));
        assert_eq!(r.header("x-call-id"), Some("my-call-1"), "the caller's call id is kept");
        assert!(r.header("x-duration-seconds").unwrap().parse::<f64>().unwrap() >= 0.0);
        let j = r.json();
        assert_eq!(j["method"], method);
        assert_eq!(j["path"], "/any/sub/path");
        assert_eq!(j["query"]["a"], "1");
        assert_eq!(j["query"]["b"], "two");
        assert_eq!(j["header"], "hi");
        assert_eq!(j["body"]["n"], 5, "JSON bodies arrive parsed");
        assert_eq!(j["call_id"], "my-call-1");
    }
    let r = g.call("GET", "/function/echo", b"", &[]);
    assert_eq!(r.json()["path"], "/");
    let id = r.header("x-call-id").unwrap();
    assert_eq!(id.len(), 36, "a fresh UUID when the caller sends none: {id}");
}

#[test]
fn node_full_form_sees_the_request() {
    let g = gust();
    let handler = r#"module.exports = async (event, context) => ({
  statusCode: 202,
  headers: { 'x-node': '1' },
  body: { method: event.method, path: event.path, q: event.query.q, body: event.body, id: context.callId, h: event.headers['x-custom'] },
});"#;
    g.deploy("nfull", &[("gust.toml", &manifest("nfull", "node", "")), ("handler.js", handler)]);
    let r = g.call("PUT", "/function/nfull/x/y?q=7", br#"[1,2]"#, &["Content-Type: application/json", "X-Custom: c"]);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.header("x-node"), Some("1"));
    let j = r.json();
    assert_eq!((j["method"].as_str(), j["path"].as_str(), j["q"].as_str()), (Some("PUT"), Some("/x/y"), Some("7")));
    assert_eq!(j["body"], serde_json::json!([1, 2]));
    assert_eq!(j["id"], r.header("x-call-id").unwrap());
    assert_eq!(j["h"], "c");
}

#[test]
fn shell_gets_the_watchdog_environment_and_the_body_twice() {
    let g = gust();
    let script = "#!/bin/sh\nin=$(cat)\necho \"$Http_Method $Http_Path $Http_Query $Http_X_Custom $Http_Content_Type stdin=$in arg=$1\"\n";
    g.deploy("cgi", &[("gust.toml", &manifest("cgi", "shell", "")), ("handler.sh", script)]);
    let r = g.call("PATCH", "/function/cgi/p/q?x=1", b"payload", &["X-Custom: hdr", "Content-Type: text/plain"]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().trim(), "PATCH /p/q x=1 hdr text/plain stdin=payload arg=payload");
}

#[test]
fn manifest_env_reaches_every_runtime() {
    let g = gust();
    let env = "[env]\nTARGET = \"Go Sample v1\"\n";
    g.deploy(
        "envpy",
        &[
            ("gust.toml", &manifest("envpy", "python", env)),
            ("handler.py", "import os\ndef handle(e, c):\n    return os.environ['TARGET']\n"),
        ],
    );
    g.deploy(
        "envnode",
        &[
            ("gust.toml", &manifest("envnode", "node", env)),
            ("handler.js", "module.exports = () => process.env.TARGET;\n"),
        ],
    );
    g.deploy(
        "envsh",
        &[("gust.toml", &manifest("envsh", "shell", env)), ("handler.sh", "#!/bin/sh\nprintf '%s' \"$TARGET\"\n")],
    );
    for f in ["envpy", "envnode", "envsh"] {
        assert_eq!(g.post(f, "").text(), "Go Sample v1", "{f}");
    }
}

#[test]
fn a_streamed_response_reaches_the_client_line_by_line() {
    let g = gust();
    let go = g.work.join("go-stream");
    let handler = format!(
        r#"import os, time
def handle(event, context):
    def events():
        yield "data: first\n\n"
        while not os.path.exists({go:?}):
            time.sleep(0.01)
        yield "data: second\n\n"
    return {{"statusCode": 200, "headers": {{"Content-Type": "text/event-stream"}}, "body": events()}}
"#,
        go = go.to_str().unwrap()
    );
    g.deploy("sse", &[("gust.toml", &manifest("sse", "python", "")), ("handler.py", &handler)]);
    let mut s = Stream::open(&format!("{}/function/sse", g.url));
    // The first event arrives while the function is still blocked before the second:
    // the gateway forwards bytes as they come instead of collecting the response.
    assert_eq!(s.next_line().as_deref(), Some("data: first"));
    assert!(s.running());
    std::fs::write(&go, "").unwrap();
    let rest: Vec<String> = std::iter::from_fn(|| s.next_line()).filter(|l| !l.is_empty()).collect();
    assert_eq!(rest, ["data: second"]);
}

#[test]
fn node_streams_an_async_generator() {
    let g = gust();
    let go = g.work.join("go-node");
    let handler = format!(
        r#"const fs = require('fs');
module.exports = async (event) => ({{
  statusCode: 200,
  headers: {{ 'content-type': 'text/event-stream' }},
  body: (async function* () {{
    yield 'data: one\n\n';
    while (!fs.existsSync({go:?})) await new Promise((r) => setTimeout(r, 10));
    yield 'data: two\n\n';
  }})(),
}});"#,
        go = go.to_str().unwrap()
    );
    g.deploy("nsse", &[("gust.toml", &manifest("nsse", "node", "")), ("handler.js", &handler)]);
    let mut s = Stream::open(&format!("{}/function/nsse", g.url));
    assert_eq!(s.next_line().as_deref(), Some("data: one"));
    assert!(s.running());
    std::fs::write(&go, "").unwrap();
    let rest: Vec<String> = std::iter::from_fn(|| s.next_line()).filter(|l| !l.is_empty()).collect();
    assert_eq!(rest, ["data: two"]);
}

#[test]
fn gust_invoke_sends_data_files_methods_and_headers() {
    let g = gust();
    g.deploy("echo", &[("gust.toml", &manifest("echo", "python", "")), ("handler.py", PY_ECHO)]);
    let out =
        g.cli_ok(&["invoke", "echo", "-d", "{\"n\": 1}", "-H", "Content-Type: application/json", "-H", "X-Custom: v"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (j["method"].as_str(), j["body"]["n"].as_i64(), j["header"].as_str()),
        (Some("POST"), Some(1), Some("v"))
    );
    let file = g.work.join("body.txt");
    std::fs::write(&file, "from a file").unwrap();
    let out = g.cli_ok(&["invoke", "echo", "-f", file.to_str().unwrap(), "-X", "put", "--path", "/sub?z=9"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (j["method"].as_str(), j["path"].as_str(), j["body"].as_str()),
        (Some("PUT"), Some("/sub"), Some("from a file"))
    );
    assert_eq!(j["query"]["z"], "9");
    let out = g.cli_ok(&["invoke", "echo", "-i"]);
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    assert!(out.contains("x-call-id:"), "{out}");
    let missing = g.cli(&["invoke", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("function `nope` not found"));
}

#[test]
fn log_lines_are_timestamped_and_tagged_with_the_call_id() {
    let g = gust();
    let py = "import sys\ndef handle(e, c):\n    print('hello from python')\n    print('to stderr', file=sys.stderr)\n    return 'ok'\n";
    g.deploy("talk", &[("gust.toml", &manifest("talk", "python", "")), ("handler.py", py)]);
    let r = g.call("POST", "/function/talk", b"", &["X-Call-Id: call-abc"]);
    assert_eq!(r.status, 200);
    let out = eventually("the lines in gust logs", || {
        let out = g.cli_ok(&["logs", "talk"]);
        (out.contains("hello from python") && out.contains("to stderr")).then_some(out)
    });
    let line = out.lines().find(|l| l.contains("hello from python")).unwrap();
    assert!(line.contains("stdout [call-abc]: hello from python"), "{line}");
    assert!(line.starts_with("20"), "timestamped: {line}");
    assert!(out.lines().any(|l| l.contains("stderr [call-abc]: to stderr")), "{out}");

    // -f follows new lines as they are written.
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_gust"))
        .args(["logs", "talk", "-f", "--tail", "0"])
        .env("GUST_URL", &g.url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let seen = eventually("a followed line", || {
        let _ = g.call("POST", "/function/talk", b"", &["X-Call-Id: call-follow"]);
        rx.recv_timeout(std::time::Duration::from_millis(200)).ok()
    });
    assert!(seen.contains("[call-follow]"), "{seen}");
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn request_bodies_stream_to_an_http_function_while_its_answer_streams_back() {
    let g = gust();
    let mark = g.work.join("received");
    // A Node server on $GUST_SOCKET that records and acknowledges each chunk as it arrives.
    let server = format!(
        r#"#!/usr/bin/env node
const fs = require('fs');
require('http').createServer((req, res) => {{
  res.writeHead(200, {{ 'content-type': 'text/plain' }});
  req.on('data', (c) => {{ fs.appendFileSync({mark:?}, c); res.write('got ' + c.toString().trim() + '\n'); }});
  req.on('end', () => res.end('end\n'));
}}).listen(process.env.GUST_SOCKET);
"#,
        mark = mark.to_str().unwrap()
    );
    let m = manifest("duplex", "exec", "handler = \"server\"\nprotocol = \"http\"");
    g.deploy("duplex", &[("gust.toml", &m), ("server", &server)]);
    // curl sends a streamed upload but reads no answer until it has finished sending, so
    // this client is a plain socket speaking chunked HTTP/1.1.
    let mut conn = std::net::TcpStream::connect(g.url.trim_start_matches("http://")).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let head = "PUT /function/duplex HTTP/1.1\r\nHost: gust\r\nTransfer-Encoding: chunked\r\n\r\n";
    std::io::Write::write_all(&mut conn, format!("{head}6\r\nfirst\n\r\n").as_bytes()).unwrap();
    eventually("the first chunk to reach the function before the body ends", || {
        (std::fs::read_to_string(&mark).ok()? == "first\n").then_some(())
    });
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let mut answer = String::new();
    while !answer.contains("got first\n") {
        let mut line = String::new();
        assert_ne!(std::io::BufRead::read_line(&mut reader, &mut line).unwrap(), 0, "closed early: {answer}");
        answer.push_str(&line);
    }
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("x-call-id:"), "{answer}");
    // Only now does the rest of the request go out.
    std::io::Write::write_all(&mut conn, b"7\r\nsecond\n\r\n0\r\n\r\n").unwrap();
    let mut rest = String::new();
    while !rest.ends_with("0\r\n\r\n") {
        let mut line = String::new();
        assert_ne!(std::io::BufRead::read_line(&mut reader, &mut line).unwrap(), 0, "closed early: {rest}");
        rest.push_str(&line);
    }
    assert!(rest.contains("got second\n") && rest.contains("end\n"), "{rest}");
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), "first\nsecond\n");
}

#[test]
fn calls_reuse_the_connection_to_the_instance_whatever_the_answer() {
    let g = gust();
    // A Node server on $GUST_SOCKET that answers with how many connections it has had,
    // with a fixed-length body, a chunked one or none at all.
    let server = r#"#!/usr/bin/env node
let connections = 0;
const server = require('http').createServer((req, res) => {
  const n = String(connections);
  if (req.url.endsWith('/chunked')) { res.write(n); res.end(); }
  else if (req.url.endsWith('/empty')) { res.setHeader('x-connections', n); res.end(); }
  else { res.setHeader('content-length', n.length); res.end(n); }
});
server.on('connection', () => { connections += 1; });
server.listen(process.env.GUST_SOCKET);
"#;
    let m = manifest("counter", "exec", "handler = \"server\"\nprotocol = \"http\"");
    g.deploy("counter", &[("gust.toml", &m), ("server", server)]);
    // gust's readiness probe is a connection too, so the count starts wherever it starts,
    // and must then stay put.
    let mut first = None;
    for path in ["counter/fixed", "counter/chunked", "counter/empty", "counter/fixed", "counter/chunked"] {
        let r = g.post(path, "");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let seen =
            if path.ends_with("empty") { r.header("x-connections").unwrap_or_default().to_owned() } else { r.text() };
        assert_eq!(&seen, first.get_or_insert_with(|| seen.clone()), "{path}: every call on the one kept connection");
    }
}
