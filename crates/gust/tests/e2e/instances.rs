//! Warm reuse, scratch directories, idle stop, scale-out and the bounded queue (point 6).

use gust_test_support::{curl, eventually};

use crate::{gust, held_until, manifest};

const COUNTER: &str = r#"import os
def handle(event, context):
    path = os.path.join(os.environ["TMPDIR"], "count")
    assert os.environ["GUST_SCRATCH"] == os.environ["TMPDIR"]
    with open(path, "a") as f:
        f.write("x")
    return str(len(open(path).read()))
"#;

#[test]
fn warm_instances_keep_their_scratch_until_idle_then_start_fresh() {
    let g = gust();
    g.deploy(
        "counter",
        &[
            (
                "gust.toml",
                &manifest("counter", "python", "[scale]\nstable_window = \"1s\"\nscale_to_zero_grace = \"0s\""),
            ),
            ("handler.py", COUNTER),
        ],
    );
    assert_eq!(g.post("counter", "").text(), "1");
    assert_eq!(g.post("counter", "").text(), "2", "the warm instance and its scratch are reused");
    let pid = g.instance_pids("counter")[0];
    eventually("the idle instance to stop", || g.instance_pids("counter").is_empty().then_some(()));
    eventually("its process to exit", || (!gust_test_support::alive(pid)).then_some(()));
    assert_eq!(g.post("counter", "").text(), "1", "a fresh instance has an empty scratch dir");
}

#[test]
fn stdio_instances_keep_scratch_too() {
    let g = gust();
    let script = "#!/bin/sh\necho x >> \"$TMPDIR/n\"\nwc -l < \"$TMPDIR/n\" | tr -d ' '\n";
    g.deploy(
        "shcount",
        &[
            (
                "gust.toml",
                &manifest("shcount", "shell", "[scale]\nstable_window = \"1s\"\nscale_to_zero_grace = \"0s\""),
            ),
            ("handler.sh", script),
        ],
    );
    assert_eq!(g.post("shcount", "").text().trim(), "1");
    assert_eq!(g.post("shcount", "").text().trim(), "2");
    eventually("the idle instance to go", || {
        g.describe("shcount")["instances"].as_array().unwrap().is_empty().then_some(())
    });
    assert_eq!(g.post("shcount", "").text().trim(), "1");
}

#[test]
fn busy_instances_scale_out_up_to_max() {
    let g = gust();
    let go = g.work.join("go-scale");
    g.deploy(
        "wide",
        &[
            ("gust.toml", &manifest("wide", "python", "[scale]\nmax = 3")),
            ("handler.py", &held_until(&go, "str(os.getpid())")),
        ],
    );
    let url = format!("{}/function/wide", g.url);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || curl(&url, "POST", b"", &[]))
        })
        .collect();
    eventually("three instances, each busy", || {
        let d = g.describe("wide");
        let inst = d["instances"].as_array()?.clone();
        (inst.len() == 3 && inst.iter().all(|i| i["in_flight"] == 1)).then_some(())
    });
    std::fs::write(&go, "").unwrap();
    let mut pids: Vec<String> = calls.into_iter().map(|c| c.join().unwrap()).map(|r| r.text()).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 3, "each call ran on its own instance");
}

#[test]
fn past_max_calls_queue_and_past_the_queue_get_429_with_retry_after() {
    let g = gust();
    let go = g.work.join("go-queue");
    let m = manifest("narrow", "python", "[scale]\nmax = 1\nqueue_depth = 1\nqueue_timeout = \"30s\"");
    g.deploy("narrow", &[("gust.toml", &m), ("handler.py", &held_until(&go, "str(os.getpid())"))]);
    let url = format!("{}/function/narrow", g.url);
    let spawn = |url: String| std::thread::spawn(move || curl(&url, "POST", b"", &[]));
    let first = spawn(url.clone());
    eventually("the first call to hold the only instance", || {
        (g.describe("narrow")["instances"][0]["in_flight"] == 1).then_some(())
    });
    let second = spawn(url.clone());
    eventually("the second call to wait in the queue", || (g.describe("narrow")["queued"] == 1).then_some(()));
    // The queue holds one; a third call finds it full.
    let third = curl(&url, "POST", b"", &[]);
    assert_eq!(third.status, 429, "{}", third.text());
    assert_eq!(third.header("retry-after"), Some("1"));
    assert_eq!(third.json()["error"], "overloaded");
    assert!(third.json()["message"].as_str().unwrap().contains("scale.queue_depth"));
    std::fs::write(&go, "").unwrap();
    let (a, b) = (first.join().unwrap(), second.join().unwrap());
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.text(), b.text(), "the queued call ran on the same, only instance");
}

#[test]
fn a_queued_call_past_queue_timeout_gets_429() {
    let g = gust();
    let go = g.work.join("go-qt");
    let m = manifest("patient", "python", "[scale]\nmax = 1\nqueue_timeout = \"200ms\"");
    g.deploy("patient", &[("gust.toml", &m), ("handler.py", &held_until(&go, "str(os.getpid())"))]);
    let url = format!("{}/function/patient", g.url);
    let u = url.clone();
    let first = std::thread::spawn(move || curl(&u, "POST", b"", &[]));
    eventually("the first call in flight", || (g.describe("patient")["instances"][0]["in_flight"] == 1).then_some(()));
    let r = curl(&url, "POST", b"", &[]);
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "queue_timeout");
    assert_eq!(r.header("retry-after"), Some("1"));
    std::fs::write(&go, "").unwrap();
    assert_eq!(first.join().unwrap().status, 200);
}

#[test]
fn node_serves_concurrent_calls_on_one_instance() {
    let g = gust();
    let go = g.work.join("go-node-conc");
    let js = format!(
        "const fs = require('fs');\nmodule.exports = async () => {{ while (!fs.existsSync({go:?})) await new Promise(r => setTimeout(r, 10)); return String(process.pid); }};\n",
        go = go.to_str().unwrap()
    );
    g.deploy("nconc", &[("gust.toml", &manifest("nconc", "node", "")), ("handler.js", &js)]);
    let url = format!("{}/function/nconc", g.url);
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || curl(&url, "POST", b"", &[]))
        })
        .collect();
    eventually("four calls on one instance", || {
        let d = g.describe("nconc");
        let inst = d["instances"].as_array()?.clone();
        (inst.len() == 1 && inst[0]["in_flight"] == 4).then_some(())
    });
    std::fs::write(&go, "").unwrap();
    let pids: std::collections::BTreeSet<String> = calls.into_iter().map(|c| c.join().unwrap().text()).collect();
    assert_eq!(pids.len(), 1);
}

#[test]
fn min_scale_keeps_instances_warm() {
    let g = gust();
    let idle = "[scale]\nstable_window = \"1s\"\nscale_to_zero_grace = \"0s\"";
    let ok = "def handle(e, c):\n    return 'w'\n";
    g.deploy("warm", &[("gust.toml", &manifest("warm", "python", &format!("{idle}\nmin = 1"))), ("handler.py", ok)]);
    g.deploy("cold", &[("gust.toml", &manifest("cold", "python", idle)), ("handler.py", ok)]);
    let pid = eventually("a warm instance without any call", || g.instance_pids("warm").first().copied());
    assert_eq!(g.post("warm", "").text(), "w");
    assert_eq!(g.post("cold", "").text(), "w");
    // Once the function without `min` has gone idle and stopped, the one with it is
    // still there: same instance, same process.
    eventually("the cold function to scale to zero", || g.instance_pids("cold").is_empty().then_some(()));
    assert_eq!(g.instance_pids("warm"), vec![pid]);
}

#[test]
fn every_process_runs_without_new_privileges_in_its_own_group_under_the_instance_limits() {
    let g = gust();
    // A stdio call's process, started without a fork of gust and limited by prlimit(2)
    // as it starts: held, so its limits can be read from outside while it runs.
    let (pidfile, go) = (g.work.join("sh.pid"), g.work.join("sh.go"));
    let sh = format!(
        "#!/bin/sh\necho $$ > {pid}\nwhile [ ! -e {go} ]; do sleep 0.01; done\necho done\n",
        pid = pidfile.display(),
        go = go.display()
    );
    g.deploy("limits-sh", &[("gust.toml", &manifest("limits-sh", "shell", "")), ("handler.sh", &sh)]);
    let url = format!("{}/function/limits-sh", g.url);
    let held = std::thread::spawn(move || curl(&url, "POST", b"", &[]));
    let pid: u32 = eventually("the call's process", || std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok());
    let proc = |file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    eventually("the call's limits", || {
        let limits = proc("limits");
        let row =
            |name: &str| limits.lines().find(|l| l.starts_with(name)).map(|l| l.split_whitespace().collect::<Vec<_>>());
        let files = row("Max open files")?;
        let core = row("Max core file size")?;
        (files[3..5] == ["4096", "4096"] && core[4..6] == ["0", "0"]).then_some(())
    });
    assert!(proc("status").lines().any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])), "{}", proc("status"));
    let stat = proc("stat");
    let pgrp = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(2).unwrap().to_owned();
    assert_eq!(pgrp, pid.to_string(), "its own process group");
    std::fs::write(&go, "").unwrap();
    assert_eq!(held.join().unwrap().text(), "done\n");

    // A long-lived instance, forked from the zygote.
    let py = "import os, resource\ndef handle(d):\n    s = open('/proc/self/status').read()\n    nnp = [l.split()[1] for l in s.splitlines() if l.startswith('NoNewPrivs')][0]\n    return {'nnp': nnp, 'files': resource.getrlimit(resource.RLIMIT_NOFILE)[0], 'core': resource.getrlimit(resource.RLIMIT_CORE)[0], 'leader': os.getpgid(0) == os.getpid()}\n";
    g.deploy("limits-py", &[("gust.toml", &manifest("limits-py", "python", "")), ("handler.py", py)]);
    let v = g.post("limits-py", "").json();
    assert_eq!(v, serde_json::json!({"nnp": "1", "files": 4096, "core": 0, "leader": true}));
}
