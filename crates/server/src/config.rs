//! How this process runs. What it runs (functions) lives in the store, not here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use gust_gateway::GatewayConfig;
pub use gust_gateway::call_log::BACKLOG as CALL_RECORD_BACKLOG;
pub use gust_gateway::outbound::OutboundPolicy;
pub use gust_runtime::interpreters::InterpreterSettings;
pub use gust_runtime::isolation::Level as IsolationLevel;
pub use gust_runtime::isolation::strongest as strongest_isolation;
pub use gust_runtime::{HostLimits, WarmPools};
pub use gust_store::Retention;

/// Everything `gust up` is told by flags and environment, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the gateway listens. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// The data directory (SQLite, code, logs, instance scratch).
    pub data_dir: PathBuf,
    /// How long shutdown waits for calls in flight. Default 30 s.
    pub drain_timeout: Duration,
    /// Written with the bound address once the server is ready (for scripts and tests
    /// that listen on port 0).
    pub ready_file: Option<PathBuf>,
    /// Where to find interpreters.
    pub interpreters: InterpreterSettings,
    /// Gateway limits.
    pub gateway: GatewayConfig,
    /// Warm processes kept per runtime.
    pub pools: WarmPools,
    /// The server's token and where it is required.
    pub auth: AuthSettings,
    /// Limits across every function: instances, log lines, log volume per call.
    pub limits: HostLimits,
    /// How instances are confined (`--isolation`).
    pub isolation: IsolationLevel,
}

/// Where the token lives and whether the control API requires it.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Require the token for the control API even on loopback (`--auth`). Beyond
    /// loopback it is always required.
    pub required: bool,
    /// Read the token from here instead of `<data>/token` (which is created, mode 0600,
    /// with 256 random bits, when missing).
    pub token_file: Option<PathBuf>,
}
