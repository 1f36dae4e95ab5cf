//! The `McpServer` YAML format (design §2): the serde model with spans, the
//! validation rules, the diagnostics that point at `file:line:column`, the
//! JSON Schema, and the canonical form and spec hash that the planner compares.
//!
//! Everything here is pure: it takes file contents that `source` has read and
//! never touches the file system itself.

pub mod canonical;
pub mod model;
pub mod parse;

pub use canonical::{Canonical, SecretDigests};
pub use model::*;
pub use parse::{Limits, SpecError, SpecErrors, clip, is_env_name, json_schema, load, load_with};
