//! `gust invoke NAME [-d DATA | -f FILE] [-X METHOD] [-H 'K: V'] [--path /sub] [--async]`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::BodyExt;

use crate::client::{Client, check};

#[derive(Debug, Args)]
pub(crate) struct Invoke {
    /// The function to call.
    name: String,
    /// Request body.
    #[arg(short = 'd', long, conflicts_with = "file")]
    data: Option<String>,
    /// Read the request body from a file (`-` for stdin).
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// HTTP method; default POST with a body, GET without.
    #[arg(short = 'X', long)]
    method: Option<String>,
    /// A request header, `Name: value`; repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Path under the function, e.g. `/items/7?x=1`.
    #[arg(long, default_value = "")]
    path: String,
    /// Print the status line and headers before the body.
    #[arg(short = 'i', long)]
    include: bool,
    /// Queue the call and print its id at once (202); see it with `gust calls get ID`.
    #[arg(long = "async")]
    asynchronous: bool,
    /// With --async: where to POST the result once it is final (`X-Callback-Url`).
    #[arg(long, requires = "asynchronous")]
    callback: Option<String>,
}

impl Invoke {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        let body: Bytes = match (&self.data, &self.file) {
            (Some(d), _) => Bytes::from(d.clone()),
            (None, Some(f)) if f.as_os_str() == "-" => {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading stdin")?;
                Bytes::from(buf)
            }
            (None, Some(f)) => Bytes::from(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?),
            (None, None) => Bytes::new(),
        };
        let method = match &self.method {
            Some(m) => Method::from_bytes(m.to_uppercase().as_bytes())
                .map_err(|_| super::UsageError(format!("`{m}` is not an HTTP method")))?,
            None if self.data.is_some() || self.file.is_some() => Method::POST,
            None => Method::GET,
        };
        let mut headers = HeaderMap::new();
        for h in &self.headers {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| super::UsageError(format!("header `{h}` must look like `Name: value`")))?;
            let name = HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| super::UsageError(format!("`{k}` is not a header name")))?;
            let value = HeaderValue::from_str(v.trim())
                .map_err(|_| super::UsageError(format!("bad value for header `{k}`")))?;
            headers.append(name, value);
        }
        let sub = if self.path.is_empty() || self.path.starts_with('/') || self.path.starts_with('?') {
            self.path.clone()
        } else {
            format!("/{}", self.path)
        };
        if self.asynchronous {
            if method != Method::POST && self.method.is_some() {
                return Err(super::UsageError("--async calls are POSTs (as OpenFaaS's /async-function)".into()).into());
            }
            let method = Method::POST;
            if let Some(url) = &self.callback {
                let v = HeaderValue::from_str(url).map_err(|_| super::UsageError(format!("bad --callback `{url}`")))?;
                headers.insert(HeaderName::from_static("x-callback-url"), v);
            }
            let path = format!("/async-function/{}{sub}", self.name);
            let (_, accepted): (_, gust_api::wire::AsyncAccepted) = client.json(method, &path, headers, body).await?;
            println!("{} {} ({})", accepted.call_id, accepted.status, accepted.location);
            return Ok(());
        }
        let resp = client.send(method, &format!("/function/{}{sub}", self.name), headers, body).await?;
        if self.include {
            println!("{:?} {}", resp.version(), resp.status());
            for (k, v) in resp.headers() {
                println!("{k}: {}", v.to_str().unwrap_or("<binary>"));
            }
            println!();
        }
        let mut resp = check(resp).await?;
        // Stream the body as it comes (server-sent events show line by line).
        let mut out = std::io::stdout().lock();
        while let Some(frame) = resp.body_mut().frame().await {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => bail!("the response was cut off: {e}"),
            };
            if let Some(data) = frame.data_ref() {
                out.write_all(data)?;
                out.flush()?;
            }
        }
        Ok(())
    }
}
