//! The Docker runtime under engine faults, against the real engine seen
//! through a fault-injecting proxy of its socket (`support/proxy.rs`): the
//! proxy itself relays, cuts, refuses and stalls. Out-of-band changes go to
//! the engine directly.

#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/proxy.rs"]
mod proxy;

use bollard::Docker;
use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt;
use proxy::EngineProxy;
use std::collections::HashMap;
use std::time::{Duration, Instant};

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
