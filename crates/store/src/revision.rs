//! One immutable revision of a function.

use std::path::PathBuf;
use std::time::SystemTime;

use gust_api::{FunctionSpec, RevisionId, RevisionStatus, Traffic};

use crate::Digest;

/// An immutable snapshot: the code (by digest, unpacked at `code_dir`) and the validated
/// spec it runs with. Every deploy that changes either makes a new one.
#[derive(Debug, Clone)]
pub struct Revision {
    /// `NAME-00001`, …
    pub id: RevisionId,
    /// The validated manifest, defaults filled in.
    pub spec: FunctionSpec,
    /// Digest of the code tree.
    pub code_digest: Digest,
    /// Where the code lives, read-only by convention; shared by revisions with equal code.
    pub code_dir: PathBuf,
    /// When it was deployed.
    pub created_at: SystemTime,
    /// Whether it passed its start-up check at deploy, as it was when read.
    pub status: RevisionStatus,
    /// Why it failed its start-up check.
    pub failure: Option<String>,
}

/// What a deploy did.
#[derive(Debug, Clone)]
pub struct DeployOutcome {
    /// The new revision, or the latest one when nothing changed.
    pub revision: Revision,
    /// `false` when code and config equalled the current revision's, so nothing changed.
    pub changed: bool,
}

/// What a function serves: the revisions its traffic keeps in service.
#[derive(Debug, Clone)]
pub struct Serving {
    /// The function.
    pub function: gust_api::FunctionName,
    /// The number of its newest ready revision (`@latest`); `None` while none has
    /// started.
    pub latest: Option<u32>,
    /// How its calls split, and its tags.
    pub traffic: Traffic,
    /// Every revision with a share or a tag, and the latest ready; newest first.
    pub revisions: Vec<Revision>,
    /// With no ready revision, why the newest one failed: what its calls are told.
    pub failure: Option<String>,
    /// The newest revision, whatever its status (what `gust ls` shows).
    pub newest: Revision,
}
