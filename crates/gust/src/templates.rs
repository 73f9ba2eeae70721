//! The files `gust new` writes, one working hello function per runtime.

use gust_api::Runtime;

/// `(path, contents, executable)` for each file of a new function.
pub(crate) fn files(name: &str, runtime: Runtime) -> Vec<(&'static str, String, bool)> {
    let manifest = |extra: &str| {
        format!(
            "name = \"{name}\"\nruntime = \"{runtime}\"\n{extra}\n[env]\nTARGET = \"world\"\n\n[limits]\ntimeout = \"60s\"\nmax_body = \"6Mi\"\n\n[scale]\nmin = 0\nmax = 10\nstable_window = \"60s\"       # Knative KPA: the window the instance count averages over\nscale_to_zero_grace = \"30s\" # then the last instance stops\n"
        )
    };
    match runtime {
        Runtime::Python => vec![
            ("gust.toml", manifest("handler = \"handler.handle\"\n"), false),
            ("handler.py", PYTHON.to_owned(), false),
        ],
        Runtime::Node => {
            vec![("gust.toml", manifest("handler = \"handler.js\"\n"), false), ("handler.js", NODE.to_owned(), false)]
        }
        Runtime::Shell => {
            vec![("gust.toml", manifest("handler = \"handler.sh\"\n"), false), ("handler.sh", SHELL.to_owned(), true)]
        }
        Runtime::Java => vec![
            (
                "gust.toml",
                manifest(
                    "handler = \"functions.Hello\"\n# Compiled once per change at deploy; the jar is the revision's code.\nbuild = \"javac -d classes src/functions/*.java && jar cf hello.jar -C classes .\"\n",
                ),
                false,
            ),
            ("src/functions/Hello.java", JAVA.to_owned(), false),
        ],
        Runtime::Exec => vec![
            ("gust.toml", manifest("handler = \"handler\"\nprotocol = \"stdio\"\n"), false),
            ("handler", EXEC.to_owned(), true),
        ],
        Runtime::LambdaPython => vec![
            ("gust.toml", manifest("handler = \"lambda_function.lambda_handler\"\n"), false),
            ("lambda_function.py", LAMBDA_PYTHON.to_owned(), false),
        ],
        Runtime::LambdaNode => vec![
            ("gust.toml", manifest("handler = \"index.handler\"\n"), false),
            ("index.mjs", LAMBDA_NODE.to_owned(), false),
        ],
        Runtime::Lambda => vec![
            ("gust.toml", manifest("handler = \"function.handler\"\n"), false),
            ("bootstrap", LAMBDA_BOOTSTRAP.to_owned(), true),
            ("function.sh", LAMBDA_FUNCTION_SH.to_owned(), false),
        ],
    }
}

const PYTHON: &str = r#"import os


def handle(event, context):
    """Called for every request.

    event:   .method, .path, .query (dict), .headers (lowercase keys), .body (JSON
             arrives parsed, text as str), .raw_body (bytes)
    context: .call_id, .function, .revision
    Return a str, bytes, a dict or list (sent as JSON), a generator (streamed), or
    {"statusCode": 201, "headers": {...}, "body": ...}.
    """
    target = os.environ.get("TARGET", "world")
    name = event.query.get("name", target)
    print(f"greeting {name}")  # lands in `gust logs`, tagged with the call id
    return f"Hello, {name}!\n"
"#;

const NODE: &str = r#"// Called for every request. `event` has method, path, query, headers and body (JSON
// arrives parsed); `context` has callId, function and revision. Return a string, a
// Buffer, an object (sent as JSON), an async iterable (streamed), or
// { statusCode, headers, body }. A one-argument function gets just the body:
//   module.exports = (x) => x ** 2;
module.exports = async (event, context) => {
  const name = event.query.name || process.env.TARGET || 'world';
  console.log(`greeting ${name}`); // lands in `gust logs`, tagged with the call id
  return `Hello, ${name}!\n`;
};
"#;

const SHELL: &str = r#"#!/bin/sh
# One process per request. The body arrives on stdin (and as $1); whatever is written
# to stdout is the response; a non-zero exit is a 500 and stderr goes to `gust logs`.
# Request metadata: $Http_Method, $Http_Path, $Http_Query and $Http_<Header>.
body=$(cat)
echo "greeting ${TARGET:-world}" >&2
echo "Hello, ${TARGET:-world}! You sent: ${body}"
"#;

const JAVA: &str = r#"package functions;

import java.util.function.Function;

/** Called for every request with the body as text; the returned string is the response. */
public class Hello implements Function<String, String> {
    @Override
    public String apply(String body) {
        String target = System.getenv().getOrDefault("TARGET", "world");
        System.out.println("greeting " + target); // lands in `gust logs`, tagged with the call id
        return "Hello, " + target + "! You sent: " + body + "\n";
    }
}
"#;

const EXEC: &str = r#"#!/bin/sh
# Any executable works: this one speaks the stdio protocol (body on stdin, response on
# stdout). Replace it with your own binary and keep `handler` in gust.toml pointing at it,
# or set protocol = "http" and serve HTTP on $PORT.
echo "Hello from $Http_Method $Http_Path, ${TARGET:-world}!"
"#;

const LAMBDA_PYTHON: &str = r#"import json
import os


def lambda_handler(event, context):
    """An AWS Lambda handler, unchanged: an HTTP call arrives as an API Gateway (HTTP API,
    payload 2.0) event; the Lambda Invoke API passes its payload as the event."""
    params = event.get("queryStringParameters") or {}
    name = params.get("name", os.environ.get("TARGET", "world"))
    print(f"greeting {name} ({context.aws_request_id})")  # lands in `gust logs`
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"message": f"Hello, {name}!"}),
    }
"#;

const LAMBDA_NODE: &str = r#"// An AWS Lambda handler, unchanged: an HTTP call arrives as an API Gateway (HTTP API,
// payload 2.0) event; the Lambda Invoke API passes its payload as the event.
export const handler = async (event, context) => {
  const name = event.queryStringParameters?.name ?? process.env.TARGET ?? 'world';
  console.log(`greeting ${name} (${context.awsRequestId})`); // lands in `gust logs`
  return {
    statusCode: 200,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ message: `Hello, ${name}!` }),
  };
};
"#;

const LAMBDA_BOOTSTRAP: &str = r#"#!/bin/sh
# A Lambda custom runtime (AWS's own tutorial, in POSIX sh): it pulls each event from the
# Runtime API at $AWS_LAMBDA_RUNTIME_API and posts the answer back. Any runtime client
# works here instead, e.g. `exec python3 -m awslambdaric "$_HANDLER"` or a binary built
# with the `lambda_runtime` crate.
set -eu
. "$LAMBDA_TASK_ROOT/$(echo "$_HANDLER" | cut -d. -f1).sh"
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  headers="$(mktemp)"
  event=$(curl -sS -D "$headers" "$api/invocation/next")
  id=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$headers" | tr -d '[:space:]' | cut -d: -f2)
  rm -f "$headers"
  response=$($(echo "$_HANDLER" | cut -d. -f2) "$event")
  curl -sS -o /dev/null "$api/invocation/$id/response" -d "$response"
done
"#;

const LAMBDA_FUNCTION_SH: &str = r#"# The handler the bootstrap sources: `function.handler` in gust.toml names this file
# and this shell function. It gets the event as $1 and prints the result.
handler() {
  echo "got an event of ${#1} bytes" >&2  # lands in `gust logs`
  printf '{"statusCode":200,"body":"Hello, %s!"}' "${TARGET:-world}"
}
"#;
