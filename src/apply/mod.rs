//! Applying: the reconcile pass and the loop that runs it until the world
//! matches the source. `apply` runs it until converged (or once, with
//! `--no-wait`); `watch` will run it on triggers. There is one code path.
//!
//! **A pass** is: observe (one list call, detail only for units whose
//! status is in question) → plan → hand each server's runnable actions to
//! a task → record. It never waits for readiness, pulls or probes: those
//! run beside it, and their completion (like a runtime event, or the
//! moment the plan asked to be looked at again) triggers the next pass. A
//! server whose actions are still in flight sits a pass out, so one slow
//! server never delays the repair of another.
//!
//! **Rolling replace** spans passes: a pass starts the new instance; a later
//! pass promotes it once its probe passes, and removes the old one in the
//! same breath. A server never has fewer RUNNING instances than before.
//!
//! **Errors** are kept per pass: a refresh that cannot reach the runtime is
//! reported and retried with back-off; a failed action is recorded on the
//! action, and its server is retried with back-off. Neither ends the run.
//! Only a state file that cannot be read, or a plan the safety rules
//! refuse, does.

mod create;
mod exec;
pub mod lease;
mod observe;
mod probes;

pub use observe::{observe, refresh, sanitize};
pub use probes::{ATTEMPT_TIMEOUT, ProbeHeaders, probe_headers};

use crate::model::{
    AppliedSpec, Doubling, HistoryEntry, Instance, InstanceId, IntentOp, Liveness, Observation,
    PreviousSpec, Probe, Snapshot, Status, Timestamp, Watched,
};
use crate::plan::{self, Action, Desired, Inputs, Plan};
use crate::runtime::{Runtime, RuntimeError};
use crate::secrets::Secrets;
use crate::source::SourceInfo;
use crate::spec::Server;
use crate::state::{StateError, Store};
use exec::{Exec, ServerDone, ServerWork};
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use probes::Prober;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The scope's key for secret digests: the operator's when given (it wins,
/// and the runtime is not asked), else the one the runtime holds for the
/// scope, seeded with the state file's cached key so that a fleet applied
/// before the runtime held one keeps its hashes; else, with no runtime at
/// hand (`plan --refresh=false`), the cached key. The cache follows the
/// runtime's.
///
/// Only an applier (`store`) writes: a `plan` or a dry run reads the
/// runtime's key and falls back on the cached one, or on a key of its own
/// for this run when there is neither (nothing was ever applied with a
/// secret then, so no hash can differ for it), so it needs no rights to
/// write anything, the state file included.
pub async fn digest_key<R: Runtime + Sync>(
    rt: Option<&R>,
    state: &Store,
    operator: Option<[u8; 32]>,
    store: bool,
) -> Result<[u8; 32], ApplyError> {
    if let Some(key) = operator {
        return Ok(key);
    }
    if !store {
        if let Some(rt) = rt
            && let Some(key) = rt.digest_key(None).await?
        {
            return Ok(key);
        }
        return Ok(match state.cached_digest_key_async().await? {
            Some(key) => key,
            None => {
                let mut key = [0u8; 32];
                // Used for this run only; a failed random source changes nothing stored.
                let _ = getrandom::fill(&mut key);
                key
            }
        });
    }
    let cached = state.digest_key_async().await?;
    let Some(rt) = rt else {
        return Ok(cached);
    };
    let Some(key) = rt.digest_key(Some(cached)).await? else {
        return Ok(cached);
    };
    if key != cached {
        state.set_digest_key_async(key).await?;
    }
    Ok(key)
}

/// What the passes drive toward: the servers of one source revision, with
/// their secrets resolved and their desired form. It changes only when the
/// source does.
pub struct Target {
    pub servers: Vec<Server>,
    pub secrets: Secrets,
    pub desired: Vec<Desired>,
    pub source: SourceInfo,
}

impl Target {
    pub(crate) fn server(&self, name: &str) -> Option<(&Server, &Desired)> {
        let s = self.servers.iter().find(|s| s.name == name)?;
        let d = self.desired.iter().find(|d| d.name == name)?;
        Some((s, d))
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Runtime calls in flight at once.
    pub parallelism: usize,
    /// Keep going until converged (or the timeout).
    pub wait: bool,
    pub timeout: Duration,
    pub allow_empty: bool,
    /// The command, for the history.
    pub command: String,
    /// Carry out only what a saved plan listed (and status changes): see
    /// [`plan::Allowed`]. `None` carries out whatever each pass plans.
    pub only: Option<plan::Allowed>,
    /// Plan on every pass, act on none, and write nothing: drift detection.
    pub dry_run: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parallelism: 8,
            wait: true,
            timeout: Duration::from_secs(300),
            allow_empty: false,
            command: "apply".into(),
            only: None,
            dry_run: false,
        }
    }
}

/// Something that happened during an apply, for progress displays.
#[derive(Debug, Clone)]
pub enum Event {
    /// A pass handed out this many actions. A server whose earlier actions
    /// are still in flight waits for a later pass, so its actions count there.
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
    /// Something failed and is tried again after a pause.
    Retrying {
        what: String,
        error: String,
        after: Duration,
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
    /// Passes that failed before planning, oldest first.
    pub errors: Vec<String>,
    /// What the last pass would have done but a saved plan did not list.
    pub held_back: Vec<Action>,
    /// The run ended because `timeout` passed.
    pub timed_out: bool,
}

/// What the last pass found, for a reconciler's health and metrics.
#[derive(Debug, Clone, Default)]
pub struct PassSummary {
    /// Passes so far.
    pub pass: usize,
    /// The plan's actions, runnable or waiting: the drift from the source.
    pub actions: Vec<Action>,
    /// The actions this pass handed out: what it did, as against what it
    /// found (a server's actions wait while its earlier ones are in flight
    /// or its retry rests, and are handed out by a later pass).
    pub handed_out: Vec<Action>,
    /// Per server: (RUNNING with the wanted spec, wanted), suspended ones
    /// left out, at the start of the pass.
    pub servers: BTreeMap<String, (usize, usize)>,
    /// Instances per status, at the start of the pass.
    pub statuses: BTreeMap<Status, usize>,
    pub plan_time: Duration,
    pub converged: bool,
    /// Why the pass could not plan (the runtime did not answer), if it could not.
    pub error: Option<String>,
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

/// A plan already made, with the snapshot and observation it was made
/// from, so the first pass does not observe the world a second time.
pub struct First {
    pub plan: Plan,
    pub snapshot: Snapshot,
    pub observation: Observation,
}

/// Applies `first` (or a fresh plan when `None`), then, with `wait`, keeps
/// passing until converged or `timeout`.
pub async fn apply<R: Runtime + Sync>(
    rt: &R,
    store: &Store,
    target: Arc<Target>,
    first: Option<First>,
    opts: &Options,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Report, ApplyError> {
    // The report is built from the events, as any other watcher of the run
    // would build it: the applier itself keeps nothing that grows with time,
    // so `watch`, which runs it for weeks, needs no report at all.
    let done: std::sync::Mutex<Vec<Done>> = std::sync::Mutex::default();
    let errors: std::sync::Mutex<Vec<String>> = std::sync::Mutex::default();
    let record = |e: Event| {
        match &e {
            Event::Finished {
                action,
                instance,
                error,
                elapsed,
            } => done.lock().unwrap_or_else(|p| p.into_inner()).push(Done {
                action: action.clone(),
                created: instance.clone(),
                error: error.clone(),
                elapsed_ms: elapsed.as_millis() as u64,
            }),
            Event::Retrying { what, error, .. } if what == REFRESH => errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(error.clone()),
            _ => {}
        }
        on_event(e);
    };
    let target_for_history = target.clone();
    let mut applier = Applier::new(rt, store, target, opts.clone(), &record);
    let ran = applier.run(first).await?;
    drop(applier);
    let report = Report {
        actions: done.into_inner().unwrap_or_else(|p| p.into_inner()),
        passes: ran.passes,
        converged: ran.converged,
        elapsed: ran.elapsed,
        servers: ran.servers,
        errors: errors.into_inner().unwrap_or_else(|p| p.into_inner()),
        held_back: ran.held_back,
        timed_out: ran.timed_out,
    };
    record_history(store, &target_for_history, opts, &report, report.converged).await?;
    Ok(report)
}

/// What `Event::Retrying` names a failed pass.
const REFRESH: &str = "refresh";

/// How a run of passes ended, for `apply`'s report.
#[derive(Debug, Clone, Default)]
pub struct Ran {
    pub passes: usize,
    pub converged: bool,
    pub timed_out: bool,
    pub elapsed: Duration,
    /// Per server: (RUNNING, wanted), at the end.
    pub servers: BTreeMap<String, (usize, usize)>,
    /// What the last pass would have done but a saved plan did not list.
    pub held_back: Vec<Action>,
}

/// A burst of runtime events has ended once none came for this long...
const EVENTS_QUIET: Duration = Duration::from_millis(50);
/// ...or, at the latest, this long after it began.
const EVENTS_SETTLE_MAX: Duration = Duration::from_millis(300);
/// How long one observation may take before the pass counts as failed.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest pause between two passes that only a requeue asked for.
const MIN_REQUEUE: Duration = Duration::from_millis(250);
/// Retries of a failed pass or a failed server: 1 s doubling to 30 s. The
/// same schedule serves every fault a long-running caller waits out.
pub const RETRY: Doubling = Doubling::new(Duration::from_secs(1), Duration::from_secs(30));

fn retry_after(failures: u32) -> Duration {
    RETRY.after(failures)
}

/// Failures in a row of a server's actions or of a pass, and when to try
/// again. **Invariant:** `due` is in the past only until the next pass,
/// which takes it up (sets it to `None`, keeping the count for the next
/// pause), so no wake time is ever in the past twice.
#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    due: Option<Timestamp>,
}

impl Retry {
    fn resting(&self, now: Timestamp) -> bool {
        self.due.is_some_and(|at| at > now)
    }
}

/// What finished beside the passes.
enum Work {
    Probed {
        id: InstanceId,
        at: Timestamp,
        result: probes::Result,
    },
    Server(ServerDone),
}

type WorkFuture<'a> = Pin<Box<dyn Future<Output = Work> + Send + 'a>>;
type Events<'a> = Pin<
    Box<dyn futures_core::Stream<Item = Result<crate::model::Watched, RuntimeError>> + Send + 'a>,
>;

/// Why the loop woke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Work,
    Event,
    Timer,
    Deadline,
}

/// Passes, and what runs beside them. See the module documentation.
pub struct Applier<'a, R> {
    rt: &'a R,
    store: &'a Store,
    target: Arc<Target>,
    opts: Options,
    on_event: &'a (dyn Fn(Event) + Sync),
    sem: Arc<Semaphore>,
    work: FuturesUnordered<WorkFuture<'a>>,
    /// Work that finished while the current pass waited (see [`beside`]);
    /// empty between passes.
    finished: Vec<Work>,
    events: Option<Events<'a>>,
    /// Whether events were asked for: a stream that ended against the
    /// contract is opened again by the next pass.
    wants_events: bool,
    /// Why the events stream is broken, until it says it is back.
    events_broken: Option<String>,
    prober: Prober,
    /// One attach per stdio instance, for its checks (and, in `watch
    /// --gateway`, the gateway's clients).
    bridges: crate::bridge::Bridges,
    /// Handshakes in flight at once: a cold start of a hundred instances
    /// must not attach to all of them at the same moment.
    probe_sem: Arc<Semaphore>,
    /// What the last pass saw, for starting probe retries between passes.
    seen: Option<(Arc<Snapshot>, Arc<Observation>, bool)>,
    /// Servers with work in flight: actions, or records of what a look
    /// found (probe results, restart counts). They sit passes out.
    busy: BTreeSet<String>,
    /// Those of `busy` whose work includes actions. Records alone do not
    /// keep a run from being converged: with looks slower than the liveness
    /// period, some record is always in flight, and a run that waited for
    /// none would never end.
    acting: BTreeSet<String>,
    /// Servers whose last actions failed.
    retry: BTreeMap<String, Retry>,
    /// A pass that failed before planning.
    pass_retry: Option<Retry>,
    /// The last plan's wish to be looked at again.
    requeue_at: Option<Timestamp>,
    converged: bool,
    /// Servers with an instance that failed during this run.
    failed: BTreeSet<String>,
    /// Every server short of RUNNING replicas failed during this run and
    /// now waits out a back-off: waiting longer would only watch the clock.
    stuck: bool,
    /// With a saved plan: nothing it permits is left to do or to wait for.
    done_with_plan: bool,
    started: Instant,
    passes: usize,
    /// What the last pass would have done but a saved plan did not list.
    held_back: Vec<Action>,
    last: PassSummary,
}

impl<'a, R: Runtime + Sync> Applier<'a, R> {
    pub fn new(
        rt: &'a R,
        store: &'a Store,
        target: Arc<Target>,
        opts: Options,
        on_event: &'a (dyn Fn(Event) + Sync),
    ) -> Self {
        let sem = Arc::new(Semaphore::new(opts.parallelism.max(1)));
        Applier {
            rt,
            store,
            target,
            opts,
            on_event,
            sem,
            work: FuturesUnordered::new(),
            finished: Vec::new(),
            events: None,
            wants_events: false,
            events_broken: None,
            prober: Prober::default(),
            bridges: crate::bridge::Bridges::default(),
            probe_sem: Arc::new(Semaphore::new(observe::PROBES_IN_FLIGHT)),
            seen: None,
            busy: BTreeSet::new(),
            acting: BTreeSet::new(),
            retry: BTreeMap::new(),
            pass_retry: None,
            requeue_at: None,
            converged: false,
            failed: BTreeSet::new(),
            stuck: false,
            done_with_plan: false,
            started: Instant::now(),
            passes: 0,
            held_back: Vec::new(),
            last: PassSummary::default(),
        }
    }

    /// Checks stdio instances over `bridges`, shared with whoever else
    /// holds a clone (the gateway), instead of bridges of its own.
    pub fn share_bridges(&mut self, bridges: crate::bridge::Bridges) {
        self.bridges = bridges;
    }

    /// Drives toward `target` from the next pass on: a new source revision.
    /// Work in flight for the old one finishes; the next pass plans anew.
    pub fn set_target(&mut self, target: Arc<Target>) {
        // A retry, like a back-off, belongs to the spec that failed: a
        // server whose spec changed is tried at once.
        let old = &self.target;
        // Servers gone from the source are forgotten, so a week of renames
        // leaves nothing behind.
        self.failed
            .retain(|server| target.desired.iter().any(|d| &d.name == server));
        self.retry.retain(|server, _| {
            let hash = |t: &Target| {
                t.desired
                    .iter()
                    .find(|d| &d.name == server)
                    .map(|d| d.canonical.hash.clone())
            };
            hash(old) == hash(&target)
        });
        self.target = target;
        self.converged = false;
    }

    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// What the last pass found.
    pub fn last_pass(&self) -> &PassSummary {
        &self.last
    }

    /// The state as the last pass that planned read it: the records of
    /// all the work that had finished before it.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.seen.as_ref().map(|(snapshot, _, _)| &**snapshot)
    }

    /// What the runtime showed the last pass that planned.
    pub fn observation(&self) -> Option<&Observation> {
        self.seen.as_ref().map(|(_, obs, _)| &**obs)
    }

    /// Holds the runtime's events open, so that a change wakes
    /// `next_trigger`. Call it before the first pass, so that nothing the
    /// pass causes is missed.
    pub fn subscribe(&mut self) {
        self.wants_events = true;
        if self.events.is_none() {
            self.events = Some(Box::pin(self.rt.events()));
        }
    }

    /// Why the runtime's events stream is broken, while it is: changes are
    /// then seen only by the passes that timers bring.
    pub fn events_broken(&self) -> Option<&str> {
        self.events_broken.as_deref()
    }

    /// Whether actions are in flight.
    pub fn busy(&self) -> bool {
        !self.busy.is_empty()
    }

    /// Waits for the actions in flight to finish (probes are dropped): a
    /// clean end leaves the next run nothing to clean up.
    pub async fn drain(&mut self) {
        // Work that finished during a pass that was cut short (a shutdown).
        for w in std::mem::take(&mut self.finished) {
            self.absorb(w);
        }
        while !self.busy.is_empty() {
            match self.work.next().await {
                Some(w) => self.absorb(w),
                None => break,
            }
        }
    }

    /// Runs passes until converged (with `wait`) or until the first pass's
    /// actions are done (without), or until the timeout. In-flight actions
    /// are always let finish; in-flight probes are dropped.
    pub async fn run(&mut self, first: Option<First>) -> Result<Ran, ApplyError> {
        self.started = Instant::now();
        let mut timed_out = false;
        let deadline = tokio::time::Instant::now() + self.opts.timeout;
        if self.opts.wait {
            self.subscribe();
        }
        self.start(first.as_ref().map(|f| &f.observation)).await?;
        self.pass(first).await?;
        loop {
            let done = if self.opts.wait {
                self.converged || self.stuck || self.done_with_plan
            } else {
                self.busy.is_empty()
            };
            if done {
                break;
            }
            let trigger = self.next_trigger(Some(deadline)).await;
            tracing::debug!(?trigger, "woke");
            if let Trigger::Deadline = trigger {
                timed_out = true;
                break;
            }
            self.absorb_ready();
            if self.opts.wait {
                self.pass(None).await?;
            }
        }
        // Let actions in flight finish: cutting them off would be safe (the
        // intents see to that), but the next run would have to clean up.
        self.drain().await;
        let snapshot = self.store.load_async().await?;
        Ok(Ran {
            passes: self.passes,
            converged: self.converged,
            timed_out,
            elapsed: self.started.elapsed(),
            servers: tally(&self.target.desired, &snapshot),
            held_back: std::mem::take(&mut self.held_back),
        })
    }

    /// Before the first pass: drops intents whose unit never appeared (the
    /// process died before the runtime call), given the first observation
    /// if one was already made.
    pub async fn start(&mut self, observed: Option<&Observation>) -> Result<(), ApplyError> {
        if !self.opts.dry_run {
            drop_stale_intents(self.rt, self.store, observed).await?;
        }
        Ok(())
    }

    /// One pass: observe, plan, hand out the runnable actions, schedule probes.
    pub async fn pass(&mut self, first: Option<First>) -> Result<(), ApplyError> {
        let passed = self.pass_inner(first).await;
        // However the pass ended, what finished while it waited is taken in
        // by the next wait, like any other work.
        for w in std::mem::take(&mut self.finished) {
            self.work.push(Box::pin(std::future::ready(w)));
        }
        passed
    }

    async fn pass_inner(&mut self, first: Option<First>) -> Result<(), ApplyError> {
        if self.wants_events {
            self.subscribe();
        }
        self.take_up_due_retries(Timestamp::now());
        self.passes += 1;
        let pass = self.passes;
        let began = Instant::now();
        let mut load_time = Duration::ZERO;
        let (snapshot, mut obs, given) = match first {
            Some(f) => (f.snapshot, f.observation, Some(f.plan)),
            None => {
                let snapshot =
                    beside(&mut self.work, &mut self.finished, self.store.load_async()).await?;
                load_time = began.elapsed();
                // Bounded, so that an engine that stops answering delays the
                // loop by a retry, not by its client's own long timeout.
                let prober = &self.prober;
                let answered = |id: &InstanceId| {
                    snapshot
                        .instances
                        .get(id)
                        .is_some_and(|i| prober.answered(i))
                };
                let looked = tokio::time::timeout(
                    OBSERVE_TIMEOUT,
                    observe(self.rt, &snapshot, &self.busy, answered),
                );
                match beside(&mut self.work, &mut self.finished, looked).await {
                    Ok(Ok(obs)) => (snapshot, obs, None),
                    Ok(Err(e)) => {
                        self.pass_failed(e.to_string());
                        return Ok(());
                    }
                    Err(_) => {
                        self.pass_failed(format!(
                            "the runtime did not answer within {}",
                            crate::model::short_duration(OBSERVE_TIMEOUT)
                        ));
                        return Ok(());
                    }
                }
            }
        };
        self.pass_retry = None;
        self.prober.fill(&snapshot, &mut obs);
        sanitize(
            &mut obs,
            &snapshot,
            &self.target.servers,
            &self.target.secrets,
        );
        let plan = match given {
            Some(p) => p,
            None => plan::plan(Inputs {
                desired: &self.target.desired,
                snapshot: &snapshot,
                observation: Some(&obs),
                now: obs.at,
                allow_empty: self.opts.allow_empty,
            })?,
        };
        let plan_time = began.elapsed();
        let look_and_plan_time = plan_time.saturating_sub(load_time);
        if !self.opts.dry_run {
            let recorded = record_target(self.store, &self.target, &snapshot);
            beside(&mut self.work, &mut self.finished, recorded).await?;
        }
        let mut statuses: BTreeMap<Status, usize> = BTreeMap::new();
        for i in snapshot.instances.values() {
            *statuses.entry(i.status).or_default() += 1;
        }

        let mut per_server: BTreeMap<String, (Vec<Instance>, Vec<Action>)> = BTreeMap::new();
        for i in probe_updates(&snapshot, &obs) {
            per_server.entry(i.server.clone()).or_default().0.push(i);
        }
        let now = Timestamp::now();
        let mut held_back = Vec::new();
        let mut permitted = 0;
        for a in plan.runnable() {
            let busy = self.busy.contains(&a.server)
                || self.retry.get(&a.server).is_some_and(|r| r.resting(now));
            // A busy server's actions are planned again next pass: only the
            // ones handed out now use up what a saved plan permits.
            if !busy
                && let Some(only) = self.opts.only.as_mut()
                && !only.take(a)
            {
                held_back.push(a.clone());
                continue;
            }
            permitted += 1;
            per_server
                .entry(a.server.clone())
                .or_default()
                .1
                .push(a.clone());
        }
        if self.opts.dry_run {
            // Drift is reported, never corrected; not even a probe result is written.
            per_server.clear();
        }
        let snapshot = Arc::new(snapshot);
        let obs = Arc::new(obs);
        let mut handed_out = Vec::new();
        for (server, (updates, actions)) in per_server {
            let resting = self.retry.get(&server).is_some_and(|r| r.resting(now));
            if self.busy.contains(&server) || resting {
                // Its next turn comes when its work finishes or its retry is due.
                continue;
            }
            handed_out.extend(actions.iter().cloned());
            self.busy.insert(server.clone());
            if !actions.is_empty() {
                self.acting.insert(server.clone());
            }
            let exec = Exec {
                rt: self.rt,
                store: self.store,
                sem: self.sem.clone(),
                target: self.target.clone(),
                on_event: self.on_event,
            };
            let work = ServerWork {
                server,
                updates,
                actions,
                snapshot: snapshot.clone(),
                obs: obs.clone(),
            };
            self.work
                .push(Box::pin(async move { Work::Server(exec.run(work).await) }));
        }
        // What runs now: a busy server's actions are planned again, and
        // counted, by the pass that hands them out.
        (self.on_event)(Event::Planned {
            pass,
            actions: handed_out.len(),
        });

        // A waiting run checks liveness from its first pass on: no pass
        // comes of a check that passes, so a later pass cannot be counted
        // on to start them. A fleet found converged still costs one list
        // call and no handshake: the run ends before the checks are polled.
        let liveness = self.opts.wait;
        self.seen = Some((snapshot.clone(), obs.clone(), liveness));
        self.start_probes(obs.at);

        self.done_with_plan = self.opts.only.is_some()
            && self.acting.is_empty()
            && permitted == 0
            && !snapshot
                .instances
                .values()
                .any(|i| i.status == Status::Starting);
        self.held_back = held_back;
        self.requeue_at = plan.requeue_at;
        tracing::debug!(
            pass,
            ms = began.elapsed().as_millis() as u64,
            load_ms = load_time.as_millis() as u64,
            look_and_plan_ms = look_and_plan_time.as_millis() as u64,
            actions = plan.actions.len(),
            busy = self.busy.len(),
            "pass"
        );
        let servers = tally(&self.target.desired, &snapshot);
        self.converged = plan.is_empty()
            && self.acting.is_empty()
            && servers.values().all(|(running, wanted)| running == wanted);
        let mut short = servers.iter().filter(|(_, (r, w))| r != w).map(|(s, _)| s);
        self.stuck = self.acting.is_empty()
            && short.all(|s| {
                self.failed.contains(s) && snapshot.backoff.get(s).is_some_and(|b| b.until > obs.at)
            })
            && servers.iter().any(|(_, (r, w))| r != w);
        let (running, wanted) = servers
            .values()
            .fold((0, 0), |(r, w), (a, b)| (r + a, w + b));
        self.last = PassSummary {
            pass,
            actions: plan.actions,
            handed_out,
            servers,
            statuses,
            plan_time,
            converged: self.converged,
            error: None,
        };
        (self.on_event)(Event::Waiting { running, wanted });
        Ok(())
    }

    /// Starts the probes due at `now`, against what the last pass saw.
    fn start_probes(&mut self, now: Timestamp) {
        let Some((snapshot, obs, liveness)) = self.seen.clone() else {
            return;
        };
        // A removed instance's attach goes with it.
        self.bridges
            .retain(|id| snapshot.instances.contains_key(id) || obs.units.contains_key(id));
        let targets = self
            .prober
            .schedule(&snapshot, &obs, &self.target.desired, liveness, now);
        for t in targets {
            let rt = self.rt;
            let bridges = self.bridges.clone();
            let headers = self.target.headers_for(&t.server);
            let sem = self.probe_sem.clone();
            let dry_run = self.opts.dry_run;
            self.work.push(Box::pin(async move {
                let _permit = sem.acquire_owned().await;
                let result = probes::run(rt, &t, &headers, &bridges).await;
                // A runtime that routes traffic by readiness (a Kubernetes
                // readiness gate) learns the handshake's outcome; a dry run
                // changes nothing, and external servers have no unit.
                if !dry_run && let Some(handle) = &t.handle {
                    let passed = matches!(result.probe, crate::model::Probe::Ready(_));
                    if let Err(e) = rt.set_ready(handle, passed).await {
                        tracing::warn!(instance = %t.instance, error = %e, "cannot record readiness with the runtime");
                    }
                }
                Work::Probed {
                    id: t.instance,
                    at: Timestamp::now(),
                    result,
                }
            }));
        }
    }

    /// Whether a probe result can change what a pass decides or records. A
    /// STARTING instance that still fails the way its reason already says
    /// changes nothing until its readiness deadline (a timer of its own),
    /// so its result only sets when to try again; nor does a RUNNING
    /// instance passing its liveness check with no failures to reset (the
    /// next pass records when it was checked). Anything else, a new failure
    /// message included, is worth a pass.
    fn worth_a_pass(&self, work: &Work) -> bool {
        let Work::Probed { id, result, .. } = work else {
            return true;
        };
        let Some(inst) = self
            .seen
            .as_ref()
            .and_then(|(snapshot, _, _)| snapshot.instances.get(id))
        else {
            return true;
        };
        match &result.probe {
            crate::model::Probe::NotReady(why) => {
                inst.status != Status::Starting || inst.reason != *why
            }
            crate::model::Probe::Ready(_) => !probes::passed_unchanged(inst, result),
        }
    }

    /// Waits for the next reason to pass: work finishing, a runtime event,
    /// a requeue or retry coming due, or the deadline. Probe retries that
    /// fall due meanwhile are started here, without a pass, and a burst of
    /// finishing work is taken in whole, so that a cold start of many
    /// instances costs a few passes a second rather than one per probe.
    pub async fn next_trigger(&mut self, deadline: Option<tokio::time::Instant>) -> Trigger {
        loop {
            let trigger = self.next_wake_or_work(deadline).await;
            match trigger {
                Some(Trigger::Work) => {
                    self.settle_work().await;
                    return Trigger::Work;
                }
                Some(t) => return t,
                None => continue,
            }
        }
    }

    /// Takes in work finishing within a moment of the last, for at most
    /// [`EVENTS_SETTLE_MAX`].
    async fn settle_work(&mut self) {
        let give_up = tokio::time::Instant::now() + EVENTS_SETTLE_MAX;
        while !self.work.is_empty() {
            let quiet = (tokio::time::Instant::now() + EVENTS_QUIET).min(give_up);
            match tokio::time::timeout_at(quiet, self.work.next()).await {
                Ok(Some(w)) => self.absorb(w),
                _ => return,
            }
            if tokio::time::Instant::now() >= give_up {
                return;
            }
        }
    }

    /// One wait: `None` when what woke it needs no pass (a probe that
    /// changed nothing, probes falling due).
    async fn next_wake_or_work(
        &mut self,
        deadline: Option<tokio::time::Instant>,
    ) -> Option<Trigger> {
        let probes_only = self.next_wake_is_probes_only();
        let wake = self.next_wake().map(|at| {
            let wait = at.since(Timestamp::now());
            tokio::time::Instant::now() + wait
        });
        let until = match (wake, deadline) {
            (Some(w), Some(d)) => Some(w.min(d)),
            (w, d) => w.or(d),
        };
        let sleep = async {
            match until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let events = async {
            match self.events.as_mut() {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        let trigger = tokio::select! {
            Some(w) = self.work.next(), if !self.work.is_empty() => {
                let worth = self.worth_a_pass(&w);
                self.absorb(w);
                if !worth {
                    // Arms its retry (and starts whatever else is due).
                    self.start_probes(Timestamp::now());
                    return None;
                }
                Trigger::Work
            }
            ev = events => {
                match ev {
                    // The server has work under way: its finishing brings
                    // the pass that looks at the server, so an event about
                    // it now (our create's own `start`, say) is no news, and
                    // a look while the engine is busy starting it only slows
                    // the start down.
                    Some(Ok(Watched::Event(ev))) if self.busy.contains(&ev.server) => {
                        self.events_broken = None;
                        return None;
                    }
                    Some(Ok(Watched::Event(_))) => {
                        self.events_broken = None;
                        self.settle_events().await
                    }
                    // The stream was broken and is back: what happened in
                    // the gap is found by looking.
                    Some(Ok(Watched::Resumed)) => {
                        tracing::info!("runtime events resumed");
                        self.events_broken = None;
                    }
                    // The stream broke (the daemon restarted, say) and
                    // opens itself again; until it says it is back, timers
                    // and passes carry on alone.
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "runtime events stream broke; it reopens by itself");
                        self.events_broken = Some(e.to_string());
                        return None;
                    }
                    // Against the contract, but not worth a hot loop: the
                    // next pass subscribes again.
                    None => {
                        tracing::warn!("runtime events stream ended; subscribing again at the next pass");
                        self.events = None;
                        self.events_broken = Some("the stream ended".into());
                        return None;
                    }
                }
                Trigger::Event
            }
            () = sleep => {
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    Trigger::Deadline
                } else if probes_only {
                    self.start_probes(Timestamp::now());
                    return None;
                } else {
                    Trigger::Timer
                }
            }
        };
        Some(trigger)
    }

    /// Whether the next timer to fire is only a probe falling due.
    fn next_wake_is_probes_only(&self) -> bool {
        let Some(probe) = self.prober.next_due() else {
            return false;
        };
        self.seen.is_some()
            && self
                .next_wake()
                .is_some_and(|at| at == probe && self.next_pass_wake().is_none_or(|p| p > at))
    }

    /// Lets a burst of runtime events end before passing: one change
    /// arrives as several (`docker rm -f` is a kill, a `die`, then a
    /// `destroy`), and looking in the middle of it sees a container
    /// half-removed, which reads as a crash. Waits until the events have
    /// been quiet for a moment, and never much longer than that.
    async fn settle_events(&mut self) {
        let Some(stream) = self.events.as_mut() else {
            return;
        };
        let give_up = tokio::time::Instant::now() + EVENTS_SETTLE_MAX;
        loop {
            let quiet = (tokio::time::Instant::now() + EVENTS_QUIET).min(give_up);
            match tokio::time::timeout_at(quiet, stream.next()).await {
                Ok(Some(Ok(_))) if tokio::time::Instant::now() < give_up => continue,
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "runtime events stream broke; it reopens by itself");
                    return;
                }
                Ok(None) => {
                    self.events = None;
                    return;
                }
                _ => return,
            }
        }
    }

    /// When something is next due with nothing else happening: a pass, or
    /// a probe.
    fn next_wake(&self) -> Option<Timestamp> {
        [self.next_pass_wake(), self.prober.next_due()]
            .into_iter()
            .flatten()
            .min()
    }

    /// When a pass is next due with nothing else happening. A moment
    /// already past only until the next pass: see [`Retry`].
    fn next_pass_wake(&self) -> Option<Timestamp> {
        let now = Timestamp::now();
        let requeue = self.requeue_at.map(|at| at.max(now.plus(MIN_REQUEUE)));
        [
            requeue,
            self.pass_retry.and_then(|r| r.due),
            self.retry.values().filter_map(|r| r.due).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Takes in whatever else has finished or arrived meanwhile, so that one
    /// pass answers a burst.
    pub fn absorb_ready(&mut self) {
        while let Some(Some(w)) = self.work.next().now_or_never() {
            self.absorb(w);
        }
        if let Some(stream) = self.events.as_mut() {
            while let Some(Some(Ok(_))) = stream.next().now_or_never() {}
        }
    }

    fn absorb(&mut self, work: Work) {
        match work {
            Work::Probed { id, at, result } => self.prober.finished(id, at, result),
            Work::Server(done) => {
                tracing::debug!(server = %done.server, actions = done.done.len(), failed = ?done.failed, "server work done");
                self.busy.remove(&done.server);
                self.acting.remove(&done.server);
                match done.failed {
                    Some(error) => {
                        let failures = self.retry.get(&done.server).map_or(0, |r| r.failures) + 1;
                        let after = retry_after(failures);
                        self.retry.insert(
                            done.server.clone(),
                            Retry {
                                failures,
                                due: Some(Timestamp::now().plus(after)),
                            },
                        );
                        (self.on_event)(Event::Retrying {
                            what: format!("server {}", done.server),
                            error,
                            after,
                        });
                    }
                    None => {
                        self.retry.remove(&done.server);
                    }
                }
                let failed = done.done.iter().any(|d| match d.action.kind {
                    plan::ActionKind::Fail => d.error.is_none(),
                    plan::ActionKind::Start | plan::ActionKind::Replace => d.error.is_some(),
                    _ => false,
                });
                if failed {
                    self.failed.insert(done.server.clone());
                }
            }
        }
    }

    /// A pass takes up every retry that has fallen due, whatever it then
    /// hands out: the server may still wait out a crash back-off, and a due
    /// time left in place would wake the loop at once, forever.
    fn take_up_due_retries(&mut self, now: Timestamp) {
        for r in self.retry.values_mut().chain(self.pass_retry.as_mut()) {
            if r.due.is_some_and(|at| at <= now) {
                r.due = None;
            }
        }
    }

    fn pass_failed(&mut self, error: String) {
        let failures = self.pass_retry.map_or(0, |r| r.failures) + 1;
        let after = retry_after(failures);
        self.pass_retry = Some(Retry {
            failures,
            due: Some(Timestamp::now().plus(after)),
        });
        self.converged = false;
        self.last.pass = self.passes;
        self.last.handed_out.clear();
        self.last.error = Some(error.clone());
        (self.on_event)(Event::Retrying {
            what: REFRESH.into(),
            error,
            after,
        });
    }
}

/// Awaits `fut` while the work in flight keeps moving, keeping what
/// finishes in `finished`. Work is polled only by the applier's own loop, so
/// a pass that waited on a busy engine without this would stall every
/// create and probe beside it for as long as it waits.
async fn beside<'a, T>(
    work: &mut FuturesUnordered<WorkFuture<'a>>,
    finished: &mut Vec<Work>,
    fut: impl Future<Output = T>,
) -> T {
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return out,
            Some(w) = work.next(), if !work.is_empty() => finished.push(w),
        }
    }
}

/// Intents whose unit never appeared: the process died before the
/// runtime call. Nothing exists to adopt or remove, so the intent is
/// simply dropped.
async fn drop_stale_intents<R: Runtime + Sync>(
    rt: &R,
    store: &Store,
    observed: Option<&Observation>,
) -> Result<(), ApplyError> {
    let snapshot = store.load_async().await?;
    if snapshot.intents.is_empty() {
        return Ok(());
    }
    let units: BTreeSet<InstanceId> = match observed {
        Some(o) => o.units.keys().cloned().collect(),
        None => rt
            .observe()
            .await?
            .into_iter()
            .map(|u| u.instance)
            .collect(),
    };
    let stale: Vec<InstanceId> = snapshot
        .intents
        .values()
        .filter(|i| i.op == IntentOp::Create)
        .filter(|i| !snapshot.instances.contains_key(&i.instance) && !units.contains(&i.instance))
        .map(|i| i.instance.clone())
        .collect();
    if !stale.is_empty() {
        store
            .update_async(move |tx| stale.iter().try_for_each(|id| tx.clear_intent(id)))
            .await?;
    }
    Ok(())
}

/// Records the target as applied where the snapshot says otherwise: each
/// server's spec (keeping the one it replaces, for the diffs of a rolling
/// replace still under way) and the source revision; and forgets servers
/// gone from the source once nothing of theirs is left.
async fn record_target(
    store: &Store,
    target: &Target,
    snapshot: &Snapshot,
) -> Result<(), StateError> {
    let now = Timestamp::now();
    let mut put: Vec<(String, AppliedSpec)> = Vec::new();
    for d in &target.desired {
        let old = snapshot.servers.get(&d.name);
        let same = old.is_some_and(|o| {
            o.hash == d.canonical.hash
                && o.canonical == d.canonical.yaml
                && o.replicas == d.replicas
        });
        if same {
            continue;
        }
        let previous = match old {
            Some(o) if o.hash != d.canonical.hash => Some(PreviousSpec {
                hash: o.hash.clone(),
                canonical: o.canonical.clone(),
            }),
            Some(o) => o.previous.clone(),
            None => None,
        };
        put.push((
            d.name.clone(),
            AppliedSpec {
                hash: d.canonical.hash.clone(),
                canonical: d.canonical.yaml.clone(),
                replicas: d.replicas,
                applied_at: now,
                previous,
            },
        ));
    }
    let revision = (snapshot.revision.as_deref() != Some(&target.source.revision))
        .then(|| target.source.revision.clone());
    let gone: Vec<String> = snapshot
        .servers
        .keys()
        .filter(|name| !target.desired.iter().any(|d| &d.name == *name))
        .filter(|name| !snapshot.instances.values().any(|i| &i.server == *name))
        .cloned()
        .collect();
    if put.is_empty() && revision.is_none() && gone.is_empty() {
        return Ok(());
    }
    store
        .update_async(move |tx| {
            for (name, spec) in &put {
                tx.put_server(name, spec)?;
            }
            if let Some(r) = &revision {
                tx.set_revision(r)?;
            }
            gone.iter().try_for_each(|n| tx.remove_server(n))
        })
        .await
}

async fn record_history(
    store: &Store,
    target: &Target,
    opts: &Options,
    report: &Report,
    converged: bool,
) -> Result<(), StateError> {
    let failed = report.actions.iter().filter(|d| d.error.is_some()).count();
    let how = if !opts.wait {
        "done"
    } else if report.servers.values().all(|(r, w)| r == w) && converged {
        "converged"
    } else {
        "not converged"
    };
    let mut outcome = format!(
        "{}: {how} in {} ms",
        opts.command,
        report.elapsed.as_millis()
    );
    if failed > 0 {
        outcome.push_str(&format!(", {failed} failed"));
    }
    let changes = report
        .actions
        .iter()
        .take(crate::model::CHANGES_CAP)
        .map(|d| {
            let mut c = change(&d.action);
            if c.instance.is_none() {
                c.instance = d.created.as_ref().map(|i| i.to_string());
            }
            c
        })
        .collect();
    let entry = HistoryEntry {
        at: Timestamp::now(),
        revision: target.source.revision.clone(),
        source: target.source.location.clone(),
        actions: report.actions.len(),
        outcome,
        changes,
    };
    store.update_async(move |tx| tx.push_history(&entry)).await
}

/// An action as the history keeps it.
pub fn change(a: &Action) -> crate::model::Change {
    crate::model::Change {
        action: a.kind.as_str().to_owned(),
        server: a.server.clone(),
        instance: a.instance.as_ref().map(|i| i.to_string()),
        reason: a.reason.clone(),
    }
}

/// RUNNING instances with the wanted hash, per server, against replicas.
/// Suspended servers are left out: nobody is acting on them.
pub fn tally(desired: &[Desired], snapshot: &Snapshot) -> BTreeMap<String, (usize, usize)> {
    let wanted: BTreeMap<&str, &Desired> = desired.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut out: BTreeMap<String, (usize, usize)> = desired
        .iter()
        .filter(|d| !snapshot.suspended.contains_key(&d.name))
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

/// The instance records that an observation changes without a status
/// change: a STARTING instance's restart count, and its reason (its crash,
/// if it restarted since it became STARTING, else its latest failed
/// handshake), so `get` says why it is not ready yet; and a RUNNING one's
/// count of liveness failures in a row, so the planner can tell a blip from
/// an outage. Not transitions: the history is left alone.
fn probe_updates(snapshot: &Snapshot, obs: &Observation) -> Vec<Instance> {
    snapshot
        .instances
        .values()
        .filter_map(|i| {
            let probe = obs.probes.get(&i.id);
            let unit = obs.units.get(&i.id);
            let mut n = i.clone();
            match i.status {
                Status::Starting => {
                    if let Some(r) = unit.and_then(|u| u.restarts) {
                        n.restarts = r;
                    }
                    let crashed =
                        unit.filter(|u| u.restarts.is_some_and(|r| r > i.restarts_at_start));
                    let why = match (crashed, probe) {
                        (Some(u), _) => Some(plan::restarting(u, i)),
                        (None, Some(Probe::NotReady(why))) => Some(why.clone()),
                        _ => None,
                    };
                    if let Some(why) = why {
                        n.reason = why;
                    }
                }
                Status::Running => match probe {
                    Some(Probe::Ready(_)) => {
                        n.liveness = Liveness {
                            failures: 0,
                            checked_at: obs.at,
                        }
                    }
                    Some(Probe::NotReady(_)) => {
                        n.liveness = Liveness {
                            failures: i.liveness.failures + 1,
                            checked_at: obs.at,
                        }
                    }
                    None => {}
                },
                Status::Error => {}
            }
            (n != *i).then_some(n)
        })
        .collect()
}

#[cfg(test)]
mod tests;
