//! The gateway's listener and its streamable HTTP proxy: each request to
//! `/servers/<name>/mcp` is checked ([`super::access`]), routed
//! ([`super::table`], [`super::balance`]) and forwarded to one instance,
//! whose answer (a JSON body or an SSE stream) is streamed back as it
//! comes, never buffered; `GET /metrics` answers with what
//! [`super::metrics`] counted. Nothing is ever retried: a request in flight
//! to an instance that is then demoted finishes or fails on its own,
//! because a tool call may not be safe to repeat.
//!
//! The listener is open to whoever can reach it, so it runs on the accept
//! loop `watch`'s listener runs on ([`crate::listen`]), with the same
//! limits: a request's head must arrive in time, connections are capped and
//! live a bounded time; and request bodies are bounded here. Both the
//! routing table and the headers added to external servers' requests come
//! in over `watch` channels, so the fleet and its secrets can change under
//! a running gateway.

use super::access::{Access, Denial};
use super::balance::{InFlight, Outstanding, Pin, Pins};
use super::message;
use super::metrics::{self, Metrics, Served};
use super::stdio::{self, Bridging};
use super::table::{Backend, Refusal, Table, Upstream};
use crate::model::{HttpHeader, InstanceId};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin as StdPin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(super) type ProxyBody = BoxBody<Bytes, BoxError>;
type HttpClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

pub(super) const SESSION_HEADER: &str = "mcp-session-id";
/// The 2026-era header that names a request's MCP method.
const METHOD_HEADER: &str = "mcp-method";
const METRICS_PATH: &str = "/metrics";
/// Headers that belong to one connection, not to the message (RFC 9110
/// §7.6.1), and are never forwarded; nor is `Host`, which names the gateway.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// How much a client may take of the gateway, and for how long.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request's head must arrive whole within this (and an idle
    /// keep-alive connection is closed after it).
    pub header_read: Duration,
    /// The largest request head; at least 8 KiB, hyper's smallest buffer.
    pub head_bytes: usize,
    /// A connection is asked to close after this long. Long, because an SSE
    /// stream (a GET, or a POST answered as a stream) lives on one.
    pub connection: Duration,
    /// Connections served at once; beyond them, new ones wait unaccepted in
    /// the kernel's queue.
    pub max_connections: usize,
    /// The largest request body forwarded; larger gets 413.
    pub body: usize,
    /// A request body must arrive whole within this.
    pub body_read: Duration,
    /// A bridged (stdio) request's answer must come within this; then the
    /// client gets 504 and the instance a cancellation.
    pub answer: Duration,
    /// Connecting to an instance must succeed within this.
    pub connect: Duration,
    /// On shutdown, requests in progress get this long to finish.
    pub grace: Duration,
    /// Pinned sessions kept at most; the least recently used go first.
    pub pins: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(5),
            head_bytes: 16 << 10,
            connection: Duration::from_secs(3600),
            max_connections: 512,
            body: 4 << 20,
            body_read: Duration::from_secs(30),
            answer: Duration::from_secs(300),
            connect: Duration::from_secs(5),
            grace: Duration::from_secs(5),
            // About a megabyte of session ids: far more sessions than a
            // fleet's instances hold open at once.
            pins: 10_000,
        }
    }
}

impl Limits {
    /// The limits the accept loop keeps.
    fn listen(&self) -> crate::listen::Limits {
        crate::listen::Limits {
            header_read: self.header_read,
            head_bytes: self.head_bytes,
            connection: self.connection,
            max_connections: self.max_connections,
            grace: self.grace,
        }
    }
}

/// Headers the gateway adds to every request for a server, by server name:
/// external servers' `headers`, secrets filled in, so that clients never
/// hold them.
pub type ServerHeaders = BTreeMap<String, Vec<HttpHeader>>;

struct Gateway {
    table: watch::Receiver<Arc<Table>>,
    /// [`ServerHeaders`] as hyper's, built again whenever they change.
    headers: watch::Receiver<Arc<HeaderMaps>>,
    access: Access,
    limits: Limits,
    outstanding: Arc<Outstanding>,
    pins: Pins,
    client: HttpClient,
    metrics: Metrics,
    /// How stdio instances are reached; without it they answer 503.
    bridging: Option<Bridging>,
    /// The event streams of legacy HTTP+SSE instances, one each.
    legacy: crate::bridge::Bridges,
}

/// [`ServerHeaders`] as hyper's, by server name.
type HeaderMaps = BTreeMap<String, HeaderMap>;

/// A gateway ready to serve: its headers checked and its client built, so
/// that what can fail has failed before anything listens.
pub struct Proxy {
    gateway: Arc<Gateway>,
    /// The caller's headers, followed into [`Gateway::headers`] while serving.
    given: watch::Receiver<Arc<ServerHeaders>>,
    maps: watch::Sender<Arc<HeaderMaps>>,
}

impl Proxy {
    /// Routes by `table` and adds `headers`, each as it is now and as it
    /// changes later. Refused when a header of the current `headers` cannot
    /// be sent; one that a later change brings is left out, with a warning.
    pub fn new(
        table: watch::Receiver<Arc<Table>>,
        mut headers: watch::Receiver<Arc<ServerHeaders>>,
        access: Access,
        limits: Limits,
        bridging: Option<Bridging>,
    ) -> Result<Proxy, super::GatewayError> {
        let first = headers
            .borrow_and_update()
            .iter()
            .map(|(server, h)| Ok((server.clone(), header_map(server, h)?)))
            .collect::<Result<_, super::GatewayError>>()?;
        let (maps, receiver) = watch::channel(Arc::new(first));
        Ok(Proxy {
            gateway: Arc::new(Gateway {
                client: client(limits.connect)?,
                pins: Pins::new(limits.pins),
                table,
                headers: receiver,
                access,
                limits,
                outstanding: Arc::default(),
                metrics: Metrics::default(),
                bridging,
                legacy: crate::bridge::Bridges::default(),
            }),
            given: headers,
            maps,
        })
    }

    /// Serves until `shutdown` resolves; then stops accepting, gives
    /// requests in progress [`Limits::grace`] to finish, and returns.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let Proxy {
            gateway,
            mut given,
            maps,
        } = self;
        let limits = gateway.limits.listen();
        if let Some(b) = &gateway.bridging {
            tokio::spawn(close_bridges(gateway.table.clone(), b.bridges.clone()));
        }
        tokio::spawn(close_bridges(gateway.table.clone(), gateway.legacy.clone()));
        let service = move |req| {
            let gateway = gateway.clone();
            async move { gateway.handle(req).await }
        };
        let follow = async {
            // Until the caller's sender goes; the last maps stay.
            while given.changed().await.is_ok() {
                let headers = given.borrow_and_update().clone();
                maps.send_replace(Arc::new(lenient_header_maps(&headers)));
            }
            std::future::pending::<std::convert::Infallible>().await
        };
        tokio::select! {
            () = crate::listen::serve("gateway", listener, limits, service, shutdown) => {}
            never = follow => match never {},
        }
    }
}

/// Serves until `shutdown` resolves; then stops accepting, gives requests in
/// progress [`Limits::grace`] to finish, and returns. See [`Proxy::new`].
pub async fn serve(
    listener: TcpListener,
    table: watch::Receiver<Arc<Table>>,
    headers: watch::Receiver<Arc<ServerHeaders>>,
    access: Access,
    limits: Limits,
    bridging: Option<Bridging>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), super::GatewayError> {
    Proxy::new(table, headers, access, limits, bridging)?
        .serve(listener, shutdown)
        .await;
    Ok(())
}

/// `headers` as hyper's, leaving out (with a warning naming it, never its
/// value) any header that cannot be sent: a changed secret must not stop
/// the other servers' headers from changing.
fn lenient_header_maps(headers: &ServerHeaders) -> HeaderMaps {
    headers
        .iter()
        .filter_map(|(server, h)| match header_map(server, h) {
            Ok(map) => Some((server.clone(), map)),
            Err(e) => {
                tracing::warn!(server, error = %e, "leaving out the server's headers");
                None
            }
        })
        .collect()
}

/// Closes the bridges of instances that leave the fleet, for as long as
/// tables come.
async fn close_bridges(mut tables: watch::Receiver<Arc<Table>>, bridges: crate::bridge::Bridges) {
    loop {
        {
            let table = tables.borrow_and_update().clone();
            bridges.retain(|id| table.knows(id));
        }
        if tables.changed().await.is_err() {
            return;
        }
    }
}

fn client(connect: Duration) -> Result<HttpClient, super::GatewayError> {
    // The ring provider by name, not a process-wide default (design §10).
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| super::GatewayError::Tls(e.to_string()))?
    .with_webpki_roots()
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect));
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// The server named by `/servers/<name>/mcp`.
pub fn server_of(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/servers/")?.strip_suffix("/mcp")?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// The JSON-RPC error code of the gateway's own refusals and failures.
const GATEWAY_ERROR: i64 = -32000;

/// A JSON-RPC error in a response of `status`: clients of both eras read
/// the message from it. The id is null where the gateway has not read it.
pub fn rpc_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    rpc_error_with(status, GATEWAY_ERROR, None, message)
}

fn rpc_error_with(
    status: StatusCode,
    code: i64,
    id: Option<serde_json::Value>,
    message: &str,
) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(serde_json::Value::Null),
        "error": {"code": code, "message": message},
    });
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{body}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// A routing decision that ends the request at the gateway.
struct Refused {
    status: StatusCode,
    /// The JSON-RPC error code.
    code: i64,
    message: String,
    /// The request's id, where the gateway read it.
    id: Option<serde_json::Value>,
}

impl Refused {
    fn new(status: StatusCode, message: impl Into<String>) -> Refused {
        Refused {
            status,
            code: GATEWAY_ERROR,
            message: message.into(),
            id: None,
        }
    }

    fn response(&self) -> Response<ProxyBody> {
        rpc_error_with(self.status, self.code, self.id.clone(), &self.message)
    }
}

impl From<Refusal> for Refused {
    fn from(r: Refusal) -> Refused {
        let status = match r {
            Refusal::Unknown(_) => StatusCode::NOT_FOUND,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Refused::new(status, r.to_string())
    }
}

impl From<Denial> for Refused {
    fn from(d: Denial) -> Refused {
        let status = match d {
            Denial::Unauthorized => StatusCode::UNAUTHORIZED,
            Denial::Forbidden => StatusCode::FORBIDDEN,
        };
        Refused::new(status, d.to_string())
    }
}

impl Gateway {
    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        if req.uri().path() == METRICS_PATH {
            return self.metrics_page(&req);
        }
        let started = Instant::now();
        let method = req.method().clone();
        let session = req.headers().contains_key(SESSION_HEADER);
        let named = req
            .headers()
            .get(METHOD_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|m| metrics::method_label(Some(m)));
        let server = server_of(req.uri().path()).unwrap_or("-").to_owned();
        let (instance, rpc, response) = match self.admit(req, &server).await {
            Err(refused) => (None, named, refused.response()),
            Ok(admitted) => {
                // The body names the method whatever the era.
                let rpc = message::method_of(admitted.message.as_ref())
                    .map(|m| metrics::method_label(Some(m)))
                    .or(named);
                match self.route(&admitted.parts.headers, &server) {
                    Err(refused) => (None, rpc, refused.response()),
                    Ok((backend, in_flight)) => {
                        let (instance, answer) =
                            self.forward(admitted, &server, backend, in_flight).await;
                        (Some(instance), rpc, answer)
                    }
                }
            }
        };
        let took = started.elapsed();
        let table = self.table.borrow().clone();
        self.metrics.record(
            &table,
            &Served {
                server: &server,
                instance: instance.as_ref(),
                method: rpc,
                status: response.status(),
                took,
            },
        );
        // Names and numbers only: never a header's value or a body.
        tracing::info!(
            server,
            instance = instance.as_ref().map_or("-", |i| i.0.as_str()),
            method = %method,
            rpc = rpc.unwrap_or("-"),
            session,
            status = response.status().as_u16(),
            ms = took.as_secs_f64() * 1e3,
            "gateway request"
        );
        response
    }

    /// `GET /metrics`, behind the same checks as the servers' paths.
    fn metrics_page(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        if let Err(denied) = self.access.check(req.headers()) {
            return Refused::from(denied).response();
        }
        if req.method() != Method::GET {
            return rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use GET",
            );
        }
        let table = self.table.borrow().clone();
        let text = self.metrics.scrape(&table, &self.outstanding, &self.pins);
        let mut r = Response::new(
            Full::new(Bytes::from(text))
                .map_err(|never| match never {})
                .boxed(),
        );
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        r
    }

    /// The checks every request passes before it is routed, and its body
    /// read whole (bounded in size and time) and parsed.
    async fn admit(&self, req: Request<Incoming>, server: &str) -> Result<Admitted, Refused> {
        let too_large = || {
            Refused::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {} bytes", self.limits.body),
            )
        };
        if req.body().size_hint().lower() > self.limits.body as u64 {
            return Err(too_large());
        }
        let (parts, body) = req.into_parts();
        let read = tokio::time::timeout(
            self.limits.body_read,
            Limited::new(body, self.limits.body).collect(),
        )
        .await;
        let body = match read {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
            Ok(Err(e)) => {
                return Err(Refused::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {e}"),
                ));
            }
            Err(_) => {
                return Err(Refused::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive within {}",
                        crate::model::short_duration(self.limits.body_read)
                    ),
                ));
            }
        };
        // Checked once the body is read (it is bounded): a refusal sent
        // over an unread body ends in a reset that can lose the refusal.
        self.access.check(&parts.headers)?;
        if server_of(parts.uri.path()).is_none() {
            return Err(Refused::new(
                StatusCode::NOT_FOUND,
                "not found: servers are at /servers/<name>/mcp",
            ));
        }
        if !matches!(parts.method, Method::POST | Method::GET | Method::DELETE) {
            return Err(Refused::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use POST, GET or DELETE",
            ));
        }
        let message = (parts.method == Method::POST)
            .then(|| message::parse(&body))
            .flatten();
        if let Err(why) = message::check_mirrors(&parts.headers, message.as_ref()) {
            tracing::debug!(server, why, "refused mirror headers");
            return Err(Refused {
                status: StatusCode::BAD_REQUEST,
                code: message::HEADER_MISMATCH,
                message: why,
                id: message.as_ref().and_then(|m| m.get("id")).cloned(),
            });
        }
        Ok(Admitted {
            parts,
            body,
            message,
        })
    }

    /// The instance that takes a request with `headers`, counted as taking it.
    fn route(&self, headers: &HeaderMap, server: &str) -> Result<(Backend, InFlight), Refused> {
        let table = self.table.borrow().clone();
        let session = headers
            .get(SESSION_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let Some(session) = session else {
            let backends = table.backends(server)?;
            return self.outstanding.choose(backends).ok_or_else(|| {
                Refused::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{server} has no RUNNING instance"),
                )
            });
        };
        // 404 is the spec's "start a new session": the client will send a
        // fresh `initialize`, which goes to a live instance.
        let gone = |why: &str| {
            Refused::new(
                StatusCode::NOT_FOUND,
                format!("session not found: {why}; start a new session"),
            )
        };
        let Some(pin) = self.pins.get(&session) else {
            return Err(gone("the gateway holds no such session"));
        };
        if pin.server != server {
            return Err(gone("the session belongs to another server"));
        }
        match table.backend(server, &pin.instance) {
            Some(backend) => Ok((backend.clone(), self.outstanding.take(backend))),
            None => {
                self.pins.forget(&session);
                Err(gone(&format!(
                    "its instance {} is no longer RUNNING",
                    pin.instance
                )))
            }
        }
    }

    /// A request for an instance reached over a bridge (stdio, or legacy
    /// HTTP+SSE).
    async fn bridged(
        &self,
        admitted: Admitted,
        server: &str,
        instance: &InstanceId,
        open: stdio::Open<'_>,
        in_flight: InFlight,
    ) -> Response<ProxyBody> {
        let waits = stdio::Waits {
            attach: self.limits.connect,
            answer: self.limits.answer,
        };
        let call = stdio::Call {
            method: &admitted.parts.method,
            headers: &admitted.parts.headers,
            message: admitted.message,
            server,
            instance,
            open,
        };
        stdio::forward(&self.pins, waits, call, in_flight).await
    }

    /// Sends the request to `backend`; the instance that took it, and the
    /// answer. A request that could not even connect never reached its
    /// instance, so it goes to another one (each at most once); a pinned
    /// session's instance that refuses connections is gone for the session.
    async fn forward(
        &self,
        admitted: Admitted,
        server: &str,
        mut backend: Backend,
        mut in_flight: InFlight,
    ) -> (InstanceId, Response<ProxyBody>) {
        let session = admitted
            .parts
            .headers
            .get(SESSION_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let mut refused: Vec<InstanceId> = Vec::new();
        loop {
            let url = match &backend.upstream {
                Upstream::Http(url) => url.clone(),
                Upstream::Stdio { handle } => {
                    let open = stdio::Open::Unit {
                        handle,
                        bridging: self.bridging.as_ref(),
                    };
                    let answer = self
                        .bridged(admitted, server, &backend.instance, open, in_flight)
                        .await;
                    return (backend.instance, answer);
                }
                Upstream::Legacy(url) => {
                    let open = stdio::Open::Legacy {
                        url,
                        headers: self
                            .headers
                            .borrow()
                            .get(server)
                            .cloned()
                            .unwrap_or_default(),
                        bridges: &self.legacy,
                    };
                    let answer = self
                        .bridged(admitted, server, &backend.instance, open, in_flight)
                        .await;
                    return (backend.instance, answer);
                }
            };
            let failed = match self
                .forward_http(&admitted, server, &backend.instance, &url, in_flight)
                .await
            {
                Sent::Answered(answer) => return (backend.instance, answer),
                Sent::Unreachable(failed) => failed,
            };
            self.outstanding.refused(&backend.instance);
            if let Some(session) = &session {
                self.pins.forget(session);
                let gone = Refused::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "session not found: its instance {} refuses connections; start a new session",
                        backend.instance
                    ),
                );
                return (backend.instance, gone.response());
            }
            refused.push(backend.instance.clone());
            let table = self.table.borrow().clone();
            let next = table
                .backends(server)
                .ok()
                .and_then(|b| self.outstanding.choose_except(b, &refused));
            match next {
                Some((b, f)) => {
                    tracing::debug!(server, refused = %backend.instance, next = %b.instance, "an instance refused the connection; sending the request to another");
                    backend = b;
                    in_flight = f;
                }
                None => return (backend.instance, failed),
            }
        }
    }

    async fn forward_http(
        &self,
        admitted: &Admitted,
        server: &str,
        instance: &InstanceId,
        url: &str,
        in_flight: InFlight,
    ) -> Sent {
        let Admitted { parts, body, .. } = admitted;
        let uri = match upstream_uri(url, parts.uri.query()) {
            Some(u) => u,
            None => {
                return Sent::Answered(rpc_error(
                    StatusCode::BAD_GATEWAY,
                    &format!("instance {instance} has an unusable endpoint URL"),
                ));
            }
        };
        let session = parts.headers.get(SESSION_HEADER).cloned();
        let mut upstream = Request::new(
            Full::new(body.clone())
                .map_err(|never| match never {})
                .boxed(),
        );
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = uri;
        *upstream.headers_mut() = end_to_end(&parts.headers);
        if self.access.has_token() {
            upstream.headers_mut().remove(header::AUTHORIZATION);
        }
        if let Some(added) = self.headers.borrow().get(server) {
            // The server's own headers win over the client's of the same name.
            for name in added.keys() {
                upstream.headers_mut().remove(name);
            }
            for (name, value) in added {
                upstream.headers_mut().append(name, value.clone());
            }
        }
        let answer = match self.client.request(upstream).await {
            Ok(a) => a,
            Err(e) => {
                let cause =
                    std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
                let failed = rpc_error(
                    StatusCode::BAD_GATEWAY,
                    &format!("instance {instance} of {server} did not answer: {cause}"),
                );
                return if e.is_connect() {
                    Sent::Unreachable(failed)
                } else {
                    Sent::Answered(failed)
                };
            }
        };
        if let Some(session) = session
            .as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
        {
            // The instance no longer knows the session, or it was ended.
            if parts.method == Method::DELETE || answer.status() == StatusCode::NOT_FOUND {
                self.pins.forget(&session);
            }
        } else if answer.status().is_success()
            && let Some(new) = answer.headers().get(SESSION_HEADER)
        {
            self.pins.pin(
                &String::from_utf8_lossy(new.as_bytes()),
                Pin {
                    server: server.to_owned(),
                    instance: instance.clone(),
                },
            );
        }
        let (mut parts, body) = answer.into_parts();
        parts.headers = end_to_end(&parts.headers);
        let is_sse = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        // A request's SSE answer that breaks off (its instance removed or
        // crashed mid-answer) ends with a JSON-RPC error for the request
        // that names the instance, rather than a torn stream.
        let on_break = admitted
            .message
            .as_ref()
            .and_then(|m| m.get("id"))
            .filter(|id| is_sse && !id.is_null())
            .map(|id| {
                let error = serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "error": {"code": GATEWAY_ERROR, "message": format!(
                        "instance {instance} of {server} went away before it finished answering; the request may have run in part"
                    )},
                });
                Bytes::from(format!("event: message\ndata: {error}\n\n"))
            });
        let body = Tracked {
            inner: body,
            _in_flight: in_flight,
            on_break,
            ended: false,
        };
        Sent::Answered(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed(),
        ))
    }
}

/// What became of a request sent to an HTTP instance.
enum Sent {
    /// The instance answered, or failed after the request may have reached it.
    Answered(Response<ProxyBody>),
    /// The connection was refused or timed out: the request never left.
    Unreachable(Response<ProxyBody>),
}

/// A request that passed the gateway's checks, its body read.
struct Admitted {
    parts: hyper::http::request::Parts,
    body: Bytes,
    /// The body as one JSON-RPC message, when it is one.
    message: Option<serde_json::Value>,
}

/// A server's headers as hyper's, a secret one marked sensitive so that
/// hyper keeps it out of its debug output.
fn header_map(server: &str, headers: &[HttpHeader]) -> Result<HeaderMap, super::GatewayError> {
    let mut map = HeaderMap::new();
    for h in headers {
        let bad = || super::GatewayError::BadHeader {
            server: server.to_owned(),
            name: h.name.clone(),
        };
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad())?;
        let mut value = HeaderValue::from_bytes(h.value.expose().as_bytes()).map_err(|_| bad())?;
        value.set_sensitive(h.value.is_sensitive());
        map.append(name, value);
    }
    Ok(map)
}

/// The instance's URL with the request's query.
fn upstream_uri(url: &str, query: Option<&str>) -> Option<Uri> {
    let mut url = url::Url::parse(url).ok()?;
    if let Some(q) = query {
        url.set_query(Some(q));
    }
    url.as_str().parse().ok()
}

/// `headers` without the hop-by-hop ones, including those the
/// `Connection` header names.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if HOP_BY_HOP.contains(&name.as_str()) || named.contains(name) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// A response body that counts its request as outstanding until it ends:
/// an SSE stream is work in progress on its instance for as long as it
/// lasts.
struct Tracked {
    inner: Incoming,
    _in_flight: InFlight,
    /// The last event of an SSE answer whose instance breaks it off.
    on_break: Option<Bytes>,
    ended: bool,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match StdPin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => match self.on_break.take() {
                Some(event) => {
                    tracing::debug!(error = %e, "an instance broke off its answer");
                    self.ended = true;
                    Poll::Ready(Some(Ok(Frame::data(event))))
                }
                None => Poll::Ready(Some(Err(e))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_host_are_dropped_and_the_rest_pass() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("host", "gateway:9470"),
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
            ("mcp-session-id", "abc"),
            ("accept", "application/json, text/event-stream"),
        ] {
            h.append(n, HeaderValue::from_static(v));
        }
        let out = end_to_end(&h);
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["accept", "mcp-method", "mcp-name", "mcp-session-id"]
        );
    }

    #[test]
    fn the_upstream_uri_is_the_instances_url_with_the_requests_query() {
        assert_eq!(
            upstream_uri("http://127.0.0.1:3000/mcp", Some("a=1")).map(|u| u.to_string()),
            Some("http://127.0.0.1:3000/mcp?a=1".to_owned())
        );
        assert_eq!(
            upstream_uri("http://127.0.0.1:3000/mcp", None).map(|u| u.to_string()),
            Some("http://127.0.0.1:3000/mcp".to_owned())
        );
    }
}
