//! `mcpctl watch`: the always-on reconciler. It follows a directory (inotify)
//! or a git repository (a fetch every `--interval`, and on the webhook), and
//! passes on every revision, runtime event and timer, until SIGTERM or
//! SIGINT, when it lets the actions in flight finish and exits 0. It serves
//! `/healthz`, `/metrics` and `/hooks/sync` on `--listen`.

use super::{GitArgs, Global, Outcome};
use crate::model::SecretValue;
use crate::reconcile::{self, Resolver, Shared, SourceEvent};
use crate::source::{Update, Watch};
use crate::spec::Limits;
use crate::state::Store;
use miette::{IntoDiagnostic, WrapErr};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Spec files or directories to follow.
    #[arg(default_value = ".")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub git: GitArgs,
    /// How often a git source is fetched (a directory is watched, and read
    /// this often as well, as a safety net).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// A pass at least this often, whatever else happens.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub resync: Duration,
    /// Where /healthz, /metrics and /hooks/sync are served.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// Plan on every trigger and report drift (log, /metrics, /healthz); change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Runtime calls in flight at once.
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,
    /// Accept a revision with no servers even when some are running (removes them all).
    #[arg(long)]
    pub allow_empty: bool,
}

pub async fn run(global: &Global, args: Args) -> miette::Result<Outcome> {
    let store = Store::new(global.state_path());
    // One applier per state file; a dry run writes nothing and needs no lock.
    let _lock = if args.dry_run {
        None
    } else {
        Some(store.lock_applier(&super::apply::command_line())?)
    };
    let rt = super::connect::runtime(global).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot listen on {}", args.listen))?;
    let location = args.git.location(&args.paths);
    let (watch, mut updates) = Watch::start(location, super::git_cache(global), args.interval)?;
    // The source's updates, as the loop takes them.
    let (events, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(u) = updates.recv().await {
            let e = match u {
                Update::Revision {
                    snapshot,
                    forced_from,
                } => SourceEvent::Revision {
                    snapshot,
                    forced_from,
                },
                Update::Failed { error } => SourceEvent::Failed(error),
            };
            if events.send(e).await.is_err() {
                return;
            }
        }
    });
    let shared = Arc::new(Shared::default());
    let secret = std::env::var("MCPCTL_WEBHOOK_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .map(SecretValue::new);
    if secret.is_none() {
        tracing::info!("MCPCTL_WEBHOOK_SECRET is not set: /hooks/sync refuses every call");
    }
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(reconcile::serve(
        listener,
        shared.clone(),
        secret,
        Default::default(),
        async {
            let _ = server_stopped.await;
        },
    ));
    tracing::info!(listen = %args.listen, dry_run = args.dry_run, "watching");
    let resolver = Resolver {
        secrets_dir: global.secrets_dir.clone(),
        native_env_secrets: global.runtime == super::RuntimeKind::Kubernetes,
        runners: crate::runtime::runners_from_env(),
        limits: Limits::new(global.max_replicas),
        allow_empty: args.allow_empty,
    };
    let opts = reconcile::Options {
        resync: args.resync,
        dry_run: args.dry_run,
        parallelism: args.parallelism,
    };
    let result = reconcile::watch(
        &rt,
        &store,
        &resolver,
        rx,
        &|| watch.sync_now(),
        &shared,
        &opts,
        signalled(),
    )
    .await;
    let _ = stop_server.send(());
    let _ = server.await;
    result?;
    tracing::info!("stopped");
    Ok(Outcome::Success)
}

/// Resolves on SIGTERM or SIGINT. If the handlers cannot be installed, it
/// never resolves: the process is then stopped the hard way, which the
/// intents make safe.
async fn signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop mcpctl watch with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}
