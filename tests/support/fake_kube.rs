//! A **fake** Kubernetes API server, in process, for the Kubernetes runtime's
//! tests: it is not Kubernetes, it only answers the requests mcpctl makes,
//! in the API's real JSON (k8s-openapi types serialised as the API server
//! does: `Pod`, `PodList`, `Status`, watch events).
//!
//! It serves, for any namespace: pods (create, get, list with an equality
//! label selector, watch from a resource version, delete, the `status`
//! subresource's GET and strategic-merge PATCH of conditions, the `log`
//! subresource with `previous` and `tailLines`, and the `proxy` subresource
//! of `pod:port`), services and secrets, and `coordination.k8s.io/v1`
//! leases (create, get, list, merge PATCH, delete, and PUT with the API
//! server's optimistic concurrency: a stale `metadata.resourceVersion` is a
//! 409 Conflict). Every write bumps the one resource version. It has no scheduler and no kubelet: a pod's status is set when it
//! is created, from the [`Behaviour`] the test registered for its image, and
//! the test can change it afterwards.
//!
//! A pod that [`Behaviour::Serve`]s and has a container port is backed by a
//! real MCP server (rmcp, streamable HTTP) on a loopback port, and the pod
//! proxy forwards to it: the probe's handshake is real, only the path to the
//! server is the fake's. A serving pod without a port is a real rmcp stdio
//! server on in-memory pipes that live as long as the pod (its stdin stays
//! open between attaches, as `stdinOnce: false` asks), reached through the
//! `attach` subresource: a WebSocket speaking the `v4.channel.k8s.io`
//! stream protocol (channel 0 stdin, 1 stdout).
//!
//! It has the API server's faults, for the tests of a watch that must
//! survive them: a watch ends after its `timeoutSeconds` (or at once, when
//! the test says [`FakeKube::end_watches`]); one that times out sends a
//! BOOKMARK with the current version first, when the client allowed them; a watch from a
//! version older than the last [`FakeKube::expire_versions`] gets an ERROR
//! event carrying a 410 `Status`, as an etcd compaction makes the real one
//! do; [`FakeKube::refuse_watches`] answers watches with 500; and deletion
//! is graceful when [`FakeKube::set_grace`] says so: a DELETE sets
//! `metadata.deletionTimestamp`, and the pod lingers, Terminating, for the
//! grace period before it is gone.
//!
//! Everything the tests assert on is recorded: every request line, every
//! status PATCH, and every proxied request with its answer's status, in one
//! ordered journal.
#![allow(dead_code)] // Each including test binary uses a different subset.

use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, Status, Time, WatchEvent};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What the fake's "kubelet" makes of a pod whose container runs an image.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Running, ready to answer MCP through the pod proxy (if it has a port).
    Serve,
    /// Running, but every proxied request gets 503: it never speaks MCP.
    Refuse,
    /// `CrashLoopBackOff` after `restarts` restarts, the previous run having
    /// exited with `exit_code` after logging `last_words`.
    CrashLoop {
        restarts: i32,
        exit_code: i32,
        last_words: String,
    },
    /// The pod failed: its container terminated with `exit_code`.
    Exit { exit_code: i32, last_words: String },
    /// `ErrImagePull` with the kubelet's `message`.
    ImagePull { message: String },
    /// Pending: the scheduler cannot place it, for `message`.
    Unschedulable { message: String },
}

/// One entry of the journal, in the order things happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Journal {
    /// `GET /api/v1/...?...`
    Request(String),
    /// A request through a pod's proxy, and the status it was answered with.
    Proxied { pod: String, status: u16 },
    /// An attach to a pod's stdin and stdout, and the protocol agreed.
    Attached { pod: String, protocol: String },
    /// A PATCH of a pod's status: the condition type and status it set.
    StatusPatch {
        pod: String,
        condition: String,
        status: String,
    },
}

#[derive(Default)]
struct World {
    version: u64,
    pods: BTreeMap<(String, String), Pod>,
    services: BTreeMap<(String, String), Service>,
    secrets: BTreeMap<(String, String), Secret>,
    leases: BTreeMap<(String, String), Lease>,
    /// Pod events so far: resource version, namespace, event.
    history: Vec<(u64, String, WatchEvent<Pod>)>,
    behaviours: HashMap<String, Behaviour>,
    /// Current and previous-run log lines, by pod name.
    logs: HashMap<String, (Vec<String>, Vec<String>)>,
    backends: HashMap<String, (SocketAddr, tokio::task::AbortHandle)>,
    refusing: std::collections::HashSet<String>,
    /// A stdio pod's stdin, and its stdout as each attach sees it.
    stdio: HashMap<String, StdioPod>,
    journal: Vec<Journal>,
    /// Bumped to end every open watch.
    watch_generation: u64,
    /// Versions up to this one are compacted away: watching from them is 410.
    expired_through: u64,
    refuse_watches: bool,
    /// How long a deleted pod lingers as Terminating (zero: gone at once).
    grace: std::time::Duration,
}

#[derive(Clone)]
struct StdioPod {
    stdin: Arc<tokio::sync::Mutex<tokio::io::WriteHalf<tokio::io::DuplexStream>>>,
    stdout: tokio::sync::broadcast::Sender<Bytes>,
    task: tokio::task::AbortHandle,
}

struct Shared {
    world: Mutex<World>,
    changed: tokio::sync::Notify,
    handle: tokio::runtime::Handle,
}

/// The running fake; dropping it stops the server.
pub struct FakeKube {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl FakeKube {
    /// Starts the fake on a loopback port, on a runtime of its own (so sync
    /// tests that drive the `mcpctl` binary can use it too).
    pub fn start() -> FakeKube {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("fake kube runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind fake kube");
                let addr = listener.local_addr().expect("addr");
                let shared = Arc::new(Shared {
                    world: Mutex::new(World::default()),
                    changed: tokio::sync::Notify::new(),
                    handle: tokio::runtime::Handle::current(),
                });
                ready_tx
                    .send((addr, shared.clone()))
                    .expect("report the address");
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let shared = shared.clone();
                                async move { Ok::<_, Infallible>(route(&shared, req).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades()
                                .await;
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stop_rx => {}
                }
            });
        });
        let (addr, shared) = ready_rx.recv().expect("fake kube started");
        FakeKube {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client for in-process tests, defaulting to `namespace`.
    pub fn client(&self, namespace: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("fake url"));
        config.default_namespace = namespace.to_owned();
        kube::Client::try_from(config).expect("kube client")
    }

    /// A kubeconfig file under `dir` whose current context is the fake, in
    /// `namespace`, with no credentials.
    pub fn kubeconfig(&self, dir: &std::path::Path, namespace: &str) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nobody\n    namespace: {namespace}\ncurrent-context: fake\nusers:\n- name: nobody\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.shared.world.lock().expect("fake world")
    }

    /// What pods running `image` do from now on (default: [`Behaviour::Serve`]).
    pub fn behave(&self, image: &str, behaviour: Behaviour) {
        self.world().behaviours.insert(image.to_owned(), behaviour);
    }

    pub fn pods(&self) -> Vec<Pod> {
        self.world().pods.values().cloned().collect()
    }

    pub fn services(&self) -> Vec<Service> {
        self.world().services.values().cloned().collect()
    }

    pub fn secrets(&self) -> Vec<Secret> {
        self.world().secrets.values().cloned().collect()
    }

    pub fn leases(&self) -> Vec<Lease> {
        self.world().leases.values().cloned().collect()
    }

    pub fn journal(&self) -> Vec<Journal> {
        self.world().journal.clone()
    }

    pub fn add_secret(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "stringData": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        }))
        .expect("secret");
        self.world()
            .secrets
            .insert((namespace.to_owned(), name.to_owned()), secret);
    }

    /// Puts a Service in place, as someone else might.
    pub fn add_service(&self, namespace: &str, service: Service) {
        let name = service.metadata.name.clone().expect("service name");
        let mut w = self.world();
        w.version += 1;
        let mut service = service;
        service.metadata.namespace = Some(namespace.to_owned());
        service.metadata.uid = Some(format!("uid-{}", w.version));
        service.metadata.resource_version = Some(w.version.to_string());
        w.services.insert((namespace.to_owned(), name), service);
    }

    /// Deletes a pod behind mcpctl's back, as `kubectl delete pod` would
    /// (gracefully, when a grace period is set).
    pub fn delete_pod(&self, namespace: &str, name: &str) -> bool {
        let removed = delete_pod(&self.shared, namespace, name);
        self.shared.changed.notify_waiters();
        removed.is_some()
    }

    /// Ends every open watch now, as the API server does at `timeoutSeconds`.
    pub fn end_watches(&self) {
        self.world().watch_generation += 1;
        self.shared.changed.notify_waiters();
    }

    /// Compacts history: a watch from any version seen so far gets 410
    /// Gone (the compaction is a write of its own, so a list made after it
    /// has a version that is not expired).
    pub fn expire_versions(&self) {
        let mut w = self.world();
        w.expired_through = w.version;
        w.version += 1;
    }

    /// While `true`, watches are answered 500 (an API server restarting; not
    /// 503, which kube's client retries by itself, up to 15 times).
    pub fn refuse_watches(&self, refuse: bool) {
        self.world().refuse_watches = refuse;
    }

    /// From now on, a deleted pod lingers as Terminating for `grace`.
    pub fn set_grace(&self, grace: std::time::Duration) {
        self.world().grace = grace;
    }

    /// How many requests so far match `method` and contain `part` in their path and query.
    pub fn count_requests(&self, method: &str, part: &str) -> usize {
        self.world()
            .journal
            .iter()
            .filter(|j| match j {
                Journal::Request(line) => line
                    .split_once(' ')
                    .is_some_and(|(m, rest)| m == method && rest.contains(part)),
                _ => false,
            })
            .count()
    }

    /// Changes a pod's status in place (a crash, a restart), as the kubelet would.
    pub fn update_pod(&self, namespace: &str, name: &str, change: impl FnOnce(&mut Pod)) {
        let mut w = self.world();
        let key = (namespace.to_owned(), name.to_owned());
        let Some(mut pod) = w.pods.get(&key).cloned() else {
            panic!("no pod {namespace}/{name}");
        };
        change(&mut pod);
        w.version += 1;
        pod.metadata.resource_version = Some(w.version.to_string());
        let v = w.version;
        w.pods.insert(key, pod.clone());
        w.history
            .push((v, namespace.to_owned(), WatchEvent::Modified(pod)));
        drop(w);
        self.shared.changed.notify_waiters();
    }

    /// Replaces a pod's current log.
    pub fn set_log(&self, pod: &str, lines: &[&str]) {
        self.world().logs.entry(pod.to_owned()).or_default().0 =
            lines.iter().map(|l| l.to_string()).collect();
    }
}

fn status_body(code: u16, reason: &str, message: String) -> Response<Body> {
    let status = Status {
        code: Some(i32::from(code)),
        message: Some(message),
        reason: Some(reason.to_owned()),
        status: Some("Failure".into()),
        metadata: ListMeta::default(),
        details: None,
    };
    let mut v = serde_json::to_value(&status).expect("status json");
    v["kind"] = json!("Status");
    v["apiVersion"] = json!("v1");
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
        &v,
    )
}

fn json_response(code: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    let text = serde_json::to_vec(v).expect("json");
    let mut r = Response::new(Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn text_response(text: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// `a=b,c=d` (also `==`); anything else is refused, as an unsupported
/// selector should be rather than matching everything.
fn parse_selector(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once("==")
                .or_else(|| p.split_once('='))
                .ok_or_else(|| format!("the fake supports only equality selectors, not {p:?}"))?;
            if k.ends_with('!') {
                return Err(format!(
                    "the fake supports only equality selectors, not {p:?}"
                ));
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn matches(labels: Option<&BTreeMap<String, String>>, selector: &[(String, String)]) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let line = format!(
        "{} {}",
        req.method(),
        req.uri().path_and_query().map_or("", |p| p.as_str())
    );
    shared
        .world
        .lock()
        .expect("world")
        .journal
        .push(Journal::Request(line));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]
    if let [
        "apis",
        "coordination.k8s.io",
        "v1",
        "namespaces",
        ns,
        "leases",
        name @ ..,
    ] = parts.as_slice()
        && name.len() <= 1
    {
        let ns = ns.to_string();
        let name = name.first().map(|n| n.to_string());
        return object_crud(shared, &ns, name, req, "leases.coordination.k8s.io", |w| {
            &mut w.leases
        })
        .await;
    }
    // /api/v1/namespaces/{ns}/{kind}[/{name}[/{sub}[/{rest...}]]]
    if parts.len() < 5 || parts[0] != "api" || parts[1] != "v1" || parts[2] != "namespaces" {
        return status_body(404, "NotFound", format!("the fake serves no {path}"));
    }
    let ns = parts[3].to_owned();
    let kind = parts[4];
    let name = parts.get(5).map(|s| s.to_string());
    let sub = parts.get(6).copied();
    match (kind, name, sub) {
        ("pods", None, None) => match *req.method() {
            Method::GET
                if query(&req)
                    .get("watch")
                    .is_some_and(|w| w == "true" || w == "1") =>
            {
                watch_pods(shared, &ns, &req)
            }
            Method::GET => list(shared, &ns, &req, |w| &w.pods),
            Method::POST => create_pod(shared, &ns, req).await,
            _ => status_body(405, "MethodNotAllowed", "method not allowed".into()),
        },
        ("pods", Some(name), None) => match *req.method() {
            Method::GET => get(shared, &ns, &name, "pods", |w| &w.pods),
            Method::DELETE => match delete_pod(shared, &ns, &name) {
                Some(pod) => {
                    shared.changed.notify_waiters();
                    json_response(StatusCode::OK, &pod)
                }
                None => status_body(404, "NotFound", format!("pods \"{name}\" not found")),
            },
            _ => status_body(405, "MethodNotAllowed", "method not allowed".into()),
        },
        ("pods", Some(name), Some("status")) => match *req.method() {
            Method::GET => get(shared, &ns, &name, "pods", |w| &w.pods),
            Method::PATCH => patch_pod_status(shared, &ns, &name, req).await,
            _ => status_body(405, "MethodNotAllowed", "method not allowed".into()),
        },
        ("pods", Some(name), Some("log")) => pod_log(shared, &name, &req),
        ("pods", Some(name), Some("attach")) => attach(shared, &name, req),
        ("pods", Some(name_port), Some("proxy")) => {
            let rest = parts[7..].join("/");
            proxy(shared, &name_port, &rest, req).await
        }
        ("services", name, None) => {
            object_crud(shared, &ns, name, req, "services", |w| &mut w.services).await
        }
        ("secrets", name, None) => {
            object_crud(shared, &ns, name, req, "secrets", |w| &mut w.secrets).await
        }
        _ => status_body(404, "NotFound", format!("the fake serves no {path}")),
    }
}

fn list<T>(
    shared: &Shared,
    ns: &str,
    req: &Request<Incoming>,
    of: impl Fn(&World) -> &BTreeMap<(String, String), T>,
) -> Response<Body>
where
    T: k8s_openapi::ListableResource
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>
        + Clone
        + serde::Serialize,
{
    let selector = match parse_selector(query(req).get("labelSelector").map_or("", String::as_str))
    {
        Ok(s) => s,
        Err(e) => return status_body(400, "BadRequest", e),
    };
    let w = shared.world.lock().expect("world");
    let items: Vec<T> = of(&w)
        .iter()
        .filter(|((n, _), o)| n == ns && matches(o.metadata().labels.as_ref(), &selector))
        .map(|(_, o)| o.clone())
        .collect();
    let list = k8s_openapi::List {
        items,
        metadata: ListMeta {
            resource_version: Some(w.version.to_string()),
            ..Default::default()
        },
    };
    json_response(StatusCode::OK, &list)
}

fn get<T: serde::Serialize>(
    shared: &Shared,
    ns: &str,
    name: &str,
    kind: &str,
    of: impl Fn(&World) -> &BTreeMap<(String, String), T>,
) -> Response<Body> {
    let w = shared.world.lock().expect("world");
    match of(&w).get(&(ns.to_owned(), name.to_owned())) {
        Some(o) => json_response(StatusCode::OK, o),
        None => status_body(404, "NotFound", format!("{kind} \"{name}\" not found")),
    }
}

async fn body_json(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| status_body(400, "BadRequest", e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| status_body(400, "BadRequest", e.to_string()))
}

/// RFC 7386 merge; lists of objects with a `type` key (conditions) merge by
/// it, as the strategic merge patch does for `status.conditions`.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (Value::Array(t), Value::Array(p))
            if p.iter().all(|i| i.get("type").is_some()) && !p.is_empty() =>
        {
            for item in p {
                match t.iter_mut().find(|x| x.get("type") == item.get("type")) {
                    Some(existing) => merge(existing, item),
                    None => t.push(item.clone()),
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The status the fake's kubelet gives a new pod.
fn kubelet_status(
    pod: &Pod,
    behaviour: &Behaviour,
    secrets: &BTreeMap<(String, String), Secret>,
    ns: &str,
) -> Value {
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .cloned()
        .unwrap_or_default();
    let image = container.image.clone().unwrap_or_default();
    let started = now();
    let base = |state: Value, restarts: i32, last: Value, phase: &str| {
        json!({
            "phase": phase,
            "podIP": "10.244.0.17",
            "hostIP": "172.18.0.2",
            "startTime": started,
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{
                "name": container.name, "image": image, "imageID": "",
                "ready": false, "restartCount": restarts, "started": phase == "Running",
                "state": state, "lastState": last,
            }],
        })
    };
    // A secretKeyRef to a Secret or key that does not exist stops the
    // container from being made, as the kubelet's does.
    for env in container.env.iter().flatten() {
        if let Some(r) = env
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        {
            let secret = secrets.get(&(ns.to_owned(), r.name.clone()));
            let message = match secret {
                None => Some(format!("secret \"{}\" not found", r.name)),
                Some(s)
                    if !s
                        .string_data
                        .as_ref()
                        .is_some_and(|d| d.contains_key(&r.key))
                        && !s.data.as_ref().is_some_and(|d| d.contains_key(&r.key)) =>
                {
                    Some(format!(
                        "couldn't find key {} in Secret {ns}/{}",
                        r.key, r.name
                    ))
                }
                Some(_) => None,
            };
            if let Some(message) = message {
                return base(
                    json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}}),
                    0,
                    json!({}),
                    "Pending",
                );
            }
        }
    }
    match behaviour {
        Behaviour::Serve | Behaviour::Refuse => base(
            json!({"running": {"startedAt": started}}),
            0,
            json!({}),
            "Running",
        ),
        Behaviour::CrashLoop {
            restarts,
            exit_code,
            ..
        } => base(
            json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off 40s restarting failed container={} pod={}", container.name, pod.metadata.name.clone().unwrap_or_default())}}),
            *restarts,
            json!({"terminated": {"exitCode": exit_code, "reason": "Error", "startedAt": started, "finishedAt": started}}),
            "Running",
        ),
        Behaviour::Exit { exit_code, .. } => base(
            json!({"terminated": {"exitCode": exit_code, "reason": "Error", "startedAt": started, "finishedAt": started}}),
            0,
            json!({}),
            "Failed",
        ),
        Behaviour::ImagePull { message } => base(
            json!({"waiting": {"reason": "ErrImagePull", "message": message}}),
            0,
            json!({}),
            "Pending",
        ),
        Behaviour::Unschedulable { message } => json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}],
        }),
    }
}

async fn create_pod(shared: &Arc<Shared>, ns: &str, req: Request<Incoming>) -> Response<Body> {
    let v = match body_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut pod: Pod = match serde_json::from_value(v) {
        Ok(p) => p,
        Err(e) => return status_body(400, "BadRequest", format!("not a Pod: {e}")),
    };
    let Some(name) = pod.metadata.name.clone() else {
        return status_body(422, "Invalid", "metadata.name is required".into());
    };
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let port = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.ports.as_ref())
        .and_then(|p| p.first())
        .map(|p| p.container_port);
    let mut w = shared.world.lock().expect("world");
    let key = (ns.to_owned(), name.clone());
    if w.pods.contains_key(&key) {
        return status_body(
            409,
            "AlreadyExists",
            format!("pods \"{name}\" already exists"),
        );
    }
    let behaviour = w
        .behaviours
        .get(&image)
        .cloned()
        .unwrap_or(Behaviour::Serve);
    w.version += 1;
    pod.metadata.namespace = Some(ns.to_owned());
    pod.metadata.uid = Some(format!("uid-{}", w.version));
    pod.metadata.resource_version = Some(w.version.to_string());
    pod.metadata.creation_timestamp = Some(now());
    let status = kubelet_status(&pod, &behaviour, &w.secrets, ns);
    pod.status = Some(serde_json::from_value(status).expect("pod status"));
    match &behaviour {
        Behaviour::CrashLoop { last_words, .. } => {
            w.logs.insert(
                name.clone(),
                (Vec::new(), vec!["starting".into(), last_words.clone()]),
            );
        }
        Behaviour::Exit { last_words, .. } => {
            w.logs.insert(
                name.clone(),
                (vec!["starting".into(), last_words.clone()], Vec::new()),
            );
        }
        Behaviour::Serve | Behaviour::Refuse => {
            w.logs
                .insert(name.clone(), (vec![format!("{name}: serving")], Vec::new()));
        }
        _ => {}
    }
    let serving = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && matches!(behaviour, Behaviour::Serve | Behaviour::Refuse);
    if let (true, Some(_)) = (serving, port) {
        // A real MCP server behind the pod proxy.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind backend");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("backend addr");
        let task = shared.handle.spawn(serve_mcp(std_listener, name.clone()));
        w.backends.insert(name.clone(), (addr, task.abort_handle()));
        if matches!(behaviour, Behaviour::Refuse) {
            w.refusing.insert(name.clone());
        }
    }
    let stdin_open = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.stdin)
        == Some(true);
    if serving && port.is_none() && stdin_open && matches!(behaviour, Behaviour::Serve) {
        let stdio = spawn_stdio(&shared.handle, name.clone());
        w.stdio.insert(name.clone(), stdio);
    }
    let v = w.version;
    w.pods.insert(key, pod.clone());
    w.history
        .push((v, ns.to_owned(), WatchEvent::Added(pod.clone())));
    drop(w);
    shared.changed.notify_waiters();
    json_response(StatusCode::CREATED, &pod)
}

/// A DELETE: at once without a grace period; else the pod is marked
/// Terminating (its container stops serving) and goes when the grace ends.
fn delete_pod(shared: &Arc<Shared>, ns: &str, name: &str) -> Option<Pod> {
    let mut w = shared.world.lock().expect("world");
    let grace = w.grace;
    if grace.is_zero() {
        drop(w);
        return remove_pod(shared, ns, name);
    }
    let key = (ns.to_owned(), name.to_owned());
    let mut pod = w.pods.get(&key)?.clone();
    if pod.metadata.deletion_timestamp.is_some() {
        return Some(pod);
    }
    pod.metadata.deletion_timestamp = Some(now());
    pod.metadata.deletion_grace_period_seconds = Some(grace.as_secs().max(1) as i64);
    if let Some((_, task)) = w.backends.remove(name) {
        task.abort();
    }
    if let Some(stdio) = w.stdio.remove(name) {
        stdio.task.abort();
    }
    w.version += 1;
    pod.metadata.resource_version = Some(w.version.to_string());
    let v = w.version;
    w.pods.insert(key, pod.clone());
    w.history
        .push((v, ns.to_owned(), WatchEvent::Modified(pod.clone())));
    drop(w);
    let later = shared.clone();
    let (ns, name) = (ns.to_owned(), name.to_owned());
    shared.handle.spawn(async move {
        tokio::time::sleep(grace).await;
        remove_pod(&later, &ns, &name);
        later.changed.notify_waiters();
    });
    Some(pod)
}

fn remove_pod(shared: &Shared, ns: &str, name: &str) -> Option<Pod> {
    let mut w = shared.world.lock().expect("world");
    let mut pod = w.pods.remove(&(ns.to_owned(), name.to_owned()))?;
    if let Some((_, task)) = w.backends.remove(name) {
        task.abort();
    }
    if let Some(stdio) = w.stdio.remove(name) {
        stdio.task.abort();
    }
    w.version += 1;
    pod.metadata.resource_version = Some(w.version.to_string());
    let v = w.version;
    w.history
        .push((v, ns.to_owned(), WatchEvent::Deleted(pod.clone())));
    Some(pod)
}

async fn patch_pod_status(
    shared: &Arc<Shared>,
    ns: &str,
    name: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type != "application/strategic-merge-patch+json"
        && content_type != "application/merge-patch+json"
    {
        return status_body(
            415,
            "UnsupportedMediaType",
            format!("the fake does not take {content_type:?} patches of pods/status"),
        );
    }
    let patch = match body_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut w = shared.world.lock().expect("world");
    let key = (ns.to_owned(), name.to_owned());
    let Some(pod) = w.pods.get(&key) else {
        return status_body(404, "NotFound", format!("pods \"{name}\" not found"));
    };
    let mut v = serde_json::to_value(pod).expect("pod json");
    // Only the status subresource changes through this path.
    if let Some(status) = patch.get("status") {
        merge(&mut v["status"], status);
    }
    for c in patch["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        w.journal.push(Journal::StatusPatch {
            pod: name.to_owned(),
            condition: c["type"].as_str().unwrap_or("").to_owned(),
            status: c["status"].as_str().unwrap_or("").to_owned(),
        });
    }
    let mut pod: Pod = match serde_json::from_value(v) {
        Ok(p) => p,
        Err(e) => return status_body(422, "Invalid", e.to_string()),
    };
    w.version += 1;
    pod.metadata.resource_version = Some(w.version.to_string());
    let ver = w.version;
    w.pods.insert(key, pod.clone());
    w.history
        .push((ver, ns.to_owned(), WatchEvent::Modified(pod.clone())));
    drop(w);
    shared.changed.notify_waiters();
    json_response(StatusCode::OK, &pod)
}

fn pod_log(shared: &Shared, name: &str, req: &Request<Incoming>) -> Response<Body> {
    let q = query(req);
    let w = shared.world.lock().expect("world");
    if !w.pods.keys().any(|(_, n)| n == name) {
        return status_body(404, "NotFound", format!("pods \"{name}\" not found"));
    }
    let (current, previous) = w.logs.get(name).cloned().unwrap_or_default();
    let lines = if q.get("previous").is_some_and(|p| p == "true") {
        if previous.is_empty() {
            return status_body(
                400,
                "BadRequest",
                format!("previous terminated container \"server\" in pod \"{name}\" not found"),
            );
        }
        previous
    } else {
        current
    };
    let tail = q
        .get("tailLines")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    let skip = lines.len().saturating_sub(tail);
    let text: String = lines[skip..].iter().map(|l| format!("{l}\n")).collect();
    text_response(text)
}

fn watch_pods(shared: &Arc<Shared>, ns: &str, req: &Request<Incoming>) -> Response<Body> {
    let q = query(req);
    let selector = match parse_selector(q.get("labelSelector").map_or("", String::as_str)) {
        Ok(s) => s,
        Err(e) => return status_body(400, "BadRequest", e),
    };
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(std::time::Duration::from_secs);
    let (generation, expired, refused) = {
        let w = shared.world.lock().expect("world");
        (
            w.watch_generation,
            from > 0 && from <= w.expired_through,
            w.refuse_watches,
        )
    };
    if refused {
        return status_body(500, "InternalError", "the API server is restarting".into());
    }
    let line = |v: Value| {
        let mut text = serde_json::to_vec(&v).expect("event json");
        text.push(b'\n');
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from(text)))
    };
    if expired {
        // As the real API server answers a compacted version: 200, one
        // ERROR event with a 410 Status, and the end of the watch.
        let gone = json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410,
        }});
        let body = StreamBody::new(futures_util::stream::iter([line(gone)]));
        let mut r = Response::new(BodyExt::boxed(body));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        return r;
    }
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let shared = shared.clone();
    let ns = ns.to_owned();
    // (last version sent, whether the watch has ended)
    let stream = futures_util::stream::unfold((from, false), move |(seen, ended)| {
        let shared = shared.clone();
        let ns = ns.clone();
        let selector = selector.clone();
        async move {
            if ended {
                return None;
            }
            loop {
                let notified = shared.changed.notified();
                let (next, now_version, over) = {
                    let w = shared.world.lock().expect("world");
                    let next: Vec<(u64, WatchEvent<Pod>)> = w
                        .history
                        .iter()
                        .filter(|(v, n, _)| *v > seen && *n == ns)
                        .map(|(v, _, e)| (*v, e.clone()))
                        .collect();
                    let timed_out = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
                    let over = match (w.watch_generation != generation, timed_out) {
                        (_, true) => Some(true),
                        (true, false) => Some(false),
                        (false, false) => None,
                    };
                    (next, w.version, over)
                };
                if let Some(last) = next.last().map(|(v, _)| *v) {
                    let mut text = Vec::new();
                    for (_, ev) in next {
                        let pod = match &ev {
                            WatchEvent::Added(p)
                            | WatchEvent::Modified(p)
                            | WatchEvent::Deleted(p) => p,
                            _ => continue,
                        };
                        if matches(pod.metadata.labels.as_ref(), &selector) {
                            text.extend(serde_json::to_vec(&ev).expect("event json"));
                            text.push(b'\n');
                        }
                    }
                    return Some((Ok(Frame::data(Bytes::from(text))), (last, false)));
                }
                if let Some(timed_out) = over {
                    // The API server sends a bookmark as a watch times out,
                    // so the client resumes from a fresh version; a watch
                    // cut short gets none.
                    if bookmarks && timed_out {
                        let mark = json!({"type": "BOOKMARK", "object": {
                            "kind": "Pod", "apiVersion": "v1",
                            "metadata": {"resourceVersion": now_version.to_string()},
                        }});
                        return Some((line(mark), (now_version, true)));
                    }
                    return None;
                }
                match deadline {
                    Some(d) => {
                        tokio::select! {
                            () = notified => {}
                            () = tokio::time::sleep_until(d) => {}
                        }
                    }
                    None => notified.await,
                }
            }
        }
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn proxy(
    shared: &Arc<Shared>,
    name_port: &str,
    rest: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some((name, port)) = name_port.split_once(':') else {
        return status_body(400, "BadRequest", "the fake proxies only pod:port".into());
    };
    let (backend, refusing) = {
        let w = shared.world.lock().expect("world");
        let declared = w.pods.values().any(|p| {
            p.metadata.name.as_deref() == Some(name)
                && p.spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.ports.as_ref())
                    .is_some_and(|ps| ps.iter().any(|p| p.container_port.to_string() == port))
        });
        if !declared {
            return status_body(
                503,
                "ServiceUnavailable",
                format!("no endpoints available for pod \"{name}\" on port {port}"),
            );
        }
        (
            w.backends.get(name).map(|(a, _)| *a),
            w.refusing.contains(name),
        )
    };
    let record = |status: u16| {
        shared
            .world
            .lock()
            .expect("world")
            .journal
            .push(Journal::Proxied {
                pod: name.to_owned(),
                status,
            });
    };
    let Some(addr) = backend else {
        record(502);
        return status_body(
            502,
            "InternalError",
            format!("error trying to reach service: dial tcp: pod {name} is not running"),
        );
    };
    if refusing {
        record(503);
        let mut r = text_response("refusing to serve".into());
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return r;
    }
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let uri: hyper::Uri = match format!("http://{addr}/{rest}{query}").parse() {
        Ok(u) => u,
        Err(e) => return status_body(400, "BadRequest", e.to_string()),
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    parts.headers.remove(hyper::header::HOST);
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return status_body(400, "BadRequest", e.to_string()),
    };
    let out = Request::from_parts(parts, Full::new(body));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    match client.request(out).await {
        Ok(resp) => {
            record(resp.status().as_u16());
            resp.map(|b| b.map_err(Into::into).boxed())
        }
        Err(e) => {
            record(502);
            status_body(
                502,
                "InternalError",
                format!("error trying to reach service: {e}"),
            )
        }
    }
}

/// Create, get, list, merge-patch, replace and delete of a plain object kind.
async fn object_crud<T>(
    shared: &Arc<Shared>,
    ns: &str,
    name: Option<String>,
    req: Request<Incoming>,
    kind: &str,
    of: impl Fn(&mut World) -> &mut BTreeMap<(String, String), T>,
) -> Response<Body>
where
    T: k8s_openapi::ListableResource
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    match (req.method().clone(), name) {
        (Method::GET, None) => {
            let selector =
                match parse_selector(query(&req).get("labelSelector").map_or("", String::as_str)) {
                    Ok(s) => s,
                    Err(e) => return status_body(400, "BadRequest", e),
                };
            let mut w = shared.world.lock().expect("world");
            let version = w.version;
            let items: Vec<T> = of(&mut w)
                .iter()
                .filter(|((n, _), o)| n == ns && matches(o.metadata().labels.as_ref(), &selector))
                .map(|(_, o)| o.clone())
                .collect();
            json_response(
                StatusCode::OK,
                &k8s_openapi::List {
                    items,
                    metadata: ListMeta {
                        resource_version: Some(version.to_string()),
                        ..Default::default()
                    },
                },
            )
        }
        (Method::POST, None) => {
            let v = match body_json(req).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            let mut obj: T = match serde_json::from_value(v) {
                Ok(o) => o,
                Err(e) => return status_body(400, "BadRequest", e.to_string()),
            };
            let Some(name) = obj.metadata().name.clone() else {
                return status_body(422, "Invalid", "metadata.name is required".into());
            };
            let mut w = shared.world.lock().expect("world");
            let version = w.version + 1;
            let map = of(&mut w);
            let key = (ns.to_owned(), name.clone());
            if map.contains_key(&key) {
                return status_body(
                    409,
                    "AlreadyExists",
                    format!("{kind} \"{name}\" already exists"),
                );
            }
            obj.metadata_mut().namespace = Some(ns.to_owned());
            obj.metadata_mut().resource_version = Some(version.to_string());
            obj.metadata_mut().creation_timestamp = Some(now());
            map.insert(key, obj.clone());
            w.version = version;
            json_response(StatusCode::CREATED, &obj)
        }
        (Method::GET, Some(name)) => {
            let mut w = shared.world.lock().expect("world");
            match of(&mut w).get(&(ns.to_owned(), name.clone())) {
                Some(o) => json_response(StatusCode::OK, o),
                None => status_body(404, "NotFound", format!("{kind} \"{name}\" not found")),
            }
        }
        (Method::PATCH, Some(name)) => {
            let patch = match body_json(req).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            let mut w = shared.world.lock().expect("world");
            w.version += 1;
            let version = w.version;
            let map = of(&mut w);
            let Some(obj) = map.get_mut(&(ns.to_owned(), name.clone())) else {
                return status_body(404, "NotFound", format!("{kind} \"{name}\" not found"));
            };
            let mut v = serde_json::to_value(&*obj).expect("json");
            merge(&mut v, &patch);
            match serde_json::from_value::<T>(v) {
                Ok(mut new) => {
                    new.metadata_mut().resource_version = Some(version.to_string());
                    *obj = new.clone();
                    json_response(StatusCode::OK, &new)
                }
                Err(e) => status_body(422, "Invalid", e.to_string()),
            }
        }
        (Method::PUT, Some(name)) => {
            let v = match body_json(req).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            let mut obj: T = match serde_json::from_value(v) {
                Ok(o) => o,
                Err(e) => return status_body(400, "BadRequest", e.to_string()),
            };
            if obj.metadata().name.as_deref() != Some(name.as_str()) {
                return status_body(
                    400,
                    "BadRequest",
                    format!(
                        "the name of the object ({:?}) does not match the name on the URL ({name})",
                        obj.metadata().name
                    ),
                );
            }
            let mut w = shared.world.lock().expect("world");
            let version = w.version + 1;
            let map = of(&mut w);
            let Some(old) = map.get(&(ns.to_owned(), name.clone())) else {
                return status_body(404, "NotFound", format!("{kind} \"{name}\" not found"));
            };
            // As the API server: an empty resourceVersion is an
            // unconditional update; any other must be the stored one.
            let sent = obj.metadata().resource_version.as_deref().unwrap_or("");
            if !sent.is_empty() && Some(sent) != old.metadata().resource_version.as_deref() {
                return status_body(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {kind} \"{name}\": the object has been \
                         modified; please apply your changes to the latest version and try again"
                    ),
                );
            }
            let (uid, created) = (
                old.metadata().uid.clone(),
                old.metadata().creation_timestamp.clone(),
            );
            let meta = obj.metadata_mut();
            meta.namespace = Some(ns.to_owned());
            meta.resource_version = Some(version.to_string());
            meta.uid = uid;
            meta.creation_timestamp = created;
            map.insert((ns.to_owned(), name), obj.clone());
            w.version = version;
            json_response(StatusCode::OK, &obj)
        }
        (Method::DELETE, Some(name)) => {
            let mut w = shared.world.lock().expect("world");
            match of(&mut w).remove(&(ns.to_owned(), name.clone())) {
                Some(o) => json_response(StatusCode::OK, &o),
                None => status_body(404, "NotFound", format!("{kind} \"{name}\" not found")),
            }
        }
        _ => status_body(405, "MethodNotAllowed", "method not allowed".into()),
    }
}

/// The MCP server behind a serving pod: rmcp's streamable HTTP service on
/// `/mcp`, reporting the pod's name as its own.
async fn serve_mcp(listener: std::net::TcpListener, name: String) {
    use rmcp::transport::{
        StreamableHttpServerConfig, StreamableHttpService,
        streamable_http_server::session::local::LocalSessionManager,
    };
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let server = PodServer {
        name: Arc::from(name.as_str()),
    };
    let mcp = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().disable_allowed_hosts(),
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let mcp = mcp.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let mcp = mcp.clone();
                async move { Ok::<_, Infallible>(mcp.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[derive(Clone)]
struct PodServer {
    name: Arc<str>,
}

impl rmcp::ServerHandler for PodServer {
    fn get_info(&self) -> rmcp::model::ServerConfig {
        rmcp::model::ServerConfig::new(rmcp::model::ServerCapabilities::builder().build())
            .with_server_info(rmcp::model::Implementation::new(
                self.name.to_string(),
                "1.0.0",
            ))
    }
}

/// A pod's stdio server: rmcp over in-memory pipes, its stdout copied to
/// whoever is attached. Spawned, never awaited, so it can start from inside
/// the world's lock.
fn spawn_stdio(handle: &tokio::runtime::Handle, name: String) -> StdioPod {
    use rmcp::ServiceExt;
    let (server_stdin, stdin) = tokio::io::duplex(64 * 1024);
    let (server_stdout, stdout) = tokio::io::duplex(64 * 1024);
    let (tx, _) = tokio::sync::broadcast::channel(256);
    let out = tx.clone();
    let server = PodServer {
        name: Arc::from(name.as_str()),
    };
    let (stdin_write, stdin_write_keep) = {
        let (r, w) = tokio::io::split(stdin);
        (w, r)
    };
    let task = handle.spawn(async move {
        let _keep = stdin_write_keep;
        let mut stdout = stdout;
        let pump = async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    // Nobody attached: the output is gone, as a container's
                    // unread stdout is to a later attach.
                    Ok(n) => {
                        let _ = out.send(Bytes::copy_from_slice(&buf[..n]));
                    }
                }
            }
        };
        let serve = async move {
            // One session for the pod's life; rmcp answers a repeated
            // `initialize` within it, so each probe can handshake.
            let (r, w) = tokio::io::split(server_stdin);
            let (_, out_w) = tokio::io::split(server_stdout);
            if let Ok(running) = server.serve((r, out_w)).await {
                let _ = running.waiting().await;
            }
            drop(w);
        };
        tokio::join!(pump, serve);
    });
    StdioPod {
        stdin: Arc::new(tokio::sync::Mutex::new(stdin_write)),
        stdout: tx,
        task: task.abort_handle(),
    }
}

/// `pods/NAME/attach`: a WebSocket upgrade into the Kubernetes stream
/// protocol. Only `v4.channel.k8s.io` is agreed; stdin arrives on channel 0
/// and stdout leaves on channel 1.
fn attach(shared: &Arc<Shared>, name: &str, req: Request<Incoming>) -> Response<Body> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let q = query(&req);
    if q.get("stdin").map(String::as_str) != Some("true")
        || q.get("stdout").map(String::as_str) != Some("true")
    {
        return status_body(
            400,
            "BadRequest",
            "the fake attaches stdin and stdout only".into(),
        );
    }
    let stdio = shared.world.lock().expect("world").stdio.get(name).cloned();
    let Some(stdio) = stdio else {
        return status_body(
            400,
            "BadRequest",
            format!("container server in pod {name} is not a running stdio server"),
        );
    };
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let Some(key) = header("sec-websocket-key") else {
        return status_body(400, "BadRequest", "attach needs a WebSocket upgrade".into());
    };
    let offered = header("sec-websocket-protocol").unwrap_or_default();
    let protocol = "v4.channel.k8s.io";
    if !offered.split(',').any(|p| p.trim() == protocol) {
        return status_body(
            400,
            "BadRequest",
            format!("the fake speaks {protocol}, offered {offered:?}"),
        );
    }
    shared
        .world
        .lock()
        .expect("world")
        .journal
        .push(Journal::Attached {
            pod: name.to_owned(),
            protocol: protocol.to_owned(),
        });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut out = stdio.stdout.subscribe();
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        let (mut sink, mut stream) = ws.split();
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(Message::Binary(data))) if data.first() == Some(&0) => {
                        use tokio::io::AsyncWriteExt;
                        let mut stdin = stdio.stdin.lock().await;
                        if stdin.write_all(&data[1..]).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
                chunk = out.recv() => match chunk {
                    Ok(bytes) => {
                        let mut frame = Vec::with_capacity(bytes.len() + 1);
                        frame.push(1u8);
                        frame.extend_from_slice(&bytes);
                        if sink.send(Message::binary(frame)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()).map_err(|e| match e {}).boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&accept) {
        h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    h.insert(
        hyper::header::SEC_WEBSOCKET_PROTOCOL,
        hyper::header::HeaderValue::from_static(protocol),
    );
    r
}
