//! `mcpctl watch --gateway` end to end, against the real Docker engine: the
//! gateway served inside `watch` routes a server's requests, follows the
//! fleet as a spec change scales it up and down (from the reconciler's own
//! passes, with no restart), and stops with `watch` on SIGTERM. Its flags
//! are checked before anything runs: an address that cannot be bound and a
//! non-loopback address without a token end `watch` at start. No Docker, no
//! pass: the fixture build fails the test.

#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/watching.rs"]
mod watching;

use fixture::{PROTOCOL_VERSION, initialize_request, initialized_notification, mcp_post};
use fleet::{Fleet, eventually, http, images};
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;
use watching::{Watching, free_port};

const WAIT: Duration = Duration::from_secs(10);
/// Long enough for instances to start, pass their handshake and be promoted.
const CONVERGE: Duration = Duration::from_secs(90);
const PATH: &str = "/servers/web/mcp";

/// The instance of every gateway access line in `watch`'s log, in order.
fn instances_served(w: &Watching) -> Vec<String> {
    fixture::gateway_instances_served(&w.log())
}

/// Opens the session's event stream and reads its head; the stream stays
/// open, counting as a request in flight on its instance, until the
/// connection is dropped. `None` if the gateway did not answer 200.
fn open_stream(gateway: SocketAddr, session: &str) -> Option<TcpStream> {
    fixture::open_event_stream(gateway, PATH, session, WAIT).ok()
}

/// Opens `n` sessions with `web` through the gateway, each holding its event
/// stream open while the next is opened, so that by least outstanding
/// requests every session lands on an instance of its own while there are
/// enough. The instances that served them, from the access log; `None` if
/// any request failed (an instance the gateway still routes to but that is
/// gone answers 502).
fn sessions_land_on(w: &Watching, gateway: SocketAddr, n: usize) -> Option<BTreeSet<String>> {
    let mark = instances_served(w).len();
    let mut streams = Vec::new();
    for id in 0..n {
        let init = initialize_request(id as u64 + 1, PROTOCOL_VERSION);
        let reply = mcp_post(gateway, PATH, None, &init, WAIT).ok()?;
        if reply.status != 200 {
            return None;
        }
        let session = reply.header("mcp-session-id")?.to_owned();
        let done = mcp_post(
            gateway,
            PATH,
            Some(&session),
            &initialized_notification(),
            WAIT,
        );
        if done.ok()?.status != 202 {
            return None;
        }
        streams.push(open_stream(gateway, &session)?);
    }
    // Every request of a session went to its instance, streams included,
    // whose access lines are written once their heads are sent.
    Some(instances_served(w)[mark..].iter().cloned().collect())
}

/// `web`'s instances in the state, once all `n` of them are RUNNING.
fn running(f: &Fleet, n: usize) -> Option<BTreeSet<String>> {
    let web: Vec<_> = f
        .instances()
        .into_iter()
        .filter(|i| i["server"] == "web")
        .collect();
    (web.len() == n && web.iter().all(|i| i["status"] == "RUNNING")).then(|| {
        web.iter()
            .map(|i| i["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    })
}

#[test]
fn the_gateway_in_watch_follows_the_fleet_as_it_scales_without_a_restart() {
    let f = Fleet::new("wgw-scale");
    f.write("web.yaml", &http("web", 1, images().0));
    let gateway: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut w = Watching::start(&f, &["fleet", "--gateway", &gateway.to_string()], &[]);
    let pid = w.pid();

    let one = eventually("web to run", CONVERGE, || running(&f, 1));
    let served = eventually("the gateway to route to web", WAIT, || {
        sessions_land_on(&w, gateway, 1)
    });
    assert_eq!(served, one, "{}", w.log());

    // Scaled up: each of three sessions lands on an instance of its own,
    // the two new ones included.
    f.write("web.yaml", &http("web", 3, images().0));
    let three = eventually("web to run 3", CONVERGE, || running(&f, 3));
    assert!(three.is_superset(&one), "{three:?} {one:?}");
    let served = eventually("the gateway to route to all three", WAIT, || {
        sessions_land_on(&w, gateway, 3).filter(|s| *s == three)
    });
    assert_eq!(served, three);

    // Scaled down: only the one left is routed to, even while a session
    // holds it busy.
    f.write("web.yaml", &http("web", 1, images().0));
    let left = eventually("web to run 1", CONVERGE, || running(&f, 1));
    let served = eventually("the gateway to route to the one left", WAIT, || {
        sessions_land_on(&w, gateway, 2)
    });
    assert_eq!(served, left, "{}", w.log());

    // All along, one process; SIGTERM stops it and its gateway together.
    w.assert_alive();
    assert_eq!(w.pid(), pid);
    let status = w.stop();
    assert!(status.success(), "{status}");
    assert!(
        TcpStream::connect(gateway).is_err(),
        "the gateway still listens"
    );
}

/// `mcpctl watch ARGS` in an empty workspace, expected to end at start.
fn watch_at_start(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("fleet")).expect("mkdir");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcpctl"))
        .args(["watch", "fleet", "--listen", &listen])
        .args(args)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env("MCPCTL_STATE", dir.path().join("state.redb"))
        .env("MCPCTL_SCOPE", format!("t{}-wgw-start", std::process::id()))
        .env_remove("MCPCTL_GATEWAY_TOKEN_FILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn watch");
    // Were the flag not refused, watch would run until killed.
    let exited = fleet::eventually("watch to end at start", WAIT, || {
        child.try_wait().expect("try_wait")
    });
    let output = child.wait_with_output().expect("output");
    assert_eq!(output.status, exited);
    output
}

#[test]
fn a_gateway_address_that_cannot_be_served_ends_watch_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = watch_at_start(&["--gateway", &addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve the gateway on {addr}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = watch_at_start(&["--gateway", "0.0.0.0:0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("without a token"), "{stderr}");
}
