//! The `stdio` protocol (the OpenFaaS classic watchdog contract): one process per call,
//! the body on stdin and as the first argument, request metadata in `Http_*` variables,
//! stdout as the response. A non-zero exit is a 500 whose body names the status and the
//! last lines of stderr; everything on stderr goes to the function's log.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use gust_api::Runtime;
use http::{HeaderValue, Request, Response, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::body::{Body, full};
use crate::instance::{gust_env, interpreter_dirs};
use crate::pool::Slot;
use crate::spawn::{self, Launch, SIGKILL};
use crate::{Error, Result};

/// The body is passed as `$1` only up to this size (Linux caps one argument at 128 KiB).
pub const MAX_ARG_BODY: usize = 128 * 1024;
/// The most a stdio function may write to stdout for one call.
pub const MAX_OUTPUT: u64 = 64 << 20;
/// Lines of stderr quoted in a failed call's error body.
const STDERR_TAIL: usize = 5;

/// Runs one process for the call on the slot's (stdio) instance.
///
/// # Errors
/// [`Error::BodyTooLarge`], [`Error::BadRequest`], [`Error::Timeout`] (the process group is
/// killed), [`Error::StartFailed`] when the handler cannot run.
pub async fn call(
    slot: Slot,
    req: Request<Body>,
    deadline: tokio::time::Instant,
    exceeded: Arc<AtomicBool>,
) -> Result<Response<Body>> {
    let instance = slot.instance().clone();
    let ctx = slot.context().clone();
    let revision = &instance.revision;
    let spec = &revision.spec;
    let (parts, body) = req.into_parts();
    let body = crate::body::collect(body, deadline, &exceeded, spec).await?;

    let mut env = spawn::base_env(&instance.scratch, &interpreter_dirs(&ctx.interpreters));
    env.extend(gust_env(revision, &instance.id, &ctx.pycache_dir));
    env.extend(instance.secrets.env.iter().cloned());
    env.extend(cgi_env(&parts, body.len()));
    env.push(("GUST_CALL_ID".into(), slot.call().as_str().into()));
    let arg: OsString = if body.len() <= MAX_ARG_BODY && !body.contains(&0) {
        OsString::from(OsStr::from_bytes(&body))
    } else {
        OsString::new()
    };
    let script = revision.code_dir.join(&spec.handler);
    let (program, args) = match spec.runtime {
        Runtime::Shell => {
            let shell = ctx.interpreters.shell.path.clone().unwrap_or_else(|| "/bin/sh".into());
            (shell, vec![script.into_os_string(), arg])
        }
        _ => (script, vec![arg]),
    };
    let launch = Launch {
        program: program.clone(),
        args,
        env,
        cwd: revision.code_dir.clone(),
        listen_fd: None,
        // An empty body is /dev/null: the same end of input, one pipe fewer to make.
        stdin: !body.is_empty(),
        sandbox: match instance.isolate {
            // Each call's process adds rules for its own /proc and /tmp to its ruleset
            // (see spawn.rs), so the ruleset is made for the call.
            Some(_) => crate::confine::sandbox_for(&ctx, revision, &instance.dir, None)?,
            None => instance.sandbox.clone(),
        },
        isolate: instance.isolate.clone(),
        // One call's process: no more CPU than its deadline leaves, on any number of threads.
        cpu_seconds: Some(spec.limits.timeout.as_secs().saturating_add(1)),
    };
    // A sandbox is entered between fork and exec, which posix_spawn has no room for.
    let spawned = if launch.sandbox.is_some() || launch.isolate.is_some() {
        spawn::spawn(launch)
    } else {
        spawn::spawn_call(launch)
    };
    let mut child = spawned.map_err(|e| Error::StartFailed {
        function: spec.name.to_string(),
        detail: format!("cannot run `{}`: {e}", program.display()),
    })?;
    let pid = child.id().unwrap_or(0);

    // Its input, output and exit are driven in this one task: no tasks to spawn, and no
    // wake-ups handed between worker threads for a call that is mostly one process.
    let stdin = child.stdin.take();
    let writer = async move {
        if let Some(mut stdin) = stdin {
            // A handler that never reads stdin closes it early; that is not an error.
            let _ = stdin.write_all(&body).await;
            let _ = stdin.shutdown().await;
        }
    };
    let stdout = child.stdout.take();
    let reader = async move {
        let mut out = Vec::new();
        if let Some(s) = stdout {
            let mut s = s.take(MAX_OUTPUT + 1);
            let _ = s.read_to_end(&mut out).await;
        }
        out
    };
    let stderr = child.stderr.take();
    let logs = &ctx.logs;
    let call_id = slot.call().to_string();
    let errors = async {
        let mut tail: Vec<String> = Vec::new();
        if let Some(s) = stderr {
            let mut lines = BufReader::new(s).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tail.len() == STDERR_TAIL {
                    tail.remove(0);
                }
                tail.push(line.clone());
                instance.output(logs, "stderr", line, Some(call_id.clone()));
            }
        }
        tail
    };
    let mut io = std::pin::pin!(async { tokio::join!(writer, reader, errors) });
    let mut io_done = None;
    let waited = loop {
        tokio::select! {
            waited = tokio::time::timeout_at(deadline, child.wait()) => break waited,
            done = &mut io, if io_done.is_none() => io_done = Some(done),
        }
    };
    let status = match waited {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            spawn::signal_group(pid, SIGKILL);
            return Err(Error::Crashed {
                function: spec.name.to_string(),
                detail: format!("could not wait for the process: {e}"),
            });
        }
        Err(_) => {
            spawn::signal_group(pid, SIGKILL);
            let _ = child.wait().await;
            return Err(Error::Timeout { function: spec.name.to_string(), timeout: spec.limits.timeout });
        }
    };
    // The group may hold background children still writing to our pipes; they go too.
    spawn::signal_group(pid, SIGKILL);
    let ((), out, tail) = match io_done {
        Some(done) => done,
        None => io.await,
    };
    drop(slot);

    if !status.success() {
        let how = crate::instance::describe_exit(status);
        let mut message = format!("the function {how}");
        if !tail.is_empty() {
            message.push_str(&format!("; stderr: {}", tail.join(" | ")));
        }
        return Ok(json_error(StatusCode::INTERNAL_SERVER_ERROR, "function_failed", &message));
    }
    if out.len() as u64 > MAX_OUTPUT {
        return Ok(json_error(
            StatusCode::BAD_GATEWAY,
            "output_too_large",
            &format!("the function wrote more than {MAX_OUTPUT} bytes to stdout"),
        ));
    }
    let ctype = sniff(&out);
    let mut resp = Response::new(full(Bytes::from(out)));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    Ok(resp)
}

/// `Http_Method`, `Http_Path`, `Http_Query`, `Http_ContentLength` and one `Http_<Header>`
/// per request header (`Content-Type` → `Http_Content_Type`), as the classic watchdog sets.
pub fn cgi_env(parts: &http::request::Parts, len: usize) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = vec![
        ("Http_Method".into(), parts.method.as_str().into()),
        ("Http_Path".into(), parts.uri.path().into()),
        ("Http_Query".into(), parts.uri.query().unwrap_or("").into()),
        ("Http_ContentLength".into(), len.to_string().into()),
    ];
    for (name, value) in &parts.headers {
        let key = format!("Http_{}", canonical_header(name.as_str()));
        let value = OsString::from(OsStr::from_bytes(value.as_bytes()));
        if let Some(existing) = env.iter_mut().find(|(k, _)| *k == key) {
            existing.1.push(",");
            existing.1.push(value);
        } else {
            env.push((key, value));
        }
    }
    env
}

/// `content-type` → `Content_Type` (Go's canonical header form, dashes to underscores).
fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// A JSON object or array is `application/json`; other UTF-8 is text; the rest is bytes.
fn sniff(out: &[u8]) -> &'static str {
    let trimmed = out.trim_ascii();
    if (trimmed.starts_with(b"{") || trimmed.starts_with(b"["))
        && serde_json::from_slice::<serde_json::Value>(trimmed).is_ok()
    {
        "application/json"
    } else if std::str::from_utf8(out).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

/// An error response in gust's JSON shape, for failures the function itself reported.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": code, "message": message });
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_follow_the_watchdog() {
        assert_eq!(canonical_header("content-type"), "Content_Type");
        assert_eq!(canonical_header("x-call-id"), "X_Call_Id");
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"{\"a\":1}\n"), "application/json");
        assert_eq!(sniff(b"{not json"), "text/plain; charset=utf-8");
        assert_eq!(sniff(b"hello"), "text/plain; charset=utf-8");
        assert_eq!(sniff(&[0xff, 0xfe]), "application/octet-stream");
    }

    #[test]
    fn cgi_variables() {
        let req =
            Request::builder().method("PATCH").uri("/a/b?x=1").header("Content-Type", "text/plain").body(()).unwrap();
        let (parts, ()) = req.into_parts();
        let env = cgi_env(&parts, 5);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_string_lossy().into_owned());
        assert_eq!(get("Http_Method").as_deref(), Some("PATCH"));
        assert_eq!(get("Http_Path").as_deref(), Some("/a/b"));
        assert_eq!(get("Http_Query").as_deref(), Some("x=1"));
        assert_eq!(get("Http_Content_Type").as_deref(), Some("text/plain"));
        assert_eq!(get("Http_ContentLength").as_deref(), Some("5"));
    }
}
