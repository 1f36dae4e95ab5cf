//! `mcpctl completion SHELL`: the shell's completion script for every
//! command and flag, generated from the same clap definition the parser
//! uses, so it cannot fall behind the CLI.

use super::{Cli, Outcome};
use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn run(args: Args) -> miette::Result<Outcome> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "mcpctl", &mut out);
    super::write_stdout(&String::from_utf8_lossy(&out))?;
    Ok(Outcome::Success)
}
