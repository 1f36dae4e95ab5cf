//! An in-memory runtime: a plainly fake world for apply's unit tests.
//!
//! Units live in a map; tests reach in to crash, restart or delete them the
//! way `docker kill` or `docker rm -f` would out of band, and each such
//! change is announced on [`Runtime::events`] as a real engine would. Every
//! unit speaks stdio: [`Runtime::attach`] connects to an in-process MCP
//! responder over [`tokio::io::duplex`], so readiness and liveness run the
//! real probe. How a server's units behave (answer at once, only after a
//! delay, never; fail to be created) is set per server with
//! [`FakeRuntime::behave`].

use super::{Attached, Created, LogLine, LogStream, Runtime, RuntimeError};
use crate::model::{
    Endpoint, EventKind, InstanceId, RunSpec, RuntimeEvent, Timestamp, Unit, UnitState, Watched,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How the units of one server behave once created.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// The unit answers MCP only this long after it started (a slow starter).
    pub ready_after: Duration,
    /// The unit never answers MCP (it reads and swallows what it is sent).
    pub silent: bool,
    /// `attach` fails at once, the same way every time, so each probe
    /// fails fast with the same reason.
    pub refuse_attach: bool,
    /// `create` fails with this message (a missing image, say).
    pub fail_create: Option<String>,
    /// `create` answers only this long after the unit started (and its
    /// events went out), like an engine busy starting many at once.
    pub create_takes: Duration,
}

#[derive(Debug, Default)]
struct World {
    units: BTreeMap<InstanceId, Unit>,
    behaviour: BTreeMap<String, Behaviour>,
    logs: BTreeMap<String, Vec<LogLine>>,
    /// Calls made, for tests that count them.
    creates: usize,
    removes: usize,
    inspects: usize,
    attaches: usize,
    /// Handshake requests (`server/discover`, `initialize`, `ping`) the
    /// units were sent.
    handshakes: usize,
    /// How long every `observe` takes: an engine slow to list.
    look_takes: Duration,
    /// The engine is down: every call fails at once, as with a stopped daemon.
    down: bool,
    /// The scope's applier lease and the version counter behind it.
    lease: Option<crate::model::Lease>,
    lease_versions: u64,
    digest_key: Option<[u8; 32]>,
}

/// The fake world. Cloning shares it.
#[derive(Debug, Clone)]
pub struct FakeRuntime {
    world: Arc<Mutex<World>>,
    events: tokio::sync::broadcast::Sender<RuntimeEvent>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime {
            world: Arc::default(),
            events: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn world(&self) -> MutexGuard<'_, World> {
        // A poisoned lock means another test thread panicked; its world is
        // still the best evidence we have.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn announce(&self, unit: &Unit, kind: EventKind) {
        // No subscriber is fine: nobody is watching.
        let _ = self.events.send(RuntimeEvent {
            instance: unit.instance.clone(),
            server: unit.server.clone(),
            kind,
        });
    }

    /// Sets how units of `server` created from now on behave.
    pub fn behave(&self, server: &str, behaviour: Behaviour) {
        self.world().behaviour.insert(server.to_owned(), behaviour);
    }

    /// Every unit, as `observe` would list it.
    pub fn units(&self) -> BTreeMap<InstanceId, Unit> {
        self.world().units.clone()
    }

    /// `create` and `remove` calls so far.
    pub fn calls(&self) -> (usize, usize) {
        let w = self.world();
        (w.creates, w.removes)
    }

    /// `inspect` calls so far.
    /// Attaches made, and handshake requests the units received.
    pub fn attaches(&self) -> (usize, usize) {
        let w = self.world();
        (w.attaches, w.handshakes)
    }

    pub fn inspects(&self) -> usize {
        self.world().inspects
    }

    /// Takes the engine down (every call fails as unreachable) or back up.
    pub fn set_down(&self, down: bool) {
        self.world().down = down;
    }

    fn reachable(&self) -> Result<(), RuntimeError> {
        if self.world().down {
            return Err(RuntimeError::Unavailable {
                runtime: "fake",
                message: "the engine is down".into(),
            });
        }
        Ok(())
    }

    /// Makes every `observe` from now on take `d`.
    pub fn slow_looks(&self, d: Duration) {
        self.world().look_takes = d;
    }

    /// The process of `id` exits with `code` after logging `line`, and the
    /// runtime gives up on it instead of restarting it (Docker's `dead`, a
    /// failed pod). A unit that merely exited would be one stopped out of
    /// band: the restart policy brings back whatever exits on its own.
    pub fn crash(&self, id: &InstanceId, code: i64, line: &str) {
        let unit = {
            let mut w = self.world();
            let Some(u) = w.units.get_mut(id) else { return };
            u.state = UnitState::Dead;
            u.exit_code = Some(code);
            u.last_log = Some(line.to_owned());
            let u = u.clone();
            push_log(&mut w, &u.handle, line);
            u
        };
        self.announce(
            &unit,
            EventKind::Died {
                exit_code: Some(code),
            },
        );
    }

    /// The process of `id` exits with `code` after logging `line`, and the
    /// restart policy starts it again at once.
    pub fn restart(&self, id: &InstanceId, code: i64, line: &str) {
        let unit = {
            let mut w = self.world();
            let Some(u) = w.units.get_mut(id) else { return };
            u.state = UnitState::Running;
            u.restarts = Some(u.restarts.unwrap_or(0) + 1);
            u.exit_code = Some(code);
            u.last_log = Some(line.to_owned());
            u.started_at = Some(Timestamp::now());
            let u = u.clone();
            push_log(&mut w, &u.handle, line);
            u
        };
        self.announce(
            &unit,
            EventKind::Died {
                exit_code: Some(code),
            },
        );
        self.announce(&unit, EventKind::Started);
    }

    /// The unit `handle` writes `line` to its log, as a server says where
    /// it listens.
    pub fn log(&self, handle: &str, line: &str) {
        push_log(&mut self.world(), handle, line);
    }

    /// Removes a unit behind mcpctl's back, like `docker rm -f`.
    pub fn delete(&self, id: &InstanceId) {
        let unit = self.world().units.remove(id);
        if let Some(unit) = unit {
            self.announce(&unit, EventKind::Removed);
        }
    }
}

fn push_log(w: &mut World, handle: &str, line: &str) {
    w.logs.entry(handle.to_owned()).or_default().push(LogLine {
        stream: LogStream::Stderr,
        text: line.to_owned(),
    });
}

fn operation(op: &'static str, instance: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Operation {
        op,
        instance: instance.to_owned(),
        message: message.into(),
    }
}

impl Runtime for FakeRuntime {
    async fn observe(&self) -> Result<Vec<Unit>, RuntimeError> {
        // Like Docker's list call, the listing carries no restart count;
        // unlike Docker, the fake has no event buffer to consult, so it says
        // what it knows: a unit that restarted reports it.
        self.reachable()?;
        let takes = self.world().look_takes;
        tokio::time::sleep(takes).await;
        Ok(self
            .world()
            .units
            .values()
            .map(|u| Unit {
                restarts: u.restarts.filter(|r| *r > 0),
                ..u.clone()
            })
            .collect())
    }

    async fn inspect(&self, handle: &str) -> Result<Option<Unit>, RuntimeError> {
        self.reachable()?;
        let mut w = self.world();
        w.inspects += 1;
        Ok(w.units.values().find(|u| u.handle == handle).cloned())
    }

    async fn create(&self, spec: &RunSpec) -> Result<Created, RuntimeError> {
        self.reachable()?;
        let handle = format!("fake-{}", spec.instance);
        let (unit, takes) = {
            let mut w = self.world();
            w.creates += 1;
            let behaviour = w.behaviour.get(&spec.server).cloned().unwrap_or_default();
            if let Some(message) = behaviour.fail_create {
                return Err(operation("create", &spec.instance.0, message));
            }
            let unit = Unit {
                instance: spec.instance.clone(),
                server: spec.server.clone(),
                spec_hash: spec.spec_hash.clone(),
                handle: handle.clone(),
                state: UnitState::Running,
                restarts: Some(0),
                exit_code: None,
                last_log: None,
                endpoint: Some(Endpoint::Stdio),
                started_at: Some(Timestamp::now()),
            };
            w.units.insert(spec.instance.clone(), unit.clone());
            (unit, behaviour.create_takes)
        };
        self.announce(&unit, EventKind::Created);
        self.announce(&unit, EventKind::Started);
        tokio::time::sleep(takes).await;
        Ok(Created {
            handle,
            endpoint: Some(Endpoint::Stdio),
        })
    }

    async fn remove(&self, handle: &str) -> Result<(), RuntimeError> {
        self.reachable()?;
        let gone: Vec<Unit> = {
            let mut w = self.world();
            w.removes += 1;
            let ids: Vec<InstanceId> = w
                .units
                .values()
                .filter(|u| u.handle == handle)
                .map(|u| u.instance.clone())
                .collect();
            ids.iter().filter_map(|id| w.units.remove(id)).collect()
        };
        for u in &gone {
            self.announce(u, EventKind::Removed);
        }
        Ok(())
    }

    fn events(
        &self,
    ) -> impl futures_core::Stream<Item = Result<Watched, RuntimeError>> + Send + '_ {
        let rx = self.events.subscribe();
        futures_util::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(ev) => Some((Ok(Watched::Event(ev)), rx)),
                // A slow reader lost some: a look covers them.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    Some((Ok(Watched::Resumed), rx))
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
            }
        })
    }

    async fn attach(&self, handle: &str) -> Result<Attached, RuntimeError> {
        let (unit, behaviour) = {
            let mut w = self.world();
            w.attaches += 1;
            let Some(unit) = w.units.values().find(|u| u.handle == handle).cloned() else {
                return Err(operation("attach", handle, "no such container"));
            };
            let behaviour = w.behaviour.get(&unit.server).cloned().unwrap_or_default();
            (unit, behaviour)
        };
        if unit.state != UnitState::Running {
            return Err(operation("attach", handle, "container is not running"));
        }
        if behaviour.refuse_attach {
            return Err(operation("attach", handle, "attach refused"));
        }
        let started = unit.started_at.unwrap_or_else(Timestamp::now);
        let ready_in = started.plus(behaviour.ready_after).since(Timestamp::now());
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(respond(theirs, ready_in, self.world.clone(), unit));
        let (reader, writer) = tokio::io::split(ours);
        Ok(Attached {
            reader: Box::pin(reader),
            writer: Box::pin(writer),
        })
    }

    async fn logs(
        &self,
        handle: &str,
        tail: Option<usize>,
        _follow: bool,
        on_line: &mut (dyn FnMut(LogLine) + Send),
    ) -> Result<(), RuntimeError> {
        let lines = self.world().logs.get(handle).cloned().unwrap_or_default();
        let skip = tail.map_or(0, |t| lines.len().saturating_sub(t));
        for line in lines.into_iter().skip(skip) {
            on_line(line);
        }
        Ok(())
    }

    async fn lease(&self) -> Result<Option<crate::model::Lease>, RuntimeError> {
        self.reachable()?;
        Ok(self.world().lease.clone())
    }

    async fn write_lease(
        &self,
        after: Option<&str>,
        holder: Option<&crate::model::Holder>,
        ttl: Duration,
    ) -> Result<Option<String>, RuntimeError> {
        self.reachable()?;
        let mut w = self.world();
        if w.lease.as_ref().map(|l| l.version.as_str()) != after {
            return Ok(None);
        }
        w.lease_versions += 1;
        let version = w.lease_versions.to_string();
        w.lease = Some(crate::model::Lease {
            holder: holder.cloned(),
            ttl,
            renewed_at: Timestamp::now(),
            version: version.clone(),
        });
        Ok(Some(version))
    }

    async fn digest_key(
        &self,
        proposed: Option<[u8; 32]>,
    ) -> Result<Option<[u8; 32]>, RuntimeError> {
        self.reachable()?;
        let mut w = self.world();
        Ok(match proposed {
            Some(p) => Some(*w.digest_key.get_or_insert(p)),
            None => w.digest_key,
        })
    }
}

/// The server side of an attach: a minimal MCP server over newline-delimited
/// JSON-RPC that answers `server/discover`, `initialize` and `ping` once it
/// is "up", the way a slow starter reads its stdin only once it has booted.
/// It reads its behaviour at each line, and ends the attach (as an engine
/// does) once its unit is no longer the one that was attached to.
async fn respond(
    stream: tokio::io::DuplexStream,
    ready_in: Duration,
    world: Arc<Mutex<World>>,
    unit: Unit,
) {
    tokio::time::sleep(ready_in).await;
    let (reader, mut writer) = tokio::io::split(stream);
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let silent = {
            let mut w = world
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let same = w
                .units
                .get(&unit.instance)
                .is_some_and(|u| u.state == UnitState::Running && u.started_at == unit.started_at);
            if !same {
                return;
            }
            w.handshakes += 1;
            w.behaviour.get(&unit.server).is_some_and(|b| b.silent)
        };
        if silent {
            continue;
        }
        let Ok(request) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let id = request.get("id").cloned();
        let result = match request.get("method").and_then(|m| m.as_str()) {
            Some("server/discover") => serde_json::json!({
                "supportedVersions": ["2026-07-28"],
                "capabilities": {},
                "_meta": {"io.modelcontextprotocol/serverInfo": {"name": unit.server, "version": "0.0.0-fake"}},
            }),
            Some("initialize") => serde_json::json!({
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "serverInfo": {"name": unit.server, "version": "0.0.0-fake"},
            }),
            Some("ping") => serde_json::json!({}),
            _ => continue,
        };
        let Some(id) = id else { continue };
        let answer = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result});
        let mut bytes = answer.to_string().into_bytes();
        bytes.push(b'\n');
        if writer.write_all(&bytes).await.is_err() {
            return;
        }
    }
}
