//! Every failure the gateway answers, mapped to a status and a JSON body in one place.
//!
//! A 4xx says what was wrong with the request. A 5xx caused by the function (it crashed,
//! timed out, could not start) says what happened to it, since that is the user's code; a
//! 5xx caused by gust itself is opaque to the caller and fully logged.

use gust_api::CallId;
use gust_api::wire::ErrorBody;
use http::{HeaderValue, Response, StatusCode, header};

use gust_runtime::Body;
use gust_runtime::body::full;

/// A result whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the gateway can answer besides a function's own response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No function of that name is deployed.
    #[error("function `{function}` not found; deploy it with `gust deploy`")]
    FunctionNotFound {
        /// The name asked for.
        function: String,
    },
    /// The function has no revision with that tag.
    #[error("function `{function}` has no tag `{tag}`; see its tags with `gust revisions {function}`")]
    TagNotFound {
        /// The function.
        function: String,
        /// The tag asked for.
        tag: String,
    },
    /// The function has no revision that started: every one failed its start-up check.
    #[error("function `{function}` has no revision that started: {detail}; fix it and deploy again")]
    NotReady {
        /// The function.
        function: String,
        /// Which revision failed and why.
        detail: String,
    },
    /// A deployed revision failed its start-up check: it takes no traffic.
    #[error("{revision} failed to start, so it takes no traffic ({serving}): {detail}")]
    RevisionFailed {
        /// The revision.
        revision: String,
        /// How its instance ended and its last output.
        detail: String,
        /// What serves instead, in words.
        serving: String,
    },
    /// `POST /events` got no valid CloudEvent.
    #[error("malformed CloudEvent: {reason}")]
    BadEvent {
        /// What is wrong with it.
        reason: String,
    },
    /// No call has that id.
    #[error("call `{id}` not found")]
    CallNotFound {
        /// The id asked for.
        id: String,
    },
    /// No route for the path.
    #[error("no route for `{path}`; functions are called at /function/NAME")]
    RouteNotFound {
        /// The path asked for.
        path: String,
    },
    /// The path exists, not with this method.
    #[error("method not allowed here; use {allow}")]
    MethodNotAllowed {
        /// What is allowed.
        allow: &'static str,
    },
    /// A malformed request to the control API.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
    },
    /// The request needs the server's token and did not carry it. Nothing else is said:
    /// a missing and a wrong token get the same answer.
    #[error("this needs the server's token: send `Authorization: Bearer TOKEN` (the CLI: `gust login`)")]
    Unauthorized,
    /// A secret a serving revision reads cannot be deleted.
    #[error("secret `{name}` is read by {functions}; deploy them without it first")]
    SecretInUse {
        /// The secret.
        name: String,
        /// The functions reading it.
        functions: String,
    },
    /// An upload over the control API's size limit.
    #[error("upload is larger than {limit} bytes (--max-upload)")]
    UploadTooLarge {
        /// The limit.
        limit: u64,
    },
    /// A call failed in the runtime.
    #[error(transparent)]
    Runtime(#[from] gust_runtime::Error),
    /// A deploy, list or removal failed in the store.
    #[error(transparent)]
    Store(#[from] gust_store::Error),
    /// A bug or a local failure in gust (a panicked task, say).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The status code the caller gets.
    pub fn status(&self) -> StatusCode {
        use gust_runtime::Error as R;
        use gust_store::Error as S;
        match self {
            Error::FunctionNotFound { .. } | Error::RouteNotFound { .. } | Error::TagNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::CallNotFound { .. } => StatusCode::NOT_FOUND,
            Error::BadEvent { .. } => StatusCode::BAD_REQUEST,
            Error::RevisionFailed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::UploadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::SecretInUse { .. } => StatusCode::CONFLICT,
            Error::Runtime(e) => match e {
                R::Overloaded { .. } | R::QueueTimeout { .. } => StatusCode::TOO_MANY_REQUESTS,
                R::StartFailed { .. } | R::Crashed { .. } | R::BadAnswer { .. } => StatusCode::BAD_GATEWAY,
                R::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                R::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                R::BadRequest { .. } => StatusCode::BAD_REQUEST,
                R::RuntimeUnavailable { .. } | R::ShuttingDown | R::AtCapacity { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                R::BuildFailed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Error::Store(e) => match e {
                S::BadArchive { too_large: true, .. } => StatusCode::PAYLOAD_TOO_LARGE,
                S::BadArchive { .. } => StatusCode::BAD_REQUEST,
                S::InvalidManifest(_) => StatusCode::UNPROCESSABLE_ENTITY,
                S::NotFound { .. } | S::RouteNotFound { .. } | S::TopicNotFound { .. } => StatusCode::NOT_FOUND,
                S::RouteConflict { .. } | S::CallIdTaken { .. } | S::TopicExists { .. } => StatusCode::CONFLICT,
                S::BadTraffic { .. } => StatusCode::BAD_REQUEST,
                S::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
                S::SecretExists { .. } => StatusCode::CONFLICT,
                S::SecretNotFound { .. } => StatusCode::NOT_FOUND,
                S::SecretTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short stable code for the body's `error` field and for metrics.
    pub fn code(&self) -> &'static str {
        use gust_runtime::Error as R;
        use gust_store::Error as S;
        match self {
            Error::FunctionNotFound { .. } => "function_not_found",
            Error::TagNotFound { .. } => "tag_not_found",
            Error::RouteNotFound { .. } => "not_found",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::NotReady { .. } => "not_ready",
            Error::CallNotFound { .. } => "call_not_found",
            Error::BadEvent { .. } => "bad_event",
            Error::RevisionFailed { .. } => "revision_failed",
            Error::BadRequest { .. } => "bad_request",
            Error::UploadTooLarge { .. } => "upload_too_large",
            Error::Unauthorized => "unauthorized",
            Error::SecretInUse { .. } => "secret_in_use",
            Error::Runtime(e) => match e {
                R::Overloaded { .. } => "overloaded",
                R::QueueTimeout { .. } => "queue_timeout",
                R::StartFailed { .. } => "start_failed",
                R::Crashed { .. } => "crashed",
                R::BadAnswer { .. } => "bad_answer",
                R::Timeout { .. } => "timeout",
                R::BodyTooLarge { .. } => "body_too_large",
                R::BadRequest { .. } => "bad_request",
                R::RuntimeUnavailable { .. } => "runtime_unavailable",
                R::ShuttingDown => "shutting_down",
                R::AtCapacity { .. } => "at_capacity",
                R::BuildFailed { .. } => "build_failed",
                _ => "internal",
            },
            Error::Store(e) => match e {
                S::BadArchive { .. } => "bad_archive",
                S::InvalidManifest(_) => "invalid_manifest",
                S::NotFound { .. } => "function_not_found",
                S::RouteNotFound { .. } => "route_not_found",
                S::RouteConflict { .. } => "route_conflict",
                S::CallIdTaken { .. } => "call_id_taken",
                S::TopicNotFound { .. } => "topic_not_found",
                S::TopicExists { .. } => "topic_exists",
                S::QueueFull { .. } => "queue_full",
                S::SecretExists { .. } => "secret_exists",
                S::SecretNotFound { .. } => "secret_not_found",
                S::SecretTooLarge { .. } => "secret_too_large",
                S::BadTraffic { .. } => "bad_traffic",
                _ => "internal",
            },
            Error::Internal(_) => "internal",
        }
    }

    /// Whether the message may be shown to the caller: everything except gust's own
    /// internal failures, whose details go to the server log only.
    fn is_public(&self) -> bool {
        self.code() != "internal"
    }

    /// The JSON body: code, message, and the manifest problems or build log where they
    /// apply. Internal errors are logged here and answered opaquely.
    pub fn body(&self, call: Option<&CallId>) -> ErrorBody {
        let problems = match self {
            Error::Store(gust_store::Error::InvalidManifest(gust_api::Error::InvalidManifest { problems })) => {
                problems.clone()
            }
            _ => Vec::new(),
        };
        let log_tail = match self {
            Error::Runtime(gust_runtime::Error::BuildFailed { log_tail, .. }) => log_tail.clone(),
            _ => Vec::new(),
        };
        let message = if self.is_public() {
            self.to_string()
        } else {
            tracing::error!(error = %format!("{:#}", DisplayChain(self)), call_id = ?call.map(CallId::as_str), "internal error");
            "gust hit an internal error; the server log has the details".to_owned()
        };
        ErrorBody { error: self.code().to_owned(), message, call_id: call.cloned(), problems, log_tail }
    }

    /// The response: status, JSON [`ErrorBody`], and `Retry-After` / `Allow` where they apply.
    pub fn into_response(self, call: Option<&CallId>) -> Response<Body> {
        let status = self.status();
        let body = self.body(call);
        let text = serde_json::to_string(&body).unwrap_or_else(|_| "{\"error\":\"internal\"}".to_owned());
        let mut resp = Response::new(full(text));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, Error::Unauthorized) {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"gust\""));
        }
        if let Error::MethodNotAllowed { allow } = self {
            h.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

/// Prints an error with its whole `source()` chain.
struct DisplayChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut src = self.0.source();
        while let Some(s) = src {
            write!(f, ": {s}")?;
            src = s.source();
        }
        Ok(())
    }
}
