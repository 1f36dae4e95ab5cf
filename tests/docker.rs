//! `apply` against the real Docker Engine: convergence, out-of-band damage,
//! scaling, rolling replace, pruning, crashes, missing images and secrets,
//! crash safety under `kill -9`, and two appliers at once.
//!
//! Every test drives the built `mcpctl` binary, in its own scope (so
//! parallel tests never see each other's containers) with its own state
//! file, against images built locally from the project's rmcp fixture.
//! Containers are removed by a drop guard. No Docker, no pass: the fixture
//! build fails the test.

#[path = "support/drift.rs"]
mod drift;
#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/fleet.rs"]
mod fleet;

use fleet::{Fleet, Run, docker_lines, eventually, http, images, stdio};

use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The fixture on the host, over HTTP on a free loopback port: an external
/// server, reached by URL, with no container.
fn external_server(name: &str) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(fixture::fixture_binary())
        .args([
            "--transport",
            "http",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--name",
            name,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("external server");
    (child, port)
}

/// Reads `child`'s stdout and stderr to their end on threads. The receiver
/// gets their text once both are closed, which happens when the child exits
/// (mcpctl starts no processes that could inherit them).
fn closed_pipes(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::Read;
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        let _ = sender.send(format!("--- stdout\n{stdout}--- stderr\n{stderr}"));
    });
    receiver
}

/// The fixture on the host at `port`, answering only requests that carry
/// `Authorization: Bearer <token>`.
fn bearer_server(name: &str, port: u16, token: &str) -> std::process::Child {
    Command::new(fixture::fixture_binary())
        .args(["--transport", "http", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--name", name, "--require-bearer", token])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bearer server")
}

#[test]
fn a_new_fleet_converges_and_then_plans_no_changes() {
    let (v1, _) = images();
    let f = Fleet::new("converge");
    f.write("a.yaml", &stdio("alpha", 2, v1, ""));
    f.write("b.yaml", &http("beta", 1, v1));
    // An external server: the fixture on the host, reached by URL, no container.
    let (mut external, port) = external_server("gamma");
    let url = format!("http://127.0.0.1:{port}/mcp");
    f.write(
        "c.yaml",
        &format!("apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: gamma}}\nspec:\n  external: {{url: \"{url}\"}}\n"),
    );
    let r = f.apply();
    assert!(r.stdout.contains("converged"), "{r}");
    f.assert_exact(&[("alpha", 2), ("beta", 1)]);

    let instances = f.instances();
    let beta = instances
        .iter()
        .find(|i| i["server"] == "beta")
        .expect("beta");
    let endpoint = beta["endpoint"].as_str().expect("endpoint");
    assert!(
        endpoint.starts_with("http://127.0.0.1:") && endpoint.ends_with("/mcp"),
        "{endpoint}"
    );
    let gamma: Vec<&Value> = instances
        .iter()
        .filter(|i| i["server"] == "gamma")
        .collect();
    assert_eq!(gamma.len(), 1);
    assert_eq!(gamma[0]["status"], "RUNNING");
    assert_eq!(gamma[0]["endpoint"], url.as_str());
    assert_eq!(
        gamma[0]["mcp"]["server_name"], "gamma",
        "promoted only on a real handshake"
    );
    let _ = external.kill();
    let _ = external.wait();
    // Every container instance proved itself over MCP, over its own transport.
    for i in instances.iter().filter(|i| i["server"] != "gamma") {
        let transport = if i["server"] == "beta" {
            "streamable-http"
        } else {
            "stdio"
        };
        assert_eq!(i["mcp"]["transport"], transport, "{i}");
        assert_eq!(i["mcp"]["server_name"], "mcp-fixture", "{i}");
        // Probing detached cleanly: a stdio server saw no EOF and did not restart.
        assert_eq!(i["restarts"], 0, "{i}");
    }
    for (id, (cid, state)) in f.containers() {
        assert_eq!(state, "running", "{id}");
        let restarts =
            fixture::docker(&["inspect", "-f", "{{.RestartCount}}", &cid]).expect("inspect");
        assert_eq!(restarts.trim(), "0", "{id} restarted after being probed");
    }
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
        assert!(beta.get(key).is_some(), "get instances -o json lacks {key}");
    }

    // Design §5: labels, name, restart policy, loopback-only port, open stdin.
    let alpha_id = f.ids_of("alpha")[0].clone();
    let (cid, _) = f.containers()[&alpha_id].clone();
    let inspect: Value =
        serde_json::from_str(&fixture::docker(&["inspect", &cid]).expect("inspect")).expect("json");
    let c = &inspect[0];
    assert_eq!(c["Name"], format!("/mcpctl-alpha-{alpha_id}"));
    assert_eq!(c["Config"]["Labels"]["io.mcpctl.managed"], "true");
    assert_eq!(c["Config"]["Labels"]["io.mcpctl.server"], "alpha");
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(c["Config"]["OpenStdin"], true);
    let beta_cid = f.containers()[beta["id"].as_str().unwrap()].0.clone();
    let ports = fixture::docker(&["port", &beta_cid, "8080/tcp"]).expect("port");
    assert!(
        ports.trim().starts_with("127.0.0.1:"),
        "published beyond loopback: {ports}"
    );

    let r = f.run(&["plan", "fleet", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "second plan not empty: {r}");
    let r = f.run(&["get", "servers", "-o", "json"]);
    let servers: Value = serde_json::from_str(&r.stdout).expect("servers json");
    let alpha = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "alpha")
        .expect("alpha");
    assert_eq!(
        (alpha["desired"].as_u64(), alpha["ready"].as_u64()),
        (Some(2), Some(2))
    );
}

#[test]
fn a_container_removed_out_of_band_is_replaced() {
    let (v1, _) = images();
    let f = Fleet::new("rmf");
    f.write("a.yaml", &stdio("alpha", 2, v1, ""));
    f.apply();
    let victim = f.ids_of("alpha")[0].clone();
    let (cid, _) = f.containers()[&victim].clone();
    fixture::docker(&["rm", "-f", &cid]).expect("rm -f");
    let r = f.run(&["plan", "fleet"]);
    assert!(r.stdout.contains("container not found"), "{r}");
    f.apply();
    f.assert_exact(&[("alpha", 2)]);
    assert!(!f.ids_of("alpha").contains(&victim));
}

#[test]
fn a_killed_container_is_demoted_then_promoted() {
    let (v1, _) = images();
    let f = Fleet::new("kill");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    f.apply();
    let id = f.ids_of("alpha")[0].clone();
    let (cid, _) = f.containers()[&id].clone();
    // Kill the server process from the host: Docker sees a crash and restarts
    // it under the restart policy, as it would a real crash.
    let pid = fixture::docker(&["inspect", "-f", "{{.State.Pid}}", &cid]).expect("pid");
    let status = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill");
    assert!(status.success());
    eventually(
        "docker to restart the container",
        Duration::from_secs(20),
        || {
            let n = fixture::docker(&["inspect", "-f", "{{.RestartCount}}", &cid]).ok()?;
            (n.trim() != "0").then_some(())
        },
    );
    let r = f.run(&["plan", "fleet", "-o", "json"]);
    let plan: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r}"));
    let actions = plan["actions"].as_array().expect("actions");
    assert!(
        actions
            .iter()
            .any(|a| a["action"] == "demote" && a["instance"] == id.as_str()),
        "no demote after a restart: {r}"
    );
    f.apply();
    f.assert_exact(&[("alpha", 1)]);
    let inst = &f.instances()[0];
    assert_eq!(
        inst["id"],
        id.as_str(),
        "the instance must survive its restart"
    );
    assert!(inst["restarts"].as_u64() >= Some(1), "{inst}");
    let r = f.run(&["describe", "instance", &id]);
    assert!(
        r.stdout.contains("STARTING") && r.stdout.contains("restart"),
        "history lacks the demotion: {r}"
    );
}

#[test]
fn scaling_down_removes_the_oldest_and_up_starts_more() {
    let (v1, _) = images();
    let f = Fleet::new("scale");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    f.apply();
    f.write("a.yaml", &stdio("alpha", 3, v1, ""));
    f.apply();
    f.assert_exact(&[("alpha", 3)]);
    // Ids are ULIDs, ordered by creation time to the millisecond (created_at
    // shows only seconds), so sorted ids are oldest first.
    let mut by_age = f.ids_of("alpha");
    by_age.sort();
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    f.apply();
    f.assert_exact(&[("alpha", 1)]);
    let survivor = f.ids_of("alpha")[0].clone();
    assert_eq!(
        survivor, by_age[2],
        "the two oldest go, the newest stays: {by_age:?}"
    );
    f.write("a.yaml", &stdio("alpha", 3, v1, ""));
    f.apply();
    f.assert_exact(&[("alpha", 3)]);
    assert!(f.ids_of("alpha").contains(&survivor));
}

#[test]
fn a_changed_image_rolls_without_dropping_below_replicas() {
    let (v1, v2) = images();
    let f = Fleet::new("roll");
    f.write("a.yaml", &stdio("alpha", 2, v1, ""));
    f.apply();
    let before: BTreeSet<String> = f.ids_of("alpha").into_iter().collect();
    f.write("a.yaml", &stdio("alpha", 2, v2, ""));
    let r = f.run(&["plan", "fleet"]);
    assert!(
        r.stdout.contains("-image: mcpctl-fixture:test")
            && r.stdout.contains("+image: mcpctl-fixture:v2"),
        "{r}"
    );

    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        let state = f.state();
        let scope = f.scope.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let out = Command::new(env!("CARGO_BIN_EXE_mcpctl"))
                    .args(["get", "instances", "-o", "json"])
                    .env("MCPCTL_STATE", &state)
                    .env("MCPCTL_SCOPE", &scope)
                    .output()
                    .expect("get");
                if let Ok(v) = serde_json::from_slice::<Vec<Value>>(&out.stdout) {
                    samples.push(v.iter().filter(|i| i["status"] == "RUNNING").count());
                }
            }
            samples
        })
    };
    let r = f.run(&["apply", "fleet", "--timeout", "90s"]);
    done.store(true, Ordering::SeqCst);
    let samples = sampler.join().expect("sampler");
    assert_eq!(r.code, 0, "{r}");
    assert!(
        samples.len() >= 5,
        "too few samples to mean anything: {samples:?}"
    );
    assert!(
        samples.iter().all(|&n| n >= 2),
        "RUNNING dropped below replicas during the rollout: {samples:?}"
    );
    f.assert_exact(&[("alpha", 2)]);
    let after: BTreeSet<String> = f.ids_of("alpha").into_iter().collect();
    assert!(before.is_disjoint(&after), "every instance is replaced");
    let hashes: BTreeSet<String> = f
        .instances()
        .iter()
        .map(|i| i["spec_hash"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(hashes.len(), 1);
}

#[test]
fn a_deleted_file_is_pruned_and_zero_replicas_keeps_the_definition() {
    let (v1, _) = images();
    let f = Fleet::new("prune");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    f.write("b.yaml", &stdio("beta", 2, v1, ""));
    f.apply();
    f.delete("b.yaml");
    f.write("a.yaml", &stdio("alpha", 0, v1, ""));
    f.apply();
    assert!(f.containers().is_empty(), "{:?}", f.containers());
    assert!(f.instances().is_empty());
    let r = f.run(&["get", "servers", "-o", "json"]);
    let servers: Vec<Value> = serde_json::from_str(&r.stdout).expect("json");
    let names: Vec<&str> = servers.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["alpha"], "alpha is kept at 0, beta is forgotten");
    assert_eq!(servers[0]["desired"], 0);
}

#[test]
fn a_crashing_server_errors_with_its_crash_line_and_backs_off() {
    let (v1, _) = images();
    let f = Fleet::new("crash");
    f.write(
        "a.yaml",
        "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: alpha}\nspec:\n  image: mcpctl-fixture:test\n  command: [\"--transport\", \"stdio\", \"--delay-start\", \"1000\", \"--crash-after\", \"300\"]\n  readiness: {timeout: 4s}\n",
    );
    let _ = v1;
    let r = f.run(&["apply", "fleet", "--timeout", "12s"]);
    assert_eq!(r.code, 1, "a crash loop must not converge: {r}");
    let instances = f.instances();
    let failed = instances
        .iter()
        .find(|i| i["status"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR: {instances:#?}"));
    let reason = failed["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("crashing on purpose"),
        "reason lacks the crash line: {reason}"
    );
    assert!(
        reason.contains("back-off"),
        "back-off not visible: {reason}"
    );
    assert!(r.stderr.contains("back-off"), "{r}");
    let r = f.run(&["get", "instances"]);
    assert!(r.stdout.contains("back-off"), "{r}");
}

#[test]
fn a_missing_image_errors_with_the_daemons_message() {
    images();
    let f = Fleet::new("noimage");
    f.write(
        "a.yaml",
        &stdio("alpha", 1, "mcpctl-missing-image:nope", ""),
    );
    let r = f.run(&["apply", "fleet", "--timeout", "5s"]);
    assert_eq!(r.code, 1, "{r}");
    let instances = f.instances();
    assert_eq!(instances.len(), 1, "{instances:#?}");
    assert_eq!(instances[0]["status"], "ERROR");
    let reason = instances[0]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("pull mcpctl-missing-image:nope"),
        "{reason}"
    );
    assert!(
        reason.contains("not present locally and cannot be pulled")
            && reason.contains("`docker images`"),
        "{reason}"
    );
    assert!(f.containers().is_empty());
}

/// A typo in the image: the reason (and `apply`'s verdict) names the local
/// image it was probably meant to be, beside the engine's own words.
#[test]
fn a_misspelled_image_suggests_the_nearest_local_one() {
    let (v1, _) = images();
    assert_eq!(v1, "mcpctl-fixture:test");
    let f = Fleet::new("typo");
    f.write("a.yaml", &stdio("alpha", 1, "mcpctl-fixtur:test", ""));
    let r = f.run(&["apply", "fleet", "--timeout", "5s"]);
    assert_eq!(r.code, 1, "{r}");
    let hint = "did you mean mcpctl-fixture:test? check the name and tag with `docker images`";
    assert!(r.stderr.contains(hint), "the verdict lacks the hint: {r}");
    let instances = f.instances();
    assert_eq!(instances.len(), 1, "{instances:#?}");
    assert_eq!(instances[0]["status"], "ERROR");
    let reason = instances[0]["reason"].as_str().unwrap_or("");
    assert!(reason.contains(hint), "{reason}");
    // The engine's own message is kept after the hint, never dropped.
    let engine = reason
        .split_once("the engine said: ")
        .map(|(_, e)| e.trim())
        .unwrap_or("");
    assert!(!engine.is_empty(), "{reason}");
    assert!(f.containers().is_empty());
}

#[test]
fn an_unresolvable_secret_is_a_plan_error_and_makes_no_container() {
    let (v1, _) = images();
    let f = Fleet::new("secret");
    let mut spec = stdio("alpha", 1, v1, "");
    spec.push_str("  env:\n    TOKEN:\n      secretRef: {name: nope, key: token}\n");
    f.write("a.yaml", &spec);
    let r = f.run(&["apply", "fleet", "--timeout", "5s"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr.contains("secret nope/token") && r.stderr.contains("server alpha"),
        "{r}"
    );
    assert!(f.containers().is_empty());
    assert!(f.instances().is_empty());
}

#[test]
fn secrets_reach_the_container_but_not_the_state() {
    let (v1, _) = images();
    let f = Fleet::new("secretok");
    let mut spec = stdio("alpha", 1, v1, "");
    spec.push_str("  env:\n    TOKEN:\n      secretRef: {name: gh, key: token}\n");
    f.write("a.yaml", &spec);
    std::fs::create_dir_all(f.dir.path().join("secrets/gh")).expect("mkdir");
    std::fs::write(f.dir.path().join("secrets/gh/token"), "pa55w0rd-xyz").expect("secret");
    f.apply();
    let id = f.ids_of("alpha")[0].clone();
    let (cid, _) = f.containers()[&id].clone();
    let env = fixture::docker(&["inspect", "-f", "{{json .Config.Env}}", &cid]).expect("env");
    assert!(env.contains("TOKEN=pa55w0rd-xyz"), "{env}");

    // The applied spec is where the value would land: its canonical form
    // holds the secret, as the keyed digest of its value.
    let store = mcpctl::state::Store::new(f.state());
    let source = mcpctl::source::dir::read(&[f.dir.path().join("fleet")]).expect("source");
    let servers = mcpctl::spec::load(&source.files).expect("spec");
    let digests = mcpctl::secrets::Resolver::with_env(None, |_| Some("pa55w0rd-xyz".to_owned()))
        .resolve(&servers)
        .expect("secrets")
        .digests(&store.digest_key().expect("digest key"));
    let digest = digests.values().next().expect("one secret");
    let applied = &store.load().expect("load").servers["alpha"].canonical;
    assert!(
        applied.contains(&format!("value: (sensitive {digest})")),
        "{applied}"
    );
    // Redb stores values as written, so a leak would be these very bytes.
    let state = std::fs::read(f.state()).expect("state");
    assert!(
        !state.windows(12).any(|w| w == b"pa55w0rd-xyz"),
        "secret stored in plaintext"
    );
}

/// An external server behind a bearer token that comes from the secrets
/// directory: it converges, the token shows in no output and no stored
/// byte, and rotating it plans a replace whose diff shows only digests.
#[test]
fn an_external_server_with_a_header_secret_converges_without_showing_it() {
    let f = Fleet::new("extauth");
    let old = "lin_api_OLD-0123456789abcdef";
    let new = "lin_api_NEW-fedcba9876543210";
    let never_shown = |what: &str, text: &str| {
        for token in [old, new] {
            assert!(!text.contains(token), "{what} shows the token:\n{text}");
        }
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut server = bearer_server("linear", port, old);
    std::fs::create_dir_all(f.dir.path().join("secrets/linear")).expect("mkdir");
    std::fs::write(
        f.dir.path().join("secrets/linear/token"),
        format!("{old}\n"),
    )
    .expect("secret");
    f.write(
        "linear.yaml",
        &format!(
            "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: linear}}\nspec:\n  external:\n    url: http://127.0.0.1:{port}/mcp\n    headers:\n      Authorization: {{secretRef: {{name: linear, key: token}}, prefix: \"Bearer \"}}\n      X-Team: platform\n  readiness: {{timeout: 60s}}\n"
        ),
    );

    let r = f.run(&["plan", "fleet"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("+ start   linear"), "{r}");
    never_shown("plan", &r.to_string());
    let r = f.run(&["plan", "fleet", "-o", "json", "--out", "plan.json"]);
    assert_eq!(r.code, 0, "{r}");
    never_shown("plan -o json", &r.to_string());
    let saved = std::fs::read_to_string(f.dir.path().join("plan.json")).expect("saved plan");
    never_shown("the saved plan", &saved);

    let r = f.apply();
    assert!(r.stdout.contains("converged"), "{r}");
    never_shown("apply", &r.to_string());
    let r = f.run(&["get", "instances", "-o", "json"]);
    never_shown("get instances -o json", &r.to_string());
    let instances: Vec<Value> = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(instances.len(), 1, "{instances:#?}");
    assert_eq!(instances[0]["status"], "RUNNING");
    assert_eq!(
        instances[0]["mcp"]["server_name"], "linear",
        "promoted on a handshake the token let through"
    );
    let first = instances[0]["id"].as_str().expect("id").to_owned();
    let r = f.run(&["describe", "instance", &first]);
    assert_eq!(r.code, 0, "{r}");
    never_shown("describe", &r.to_string());

    // Rotation: a new spec hash, a replace whose diff shows digests only.
    std::fs::write(f.dir.path().join("secrets/linear/token"), new).expect("rotate");
    let r = f.run(&["plan", "fleet"]);
    assert_eq!(r.code, 0, "{r}");
    never_shown("the rotation's plan", &r.to_string());
    assert!(r.stdout.contains("~ replace linear"), "{r}");
    let digest_lines: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains("value: (sensitive "))
        .collect();
    assert_eq!(digest_lines.len(), 2, "{r}");
    assert!(
        digest_lines[0].trim_start().starts_with('-')
            && digest_lines[1].trim_start().starts_with('+'),
        "{r}"
    );

    // The server still wants the old token: the replacement is not ready,
    // and says why without saying what it sent.
    let r = f.run(&["apply", "fleet", "--timeout", "5s"]);
    assert_eq!(r.code, 1, "{r}");
    never_shown("the rotation's apply", &r.to_string());
    let r = f.run(&["get", "instances", "-o", "json"]);
    never_shown("get instances", &r.to_string());
    let instances: Vec<Value> = serde_json::from_str(&r.stdout).expect("json");
    let replacement = instances
        .iter()
        .find(|i| i["id"] != first.as_str())
        .expect("a replacement");
    assert_eq!(replacement["status"], "STARTING", "{instances:#?}");
    assert_eq!(
        replacement["reason"], "HTTP 401 from /mcp: check the server's headers",
        "{instances:#?}"
    );

    // The server takes the new token: the replace completes.
    let _ = server.kill();
    let _ = server.wait();
    let mut server = bearer_server("linear", port, new);
    // `plan` probes STARTING instances with their headers too.
    let replacement = replacement["id"].as_str().expect("id").to_owned();
    eventually(
        "a plan that promotes the replacement",
        Duration::from_secs(20),
        || {
            let r = f.run(&["plan", "fleet"]);
            never_shown("plan", &r.to_string());
            r.stdout
                .lines()
                .any(|l| l.contains("promote") && l.contains(&replacement))
                .then_some(())
        },
    );
    let r = f.apply();
    never_shown("the last apply", &r.to_string());
    let instances = f.instances();
    assert_eq!(instances.len(), 1, "{instances:#?}");
    assert_eq!(instances[0]["status"], "RUNNING");
    assert_ne!(instances[0]["id"], first.as_str());
    let _ = server.kill();
    let _ = server.wait();

    let state = std::fs::read(f.state()).expect("state");
    for token in [old, new] {
        assert!(
            !state.windows(token.len()).any(|w| w == token.as_bytes()),
            "the state holds a token"
        );
    }

    // A token in the URL never gets as far as a plan.
    f.write(
        "leaky.yaml",
        "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: leaky}\nspec:\n  external: {url: \"https://mcp.example.com/mcp?token=abc123\"}\n",
    );
    let r = f.run(&["validate", "fleet"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr
            .contains("`spec.external.url` holds a secret: the query parameter `token`"),
        "{r}"
    );
    assert!(r.stderr.contains("send the secret in `headers`"), "{r}");
}

#[test]
fn kill_9_during_apply_never_leaves_duplicates_or_orphans() {
    let (v1, v2) = images();
    let f = Fleet::new("crashsafe");
    let servers = ["s0", "s1", "s2", "s3", "s4"];
    // A small deterministic generator: the kill moments differ per iteration but repeat per run.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Until 20 kills have landed while an apply was at work (a kill after the
    // apply finished by itself proves nothing, so it does not count).
    let wanted_kills = 20;
    let mut killed_mid_apply = 0;
    let mut i = 0;
    while killed_mid_apply < wanted_kills {
        assert!(
            i < 2 * wanted_kills,
            "only {killed_mid_apply} of {i} kills landed mid-apply"
        );
        // Ten instances throughout. Images alternate, so every apply is a rolling
        // replace to interrupt; every fourth one also scales s0 down and s1 up.
        let image = if i % 2 == 0 { v1 } else { v2 };
        let replicas_of = |n: usize| -> usize {
            match (i % 4 == 3, n) {
                (true, 0) => 1,
                (true, 1) => 3,
                _ => 2,
            }
        };
        for (n, s) in servers.iter().enumerate() {
            let replicas = replicas_of(n);
            f.write(&format!("{s}.yaml"), &stdio(s, replicas as u32, image, ""));
        }
        let mut child = f.spawn(&["apply", "fleet", "--timeout", "60s"]);
        let delay = Duration::from_millis(next() % 2000);
        // Kill at a chosen moment, or not at all if the apply finishes by
        // itself first: its pipes close when it exits, which ends the wait.
        let exited = closed_pipes(&mut child);
        let finished_first = exited.recv_timeout(delay).ok();
        if finished_first.is_none() {
            // SIGKILL: no handler runs, no lock is released by hand, nothing is flushed.
            let _ = child.kill();
        }
        let status = child.wait().expect("wait");
        // The status tells which came first, even if the apply finished
        // between the timeout and the kill.
        let mid_apply = status.signal() == Some(9);
        if !mid_apply {
            let output = finished_first
                .or_else(|| exited.recv().ok())
                .unwrap_or_default();
            assert!(status.success(), "iteration {i}: apply failed: {output}");
        }
        killed_mid_apply += usize::from(mid_apply);

        let r = f.run(&["apply", "fleet", "--timeout", "60s"]);
        assert_eq!(r.code, 0, "iteration {i}: recovery apply failed: {r}");
        let want: Vec<(&str, usize)> = servers
            .iter()
            .enumerate()
            .map(|(n, s)| (*s, replicas_of(n)))
            .collect();
        assert_eq!(want.iter().map(|(_, n)| n).sum::<usize>(), 10);
        f.assert_exact(&want);
        // Nothing unlabelled or unknown: every container named like this
        // test's servers carries its scope label and belongs to the state.
        let labelled: BTreeSet<String> =
            f.containers().values().map(|(id, _)| id.clone()).collect();
        let named = docker_lines(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            "name=^/mcpctl-s[0-9]-",
        ]);
        let named: BTreeSet<String> = named.iter().map(|id| id[..12].to_owned()).collect();
        assert_eq!(
            named, labelled,
            "iteration {i}: containers outside the state"
        );
        let how = if mid_apply {
            "killed mid-apply"
        } else {
            "apply finished first"
        };
        eprintln!("crash-safety iteration {i}: {how} at {delay:?}; recovered to exact counts");
        i += 1;
    }
    eprintln!(
        "crash safety: {killed_mid_apply} applies killed mid-flight in {i} iterations, all recovered"
    );
}

#[test]
fn a_second_applier_is_refused_while_reads_keep_working() {
    let (v1, _) = images();
    let f = Fleet::new("twoappliers");
    // A slow starter keeps the first apply busy waiting for readiness.
    f.write(
        "a.yaml",
        &stdio("alpha", 1, v1, ", \"--delay-start\", \"3000\""),
    );
    let first = f.spawn(&["apply", "fleet", "--timeout", "60s"]);
    eventually(
        "the first apply to take the lock",
        Duration::from_secs(20),
        || {
            let lock = f.state().with_extension("redb.lock");
            std::fs::read_to_string(lock)
                .ok()
                .filter(|s| s.contains("pid"))
                .map(|_| ())
        },
    );
    let second = f.run(&["apply", "fleet", "--timeout", "60s"]);
    assert_eq!(second.code, 1, "{second}");
    assert!(
        second.stderr.contains("locked by another applier") && second.stderr.contains("pid"),
        "{second}"
    );
    let get = f.run(&["get", "instances"]);
    assert_eq!(get.code, 0, "get must work during an apply: {get}");
    let plan = f.run(&["plan", "fleet", "--refresh=false"]);
    assert_eq!(plan.code, 0, "plan must work during an apply: {plan}");
    let out = first.wait_with_output().expect("first apply");
    let first: Run = out.into();
    assert_eq!(first.code, 0, "{first}");
    f.assert_exact(&[("alpha", 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_stream_reports_our_units_only() {
    use futures_util::StreamExt;
    use mcpctl::model::{EventKind, Runners};
    use mcpctl::runtime::Runtime;
    use mcpctl::runtime::docker::{DockerConfig, DockerRuntime};
    let (v1, _) = images();
    let f = Fleet::new("events");
    let other = Fleet::new("events-other");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    other.write("a.yaml", &stdio("intruder", 1, v1, ""));
    let rt = DockerRuntime::connect(DockerConfig::from_env(&f.scope, Runners::default()))
        .await
        .expect("docker");
    let mut events = Box::pin(rt.events());
    // Apply from another thread while this one listens.
    let (mine, theirs) = tokio::task::spawn_blocking(move || {
        other.apply();
        f.apply();
        let id = f.ids_of("alpha")[0].clone();
        let cid = f.containers()[&id].0.clone();
        fixture::docker(&["rm", "-f", &cid]).expect("rm -f");
        (f, other)
    })
    .await
    .expect("apply thread");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(seen
        .iter()
        .any(|(_, k): &(String, EventKind)| *k == EventKind::Started)
        && seen.iter().any(|(_, k)| *k == EventKind::Removed))
    {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no start and destroy events within 20 s; saw {seen:?}"))
            .expect("stream open")
            .expect("event");
        if let mcpctl::model::Watched::Event(ev) = ev {
            seen.push((ev.server.clone(), ev.kind));
        }
    }
    assert!(
        seen.iter().all(|(server, _)| server == "alpha"),
        "another scope's events leaked in: {seen:?}"
    );
    drop((mine, theirs));
}

#[test]
fn a_saved_plan_applies_once_and_is_refused_when_stale() {
    let (v1, _) = images();
    let f = Fleet::new("saved");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    let r = f.run(&["plan", "fleet", "--out", "plan.json"]);
    assert_eq!(r.code, 0, "{r}");
    let r = f.run(&["apply", "plan.json", "--timeout", "60s"]);
    assert_eq!(r.code, 0, "applying a fresh saved plan: {r}");
    f.assert_exact(&[("alpha", 1)]);

    // The world moves on after `plan`: the source changes, and so does the state.
    let r = f.run(&["plan", "fleet", "--out", "plan.json"]);
    assert_eq!(r.code, 0, "{r}");
    f.write("a.yaml", &stdio("alpha", 2, v1, ""));
    let r = f.run(&["apply", "plan.json", "--timeout", "60s"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr.contains("stale") && r.stderr.contains("the source changed"),
        "{r}"
    );

    // A container removed out of band is a change in the runtime, not in the files.
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    let r = f.run(&["plan", "fleet", "--out", "plan.json"]);
    assert_eq!(r.code, 0, "{r}");
    let id = f.ids_of("alpha")[0].clone();
    fixture::docker(&["rm", "-f", &f.containers()[&id].0]).expect("rm -f");
    let r = f.run(&["apply", "plan.json", "--timeout", "60s"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("the runtime changed"), "{r}");
}

#[test]
fn a_changed_runner_image_makes_a_saved_plan_stale() {
    let f = Fleet::new("runner");
    f.write(
        "p.yaml",
        "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: fetch}\nspec:\n  package: {name: mcp-server-fetch, runtime: python, version: \"2025.4.7\"}\n",
    );
    let r = f.run(&["plan", "fleet", "--out", "plan.json"]);
    assert_eq!(r.code, 0, "{r}");
    let r = Run::from(
        f.command(&["apply", "plan.json", "--timeout", "10s"])
            .env("MCPCTL_PYTHON_RUNNER_IMAGE", "registry.example/py-runner:2")
            .output()
            .expect("run mcpctl"),
    );
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr.contains("stale") && r.stderr.contains("runner image"),
        "{r}"
    );
    assert!(f.containers().is_empty(), "a stale plan starts nothing");
}

#[test]
fn logs_show_a_servers_output() {
    let (v1, _) = images();
    let f = Fleet::new("logs");
    f.write("a.yaml", &stdio("alpha", 2, v1, ""));
    f.apply();
    let r = f.run(&["logs", "alpha", "--tail", "5"]);
    assert_eq!(r.code, 0, "{r}");
    // Two instances: each line is tagged with its instance.
    for id in f.ids_of("alpha") {
        assert!(
            r.stdout
                .contains(&format!("[{id}] mcp-fixture: serving stdio")),
            "{r}"
        );
    }
    let id = f.ids_of("alpha")[0].clone();
    let r = f.run(&["logs", &id[..20]]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.starts_with("mcp-fixture: serving stdio"), "{r}");
}

#[test]
fn apply_and_logs_into_a_closed_pipe_end_quietly() {
    let (v1, _) = images();
    let f = Fleet::new("closed-pipe");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    // Read ends closed before mcpctl starts, so its first write fails with EPIPE.
    let closed = || {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        writer
    };
    let applied = f
        .command(&["apply", "fleet", "--timeout", "60s"])
        .stdout(closed())
        .output()
        .expect("run mcpctl apply");
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert_eq!(applied.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    f.assert_exact(&[("alpha", 1)]);

    // `-f` would follow the running container for ever: only the closed
    // pipe can end it.
    let mut logs = f
        .command(&["logs", "alpha", "-f"])
        .stdout(closed())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mcpctl");
    let status = eventually("logs -f to end", Duration::from_secs(20), || {
        let exited = logs.try_wait().expect("poll mcpctl logs");
        if exited.is_none() && !f.containers().values().any(|(_, s)| s == "running") {
            panic!("the container stopped, which would end `-f` anyway");
        }
        exited
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(logs.stderr.as_mut().expect("piped"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn a_slow_starter_is_starting_until_it_answers_then_running() {
    let (v1, _) = images();
    let f = Fleet::new("slow");
    f.write(
        "a.yaml",
        &http("alpha", 1, v1).replace(
            "[\"--transport\", \"http\"]",
            "[\"--transport\", \"http\", \"--delay-start\", \"4000\"]",
        ),
    );
    let apply = f.spawn(&["apply", "fleet", "--timeout", "60s"]);
    let starting = eventually(
        "the instance to be recorded STARTING with a probe error",
        Duration::from_secs(20),
        || {
            let i = f.instances().into_iter().next()?;
            (i["status"] == "STARTING"
                && i["reason"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty() && r != "created"))
            .then_some(i)
        },
    );
    assert!(starting["mcp"].is_null(), "{starting}");
    let out: Run = apply.wait_with_output().expect("apply").into();
    assert_eq!(out.code, 0, "{out}");
    let i = &f.instances()[0];
    assert_eq!(i["status"], "RUNNING");
    assert_eq!(i["mcp"]["transport"], "streamable-http");
}

#[test]
fn a_server_that_refuses_mcp_never_becomes_running() {
    let (v1, _) = images();
    let f = Fleet::new("refuse");
    f.write(
        "a.yaml",
        &http("alpha", 1, v1)
            .replace(
                "[\"--transport\", \"http\"]",
                "[\"--transport\", \"http\", \"--refuse\"]",
            )
            .replace("timeout: 20s", "timeout: 3s"),
    );
    let r = f.run(&["apply", "fleet", "--timeout", "8s"]);
    assert_eq!(r.code, 1, "{r}");
    let i = &f.instances()[0];
    assert_eq!(i["status"], "ERROR", "{i}");
    let reason = i["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("not ready after 3s: HTTP 503 from /mcp"),
        "{reason}"
    );
}

/// A wrong `port`: the server listens on 3000, the spec says 8080. The
/// readiness failure names the port tried and where it was reached, quotes
/// the server's own line about where it listens, and says what to set.
#[test]
fn a_wrong_port_is_named_beside_the_one_the_servers_log_gives() {
    let (v1, _) = images();
    let f = Fleet::new("port");
    f.write(
        "a.yaml",
        &http("alpha", 1, v1)
            .replace(
                "[\"--transport\", \"http\"]",
                "[\"--transport\", \"http\", \"--listen\", \"0.0.0.0:3000\"]",
            )
            .replace("timeout: 20s", "timeout: 3s"),
    );
    let r = f.run(&["apply", "fleet", "--timeout", "8s"]);
    assert_eq!(r.code, 1, "{r}");
    let i = &f.instances()[0];
    assert_eq!(i["status"], "ERROR", "{i}");
    let reason = i["reason"].as_str().unwrap_or("");
    let tried = "on port 8080 (the spec's `port`, reached at 127.0.0.1:";
    let hint = "its log says \"mcp-fixture: listening on 0.0.0.0:3000/mcp\": set `port: 3000`";
    assert!(reason.contains("not ready after 3s: "), "{reason}");
    assert!(reason.contains(tried), "{reason}");
    assert!(reason.ends_with(hint), "{reason}");
    assert!(r.stderr.contains(hint), "the verdict lacks the hint: {r}");
}

#[test]
fn three_failed_liveness_probes_demote_a_running_server() {
    let (v1, _) = images();
    let f = Fleet::new("liveness");
    let (mut external, port) = external_server("gamma");
    f.write(
        "gamma.yaml",
        &format!(
            "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: gamma}}\nspec:\n  external: {{url: \"http://127.0.0.1:{port}/mcp\"}}\n  readiness: {{timeout: 60s, period: 500ms}}\n"
        ),
    );
    // A server that never gets ready keeps apply waiting, and waiting passes watch liveness.
    f.write(
        "alpha.yaml",
        &http("alpha", 1, v1)
            .replace(
                "[\"--transport\", \"http\"]",
                "[\"--transport\", \"http\", \"--refuse\"]",
            )
            .replace("timeout: 20s", "timeout: 120s"),
    );
    let r = f.run(&["apply", "fleet", "--timeout", "4s"]);
    assert_eq!(r.code, 1, "{r}");
    let gamma = f
        .instances()
        .into_iter()
        .find(|i| i["server"] == "gamma")
        .expect("gamma");
    assert_eq!(gamma["status"], "RUNNING", "{gamma}");

    let _ = external.kill();
    let _ = external.wait();
    let r = f.run(&["apply", "fleet", "--timeout", "8s"]);
    assert_eq!(r.code, 1, "{r}");
    let gamma = f
        .instances()
        .into_iter()
        .find(|i| i["server"] == "gamma")
        .expect("gamma");
    assert_eq!(gamma["status"], "STARTING", "{gamma}");
    let r = f.run(&["describe", "instance", gamma["id"].as_str().expect("id")]);
    assert!(
        r.stdout
            .contains("liveness probe failed 3 times in a row: connection refused"),
        "{r}"
    );
}

/// The pass never waits on readiness: while alpha rolls to instances that
/// take 5 s to answer MCP, beta's container, removed out of band, is back
/// within 2 s (before the pass was shared, it waited for the whole replace).
/// `scripts/bench-repair` measures the same thing with a release build.
#[test]
fn a_removal_during_a_slow_rolling_replace_is_repaired_within_2_s() {
    let (v1, _) = images();
    let f = Fleet::new("repair");
    f.write("a.yaml", &stdio("alpha", 3, v1, ""));
    f.write("b.yaml", &stdio("beta", 1, v1, ""));
    f.apply();
    let running_beta = || -> Vec<String> {
        docker_lines(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=io.mcpctl.scope={}", f.scope),
            "--filter",
            "label=io.mcpctl.server=beta",
            "--filter",
            "status=running",
        ])
    };
    let old_beta = running_beta();
    assert_eq!(old_beta.len(), 1);

    f.write(
        "a.yaml",
        &stdio("alpha", 3, v1, ", \"--delay-start\", \"5000\""),
    );
    let mut child = f.spawn(&["apply", "fleet", "--timeout", "90s"]);
    // A fourth alpha container: the first replacement is starting.
    eventually(
        "the rolling replace to start",
        Duration::from_secs(20),
        || {
            let alpha = docker_lines(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=io.mcpctl.scope={}", f.scope),
                "--filter",
                "label=io.mcpctl.server=alpha",
            ]);
            (alpha.len() >= 4).then_some(())
        },
    );
    let removed = Instant::now();
    fixture::docker(&["rm", "-f", &old_beta[0]]).expect("rm -f beta");
    let repaired = loop {
        let now = running_beta();
        if now.len() == 1 && now != old_beta {
            break removed.elapsed();
        }
        assert!(
            removed.elapsed() < Duration::from_secs(30),
            "beta was not repaired within 30 s"
        );
        // Measuring against the engine: a short poll keeps the figure fine-grained.
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("beta repaired {repaired:?} after docker rm -f, during alpha's rolling replace");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the rolling replace should still be under way, or this measured nothing"
    );
    assert!(
        repaired < Duration::from_secs(2),
        "repair took {repaired:?}: the pass waited for the replace"
    );
    let out = child.wait_with_output().expect("apply");
    let r = Run::from(out);
    assert_eq!(r.code, 0, "{r}");
    f.assert_exact(&[("alpha", 3), ("beta", 1)]);
}

/// A server that answers MCP, then exits 500 ms after every start, over and
/// over under `unless-stopped`: never RUNNING, a crash loop after
/// `maxRestarts`, and `apply --wait` says so and exits 1 long before the
/// readiness timeout.
#[test]
fn a_server_that_crashes_after_answering_is_a_crash_loop_not_running() {
    let (v1, _) = images();
    let f = Fleet::new("crashloop");
    f.write(
        "a.yaml",
        &format!(
            "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: alpha}}\nspec:\n  image: {v1}\n  command: [\"--transport\", \"stdio\", \"--crash-after\", \"500\"]\n  readiness: {{timeout: 60s}}\n"
        ),
    );
    let started = Instant::now();
    let r = f.run(&["apply", "fleet", "--timeout", "120s"]);
    let took = started.elapsed();
    assert_eq!(r.code, 1, "a crash loop is not converged: {r}");
    assert!(
        took < Duration::from_secs(30),
        "apply took {took:?}: it should give up well within the 60 s readiness timeout"
    );
    assert!(
        r.stderr.contains("alpha 0/1 RUNNING") && r.stderr.contains("crash loop: exit 3"),
        "the error names the server and why: {r}"
    );
    let instances = f.instances();
    let failed = instances
        .iter()
        .find(|i| i["status"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR instance: {instances:#?}"));
    let reason = failed["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("crash loop: exit 3, ")
            && reason.contains("restarts: mcp-fixture: crashing on purpose after 500 ms"),
        "{reason}"
    );
    assert!(
        failed["restarts"].as_u64().is_some_and(|n| n >= 3),
        "get shows the restarts: {failed:#}"
    );
    assert!(
        instances.iter().all(|i| i["status"] != "RUNNING"),
        "it never counted as RUNNING: {instances:#?}"
    );
    let r = f.run(&["get", "instances"]);
    assert!(r.stdout.contains("crash loop"), "{r}");
}

/// Text a server supplies is untrusted: a server that logs its own token,
/// wrapped in terminal escape sequences, as its last words before crashing.
/// Neither the token nor an escape character reaches the state file, `get`,
/// `describe` or `apply`'s output; the rest of the line does.
#[test]
fn a_servers_leaked_secret_and_escapes_are_never_stored_or_printed() {
    let (v1, _) = images();
    let f = Fleet::new("leak");
    let secret = "tok-3f9a1c77e2-NEVER-SHOW";
    let dir = f.dir.path().join("secrets/app");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("token"), secret).expect("secret");
    f.write(
        "a.yaml",
        &format!(
            "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: alpha}}\nspec:\n  image: {v1}\n  command: [\"--transport\", \"stdio\", \"--crash-after\", \"300\", \"--leak-env\", \"APP_TOKEN\"]\n  env:\n    APP_TOKEN: {{secretRef: {{name: app, key: token}}}}\n  readiness: {{timeout: 20s}}\n"
        ),
    );
    let apply = f.run(&["apply", "fleet", "--timeout", "60s"]);
    assert_eq!(apply.code, 1, "{apply}");
    let instances = f.instances();
    let failed = instances
        .iter()
        .find(|i| i["status"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR instance: {instances:#?}"));
    let reason = failed["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("mcp-fixture: token (sensitive) rejected"),
        "the line is kept, the secret is not: {reason}"
    );
    let id = failed["id"].as_str().expect("id").to_owned();
    let outputs = [
        ("apply", apply.to_string()),
        (
            "get -o json",
            f.run(&["get", "instances", "-o", "json"]).to_string(),
        ),
        ("get", f.run(&["get", "instances"]).to_string()),
        (
            "describe",
            f.run(&["describe", "instance", &id]).to_string(),
        ),
    ];
    for (what, text) in &outputs {
        assert!(!text.contains(secret), "{what} printed the secret:\n{text}");
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{what} printed an escape sequence:\n{text:?}"
        );
    }
    let state = std::fs::read(f.state()).expect("state file");
    assert!(
        !state.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the state file holds the secret"
    );
    assert!(
        !state.windows(2).any(|w| w == b"\x1b]" || w == b"\x1b["),
        "the state file holds an escape sequence"
    );
    // The secret really reached the server, so its absence above means something.
    let logs = f.run(&["logs", "alpha", "--tail", "50"]);
    assert!(
        logs.stdout.contains(secret) || logs.stderr.contains(secret) || {
            let raw = fixture::docker(&["logs", &f.containers()[&id].0]).unwrap_or_default();
            raw.contains(secret)
        },
        "the fixture never logged the secret: {logs}"
    );
}

/// `get` and `describe` show the runtime as it is now beside the record:
/// a container restarted behind mcpctl's back, one removed out of band. With
/// `--refresh=false` they show the record alone. Neither writes the state.
#[test]
fn get_and_describe_show_live_drift_without_an_apply() {
    let (v1, _) = images();
    let f = Fleet::new("live");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    f.write("b.yaml", &stdio("beta", 1, v1, ""));
    f.apply();
    let alpha = f.ids_of("alpha")[0].clone();
    let beta = f.ids_of("beta")[0].clone();
    let containers = f.containers();
    let pid =
        fixture::docker(&["inspect", "-f", "{{.State.Pid}}", &containers[&alpha].0]).expect("pid");
    assert!(
        Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .expect("kill")
            .success()
    );
    eventually("docker to restart alpha", Duration::from_secs(20), || {
        let n = fixture::docker(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Running}}",
            &containers[&alpha].0,
        ])
        .ok()?;
        (n.trim() == "1 true").then_some(())
    });
    fixture::docker(&["rm", "-f", &containers[&beta].0]).expect("rm -f beta");
    let state_before = std::fs::read(f.state()).expect("state");

    drift::assert_live_drift(
        |args| {
            let r = f.run(args);
            (r.code, r.stdout)
        },
        &alpha,
        &beta,
    );
    let r = f.run(&["get", "instances", "-o", "json"]);
    let rows: Vec<Value> = serde_json::from_str(&r.stdout).expect("json");
    let a = rows
        .iter()
        .find(|i| i["id"] == alpha.as_str())
        .expect("alpha");
    assert_eq!(a["restarts"], 1, "restarts shows what the runtime knows");

    let r = f.run(&["get", "instances", "-o", "json", "--refresh=false"]);
    let rows: Vec<Value> = serde_json::from_str(&r.stdout).expect("json");
    assert!(rows.iter().all(|i| i["live"].is_null()), "{r}");
    let r = f.run(&["get", "instances", "--refresh=false"]);
    assert!(!r.stdout.contains("container"), "{r}");

    assert_eq!(
        std::fs::read(f.state()).expect("state"),
        state_before,
        "get and describe only look"
    );
}

/// A stdio server's stdout carries MCP: every probe adds JSON-RPC lines to
/// its logs. `logs` leaves them out, so what the server itself wrote on
/// either stream is not buried, and `--protocol` shows them too.
#[test]
fn logs_leave_out_a_stdio_servers_protocol_unless_asked() {
    let (v1, _) = images();
    let f = Fleet::new("protocol");
    f.write(
        "a.yaml",
        &stdio("alpha", 1, v1, ", \"--log-stdout\", \"2\""),
    );
    f.apply();
    let id = f.ids_of("alpha")[0].clone();
    let (cid, _) = f.containers()[&id].clone();
    let raw = Command::new("docker")
        .args(["logs", &cid])
        .output()
        .expect("docker logs");
    assert!(
        String::from_utf8_lossy(&raw.stdout).contains("\"jsonrpc\":\"2.0\""),
        "the probes left protocol lines on stdout, or this tests nothing"
    );

    let r = f.run(&["logs", "alpha"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.contains("mcp-fixture log 1/2: warming up")
            && r.stdout.contains("mcp-fixture log 2/2: warming up"),
        "the server's own stdout lines stay: {r}"
    );
    assert!(
        r.stdout.contains("mcp-fixture: serving stdio"),
        "stderr lines stay: {r}"
    );
    assert!(!r.stdout.contains("jsonrpc"), "protocol left in: {r}");

    // The tail counts the server's lines, not the protocol's.
    // Which of the server's last lines comes last is up to the engine: it
    // stamps stdout and stderr as they arrive, and the fixture writes both
    // at once. Either is right; a protocol line or nothing is wrong.
    let r = f.run(&["logs", "alpha", "--tail", "1"]);
    assert_eq!(r.stdout.lines().count(), 1, "{r}");
    assert!(
        r.stdout.contains("serving stdio") || r.stdout.contains("log 2/2: warming up"),
        "{r}"
    );

    let r = f.run(&["logs", "alpha", "--protocol"]);
    assert!(r.stdout.contains("\"jsonrpc\":\"2.0\""), "{r}");
    assert!(r.stdout.contains("warming up"), "{r}");
}

/// Time is an input too: a readiness deadline that passes between `plan`
/// and `apply PLANFILE` changes what a plan made now would do, so the saved
/// plan is refused, naming the difference, and nothing is done.
#[test]
fn a_saved_plan_that_time_overtook_is_refused_naming_the_difference() {
    let (v1, _) = images();
    let f = Fleet::new("overtaken");
    f.write(
        "a.yaml",
        &format!(
            "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: alpha}}\nspec:\n  image: {v1}\n  command: [\"--transport\", \"stdio\", \"--delay-start\", \"120000\"]\n  readiness: {{timeout: 3s}}\n"
        ),
    );
    let r = f.run(&["apply", "fleet", "--no-wait"]);
    assert_eq!(r.code, 0, "{r}");
    let id = f.ids_of("alpha")[0].clone();
    let r = f.run(&["plan", "fleet", "--out", "plan.json", "--detailed-exitcode"]);
    assert_eq!(
        r.code, 0,
        "STARTING and within its deadline: nothing to do yet: {r}"
    );
    // Once the deadline has passed, a fresh plan fails the instance.
    eventually(
        "the readiness deadline to pass",
        Duration::from_secs(20),
        || {
            let r = f.run(&["plan", "fleet", "-o", "json"]);
            r.stdout.contains("\"fail\"").then_some(())
        },
    );
    let state_before = std::fs::read(f.state()).expect("state");
    let r = f.run(&["apply", "plan.json", "--timeout", "20s"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr.contains("stale") && r.stderr.contains(&format!("+ fail alpha {id}")),
        "{r}"
    );
    assert_eq!(
        std::fs::read(f.state()).expect("state"),
        state_before,
        "a refused plan changes nothing"
    );
    assert_eq!(f.instances()[0]["status"], "STARTING");
}
