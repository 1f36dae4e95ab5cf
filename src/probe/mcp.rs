//! The transport-independent half of the MCP readiness probe (design §6): the
//! messages it sends, how it reads the answers, and the era detection that
//! tries `server/discover` (2026-07-28 and newer) before falling back to the
//! `initialize` handshake (2025-11-25 and older).
//!
//! Transports implement [`Channel`]; [`handshake`] drives one over a shared
//! deadline. Nothing here touches the network.

use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// The revision whose `server/discover` the probe sends first.
pub const DISCOVER_VERSION: &str = "2026-07-28";
/// The revision the probe offers in `initialize`; servers may answer an older one.
pub const INITIALIZE_VERSION: &str = "2025-11-25";

/// JSON-RPC method not found.
const METHOD_NOT_FOUND: i64 = -32601;
/// 2026-07-28: the requested protocol version is not supported; `data.supported` lists what is.
const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// 2026-07-28: a capability the server needs from the client is missing.
const MISSING_REQUIRED_CLIENT_CAPABILITY: i64 = -32021;
/// 2026-07-28: an HTTP header contradicts the request body.
const HEADER_MISMATCH: i64 = -32020;

/// Which lifecycle the server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Era {
    /// It answered `server/discover` (protocol 2026-07-28 and newer).
    Discover2026,
    /// It answered `initialize` (protocol 2025-11-25 and older).
    Initialize2025,
}

impl Era {
    /// The handshake the era uses, as shown to people.
    pub fn handshake(self) -> &'static str {
        match self {
            Era::Discover2026 => "server/discover",
            Era::Initialize2025 => "initialize",
        }
    }
}

impl std::fmt::Display for Era {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Era::Discover2026 => "2026 (server/discover)",
            Era::Initialize2025 => "2025 (initialize)",
        })
    }
}

/// What a successful probe learnt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProbeInfo {
    pub era: Era,
    /// For [`Era::Initialize2025`], the `protocolVersion` the server answered.
    /// For [`Era::Discover2026`], the version the probe asked for if the server
    /// lists it, else the newest the server lists.
    pub protocol_version: String,
    /// Empty when the server does not say (discover results need not).
    pub server_name: String,
    pub server_version: String,
    /// `"streamable-http"`, `"sse"` or `"stdio"`.
    pub transport: &'static str,
    /// From the first byte sent to the handshake's answer (fallbacks included;
    /// the closing `DELETE` of a session is not).
    #[serde(rename = "latency_ms", serialize_with = "as_millis")]
    pub latency: Duration,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Why a probe failed. The `Display` text is short and is what instances keep
/// as their "not ready" reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("connection refused")]
    ConnectionRefused,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("HTTP {status} from {path}")]
    HttpStatus { status: u16, path: String },
    /// A 401 or 403: the server wants credentials it did not get.
    #[error("HTTP {status} from {path}: check the server's headers")]
    Unauthorized { status: u16, path: String },
    /// A header that cannot be sent. Never names the value.
    #[error("header {name}: {reason}")]
    BadHeader { name: String, reason: String },
    #[error("timed out after {} waiting for a response", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("not MCP: {0}")]
    NotMcp(String),
    #[error("server closed the connection mid-handshake")]
    Closed,
    #[error("server answered {method} with error {code}: {message}")]
    Rpc {
        method: &'static str,
        code: i64,
        message: String,
    },
    #[error("no common protocol version: the server supports {0}")]
    NoCommonVersion(String),
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("HTTP error: {0}")]
    Http(String),
    #[error("I/O error: {0}")]
    Io(String),
}

impl ProbeError {
    /// An HTTP error status, told apart when it is about credentials.
    pub(crate) fn status(status: u16, path: impl Into<String>) -> ProbeError {
        let path = path.into();
        match status {
            401 | 403 => ProbeError::Unauthorized { status, path },
            _ => ProbeError::HttpStatus { status, path },
        }
    }
}

/// What one request over a [`Channel`] produced.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The JSON-RPC response whose id matched the request.
    Answer(Value),
    /// An HTTP 400, 404 or 405: for `server/discover` a sign of an older
    /// server; the body is kept in case it is a JSON-RPC error after all.
    Rejected {
        status: u16,
        path: String,
        body: Option<Value>,
    },
}

/// One transport's way of carrying the probe's messages. Implementations need
/// not bound their waits: [`handshake`] does.
pub(crate) trait Channel {
    /// Sends a request and waits for the response with the same id.
    /// `modern_version` is set for `server/discover`, so that streamable HTTP
    /// can send it as the `MCP-Protocol-Version` header.
    async fn call(
        &mut self,
        request: Value,
        id: u64,
        modern_version: Option<&str>,
    ) -> Result<Reply, ProbeError>;

    /// Sends a notification, given the negotiated version.
    async fn notify(&mut self, notification: Value, version: &str) -> Result<(), ProbeError>;
}

/// What the handshake established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub era: Era,
    pub protocol_version: String,
    pub server_name: String,
    pub server_version: String,
}

pub(crate) fn discover_request(id: u64, version: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "server/discover",
        "params": { "_meta": {
            "io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": client_info(),
        } }
    })
}

pub(crate) fn initialize_request(id: u64) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": INITIALIZE_VERSION,
            "capabilities": {},
            "clientInfo": client_info(),
        }
    })
}

pub(crate) fn initialized_notification() -> Value {
    json!({ "jsonrpc": "2.0", "method": "notifications/initialized" })
}

fn client_info() -> Value {
    json!({ "name": "mcpctl-probe", "version": env!("CARGO_PKG_VERSION") })
}

/// Whether a value is a JSON-RPC 2.0 message at all.
pub(crate) fn is_jsonrpc(message: &Value) -> bool {
    message.get("jsonrpc").and_then(Value::as_str) == Some("2.0")
}

/// Whether a message is the response (result or error) to request `id`.
pub(crate) fn is_response_to(message: &Value, id: u64) -> bool {
    is_jsonrpc(message)
        && message.get("id") == Some(&json!(id))
        && (message.get("result").is_some() || message.get("error").is_some())
        && message.get("method").is_none()
}

/// Finds the response to `id` in a JSON body: one message or a batch.
pub(crate) fn response_in(body: Value, id: u64) -> Option<Value> {
    match body {
        Value::Array(items) => items.into_iter().find(|m| is_response_to(m, id)),
        message if is_response_to(&message, id) => Some(message),
        _ => None,
    }
}

/// The reading of a `server/discover` answer.
#[derive(Debug, PartialEq, Eq)]
enum Discovered {
    Modern(Identity),
    /// A 2026-era server that wants another version: ask again with this one.
    AskAgain(String),
    /// Not a 2026-era answer: fall back to `initialize`.
    Legacy,
}

fn read_discover(
    answer: &Value,
    asked: &str,
    already_asked: &[String],
) -> Result<Discovered, ProbeError> {
    if let Some(error) = answer.get("error") {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        return match code {
            UNSUPPORTED_PROTOCOL_VERSION => {
                let supported = versions(error.get("data").and_then(|d| d.get("supported")));
                // Versions before 2026-07-28 have no discover: if those are all
                // it speaks, initialize is the way in.
                let next = supported
                    .iter()
                    .filter(|v| v.as_str() >= DISCOVER_VERSION && !already_asked.contains(v))
                    .max();
                match next {
                    Some(v) => Ok(Discovered::AskAgain(v.clone())),
                    None if supported.iter().any(|v| v.as_str() < DISCOVER_VERSION) => {
                        Ok(Discovered::Legacy)
                    }
                    None => Err(ProbeError::NoCommonVersion(if supported.is_empty() {
                        "no version it names".into()
                    } else {
                        supported.join(", ")
                    })),
                }
            }
            // The server is 2026-era and refused this probe for a reason
            // initialize would not fix.
            MISSING_REQUIRED_CLIENT_CAPABILITY | HEADER_MISMATCH => Err(ProbeError::Rpc {
                method: "server/discover",
                code,
                message,
            }),
            // The expected answer of an older server.
            METHOD_NOT_FOUND => Ok(Discovered::Legacy),
            // Not specific to the 2026 era either (older servers answer
            // unknown methods with -32600, -32602, -32603 or their own codes).
            _ => Ok(Discovered::Legacy),
        };
    }
    let Some(result) = answer.get("result") else {
        return Ok(Discovered::Legacy);
    };
    let supported = versions(result.get("supportedVersions"));
    if supported.is_empty() {
        // Some older servers answer unknown methods with an empty result.
        return Ok(Discovered::Legacy);
    }
    let protocol_version = if supported.iter().any(|v| v == asked) {
        asked.to_owned()
    } else {
        // Never insist on one version: report the newest the server names.
        supported.iter().max().cloned().unwrap_or_default()
    };
    // The 2026-07-28 result carries the identity in `_meta`; a bare
    // `serverInfo` (as in initialize results) is accepted too.
    let info = result
        .get("_meta")
        .and_then(|m| m.get("io.modelcontextprotocol/serverInfo"))
        .or_else(|| result.get("serverInfo"));
    let (server_name, server_version) = name_and_version(info);
    Ok(Discovered::Modern(Identity {
        era: Era::Discover2026,
        protocol_version,
        server_name,
        server_version,
    }))
}

fn read_initialize(answer: &Value) -> Result<Identity, ProbeError> {
    if let Some(error) = answer.get("error") {
        return Err(ProbeError::Rpc {
            method: "initialize",
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        });
    }
    let result = answer.get("result").unwrap_or(&Value::Null);
    let Some(protocol_version) = result.get("protocolVersion").and_then(Value::as_str) else {
        return Err(ProbeError::NotMcp(
            "initialize result has no protocolVersion".into(),
        ));
    };
    let (server_name, server_version) = name_and_version(result.get("serverInfo"));
    Ok(Identity {
        era: Era::Initialize2025,
        protocol_version: protocol_version.to_owned(),
        server_name,
        server_version,
    })
}

fn versions(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn name_and_version(info: Option<&Value>) -> (String, String) {
    let field = |key: &str| {
        info.and_then(|i| i.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (field("name"), field("version"))
}

/// Runs the handshake over `channel` until `deadline`.
///
/// `server/discover` gets at most half of `attempt_timeout`, because some
/// older stdio servers never answer a method they do not know: the other half
/// is left for `initialize`. `try_discover` is false for legacy HTTP+SSE,
/// which was retired before 2026-07-28.
pub(crate) async fn handshake<C: Channel>(
    channel: &mut C,
    deadline: Instant,
    attempt_timeout: Duration,
    try_discover: bool,
) -> Result<Identity, ProbeError> {
    let mut next_id = 1;
    if try_discover {
        let discover_deadline = deadline.min(Instant::now() + attempt_timeout / 2);
        let mut asked: Vec<String> = Vec::new();
        let mut version = DISCOVER_VERSION.to_owned();
        // Two rounds at most: the first, and one more with a version the
        // server named in an "unsupported version" error.
        while asked.len() < 2 {
            asked.push(version.clone());
            let id = next_id;
            next_id += 1;
            let request = discover_request(id, &version);
            let reply = tokio::time::timeout_at(
                discover_deadline,
                channel.call(request, id, Some(&version)),
            )
            .await;
            let answer = match reply {
                Err(_elapsed) => {
                    tracing::debug!("server/discover timed out; trying initialize");
                    break;
                }
                Ok(Err(error)) => return Err(error),
                Ok(Ok(Reply::Answer(answer))) => answer,
                Ok(Ok(Reply::Rejected { status, body, .. })) => {
                    // A 2026-era HTTP server maps some of its errors to 400
                    // with the JSON-RPC error in the body.
                    match body.and_then(|b| response_in(b, id)) {
                        Some(answer) => answer,
                        None => {
                            tracing::debug!("server/discover got HTTP {status}; trying initialize");
                            break;
                        }
                    }
                }
            };
            match read_discover(&answer, &version, &asked)? {
                Discovered::Modern(identity) => return Ok(identity),
                Discovered::AskAgain(other) => version = other,
                Discovered::Legacy => break,
            }
        }
    }

    let id = next_id;
    let reply = tokio::time::timeout_at(deadline, channel.call(initialize_request(id), id, None))
        .await
        .map_err(|_elapsed| ProbeError::Timeout(attempt_timeout))??;
    let answer = match reply {
        Reply::Answer(answer) => answer,
        Reply::Rejected { status, path, body } => match body.and_then(|b| response_in(b, id)) {
            Some(answer) => answer,
            None => return Err(ProbeError::status(status, path)),
        },
    };
    let identity = read_initialize(&answer)?;
    // The answer to initialize already proves readiness; the notification is
    // the polite end of the handshake, so its failure does not fail the probe.
    if let Ok(Err(error)) = tokio::time::timeout_at(
        deadline,
        channel.notify(initialized_notification(), &identity.protocol_version),
    )
    .await
    {
        tracing::debug!("notifications/initialized failed: {error}");
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discover(answer: Value) -> Result<Discovered, ProbeError> {
        read_discover(&answer, DISCOVER_VERSION, &[DISCOVER_VERSION.to_owned()])
    }

    #[test]
    fn a_discover_result_is_modern_and_reads_server_info_from_meta() {
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "resultType": "complete",
            "supportedVersions": ["2025-11-25", "2026-07-28"],
            "capabilities": {},
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "s", "version": "1.2"}}
        }});
        assert_eq!(
            discover(answer),
            Ok(Discovered::Modern(Identity {
                era: Era::Discover2026,
                protocol_version: "2026-07-28".into(),
                server_name: "s".into(),
                server_version: "1.2".into(),
            }))
        );
    }

    #[test]
    fn a_discover_result_without_the_asked_version_reports_the_newest_listed() {
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "supportedVersions": ["2027-01-01", "2028-03-03"],
            "serverInfo": {"name": "future", "version": "9"}
        }});
        let Ok(Discovered::Modern(identity)) = discover(answer) else {
            panic!("not modern");
        };
        assert_eq!(identity.protocol_version, "2028-03-03");
        assert_eq!(identity.server_name, "future");
    }

    #[test]
    fn method_not_found_and_other_errors_fall_back() {
        for code in [METHOD_NOT_FOUND, -32600, -32602, -32603, 1] {
            let answer =
                json!({"jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": "x"}});
            assert_eq!(discover(answer), Ok(Discovered::Legacy), "code {code}");
        }
        let empty = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        assert_eq!(discover(empty), Ok(Discovered::Legacy));
    }

    #[test]
    fn modern_rejections_are_errors_not_fallbacks() {
        let answer = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": HEADER_MISMATCH, "message": "bad header"}});
        assert_eq!(
            discover(answer).map_err(|e| e.to_string()),
            Err("server answered server/discover with error -32020: bad header".into())
        );
    }

    #[test]
    fn unsupported_version_asks_again_once_or_falls_back_to_initialize() {
        let newer = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32022, "message": "no",
            "data": {"supported": ["2026-07-28", "2027-02-02"]}}});
        assert_eq!(
            discover(newer.clone()),
            Ok(Discovered::AskAgain("2027-02-02".into()))
        );
        let asked_both = ["2026-07-28".to_owned(), "2027-02-02".to_owned()];
        assert!(matches!(
            read_discover(&newer, "2027-02-02", &asked_both),
            Err(ProbeError::NoCommonVersion(_))
        ));
        let older = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32022, "message": "no",
            "data": {"supported": ["2025-06-18"]}}});
        assert_eq!(discover(older), Ok(Discovered::Legacy));
    }

    #[test]
    fn initialize_reports_whatever_version_the_server_answered() {
        let answer = json!({"jsonrpc": "2.0", "id": 2, "result": {
            "protocolVersion": "2024-11-05", "capabilities": {},
            "serverInfo": {"name": "old", "version": "0.1"}}});
        let identity = read_initialize(&answer).map_err(|e| e.to_string());
        assert_eq!(
            identity.map(|i| (i.era, i.protocol_version, i.server_name)),
            Ok((Era::Initialize2025, "2024-11-05".into(), "old".into()))
        );
        let no_version = json!({"jsonrpc": "2.0", "id": 2, "result": {}});
        assert_eq!(
            read_initialize(&no_version).map_err(|e| e.to_string()),
            Err("not MCP: initialize result has no protocolVersion".into())
        );
    }

    #[test]
    fn responses_match_by_id_in_single_messages_and_batches() {
        let mine = json!({"jsonrpc": "2.0", "id": 3, "result": {}});
        let other = json!({"jsonrpc": "2.0", "id": 4, "result": {}});
        let request = json!({"jsonrpc": "2.0", "id": 3, "method": "ping"});
        assert_eq!(response_in(mine.clone(), 3), Some(mine.clone()));
        assert_eq!(response_in(other.clone(), 3), None);
        assert_eq!(response_in(request.clone(), 3), None);
        assert_eq!(
            response_in(json!([request, other, mine.clone()]), 3),
            Some(mine)
        );
        assert_eq!(response_in(json!({"id": 3, "result": {}}), 3), None);
    }

    #[test]
    fn timeout_reason_reads_like_a_person_wrote_it() {
        assert_eq!(
            ProbeError::Timeout(Duration::from_secs(2)).to_string(),
            "timed out after 2s waiting for a response"
        );
    }
}
