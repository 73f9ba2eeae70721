//! JSON bodies of the control API (`/api/v1/…`) and of error responses. The CLI and the
//! server both use these types, so the two cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::{CallId, FunctionSpec, Problem};

mod calls;
pub use calls::{AsyncAccepted, CallAnswer, CallRecord, DlqAnswer, DlqRequest, base64};

/// Every error response's body: a stable code, a sentence a person can act on, and the
/// call id when there is one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A short stable code, e.g. `not_found`, `timeout`, `overloaded`.
    pub error: String,
    /// What happened and what to do about it.
    pub message: String,
    /// The call this error belongs to, for `gust logs` and support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<CallId>,
    /// For an invalid manifest: every problem, by field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
    /// For a failed build: the last lines of its output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
}

/// The answer to `POST /api/v1/functions` (a deploy).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployResponse {
    /// The function deployed.
    pub function: String,
    /// The revision deployed (or, when nothing changed, the latest), e.g. `hello-00002`.
    pub revision: String,
    /// Whether this deploy made a new revision; `false` when code and config were identical.
    pub changed: bool,
    /// Where to call it.
    pub url: String,
    /// The share of calls the revision takes now (0 after `--no-traffic`).
    #[serde(default)]
    pub traffic_percent: u32,
    /// Its tags, each reachable at `URL@TAG`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The content digest of the code, `sha256:…`.
    pub code_digest: String,
    /// What the build did, when the function has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildInfo>,
}

/// The build part of a deploy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildInfo {
    /// The steps, e.g. `pip install -r requirements.txt`, `make`.
    pub steps: Vec<String>,
    /// Whether an earlier build of the same sources was reused.
    pub cached: bool,
    /// How long the build ran (0 when cached).
    pub seconds: f64,
}

/// One line of a streamed deploy (`POST /api/v1/functions` with
/// `Accept: application/x-ndjson`): build progress, then exactly one `done` or `failed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployEvent {
    /// A build step starts.
    Step(String),
    /// A line of build output.
    Line(String),
    /// The deploy succeeded.
    Done(DeployResponse),
    /// The deploy failed; nothing changed.
    Failed {
        /// The HTTP status the error would have had unstreamed.
        status: u16,
        /// The error.
        error: ErrorBody,
    },
}

/// One row of `GET /api/v1/functions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionSummary {
    /// The function's name.
    pub name: String,
    /// Its runtime, as written in manifests.
    pub runtime: String,
    /// Its latest revision.
    pub revision: String,
    /// Instances running now, over every revision.
    pub instances: usize,
    /// Where to call it.
    pub url: String,
}

/// `GET /api/v1/functions/{name}`: everything `gust describe` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionDetail {
    /// The function's name.
    pub name: String,
    /// Where to call it.
    pub url: String,
    /// The spec of the revision taking traffic, with every default filled in.
    pub spec: FunctionSpec,
    /// That spec as manifest text.
    pub manifest: String,
    /// Every revision, newest first.
    pub revisions: Vec<RevisionInfo>,
    /// Instances running now.
    pub instances: Vec<InstanceInfo>,
    /// Calls waiting for a free instance now.
    #[serde(default)]
    pub queued: u32,
    /// What the autoscaler sees and wants, per revision with a pool.
    #[serde(default)]
    pub scaling: Vec<RevisionScale>,
    /// The most recent failed calls, newest first.
    pub recent_errors: Vec<CallError>,
    /// How its instances are confined at the server's isolation level, in words.
    #[serde(default)]
    pub isolation: String,
}

/// The autoscaler's view of one revision.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RevisionScale {
    /// The revision.
    pub revision: String,
    /// Instances the autoscaler wants.
    pub desired: u32,
    /// Instances serving.
    pub actual: u32,
    /// Instances starting.
    pub starting: u32,
    /// Whether the autoscaler is in panic mode (a burst: no scale-down).
    pub panic: bool,
    /// Average concurrency (calls in flight or queued) over the stable window.
    pub stable_concurrency: f64,
    /// Average concurrency over the panic window.
    pub panic_concurrency: f64,
    /// Calls waiting for a free instance now.
    pub queued: u32,
    /// Instances started since the revision's pool was created.
    pub cold_starts: u64,
    /// How many of those came from a warm runtime pool or zygote.
    pub pooled_starts: u64,
    /// Calls this revision has taken (those refused at a full queue included).
    #[serde(default)]
    pub calls: u64,
    /// How many of those found no free instance and queued, for a start or a slot.
    #[serde(default)]
    pub waited: u64,
    /// Why this revision's instances start fresh rather than from a warm pool, if they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpooled_reason: Option<String>,
    /// Whether a newer revision has taken over (this one drains).
    pub retired: bool,
}

/// Where a revision stands. A deploy records it `pending`, starts one instance and checks
/// that its handler loads; only a `ready` revision takes the deploy's traffic (Knative's
/// `Ready` condition). A `failed` one keeps no traffic unless the user forces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevisionStatus {
    /// Its start-up check is running.
    Pending,
    /// It started and loaded its handler (or has nothing to start).
    #[default]
    Ready,
    /// It could not start; `failure` says why.
    Failed,
}

impl RevisionStatus {
    /// How it is stored and shown: `pending`, `ready`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionStatus::Pending => "pending",
            RevisionStatus::Ready => "ready",
            RevisionStatus::Failed => "failed",
        }
    }

    /// The status stored as `text`; anything unknown reads as failed, never as ready.
    pub fn from_stored(text: &str) -> Self {
        match text {
            "ready" => RevisionStatus::Ready,
            "pending" => RevisionStatus::Pending,
            _ => RevisionStatus::Failed,
        }
    }
}

impl std::fmt::Display for RevisionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One revision of a function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevisionInfo {
    /// `NAME-00001`, …
    pub id: String,
    /// Digest of the revision's code.
    pub code_digest: String,
    /// When it was deployed, RFC 3339.
    pub created_at: String,
    /// Share of traffic it takes, 0–100.
    pub traffic_percent: u8,
    /// Tags that name it (`/function/NAME@TAG`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether it is the newest ready revision (`@latest`).
    #[serde(default)]
    pub latest: bool,
    /// Instances of it running now.
    #[serde(default)]
    pub instances: usize,
    /// Whether it started at deploy.
    #[serde(default)]
    pub status: RevisionStatus,
    /// Why it failed: how its instance ended and its last output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// `PUT /api/v1/functions/{name}/traffic`: tags are set and removed first, then `split`
/// (when given) replaces the whole split. Targets are revision ids (`NAME-00003`, or
/// `3`), tags, or `@latest`, which follows new deploys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficUpdate {
    /// The new split; its shares must sum to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Vec<TargetPercent>>,
    /// Tags to set or move: tag → target.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tag: std::collections::BTreeMap<String, String>,
    /// Tags to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub untag: Vec<String>,
    /// Allow shares and tags on revisions that failed to start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// One share of a split as the user names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetPercent {
    /// A revision id, a tag or `@latest`.
    pub target: String,
    /// Percent of calls.
    pub percent: u32,
}

/// `POST /api/v1/functions/{name}/rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// The revision (or tag) to send all traffic to; the one before the revision taking
    /// most traffic when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A function's traffic after a change: each revision with a share or a tag.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficInfo {
    /// The function.
    pub function: String,
    /// Revisions with a share or a tag, newest first.
    pub targets: Vec<TrafficTarget>,
}

/// One revision's place in a function's traffic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficTarget {
    /// `NAME-00003`.
    pub revision: String,
    /// Its share of calls without a tag.
    pub percent: u32,
    /// Its tags.
    pub tags: Vec<String>,
    /// Whether it is the newest ready revision.
    pub latest: bool,
}

/// One running instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The instance's id, as it appears in logs.
    pub id: String,
    /// The revision it runs.
    pub revision: String,
    /// Its process id, for long-lived (`http`) instances.
    pub pid: Option<u32>,
    /// Calls in flight on it now.
    pub in_flight: u32,
    /// Calls it has served.
    pub served: u64,
    /// Seconds since it started.
    pub age_seconds: f64,
    /// Seconds since it last finished a call (0 while busy).
    pub idle_seconds: f64,
}

/// A failed call as `gust describe` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallError {
    /// When it ended, RFC 3339.
    pub at: String,
    /// The call's id.
    pub call_id: String,
    /// The status the caller got.
    pub status: u16,
    /// Why.
    pub message: String,
}

/// One captured line of an instance's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    /// When gust read it, RFC 3339 with milliseconds.
    pub ts: String,
    /// The function that printed it.
    pub function: String,
    /// The instance that printed it (or `gust` for lines gust writes itself).
    pub instance: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The call in flight when it was printed, where that is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// The text, without its newline.
    pub line: String,
}

/// `GET /api/v1/info`: what this server is and what the host lets it do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Info {
    /// gust's version.
    pub version: String,
    /// The address it serves on.
    pub listen: String,
    /// Its data directory.
    pub data_dir: String,
    /// The isolation in use for instances, and what the host would allow.
    pub isolation: Isolation,
    /// Interpreters found at start-up, by runtime.
    pub interpreters: Vec<Interpreter>,
    /// Where the token is required, and which file holds it (never the token itself).
    #[serde(default)]
    pub auth: AuthInfo,
    /// Records of answered sync calls dropped since the server started because their
    /// writer fell behind (`--call-record-backlog`); the calls themselves were answered.
    #[serde(default)]
    pub calls_unrecorded: u64,
    /// Busy polling (`--busy-poll`): its window and how long the server has spun.
    #[serde(default)]
    pub busy_poll: BusyPollInfo,
    /// The warm pools as they run.
    #[serde(default)]
    pub pools: PoolsInfo,
}

/// Warm processes kept per runtime (`--pool`), as they run: 0 when a pool is off, asked
/// to be or for want of its interpreter.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct PoolsInfo {
    /// Python children the zygote keeps forked and waiting.
    pub python: u32,
    /// Node processes kept started and waiting.
    pub node: u32,
}

/// Busy polling after requests, and its cost.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BusyPollInfo {
    /// How long after each request a thread polls instead of sleeping, in µs; 0: off.
    pub window_us: u64,
    /// Time spent in spins since the server started, in µs: wall time from each spin's
    /// first turn to its last (the thread also serves what arrives meanwhile).
    pub spun_us: u64,
}

/// What the server's token guards.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuthInfo {
    /// Whether `/api/v1/…` and `/calls/…` require it.
    pub control_api: bool,
    /// The file holding it, for `gust login --token-file`.
    pub token_file: String,
}

/// Isolation of instances.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Isolation {
    /// The level in use: `none` or `basic`.
    pub level: String,
    /// The mechanisms applied to every instance.
    pub applied: Vec<String>,
    /// Mechanisms the host offers, whether or not they are in use yet.
    pub host_allows: Vec<String>,
}

/// An interpreter found at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interpreter {
    /// The runtime that uses it.
    pub runtime: String,
    /// The real executable, after shims are resolved; `None` when not found.
    pub path: Option<String>,
    /// Its version, or why it could not be used.
    pub detail: String,
}

/// `POST /api/v1/routes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteRequest {
    /// `GET`, `PATCH`, … or `ANY` (the default).
    #[serde(default)]
    pub method: Option<String>,
    /// The path pattern, e.g. `/users/{id}` or `/api/{*rest}`.
    pub path: String,
    /// The function it leads to.
    pub function: String,
}

/// One row of `GET /api/v1/routes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteRow {
    /// The method, or `ANY`.
    pub method: String,
    /// The path pattern.
    pub path: String,
    /// The function it leads to.
    pub function: String,
    /// `manifest` (from `[[routes]]`) or `api` (`gust route create`).
    pub origin: String,
    /// The pattern as a URL on this server.
    pub url: String,
}

/// A secret as the API lists it: never its value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretRecord {
    /// The name.
    pub name: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When its value last changed (RFC 3339).
    pub updated_at: String,
    /// Functions whose serving revisions read it.
    #[serde(default)]
    pub used_by: Vec<String>,
}
