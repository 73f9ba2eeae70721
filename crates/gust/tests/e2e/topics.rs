//! Topics (issue 6, points 5, 6 and 9 for messages): partitioned logs, keys and order,
//! consumers with committed offsets, output topics that chain functions, `--reply`,
//! retention, and no acknowledged message lost to a SIGKILL.

use gust_test_support::{Gust, eventually, signal};

use crate::{gust, manifest};

/// A Python function consuming `input` that appends each message's body to `log`.
fn recorder(g: &Gust, name: &str, input: &str, log: &std::path::Path, delay: f64) {
    let m = manifest(name, "python", &format!("input = \"{input}\"\n[env]\nLOG = {:?}\n", log.to_str().unwrap()));
    let py = format!(
        "import os, time\ndef handle(e, c):\n    time.sleep({delay})\n    with open(os.environ['LOG'], 'a') as f:\n        f.write(e.raw_body.decode() + '\\n')\n    return 'ok'\n"
    );
    g.deploy(name, &[("gust.toml", &m), ("handler.py", &py)]);
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Every consumer of `topic` has reached the end of every partition.
fn drained(g: &Gust, topic: &str) -> bool {
    let t = g.call("GET", &format!("/api/v1/topics/{topic}"), b"", &[]).json();
    t["state"].as_array().is_some_and(|ps| {
        ps.iter().all(|p| {
            let consumers = p["consumers"].as_object().unwrap();
            !consumers.is_empty() && consumers.values().all(|at| at == &p["end"])
        })
    })
}

#[test]
fn keys_keep_a_partition_and_its_order_consumers_chain_and_publish_waits_for_the_reply() {
    let g = gust();
    assert!(g.cli_ok(&["topic", "create", "numbers", "--partitions", "3"]).contains("3 partition(s)"));
    g.cli_ok(&["topic", "create", "squares"]);
    let listed = g.cli_ok(&["topic", "ls"]);
    assert!(listed.contains("numbers") && listed.contains("squares"), "{listed}");

    // A function that needs a topic that is not there fails to deploy, saying so.
    let dir = g.function(
        "orphan",
        &[
            ("gust.toml", &manifest("orphan", "python", "input = \"nothing\"")),
            ("handler.py", "def handle(d):\n    return d\n"),
        ],
    );
    let err = String::from_utf8_lossy(&g.cli(&["deploy", dir.to_str().unwrap()]).stderr).into_owned();
    assert!(err.contains("input: topic `nothing` does not exist; create it first"), "{err}");

    let sq = manifest("square", "python", "input = \"numbers\"\noutput = \"squares\"\n");
    g.deploy("square", &[("gust.toml", &sq), ("handler.py", "def handle(n):\n    return n * n\n")]);
    let out = g.cli_ok(&["publish", "numbers", "-d", "10", "--reply"]);
    assert_eq!(out.trim(), "100", "the consumer's answer: {out}");

    // Results go on to the output topic, whose own consumer gets them.
    let squares = g.work.join("squares.log");
    recorder(&g, "collect", "squares", &squares, 0.0);
    g.cli_ok(&["publish", "numbers", "-d", "7", "--key", "x"]);
    eventually("7² to reach the squares' consumer", || lines(&squares).contains(&"49".to_owned()).then_some(()));

    // One key, one partition, its order kept; another consumer of the same topic sees all.
    let log = g.work.join("numbers.log");
    recorder(&g, "record", "numbers", &log, 0.0);
    let mut partitions = std::collections::BTreeSet::new();
    for i in 101..=120 {
        let out = g.cli_ok(&["publish", "numbers", "-d", &i.to_string(), "--key", "same key"]);
        partitions.insert(out.split_whitespace().nth(4).unwrap().to_owned());
    }
    assert_eq!(partitions.len(), 1, "one key, one partition: {partitions:?}");
    eventually("both consumers to reach the end", || drained(&g, "numbers").then_some(()));
    let keyed: Vec<String> = lines(&log).into_iter().filter(|l| l.parse::<u32>().is_ok_and(|n| n > 100)).collect();
    let want: Vec<String> = (101..=120).map(|i| i.to_string()).collect();
    assert_eq!(keyed, want, "in publish order");
    let described = g.cli_ok(&["topic", "describe", "numbers"]);
    assert!(described.contains("square") && described.contains("record") && described.contains("LAG"), "{described}");

    // Bad input.
    assert_eq!(g.call("POST", "/api/v1/topics/none/messages", b"x", &[]).status, 404);
    g.cli_ok(&["topic", "create", "lonely"]);
    let out = g.cli(&["publish", "lonely", "-d", "1", "--reply"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no function consumes topic `lonely`"), "{err}");
    let r = g.call("POST", "/api/v1/topics", br#"{"name": "Bad Name"}"#, &["Content-Type: application/json"]);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = g.call("POST", "/api/v1/topics", br#"{"name": "numbers"}"#, &["Content-Type: application/json"]);
    assert_eq!(r.status, 409, "{}", r.text());
}

#[test]
fn retention_trims_the_oldest_messages_of_a_partition_by_size() {
    let g = gust();
    g.cli_ok(&["topic", "create", "tiny", "--retention-bytes", "10"]);
    for word in ["aaaa", "bbbb", "cccc", "dddd", "eeee"] {
        g.cli_ok(&["publish", "tiny", "-d", word]);
    }
    let t = g.call("GET", "/api/v1/topics/tiny", b"", &[]).json();
    let p = &t["state"][0];
    assert_eq!((p["start"].as_i64(), p["end"].as_i64()), (Some(3), Some(5)), "two 4-byte messages fit in 10: {t}");
    // A consumer deployed now starts at the oldest message kept.
    let log = g.work.join("tiny.log");
    recorder(&g, "late", "tiny", &log, 0.0);
    eventually("the kept messages", || (lines(&log) == ["dddd", "eeee"]).then_some(()));
    g.cli_ok(&["topic", "rm", "tiny"]);
    assert_eq!(g.call("GET", "/api/v1/topics/tiny", b"", &[]).status, 404);
}

#[test]
fn after_a_sigkill_no_acknowledged_message_is_missing() {
    let g = gust();
    g.cli_ok(&["topic", "create", "work", "--partitions", "2"]);
    let log = g.work.join("work.log");
    recorder(&g, "worker", "work", &log, 0.01);
    for i in 0..150 {
        let r = g.call("POST", &format!("/api/v1/topics/work/messages?key=k{}", i % 7), i.to_string().as_bytes(), &[]);
        assert_eq!(r.status, 201, "{}", r.text());
    }
    eventually("some messages consumed", || (lines(&log).len() >= 10).then_some(()));
    signal(g.pid(), libc::SIGKILL);
    let g = g.restart();
    eventually("the consumer to reach the end after the restart", || drained(&g, "work").then_some(()));
    let seen = lines(&log);
    let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), 150, "every acknowledged message consumed (duplicates allowed): {}", seen.len());
}

#[test]
fn a_consumer_waiting_to_retry_a_message_keeps_its_function_from_scaling_to_zero() {
    let g = gust();
    g.cli_ok(&["topic", "create", "jobs"]);
    let tries = g.work.join("tries");
    // Fails twice, 2 s apart (longer than its 1 s window and no grace), then succeeds.
    let py = format!(
        "def handle(e, c):\n    with open({p:?}, 'a') as f:\n        f.write('x')\n    n = len(open({p:?}).read())\n    return {{'statusCode': 503 if n < 3 else 200, 'body': str(n)}}\n",
        p = tries.to_str().unwrap()
    );
    let m = manifest(
        "patient",
        "python",
        "input = \"jobs\"\n[scale]\ninitial = 0\nstable_window = \"1s\"\nscale_to_zero_grace = \"0s\"\n[async]\nretries = 3\ndelay = \"2s\"\nbackoff = \"linear\"\n",
    );
    g.deploy("patient", &[("gust.toml", &m), ("handler.py", &py)]);
    g.cli_ok(&["publish", "jobs", "-d", "x"]);
    let tried = || std::fs::read_to_string(&tries).map_or(0, |t| t.len());
    eventually("the first attempt", || (tried() >= 1).then_some(()));
    // Between the attempts, an instance is always there; polled until the last one.
    eventually("the third attempt", || {
        assert!(!g.instance_pids("patient").is_empty(), "scaled to zero with a message unconsumed");
        (tried() >= 3).then_some(())
    });
    eventually("the message consumed", || drained(&g, "jobs").then_some(()));
}
