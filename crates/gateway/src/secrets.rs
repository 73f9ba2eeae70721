//! `/api/v1/secrets`: create, replace, list and delete secrets. A value goes in as the
//! raw request body and never comes out: listings carry names, times and users only.

use gust_api::FunctionName;
use gust_api::wire::SecretRecord;
use gust_runtime::Body;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::control::json;
use crate::{Error, Gateway, Result};

/// Functions whose serving revisions list `name` in `secrets`.
fn users(gw: &Gateway, name: &str) -> Vec<String> {
    let mut out: Vec<String> = gw
        .registry
        .all()
        .iter()
        .filter(|r| r.revisions().iter().any(|rev| rev.spec.secrets.iter().any(|s| s == name)))
        .map(|r| r.newest.spec.name.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `GET /api/v1/secrets`.
///
/// # Errors
/// Store failures.
pub async fn list(gw: &Gateway) -> Result<Response<Body>> {
    let all = gw.with_store(|s| s.secrets()).await?;
    let rows: Vec<SecretRecord> = all
        .into_iter()
        .map(|s| SecretRecord {
            used_by: users(gw, &s.name),
            name: s.name,
            created_at: crate::rfc3339_ms(s.created_ms),
            updated_at: crate::rfc3339_ms(s.updated_ms),
        })
        .collect();
    Ok(json(StatusCode::OK, &rows))
}

/// `POST /api/v1/secrets/NAME` (create; 409 when it exists) or `PUT` (create or
/// replace) with the value as the body. Instances started later read the new value;
/// running ones keep theirs.
///
/// # Errors
/// 400 for a bad name, 409, 413 past [`gust_store::MAX_SECRET`].
pub async fn put(gw: &Gateway, name: &str, req: Request<Incoming>, replace: bool) -> Result<Response<Body>> {
    FunctionName::new(name).map_err(|e| Error::BadRequest { message: format!("bad secret name: {e}") })?;
    let (_, value) = crate::body::read_whole(req, gust_store::MAX_SECRET as u64).await?;
    let owned = name.to_owned();
    let created = gw.with_store(move |s| s.put_secret(&owned, &value, replace)).await?;
    tracing::info!(secret = name, created, "secret stored");
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json(status, &serde_json::json!({"name": name, "created": created})))
}

/// `DELETE /api/v1/secrets/NAME`; refused while a serving revision reads it.
///
/// # Errors
/// 404 for an unknown secret, 409 while it is used.
pub async fn remove(gw: &Gateway, name: &str) -> Result<Response<Body>> {
    let used = users(gw, name);
    if !used.is_empty() {
        return Err(Error::SecretInUse { name: name.to_owned(), functions: used.join(", ") });
    }
    let owned = name.to_owned();
    if !gw.with_store(move |s| s.delete_secret(&owned)).await? {
        return Err(gust_store::Error::SecretNotFound { name: name.to_owned() }.into());
    }
    tracing::info!(secret = name, "secret deleted");
    Ok(json(StatusCode::OK, &serde_json::json!({"name": name, "deleted": true})))
}
