//! `mcpctl validate`: parse and validate spec files, offline.

use super::{Global, Outcome};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Spec files or directories (walked for *.yaml and *.yml).
    #[arg(default_value = ".")]
    pub paths: Vec<PathBuf>,
}

pub fn run(global: &Global, args: Args) -> miette::Result<Outcome> {
    let (source, servers) = super::load_source(global, &args.paths)?;
    let files = source.files.len();
    super::write_stdout(&format!(
        "{} valid: {} server{} in {} file{}\n",
        source.info.location,
        servers.len(),
        if servers.len() == 1 { "" } else { "s" },
        files,
        if files == 1 { "" } else { "s" },
    ))?;
    Ok(Outcome::Success)
}
