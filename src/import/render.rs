//! Drafts as YAML text. Written by hand rather than serialised, because
//! the output is for people first: a comment on top says where it came
//! from and what is left to do, missing values are commented-out lines in
//! place, and a parked draft says why it has `replicas: 0`. Every value is
//! double-quoted with YAML's escapes, so no text from the source can end a
//! line, start a comment or change a type.

use super::{Draft, DraftValue, DraftWorkload, Format, placeholder_image};
use crate::spec::PackageRuntime;
use std::fmt::Write;

/// Every draft, as one stream of documents separated by `---`.
pub fn documents(drafts: &[Draft], format: Format) -> String {
    drafts
        .iter()
        .map(|d| document(d, format))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// One draft as one YAML document.
pub fn document(d: &Draft, format: Format) -> String {
    let mut y = String::new();
    line(
        &mut y,
        0,
        &format!(
            "# Imported by `mcpctl import` from {} ({format}).",
            comment(&d.origin)
        ),
    );
    for note in &d.notes {
        line(&mut y, 0, &format!("# {}", comment(note)));
    }
    for todo in &d.todos {
        line(&mut y, 0, &format!("# TODO: {}", comment(todo)));
    }
    for warning in &d.warnings {
        line(&mut y, 0, &format!("# Note: {}", comment(warning)));
    }
    y.push_str("apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata:\n");
    line(&mut y, 2, &format!("name: {}", d.name));
    y.push_str("spec:\n");
    if !d.todos.is_empty() {
        line(
            &mut y,
            2,
            "replicas: 0  # until the TODOs above are done; then remove this line",
        );
    } else if d.disabled {
        line(&mut y, 2, "replicas: 0  # disabled in the client");
    }
    match &d.workload {
        DraftWorkload::Image(image) => line(&mut y, 2, &format!("image: {}", quote(image))),
        DraftWorkload::Placeholder { original } => {
            line(
                &mut y,
                2,
                &format!("# The source ran: {}", comment(original)),
            );
            line(
                &mut y,
                2,
                &format!("image: {}", quote(&placeholder_image(&d.name))),
            );
        }
        DraftWorkload::Package {
            name,
            runtime,
            version,
        } => {
            line(&mut y, 2, "package:");
            line(&mut y, 4, &format!("name: {}", quote(name)));
            let runtime = match runtime {
                PackageRuntime::Node => "node",
                PackageRuntime::Python => "python",
            };
            line(&mut y, 4, &format!("runtime: {runtime}"));
            match version {
                Some(v) => line(&mut y, 4, &format!("version: {}", quote(v))),
                None => line(
                    &mut y,
                    4,
                    "# version: \"...\"  # unpinned: the latest at each start",
                ),
            }
        }
        DraftWorkload::External { url, headers } => {
            line(&mut y, 2, "external:");
            line(&mut y, 4, &format!("url: {}", quote(url)));
            values(&mut y, 4, "headers", headers);
        }
    }
    if !d.command.is_empty() {
        let items: Vec<String> = d.command.iter().map(|c| quote(c)).collect();
        line(&mut y, 2, &format!("command: [{}]", items.join(", ")));
    }
    if let Some(t) = d.transport {
        line(&mut y, 2, &format!("transport: {}", t.as_str()));
    }
    if let Some(p) = d.port {
        line(&mut y, 2, &format!("port: {p}"));
    }
    if let Some(p) = &d.path {
        line(&mut y, 2, &format!("path: {}", quote(p)));
    }
    values(&mut y, 2, "env", &d.env);
    y
}

fn line(y: &mut String, indent: usize, text: &str) {
    let _ = writeln!(y, "{:indent$}{text}", "");
}

/// `env:` or `headers:`, with missing values as commented-out lines; all
/// commented out when no value is present, since an empty mapping is
/// refused.
fn values(y: &mut String, indent: usize, key: &str, entries: &[(String, DraftValue)]) {
    if entries.is_empty() {
        return;
    }
    let any_present = entries
        .iter()
        .any(|(_, v)| !matches!(v, DraftValue::Missing { .. }));
    if any_present {
        line(y, indent, &format!("{key}:"));
    } else {
        line(y, indent, &format!("# {key}:"));
    }
    for (name, value) in entries {
        let name = yaml_key(name);
        let text = match value {
            DraftValue::Plain(v) => format!("{name}: {}", quote(v)),
            DraftValue::Secret { secret, prefix } if prefix.is_empty() => format!(
                "{name}: {{secretRef: {{name: {}, key: {}}}}}",
                secret.name, secret.key
            ),
            DraftValue::Secret { secret, prefix } => format!(
                "{name}: {{secretRef: {{name: {}, key: {}}}, prefix: {}}}",
                secret.name,
                secret.key,
                quote(prefix)
            ),
            DraftValue::Missing { note, required } => format!(
                "# {name}: \"\"  # {}{}",
                if *required { "TODO, " } else { "" },
                comment(note)
            ),
        };
        line(y, indent + 2, &text);
    }
}

/// A mapping key as written: plain when nothing in it can be misread.
fn yaml_key(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !matches!(
            name.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain { name.to_owned() } else { quote(name) }
}

/// A YAML double-quoted scalar: only printable characters raw, everything
/// else escaped.
pub(crate) fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(
                    c,
                    '\u{feff}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text for a `#` comment: one line, nothing that a terminal or a YAML
/// reader would act on.
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') {
                ' '
            } else {
                c
            }
        })
        .collect()
}
