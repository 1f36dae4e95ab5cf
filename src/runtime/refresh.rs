//! The refresh step: one observe call, detail for the instances whose
//! readiness is in question, and their readiness checks. The result is the
//! [`Observation`] the planner reads; everything here is I/O so that the
//! planner need not be.

use super::{Observation, Runtime, RuntimeError};
use crate::plan::Desired;
use crate::probe::{self, Target};
use crate::state::{Snapshot, Status};
use crate::time::Timestamp;
use std::collections::BTreeMap;

pub async fn refresh<R: Runtime>(
    rt: &R,
    snapshot: &Snapshot,
    desired: &[Desired],
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
    let external: BTreeMap<&str, bool> = desired
        .iter()
        .map(|d| (d.name.as_str(), d.external))
        .collect();
    let mut obs = Observation {
        at: now,
        units: BTreeMap::new(),
        probes: BTreeMap::new(),
    };
    for mut unit in units {
        let known = snapshot.instances.get(&unit.instance);
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
            obs.probes.insert(
                unit.instance.clone(),
                probe::readiness(Target::Unit(&unit), now).await,
            );
        }
        obs.units.insert(unit.instance.clone(), unit);
    }
    for inst in snapshot.instances.values() {
        if inst.status == Status::Starting && external.get(inst.server.as_str()) == Some(&true) {
            obs.probes.insert(
                inst.id.clone(),
                probe::readiness(Target::External(&inst.endpoint), now).await,
            );
        }
    }
    Ok(obs)
}
