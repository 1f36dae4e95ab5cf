//! `mcpctl history`: the apply history, oldest first: when, which source
//! revision, how many actions, and how it ended.

use super::{Format, Global, Outcome};
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
        Format::Json => {
            let rows: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "at": e.at.rfc3339(),
                        "revision": e.revision,
                        "source": e.source,
                        "actions": e.actions,
                        "outcome": e.outcome,
                    })
                })
                .collect();
            serde_json::to_string_pretty(&rows).into_diagnostic()? + "\n"
        }
        Format::Text => {
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
            super::get::table(&["TIME", "REVISION", "ACTIONS", "OUTCOME"], &body)
        }
    };
    super::write_stdout(&text)?;
    Ok(Outcome::Success)
}

/// Git SHAs and content hashes shortened the way `git log --oneline` does.
fn short_revision(r: &str) -> String {
    let bare = r.strip_prefix("sha256:").unwrap_or(r);
    bare.chars().take(12).collect()
}
