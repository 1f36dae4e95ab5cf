//! `mcpctl --runtime kubernetes` against the fake API server of
//! `support/fake_kube.rs`: the Docker suite's scenario table (converge,
//! out-of-band delete, crash loop, image-pull failure, scale down
//! oldest-first, rolling replace, prune), the other rows of the status
//! mapping (terminated, unschedulable), the readiness gate, secrets as
//! `secretKeyRef`s, `get`/`describe`/`logs`, the examples planning
//! cleanly, and the gateway (standalone and in `watch`) reaching pods from
//! outside the cluster through its own relay and `pods/attach`. No cluster
//! and no `kubectl`.
//!
//! Every test drives the built binary, pointed at the fake by a kubeconfig
//! file. HTTP servers are real MCP servers (rmcp) behind the fake's pod
//! proxy, so readiness is a real handshake through the same relay and
//! subresource mcpctl uses against a cluster.

#[path = "support/drift.rs"]
mod drift;
#[path = "support/fake_kube.rs"]
mod fake_kube;
#[path = "support/fixture.rs"]
mod fixture;

use fake_kube::{Behaviour, FakeKube, Journal};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const NS: &str = "mcp";

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

/// A stdio server of `image`.
fn stdio(name: &str, replicas: u32, image: &str, timeout: &str) -> String {
    format!(
        "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  image: {image}\n  command: [\"--transport\", \"stdio\"]\n  readiness: {{timeout: {timeout}, minReady: 1s}}\n"
    )
}

/// A streamable-HTTP server of `image` (the fake decides what the image does).
fn http(name: &str, replicas: u32, image: &str, timeout: &str) -> String {
    format!(
        "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  image: {image}\n  command: [\"--transport\", \"http\"]\n  transport: streamable-http\n  port: 8080\n  readiness: {{timeout: {timeout}, minReady: 1s}}\n"
    )
}

impl Cluster {
    fn new() -> Cluster {
        let fake = FakeKube::start();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("fleet")).expect("mkdir");
        let kubeconfig = fake.kubeconfig(dir.path(), NS);
        Cluster {
            fake,
            dir,
            kubeconfig,
        }
    }

    fn write(&self, file: &str, yaml: &str) {
        std::fs::write(self.dir.path().join("fleet").join(file), yaml).expect("write spec");
    }

    fn delete(&self, file: &str) {
        std::fs::remove_file(self.dir.path().join("fleet").join(file)).expect("remove spec");
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mcpctl"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env("MCPCTL_RUNTIME", "kubernetes")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("MCPCTL_STATE", self.dir.path().join("state.redb"))
            .env_remove("MCPCTL_SCOPE")
            .env_remove("MCPCTL_NAMESPACE")
            .env_remove("MCPCTL_SECRETS_DIR")
            .env_remove("KUBERNETES_SERVICE_HOST");
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        let o = self.command(args).output().expect("run mcpctl");
        Run {
            code: o.status.code().unwrap_or(-9),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn apply(&self) -> Run {
        let r = self.run(&["apply", "fleet", "--timeout", "60s"]);
        assert_eq!(r.code, 0, "apply failed: {r}");
        r
    }

    fn instances(&self) -> Vec<Value> {
        let r = self.run(&["get", "instances", "-o", "json"]);
        assert_eq!(r.code, 0, "{r}");
        serde_json::from_str(&r.stdout).expect("instances json")
    }

    fn pods_of(&self, server: &str) -> Vec<Pod> {
        self.fake
            .pods()
            .into_iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("io.mcpctl.server"))
                    .is_some_and(|s| s == server)
            })
            .collect()
    }

    /// Every server has exactly its replicas, all RUNNING, and the pods
    /// are exactly the recorded instances.
    fn assert_exact(&self, want: &[(&str, usize)]) {
        let instances = self.instances();
        for (server, n) in want {
            let mine: Vec<&Value> = instances
                .iter()
                .filter(|i| i["server"] == *server)
                .collect();
            assert_eq!(mine.len(), *n, "{server}: {instances:#?}");
            assert!(
                mine.iter().all(|i| i["status"] == "RUNNING"),
                "{server}: {instances:#?}"
            );
            let mut ids: Vec<String> = mine
                .iter()
                .map(|i| i["id"].as_str().unwrap_or("").to_owned())
                .collect();
            // A Terminating pod is on its way out, as the runtime sees it.
            let mut pods: Vec<String> = self
                .pods_of(server)
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| {
                    p.metadata
                        .labels
                        .as_ref()?
                        .get("io.mcpctl.instance")
                        .cloned()
                })
                .collect();
            ids.sort();
            pods.sort();
            assert_eq!(ids, pods, "{server}: state and cluster disagree");
        }
    }
}

fn reason_of(instances: &[Value], server: &str) -> String {
    instances
        .iter()
        .filter(|i| i["server"] == server)
        .map(|i| format!("{} {}", i["status"], i["reason"]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_new_fleet_converges_with_services_and_then_plans_no_changes() {
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 2, "fixture:v1", "20s"));
    c.write("b.yaml", &http("beta", 1, "fixture:v1", "20s"));
    c.write("s.yaml", &stdio("sigma", 2, "fixture:v1", "20s"));
    let r = c.apply();
    assert!(r.stdout.contains("converged"), "{r}");
    // The passes that acted are numbered 1, 2, ... however many passes
    // (a probe answering, a wait) came between them.
    let passes: Vec<&str> = r
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("pass ")?.split(':').next())
        .collect();
    let counted: Vec<String> = (1..=passes.len()).map(|n| n.to_string()).collect();
    assert!(!passes.is_empty(), "{r}");
    assert_eq!(passes, counted, "{r}");
    c.assert_exact(&[("alpha", 2), ("beta", 1), ("sigma", 2)]);
    for i in c.instances() {
        let endpoint = i["endpoint"].as_str().expect("endpoint");
        if i["server"] == "sigma" {
            // Probed over `pods/attach`, with the stream protocol.
            assert_eq!(endpoint, "stdio");
            assert_eq!(i["mcp"]["transport"], "stdio", "{i}");
        } else {
            assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
            assert!(endpoint.ends_with("/8080/mcp"), "{endpoint}");
            assert_eq!(i["mcp"]["transport"], "streamable-http", "{i}");
        }
        // Promoted on a real handshake with the server behind the pod proxy.
        let pod = format!(
            "mcpctl-{}-{}",
            i["server"].as_str().expect("server"),
            i["id"].as_str().expect("id")
        );
        assert_eq!(i["mcp"]["server_name"], pod.as_str(), "{i}");
        assert_eq!(i["restarts"], 0, "{i}");
    }
    // Each HTTP server has its Service, selecting its pods.
    let services = c.fake.services();
    let mut names: Vec<String> = services
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["mcpctl-alpha", "mcpctl-beta"],
        "no Service for stdio"
    );
    let attached: Vec<String> = c
        .fake
        .journal()
        .into_iter()
        .filter_map(|j| match j {
            Journal::Attached { pod, protocol } => Some(format!("{pod} {protocol}")),
            _ => None,
        })
        .collect();
    for pod in c.pods_of("sigma") {
        let name = pod.metadata.name.clone().expect("name");
        assert!(
            attached.iter().any(|a| a.starts_with(&name)),
            "{name} was not attached: {attached:?}"
        );
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        assert_eq!(
            (container.stdin, container.stdin_once),
            (Some(true), Some(false))
        );
    }
    let alpha = services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("mcpctl-alpha"))
        .expect("alpha service");
    let selector = alpha
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .expect("selector");
    assert_eq!(selector["io.mcpctl.server"], "alpha");
    assert_eq!(selector["io.mcpctl.scope"], "default");
    // Pods carry the readiness gate and the Docker label keys.
    for pod in c.fake.pods() {
        let gates = pod
            .spec
            .as_ref()
            .and_then(|s| s.readiness_gates.clone())
            .expect("gates");
        assert_eq!(gates[0].condition_type, "mcpctl.io/mcp-ready");
        let labels = pod.metadata.labels.clone().expect("labels");
        for key in [
            "io.mcpctl.managed",
            "io.mcpctl.scope",
            "io.mcpctl.server",
            "io.mcpctl.instance",
            "io.mcpctl.spec-hash",
        ] {
            assert!(labels.contains_key(key), "{key} missing: {labels:?}");
        }
    }
    let r = c.run(&["plan", "fleet", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "a converged fleet plans no changes: {r}");
    // A converged fleet is observed with one list of pods and one of
    // Services (for orphans), and nothing per pod.
    let before = c.fake.journal().len();
    let r = c.run(&["plan", "fleet", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{r}");
    let calls: Vec<String> = c.fake.journal()[before..]
        .iter()
        .filter_map(|j| match j {
            Journal::Request(line) => Some(line.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(
        calls[0].starts_with("GET /api/v1/namespaces/mcp/pods?")
            && calls[0].contains("labelSelector=")
            && calls[1].starts_with("GET /api/v1/namespaces/mcp/services?")
            && calls[1].contains("labelSelector="),
        "{calls:#?}"
    );
}

#[test]
fn the_readiness_gate_is_set_only_after_a_successful_probe() {
    let c = Cluster::new();
    c.fake.behave("refuser:v1", Behaviour::Refuse);
    c.write("a.yaml", &http("alpha", 1, "fixture:v1", "20s"));
    c.write("r.yaml", &http("refuser", 1, "refuser:v1", "2s"));
    let r = c.run(&["apply", "fleet", "--timeout", "60s"]);
    assert_eq!(r.code, 1, "the refusing server cannot converge: {r}");
    let journal = c.fake.journal();
    let alpha = c.pods_of("alpha")[0]
        .metadata
        .name
        .clone()
        .expect("alpha pod");
    let set_true = |pod: &str| {
        journal.iter().position(|j| {
            matches!(j, Journal::StatusPatch { pod: p, condition, status }
                if p == pod && condition == "mcpctl.io/mcp-ready" && status == "True")
        })
    };
    let at = set_true(&alpha).expect("the gate of a server that answered MCP is set");
    assert!(
        journal[..at].iter().any(
            |j| matches!(j, Journal::Proxied { pod, status } if *pod == alpha && *status == 200)
        ),
        "set before any successful exchange with the pod: {journal:#?}"
    );
    // The gate is written once, not on every probe.
    let writes = journal
        .iter()
        .filter(|j| matches!(j, Journal::StatusPatch { pod, status, .. } if *pod == alpha && status == "True"))
        .count();
    assert_eq!(writes, 1, "{journal:#?}");
    for pod in c.pods_of("refuser") {
        let name = pod.metadata.name.clone().expect("name");
        assert_eq!(set_true(&name), None, "a refusing server's gate was set");
        assert!(
            journal.iter().any(
                |j| matches!(j, Journal::Proxied { pod, status } if *pod == name && *status == 503)
            ),
            "the refusing server was probed: {journal:#?}"
        );
    }
    // The condition is on the pod, as the kubelet would read it.
    let pod = c.pods_of("alpha").remove(0);
    let conditions = pod.status.and_then(|s| s.conditions).expect("conditions");
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "mcpctl.io/mcp-ready" && c.status == "True"),
        "{conditions:#?}"
    );
}

#[test]
fn a_pod_deleted_out_of_band_is_replaced() {
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 2, "fixture:v1", "20s"));
    c.apply();
    let victim = c.pods_of("alpha")[0].metadata.name.clone().expect("name");
    assert!(c.fake.delete_pod(NS, &victim));
    c.apply();
    c.assert_exact(&[("alpha", 2)]);
    assert!(
        c.pods_of("alpha")
            .iter()
            .all(|p| p.metadata.name.as_deref() != Some(victim.as_str())),
        "the deleted pod is not back under its old name"
    );
}

#[test]
fn a_crash_looping_pod_errors_with_its_crash_line() {
    let c = Cluster::new();
    c.fake.behave(
        "crasher:v1",
        Behaviour::CrashLoop {
            restarts: 4,
            exit_code: 3,
            last_words: "fatal: cannot open /data".into(),
        },
    );
    c.write("a.yaml", &http("alpha", 1, "crasher:v1", "20s"));
    let r = c.run(&["apply", "fleet", "--timeout", "30s"]);
    assert_eq!(r.code, 1, "{r}");
    let reason = reason_of(&c.instances(), "alpha");
    assert!(reason.contains("ERROR"), "{reason}");
    assert!(
        reason.contains("crash loop: exit 3, 4 restarts"),
        "{reason}"
    );
    assert!(reason.contains("fatal: cannot open /data"), "{reason}");
}

#[test]
fn a_running_pod_that_restarts_is_demoted() {
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 1, "fixture:v1", "20s"));
    c.apply();
    let name = c.pods_of("alpha")[0].metadata.name.clone().expect("name");
    c.fake.update_pod(NS, &name, |pod| {
        let status = pod.status.as_mut().expect("status");
        let cs = &mut status.container_statuses.as_mut().expect("statuses")[0];
        cs.restart_count = 1;
        cs.state = Some(
            serde_json::from_value(serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}}))
                .expect("state"),
        );
        cs.last_state = Some(
            serde_json::from_value(serde_json::json!({"terminated": {"exitCode": 137}}))
                .expect("state"),
        );
    });
    let r = c.run(&["plan", "fleet", "-o", "json"]);
    let plan: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r}"));
    let actions = plan["actions"].as_array().expect("actions");
    assert!(
        actions.iter().any(|a| a["action"] == "demote"
            && a["reason"].as_str().is_some_and(|r| r.contains("exit 137"))),
        "{plan:#}"
    );
}

#[test]
fn an_image_pull_failure_errors_with_the_kubelets_message() {
    let c = Cluster::new();
    let message = "rpc error: code = NotFound desc = failed to pull and unpack image \"docker.io/library/nope:v1\": not found";
    c.fake.behave(
        "nope:v1",
        Behaviour::ImagePull {
            message: message.into(),
        },
    );
    c.write("a.yaml", &http("alpha", 1, "nope:v1", "20s"));
    let r = c.run(&["apply", "fleet", "--timeout", "30s"]);
    assert_eq!(r.code, 1, "{r}");
    let reason = reason_of(&c.instances(), "alpha");
    assert!(reason.contains("ErrImagePull"), "{reason}");
    assert!(
        reason.contains("failed to pull and unpack image"),
        "{reason}"
    );
}

#[test]
fn a_terminated_pod_fails_with_its_last_log_line() {
    let c = Cluster::new();
    c.fake.behave(
        "quitter:v1",
        Behaviour::Exit {
            exit_code: 2,
            last_words: "config.toml: no such file".into(),
        },
    );
    c.write("a.yaml", &http("alpha", 1, "quitter:v1", "20s"));
    // A pod that Failed was ended from outside (an eviction; the kubelet
    // restarts whatever exits on its own), so, like a stopped container, it
    // is replaced at once: the apply runs out its timeout replacing it.
    let r = c.run(&["apply", "fleet", "--timeout", "4s"]);
    assert_eq!(r.code, 1, "{r}");
    let text = format!("{}{}", r.stdout, r.stderr);
    assert!(
        text.contains("exited (2): config.toml: no such file"),
        "{r}"
    );
    assert_eq!(c.pods_of("alpha").len(), 1, "one pod at a time");
}

#[test]
fn a_pod_pending_past_its_readiness_timeout_fails_with_the_schedulers_reason() {
    let c = Cluster::new();
    c.fake.behave(
        "big:v1",
        Behaviour::Unschedulable {
            message: "0/3 nodes are available: 3 Insufficient memory.".into(),
        },
    );
    c.write("a.yaml", &http("alpha", 1, "big:v1", "2s"));
    let r = c.run(&["apply", "fleet", "--timeout", "30s"]);
    assert_eq!(r.code, 1, "{r}");
    let reason = reason_of(&c.instances(), "alpha");
    assert!(reason.contains("never started"), "{reason}");
    assert!(
        reason.contains("Unschedulable: 0/3 nodes are available: 3 Insufficient memory."),
        "{reason}"
    );
}

#[test]
fn scaling_down_removes_the_oldest_first() {
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 3, "fixture:v1", "20s"));
    c.apply();
    let mut before: Vec<(String, String)> = c
        .instances()
        .iter()
        .map(|i| {
            (
                i["created_at"].as_str().unwrap_or("").to_owned(),
                i["id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    before.sort();
    c.write("a.yaml", &http("alpha", 1, "fixture:v1", "20s"));
    c.apply();
    c.assert_exact(&[("alpha", 1)]);
    let left = c.instances()[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(left, before[2].1, "the newest stays: {before:?}");
}

#[test]
fn a_changed_image_rolls_every_pod_and_keeps_the_replicas() {
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 2, "fixture:v1", "20s"));
    c.apply();
    let old: Vec<String> = c
        .pods_of("alpha")
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    c.write("a.yaml", &http("alpha", 2, "fixture:v2", "20s"));
    let r = c.apply();
    assert!(r.stdout.contains("converged"), "{r}");
    c.assert_exact(&[("alpha", 2)]);
    for pod in c.pods_of("alpha") {
        let name = pod.metadata.name.clone().expect("name");
        assert!(!old.contains(&name), "{name} was not replaced");
        let image = pod.spec.as_ref().expect("spec").containers[0]
            .image
            .clone()
            .expect("image");
        assert_eq!(image, "fixture:v2");
    }
    // New pods were created before old ones were deleted: never below replicas.
    let journal = c.fake.journal();
    let first_delete = journal
        .iter()
        .position(|j| matches!(j, Journal::Request(l) if l.starts_with("DELETE /api/v1/namespaces/mcp/pods/")))
        .expect("a delete");
    let creates_before = journal[..first_delete]
        .iter()
        .filter(|j| matches!(j, Journal::Request(l) if l.starts_with("POST /api/v1/namespaces/mcp/pods")))
        .count();
    assert!(
        creates_before >= 3,
        "the first old pod went before its replacement was made: {journal:#?}"
    );
}

#[test]
fn a_deleted_file_is_pruned_with_its_service() {
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 1, "fixture:v1", "20s"));
    c.write("b.yaml", &http("beta", 1, "fixture:v1", "20s"));
    c.apply();
    c.delete("b.yaml");
    c.apply();
    c.assert_exact(&[("alpha", 1)]);
    assert!(c.pods_of("beta").is_empty());
    let names: Vec<String> = c
        .fake
        .services()
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(
        names,
        ["mcpctl-alpha"],
        "beta's Service went with its last pod"
    );
}

#[test]
fn env_secrets_become_secret_key_refs_and_are_never_read() {
    let c = Cluster::new();
    c.fake
        .add_secret(NS, "gh", &[("token", "from-the-cluster")]);
    c.write(
        "a.yaml",
        &format!(
            "{}  env:\n    TOKEN:\n      secretRef: {{name: gh, key: token}}\n    MISSING:\n      secretRef: {{name: absent, key: k}}\n",
            http("alpha", 1, "fixture:v1", "3s")
        ),
    );
    // Neither a secrets directory nor MCPCTL_SECRET_* is set: on Docker this
    // plan would be refused; here the kubelet resolves the references.
    let r = c.run(&["apply", "fleet", "--timeout", "30s"]);
    assert_eq!(r.code, 1, "the absent Secret stops the container: {r}");
    let pod = c.pods_of("alpha").remove(0);
    let env = pod.spec.as_ref().expect("spec").containers[0]
        .env
        .clone()
        .expect("env");
    let token = env.iter().find(|e| e.name == "TOKEN").expect("TOKEN");
    assert_eq!(token.value, None);
    let r#ref = token
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("secretKeyRef");
    assert_eq!((r#ref.name.as_str(), r#ref.key.as_str()), ("gh", "token"));
    let reason = reason_of(&c.instances(), "alpha");
    assert!(reason.contains("CreateContainerConfigError"), "{reason}");
    assert!(
        reason.contains("secret \\\"absent\\\" not found"),
        "{reason}"
    );
    assert!(!r.stdout.contains("from-the-cluster") && !r.stderr.contains("from-the-cluster"));
}

#[test]
fn get_describe_and_logs_show_the_same_columns_and_json_as_on_docker() {
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 1, "fixture:v1", "20s"));
    c.apply();
    let r = c.run(&["get", "instances"]);
    assert_eq!(r.code, 0, "{r}");
    let header: Vec<&str> = r
        .stdout
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "SERVER", "INSTANCE", "STATUS", "AGE", "RESTARTS", "ENDPOINT", "REASON"
        ]
    );
    assert!(r.stdout.contains("RUNNING"), "{r}");
    let instances = c.instances();
    for key in [
        "id",
        "server",
        "status",
        "reason",
        "endpoint",
        "restarts",
        "created_at",
        "spec_hash",
    ] {
        assert!(instances[0].get(key).is_some(), "{key}: {:#}", instances[0]);
    }
    let r = c.run(&["get", "servers", "-o", "json"]);
    assert_eq!(r.code, 0, "{r}");
    let servers: Value = serde_json::from_str(&r.stdout).expect("servers json");
    assert_eq!(servers[0]["name"], "alpha");
    assert_eq!(servers[0]["desired"], 1);
    assert_eq!(servers[0]["ready"], 1);

    let id = instances[0]["id"].as_str().expect("id");
    let r = c.run(&["describe", "instance", id]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("RUNNING"), "{r}");
    assert!(r.stdout.contains(&format!("mcpctl-alpha-{id}")), "{r}");

    let pod = format!("mcpctl-alpha-{id}");
    c.fake
        .set_log(&pod, &["line one", "line two", "line three"]);
    let r = c.run(&["logs", "alpha", "--tail", "2"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(!r.stdout.contains("line one"), "{r}");
    assert!(
        r.stdout.contains("line two") && r.stdout.contains("line three"),
        "{r}"
    );
}

#[test]
fn the_examples_plan_cleanly_against_the_kubernetes_runtime() {
    let c = Cluster::new();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(&examples)
        .expect("examples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        // Not fleets: manifests that run mcpctl, and a CI workflow.
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n != "kubernetes" && n != "ci")
        })
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty());
    for dir in dirs {
        let dir = dir.to_str().expect("utf-8 path");
        // The external server's header is sent by mcpctl itself, so it is
        // still resolved; env secrets are references the kubelet reads.
        let o = c
            .command(&["plan", dir, "-o", "json"])
            .env("MCPCTL_SECRET_LINEAR_TOKEN", "placeholder")
            .output()
            .expect("plan");
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{dir}: {stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let plan: Value = serde_json::from_str(&stdout).expect("plan json");
        assert!(
            plan["actions"]
                .as_array()
                .is_some_and(|a| !a.is_empty() && a.iter().all(|a| a["action"] == "start")),
            "{dir}: {plan:#}"
        );
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

#[test]
fn the_events_stream_reports_pod_changes_from_a_watch() {
    use futures_util::StreamExt;
    use mcpctl::runtime::Runtime;
    use mcpctl::runtime::kubernetes::{KubeSettings, KubernetesRuntime, Reach};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = Cluster::new();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(async { c.fake.client(NS) });
    let kube = KubernetesRuntime::new(
        client,
        KubeSettings {
            namespace: None,
            scope: "default".into(),
            runners: Default::default(),
        },
        Reach::ApiProxy,
    );
    assert_eq!(kube.namespace(), NS, "the client's default namespace");
    let (tx, rx) = std::sync::mpsc::channel();
    rt.block_on(async {
        let mut events = std::pin::pin!(kube.events());
        // Polled once before anything happens, so the watch starts now.
        let first = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
        assert!(first.is_err(), "no event before any change: {first:?}");
        c.write("a.yaml", &http("alpha", 1, "fixture:v1", "20s"));
        let apply = c
            .command(&["apply", "fleet", "--no-wait"])
            .output()
            .expect("apply");
        assert!(
            apply.status.success(),
            "{}",
            String::from_utf8_lossy(&apply.stderr)
        );
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .expect("no error");
        tx.send(ev).expect("send");
    });
    let ev = eventually("the created event", Duration::from_secs(1), || {
        rx.try_recv().ok()
    });
    let mcpctl::model::Watched::Event(ev) = ev else {
        panic!("a unit's event, not {ev:?}");
    };
    assert_eq!(ev.server, "alpha");
    assert_eq!(ev.kind, mcpctl::model::EventKind::Created);
}

/// Parses each document of `examples/kubernetes/*.yaml` as its Kubernetes
/// type. k8s-openapi ignores fields it does not know, so each document must
/// also come back unchanged from its typed form: a misspelt field is lost on
/// the way, and shows.
fn example_manifests() -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes");
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/kubernetes")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read manifest");
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        docs.extend(parsed);
    }
    docs
}

fn round_trips<T: serde::Serialize + serde::de::DeserializeOwned>(doc: &Value) {
    let typed: T =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", doc["kind"]));
    let back = serde_json::to_value(&typed).expect("serialise");
    assert_eq!(
        &back, doc,
        "{} changed on the way through its type",
        doc["kind"]
    );
}

#[test]
fn the_in_cluster_manifests_are_valid_and_fit_together() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let docs = example_manifests();
    let of = |kind: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == kind).collect() };
    for d in &docs {
        match d["kind"].as_str() {
            Some("Deployment") => round_trips::<Deployment>(d),
            Some("ServiceAccount") => round_trips::<ServiceAccount>(d),
            Some("Role") => round_trips::<Role>(d),
            Some("RoleBinding") => round_trips::<RoleBinding>(d),
            Some("Namespace") => round_trips::<Namespace>(d),
            other => panic!("unexpected manifest kind {other:?}"),
        }
    }
    let (deployment, account, role, binding) = (
        of("Deployment"),
        of("ServiceAccount"),
        of("Role"),
        of("RoleBinding"),
    );
    assert_eq!(
        (deployment.len(), account.len(), role.len(), binding.len()),
        (1, 1, 1, 1)
    );
    let account_name = &account[0]["metadata"]["name"];
    let pod = &deployment[0]["spec"]["template"]["spec"];
    assert_eq!(&pod["serviceAccountName"], account_name);
    assert_eq!(&binding[0]["subjects"][0]["name"], account_name);
    assert_eq!(binding[0]["roleRef"]["name"], role[0]["metadata"]["name"]);
    // mcpctl and its secrets in one namespace, the fleet in another: the
    // Role and its binding in the fleet's, the one the Deployment names.
    let own = &deployment[0]["metadata"]["namespace"];
    let fleet = &role[0]["metadata"]["namespace"];
    assert_eq!(&account[0]["metadata"]["namespace"], own);
    assert_eq!(&binding[0]["subjects"][0]["namespace"], own);
    assert_eq!(&binding[0]["metadata"]["namespace"], fleet);
    assert_ne!(own, fleet, "the fleet runs apart from mcpctl's secrets");
    let namespaces: Vec<&Value> = of("Namespace")
        .iter()
        .map(|n| &n["metadata"]["name"])
        .collect();
    assert!(
        namespaces.contains(&own) && namespaces.contains(&fleet),
        "{namespaces:?}"
    );
    let container = &pod["containers"][0];
    assert!(
        container["env"]
            .as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == "MCPCTL_NAMESPACE" && &e["value"] == fleet),
        "the Deployment names the fleet's namespace"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "watch");
    assert!(args.iter().any(|a| a.starts_with("--git=")), "{args:?}");
    let env = pod["containers"][0]["env"].as_array().expect("env");
    assert!(
        env.iter()
            .any(|e| e["name"] == "MCPCTL_RUNTIME" && e["value"] == "kubernetes")
    );
    // What the runtime calls, granted; no Secret read but the digest key.
    let rules = role[0]["rules"].as_array().expect("rules");
    // The verbs granted on `resource`, on any name (`None`) or only on
    // the names a rule lists.
    let verbs = |resource: &str, names: Option<&[&str]>| -> Vec<String> {
        rules
            .iter()
            .filter(|r| {
                r["resources"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|x| x == resource))
            })
            .filter(|r| {
                let listed: Option<Vec<&str>> = r["resourceNames"]
                    .as_array()
                    .map(|n| n.iter().filter_map(Value::as_str).collect());
                listed.as_deref() == names
            })
            .flat_map(|r| r["verbs"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    // The names the runtime gives the default scope's lease and key.
    let (lease, key) = (
        mcpctl::runtime::kubernetes::scoped_name("mcpctl-lease", "default"),
        mcpctl::runtime::kubernetes::scoped_name("mcpctl-digest-key", "default"),
    );
    let (lease, key) = (&[lease.as_str()][..], &[key.as_str()][..]);
    for (resource, names, needed) in [
        (
            "pods",
            None,
            &["get", "list", "watch", "create", "delete"][..],
        ),
        ("pods/status", None, &["patch"]),
        ("pods/log", None, &["get"]),
        ("pods/attach", None, &["create"]),
        (
            "services",
            None,
            &["get", "list", "create", "patch", "delete"],
        ),
        ("leases", None, &["create"]),
        ("leases", Some(lease), &["get", "update"]),
        ("secrets", None, &["create"]),
        ("secrets", Some(key), &["get"]),
    ] {
        let granted = verbs(resource, names);
        for v in needed {
            assert!(granted.iter().any(|g| g == v), "{resource}: {v} missing");
        }
        assert_eq!(
            granted.len(),
            needed.len(),
            "{resource} {names:?}: more than needed: {granted:?}"
        );
    }
    let restricted = rules
        .iter()
        .filter(|r| r["resourceNames"].is_array())
        .count();
    assert_eq!(restricted, 2, "no other rule is limited to names");
    let lease_rules = rules.iter().filter(|r| {
        r["resources"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|x| x == "leases"))
    });
    assert!(
        lease_rules
            .into_iter()
            .all(|r| r["apiGroups"] == serde_json::json!(["coordination.k8s.io"])),
        "Leases are in coordination.k8s.io"
    );
    assert!(
        rules.iter().all(|r| r["verbs"]
            .as_array()
            .is_some_and(|v| v.iter().all(|x| x != "*"))),
        "no wildcard verbs"
    );
}

#[test]
fn remove_is_idempotent_and_a_gone_pod_inspects_as_none() {
    use mcpctl::model::{InstanceId, Program, RunSpec, SpecHash, Transport};
    use mcpctl::runtime::Runtime;
    use mcpctl::runtime::kubernetes::{KubeSettings, KubernetesRuntime, Reach};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeKube::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let kube = KubernetesRuntime::new(
            fake.client(NS),
            KubeSettings {
                namespace: None,
                scope: "default".into(),
                runners: Default::default(),
            },
            Reach::ApiProxy,
        );
        let spec = RunSpec {
            instance: InstanceId("01jk0000000000000000000001".into()),
            server: "alpha".into(),
            spec_hash: SpecHash("0123456789abcdef".into()),
            program: Program::Image("fixture:v1".into()),
            args: vec![],
            transport: Transport::StreamableHttp,
            port: Some(8080),
            path: None,
            env: vec![],
            memory_bytes: None,
            millicpus: None,
        };
        let created = kube.create(&spec).await.expect("create");
        assert_eq!(created.handle, "mcpctl-alpha-01jk0000000000000000000001");
        let unit = kube
            .inspect(&created.handle)
            .await
            .expect("inspect")
            .expect("there");
        assert_eq!(unit.instance, spec.instance);
        assert_eq!(unit.spec_hash, spec.spec_hash);
        assert_eq!(created.endpoint, unit.endpoint);
        kube.remove(&created.handle).await.expect("remove");
        kube.remove(&created.handle).await.expect("remove again");
        assert_eq!(kube.inspect(&created.handle).await.expect("inspect"), None);
        assert!(kube.observe().await.expect("observe").is_empty());
    });
    assert!(fake.pods().is_empty());
    assert!(
        fake.services().is_empty(),
        "the Service went with the last pod"
    );
}

#[test]
fn get_and_describe_show_live_drift_without_an_apply() {
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 1, "fixture:v1", "20s"));
    c.write("b.yaml", &stdio("beta", 1, "fixture:v1", "20s"));
    c.apply();
    let id_of = |server: &str| {
        c.instances()
            .iter()
            .find(|i| i["server"] == server)
            .and_then(|i| i["id"].as_str().map(str::to_owned))
            .expect("id")
    };
    let (alpha, beta) = (id_of("alpha"), id_of("beta"));
    // The kubelet restarted alpha's container once; beta's pod was deleted.
    c.fake
        .update_pod(NS, &format!("mcpctl-alpha-{alpha}"), |pod| {
            let cs = &mut pod
                .status
                .as_mut()
                .expect("status")
                .container_statuses
                .as_mut()
                .expect("statuses")[0];
            cs.restart_count = 1;
            cs.last_state = Some(
                serde_json::from_value(serde_json::json!({"terminated": {"exitCode": 137}}))
                    .expect("state"),
            );
        });
    assert!(c.fake.delete_pod(NS, &format!("mcpctl-beta-{beta}")));
    let state = c.dir.path().join("state.redb");
    let before = std::fs::read(&state).expect("state");
    let patches = || {
        c.fake
            .journal()
            .iter()
            .filter(|j| matches!(j, Journal::StatusPatch { .. }))
            .count()
    };
    let patched = patches();

    drift::assert_live_drift(
        |args| {
            let r = c.run(args);
            (r.code, r.stdout)
        },
        &alpha,
        &beta,
    );
    assert_eq!(
        std::fs::read(&state).expect("state"),
        before,
        "get and describe only look"
    );
    assert_eq!(patches(), patched, "nor do they touch a readiness gate");
}

/// A runtime of the default scope in `NS`, on the fake.
fn runtime_on(
    c: &Cluster,
    rt: &tokio::runtime::Runtime,
) -> mcpctl::runtime::kubernetes::KubernetesRuntime {
    use mcpctl::runtime::kubernetes::{KubeSettings, KubernetesRuntime, Reach};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = rt.block_on(async { c.fake.client(NS) });
    KubernetesRuntime::new(
        client,
        KubeSettings {
            namespace: None,
            scope: "default".into(),
            runners: Default::default(),
        },
        Reach::ApiProxy,
    )
}

type Item = Result<mcpctl::model::Watched, mcpctl::runtime::RuntimeError>;

/// The next item of `events`, within `secs` seconds.
async fn next_item(
    events: &mut (impl futures_util::Stream<Item = Item> + Unpin),
    secs: u64,
) -> Item {
    use futures_util::StreamExt;
    tokio::time::timeout(Duration::from_secs(secs), events.next())
        .await
        .expect("an item in time")
        .expect("the stream never ends")
}

/// Makes the pod's container crash, as the kubelet would report it.
fn crash(c: &Cluster, pod: &str) {
    c.fake.update_pod(NS, pod, |p| {
        let status = p.status.as_mut().expect("status");
        let cs = status.container_statuses.as_mut().expect("statuses");
        cs[0].state = Some(
            serde_json::from_value(serde_json::json!({"terminated": {"exitCode": 7}}))
                .expect("state"),
        );
    });
}

#[test]
fn a_watch_the_server_ends_or_expires_resumes_and_later_events_still_arrive() {
    use mcpctl::model::{EventKind, Watched};
    use mcpctl::runtime::Runtime;
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 1, "fixture:v1", "20s"));
    c.apply();
    let pod = c.pods_of("alpha")[0].metadata.name.clone().expect("name");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let kube = runtime_on(&c, &rt);
    rt.block_on(async {
        let mut events = std::pin::pin!(kube.events());
        // The first opening is no resumption: nothing comes before a change.
        let first = tokio::time::timeout(
            Duration::from_millis(300),
            futures_util::StreamExt::next(&mut events),
        )
        .await;
        assert!(first.is_err(), "nothing before any change: {first:?}");

        // The API server ends the watch (its timeoutSeconds).
        c.fake.end_watches();
        let item = next_item(&mut events, 10).await;
        assert!(matches!(item, Ok(Watched::Resumed)), "{item:?}");
        crash(&c, &pod);
        let item = next_item(&mut events, 10).await;
        let Ok(Watched::Event(ev)) = item else {
            panic!("the crash, not {item:?}");
        };
        assert_eq!(ev.kind, EventKind::Died { exit_code: Some(7) });

        // Its version is compacted away while the watch is down: 410 Gone,
        // a new list, and the stream says it resumed.
        c.fake.expire_versions();
        c.fake.end_watches();
        let mut seen = Vec::new();
        loop {
            let item = next_item(&mut events, 10).await;
            let done = matches!(item, Ok(Watched::Resumed))
                && seen
                    .iter()
                    .any(|i: &Item| matches!(i, Err(e) if e.to_string().contains("410")));
            seen.push(item);
            if done {
                break;
            }
        }
        c.fake.update_pod(NS, &pod, |p| {
            p.status
                .as_mut()
                .expect("status")
                .container_statuses
                .as_mut()
                .expect("cs")[0]
                .state = Some(
                serde_json::from_value(
                    serde_json::json!({"running": {"startedAt": "2026-11-30T01:00:00Z"}}),
                )
                .expect("state"),
            );
        });
        let item = next_item(&mut events, 10).await;
        let Ok(Watched::Event(ev)) = item else {
            panic!("the restart after the 410, not {item:?}; before: {seen:?}");
        };
        assert_eq!(ev.kind, EventKind::Started);
    });
    // Every reopening after the 410 listed again, then watched from the
    // bookmark's version or the list's, with bookmarks asked for.
    let watches: Vec<String> = c
        .fake
        .journal()
        .into_iter()
        .filter_map(|j| match j {
            Journal::Request(l) if l.contains("watch=true") => Some(l),
            _ => None,
        })
        .collect();
    assert!(watches.len() >= 3, "{watches:#?}");
    assert!(
        watches
            .iter()
            .all(|w| w.contains("allowWatchBookmarks=true")),
        "{watches:#?}"
    );
}

/// Pods of `server` that are not being deleted.
fn live_pods(c: &Cluster, server: &str) -> Vec<String> {
    c.pods_of(server)
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect()
}

/// `mcpctl watch` in the background, killed when dropped.
struct Watching(std::process::Child);

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_pod_deleted_while_the_watch_was_broken_is_replaced_without_a_resync() {
    let c = Cluster::new();
    // No liveness probe comes due in the test's time: only the events
    // stream can bring the pass that sees the loss.
    let spec =
        http("alpha", 2, "fixture:v1", "20s").replace("minReady: 1s", "minReady: 1s, period: 1h");
    c.write("a.yaml", &spec);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let child = c
        .command(&[
            "watch",
            "fleet",
            "--resync",
            "1h",
            "--listen",
            &addr.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start mcpctl watch");
    let _watching = Watching(child);
    // Both RUNNING: the passes their start asked for are done, and the loop
    // waits for a reason to look.
    eventually("two RUNNING instances", Duration::from_secs(60), || {
        let m = fixture::http_request(addr, "GET", "/metrics", &[], None, Duration::from_secs(5))
            .ok()?;
        m.body
            .contains("mcpctl_instances{status=\"RUNNING\"} 2")
            .then_some(())
    });
    let victim = live_pods(&c, "alpha")[0].clone();
    // The API server goes away; while it is, a pod is deleted and the
    // history that would have told of it is compacted.
    c.fake.refuse_watches(true);
    c.fake.end_watches();
    let refused = c.fake.count_requests("GET", "watch=true");
    eventually("a refused watch", Duration::from_secs(10), || {
        (c.fake.count_requests("GET", "watch=true") > refused).then_some(())
    });
    assert!(c.fake.delete_pod(NS, &victim));
    c.fake.expire_versions();
    c.fake.refuse_watches(false);
    eventually("a replacement", Duration::from_secs(30), || {
        let live = live_pods(&c, "alpha");
        (live.len() == 2 && !live.contains(&victim)).then_some(())
    });
}

#[test]
fn a_terminating_pod_is_not_counted_as_running() {
    let c = Cluster::new();
    c.fake.set_grace(Duration::from_secs(120));
    c.write("a.yaml", &http("alpha", 2, "fixture:v1", "20s"));
    c.apply();
    let victim = c.pods_of("alpha")[0].metadata.name.clone().expect("name");
    assert!(c.fake.delete_pod(NS, &victim));
    assert_eq!(
        c.pods_of("alpha").len(),
        2,
        "the victim lingers, Terminating"
    );
    c.apply();
    c.assert_exact(&[("alpha", 2)]);
    let live = live_pods(&c, "alpha");
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(!live.contains(&victim));
    assert_eq!(c.pods_of("alpha").len(), 3, "the victim still lingers");
}

#[test]
fn a_service_that_is_not_ours_is_neither_patched_nor_deleted() {
    let c = Cluster::new();
    let foreign: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "mcpctl-alpha", "labels": {"app": "someone-else"}},
        "spec": {"ports": [{"name": "web", "port": 80}]}
    }))
    .expect("service");
    c.fake.add_service(NS, foreign);
    c.write("a.yaml", &http("alpha", 1, "fixture:v1", "20s"));
    let r = c.run(&["apply", "fleet", "--timeout", "30s"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(
        r.stdout.contains("mcpctl-alpha") && r.stdout.contains("not mcpctl's")
            || r.stderr.contains("mcpctl-alpha") && r.stderr.contains("not mcpctl's"),
        "{r}"
    );
    let left = c.fake.services();
    assert_eq!(left.len(), 1, "{left:#?}");
    let ports = left[0]
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .expect("ports");
    assert_eq!(
        (ports.len(), ports[0].port),
        (1, 80),
        "untouched: {ports:#?}"
    );
    // Nor is it deleted when the server goes.
    c.delete("a.yaml");
    let r = c.run(&["apply", "fleet", "--timeout", "30s", "--allow-empty"]);
    assert_eq!(c.fake.services().len(), 1, "the foreign Service stays");
    assert!(c.pods_of("alpha").is_empty(), "{r}");
}

#[test]
fn a_pod_of_another_scope_is_not_removed() {
    use mcpctl::runtime::Runtime;
    use mcpctl::runtime::kubernetes::{KubeSettings, KubernetesRuntime, Reach};
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 1, "fixture:v1", "20s"));
    c.apply();
    let pod = c.pods_of("alpha")[0].metadata.name.clone().expect("name");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let other = KubernetesRuntime::new(
        rt.block_on(async { c.fake.client(NS) }),
        KubeSettings {
            namespace: None,
            scope: "other".into(),
            runners: Default::default(),
        },
        Reach::ApiProxy,
    );
    let e = rt.block_on(other.remove(&pod)).expect_err("not its pod");
    assert!(e.to_string().contains("not mcpctl's"), "{e}");
    assert!(rt.block_on(other.inspect(&pod)).expect("inspect").is_none());
    let e = rt
        .block_on(other.set_ready(&pod, false))
        .expect_err("not its pod");
    assert!(e.to_string().contains("not mcpctl's"), "{e}");
    assert_eq!(c.pods_of("alpha").len(), 1, "still there");
}

#[test]
fn a_scope_that_is_no_label_value_is_refused_on_both_runtimes() {
    let c = Cluster::new();
    for runtime in ["kubernetes", "docker"] {
        let o = c
            .command(&[
                "apply",
                "fleet",
                "--scope",
                "team a/b",
                "--runtime",
                runtime,
            ])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{runtime}: {stderr}");
        assert!(
            stderr.contains("--scope \"team a/b\"") && stderr.contains("team-a"),
            "{runtime}: {stderr}"
        );
    }
}

fn service_names(c: &Cluster) -> Vec<String> {
    c.fake
        .services()
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect()
}

#[test]
fn a_server_turned_from_http_to_stdio_loses_its_service() {
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 1, "fixture:v1", "20s"));
    c.apply();
    assert_eq!(service_names(&c), ["mcpctl-alpha"]);
    c.write("a.yaml", &stdio("alpha", 1, "fixture:v1", "20s"));
    c.apply();
    c.assert_exact(&[("alpha", 1)]);
    assert!(service_names(&c).is_empty(), "{:?}", service_names(&c));
}

#[test]
fn a_service_whose_pods_went_out_of_band_is_pruned_by_the_next_write_not_by_a_look() {
    use mcpctl::runtime::Runtime;
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 1, "fixture:v1", "20s"));
    c.write("b.yaml", &stdio("beta", 1, "fixture:v1", "20s"));
    c.apply();
    assert_eq!(service_names(&c), ["mcpctl-alpha"]);
    let alpha = c.pods_of("alpha")[0].metadata.name.clone().expect("name");
    let beta = c.pods_of("beta")[0].metadata.name.clone().expect("name");
    assert!(c.fake.delete_pod(NS, &alpha));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let kube = runtime_on(&c, &rt);
    let units = rt.block_on(kube.observe()).expect("observe");
    assert_eq!(units.len(), 1);
    assert_eq!(
        service_names(&c),
        ["mcpctl-alpha"],
        "a look changes nothing"
    );
    rt.block_on(kube.set_ready(&beta, true)).expect("set ready");
    assert!(service_names(&c).is_empty(), "{:?}", service_names(&c));
}

#[test]
fn a_restarted_pods_last_line_is_read_once_per_restart_not_per_look() {
    use mcpctl::runtime::Runtime;
    let c = Cluster::new();
    c.fake.behave(
        "crash:v1",
        Behaviour::CrashLoop {
            restarts: 4,
            exit_code: 3,
            last_words: "panic: no config".into(),
        },
    );
    c.write("a.yaml", &http("alpha", 1, "crash:v1", "2s"));
    let _ = c.run(&["apply", "fleet", "--no-wait"]);
    let pod = c.pods_of("alpha")[0].metadata.name.clone().expect("name");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let kube = runtime_on(&c, &rt);
    let logs = || c.fake.count_requests("GET", &format!("/pods/{pod}/log"));
    let before = logs();
    for _ in 0..4 {
        let units = rt.block_on(kube.observe()).expect("observe");
        assert_eq!(units[0].last_log.as_deref(), Some("panic: no config"));
    }
    assert_eq!(logs() - before, 1, "one log call for four looks");
    // Another restart is another run, with its own last line.
    c.fake.update_pod(NS, &pod, |p| {
        p.status
            .as_mut()
            .expect("status")
            .container_statuses
            .as_mut()
            .expect("cs")[0]
            .restart_count = 5;
    });
    for _ in 0..3 {
        rt.block_on(kube.observe()).expect("observe");
    }
    assert_eq!(logs() - before, 2, "one more for the new restart");
}

#[test]
fn the_relay_refuses_requests_without_its_token_or_to_pods_it_did_not_hand_out() {
    use mcpctl::model::Endpoint;
    use mcpctl::runtime::Runtime;
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 1, "fixture:v1", "20s"));
    c.apply();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let kube = runtime_on(&c, &rt);
    let units = rt.block_on(kube.observe()).expect("observe");
    let Some(Endpoint::Http(url)) = units[0].endpoint.clone() else {
        panic!("an HTTP endpoint: {units:?}");
    };
    // http://127.0.0.1:PORT/TOKEN/POD/8080/mcp
    let rest = url.strip_prefix("http://").expect("http");
    let (authority, path) = rest.split_once('/').expect("a path");
    let addr: std::net::SocketAddr = authority.parse().expect("addr");
    let (token, pod_path) = path.split_once('/').expect("token");
    assert!(token.len() >= 64, "a 256-bit token: {token}");
    // Another server's pod, made after the look: never handed out.
    c.write("b.yaml", &http("beta", 1, "fixture:v1", "20s"));
    c.apply();
    let beta = c.pods_of("beta")[0].metadata.name.clone().expect("name");
    // The relay runs on `rt`'s worker threads; this thread only asks.
    let get = |path: &str| {
        fixture::http_request(addr, "GET", path, &[], None, Duration::from_secs(5))
            .expect("relay answers")
            .status
    };
    let journal_before = c.fake.journal().len();
    assert_eq!(get(&format!("/{pod_path}")), 403, "no token");
    let wrong = format!(
        "{}{}",
        &token[..token.len() - 1],
        if token.ends_with('0') { '1' } else { '0' }
    );
    assert_eq!(get(&format!("/{wrong}/{pod_path}")), 403, "a wrong token");
    assert_eq!(
        get(&format!("/{token}/{beta}/8080/mcp")),
        403,
        "a pod not handed out"
    );
    assert!(
        c.fake.journal()[journal_before..].is_empty(),
        "nothing refused reached the API server: {:#?}",
        &c.fake.journal()[journal_before..]
    );
    assert_ne!(
        get(&format!("/{token}/{pod_path}")),
        403,
        "the endpoint itself"
    );
}

#[test]
fn a_refused_watch_is_retried_with_doubling_pauses_and_errors_as_items() {
    use futures_util::StreamExt;
    use mcpctl::runtime::Runtime;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let c = Cluster::new();
    c.fake.refuse_watches(true);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let kube = std::sync::Arc::new(runtime_on(&c, &rt));
    let errors = std::sync::Arc::new(AtomicUsize::new(0));
    let driver = {
        let (kube, errors) = (kube.clone(), errors.clone());
        rt.spawn(async move {
            let mut events = std::pin::pin!(kube.events());
            while let Some(item) = events.next().await {
                if item.is_err() {
                    errors.fetch_add(1, Ordering::SeqCst);
                }
            }
            panic!("the events stream ended");
        })
    };
    // Each refused reopening is one error item.
    let failed = || errors.load(Ordering::SeqCst);
    eventually("a first refused watch", Duration::from_secs(10), || {
        (failed() >= 1).then_some(())
    });
    let first = Instant::now();
    // Pauses of 100, 200, 400 and 800 ms come before the fifth failure.
    eventually("four more failures", Duration::from_secs(30), || {
        (failed() >= 5).then_some(())
    });
    let took = first.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "backed off too little: {took:?}"
    );
    assert!(!driver.is_finished(), "the stream goes on");
    // Once the API server is back, the watch opens again and says so.
    c.fake.refuse_watches(false);
    let before = c.fake.count_requests("GET", "watch=true");
    eventually(
        "a watch that is open again",
        Duration::from_secs(30),
        || (c.fake.count_requests("GET", "watch=true") > before).then_some(()),
    );
    driver.abort();
}

/// A running `mcpctl gateway` (or `watch --gateway`) against the fake
/// cluster, its log in a file, killed when dropped.
struct Gateway {
    served: fixture::Listening,
    addr: std::net::SocketAddr,
}

impl Gateway {
    /// `mcpctl gateway`.
    fn start(c: &Cluster) -> Gateway {
        Gateway::spawn(c, |listen| {
            ["gateway", "--listen", listen, "--refresh", "200ms"]
                .map(str::to_owned)
                .to_vec()
        })
    }

    /// `mcpctl watch --gateway`, on its source.
    fn watch(c: &Cluster) -> Gateway {
        let health = fixture::Listening::free_addr().to_string();
        Gateway::spawn(c, |listen| {
            ["watch", "fleet", "--listen", &health, "--gateway", listen]
                .map(str::to_owned)
                .to_vec()
        })
    }

    fn spawn(c: &Cluster, args: impl FnOnce(&str) -> Vec<String>) -> Gateway {
        let addr = fixture::Listening::free_addr();
        let log = c.dir.path().join(format!("gateway-{}.log", addr.port()));
        let args = args(&addr.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let served = fixture::Listening::spawn(c.command(&args), addr, log);
        Gateway { served, addr }
    }

    fn log(&self) -> String {
        self.served.log()
    }

    /// `initialize` to `server` through the gateway.
    fn initialize(&self, server: &str) -> fixture::HttpReply {
        fixture::mcp_post(
            self.addr,
            &format!("/servers/{server}/mcp"),
            None,
            &fixture::initialize_request(1, fixture::PROTOCOL_VERSION),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("POST through the gateway: {e}\n{}", self.log()))
    }
}

/// The `serverInfo.name` of an `initialize` answer: the fake's servers
/// answer with their pod's name.
fn answered_by(reply: &fixture::HttpReply) -> Option<String> {
    reply.messages().iter().find_map(|m| {
        m["result"]["serverInfo"]["name"]
            .as_str()
            .map(str::to_owned)
    })
}

#[test]
fn a_gateway_outside_the_cluster_reaches_pods_through_its_own_proxy_and_attach() {
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 2, "fixture:v1", "20s"));
    c.write("b.yaml", &http("beta", 0, "fixture:v1", "20s"));
    c.write("s.yaml", &stdio("sigma", 1, "fixture:v1", "20s"));
    c.apply();
    // The endpoints `apply` recorded are on its own relay, gone with it.
    let recorded: Vec<String> = c
        .instances()
        .iter()
        .filter(|i| i["server"] == "alpha")
        .map(|i| i["endpoint"].as_str().expect("endpoint").to_owned())
        .collect();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    let g = Gateway::start(&c);
    let proxied_before = c
        .fake
        .journal()
        .iter()
        .filter(|j| matches!(j, Journal::Proxied { .. }))
        .count();

    // HTTP: through the API server's pod proxy, on the gateway's relay.
    let reply = g.initialize("alpha");
    assert_eq!(reply.status, 200, "{reply:?}\n{}", g.log());
    let pod = answered_by(&reply).unwrap_or_else(|| panic!("{reply:?}"));
    let alpha: Vec<String> = c
        .pods_of("alpha")
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(alpha.contains(&pod), "{pod} is not one of {alpha:?}");
    let proxied: Vec<String> = c
        .fake
        .journal()
        .into_iter()
        .filter_map(|j| match j {
            Journal::Proxied { pod, status } => Some(format!("{pod} {status}")),
            _ => None,
        })
        .skip(proxied_before)
        .collect();
    assert!(
        proxied.iter().any(|p| p == &format!("{pod} 200")),
        "the gateway's request did not go through the pod proxy: {proxied:?}"
    );

    // stdio: through `pods/attach`, with the bridge's shared session.
    let reply = g.initialize("sigma");
    assert_eq!(reply.status, 200, "{reply:?}\n{}", g.log());
    let sigma: Vec<String> = c
        .pods_of("sigma")
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(answered_by(&reply), sigma.first().cloned(), "{reply:?}");

    // A server that gains an instance while the gateway runs: the gateway
    // asks its own runtime where the new pod is, without a restart.
    let reply = g.initialize("beta");
    assert_eq!(reply.status, 503, "{reply:?}");
    c.write("b.yaml", &http("beta", 1, "fixture:v1", "20s"));
    c.apply();
    let beta = c.pods_of("beta");
    let beta = beta
        .first()
        .and_then(|p| p.metadata.name.clone())
        .expect("a beta pod");
    let reply = eventually(
        "the gateway to route to beta",
        Duration::from_secs(20),
        || Some(g.initialize("beta")).filter(|r| r.status == 200),
    );
    assert_eq!(
        answered_by(&reply).as_deref(),
        Some(beta.as_str()),
        "{reply:?}"
    );
}

#[test]
fn watch_gateway_routes_on_its_own_endpoints_not_those_an_earlier_process_recorded() {
    let c = Cluster::new();
    c.write("a.yaml", &http("alpha", 1, "fixture:v1", "20s"));
    c.apply();
    let pod = c
        .pods_of("alpha")
        .first()
        .and_then(|p| p.metadata.name.clone())
        .expect("an alpha pod");
    // `apply`'s relay went with it; `watch` has one of its own.
    let g = Gateway::watch(&c);
    let reply = eventually(
        "watch's gateway to route to alpha",
        Duration::from_secs(30),
        || Some(g.initialize("alpha")).filter(|r| r.status != 503),
    );
    assert_eq!(reply.status, 200, "{reply:?}\n{}", g.log());
    assert_eq!(
        answered_by(&reply).as_deref(),
        Some(pod.as_str()),
        "{reply:?}"
    );
}
