//! Carrying out one server's share of a pass: record its fresh probe
//! results, settle statuses, then removals and starts in parallel (bounded
//! by the shared semaphore). A rolling replace here only starts the new
//! instance; later passes promote it and remove the old one.
//!
//! **Crash safety.** Before each side effect an [`Intent`] is written, and
//! after it the result, in one transaction. A process killed at any point
//! leaves either an intent with no unit (dropped at the next start), a unit
//! with an intent (adopted or removed by the next plan), or a consistent
//! record. The planner does the recovering; this module only keeps the
//! records honest.

use super::{Done, Event, Target, create};
use crate::model::{
    Backoff, Instance, InstanceId, Intent, IntentOp, Liveness, Observation, Snapshot, SpecHash,
    Status, Timestamp,
};
use crate::plan::{Action, ActionKind, backoff_delay};
use crate::runtime::Runtime;
use crate::state::{StateError, Store};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// What one server gets to do in a pass.
pub(super) struct ServerWork {
    pub server: String,
    /// Instance records to write first (probe reasons, liveness counts).
    pub updates: Vec<Instance>,
    /// The plan's runnable actions for this server.
    pub actions: Vec<Action>,
    pub snapshot: Arc<Snapshot>,
    pub obs: Arc<Observation>,
}

/// How one server's work ended.
pub(super) struct ServerDone {
    pub server: String,
    pub done: Vec<Done>,
    /// The first failure, if any: the server is retried with back-off.
    pub failed: Option<String>,
}

/// How one action ended: the instance it made, or why it failed.
type Step = Result<Option<InstanceId>, String>;

fn state(e: StateError) -> String {
    format!("recording in the state failed: {e}")
}

pub(super) struct Exec<'a, R> {
    pub rt: &'a R,
    pub store: &'a Store,
    pub sem: Arc<Semaphore>,
    pub target: Arc<Target>,
    pub on_event: &'a (dyn Fn(Event) + Sync),
}

impl<R: Runtime + Sync> Exec<'_, R> {
    pub async fn run(&self, work: ServerWork) -> ServerDone {
        let mut out = ServerDone {
            server: work.server.clone(),
            done: Vec::new(),
            failed: None,
        };
        if !work.updates.is_empty() {
            let updates = work.updates.clone();
            let written = self
                .store
                .update_async(move |tx| updates.iter().try_for_each(|i| tx.put_instance(i)))
                .await;
            if let Err(e) = written {
                out.failed = Some(state(e));
                return out;
            }
        }
        let ctx = Ctx {
            snapshot: &work.snapshot,
            obs: &work.obs,
        };
        for a in work.actions.iter().filter(|a| {
            matches!(
                a.kind,
                ActionKind::Adopt | ActionKind::Promote | ActionKind::Demote | ActionKind::Fail
            )
        }) {
            out.done.push(self.timed(a, self.status(&ctx, a)).await);
        }
        // Removals and starts of one server do not depend on each other: the
        // plan already counted what each leaves behind.
        let batch = work
            .actions
            .iter()
            .filter(|a| {
                matches!(
                    a.kind,
                    ActionKind::Remove | ActionKind::Start | ActionKind::Replace
                )
            })
            .map(|a| self.timed(a, self.one(&ctx, a)));
        out.done.extend(futures_util::future::join_all(batch).await);
        out.failed = out.done.iter().find_map(|d| d.error.clone());
        out
    }

    async fn timed(&self, a: &Action, f: impl std::future::Future<Output = Step>) -> Done {
        (self.on_event)(Event::Started { action: a.clone() });
        let t = Instant::now();
        let (created, error) = match f.await {
            Ok(c) => (c, None),
            Err(e) => (None, Some(e)),
        };
        let error = error.map(|e| self.clean(&a.server, &e));
        let elapsed = t.elapsed();
        (self.on_event)(Event::Finished {
            action: a.clone(),
            instance: created.clone(),
            error: error.clone(),
            elapsed,
        });
        Done {
            action: a.clone(),
            created,
            error,
            elapsed_ms: elapsed.as_millis() as u64,
        }
    }

    async fn one(&self, ctx: &Ctx<'_>, a: &Action) -> Step {
        match a.kind {
            ActionKind::Start => self.start(ctx, &a.server, None).await,
            // The first half of a rolling replace: the old instance stays
            // until a later pass sees the new one RUNNING.
            ActionKind::Replace => match self.start(ctx, &a.server, a.instance.clone()).await {
                Ok(new) => Ok(new),
                Err(e) => Err(format!("new instance failed, old one kept: {e}")),
            },
            _ => self.remove(ctx, a).await.map(|()| None),
        }
    }

    /// Status changes touch only the state.
    async fn status(&self, ctx: &Ctx<'_>, a: &Action) -> Step {
        let Some(id) = &a.instance else {
            return Ok(None);
        };
        let now = Timestamp::now();
        let unit = ctx.obs.units.get(id);
        if a.kind == ActionKind::Adopt {
            let Some(unit) = unit else {
                return Err("unit vanished before adoption".into());
            };
            let mut inst = Instance::starting(
                id.clone(),
                &unit.server,
                unit.spec_hash.clone(),
                &a.reason,
                now,
            );
            inst.handle = Some(unit.handle.clone());
            inst.endpoint = unit.endpoint.clone();
            inst.restarts = unit.restarts.unwrap_or(0);
            inst.restarts_at_start = inst.restarts;
            inst.replaces = ctx
                .snapshot
                .intents
                .get(id)
                .and_then(|i| i.replaces.clone());
            let id = id.clone();
            return self
                .store
                .update_async(move |tx| {
                    tx.put_instance(&inst)?;
                    tx.clear_intent(&id)
                })
                .await
                .map(|()| None)
                .map_err(state);
        }
        let Some(mut inst) = ctx.snapshot.instances.get(id).cloned() else {
            return Err("instance vanished from the state".into());
        };
        let status = match a.kind {
            ActionKind::Promote => Status::Running,
            ActionKind::Demote => Status::Starting,
            _ => Status::Error,
        };
        inst.transition(status, a.reason.clone(), now);
        if let Some(r) = unit.and_then(|u| u.restarts) {
            inst.restarts = r;
        }
        if status == Status::Starting {
            // Restarts from here on are the ones a crash loop counts.
            inst.restarts_at_start = inst.restarts;
        }
        if status == Status::Running {
            inst.mcp = ctx.obs.identities.get(id).cloned();
        }
        // Every status change starts liveness counting afresh.
        inst.liveness = Liveness {
            failures: 0,
            checked_at: now,
        };
        // Only a crash starts a back-off; a unit removed or stopped out of
        // band is replaced at once (the plan already holds the replacement).
        let crashed = crate::plan::is_crash(inst.handle.is_none(), unit);
        let backoff = (status == Status::Error && crashed)
            .then(|| next_backoff(ctx.snapshot, &a.server, &inst.spec_hash, &a.reason, now));
        let server = a.server.clone();
        self.store
            .update_async(move |tx| {
                tx.put_instance(&inst)?;
                match &backoff {
                    Some(b) => tx.put_backoff(&server, b),
                    // A promotion proves the server can run: forgive past failures.
                    None if status == Status::Running => tx.clear_backoff(&server),
                    None => Ok(()),
                }
            })
            .await
            .map(|()| None)
            .map_err(state)
    }

    async fn remove(&self, ctx: &Ctx<'_>, a: &Action) -> Result<(), String> {
        let Some(id) = &a.instance else {
            return Ok(());
        };
        let known = ctx.snapshot.instances.get(id);
        let unit = ctx.obs.units.get(id);
        let handle = known
            .and_then(|i| i.handle.clone())
            .or_else(|| unit.map(|u| u.handle.clone()));
        let hash = known
            .map(|i| i.spec_hash.clone())
            .or_else(|| unit.map(|u| u.spec_hash.clone()));
        if let (Some(i), Some(hash)) = (known, hash) {
            let intent = Intent {
                instance: id.clone(),
                server: i.server.clone(),
                spec_hash: hash,
                op: IntentOp::Remove,
                at: Timestamp::now(),
                replaces: None,
            };
            self.store
                .update_async(move |tx| tx.put_intent(&intent))
                .await
                .map_err(state)?;
        }
        if let Some(handle) = handle.filter(|h| !h.is_empty()) {
            let _permit = self.sem.acquire().await;
            self.rt.remove(&handle).await.map_err(|e| e.to_string())?;
        }
        let id = id.clone();
        self.store
            .update_async(move |tx| {
                tx.remove_instance(&id)?;
                tx.clear_intent(&id)
            })
            .await
            .map_err(state)
    }

    /// Starts one instance of `server` (to replace `replaces`, if given). A
    /// runtime failure becomes an ERROR instance carrying the engine's
    /// message, and starts the back-off.
    async fn start(&self, ctx: &Ctx<'_>, server: &str, replaces: Option<InstanceId>) -> Step {
        let Some((spec, d)) = self.target.server(server) else {
            return Err(format!("server {server} is not in the source"));
        };
        let now = Timestamp::now();
        let id = InstanceId::generate(now);
        let hash = d.canonical.hash.clone();
        let Some(run) = create::run_spec(spec, &hash, &id, &self.target.secrets) else {
            // External: no container; STARTING until its URL answers.
            let mut inst = Instance::starting(id.clone(), server, hash, "external server", now);
            if let crate::spec::Workload::External(e) = &spec.spec.workload {
                inst.endpoint = Some(crate::model::Endpoint::Http(e.url.clone()));
            }
            inst.replaces = replaces;
            self.store
                .update_async(move |tx| tx.put_instance(&inst))
                .await
                .map_err(state)?;
            return Ok(Some(id));
        };
        let intent = Intent {
            instance: id.clone(),
            server: server.to_owned(),
            spec_hash: hash.clone(),
            op: IntentOp::Create,
            at: now,
            replaces: replaces.clone(),
        };
        self.store
            .update_async(move |tx| tx.put_intent(&intent))
            .await
            .map_err(state)?;
        let created = {
            let _permit = self.sem.acquire().await;
            self.rt.create(&run).await
        };
        // Created when asked for, at its id's time: scale-down goes by
        // (created_at, id), so that order is the order of the ids.
        let mut inst = Instance::starting(id.clone(), server, hash, "created", now);
        inst.replaces = replaces;
        match created {
            Ok(c) => {
                inst.handle = Some(c.handle);
                inst.endpoint = c.endpoint;
                let id2 = id.clone();
                self.store
                    .update_async(move |tx| {
                        tx.put_instance(&inst)?;
                        tx.clear_intent(&id2)
                    })
                    .await
                    .map_err(state)?;
                Ok(Some(id))
            }
            Err(e) => {
                let now = Timestamp::now();
                let reason = self.clean(server, &e.to_string());
                inst.transition(Status::Error, reason.clone(), now);
                let backoff = next_backoff(ctx.snapshot, server, &inst.spec_hash, &reason, now);
                let server = server.to_owned();
                self.store
                    .update_async(move |tx| {
                        tx.put_instance(&inst)?;
                        tx.put_backoff(&server, &backoff)?;
                        tx.clear_intent(&id)
                    })
                    .await
                    .map_err(state)?;
                Err(reason)
            }
        }
    }
}

impl<R> Exec<'_, R> {
    /// An engine's message made safe to store and print (see `model::text`).
    fn clean(&self, server: &str, text: &str) -> String {
        let secrets = self
            .target
            .server(server)
            .map(|(s, _)| self.target.secrets.values_of(s))
            .unwrap_or_default();
        crate::model::text::untrusted(text, &secrets)
    }
}

/// The pass's view of the world, for the actions it runs.
struct Ctx<'a> {
    snapshot: &'a Snapshot,
    obs: &'a Observation,
}

/// The back-off after one more failure of `server` running the spec `hash`.
/// Failures of another spec do not count: a fixed spec starts from the
/// first step, not from where its broken predecessor left off.
fn next_backoff(
    snapshot: &Snapshot,
    server: &str,
    hash: &SpecHash,
    reason: &str,
    now: Timestamp,
) -> Backoff {
    let failures = snapshot
        .backoff
        .get(server)
        .filter(|b| b.spec_hash.as_ref().is_none_or(|h| h == hash))
        .map_or(0, |b| b.failures)
        + 1;
    Backoff {
        spec_hash: Some(hash.clone()),
        failures,
        until: now.plus(backoff_delay(failures)),
        reason: reason.to_owned(),
    }
}
