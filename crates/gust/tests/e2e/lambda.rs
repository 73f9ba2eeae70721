//! AWS Lambda functions (issue 7): the built-in `lambda-python` and `lambda-node`
//! clients, custom runtimes (`lambda` + `bootstrap`) with the real runtime interface
//! clients — `awslambdaric` (PyPI), `aws-lambda-ric` (npm), the `lambda_runtime` crate —
//! and the Lambda Invoke API driven by `boto3`. `scripts/test` installs the clients.

use std::path::PathBuf;

use gust_test_support::{Gust, Resp, eventually};

use crate::{gust, manifest};

/// Answers with what it was given, or fails as the event asks.
const PY_ECHO: &str = r#"import json, os, time
def handler(event, context):
    path = event.get("rawPath", "")
    if path == "/raise" or event.get("boom"):
        raise ValueError("boom")
    if path == "/sleep":
        time.sleep(30)
    if path == "/shaped":
        return {"statusCode": 201, "headers": {"x-made": "yes", "content-type": "text/plain"},
                "cookies": ["a=1", "b=2"], "body": "bWFkZQ==", "isBase64Encoded": True}
    if path == "/badshape":
        return {"statusCode": "teapot"}
    return {"event": event, "request_id": context.aws_request_id, "function": context.function_name,
            "arn": context.invoked_function_arn, "memory": context.memory_limit_in_mb,
            "left_ms": context.get_remaining_time_in_millis(), "trace": os.environ.get("_X_AMZN_TRACE_ID"),
            "task_root": os.environ.get("LAMBDA_TASK_ROOT"), "handler": os.environ.get("_HANDLER"),
            "custom": context.client_context.custom if context.client_context else None,
            "app": context.client_context.client.app_title if context.client_context and context.client_context.client else None}
"#;

/// Where the npm `aws-lambda-ric` package was installed (by `scripts/test`).
fn node_ric() -> PathBuf {
    let dir = std::env::var_os("GUST_TEST_NODE_RIC").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/lambda-clients/node/node_modules/aws-lambda-ric")
    });
    let entry = dir.join("bin/index.mjs");
    assert!(
        entry.is_file(),
        "aws-lambda-ric is not installed at {}: run scripts/test, which installs it",
        dir.display()
    );
    entry
}

/// The `lambda_runtime` test function, built beside `gust` (by `scripts/test`).
fn rust_lambda() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_gust")).with_file_name("gust-test-lambda");
    assert!(bin.is_file(), "{} is missing: run scripts/test (or cargo build -p gust-test-lambda)", bin.display());
    bin
}

fn invoke(g: &Gust, function: &str, payload: &str, headers: &[&str]) -> Resp {
    g.call("POST", &format!("/2015-03-31/functions/{function}/invocations"), payload.as_bytes(), headers)
}

fn deploy_fails(g: &Gust, name: &str, files: &[(&str, &str)]) -> String {
    let dir = g.function(name, files);
    let out = g.cli(&["deploy", dir.to_str().unwrap()]);
    assert!(!out.status.success(), "the deploy of {name} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_lambda_python_handler_gets_api_gateway_v2_events_and_shapes_its_response() {
    let g = gust();
    g.deploy(
        "echo",
        &[("gust.toml", &manifest("echo", "lambda-python", "handler = \"app.handler\"")), ("app.py", PY_ECHO)],
    );
    let r = g.call(
        "POST",
        "/function/echo/items/7?color=red&color=blue&q=a%20b",
        b"{\"n\":1}",
        &["Content-Type: application/json", "Cookie: s=1; t=2", "X-Thing: yes"],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    let e = &a["event"];
    assert_eq!(e["version"], "2.0");
    assert_eq!(e["routeKey"], "$default");
    assert_eq!(e["rawPath"], "/items/7");
    assert_eq!(e["rawQueryString"], "color=red&color=blue&q=a%20b");
    assert_eq!(e["queryStringParameters"]["color"], "red,blue");
    assert_eq!(e["queryStringParameters"]["q"], "a b");
    assert_eq!(e["headers"]["x-thing"], "yes");
    assert_eq!(e["cookies"], serde_json::json!(["s=1", "t=2"]));
    assert_eq!(e["body"], "{\"n\":1}");
    assert_eq!(e["isBase64Encoded"], false);
    assert_eq!(e["requestContext"]["http"]["method"], "POST");
    assert_eq!(e["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    // The Lambda request id is the call id.
    assert_eq!(a["request_id"].as_str(), r.header("x-call-id"));
    assert_eq!(e["requestContext"]["requestId"].as_str(), r.header("x-call-id"));
    assert_eq!(a["function"], "echo");
    assert_eq!(a["arn"], "arn:aws:lambda:us-east-1:000000000000:function:echo");
    assert_eq!(a["memory"], "128");
    assert_eq!(a["handler"], "app.handler");
    assert!(a["trace"].as_str().unwrap().starts_with("Root=1-"), "{a}");
    let left = a["left_ms"].as_u64().unwrap();
    assert!(left > 0 && left <= 60_000, "remaining time {left} ms should be within limits.timeout");

    // Binary bodies arrive base64-encoded.
    let r = g.call("POST", "/function/echo/bin", &[0xff, 0x00, 0x10], &["Content-Type: application/octet-stream"]);
    assert_eq!(
        (r.json()["event"]["body"].as_str(), r.json()["event"]["isBase64Encoded"].as_bool()),
        (Some("/wAQ"), Some(true))
    );

    // {statusCode, headers, cookies, body, isBase64Encoded} is the HTTP response.
    let r = g.call("GET", "/function/echo/shaped", b"", &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.text(), "made");
    assert_eq!(r.header("x-made"), Some("yes"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(r.header("set-cookie").is_some(), "{:?}", r.headers);

    // A handler exception is a 500 with Lambda's error document.
    let r = g.call("GET", "/function/echo/raise", b"", &[]);
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"errorMessage": "boom", "errorType": "ValueError"}));
    crate::log_with(&g, "echo", |l| l.contains("[ERROR] ValueError: boom"));

    // A response object that is not one is a 502 that says why.
    let r = g.call("GET", "/function/echo/badshape", b"", &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("not an HTTP status"), "{}", r.text());

    // The instance survived all of it, and it was forked from the Python zygote.
    assert_eq!(g.call("GET", "/function/echo/again", b"", &[]).status, 200);
    let s = &g.describe("echo")["scaling"][0];
    assert_eq!((s["cold_starts"].as_u64(), s["pooled_starts"].as_u64()), (Some(1), Some(1)), "{s}");
}

#[test]
fn a_lambda_python_function_runs_fresh_when_the_pool_is_off_and_logs_like_aws() {
    let g = crate::gust_env(&[("GUST_POOL", "python=0")]);
    let code = "import logging\nlog = logging.getLogger()\nlog.setLevel(logging.INFO)\ndef handler(event, context):\n    log.info('handled %s', event['rawPath'])\n    return 'ok'\n";
    g.deploy(
        "plain",
        &[("gust.toml", &manifest("plain", "lambda-python", "handler = \"app.handler\"")), ("app.py", code)],
    );
    let r = g.call("GET", "/function/plain/p", b"", &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "\"ok\""));
    let id = r.header("x-call-id").unwrap().to_owned();
    crate::log_with(&g, "plain", |l| l.contains("[INFO]\t") && l.contains(&format!("\t{id}\thandled /p")));
    let s = &g.describe("plain")["scaling"][0];
    assert_eq!(s["pooled_starts"], 0, "{s}");
    assert!(s["unpooled_reason"].as_str().unwrap().contains("--pool"), "{s}");
}

#[test]
fn a_lambda_call_past_its_deadline_times_out_and_the_instance_is_replaced() {
    let g = gust();
    let m = manifest("slow", "lambda-python", "handler = \"app.handler\"\n[limits]\ntimeout = \"1s\"");
    g.deploy("slow", &[("gust.toml", &m), ("app.py", PY_ECHO)]);
    assert_eq!(g.call("GET", "/function/slow/warm", b"", &[]).status, 200);
    let before = g.instance_pids("slow");
    let r = g.call("GET", "/function/slow/sleep", b"", &[]);
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "timeout");
    // Lambda kills the sandbox of a timed-out invocation; so does gust.
    eventually("the stuck instance to be gone", || {
        (!g.instance_pids("slow").iter().any(|p| before.contains(p))).then_some(())
    });
    let r = g.call("GET", "/function/slow/after", b"", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["left_ms"].as_u64().unwrap() <= 1000);
    // The Invoke API reports a timeout as Lambda does: a function error.
    let r = invoke(&g, "slow", "{\"rawPath\":\"/sleep\"}", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(r.json()["errorType"], "Sandbox.Timedout");
}

#[test]
fn lambda_init_errors_fail_the_revision_with_the_clients_message() {
    let g = gust();
    let m = |h: &str| manifest("broken", "lambda-python", &format!("handler = \"{h}\""));
    let err = deploy_fails(&g, "broken", &[("gust.toml", &m("app.handler")), ("app.py", "import not_a_module\n")]);
    assert!(err.contains("Runtime.ImportModuleError") && err.contains("not_a_module"), "{err}");
    let err = deploy_fails(&g, "broken", &[("gust.toml", &m("app.nothere")), ("app.py", "x = 1\n")]);
    assert!(err.contains("Runtime.HandlerNotFound"), "{err}");
    let err = deploy_fails(&g, "broken", &[("gust.toml", &m("app.handler")), ("app.py", "def handler(:\n")]);
    assert!(err.contains("Runtime.UserCodeSyntaxError"), "{err}");
    let n = |h: &str| manifest("nbroken", "lambda-node", &format!("handler = \"{h}\""));
    let err = deploy_fails(&g, "nbroken", &[("gust.toml", &n("index.handler")), ("index.js", "exports.other = 1;\n")]);
    assert!(err.contains("Runtime.HandlerNotFound"), "{err}");
    let err = deploy_fails(
        &g,
        "nbroken",
        &[("gust.toml", &n("index.handler")), ("index.mjs", "export const handler = (;\n")],
    );
    assert!(err.contains("Runtime.UserCodeSyntaxError"), "{err}");
    // The handler's file must exist at all before anything starts.
    let err = deploy_fails(&g, "nbroken", &[("gust.toml", &n("main.handler")), ("index.js", "")]);
    assert!(err.contains("main.js"), "{err}");
}

#[test]
fn lambda_node_runs_async_callback_and_es_module_handlers() {
    let g = gust();
    let esm = "export const handler = async (event, context) => {\n  if (event.boom) throw new TypeError('kaboom');\n  console.log('esm got', event.rawPath);\n  return { path: event.rawPath, id: context.awsRequestId, left: context.getRemainingTimeInMillis() > 0 };\n};\n";
    g.deploy(
        "esm",
        &[("gust.toml", &manifest("esm", "lambda-node", "handler = \"index.handler\"")), ("index.mjs", esm)],
    );
    let r = g.call("GET", "/function/esm/hello", b"", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/hello");
    assert_eq!(r.json()["left"], true);
    assert_eq!(r.json()["id"].as_str(), r.header("x-call-id"));
    let want = format!("{}\tINFO\tesm got /hello", r.header("x-call-id").unwrap());
    crate::log_with(&g, "esm", |l| l.contains(&want));
    // It was a warm Node spare, specialised as a Lambda client.
    let s = &g.describe("esm")["scaling"][0];
    assert_eq!((s["cold_starts"].as_u64(), s["pooled_starts"].as_u64()), (Some(1), Some(1)), "{s}");
    let r = invoke(&g, "esm", "{\"boom\":true}", &[]);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"), "{}", r.text());
    assert_eq!(r.json()["errorType"], "TypeError");
    assert_eq!(r.json()["errorMessage"], "kaboom");

    let callback = "exports.nested = { handler: (event, context, callback) => {\n  setTimeout(() => event.fail ? callback(new RangeError('no')) : callback(null, { statusCode: 202, body: 'later' }), 5);\n} };\n";
    g.deploy(
        "cb",
        &[
            ("gust.toml", &manifest("cb", "lambda-node", "handler = \"lib/fn.nested.handler\"")),
            ("lib/fn.js", callback),
        ],
    );
    let r = g.call("GET", "/function/cb", b"", &[]);
    assert_eq!((r.status, r.text().as_str()), (202, "later"));
    let r = invoke(&g, "cb", "{\"fail\":true}", &[]);
    assert_eq!(r.json()["errorType"], "RangeError", "{}", r.text());
}

#[test]
fn gust_new_writes_working_lambda_functions_for_every_lambda_runtime() {
    let g = gust();
    for (name, runtime) in [("py", "lambda-python"), ("js", "lambda-node"), ("sh", "lambda")] {
        g.cli_ok(&["new", name, "--runtime", runtime]);
        g.cli_ok(&["deploy", name]);
        let r = g.call("GET", &format!("/function/{name}?name=ann"), b"", &[]);
        assert_eq!(r.status, 200, "{runtime}: {}", r.text());
        let want = if runtime == "lambda" { "Hello, world!" } else { "Hello, ann!" };
        assert!(r.text().contains(want), "{runtime}: {}", r.text());
    }
}

/// A custom runtime in sh and curl that breaks the Runtime API's rules on purpose: it
/// answers each invocation twice and answers one that does not exist, and writes what
/// the API said to its log.
#[test]
fn the_runtime_api_refuses_a_second_answer_and_an_unknown_request_id() {
    let g = gust();
    let bootstrap = r#"#!/bin/sh
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
while true; do
  h=$(mktemp)
  curl -sS -D "$h" -o /dev/null "$api/invocation/next"
  id=$(grep -i '^lambda-runtime-aws-request-id:' "$h" | tr -d '\r' | cut -d' ' -f2)
  deadline=$(grep -ci '^lambda-runtime-deadline-ms:' "$h")
  first=$(curl -s -o /dev/null -w '%{http_code}' -d '{"statusCode":200,"body":"ok"}' "$api/invocation/$id/response")
  second=$(curl -s -o /dev/null -w '%{http_code}' -d '{}' "$api/invocation/$id/response")
  unknown=$(curl -s -o /dev/null -w '%{http_code}' -d '{}' "$api/invocation/nope/error")
  wrong=$(curl -s -o /dev/null -w '%{http_code}' "$api/invocation/$id/response")
  echo "first=$first second=$second unknown=$unknown wrong=$wrong deadline=$deadline" >&2
done
"#;
    g.deploy("rules", &[("gust.toml", &manifest("rules", "lambda", "")), ("bootstrap", bootstrap)]);
    let r = g.get("rules");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let line = eventually("the bootstrap's report", || {
        g.cli_ok(&["logs", "rules"]).lines().find(|l| l.contains("first=")).map(str::to_owned)
    });
    assert!(line.contains("first=202 second=403 unknown=400 wrong=405 deadline=1"), "{line}");
}

#[test]
fn awslambdaric_from_pypi_runs_as_a_custom_runtime() {
    let g = gust();
    let bootstrap = "#!/bin/sh\nexec python3 -m awslambdaric \"$_HANDLER\"\n";
    let m = manifest("ric", "lambda", "handler = \"app.handler\"");
    g.deploy("ric", &[("gust.toml", &m), ("bootstrap", bootstrap), ("app.py", PY_ECHO)]);
    // Success, over HTTP and over the Invoke API.
    let r = g.call("GET", "/function/ric/hi?x=1", b"", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["event"]["queryStringParameters"]["x"], "1");
    assert_eq!(r.json()["request_id"].as_str(), r.header("x-call-id"));
    let r = invoke(&g, "ric", "{\"k\":\"v\"}", &[]);
    assert_eq!(r.json()["event"], serde_json::json!({"k": "v"}), "{}", r.text());
    // A handler error, as awslambdaric reports it.
    let r = invoke(&g, "ric", "{\"boom\":1}", &[]);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!((r.json()["errorType"].as_str(), r.json()["errorMessage"].as_str()), (Some("ValueError"), Some("boom")));
    assert!(r.json()["stackTrace"].is_array(), "{}", r.text());
    assert_eq!(g.call("GET", "/function/ric/raise", b"", &[]).status, 500);
    // A bad event never reaches the client; it keeps serving.
    let r = invoke(&g, "ric", "{not json", &[]);
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-amzn-errortype"), Some("InvalidRequestContentException"));
    assert_eq!(invoke(&g, "ric", "{}", &[]).status, 200);
    // An init error fails the revision with awslambdaric's message; the old one serves.
    let m = manifest("ric", "lambda", "handler = \"gone.handler\"");
    let err = deploy_fails(&g, "ric", &[("gust.toml", &m), ("bootstrap", bootstrap), ("app.py", PY_ECHO)]);
    assert!(err.contains("Runtime.ImportModuleError") && err.contains("ric-00001 keeps serving"), "{err}");
    assert_eq!(g.call("GET", "/function/ric", b"", &[]).status, 200);
}

#[test]
fn aws_lambda_ric_from_npm_runs_as_a_custom_runtime() {
    let g = gust();
    let bootstrap = format!("#!/bin/sh\nexec node {} \"$_HANDLER\"\n", node_ric().display());
    let code = "export const handler = async (event, context) => {\n  if (event.boom) throw new TypeError('kaboom');\n  return { statusCode: 201, body: JSON.stringify({ path: event.rawPath, id: context.awsRequestId, event }) };\n};\n";
    let m = manifest("nric", "lambda", "handler = \"index.handler\"");
    g.deploy("nric", &[("gust.toml", &m), ("bootstrap", &bootstrap), ("index.mjs", code)]);
    let r = g.call("GET", "/function/nric/hi", b"", &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["path"], "/hi");
    assert_eq!(r.json()["id"].as_str(), r.header("x-call-id"));
    let r = invoke(&g, "nric", "{\"boom\":1}", &[]);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"), "{}", r.text());
    assert_eq!(r.json()["errorType"], "TypeError");
    assert_eq!(r.json()["errorMessage"], "kaboom");
    assert_eq!(g.call("GET", "/function/nric/hi", b"", &[]).status, 201);
    let r = invoke(&g, "nric", "[1,", &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    let m = manifest("nric", "lambda", "handler = \"missing.handler\"");
    let err = deploy_fails(&g, "nric", &[("gust.toml", &m), ("bootstrap", &bootstrap), ("index.mjs", code)]);
    assert!(err.contains("failed to start") && err.contains("nric-00001 keeps serving"), "{err}");
    assert!(err.contains("ImportModuleError") || err.contains("Cannot find module"), "{err}");
}

#[test]
fn a_function_built_with_the_lambda_runtime_crate_runs_as_a_bootstrap() {
    let g = gust();
    let dir = g.function("rs", &[("gust.toml", &manifest("rs", "lambda", ""))]);
    std::fs::copy(rust_lambda(), dir.join("bootstrap")).unwrap();
    g.cli_ok(&["deploy", dir.to_str().unwrap()]);
    let r = invoke(&g, "rs", "{\"name\":\"ann\"}", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(a["greeting"], "Hello, ann!");
    assert_eq!(a["function"], "rs");
    assert_eq!(a["request_id"].as_str(), r.header("x-call-id"));
    assert!(a["deadline_ms"].as_u64().unwrap() > 1_700_000_000_000, "{a}");
    // A handler error; the crate sends the type as a header, not in the body.
    let r = invoke(&g, "rs", "{\"name\":\"ann\",\"fail\":true}", &[]);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(r.json()["errorMessage"], "failing as asked for ann");
    // An event of the wrong shape: the crate's own deserialize error.
    let r = invoke(&g, "rs", "{\"nom\":1}", &[]);
    assert!(r.json()["errorType"].as_str().unwrap().contains("DeserializeError"), "{}", r.text());
    assert_eq!(g.call("POST", "/function/rs", b"", &[]).status, 500);
    assert_eq!(invoke(&g, "rs", "{\"name\":\"bo\"}", &[]).json()["greeting"], "Hello, bo!");
    // A failed init: it exits before asking for work.
    let m = manifest("rs", "lambda", "[env]\nFAIL_INIT = \"1\"");
    std::fs::write(dir.join("gust.toml"), m).unwrap();
    let out = g.cli(&["deploy", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("init failed: FAIL_INIT is set"), "{err}");
}

/// Calls gust with boto3's Lambda client, as existing AWS SDK code would.
const BOTO: &str = r#"
import base64, json, sys, boto3, botocore.config
c = boto3.client("lambda", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="x",
                 aws_secret_access_key="y", config=botocore.config.Config(retries={"total_max_attempts": 1}))
out = {}
r = c.invoke(FunctionName="echo", Payload=json.dumps({"k": "v"}))
out["sync"] = {"status": r["StatusCode"], "error": r.get("FunctionError"), "payload": json.loads(r["Payload"].read()),
               "version": r.get("ExecutedVersion")}
r = c.invoke(FunctionName="echo", Payload=b"{}",
             ClientContext=base64.b64encode(json.dumps({"custom": {"tenant": "t1"}, "client": {"app_title": "shop"}}).encode()).decode())
out["context"] = json.loads(r["Payload"].read())
r = c.invoke(FunctionName="echo", Payload=json.dumps({"boom": 1}))
out["failed"] = {"status": r["StatusCode"], "error": r.get("FunctionError"), "payload": json.loads(r["Payload"].read())}
r = c.invoke(FunctionName="echo", InvocationType="Event", Payload=json.dumps({"async": True}))
out["event"] = {"status": r["StatusCode"], "request_id": r["ResponseMetadata"]["RequestId"]}
out["dry"] = c.invoke(FunctionName="echo", InvocationType="DryRun")["StatusCode"]
r = c.invoke(FunctionName="arn:aws:lambda:us-east-1:000000000000:function:plain", Payload=b'{"n": 4}')
out["plain"] = json.loads(r["Payload"].read())
try:
    c.invoke(FunctionName="nope", Payload=b"{}")
except c.exceptions.ResourceNotFoundException as e:
    out["missing"] = e.response["Error"]["Code"]
try:
    c.invoke(FunctionName="echo", Qualifier="nosuchtag", Payload=b"{}")
except c.exceptions.ResourceNotFoundException as e:
    out["bad_qualifier"] = e.response["Error"]["Code"]
print(json.dumps(out))
"#;

#[test]
fn boto3_calls_gust_functions_through_the_lambda_invoke_api() {
    let g = gust();
    g.deploy(
        "echo",
        &[("gust.toml", &manifest("echo", "lambda-python", "handler = \"app.handler\"")), ("app.py", PY_ECHO)],
    );
    // Any gust function can be invoked: a plain Python one gets the payload as its body.
    g.deploy(
        "plain",
        &[
            ("gust.toml", &manifest("plain", "python", "")),
            ("handler.py", "def handle(x):\n    return {\"square\": x[\"n\"] ** 2}\n"),
        ],
    );
    let script = g.work.join("boto.py");
    std::fs::write(&script, BOTO).unwrap();
    let out = std::process::Command::new("python3").arg(&script).arg(&g.url).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(o["sync"]["status"], 200);
    assert_eq!(o["sync"]["error"], serde_json::Value::Null);
    assert_eq!(o["sync"]["payload"]["event"], serde_json::json!({"k": "v"}));
    assert_eq!(o["sync"]["version"], "1");
    // ClientContext reaches the handler as awslambdaric would give it.
    assert_eq!(o["context"]["custom"], serde_json::json!({"tenant": "t1"}));
    assert_eq!(o["context"]["app"], "shop");
    assert_eq!(o["failed"]["status"], 200);
    assert_eq!(o["failed"]["error"], "Unhandled");
    assert_eq!(o["failed"]["payload"]["errorType"], "ValueError");
    assert_eq!(o["event"]["status"], 202);
    assert_eq!(o["dry"], 204);
    assert_eq!(o["plain"], serde_json::json!({"square": 16}));
    assert_eq!(o["missing"], "ResourceNotFoundException");
    assert_eq!(o["bad_qualifier"], "ResourceNotFoundException");
    // The Event invocation is an async call like any other, under the request id boto3 saw.
    let id = o["event"]["request_id"].as_str().unwrap().to_owned();
    let rec = eventually("the Event invocation to run", || {
        let r = g.call("GET", &format!("/calls/{id}"), b"", &[]);
        (r.status == 200 && r.json()["status"] == "succeeded").then(|| r.json())
    });
    let answer: serde_json::Value = serde_json::from_str(rec["result"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["event"], serde_json::json!({"async": true}));
}

#[test]
fn a_lambda_function_error_in_an_event_invocation_is_retried_then_dead_lettered() {
    let g = gust();
    let m = manifest("fails", "lambda-python", "handler = \"app.handler\"\n[async]\nretries = 1\ndelay = \"100ms\"");
    g.deploy("fails", &[("gust.toml", &m), ("app.py", PY_ECHO)]);
    let r = invoke(&g, "fails", "{\"boom\":1}", &["X-Amz-Invocation-Type: Event", "X-Call-Id: ev-1"]);
    assert_eq!(r.status, 202, "{}", r.text());
    let rec = eventually("the call to be dead-lettered", || {
        let r = g.call("GET", "/calls/ev-1", b"", &[]);
        (r.json()["status"] == "dead").then(|| r.json())
    });
    assert_eq!(rec["attempts"], 2, "{rec}");
}

/// With `scale.concurrency = 3` one instance takes three invocations at once
/// (`AWS_LAMBDA_MAX_CONCURRENCY`): each call waits until all three have arrived, which
/// only happens if they run side by side on the single instance.
#[test]
fn with_concurrency_above_one_a_lambda_instance_takes_calls_side_by_side() {
    let g = gust();
    let dir = g.work.join("barrier");
    std::fs::create_dir_all(&dir).unwrap();
    let py = format!(
        "import os, time\ndef handler(event, context):\n    d = {d:?}\n    open(os.path.join(d, 'py-' + context.aws_request_id), 'w').close()\n    end = time.time() + 20\n    while len([f for f in os.listdir(d) if f.startswith('py-')]) < 3 and time.time() < end:\n        time.sleep(0.01)\n    print('released', context.aws_request_id)\n    return {{'pid': os.getpid(), 'id': context.aws_request_id}}\n",
        d = dir.to_str().unwrap()
    );
    let js = format!(
        "const fs = require('fs'), path = require('path');\nexports.handler = async (event, context) => {{\n  const d = {d:?};\n  fs.writeFileSync(path.join(d, 'js-' + context.awsRequestId), '');\n  const end = Date.now() + 20000;\n  while (fs.readdirSync(d).filter((f) => f.startsWith('js-')).length < 3 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));\n  console.log('released', context.awsRequestId);\n  return {{ pid: process.pid, id: context.awsRequestId }};\n}};\n",
        d = dir.to_str().unwrap()
    );
    let scale = "[scale]\nconcurrency = 3\nmax = 1\ninitial = 0";
    g.deploy(
        "bpy",
        &[
            ("gust.toml", &manifest("bpy", "lambda-python", &format!("handler = \"app.handler\"\n{scale}"))),
            ("app.py", &py),
        ],
    );
    g.deploy(
        "bjs",
        &[
            ("gust.toml", &manifest("bjs", "lambda-node", &format!("handler = \"index.handler\"\n{scale}"))),
            ("index.js", &js),
        ],
    );
    for name in ["bpy", "bjs"] {
        let url = g.url.clone();
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || gust_test_support::curl(&format!("{url}/function/{name}"), "GET", b"", &[]))
            })
            .collect();
        let answers: Vec<Resp> = calls.into_iter().map(|c| c.join().unwrap()).collect();
        let mut pids = std::collections::BTreeSet::new();
        for r in &answers {
            assert_eq!(r.status, 200, "{name}: {}", r.text());
            assert_eq!(r.json()["id"].as_str(), r.header("x-call-id"), "{name}");
            pids.insert(r.json()["pid"].as_u64().unwrap());
        }
        assert_eq!(pids.len(), 1, "{name}: one instance served all three: {pids:?}");
        // Each call's log line is tagged with its own id, though they ran at once (the
        // lines are read from the instance's pipe after the answers, so wait for them).
        eventually("every call's tagged line", || {
            let logs = g.cli_ok(&["logs", name]);
            answers
                .iter()
                .all(|r| {
                    let id = r.header("x-call-id").unwrap();
                    logs.lines().any(|l| l.contains(&format!("[{id}]")) && l.contains(&format!("released {id}")))
                })
                .then_some(())
        });
    }
}
