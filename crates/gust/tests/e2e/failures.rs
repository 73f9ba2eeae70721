//! Failures (point 7): timeouts, crashes, oversized bodies, unknown functions, broken
//! handlers. None of them takes the server down or disturbs other functions.

use crate::{gust, manifest};

#[test]
fn a_call_past_its_timeout_gets_504_and_the_stuck_instance_is_replaced() {
    let g = gust();
    let py = "import time\ndef handle(e, c):\n    if e.path == '/hang':\n        time.sleep(3600)\n    return 'fine'\n";
    g.deploy(
        "hangs",
        &[("gust.toml", &manifest("hangs", "python", "[limits]\ntimeout = \"500ms\"")), ("handler.py", py)],
    );
    assert_eq!(g.post("hangs", "").text(), "fine");
    let stuck = g.instance_pids("hangs")[0];
    let r = g.call("POST", "/function/hangs/hang", b"", &[]);
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "timeout");
    assert!(r.json()["message"].as_str().unwrap().contains("limits.timeout"));
    gust_test_support::eventually("the stuck instance to be killed", || {
        (!gust_test_support::alive(stuck)).then_some(())
    });
    assert_eq!(g.post("hangs", "").text(), "fine", "a new instance serves the next call");
    assert_ne!(g.instance_pids("hangs"), vec![stuck]);
}

#[test]
fn a_shell_call_past_its_timeout_gets_504() {
    let g = gust();
    g.deploy(
        "shhang",
        &[
            ("gust.toml", &manifest("shhang", "shell", "[limits]\ntimeout = \"300ms\"")),
            ("handler.sh", "#!/bin/sh\nsleep 3600\n"),
        ],
    );
    let r = g.post("shhang", "");
    assert_eq!(r.status, 504, "{}", r.text());
}

#[test]
fn a_crashing_instance_gives_502_with_its_last_words_and_is_replaced() {
    let g = gust();
    let py = "import os, sys\ndef handle(e, c):\n    if e.path == '/die':\n        print('dying now', file=sys.stderr, flush=True)\n        os._exit(7)\n    return 'alive'\n";
    g.deploy("crashy", &[("gust.toml", &manifest("crashy", "python", "")), ("handler.py", py)]);
    assert_eq!(g.post("crashy", "").text(), "alive");
    let r = g.call("POST", "/function/crashy/die", b"", &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    let j = r.json();
    assert_eq!(j["error"], "crashed");
    let msg = j["message"].as_str().unwrap();
    assert!(msg.contains("exited with status 7") && msg.contains("dying now"), "{msg}");
    assert_eq!(j["call_id"], r.header("x-call-id").unwrap());
    assert_eq!(g.post("crashy", "").text(), "alive");
    let d = g.describe("crashy");
    assert_eq!(d["recent_errors"][0]["status"], 502);
}

#[test]
fn a_first_revision_that_cannot_load_fails_its_deploy_and_its_calls_get_503_saying_why() {
    let g = gust();
    let dir = g.function(
        "broken",
        &[("gust.toml", &manifest("broken", "python", "")), ("handler.py", "import not_a_module_anywhere\n")],
    );
    let out = g.cli(&["deploy", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("broken-00001 failed to start"), "{err}");
    assert!(err.contains("not_a_module_anywhere"), "the traceback is shown: {err}");
    let r = g.post("broken", "");
    assert_eq!((r.status, r.json()["error"].as_str()), (503, Some("not_ready")), "{}", r.text());
    let msg = r.json()["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("not_a_module_anywhere"), "{msg}");

    let dir = g.function(
        "nbroken",
        &[("gust.toml", &manifest("nbroken", "node", "")), ("handler.js", "module.exports = 42;\n")],
    );
    let out = g.cli(&["deploy", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("exports no function"), "{err}");
    let r = g.post("nbroken", "");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["message"].as_str().unwrap().contains("exports no function"), "{}", r.text());
}

#[test]
fn bodies_over_the_limit_get_413_without_reaching_the_function() {
    let g = gust();
    let py = "def handle(e, c):\n    return str(len(e.raw_body))\n";
    g.deploy(
        "small",
        &[("gust.toml", &manifest("small", "python", "[limits]\nmax_body = \"1Ki\"")), ("handler.py", py)],
    );
    assert_eq!(g.post("small", &"a".repeat(1024)).text(), "1024");
    let big = vec![b'a'; 4096];
    let r = g.call("POST", "/function/small", &big, &[]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"], "body_too_large");
    // Without a Content-Length the limit is found while streaming.
    let r = g.call("POST", "/function/small", &big, &["Transfer-Encoding: chunked"]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(g.post("small", "ok").text(), "2", "the function still serves");
    g.deploy(
        "shsmall",
        &[
            ("gust.toml", &manifest("shsmall", "shell", "[limits]\nmax_body = \"1Ki\"")),
            ("handler.sh", "#!/bin/sh\nwc -c\n"),
        ],
    );
    let r = g.call("POST", "/function/shsmall", &big, &["Transfer-Encoding: chunked"]);
    assert_eq!(r.status, 413, "{}", r.text());
}

#[test]
fn unknown_functions_and_paths_get_404_json() {
    let g = gust();
    let r = g.post("nobody", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "function_not_found");
    assert!(r.json()["message"].as_str().unwrap().contains("gust deploy"));
    assert!(r.header("x-call-id").is_some());
    let r = g.call("GET", "/elsewhere", b"", &[]);
    assert_eq!((r.status, r.json()["error"].as_str()), (404, Some("not_found")));
    let r = g.call("PUT", "/api/v1/functions", b"", &[]);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, POST")));
}

#[test]
fn one_failing_function_does_not_disturb_another() {
    let g = gust();
    g.deploy(
        "good",
        &[("gust.toml", &manifest("good", "python", "")), ("handler.py", "def handle(e, c):\n    return 'good'\n")],
    );
    g.deploy(
        "bad",
        &[
            ("gust.toml", &manifest("bad", "python", "")),
            ("handler.py", "import os\ndef handle(e, c):\n    os._exit(1)\n"),
        ],
    );
    for _ in 0..3 {
        assert_eq!(g.post("bad", "").status, 502);
        assert_eq!(g.post("good", "").text(), "good");
    }
    assert_eq!(g.call("GET", "/healthz", b"", &[]).status, 200);
}
