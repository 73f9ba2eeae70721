//! Spec and wire types shared by every gust crate: validated names, the `gust.toml`
//! manifest and the JSON bodies of the control API.
//!
//! This crate does no I/O and knows nothing of tokio or HTTP, so every other crate may
//! depend on it. Start with [`Manifest::parse`], which turns a `gust.toml` into a
//! [`FunctionSpec`] or lists every problem at once.
//!
//! # Layout
//! - [`name`]: [`FunctionName`], [`RevisionId`], [`CallId`] — newtypes checked on construction.
//! - [`manifest`]: parsing and validation of `gust.toml` into [`FunctionSpec`].
//! - [`event`]: CloudEvents over HTTP and the trigger filters that route them.
//! - [`lambda`]: AWS Lambda shapes: the API Gateway v2 event, result mapping, Runtime API routes.
//! - [`schedule`]: cron expressions in a time zone, for `[[triggers]]` with a `schedule`.
//! - [`route`]: custom HTTP routes, [`RoutePattern`] (`/users/{id}`) and their conflicts.
//! - [`traffic`]: how calls split over revisions, tags, and rollback, as pure functions.
//! - [`quantity`]: `"30s"` durations and `"6Mi"` byte sizes as they are written in manifests.
//! - [`wire`]: request and response bodies of `/api/v1`.
//! - [`error`]: the crate's one [`Error`] enum.

pub mod error;
pub mod event;
pub mod lambda;
pub mod manifest;
pub mod name;
pub mod quantity;
pub mod route;
pub mod schedule;
pub mod traffic;
pub mod wire;

pub use error::{Error, Problem, Result};
pub use manifest::{
    Backoff, DeliveryPolicy, FunctionAuth, FunctionSpec, Limits, Manifest, Network, Protocol, Runtime, ScalePolicy,
    TriggerSpec,
};
pub use name::{CallId, FunctionName, RevisionId};
pub use route::{RouteMethod, RoutePattern, RouteSpec};
pub use traffic::{Share, Traffic};
pub use wire::RevisionStatus;
