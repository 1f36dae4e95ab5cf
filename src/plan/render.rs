//! Plan renderings: Terraform-like text for people, the JSON of design §3
//! (`format_version` "1") for scripts, and Markdown for a pull-request
//! comment. All are deterministic, and none re-reads a secret: a diff is shown
//! as the planner made it, from canonical specs that hold only digests.

use super::{Action, ActionKind, Plan};
use crate::source::SourceInfo;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
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

/// The first line of every Markdown plan, so that a CI job can find the
/// comment it posted before and update it instead of adding another.
pub const MARKDOWN_MARKER: &str = "<!-- mcpctl-plan -->";

/// The most a Markdown plan may grow to, in bytes (never fewer than
/// characters). GitHub refuses a comment over 65,536 characters; the rest is
/// left for what a workflow adds around the plan (a link to its run, the
/// commit).
pub const MARKDOWN_BUDGET: usize = 60_000;

/// Kept free for the notes that say what was left out, so that they never
/// push a cut rendering back over the budget.
const NOTE_RESERVE: usize = 2_000;

/// Reasons shown per server in the table; the rest are counted.
const REASONS_SHOWN: usize = 4;

/// Longest reason shown in the table, in characters, before escaping.
const REASON_CHARS: usize = 200;

/// How much of a note may name servers before it only counts them: this
/// bounds a note, so [`NOTE_RESERVE`] always holds it.
const NAMES_BYTES: usize = 500;

/// The plan as a pull-request comment: the marker, the source revision, the
/// summary line, a table with one row per server, and each server's spec
/// diff in a collapsed block. Kept within [`MARKDOWN_BUDGET`]: diffs are
/// left out largest first, then table rows from the end, each cut named in
/// a note, and a cut never falls inside a block.
pub fn render_markdown(plan: &Plan, source: &SourceInfo) -> String {
    markdown_within(plan, source, MARKDOWN_BUDGET)
}

pub(super) fn markdown_within(plan: &Plan, source: &SourceInfo, budget: usize) -> String {
    let mut head = format!("{MARKDOWN_MARKER}\n### mcpctl plan\n\n");
    let _ = writeln!(head, "{}\n", source_line(source));
    let _ = writeln!(head, "**{}**", md_text(&summary_line(plan)));
    if plan.actions.is_empty() {
        return head;
    }
    let rows = table_rows(plan);
    let table_top = table_header(plan);
    let unchanged = match plan.unchanged {
        0 => String::new(),
        n => format!(
            "| *{n} {} unchanged* |{}\n",
            if n == 1 { "server" } else { "servers" },
            " |".repeat(table_columns(plan).len() + 1)
        ),
    };
    let diffs = diff_blocks(plan);
    let table_len = table_top.len() + rows.iter().map(|r| r.len()).sum::<usize>() + unchanged.len();
    let full = head.len() + 1 + table_len + diffs.iter().map(|(_, d)| d.len()).sum::<usize>();
    if full <= budget {
        let kept: Vec<bool> = vec![true; diffs.len()];
        return assemble(&head, &table_top, &rows, &unchanged, &diffs, &kept, "");
    }

    let room = budget.saturating_sub(head.len() + 1 + NOTE_RESERVE);
    let mut note = String::new();
    let mut kept = vec![false; diffs.len()];
    let shown_rows = if table_len <= room {
        // Leaving out the largest diffs first keeps the most of them.
        let mut by_size: Vec<usize> = (0..diffs.len()).collect();
        by_size.sort_by_key(|&i| (diffs[i].1.len(), i));
        let mut left = room - table_len;
        for i in by_size {
            if diffs[i].1.len() > left {
                break;
            }
            left -= diffs[i].1.len();
            kept[i] = true;
        }
        rows.len()
    } else {
        let mut left = room.saturating_sub(table_top.len() + unchanged.len());
        let mut n = 0;
        while n < rows.len() && rows[n].len() <= left {
            left -= rows[n].len();
            n += 1;
        }
        let hidden: Vec<&str> = plan_servers(plan).into_iter().skip(n).collect();
        let _ = writeln!(
            note,
            "> {} of {} servers with changes left out of the table{}, to stay within GitHub's comment size limit: {}.",
            hidden.len(),
            rows.len(),
            if diffs.is_empty() {
                ""
            } else {
                ", and every spec diff"
            },
            names_list(&hidden)
        );
        n
    };
    let cut: Vec<&str> = diffs
        .iter()
        .zip(&kept)
        .filter(|(_, k)| !**k)
        .map(|((server, _), _)| server.as_str())
        .collect();
    if !cut.is_empty() && shown_rows == rows.len() {
        let _ = writeln!(
            note,
            "> {} of {} spec diffs left out (largest first) to stay within GitHub's comment size limit: {}.",
            cut.len(),
            diffs.len(),
            names_list(&cut)
        );
    }
    note.push_str(
        "> Run `mcpctl plan` on the same revision, or see this job's log, for the full plan.\n",
    );
    let note = format!("> [!NOTE]\n{note}");
    let rows = &rows[..shown_rows];
    assemble(&head, &table_top, rows, &unchanged, &diffs, &kept, &note)
}

fn assemble(
    head: &str,
    table_top: &str,
    rows: &[String],
    unchanged: &str,
    diffs: &[(String, String)],
    kept: &[bool],
    note: &str,
) -> String {
    let mut out = String::from(head);
    out.push('\n');
    out.push_str(table_top);
    for r in rows {
        out.push_str(r);
    }
    out.push_str(unchanged);
    for ((_, block), keep) in diffs.iter().zip(kept) {
        if *keep {
            out.push_str(block);
        }
    }
    if !note.is_empty() {
        out.push('\n');
        out.push_str(note);
    }
    out
}

fn source_line(source: &SourceInfo) -> String {
    match source.kind.as_str() {
        "git" => format!(
            "Planned from commit {} of {}.",
            code_span(&source.revision),
            code_span(&source.location)
        ),
        _ => format!(
            "Planned from {} (content hash {}).",
            code_span(&source.location),
            code_span(&source.revision)
        ),
    }
}

/// Action kinds that get a column: start, replace and remove always (a
/// reader looks for them), the status changes only when the plan has any.
fn table_columns(plan: &Plan) -> Vec<ActionKind> {
    ActionKind::ALL
        .into_iter()
        .filter(|k| {
            matches!(
                k,
                ActionKind::Start | ActionKind::Replace | ActionKind::Remove
            ) || plan.count(*k) > 0
        })
        .collect()
}

fn table_header(plan: &Plan) -> String {
    let cols = table_columns(plan);
    let mut s = String::from("| server |");
    for k in &cols {
        let _ = write!(s, " {} |", k.as_str());
    }
    s.push_str(" why |\n|---|");
    s.push_str(&"---:|".repeat(cols.len()));
    s.push_str("---|\n");
    s
}

/// Servers in the order of their first action (the planner's order).
fn plan_servers(plan: &Plan) -> Vec<&str> {
    let mut seen = BTreeSet::new();
    plan.actions
        .iter()
        .map(|a| a.server.as_str())
        .filter(|s| seen.insert(*s))
        .collect()
}

fn table_rows(plan: &Plan) -> Vec<String> {
    let cols = table_columns(plan);
    plan_servers(plan)
        .into_iter()
        .map(|server| {
            let actions: Vec<&Action> =
                plan.actions.iter().filter(|a| a.server == server).collect();
            let mut row = format!("| {} |", md_text(server));
            for k in &cols {
                match actions.iter().filter(|a| a.kind == *k).count() {
                    0 => row.push_str(" |"),
                    n => {
                        let _ = write!(row, " {n} |");
                    }
                }
            }
            // The same reason for many instances is said once, with a count.
            let mut reasons: Vec<(String, usize)> = Vec::new();
            for a in &actions {
                let mut r = format!("{}: {}", a.kind.as_str(), cut_chars(&a.reason));
                if let Some(w) = &a.waiting {
                    let _ = write!(r, " (waiting: {})", cut_chars(w));
                }
                match reasons.iter_mut().find(|(x, _)| *x == r) {
                    Some((_, n)) => *n += 1,
                    None => reasons.push((r, 1)),
                }
            }
            let mut why: Vec<String> = reasons
                .iter()
                .take(REASONS_SHOWN)
                .map(|(r, n)| match n {
                    1 => md_text(r),
                    n => format!("{} ×{n}", md_text(r)),
                })
                .collect();
            if reasons.len() > REASONS_SHOWN {
                why.push(format!("and {} more", reasons.len() - REASONS_SHOWN));
            }
            let _ = writeln!(row, " {} |", why.join("<br>"));
            row
        })
        .collect()
}

/// One collapsed block per server with a diff (the first, as in the text),
/// with the server it belongs to.
fn diff_blocks(plan: &Plan) -> Vec<(String, String)> {
    let mut diffed = BTreeSet::new();
    plan.actions
        .iter()
        .filter_map(|a| {
            let diff = a.diff.as_ref()?;
            if !diffed.insert(a.server.as_str()) {
                return None;
            }
            let added = diff
                .lines()
                .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
                .count();
            let removed = diff
                .lines()
                .filter(|l| l.starts_with('-') && !l.starts_with("---"))
                .count();
            let fence = "`".repeat(longest_run(diff, '`').max(2) + 1);
            let mut block = format!(
                "\n<details><summary><code>{}</code>: spec diff (+{added} -{removed})</summary>\n\n{fence}diff\n",
                html_text(&a.server)
            );
            for line in diff.lines() {
                block.push_str(line);
                block.push('\n');
            }
            let _ = writeln!(block, "{fence}\n\n</details>");
            Some((a.server.clone(), block))
        })
        .collect()
}

fn names_list(names: &[&str]) -> String {
    let mut s = String::new();
    for (i, n) in names.iter().enumerate() {
        let n = md_text(n);
        if s.len() + n.len() > NAMES_BYTES {
            let _ = write!(s, " and {} more", names.len() - i);
            break;
        }
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&n);
    }
    s
}

fn cut_chars(s: &str) -> String {
    if s.chars().count() <= REASON_CHARS {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(REASON_CHARS - 1).collect();
    out.push('…');
    out
}

fn longest_run(s: &str, c: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for ch in s.chars() {
        run = if ch == c { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

/// Text from a server or the state, made inert in Markdown: in a table cell
/// or a paragraph it can neither end the cell (`|`, a line break), open HTML
/// (`</details>`), format (`*`, backticks, links), nor mention a GitHub user
/// or team (`@`, which GitHub links even when written as an entity).
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' => out.push_str("&#124;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '~' => {
                out.push('\\');
                out.push(c);
            }
            // A zero-width space keeps `@name` from being a mention.
            '@' => out.push_str("@\u{200b}"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Text inside raw HTML (the `<summary>` line), where Markdown is not read.
fn html_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '@' => out.push_str("@\u{200b}"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `s` as one inline code span, whatever backticks it holds.
fn code_span(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let fence = "`".repeat(longest_run(&s, '`') + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InstanceId;

    fn dir_source() -> SourceInfo {
        SourceInfo {
            kind: "dir".into(),
            location: "fleet/".into(),
            revision: "sha256:0123456789abcdef".into(),
        }
    }

    fn action(kind: ActionKind, server: &str, reason: &str) -> Action {
        Action {
            kind,
            server: server.into(),
            instance: (kind != ActionKind::Start).then(|| InstanceId(format!("01{server}"))),
            reason: reason.into(),
            diff: None,
            waiting: None,
        }
    }

    /// A replace whose canonical spec gained `lines` env entries.
    fn replace_with_diff(server: &str, lines: usize) -> Action {
        let old = "image: v1\ntransport: stdio\n".to_owned();
        let mut new = "image: v2\ntransport: stdio\nenv:\n".to_owned();
        for i in 0..lines {
            new.push_str(&format!("  VAR_{i:04}: value number {i} of a long list\n"));
        }
        Action {
            diff: Some(crate::plan::unified_diff(server, &old, &new)),
            ..action(ActionKind::Replace, server, "spec changed")
        }
    }

    /// What every Markdown plan must be, however it was cut: under the
    /// budget, the marker first, every fence closed by its own fence, and
    /// every `<details>` closed outside any fence.
    fn assert_well_formed(md: &str, budget: usize) {
        assert!(md.len() <= budget, "{} bytes over {budget}", md.len());
        assert_eq!(md.lines().next(), Some(MARKDOWN_MARKER));
        let (mut fence, mut opened, mut closed, mut fences) = (None::<&str>, 0, 0, 0);
        for line in md.lines() {
            match fence {
                Some(f) if line == f => fence = None,
                Some(f) => {
                    // CommonMark closes a fence at any line of at least as
                    // many backticks, indented up to three spaces.
                    let body = line.trim_start_matches(' ');
                    let closes = line.len() - body.len() <= 3
                        && body.trim_end().len() >= f.len()
                        && body.trim_end().chars().all(|c| c == '`');
                    assert!(
                        !closes,
                        "the diff's own line {line:?} ends the fence:\n{md}"
                    );
                }
                None if line.starts_with("```") => {
                    let f = line.trim_end_matches(|c: char| c != '`');
                    assert!(line.ends_with("diff"), "only diff blocks: {line}");
                    fence = Some(f);
                    fences += 1;
                }
                None => {
                    opened += line.matches("<details>").count();
                    closed += line.matches("</details>").count();
                }
            }
        }
        assert_eq!(fence, None, "a fence left open:\n{md}");
        assert_eq!(opened, closed, "unbalanced <details>:\n{md}");
        assert_eq!(opened, fences, "one fenced diff per block");
        let ticks = md.lines().filter(|l| l.starts_with("```")).count();
        assert_eq!(ticks % 2, 0, "odd number of fence lines");
    }

    #[test]
    fn no_changes_reads_as_one_line_under_the_marker() {
        let plan = Plan {
            unchanged: 3,
            ..Plan::default()
        };
        let git = SourceInfo {
            kind: "git".into(),
            location: "https://example.com/org/fleet.git#main:fleet".into(),
            revision: "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b".into(),
        };
        let md = render_markdown(&plan, &git);
        assert_well_formed(&md, MARKDOWN_BUDGET);
        insta::assert_snapshot!(md);
    }

    #[test]
    fn server_text_cannot_break_the_table_or_the_blocks() {
        let mut fail = action(
            ActionKind::Fail,
            "notes",
            "crash loop: exit 3 | bad </details><script>x</script> `tick` *b* [l](u) @octocat",
        );
        fail.waiting = Some("a | b".into());
        let mut replace = replace_with_diff("gh", 1);
        // A value holding a fence and a closing tag, as a spec may: the
        // context line `   ```` would close a three-backtick fence.
        replace.diff = Some(crate::plan::unified_diff(
            "gh",
            "image: v1\nnote: |\n  ```\n",
            "image: v2\nnote: |\n  ```\n  </details>\n",
        ));
        let plan = Plan {
            actions: vec![replace, fail],
            unchanged: 1,
            ..Plan::default()
        };
        let md = render_markdown(&plan, &dir_source());
        assert_well_formed(&md, MARKDOWN_BUDGET);
        let row = md
            .lines()
            .find(|l| l.starts_with("| notes"))
            .expect("a row for notes");
        // The header's cells and no more: no `|` of the reason split the row.
        let header = md.lines().find(|l| l.starts_with("| server")).unwrap();
        assert_eq!(
            row.matches('|').count(),
            header.matches('|').count(),
            "{row}"
        );
        for raw in ["</details>", "<script>", "`tick`", "@octocat"] {
            assert!(!row.contains(raw), "{raw} passed through: {row}");
        }
        insta::assert_snapshot!(md);
    }

    #[test]
    fn an_oversized_plan_leaves_out_the_largest_diffs_and_says_so() {
        // 60 servers whose diffs grow with their number: about 300 KB in all.
        let actions: Vec<Action> = (0..60)
            .map(|i| replace_with_diff(&format!("server-{i:02}"), 10 + i * 5))
            .collect();
        let plan = Plan {
            actions,
            ..Plan::default()
        };
        let full: usize = plan
            .actions
            .iter()
            .map(|a| a.diff.as_ref().unwrap().len())
            .sum();
        assert!(
            full > 4 * MARKDOWN_BUDGET,
            "the diffs alone are {full} bytes"
        );
        let md = render_markdown(&plan, &dir_source());
        assert_well_formed(&md, MARKDOWN_BUDGET);
        for i in 0..60 {
            assert!(md.contains(&format!("\n| server-{i:02} |")), "row {i}");
        }
        let shown = md.matches("<details>").count();
        assert!(shown > 10 && shown < 60, "{shown} diffs shown");
        assert!(
            md.contains("server-00</code>") && !md.contains("server-59</code>"),
            "the smallest are kept, the largest cut"
        );
        assert!(
            md.contains(&format!("> {} of 60 spec diffs left out", 60 - shown)),
            "{md}"
        );
        assert!(md.contains("Run `mcpctl plan`"));
    }

    #[test]
    fn a_cut_plan_in_a_small_budget() {
        let plan = Plan {
            actions: vec![
                replace_with_diff("big", 200),
                replace_with_diff("small", 1),
                action(ActionKind::Start, "web", "new server"),
            ],
            unchanged: 2,
            ..Plan::default()
        };
        let budget = 5_000;
        let md = markdown_within(&plan, &dir_source(), budget);
        assert_well_formed(&md, budget);
        assert!(
            md.contains("small</code>") && !md.contains("big</code>"),
            "{} bytes:\n{md}",
            md.len()
        );
        insta::assert_snapshot!(md);
    }

    #[test]
    fn a_table_too_long_for_the_budget_keeps_its_head_and_counts_the_rest() {
        let long = "x".repeat(400);
        let actions: Vec<Action> = (0..2_000)
            .flat_map(|i| {
                let server = format!("s{i:04}");
                [
                    Action {
                        diff: Some(format!("--- a\n+++ b\n@@ -1 +1 @@\n-a\n+b{i}\n")),
                        ..action(ActionKind::Replace, &server, &long)
                    },
                    action(ActionKind::Remove, &server, "scale down 2 -> 1"),
                ]
            })
            .collect();
        let plan = Plan {
            actions,
            unchanged: 7,
            ..Plan::default()
        };
        let md = render_markdown(&plan, &dir_source());
        assert_well_formed(&md, MARKDOWN_BUDGET);
        assert!(md.contains("\n| s0000 |"), "the first rows stay");
        assert!(!md.contains("\n| s1999 |"), "the last rows go");
        assert!(!md.contains("<details>"), "no diff once rows are cut");
        assert!(md.contains("servers with changes left out of the table, and every spec diff,"));
        assert!(
            md.contains("| *7 servers unchanged* |"),
            "the table still ends"
        );
        assert!(md.contains("**Plan: 2000 to replace, 2000 to remove. 7 servers unchanged.**"));
    }
}
