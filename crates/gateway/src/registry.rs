//! Function name → how its calls split over revisions, in memory. Loaded from the store
//! at start-up and replaced whole by deploys, traffic changes and removals; the call path
//! reads only this.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};

use gust_api::route::Params;
use gust_store::{Revision, Serving, StoredRoute};
use tokio::sync::watch;

/// Where each deployed function's calls go, and the custom routes.
#[derive(Debug)]
pub struct Registry {
    /// Readers are every call; writers are deploys. A read lock is held only to clone an `Arc`.
    map: RwLock<BTreeMap<String, Arc<Routing>>>,
    /// Custom routes, replaced whole whenever they change (rarely).
    routes: RwLock<Arc<Vec<StoredRoute>>>,
    /// Counts changes to the functions (and topics, see [`Registry::touch`]), so that the
    /// loops following them (schedules, topic consumers) sleep until one comes instead of
    /// looking again on a timer.
    changes: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Self { map: RwLock::default(), routes: RwLock::default(), changes: watch::Sender::new(0) }
    }
}

/// One function's traffic, resolved to revisions.
#[derive(Debug)]
pub struct Routing {
    /// The function's name, shared by the records of its calls.
    pub name: Arc<str>,
    /// The newest ready revision (`NAME@latest`); `None` while none has started.
    pub latest: Option<Arc<Revision>>,
    /// With no ready revision, why the newest failed: what calls are told.
    pub failure: Option<String>,
    /// The newest revision, whatever its status: what `gust ls` shows.
    pub newest: Arc<Revision>,
    /// Revisions taking calls without a tag, each with the running total of shares up to
    /// and including it (the last is 100).
    split: Vec<(u32, Arc<Revision>)>,
    /// Tag → revision.
    tags: BTreeMap<String, Arc<Revision>>,
    /// Every revision the function keeps in service: those above and the latest.
    revisions: Vec<Arc<Revision>>,
}

impl Routing {
    /// Resolves a function's traffic over the revisions it keeps in service; `None` when
    /// the store's answer names a revision it did not include (a bug).
    pub fn new(serving: Serving) -> Option<Self> {
        let revisions: Vec<Arc<Revision>> = serving.revisions.into_iter().map(Arc::new).collect();
        let by_number = |n: u32| revisions.iter().find(|r| r.id.number() == n).cloned();
        let latest = match serving.latest {
            Some(n) => Some(by_number(n)?),
            None => None,
        };
        let mut total = 0;
        let split = serving
            .traffic
            .resolve(serving.latest)
            .into_iter()
            .filter_map(|(n, percent)| {
                total += percent;
                Some((total, by_number(n)?))
            })
            .collect();
        let tags = serving.traffic.tags.iter().filter_map(|(t, n)| Some((t.clone(), by_number(*n)?))).collect();
        let newest = by_number(serving.newest.id.number()).unwrap_or_else(|| Arc::new(serving.newest));
        let name = Arc::from(serving.function.as_str());
        Some(Self { name, latest, failure: serving.failure, newest, split, tags, revisions })
    }

    /// The revision for one call: the tagged one, or one drawn by the split's shares.
    /// `None` when the tag names nothing.
    pub fn pick(&self, tag: Option<&str>) -> Option<&Arc<Revision>> {
        match tag {
            None => {
                let last = self.split.last()?;
                if self.split.len() == 1 {
                    return Some(&last.1);
                }
                let roll = (random() % 100) as u32;
                self.split.iter().find(|(upto, _)| roll < *upto).map(|(_, r)| r).or(Some(&last.1))
            }
            Some("latest") => self.latest.as_ref(),
            Some(t) => self.tags.get(t),
        }
    }

    /// The revision whose spec governs the function as a whole (limits, async policy):
    /// the latest ready one, else the newest.
    pub fn current(&self) -> &Arc<Revision> {
        self.latest.as_ref().unwrap_or(&self.newest)
    }

    /// Whether `tag` names one of this function's revisions (`latest` always does).
    pub fn has_tag(&self, tag: &str) -> bool {
        tag == "latest" || self.tags.contains_key(tag)
    }

    /// Every revision this routing may send a call to.
    pub fn revisions(&self) -> &[Arc<Revision>] {
        &self.revisions
    }
}

/// A fast per-thread generator (xorshift64*, seeded from the standard library's per-thread
/// random hash keys) for traffic splits: statistical, not secret.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0x9e37_79b9_7f4a_7c15_u64) | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
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

    /// How `function`'s calls are routed.
    pub fn get(&self, function: &str) -> Option<Arc<Routing>> {
        self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(function).cloned()
    }

    /// Whether `function` is deployed.
    pub fn contains(&self, function: &str) -> bool {
        self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(function)
    }

    /// Replaces `function`'s routing.
    pub fn set(&self, function: &str, routing: Arc<Routing>) {
        self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(function.to_owned(), routing);
        self.touch();
    }

    /// Forgets `function`; returns whether it was there.
    pub fn remove(&self, function: &str) -> bool {
        let removed = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(function).is_some();
        self.touch();
        removed
    }

    /// Wakes whoever follows the changes: a function changed (done by [`Registry::set`]
    /// and [`Registry::remove`]), or a topic was created or removed.
    pub fn touch(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes to come, for a loop that follows them.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Every function's routing, by name.
    pub fn all(&self) -> Vec<Arc<Routing>> {
        self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }
}
