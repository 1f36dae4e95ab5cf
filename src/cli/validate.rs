//! `mcpctl validate`: parse and validate spec files, without a runtime
//! (a git source is fetched).

use super::{GitArgs, Global, Outcome};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Spec files or directories (walked for *.yaml and *.yml).
    #[arg(default_value = ".", conflicts_with = "git")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub git: GitArgs,
}

pub async fn run(global: &Global, args: Args) -> miette::Result<Outcome> {
    let location = args.git.location(&args.paths);
    let (source, servers) = super::load_source(global, &location).await?;
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
