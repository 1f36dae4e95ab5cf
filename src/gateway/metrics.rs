//! What the gateway counts, for its `/metrics`: requests, errors, latency,
//! outstanding requests and pinned sessions, per server and per instance,
//! in the Prometheus text format `watch` serves too.
//!
//! The label sets are bounded by the fleet, not by uptime or by clients:
//! an instance's label sets go when it leaves the routing table and a
//! server's when it leaves the state; a name the state does not know is
//! counted under `server="-"`, and an MCP method outside the spec's under
//! `method="other"`, so no client can make the gateway remember more.

use super::balance::{Outstanding, Pins};
use super::table::Table;
use crate::model::InstanceId;
use hyper::StatusCode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The content type of [`Metrics::scrape`]'s text, as `watch` serves it.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label value for a server the state does not know, and for an
/// instance not chosen (the gateway refused first) or an MCP method not known.
const NONE: &str = "-";

/// The methods of the MCP spec (both eras), the only values the `method`
/// label takes besides `other` and `-`.
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "notifications/tasks/status",
];

type Labels = Vec<(&'static str, String)>;

/// The value of the `method` label for an MCP method a request named, if
/// the gateway knows it: one of the spec's, else `other`.
pub fn method_label(method: Option<&str>) -> &'static str {
    match method {
        None => NONE,
        Some(m) => METHODS
            .iter()
            .find(|k| **k == m)
            .copied()
            .unwrap_or("other"),
    }
}

/// What became of one request, as the metrics count it.
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    /// The server the path named, as the client wrote it.
    pub server: &'a str,
    /// The instance the request went to; `None` when the gateway refused it
    /// before choosing one.
    pub instance: Option<&'a InstanceId>,
    /// The MCP method, when the gateway knows it without reading the body
    /// (the 2026-era `Mcp-Method` header), or once it reads it.
    pub method: Option<&'a str>,
    /// The status the client got.
    pub status: StatusCode,
    /// From the request's head to the response's head (an SSE stream goes
    /// on after it).
    pub took: Duration,
}

/// The gateway's metrics. Counters and the histogram move per request
/// ([`Metrics::record`]); the two gauges are read at scrape time from the
/// balancer's own tables ([`Metrics::scrape`]), so they cannot drift from
/// what the balancer does.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    outstanding: Family<Labels, Gauge>,
    sessions: Family<Labels, Gauge>,
    seen: Mutex<Seen>,
}

/// The label sets in use, so that they can be removed: prometheus-client
/// removes a label set only when given it whole.
#[derive(Default)]
struct Seen {
    /// The table the label sets were last pruned against.
    table: Option<Arc<Table>>,
    /// (server, instance) → the (method, code) pairs of its request counters.
    series: BTreeMap<(String, String), BTreeSet<(&'static str, u16)>>,
}

/// Half a millisecond to about 33 s: a `ping` through the gateway is well
/// under a millisecond; a tool call may run for many seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mcpctl_gateway");
        let requests = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        let latency =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let outstanding = Family::<Labels, Gauge>::default();
        let sessions = Family::<Labels, Gauge>::default();
        registry.register(
            "requests",
            "Requests answered, by server, instance, MCP method (- when not known) and HTTP status",
            requests.clone(),
        );
        registry.register(
            "errors",
            "Requests that failed: refused by the gateway (4xx, 5xx), or failed by the instance (no answer, 5xx)",
            errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's head to its response's head",
            latency.clone(),
        );
        registry.register(
            "outstanding_requests",
            "Requests in flight per instance, SSE streams included",
            outstanding.clone(),
        );
        registry.register(
            "sessions",
            "2025-era sessions pinned to each instance",
            sessions.clone(),
        );
        Metrics {
            registry,
            requests,
            errors,
            latency,
            outstanding,
            sessions,
            seen: Mutex::default(),
        }
    }
}

fn pair(server: &str, instance: &str) -> Labels {
    vec![
        ("server", server.to_owned()),
        ("instance", instance.to_owned()),
    ]
}

fn with(mut labels: Labels, more: &[(&'static str, &str)]) -> Labels {
    labels.extend(more.iter().map(|(k, v)| (*k, (*v).to_owned())));
    labels
}

impl Metrics {
    /// Counts one request. `table` is the routing table in force now: a
    /// server it does not know is counted as `-`, and label sets of servers
    /// and instances that have left it since the last call are removed.
    pub fn record(&self, table: &Arc<Table>, served: &Served<'_>) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if !seen.table.as_ref().is_some_and(|t| Arc::ptr_eq(t, table)) {
            self.prune(&mut seen, table);
            seen.table = Some(table.clone());
        }
        let (server, instance) = if table.has(served.server) {
            (
                served.server,
                served.instance.map_or(NONE, |i| i.0.as_str()),
            )
        } else {
            (NONE, NONE)
        };
        let method = method_label(served.method);
        let code = served.status.as_u16();
        let labels = pair(server, instance);
        self.requests
            .get_or_create(&with(
                labels.clone(),
                &[("method", method), ("code", served.status.as_str())],
            ))
            .inc();
        self.latency
            .get_or_create(&labels)
            .observe(served.took.as_secs_f64());
        let failed_by = match served.instance {
            None if served.status.is_client_error() || served.status.is_server_error() => {
                Some("gateway")
            }
            Some(_) if served.status.is_server_error() => Some("instance"),
            _ => None,
        };
        if let Some(by) = failed_by {
            self.errors
                .get_or_create(&with(labels, &[("by", by)]))
                .inc();
        }
        seen.series
            .entry((server.to_owned(), instance.to_owned()))
            .or_default()
            .insert((method, code));
    }

    /// The metrics in the text format, the gauges read now from the
    /// balancer's tables for the instances of `table`.
    pub fn scrape(&self, table: &Arc<Table>, outstanding: &Outstanding, pins: &Pins) -> String {
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            // Always, not only when the table changed: a request that
            // outlived its instance was counted after the last prune.
            self.prune(&mut seen, table);
            seen.table = Some(table.clone());
            let in_flight = outstanding.all();
            let pinned = pins.per_instance();
            for (server, backend) in table.ready() {
                let labels = pair(server, &backend.instance.0);
                let n = in_flight.get(&backend.instance).copied().unwrap_or(0);
                self.outstanding.get_or_create(&labels).set(n as i64);
                let n = pinned
                    .get(&(server.to_owned(), backend.instance.clone()))
                    .copied()
                    .unwrap_or(0);
                self.sessions.get_or_create(&labels).set(n as i64);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Removes the label sets of servers that left `table`, and of instances
    /// no longer routable in it. The `-` server stays, and a known server's
    /// `-` instance (its refusals) stays while the server does.
    fn prune(&self, seen: &mut Seen, table: &Table) {
        let stays = |server: &str, instance: &str| {
            server == NONE
                || (instance == NONE && table.has(server))
                || table.is_routable(server, &InstanceId(instance.to_owned()))
        };
        seen.series.retain(|(server, instance), pairs| {
            if stays(server, instance) {
                return true;
            }
            let labels = pair(server, instance);
            for (method, code) in pairs.iter() {
                let code = code.to_string();
                self.requests.remove(&with(
                    labels.clone(),
                    &[("method", *method), ("code", &code)],
                ));
            }
            for by in ["gateway", "instance"] {
                self.errors.remove(&with(labels.clone(), &[("by", by)]));
            }
            self.latency.remove(&labels);
            false
        });
        // The gauges are set for the routable instances of the table in
        // force at the time, so that table says which may have them.
        let gone: Vec<Labels> = seen
            .table
            .iter()
            .flat_map(|t| t.ready())
            .filter(|(s, b)| !table.is_routable(s, &b.instance))
            .map(|(s, b)| pair(s, &b.instance.0))
            .collect();
        for labels in gone {
            self.outstanding.remove(&labels);
            self.sessions.remove(&labels);
        }
    }

    /// Label sets in use across every family, for tests of the bound: a
    /// sample line each, a histogram's by its `_count`.
    #[cfg(test)]
    pub(super) fn label_sets(&self) -> usize {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                !["_bucket{", "_sum{", "_created{"]
                    .iter()
                    .any(|s| l.contains(s))
            })
            .count()
    }
}
