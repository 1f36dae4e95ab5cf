//! Runtimes run instances and report what exists. This module owns the
//! [`Runtime`] trait that Docker and Kubernetes implement, the
//! [`Observation`] the planner reads, and [`fake::FakeRuntime`], the
//! in-memory world that planner and apply tests run against.
//!
//! # The runtime contract
//!
//! **Expected flow.** A pass calls [`Runtime::observe`] once, plans, then calls
//! [`Runtime::create`] and [`Runtime::remove`] for the plan's actions.
//!
//! **Guarantees the implementations give.**
//! - `observe` lists every unit carrying mcpctl's labels in one call, whoever
//!   created it, so a half-finished create from a crashed apply is seen.
//! - `create` labels the unit with server, instance and spec hash *before* it
//!   can start, so a crash between create and start leaves a unit `observe` finds.
//! - `remove` is idempotent: removing a unit that is already gone succeeds.
//!
//! **Assumptions.** Instance ids are unique; callers never create the same id twice.
//!
//! **Caveats.** `observe` is a point-in-time view: a unit may die right after.
//! The planner therefore never trusts it beyond one pass.
//!
//! **Errors.** [`RuntimeError`] says which unit and which operation failed, with the
//! engine's own message.

pub mod docker;
pub mod fake;
mod refresh;

pub use refresh::{ATTEMPT_TIMEOUT, refresh};

use crate::spec::{SpecHash, Transport};
use crate::state::InstanceId;
use crate::time::Timestamp;
use std::collections::BTreeMap;
use std::future::Future;

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
    /// The runtime gave up on it (Docker `dead`, a pod that failed).
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

/// One labelled unit as observed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unit {
    pub instance: InstanceId,
    pub server: String,
    pub spec_hash: SpecHash,
    /// Container id or pod name.
    pub handle: String,
    pub state: UnitState,
    pub restarts: u32,
    /// The exit code of the last run, when it has exited at least once.
    pub exit_code: Option<i64>,
    /// The last non-empty log line (stderr first), for error reasons.
    pub last_log: Option<String>,
    /// Where the probe connects, once known.
    pub endpoint: Option<String>,
    /// When the current run began; filled in by [`Runtime::inspect`].
    pub started_at: Option<Timestamp>,
}

impl Unit {
    /// The unit an instance's record points at, before anything is known of
    /// it: for `Runtime::inspect` to fill in.
    pub fn of(inst: &crate::state::Instance) -> Unit {
        Unit {
            instance: inst.id.clone(),
            server: inst.server.clone(),
            spec_hash: inst.spec_hash.clone(),
            handle: inst.handle.clone(),
            state: UnitState::Created,
            restarts: 0,
            exit_code: None,
            last_log: None,
            endpoint: Some(inst.endpoint.clone()),
            started_at: None,
        }
    }
}

/// The outcome of the latest readiness probe of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Probe {
    /// It answered; the text says how (era, version, server name).
    Ready(String),
    /// It did not; the text says why.
    NotReady(String),
}

/// What the runtime and the probes say exists now. Gathering it is I/O, done in
/// the refresh step; the planner only reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// When it was gathered; the planner's notion of "now".
    pub at: Timestamp,
    pub units: BTreeMap<InstanceId, Unit>,
    /// Probe results for instances not yet RUNNING, and liveness results for RUNNING ones.
    pub probes: BTreeMap<InstanceId, Probe>,
    /// The MCP identity behind each passing probe, for the record.
    pub identities: BTreeMap<InstanceId, crate::state::McpIdentity>,
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
                "{id}\0{}\0{}\0{:?}\0{}\n",
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

/// A change the runtime reports for one of our units; a reason to re-plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    pub instance: InstanceId,
    pub server: String,
    /// The runtime's word for it: `start`, `die`, `destroy`, `oom`, ...
    pub action: String,
}

/// A connection to a stdio unit's stdin and stdout. Dropping it detaches;
/// the unit keeps running, and its stdin stays open for the next attach.
pub struct Attached {
    pub reader: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
    pub writer: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

/// Everything a runtime needs to start one instance. Secret values are
/// already resolved; this never goes to disk.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub instance: InstanceId,
    pub server: String,
    pub spec_hash: SpecHash,
    pub image: String,
    /// Arguments after the image entrypoint.
    pub command: Vec<String>,
    pub transport: Transport,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub env: Vec<(String, crate::secrets::SecretValue)>,
    pub memory_bytes: Option<u64>,
    pub millicpus: Option<u32>,
}

/// What `create` hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub handle: String,
    pub endpoint: String,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RuntimeError {
    /// The runtime cannot be reached at all.
    #[error("cannot reach the {runtime} runtime: {message}")]
    #[diagnostic(help(
        "is the daemon running? for docker try `docker info`; or plan with --refresh=false"
    ))]
    Unavailable {
        runtime: &'static str,
        message: String,
    },
    /// One operation on one unit failed; `message` is the engine's own.
    #[error("{op} {instance}: {message}")]
    Operation {
        op: &'static str,
        instance: String,
        message: String,
    },
}

/// A container runtime, as mcpctl needs it. Implementations must make every
/// method idempotent: apply retries after crashes and cancellation.
pub trait Runtime {
    /// Every unit that carries mcpctl's labels, in one list call plus
    /// inspects where needed. Units that died since `since` (and may have been
    /// restarted by the runtime meanwhile) come back inspected, so their
    /// restart count is current.
    fn observe(
        &self,
        since: Option<Timestamp>,
    ) -> impl Future<Output = Result<Vec<Unit>, RuntimeError>> + Send;
    /// Creates and starts one instance, labelled before it can run.
    fn create(
        &self,
        req: &CreateRequest,
    ) -> impl Future<Output = Result<Created, RuntimeError>> + Send;
    /// Fills in the detail a list call lacks (restart count, exit code, start
    /// time). Returns `false` if the unit is gone.
    fn inspect(&self, unit: &mut Unit) -> impl Future<Output = Result<bool, RuntimeError>> + Send;
    /// Changes to this scope's units as they happen, until the stream is dropped.
    fn events(
        &self,
    ) -> impl futures_core::Stream<Item = Result<RuntimeEvent, RuntimeError>> + Send + '_;
    /// Attaches to a stdio unit's stdin and stdout, without replaying old output.
    fn attach(&self, handle: &str) -> impl Future<Output = Result<Attached, RuntimeError>> + Send;
    /// Stops and removes one unit; a unit that is already gone is success.
    fn remove(&self, handle: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// The last `tail` lines of a unit's logs, stdout and stderr, each passed
    /// to `on_line`; with `follow`, keeps passing new lines until the unit stops.
    fn logs(
        &self,
        handle: &str,
        tail: usize,
        follow: bool,
        on_line: &mut (dyn FnMut(String) + Send),
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}

/// The closed set of runtimes, dispatched by `match`: no boxing, no async-trait.
pub enum AnyRuntime {
    Docker(docker::DockerRuntime),
    Fake(fake::FakeRuntime),
}

impl Runtime for AnyRuntime {
    async fn observe(&self, since: Option<Timestamp>) -> Result<Vec<Unit>, RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.observe(since).await,
            AnyRuntime::Fake(r) => r.observe(since).await,
        }
    }
    async fn create(&self, req: &CreateRequest) -> Result<Created, RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.create(req).await,
            AnyRuntime::Fake(r) => r.create(req).await,
        }
    }
    async fn inspect(&self, unit: &mut Unit) -> Result<bool, RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.inspect(unit).await,
            AnyRuntime::Fake(r) => r.inspect(unit).await,
        }
    }
    fn events(
        &self,
    ) -> impl futures_core::Stream<Item = Result<RuntimeEvent, RuntimeError>> + Send + '_ {
        use futures_util::StreamExt;
        match self {
            AnyRuntime::Docker(r) => r.events().boxed(),
            AnyRuntime::Fake(r) => r.events().boxed(),
        }
    }
    async fn attach(&self, handle: &str) -> Result<Attached, RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.attach(handle).await,
            AnyRuntime::Fake(r) => r.attach(handle).await,
        }
    }
    async fn remove(&self, handle: &str) -> Result<(), RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.remove(handle).await,
            AnyRuntime::Fake(r) => r.remove(handle).await,
        }
    }
    async fn logs(
        &self,
        handle: &str,
        tail: usize,
        follow: bool,
        on_line: &mut (dyn FnMut(String) + Send),
    ) -> Result<(), RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.logs(handle, tail, follow, on_line).await,
            AnyRuntime::Fake(r) => r.logs(handle, tail, follow, on_line).await,
        }
    }
}
