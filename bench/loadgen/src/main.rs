//! The load generator and no-op server behind `bench/run`.
//!
//! `gust-loadgen run` is a closed-loop HTTP/1.1 client: each of `-c` workers holds one
//! keep-alive connection (TCP or a Unix socket) and sends the next request as soon as the
//! previous answer's body has been read, for a fixed time or number of requests. It
//! reports requests per second and latency percentiles, as text or JSON. Closed loop on
//! purpose: the figures say what a fixed number of callers get, and the load adapts to
//! the server instead of piling up in socket buffers.
//!
//! `gust-loadgen serve` is the no-op function server: a hyper HTTP/1.1 server answering
//! every request with an empty 200, on `GUST_SOCKET` when set (as `gust` gives an `exec`
//! function with `protocol = "http"`), else on `PORT`. The benchmark calls it through the
//! gateway and directly on its socket; the difference is the gateway's cost. A manifest
//! names an executable but no arguments, so, busybox-style, the binary also serves when
//! it is started under the name `noop-server`.
//!
//! `gust-loadgen proxy` is the floor the gateway is held against: the plainest hyper
//! reverse proxy, TCP in, Unix socket out, keep-alive connections pooled, on a
//! multi-threaded runtime like gust's, and nothing else (no routing, limits, records
//! or scaling). What gust costs beyond it is what gust's own work costs.
//!
//! `gust-loadgen relay` is the floor under every proxy: bytes copied between a TCP
//! connection and a Unix socket connection on one epoll thread, no HTTP at all (see
//! [`relay`]). What the relay costs is what this kernel charges for one more hop.

mod relay;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

#[derive(Parser)]
#[command(about = "Closed-loop HTTP/1.1 load generator and no-op server for gust's benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send requests from N concurrent keep-alive connections and report throughput and latency.
    Run(RunArgs),
    /// Serve an empty 200 to every request on $GUST_SOCKET, else 127.0.0.1:$PORT.
    Serve,
    /// Forward every request on 127.0.0.1:PORT to a server on a Unix socket, and nothing else.
    Proxy {
        /// TCP port to listen on, on 127.0.0.1.
        #[arg(long)]
        port: u16,
        /// The Unix socket of the server behind it.
        #[arg(long)]
        to: PathBuf,
    },
    /// Copy bytes between 127.0.0.1:PORT and a Unix socket on one epoll thread: no HTTP.
    Relay {
        /// TCP port to listen on, on 127.0.0.1.
        #[arg(long)]
        port: u16,
        /// The Unix socket of the server behind it.
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The URL to call; its host and port are where TCP connections go unless --unix is given.
    url: String,
    /// Connect to this Unix socket instead of the URL's host (the URL still gives path and Host).
    #[arg(long)]
    unix: Option<PathBuf>,
    /// Concurrent connections, each with one request in flight.
    #[arg(short, long, default_value_t = 1)]
    concurrency: usize,
    /// How long to measure, after the warm-up.
    #[arg(short, long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many measured requests instead (over all connections).
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Requests sent before measuring starts, not counted.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// HTTP method.
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    /// Request body.
    #[arg(long, default_value = "")]
    body: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    /// Latency of every measured request that got a 2xx, in nanoseconds.
    latencies: Vec<u64>,
    /// Measured requests answered with anything but 2xx.
    bad_status: u64,
    /// The first non-2xx status seen, to say what went wrong.
    first_bad: Option<u16>,
}

fn main() -> anyhow::Result<()> {
    let as_server = std::env::args_os()
        .next()
        .and_then(|a| PathBuf::from(a).file_name().map(|n| n == "noop-server"))
        .unwrap_or(false);
    let cli = if as_server { Cli { command: Command::Serve } } else { Cli::parse() };
    if let Command::Relay { port, to } = &cli.command {
        return relay::relay(*port, to);
    }
    if let Command::Proxy { port, to } = cli.command {
        // As many worker threads as cores, as gust's runtime has.
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return rt.block_on(proxy(port, to));
    }
    // One thread: on a small machine the generator should not take every core from the
    // server it measures.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match cli.command {
        Command::Run(args) => rt.block_on(run(args)),
        Command::Serve | Command::Proxy { .. } | Command::Relay { .. } => rt.block_on(serve()),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let uri: hyper::Uri = args.url.parse().with_context(|| format!("bad URL {}", args.url))?;
    let authority = uri.authority().context("the URL needs a host")?.clone();
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let start_at = Instant::now() + args.warmup;
    let stop_at = start_at + args.duration;
    let budget = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
        args.requests.map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX)),
    ));
    let args = std::sync::Arc::new(args);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (args, uri, authority, budget) = (args.clone(), uri.clone(), authority.clone(), budget.clone());
        tasks.spawn(async move {
            let mut sender = connect(&args, &authority).await?;
            let mut tally = Tally::default();
            loop {
                let now = Instant::now();
                let measuring = now >= start_at;
                if measuring && args.requests.is_none() && now >= stop_at {
                    break;
                }
                if measuring && budget.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) <= 0 {
                    break;
                }
                let req = Request::builder()
                    .method(args.method.as_str())
                    .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
                    .header(hyper::header::HOST, authority.as_str())
                    .body(Full::new(Bytes::from(args.body.clone())))?;
                let sent = Instant::now();
                let resp = sender.send_request(req).await.context("request failed")?;
                let status = resp.status();
                resp.into_body().collect().await.context("reading the response body")?;
                let took = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                if measuring {
                    if status.is_success() {
                        tally.latencies.push(took);
                    } else {
                        tally.bad_status += 1;
                        tally.first_bad.get_or_insert(status.as_u16());
                    }
                }
                sender.ready().await.context("connection closed by the server")?;
            }
            anyhow::Ok(tally)
        });
    }
    let mut all = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        let t = joined??;
        all.latencies.extend(t.latencies);
        all.bad_status += t.bad_status;
        all.first_bad = all.first_bad.or(t.first_bad);
    }
    // Workers stop at the first answer past the deadline, so this is the measured span.
    let elapsed = start_at.elapsed();
    report(&args, &mut all, elapsed)
}

/// Opens one keep-alive HTTP/1.1 connection.
async fn connect(
    args: &RunArgs,
    authority: &hyper::http::uri::Authority,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let (sender, conn) = match &args.unix {
        Some(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .with_context(|| format!("connecting to {}", path.display()))?;
            let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            (s, futures_boxed(c))
        }
        None => {
            let stream = tokio::net::TcpStream::connect(authority.as_str())
                .await
                .with_context(|| format!("connecting to {authority}"))?;
            stream.set_nodelay(true)?;
            let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            (s, futures_boxed(c))
        }
    };
    tokio::spawn(conn);
    Ok(sender)
}

type ConnFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Erases the connection driver's type so TCP and Unix connections share one path.
fn futures_boxed<F, E>(conn: F) -> ConnFuture
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
{
    Box::pin(async move {
        let _ = conn.await;
    })
}

fn report(args: &RunArgs, all: &mut Tally, elapsed: Duration) -> anyhow::Result<()> {
    all.latencies.sort_unstable();
    let ok = all.latencies.len() as u64;
    let pct = |p: f64| -> f64 {
        if all.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * all.latencies.len() as f64).ceil() as usize;
        all.latencies[rank.clamp(1, all.latencies.len()) - 1] as f64 / 1e3
    };
    let secs = elapsed.as_secs_f64();
    let rps = if secs > 0.0 { (ok + all.bad_status) as f64 / secs } else { f64::NAN };
    let (p50, p90, p99, max) = (pct(50.0), pct(90.0), pct(99.0), pct(100.0));
    if args.json {
        let v = serde_json::json!({
            "url": args.url,
            "unix": args.unix,
            "concurrency": args.concurrency,
            "seconds": secs,
            "ok": ok,
            "non_2xx": all.bad_status,
            "first_non_2xx": all.first_bad,
            "rps": rps,
            "p50_us": p50,
            "p90_us": p90,
            "p99_us": p99,
            "max_us": max,
        });
        println!("{v}");
    } else {
        println!(
            "{} c={} {:.1}s: {ok} ok, {} non-2xx, {rps:.0} req/s, p50 {p50:.0} us, p90 {p90:.0} us, p99 {p99:.0} us, max {max:.0} us",
            args.unix.as_ref().map_or(args.url.clone(), |u| format!("unix:{}", u.display())),
            args.concurrency,
            secs,
            all.bad_status
        );
    }
    if ok == 0 {
        bail!("no request succeeded (first status {:?})", all.first_bad);
    }
    Ok(())
}

async fn serve() -> anyhow::Result<()> {
    let svc = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
        Ok::<_, std::convert::Infallible>(hyper::Response::new(Empty::<Bytes>::new()))
    });
    if let Some(path) = std::env::var_os("GUST_SOCKET") {
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)
            .with_context(|| format!("binding {}", PathBuf::from(&path).display()))?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
        }
    }
    let port: u16 = std::env::var("PORT").context("set GUST_SOCKET or PORT")?.parse().context("PORT is not a port")?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
    }
}

type Upstream = hyper::client::conn::http1::SendRequest<hyper::body::Incoming>;

/// The plainest reverse proxy: each request takes an idle upstream connection (or opens
/// one), sends the request as it came, and streams the answer back; the connection goes
/// back to the pool at once, and its next user waits until this answer has ended.
async fn proxy(port: u16, to: PathBuf) -> anyhow::Result<()> {
    let idle: std::sync::Arc<std::sync::Mutex<Vec<Upstream>>> = std::sync::Arc::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (idle, to) = (idle.clone(), to.clone());
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let (idle, to) = (idle.clone(), to.clone());
            async move {
                let kept = idle.lock().map_err(|_| anyhow::anyhow!("pool poisoned"))?.pop();
                let ready = match kept {
                    Some(mut c) => c.ready().await.is_ok().then_some(c),
                    None => None,
                };
                let mut conn = match ready {
                    Some(c) => c,
                    None => {
                        let s = tokio::net::UnixStream::connect(&to).await?;
                        let (c, driver) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
                        tokio::spawn(driver);
                        c
                    }
                };
                let resp = conn.send_request(req).await?;
                // The next user waits in ready() for this answer's body to end.
                idle.lock().map_err(|_| anyhow::anyhow!("pool poisoned"))?.push(conn);
                Ok::<_, anyhow::Error>(resp)
            }
        });
        tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
    }
}
