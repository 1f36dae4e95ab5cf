//! mcpctl: a declarative GitOps reconciler for MCP servers.
//!
//! Data flows one way: `source` reads files, `spec` turns them into validated
//! servers, `secrets` resolves references, `plan` diffs the desired servers
//! against the snapshot and the observation, `apply` carries the plan out
//! through a `runtime` (checking readiness with `probe`), and `state`
//! records what happened. `model` holds the values they all share.
//!
//! # Layout
//! - [`model`]: shared values: ids, time, units, observations, snapshot records.
//! - [`source`]: where spec files come from (directories, git) and their revision; watching them.
//! - [`spec`]: the `McpServer` YAML model, validation, canonical form and spec hash.
//! - [`secrets`]: the `secretRef` provider chain and keyed digests.
//! - [`plan`]: the pure planner and its text/JSON renderings.
//! - [`state`]: the redb store of the snapshot; the applier lock.
//! - [`runtime`]: the runtime trait, Docker, and an in-memory fake.
//! - [`probe`]: the MCP handshake that decides readiness.
//! - [`listen`]: the accept loop and limits of mcpctl's HTTP listeners.
//! - [`apply`]: the reconcile pass and the loop that runs it.
//! - [`gateway`]: one streamable HTTP endpoint per server, routed to its RUNNING instances.
//! - [`reconcile`]: `watch`, the pass driven by triggers; health, metrics, webhook.
//! - [`import`]: other tools' server definitions (registry server.json, Claude, Cursor, VS Code) as McpServer drafts.
//! - [`cli`]: clap types and one module per subcommand.

pub mod apply;
pub mod bridge;
pub mod cli;
pub mod gateway;
pub mod import;
pub mod listen;
pub mod model;
pub mod plan;
pub mod probe;
pub mod reconcile;
pub mod runtime;
pub mod secrets;
pub mod source;
pub mod spec;
pub mod state;
