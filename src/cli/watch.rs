//! `mcpctl watch`: the always-on reconciler. It follows a directory (inotify)
//! or a git repository (a fetch every `--interval`, and on the webhook), and
//! passes on every revision, runtime event and timer, until SIGTERM or
//! SIGINT, when it lets the actions in flight finish (for at most
//! `--shutdown-timeout`; a second signal stops it at once). It serves
//! `/healthz`, `/livez`, `/metrics` and `/hooks/sync` on `--listen`, and
//! with `--gateway` the gateway too, fed from its own passes and revisions.
//!
//! Only bad flags or configuration end it at start. An engine that is down,
//! a state file that is busy or held by another applier are waited out,
//! with `/healthz` saying why, as a service should.

use super::{GitArgs, Global, Outcome};
use crate::apply::lease::{Claim, Keeper};
use crate::gateway;
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
    /// Also serve the gateway (as `mcpctl gateway` does) on this address,
    /// routed from this watch's own view of the fleet, with external
    /// servers' headers from the revision in force. Anything but a loopback
    /// address needs --gateway-token-file.
    #[arg(long, value_name = "ADDR")]
    pub gateway: Option<SocketAddr>,
    /// With --gateway: a file holding the token every gateway request must
    /// carry as `Authorization: Bearer <token>`.
    #[arg(long, env = "MCPCTL_GATEWAY_TOKEN_FILE", value_name = "PATH")]
    pub gateway_token_file: Option<PathBuf>,
    /// On SIGTERM or SIGINT, how long the actions in flight may take to
    /// finish before mcpctl exits anyway (like a pod's grace period). A
    /// second signal exits at once. Either way the next run finishes what
    /// was cut short.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
}

pub async fn run(global: &Global, args: Args) -> miette::Result<Outcome> {
    let store = Store::new(global.state_path());
    // What the gateway needs is checked before anything listens: a bad
    // flag ends `watch` at start.
    let token = match (&args.gateway, &args.gateway_token_file) {
        (Some(_), Some(path)) => Some(super::gateway::read_token(path)?),
        _ => None,
    };
    if let Some(addr) = args.gateway {
        gateway::check_listen(addr, token.is_some())?;
    }
    let signals = Signals::install();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot listen on {}", args.listen))?;
    let gateway = match args.gateway {
        None => None,
        Some(addr) => {
            Some(Gateway::bind(global, addr, token.as_deref(), args.dry_run, &store).await?)
        }
    };
    let shared = Arc::new(Shared::default());
    let secret = std::env::var("MCPCTL_WEBHOOK_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .map(SecretValue::new);
    if secret.is_none() {
        tracing::info!("MCPCTL_WEBHOOK_SECRET is not set: /hooks/sync refuses every call");
    }
    // Served from the start, so that a watch waiting for its engine or its
    // lock says so on /healthz instead of refusing connections.
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(reconcile::serve(
        listener,
        shared.clone(),
        secret,
        reconcile::ListenerLimits::default(),
        async {
            let _ = server_stopped.await;
        },
    ));
    let (feed, gateway) = match gateway {
        Some(g) => (Some(g.feed), Some((g.proxy, g.listener))),
        None => (None, None),
    };
    // The gateway stops on the first signal, as `watch` does (its requests
    // in progress get their grace while the actions in flight drain), or
    // when `watch` ends on its own.
    let (stop_gateway, gateway_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = async {
        if let Some((proxy, listener)) = gateway {
            proxy
                .serve(listener, async {
                    tokio::select! {
                        () = signals.first() => {}
                        _ = gateway_stopped => {}
                    }
                })
                .await;
        }
    };
    let watching = async {
        let outcome = watch(global, args, &store, &shared, &signals, feed).await;
        let _ = stop_gateway.send(());
        outcome
    };
    let (outcome, ()) = tokio::join!(watching, serving);
    let _ = stop_server.send(());
    let _ = server.await;
    outcome
}

/// The gateway served beside `watch` (`--gateway`), bound and ready, and
/// the feed `watch` keeps it up to date through.
struct Gateway {
    proxy: gateway::Proxy,
    listener: tokio::net::TcpListener,
    feed: reconcile::GatewayFeed,
}

impl Gateway {
    async fn bind(
        global: &Global,
        addr: SocketAddr,
        token: Option<&str>,
        dry_run: bool,
        store: &Store,
    ) -> miette::Result<Gateway> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot serve the gateway on {addr}"))?;
        let bound = listener.local_addr().into_diagnostic()?;
        // Empty until the first pass: nothing routes before `watch` has
        // read the state (its fleet checked, its lock taken).
        let (tables, table) = tokio::sync::watch::channel(Arc::new(gateway::Table::default()));
        let (headers, headers_rx) =
            tokio::sync::watch::channel(Arc::new(gateway::ServerHeaders::new()));
        let runtime = Arc::new(super::gateway::LazyRuntime::new(global));
        let tables = if dry_run {
            // A dry run writes nothing, and passes only on its own
            // triggers: another applier writes the state, which the
            // gateway then follows as `mcpctl gateway` does.
            let observe = super::gateway::own_endpoints(global, &runtime);
            tokio::spawn(gateway::follow(
                store.clone(),
                FOLLOW_EVERY,
                tables,
                observe,
            ));
            None
        } else {
            Some(tables)
        };
        // One attach per stdio instance, for the reconciler's checks and the
        // gateway's clients alike.
        let bridges = crate::bridge::Bridges::default();
        let bridging = gateway::Bridging {
            bridges: bridges.clone(),
            attach: runtime,
        };
        let proxy = gateway::Proxy::new(
            table,
            headers_rx,
            gateway::Access::new(token, bound),
            gateway::Limits::default(),
            Some(bridging),
        )?;
        tracing::info!(gateway = %bound, "gateway serving /servers/<name>/mcp");
        Ok(Gateway {
            proxy,
            listener,
            feed: reconcile::GatewayFeed {
                tables,
                headers,
                bridges,
            },
        })
    }
}

/// How often a dry run's gateway reads the state file again, as `mcpctl
/// gateway`'s default `--refresh`.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

async fn watch(
    global: &Global,
    args: Args,
    store: &Store,
    shared: &Arc<Shared>,
    signals: &Signals,
    gateway: Option<reconcile::GatewayFeed>,
) -> miette::Result<Outcome> {
    // One applier per state file; a dry run writes nothing and needs no lock.
    let _lock = if args.dry_run {
        None
    } else {
        match wait_for(shared, signals, Awaited::State, || {
            let store = store.clone();
            async move {
                let command = super::apply::command_line();
                match tokio::task::spawn_blocking(move || store.lock_applier(&command)).await {
                    Ok(Ok(lock)) => Ok(Ok(lock)),
                    Ok(Err(e)) if e.is_passing() => Err(e.to_string()),
                    Ok(Err(e)) => Ok(Err(miette::Report::new(e))),
                    Err(e) => Err(format!("cannot take the applier lock: {e}")),
                }
            }
        })
        .await
        {
            Some(lock) => Some(lock?),
            None => return Ok(Outcome::Success),
        }
    };
    let rt = match wait_for(shared, signals, Awaited::Runtime, || async {
        match super::connect::runtime(global).await {
            Ok(rt) => Ok(Ok(rt)),
            // An engine that is down or slow at start is waited for;
            // a Kubernetes client with no configuration at all is not.
            Err(e @ crate::runtime::RuntimeError::Unavailable { .. })
                if global.runtime == super::RuntimeKind::Docker =>
            {
                Err(e.to_string())
            }
            Err(e) => Ok(Err(miette::Report::new(e))),
        }
    })
    .await
    {
        Some(rt) => rt?,
        None => return Ok(Outcome::Success),
    };
    let digest_key = global.operator_digest_key()?;
    // The state file belongs to one fleet: another one's is refused at
    // start, as a bad flag is. A busy file is waited for.
    let fleet = global.fleet(Some(&rt));
    match wait_for(shared, signals, Awaited::State, || async {
        // A dry run writes nothing: it checks, and records nothing.
        let claimed = if args.dry_run {
            store.check_fleet_async(&fleet).await
        } else {
            store.claim_fleet_async(&fleet).await
        };
        match claimed {
            Ok(()) => Ok(Ok(())),
            Err(e) if e.is_passing() => Err(e.to_string()),
            Err(e) => Ok(Err(miette::Report::new(e))),
        }
    })
    .await
    {
        Some(claimed) => claimed?,
        None => return Ok(Outcome::Success),
    }
    // One applier per scope, whatever its state file: the lease in the
    // runtime. Waited for while another applier holds it.
    let mut keeper = if args.dry_run {
        None
    } else {
        // Shared by the attempts, which remember what they saw between them.
        let claimer = tokio::sync::Mutex::new(super::lease::claimer(&super::apply::command_line()));
        match wait_for(shared, signals, Awaited::Lease, || async {
            match claimer.lock().await.attempt(&rt).await {
                Ok(Claim::Held(version)) => Ok(version),
                Ok(Claim::Busy(busy)) => Err(format!("the applier lease is held by {busy}")),
                Err(e) => Err(format!("cannot read the applier lease: {e}")),
            }
        })
        .await
        {
            Some(version) => Some(Keeper::new(claimer.into_inner(), version)),
            None => return Ok(Outcome::Success),
        }
    };
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
    tracing::info!(listen = %args.listen, dry_run = args.dry_run, "watching");
    let resolver = Resolver {
        secrets_dir: global.secrets_dir.clone(),
        native_env_secrets: global.runtime == super::RuntimeKind::Kubernetes,
        runners: crate::runtime::runners_from_env(),
        limits: Limits::new(global.max_replicas),
        allow_empty: args.allow_empty,
        digest_key,
    };
    let opts = reconcile::Options {
        resync: args.resync,
        dry_run: args.dry_run,
        parallelism: args.parallelism,
        shutdown_timeout: args.shutdown_timeout,
        lease: keeper.as_ref().map(Keeper::subscribe),
        gateway,
    };
    let sync_now = || watch.sync_now();
    let watching = reconcile::watch(
        &rt,
        store,
        &resolver,
        rx,
        &sync_now,
        shared,
        &opts,
        signals.first(),
        signals.second(),
    );
    let stopped = match keeper.as_mut() {
        None => watching.await,
        Some(k) => tokio::select! {
            stopped = watching => stopped,
            never = k.keep(&rt) => match never {},
        },
    };
    if let Some(k) = &keeper {
        k.release(&rt).await;
    }
    let stopped = stopped?;
    tracing::info!(?stopped, "stopped");
    Ok(match stopped {
        reconcile::Stopped::Drained => Outcome::Success,
        reconcile::Stopped::CutShort => Outcome::Failure,
    })
}

/// Tries `attempt` until it gives an answer (`Ok`), with back-off, while
/// `/healthz` says what is awaited (`Err` is the reason to wait). `None`
/// when a signal came first: the caller stops quietly.
async fn wait_for<T, F, Fut>(
    shared: &Shared,
    signals: &Signals,
    what: Awaited,
    mut attempt: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut failures = 0;
    loop {
        let answer = tokio::select! {
            () = signals.first() => return None,
            a = attempt() => a,
        };
        let why = match answer {
            Ok(t) => {
                if failures > 0 {
                    what.report(shared, None);
                }
                return Some(t);
            }
            Err(why) => why,
        };
        failures += 1;
        let after = what.pause(failures);
        tracing::warn!(reason = %why, retry_in_ms = after.as_millis() as u64, "waiting for the {}", what.name());
        what.report(shared, Some(why));
        tokio::select! {
            () = signals.first() => return None,
            () = tokio::time::sleep(after) => {}
        }
    }
}

/// What `watch` may have to wait for before it can start, and the line of
/// `/healthz` that says so meanwhile.
#[derive(Clone, Copy)]
enum Awaited {
    /// The applier lock (another applier holds it) or the state file.
    State,
    /// An engine that is down or does not answer.
    Runtime,
    /// The scope's applier lease, held by another applier.
    Lease,
}

impl Awaited {
    fn name(self) -> &'static str {
        match self {
            Awaited::State => "state",
            Awaited::Runtime => "runtime",
            Awaited::Lease => "applier lease",
        }
    }

    /// The pause before attempt `failures + 1`. A lease is read often (one
    /// cheap call), so that its release is noticed at once; the rest back off.
    fn pause(self, failures: u32) -> Duration {
        match self {
            Awaited::Lease => super::lease::POLL,
            _ => crate::apply::RETRY.after(failures),
        }
    }

    fn report(self, shared: &Shared, why: Option<String>) {
        shared.update(|h| match self {
            Awaited::State => h.state = why,
            Awaited::Runtime => h.runtime = why,
            Awaited::Lease => h.lease = why,
        });
    }
}

/// SIGTERM and SIGINT, counted: the first asks for a clean stop, the
/// second for an immediate one. If the handlers cannot be installed, no
/// signal is ever seen: the process is then stopped the hard way, which
/// the intents make safe.
pub(super) struct Signals {
    count: tokio::sync::watch::Receiver<u32>,
}

impl Signals {
    pub(super) fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        let (tx, count) = tokio::sync::watch::channel(0u32);
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::spawn(async move {
                    loop {
                        let name = tokio::select! {
                            _ = term.recv() => "SIGTERM",
                            _ = int.recv() => "SIGINT",
                        };
                        tracing::info!("{name}: stopping");
                        tx.send_modify(|n| *n += 1);
                    }
                });
            }
            _ => tracing::warn!("cannot install signal handlers; stop mcpctl watch with SIGKILL"),
        }
        Signals { count }
    }

    async fn at_least(&self, n: u32) {
        let mut count = self.count.clone();
        // The sender lives as long as the process when handlers are
        // installed; without them, no signal ever comes.
        if count.wait_for(|c| *c >= n).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub(super) async fn first(&self) {
        self.at_least(1).await
    }

    async fn second(&self) {
        self.at_least(2).await
    }
}
