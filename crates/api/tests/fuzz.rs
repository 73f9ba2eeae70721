//! Property tests that throw arbitrary and mutated input at gust's parsers of outside
//! input (issue 8, point 8): the manifest, CloudEvents over HTTP, the Lambda Runtime API
//! routes and the Lambda result mapping. Each must answer every input with a value or an
//! error, never a panic, and what it accepts must survive a round trip. `cargo fuzz`
//! needs a nightly compiler; proptest runs on stable in the normal test command, with a
//! bounded number of cases (and so a bounded time).
#![allow(clippy::unwrap_used)]

use gust_api::event::{self, CloudEvent};
use gust_api::{Manifest, lambda};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() }
}

/// A valid manifest with most sections, the seed the mutations start from.
const SEED: &str = r#"name = "hello"
runtime = "python"
handler = "handler.handle"
build = "make"
input = "numbers"
auth = "token"

[env]
TARGET = "world"

[limits]
timeout = "30s"
memory = "128Mi"
max_body = "1Mi"

[scale]
concurrency = 4
min = 0
max = 10
queue_depth = 50

[async]
retries = 2
backoff = "linear"
delay = "500ms"
max_queued = 100

[[routes]]
method = "GET"
path = "/users/{id}"

[[triggers]]
exact = { type = "order.created" }
prefix = { source = "/shop" }

[[triggers]]
schedule = "*/5 * * * *"
timezone = "Europe/Paris"
"#;

/// Keys, values and punctuation that manifests are made of, to build near-valid TOML.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("name = \"f\"\n".to_owned()),
        Just("runtime = \"lambda-node\"\n".to_owned()),
        Just("runtime = \"exec\"\nprotocol = \"http\"\n".to_owned()),
        Just("handler = \"../x\"\n".to_owned()),
        Just("[scale]\nmax = 0\n".to_owned()),
        Just("[limits]\ntimeout = \"-1s\"\n".to_owned()),
        Just("[async]\nbackoff = 7\n".to_owned()),
        Just("[[triggers]]\nschedule = \"61 * * * *\"\n".to_owned()),
        Just("[[routes]]\npath = \"/{a}/{a}\"\n".to_owned()),
        Just("[env]\n\"\" = \"\"\n".to_owned()),
        "[a-z_\\.]{1,12} = (\"[ -~]{0,20}\"|[0-9]{1,20}|true|\\[\\]|\\{\\})\n",
        "\\[{1,2}[a-z\\.]{0,10}\\]{1,2}\n",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_a_manifest_or_a_list_of_problems(text in any::<String>()) {
        let _ = Manifest::parse(&text);
    }

    #[test]
    fn mutated_manifests_parse_or_fail_cleanly_and_what_parses_round_trips(
        cut in 0usize..SEED.len(),
        extra in proptest::collection::vec(fragment(), 0..4),
    ) {
        let cut = (0..=cut).rev().find(|i| SEED.is_char_boundary(*i)).unwrap_or(0);
        let text = format!("{}{}", &SEED[..cut], extra.concat());
        if let Ok(spec) = Manifest::parse(&text) {
            let again = Manifest::parse(&spec.to_toml());
            prop_assert_eq!(again.as_ref().ok(), Some(&spec), "to_toml of {:?} does not parse back", text);
        }
    }

    #[test]
    fn any_cloudevent_request_parses_or_is_refused_with_a_reason(
        headers in proptest::collection::vec(("(ce-[a-z]{1,8}|content-type|[a-z-]{1,12})", "[ -~]{0,40}"), 0..8),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        match event::parse(&pairs, &body) {
            Ok(Some(ev)) => prop_assert!(binary_round_trips(&ev)),
            Ok(None) => {}
            Err(reason) => prop_assert!(!reason.is_empty()),
        }
    }

    #[test]
    fn structured_events_of_any_json_parse_or_are_refused(body in "\\{(\"[a-z_]{1,12}\":(\"[ -~]{0,16}\"|[0-9]{1,4}|null|\\{\\}),?){0,8}\\}") {
        let headers = [("content-type", "application/cloudevents+json")];
        if let Ok(Some(ev)) = event::parse(&headers, body.as_bytes()) {
            prop_assert!(binary_round_trips(&ev));
        }
    }

    #[test]
    fn runtime_api_routes_never_hand_out_an_id_with_a_slash(
        method in "(GET|POST|PUT|[A-Z]{1,7})",
        path in "(/2018-06-01/runtime(/invocation(/[ -~]{0,20}){0,3}|/init/error)?|[ -~]{0,60})",
    ) {
        match lambda::route(&method, &path) {
            lambda::RuntimeApiRoute::Response(id) | lambda::RuntimeApiRoute::Error(id) => {
                prop_assert!(!id.is_empty() && !id.contains('/'));
                prop_assert!(path.ends_with("/response") || path.ends_with("/error"));
            }
            _ => {}
        }
    }

    #[test]
    fn any_lambda_result_is_an_http_answer_or_a_reason(result in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(answer) = lambda::http_answer(&result) {
            prop_assert!((100..=599).contains(&answer.status));
        }
        let _ = lambda::FunctionError::parse(&result, None);
    }

    #[test]
    fn shaped_lambda_results_map_or_fail_cleanly(
        status in prop_oneof![Just("200".to_owned()), Just("\"201\"".to_owned()), "-?[0-9]{1,6}", Just("null".to_owned())],
        body in prop_oneof![Just("\"x\"".to_owned()), Just("{}".to_owned()), Just("null".to_owned()), "\"[A-Za-z0-9+/=%]{0,12}\""],
        b64 in any::<bool>(),
    ) {
        let doc = format!("{{\"statusCode\":{status},\"body\":{body},\"isBase64Encoded\":{b64},\"headers\":{{\"a\":\"b\"}}}}");
        match lambda::http_answer(doc.as_bytes()) {
            Ok(a) => prop_assert!((100..=599).contains(&a.status)),
            Err(why) => prop_assert!(!why.is_empty()),
        }
    }

    #[test]
    fn any_http_call_becomes_a_json_event(
        method in "[A-Z]{1,7}",
        path in "/[ -~]{0,40}",
        query in proptest::option::of("[ -~]{0,40}"),
        headers in proptest::collection::vec(("[a-z-]{1,12}", proptest::collection::vec(any::<u8>(), 0..20)), 0..6),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let call = lambda::HttpCall {
            method: &method,
            path: &path,
            query: query.as_deref(),
            headers: headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect(),
            body: &body,
            request_id: "r",
            time_ms: 0,
        };
        let event: serde_json::Value = serde_json::from_slice(&lambda::http_event(&call)).unwrap();
        prop_assert_eq!(&event["rawPath"], &serde_json::Value::String(path.clone()));
    }
}

/// An accepted event, sent on in binary mode, parses back to itself.
fn binary_round_trips(ev: &CloudEvent) -> bool {
    let (headers, body) = ev.to_binary();
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    matches!(event::parse(&pairs, &body), Ok(Some(back)) if back == *ev)
}

#[test]
fn the_seed_manifest_parses_and_round_trips() {
    let spec = Manifest::parse(SEED).unwrap();
    assert_eq!(Manifest::parse(&spec.to_toml()).unwrap(), spec);
}
