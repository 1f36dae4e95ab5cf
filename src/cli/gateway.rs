//! `mcpctl gateway`: serves every server of the state at
//! `/servers/<name>/mcp` on `--listen`, following the state file as `apply`
//! and `watch` change the fleet, until SIGTERM or SIGINT. Given the source,
//! it adds external servers' secret headers to their requests.

use super::watch::Signals;
use super::{Global, Outcome};
use crate::gateway::{self, Access, Bridging, Limits, ServerHeaders};
use crate::source::Location;
use crate::state::Store;
use miette::{IntoDiagnostic, WrapErr};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The source (directories or files), read once at start for external
    /// servers' `headers`, which the gateway adds to their requests. Without
    /// it, requests reach external servers with the client's headers only.
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub git: super::GitArgs,
    /// Address to serve on. Anything but a loopback address needs
    /// --token-file.
    #[arg(long, default_value = "127.0.0.1:9470", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// A file holding the token every request must carry as
    /// `Authorization: Bearer <token>`.
    #[arg(long, env = "MCPCTL_GATEWAY_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// How often the state file is read again for changes in the fleet.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub refresh: Duration,
}

pub async fn run(global: &Global, args: Args) -> miette::Result<Outcome> {
    let token = match &args.token_file {
        None => None,
        Some(path) => Some(read_token(path)?),
    };
    gateway::check_listen(args.listen, token.is_some())?;
    let location = args.git.location(&args.paths);
    let headers = match &location {
        Location::Paths(p) if p.is_empty() => ServerHeaders::new(),
        _ => {
            let (_, mut servers) = super::load_source(global, &location).await?;
            // Only external servers' secrets are the gateway's to read.
            servers.retain(|s| matches!(s.spec.workload, crate::spec::Workload::External(_)));
            let secrets = global.secret_resolver().resolve(&servers)?;
            crate::apply::probe_headers(&servers, &secrets)
        }
    };
    let store = Store::new(global.state_path());
    // Another fleet's state would route to instances this one knows nothing of.
    store.check_fleet_async(&global.fleet(None)).await?;
    let snapshot = store.load_async().await?;
    let signals = Signals::install();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot listen on {}", args.listen))?;
    let bound = listener.local_addr().into_diagnostic()?;
    // Connected on the first stdio request (or, on Kubernetes, the first
    // look at where pods are), so an engine that is down at start only
    // affects what needs it, and only until it is back.
    let runtime = Arc::new(LazyRuntime::new(global));
    let mut observe = own_endpoints(global, &runtime);
    if let Some((o, seen)) = observe.as_mut() {
        match o.endpoints().await {
            Ok(fresh) => *seen = fresh,
            // The follower asks again; until then, no unit is routed to.
            Err(e) => tracing::warn!(error = %e, "cannot ask the runtime where instances listen"),
        }
    }
    let table = gateway::table_of(&snapshot, observe.as_ref().map(|(_, seen)| seen));
    tracing::info!(
        listen = %bound,
        servers = table.servers(),
        ready = table.ready_servers(),
        "gateway serving /servers/<name>/mcp"
    );
    let (tables, receiver) = tokio::sync::watch::channel(Arc::new(table));
    let follower = tokio::spawn(gateway::follow(store, args.refresh, tables, observe));
    // Read once: the standalone gateway follows the state, not the source.
    let (_, headers) = tokio::sync::watch::channel(Arc::new(headers));
    let bridging = Bridging {
        bridges: crate::bridge::Bridges::default(),
        attach: runtime,
    };
    let served = gateway::serve(
        listener,
        receiver,
        headers,
        Access::new(token.as_deref(), bound),
        Limits::default(),
        Some(bridging),
        signals.first(),
    )
    .await;
    follower.abort();
    served?;
    Ok(Outcome::Success)
}

/// What a gateway that follows the state file asks its own runtime, with
/// nothing seen yet. Outside the cluster, a pod is reached through a relay
/// that lives only as long as the process that handed out its endpoint: the
/// endpoints `apply` or `watch` recorded lead nowhere from here (in the
/// cluster, the answer is the pod IPs the state holds anyway). Docker's
/// loopback ports are the same from any process.
pub(super) fn own_endpoints(
    global: &Global,
    runtime: &Arc<LazyRuntime>,
) -> Option<(Arc<dyn gateway::Observe>, gateway::Seen)> {
    match global.runtime {
        super::RuntimeKind::Kubernetes => Some((runtime.clone(), gateway::Seen::new())),
        super::RuntimeKind::Docker => None,
    }
}

/// The runtime, connected when first needed and kept; a failed connect is
/// tried again on the next attach.
pub(super) struct LazyRuntime {
    settings: super::connect::Settings,
    rt: tokio::sync::OnceCell<super::connect::Connected>,
}

impl LazyRuntime {
    pub(super) fn new(global: &Global) -> LazyRuntime {
        LazyRuntime {
            settings: super::connect::Settings::of(global),
            rt: tokio::sync::OnceCell::new(),
        }
    }
}

impl gateway::Attach for LazyRuntime {
    fn attach<'a>(
        &'a self,
        handle: &'a str,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<crate::runtime::Attached, crate::runtime::RuntimeError>,
    > {
        Box::pin(async move {
            let rt = self.rt.get_or_try_init(|| self.settings.connect()).await?;
            crate::runtime::Runtime::attach(rt, handle).await
        })
    }
}

impl gateway::Observe for LazyRuntime {
    fn endpoints(
        &self,
    ) -> futures_util::future::BoxFuture<'_, Result<gateway::Seen, crate::runtime::RuntimeError>>
    {
        Box::pin(async move {
            let rt = self.rt.get_or_try_init(|| self.settings.connect()).await?;
            let units = crate::runtime::Runtime::observe(rt).await?;
            Ok(units
                .into_iter()
                .filter_map(|u| match u.endpoint {
                    Some(crate::model::Endpoint::Http(url)) => Some((u.instance, url)),
                    _ => None,
                })
                .collect())
        })
    }
}

pub(super) fn read_token(path: &std::path::Path) -> miette::Result<String> {
    let text = fs_err::read_to_string(path).map_err(|e| {
        miette::miette!(
            help = "give a readable file holding the token",
            "cannot read the gateway token: {e}"
        )
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(miette::miette!(
            help = "generate one with `head -c 32 /dev/urandom | base64`",
            "the gateway token file {} is empty",
            path.display()
        ));
    }
    Ok(token.to_owned())
}
