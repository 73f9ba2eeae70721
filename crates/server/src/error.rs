//! The one error type of `gust-server`.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A result whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The data directory's store could not be opened.
    #[error("cannot open the store in `{}`", dir.display())]
    Store {
        /// The data directory.
        dir: PathBuf,
        /// The underlying failure.
        #[source]
        source: gust_store::Error,
    },
    /// The runtime could not be prepared.
    #[error("cannot prepare instances in `{}`", dir.display())]
    Runtime {
        /// The data directory.
        dir: PathBuf,
        /// The underlying failure.
        #[source]
        source: gust_runtime::Error,
    },
    /// A file the server writes (the ready file) could not be written.
    #[error("cannot write `{}`", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The server's token could not be read or made.
    #[error("cannot read or create the token `{}`: {detail}", path.display())]
    Token {
        /// The token file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The OS would not start one of gust's threads.
    #[error("cannot start a thread")]
    Thread(#[source] std::io::Error),
    /// A start-up task panicked (a bug).
    #[error("start-up task failed: {0}")]
    Task(String),
}
