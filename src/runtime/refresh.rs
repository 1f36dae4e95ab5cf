//! The refresh step: one observe call, detail for the instances whose
//! readiness is in question, and an MCP handshake with each of them. The
//! result is the [`Observation`] the planner reads; everything here is I/O
//! so that the planner need not be.

use super::{Observation, Runtime, RuntimeError, Unit};
use crate::plan::Desired;
use crate::probe::{self, Target};
use crate::state::{InstanceId, Snapshot, Status};
use crate::time::Timestamp;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;

/// One handshake attempt per instance per pass; the pass loop is the retry.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Handshakes in flight at once.
const PROBES_IN_FLIGHT: usize = 16;

/// With `liveness`, RUNNING instances whose last probe is older than their
/// server's period are probed too (watch and `apply --wait` do; `plan` and a
/// first pass do not, so a converged fleet still costs one list call).
pub async fn refresh<R: Runtime + Sync>(
    rt: &R,
    snapshot: &Snapshot,
    desired: &[Desired],
    liveness: bool,
) -> Result<Observation, RuntimeError> {
    // Ask which containers died since the oldest RUNNING instance became
    // RUNNING: any of them may have been restarted behind our back.
    let since = snapshot
        .instances
        .values()
        .filter(|i| i.status == Status::Running)
        .map(|i| i.transitioned_at)
        .min();
    let units = rt.observe(since).await?;
    let now = Timestamp::now();
    let mut obs = Observation {
        at: now,
        ..Observation::default()
    };
    let mut to_probe: Vec<InstanceId> = Vec::new();
    let by_name: BTreeMap<&str, &Desired> = desired.iter().map(|d| (d.name.as_str(), d)).collect();
    let due = |i: &crate::state::Instance| {
        liveness
            && i.status == Status::Running
            && by_name
                .get(i.server.as_str())
                .is_some_and(|d| now.since(i.liveness.checked_at) >= d.liveness_period)
    };
    for mut unit in units {
        let known = snapshot.instances.get(&unit.instance);
        if known.is_some_and(&due) && unit.state == super::UnitState::Running {
            to_probe.push(unit.instance.clone());
        }
        let in_question = match known {
            Some(i) => i.status == Status::Starting,
            // Unknown to the state: a candidate for adoption, so check it too.
            None => snapshot.intents.contains_key(&unit.instance),
        };
        if in_question && unit.started_at.is_none() && !rt.inspect(&mut unit).await? {
            continue;
        }
        if let Some(i) = known.filter(|_| unit.started_at.is_none()) {
            // Not inspected: the list call carries no restart count, so keep
            // the recorded one rather than invent a change.
            unit.restarts = i.restarts;
        }
        if in_question {
            to_probe.push(unit.instance.clone());
        }
        obs.units.insert(unit.instance.clone(), unit);
    }

    let externals: Vec<(&InstanceId, &str)> = snapshot
        .instances
        .values()
        .filter(|i| {
            (i.status == Status::Starting || due(i))
                && by_name.get(i.server.as_str()).is_some_and(|d| d.external)
        })
        .map(|i| (&i.id, i.endpoint.as_str()))
        .collect();

    let units = &obs.units;
    let checks = to_probe
        .iter()
        .filter_map(|id| units.get(id).map(|u| (id, Check::Unit(u))))
        .chain(
            externals
                .into_iter()
                .map(|(id, url)| (id, Check::External(url))),
        )
        .map(|(id, check)| async move {
            let target = match check {
                Check::Unit(u) => Target::Unit(u),
                Check::External(url) => Target::External(url),
            };
            (
                id.clone(),
                probe::readiness(rt, target, ATTEMPT_TIMEOUT).await,
            )
        });
    let results: Vec<_> = futures_util::stream::iter(checks)
        .buffer_unordered(PROBES_IN_FLIGHT)
        .collect()
        .await;
    for (id, r) in results {
        if let Some(identity) = r.identity {
            obs.identities.insert(id.clone(), identity);
        }
        obs.probes.insert(id, r.probe);
    }
    Ok(obs)
}

enum Check<'a> {
    Unit(&'a Unit),
    External(&'a str),
}
