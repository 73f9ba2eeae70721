//! The AWS Lambda Invoke API, `POST /2015-03-31/functions/{name}/invocations`, so code
//! written against an AWS SDK (`boto3.client("lambda", endpoint_url=…)`) calls gust
//! functions unchanged.
//!
//! `X-Amz-Invocation-Type: RequestResponse` (the default) runs the call and answers 200
//! with the function's result, or 200 with `X-Amz-Function-Error: Unhandled` and the
//! error document when the function failed (Lambda's rule: a function error is not an
//! API error). `Event` stores an async call and answers 202; `DryRun` answers 204. Errors
//! of the API itself carry Lambda's names in `x-amzn-ErrorType` and a `{Type, message}`
//! body, which the SDKs turn into their exceptions. Signatures are not checked here.

use std::sync::Arc;

use bytes::Bytes;
use gust_api::CallId;
use gust_runtime::Body;
use gust_runtime::body::full;
use gust_runtime::lambda::{CLIENT_CONTEXT, DIRECT, FUNCTION_ERROR};
use gust_store::{NewCall, SyncRecord};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::router::query_pairs;
use crate::{Error, Gateway, call_log};

/// The invocation type header.
const INVOCATION_TYPE: &str = "x-amz-invocation-type";
/// The largest payload an `Event` invocation takes: Lambda's async limit, 1 MB.
const MAX_EVENT: u64 = 1 << 20;

/// An error of the Invoke API itself, in Lambda's terms.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into() }
    }

    fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({"Type": "User", "message": self.message});
        let mut resp = Response::new(full(body.to_string()));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(HeaderName::from_static("x-amzn-errortype"), HeaderValue::from_static(self.kind));
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }

    /// gust's own errors, in the Lambda exceptions an SDK user knows.
    fn from_gateway(e: &Error) -> Self {
        if matches!(e, Error::NotReady { .. }) {
            return Self::new(StatusCode::BAD_GATEWAY, "ResourceNotReadyException", e.to_string());
        }
        Self::of_status(e.status(), e.to_string())
    }

    /// A refusal with `status`, named as Lambda names it.
    fn of_status(status: StatusCode, message: String) -> Self {
        let kind = match status.as_u16() {
            400 => "InvalidRequestContentException",
            404 => "ResourceNotFoundException",
            413 => "RequestTooLargeException",
            429 => "TooManyRequestsException",
            _ => "ServiceException",
        };
        Self::new(status, kind, message)
    }
}

/// `POST /2015-03-31/functions/{name}/invocations[?Qualifier=Q]`.
pub async fn invoke(gw: &Arc<Gateway>, name: &str, req: Request<Incoming>) -> Response<Body> {
    match run(gw, name, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn run(gw: &Arc<Gateway>, name: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let qualifier = query_pairs(req.uri().query()).find(|(k, _)| *k == "Qualifier").map(|(_, v)| v);
    let (function, tag) = gust_api::lambda::invoke_target(name, qualifier.as_deref());
    let (function, tag) = (function.to_owned(), tag.map(str::to_owned));
    let kind = req.headers().get(INVOCATION_TYPE).map(|v| v.to_str().unwrap_or("?").to_owned());
    let kind = kind.as_deref().unwrap_or("RequestResponse");
    if !matches!(kind, "RequestResponse" | "Event" | "DryRun") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            format!("X-Amz-Invocation-Type must be RequestResponse, Event or DryRun, not `{kind}`"),
        ));
    }
    let routing = gw.registry.get(&function).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("Function not found: arn:aws:lambda:us-east-1:000000000000:function:{function}"),
        )
    })?;
    let revision = routing.pick(tag.as_deref()).cloned().ok_or_else(|| match (&routing.failure, &tag) {
        (Some(detail), None) => ApiError::new(StatusCode::BAD_GATEWAY, "ResourceNotReadyException", detail.clone()),
        _ => ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("Function not found: {function}:{}", tag.as_deref().unwrap_or_default()),
        ),
    })?;
    if gw.check_caller(&revision.spec, req.headers()).is_err() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UnrecognizedClientException",
            "this function needs the server's token: send `Authorization: Bearer TOKEN`",
        ));
    }
    let limit =
        if kind == "Event" { MAX_EVENT.min(revision.spec.limits.max_body) } else { revision.spec.limits.max_body };
    let arrived_ms = crate::now_ms();
    let call = CallId::from_caller_at(
        req.headers().get(crate::invoke::CALL_ID).map(HeaderValue::as_bytes),
        u64::try_from(arrived_ms).unwrap_or(0),
    );
    // X-Amz-Client-Context is base64 JSON (at most 3583 bytes, as on Lambda); the client
    // gets it decoded.
    let client_context = match req.headers().get("x-amz-client-context") {
        None => None,
        Some(v) => {
            let bad = || {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContentException",
                    "X-Amz-Client-Context must be base64-encoded JSON of at most 3583 bytes",
                )
            };
            let text = v.to_str().map_err(|_| bad())?;
            let decoded = gust_api::event::base64_decode(text).filter(|_| text.len() <= 3583).ok_or_else(bad)?;
            let json = String::from_utf8(decoded).map_err(|_| bad())?;
            serde_json::from_str::<serde::de::IgnoredAny>(&json).map_err(|_| bad())?;
            Some(json)
        }
    };
    let (_, payload) = crate::body::read_whole(req, limit).await.map_err(|e| ApiError::from_gateway(&e))?;
    // Lambda takes JSON only; an empty payload is the empty object.
    let payload = if payload.iter().all(u8::is_ascii_whitespace) { Bytes::from_static(b"{}") } else { payload };
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            format!("Could not parse request body into json: {e}"),
        ));
    }
    match kind {
        "DryRun" => Ok(answer(StatusCode::NO_CONTENT, &call, None, Bytes::new())),
        "Event" => {
            let new = NewCall {
                id: call.clone(),
                function: function.clone(),
                method: "POST".into(),
                path: "/".into(),
                headers: [
                    (DIRECT, Some("1".to_owned())),
                    ("content-type", Some("application/json".to_owned())),
                    (CLIENT_CONTEXT, client_context),
                ]
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_owned(), v?)))
                .collect(),
                body: payload.to_vec(),
                callback_url: None,
            };
            crate::calls::enqueue(gw, new, revision.spec.delivery.max_queued)
                .await
                .map_err(|e| ApiError::from_gateway(&e))?;
            Ok(answer(StatusCode::ACCEPTED, &call, None, Bytes::new()))
        }
        _ => sync(gw, &function, &revision, (&call, arrived_ms), payload, client_context).await,
    }
}

/// Runs a `RequestResponse` invocation to the end and answers as Lambda does.
async fn sync(
    gw: &Arc<Gateway>,
    function: &str,
    revision: &Arc<gust_store::Revision>,
    (call, arrived_ms): (&CallId, i64),
    payload: Bytes,
    client_context: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let mut req = Request::new(full(payload));
    *req.method_mut() = http::Method::POST;
    let h = req.headers_mut();
    h.insert(HeaderName::from_static(DIRECT), HeaderValue::from_static("1"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(call.as_str()) {
        h.insert(HeaderName::from_static(crate::invoke::CALL_ID), v);
    }
    if let Some(v) = client_context.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert(HeaderName::from_static(CLIENT_CONTEXT), v);
    }
    let outcome = crate::dispatch::run_to_end(gw, revision, call, req, gust_runtime::lambda::MAX_RESPONSE as u64).await;
    let record = |status: u16, error: Option<String>| SyncRecord {
        id: call.clone(),
        function: function.into(),
        method: "POST".into(),
        path: format!("/2015-03-31/functions/{function}/invocations"),
        status,
        error,
        arrived_ms,
        answered_ms: crate::now_ms(),
        revision: outcome.revision.is_some().then(|| revision.id.number()),
        cold_start: outcome.cold_start,
    };
    let version = Some(revision.id.number().to_string());
    match &outcome.answer {
        Ok(result) => {
            let failed = result.status >= 500 || result.headers.iter().any(|(k, _)| k == FUNCTION_ERROR);
            call_log::send(gw, record(result.status, failed.then(|| "the function failed".to_owned())));
            let mut resp = answer(StatusCode::OK, call, version.as_deref(), Bytes::from(result.body.clone()));
            if failed {
                resp.headers_mut()
                    .insert(HeaderName::from_static(FUNCTION_ERROR), HeaderValue::from_static("Unhandled"));
            }
            Ok(resp)
        }
        Err(failure) => {
            let e = &failure.error;
            call_log::send(gw, record(failure.status, Some(e.clone())));
            // Failures of the function's run are function errors, as on Lambda; gust's own
            // refusals (capacity, size) are API errors.
            let error_type = match failure.status {
                504 => "Sandbox.Timedout",
                502 => "Runtime.ExitError",
                _ => {
                    let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    return Err(ApiError::of_status(status, e.clone()));
                }
            };
            let doc = gust_api::lambda::FunctionError {
                error_type: error_type.to_owned(),
                error_message: format!("RequestId: {call} Error: {e}"),
            };
            let mut resp = answer(StatusCode::OK, call, version.as_deref(), Bytes::from(doc.to_json()));
            resp.headers_mut().insert(HeaderName::from_static(FUNCTION_ERROR), HeaderValue::from_static("Unhandled"));
            Ok(resp)
        }
    }
}

fn answer(status: StatusCode, call: &CallId, version: Option<&str>, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if status != StatusCode::NO_CONTENT {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Ok(v) = HeaderValue::from_str(call.as_str()) {
        h.insert(HeaderName::from_static("x-amzn-requestid"), v.clone());
        h.insert(HeaderName::from_static(crate::invoke::CALL_ID), v);
    }
    if let Some(v) = version.and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert(HeaderName::from_static("x-amz-executed-version"), v);
    }
    resp
}
