//! The instances of one revision and the activator in front of them.
//!
//! Every call asks [`Pool::acquire`] for a [`Slot`]: a place on an instance with fewer
//! than `scale.concurrency` calls in flight. With none free, the call joins a bounded
//! FIFO queue and, when the calls waiting outnumber the capacity already starting and
//! the pool is below `scale.max`, a new instance is started at once — scale-up happens on
//! events, not on a timer. Past `scale.queue_depth` waiting calls the answer is
//! [`Error::Overloaded`]; past `scale.queue_timeout` it is [`Error::QueueTimeout`].
//! Nothing waits forever.
//!
//! The steady size is the autoscaler's ([`gust_scaler`], Knative's KPA): the pool keeps
//! the time-weighted concurrency it sees (calls in flight plus calls waiting), and on
//! every tick of the supervisor [`Pool::autoscale`] hands the average to the scaler,
//! starts instances up to what it wants and stops idle ones beyond it.
//!
//! All decisions are made under one short `std::sync::Mutex` per pool, never held across
//! an `.await`. A freed slot is handed straight to the oldest waiter.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use gust_api::CallId;
use gust_api::wire::{InstanceInfo, LogLine, RevisionScale};
use gust_scaler::{Decision, Scaler};
use gust_store::Revision;
use tokio::sync::oneshot;

use crate::instance::{Context, Instance};
use crate::logs::now_rfc3339;
use crate::{Error, Result};

mod load;
mod slot;

use load::{Load, policy};
pub use slot::Slot;
use slot::Waiter;

/// Why a pool stopped taking calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The function was removed.
    Removed,
    /// gust is shutting down.
    Shutdown,
}

/// What a waiting call is eventually told.
type Handoff = std::result::Result<Arc<Instance>, WaitError>;

#[derive(Debug)]
enum WaitError {
    Start(String),
    Closed(Closed),
    Full(u32),
}

/// The instances of one revision.
#[derive(Debug)]
pub struct Pool {
    revision: Arc<Revision>,
    ctx: Arc<Context>,
    state: Mutex<State>,
    /// A handle to itself for the tasks it spawns.
    me: Weak<Pool>,
}

#[derive(Debug)]
struct Member {
    instance: Arc<Instance>,
    in_flight: u32,
    served: u64,
    idle_since: Instant,
}

#[derive(Debug)]
struct State {
    members: Vec<Member>,
    /// Instances being started now.
    starting: u32,
    /// Calls waiting for a slot, oldest first.
    waiters: VecDeque<oneshot::Sender<Handoff>>,
    /// A newer revision took over: keep serving what arrives, stop instances once idle.
    retired: bool,
    closed: Option<Closed>,
    /// The load the autoscaler is fed.
    load: Load,
    scaler: Scaler,
    /// The scaler's latest answer.
    decision: Option<Decision>,
    /// Instances started, and how many of them came from a warm pool.
    cold_starts: u64,
    pooled_starts: u64,
    /// Calls that asked for a slot, and how many of them had to wait for one.
    calls: u64,
    waited: u64,
    /// Until then at least one instance is kept: work is waiting elsewhere (a topic
    /// consumer between retries), so the revision must not scale to zero.
    held_until: Option<Instant>,
}

impl State {
    /// Brings the load up to date after calls or waiters changed.
    fn mark(&mut self) {
        let now = Instant::now();
        let current = self.members.iter().map(|m| m.in_flight).sum::<u32>() + self.waiting();
        self.load.advance(now);
        self.load.current = current;
    }

    /// Waiting calls whose callers are still there.
    fn waiting(&self) -> u32 {
        self.waiters.iter().filter(|w| !w.is_closed()).count() as u32
    }
}

/// What one autoscaler tick found.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// A retired pool with nothing left in it: the supervisor forgets it.
    pub forget: bool,
    /// Nothing to decide until a call comes: no instance, none starting, no call waiting,
    /// and none wanted (no hold, a decision of zero).
    pub quiet: bool,
}

impl Pool {
    /// A pool for `revision`. `initial` instances are wanted for its first stable window
    /// (`scale.initial` for a new revision; none for one resumed after a restart), and
    /// the autoscaler's first tick starts them.
    pub fn new(ctx: Arc<Context>, revision: Arc<Revision>, initial: u32) -> Arc<Self> {
        let now = Instant::now();
        let state = State {
            members: Vec::new(),
            starting: 0,
            waiters: VecDeque::new(),
            retired: false,
            closed: None,
            load: Load::new(now),
            scaler: Scaler::new(policy(&revision.spec.scale, initial), now),
            decision: None,
            cold_starts: 0,
            pooled_starts: 0,
            calls: 0,
            waited: 0,
            held_until: None,
        };
        // Its first tick starts its `initial` instances.
        ctx.reaper.notify_one();
        Arc::new_cyclic(|me| Pool { revision, ctx, state: Mutex::new(state), me: me.clone() })
    }

    /// The revision this pool runs.
    pub fn revision(&self) -> &Arc<Revision> {
        &self.revision
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section below leaves the state consistent before any call that
        // could panic, so a poisoned lock still guards valid data.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn arc(&self) -> Option<Arc<Pool>> {
        self.me.upgrade()
    }

    /// Gets a slot for `call`: at once on a free instance, else after waiting in the
    /// queue for one to free up or start.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the queue is full, [`Error::QueueTimeout`] after
    /// `scale.queue_timeout`, [`Error::StartFailed`] when no instance could be started,
    /// [`Error::ShuttingDown`] when the pool is closed.
    pub async fn acquire(self: &Arc<Self>, call: &CallId) -> Result<Slot> {
        let spec = &self.revision.spec;
        let concurrency = spec.scale.concurrency;
        let (waiter, waits_for_start) = {
            let mut st = self.lock();
            if let Some(closed) = st.closed {
                return Err(self.closed_error(closed));
            }
            st.calls += 1;
            if let Some(m) = free_member(&mut st.members, concurrency) {
                m.in_flight += 1;
                let instance = m.instance.clone();
                st.mark();
                drop(st);
                return Ok(Slot::new(self.clone(), instance, call, false));
            }
            let coming = (st.starting * concurrency) as usize;
            let uncovered = st.waiters.len().saturating_sub(coming);
            let can_start = (st.members.len() as u32 + st.starting) < spec.scale.max;
            if !can_start && uncovered >= spec.scale.queue_depth as usize {
                return Err(Error::Overloaded {
                    function: spec.name.to_string(),
                    max: spec.scale.max,
                    queued: uncovered,
                });
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(tx);
            st.waited += 1;
            st.mark();
            self.scale_for_waiters(&mut st);
            // A waiting call is load the autoscaler must see, even if no start was
            // needed for it (one is under way): wake it, should it be sleeping.
            self.ctx.reaper.notify_one();
            let waits_for_start = st.waiters.len() <= (st.starting * concurrency) as usize;
            (Waiter { rx, pool: self.clone() }, waits_for_start)
        };
        // A call that waits for a starting instance may wait for the start itself, which
        // can be slower than a queue wait (a JVM, a big import).
        let limit =
            if waits_for_start { spec.scale.queue_timeout.max(spec.limits.timeout) } else { spec.scale.queue_timeout };
        let mut waiter = waiter;
        match tokio::time::timeout(limit, &mut waiter.rx).await {
            Ok(Ok(Ok(instance))) => Ok(Slot::new(self.clone(), instance, call, waits_for_start)),
            Ok(Ok(Err(WaitError::Start(detail)))) => {
                Err(Error::StartFailed { function: spec.name.to_string(), detail })
            }
            Ok(Ok(Err(WaitError::Closed(closed)))) => Err(self.closed_error(closed)),
            Ok(Ok(Err(WaitError::Full(max)))) => Err(Error::AtCapacity { max }),
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::QueueTimeout { function: spec.name.to_string(), waited: limit }),
        }
    }

    fn closed_error(&self, closed: Closed) -> Error {
        match closed {
            Closed::Shutdown => Error::ShuttingDown,
            Closed::Removed => Error::StartFailed {
                function: self.revision.spec.name.to_string(),
                detail: "the function was removed".into(),
            },
        }
    }

    /// Frees a slot on `instance`, handing it on to the oldest waiter.
    fn release(&self, instance: &Arc<Instance>, served: bool) {
        let mut st = self.lock();
        if let Some(m) = st.members.iter_mut().find(|m| Arc::ptr_eq(&m.instance, instance)) {
            m.in_flight = m.in_flight.saturating_sub(1);
            if served {
                m.served += 1;
            }
            if m.in_flight == 0 {
                m.idle_since = Instant::now();
            }
        }
        self.dispatch(&mut st);
        st.mark();
        self.scale_for_waiters(&mut st);
    }

    /// Takes a broken or stuck instance out of service and kills it.
    fn discard(&self, instance: &Arc<Instance>) {
        {
            let mut st = self.lock();
            st.members.retain(|m| !Arc::ptr_eq(&m.instance, instance));
            st.mark();
            self.scale_for_waiters(&mut st);
        }
        instance.kill();
    }

    /// Called once when an instance's process has ended, for whatever reason.
    fn on_exit(&self, instance: &Arc<Instance>) {
        let mut st = self.lock();
        let before = st.members.len();
        st.members.retain(|m| !Arc::ptr_eq(&m.instance, instance));
        if st.members.len() != before {
            drop(st);
            // It was still in service: it crashed rather than being stopped.
            self.note(&instance.death_detail("exited"));
            let mut st = self.lock();
            self.scale_for_waiters(&mut st);
        }
    }

    /// Hands free slots to waiters, oldest first; skips waiters that gave up.
    fn dispatch(&self, st: &mut State) {
        let concurrency = self.revision.spec.scale.concurrency;
        while let Some(front) = st.waiters.front() {
            if front.is_closed() {
                st.waiters.pop_front();
                continue;
            }
            let Some(m) = free_member(&mut st.members, concurrency) else { break };
            let Some(tx) = st.waiters.pop_front() else { break };
            m.in_flight += 1;
            if tx.send(Ok(m.instance.clone())).is_err() {
                m.in_flight -= 1;
            }
        }
    }

    /// Starts instances while more calls wait than the instances starting can take, up
    /// to `scale.max`.
    fn scale_for_waiters(&self, st: &mut State) {
        if st.closed.is_some() {
            return;
        }
        let scale = &self.revision.spec.scale;
        loop {
            let waiting = st.waiting();
            if waiting > st.starting * scale.concurrency && (st.members.len() as u32 + st.starting) < scale.max {
                self.start_one(st);
            } else {
                break;
            }
        }
    }

    fn start_one(&self, st: &mut State) {
        let Some(me) = self.arc() else { return };
        self.starts(st);
        tokio::spawn(async move { me.run_start().await });
    }

    /// Counts an instance as starting; the autoscaler follows this pool from now on, if
    /// it was sleeping.
    fn starts(&self, st: &mut State) {
        st.starting += 1;
        self.ctx.reaper.notify_one();
    }

    async fn run_start(self: Arc<Self>) {
        let deadline = tokio::time::Instant::now() + self.revision.spec.limits.timeout;
        let started = match self.ctx.reserve() {
            Ok(ticket) => Instance::start(&self.ctx, &self.revision, deadline, self.exit_hook(), Some(ticket)).await,
            Err(full) => Err(full),
        };
        let mut st = self.lock();
        st.starting -= 1;
        match started {
            Ok(instance) => self.admit(st, instance),
            Err(error) => {
                let detail = start_detail(&error);
                // With nothing running or starting, nobody waiting would ever be served:
                // tell them why now instead of letting them time out.
                if st.members.is_empty() && st.starting == 0 {
                    for tx in st.waiters.drain(..) {
                        let why = match error {
                            Error::AtCapacity { max } => WaitError::Full(max),
                            _ => WaitError::Start(detail.clone()),
                        };
                        let _ = tx.send(Err(why));
                    }
                }
                drop(st);
                tracing::warn!(function = %self.revision.spec.name, %error, "instance failed to start");
                self.note(&format!("instance failed to start: {detail}"));
            }
        }
    }

    /// Tells the pool when an instance's process ends.
    fn exit_hook(&self) -> Box<dyn FnOnce(Arc<Instance>) + Send> {
        let weak = self.me.clone();
        Box::new(move |instance: Arc<Instance>| {
            if let Some(pool) = weak.upgrade() {
                pool.on_exit(&instance);
            }
        })
    }

    /// Puts a started instance in service and hands it the calls waiting.
    fn admit(&self, mut st: std::sync::MutexGuard<'_, State>, instance: Arc<Instance>) {
        if st.closed.is_some() {
            drop(st);
            instance.stop();
            return;
        }
        tracing::debug!(instance = %instance.id, "instance started");
        st.cold_starts += 1;
        st.pooled_starts += u64::from(instance.pooled);
        st.members.push(Member { instance, in_flight: 0, served: 0, idle_since: Instant::now() });
        self.dispatch(&mut st);
        st.mark();
        self.scale_for_waiters(&mut st);
    }

    /// A deploy's start-up check: starts one instance the way calls would get one (from
    /// the warm pool where it can) and checks it can serve without sending it a call
    /// (`Instance::check_ready`). On success the instance stays in service when `keep`
    /// (the revision's `scale.initial` wants one) and stops otherwise. While it runs it
    /// counts as starting, so the autoscaler does not start a second one beside it.
    ///
    /// # Errors
    /// Why the revision cannot start: how the instance ended and its last output.
    pub async fn probe(self: &Arc<Self>, keep: bool) -> std::result::Result<(), String> {
        self.starts(&mut self.lock());
        let deadline = tokio::time::Instant::now() + self.revision.spec.limits.timeout;
        // The check runs even when every place is taken (it then holds none): a full
        // server must not fail a deploy's revision.
        let ticket = self.ctx.reserve().ok();
        let checked = match Instance::start(&self.ctx, &self.revision, deadline, self.exit_hook(), ticket).await {
            Ok(instance) => match instance.check_ready(&self.ctx, deadline).await {
                Ok(()) => Ok(instance),
                Err(detail) => {
                    instance.kill();
                    Err(detail)
                }
            },
            Err(error) => Err(start_detail(&error)),
        };
        let mut st = self.lock();
        st.starting -= 1;
        match checked {
            Ok(instance) if keep => {
                self.admit(st, instance);
                Ok(())
            }
            Ok(instance) => {
                drop(st);
                instance.stop();
                Ok(())
            }
            Err(detail) => {
                drop(st);
                tracing::warn!(revision = %self.revision.id, %detail, "revision failed its start-up check");
                self.note(&format!("{} failed to start: {detail}", self.revision.id));
                Err(detail)
            }
        }
    }

    /// Writes a line from gust itself into the function's log.
    fn note(&self, line: &str) {
        self.ctx.logs.append(LogLine {
            ts: now_rfc3339(),
            function: self.revision.spec.name.to_string(),
            instance: "gust".into(),
            stream: "gust".into(),
            call_id: None,
            line: line.to_owned(),
        });
    }

    /// One autoscaler tick: feeds it the load since the last tick, starts instances up to
    /// what it wants and stops idle ones beyond it (every idle one once retired). Says
    /// whether the pool can be forgotten and whether it is quiet.
    pub fn autoscale(&self) -> Tick {
        let now = Instant::now();
        let mut st = self.lock();
        st.mark();
        let (span, average) = st.load.sample(now);
        st.scaler.record(now, span, average);
        let ready = st.members.len() as u32;
        let decision = st.scaler.decide(now, ready);
        st.decision = Some(decision);
        let held = u32::from(st.held_until.is_some_and(|t| t > now));
        let desired = if st.retired || st.closed.is_some() { 0 } else { decision.desired.max(held) };
        let mut to_stop = Vec::new();
        if ready > desired {
            // The longest idle go first; busy instances are never stopped here.
            let mut idle: Vec<(Instant, Arc<Instance>)> =
                st.members.iter().filter(|m| m.in_flight == 0).map(|m| (m.idle_since, m.instance.clone())).collect();
            idle.sort_by_key(|(since, _)| *since);
            to_stop.extend(idle.into_iter().take((ready - desired) as usize).map(|(_, i)| i));
            st.members.retain(|m| !to_stop.iter().any(|i| Arc::ptr_eq(i, &m.instance)));
        } else {
            // `desired` is 0 for a retired or closed pool and within `scale.max` otherwise.
            while (st.members.len() as u32 + st.starting) < desired {
                self.start_one(&mut st);
            }
        }
        let empty = st.members.is_empty() && st.starting == 0 && st.waiters.is_empty();
        let tick = Tick { forget: st.retired && empty, quiet: empty && desired == 0 };
        drop(st);
        for instance in to_stop {
            tracing::debug!(instance = %instance.id, "autoscaler stops an idle instance");
            instance.stop();
        }
        tick
    }

    /// What `gust describe` shows of the autoscaler.
    pub fn scale_info(&self) -> RevisionScale {
        let st = self.lock();
        let d = st.decision;
        RevisionScale {
            revision: self.revision.id.to_string(),
            desired: d.map_or(0, |d| d.desired),
            actual: st.members.len() as u32,
            starting: st.starting,
            panic: d.is_some_and(|d| d.panic),
            stable_concurrency: d.map_or(0.0, |d| d.stable_concurrency),
            panic_concurrency: d.map_or(0.0, |d| d.panic_concurrency),
            queued: st.waiting(),
            cold_starts: st.cold_starts,
            pooled_starts: st.pooled_starts,
            calls: st.calls,
            waited: st.waited,
            unpooled_reason: crate::instance::unpooled_reason(&self.ctx, &self.revision.spec),
            retired: st.retired,
        }
    }

    /// Keeps at least one instance until `until`, whatever the load says.
    pub fn hold(&self, until: Instant) {
        let mut st = self.lock();
        st.held_until = Some(st.held_until.map_or(until, |t| t.max(until)));
        drop(st);
        // The autoscaler starts the held instance.
        self.ctx.reaper.notify_one();
    }

    /// The revision left service: stop instances as they go idle.
    pub fn retire(&self) {
        self.lock().retired = true;
        // A sleeping autoscaler must look again: an empty retired pool is to be
        // forgotten, and one with idle instances is to stop them.
        self.ctx.reaper.notify_one();
    }

    /// The revision is back in service (a rollback to it, or a tag on it).
    pub fn resume(&self) {
        self.lock().retired = false;
    }

    /// Stops taking calls, fails waiting ones, and stops every instance.
    pub fn close(&self, why: Closed) -> Vec<Arc<Instance>> {
        let mut st = self.lock();
        st.closed = Some(why);
        for tx in st.waiters.drain(..) {
            let _ = tx.send(Err(WaitError::Closed(why)));
        }
        let members: Vec<_> = st.members.drain(..).map(|m| m.instance).collect();
        drop(st);
        for i in &members {
            i.stop();
        }
        members
    }

    /// Calls in flight on this pool's instances.
    pub fn in_flight(&self) -> u32 {
        self.lock().members.iter().map(|m| m.in_flight).sum()
    }

    /// Instances in service.
    pub fn len(&self) -> usize {
        self.lock().members.len()
    }

    /// Whether no instance is in service.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What `gust describe` shows of each instance.
    pub fn infos(&self) -> Vec<InstanceInfo> {
        let st = self.lock();
        st.members
            .iter()
            .map(|m| InstanceInfo {
                id: m.instance.id.clone(),
                revision: self.revision.id.to_string(),
                pid: m.instance.process.as_ref().map(|p| p.pid),
                in_flight: m.in_flight,
                served: m.served,
                age_seconds: m.instance.started.elapsed().as_secs_f64(),
                idle_seconds: if m.in_flight == 0 { m.idle_since.elapsed().as_secs_f64() } else { 0.0 },
            })
            .collect()
    }
}

/// What a failed start tells the calls that waited for it.
fn start_detail(error: &Error) -> String {
    match error {
        Error::StartFailed { detail, .. } | Error::RuntimeUnavailable { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

/// The least-loaded live member with a free slot.
fn free_member(members: &mut [Member], concurrency: u32) -> Option<&mut Member> {
    members.iter_mut().filter(|m| m.in_flight < concurrency && !m.instance.is_dead()).min_by_key(|m| m.in_flight)
}
