//! `mcpctl logs INSTANCE|SERVER`: an instance's logs, or every instance's of
//! a server, each line prefixed by its instance when there are several.
//!
//! A stdio server's stdout is the MCP protocol, so every readiness and
//! liveness probe adds JSON-RPC lines to it. They are left out by default,
//! so what the server itself logged is not buried; `--protocol` shows them.

use super::{Global, Outcome};
use crate::model::{Endpoint, Instance, Snapshot};
use crate::runtime::{LogLine, LogStream, Runtime};
use miette::miette;
use std::collections::VecDeque;
use std::sync::OnceLock;
use tokio::sync::Notify;

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
    /// Also show the JSON-RPC messages on a stdio server's stdout (the MCP
    /// traffic of mcpctl's probes and of clients).
    #[arg(long)]
    pub protocol: bool,
}

/// Whether a stdout line of a stdio server is MCP traffic: a JSON-RPC 2.0
/// message, or a batch of them.
fn is_protocol(line: &LogLine) -> bool {
    if line.stream != LogStream::Stdout {
        return false;
    }
    let text = line.text.trim();
    if !(text.starts_with('{') || text.starts_with('[')) {
        return false;
    }
    let jsonrpc = |v: &serde_json::Value| v.get("jsonrpc").and_then(|j| j.as_str()) == Some("2.0");
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(items)) => !items.is_empty() && items.iter().all(jsonrpc),
        Ok(v) => jsonrpc(&v),
        Err(_) => false,
    }
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
    let snapshot = super::load_own_state(global).await?;
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
    // The first failed write to stdout. It also ends the streams, which with
    // `-f` would otherwise run on for as long as the containers do.
    let failed = OnceLock::new();
    let closed = Notify::new();
    let follows = targets
        .iter()
        .filter_map(|inst| Some((inst, inst.handle.as_deref()?)))
        .map(|(inst, handle)| {
            let (rt, failed, closed) = (&rt, &failed, &closed);
            async move {
                let tag = if prefix {
                    format!("[{}] ", inst.id)
                } else {
                    String::new()
                };
                let mut print = |line: LogLine| {
                    if failed.get().is_some() {
                        return;
                    }
                    if let Err(e) = super::write_stdout(&format!("{tag}{}\n", line.text)) {
                        let _ = failed.set(e);
                        closed.notify_one();
                    }
                };
                let filter = inst.endpoint == Some(Endpoint::Stdio) && !args.protocol;
                if !filter {
                    return rt
                        .logs(handle, Some(args.tail), args.follow, &mut print)
                        .await;
                }
                // The last `tail` lines that are not protocol: the runtime's own
                // tail would count the protocol lines too, so read all and keep
                // the end. A follow then starts from here.
                let mut kept: VecDeque<LogLine> = VecDeque::with_capacity(args.tail.min(4096));
                let mut keep = |line: LogLine| {
                    if !is_protocol(&line) && args.tail > 0 {
                        if kept.len() == args.tail {
                            kept.pop_front();
                        }
                        kept.push_back(line);
                    }
                };
                rt.logs(handle, None, false, &mut keep).await?;
                kept.into_iter().for_each(&mut print);
                if args.follow {
                    let mut print_new = |line: LogLine| {
                        if !is_protocol(&line) {
                            print(line)
                        }
                    };
                    rt.logs(handle, Some(0), true, &mut print_new).await?;
                }
                Ok(())
            }
        });
    let results = tokio::select! {
        results = futures_util::future::join_all(follows) => results,
        () = closed.notified() => Vec::new(),
    };
    if let Some(e) = failed.into_inner() {
        return Err(e.into());
    }
    for r in results {
        r?;
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(stream: LogStream, text: &str) -> LogLine {
        LogLine {
            stream,
            text: text.into(),
        }
    }

    #[test]
    fn json_rpc_on_stdout_is_protocol_and_nothing_else_is() {
        let out = |t| is_protocol(&line(LogStream::Stdout, t));
        assert!(out(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#));
        assert!(out(
            r#"  [{"jsonrpc":"2.0","method":"x"},{"jsonrpc":"2.0","id":2,"result":1}]"#
        ));
        assert!(!out(r#"{"level":"info","msg":"jsonrpc 2.0 ready"}"#));
        assert!(!out("listening on stdio"));
        assert!(!out("[]"));
        assert!(!out(r#"{"jsonrpc":"1.0"}"#));
        // stderr is the server's own, whatever it looks like.
        assert!(!is_protocol(&line(
            LogStream::Stderr,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#
        )));
    }
}
