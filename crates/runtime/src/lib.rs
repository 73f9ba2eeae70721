//! Instances: starting, feeding, watching and stopping the processes that run functions.
//!
//! The entry type is [`Supervisor`]. The gateway asks it to [`Supervisor::call`] a
//! revision with a request; the supervisor finds (or starts) an instance with a free slot
//! through that revision's [`pool`], speaks the revision's protocol to it and streams the
//! answer back. It also stops idle instances, replaces crashed or stuck ones, and captures
//! every line they print into per-function logs.
//!
//! What it deliberately does not do: routing (which revision a request goes to is the
//! gateway's), persistence (the store's) and windowed autoscaling decisions (the scaler's).
//!
//! # Layout
//! - [`supervisor`]: [`Supervisor`], the front door; owns pools, logs and the reaper.
//! - [`pool`]: per-revision instances, slots and the bounded wait queue (the activator).
//! - [`instance`]: one running copy of a revision and how it is started and stopped.
//! - [`proxy`] / [`stdio`]: the `http` and `stdio` protocols.
//! - [`zygote`] / [`spares`]: the warm pools: Python children forked ahead of need from
//!   a loaded interpreter, and Node processes started ahead of need.
//! - [`spawn`]: the process launch itself (environment, process group, rlimits, and at
//!   level `isolated` the namespaces); [`sandbox`]: Landlock and seccomp; [`cgroups`]:
//!   per-instance memory, CPU and process limits; `confine`: which of them an instance
//!   gets, and what a zygote child is told to enter itself.
//! - [`interpreters`]: finding `python3`, `node` and `bash` once at start-up.
//! - [`logs`]: captured output lines and recent failed calls, per function.
//! - [`build`]: deploy-time builds (dependencies, the manifest's `build` command) and their cache key.
//! - [`body`]: the streaming body type shared with the gateway.

pub mod body;
pub mod build;
mod capture;
pub mod cgroups;
mod confine;
mod error;
pub mod instance;
pub mod interpreters;
pub mod isolation;
pub mod lambda;
pub mod logs;
pub mod pool;
pub mod proxy;
pub mod sandbox;
pub mod secrets;
pub mod spares;
pub mod spawn;
pub mod stdio;
pub mod supervisor;
pub mod zygote;

pub use body::Body;
pub use error::{Error, Result};
pub use interpreters::Interpreters;
pub use supervisor::{HostLimits, Supervisor, SupervisorConfig, WarmPools};
