//! State you can lose, on Kubernetes: the built `mcpctl` against the fake
//! API server of `support/fake_kube.rs`, with state files that know nothing
//! of the running fleet. A `watch` restarted on a fresh state adopts the
//! running pods (same names, same uids, none made or deleted) while it holds
//! the scope's Lease, and releases it on SIGTERM; an `apply` with yet
//! another state file is refused meanwhile, naming the watch; `plan` on a
//! fresh state says "adopt", not remove-and-start, and writes nothing to the
//! cluster; and a state file is refused by a command aimed at another fleet
//! (another runtime, another namespace).
//!
//! The fleet has a server whose env comes from a Kubernetes Secret: on this
//! runtime such secrets are `secretKeyRef`s the kubelet reads, so they take
//! no digest and a fresh state cannot roll them; the test still shows the
//! pod adopted, not replaced. Digests of secrets mcpctl resolves itself
//! (headers of external servers) are not exercised here: an external server
//! runs no pod to adopt.

#[path = "support/fake_kube.rs"]
mod fake_kube;

use fake_kube::{FakeKube, Journal};
use k8s_openapi::api::coordination::v1::Lease;
use mcpctl::model::Holder;
use mcpctl::runtime::kubernetes::ANNOTATION_HOLDER;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NS: &str = "mcp";
const LEASE: &str = "mcpctl-lease-default";

/// Two servers: `alpha` (streamable HTTP, two replicas, a token from the
/// cluster's Secret `gh`) and `sigma` (stdio, one replica).
const FLEET: &str = "apiVersion: mcpctl.io/v1
kind: McpServer
metadata: {name: alpha}
spec:
  replicas: 2
  image: fixture:v1
  command: [\"--transport\", \"http\"]
  transport: streamable-http
  port: 8080
  readiness: {timeout: 20s, minReady: 1s}
  env:
    TOKEN:
      secretRef: {name: gh, key: token}
---
apiVersion: mcpctl.io/v1
kind: McpServer
metadata: {name: sigma}
spec:
  replicas: 1
  image: fixture:v1
  command: [\"--transport\", \"stdio\"]
  readiness: {timeout: 20s, minReady: 1s}
";

struct Cluster {
    fake: FakeKube,
    dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Cluster {
    /// The fake, its kubeconfig, the Secret `gh`, and [`FLEET`] in `fleet/`.
    fn new() -> Cluster {
        let fake = FakeKube::start();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("fleet")).expect("mkdir");
        std::fs::write(dir.path().join("fleet/fleet.yaml"), FLEET).expect("write spec");
        fake.add_secret(NS, "gh", &[("token", "from-the-cluster")]);
        let kubeconfig = fake.kubeconfig(dir.path(), NS);
        Cluster {
            fake,
            dir,
            kubeconfig,
        }
    }

    /// `mcpctl ARGS` on the fake, with the state file `state` of the workspace.
    fn command(&self, state: &str, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mcpctl"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env("MCPCTL_RUNTIME", "kubernetes")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("MCPCTL_STATE", self.dir.path().join(state))
            .env_remove("MCPCTL_SCOPE")
            .env_remove("MCPCTL_NAMESPACE")
            .env_remove("MCPCTL_SECRETS_DIR")
            .env_remove("MCPCTL_DIGEST_KEY")
            .env_remove("MCPCTL_LEASE_TTL")
            .env_remove("KUBERNETES_SERVICE_HOST");
        c
    }

    fn run(&self, state: &str, args: &[&str]) -> Run {
        self.run_with(state, args, &[])
    }

    /// [`run`](Self::run) with `env` on top.
    fn run_with(&self, state: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let o = self
            .command(state, args)
            .envs(env.iter().copied())
            .output()
            .expect("run mcpctl");
        Run {
            code: o.status.code().unwrap_or(-9),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Applies the fleet with `state` and waits for it to converge.
    fn apply(&self, state: &str) {
        let r = self.run(state, &["apply", "fleet", "--timeout", "60s"]);
        assert_eq!(r.code, 0, "apply failed: {r}");
    }

    fn instances(&self, state: &str) -> Vec<Value> {
        let r = self.run(state, &["get", "instances", "-o", "json"]);
        assert_eq!(r.code, 0, "{r}");
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r}"))
    }

    /// Every pod in the fake, Terminating or not: name to uid.
    fn pods(&self) -> BTreeMap<String, String> {
        self.fake
            .pods()
            .into_iter()
            .map(|p| {
                let name = p.metadata.name.expect("pod name");
                let uid = p.metadata.uid.expect("pod uid");
                (name, uid)
            })
            .collect()
    }

    /// The `io.mcpctl.instance` label of every pod.
    fn pod_instances(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .fake
            .pods()
            .into_iter()
            .filter_map(|p| p.metadata.labels?.get("io.mcpctl.instance").cloned())
            .collect();
        ids.sort();
        ids
    }

    /// Requests that make or delete a pod, so far.
    fn pod_creates_and_deletes(&self) -> (usize, usize) {
        let lines = self.requests();
        let path = |l: &str| l.split_once('?').map_or(l, |(p, _)| p).to_owned();
        let creates = lines
            .iter()
            .filter(|l| l.starts_with("POST ") && path(l).ends_with("/pods"))
            .count();
        let deletes = lines
            .iter()
            .filter(|l| l.starts_with("DELETE ") && path(l).contains("/pods/"))
            .count();
        (creates, deletes)
    }

    /// Every request line the fake has answered, in order.
    fn requests(&self) -> Vec<String> {
        self.fake
            .journal()
            .into_iter()
            .filter_map(|j| match j {
                Journal::Request(line) => Some(line),
                _ => None,
            })
            .collect()
    }

    /// The scope's Lease, if any.
    fn lease(&self) -> Option<Lease> {
        self.fake
            .leases()
            .into_iter()
            .find(|l| l.metadata.name.as_deref() == Some(LEASE))
    }

    /// The holder the scope's Lease names, if any.
    fn holder(&self) -> Option<Holder> {
        let lease = self.lease()?;
        lease.spec.as_ref()?.holder_identity.as_ref()?;
        let note = lease.metadata.annotations?.get(ANNOTATION_HOLDER)?.clone();
        Some(serde_json::from_str(&note).expect("the holder annotation is a Holder"))
    }

    /// `mcpctl watch fleet` with `state`, serving on a free loopback port.
    fn watch(&self, state: &str) -> Watching {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = self.dir.path().join(format!("watch-{port}.log"));
        let child = self
            .command(
                state,
                &["watch", "fleet", "--listen", &format!("127.0.0.1:{port}")],
            )
            .env("MCPCTL_LOG", "mcpctl=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start mcpctl watch");
        Watching {
            child: Some(child),
            log,
        }
    }
}

/// A running `mcpctl watch`, killed when dropped.
struct Watching {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Watching {
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics, with the log, if the process has exited.
    fn assert_alive(&mut self) {
        let child = self.child.as_mut().expect("running");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("watch exited ({status}):\n{}", self.log());
        }
    }

    /// SIGTERM, then its exit status, within a deadline.
    fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        eventually("watch to stop on SIGTERM", Duration::from_secs(60), || {
            child.try_wait().expect("try_wait")
        })
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `f` until it answers, or fails the test at the deadline.
fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `watch` on `state` reports the fleet's three instances
/// RUNNING: the ids of the pods that were running, adopted. Fails at once
/// if a pod is made or deleted meanwhile.
fn wait_adopted(c: &Cluster, w: &mut Watching, state: &str) {
    let want = c.pod_instances();
    assert_eq!(want.len(), 3, "{want:?}");
    let pods = c.pods();
    eventually(
        "every pod adopted and RUNNING in the fresh state",
        Duration::from_secs(60),
        || {
            w.assert_alive();
            assert_eq!(c.pods(), pods, "a pod was made or deleted:\n{}", w.log());
            let r = c.run(state, &["get", "instances", "-o", "json"]);
            let instances: Vec<Value> = serde_json::from_str(&r.stdout).ok()?;
            let mut ids: Vec<String> = instances
                .iter()
                .filter(|i| i["status"] == "RUNNING")
                .filter_map(|i| i["id"].as_str().map(str::to_owned))
                .collect();
            ids.sort();
            (ids == want && instances.len() == want.len()).then_some(())
        },
    );
}

#[test]
fn a_watch_restarted_on_a_fresh_state_adopts_the_pods_and_holds_then_releases_the_lease() {
    let c = Cluster::new();
    c.apply("first.redb");
    let pods = c.pods();
    assert_eq!(pods.len(), 3, "{pods:?}");
    let made = c.pod_creates_and_deletes();
    assert_eq!(made, (3, 0));
    assert_eq!(c.holder(), None, "apply released the lease on exit");

    // The watch's state file is lost while it is stopped: it starts on a
    // path that does not exist.
    let mut w = c.watch("lost.redb");
    wait_adopted(&c, &mut w, "lost.redb");
    assert_eq!(c.pods(), pods, "the same pods, by name and uid");
    assert_eq!(
        c.pod_creates_and_deletes(),
        made,
        "no pod made or deleted: {:#?}",
        c.requests()
    );
    for i in c.instances("lost.redb") {
        assert_eq!(i["restarts"], 0, "{i}");
    }

    let holder = c.holder().expect("watch holds the lease");
    assert!(holder.command.contains("mcpctl watch"), "{holder:?}");
    assert_eq!(holder.pid, w.pid(), "{holder:?}");

    let status = w.stop();
    assert!(status.success(), "watch exit on SIGTERM: {status}");
    let lease = c.lease().expect("the Lease stays, released");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity, None, "released: {spec:?}");
    assert!(
        lease
            .metadata
            .annotations
            .is_none_or(|a| !a.contains_key(ANNOTATION_HOLDER)),
        "the holder annotation goes with the holder"
    );
    assert_eq!(c.pods(), pods, "a stopped watch leaves the pods running");

    // And a one-shot apply from yet another fresh state (a CI job) adopts
    // them too.
    c.apply("ci.redb");
    assert_eq!(c.pods(), pods, "apply kept the same pods");
    assert_eq!(c.pod_creates_and_deletes(), made);
    let running = c
        .instances("ci.redb")
        .iter()
        .filter(|i| i["status"] == "RUNNING")
        .count();
    assert_eq!(running, 3, "statuses rebuilt from what runs");
}

#[test]
fn an_apply_with_another_state_is_refused_while_watch_holds_the_lease() {
    let c = Cluster::new();
    c.apply("first.redb");
    let mut w = c.watch("second.redb");
    wait_adopted(&c, &mut w, "second.redb");
    let held = c.holder().expect("watch holds the lease");
    let pods = c.pods();
    let made = c.pod_creates_and_deletes();

    // A third state file knows nothing of either; the lease is the
    // scope's, not a file's.
    let r = c.run("third.redb", &["apply", "fleet", "--timeout", "30s"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr.contains(
            "another applier is acting on the kubernetes, namespace mcp, scope default fleet"
        ),
        "{r}"
    );
    assert!(r.stderr.contains("mcpctl watch"), "names the holder: {r}");
    assert!(
        r.stderr.contains(&format!("pid {}", w.pid())),
        "names the holder's pid: {r}"
    );
    assert_eq!(c.pods(), pods, "{r}");
    assert_eq!(c.pod_creates_and_deletes(), made, "{r}");
    assert_eq!(c.holder(), Some(held), "the watch keeps the lease");
    w.assert_alive();
}

#[test]
fn plan_on_a_fresh_state_says_adopt_and_writes_nothing_to_the_cluster() {
    let c = Cluster::new();
    let writes = |c: &Cluster| -> Vec<String> {
        // Requests through a pod's proxy are MCP messages to the server
        // (a probe), not writes to the cluster.
        c.requests()
            .into_iter()
            .filter(|l| !l.starts_with("GET ") && !l.contains("/proxy"))
            .collect()
    };
    // On an empty cluster: no Lease, and no digest-key Secret made.
    let r = c.run("empty.redb", &["plan", "fleet", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{r}");
    assert_eq!(writes(&c), Vec::<String>::new(), "{r}");
    assert!(c.fake.leases().is_empty());
    let secrets: Vec<String> = c
        .fake
        .secrets()
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    assert_eq!(secrets, ["gh"], "plan stored no digest key");

    c.apply("first.redb");
    let before = writes(&c).len();
    let lease = c.lease().expect("apply's Lease");
    let want = c.pod_instances();

    let r = c.run("fresh.redb", &["plan", "fleet", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "adopting is a change: {r}");
    let adopts: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("= adopt"))
        .collect();
    assert_eq!(adopts.len(), 3, "{r}");
    for id in &want {
        assert!(
            adopts
                .iter()
                .any(|l| l.contains(id.as_str()) && l.contains("found running, not in the state")),
            "{id} is adopted: {r}"
        );
    }
    for kind in ["start", "remove", "replace"] {
        assert!(
            !r.stdout
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(kind)),
            "no {kind}: {r}"
        );
    }
    let r = c.run("fresh.redb", &["plan", "fleet", "-o", "json"]);
    assert_eq!(r.code, 0, "{r}");
    let plan: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r}"));
    let mut adopted: Vec<String> = plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| {
            assert_eq!(a["action"], "adopt", "{plan:#}");
            a["instance"].as_str().expect("an instance").to_owned()
        })
        .collect();
    adopted.sort();
    assert_eq!(adopted, want, "{plan:#}");

    let wrote = &writes(&c)[before..];
    assert!(wrote.is_empty(), "plan wrote nothing: {wrote:#?}");
    assert_eq!(c.lease(), Some(lease), "the Lease is untouched");
}

#[test]
fn a_state_file_is_refused_by_another_runtime_or_namespace() {
    let c = Cluster::new();
    c.apply("kube.redb");
    let pods = c.pods();
    let requests = c.requests().len();

    // `--refresh=false` on Docker asks no Docker engine anything. Docker
    // passes env secrets by value, so the token must resolve first.
    let r = c.run_with(
        "kube.redb",
        &["--runtime", "docker", "plan", "fleet", "--refresh=false"],
        &[("MCPCTL_SECRET_GH_TOKEN", "placeholder")],
    );
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr
            .contains("caches another fleet (kubernetes, namespace mcp, scope default)"),
        "{r}"
    );
    assert!(r.stderr.contains("run with --runtime kubernetes"), "{r}");
    assert!(!r.stdout.contains("remove"), "nothing planned: {r}");
    assert_eq!(c.requests().len(), requests, "the cluster was not asked");

    for args in [
        &["--namespace", "other", "plan", "fleet"][..],
        &["--namespace", "other", "apply", "fleet", "--timeout", "30s"][..],
    ] {
        let r = c.run("kube.redb", args);
        assert_eq!(r.code, 1, "{args:?}: {r}");
        assert!(
            r.stderr
                .contains("caches another fleet (kubernetes, namespace mcp, scope default)"),
            "{args:?}: {r}"
        );
        assert!(r.stderr.contains("--namespace mcp"), "{args:?}: {r}");
    }
    assert_eq!(c.pods(), pods);
    let others: Vec<String> = c
        .requests()
        .into_iter()
        .filter(|l| l.contains("/namespaces/other/") && !l.starts_with("GET "))
        .collect();
    assert!(others.is_empty(), "nothing written in `other`: {others:#?}");
}
