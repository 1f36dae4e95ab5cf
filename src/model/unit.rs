//! What runtimes and probes report: units (a container or a pod) with their
//! state, where to reach them, the events that announce a change, probe
//! outcomes, and the [`Observation`] that gathers them for the planner.

use super::{InstanceId, SpecHash, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the runtime says one unit (container or pod) is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnitState {
    /// Created but not started (or a pull in progress).
    Created,
    Running,
    /// The runtime is restarting it under its restart policy.
    Restarting,
    /// Stopped with this exit code, and will not be restarted.
    Exited(i64),
    /// The runtime gave up on it: it will not run again, and nobody asked
    /// for that. (Docker's `dead` is not this: Docker marks a container
    /// dead while removing it, so it reads as exited.)
    Dead,
}

impl UnitState {
    pub fn describe(self) -> String {
        match self {
            UnitState::Created => "created".into(),
            UnitState::Running => "running".into(),
            UnitState::Restarting => "restarting".into(),
            UnitState::Exited(code) => format!("exited ({code})"),
            UnitState::Dead => "dead".into(),
        }
    }
}

/// Where a probe reaches an instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An HTTP(S) URL the probe connects to directly: a published port, or
    /// an external server.
    Http(String),
    /// The unit's stdin and stdout, reached through the runtime's attach.
    Stdio,
}

impl Endpoint {
    /// The stored spelling back: `stdio`, a URL, or empty for "not known".
    pub fn parse(text: &str) -> Option<Endpoint> {
        match text {
            "" => None,
            "stdio" => Some(Endpoint::Stdio),
            url => Some(Endpoint::Http(url.to_owned())),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Http(url) => f.write_str(url),
            Endpoint::Stdio => f.write_str("stdio"),
        }
    }
}

/// One labelled unit as observed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unit {
    pub instance: InstanceId,
    pub server: String,
    pub spec_hash: SpecHash,
    /// Container id or pod name.
    pub handle: String,
    pub state: UnitState,
    /// Restarts under the runtime's restart policy; `None` when the listing
    /// does not say (Docker's list call), and the unit was not inspected.
    pub restarts: Option<u32>,
    /// The exit code of the last run, when it has exited at least once.
    pub exit_code: Option<i64>,
    /// The last non-empty log line (stderr first), for error reasons.
    pub last_log: Option<String>,
    /// Where the probe connects, once known.
    pub endpoint: Option<Endpoint>,
    /// When the current run began, when the runtime said.
    pub started_at: Option<Timestamp>,
}

/// The outcome of the latest readiness probe of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Probe {
    /// It answered; the text says how (era, version, server name).
    Ready(String),
    /// It did not; the text says why.
    NotReady(String),
}

/// The MCP identity an instance proved in its handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpIdentity {
    /// `2026-07-28 (server/discover)` or `2025-11-25 (initialize)`: the era by its handshake.
    pub handshake: String,
    pub protocol_version: String,
    pub server_name: String,
    pub server_version: String,
    pub transport: String,
    pub latency_ms: f64,
}

impl Eq for McpIdentity {}

/// What the runtime and the probes say exists now. Gathering it is I/O, done
/// by the apply side; the planner only reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// When it was gathered; the planner's notion of "now".
    pub at: Timestamp,
    pub units: BTreeMap<InstanceId, Unit>,
    /// Probe results for instances not yet RUNNING, and liveness results for RUNNING ones.
    pub probes: BTreeMap<InstanceId, Probe>,
    /// The MCP identity behind each passing probe, for the record.
    pub identities: BTreeMap<InstanceId, McpIdentity>,
}

impl Observation {
    /// A short digest of what was observed, recorded in saved plans so that
    /// `apply PLANFILE` can tell when the world changed after `plan`. The time
    /// of observation is left out: only the facts count.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (id, u) in &self.units {
            h.update(format!(
                "{id}\0{}\0{}\0{:?}\0{:?}\n",
                u.server, u.spec_hash, u.state, u.restarts
            ));
        }
        for (id, p) in &self.probes {
            let ok = matches!(p, Probe::Ready(_));
            h.update(format!("{id}\0{ok}\n"));
        }
        hex::encode(&h.finalize()[..8])
    }
}

/// One item of a runtime's events stream (see the runtime contract).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    /// One of our units changed.
    Event(RuntimeEvent),
    /// The stream broke and has been opened again. Whatever happened in the
    /// gap may be missing, so the world is worth one more look.
    Resumed,
}

/// A change the runtime reports for one of our units; a reason to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    pub instance: InstanceId,
    pub server: String,
    pub kind: EventKind,
}

/// The lifecycle changes a reconciler cares about, in no runtime's dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    /// Started, or started again by the runtime's restart policy.
    Started,
    /// The process ended (exit, kill, out of memory), with its code when known.
    Died {
        exit_code: Option<i64>,
    },
    /// The unit is gone.
    Removed,
}
