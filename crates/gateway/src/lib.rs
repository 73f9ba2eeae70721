//! The HTTP front door: the data plane (`/function/{name}/…`) and the control API
//! (`/api/v1/…`) on one listener.
//!
//! The entry point is [`serve`], which accepts connections until shutdown and then
//! drains them with a deadline. [`Gateway`] holds what handlers share: the store (for
//! deploys), the runtime [`gust_runtime::Supervisor`] (for calls) and the in-memory
//! [`Registry`] of serving revisions, so no database query sits on the call path.
//!
//! # Layout
//! - [`router`]: pure request → [`router::Route`] matching, no hyper.
//! - [`invoke`]: a call to a function: limits, headers, call ids, timings.
//! - [`control`]: deploy, list, describe, remove, logs, info.
//! - [`calls`]: async calls accepted, call records, dead letters; [`dispatch`] delivers them.
//! - [`topics`]: partitioned logs, publishing, and the consumers of `input` topics.
//! - [`lambda_api`]: the AWS Lambda Invoke API, for SDK code calling gust functions.
//! - [`events`]: the CloudEvents broker (`POST /events`) and its triggers; [`cron`]: schedules.
//! - [`busy_poll`]: `--busy-poll`, trading CPU for wake-up latency after requests.
//! - [`auth`]: the server's token, for the control API and private functions.
//! - [`outbound`]: which addresses callbacks may reach (no SSRF).
//! - [`registry`]: function name → serving revision.
//! - [`error`]: every error → status code and JSON body, in one place.

pub mod auth;
mod body;
pub mod busy_poll;
pub mod call_log;
pub mod calls;
pub mod control;
pub mod cron;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod invoke;
pub mod lambda_api;
pub mod outbound;
pub mod registry;
pub mod router;
pub mod routes;
pub mod secrets;
mod server;
pub mod topics;

pub use auth::Auth;
pub use error::{Error, Result};
pub use registry::Registry;
pub use server::{Gateway, GatewayConfig, serve};

/// A store time (ms since the epoch) as RFC 3339 with milliseconds, as the API shows it.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    let since = std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + since).to_string()
}

/// Milliseconds since the epoch, as the store records times.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
