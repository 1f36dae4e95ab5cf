//! The executor: carries a plan out against a runtime and records every step
//! in the state, then (with `--wait`) keeps refreshing, planning and acting
//! until every wanted instance is RUNNING or the timeout passes.
//!
//! **Crash safety.** Before each side effect an [`Intent`] is written, and
//! after it the result, in one transaction. A process killed at any point
//! leaves either an intent with no unit (dropped at the next start), a unit
//! with an intent (adopted or removed by the next plan), or a consistent
//! record. The planner does the recovering; this module only keeps the
//! records honest.
//!
//! **Rolling replace.** A replace starts the new instance, waits for it to be
//! RUNNING, and only then removes the old one, one instance at a time per
//! server, so a server never has fewer RUNNING instances than before.

mod create;

use crate::plan::{self, Action, ActionKind, Desired, Inputs, Plan, backoff_delay};
use crate::probe::{self, Target};
use crate::runtime::{Observation, Probe, Runtime, RuntimeError, Unit, UnitState, refresh};
use crate::secrets::Secrets;
use crate::source::SourceInfo;
use crate::spec::Server;
use crate::state::{
    AppliedSpec, Backoff, HistoryEntry, Instance, InstanceId, Intent, IntentOp, Liveness, Snapshot,
    StateError, Status, Store,
};
use crate::time::Timestamp;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What the executor needs besides the plan: the specs to build containers
/// from, and resolved secrets for their environment.
pub struct Context<'a> {
    pub servers: &'a [Server],
    pub secrets: &'a Secrets,
    pub desired: &'a [Desired],
    pub source: &'a SourceInfo,
    /// The command line, for the history.
    pub command: &'a str,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Runtime calls in flight at once.
    pub parallelism: usize,
    /// Keep going until converged (or the timeout).
    pub wait: bool,
    pub timeout: Duration,
    pub allow_empty: bool,
    /// Pause between convergence passes.
    pub poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parallelism: 8,
            wait: true,
            timeout: Duration::from_secs(300),
            allow_empty: false,
            poll: Duration::from_millis(250),
        }
    }
}

/// Something that happened during an apply, for progress displays.
#[derive(Debug, Clone)]
pub enum Event {
    /// A pass planned these actions.
    Planned {
        pass: usize,
        actions: usize,
    },
    Started {
        action: Action,
    },
    Finished {
        action: Action,
        instance: Option<InstanceId>,
        error: Option<String>,
        elapsed: Duration,
    },
    /// Waiting for convergence: RUNNING instances out of wanted.
    Waiting {
        running: usize,
        wanted: usize,
    },
}

/// The result of an apply.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub actions: Vec<Done>,
    pub passes: usize,
    pub converged: bool,
    pub elapsed: Duration,
    /// Per server: (RUNNING, wanted), at the end.
    pub servers: BTreeMap<String, (usize, usize)>,
}

/// One executed action and how it ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Done {
    #[serde(flatten)]
    pub action: Action,
    /// The instance made by a start or replace.
    pub created: Option<InstanceId>,
    pub error: Option<String>,
    pub elapsed_ms: u64,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ApplyError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Plan(#[from] plan::PlanError),
}

/// Serialises this process's state writes: redb admits one open handle per
/// file, and writers in one process should queue, not spin on retries.
struct Recorder<'a> {
    store: &'a Store,
    lock: Mutex<()>,
}

impl Recorder<'_> {
    fn update<T>(
        &self,
        f: impl FnOnce(&mut crate::state::Txn<'_>) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.store.update(f)
    }

    fn load(&self) -> Result<Snapshot, StateError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.store.load()
    }
}

/// A plan already made, with the snapshot and observation it was made
/// from, so the first pass does not observe the world a second time.
pub struct First {
    pub plan: Plan,
    pub snapshot: Snapshot,
    pub observation: Observation,
}

/// Applies `first` (or a fresh plan when `None`), then, with `wait`, keeps
/// planning and acting until converged or `timeout`.
pub async fn apply<R: Runtime + Sync>(
    rt: &R,
    store: &Store,
    ctx: &Context<'_>,
    first: Option<First>,
    opts: &Options,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Report, ApplyError> {
    let started = Instant::now();
    let rec = Recorder {
        store,
        lock: Mutex::new(()),
    };
    let sem = Semaphore::new(opts.parallelism.max(1));
    let mut report = Report::default();
    let mut first = first;
    drop_stale_intents(rt, &rec, first.as_ref().map(|f| &f.observation)).await?;
    loop {
        report.passes += 1;
        let (plan, snapshot, obs) = match first.take() {
            Some(f) => (f.plan, f.snapshot, f.observation),
            None => {
                let snapshot = rec.load()?;
                // Passes after the first are waiting passes: keep an eye on liveness too.
                let obs = refresh(rt, &snapshot, ctx.desired, true).await?;
                let plan = plan::plan(Inputs {
                    desired: ctx.desired,
                    snapshot: &snapshot,
                    observation: Some(&obs),
                    now: obs.at,
                    allow_empty: opts.allow_empty,
                })?;
                (plan, snapshot, obs)
            }
        };
        on_event(Event::Planned {
            pass: report.passes,
            actions: plan.actions.len(),
        });
        record_probe_errors(&rec, &snapshot, &obs)?;
        let done = execute(rt, &rec, &sem, ctx, &plan, &snapshot, &obs, on_event).await?;
        report.actions.extend(done);
        if report.passes == 1 {
            record_applied(&rec, ctx, plan.actions.len(), started)?;
        }
        let snapshot = rec.load()?;
        report.servers = tally(ctx.desired, &snapshot);
        report.converged = plan.is_empty()
            && report
                .servers
                .values()
                .all(|(running, wanted)| running == wanted);
        if !opts.wait || report.converged {
            break;
        }
        let (running, wanted) = report
            .servers
            .values()
            .fold((0, 0), |(r, w), (a, b)| (r + a, w + b));
        on_event(Event::Waiting { running, wanted });
        if started.elapsed() >= opts.timeout {
            break;
        }
        // After a pass that acted without errors, look again at once: the
        // next pass is usually the empty one that confirms convergence.
        // Otherwise pause, at a control loop's pace; each pass re-reads the world.
        let clean = !plan.is_empty()
            && report
                .actions
                .iter()
                .rev()
                .take(plan.actions.len())
                .all(|d| d.error.is_none());
        if !clean {
            tokio::time::sleep(
                opts.poll
                    .min(opts.timeout.saturating_sub(started.elapsed())),
            )
            .await;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// RUNNING instances with the wanted hash, per server, against replicas.
pub fn tally(desired: &[Desired], snapshot: &Snapshot) -> BTreeMap<String, (usize, usize)> {
    let wanted: BTreeMap<&str, &Desired> = desired.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut out: BTreeMap<String, (usize, usize)> = desired
        .iter()
        .map(|d| (d.name.clone(), (0, d.target())))
        .collect();
    for i in snapshot.instances.values() {
        if let (Some(entry), Some(d)) = (out.get_mut(&i.server), wanted.get(i.server.as_str()))
            && i.status == Status::Running
            && i.spec_hash == d.canonical.hash
        {
            entry.0 += 1;
        }
    }
    out
}

/// Intents whose unit never appeared: the process died before the runtime
/// call. Nothing exists to adopt or remove, so the intent is simply dropped.
async fn drop_stale_intents<R: Runtime>(
    rt: &R,
    rec: &Recorder<'_>,
    observed: Option<&Observation>,
) -> Result<(), ApplyError> {
    let snapshot = rec.load()?;
    if snapshot.intents.is_empty() {
        return Ok(());
    }
    let units = match observed {
        Some(o) => o.units.values().cloned().collect(),
        None => rt.observe(None).await?,
    };
    let stale: Vec<InstanceId> = snapshot
        .intents
        .values()
        .filter(|i| i.op == IntentOp::Create)
        .filter(|i| {
            !snapshot.instances.contains_key(&i.instance)
                && !units.iter().any(|u| u.instance == i.instance)
        })
        .map(|i| i.instance.clone())
        .collect();
    if !stale.is_empty() {
        rec.update(|tx| stale.iter().try_for_each(|id| tx.clear_intent(id)))?;
    }
    Ok(())
}

/// Keeps each STARTING instance's reason current with its latest failed
/// handshake, so `get` and `describe` say why it is not ready yet. Not a
/// transition: the status is unchanged, so the history is left alone.
fn record_probe_errors(
    rec: &Recorder<'_>,
    snapshot: &Snapshot,
    obs: &Observation,
) -> Result<(), StateError> {
    let now = obs.at;
    let changed: Vec<Instance> = snapshot
        .instances
        .values()
        .filter_map(|i| {
            let probe = obs.probes.get(&i.id)?;
            let mut i = i.clone();
            match (i.status, probe) {
                (Status::Starting, Probe::NotReady(why)) if *why != i.reason => {
                    i.reason = why.clone()
                }
                // A liveness result: count failures in a row, so the planner can
                // tell a blip from an outage.
                (Status::Running, Probe::Ready(_)) => {
                    i.liveness = Liveness {
                        failures: 0,
                        checked_at: now,
                    }
                }
                (Status::Running, Probe::NotReady(_)) => {
                    i.liveness = Liveness {
                        failures: i.liveness.failures + 1,
                        checked_at: now,
                    }
                }
                _ => return None,
            }
            Some(i)
        })
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    rec.update(|tx| changed.iter().try_for_each(|i| tx.put_instance(i)))
}

fn record_applied(
    rec: &Recorder<'_>,
    ctx: &Context<'_>,
    actions: usize,
    started: Instant,
) -> Result<(), StateError> {
    let now = Timestamp::now();
    rec.update(|tx| {
        for d in ctx.desired {
            tx.put_server(
                &d.name,
                &AppliedSpec {
                    hash: d.canonical.hash.clone(),
                    canonical: d.canonical.yaml.clone(),
                    replicas: d.replicas,
                    applied_at: now,
                },
            )?;
        }
        tx.set_revision(&ctx.source.revision)?;
        tx.push_history(&HistoryEntry {
            at: now,
            revision: ctx.source.revision.clone(),
            source: ctx.source.location.clone(),
            actions,
            outcome: format!("{} ({} ms)", ctx.command, started.elapsed().as_millis()),
        })
    })?;
    // Servers gone from the source: forget their record once nothing of theirs is left.
    let snapshot = rec.load()?;
    let gone: Vec<String> = snapshot
        .servers
        .keys()
        .filter(|name| !ctx.desired.iter().any(|d| &d.name == *name))
        .filter(|name| !snapshot.instances.values().any(|i| &i.server == *name))
        .cloned()
        .collect();
    if !gone.is_empty() {
        rec.update(|tx| gone.iter().try_for_each(|n| tx.remove_server(n)))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn execute<R: Runtime + Sync>(
    rt: &R,
    rec: &Recorder<'_>,
    sem: &Semaphore,
    ctx: &Context<'_>,
    plan: &Plan,
    snapshot: &Snapshot,
    obs: &Observation,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Vec<Done>, ApplyError> {
    let mut by_server: BTreeMap<&str, Vec<&Action>> = BTreeMap::new();
    for a in &plan.actions {
        by_server.entry(a.server.as_str()).or_default().push(a);
    }
    let exec = Exec {
        rt,
        rec,
        sem,
        ctx,
        snapshot,
        obs,
        on_event,
    };
    let per_server = by_server.into_values().map(|actions| exec.server(actions));
    let results = futures_util::future::join_all(per_server).await;
    let mut done = Vec::new();
    for r in results {
        done.extend(r?);
    }
    Ok(done)
}

/// How one action ended: a state error aborts the apply; a runtime failure
/// (`Err(reason)`) is recorded on the action and the rest carry on.
type Step = Result<Result<Option<InstanceId>, String>, StateError>;

struct Exec<'a, 'c, R> {
    rt: &'a R,
    rec: &'a Recorder<'a>,
    sem: &'a Semaphore,
    ctx: &'a Context<'c>,
    snapshot: &'a Snapshot,
    obs: &'a Observation,
    on_event: &'a (dyn Fn(Event) + Sync),
}

impl<R: Runtime + Sync> Exec<'_, '_, R> {
    /// One server's actions: statuses first, then removals and starts in
    /// parallel, then replaces one at a time. A state error aborts; a runtime
    /// error is recorded on its action and the rest carry on.
    async fn server(&self, actions: Vec<&Action>) -> Result<Vec<Done>, ApplyError> {
        let mut done = Vec::new();
        for a in actions.iter().filter(|a| {
            matches!(
                a.kind,
                ActionKind::Adopt | ActionKind::Promote | ActionKind::Demote | ActionKind::Fail
            )
        }) {
            done.push(self.timed(a, self.status(a)).await?);
        }
        for kind in [ActionKind::Remove, ActionKind::Start] {
            let batch = actions
                .iter()
                .filter(|a| a.kind == kind)
                .map(|a| self.timed(a, self.one(a)));
            for r in futures_util::future::join_all(batch).await {
                done.push(r?);
            }
        }
        for a in actions.iter().filter(|a| a.kind == ActionKind::Replace) {
            done.push(self.timed(a, self.replace(a)).await?);
        }
        Ok(done)
    }

    async fn timed(
        &self,
        a: &Action,
        f: impl std::future::Future<Output = Step>,
    ) -> Result<Done, ApplyError> {
        (self.on_event)(Event::Started { action: a.clone() });
        let t = Instant::now();
        let r = f.await?;
        let (created, error) = match r {
            Ok(c) => (c, None),
            Err(e) => (None, Some(e)),
        };
        let elapsed = t.elapsed();
        (self.on_event)(Event::Finished {
            action: a.clone(),
            instance: created.clone(),
            error: error.clone(),
            elapsed,
        });
        Ok(Done {
            action: a.clone(),
            created,
            error,
            elapsed_ms: elapsed.as_millis() as u64,
        })
    }

    async fn one(&self, a: &Action) -> Step {
        match a.kind {
            ActionKind::Start => self.start(&a.server).await,
            _ => self.remove(a).await.map(|r| r.map(|()| None)),
        }
    }

    /// Status changes touch only the state.
    async fn status(&self, a: &Action) -> Step {
        let Some(id) = &a.instance else {
            return Ok(Ok(None));
        };
        let now = Timestamp::now();
        let unit = self.obs.units.get(id);
        if a.kind == ActionKind::Adopt {
            let Some(unit) = unit else {
                return Ok(Err("unit vanished before adoption".into()));
            };
            let mut inst = Instance::starting(
                id.clone(),
                &unit.server,
                unit.spec_hash.clone(),
                &a.reason,
                now,
            );
            inst.handle = unit.handle.clone();
            inst.endpoint = unit.endpoint.clone().unwrap_or_default();
            inst.restarts = unit.restarts;
            self.rec.update(|tx| {
                tx.put_instance(&inst)?;
                tx.clear_intent(id)
            })?;
            return Ok(Ok(None));
        }
        let Some(mut inst) = self.snapshot.instances.get(id).cloned() else {
            return Ok(Err("instance vanished from the state".into()));
        };
        let status = match a.kind {
            ActionKind::Promote => Status::Running,
            ActionKind::Demote => Status::Starting,
            _ => Status::Error,
        };
        inst.transition(status, a.reason.clone(), now);
        if let Some(u) = unit {
            inst.restarts = u.restarts;
        }
        if status == Status::Running {
            inst.mcp = self.obs.identities.get(id).cloned();
        }
        // Every status change starts liveness counting afresh.
        inst.liveness = Liveness {
            failures: 0,
            checked_at: now,
        };
        // Only a crash starts a back-off; a unit removed out of band is
        // replaced at once (the plan already holds the replacement).
        let crashed = unit.is_some() || inst.handle.is_empty();
        let backoff = (status == Status::Error && crashed).then(|| {
            let failures = self
                .snapshot
                .backoff
                .get(&a.server)
                .map_or(0, |b| b.failures)
                + 1;
            Backoff {
                failures,
                until: now.plus(backoff_delay(failures)),
                reason: a.reason.clone(),
            }
        });
        self.rec.update(|tx| {
            tx.put_instance(&inst)?;
            match &backoff {
                Some(b) => tx.put_backoff(&a.server, b),
                // A promotion proves the server can run: forgive past failures.
                None if status == Status::Running => tx.clear_backoff(&a.server),
                None => Ok(()),
            }
        })?;
        Ok(Ok(None))
    }

    async fn remove(&self, a: &Action) -> Result<Result<(), String>, StateError> {
        let Some(id) = &a.instance else {
            return Ok(Ok(()));
        };
        let known = self.snapshot.instances.get(id);
        let handle = known
            .map(|i| i.handle.clone())
            .or_else(|| self.obs.units.get(id).map(|u| u.handle.clone()));
        let hash = known
            .map(|i| i.spec_hash.clone())
            .or_else(|| self.obs.units.get(id).map(|u| u.spec_hash.clone()));
        if let (Some(i), Some(hash)) = (known, &hash) {
            self.rec.update(|tx| {
                tx.put_intent(&Intent {
                    instance: id.clone(),
                    server: i.server.clone(),
                    spec_hash: hash.clone(),
                    op: IntentOp::Remove,
                    at: Timestamp::now(),
                })
            })?;
        }
        if let Some(handle) = handle.filter(|h| !h.is_empty()) {
            let _permit = self.sem.acquire().await;
            if let Err(e) = self.rt.remove(&handle).await {
                return Ok(Err(e.to_string()));
            }
        }
        self.rec.update(|tx| {
            tx.remove_instance(id)?;
            tx.clear_intent(id)
        })?;
        Ok(Ok(()))
    }

    /// Starts one instance of `server`. A runtime failure becomes an ERROR
    /// instance carrying the engine's message, and starts the back-off.
    async fn start(&self, server: &str) -> Step {
        let Some((spec, d)) = self.spec(server) else {
            return Ok(Err(format!("server {server} is not in the source")));
        };
        let now = Timestamp::now();
        let id = InstanceId::generate(now);
        if let crate::spec::Workload::External(e) = &spec.spec.workload {
            let mut inst = Instance::starting(
                id.clone(),
                server,
                d.canonical.hash.clone(),
                "external server",
                now,
            );
            inst.endpoint = e.url.clone();
            self.rec.update(|tx| tx.put_instance(&inst))?;
            return Ok(Ok(Some(id)));
        }
        let req = create::request(spec, &d.canonical.hash, &id, self.ctx.secrets);
        self.rec.update(|tx| {
            tx.put_intent(&Intent {
                instance: id.clone(),
                server: server.to_owned(),
                spec_hash: d.canonical.hash.clone(),
                op: IntentOp::Create,
                at: now,
            })
        })?;
        let created = {
            let _permit = self.sem.acquire().await;
            self.rt.create(&req).await
        };
        // Created when asked for, at its id's time: scale-down goes by
        // (created_at, id), so that order is the order of the ids.
        let mut inst =
            Instance::starting(id.clone(), server, d.canonical.hash.clone(), "created", now);
        let now = Timestamp::now();
        match created {
            Ok(c) => {
                inst.handle = c.handle;
                inst.endpoint = c.endpoint;
                self.rec.update(|tx| {
                    tx.put_instance(&inst)?;
                    tx.clear_intent(&id)
                })?;
                Ok(Ok(Some(id)))
            }
            Err(e) => {
                let reason = e.to_string();
                inst.transition(Status::Error, reason.clone(), now);
                let failures = self.snapshot.backoff.get(server).map_or(0, |b| b.failures) + 1;
                let backoff = Backoff {
                    failures,
                    until: now.plus(backoff_delay(failures)),
                    reason: reason.clone(),
                };
                self.rec.update(|tx| {
                    tx.put_instance(&inst)?;
                    tx.put_backoff(server, &backoff)?;
                    tx.clear_intent(&id)
                })?;
                Ok(Err(reason))
            }
        }
    }

    /// Rolling: the new instance must be RUNNING before the old one goes.
    async fn replace(&self, a: &Action) -> Step {
        let new = match self.start(&a.server).await? {
            Ok(Some(id)) => id,
            Ok(None) => return Ok(Err("no instance was started".into())),
            Err(e) => return Ok(Err(format!("new instance failed, old one kept: {e}"))),
        };
        let timeout = self
            .spec(&a.server)
            .map_or(Duration::from_secs(60), |(_, d)| d.readiness_timeout);
        match self.await_ready(&new, timeout).await? {
            Ok(()) => {}
            Err(why) => {
                return Ok(Err(format!(
                    "new instance {new} not ready, old one kept: {why}"
                )));
            }
        }
        match self.remove(a).await? {
            Ok(()) => Ok(Ok(Some(new))),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Polls the new instance's readiness until it passes (promote) or fails.
    async fn await_ready(
        &self,
        id: &InstanceId,
        timeout: Duration,
    ) -> Result<Result<(), String>, StateError> {
        let snapshot = self.rec.load()?;
        let Some(mut inst) = snapshot.instances.get(id).cloned() else {
            return Ok(Err("instance vanished".into()));
        };
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(100);
        let mut last: String;
        loop {
            let mut unit = Unit::of(&inst);
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt =
                crate::runtime::ATTEMPT_TIMEOUT.min(remaining.max(Duration::from_millis(100)));
            let ready = if inst.handle.is_empty() {
                probe::readiness(self.rt, Target::External(&inst.endpoint), attempt).await
            } else {
                let exists = match self.rt.inspect(&mut unit).await {
                    Ok(e) => e,
                    Err(e) => return Ok(Err(e.to_string())),
                };
                if !exists {
                    return self.fail_new(&mut inst, "container not found".into()).await;
                }
                if matches!(unit.state, UnitState::Exited(_) | UnitState::Dead) {
                    let log = unit
                        .last_log
                        .as_deref()
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default();
                    return self
                        .fail_new(&mut inst, format!("{}{log}", unit.state.describe()))
                        .await;
                }
                probe::readiness(self.rt, Target::Unit(&unit), attempt).await
            };
            match ready.probe {
                Probe::Ready(how) => {
                    inst.transition(Status::Running, format!("ready: {how}"), Timestamp::now());
                    inst.restarts = unit.restarts;
                    inst.mcp = ready.identity;
                    inst.liveness = Liveness {
                        failures: 0,
                        checked_at: Timestamp::now(),
                    };
                    let server = inst.server.clone();
                    self.rec.update(|tx| {
                        tx.put_instance(&inst)?;
                        tx.clear_backoff(&server)
                    })?;
                    return Ok(Ok(()));
                }
                Probe::NotReady(why) => last = why,
            }
            if Instant::now() >= deadline {
                let why = format!(
                    "not ready after {}: {last}",
                    crate::time::short_duration(timeout)
                );
                return self.fail_new(&mut inst, why).await;
            }
            // Readiness polling with back-off, bounded by the readiness timeout.
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    async fn fail_new(
        &self,
        inst: &mut Instance,
        why: String,
    ) -> Result<Result<(), String>, StateError> {
        let now = Timestamp::now();
        inst.transition(Status::Error, why.clone(), now);
        let failures = self
            .snapshot
            .backoff
            .get(&inst.server)
            .map_or(0, |b| b.failures)
            + 1;
        let b = Backoff {
            failures,
            until: now.plus(backoff_delay(failures)),
            reason: why.clone(),
        };
        let server = inst.server.clone();
        self.rec.update(|tx| {
            tx.put_instance(inst)?;
            tx.put_backoff(&server, &b)
        })?;
        Ok(Err(why))
    }

    fn spec(&self, server: &str) -> Option<(&Server, &Desired)> {
        let s = self.ctx.servers.iter().find(|s| s.name == server)?;
        let d = self.ctx.desired.iter().find(|d| d.name == server)?;
        Some((s, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use crate::source::{SourceFile, SourceInfo};

    /// Apply against the in-memory fake: starts are recorded with their
    /// handles, a second apply finds nothing to start, and removing the
    /// server from the source removes its units.
    #[tokio::test]
    async fn apply_records_what_it_does_in_the_fake_world() {
        let yaml = "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: alpha}\nspec: {replicas: 2, image: img}\n";
        let servers = crate::spec::load(&[SourceFile {
            path: "a.yaml".into(),
            text: yaml.into(),
        }])
        .expect("valid");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().join("state.redb"));
        let secrets = Secrets::default();
        let desired = Desired::from_servers(
            &servers,
            &secrets.digests(&store.digest_key().expect("key")),
        );
        let source = SourceInfo {
            kind: "dir".into(),
            location: "a.yaml".into(),
            revision: "r1".into(),
        };
        let ctx = Context {
            servers: &servers,
            secrets: &secrets,
            desired: &desired,
            source: &source,
            command: "test",
        };
        // The fake's units do not speak MCP, so this apply cannot wait for readiness.
        let opts = Options {
            wait: false,
            ..Options::default()
        };
        let rt = FakeRuntime::new();

        let report = apply(&rt, &store, &ctx, None, &opts, &|_| {})
            .await
            .expect("apply");
        assert_eq!(
            report
                .actions
                .iter()
                .filter(|d| d.action.kind == ActionKind::Start && d.error.is_none())
                .count(),
            2
        );
        let snapshot = store.load().expect("load");
        assert_eq!(snapshot.instances.len(), 2);
        assert!(
            snapshot.intents.is_empty(),
            "every intent is cleared after its result"
        );
        assert_eq!(snapshot.revision.as_deref(), Some("r1"));
        let units = rt.units().clone();
        for inst in snapshot.instances.values() {
            assert_eq!(units[&inst.id].handle, inst.handle);
        }

        let report = apply(&rt, &store, &ctx, None, &opts, &|_| {})
            .await
            .expect("apply");
        assert!(
            report
                .actions
                .iter()
                .all(|d| d.action.kind != ActionKind::Start),
            "{:?}",
            report.actions
        );

        let none: Vec<Desired> = Vec::new();
        let ctx = Context {
            desired: &none,
            servers: &[],
            ..ctx
        };
        let opts = Options {
            allow_empty: true,
            ..opts
        };
        apply(&rt, &store, &ctx, None, &opts, &|_| {})
            .await
            .expect("apply");
        assert!(
            rt.units().is_empty(),
            "pruned units are removed from the runtime"
        );
        assert!(store.load().expect("load").instances.is_empty());
    }
}
