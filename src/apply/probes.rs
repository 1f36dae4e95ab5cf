//! Readiness and liveness checks as a reconciler runs them: which instances
//! are due for a handshake, how to reach each one (its URL, or a runtime
//! attach for stdio), and [`Prober`], which keeps the latest result of each
//! so that probing runs beside the passes instead of inside them.
//!
//! A STARTING instance is probed at once, then again with back-off (100 ms
//! doubling to 2 s) until it answers or its readiness timeout fails it. A
//! RUNNING one is probed every `readiness.period` (liveness).
//!
//! An external server's probes send its `headers`, secrets resolved from
//! the target's [`Secrets`] when the probe is spawned: they live in the
//! probe's memory only, never in a [`ProbeTarget`], the plan or the state.

use super::Target;
use crate::bridge::Bridges;
use crate::model::{
    Endpoint, HttpHeader, HttpHeaderValue, InstanceId, Observation, Snapshot, Status, Timestamp,
    UnitState,
};
use crate::plan::Desired;
use crate::probe::{self, Connection, Readiness};
use crate::runtime::Runtime;
use crate::secrets::Secrets;
use crate::spec::{HeaderValue, Server, Workload};
use std::collections::BTreeMap;
use std::time::Duration;

/// One handshake attempt per probe; a slow server is retried, not waited on.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

pub type Result = Readiness;

/// Whom to probe, and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub instance: InstanceId,
    pub server: String,
    /// Container id or pod name, for an attach; `None` for external servers.
    pub handle: Option<String>,
    pub endpoint: Endpoint,
}

/// The headers of each external server that has any, by server name.
pub type ProbeHeaders = BTreeMap<String, Vec<HttpHeader>>;

/// What an external server's probes send: its headers, secrets filled in
/// (after their prefix). Empty for other servers.
pub fn headers_of(server: &Server, secrets: &Secrets) -> Vec<HttpHeader> {
    let Workload::External(e) = &server.spec.workload else {
        return Vec::new();
    };
    e.headers
        .iter()
        .filter_map(|(name, v)| {
            let value = match v {
                HeaderValue::Plain(s) => HttpHeaderValue::Plain(s.clone()),
                // Resolution happened at plan time, so a miss cannot occur
                // here; leaving the header out shows up as a 401, not a panic.
                HeaderValue::Secret { secret_ref, prefix } => {
                    let secret = secrets.get(secret_ref)?.expose();
                    HttpHeaderValue::Sensitive(crate::model::SecretValue::new(format!(
                        "{prefix}{secret}"
                    )))
                }
            };
            Some(HttpHeader {
                name: name.clone(),
                value,
            })
        })
        .collect()
}

/// [`headers_of`] every server that has headers, for a one-shot refresh.
pub fn probe_headers(servers: &[Server], secrets: &Secrets) -> ProbeHeaders {
    servers
        .iter()
        .map(|s| (s.name.clone(), headers_of(s, secrets)))
        .filter(|(_, h)| !h.is_empty())
        .collect()
}

impl Target {
    /// What probes of `server`'s instances send.
    pub(crate) fn headers_for(&self, server: &str) -> Vec<HttpHeader> {
        self.server(server)
            .map(|(s, _)| headers_of(s, &self.secrets))
            .unwrap_or_default()
    }
}

/// One handshake with `target`: over its URL (with `headers`), or over its
/// stdio bridge in `bridges`, attaching first if it has none.
pub async fn run<R: Runtime + Sync>(
    rt: &R,
    target: &ProbeTarget,
    headers: &[HttpHeader],
    bridges: &Bridges,
) -> Readiness {
    match &target.endpoint {
        Endpoint::Http(url) => {
            probe::readiness(Connection::Url { url, headers }, ATTEMPT_TIMEOUT).await
        }
        // The attach counts against the attempt: an engine that never
        // answers it must not hold a probe (or a one-shot refresh) forever.
        Endpoint::Stdio => {
            let Some(handle) = target.handle.as_deref() else {
                return Readiness::not_ready("a stdio server with no unit to attach to");
            };
            let opened = tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                bridges.open(&target.instance, || rt.attach(handle)),
            )
            .await;
            match opened {
                // The same attach carries the gateway's clients: a check is
                // one more request on it, never a new attach.
                Ok(Ok(bridge)) => probe::readiness_of(bridge.check(ATTEMPT_TIMEOUT).await),
                Ok(Err(e)) => Readiness::not_ready(format!("cannot attach to stdio: {e}")),
                Err(_) => Readiness::not_ready(format!(
                    "cannot attach to stdio: no answer within {}",
                    crate::model::short_duration(ATTEMPT_TIMEOUT)
                )),
            }
        }
    }
}

/// Every check due at `now`, ignoring what may already be in flight: for
/// one-shot commands.
pub fn due(
    snapshot: &Snapshot,
    obs: &Observation,
    desired: &[Desired],
    liveness: bool,
    now: Timestamp,
) -> Vec<ProbeTarget> {
    Prober::default().schedule(snapshot, obs, desired, liveness, now)
}

/// Whether `result`, a liveness check of the RUNNING instance `inst`,
/// leaves everything a pass decides as it is: it passed, and no failure
/// before it is waiting to be reset. Such a result brings no pass; with 25
/// stdio instances checked every 15 s, a pass per check (a list of the
/// engine's containers and a state write) was most of an idle watch's CPU.
pub fn passed_unchanged(inst: &crate::model::Instance, result: &Readiness) -> bool {
    inst.status == Status::Running
        && inst.liveness.failures == 0
        && matches!(result.probe, crate::model::Probe::Ready(_))
}

/// The delay before attempt `n + 1` of a readiness probe, after `n` failed.
/// The same schedule as one probe's own attempts: 100 ms doubling to 2 s.
fn retry_delay(failed: u32) -> Duration {
    crate::probe::BACKOFF.after(failed)
}

/// The latest result for one instance.
#[derive(Debug, Clone)]
struct Seen {
    at: Timestamp,
    result: Readiness,
    /// The status change the attempts are counted from: a demotion starts
    /// readiness probing afresh.
    since: Timestamp,
    attempts: u32,
}

/// Background probing for a reconciler: the latest result of each instance,
/// the attempts in flight, and when the next one falls due.
#[derive(Debug, Default)]
pub struct Prober {
    latest: BTreeMap<InstanceId, Seen>,
    /// In flight, with the status change they were started under.
    in_flight: BTreeMap<InstanceId, Timestamp>,
    next_due: Option<Timestamp>,
}

impl Prober {
    /// Whether the STARTING instance `inst` has answered since it became
    /// STARTING.
    pub fn answered(&self, inst: &crate::model::Instance) -> bool {
        inst.status == Status::Starting
            && self.latest.get(&inst.id).is_some_and(|s| {
                s.at >= inst.transitioned_at
                    && matches!(s.result.probe, crate::model::Probe::Ready(_))
            })
    }

    /// Puts the results the planner may act on into `obs`: for a STARTING
    /// instance, a result taken since it became STARTING; for a RUNNING
    /// one, a liveness result not yet counted.
    pub fn fill(&self, snapshot: &Snapshot, obs: &mut Observation) {
        for (id, seen) in &self.latest {
            let Some(inst) = snapshot.instances.get(id) else {
                continue;
            };
            let fresh = match inst.status {
                Status::Starting => seen.at >= inst.transitioned_at,
                Status::Running => seen.at > inst.liveness.checked_at,
                Status::Error => false,
            };
            if fresh {
                obs.probes.insert(id.clone(), seen.result.probe.clone());
                if let Some(identity) = &seen.result.identity {
                    obs.identities.insert(id.clone(), identity.clone());
                }
            }
        }
    }

    /// The checks to start now, which it then counts as in flight; and
    /// remembers when the next one not yet due falls due.
    pub fn schedule(
        &mut self,
        snapshot: &Snapshot,
        obs: &Observation,
        desired: &[Desired],
        liveness: bool,
        now: Timestamp,
    ) -> Vec<ProbeTarget> {
        let by_name: BTreeMap<&str, &Desired> =
            desired.iter().map(|d| (d.name.as_str(), d)).collect();
        self.latest
            .retain(|id, _| snapshot.instances.contains_key(id));
        self.next_due = None;
        let mut start = Vec::new();
        for inst in snapshot.instances.values() {
            if self.in_flight.contains_key(&inst.id) {
                continue;
            }
            let Some(d) = by_name.get(inst.server.as_str()) else {
                continue;
            };
            let (handle, endpoint) = if d.external {
                match &inst.endpoint {
                    Some(e) => (None, e.clone()),
                    None => continue,
                }
            } else {
                match obs.units.get(&inst.id) {
                    Some(u) if u.state == UnitState::Running => match &u.endpoint {
                        Some(e) => (Some(u.handle.clone()), e.clone()),
                        None => continue,
                    },
                    _ => continue,
                }
            };
            let seen = self.latest.get(&inst.id);
            let due_at = match inst.status {
                Status::Starting => match seen.filter(|s| s.since == inst.transitioned_at) {
                    Some(s) if matches!(s.result.probe, crate::model::Probe::Ready(_)) => {
                        // It answered; the next pass promotes it.
                        continue;
                    }
                    Some(s) => s.at.plus(retry_delay(s.attempts)),
                    None => now,
                },
                Status::Running if liveness => {
                    let last = match seen.filter(|s| s.at > inst.liveness.checked_at) {
                        // A pass that changes nothing is not waited for: the
                        // next pass records it, whenever something else
                        // brings one.
                        Some(s) if passed_unchanged(inst, &s.result) => s.at,
                        // A failure waits for the pass that counts it.
                        Some(_) => continue,
                        None => inst.liveness.checked_at,
                    };
                    last.plus(d.liveness_period)
                }
                _ => continue,
            };
            if due_at <= now {
                self.in_flight.insert(inst.id.clone(), inst.transitioned_at);
                start.push(ProbeTarget {
                    instance: inst.id.clone(),
                    server: inst.server.clone(),
                    handle,
                    endpoint,
                });
            } else {
                self.next_due = Some(self.next_due.map_or(due_at, |n| n.min(due_at)));
            }
        }
        start
    }

    /// Records the result of a check that [`Prober::schedule`] started.
    pub fn finished(&mut self, id: InstanceId, at: Timestamp, result: Readiness) {
        let since = self.in_flight.remove(&id).unwrap_or(at);
        let attempts = match self.latest.get(&id) {
            Some(s) if s.since == since => s.attempts + 1,
            _ => 1,
        };
        self.latest.insert(
            id,
            Seen {
                at,
                result,
                since,
                attempts,
            },
        );
    }

    /// When the next check not yet started falls due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.next_due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_retries_back_off_from_100_ms_to_2_s() {
        let ms: Vec<u128> = (1..=7).map(|n| retry_delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
    }
}
