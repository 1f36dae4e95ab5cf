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
//! pod and deleted with the last one (under a per-server lock, since a pass
//! starts and removes one server's pods at once).
//!
//! **Observation** is one labelled list of pods. Unlike Docker's list, it
//! carries restart counts, container states and start times, so nothing
//! more is asked except, for pods that restarted or stopped, the last log
//! line (the `log` subresource; `previous=true` for a restarted container,
//! so a crash loop shows the crash, not the next run's greeting).
//! [`Runtime::events`] is a watch of the same selector, re-opened from the
//! last resource version when the API server ends it.
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
//! `http://127.0.0.1:<relay>/<pod>/<port><path>`, which the relay forwards
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

/// The readiness gate mcpctl sets after a successful MCP handshake.
pub const READY_CONDITION: &str = "mcpctl.io/mcp-ready";
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
    relay: OnceCell<u16>,
    /// The readiness gate of each pod as last seen or set, so a probe that
    /// agrees with it costs no PATCH.
    gates: Mutex<HashMap<String, bool>>,
    /// One lock per server around "create a pod, then its Service" and
    /// "no pod left, so delete the Service": a pass starts and removes a
    /// server's instances at once, and without it the last removal could
    /// delete the Service a concurrent start has just counted on.
    service_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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

/// An error that says the API server is not there, rather than that one
/// request was refused.
fn is_transport(e: &kube::Error) -> bool {
    matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_))
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

    /// The label selector of this scope's pods.
    pub fn selector(&self) -> String {
        format!("{LABEL_MANAGED}=true,{LABEL_SCOPE}={}", self.scope)
    }

    /// The Service of `server`: `mcpctl-<server>`, with the scope in the
    /// name unless it is the default one.
    pub fn service_name(&self, server: &str) -> String {
        let full = if self.scope == "default" {
            format!("mcpctl-{server}")
        } else {
            format!("mcpctl-{}-{server}", self.scope)
        };
        // A Service name is a DNS label: 63 characters at most. A longer
        // one keeps its start and a digest of the whole, so it stays unique.
        if full.len() <= 63 {
            return full;
        }
        use sha2::{Digest, Sha256};
        let digest = hex::encode(&Sha256::digest(full.as_bytes())[..4]);
        // The scope is the user's to choose: cut on a character boundary.
        let cut = (0..=54)
            .rev()
            .find(|&i| full.is_char_boundary(i))
            .unwrap_or(0);
        let head = full[..cut].trim_end_matches('-');
        format!("{head}-{digest}")
    }

    /// The loopback port of the pod-proxy relay, started on first use.
    async fn relay_port(&self) -> Result<u16, RuntimeError> {
        self.relay
            .get_or_try_init(|| relay::start(self.client.clone(), self.namespace.clone()))
            .await
            .copied()
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
                let relay = *self.relay.get()?;
                let name = pod.metadata.name.as_deref()?;
                Some(Endpoint::Http(format!(
                    "http://127.0.0.1:{relay}/{name}/{port}{path}"
                )))
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
        let Some(view) = view(pod, |port, path| self.http_endpoint(pod, port, path)) else {
            return Ok(None);
        };
        let mut unit = view.unit;
        if let Some(previous) = view.log
            && let Some(line) = self.last_log_line(&unit.handle, previous).await
        {
            unit.last_log = Some(line);
        }
        // No condition yet counts as not ready, as the kubelet reads it: a
        // failing probe of a pod never gated writes nothing.
        self.remember_gate(&unit.handle, gate_of(pod).unwrap_or(false));
        Ok(Some(unit))
    }

    fn remember_gate(&self, pod: &str, value: bool) {
        if let Ok(mut gates) = self.gates.lock() {
            gates.insert(pod.to_owned(), value);
        }
    }

    /// The last non-empty line of the container's log: of its previous run
    /// (a restarted container's crash), or of its current one. A pod that
    /// has gone meanwhile has none, and that fails nothing.
    pub async fn last_log_line(&self, pod: &str, previous: bool) -> Option<String> {
        let params = LogParams {
            container: Some(CONTAINER.into()),
            previous,
            tail_lines: Some(50),
            ..Default::default()
        };
        match self.pods().logs(pod, &params).await {
            Ok(text) => text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_owned()),
            Err(e) => {
                tracing::debug!(pod, error = %e, "no logs for the last line");
                None
            }
        }
    }

    fn service_lock(&self, server: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.service_locks.lock() {
            Ok(mut locks) => locks.entry(server.to_owned()).or_default().clone(),
            // A poisoned map only loses the serialisation, not correctness of
            // each call; a fresh lock keeps going.
            Err(_) => Arc::default(),
        }
    }

    /// Makes `server`'s Service unless it exists.
    async fn ensure_service(&self, spec: &RunSpec, port: u16) -> Result<(), RuntimeError> {
        let name = self.service_name(&spec.server);
        let service = Service {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    (LABEL_MANAGED.to_owned(), "true".to_owned()),
                    (LABEL_SCOPE.to_owned(), self.scope.clone()),
                    (LABEL_SERVER.to_owned(), spec.server.clone()),
                ])),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([
                    (LABEL_MANAGED.to_owned(), "true".to_owned()),
                    (LABEL_SCOPE.to_owned(), self.scope.clone()),
                    (LABEL_SERVER.to_owned(), spec.server.clone()),
                ])),
                ports: Some(vec![ServicePort {
                    name: Some("mcp".into()),
                    port: i32::from(port),
                    target_port: Some(IntOrString::Int(i32::from(port))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let patch = serde_json::json!({"spec": {"ports": service.spec.as_ref().and_then(|s| s.ports.clone())}});
        // Someone else may delete it between our create and patch (a
        // `kubectl delete`); a few rounds settle it.
        let mut last = None;
        for _ in 0..3 {
            match self
                .services()
                .create(&PostParams::default(), &service)
                .await
            {
                Ok(_) => return Ok(()),
                // Made by an earlier create; its port follows the spec's,
                // which a changed port rolls, so the ports are made to match.
                Err(e) if api_code(&e) == Some(409) => match self
                    .services()
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(e) if api_code(&e) == Some(404) => last = Some(e),
                    Err(e) => return Err(op_error("update service", &name, &e)),
                },
                Err(e) => return Err(op_error("create service", &name, &e)),
            }
        }
        Err(match last {
            Some(e) => op_error("update service", &name, &e),
            None => unavailable("the service kept vanishing"),
        })
    }

    /// Deletes `server`'s Service once no pod of it is left (or leaving).
    async fn drop_service_if_unused(&self, server: &str) -> Result<(), RuntimeError> {
        let selector = format!("{},{LABEL_SERVER}={server}", self.selector());
        let left = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| op_error("list pods", server, &e))?;
        if left
            .items
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_none())
        {
            return Ok(());
        }
        let name = self.service_name(server);
        match self
            .services()
            .delete(&name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(op_error("delete service", &name, &e)),
        }
    }

    /// Sets the pod's readiness gate: `true` after a passing MCP probe,
    /// `false` after a failing one. Only a change is written.
    async fn write_gate(&self, pod: &str, ready: bool) -> Result<(), RuntimeError> {
        let known = self.gates.lock().ok().and_then(|g| g.get(pod).copied());
        if known == Some(ready) {
            return Ok(());
        }
        let (status, reason, message) = if ready {
            ("True", "McpHandshake", "the MCP handshake succeeded")
        } else {
            ("False", "McpProbeFailed", "the MCP handshake failed")
        };
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let patch = serde_json::json!({
            "status": {"conditions": [{
                "type": READY_CONDITION,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
            }]}
        });
        match self
            .pods()
            .patch_status(pod, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {
                self.remember_gate(pod, ready);
                Ok(())
            }
            // A pod that went away has no gate to set.
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(op_error("set readiness gate", pod, &e)),
        }
    }

    /// The pod manifest for `spec`.
    pub fn pod_for(&self, spec: &RunSpec) -> Pod {
        let (image, args) = super::lower(&spec.program, &spec.args, &self.runners);
        let labels = BTreeMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_SCOPE.to_owned(), self.scope.clone()),
            (LABEL_SERVER.to_owned(), spec.server.clone()),
            (LABEL_INSTANCE.to_owned(), spec.instance.to_string()),
            (LABEL_SPEC_HASH.to_owned(), spec.spec_hash.to_string()),
        ]);
        let http_port = spec.port.filter(|_| spec.transport.is_http());
        let annotations = http_port.map(|port| {
            BTreeMap::from([
                (ANNOTATION_PORT.to_owned(), port.to_string()),
                (
                    ANNOTATION_PATH.to_owned(),
                    spec.path.clone().unwrap_or_else(|| "/mcp".into()),
                ),
            ])
        });
        let env = spec
            .env
            .iter()
            .map(|v| match &v.value {
                EnvSource::Plain(value) => EnvVar {
                    name: v.name.clone(),
                    value: Some(value.clone()),
                    value_from: None,
                },
                // The Secret's own key, read by the kubelet: whatever value
                // a caller resolved stays out of the pod spec.
                EnvSource::Secret { name, key, .. } | EnvSource::Reference { name, key } => {
                    EnvVar {
                        name: v.name.clone(),
                        value: None,
                        value_from: Some(EnvVarSource {
                            secret_key_ref: Some(SecretKeySelector {
                                name: name.clone(),
                                key: key.clone(),
                                optional: Some(false),
                            }),
                            ..Default::default()
                        }),
                    }
                }
            })
            .collect::<Vec<_>>();
        let mut amounts = BTreeMap::new();
        if let Some(bytes) = spec.memory_bytes {
            amounts.insert("memory".to_owned(), Quantity(bytes.to_string()));
        }
        if let Some(m) = spec.millicpus {
            amounts.insert("cpu".to_owned(), Quantity(format!("{m}m")));
        }
        let resources = (!amounts.is_empty()).then(|| ResourceRequirements {
            limits: Some(amounts.clone()),
            requests: Some(amounts),
            ..Default::default()
        });
        let stdio = spec.transport == Transport::Stdio;
        Pod {
            metadata: ObjectMeta {
                name: Some(pod_name(&spec.server, &spec.instance)),
                labels: Some(labels),
                annotations,
                ..Default::default()
            },
            spec: Some(PodSpec {
                restart_policy: Some("Always".into()),
                // Service links would put every Service of the namespace into the env.
                enable_service_links: Some(false),
                readiness_gates: Some(vec![PodReadinessGate {
                    condition_type: READY_CONDITION.into(),
                }]),
                containers: vec![Container {
                    name: CONTAINER.into(),
                    image: Some(image),
                    args: (!args.is_empty()).then_some(args),
                    env: (!env.is_empty()).then_some(env),
                    ports: http_port.map(|p| {
                        vec![ContainerPort {
                            name: Some("mcp".into()),
                            container_port: i32::from(p),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        }]
                    }),
                    resources,
                    stdin: Some(stdio),
                    stdin_once: Some(false),
                    tty: Some(false),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }
}

/// Pod name: `mcpctl-<server>-<instance>`, like Docker's container name.
pub fn pod_name(server: &str, instance: &InstanceId) -> String {
    super::unit_name(server, instance)
}

/// A pod as mcpctl sees it, before any log is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub unit: Unit,
    /// Whether the last log line is worth reading, and of which run
    /// (`Some(true)`: the previous one, for a restarted container).
    pub log: Option<bool>,
}

fn millis(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Timestamp {
    Timestamp(t.0.as_millisecond())
}

/// The readiness gate's value on `pod`, when it has been set.
fn gate_of(pod: &Pod) -> Option<bool> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == READY_CONDITION)
        .map(|c| c.status == "True")
}

/// Waiting reasons that mean the kubelet cannot start the container until
/// something outside it changes: the pod is dead, with the kubelet's message.
const STUCK: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The status mapping of the module documentation, as a pure function of
/// the pod. `endpoint` builds an HTTP endpoint from the port and path.
pub fn view(pod: &Pod, endpoint: impl Fn(u16, &str) -> Option<Endpoint>) -> Option<PodView> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let labels = pod.metadata.labels.as_ref()?;
    let instance = InstanceId(labels.get(LABEL_INSTANCE)?.clone());
    let server = labels.get(LABEL_SERVER)?.clone();
    let spec_hash = SpecHash(labels.get(LABEL_SPEC_HASH)?.clone());
    let handle = pod.metadata.name.clone()?;
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let unit_endpoint = match annotations
        .get(ANNOTATION_PORT)
        .and_then(|p| p.parse::<u16>().ok())
    {
        None => Some(Endpoint::Stdio),
        Some(port) => endpoint(
            port,
            annotations
                .get(ANNOTATION_PATH)
                .map_or("/mcp", String::as_str),
        ),
    };
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let container: Option<&ContainerStatus> = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER));
    let restarts = container.map_or(0, |c| c.restart_count.max(0) as u32);
    let state = container.and_then(|c| c.state.clone()).unwrap_or_default();
    let last_exit = container
        .and_then(|c| c.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| i64::from(t.exit_code));
    let mut unit = Unit {
        instance,
        server,
        spec_hash,
        handle,
        state: UnitState::Created,
        restarts: Some(restarts),
        exit_code: None,
        last_log: None,
        endpoint: unit_endpoint,
        started_at: None,
    };
    let mut log = None;
    if matches!(phase, "Failed" | "Succeeded") {
        match &state.terminated {
            Some(t) => {
                unit.state = UnitState::Exited(i64::from(t.exit_code));
                unit.exit_code = Some(i64::from(t.exit_code));
                log = Some(false);
            }
            None => {
                unit.state = UnitState::Dead;
                unit.last_log = status.message.clone().or(status.reason.clone());
            }
        }
    } else if let Some(running) = &state.running {
        unit.state = UnitState::Running;
        unit.started_at = running.started_at.as_ref().map(millis);
        if restarts > 0 {
            unit.exit_code = last_exit;
            log = Some(true);
        }
    } else if let Some(t) = &state.terminated {
        // The kubelet restarts it: between two runs.
        unit.state = UnitState::Restarting;
        unit.exit_code = Some(i64::from(t.exit_code));
        log = Some(false);
    } else if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.as_deref().unwrap_or("");
        if STUCK.contains(&reason) {
            unit.state = UnitState::Dead;
            unit.last_log = Some(match &waiting.message {
                Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                _ => reason.to_owned(),
            });
        } else if reason == "CrashLoopBackOff" || restarts > 0 {
            unit.state = UnitState::Restarting;
            unit.exit_code = last_exit;
            log = Some(true);
        }
    } else if let Some(unscheduled) = status
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .filter(|c| c.status == "False")
    {
        unit.last_log = Some(match (&unscheduled.reason, &unscheduled.message) {
            (Some(r), Some(m)) => format!("{r}: {m}"),
            (Some(r), None) => r.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => "not scheduled".into(),
        });
    }
    Some(PodView { unit, log })
}

/// What a watch event of one pod says, in no runtime's dialect.
fn event_of(ev: WatchEvent<Pod>) -> Option<Result<Watched, RuntimeError>> {
    let (pod, kind) = match ev {
        WatchEvent::Added(p) => (p, Some(EventKind::Created)),
        WatchEvent::Deleted(p) => (p, Some(EventKind::Removed)),
        WatchEvent::Modified(p) => (p, None),
        WatchEvent::Bookmark(_) => return None,
        WatchEvent::Error(status) => return Some(Err(unavailable(status.message))),
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let instance = InstanceId(labels.get(LABEL_INSTANCE)?.clone());
    let server = labels.get(LABEL_SERVER).cloned().unwrap_or_default();
    let kind = match kind {
        Some(k) => k,
        None => {
            let state = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER))
                .and_then(|c| c.state.clone())
                .unwrap_or_default();
            if let Some(t) = state.terminated {
                EventKind::Died {
                    exit_code: Some(i64::from(t.exit_code)),
                }
            } else if state.running.is_some() {
                EventKind::Started
            } else if state.waiting.is_some() {
                EventKind::Died { exit_code: None }
            } else {
                EventKind::Created
            }
        }
    };
    Some(Ok(Watched::Event(RuntimeEvent {
        instance,
        server,
        kind,
    })))
}

impl Runtime for KubernetesRuntime {
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
            None => Endpoint::Stdio,
            Some(port) => {
                let path = spec.path.as_deref().unwrap_or("/mcp");
                // Inside the cluster the pod IP comes later: the next
                // observation has it; until then there is nothing to probe.
                self.http_endpoint(&pod, port, path)
                    .unwrap_or_else(|| Endpoint::Http(String::new()))
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
        let server = match self.pods().delete(handle, &DeleteParams::default()).await {
            Ok(either) => either
                .left()
                .and_then(|p| p.metadata.labels)
                .and_then(|l| l.get(LABEL_SERVER).cloned()),
            Err(e) if api_code(&e) == Some(404) => None,
            Err(e) => return Err(op_error("remove", handle, &e)),
        };
        if let Ok(mut gates) = self.gates.lock() {
            gates.remove(handle);
        }
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
        let pods = self.pods();
        let selector = self.selector();
        // The watch starts from the resource version of a list made on first
        // poll, so nothing between asking and reading is missed; when the
        // API server ends a watch (it does, every few minutes) it is opened
        // again from the last version seen.
        futures_util::stream::once(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(watch_loop(pods, selector, tx));
            tokio_stream_of(rx)
        })
        .flatten()
    }

    async fn set_ready(&self, handle: &str, ready: bool) -> Result<(), RuntimeError> {
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

fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_core::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Lists once for the current resource version, then watches from it,
/// forwarding events until the receiver is dropped.
async fn watch_loop(
    pods: Api<Pod>,
    selector: String,
    tx: tokio::sync::mpsc::Sender<Result<Watched, RuntimeError>>,
) {
    let mut version = String::new();
    loop {
        if version.is_empty() {
            match pods
                .list(&ListParams::default().labels(&selector).limit(1))
                .await
            {
                Ok(list) => version = list.metadata.resource_version.unwrap_or_default(),
                Err(e) => {
                    if tx.send(Err(unavailable(e))).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        () = tx.closed() => return,
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    }
                }
            }
        }
        let params = WatchParams::default().labels(&selector).timeout(290);
        let stream = match pods.watch(&params, &version).await {
            Ok(s) => s,
            Err(e) => {
                version.clear();
                if tx.send(Err(unavailable(e))).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                next = stream.next() => next,
            };
            match next {
                None => break,
                Some(Ok(ev)) => {
                    if let WatchEvent::Error(status) = &ev
                        && status.code == 410
                    {
                        // Too old: list again for a fresh version.
                        version.clear();
                        break;
                    }
                    if let Some(v) = resource_version(&ev) {
                        version = v;
                    }
                    if let Some(item) = event_of(ev)
                        && tx.send(item).await.is_err()
                    {
                        return;
                    }
                }
                Some(Err(e)) => {
                    version.clear();
                    if tx.send(Err(unavailable(e))).await.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

fn resource_version(ev: &WatchEvent<Pod>) -> Option<String> {
    match ev {
        WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) => {
            p.metadata.resource_version.clone()
        }
        WatchEvent::Bookmark(b) => Some(b.metadata.resource_version.clone()),
        WatchEvent::Error(_) => None,
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

mod relay {
    //! The loopback relay to the API server's pod proxy: a request for
    //! `/<pod>/<port>/<path>` goes to
    //! `/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/<path>` through the
    //! kube client, which adds the cluster URL and credentials. Responses
    //! stream back as they come, so SSE works.

    use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;

    type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

    pub async fn start(client: kube::Client, namespace: String) -> std::io::Result<u16> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let client = client.clone();
                let namespace = namespace.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let client = client.clone();
                        let namespace = namespace.clone();
                        async move { Ok::<_, Infallible>(forward(&client, &namespace, req).await) }
                    });
                    // A probe hanging up mid-stream is routine.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(port)
    }

    fn plain(status: StatusCode, text: String) -> Response<Body> {
        let mut r = Response::new(
            Full::new(Bytes::from(text))
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        *r.status_mut() = status;
        r
    }

    /// `/<pod>/<port>/<rest>` → the pod proxy path, or `None`.
    pub fn proxy_path(namespace: &str, path_and_query: &str) -> Option<String> {
        let rest = path_and_query.strip_prefix('/')?;
        let (pod, rest) = rest.split_once('/')?;
        let (port, rest) = match rest.split_once('/') {
            Some((port, rest)) => (port, format!("/{rest}")),
            None => match rest.split_once('?') {
                Some((port, q)) => (port, format!("/?{q}")),
                None => (rest, "/".to_owned()),
            },
        };
        // A DNS-1123 name: no `..`, nothing that climbs out of the pod path.
        let valid = |s: &str| {
            s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !valid(pod) || port.parse::<u16>().is_err() {
            return None;
        }
        Some(format!(
            "/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy{rest}"
        ))
    }

    async fn forward(
        client: &kube::Client,
        namespace: &str,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .and_then(|p| proxy_path(namespace, p));
        let Some(target) = target else {
            return plain(StatusCode::NOT_FOUND, "not a pod proxy path".into());
        };
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let mut out = Request::builder().method(parts.method).uri(target);
        for (name, value) in &parts.headers {
            // The API server's host, and the client's own credentials.
            if name != hyper::header::HOST && name != hyper::header::AUTHORIZATION {
                out = out.header(name, value);
            }
        }
        let out = match out.body(kube::client::Body::from(body)) {
            Ok(r) => r,
            Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
        };
        match client.send(out).await {
            Ok(resp) => resp.map(|b| b.map_err(Into::into).boxed_unsync()),
            Err(e) => plain(StatusCode::BAD_GATEWAY, e.to_string()),
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn relay_paths_name_a_pod_and_port() {
            assert_eq!(
                super::proxy_path("ns", "/mcpctl-a-01x/8080/mcp?x=1").as_deref(),
                Some("/api/v1/namespaces/ns/pods/mcpctl-a-01x:8080/proxy/mcp?x=1")
            );
            assert_eq!(
                super::proxy_path("ns", "/p/80").as_deref(),
                Some("/api/v1/namespaces/ns/pods/p:80/proxy/")
            );
            assert_eq!(super::proxy_path("ns", "/../80/x"), None);
            assert_eq!(super::proxy_path("ns", "/p/notaport/x"), None);
            assert_eq!(super::proxy_path("ns", "/p"), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EnvVar as ModelEnvVar, Program, SecretValue};

    fn settings() -> KubeSettings {
        KubeSettings {
            namespace: Some("ns".into()),
            scope: "default".into(),
            runners: Runners::default(),
        }
    }

    fn spec() -> RunSpec {
        RunSpec {
            instance: InstanceId("01abc".into()),
            server: "beta".into(),
            spec_hash: SpecHash("h1".into()),
            program: Program::Image("img:1".into()),
            args: vec!["--transport".into(), "http".into()],
            transport: Transport::StreamableHttp,
            port: Some(8080),
            path: None,
            env: vec![
                ModelEnvVar {
                    name: "PLAIN".into(),
                    value: EnvSource::Plain("p".into()),
                },
                ModelEnvVar {
                    name: "TOKEN".into(),
                    value: EnvSource::Secret {
                        name: "gh".into(),
                        key: "token".into(),
                        value: SecretValue::new("s3cr3t-value".into()),
                    },
                },
            ],
            memory_bytes: Some(64 * 1024 * 1024),
            millicpus: Some(250),
        }
    }

    fn pod_json(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "mcpctl-beta-01abc",
                "labels": {
                    LABEL_MANAGED: "true", LABEL_SCOPE: "default", LABEL_SERVER: "beta",
                    LABEL_INSTANCE: "01abc", LABEL_SPEC_HASH: "h1"
                },
                "annotations": {ANNOTATION_PORT: "8080", ANNOTATION_PATH: "/mcp"}
            },
            "status": status
        }))
        .expect("pod json")
    }

    fn at(port: u16, path: &str) -> Option<Endpoint> {
        Some(Endpoint::Http(format!("http://pod:{port}{path}")))
    }

    #[tokio::test]
    async fn the_pod_spec_references_secrets_and_never_holds_their_value() {
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:1".parse().expect("uri"),
        ))
        .expect("client");
        let rt = KubernetesRuntime::new(client, settings(), Reach::ApiProxy);
        let pod = rt.pod_for(&spec());
        let text = serde_json::to_string(&pod).expect("json");
        assert!(!text.contains("s3cr3t-value"), "{text}");
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        let env = c.env.as_ref().expect("env");
        let token = env.iter().find(|e| e.name == "TOKEN").expect("TOKEN");
        let r = token
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secretKeyRef");
        assert_eq!((r.name.as_str(), r.key.as_str()), ("gh", "token"));
        let res = c.resources.as_ref().expect("resources");
        assert_eq!(res.limits, res.requests);
        assert_eq!(res.limits.as_ref().expect("limits")["cpu"].0, "250m");
        assert_eq!(res.limits.as_ref().expect("limits")["memory"].0, "67108864");
        let gates = pod.spec.as_ref().and_then(|s| s.readiness_gates.clone());
        assert_eq!(gates.expect("gates")[0].condition_type, READY_CONDITION);
        assert_eq!(c.stdin, Some(false), "an HTTP server needs no stdin");
        assert_eq!(
            c.args.as_deref(),
            Some(&["--transport".to_owned(), "http".to_owned()][..])
        );
        let mut stdio = spec();
        stdio.transport = Transport::Stdio;
        let pod = rt.pod_for(&stdio);
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        assert_eq!((c.stdin, c.stdin_once), (Some(true), Some(false)));
        assert!(pod.metadata.annotations.is_none());
    }

    #[tokio::test]
    async fn service_names_are_dns_labels() {
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:1".parse().expect("uri"),
        ))
        .expect("client");
        let rt = KubernetesRuntime::new(client, settings(), Reach::ApiProxy);
        assert_eq!(rt.service_name("github"), "mcpctl-github");
        let long = "a".repeat(63);
        let name = rt.service_name(&long);
        assert_eq!(name.len(), 63, "{name}");
        assert!(name.starts_with("mcpctl-aaaa"));
        assert_ne!(name, rt.service_name(&"a".repeat(62)));
        // A multi-byte character across the cut does not panic.
        let scope = format!("{}é", "s".repeat(46));
        let settings = KubeSettings {
            scope,
            ..settings()
        };
        let odd = KubernetesRuntime::new(rt.client.clone(), settings, Reach::ApiProxy);
        assert!(odd.service_name(&long).len() <= 63);
    }

    #[test]
    fn pod_states_map_to_unit_states() {
        let running = pod_json(serde_json::json!({
            "phase": "Running",
            "containerStatuses": [{"name": "server", "image": "i", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {"startedAt": "2026-11-30T01:00:00Z"}}}]
        }));
        let v = view(&running, at).expect("unit");
        assert_eq!(v.unit.state, UnitState::Running);
        assert_eq!(v.unit.restarts, Some(0));
        assert!(v.unit.started_at.is_some());
        assert_eq!(v.unit.endpoint, at(8080, "/mcp"));
        assert_eq!(v.log, None);

        let crash = pod_json(serde_json::json!({
            "phase": "Running",
            "containerStatuses": [{"name": "server", "image": "i", "imageID": "", "ready": false,
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 3}}}]
        }));
        let v = view(&crash, at).expect("unit");
        assert_eq!(v.unit.state, UnitState::Restarting);
        assert_eq!((v.unit.restarts, v.unit.exit_code), (Some(4), Some(3)));
        assert_eq!(v.log, Some(true), "the crashed run's log");

        let pull = pod_json(serde_json::json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "server", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImagePull", "message": "manifest unknown"}}}]
        }));
        let v = view(&pull, at).expect("unit");
        assert_eq!(v.unit.state, UnitState::Dead);
        assert_eq!(
            v.unit.last_log.as_deref(),
            Some("ErrImagePull: manifest unknown")
        );

        let failed = pod_json(serde_json::json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "server", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 2}}}]
        }));
        let v = view(&failed, at).expect("unit");
        assert_eq!(v.unit.state, UnitState::Exited(2));
        assert_eq!(v.log, Some(false));

        let pending = pod_json(serde_json::json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient memory."}]
        }));
        let v = view(&pending, at).expect("unit");
        assert_eq!(v.unit.state, UnitState::Created);
        assert_eq!(
            v.unit.last_log.as_deref(),
            Some("Unschedulable: 0/1 nodes are available: 1 Insufficient memory.")
        );

        let mut leaving = running.clone();
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert_eq!(view(&leaving, at), None, "a pod being deleted is gone");
    }
}
