//! The validated, defaulted server model that the rest of mcpctl consumes.
//! Parsing (with spans and diagnostics) lives in `parse`; nothing here can be
//! invalid, so downstream code never re-checks a field.

pub use crate::model::{PackageRuntime, Transport};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One desired MCP server: a validated `McpServer` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    /// Free-form; not part of the spec hash and changes nothing that runs.
    pub labels: BTreeMap<String, String>,
    pub spec: ServerSpec,
    /// Where the document was declared, for error messages.
    pub origin: Origin,
}

/// A place in a source file. `line` and `column` are 1-based and relative to
/// the file (not to the document within it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The version of the file (a short git commit), when the source has one.
    pub at: Option<String>,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)?;
        match &self.at {
            Some(at) => write!(f, " @ {at}"),
            None => Ok(()),
        }
    }
}

/// The `spec:` block with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// 0 keeps the definition with no instances.
    pub replicas: u32,
    pub workload: Workload,
    /// Arguments after the image entrypoint (or after the package runner's command).
    pub command: Vec<String>,
    pub transport: Transport,
    /// Container port; always set for HTTP transports of container workloads.
    pub port: Option<u16>,
    /// HTTP endpoint path; `None` for stdio. Defaults: `/mcp`, or `/sse` for SSE.
    pub path: Option<String>,
    pub env: BTreeMap<String, EnvValue>,
    pub resources: Resources,
    pub readiness: Readiness,
}

/// What runs: exactly one of image, package and external.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Workload {
    Image(String),
    Package(Package),
    External(External),
}

impl Workload {
    /// External servers have no container.
    pub fn is_external(&self) -> bool {
        matches!(self, Workload::External(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    pub runtime: PackageRuntime,
    /// `None` means "latest", which we resolve at run time (npx/uvx semantics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct External {
    /// A parsed, absolute http(s) URL, with no credentials in it (those go
    /// in `headers`).
    pub url: String,
    /// Headers sent with every request to the server, by name as written
    /// (names differ in more than case).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, HeaderValue>,
}

/// An `external.headers` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum HeaderValue {
    Plain(String),
    /// `prefix` (often `Bearer `), then the secret's value.
    Secret {
        #[serde(rename = "secretRef")]
        secret_ref: SecretRef,
        #[serde(skip_serializing_if = "String::is_empty")]
        prefix: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum EnvValue {
    Plain(String),
    Secret(SecretRef),
}

/// A reference to a secret; the value is looked up at plan time by `secrets`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SecretRef {
    pub name: String,
    pub key: String,
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.name, self.key)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Memory limit in bytes, parsed from quantities like `512Mi` or `1G`.
    pub memory_bytes: Option<u64>,
    /// The memory quantity as written, for the canonical form.
    pub memory: Option<String>,
    /// CPU limit in thousandths of a CPU (`0.5` is 500), so it can be compared exactly.
    pub millicpus: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// How long STARTING may last before the instance is an error. Default 60 s.
    pub timeout: Duration,
    /// Liveness probe period once RUNNING. Default 15 s.
    pub period: Duration,
    /// How long an instance must stay up, with no restart, after its probe
    /// passes, before it counts as RUNNING. Default 2 s, in the spirit of a
    /// Deployment's `minReadySeconds`: a server that answers and then dies
    /// half a second later is not ready.
    pub min_ready: Duration,
    /// Restarts before an instance was ever stable that make it a crash
    /// loop (ERROR, then back-off). Default 3.
    pub max_restarts: u32,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            timeout: Duration::from_secs(60),
            period: Duration::from_secs(15),
            min_ready: Duration::from_secs(2),
            max_restarts: 3,
        }
    }
}
