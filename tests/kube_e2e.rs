//! `mcpctl --runtime kubernetes` against a **real** cluster: the one
//! `KUBECONFIG` names (kind or k3d on a laptop; see
//! `examples/kubernetes/README.md`). It is ignored by default, so a plain
//! `cargo test` reports it as ignored, not passed; run it with
//!
//! ```text
//! KUBECONFIG=$HOME/.kube/config MCPCTL_E2E_LOAD=kind:mcpctl \
//!   cargo test --test kube_e2e -- --ignored
//! ```
//!
//! Asked to run without `KUBECONFIG`, it fails rather than pretend. It
//! builds the project's rmcp fixture image with Docker and, with
//! `MCPCTL_E2E_LOAD=kind:<cluster>` or `k3d:<cluster>`, loads it into the
//! cluster's nodes (otherwise the image must already be pullable there, as
//! `MCPCTL_E2E_IMAGE`). It works in the namespace `MCPCTL_E2E_NAMESPACE`
//! (default `mcpctl-e2e`, created if missing), in a scope of its own, and
//! deletes what it made.

#[path = "support/fixture.rs"]
mod fixture;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

struct E2e {
    kubeconfig: String,
    namespace: String,
    scope: String,
    dir: tempfile::TempDir,
}

impl E2e {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mcpctl"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("MCPCTL_RUNTIME", "kubernetes")
            .env("MCPCTL_NAMESPACE", &self.namespace)
            .env("MCPCTL_SCOPE", &self.scope)
            .env("MCPCTL_STATE", self.dir.path().join("state.redb"));
        c
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let o = self.command(args).output().expect("run mcpctl");
        (
            o.status.code().unwrap_or(-9),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn write(&self, yaml: &str) {
        std::fs::create_dir_all(self.dir.path().join("fleet")).expect("mkdir");
        std::fs::write(self.dir.path().join("fleet/fleet.yaml"), yaml).expect("write");
    }

    fn instances(&self) -> Vec<Value> {
        let (code, out, err) = self.run(&["get", "instances", "-o", "json"]);
        assert_eq!(code, 0, "{out}{err}");
        serde_json::from_str(&out).expect("json")
    }
}

fn fleet(image: &str, http_replicas: u32) -> String {
    format!(
        "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: e2e-http}}\nspec:\n  replicas: {http_replicas}\n  image: {image}\n  command: [\"--transport\", \"http\"]\n  transport: streamable-http\n  port: 8080\n  readiness: {{timeout: 120s}}\n---\napiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: e2e-stdio}}\nspec:\n  image: {image}\n  command: [\"--transport\", \"stdio\"]\n  readiness: {{timeout: 120s}}\n"
    )
}

#[test]
#[ignore = "needs a real cluster: KUBECONFIG=... cargo test --test kube_e2e -- --ignored (see examples/kubernetes/README.md)"]
fn a_fleet_converges_repairs_and_prunes_on_a_real_cluster() {
    let kubeconfig = std::env::var("KUBECONFIG").unwrap_or_default();
    assert!(
        !kubeconfig.is_empty(),
        "KUBECONFIG is not set: this test runs against a real cluster and will not pretend to pass without one"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let image = match std::env::var("MCPCTL_E2E_IMAGE") {
        Ok(i) if !i.is_empty() => i,
        _ => fixture::fixture_image(),
    };
    if let Ok(load) = std::env::var("MCPCTL_E2E_LOAD") {
        let (tool, cluster) = load
            .split_once(':')
            .expect("MCPCTL_E2E_LOAD is kind:<cluster> or k3d:<cluster>");
        let status = match tool {
            "kind" => Command::new("kind")
                .args(["load", "docker-image", &image, "--name", cluster])
                .status(),
            "k3d" => Command::new("k3d")
                .args(["image", "import", &image, "-c", cluster])
                .status(),
            other => panic!("MCPCTL_E2E_LOAD: unknown tool {other}"),
        };
        assert!(status.is_ok_and(|s| s.success()), "loading {image} failed");
    }
    let e = E2e {
        kubeconfig,
        namespace: std::env::var("MCPCTL_E2E_NAMESPACE").unwrap_or_else(|_| "mcpctl-e2e".into()),
        scope: format!("e2e{}", std::process::id()),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt
        .block_on(kube::Client::try_default())
        .expect("kube client");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": e.namespace}}))
            .expect("namespace");
    if let Err(err) = rt.block_on(namespaces.create(&PostParams::default(), &ns)) {
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 409),
            "cannot create namespace {}: {err}",
            e.namespace
        );
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &e.namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &e.namespace);
    let selector = format!("io.mcpctl.managed=true,io.mcpctl.scope={}", e.scope);
    let ours = |rt: &tokio::runtime::Runtime| {
        rt.block_on(pods.list(&ListParams::default().labels(&selector)))
            .expect("list pods")
            .items
    };

    // Converge: HTTP and stdio servers become RUNNING on real handshakes.
    e.write(&fleet(&image, 2));
    let (code, out, err) = e.run(&["apply", "fleet", "--timeout", "5m"]);
    assert_eq!(code, 0, "{out}{err}");
    let instances = e.instances();
    assert_eq!(instances.len(), 3, "{instances:#?}");
    assert!(
        instances.iter().all(|i| i["status"] == "RUNNING"),
        "{instances:#?}"
    );
    for pod in ours(&rt) {
        let gate = pod
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "mcpctl.io/mcp-ready");
        assert_eq!(gate.map(|c| c.status).as_deref(), Some("True"));
    }
    let svc = format!("mcpctl-{}-e2e-http", e.scope);
    assert!(
        rt.block_on(services.get_opt(&svc))
            .expect("get service")
            .is_some()
    );

    // Repair: a pod deleted behind mcpctl's back is replaced.
    let victim = ours(&rt)[0].metadata.name.clone().expect("name");
    rt.block_on(pods.delete(&victim, &DeleteParams::default()))
        .expect("delete pod");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (code, out, err) = e.run(&["apply", "fleet", "--timeout", "5m"]);
        assert_eq!(code, 0, "{out}{err}");
        if e.instances().iter().all(|i| i["status"] == "RUNNING") && e.instances().len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "not repaired");
    }

    // Prune: an empty fleet removes every pod and the Service.
    std::fs::remove_file(e.dir.path().join("fleet/fleet.yaml")).expect("rm");
    let (code, out, err) = e.run(&["apply", "fleet", "--allow-empty", "--timeout", "5m"]);
    assert_eq!(code, 0, "{out}{err}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ours(&rt).is_empty() {
        assert!(Instant::now() < deadline, "pods left behind");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        rt.block_on(services.get_opt(&svc))
            .expect("get service")
            .is_none()
    );
}

#[test]
#[ignore = "needs a real cluster: KUBECONFIG=... cargo test --test kube_e2e -- --ignored (see examples/kubernetes/README.md)"]
fn the_applier_lease_and_digest_key_round_trip_on_a_real_cluster() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Secret;
    use mcpctl::runtime::Runtime;
    use mcpctl::runtime::kubernetes::{KubeSettings, KubernetesRuntime};
    assert!(
        std::env::var("KUBECONFIG").is_ok_and(|k| !k.is_empty()),
        "KUBECONFIG is not set: this test runs against a real cluster and will not pretend to pass without one"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let namespace = std::env::var("MCPCTL_E2E_NAMESPACE").unwrap_or_else(|_| "mcpctl-e2e".into());
    // Capitals and `_`: the API server itself checks the mapped names.
    let scope = format!("E2e_lease{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = kube::Client::try_default().await.expect("kube client");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))
                .expect("namespace");
        if let Err(err) = namespaces.create(&PostParams::default(), &ns).await {
            assert!(
                matches!(&err, kube::Error::Api(s) if s.code == 409),
                "cannot create namespace {namespace}: {err}"
            );
        }
        let settings = KubeSettings {
            namespace: Some(namespace.clone()),
            scope: scope.clone(),
            runners: Default::default(),
        };
        let a = KubernetesRuntime::connect(settings.clone())
            .await
            .expect("connect");
        let b = KubernetesRuntime::connect(settings).await.expect("connect");
        let (ha, hb) = (
            mcpctl::apply::lease::this_process("e2e a"),
            mcpctl::apply::lease::this_process("e2e b"),
        );
        let ttl = Duration::from_secs(10);
        assert_eq!(a.lease().await.expect("read"), None);
        let v1 = a
            .write_lease(None, Some(&ha), ttl)
            .await
            .expect("write")
            .expect("won");
        assert_eq!(
            b.write_lease(None, Some(&hb), ttl).await.expect("write"),
            None
        );
        let v2 = a
            .write_lease(Some(&v1), Some(&ha), ttl)
            .await
            .expect("renew")
            .expect("won");
        assert_eq!(
            b.write_lease(Some(&v1), Some(&hb), ttl)
                .await
                .expect("stale"),
            None
        );
        let read = b.lease().await.expect("read").expect("lease");
        assert_eq!(
            (read.holder.as_ref(), read.ttl, read.version.as_str()),
            (Some(&ha), ttl, v2.as_str())
        );
        let v3 = a
            .write_lease(Some(&v2), None, ttl)
            .await
            .expect("release")
            .expect("won");
        b.write_lease(Some(&v3), Some(&hb), ttl)
            .await
            .expect("take")
            .expect("won");
        assert_eq!(
            a.lease().await.expect("read").and_then(|l| l.holder),
            Some(hb)
        );
        let key = a.digest_key(Some([7; 32])).await.expect("key");
        assert_eq!(b.digest_key(Some([8; 32])).await.expect("key"), key);

        let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(client, &namespace);
        leases
            .delete(&a.lease_name(), &DeleteParams::default())
            .await
            .expect("delete lease");
        secrets
            .delete(&a.digest_key_name(), &DeleteParams::default())
            .await
            .expect("delete key");
    });
}
