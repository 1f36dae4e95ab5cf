//! `mcpctl import` as users run it: the built binary on the fixtures of
//! `tests/corpus/import/`, then `mcpctl validate` and `mcpctl plan` on what
//! it wrote. No container runtime is needed: plans use `--refresh=false`
//! and an operator digest key. Every fake credential in the fixtures has
//! `fake` in it; none may reach stdout, stderr or a file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const FIXTURES: &[&str] = &[
    "server-2025-09-29-npm-oci.json",
    "server-2025-10-17-pypi-remote.json",
    "server-2025-12-11-oci-http.json",
    "server-2025-12-11-remote.json",
    "claude_desktop_config.json",
    "claude-code.mcp.json",
    "vscode-mcp.json",
    "cursor-mcp.json",
];

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus/import")
        .join(name)
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

/// mcpctl in `dir`, with a clean, colourless environment of its own.
fn mcpctl(dir: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcpctl"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .env("MCPCTL_STATE", dir.join("state/state.redb"))
        .env("MCPCTL_SECRETS_DIR", dir.join("secrets"))
        .env(
            "MCPCTL_SCOPE",
            format!("import-test-{}", std::process::id()),
        )
        .env("MCPCTL_DIGEST_KEY", "import-test-digest-key-0123456789")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run mcpctl");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    let clean = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .replace(&dir.display().to_string(), "[TMP]")
            .replace(&corpus("").display().to_string(), "[CORPUS]/")
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: clean(&out.stdout),
        stderr: clean(&out.stderr),
    }
}

fn assert_no_credential(what: &str, text: &str) {
    assert!(
        !text.to_lowercase().contains("fake"),
        "a credential leaked into {what}:\n{text}"
    );
}

/// `NAME/KEY` of each "mcpctl expects the secret NAME/KEY" line.
fn secrets_asked(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.split("expects the secret ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_fixture_imports_validates_and_plans() {
    for fixture in FIXTURES {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let file = corpus(fixture);
        let r = mcpctl(
            dir,
            &["import", file.to_str().expect("utf8"), "-o", "fleet"],
            None,
        );
        assert_eq!(r.code, 0, "{fixture}: {r}");
        assert!(
            r.stdout.is_empty(),
            "{fixture}: YAML went to files, not stdout: {r}"
        );
        assert_no_credential(&format!("{fixture}'s output"), &r.to_string());
        let mut files = 0;
        for entry in std::fs::read_dir(dir.join("fleet")).expect("fleet written") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            assert_no_credential(&path.display().to_string(), &text);
            files += 1;
        }
        assert!(files > 0, "{fixture}: {r}");

        let v = mcpctl(dir, &["validate", "fleet"], None);
        assert_eq!(v.code, 0, "{fixture}: {v}");
        assert!(
            v.stdout.contains(&format!("{files} server")),
            "{fixture}: {v}"
        );

        // Planning resolves every secret: the ones import asked for.
        for s in secrets_asked(&r.stderr) {
            let path = dir.join("secrets").join(&s);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, "dummy-value").expect("secret");
        }
        let plan = mcpctl(dir, &["plan", "fleet", "--refresh=false"], None);
        assert_eq!(plan.code, 0, "{fixture}: {plan}\nimport: {r}");
        assert!(
            plan.stdout.contains("Plan: ") || plan.stdout.contains("No changes."),
            "{fixture}: {plan}"
        );
    }
}

#[test]
fn claude_desktop_import_reports_warnings_todos_and_secrets_to_create() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = corpus("claude_desktop_config.json");
    let r = mcpctl(
        tmp.path(),
        &[
            "import",
            "claude",
            file.to_str().expect("utf8"),
            "-o",
            "fleet",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stderr.contains(
            "github: mcpctl expects the secret github/github-personal-access-token for env \
             GITHUB_PERSONAL_ACCESS_TOKEN: put it in $MCPCTL_SECRETS_DIR/github/github-personal-access-token \
             or MCPCTL_SECRET_GITHUB_GITHUB_PERSONAL_ACCESS_TOKEN"
        ),
        "{r}"
    );
    insta::assert_snapshot!(r.to_string());
    // Until the secrets exist, the plan refuses the servers that need them.
    let plan = mcpctl(tmp.path(), &["plan", "fleet", "--refresh=false"], None);
    assert_eq!(plan.code, 1, "{plan}");
    assert!(
        plan.stderr.contains("github/github-personal-access-token"),
        "{plan}"
    );
    // The plan starts what runs as imported, and nothing of what is parked.
    for s in secrets_asked(&r.stderr) {
        let path = tmp.path().join("secrets").join(&s);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, "dummy-value").expect("secret");
    }
    let plan = mcpctl(tmp.path(), &["plan", "fleet", "--refresh=false"], None);
    assert_eq!(plan.code, 0, "{plan}");
    assert!(plan.stdout.contains("Plan: 4 to start."), "{plan}");
    for parked in ["weather-tool", "postgres", "sqlite"] {
        assert!(
            !plan.stdout.contains(&format!("start   {parked}")),
            "{parked}: {plan}"
        );
    }
}

#[test]
fn stdout_holds_the_documents_and_they_validate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(corpus("vscode-mcp.json")).expect("fixture");
    let r = mcpctl(tmp.path(), &["import", "-"], Some(&text));
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stderr.starts_with("<stdin>: read as `vscode`"), "{r}");
    assert_eq!(
        r.stdout.matches("\n---\n").count(),
        4,
        "five documents: {r}"
    );
    std::fs::write(tmp.path().join("all.yaml"), &r.stdout).expect("write");
    let v = mcpctl(tmp.path(), &["validate", "all.yaml"], None);
    assert_eq!(v.code, 0, "{v}");
}

#[test]
fn existing_files_are_kept_unless_forced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = corpus("server-2025-09-29-npm-oci.json");
    let file = file.to_str().expect("utf8");
    std::fs::create_dir_all(tmp.path().join("fleet")).expect("mkdir");
    std::fs::write(tmp.path().join("fleet/brave-search.yaml"), "mine\n").expect("write");
    let r = mcpctl(tmp.path(), &["import", file, "-o", "fleet"], None);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr
            .contains("a file already exists: fleet/brave-search.yaml"),
        "{r}"
    );
    assert!(r.stderr.contains("--force"), "{r}");
    let kept = std::fs::read_to_string(tmp.path().join("fleet/brave-search.yaml")).expect("read");
    assert_eq!(kept, "mine\n");
    let r = mcpctl(
        tmp.path(),
        &["import", file, "-o", "fleet", "--force"],
        None,
    );
    assert_eq!(r.code, 0, "{r}");
    let replaced =
        std::fs::read_to_string(tmp.path().join("fleet/brave-search.yaml")).expect("read");
    assert!(replaced.contains("kind: McpServer"), "{replaced}");
}

#[test]
fn malformed_json_is_an_error_at_its_place_without_the_token() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = corpus("malformed-claude.json");
    let r = mcpctl(tmp.path(), &["import", file.to_str().expect("utf8")], None);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.is_empty(), "{r}");
    assert!(
        r.stderr
            .contains("malformed-claude.json:8:9: expected `,` or `}`"),
        "{r}"
    );
    assert_no_credential("the error", &r.stderr);
    insta::assert_snapshot!(r.to_string());
}

#[test]
fn unknown_formats_and_missing_files_are_errors_that_say_what_to_do() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = corpus("cursor-mcp.json");
    let file = file.to_str().expect("utf8");
    let r = mcpctl(tmp.path(), &["import", "yaml", file], None);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("unknown format `yaml`"), "{r}");
    assert!(
        r.stderr.contains("server-json, claude, vscode and cursor"),
        "{r}"
    );
    let r = mcpctl(tmp.path(), &["import", "vscode", file], None);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("not a vscode file"), "{r}");
    assert!(r.stderr.contains("it reads as `claude`"), "{r}");
    let r = mcpctl(tmp.path(), &["import", "claude"], None);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr
            .contains("`claude` is a format: give the FILE to read after it"),
        "{r}"
    );
    let r = mcpctl(tmp.path(), &["import", "nope.json"], None);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("cannot read nope.json"), "{r}");
    let r = mcpctl(tmp.path(), &["import", "--help"], None);
    assert!(r.stdout.contains("Examples:"), "{r}");
}
