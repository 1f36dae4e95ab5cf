//! Diagnostics: the public [`SpecError`]/[`SpecErrors`] types, the internal
//! [`Issue`] that validation produces, and the translation of positions
//! (serde-saphyr's line and character column) into byte spans that miette
//! can label.
//!
//! Positions are converted only for files that have errors, so the index of
//! line starts is built lazily, once per file, and never for valid input.

use super::raw::{Leaf, Pos};
use miette::{Diagnostic, LabeledSpan, NamedSource, Severity, SourceCode, SourceSpan};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One problem in one document, located at `file:line:column`.
///
/// `Display` gives the one-line form, `file:line:col: message`, for logs and
/// plain output. As a [`Diagnostic`] it carries the file's text, a labelled
/// span on the offending node, a help line and, for a duplicated name in
/// another file, a related diagnostic pointing at the first definition.
pub struct SpecError {
    file: PathBuf,
    /// The version of the file (a short commit), shown after the position.
    at: Option<String>,
    line: usize,
    column: usize,
    code: &'static str,
    message: String,
    label: Option<String>,
    help: Option<String>,
    span: Option<SourceSpan>,
    more_labels: Vec<LabeledSpan>,
    source: Option<Arc<NamedSource<Arc<str>>>>,
    related: Vec<SpecError>,
    severity: Severity,
}

impl SpecError {
    /// The file, as the source named it.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The version of the file the source read, e.g. a short commit SHA.
    pub fn at(&self) -> Option<&str> {
        self.at.as_deref()
    }

    /// 1-based line in the file (not in the document); 0 when unknown.
    pub fn line(&self) -> usize {
        self.line
    }

    /// 1-based column in characters; 0 when unknown.
    pub fn column(&self) -> usize {
        self.column
    }

    /// The message without its location.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How to fix it.
    pub fn help_text(&self) -> Option<&str> {
        self.help.as_deref()
    }

    /// A stable identifier of the kind of problem, e.g. `mcpctl::spec::unknown_field`.
    pub fn error_code(&self) -> &'static str {
        self.code
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = At(self.at.as_deref());
        if self.line == 0 {
            write!(f, "{}{at}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}",
                place(&self.file, self.line, self.column, self.at.as_deref()),
                self.message
            )
        }
    }
}

/// `file:line:col`, then ` @ <version>` for a file read at a named version
/// (a git commit), so the position stays in the form editors follow.
pub(crate) fn place(file: &Path, line: usize, column: usize, at: Option<&str>) -> String {
    format!("{}:{line}:{column}{}", file.display(), At(at))
}

/// ` @ <version>`, or nothing.
struct At<'a>(Option<&'a str>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(at) => write!(f, " @ {at}"),
            None => Ok(()),
        }
    }
}

// Hand-written so that a 20 MB file's text does not end up in debug output.
impl fmt::Debug for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpecError")
            .field(
                "at",
                &place(&self.file, self.line, self.column, self.at.as_deref()),
            )
            .field("code", &self.code)
            .field("message", &self.message)
            .field("help", &self.help)
            .field("related", &self.related)
            .finish_non_exhaustive()
    }
}

impl std::error::Error for SpecError {}

impl Diagnostic for SpecError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn severity(&self) -> Option<Severity> {
        Some(self.severity)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_deref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        let primary = self
            .span
            .map(|span| LabeledSpan::new_primary_with_span(self.label.clone(), span));
        Some(Box::new(
            primary.into_iter().chain(self.more_labels.iter().cloned()),
        ))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(self.related.iter().map(|r| r as &dyn Diagnostic)))
    }
}

/// Every problem found in a source, in file order and then line order. Any
/// error refuses the whole source.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{} error{} in the server specs", errors.len(), if errors.len() == 1 { "" } else { "s" })]
pub struct SpecErrors {
    #[related]
    pub errors: Vec<SpecError>,
}

impl SpecErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, SpecError> {
        self.errors.iter()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl<'a> IntoIterator for &'a SpecErrors {
    type Item = &'a SpecError;
    type IntoIter = std::slice::Iter<'a, SpecError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// Stable codes, one per kind of problem.
pub(crate) mod code {
    pub const SYNTAX: &str = "mcpctl::spec::yaml_syntax";
    pub const LIMIT: &str = "mcpctl::spec::too_complex";
    pub const DUPLICATE_KEY: &str = "mcpctl::spec::duplicate_key";
    pub const UNKNOWN_FIELD: &str = "mcpctl::spec::unknown_field";
    pub const MISPLACED_FIELD: &str = "mcpctl::spec::misplaced_field";
    pub const MISSING_FIELD: &str = "mcpctl::spec::missing_field";
    pub const WRONG_TYPE: &str = "mcpctl::spec::wrong_type";
    pub const INVALID_VALUE: &str = "mcpctl::spec::invalid_value";
    pub const API_VERSION: &str = "mcpctl::spec::api_version";
    pub const KIND: &str = "mcpctl::spec::kind";
    pub const NAME: &str = "mcpctl::spec::invalid_name";
    pub const WORKLOAD: &str = "mcpctl::spec::workload";
    pub const NOT_APPLICABLE: &str = "mcpctl::spec::not_applicable";
    pub const DUPLICATE_NAME: &str = "mcpctl::spec::duplicate_name";
    pub const SECRET_IN_URL: &str = "mcpctl::spec::secret_in_url";
}

/// A problem found in one file, before it is tied to that file's text.
#[derive(Debug, Clone)]
pub(crate) struct Issue {
    pub code: &'static str,
    pub pos: Pos,
    pub message: String,
    pub label: Option<String>,
    pub help: Option<String>,
    /// Further places in the same file, e.g. the first of two conflicting keys.
    pub also: Vec<(Pos, String)>,
}

impl Issue {
    pub(crate) fn new(code: &'static str, pos: Pos, message: impl Into<String>) -> Issue {
        Issue {
            code,
            pos,
            message: message.into(),
            label: None,
            help: None,
            also: Vec::new(),
        }
    }

    pub(crate) fn label(mut self, label: impl Into<String>) -> Issue {
        self.label = Some(label.into());
        self
    }

    pub(crate) fn help(mut self, help: impl Into<String>) -> Issue {
        self.help = Some(help.into());
        self
    }

    /// The last line this issue shows.
    pub(crate) fn last_line(&self) -> u32 {
        self.also
            .iter()
            .map(|(p, _)| p.line)
            .fold(self.pos.line, u32::max)
    }

    pub(crate) fn also(mut self, pos: Pos, label: impl Into<String>) -> Issue {
        self.also.push((pos, label.into()));
        self
    }

    /// Translates serde-saphyr's error. After validation moved every type and
    /// key check into `validate`, what is left here is malformed YAML,
    /// duplicate keys and budget breaches.
    pub(crate) fn from_yaml(err: &serde_saphyr::Error) -> Issue {
        use serde_saphyr::{Error as E, MessageFormatter, UserMessageFormatter};

        let mut inner = err.without_snippet();
        let mut defined = None;
        while let E::AliasError {
            error, locations, ..
        } = inner
        {
            if locations.defined_location != locations.reference_location {
                defined = Some(Pos::of(&locations.defined_location));
            }
            inner = error.without_snippet();
        }
        let pos = err.location().map(|l| Pos::of(&l)).unwrap_or_default();
        let text = sanitize_message(&UserMessageFormatter.format_message(inner));
        let issue = match inner {
            E::DuplicateMappingKey { key, .. } => {
                let key = key.as_deref().map(|k| format!("`{}`", short(k))).unwrap_or("key".into());
                Issue::new(code::DUPLICATE_KEY, pos, format!("duplicate key {key}"))
                    .label("written a second time here")
                    .help("a key may appear only once in a mapping: delete one of the two, or merge their values")
            }
            E::Budget { breach, .. } => Issue::new(code::LIMIT, pos, format!("document is too large: {}", breach_reason(breach)))
                .label("limit reached here")
                .help(LIMIT_HELP),
            E::AliasReplayCounterOverflow { .. }
            | E::AliasReplayLimitExceeded { .. }
            | E::AliasExpansionLimitExceeded { .. }
            | E::AliasReplayStackDepthExceeded { .. } => {
                Issue::new(code::LIMIT, pos, "document is too large: its aliases expand too far")
                    .label("limit reached while expanding this alias")
                    .help(LIMIT_HELP)
            }
            E::UnknownAnchor { .. } => Issue::new(code::SYNTAX, pos, "alias refers to an unknown anchor")
                .label("no `&anchor` of this name earlier in the document")
                .help("define the anchor with `&name` before using `*name`; anchors do not carry across `---`"),
            E::ExpectedStringKeyForExternallyTaggedEnum { .. } | E::NullIntoString { .. } => {
                Issue::new(code::WRONG_TYPE, pos, "mapping keys must be strings")
                    .label("not a plain key")
                    .help("write keys as plain words, e.g. `name: value`")
            }
            _ if text.contains("expected string scalar") => {
                Issue::new(code::WRONG_TYPE, pos, "mapping keys must be strings")
                    .label("not a plain key")
                    .help("write keys as plain words, e.g. `name: value`")
            }
            _ => Issue::new(code::SYNTAX, pos, format!("invalid YAML: {text}")).label("here").help(
                "check the indentation (spaces only, children indented under their key) and that every \
                 quote, `[` and `{` is closed",
            ),
        };
        match defined {
            Some(at) => issue.also(at, "anchor defined here"),
            None => issue,
        }
    }
}

const LIMIT_HELP: &str = "mcpctl caps the size, nesting and alias expansion of each YAML document so that a \
                          hostile file cannot exhaust memory; a server spec needs none of this, so write the \
                          values out plainly or split the document";

/// Which of serde-saphyr's per-document limits was hit, in words.
fn breach_reason(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    let limits = serde_saphyr::Budget::default();
    match breach {
        B::Nodes { .. } => format!("it expands to more than {} nodes", limits.max_nodes),
        B::Events { .. } => format!("it holds more than {} YAML events", limits.max_events),
        B::Depth { .. } => format!("it nests more than {} levels deep", limits.max_depth),
        B::Aliases { .. } | B::AliasAnchorRatio { .. } => "it uses too many aliases".into(),
        B::Anchors { .. } => "it defines too many anchors".into(),
        B::ScalarBytes { .. } => format!(
            "its text exceeds {} MiB",
            limits.max_total_scalar_bytes >> 20
        ),
        _ => "it exceeds one of the parser's size limits".into(),
    }
}

/// Where the `{` or `[` that a flow-collection syntax error complains about
/// was opened: the parser reports where it gave up, often lines later.
/// Quotes and comments are skipped; this is a best-effort scan up to `until`.
pub(crate) fn unclosed_opener(text: &str, until: Pos) -> Option<Pos> {
    let mut stack = Vec::new();
    let (mut line, mut col) = (1u32, 0u32);
    let (mut single, mut double, mut comment, mut escaped) = (false, false, false, false);
    let mut prev = ' ';
    for c in text.chars() {
        if c == '\n' {
            (line, col, comment, prev) = (line + 1, 0, false, ' ');
            continue;
        }
        col += 1;
        if (line, col) >= (until.line, until.col) {
            break;
        }
        match c {
            _ if comment => {}
            _ if escaped => escaped = false,
            '\\' if double => escaped = true,
            '"' if !single => double = !double,
            '\'' if !double => single = !single,
            _ if single || double => {}
            '#' if prev.is_whitespace() => comment = true,
            '{' | '[' => stack.push(Pos { line, col, len: 1 }),
            '}' | ']' => {
                stack.pop();
            }
            _ => {}
        }
        prev = c;
    }
    stack.pop()
}

/// serde-saphyr's messages can quote input; keep them on one line and free of
/// terminal control sequences.
fn sanitize_message(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// User text quoted in a message: control characters escaped, long values cut,
/// so a hostile or huge value cannot flood the output.
pub(crate) fn short(text: &str) -> String {
    clip(text, 60)
}

/// [`short`] with a limit of `max` characters.
pub fn clip(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A leaf as it should be quoted in a message: strings in quotes, other
/// scalars as written (best effort).
pub(crate) fn show_leaf(leaf: &Leaf) -> String {
    match leaf {
        Leaf::Str(s) => format!("\"{}\"", short(s)),
        Leaf::Int(i) => i.to_string(),
        Leaf::Float(f) => f.to_string(),
        Leaf::Bool(b) => b.to_string(),
        Leaf::Null => "null".into(),
        Leaf::List => "a list".into(),
        Leaf::Map => "a mapping".into(),
    }
}

/// The closest of `candidates` to a misspelt `word`, if any is close enough
/// to be what the user meant.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    // Case, `_` and `-` differences are always typos of the same name
    // (`secret_ref`, `apiversion`).
    let fold = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let folded = fold(word);
    if let Some(c) = candidates.iter().find(|c| fold(c) == folded) {
        return Some(c);
    }
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&folded, &fold(c)), *c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `a`, `b` and `c` as a sentence fragment of backquoted names.
pub(crate) fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Byte offsets of line starts, to turn line and character column into a
/// byte span.
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> LineIndex {
        LineIndex::up_to(text, usize::MAX)
    }

    /// Indexes only the first `lines` lines: a 20 MB file whose error is on
    /// line 65 should not be scanned to the end to show it.
    pub(crate) fn up_to(text: &str, lines: usize) -> LineIndex {
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        let mut i = 0;
        while i < bytes.len() && starts.len() <= lines {
            // YAML breaks lines at LF, CRLF and a lone CR, as serde-saphyr counts them.
            match bytes[i] {
                b'\n' => starts.push(i + 1),
                b'\r' if bytes.get(i + 1) != Some(&b'\n') => starts.push(i + 1),
                _ => {}
            }
            i += 1;
        }
        LineIndex { starts }
    }

    /// The byte offset where line `line` (1-based) ends, or the text's end.
    fn end_of(&self, text: &str, line: usize) -> usize {
        self.starts.get(line).copied().unwrap_or(text.len())
    }

    /// The byte span of `pos` in `text`, clamped to the text.
    pub(crate) fn span(&self, text: &str, pos: Pos) -> Option<SourceSpan> {
        let line = usize::try_from(pos.line).ok()?.checked_sub(1)?;
        let line_start = *self.starts.get(line)?;
        let col = usize::try_from(pos.col).ok()?.saturating_sub(1);
        let start = advance(text, line_start, col);
        let len = usize::try_from(pos.len).unwrap_or(usize::MAX);
        let end = advance(text, start, len);
        Some(SourceSpan::new(start.into(), end - start))
    }
}

/// The byte offset `chars` characters after `from`, stopping at the end.
fn advance(text: &str, from: usize, chars: usize) -> usize {
    let rest = text.get(from..).unwrap_or("");
    match rest.char_indices().nth(chars) {
        Some((i, _)) => from + i,
        None => text.len(),
    }
}

/// What an error needs from its file: the path, the shared text and the
/// line index. Built once per file that has errors.
pub(crate) struct FileText {
    path: PathBuf,
    at: Option<String>,
    text: Arc<NamedSource<Arc<str>>>,
    index: LineIndex,
}

impl FileText {
    /// `last_line` is the last line any diagnostic of this file points at;
    /// the text kept for snippets stops a few lines after it.
    pub(crate) fn new(path: &Path, at: Option<&str>, text: &str, last_line: u32) -> FileText {
        const CONTEXT: usize = 8;
        let needed = (last_line as usize).saturating_add(CONTEXT);
        let index = LineIndex::up_to(text, needed);
        let end = index.end_of(text, needed);
        FileText {
            path: path.to_owned(),
            at: at.map(str::to_owned),
            index,
            text: Arc::new(NamedSource::new(
                path.display().to_string(),
                sanitize_for_terminal(&text[..end]),
            )),
        }
    }

    pub(crate) fn error(&self, issue: Issue) -> SpecError {
        let text: &str = self.text.inner();
        let span = self.index.span(text, issue.pos);
        let more_labels = issue
            .also
            .into_iter()
            .filter_map(|(pos, label)| {
                Some(LabeledSpan::new_with_span(
                    Some(label),
                    self.index.span(text, pos)?,
                ))
            })
            .collect();
        SpecError {
            file: self.path.clone(),
            at: self.at.clone(),
            line: issue.pos.line as usize,
            column: issue.pos.col as usize,
            code: issue.code,
            message: issue.message,
            label: issue.label,
            help: issue.help,
            span,
            more_labels,
            source: Some(self.text.clone()),
            related: Vec::new(),
            severity: Severity::Error,
        }
    }

    /// A secondary diagnostic ("first defined here") attached to another error.
    pub(crate) fn note(&self, pos: Pos, message: String, label: &str) -> SpecError {
        let mut note = self.error(Issue::new(code::DUPLICATE_NAME, pos, message).label(label));
        note.severity = Severity::Advice;
        note
    }
}

impl SpecError {
    pub(crate) fn with_related(mut self, related: SpecError) -> SpecError {
        self.related.push(related);
        self
    }
}

/// The text shown in snippets, with control characters (other than tab and
/// line breaks) replaced, so a spec file cannot send escape sequences to the
/// terminal that renders its errors.
fn sanitize_for_terminal(text: &str) -> Arc<str> {
    // Scanned as bytes: control characters are ASCII or the two-byte C1
    // range `C2 80`..`C2 9F`, and a byte loop stays fast in debug builds.
    let bytes = text.as_bytes();
    let mut clean = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let c1 = b == 0xC2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9F).contains(n));
        if (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7F || c1 {
            clean = false;
            break;
        }
        i += 1;
    }
    if clean {
        return Arc::from(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // Control characters are U+0000..U+001F and U+007F..U+009F: one or two
        // bytes. Their stand-ins have the same length in bytes and in
        // characters, so spans computed on the original text still fit.
        if c.is_control() && !matches!(c, '\t' | '\n' | '\r') {
            out.push(if c.len_utf8() == 1 { '?' } else { '\u{bf}' });
        } else {
            out.push(c);
        }
    }
    Arc::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_count_characters_not_bytes() {
        let text = "a: é€x\r\nb: 1\rc: 2\n";
        let index = LineIndex::new(text);
        let span = index
            .span(
                text,
                Pos {
                    line: 1,
                    col: 4,
                    len: 3,
                },
            )
            .map(|s| (s.offset(), s.len()));
        assert_eq!(span, Some((3, 6)));
        let span = index
            .span(
                text,
                Pos {
                    line: 3,
                    col: 4,
                    len: 1,
                },
            )
            .map(|s| (s.offset(), s.len()));
        assert_eq!(span, Some((19, 1)));
        assert_eq!(
            index.span(
                text,
                Pos {
                    line: 9,
                    col: 1,
                    len: 1
                }
            ),
            None
        );
    }

    #[test]
    fn suggestions_catch_typos_but_not_strangers() {
        let fields = ["replicas", "image", "package", "secretRef", "apiVersion"];
        assert_eq!(did_you_mean("imgae", &fields), Some("image"));
        assert_eq!(did_you_mean("replica", &fields), Some("replicas"));
        assert_eq!(did_you_mean("secret_ref", &fields), Some("secretRef"));
        assert_eq!(did_you_mean("apiversion", &fields), Some("apiVersion"));
        assert_eq!(did_you_mean("volumes", &fields), None);
    }

    #[test]
    fn snippet_text_is_inert_and_keeps_byte_offsets() {
        let text = "a: \u{1b}[31m\u{9b}x\n";
        let shown = sanitize_for_terminal(text);
        assert_eq!(&*shown, "a: ?[31m\u{bf}x\n");
        assert_eq!(
            (shown.len(), shown.chars().count()),
            (text.len(), text.chars().count())
        );
        let file = FileText::new(Path::new("f.yaml"), None, "a\nb\nc\n", 1);
        assert_eq!(file.text.inner().len(), 6);
        let long = "x\n".repeat(100);
        assert_eq!(
            FileText::new(Path::new("f.yaml"), None, &long, 2)
                .text
                .inner()
                .len(),
            20
        );
    }

    #[test]
    fn quoted_user_text_is_short_and_inert() {
        assert_eq!(short("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(short(&"x".repeat(100)).len(), 63);
    }
}
