//! The Docker runtime and `mcpctl watch` under engine faults, against the
//! real engine seen through a fault-injecting proxy of its socket
//! (`support/proxy.rs`): the proxy itself relays, cuts, refuses and stalls;
//! the runtime's events stream comes back after a cut with the gap
//! replayed; `watch` repairs a removal within two seconds of a cut with no
//! resync to help, and waits out an engine that refuses connections at its
//! start and mid-run. Out-of-band changes go to the engine directly.

#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/watching.rs"]
mod watching;

use bollard::Docker;
use bollard::query_parameters::EventsOptionsBuilder;
use fleet::{Fleet, docker_lines, eventually, images, stdio};
use futures_util::StreamExt;
use mcpctl::model::{EventKind, Watched};
use mcpctl::runtime::Runtime;
use mcpctl::runtime::docker::{DockerConfig, DockerRuntime};
use proxy::EngineProxy;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use watching::Watching;

/// A client of the engine through `proxy`, made afresh so that no pooled
/// connection from before a fault is reused.
fn client(proxy: &EngineProxy) -> Docker {
    let path = proxy.socket().to_str().expect("utf-8 socket path");
    Docker::connect_with_unix(path, 5, bollard::API_DEFAULT_VERSION).expect("client")
}

/// Whether a fresh client's ping through the proxy succeeds within a second.
async fn pings(proxy: &EngineProxy) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(1), client(proxy).ping()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(chain(&e)),
        Err(_) => Err("no answer within 1 s".into()),
    }
}

/// An error and its sources, one line: the cause is where the OS speaks.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Polls `f` (async) every 50 ms until it gives `Some`, or panics after `timeout`.
async fn until<T, F: Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Polling an external system against a deadline.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A network made and removed on the engine directly: its events need no
/// image.
struct Network(String);

impl Network {
    fn create(name: &str) -> Network {
        fixture::docker(&["network", "create", "--label", fixture::TEST_LABEL, name])
            .unwrap_or_else(|e| panic!("{e}"));
        Network(name.to_owned())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = fixture::docker(&["network", "rm", &self.0]);
    }
}

/// The next item of `events` within `timeout`.
async fn next<S, T>(events: &mut S, timeout: Duration, what: &str) -> T
where
    S: futures_util::Stream<Item = T> + Unpin,
{
    match tokio::time::timeout(timeout, events.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("the stream ended while waiting for {what}"),
        Err(_) => panic!("nothing within {timeout:?} while waiting for {what}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_relays_and_cuts_refuses_and_stalls_on_demand() {
    fixture::require_docker();
    let proxy = EngineProxy::start();
    pings(&proxy).await.expect("a ping through the proxy");
    assert!(proxy.accepted() >= 1, "the ping went through the proxy");

    // An open events stream carries the engine's events, until a cut.
    let names = ["a", "b"].map(|n| format!("mcpctl-proxy-{}-{n}", std::process::id()));
    let filters = HashMap::from([
        ("type".to_owned(), vec!["network".to_owned()]),
        ("network".to_owned(), names.to_vec()),
    ]);
    let watcher = client(&proxy);
    // The request goes out on first poll: `since` covers what happens before.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        .to_string();
    let opts = EventsOptionsBuilder::default()
        .since(&since)
        .filters(&filters)
        .build();
    let mut events = watcher.events(Some(opts));
    let first = Network::create(&names[0]);
    let ev = next(
        &mut events,
        Duration::from_secs(10),
        "the first network's event",
    )
    .await;
    assert_eq!(ev.expect("an event").action.as_deref(), Some("create"));

    // A stall holds open connections and new ones alike; nothing is lost.
    proxy.stall(true);
    let second = Network::create(&names[1]);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), events.next())
            .await
            .is_err(),
        "an event moved through a stalled proxy"
    );
    let hung = pings(&proxy).await;
    assert!(hung.is_err(), "a ping answered through a stalled proxy");
    proxy.stall(false);
    let ev = next(
        &mut events,
        Duration::from_secs(10),
        "the event held by the stall",
    )
    .await;
    let held = ev.expect("an event");
    assert_eq!(
        held.actor
            .and_then(|a| a.attributes)
            .and_then(|a| a.get("name").cloned()),
        Some(names[1].clone()),
        "the held event arrives whole"
    );
    pings(&proxy).await.expect("a ping once the stall ends");

    // A cut ends the open stream at once, as a daemon restart does.
    let open = proxy.open();
    assert!(open >= 1, "the events stream is open through the proxy");
    let cut_at = Instant::now();
    proxy.cut();
    match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
        Ok(Some(Err(_)) | None) => {}
        Ok(Some(Ok(ev))) => panic!("an event after the cut: {ev:?}"),
        Err(_) => panic!("the stream outlived the cut by 5 s"),
    }
    eprintln!("the cut ended the stream in {:?}", cut_at.elapsed());

    // Refused: new connections fail at once, as with a stopped daemon.
    proxy.refuse(true);
    let refused = pings(&proxy)
        .await
        .expect_err("a ping through a refusing proxy");
    assert!(
        refused.to_lowercase().contains("refused"),
        "connection refused, not {refused:?}"
    );
    proxy.refuse(false);
    pings(&proxy).await.expect("a ping once refusals end");

    // For a while: refused now, and answered again by itself.
    let start = Instant::now();
    proxy.refuse_for(Duration::from_millis(1500));
    pings(&proxy)
        .await
        .expect_err("a ping in the refusing window");
    until(
        "refusals to lift by themselves",
        Duration::from_secs(10),
        || async { pings(&proxy).await.ok() },
    )
    .await;
    let lifted = start.elapsed();
    assert!(
        lifted >= Duration::from_millis(1500),
        "refusals lifted after {lifted:?}, before their time"
    );
    drop((first, second));
}

/// A container of `scope`, made (not started) on the engine directly, so
/// that its `create` event is what the runtime's stream reports.
fn create_unit(scope: &str, instance: &str) -> String {
    let (image, _) = images();
    let out = fixture::docker(&[
        "create",
        "--label",
        "io.mcpctl.managed=true",
        "--label",
        &format!("io.mcpctl.scope={scope}"),
        "--label",
        "io.mcpctl.server=s",
        "--label",
        &format!("io.mcpctl.instance={instance}"),
        "--label",
        "io.mcpctl.spec-hash=h",
        "--label",
        fixture::TEST_LABEL,
        image,
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    out.trim().to_owned()
}

fn created(item: Result<Watched, mcpctl::runtime::RuntimeError>, instance: &str) {
    match item {
        Ok(Watched::Event(ev)) => {
            assert_eq!(ev.instance.0, instance, "{ev:?}");
            assert_eq!(ev.kind, EventKind::Created, "{ev:?}");
        }
        other => panic!("wanted {instance}'s create event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_stream_resumes_after_a_cut_and_replays_the_gap() {
    let f = Fleet::new("f-events");
    let proxy = EngineProxy::start();
    let config = DockerConfig {
        network: "mcpctl".into(),
        scope: f.scope.clone(),
        runners: mcpctl::model::Runners::default(),
    };
    let rt = DockerRuntime::connect_with(client(&proxy), config)
        .await
        .expect("connect through the proxy");
    let mut events = Box::pin(rt.events());

    create_unit(&f.scope, "before");
    created(
        next(&mut events, Duration::from_secs(10), "the first create").await,
        "before",
    );

    // The engine goes away: the stream says so once, and waits.
    proxy.refuse(true);
    proxy.cut();
    let item = next(&mut events, Duration::from_secs(5), "the break").await;
    assert!(item.is_err(), "the break is an Err item, not {item:?}");
    // Made while the stream is down: only a resubscription from the last
    // event seen can still report it.
    create_unit(&f.scope, "gap");
    proxy.refuse(false);

    let back = Instant::now();
    let item = next(&mut events, Duration::from_secs(15), "the resumption").await;
    assert!(
        matches!(item, Ok(Watched::Resumed)),
        "Resumed once back, not {item:?}"
    );
    eprintln!("resumed {:?} after the engine came back", back.elapsed());
    // The resubscription starts at the last event seen, which may come
    // again (events only hasten a look); the gap's event must follow.
    let mut item = next(&mut events, Duration::from_secs(10), "the gap's create").await;
    if matches!(&item, Ok(Watched::Event(ev)) if ev.instance.0 == "before") {
        item = next(&mut events, Duration::from_secs(10), "the gap's create").await;
    }
    created(item, "gap");
    create_unit(&f.scope, "after");
    created(
        next(
            &mut events,
            Duration::from_secs(10),
            "a create after the break",
        )
        .await,
        "after",
    );
}

fn alpha_containers(f: &Fleet, running: bool) -> Vec<String> {
    let mut args = vec![
        "ps".to_owned(),
        "-q".to_owned(),
        "--filter".to_owned(),
        format!("label=io.mcpctl.scope={}", f.scope),
        "--filter".to_owned(),
        "label=io.mcpctl.server=alpha".to_owned(),
    ];
    if running {
        args.extend(["--filter".to_owned(), "status=running".to_owned()]);
    } else {
        args.push("-a".to_owned());
    }
    docker_lines(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn running_instances(f: &Fleet, server: &str) -> usize {
    f.instances()
        .iter()
        .filter(|i| i["server"] == server && i["status"] == "RUNNING")
        .count()
}

/// Removes alpha's one container on the engine directly, and returns how
/// long until another one runs, polling `alive` meanwhile.
fn remove_and_time_repair(f: &Fleet, w: &mut Watching, bound: Duration) -> Duration {
    let old = alpha_containers(f, true);
    assert_eq!(old.len(), 1, "alpha runs one container: {old:?}");
    let removed = Instant::now();
    fixture::docker(&["rm", "-f", &old[0]]).expect("rm -f");
    eventually("a new alpha container", bound, || {
        w.assert_alive();
        let now = alpha_containers(f, true);
        (now.len() == 1 && now != old).then(|| removed.elapsed())
    })
}

#[test]
fn after_a_cut_watch_repairs_a_removal_within_two_seconds_without_a_resync() {
    let (v1, _) = images();
    let f = Fleet::new("f-cut");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    let proxy = EngineProxy::start();
    let host = proxy.docker_host();
    // No resync for an hour: only the events stream can bring it back soon.
    let mut w = Watching::start(
        &f,
        &["fleet", "--resync", "1h", "--interval", "1h"],
        &[("DOCKER_HOST", &host)],
    );
    eventually("alpha RUNNING", Duration::from_secs(60), || {
        (running_instances(&f, "alpha") == 1).then_some(())
    });
    let passes = w.metric("mcpctl_passes_total");

    proxy.cut();
    let repaired = remove_and_time_repair(&f, &mut w, Duration::from_secs(30));
    eprintln!("repaired {repaired:?} after docker rm -f, right after an engine cut");
    assert!(
        repaired < Duration::from_secs(2),
        "repaired only after {repaired:?}:\n{}",
        w.log()
    );
    assert!(
        w.log().contains("runtime events resumed"),
        "the events stream said it was back:\n{}",
        w.log()
    );
    let made = w.metric("mcpctl_passes_total") - passes;
    eprintln!("{made} passes from the cut to the repair");
    assert!(w.stop().success());
}

#[test]
fn watch_waits_out_an_engine_refusing_connections_at_start_and_mid_run() {
    let (v1, _) = images();
    let f = Fleet::new("f-refuse");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    let proxy = EngineProxy::start();
    let host = proxy.docker_host();

    // Down when watch starts, for a few seconds.
    proxy.refuse_for(Duration::from_secs(3));
    let started = Instant::now();
    let mut w = Watching::spawn(
        &f,
        &["fleet", "--resync", "1h", "--interval", "1h"],
        &[("DOCKER_HOST", &host)],
    );
    eventually("alpha RUNNING", Duration::from_secs(60), || {
        w.assert_alive();
        (running_instances(&f, "alpha") == 1).then_some(())
    });
    eprintln!(
        "converged {:?} after starting against an engine down for 3 s",
        started.elapsed()
    );

    // Down mid-run: every connection cut, new ones refused for a few
    // seconds, and alpha's container removed meanwhile.
    proxy.refuse_for(Duration::from_secs(3));
    proxy.cut();
    let repaired = remove_and_time_repair(&f, &mut w, Duration::from_secs(30));
    eprintln!("repaired {repaired:?} after docker rm -f, with the engine refusing for 3 s");
    assert!(
        repaired >= Duration::from_secs(2),
        "repaired after {repaired:?}, while the engine still refused: not through the proxy?"
    );
    w.assert_alive();
    assert!(w.stop().success());
}

/// A hung engine (the proxy holds every byte): each pass fails at
/// `--runtime-timeout` with a message that says so, `/healthz` is degraded,
/// and SIGTERM during a pass stuck on the engine ends `watch` within
/// `--shutdown-timeout` (1 s here), not at the pass's own deadline (10 s).
#[test]
fn a_hung_engine_degrades_health_and_sigterm_still_ends_watch_in_time() {
    let (v1, _) = images();
    let f = Fleet::new("f-hung");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    let proxy = EngineProxy::start();
    let host = proxy.docker_host();
    let w = Watching::start(
        &f,
        &[
            "fleet",
            "--resync",
            "1h",
            "--interval",
            "1h",
            "--runtime-timeout",
            "10s",
            "--shutdown-timeout",
            "1s",
        ],
        &[("DOCKER_HOST", &host)],
    );
    eventually("alpha RUNNING", Duration::from_secs(60), || {
        (running_instances(&f, "alpha") == 1).then_some(())
    });
    proxy.stall(true);
    // A change makes a pass, which the hung engine holds until the deadline.
    f.write("a.yaml", &stdio("alpha", 2, v1, ""));
    let reply = eventually(
        "/healthz to say the engine hangs",
        Duration::from_secs(60),
        || {
            let r = w.get("/healthz").ok()?;
            (r.status == 503 && r.body.contains("did not answer within 10s")).then_some(r)
        },
    );
    assert!(reply.body.contains("runtime: "), "{}", reply.body);
    // Another change, and the pass it brings is stuck on the engine when
    // the signal comes (it follows "revision accepted" at once).
    let accepted = w.log().matches("revision accepted").count();
    f.write("a.yaml", &stdio("alpha", 3, v1, ""));
    eventually("the next revision's pass", Duration::from_secs(30), || {
        (w.log().matches("revision accepted").count() > accepted).then_some(())
    });
    let began = Instant::now();
    let status = w.stop();
    let took = began.elapsed();
    eprintln!("SIGTERM with a pass stuck on a hung engine: exited in {took:?} ({status})");
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after SIGTERM with a 1 s shutdown timeout"
    );
    proxy.stall(false);
}
