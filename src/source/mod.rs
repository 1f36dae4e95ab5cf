//! Where specs come from, and the revision that names what was read.
//!
//! A source yields raw files and a revision; it does not parse them (that is
//! `spec`). [`Location`] names one: files and directories ([`dir`]), or a
//! git repository at a ref and subdirectory ([`git`]). [`read`] reads it
//! once, for `plan`, `apply` and `validate`; [`Watch`] announces each new
//! revision until dropped, for `watch`. Both yield the same [`Snapshot`].

pub mod dir;
pub mod git;
mod watch;

pub use git::GitSource;
pub use watch::{Update, Watch};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One spec file as read from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path as the user should see it in diagnostics: relative to the
    /// directory given on the command line, or as given for a single file;
    /// for git, relative to the repository's root.
    pub path: PathBuf,
    pub text: String,
    /// Which version of the file this is, when the path alone does not say
    /// (the short commit of a git source). Diagnostics show it after the
    /// position: `fleet/github.yaml:7:3 @ 1a2b3c4`.
    pub at: Option<String>,
}

impl SourceFile {
    /// A file read from the file system as it is now.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> SourceFile {
        SourceFile {
            path: path.into(),
            text: text.into(),
            at: None,
        }
    }
}

/// What the source was and which revision of it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `dir` or `git`.
    pub kind: String,
    /// The paths as the user gave them, or the URL (credentials hidden, see
    /// [`crate::model::urls::redact`]) followed by `#REF:PATH` when a ref
    /// or path was given. It is printed, and kept in saved plans, the
    /// history and `/healthz`.
    pub location: String,
    /// A full git commit SHA, or for directories a content hash of every spec file.
    pub revision: String,
}

/// Everything read from a source at one revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub info: SourceInfo,
    pub files: Vec<SourceFile>,
}

/// Where specs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Spec files and directories (walked for `*.yaml` and `*.yml`).
    Paths(Vec<PathBuf>),
    /// A git repository at a ref and subdirectory.
    Git(GitSource),
}

/// Reads `loc` once at its current revision: a directory as it is now; a
/// git source after fetching it. `cache` is a directory the source may keep
/// copies in (git keeps one bare repository per URL under it); directory
/// sources ignore it. Blocking: async callers use `spawn_blocking`.
pub fn read(loc: &Location, cache: &Path) -> Result<Snapshot, SourceError> {
    match loc {
        Location::Paths(paths) => dir::read(paths),
        Location::Git(source) => {
            let mut mirror = git::Mirror::open(source, cache)?;
            mirror.fetch(&git::Auth::from_env())?;
            let commit = mirror.resolve()?;
            Ok(mirror.read(commit)?)
        }
    }
}

/// Errors reading a source. Each names the path or URL it concerns.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SourceError {
    /// A path given on the command line does not exist.
    #[error("source path {path} does not exist")]
    #[diagnostic(help(
        "check the path; mcpctl reads *.yaml and *.yml files from files or directories"
    ))]
    NotFound { path: PathBuf },
    /// Reading a file or directory failed.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A spec file is not UTF-8.
    #[error("{path} is not valid UTF-8")]
    #[diagnostic(help("save the file as UTF-8"))]
    NotUtf8 { path: PathBuf },
    /// Fetching or reading a git source failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Git(#[from] git::GitError),
    /// The file system could not be watched for changes.
    #[error("cannot watch {path} for changes")]
    #[diagnostic(help(
        "on Linux, each watched directory takes an inotify watch: raise fs.inotify.max_user_watches, or fs.inotify.max_user_instances when many watchers run"
    ))]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}
