//! The reconciler's HTTP endpoints, on `--listen`:
//! - `GET /healthz`: 200 when healthy, 503 when degraded, with the reasons
//!   (an invalid revision and its file and line, an unreachable runtime, a
//!   failing fetch) as JSON;
//! - `GET /metrics`: the Prometheus text format;
//! - `POST /hooks/sync`: fetch the source now. The body must be signed the way
//!   GitHub signs webhooks (`X-Hub-Signature-256: sha256=<HMAC-SHA256 of the
//!   body, hex>`) with `MCPCTL_WEBHOOK_SECRET`; anything else gets 401, and
//!   accepted syncs are limited to one a second.

use super::status::Shared;
use crate::model::SecretValue;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The largest webhook body read: push events are far smaller.
const BODY_LIMIT: usize = 5 << 20;
/// Accepted syncs at most this often: each one is a fetch.
const SYNC_GAP: Duration = Duration::from_secs(1);
const SIGNATURE_HEADER: &str = "x-hub-signature-256";

struct Server {
    shared: Arc<Shared>,
    secret: Option<SecretValue>,
    last_sync: Mutex<Option<Instant>>,
}

/// Serves until `shutdown` resolves. Connections in progress are let finish.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    secret: Option<SecretValue>,
    shutdown: impl Future<Output = ()>,
) {
    let server = Arc::new(Server {
        shared,
        secret,
        last_sync: Mutex::new(None),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    continue;
                }
            },
        };
        let server = server.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, std::convert::Infallible>(server.handle(req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", format!("{body}\n"))
}

impl Server {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => self.healthz(),
            (&Method::GET, "/metrics") => reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.shared.metrics.encode(),
            ),
            (&Method::POST, "/hooks/sync") => self.sync(req).await,
            (_, "/healthz" | "/metrics" | "/hooks/sync") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }

    fn healthz(&self) -> Response<Full<Bytes>> {
        let h = self.shared.health();
        let ok = h.ok();
        let body = serde_json::json!({
            "status": if ok { "ok" } else { "degraded" },
            "reasons": h.reasons(),
            "revision": h.revision,
            "drift": h.drift,
            "dry_run": h.dry_run,
        });
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        reply(status, "application/json", format!("{body:#}\n"))
    }

    async fn sync(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let Some(secret) = &self.secret else {
            return text(
                StatusCode::UNAUTHORIZED,
                "the webhook is off: set MCPCTL_WEBHOOK_SECRET to sign calls with",
            );
        };
        let signature = req
            .headers()
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("sha256="))
            .and_then(|hex_sig| hex::decode(hex_sig).ok());
        let Some(signature) = signature else {
            return text(
                StatusCode::UNAUTHORIZED,
                "missing or malformed X-Hub-Signature-256",
            );
        };
        let body = match Limited::new(req.into_body(), BODY_LIMIT).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large or cut short"),
        };
        if !signed(secret.expose().as_bytes(), &body, &signature) {
            return text(StatusCode::UNAUTHORIZED, "bad signature");
        }
        {
            let mut last = self.last_sync.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < SYNC_GAP) {
                return text(StatusCode::TOO_MANY_REQUESTS, "a sync is already under way");
            }
            *last = Some(now);
        }
        tracing::info!("webhook: syncing now");
        self.shared.sync.notify_one();
        text(StatusCode::ACCEPTED, "syncing")
    }
}

/// Whether `signature` is the HMAC-SHA256 of `body` under `key`, compared in
/// constant time.
fn signed(key: &[u8], body: &[u8], signature: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_against_the_body_and_the_key() {
        use hmac::{Hmac, Mac};
        let sign = |key: &[u8], body: &[u8]| {
            let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("key");
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        };
        let good = sign(b"s3cret", b"{\"ref\":\"main\"}");
        assert!(signed(b"s3cret", b"{\"ref\":\"main\"}", &good));
        assert!(!signed(b"other", b"{\"ref\":\"main\"}", &good));
        assert!(!signed(b"s3cret", b"{\"ref\":\"evil\"}", &good));
        assert!(!signed(b"s3cret", b"{\"ref\":\"main\"}", &good[..16]));
    }
}
