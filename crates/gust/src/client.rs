//! A small HTTP client for the control API and for calls, over hyper (no TLS: the server
//! listens on loopback by default; remote access goes through a proxy of your choice).

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use gust_api::wire::ErrorBody;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

/// Talks to one gust server.
pub(crate) struct Client {
    base: String,
    token: Option<String>,
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// A client sending the token `gust login` kept for `url` (or `GUST_TOKEN`).
    pub(crate) fn new(url: &str) -> anyhow::Result<Self> {
        let token = crate::cli::token_for(url.trim_end_matches('/'));
        Self::with_token(url, token)
    }

    /// A client sending `token`, if any.
    pub(crate) fn with_token(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            return Err(crate::cli::UsageError(format!("--url / GUST_URL must be an http:// URL, not `{url}`")).into());
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(Self { base, token, inner: HyperClient::builder(TokioExecutor::new()).build(connector) })
    }

    /// The server's URL, without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns just its status and body.
    pub(crate) async fn status(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let resp = self.send(method, path, headers, Bytes::new()).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await.context("reading the answer")?.to_bytes();
        Ok((status, body))
    }

    /// Sends a request; the response body streams.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> anyhow::Result<Response<Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .body(Full::new(body))
            .context("building the request")?;
        *req.headers_mut() = headers;
        if let Some(v) = self.token.as_deref().and_then(crate::cli::bearer)
            && !req.headers().contains_key(http::header::AUTHORIZATION)
        {
            req.headers_mut().insert(http::header::AUTHORIZATION, v);
        }
        self.inner.request(req).await.map_err(|e| {
            anyhow!("cannot reach gust at {}: {e} (is `gust up` running? set --url or GUST_URL)", self.base)
        })
    }

    /// Sends a control API request and decodes its JSON answer, turning error bodies into
    /// errors that say what the server said.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, T)> {
        let resp = self.send(method, path, headers, body).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.context("reading the answer")?.to_bytes();
        if !status.is_success() {
            return Err(error_from(status, &bytes));
        }
        let value = serde_json::from_slice(&bytes).with_context(|| format!("unexpected answer from {}", self.base))?;
        Ok((status, value))
    }
}

/// An error from a non-2xx answer: the server's message and, for manifests, every problem.
pub(crate) fn error_from(status: StatusCode, bytes: &[u8]) -> anyhow::Error {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => error_text(status.as_u16(), body),
        Err(_) => anyhow!("HTTP {status}: {}", String::from_utf8_lossy(bytes).trim()),
    }
}

/// An error body as the user should read it: message, problems, build log, status.
pub(crate) fn error_text(status: u16, body: ErrorBody) -> anyhow::Error {
    {
        {
            let mut text = body.message;
            for p in &body.problems {
                if p.field.is_empty() {
                    text.push_str(&format!("\n  {}", p.message));
                } else {
                    text.push_str(&format!("\n  {}: {}", p.field, p.message));
                }
            }
            if let Some(call) = body.call_id {
                text.push_str(&format!(" (HTTP {status}, call {call})"));
            } else {
                text.push_str(&format!(" (HTTP {status})"));
            }
            if !body.log_tail.is_empty() {
                text.push_str("\nlast lines of the build:");
                for l in &body.log_tail {
                    text.push_str(&format!("\n  | {l}"));
                }
            }
            anyhow!(text)
        }
    }
}

/// Fails unless `status` is a success, with the body's message.
pub(crate) async fn check(resp: Response<Incoming>) -> anyhow::Result<Response<Incoming>> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    bail!(error_from(status, &bytes))
}
