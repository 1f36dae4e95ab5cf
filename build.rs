//! Stamps the binary with the git commit it was built from, for
//! `mcpctl --version`: a bug report then names the exact code. Outside a git
//! checkout (a source tarball, `cargo install` from crates.io) the commit
//! comes from `MCPCTL_GIT_COMMIT`, or is reported as unknown.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=MCPCTL_GIT_COMMIT");
    let commit = std::env::var("MCPCTL_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            // Rebuild when HEAD moves: a checkout changes HEAD, a commit
            // the branch's ref (loose, or packed by `git gc`). Only files
            // that exist: cargo counts a missing one as changed, and would
            // run this script on every build.
            let mut watch = Vec::new();
            if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
                watch.push(format!("{dir}/HEAD"));
            }
            if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
                watch.push(format!("{common}/packed-refs"));
                if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    watch.push(format!("{common}/{head_ref}"));
                }
            }
            for path in watch {
                if std::path::Path::new(&path).exists() {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=MCPCTL_GIT_COMMIT={commit}");
}
