//! Plan renderings: Terraform-like text for people, and the JSON of design §3
//! (`format_version` "1") for scripts. Both are deterministic.

use super::{Action, ActionKind, Plan};
use crate::source::SourceInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

fn sign(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Start => "+",
        ActionKind::Remove => "-",
        ActionKind::Replace => "~",
        ActionKind::Promote => "↑",
        ActionKind::Demote => "↓",
        ActionKind::Fail => "!",
        ActionKind::Adopt => "=",
    }
}

fn colour(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Start | ActionKind::Promote | ActionKind::Adopt => "\x1b[32m",
        ActionKind::Remove | ActionKind::Fail => "\x1b[31m",
        ActionKind::Replace | ActionKind::Demote => "\x1b[33m",
    }
}

const RESET: &str = "\x1b[0m";

/// The plan as text: one line per action, an indented diff under the first
/// replace of each server, and a summary line.
pub fn render_text(plan: &Plan, color: bool) -> String {
    let mut out = String::new();
    let server_w = plan
        .actions
        .iter()
        .map(|a| a.server.chars().count())
        .max()
        .unwrap_or(0);
    let inst_w = plan
        .actions
        .iter()
        .map(|a| instance_text(a).len())
        .max()
        .unwrap_or(0);
    let mut diffed = std::collections::BTreeSet::new();
    for a in &plan.actions {
        let (on, off) = if color {
            (colour(a.kind), RESET)
        } else {
            ("", "")
        };
        let waiting = a
            .waiting
            .as_ref()
            .map(|w| format!(" (waiting: {w})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {on}{} {:<7}{off} {:<server_w$}  {:<inst_w$}  {}{waiting}",
            sign(a.kind),
            a.kind.as_str(),
            a.server,
            instance_text(a),
            a.reason
        );
        if let Some(diff) = &a.diff
            && diffed.insert(a.server.as_str())
        {
            for line in diff.lines() {
                let c = match line.as_bytes().first() {
                    _ if !color => "",
                    Some(b'+') => "\x1b[32m",
                    Some(b'-') => "\x1b[31m",
                    Some(b'@') => "\x1b[36m",
                    _ => "",
                };
                let end = if c.is_empty() { "" } else { RESET };
                let _ = writeln!(out, "        {c}{line}{end}");
            }
        }
    }
    if !plan.actions.is_empty() {
        out.push('\n');
    }
    out.push_str(&summary_line(plan));
    out.push('\n');
    out
}

fn instance_text(a: &Action) -> String {
    match &a.instance {
        Some(id) => id.to_string(),
        None => "(new)".to_owned(),
    }
}

/// `Plan: 2 to start, 1 to replace, 1 to remove, 1 to promote. 4 servers unchanged.`
pub fn summary_line(plan: &Plan) -> String {
    let mut unchanged = match plan.unchanged {
        1 => "1 server unchanged.".to_owned(),
        n => format!("{n} servers unchanged."),
    };
    if !plan.suspended.is_empty() {
        unchanged.push_str(&format!(
            " Suspended, left as they are: {}.",
            plan.suspended.join(", ")
        ));
    }
    if plan.actions.is_empty() {
        return format!("No changes. {unchanged}");
    }
    let parts: Vec<String> = ActionKind::ALL
        .into_iter()
        .filter_map(|k| match plan.count(k) {
            0 => None,
            n => Some(format!("{n} to {}", k.as_str())),
        })
        .collect();
    format!("Plan: {}. {unchanged}", parts.join(", "))
}

/// The JSON document of design §3. `format_version` changes only on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanJson {
    pub format_version: String,
    pub source: SourceInfo,
    pub actions: Vec<Action>,
    pub summary: BTreeMap<String, usize>,
}

pub fn render_json(plan: &Plan, source: &SourceInfo) -> PlanJson {
    let mut summary: BTreeMap<String, usize> = ActionKind::ALL
        .iter()
        .map(|k| (k.as_str().to_owned(), plan.count(*k)))
        .collect();
    summary.insert("unchanged".to_owned(), plan.unchanged);
    summary.insert("suspended".to_owned(), plan.suspended.len());
    PlanJson {
        format_version: "1".to_owned(),
        source: source.clone(),
        actions: plan.actions.clone(),
        summary,
    }
}
