//! The Docker runtime (bollard): containers labelled with mcpctl's labels,
//! named `mcpctl-<server>-<instance>`, on the `mcpctl` network, restarted by
//! Docker itself (`unless-stopped`) so they survive a host reboot without us.
//!
//! Observation is one filtered list call. The list carries no restart
//! count, so restarts are found through the engine's own memory: one
//! bounded query of the `die` events of this scope since the oldest running
//! container was created, answered from the engine's event buffer. Only
//! containers that are not running, or that died in that window, are
//! inspected (for the exit code and restart count) and have their logs read
//! (for the last line); not one created moments ago that is still being
//! started, whose inspect would wait for the start. A converged fleet
//! therefore costs two calls.
//!
//! The scope's applier lease and digest key live in labelled volumes: see
//! [`lease`].

mod lease;

use super::{Created, LogLine, LogStream, Runtime, RuntimeError};
use crate::model::{
    Doubling, Endpoint, EventKind, InstanceId, RunSpec, Runners, RuntimeEvent, SpecHash, Timestamp,
    Transport, Unit, UnitState, Watched,
};
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EventMessage, HostConfig, NetworkCreateRequest,
    PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    EventsOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::OnceCell;

pub use super::{
    LABEL_INSTANCE, LABEL_MANAGED, LABEL_SCOPE, LABEL_SERVER, LABEL_SPEC_HASH, unit_name,
};
/// The container port and path, so an observer can rebuild the endpoint
/// from the list call alone.
const LABEL_PORT: &str = "io.mcpctl.port";
const LABEL_PATH: &str = "io.mcpctl.path";

/// Where and how containers are made.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The network containers join; created if missing.
    pub network: String,
    /// Separates fleets sharing one engine (and parallel tests): units of
    /// another scope are neither observed nor ever removed.
    pub scope: String,
    /// The images package programs run on.
    pub runners: Runners,
}

impl DockerConfig {
    /// `MCPCTL_NETWORK` (default `mcpctl`), the given scope and runner images.
    pub fn from_env(scope: &str, runners: Runners) -> Self {
        DockerConfig {
            network: std::env::var("MCPCTL_NETWORK")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "mcpctl".into()),
            scope: scope.to_owned(),
            runners,
        }
    }
}

pub struct DockerRuntime {
    docker: Docker,
    config: DockerConfig,
    network_ready: OnceCell<()>,
}

fn unavailable(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Unavailable {
        runtime: "docker",
        message: e.to_string(),
    }
}

/// The engine's own words, without bollard's wrapping.
fn engine_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        other => other.to_string(),
    }
}

fn op_error(op: &'static str, instance: &str, e: &DockerError) -> RuntimeError {
    RuntimeError::Operation {
        op,
        instance: instance.to_owned(),
        message: engine_message(e),
    }
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerRuntime {
    /// Connects through `DOCKER_HOST` or the local socket, and negotiates the
    /// API version so old engines (API 1.41) and new ones both work.
    pub async fn connect(config: DockerConfig) -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_local_defaults().map_err(unavailable)?;
        Self::connect_with(docker, config).await
    }

    /// As [`connect`](Self::connect), through a client made by the caller
    /// (a test's, pointed at a socket of its own).
    pub async fn connect_with(docker: Docker, config: DockerConfig) -> Result<Self, RuntimeError> {
        let docker = docker.negotiate_version().await.map_err(unavailable)?;
        Ok(DockerRuntime {
            docker,
            config,
            network_ready: OnceCell::new(),
        })
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The label filter that selects this scope's units.
    pub fn label_filters(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_SCOPE}={}", self.config.scope),
            ],
        )])
    }

    async fn ensure_network(&self) -> Result<(), RuntimeError> {
        self.network_ready
            .get_or_try_init(|| async {
                let name = &self.config.network;
                match self.docker.inspect_network(name, None).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_not_found(&e) => {
                        let req = NetworkCreateRequest {
                            name: name.clone(),
                            ..Default::default()
                        };
                        match self.docker.create_network(req).await {
                            Ok(_) => Ok(()),
                            // Another applier (or a parallel test) made it first.
                            Err(DockerError::DockerResponseServerError {
                                status_code: 409,
                                ..
                            }) => Ok(()),
                            Err(e) => Err(op_error("create network", name, &e)),
                        }
                    }
                    Err(e) => Err(op_error("inspect network", name, &e)),
                }
            })
            .await
            .map(|_| ())
    }

    /// Pulls `image` only if the engine does not have it, so locally built
    /// images work with no registry at all.
    async fn ensure_image(&self, image: &str, instance: &str) -> Result<(), RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(op_error("inspect image", instance, &e)),
        }
        let (repo, tag) = split_image(image);
        let mut opts = CreateImageOptionsBuilder::default().from_image(repo);
        if let Some(tag) = tag {
            opts = opts.tag(tag);
        }
        let mut pull = self.docker.create_image(Some(opts.build()), None, None);
        while let Some(progress) = pull.next().await {
            let failure = match progress {
                Ok(info) => info.error_detail.and_then(|d| d.message),
                Err(e) => Some(engine_message(&e)),
            };
            if let Some(engine) = failure {
                let local = self.local_images().await;
                return Err(RuntimeError::Operation {
                    op: "pull",
                    instance: image.to_owned(),
                    message: missing_image(closest_image(image, &local), &engine),
                });
            }
        }
        Ok(())
    }

    /// Every `repository:tag` the engine holds, as `docker images` shows
    /// them; empty when it cannot say, since this only feeds a suggestion.
    async fn local_images(&self) -> Vec<String> {
        match self
            .docker
            .list_images(Some(ListImagesOptionsBuilder::default().build()))
            .await
        {
            Ok(images) => images
                .into_iter()
                .flat_map(|i| i.repo_tags)
                .filter(|t| t != "<none>:<none>")
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot list local images for a suggestion");
                Vec::new()
            }
        }
    }

    /// One container in full: labels, state, restart count, start time,
    /// endpoint and, when it has stopped or restarted, its last log line.
    async fn inspect_unit(&self, handle: &str) -> Result<Option<Unit>, RuntimeError> {
        let info = match self
            .docker
            .inspect_container(handle, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(op_error("inspect", handle, &e)),
        };
        let labels = info
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let Some((instance, server, hash)) = identity(&labels) else {
            return Ok(None);
        };
        let state = info.state.unwrap_or_default();
        let unit_state = if state.restarting == Some(true) {
            // A restarting container also reports running=true: restarting wins.
            UnitState::Restarting
        } else if state.running == Some(true) {
            UnitState::Running
        } else if state.dead == Some(true) {
            // Docker marks a container dead while it removes it (or when
            // that removal failed): somebody removed it, it did not crash.
            UnitState::Exited(state.exit_code.unwrap_or(-1))
        } else if state
            .started_at
            .as_deref()
            .is_some_and(|s| !s.starts_with("0001-"))
        {
            UnitState::Exited(state.exit_code.unwrap_or(-1))
        } else {
            UnitState::Created
        };
        let started_at = state
            .started_at
            .as_deref()
            .filter(|s| !s.starts_with("0001-"))
            .and_then(parse_time);
        let restarts = info.restart_count.unwrap_or(0).max(0) as u32;
        let published = |port: u16| {
            info.network_settings
                .as_ref()
                .and_then(|n| n.ports.as_ref())
                .and_then(|p| p.get(&format!("{port}/tcp")).cloned().flatten())
                .and_then(|b| b.into_iter().find_map(|b| b.host_port))
                .and_then(|p| p.parse::<u16>().ok())
        };
        let mut unit = Unit {
            instance,
            server,
            spec_hash: hash,
            handle: info.id.clone().unwrap_or_else(|| handle.to_owned()),
            state: unit_state,
            restarts: Some(restarts),
            // A running container reports exit code 0 for its current run;
            // the code is only news once it has stopped or restarted.
            exit_code: if matches!(unit_state, UnitState::Running | UnitState::Created) {
                None
            } else {
                state.exit_code
            },
            last_log: None,
            endpoint: endpoint(&labels, published),
            started_at,
        };
        if restarts > 0 || !matches!(unit_state, UnitState::Running | UnitState::Created) {
            let before = if unit_state == UnitState::Running {
                started_at
            } else {
                None
            };
            unit.last_log = self
                .last_log_line(&unit.handle, before)
                .await?
                .or(state.error.filter(|e| !e.is_empty()));
        }
        Ok(Some(unit))
    }

    /// Containers of this scope that died since `since`, with the exit code
    /// of their latest death: the events the engine still buffers, read up
    /// to now (the call returns at once). A restarted container's inspect
    /// reports exit code 0 for its current run; the event keeps the real one.
    async fn died_since(
        &self,
        since: Timestamp,
    ) -> Result<HashMap<String, Option<i64>>, RuntimeError> {
        let mut filters = self.label_filters();
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert("event".into(), vec!["die".into()]);
        let until = engine_time(Timestamp::now());
        let opts = EventsOptionsBuilder::default()
            .since(&engine_time(since))
            .until(&until)
            .filters(&filters)
            .build();
        let mut stream = self.docker.events(Some(opts));
        let mut died = HashMap::new();
        while let Some(ev) = stream.next().await {
            let ev = ev.map_err(unavailable)?;
            if let Some(actor) = ev.actor
                && let Some(id) = actor.id
            {
                let code = actor
                    .attributes
                    .and_then(|a| a.get("exitCode").and_then(|c| c.parse().ok()));
                died.insert(id, code);
            }
        }
        Ok(died)
    }

    /// The last non-empty line the unit wrote, stderr first: for stdio servers
    /// stdout is the protocol, and errors go to stderr anyway. With `before`
    /// (the start of the current run of a restarted container), only lines
    /// written before it count: the previous run's last words, not the
    /// current run's greeting.
    pub async fn last_log_line(
        &self,
        handle: &str,
        before: Option<Timestamp>,
    ) -> Result<Option<String>, RuntimeError> {
        for (stdout, stderr) in [(false, true), (true, false)] {
            let opts = LogsOptionsBuilder::default()
                .stdout(stdout)
                .stderr(stderr)
                .timestamps(true)
                .tail("50")
                .build();
            let mut stream = self.docker.logs(handle, Some(opts));
            let mut last = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(out) => {
                        let bytes = out.into_bytes();
                        for line in String::from_utf8_lossy(&bytes).lines() {
                            let (at, text) = split_timestamp(line);
                            let in_window = match (before, at) {
                                (Some(b), Some(at)) => at < b,
                                _ => true,
                            };
                            if in_window && !text.trim().is_empty() {
                                last = Some(text.trim().to_owned());
                            }
                        }
                    }
                    // The last line is a detail for a reason text: a container that
                    // is gone or being removed (409) has none, and that must not
                    // fail the whole observation.
                    Err(e) => {
                        tracing::debug!(container = handle, error = %e, "no logs for the last line");
                        return Ok(None);
                    }
                }
            }
            if last.is_some() {
                return Ok(last);
            }
        }
        Ok(None)
    }
}

/// A time as the events API takes it: Unix seconds with a fraction. Whole
/// seconds would make `until` miss this second's events, or hold the stream
/// open until the next second.
fn engine_time(t: Timestamp) -> String {
    format!("{}.{:03}", t.0.div_euclid(1000), t.0.rem_euclid(1000))
}

/// `2026-11-24T15:40:01.123456789Z text` → (time, `text`).
fn split_timestamp(line: &str) -> (Option<Timestamp>, &str) {
    match line.split_once(' ') {
        Some((ts, rest)) => match parse_time(ts) {
            Some(t) => (Some(t), rest),
            None => (None, line),
        },
        None => (None, line),
    }
}

fn parse_time(s: &str) -> Option<Timestamp> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(Timestamp(d.as_millis() as i64))
}

/// `repo[:tag]` → (`repo`, tag). Without a tag the engine would pull every
/// tag, so "latest" is made explicit; digests stay in the reference.
fn split_image(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], Some(&image[last_slash + i + 1..])),
        None => (image, Some("latest")),
    }
}

/// The longest part of the engine's own pull error kept in a reason: enough
/// for "no such host" or "repository does not exist", while the hint before
/// it must survive the reason's cap.
const ENGINE_WORDS: usize = 200;

/// Why an image could not be had, and how to fix it: most pull failures of
/// a first try are a typo in the name or tag, or a local build under
/// another tag, and a registry's answer ("lookup registry-1.docker.io: no
/// such host", "pull access denied") says neither. The engine's words come
/// last, shortened, so nothing is hidden.
fn missing_image(closest: Option<&str>, engine: &str) -> String {
    let guess = closest
        .map(|c| format!("did you mean {c}? "))
        .unwrap_or_default();
    let engine = engine.trim();
    let engine = if engine.chars().count() > ENGINE_WORDS {
        let mut cut: String = engine.chars().take(ENGINE_WORDS - 1).collect();
        cut.push('…');
        cut
    } else {
        engine.to_owned()
    };
    format!(
        "image not present locally and cannot be pulled; {guess}check the name and tag \
         with `docker images`; the engine said: {engine}"
    )
}

/// The local `repository:tag` nearest to `image` by edit distance, when it
/// is near enough to be a typo of it: at most a quarter of its length (and
/// at least 2) edits. Docker Hub's implicit `docker.io/library/` and
/// `:latest` are ignored on both sides, as `docker images` leaves them out.
fn closest_image<'a>(image: &str, local: &'a [String]) -> Option<&'a str> {
    fn norm(reference: &str) -> String {
        let (repo, tag) = split_image(reference);
        let repo = repo
            .strip_prefix("docker.io/library/")
            .or_else(|| repo.strip_prefix("docker.io/"))
            .unwrap_or(repo);
        match tag {
            Some(tag) => format!("{repo}:{tag}"),
            None => repo.to_owned(),
        }
    }
    let wanted = norm(image);
    let limit = (wanted.chars().count() / 4).max(2);
    local
        .iter()
        .map(|l| (strsim::damerau_levenshtein(&wanted, &norm(l)), l))
        .filter(|(d, _)| (1..=limit).contains(d))
        // Ties go by name, so the same engine always gives the same hint.
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, l)| l.as_str())
}

/// Container name: `mcpctl-<server>-<instance>`.
pub fn container_name(server: &str, instance: &InstanceId) -> String {
    unit_name(server, instance)
}

/// Instance, server and spec hash from a container's labels; `None` for a
/// container labelled managed but missing one of them: not something we made.
fn identity(labels: &HashMap<String, String>) -> Option<(InstanceId, String, SpecHash)> {
    Some((
        InstanceId(labels.get(LABEL_INSTANCE)?.clone()),
        labels.get(LABEL_SERVER)?.clone(),
        SpecHash(labels.get(LABEL_SPEC_HASH)?.clone()),
    ))
}

/// Where the probe reaches a container: stdio unless it has an HTTP port,
/// then the loopback host port the engine published for it, once known.
fn endpoint(
    labels: &HashMap<String, String>,
    published: impl Fn(u16) -> Option<u16>,
) -> Option<Endpoint> {
    let Some(port) = labels.get(LABEL_PORT).and_then(|p| p.parse::<u16>().ok()) else {
        return Some(Endpoint::Stdio);
    };
    let path = labels.get(LABEL_PATH).map_or("/mcp", String::as_str);
    published(port).map(|host| Endpoint::Http(format!("http://127.0.0.1:{host}{path}")))
}

/// How the events stream waits between attempts to open itself again.
const EVENTS_BACKOFF: Doubling = Doubling::new(Duration::from_millis(100), Duration::from_secs(5));
/// A subscription that lasted this long was healthy: a break after it
/// starts the back-off from the beginning again.
const EVENTS_HEALTHY: Duration = Duration::from_secs(30);
/// How long the engine has to answer a ping, or to start answering an
/// events request, before the attempt counts as failed.
const ENGINE_DEADLINE: Duration = Duration::from_secs(10);

/// The events stream's state between items: a plain value driven by
/// `unfold`, so dropping the stream ends everything, with no task left
/// behind.
struct Events {
    docker: Docker,
    filters: HashMap<String, Vec<String>>,
    phase: Phase,
    /// Breaks in a row, for the back-off.
    failures: u32,
}

type EventStream = futures_util::stream::BoxStream<'static, Result<EventMessage, DockerError>>;

enum Phase {
    /// Ask for events from `since` on; after a break, say so once asked.
    Subscribe { since: Timestamp, resumed: bool },
    /// Reading. `since` moves to each event's time, so a break resumes
    /// from the last event seen: the engine replays the gap from its
    /// buffer (an event may come twice; events only hasten a look).
    Open {
        stream: EventStream,
        since: Timestamp,
        opened: tokio::time::Instant,
    },
    /// Broken: back off, then subscribe from `since` once the engine answers.
    Broken { since: Timestamp },
}

impl Events {
    async fn next(mut self) -> Option<(Result<Watched, RuntimeError>, Events)> {
        loop {
            match &mut self.phase {
                Phase::Subscribe { since, resumed } => {
                    let (since, resumed) = (*since, *resumed);
                    let opts = EventsOptionsBuilder::default()
                        .since(&engine_time(since))
                        .filters(&self.filters)
                        .build();
                    self.phase = Phase::Open {
                        stream: self.docker.events(Some(opts)).boxed(),
                        since,
                        opened: tokio::time::Instant::now(),
                    };
                    if resumed {
                        return Some((Ok(Watched::Resumed), self));
                    }
                }
                Phase::Open {
                    stream,
                    since,
                    opened,
                } => {
                    let error = match stream.next().await {
                        Some(Ok(ev)) => {
                            if let Some(at) = ev.time_nano.map(|ns| Timestamp(ns / 1_000_000)) {
                                *since = (*since).max(at);
                            }
                            match watched(ev) {
                                Some(item) => return Some((Ok(item), self)),
                                None => continue,
                            }
                        }
                        Some(Err(e)) => unavailable(format!("events stream broke: {e}")),
                        None => unavailable("the engine ended the events stream"),
                    };
                    if opened.elapsed() >= EVENTS_HEALTHY {
                        self.failures = 0;
                    }
                    self.phase = Phase::Broken { since: *since };
                    return Some((Err(error), self));
                }
                Phase::Broken { since } => {
                    let since = *since;
                    self.failures = self.failures.saturating_add(1);
                    tokio::time::sleep(EVENTS_BACKOFF.after(self.failures)).await;
                    // Only an engine that answers is worth a subscription;
                    // until then the caller has its one `Err` and waits.
                    match tokio::time::timeout(ENGINE_DEADLINE, self.docker.ping()).await {
                        Ok(Ok(_)) => {
                            self.phase = Phase::Subscribe {
                                since,
                                resumed: true,
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "engine still unreachable"),
                        Err(_) => tracing::debug!("engine did not answer a ping in time"),
                    }
                }
            }
        }
    }
}

/// One engine event in mcpctl's terms; `None` for one we do not follow,
/// or a container without our instance label.
fn watched(ev: EventMessage) -> Option<Watched> {
    let attrs = ev.actor.and_then(|a| a.attributes).unwrap_or_default();
    let kind = match ev.action.as_deref() {
        Some("create") => EventKind::Created,
        Some("start" | "restart") => EventKind::Started,
        Some("die") => EventKind::Died {
            exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
        },
        Some("destroy") => EventKind::Removed,
        _ => return None,
    };
    Some(Watched::Event(RuntimeEvent {
        instance: InstanceId(attrs.get(LABEL_INSTANCE)?.clone()),
        server: attrs.get(LABEL_SERVER).cloned().unwrap_or_default(),
        kind,
    }))
}

/// How long a listed container may stay `created` before it counts as one
/// that failed to start, and is inspected for why.
const CREATED_GRACE_SECS: i64 = 10;

impl Runtime for DockerRuntime {
    async fn lease(&self) -> Result<Option<crate::model::Lease>, RuntimeError> {
        self.read_lease().await
    }

    async fn write_lease(
        &self,
        after: Option<&str>,
        holder: Option<&crate::model::Holder>,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, RuntimeError> {
        self.swap_lease(after, holder, ttl).await
    }

    async fn digest_key(
        &self,
        proposed: Option<[u8; 32]>,
    ) -> Result<Option<[u8; 32]>, RuntimeError> {
        self.stored_digest_key(proposed).await
    }

    async fn observe(&self) -> Result<Vec<Unit>, RuntimeError> {
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&self.label_filters())
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(unavailable)?;
        // A running container may have crashed and been restarted since we
        // last looked; the list cannot say. The engine's event buffer can:
        // ask for `die` events since the oldest running container was made.
        let oldest_running = list
            .iter()
            .filter(|c| c.state == Some(ContainerSummaryStateEnum::RUNNING))
            .filter_map(|c| c.created)
            .min();
        let died = match oldest_running {
            Some(secs) => {
                self.died_since(Timestamp(secs.saturating_mul(1000)))
                    .await?
            }
            None => HashMap::new(),
        };
        let now_secs = Timestamp::now().0 / 1000;
        let mut units = Vec::with_capacity(list.len());
        for c in list {
            let labels = c.labels.unwrap_or_default();
            let (Some((instance, server, spec_hash)), Some(handle)) = (identity(&labels), c.id)
            else {
                continue;
            };
            let state = match c.state {
                Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::PAUSED) => {
                    UnitState::Running
                }
                Some(ContainerSummaryStateEnum::RESTARTING) => UnitState::Restarting,
                Some(ContainerSummaryStateEnum::CREATED) => UnitState::Created,
                // Someone is removing it (`docker rm -f`, or us): as good as
                // gone, and no crash of the server's.
                Some(ContainerSummaryStateEnum::REMOVING) => continue,
                // Dead is Docker's word for "being removed" (see inspect).
                Some(ContainerSummaryStateEnum::DEAD) => UnitState::Exited(-1),
                _ => UnitState::Exited(-1),
            };
            // A container made moments ago and not yet started is one being
            // started: its inspect would wait for the start to finish (the
            // engine holds the container's lock throughout), and it has
            // nothing to tell yet. One left unstarted for longer failed to
            // start, and its detail says why.
            let starting = state == UnitState::Created
                && c.created
                    .is_some_and(|at| now_secs.saturating_sub(at) < CREATED_GRACE_SECS);
            if (state != UnitState::Running && !starting) || died.contains_key(&handle) {
                // Only the unhealthy, and those that crashed and came back,
                // need detail. One that vanished meanwhile is simply not there.
                if let Some(mut unit) = self.inspect_unit(&handle).await? {
                    if unit.exit_code.is_none() {
                        unit.exit_code = died.get(&handle).copied().flatten();
                    }
                    units.push(unit);
                }
                continue;
            }
            let ports = c.ports.unwrap_or_default();
            let published = |port: u16| {
                ports
                    .iter()
                    .find(|p| p.private_port == port)
                    .and_then(|p| p.public_port)
            };
            units.push(Unit {
                instance,
                server,
                spec_hash,
                endpoint: endpoint(&labels, published),
                handle,
                state,
                restarts: None,
                exit_code: None,
                last_log: None,
                started_at: None,
            });
        }
        Ok(units)
    }

    async fn inspect(&self, handle: &str) -> Result<Option<Unit>, RuntimeError> {
        self.inspect_unit(handle).await
    }

    async fn create(&self, spec: &RunSpec) -> Result<Created, RuntimeError> {
        let instance = spec.instance.to_string();
        let (image, command) = super::lower(&spec.program, &spec.args, &self.config.runners);
        self.ensure_network().await?;
        self.ensure_image(&image, &instance).await?;

        let mut labels = HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_SCOPE.to_owned(), self.config.scope.clone()),
            (LABEL_SERVER.to_owned(), spec.server.clone()),
            (LABEL_INSTANCE.to_owned(), instance.clone()),
            (LABEL_SPEC_HASH.to_owned(), spec.spec_hash.to_string()),
        ]);
        let http_port = spec.port.filter(|_| spec.transport.is_http());
        let (exposed, bindings) = match http_port {
            Some(port) => {
                labels.insert(LABEL_PORT.to_owned(), port.to_string());
                labels.insert(
                    LABEL_PATH.to_owned(),
                    spec.path.clone().unwrap_or_else(|| "/mcp".into()),
                );
                let key = format!("{port}/tcp");
                // Loopback only, ephemeral host port: nothing is exposed beyond this host.
                let binding = PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                };
                (
                    Some(vec![key.clone()]),
                    Some(HashMap::from([(key, Some(vec![binding]))])),
                )
            }
            None => (None, None),
        };
        // Docker has no secrets of its own: every value must have been resolved.
        let env = spec
            .env
            .iter()
            .map(|v| match v.value.expose() {
                Some(value) => Ok(format!("{}={value}", v.name)),
                None => Err(RuntimeError::Operation {
                    op: "create",
                    instance: instance.clone(),
                    message: format!(
                        "env {}: a secret reference the Docker runtime cannot read",
                        v.name
                    ),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stdio = spec.transport == Transport::Stdio;
        let body = ContainerCreateBody {
            image: Some(image),
            cmd: (!command.is_empty()).then_some(command),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: exposed,
            // stdio servers must not see EOF between probes: keep stdin open, never once.
            open_stdin: Some(stdio),
            stdin_once: Some(false),
            attach_stdin: Some(false),
            tty: Some(false),
            host_config: Some(HostConfig {
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                port_bindings: bindings,
                memory: spec
                    .memory_bytes
                    .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
                nano_cpus: spec.millicpus.map(|m| i64::from(m) * 1_000_000),
                network_mode: Some(self.config.network.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = container_name(&spec.server, &spec.instance);
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| op_error("create", &instance, &e))?;
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| op_error("start", &instance, &e))?;

        let endpoint = match http_port {
            None => Endpoint::Stdio,
            Some(port) => {
                let info = self
                    .docker
                    .inspect_container(&created.id, None::<InspectContainerOptions>)
                    .await
                    .map_err(|e| op_error("inspect", &instance, &e))?;
                let public = info
                    .network_settings
                    .and_then(|n| n.ports)
                    .and_then(|p| p.get(&format!("{port}/tcp")).cloned().flatten())
                    .and_then(|b| b.into_iter().find_map(|b| b.host_port))
                    .unwrap_or_default();
                Endpoint::Http(format!(
                    "http://127.0.0.1:{public}{}",
                    spec.path.as_deref().unwrap_or("/mcp")
                ))
            }
        };
        Ok(Created {
            handle: created.id,
            endpoint: Some(endpoint),
        })
    }

    fn events(
        &self,
    ) -> impl futures_core::Stream<Item = Result<Watched, RuntimeError>> + Send + '_ {
        let mut filters = self.label_filters();
        filters.insert("type".into(), vec!["container".into()]);
        // Only lifecycle events: health checks' exec_* events would wake the
        // reconciler for nothing every few seconds.
        filters.insert(
            "event".into(),
            ["create", "start", "restart", "die", "destroy"]
                .map(String::from)
                .to_vec(),
        );
        // The request goes out on first poll; `since` = now closes the gap
        // between asking for the stream and reading it.
        let events = Events {
            // bollard's request timeout bounds the wait for the response
            // head, so a hung engine cannot hold a subscription forever;
            // the body itself is open-ended by nature.
            docker: self.docker.clone().with_timeout(ENGINE_DEADLINE),
            filters,
            phase: Phase::Subscribe {
                since: Timestamp::now(),
                resumed: false,
            },
            failures: 0,
        };
        futures_util::stream::unfold(events, Events::next)
    }

    async fn attach(&self, handle: &str) -> Result<super::Attached, RuntimeError> {
        let opts = AttachContainerOptionsBuilder::default()
            .stdin(true)
            .stdout(true)
            .stream(true)
            .logs(false)
            .build();
        let attached = self
            .docker
            .attach_container(handle, Some(opts))
            .await
            .map_err(|e| op_error("attach", handle, &e))?;
        // stdout carries the protocol; stderr frames are the server's own logs.
        let stdout = attached.output.filter_map(|frame| async move {
            match frame {
                Ok(bollard::container::LogOutput::StdOut { message }) => Some(Ok(message)),
                Ok(_) => None,
                Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
            }
        });
        Ok(super::Attached {
            reader: Box::pin(tokio_util::io::StreamReader::new(Box::pin(stdout))),
            writer: attached.input,
        })
    }

    async fn remove(&self, handle: &str) -> Result<(), RuntimeError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(handle, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // "removal already in progress": another remover got there first.
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(op_error("remove", handle, &e)),
        }
    }

    async fn logs(
        &self,
        handle: &str,
        tail: Option<usize>,
        follow: bool,
        on_line: &mut (dyn FnMut(LogLine) + Send),
    ) -> Result<(), RuntimeError> {
        let tail = tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(follow)
            .tail(&tail)
            .build();
        let mut stream = self.docker.logs(handle, Some(opts));
        while let Some(chunk) = stream.next().await {
            let out = chunk.map_err(|e| op_error("logs", handle, &e))?;
            let stream = match &out {
                bollard::container::LogOutput::StdErr { .. } => LogStream::Stderr,
                _ => LogStream::Stdout,
            };
            for line in String::from_utf8_lossy(&out.into_bytes()).lines() {
                on_line(LogLine {
                    stream,
                    text: line.to_owned(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_into_repo_and_tag() {
        assert_eq!(split_image("ghcr.io/a/b:v1"), ("ghcr.io/a/b", Some("v1")));
        assert_eq!(
            split_image("localhost:5000/a/b"),
            ("localhost:5000/a/b", Some("latest"))
        );
        assert_eq!(
            split_image("localhost:5000/a/b:2"),
            ("localhost:5000/a/b", Some("2"))
        );
        assert_eq!(split_image("busybox"), ("busybox", Some("latest")));
        assert_eq!(split_image("a/b@sha256:abc"), ("a/b@sha256:abc", None));
    }

    fn tags(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn a_missing_image_is_matched_to_the_nearest_local_tag() {
        let local = tags(&[
            "mcpctl-fixture:test",
            "mcpctl-fixture:v2",
            "busybox:latest",
            "ghcr.io/github/github-mcp-server:v0.20.1",
        ]);
        // A letter left out of the name; a wrong tag; Docker Hub spelled out.
        assert_eq!(
            closest_image("mcpctl-fixtur:test", &local),
            Some("mcpctl-fixture:test")
        );
        assert_eq!(
            closest_image("mcpctl-fixture:v3", &local),
            Some("mcpctl-fixture:v2")
        );
        assert_eq!(
            closest_image("docker.io/library/busybx", &local),
            Some("busybox:latest")
        );
        assert_eq!(
            closest_image("ghcr.io/github/github-mcp-server:v0.20.2", &local),
            Some("ghcr.io/github/github-mcp-server:v0.20.1")
        );
        // Nothing near: no guess rather than a wild one.
        assert_eq!(closest_image("postgres:16", &local), None);
        assert_eq!(closest_image("mcpctl-fixtur:test", &[]), None);
        // Equally near: the same answer every time.
        let tied = tags(&["app:v2", "app:v1"]);
        assert_eq!(closest_image("app:v3", &tied), Some("app:v1"));
    }

    #[test]
    fn a_missing_image_reason_names_docker_images_the_typo_and_the_engine() {
        let engine = "pull access denied for mcpctl-fixtur, repository does not exist or may \
                      require 'docker login': denied: requested access to the resource is denied";
        let with_guess = missing_image(Some("mcpctl-fixture:test"), engine);
        let offline = missing_image(
            None,
            "Get \"https://ghcr.io/v2/\": dial tcp: lookup ghcr.io on 127.0.0.53:53: no such host",
        );
        let long = missing_image(None, &"x".repeat(500));
        assert!(long.chars().count() < 400, "{long}");
        assert!(long.ends_with('…'), "{long}");
        insta::assert_snapshot!(format!("{with_guess}\n{offline}"));
    }
}
