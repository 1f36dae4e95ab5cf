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
}

impl Holder {
    /// This process, holding for `command`.
    pub fn this_process(command: &str) -> Holder {
        let mut id = [0u8; 8];
        // A failed random source leaves zeros; the pid and time still tell holders apart.
        let _ = getrandom::fill(&mut id);
        Holder {
            id: hex::encode(id),
            host: host_name(),
            pid: std::process::id(),
            command: command.to_owned(),
            started_at: Timestamp::now(),
        }
    }
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

/// The host name, for the holder's description: the kernel's on Linux, else
/// `$HOSTNAME`, else `unknown`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
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
