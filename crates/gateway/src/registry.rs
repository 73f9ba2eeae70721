//! Function name → the revision serving it, in memory. Loaded from the store at start-up
//! and updated by deploys and removals; the call path reads only this.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use gust_store::Revision;

/// The serving revision of every deployed function.
#[derive(Debug, Default)]
pub struct Registry {
    /// Readers are every call; writers are deploys. A read lock is held only to clone an `Arc`.
    map: RwLock<BTreeMap<String, Arc<Revision>>>,
}

impl Registry {
    /// The revision serving `function`.
    pub fn get(&self, function: &str) -> Option<Arc<Revision>> {
        self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(function).cloned()
    }

    /// Makes `revision` its function's serving revision.
    pub fn set(&self, revision: Arc<Revision>) {
        let name = revision.spec.name.to_string();
        self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name, revision);
    }

    /// Forgets `function`; returns whether it was there.
    pub fn remove(&self, function: &str) -> bool {
        self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(function).is_some()
    }

    /// Every serving revision, by name.
    pub fn all(&self) -> Vec<Arc<Revision>> {
        self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }
}
