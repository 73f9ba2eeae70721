//! The CloudEvents broker: `POST /events` takes an event in binary or structured mode
//! and, for every function whose `[[triggers]]` match it, stores one async call that
//! delivers it in binary mode — all in one transaction before the 202, so an accepted
//! event is never lost. A delivery's answer that is itself a CloudEvent comes back
//! through [`route`], as Knative's triggers re-enqueue replies to the broker.

use gust_api::CallId;
use gust_api::event::{self, CloudEvent};
use gust_runtime::Body;
use gust_store::NewCall;
use http::header::HeaderName;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::control::json;
use crate::{Error, Gateway, Result};

/// The largest event accepted (data and attributes), in bytes: AWS EventBridge's and
/// Lambda's async cap.
pub const MAX_EVENT: u64 = 1 << 20;
/// Marks a stored call as an event delivery and counts how many replies led to it; a
/// reply chain longer than [`MAX_HOPS`] is dropped (Fission caps its chains at 3).
pub const HOPS: HeaderName = HeaderName::from_static("x-gust-event-hops");
/// Replies of replies followed at most.
pub const MAX_HOPS: u32 = 8;

/// `POST /events`: 202 with how many deliveries were stored, 400 with the reason for a
/// malformed event, 413 past [`MAX_EVENT`].
///
/// # Errors
/// As above; the store's errors.
pub async fn ingest(gw: &Gateway, req: Request<Incoming>) -> Result<Response<Body>> {
    let (parts, body) = crate::body::read_whole(req, MAX_EVENT).await?;
    let headers: Vec<(&str, &str)> =
        parts.headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))).collect();
    let event =
        event::parse(&headers, &body).map_err(|reason| Error::BadEvent { reason })?.ok_or_else(|| Error::BadEvent {
            reason: "this is not a CloudEvent: send ce-specversion, ce-id, ce-source and ce-type headers (binary \
                     mode) or a JSON event with Content-Type: application/cloudevents+json (structured mode)"
                .to_owned(),
        })?;
    let deliveries = route(gw, &event, 0).await?;
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "id": event.attr("id"), "type": event.attr("type"), "deliveries": deliveries }),
    ))
}

/// Stores one delivery of `event` per matching trigger (at most one per function), in one
/// transaction, and wakes the dispatcher; returns how many. `hops` counts the replies
/// that led here.
///
/// # Errors
/// The store's.
pub async fn route(gw: &Gateway, event: &CloudEvent, hops: u32) -> Result<usize> {
    let (mut headers, body) = event.to_binary();
    headers.push((HOPS.as_str().to_owned(), hops.to_string()));
    let targets: Vec<_> = gw
        .registry
        .all()
        .iter()
        .filter_map(|routing| routing.latest.clone())
        .filter(|r| r.spec.triggers.iter().any(|t| t.matches(event)))
        .collect();
    let caps: std::collections::HashMap<String, u32> =
        targets.iter().map(|r| (r.spec.name.to_string(), r.spec.delivery.max_queued)).collect();
    let calls: Vec<NewCall> = targets
        .iter()
        .map(|r| NewCall {
            id: CallId::generate(),
            function: r.spec.name.to_string(),
            method: "POST".to_owned(),
            path: "/".to_owned(),
            headers: headers.clone(),
            body: body.clone(),
            callback_url: None,
        })
        .collect();
    let n = calls.len();
    if n > 0 {
        gw.with_store(move |s| s.enqueue_all(&calls, |f| caps.get(f).copied().unwrap_or(0))).await?;
        gw.calls_ready.notify_one();
    }
    tracing::debug!(id = event.attr("id"), r#type = event.attr("type"), deliveries = n, hops, "event routed");
    Ok(n)
}
