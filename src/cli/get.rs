//! `mcpctl get servers|instances`: what the state says, as a table, JSON or
//! YAML. Reads only the state, so it works while an applier runs.

use super::{Global, Outcome};
use crate::model::{Instance, Snapshot, Status};
use crate::model::{Timestamp, short_duration};
use crate::state::Store;
use miette::IntoDiagnostic;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    Servers,
    Instances,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    pub what: What,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// One row of `get instances`, and the contract of its JSON (design §3).
#[derive(Debug, Serialize)]
pub struct InstanceRow {
    pub id: String,
    pub server: String,
    pub status: &'static str,
    /// `None` (JSON null) when there is nothing to say.
    pub reason: Option<String>,
    pub endpoint: String,
    pub restarts: u32,
    pub created_at: String,
    pub spec_hash: String,
    pub transitioned_at: String,
    /// The MCP identity the instance proved in its last handshake.
    pub mcp: Option<crate::model::McpIdentity>,
}

#[derive(Debug, Serialize)]
pub struct ServerRow {
    pub name: String,
    pub desired: u32,
    pub ready: usize,
    /// Back-off, when the server is in one.
    pub status: Option<String>,
}

/// The reason an instance shows: its own, or its server's back-off for an ERROR.
pub fn reason(i: &Instance, snapshot: &Snapshot, now: Timestamp) -> Option<String> {
    if i.status == Status::Error
        && let Some(left) = snapshot.backoff_left(&i.server, now)
    {
        return Some(format!("{left}: {}", i.reason));
    }
    // A RUNNING instance has nothing to explain; why it got there is in its history.
    (i.status != Status::Running && !i.reason.is_empty()).then(|| i.reason.clone())
}

pub fn instance_rows(snapshot: &Snapshot, now: Timestamp) -> Vec<InstanceRow> {
    let mut rows: Vec<&Instance> = snapshot.instances.values().collect();
    rows.sort_by(|a, b| (&a.server, a.created_at, &a.id).cmp(&(&b.server, b.created_at, &b.id)));
    rows.into_iter()
        .map(|i| InstanceRow {
            id: i.id.to_string(),
            server: i.server.clone(),
            status: i.status.as_str(),
            reason: reason(i, snapshot, now),
            endpoint: i
                .endpoint
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            restarts: i.restarts,
            created_at: i.created_at.rfc3339(),
            spec_hash: i.spec_hash.to_string(),
            transitioned_at: i.transitioned_at.rfc3339(),
            mcp: i.mcp.clone(),
        })
        .collect()
}

pub fn server_rows(snapshot: &Snapshot, now: Timestamp) -> Vec<ServerRow> {
    snapshot
        .servers
        .iter()
        .map(|(name, applied)| ServerRow {
            name: name.clone(),
            desired: applied.replicas,
            ready: snapshot
                .instances
                .values()
                .filter(|i| {
                    &i.server == name && i.status == Status::Running && i.spec_hash == applied.hash
                })
                .count(),
            status: snapshot
                .backoff_left(name, now)
                .map(|left| format!("{left}: {}", snapshot.backoff[name].reason)),
        })
        .collect()
}

pub async fn run(global: &Global, args: Args) -> miette::Result<Outcome> {
    let snapshot = Store::new(global.state_path()).load_async().await?;
    let now = Timestamp::now();
    let text = match args.what {
        What::Instances => {
            let rows = instance_rows(&snapshot, now);
            match args.output {
                Format::Table => instances_table(&snapshot, &rows, now),
                Format::Json => serde_json::to_string_pretty(&rows).into_diagnostic()? + "\n",
                Format::Yaml => serde_saphyr::to_string(&rows).into_diagnostic()?,
            }
        }
        What::Servers => {
            let rows = server_rows(&snapshot, now);
            match args.output {
                Format::Table => servers_table(&rows),
                Format::Json => serde_json::to_string_pretty(&rows).into_diagnostic()? + "\n",
                Format::Yaml => serde_saphyr::to_string(&rows).into_diagnostic()?,
            }
        }
    };
    print!("{text}");
    Ok(Outcome::Success)
}

/// Left-aligned columns, two spaces apart, the last column unpadded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let n = cells.len();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == n {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
    out
}

fn instances_table(snapshot: &Snapshot, rows: &[InstanceRow], now: Timestamp) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let age = snapshot
                .instances
                .get(&crate::model::InstanceId(r.id.clone()))
                .map(|i| short_duration(now.since(i.created_at)))
                .unwrap_or_default();
            vec![
                r.server.clone(),
                r.id.clone(),
                r.status.to_owned(),
                age,
                r.restarts.to_string(),
                r.endpoint.clone(),
                r.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "SERVER", "INSTANCE", "STATUS", "AGE", "RESTARTS", "ENDPOINT", "REASON",
        ],
        &body,
    )
}

fn servers_table(rows: &[ServerRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                format!("{}/{}", r.ready, r.desired),
                r.status.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["NAME", "READY", "STATUS"], &body)
}
