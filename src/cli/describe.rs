//! `mcpctl describe instance ID`: everything known about one instance: the
//! record, and (unless `--refresh=false`) its container as the runtime
//! reports it now, with any disagreement between the two.

use super::{Global, Outcome};
use crate::model::{Timestamp, short_duration};
use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    Instance,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    pub what: What,
    /// The instance id (a unique prefix is enough).
    pub id: String,
    /// Ask the runtime about the container; `--refresh=false` shows the record alone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub refresh: bool,
}

pub async fn run(global: &Global, args: Args) -> miette::Result<Outcome> {
    let snapshot = super::load_own_state(global).await?;
    let inst = super::logs::find_instance(&snapshot, &args.id)?;
    // The container as the runtime reports it now: `None` when not asked,
    // or for an external server, which has none.
    let container = match (args.refresh, &inst.handle) {
        (true, Some(handle)) => Some(match super::connect::runtime(global).await {
            Ok(rt) => rt.inspect(handle).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }),
        _ => None,
    };
    let now = Timestamp::now();
    let mut out = String::new();
    let field =
        |out: &mut String, k: &str, v: &str| out.push_str(&format!("{:<16}{v}\n", format!("{k}:")));
    field(&mut out, "Instance", &inst.id.to_string());
    field(&mut out, "Server", &inst.server);
    let drift = match &container {
        Some(Ok(unit)) => super::get::live(inst, unit.as_ref()).drift,
        _ => None,
    };
    field(
        &mut out,
        "Status",
        &format!(
            "{} for {}{}",
            inst.status.as_str(),
            short_duration(now.since(inst.transitioned_at)),
            drift.map(|d| format!(" ({d})")).unwrap_or_default()
        ),
    );
    field(
        &mut out,
        "Reason",
        super::get::reason(inst, &snapshot, now)
            .as_deref()
            .unwrap_or("-"),
    );
    field(
        &mut out,
        "Endpoint",
        &inst
            .endpoint
            .as_ref()
            .map_or_else(|| "-".to_owned(), |e| e.to_string()),
    );
    field(
        &mut out,
        "Handle",
        inst.handle.as_deref().unwrap_or("- (no container)"),
    );
    field(&mut out, "Spec hash", &inst.spec_hash.to_string());
    field(
        &mut out,
        "Created",
        &format!(
            "{} ({} ago)",
            inst.created_at.rfc3339(),
            short_duration(now.since(inst.created_at))
        ),
    );
    field(&mut out, "Restarts", &inst.restarts.to_string());
    match &inst.mcp {
        Some(m) => {
            field(
                &mut out,
                "MCP",
                &format!("{} over {}", m.handshake, m.transport),
            );
            field(
                &mut out,
                "Server info",
                &format!("{} {}", m.server_name, m.server_version),
            );
            field(
                &mut out,
                "Probe latency",
                &format!("{:.1} ms", m.latency_ms),
            );
        }
        None => field(&mut out, "MCP", "no successful handshake yet"),
    }
    if inst.handle.is_some() {
        // The container's own view, when the runtime answers; the state alone is still worth showing.
        let shown = match &container {
            None => "not asked (--refresh=false)".to_owned(),
            Some(Ok(Some(unit))) => container_state(unit),
            Some(Ok(None)) => "not found".to_owned(),
            Some(Err(e)) => format!("unknown ({e})"),
        };
        field(&mut out, "Container", &shown);
    }
    out.push_str("History:\n");
    for t in &inst.history {
        out.push_str(&format!(
            "  {}  {:<8}  {}\n",
            t.at.rfc3339(),
            t.status.as_str(),
            t.reason
        ));
    }
    super::write_stdout(&out)?;
    Ok(Outcome::Success)
}

fn container_state(unit: &crate::model::Unit) -> String {
    let mut s = format!(
        "{}, restarts {}",
        unit.state.describe(),
        unit.restarts.unwrap_or(0)
    );
    if let Some(c) = unit.exit_code {
        s.push_str(&format!(", last exit {c}"));
    }
    // No live log line: describe knows no secrets to redact it with.
    // The recorded reason carries the last line, made safe when stored.
    s
}
