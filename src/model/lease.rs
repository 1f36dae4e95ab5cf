//! Who may apply to a scope: the holder of its applier lease, as the
//! runtime stores it. The lease lives in the runtime (a Kubernetes Lease, a
//! chain of labelled Docker volumes) rather than in a state file, so that
//! two appliers with different state files still see each other. Also
//! [`FleetId`], the fleet a state file belongs to.

use super::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One applier process, as it names itself in the lease: enough for a
/// refused applier to say whom it waits for, and for an operator to find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Random, unique to this holding: two processes never share it, even
    /// with the same pid on two hosts.
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// `mcpctl watch`, `mcpctl apply`: what holds it.
    pub command: String,
    /// When this process took the lease.
    pub started_at: Timestamp,
    /// Where the holder's process can be checked for life; see [`Process`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
}

/// A process as the kernel knows it: a contender in the same kernel (boot
/// id) and pid namespace can read `/proc/<pid>` and tell at once whether
/// the holder still runs (the same pid with the same start time), instead
/// of waiting out the lease's time to live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// The boot id and the pid namespace, joined: equal only within one
    /// kernel's boot and one namespace, where pids mean the same process.
    pub kernel: String,
    /// The process's start time, in clock ticks after boot (`/proc/<pid>/stat`, field 22).
    pub start: u64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {} on {}, since {})",
            self.command,
            self.pid,
            self.host,
            self.started_at.rfc3339()
        )
    }
}

/// A scope's applier lease as read from the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `None` once released.
    pub holder: Option<Holder>,
    /// How long the holder may go without renewing before others may take
    /// the lease over. Readers measure it on their own clock, from when they
    /// first saw this `version`, so clocks that disagree do not matter.
    pub ttl: Duration,
    /// When it was last written, by the writer's clock (`Timestamp::now()`
    /// at the write). Only a hint: a reader whose clock disagrees must not
    /// take a lease over on its strength, only refuse sooner.
    pub renewed_at: Timestamp,
    /// Changes with every write: the compare-and-swap token.
    pub version: String,
}

/// The fleet a state file caches: the runtime, the namespace (Kubernetes
/// only) and the scope its units are labelled with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetId {
    /// `docker` or `kubernetes`.
    pub runtime: String,
    /// The Kubernetes namespace. `None` on Docker, and where a command does
    /// not know it (`plan --refresh=false` without `--namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub scope: String,
}

impl FleetId {
    /// Whether `given` names this fleet. A namespace `given` does not know
    /// is taken to match: the runtime and scope still must.
    pub fn is(&self, given: &FleetId) -> bool {
        self.runtime == given.runtime
            && self.scope == given.scope
            && (given.namespace.is_none() || self.namespace == given.namespace)
    }

    /// The global flags that select this fleet.
    pub fn flags(&self) -> String {
        let mut s = format!("--runtime {} --scope {}", self.runtime, self.scope);
        if let Some(ns) = &self.namespace {
            s.push_str(&format!(" --namespace {ns}"));
        }
        s
    }
}

impl std::fmt::Display for FleetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.runtime)?;
        if let Some(ns) = &self.namespace {
            write!(f, ", namespace {ns}")?;
        }
        write!(f, ", scope {}", self.scope)
    }
}
