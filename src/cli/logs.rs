//! `mcpctl logs INSTANCE|SERVER`: an instance's logs, or every instance's of
//! a server, each line prefixed by its instance when there are several.

use super::{Global, Outcome};
use crate::model::{Instance, Snapshot};
use crate::runtime::Runtime;
use crate::state::Store;
use miette::miette;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An instance id (or unique prefix), or a server name.
    pub target: String,
    /// Lines from the end of each log.
    #[arg(long, default_value_t = 100)]
    pub tail: usize,
    /// Keep printing new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// An instance by id or unique id prefix.
pub fn find_instance<'a>(snapshot: &'a Snapshot, id: &str) -> miette::Result<&'a Instance> {
    let matches: Vec<&Instance> = snapshot
        .instances
        .values()
        .filter(|i| i.id.0.starts_with(id))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(miette!(
            help = "list instances with `mcpctl get instances`",
            "no instance {id} in the state"
        )),
        many => Err(miette!(
            "{id} is ambiguous: it starts {} instance ids; give more characters",
            many.len()
        )),
    }
}

pub async fn run(global: &Global, args: Args) -> miette::Result<Outcome> {
    let snapshot = Store::new(global.state_path()).load_async().await?;
    let by_server: Vec<&Instance> = snapshot
        .instances
        .values()
        .filter(|i| i.server == args.target)
        .collect();
    let targets = if by_server.is_empty() {
        vec![find_instance(&snapshot, &args.target)?]
    } else {
        by_server
    };
    let rt = super::connect::runtime(global).await?;
    let prefix = targets.len() > 1;
    let follows = targets.iter().filter(|i| !i.handle.is_empty()).map(|inst| {
        let rt = &rt;
        async move {
            let tag = if prefix {
                format!("[{}] ", inst.id)
            } else {
                String::new()
            };
            let mut print = |line: crate::runtime::LogLine| println!("{tag}{}", line.text);
            rt.logs(&inst.handle, args.tail, args.follow, &mut print)
                .await
        }
    });
    for r in futures_util::future::join_all(follows).await {
        r?;
    }
    Ok(Outcome::Success)
}
