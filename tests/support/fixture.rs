//! Test support for the `mcp-fixture` example server: building its static
//! binary and its `FROM scratch` Docker image once per machine state, plus the
//! small clients (line-delimited stdio, hand-written HTTP/1.1, labelled
//! containers) that tests use to talk to it. Include it from an integration
//! test with `#[path = "support/fixture.rs"] mod fixture;`.
//!
//! Every wait here is a poll against a deadline; a missing Docker daemon or a
//! failed build is a test failure, never a skip.
#![allow(dead_code)] // Each including test binary uses a different subset.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Tag of the fixture image built by [`fixture_image`].
pub const FIXTURE_IMAGE: &str = "mcpctl-fixture:test";
/// Image label holding the sha256 of the binary inside, so an up-to-date image
/// is reused instead of rebuilt.
pub const SHA_LABEL: &str = "io.mcpctl.fixture-sha256";
/// Label put on every container a test creates, so leftovers can be found.
pub const TEST_LABEL: &str = "io.mcpctl.test=fixture";
/// The protocol version tests speak unless they say otherwise.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn target_root() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Holds `target/fixture.lock` exclusively: cargo serialises its own builds,
/// but the image check-then-build below must not interleave across the test
/// binaries that `cargo test` runs.
fn machine_lock() -> File {
    let root = target_root();
    std::fs::create_dir_all(&root)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", root.display()));
    let path = root.join("fixture.lock");
    let file = File::create(&path)
        .unwrap_or_else(|error| panic!("cannot open {}: {error}", path.display()));
    file.lock()
        .unwrap_or_else(|error| panic!("cannot lock {}: {error}", path.display()));
    file
}

/// Builds the `mcp-fixture` example as a fully static binary (once per test
/// process) and returns its path.
///
/// It uses its own target directory because different RUSTFLAGS would
/// otherwise throw away the main build's cache. Debug without debug info or
/// optimisation builds fastest, and the fixture needs no speed. An example
/// links the whole library and its dev-dependencies, so the first build
/// compiles all of them again for the static target.
pub fn fixture_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let _lock = machine_lock();
            build_static_fixture()
        })
        .clone()
}

fn build_static_fixture() -> PathBuf {
    let target_dir = target_root().join("fixture");
    let started = Instant::now();
    let output = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--example", "mcp-fixture", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--message-format=json-render-diagnostics")
        // The crate-wide opt-level 1 for dependencies pays off for the main
        // build's tests, but here it would more than triple the build time.
        .args(["--config", r#"profile.dev.package."*".opt-level=0"#])
        // This one would win over RUSTFLAGS if the outer cargo exported it.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C debuginfo=0 -C strip=debuginfo",
        )
        .stdin(Stdio::null())
        .output()
        .expect("cannot run cargo to build the mcp-fixture example");
    if !output.status.success() {
        panic!(
            "building the mcp-fixture example failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let executable = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == "mcp-fixture"
        })
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| {
            panic!(
                "cargo built mcp-fixture but reported no executable:\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    eprintln!(
        "mcp-fixture built in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        executable.display()
    );
    executable
}

/// Builds the `mcp-load` example (the load generator) in the tests' own
/// target directory, once per test process, and returns its path. It links
/// what the test build already compiled, so only the example is new.
pub fn load_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let mut cargo = Command::new(env!("CARGO"));
            // `cargo test` gives the test these (the package's name, its
            // directory...), and build scripts such as ring's rerun when they
            // change: left in, this build would rebuild half the tree that
            // the test build just made, and the next test build again.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if name.starts_with("CARGO_PKG_")
                    || name.starts_with("CARGO_MANIFEST_")
                    || [
                        "CARGO_CRATE_NAME",
                        "CARGO_BIN_NAME",
                        "CARGO_PRIMARY_PACKAGE",
                        "CARGO_TARGET_TMPDIR",
                        "OUT_DIR",
                    ]
                    .contains(&name.as_ref())
                {
                    cargo.env_remove(name.as_ref());
                }
            }
            let output = cargo
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["build", "--example", "mcp-load"])
                .arg("--target-dir")
                .arg(target_root())
                .arg("--message-format=json-render-diagnostics")
                .stdin(Stdio::null())
                .output()
                .expect("cannot run cargo to build the mcp-load example");
            if !output.status.success() {
                panic!(
                    "building the mcp-load example failed ({}):\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "mcp-load")
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .expect("cargo built mcp-load but reported no executable")
        })
        .clone()
}

/// Builds (or reuses) the `FROM scratch` image holding only the fixture
/// binary as `/mcp-fixture`, and returns its tag, [`FIXTURE_IMAGE`].
pub fn fixture_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let binary = fixture_binary();
            require_docker();
            let _lock = machine_lock();
            build_image(&binary);
            FIXTURE_IMAGE.to_owned()
        })
        .clone()
}

/// Panics with a clear message unless a Docker daemon answers.
pub fn require_docker() {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "these tests need a Docker daemon, and `docker version` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => panic!("these tests need the docker CLI, which cannot run: {error}"),
    }
}

fn build_image(binary: &Path) {
    let bytes = std::fs::read(binary)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", binary.display()));
    let sha = hex::encode(Sha256::digest(&bytes));
    let current = docker(&[
        "image",
        "inspect",
        "--format",
        &format!("{{{{ index .Config.Labels \"{SHA_LABEL}\" }}}}"),
        FIXTURE_IMAGE,
    ]);
    if current.as_ref().is_ok_and(|label| label.trim() == sha) {
        return;
    }
    let context = tempfile::tempdir().expect("cannot create a docker build context");
    std::fs::write(context.path().join("mcp-fixture"), &bytes)
        .expect("cannot copy the fixture into the build context");
    set_executable(&context.path().join("mcp-fixture"));
    let dockerfile = format!(
        "FROM scratch\nCOPY mcp-fixture /mcp-fixture\nLABEL {SHA_LABEL}=\"{sha}\"\nENTRYPOINT [\"/mcp-fixture\"]\n"
    );
    std::fs::write(context.path().join("Dockerfile"), dockerfile)
        .expect("cannot write the fixture Dockerfile");
    let output = Command::new("docker")
        .args(["build", "--quiet", "--tag", FIXTURE_IMAGE])
        .arg(context.path())
        // The engine here has no buildx plugin; the classic builder needs
        // nothing from a registry for FROM scratch.
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .output()
        .expect("cannot run docker build");
    if !output.status.success() {
        panic!(
            "docker build of {FIXTURE_IMAGE} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|error| panic!("cannot chmod {}: {error}", path.display()));
}

/// Runs a docker CLI command, returning stdout or a message with stderr.
/// Removes what a scope keeps in the engine besides its containers: its
/// applier lease and its digest key (labelled volumes).
pub fn remove_scope_volumes(scope: &str) {
    for label in ["io.mcpctl.lease", "io.mcpctl.scope"] {
        let Ok(names) = docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label={label}={scope}"),
        ]) else {
            continue;
        };
        let names: Vec<&str> = names.split_whitespace().collect();
        if !names.is_empty() {
            let mut args = vec!["volume", "rm", "-f"];
            args.extend(names);
            let _ = docker(&args);
        }
    }
}

pub fn docker(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run docker {args:?}: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "docker {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A container removed (`docker rm -f`) when dropped, even on a failed assert.
pub struct Container {
    pub id: String,
}

impl Container {
    /// `docker run -d` with [`TEST_LABEL`] added; `args` are what follows it.
    pub fn run_detached(args: &[&str]) -> Container {
        let mut all = vec!["run", "-d", "--label", TEST_LABEL];
        all.extend_from_slice(args);
        let id = docker(&all).unwrap_or_else(|error| panic!("{error}"));
        Container {
            id: id.trim().to_owned(),
        }
    }

    /// The host address a container port is published on (`docker port`).
    pub fn published(&self, port: &str) -> SocketAddr {
        let out = docker(&["port", &self.id, port]).unwrap_or_else(|error| panic!("{error}"));
        out.lines()
            .find_map(|line| line.trim().parse().ok())
            .unwrap_or_else(|| panic!("no IPv4 address in `docker port` output: {out:?}"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.id]);
    }
}

/// An `initialize` request line for `protocol`, with the given id.
pub fn initialize_request(id: u64, protocol: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": protocol,
            "capabilities": {},
            "clientInfo": { "name": "mcpctl-tests", "version": "0" }
        }
    })
}

pub fn initialized_notification() -> Value {
    json!({ "jsonrpc": "2.0", "method": "notifications/initialized" })
}

pub fn tools_list_request(id: u64) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": "tools/list" })
}

/// A child process (the fixture, or `docker run -i` of it) spoken to as a
/// newline-delimited JSON-RPC peer. Killed when dropped.
pub struct StdioPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    pub stdout_noise: Vec<String>,
    pub stderr_seen: Vec<String>,
}

impl StdioPeer {
    pub fn spawn(mut command: Command) -> StdioPeer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot spawn {command:?}: {error}"));
        let stdout = lines_of(child.stdout.take().expect("piped stdout"));
        let stderr = lines_of(child.stderr.take().expect("piped stderr"));
        StdioPeer {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            stdout_noise: Vec::new(),
            stderr_seen: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        writeln!(stdin, "{message}")
            .and_then(|()| stdin.flush())
            .expect("cannot write to the peer's stdin");
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next JSON-RPC response with this id. Non-JSON stdout lines are
    /// kept in `stdout_noise`; other JSON messages are skipped.
    pub fn response(&mut self, id: u64, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.stdout.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let stderr = self.drain_stderr();
                    panic!(
                        "no response to id {id} within {timeout:?}; stdout noise {:?}; stderr {stderr:?}",
                        self.stdout_noise
                    )
                }
            };
            match serde_json::from_str::<Value>(&line) {
                Ok(message) if message["id"] == id => return message,
                Ok(_) => {}
                Err(_) => self.stdout_noise.push(line),
            }
        }
    }

    /// Every stdout line still to come, once the child has closed stdout.
    pub fn rest_of_stdout(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return lines,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("stdout still open after {timeout:?}; read {lines:?}")
                }
            }
        }
    }

    /// Waits for a stderr line containing `needle`, and returns it.
    pub fn stderr_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        if let Some(line) = self.stderr_seen.iter().find(|line| line.contains(needle)) {
            return line.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line containing {needle:?} within {timeout:?}; saw {:?}",
                    self.stderr_seen
                ),
            }
        }
    }

    fn drain_stderr(&mut self) -> Vec<String> {
        self.stderr_seen.extend(self.stderr.try_iter());
        self.stderr_seen.clone()
    }

    /// Polls for the child's exit until `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("cannot poll the child") {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the peer did not exit within {timeout:?}; stderr {:?}",
                    self.drain_stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for StdioPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The JSON-RPC messages in the body, whether it is plain JSON or an SSE
    /// stream of `data:` events.
    pub fn messages(&self) -> Vec<Value> {
        let is_sse = self
            .header("content-type")
            .is_some_and(|kind| kind.starts_with("text/event-stream"));
        if !is_sse {
            return serde_json::from_str(&self.body).into_iter().collect();
        }
        // Events are separated by blank lines; their `data:` lines join with \n.
        self.body
            .replace("\r\n", "\n")
            .split("\n\n")
            .filter_map(|event| {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(|data| data.strip_prefix(' ').unwrap_or(data))
                    .collect();
                serde_json::from_str(&data.join("\n")).ok()
            })
            .collect()
    }
}

/// One HTTP/1.1 request with `Connection: close`, read to the end.
///
/// A hand-written client keeps TLS stacks and extra crates out of the test
/// build; the fixture only speaks plain HTTP/1.1.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
    timeout: Duration,
) -> Result<HttpReply, String> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|error| format!("connect {addr}: {error}"))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream
        .write_all(request.as_bytes())
        .map_err(|error| format!("send to {addr}: {error}"))?;
    let mut raw = Vec::new();
    let mut chunk = [0_u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "{method} {path} on {addr}: no complete reply within {timeout:?}: {:?}",
                String::from_utf8_lossy(&raw)
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|error| error.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => raw.extend_from_slice(&chunk[..read]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(error) => return Err(format!("read from {addr}: {error}")),
        }
    }
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Result<HttpReply, String> {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(HttpReply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or("truncated chunked body")?;
        let size_line = String::from_utf8_lossy(&rest[..line_end]);
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_line:?}"))?;
        if size == 0 {
            return Ok(body);
        }
        let data = rest
            .get(line_end + 2..line_end + 2 + size)
            .ok_or_else(|| format!("truncated chunk of {size} bytes"))?;
        body.extend_from_slice(data);
        rest = rest
            .get(line_end + 4 + size..)
            .ok_or("chunk not followed by CRLF")?;
    }
}

/// POSTs one JSON-RPC message to a streamable-HTTP MCP endpoint.
pub fn mcp_post(
    addr: SocketAddr,
    path: &str,
    session: Option<&str>,
    message: &Value,
    timeout: Duration,
) -> Result<HttpReply, String> {
    let mut headers = vec![("Accept", "application/json, text/event-stream")];
    if let Some(session) = session {
        headers.push(("Mcp-Session-Id", session));
        headers.push(("MCP-Protocol-Version", PROTOCOL_VERSION));
    }
    http_request(addr, "POST", path, &headers, Some(message), timeout)
}

/// Retries `attempt` until it returns `Ok` or `timeout` passes, for servers
/// that are still starting; the final error goes into the panic.
pub fn eventually<T>(timeout: Duration, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(error) if Instant::now() >= deadline => {
                panic!("still failing after {timeout:?}: {error}")
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The instance of every gateway access line (`gateway request ...
/// instance="ID"`) in a log, in order; refusals (`instance="-"`) are left out.
pub fn gateway_instances_served(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("gateway request"))
        .filter_map(|l| {
            let rest = l.split("instance=").nth(1)?;
            let id: String = rest
                .trim_start_matches('"')
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            Some(id).filter(|id| !id.is_empty())
        })
        .collect()
}

/// Opens a 2025-era session's event stream (a GET on `path`) and reads its
/// head. The stream never ends, so this returns only if the head is passed
/// through without waiting for the body; it stays open until the returned
/// connection is dropped. The error says what arrived instead of a 200
/// event stream.
pub fn open_event_stream(
    addr: SocketAddr,
    path: &str,
    session: &str,
    timeout: Duration,
) -> Result<std::net::TcpStream, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nMcp-Session-Id: {session}\r\nMCP-Protocol-Version: {PROTOCOL_VERSION}\r\n\r\n"
    )
    .map_err(|e| format!("send GET: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| format!("timeout: {e}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => {
                return Err(format!(
                    "the stream's head did not arrive ({other:?}): {:?}",
                    String::from_utf8_lossy(&head)
                ));
            }
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") || !head.contains("content-type: text/event-stream") {
        return Err(format!("not a 200 event stream: {head}"));
    }
    Ok(stream)
}

/// A long-running mcpctl (`gateway`, or `watch --gateway`) serving on
/// `addr`, its stderr in `log`; killed when dropped.
pub struct Listening {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Listening {
    /// A loopback address nothing listens on yet.
    pub fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
    }

    /// Spawns `cmd` (which serves on `addr`) with info logs into `log`, and
    /// waits until `addr` takes connections; fails the test with the log
    /// if the process exits first or 30 s pass.
    pub fn spawn(mut cmd: std::process::Command, addr: SocketAddr, log: PathBuf) -> Listening {
        let child = cmd
            .env("MCPCTL_LOG", "mcpctl=info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn mcpctl");
        let mut served = Listening { child, addr, log };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = served.child.try_wait().expect("try_wait") {
                panic!("mcpctl exited ({status}):\n{}", served.log());
            }
            if std::net::TcpStream::connect(addr).is_ok() {
                return served;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mcpctl did not listen on {addr} within 30 s:\n{}",
                served.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
