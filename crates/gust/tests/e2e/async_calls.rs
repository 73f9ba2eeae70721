//! Async calls (issue 6, points 1–4 and 9 for calls): accepted before they run, recorded,
//! retried, dead-lettered, called back, capped, and kept across a SIGKILL.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};

use gust_test_support::{Gust, eventually, signal};

use crate::{gust, gust_env, manifest};

/// `GET /calls/ID` as JSON.
fn call(g: &Gust, id: &str) -> serde_json::Value {
    let r = g.call("GET", &format!("/calls/{id}"), b"", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Posts an async call; returns its id.
fn enqueue(g: &Gust, name: &str, body: &str) -> String {
    let r = g.call("POST", &format!("/async-function/{name}"), body.as_bytes(), &[]);
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["call_id"].as_str().unwrap().to_owned()
}

/// Waits for the call to be final; returns its record.
fn settled(g: &Gust, id: &str) -> serde_json::Value {
    eventually(&format!("call {id} to be final"), || {
        let c = call(g, id);
        matches!(c["status"].as_str(), Some("succeeded" | "failed" | "dead")).then_some(c)
    })
}

#[test]
fn an_async_call_answers_202_at_once_and_its_record_shows_the_result_and_its_log_lines() {
    let g = gust();
    let py = "import sys\ndef handle(e, c):\n    print('working on', e.body)\n    return {'statusCode': 201, 'body': 'done ' + e.body + ' ' + e.path + ' x=' + e.query.get('x', '')}\n";
    g.deploy("later", &[("gust.toml", &manifest("later", "python", "")), ("handler.py", py)]);
    let r = g.call("POST", "/async-function/later/sub?x=1", b"hi", &["Content-Type: text/plain"]);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.header("x-call-id").unwrap().to_owned();
    assert_eq!(r.header("location"), Some(format!("/calls/{id}").as_str()));
    assert_eq!((r.json()["status"].as_str(), r.json()["call_id"].as_str()), (Some("queued"), Some(id.as_str())));

    let c = settled(&g, &id);
    assert_eq!((c["status"].as_str(), c["attempts"].as_u64()), (Some("succeeded"), Some(1)), "{c}");
    assert_eq!(c["result"]["status"], 201, "{c}");
    assert_eq!(c["result"]["body"], "done hi /sub x=1", "{c}");
    assert_eq!(c["revision"], "later-00001");
    assert!(c["cold_start"].is_boolean() && c["duration_seconds"].as_f64().unwrap() >= 0.0, "{c}");
    let lines: Vec<&str> = c["logs"].as_array().unwrap().iter().map(|l| l["line"].as_str().unwrap()).collect();
    assert_eq!(lines, ["working on hi"], "{c}");

    // The same id again is a retry of the request, not a second call.
    let again = g.call("POST", "/async-function/later", b"x", &[&format!("X-Call-Id: {id}")]);
    assert_eq!((again.status, again.json()["status"].as_str()), (202, Some("duplicate")));

    // From the CLI.
    let out = g.cli_ok(&["invoke", "later", "--async", "-d", "cli"]);
    let cli_id = out.split_whitespace().next().unwrap().to_owned();
    assert!(out.contains("queued") && out.contains(&format!("/calls/{cli_id}")), "{out}");
    settled(&g, &cli_id);
    let listing = g.cli_ok(&["calls", "later"]);
    assert!(listing.contains(&cli_id) && listing.contains(&id) && listing.contains("succeeded"), "{listing}");
    let shown = g.cli_ok(&["calls", "get", &cli_id]);
    assert!(shown.contains("Status:    succeeded after 1 attempt(s)") && shown.contains("done cli"), "{shown}");

    // Bad input.
    assert_eq!(g.call("POST", "/async-function/nobody", b"", &[]).status, 404);
    assert_eq!(g.call("GET", "/async-function/later", b"", &[]).status, 405);
    assert_eq!(g.call("GET", "/calls/no-such-call", b"", &[]).json()["error"], "call_not_found");
    for bad in ["ftp://x/", "https://example.com/", "not a url"] {
        let r = g.call("POST", "/async-function/later", b"", &[&format!("X-Callback-Url: {bad}")]);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let small = format!("{}[limits]\nmax_body = \"1Ki\"\n", manifest("small", "python", ""));
    g.deploy("small", &[("gust.toml", &small), ("handler.py", "def handle(d):\n    return 1\n")]);
    assert_eq!(g.call("POST", "/async-function/small", &[b'x'; 2048], &[]).status, 413);
}

#[test]
fn failures_are_retried_then_dead_lettered_4xx_is_not_and_the_dlq_redrives_and_purges() {
    let g = gust();
    let policy = "[async]\nretries = 2\ndelay = \"50ms\"\n";
    // Fails twice (a count kept outside the instance), then answers.
    let count = g.work.join("count");
    let flaky = format!(
        "import os\ndef handle(e, c):\n    p = {p:?}\n    n = len(open(p).read()) if os.path.exists(p) else 0\n    open(p, 'a').write('x')\n    return {{'statusCode': 503 if n < 2 else 200, 'body': str(n)}}\n",
        p = count.to_str().unwrap()
    );
    g.deploy("flaky", &[("gust.toml", &manifest("flaky", "python", policy)), ("handler.py", &flaky)]);
    let c = settled(&g, &enqueue(&g, "flaky", ""));
    assert_eq!(
        (c["status"].as_str(), c["attempts"].as_u64(), c["result"]["body"].as_str()),
        (Some("succeeded"), Some(3), Some("2")),
        "{c}"
    );

    let fails = "def handle(e, c):\n    return {'statusCode': 500, 'body': 'broken'}\n";
    g.deploy("broken", &[("gust.toml", &manifest("broken", "python", policy)), ("handler.py", fails)]);
    let dead = settled(&g, &enqueue(&g, "broken", "a"));
    assert_eq!((dead["status"].as_str(), dead["attempts"].as_u64()), (Some("dead"), Some(3)), "{dead}");
    let missing = "def handle(e, c):\n    return {'statusCode': 404, 'body': 'no such thing'}\n";
    g.deploy("picky", &[("gust.toml", &manifest("picky", "python", policy)), ("handler.py", missing)]);
    let failed = settled(&g, &enqueue(&g, "picky", ""));
    assert_eq!((failed["status"].as_str(), failed["attempts"].as_u64()), (Some("failed"), Some(1)), "{failed}");

    // The dead-letter queue.
    let second = enqueue(&g, "broken", "b");
    settled(&g, &second);
    let id = dead["id"].as_str().unwrap();
    let listed = g.cli_ok(&["dlq", "broken"]);
    assert!(listed.contains(id) && listed.contains(&second) && listed.contains("dead"), "{listed}");
    assert!(g.cli_ok(&["dlq", "broken", "show", id]).contains("dead after 3 attempt(s)"));
    let works = "def handle(e, c):\n    return 'fixed ' + e.body\n";
    g.deploy("broken", &[("gust.toml", &manifest("broken", "python", policy)), ("handler.py", works)]);
    assert!(g.cli_ok(&["dlq", "broken", "redrive", id]).contains("1 dead call(s) of broken queued again"));
    let redriven = settled(&g, id);
    assert_eq!(
        (redriven["status"].as_str(), redriven["result"]["body"].as_str()),
        (Some("succeeded"), Some("fixed a"))
    );
    assert_eq!(redriven["attempts"], 1, "attempts count afresh: {redriven}");
    assert!(g.cli_ok(&["dlq", "broken", "purge"]).contains("1 dead call(s) of broken deleted"));
    assert_eq!(g.call("GET", &format!("/calls/{second}"), b"", &[]).status, 404);
    assert!(!g.cli(&["dlq", "broken", "redrive", "nope"]).status.success());
}

#[test]
fn the_final_result_is_posted_to_the_callback_url() {
    // The receiver is on loopback, which callbacks may reach only when allowed.
    let g = crate::gust_env(&[("GUST_OUTBOUND_ALLOW", "loopback")]);
    g.deploy(
        "cb",
        &[
            ("gust.toml", &manifest("cb", "python", "")),
            ("handler.py", "def handle(d):\n    return 'echo ' + str(d)\n"),
        ],
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook?k=v", listener.local_addr().unwrap());
    let receiver = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_owned());
        }
        let length: usize = head
            .iter()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        reader.get_mut().write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").unwrap();
        (head, String::from_utf8(body).unwrap())
    });
    let r = g.call("POST", "/async-function/cb", b"7", &[&format!("X-Callback-Url: {url}")]);
    let id = r.header("x-call-id").unwrap().to_owned();
    let (head, body) = receiver.join().unwrap();
    assert_eq!(head[0], "POST /hook?k=v HTTP/1.1");
    let header = |name: &str| {
        head.iter()
            .find_map(|l| l.split_once(": ").filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_owned()))
    };
    assert_eq!(header("x-call-id").as_deref(), Some(id.as_str()));
    assert_eq!(header("x-function-status").as_deref(), Some("200"));
    assert_eq!(header("x-call-status").as_deref(), Some("succeeded"));
    assert!(header("x-duration-seconds").unwrap().parse::<f64>().unwrap() >= 0.0);
    assert_eq!(body, "echo 7");
    assert_eq!(call(&g, &id)["callback_url"], url.as_str());
}

#[test]
fn async_calls_in_flight_are_capped_so_sync_calls_still_get_instances() {
    let g = gust();
    let go = g.work.join("go-async");
    let held = format!(
        "import os, time\ndef handle(e, c):\n    while e.body == 'hold' and not os.path.exists({go:?}):\n        time.sleep(0.01)\n    return 'ok ' + e.body\n",
        go = go.to_str().unwrap()
    );
    let m = manifest("capped", "python", "[scale]\nmax = 4\n[async]\nconcurrency = 1\n");
    g.deploy("capped", &[("gust.toml", &m), ("handler.py", &held)]);
    let ids: Vec<String> = (0..5).map(|_| enqueue(&g, "capped", "hold")).collect();
    let statuses =
        || -> Vec<String> { ids.iter().map(|id| call(&g, id)["status"].as_str().unwrap().to_owned()).collect() };
    eventually("one async call running, the rest queued", || {
        let s = statuses();
        (s.iter().filter(|s| *s == "running").count() == 1 && s.iter().filter(|s| *s == "queued").count() == 4)
            .then_some(())
    });
    // Sync calls are not held behind the async backlog.
    for _ in 0..3 {
        assert_eq!(g.post("capped", "now").text(), "ok now");
    }
    assert_eq!(statuses().iter().filter(|s| *s == "running").count(), 1, "still one at a time");
    std::fs::write(&go, "").unwrap();
    for id in &ids {
        assert_eq!(settled(&g, id)["status"], "succeeded");
    }
}

#[test]
fn after_a_sigkill_every_accepted_call_completes() {
    let g = gust();
    let m = manifest("steady", "python", "[scale]\nmax = 4\n[async]\nconcurrency = 4\n");
    g.deploy(
        "steady",
        &[("gust.toml", &m), ("handler.py", "import time\ndef handle(d):\n    time.sleep(0.02)\n    return 'ok'\n")],
    );
    // 300 calls over one keep-alive connection: each acknowledged with 202 and an id.
    let addr = g.url.trim_start_matches("http://").to_owned();
    let mut conn = BufReader::new(TcpStream::connect(&addr).unwrap());
    let mut ids = Vec::new();
    for i in 0..300 {
        let req = format!(
            "POST /async-function/steady HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{i}",
            i.to_string().len()
        );
        conn.get_mut().write_all(req.as_bytes()).unwrap();
        let mut status = String::new();
        conn.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 202"), "{status}");
        let mut length = 0;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap(),
                "x-call-id" => ids.push(v.trim().to_owned()),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).unwrap();
    }
    assert_eq!(ids.len(), 300);
    // Killed while some calls run and most are queued.
    eventually("calls running", || (call(&g, &ids[0])["status"] != "queued").then_some(()));
    signal(g.pid(), libc::SIGKILL);
    let g = g.restart();
    let mut retried = 0;
    for id in &ids {
        let c = settled(&g, id);
        assert_eq!(c["status"], "succeeded", "{c}");
        retried += usize::from(c["attempts"].as_u64().unwrap() > 1);
    }
    let done = g.call("GET", "/api/v1/functions/steady/calls?status=succeeded&limit=1000", b"", &[]).json();
    assert_eq!(done.as_array().unwrap().len(), 300);
    // Calls running at the kill ran again: visible as a second attempt, never lost.
    assert!(retried <= 4, "at most the calls in flight at the kill (async.concurrency = 4): {retried}");
}

#[test]
fn a_sync_calls_id_finds_its_record_until_the_retention_passes() {
    let g = gust_env(&[("GUST_CALL_RETENTION", "0s")]);
    let py = "def handle(e, c):\n    print('sync', e.body)\n    if e.body == 'boom':\n        raise ValueError('no')\n    return 'ok'\n";
    g.deploy("direct", &[("gust.toml", &manifest("direct", "python", "")), ("handler.py", py)]);
    let ok = g.post("direct", "fine");
    let id = ok.header("x-call-id").unwrap().to_owned();
    let rec = eventually("the sync call's record", || {
        let r = g.call("GET", &format!("/calls/{id}"), b"", &[]);
        (r.status == 200).then(|| r.json())
    });
    assert_eq!((rec["status"].as_str(), rec["result"]["status"].as_u64()), (Some("succeeded"), Some(200)), "{rec}");
    assert_eq!((rec["revision"].as_str(), rec["attempts"].as_u64()), (Some("direct-00001"), Some(1)), "{rec}");
    assert!(rec["cold_start"].is_boolean(), "{rec}");
    assert_eq!(rec["logs"][0]["line"], "sync fine", "{rec}");
    let bad = g.post("direct", "boom");
    assert_eq!(bad.status, 500);
    let bad_id = bad.header("x-call-id").unwrap().to_owned();
    let rec = eventually("the failed call's record", || {
        let r = g.call("GET", &format!("/calls/{bad_id}"), b"", &[]);
        (r.status == 200).then(|| r.json())
    });
    assert_eq!((rec["status"].as_str(), rec["result"]["status"].as_u64()), (Some("failed"), Some(500)), "{rec}");
    // gust's own answers are recorded too, with its message.
    let missing = g.call("POST", "/function/direct@nope", b"", &[]);
    let missing_id = missing.header("x-call-id").unwrap().to_owned();
    let rec = eventually("the refused call's record", || {
        let r = g.call("GET", &format!("/calls/{missing_id}"), b"", &[]);
        (r.status == 200).then(|| r.json())
    });
    assert!(rec["error"].as_str().unwrap().contains("no tag `nope`"), "{rec}");
    assert!(g.cli_ok(&["calls", "direct"]).contains(&id));
    // An id the caller chose finds its call too, and its first call keeps it.
    assert_eq!(g.call("POST", "/function/direct", b"first", &["X-Call-Id: mine-7"]).status, 200);
    assert_eq!(g.call("POST", "/function/direct", b"boom", &["X-Call-Id: mine-7"]).status, 500);
    let rec = eventually("the caller's id's record", || {
        let r = g.call("GET", "/calls/mine-7", b"", &[]);
        (r.status == 200).then(|| r.json())
    });
    assert_eq!((rec["status"].as_str(), rec["logs"][0]["line"].as_str()), (Some("succeeded"), Some("sync first")));
    // An async call sent with a sync call's id is that call again, not a new one.
    let again = g.call("POST", "/async-function/direct", b"x", &[&format!("X-Call-Id: {id}")]);
    assert_eq!((again.status, again.json()["status"].as_str()), (202, Some("duplicate")), "{}", again.text());
    assert_eq!(call(&g, &id)["status"], "succeeded");

    // With no retention, the next collection (a deploy runs one) forgets them.
    g.deploy(
        "other",
        &[("gust.toml", &manifest("other", "python", "")), ("handler.py", "def handle(d):\n    return 1\n")],
    );
    eventually("the records to go", || (g.call("GET", &format!("/calls/{id}"), b"", &[]).status == 404).then_some(()));
}

#[test]
fn past_max_queued_an_async_call_is_refused_with_429_and_nothing_is_lost() {
    let g = gust();
    let go = g.work.join("go-queue");
    let held = format!(
        "import os, time\ndef handle(e, c):\n    while not os.path.exists({go:?}):\n        time.sleep(0.01)\n    return 'done ' + e.body\n",
        go = go.to_str().unwrap()
    );
    let m = manifest("full", "python", "[async]\nconcurrency = 1\nmax_queued = 3\n");
    g.deploy("full", &[("gust.toml", &m), ("handler.py", &held)]);
    let ids: Vec<String> = (0..3).map(|i| enqueue(&g, "full", &i.to_string())).collect();
    let r = g.call("POST", "/async-function/full", b"x", &[]);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"], "queue_full");
    assert!(r.text().contains("max_queued"), "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    // A retry of an accepted call is still answered as a duplicate.
    let again = g.call("POST", "/async-function/full", b"0", &[&format!("X-Call-Id: {}", ids[0])]);
    assert_eq!((again.status, again.json()["status"].as_str()), (202, Some("duplicate")));
    // The Lambda Invoke API's Event type obeys the same cap, in Lambda's terms.
    let r = g.call("POST", "/2015-03-31/functions/full/invocations", b"{}", &["X-Amz-Invocation-Type: Event"]);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("x-amzn-errortype"), Some("TooManyRequestsException"));
    std::fs::write(&go, "").unwrap();
    for id in &ids {
        assert_eq!(settled(&g, id)["status"], "succeeded");
    }
    // Room again once they are done.
    let id = enqueue(&g, "full", "later");
    assert_eq!(settled(&g, &id)["status"], "succeeded");
}

#[test]
fn past_the_record_backlog_records_are_dropped_and_counted_and_calls_still_answered() {
    let g = gust_env(&[("GUST_CALL_RECORD_BACKLOG", "1")]);
    let m = manifest("many", "python", "[scale]\nconcurrency = 16\n");
    g.deploy("many", &[("gust.toml", &m), ("handler.py", "def handle(e, c):\n    return 'ok'\n")]);
    let url = format!("{}/function/many", g.url);
    // The writer takes one record, then gathers for 20 ms while the backlog holds one
    // more: a burst of calls in that time overflows it.
    eventually("records to be dropped", || {
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || gust_test_support::curl(&url, "POST", b"", &[]))
            })
            .collect();
        for c in calls {
            let r = c.join().unwrap();
            assert_eq!((r.status, r.text().as_str()), (200, "ok"), "a call was refused or failed");
        }
        let n = g.call("GET", "/api/v1/info", b"", &[]).json()["calls_unrecorded"].as_u64().unwrap();
        (n > 0).then_some(())
    });
    assert!(g.server_log().contains("sync call records dropped"), "{}", g.server_log());
    // Zero is refused with a message naming the flag.
    let err = crate::up_refused(&["--call-record-backlog", "0"]);
    assert!(err.contains("--call-record-backlog: must be at least 1"), "{err}");
}
