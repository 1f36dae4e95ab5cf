//! Readiness: whether a server really speaks MCP, and so may be RUNNING.
//!
//! [`readiness`] is the one entry point: it takes a [`Connection`] (a URL,
//! or a byte stream already connected to a server's stdin and stdout) and
//! tells whether an MCP handshake succeeds, with the reason, or the identity
//! the server proved. It knows nothing of runtimes: whoever holds the
//! connection (a runtime's attach, a child process's pipes) hands it over.
//!
//! The handshake itself:
//! - [`probe_url`]: one attempt over streamable HTTP or legacy HTTP+SSE,
//!   with the server's headers (a token, say) on every request;
//! - [`probe_stdio`]: one attempt over already-connected stdio streams;
//! - [`retry`]: attempts with back-off until a deadline (for `mcpctl probe`).
//!
//! Each attempt tries `server/discover` (protocol 2026-07-28) first and falls
//! back to `initialize` (2025-11-25 and older) when the server does not know
//! it or stays silent. See `mcp` for the era rules, `http` and `stdio` for
//! the transports.

mod http;
mod mcp;
mod stdio;

pub use http::HttpTransport;
pub(crate) use http::legacy_pipe;
pub(crate) use mcp::{Channel, Reply};
pub use mcp::{DISCOVER_VERSION, Era, INITIALIZE_VERSION, ProbeError, ProbeInfo};

use crate::model::{HttpHeader, McpIdentity, Probe};
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// How to reach a server for one handshake.
pub enum Connection<'a> {
    /// An HTTP(S) MCP endpoint: streamable HTTP, or legacy HTTP+SSE. Every
    /// request carries `headers` (sensitive ones marked so).
    Url {
        url: &'a str,
        headers: &'a [HttpHeader],
    },
    /// A server's stdout (`reader`) and stdin (`writer`), already connected.
    Stdio {
        reader: Pin<Box<dyn AsyncRead + Send>>,
        writer: Pin<Box<dyn AsyncWrite + Send>>,
    },
}

/// A server's output to read and its input to write, as byte streams of
/// one JSON-RPC message per line: a stdio server's, or a legacy HTTP+SSE
/// server's made to look like one ([`legacy_pipe`]).
pub struct Pipe {
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    pub writer: Pin<Box<dyn AsyncWrite + Send>>,
}

/// The outcome of a readiness check, with the identity behind a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub probe: Probe,
    pub identity: Option<McpIdentity>,
}

impl Readiness {
    pub fn not_ready(why: impl Into<String>) -> Readiness {
        Readiness {
            probe: Probe::NotReady(why.into()),
            identity: None,
        }
    }
}

/// One handshake attempt over `conn`, bounded by `attempt_timeout`.
pub async fn readiness(conn: Connection<'_>, attempt_timeout: Duration) -> Readiness {
    let result = match conn {
        Connection::Url { url, headers } => {
            probe_url(url, headers, HttpTransport::Auto, attempt_timeout).await
        }
        Connection::Stdio { reader, writer } => probe_stdio(reader, writer, attempt_timeout).await,
    };
    readiness_of(result)
}

/// A handshake's outcome as readiness: the reason says who answered, in
/// which era, over what, and how fast.
pub fn readiness_of(result: Result<ProbeInfo, ProbeError>) -> Readiness {
    match result {
        Ok(info) => {
            let identity = McpIdentity {
                handshake: format!("{} ({})", info.protocol_version, info.era.handshake()),
                protocol_version: info.protocol_version.clone(),
                server_name: info.server_name.clone(),
                server_version: info.server_version.clone(),
                transport: info.transport.to_owned(),
                latency_ms: (info.latency.as_secs_f64() * 1000.0 * 100.0).round() / 100.0,
            };
            let name = if info.server_name.is_empty() {
                "unnamed server".to_owned()
            } else {
                info.server_name.clone()
            };
            let how = format!(
                "{name} {} speaks MCP {} via {} over {} in {:.1} ms",
                info.server_version,
                info.protocol_version,
                info.era.handshake(),
                info.transport,
                identity.latency_ms
            );
            Readiness {
                probe: Probe::Ready(how.replace("  ", " ")),
                identity: Some(identity),
            }
        }
        Err(e) => Readiness::not_ready(e.to_string()),
    }
}

/// One probe attempt against an HTTP(S) MCP endpoint, sending `headers`
/// with every request. Every wait, fallbacks included, fits in
/// `attempt_timeout`: a server that accepts and never answers gives
/// [`ProbeError::Timeout`]. No error repeats a header's value.
pub async fn probe_url(
    url: &str,
    headers: &[HttpHeader],
    transport: HttpTransport,
    attempt_timeout: Duration,
) -> Result<ProbeInfo, ProbeError> {
    let started = tokio::time::Instant::now();
    let (identity, transport, answered) =
        http::probe(url, headers, transport, attempt_timeout).await?;
    Ok(info(identity, transport, answered - started))
}

/// One probe attempt over streams already connected to a server's stdin
/// (`writer`) and stdout (`reader`). Non-JSON-RPC stdout lines are skipped.
pub async fn probe_stdio<R, W>(
    reader: R,
    writer: W,
    attempt_timeout: Duration,
) -> Result<ProbeInfo, ProbeError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let started = tokio::time::Instant::now();
    let mut channel = stdio::Stdio::new(reader, writer);
    let identity = mcp::handshake(
        &mut channel,
        started + attempt_timeout,
        attempt_timeout,
        true,
    )
    .await?;
    Ok(info(identity, "stdio", started.elapsed()))
}

/// One handshake attempt over a channel that already multiplexes its
/// messages (the stdio bridge), reported as over `transport`.
pub(crate) async fn probe_channel<C: Channel>(
    channel: &mut C,
    transport: &'static str,
    attempt_timeout: Duration,
) -> Result<ProbeInfo, ProbeError> {
    let started = tokio::time::Instant::now();
    let identity =
        mcp::handshake(channel, started + attempt_timeout, attempt_timeout, true).await?;
    Ok(info(identity, transport, started.elapsed()))
}

fn info(identity: mcp::Identity, transport: &'static str, latency: Duration) -> ProbeInfo {
    ProbeInfo {
        era: identity.era,
        protocol_version: identity.protocol_version,
        server_name: identity.server_name,
        server_version: identity.server_version,
        transport,
        latency,
    }
}

/// Pauses between attempts: 100 ms doubling to 2 s.
pub const BACKOFF: crate::model::Doubling =
    crate::model::Doubling::new(Duration::from_millis(100), Duration::from_secs(2));

/// Runs `attempt` until it succeeds or `deadline` (from now) passes, pausing
/// 100 ms, 200 ms, ... up to 2 s between attempts. On giving up it returns the
/// last attempt's error; an attempt still running at the deadline is cut off
/// and reported as a timeout.
pub async fn retry<F, Fut>(deadline: Duration, mut attempt: F) -> Result<ProbeInfo, ProbeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<ProbeInfo, ProbeError>>,
{
    let started = tokio::time::Instant::now();
    let end = started + deadline;
    let mut failures = 0;
    loop {
        let attempt_started = tokio::time::Instant::now();
        let error = match tokio::time::timeout_at(end, attempt()).await {
            Ok(Ok(info)) => return Ok(info),
            Ok(Err(error)) => error,
            Err(_elapsed) => return Err(ProbeError::Timeout(attempt_started.elapsed())),
        };
        let now = tokio::time::Instant::now();
        if now >= end {
            return Err(error);
        }
        failures += 1;
        let backoff = BACKOFF.after(failures);
        tracing::debug!("probe attempt failed ({error}); retrying in {backoff:?}");
        tokio::time::sleep_until(end.min(now + backoff)).await;
        if tokio::time::Instant::now() >= end {
            return Err(error);
        }
    }
}
