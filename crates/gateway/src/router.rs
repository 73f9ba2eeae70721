//! Matching a method and path to what handles it. Pure: no I/O, no hyper, tested by table.

use http::Method;

/// What a request is for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /healthz`.
    Health,
    /// Any method on `/function/{name}[@{tag}]` or `/function/{name}[@{tag}]/{path…}`.
    Invoke {
        /// The function's name (not yet validated).
        function: &'a str,
        /// The tag naming one of its revisions, if the URL has one.
        tag: Option<&'a str>,
        /// The path the function sees, always starting with `/`.
        path: &'a str,
        /// What comes before `path` (`/function/{name}[@{tag}]`), for `X-Forwarded-Prefix`.
        prefix: &'a str,
    },
    /// `POST /async-function/{name}[/{path…}]`: accept a call to run later.
    AsyncInvoke {
        /// The function's name (not yet validated).
        function: &'a str,
        /// The path the function sees, always starting with `/`.
        path: &'a str,
    },
    /// `GET /calls/{id}`.
    Call(&'a str),
    /// `POST /events`: the CloudEvents broker's ingress.
    Events,
    /// `POST /2015-03-31/functions/{name}/invocations`: the AWS Lambda Invoke API.
    LambdaInvoke(&'a str),
    /// A control API call.
    Api(Api<'a>),
    /// Nothing here.
    NotFound,
    /// The path exists but not for this method.
    MethodNotAllowed {
        /// The `Allow` header value.
        allow: &'static str,
    },
}

/// Control API operations under `/api/v1`.
#[derive(Debug, PartialEq, Eq)]
pub enum Api<'a> {
    /// `GET /api/v1/info`.
    Info,
    /// `GET /api/v1/auth`: 200 with the server's token, 401 without (`gust login` checks it).
    Auth,
    /// `GET /api/v1/functions`.
    List,
    /// `POST /api/v1/functions` with a `.tar.gz` body.
    Deploy,
    /// `GET /api/v1/functions/{name}`.
    Describe(&'a str),
    /// `DELETE /api/v1/functions/{name}`.
    Remove(&'a str),
    /// `GET /api/v1/functions/{name}/logs`.
    Logs(&'a str),
    /// `GET /api/v1/functions/{name}/traffic`.
    Traffic(&'a str),
    /// `PUT /api/v1/functions/{name}/traffic` with a `TrafficUpdate`.
    SetTraffic(&'a str),
    /// `POST /api/v1/functions/{name}/rollback` with a `RollbackRequest`.
    Rollback(&'a str),
    /// `GET /api/v1/functions/{name}/calls[?status=S&limit=N]`.
    Calls(&'a str),
    /// `POST /api/v1/functions/{name}/dlq/redrive` with an optional `{"id"}`.
    Redrive(&'a str),
    /// `POST /api/v1/functions/{name}/dlq/purge` with an optional `{"id"}`.
    Purge(&'a str),
    /// `GET /api/v1/topics`.
    Topics,
    /// `POST /api/v1/topics` with `{name, partitions, retention, retention_bytes}`.
    CreateTopic,
    /// `GET /api/v1/topics/{name}`.
    Topic(&'a str),
    /// `DELETE /api/v1/topics/{name}`.
    RemoveTopic(&'a str),
    /// `POST /api/v1/topics/{name}/messages[?key=K][&reply=true]`.
    Publish(&'a str),
    /// `GET /api/v1/secrets`.
    Secrets,
    /// `POST /api/v1/secrets/{name}` (create) or `PUT` (create or replace), the value as the body.
    PutSecret(&'a str, bool),
    /// `DELETE /api/v1/secrets/{name}`.
    RemoveSecret(&'a str),
    /// `GET /api/v1/routes`.
    Routes,
    /// `POST /api/v1/routes` with `{method, path, function}`.
    CreateRoute,
    /// `DELETE /api/v1/routes?method=M&path=P`.
    RemoveRoute,
}

/// The `key=value` pairs of a query string, values percent-decoded (`+` is a space).
pub fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, String)> {
    query.unwrap_or("").split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k, gust_api::route::percent_decode(&v.replace('+', " ")))
    })
}

/// Routes `method` + `path` (without the query).
pub fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    if let Some(rest) = path.strip_prefix("/async-function/") {
        let (function, sub) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        return match (function.is_empty(), method == Method::POST) {
            (true, _) => Route::NotFound,
            (false, true) => Route::AsyncInvoke { function, path: sub },
            (false, false) => Route::MethodNotAllowed { allow: "POST" },
        };
    }
    if let Some(name) = path.strip_prefix("/2015-03-31/functions/").and_then(|r| r.strip_suffix("/invocations")) {
        return match (name.is_empty() || name.contains('/'), method == Method::POST) {
            (true, _) => Route::NotFound,
            (false, true) => Route::LambdaInvoke(name),
            (false, false) => Route::MethodNotAllowed { allow: "POST" },
        };
    }
    if path == "/events" || path == "/events/" {
        return if method == Method::POST { Route::Events } else { Route::MethodNotAllowed { allow: "POST" } };
    }
    if let Some(id) = path.strip_prefix("/calls/") {
        if id.is_empty() || id.contains('/') {
            return Route::NotFound;
        }
        return if method == Method::GET { Route::Call(id) } else { Route::MethodNotAllowed { allow: "GET" } };
    }
    if let Some(rest) = path.strip_prefix("/function/") {
        let (function, sub) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let prefix = &path[..path.len() - rest.len() + function.len()];
        let (function, tag) = match function.split_once('@') {
            Some((f, t)) => (f, Some(t)),
            None => (function, None),
        };
        if function.is_empty() {
            return Route::NotFound;
        }
        return Route::Invoke { function, tag, path: sub, prefix };
    }
    let get = |r: Route<'a>| if method == Method::GET { r } else { Route::MethodNotAllowed { allow: "GET" } };
    match path {
        "/healthz" => get(Route::Health),
        "/api/v1/info" => get(Route::Api(Api::Info)),
        "/api/v1/auth" => get(Route::Api(Api::Auth)),
        "/api/v1/secrets" | "/api/v1/secrets/" => get(Route::Api(Api::Secrets)),
        _ if path.starts_with("/api/v1/secrets/") => {
            let name = path["/api/v1/secrets/".len()..].trim_end_matches('/');
            if name.is_empty() || name.contains('/') {
                return Route::NotFound;
            }
            match *method {
                Method::POST => Route::Api(Api::PutSecret(name, false)),
                Method::PUT => Route::Api(Api::PutSecret(name, true)),
                Method::DELETE => Route::Api(Api::RemoveSecret(name)),
                _ => Route::MethodNotAllowed { allow: "POST, PUT, DELETE" },
            }
        }
        "/api/v1/routes" | "/api/v1/routes/" => match *method {
            Method::GET => Route::Api(Api::Routes),
            Method::POST => Route::Api(Api::CreateRoute),
            Method::DELETE => Route::Api(Api::RemoveRoute),
            _ => Route::MethodNotAllowed { allow: "GET, POST, DELETE" },
        },
        "/api/v1/topics" | "/api/v1/topics/" => match *method {
            Method::GET => Route::Api(Api::Topics),
            Method::POST => Route::Api(Api::CreateTopic),
            _ => Route::MethodNotAllowed { allow: "GET, POST" },
        },
        "/api/v1/functions" | "/api/v1/functions/" => match *method {
            Method::GET => Route::Api(Api::List),
            Method::POST => Route::Api(Api::Deploy),
            _ => Route::MethodNotAllowed { allow: "GET, POST" },
        },
        _ if path.starts_with("/api/v1/topics/") => {
            let rest = path["/api/v1/topics/".len()..].trim_end_matches('/');
            match rest.split_once('/') {
                None if !rest.is_empty() => match *method {
                    Method::GET => Route::Api(Api::Topic(rest)),
                    Method::DELETE => Route::Api(Api::RemoveTopic(rest)),
                    _ => Route::MethodNotAllowed { allow: "GET, DELETE" },
                },
                Some((name, "messages")) if !name.is_empty() => match *method {
                    Method::POST => Route::Api(Api::Publish(name)),
                    _ => Route::MethodNotAllowed { allow: "POST" },
                },
                _ => Route::NotFound,
            }
        }
        _ => {
            let Some(rest) = path.strip_prefix("/api/v1/functions/") else { return Route::NotFound };
            let rest = rest.trim_end_matches('/');
            match rest.split_once('/') {
                None if !rest.is_empty() => match *method {
                    Method::GET => Route::Api(Api::Describe(rest)),
                    Method::DELETE => Route::Api(Api::Remove(rest)),
                    _ => Route::MethodNotAllowed { allow: "GET, DELETE" },
                },
                Some((name, "logs")) if !name.is_empty() => get(Route::Api(Api::Logs(name))),
                Some((name, "traffic")) if !name.is_empty() => match *method {
                    Method::GET => Route::Api(Api::Traffic(name)),
                    Method::PUT => Route::Api(Api::SetTraffic(name)),
                    _ => Route::MethodNotAllowed { allow: "GET, PUT" },
                },
                Some((name, "rollback")) if !name.is_empty() => match *method {
                    Method::POST => Route::Api(Api::Rollback(name)),
                    _ => Route::MethodNotAllowed { allow: "POST" },
                },
                Some((name, "calls")) if !name.is_empty() => get(Route::Api(Api::Calls(name))),
                Some((name, "dlq/redrive")) if !name.is_empty() => match *method {
                    Method::POST => Route::Api(Api::Redrive(name)),
                    _ => Route::MethodNotAllowed { allow: "POST" },
                },
                Some((name, "dlq/purge")) if !name.is_empty() => match *method {
                    Method::POST => Route::Api(Api::Purge(name)),
                    _ => Route::MethodNotAllowed { allow: "POST" },
                },
                _ => Route::NotFound,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(Method, &str, Route<'_>)] = &[
            (Method::GET, "/healthz", Route::Health),
            (Method::POST, "/healthz", Route::MethodNotAllowed { allow: "GET" }),
            (
                Method::POST,
                "/function/hello",
                Route::Invoke { function: "hello", tag: None, path: "/", prefix: "/function/hello" },
            ),
            (
                Method::PATCH,
                "/function/hello/",
                Route::Invoke { function: "hello", tag: None, path: "/", prefix: "/function/hello" },
            ),
            (
                Method::GET,
                "/function/hello/a/b",
                Route::Invoke { function: "hello", tag: None, path: "/a/b", prefix: "/function/hello" },
            ),
            (
                Method::GET,
                "/function/hello@v2/a",
                Route::Invoke { function: "hello", tag: Some("v2"), path: "/a", prefix: "/function/hello@v2" },
            ),
            (
                Method::GET,
                "/function/hello@",
                Route::Invoke { function: "hello", tag: Some(""), path: "/", prefix: "/function/hello@" },
            ),
            (Method::GET, "/function/@v2", Route::NotFound),
            (Method::GET, "/function/", Route::NotFound),
            (Method::GET, "/api/v1/info", Route::Api(Api::Info)),
            (Method::GET, "/api/v1/functions", Route::Api(Api::List)),
            (Method::POST, "/api/v1/functions", Route::Api(Api::Deploy)),
            (Method::PUT, "/api/v1/functions", Route::MethodNotAllowed { allow: "GET, POST" }),
            (Method::GET, "/api/v1/functions/hello", Route::Api(Api::Describe("hello"))),
            (Method::DELETE, "/api/v1/functions/hello", Route::Api(Api::Remove("hello"))),
            (Method::GET, "/api/v1/functions/hello/logs", Route::Api(Api::Logs("hello"))),
            (Method::GET, "/api/v1/functions/hello/nope", Route::NotFound),
            (Method::GET, "/api/v1/functions/hello/traffic", Route::Api(Api::Traffic("hello"))),
            (Method::PUT, "/api/v1/functions/hello/traffic", Route::Api(Api::SetTraffic("hello"))),
            (Method::POST, "/api/v1/functions/hello/traffic", Route::MethodNotAllowed { allow: "GET, PUT" }),
            (Method::POST, "/api/v1/functions/hello/rollback", Route::Api(Api::Rollback("hello"))),
            (Method::GET, "/api/v1/routes", Route::Api(Api::Routes)),
            (Method::POST, "/api/v1/routes", Route::Api(Api::CreateRoute)),
            (Method::DELETE, "/api/v1/routes", Route::Api(Api::RemoveRoute)),
            (Method::PUT, "/api/v1/routes", Route::MethodNotAllowed { allow: "GET, POST, DELETE" }),
            (Method::POST, "/async-function/hello", Route::AsyncInvoke { function: "hello", path: "/" }),
            (Method::POST, "/async-function/hello/a/b", Route::AsyncInvoke { function: "hello", path: "/a/b" }),
            (Method::GET, "/async-function/hello", Route::MethodNotAllowed { allow: "POST" }),
            (Method::POST, "/async-function/", Route::NotFound),
            (Method::GET, "/calls/0190-ab", Route::Call("0190-ab")),
            (Method::POST, "/events", Route::Events),
            (Method::PUT, "/events", Route::MethodNotAllowed { allow: "POST" }),
            (Method::POST, "/2015-03-31/functions/hello/invocations", Route::LambdaInvoke("hello")),
            (Method::POST, "/2015-03-31/functions/hello:blue/invocations", Route::LambdaInvoke("hello:blue")),
            (Method::GET, "/2015-03-31/functions/hello/invocations", Route::MethodNotAllowed { allow: "POST" }),
            (Method::POST, "/2015-03-31/functions//invocations", Route::NotFound),
            (Method::POST, "/2015-03-31/functions/a/b/invocations", Route::NotFound),
            (Method::DELETE, "/calls/0190-ab", Route::MethodNotAllowed { allow: "GET" }),
            (Method::GET, "/calls/", Route::NotFound),
            (Method::GET, "/api/v1/functions/hello/calls", Route::Api(Api::Calls("hello"))),
            (Method::POST, "/api/v1/functions/hello/dlq/redrive", Route::Api(Api::Redrive("hello"))),
            (Method::POST, "/api/v1/functions/hello/dlq/purge", Route::Api(Api::Purge("hello"))),
            (Method::GET, "/api/v1/functions/hello/dlq/purge", Route::MethodNotAllowed { allow: "POST" }),
            (Method::GET, "/api/v1/topics", Route::Api(Api::Topics)),
            (Method::POST, "/api/v1/topics", Route::Api(Api::CreateTopic)),
            (Method::GET, "/api/v1/topics/numbers", Route::Api(Api::Topic("numbers"))),
            (Method::DELETE, "/api/v1/topics/numbers", Route::Api(Api::RemoveTopic("numbers"))),
            (Method::POST, "/api/v1/topics/numbers/messages", Route::Api(Api::Publish("numbers"))),
            (Method::GET, "/api/v1/topics/numbers/messages", Route::MethodNotAllowed { allow: "POST" }),
            (Method::GET, "/api/v1/topics/numbers/other", Route::NotFound),
            (Method::GET, "/", Route::NotFound),
            (Method::GET, "/functionx/a", Route::NotFound),
        ];
        for (method, path, want) in cases {
            assert_eq!(&route(method, path), want, "{method} {path}");
        }
    }
}
