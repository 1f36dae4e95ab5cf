//! The snapshot: what mcpctl last knew, kept in a redb file.
//!
//! It holds the instances, the last applied spec of each server, meta (schema
//! version, last applied source revision, the secret-digest key), the intents
//! that make apply crash-safe, per-server back-off, and the apply history.
//! [`Store`] reads and writes it; [`ApplyLock`] makes sure only one applier
//! works on a state file at a time.

mod store;

pub use store::{ApplyLock, StateError, Store, Txn};

use crate::spec::SpecHash;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Short, sortable, unique: a lower-case ULID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub String);

impl InstanceId {
    /// A new id whose time part is `at`, so ids sort like creation times.
    pub fn generate(at: Timestamp) -> Self {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.0.max(0) as u64);
        InstanceId(
            ulid::Ulid::from_datetime(t)
                .to_string()
                .to_ascii_lowercase(),
        )
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Starting,
    Running,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "STARTING",
            Status::Running => "RUNNING",
            Status::Error => "ERROR",
        }
    }

    /// STARTING and RUNNING count toward replicas; ERROR does not.
    pub fn is_active(self) -> bool {
        !matches!(self, Status::Error)
    }
}

/// One status change, kept for `describe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at: Timestamp,
    pub status: Status,
    pub reason: String,
}

/// One running copy of a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub server: String,
    pub status: Status,
    /// Container id or pod name; empty for external servers.
    pub handle: String,
    /// Where the probe connects: `http://127.0.0.1:PORT/mcp`, `stdio`, or the external URL.
    pub endpoint: String,
    pub spec_hash: SpecHash,
    pub created_at: Timestamp,
    /// When `status` last changed.
    pub transitioned_at: Timestamp,
    pub restarts: u32,
    /// Why the instance is in its status (the last error, the probe failure); empty when there is nothing to say.
    pub reason: String,
    /// The most recent transitions, oldest first, capped at [`HISTORY_CAP`].
    pub history: Vec<Transition>,
    /// What the instance answered to its last successful MCP probe.
    #[serde(default)]
    pub mcp: Option<McpIdentity>,
    /// Liveness of a RUNNING instance: failed probes in a row, and when it was
    /// last probed (0 = never).
    #[serde(default)]
    pub liveness: Liveness,
}

/// Consecutive liveness failures; three in a row demote a RUNNING instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    pub failures: u32,
    pub checked_at: Timestamp,
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

pub const HISTORY_CAP: usize = 20;

impl Instance {
    /// A new STARTING instance with nothing known yet but what it runs.
    pub fn starting(
        id: InstanceId,
        server: &str,
        spec_hash: SpecHash,
        reason: &str,
        at: Timestamp,
    ) -> Instance {
        let mut i = Instance {
            id,
            server: server.to_owned(),
            status: Status::Starting,
            handle: String::new(),
            endpoint: String::new(),
            spec_hash,
            created_at: at,
            transitioned_at: at,
            restarts: 0,
            reason: String::new(),
            history: Vec::new(),
            mcp: None,
            liveness: Liveness::default(),
        };
        i.transition(Status::Starting, reason, at);
        i
    }

    /// Moves to `status`, recording why, and keeps the history bounded.
    pub fn transition(&mut self, status: Status, reason: impl Into<String>, at: Timestamp) {
        let reason = reason.into();
        self.status = status;
        self.transitioned_at = at;
        self.reason = reason.clone();
        self.history.push(Transition { at, status, reason });
        if self.history.len() > HISTORY_CAP {
            let excess = self.history.len() - HISTORY_CAP;
            self.history.drain(..excess);
        }
    }
}

/// The last applied spec of a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedSpec {
    pub hash: SpecHash,
    pub canonical: String,
    pub replicas: u32,
    pub applied_at: Timestamp,
}

/// Recorded before a side effect and cleared after it, so that after a crash
/// the planner can tell a half-made container of ours from a stranger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub instance: InstanceId,
    pub server: String,
    pub spec_hash: SpecHash,
    pub op: IntentOp,
    pub at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentOp {
    Create,
    Remove,
}

/// Exponential back-off of a server whose instances keep failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Failures in a row; the delay is 10 s · 2^(failures-1), capped at 5 min.
    pub failures: u32,
    /// No replacement starts before this.
    pub until: Timestamp,
    pub reason: String,
}

impl Snapshot {
    /// `back-off 40s` while `server` waits out a back-off at `now`, else `None`.
    pub fn backoff_left(&self, server: &str, now: Timestamp) -> Option<String> {
        let b = self.backoff.get(server).filter(|b| b.until > now)?;
        Some(format!(
            "back-off {}",
            crate::time::short_duration(b.until.since(now))
        ))
    }
}

/// One apply, for the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: Timestamp,
    pub revision: String,
    pub source: String,
    pub actions: usize,
    pub outcome: String,
}

/// Everything in the state file, loaded at once. Fleets are small enough
/// (10,000 servers is a few MB) that reading it whole is simpler and faster
/// than querying piecemeal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Bumped by every write; saved plans record it to detect staleness.
    pub serial: u64,
    /// The last applied source revision.
    pub revision: Option<String>,
    pub instances: BTreeMap<InstanceId, Instance>,
    pub servers: BTreeMap<String, AppliedSpec>,
    pub intents: BTreeMap<InstanceId, Intent>,
    pub backoff: BTreeMap<String, Backoff>,
}
