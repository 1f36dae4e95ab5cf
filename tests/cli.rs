//! The CLI as users run it: the built binary, its exit codes, stdout and
//! stderr, snapshotted through one helper so each test reads like a spec.
//! Nothing here needs a container runtime (plans use `--refresh=false`),
//! except `apply_into_a_closed_stream_never_panics`, which applies to Docker.

#[path = "support/upstream.rs"]
mod upstream;

use mcpctl::model::{AppliedSpec, Endpoint, Instance, InstanceId, Runners, Status, Timestamp};
use mcpctl::plan::Desired;
use mcpctl::secrets::Resolver;
use mcpctl::source::dir;
use mcpctl::state::Store;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A temporary workspace: spec files, a state file, a secrets dir, and a
/// scope of its own, so that commands that reach the engine (an `apply`
/// that fails before planning still takes the scope's lease) never meet
/// another test's.
struct Env {
    dir: tempfile::TempDir,
    scope: String,
}

impl Drop for Env {
    /// The lease and key volumes of the scope and of scopes named after it
    /// (`<scope>-...`), if a command made any.
    fn drop(&mut self) {
        for kind in ["lease", "digest-key"] {
            let listed = Command::new("docker")
                .args(["volume", "ls", "-q", "--filter"])
                .arg(format!("name=^mcpctl-{kind}-{}", self.scope))
                .output();
            if let Ok(out) = listed {
                let names = String::from_utf8_lossy(&out.stdout);
                let names: Vec<&str> = names.split_whitespace().collect();
                if !names.is_empty() {
                    let _ = Command::new("docker")
                        .args(["volume", "rm", "-f"])
                        .args(&names)
                        .output();
                }
            }
        }
    }
}

impl Env {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
            scope: format!("cli-{}-{n}", std::process::id()),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, rel: &str, text: &str) -> &Self {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
        self
    }

    fn state(&self) -> PathBuf {
        self.path().join("state/state.redb")
    }

    /// mcpctl in the workspace with a clean, colourless environment.
    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcpctl"));
        cmd.current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .env("MCPCTL_STATE", self.state())
            .env("MCPCTL_SECRETS_DIR", self.path().join("secrets"))
            .env("MCPCTL_SCOPE", &self.scope)
            .env("COLUMNS", "100");
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    /// [`Env::run`] with extra environment variables.
    fn run_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        self.finish(self.command().args(args).envs(vars.iter().copied()))
    }

    /// Runs mcpctl with stdout a pipe whose read end is already closed, so
    /// that its first write fails with EPIPE however little it prints.
    fn run_into_a_closed_pipe(&self, args: &[&str]) -> Run {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        self.finish(self.command().args(args).stdout(writer))
    }

    /// Runs `cmd` with `stream` a pipe whose read end is already closed.
    fn finish_into_a_closed_pipe(&self, mut cmd: Command, stream: Stream) -> Run {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        match stream {
            Stream::Stdout => cmd.stdout(writer),
            Stream::Stderr => cmd.stderr(writer),
        };
        self.finish(&mut cmd)
    }

    /// Runs `cmd` to its end, with the workspace path masked in its output.
    fn finish(&self, cmd: &mut Command) -> Run {
        let out = cmd.output().expect("run mcpctl");
        let clean = |b: &[u8]| {
            String::from_utf8_lossy(b).replace(&self.path().display().to_string(), "[TMP]")
        };
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: clean(&out.stdout),
            stderr: clean(&out.stderr),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
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
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

const GITHUB: &str = "apiVersion: mcpctl.io/v1
kind: McpServer
metadata: {name: github}
spec:
  replicas: 2
  image: ghcr.io/github/github-mcp-server:v0.20.1
  transport: streamable-http
  port: 8080
  env:
    LOG_LEVEL: info
    TOKEN:
      secretRef: {name: github, key: token}
";

const FETCH: &str = "apiVersion: mcpctl.io/v1
kind: McpServer
metadata: {name: fetch}
spec:
  package: {name: mcp-server-fetch, runtime: python, version: \"2025.4.7\"}
";

fn fleet() -> Env {
    let env = Env::new();
    env.file("fleet/github.yaml", GITHUB)
        .file("fleet/tools/fetch.yaml", FETCH)
        .file("fleet/README.md", "not a spec")
        .file("secrets/github/token", "s3cr3t-value\n");
    env
}

/// Records instances as if an apply had converged the fleet, using the same
/// hashing the binary uses.
fn converge_state(env: &Env) {
    let src = dir::read(&[env.path().join("fleet")]).expect("read");
    let servers = mcpctl::spec::load(&src.files).expect("valid");
    let secrets = Resolver::new(Some(env.path().join("secrets")))
        .resolve(&servers)
        .expect("secrets");
    let store = Store::new(env.state());
    let key = store.digest_key().expect("key");
    let desired = Desired::from_servers(&servers, &secrets.digests(&key), &Runners::default());
    store
        .update(|tx| {
            for (n, d) in desired.iter().enumerate() {
                tx.put_server(
                    &d.name,
                    &AppliedSpec {
                        hash: d.canonical.hash.clone(),
                        canonical: d.canonical.yaml.clone(),
                        replicas: d.replicas,
                        applied_at: Timestamp(0),
                        previous: None,
                    },
                )?;
                for r in 0..d.replicas {
                    let id = InstanceId(format!("01test{n}{r}"));
                    tx.put_instance(&Instance {
                        id: id.clone(),
                        server: d.name.clone(),
                        status: Status::Running,
                        handle: Some(format!("c-{id}")),
                        endpoint: Some(Endpoint::Stdio),
                        spec_hash: d.canonical.hash.clone(),
                        created_at: Timestamp(0),
                        transitioned_at: Timestamp(0),
                        restarts: 0,
                        restarts_at_start: 0,
                        reason: String::new(),
                        history: vec![],
                        mcp: None,
                        liveness: Default::default(),
                        replaces: None,
                    })?;
                }
            }
            Ok(())
        })
        .expect("update");
}

#[test]
fn validate_accepts_a_valid_fleet_and_ignores_other_files() {
    let env = fleet();
    let r = env.run(&["validate", "fleet"]);
    assert_eq!(r.code, 0, "{r}");
    insta::assert_snapshot!(r.to_string());
}

#[test]
fn validate_rejects_an_invalid_file_with_its_location() {
    let env = fleet();
    env.file("fleet/bad.yaml", "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: bad}\nspec:\n  image: x\n  replica: 2\n");
    let r = env.run(&["validate", "fleet"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("fleet/bad.yaml:6:3"), "{r}");
    insta::assert_snapshot!(r.to_string());
}

#[test]
fn plan_of_a_new_fleet_starts_everything() {
    let env = fleet();
    let r = env.run(&["plan", "fleet", "--refresh=false"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(!r.stdout.contains("s3cr3t"), "secret leaked: {r}");
    insta::assert_snapshot!(r.to_string());
}

#[test]
fn plan_json_has_the_documented_shape() {
    let env = fleet();
    let r = env.run(&["plan", "fleet", "--refresh=false", "-o", "json"]);
    assert_eq!(r.code, 0, "{r}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["format_version"], "1");
    assert_eq!(v["source"]["kind"], "dir");
    assert!(
        v["source"]["revision"]
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:"))
    );
    assert_eq!(v["summary"]["start"], 3);
    assert_eq!(v["actions"][0]["action"], "start");
    assert!(v["actions"][0]["instance"].is_null());
    for key in [
        "start",
        "remove",
        "replace",
        "promote",
        "demote",
        "fail",
        "adopt",
        "unchanged",
    ] {
        assert!(v["summary"][key].is_number(), "summary.{key} missing");
    }
}

#[test]
fn detailed_exitcode_is_2_with_changes_and_0_without() {
    let env = fleet();
    let r = env.run(&["plan", "fleet", "--refresh=false", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{r}");
    converge_state(&env);
    let r = env.run(&["plan", "fleet", "--refresh=false", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{r}");
    insta::assert_snapshot!(r.to_string());
}

#[test]
fn a_rotated_secret_replaces_with_a_sensitive_diff() {
    let env = fleet();
    converge_state(&env);
    env.file("secrets/github/token", "rotated-value\n");
    let r = env.run(&["plan", "fleet", "--refresh=false"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        !r.stdout.contains("rotated-value") && !r.stdout.contains("s3cr3t"),
        "secret leaked: {r}"
    );
    // The digest is keyed by a random per-state key, so mask it.
    let masked = regex_lite_mask(&r.to_string());
    insta::assert_snapshot!(masked);
}

#[test]
fn a_markdown_plan_masks_secrets_and_keeps_the_detailed_exit_code() {
    let env = fleet();
    let md = |alias: &str| {
        env.run(&[
            "plan",
            "fleet",
            "--refresh=false",
            "-o",
            alias,
            "--detailed-exitcode",
        ])
    };
    let r = md("markdown");
    assert_eq!(r.code, 2, "changes: {r}");
    assert!(r.stdout.starts_with("<!-- mcpctl-plan -->\n"), "{r}");
    converge_state(&env);
    let r = md("md");
    assert_eq!(r.code, 0, "no changes: {r}");
    assert!(
        r.stdout.contains("**No changes. 2 servers unchanged.**"),
        "{r}"
    );
    env.file("secrets/github/token", "rotated-value\n");
    let r = md("markdown");
    assert_eq!(r.code, 2, "{r}");
    assert!(
        !r.stdout.contains("rotated-value") && !r.stdout.contains("s3cr3t"),
        "secret leaked: {r}"
    );
    assert!(r.stdout.contains("+    value: (sensitive "), "{r}");
    insta::assert_snapshot!(regex_lite_mask(&r.to_string()));
}

#[test]
fn a_changed_runner_image_replaces_package_servers_with_a_diff() {
    let env = fleet();
    converge_state(&env);
    let r = env.run(&["plan", "fleet", "--refresh=false", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "converged under the default runners: {r}");
    let r = env.run_with(
        &["plan", "fleet", "--refresh=false"],
        &[("MCPCTL_PYTHON_RUNNER_IMAGE", "registry.example/py-runner:2")],
    );
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("~ replace fetch"), "{r}");
    assert!(
        r.stdout.contains("-runner: mcpctl/python-runner")
            && r.stdout.contains("+runner: registry.example/py-runner:2"),
        "the diff shows the runner image: {r}"
    );
    assert!(
        r.stdout.contains("1 to replace. 1 server unchanged."),
        "only the package server rolls: {r}"
    );
}

/// Replaces `(sensitive <16 hex>)` digests with a placeholder.
fn regex_lite_mask(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("(sensitive ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "(sensitive ".len()..];
        let end = after.find(')').unwrap_or(after.len());
        out.push_str("(sensitive [DIGEST])");
        rest = &after[(end + 1).min(after.len())..];
    }
    out.push_str(rest);
    out
}

#[test]
fn a_missing_secret_refuses_the_plan_naming_server_var_and_secret() {
    let env = fleet();
    std::fs::remove_file(env.path().join("secrets/github/token")).expect("rm");
    let r = env.run(&["plan", "fleet", "--refresh=false"]);
    assert_eq!(r.code, 1, "{r}");
    for needle in [
        "server github",
        "env TOKEN",
        "secret github/token",
        "MCPCTL_SECRET_GITHUB_TOKEN",
    ] {
        assert!(r.stderr.contains(needle), "missing {needle:?}: {r}");
    }
    insta::assert_snapshot!(r.to_string());
}

#[test]
fn an_invalid_document_anywhere_refuses_the_whole_plan() {
    let env = fleet();
    converge_state(&env);
    env.file(
        "fleet/broken.yaml",
        "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: Broken}\nspec: {image: x}\n",
    );
    std::fs::remove_file(env.path().join("fleet/tools/fetch.yaml")).expect("rm");
    let r = env.run(&["plan", "fleet", "--refresh=false"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.is_empty(), "no plan may be printed: {r}");
    assert!(r.stderr.contains("fleet/broken.yaml:3"), "{r}");
}

#[test]
fn an_empty_source_facing_a_fleet_is_refused_unless_allowed() {
    let env = fleet();
    converge_state(&env);
    env.file("empty/.keep.yaml", "# nothing here\n");
    let r = env.run(&["plan", "empty", "--refresh=false"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("--allow-empty"), "{r}");
    insta::assert_snapshot!(r.to_string());
    let r = env.run(&["plan", "empty", "--refresh=false", "--allow-empty"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("Plan: 3 to remove."), "{r}");
}

#[test]
fn out_saves_a_plan_with_what_it_was_made_from() {
    let env = fleet();
    let r = env.run(&["plan", "fleet", "--refresh=false", "--out", "plan.json"]);
    assert_eq!(r.code, 0, "{r}");
    let saved: mcpctl::plan::SavedPlan = serde_json::from_str(
        &std::fs::read_to_string(env.path().join("plan.json")).expect("saved"),
    )
    .expect("parses");
    assert_eq!(saved.saved_format, "1");
    assert_eq!(saved.observation, None);
    assert_eq!(saved.plan.actions.len(), 3);
    assert_eq!(saved.desired.len(), 2);
}

#[test]
fn a_saved_plan_shows_a_rotated_secret_by_its_digests_only() {
    let env = fleet();
    converge_state(&env);
    env.file("secrets/github/token", "rotated-value\n");
    let r = env.run(&["plan", "fleet", "--refresh=false", "--out", "plan.json"]);
    assert_eq!(r.code, 0, "{r}");
    let text = std::fs::read_to_string(env.path().join("plan.json")).expect("saved");
    let saved: mcpctl::plan::SavedPlan = serde_json::from_str(&text).expect("parses");
    // The diff of the replace is where a value would show: it holds both.
    let diff = saved.plan.actions[0]
        .diff
        .as_deref()
        .expect("a replace has a diff");
    for value in ["s3cr3t-value", "rotated-value"] {
        let digest = format!("(sensitive {})", digest_of(&env, value));
        assert!(diff.contains(&digest), "no {digest} for {value}:\n{diff}");
        assert!(!text.contains(value), "{value} in the saved plan:\n{text}");
    }
}

/// The operator's digest key gives every state file the same spec hashes
/// (so a fresh one rolls nothing), another key other hashes; a key too short
/// to be one is refused, and no key is ever printed.
#[test]
fn the_operators_digest_key_gives_fresh_states_the_same_hashes() {
    let env = fleet();
    let key = "operator-key-0123456789";
    let hashes = |state: &str, key: &str| {
        let out = format!("{}.json", state.replace('/', "-"));
        let r = env.run_with(
            &["plan", "fleet", "--refresh=false", "--out", &out],
            &[
                (
                    "MCPCTL_STATE",
                    env.path().join(state).to_str().expect("utf-8"),
                ),
                ("MCPCTL_DIGEST_KEY", key),
            ],
        );
        assert_eq!(r.code, 0, "{r}");
        assert!(!r.stdout.contains(key) && !r.stderr.contains(key), "{r}");
        let text = std::fs::read_to_string(env.path().join(&out)).expect("saved");
        assert!(!text.contains(key), "the key in the saved plan");
        let saved: mcpctl::plan::SavedPlan = serde_json::from_str(&text).expect("parses");
        saved.desired
    };
    let a = hashes("a/state.redb", key);
    assert_eq!(a, hashes("b/state.redb", key), "two fresh states, one key");
    let other = hashes("c/state.redb", "another-operator-key-42");
    assert_eq!(a["fetch"], other["fetch"], "no secret, no change");
    assert_ne!(
        a["github"], other["github"],
        "the secret's digest follows the key"
    );
    // Without the operator's key, each fresh state (no runtime asked) has
    // its own random key: the secret's hash differs.
    let mut own = env.run(&["plan", "fleet", "--refresh=false", "--out", "own.json"]);
    assert_eq!(own.code, 0, "{own}");
    own.stdout = std::fs::read_to_string(env.path().join("own.json")).expect("saved");
    let own: mcpctl::plan::SavedPlan = serde_json::from_str(&own.stdout).expect("parses");
    assert_ne!(own.desired["github"], a["github"]);

    let short = env.run_with(
        &["plan", "fleet", "--refresh=false"],
        &[("MCPCTL_DIGEST_KEY", "short-key")],
    );
    assert_eq!(short.code, 1, "{short}");
    assert!(
        short
            .stderr
            .contains("the digest key from MCPCTL_DIGEST_KEY is too short")
            && !short.stderr.contains("short-key"),
        "{short}"
    );
}

/// The digest `plan` shows for the github token when its value is `value`.
fn digest_of(env: &Env, value: &str) -> String {
    let src = dir::read(&[env.path().join("fleet")]).expect("read");
    let servers = mcpctl::spec::load(&src.files).expect("valid");
    let key = Store::new(env.state()).digest_key().expect("key");
    let digests = Resolver::with_env(None, |_| Some(value.to_owned()))
        .resolve(&servers)
        .expect("secrets")
        .digests(&key);
    digests.values().next().expect("one secret").clone()
}

#[test]
fn plan_reads_a_git_source_at_a_ref_and_path() {
    let env = fleet();
    let mut up = upstream::Upstream::new();
    let sha = up.commit(&[
        ("fleet/github.yaml", Some(GITHUB)),
        ("fleet/tools/fetch.yaml", Some(FETCH)),
        ("other/ignored.yaml", Some("not: read")),
    ]);
    let url = up.url();
    let r = env.run(&[
        "plan",
        "--git",
        &url,
        "--ref",
        "main",
        "--path",
        "fleet",
        "--refresh=false",
        "-o",
        "json",
        "--out",
        "plan.json",
    ]);
    assert_eq!(r.code, 0, "{r}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(
        v["source"],
        serde_json::json!({"kind": "git", "location": format!("{url}#main:fleet"), "revision": sha})
    );
    let started: Vec<&str> = v["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| a["server"].as_str().expect("server"))
        .collect();
    assert_eq!(started, ["fetch", "github", "github"]);

    // `apply plan.json` must fetch the same ref and path again.
    let saved: mcpctl::plan::SavedPlan = serde_json::from_str(
        &std::fs::read_to_string(env.path().join("plan.json")).expect("saved"),
    )
    .expect("parses");
    assert_eq!(
        saved.git,
        Some(mcpctl::source::GitSource {
            url: url.clone(),
            reference: Some("main".into()),
            path: Some("fleet".into()),
        })
    );
    assert!(saved.paths.is_empty());
    // The mirror is kept beside the state, bare.
    let mirrors: Vec<_> = std::fs::read_dir(env.path().join("state/git"))
        .expect("the git cache beside the state")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    assert!(mirrors[0].join("HEAD").is_file() && !mirrors[0].join(".git").exists());
}

#[test]
fn validate_reads_a_git_source_and_names_the_commit_in_diagnostics() {
    let env = Env::new();
    let mut up = upstream::Upstream::new();
    up.commit(&[("fleet/github.yaml", Some(GITHUB))]);
    let url = up.url();
    let r = env.run(&["validate", "--git", &url, "--path", "fleet"]);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(
        r.stdout,
        format!("{url}#HEAD:fleet valid: 1 server in 1 file\n")
    );

    let sha = up.commit(&[(
        "fleet/bad.yaml",
        Some("apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: bad}\nspec:\n  image: x\n  replica: 2\n"),
    )]);
    let r = env.run(&["validate", "--git", &url, "--path", "fleet"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr.contains(&format!(
            "fleet/bad.yaml:6:3 @ {}: unknown field",
            &sha[..7]
        )),
        "{r}"
    );
}

#[test]
fn git_flags_and_paths_do_not_mix() {
    let env = fleet();
    let r = env.run(&[
        "plan",
        "fleet",
        "--git",
        "file:///nowhere",
        "--refresh=false",
    ]);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr.contains("cannot be used with '--git <URL>'"),
        "{r}"
    );
    let r = env.run(&["plan", "fleet", "--ref", "main", "--refresh=false"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr.contains("cannot be used with '--ref <REF>'"),
        "{r}"
    );
    let r = env.run(&["validate", "--path", "fleet"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr.contains("required arguments were not provided"),
        "{r}"
    );
    assert!(r.stderr.contains("--git <URL>"), "{r}");
}

#[test]
fn schema_prints_the_committed_schema() {
    let env = Env::new();
    let r = env.run(&["schema"]);
    assert_eq!(r.code, 0, "{r}");
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/mcpserver.schema.json"
    ))
    .expect("committed schema");
    let a: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let b: serde_json::Value = serde_json::from_str(&committed).expect("json");
    assert_eq!(a, b);
}

#[test]
fn global_flags_work_after_the_subcommand() {
    let env = fleet();
    converge_state(&env);
    let other = env.path().join("other.redb");
    std::fs::rename(env.state(), &other).expect("move the state");
    let r = env.run(&[
        "get",
        "servers",
        "--refresh=false",
        "--state",
        other.to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.contains("github"),
        "the --state given after the subcommand was not used: {r}"
    );
    let r = env.run(&["get", "servers", "--refresh=false"]);
    assert!(!r.stdout.contains("github"), "{r}");
}

#[test]
fn every_help_has_an_example() {
    let env = Env::new();
    for cmd in [
        &["--help"][..],
        &["validate", "--help"],
        &["plan", "--help"],
        &["schema", "--help"],
        &["apply", "--help"],
        &["get", "--help"],
        &["describe", "--help"],
        &["logs", "--help"],
        &["export", "--help"],
        &["import", "--help"],
    ] {
        let r = env.run(cmd);
        assert_eq!(r.code, 0, "{cmd:?}: {r}");
        assert!(
            r.stdout.contains("Examples:"),
            "{cmd:?} has no example:\n{}",
            r.stdout
        );
    }
}

#[test]
fn state_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = fleet();
    // plan writes nothing, not even an empty state file.
    let r = env.run(&["plan", "fleet", "--refresh=false"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(!env.state().exists(), "plan created the state file");
    converge_state(&env);
    let r = env.run(&["suspend", "github"]);
    assert_eq!(r.code, 0, "{r}");
    let mode = std::fs::metadata(env.state())
        .expect("state exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Whether a secret value could reach the state is not asked here:
    // `suspend` writes only its record. Applied specs and instances, where a value
    // could land, are written by `apply`; tests/docker.rs checks the state
    // after one (secrets_reach_the_container_but_not_the_state).
}

/// The wall-clock times in `history`'s table or JSON, masked.
fn mask_times(s: &str) -> String {
    // `2026-12-06T07:48:37Z`: 20 ASCII characters of this shape.
    let is_time = |b: &[u8]| {
        b.len() >= 20
            && b[..20].iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                19 => *c == b'Z',
                _ => c.is_ascii_digit(),
            })
    };
    let bytes = s.as_bytes();
    let mut out = String::new();
    let (mut i, mut from) = (0, 0);
    while i < bytes.len() {
        if is_time(&bytes[i..]) {
            out.push_str(&s[from..i]);
            out.push_str("YYYY-MM-DDThh:mm:ssZ");
            i += 20;
            from = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[from..]);
    out
}

#[test]
fn suspend_and_resume_are_recorded_in_the_history_naming_the_server() {
    let env = fleet();
    converge_state(&env);
    for args in [
        &["suspend", "github"][..],
        &["resume", "github"],
        // Not suspended: nothing happens, and nothing is recorded.
        &["resume", "github"],
    ] {
        let r = env.run(args);
        assert_eq!(r.code, 0, "{r}");
    }
    let r = env.run(&["history", "-o", "json"]);
    assert_eq!(r.code, 0, "{r}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let outcomes: Vec<&str> = v
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(
        outcomes,
        [
            "suspend: github (left as it is until resumed)",
            "resume: github (reconciled again from the next pass)",
        ]
    );
    insta::assert_snapshot!("history_json_of_suspend_and_resume", mask_times(&r.stdout));
    let r = env.run(&["history"]);
    assert_eq!(r.code, 0, "{r}");
    insta::assert_snapshot!("history_of_suspend_and_resume", mask_times(&r.to_string()));
}

const BIG_REPLICAS: &str = "apiVersion: mcpctl.io/v1
kind: McpServer
metadata: {name: big}
spec:
  image: ghcr.io/example/big:1.0
  replicas: 150
";

#[test]
fn replicas_above_the_limit_are_refused_until_the_limit_is_raised() {
    let env = Env::new();
    env.file("fleet/big.yaml", BIG_REPLICAS);
    let r = env.run(&["validate", "fleet"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr
            .contains("fleet/big.yaml:6:13: `spec.replicas` is 150, more than the limit of 100"),
        "{r}"
    );
    assert!(r.stderr.contains("`--max-replicas 150`"), "{r}");

    let r = env.run(&["validate", "fleet", "--max-replicas", "150"]);
    assert_eq!(r.code, 0, "{r}");
    let r = env.run_with(
        &["plan", "fleet", "--refresh=false"],
        &[("MCPCTL_MAX_REPLICAS", "200")],
    );
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("Plan: 150 to start."), "{r}");

    // The limit has a ceiling of its own, so no setting lets a count allocate without bound.
    let r = env.run(&["validate", "fleet", "--max-replicas", "10001"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("10001 is not in 1..=10000"), "{r}");
}

#[test]
fn a_count_past_the_ceiling_is_refused_even_at_the_highest_limit() {
    let env = Env::new();
    // Small enough to plan in a blink should the check ever go, so a
    // regression fails this test rather than exhausting the machine's memory.
    env.file(
        "fleet/huge.yaml",
        &BIG_REPLICAS.replace("replicas: 150", "replicas: 20000"),
    );
    let r = env.run(&[
        "plan",
        "fleet",
        "--refresh=false",
        "--max-replicas",
        "10000",
    ]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.is_empty(), "no plan may be printed: {r}");
    assert!(
        r.stderr.contains(
            "fleet/huge.yaml:6:13: `spec.replicas` is 20000, more than the limit of 10000"
        ),
        "{r}"
    );
    assert!(r.stderr.contains("at most 10000 instances"), "{r}");
}

/// A child killed when dropped, so a failed assert leaves no process behind.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` every 10 ms until it gives a value, for at most 20 s.
fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn apply_records_a_non_utf8_command_line_as_its_lock_holder() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::process::Stdio;
    let env = Env::new();
    // Not UTF-8: a Unix path may hold any bytes.
    let name = OsStr::from_bytes(b"fleet\xff");
    let fifo = env.path().join(name).join("a.yaml");
    std::fs::create_dir(env.path().join(name)).expect("mkdir");
    // Reading a FIFO blocks until it has a writer: that holds the applier
    // just after it has taken the lock and recorded itself.
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success(), "mkfifo failed");
    let mut applier = Reaped(
        env.command()
            .arg("apply")
            .arg(name)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcpctl"),
    );
    let lock = env.path().join("state/state.redb.lock");
    let holder = poll("the applier to record itself", || {
        if let Some(status) = applier.0.try_wait().expect("poll the applier") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(applier.0.stderr.as_mut().expect("piped"), &mut stderr)
                .expect("read stderr");
            panic!("the applier exited ({status}) before recording itself:\n{stderr}");
        }
        let text = std::fs::read_to_string(&lock).unwrap_or_default();
        text.ends_with('\n').then_some(text)
    });
    assert!(holder.contains(" apply fleet\u{fffd})"), "{holder:?}");
    assert!(
        holder.starts_with(&format!("pid {} (", applier.0.id())),
        "{holder:?}"
    );

    // Something unreadable ends the apply: with an error, not a panic.
    std::fs::write(&fifo, "kind: [\n").expect("write the FIFO");
    let status = poll("the applier to exit", || {
        applier.0.try_wait().expect("poll the applier")
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(applier.0.stderr.as_mut().expect("piped"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("invalid YAML"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn apply_cuts_a_long_command_line_on_a_character_boundary() {
    let env = Env::new();
    // The holder text is cut at 120 bytes. Whatever the length of the
    // binary's path, one of these three offsets puts the cut inside a `€`.
    for pad in ["", "x", "xx"] {
        let arg = format!("{pad}{}", "€".repeat(60));
        let r = env.run(&["apply", &arg]);
        assert_eq!(r.code, 1, "{r}");
        assert!(!r.stderr.contains("panicked"), "{r}");
        assert!(r.stderr.contains("does not exist"), "{r}");
    }
}

/// A fleet whose plan text is larger than a pipe's 64 KiB buffer, so that
/// it could not slip unread into the buffer of a reader that closes late.
fn big_fleet() -> Env {
    let env = Env::new();
    let docs: String = (0..200)
        .map(|i| {
            format!(
                "---\napiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: fleet-server-{i:03}}}\nspec: {{image: srv, replicas: 10}}\n"
            )
        })
        .collect();
    env.file("fleet/servers.yaml", &docs);
    env
}

#[test]
fn a_closed_stdout_ends_each_command_quietly() {
    let env = big_fleet();
    let full = env.run(&["plan", "fleet", "--refresh=false"]);
    assert_eq!(full.code, 0, "{full}");
    assert!(
        full.stdout.len() > 64 * 1024,
        "the plan is only {} bytes",
        full.stdout.len()
    );

    // Every command is tried, so a failure names all the commands that panic.
    let mut failures = Vec::new();
    let mut quiet = |args: &[&str], code: i32| {
        let r = env.run_into_a_closed_pipe(args);
        if r.code != code || !r.stderr.is_empty() {
            failures.push(format!("{args:?} (want exit {code}): {r}"));
        }
    };
    quiet(&["schema"], 0);
    quiet(&["validate", "fleet"], 0);
    quiet(&["plan", "fleet", "--refresh=false"], 0);
    quiet(&["plan", "fleet", "--refresh=false", "-o", "json"], 0);
    // Its exit code says the plan has changes, whether or not anyone read it.
    quiet(
        &["plan", "fleet", "--refresh=false", "--detailed-exitcode"],
        2,
    );
    quiet(
        &["plan", "fleet", "--refresh=false", "--out", "plan.json"],
        0,
    );
    let saved = env.path().join("plan.json").is_file();

    converge_state(&env);
    quiet(&["get", "instances", "--refresh=false"], 0);
    quiet(&["get", "servers", "--refresh=false", "-o", "json"], 0);
    quiet(&["get", "instances", "--refresh=false", "-o", "yaml"], 0);
    quiet(&["describe", "instance", "01test00", "--refresh=false"], 0);
    quiet(&["export", "vscode"], 0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(saved, "the plan was not saved");
}

/// Every command, on success and on error, into a closed stdout and into a
/// closed stderr (`mcpctl validate bad/ 2>&1 | head -1`): it ends with its
/// usual exit code, never a panic (101).
#[test]
fn a_closed_stdout_or_stderr_never_makes_a_command_panic() {
    let env = fleet();
    env.file(
        "bad/server.yaml",
        "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: Bad_Name}\nspec: {image: x}\n",
    );
    converge_state(&env);
    let dead = format!("http://127.0.0.1:{}/mcp", refused_port());
    // Logging everything: tracing writes to stderr as well.
    let trace: &[(&str, &str)] = &[("MCPCTL_LOG", "trace")];
    // Arguments, environment, and the exit code with both streams open.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32);
    let commands: &[Case] = &[
        (&["--help"], &[], 0),
        (&["plan", "--help"], &[], 0),
        (&["schema"], &[], 0),
        (&["validate", "fleet"], &[], 0),
        (&["validate", "bad"], &[], 1),
        (
            &["validate", "--git", "https://ghp_t0ken@127.0.0.1:1/r.git"],
            &[],
            1,
        ),
        (&["plan", "fleet", "--refresh=false"], &[], 0),
        (
            &["plan", "fleet", "--refresh=false", "-o", "json"],
            trace,
            0,
        ),
        (&["plan", "bad", "--refresh=false"], &[], 1),
        (&["apply", "bad", "--no-wait"], &[], 1),
        (&["apply", "no-such-plan.json"], &[], 1),
        (&["get", "servers", "--refresh=false"], &[], 0),
        (
            &["get", "instances", "--refresh=false", "-o", "json"],
            &[],
            0,
        ),
        // No cluster to reach: a warning, then the recorded state.
        (&["get", "instances", "--runtime", "kubernetes"], &[], 0),
        (
            &["describe", "instance", "01test00", "--refresh=false"],
            &[],
            0,
        ),
        (
            &["describe", "instance", "01nope", "--refresh=false"],
            &[],
            1,
        ),
        (&["logs", "01nope"], &[], 1),
        (&["history"], &[], 0),
        (&["history", "-o", "json"], &[], 0),
        (&["probe", &dead, "--timeout", "2s"], trace, 1),
        (&["suspend", "no-such-server"], &[], 1),
        (&["export", "claude"], &[], 0),
        (&["export", "cursor", "no-such-server"], &[], 1),
    ];
    let mut failures = Vec::new();
    for (args, vars, code) in commands {
        // The reference: what the command does with both streams open.
        let open = env.run_with(args, vars);
        if open.code != *code {
            failures.push(format!(
                "{args:?} (want exit {code}) with both open: {open}"
            ));
        }
        let mut into_closed_stdout = env.command();
        into_closed_stdout.args(*args).envs(vars.iter().copied());
        let mut into_closed_stderr = env.command();
        into_closed_stderr.args(*args).envs(vars.iter().copied());
        for (closed, r) in [
            (
                "stdout",
                env.finish_into_a_closed_pipe(into_closed_stdout, Stream::Stdout),
            ),
            (
                "stderr",
                env.finish_into_a_closed_pipe(into_closed_stderr, Stream::Stderr),
            ),
        ] {
            if r.code != *code || r.stdout.contains("panicked") || r.stderr.contains("panicked") {
                failures.push(format!(
                    "{args:?} (want exit {code}) into a closed {closed}: {r}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A port nothing listens on.
fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

const URL_TOKEN: &str = "ghp_cliT0kenDoNotLeak";

/// A token in a `--git` URL is refused by every command that reads a
/// source, before anything else happens, and never printed or stored.
#[test]
fn a_token_in_a_git_url_is_refused_and_never_echoed() {
    let env = fleet();
    let url = format!(
        "https://{URL_TOKEN}@127.0.0.1:{}/org/fleet.git",
        refused_port()
    );
    let shown = "the --git URL https://(sensitive)@127.0.0.1:";
    for args in [
        vec!["validate", "--git", &url],
        vec![
            "plan",
            "--git",
            &url,
            "--refresh=false",
            "--out",
            "plan.json",
        ],
        vec!["plan", "--git", &url, "-o", "json"],
        vec!["apply", "--git", &url, "--no-wait"],
    ] {
        let r = env.run(&args);
        assert_eq!(r.code, 1, "{args:?}: {r}");
        assert!(r.stderr.contains(shown), "{args:?}: {r}");
        assert!(r.stderr.contains("MCPCTL_GIT_TOKEN"), "{args:?}: {r}");
        assert!(!format!("{r}").contains(URL_TOKEN), "{args:?}: {r}");
    }
    assert!(!env.path().join("plan.json").exists(), "no plan was saved");
    // The probe sends no user info, but echoes the URL when it fails.
    let dead = format!("http://{URL_TOKEN}@127.0.0.1:{}/mcp", refused_port());
    let r = env.run(&["probe", &dead]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("http://(sensitive)@127.0.0.1:"), "{r}");
    assert!(!format!("{r}").contains(URL_TOKEN), "{r}");
    let unsupported = format!("ftp://{URL_TOKEN}@127.0.0.1/mcp");
    let r = env.run(&["probe", &unsupported]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("the scheme must be http or https"), "{r}");
    assert!(!format!("{r}").contains(URL_TOKEN), "{r}");
    let history = env.run(&["history", "-o", "json"]);
    assert_eq!(history.code, 0, "{history}");
    assert!(!format!("{history}").contains(URL_TOKEN), "{history}");
    assert_no_token_under(env.path());

    // `watch` is refused at once too: after starting, it would hold the
    // applier lock and report the same failure at every fetch, for ever.
    let child = env
        .command()
        .args([
            "watch",
            "--git",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--dry-run",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start watch");
    let mut child = Reaped(child);
    let status = poll("watch to exit", || child.0.try_wait().expect("wait"));
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().expect("piped"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(shown), "{stderr}");
    assert!(!stderr.contains(URL_TOKEN), "{stderr}");
    assert_no_token_under(env.path());
}

/// No file under `dir` (state, git cache, saved plans) holds [`URL_TOKEN`].
fn assert_no_token_under(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            assert_no_token_under(&path);
        } else {
            let bytes = std::fs::read(&path).expect("read");
            assert!(
                !bytes
                    .windows(URL_TOKEN.len())
                    .any(|w| w == URL_TOKEN.as_bytes()),
                "{} holds the token",
                path.display()
            );
        }
    }
}

/// `apply` writes progress and its verdict to stderr as it works, which
/// takes a runtime: this one case runs against Docker, with a server whose
/// image cannot be pulled, so no container is ever made.
#[test]
fn apply_into_a_closed_stream_never_panics() {
    let env = Env::new();
    env.file(
        "one/server.yaml",
        "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: one}\nspec: {image: \"mcpctl-test-no-such-image:never\", transport: stdio}\n",
    );
    let apply = |name: &str| {
        let mut cmd = env.command();
        cmd.args(["apply", "one", "--no-wait"])
            .env(
                "MCPCTL_STATE",
                env.path().join(format!("{name}/state.redb")),
            )
            .env("MCPCTL_SCOPE", format!("{}-pipes-{name}", env.scope));
        cmd
    };
    let open = env.finish(&mut apply("open"));
    assert_eq!(open.code, 1, "{open}");
    assert!(open.stderr.contains("some actions failed"), "{open}");
    for (name, stream) in [("stdout", Stream::Stdout), ("stderr", Stream::Stderr)] {
        let r = env.finish_into_a_closed_pipe(apply(name), stream);
        assert_eq!(r.code, 1, "into a closed {name}: {r}");
        assert!(
            !r.stdout.contains("panicked") && !r.stderr.contains("panicked"),
            "into a closed {name}: {r}"
        );
    }
}

#[test]
fn get_servers_shows_each_servers_gateway_url() {
    let env = fleet();
    converge_state(&env);
    let r = env.run(&["get", "servers", "--refresh=false"]);
    assert_eq!(r.code, 0, "{r}");
    insta::assert_snapshot!(r.to_string());
    let r = env.run_with(
        &["get", "servers", "--refresh=false", "-o", "json"],
        &[("MCPCTL_GATEWAY_URL", "https://gw.example.com/")],
    );
    assert_eq!(r.code, 0, "{r}");
    insta::assert_snapshot!("get_servers_json_with_a_gateway_url", r.to_string());
}

/// The gateway's token file and the token's variable both hold the token:
/// neither may reach the output, whatever the client.
#[test]
fn export_points_every_client_at_the_gateway_and_never_holds_the_token() {
    let env = fleet();
    converge_state(&env);
    env.file("gateway-token", "gw-t0ken-value\n");
    let token_file = env.path().join("gateway-token");
    let vars = [
        (
            "MCPCTL_GATEWAY_TOKEN_FILE",
            token_file.to_str().expect("utf8"),
        ),
        ("MCPCTL_GATEWAY_TOKEN", "gw-t0ken-value"),
    ];
    for client in ["claude", "vscode", "cursor"] {
        let r = env.run_with(&["export", client], &vars);
        assert_eq!(r.code, 0, "{r}");
        assert!(!r.to_string().contains("gw-t0ken-value"), "{client}: {r}");
        let config: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
        let servers = &config[if client == "vscode" {
            "servers"
        } else {
            "mcpServers"
        }];
        for name in ["fetch", "github"] {
            assert_eq!(
                servers[name]["url"],
                format!("http://127.0.0.1:9470/servers/{name}/mcp"),
                "{client}: {r}"
            );
            let auth = servers[name]["headers"]["Authorization"]
                .as_str()
                .unwrap_or_else(|| panic!("{client} {name} has no token: {r}"));
            assert!(auth.starts_with("Bearer ${"), "{client}: {auth}");
        }
        insta::assert_snapshot!(format!("export_{client}"), r.to_string());
    }
}

#[test]
fn export_of_named_servers_to_a_gateway_without_a_token() {
    let env = fleet();
    converge_state(&env);
    let r = env.run(&[
        "export",
        "cursor",
        "github",
        "--gateway-url",
        "http://localhost:9000",
    ]);
    assert_eq!(r.code, 0, "{r}");
    let config: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(
        config,
        serde_json::json!({"mcpServers": {"github": {"url": "http://localhost:9000/servers/github/mcp"}}}),
        "{r}"
    );
    // Off this machine the gateway takes a token, unless told it does not.
    let remote = [
        "export",
        "claude",
        "--gateway-url",
        "https://gw.example.com",
    ];
    let r = env.run(&remote);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("Bearer ${MCPCTL_GATEWAY_TOKEN}"), "{r}");
    let r = env.run(&[&remote[..], &["--no-token"]].concat());
    assert_eq!(r.code, 0, "{r}");
    assert!(!r.stdout.contains("Authorization"), "{r}");
    let r = env.run(&["export", "vscode", "--token-env", "GW_TOKEN"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("Bearer ${env:GW_TOKEN}"), "{r}");
    assert!(!r.stdout.contains("inputs"), "{r}");
}

#[test]
fn export_refuses_unknown_servers_and_an_empty_state() {
    let env = fleet();
    let r = env.run(&["export", "vscode"]);
    assert_eq!(r.code, 1, "{r}");
    insta::assert_snapshot!("export_of_an_empty_state", r.to_string());
    converge_state(&env);
    let r = env.run(&["export", "claude", "gone", "github", "nope"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.is_empty(), "{r}");
    insta::assert_snapshot!("export_of_unknown_servers", r.to_string());
    let r = env.run(&["export", "claude", "--no-token", "--token-env", "GW"]);
    assert_eq!(r.code, 2, "{r}");
    let r = env.run(&["export", "claude", "--token-env", "GW}"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("--token-env"), "{r}");
}

/// A URL with a token in it, from the flag or the environment, is refused
/// by the commands that show it, naming the flag but not the token.
#[test]
fn a_bad_gateway_url_is_refused_naming_the_flag() {
    let env = fleet();
    converge_state(&env);
    let r = env.run(&[
        "export",
        "claude",
        "--gateway-url",
        "http://gw-t0ken@gw.example.com:9470",
    ]);
    assert_eq!(r.code, 1, "{r}");
    insta::assert_snapshot!("export_with_a_token_in_the_gateway_url", r.to_string());
    for (args, url) in [
        (
            &["get", "servers", "--refresh=false"][..],
            "http://u:gw-t0ken@h:1",
        ),
        (
            &["get", "servers", "--refresh=false", "--help"],
            "http://u:gw-t0ken@h:1",
        ),
        (
            &["get", "servers", "--refresh=false"],
            "http://h:1/servers/github/mcp",
        ),
        (&["export", "cursor"], "h:1"),
        (&["export", "cursor"], "ftp://h"),
    ] {
        let r = env.run_with(args, &[("MCPCTL_GATEWAY_URL", url)]);
        assert!(!r.to_string().contains("gw-t0ken"), "{args:?} {url}: {r}");
        if args.contains(&"--help") {
            assert_eq!(r.code, 0, "{r}");
            continue;
        }
        assert_eq!(r.code, 1, "{args:?} {url}: {r}");
        assert!(r.stderr.contains("--gateway-url"), "{args:?} {url}: {r}");
    }
    // `get instances` shows no gateway URL, so a bad one does not stop it.
    let r = env.run_with(
        &["get", "instances", "--refresh=false"],
        &[("MCPCTL_GATEWAY_URL", "ftp://h")],
    );
    assert_eq!(r.code, 0, "{r}");
}

#[test]
fn completion_scripts_name_every_command_for_each_shell() {
    let env = Env::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef mcpctl"),
        ("fish", "complete -c mcpctl"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let r = env.run(&["completion", shell]);
        assert_eq!(r.code, 0, "{shell}: {r}");
        assert!(r.stdout.contains(marker), "{shell}: no {marker:?}\n{r}");
        for command in ["validate", "plan", "apply", "watch", "gateway", "export"] {
            assert!(r.stdout.contains(command), "{shell} lacks {command}");
        }
    }
    let r = env.run(&["completion", "tcsh"]);
    assert_eq!(r.code, 2, "an unknown shell is a usage error: {r}");
    assert!(
        r.stderr.contains("bash, elvish, fish, powershell, zsh"),
        "{r}"
    );
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let r = Env::new().run(&["--version"]);
    assert_eq!(r.code, 0, "{r}");
    // A commit given in the environment (as for the build) stands in for
    // git's.
    let head = match std::env::var("MCPCTL_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
    {
        Some(given) => given,
        None => {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .expect("git");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
    };
    assert_eq!(
        r.stdout,
        format!("mcpctl {} (commit {head})\n", env!("CARGO_PKG_VERSION"))
    );
}
