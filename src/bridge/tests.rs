use super::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(5);

fn id() -> InstanceId {
    InstanceId("01jd8x2k5v3m9q7r4t6w8y0z1a".into())
}

/// A bridge over an in-memory pipe, and the server's end of it: the lines
/// the bridge writes, and a writer for the server's stdout.
fn pipe(limits: Limits) -> (Bridge, ServerEnd) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let (client_read, client_write) = tokio::io::split(client);
    let (server_read, server_write) = tokio::io::split(server);
    let bridge = Bridge::new(
        id(),
        Attached {
            reader: Box::pin(client_read),
            writer: Box::pin(client_write),
        },
        limits,
    );
    let end = ServerEnd {
        lines: tokio::io::BufReader::new(server_read).lines(),
        out: server_write,
    };
    (bridge, end)
}

struct ServerEnd {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
    out: tokio::io::WriteHalf<tokio::io::DuplexStream>,
}

impl ServerEnd {
    async fn received(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("a line within the deadline")
            .expect("readable")
            .expect("not at the end");
        serde_json::from_str(&line).expect("JSON")
    }

    async fn say(&mut self, message: &Value) {
        self.out
            .write_all(format!("{message}\n").as_bytes())
            .await
            .expect("write");
    }
}

fn call(id: Value, method: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {}})
}

#[tokio::test]
async fn clients_using_the_same_id_each_get_their_own_answer() {
    let (bridge, mut server) = pipe(Limits::default());
    let a = bridge.request(call(json!(1), "tools/call")).expect("a");
    let b = bridge.request(call(json!(1), "tools/list")).expect("b");
    let first = server.received().await;
    let second = server.received().await;
    assert_ne!(first["id"], second["id"], "the wire ids must differ");
    assert!(
        first["id"]
            .as_str()
            .expect("string id")
            .starts_with("mcpctl-")
    );
    // Answered in the other order.
    server
        .say(&json!({"jsonrpc": "2.0", "id": second["id"], "result": {"which": "list"}}))
        .await;
    server
        .say(&json!({"jsonrpc": "2.0", "id": first["id"], "result": {"which": "call"}}))
        .await;
    let a = a.answer().await.expect("a answered");
    let b = b.answer().await.expect("b answered");
    assert_eq!(
        a,
        json!({"jsonrpc": "2.0", "id": 1, "result": {"which": "call"}})
    );
    assert_eq!(
        b,
        json!({"jsonrpc": "2.0", "id": 1, "result": {"which": "list"}})
    );
    assert_eq!(bridge.pending(), 0);
}

#[tokio::test]
async fn progress_goes_to_the_request_that_asked_with_its_own_token() {
    let (bridge, mut server) = pipe(Limits::default());
    let mut request = call(json!("c-7"), "tools/call");
    request["params"]["_meta"] = json!({"progressToken": 42});
    let mut exchange = bridge.request(request).expect("sent");
    let other = bridge.request(call(json!(8), "tools/call")).expect("sent");
    let seen = server.received().await;
    let _other_seen = server.received().await;
    let wire_token = seen["params"]["_meta"]["progressToken"].clone();
    assert_ne!(wire_token, json!(42), "the token is rewritten");
    server
        .say(
            &json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": wire_token, "progress": 1, "total": 2}}),
        )
        .await;
    // Progress for nobody we know is dropped, not misdelivered.
    server
        .say(
            &json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": "someone-else", "progress": 1}}),
        )
        .await;
    server
        .say(&json!({"jsonrpc": "2.0", "id": seen["id"], "result": {}}))
        .await;
    let progress = exchange.next().await.expect("progress");
    assert_eq!(
        progress,
        Message::Progress(json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": 42, "progress": 1, "total": 2}}))
    );
    let answer = exchange.next().await.expect("answer");
    assert_eq!(
        answer,
        Message::Answer(json!({"jsonrpc": "2.0", "id": "c-7", "result": {}}))
    );
    drop(other);
}

#[tokio::test]
async fn the_servers_own_requests_are_answered_at_once_and_not_relayed() {
    let (_bridge, mut server) = pipe(Limits::default());
    server
        .say(&json!({"jsonrpc": "2.0", "id": 5, "method": "sampling/createMessage", "params": {}}))
        .await;
    let refused = server.received().await;
    assert_eq!(refused["id"], 5);
    assert_eq!(refused["error"]["code"], -32601);
    server
        .say(&json!({"jsonrpc": "2.0", "id": "p", "method": "ping"}))
        .await;
    assert_eq!(
        server.received().await,
        json!({"jsonrpc": "2.0", "id": "p", "result": {}})
    );
}

#[tokio::test]
async fn answers_meant_for_another_attacher_are_ignored_and_noise_skipped() {
    let (bridge, mut server) = pipe(Limits::default());
    let exchange = bridge.request(call(json!(1), "tools/list")).expect("sent");
    let seen = server.received().await;
    server
        .out
        .write_all(b"a banner on stdout\n")
        .await
        .expect("write");
    server
        .say(&json!({"jsonrpc": "2.0", "id": "mcpctl-0000000000000000-1", "result": {"not": "ours"}}))
        .await;
    server
        .say(&json!({"jsonrpc": "2.0", "id": 1, "result": {"not": "ours either"}}))
        .await;
    server
        .say(&json!({"jsonrpc": "2.0", "id": seen["id"], "result": {"ours": true}}))
        .await;
    let answer = exchange.answer().await.expect("answered");
    assert_eq!(answer["result"], json!({"ours": true}));
}

#[tokio::test]
async fn an_ended_attach_fails_what_waits_and_refuses_what_comes() {
    let (bridge, mut server) = pipe(Limits::default());
    let exchange = bridge.request(call(json!(1), "tools/call")).expect("sent");
    let _ = server.received().await;
    drop(server);
    let error = tokio::time::timeout(WAIT, exchange.answer())
        .await
        .expect("fails within the deadline")
        .expect_err("no answer can come");
    assert!(matches!(error, BridgeError::Closed { .. }), "{error:?}");
    tokio::time::timeout(WAIT, bridge.ended())
        .await
        .expect("ended");
    assert!(bridge.closed().is_some());
    let refused = bridge.request(call(json!(2), "tools/call"));
    assert!(matches!(refused, Err(BridgeError::Closed { .. })));
}

#[tokio::test]
async fn a_request_given_up_on_is_cancelled_at_the_server() {
    let (bridge, mut server) = pipe(Limits::default());
    let exchange = bridge.request(call(json!(1), "tools/call")).expect("sent");
    let seen = server.received().await;
    drop(exchange);
    let cancel = server.received().await;
    assert_eq!(cancel["method"], "notifications/cancelled");
    assert_eq!(cancel["params"]["requestId"], seen["id"]);
    assert_eq!(bridge.pending(), 0);
}

#[tokio::test]
async fn beyond_the_pending_limit_requests_are_refused_as_busy() {
    let (bridge, _server) = pipe(Limits {
        pending: 2,
        ..Limits::default()
    });
    let _a = bridge.request(call(json!(1), "x")).expect("a");
    let _b = bridge.request(call(json!(2), "x")).expect("b");
    let c = bridge.request(call(json!(3), "x"));
    assert!(
        matches!(c, Err(BridgeError::Busy { pending: 2, .. })),
        "{:?}",
        c.err()
    );
    assert!(matches!(
        bridge.request(json!({"jsonrpc": "2.0", "method": "x"})),
        Err(BridgeError::NotARequest(_))
    ));
}

#[tokio::test]
async fn an_over_long_line_is_skipped_and_the_next_one_read() {
    let (bridge, mut server) = pipe(Limits {
        line: 64,
        ..Limits::default()
    });
    let exchange = bridge.request(call(json!(1), "x")).expect("sent");
    let seen = server.received().await;
    let long = json!({"jsonrpc": "2.0", "id": seen["id"], "result": {"pad": "x".repeat(200)}});
    server.say(&long).await;
    server
        .say(&json!({"jsonrpc": "2.0", "id": seen["id"], "result": {}}))
        .await;
    let answer = exchange.answer().await.expect("answered");
    assert_eq!(answer["result"], json!({}));
}

/// A scripted server: answers `server/discover` if `modern`, else only
/// `initialize` and `ping`; counts what it was asked.
async fn scripted(mut server: ServerEnd, modern: bool, asked: mpsc::UnboundedSender<String>) {
    loop {
        let Ok(Some(line)) = server.lines.next_line().await else {
            return;
        };
        let m: Value = serde_json::from_str(&line).expect("JSON");
        let method = m["method"].as_str().unwrap_or("").to_owned();
        let _ = asked.send(method.clone());
        let Some(id) = m.get("id").cloned() else {
            continue;
        };
        let reply = match method.as_str() {
            "server/discover" if modern => json!({"jsonrpc": "2.0", "id": id, "result": {
                "supportedVersions": ["2026-07-28"], "capabilities": {},
                "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "new", "version": "2"}}}}),
            "initialize" => json!({"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "old", "version": "1"}}}),
            "ping" => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
            _ => json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no"}}),
        };
        server.say(&reply).await;
    }
}

fn drain(rx: &mut mpsc::UnboundedReceiver<String>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m);
    }
    out
}

#[tokio::test]
async fn a_2025_server_is_initialized_once_then_pinged_and_its_session_shared() {
    let (bridge, server) = pipe(Limits::default());
    let (tx, mut asked) = mpsc::unbounded_channel();
    tokio::spawn(scripted(server, false, tx));
    let first = bridge.check(WAIT).await.expect("handshake");
    assert_eq!(first.era, Era::Initialize2025);
    assert_eq!(first.server_name, "old");
    let second = bridge.check(WAIT).await.expect("liveness");
    assert_eq!(second.server_name, "old");
    let session = bridge
        .session(&json!({"protocolVersion": "2025-06-18"}), WAIT)
        .await
        .expect("session");
    assert_eq!(session["serverInfo"]["name"], "old");
    // The ping's answer has arrived, so everything sent before it was read.
    let asked = drain(&mut asked);
    assert_eq!(
        asked,
        [
            "server/discover",
            "initialize",
            "notifications/initialized",
            "ping"
        ],
        "one initialize only: the session is the handshake's"
    );
}

#[tokio::test]
async fn a_2026_server_is_checked_with_discover_and_a_session_is_made_on_demand() {
    let (bridge, server) = pipe(Limits::default());
    let (tx, mut asked) = mpsc::unbounded_channel();
    tokio::spawn(scripted(server, true, tx));
    let info = bridge.check(WAIT).await.expect("handshake");
    assert_eq!(info.era, Era::Discover2026);
    bridge.check(WAIT).await.expect("liveness");
    let params = json!({"protocolVersion": "2025-06-18"});
    let a = bridge.session(&params, WAIT).await.expect("session");
    let b = bridge
        .session(&params, WAIT)
        .await
        .expect("the same session");
    assert_eq!(a, b);
    // The last request was answered; the notification after it may still
    // be on its way.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    while seen.len() < 4 && tokio::time::Instant::now() < deadline {
        seen.extend(drain(&mut asked));
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        seen,
        [
            "server/discover",
            "server/discover",
            "initialize",
            "notifications/initialized"
        ]
    );
}

#[tokio::test]
async fn the_pool_keeps_one_attach_per_instance_and_replaces_an_ended_one() {
    let bridges = Bridges::default();
    let attaches = std::sync::atomic::AtomicUsize::new(0);
    let ends = std::sync::Mutex::new(Vec::new());
    let open = || {
        attaches.fetch_add(1, Ordering::SeqCst);
        let (client, server) = tokio::io::duplex(1024);
        let (r, w) = tokio::io::split(client);
        ends.lock().expect("ends").push(server);
        std::future::ready(Ok::<_, RuntimeError>(Attached {
            reader: Box::pin(r),
            writer: Box::pin(w),
        }))
    };
    let a = bridges.open(&id(), open).await.expect("open");
    let b = bridges.open(&id(), open).await.expect("reuse");
    assert_eq!(attaches.load(Ordering::SeqCst), 1);
    assert!(bridges.get(&id()).is_some());
    drop(ends.lock().expect("ends").pop());
    tokio::time::timeout(WAIT, a.ended()).await.expect("ended");
    assert!(
        bridges.get(&id()).is_none(),
        "an ended bridge is not handed out"
    );
    let _c = bridges.open(&id(), open).await.expect("reopen");
    assert_eq!(attaches.load(Ordering::SeqCst), 2);
    drop(b);
    bridges.retain(|_| false);
    assert!(bridges.is_empty());
}
