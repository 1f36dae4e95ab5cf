//! Runtimes run instances and report what exists. This module owns the
//! [`Runtime`] trait that Docker and Kubernetes implement, the
//! lowering of package programs onto runner images that every container
//! runtime shares, the labels and unit names they share, [`Bounded`], which
//! puts our own deadline on every call, and (in unit tests only) `fake`, an
//! in-memory world whose stdio units answer MCP, for apply's tests.
//!
//! **API boundary:** runtimes speak [`crate::model`] types only. They know
//! nothing of specs, plans, the state file or the probe; what to start
//! arrives as a [`RunSpec`] with secrets resolved, and what exists leaves as
//! [`Unit`]s.
//!
//! # The runtime contract
//!
//! **Expected flow.** A pass calls [`Runtime::observe`] once, asks
//! [`Runtime::inspect`] for detail about the few units whose status is in
//! question, plans, then calls [`Runtime::create`] and [`Runtime::remove`]
//! for the plan's actions. Readiness is checked by the caller: over the
//! unit's HTTP [`Endpoint`], or over the byte stream that
//! [`Runtime::attach`] returns for stdio. A long-running reconciler also
//! holds [`Runtime::events`] open, to look again as soon as a unit changes.
//!
//! **Guarantees the implementations give.**
//! - `observe` lists every unit of its scope that carries mcpctl's labels,
//!   whoever created it, so a half-finished create from a crashed apply is
//!   seen. It is one list call plus what the engine needs to make restarts
//!   visible (Docker: a bounded events query, and inspects of the units it
//!   names); a converged fleet never costs a call per unit.
//! - A unit's `restarts` is `Some` whenever the runtime knows it has
//!   restarted since it was created. `None` means "the listing does not say,
//!   and nothing suggests a restart".
//! - `create` labels the unit with server, instance and spec hash *before*
//!   it can start, so a crash between create and start leaves a unit
//!   `observe` finds. It returns once the unit is started, not once it is
//!   ready; it pulls a missing image first.
//! - `remove` is idempotent: removing a unit that is already gone, or
//!   being removed, succeeds.
//! - `attach` connects to the unit's stdin and stdout without replaying old
//!   output; dropping the connection detaches and leaves the unit running
//!   with its stdin open.
//! - `events` announces lifecycle changes of this scope's units from the
//!   moment the stream is first polled. It never ends on its own, like
//!   kube-runtime's watcher: a broken connection (an engine restart, a
//!   watch the API server closed or expired) is an `Err` item, after which
//!   the stream opens itself again with back-off, resuming where it can,
//!   and yields [`Watched::Resumed`] once it is back, so the caller can
//!   look again for whatever the gap hid.
//!
//! **Assumptions.** Instance ids are unique; callers never create the same id
//! twice. Callers run at most one `create` or `remove` per unit at a time.
//!
//! **Caveats.** `observe` is a point-in-time view: a unit may die right after.
//! The planner therefore never trusts it beyond one pass. Events may be lost
//! (a dropped connection, or events older than the engine's buffer); they
//! only hasten a look, and a resync or requeue timer must still bound how
//! stale the world can get. Every method may be
//! cancelled at an await point: callers bracket side effects with intents.
//!
//! **Errors.** [`RuntimeError::Unavailable`] when the engine cannot be
//! reached at all (worth retrying the whole pass later);
//! [`RuntimeError::Operation`] naming the unit and operation, with the
//! engine's own message (recorded on that action; the rest carry on).

mod bounded;
pub mod docker;
#[cfg(test)]
pub mod fake;
pub mod kubernetes;

pub use bounded::{Bounded, Deadlines, did_not_answer};

use crate::model::{Endpoint, Holder, InstanceId, Lease, Program, RunSpec, Runners, Unit, Watched};
use std::future::Future;

/// The labels every unit carries, on every runtime (Kubernetes keeps the
/// Docker spelling, so one selector reads both). A unit is ours only when
/// it carries all of them with our scope.
pub const LABEL_MANAGED: &str = "io.mcpctl.managed";
pub const LABEL_SCOPE: &str = "io.mcpctl.scope";
pub const LABEL_SERVER: &str = "io.mcpctl.server";
pub const LABEL_INSTANCE: &str = "io.mcpctl.instance";
pub const LABEL_SPEC_HASH: &str = "io.mcpctl.spec-hash";

/// Checks `--scope`: it is the value of the scope label on every unit, so
/// it must be a Kubernetes label value (Docker takes any, but one scope
/// means the same on both): at most 63 characters, letters, digits, `-`,
/// `_` and `.`, starting and ending with a letter or digit. The error names
/// the flag and says how to fix it.
pub fn validate_scope(scope: &str) -> Result<(), RuntimeError> {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let valid = !scope.is_empty()
        && scope.len() <= 63
        && edge(scope.chars().next())
        && edge(scope.chars().last())
        && scope
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        return Ok(());
    }
    Err(RuntimeError::Operation {
        op: "check",
        instance: format!("--scope {scope:?}"),
        message: "a scope is a label value on every unit: at most 63 characters, \
                  letters, digits, '-', '_' or '.', starting and ending with a letter \
                  or digit; pick one such as --scope team-a (or MCPCTL_SCOPE=team-a)"
            .into(),
    })
}

/// A unit's name on every runtime: `mcpctl-<server>-<instance>`. Server
/// names are DNS labels and instance ids lowercase ULIDs, so it is a valid
/// container name and pod name alike.
pub fn unit_name(server: &str, instance: &InstanceId) -> String {
    format!("mcpctl-{server}-{instance}")
}

/// A connection to a stdio unit's stdin and stdout. Dropping it detaches;
/// the unit keeps running, and its stdin stays open for the next attach.
pub struct Attached {
    pub reader: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
    pub writer: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

/// What `create` hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub handle: String,
    /// Where the unit answers; `None` when the runtime cannot say yet (a
    /// pod in a cluster has no IP until it is scheduled): the next
    /// observation has it.
    pub endpoint: Option<Endpoint>,
}

/// Which stream a log line came from. For stdio servers stdout carries the
/// protocol, so the two are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line of a unit's logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    pub text: String,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RuntimeError {
    /// The runtime cannot be reached at all.
    #[error("cannot reach the {runtime} runtime: {message}")]
    #[diagnostic(help(
        "is it running? for docker try `docker info`, for kubernetes check KUBECONFIG (`kubectl version`); or plan with --refresh=false"
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

/// A container runtime, as mcpctl needs it; see the module documentation
/// for the contract. Every method is idempotent or read-only: apply retries
/// after crashes and cancellation.
pub trait Runtime {
    /// Every unit of this scope that carries mcpctl's labels.
    fn observe(&self) -> impl Future<Output = Result<Vec<Unit>, RuntimeError>> + Send;
    /// One unit in full detail (restart count, exit code, start time, last
    /// log line), or `None` if it is gone.
    fn inspect(
        &self,
        handle: &str,
    ) -> impl Future<Output = Result<Option<Unit>, RuntimeError>> + Send;
    /// Creates and starts one instance, labelled before it can run.
    fn create(&self, spec: &RunSpec) -> impl Future<Output = Result<Created, RuntimeError>> + Send;
    /// Stops and removes one unit; a unit that is already gone is success.
    fn remove(&self, handle: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Changes to this scope's units as they happen, until the stream is
    /// dropped. The stream never ends on its own: a break is an `Err` item,
    /// then the stream opens itself again (with back-off) and says
    /// [`Watched::Resumed`].
    fn events(&self)
    -> impl futures_core::Stream<Item = Result<Watched, RuntimeError>> + Send + '_;
    /// Tells the runtime whether the unit's latest MCP probe passed, for a
    /// runtime that routes traffic by it (Kubernetes: the pod's readiness
    /// gate). Others need not know.
    fn set_ready(
        &self,
        handle: &str,
        ready: bool,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        let _ = (handle, ready);
        std::future::ready(Ok(()))
    }
    /// Attaches to a stdio unit's stdin and stdout, without replaying old output.
    fn attach(&self, handle: &str) -> impl Future<Output = Result<Attached, RuntimeError>> + Send;
    /// The last `tail` lines of a unit's logs (all of them for `None`), each
    /// passed to `on_line`; with `follow`, keeps passing new lines until the
    /// unit stops.
    fn logs(
        &self,
        handle: &str,
        tail: Option<usize>,
        follow: bool,
        on_line: &mut (dyn FnMut(LogLine) + Send),
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// This scope's applier lease as it stands; `None` when there is none
    /// (never taken, or removed by hand).
    fn lease(&self) -> impl Future<Output = Result<Option<Lease>, RuntimeError>> + Send;
    /// Writes this scope's lease: `holder` (`None` releases it) with `ttl`,
    /// as the version that follows `after` (`None`: there is no lease yet).
    /// A compare-and-swap: `Ok(Some(version))` when this write won, and
    /// `Ok(None)` when `after` is no longer the latest version because
    /// another writer got there first. Of several racing writers after the
    /// same version, exactly one wins.
    fn write_lease(
        &self,
        after: Option<&str>,
        holder: Option<&Holder>,
        ttl: std::time::Duration,
    ) -> impl Future<Output = Result<Option<String>, RuntimeError>> + Send;
    /// This scope's key for secret digests: the one the runtime holds, or
    /// else `proposed`, stored now. Racing callers all get the first one
    /// stored, so every applier of a scope computes the same spec hashes
    /// whatever its state file. With no proposal it only reads (for `plan`,
    /// which may run with read-only rights): `None` when there is none yet.
    fn digest_key(
        &self,
        proposed: Option<[u8; 32]>,
    ) -> impl Future<Output = Result<Option<[u8; 32]>, RuntimeError>> + Send;
}

/// The runner images, from `MCPCTL_NODE_RUNNER_IMAGE` and
/// `MCPCTL_PYTHON_RUNNER_IMAGE` when set.
pub fn runners_from_env() -> Runners {
    let var = |name: &str| std::env::var(name).ok().filter(|s| !s.is_empty());
    let defaults = Runners::default();
    Runners {
        node: var("MCPCTL_NODE_RUNNER_IMAGE").unwrap_or(defaults.node),
        python: var("MCPCTL_PYTHON_RUNNER_IMAGE").unwrap_or(defaults.python),
    }
}

/// What a program runs as in a container: the image, and the arguments
/// after its entrypoint. A package runs on its runner image as
/// `npx -y NAME@VERSION ARGS...` or `uvx NAME==VERSION ARGS...`.
pub fn lower(program: &Program, args: &[String], runners: &Runners) -> (String, Vec<String>) {
    match program {
        Program::Image(image) => (image.clone(), args.to_vec()),
        Program::Package {
            runtime,
            name,
            version,
        } => {
            let mut cmd = match runtime {
                crate::model::PackageRuntime::Node => {
                    let pkg = version
                        .as_ref()
                        .map_or(name.clone(), |v| format!("{name}@{v}"));
                    vec!["npx".to_owned(), "-y".to_owned(), pkg]
                }
                crate::model::PackageRuntime::Python => {
                    let pkg = version
                        .as_ref()
                        .map_or(name.clone(), |v| format!("{name}=={v}"));
                    vec!["uvx".to_owned(), pkg]
                }
            };
            cmd.extend(args.iter().cloned());
            (runners.image(*runtime).to_owned(), cmd)
        }
    }
}

/// The closed set of runtimes, dispatched by `match`: no boxing, no async-trait.
// One value per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum AnyRuntime {
    Docker(docker::DockerRuntime),
    Kubernetes(kubernetes::KubernetesRuntime),
    #[cfg(test)]
    Fake(fake::FakeRuntime),
}

impl AnyRuntime {
    /// The Kubernetes namespace the units live in; `None` elsewhere.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            AnyRuntime::Kubernetes(r) => Some(r.namespace()),
            _ => None,
        }
    }

    /// `docker` or `kubernetes`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            AnyRuntime::Docker(_) => "docker",
            AnyRuntime::Kubernetes(_) => "kubernetes",
            #[cfg(test)]
            AnyRuntime::Fake(_) => "fake",
        }
    }
}

impl Runtime for AnyRuntime {
    async fn observe(&self) -> Result<Vec<Unit>, RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.observe().await,
            AnyRuntime::Kubernetes(r) => r.observe().await,
            #[cfg(test)]
            AnyRuntime::Fake(r) => r.observe().await,
        }
    }
    async fn inspect(&self, handle: &str) -> Result<Option<Unit>, RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.inspect(handle).await,
            AnyRuntime::Kubernetes(r) => r.inspect(handle).await,
            #[cfg(test)]
            AnyRuntime::Fake(r) => r.inspect(handle).await,
        }
    }
    async fn create(&self, spec: &RunSpec) -> Result<Created, RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.create(spec).await,
            AnyRuntime::Kubernetes(r) => r.create(spec).await,
            #[cfg(test)]
            AnyRuntime::Fake(r) => r.create(spec).await,
        }
    }
    async fn remove(&self, handle: &str) -> Result<(), RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.remove(handle).await,
            AnyRuntime::Kubernetes(r) => r.remove(handle).await,
            #[cfg(test)]
            AnyRuntime::Fake(r) => r.remove(handle).await,
        }
    }
    fn events(
        &self,
    ) -> impl futures_core::Stream<Item = Result<Watched, RuntimeError>> + Send + '_ {
        use futures_util::StreamExt;
        match self {
            AnyRuntime::Docker(r) => r.events().boxed(),
            AnyRuntime::Kubernetes(r) => r.events().boxed(),
            #[cfg(test)]
            AnyRuntime::Fake(r) => r.events().boxed(),
        }
    }
    async fn set_ready(&self, handle: &str, ready: bool) -> Result<(), RuntimeError> {
        match self {
            AnyRuntime::Kubernetes(r) => r.set_ready(handle, ready).await,
            AnyRuntime::Docker(_) => Ok(()),
            #[cfg(test)]
            AnyRuntime::Fake(_) => Ok(()),
        }
    }
    async fn attach(&self, handle: &str) -> Result<Attached, RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.attach(handle).await,
            AnyRuntime::Kubernetes(r) => r.attach(handle).await,
            #[cfg(test)]
            AnyRuntime::Fake(r) => r.attach(handle).await,
        }
    }
    async fn logs(
        &self,
        handle: &str,
        tail: Option<usize>,
        follow: bool,
        on_line: &mut (dyn FnMut(LogLine) + Send),
    ) -> Result<(), RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.logs(handle, tail, follow, on_line).await,
            AnyRuntime::Kubernetes(r) => r.logs(handle, tail, follow, on_line).await,
            #[cfg(test)]
            AnyRuntime::Fake(r) => r.logs(handle, tail, follow, on_line).await,
        }
    }
    async fn lease(&self) -> Result<Option<Lease>, RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.lease().await,
            AnyRuntime::Kubernetes(r) => r.lease().await,
            #[cfg(test)]
            AnyRuntime::Fake(r) => r.lease().await,
        }
    }
    async fn write_lease(
        &self,
        after: Option<&str>,
        holder: Option<&Holder>,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.write_lease(after, holder, ttl).await,
            AnyRuntime::Kubernetes(r) => r.write_lease(after, holder, ttl).await,
            #[cfg(test)]
            AnyRuntime::Fake(r) => r.write_lease(after, holder, ttl).await,
        }
    }
    async fn digest_key(
        &self,
        proposed: Option<[u8; 32]>,
    ) -> Result<Option<[u8; 32]>, RuntimeError> {
        match self {
            AnyRuntime::Docker(r) => r.digest_key(proposed).await,
            AnyRuntime::Kubernetes(r) => r.digest_key(proposed).await,
            #[cfg(test)]
            AnyRuntime::Fake(r) => r.digest_key(proposed).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PackageRuntime;

    #[test]
    fn scopes_are_label_values() {
        for ok in ["default", "a", "team-a", "Team_A.1", &"s".repeat(63)] {
            assert!(validate_scope(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "a/b", "é", &"s".repeat(64)] {
            let e = validate_scope(bad).expect_err(bad).to_string();
            assert!(e.contains("--scope") && e.contains("63"), "{e}");
        }
    }

    #[test]
    fn packages_lower_onto_their_runner_image() {
        let runners = Runners {
            node: "my/node".into(),
            python: "my/py".into(),
        };
        let node = Program::Package {
            runtime: PackageRuntime::Node,
            name: "@scope/srv".into(),
            version: Some("1.2.3".into()),
        };
        assert_eq!(
            lower(&node, &["--stdio".into()], &runners),
            (
                "my/node".to_owned(),
                vec!["npx", "-y", "@scope/srv@1.2.3", "--stdio"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            )
        );
        let py = Program::Package {
            runtime: PackageRuntime::Python,
            name: "mcp-server-fetch".into(),
            version: None,
        };
        assert_eq!(
            lower(&py, &[], &runners),
            (
                "my/py".to_owned(),
                vec!["uvx".to_owned(), "mcp-server-fetch".to_owned()]
            )
        );
        let image = Program::Image("img:1".into());
        assert_eq!(
            lower(&image, &["a".into()], &runners),
            ("img:1".to_owned(), vec!["a".to_owned()])
        );
    }
}
