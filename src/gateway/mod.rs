//! `mcpctl gateway`: one streamable HTTP endpoint per server,
//! `/servers/<name>/mcp`, routed only to instances mcpctl has found RUNNING.
//! This module owns the routing table built from the state's snapshot
//! ([`table`]), the choice of instance per request and the pinning of
//! 2025-era sessions ([`balance`]), the token and `Origin` checks
//! ([`access`]), the proxy and its listener ([`proxy`]), what it counts for
//! `/metrics` ([`metrics`]), and following the state file as the fleet
//! changes ([`follow`]).
//!
//! It sits beside `apply` in the layers: it reads the snapshot and talks to
//! instances, and never imports `reconcile` or `cli`. HTTP instances and
//! external servers (with the headers the caller resolved for them) are
//! proxied; stdio instances are reached over their stdio bridge
//! ([`stdio`], [`crate::bridge`]). [`message`] reads each POSTed message
//! and checks the 2026-07-28 mirror headers against it.

pub mod access;
pub mod balance;
mod follow;
pub mod message;
pub mod metrics;
pub mod proxy;
pub mod stdio;
pub mod table;

#[cfg(test)]
mod tests;

pub use access::{Access, Denial, check_listen};
pub use follow::{OBSERVE_EVERY, Observe, follow, table_of};
pub use proxy::{Limits, Proxy, ServerHeaders, serve};
pub use stdio::{Attach, Bridging};
pub use table::{Backend, Refusal, Route, Seen, Table, Upstream};

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GatewayError {
    #[error("refusing to serve the gateway on {0} without a token: it is not a loopback address")]
    #[diagnostic(
        code(mcpctl::gateway::open_listener),
        help("give --token-file PATH, or listen on 127.0.0.1")
    )]
    OpenListener(SocketAddr),
    #[error(
        "the header {name:?} of {server} cannot be sent: its name or value is not valid in HTTP"
    )]
    #[diagnostic(code(mcpctl::gateway::bad_header))]
    BadHeader { server: String, name: String },
    #[error("cannot set up TLS for external servers: {0}")]
    #[diagnostic(code(mcpctl::gateway::tls))]
    Tls(String),
}
