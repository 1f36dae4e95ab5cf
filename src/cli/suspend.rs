//! `mcpctl suspend SERVER` and `mcpctl resume SERVER`: the escape hatch for
//! incidents. A suspended server is left exactly as it is by every pass
//! (`apply` and `watch` alike) until it is resumed; `get servers` shows it.
//! Neither takes the applier lock: a suspension must land while `watch`
//! runs, and the next pass reads it. Each is recorded in the history, in
//! the same transaction, naming the server.

use super::{Global, Outcome};
use crate::model::{HistoryEntry, Snapshot, Suspension, Timestamp};
use crate::state::Store;
use miette::miette;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's name (`metadata.name`).
    pub server: String,
}

pub async fn suspend(global: &Global, args: Args) -> miette::Result<Outcome> {
    let store = Store::new(global.state_path());
    let snapshot = store.load_async().await?;
    let known = snapshot.servers.contains_key(&args.server)
        || snapshot.instances.values().any(|i| i.server == args.server);
    if !known {
        return Err(miette!(
            help = "list servers with `mcpctl get servers`",
            "no server {} in the state",
            args.server
        ));
    }
    let entry = Suspension {
        at: Timestamp::now(),
        by: super::apply::command_line(),
    };
    let name = args.server.clone();
    let record = history(
        &snapshot,
        format!("suspend: {name} (left as it is until resumed)"),
    );
    store
        .update_async(move |tx| {
            tx.suspend(&name, &entry)?;
            tx.push_history(&record)
        })
        .await?;
    super::write_stdout(&format!(
        "{} suspended: mcpctl leaves it as it is until `mcpctl resume {}`\n",
        args.server, args.server
    ))?;
    Ok(Outcome::Success)
}

pub async fn resume(global: &Global, args: Args) -> miette::Result<Outcome> {
    let store = Store::new(global.state_path());
    let snapshot = store.load_async().await?;
    if !snapshot.suspended.contains_key(&args.server) {
        super::write_stdout(&format!("{} is not suspended\n", args.server))?;
        return Ok(Outcome::Success);
    }
    let name = args.server.clone();
    let record = history(
        &snapshot,
        format!("resume: {name} (reconciled again from the next pass)"),
    );
    store
        .update_async(move |tx| {
            tx.resume(&name)?;
            tx.push_history(&record)
        })
        .await?;
    super::write_stdout(&format!(
        "{} resumed: the next pass reconciles it\n",
        args.server
    ))?;
    Ok(Outcome::Success)
}

/// A history entry for a suspension or resumption: no source was read, so
/// it carries the revision in force.
fn history(snapshot: &Snapshot, outcome: String) -> HistoryEntry {
    HistoryEntry {
        at: Timestamp::now(),
        revision: snapshot.revision.clone().unwrap_or_default(),
        source: String::new(),
        actions: 0,
        outcome,
        changes: Vec::new(),
    }
}
