//! `mcpctl gateway` end to end, against the real Docker engine: a session
//! stays on the instance that answered its `initialize`, gets 404 once that
//! instance is gone (and a new session lands elsewhere), a server with no
//! RUNNING instance answers 503 naming why, the token and `Origin`
//! checks refuse what they should, and under steady load from `mcp-load`
//! (both eras) no request reaches a STARTING instance and a rolling replace
//! loses no request that did not touch a removed instance. No Docker, no
//! pass: the fixture build fails the test.

#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/rmcp_client.rs"]
mod rmcp_client;

use fixture::{HttpReply, PROTOCOL_VERSION, initialize_request, mcp_post, tools_list_request};
use fleet::{Fleet, eventually, http, images};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// A running `mcpctl gateway` on a free loopback port, its log in a file,
/// killed when dropped.
struct Gateway {
    served: fixture::Listening,
    addr: SocketAddr,
}

impl Gateway {
    fn start(f: &Fleet, extra: &[&str]) -> Gateway {
        let addr = fixture::Listening::free_addr();
        let log = f.dir.path().join(format!("gateway-{}.log", addr.port()));
        let listen = addr.to_string();
        let mut args = vec!["gateway", "--listen", &listen];
        args.extend_from_slice(extra);
        let served = fixture::Listening::spawn(f.command(&args), addr, log);
        Gateway { served, addr }
    }

    fn log(&self) -> String {
        self.served.log()
    }

    /// The instance of every access line in the log, in order.
    fn instances_served(&self) -> Vec<String> {
        fixture::gateway_instances_served(&self.log())
    }

    fn post(&self, server: &str, session: Option<&str>, message: &Value) -> HttpReply {
        mcp_post(
            self.addr,
            &format!("/servers/{server}/mcp"),
            session,
            message,
            WAIT,
        )
        .unwrap_or_else(|e| panic!("POST through the gateway: {e}\n{}", self.log()))
    }

    /// `GET /metrics`.
    fn metrics(&self, headers: &[(&str, &str)]) -> HttpReply {
        fixture::http_request(self.addr, "GET", "/metrics", headers, None, WAIT)
            .unwrap_or_else(|e| panic!("GET /metrics: {e}\n{}", self.log()))
    }

    fn request(&self, headers: &[(&str, &str)]) -> HttpReply {
        let mut all = vec![("Accept", "application/json, text/event-stream")];
        all.extend_from_slice(headers);
        fixture::http_request(
            self.addr,
            "POST",
            "/servers/web/mcp",
            &all,
            Some(&initialize_request(1, PROTOCOL_VERSION)),
            WAIT,
        )
        .unwrap_or_else(|e| panic!("POST through the gateway: {e}\n{}", self.log()))
    }
}

/// The JSON-RPC error message of a refused request.
fn error_message(reply: &HttpReply) -> String {
    reply
        .messages()
        .first()
        .and_then(|m| m["error"]["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// `initialize` through the gateway: the session id it was given.
fn initialize(g: &Gateway, server: &str) -> String {
    let reply = g.post(server, None, &initialize_request(1, PROTOCOL_VERSION));
    assert_eq!(reply.status, 200, "{reply:?}\n{}", g.log());
    assert!(
        reply
            .messages()
            .iter()
            .any(|m| m["result"]["serverInfo"].is_object()),
        "{reply:?}"
    );
    let session = reply
        .header("mcp-session-id")
        .unwrap_or_else(|| panic!("no session id: {reply:?}"))
        .to_owned();
    let done = g.post(server, Some(&session), &fixture::initialized_notification());
    assert_eq!(done.status, 202, "{done:?}");
    session
}

/// Opens the session's SSE stream (a GET) and reads its head; see
/// [`fixture::open_event_stream`].
fn open_stream(g: &Gateway, server: &str, session: &str) -> std::net::TcpStream {
    fixture::open_event_stream(g.addr, &format!("/servers/{server}/mcp"), session, WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", g.log()))
}

#[test]
fn a_session_stays_on_its_instance_and_gets_404_once_that_instance_is_gone() {
    let f = Fleet::new("gw-pin");
    f.write("web.yaml", &http("web", 3, images().0));
    f.apply();
    f.assert_exact(&[("web", 3)]);
    let g = Gateway::start(&f, &[]);

    let session = initialize(&g, "web");
    // The session's event stream stays open on its instance: by least
    // outstanding requests, the session's next requests would go elsewhere.
    let stream = open_stream(&g, "web", &session);
    for id in 2..12 {
        // Sessions live in one fixture process: a request that reached
        // another replica would be refused.
        let reply = g.post("web", Some(&session), &tools_list_request(id));
        assert_eq!(reply.status, 200, "{reply:?}\n{}", g.log());
        assert!(
            reply
                .messages()
                .iter()
                .any(|m| m["id"] == id && m["result"]["tools"].is_array()),
            "{reply:?}"
        );
    }
    drop(stream);
    let served = g.instances_served();
    assert_eq!(served.len(), 13, "{}", g.log());
    let pinned = served[0].clone();
    assert!(served.iter().all(|i| *i == pinned), "{served:?}");
    // Every access line says whether a session came with it: all but the
    // `initialize` did.
    let with_session = g
        .log()
        .lines()
        .filter(|l| l.contains("gateway request") && l.contains("session=true"))
        .count();
    assert_eq!(with_session, 12, "{}", g.log());
    let metrics = g.metrics(&[]);
    assert_eq!(metrics.status, 200, "{metrics:?}");
    for series in [
        // The method comes from the body; the stream's GET has none.
        format!(
            r#"mcpctl_gateway_requests_total{{server="web",instance="{pinned}",method="initialize",code="200"}} 1"#
        ),
        format!(
            r#"mcpctl_gateway_requests_total{{server="web",instance="{pinned}",method="tools/list",code="200"}} 10"#
        ),
        format!(
            r#"mcpctl_gateway_requests_total{{server="web",instance="{pinned}",method="-",code="200"}} 1"#
        ),
        format!(
            r#"mcpctl_gateway_requests_total{{server="web",instance="{pinned}",method="notifications/initialized",code="202"}} 1"#
        ),
        format!(
            r#"mcpctl_gateway_request_duration_seconds_count{{server="web",instance="{pinned}"}} 13"#
        ),
        format!(r#"mcpctl_gateway_sessions{{server="web",instance="{pinned}"}} 1"#),
    ] {
        assert!(
            metrics.body.lines().any(|l| l == series),
            "{series} missing:\n{}",
            metrics.body
        );
    }

    // The pinned instance dies, and apply records it (and replaces it).
    let (container, _) = f.containers().remove(&pinned).expect("its container");
    fleet::docker_lines(&["rm", "-f", &container]);
    f.apply();
    assert!(!f.ids_of("web").contains(&pinned));

    // The gateway follows the state within its refresh; until then the
    // dead instance may refuse the connection (502), never another replica.
    let gone = eventually("the session to get 404", WAIT, || {
        let reply = g.post("web", Some(&session), &tools_list_request(99));
        assert!(matches!(reply.status, 404 | 502), "{reply:?}");
        (reply.status == 404).then_some(reply)
    });
    assert!(
        error_message(&gone).contains("start a new session"),
        "{gone:?}"
    );

    let before = g.instances_served().len();
    let fresh = initialize(&g, "web");
    assert_ne!(fresh, session);
    let after = g.instances_served();
    assert_ne!(after[before], pinned, "{after:?}");
    let reply = g.post("web", Some(&fresh), &tools_list_request(100));
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[test]
fn a_server_with_no_running_instance_answers_503_naming_the_status_and_reason() {
    let f = Fleet::new("gw-down");
    f.write(
        "web.yaml",
        &http("web", 1, images().0).replace(
            "[\"--transport\", \"http\"]",
            "[\"--transport\", \"http\", \"--refuse\"]",
        ),
    );
    let r = f.run(&["apply", "fleet", "--no-wait"]);
    assert_eq!(r.code, 0, "{r}");
    let g = Gateway::start(&f, &[]);
    let reply = g.post("web", None, &initialize_request(1, PROTOCOL_VERSION));
    assert_eq!(reply.status, 503, "{reply:?}");
    let message = error_message(&reply);
    assert!(
        message.starts_with("web has no RUNNING instance: 1 STARTING ("),
        "{message}"
    );
    let unknown = g.post("nope", None, &initialize_request(1, PROTOCOL_VERSION));
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(error_message(&unknown).contains("\"nope\""), "{unknown:?}");
}

#[test]
fn a_missing_token_and_a_wrong_origin_are_refused() {
    let f = Fleet::new("gw-auth");
    let token = f.dir.path().join("token");
    std::fs::write(&token, "gw-token-5d1f\n").expect("token file");
    let g = Gateway::start(&f, &["--token-file", token.to_str().expect("utf-8 path")]);

    assert_eq!(g.request(&[]).status, 401);
    assert_eq!(g.request(&[("Authorization", "Bearer wrong")]).status, 401);
    let good = ("Authorization", "Bearer gw-token-5d1f");
    assert_eq!(
        g.request(&[good, ("Origin", "http://evil.example:8080")])
            .status,
        403
    );
    // Past both checks, the request is routed: this state has no `web`.
    let routed = g.request(&[good, ("Origin", "http://localhost:6274")]);
    assert_eq!(routed.status, 404, "{routed:?}");
    assert!(
        error_message(&routed).contains("no server named"),
        "{routed:?}"
    );
    // /metrics is behind the same checks; the four refusals above are the
    // gateway's, under the one label set for names the state does not know.
    assert_eq!(g.metrics(&[]).status, 401);
    assert_eq!(g.metrics(&[("Authorization", "Bearer wrong")]).status, 401);
    let metrics = g.metrics(&[good]);
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l == r#"mcpctl_gateway_errors_total{server="-",instance="-",by="gateway"} 4"#),
        "{}",
        metrics.body
    );
    // Access lines carry what was asked and how it ended, never the token.
    let log = g.log();
    assert!(!log.contains("gw-token-5d1f"), "{log}");
    let last = log
        .lines()
        .rfind(|l| l.contains("gateway request"))
        .unwrap_or_else(|| panic!("no access line:\n{log}"));
    for field in [
        "server=\"web\"",
        "instance=\"-\"",
        "method=POST",
        "status=404",
        "session=false",
        "ms=",
    ] {
        assert!(last.contains(field), "{field} missing from {last}");
    }

    // Refused before it binds; were it not, it would serve until killed.
    let mut open = f.spawn(&["gateway", "--listen", "0.0.0.0:0"]);
    let deadline = std::time::Instant::now() + WAIT;
    let exited = loop {
        if let Some(status) = open.try_wait().expect("try_wait") {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            break None;
        }
        // Polling a child process against a deadline.
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = open.kill();
    let open: fleet::Run = open.wait_with_output().expect("output").into();
    assert!(
        exited.is_some_and(|s| !s.success()),
        "not refused within {WAIT:?}: {open}"
    );
    assert!(open.stderr.contains("without a token"), "{open}");
}

#[test]
fn an_external_servers_secret_headers_are_added_by_the_gateway() {
    let f = Fleet::new("gw-external");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let token = "ext-token-93ab";
    let _upstream = KillOnDrop(
        std::process::Command::new(fixture::fixture_binary())
            .args(["--transport", "http", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--name", "linear", "--require-bearer", token])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("external server"),
    );
    std::fs::create_dir_all(f.dir.path().join("secrets/linear")).expect("mkdir");
    std::fs::write(
        f.dir.path().join("secrets/linear/token"),
        format!("{token}\n"),
    )
    .expect("secret");
    f.write(
        "linear.yaml",
        &format!(
            "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: linear}}\nspec:\n  external:\n    url: http://127.0.0.1:{port}/mcp\n    headers:\n      Authorization: {{secretRef: {{name: linear, key: token}}, prefix: \"Bearer \"}}\n  readiness: {{timeout: 60s}}\n"
        ),
    );
    f.apply();

    // Without the source, the gateway has no token to add: the server refuses.
    let bare = Gateway::start(&f, &[]);
    let refused = bare.post("linear", None, &initialize_request(1, PROTOCOL_VERSION));
    assert_eq!(refused.status, 401, "{refused:?}");
    drop(bare);

    // With it, the client sends no credential and the server accepts.
    let g = Gateway::start(&f, &["fleet"]);
    let session = initialize(&g, "linear");
    let reply = g.post("linear", Some(&session), &tools_list_request(2));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(!g.log().contains(token), "{}", g.log());
}

/// A process of the test's own, killed however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mcp-load` calling `echo` through the gateway until stopped; killed if
/// dropped unstopped.
struct Load {
    child: Option<Child>,
    what: String,
}

impl Load {
    fn start(g: &Gateway, server: &str, era: &str, clients: usize, extra: &[&str]) -> Load {
        let url = format!("http://{}/servers/{server}/mcp", g.addr);
        let clients = clients.to_string();
        let child = std::process::Command::new(fixture::load_binary())
            .args(["--url", &url, "--era", era, "--clients", &clients])
            .args(["--until-stdin-closes", "--timeout", "10s"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcp-load");
        Load {
            child: Some(child),
            what: format!("{era} load on {server}"),
        }
    }

    /// Ends the load (closes its stdin) and returns its report.
    fn stop(mut self) -> Value {
        let mut child = self.child.take().expect("not stopped yet");
        drop(child.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("try_wait").is_none() {
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                panic!("{} did not stop within 30 s", self.what);
            }
            // Polling a child process against a deadline.
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "{}: no report ({e}): {stdout}\n{}",
                self.what,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Everything a container wrote (the fixture logs to stderr).
fn container_log(container: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["logs", container])
        .stdin(Stdio::null())
        .output()
        .expect("docker logs");
    assert!(out.status.success(), "docker logs {container}: {out:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn status_of(f: &Fleet, instance: &str) -> String {
    f.instances()
        .iter()
        .find(|i| i["id"] == instance)
        .and_then(|i| i["status"].as_str())
        .unwrap_or("gone")
        .to_owned()
}

/// Requests an instance answered while the fixture saw them (its
/// `--log-methods` lines), for the failure messages.
fn seen(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(": saw ")).collect()
}

/// An HTTP fixture server that logs every request's method and answers 503
/// to everything for its first `unready_ms` (so its probe keeps it STARTING).
fn logged_http(name: &str, replicas: u32, unready_ms: u32) -> String {
    http(name, replicas, images().0).replace(
        "[\"--transport\", \"http\"]",
        &format!(
            "[\"--transport\", \"http\", \"--log-methods\", \"--unready-for\", \"{unready_ms}\"]"
        ),
    )
}

#[test]
fn no_request_reaches_a_starting_instance_while_clients_of_both_eras_call() {
    let f = Fleet::new("gw-starting");
    f.write("web.yaml", &logged_http("web", 1, 4000));
    f.apply();
    let first = f.ids_of("web").pop().expect("one instance");
    let g = Gateway::start(&f, &[]);
    let modern = Load::start(&g, "web", "2026", 4, &[]);
    // New sessions keep arriving, so `initialize` is routed all along too.
    let sessions = Load::start(&g, "web", "2025", 4, &["--session-calls", "5"]);
    eventually("the load to flow", WAIT, || {
        (g.instances_served().len() >= 50).then_some(())
    });

    f.write("web.yaml", &logged_http("web", 2, 4000));
    let apply = f.spawn(&["apply", "fleet", "--timeout", "60s"]);
    let new = eventually("the second instance to be recorded", WAIT, || {
        f.ids_of("web").into_iter().find(|id| *id != first)
    });
    let container = eventually("its container", WAIT, || {
        f.containers().remove(&new).map(|(c, _)| c)
    });
    // The log is read before the status: a status still STARTING after the
    // read means everything in that log reached the instance while the state
    // (which the gateway routes by) said STARTING.
    let mut checked = 0;
    let mut last_starting_log = String::new();
    eventually(
        "the second instance to be RUNNING",
        Duration::from_secs(60),
        || {
            let log = container_log(&container);
            match status_of(&f, &new).as_str() {
                "STARTING" => {
                    for method in ["tools/call", "initialize", "notifications", "DELETE"] {
                        assert!(
                            !log.contains(&format!("saw {method}")),
                            "{method} reached {new} while it was STARTING:\n{}",
                            seen(&log).join("\n")
                        );
                    }
                    checked += 1;
                    last_starting_log = log;
                    None
                }
                "RUNNING" => Some(()),
                other => panic!("{new} is {other}:\n{log}"),
            }
        },
    );
    let applied: fleet::Run = apply.wait_with_output().expect("apply").into();
    assert_eq!(applied.code, 0, "{applied}");
    assert!(checked >= 3, "STARTING seen only {checked} times");
    // The probe's requests were seen (and refused) while it was STARTING:
    // the log is the instance's, and it logs what reaches it.
    assert!(
        last_starting_log.contains("saw server/discover (unready: 503)"),
        "{last_starting_log}"
    );

    // Once RUNNING, it takes its share of calls and sessions.
    eventually(
        "calls to reach the new instance",
        Duration::from_secs(20),
        || {
            let log = container_log(&container);
            (log.contains("saw tools/call") && log.contains("saw initialize")).then_some(())
        },
    );
    for load in [modern.stop(), sessions.stop()] {
        assert!(load["ok"].as_u64().unwrap_or(0) > 100, "{load}");
        assert_eq!(load["failed"], 0, "{load}");
        assert_eq!(load["reinitialized"], 0, "{load}");
    }
}

#[test]
fn a_rolling_replace_under_load_fails_no_request_that_did_not_touch_a_removed_instance() {
    let f = Fleet::new("gw-roll");
    // New instances answer 503 for their first second: a request routed to
    // one before it is RUNNING would fail, and name no removed instance.
    f.write("web.yaml", &logged_http("web", 3, 1000));
    f.apply();
    f.assert_exact(&[("web", 3)]);
    let before = f.ids_of("web");
    let g = Gateway::start(&f, &[]);
    let load = Load::start(&g, "web", "2026", 8, &[]);
    eventually("the load to flow", WAIT, || {
        (g.instances_served().len() >= 100).then_some(())
    });

    f.write(
        "web.yaml",
        &format!("{}  env: {{ROLL: \"2\"}}\n", logged_http("web", 3, 1000)),
    );
    f.apply();
    f.assert_exact(&[("web", 3)]);
    let after = f.ids_of("web");
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "{before:?} -> {after:?}"
    );
    // The load goes on until the gateway has served every new instance.
    let served_before = g.instances_served().len();
    eventually(
        "every new instance to serve calls",
        Duration::from_secs(20),
        || {
            let served = g.instances_served();
            after
                .iter()
                .all(|id| served[served_before..].contains(id))
                .then_some(())
        },
    );
    let report = load.stop();
    eprintln!("rolling replace under load: {report}");
    assert!(report["ok"].as_u64().unwrap_or(0) > 200, "{report}");
    let untouched: u64 = report["failed_by_instance"]
        .as_object()
        .expect("failed_by_instance")
        .iter()
        .filter(|(instance, _)| !before.contains(instance))
        .map(|(_, n)| n.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        untouched, 0,
        "requests failed that did not touch a removed instance ({before:?}): {report}"
    );
}

/// `echo` through an rmcp client: the text it sent back.
async fn rmcp_echo(
    client: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    text: &str,
) -> Result<String, String> {
    let mut arguments = serde_json::Map::new();
    arguments.insert("text".into(), Value::from(text));
    let result = client
        .call_tool(rmcp::model::CallToolRequestParams::new("echo").with_arguments(arguments))
        .await
        .map_err(|e| e.to_string())?;
    let result = serde_json::to_value(&result).map_err(|e| e.to_string())?;
    result["content"][0]["text"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no text in {result}"))
}

fn rmcp_transport(
    url: &str,
) -> rmcp::transport::StreamableHttpClientTransport<rmcp_client::HyperHttp> {
    rmcp::transport::StreamableHttpClientTransport::with_client(
        rmcp_client::HyperHttp::default(),
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            url.to_owned(),
        ),
    )
}

#[test]
fn rmcp_clients_of_both_eras_call_through_the_gateway_and_a_session_outlives_its_instance() {
    use rmcp::ServiceExt;
    use rmcp::model::ProtocolVersion;
    use rmcp::service::{ClientLifecycleMode, ClientServiceExt};

    let f = Fleet::new("gw-rmcp");
    f.write("web.yaml", &http("web", 3, images().0));
    f.apply();
    f.assert_exact(&[("web", 3)]);
    let g = Gateway::start(&f, &[]);
    let url = format!("http://{}/servers/web/mcp", g.addr);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    // 2026-07-28: `server/discover`, then stateless calls, some at once.
    let modern = runtime.block_on(async {
        let client = ()
            .serve_with_lifecycle(
                rmcp_transport(&url),
                ClientLifecycleMode::Discover {
                    preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                },
            )
            .await
            .unwrap_or_else(|e| panic!("discover through the gateway: {e}\n{}", g.log()));
        let version = client.peer_info().map(|i| i.protocol_version.clone());
        assert_eq!(version, Some(ProtocolVersion::V_2026_07_28));
        let tools = client.list_all_tools().await.expect("tools/list");
        assert!(tools.iter().any(|t| t.name == "echo"), "{tools:?}");
        let calls = (0..12).map(|n| {
            let client = &client;
            async move { (n, rmcp_echo(client, &format!("modern {n}")).await) }
        });
        for (n, answer) in futures_util::future::join_all(calls).await {
            assert_eq!(answer, Ok(format!("modern {n}")), "{}", g.log());
        }
        client
    });

    // 2025: `initialize`, then a session the gateway keeps on one instance.
    let served_before = g.instances_served().len();
    let legacy = runtime.block_on(async {
        let client = ()
            .serve(rmcp_transport(&url))
            .await
            .unwrap_or_else(|e| panic!("initialize through the gateway: {e}\n{}", g.log()));
        let version = client.peer_info().map(|i| i.protocol_version.clone());
        assert!(
            version
                .as_ref()
                .is_some_and(|v| *v < ProtocolVersion::V_2026_07_28),
            "{version:?}"
        );
        for n in 0..6 {
            assert_eq!(
                rmcp_echo(&client, &format!("legacy {n}")).await,
                Ok(format!("legacy {n}"))
            );
        }
        client
    });
    let served = g.instances_served();
    let session_on: Vec<&String> = served[served_before..].iter().collect();
    assert!(session_on.len() >= 8, "{session_on:?}");
    let pinned = session_on[0].clone();
    assert!(session_on.iter().all(|i| **i == pinned), "{session_on:?}");

    // The session's instance goes; once the gateway answers 404, rmcp starts
    // a new session by itself and the call goes through on another instance.
    let (container, _) = f.containers().remove(&pinned).expect("its container");
    fleet::docker_lines(&["rm", "-f", &container]);
    f.apply();
    let answered = runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match rmcp_echo(&legacy, "after").await {
                Ok(text) => break text,
                // Until the gateway reads the new state, the dead instance
                // refuses the connection (a 502, an error for this call).
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("while the instance is going: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("the session never recovered: {e}\n{}", g.log()),
            }
        }
    });
    assert_eq!(answered, "after");
    let last = g.instances_served().pop().expect("served");
    assert_ne!(last, pinned);
    assert!(g.log().contains("status=404"), "{}", g.log());
    // The stateless client never had a session to lose.
    assert_eq!(
        runtime.block_on(rmcp_echo(&modern, "modern again")),
        Ok("modern again".to_owned())
    );
    runtime.block_on(async {
        let _ = modern.cancel().await;
        let _ = legacy.cancel().await;
    });
}

/// `tools/call echo` with `text`, through the gateway: in the 2026-07-28
/// era (stateless, its mirror headers set) without a session, else in the
/// given 2025-era session. Returns the echoed text, or the failure.
fn echo(
    g: &Gateway,
    server: &str,
    session: Option<&str>,
    id: u64,
    text: &str,
) -> Result<String, String> {
    let mut message = serde_json::json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}},
    });
    let mut headers = vec![("Accept", "application/json, text/event-stream")];
    match session {
        Some(s) => {
            headers.push(("Mcp-Session-Id", s));
            headers.push(("MCP-Protocol-Version", PROTOCOL_VERSION));
        }
        None => {
            message["params"]["_meta"] = serde_json::json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "mcpctl-tests", "version": "0"},
            });
            headers.push(("MCP-Protocol-Version", "2026-07-28"));
            headers.push(("Mcp-Method", "tools/call"));
            headers.push(("Mcp-Name", "echo"));
        }
    }
    let reply = fixture::http_request(
        g.addr,
        "POST",
        &format!("/servers/{server}/mcp"),
        &headers,
        Some(&message),
        WAIT,
    )?;
    if reply.status != 200 {
        return Err(format!("HTTP {}: {}", reply.status, reply.body));
    }
    let answer = reply
        .messages()
        .into_iter()
        .find(|m| m.get("result").is_some() || m.get("error").is_some())
        .ok_or_else(|| format!("no answer in {reply:?}"))?;
    if answer["id"] != id {
        return Err(format!("answer for id {} to request {id}", answer["id"]));
    }
    answer["result"]["content"][0]["text"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no text in {answer}"))
}

#[test]
fn the_stdio_bridge_carries_concurrent_clients_of_both_eras_without_crossing_answers() {
    let f = Fleet::new("gw-stdio");
    f.write("files.yaml", &fleet::stdio("files", 2, images().0, ""));
    f.apply();
    f.assert_exact(&[("files", 2)]);
    let g = std::sync::Arc::new(Gateway::start(&f, &[]));

    // Every client uses the same request ids: only the bridge's rewriting
    // keeps their answers apart on the instances' shared stdout.
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let g = g.clone();
            std::thread::spawn(move || {
                let session = (c % 2 == 1).then(|| initialize(&g, "files"));
                for id in 1..=10 {
                    let text = format!("client {c} call {id}");
                    let echoed = echo(&g, "files", session.as_deref(), id, &text)
                        .unwrap_or_else(|e| panic!("client {c} call {id}: {e}\n{}", g.log()));
                    assert_eq!(echoed, text, "client {c} got another's answer");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client failed");
    }
    let served = g.instances_served();
    // 80 calls, and 4 initialize and 4 initialized.
    assert_eq!(served.len(), 88, "{}", g.log());
    let mut instances: Vec<&String> = served.iter().collect();
    instances.sort();
    instances.dedup();
    assert_eq!(instances.len(), 2, "both replicas take work: {served:?}");

    // A session stays with its instance; once that instance is gone, the
    // session gets 404 and a new one lands on a live instance.
    let before = g.instances_served().len();
    let session = initialize(&g, "files");
    let pinned = g.instances_served()[before].clone();
    for id in 20..25 {
        assert_eq!(
            echo(&g, "files", Some(&session), id, "pinned").expect("in session"),
            "pinned"
        );
    }
    assert!(
        g.instances_served()[before..].iter().all(|i| *i == pinned),
        "{:?}",
        &g.instances_served()[before..]
    );
    let (container, _) = f.containers().remove(&pinned).expect("its container");
    fleet::docker_lines(&["rm", "-f", &container]);
    f.apply();
    let gone = eventually("the session to get 404", WAIT, || {
        match echo(&g, "files", Some(&session), 30, "after") {
            Err(e) if e.starts_with("HTTP 404") => Some(e),
            Err(e) => {
                // Until the gateway reads the state, the dead instance's
                // bridge fails: never another replica.
                assert!(e.starts_with("HTTP 502"), "{e}");
                None
            }
            Ok(text) => panic!("a dead instance's session answered {text:?}"),
        }
    });
    assert!(gone.contains("start a new session"), "{gone}");
    let fresh = initialize(&g, "files");
    assert_eq!(
        echo(&g, "files", Some(&fresh), 31, "fresh").expect("a new session works"),
        "fresh"
    );
}
