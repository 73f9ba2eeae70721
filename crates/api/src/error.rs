//! The one error type of `gust-api`.

use std::fmt;

/// A result whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a name or a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A function name that is not a lowercase DNS label of the allowed length.
    #[error("invalid function name `{name}`: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What rule it breaks.
        reason: &'static str,
    },
    /// A manifest with one or more problems; all of them are listed, not just the first.
    #[error("invalid manifest: {}", Problems(.problems))]
    InvalidManifest {
        /// Every problem found, in the order of the fields.
        problems: Vec<Problem>,
    },
}

/// One thing wrong with a manifest, tied to the field that has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// The dotted path of the field, e.g. `scale.max`; empty for the file as a whole.
    pub field: String,
    /// What is wrong, written for the person who edits the file.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.field, self.message) }
    }
}

/// Displays a list of problems as `a: …; b: …`.
struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}
