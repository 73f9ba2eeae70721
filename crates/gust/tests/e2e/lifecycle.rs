//! `gust up`: banner, health, restart, signals and draining (issue 2, point 1).

use gust_test_support::{Gust, alive, eventually, wait_with_deadline};

use crate::{gust, manifest};

#[test]
fn up_prints_where_it_listens_its_data_and_isolation() {
    let g = gust();
    assert!(g.banner.contains(&format!("listening on {}", g.url)), "{}", g.banner);
    assert!(g.banner.contains(g.data.to_str().unwrap()), "{}", g.banner);
    assert!(g.banner.contains("isolation: process"), "{}", g.banner);
    let r = g.call("GET", "/healthz", b"", &[]);
    assert_eq!(r.status, 200);
    let info = g.call("GET", "/api/v1/info", b"", &[]).json();
    assert_eq!(info["data_dir"], g.data.to_str().unwrap());
    assert!(!info["isolation"]["applied"].as_array().unwrap().is_empty());
}

#[test]
fn functions_survive_a_restart() {
    let mut g = gust();
    g.deploy(
        "keep",
        &[("gust.toml", &manifest("keep", "python", "")), ("handler.py", "def handle(e, c):\n    return 'kept'\n")],
    );
    assert_eq!(g.post("keep", "").text(), "kept");
    let pids = g.instance_pids("keep");
    assert_eq!(g.stop().code(), Some(0), "a SIGTERM stop exits 0");
    for pid in pids {
        assert!(!alive(pid), "instance {pid} outlived the server");
    }
    let g = g.restart();
    assert!(g.banner.contains("functions: 1"), "{}", g.banner);
    assert_eq!(g.post("keep", "").text(), "kept");
    assert_eq!(g.describe("keep")["revisions"][0]["id"], "keep-00001");
}

#[test]
fn sigterm_drains_a_call_in_flight_then_exits_zero() {
    let mut g = gust();
    let go = g.work.join("go");
    let handler = format!(
        "import os, time\ndef handle(e, c):\n    while not os.path.exists({go:?}):\n        time.sleep(0.01)\n    return 'finished'\n",
        go = go.to_str().unwrap()
    );
    g.deploy("slow", &[("gust.toml", &manifest("slow", "python", "")), ("handler.py", &handler)]);
    let url = format!("{}/function/slow", g.url);
    let call = std::thread::spawn(move || gust_test_support::curl(&url, "POST", b"x", &[]));
    eventually("the call to be in flight", || {
        let d = g.describe("slow");
        (d["instances"].as_array()?.first()?["in_flight"] == 1).then_some(())
    });
    let mut child = g.terminate();
    // The server is draining: it must still be running, holding the call.
    eventually("the listener to close", || {
        (std::net::TcpStream::connect(g.url.trim_start_matches("http://")).is_err()).then_some(())
    });
    assert!(child.try_wait().unwrap().is_none(), "exited before the call in flight finished");
    std::fs::write(&go, "").unwrap();
    let r = call.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "finished"));
    assert_eq!(wait_with_deadline(&mut child).code(), Some(0));
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gust"))
        .args(["up", "--drain-timeout", "soon", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--drain-timeout"));
    let _ = Gust::start; // keep the harness import used in every configuration
}
