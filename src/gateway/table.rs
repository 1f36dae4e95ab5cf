//! The routing table: which instances of each server may take a request,
//! decided from the snapshot. Only RUNNING instances are routes: over
//! their HTTP endpoint, or for a stdio server over the stdio bridge to their
//! unit. A server without one keeps the words that explain why, so a client
//! sees the status and the reason mcpctl recorded.
//!
//! Where a unit's HTTP endpoint is, the gateway's own runtime may say
//! instead of the record ([`Seen`]): the Kubernetes runtime outside the
//! cluster hands out endpoints on a loopback relay that lives only as long
//! as the process that observed them, so an endpoint another process
//! recorded leads nowhere.

use crate::model::{Endpoint, Instance, InstanceId, Snapshot, Status};
use std::collections::{BTreeMap, BTreeSet};

/// Each unit's HTTP endpoint as the gateway's own runtime sees it, by
/// instance.
pub type Seen = BTreeMap<InstanceId, String>;

/// One instance that may take requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub instance: InstanceId,
    pub upstream: Upstream,
}

/// How the gateway reaches an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// Its MCP endpoint URL.
    Http(String),
    /// Its unit's stdin and stdout, through the stdio bridge; the handle is
    /// what the runtime attaches to.
    Stdio { handle: String },
    /// A legacy HTTP+SSE server (the 2024-11-05 transport) at its event
    /// stream's URL: bridged like a stdio server, over one event stream.
    Legacy(String),
}

/// What the gateway does with a request for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Its RUNNING instances, in instance-id order (a stable order, so ties
    /// in the balancing are broken the same way every time).
    Ready(Vec<Backend>),
    /// No instance may take a request; the text says why.
    Down(String),
}

/// Every server of a snapshot and its route; swapped whole when the
/// snapshot changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    routes: BTreeMap<String, Route>,
    /// Every instance of the snapshot, whatever its status: a stdio bridge
    /// is kept open for these, and closed for any other.
    instances: BTreeSet<InstanceId>,
}

/// Why a request found no instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The state knows no such server.
    #[error("no server named {0:?} in the state")]
    Unknown(String),
    /// The server has no RUNNING instance to take it.
    #[error("{0}")]
    Unavailable(String),
}

impl Table {
    /// From the snapshot alone: every endpoint as recorded.
    pub fn from_snapshot(snapshot: &Snapshot) -> Table {
        Table::build(snapshot, None)
    }

    /// From the snapshot, with each unit's HTTP endpoint taken from `seen`
    /// rather than the record; a unit `seen` lacks is not routed to yet.
    /// External servers have no unit and keep their recorded URL.
    pub fn from_snapshot_seen(snapshot: &Snapshot, seen: &Seen) -> Table {
        Table::build(snapshot, Some(seen))
    }

    fn build(snapshot: &Snapshot, seen: Option<&Seen>) -> Table {
        let mut by_server: BTreeMap<&str, Vec<&Instance>> = snapshot
            .servers
            .keys()
            .map(|name| (name.as_str(), Vec::new()))
            .collect();
        for i in snapshot.instances.values() {
            by_server.entry(i.server.as_str()).or_default().push(i);
        }
        let routes = by_server
            .into_iter()
            .map(|(name, instances)| (name.to_owned(), route(snapshot, seen, name, &instances)))
            .collect();
        Table {
            routes,
            instances: snapshot.instances.keys().cloned().collect(),
        }
    }

    /// Whether the snapshot has `instance`, in any status.
    pub fn knows(&self, instance: &InstanceId) -> bool {
        self.instances.contains(instance)
    }

    /// The instances that may take a request for `server`.
    pub fn backends(&self, server: &str) -> Result<&[Backend], Refusal> {
        match self.routes.get(server) {
            None => Err(Refusal::Unknown(server.to_owned())),
            Some(Route::Down(why)) => Err(Refusal::Unavailable(why.clone())),
            Some(Route::Ready(b)) => Ok(b),
        }
    }

    /// Whether `instance` of `server` may still take requests: a pinned
    /// session's instance must be.
    pub fn is_routable(&self, server: &str, instance: &InstanceId) -> bool {
        self.backends(server)
            .is_ok_and(|b| b.iter().any(|b| &b.instance == instance))
    }

    /// The backend of `instance` of `server`, while it is routable.
    pub fn backend(&self, server: &str, instance: &InstanceId) -> Option<&Backend> {
        self.backends(server)
            .ok()?
            .iter()
            .find(|b| &b.instance == instance)
    }

    /// Whether the state knows `server`, routable or not.
    pub fn has(&self, server: &str) -> bool {
        self.routes.contains_key(server)
    }

    /// Every routable instance, with its server.
    pub fn ready(&self) -> impl Iterator<Item = (&str, &Backend)> {
        self.routes.iter().flat_map(|(server, route)| {
            let backends = match route {
                Route::Ready(b) => b.as_slice(),
                Route::Down(_) => &[],
            };
            backends.iter().map(move |b| (server.as_str(), b))
        })
    }

    pub fn servers(&self) -> usize {
        self.routes.len()
    }

    pub fn ready_servers(&self) -> usize {
        self.routes
            .values()
            .filter(|r| matches!(r, Route::Ready(_)))
            .count()
    }
}

fn route(snapshot: &Snapshot, seen: Option<&Seen>, server: &str, instances: &[&Instance]) -> Route {
    let ready: Vec<Backend> = instances
        .iter()
        .filter(|i| i.status == Status::Running)
        .filter_map(|i| {
            // The transport its handshake was made over, when it passed one.
            let legacy = i.mcp.as_ref().is_some_and(|m| m.transport == "sse");
            let http = |url: &String| {
                if legacy {
                    Upstream::Legacy(url.clone())
                } else {
                    Upstream::Http(url.clone())
                }
            };
            let upstream = match (&i.endpoint, &i.handle, seen) {
                (Some(Endpoint::Http(_)), Some(_), Some(seen)) => http(seen.get(&i.id)?),
                (Some(Endpoint::Http(url)), _, _) => http(url),
                (Some(Endpoint::Stdio), Some(handle), _) => Upstream::Stdio {
                    handle: handle.clone(),
                },
                _ => return None,
            };
            Some(Backend {
                instance: i.id.clone(),
                upstream,
            })
        })
        .collect();
    if !ready.is_empty() {
        return Route::Ready(ready);
    }
    Route::Down(down_reason(snapshot, server, instances))
}

/// `github has no RUNNING instance: 1 STARTING (not ready after 60s: ...)`:
/// how many instances are in each status, each with the reason of the one
/// that changed status last.
fn down_reason(snapshot: &Snapshot, server: &str, instances: &[&Instance]) -> String {
    let mut parts = Vec::new();
    for status in [Status::Running, Status::Starting, Status::Error] {
        let of: Vec<&&Instance> = instances.iter().filter(|i| i.status == status).collect();
        let Some(latest) = of.iter().max_by_key(|i| i.transitioned_at) else {
            continue;
        };
        let mut part = format!("{} {}", of.len(), status.as_str());
        if status == Status::Running {
            // RUNNING but unroutable: its endpoint or unit is not known
            // yet, or the gateway's runtime has not seen its unit.
            part.push_str(" (no endpoint or unit known yet)");
        } else if !latest.reason.is_empty() {
            part.push_str(&format!(" ({})", latest.reason));
        }
        parts.push(part);
    }
    if parts.is_empty() {
        parts.push("no instances".to_owned());
    }
    if let Some(b) = snapshot.backoff.get(server) {
        parts.push(format!(
            "backing off after {} failures: {}",
            b.failures, b.reason
        ));
    }
    if snapshot.suspended.contains_key(server) {
        parts.push("suspended".to_owned());
    }
    format!("{server} has no RUNNING instance: {}", parts.join(", "))
}
