//! `mcpctl schema`: prints the JSON Schema of `McpServer` documents.

use super::Outcome;

pub fn run() -> miette::Result<Outcome> {
    let schema = crate::spec::json_schema();
    // Serialising a serde_json::Value cannot fail.
    let text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    super::write_stdout(&format!("{text}\n"))?;
    Ok(Outcome::Success)
}
