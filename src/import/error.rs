//! Why a file could not be imported. A JSON syntax error points at
//! `file:line:column` with a snippet, like the spec's diagnostics; the
//! snippet's text has every value that may be a credential masked first
//! (a broken file is still full of tokens), keeping byte offsets so the
//! label still points at the right place.

use super::Format;
use super::map;
use miette::{NamedSource, SourceSpan};

/// The file is not JSON: where, and what was found there.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{file}:{line}:{column}: {message}")]
#[diagnostic(code(mcpctl::import::syntax), help("{help}"))]
pub struct SyntaxError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// serde_json's message without its own position, plus the text found.
    pub message: String,
    help: String,
    #[source_code]
    text: NamedSource<String>,
    #[label("here")]
    span: SourceSpan,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ImportError {
    /// The file is not JSON.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Syntax(Box<SyntaxError>),
    /// JSON, but not an object at the top.
    #[error("{file}: the file holds {found}, not a JSON object")]
    #[diagnostic(
        code(mcpctl::import::not_an_object),
        help(
            "import reads a server.json, or a client config with `mcpServers` or `servers` at the top"
        )
    )]
    NotAnObject { file: String, found: &'static str },
    /// No format's marks.
    #[error("{file}: not a format import reads (its top-level keys: {keys})")]
    #[diagnostic(
        code(mcpctl::import::unknown_format),
        help(
            "the formats are `server-json` (a registry server.json: `name`, `packages`, `remotes`), \
             `claude` and `cursor` (`mcpServers`) and `vscode` (`servers`, `inputs`)"
        )
    )]
    Unrecognised { file: String, keys: String },
    /// FORMAT was given, and the file is not of it.
    #[error("{file}: not a {format} file: it has no {expected} (its top-level keys: {keys})")]
    #[diagnostic(code(mcpctl::import::wrong_format), help("{}", wrong_format_help(*detected)))]
    WrongShape {
        file: String,
        format: Format,
        expected: &'static str,
        detected: Option<Format>,
        keys: String,
    },
    /// A field of the wrong type, where nothing sensible can be made of it.
    #[error("{file}: `{path}` must be {expected}, found {found}")]
    #[diagnostic(
        code(mcpctl::import::wrong_type),
        help("fix the file, then import it again")
    )]
    WrongType {
        file: String,
        path: String,
        expected: &'static str,
        found: &'static str,
    },
}

fn wrong_format_help(detected: Option<Format>) -> String {
    match detected {
        Some(f) => format!("it reads as `{f}`: give that format, or leave FORMAT out to detect it"),
        None => "leave FORMAT out to detect it from the content".into(),
    }
}

impl ImportError {
    pub(crate) fn syntax(file: &str, text: &str, e: &serde_json::Error) -> ImportError {
        let (line, column) = (e.line(), e.column());
        let offset = offset_of(text, line, column);
        let found = offending(text, offset);
        let described = match &found {
            None => "the end of the file".to_owned(),
            Some(t) if map::looks_like_credential(t) => {
                "a value that looks like a credential (not shown)".to_owned()
            }
            Some(t) => format!("`{}`", map::short(t)),
        };
        // serde_json ends its message with " at line L column C"; the
        // position is already in front.
        let full = e.to_string();
        let bare = full
            .rsplit_once(" at line ")
            .map_or(full.as_str(), |(m, _)| m)
            .to_owned();
        let help = match found.as_deref() {
            Some(t) if t.starts_with("//") || t.starts_with("/*") => {
                "comments are not JSON: VS Code and Cursor accept them, import does not; remove them"
                    .to_owned()
            }
            Some(t) if t.starts_with('}') || t.starts_with(']') => {
                "a comma before a closing bracket is not JSON: remove the trailing comma".to_owned()
            }
            Some(t) if t.starts_with('\'') => "JSON strings take double quotes".to_owned(),
            _ => "fix the JSON at this place (a missing comma or quote is the usual cause)".to_owned(),
        };
        let len = found
            .as_deref()
            .map_or(0, |t| t.chars().next().map_or(0, char::len_utf8));
        ImportError::Syntax(Box::new(SyntaxError {
            file: file.to_owned(),
            line,
            column,
            message: format!("{bare}, at {described}"),
            help,
            text: NamedSource::new(file, map::mask_credentials(text)),
            span: SourceSpan::new(offset.into(), len),
        }))
    }
}

/// The byte offset of serde_json's (line, column). Its column counts bytes
/// from 1 and is 0 before a line's first byte.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let at = (start + column.saturating_sub(1)).min(text.len());
    // Never inside a character: miette slices at it.
    (0..=at)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0)
}

/// The token at `offset`: up to the next whitespace or delimiter.
fn offending(text: &str, offset: usize) -> Option<String> {
    let rest = text.get(offset..)?.trim_end();
    if rest.is_empty() {
        return None;
    }
    let first = rest.chars().next()?;
    if "{}[],:".contains(first) {
        return Some(first.to_string());
    }
    let end = rest
        .char_indices()
        .skip(1)
        .find(|(_, c)| c.is_whitespace() || ",:{}[]".contains(*c))
        .map_or(rest.len(), |(i, _)| i);
    Some(rest[..end].to_owned())
}
