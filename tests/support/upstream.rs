//! Test support for git sources: an "upstream" bare repository in a temporary
//! directory, served as a `file://` URL, and a clone of it to commit and
//! push from with the `git` command, as a user would. Include it from an
//! integration test with `#[path = "support/upstream.rs"] mod upstream;`.
//!
//! Commits are reproducible: author, committer and dates are fixed (each
//! commit one minute after the last), so the same files give the same SHA
//! on every machine and snapshots can show it.
#![allow(dead_code)] // Each including test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Upstream {
    dir: tempfile::TempDir,
    commits: u32,
}

impl Upstream {
    /// An empty bare repository whose HEAD is `main`, and a clone to work in.
    pub fn new() -> Upstream {
        let up = Upstream {
            dir: tempfile::tempdir().expect("tempdir"),
            commits: 0,
        };
        up.git_in(
            up.dir.path(),
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        up.git_in(up.dir.path(), &["init", "-q", "-b", "main", "work"]);
        up.git(&[
            "remote",
            "add",
            "origin",
            &up.remote().display().to_string(),
        ]);
        up
    }

    /// The bare repository that plays the remote.
    pub fn remote(&self) -> PathBuf {
        self.dir.path().join("remote.git")
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.remote().display())
    }

    /// The temporary directory holding both repositories.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes (`Some`) or deletes (`None`) files in the clone, commits them
    /// on `main` and pushes. Returns the new commit's SHA.
    pub fn commit(&mut self, files: &[(&str, Option<&str>)]) -> String {
        let work = self.dir.path().join("work");
        for (path, text) in files {
            let p = work.join(path);
            match text {
                Some(text) => {
                    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                    std::fs::write(&p, text).expect("write");
                }
                None => std::fs::remove_file(&p).expect("remove"),
            }
        }
        self.commits += 1;
        let date = format!("@{} +0000", 1_700_000_000 + 60 * self.commits);
        self.git(&["add", "-A"]);
        let mut cmd = self.command(&work);
        cmd.args(["commit", "-q", "-m", &format!("commit {}", self.commits)])
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date);
        run(&mut cmd);
        self.git(&["push", "-q", "origin", "main"]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// An annotated tag on the current commit, pushed.
    pub fn tag(&self, name: &str) {
        let mut cmd = self.command(&self.dir.path().join("work"));
        cmd.args(["tag", "-a", name, "-m", name])
            .env("GIT_COMMITTER_DATE", "@1700000000 +0000");
        run(&mut cmd);
        self.git(&["push", "-q", "origin", name]);
    }

    /// Resets `main` to `sha` and force-pushes it.
    pub fn force_push(&self, sha: &str) {
        self.git(&["reset", "-q", "--hard", sha]);
        self.git(&["push", "-q", "--force", "origin", "main"]);
    }

    /// Runs git in the clone and returns its trimmed stdout.
    pub fn git(&self, args: &[&str]) -> String {
        self.git_in(&self.dir.path().join("work"), args)
    }

    fn git_in(&self, dir: &Path, args: &[&str]) -> String {
        run(self.command(dir).args(args))
    }

    /// git with no user or system configuration, so the machine's settings
    /// (signing, hooks, default branch) cannot change what tests see.
    fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new("git");
        cmd.current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", self.dir.path())
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com");
        cmd
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run git");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}
