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

pub use http::serve;
pub use status::{Health, Metrics, Shared};

use crate::apply::{Applier, ApplyError, Event, Options as ApplyOptions, Target, Trigger};
use crate::model::{HistoryEntry, Runners, Timestamp};
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
}

impl Resolver {
    /// The revision's servers, validated, secrets resolved. Refused, with
    /// one reason per line (each naming its file and line), when any
    /// document is invalid or a secret is missing, or when the revision has
    /// no servers while `known` are running.
    pub fn target(
        &self,
        snapshot: source::Snapshot,
        digest_key: &[u8; 32],
        known: usize,
    ) -> Result<Target, String> {
        let servers = crate::spec::load_with(&snapshot.files, self.limits).map_err(|e| {
            e.iter()
                .map(|e| e.to_string())
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
                    .map(|m| m.to_string())
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
    Applier(Trigger),
}

/// Runs until `shutdown` resolves. `sync_now` asks the source to fetch at
/// once (the webhook). Returns an error only for a state file it cannot use.
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
) -> Result<(), ApplyError> {
    let key = store.digest_key_async().await?;
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
        // The loop runs until shutdown; no pass has a deadline of its own.
        timeout: Duration::from_secs(u64::from(u32::MAX)),
        allow_empty: resolver.allow_empty,
        command: "watch".into(),
        only: None,
        dry_run: opts.dry_run,
    };
    shared.update(|h| h.dry_run = opts.dry_run);
    let far = tokio::time::Instant::now() + Duration::from_secs(u64::from(u32::MAX));
    let mut applier: Option<Applier<'_, R>> = None;
    let mut resync = tokio::time::interval(opts.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    // After a new revision, its first pass is recorded in the history.
    let mut fresh: Option<Option<String>> = None;
    let mut converged = false;
    tokio::pin!(shutdown);
    loop {
        let wake = match applier.as_mut() {
            Some(a) => tokio::select! {
                () = &mut shutdown => Wake::Shutdown,
                ev = source.recv() => Wake::Source(ev),
                () = shared.sync.notified() => Wake::Sync,
                _ = resync.tick() => Wake::Resync,
                t = a.next_trigger(far) => Wake::Applier(t),
            },
            // No good revision yet: nothing to reconcile toward.
            None => tokio::select! {
                () = &mut shutdown => Wake::Shutdown,
                ev = source.recv() => Wake::Source(ev),
                () = shared.sync.notified() => Wake::Sync,
            },
        };
        match wake {
            Wake::Shutdown => break,
            Wake::Source(None) => {
                // The source's watcher is gone: keep reconciling what we have.
                shared.update(|h| {
                    h.source = Some("the source watcher stopped; keeping the last revision".into())
                });
                // Without this, a closed channel would wake the loop at once, forever.
                let _ = std::mem::replace(&mut source, mpsc::channel(1).1);
                continue;
            }
            Wake::Source(Some(SourceEvent::Failed(error))) => {
                let kept = shared.health().revision;
                tracing::error!(%error, keeping = kept.as_deref().unwrap_or("(none)"), "source failed");
                shared.update(|h| {
                    h.source = Some(match &kept {
                        Some(r) => format!("{error}; keeping revision {r}"),
                        None => error.clone(),
                    })
                });
                continue;
            }
            Wake::Source(Some(SourceEvent::Revision {
                snapshot,
                forced_from,
            })) => {
                let revision = snapshot.info.revision.clone();
                let location = snapshot.info.location.clone();
                let known = store.load_async().await?.servers.len();
                match resolver.target(snapshot, &key, known) {
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
                        let target = Arc::new(target);
                        match applier.as_mut() {
                            Some(a) => a.set_target(target),
                            None => {
                                let mut a =
                                    Applier::new(rt, store, target, apply_opts.clone(), &on_event);
                                a.subscribe();
                                a.start(None).await?;
                                applier = Some(a);
                            }
                        }
                        fresh = Some(forced_from);
                    }
                    Err(why) => {
                        tracing::error!(%revision, reasons = %why, "revision refused; nothing changes");
                        shared.update(|h| {
                            h.source = Some(format!("revision {revision} refused:\n{why}"))
                        });
                        if !opts.dry_run {
                            let first = why.lines().next().unwrap_or_default().to_owned();
                            let entry = HistoryEntry {
                                at: Timestamp::now(),
                                revision,
                                source: location,
                                actions: 0,
                                outcome: format!("watch: refused: {first}"),
                            };
                            store
                                .update_async(move |tx| tx.push_history(&entry))
                                .await?;
                        }
                        continue;
                    }
                }
            }
            Wake::Sync => {
                sync_now();
                if applier.is_none() {
                    continue;
                }
            }
            Wake::Resync => tracing::debug!("resync"),
            Wake::Applier(trigger) => tracing::trace!(?trigger, "woke"),
        }
        let Some(a) = applier.as_mut() else { continue };
        a.absorb_ready();
        match a.pass(None).await {
            Ok(()) => {}
            // The safety rules refused the plan: keep the fleet as it is.
            Err(ApplyError::Plan(e)) => {
                shared.update(|h| h.source = Some(e.to_string()));
                continue;
            }
            Err(e) => return Err(e),
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
            continue;
        }
        let target = a.target().clone();
        let entry = |outcome: String, actions: usize| HistoryEntry {
            at: Timestamp::now(),
            revision: target.source.revision.clone(),
            source: target.source.location.clone(),
            actions,
            outcome,
        };
        let record = if let Some(forced_from) = fresh.take() {
            let forced = forced_from
                .map(|f| format!(" (force-push from {f})"))
                .unwrap_or_default();
            let summary = actions_summary(&last.actions);
            Some(entry(
                format!("watch: applying{forced}: {summary}"),
                last.actions.len(),
            ))
        } else if last.converged && !converged {
            Some(entry("watch: converged".into(), 0))
        } else {
            None
        };
        converged = last.converged;
        if let Some(e) = record {
            store.update_async(move |tx| tx.push_history(&e)).await?;
        }
    }
    if let Some(a) = applier.as_mut() {
        tracing::info!("shutting down: letting the actions in flight finish");
        a.drain().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
