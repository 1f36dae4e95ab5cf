//! Where specs come from, and the revision that names what was read.
//!
//! A source yields raw files and a revision; it does not parse them (that is
//! `spec`). Directories are read here; git sources come later and yield the
//! same [`Snapshot`] shape.

pub mod dir;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One spec file as read from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path as the user should see it in diagnostics: relative to the
    /// directory given on the command line, or as given for a single file.
    pub path: PathBuf,
    pub text: String,
}

/// What the source was and which revision of it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `dir` or `git`.
    pub kind: String,
    /// The paths or URL, as the user gave them.
    pub location: String,
    /// A git commit, or for directories a content hash of every spec file.
    pub revision: String,
}

/// Everything read from a source at one revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub info: SourceInfo,
    pub files: Vec<SourceFile>,
}

/// Errors reading a source. Each names the path it concerns.
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
}
