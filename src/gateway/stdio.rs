//! Streamable HTTP in front of a stdio instance: each POSTed message goes
//! over the instance's stdio bridge ([`crate::bridge`]), and its answer
//! comes back as JSON, or as an SSE stream when the client asked for
//! progress.
//!
//! The eras meet here. A 2026-07-28 request is complete in itself, so it is
//! sent as it is (under the bridge's id). A 2025-era client's `initialize`
//! is answered by the gateway from the bridge's one session with the
//! instance ([`Bridge::session`]), under a session id the gateway issues and
//! pins to the instance; the client's later requests share that session.
//! Capabilities that would need the server to reach one client (resource
//! subscriptions, list-change and log notifications) are taken out of the
//! `initialize` result the clients see, because the bridge cannot tell
//! which client such a notification is for.

use super::balance::{InFlight, Pin, Pins};
use crate::bridge::{Bridge, BridgeError, Bridges, Message};
use crate::model::InstanceId;
use crate::runtime::{Attached, RuntimeError};
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

use super::proxy::{BoxError, ProxyBody, SESSION_HEADER, rpc_error};

/// Attaches to a unit's stdin and stdout: the runtime, as the gateway needs
/// it. Any [`crate::runtime::Runtime`] is one.
pub trait Attach: Send + Sync {
    fn attach<'a>(&'a self, handle: &'a str) -> BoxFuture<'a, Result<Attached, RuntimeError>>;
}

impl<R: crate::runtime::Runtime + Send + Sync> Attach for R {
    fn attach<'a>(&'a self, handle: &'a str) -> BoxFuture<'a, Result<Attached, RuntimeError>> {
        Box::pin(crate::runtime::Runtime::attach(self, handle))
    }
}

/// What the gateway needs to bridge stdio instances: the bridges (shared
/// with `watch`'s probes when it runs inside `watch`) and a way to attach.
#[derive(Clone)]
pub struct Bridging {
    pub bridges: Bridges,
    pub attach: Arc<dyn Attach>,
}

/// How long bridged work may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct Waits {
    /// Attaching to the unit.
    pub attach: Duration,
    /// An answer to one request; then the client gets 504 (the request may
    /// still run on the instance, and is cancelled there).
    pub answer: Duration,
}

/// How to reach a bridged instance, when it has no bridge yet.
pub(super) enum Open<'a> {
    /// Attach to the stdio unit `handle` through the runtime.
    Unit {
        handle: &'a str,
        bridging: Option<&'a Bridging>,
    },
    /// Open the event stream of a legacy HTTP+SSE server at `url`, with the
    /// headers the gateway adds for its server.
    Legacy {
        url: &'a str,
        headers: HeaderMap,
        bridges: &'a Bridges,
    },
}

impl Open<'_> {
    /// What the server is, for messages.
    fn kind(&self) -> &'static str {
        match self {
            Open::Unit { .. } => "a stdio server",
            Open::Legacy { .. } => "a legacy HTTP+SSE server",
        }
    }
}

pub(super) struct Call<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub message: Option<Value>,
    pub server: &'a str,
    pub instance: &'a InstanceId,
    pub open: Open<'a>,
}

pub(super) async fn forward(
    pins: &Pins,
    waits: Waits,
    call: Call<'_>,
    in_flight: InFlight,
) -> Response<ProxyBody> {
    let Call {
        method,
        headers,
        message,
        server,
        instance,
        open,
    } = call;
    let kind = open.kind();
    let session = headers
        .get(SESSION_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match *method {
        Method::GET => {
            return rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!(
                    "{server} is {kind}: the gateway offers no standing stream for it; send requests with POST"
                ),
            );
        }
        Method::DELETE => {
            return match session {
                Some(s) => {
                    pins.forget(&s);
                    empty(StatusCode::OK)
                }
                None => rpc_error(StatusCode::BAD_REQUEST, "DELETE needs an Mcp-Session-Id"),
            };
        }
        _ => {}
    }
    let Some(message) = message else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &format!("the body is not one JSON-RPC message (batches are not bridged to {kind})"),
        );
    };
    let opened = match open {
        Open::Unit { handle, bridging } => {
            let Some(bridging) = bridging else {
                return rpc_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("{server} is a stdio server and this gateway cannot attach to units"),
                );
            };
            tokio::time::timeout(
                waits.attach,
                bridging
                    .bridges
                    .open(instance, || bridging.attach.attach(handle)),
            )
            .await
        }
        Open::Legacy {
            url,
            headers,
            bridges,
        } => {
            let attach = || async move {
                crate::probe::legacy_pipe(url, headers, waits.attach)
                    .await
                    .map(|p| Attached {
                        reader: p.reader,
                        writer: p.writer,
                    })
                    .map_err(|e| RuntimeError::Operation {
                        op: "open the event stream",
                        instance: crate::model::urls::redact(url),
                        message: e.to_string(),
                    })
            };
            tokio::time::timeout(waits.attach, bridges.open(instance, attach)).await
        }
    };
    let bridge = match opened {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                &format!("cannot attach to instance {instance} of {server}: {e}"),
            );
        }
        Err(_) => {
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "cannot attach to instance {instance} of {server}: no answer within {}",
                    crate::model::short_duration(waits.attach)
                ),
            );
        }
    };
    // A stdio server settles its era with the first message it ever reads
    // (the reconciler's probe's, most often), so the bridge must know it
    // before it can carry an older client's requests.
    let era = match bridge.era() {
        Some(era) => era,
        None => match bridge.check(waits.attach).await {
            Ok(info) => (info.era, info.protocol_version),
            Err(e) => {
                return rpc_error(
                    StatusCode::BAD_GATEWAY,
                    &format!("instance {instance} of {server} failed its handshake: {e}"),
                );
            }
        },
    };
    let mut message = message;
    if era.0 == crate::probe::Era::Discover2026 {
        modernize(&mut message, &era.1);
    }
    let rpc_method = message.get("method").and_then(Value::as_str);
    let has_id = message.get("id").is_some_and(|id| !id.is_null());
    match (rpc_method, has_id) {
        (Some("initialize"), true) => {
            initialize(&bridge, pins, waits, server, &message, session.is_some()).await
        }
        (Some(m), true) => {
            if m == "subscriptions/listen" {
                return rpc_answer(
                    StatusCode::OK,
                    error_for(
                        &message,
                        -32601,
                        "subscriptions/listen is not bridged to stdio or legacy SSE servers",
                    ),
                );
            }
            let progress = message.pointer("/params/_meta/progressToken").is_some();
            let exchange = match bridge.request(message.clone()) {
                Ok(x) => x,
                Err(e) => return bridge_error(&e, server),
            };
            if progress && accepts_sse(headers) {
                return stream(exchange, waits.answer, in_flight);
            }
            match tokio::time::timeout(waits.answer, exchange.answer()).await {
                Ok(Ok(answer)) => rpc_answer(StatusCode::OK, answer),
                Ok(Err(e)) => bridge_error(&e, server),
                Err(_) => rpc_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "instance {instance} of {server} did not answer within {}; the request was cancelled",
                        crate::model::short_duration(waits.answer)
                    ),
                ),
            }
        }
        // The session is the bridge's, made already; a client's own
        // cancellation has its id, which the bridge has renamed, and a
        // dropped HTTP request is cancelled by the bridge itself.
        (Some("notifications/initialized" | "notifications/cancelled"), false) => {
            empty(StatusCode::ACCEPTED)
        }
        (Some(_), false) => match bridge.notify(&message) {
            Ok(()) => empty(StatusCode::ACCEPTED),
            Err(e) => bridge_error(&e, server),
        },
        // A response to a server request: the bridge relays none, so none
        // is awaited.
        (None, _) => empty(StatusCode::ACCEPTED),
    }
}

async fn initialize(
    bridge: &Bridge,
    pins: &Pins,
    waits: Waits,
    server: &str,
    message: &Value,
    in_session: bool,
) -> Response<ProxyBody> {
    if in_session {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            "initialize inside a session: send it without Mcp-Session-Id",
        );
    }
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    let result = match bridge.session(&params, waits.answer).await {
        Ok(r) => r,
        Err(e) => return bridge_error(&e, server),
    };
    let session = new_session_id();
    pins.pin(
        &session,
        Pin {
            server: server.to_owned(),
            instance: bridge.instance().clone(),
        },
    );
    let answer = json!({
        "jsonrpc": "2.0",
        "id": message.get("id").cloned().unwrap_or(Value::Null),
        "result": shared(result),
    });
    let mut response = rpc_answer(StatusCode::OK, answer);
    if let Ok(v) = HeaderValue::from_str(&session) {
        response.headers_mut().insert(SESSION_HEADER, v);
    }
    response
}

/// Gives a 2025-era client's message what a 2026-07-28 server needs of
/// every request: the protocol version, and the client's capabilities and
/// identity, in `_meta`. The shared session's: no capabilities, and the
/// gateway as the client. A message that has them keeps its own.
fn modernize(message: &mut Value, version: &str) {
    let Some(object) = message.as_object_mut() else {
        return;
    };
    let params = object
        .entry("params")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(params) = params.as_object_mut() else {
        return;
    };
    let meta = params
        .entry("_meta")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    meta.entry("io.modelcontextprotocol/protocolVersion")
        .or_insert_with(|| Value::String(version.to_owned()));
    meta.entry("io.modelcontextprotocol/clientCapabilities")
        .or_insert_with(|| json!({}));
    meta.entry("io.modelcontextprotocol/clientInfo")
        .or_insert_with(|| json!({"name": "mcpctl-gateway", "version": env!("CARGO_PKG_VERSION")}));
}

/// The `initialize` result as the shared session's clients see it: without
/// what would need the server to notify one client alone.
fn shared(mut result: Value) -> Value {
    if let Some(caps) = result
        .get_mut("capabilities")
        .and_then(Value::as_object_mut)
    {
        caps.remove("logging");
        for (_, cap) in caps.iter_mut() {
            if let Some(cap) = cap.as_object_mut() {
                cap.remove("subscribe");
                cap.remove("listChanged");
            }
        }
    }
    result
}

fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: a ULID is unique, if guessable; the token (where
        // set) still guards the gateway.
        return ulid::Ulid::new().to_string();
    }
    hex::encode(bytes)
}

fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// Progress, then the answer, as SSE events; the stream ends after the
/// answer, or with an error event if the bridge fails or the wait runs out.
fn stream(
    exchange: crate::bridge::Exchange,
    wait: Duration,
    in_flight: InFlight,
) -> Response<ProxyBody> {
    let deadline = tokio::time::Instant::now() + wait;
    let events = futures_util::stream::unfold(
        Some((exchange, in_flight)),
        move |state| async move {
            let (mut exchange, in_flight) = state?;
            let (message, last) = match tokio::time::timeout_at(deadline, exchange.next()).await {
                Ok(Ok(Message::Progress(p))) => (p, false),
                Ok(Ok(Message::Answer(a))) => (a, true),
                Ok(Err(e)) => (
                    json!({"jsonrpc": "2.0", "method": "notifications/message",
                        "params": {"level": "error", "logger": "mcpctl-gateway", "data": e.to_string()}}),
                    true,
                ),
                Err(_) => (
                    json!({"jsonrpc": "2.0", "method": "notifications/message",
                        "params": {"level": "error", "logger": "mcpctl-gateway",
                            "data": "the instance did not answer in time; the request was cancelled"}}),
                    true,
                ),
            };
            let frame = Ok::<_, BoxError>(Frame::data(Bytes::from(format!(
                "event: message\ndata: {message}\n\n"
            ))));
            Some((frame, (!last).then_some((exchange, in_flight))))
        },
    );
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(events)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn bridge_error(e: &BridgeError, server: &str) -> Response<ProxyBody> {
    match e {
        BridgeError::Busy { .. } => {
            let mut r = rpc_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        // It may have reached the instance: never retried here.
        BridgeError::Closed { .. } | BridgeError::Session { .. } => {
            rpc_error(StatusCode::BAD_GATEWAY, &format!("{server}: {e}"))
        }
        BridgeError::NotARequest(_) => rpc_error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

fn error_for(message: &Value, code: i64, text: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": message.get("id").cloned().unwrap_or(Value::Null),
        "error": {"code": code, "message": text},
    })
}

fn rpc_answer(status: StatusCode, message: Value) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn empty(status: StatusCode) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_sessions_capabilities_promise_no_per_client_notifications() {
        let result = json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {
                "tools": {"listChanged": true},
                "resources": {"subscribe": true, "listChanged": true},
                "logging": {},
                "prompts": {},
            },
            "serverInfo": {"name": "s", "version": "1"},
        });
        assert_eq!(
            shared(result),
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}, "resources": {}, "prompts": {}},
                "serverInfo": {"name": "s", "version": "1"},
            })
        );
    }

    #[test]
    fn an_older_clients_request_gets_the_meta_a_2026_server_needs() {
        let mut call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "echo", "_meta": {"progressToken": 7}}});
        modernize(&mut call, "2026-07-28");
        assert_eq!(
            call["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        assert_eq!(
            call["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"],
            json!({})
        );
        assert_eq!(call["params"]["_meta"]["progressToken"], 7);
        let mut bare = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"});
        modernize(&mut bare, "2026-07-28");
        assert_eq!(
            bare["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]["name"],
            "mcpctl-gateway"
        );
        // A 2026 client's own fields are kept.
        let mut own = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"sampling": {}}}}});
        modernize(&mut own, "2026-07-28");
        assert_eq!(
            own["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"],
            json!({"sampling": {}})
        );
    }

    #[test]
    fn session_ids_are_long_and_distinct() {
        let a = new_session_id();
        let b = new_session_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
