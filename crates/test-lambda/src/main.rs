//! A Lambda function written against the official `lambda_runtime` crate, exactly as it
//! would be deployed to AWS as a `provided.al2023` bootstrap. gust's end-to-end tests run
//! it as a `lambda` function to prove the Runtime API works with this client.
//!
//! - `{"name": "x"}` answers `{"greeting": "Hello, x!", "request_id": …, "deadline_ms": …}`;
//! - `{"name": "x", "fail": true}` is a handler error;
//! - an event without `name` fails to deserialize, which the crate reports itself;
//! - with `FAIL_INIT` set it exits before asking for work, as a broken init would.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Request {
    name: String,
    #[serde(default)]
    fail: bool,
}

async fn handle(event: LambdaEvent<Request>) -> Result<Value, Error> {
    let (req, ctx) = event.into_parts();
    if req.fail {
        return Err(format!("failing as asked for {}", req.name).into());
    }
    println!("greeting {}", req.name);
    Ok(json!({
        "greeting": format!("Hello, {}!", req.name),
        "request_id": ctx.request_id,
        "deadline_ms": ctx.deadline,
        "function": ctx.env_config.function_name,
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    if std::env::var_os("FAIL_INIT").is_some() {
        eprintln!("init failed: FAIL_INIT is set");
        #[allow(clippy::exit, reason = "a failed init exits, as on AWS")]
        std::process::exit(2);
    }
    lambda_runtime::run(service_fn(handle)).await
}
