//! Function name → the revision serving it, in memory. Loaded from the store at start-up
//! and updated by deploys and removals; the call path reads only this.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use gust_api::route::Params;
use gust_store::{Revision, StoredRoute};

/// The serving revision of every deployed function, and the custom routes.
#[derive(Debug, Default)]
pub struct Registry {
    /// Readers are every call; writers are deploys. A read lock is held only to clone an `Arc`.
    map: RwLock<BTreeMap<String, Arc<Revision>>>,
    /// Custom routes, replaced whole whenever they change (rarely).
    routes: RwLock<Arc<Vec<StoredRoute>>>,
}

impl Registry {
    /// Replaces the custom routes.
    pub fn set_routes(&self, routes: Vec<StoredRoute>) {
        *self.routes.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(routes);
    }

    /// Every custom route, as last loaded from the store.
    pub fn routes(&self) -> Arc<Vec<StoredRoute>> {
        self.routes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The custom route for `method` and `path`: of those that match, the most specific
    /// pattern, then one naming the method over an any-method one.
    pub fn find_route(&self, method: &str, path: &str) -> Option<(String, Params)> {
        self.routes()
            .iter()
            .filter(|r| r.spec.method.accepts(method))
            .filter_map(|r| r.spec.path.matches(path).map(|params| (r, params)))
            .min_by_key(|(r, _)| (r.spec.path.specificity(), !r.spec.method.is_specific()))
            .map(|(r, params)| (r.function.clone(), params))
    }

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
