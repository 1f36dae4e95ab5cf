//! What a running `watch` tells the outside: its health (for `/healthz`),
//! whether its loop still turns (for `/livez`) and its metrics (for
//! `/metrics`), shared between the loop, which updates them, and the HTTP
//! server, which reads them.

use crate::model::Status as InstanceStatus;
use crate::plan::ActionKind;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;

type Labels = Vec<(&'static str, String)>;

/// The reconciler's metrics, in the Prometheus (OpenMetrics) text format.
pub struct Metrics {
    registry: Registry,
    passes: Counter,
    actions: Family<Labels, Counter>,
    instances: Family<Labels, Gauge>,
    revision: Family<Labels, Gauge>,
    drift: Gauge,
    healthy: Gauge,
    plan_seconds: Histogram,
    action_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mcpctl");
        let passes = Counter::default();
        let actions = Family::<Labels, Counter>::default();
        let instances = Family::<Labels, Gauge>::default();
        let revision = Family::<Labels, Gauge>::default();
        let drift = Gauge::default();
        let healthy = Gauge::default();
        // 1 ms to about 16 s: a pass is a list call; an action can be a pull.
        let plan_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let action_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register("passes", "Reconcile passes run", passes.clone());
        registry.register(
            "actions",
            "Actions carried out, by kind and result",
            actions.clone(),
        );
        registry.register("instances", "Instances by status", instances.clone());
        registry.register(
            "applied_revision",
            "The source revision being applied (value 1, the revision in a label)",
            revision.clone(),
        );
        registry.register(
            "drift_actions",
            "Actions the last pass planned: the drift from the source (with --dry-run, left uncorrected)",
            drift.clone(),
        );
        registry.register(
            "healthy",
            "1 when healthy, 0 when degraded",
            healthy.clone(),
        );
        registry.register(
            "plan_duration_seconds",
            "Time to observe and plan, per pass",
            plan_seconds.clone(),
        );
        registry.register(
            "action_duration_seconds",
            "Time to carry out one action",
            action_seconds.clone(),
        );
        Metrics {
            registry,
            passes,
            actions,
            instances,
            revision,
            drift,
            healthy,
            plan_seconds,
            action_seconds,
        }
    }
}

impl Metrics {
    pub fn pass(&self, plan_time: std::time::Duration, drift: usize) {
        self.passes.inc();
        self.plan_seconds.observe(plan_time.as_secs_f64());
        self.drift.set(drift as i64);
    }

    pub fn action(&self, kind: ActionKind, ok: bool, took: std::time::Duration) {
        let result = if ok { "ok" } else { "failed" };
        self.actions
            .get_or_create(&vec![
                ("kind", kind.as_str().to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
        self.action_seconds.observe(took.as_secs_f64());
    }

    pub fn instances(&self, by_status: &BTreeMap<InstanceStatus, usize>) {
        for status in [
            InstanceStatus::Starting,
            InstanceStatus::Running,
            InstanceStatus::Error,
        ] {
            self.instances
                .get_or_create(&vec![("status", status.as_str().to_owned())])
                .set(by_status.get(&status).copied().unwrap_or(0) as i64);
        }
    }

    pub fn revision(&self, revision: &str) {
        self.revision.clear();
        self.revision
            .get_or_create(&vec![("revision", revision.to_owned())])
            .set(1);
    }

    fn healthy(&self, ok: bool) {
        self.healthy.set(i64::from(ok));
    }

    /// The metrics in the text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Why a reconciler is degraded, if it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// The revision being applied (the last good one).
    pub revision: Option<String>,
    /// The newest revision was refused (an invalid file, named with its
    /// line), or the source could not be read or fetched: one line per
    /// problem, each with its help.
    pub source: Option<String>,
    /// The runtime did not answer the last pass.
    pub runtime: Option<String>,
    /// The runtime's event stream is broken (passes still run on the resync
    /// interval, but changes are seen late).
    pub events: Option<String>,
    /// The state file could not be opened or written (another process holds
    /// it, or the disk refuses): passes cannot record what they do.
    pub state: Option<String>,
    /// The scope's applier lease is not ours: another applier holds it, or
    /// it could not be renewed. No pass acts until it is ours again.
    pub lease: Option<String>,
    /// Actions the last pass planned (with `--dry-run`, the drift left alone).
    pub drift: usize,
    pub dry_run: bool,
}

impl Health {
    pub fn ok(&self) -> bool {
        self.source.is_none()
            && self.runtime.is_none()
            && self.events.is_none()
            && self.state.is_none()
            && self.lease.is_none()
            && self.revision.is_some()
    }

    /// Each reason to be degraded, one line each: a refused revision gives
    /// its headline, then one reason per problem, so that a problem's help
    /// stays beside it and nothing in `/healthz` spans lines.
    pub fn reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.revision.is_none() && self.source.is_none() {
            out.push("no valid revision of the source has been read yet".to_owned());
        }
        out.extend(
            self.source
                .iter()
                .flat_map(|s| s.lines())
                .map(|s| format!("source: {s}")),
        );
        out.extend(self.runtime.iter().map(|r| format!("runtime: {r}")));
        out.extend(self.events.iter().map(|e| format!("runtime events: {e}")));
        out.extend(self.state.iter().map(|s| format!("state: {s}")));
        out.extend(self.lease.iter().map(|l| format!("lease: {l}")));
        out
    }
}

/// Health, liveness and metrics, shared by the loop and the HTTP server.
pub struct Shared {
    health: Mutex<Health>,
    /// When the loop last turned; at first, when it was created, so a loop
    /// that never turns at all goes stale too. tokio's clock, so tests can
    /// pause it.
    last_turn: Mutex<tokio::time::Instant>,
    /// Turns so far, for tests that must see the loop go round.
    turns: std::sync::atomic::AtomicU64,
    pub metrics: Metrics,
    /// Set by the webhook: fetch the source now.
    pub sync: tokio::sync::Notify,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            health: Mutex::default(),
            last_turn: Mutex::new(tokio::time::Instant::now()),
            turns: std::sync::atomic::AtomicU64::new(0),
            metrics: Metrics::default(),
            sync: tokio::sync::Notify::default(),
        }
    }
}

impl Shared {
    /// The loop calls this on every turn, whatever the turn found: `/livez`
    /// asks whether the loop runs, not whether the world is healthy.
    pub fn turned(&self) {
        *self.last_turn.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
        self.turns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many times the loop has turned.
    pub fn turns(&self) -> u64 {
        self.turns.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long since the loop last turned (or since `self` was made).
    pub fn since_turn(&self) -> std::time::Duration {
        self.last_turn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// Whether the loop turned within `stale_after`.
    pub fn alive(&self, stale_after: std::time::Duration) -> bool {
        self.since_turn() <= stale_after
    }

    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the health, logging and counting what changed.
    pub fn update(&self, f: impl FnOnce(&mut Health)) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let before = h.ok();
        f(&mut h);
        let after = h.ok();
        self.metrics.healthy(after);
        if before != after {
            if after {
                tracing::info!(revision = h.revision.as_deref().unwrap_or(""), "healthy");
            } else {
                tracing::warn!(reasons = ?h.reasons(), "degraded");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_loop_is_alive_until_it_has_not_turned_for_longer_than_the_bound() {
        let bound = Duration::from_secs(120);
        let shared = Shared::default();
        assert!(shared.alive(bound), "a loop just started is alive");
        tokio::time::advance(Duration::from_secs(121)).await;
        assert!(!shared.alive(bound), "a loop that never turned goes stale");
        shared.turned();
        assert!(shared.alive(bound));
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(shared.alive(bound), "the bound itself is still alive");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!shared.alive(bound));
        assert_eq!(shared.since_turn(), Duration::from_secs(121));
    }

    #[test]
    fn a_broken_event_stream_or_a_busy_state_file_degrades_with_its_reason() {
        let healthy = Health {
            revision: Some("abc".to_owned()),
            ..Health::default()
        };
        assert!(healthy.ok());
        let h = Health {
            events: Some("stream ended: connection reset".to_owned()),
            state: Some("state.redb is held by another process".to_owned()),
            ..healthy
        };
        assert!(!h.ok());
        assert_eq!(
            h.reasons(),
            [
                "runtime events: stream ended: connection reset",
                "state: state.redb is held by another process",
            ]
        );
    }
}
