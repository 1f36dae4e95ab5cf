//! Readiness: whether an instance really speaks MCP, and so may be RUNNING.
//!
//! [`readiness`] is the one entry point: a container must be running *and*
//! answer an MCP handshake (over its HTTP endpoint, or over stdio through an
//! attach); an external server must answer at its URL. The result carries
//! the reason, or the identity the server proved.
//!
//! The handshake itself:
//! - [`probe_url`]: one attempt over streamable HTTP or legacy HTTP+SSE;
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
pub use mcp::{DISCOVER_VERSION, Era, INITIALIZE_VERSION, ProbeError, ProbeInfo};

use crate::runtime::{Probe, Runtime, Unit, UnitState};
use crate::state::McpIdentity;
use std::time::Duration;

/// The target of a readiness check.
pub enum Target<'a> {
    /// A container (or pod) as observed.
    Unit(&'a Unit),
    /// An external server's URL.
    External(&'a str),
}

/// The outcome of a readiness check, with the identity behind a pass.
pub struct Readiness {
    pub probe: Probe,
    pub identity: Option<McpIdentity>,
}

impl Readiness {
    fn not_ready(why: impl Into<String>) -> Readiness {
        Readiness {
            probe: Probe::NotReady(why.into()),
            identity: None,
        }
    }
}

/// One handshake attempt against `target`, bounded by `attempt_timeout`.
pub async fn readiness<R: Runtime>(
    rt: &R,
    target: Target<'_>,
    attempt_timeout: Duration,
) -> Readiness {
    let result = match target {
        Target::External(url) => probe_url(url, HttpTransport::Auto, attempt_timeout).await,
        Target::Unit(unit) => {
            if unit.state != UnitState::Running {
                return Readiness::not_ready(format!("container {}", unit.state.describe()));
            }
            match unit.endpoint.as_deref() {
                Some("stdio") => match rt.attach(&unit.handle).await {
                    Ok(a) => probe_stdio(a.reader, a.writer, attempt_timeout).await,
                    Err(e) => return Readiness::not_ready(format!("cannot attach to stdio: {e}")),
                },
                Some(url) if !url.is_empty() => {
                    probe_url(url, HttpTransport::Auto, attempt_timeout).await
                }
                _ => return Readiness::not_ready("no endpoint yet"),
            }
        }
    };
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
