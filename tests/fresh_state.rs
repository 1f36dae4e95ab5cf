//! State you can lose, against the real Docker engine: a fresh state file
//! adopts the running fleet (no container replaced, a server with secrets
//! included), `watch` restarted with its state deleted restarts nothing,
//! two appliers with different state files never act at once, and a state
//! file is refused by another runtime or scope.
//!
//! Every test drives the built `mcpctl` in its own scope, with containers
//! and the scope's volumes (lease, digest key) removed by a drop guard.

#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/watching.rs"]
mod watching;

use fleet::{Fleet, Run, eventually, http, images, stdio};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use watching::Watching;

/// Each container of the scope by instance: (container id, start time,
/// restart count). A container replaced, restarted or recreated changes it.
fn lives(f: &Fleet) -> BTreeMap<String, (String, String, String)> {
    f.containers()
        .into_iter()
        .map(|(inst, (cid, _))| {
            let how = fixture::docker(&[
                "inspect",
                "-f",
                "{{.State.StartedAt}} {{.RestartCount}}",
                &cid,
            ])
            .expect("inspect");
            let mut how = how.split_whitespace().map(str::to_owned);
            let started = how.next().unwrap_or_default();
            let restarts = how.next().unwrap_or_default();
            (inst, (cid, started, restarts))
        })
        .collect()
}

/// `mcpctl ARGS --state STATE` in the fleet's workspace.
fn with_state(f: &Fleet, state: &Path, args: &[&str]) -> Run {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--state", state.to_str().expect("utf-8 path")]);
    f.run(&all)
}

fn fresh_state(f: &Fleet, name: &str) -> PathBuf {
    f.dir.path().join(name).join("state.redb")
}

/// A fleet of three servers, five instances: stdio, streamable HTTP, and
/// one whose environment holds a secret (its spec hash has a keyed digest).
fn three_servers(f: &Fleet) {
    let (v1, _) = images();
    f.write("a.yaml", &stdio("alpha", 2, v1, ""));
    f.write("b.yaml", &http("beta", 1, v1));
    let mut secret = stdio("gamma", 2, v1, "");
    secret.push_str("  env:\n    TOKEN:\n      secretRef: {name: gh, key: token}\n");
    f.write("c.yaml", &secret);
    std::fs::create_dir_all(f.dir.path().join("secrets/gh")).expect("mkdir");
    std::fs::write(f.dir.path().join("secrets/gh/token"), "s3cr3t-value-42").expect("secret");
}

#[test]
fn a_fresh_state_adopts_the_running_fleet_and_replaces_nothing() {
    let f = Fleet::new("fresh");
    three_servers(&f);
    f.apply();
    let before = lives(&f);
    assert_eq!(before.len(), 5, "{before:#?}");

    // A CI runner, or a watch pod whose emptyDir went: no state at all.
    let fresh = fresh_state(&f, "ci");
    let plan = with_state(&f, &fresh, &["plan", "fleet", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "adoptions are changes: {plan}");
    assert_eq!(
        plan.stdout.matches("= adopt").count(),
        5,
        "every unit adopted: {plan}"
    );
    assert!(
        plan.stdout.contains("found running, not in the state"),
        "{plan}"
    );
    for never in ["+ start", "- remove", "~ replace"] {
        assert!(!plan.stdout.contains(never), "{never} in: {plan}");
    }
    assert!(
        !plan.stdout.contains("s3cr3t") && !plan.stderr.contains("s3cr3t"),
        "{plan}"
    );
    // plan writes nothing: the fresh file gets no record of what it saw.
    let instances = with_state(&f, &fresh, &["get", "instances", "-o", "json"]);
    assert_eq!(instances.code, 0, "{instances}");
    assert_eq!(instances.stdout.trim(), "[]", "{instances}");

    let apply = with_state(&f, &fresh, &["apply", "fleet", "--timeout", "60s"]);
    assert_eq!(apply.code, 0, "{apply}");
    assert!(apply.stdout.contains("5 adopted"), "{apply}");
    assert!(
        !apply.stdout.contains("started") && !apply.stdout.contains("removed"),
        "{apply}"
    );
    assert_eq!(lives(&f), before, "a container was replaced or restarted");

    // Statuses are rebuilt: every instance RUNNING in the fresh state, and
    // a plan with it has nothing to do.
    let got = with_state(&f, &fresh, &["get", "instances", "-o", "json"]);
    let got: Vec<serde_json::Value> = serde_json::from_str(&got.stdout).expect("json");
    assert_eq!(got.len(), 5, "{got:#?}");
    assert!(got.iter().all(|i| i["status"] == "RUNNING"), "{got:#?}");
    let again = with_state(&f, &fresh, &["plan", "fleet", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{again}");
    // And the old state file still agrees with the world: nothing moved.
    let old = f.run(&["plan", "fleet", "--detailed-exitcode"]);
    assert_eq!(old.code, 0, "{old}");
}

#[test]
fn watch_restarted_with_its_state_deleted_restarts_nothing() {
    let f = Fleet::new("watchlost");
    three_servers(&f);
    let w = Watching::start(&f, &["fleet", "--resync", "1h"], &[]);
    eventually("the fleet to converge", Duration::from_secs(60), || {
        let i = f.instances();
        (i.len() == 5 && i.iter().all(|i| i["status"] == "RUNNING")).then_some(())
    });
    assert!(w.stop().success());
    let before = lives(&f);
    assert_eq!(before.len(), 5, "{before:#?}");

    std::fs::remove_file(f.state()).expect("delete the state file");
    let w = Watching::start(&f, &["fleet", "--resync", "1h"], &[]);
    eventually(
        "every unit adopted and RUNNING",
        Duration::from_secs(60),
        || {
            let i = f.instances();
            (i.len() == 5 && i.iter().all(|i| i["status"] == "RUNNING")).then_some(())
        },
    );
    eventually("healthy", Duration::from_secs(20), || {
        w.get("/healthz")
            .ok()
            .filter(|r| r.status == 200)
            .map(|_| ())
    });
    assert_eq!(lives(&f), before, "a container was replaced or restarted");
    // The adoptions are counted (which also proves the metric's name), and
    // nothing was started or removed.
    let actions = |kind: &str| {
        w.metric(&format!(
            "mcpctl_actions_total{{kind=\"{kind}\",result=\"ok\"}}"
        ))
    };
    assert_eq!(actions("adopt"), 5.0);
    assert_eq!(actions("start"), 0.0);
    assert_eq!(actions("remove"), 0.0);
    assert_eq!(actions("replace"), 0.0);
    assert!(w.stop().success());
}

#[test]
fn two_appliers_with_different_state_files_never_act_at_once() {
    let (v1, _) = images();
    let f = Fleet::new("twostates");
    // A slow starter keeps the first apply at work for a few seconds.
    f.write(
        "a.yaml",
        &stdio("alpha", 1, v1, ", \"--delay-start\", \"3000\""),
    );
    let first = f.spawn(&["apply", "fleet", "--timeout", "60s"]);
    eventually(
        "the first apply to hold the lease",
        Duration::from_secs(20),
        || {
            let volumes = fleet::docker_lines(&[
                "volume",
                "ls",
                "-q",
                "--filter",
                &format!("label=io.mcpctl.lease={}", f.scope),
            ]);
            (!volumes.is_empty()).then_some(())
        },
    );
    let other = fresh_state(&f, "other");
    let second = with_state(&f, &other, &["apply", "fleet", "--timeout", "60s"]);
    assert_eq!(second.code, 1, "{second}");
    assert!(
        second
            .stderr
            .contains("another applier is acting on the docker, scope")
            && second.stderr.contains("mcpctl apply fleet")
            && second.stderr.contains("pid "),
        "the holder is named: {second}"
    );
    // A watch with yet another state file waits instead, and says why.
    let w = Watching::start(
        &f,
        &[
            "fleet",
            "--state",
            fresh_state(&f, "w").to_str().expect("utf-8"),
        ],
        &[],
    );
    let first: Run = first.wait_with_output().expect("first apply").into();
    assert_eq!(first.code, 0, "{first}");
    f.assert_exact(&[("alpha", 1)]);
    // Once the apply released it, the watch takes the lease over and
    // adopts what the apply made, instead of making its own.
    eventually("the watch to be healthy", Duration::from_secs(30), || {
        w.get("/healthz")
            .ok()
            .filter(|r| r.status == 200)
            .map(|_| ())
    });
    assert_eq!(f.containers().len(), 1, "{:#?}", f.containers());
    let log = w.log();
    assert!(
        log.contains("waiting for the applier lease") && log.contains("mcpctl apply fleet"),
        "the watch waited, naming the holder:\n{log}"
    );
    assert!(w.stop().success());
}

#[test]
fn a_state_file_refuses_another_runtime_and_scope() {
    let (v1, _) = images();
    let f = Fleet::new("owner");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    f.apply();
    // The Kubernetes runtime with the Docker fleet's state: refused before
    // any plan, so it never plans to remove the Docker fleet.
    let k8s = f.run(&[
        "plan",
        "fleet",
        "--refresh=false",
        "--runtime",
        "kubernetes",
    ]);
    assert_eq!(k8s.code, 1, "{k8s}");
    let belongs = format!("caches another fleet (docker, scope {})", f.scope);
    assert!(k8s.stderr.contains(&belongs), "{k8s}");
    assert!(
        k8s.stderr
            .contains(&format!("--runtime docker --scope {}", f.scope)),
        "{k8s}"
    );
    assert!(!k8s.stdout.contains("remove"), "{k8s}");
    // get shows the fleet beside the runtime: refused the same way, rather
    // than showing every instance as gone.
    let get = f.run(&["get", "instances", "--runtime", "kubernetes"]);
    assert_eq!(get.code, 1, "{get}");
    assert!(get.stderr.contains(&belongs), "{get}");
    // Another scope on the same engine: refused too, before touching anything.
    let scoped = f.run(&["apply", "fleet", "--scope", "someone-else"]);
    assert_eq!(scoped.code, 1, "{scoped}");
    assert!(scoped.stderr.contains(&belongs), "{scoped}");
    f.assert_exact(&[("alpha", 1)]);
}
