//! The CloudEvents broker (issue 6, point 7), driven by the real CloudEvents SDK for
//! Python (`cloudevents` from PyPI): events in binary and structured mode, triggers with
//! exact, prefix and suffix filters, delivery in binary mode, replies back into the
//! broker, and malformed events refused with a reason.

use gust_test_support::{Gust, eventually};

use crate::{gust, manifest};

/// Sends one event with the SDK: `mode` is `binary` or `structured`; prints the status
/// and the body of the broker's answer.
const CLIENT: &str = r#"
import json, sys, urllib.error, urllib.request
from cloudevents.v1.http import CloudEvent
from cloudevents.v1.conversion import to_binary, to_structured
url, mode, attrs, data = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
headers, body = (to_binary if mode == "binary" else to_structured)(CloudEvent(attrs, data))
req = urllib.request.Request(url, data=body, headers=headers, method="POST")
try:
    with urllib.request.urlopen(req) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"#;

/// Takes the event with the SDK (so the delivery must be valid binary mode) and, for a
/// new order, replies with an `order.accepted` event.
const ORDERS: &str = r#"import json
from cloudevents.v1.http import from_http
def handle(e, c):
    ev = from_http(dict(e.headers), e.raw_body)
    print("got", ev["type"], ev["id"], ev["source"])
    if ev["type"] == "order.created":
        headers = {"ce-specversion": "1.0", "ce-id": "reply-" + ev["id"], "ce-source": "/fn/orders",
                   "ce-type": "order.accepted", "content-type": "application/json"}
        return {"statusCode": 200, "headers": headers, "body": json.dumps({"for": ev["id"], "n": ev.data["n"]})}
    return "noted"
"#;

const AUDIT: &str = r#"from cloudevents.v1.http import from_http
def handle(e, c):
    ev = from_http(dict(e.headers), e.raw_body)
    return "audited %s %s %s" % (ev["type"], ev["id"], ev.data)
"#;

fn send(g: &Gust, mode: &str, attrs: &str, data: &str) -> (u16, serde_json::Value) {
    let script = g.work.join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args([&format!("{}/events", g.url), mode, attrs, data])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let (code, body) = text.trim().split_once(' ').unwrap();
    (code.parse().unwrap(), serde_json::from_str(body).unwrap())
}

/// The results of a function's succeeded calls, once there are `n`.
fn results(g: &Gust, function: &str, n: usize) -> Vec<String> {
    eventually(&format!("{n} deliveries to {function}"), || {
        let calls = g.call("GET", &format!("/api/v1/functions/{function}/calls?status=succeeded"), b"", &[]).json();
        let bodies: Vec<String> =
            calls.as_array()?.iter().map(|c| c["result"]["body"].as_str().unwrap_or_default().to_owned()).collect();
        (bodies.len() >= n).then_some(bodies)
    })
}

#[test]
fn events_reach_the_functions_whose_triggers_match_and_replies_go_back_to_the_broker() {
    let g = gust();
    let orders = manifest(
        "orders",
        "python",
        "[[triggers]]\nexact = { type = \"order.created\" }\nprefix = { source = \"/orders/\" }\n\n[[triggers]]\nexact = { type = \"order.cancelled\" }\n",
    );
    g.deploy("orders", &[("gust.toml", &orders), ("handler.py", ORDERS)]);
    let audit = manifest("audit", "python", "[[triggers]]\nexact = { type = \"order.accepted\" }\n");
    g.deploy("audit", &[("gust.toml", &audit), ("handler.py", AUDIT)]);
    let images = manifest("images", "python", "[[triggers]]\nsuffix = { subject = \".png\" }\n");
    g.deploy(
        "images",
        &[("gust.toml", &images), ("handler.py", "def handle(e, c):\n    return e.headers['ce-subject']\n")],
    );

    // Binary mode: delivered to orders, whose reply is delivered to audit.
    let (code, answer) =
        send(&g, "binary", r#"{"type": "order.created", "source": "/orders/eu", "id": "e1"}"#, r#"{"n": 1}"#);
    assert_eq!((code, answer["deliveries"].as_u64()), (202, Some(1)), "{answer}");
    assert_eq!(results(&g, "audit", 1), ["audited order.accepted reply-e1 {'for': 'e1', 'n': 1}"]);
    let orders_calls = g.call("GET", "/api/v1/functions/orders/calls", b"", &[]).json();
    let id = orders_calls[0]["id"].as_str().unwrap().to_owned();
    let record = g.call("GET", &format!("/calls/{id}"), b"", &[]).json();
    let logged: Vec<&str> = record["logs"].as_array().unwrap().iter().map(|l| l["line"].as_str().unwrap()).collect();
    assert_eq!(logged, ["got order.created e1 /orders/eu"], "{record}");

    // Structured mode, and a second trigger of the same function; no reply this time.
    let (code, answer) =
        send(&g, "structured", r#"{"type": "order.cancelled", "source": "/anywhere", "id": "e2"}"#, r#"{"n": 2}"#);
    assert_eq!((code, answer["deliveries"].as_u64()), (202, Some(1)), "{answer}");
    assert!(results(&g, "orders", 2).contains(&"noted".to_owned()));

    // Filters: a prefix and a suffix that do not match deliver nothing.
    let (_, none) = send(&g, "binary", r#"{"type": "order.created", "source": "/users/1", "id": "e3"}"#, "{}");
    assert_eq!(none["deliveries"], 0, "{none}");
    let (_, png) = send(&g, "binary", r#"{"type": "upload", "source": "/s3", "id": "e4", "subject": "cat.png"}"#, "{}");
    let (_, jpg) = send(&g, "binary", r#"{"type": "upload", "source": "/s3", "id": "e5", "subject": "cat.jpg"}"#, "{}");
    assert_eq!((png["deliveries"].as_u64(), jpg["deliveries"].as_u64()), (Some(1), Some(0)));
    assert_eq!(results(&g, "images", 1), ["cat.png"]);
    assert_eq!(g.call("GET", "/api/v1/functions/audit/calls", b"", &[]).json().as_array().unwrap().len(), 1);
}

#[test]
fn malformed_events_get_400_with_the_reason_and_other_methods_405() {
    let g = gust();
    let cases: [(&[&str], &[u8], &str); 5] = [
        (&["ce-specversion: 1.0", "ce-id: 1", "ce-source: /s"], b"", "`type` is missing"),
        (&["ce-specversion: 9.9", "ce-id: 1", "ce-source: /s", "ce-type: t"], b"", "specversion `9.9`"),
        (&["Content-Type: application/cloudevents+json"], b"{nope", "not valid JSON"),
        (&["Content-Type: application/cloudevents-batch+json"], b"[]", "batched content mode"),
        (&["Content-Type: text/plain"], b"hello", "not a CloudEvent"),
    ];
    for (headers, body, says) in cases {
        let r = g.call("POST", "/events", body, headers);
        assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("bad_event")), "{headers:?}: {}", r.text());
        assert!(r.json()["message"].as_str().unwrap().contains(says), "{says}: {}", r.text());
    }
    assert_eq!(g.call("GET", "/events", b"", &[]).status, 405);
    let big = vec![b'x'; (1 << 20) + 1];
    assert_eq!(
        g.call("POST", "/events", &big, &["ce-specversion: 1.0", "ce-id: 1", "ce-source: /s", "ce-type: t"]).status,
        413
    );

    // Triggers are checked at deploy.
    let bad = manifest(
        "bad",
        "python",
        "[[triggers]]\nexact = { Type = \"x\" }\nsorted = true\n\n[[triggers]]\nschedule = \"*/0 * * * *\"\n\n\
         [[triggers]]\nschedule = \"0 9 * * *\"\ntimezone = \"Mars/Olympus\"\n",
    );
    let dir = g.function("bad", &[("gust.toml", &bad), ("handler.py", "def handle(d):\n    return 1\n")]);
    let out = g.cli(&["deploy", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for says in [
        "triggers[0].exact",
        "`Type` is not a CloudEvents attribute name",
        "triggers[0].sorted",
        "triggers[1].schedule: `*/0 * * * *` is not a cron expression",
        "triggers[2].timezone: `Mars/Olympus` is not a time zone",
    ] {
        assert!(err.contains(says), "{says}: {err}");
    }
}

#[test]
fn a_schedule_calls_the_function_on_the_clock_as_async_calls() {
    let g = gust();
    // Every second (six fields: seconds first), in a named zone.
    let m = manifest("ticker", "python", "[[triggers]]\nschedule = \"* * * * * *\"\ntimezone = \"Europe/Paris\"\n");
    let py = "def handle(e, c):\n    return e.headers['x-gust-schedule'] + ' at ' + e.headers['x-gust-scheduled-at']\n";
    g.deploy("ticker", &[("gust.toml", &m), ("handler.py", py)]);
    let runs = results(&g, "ticker", 2);
    assert!(runs.iter().all(|r| r.starts_with("* * * * * * at ")), "{runs:?}");
    assert_ne!(runs[0], runs[1], "one call per run");
    let calls = g.call("GET", "/api/v1/functions/ticker/calls", b"", &[]).json();
    let ids: Vec<&str> = calls.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert!(ids.iter().all(|id| id.starts_with("cron-ticker-0-")), "{ids:?}");
    let described = g.describe("ticker");
    assert!(described["manifest"].as_str().unwrap().contains("schedule = \"* * * * * *\""), "{described}");
}
