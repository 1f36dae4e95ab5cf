//! `mcpctl history`: the history, oldest first: when, which source
//! revision, how many actions, and how it ended; under each entry, the
//! actions it handed out (the first [`CHANGES_CAP`]). Entries are applies,
//! `watch`'s changes of course (a revision taken up or refused, a pass that
//! acted, convergence) and suspensions and resumptions.

use super::{Format, Global, Outcome};
use crate::model::{CHANGES_CAP, HistoryEntry};
use crate::state::Store;
use miette::IntoDiagnostic;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Only the last N entries.
    #[arg(long)]
    pub tail: Option<usize>,
}

pub async fn run(global: &Global, args: Args) -> miette::Result<Outcome> {
    let mut entries = Store::new(global.state_path()).history_async().await?;
    if let Some(n) = args.tail {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    let text = match args.output {
        Format::Json => json(&entries).into_diagnostic()?,
        Format::Text => text(&entries),
    };
    super::write_stdout(&text)?;
    Ok(Outcome::Success)
}

fn json(entries: &[HistoryEntry]) -> serde_json::Result<String> {
    let rows: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "at": e.at.rfc3339(),
                "revision": e.revision,
                "source": e.source,
                "actions": e.actions,
                "outcome": e.outcome,
                "changes": e.changes,
            })
        })
        .collect();
    Ok(serde_json::to_string_pretty(&rows)? + "\n")
}

/// The table, each entry's actions indented under its row.
fn text(entries: &[HistoryEntry]) -> String {
    let body: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.at.rfc3339(),
                short_revision(&e.revision),
                e.actions.to_string(),
                e.outcome.clone(),
            ]
        })
        .collect();
    let table = super::get::table(&["TIME", "REVISION", "ACTIONS", "OUTCOME"], &body);
    // One line per row (no cell holds a line break), after the header.
    let mut lines = table.lines();
    let mut out = String::with_capacity(table.len());
    if let Some(header) = lines.next() {
        out.push_str(header);
        out.push('\n');
    }
    for (line, e) in lines.zip(entries) {
        out.push_str(line);
        out.push('\n');
        for c in &e.changes {
            let instance = c.instance.as_deref().unwrap_or("-");
            out.push_str(&format!(
                "    {:<7} {} {instance}: {}\n",
                c.action, c.server, c.reason
            ));
        }
        let untold = e.actions.saturating_sub(e.changes.len());
        if untold > 0 && !e.changes.is_empty() {
            out.push_str(&format!(
                "    … and {untold} more (the history keeps the first {CHANGES_CAP})\n"
            ));
        }
    }
    out
}

/// Git SHAs and content hashes shortened the way `git log --oneline` does.
fn short_revision(r: &str) -> String {
    let bare = r.strip_prefix("sha256:").unwrap_or(r);
    bare.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, Timestamp};

    fn entries() -> Vec<HistoryEntry> {
        let change = |action: &str, instance: Option<&str>, reason: &str| Change {
            action: action.into(),
            server: "alpha".into(),
            instance: instance.map(str::to_owned),
            reason: reason.into(),
        };
        let entry = |outcome: &str, actions: usize, changes: Vec<Change>| HistoryEntry {
            at: Timestamp(1_780_000_000_000),
            revision: "sha256:0123456789abcdef".into(),
            source: "fleet".into(),
            actions,
            outcome: outcome.into(),
            changes,
        };
        vec![
            entry(
                "watch: reconciling: 1 to start, 1 to fail",
                2,
                vec![
                    change("start", None, "replace failed instance"),
                    change("fail", Some("01jabc"), "container not found"),
                ],
            ),
            entry(
                "watch: applying: 22 to start",
                22,
                (0..CHANGES_CAP)
                    .map(|_| change("start", None, "new server"))
                    .collect(),
            ),
            entry("suspend: alpha (left as it is until resumed)", 0, vec![]),
        ]
    }

    #[test]
    fn text_lists_each_entrys_actions_under_it() {
        let out = text(&entries());
        assert!(
            out.contains("    fail    alpha 01jabc: container not found\n"),
            "{out}"
        );
        assert!(out.contains("… and 2 more"), "{out}");
        insta::assert_snapshot!(out);
    }

    #[test]
    fn json_has_each_entrys_changes() {
        let mut entries = entries();
        // Twenty starts alike say nothing more in JSON than in text.
        entries.remove(1);
        let out = json(&entries).expect("json");
        let v: serde_json::Value = serde_json::from_str(&out).expect("parse");
        assert_eq!(v[0]["changes"][1]["instance"], "01jabc");
        assert_eq!(v[1]["changes"], serde_json::json!([]));
        insta::assert_snapshot!(out);
    }
}
