//! `mcpctl plan`: read the source, resolve secrets, refresh the observation,
//! and print (or save) the plan.

use super::{GitArgs, Global, Outcome};
use crate::model::{Observation, Timestamp};
use crate::plan::{self, Desired, Inputs, SavedPlan};
use crate::source::Location;
use crate::state::Store;
use miette::{Context, IntoDiagnostic};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Spec files or directories (walked for *.yaml and *.yml).
    #[arg(default_value = ".", conflicts_with = "git")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub git: GitArgs,
    /// Output format; `markdown` is for a pull-request comment.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = PlanFormat::Text)]
    pub output: PlanFormat,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also save the plan here, for `apply PLANFILE`.
    #[arg(long, value_name = "PLANFILE")]
    pub out: Option<PathBuf>,
    /// Ask the runtime what exists; `--refresh=false` plans from the state alone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub refresh: bool,
    /// Plan even when the source has no servers and some are known or running (removes them all).
    #[arg(long)]
    pub allow_empty: bool,
}

/// `plan -o`: the report formats, and Markdown, which only a plan has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
    #[value(alias = "md")]
    Markdown,
}

/// Everything a plan was made from, for `plan` and `apply` alike.
pub struct Planned {
    pub source: crate::source::Snapshot,
    pub servers: Vec<crate::spec::Server>,
    pub secrets: crate::secrets::Secrets,
    pub desired: Vec<Desired>,
    pub snapshot: crate::model::Snapshot,
    pub observation: Option<Observation>,
    pub plan: plan::Plan,
    pub store: Store,
}

/// Reads, validates, resolves and plans. Any invalid document or missing
/// secret refuses the whole plan before anything else is looked at. With
/// `refresh`, the runtime is `connected` (apply connects first, to take the
/// lease) or connected here. A state file that caches another fleet is
/// refused before the runtime is asked anything. Only for apply (when
/// `applying` is the runtime it holds the lease of) is anything written.
pub async fn make(
    global: &Global,
    location: &Location,
    refresh: bool,
    allow_empty: bool,
    applying: Option<&super::connect::Connected>,
) -> miette::Result<Planned> {
    let (source, servers) = super::load_source(global, location).await?;
    let store = Store::new(global.state_path());
    // Another runtime or scope is refused before anything else is looked
    // at; the namespace, once connected.
    store.check_fleet_async(&global.fleet(None)).await?;
    let secrets = global.secret_resolver().resolve(&servers)?;
    let operator_key = global.operator_digest_key()?;
    let own = match (applying, refresh) {
        (None, true) => Some(super::connect::runtime(global).await?),
        _ => None,
    };
    let rt = applying.or(own.as_ref());
    store.check_fleet_async(&global.fleet(rt)).await?;
    // No secret value, no digest: the key (a runtime call) is not needed.
    let key = if secrets.has_values() {
        crate::apply::digest_key(rt, &store, operator_key, applying.is_some()).await?
    } else {
        [0; 32]
    };
    let runners = crate::runtime::runners_from_env();
    let desired = Desired::from_servers(&servers, &secrets.digests(&key), &runners);
    let snapshot = store.load_async().await?;
    let observation = match rt {
        Some(rt) => {
            let headers = crate::apply::probe_headers(&servers, &secrets);
            let mut obs = crate::apply::refresh(rt, &snapshot, &desired, &headers, false).await?;
            crate::apply::sanitize(&mut obs, &snapshot, &servers, &secrets);
            Some(obs)
        }
        None => None,
    };
    let now = observation.as_ref().map_or_else(Timestamp::now, |o| o.at);
    let plan = plan::plan(Inputs {
        desired: &desired,
        snapshot: &snapshot,
        observation: observation.as_ref(),
        now,
        allow_empty,
    })?;
    Ok(Planned {
        source,
        servers,
        secrets,
        desired,
        snapshot,
        observation,
        plan,
        store,
    })
}

pub async fn run(global: &Global, args: Args) -> miette::Result<Outcome> {
    let location = args.git.location(&args.paths);
    let p = make(global, &location, args.refresh, args.allow_empty, None).await?;
    let json = plan::render_json(&p.plan, &p.source.info);
    let shown = match args.output {
        PlanFormat::Text => plan::render_text(&p.plan, super::use_color(&std::io::stdout())),
        PlanFormat::Json => serde_json::to_string_pretty(&json).into_diagnostic()? + "\n",
        PlanFormat::Markdown => plan::render_markdown(&p.plan, &p.source.info),
    };
    // A reader that has gone (`plan --out p.json | head`) must neither stop
    // the plan from being saved nor hide the exit code that says it has changes.
    let mut printed = super::write_stdout(&shown);
    if let Some(out) = &args.out {
        let saved = SavedPlan {
            saved_format: SavedPlan::FORMAT.to_owned(),
            paths: match &location {
                Location::Paths(paths) => paths.clone(),
                Location::Git(_) => Vec::new(),
            },
            git: match &location {
                Location::Git(source) => Some(source.clone()),
                Location::Paths(_) => None,
            },
            state_serial: p.snapshot.serial,
            observation: p.observation.as_ref().map(Observation::fingerprint),
            desired: p
                .desired
                .iter()
                .map(|d| (d.name.clone(), d.canonical.hash.clone()))
                .collect(),
            plan: json,
        };
        let text = serde_json::to_string_pretty(&saved).into_diagnostic()?;
        fs_err::write(out, text + "\n")
            .into_diagnostic()
            .wrap_err("cannot save the plan")?;
        if args.output == PlanFormat::Text && printed.is_ok() {
            printed = super::write_stdout(&format!(
                "Saved the plan to {}; run `mcpctl apply {}` to carry it out.\n",
                out.display(),
                out.display()
            ));
        }
    }
    match printed {
        Err(e) if !e.is_closed_pipe() => Err(e.into()),
        _ if args.detailed_exitcode && !p.plan.is_empty() => Ok(Outcome::Changes),
        _ => Ok(Outcome::Success),
    }
}
