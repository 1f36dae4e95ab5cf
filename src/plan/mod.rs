//! The planner: a pure function of (desired servers, snapshot, observation)
//! that returns the ordered actions of design §4, each with its reason.
//!
//! **Architecture invariant:** nothing here does I/O or reads the clock. The
//! caller passes `now` and the observation in; the same inputs always give the
//! same plan, byte for byte, in text and in JSON.

mod render;
mod saved;
#[cfg(test)]
mod tests;

pub use render::{
    MARKDOWN_BUDGET, MARKDOWN_MARKER, PlanJson, render_json, render_markdown, render_text,
    summary_line,
};
pub use saved::{Allowed, SavedPlan, differences};

use crate::model::{
    Instance, InstanceId, IntentOp, Observation, Probe, Runners, Snapshot, SpecHash, Status,
    Timestamp, Unit, UnitState, short_duration,
};
use crate::spec::{Canonical, SecretDigests, Server};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A server as the planner needs it: counts, hash and canonical text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub name: String,
    pub replicas: u32,
    pub canonical: Canonical,
    pub external: bool,
    pub readiness_timeout: Duration,
    /// How often a RUNNING instance's liveness is probed.
    pub liveness_period: Duration,
    /// How long a STARTING instance must stay up, with no restart, after its
    /// probe passes, before it is promoted.
    pub min_ready: Duration,
    /// Restarts while STARTING that make a crash loop.
    pub max_restarts: u32,
    /// The container port an HTTP server was told to listen on; `None` for
    /// stdio and external servers. Only probes use it, to say which port
    /// they tried.
    pub port: Option<u16>,
}

impl Desired {
    /// `runners` are the runner images package servers run on: they are
    /// part of what runs, so they are hashed with the rest.
    pub fn from_servers(
        servers: &[Server],
        digests: &SecretDigests,
        runners: &Runners,
    ) -> Vec<Desired> {
        servers
            .iter()
            .map(|s| Desired {
                name: s.name.clone(),
                replicas: s.spec.replicas,
                canonical: Canonical::of(&s.spec, digests, runners),
                external: s.spec.workload.is_external(),
                readiness_timeout: s.spec.readiness.timeout,
                liveness_period: s.spec.readiness.period,
                min_ready: s.spec.readiness.min_ready,
                max_restarts: s.spec.readiness.max_restarts,
                port: s
                    .spec
                    .port
                    .filter(|_| s.spec.transport.is_http() && !s.spec.workload.is_external()),
            })
            .collect()
    }

    /// Instances wanted. External servers have at most one: there is one URL.
    pub fn target(&self) -> usize {
        if self.external {
            self.replicas.min(1) as usize
        } else {
            self.replicas as usize
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    // The order here is the order of execution within a server: learn what
    // exists, settle statuses, clear space, then replace and add.
    Adopt,
    Promote,
    Demote,
    Fail,
    Remove,
    Replace,
    Start,
}

impl ActionKind {
    /// Every kind, in the order summaries list them (design §3's example).
    pub const ALL: [ActionKind; 7] = [
        ActionKind::Start,
        ActionKind::Replace,
        ActionKind::Remove,
        ActionKind::Promote,
        ActionKind::Demote,
        ActionKind::Fail,
        ActionKind::Adopt,
    ];

    /// What was done, for apply's summary.
    pub fn done(self) -> &'static str {
        match self {
            ActionKind::Adopt => "adopted",
            ActionKind::Promote => "promoted",
            ActionKind::Demote => "demoted",
            ActionKind::Fail => "marked failed",
            ActionKind::Remove => "removed",
            ActionKind::Replace => "replaced",
            ActionKind::Start => "started",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Adopt => "adopt",
            ActionKind::Promote => "promote",
            ActionKind::Demote => "demote",
            ActionKind::Fail => "fail",
            ActionKind::Remove => "remove",
            ActionKind::Replace => "replace",
            ActionKind::Start => "start",
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    #[serde(rename = "action")]
    pub kind: ActionKind,
    pub server: String,
    /// The instance acted on; `None` for a start, whose id is chosen by apply.
    pub instance: Option<InstanceId>,
    pub reason: String,
    /// For a replace: the unified diff of the canonical spec, when the old one is known.
    pub diff: Option<String>,
    /// `None` when a pass can carry the action out now. Otherwise what it
    /// waits for: a rolling replace spans passes (start the new instance,
    /// promote it, then remove the old one), and replaces go one at a time.
    #[serde(default)]
    pub waiting: Option<String>,
}

/// An ordered list of actions, how many servers need none, and when the
/// world next needs a look even if nothing announces a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Desired servers with no action.
    pub unchanged: usize,
    /// The earliest moment at which planning again could give another
    /// answer with nothing else changed: a back-off expiring, a STARTING
    /// instance's readiness deadline or stability window. Not a RUNNING
    /// instance's liveness check: the prober keeps that timer, and only a
    /// result that changes something brings a pass. A reconciler sleeps
    /// until then, or until a runtime event.
    pub requeue_at: Option<Timestamp>,
    /// Servers left exactly as they are because they are suspended, with or
    /// without drift.
    pub suspended: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// The actions a pass carries out now.
    pub fn runnable(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter().filter(|a| a.waiting.is_none())
    }

    pub fn count(&self, kind: ActionKind) -> usize {
        self.actions.iter().filter(|a| a.kind == kind).count()
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanError {
    /// Safety rule: a source that yields nothing must not delete the fleet.
    #[error(
        "the source has no servers, but the state or the runtime has {known} ({names}); refusing to remove them all"
    )]
    #[diagnostic(help(
        "check the path or git ref; if you really mean to remove every server, pass --allow-empty"
    ))]
    EmptySource { known: usize, names: String },
}

/// Everything the planner reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub desired: &'a [Desired],
    pub snapshot: &'a Snapshot,
    /// `None` plans from the snapshot alone (`--refresh=false`): recorded
    /// statuses are taken as true and no status changes are planned.
    pub observation: Option<&'a Observation>,
    pub now: Timestamp,
    pub allow_empty: bool,
}

/// Back-off before replacing failed instances: 10 s doubling to 5 min,
/// like a kubelet's CrashLoopBackOff.
pub const CRASH_BACKOFF: crate::model::Doubling =
    crate::model::Doubling::new(Duration::from_secs(10), Duration::from_secs(300));

/// The back-off after `failures` crashes in a row.
pub fn backoff_delay(failures: u32) -> Duration {
    CRASH_BACKOFF.after(failures)
}

/// Replacements in flight at once per server. One keeps a rolling replace
/// gentle (a new instance must prove itself before the next starts), like a
/// Deployment's `maxSurge: 1, maxUnavailable: 0`.
pub const MAX_SURGE: usize = 1;

/// An instance as it will be once this plan's status actions are applied.
struct Live<'a> {
    id: &'a InstanceId,
    status: Status,
    created_at: Timestamp,
    /// When `status` began (now, for a status this plan changes).
    since: Timestamp,
    hash: &'a SpecHash,
    /// The outdated instance this one was started to replace.
    replaces: Option<&'a InstanceId>,
    /// For a STARTING instance that answered: when its stability window ends.
    stable_at: Option<Timestamp>,
}

pub fn plan(input: Inputs<'_>) -> Result<Plan, PlanError> {
    let Inputs {
        desired,
        snapshot,
        observation,
        now,
        allow_empty,
    } = input;
    if desired.is_empty() && !allow_empty {
        let mut known: Vec<&str> = snapshot.servers.keys().map(String::as_str).collect();
        known.extend(snapshot.instances.values().map(|i| i.server.as_str()));
        // A fresh state knows nothing, but what runs is the truth: an empty
        // source must not prune a fleet only because the state was lost.
        if let Some(obs) = observation {
            known.extend(obs.units.values().map(|u| u.server.as_str()));
        }
        known.sort_unstable();
        known.dedup();
        if !known.is_empty() {
            let names = summarize_names(&known);
            return Err(PlanError::EmptySource {
                known: known.len(),
                names,
            });
        }
    }

    let wanted: BTreeMap<&str, &Desired> = desired.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut actions: Vec<Action> = Vec::new();
    let mut live: BTreeMap<&str, Vec<Live<'_>>> = BTreeMap::new();
    let mut failed_now: BTreeMap<&str, bool> = BTreeMap::new();

    let suspended = |server: &str| snapshot.suspended.contains_key(server);
    for inst in snapshot.instances.values() {
        if suspended(&inst.server) {
            // Left exactly as it is, status and all, until resumed.
            continue;
        }
        let Some(d) = wanted.get(inst.server.as_str()) else {
            actions.push(act(
                ActionKind::Remove,
                &inst.server,
                Some(&inst.id),
                format!("server {} removed from source", inst.server),
            ));
            continue;
        };
        if snapshot
            .intents
            .get(&inst.id)
            .is_some_and(|i| i.op == IntentOp::Remove)
        {
            // A removal was under way when an apply died; removal is idempotent, so finish it.
            actions.push(act(
                ActionKind::Remove,
                &inst.server,
                Some(&inst.id),
                "finish interrupted removal".into(),
            ));
            continue;
        }
        let mut status = inst.status;
        let mut since = inst.transitioned_at;
        if let Some(obs) = observation
            && let Some((kind, reason)) = transition(inst, d, obs, now)
        {
            status = match kind {
                ActionKind::Promote => Status::Running,
                ActionKind::Demote => Status::Starting,
                _ => {
                    // A crash of an outdated spec holds nothing back: the
                    // spec that replaces it has not failed yet.
                    if is_crash(d.external, obs.units.get(&inst.id))
                        && inst.spec_hash == d.canonical.hash
                    {
                        failed_now.insert(d.name.as_str(), true);
                    }
                    Status::Error
                }
            };
            since = now;
            actions.push(act(kind, &inst.server, Some(&inst.id), reason));
        }
        let stable_at = observation.and_then(|obs| {
            let answered = matches!(obs.probes.get(&inst.id), Some(Probe::Ready(_)));
            let unit = obs.units.get(&inst.id)?;
            (status == Status::Starting && answered && unit.state == UnitState::Running)
                .then(|| unit.started_at.map(|at| at.plus(d.min_ready)))?
        });
        live.entry(d.name.as_str()).or_default().push(Live {
            id: &inst.id,
            status,
            created_at: inst.created_at,
            since,
            hash: &inst.spec_hash,
            replaces: inst.replaces.as_ref(),
            stable_at,
        });
    }

    // Labelled units the snapshot does not know. What runs is the truth and
    // the state a cache: a running unit of a wanted server is adopted (then
    // probed and promoted like any STARTING instance, or rolled like any
    // outdated one), whether an interrupted apply made it or the state that
    // knew it was lost. Only units of servers the source no longer has, and
    // units that do not run, are removed.
    if let Some(obs) = observation {
        for unit in obs.units.values() {
            if snapshot.instances.contains_key(&unit.instance) || suspended(&unit.server) {
                continue;
            }
            let intent = snapshot.intents.get(&unit.instance).filter(|i| {
                i.op == IntentOp::Create && i.server == unit.server && i.spec_hash == unit.spec_hash
            });
            match wanted.get(unit.server.as_str()) {
                Some(d) if adoptable(unit) => {
                    let why = if intent.is_some() {
                        "created by an interrupted apply"
                    } else if unit.spec_hash == d.canonical.hash {
                        "found running, not in the state"
                    } else {
                        "found running an older spec, not in the state"
                    };
                    actions.push(act(
                        ActionKind::Adopt,
                        &unit.server,
                        Some(&unit.instance),
                        why.into(),
                    ));
                    live.entry(d.name.as_str()).or_default().push(Live {
                        id: &unit.instance,
                        status: Status::Starting,
                        // When it started is the best age we have for it,
                        // and a scale-down removes the oldest first.
                        created_at: unit.started_at.unwrap_or(now),
                        since: now,
                        hash: &unit.spec_hash,
                        replaces: intent.and_then(|i| i.replaces.as_ref()),
                        stable_at: None,
                    });
                }
                Some(_) => {
                    let why = match intent {
                        Some(_) if unit.state == UnitState::Created => {
                            "left by an interrupted apply, never started"
                        }
                        Some(_) => "left by an interrupted apply, not running",
                        None => "not in the state and not running",
                    };
                    actions.push(act(
                        ActionKind::Remove,
                        &unit.server,
                        Some(&unit.instance),
                        format!("{why} ({})", unit.state.describe()),
                    ));
                }
                None => {
                    let why = match intent {
                        Some(_) => "left by an interrupted apply, not needed".to_owned(),
                        None => format!("server {} not in the source", unit.server),
                    };
                    actions.push(act(
                        ActionKind::Remove,
                        &unit.server,
                        Some(&unit.instance),
                        format!("{why} ({})", unit.state.describe()),
                    ));
                }
            }
        }
    }

    let mut requeue: Option<Timestamp> = None;
    for d in desired.iter().filter(|d| !suspended(&d.name)) {
        let mut insts = live.remove(d.name.as_str()).unwrap_or_default();
        let waits_for_backoff = plan_server(
            d,
            &mut insts,
            snapshot,
            now,
            failed_now.contains_key(d.name.as_str()),
            &mut actions,
        );
        // When this server next needs a look even if nothing happens.
        let mut due = |t: Timestamp| requeue = Some(requeue.map_or(t, |r| r.min(t)));
        if waits_for_backoff
            && let Some(b) = snapshot.backoff.get(&d.name)
            && b.holds(&d.canonical.hash, now)
        {
            due(b.until);
        }
        for l in &insts {
            if let Some(at) = l.stable_at {
                due(at);
            }
            // Just past the deadline, where `transition` sees the timeout.
            if l.status == Status::Starting {
                due(l
                    .since
                    .plus(d.readiness_timeout)
                    .plus(Duration::from_millis(1)));
            }
        }
    }

    actions.sort_by(|a, b| {
        (a.server.as_str(), a.kind, a.instance.as_ref()).cmp(&(
            b.server.as_str(),
            b.kind,
            b.instance.as_ref(),
        ))
    });
    let touched: std::collections::BTreeSet<&str> =
        actions.iter().map(|a| a.server.as_str()).collect();
    let unchanged = desired
        .iter()
        .filter(|d| !touched.contains(d.name.as_str()) && !suspended(&d.name))
        .count();
    Ok(Plan {
        actions,
        unchanged,
        requeue_at: requeue,
        suspended: snapshot.suspended.keys().cloned().collect(),
    })
}

/// Count rules for one server: clean up failures, finish rolling replaces
/// whose new instance is RUNNING, trim surplus, replace outdated instances,
/// start missing ones. Returns whether something waits for the back-off.
fn plan_server(
    d: &Desired,
    insts: &mut Vec<Live<'_>>,
    snapshot: &Snapshot,
    now: Timestamp,
    failed_now: bool,
    actions: &mut Vec<Action>,
) -> bool {
    let name = d.name.as_str();
    let target = d.target();
    let backoff = snapshot
        .backoff
        .get(name)
        .filter(|b| b.holds(&d.canonical.hash, now));
    // A failure seen in this very pass starts a back-off that apply records.
    let waiting = failed_now || backoff.is_some();
    let backoff_text = || match backoff {
        Some(b) => format!("back-off {}", short_duration(b.until.since(now))),
        None => "back-off".to_owned(),
    };
    let mut waits_for_backoff = false;

    let mut cleaned_up = 0;
    for e in insts.iter().filter(|l| l.status == Status::Error) {
        if !waiting || target == 0 {
            actions.push(act(
                ActionKind::Remove,
                name,
                Some(e.id),
                "clean up failed instance".into(),
            ));
            cleaned_up += 1;
        } else {
            waits_for_backoff = true;
        }
    }
    insts.retain(|l| l.status != Status::Error);

    // Rolling replaces in flight: a new instance started for an outdated one.
    let current = |l: &Live<'_>| l.hash == &d.canonical.hash;
    let mut partner: BTreeMap<&InstanceId, (&InstanceId, Status)> = BTreeMap::new();
    for n in insts.iter().filter(|l| current(l)) {
        let Some(old) = n.replaces else { continue };
        let pairs = insts.iter().any(|o| o.id == old && !current(o));
        if pairs && !partner.contains_key(old) {
            partner.insert(old, (n.id, n.status));
        }
    }
    // The new one is RUNNING: the old one goes, and RUNNING never drops.
    let mut finished: Vec<&InstanceId> = Vec::new();
    for (old, (new, status)) in &partner {
        if *status == Status::Running {
            actions.push(act(
                ActionKind::Remove,
                name,
                Some(old),
                format!("replaced by {new}"),
            ));
            finished.push(old);
        }
    }
    partner.retain(|_, (_, status)| *status != Status::Running);
    insts.retain(|l| !finished.contains(&l.id));

    // Slots: an instance, or an outdated one and the replacement starting for it.
    let in_flight: Vec<&InstanceId> = partner.values().map(|(new, _)| *new).collect();
    let mut slots: Vec<&Live<'_>> = insts
        .iter()
        .filter(|l| !in_flight.contains(&l.id))
        .collect();

    if slots.len() > target {
        // Outdated first, then not-yet-ready, then oldest: the cheapest to lose.
        slots.sort_by(|a, b| {
            let key = |l: &Live<'_>| {
                (
                    current(l),
                    l.status == Status::Running,
                    l.created_at,
                    l.id.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        let before = slots.len();
        let surplus = before - target;
        for l in slots.drain(..surplus) {
            let reason = format!("scale down {before} -> {target}");
            if let Some((new, _)) = partner.remove(l.id) {
                actions.push(act(ActionKind::Remove, name, Some(new), reason.clone()));
            }
            actions.push(act(ActionKind::Remove, name, Some(l.id), reason));
        }
    }

    let applied = snapshot.servers.get(name);
    let mut outdated: Vec<&&Live<'_>> = slots.iter().filter(|l| !current(l)).collect();
    outdated.sort_by_key(|l| (l.created_at, l.id));
    let mut surging = partner.len();
    for l in outdated {
        let (reason, diff) = match applied.and_then(|a| a.canonical_of(l.hash)) {
            Some(old) => (
                "spec changed".to_owned(),
                Some(unified_diff(name, old, &d.canonical.yaml)),
            ),
            None => (
                format!("spec hash {} -> {}", l.hash, d.canonical.hash),
                None,
            ),
        };
        let waiting_for = if let Some((new, _)) = partner.get(l.id) {
            Some(format!("new instance {new} is starting"))
        } else if waiting {
            waits_for_backoff = true;
            Some(backoff_text())
        } else if surging < MAX_SURGE {
            surging += 1;
            None
        } else {
            Some("queued: one replace at a time".to_owned())
        };
        actions.push(Action {
            kind: ActionKind::Replace,
            server: name.to_owned(),
            instance: Some(l.id.clone()),
            reason,
            diff,
            waiting: waiting_for,
        });
    }

    let missing = target.saturating_sub(slots.len());
    if missing == 0 {
        return waits_for_backoff;
    }
    if waiting {
        // No action: the start waits for the back-off, and `get` shows it.
        return true;
    }
    let reason = if applied.is_none() && insts.is_empty() {
        "new server".to_owned()
    } else if cleaned_up > 0 {
        "replace failed instance".to_owned()
    } else {
        format!("scale up {} -> {}", slots.len(), target)
    };
    for _ in 0..missing {
        actions.push(act(ActionKind::Start, name, None, reason.clone()));
    }
    waits_for_backoff
}

/// The status change that the observation implies for one instance, if any.
fn transition(
    inst: &Instance,
    d: &Desired,
    obs: &Observation,
    now: Timestamp,
) -> Option<(ActionKind, String)> {
    use ActionKind::{Demote, Fail, Promote};
    if inst.status == Status::Error {
        return None;
    }
    let probe = obs.probes.get(&inst.id);
    let timed_out =
        inst.status == Status::Starting && now.since(inst.transitioned_at) > d.readiness_timeout;
    let not_ready = |cause: String| {
        (
            Fail,
            format!(
                "not ready after {}: {cause}",
                short_duration(d.readiness_timeout)
            ),
        )
    };

    if d.external {
        return match (inst.status, probe) {
            (Status::Starting, Some(Probe::Ready(how))) => Some((Promote, format!("ready: {how}"))),
            (Status::Running, Some(Probe::NotReady(why))) => liveness_lost(inst, why),
            (Status::Starting, p) if timed_out => Some(not_ready(probe_cause(p))),
            _ => None,
        };
    }

    let Some(unit) = obs.units.get(&inst.id) else {
        return Some((Fail, "container not found".into()));
    };
    let restarted = unit.restarts.is_some_and(|r| r > inst.restarts);
    let since_start = unit
        .restarts
        .map_or(0, |r| r.saturating_sub(inst.restarts_at_start));
    match (inst.status, unit.state) {
        (_, UnitState::Exited(_) | UnitState::Dead) => {
            Some((Fail, format!("{}{}", unit.state.describe(), last_log(unit))))
        }
        (Status::Running, UnitState::Restarting) => Some((Demote, restarting(unit, inst))),
        (Status::Running, _) if restarted => Some((Demote, restarting(unit, inst))),
        (Status::Running, _) => match probe {
            Some(Probe::NotReady(why)) => liveness_lost(inst, why),
            _ => None,
        },
        // Restarting again and again before it was ever stable: waiting out
        // the readiness timeout would only watch it crash.
        (Status::Starting, _) if since_start >= d.max_restarts => {
            Some((Fail, crash_loop(unit, inst)))
        }
        (Status::Starting, UnitState::Running) if matches!(probe, Some(Probe::Ready(_))) => {
            let Some(Probe::Ready(how)) = probe else {
                return None;
            };
            // It answers; it must also stay up for the stability window.
            let stable = unit
                .started_at
                .is_some_and(|at| now.since(at) >= d.min_ready);
            if stable {
                Some((Promote, format!("ready: {how}")))
            } else if timed_out {
                Some(not_ready(format!(
                    "answered but not up for {} without a restart",
                    short_duration(d.min_ready)
                )))
            } else {
                None
            }
        }
        // A crash loop under the runtime's restart policy: the crash says more than the probe.
        (Status::Starting, UnitState::Restarting) if timed_out => {
            Some(not_ready(restarting(unit, inst)))
        }
        (Status::Starting, _) if timed_out && since_start > 0 => {
            Some(not_ready(restarting(unit, inst)))
        }
        (Status::Starting, UnitState::Created) if timed_out => {
            // A runtime that knows why (a scheduler's reason) says so in the last line.
            Some(not_ready(format!(
                "container created but never started{}",
                last_log(unit)
            )))
        }
        (Status::Starting, _) if timed_out => Some(not_ready(probe_cause(probe))),
        _ => None,
    }
}

/// Failed liveness probes in a row that demote a RUNNING instance: one
/// slow answer is noise, three are an outage.
pub const LIVENESS_THRESHOLD: u32 = 3;

/// A failed liveness probe demotes only when it completes a run of
/// [`LIVENESS_THRESHOLD`]; apply counts the ones before it.
fn liveness_lost(inst: &Instance, why: &str) -> Option<(ActionKind, String)> {
    let failures = inst.liveness.failures + 1;
    (failures >= LIVENESS_THRESHOLD).then(|| {
        (
            ActionKind::Demote,
            format!("liveness probe failed {failures} times in a row: {why}"),
        )
    })
}

fn probe_cause(p: Option<&Probe>) -> String {
    match p {
        Some(Probe::NotReady(why)) => why.clone(),
        Some(Probe::Ready(_)) => "probe passed too late".into(),
        None => "no probe result yet".into(),
    }
}

/// `crash loop: exit 3, 4 restarts: <last log line>`.
fn crash_loop(unit: &Unit, inst: &Instance) -> String {
    let exit = unit
        .exit_code
        .map(|c| format!("exit {c}, "))
        .unwrap_or_default();
    format!(
        "crash loop: {exit}{} restarts{}",
        unit.restarts.unwrap_or(inst.restarts),
        last_log(unit)
    )
}

/// `restarting (exit 3, restarts 4): <last log line>`: why a STARTING
/// instance is not ready yet, or why a RUNNING one was demoted.
pub fn restarting(unit: &Unit, inst: &Instance) -> String {
    let exit = unit
        .exit_code
        .map(|c| format!("exit {c}, "))
        .unwrap_or_default();
    format!(
        "restarting ({exit}restarts {}){}",
        unit.restarts.unwrap_or(inst.restarts),
        last_log(unit)
    )
}

fn last_log(unit: &Unit) -> String {
    match &unit.last_log {
        Some(l) if !l.trim().is_empty() => format!(": {}", l.trim()),
        _ => String::new(),
    }
}

/// Whether the failure of an instance whose unit is `unit` (as observed)
/// was its own doing, and so starts its server's back-off. A container
/// that is gone, or that was stopped (our runtimes restart whatever exits
/// on its own, so a stopped unit is one somebody stopped: `docker stop`, the
/// kill half of `docker rm -f`), is replaced at once. An external server
/// that stopped answering, a readiness timeout, a crash loop and a dead
/// unit are the server's own failures.
pub fn is_crash(external: bool, unit: Option<&Unit>) -> bool {
    external || unit.is_some_and(|u| !matches!(u.state, UnitState::Exited(_)))
}

/// A unit the state does not know is worth keeping only if it runs. One
/// left created but never started (an apply died between the runtime's
/// create and start) would wait for a start nobody will make, and one that
/// exited was stopped by someone: each is removed, and the count rules
/// start a fresh one.
fn adoptable(unit: &Unit) -> bool {
    matches!(unit.state, UnitState::Running | UnitState::Restarting)
}

fn act(kind: ActionKind, server: &str, instance: Option<&InstanceId>, reason: String) -> Action {
    Action {
        kind,
        server: server.to_owned(),
        instance: instance.cloned(),
        reason,
        diff: None,
        waiting: None,
    }
}

fn summarize_names(names: &[&str]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", and {} more", names.len() - SHOWN));
    }
    s
}

/// The unified diff between two canonical specs, three lines of context.
pub fn unified_diff(server: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{server} (applied)"),
            &format!("{server} (desired)"),
        )
        .to_string()
}
