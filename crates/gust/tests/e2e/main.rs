//! End-to-end tests: each starts the real `gust` binary (`gust up` on a free port with
//! its own data directory) and drives it with the `gust` CLI and curl.
//!
//! Helpers here panic to fail the test that called them.
#![allow(clippy::unwrap_used)]

mod async_calls;
mod builds;
mod calls;
mod deploy;
mod events;
mod failures;
mod instances;
mod isolation;
mod lambda;
mod lifecycle;
mod limits;
mod pools;
mod releases;
mod routes;
mod runtimes;
mod scaling;
mod security;
mod topics;

use gust_test_support::Gust;

/// A fresh server for one test.
fn gust() -> Gust {
    Gust::start(env!("CARGO_BIN_EXE_gust"))
}

/// A fresh server with extra environment.
fn gust_env(env: &[(&str, &str)]) -> Gust {
    Gust::start_env(env!("CARGO_BIN_EXE_gust"), env)
}

/// Runs `gust up` with `args` on a free port, expecting it to refuse them as a usage
/// error (exit 64) before it serves or writes anything; returns what it printed.
fn up_refused(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gust"))
        .args(["up", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("GUST_DATA", std::env::temp_dir().join("gust-e2e-never-created"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{err}");
    err
}

/// A Python handler (full form) that holds every call until the file `go` exists, then
/// answers with the Python expression `answer`: calls stay in flight for as long as a
/// test needs to look at them.
fn held_until(go: &std::path::Path, answer: &str) -> String {
    format!(
        "import os, time\ndef handle(e, c):\n    while not os.path.exists({go:?}):\n        time.sleep(0.01)\n    return {answer}\n",
        go = go.to_str().unwrap()
    )
}

/// A manifest with `extra` appended (sections such as `[scale]` included).
fn manifest(name: &str, runtime: &str, extra: &str) -> String {
    format!("name = \"{name}\"\nruntime = \"{runtime}\"\n{extra}\n")
}

/// The function's log once it holds a line `wanted` accepts: lines are read from an
/// instance's pipes after it answers, so a test waits for them rather than racing them.
fn log_with(g: &Gust, function: &str, wanted: impl Fn(&str) -> bool) -> String {
    gust_test_support::eventually(&format!("a matching line in {function}'s log"), || {
        let logs = g.cli_ok(&["logs", function]);
        logs.lines().any(&wanted).then_some(logs)
    })
}
