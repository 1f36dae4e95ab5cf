//! The Kubernetes runtime (kube-rs, k8s-openapi): each instance is a Pod in
//! one namespace, labelled with the same keys as the Docker containers
//! (managed, scope, server, instance, spec hash), named
//! `mcpctl-<server>-<instance>`, restarted by the kubelet (`restartPolicy:
//! Always`). Kubernetes is the scheduler; mcpctl only says which pods exist.
//!
//! **What a pod carries.** One container, `server`, running the lowered
//! program as `args` (the image's entrypoint stays). Secret env vars become
//! `valueFrom.secretKeyRef` to the Secret NAME and key KEY, whatever the
//! caller resolved: a value never goes into a pod spec, and on this runtime
//! the CLI does not read env secrets at all. `resources` become requests and
//! limits alike (Guaranteed QoS: what was asked for is what is held). A stdio
//! server's container keeps stdin open (`stdin: true, stdinOnce: false`) so
//! that every probe can attach and detach without the server seeing EOF.
//! Each pod has a **readiness gate**, the condition `mcpctl.io/mcp-ready`:
//! the kubelet reports the pod Ready only once mcpctl has set it, after a
//! real MCP handshake ([`Runtime::set_ready`], a PATCH of the
//! `status` subresource, made only when the value changes). A server with
//! an HTTP transport gets a Service selecting its pods, so clients reach
//! only instances that really speak MCP. The Service is made with the first
//! pod and deleted with the last HTTP one (under a per-server lock, since a
//! pass starts and removes one server's pods at once); one that no pod
//! needs any more is noted by a look and pruned by the next call that
//! writes. Nothing is patched or deleted unless its managed, scope and
//! server labels are ours.
//!
//! **Observation** is one labelled list of pods and one of Services. Unlike
//! Docker's list, the pods carry restart counts, container states and start
//! times, so nothing more is asked except, for pods that restarted or
//! stopped, the last log line (the `log` subresource; `previous=true` for a
//! restarted container, so a crash loop shows the crash, not the next run's
//! greeting), read once per pod and restart count.
//! [`Runtime::events`] is a watch of the same selector that never ends on
//! its own (see `events`).
//!
//! **Status mapping.** A container `running` is running (with its restarts);
//! waiting in `CrashLoopBackOff`, or `terminated` in a pod the kubelet will
//! restart, is restarting (so the planner demotes or counts a crash loop);
//! a pod that `Failed` or `Succeeded` has exited with its container's code;
//! waiting in `ErrImagePull`, `ImagePullBackOff`, `InvalidImageName` or a
//! `CreateContainer*Error` is dead, with the kubelet's message as its last
//! line; a pod not yet started is created, and when the scheduler has said
//! why it is not placed (`PodScheduled=False`), that reason is its last line,
//! for the message of a readiness timeout. Pods being deleted are not
//! reported, as Docker's `removing` containers are not.
//!
//! **How the probe reaches a pod.** Inside the cluster (in-cluster config),
//! the pod IP and container port, as any client in the cluster would. From
//! outside, through the API server's pod `proxy` subresource: the runtime
//! serves a relay on a loopback port, and a unit's endpoint is
//! `http://127.0.0.1:<relay>/<token>/<pod>/<port><path>`, which the relay
//! forwards (only with its random token, and only to the pods and ports it
//! handed out)
//! with the client's own credentials (so whatever auth the kubeconfig uses,
//! client certificates included, works). The relay lives as long as this
//! runtime value: an endpoint recorded by one process is a hint to a later
//! one, and is rebuilt from the pod at its next observation. A port-forward
//! would also work, but needs a WebSocket stream per connection; the proxy is
//! plain HTTP, which is what the probe speaks. stdio servers are reached
//! through the `attach` subresource (WebSocket, stdin and stdout only).
//!
//! **Differences from Docker.** `create` returns once the API server has
//! the pod, not once it runs: pulling and starting are the kubelet's, and
//! the pod shows as created until then. Logs do not say which stream a line
//! came from, so every line is reported as stdout.
//!
//! **Layout.** This file holds the runtime value and its [`Runtime`]
//! methods; `pod` the manifest, `status` the pod → unit mapping, `gate` the
//! readiness gate, `service` the Services, `events` the watch, `relay`
//! the loopback pod-proxy relay, and `lease` the scope's applier lease and
//! secret-digest key (a Lease and a Secret beside the pods).

mod events;
mod gate;
mod lease;
mod pod;
mod relay;
mod service;
mod status;

pub use gate::READY_CONDITION;
pub use lease::{ANNOTATION_HOLDER, scoped_name};
pub use pod::pod_name;
pub use status::{PodView, view};

use super::{Attached, Created, LogLine, LogStream, Runtime, RuntimeError};
use crate::model::{
    Endpoint, EnvSource, EventKind, InstanceId, RunSpec, Runners, RuntimeEvent, SpecHash,
    Timestamp, Transport, Unit, UnitState, Watched,
};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ContainerStatus, EnvVar, EnvVarSource, Pod, PodReadinessGate,
    PodSpec, ResourceRequirements, SecretKeySelector, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{
    Api, AttachParams, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

pub use super::{LABEL_INSTANCE, LABEL_MANAGED, LABEL_SCOPE, LABEL_SERVER, LABEL_SPEC_HASH};
/// The container port and path, as annotations: a path is no label value.
pub const ANNOTATION_PORT: &str = "mcpctl.io/port";
pub const ANNOTATION_PATH: &str = "mcpctl.io/path";
/// The name of the one container in each pod.
pub const CONTAINER: &str = "server";
const RUNTIME: &str = "kubernetes";

/// How the probe reaches pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Through the API server's pod proxy, relayed on a loopback port:
    /// mcpctl runs outside the cluster.
    ApiProxy,
    /// Straight to the pod IP: mcpctl runs in the cluster.
    PodIp,
}

/// Where and how pods are made.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// `--namespace`; `None` for the kubeconfig context's (or, in a pod,
    /// the service account's).
    pub namespace: Option<String>,
    pub scope: String,
    pub runners: Runners,
}

pub struct KubernetesRuntime {
    client: kube::Client,
    namespace: String,
    scope: String,
    runners: Runners,
    reach: Reach,
    relay: OnceCell<relay::Relay>,
    /// The readiness gate of each pod as last seen or set, so a probe that
    /// agrees with it costs no PATCH.
    gates: Mutex<HashMap<String, bool>>,
    /// One lock per server around "create a pod, then its Service" and
    /// "no pod left, so delete the Service": a pass starts and removes a
    /// server's instances at once, and without it the last removal could
    /// delete the Service a concurrent start has just counted on.
    service_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Services the last look found no pod needs (name, server), pruned by
    /// the next call that writes: a look alone (`plan`, `get`) changes
    /// nothing.
    orphans: Mutex<Vec<(String, String)>>,
    /// The last log line of each pod (by uid) as read for one restart
    /// count: a run's log is final once it has ended, so a crash-looping
    /// pod costs one log call per restart, not one per look.
    last_lines: Mutex<HashMap<String, (LogKey, Option<String>)>>,
    /// The scope's Lease as last read or written (see `lease`).
    last_lease: Mutex<Option<k8s_openapi::api::coordination::v1::Lease>>,
}

fn unavailable(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Unavailable {
        runtime: RUNTIME,
        message: e.to_string(),
    }
}

/// The API server's own words, without kube's wrapping.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

fn op_error(op: &'static str, instance: &str, e: &kube::Error) -> RuntimeError {
    RuntimeError::Operation {
        op,
        instance: instance.to_owned(),
        message: api_message(e),
    }
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The error for an object that carries a name mcpctl would use but not
/// mcpctl's labels for this scope and server: it is left alone.
fn not_ours(op: &'static str, kind: &str, name: &str, scope: &str, server: &str) -> RuntimeError {
    RuntimeError::Operation {
        op,
        instance: name.to_owned(),
        message: format!(
            "a {kind} of that name exists but is not mcpctl's for scope {scope:?}, server {server:?} \
             (its {LABEL_MANAGED}, {LABEL_SCOPE} and {LABEL_SERVER} labels differ); \
             mcpctl leaves it alone: delete or rename it, or use another --scope"
        ),
    }
}

/// An error that says the API server is not there, rather than that one
/// request was refused.
fn is_transport(e: &kube::Error) -> bool {
    matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_))
}

/// Which run of a pod's container a log line was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LogKey {
    restarts: u32,
    previous: bool,
}

impl KubernetesRuntime {
    /// Configuration from `KUBECONFIG` (or `~/.kube/config`), else from the
    /// pod's service account; the probe goes through the API server in the
    /// first case and to pod IPs in the second.
    pub async fn connect(settings: KubeSettings) -> Result<Self, RuntimeError> {
        let (config, reach) = match kube::Config::from_kubeconfig(
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        {
            Ok(c) => (c, Reach::ApiProxy),
            Err(kubeconfig) => match kube::Config::incluster() {
                Ok(c) => (c, Reach::PodIp),
                Err(incluster) => {
                    return Err(unavailable(format!(
                        "no kubeconfig ({kubeconfig}) and not in a cluster ({incluster})"
                    )));
                }
            },
        };
        let client = kube::Client::try_from(config).map_err(unavailable)?;
        Ok(Self::new(client, settings, reach))
    }

    /// With a client made elsewhere (tests point one at a fake API server).
    pub fn new(client: kube::Client, settings: KubeSettings, reach: Reach) -> Self {
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        KubernetesRuntime {
            client,
            namespace,
            scope: settings.scope,
            runners: settings.runners,
            reach,
            relay: OnceCell::new(),
            gates: Mutex::new(HashMap::new()),
            service_locks: Mutex::new(HashMap::new()),
            orphans: Mutex::new(Vec::new()),
            last_lines: Mutex::new(HashMap::new()),
            last_lease: Mutex::new(None),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Whether an object's labels say it is mcpctl's, of this scope, and
    /// (for `Some`) of that server.
    fn owns(&self, meta: &ObjectMeta, server: &str) -> bool {
        let labels = meta.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        label(LABEL_MANAGED) == Some("true")
            && label(LABEL_SCOPE) == Some(self.scope.as_str())
            && label(LABEL_SERVER) == Some(server)
    }

    /// The server of a pod that is ours (managed, of this scope), or `None`.
    fn our_server(&self, pod: &Pod) -> Option<String> {
        let server = pod.metadata.labels.as_ref()?.get(LABEL_SERVER)?;
        self.owns(&pod.metadata, server).then(|| server.clone())
    }

    /// The label selector of this scope's pods.
    pub fn selector(&self) -> String {
        format!("{LABEL_MANAGED}=true,{LABEL_SCOPE}={}", self.scope)
    }
    /// The loopback port of the pod-proxy relay, started on first use.
    async fn relay_port(&self) -> Result<u16, RuntimeError> {
        self.relay
            .get_or_try_init(|| relay::start(self.client.clone(), self.namespace.clone()))
            .await
            .map(|r| r.port)
            .map_err(|e| unavailable(format!("cannot start the pod proxy relay: {e}")))
    }

    /// Where a probe reaches `pod` on `port` at `path`, if it can yet.
    fn http_endpoint(&self, pod: &Pod, port: u16, path: &str) -> Option<Endpoint> {
        match self.reach {
            Reach::PodIp => {
                let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
                let host = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip.to_owned()
                };
                Some(Endpoint::Http(format!("http://{host}:{port}{path}")))
            }
            Reach::ApiProxy => {
                let relay = self.relay.get()?;
                let name = pod.metadata.name.as_deref()?;
                Some(Endpoint::Http(relay.endpoint(name, port, path)))
            }
        }
    }

    async fn ready_to_reach(&self) -> Result<(), RuntimeError> {
        if self.reach == Reach::ApiProxy {
            self.relay_port().await?;
        }
        Ok(())
    }

    /// A pod as a unit, with its last log line when it restarted or stopped.
    async fn unit_of(&self, pod: &Pod) -> Result<Option<Unit>, RuntimeError> {
        // `inspect` names a pod, which may be another scope's.
        if self.our_server(pod).is_none() {
            return Ok(None);
        }
        let Some(view) = view(pod, |port, path| self.http_endpoint(pod, port, path)) else {
            return Ok(None);
        };
        let mut unit = view.unit;
        if let Some(previous) = view.log {
            unit.last_log = self.cached_last_line(pod, &unit, previous).await;
        }
        // No condition yet counts as not ready, as the kubelet reads it: a
        // failing probe of a pod never gated writes nothing.
        self.remember_gate(&unit.handle, gate::gate_of(pod).unwrap_or(false));
        Ok(Some(unit))
    }

    /// [`Self::last_log_line`], read once per pod, restart count and run.
    async fn cached_last_line(&self, pod: &Pod, unit: &Unit, previous: bool) -> Option<String> {
        let Some(uid) = pod.metadata.uid.clone() else {
            return self
                .last_log_line(&unit.handle, previous)
                .await
                .ok()
                .flatten();
        };
        let key = LogKey {
            restarts: unit.restarts.unwrap_or(0),
            previous,
        };
        let cached = self.last_lines.lock().ok().and_then(|c| {
            c.get(&uid)
                .filter(|(k, _)| *k == key)
                .map(|(_, l)| l.clone())
        });
        if let Some(line) = cached {
            return line;
        }
        // A failed read is not remembered: the next look tries again.
        let line = self.last_log_line(&unit.handle, previous).await.ok()?;
        if let Ok(mut c) = self.last_lines.lock() {
            c.insert(uid, (key, line.clone()));
        }
        line
    }

    /// Forgets the log lines of pods that are no longer listed.
    /// Forgets what is kept per pod (last log lines, the relay's allowed
    /// pods) for pods no longer listed, so that memory follows the fleet,
    /// not the weeks of churn behind it.
    fn forget_lines_but(&self, pods: &[Pod]) {
        let live: std::collections::HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        if let Ok(mut c) = self.last_lines.lock() {
            c.retain(|uid, _| live.contains(uid.as_str()));
        }
        if let Some(relay) = self.relay.get() {
            let names: std::collections::HashSet<&str> = pods
                .iter()
                .filter_map(|p| p.metadata.name.as_deref())
                .collect();
            relay.forget_all_but(&names);
        }
    }

    /// The last non-empty line of the container's log: of its previous run
    /// (a restarted container's crash), or of its current one; `Ok(None)`
    /// for an empty log. A pod that has gone meanwhile is an error, which
    /// fails nothing.
    pub async fn last_log_line(
        &self,
        pod: &str,
        previous: bool,
    ) -> Result<Option<String>, kube::Error> {
        let params = LogParams {
            container: Some(CONTAINER.into()),
            previous,
            tail_lines: Some(50),
            ..Default::default()
        };
        match self.pods().logs(pod, &params).await {
            Ok(text) => Ok(text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_owned())),
            Err(e) => {
                tracing::debug!(pod, error = %e, "no logs for the last line");
                Err(e)
            }
        }
    }
}

impl Runtime for KubernetesRuntime {
    async fn lease(&self) -> Result<Option<crate::model::Lease>, RuntimeError> {
        self.read_lease().await
    }

    async fn write_lease(
        &self,
        after: Option<&str>,
        holder: Option<&crate::model::Holder>,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, RuntimeError> {
        self.put_lease(after, holder, ttl).await
    }

    async fn digest_key(
        &self,
        proposed: Option<[u8; 32]>,
    ) -> Result<Option<[u8; 32]>, RuntimeError> {
        self.shared_digest_key(proposed).await
    }

    async fn observe(&self) -> Result<Vec<Unit>, RuntimeError> {
        self.ready_to_reach().await?;
        let list = self
            .pods()
            .list(&ListParams::default().labels(&self.selector()))
            .await
            .map_err(unavailable)?;
        let mut units = Vec::with_capacity(list.items.len());
        for pod in &list.items {
            if let Some(unit) = self.unit_of(pod).await? {
                units.push(unit);
            }
        }
        self.forget_lines_but(&list.items);
        // Orphaned Services are housekeeping: a Service list that fails
        // must not fail the look at the pods, which is what passes need.
        if let Err(e) = self.find_orphans(&list.items).await {
            tracing::warn!(error = %e, "cannot list Services to find orphans");
        }
        Ok(units)
    }

    async fn inspect(&self, handle: &str) -> Result<Option<Unit>, RuntimeError> {
        self.ready_to_reach().await?;
        match self.pods().get_opt(handle).await {
            Ok(Some(pod)) => self.unit_of(&pod).await,
            Ok(None) => Ok(None),
            Err(e) if is_transport(&e) => Err(unavailable(e)),
            Err(e) => Err(op_error("inspect", handle, &e)),
        }
    }

    async fn create(&self, spec: &RunSpec) -> Result<Created, RuntimeError> {
        self.prune_orphans().await;
        let instance = spec.instance.to_string();
        self.ready_to_reach().await?;
        let http_port = spec.port.filter(|_| spec.transport.is_http());
        let lock = self.service_lock(&spec.server);
        let _held = match http_port {
            Some(_) => Some(lock.lock().await),
            None => None,
        };
        let pod = self
            .pods()
            .create(&PostParams::default(), &self.pod_for(spec))
            .await
            .map_err(|e| op_error("create", &instance, &e))?;
        if let Some(port) = http_port {
            self.ensure_service(spec, port).await?;
        }
        let endpoint = match spec.port.filter(|_| spec.transport.is_http()) {
            None => Some(Endpoint::Stdio),
            Some(port) => {
                let path = spec.path.as_deref().unwrap_or("/mcp");
                // Inside the cluster the pod IP comes later: the next
                // observation has it; until then there is nothing to probe.
                self.http_endpoint(&pod, port, path)
            }
        };
        Ok(Created {
            handle: pod
                .metadata
                .name
                .unwrap_or_else(|| pod_name(&spec.server, &spec.instance)),
            endpoint,
        })
    }

    async fn remove(&self, handle: &str) -> Result<(), RuntimeError> {
        // Only a pod of ours is deleted, and only the one that was checked
        // (its uid is the delete's precondition).
        let server = match self.pods().get_opt(handle).await {
            Ok(Some(pod)) => {
                let Some(server) = self.our_server(&pod) else {
                    return Err(not_ours("remove", "pod", handle, &self.scope, "(any)"));
                };
                let params = DeleteParams {
                    preconditions: Some(kube::api::Preconditions {
                        uid: pod.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match self.pods().delete(handle, &params).await {
                    Ok(_) => Some(server),
                    Err(e) if api_code(&e) == Some(404) => Some(server),
                    Err(e) => return Err(op_error("remove", handle, &e)),
                }
            }
            Ok(None) => None,
            Err(e) if is_transport(&e) => return Err(unavailable(e)),
            Err(e) => return Err(op_error("remove", handle, &e)),
        };
        if let Ok(mut gates) = self.gates.lock() {
            gates.remove(handle);
        }
        self.prune_orphans().await;
        match server {
            Some(server) => {
                let lock = self.service_lock(&server);
                let _held = lock.lock().await;
                self.drop_service_if_unused(&server).await
            }
            None => Ok(()),
        }
    }

    fn events(
        &self,
    ) -> impl futures_core::Stream<Item = Result<Watched, RuntimeError>> + Send + '_ {
        // Opened on first poll, so nothing between asking and reading is
        // missed, and nothing runs once the stream is dropped.
        events::watch(self.pods(), self.selector())
    }

    async fn set_ready(&self, handle: &str, ready: bool) -> Result<(), RuntimeError> {
        self.prune_orphans().await;
        self.write_gate(handle, ready).await
    }

    async fn attach(&self, handle: &str) -> Result<Attached, RuntimeError> {
        let params = AttachParams::default()
            .container(CONTAINER)
            .stdin(true)
            .stdout(true)
            .stderr(false);
        let mut process = self
            .pods()
            .attach(handle, &params)
            .await
            .map_err(|e| op_error("attach", handle, &e))?;
        let (Some(stdin), Some(stdout)) = (process.stdin(), process.stdout()) else {
            return Err(RuntimeError::Operation {
                op: "attach",
                instance: handle.to_owned(),
                message: "the API server gave no stdin or stdout stream".into(),
            });
        };
        Ok(Attached {
            reader: Box::pin(KeepAlive {
                inner: stdout,
                _process: process,
            }),
            writer: Box::pin(stdin),
        })
    }

    async fn logs(
        &self,
        handle: &str,
        tail: Option<usize>,
        follow: bool,
        on_line: &mut (dyn FnMut(LogLine) + Send),
    ) -> Result<(), RuntimeError> {
        let params = LogParams {
            container: Some(CONTAINER.into()),
            follow,
            tail_lines: tail.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            ..Default::default()
        };
        let stream = self
            .pods()
            .log_stream(handle, &params)
            .await
            .map_err(|e| op_error("logs", handle, &e))?;
        let mut lines = std::pin::pin!(futures_util::AsyncBufReadExt::lines(stream));
        loop {
            match lines.try_next().await {
                Ok(Some(text)) => on_line(LogLine {
                    stream: LogStream::Stdout,
                    text,
                }),
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(RuntimeError::Operation {
                        op: "logs",
                        instance: handle.to_owned(),
                        message: e.to_string(),
                    });
                }
            }
        }
    }
}

/// An attached stdout that holds the attach session open while it is read;
/// dropping it ends the session (detaching; stdin stays open in the pod).
struct KeepAlive<R> {
    inner: R,
    _process: kube::api::AttachedProcess,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for KeepAlive<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}
