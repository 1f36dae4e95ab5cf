//! The mapping every format shares: names into DNS labels and secret keys,
//! which names and values are credentials, client references (`${VAR}`,
//! `${env:VAR}`, `${input:ID}`), and a command line (`npx`, `uvx`,
//! `docker run`, anything else) into what an `McpServer` runs.

use super::{DraftWorkload, placeholder_image};
use crate::spec::PackageRuntime;
pub(crate) use crate::spec::clip;
use serde_json::Value;

/// How a JSON value reads in a sentence.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Keys in a sentence, the first few only.
pub(crate) fn key_list<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let keys: Vec<String> = keys.map(|k| format!("`{}`", short(k))).collect();
    match keys.len() {
        0 => "none".into(),
        n if n > 8 => format!("{}, ...", keys[..8].join(", ")),
        _ => keys.join(", "),
    }
}

/// User text quoted in a message: one line, control characters escaped,
/// long values cut.
pub(crate) fn short(text: &str) -> String {
    clip(text, 60)
}

/// A server name as a DNS label: lowercase letters, digits and `-`, at
/// most 63 characters; `server` if nothing is left.
pub(crate) fn dns_label(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(63);
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        "server".into()
    } else {
        out.to_owned()
    }
}

/// A secret key from a variable or header name: `GITHUB_TOKEN` is
/// `github-token`.
pub(crate) fn secret_key(name: &str) -> String {
    dns_label(name)
}

/// Whether a variable, header, flag or parameter name says its value is a
/// credential: `*_TOKEN`, `*_KEY`, `*SECRET*`, `*PASSWORD*`,
/// `Authorization`, and their kin.
pub(crate) fn is_credential_name(name: &str) -> bool {
    let n = name
        .trim_start_matches('-')
        .to_ascii_uppercase()
        .replace('-', "_");
    let words = ["SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE_KEY"];
    let whole = [
        "TOKEN",
        "KEY",
        "APIKEY",
        "PAT",
        "AUTH",
        "AUTHORIZATION",
        "PROXY_AUTHORIZATION",
        "COOKIE",
    ];
    let ends = ["_TOKEN", "_KEY", "APIKEY", "_PAT", "_AUTH", "TOKEN"];
    words.iter().any(|w| n.contains(w))
        || whole.contains(&n.as_str())
        || ends.iter().any(|e| n.ends_with(e))
}

/// Whether a value looks like a credential, or holds one, whatever it is
/// called: an authorization scheme and its token, a vendor's token prefix,
/// a URL with a password or a token parameter, or a long opaque word with
/// nothing of a path, version or URL about it. Values are read word by
/// word, so a token inside JSON or a connection string is found too.
pub(crate) fn looks_like_credential(value: &str) -> bool {
    let v = value.trim();
    if v.contains("://")
        && v.split_whitespace()
            .any(|w| crate::model::urls::credential(w).is_some())
    {
        return true;
    }
    holds_credential_word(v)
}

/// [`looks_like_credential`] without its URL rule, for text whose URLs are
/// already redacted.
fn holds_credential_word(v: &str) -> bool {
    let words = v
        .split(|c: char| c.is_whitespace() || "\"'`,;={}[]()<>:".contains(c))
        .filter(|w| !w.is_empty());
    let mut previous = "";
    for word in words {
        let after_scheme = matches!(
            previous.to_ascii_lowercase().as_str(),
            "bearer" | "basic" | "token"
        );
        if (after_scheme && !word.starts_with('$')) || credential_word(word) {
            return true;
        }
        previous = word;
    }
    false
}

fn credential_word(w: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "glpat-",
        "sk-",
        "sk_live_",
        "sk_test_",
        "rk_live_",
        "xoxb-",
        "xoxp-",
        "xoxa-",
        "xapp-",
        "AKIA",
        "AIza",
        "lin_api_",
        "ntn_",
        "secret_",
        "pat-",
        "eyJ",
    ];
    if PREFIXES.iter().any(|p| w.starts_with(p)) && w.len() > p_len(w) + 3 {
        return true;
    }
    w.len() >= 20
        && !w.contains(['/', '.', '@', '$', '~'])
        && w.chars().any(|c| c.is_ascii_digit())
        && w.chars().any(|c| c.is_ascii_alphabetic())
}

/// A prefix alone (`sk-`) is not a token.
fn p_len(v: &str) -> usize {
    v.find(['_', '-']).map_or(4, |i| i + 1)
}

/// `text` with every JSON value that may be a credential replaced by `*`,
/// byte for byte, so positions in it stay those of the original. Keys
/// stay readable. A value is hidden when its key, or the flag before it
/// in a list, is a credential's name, or when it looks like one itself.
/// It reads broken JSON too: it is a scan for display, not a parser.
pub(crate) fn mask_credentials(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    let mut i = 0;
    // The last key seen, and the string value before this one in a list.
    let mut key: Option<String> = None;
    let mut previous: Option<String> = None;
    let mut stack: Vec<u8> = Vec::new();
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < bytes.len() && bytes[j] != b'"' && bytes[j] != b'\n' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                let end = j.min(bytes.len());
                let body = String::from_utf8_lossy(&bytes[start..end]).into_owned();
                let after = text[end.min(text.len())..].trim_start_matches(['"', ' ', '\t']);
                if after.starts_with(':') {
                    key = Some(body);
                    previous = None;
                } else {
                    let hide = key.as_deref().is_some_and(is_credential_name)
                        || previous
                            .as_deref()
                            .is_some_and(|p| p.starts_with('-') && is_credential_name(p))
                        || looks_like_credential(&body)
                        || flag_value_is_credential(&body);
                    if hide {
                        out[start..end].fill(b'*');
                    }
                    previous = Some(body);
                }
                i = end + 1;
            }
            b'{' | b'[' => {
                if bytes[i] == b'{' {
                    key = None;
                }
                stack.push(bytes[i]);
                previous = None;
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                key = None;
                previous = None;
                i += 1;
            }
            // In an object a comma ends the key's value; in a list the
            // items share their key.
            b',' => {
                if stack.last() != Some(&b'[') {
                    key = None;
                }
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' => {
                // A bare word: broken JSON, where the token may be unquoted.
                let start = i;
                while i < bytes.len() && !b" \t\r\n,:{}[]\"".contains(&bytes[i]) {
                    i += 1;
                }
                let word = &text[start..i];
                let literal =
                    matches!(word, "true" | "false" | "null") || word.parse::<f64>().is_ok();
                if !literal
                    && (key.as_deref().is_some_and(is_credential_name)
                        || looks_like_credential(word))
                {
                    out[start..i].fill(b'*');
                }
            }
            _ => i += 1,
        }
    }
    // Only ASCII bytes were replaced, and only whole characters' worth of
    // bytes inside strings; stray multi-byte pieces become `*` too.
    String::from_utf8(out).unwrap_or_else(|e| {
        e.into_bytes()
            .into_iter()
            .map(|b| if b.is_ascii() { b as char } else { '*' })
            .collect()
    })
}

/// `--token=abc`, `--api-key=abc`: a flag that names a credential, with
/// its value in the same argument.
pub(crate) fn flag_value_is_credential(arg: &str) -> bool {
    arg.starts_with('-')
        && arg
            .split_once('=')
            .is_some_and(|(flag, value)| !value.is_empty() && is_credential_name(flag))
}

/// One piece of a client's value: text, or a reference it fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    /// `${input:ID}` (VS Code).
    Input(String),
    /// `${VAR}`, `${env:VAR}`, `${VAR:-default}`.
    Env {
        name: String,
        default: Option<String>,
    },
    /// `${workspaceFolder}`, `${userHome}`, ...: the client's own.
    Other(String),
}

impl Piece {
    pub(crate) fn is_ref(&self) -> bool {
        !matches!(self, Piece::Text(_))
    }
}

/// A value split into text and `${...}` references.
pub(crate) fn pieces(value: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        let Some(close) = rest[at..].find('}') else {
            break;
        };
        if at > 0 {
            out.push(Piece::Text(rest[..at].to_owned()));
        }
        let inner = &rest[at + 2..at + close];
        out.push(if let Some(id) = inner.strip_prefix("input:") {
            Piece::Input(id.trim().to_owned())
        } else if let Some(name) = inner.strip_prefix("env:") {
            Piece::Env {
                name: name.trim().to_owned(),
                default: None,
            }
        } else if let Some((name, default)) = inner.split_once(":-") {
            Piece::Env {
                name: name.to_owned(),
                default: Some(default.to_owned()),
            }
        } else if is_env_name(inner) && !inner.chars().any(|c| c.is_ascii_lowercase()) {
            // Claude Code's `${VAR}`; names in camelCase are VS Code's own
            // variables (`${workspaceFolder}`, `${userHome}`).
            Piece::Env {
                name: inner.to_owned(),
                default: None,
            }
        } else {
            Piece::Other(inner.to_owned())
        });
        rest = &rest[at + close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_owned()));
    }
    out
}

/// The value with its references written back as in the source (they are
/// names, never values), for comments and warnings.
pub(crate) fn show_pieces(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => t.clone(),
            Piece::Input(id) => format!("${{input:{id}}}"),
            Piece::Env {
                name,
                default: None,
            } => format!("${{{name}}}"),
            Piece::Env {
                name,
                default: Some(d),
            } => format!("${{{name}:-{d}}}"),
            Piece::Other(o) => format!("${{{o}}}"),
        })
        .collect()
}

pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What a client's command line becomes.
#[derive(Debug, Default)]
pub(crate) struct Launch {
    pub workload: Option<DraftWorkload>,
    pub command: Vec<String>,
    /// `docker run -e NAME[=VALUE]`: with no value, the entry's env has it.
    pub docker_env: Vec<(String, Option<String>)>,
    pub todos: Vec<String>,
    pub warnings: Vec<String>,
}

/// Maps `command args...` as a client would run it on the user's machine.
pub(crate) fn launch(name: &str, command: &str, args: &[String]) -> Launch {
    let program = command
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(command)
        .to_ascii_lowercase();
    let program = program
        .strip_suffix(".exe")
        .or_else(|| program.strip_suffix(".cmd"))
        .unwrap_or(&program)
        .to_owned();
    // Windows configs wrap the real command: `cmd /c npx -y ...`.
    if program == "cmd"
        && let Some((first, rest)) = args.split_first()
        && first.eq_ignore_ascii_case("/c")
        && let Some((inner, inner_args)) = rest.split_first()
    {
        return launch(name, inner, inner_args);
    }
    let mut out = match program.as_str() {
        "npx" => npx(args),
        "uvx" => uvx(args),
        "docker" | "podman" if args.first().map(String::as_str) == Some("run") => {
            docker(&args[1..])
        }
        _ => None,
    }
    .unwrap_or_else(|| local(name, command, args));
    out.command = scrub_arguments(std::mem::take(&mut out.command), &mut out.todos);
    for arg in &out.command {
        let p = pieces(arg);
        if p.iter().any(Piece::is_ref) {
            out.todos.push(format!(
                "the argument `{}` is a reference its client fills in; mcpctl passes arguments as \
                 written: put the value in `command`",
                short(&show_pieces(&p))
            ));
        }
    }
    out
}

/// Arguments with every credential taken out (and a TODO for each): a
/// command line is shown in plans and the state, and has no secret
/// references.
fn scrub_arguments(args: Vec<String>, todos: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter().peekable();
    while let Some(arg) = iter.next() {
        if flag_value_is_credential(&arg) {
            let flag = arg.split_once('=').map_or("", |(f, _)| f);
            todos.push(credential_argument(&format!(
                "the value of `{}`, a credential,",
                short(flag)
            )));
            continue;
        }
        if arg.starts_with('-') && !arg.contains('=') && is_credential_name(&arg) {
            let value_follows = iter.peek().is_some_and(|next| !next.starts_with('-'));
            if value_follows {
                iter.next();
                todos.push(credential_argument(&format!(
                    "the value of `{}`, a credential,",
                    short(&arg)
                )));
                continue;
            }
        }
        if looks_like_credential(&arg) {
            // A URL is shown with its credential hidden; anything else not at all.
            let what = if arg.contains("://") {
                format!(
                    "the argument `{}`, which holds a credential,",
                    short(&crate::model::urls::redact(&arg))
                )
            } else {
                format!("argument {}, which looks like a credential,", out.len() + 1)
            };
            todos.push(credential_argument(&what));
            continue;
        }
        out.push(arg);
    }
    out
}

fn credential_argument(what: &str) -> String {
    format!(
        "{what} was left out of `command`: arguments are shown in plans and kept in the state; if \
         the server can read it from an environment variable, set that to a secretRef in `env`"
    )
}

/// An argument or option value quoted in a warning: a URL with its
/// credential hidden, anything that looks like one not at all.
pub(crate) fn shown_arg(arg: &str) -> String {
    let redacted = crate::model::urls::redact(arg);
    if flag_value_is_credential(arg) || holds_credential_word(&redacted) {
        "(credential, not shown)".into()
    } else {
        short(&redacted)
    }
}

/// The original command line for a comment, with credentials hidden.
pub(crate) fn shown_command(command: &str, args: &[String]) -> String {
    let mut hide_next = false;
    let mut words = vec![short(command)];
    for arg in args {
        let hidden = hide_next || looks_like_credential(arg) || flag_value_is_credential(arg);
        hide_next = arg.starts_with('-') && !arg.contains('=') && is_credential_name(arg);
        words.push(if hidden {
            "(credential, not shown)".into()
        } else if arg.contains([' ', '"', '\'']) || arg.is_empty() {
            format!("{:?}", short(arg))
        } else {
            short(arg)
        });
    }
    words.join(" ")
}

fn local(name: &str, command: &str, args: &[String]) -> Launch {
    let original = shown_command(command, args);
    Launch {
        workload: Some(DraftWorkload::Placeholder {
            original: original.clone(),
        }),
        todos: vec![format!(
            "it runs a local command (`{original}`), which no container has as it stands: build an \
             image that runs it, and put that in place of `image: {}`",
            placeholder_image(name)
        )],
        ..Launch::default()
    }
}

/// `npx [-y] PACKAGE[@VERSION] ARGS...`.
fn npx(args: &[String]) -> Option<Launch> {
    let mut out = Launch::default();
    let mut i = 0;
    let mut from_flag: Option<String> = None;
    while let Some(arg) = args.get(i) {
        match arg.as_str() {
            "-y" | "--yes" | "-q" | "--quiet" | "--silent" => {}
            "--" => {
                i += 1;
                break;
            }
            "-p" | "--package" => {
                i += 1;
                from_flag = args.get(i).cloned();
            }
            a if a.starts_with("--package=") => from_flag = Some(a["--package=".len()..].into()),
            a if a.starts_with('-') => out.warnings.push(format!(
                "the npx option `{}` was not carried over",
                shown_arg(a)
            )),
            _ => break,
        }
        i += 1;
    }
    let mut rest = args.get(i..).unwrap_or_default().iter();
    let spec = match from_flag {
        Some(p) => {
            if let Some(bin) = rest.next() {
                out.todos.push(format!(
                    "npx ran the program `{}` of the package; mcpctl runs the package's default \
                     program: check that it is the same, or put the program in `command`",
                    short(bin)
                ));
            }
            p
        }
        None => rest.next()?.clone(),
    };
    // A path, a git URL or a tarball is no registry package.
    if spec.starts_with(['.', '/', '~']) || spec.contains(':') || spec.ends_with(".tgz") {
        return None;
    }
    let (name, version) = split_npm(&spec);
    if version.is_none() {
        out.warnings.push(format!(
            "the package `{}` has no version: it runs the latest each time an instance starts; pin \
             one with `version`",
            short(name)
        ));
    }
    out.workload = Some(DraftWorkload::Package {
        name: name.to_owned(),
        runtime: PackageRuntime::Node,
        version: version.map(str::to_owned),
    });
    out.command = rest.cloned().collect();
    Some(out)
}

/// `@scope/name@1.2.3` into name and version (`latest` is no version).
fn split_npm(spec: &str) -> (&str, Option<&str>) {
    let search_from = usize::from(spec.starts_with('@'));
    match spec[search_from..].find('@') {
        Some(at) => {
            let (name, version) = (&spec[..search_from + at], &spec[search_from + at + 1..]);
            (
                name,
                Some(version).filter(|v| !v.is_empty() && *v != "latest"),
            )
        }
        None => (spec, None),
    }
}

/// `uvx [--from SPEC] PACKAGE[==VERSION] ARGS...`.
fn uvx(args: &[String]) -> Option<Launch> {
    let mut out = Launch::default();
    let mut i = 0;
    let mut from: Option<String> = None;
    while let Some(arg) = args.get(i) {
        match arg.as_str() {
            "-q" | "--quiet" | "--offline" | "--no-progress" => {}
            "--" => {
                i += 1;
                break;
            }
            "--from" => {
                i += 1;
                from = args.get(i).cloned();
            }
            a if a.starts_with("--from=") => from = Some(a["--from=".len()..].into()),
            "--python" | "-p" | "--with" | "--index-url" | "--index" | "--extra-index-url" => {
                let value = args.get(i + 1).map(String::as_str).unwrap_or_default();
                out.warnings.push(format!(
                    "the uvx option `{arg} {}` was not carried over: the python runner image decides it",
                    shown_arg(value)
                ));
                i += 1;
            }
            a if a.starts_with('-') => out.warnings.push(format!(
                "the uvx option `{}` was not carried over",
                shown_arg(a)
            )),
            _ => break,
        }
        i += 1;
    }
    let mut rest = args.get(i..).unwrap_or_default().iter();
    let program = rest.next();
    let spec = match (&from, program) {
        (Some(f), Some(program)) => {
            let (package, _) = split_python(f);
            if package != program.as_str() {
                out.todos.push(format!(
                    "uvx ran the program `{}` of the package `{}`; mcpctl runs the program named \
                     like the package: check that it is the same",
                    short(program),
                    short(package)
                ));
            }
            f.clone()
        }
        (Some(f), None) => f.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => return None,
    };
    if spec.starts_with(['.', '/', '~']) || spec.contains("://") || spec.starts_with("git+") {
        return None;
    }
    let (name, version) = split_python(&spec);
    match version {
        PyVersion::Pinned(_) => {}
        PyVersion::None => out.warnings.push(format!(
            "the package `{}` has no version: it runs the latest each time an instance starts; pin \
             one with `version`",
            short(name)
        )),
        PyVersion::Constraint(c) => out.warnings.push(format!(
            "the version constraint `{}` of `{}` was not carried over (mcpctl pins an exact \
             version): it runs the latest; pin one with `version`",
            short(c),
            short(name)
        )),
    }
    out.workload = Some(DraftWorkload::Package {
        name: name.to_owned(),
        runtime: PackageRuntime::Python,
        version: match version {
            PyVersion::Pinned(v) => Some(v.to_owned()),
            _ => None,
        },
    });
    out.command = rest.cloned().collect();
    Some(out)
}

enum PyVersion<'a> {
    None,
    Pinned(&'a str),
    Constraint(&'a str),
}

/// `name==1.0`, `name@1.0` (uv's shorthand), `name>=1.0`.
fn split_python(spec: &str) -> (&str, PyVersion<'_>) {
    if let Some((name, v)) = spec.split_once("==") {
        return (name, PyVersion::Pinned(v));
    }
    if let Some((name, v)) = spec.split_once('@') {
        return match v {
            "" | "latest" => (name, PyVersion::None),
            v => (name, PyVersion::Pinned(v)),
        };
    }
    match spec.find(['>', '<', '~', '!', '=']) {
        Some(at) => (&spec[..at], PyVersion::Constraint(&spec[at..])),
        None => (spec, PyVersion::None),
    }
}

/// `docker run [OPTIONS] IMAGE [ARGS...]`.
fn docker(args: &[String]) -> Option<Launch> {
    // Options that take a value as the next argument.
    const WITH_VALUE: &[&str] = &[
        "-e",
        "--env",
        "--env-file",
        "-v",
        "--volume",
        "--mount",
        "-p",
        "--publish",
        "--network",
        "--net",
        "--name",
        "-w",
        "--workdir",
        "-u",
        "--user",
        "--entrypoint",
        "-l",
        "--label",
        "--add-host",
        "--cpus",
        "-m",
        "--memory",
        "--platform",
        "--pull",
        "--restart",
        "-h",
        "--hostname",
        "--device",
        "--cap-add",
        "--cap-drop",
        "--security-opt",
        "--tmpfs",
        "--ulimit",
        "--dns",
        "--log-driver",
        "--log-opt",
        "--runtime",
        "--gpus",
        "--shm-size",
        "--group-add",
        "--label-file",
        "--cidfile",
    ];
    // What mcpctl does for every container anyway.
    const OWN: &[&str] = &[
        "-i",
        "--interactive",
        "--rm",
        "-t",
        "--tty",
        "-it",
        "-ti",
        "--init",
        "-d",
        "--detach",
    ];
    let mut out = Launch::default();
    let mut dropped = Vec::new();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if !arg.starts_with('-') {
            break;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        if OWN.contains(&flag) {
            i += 1;
            continue;
        }
        let value = if WITH_VALUE.contains(&flag) && inline.is_none() {
            i += 1;
            args.get(i).cloned()
        } else {
            inline
        };
        match flag {
            "-e" | "--env" => {
                let Some(v) = value else { break };
                match v.split_once('=') {
                    Some((n, val)) => out.docker_env.push((n.to_owned(), Some(val.to_owned()))),
                    None => out.docker_env.push((v, None)),
                }
            }
            "--entrypoint" => out.todos.push(format!(
                "`docker run --entrypoint {}` replaced the image's entrypoint; mcpctl runs the \
                 image's own, with `command` after it: build an image with that entrypoint",
                short(value.as_deref().unwrap_or_default())
            )),
            _ => dropped.push(match value {
                Some(v) if looks_like_credential(&v) || is_credential_name(flag) => {
                    format!("`{flag}` (its value looks like a credential, not shown)")
                }
                Some(v) => format!("`{flag} {}`", shown_arg(&v)),
                None => format!("`{flag}`"),
            }),
        }
        i += 1;
    }
    let image = args.get(i)?;
    if !dropped.is_empty() {
        out.warnings.push(format!(
            "docker run options not carried over: {} (mcpctl makes the container itself; for \
             limits use `resources`)",
            dropped.join(", ")
        ));
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if !last.contains(':') && !image.contains('@') {
        out.warnings.push(format!(
            "the image `{}` has no tag: it runs whatever `latest` is when an instance starts; pin a \
             tag or digest",
            short(image)
        ));
    }
    out.workload = Some(DraftWorkload::Image(image.clone()));
    out.command = args[i + 1..].to_vec();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(dns_label("GitHub MCP"), "github-mcp");
        assert_eq!(
            dns_label("io.github.user/weather"),
            "io-github-user-weather"
        );
        assert_eq!(dns_label("__x__"), "x");
        assert_eq!(dns_label("!!!"), "server");
        assert_eq!(dns_label(&"a".repeat(80)).len(), 63);
        assert_eq!(
            secret_key("GITHUB_PERSONAL_ACCESS_TOKEN"),
            "github-personal-access-token"
        );
    }

    #[test]
    fn credential_names_and_values() {
        for n in [
            "GITHUB_TOKEN",
            "BRAVE_API_KEY",
            "DB_PASSWORD",
            "CLIENT_SECRET",
            "Authorization",
            "X-Api-Key",
            "--api-key",
            "OPENAI_APIKEY",
        ] {
            assert!(is_credential_name(n), "{n}");
        }
        for n in [
            "LOG_LEVEL",
            "PATH",
            "KEYBOARD",
            "TOKENIZER_MODEL",
            "X-Region",
        ] {
            assert!(!is_credential_name(n), "{n}");
        }
        for v in [
            "ghp_FAKE1234567890abcdef",
            "Bearer abc",
            "sk-live-1234",
            "A1b2C3d4E5f6G7h8I9j0K",
        ] {
            assert!(looks_like_credential(v), "{v}");
        }
        for v in [
            "info",
            "@modelcontextprotocol/server-github",
            "2025.4.7",
            "https://api.example.com/mcp",
            "/Users/me/Desktop",
            "Bearer ${input:token}",
            "sk-",
            "mcp-server-fetch",
        ] {
            assert!(!looks_like_credential(v), "{v}");
        }
    }

    #[test]
    fn references_are_split_out() {
        assert_eq!(
            pieces("Bearer ${input:gh-token}"),
            [
                Piece::Text("Bearer ".into()),
                Piece::Input("gh-token".into())
            ]
        );
        assert_eq!(
            pieces("${env:HOME}/x${LOG:-info}${workspaceFolder}"),
            [
                Piece::Env {
                    name: "HOME".into(),
                    default: None
                },
                Piece::Text("/x".into()),
                Piece::Env {
                    name: "LOG".into(),
                    default: Some("info".into())
                },
                Piece::Other("workspaceFolder".into()),
            ]
        );
        assert_eq!(pieces("plain ${"), [Piece::Text("plain ${".into())]);
    }

    #[test]
    fn masking_keeps_offsets_and_keys() {
        let text = "{\"env\": {\"GITHUB_TOKEN\": \"abc\", \"LOG\": \"info\"},\n \"args\": [\"--token\", \"xyz\", \"ghp_FAKE123456\"] é}";
        let masked = mask_credentials(text);
        assert_eq!(masked.len(), text.len());
        assert!(masked.contains("\"GITHUB_TOKEN\": \"***\""), "{masked}");
        assert!(masked.contains("\"info\""), "{masked}");
        assert!(masked.contains("\"--token\", \"***\""), "{masked}");
        assert!(!masked.contains("ghp_"), "{masked}");
        let bare = mask_credentials("{\"API_KEY\": hunter2xyz\n}");
        assert!(!bare.contains("hunter2"), "{bare}");
    }

    #[test]
    fn arguments_quoted_in_warnings_hide_credentials() {
        assert_eq!(
            shown_arg("https://me:pw1@pypi.example.com/simple"),
            "https://(sensitive)@pypi.example.com/simple"
        );
        assert_eq!(shown_arg("--registry-token=abc"), "(credential, not shown)");
        assert_eq!(
            shown_arg("ghp_FAKE0123456789abc"),
            "(credential, not shown)"
        );
        assert_eq!(shown_arg("/a:/b"), "/a:/b");
        let l = launch(
            "x",
            "uvx",
            &[
                "--index-url".into(),
                "https://u:tok123@idx.example.com/simple".into(),
                "p==1".into(),
            ],
        );
        assert!(
            !format!("{:?}", l.warnings).contains("tok123"),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn command_lines() {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let l = launch(
            "gh",
            "npx",
            &s(&["-y", "@modelcontextprotocol/server-github@2025.4.8", "--x"]),
        );
        assert_eq!(
            l.workload,
            Some(DraftWorkload::Package {
                name: "@modelcontextprotocol/server-github".into(),
                runtime: PackageRuntime::Node,
                version: Some("2025.4.8".into())
            })
        );
        assert_eq!(l.command, ["--x"]);
        let l = launch("f", "uvx", &s(&["mcp-server-fetch==2025.4.7"]));
        assert!(
            matches!(l.workload, Some(DraftWorkload::Package { runtime: PackageRuntime::Python, version: Some(ref v), .. }) if v == "2025.4.7")
        );
        let l = launch(
            "gh",
            "docker",
            &s(&[
                "run",
                "-i",
                "--rm",
                "-e",
                "GITHUB_TOKEN",
                "-v",
                "/a:/b",
                "ghcr.io/github/github-mcp-server:v1",
                "stdio",
            ]),
        );
        assert_eq!(
            l.workload,
            Some(DraftWorkload::Image(
                "ghcr.io/github/github-mcp-server:v1".into()
            ))
        );
        assert_eq!(l.command, ["stdio"]);
        assert_eq!(l.docker_env, [("GITHUB_TOKEN".to_owned(), None)]);
        assert!(l.warnings[0].contains("`-v /a:/b`"), "{:?}", l.warnings);
        let l = launch("w", "C:\\Windows\\cmd.exe", &s(&["/c", "npx", "-y", "pkg"]));
        assert!(matches!(l.workload, Some(DraftWorkload::Package { .. })));
        let l = launch("s", "node", &s(&["/srv/server.js", "--token", "abc123"]));
        assert!(
            matches!(l.workload, Some(DraftWorkload::Placeholder { ref original }) if !original.contains("abc123"))
        );
        let l = launch(
            "s",
            "npx",
            &s(&["-y", "pkg@1", "--api-key=zzz", "--token", "yyy", "ok"]),
        );
        assert_eq!(l.command, ["ok"]);
        assert_eq!(l.todos.len(), 2, "{:?}", l.todos);
    }
}
