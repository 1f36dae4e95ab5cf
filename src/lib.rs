//! mcpctl: a declarative GitOps reconciler for MCP servers.
//!
//! Data flows one way: `source` reads files, `spec` turns them into validated
//! servers, `secrets` resolves references, `plan` diffs the desired servers
//! against the `state` snapshot and the `runtime` observation, `apply` carries
//! the plan out, and `state` records what happened.
//!
//! # Layout
//! - [`spec`]: the `McpServer` YAML model, validation, canonical form and spec hash.
//! - [`source`]: where spec files come from (directories now, git later) and their revision.
//! - [`secrets`]: the `secretRef` provider chain and keyed digests.
//! - [`state`]: the redb snapshot of instances, applied specs and history; the applier lock.
//! - [`runtime`]: the runtime trait, the observation type, and an in-memory fake.
//! - [`plan`]: the pure planner and its text/JSON renderings.
//! - [`cli`]: clap types and one module per subcommand.

pub mod apply;
pub mod cli;
pub mod plan;
pub mod probe;
pub mod runtime;
pub mod secrets;
pub mod source;
pub mod spec;
pub mod state;
pub mod time;
