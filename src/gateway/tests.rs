//! The gateway's pure parts: the routing table from snapshots, the choice
//! of instance, the pin table's cap, and the access checks; and, over real
//! loopback sockets, headers that change while the gateway serves.

use super::access::{Access, Denial, check_listen};
use super::balance::{Outstanding, Pin, Pins};
use super::proxy::server_of;
use super::table::{Backend, Refusal, Table, Upstream};
use crate::model::{
    AppliedSpec, Endpoint, Instance, InstanceId, Snapshot, SpecHash, Status, Timestamp,
};
use hyper::header::{HeaderMap, HeaderValue};
use std::sync::Arc;

fn instance(
    id: &str,
    server: &str,
    status: Status,
    endpoint: Option<Endpoint>,
    reason: &str,
    at: i64,
) -> Instance {
    let mut i = Instance::starting(
        InstanceId(id.to_owned()),
        server,
        SpecHash("h".into()),
        "created",
        Timestamp(0),
    );
    i.endpoint = endpoint;
    i.transition(status, reason, Timestamp(at));
    i
}

fn http(port: u16) -> Option<Endpoint> {
    Some(Endpoint::Http(format!("http://127.0.0.1:{port}/mcp")))
}

fn snapshot(instances: Vec<Instance>) -> Snapshot {
    let mut s = Snapshot::default();
    for i in instances {
        s.servers.entry(i.server.clone()).or_insert(AppliedSpec {
            hash: SpecHash("h".into()),
            canonical: String::new(),
            replicas: 1,
            applied_at: Timestamp(0),
            previous: None,
        });
        s.instances.insert(i.id.clone(), i);
    }
    s
}

fn ids(backends: &[Backend]) -> Vec<&str> {
    backends.iter().map(|b| b.instance.0.as_str()).collect()
}

#[test]
fn only_running_instances_with_an_http_endpoint_are_routes() {
    let table = Table::from_snapshot(&snapshot(vec![
        instance("a", "web", Status::Running, http(1), "ready", 1),
        instance("b", "web", Status::Starting, http(2), "probing", 1),
        instance("c", "web", Status::Error, http(3), "crashed", 1),
        instance("d", "web", Status::Running, http(4), "ready", 1),
        instance("e", "web", Status::Running, None, "ready", 1),
    ]));
    let backends = table.backends("web").expect("web is routable");
    assert_eq!(ids(backends), ["a", "d"]);
    assert_eq!(
        backends[1].upstream,
        Upstream::Http("http://127.0.0.1:4/mcp".into())
    );
    assert!(table.is_routable("web", &InstanceId("a".into())));
    assert!(!table.is_routable("web", &InstanceId("b".into())));
}

#[test]
fn a_units_endpoint_as_the_gateway_sees_it_replaces_the_record_and_external_urls_stay() {
    let pod = |id: &str, port: u16| {
        let mut i = instance(id, "web", Status::Running, http(port), "ready", 1);
        i.handle = Some(format!("mcpctl-web-{id}"));
        i
    };
    let (a, b) = (pod("a", 1), pod("b", 2));
    // External: a URL and no unit.
    let ext = instance(
        "x",
        "linear",
        Status::Running,
        Some(Endpoint::Http("https://mcp.example/mcp".into())),
        "ready",
        1,
    );
    let s = snapshot(vec![a, b, ext]);
    let seen: super::Seen = [(
        InstanceId("a".into()),
        "http://127.0.0.1:9/tok/mcpctl-web-a/8080/mcp".to_owned(),
    )]
    .into();
    let table = Table::from_snapshot_seen(&s, &seen);
    let web = table.backends("web").expect("web is routable");
    // `b` is not seen yet: not routed to on an endpoint another process left.
    assert_eq!(ids(web), ["a"]);
    assert_eq!(
        web[0].upstream,
        Upstream::Http("http://127.0.0.1:9/tok/mcpctl-web-a/8080/mcp".into())
    );
    let linear = table.backends("linear").expect("external is routable");
    assert_eq!(
        linear[0].upstream,
        Upstream::Http("https://mcp.example/mcp".into())
    );
    // Seen nothing: every unit waits, with the words that say so.
    let table = Table::from_snapshot_seen(&s, &super::Seen::new());
    assert_eq!(
        table.backends("web"),
        Err(Refusal::Unavailable(
            "web has no RUNNING instance: 2 RUNNING (no endpoint or unit known yet)".into()
        ))
    );
}

#[test]
fn a_server_without_a_running_instance_names_its_statuses_and_reasons() {
    let table = Table::from_snapshot(&snapshot(vec![
        instance(
            "a",
            "github",
            Status::Starting,
            http(1),
            "not ready after 60s: refused",
            2,
        ),
        instance("b", "github", Status::Error, http(2), "older crash", 1),
        instance(
            "c",
            "github",
            Status::Error,
            http(3),
            "exited with code 3",
            5,
        ),
    ]));
    assert_eq!(
        table.backends("github"),
        Err(Refusal::Unavailable(
            "github has no RUNNING instance: 1 STARTING (not ready after 60s: refused), 2 ERROR (exited with code 3)"
                .into()
        ))
    );
}

#[test]
fn a_running_stdio_instance_is_a_route_through_its_unit_and_an_unknown_server_is_unknown() {
    let mut with_unit = instance(
        "a",
        "files",
        Status::Running,
        Some(Endpoint::Stdio),
        "ready",
        1,
    );
    with_unit.handle = Some("c0ffee".into());
    // RUNNING, but no unit recorded to attach to.
    let without = instance(
        "b",
        "notes",
        Status::Running,
        Some(Endpoint::Stdio),
        "ready",
        1,
    );
    let mut s = snapshot(vec![with_unit, without]);
    s.servers.insert("empty".into(), s.servers["files"].clone());
    let table = Table::from_snapshot(&s);
    let files = table.backends("files").expect("files is routable");
    assert_eq!(
        files[0].upstream,
        Upstream::Stdio {
            handle: "c0ffee".into()
        }
    );
    assert_eq!(
        table.backends("notes"),
        Err(Refusal::Unavailable(
            "notes has no RUNNING instance: 1 RUNNING (no endpoint or unit known yet)".into()
        ))
    );
    assert_eq!(
        table.backends("empty"),
        Err(Refusal::Unavailable(
            "empty has no RUNNING instance: no instances".into()
        ))
    );
    assert_eq!(table.backends("nope"), Err(Refusal::Unknown("nope".into())));
}

#[test]
fn requests_go_to_the_instance_with_the_fewest_outstanding() {
    let table = Table::from_snapshot(&snapshot(vec![
        instance("a", "web", Status::Running, http(1), "", 1),
        instance("b", "web", Status::Running, http(2), "", 1),
        instance("c", "web", Status::Running, http(3), "", 1),
    ]));
    let backends = table.backends("web").expect("routable");
    let outstanding = Arc::new(Outstanding::default());
    let pick = |o: &Arc<Outstanding>| o.choose(backends).expect("a backend");
    let (first, held_a) = pick(&outstanding);
    let (second, held_b) = pick(&outstanding);
    let (third, _held_c) = pick(&outstanding);
    assert_eq!(
        [first.instance.0, second.instance.0, third.instance.0],
        ["a", "b", "c"]
    );
    // b finishes: it now has the fewest.
    drop(held_b);
    let (next, _held) = pick(&outstanding);
    assert_eq!(next.instance.0, "b");
    assert_eq!(outstanding.of(&InstanceId("b".into())), 1);
    drop(held_a);
    assert_eq!(outstanding.of(&InstanceId("a".into())), 0);
    assert!(outstanding.choose(&[]).is_none());
}

#[test]
fn the_pin_table_keeps_its_cap_and_forgets_the_least_recently_used() {
    let pins = Pins::new(2);
    let pin = |i: &str| Pin {
        server: "web".into(),
        instance: InstanceId(i.into()),
    };
    pins.pin("s1", pin("a"));
    pins.pin("s2", pin("b"));
    // s1 is used again, so s2 is now the oldest.
    assert_eq!(pins.get("s1"), Some(pin("a")));
    pins.pin("s3", pin("c"));
    assert_eq!(pins.len(), 2);
    assert_eq!(pins.get("s2"), None);
    assert_eq!(pins.get("s1"), Some(pin("a")));
    assert_eq!(pins.get("s3"), Some(pin("c")));
    pins.forget("s1");
    assert_eq!(pins.get("s1"), None);
    assert_eq!(pins.len(), 1);
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.insert(*name, HeaderValue::from_str(value).expect("header value"));
    }
    h
}

#[test]
fn with_a_token_every_request_needs_it() {
    let access = Access::new(Some("s3cret"), "127.0.0.1:9470".parse().expect("addr"));
    assert_eq!(access.check(&headers(&[])), Err(Denial::Unauthorized));
    assert_eq!(
        access.check(&headers(&[("authorization", "Bearer wrong")])),
        Err(Denial::Unauthorized)
    );
    assert_eq!(
        access.check(&headers(&[("authorization", "Basic s3cret")])),
        Err(Denial::Unauthorized)
    );
    assert_eq!(
        access.check(&headers(&[("authorization", "Bearer s3cret")])),
        Ok(())
    );
    let open = Access::new(None, "127.0.0.1:9470".parse().expect("addr"));
    assert_eq!(open.check(&headers(&[])), Ok(()));
}

#[test]
fn only_loopback_origins_and_the_gateways_own_address_are_accepted() {
    let access = Access::new(None, "10.0.0.5:9470".parse().expect("addr"));
    for ok in [
        "http://localhost:3000",
        "http://127.0.0.1:6274",
        "https://127.0.0.1",
        "http://[::1]:8080",
        "http://10.0.0.5:9470",
    ] {
        assert_eq!(access.check(&headers(&[("origin", ok)])), Ok(()), "{ok}");
    }
    for bad in [
        "http://evil.example",
        "http://evil.example:9470",
        "null",
        "http://10.0.0.5:9471",
        "file:///etc",
        "http://localhost.evil.example",
    ] {
        assert_eq!(
            access.check(&headers(&[("origin", bad)])),
            Err(Denial::Forbidden),
            "{bad}"
        );
    }
    // Listening on every address, no origin but loopback is the gateway's own.
    let any = Access::new(None, "0.0.0.0:9470".parse().expect("addr"));
    assert_eq!(
        any.check(&headers(&[("origin", "http://0.0.0.0:9470")])),
        Err(Denial::Forbidden)
    );
}

#[test]
fn a_non_loopback_listener_needs_a_token() {
    assert!(check_listen("127.0.0.1:9470".parse().expect("addr"), false).is_ok());
    assert!(check_listen("[::1]:9470".parse().expect("addr"), false).is_ok());
    assert!(check_listen("0.0.0.0:9470".parse().expect("addr"), false).is_err());
    assert!(check_listen("0.0.0.0:9470".parse().expect("addr"), true).is_ok());
}

#[test]
fn servers_are_served_at_their_mcp_path_only() {
    assert_eq!(server_of("/servers/github/mcp"), Some("github"));
    assert_eq!(server_of("/servers//mcp"), None);
    assert_eq!(server_of("/servers/a/b/mcp"), None);
    assert_eq!(server_of("/servers/github"), None);
    assert_eq!(server_of("/mcp"), None);
}

// In-process: the gateway served on a loopback port, in front of hyper
// backends that answer as an instance would.

mod served {
    use super::{instance, snapshot};
    use crate::gateway::balance::{Outstanding, Pins};
    use crate::gateway::metrics::{Metrics, Served};
    use crate::gateway::{Access, Limits, ServerHeaders, Table, serve};
    use crate::model::{Endpoint, InstanceId, Status};
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use hyper::body::{Bytes, Frame};
    use hyper::{Request, Response, StatusCode};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::{oneshot, watch};

    /// How an instance answers every request.
    #[derive(Clone, Copy)]
    enum Answer {
        /// 200 with a JSON body, opening a session when asked for none.
        Json,
        /// 200 with an SSE stream that never ends.
        Stream,
    }

    /// A backend on a loopback port, answering until the test ends.
    async fn backend(answer: Answer) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend");
        let addr = listener.local_addr().expect("backend address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    let opened = !req.headers().contains_key("mcp-session-id");
                    async move {
                        let r = match answer {
                            Answer::Json => {
                                let mut r =
                                    Response::builder().header("content-type", "application/json");
                                if opened {
                                    r = r.header("mcp-session-id", "session-1");
                                }
                                r.body(
                                    Full::new(Bytes::from_static(
                                        br#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
                                    ))
                                    .boxed(),
                                )
                            }
                            Answer::Stream => Response::builder()
                                .header("content-type", "text/event-stream")
                                .body(
                                    StreamBody::new(futures_util::stream::pending::<
                                        Result<Frame<Bytes>, Infallible>,
                                    >())
                                    .boxed(),
                                ),
                        };
                        Ok::<_, Infallible>(r.expect("a response"))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    /// A loopback port with nothing listening on it.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    }

    fn http(addr: SocketAddr) -> Option<Endpoint> {
        Some(Endpoint::Http(format!("http://{addr}/mcp")))
    }

    /// A running gateway; stops when dropped.
    struct Gateway {
        addr: SocketAddr,
        tables: watch::Sender<Arc<Table>>,
        _stop: oneshot::Sender<()>,
    }

    async fn gateway(table: Table, token: Option<&str>) -> Gateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gateway");
        let addr = listener.local_addr().expect("gateway address");
        let (tables, receiver) = watch::channel(Arc::new(table));
        let (stop, stopped) = oneshot::channel::<()>();
        let access = Access::new(token, addr);
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let (_headers, headers) = watch::channel(Arc::new(ServerHeaders::new()));
            serve(
                listener,
                receiver,
                headers,
                access,
                Limits::default(),
                None,
                shutdown,
            )
            .await
            .expect("the gateway serves");
        });
        Gateway {
            addr,
            tables,
            _stop: stop,
        }
    }

    struct Reply {
        status: StatusCode,
        content_type: String,
        body: String,
    }

    impl Gateway {
        /// One request; the body is read only when `read` (an SSE stream
        /// never ends). Its head must come within a few seconds.
        async fn send(
            &self,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            read: bool,
        ) -> Reply {
            let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            let mut req = Request::builder()
                .method(method)
                .uri(format!("http://{}{path}", self.addr));
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            let req = req.body(Empty::new()).expect("a request");
            let response = tokio::time::timeout(Duration::from_secs(10), client.request(req))
                .await
                .expect("an answer in time")
                .expect("an answer");
            let status = response.status();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = if read {
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .expect("the body")
                    .to_bytes();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                // Held open: the stream stays outstanding.
                tokio::spawn(async move {
                    let _held = response;
                    std::future::pending::<()>().await;
                });
                String::new()
            };
            Reply {
                status,
                content_type,
                body,
            }
        }

        async fn post(&self, server: &str, headers: &[(&str, &str)]) -> StatusCode {
            self.send("POST", &format!("/servers/{server}/mcp"), headers, true)
                .await
                .status
        }

        async fn metrics(&self) -> String {
            let reply = self.send("GET", "/metrics", &[], true).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            reply.body
        }
    }

    /// The value of the series `series` (name and labels as written), if
    /// the text has it.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
    }

    /// An instance that starts an SSE answer and dies in the middle of it:
    /// a chunked head, one event, then the connection closes.
    async fn breaking_backend() -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend");
        let addr = listener.local_addr().expect("backend address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0u8; 64 << 10];
                let _ = stream.read(&mut request).await;
                let event = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n";
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
                    event.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                // Dropped without the last chunk: the answer is torn.
            }
        });
        addr
    }

    #[tokio::test]
    async fn an_answer_its_instance_breaks_off_ends_with_an_error_naming_it() {
        let broken = breaking_backend().await;
        let g = gateway(
            Table::from_snapshot(&snapshot(vec![instance(
                "a",
                "web",
                Status::Running,
                http(broken),
                "",
                1,
            )])),
            None,
        )
        .await;
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = Request::builder()
            .method("POST")
            .uri(format!("http://{}/servers/web/mcp", g.addr))
            .header("accept", "application/json, text/event-stream")
            .body(Full::new(Bytes::from_static(
                br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#,
            )))
            .expect("a request");
        let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
            .await
            .expect("an answer in time")
            .expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
            .await
            .expect("the body in time")
            .expect("the body ends cleanly, not torn")
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        let events: Vec<serde_json::Value> = text
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).expect("JSON data"))
            .collect();
        assert_eq!(events.len(), 2, "{text}");
        assert_eq!(events[0]["method"], "notifications/progress");
        assert_eq!(events[1]["id"], 7, "{text}");
        let message = events[1]["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("instance a of web went away before it finished answering"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_proxied_a_refused_and_a_failed_request_are_counted_and_timed() {
        let web = backend(Answer::Json).await;
        let slow = backend(Answer::Stream).await;
        let dead: SocketAddr = format!("127.0.0.1:{}", closed_port())
            .parse()
            .expect("addr");
        let g = gateway(
            Table::from_snapshot(&snapshot(vec![
                instance("a", "web", Status::Running, http(web), "", 1),
                instance("s", "slow", Status::Running, http(slow), "", 1),
                instance("d", "dead", Status::Running, http(dead), "", 1),
                instance("b", "booting", Status::Starting, http(web), "probing", 1),
            ])),
            None,
        )
        .await;

        assert_eq!(
            g.post("web", &[("mcp-method", "tools/call")]).await,
            StatusCode::OK
        );
        assert_eq!(g.post("dead", &[]).await, StatusCode::BAD_GATEWAY);
        assert_eq!(
            g.post("booting", &[]).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(g.post("nope", &[]).await, StatusCode::NOT_FOUND);
        let stream = g.send("POST", "/servers/slow/mcp", &[], false).await;
        assert_eq!(stream.status, StatusCode::OK);

        let reply = g.send("GET", "/metrics", &[], true).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.content_type,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        let m = reply.body;
        let at = |series: &str| value(&m, series);
        // Proxied: counted by method and code, timed, no error; its session
        // pinned to its instance.
        assert_eq!(
            at(
                r#"mcpctl_gateway_requests_total{server="web",instance="a",method="tools/call",code="200"}"#
            ),
            Some(1.0),
            "{m}"
        );
        assert_eq!(
            at(r#"mcpctl_gateway_request_duration_seconds_count{server="web",instance="a"}"#),
            Some(1.0),
            "{m}"
        );
        assert_eq!(
            at(
                r#"mcpctl_gateway_request_duration_seconds_bucket{le="+Inf",server="web",instance="a"}"#
            ),
            Some(1.0),
            "{m}"
        );
        assert!(!m.contains(r#"errors_total{server="web""#), "{m}");
        assert_eq!(
            at(r#"mcpctl_gateway_sessions{server="web",instance="a"}"#),
            Some(1.0),
            "{m}"
        );
        // The instance did not answer: its failure.
        assert_eq!(
            at(
                r#"mcpctl_gateway_requests_total{server="dead",instance="d",method="-",code="502"}"#
            ),
            Some(1.0),
            "{m}"
        );
        assert_eq!(
            at(r#"mcpctl_gateway_errors_total{server="dead",instance="d",by="instance"}"#),
            Some(1.0),
            "{m}"
        );
        // Refused before any instance was chosen: the gateway's.
        assert_eq!(
            at(
                r#"mcpctl_gateway_requests_total{server="booting",instance="-",method="-",code="503"}"#
            ),
            Some(1.0),
            "{m}"
        );
        assert_eq!(
            at(r#"mcpctl_gateway_errors_total{server="booting",instance="-",by="gateway"}"#),
            Some(1.0),
            "{m}"
        );
        // A name the state does not know gets no label set of its own.
        assert!(!m.contains("nope"), "{m}");
        assert_eq!(
            at(r#"mcpctl_gateway_errors_total{server="-",instance="-",by="gateway"}"#),
            Some(1.0),
            "{m}"
        );
        // The stream is still open: outstanding on its instance.
        assert_eq!(
            at(r#"mcpctl_gateway_outstanding_requests{server="slow",instance="s"}"#),
            Some(1.0),
            "{m}"
        );
        assert_eq!(
            at(r#"mcpctl_gateway_outstanding_requests{server="web",instance="a"}"#),
            Some(0.0),
            "{m}"
        );
    }

    #[tokio::test]
    async fn metrics_are_behind_the_token_and_the_origin_check() {
        let g = gateway(Table::default(), Some("s3cret")).await;
        // Something to count, and to keep from whoever has no token.
        assert_eq!(g.post("web", &[]).await, StatusCode::UNAUTHORIZED);
        let get = |headers: &'static [(&'static str, &'static str)]| {
            g.send("GET", "/metrics", headers, true)
        };
        let denied = get(&[]).await;
        assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
        assert!(!denied.body.contains("mcpctl_gateway"), "{}", denied.body);
        assert_eq!(
            get(&[("authorization", "Bearer wrong")]).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(&[
                ("authorization", "Bearer s3cret"),
                ("origin", "http://evil.example")
            ])
            .await
            .status,
            StatusCode::FORBIDDEN
        );
        let allowed = get(&[("authorization", "Bearer s3cret")]).await;
        assert_eq!(allowed.status, StatusCode::OK);
        assert_eq!(
            value(
                &allowed.body,
                r#"mcpctl_gateway_requests_total{server="-",instance="-",method="-",code="401"}"#
            ),
            Some(1.0),
            "{}",
            allowed.body
        );
        assert_eq!(
            g.send(
                "POST",
                "/metrics",
                &[("authorization", "Bearer s3cret")],
                true
            )
            .await
            .status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn an_instance_that_leaves_the_table_takes_its_label_sets_with_it() {
        let slow = backend(Answer::Stream).await;
        let two = || {
            snapshot(vec![
                instance("a", "web", Status::Running, http(slow), "", 1),
                instance("b", "web", Status::Running, http(slow), "", 1),
            ])
        };
        let g = gateway(Table::from_snapshot(&two()), None).await;
        // Each stream stays open, so the second goes to the other instance.
        for _ in 0..2 {
            let reply = g.send("POST", "/servers/web/mcp", &[], false).await;
            assert_eq!(reply.status, StatusCode::OK);
        }
        let before = g.metrics().await;
        for i in ["a", "b"] {
            let series =
                format!(r#"mcpctl_gateway_outstanding_requests{{server="web",instance="{i}"}}"#);
            assert_eq!(value(&before, &series), Some(1.0), "{before}");
        }

        let mut one = two();
        one.instances.remove(&InstanceId("b".into()));
        g.tables.send_replace(Arc::new(Table::from_snapshot(&one)));
        let after = g.metrics().await;
        assert!(after.contains(r#"instance="a""#), "{after}");
        assert!(!after.contains(r#"instance="b""#), "{after}");
    }

    fn served<'a>(
        server: &'a str,
        instance: Option<&'a InstanceId>,
        status: StatusCode,
    ) -> Served<'a> {
        Served {
            server,
            instance,
            method: Some("tools/call"),
            status,
            took: Duration::from_millis(3),
        }
    }

    fn scrape(metrics: &Metrics, table: &Arc<Table>) -> String {
        metrics.scrape(table, &Outstanding::default(), &Pins::new(1))
    }

    #[test]
    fn label_sets_are_bounded_by_the_fleet_not_by_what_clients_ask_for() {
        let metrics = Metrics::default();
        let fleet = snapshot(vec![
            instance("a", "web", Status::Running, super::http(1), "", 1),
            instance("b", "web", Status::Running, super::http(2), "", 1),
            instance("c", "api", Status::Running, super::http(3), "", 1),
        ]);
        let table = Arc::new(Table::from_snapshot(&fleet));
        let [a, b, c] = ["a", "b", "c"].map(|i| InstanceId(i.into()));
        metrics.record(&table, &served("web", Some(&a), StatusCode::OK));
        metrics.record(&table, &served("web", Some(&b), StatusCode::BAD_GATEWAY));
        metrics.record(&table, &served("web", None, StatusCode::UNAUTHORIZED));
        metrics.record(&table, &served("api", Some(&c), StatusCode::OK));
        metrics.record(&table, &served("zzz", None, StatusCode::NOT_FOUND));
        // 5 request counters, 5 histograms, 3 error counters.
        assert_eq!(metrics.label_sets(), 13);
        // A client asking for ever new names and methods adds one label
        // set, the `other` method's, and no more.
        for n in 0..1000 {
            let name = format!("name-{n}");
            let method = format!("method-{n}");
            metrics.record(
                &table,
                &Served {
                    method: Some(&method),
                    ..served(&name, None, StatusCode::NOT_FOUND)
                },
            );
        }
        assert_eq!(metrics.label_sets(), 14);
        let text = scrape(&metrics, &table);
        assert!(!text.contains("name-"), "{text}");
        assert!(!text.contains("method-"), "{text}");
        assert!(
            text.contains(r#"{server="-",instance="-",method="other",code="404"} 1000"#),
            "{text}"
        );
        // Two gauges for each of a, b and c.
        assert_eq!(metrics.label_sets(), 14 + 6);

        // b leaves the table: its label sets go, at the next request.
        let mut without_b = fleet.clone();
        without_b.instances.remove(&b);
        let table = Arc::new(Table::from_snapshot(&without_b));
        metrics.record(&table, &served("web", Some(&a), StatusCode::OK));
        // b's counter, histogram, error counter and gauges.
        assert_eq!(metrics.label_sets(), 20 - 5);
        let text = scrape(&metrics, &table);
        assert!(!text.contains(r#"instance="b""#), "{text}");
        assert!(text.contains(r#"server="web",instance="-""#), "{text}");

        // A request that outlived b is counted, and goes at the next scrape.
        metrics.record(&table, &served("web", Some(&b), StatusCode::OK));
        let text = scrape(&metrics, &table);
        assert!(!text.contains(r#"instance="b""#), "{text}");

        // web leaves the state: all of its label sets go, refusals too.
        let mut only_api = fleet;
        only_api.instances.retain(|_, i| i.server == "api");
        only_api.servers.remove("web");
        let text = scrape(&metrics, &Arc::new(Table::from_snapshot(&only_api)));
        assert!(!text.contains(r#"server="web""#), "{text}");
        assert!(text.contains(r#"server="api",instance="c""#), "{text}");
        assert!(text.contains(r#"server="-",instance="-""#), "{text}");
    }
}

/// The gateway in front of a legacy HTTP+SSE server (the 2024-11-05
/// transport): one event stream carries every client's answers, each back
/// to the client that asked.
mod legacy {
    use super::{instance, snapshot};
    use crate::gateway::{Access, Limits, ServerHeaders, Table, serve};
    use crate::model::{Endpoint, McpIdentity, Status};
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::{Bytes, Frame, Incoming};
    use hyper::{Request, Response, StatusCode};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use serde_json::{Value, json};
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::sync::{mpsc, oneshot, watch};

    type Events = mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>;

    /// A legacy server: `GET /sse` opens the stream (its first event names
    /// `/messages`), a POST there is answered 202 and its answer sent on
    /// the stream. It knows `initialize`, `ping` and `tools/call` (echoing
    /// `text`); anything else is -32601, `server/discover` included.
    async fn legacy_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let streams = Arc::new(AtomicUsize::new(0));
        let events: Arc<Mutex<Option<Events>>> = Arc::default();
        let opened = streams.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let events = events.clone();
                let opened = opened.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let events = events.clone();
                    let opened = opened.clone();
                    async move {
                        if req.method() == hyper::Method::GET {
                            opened.fetch_add(1, Ordering::SeqCst);
                            let (tx, rx) = mpsc::unbounded_channel();
                            let _ = tx.send(Ok(Frame::data(Bytes::from_static(
                                b"event: endpoint\ndata: /messages?sessionId=1\n\n",
                            ))));
                            *events.lock().expect("lock") = Some(tx);
                            let body = StreamBody::new(stream_of(rx)).boxed();
                            return Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "text/event-stream")
                                    .body(body)
                                    .expect("response"),
                            );
                        }
                        let bytes = req.into_body().collect().await.expect("body").to_bytes();
                        let message: Value = serde_json::from_slice(&bytes).expect("json");
                        if let Some(id) = message.get("id").filter(|id| !id.is_null()) {
                            let answer = match message["method"].as_str() {
                                Some("initialize") => {
                                    json!({"jsonrpc": "2.0", "id": id, "result": {
                                    "protocolVersion": "2024-11-05",
                                    "capabilities": {"tools": {}},
                                    "serverInfo": {"name": "legacy", "version": "1.0"}}})
                                }
                                Some("ping") => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
                                Some("tools/call") => {
                                    json!({"jsonrpc": "2.0", "id": id, "result": {
                                    "content": [{"type": "text",
                                        "text": message["params"]["arguments"]["text"]}]}})
                                }
                                _ => json!({"jsonrpc": "2.0", "id": id,
                                    "error": {"code": -32601, "message": "method not found"}}),
                            };
                            let event = format!("event: message\ndata: {answer}\n\n");
                            if let Some(tx) = events.lock().expect("lock").as_ref() {
                                let _ = tx.send(Ok(Frame::data(Bytes::from(event))));
                            }
                        }
                        let body = Full::new(Bytes::from_static(b"Accepted"))
                            .map_err(|never| match never {})
                            .boxed();
                        Ok(Response::builder()
                            .status(StatusCode::ACCEPTED)
                            .body(body)
                            .expect("response"))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (addr, streams)
    }

    fn stream_of(
        mut rx: mpsc::UnboundedReceiver<Result<Frame<Bytes>, Infallible>>,
    ) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    async fn post(
        gateway: SocketAddr,
        session: Option<&str>,
        message: &Value,
    ) -> (StatusCode, Option<String>, Value) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut req = Request::post(format!("http://{gateway}/servers/old/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        let req = req
            .body(Full::new(Bytes::from(message.to_string())))
            .expect("request");
        let response = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .expect("an answer in time")
            .expect("an answer");
        let status = response.status();
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, session, body)
    }

    #[tokio::test]
    async fn clients_share_one_event_stream_and_each_gets_its_own_answers() {
        let (server, streams) = legacy_server().await;
        let mut old = instance(
            "l1",
            "old",
            Status::Running,
            Some(Endpoint::Http(format!("http://{server}/sse"))),
            "ready",
            1,
        );
        old.mcp = Some(McpIdentity {
            handshake: "2024-11-05 (initialize)".into(),
            protocol_version: "2024-11-05".into(),
            server_name: "legacy".into(),
            server_version: "1.0".into(),
            transport: "sse".into(),
            latency_ms: 1.0,
        });
        let table = Table::from_snapshot(&snapshot(vec![old]));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (_tables, receiver) = watch::channel(Arc::new(table));
        let (_stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let (_headers, headers) = watch::channel(Arc::new(ServerHeaders::new()));
            let shutdown = async {
                let _ = stopped.await;
            };
            serve(
                listener,
                receiver,
                headers,
                Access::new(None, addr),
                Limits::default(),
                None,
                shutdown,
            )
            .await
            .expect("serves");
        });

        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}});
        let (status, session, body) = post(addr, None, &init).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["result"]["serverInfo"]["name"], "legacy", "{body}");
        let session = session.expect("a session id");

        // Concurrent clients, every one with the same JSON-RPC id.
        let calls = (0..8).map(|n| {
            let session = session.clone();
            async move {
                let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": format!("client {n}")}}});
                (n, post(addr, Some(&session), &call).await)
            }
        });
        for (n, (status, _, body)) in futures_util::future::join_all(calls).await {
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["id"], 7, "{body}");
            assert_eq!(
                body["result"]["content"][0]["text"],
                format!("client {n}"),
                "client {n} got another's answer: {body}"
            );
        }
        assert_eq!(
            streams.load(Ordering::SeqCst),
            1,
            "one event stream for all"
        );

        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let get = Request::get(format!("http://{addr}/servers/old/mcp"))
            .header("accept", "text/event-stream")
            .body(Full::default())
            .expect("request");
        let response = client.request(get).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("a legacy HTTP+SSE server"), "{text}");
    }
}

/// An `X-Team` header, as an external server's `headers` give it.
fn team(value: &str) -> Arc<super::ServerHeaders> {
    let header = crate::model::HttpHeader {
        name: "X-Team".into(),
        value: crate::model::HttpHeaderValue::Plain(value.into()),
    };
    Arc::new([("ext".to_owned(), vec![header])].into())
}

/// One POST to `ext` through the gateway at `addr`: the body of the answer.
async fn post_ext(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /servers/ext/mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    raw.split_once("\r\n\r\n").expect("head").1.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_while_serving_reach_the_next_request() {
    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use tokio::net::TcpListener;
    use tokio::sync::watch;
    let limits = super::Limits::default();
    // An upstream that answers with the `X-Team` it was sent.
    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = upstream.local_addr().expect("addr").port();
    let echo = |req: hyper::Request<Incoming>| async move {
        let team = req.headers().get("x-team").cloned();
        hyper::Response::new(Full::new(Bytes::from(
            team.map(|v| v.as_bytes().to_vec()).unwrap_or_default(),
        )))
    };
    let up_limits = crate::listen::Limits {
        header_read: limits.header_read,
        head_bytes: limits.head_bytes,
        connection: limits.connection,
        max_connections: 16,
        grace: limits.grace,
    };
    tokio::spawn(crate::listen::serve(
        "upstream",
        upstream,
        up_limits,
        echo,
        std::future::pending(),
    ));
    let table = Table::from_snapshot(&snapshot(vec![instance(
        "a",
        "ext",
        Status::Running,
        http(port),
        "ready",
        1,
    )]));
    let (_tables, table) = watch::channel(Arc::new(table));
    let (headers, given) = watch::channel(team("platform"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let proxy =
        super::Proxy::new(table, given, Access::new(None, addr), limits, None).expect("a gateway");
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    assert_eq!(post_ext(addr).await, "platform");

    // Rotated while serving: the next requests carry the new value.
    headers.send_replace(team("data"));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while post_ext(addr).await != "data" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still the old header"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // A value that cannot be sent is left out, rather than the old one kept.
    headers.send_replace(team("two\nlines"));
    while !post_ext(addr).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "still a header");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
