//! [`Instance::check_ready`], a deploy's start-up check, and the two checks it runs: the
//! invoker's probe request and `sh -n`.

use std::path::Path;
use std::time::Duration;

use gust_api::Runtime;
use gust_store::Revision;
use tokio::io::AsyncReadExt as _;

use super::{Context, Instance, LAST_OUTPUT, Target, interpreter_dirs};
use crate::spawn::{self, Launch, SIGKILL};

impl Instance {
    /// The start-up check a deploy makes before its revision takes traffic: that this
    /// instance can serve, without sending it a call. A built-in Python or Node invoker
    /// answers gust's probe request only once the handler has loaded (and exits with
    /// its traceback when it cannot load); a shell script must parse (`sh -n`). Java and
    /// executable servers were ready when their socket accepted. On failure, the answer
    /// says how the instance ended and its last output.
    pub(crate) async fn check_ready(
        &self,
        ctx: &Context,
        deadline: tokio::time::Instant,
    ) -> std::result::Result<(), String> {
        let spec = &self.revision.spec;
        match (spec.runtime, self.target()) {
            (Runtime::Python | Runtime::Node, Some(Target::Unix(socket))) => {
                match tokio::time::timeout_at(deadline, probe(socket)).await {
                    Ok(Ok(true)) => Ok(()),
                    Ok(_) => {
                        // It closed the probe's connection: it is exiting, traceback last.
                        self.wait_dead(Duration::from_secs(2)).await;
                        Err(self.death_detail("closed its socket before its handler loaded"))
                    }
                    Err(_) => {
                        self.kill();
                        Err(format!(
                            "instance {} did not load its handler within {} (limits.timeout)",
                            self.id,
                            humantime::format_duration(spec.limits.timeout)
                        ))
                    }
                }
            }
            (_, Some(Target::Lambda(bridge))) => crate::lambda::check_ready(self, bridge, deadline).await,
            (Runtime::Shell, _) => check_shell_syntax(ctx, &self.revision, &self.scratch, deadline).await,
            _ => Ok(()),
        }
    }
}

/// Sends the built-in invoker gust's probe request; `true` when it answered 204.
async fn probe(socket: &Path) -> std::io::Result<bool> {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
    stream
        .write_all(b"GET /.gust/ready HTTP/1.1\r\nHost: gust\r\nX-Gust-Probe: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await?;
    let mut head = Vec::with_capacity(64);
    while head.len() < 12 {
        let mut buf = [0u8; 64];
        match stream.read(&mut buf).await? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    Ok(head.starts_with(b"HTTP/1.1 204"))
}

/// Parses a shell function's script without running it (`sh -n`), so a syntax error
/// fails the deploy rather than every call.
async fn check_shell_syntax(
    ctx: &Context,
    revision: &Revision,
    scratch: &Path,
    deadline: tokio::time::Instant,
) -> std::result::Result<(), String> {
    let shell = ctx.interpreters.shell.path.clone().unwrap_or_else(|| "/bin/sh".into());
    let script = revision.code_dir.join(&revision.spec.handler);
    let launch = Launch {
        program: shell.clone(),
        args: vec!["-n".into(), script.into_os_string()],
        env: spawn::base_env(scratch, &interpreter_dirs(&ctx.interpreters)),
        cwd: revision.code_dir.clone(),
        listen_fd: None,
        stdin: false,
        sandbox: None,
        isolate: None,
        cpu_seconds: None,
    };
    let child = spawn::spawn(launch).map_err(|e| format!("cannot run `{}`: {e}", shell.display()))?;
    let pid = child.id().unwrap_or(0);
    match tokio::time::timeout_at(deadline, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = text.lines().rev().take(LAST_OUTPUT).collect();
            let lines: Vec<&str> = lines.into_iter().rev().collect();
            Err(format!("`{} -n` found a syntax error: {}", shell.display(), lines.join(" | ")))
        }
        Ok(Err(e)) => Err(format!("could not check the script's syntax: {e}")),
        Err(_) => {
            spawn::signal_group(pid, SIGKILL);
            Err("checking the script's syntax took longer than limits.timeout".to_owned())
        }
    }
}
