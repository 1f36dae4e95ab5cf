//! Readiness: whether an instance may be promoted to RUNNING.
//!
//! For now readiness is "the container runs and has not restarted for 2 s";
//! external servers are taken as ready. Everything goes through [`readiness`],
//! which the MCP handshake probe (design §6) replaces without touching callers.
//!
//! The MCP probe itself is here as a library API, not yet wired into
//! [`readiness`]:
//! - [`probe_url`]: one attempt over streamable HTTP or legacy HTTP+SSE;
//! - [`probe_stdio`]: one attempt over already-connected stdio streams;
//! - [`retry`]: attempts with back-off until a deadline.
//!
//! Each attempt tries `server/discover` (protocol 2026-07-28) first and falls
//! back to `initialize` (2025-11-25 and older) when the server does not know
//! it or stays silent. See `mcp` for the era rules, `http` and `stdio` for
//! the transports.

mod http;
mod mcp;
mod stdio;

pub use http::HttpTransport;
pub use mcp::{DISCOVER_VERSION, Era, INITIALIZE_VERSION, ProbeError, ProbeInfo};

use crate::runtime::{Probe, Unit, UnitState};
use crate::time::{Timestamp, short_duration};
use std::time::Duration;

/// How long a container must stay up before it counts as ready.
pub const SETTLE: Duration = Duration::from_secs(2);

/// The target of a readiness check.
pub enum Target<'a> {
    /// A container (or pod) with its detail filled in by `Runtime::inspect`.
    Unit(&'a Unit),
    /// An external server's URL.
    External(&'a str),
}

pub async fn readiness(target: Target<'_>, now: Timestamp) -> Probe {
    match target {
        Target::External(_) => Probe::Ready("external server".into()),
        Target::Unit(unit) => {
            if unit.state != UnitState::Running {
                return Probe::NotReady(format!("container {}", unit.state.describe()));
            }
            match unit.started_at {
                None => Probe::NotReady("container has not started".into()),
                Some(at) if now.since(at) >= SETTLE => {
                    Probe::Ready(format!("running for {}", short_duration(now.since(at))))
                }
                Some(at) => {
                    Probe::NotReady(format!("up for only {} ms", now.since(at).as_millis()))
                }
            }
        }
    }
}

/// One probe attempt against an HTTP(S) MCP endpoint. Every wait, fallbacks
/// included, fits in `attempt_timeout`: a server that accepts and never
/// answers gives [`ProbeError::Timeout`].
pub async fn probe_url(
    url: &str,
    transport: HttpTransport,
    attempt_timeout: Duration,
) -> Result<ProbeInfo, ProbeError> {
    let started = tokio::time::Instant::now();
    let (identity, transport, answered) = http::probe(url, transport, attempt_timeout).await?;
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

/// The first pause between attempts; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

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
    let mut backoff = FIRST_BACKOFF;
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
        tracing::debug!("probe attempt failed ({error}); retrying in {backoff:?}");
        tokio::time::sleep_until(end.min(now + backoff)).await;
        if tokio::time::Instant::now() >= end {
            return Err(error);
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
