//! What a runtime is asked to run: a [`RunSpec`], with its program (an image,
//! or a package that the runtime lowers onto a runner image), transport and
//! environment, secrets already resolved.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    #[default]
    Stdio,
    Sse,
    StreamableHttp,
}

impl Transport {
    pub fn is_http(self) -> bool {
        !matches!(self, Transport::Stdio)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Stdio => "stdio",
            Transport::Sse => "sse",
            Transport::StreamableHttp => "streamable-http",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageRuntime {
    Node,
    Python,
}

/// The program of an instance, before a runtime lowers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    Image(String),
    /// Run by the runner image of `runtime`: `npx -y NAME@VERSION` or `uvx NAME==VERSION`.
    Package {
        runtime: PackageRuntime,
        name: String,
        version: Option<String>,
    },
}

/// The runner images that package programs run on. They are part of what
/// an instance runs, so they are part of its spec hash: changing one rolls
/// the instances that use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runners {
    pub node: String,
    pub python: String,
}

impl Default for Runners {
    fn default() -> Self {
        Runners {
            node: "mcpctl/node-runner".into(),
            python: "mcpctl/python-runner".into(),
        }
    }
}

impl Runners {
    pub fn image(&self, runtime: PackageRuntime) -> &str {
        match runtime {
            PackageRuntime::Node => &self.node,
            PackageRuntime::Python => &self.python,
        }
    }
}

/// A secret's value. Its `Debug` and `Display` are redacted, so a stray log
/// line or `{:?}` cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: String) -> Self {
        SecretValue(value)
    }

    /// The plaintext, for handing to a runtime and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(sensitive)")
    }
}

impl std::fmt::Display for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(sensitive)")
    }
}

/// An HTTP header sent with every request to a server reached by URL: an
/// external server's `headers`, or `mcpctl probe -H`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHeader {
    pub name: String,
    pub value: HttpHeaderValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpHeaderValue {
    Plain(String),
    /// A secret (with its prefix, e.g. `Bearer `): sent marked sensitive,
    /// never printed.
    Sensitive(SecretValue),
}

impl HttpHeaderValue {
    /// The text to put on the wire, and nowhere else.
    pub fn expose(&self) -> &str {
        match self {
            HttpHeaderValue::Plain(v) => v,
            HttpHeaderValue::Sensitive(v) => v.expose(),
        }
    }

    pub fn is_sensitive(&self) -> bool {
        matches!(self, HttpHeaderValue::Sensitive(_))
    }
}

impl HttpHeader {
    /// Whether `name` is an HTTP field name (RFC 9110 `token`): letters,
    /// digits and ``!#$%&'*+-.^_`|~``.
    pub fn is_valid_name(name: &str) -> bool {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    }

    /// The first character that cannot be in an HTTP field value: a control
    /// character other than tab. CR and LF are the dangerous ones (they
    /// would end the header and start another).
    pub fn invalid_value_char(value: &str) -> Option<char> {
        value.chars().find(|c| c.is_ascii_control() && *c != '\t')
    }
}

/// Headers the probe sets itself, per request: a user's value would clash
/// with the protocol's, so neither a spec nor `probe -H` may set them.
pub const PROBE_HEADERS: &[&str] = &[
    "accept",
    "connection",
    "content-length",
    "content-type",
    "host",
    "mcp-method",
    "mcp-protocol-version",
    "mcp-session-id",
    "transfer-encoding",
];

/// One environment variable of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: EnvSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSource {
    Plain(String),
    /// A `secretRef`, with the value resolved at plan time. A runtime that
    /// has secrets of its own (Kubernetes) may reference NAME/KEY instead.
    Secret {
        name: String,
        key: String,
        value: SecretValue,
    },
    /// A `secretRef` left unresolved, for a runtime that reads the secret
    /// itself (a Kubernetes `secretKeyRef`): its value never passes through
    /// mcpctl.
    Reference {
        name: String,
        key: String,
    },
}

impl EnvSource {
    /// The value to hand to a runtime that takes plain values; `None` for a
    /// reference only the runtime itself can read.
    pub fn expose(&self) -> Option<&str> {
        match self {
            EnvSource::Plain(v) => Some(v),
            EnvSource::Secret { value, .. } => Some(value.expose()),
            EnvSource::Reference { .. } => None,
        }
    }
}

/// Everything a runtime needs to start one instance. Secret values are
/// already resolved; this never goes to disk.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub instance: super::InstanceId,
    pub server: String,
    pub spec_hash: super::SpecHash,
    pub program: Program,
    /// Arguments after the image entrypoint, or after the runner's command.
    pub args: Vec<String>,
    pub transport: Transport,
    /// The container port of an HTTP transport.
    pub port: Option<u16>,
    pub path: Option<String>,
    pub env: Vec<EnvVar>,
    pub memory_bytes: Option<u64>,
    pub millicpus: Option<u32>,
}
