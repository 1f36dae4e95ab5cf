//! The watch loop against the fake runtime, fed revisions by hand: applying
//! a revision, refusing a bad one and keeping the fleet, recovering,
//! repairing on runtime events, detect-only mode, suspension, the webhook's
//! sync, and a clean shutdown.

use super::*;
use crate::model::{Snapshot as StateSnapshot, Status, Suspension};
use crate::runtime::fake::FakeRuntime;
use crate::source::{SourceFile, SourceInfo};
use std::sync::atomic::{AtomicUsize, Ordering};

fn spec(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  image: img:1\n  readiness: {{timeout: 5s, period: 10s, minReady: 0s}}\n"
    )
}

fn revision(rev: &str, files: &[(&str, String)]) -> SourceEvent {
    SourceEvent::Revision {
        snapshot: source::Snapshot {
            info: SourceInfo {
                kind: "dir".into(),
                location: "fleet".into(),
                revision: rev.into(),
            },
            files: files
                .iter()
                .map(|(path, text)| SourceFile::new(path, text.clone()))
                .collect(),
        },
        forced_from: None,
    }
}

/// Polls `f` until it holds, against a deadline.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Running {
    events: mpsc::Sender<SourceEvent>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<Stopped, ApplyError>>,
    shared: Arc<Shared>,
    syncs: Arc<AtomicUsize>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("watch stops on shutdown")
            .expect("watch task");
        assert!(result.is_ok(), "{result:?}");
    }
}

fn start(rt: &FakeRuntime, store: &Store, dry_run: bool) -> Running {
    let (events, rx) = mpsc::channel(8);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shared = Arc::new(Shared::default());
    let syncs = Arc::new(AtomicUsize::new(0));
    let task = {
        let (rt, store, shared, syncs) = (rt.clone(), store.clone(), shared.clone(), syncs.clone());
        tokio::spawn(async move {
            let resolver = Resolver {
                secrets_dir: None,
                native_env_secrets: false,
                runners: Runners::default(),
                limits: Limits::default(),
                allow_empty: false,
            };
            let opts = Options {
                resync: Duration::from_millis(300),
                dry_run,
                parallelism: 4,
                shutdown_timeout: Duration::from_secs(30),
            };
            let sync_now = move || {
                syncs.fetch_add(1, Ordering::SeqCst);
            };
            watch(
                &rt,
                &store,
                &resolver,
                rx,
                &sync_now,
                &shared,
                &opts,
                async {
                    let _ = stopped.await;
                },
                std::future::pending(),
            )
            .await
        })
    };
    Running {
        events,
        stop: Some(stop),
        task,
        shared,
        syncs,
    }
}

fn running(store: &Store, server: &str) -> usize {
    store
        .load()
        .expect("load")
        .instances
        .values()
        .filter(|i| i.server == server && i.status == Status::Running)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_are_applied_and_a_bad_one_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::new(dir.path().join("state.redb"));
    let rt = FakeRuntime::new();
    let w = start(&rt, &store, false);

    w.events
        .send(revision("r1", &[("fleet/a.yaml", spec("alpha", 1))]))
        .await
        .expect("send");
    until("alpha to run", || running(&store, "alpha") == 1).await;
    until("healthy on r1", || {
        let h = w.shared.health();
        h.ok() && h.revision.as_deref() == Some("r1")
    })
    .await;

    // An invalid file: refused as a whole, the fleet untouched, and health
    // names the file and line.
    let units = rt.units();
    let broken = format!("{}  replica: 2\n", spec("alpha", 3));
    w.events
        .send(revision("r2", &[("fleet/a.yaml", broken)]))
        .await
        .expect("send");
    until("degraded on r2", || !w.shared.health().ok()).await;
    let health = w.shared.health();
    let reason = health.source.clone().unwrap_or_default();
    assert!(
        reason.contains("revision r2 refused") && reason.contains("fleet/a.yaml:8:3"),
        "{reason}"
    );
    assert_eq!(
        health.revision.as_deref(),
        Some("r1"),
        "the last good one stays"
    );
    // The loop keeps passing (resync is 300 ms); give it a few.
    let passes = w.shared.metrics.encode();
    until("more passes", || w.shared.metrics.encode() != passes).await;
    assert_eq!(rt.units(), units, "nothing was touched");

    // No servers at all, while one runs: refused too (a wrong path must not
    // delete the fleet).
    w.events.send(revision("r3", &[])).await.expect("send");
    until("r3 refused", || {
        w.shared
            .health()
            .source
            .is_some_and(|s| s.contains("revision r3 refused") && s.contains("no servers"))
    })
    .await;
    assert_eq!(rt.units().len(), 1);

    // A fixing revision recovers, and the runtime's events drive repairs.
    w.events
        .send(revision("r4", &[("fleet/a.yaml", spec("alpha", 2))]))
        .await
        .expect("send");
    until("alpha to scale", || running(&store, "alpha") == 2).await;
    assert!(w.shared.health().ok(), "{:?}", w.shared.health());
    let victim = rt.units().keys().next().cloned().expect("a unit");
    rt.delete(&victim);
    until("the lost unit to be replaced", || {
        let units = rt.units();
        units.len() == 2 && !units.contains_key(&victim)
    })
    .await;
    until("both running", || running(&store, "alpha") == 2).await;

    let metrics = w.shared.metrics.encode();
    assert!(
        metrics.contains("mcpctl_applied_revision{revision=\"r4\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("mcpctl_healthy 1"), "{metrics}");
    w.stop().await;

    let history = store.history().expect("history");
    let outcomes: Vec<&str> = history.iter().map(|e| e.outcome.as_str()).collect();
    assert!(
        outcomes.iter().any(|o| o.starts_with("watch: applying"))
            && outcomes.iter().any(|o| o.starts_with("watch: refused"))
            && outcomes.contains(&"watch: converged"),
        "{outcomes:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_drift_and_touches_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::new(dir.path().join("state.redb"));
    let rt = FakeRuntime::new();
    // A fleet applied for real first.
    let w = start(&rt, &store, false);
    w.events
        .send(revision("r1", &[("fleet/a.yaml", spec("alpha", 1))]))
        .await
        .expect("send");
    until("alpha to run", || running(&store, "alpha") == 1).await;
    w.stop().await;

    let before: StateSnapshot = store.load().expect("load");
    let units = rt.units();
    let w = start(&rt, &store, true);
    w.events
        .send(revision(
            "r2",
            &[
                ("fleet/a.yaml", spec("alpha", 3)),
                ("fleet/b.yaml", spec("beta", 1)),
            ],
        ))
        .await
        .expect("send");
    until("drift to be reported", || w.shared.health().drift == 3).await;
    // A unit lost meanwhile is reported, not repaired.
    let victim = units.keys().next().cloned().expect("unit");
    rt.delete(&victim);
    // Now: fail and clean up the lost one, start three alphas and a beta.
    until("the loss to be reported too", || {
        w.shared.health().drift == 6
    })
    .await;
    let metrics = w.shared.metrics.encode();
    assert!(metrics.contains("mcpctl_drift_actions 6"), "{metrics}");
    assert!(w.shared.health().dry_run);
    w.stop().await;
    assert!(rt.units().is_empty(), "nothing was started or repaired");
    assert_eq!(store.load().expect("load"), before, "nothing was written");
    assert_eq!(rt.calls().0, 1, "the one create of the first, real run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_server_stays_as_it_is_until_resumed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::new(dir.path().join("state.redb"));
    let rt = FakeRuntime::new();
    let w = start(&rt, &store, false);
    w.events
        .send(revision(
            "r1",
            &[
                ("fleet/a.yaml", spec("alpha", 1)),
                ("fleet/b.yaml", spec("beta", 1)),
            ],
        ))
        .await
        .expect("send");
    until("both to run", || {
        running(&store, "alpha") == 1 && running(&store, "beta") == 1
    })
    .await;
    store
        .update(|tx| {
            tx.suspend(
                "alpha",
                &Suspension {
                    at: Timestamp::now(),
                    by: "test".into(),
                },
            )
        })
        .expect("suspend");
    let alpha = rt
        .units()
        .into_values()
        .find(|u| u.server == "alpha")
        .expect("alpha unit");
    rt.delete(&alpha.instance);
    let beta = rt
        .units()
        .into_values()
        .find(|u| u.server == "beta")
        .expect("beta unit");
    rt.delete(&beta.instance);
    // beta, not suspended, is repaired; by then alpha has had the same chances.
    until("beta to be repaired", || {
        rt.units().values().any(|u| u.server == "beta")
    })
    .await;
    let passes = w.shared.metrics.encode();
    until("a resync or two", || w.shared.metrics.encode() != passes).await;
    assert!(
        !rt.units().values().any(|u| u.server == "alpha"),
        "a suspended server's unit stays removed"
    );
    assert_eq!(
        store.load().expect("load").instances[&alpha.instance].status,
        Status::Running,
        "and its record is left as it was"
    );
    store.update(|tx| tx.resume("alpha")).expect("resume");
    until("alpha back after resume", || {
        rt.units().values().any(|u| u.server == "alpha")
    })
    .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_asks_the_source_to_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::new(dir.path().join("state.redb"));
    let rt = FakeRuntime::new();
    let w = start(&rt, &store, false);
    w.shared.sync.notify_one();
    until("a sync", || w.syncs.load(Ordering::SeqCst) == 1).await;
    w.stop().await;
}
