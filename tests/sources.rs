//! Sources as the reconciler uses them: git repositories read at a branch, a
//! tag or a commit (local bare repositories over `file://`, no network), and
//! [`Watch`] announcing new revisions of a git remote or a directory.
//!
//! Waits are bounded by deadlines (`tokio::time::timeout`), never sleeps. A
//! test that expects *no* update watches for a window several times the
//! debounce, then proves the watcher is still alive with a real change.

#[path = "support/upstream.rs"]
mod upstream;

use mcpctl::source::git::{Auth, GitError, Mirror};
use mcpctl::source::{GitSource, Location, Snapshot, SourceError, Update, Watch, read};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc::Receiver;
use upstream::Upstream;

const GITHUB_V1: &str = "apiVersion: mcpctl.io/v1
kind: McpServer
metadata: {name: github}
spec:
  image: ghcr.io/github/github-mcp-server:v0.20.1
";

const GITHUB_V2: &str = "apiVersion: mcpctl.io/v1
kind: McpServer
metadata: {name: github}
spec:
  image: ghcr.io/github/github-mcp-server:v0.21.0
";

/// Long enough for a loaded CI machine; a working watcher answers in well
/// under a second.
const DEADLINE: Duration = Duration::from_secs(15);
/// How long "nothing happens" is watched for: five times the ~200 ms debounce.
const QUIET_WINDOW: Duration = Duration::from_secs(1);
/// For watches that must only react to `sync_now`.
const NEVER: Duration = Duration::from_secs(3600);

fn git(up: &Upstream, reference: Option<&str>, path: Option<&str>) -> GitSource {
    GitSource {
        url: up.url(),
        reference: reference.map(str::to_owned),
        path: path.map(str::to_owned),
    }
}

fn read_git(up: &Upstream, cache: &Path, reference: Option<&str>, path: Option<&str>) -> Snapshot {
    read(&Location::Git(git(up, reference, path)), cache).expect("read the git source")
}

/// `(path, text)` of every file, for comparing whole snapshots.
fn files(s: &Snapshot) -> Vec<(String, String)> {
    s.files
        .iter()
        .map(|f| (f.path.display().to_string(), f.text.clone()))
        .collect()
}

async fn next(rx: &mut Receiver<Update>) -> Update {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("an update before the deadline")
        .expect("the watch is still running")
}

async fn next_revision(rx: &mut Receiver<Update>) -> (Snapshot, Option<String>) {
    match next(rx).await {
        Update::Revision {
            snapshot,
            forced_from,
        } => (snapshot, forced_from),
        Update::Failed { error } => panic!("expected a revision, got a failure: {error}"),
    }
}

async fn assert_quiet(rx: &mut Receiver<Update>, after: &str) {
    if let Ok(update) = tokio::time::timeout(QUIET_WINDOW, rx.recv()).await {
        panic!("expected no update after {after}, got {update:?}");
    }
}

// ---- git: one read ----

#[test]
fn git_reads_a_branch_a_tag_and_a_commit() {
    let mut up = Upstream::new();
    let first = up.commit(&[("fleet/github.yaml", Some(GITHUB_V1))]);
    up.tag("v1");
    let second = up.commit(&[("fleet/github.yaml", Some(GITHUB_V2))]);
    let cache = tempfile::tempdir().expect("tempdir");

    let at_head = read_git(&up, cache.path(), None, None);
    let at_main = read_git(&up, cache.path(), Some("main"), None);
    let at_tag = read_git(&up, cache.path(), Some("v1"), None);
    let at_sha = read_git(&up, cache.path(), Some(&first), None);
    let at_short = read_git(&up, cache.path(), Some(&first[..10]), None);

    assert_eq!(at_head.info.revision, second, "the remote's HEAD branch");
    assert_eq!(at_main.info.revision, second);
    assert_eq!(at_tag.info.revision, first, "an annotated tag, peeled");
    assert_eq!(at_sha.info.revision, first);
    assert_eq!(at_short.info.revision, first);
    assert_eq!(
        files(&at_main),
        [("fleet/github.yaml".into(), GITHUB_V2.into())]
    );
    assert_eq!(
        files(&at_tag),
        [("fleet/github.yaml".into(), GITHUB_V1.into())]
    );
    assert_eq!(at_main.info.kind, "git");
    assert_eq!(at_main.info.location, format!("{}#main", up.url()));
    assert_eq!(at_head.info.location, up.url());
    assert_eq!(
        at_main.files[0].at.as_deref(),
        Some(&second[..7]),
        "each file carries the short commit"
    );
}

#[test]
fn git_path_reads_one_subdirectory_recursively() {
    let mut up = Upstream::new();
    let sha = up.commit(&[
        ("fleet/github.yaml", Some(GITHUB_V1)),
        ("fleet/team/tools.yml", Some("# tools\n")),
        ("fleet/README.md", Some("not a spec")),
        ("fleet/.hidden.yaml", Some("hidden")),
        ("other/x.yaml", Some("elsewhere")),
    ]);
    let cache = tempfile::tempdir().expect("tempdir");
    let snap = read_git(&up, cache.path(), Some("main"), Some("/fleet/"));
    let paths: Vec<String> = files(&snap).into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths, ["fleet/github.yaml", "fleet/team/tools.yml"]);
    assert_eq!(snap.info.location, format!("{}#main:fleet", up.url()));
    assert_eq!(snap.info.revision, sha);
    let root = read_git(&up, cache.path(), None, None);
    assert_eq!(root.files.len(), 3, "the root takes every directory");
}

#[test]
fn git_a_wrong_ref_or_path_is_a_clear_error() {
    let mut up = Upstream::new();
    let sha = up.commit(&[("fleet/github.yaml", Some(GITHUB_V1))]);
    let cache = tempfile::tempdir().expect("tempdir");

    let err =
        read(&Location::Git(git(&up, Some("nope"), None)), cache.path()).expect_err("no such ref");
    match &err {
        SourceError::Git(GitError::RefNotFound { url, reference }) => {
            assert_eq!(
                (url.as_str(), reference.as_str()),
                (up.url().as_str(), "nope")
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("ref `nope` not found in {}", up.url())
    );

    let err = read(
        &Location::Git(git(&up, Some("main"), Some("flet"))),
        cache.path(),
    )
    .expect_err("no such path");
    assert!(
        matches!(&err, SourceError::Git(GitError::PathNotFound { path, commit, .. })
            if path == "flet" && *commit == sha[..7]),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "path `flet` not found in {} ({}, ref main)",
            &sha[..7],
            up.url()
        )
    );

    let escape = read(
        &Location::Git(git(&up, Some("main"), Some("fleet/../.."))),
        cache.path(),
    );
    assert!(
        matches!(escape, Err(SourceError::Git(GitError::PathNotFound { .. }))),
        "`..` leads nowhere: {escape:?}"
    );

    let missing = GitSource {
        url: format!("file://{}", up.root().join("missing.git").display()),
        reference: None,
        path: None,
    };
    let err = read(&Location::Git(missing), cache.path()).expect_err("no such repository");
    assert!(
        matches!(err, SourceError::Git(GitError::Fetch { .. })),
        "{err:?}"
    );
}

#[test]
fn git_diagnostics_point_at_file_line_column_and_commit() {
    let mut up = Upstream::new();
    let sha = up.commit(&[(
        "fleet/bad.yaml",
        Some("apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata:\n  name: My_Server\nspec:\n  image: x\n"),
    )]);
    let cache = tempfile::tempdir().expect("tempdir");
    let snap = read_git(&up, cache.path(), Some("main"), Some("fleet"));
    let errors = mcpctl::spec::load(&snap.files)
        .expect_err("an invalid name")
        .errors;
    assert_eq!(errors.len(), 1);
    let headline = errors[0].to_string();
    assert!(
        headline.starts_with(&format!("fleet/bad.yaml:4:9 @ {}: ", &sha[..7])),
        "{headline}"
    );
    let mut rendered = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::none())
        .with_width(100)
        .render_report(&mut rendered, &errors[0])
        .expect("render");
    // The commit is fixed by the fixed dates of `Upstream`, so the snapshot
    // shows the same short SHA everywhere.
    insta::assert_snapshot!(rendered);
}

#[test]
fn git_reading_never_creates_a_working_tree() {
    let mut up = Upstream::new();
    up.commit(&[
        ("fleet/github.yaml", Some(GITHUB_V1)),
        ("fleet/more/x.yml", Some("x")),
    ]);
    let cache = tempfile::tempdir().expect("tempdir");
    let snap = read_git(&up, cache.path(), Some("main"), Some("fleet"));
    assert_eq!(snap.files.len(), 2);

    let mirror = Mirror::open(&git(&up, None, None), cache.path()).expect("mirror");
    let repo = git2::Repository::open(mirror.dir()).expect("open the mirror");
    assert!(repo.is_bare(), "the mirror is a bare repository");
    let mut checked_out = Vec::new();
    let mut stack = vec![cache.path().to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                checked_out.push(path);
            }
        }
    }
    assert_eq!(
        checked_out,
        Vec::<PathBuf>::new(),
        "no file was checked out"
    );
}

// ---- git: credentials ----

/// A loopback HTTP server that asks for basic auth and records the
/// `Authorization` header of each request (`None` when there is none). It
/// answers 401 without credentials, and 401 or 404 with them.
struct AuthServer {
    url: String,
    seen: std::sync::mpsc::Receiver<Option<String>>,
}

impl AuthServer {
    fn start(accept_credentials: bool) -> AuthServer {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/fleet.git", listener.local_addr().expect("addr"));
        let (tx, seen) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut auth = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("authorization")
                    {
                        auth = Some(value.trim().to_owned());
                    }
                }
                let answer = if auth.is_some() && accept_credentials {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                let _ = (&stream).write_all(answer.as_bytes());
                // The test has its answer once it stops listening.
                if tx.send(auth).is_err() {
                    return;
                }
            }
        });
        AuthServer { url, seen }
    }

    fn fetch(&self, token: &str) -> Result<(), GitError> {
        let cache = tempfile::tempdir().expect("tempdir");
        let source = GitSource {
            url: self.url.clone(),
            reference: None,
            path: None,
        };
        let mut mirror = Mirror::open(&source, cache.path()).expect("mirror");
        mirror.fetch(&Auth {
            token: Some(token.into()),
            username: None,
            ssh_key: None,
        })
    }
}

#[test]
fn git_over_https_offers_the_token_as_basic_auth() {
    use base64::Engine;
    let server = AuthServer::start(true);
    let result = server.fetch("t0ken");
    assert!(
        matches!(result, Err(GitError::Fetch { .. })),
        "the server has no repository: {result:?}"
    );
    let seen: Vec<Option<String>> = server.seen.try_iter().collect();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("x-access-token:t0ken")
    );
    assert_eq!(
        seen,
        [None, Some(expected)],
        "asked, then offered the token"
    );
}

#[test]
fn git_a_refused_token_is_offered_once_and_the_fetch_fails() {
    let server = AuthServer::start(false);
    let err = server.fetch("wrong").expect_err("refused");
    let seen: Vec<Option<String>> = server.seen.try_iter().collect();
    assert_eq!(
        seen.len(),
        2,
        "one try without and one with the token: {seen:?}"
    );
    assert!(
        miette::Diagnostic::help(&err).is_some_and(|h| h.to_string().contains("MCPCTL_GIT_TOKEN")),
        "{err:?}"
    );
}

/// The auth server's URL with a token where some hosts take one.
fn with_token(url: &str) -> String {
    url.replacen("http://", &format!("http://{URL_TOKEN}@"), 1)
}

const URL_TOKEN: &str = "ghp_urlT0kenDoNotLeak";

#[test]
fn git_a_token_in_the_url_is_refused_before_anything_is_sent() {
    let server = AuthServer::start(true);
    let cache = tempfile::tempdir().expect("tempdir");
    let source = GitSource {
        url: with_token(&server.url),
        reference: None,
        path: None,
    };
    let err = read(&Location::Git(source), cache.path()).expect_err("a credential in the URL");
    let shown = format!("{err} {err:?}");
    assert!(
        matches!(err, SourceError::Git(GitError::Credential { .. })),
        "{shown}"
    );
    assert!(!shown.contains(URL_TOKEN), "{shown}");
    assert!(
        shown.contains("http://(sensitive)@127.0.0.1:"),
        "shows the URL redacted: {shown}"
    );
    let seen: Vec<Option<String>> = server.seen.try_iter().collect();
    assert_eq!(seen, [], "nothing reached the server");
    assert_eq!(
        std::fs::read_dir(cache.path()).map_or(0, Iterator::count),
        0,
        "no mirror, whose config would keep the URL"
    );
}

// ---- git: watching ----

#[tokio::test]
async fn git_watch_sees_a_new_commit_on_sync_now() {
    let mut up = Upstream::new();
    let first = up.commit(&[("fleet/github.yaml", Some(GITHUB_V1))]);
    let cache = tempfile::tempdir().expect("tempdir");
    let loc = Location::Git(git(&up, Some("main"), Some("fleet")));
    let (watch, mut rx) = Watch::start(loc, cache.path().to_owned(), NEVER).expect("watch");

    let (snap, forced) = next_revision(&mut rx).await;
    assert_eq!(
        (snap.info.revision.as_str(), forced),
        (first.as_str(), None)
    );

    let second = up.commit(&[("fleet/github.yaml", Some(GITHUB_V2))]);
    watch.sync_now();
    let (snap, forced) = next_revision(&mut rx).await;
    assert_eq!(snap.info.revision, second);
    assert_eq!(forced, None, "a fast-forward");
    assert_eq!(
        files(&snap),
        [("fleet/github.yaml".into(), GITHUB_V2.into())]
    );

    watch.sync_now();
    assert_quiet(&mut rx, "a fetch with nothing new").await;
    drop(watch);
}

#[tokio::test]
async fn git_watch_sees_a_new_commit_after_the_interval() {
    let mut up = Upstream::new();
    let first = up.commit(&[("fleet/github.yaml", Some(GITHUB_V1))]);
    let cache = tempfile::tempdir().expect("tempdir");
    let loc = Location::Git(git(&up, None, None));
    let (watch, mut rx) =
        Watch::start(loc, cache.path().to_owned(), Duration::from_millis(200)).expect("watch");

    assert_eq!(next_revision(&mut rx).await.0.info.revision, first);
    let second = up.commit(&[("fleet/github.yaml", Some(GITHUB_V2))]);
    assert_eq!(next_revision(&mut rx).await.0.info.revision, second);
    drop(watch);
}

#[tokio::test]
async fn git_watch_follows_a_force_push_and_reports_it() {
    let mut up = Upstream::new();
    let first = up.commit(&[("fleet/github.yaml", Some(GITHUB_V1))]);
    let second = up.commit(&[("fleet/github.yaml", Some(GITHUB_V2))]);
    let cache = tempfile::tempdir().expect("tempdir");
    let loc = Location::Git(git(&up, Some("main"), None));
    let (watch, mut rx) = Watch::start(loc, cache.path().to_owned(), NEVER).expect("watch");
    assert_eq!(next_revision(&mut rx).await.0.info.revision, second);

    up.force_push(&first);
    watch.sync_now();
    let (snap, forced) = next_revision(&mut rx).await;
    assert_eq!(snap.info.revision, first, "the older commit is followed");
    assert_eq!(forced, Some(second), "and reported as a force-push");
    assert_eq!(
        files(&snap),
        [("fleet/github.yaml".into(), GITHUB_V1.into())]
    );
    drop(watch);
}

#[tokio::test]
async fn git_watch_reports_a_failed_fetch_and_recovers() {
    let mut up = Upstream::new();
    let first = up.commit(&[("fleet/github.yaml", Some(GITHUB_V1))]);
    let cache = tempfile::tempdir().expect("tempdir");
    let loc = Location::Git(git(&up, Some("main"), None));
    let (watch, mut rx) = Watch::start(loc, cache.path().to_owned(), NEVER).expect("watch");
    assert_eq!(next_revision(&mut rx).await.0.info.revision, first);

    std::fs::remove_dir_all(up.remote()).expect("delete the remote");
    watch.sync_now();
    match next(&mut rx).await {
        Update::Failed { error } => {
            assert!(error.starts_with("fetch failed: "), "{error}");
            assert!(error.contains(&up.url()), "names the URL: {error}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    watch.sync_now();
    assert_quiet(&mut rx, "the same failure again").await;

    up.git(&[
        "init",
        "-q",
        "--bare",
        "-b",
        "main",
        &up.remote().display().to_string(),
    ]);
    up.git(&["push", "-q", "origin", "main"]);
    watch.sync_now();
    let (snap, forced) = next_revision(&mut rx).await;
    assert_eq!(
        snap.info.revision, first,
        "recovery re-announces the revision"
    );
    assert_eq!(forced, None);
    drop(watch);
}

/// A failure a watch reports keeps the help that a one-shot read shows
/// under miette: it is what `watch` logs and `/healthz` says.
#[tokio::test]
async fn git_watch_failures_keep_their_help() {
    let mut up = Upstream::new();
    let cache = tempfile::tempdir().expect("tempdir");
    let url = up.url();
    let failure = |update: Update| match update {
        Update::Failed { error } => error.replace(&url, "[URL]"),
        other => panic!("expected a failure, got {other:?}"),
    };
    // Nothing pushed yet: no default branch to follow.
    let (watch, mut rx) = Watch::start(
        Location::Git(git(&up, None, None)),
        cache.path().to_owned(),
        NEVER,
    )
    .expect("watch");
    let empty = failure(next(&mut rx).await);
    assert!(empty.contains("; help: "), "{empty}");
    assert!(empty.contains("give the branch with --ref"), "{empty}");
    insta::assert_snapshot!("git_watch_failure_no_default_branch", empty);
    drop(watch);

    up.commit(&[("fleet/github.yaml", Some(GITHUB_V1))]);
    let (watch, mut rx) = Watch::start(
        Location::Git(git(&up, Some("nope"), None)),
        cache.path().to_owned(),
        NEVER,
    )
    .expect("watch");
    let wrong_ref = failure(next(&mut rx).await);
    assert!(
        wrong_ref.contains("`git ls-remote [URL]` lists them"),
        "{wrong_ref}"
    );
    insta::assert_snapshot!("git_watch_failure_wrong_ref", wrong_ref);
    drop(watch);
}

/// What a watch reports for a URL with a token is what `watch` hands its
/// loop (`SourceEvent::Failed`) and shows on /healthz.
#[tokio::test]
async fn git_watch_of_a_url_with_a_token_fails_without_showing_it() {
    let server = AuthServer::start(true);
    let cache = tempfile::tempdir().expect("tempdir");
    let loc = Location::Git(GitSource {
        url: with_token(&server.url),
        reference: None,
        path: None,
    });
    let (watch, mut rx) = Watch::start(loc, cache.path().to_owned(), NEVER).expect("watch");
    match next(&mut rx).await {
        Update::Failed { error } => {
            assert!(!error.contains(URL_TOKEN), "{error}");
            assert!(
                error.starts_with("the --git URL http://(sensitive)@127.0.0.1:"),
                "{error}"
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let seen: Vec<Option<String>> = server.seen.try_iter().collect();
    assert_eq!(seen, [], "nothing reached the server");
    drop(watch);
}

// ---- directories: watching ----

fn spec(image: &str) -> String {
    format!(
        "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: x}}\nspec:\n  image: {image}\n"
    )
}

/// Starts a directory watch and takes its first update, the current files.
async fn watch_dir(paths: Vec<PathBuf>) -> (Watch, Receiver<Update>, Snapshot) {
    let cache = PathBuf::from("unused-by-directories");
    let (watch, mut rx) = Watch::start(Location::Paths(paths), cache, NEVER).expect("watch");
    let (first, _) = next_revision(&mut rx).await;
    (watch, rx, first)
}

/// An editor's save: write a temporary file beside the target, rename it over.
fn atomic_save(path: &Path, text: &str) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text).expect("write the temporary file");
    std::fs::rename(&tmp, path).expect("rename over the file");
}

#[tokio::test]
async fn dir_watch_sees_an_editor_save_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("x.yaml");
    std::fs::write(&file, spec("a:1")).expect("write");
    let (watch, mut rx, first) = watch_dir(vec![dir.path().to_owned()]).await;
    assert_eq!(first.files[0].text, spec("a:1"));

    atomic_save(&file, &spec("a:2"));
    let (snap, forced) = next_revision(&mut rx).await;
    assert_eq!(snap.files.len(), 1, "the temporary file is no spec");
    assert_eq!(snap.files[0].text, spec("a:2"));
    assert_eq!(forced, None);
    assert_quiet(&mut rx, "one save").await;
    drop(watch);
}

#[tokio::test]
async fn dir_watch_of_a_file_survives_repeated_editor_saves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("x.yaml");
    std::fs::write(&file, spec("a:1")).expect("write");
    let (watch, mut rx, _) = watch_dir(vec![file.clone()]).await;
    // The first save replaces the file the watch started on; the later ones
    // are only seen if the watch is on the directory, not on that file.
    for n in 2..=4 {
        atomic_save(&file, &spec(&format!("a:{n}")));
        let (snap, _) = next_revision(&mut rx).await;
        assert_eq!(snap.files[0].text, spec(&format!("a:{n}")), "save {n}");
    }
    drop(watch);
}

#[tokio::test]
async fn dir_watch_folds_a_burst_of_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("x.yaml");
    std::fs::write(&file, spec("a:0")).expect("write");
    let (watch, mut rx, _) = watch_dir(vec![dir.path().to_owned()]).await;

    // A burst as a tool makes it (a `git checkout`, a generator): 20
    // writes over about 200 ms, so it outlasts the debounce and must be
    // folded by it rather than by being faster than one read.
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    for n in 1..=20 {
        pace.tick().await;
        std::fs::write(&file, spec(&format!("a:{n}"))).expect("write");
    }
    let last = spec("a:20");
    let mut updates = 0;
    loop {
        let (snap, _) = next_revision(&mut rx).await;
        updates += 1;
        if snap.files[0].text == last {
            break;
        }
    }
    // One read after the burst; a second only if the machine stalled for
    // longer than the debounce in the middle of it.
    assert!(updates <= 2, "{updates} updates for one burst of 20 writes");
    assert_quiet(&mut rx, "the burst").await;
    drop(watch);
}

#[tokio::test]
async fn dir_watch_sees_a_new_subdirectory_and_a_deletion() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("x.yaml"), spec("a:1")).expect("write");
    let (watch, mut rx, _) = watch_dir(vec![dir.path().to_owned()]).await;

    std::fs::create_dir_all(dir.path().join("team/tools")).expect("mkdir");
    std::fs::write(dir.path().join("team/tools/y.yaml"), spec("b:1")).expect("write");
    let (snap, _) = next_revision(&mut rx).await;
    let names: Vec<_> = snap.files.iter().map(|f| f.path.clone()).collect();
    assert_eq!(
        names,
        [
            dir.path().join("team/tools/y.yaml"),
            dir.path().join("x.yaml")
        ]
    );

    // A file written into the new directory later: its watch was added.
    std::fs::write(dir.path().join("team/tools/z.yaml"), spec("c:1")).expect("write");
    assert_eq!(next_revision(&mut rx).await.0.files.len(), 3);

    std::fs::remove_file(dir.path().join("x.yaml")).expect("delete");
    let (snap, _) = next_revision(&mut rx).await;
    assert!(
        snap.files
            .iter()
            .all(|f| f.path != dir.path().join("x.yaml")),
        "{:?}",
        files(&snap)
    );
    assert_eq!(snap.files.len(), 2);
    drop(watch);
}

#[tokio::test]
async fn dir_watch_ignores_a_write_that_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("x.yaml");
    std::fs::write(&file, spec("a:1")).expect("write");
    let (watch, mut rx, first) = watch_dir(vec![dir.path().to_owned()]).await;

    std::fs::write(&file, spec("a:1")).expect("rewrite the same text");
    atomic_save(&file, &spec("a:1"));
    std::fs::write(dir.path().join("notes.txt"), "not a spec").expect("write");
    assert_quiet(&mut rx, "writes that change no spec").await;

    // Still watching: a real change is announced.
    std::fs::write(&file, spec("a:2")).expect("write");
    let (snap, _) = next_revision(&mut rx).await;
    assert_ne!(snap.info.revision, first.info.revision);
    drop(watch);
}

#[tokio::test]
async fn dir_watch_reports_a_failure_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("x.yaml");
    std::fs::write(&file, spec("a:1")).expect("write");
    let (watch, mut rx, first) = watch_dir(vec![dir.path().to_owned()]).await;

    std::fs::write(&file, [0x61, 0xff]).expect("write invalid UTF-8");
    match next(&mut rx).await {
        Update::Failed { error } => assert!(error.contains("not valid UTF-8"), "{error}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    std::fs::write(&file, spec("a:1")).expect("repair");
    let (snap, _) = next_revision(&mut rx).await;
    assert_eq!(
        snap.info.revision, first.info.revision,
        "recovery re-announces the revision"
    );
    drop(watch);
}

#[test]
fn dir_watch_of_a_missing_path_fails_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let result = Watch::start(
        Location::Paths(vec![missing.clone()]),
        PathBuf::new(),
        NEVER,
    );
    assert!(
        matches!(&result, Err(SourceError::NotFound { path }) if *path == missing),
        "{:?}",
        result.err()
    );
}
