//! What the gateway reads of a POSTed message before routing it: the
//! JSON-RPC message itself, and, for the 2026-07-28 era, the headers that
//! mirror it (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`), which must
//! be present and agree with the body. Intermediaries route, count and
//! authorize by those headers while the instance acts on the body, so a
//! disagreement is refused here (HTTP 400, JSON-RPC `-32020`) rather than
//! passed on.

use base64::Engine;
use hyper::header::HeaderMap;
use serde_json::Value;

/// The first revision whose requests carry their version and mirror headers.
const MODERN: &str = "2026-07-28";
/// JSON-RPC error code of a header that is missing or disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;

/// The body as one JSON-RPC message, or `None` for anything else (a batch,
/// or not JSON), which only HTTP instances are given as it is.
pub fn parse(body: &[u8]) -> Option<Value> {
    let message: Value = serde_json::from_slice(body).ok()?;
    (message.is_object() && message.get("jsonrpc").and_then(Value::as_str) == Some("2.0"))
        .then_some(message)
}

/// The message's method, for counting and the access line.
pub fn method_of(message: Option<&Value>) -> Option<&str> {
    message?.get("method")?.as_str()
}

/// Checks a 2026-era message's mirror headers; older ones pass untouched.
/// The error says which header and what it should be.
pub fn check_mirrors(headers: &HeaderMap, message: Option<&Value>) -> Result<(), String> {
    let header_version = text(headers, "mcp-protocol-version");
    let meta_version = message
        .and_then(|m| m.pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion"))
        .and_then(Value::as_str);
    if let (Some(h), Some(m)) = (header_version.as_deref(), meta_version)
        && h != m
    {
        return Err(format!(
            "MCP-Protocol-Version {h:?} disagrees with the body's protocol version {m:?}"
        ));
    }
    let modern = header_version
        .as_deref()
        .or(meta_version)
        .is_some_and(|v| v >= MODERN);
    let Some(message) = message else {
        return Ok(());
    };
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        // A response to the server: no method to mirror.
        return Ok(());
    };
    let sent_method = decoded(headers, "mcp-method")?;
    match &sent_method {
        Some(sent) if sent != method => {
            return Err(format!(
                "Mcp-Method {sent:?} disagrees with the body's method {method:?}"
            ));
        }
        None if modern => {
            return Err(format!(
                "Mcp-Method is missing: a {MODERN} request sends it (here {method:?})"
            ));
        }
        _ => {}
    }
    let name = match method {
        "tools/call" | "prompts/get" => message.pointer("/params/name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            message.pointer("/params/uri")
        }
        _ => None,
    }
    .and_then(Value::as_str);
    let sent_name = decoded(headers, "mcp-name")?;
    match (name, &sent_name) {
        (Some(name), Some(sent)) if sent != name => Err(format!(
            "Mcp-Name {sent:?} disagrees with the body's {name:?}"
        )),
        (Some(name), None) if modern => Err(format!(
            "Mcp-Name is missing: a {MODERN} {method} sends it (here {name:?})"
        )),
        (None, Some(sent)) => Err(format!(
            "Mcp-Name {sent:?} was sent, but the body of {method} names nothing"
        )),
        _ => Ok(()),
    }
}

fn text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
}

/// A mirror header's value: as sent, or decoded from the `=?base64?…?=`
/// form clients use for values that are not plain printable ASCII.
fn decoded(headers: &HeaderMap, name: &str) -> Result<Option<String>, String> {
    let Some(raw) = text(headers, name) else {
        return Ok(None);
    };
    let Some(inner) = raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    else {
        return Ok(Some(raw));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(inner)
        .map_err(|_| format!("{name} is not valid base64 in its =?base64?...?= form"))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| format!("{name} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn modern_call(name: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": name, "arguments": {},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}})
    }

    #[test]
    fn a_modern_request_needs_mirrors_that_agree_with_its_body() {
        let call = modern_call("echo");
        let good = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ]);
        assert_eq!(check_mirrors(&good, Some(&call)), Ok(()));
        let cases: &[(&[(&'static str, &str)], &str)] = &[
            (&[("mcp-method", "tools/call")], "Mcp-Name is missing"),
            (&[("mcp-name", "echo")], "Mcp-Method is missing"),
            (
                &[("mcp-method", "tools/list"), ("mcp-name", "echo")],
                "Mcp-Method \"tools/list\" disagrees",
            ),
            (
                &[("mcp-method", "tools/call"), ("mcp-name", "rm")],
                "Mcp-Name \"rm\" disagrees",
            ),
            (
                &[
                    ("mcp-protocol-version", "2025-06-18"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "echo"),
                ],
                "disagrees with the body's protocol version",
            ),
        ];
        for (sent, expected) in cases {
            let error = check_mirrors(&headers(sent), Some(&call)).expect_err("refused");
            assert!(error.contains(expected), "{sent:?}: {error}");
        }
    }

    #[test]
    fn a_name_outside_plain_ascii_comes_base64_encoded() {
        let call = modern_call("héllo");
        let sent = headers(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?aMOpbGxv?="),
        ]);
        assert_eq!(check_mirrors(&sent, Some(&call)), Ok(()));
        let bad = headers(&[("mcp-method", "tools/call"), ("mcp-name", "=?base64?!!?=")]);
        assert!(check_mirrors(&bad, Some(&call)).is_err());
    }

    #[test]
    fn older_requests_pass_without_mirrors_but_not_with_wrong_ones() {
        let old = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo"}});
        assert_eq!(check_mirrors(&HeaderMap::new(), Some(&old)), Ok(()));
        let wrong = headers(&[("mcp-method", "tools/list")]);
        assert!(check_mirrors(&wrong, Some(&old)).is_err());
        let response = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        assert_eq!(check_mirrors(&HeaderMap::new(), Some(&response)), Ok(()));
        assert_eq!(check_mirrors(&HeaderMap::new(), None), Ok(()));
    }

    #[test]
    fn only_single_json_rpc_messages_are_parsed() {
        assert!(parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).is_some());
        assert!(parse(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).is_none());
        assert!(parse(b"not json").is_none());
        assert!(parse(br#"{"id":1,"method":"ping"}"#).is_none());
    }
}
