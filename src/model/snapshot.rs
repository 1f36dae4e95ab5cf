//! The snapshot's records: what mcpctl last knew of its instances and
//! servers. `state` stores them in redb; `plan` reads them; `apply` writes
//! them. They are values here, with no storage concerns.

use super::{Endpoint, InstanceId, McpIdentity, SpecHash, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// Container id or pod name; `None` for external servers, and until
    /// the runtime has made the unit. (The state file spells `None` as the
    /// empty string, as it always has.)
    #[serde(with = "handle_text")]
    pub handle: Option<String>,
    /// Where the probe connects: an HTTP URL (a published port, or an
    /// external server's URL), or stdio through the runtime. `None` until
    /// the runtime has said.
    #[serde(with = "endpoint_text")]
    pub endpoint: Option<Endpoint>,
    pub spec_hash: SpecHash,
    pub created_at: Timestamp,
    /// When `status` last changed.
    pub transitioned_at: Timestamp,
    /// Restarts of its unit, as last observed.
    pub restarts: u32,
    /// Restarts of its unit when it last became STARTING: the restarts since
    /// are the ones that count toward a crash loop.
    #[serde(default)]
    pub restarts_at_start: u32,
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
    /// The outdated instance this one was started to replace. A rolling
    /// replace spans passes: the old instance is removed once this one is
    /// RUNNING, and the link is how a later pass knows the two belong together.
    #[serde(default)]
    pub replaces: Option<InstanceId>,
}

/// Consecutive liveness failures; three in a row demote a RUNNING instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    pub failures: u32,
    pub checked_at: Timestamp,
}

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
            handle: None,
            endpoint: None,
            spec_hash,
            created_at: at,
            transitioned_at: at,
            restarts: 0,
            restarts_at_start: 0,
            reason: String::new(),
            history: Vec::new(),
            mcp: None,
            liveness: Liveness::default(),
            replaces: None,
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
    /// The spec this one replaced, while instances of it may still run: a
    /// rolling replace spans passes, and its diff must stay readable.
    #[serde(default)]
    pub previous: Option<PreviousSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSpec {
    pub hash: SpecHash,
    pub canonical: String,
}

impl AppliedSpec {
    /// The canonical text of `hash`, if it is this spec or the one before.
    pub fn canonical_of(&self, hash: &SpecHash) -> Option<&str> {
        if &self.hash == hash {
            return Some(&self.canonical);
        }
        self.previous
            .as_ref()
            .filter(|p| &p.hash == hash)
            .map(|p| p.canonical.as_str())
    }
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
    /// For a create that replaces an outdated instance: that instance, so an
    /// adopted unit keeps its place in the rolling replace.
    #[serde(default)]
    pub replaces: Option<InstanceId>,
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
    /// The spec that failed. A back-off belongs to it: once the source
    /// changes the spec (the fix for an image typo, say), the new one starts
    /// at once. `None` in state files from before this was recorded, whose
    /// back-off holds whatever the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<SpecHash>,
}

impl Backoff {
    /// Whether this back-off holds back starts of the spec `hash` at `now`.
    pub fn holds(&self, hash: &SpecHash, now: Timestamp) -> bool {
        now < self.until && self.spec_hash.as_ref().is_none_or(|h| h == hash)
    }
}

/// A server that reconciling leaves exactly as it is, until it is resumed:
/// the escape hatch during an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    pub at: Timestamp,
    /// Who suspended it (the command line), for `get` and `history`.
    pub by: String,
}

/// One entry of the history: an apply, a change of course of `watch` (a
/// revision taken up or refused, a pass that acted, convergence), or a
/// suspension or resumption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: Timestamp,
    pub revision: String,
    pub source: String,
    /// How many actions the run handed out, all of them, even past
    /// [`CHANGES_CAP`].
    pub actions: usize,
    pub outcome: String,
    /// The first [`CHANGES_CAP`] of those actions.
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// One action a history entry's run handed out, as the plan named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `start`, `remove`, `replace`, ... (the plan's action kinds).
    pub action: String,
    pub server: String,
    /// The instance acted on; for a start, the one it made, when known.
    #[serde(default)]
    pub instance: Option<String>,
    pub reason: String,
}

/// Changes kept per history entry: a cold start of a big fleet is one
/// entry of bounded size, its count still whole in `actions`.
pub const CHANGES_CAP: usize = 20;

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
    /// Servers left alone until resumed.
    pub suspended: BTreeMap<String, Suspension>,
}

impl Snapshot {
    /// `back-off 40s` while `server` waits out a back-off at `now`, else `None`.
    pub fn backoff_left(&self, server: &str, now: Timestamp) -> Option<String> {
        let b = self.backoff.get(server).filter(|b| b.until > now)?;
        Some(format!(
            "back-off {}",
            super::short_duration(b.until.since(now))
        ))
    }
}

/// A handle as the state file has always spelled it: the empty string for
/// none.
mod handle_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(h.as_deref().unwrap_or(""))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let text = String::deserialize(d)?;
        Ok(Some(text).filter(|t| !t.is_empty()))
    }
}

/// An endpoint as the state file has always spelled it: the URL, `stdio`,
/// or the empty string for "not known yet".
mod endpoint_text {
    use super::Endpoint;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(e: &Option<Endpoint>, s: S) -> Result<S::Ok, S::Error> {
        match e {
            Some(e) => s.serialize_str(&e.to_string()),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Endpoint>, D::Error> {
        let text = String::deserialize(d)?;
        Ok(Endpoint::parse(&text))
    }
}
