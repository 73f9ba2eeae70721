//! The one error type of `gust-store`.

use std::path::PathBuf;

/// A result whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation on the data directory failed.
    #[error("{op} `{}`", path.display())]
    Io {
        /// What was being done, e.g. "create directory".
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The SQLite database refused an operation.
    #[error("database: {op}")]
    Database {
        /// What was being done.
        op: &'static str,
        /// The underlying failure.
        #[source]
        source: rusqlite::Error,
    },
    /// An uploaded archive was malformed, hostile or too large. The message says which
    /// entry and why; the caller should answer 400 (or 413 for size).
    #[error("bad archive: {reason}")]
    BadArchive {
        /// What is wrong with it.
        reason: String,
        /// Whether a size or count limit was crossed (413 rather than 400).
        too_large: bool,
    },
    /// The archive's `gust.toml` is missing or invalid, or names a handler that is not there.
    #[error(transparent)]
    InvalidManifest(#[from] gust_api::Error),
    /// No function of that name is deployed.
    #[error("function `{function}` not found")]
    NotFound {
        /// The name asked for.
        function: String,
    },
    /// A route would take requests another route already takes.
    #[error("route `{route}` conflicts with `{existing}` of function `{owner}`")]
    RouteConflict {
        /// The route asked for.
        route: String,
        /// The route it collides with.
        existing: String,
        /// The function that owns `existing`.
        owner: String,
    },
    /// No route with that method and path exists.
    #[error("no route `{route}`")]
    RouteNotFound {
        /// The route asked for.
        route: String,
    },
    /// No topic of that name exists.
    #[error("topic `{topic}` not found; create it with `gust topic create {topic}`")]
    TopicNotFound {
        /// The name asked for.
        topic: String,
    },
    /// A topic of that name exists already.
    #[error("topic `{topic}` exists already")]
    TopicExists {
        /// The name.
        topic: String,
    },
    /// `gust secret create` of a name that exists.
    #[error("secret `{name}` exists already; `gust secret update {name}` replaces its value")]
    SecretExists {
        /// The name.
        name: String,
    },
    /// No secret has this name.
    #[error("no secret named `{name}`")]
    SecretNotFound {
        /// The name.
        name: String,
    },
    /// A secret value over the size limit.
    #[error("secret `{name}` is larger than {max} bytes")]
    SecretTooLarge {
        /// The name.
        name: String,
        /// The limit.
        max: usize,
    },
    /// A caller's `X-Call-Id` already names a call of another function.
    #[error("call id `{id}` is already taken by another function's call; send a new one or none")]
    CallIdTaken {
        /// The id.
        id: String,
    },
    /// A function already has `[async] max_queued` calls waiting or running.
    #[error(
        "function `{function}` already has {max} async calls queued or running ([async] max_queued); try again later"
    )]
    QueueFull {
        /// The function.
        function: String,
        /// Its `max_queued`.
        max: u32,
    },
    /// A traffic change (or a deploy's traffic options) was refused; nothing changed.
    #[error("{reason}")]
    BadTraffic {
        /// The function.
        function: String,
        /// Why, in words for the user.
        reason: String,
    },
    /// A stored row could not be read back (a bug or a hand-edited database).
    #[error("corrupt record for `{function}`: {reason}")]
    Corrupt {
        /// The function whose record is bad.
        function: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    pub(crate) fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| Error::Database { op, source }
    }

    pub(crate) fn bad(reason: impl Into<String>) -> Self {
        Error::BadArchive { reason: reason.into(), too_large: false }
    }
}
