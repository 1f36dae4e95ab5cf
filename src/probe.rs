//! Readiness: whether an instance may be promoted to RUNNING.
//!
//! For now readiness is "the container runs and has not restarted for 2 s";
//! external servers are taken as ready. Everything goes through [`readiness`],
//! which the MCP handshake probe (design §6) replaces without touching callers.

use crate::runtime::{Probe, Unit, UnitState};
use crate::time::{Timestamp, short_duration};
use std::time::Duration;

/// How long a container must stay up before it counts as ready.
pub const SETTLE: Duration = Duration::from_secs(2);

/// The target of a readiness check.
pub enum Target<'a> {
    /// A container (or pod) with its detail filled in by `Runtime::inspect`.
    Unit(&'a Unit),
    /// An external server's URL.
    External(&'a str),
}

pub async fn readiness(target: Target<'_>, now: Timestamp) -> Probe {
    match target {
        Target::External(_) => Probe::Ready("external server".into()),
        Target::Unit(unit) => {
            if unit.state != UnitState::Running {
                return Probe::NotReady(format!("container {}", unit.state.describe()));
            }
            match unit.started_at {
                None => Probe::NotReady("container has not started".into()),
                Some(at) if now.since(at) >= SETTLE => {
                    Probe::Ready(format!("running for {}", short_duration(now.since(at))))
                }
                Some(at) => {
                    Probe::NotReady(format!("up for only {} ms", now.since(at).as_millis()))
                }
            }
        }
    }
}
