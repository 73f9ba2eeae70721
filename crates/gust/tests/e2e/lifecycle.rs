//! `gust up`: banner, health, restart, signals and draining (issue 2, point 1).

use gust_test_support::{Gust, alive, eventually, wait_with_deadline};

use crate::{gust, held_until, manifest};

#[test]
fn up_prints_where_it_listens_its_data_and_isolation() {
    let g = gust();
    assert!(g.banner.contains(&format!("listening on {}", g.url)), "{}", g.banner);
    assert!(g.banner.contains(g.data.to_str().unwrap()), "{}", g.banner);
    assert!(g.banner.contains("isolation: none"), "{}", g.banner);
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
    let last = g.post("keep", "");
    assert_eq!(last.text(), "kept");
    let id = last.header("x-call-id").unwrap().to_owned();
    let pids = g.instance_pids("keep");
    assert_eq!(g.stop().code(), Some(0), "a SIGTERM stop exits 0");
    for pid in pids {
        assert!(!alive(pid), "instance {pid} outlived the server");
    }
    let g = g.restart();
    assert!(g.banner.contains("functions: 1"), "{}", g.banner);
    // The record of a call answered just before the stop was written before the exit.
    let rec = g.call("GET", &format!("/calls/{id}"), b"", &[]);
    assert_eq!(rec.status, 200, "{}", rec.text());
    assert_eq!(rec.json()["result"]["status"], 200);
    assert_eq!(g.post("keep", "").text(), "kept");
    assert_eq!(g.describe("keep")["revisions"][0]["id"], "keep-00001");
}

#[test]
fn sigterm_drains_a_call_in_flight_then_exits_zero() {
    let mut g = gust();
    let go = g.work.join("go");
    let handler = held_until(&go, "'finished'");
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

/// Runs `gust up` as a user would, with no flags, and returns it with its banner.
fn up_without_flags(env: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gust"))
        .arg("up")
        .envs(env.iter().copied())
        .env_remove("GUST_DATA")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut banner = String::new();
        for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            banner.push_str(&l);
            banner.push('\n');
            if l.trim_start().starts_with("functions:") {
                let _ = tx.send(banner.clone());
            }
        }
    });
    let banner = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("gust up printed no banner");
    (child, banner)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn listen_address_from_env_and_data_under_home_by_default() {
    let home = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let (mut child, banner) = up_without_flags(&[("GUST_LISTEN", &addr), ("HOME", home.path().to_str().unwrap())]);
    let data = home.path().join(".local/share/gust");
    assert!(banner.contains(&format!("listening on http://{addr}")), "{banner}");
    assert!(banner.contains(data.to_str().unwrap()), "{banner}");
    assert!(data.join("gust.db").exists(), "the database lives in the default data directory");
    // The CLI reaches it through --url.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gust"))
        .args(["--url", &format!("http://{addr}"), "ls"])
        .env_remove("GUST_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("NAME"));
    gust_test_support::signal(child.id(), libc::SIGINT);
    assert_eq!(wait_with_deadline(&mut child).code(), Some(0), "SIGINT exits 0 too");
}

#[test]
fn interpreter_shims_are_resolved_to_the_real_executable() {
    let real =
        std::process::Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().unwrap();
    let real = String::from_utf8(real.stdout).unwrap().trim().to_owned();
    let shims = tempfile::tempdir().unwrap();
    let shim = shims.path().join("python3");
    // A version-manager style shim: a script that finds and execs the interpreter.
    std::fs::write(&shim, format!("#!/bin/sh\nexec {real:?} \"$@\"\n")).unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", shims.path().display(), std::env::var("PATH").unwrap());
    let g = crate::gust_env(&[("PATH", &path)]);
    let info = g.call("GET", "/api/v1/info", b"", &[]).json();
    let python = info["interpreters"].as_array().unwrap().iter().find(|i| i["runtime"] == "python").unwrap().clone();
    assert_eq!(python["path"], real.as_str(), "{python}");
    assert!(g.banner.contains(&real), "{}", g.banner);
    g.deploy(
        "where",
        &[
            ("gust.toml", &manifest("where", "python", "")),
            ("handler.py", "import sys\ndef handle(e, c):\n    return sys.executable\n"),
        ],
    );
    assert_eq!(g.post("where", "").text(), real, "instances run the real interpreter, not the shim");
}

#[test]
fn bad_flags_are_usage_errors() {
    let err = crate::up_refused(&["--drain-timeout", "soon"]);
    assert!(err.contains("--drain-timeout"), "{err}");
    let _ = Gust::start; // keep the harness import used in every configuration
}

/// What process `pid` did over 3 s left alone: its threads' context switches (each
/// wake-up of a sleeping thread is one) and its CPU time in clock ticks. A window of
/// idleness observed, not a wait for something.
fn three_idle_seconds(pid: u32) -> (u64, u64) {
    let (switched, ticks) = (switches(pid), cpu_ticks(pid));
    std::thread::sleep(std::time::Duration::from_secs(3));
    (switches(pid) - switched, cpu_ticks(pid) - ticks)
}

/// User plus system CPU time of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let fields = gust_test_support::proc_stat(pid).unwrap();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Context switches of every thread of process `pid` so far.
fn switches(pid: u32) -> u64 {
    let mut n = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        n += status
            .lines()
            .filter(|l| l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    n
}

#[test]
fn an_idle_server_sleeps_instead_of_ticking() {
    let g = gust();
    let scale = "[[triggers]]\nschedule = \"0 3 * * *\"\n\n\
                 [scale]\ninitial = 0\nstable_window = \"1s\"\nscale_to_zero_grace = \"0s\"\n";
    g.deploy(
        "quiet",
        &[("gust.toml", &manifest("quiet", "python", scale)), ("handler.py", "def handle(e, c):\n    return 'ok'\n")],
    );
    assert_eq!(g.post("quiet", "").text(), "ok");
    eventually("the function to scale to zero", || {
        g.describe("quiet")["instances"].as_array()?.is_empty().then_some(())
    });
    // The autoscaler, the schedules and the topic consumers each ticked 4 times a second
    // before they slept until needed, so 3 s of ticking would be 36 wake-ups or more.
    let (woke, _) = three_idle_seconds(g.pid());
    assert!(woke <= 8, "an idle server woke {woke} times in 3 s");
    // And it still answers, scaling from zero again.
    assert_eq!(g.post("quiet", "").text(), "ok");
}

#[test]
fn busy_polling_spins_after_requests_then_sleeps_and_refuses_bad_windows() {
    // A window shorter than the pause between two looks below, so each look finds the
    // spin it started ended and counted.
    let g = crate::gust_env(&[("GUST_BUSY_POLL", "5ms")]);
    let info = || g.call("GET", "/api/v1/info", b"", &[]).json()["busy_poll"].clone();
    assert_eq!(info()["window_us"], 5000, "{}", info());
    g.deploy(
        "spun",
        &[
            (
                "gust.toml",
                &manifest("spun", "python", "[scale]\nstable_window = \"1s\"\nscale_to_zero_grace = \"0s\"\n"),
            ),
            ("handler.py", "def handle(e, c):\n    return 'ok'\n"),
        ],
    );
    assert_eq!(g.post("spun", "").text(), "ok");
    eventually("spinning after requests to be counted", || (info()["spun_us"].as_u64().unwrap_or(0) > 0).then_some(()));
    // The spin is bounded: once the window has passed the server sleeps as one without
    // busy polling does (see `an_idle_server_sleeps_instead_of_ticking`).
    eventually("the function to scale to zero", || {
        g.describe("spun")["instances"].as_array()?.is_empty().then_some(())
    });
    let (woke, cpu) = three_idle_seconds(g.pid());
    assert!(woke <= 8, "a busy-polling server woke {woke} times in 3 s of idleness");
    // A spin that went on would have used the whole 3 s (300 ticks of 10 ms) of a core.
    assert!(cpu < 100, "a busy-polling server used {cpu} ticks of CPU in 3 s of idleness");
    assert_eq!(g.post("spun", "").text(), "ok");
    // Off by default, and a window past 100 ms or not a duration is a usage error.
    let plain = gust();
    assert_eq!(plain.call("GET", "/api/v1/info", b"", &[]).json()["busy_poll"]["window_us"], 0);
    for (bad, says) in [("1s", "at most 100ms"), ("soon", "not a duration")] {
        let err = crate::up_refused(&["--busy-poll", bad]);
        assert!(err.contains("--busy-poll") && err.contains(says), "{err}");
    }
}
