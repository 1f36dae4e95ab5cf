//! The stdio bridge: one long-lived attach per stdio instance, shared by
//! everyone who talks to it. The reconciler's readiness and liveness checks
//! and the gateway's clients all go through the same [`Bridge`], which
//! rewrites JSON-RPC ids (and progress tokens) so that each answer goes back
//! to whoever asked, and nobody reads anybody else's.
//!
//! This module owns the multiplexing ([`Bridge`], [`Exchange`]), the era a
//! bridge has found its server in and the liveness check that follows from
//! it ([`Bridge::check`]: `server/discover` in the 2026-07-28 era, `ping`
//! once a 2025-era session exists), the one 2025-era session a bridge holds
//! for all its clients ([`Bridge::session`]), and the pool of bridges by
//! instance ([`Bridges`]). It knows runtimes only through the byte streams
//! of an [`Attached`]; whoever owns a runtime hands in the attach.
//!
//! Ids and tokens a bridge sends are strings with a random prefix of its
//! own: Docker shows every attacher all of a container's output, so a
//! second process bridging the same instance (a standalone gateway beside
//! `watch`) sees our answers, and must never take them for its own.
//!
//! What a bridge does not carry: requests the server makes of its client
//! (sampling, elicitation, roots) are answered with an error at once (and
//! `ping` with an empty result), because the client that caused them is not
//! known over stdio; notifications that are not progress for a request in
//! flight are dropped. `docs/ARCHITECTURE.md` records why the 2025 era gets
//! one shared session rather than one client per instance.

use crate::model::InstanceId;
use crate::probe::{self, Era, ProbeError, ProbeInfo};
use crate::runtime::{Attached, RuntimeError};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

#[cfg(test)]
mod tests;

/// How much one bridge takes on.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests waiting for an answer at once; beyond, [`BridgeError::Busy`].
    pub pending: usize,
    /// Messages queued for the server's stdin; a server that stops reading
    /// fills it, and further requests are refused as busy, not queued.
    pub outbox: usize,
    /// The longest stdout line read; a longer one is skipped whole.
    pub line: usize,
    /// Progress notifications queued per request; beyond, they are dropped
    /// (progress is advisory; the answer never is).
    pub progress: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pending: 1024,
            outbox: 256,
            // Above the gateway's body limit, so any request's answer fits.
            line: 16 << 20,
            progress: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// The attach ended: the container stopped, restarted, or the engine
    /// went away. The bridge is of no further use.
    #[error("the stdio connection to instance {instance} ended: {why}")]
    Closed { instance: InstanceId, why: String },
    /// Too many requests are waiting, or the server is not reading stdin.
    #[error("instance {instance} has {pending} requests waiting; try again shortly")]
    Busy {
        instance: InstanceId,
        pending: usize,
    },
    /// What was handed in is not a JSON-RPC request.
    #[error("not a JSON-RPC request: {0}")]
    NotARequest(&'static str),
    /// The server refused the session the bridge asked for.
    #[error("instance {instance} refused a session: {why}")]
    Session { instance: InstanceId, why: String },
}

/// What an [`Exchange`] yields: progress for the request, then its answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A `notifications/progress` for the request, its token the client's own.
    Progress(Value),
    /// The response, its id the client's own.
    Answer(Value),
}

/// One request in flight over a bridge. Dropping it before the answer
/// arrives tells the server, with `notifications/cancelled`.
pub struct Exchange {
    inner: Arc<Inner>,
    wire_id: String,
    answer: oneshot::Receiver<Value>,
    progress: mpsc::Receiver<Value>,
    answered: bool,
}

impl Exchange {
    /// The next message for this request: progress, then the answer (after
    /// which it returns the answer again is never asked of it).
    pub async fn next(&mut self) -> Result<Message, BridgeError> {
        tokio::select! {
            biased;
            Some(p) = self.progress.recv() => Ok(Message::Progress(p)),
            answer = &mut self.answer => match answer {
                Ok(a) => {
                    self.answered = true;
                    Ok(Message::Answer(a))
                }
                Err(_) => Err(self.inner.closed_error()),
            },
        }
    }

    /// Skips progress and returns the answer.
    pub async fn answer(mut self) -> Result<Value, BridgeError> {
        loop {
            if let Message::Answer(a) = self.next().await? {
                return Ok(a);
            }
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let was_pending = self.inner.forget(&self.wire_id);
        if was_pending && !self.answered {
            // The client gave up (or its deadline passed): the server may
            // stop working on it. Best effort: a full outbox drops it.
            let cancel = json!({
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": self.wire_id, "reason": "the client went away"},
            });
            let _ = self.inner.outbox.try_send(line_of(&cancel));
        }
    }
}

struct Waiter {
    original_id: Value,
    /// The client's progress token, under the wire token the server sees.
    progress_token: Option<(String, Value)>,
    answer: oneshot::Sender<Value>,
    progress: mpsc::Sender<Value>,
}

#[derive(Default)]
struct Table {
    pending: HashMap<String, Waiter>,
    /// Wire progress token to wire request id.
    tokens: HashMap<String, String>,
}

/// What the handshake found, kept for liveness checks and clients.
#[derive(Debug, Clone)]
struct Known {
    info: ProbeInfo,
}

struct Inner {
    instance: InstanceId,
    prefix: String,
    next: AtomicU64,
    table: Mutex<Table>,
    outbox: mpsc::Sender<Vec<u8>>,
    /// `Some(why)` once the attach has ended.
    closed: watch::Sender<Option<String>>,
    known: Mutex<Option<Known>>,
    /// The 2025-era `initialize` result of the bridge's one session.
    session: tokio::sync::Mutex<Option<Value>>,
    limits: Limits,
}

/// A multiplexed JSON-RPC connection to one stdio instance. Cheap to clone;
/// the attach ends when the last clone is dropped.
#[derive(Clone)]
pub struct Bridge {
    inner: Arc<Inner>,
    _tasks: Arc<Tasks>,
}

/// The reader and writer of one attach, stopped when the last [`Bridge`]
/// clone goes; requests still waiting then fail as closed.
struct Tasks {
    inner: Arc<Inner>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.handles {
            t.abort();
        }
        self.inner.close("the bridge was shut".to_owned());
    }
}

impl Bridge {
    /// Starts bridging `attached`, the streams of `instance`.
    pub fn new(instance: InstanceId, attached: Attached, limits: Limits) -> Bridge {
        let (outbox, queued) = mpsc::channel(limits.outbox.max(1));
        let inner = Arc::new(Inner {
            instance,
            prefix: random_prefix(),
            next: AtomicU64::new(1),
            table: Mutex::default(),
            outbox,
            closed: watch::Sender::new(None),
            known: Mutex::default(),
            session: tokio::sync::Mutex::default(),
            limits,
        });
        let reader = tokio::spawn(read(inner.clone(), attached.reader));
        let writer = tokio::spawn(write(inner.clone(), queued, attached.writer));
        Bridge {
            _tasks: Arc::new(Tasks {
                inner: inner.clone(),
                handles: vec![reader, writer],
            }),
            inner,
        }
    }

    pub fn instance(&self) -> &InstanceId {
        &self.inner.instance
    }

    /// Why the attach ended, once it has.
    pub fn closed(&self) -> Option<String> {
        self.inner.closed.borrow().clone()
    }

    /// Resolves when the attach ends.
    pub async fn ended(&self) {
        let mut closed = self.inner.closed.subscribe();
        let _ = closed.wait_for(Option::is_some).await;
    }

    /// Requests waiting for an answer now.
    pub fn pending(&self) -> usize {
        lock(&self.inner.table).pending.len()
    }

    /// The era the last successful handshake found, and the protocol
    /// version it settled on.
    pub fn era(&self) -> Option<(Era, String)> {
        lock(&self.inner.known)
            .as_ref()
            .map(|k| (k.info.era, k.info.protocol_version.clone()))
    }

    /// Sends `request` (a JSON-RPC request with an id) under an id of the
    /// bridge's own; its answer and progress come back through the
    /// [`Exchange`] with the client's id and token restored.
    pub fn request(&self, mut request: Value) -> Result<Exchange, BridgeError> {
        if let Some(why) = self.closed() {
            return Err(self.inner.closed_with(why));
        }
        let Some(original_id) = request.get("id").cloned().filter(|id| !id.is_null()) else {
            return Err(BridgeError::NotARequest("it has no id"));
        };
        if request.get("method").and_then(Value::as_str).is_none() {
            return Err(BridgeError::NotARequest("it has no method"));
        }
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let wire_id = format!("{}{n}", self.inner.prefix);
        request["id"] = Value::String(wire_id.clone());
        let progress_token = request
            .pointer_mut("/params/_meta/progressToken")
            .map(|token| {
                let wire = format!("{}p{n}", self.inner.prefix);
                let original = std::mem::replace(token, Value::String(wire.clone()));
                (wire, original)
            });
        let (answer_tx, answer) = oneshot::channel();
        let (progress_tx, progress) = mpsc::channel(self.inner.limits.progress.max(1));
        {
            let mut table = lock(&self.inner.table);
            if table.pending.len() >= self.inner.limits.pending {
                return Err(self.inner.busy(table.pending.len()));
            }
            if let Some((wire, _)) = &progress_token {
                table.tokens.insert(wire.clone(), wire_id.clone());
            }
            table.pending.insert(
                wire_id.clone(),
                Waiter {
                    original_id,
                    progress_token,
                    answer: answer_tx,
                    progress: progress_tx,
                },
            );
        }
        let exchange = Exchange {
            inner: self.inner.clone(),
            wire_id,
            answer,
            progress,
            answered: false,
        };
        if self.inner.outbox.try_send(line_of(&request)).is_err() {
            // Dropping the exchange forgets it; nothing reached the server,
            // so there is nothing to cancel.
            let mut exchange = exchange;
            exchange.answered = true;
            let pending = self.pending();
            drop(exchange);
            return Err(match self.closed() {
                Some(why) => self.inner.closed_with(why),
                None => self.inner.busy(pending),
            });
        }
        Ok(exchange)
    }

    /// Sends a notification as it is.
    pub fn notify(&self, notification: &Value) -> Result<(), BridgeError> {
        if let Some(why) = self.closed() {
            return Err(self.inner.closed_with(why));
        }
        self.inner
            .outbox
            .try_send(line_of(notification))
            .map_err(|_| self.inner.busy(self.pending()))
    }

    /// One readiness or liveness check, bounded by `attempt_timeout`. Until a
    /// handshake has passed, and for a 2026-era server always, it is the
    /// full handshake (`server/discover`, falling back to `initialize`);
    /// once a 2025-era session exists, a `ping` within it.
    pub async fn check(&self, attempt_timeout: Duration) -> Result<ProbeInfo, ProbeError> {
        let known = lock(&self.inner.known).clone();
        let started = tokio::time::Instant::now();
        if let Some(known) = known.filter(|k| k.info.era == Era::Initialize2025) {
            let ping = json!({"jsonrpc": "2.0", "id": 0, "method": "ping"});
            let answer = tokio::time::timeout(attempt_timeout, async {
                self.request(ping)
                    .map_err(probe_error)?
                    .answer()
                    .await
                    .map_err(probe_error)
            })
            .await
            .map_err(|_| ProbeError::Timeout(attempt_timeout))??;
            if let Some(error) = answer.get("error") {
                return Err(ProbeError::Rpc {
                    method: "ping",
                    code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                });
            }
            let mut info = known.info;
            info.latency = started.elapsed();
            return Ok(info);
        }
        let mut channel = Channel {
            bridge: self,
            initialized: None,
        };
        let info = probe::probe_channel(&mut channel, "stdio", attempt_timeout).await?;
        if info.era == Era::Initialize2025
            && let Some(result) = channel.initialized
        {
            *self.inner.session.lock().await = Some(result);
        }
        *lock(&self.inner.known) = Some(Known { info: info.clone() });
        Ok(info)
    }

    /// The `initialize` result of the bridge's one 2025-era session, made on
    /// first use with the first client's `params` (its protocol version).
    /// Every 2025-era client of the instance shares it: the gateway answers
    /// their `initialize` with this result, under their own ids.
    pub async fn session(&self, params: &Value, timeout: Duration) -> Result<Value, BridgeError> {
        let mut session = self.inner.session.lock().await;
        if let Some(result) = session.as_ref() {
            return Ok(result.clone());
        }
        let version = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(probe::INITIALIZE_VERSION);
        let request = json!({
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "mcpctl-gateway", "version": env!("CARGO_PKG_VERSION")},
            },
        });
        let refused = |why: String| BridgeError::Session {
            instance: self.inner.instance.clone(),
            why,
        };
        let answer = tokio::time::timeout(timeout, self.request(request)?.answer())
            .await
            .map_err(|_| refused(format!("no answer to initialize within {timeout:?}")))??;
        let Some(result) = answer.get("result").filter(|r| r.is_object()) else {
            let why = answer
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("initialize had no result");
            return Err(refused(why.to_owned()));
        };
        self.notify(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        *session = Some(result.clone());
        Ok(result.clone())
    }
}

fn probe_error(e: BridgeError) -> ProbeError {
    match e {
        BridgeError::Closed { .. } => ProbeError::Closed,
        other => ProbeError::Io(other.to_string()),
    }
}

/// The probe's handshake over a bridge: its ids become the bridge's, and the
/// `initialize` result is kept as the session's.
struct Channel<'a> {
    bridge: &'a Bridge,
    initialized: Option<Value>,
}

impl probe::Channel for Channel<'_> {
    async fn call(
        &mut self,
        request: Value,
        _id: u64,
        _modern_version: Option<&str>,
    ) -> Result<probe::Reply, ProbeError> {
        let initialize = request.get("method").and_then(Value::as_str) == Some("initialize");
        let answer = self
            .bridge
            .request(request)
            .map_err(probe_error)?
            .answer()
            .await
            .map_err(probe_error)?;
        if initialize && let Some(result) = answer.get("result") {
            self.initialized = Some(result.clone());
        }
        Ok(probe::Reply::Answer(answer))
    }

    async fn notify(&mut self, notification: Value, _version: &str) -> Result<(), ProbeError> {
        self.bridge.notify(&notification).map_err(probe_error)
    }
}

impl Inner {
    fn closed_error(&self) -> BridgeError {
        let why = self
            .closed
            .borrow()
            .clone()
            .unwrap_or_else(|| "the bridge dropped the request".to_owned());
        self.closed_with(why)
    }

    fn closed_with(&self, why: String) -> BridgeError {
        BridgeError::Closed {
            instance: self.instance.clone(),
            why,
        }
    }

    fn busy(&self, pending: usize) -> BridgeError {
        BridgeError::Busy {
            instance: self.instance.clone(),
            pending,
        }
    }

    /// Removes a request; whether it was still waiting.
    fn forget(&self, wire_id: &str) -> bool {
        let mut table = lock(&self.table);
        let Some(w) = table.pending.remove(wire_id) else {
            return false;
        };
        if let Some((wire, _)) = w.progress_token {
            table.tokens.remove(&wire);
        }
        true
    }

    /// Marks the attach ended and fails every request waiting on it.
    fn close(&self, why: String) {
        let first = self.closed.send_if_modified(|c| {
            if c.is_some() {
                return false;
            }
            *c = Some(why.clone());
            true
        });
        if first {
            tracing::debug!(instance = %self.instance, why, "stdio bridge closed");
        }
        let mut table = lock(&self.table);
        // Dropping the senders wakes every waiter with the closed error.
        table.pending.clear();
        table.tokens.clear();
    }

    /// Routes one message from the server's stdout.
    fn dispatch(&self, mut message: Value) {
        let method = message.get("method").and_then(Value::as_str);
        let id = message.get("id").cloned();
        match (method, id) {
            // A request of the server's own.
            (Some(method), Some(id)) => {
                let reply = if method == "ping" {
                    json!({"jsonrpc": "2.0", "id": id, "result": {}})
                } else {
                    json!({"jsonrpc": "2.0", "id": id, "error": {
                        "code": -32601,
                        "message": format!("{method} is not relayed: mcpctl's stdio bridge carries no requests from server to client"),
                    }})
                };
                let _ = self.outbox.try_send(line_of(&reply));
            }
            (Some("notifications/progress"), None) => {
                let Some(token) = message
                    .pointer("/params/progressToken")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                else {
                    return;
                };
                let table = lock(&self.table);
                let Some(waiter) = table.tokens.get(&token).and_then(|w| table.pending.get(w))
                else {
                    return;
                };
                if let Some((_, original)) = &waiter.progress_token {
                    message["params"]["progressToken"] = original.clone();
                }
                let _ = waiter.progress.try_send(message);
            }
            (Some(_), None) => {}
            (None, Some(Value::String(wire)))
                if message.get("result").is_some() || message.get("error").is_some() =>
            {
                let waiter = {
                    let mut table = lock(&self.table);
                    let Some(w) = table.pending.remove(&wire) else {
                        // Another attacher's, or one given up on.
                        return;
                    };
                    if let Some((token, _)) = &w.progress_token {
                        table.tokens.remove(token);
                    }
                    w
                };
                message["id"] = waiter.original_id;
                let _ = waiter.answer.send(message);
            }
            _ => {}
        }
    }
}

/// Reads the server's stdout line by line until it ends.
async fn read(inner: Arc<Inner>, reader: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>) {
    let mut reader = BufReader::with_capacity(64 << 10, reader);
    let mut line = Vec::new();
    let mut overflowed = false;
    let why = loop {
        let available = match reader.fill_buf().await {
            Ok([]) => break "the instance closed its stdout".to_owned(),
            Ok(a) => a,
            Err(e) => break format!("cannot read its stdout: {e}"),
        };
        let (taken, complete) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (end + 1, true),
            None => (available.len(), false),
        };
        if !overflowed {
            line.extend_from_slice(&available[..taken]);
            if line.len() > inner.limits.line {
                overflowed = true;
                line = Vec::new();
            }
        }
        reader.consume(taken);
        if !complete {
            continue;
        }
        if std::mem::replace(&mut overflowed, false) {
            tracing::warn!(instance = %inner.instance, limit = inner.limits.line, "skipped a stdout line over the limit");
            continue;
        }
        // Banners and logs on stdout are not the protocol; skip them.
        if let Ok(message) = serde_json::from_slice::<Value>(&line)
            && message.get("jsonrpc").and_then(Value::as_str) == Some("2.0")
        {
            inner.dispatch(message);
        }
        line.clear();
    };
    inner.close(why);
}

/// Writes queued messages to the server's stdin, one line each.
async fn write(
    inner: Arc<Inner>,
    mut queued: mpsc::Receiver<Vec<u8>>,
    mut writer: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
) {
    let mut closed = inner.closed.subscribe();
    loop {
        let bytes = tokio::select! {
            _ = closed.wait_for(Option::is_some) => return,
            next = queued.recv() => match next {
                Some(b) => b,
                None => return,
            },
        };
        let written = async {
            writer.write_all(&bytes).await?;
            writer.flush().await
        };
        if let Err(e) = written.await {
            inner.close(format!("cannot write to its stdin: {e}"));
            return;
        }
    }
}

fn line_of(message: &Value) -> Vec<u8> {
    let mut bytes = message.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

fn random_prefix() -> String {
    let mut bytes = [0u8; 8];
    // Without randomness the prefix is still unique within the process;
    // only telling processes apart needs it.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (nanos ^ u64::from(std::process::id())).to_le_bytes();
    }
    format!("mcpctl-{}-", hex::encode(bytes))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it is a bug already reported; the data (maps of
    // waiters) stays usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One instance's bridge, or none yet; locked while an attach is made, so
/// that concurrent callers wait for one attach.
type Slot = Arc<tokio::sync::Mutex<Option<Bridge>>>;

/// The open bridges, by instance: at most one attach per instance, opened
/// on first use and replaced once it ends. Cheap to clone; clones share.
#[derive(Clone, Default)]
pub struct Bridges {
    slots: Arc<Mutex<HashMap<InstanceId, Slot>>>,
    limits: Limits,
}

impl std::fmt::Debug for Bridges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridges")
            .field("instances", &self.len())
            .finish()
    }
}

impl Bridges {
    pub fn new(limits: Limits) -> Bridges {
        Bridges {
            slots: Arc::default(),
            limits,
        }
    }

    /// The open bridge of `instance`, attaching with `attach` if there is
    /// none or the last one ended. Callers put their own deadline on it;
    /// concurrent callers for one instance wait for one attach.
    pub async fn open<F, Fut>(
        &self,
        instance: &InstanceId,
        attach: F,
    ) -> Result<Bridge, RuntimeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Attached, RuntimeError>>,
    {
        let slot = lock(&self.slots)
            .entry(instance.clone())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(b) = slot.as_ref().filter(|b| b.closed().is_none()) {
            return Ok(b.clone());
        }
        let attached = attach().await?;
        let bridge = Bridge::new(instance.clone(), attached, self.limits.clone());
        *slot = Some(bridge.clone());
        Ok(bridge)
    }

    /// The open bridge of `instance`, if there is one and it has not ended.
    pub fn get(&self, instance: &InstanceId) -> Option<Bridge> {
        let slot = lock(&self.slots).get(instance)?.clone();
        let slot = slot.try_lock().ok()?;
        slot.as_ref().filter(|b| b.closed().is_none()).cloned()
    }

    /// Ends the bridges of instances `keep` rejects: they were removed.
    pub fn retain(&self, keep: impl Fn(&InstanceId) -> bool) {
        lock(&self.slots).retain(|id, _| keep(id));
    }

    /// Instances with a slot (open, opening or ended).
    pub fn len(&self) -> usize {
        lock(&self.slots).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
