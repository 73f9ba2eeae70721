//! The one error type of `gust-runtime`.

use std::time::Duration;

/// A result whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call could not be served. Each variant is one answer the caller gets; the
/// gateway maps them to status codes in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Every instance is busy, the function is at `scale.max` and the wait queue is full.
    #[error(
        "function `{function}` is at capacity: {max} instance(s) busy and {queued} call(s) already waiting (scale.queue_depth)"
    )]
    Overloaded {
        /// The function.
        function: String,
        /// Its `scale.max`.
        max: u32,
        /// Calls waiting when this one arrived.
        queued: usize,
    },
    /// The call waited `scale.queue_timeout` without getting an instance.
    #[error("function `{function}` had no free instance within {} (scale.queue_timeout)", humantime::format_duration(*.waited))]
    QueueTimeout {
        /// The function.
        function: String,
        /// How long it waited.
        waited: Duration,
    },
    /// An instance could not be started, or died before it was ready.
    #[error("function `{function}` could not start: {detail}")]
    StartFailed {
        /// The function.
        function: String,
        /// What happened, including the instance's last output where there was some.
        detail: String,
    },
    /// Every one of the server's `max_instances` places is taken.
    #[error("gust already runs its maximum of {max} instances (--max-instances); try again when some scale down")]
    AtCapacity {
        /// `--max-instances`.
        max: u32,
    },
    /// The instance died or broke the connection while serving the call.
    #[error("function `{function}` crashed while serving the call: {detail}")]
    Crashed {
        /// The function.
        function: String,
        /// What happened, including the instance's last output where there was some.
        detail: String,
    },
    /// The call ran past `limits.timeout`; the instance was stopped and will be replaced.
    #[error("function `{function}` did not answer within {} (limits.timeout)", humantime::format_duration(*.timeout))]
    Timeout {
        /// The function.
        function: String,
        /// Its `limits.timeout`.
        timeout: Duration,
    },
    /// The function's answer could not be made into an HTTP response (a Lambda result
    /// whose `statusCode` or `body` is malformed).
    #[error("function `{function}` gave an answer that is not a valid response: {detail}")]
    BadAnswer {
        /// The function.
        function: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The request body is larger than `limits.max_body`.
    #[error("request body is larger than the function's limit of {limit} bytes (limits.max_body)")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The client's request body could not be read.
    #[error("could not read the request body: {detail}")]
    BadRequest {
        /// What went wrong.
        detail: String,
    },
    /// The interpreter the runtime needs was not found at start-up.
    #[error("runtime `{runtime}` is not available on this host: {detail}")]
    RuntimeUnavailable {
        /// The runtime.
        runtime: String,
        /// Why, and which setting to change.
        detail: String,
    },
    /// A deploy's build (dependencies or the manifest's `build` command) failed or timed out.
    #[error("build of `{function}` failed: {message}")]
    BuildFailed {
        /// The function being deployed.
        function: String,
        /// The step that failed, e.g. `pip install -r requirements.txt`.
        step: String,
        /// What happened, naming the package that could not be fetched when known.
        message: String,
        /// The last lines of the step's output.
        log_tail: Vec<String>,
    },
    /// The isolation level asked for cannot be set up on this host.
    #[error("isolation: {0}")]
    Isolation(String),
    /// The server is shutting down and takes no new calls.
    #[error("gust is shutting down")]
    ShuttingDown,
    /// Setting up local files for an instance failed.
    #[error("{op} `{}`", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}
