//! A call's place on an instance ([`Slot`]), and a queued call's end of the hand-off
//! ([`Waiter`]): both give their place back however the call ends.

use std::sync::Arc;

use gust_api::CallId;
use tokio::sync::oneshot;

use super::{Handoff, Pool};
use crate::instance::{Context, Instance};

/// A place on an instance for one call. Dropping it frees the place and hands it to the
/// oldest waiting call.
#[derive(Debug)]
pub struct Slot {
    pool: Arc<Pool>,
    instance: Arc<Instance>,
    call: CallId,
    discarded: bool,
    /// The call waited for an instance to start for it.
    cold: bool,
}

impl Slot {
    pub(super) fn new(pool: Arc<Pool>, instance: Arc<Instance>, call: &CallId, cold: bool) -> Self {
        instance.begin_call(call);
        Self { pool, instance, call: call.clone(), discarded: false, cold }
    }

    /// Whether the call waited for an instance started for it (a cold start).
    pub fn cold(&self) -> bool {
        self.cold
    }

    /// The instance this slot is on.
    pub fn instance(&self) -> &Arc<Instance> {
        &self.instance
    }

    /// The call holding the slot.
    pub fn call(&self) -> &CallId {
        &self.call
    }

    /// The shared instance context.
    pub fn context(&self) -> &Arc<Context> {
        &self.pool.ctx
    }

    /// Takes the instance out of service and kills it (stuck or broken), then frees the slot.
    pub fn discard(mut self) {
        self.discarded = true;
        self.pool.discard(&self.instance);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.instance.end_call(&self.call);
        self.pool.release(&self.instance, !self.discarded);
    }
}

/// A queued call's end of the hand-off. If the call goes away (client disconnect,
/// timeout) after a slot was handed to it, the slot is given back, never leaked.
pub(super) struct Waiter {
    pub(super) rx: oneshot::Receiver<Handoff>,
    pub(super) pool: Arc<Pool>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(Ok(instance)) = self.rx.try_recv() {
            self.pool.release(&instance, false);
        }
    }
}
