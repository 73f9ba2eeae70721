//! CloudEvents 1.0 over HTTP (binary and structured content modes), and the trigger
//! filters that route events to functions (Knative's `exact`, `prefix`, `suffix`).
//!
//! Pure: the gateway hands over header pairs and the body and gets an event or the
//! reason it is malformed; delivery turns an event back into binary-mode headers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The spec versions accepted (Knative's broker accepts both) and kept as sent.
const VERSIONS: [&str; 2] = ["1.0", "0.3"];
/// The content type of a structured-mode event.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// The content type of a batch of structured events.
pub const BATCH: &str = "application/cloudevents-batch+json";

/// One CloudEvent: its context attributes and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvent {
    /// Every context attribute by name: `specversion`, `id`, `source`, `type`, the optional
    /// `subject`, `time`, `datacontenttype`, `dataschema`, and extensions.
    pub attributes: BTreeMap<String, String>,
    /// The data, as bytes.
    pub data: Vec<u8>,
}

impl CloudEvent {
    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    /// The event in binary content mode: `ce-*` headers (and `content-type` from
    /// `datacontenttype`) and the data as the body.
    pub fn to_binary(&self) -> (Vec<(String, String)>, Vec<u8>) {
        let headers = self
            .attributes
            .iter()
            .map(|(k, v)| match k.as_str() {
                "datacontenttype" => ("content-type".to_owned(), v.clone()),
                _ => (format!("ce-{k}"), v.clone()),
            })
            .collect();
        (headers, self.data.clone())
    }
}

/// Reads an event from an HTTP request (or a function's answer): structured mode when the
/// content type says so, else binary mode from `ce-*` headers. `headers` are (name, value)
/// pairs with lowercase names. `Ok(None)` when the message is no event at all (no
/// `ce-specversion` header and no structured content type).
///
/// # Errors
/// Why the event is malformed, in words for the sender.
pub fn parse(headers: &[(&str, &str)], body: &[u8]) -> Result<Option<CloudEvent>, String> {
    let content_type = headers.iter().find(|(k, _)| *k == "content-type").map(|(_, v)| *v).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media == BATCH {
        return Err("batched content mode is not supported: send one event per request".to_owned());
    }
    if media == STRUCTURED {
        return parse_structured(body).map(Some);
    }
    if !headers.iter().any(|(k, _)| *k == "ce-specversion") {
        return Ok(None);
    }
    let mut attributes = BTreeMap::new();
    for (k, v) in headers {
        if let Some(name) = k.strip_prefix("ce-") {
            attributes.insert(name.to_owned(), percent_decode(v));
        }
    }
    if !content_type.is_empty() {
        attributes.insert("datacontenttype".to_owned(), content_type.to_owned());
    }
    let event = CloudEvent { attributes, data: body.to_vec() };
    check(&event)?;
    Ok(Some(event))
}

/// A structured-mode event: one JSON object with the attributes and `data` or
/// `data_base64`.
fn parse_structured(body: &[u8]) -> Result<CloudEvent, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the structured event is not valid JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("a structured event must be a JSON object".to_owned());
    };
    let mut attributes = BTreeMap::new();
    let mut data = Vec::new();
    for (k, v) in map {
        match (k.as_str(), v) {
            ("data", serde_json::Value::String(s)) => data = s.into_bytes(),
            ("data", serde_json::Value::Null) => {}
            ("data", other) => data = other.to_string().into_bytes(),
            ("data_base64", serde_json::Value::String(s)) => {
                data = base64_decode(&s).ok_or_else(|| "data_base64 is not valid base64".to_owned())?;
            }
            (_, serde_json::Value::String(s)) => {
                attributes.insert(k, s);
            }
            (_, serde_json::Value::Null) => {}
            (_, v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                attributes.insert(k, v.to_string());
            }
            (_, _) => return Err(format!("attribute `{k}` must be a string, number or boolean")),
        }
    }
    let event = CloudEvent { attributes, data };
    check(&event)?;
    Ok(event)
}

/// The checks a broker makes: a known spec version, the required attributes non-empty,
/// attribute names of lowercase letters and digits (at most 20, as the spec advises).
fn check(e: &CloudEvent) -> Result<(), String> {
    match e.attr("specversion") {
        Some(v) if VERSIONS.contains(&v) => {}
        Some(v) => return Err(format!("specversion `{v}` is not supported: use 1.0 (or 0.3)")),
        None => return Err("specversion is missing".to_owned()),
    }
    for required in ["id", "source", "type"] {
        if e.attr(required).is_none_or(str::is_empty) {
            return Err(format!("the required attribute `{required}` is missing or empty"));
        }
    }
    if let Some(bad) = e
        .attributes
        .keys()
        .find(|k| k.is_empty() || k.len() > 20 || !k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
    {
        return Err(format!("attribute name `{bad}` is not valid: use 1–20 lowercase letters and digits"));
    }
    Ok(())
}

/// Binary-mode header values are percent-encoded where they are not printable ASCII.
fn percent_decode(v: &str) -> String {
    if v.contains('%') { crate::route::percent_decode(v) } else { v.to_owned() }
}

/// What a trigger matches: every condition must hold (Knative's `all`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Filter {
    /// Attribute → the value it must equal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exact: BTreeMap<String, String>,
    /// Attribute → a prefix its value must start with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prefix: BTreeMap<String, String>,
    /// Attribute → a suffix its value must end with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub suffix: BTreeMap<String, String>,
}

impl Filter {
    /// Whether `event` passes; a filter with no conditions passes every event.
    pub fn matches(&self, event: &CloudEvent) -> bool {
        let has = |m: &BTreeMap<String, String>, test: fn(&str, &str) -> bool| {
            m.iter().all(|(k, want)| event.attr(k).is_some_and(|v| test(v, want)))
        };
        has(&self.exact, |v, w| v == w)
            && has(&self.prefix, |v, w| v.starts_with(w))
            && has(&self.suffix, |v, w| v.ends_with(w))
    }
}

/// Standard base64 (with or without padding) to bytes; `None` when it is not base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in text.bytes().filter(|b| !b.is_ascii_whitespace()) {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut h = vec![
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/orders"),
            ("ce-type", "order.created"),
            ("content-type", "application/json"),
        ];
        h.extend_from_slice(extra);
        h
    }

    #[test]
    fn binary_and_structured_events_parse_to_the_same_attributes() {
        let b = parse(&binary(&[("ce-subject", "a%20b.png")]), b"{\"n\":1}").unwrap().unwrap();
        assert_eq!(b.attr("subject"), Some("a b.png"));
        assert_eq!(b.attr("datacontenttype"), Some("application/json"));
        let s = parse(
            &[("content-type", "application/cloudevents+json; charset=utf-8")],
            br#"{"specversion":"1.0","id":"1","source":"/orders","type":"order.created","subject":"a b.png","datacontenttype":"application/json","data":{"n":1}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!((s.attributes.clone(), s.data.clone()), (b.attributes.clone(), b.data.clone()));
        let (headers, body) = b.to_binary();
        assert!(headers.contains(&("ce-type".into(), "order.created".into())));
        assert!(headers.contains(&("content-type".into(), "application/json".into())));
        assert_eq!(body, b"{\"n\":1}");
        let s64 = parse(
            &[("content-type", STRUCTURED)],
            br#"{"specversion":"1.0","id":"2","source":"s","type":"t","data_base64":"aGk="}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s64.data, b"hi");
        assert_eq!(parse(&[("content-type", "text/plain")], b"x").unwrap(), None, "not an event");
    }

    #[test]
    fn malformed_events_say_why() {
        /// Headers, body, and what the refusal must say.
        type Case = (Vec<(&'static str, &'static str)>, &'static [u8], &'static str);
        let cases: [Case; 6] = [
            (
                vec![("ce-specversion", "2.0"), ("ce-id", "1"), ("ce-source", "s"), ("ce-type", "t")],
                b"",
                "specversion `2.0`",
            ),
            (vec![("ce-specversion", "1.0"), ("ce-source", "s"), ("ce-type", "t")], b"", "`id` is missing"),
            (vec![("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", ""), ("ce-type", "t")], b"", "`source`"),
            (vec![("content-type", STRUCTURED)], b"{not json", "not valid JSON"),
            (vec![("content-type", STRUCTURED)], b"[1]", "JSON object"),
            (vec![("content-type", BATCH)], b"[]", "batched"),
        ];
        for (headers, body, says) in cases {
            let e = parse(&headers, body).unwrap_err();
            assert!(e.contains(says), "{e} should say {says}");
        }
        let bad_name = binary(&[("ce-Bad_Name", "x")]);
        let lowered: Vec<(String, &str)> = bad_name.iter().map(|(k, v)| (k.to_ascii_lowercase(), *v)).collect();
        let refs: Vec<(&str, &str)> = lowered.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert!(parse(&refs, b"").unwrap_err().contains("bad_name"));
    }

    #[test]
    fn filters_match_exact_prefix_and_suffix_together() {
        let e = parse(&binary(&[("ce-subject", "img/cat.png")]), b"").unwrap().unwrap();
        let f = |exact: &[(&str, &str)], prefix: &[(&str, &str)], suffix: &[(&str, &str)]| Filter {
            exact: exact.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            prefix: prefix.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            suffix: suffix.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        };
        assert!(Filter::default().matches(&e));
        assert!(f(&[("type", "order.created")], &[("source", "/ord")], &[("subject", ".png")]).matches(&e));
        assert!(!f(&[("type", "order.deleted")], &[], &[]).matches(&e));
        assert!(!f(&[], &[("source", "/users")], &[]).matches(&e));
        assert!(!f(&[], &[], &[("subject", ".jpg")]).matches(&e));
        assert!(!f(&[("missing", "x")], &[], &[]).matches(&e), "an absent attribute matches nothing");
    }

    #[test]
    fn base64_round_trips() {
        for text in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            let enc = crate::wire::base64(text.as_bytes());
            assert_eq!(base64_decode(&enc).unwrap(), text.as_bytes());
        }
        assert_eq!(base64_decode("a$b"), None);
    }
}
