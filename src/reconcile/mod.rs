//! The always-on reconciler behind `mcpctl watch`: the same pass as
//! `apply`, driven by triggers instead of run to convergence. There is no
//! second code path: [`watch`] holds an [`Applier`] and passes when the
//! source announces a new revision, when the runtime reports an event, when
//! a back-off, readiness deadline or liveness check falls due, when the
//! webhook asks, and on a resync timer.
//!
//! **Safety (design §8).** A revision with any invalid document, a missing
//! secret, or no servers at all facing a fleet, is refused as a whole: the
//! last good revision stays in force, nothing is pruned, and `/healthz`
//! says why (naming the file and line). A failing fetch keeps the last good
//! revision too.
//!
//! **Shutdown.** When `shutdown` resolves, actions in flight finish and the
//! loop returns; the intents make even a harder stop safe.

mod http;
mod status;

pub use http::{Limits as ListenerLimits, serve};
pub use status::{Health, Metrics, Shared};

use crate::apply::lease::Standing;
use crate::apply::{Applier, ApplyError, Event, Options as ApplyOptions, Target, Trigger};
use crate::gateway::{ServerHeaders, Table};
use crate::model::text::diagnostic_line;
use crate::model::{HistoryEntry, Observation, Runners, Snapshot, Timestamp};
use crate::plan::Desired;
use crate::runtime::Runtime;
use crate::secrets::Resolver as SecretResolver;
use crate::source;
use crate::spec::Limits;
use crate::state::Store;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a source announces.
#[derive(Debug)]
pub enum SourceEvent {
    /// A new revision (or the first one).
    Revision {
        snapshot: source::Snapshot,
        /// The revision before, when the new one does not descend from it.
        forced_from: Option<String>,
    },
    /// Reading or fetching failed; the last good revision stays in force.
    Failed(String),
}

/// How a revision's files become the target of the passes.
pub struct Resolver {
    pub secrets_dir: Option<PathBuf>,
    /// Leave env secrets to the runtime's own store (Kubernetes).
    pub native_env_secrets: bool,
    pub runners: Runners,
    pub limits: Limits,
    /// Accept a revision with no servers even when the state has some.
    pub allow_empty: bool,
    /// The operator's key for secret digests; `None` takes the scope's
    /// from the runtime (see [`crate::apply::digest_key`]).
    pub digest_key: Option<[u8; 32]>,
}

impl Resolver {
    /// The revision's servers, validated, secrets resolved. Refused, with
    /// one reason per line, when any document is invalid or a secret is
    /// missing, or when the revision has no servers while `known` are
    /// running. Each line is one diagnostic as [`diagnostic_line`] puts it:
    /// its file and line, what is wrong and, as `validate` shows it, how to
    /// fix it.
    pub fn target(
        &self,
        snapshot: source::Snapshot,
        digest_key: &[u8; 32],
        known: usize,
    ) -> Result<Target, String> {
        let servers = crate::spec::load_with(&snapshot.files, self.limits).map_err(|e| {
            e.iter()
                .map(|e| diagnostic_line(e))
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        if servers.is_empty() && known > 0 && !self.allow_empty {
            return Err(format!(
                "the revision has no servers, but {known} are known; refusing to remove them all (check the path or ref, or pass --allow-empty)"
            ));
        }
        let secrets = SecretResolver::new(self.secrets_dir.clone())
            .native_env_refs(self.native_env_secrets)
            .resolve(&servers)
            .map_err(|e| {
                e.missing
                    .iter()
                    .map(|m| diagnostic_line(m))
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
        let desired = Desired::from_servers(&servers, &secrets.digests(digest_key), &self.runners);
        Ok(Target {
            servers,
            secrets,
            desired,
            source: snapshot.info,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// A pass at least this often, whatever else happens.
    pub resync: Duration,
    /// Plan and report drift; act on nothing, write nothing.
    pub dry_run: bool,
    /// Runtime calls in flight at once.
    pub parallelism: usize,
    /// On shutdown, how long actions in flight may take to finish.
    pub shutdown_timeout: Duration,
    /// The scope's applier lease as its keeper sees it: no pass runs while
    /// it is not ours. `None` acts without one (a dry run, which changes
    /// nothing).
    pub lease: Option<tokio::sync::watch::Receiver<Standing>>,
    /// Where the gateway served beside `watch` (`--gateway`) learns of
    /// the fleet and the secrets; `None` without one.
    pub gateway: Option<GatewayFeed>,
}

/// What `watch` tells the gateway it serves: the routing table, from the
/// state each pass read (the records of all the work that had finished
/// before it, so every change `watch` makes reaches the gateway by the
/// pass its finishing triggers), and external servers' headers, from each
/// revision taken up (so a rotated secret reaches the gateway with the
/// revision that brings it). Each is sent only when it differs.
#[derive(Debug, Clone)]
pub struct GatewayFeed {
    /// `None` when the table comes from elsewhere: a dry run writes nothing,
    /// so its gateway follows the state file that another applier writes.
    pub tables: Option<tokio::sync::watch::Sender<Arc<Table>>>,
    pub headers: tokio::sync::watch::Sender<Arc<ServerHeaders>>,
    /// The gateway's stdio bridges, which the applier's checks ride too.
    pub bridges: crate::bridge::Bridges,
}

impl GatewayFeed {
    /// The table of `snapshot`, each unit's endpoint as `obs` saw it: the
    /// record may be another process's (a Kubernetes relay endpoint left
    /// by an earlier `watch` leads nowhere from this one).
    fn snapshot(&self, snapshot: &Snapshot, obs: &Observation) {
        let Some(tables) = &self.tables else {
            return;
        };
        let seen: crate::gateway::Seen = obs
            .units
            .iter()
            .filter_map(|(id, u)| match &u.endpoint {
                Some(crate::model::Endpoint::Http(url)) => Some((id.clone(), url.clone())),
                _ => None,
            })
            .collect();
        let table = Table::from_snapshot_seen(snapshot, &seen);
        tables.send_if_modified(|current| {
            if **current == table {
                return false;
            }
            tracing::info!(
                servers = table.servers(),
                ready = table.ready_servers(),
                "routing table changed"
            );
            *current = Arc::new(table);
            true
        });
    }

    fn target(&self, target: &Target) {
        let headers = crate::apply::probe_headers(&target.servers, &target.secrets);
        self.headers.send_if_modified(|current| {
            if **current == headers {
                return false;
            }
            tracing::info!(servers = headers.len(), "external servers' headers changed");
            *current = Arc::new(headers);
            true
        });
    }
}

/// How `watch` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every action in flight finished.
    Drained,
    /// Actions were still in flight when the shutdown timeout passed or a
    /// second signal came; the intents let the next run finish them.
    CutShort,
}

/// `1 to start, 2 to replace`, or `no changes`.
fn actions_summary(actions: &[crate::plan::Action]) -> String {
    let parts: Vec<String> = crate::plan::ActionKind::ALL
        .into_iter()
        .filter_map(|k| {
            let n = actions.iter().filter(|a| a.kind == k).count();
            (n > 0).then(|| format!("{n} to {}", k.as_str()))
        })
        .collect();
    if parts.is_empty() {
        "no changes".into()
    } else {
        parts.join(", ")
    }
}

/// Why the loop woke.
enum Wake {
    Shutdown,
    Source(Option<SourceEvent>),
    Sync,
    Resync,
    Retry,
    Applier(Trigger),
    Heartbeat,
    Lease,
}

/// The loop turns at least this often, even with nothing to do, so that
/// `/livez` can tell a quiet loop from a stuck one.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Faults that pass (a busy state file, a runtime that does not answer
/// when the applier starts), and when to try again: 1 s doubling to 30 s.
#[derive(Default)]
struct Fault {
    failures: u32,
    /// When to try again; `None` when nothing is failing.
    retry_at: Option<tokio::time::Instant>,
}

impl Fault {
    /// Counts one more failure and sets when to try again.
    fn failed(&mut self) -> Duration {
        self.failures += 1;
        let after = crate::apply::RETRY.after(self.failures);
        self.retry_at = Some(tokio::time::Instant::now() + after);
        after
    }

    fn cleared(&mut self) {
        *self = Fault::default();
    }
}

/// Runs until `shutdown` resolves, then lets the actions in flight finish
/// for at most `opts.shutdown_timeout`, or until `abort` resolves (a second
/// signal). `sync_now` asks the source to fetch at once (the webhook).
///
/// It never ends on a fault that passes: a busy state file, a runtime that
/// does not answer, a failed fetch. Each makes `/healthz` degraded, with
/// the reason, and is tried again with back-off. It returns an error only
/// for a state file that cannot be used until somebody acts (damaged, or
/// written by a newer mcpctl).
#[allow(clippy::too_many_arguments)]
pub async fn watch<R: Runtime + Sync>(
    rt: &R,
    store: &Store,
    resolver: &Resolver,
    mut source: mpsc::Receiver<SourceEvent>,
    sync_now: &(dyn Fn() + Sync),
    shared: &Shared,
    opts: &Options,
    shutdown: impl Future<Output = ()>,
    abort: impl Future<Output = ()>,
) -> Result<Stopped, ApplyError> {
    let on_event = |e: Event| match e {
        Event::Finished {
            action,
            instance,
            error,
            elapsed,
        } => {
            shared.metrics.action(action.kind, error.is_none(), elapsed);
            let inst = instance
                .or(action.instance)
                .map(|i| i.to_string())
                .unwrap_or_default();
            match error {
                None => tracing::info!(
                    action = action.kind.as_str(),
                    server = %action.server,
                    instance = %inst,
                    reason = %action.reason,
                    ms = elapsed.as_millis() as u64,
                    "done"
                ),
                Some(error) => tracing::warn!(
                    action = action.kind.as_str(),
                    server = %action.server,
                    instance = %inst,
                    %error,
                    "failed"
                ),
            }
        }
        Event::Retrying { what, error, after } => {
            tracing::warn!(%what, %error, retry_in_ms = after.as_millis() as u64, "retrying");
        }
        _ => {}
    };
    let apply_opts = ApplyOptions {
        parallelism: opts.parallelism,
        wait: true,
        // Unused: `watch` drives the applier's turns itself, with no deadline.
        timeout: Duration::ZERO,
        allow_empty: resolver.allow_empty,
        command: "watch".into(),
        only: None,
        dry_run: opts.dry_run,
    };
    shared.update(|h| h.dry_run = opts.dry_run);
    let mut applier: Option<Applier<'_, R>> = None;
    // Whether the applier has made its start (dropped stale intents); it
    // needs the runtime, so it waits, like a pass, for one that answers.
    let mut started = false;
    let mut key: Option<[u8; 32]> = None;
    // A revision read but not yet resolved, because the state was busy.
    let mut pending: Option<(source::Snapshot, Option<String>)> = None;
    let mut fault = Fault::default();
    let mut source_open = true;
    let mut resync = tokio::time::interval(opts.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // After a new revision, its first pass is recorded in the history.
    let mut fresh: Option<Option<String>> = None;
    let mut converged = false;
    let mut acted = std::collections::BTreeSet::new();
    let mut lease = opts.lease.clone();
    tokio::pin!(shutdown);
    loop {
        shared.turned();
        if let Some(a) = applier.as_ref() {
            shared.update(|h| h.events = a.events_broken().map(str::to_owned));
        }
        let retry = async {
            match fault.retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let source_next = async {
            if source_open {
                source.recv().await
            } else {
                std::future::pending().await
            }
        };
        let waiting_out_fault = fault.retry_at.is_some();
        // The applier's own wakes keep its work in flight moving even while
        // a fault is waited out; only the pass waits for the retry.
        // Without the lease the applier's work is not moved on either: it
        // resumes once the lease is ours again.
        let held = lease
            .as_ref()
            .is_none_or(|l| matches!(&*l.borrow(), Standing::Held(_)));
        let triggers = async {
            match applier.as_mut().filter(|_| started && held) {
                Some(a) => a.next_trigger(None).await,
                None => std::future::pending().await,
            }
        };
        let lease_changed = async {
            match lease.as_mut() {
                Some(l) => {
                    if l.changed().await.is_err() {
                        // The keeper is gone: its last word stands.
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let wake = tokio::select! {
            () = &mut shutdown => Wake::Shutdown,
            () = lease_changed => Wake::Lease,
            ev = source_next => Wake::Source(ev),
            () = shared.sync.notified() => Wake::Sync,
            _ = resync.tick() => Wake::Resync,
            () = retry => Wake::Retry,
            t = triggers => Wake::Applier(t),
            _ = heartbeat.tick() => Wake::Heartbeat,
        };
        match wake {
            Wake::Shutdown => break,
            Wake::Source(None) => {
                // The source's watcher is gone: keep reconciling what we
                // have, and stop listening to a channel that would wake
                // the loop at once, forever.
                source_open = false;
                shared.update(|h| {
                    h.source = Some("the source watcher stopped; keeping the last revision".into())
                });
                continue;
            }
            Wake::Source(Some(SourceEvent::Failed(error))) => {
                let kept = shared.health().revision;
                tracing::error!(%error, keeping = kept.as_deref().unwrap_or("(none)"), "source failed");
                // One line each: `/healthz` lists them apart.
                shared.update(|h| {
                    h.source = Some(match &kept {
                        Some(r) => format!("{error}\nkeeping revision {r}"),
                        None => error.clone(),
                    })
                });
                continue;
            }
            Wake::Source(Some(SourceEvent::Revision {
                snapshot,
                forced_from,
            })) => pending = Some((snapshot, forced_from)),
            Wake::Sync => {
                sync_now();
                if applier.is_none() && pending.is_none() {
                    continue;
                }
            }
            Wake::Resync => tracing::debug!("resync"),
            Wake::Retry => fault.retry_at = None,
            Wake::Applier(trigger) => tracing::trace!(?trigger, "woke"),
            Wake::Heartbeat => continue,
            Wake::Lease => {}
        }
        // Not ours: another applier acts, or ours could not be renewed.
        // Passes wait; work already in flight finishes on its own.
        let not_ours = lease.as_ref().and_then(|l| match &*l.borrow() {
            Standing::Held(_) => None,
            Standing::Waiting(why) => Some(why.clone()),
        });
        let waiting_for_lease = not_ours.is_some();
        shared.update(|h| h.lease = not_ours);
        if waiting_for_lease {
            continue;
        }
        if waiting_out_fault && fault.retry_at.is_some() {
            // Taken in; the turn waits for the fault's retry.
            continue;
        }

        // Each step below may meet a fault that passes; it is reported, and
        // the loop comes back to the same step after a pause. A signal
        // does not wait for it: a pass stuck on a hung engine would hold the
        // shutdown for a whole runtime deadline. Cutting a turn short is
        // safe: every side effect is bracketed by an intent, and work a pass
        // handed out lives on in the applier, which the drain below awaits.
        let step = turn(
            rt,
            store,
            resolver,
            shared,
            opts,
            &apply_opts,
            &on_event,
            Turn {
                applier: &mut applier,
                started: &mut started,
                key: &mut key,
                pending: &mut pending,
                fresh: &mut fresh,
                converged: &mut converged,
                acted: &mut acted,
            },
        );
        let step = tokio::select! {
            step = step => step,
            () = &mut shutdown => break,
        };
        match step {
            Ok(()) => {
                if fault.failures > 0 {
                    shared.update(|h| h.state = None);
                }
                fault.cleared();
            }
            Err(ApplyError::State(e)) if e.is_passing() => {
                let after = fault.failed();
                tracing::warn!(error = %e, retry_in_ms = after.as_millis() as u64, "state file unavailable; retrying");
                shared.update(|h| h.state = Some(e.to_string()));
            }
            Err(ApplyError::Runtime(e)) => {
                let after = fault.failed();
                tracing::warn!(error = %e, retry_in_ms = after.as_millis() as u64, "runtime unavailable; retrying");
                shared.update(|h| h.runtime = Some(e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    let Some(a) = applier.as_mut().filter(|a| a.busy()) else {
        return Ok(Stopped::Drained);
    };
    tracing::info!(
        timeout_s = opts.shutdown_timeout.as_secs(),
        "shutting down: letting the actions in flight finish (a second signal stops at once)"
    );
    tokio::select! {
        finished = tokio::time::timeout(opts.shutdown_timeout, a.drain()) => match finished {
            Ok(()) => Ok(Stopped::Drained),
            Err(_) => {
                tracing::warn!("actions still in flight after the shutdown timeout; the next run finishes them");
                Ok(Stopped::CutShort)
            }
        },
        () = abort => {
            tracing::warn!("second signal: stopping now; the next run finishes what was in flight");
            Ok(Stopped::CutShort)
        }
    }
}

/// The loop's state that one turn may change.
struct Turn<'t, 'a, R> {
    applier: &'t mut Option<Applier<'a, R>>,
    started: &'t mut bool,
    key: &'t mut Option<[u8; 32]>,
    pending: &'t mut Option<(source::Snapshot, Option<String>)>,
    fresh: &'t mut Option<Option<String>>,
    converged: &'t mut bool,
    /// The kinds of action, per server, recorded since that server last
    /// had all its replicas RUNNING: a retry of one is not recorded again.
    acted: &'t mut std::collections::BTreeSet<(crate::plan::ActionKind, String)>,
}

/// One turn after a wake: take in a pending revision, make the applier's
/// start, pass, and record. A fault that passes comes back as an error and
/// leaves everything ready for the same turn to be tried again.
#[allow(clippy::too_many_arguments)]
async fn turn<'a, R: Runtime + Sync>(
    rt: &'a R,
    store: &'a Store,
    resolver: &Resolver,
    shared: &Shared,
    opts: &Options,
    apply_opts: &ApplyOptions,
    on_event: &'a (dyn Fn(Event) + Sync),
    t: Turn<'_, 'a, R>,
) -> Result<(), ApplyError> {
    if let Some((snapshot, forced_from)) = t.pending.take() {
        let resolved = resolve(rt, opts.dry_run, store, resolver, t.key, &snapshot).await;
        let target = match resolved {
            Ok(target) => target,
            Err(e) => {
                *t.pending = Some((snapshot, forced_from));
                return Err(e);
            }
        };
        let revision = snapshot.info.revision.clone();
        match target {
            Ok(target) => {
                tracing::info!(
                    %revision,
                    servers = target.servers.len(),
                    forced_from = forced_from.as_deref().unwrap_or(""),
                    "revision accepted"
                );
                shared.metrics.revision(&revision);
                shared.update(|h| {
                    h.revision = Some(revision.clone());
                    h.source = None;
                });
                if let Some(feed) = &opts.gateway {
                    feed.target(&target);
                }
                let target = Arc::new(target);
                match t.applier.as_mut() {
                    Some(a) => a.set_target(target),
                    None => {
                        let mut a = Applier::new(rt, store, target, apply_opts.clone(), on_event);
                        if let Some(feed) = &opts.gateway {
                            a.share_bridges(feed.bridges.clone());
                        }
                        a.subscribe();
                        *t.applier = Some(a);
                    }
                }
                *t.fresh = Some(forced_from);
            }
            Err(why) => {
                // A line per problem, so that each log line has its place,
                // message and help, as `validate` would show them.
                for reason in why.lines() {
                    tracing::error!(%revision, %reason, "revision refused; nothing changes");
                }
                shared.update(|h| h.source = Some(format!("revision {revision} refused:\n{why}")));
                if !opts.dry_run {
                    let first = why.lines().next().unwrap_or_default().to_owned();
                    let entry = HistoryEntry {
                        at: Timestamp::now(),
                        revision,
                        source: snapshot.info.location.clone(),
                        actions: 0,
                        outcome: format!("watch: refused: {first}"),
                        changes: Vec::new(),
                    };
                    record(store, entry).await;
                }
                if t.applier.is_none() {
                    return Ok(());
                }
            }
        }
    }
    let Some(a) = t.applier.as_mut() else {
        return Ok(());
    };
    if !*t.started {
        a.start(None).await?;
        *t.started = true;
    }
    a.absorb_ready();
    match a.pass(None).await {
        Ok(()) => {}
        // The safety rules refused the plan: keep the fleet as it is.
        Err(ApplyError::Plan(e)) => {
            shared.update(|h| h.source = Some(diagnostic_line(&e)));
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    if let (Some(feed), Some(snapshot), Some(obs)) = (&opts.gateway, a.snapshot(), a.observation())
    {
        feed.snapshot(snapshot, obs);
    }
    let last = a.last_pass().clone();
    shared.metrics.pass(last.plan_time, last.actions.len());
    shared.metrics.instances(&last.statuses);
    shared.update(|h| {
        h.runtime = last.error.clone();
        h.drift = last.actions.len();
    });
    if opts.dry_run && !last.actions.is_empty() {
        let drift: Vec<String> = last
            .actions
            .iter()
            .map(|x| format!("{} {}", x.kind.as_str(), x.server))
            .collect();
        tracing::warn!(actions = last.actions.len(), drift = ?drift, "drift (left alone: --dry-run)");
    }
    if opts.dry_run || last.error.is_some() {
        return Ok(());
    }
    let target = a.target().clone();
    let entry = |outcome: String, actions: &[crate::plan::Action]| HistoryEntry {
        at: Timestamp::now(),
        revision: target.source.revision.clone(),
        source: target.source.location.clone(),
        actions: actions.len(),
        outcome,
        changes: actions
            .iter()
            .take(crate::model::CHANGES_CAP)
            .map(crate::apply::change)
            .collect(),
    };
    // Promotions alone are the work of an earlier entry coming good, and
    // "converged" says so; any other action (a repair, a rollout's next
    // step, a crash's retry) is recorded with what it was.
    let acted = last
        .handed_out
        .iter()
        .any(|x| x.kind != crate::plan::ActionKind::Promote);
    let entry = if let Some(forced_from) = t.fresh.take() {
        let forced = forced_from
            .map(|f| format!(" (force-push from {f})"))
            .unwrap_or_default();
        let summary = actions_summary(&last.actions);
        Some(entry(
            format!("watch: applying{forced}: {summary}"),
            &last.actions,
        ))
    } else if acted {
        // Retries of what was recorded since the server last had all its
        // replicas RUNNING (a crash loop's fail, then remove and start,
        // after every back-off; a failing action every 30 s) would fill the
        // capped history with copies and push the rest out: a pass is
        // recorded when it does a kind of work on a server not recorded
        // since.
        let mut new = false;
        for x in &last.handed_out {
            new |= t.acted.insert((x.kind, x.server.clone()));
        }
        new.then(|| {
            let summary = actions_summary(&last.handed_out);
            entry(format!("watch: reconciling: {summary}"), &last.handed_out)
        })
    } else if last.converged && !*t.converged {
        Some(entry("watch: converged".into(), &[]))
    } else {
        None
    };
    // A server that has come good may need the same repair again later.
    t.acted
        .retain(|(_, server)| last.servers.get(server).is_some_and(|(r, w)| r != w));
    *t.converged = last.converged;
    if let Some(e) = entry {
        record(store, e).await;
    }
    Ok(())
}

/// Resolves a revision into a target, or the reasons it is refused. The
/// outer error is a state file that could not be read (try again later).
async fn resolve<R: Runtime + Sync>(
    rt: &R,
    dry_run: bool,
    store: &Store,
    resolver: &Resolver,
    key: &mut Option<[u8; 32]>,
    snapshot: &source::Snapshot,
) -> Result<Result<Target, String>, ApplyError> {
    let digest_key = match key {
        Some(k) => *k,
        None => {
            // A dry run writes nothing, in the runtime either.
            let k =
                crate::apply::digest_key(Some(rt), store, resolver.digest_key, !dry_run).await?;
            *key = Some(k);
            k
        }
    };
    let known = store.load_async().await?.servers.len();
    Ok(resolver.target(snapshot.clone(), &digest_key, known))
}

/// A history entry is worth keeping, not worth stopping for: a busy state
/// file loses it, with a warning.
async fn record(store: &Store, entry: HistoryEntry) {
    if let Err(e) = store.update_async(move |tx| tx.push_history(&entry)).await {
        tracing::warn!(error = %e, "cannot record the history entry");
    }
}

#[cfg(test)]
mod tests;
