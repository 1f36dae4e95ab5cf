//! The watch loop against the fake runtime, fed revisions by hand: applying
//! a revision, refusing a bad one and keeping the fleet, recovering,
//! repairing on runtime events, detect-only mode, suspension, the webhook's
//! sync, and a clean shutdown.

use super::*;
use crate::model::{HistoryEntry, Snapshot as StateSnapshot, Status, Suspension};
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

/// A fresh state file, kept while the directory guard lives.
fn state_file() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::new(dir.path().join("state.redb"));
    (dir, store)
}

/// Polls `f` until it holds, against a deadline.
async fn until(what: &str, f: impl FnMut() -> bool) {
    until_within(what, Duration::from_secs(10), f).await
}

/// [`until`], with a deadline of `within` (on a paused clock, of virtual time).
async fn until_within(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
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
    /// A second signal: stop at once.
    abort: Option<tokio::sync::oneshot::Sender<()>>,
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
    start_with(
        Arc::new(rt.clone()),
        store,
        dry_run,
        Duration::from_secs(30),
        None,
        None,
    )
}

fn start_with<R: Runtime + Send + Sync + 'static>(
    rt: Arc<R>,
    store: &Store,
    dry_run: bool,
    shutdown_timeout: Duration,
    lease: Option<tokio::sync::watch::Receiver<Standing>>,
    gateway: Option<GatewayFeed>,
) -> Running {
    let (events, rx) = mpsc::channel(8);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (abort, aborted) = tokio::sync::oneshot::channel::<()>();
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
                digest_key: None,
            };
            let opts = Options {
                resync: Duration::from_millis(300),
                dry_run,
                parallelism: 4,
                shutdown_timeout,
                lease,
                gateway,
            };
            let sync_now = move || {
                syncs.fetch_add(1, Ordering::SeqCst);
            };
            watch(
                &*rt,
                &store,
                &resolver,
                rx,
                &sync_now,
                &shared,
                &opts,
                async {
                    let _ = stopped.await;
                },
                async {
                    let _ = aborted.await;
                },
            )
            .await
        })
    };
    Running {
        events,
        stop: Some(stop),
        abort: Some(abort),
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
    let (_dir, store) = state_file();
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
    more_passes(&w.shared, 2).await;
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

/// `watch`'s log, `/healthz` and the history say what `validate` says: for
/// each problem its place, its message and its help, one line each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_revision_keeps_every_hint_that_validate_gives() {
    let (_dir, store) = state_file();
    let rt = FakeRuntime::new();
    let w = start(&rt, &store, false);
    w.events
        .send(revision("r1", &[("fleet/a.yaml", spec("alpha", 1))]))
        .await
        .expect("send");
    until("alpha to run", || running(&store, "alpha") == 1).await;
    until("healthy on r1", || w.shared.health().ok()).await;

    // A typo, and a spec whose fields lost their indentation.
    let typo = format!("{}  replica: 2\n", spec("alpha", 1));
    let flat = "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: beta}\nspec:\nimage: img:1\nreplicas: 2\n";
    w.events
        .send(revision(
            "r2",
            &[("fleet/a.yaml", typo), ("fleet/b.yaml", flat.to_owned())],
        ))
        .await
        .expect("send");
    until("r2 refused", || {
        w.shared
            .health()
            .source
            .is_some_and(|s| s.contains("revision r2 refused"))
    })
    .await;
    let health = w.shared.health();
    let reasons = health.reasons();
    for problem in ["fleet/a.yaml:8:3", "fleet/b.yaml:5:1"] {
        let line = reasons
            .iter()
            .find(|r| r.contains(problem))
            .unwrap_or_else(|| panic!("no reason names {problem}: {reasons:#?}"));
        assert!(line.contains("; help: "), "{line}");
    }
    assert!(
        reasons.iter().all(|r| !r.contains('\n')),
        "one line each: {reasons:#?}"
    );
    let mut body = super::http::healthz_body(&health);
    body["drift"] = serde_json::json!("[drift]");
    insta::assert_json_snapshot!("healthz_of_a_refused_revision", body);

    // A missing secret: its help says where to put it.
    let secret = "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: gamma}\nspec:\n  image: img:1\n  env:\n    TOKEN: {secretRef: {name: nope-nowhere, key: token}}\n";
    w.events
        .send(revision(
            "r3",
            &[
                ("fleet/a.yaml", spec("alpha", 1)),
                ("fleet/c.yaml", secret.to_owned()),
            ],
        ))
        .await
        .expect("send");
    until("r3 refused", || {
        w.shared
            .health()
            .source
            .is_some_and(|s| s.contains("revision r3 refused"))
    })
    .await;
    let reasons = w.shared.health().reasons();
    insta::assert_debug_snapshot!("reasons_of_a_missing_secret", reasons);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("; help: create the file or set the environment variable")),
        "{reasons:#?}"
    );
    w.stop().await;

    let refused: Vec<String> = store
        .history()
        .expect("history")
        .into_iter()
        .map(|e| e.outcome)
        .filter(|o| o.starts_with("watch: refused"))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(
        refused[0].contains("; help: did you mean `replicas`?"),
        "{refused:#?}"
    );
}

fn outcomes(store: &Store) -> Vec<String> {
    store
        .history()
        .expect("history")
        .into_iter()
        .map(|e| e.outcome)
        .collect()
}

/// A history entry as a snapshot shows it: instance ids are made fresh
/// every run.
fn shown(e: &HistoryEntry) -> String {
    let changes: Vec<String> = e
        .changes
        .iter()
        .map(|c| {
            let instance = c.instance.as_ref().map_or("-", |_| "[id]");
            format!("  {} {} {instance}: {}", c.action, c.server, c.reason)
        })
        .collect();
    format!(
        "{} ({} actions)\n{}",
        e.outcome,
        e.actions,
        changes.join("\n")
    )
}

/// A repair by `watch` is recorded with its actions, then the return to
/// convergence: it used to show as "converged" alone, with 0 actions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_records_what_a_repair_did() {
    let (_dir, store) = state_file();
    let rt = FakeRuntime::new();
    let w = start(&rt, &store, false);
    w.events
        .send(revision("r1", &[("fleet/a.yaml", spec("alpha", 1))]))
        .await
        .expect("send");
    until("converged on r1", || {
        outcomes(&store).contains(&"watch: converged".to_owned())
    })
    .await;
    let victim = rt.units().keys().next().cloned().expect("a unit");
    rt.delete(&victim);
    until("converged again after the repair", || {
        outcomes(&store)
            .iter()
            .filter(|o| *o == "watch: converged")
            .count()
            == 2
    })
    .await;
    w.stop().await;

    let history = store.history().expect("history");
    let repair = history
        .iter()
        .position(|e| e.outcome.starts_with("watch: reconciling"))
        .unwrap_or_else(|| panic!("no repair recorded: {history:#?}"));
    let entry = &history[repair];
    assert_eq!(entry.actions, entry.changes.len(), "{entry:#?}");
    assert!(
        entry
            .changes
            .iter()
            .any(|c| c.server == "alpha" && c.instance.as_deref() == Some(victim.0.as_str())),
        "the lost instance is named: {entry:#?}"
    );
    assert!(
        entry.changes.iter().any(|c| c.action == "start"),
        "{entry:#?}"
    );
    assert_eq!(
        history.last().map(|e| e.outcome.as_str()),
        Some("watch: converged")
    );
    assert!(
        !history
            .iter()
            .any(|e| !e.changes.is_empty() && e.changes.iter().all(|c| c.action == "promote")),
        "promotions alone are left to \"converged\": {history:#?}"
    );
    insta::assert_snapshot!("history_of_a_repair", shown(entry));
}

/// A server that can never start is retried after every back-off, for as
/// long as `watch` runs; the history records its kinds of work once, not
/// once per retry, so the capped history keeps what else happened.
#[tokio::test(start_paused = true)]
async fn a_crash_loop_is_recorded_once_not_once_per_back_off() {
    let (_dir, store) = state_file();
    let rt = FakeRuntime::new();
    rt.behave(
        "beta",
        crate::runtime::fake::Behaviour {
            fail_create: Some("pull access denied for img".into()),
            ..Default::default()
        },
    );
    let w = start(&rt, &store, false);
    w.events
        .send(revision("r1", &[("fleet/b.yaml", spec("beta", 1))]))
        .await
        .expect("send");
    // Three failed creates: the first, and a retry after each of two
    // back-offs (10 s, then 20 s).
    until_within("three creates", Duration::from_secs(600), || {
        rt.calls().0 >= 3
    })
    .await;
    w.stop().await;
    let reconciling: Vec<String> = outcomes(&store)
        .into_iter()
        .filter(|o| o.starts_with("watch: reconciling"))
        .collect();
    assert_eq!(
        reconciling,
        ["watch: reconciling: 1 to start, 1 to remove"],
        "one entry for the retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_drift_and_touches_nothing() {
    let (_dir, store) = state_file();
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
    let (_dir, store) = state_file();
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
    more_passes(&w.shared, 2).await;
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
    let (_dir, store) = state_file();
    let rt = FakeRuntime::new();
    let w = start(&rt, &store, false);
    w.shared.sync.notify_one();
    until("a sync", || w.syncs.load(Ordering::SeqCst) == 1).await;
    w.stop().await;
}

/// Passes so far, from the metrics, as a scraper would read them.
fn passes(shared: &Shared) -> u64 {
    shared
        .metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix("mcpctl_passes_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the loop has run `n` more passes than it had.
async fn more_passes(shared: &Shared, n: u64) {
    let from = passes(shared);
    until(&format!("{n} more passes after {from}"), || {
        passes(shared) >= from + n
    })
    .await;
}

async fn more_turns(shared: &Shared, n: u64) {
    let from = shared.turns();
    until(&format!("{n} more turns after {from}"), || {
        shared.turns() >= from + n
    })
    .await;
}

impl Running {
    /// The watch is still running: it has not ended on a fault.
    fn alive(&self) -> bool {
        !self.task.is_finished()
    }
}

/// An engine that is down when `watch` starts, with an intent left by an
/// interrupted apply (whose clean-up needs the engine), used to end the
/// process. Now it is waited out with back-off, `/healthz` saying why, and
/// the fleet converges once the engine is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_down_at_start_is_waited_out_not_fatal() {
    let (_dir, store) = state_file();
    store
        .update(|tx| {
            tx.put_intent(&crate::model::Intent {
                instance: crate::model::InstanceId("01jaaaaaaaaaaaaaaaaaaaaaaa".into()),
                server: "alpha".into(),
                spec_hash: crate::model::SpecHash("old".into()),
                op: crate::model::IntentOp::Create,
                at: Timestamp::now(),
                replaces: None,
            })
        })
        .expect("an intent left by an interrupted apply");
    let rt = FakeRuntime::new();
    rt.set_down(true);
    let w = start(&rt, &store, false);
    w.events
        .send(revision("r1", &[("fleet/a.yaml", spec("alpha", 1))]))
        .await
        .expect("send");
    until("degraded: the runtime is down", || {
        w.shared
            .health()
            .runtime
            .is_some_and(|r| r.contains("the engine is down"))
    })
    .await;
    assert!(w.alive(), "watch ended on an engine that was down");
    rt.set_down(false);
    until("alpha to run once the engine is back", || {
        running(&store, "alpha") == 1
    })
    .await;
    until("healthy again", || w.shared.health().ok()).await;
    assert!(store.load().expect("load").intents.is_empty());
    w.stop().await;
}

/// A state file held by another process (an `apply` beside the `watch`)
/// beyond the busy timeout used to end the process. Now the pass is
/// retried, `/healthz` names the state file, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_state_file_is_waited_out_not_fatal() {
    let (_dir, reader) = state_file();
    // The watch gives up on a busy file quickly; the test's own reads wait
    // as long as they need, so that they never fail on the watch's writes.
    let store = reader.clone().with_busy_timeout(Duration::from_millis(100));
    let rt = FakeRuntime::new();
    let w = start(&rt, &store, false);
    w.events
        .send(revision("r1", &[("fleet/a.yaml", spec("alpha", 1))]))
        .await
        .expect("send");
    until("alpha to run", || running(&reader, "alpha") == 1).await;

    // Hold the file, as a long transaction elsewhere would, until released.
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let store = store.clone().with_busy_timeout(Duration::from_secs(30));
        std::thread::spawn(move || {
            store.update(|_| {
                let _ = held_tx.send(());
                let _ = release_rx.recv_timeout(Duration::from_secs(20));
                Ok(())
            })
        })
    };
    held_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the file is held");
    // A change while the file is held: the pass that follows cannot load.
    w.events
        .send(revision("r2", &[("fleet/a.yaml", spec("alpha", 2))]))
        .await
        .expect("send");
    until("degraded: the state file is busy", || {
        w.shared
            .health()
            .state
            .is_some_and(|s| s.contains("is busy"))
    })
    .await;
    assert!(w.alive(), "watch ended on a busy state file");
    release_tx.send(()).expect("release");
    holder.join().expect("holder").expect("holder's update");
    until("alpha scaled once the file is free", || {
        running(&reader, "alpha") == 2
    })
    .await;
    until("healthy again", || w.shared.health().ok()).await;
    w.stop().await;
}

/// A hung engine (every list outlives the deadline) fails each pass with
/// a message that says so, and `/healthz` is degraded; the loop goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_engine_fails_passes_at_the_deadline_and_degrades_health() {
    let (_dir, store) = state_file();
    let fake = FakeRuntime::new();
    let rt = Arc::new(crate::runtime::Bounded::new(
        fake.clone(),
        "fake",
        crate::runtime::Deadlines::from_call(Duration::from_millis(200)),
    ));
    let w = start_with(rt, &store, false, Duration::from_secs(30), None, None);
    w.events
        .send(revision("r1", &[("fleet/a.yaml", spec("alpha", 1))]))
        .await
        .expect("send");
    until("alpha to run", || running(&store, "alpha") == 1).await;
    fake.slow_looks(Duration::from_secs(3600));
    until("degraded: the runtime did not answer", || {
        w.shared
            .health()
            .runtime
            .is_some_and(|r| r.contains("did not answer within 200ms"))
    })
    .await;
    assert!(w.alive());
    fake.slow_looks(Duration::ZERO);
    until("healthy again", || w.shared.health().ok()).await;
    w.stop().await;
}

/// On shutdown, actions in flight get `shutdown_timeout` to finish, not
/// forever: a create that never answers (a hung engine) is cut short, and
/// the intents let the next run finish it. A second signal stops at once.
#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_actions_in_flight_at_most_the_timeout() {
    for second_signal in [false, true] {
        let (_dir, store) = state_file();
        let rt = FakeRuntime::new();
        rt.behave(
            "alpha",
            crate::runtime::fake::Behaviour {
                create_takes: Duration::from_secs(3600),
                ..Default::default()
            },
        );
        let mut w = start_with(
            Arc::new(rt.clone()),
            &store,
            false,
            Duration::from_secs(5),
            None,
            None,
        );
        w.events
            .send(revision("r1", &[("fleet/a.yaml", spec("alpha", 1))]))
            .await
            .expect("send");
        until("the create to be under way", || rt.units().len() == 1).await;
        let began = tokio::time::Instant::now();
        let _ = w.stop.take().expect("stop").send(());
        if second_signal {
            let _ = w.abort.take().expect("abort").send(());
        }
        let stopped = tokio::time::timeout(Duration::from_secs(3600), &mut w.task)
            .await
            .expect("watch returns")
            .expect("watch task")
            .expect("watch ends cleanly");
        let took = began.elapsed();
        assert_eq!(stopped, Stopped::CutShort);
        if second_signal {
            assert!(
                took < Duration::from_secs(1),
                "took {took:?} after a second signal"
            );
        } else {
            assert!(
                took >= Duration::from_secs(5) && took < Duration::from_secs(6),
                "took {took:?} with a 5 s shutdown timeout"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pass_acts_while_the_lease_is_not_ours() {
    let (_dir, store) = state_file();
    let rt = FakeRuntime::new();
    let (standing, lease) = tokio::sync::watch::channel(Standing::Waiting(
        "the applier lease is held by mcpctl apply (pid 7 on ci)".into(),
    ));
    let w = start_with(
        Arc::new(rt.clone()),
        &store,
        false,
        Duration::from_secs(30),
        Some(lease),
        None,
    );
    w.events
        .send(revision("r1", &[("fleet/a.yaml", spec("alpha", 1))]))
        .await
        .expect("send");
    until("health to name the holder", || {
        w.shared
            .health()
            .reasons()
            .iter()
            .any(|r| r.contains("lease: the applier lease is held by mcpctl apply"))
    })
    .await;
    // Resync is 300 ms: a few would-be passes go by, and none acts.
    more_turns(&w.shared, 3).await;
    assert!(rt.units().is_empty(), "acted without the lease");
    standing.send_replace(Standing::Held("1".into()));
    until("alpha to run once the lease is ours", || {
        running(&store, "alpha") == 1
    })
    .await;
    until("healthy", || w.shared.health().ok()).await;
    // Lost again: the fleet is left as it is, whatever happens to it.
    standing.send_replace(Standing::Waiting("another applier took it over".into()));
    until("degraded", || !w.shared.health().ok()).await;
    let victim = rt.units().keys().next().cloned().expect("a unit");
    rt.delete(&victim);
    more_turns(&w.shared, 3).await;
    assert!(rt.units().is_empty(), "repaired without the lease");
    w.stop().await;
}

fn external(name: &str, team: &str) -> String {
    format!(
        "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: {name}}}\nspec:\n  external:\n    url: http://127.0.0.1:9/mcp\n    headers: {{X-Team: {team}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_gets_the_table_of_each_pass_and_the_headers_of_each_revision() {
    use crate::gateway::Refusal;
    use crate::model::{HttpHeader, HttpHeaderValue};
    let (_dir, store) = state_file();
    let rt = FakeRuntime::new();
    let (tables, table) = tokio::sync::watch::channel(Arc::new(Table::default()));
    let (headers, added) = tokio::sync::watch::channel(Arc::new(ServerHeaders::new()));
    let feed = GatewayFeed {
        tables: Some(tables),
        headers,
        bridges: crate::bridge::Bridges::default(),
    };
    let w = start_with(
        Arc::new(rt.clone()),
        &store,
        false,
        Duration::from_secs(30),
        None,
        Some(feed),
    );
    let team = |t: &str| {
        vec![HttpHeader {
            name: "X-Team".into(),
            value: HttpHeaderValue::Plain(t.into()),
        }]
    };
    // What the table says once the state has `n` RUNNING instances of alpha.
    let follows_the_state = |n: usize| {
        running(&store, "alpha") == n
            && **table.borrow() == Table::from_snapshot(&store.load().expect("load"))
    };

    w.events
        .send(revision(
            "r1",
            &[
                ("fleet/a.yaml", spec("alpha", 1)),
                ("fleet/ext.yaml", external("ext", "platform")),
            ],
        ))
        .await
        .expect("send");
    until("the table to follow alpha to RUNNING", || {
        follows_the_state(1)
    })
    .await;
    // The fake's instances speak stdio: routed over their unit.
    assert!(
        matches!(table.borrow().backends("alpha"), Ok([b]) if matches!(b.upstream, crate::gateway::Upstream::Stdio { .. })),
        "{:?}",
        table.borrow().backends("alpha")
    );
    assert_eq!(added.borrow().get("ext"), Some(&team("platform")));
    assert_eq!(
        added.borrow().len(),
        1,
        "only external servers have headers"
    );

    // A new revision: alpha scaled to none, and the external server's
    // header changed.
    w.events
        .send(revision(
            "r2",
            &[
                ("fleet/a.yaml", spec("alpha", 0)),
                ("fleet/ext.yaml", external("ext", "data")),
            ],
        ))
        .await
        .expect("send");
    until("the new header", || {
        added.borrow().get("ext") == Some(&team("data"))
    })
    .await;
    until("the table to follow alpha to none", || follows_the_state(0)).await;
    assert!(
        matches!(table.borrow().backends("alpha"), Err(Refusal::Unavailable(why)) if why.ends_with("no instances")),
        "{:?}",
        table.borrow().backends("alpha")
    );
    w.stop().await;
}
