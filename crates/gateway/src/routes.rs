//! The control API for custom routes under `/api/v1/routes` (`gust route …`).

use bytes::Bytes;
use gust_api::wire::{RouteRequest, RouteRow};
use gust_api::{FunctionName, RouteMethod, RoutePattern, RouteSpec};
use gust_runtime::Body;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;

use crate::control::json;
use crate::router::query_pairs;
use crate::{Error, Gateway, Result};

/// The largest route request body read.
const MAX_BODY: usize = 64 << 10;

/// `GET /api/v1/routes`, from the registry's copy: no store read.
pub fn list(gw: &Gateway) -> Result<Response<Body>> {
    let rows: Vec<RouteRow> = gw.registry.routes().iter().map(|r| row(gw, r.clone())).collect();
    Ok(json(StatusCode::OK, &rows))
}

/// `POST /api/v1/routes` with `{"method": "PATCH", "path": "/counter", "function": "counter"}`.
pub async fn create(gw: &Gateway, req: Request<Incoming>) -> Result<Response<Body>> {
    let bytes: Bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| Error::BadRequest { message: format!("could not read the request: {e}") })?
        .to_bytes();
    let asked: RouteRequest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::BadRequest { message: format!("expected {{\"method\", \"path\", \"function\"}}: {e}") })?;
    let spec = spec(asked.method.as_deref().unwrap_or("ANY"), &asked.path)?;
    let function =
        FunctionName::new(&asked.function).map_err(|_| Error::FunctionNotFound { function: asked.function.clone() })?;
    let added = gw.with_store(move |s| s.add_route(&function, &spec)).await?;
    gw.reload_routes().await?;
    Ok(json(StatusCode::CREATED, &row(gw, added)))
}

/// `DELETE /api/v1/routes?method=PATCH&path=/counter` (values percent-encoded).
pub async fn remove(gw: &Gateway, query: Option<&str>) -> Result<Response<Body>> {
    let mut method = None;
    let mut path = None;
    for (k, v) in query_pairs(query) {
        match k {
            "method" => method = Some(v),
            "path" => path = Some(v),
            _ => {}
        }
    }
    let path = path.ok_or_else(|| Error::BadRequest { message: "say which route: ?method=M&path=P".into() })?;
    let spec = spec(method.as_deref().unwrap_or("ANY"), &path)?;
    let removed = gw.with_store(move |s| s.remove_route(&spec)).await?;
    gw.reload_routes().await?;
    Ok(json(StatusCode::OK, &row(gw, removed)))
}

fn spec(method: &str, path: &str) -> Result<RouteSpec> {
    let method = RouteMethod::parse(method).map_err(|message| Error::BadRequest { message })?;
    let path = RoutePattern::parse(path).map_err(|message| Error::BadRequest { message })?;
    Ok(RouteSpec { method, path })
}

fn row(gw: &Gateway, r: gust_store::StoredRoute) -> RouteRow {
    RouteRow {
        method: r.spec.method.to_string(),
        url: format!("{}{}", gw.base_url, r.spec.path),
        path: r.spec.path.to_string(),
        function: r.function,
        origin: r.origin.as_str().to_owned(),
    }
}
