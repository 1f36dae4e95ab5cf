//! The values every layer shares: ids and hashes, time, what a runtime runs
//! and reports (units, endpoints, events, observations), probe outcomes, and
//! the snapshot's records.
//!
//! **Architecture invariant:** `model` imports nothing else from the crate.
//! It is plain data with a few pure helpers, so that `spec`, `plan`,
//! `runtime`, `probe` and `state` can all speak of the same things without
//! importing each other (see `docs/ARCHITECTURE.md`, "Layers").

mod ids;
mod lease;
mod snapshot;
pub mod text;
mod time;
mod unit;
pub mod urls;
mod workload;

pub use ids::{InstanceId, SpecHash};
pub use lease::{FleetId, Holder, Lease, Process};
pub use snapshot::{
    AppliedSpec, Backoff, CHANGES_CAP, Change, HISTORY_CAP, HistoryEntry, Instance, Intent,
    IntentOp, Liveness, PreviousSpec, Snapshot, Status, Suspension, Transition,
};
pub use time::{Doubling, Timestamp, short_duration};
pub use unit::{
    Endpoint, EventKind, McpIdentity, Observation, Probe, RuntimeEvent, Unit, UnitState, Watched,
};
pub use workload::{
    EnvSource, EnvVar, HttpHeader, HttpHeaderValue, PROBE_HEADERS, PackageRuntime, Program,
    RunSpec, Runners, SecretValue, Transport,
};
