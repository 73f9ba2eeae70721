//! The server's token: who may use the control API (`/api/v1/…`, `/calls/…`) and call
//! functions marked `auth = "token"`.
//!
//! Callers send it as `Authorization: Bearer TOKEN` (or as the password of HTTP Basic
//! auth, as OpenFaaS's gateway and `faas-cli` do). Only a SHA-256 digest of the token is
//! kept, and digests are compared in constant time, so neither the token's bytes nor its
//! length leak through timing. A token that authorised a call is never passed on to the
//! function.

use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest as _, Sha256};

/// The server's token and where it is required.
#[derive(Clone)]
pub struct Auth {
    digest: [u8; 32],
    /// Whether the control API requires it (always with `--auth`, or when gust listens
    /// beyond loopback). Private functions require it regardless.
    pub control: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("control", &self.control).finish_non_exhaustive()
    }
}

impl Auth {
    /// Keeps only the digest of `token`.
    pub fn new(token: &str, control: bool) -> Self {
        Self { digest: Sha256::digest(token.trim().as_bytes()).into(), control }
    }

    /// Whether `headers` carry the token, as a bearer token or a Basic password.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        headers.get_all(AUTHORIZATION).iter().filter_map(|v| v.to_str().ok()).any(|v| self.matches_header(v))
    }

    fn matches_header(&self, value: &str) -> bool {
        let value = value.trim();
        let presented = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim().to_owned(),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
                let Some(decoded) = gust_api::event::base64_decode(rest.trim()) else { return false };
                let text = String::from_utf8_lossy(&decoded).into_owned();
                match text.split_once(':') {
                    Some((_, password)) => password.to_owned(),
                    None => return false,
                }
            }
            _ => return false,
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        constant_time_eq(&digest, &self.digest)
    }
}

/// Compares two digests without an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the compiler from turning the fold back into a short-circuit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn the_token_is_accepted_as_bearer_or_basic_password_and_nothing_else_is() {
        let auth = Auth::new("s3cret\n", true);
        assert!(auth.allows(&headers("Bearer s3cret")));
        assert!(auth.allows(&headers("bearer  s3cret ")));
        // admin:s3cret, as faas-cli sends it.
        assert!(auth.allows(&headers(&format!("Basic {}", gust_api::wire::base64(b"admin:s3cret")))));
        assert!(!auth.allows(&headers("Bearer s3cre")));
        assert!(!auth.allows(&headers("Bearer s3cret2")));
        assert!(!auth.allows(&headers("s3cret")));
        assert!(!auth.allows(&headers("Basic not-base64!")));
        assert!(!auth.allows(&headers(&format!("Basic {}", gust_api::wire::base64(b"s3cret")))));
        assert!(!auth.allows(&HeaderMap::new()));
        assert!(!format!("{auth:?}").contains("digest"));
    }
}
