//! The probe's HTTP transports: streamable HTTP (answers as JSON or as an SSE
//! stream) and the legacy HTTP+SSE transport of the 2024-11-05 era, over a
//! hyper 1 client with rustls for `https`.
//!
//! Every request of a probe (each POST, the session's DELETE, the legacy
//! GET of the event stream) carries the caller's headers; a secret one is
//! marked sensitive, so hyper keeps it out of its own debug output.
//!
//! The rustls configuration names the ring provider itself instead of relying
//! on a process-wide default (design §10), so a probe never panics because
//! nobody called `install_default`.

use super::mcp::{self, Channel, Identity, ProbeError, Reply};
use crate::model::{HttpHeader, PROBE_HEADERS};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Builder;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sse_stream::SseStream;
use std::error::Error as StdError;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// Which HTTP transport to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpTransport {
    StreamableHttp,
    /// The legacy HTTP+SSE transport (protocol 2024-11-05).
    Sse,
    /// Legacy SSE first when the path ends in `/sse`, streamable HTTP first
    /// otherwise; the other is tried when the first finds no such endpoint.
    Auto,
}

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const METHOD_HEADER: &str = "mcp-method";
/// The longest the closing `DELETE` of a session may take.
const DELETE_WAIT: Duration = Duration::from_secs(1);
/// A readiness answer is a few hundred bytes; anything this big is not one.
const BODY_LIMIT: usize = 1 << 20;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One probe attempt against `url`; see [`super::probe_url`].
pub(crate) async fn probe(
    url: &str,
    headers: &[HttpHeader],
    transport: HttpTransport,
    attempt_timeout: Duration,
) -> Result<(Identity, &'static str, Instant), ProbeError> {
    let deadline = Instant::now() + attempt_timeout;
    let parsed = Url::parse(url).map_err(|e| ProbeError::InvalidUrl {
        url: crate::model::urls::redact(url),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ProbeError::InvalidUrl {
            url: crate::model::urls::redact(url),
            reason: "the scheme must be http or https".into(),
        });
    }
    let extra = header_map(headers)?;
    let client = client()?;
    let probe = Probe {
        client: &client,
        extra: &extra,
        deadline,
        attempt_timeout,
    };
    match transport {
        HttpTransport::StreamableHttp => probe.streamable(&parsed).await,
        HttpTransport::Sse => probe.legacy(&parsed).await.map_err(LegacyError::into_inner),
        HttpTransport::Auto if parsed.path().ends_with("/sse") => {
            match probe.legacy(&parsed).await {
                Err(LegacyError::NoStream(_)) => probe.streamable(&parsed).await,
                other => other.map_err(LegacyError::into_inner),
            }
        }
        HttpTransport::Auto => match probe.streamable(&parsed).await {
            Err(
                original @ ProbeError::HttpStatus {
                    status: 404 | 405, ..
                },
            ) => {
                match probe.legacy(&parsed).await {
                    // Neither transport lives here; the POST's status says more.
                    Err(LegacyError::NoStream(_)) => Err(original),
                    other => other.map_err(LegacyError::into_inner),
                }
            }
            other => other,
        },
    }
}

/// The caller's headers as hyper's, built at the last moment so that a
/// secret stays in its redacting [`crate::model::SecretValue`] until here.
fn header_map(headers: &[HttpHeader]) -> Result<HeaderMap, ProbeError> {
    let mut map = HeaderMap::new();
    for h in headers {
        let bad = |reason: &str| ProbeError::BadHeader {
            name: h.name.clone(),
            reason: reason.to_owned(),
        };
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| bad("not a valid header name"))?;
        if PROBE_HEADERS.contains(&name.as_str()) {
            return Err(bad("the probe sets this header itself"));
        }
        // From bytes, not from a str: UTF-8 beyond ASCII is legal (obs-text).
        let mut value = HeaderValue::from_bytes(h.value.expose().as_bytes())
            .map_err(|_| bad("the value has a control character (such as a line break)"))?;
        value.set_sensitive(h.value.is_sensitive());
        map.append(name, value);
    }
    Ok(map)
}

/// A request builder with the caller's headers already on it.
fn builder(method: Method, uri: Uri, extra: &HeaderMap) -> Builder {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in extra {
        builder = builder.header(name, value.clone());
    }
    builder
}

fn client() -> Result<HttpClient, ProbeError> {
    static TLS: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let tls = TLS
        .get_or_init(|| {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|builder| Arc::new(builder.with_webpki_roots().with_no_client_auth()))
            .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| ProbeError::Connect(format!("cannot set up TLS: {e}")))?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // Probe requests are tiny: do not let Nagle hold them back.
    http.set_nodelay(true);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

struct Probe<'a> {
    client: &'a HttpClient,
    /// The caller's headers, for every request.
    extra: &'a HeaderMap,
    deadline: Instant,
    attempt_timeout: Duration,
}

/// A legacy SSE failure, split by whether an event stream was found at all
/// (which decides whether auto mode tries the other transport).
enum LegacyError {
    NoStream(ProbeError),
    Other(ProbeError),
}

impl LegacyError {
    fn into_inner(self) -> ProbeError {
        match self {
            LegacyError::NoStream(e) | LegacyError::Other(e) => e,
        }
    }
}

impl Probe<'_> {
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, ProbeError> {
        tokio::time::timeout_at(self.deadline, self.client.request(request))
            .await
            .map_err(|_elapsed| ProbeError::Timeout(self.attempt_timeout))?
            .map_err(client_error)
    }

    async fn streamable(&self, url: &Url) -> Result<(Identity, &'static str, Instant), ProbeError> {
        let mut channel = Streamable {
            client: self.client,
            extra: self.extra,
            uri: to_uri(url)?,
            path: url.path().to_owned(),
            session: None,
        };
        let identity =
            mcp::handshake(&mut channel, self.deadline, self.attempt_timeout, true).await?;
        let answered = Instant::now();
        if let Some(session) = channel.session.take() {
            // Ending the session frees it on the server; a 405 means the
            // server does not let clients end sessions, which is fine too.
            let request = builder(Method::DELETE, channel.uri.clone(), self.extra)
                .header(SESSION_HEADER, session)
                .header(VERSION_HEADER, identity.protocol_version.as_str())
                .body(Full::default());
            // Capped short: a server slow to end a session must not hold up
            // a probe that has already succeeded.
            if let Ok(request) = request {
                let until = self.deadline.min(answered + DELETE_WAIT);
                let _ = tokio::time::timeout_at(until, self.client.request(request)).await;
            }
        }
        Ok((identity, "streamable-http", answered))
    }

    async fn legacy(&self, url: &Url) -> Result<(Identity, &'static str, Instant), LegacyError> {
        let uri = to_uri(url).map_err(LegacyError::NoStream)?;
        let request = builder(Method::GET, uri, self.extra)
            .header(ACCEPT, "text/event-stream")
            .body(Full::default())
            .map_err(|e| LegacyError::NoStream(ProbeError::Http(e.to_string())))?;
        let response = self.send(request).await.map_err(LegacyError::NoStream)?;
        let status = response.status();
        if !status.is_success() {
            return Err(LegacyError::NoStream(ProbeError::status(
                status.as_u16(),
                url.path(),
            )));
        }
        if !is_event_stream(&response) {
            return Err(LegacyError::NoStream(ProbeError::NotMcp(
                "GET did not return an event stream".into(),
            )));
        }
        let mut events = SseStream::new(response.into_body());
        let endpoint = tokio::time::timeout_at(self.deadline, endpoint_event(&mut events))
            .await
            .map_err(|_elapsed| LegacyError::Other(ProbeError::Timeout(self.attempt_timeout)))?
            .map_err(LegacyError::Other)?;
        let endpoint = same_origin_endpoint(url, &endpoint).map_err(LegacyError::Other)?;
        let mut channel = LegacySse {
            client: self.client,
            extra: self.extra,
            uri: to_uri(&endpoint).map_err(LegacyError::Other)?,
            path: endpoint.path().to_owned(),
            events,
        };
        // HTTP+SSE was retired before 2026-07-28, so nothing behind it
        // speaks server/discover: go straight to initialize.
        let identity = mcp::handshake(&mut channel, self.deadline, self.attempt_timeout, false)
            .await
            .map_err(LegacyError::Other)?;
        Ok((identity, "sse", Instant::now()))
    }
}

/// Where the legacy transport's `endpoint` event says to POST: relative to
/// the SSE URL, and only on its origin (scheme, host and port), as the MCP
/// SDKs do. Every POST carries the server's headers, secrets included, so an
/// endpoint elsewhere (a compromised or confused server pointing at a host
/// it controls) must not be followed.
fn same_origin_endpoint(sse: &Url, event: &str) -> Result<Url, ProbeError> {
    let endpoint = sse
        .join(event.trim())
        .map_err(|e| ProbeError::NotMcp(format!("bad endpoint event: {e}")))?;
    if endpoint.origin() != sse.origin() {
        return Err(ProbeError::NotMcp(format!(
            "the endpoint event names another origin ({}), where the server's headers would go; only {} is followed",
            endpoint.origin().ascii_serialization(),
            sse.origin().ascii_serialization()
        )));
    }
    Ok(endpoint)
}

fn to_uri(url: &Url) -> Result<Uri, ProbeError> {
    url.as_str()
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| ProbeError::InvalidUrl {
            url: crate::model::urls::redact(url.as_str()),
            reason: e.to_string(),
        })
}

fn is_event_stream(response: &Response<Incoming>) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

fn post(
    uri: &Uri,
    extra: &HeaderMap,
    message: &Value,
    headers: &[(&'static str, &str)],
) -> Result<Request<Full<Bytes>>, ProbeError> {
    let mut builder = builder(Method::POST, uri.clone(), extra)
        .header(ACCEPT, "application/json, text/event-stream")
        .header(CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(message.to_string())))
        .map_err(|e| ProbeError::Http(e.to_string()))
}

/// Streamable HTTP: one POST per message, the response in the body.
struct Streamable<'a> {
    client: &'a HttpClient,
    extra: &'a HeaderMap,
    uri: Uri,
    path: String,
    session: Option<String>,
}

impl Streamable<'_> {
    async fn post(
        &mut self,
        message: &Value,
        headers: &[(&'static str, &str)],
    ) -> Result<Response<Incoming>, ProbeError> {
        let mut all = headers.to_vec();
        if let Some(session) = &self.session {
            all.push((SESSION_HEADER, session));
        }
        let request = post(&self.uri, self.extra, message, &all)?;
        let response = self.client.request(request).await.map_err(client_error)?;
        if let Some(session) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            self.session = Some(session.to_owned());
        }
        Ok(response)
    }
}

impl Channel for Streamable<'_> {
    async fn call(
        &mut self,
        request: Value,
        id: u64,
        modern_version: Option<&str>,
    ) -> Result<Reply, ProbeError> {
        let method = request
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let headers: Vec<(&'static str, &str)> = match modern_version {
            // 2026-07-28 mirrors the version and the method in headers.
            Some(version) => vec![(VERSION_HEADER, version), (METHOD_HEADER, &method)],
            None => Vec::new(),
        };
        let response = self.post(&request, &headers).await?;
        let status = response.status();
        if status.is_success() {
            return read_answer(response, id).await.map(Reply::Answer);
        }
        if matches!(
            status,
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        ) {
            let body = read_body(response.into_body())
                .await
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            return Ok(Reply::Rejected {
                status: status.as_u16(),
                path: self.path.clone(),
                body,
            });
        }
        Err(ProbeError::status(status.as_u16(), self.path.as_str()))
    }

    async fn notify(&mut self, notification: Value, version: &str) -> Result<(), ProbeError> {
        let response = self
            .post(&notification, &[(VERSION_HEADER, version)])
            .await?;
        status_only(response, &self.path)
    }
}

/// Legacy HTTP+SSE: POSTs go to the endpoint the stream named, answers come
/// back on the stream.
struct LegacySse<'a> {
    client: &'a HttpClient,
    extra: &'a HeaderMap,
    uri: Uri,
    path: String,
    events: SseStream<Incoming>,
}

impl Channel for LegacySse<'_> {
    async fn call(
        &mut self,
        request: Value,
        id: u64,
        _modern_version: Option<&str>,
    ) -> Result<Reply, ProbeError> {
        let response = self
            .client
            .request(post(&self.uri, self.extra, &request, &[])?)
            .await
            .map_err(client_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ProbeError::status(status.as_u16(), self.path.as_str()));
        }
        // The POST is normally answered "202 Accepted"; a server that puts the
        // response in the POST's body as well is taken at its word.
        let body = read_body(response.into_body()).await?;
        if let Some(answer) = serde_json::from_slice(&body)
            .ok()
            .and_then(|b| mcp::response_in(b, id))
        {
            return Ok(Reply::Answer(answer));
        }
        next_response(&mut self.events, id).await.map(Reply::Answer)
    }

    async fn notify(&mut self, notification: Value, _version: &str) -> Result<(), ProbeError> {
        let response = self
            .client
            .request(post(&self.uri, self.extra, &notification, &[])?)
            .await
            .map_err(client_error)?;
        status_only(response, &self.path)
    }
}

fn status_only(response: Response<Incoming>, path: &str) -> Result<(), ProbeError> {
    if response.status().is_success() {
        Ok(())
    } else {
        Err(ProbeError::status(response.status().as_u16(), path))
    }
}

/// Reads the response to `id` from a successful POST: a JSON body, or an SSE
/// stream whose `message` events carry JSON-RPC messages.
async fn read_answer(response: Response<Incoming>, id: u64) -> Result<Value, ProbeError> {
    if is_event_stream(&response) {
        let mut events = SseStream::new(response.into_body());
        return next_response(&mut events, id).await;
    }
    let body = read_body(response.into_body()).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ProbeError::NotMcp("empty response to a request".into()));
    }
    let json: Value = serde_json::from_slice(&body)
        .map_err(|_| ProbeError::NotMcp("response is not JSON-RPC".into()))?;
    let is_rpc = match &json {
        Value::Array(items) => items.iter().any(mcp::is_jsonrpc),
        other => mcp::is_jsonrpc(other),
    };
    if !is_rpc {
        return Err(ProbeError::NotMcp("response is not JSON-RPC".into()));
    }
    mcp::response_in(json, id)
        .ok_or_else(|| ProbeError::NotMcp(format!("no response to request {id} in the body")))
}

async fn read_body(body: Incoming) -> Result<Bytes, ProbeError> {
    match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ProbeError::NotMcp(
            format!("response larger than {} KiB", BODY_LIMIT / 1024),
        )),
        Err(error) => Err(chain_error(error.as_ref())),
    }
}

/// Waits for the legacy transport's `endpoint` event and returns its data.
async fn endpoint_event(events: &mut SseStream<Incoming>) -> Result<String, ProbeError> {
    while let Some(event) = events.next().await {
        let event = event.map_err(sse_error)?;
        if event.event.as_deref() == Some("endpoint") {
            return event
                .data
                .ok_or_else(|| ProbeError::NotMcp("endpoint event has no data".into()));
        }
    }
    Err(ProbeError::Closed)
}

/// Reads `message` events until the response to `id`. Other messages (server
/// requests, notifications, comments) are skipped.
async fn next_response(events: &mut SseStream<Incoming>, id: u64) -> Result<Value, ProbeError> {
    let mut saw_non_rpc = false;
    while let Some(event) = events.next().await {
        let event = event.map_err(sse_error)?;
        if !matches!(event.event.as_deref(), None | Some("message")) {
            continue;
        }
        let Some(data) = event.data else { continue };
        match serde_json::from_str::<Value>(&data) {
            Ok(message) => {
                if let Some(answer) = mcp::response_in(message, id) {
                    return Ok(answer);
                }
            }
            // Priming events with empty data are allowed since 2025-11-25.
            Err(_) if data.trim().is_empty() => {}
            Err(_) => saw_non_rpc = true,
        }
    }
    Err(if saw_non_rpc {
        ProbeError::NotMcp("response is not JSON-RPC".into())
    } else {
        ProbeError::Closed
    })
}

fn sse_error(error: sse_stream::Error) -> ProbeError {
    match error {
        sse_stream::Error::Body(inner) => chain_error(inner.as_ref()),
        other => ProbeError::NotMcp(format!("bad event stream: {other}")),
    }
}

fn client_error(error: hyper_util::client::legacy::Error) -> ProbeError {
    if error.is_connect() {
        if io_kind(&error) == Some(std::io::ErrorKind::ConnectionRefused) {
            return ProbeError::ConnectionRefused;
        }
        return ProbeError::Connect(innermost(&error));
    }
    chain_error(&error)
}

/// Classifies an error from hyper by what its causes say: a peer that went
/// away before answering, or something else.
fn chain_error(error: &(dyn StdError + 'static)) -> ProbeError {
    use std::io::ErrorKind::*;
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_closed() || hyper.is_canceled())
        {
            return ProbeError::Closed;
        }
        current = e.source();
    }
    if matches!(
        io_kind(error),
        Some(ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe)
    ) {
        return ProbeError::Closed;
    }
    ProbeError::Http(innermost(error))
}

fn io_kind(error: &(dyn StdError + 'static)) -> Option<std::io::ErrorKind> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        current = e.source();
    }
    None
}

/// The deepest cause's message: hyper's outer layers only say "client error".
fn innermost(error: &(dyn StdError + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// A legacy HTTP+SSE server as a pair of byte streams, the shape of a stdio
/// server, for a bridge that holds one event stream per instance and
/// shares it among clients: what it reads are the stream's `message`
/// events, one JSON-RPC message per line; each line it writes is POSTed, in
/// order, to the endpoint the stream named (on the stream's origin only).
/// `extra` goes with every request. Opening (the GET and the `endpoint`
/// event) is bounded by `timeout`, and so is each POST; a POST that fails
/// ends the stream too, so requests waiting on it fail at once instead of
/// at their own deadline.
pub(crate) async fn legacy_pipe(
    url: &str,
    extra: HeaderMap,
    timeout: Duration,
) -> Result<super::Pipe, ProbeError> {
    use tokio::io::AsyncBufReadExt;
    let parsed = Url::parse(url).map_err(|e| ProbeError::InvalidUrl {
        url: crate::model::urls::redact(url),
        reason: e.to_string(),
    })?;
    let client = client()?;
    let request = builder(Method::GET, to_uri(&parsed)?, &extra)
        .header(ACCEPT, "text/event-stream")
        .body(Full::default())
        .map_err(|e| ProbeError::Http(e.to_string()))?;
    let opened = async {
        let response = client.request(request).await.map_err(client_error)?;
        if !response.status().is_success() {
            return Err(ProbeError::status(
                response.status().as_u16(),
                parsed.path(),
            ));
        }
        if !is_event_stream(&response) {
            return Err(ProbeError::NotMcp(
                "GET did not return an event stream".into(),
            ));
        }
        let mut events = SseStream::new(response.into_body());
        let endpoint = endpoint_event(&mut events).await?;
        Ok((events, same_origin_endpoint(&parsed, &endpoint)?))
    };
    let (events, endpoint) = tokio::time::timeout(timeout, opened)
        .await
        .map_err(|_elapsed| ProbeError::Timeout(timeout))??;
    let uri = to_uri(&endpoint)?;
    let path = endpoint.path().to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let lines = events.take_until(stopped).filter_map(|event| async move {
        match event {
            Ok(e) if matches!(e.event.as_deref(), None | Some("message")) => {
                e.data.map(|d| Ok(Bytes::from(d + "\n")))
            }
            Ok(_) => None,
            Err(e) => Some(Err(std::io::Error::other(sse_error(e).to_string()))),
        }
    });
    let reader = tokio_util::io::StreamReader::new(Box::pin(lines));
    let (writer, written) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        // Held until the writer side ends: dropping it ends the reader.
        let _stop = stop;
        let mut lines = tokio::io::BufReader::new(written).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let sent = async {
                let response = client
                    .request(post(&uri, &extra, &message, &[])?)
                    .await
                    .map_err(client_error)?;
                let status = response.status();
                // The answer comes on the event stream; the body is drained
                // so the connection can be used again.
                let _ = read_body(response.into_body()).await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(ProbeError::status(status.as_u16(), &path))
                }
            };
            match tokio::time::timeout(timeout, sent).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "a legacy SSE server refused a message; closing its stream");
                    return;
                }
                Err(_) => {
                    tracing::warn!(
                        "a legacy SSE server did not take a message in time; closing its stream"
                    );
                    return;
                }
            }
        }
    });
    Ok(super::Pipe {
        reader: Box::pin(reader),
        writer: Box::pin(writer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HttpHeaderValue, SecretValue};

    #[test]
    fn secret_headers_are_marked_sensitive_and_plain_ones_are_not() {
        let map = header_map(&[
            HttpHeader {
                name: "Authorization".into(),
                value: HttpHeaderValue::Sensitive(SecretValue::new("Bearer t0k3n".into())),
            },
            HttpHeader {
                name: "X-Team".into(),
                value: HttpHeaderValue::Plain("platform".into()),
            },
        ])
        .expect("valid headers");
        assert!(map["authorization"].is_sensitive());
        assert_eq!(map["authorization"], "Bearer t0k3n");
        assert!(!map["x-team"].is_sensitive());
        // hyper prints a sensitive value as `Sensitive`, so a debug log of a
        // request cannot show it.
        assert!(!format!("{map:?}").contains("t0k3n"), "{map:?}");
    }

    #[test]
    fn an_endpoint_is_followed_only_on_the_sse_urls_origin() {
        let sse = Url::parse("http://127.0.0.1:8000/sse").expect("url");
        for (event, followed) in [
            (
                "/messages?sessionId=7",
                "http://127.0.0.1:8000/messages?sessionId=7",
            ),
            (" messages ", "http://127.0.0.1:8000/messages"),
            ("http://127.0.0.1:8000/m", "http://127.0.0.1:8000/m"),
        ] {
            assert_eq!(
                same_origin_endpoint(&sse, event).expect(event).as_str(),
                followed
            );
        }
        for event in [
            "http://127.0.0.1:8001/messages",
            "https://127.0.0.1:8000/messages",
            "http://localhost:8000/messages",
            "//evil.example/messages",
        ] {
            let error = same_origin_endpoint(&sse, event)
                .expect_err(event)
                .to_string();
            assert!(error.contains("another origin"), "{event}: {error}");
        }
    }

    #[test]
    fn headers_the_probe_owns_are_refused() {
        let error = header_map(&[HttpHeader {
            name: "Mcp-Session-Id".into(),
            value: HttpHeaderValue::Plain("forged".into()),
        }])
        .expect_err("a header the probe sets");
        assert_eq!(
            error.to_string(),
            "header Mcp-Session-Id: the probe sets this header itself"
        );
    }
}
