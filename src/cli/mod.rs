//! The command line: clap types here, one module per subcommand. Flags stay
//! close to argv in these types; each subcommand resolves them into what the
//! library needs, so no clap type leaks below this module.

mod apply;
mod completion;
mod connect;
mod describe;
mod export;
mod gateway;
mod get;
mod history;
mod import;
mod lease;
mod logs;
mod plan;
mod probe;
mod schema;
mod suspend;
mod validate;
mod watch;

use crate::source::{GitSource, Location};
use crate::spec::Limits;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Declarative GitOps reconciler for MCP servers.
#[derive(Debug, Parser)]
#[command(name = "mcpctl", version, about, long_about = None, propagate_version = true)]
#[command(
    after_help = "Examples:\n  mcpctl validate fleet/\n  mcpctl plan fleet/ --detailed-exitcode\n  mcpctl schema > mcpserver.schema.json"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted before or after the subcommand.
#[derive(Debug, Args)]
pub struct Global {
    /// The state file [default: $XDG_STATE_HOME/mcpctl/state.redb]
    #[arg(long, global = true, env = "MCPCTL_STATE", value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Where instances run.
    #[arg(long, global = true, env = "MCPCTL_RUNTIME", value_enum, default_value_t = RuntimeKind::Docker)]
    pub runtime: RuntimeKind,
    /// Separates fleets (and test runs) sharing one engine: mcpctl only sees
    /// and touches units of its own scope.
    #[arg(
        long,
        global = true,
        env = "MCPCTL_SCOPE",
        default_value = "default",
        value_name = "NAME"
    )]
    pub scope: String,
    /// The Kubernetes namespace of the pods [default: the kubeconfig
    /// context's, or the service account's in a pod].
    #[arg(long, global = true, env = "MCPCTL_NAMESPACE", value_name = "NAME")]
    pub namespace: Option<String>,
    /// Directory of mounted secrets, laid out as NAME/KEY. On Kubernetes it
    /// is read only for external servers' headers: env secrets become
    /// secretKeyRefs to the Secret NAME, key KEY.
    #[arg(long, global = true, env = "MCPCTL_SECRETS_DIR", value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// The most `replicas` a server may ask for (at most 10000); a larger
    /// count is refused as a likely typo.
    #[arg(
        long,
        global = true,
        env = "MCPCTL_MAX_REPLICAS",
        value_name = "N",
        default_value_t = Limits::DEFAULT_MAX_REPLICAS,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(Limits::HARD_MAX_REPLICAS)),
    )]
    pub max_replicas: u32,
    /// How long any one call to the runtime may take before it counts as
    /// failed (a hung engine); a create, which may pull an image, gets ten
    /// times as long.
    #[arg(
        long,
        global = true,
        env = "MCPCTL_RUNTIME_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub runtime_timeout: std::time::Duration,
    /// A file holding the key for secret digests (or set MCPCTL_DIGEST_KEY
    /// to the key itself): every applier of the scope must use the same.
    /// Without either, the key is kept in the runtime for the scope.
    #[arg(
        long,
        global = true,
        env = "MCPCTL_DIGEST_KEY_FILE",
        value_name = "PATH"
    )]
    pub digest_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    Docker,
    Kubernetes,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check spec files; exit 0 if valid, 1 if not (diagnostics on stderr).
    #[command(
        after_help = "Examples:\n  mcpctl validate fleet/\n  mcpctl validate github.yaml tools.yaml\n  mcpctl validate --git https://github.com/org/fleet --ref main --path mcp"
    )]
    Validate(validate::Args),
    /// Show what apply would do to make the runtime match the source.
    #[command(
        after_help = "Examples:\n  mcpctl plan fleet/\n  mcpctl plan fleet/ -o json\n  mcpctl plan fleet/ --detailed-exitcode   # 0 no changes, 1 error, 2 changes\n  mcpctl plan fleet/ --refresh=false --out plan.json\n  mcpctl plan --git https://github.com/org/fleet --ref main --path mcp"
    )]
    Plan(plan::Args),
    /// Make the runtime match the source, and (by default) wait until it does.
    #[command(
        after_help = "Examples:\n  mcpctl apply fleet/\n  mcpctl apply fleet/ --no-wait -o json\n  mcpctl plan fleet/ --out plan.json && mcpctl apply plan.json\n  mcpctl apply fleet/ --timeout 10m --parallelism 16\n  mcpctl apply --git https://github.com/org/fleet --ref v1.4.0 --path mcp"
    )]
    Apply(apply::Args),
    /// Keep the runtime matching a directory or git repository, as it changes.
    #[command(
        after_help = "Examples:\n  mcpctl watch fleet/\n  mcpctl watch --git https://github.com/org/fleet --ref main --path mcp --interval 1m\n  mcpctl watch fleet/ --dry-run --listen 0.0.0.0:9464\n\nEndpoints on --listen: GET /healthz, GET /metrics, POST /hooks/sync (signed with MCPCTL_WEBHOOK_SECRET)."
    )]
    Watch(watch::Args),
    /// List servers or instances, from the state.
    #[command(
        after_help = "Examples:\n  mcpctl get instances\n  mcpctl get servers -o json\n  mcpctl get instances -o yaml"
    )]
    Get(get::Args),
    /// Show one instance in detail: status history, container state, last error.
    #[command(after_help = "Examples:\n  mcpctl describe instance 01jd8x2k5v3m9q7r4t6w8y0z1a")]
    Describe(describe::Args),
    /// Print the logs of an instance, or of every instance of a server.
    #[command(
        after_help = "Examples:\n  mcpctl logs github --tail 50\n  mcpctl logs 01jd8x2k5v3m9q7r4t6w8y0z1a -f"
    )]
    Logs(logs::Args),
    /// Speak MCP to one server, as readiness does: era, protocol version, identity, latency.
    #[command(
        after_help = "Examples:\n  mcpctl probe http://127.0.0.1:8080/mcp\n  mcpctl probe http://host:9000/sse --transport sse -o json\n  mcpctl probe --stdio -- ./my-server --stdio"
    )]
    Probe(probe::Args),
    /// Leave a server exactly as it is, whatever the source says, until `resume`.
    #[command(after_help = "Examples:\n  mcpctl suspend github\n  mcpctl resume github")]
    Suspend(suspend::Args),
    /// Reconcile a suspended server again.
    Resume(suspend::Args),
    /// The apply history: time, source revision, actions and outcome.
    #[command(after_help = "Examples:\n  mcpctl history --tail 10\n  mcpctl history -o json")]
    History(history::Args),
    /// Serve every server at one stable streamable HTTP endpoint,
    /// /servers/<name>/mcp, routed only to its RUNNING instances.
    #[command(
        after_help = "Examples:\n  mcpctl gateway\n  mcpctl gateway --listen 0.0.0.0:9470 --token-file /run/secrets/gateway-token\n  mcpctl gateway fleet/   # adds external servers' secret headers\n\nClients connect to http://127.0.0.1:9470/servers/<name>/mcp. The gateway follows the state file as apply and watch change the fleet."
    )]
    Gateway(gateway::Args),
    /// Print an MCP client's config for the fleet, every server reached
    /// through the gateway, its token a reference the client fills in.
    #[command(
        after_help = "Examples:\n  mcpctl export claude > .mcp.json\n  mcpctl export vscode github fetch > .vscode/mcp.json\n  mcpctl export cursor --gateway-url https://mcp.example.com > .cursor/mcp.json\n\nThe token is never written: Claude Code and Cursor read it from $MCPCTL_GATEWAY_TOKEN (--token-env), VS Code prompts for it once and keeps it in its secret storage."
    )]
    Export(export::Args),
    /// Turn a registry server.json, or Claude's, Cursor's or VS Code's MCP
    /// config, into McpServer YAML; credentials become secret references.
    #[command(
        after_help = "Examples:\n  mcpctl import server.json\n  mcpctl import claude ~/.config/Claude/claude_desktop_config.json -o fleet/\n  mcpctl import .vscode/mcp.json -o fleet/ --force\n\nFORMAT is detected when left out (Claude's and Cursor's files read the same). Warnings, TODOs and the secrets to create are printed on stderr; no credential is ever written."
    )]
    Import(import::Args),
    /// Print the JSON Schema of McpServer documents.
    #[command(
        after_help = "Examples:\n  mcpctl schema > schemas/mcpserver.schema.json\n  # then, first line of a spec file:\n  # yaml-language-server: $schema=schemas/mcpserver.schema.json"
    )]
    Schema,
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  mcpctl completion bash > ~/.local/share/bash-completion/completions/mcpctl\n  mcpctl completion zsh > \"${fpath[1]}/_mcpctl\"\n  mcpctl completion fish > ~/.config/fish/completions/mcpctl.fish\n  mcpctl completion powershell >> $PROFILE"
    )]
    Completion(completion::Args),
}

impl Command {
    /// Long-running, like a service, rather than one-shot.
    pub fn is_service(&self) -> bool {
        matches!(self, Command::Watch(_) | Command::Gateway(_))
    }

    /// The `--git` flags of the commands that read a source.
    fn git(&self) -> Option<&GitArgs> {
        match self {
            Command::Validate(a) => Some(&a.git),
            Command::Plan(a) => Some(&a.git),
            Command::Apply(a) => Some(&a.git),
            Command::Watch(a) => Some(&a.git),
            Command::Gateway(a) => Some(&a.git),
            _ => None,
        }
    }
}

/// `-o text|json`, for the commands whose output is a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Outcomes that map to exit codes (design §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The command ran but did not reach its goal (apply not converged).
    Failure,
    /// `plan --detailed-exitcode` found changes.
    Changes,
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> ExitCode {
        match o {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Failure => ExitCode::FAILURE,
            Outcome::Changes => ExitCode::from(2),
        }
    }
}

pub async fn run(cli: Cli) -> miette::Result<Outcome> {
    // Before anything else: `watch` would otherwise take the lock, start,
    // and then fail the same way at every fetch.
    if let Some(git) = cli.command.git() {
        git.check()?;
    }
    match cli.command {
        Command::Validate(args) => validate::run(&cli.global, args).await,
        Command::Plan(args) => plan::run(&cli.global, args).await,
        Command::Apply(args) => apply::run(&cli.global, args).await,
        Command::Get(args) => get::run(&cli.global, args).await,
        Command::Describe(args) => describe::run(&cli.global, args).await,
        Command::Logs(args) => logs::run(&cli.global, args).await,
        Command::Probe(args) => probe::run(args).await,
        Command::Watch(args) => watch::run(&cli.global, args).await,
        Command::Suspend(args) => suspend::suspend(&cli.global, args).await,
        Command::Resume(args) => suspend::resume(&cli.global, args).await,
        Command::History(args) => history::run(&cli.global, args).await,
        Command::Gateway(args) => gateway::run(&cli.global, args).await,
        Command::Export(args) => export::run(&cli.global, args).await,
        Command::Import(args) => import::run(args).await,
        Command::Schema => schema::run(),
        Command::Completion(args) => completion::run(args),
    }
}

impl Global {
    /// The secret provider chain for this runtime: on Kubernetes, env
    /// secrets stay references that the kubelet resolves.
    pub fn secret_resolver(&self) -> crate::secrets::Resolver {
        crate::secrets::Resolver::new(self.secrets_dir.clone())
            .native_env_refs(self.runtime == RuntimeKind::Kubernetes)
    }

    /// The state file path, defaulting per the XDG base directory spec.
    pub fn state_path(&self) -> PathBuf {
        if let Some(p) = &self.state {
            return p.clone();
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("mcpctl").join("state.redb")
    }

    /// The fleet this command acts on. The namespace is the connected
    /// runtime's, else `--namespace`, else unknown (and matches any).
    pub fn fleet(&self, rt: Option<&connect::Connected>) -> crate::model::FleetId {
        let (runtime, namespace) = match self.runtime {
            RuntimeKind::Docker => ("docker", None),
            RuntimeKind::Kubernetes => (
                "kubernetes",
                rt.and_then(|rt| rt.inner().namespace())
                    .map(str::to_owned)
                    .or_else(|| self.namespace.clone().filter(|n| !n.is_empty())),
            ),
        };
        crate::model::FleetId {
            runtime: runtime.to_owned(),
            namespace,
            scope: self.scope.clone(),
        }
    }

    /// The operator's key for secret digests: `MCPCTL_DIGEST_KEY`, else the
    /// contents of `--digest-key-file`; hashed to 32 bytes, so any text of
    /// at least 16 characters will do. The key itself is never shown.
    pub fn operator_digest_key(&self) -> miette::Result<Option<[u8; 32]>> {
        use sha2::Digest;
        let (text, from) = match std::env::var("MCPCTL_DIGEST_KEY") {
            Ok(k) if !k.is_empty() => (k, "MCPCTL_DIGEST_KEY".to_owned()),
            _ => match &self.digest_key_file {
                None => return Ok(None),
                Some(path) => (
                    fs_err::read_to_string(path).map_err(|e| {
                        miette::miette!(
                            help = "give a readable file, or unset MCPCTL_DIGEST_KEY_FILE",
                            "cannot read the digest key: {e}"
                        )
                    })?,
                    format!("--digest-key-file {}", path.display()),
                ),
            },
        };
        let text = text.trim();
        if text.chars().count() < 16 {
            return Err(miette::miette!(
                help = "generate one with `head -c 32 /dev/urandom | base64`",
                "the digest key from {from} is too short: it needs at least 16 characters"
            ));
        }
        Ok(Some(sha2::Sha256::digest(text.as_bytes()).into()))
    }
}

/// The snapshot, for the commands that show it beside the runtime (`get`,
/// `describe`, `logs`): refused when the state file caches another fleet,
/// whose instances would all look gone.
pub async fn load_own_state(global: &Global) -> miette::Result<crate::model::Snapshot> {
    let store = crate::state::Store::new(global.state_path());
    store.check_fleet_async(&global.fleet(None)).await?;
    Ok(store.load_async().await?)
}

/// Standard output could not be written.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("cannot write to standard output")]
#[diagnostic(code(mcpctl::output))]
pub struct OutputError(#[source] pub std::io::Error);

impl OutputError {
    /// The reader has gone, as `head` does once it has its lines: the output
    /// is no longer wanted, which is not a failure.
    pub fn is_closed_pipe(&self) -> bool {
        self.0.kind() == std::io::ErrorKind::BrokenPipe
    }
}

/// Writes to standard output and flushes. Unlike `print!`, which panics when
/// the write fails, it returns the error, so that `main` can end quietly on a
/// closed pipe and report anything else (a full disk) once.
pub(crate) fn write_stdout(text: &str) -> Result<(), OutputError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(OutputError)
}

/// Writes to standard error, and carries on if it cannot: a reader of
/// `2>&1 | head -1` that has gone wants no more, and there is nowhere left
/// to report the failure anyway. Unlike `eprint!`, it never panics.
pub fn write_stderr(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// Colour only on a terminal, and never when `NO_COLOR` is set.
pub fn use_color(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `--git URL [--ref REF] [--path SUBDIR]`: the git form of a SOURCE (design
/// §3), taken instead of PATH arguments.
#[derive(Debug, Clone, Args)]
pub struct GitArgs {
    /// Read the specs from this git repository instead of PATHs
    /// (https://, ssh://, git@host:path, file://). HTTPS takes a token from
    /// MCPCTL_GIT_TOKEN (and MCPCTL_GIT_USERNAME), never in the URL; SSH an
    /// ssh-agent key or the key file MCPCTL_GIT_SSH_KEY.
    #[arg(long, value_name = "URL")]
    pub git: Option<String>,
    /// Branch, tag or commit SHA to read [default: the remote's HEAD branch].
    // `requires` alone lets `plan fleet --ref x` through: clap drops a
    // requirement that conflicts with an argument given (PATHs and `--git`).
    #[arg(
        long = "ref",
        value_name = "REF",
        requires = "git",
        conflicts_with = "paths"
    )]
    pub reference: Option<String>,
    /// Directory in the repository holding the specs [default: its root].
    #[arg(
        long,
        value_name = "SUBDIR",
        requires = "git",
        conflicts_with = "paths"
    )]
    pub path: Option<String>,
}

impl GitArgs {
    /// Refuses a `--git` URL that holds a credential (see
    /// [`GitSource::check`]).
    pub fn check(&self) -> Result<(), crate::source::git::GitError> {
        self.git.as_ref().map_or(Ok(()), |url| {
            GitSource {
                url: url.clone(),
                reference: None,
                path: None,
            }
            .check()
        })
    }

    /// The source these flags and the PATH arguments name.
    pub fn location(&self, paths: &[PathBuf]) -> Location {
        match &self.git {
            Some(url) => Location::Git(GitSource {
                url: url.clone(),
                reference: self.reference.clone(),
                path: self.path.clone(),
            }),
            None => Location::Paths(paths.to_vec()),
        }
    }
}

/// Reads and validates the specs of a source: the shared first half of
/// `validate`, `plan` and `apply`. Reading blocks (a git fetch may take
/// seconds), so it runs on tokio's blocking pool.
pub async fn load_source(
    global: &Global,
    location: &Location,
) -> miette::Result<(crate::source::Snapshot, Vec<crate::spec::Server>)> {
    let cache = git_cache(global);
    let loc = location.clone();
    let snapshot = tokio::task::spawn_blocking(move || crate::source::read(&loc, &cache))
        .await
        .map_err(|e| miette::miette!("reading the source stopped: {e}"))??;
    let limits = Limits::new(global.max_replicas);
    let servers = crate::spec::load_with(&snapshot.files, limits)?;
    Ok((snapshot, servers))
}

/// Where git sources keep their mirrors: beside the state, which is already
/// mcpctl's own per-user (or per-deployment) place.
pub fn git_cache(global: &Global) -> PathBuf {
    let state = global.state_path();
    let dir = state
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    dir.join("git")
}
