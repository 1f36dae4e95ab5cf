//! Text that comes from a server (a log line, a probe error, the name and
//! version it reports) is untrusted: it may carry a secret the server was
//! given, terminal escape sequences, or megabytes of noise. [`untrusted`]
//! makes it safe to store and print; every such text passes through it
//! before it reaches the state or the terminal.
//!
//! Our own errors have a plain form too: [`diagnostic_line`] puts a
//! diagnostic, help included, on one line for a log or a status page.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// The longest untrusted text kept, in characters. A reason is one line.
pub const CAP: usize = 512;

/// Secrets shorter than this are not looked for: they would match ordinary
/// text everywhere and make every reason unreadable, while hiding nothing
/// an attacker could not guess.
pub const SHORTEST_SECRET: usize = 4;

const REDACTED: &str = "(sensitive)";

/// `text` with terminal escape sequences and control characters removed,
/// every value of `secrets` (as it is, base64-encoded, or URL-encoded)
/// replaced by `(sensitive)`, and the result cut to [`CAP`] characters.
///
/// Escapes go first, so a secret split by an escape sequence is still
/// found once the pieces are joined; the cut goes last, so it never leaves
/// half a secret behind.
pub fn untrusted(text: &str, secrets: &[&str]) -> String {
    let plain = strip_controls(text);
    let mut out = redact(&plain, secrets);
    if out.chars().count() > CAP {
        out = out.chars().take(CAP - 1).collect();
        out.push('…');
    }
    out
}

/// Every form of a secret that might show up in text a server prints.
fn forms(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let mut forms = vec![
        secret.to_owned(),
        STANDARD.encode(bytes),
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
        percent_encoding::utf8_percent_encode(secret, percent_encoding::CONTROLS).to_string(),
    ];
    forms.retain(|f| f.chars().count() >= SHORTEST_SECRET);
    forms
}

fn redact(text: &str, secrets: &[&str]) -> String {
    let mut all: Vec<String> = secrets
        .iter()
        .filter(|s| s.chars().count() >= SHORTEST_SECRET)
        .flat_map(|s| forms(s))
        .collect();
    // Longest first, so a secret inside another is not half-replaced.
    all.sort_by_key(|f| std::cmp::Reverse(f.len()));
    all.dedup();
    let mut out = text.to_owned();
    for form in &all {
        if out.contains(form.as_str()) {
            out = out.replace(form.as_str(), REDACTED);
        }
    }
    out
}

/// Removes ANSI escape sequences (CSI, OSC and the other string
/// sequences, and two-character escapes), C0 and C1 control characters and
/// Unicode bidirectional overrides. Line breaks and tabs become spaces, and
/// runs of spaces one space, so the text stays one readable line.
fn strip_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC and the other string sequences end at BEL or ESC \.
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // nF escapes (`ESC ( B`): intermediates, then one final byte.
                Some(' '..='/') => {
                    for c in chars.by_ref() {
                        if !(' '..='/').contains(&c) {
                            break;
                        }
                    }
                }
                // A two-character escape: the second character goes too.
                _ => {}
            },
            // The single-character C1 introducers.
            '\u{9b}' => {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            '\n' | '\r' | '\t' => push_space(&mut out),
            c if c.is_control() => {}
            // Bidirectional overrides and isolates reorder what a terminal shows.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            ' ' => push_space(&mut out),
            c => out.push(c),
        }
    }
    out.trim().to_owned()
}

fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' if chars.peek() == Some(&'\\') => {
                chars.next();
                return;
            }
            _ => {}
        }
    }
}

/// A diagnostic on one line of plain text, for a log line, `/healthz` or
/// the history, where miette's report (colour, snippets, several lines)
/// cannot go: what it says (a spec error starts with `file:line:col`), its
/// causes, then `; help: ` and how to fix it. Without the help, `watch`
/// would say less than `validate` about the same file. Escapes and control
/// characters are removed (a remote's words can end up in a fetch error),
/// and line breaks become spaces, so one diagnostic is one line.
pub fn diagnostic_line(d: &(dyn miette::Diagnostic + '_)) -> String {
    let mut text = d.to_string();
    let mut cause = d.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    if let Some(help) = d.help() {
        text.push_str("; help: ");
        text.push_str(&help.to_string());
    }
    strip_controls(&text)
}

fn push_space(out: &mut String) {
    if !out.ends_with(' ') {
        out.push(' ');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_every_form() {
        let secret = "hunter2-token/+=";
        for form in forms(secret) {
            let text = format!("auth failed for {form} (401)");
            let out = untrusted(&text, &[secret]);
            assert_eq!(out, "auth failed for (sensitive) (401)", "form {form}");
        }
        // The forms really differ from the secret, so each one was tested.
        assert!(forms(secret).len() >= 5, "{:?}", forms(secret));
    }

    #[test]
    fn escapes_and_controls_are_stripped_before_secrets_are_looked_for() {
        let text =
            "\u{1b}[31merror\u{1b}[0m: token hun\u{1b}[1mter22\u{7} \u{1b}]0;pwned\u{7}bye\r\n";
        assert_eq!(
            untrusted(text, &["hunter22"]),
            "error: token (sensitive) bye"
        );
        let bidi = "file\u{202e}txt.exe\u{1b}(B\u{9b}2J";
        assert_eq!(untrusted(bidi, &[]), "filetxt.exe");
        assert_eq!(untrusted("a\tb\n\nc\u{0}d", &[]), "a b cd");
    }

    #[test]
    fn text_is_capped_on_a_character_boundary() {
        let long = "é".repeat(2 * CAP);
        let out = untrusted(&long, &[]);
        assert_eq!(out.chars().count(), CAP);
        assert!(out.ends_with('…'));
        // A secret at the cut is redacted before it is cut.
        let text = format!("{}secret-value", "x".repeat(CAP - 5));
        assert!(!untrusted(&text, &["secret-value"]).contains("secr"));
    }

    #[derive(Debug, thiserror::Error, miette::Diagnostic)]
    #[error("fetch failed: \u{1b}[31mremote\u{1b}[0m said no")]
    #[diagnostic(help("give the branch\nwith --ref"))]
    struct Failed {
        #[source]
        cause: std::io::Error,
    }

    #[test]
    fn a_diagnostic_line_keeps_causes_and_help_on_one_plain_line() {
        let d = Failed {
            cause: std::io::Error::other("connection reset"),
        };
        insta::assert_snapshot!(diagnostic_line(&d), @"fetch failed: remote said no: connection reset; help: give the branch with --ref");
    }

    #[test]
    fn very_short_secrets_are_not_looked_for() {
        assert_eq!(untrusted("abc 123", &["abc"]), "abc 123");
        assert_eq!(untrusted("abcd 123", &["abcd"]), "(sensitive) 123");
    }
}
