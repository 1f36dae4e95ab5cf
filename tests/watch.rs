//! `mcpctl watch` end to end, against the real Docker engine, following a
//! local git repository (a bare repo made in the test, `file://`) or a
//! directory: commits start and prune servers; an invalid commit changes
//! nothing and makes `/healthz` say where; a wrong path never deletes the
//! fleet; force-pushes are followed; an editor's atomic save is one pass;
//! containers removed out of band come back through the events stream;
//! SIGTERM is a clean exit; `/metrics` parses and moves; `--dry-run` only
//! reports; suspension holds; the webhook needs its signature.

#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/watching.rs"]
mod watching;

use fleet::{Fleet, docker_lines, eventually, images, stdio};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use watching::Watching;

const WEBHOOK_SECRET: &str = "whsec-test-7c1e";

/// A local git repository: a bare one to fetch from, and a clone to commit in.
struct Repo {
    bare: PathBuf,
    work: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.test")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.test")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs (.ci/run installs it)");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Repo {
    fn new(root: &Path) -> Repo {
        let bare = root.join("fleet.git");
        let work = root.join("work");
        std::fs::create_dir_all(&bare).expect("mkdir");
        git(&bare, &["init", "--bare", "-b", "main"]);
        git(
            root,
            &["clone", "-q", bare.to_str().expect("utf-8"), "work"],
        );
        git(&work, &["checkout", "-q", "-b", "main"]);
        Repo { bare, work }
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// Writes `files` (path, text; `None` deletes), commits and pushes; the new SHA.
    fn commit(&self, message: &str, files: &[(&str, Option<&str>)]) -> String {
        for (path, text) in files {
            let p = self.work.join(path);
            match text {
                Some(t) => {
                    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                    std::fs::write(&p, t).expect("write");
                }
                None => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.work, &["push", "-q", "-f", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// `mcpctl watch ARGS`, with the webhook's secret set, once it listens.
fn watching(f: &Fleet, args: &[&str]) -> Watching {
    Watching::start(f, args, &[("MCPCTL_WEBHOOK_SECRET", WEBHOOK_SECRET)])
}

/// What these tests read of `/healthz`.
trait Healthz {
    fn health(&self) -> (u16, Value);
    fn wait_healthy(&self, revision: &str);
}

impl Healthz for Watching {
    fn health(&self) -> (u16, Value) {
        let r = self.get("/healthz").expect("healthz");
        (
            r.status,
            serde_json::from_str(&r.body).expect("healthz json"),
        )
    }

    fn wait_healthy(&self, revision: &str) {
        eventually(
            &format!("healthy at {revision}"),
            Duration::from_secs(60),
            || {
                let (status, body) = self.health();
                (status == 200 && body["revision"] == revision).then_some(())
            },
        );
    }
}

fn signature(body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn running(f: &Fleet, server: &str) -> usize {
    f.instances()
        .iter()
        .filter(|i| i["server"] == server && i["status"] == "RUNNING")
        .count()
}

/// Waits (up to a minute: images may still be building) until `server`
/// has exactly `n` RUNNING instances.
fn await_running(f: &Fleet, server: &str, n: usize) {
    eventually(
        &format!("{server} to have {n} RUNNING"),
        Duration::from_secs(60),
        || (running(f, server) == n).then_some(()),
    );
}

fn containers_of(f: &Fleet, server: &str) -> Vec<String> {
    docker_lines(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.mcpctl.scope={}", f.scope),
        "--filter",
        &format!("label=io.mcpctl.server={server}"),
    ])
}

/// A counter of `/metrics`, by its full name (labels included).
fn metric(w: &Watching, name: &str) -> f64 {
    let text = w.get("/metrics").expect("metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the watch has made `n` more passes: evidence, not a sleep,
/// that it has looked at the world again.
fn passes(w: &Watching, n: f64) {
    let start = metric(w, "mcpctl_passes_total");
    eventually(&format!("{n} more passes"), Duration::from_secs(60), || {
        (metric(w, "mcpctl_passes_total") >= start + n).then_some(())
    });
}

fn accepted(w: &Watching) -> usize {
    w.log().matches("revision accepted").count()
}

#[test]
fn commits_start_and_prune_servers_and_an_invalid_one_changes_nothing() {
    let (v1, _) = images();
    let f = Fleet::new("w-git");
    let repo = Repo::new(f.dir.path());
    let first = repo.commit(
        "alpha",
        &[("mcp/alpha.yaml", Some(&stdio("alpha", 1, v1, "")))],
    );
    let w = watching(
        &f,
        &[
            "--git",
            &repo.url(),
            "--ref",
            "main",
            "--path",
            "mcp",
            "--interval",
            "1s",
            "--resync",
            "1s",
        ],
    );
    w.wait_healthy(&first);
    await_running(&f, "alpha", 1);

    let second = repo.commit(
        "beta",
        &[("mcp/beta.yaml", Some(&stdio("beta", 1, v1, "")))],
    );
    w.wait_healthy(&second);
    await_running(&f, "beta", 1);

    // An invalid file, and alpha's file deleted in the same commit: the
    // revision is refused whole, nothing is pruned or replaced, and
    // /healthz names the file, the line and the commit.
    let containers = f.containers();
    let bad = repo.commit(
        "break beta, drop alpha",
        &[
            (
                "mcp/beta.yaml",
                Some("apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: beta}\nspec:\n  image: x\n  replica: 2\n"),
            ),
            ("mcp/alpha.yaml", None),
        ],
    );
    let health = eventually("degraded health", Duration::from_secs(30), || {
        let (status, body) = w.health();
        (status == 503).then_some(body)
    });
    let reasons = health["reasons"].to_string();
    assert!(
        reasons.contains("mcp/beta.yaml:6:3") && reasons.contains(&bad[..7]),
        "healthz names the file, line and commit: {health:#}"
    );
    assert_eq!(
        health["revision"],
        second.as_str(),
        "the last good revision stays"
    );
    passes(&w, 3.0);
    assert_eq!(f.containers(), containers, "nothing was pruned or replaced");

    // A fixing commit recovers; alpha's removal now takes effect.
    let fixed = repo.commit(
        "fix beta",
        &[("mcp/beta.yaml", Some(&stdio("beta", 1, v1, "")))],
    );
    w.wait_healthy(&fixed);
    eventually("alpha to be pruned", Duration::from_secs(60), || {
        containers_of(&f, "alpha").is_empty().then_some(())
    });
    assert_eq!(running(&f, "beta"), 1);
    let history = f.run(&["history", "-o", "json"]);
    let entries: Vec<Value> = serde_json::from_str(&history.stdout).expect("history json");
    assert!(
        entries.iter().any(|e| e["revision"] == bad.as_str()
            && e["outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with("watch: refused"))),
        "the refused commit is in the history: {history}"
    );
    let log = w.log();
    let status = w.stop();
    assert!(status.success(), "{status:?}\n{log}");
}

#[test]
fn an_emptied_or_wrong_path_never_deletes_the_fleet() {
    let (v1, _) = images();
    let f = Fleet::new("w-empty");
    let repo = Repo::new(f.dir.path());
    let first = repo.commit(
        "alpha",
        &[("mcp/alpha.yaml", Some(&stdio("alpha", 1, v1, "")))],
    );
    let args = [
        "--git",
        &repo.url(),
        "--path",
        "mcp",
        "--interval",
        "1s",
        "--resync",
        "1s",
    ];
    let w = watching(&f, &args);
    w.wait_healthy(&first);
    await_running(&f, "alpha", 1);
    let containers = f.containers();

    // Every spec file gone from the path: refused, not a prune of everything.
    repo.commit(
        "empty the path",
        &[("mcp/alpha.yaml", None), ("mcp/README.md", Some("moved"))],
    );
    let health = eventually("degraded health", Duration::from_secs(30), || {
        let (status, body) = w.health();
        (status == 503).then_some(body)
    });
    assert!(
        health["reasons"].to_string().contains("no servers"),
        "{health:#}"
    );
    passes(&w, 3.0);
    assert_eq!(f.containers(), containers);
    assert!(w.stop().success());

    // A wrong --path: the source cannot be read, and nothing is touched.
    let w = watching(
        &f,
        &[
            "--git",
            &repo.url(),
            "--path",
            "nope",
            "--interval",
            "1s",
            "--resync",
            "1s",
        ],
    );
    let health = eventually("degraded health", Duration::from_secs(30), || {
        let (status, body) = w.health();
        (status == 503 && body["reasons"].to_string().contains("nope")).then_some(body)
    });
    assert!(health["revision"].is_null(), "{health:#}");
    assert_eq!(f.containers(), containers);
    assert_eq!(running(&f, "alpha"), 1);
    assert!(w.stop().success());
}

#[test]
fn a_force_push_to_an_older_commit_is_followed_and_recorded() {
    let (v1, _) = images();
    let f = Fleet::new("w-force");
    let repo = Repo::new(f.dir.path());
    let older = repo.commit("alpha", &[("alpha.yaml", Some(&stdio("alpha", 1, v1, "")))]);
    let newer = repo.commit("beta", &[("beta.yaml", Some(&stdio("beta", 1, v1, "")))]);
    let w = watching(&f, &["--git", &repo.url(), "--interval", "1s"]);
    w.wait_healthy(&newer);
    await_running(&f, "beta", 1);

    git(&repo.work, &["reset", "-q", "--hard", &older]);
    git(&repo.work, &["push", "-q", "-f", "origin", "main"]);
    w.wait_healthy(&older);
    eventually("beta to be pruned", Duration::from_secs(60), || {
        containers_of(&f, "beta").is_empty().then_some(())
    });
    assert_eq!(running(&f, "alpha"), 1);
    let history = f.run(&["history", "-o", "json"]);
    assert!(
        history.stdout.contains(&format!("force-push from {newer}")),
        "the force-push is recorded: {history}"
    );
    assert!(w.stop().success());
}

#[test]
fn an_editors_atomic_save_is_one_revision_with_the_change_applied() {
    let (v1, _) = images();
    let f = Fleet::new("w-dir");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    let w = watching(&f, &["fleet"]);
    await_running(&f, "alpha", 1);
    eventually("the first revision", Duration::from_secs(10), || {
        (accepted(&w) == 1).then_some(())
    });

    // As editors save: write a temporary file, then rename it over the old one.
    let dir = f.dir.path().join("fleet");
    std::fs::write(dir.join(".a.yaml.swp"), stdio("alpha", 2, v1, "")).expect("write");
    std::fs::rename(dir.join(".a.yaml.swp"), dir.join("a.yaml")).expect("rename");
    await_running(&f, "alpha", 2);
    // Let any stray reports arrive, then count.
    passes(&w, 2.0);
    assert_eq!(accepted(&w), 2, "one save, one revision:\n{}", w.log());
    assert!(w.stop().success());
}

#[test]
fn a_container_removed_out_of_band_comes_back_through_the_events_stream() {
    let (v1, _) = images();
    let f = Fleet::new("w-events");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    // No resync for an hour: only the events stream can bring it back soon.
    let w = watching(&f, &["fleet", "--resync", "1h", "--interval", "1h"]);
    await_running(&f, "alpha", 1);
    let old = containers_of(&f, "alpha");
    let removed = Instant::now();
    fixture::docker(&["rm", "-f", &old[0]]).expect("rm -f");
    let back = eventually("a new alpha container", Duration::from_secs(30), || {
        let now = containers_of(&f, "alpha");
        (now.len() == 1 && now != old).then(|| removed.elapsed())
    });
    eprintln!("replaced {back:?} after docker rm -f");
    assert!(
        back < Duration::from_secs(10),
        "{back:?}: the resync is an hour away"
    );
    assert!(w.stop().success());
}

#[test]
fn sigterm_during_an_apply_exits_cleanly_and_the_next_start_converges() {
    let (v1, _) = images();
    let f = Fleet::new("w-term");
    for s in ["s0", "s1", "s2"] {
        f.write(
            &format!("{s}.yaml"),
            &stdio(s, 2, v1, ", \"--delay-start\", \"3000\""),
        );
    }
    let w = watching(&f, &["fleet"]);
    // Actions are under way (containers exist), and nothing is RUNNING yet.
    eventually("the first containers", Duration::from_secs(30), || {
        (!f.containers().is_empty()).then_some(())
    });
    assert_eq!(running(&f, "s0") + running(&f, "s1") + running(&f, "s2"), 0);
    let status = w.stop();
    assert!(status.success(), "a clean exit on SIGTERM: {status:?}");
    assert!(
        f.state().exists()
            && !std::fs::read_to_string(format!("{}.lock", f.state().display()))
                .unwrap_or_default()
                .contains("pid"),
        "the applier lock is released"
    );

    let w = watching(&f, &["fleet"]);
    eventually(
        "convergence after the restart",
        Duration::from_secs(90),
        || {
            ["s0", "s1", "s2"]
                .iter()
                .all(|s| running(&f, s) == 2)
                .then_some(())
        },
    );
    assert!(w.stop().success());
    f.assert_exact(&[("s0", 2), ("s1", 2), ("s2", 2)]);
}

#[test]
fn metrics_parse_as_prometheus_text_and_their_counters_move() {
    let (v1, _) = images();
    let f = Fleet::new("w-metrics");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    let w = watching(&f, &["fleet", "--resync", "1s"]);
    await_running(&f, "alpha", 1);
    let reply = w.get("/metrics").expect("metrics");
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.contains("text")),
        "{reply:?}"
    );
    // The exposition format: `# HELP`, `# TYPE`, `# EOF`, or
    // `name{label="value",...} number`.
    let mut samples = std::collections::BTreeMap::new();
    for line in reply.body.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line == "# EOF",
                "{line}"
            );
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let bare = name.split('{').next().expect("name");
        assert!(
            bare.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if let Some(labels) = name.strip_prefix(bare) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels: {line}"
            );
        }
        samples.insert(name.to_owned(), value);
    }
    for name in [
        "mcpctl_passes_total",
        "mcpctl_actions_total{kind=\"start\",result=\"ok\"}",
        "mcpctl_instances{status=\"RUNNING\"}",
        "mcpctl_healthy",
        "mcpctl_plan_duration_seconds_count",
    ] {
        assert!(
            samples.contains_key(name),
            "{name} missing:\n{}",
            reply.body
        );
    }
    assert_eq!(samples["mcpctl_instances{status=\"RUNNING\"}"], 1.0);
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("mcpctl_applied_revision{revision=\"sha256:"))
    );
    let before = metric(&w, "mcpctl_actions_total{kind=\"start\",result=\"ok\"}");
    f.write("b.yaml", &stdio("beta", 1, v1, ""));
    await_running(&f, "beta", 1);
    assert_eq!(
        metric(&w, "mcpctl_actions_total{kind=\"start\",result=\"ok\"}"),
        before + 1.0
    );
    passes(&w, 2.0);
    assert!(w.stop().success());
}

#[test]
fn dry_run_reports_drift_and_leaves_the_fleet_exactly_as_it_is() {
    let (v1, _) = images();
    let f = Fleet::new("w-dry");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    f.write("b.yaml", &stdio("beta", 1, v1, ""));
    f.apply();
    // Drift: a spec change, and a container removed out of band.
    f.write("a.yaml", &stdio("alpha", 3, v1, ""));
    let beta = containers_of(&f, "beta");
    fixture::docker(&["rm", "-f", &beta[0]]).expect("rm -f");
    let containers = f.containers();
    let state = std::fs::read(f.state()).expect("state");

    let w = watching(&f, &["fleet", "--dry-run", "--resync", "1s"]);
    let health = eventually("drift to be reported", Duration::from_secs(30), || {
        let (status, body) = w.health();
        (status == 200 && body["drift"].as_u64().is_some_and(|d| d > 0)).then_some(body)
    });
    assert_eq!(health["dry_run"], true);
    passes(&w, 3.0);
    assert!(
        metric(&w, "mcpctl_drift_actions") >= 3.0,
        "{}",
        w.get("/metrics").expect("m").body
    );
    assert!(
        w.log().contains("drift (left alone: --dry-run)"),
        "{}",
        w.log()
    );
    assert_eq!(
        f.containers(),
        containers,
        "nothing was started, removed or replaced"
    );
    assert_eq!(
        std::fs::read(f.state()).expect("state"),
        state,
        "nothing was written"
    );
    assert!(w.stop().success());
}

#[test]
fn a_suspended_servers_container_stays_removed_until_resumed() {
    let (v1, _) = images();
    let f = Fleet::new("w-suspend");
    f.write("a.yaml", &stdio("alpha", 1, v1, ""));
    let w = watching(&f, &["fleet", "--resync", "1s"]);
    await_running(&f, "alpha", 1);
    let r = f.run(&["suspend", "alpha"]);
    assert_eq!(r.code, 0, "{r}");
    let r = f.run(&["get", "servers", "-o", "json"]);
    assert!(r.stdout.contains("\"suspended\": true"), "{r}");
    let old = containers_of(&f, "alpha");
    fixture::docker(&["rm", "-f", &old[0]]).expect("rm -f");
    passes(&w, 4.0);
    assert!(
        containers_of(&f, "alpha").is_empty(),
        "a suspended server is left alone"
    );
    let r = f.run(&["resume", "alpha"]);
    assert_eq!(r.code, 0, "{r}");
    eventually("alpha back after resume", Duration::from_secs(60), || {
        (running(&f, "alpha") == 1 && !containers_of(&f, "alpha").is_empty()).then_some(())
    });
    assert!(w.stop().success());
}

#[test]
fn the_webhook_syncs_at_once_when_signed_and_refuses_anything_else() {
    let (v1, _) = images();
    let f = Fleet::new("w-hook");
    let repo = Repo::new(f.dir.path());
    let first = repo.commit("alpha", &[("alpha.yaml", Some(&stdio("alpha", 1, v1, "")))]);
    // An hour between fetches: only the webhook can bring the next commit soon.
    let w = watching(&f, &["--git", &repo.url(), "--interval", "1h"]);
    w.wait_healthy(&first);
    let second = repo.commit("beta", &[("beta.yaml", Some(&stdio("beta", 1, v1, "")))]);
    let body = serde_json::json!({"ref": "refs/heads/main", "after": second});
    let text = body.to_string();
    let post = |headers: &[(&str, &str)]| {
        fixture::http_request(
            w.addr,
            "POST",
            "/hooks/sync",
            headers,
            Some(&body),
            Duration::from_secs(5),
        )
        .expect("webhook call")
    };
    assert_eq!(post(&[]).status, 401, "unsigned");
    let wrong = signature(&format!("{text} "));
    assert_eq!(
        post(&[("X-Hub-Signature-256", &wrong)]).status,
        401,
        "signed over another body"
    );
    passes(&w, 1.0);
    assert_eq!(
        w.health().1["revision"],
        first.as_str(),
        "refused calls change nothing"
    );
    let good = signature(&text);
    let r = post(&[("X-Hub-Signature-256", &good)]);
    assert_eq!(r.status, 202, "{r:?}");
    w.wait_healthy(&second);
    await_running(&f, "beta", 1);
    assert!(w.stop().success());
}
