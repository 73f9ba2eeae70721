//! The embedded store of the single-machine default: an SQLite database (WAL) for the
//! registry of functions and revisions, and a content-addressed directory of code.
//!
//! It owns *deploying*: unpacking an uploaded archive safely, validating its manifest,
//! storing the code by digest and recording a revision. It does not run anything; the
//! gateway keeps its own in-memory view of what is deployed, loaded from here at start-up,
//! so no SQLite query sits on the call path.
//!
//! # Layout
//! - [`Store`]: open a data directory, deploy, list, remove.
//! - [`archive`]: safe extraction of `.tar.gz` uploads and the tree digest.
//! - [`Revision`]: one immutable snapshot of code and config; [`Serving`]: the revisions a
//!   function's traffic keeps in service.
//! - [`Error`]: the crate's one error enum.

pub mod archive;
mod error;
mod revision;
pub(crate) mod store;

pub use archive::{ArchiveLimits, Digest};
pub use error::{Error, Result};
pub use revision::{DeployOutcome, Revision, Serving};
pub use store::calls::{Attempted, CallResult, CallStatus, NewCall, StoredCall, SyncRecord};
pub use store::retention::{Collected, Retention};
pub use store::routes::{RouteOrigin, StoredRoute};
pub use store::secrets::{MAX_SECRET, SecretInfo};
pub use store::topics::{Message, PartitionState, TopicInfo};
pub use store::{Built, DeployTraffic, Staged, Store};
