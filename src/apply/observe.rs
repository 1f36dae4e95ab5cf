//! Looking at the world: one [`Runtime::observe`], detail for the units
//! whose status is in question, and (for one-shot commands) an MCP handshake
//! with each of them. The result is the [`Observation`] the planner reads.
//! Everything here is I/O, so that the planner need not be.

use super::probes::{self, ProbeHeaders, ProbeTarget};
use crate::model::text::untrusted;
use crate::model::{InstanceId, Observation, Probe, Snapshot, Status, Timestamp};
use crate::plan::Desired;
use crate::runtime::{Runtime, RuntimeError};
use crate::secrets::Secrets;
use crate::spec::Server;
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};

/// Handshakes in flight at once.
pub const PROBES_IN_FLIGHT: usize = 16;
/// Inspects in flight at once, within one look.
const INSPECTS_IN_FLIGHT: usize = 16;

/// One look: the list, plus an inspect of each unit whose detail the
/// planner needs and the listing left out: units an intent says we were
/// creating (candidates for adoption) unless their server is one of `busy`
/// (the create is ours, and under way), and the STARTING instances `detail`
/// names. A STARTING instance needs its start time only once it has
/// answered (the stability window runs from it); restarts need no inspect
/// here, since a runtime's listing reports any it sees. No probes.
pub async fn observe<R: Runtime + Sync>(
    rt: &R,
    snapshot: &Snapshot,
    busy: &BTreeSet<String>,
    detail: impl Fn(&InstanceId) -> bool,
) -> Result<Observation, RuntimeError> {
    let units = rt.observe().await?;
    let mut obs = Observation {
        at: Timestamp::now(),
        ..Observation::default()
    };
    let mut wanted = Vec::new();
    for unit in units {
        let in_question = match snapshot.instances.get(&unit.instance) {
            Some(_) => needs_start_time(snapshot, &unit, &detail),
            // Unknown to the state: a candidate for adoption, so check it
            // too; unless it is ours, being made right now. An inspect of a
            // unit being started waits for the start to finish, and would
            // hold up the whole pass.
            None => {
                unit.restarts.is_none()
                    && snapshot.intents.contains_key(&unit.instance)
                    && !busy.contains(&unit.server)
            }
        };
        if in_question {
            wanted.push(unit.instance.clone());
        }
        obs.units.insert(unit.instance.clone(), unit);
    }
    inspect(rt, &mut obs, wanted).await?;
    Ok(obs)
}

/// Whether `unit` is a STARTING instance that `answered` and whose start
/// time the listing left out: the stability window runs from it.
fn needs_start_time(
    snapshot: &Snapshot,
    unit: &crate::model::Unit,
    answered: impl Fn(&InstanceId) -> bool,
) -> bool {
    unit.restarts.is_none()
        && snapshot
            .instances
            .get(&unit.instance)
            .is_some_and(|i| i.status == Status::Starting && answered(&i.id))
}

/// Replaces the listed units `ids` in `obs` by their inspected detail.
async fn inspect<R: Runtime + Sync>(
    rt: &R,
    obs: &mut Observation,
    ids: Vec<InstanceId>,
) -> Result<(), RuntimeError> {
    let handles: Vec<(InstanceId, String)> = ids
        .into_iter()
        .filter_map(|id| obs.units.get(&id).map(|u| (id, u.handle.clone())))
        .collect();
    // A cold start has many units in question at once; one inspect after
    // another would make each look as slow as the fleet is large.
    let detailed: Vec<(InstanceId, Result<Option<_>, RuntimeError>)> =
        futures_util::stream::iter(handles)
            .map(|(id, handle)| async move { (id, rt.inspect(&handle).await) })
            .buffer_unordered(INSPECTS_IN_FLIGHT)
            .collect()
            .await;
    for (id, unit) in detailed {
        match unit? {
            Some(unit) => {
                obs.units.insert(unit.instance.clone(), unit);
            }
            // Gone between the list and the inspect.
            None => {
                obs.units.remove(&id);
            }
        }
    }
    Ok(())
}

/// [`observe`], then one handshake with every STARTING instance (and, with
/// `liveness`, every RUNNING one whose check is due), all awaited. For
/// `plan` and the first pass of `apply`, which show what the world is now;
/// a reconciler probes in the background instead. External servers' probes
/// send their `headers` (see [`probes::probe_headers`]).
pub async fn refresh<R: Runtime + Sync>(
    rt: &R,
    snapshot: &Snapshot,
    desired: &[Desired],
    headers: &ProbeHeaders,
    liveness: bool,
) -> Result<Observation, RuntimeError> {
    let mut obs = observe(rt, snapshot, &BTreeSet::new(), |_| false).await?;
    let targets = probes::due(snapshot, &obs, desired, liveness, obs.at);
    // Bridges for this look only: a one-shot command detaches when done.
    let bridges = crate::bridge::Bridges::default();
    let bridges = &bridges;
    let results: Vec<(InstanceId, probes::Result)> = futures_util::stream::iter(targets)
        .map(|t: ProbeTarget| async move {
            let sent = headers.get(&t.server).map_or(&[][..], Vec::as_slice);
            (t.instance.clone(), probes::run(rt, &t, sent, bridges).await)
        })
        .buffer_unordered(PROBES_IN_FLIGHT)
        .collect()
        .await;
    for (id, r) in results {
        if let Some(identity) = r.identity {
            obs.identities.insert(id.clone(), identity);
        }
        obs.probes.insert(id, r.probe);
    }
    let ready = |id: &InstanceId| matches!(obs.probes.get(id), Some(Probe::Ready(_)));
    let answered: Vec<InstanceId> = obs
        .units
        .values()
        .filter(|u| needs_start_time(snapshot, u, ready))
        .map(|u| u.instance.clone())
        .collect();
    inspect(rt, &mut obs, answered).await?;
    Ok(obs)
}

/// Makes the server-supplied text in `obs` safe to store and print (see
/// `model::text`): last log lines, probe results and reported identities,
/// each with the secrets of its own server redacted. Text of servers not in
/// `servers` (orphans, pruned servers) still loses escapes and is capped.
pub fn sanitize(obs: &mut Observation, snapshot: &Snapshot, servers: &[Server], secrets: &Secrets) {
    let by_name: BTreeMap<&str, Vec<&str>> = servers
        .iter()
        .map(|s| (s.name.as_str(), secrets.values_of(s)))
        .collect();
    let none = Vec::new();
    let of = |server: &str| by_name.get(server).unwrap_or(&none).as_slice();
    let mut server_of: BTreeMap<InstanceId, String> = snapshot
        .instances
        .values()
        .map(|i| (i.id.clone(), i.server.clone()))
        .collect();
    for u in obs.units.values_mut() {
        server_of.insert(u.instance.clone(), u.server.clone());
        if let Some(line) = &u.last_log {
            u.last_log = Some(untrusted(line, of(&u.server)));
        }
    }
    // An external server's instance has no unit: the snapshot names its server.
    for (id, p) in obs.probes.iter_mut() {
        let secrets = server_of.get(id).map_or(&[][..], |s| of(s));
        *p = match p {
            Probe::Ready(how) => Probe::Ready(untrusted(how, secrets)),
            Probe::NotReady(why) => Probe::NotReady(untrusted(why, secrets)),
        };
    }
    for (id, m) in obs.identities.iter_mut() {
        let secrets = server_of.get(id).map_or(&[][..], |s| of(s));
        m.server_name = untrusted(&m.server_name, secrets);
        m.server_version = untrusted(&m.server_version, secrets);
        m.handshake = untrusted(&m.handshake, secrets);
        m.protocol_version = untrusted(&m.protocol_version, secrets);
    }
}
