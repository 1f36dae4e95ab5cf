//! The MCP readiness probe (design §6) against real servers: the project's
//! rmcp fixture over streamable HTTP and stdio, and small hand-written servers
//! of each era and transport, plus the failures whose reasons end up on
//! instances. Servers listen on 127.0.0.1:0; every wait is a deadline.

#[path = "support/fixture.rs"]
mod fixture;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use mcpctl::model::{HttpHeader, HttpHeaderValue, Probe, SecretValue};
use mcpctl::probe::{
    Connection, Era, HttpTransport, ProbeError, ProbeInfo, probe_stdio, probe_url, readiness, retry,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

const PATIENCE: Duration = Duration::from_secs(20);
const ATTEMPT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The rmcp fixture

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("cannot bind a free port");
    listener.local_addr().expect("no local address").port()
}

fn spawn_fixture(args: &[&str], piped: bool) -> Child {
    let mut command = Command::new(fixture::fixture_binary());
    command.args(args).kill_on_drop(true);
    if piped {
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
    } else {
        command.stdin(std::process::Stdio::null());
    }
    command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the fixture: {e}"))
}

/// The fixture on streamable HTTP, and its /mcp URL.
fn http_fixture(extra: &[&str]) -> (Child, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--transport", "http", "--listen", &listen];
    args.extend_from_slice(extra);
    let child = spawn_fixture(&args, false);
    (child, format!("http://{listen}/mcp"))
}

/// Probes until the fixture has started listening.
async fn probe_when_up(url: &str) -> ProbeInfo {
    retry(PATIENCE, || {
        probe_url(url, &[], HttpTransport::Auto, ATTEMPT)
    })
    .await
    .unwrap_or_else(|e| panic!("the fixture never answered at {url}: {e}"))
}

async fn probe_child(child: &mut Child) -> Result<ProbeInfo, ProbeError> {
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let stdin = child.stdin.as_mut().expect("piped stdin");
    probe_stdio(stdout, stdin, ATTEMPT).await
}

// rmcp 3.11 implements server/discover, so the fixture lands in the 2026 era
// on both transports.
fn assert_fixture(info: &ProbeInfo, transport: &str) {
    assert_eq!(info.server_name, "mcp-fixture", "{info:?}");
    assert_eq!(info.era, Era::Discover2026, "{info:?}");
    assert_eq!(info.protocol_version, "2026-07-28", "{info:?}");
    assert_eq!(info.transport, transport, "{info:?}");
}

#[tokio::test]
async fn fixture_over_streamable_http() {
    let (_child, url) = http_fixture(&[]);
    let info = probe_when_up(&url).await;
    assert_fixture(&info, "streamable-http");
    // Explicit transport gives the same answer.
    let info = probe_url(&url, &[], HttpTransport::StreamableHttp, ATTEMPT)
        .await
        .expect("second probe");
    assert_fixture(&info, "streamable-http");
}

#[tokio::test]
async fn fixture_over_stdio() {
    let mut child = spawn_fixture(&["--transport", "stdio"], true);
    let info = probe_child(&mut child).await.expect("stdio probe");
    assert_fixture(&info, "stdio");
}

#[tokio::test]
async fn fixture_over_stdio_with_log_lines_on_stdout_first() {
    let mut child = spawn_fixture(&["--transport", "stdio", "--log-stdout", "3"], true);
    let info = probe_child(&mut child).await.expect("stdio probe");
    assert_fixture(&info, "stdio");
}

#[tokio::test]
async fn retry_waits_for_a_slow_starter() {
    let (_child, url) = http_fixture(&["--delay-start", "1500"]);
    let started = Instant::now();
    let info = retry(PATIENCE, || {
        probe_url(&url, &[], HttpTransport::Auto, ATTEMPT)
    })
    .await
    .expect("the slow starter never answered");
    assert_fixture(&info, "streamable-http");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "answered after only {:?}, before the fixture could listen",
        started.elapsed()
    );
}

#[tokio::test]
async fn latency_against_the_fixture() {
    fn median(mut samples: Vec<Duration>) -> Duration {
        samples.sort();
        samples[samples.len() / 2]
    }
    let (_http, url) = http_fixture(&[]);
    probe_when_up(&url).await;
    let mut http = Vec::new();
    for _ in 0..20 {
        let info = probe_url(&url, &[], HttpTransport::StreamableHttp, ATTEMPT)
            .await
            .expect("http probe");
        http.push(info.latency);
    }
    let mut child = spawn_fixture(&["--transport", "stdio"], true);
    let mut stdio = Vec::new();
    for _ in 0..20 {
        stdio.push(probe_child(&mut child).await.expect("stdio probe").latency);
    }
    let (http, stdio) = (median(http), median(stdio));
    eprintln!(
        "probe latency against the fixture, median of 20 ({} build): streamable HTTP {:.2} ms, stdio {:.2} ms",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        http.as_secs_f64() * 1000.0,
        stdio.as_secs_f64() * 1000.0
    );
    assert!(http < Duration::from_secs(1) && stdio < Duration::from_secs(1));
}

// ---------------------------------------------------------------------------
// Servers that want credentials

const TOKEN: &str = "lin_api_s3cr3t-token-0123456789";

fn bearer(token: &str) -> Vec<HttpHeader> {
    vec![
        HttpHeader {
            name: "Authorization".into(),
            value: HttpHeaderValue::Sensitive(SecretValue::new(format!("Bearer {token}"))),
        },
        HttpHeader {
            name: "X-Team".into(),
            value: HttpHeaderValue::Plain("platform".into()),
        },
    ]
}

/// The first answer that is not "connection refused": the fixture has started.
async fn first_answer(url: &str, headers: &[HttpHeader]) -> Result<ProbeInfo, ProbeError> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match probe_url(url, headers, HttpTransport::Auto, ATTEMPT).await {
            Err(ProbeError::ConnectionRefused) if Instant::now() < deadline => {
                // Polling a starting process against a deadline.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn a_server_that_wants_a_bearer_token_is_ready_only_with_it() {
    let (_child, url) = http_fixture(&["--require-bearer", TOKEN]);
    let reason = first_answer(&url, &[])
        .await
        .expect_err("no token, no handshake")
        .to_string();
    assert_eq!(reason, "HTTP 401 from /mcp: check the server's headers");

    // What an instance would record: the reason, never the value sent.
    let wrong = bearer("lin_api_wrong-token-9876543210");
    let not_ready = readiness(
        Connection::Url {
            url: &url,
            headers: &wrong,
        },
        ATTEMPT,
    )
    .await;
    assert_eq!(
        not_ready.probe,
        Probe::NotReady("HTTP 401 from /mcp: check the server's headers".into())
    );
    assert!(!format!("{not_ready:?}").contains("wrong-token"));

    let right = bearer(TOKEN);
    let ready = readiness(
        Connection::Url {
            url: &url,
            headers: &right,
        },
        ATTEMPT,
    )
    .await;
    assert!(
        matches!(&ready.probe, Probe::Ready(how) if how.contains("mcp-fixture")),
        "{ready:?}"
    );
    // Headers print redacted, so a stray `{:?}` of a probe's input cannot leak them.
    assert!(!format!("{right:?}").contains(TOKEN), "{right:?}");
}

#[tokio::test]
async fn every_request_of_a_streamable_session_carries_the_headers() {
    let (addr, log) = serve(|seen: Seen| async move {
        let id = seen.body["id"].clone();
        match (seen.method.as_str(), seen.rpc_method()) {
            ("POST", "server/discover") => json_reply(method_not_found(&id)),
            ("POST", "initialize") => {
                let mut reply = json_reply(initialize_result(&id, "2025-06-18", "sessions"));
                reply.headers_mut().insert(
                    "mcp-session-id",
                    hyper::header::HeaderValue::from_static("s-1"),
                );
                reply
            }
            ("POST", _) => respond(202, "text/plain", ""),
            ("DELETE", _) => respond(200, "text/plain", ""),
            _ => respond(405, "text/plain", "no"),
        }
    })
    .await;
    let info = probe_url(
        &format!("http://{addr}/mcp"),
        &bearer(TOKEN),
        HttpTransport::StreamableHttp,
        ATTEMPT,
    )
    .await
    .expect("probe");
    assert_eq!(info.server_name, "sessions");
    let requests = seen(&log);
    let methods: Vec<String> = requests
        .iter()
        .map(|s| format!("{} {}", s.method, s.rpc_method()))
        .collect();
    assert_eq!(
        methods,
        [
            "POST server/discover",
            "POST initialize",
            "POST notifications/initialized",
            "DELETE ",
        ]
    );
    for r in &requests {
        let expected = format!("Bearer {TOKEN}");
        assert_eq!(r.header("authorization"), Some(expected.as_str()), "{r:?}");
        assert_eq!(r.header("x-team"), Some("platform"), "{r:?}");
    }
}

#[tokio::test]
async fn every_request_of_a_legacy_sse_probe_carries_the_headers() {
    let (addr, log) = legacy_sse_server().await;
    let info = probe_url(
        &format!("http://{addr}/sse"),
        &bearer(TOKEN),
        HttpTransport::Sse,
        ATTEMPT,
    )
    .await
    .expect("probe");
    assert_eq!(info.transport, "sse");
    let requests = seen(&log);
    let methods: Vec<String> = requests
        .iter()
        .map(|s| format!("{} {} {}", s.method, s.path, s.rpc_method()))
        .collect();
    assert_eq!(
        methods,
        [
            "GET /sse ",
            "POST /messages initialize",
            "POST /messages notifications/initialized",
        ]
    );
    for r in &requests {
        let expected = format!("Bearer {TOKEN}");
        assert_eq!(r.header("authorization"), Some(expected.as_str()), "{r:?}");
        assert_eq!(r.header("x-team"), Some("platform"), "{r:?}");
    }
}

#[tokio::test]
async fn a_header_that_cannot_be_sent_is_named_without_its_value() {
    let headers = [HttpHeader {
        name: "Authorization".into(),
        value: HttpHeaderValue::Sensitive(SecretValue::new(format!("Bearer {TOKEN}\r\nX-Evil: 1"))),
    }];
    // Nothing listens here: the header is refused before any connection.
    let url = format!("http://127.0.0.1:{}/mcp", refused_port());
    let error = probe_url(&url, &headers, HttpTransport::Auto, ATTEMPT)
        .await
        .expect_err("an unsendable header")
        .to_string();
    assert_eq!(
        error,
        "header Authorization: the value has a control character (such as a line break)"
    );
}

// ---------------------------------------------------------------------------
// Hand-written servers

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One request as a test server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: hyper::HeaderMap,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn rpc_method(&self) -> &str {
        self.body["method"].as_str().unwrap_or_default()
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn seen(log: &Log) -> Vec<Seen> {
    log.lock().expect("log poisoned").clone()
}

/// Serves `handler` with hyper on 127.0.0.1:0, logging every request.
async fn serve<H, F>(handler: H) -> (SocketAddr, Log)
where
    H: Fn(Seen) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let log: Log = Arc::default();
    let server_log = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            let log = server_log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let handler = handler.clone();
                    let log = log.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let bytes = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let seen = Seen {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_owned(),
                            headers: parts.headers,
                            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                        };
                        log.lock().expect("log poisoned").push(seen.clone());
                        Ok::<_, Infallible>(handler(seen).await)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, log)
}

fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).boxed_unsync())
        .expect("valid response")
}

fn json_reply(message: Value) -> Response<Body> {
    respond(200, "application/json", message.to_string())
}

fn method_not_found(id: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}})
}

fn initialize_result(id: &Value, version: &str, name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "protocolVersion": version,
        "capabilities": {"tools": {}},
        "serverInfo": {"name": name, "version": "0.9.1"}
    }})
}

#[tokio::test]
async fn a_2026_server_that_only_knows_discover() {
    let (addr, log) = serve(|seen: Seen| async move {
        let id = seen.body["id"].clone();
        match seen.rpc_method() {
            "server/discover" => json_reply(json!({"jsonrpc": "2.0", "id": id, "result": {
                "resultType": "complete",
                "supportedVersions": ["2026-07-28"],
                "capabilities": {"tools": {}},
                "ttlMs": 0,
                "cacheScope": "private",
                "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "hand-2026", "version": "3.0.0"}}
            }})),
            _ => json_reply(method_not_found(&id)),
        }
    })
    .await;
    let info = probe_url(
        &format!("http://{addr}/mcp"),
        &[],
        HttpTransport::Auto,
        ATTEMPT,
    )
    .await
    .expect("probe");
    assert_eq!(info.era, Era::Discover2026);
    assert_eq!(info.protocol_version, "2026-07-28");
    assert_eq!(
        (info.server_name.as_str(), info.server_version.as_str()),
        ("hand-2026", "3.0.0")
    );
    assert_eq!(info.transport, "streamable-http");

    let requests = seen(&log);
    assert_eq!(requests.len(), 1, "discover alone suffices: {requests:?}");
    let discover = &requests[0];
    assert_eq!(discover.header("mcp-protocol-version"), Some("2026-07-28"));
    assert_eq!(discover.header("mcp-method"), Some("server/discover"));
    assert_eq!(
        discover.header("accept"),
        Some("application/json, text/event-stream")
    );
    assert_eq!(
        discover.body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
    assert!(
        discover.body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"].is_object()
    );
}

/// A 2025-era streamable HTTP server that frames every answer as SSE, keeps a
/// session, and does not know server/discover.
#[tokio::test]
async fn a_streamable_server_answering_in_sse_frames_falls_back_to_initialize() {
    fn sse(session: Option<&str>, body: String) -> Response<Body> {
        let mut builder = Response::builder()
            .status(200)
            .header("content-type", "text/event-stream");
        if let Some(session) = session {
            builder = builder.header("mcp-session-id", session);
        }
        builder
            .body(Full::new(Bytes::from(body)).boxed_unsync())
            .expect("valid response")
    }
    let (addr, log) = serve(|seen: Seen| async move {
        let id = seen.body["id"].clone();
        match (seen.method.as_str(), seen.rpc_method()) {
            ("POST", "server/discover") => sse(
                None,
                format!("event: message\ndata: {}\n\n", method_not_found(&id)),
            ),
            ("POST", "initialize") => sse(
                Some("sess-42"),
                // A priming event, a log notification, then the answer split
                // over two data lines (joined with a newline, still valid JSON).
                format!(
                    "id: 0\ndata:\n\n: comment\nevent: message\ndata: {}\n\nevent: message\ndata: {{\"jsonrpc\": \"2.0\",\ndata: \"id\": {id}, \"result\": {}}}\n\n",
                    json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "hi"}}),
                    initialize_result(&id, "2025-06-18", "framed")["result"]
                ),
            ),
            ("POST", _) => respond(202, "text/plain", ""),
            _ => respond(405, "text/plain", "no"),
        }
    })
    .await;
    let info = probe_url(
        &format!("http://{addr}/mcp"),
        &[],
        HttpTransport::Auto,
        ATTEMPT,
    )
    .await
    .expect("probe");
    assert_eq!(info.era, Era::Initialize2025);
    assert_eq!(info.protocol_version, "2025-06-18");
    assert_eq!(info.server_name, "framed");
    assert_eq!(info.transport, "streamable-http");

    let requests = seen(&log);
    let summary: Vec<(String, String)> = requests
        .iter()
        .map(|s| (s.method.clone(), s.rpc_method().to_owned()))
        .collect();
    assert_eq!(
        summary,
        [
            ("POST".into(), "server/discover".into()),
            ("POST".into(), "initialize".into()),
            ("POST".into(), "notifications/initialized".into()),
            ("DELETE".into(), String::new()),
        ]
    );
    let init = &requests[1];
    assert_eq!(init.body["params"]["protocolVersion"], "2025-11-25");
    assert_eq!(init.body["params"]["clientInfo"]["name"], "mcpctl-probe");
    assert_eq!(init.body["params"]["capabilities"], json!({}));
    for follow_up in &requests[2..] {
        assert_eq!(follow_up.header("mcp-session-id"), Some("sess-42"));
        assert_eq!(follow_up.header("mcp-protocol-version"), Some("2025-06-18"));
    }
}

/// A 2024-11-05 HTTP+SSE server: GET any path opens the stream, whose first
/// event names `/messages`; POSTs there are answered on the stream. A POST
/// anywhere else is 405, as on servers that predate streamable HTTP.
async fn legacy_sse_server() -> (SocketAddr, Log) {
    legacy_sse_server_pointing_at("/messages?sessionId=7").await
}

/// [`legacy_sse_server`] whose `endpoint` event says `endpoint`.
async fn legacy_sse_server_pointing_at(endpoint: &str) -> (SocketAddr, Log) {
    type Stream = tokio::sync::mpsc::UnboundedSender<String>;
    let stream: Arc<Mutex<Option<Stream>>> = Arc::default();
    let endpoint_event = format!("event: endpoint\ndata: {endpoint}\n\n");
    serve(move |seen: Seen| {
        let stream = stream.clone();
        let endpoint_event = endpoint_event.clone();
        async move {
            match (seen.method.as_str(), seen.path.as_str()) {
                ("GET", _) => {
                    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
                    let _ = sender.send(endpoint_event);
                    *stream.lock().expect("poisoned") = Some(sender);
                    let events =
                        futures_util::stream::unfold(receiver, |mut receiver| async move {
                            let event = receiver.recv().await?;
                            Some((
                                Ok::<_, Infallible>(Frame::data(Bytes::from(event))),
                                receiver,
                            ))
                        });
                    Response::builder()
                        .status(200)
                        .header("content-type", "text/event-stream")
                        .body(StreamBody::new(events).boxed_unsync())
                        .expect("valid response")
                }
                ("POST", "/messages") => {
                    let id = seen.body["id"].clone();
                    let answer = match seen.rpc_method() {
                        "initialize" => Some(initialize_result(&id, "2024-11-05", "legacy-sse")),
                        "notifications/initialized" => None,
                        _ => Some(method_not_found(&id)),
                    };
                    if let (Some(answer), Some(sender)) =
                        (answer, stream.lock().expect("poisoned").as_ref())
                    {
                        let _ = sender.send(format!("event: message\ndata: {answer}\n\n"));
                    }
                    respond(202, "text/plain", "Accepted")
                }
                _ => respond(405, "text/plain", "Method Not Allowed"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_legacy_http_sse_server() {
    let (addr, log) = legacy_sse_server().await;
    for (url, transport) in [
        (format!("http://{addr}/sse"), HttpTransport::Sse),
        // Auto tries legacy SSE first for a path ending in /sse ...
        (format!("http://{addr}/sse"), HttpTransport::Auto),
        // ... and otherwise after a POST got 405 and a GET got an event stream.
        (format!("http://{addr}/events"), HttpTransport::Auto),
    ] {
        let info = probe_url(&url, &[], transport, ATTEMPT)
            .await
            .unwrap_or_else(|e| panic!("{url} {transport:?}: {e}"));
        assert_eq!(info.transport, "sse", "{url} {transport:?}");
        assert_eq!(info.era, Era::Initialize2025);
        assert_eq!(info.protocol_version, "2024-11-05");
        assert_eq!(info.server_name, "legacy-sse");
    }
    let methods: Vec<String> = seen(&log)
        .iter()
        .map(|s| format!("{} {} {}", s.method, s.path, s.rpc_method()))
        .collect();
    assert!(
        methods.contains(&"POST /messages notifications/initialized".to_owned()),
        "{methods:?}"
    );
}

#[tokio::test]
async fn a_legacy_endpoint_on_another_origin_is_not_followed() {
    // Another port of the same host is another origin: it records whatever
    // reaches it, and answers as an MCP server would, so that only the
    // probe's refusal keeps the headers from it.
    let (elsewhere, received) = legacy_sse_server().await;
    let (addr, log) =
        legacy_sse_server_pointing_at(&format!("http://{elsewhere}/messages?sessionId=7")).await;
    let error = probe_url(
        &format!("http://{addr}/sse"),
        &bearer(TOKEN),
        HttpTransport::Sse,
        ATTEMPT,
    )
    .await
    .expect_err("an endpoint on another origin")
    .to_string();
    // Checked first: it is the point.
    let leaked: Vec<Seen> = seen(&received);
    assert!(leaked.is_empty(), "the other origin received {leaked:?}");
    assert_eq!(
        error,
        format!(
            "not MCP: the endpoint event names another origin (http://{elsewhere}), where the server's headers would go; only http://{addr} is followed"
        )
    );
    assert!(!error.contains(TOKEN), "{error}");
    let methods: Vec<String> = seen(&log)
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        methods,
        ["GET /sse"],
        "the stream was read, and nothing sent"
    );
}

/// An older stdio server that ignores methods it does not know: discover gets
/// no answer at all, and the probe must fall back to initialize in time.
#[tokio::test]
async fn a_stdio_server_silent_on_discover_gets_initialize_after_a_timeout() {
    use tokio::io::AsyncBufReadExt;
    let (ours, theirs) = tokio::io::duplex(4096);
    let (reader, writer) = tokio::io::split(ours);
    let server = tokio::spawn(async move {
        let (their_reader, mut their_writer) = tokio::io::split(theirs);
        let mut lines = tokio::io::BufReader::new(their_reader).lines();
        let mut methods = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let message: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let method = message["method"].as_str().unwrap_or_default().to_owned();
            if method == "initialize" {
                let answer = initialize_result(&message["id"], "2025-03-26", "quiet");
                let _ = their_writer
                    .write_all(format!("{answer}\n").as_bytes())
                    .await;
            }
            let done = method == "notifications/initialized";
            methods.push(method);
            if done {
                break;
            }
        }
        methods
    });
    let timeout = Duration::from_secs(2);
    let info = probe_stdio(reader, writer, timeout).await.expect("probe");
    assert_eq!(info.era, Era::Initialize2025);
    assert_eq!(info.protocol_version, "2025-03-26");
    assert_eq!(info.server_name, "quiet");
    assert!(
        info.latency >= timeout / 2 && info.latency < timeout,
        "discover gets half the attempt: {:?}",
        info.latency
    );
    assert_eq!(
        server.await.expect("server task"),
        ["server/discover", "initialize", "notifications/initialized"]
    );
}

// ---------------------------------------------------------------------------
// Failures, with the reason an instance would show

async fn probe_err(url: &str, timeout: Duration) -> String {
    match probe_url(url, &[], HttpTransport::Auto, timeout).await {
        Ok(info) => panic!("{url} unexpectedly answered: {info:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn every_response_503() {
    let (addr, _) = serve(|_| async { respond(503, "text/plain", "busy") }).await;
    assert_eq!(
        probe_err(&format!("http://{addr}/mcp"), ATTEMPT).await,
        "HTTP 503 from /mcp"
    );
}

#[tokio::test]
async fn http_200_with_a_body_that_is_not_mcp() {
    let (addr, _) = serve(|_| async {
        respond(
            200,
            "text/html",
            "<html><body>Welcome to nginx!</body></html>",
        )
    })
    .await;
    assert_eq!(
        probe_err(&format!("http://{addr}/mcp"), ATTEMPT).await,
        "not MCP: response is not JSON-RPC"
    );
    let (addr, _) = serve(|_| async { json_reply(json!({"status": "ok"})) }).await;
    assert_eq!(
        probe_err(&format!("http://{addr}/mcp"), ATTEMPT).await,
        "not MCP: response is not JSON-RPC"
    );
}

/// A raw TCP server: `on_connection` gets each accepted socket.
async fn raw_server<F, Fut>(on_connection: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(on_connection(stream));
        }
    });
    addr
}

/// Reads one request's head (the probe's bodies are small and arrive with it).
async fn read_request(stream: &mut tokio::net::TcpStream) {
    let mut buffer = Vec::new();
    let mut chunk = [0; 4096];
    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_times_out() {
    let addr = raw_server(|mut stream| async move {
        read_request(&mut stream).await;
        // Hold the connection open, silently, until the client leaves.
        let _ = stream.read(&mut [0; 1]).await;
    })
    .await;
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let reason = probe_err(&format!("http://{addr}/mcp"), timeout).await;
    let elapsed = started.elapsed();
    assert_eq!(reason, "timed out after 2s waiting for a response");
    assert!(
        elapsed < timeout + Duration::from_secs(1),
        "took {elapsed:?}"
    );

    // The same over stdio: a peer that reads and never writes.
    let (ours, theirs) = tokio::io::duplex(4096);
    let (reader, writer) = tokio::io::split(ours);
    let started = Instant::now();
    let result = probe_stdio(reader, writer, timeout).await;
    assert_eq!(
        result.map_err(|e| e.to_string()),
        Err("timed out after 2s waiting for a response".to_owned())
    );
    assert!(started.elapsed() < timeout + Duration::from_secs(1));
    drop(theirs);
}

#[tokio::test]
async fn a_server_that_closes_the_connection_mid_handshake() {
    // Half a response, then gone.
    let addr = raw_server(|mut stream| async move {
        read_request(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 300\r\n\r\n{\"jsonrpc\": \"2.0\", \"id\"")
            .await;
    })
    .await;
    assert_eq!(
        probe_err(&format!("http://{addr}/mcp"), ATTEMPT).await,
        "server closed the connection mid-handshake"
    );
    // No response at all.
    let addr = raw_server(|mut stream| async move { read_request(&mut stream).await }).await;
    assert_eq!(
        probe_err(&format!("http://{addr}/mcp"), ATTEMPT).await,
        "server closed the connection mid-handshake"
    );
    // A stdio server that exits after printing a log line.
    let (ours, mut theirs) = tokio::io::duplex(4096);
    let (reader, writer) = tokio::io::split(ours);
    theirs.write_all(b"starting up\n").await.expect("write");
    drop(theirs);
    assert_eq!(
        probe_stdio(reader, writer, ATTEMPT)
            .await
            .map_err(|e| e.to_string()),
        Err("server closed the connection mid-handshake".to_owned())
    );
}

fn refused_port() -> u16 {
    free_port()
}

#[tokio::test]
async fn connection_refused() {
    let port = refused_port();
    assert_eq!(
        probe_err(&format!("http://127.0.0.1:{port}/mcp"), ATTEMPT).await,
        "connection refused"
    );
    // https builds the rustls client without a process-wide crypto provider
    // (none is installed in this test binary): no panic, the same reason.
    assert_eq!(
        probe_err(&format!("https://127.0.0.1:{port}/mcp"), ATTEMPT).await,
        "connection refused"
    );
}

// `retry` on tokio's paused clock: time moves only when every task waits on
// a timer, so each attempt's moment is exact however loaded the machine is.
// The attempts are closures that only count; real servers are covered above.

#[tokio::test(start_paused = true)]
async fn retry_backs_off_doubling_up_to_2_s_and_gives_up_with_the_last_error() {
    let started = tokio::time::Instant::now();
    let mut attempts = Vec::new();
    let result = retry(Duration::from_secs(10), || {
        attempts.push(started.elapsed());
        let n = attempts.len();
        async move { Err(ProbeError::Connect(format!("attempt {n}"))) }
    })
    .await;
    assert_eq!(
        result.map_err(|e| e.to_string()),
        Err("cannot connect: attempt 9".to_owned())
    );
    let ms: Vec<u128> = attempts.iter().map(Duration::as_millis).collect();
    // Pauses of 100, 200, 400, 800, 1600 ms, then 2 s each; the next
    // attempt would start at 11.1 s, past the deadline.
    assert_eq!(ms, [0, 100, 300, 700, 1500, 3100, 5100, 7100, 9100]);
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn retry_returns_the_first_success() {
    let started = tokio::time::Instant::now();
    let mut attempts = Vec::new();
    let info = retry(PATIENCE, || {
        attempts.push(started.elapsed());
        let n = attempts.len();
        async move {
            if n < 4 {
                return Err(ProbeError::ConnectionRefused);
            }
            Ok(ProbeInfo {
                era: Era::Discover2026,
                protocol_version: "2026-07-28".into(),
                server_name: format!("answered attempt {n}"),
                server_version: String::new(),
                transport: "stdio",
                latency: Duration::ZERO,
            })
        }
    })
    .await
    .expect("the fourth attempt succeeds");
    assert_eq!(info.server_name, "answered attempt 4");
    assert_eq!(attempts.len(), 4);
    assert_eq!(started.elapsed(), Duration::from_millis(700));
}

#[tokio::test(start_paused = true)]
async fn retry_cuts_off_an_attempt_still_running_at_the_deadline() {
    let started = tokio::time::Instant::now();
    let mut attempts = 0;
    let result = retry(Duration::from_secs(1), || {
        attempts += 1;
        // The first fails at once; the second never answers.
        let first = attempts == 1;
        async move {
            if first {
                return Err(ProbeError::ConnectionRefused);
            }
            std::future::pending().await
        }
    })
    .await;
    assert_eq!(
        result.map_err(|e| e.to_string()),
        Err("timed out after 900ms waiting for a response".to_owned())
    );
    assert_eq!(attempts, 2);
    assert_eq!(started.elapsed(), Duration::from_secs(1));
}

// ---------------------------------------------------------------------------
// The `probe` subcommand

/// Runs the built `mcpctl probe` with these arguments.
fn mcpctl_probe(argv: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mcpctl"))
        .arg("probe")
        .args(argv)
        .env("NO_COLOR", "1")
        .output()
        .expect("run mcpctl probe")
}

#[tokio::test]
async fn cli_probe_succeeds_against_the_fixture_and_fails_with_the_reason() {
    let (_child, url) = http_fixture(&[]);
    probe_when_up(&url).await;
    let out = mcpctl_probe(&[&url, "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["server_name"], "mcp-fixture");
    assert_eq!(json["transport"], "streamable-http");

    let (_refusing, refusing_url) = http_fixture(&["--refuse"]);
    let started = Instant::now();
    let stderr = loop {
        let out = mcpctl_probe(&[&refusing_url]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "a refusing server is not ready: {out:?}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !stderr.contains("connection refused") || started.elapsed() > PATIENCE {
            break stderr;
        }
        // The refusing fixture may not be listening yet: poll against a deadline.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        stderr.contains(&format!("{refusing_url} is not ready: HTTP 503 from /mcp")),
        "{stderr}"
    );
}

#[tokio::test]
async fn cli_probe_sends_headers_and_never_prints_them() {
    let (_child, url) = http_fixture(&["--require-bearer", TOKEN]);
    first_answer(&url, &[])
        .await
        .expect_err("the fixture wants a token");

    let out = mcpctl_probe(&[
        &url,
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "-H",
        "X-Team:platform",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["server_name"], "mcp-fixture");

    for argv in [
        vec![url.as_str()],
        vec![
            url.as_str(),
            "-H",
            "Authorization: Bearer lin_api_wrong-token-9876543210",
        ],
    ] {
        let out = mcpctl_probe(&argv);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{url} is not ready: HTTP 401 from /mcp: check the server's headers"
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("wrong-token"), "{stderr}");
    }

    // A malformed or forbidden header is a usage error that does not quote the argument.
    for bad in [
        "Authorization Bearer lin_api_wrong-token",
        "Content-Type: lin_api_wrong-token",
    ] {
        let out = mcpctl_probe(&[&url, "-H", bad]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("invalid --header"), "{stderr}");
        assert!(!stderr.contains("wrong-token"), "{stderr}");
    }
}

#[test]
fn cli_probe_stdio_spawns_and_kills_the_command() {
    let binary = fixture::fixture_binary();
    let binary = binary.to_str().expect("utf-8 path");
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("fixture.pid");
    let stderr_file = dir.path().join("stderr");
    // The command inherits mcpctl's stderr. Were that a pipe, a command that
    // outlived mcpctl would hold it open and keep `output()` waiting: a hang
    // instead of a failure. A file cannot be held that way.
    let stderr = std::fs::File::create(&stderr_file).expect("stderr file");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcpctl"))
        .env("NO_COLOR", "1")
        .stderr(stderr)
        .args([
            "probe",
            "--stdio",
            "--timeout",
            "5s",
            "--",
            binary,
            "--transport",
            "stdio",
            "--pid-file",
            pid_file.to_str().expect("utf-8 path"),
            // Without it the command would leave by itself when mcpctl's
            // exit closes its stdin, and a missing kill would go unseen.
            "--outlive-stdin",
        ])
        .output()
        .expect("run mcpctl probe");
    let pid: Option<u32> = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|text| text.trim().parse().ok());
    let _reaper = pid.map(KillOnDrop);
    let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    assert!(out.status.success(), "{out:?}\nstderr: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("mcp-fixture") && stdout.contains("stdio"),
        "{stdout}"
    );

    let pid = pid.expect("the fixture wrote no pid file");
    // The kill may land a moment after mcpctl exits: poll against a deadline.
    fixture::eventually(Duration::from_secs(5), || match running_fixture(pid) {
        Some(cmdline) => Err(format!(
            "pid {pid} ({cmdline}) outlived `mcpctl probe --stdio`"
        )),
        None => Ok(()),
    });
}

/// The command line of `pid` if it is a live `mcp-fixture`. A zombie has an
/// empty one (it is dead, only not yet reaped), and a recycled pid another.
fn running_fixture(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
    cmdline.contains("mcp-fixture").then_some(cmdline)
}

/// Kills a fixture that a failed test left behind, so it does not outlive the run.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if running_fixture(self.0).is_some() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}

#[test]
fn cli_probe_needs_a_url_or_stdio() {
    let out = mcpctl_probe(&[]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error: {out:?}");
    let out = mcpctl_probe(&["http://x/mcp", "--stdio", "--", "srv"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[tokio::test]
async fn cli_probe_into_a_closed_pipe_ends_quietly() {
    let (addr, _log) = serve(|seen: Seen| async move {
        let id = seen.body["id"].clone();
        json_reply(initialize_result(&id, "2025-06-18", "quiet"))
    })
    .await;
    // The read end is closed before mcpctl starts, so its first write fails with EPIPE.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    // Spawned, not `output()`: tokio's `output()` would replace this stdout with a pipe of its own.
    let out = Command::new(env!("CARGO_BIN_EXE_mcpctl"))
        .args(["probe", &format!("http://{addr}/mcp")])
        .env("NO_COLOR", "1")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mcpctl probe")
        .wait_with_output()
        .await
        .expect("run mcpctl probe");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}
