//! Proves the `mcp-fixture` example is a working MCP server, locally and in
//! its `FROM scratch` image, before other suites rely on it: the handshake on
//! stdio (twice on one stream, as the Docker attach probe does) and on
//! streamable HTTP, and each on-demand misbehaviour (crash, refusal, signals).

#[path = "support/fixture.rs"]
mod fixture;

use std::{
    net::{SocketAddr, TcpListener},
    process::Command,
    time::{Duration, Instant},
};

use fixture::{
    Container, StdioPeer, eventually, fixture_binary, fixture_image, initialize_request,
    initialized_notification, mcp_post, tools_list_request,
};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(20);

fn local(args: &[&str]) -> StdioPeer {
    let mut command = Command::new(fixture_binary());
    command.args(args);
    StdioPeer::spawn(command)
}

fn free_local_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind an ephemeral port");
    listener.local_addr().expect("no local address")
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("cannot run kill");
    assert!(status.success(), "kill -TERM {pid} failed");
}

fn tool_names(list: &Value) -> Vec<&str> {
    list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("tools/list returned no tools: {list}"))
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect()
}

#[test]
fn stdio_answers_a_second_initialize_on_the_same_stream() {
    let mut server = local(&["--transport", "stdio", "--log-stdout", "2"]);

    server.send(&initialize_request(1, "2025-06-18"));
    let first = server.response(1, PATIENCE);
    assert_eq!(
        first["result"]["serverInfo"]["name"], "mcp-fixture",
        "{first}"
    );
    assert_eq!(first["result"]["protocolVersion"], "2025-06-18", "{first}");
    assert_eq!(
        server.stdout_noise.len(),
        2,
        "the --log-stdout lines come before the protocol: {:?}",
        server.stdout_noise
    );
    server.send(&initialized_notification());
    server.send(&tools_list_request(2));
    assert_eq!(tool_names(&server.response(2, PATIENCE)), ["echo"]);
    server.send(&json!({
        "jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": { "name": "echo", "arguments": { "text": "hello fixture" } }
    }));
    let echoed = server.response(3, PATIENCE);
    assert_eq!(
        echoed["result"]["content"][0]["text"], "hello fixture",
        "{echoed}"
    );

    // A second client on the same stdin, as after a detach and re-attach.
    server.send(&initialize_request(10, "2025-03-26"));
    let second = server.response(10, PATIENCE);
    assert_eq!(
        second["result"]["serverInfo"]["name"], "mcp-fixture",
        "{second}"
    );
    assert_eq!(
        second["result"]["protocolVersion"], "2025-03-26",
        "{second}"
    );
    server.send(&initialized_notification());
    server.send(&tools_list_request(11));
    assert_eq!(tool_names(&server.response(11, PATIENCE)), ["echo"]);

    server.close_stdin();
    assert!(server.wait_exit(PATIENCE).success());
    server.stderr_line("mcp-fixture: serving stdio", PATIENCE);
}

#[test]
fn stdio_recovers_when_a_client_opens_with_a_notification() {
    let mut server = local(&["--name", "renamed"]);
    // rmcp gives up on a session whose first message is not a request; the
    // fixture must start another on the same stream and lose nothing after.
    server.send(&initialized_notification());
    server.send(&initialize_request(1, "2025-06-18"));
    let reply = server.response(1, PATIENCE);
    assert_eq!(reply["result"]["serverInfo"]["name"], "renamed", "{reply}");
    assert_eq!(
        reply["result"]["serverInfo"]["version"],
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn delay_start_holds_the_answer_back() {
    let started = Instant::now();
    let mut server = local(&["--delay-start", "400"]);
    server.send(&initialize_request(1, "2025-06-18"));
    server.response(1, PATIENCE);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "answered after {:?}, before the 400 ms delay",
        started.elapsed()
    );
}

#[test]
fn crash_after_exits_with_code_3_and_says_why() {
    let mut server = local(&["--crash-after", "200"]);
    let status = server.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(3), "{status}");
    server.stderr_line("mcp-fixture: crashing on purpose after 200 ms", PATIENCE);
}

#[test]
fn sigterm_stops_a_server_waiting_on_stdin() {
    let mut server = local(&["--transport", "stdio"]);
    server.stderr_line("mcp-fixture: serving stdio", PATIENCE);
    sigterm(server.pid());
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
}

#[test]
fn refusing_stdio_server_reads_but_never_answers() {
    let mut server = local(&["--refuse"]);
    server.stderr_line("mcp-fixture: refusing to serve", PATIENCE);
    server.send(&initialize_request(1, "2025-06-18"));
    server.close_stdin();
    // EOF must not end a refusing server either: only the signal does.
    sigterm(server.pid());
    server.wait_exit(Duration::from_secs(5));
    let stdout = server.rest_of_stdout(PATIENCE);
    assert!(stdout.is_empty(), "a refusing server wrote {stdout:?}");
}

#[test]
fn http_initialize_opens_a_session() {
    let addr = free_local_addr();
    let listen = addr.to_string();
    let mut server = local(&["--transport", "http", "--listen", &listen]);
    server.stderr_line(&format!("mcp-fixture: listening on {addr}/mcp"), PATIENCE);
    assert_http_mcp(addr, "/mcp", "mcp-fixture");

    let elsewhere = fixture::http_request(addr, "GET", "/nope", &[], None, PATIENCE)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(elsewhere.status, 404);

    sigterm(server.pid());
    assert!(server.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn http_custom_path_and_name() {
    let addr = free_local_addr();
    let listen = addr.to_string();
    let _server = local(&[
        "--transport",
        "http",
        "--listen",
        &listen,
        "--path",
        "/custom",
        "--name",
        "web",
    ]);
    eventually(PATIENCE, || {
        mcp_post(
            addr,
            "/custom",
            None,
            &initialize_request(1, "2025-06-18"),
            PATIENCE,
        )
    });
    assert_http_mcp(addr, "/custom", "web");
}

#[test]
fn refusing_http_server_answers_503() {
    let addr = free_local_addr();
    let listen = addr.to_string();
    let _server = local(&["--transport", "http", "--listen", &listen, "--refuse"]);
    let reply = eventually(PATIENCE, || {
        mcp_post(
            addr,
            "/mcp",
            None,
            &initialize_request(1, "2025-06-18"),
            PATIENCE,
        )
    });
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.body, "refusing to serve");
}

/// The full streamable-HTTP handshake: initialize (JSON or SSE), the session
/// header, `notifications/initialized`, then `tools/list` in that session.
fn assert_http_mcp(addr: SocketAddr, path: &str, name: &str) {
    let reply = eventually(PATIENCE, || {
        let reply = mcp_post(
            addr,
            path,
            None,
            &initialize_request(1, "2025-06-18"),
            PATIENCE,
        )?;
        match reply.status {
            200 => Ok(reply),
            // A container's port is published before its process listens.
            _ => Err(format!("initialize answered {reply:?}")),
        }
    });
    let session = reply
        .header("mcp-session-id")
        .unwrap_or_else(|| panic!("no Mcp-Session-Id header: {reply:?}"))
        .to_owned();
    let initialize = reply
        .messages()
        .into_iter()
        .find(|message| message["id"] == 1)
        .unwrap_or_else(|| panic!("no initialize response in {reply:?}"));
    assert_eq!(
        initialize["result"]["serverInfo"]["name"], name,
        "{initialize}"
    );

    let ack = mcp_post(
        addr,
        path,
        Some(&session),
        &initialized_notification(),
        PATIENCE,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(ack.status, 202, "{ack:?}");

    let listed = mcp_post(addr, path, Some(&session), &tools_list_request(2), PATIENCE)
        .unwrap_or_else(|error| panic!("{error}"));
    let list = listed
        .messages()
        .into_iter()
        .find(|message| message["id"] == 2)
        .unwrap_or_else(|| panic!("no tools/list response in {listed:?}"));
    assert_eq!(tool_names(&list), ["echo"]);
}

#[test]
fn image_speaks_stdio_through_docker_run() {
    let image = fixture_image();
    let name = format!("mcpctl-fixture-stdio-{}", std::process::id());
    let _cleanup = Container { id: name.clone() };
    let mut command = Command::new("docker");
    command.args([
        "run",
        "--rm",
        "-i",
        "--name",
        &name,
        "--label",
        fixture::TEST_LABEL,
        &image,
        "--transport",
        "stdio",
    ]);
    let mut server = StdioPeer::spawn(command);
    server.send(&initialize_request(1, "2025-06-18"));
    let reply = server.response(1, PATIENCE);
    assert_eq!(
        reply["result"]["serverInfo"]["name"], "mcp-fixture",
        "{reply}"
    );
    server.send(&initialize_request(2, "2025-06-18"));
    server.response(2, PATIENCE);
    server.close_stdin();
    assert!(server.wait_exit(PATIENCE).success());
}

#[test]
fn image_serves_http_on_a_published_port_and_stops_promptly() {
    let image = fixture_image();
    let container =
        Container::run_detached(&["-p", "127.0.0.1::8080", &image, "--transport", "http"]);
    let addr = container.published("8080/tcp");
    assert_http_mcp(addr, "/mcp", "mcp-fixture");

    // PID 1 gets no default signal handling: without the fixture's own
    // handler, `docker stop` would wait out its full grace period.
    let started = Instant::now();
    fixture::docker(&["stop", "--time", "20", &container.id])
        .unwrap_or_else(|error| panic!("{error}"));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "docker stop took {took:?}");
    let code = fixture::docker(&["inspect", "--format", "{{.State.ExitCode}}", &container.id])
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(code.trim(), "0");
}
