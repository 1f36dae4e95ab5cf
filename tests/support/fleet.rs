//! Test support for the end-to-end suites that drive the built `mcpctl`
//! against the real Docker engine (`tests/docker.rs`, `tests/watch.rs`): a
//! [`Fleet`] is a temporary workspace (spec files, state file, secrets) in a
//! scope of its own, whose containers a drop guard removes; plus the spec
//! builders and the polling helper the suites share. Include it with
//! `#[path = "support/fleet.rs"] mod fleet;` after `mod fixture;`.
#![allow(dead_code)] // Each including test binary uses a different subset.

use super::fixture;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The fixture image under two tags, so a test can change a spec's image.
pub fn images() -> (&'static str, &'static str) {
    static TAGGED: OnceLock<()> = OnceLock::new();
    TAGGED.get_or_init(|| {
        let base = fixture::fixture_image();
        fixture::docker(&["tag", &base, "mcpctl-fixture:v2"]).expect("tag v2");
    });
    (fixture::FIXTURE_IMAGE, "mcpctl-fixture:v2")
}

/// The names tests give external servers.
pub const EXTERNAL: [&str; 1] = ["gamma"];

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub scope: String,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let ids = docker_lines(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.mcpctl.scope={}", self.scope),
        ]);
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = fixture::docker(&args);
        }
        fixture::remove_scope_volumes(&self.scope);
    }
}

pub fn docker_lines(args: &[&str]) -> Vec<String> {
    fixture::docker(args)
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
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

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-9),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A stdio fixture server.
pub fn stdio(name: &str, replicas: u32, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  image: {image}\n  command: [\"--transport\", \"stdio\"{extra}]\n  readiness: {{timeout: 20s}}\n"
    )
}

/// A streamable-HTTP fixture server.
pub fn http(name: &str, replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  image: {image}\n  command: [\"--transport\", \"http\"]\n  transport: streamable-http\n  port: 8080\n  readiness: {{timeout: 20s}}\n"
    )
}

impl Fleet {
    pub fn new(test: &str) -> Fleet {
        images();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("fleet")).expect("mkdir");
        Fleet {
            dir,
            scope: format!("t{}-{test}", std::process::id()),
        }
    }

    pub fn write(&self, file: &str, yaml: &str) {
        std::fs::write(self.dir.path().join("fleet").join(file), yaml).expect("write spec");
    }

    pub fn delete(&self, file: &str) {
        std::fs::remove_file(self.dir.path().join("fleet").join(file)).expect("remove spec");
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mcpctl"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env("MCPCTL_SCOPE", &self.scope)
            .env("MCPCTL_STATE", self.state())
            .env("MCPCTL_SECRETS_DIR", self.dir.path().join("secrets"))
            .env_remove("MCPCTL_RUNTIME");
        c
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state.redb")
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.command(args).output().expect("run mcpctl").into()
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcpctl")
    }

    pub fn apply(&self) -> Run {
        let r = self.run(&["apply", "fleet", "--timeout", "60s"]);
        assert_eq!(r.code, 0, "apply failed: {r}");
        r
    }

    pub fn instances(&self) -> Vec<Value> {
        let r = self.run(&["get", "instances", "-o", "json"]);
        assert_eq!(r.code, 0, "{r}");
        serde_json::from_str(&r.stdout).expect("instances json")
    }

    /// Containers of this scope: instance id → (container id, state).
    pub fn containers(&self) -> BTreeMap<String, (String, String)> {
        docker_lines(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=io.mcpctl.scope={}", self.scope),
            "--format",
            "{{.Label \"io.mcpctl.instance\"}} {{.ID}} {{.State}}",
        ])
        .into_iter()
        .map(|l| {
            let mut p = l.split_whitespace().map(str::to_owned);
            let inst = p.next().unwrap_or_default();
            (
                inst,
                (p.next().unwrap_or_default(), p.next().unwrap_or_default()),
            )
        })
        .collect()
    }

    pub fn ids_of(&self, server: &str) -> Vec<String> {
        self.instances()
            .iter()
            .filter(|i| i["server"] == server)
            .map(|i| i["id"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// The state and the engine agree, and every server has exactly its replicas, all RUNNING.
    pub fn assert_exact(&self, want: &[(&str, usize)]) {
        let instances = self.instances();
        let containers = self.containers();
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
        }
        // External servers have instances but no container.
        let known: BTreeSet<String> = instances
            .iter()
            .filter(|i| !EXTERNAL.contains(&i["server"].as_str().unwrap_or("")))
            .map(|i| i["id"].as_str().unwrap_or("").to_owned())
            .collect();
        let running: BTreeSet<String> = containers.keys().cloned().collect();
        assert_eq!(known, running, "state and engine disagree: {containers:#?}");
        assert!(
            containers.values().all(|(_, s)| s == "running"),
            "{containers:#?}"
        );
    }
}

pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Polling an external system against a deadline.
        std::thread::sleep(Duration::from_millis(100));
    }
}
