//! Warm pools (issue 4, points 1–3): Python instances fork from a zygote and Node
//! instances take a process started ahead of need; either way each takes its own
//! environment, scratch and process group, starts fresh when the pool cannot serve it
//! (and `describe` says why), and a dead zygote or spare is replaced.

use gust_test_support::{alive, eventually, signal};

use crate::{gust, gust_env, manifest};

/// `(ppid, pgid)` of a process, from `/proc/PID/stat`.
fn parent_and_group(pid: u32) -> (u32, u32) {
    let fields = gust_test_support::proc_stat(pid).unwrap();
    (fields[1].parse().unwrap(), fields[2].parse().unwrap())
}

const WHOAMI: &str = r#"import os
def handle(event, context):
    marker = os.path.join(os.environ["GUST_SCRATCH"], "seen")
    before = sorted(os.listdir(os.environ["GUST_SCRATCH"]))
    open(marker, "w").close()
    env = {k: v for k, v in os.environ.items() if k in ("GUST_FUNCTION", "COLOUR", "LANG", "HOME")}
    return {"pid": os.getpid(), "cwd": os.getcwd(), "scratch_before": before, "env": env}
"#;

fn whoami(g: &gust_test_support::Gust, name: &str, extra: &str) {
    g.deploy(name, &[("gust.toml", &manifest(name, "python", extra)), ("handler.py", WHOAMI)]);
}

/// Live children of `parent`, and those whose command line holds `arg`.
fn children(parent: u32, arg: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes())
            && alive(pid)
            && gust_test_support::proc_stat(pid).is_some_and(|f| f.get(1).is_some_and(|p| *p == parent.to_string()))
        {
            found.push(pid);
        }
    }
    found.sort_unstable();
    found
}

#[test]
fn python_instances_fork_from_the_zygote_into_their_own_function() {
    let g = gust_env(&[("GUST_POOL", "python=2")]);
    let zygote = eventually("the zygote", || children(g.pid(), "--zygote").first().copied());
    let waiting = eventually("two children waiting", || {
        let c = children(zygote, "--zygote");
        (c.len() == 2).then_some(c)
    });
    // Each deploy starts its initial instance: one of the waiting children.
    whoami(&g, "red", "[env]\nCOLOUR = \"red\"");
    whoami(&g, "blue", "[env]\nCOLOUR = \"blue\"");
    let (red, blue) = (g.post("red", "").json(), g.post("blue", "").json());
    for (answer, colour) in [(&red, "red"), (&blue, "blue")] {
        assert_eq!(answer["env"]["COLOUR"], colour, "{answer}");
        assert_eq!(answer["env"]["GUST_FUNCTION"], colour, "{answer}");
        assert_eq!(answer["scratch_before"], serde_json::json!([]), "a fresh scratch dir: {answer}");
        assert!(answer["cwd"].as_str().unwrap().contains("/code/"), "runs in its code dir: {answer}");
        assert!(answer["env"]["HOME"].as_str().unwrap().ends_with("/scratch"), "{answer}");
    }
    let (red_pid, blue_pid) = (red["pid"].as_u64().unwrap() as u32, blue["pid"].as_u64().unwrap() as u32);
    assert_ne!(red_pid, blue_pid, "one process per function");
    for pid in [red_pid, blue_pid] {
        assert!(waiting.contains(&pid), "forked before it was needed: {pid} {waiting:?}");
        assert_eq!(parent_and_group(pid), (zygote, pid), "the zygote's child, leading its own process group");
    }
    eventually("the zygote to fork two more", || {
        let fresh: Vec<u32> = children(zygote, "--zygote").into_iter().filter(|p| !waiting.contains(p)).collect();
        (fresh.len() == 2).then_some(())
    });
    for name in ["red", "blue"] {
        let s = &g.describe(name)["scaling"][0];
        assert_eq!((s["cold_starts"].as_u64(), s["pooled_starts"].as_u64()), (Some(1), Some(1)), "{s}");
        assert!(s.get("unpooled_reason").is_none(), "{s}");
    }
    // Warm calls stay on their own instance and scratch.
    let again = g.post("red", "").json();
    assert_eq!(again["pid"], red["pid"]);
    assert_eq!(again["scratch_before"], serde_json::json!(["seen"]));
}

#[test]
fn env_the_interpreter_reads_at_start_means_a_fresh_process_and_describe_says_why() {
    let g = gust();
    whoami(&g, "latin", "[env]\nLANG = \"C\"");
    let answer = g.post("latin", "").json();
    assert_eq!(answer["env"]["LANG"], "C", "{answer}");
    let (parent, _) = parent_and_group(answer["pid"].as_u64().unwrap() as u32);
    assert_eq!(parent, g.pid(), "started by gust itself");
    let s = &g.describe("latin")["scaling"][0];
    assert_eq!(s["pooled_starts"], 0, "{s}");
    assert!(s["unpooled_reason"].as_str().unwrap().contains("LANG"), "{s}");
    let text = g.cli_ok(&["describe", "latin"]);
    assert!(text.contains("starts fresh, not from the warm pool: env sets LANG"), "{text}");
}

#[test]
fn a_dead_zygote_takes_its_instances_and_the_next_call_brings_a_new_one() {
    let g = gust();
    whoami(&g, "phoenix", "");
    let first = g.post("phoenix", "").json()["pid"].as_u64().unwrap() as u32;
    let (zygote, _) = parent_and_group(first);
    signal(zygote, libc::SIGKILL);
    eventually("the instance to die with its zygote", || (!alive(first)).then_some(()));
    eventually("the instance to be gone from describe", || g.instance_pids("phoenix").is_empty().then_some(()));
    let second = g.post("phoenix", "").json()["pid"].as_u64().unwrap() as u32;
    let (new_zygote, _) = parent_and_group(second);
    assert_ne!(new_zygote, zygote);
    assert_ne!(new_zygote, g.pid(), "forked from a new zygote");
}

#[test]
fn with_the_pool_off_python_starts_fresh_and_a_bad_pool_flag_is_refused() {
    let g = gust_env(&[("GUST_POOL", "python=0")]);
    assert!(g.banner.contains("pools:     python off, node "), "{}", g.banner);
    whoami(&g, "plain", "");
    let pid = g.post("plain", "").json()["pid"].as_u64().unwrap() as u32;
    assert_eq!(parent_and_group(pid).0, g.pid());
    let s = &g.describe("plain")["scaling"][0];
    assert!(s["unpooled_reason"].as_str().unwrap().contains("gust up --pool"), "{s}");

    let err = crate::up_refused(&["--pool", "python=100"]);
    assert!(err.contains("--pool: python=N"), "{err}");
}

const NODE_WHOAMI: &str = r#"const fs = require('fs');
const path = require('path');
module.exports = async (event, context) => {
  const scratch = process.env.GUST_SCRATCH;
  const before = fs.readdirSync(scratch).sort();
  fs.writeFileSync(path.join(scratch, 'seen'), '');
  const env = {};
  for (const k of ['GUST_FUNCTION', 'GUST_SOCKET', 'COLOUR', 'HOME', 'NODE_OPTIONS']) {
    if (k in process.env) env[k] = process.env[k];
  }
  return { pid: process.pid, cwd: process.cwd(), scratch_before: before, env, tmp: require('os').tmpdir() };
};
"#;

fn node_whoami(g: &gust_test_support::Gust, name: &str, extra: &str) {
    g.deploy(
        name,
        &[
            ("gust.toml", &manifest(name, "node", &format!("handler = \"handler.js\"\n{extra}"))),
            ("handler.js", NODE_WHOAMI),
        ],
    );
}

#[test]
fn node_instances_take_a_waiting_process_and_become_their_own_function() {
    let g = gust_env(&[("GUST_POOL", "node=2")]);
    let waiting = eventually("two node processes waiting", || {
        let s = children(g.pid(), "--generic");
        (s.len() == 2).then_some(s)
    });
    // Each deploy starts its initial instance, from a waiting process.
    node_whoami(&g, "red", "[env]\nCOLOUR = \"red\"");
    node_whoami(&g, "blue", "[env]\nCOLOUR = \"blue\"");
    let (red, blue) = (g.post("red", "").json(), g.post("blue", "").json());
    for (answer, colour) in [(&red, "red"), (&blue, "blue")] {
        let pid = answer["pid"].as_u64().unwrap() as u32;
        assert!(waiting.contains(&pid), "{colour} runs in a process that was waiting: {answer} {waiting:?}");
        assert_eq!(parent_and_group(pid), (g.pid(), pid), "gust's child, own process group");
        assert_eq!(answer["env"]["COLOUR"], colour, "{answer}");
        assert_eq!(answer["env"]["GUST_FUNCTION"], colour, "{answer}");
        let socket = answer["env"]["GUST_SOCKET"].as_str().unwrap();
        assert!(socket.contains(&format!("/run/{colour}-")), "its own instance directory: {answer}");
        assert_eq!(answer["scratch_before"], serde_json::json!([]), "a fresh scratch dir: {answer}");
        assert!(answer["cwd"].as_str().unwrap().contains("/code/"), "runs in its code dir: {answer}");
        assert!(answer["tmp"].as_str().unwrap().starts_with(answer["env"]["HOME"].as_str().unwrap()), "{answer}");
        let s = &g.describe(colour)["scaling"][0];
        assert_eq!((s["cold_starts"].as_u64(), s["pooled_starts"].as_u64()), (Some(1), Some(1)), "{s}");
        assert!(s.get("unpooled_reason").is_none(), "{s}");
    }
    assert_ne!(red["pid"], blue["pid"]);
    // The pool refills with new processes; the taken ones stay their functions'.
    eventually("the pool to refill", || {
        let refilled: Vec<u32> = children(g.pid(), "--generic").into_iter().filter(|p| !waiting.contains(p)).collect();
        (refilled.len() == 2).then_some(())
    });
    let again = g.post("red", "").json();
    assert_eq!(again["pid"], red["pid"]);
    assert_eq!(again["scratch_before"], serde_json::json!(["seen"]));
}

#[test]
fn node_options_mean_a_fresh_process_and_a_dead_spare_is_never_used() {
    let g = gust_env(&[("GUST_POOL", "node=1")]);
    let waiting = eventually("a node process waiting", || children(g.pid(), "--generic").first().copied());
    node_whoami(&g, "opts", "[env]\nNODE_OPTIONS = \"--max-old-space-size=64\"");
    let answer = g.post("opts", "").json();
    assert_eq!(answer["env"]["NODE_OPTIONS"], "--max-old-space-size=64", "{answer}");
    assert_ne!(answer["pid"].as_u64().unwrap() as u32, waiting, "started fresh");
    let s = &g.describe("opts")["scaling"][0];
    assert_eq!(s["pooled_starts"], 0, "{s}");
    assert!(s["unpooled_reason"].as_str().unwrap().contains("NODE_OPTIONS"), "{s}");
    assert_eq!(children(g.pid(), "--generic"), vec![waiting], "the spare was left waiting");

    // A spare that died while waiting is passed over: the deploy's start-up check and
    // the call still succeed.
    signal(waiting, libc::SIGKILL);
    eventually("the dead spare to be reaped", || (!alive(waiting)).then_some(()));
    node_whoami(&g, "plain", "[scale]\ninitial = 0");
    let answer = g.post("plain", "").json();
    assert_ne!(answer["pid"].as_u64().unwrap() as u32, waiting);
    eventually("the pool to refill", || {
        children(g.pid(), "--generic")
            .iter()
            .any(|p| *p != waiting && *p != answer["pid"].as_u64().unwrap() as u32)
            .then_some(())
    });
}

#[test]
fn with_the_node_pool_off_node_starts_fresh_and_an_oversized_pool_is_refused() {
    let g = gust_env(&[("GUST_POOL", "node=0")]);
    node_whoami(&g, "plain", "");
    assert!(children(g.pid(), "--generic").is_empty());
    assert_eq!(g.post("plain", "").json()["env"]["GUST_FUNCTION"], "plain");
    let s = &g.describe("plain")["scaling"][0];
    assert!(s["unpooled_reason"].as_str().unwrap().contains("warm pool for node is off"), "{s}");

    let err = crate::up_refused(&["--pool", "node=1000"]);
    assert!(err.contains("--pool: node=N"), "{err}");
}

#[test]
fn a_waiting_python_child_that_died_is_passed_over() {
    let g = gust_env(&[("GUST_POOL", "python=1")]);
    let zygote = eventually("the zygote", || children(g.pid(), "--zygote").first().copied());
    let waiting = eventually("a child waiting", || children(zygote, "--zygote").first().copied());
    signal(waiting, libc::SIGKILL);
    eventually("the child to be reaped", || (!alive(waiting)).then_some(()));
    whoami(&g, "survivor", "");
    let answer = g.post("survivor", "").json();
    let pid = answer["pid"].as_u64().unwrap() as u32;
    assert_ne!(pid, waiting);
    assert_eq!(parent_and_group(pid).0, zygote, "still forked from the zygote");
    assert_eq!(g.describe("survivor")["scaling"][0]["pooled_starts"], 1);
}
