//! Warm pools (issue 4, points 1–3): Python instances fork from a zygote, take their own
//! environment, scratch and process group, start fresh when the zygote cannot serve them,
//! and a dead zygote is replaced.

use gust_test_support::{alive, eventually, signal};

use crate::{gust, gust_env, manifest};

/// `(ppid, pgid)` of a process, from `/proc/PID/stat`.
fn parent_and_group(pid: u32) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
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

#[test]
fn python_instances_fork_from_the_zygote_into_their_own_function() {
    let g = gust();
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
    let (red_parent, red_group) = parent_and_group(red_pid);
    let (blue_parent, _) = parent_and_group(blue_pid);
    assert_eq!(red_parent, blue_parent, "both forked from the same zygote");
    assert_ne!(red_parent, g.pid(), "not started by gust directly");
    assert_eq!(red_group, red_pid, "each instance leads its own process group");
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
    whoami(&g, "plain", "");
    let pid = g.post("plain", "").json()["pid"].as_u64().unwrap() as u32;
    assert_eq!(parent_and_group(pid).0, g.pid());
    let s = &g.describe("plain")["scaling"][0];
    assert!(s["unpooled_reason"].as_str().unwrap().contains("gust up --pool"), "{s}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gust"))
        .args(["up", "--listen", "127.0.0.1:0", "--pool", "python=5"])
        .env("GUST_DATA", g.work.join("unused"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--pool: python=N"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
