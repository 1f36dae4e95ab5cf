//! `mcp-load`: a load generator for one streamable-HTTP MCP endpoint, used
//! by the gateway tests and `scripts/bench-gateway`. It owns the clients
//! (C concurrent ones, each calling the `echo` tool of `mcp-fixture` in a
//! loop, one request at a time), the two eras they speak, and the one JSON
//! line that reports what happened: how many calls, the failures by reason
//! and by the instance the gateway's error named (so a failure can be
//! attributed to an instance that was being removed), and latency
//! percentiles of the calls that succeeded.
//!
//! - `--era 2026`: stateless 2026-07-28 requests. Every call carries the
//!   `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers and the
//!   protocol version in its `_meta`, as `server/discover` does in the probe.
//! - `--era 2025`: a session per client. `initialize` once (and
//!   `notifications/initialized`), then calls with `Mcp-Session-Id`. A 404
//!   is the spec's "start a new session": it is counted as a
//!   re-initialisation, not a failure, and the next call starts a session.
//!
//! It runs until `--duration` has passed, `--requests` calls have been made,
//! stdin closes (`--until-stdin-closes`, for a test that decides when the
//! load ends) or SIGTERM/SIGINT, whichever comes first. Nothing is retried.

use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MODERN: &str = "2026-07-28";
const SESSION_VERSION: &str = "2025-06-18";
/// Failure texts kept whole in the report; the rest are only counted.
const SAMPLES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Era {
    /// Stateless 2026-07-28 requests.
    #[value(name = "2026")]
    Stateless,
    /// 2025-era sessions (`initialize`, then `Mcp-Session-Id`).
    #[value(name = "2025")]
    Sessions,
}

/// Calls the `echo` tool of an MCP endpoint from concurrent clients and
/// prints one JSON line of results.
#[derive(Debug, Parser)]
#[command(name = "mcp-load")]
struct Args {
    /// The streamable-HTTP endpoint, e.g. http://127.0.0.1:9470/servers/web/mcp.
    /// Given more than once, client N calls the (N mod count)th: the
    /// instances of a server called directly, to compare with a gateway.
    #[arg(long, required = true)]
    url: Vec<hyper::Uri>,
    /// Concurrent clients, each with one request in flight at a time.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, value_enum, default_value_t = Era::Stateless)]
    era: Era,
    /// Stop after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many calls in all.
    #[arg(long)]
    requests: Option<u64>,
    /// Stop when stdin closes.
    #[arg(long)]
    until_stdin_closes: bool,
    /// A call that has not been answered in this long fails.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Runtime worker threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// 2025: end each session (DELETE) after this many calls and start
    /// another, so new sessions keep arriving; by default a client keeps
    /// its session until it is gone.
    #[arg(long, value_name = "N")]
    session_calls: Option<u64>,
    /// An extra request header, `Name: value` (e.g. the gateway's token).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.duration.is_none() && args.requests.is_none() && !args.until_stdin_closes {
        eprintln!("mcp-load: give --duration, --requests or --until-stdin-closes");
        return ExitCode::from(2);
    }
    let mut headers = Vec::new();
    for h in &args.headers {
        let parsed = h.split_once(':').and_then(|(n, v)| {
            Some((
                HeaderName::from_bytes(n.trim().as_bytes()).ok()?,
                HeaderValue::from_str(v.trim()).ok()?,
            ))
        });
        match parsed {
            Some(header) => headers.push(header),
            None => {
                eprintln!("mcp-load: not a header: {h:?}");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mcp-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(run(args, headers));
    println!("{report}");
    // A blocking read of stdin cannot be cancelled; leave without it.
    std::process::exit(0)
}

/// What every client shares.
struct Shared {
    client: Client<HttpConnector, Full<Bytes>>,
    urls: Vec<hyper::Uri>,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    era: Era,
    session_calls: Option<u64>,
    stop: AtomicBool,
    /// Calls started, against `--requests`.
    issued: AtomicU64,
    limit: Option<u64>,
}

impl Shared {
    fn next_call(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        match self.limit {
            None => true,
            Some(n) => self.issued.fetch_add(1, Ordering::Relaxed) < n,
        }
    }
}

async fn run(args: Args, headers: Vec<(HeaderName, HeaderValue)>) -> Value {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(args.timeout));
    let shared = Arc::new(Shared {
        client: Client::builder(TokioExecutor::new()).build(connector),
        urls: args.url.clone(),
        headers,
        timeout: args.timeout,
        era: args.era,
        session_calls: args.session_calls,
        stop: AtomicBool::new(false),
        issued: AtomicU64::new(0),
        limit: args.requests,
    });
    let started = Instant::now();
    let stopper = tokio::spawn(stop_when(
        shared.clone(),
        args.duration,
        args.until_stdin_closes,
    ));
    let clients: Vec<_> = (0..args.clients.max(1))
        .map(|n| tokio::spawn(client(shared.clone(), n)))
        .collect();
    let mut total = Tally::default();
    for c in clients {
        match c.await {
            Ok(t) => total.merge(t),
            Err(e) => total.fail("client task failed", None, e.to_string()),
        }
    }
    let elapsed = started.elapsed();
    stopper.abort();
    total.report(&args, elapsed)
}

async fn stop_when(shared: Arc<Shared>, duration: Option<Duration>, stdin: bool) {
    use tokio::io::AsyncReadExt;
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("mcp-load: cannot install signal handlers");
        shared.stop.store(true, Ordering::Relaxed);
        return;
    };
    let stdin_closed = async {
        if !stdin {
            return std::future::pending().await;
        }
        let mut input = tokio::io::stdin();
        let mut buf = [0u8; 256];
        while matches!(input.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    let elapsed = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = stdin_closed => {}
        () = elapsed => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shared.stop.store(true, Ordering::Relaxed);
}

/// One client's (and then everyone's) results.
#[derive(Default)]
struct Tally {
    /// Latency of each successful call, in µs.
    latencies: Vec<u64>,
    failures: BTreeMap<String, u64>,
    /// Failed calls by the instance their error named (`unnamed` when none).
    by_instance: BTreeMap<String, u64>,
    samples: Vec<String>,
    /// 2025: sessions answered 404 and started again.
    reinitialized: u64,
    reinit_by_instance: BTreeMap<String, u64>,
    initialized: u64,
}

impl Tally {
    fn fail(&mut self, reason: &str, instance: Option<String>, detail: String) {
        *self.failures.entry(reason.to_owned()).or_default() += 1;
        *self
            .by_instance
            .entry(instance.unwrap_or_else(|| "unnamed".to_owned()))
            .or_default() += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push(format!("{reason}: {detail}"));
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        for (k, v) in other.failures {
            *self.failures.entry(k).or_default() += v;
        }
        for (k, v) in other.by_instance {
            *self.by_instance.entry(k).or_default() += v;
        }
        for (k, v) in other.reinit_by_instance {
            *self.reinit_by_instance.entry(k).or_default() += v;
        }
        let room = SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.into_iter().take(room));
        self.reinitialized += other.reinitialized;
        self.initialized += other.initialized;
    }

    fn report(mut self, args: &Args, elapsed: Duration) -> Value {
        self.latencies.sort_unstable();
        let ok = self.latencies.len() as u64;
        let failed: u64 = self.failures.values().sum();
        let at = |q: f64| -> u64 {
            if self.latencies.is_empty() {
                return 0;
            }
            let rank = ((q * self.latencies.len() as f64).ceil() as usize).max(1);
            self.latencies[rank.min(self.latencies.len()) - 1]
        };
        let secs = elapsed.as_secs_f64();
        json!({
            "era": match args.era { Era::Stateless => "2026", Era::Sessions => "2025" },
            "clients": args.clients,
            "count": ok + failed + self.reinitialized,
            "ok": ok,
            "failed": failed,
            "failures": self.failures,
            "failed_by_instance": self.by_instance,
            "failure_samples": self.samples,
            "reinitialized": self.reinitialized,
            "reinitialized_by_instance": self.reinit_by_instance,
            "sessions_initialized": self.initialized,
            "latency_us": {
                "p50": at(0.50),
                "p90": at(0.90),
                "p99": at(0.99),
                "max": self.latencies.last().copied().unwrap_or(0),
            },
            "elapsed_s": (secs * 1000.0).round() / 1000.0,
            "throughput_rps": if secs > 0.0 { (ok as f64 / secs).round() } else { 0.0 },
        })
    }
}

/// Why one call did not succeed.
struct Failure {
    reason: String,
    /// The instance the gateway's error message named.
    instance: Option<String>,
    detail: String,
}

impl Failure {
    fn new(reason: impl Into<String>, detail: impl Into<String>) -> Failure {
        let detail = detail.into();
        Failure {
            reason: reason.into(),
            instance: instance_named(&detail),
            detail,
        }
    }
}

enum Outcome {
    Ok,
    Failed(Failure),
    /// 2025: the session is gone (404); the client starts another.
    SessionGone(Option<String>),
}

async fn client(shared: Arc<Shared>, n: usize) -> Tally {
    let mut tally = Tally::default();
    let url = &shared.urls[n % shared.urls.len()];
    let mut session: Option<String> = None;
    let mut in_session: u64 = 0;
    let mut id: u64 = 0;
    while shared.next_call() {
        if let (Some(s), Some(n)) = (&session, shared.session_calls)
            && in_session >= n
        {
            // Ending a session is housekeeping, not a call: not counted.
            let _ = tokio::time::timeout(shared.timeout, end_session(&shared, url, s)).await;
            session = None;
        }
        if shared.era == Era::Sessions && session.is_none() {
            id += 1;
            match tokio::time::timeout(shared.timeout, initialize(&shared, url, id)).await {
                Ok(Ok(s)) => {
                    tally.initialized += 1;
                    in_session = 0;
                    session = Some(s);
                }
                Ok(Err(f)) => {
                    tally.fail(&format!("initialize: {}", f.reason), f.instance, f.detail);
                    continue;
                }
                Err(_) => {
                    tally.fail("initialize: timeout", None, format!("{:?}", shared.timeout));
                    continue;
                }
            }
        }
        id += 1;
        let text = format!("client {n} call {id}");
        let started = Instant::now();
        let outcome = match tokio::time::timeout(
            shared.timeout,
            call(&shared, url, session.as_deref(), id, &text),
        )
        .await
        {
            Ok(o) => o,
            Err(_) => Outcome::Failed(Failure::new("timeout", format!("{:?}", shared.timeout))),
        };
        match outcome {
            Outcome::Ok => {
                tally.latencies.push(started.elapsed().as_micros() as u64);
                in_session += 1;
            }
            Outcome::Failed(f) => tally.fail(&f.reason, f.instance, f.detail),
            Outcome::SessionGone(instance) => {
                tally.reinitialized += 1;
                *tally
                    .reinit_by_instance
                    .entry(instance.unwrap_or_else(|| "unnamed".to_owned()))
                    .or_default() += 1;
                session = None;
            }
        }
    }
    tally
}

fn message(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

async fn initialize(shared: &Shared, url: &hyper::Uri, id: u64) -> Result<String, Failure> {
    let request = message(
        id,
        "initialize",
        json!({
            "protocolVersion": SESSION_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp-load", "version": "0"},
        }),
    );
    let response = post(shared, url, &request, &[]).await?;
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    answer(response, id).await?;
    let session = session.ok_or_else(|| Failure::new("no session id", "initialize"))?;
    let done = post(
        shared,
        url,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        &[
            ("mcp-session-id", &session),
            ("mcp-protocol-version", SESSION_VERSION),
        ],
    )
    .await?;
    let status = done.status();
    drain(done.into_body()).await;
    if status != StatusCode::ACCEPTED {
        return Err(Failure::new(
            format!("http {}", status.as_u16()),
            "notifications/initialized",
        ));
    }
    Ok(session)
}

async fn end_session(shared: &Shared, url: &hyper::Uri, session: &str) {
    let mut request = Request::delete(url.clone())
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", SESSION_VERSION);
    for (name, value) in &shared.headers {
        request = request.header(name, value);
    }
    if let Ok(request) = request.body(Full::new(Bytes::new()))
        && let Ok(response) = shared.client.request(request).await
    {
        drain(response.into_body()).await;
    }
}

async fn call(
    shared: &Shared,
    url: &hyper::Uri,
    session: Option<&str>,
    id: u64,
    text: &str,
) -> Outcome {
    let arguments = json!({"text": text});
    let (request, headers): (Value, Vec<(&str, &str)>) = match (shared.era, session) {
        (Era::Sessions, Some(session)) => (
            message(
                id,
                "tools/call",
                json!({"name": "echo", "arguments": arguments}),
            ),
            vec![
                ("mcp-session-id", session),
                ("mcp-protocol-version", SESSION_VERSION),
            ],
        ),
        _ => (
            message(
                id,
                "tools/call",
                json!({
                    "name": "echo",
                    "arguments": arguments,
                    "_meta": {
                        "io.modelcontextprotocol/protocolVersion": MODERN,
                        "io.modelcontextprotocol/clientCapabilities": {},
                        "io.modelcontextprotocol/clientInfo": {"name": "mcp-load", "version": "0"},
                    },
                }),
            ),
            vec![
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo"),
            ],
        ),
    };
    let response = match post(shared, url, &request, &headers).await {
        Ok(r) => r,
        Err(f) => return Outcome::Failed(f),
    };
    if session.is_some() && response.status() == StatusCode::NOT_FOUND {
        let detail = error_text(response).await;
        return Outcome::SessionGone(instance_named(&detail));
    }
    let answer = match answer(response, id).await {
        Ok(a) => a,
        Err(f) => return Outcome::Failed(f),
    };
    let echoed = answer["result"]["content"][0]["text"].as_str();
    if echoed == Some(text) {
        Outcome::Ok
    } else {
        Outcome::Failed(Failure::new("wrong answer", answer.to_string()))
    }
}

async fn post(
    shared: &Shared,
    url: &hyper::Uri,
    body: &Value,
    headers: &[(&str, &str)],
) -> Result<Response<Incoming>, Failure> {
    let mut request = Request::post(url.clone())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    for (name, value) in &shared.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| Failure::new("bad request", e.to_string()))?;
    shared
        .client
        .request(request)
        .await
        .map_err(|e| Failure::new("transport", error_chain(&e)))
}

/// The JSON-RPC answer with `id`, from a JSON body or an SSE stream; the
/// body is read to its end so the connection can be used again.
async fn answer(response: Response<Incoming>, id: u64) -> Result<Value, Failure> {
    let status = response.status();
    if status != StatusCode::OK {
        let detail = error_text(response).await;
        return Err(Failure::new(format!("http {}", status.as_u16()), detail));
    }
    let is_sse = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut found = None;
    if is_sse {
        let mut events = sse_stream::SseStream::new(response.into_body());
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| Failure::new("body", e.to_string()))?;
            let Some(data) = event.data else { continue };
            if let Ok(m) = serde_json::from_str::<Value>(&data)
                && m["id"] == id
            {
                found = Some(m);
            }
        }
    } else {
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::new("body", error_chain(&e)))?
            .to_bytes();
        found = serde_json::from_slice::<Value>(&body)
            .ok()
            .filter(|m| m["id"] == id);
    }
    let found = found.ok_or_else(|| Failure::new("no answer", format!("id {id}")))?;
    if let Some(error) = found.get("error") {
        return Err(Failure::new(
            format!("rpc error {}", error["code"]),
            error.to_string(),
        ));
    }
    Ok(found)
}

/// The JSON-RPC error message of a refused request (the gateway's names the
/// instance), else the body as text.
async fn error_text(response: Response<Incoming>) -> String {
    let body = match response.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return format!("(unreadable body: {})", error_chain(&e)),
    };
    serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|m| m["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())
}

async fn drain(body: Incoming) {
    let _ = body.collect().await;
}

/// The word after "instance " in a gateway error: `instance 01k... of web
/// did not answer`, `its instance 01k... is no longer RUNNING`.
fn instance_named(text: &str) -> Option<String> {
    let rest = text.split("instance ").nth(1)?;
    let id: String = rest
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    (!id.is_empty()).then_some(id)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
