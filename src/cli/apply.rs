//! `mcpctl apply`: plan (or load a saved plan), take the applier lock, carry
//! the plan out, and by default wait for convergence.

use super::{Format, GitArgs, Global, Outcome};
use crate::apply::{self, Event, Options, Report, Target};
use crate::model::short_duration;
use crate::plan::{ActionKind, SavedPlan};
use crate::source::Location;
use miette::{IntoDiagnostic, miette};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Spec files or directories, or one saved plan file from `plan --out`.
    #[arg(default_value = ".", conflicts_with = "git")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub git: GitArgs,
    /// Wait until every wanted instance is RUNNING (the default).
    #[arg(long, overrides_with = "no_wait")]
    pub wait: bool,
    /// Return once the actions are carried out, without waiting for readiness.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this long (e.g. 90s, 5m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Runtime calls in flight at once.
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,
    /// Output format of the result.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Apply even when the source has no servers and some are known or running (removes them all).
    #[arg(long)]
    pub allow_empty: bool,
}

/// A saved plan is a single file that is not YAML and parses as one.
fn saved_plan(paths: &[PathBuf]) -> miette::Result<Option<SavedPlan>> {
    let [path] = paths else { return Ok(None) };
    let is_yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    if is_yaml || !path.is_file() {
        return Ok(None);
    }
    let text = fs_err::read_to_string(path).into_diagnostic()?;
    let saved: SavedPlan = serde_json::from_str(&text).map_err(|e| {
        miette!(
            "{} is neither a YAML spec nor a saved plan: {e}",
            path.display()
        )
    })?;
    if saved.saved_format != SavedPlan::FORMAT {
        return Err(miette!(
            "{} is a saved plan of format {}, this mcpctl reads format {}",
            path.display(),
            saved.saved_format,
            SavedPlan::FORMAT
        ));
    }
    Ok(Some(saved))
}

/// What changed since a saved plan was made, if anything.
fn staleness(saved: &SavedPlan, p: &super::plan::Planned) -> Vec<String> {
    let mut changed = Vec::new();
    if saved.plan.source.revision != p.source.info.revision {
        changed.push(format!(
            "the source changed ({} -> {})",
            saved.plan.source.revision, p.source.info.revision
        ));
    }
    if saved.state_serial != p.snapshot.serial {
        changed.push(format!(
            "the state changed (serial {} -> {})",
            saved.state_serial, p.snapshot.serial
        ));
    }
    let now: std::collections::BTreeMap<_, _> = p
        .desired
        .iter()
        .map(|d| (d.name.clone(), d.canonical.hash.clone()))
        .collect();
    if saved.desired != now {
        changed.push("a resolved spec changed (a secret value, or a runner image setting)".into());
    }
    let fp = p
        .observation
        .as_ref()
        .map(crate::model::Observation::fingerprint);
    if saved.observation.is_some() && saved.observation != fp {
        changed.push(
            "the runtime changed (containers started, stopped or restarted outside this plan)"
                .into(),
        );
    }
    changed
}

pub async fn run(global: &Global, args: Args) -> miette::Result<Outcome> {
    let saved = match args.git.git {
        Some(_) => None,
        None => saved_plan(&args.paths)?,
    };
    // A saved plan is applied to the source it was made from.
    let location = match &saved {
        Some(SavedPlan { git: Some(git), .. }) => Location::Git(git.clone()),
        Some(s) => Location::Paths(s.paths.clone()),
        None => args.git.location(&args.paths),
    };
    let store = crate::state::Store::new(global.state_path());
    // Lock before planning, so the plan we act on is not raced by another
    // applier: the state file's lock, then the scope's lease in the
    // runtime, which other state files' appliers see too.
    let _lock = store.lock_applier(&command_line())?;
    let rt = super::connect::runtime(global).await?;
    let fleet = global.fleet(Some(&rt));
    // Another fleet's file is refused before its lease is touched.
    store.check_fleet_async(&fleet).await?;
    let mut keeper = super::lease::take_for_apply(&rt, &fleet).await?;
    let outcome = super::lease::holding(&rt, &mut keeper, async {
        let p = super::plan::make(global, &location, true, args.allow_empty, Some(&rt)).await?;
        // The plan checked the file's fleet; now that something will be
        // applied, the file is this fleet's (a refused source claims nothing).
        store.claim_fleet_async(&fleet).await?;
        carry_out(&rt, p, saved.as_ref(), &args).await
    })
    .await;
    keeper.release(&rt).await;
    outcome
}

/// Applies a fresh plan (checked against the saved one, if any) and reports.
async fn carry_out(
    rt: &super::connect::Connected,
    p: super::plan::Planned,
    saved: Option<&SavedPlan>,
    args: &Args,
) -> miette::Result<Outcome> {
    if let Some(saved) = saved {
        let changed = staleness(saved, &p);
        if !changed.is_empty() {
            return Err(miette!(
                help = "run `mcpctl plan --out` again, review it, and apply the new plan",
                "the saved plan is stale: {}",
                changed.join("; ")
            ));
        }
        // Time moves on too: a back-off or a readiness deadline may have
        // passed since `plan`, and a plan made now would do something else.
        let differ = crate::plan::differences(&saved.plan.actions, &p.plan.actions);
        if !differ.is_empty() {
            return Err(miette!(
                help = "run `mcpctl plan --out` again, review it, and apply the new plan",
                "the saved plan is stale: a plan made now differs: {}",
                differ.join("; ")
            ));
        }
    }
    let target = std::sync::Arc::new(Target {
        servers: p.servers,
        secrets: p.secrets,
        desired: p.desired,
        source: p.source.info,
    });
    let opts = Options {
        parallelism: args.parallelism,
        wait: !args.no_wait,
        timeout: args.timeout,
        allow_empty: args.allow_empty,
        command: "apply".into(),
        // A saved plan runs exactly what was reviewed: its actions, then
        // only waiting, status changes and the listed replaces' own steps.
        only: saved.map(|s| crate::plan::Allowed::new(&s.plan.actions)),
        dry_run: false,
    };
    let progress = Progress::new(args.output == Format::Text);
    let first = p.observation.map(|observation| apply::First {
        plan: p.plan,
        snapshot: p.snapshot,
        observation,
    });
    let report = apply::apply(rt, &p.store, target, first, &opts, &|e| progress.event(e)).await?;
    progress.finish();
    let failed = report.actions.iter().filter(|d| d.error.is_some()).count();
    let snapshot = p.store.load_async().await?;
    let printed = match args.output {
        Format::Json => {
            let servers: serde_json::Map<String, serde_json::Value> = report
                .servers
                .iter()
                .map(|(n, (r, w))| (n.clone(), serde_json::json!({"running": r, "wanted": w})))
                .collect();
            let out = serde_json::json!({
                "format_version": "1",
                "converged": report.converged,
                "elapsed_ms": report.elapsed.as_millis() as u64,
                "passes": report.passes,
                "actions": report.actions,
                "servers": servers,
            });
            super::write_stdout(&(serde_json::to_string_pretty(&out).into_diagnostic()? + "\n"))
        }
        Format::Text => super::write_stdout(&(summary(&report, opts.wait) + "\n")),
    };
    // The apply has happened; a reader that has gone must not turn its failure into success.
    if let Err(e) = printed
        && !e.is_closed_pipe()
    {
        return Err(e.into());
    }
    let ok = if opts.wait {
        report.converged
    } else {
        failed == 0
    };
    if !ok {
        super::write_stderr(&format!(
            "error: {}\n",
            not_converged(&report, &snapshot, opts.wait, args.timeout)
        ));
        return Ok(Outcome::Failure);
    }
    Ok(Outcome::Success)
}

/// How this process names itself to an applier it locks out. Arguments
/// need not be UTF-8 (paths on Unix), so they are shown lossily.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    cut(&args.join(" "), 120).to_owned()
}

/// At most `max` bytes of `s`, ending on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn summary(report: &Report, wait: bool) -> String {
    let mut parts: Vec<String> = ActionKind::ALL
        .into_iter()
        .filter_map(|k| {
            let n = report
                .actions
                .iter()
                .filter(|d| d.action.kind == k && d.error.is_none())
                .count();
            (n > 0).then(|| format!("{n} {}", k.done()))
        })
        .collect();
    let failed = report.actions.iter().filter(|d| d.error.is_some()).count();
    if failed > 0 {
        parts.push(format!("{failed} failed"));
    }
    if parts.is_empty() {
        parts.push("no changes".into());
    }
    let (running, wanted) = report
        .servers
        .values()
        .fold((0, 0), |(r, w), (a, b)| (r + a, w + b));
    let state = match (wait, report.converged) {
        (false, _) => "",
        (true, true) => ", converged",
        (true, false) => ", not converged",
    };
    format!(
        "Apply: {}. {running}/{wanted} instances RUNNING{state} in {:.1}s.",
        parts.join(", "),
        report.elapsed.as_secs_f64()
    )
}

fn not_converged(
    report: &Report,
    snapshot: &crate::model::Snapshot,
    wait: bool,
    timeout: Duration,
) -> String {
    let now = crate::model::Timestamp::now();
    let mut parts = Vec::new();
    for (name, (running, wanted)) in &report.servers {
        if running == wanted {
            continue;
        }
        let mut why = format!("{name} {running}/{wanted} RUNNING");
        if let Some(left) = snapshot.backoff_left(name, now) {
            why.push_str(&format!(" ({left}: {})", snapshot.backoff[name].reason));
        } else if let Some(i) = snapshot.instances.values().find(|i| {
            &i.server == name && !i.reason.is_empty() && i.status != crate::model::Status::Running
        }) {
            why.push_str(&format!(" ({}: {})", i.status.as_str(), i.reason));
        }
        parts.push(why);
    }
    if parts.is_empty() {
        // Every server is whole; only individual actions went wrong.
        parts = report
            .actions
            .iter()
            .filter_map(|d| {
                d.error
                    .as_ref()
                    .map(|e| format!("{} {}: {e}", d.action.kind.as_str(), d.action.server))
            })
            .collect();
    }
    if !report.held_back.is_empty() {
        let rest: Vec<String> = report
            .held_back
            .iter()
            .map(|a| {
                let inst = a
                    .instance
                    .as_ref()
                    .map_or_else(|| "(new)".to_owned(), |i| i.to_string());
                format!("{} {} {inst}", a.kind.as_str(), a.server)
            })
            .collect();
        parts.push(format!(
            "the saved plan is done, and a new plan is needed to {}",
            rest.join(", ")
        ));
    }
    let head = match (wait, report.timed_out) {
        (true, true) => format!("not converged after {}", short_duration(timeout)),
        (true, false) => "not converged".to_owned(),
        (false, _) => "some actions failed".into(),
    };
    format!("{head}: {}", parts.join("; "))
}

/// Progress: a spinner with a live line on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    enabled: bool,
    /// Passes that acted so far.
    acting: std::sync::atomic::AtomicU32,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        let tty = super::use_color(&std::io::stderr());
        let bar = (enabled && tty).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            enabled,
            acting: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn line(&self, s: String) {
        match &self.bar {
            Some(bar) => bar.println(s),
            None => super::write_stderr(&format!("{s}\n")),
        }
    }

    fn event(&self, e: Event) {
        if !self.enabled {
            return;
        }
        match e {
            // Numbered among the passes that act, from 1: the passes in
            // between (a probe answering, a wait) would make the numbers
            // jump, and a first line of "pass 5" reads like lost output.
            Event::Planned { actions, .. } if actions > 0 => {
                let n = self
                    .acting
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                self.line(format!("pass {n}: {actions} action(s)"));
            }
            Event::Planned { .. } => {}
            Event::Started { action } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("{} {}", action.kind.as_str(), action.server));
                }
            }
            Event::Finished {
                action,
                instance,
                error,
                elapsed,
            } => {
                let inst = instance
                    .or(action.instance)
                    .map(|i| i.to_string())
                    .unwrap_or_default();
                let result = match error {
                    None => format!("ok ({:.1}s)", elapsed.as_secs_f64()),
                    Some(e) => format!("FAILED: {e}"),
                };
                self.line(format!(
                    "  {:<7} {} {inst}  {}  {result}",
                    action.kind.as_str(),
                    action.server,
                    action.reason
                ));
            }
            Event::Waiting { running, wanted } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("waiting: {running}/{wanted} RUNNING"))
                }
            }
            Event::Retrying { what, error, after } => {
                self.line(format!(
                    "  {what} failed, retrying in {}: {error}",
                    short_duration(after)
                ));
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("apply fleet", 120), "apply fleet");
        // `€` is three bytes; a cut through any of them drops the whole character.
        let text = format!("{}€x", "a".repeat(118));
        for max in [118, 119, 120] {
            assert_eq!(cut(&text, max), "a".repeat(118), "max {max}");
        }
        assert_eq!(cut(&text, 121), format!("{}€", "a".repeat(118)));
        assert_eq!(cut("é", 1), "");
        assert_eq!(cut("", 120), "");
    }
}
