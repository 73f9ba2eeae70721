//! AWS Lambda's wire shapes, as pure functions: the API Gateway HTTP API event (payload
//! format 2.0) an HTTP call becomes, the HTTP response a handler's result becomes, and
//! the error documents the runtime clients post.
//!
//! An unmodified Lambda handler behind API Gateway sees exactly this event and returns
//! `{statusCode, headers, cookies, body, isBase64Encoded}` or any other JSON value (sent
//! as the JSON body with status 200), so the same code answers HTTP calls on gust.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The Runtime API's version prefix.
pub const RUNTIME_API_PREFIX: &str = "/2018-06-01/runtime";

/// An HTTP call, as much of it as the event carries.
#[derive(Debug, Clone)]
pub struct HttpCall<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The path the function sees, without the query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// Headers in arrival order, names lowercase.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// The request body.
    pub body: &'a [u8],
    /// The call id, which is also the Lambda request id.
    pub request_id: &'a str,
    /// Arrival, in milliseconds since the Unix epoch.
    pub time_ms: i64,
}

/// Path parameters of a custom route reach the event as `pathParameters` (gust sends
/// them to every function as headers with this prefix).
const PARAM_PREFIX: &str = "x-gust-param-";

/// The API Gateway HTTP API (v2) event for `call`, as JSON bytes.
pub fn http_event(call: &HttpCall<'_>) -> Vec<u8> {
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies: Vec<String> = Vec::new();
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &call.headers {
        if *name == "cookie" {
            cookies.extend(text(value).split(';').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned));
            continue;
        }
        if let Some(param) = name.strip_prefix(PARAM_PREFIX) {
            params.insert(param.replace('-', "_"), text(value));
        }
        // Repeated headers are joined with commas, as API Gateway does.
        headers.entry((*name).to_owned()).and_modify(|v| v.push(',')).or_default().push_str(&text(value));
    }
    let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
    // The gateway appended the caller's address last.
    let source_ip = header("x-forwarded-for").rsplit(',').next().unwrap_or_default().trim().to_owned();
    let host = header("x-forwarded-host");
    let mut event = Map::new();
    event.insert("version".into(), "2.0".into());
    event.insert("routeKey".into(), "$default".into());
    event.insert("rawPath".into(), call.path.into());
    event.insert("rawQueryString".into(), call.query.unwrap_or_default().into());
    if !cookies.is_empty() {
        event.insert("cookies".into(), cookies.into());
    }
    if let Some(q) = call.query.filter(|q| !q.is_empty()) {
        let mut joined: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in query_pairs(q) {
            joined.entry(k).and_modify(|prior| prior.push(',')).or_default().push_str(&v);
        }
        event.insert("queryStringParameters".into(), to_object(joined));
    }
    if !params.is_empty() {
        event.insert("pathParameters".into(), to_object(params));
    }
    let mut http = Map::new();
    http.insert("method".into(), call.method.into());
    http.insert("path".into(), call.path.into());
    http.insert("protocol".into(), "HTTP/1.1".into());
    http.insert("sourceIp".into(), source_ip.into());
    http.insert("userAgent".into(), header("user-agent").into());
    let mut context = Map::new();
    context.insert("accountId".into(), "000000000000".into());
    context.insert("apiId".into(), "gust".into());
    context.insert("domainName".into(), host.clone().into());
    context.insert("domainPrefix".into(), host.split('.').next().unwrap_or_default().into());
    context.insert("http".into(), Value::Object(http));
    context.insert("requestId".into(), call.request_id.into());
    context.insert("routeKey".into(), "$default".into());
    context.insert("stage".into(), "$default".into());
    context.insert("time".into(), clf_time(call.time_ms).into());
    context.insert("timeEpoch".into(), call.time_ms.into());
    event.insert("headers".into(), to_object(headers));
    event.insert("requestContext".into(), Value::Object(context));
    match std::str::from_utf8(call.body) {
        _ if call.body.is_empty() => {
            event.insert("isBase64Encoded".into(), false.into());
        }
        Ok(body) => {
            event.insert("body".into(), body.into());
            event.insert("isBase64Encoded".into(), false.into());
        }
        Err(_) => {
            event.insert("body".into(), crate::wire::base64(call.body).into());
            event.insert("isBase64Encoded".into(), true.into());
        }
    }
    // Serializing a Value cannot fail.
    serde_json::to_vec(&Value::Object(event)).unwrap_or_default()
}

fn to_object(map: BTreeMap<String, String>) -> Value {
    Value::Object(map.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
}

/// `a=1&b=x%20y` as decoded pairs (`+` is a space, as in forms).
fn query_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |t: &str| crate::route::percent_decode(&t.replace('+', " "));
        (decode(k), decode(v))
    })
}

/// `12/Mar/2020:19:03:58 +0000`, the access-log time API Gateway puts in `time`.
fn clf_time(ms: i64) -> String {
    use chrono::TimeZone as _;
    chrono::Utc
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%d/%b/%Y:%H:%M:%S +0000").to_string())
        .unwrap_or_default()
}

/// The HTTP answer a handler's result maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// Headers in order, `Set-Cookie` once per cookie.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Maps a handler's result to an HTTP answer, as API Gateway does for payload 2.0: an
/// object with `statusCode` gives that status, `headers` (and v1's `multiValueHeaders`),
/// `cookies` and `body` (base64-decoded when `isBase64Encoded`); any other result is the
/// JSON body of a 200.
///
/// # Errors
/// A message saying what is wrong with a result that has `statusCode` but cannot be
/// answered (a bad status, a body that is not a string, bad base64); API Gateway
/// answers those with 502 and so does gust.
pub fn http_answer(result: &[u8]) -> Result<HttpAnswer, String> {
    let json_body = || HttpAnswer {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: result.to_vec(),
    };
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(result) else {
        return Ok(json_body());
    };
    let Some(status) = obj.remove("statusCode") else {
        return Ok(json_body());
    };
    let status = status
        .as_u64()
        .or_else(|| status.as_str().and_then(|s| s.parse().ok()))
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| format!("statusCode {status} is not an HTTP status"))?;
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(Value::Object(h)) = obj.get("headers") {
        for (k, v) in h {
            let v = scalar(v).ok_or_else(|| format!("header `{k}` must be a string"))?;
            headers.push((k.to_ascii_lowercase(), v));
        }
    }
    if let Some(Value::Object(h)) = obj.get("multiValueHeaders") {
        for (k, values) in h {
            for v in values.as_array().into_iter().flatten() {
                let v = scalar(v).ok_or_else(|| format!("header `{k}` must hold strings"))?;
                headers.push((k.to_ascii_lowercase(), v));
            }
        }
    }
    if let Some(Value::Array(cookies)) = obj.get("cookies") {
        for c in cookies {
            let c = c.as_str().ok_or("cookies must be strings")?;
            headers.push(("set-cookie".into(), c.to_owned()));
        }
    }
    let body = match obj.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if obj.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) => {
            crate::event::base64_decode(s).ok_or("body is marked isBase64Encoded but is not base64")?
        }
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => return Err(format!("body must be a string, not {}", kind(other))),
    };
    Ok(HttpAnswer { status, headers, body })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A function error as the runtime clients report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    /// `errorType`: the exception's class (`ValueError`, `Runtime.ImportModuleError`).
    pub error_type: String,
    /// `errorMessage`.
    pub error_message: String,
}

impl FunctionError {
    /// Reads an error document leniently: the clients differ in what else they send
    /// (`stackTrace`, `trace`, `requestId`), and some send the type only as the
    /// `Lambda-Runtime-Function-Error-Type` header (`header_type`).
    pub fn parse(body: &[u8], header_type: Option<&str>) -> Self {
        let doc: Option<Map<String, Value>> = match serde_json::from_slice(body) {
            Ok(Value::Object(o)) => Some(o),
            _ => None,
        };
        let field = |k: &str| doc.as_ref().and_then(|d| d.get(k)).and_then(Value::as_str).map(str::to_owned);
        let error_type = field("errorType")
            .or_else(|| header_type.map(str::to_owned))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "Unhandled".to_owned());
        let error_message = field("errorMessage").unwrap_or_else(|| match doc {
            Some(_) => String::new(),
            None => String::from_utf8_lossy(body).into_owned(),
        });
        Self { error_type, error_message }
    }

    /// `{"errorMessage": …, "errorType": …}`, what a caller gets.
    pub fn to_json(&self) -> Vec<u8> {
        let mut doc = Map::new();
        doc.insert("errorMessage".into(), self.error_message.clone().into());
        doc.insert("errorType".into(), self.error_type.clone().into());
        serde_json::to_vec(&Value::Object(doc)).unwrap_or_default()
    }
}

impl std::fmt::Display for FunctionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.error_message.is_empty() {
            f.write_str(&self.error_type)
        } else {
            write!(f, "{}: {}", self.error_type, self.error_message)
        }
    }
}

/// A Runtime API request, routed. Pure, so it can be tested (and fuzzed) without a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeApiRoute<'a> {
    /// `GET /2018-06-01/runtime/invocation/next`.
    Next,
    /// `POST /2018-06-01/runtime/invocation/{id}/response`.
    Response(&'a str),
    /// `POST /2018-06-01/runtime/invocation/{id}/error`.
    Error(&'a str),
    /// `POST /2018-06-01/runtime/init/error`.
    InitError,
    /// A known path with the wrong method; the allowed one.
    WrongMethod(&'static str),
    /// Anything else.
    NotFound,
}

/// Routes a Runtime API request by method and path.
pub fn route<'a>(method: &str, path: &'a str) -> RuntimeApiRoute<'a> {
    let Some(rest) = path.strip_prefix(RUNTIME_API_PREFIX) else {
        return RuntimeApiRoute::NotFound;
    };
    let want = |allowed: &'static str, route: RuntimeApiRoute<'a>| {
        if method == allowed { route } else { RuntimeApiRoute::WrongMethod(allowed) }
    };
    match rest {
        "/invocation/next" => want("GET", RuntimeApiRoute::Next),
        "/init/error" => want("POST", RuntimeApiRoute::InitError),
        _ => {
            let Some(inv) = rest.strip_prefix("/invocation/") else {
                return RuntimeApiRoute::NotFound;
            };
            match inv.rsplit_once('/') {
                Some((id, "response")) if valid_id(id) => want("POST", RuntimeApiRoute::Response(id)),
                Some((id, "error")) if valid_id(id) => want("POST", RuntimeApiRoute::Error(id)),
                _ => RuntimeApiRoute::NotFound,
            }
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && !id.contains('/')
}

/// Where a Lambda Invoke API call (`/2015-03-31/functions/{name}/invocations`) goes:
/// the function's name and, from an ARN, `NAME:QUALIFIER` or `?Qualifier=`, the
/// qualifier. `$LATEST` is no qualifier at all.
pub fn invoke_target<'a>(function_name: &'a str, qualifier: Option<&'a str>) -> (&'a str, Option<&'a str>) {
    // arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
    let short = match function_name.split_once(":function:") {
        Some((_, rest)) => rest,
        None => function_name,
    };
    let (name, from_name) = match short.split_once(':') {
        Some((n, q)) => (n, Some(q)),
        None => (short, None),
    };
    let qualifier = qualifier.or(from_name).filter(|q| !q.is_empty() && *q != "$LATEST");
    (name, qualifier)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn call<'a>(headers: Vec<(&'a str, &'a [u8])>, query: Option<&'a str>, body: &'a [u8]) -> Value {
        let c = HttpCall {
            method: "POST",
            path: "/my/path",
            query,
            headers,
            body,
            request_id: "c-1",
            time_ms: 1_583_348_638_390,
        };
        serde_json::from_slice(&http_event(&c)).unwrap()
    }

    #[test]
    fn an_http_call_becomes_a_v2_event() {
        let e = call(
            vec![
                ("user-agent", b"curl/8"),
                ("x-forwarded-for", b"10.0.0.1, 127.0.0.1"),
                ("x-forwarded-host", b"api.example.com"),
                ("accept", b"a"),
                ("accept", b"b"),
                ("cookie", b"c1=1; c2=2"),
                ("x-gust-param-user-id", b"42"),
            ],
            Some("p1=v1&p1=v2&p2=a%20b+c"),
            b"hello",
        );
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["rawPath"], "/my/path");
        assert_eq!(e["rawQueryString"], "p1=v1&p1=v2&p2=a%20b+c");
        assert_eq!(e["queryStringParameters"]["p1"], "v1,v2");
        assert_eq!(e["queryStringParameters"]["p2"], "a b c");
        assert_eq!(e["headers"]["accept"], "a,b");
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["cookies"], serde_json::json!(["c1=1", "c2=2"]));
        assert_eq!(e["pathParameters"]["user_id"], "42");
        assert_eq!(e["requestContext"]["http"]["method"], "POST");
        assert_eq!(e["requestContext"]["http"]["sourceIp"], "127.0.0.1");
        assert_eq!(e["requestContext"]["http"]["userAgent"], "curl/8");
        assert_eq!(e["requestContext"]["domainName"], "api.example.com");
        assert_eq!(e["requestContext"]["domainPrefix"], "api");
        assert_eq!(e["requestContext"]["requestId"], "c-1");
        assert_eq!(e["requestContext"]["time"], "04/Mar/2020:19:03:58 +0000");
        assert_eq!(e["requestContext"]["timeEpoch"], 1_583_348_638_390_i64);
        assert_eq!((e["body"].as_str(), e["isBase64Encoded"].as_bool()), (Some("hello"), Some(false)));
    }

    #[test]
    fn binary_bodies_are_base64_and_empty_ones_absent() {
        let e = call(vec![], None, &[0xff, 0x00, 0x01]);
        assert_eq!((e["body"].as_str(), e["isBase64Encoded"].as_bool()), (Some("/wAB"), Some(true)));
        let e = call(vec![], None, b"");
        assert!(e.get("body").is_none());
        assert!(e.get("queryStringParameters").is_none());
        assert_eq!(e["rawQueryString"], "");
    }

    #[test]
    fn a_result_with_a_status_code_is_the_response() {
        let a = http_answer(
            br#"{"statusCode":201,"headers":{"X-A":"1","n":2},"cookies":["s=1"],"body":"made","isBase64Encoded":false}"#,
        )
        .unwrap();
        assert_eq!(a.status, 201);
        assert_eq!(a.body, b"made");
        assert!(a.headers.contains(&("x-a".into(), "1".into())));
        assert!(a.headers.contains(&("n".into(), "2".into())));
        assert!(a.headers.contains(&("set-cookie".into(), "s=1".into())));
        let b = http_answer(br#"{"statusCode":"200","body":"aGk=","isBase64Encoded":true}"#).unwrap();
        assert_eq!((b.status, b.body.as_slice()), (200, &b"hi"[..]));
        let m = http_answer(br#"{"statusCode":200,"multiValueHeaders":{"v":["1","2"]}}"#).unwrap();
        assert_eq!(m.headers, vec![("v".to_owned(), "1".to_owned()), ("v".to_owned(), "2".to_owned())]);
        assert!(m.body.is_empty());
    }

    #[test]
    fn any_other_result_is_a_json_body() {
        for r in [&br#"{"hello":"world"}"#[..], b"\"text\"", b"[1,2]", b"42", b"not json"] {
            let a = http_answer(r).unwrap();
            assert_eq!((a.status, a.body.as_slice()), (200, r));
            assert_eq!(a.headers, vec![("content-type".to_owned(), "application/json".to_owned())]);
        }
    }

    #[test]
    fn a_broken_response_object_is_an_error() {
        assert!(http_answer(br#"{"statusCode":99}"#).unwrap_err().contains("not an HTTP status"));
        assert!(http_answer(br#"{"statusCode":200,"body":{"a":1}}"#).unwrap_err().contains("must be a string"));
        assert!(
            http_answer(br#"{"statusCode":200,"body":"%%","isBase64Encoded":true}"#).unwrap_err().contains("base64")
        );
    }

    #[test]
    fn errors_from_every_client_shape_parse() {
        let py = FunctionError::parse(
            br#"{"errorMessage":"boom","errorType":"ValueError","requestId":"r","stackTrace":["x"]}"#,
            None,
        );
        assert_eq!((py.error_type.as_str(), py.error_message.as_str()), ("ValueError", "boom"));
        let rust = FunctionError::parse(br#"{"errorMessage":"bad"}"#, Some("unhandled"));
        assert_eq!(rust.error_type, "unhandled");
        let junk = FunctionError::parse(b"plain words", None);
        assert_eq!((junk.error_type.as_str(), junk.error_message.as_str()), ("Unhandled", "plain words"));
        assert_eq!(py.to_string(), "ValueError: boom");
        let doc: Value = serde_json::from_slice(&py.to_json()).unwrap();
        assert_eq!(doc, serde_json::json!({"errorMessage": "boom", "errorType": "ValueError"}));
    }

    #[test]
    fn runtime_api_paths_route() {
        use RuntimeApiRoute as R;
        assert_eq!(route("GET", "/2018-06-01/runtime/invocation/next"), R::Next);
        assert_eq!(route("POST", "/2018-06-01/runtime/invocation/abc/response"), R::Response("abc"));
        assert_eq!(route("POST", "/2018-06-01/runtime/invocation/abc/error"), R::Error("abc"));
        assert_eq!(route("POST", "/2018-06-01/runtime/init/error"), R::InitError);
        assert_eq!(route("POST", "/2018-06-01/runtime/invocation/next"), R::WrongMethod("GET"));
        assert_eq!(route("GET", "/2018-06-01/runtime/invocation/abc/response"), R::WrongMethod("POST"));
        assert_eq!(route("POST", "/2018-06-01/runtime/invocation//response"), R::NotFound);
        assert_eq!(route("POST", "/2018-06-01/runtime/invocation/a/b/response"), R::NotFound);
        assert_eq!(route("GET", "/2020-01-01/extension/register"), R::NotFound);
    }

    #[test]
    fn invoke_targets_take_names_arns_and_qualifiers() {
        assert_eq!(invoke_target("hello", None), ("hello", None));
        assert_eq!(invoke_target("hello", Some("$LATEST")), ("hello", None));
        assert_eq!(invoke_target("hello:canary", None), ("hello", Some("canary")));
        assert_eq!(invoke_target("arn:aws:lambda:us-east-1:1:function:hello", Some("v2")), ("hello", Some("v2")));
        assert_eq!(invoke_target("arn:aws:lambda:us-east-1:1:function:hello:blue", None), ("hello", Some("blue")));
    }
}
