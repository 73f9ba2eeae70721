//! Custom HTTP routes: a method (or any) and a path pattern that lead to a function, as
//! Fission's HTTP triggers do.
//!
//! A pattern is a sequence of segments: literals (`users`), parameters (`{id}`, one
//! segment) and a final catch-all (`{*rest}`, the rest of the path, possibly empty).
//! When several patterns match a path the most specific wins, segment by segment:
//! literal over parameter over catch-all. Two routes *conflict* when they have the same
//! shape and methods that overlap, because no path could choose between them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Paths gust itself serves; a route may not shadow them.
/// A route may still *contain* them (`/api/{*rest}`): gust's own paths are matched first.
pub const RESERVED_PREFIXES: [&str; 8] =
    ["/function/", "/async-function/", "/api/v1/", "/calls/", "/healthz", "/metrics", "/events", "/ui"];

/// Path parameters a match captured, in pattern order.
pub type Params = Vec<(String, String)>;

/// A validated path pattern such as `/users/{id}` or `/api/{*rest}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoutePattern {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

impl Segment {
    /// Lower sorts first: how specific a segment is when choosing between matches.
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::Param(_) => 1,
            Segment::Rest(_) => 2,
        }
    }
}

impl RoutePattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// A message a person can act on: what is wrong and what a valid pattern looks like.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("`{text}` must start with `/`, e.g. \"/users/{{id}}\""));
        }
        if text.contains(['?', '#', '%', ' ', '\\']) || text.chars().any(char::is_control) {
            return Err(format!("`{text}` may not contain `?`, `#`, `%`, `\\`, spaces or control characters"));
        }
        if text.len() > 1024 {
            return Err("a route path is at most 1024 characters".to_owned());
        }
        for reserved in RESERVED_PREFIXES {
            let bare = reserved.trim_end_matches('/');
            if text == bare || text.starts_with(reserved) || text.starts_with(&format!("{bare}/")) {
                return Err(format!("`{text}` is under `{bare}`, which gust itself serves"));
            }
        }
        let body = text.strip_prefix('/').unwrap_or(text);
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let parts: Vec<&str> = if body.is_empty() { Vec::new() } else { body.split('/').collect() };
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let seg = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (rest, name) = match inner.strip_prefix('*') {
                    Some(n) => (true, n),
                    None => (false, inner),
                };
                let ident = !name.is_empty()
                    && !name.as_bytes()[0].is_ascii_digit()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ident {
                    return Err(format!("`{{{inner}}}` in `{text}`: a parameter name is letters, digits and `_`"));
                }
                if names.contains(&name) {
                    return Err(format!("`{text}` names the parameter `{name}` twice"));
                }
                names.push(name);
                if rest && !last {
                    return Err(format!("`{{*{name}}}` in `{text}` must be the last segment"));
                }
                if rest { Segment::Rest(name.to_owned()) } else { Segment::Param(name.to_owned()) }
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "`{part}` in `{text}`: a parameter takes a whole segment, `{{name}}` or `{{*name}}`"
                ));
            } else if part.is_empty() && !last {
                return Err(format!("`{text}` has an empty segment (`//`)"));
            } else {
                Segment::Literal((*part).to_owned())
            };
            segments.push(seg);
        }
        Ok(Self { text: text.to_owned(), segments })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The captured parameters when `path` matches (percent-decoded), else `None`.
    pub fn matches(&self, path: &str) -> Option<Params> {
        let body = path.strip_prefix('/')?;
        let parts: Vec<&str> = if body.is_empty() { Vec::new() } else { body.split('/').collect() };
        let mut params = Vec::new();
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => {
                    if parts.get(i)? != l {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let value = parts.get(i).filter(|v| !v.is_empty())?;
                    params.push((name.clone(), percent_decode(value)));
                }
                Segment::Rest(name) => {
                    let rest = parts.get(i..).map(|p| p.join("/")).unwrap_or_default();
                    params.push((name.clone(), percent_decode(&rest)));
                    return Some(params);
                }
            }
            i += 1;
        }
        (i == parts.len()).then_some(params)
    }

    /// Orders matches: the more specific pattern compares lower.
    pub fn specificity(&self) -> Vec<u8> {
        self.segments.iter().map(Segment::rank).collect()
    }

    /// Same segments, whatever the parameters are called: no path could tell them apart.
    pub fn same_shape(&self, other: &Self) -> bool {
        self.segments.len() == other.segments.len()
            && self.segments.iter().zip(&other.segments).all(|(a, b)| match (a, b) {
                (Segment::Literal(x), Segment::Literal(y)) => x == y,
                (Segment::Param(_), Segment::Param(_)) | (Segment::Rest(_), Segment::Rest(_)) => true,
                _ => false,
            })
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for RoutePattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for RoutePattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RoutePattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An HTTP method a route answers, or any.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteMethod(Option<String>);

impl RouteMethod {
    /// Every method.
    pub const ANY: RouteMethod = RouteMethod(None);

    /// Parses `GET`, `patch`, … or `*`/`ANY` for every method.
    ///
    /// # Errors
    /// A message when `text` is not a method token.
    pub fn parse(text: &str) -> Result<Self, String> {
        let up = text.trim().to_ascii_uppercase();
        if up == "*" || up == "ANY" || up.is_empty() {
            return Ok(Self::ANY);
        }
        if up.len() > 32 || !up.bytes().all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_') {
            return Err(format!("`{text}` is not an HTTP method (GET, POST, PATCH, …, or ANY)"));
        }
        Ok(Self(Some(up)))
    }

    /// Whether a request with `method` is taken.
    pub fn accepts(&self, method: &str) -> bool {
        self.0.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
    }

    /// Whether some request would be taken by both.
    pub fn overlaps(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// Whether this answers only one method (it then wins over an any-method route).
    pub fn is_specific(&self) -> bool {
        self.0.is_some()
    }
}

impl fmt::Display for RouteMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("ANY"))
    }
}

/// One route: method and pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteSpec {
    /// The method it answers.
    pub method: RouteMethod,
    /// The path pattern.
    pub path: RoutePattern,
}

impl RouteSpec {
    /// Whether the two could take the same request with nothing to choose between them.
    pub fn conflicts_with(&self, other: &RouteSpec) -> bool {
        self.path.same_shape(&other.path) && self.method.overlaps(&other.method)
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// Decodes `%XX` escapes; invalid escapes stay as written and invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RoutePattern {
        RoutePattern::parse(s).unwrap()
    }

    /// Pattern, path, and the parameters expected (`None`: no match).
    type Case = (&'static str, &'static str, Option<&'static [(&'static str, &'static str)]>);

    #[test]
    fn patterns_match_and_capture() {
        let cases: &[Case] = &[
            ("/counter", "/counter", Some(&[])),
            ("/counter", "/counter/", None),
            ("/counter", "/count", None),
            ("/users/{id}", "/users/7", Some(&[("id", "7")])),
            ("/users/{id}", "/users/", None),
            ("/users/{id}", "/users/7/x", None),
            ("/users/{id}", "/users/a%20b", Some(&[("id", "a b")])),
            ("/api/{*rest}", "/api/a/b/c", Some(&[("rest", "a/b/c")])),
            ("/api/{*rest}", "/api", Some(&[("rest", "")])),
            ("/api/{*rest}", "/apix", None),
            ("/{a}/x/{b}", "/1/x/2", Some(&[("a", "1"), ("b", "2")])),
            ("/", "/", Some(&[])),
            ("/", "/a", None),
        ];
        for (pattern, path, want) in cases {
            let got = p(pattern).matches(path);
            let want: Option<Params> =
                want.map(|w| w.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
            assert_eq!(got, want, "{pattern} against {path}");
        }
    }

    #[test]
    fn bad_patterns_say_why() {
        for (bad, says) in [
            ("counter", "must start with `/`"),
            ("/a/{*rest}/b", "must be the last segment"),
            ("/a/{id}/{id}", "twice"),
            ("/a/x{id}", "whole segment"),
            ("/a/{1x}", "parameter name"),
            ("/a//b", "empty segment"),
            ("/a?x=1", "may not contain"),
            ("/function/x", "gust itself serves"),
            ("/api/v1/things", "gust itself serves"),
            ("/healthz", "gust itself serves"),
        ] {
            let e = RoutePattern::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(RoutePattern::parse("/apis").is_ok(), "only whole prefixes are reserved");
        assert!(RoutePattern::parse("/api/{*rest}").is_ok(), "a pattern may cover gust's paths; they match first");
    }

    #[test]
    fn conflicts_need_the_same_shape_and_overlapping_methods() {
        let r = |m: &str, path: &str| RouteSpec { method: RouteMethod::parse(m).unwrap(), path: p(path) };
        assert!(r("GET", "/users/{id}").conflicts_with(&r("GET", "/users/{name}")));
        assert!(r("ANY", "/users/{id}").conflicts_with(&r("PATCH", "/users/{x}")));
        assert!(!r("GET", "/users/{id}").conflicts_with(&r("POST", "/users/{id}")));
        assert!(!r("GET", "/users/{id}").conflicts_with(&r("GET", "/users/me")));
        assert!(!r("GET", "/api/{*rest}").conflicts_with(&r("GET", "/api/{id}")));
        assert!(p("/users/me").specificity() < p("/users/{id}").specificity());
        assert!(p("/api/{id}").specificity() < p("/api/{*rest}").specificity());
    }

    #[test]
    fn methods() {
        assert_eq!(RouteMethod::parse("patch").unwrap().to_string(), "PATCH");
        assert_eq!(RouteMethod::parse("*").unwrap(), RouteMethod::ANY);
        assert!(RouteMethod::parse("GE T").is_err());
        assert!(RouteMethod::ANY.accepts("DELETE"));
        assert!(!RouteMethod::parse("GET").unwrap().accepts("POST"));
    }
}
