//! `mcpctl import`: other tools' MCP server definitions in, `McpServer`
//! drafts and warnings out (design §8d). It owns reading a registry
//! `server.json` (`server_json.rs`) and the client configs of Claude,
//! Cursor and VS Code (`client.rs`), the mapping they share from a command
//! line, an env map or a header to what the YAML format can carry
//! (`map.rs`), the YAML text of the drafts (`render.rs`), and the located
//! errors of input it cannot read (`error.rs`).
//!
//! Everything here is pure: text in, [`Imported`] out, no file system and
//! no environment. Three rules hold throughout:
//! - a value that looks like a credential becomes a `secretRef` and is
//!   never copied, into the YAML, a warning or an error;
//! - nothing is dropped silently: what cannot be carried is named in a
//!   [`Warning`] and, where it belongs to a server, in a comment of its YAML;
//! - a draft that cannot run as imported (a local command, a required
//!   value the source does not give) still validates: it gets
//!   `replicas: 0` and a `TODO` comment for each thing to finish, so that
//!   applying it unread starts nothing.

mod client;
mod error;
mod map;
mod render;
mod server_json;

pub use error::{ImportError, SyntaxError};
pub use render::{document, documents};

use crate::spec::{PackageRuntime, SecretRef, Transport};
use serde_json::Value;

/// The formats `import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A registry `server.json` (schemas 2025-09-29 to 2025-12-11).
    ServerJson,
    /// Claude Desktop's or Claude Code's `mcpServers`.
    Claude,
    /// VS Code's `mcp.json`: `servers` and `inputs`.
    Vscode,
    /// Cursor's `mcp.json`: `mcpServers`, like Claude's.
    Cursor,
}

impl Format {
    pub const ALL: [Format; 4] = [
        Format::ServerJson,
        Format::Claude,
        Format::Vscode,
        Format::Cursor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::ServerJson => "server-json",
            Format::Claude => "claude",
            Format::Vscode => "vscode",
            Format::Cursor => "cursor",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one file became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub format: Format,
    /// The format was told from the content, not given.
    pub detected: bool,
    /// In the order of the file (sorted by key for client configs, whose
    /// maps serde_json reads sorted).
    pub servers: Vec<Draft>,
    /// Warnings about the file, or about a server that was not imported.
    pub warnings: Vec<Warning>,
}

impl Imported {
    /// Every warning: the file's, then each draft's, by server.
    pub fn all_warnings(&self) -> Vec<Warning> {
        let mut all = self.warnings.clone();
        for d in &self.servers {
            all.extend(d.warnings.iter().map(|m| Warning {
                server: Some(d.name.clone()),
                message: m.clone(),
            }));
            all.extend(d.todos.iter().map(|m| Warning {
                server: Some(d.name.clone()),
                message: format!("TODO: {m}"),
            }));
        }
        all
    }

    /// Every secret the drafts refer to, in server order: what the user
    /// must create before a plan can resolve them.
    pub fn secrets(&self) -> Vec<(&Draft, &NeededSecret)> {
        self.servers
            .iter()
            .flat_map(|d| d.secrets.iter().map(move |s| (d, s)))
            .collect()
    }
}

/// Something that was not carried over as it was, or needs a hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The server it concerns (its imported name), if any.
    pub server: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.server {
            Some(s) => write!(f, "{s}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// One `McpServer` to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// A DNS label, unique within the import.
    pub name: String,
    /// Where it came from, for the YAML's first comment: the key in the
    /// client config, or the registry name.
    pub origin: String,
    pub workload: DraftWorkload,
    pub command: Vec<String>,
    /// `None` is the format's default (stdio, or streamable HTTP for an
    /// external server).
    pub transport: Option<Transport>,
    /// With an HTTP transport, where the server listens in its container.
    pub port: Option<u16>,
    pub path: Option<String>,
    pub env: Vec<(String, DraftValue)>,
    /// The source turned it off (`disabled: true`): `replicas: 0`.
    pub disabled: bool,
    /// What the user must finish before it can run; any makes `replicas: 0`.
    pub todos: Vec<String>,
    /// What was not carried over, or carried over differently; also
    /// comments in its YAML.
    pub warnings: Vec<String>,
    /// Comments for the reader that need no action.
    pub notes: Vec<String>,
    pub secrets: Vec<NeededSecret>,
}

impl Draft {
    fn new(name: String, origin: String, workload: DraftWorkload) -> Draft {
        Draft {
            name,
            origin,
            workload,
            command: Vec::new(),
            transport: None,
            port: None,
            path: None,
            env: Vec::new(),
            disabled: false,
            todos: Vec::new(),
            warnings: Vec::new(),
            notes: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// Runs nothing until a human has looked at it.
    pub fn is_parked(&self) -> bool {
        self.disabled || !self.todos.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DraftWorkload {
    Image(String),
    Package {
        name: String,
        runtime: PackageRuntime,
        version: Option<String>,
    },
    External {
        url: String,
        headers: Vec<(String, DraftValue)>,
    },
    /// Nothing mcpctl can run as it stands (a local script): a stand-in
    /// image that never resolves, to be replaced by one built for it.
    Placeholder {
        original: String,
    },
}

/// The stand-in image of a [`DraftWorkload::Placeholder`]: `.invalid` is
/// reserved (RFC 2606), so no registry can ever answer for it.
pub fn placeholder_image(name: &str) -> String {
    format!("replace-me.invalid/{name}:local")
}

/// An env or header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DraftValue {
    Plain(String),
    /// `prefix` is sent before the secret (headers only; empty for env).
    Secret {
        secret: SecretRef,
        prefix: String,
    },
    /// No value to write: a commented-out line with this note. `required`
    /// lines are also in the draft's TODOs.
    Missing {
        note: String,
        required: bool,
    },
}

/// A secret a draft refers to, and where its value is to be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeededSecret {
    pub secret: SecretRef,
    /// What takes it: `env GITHUB_TOKEN`, `header Authorization`.
    pub used_by: String,
    /// Where the user will find the value, as a clause that can stand in
    /// parentheses.
    pub from: String,
}

/// Reads `text` (the contents of `file`, which only names it in errors) as
/// `format`, or as the format its content shows when `format` is `None`.
pub fn import(text: &str, file: &str, format: Option<Format>) -> Result<Imported, ImportError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let root: Value =
        serde_json::from_str(text).map_err(|e| ImportError::syntax(file, text, &e))?;
    let Value::Object(map) = &root else {
        return Err(ImportError::NotAnObject {
            file: file.to_owned(),
            found: map::kind(&root),
        });
    };
    let detected = format.is_none();
    let format = match format {
        Some(f) => {
            check_shape(file, map, f)?;
            f
        }
        None => detect(map).ok_or_else(|| ImportError::Unrecognised {
            file: file.to_owned(),
            keys: map::key_list(map.keys()),
        })?,
    };
    let mut out = Imported {
        format,
        detected,
        servers: Vec::new(),
        warnings: Vec::new(),
    };
    match format {
        Format::ServerJson => server_json::import(map, &mut out, file)?,
        Format::Claude | Format::Cursor | Format::Vscode => client::import(map, &mut out, file)?,
    }
    Ok(out)
}

/// The format whose marks `root` carries. Claude's and Cursor's files
/// have the same shape, so both read as `claude`; the mapping is the same.
pub fn detect(root: &serde_json::Map<String, Value>) -> Option<Format> {
    if root.contains_key("mcpServers") {
        return Some(Format::Claude);
    }
    if root.contains_key("servers") || vscode_settings(root).is_some() {
        return Some(Format::Vscode);
    }
    let schema = root
        .get("$schema")
        .and_then(Value::as_str)
        .is_some_and(|s| s.contains("server.schema.json"));
    let registry_name = root
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| n.contains('/'));
    if schema || root.contains_key("packages") || root.contains_key("remotes") || registry_name {
        return Some(Format::ServerJson);
    }
    None
}

/// VS Code's user `settings.json` keeps the same config under `mcp`.
fn vscode_settings(
    root: &serde_json::Map<String, Value>,
) -> Option<&serde_json::Map<String, Value>> {
    root.get("mcp")
        .and_then(Value::as_object)
        .filter(|m| m.contains_key("servers"))
}

fn check_shape(
    file: &str,
    root: &serde_json::Map<String, Value>,
    format: Format,
) -> Result<(), ImportError> {
    let fits = match format {
        Format::ServerJson => detect(root) == Some(Format::ServerJson),
        Format::Claude | Format::Cursor => root.contains_key("mcpServers"),
        Format::Vscode => root.contains_key("servers") || vscode_settings(root).is_some(),
    };
    if fits {
        return Ok(());
    }
    Err(ImportError::WrongShape {
        file: file.to_owned(),
        format,
        expected: match format {
            Format::ServerJson => "`name` (namespace/server), `packages` or `remotes`",
            Format::Claude | Format::Cursor => "`mcpServers`",
            Format::Vscode => "`servers`",
        },
        detected: detect(root),
        keys: map::key_list(root.keys()),
    })
}

#[cfg(test)]
mod tests;
