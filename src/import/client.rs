//! Client configs: Claude's and Cursor's `mcpServers`, VS Code's `servers`
//! (with `inputs`, or under `mcp` in its `settings.json`). Each entry is a
//! command line (`command`, `args`, `env`) or a URL (`type`, `url`,
//! `headers`); both may hold references the client fills in: `${VAR}`
//! (Claude Code), `${env:VAR}` (Cursor, VS Code), `${input:ID}` (VS Code).

use super::map::{self, Piece, is_credential_name, looks_like_credential, short};
use super::{
    Draft, DraftValue, DraftWorkload, Format, ImportError, Imported, NeededSecret, Warning,
};
use crate::spec::{SecretRef, Transport};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Entry fields that are carried over.
const CARRIED: &[&str] = &[
    "type", "command", "args", "env", "url", "headers", "disabled",
];

/// A VS Code input: what the client prompts for.
struct Input {
    password: bool,
    default: Option<String>,
    description: Option<String>,
}

pub(super) fn import(
    root: &Map<String, Value>,
    out: &mut Imported,
    file: &str,
) -> Result<(), ImportError> {
    let (root, key) = match out.format {
        Format::Vscode => match root.get("mcp").and_then(Value::as_object) {
            Some(settings) if !root.contains_key("servers") => (settings, "servers"),
            _ => (root, "servers"),
        },
        _ => (root, "mcpServers"),
    };
    let servers = object(root.get(key), key, file)?;
    let inputs = inputs(root, out);
    let mut names = BTreeSet::new();
    for (key_name, entry) in servers {
        let path = format!("{key}.{key_name}");
        let entry = object(Some(entry), &path, file)?;
        let name = unique(map::dns_label(key_name), &mut names);
        let mut warnings = Vec::new();
        if name != *key_name {
            warnings.push(format!(
                "named `{name}` after `{}`, to be a DNS label",
                short(key_name)
            ));
        }
        match server(&name, &path, entry, &inputs, &mut warnings, file)? {
            Some(mut draft) => {
                warnings.append(&mut draft.warnings);
                draft.warnings = warnings;
                out.servers.push(draft);
            }
            None => out
                .warnings
                .extend(warnings.into_iter().map(|message| Warning {
                    server: Some(name.clone()),
                    message,
                })),
        }
    }
    // serde_json reads keys sorted, where `Weather Tool` sorts before
    // `brave-search`: the names written are what the reader sees.
    out.servers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(())
}

/// The entry under `path` as an object; absent is empty.
fn object<'a>(
    v: Option<&'a Value>,
    path: &str,
    file: &str,
) -> Result<&'a Map<String, Value>, ImportError> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    match v {
        None | Some(Value::Null) => Ok(EMPTY.get_or_init(Map::new)),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(wrong(file, path, "an object", other)),
    }
}

fn wrong(file: &str, path: &str, expected: &'static str, found: &Value) -> ImportError {
    ImportError::WrongType {
        file: file.to_owned(),
        path: path.to_owned(),
        expected,
        found: map::kind(found),
    }
}

fn string<'a>(
    entry: &'a Map<String, Value>,
    key: &str,
    path: &str,
    file: &str,
) -> Result<Option<&'a str>, ImportError> {
    match entry.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong(file, &format!("{path}.{key}"), "a string", other)),
    }
}

/// A name no other server of the import has: `-2`, `-3`, ... on a clash.
pub(super) fn unique(name: String, taken: &mut BTreeSet<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    while taken.contains(&candidate) {
        let suffix = format!("-{n}");
        let mut base = name.clone();
        base.truncate(63 - suffix.len());
        candidate = format!("{}{suffix}", base.trim_end_matches('-'));
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

fn inputs(root: &Map<String, Value>, out: &mut Imported) -> BTreeMap<String, Input> {
    let mut found = BTreeMap::new();
    let Some(list) = root.get("inputs").and_then(Value::as_array) else {
        return found;
    };
    for item in list {
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            out.warnings.push(Warning {
                server: None,
                message: "an entry of `inputs` has no `id`; it was skipped".into(),
            });
            continue;
        };
        let text = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_owned);
        found.insert(
            id.to_owned(),
            Input {
                password: item
                    .get("password")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                default: text("default"),
                description: text("description"),
            },
        );
    }
    found
}

fn server(
    name: &str,
    path: &str,
    entry: &Map<String, Value>,
    inputs: &BTreeMap<String, Input>,
    warnings: &mut Vec<String>,
    file: &str,
) -> Result<Option<Draft>, ImportError> {
    let uncarried: Vec<&str> = entry
        .keys()
        .map(String::as_str)
        .filter(|k| !CARRIED.contains(k))
        .collect();
    if !uncarried.is_empty() {
        let list: Vec<String> = uncarried
            .iter()
            .map(|k| format!("`{}`", short(k)))
            .collect();
        warnings.push(format!("fields not carried over: {}", list.join(", ")));
    }
    let kind = string(entry, "type", path, file)?;
    let command = string(entry, "command", path, file)?;
    let url = string(entry, "url", path, file)?;
    let remote = match (kind, command, url) {
        (Some("http" | "streamable-http" | "streamableHttp"), _, _) => {
            Some(Transport::StreamableHttp)
        }
        (Some("sse"), _, _) => Some(Transport::Sse),
        (Some("stdio"), _, _) | (None, Some(_), _) => None,
        (None, None, Some(_)) => Some(Transport::StreamableHttp),
        (Some(other), _, _) => {
            warnings.push(format!(
                "the transport type `{}` is not one mcpctl speaks (stdio, http, sse): not imported",
                short(other)
            ));
            return Ok(None);
        }
        (None, None, None) => {
            warnings.push("it has neither `command` nor `url`: nothing to import".into());
            return Ok(None);
        }
    };
    let mut draft = match remote {
        Some(transport) => {
            let Some(url) = url else {
                warnings.push(format!(
                    "type `{}` with no `url`: not imported",
                    kind.unwrap_or("http")
                ));
                return Ok(None);
            };
            let mut d = Draft::new(
                name.to_owned(),
                path.to_owned(),
                DraftWorkload::External {
                    url: String::new(),
                    headers: Vec::new(),
                },
            );
            // Cursor and Claude Desktop tell SSE from the server's answers;
            // mcpctl needs it said, and `/sse` says it.
            let sse_by_path = kind.is_none()
                && url
                    .split(['?', '#'])
                    .next()
                    .is_some_and(|u| u.ends_with("/sse"));
            if sse_by_path {
                d.notes.push("read as SSE, from the URL's `/sse`".into());
            }
            d.transport = (transport == Transport::Sse || sse_by_path).then_some(Transport::Sse);
            external(&mut d, url, entry, inputs, path, file)?;
            for ignored in ["command", "args", "env"] {
                if entry.contains_key(ignored) {
                    warnings.push(format!(
                        "`{ignored}` does not apply to a server reached by URL; not carried over"
                    ));
                }
            }
            d
        }
        None => {
            let Some(command) = command else {
                warnings.push("type `stdio` with no `command`: not imported".into());
                return Ok(None);
            };
            let args = string_list(entry.get("args"), &format!("{path}.args"), file)?;
            let launch = map::launch(name, command, &args);
            let mut d = Draft::new(
                name.to_owned(),
                path.to_owned(),
                launch
                    .workload
                    .clone()
                    .unwrap_or(DraftWorkload::Placeholder {
                        original: map::shown_command(command, &args),
                    }),
            );
            d.command = launch.command;
            d.todos.extend(launch.todos);
            warnings.extend(launch.warnings);
            let env = object(entry.get("env"), &format!("{path}.env"), file)?;
            let mut used_docker_env = BTreeSet::new();
            for (var, value) in &launch.docker_env {
                let value = match value {
                    Some(v) => Some(v.clone()),
                    None => {
                        used_docker_env.insert(var.clone());
                        env.get(var).and_then(Value::as_str).map(str::to_owned)
                    }
                };
                match value {
                    Some(v) => env_var(&mut d, var, &Value::String(v), inputs, warnings),
                    None => {
                        d.todos.push(format!(
                            "`docker run -e {var}` passed {var} from the client's environment; \
                             give it a value in `env`"
                        ));
                        d.env.push((
                            var.clone(),
                            DraftValue::Missing {
                                note: "docker run -e took it from the client's environment".into(),
                                required: true,
                            },
                        ));
                    }
                }
            }
            for (var, value) in env {
                if used_docker_env.contains(var) {
                    continue;
                }
                env_var(&mut d, var, value, inputs, warnings);
            }
            d
        }
    };
    match entry.get("disabled") {
        Some(Value::Bool(true)) => {
            draft.disabled = true;
            draft
                .notes
                .push("disabled in the client: `replicas: 0`".into());
        }
        None | Some(Value::Bool(false)) | Some(Value::Null) => {}
        Some(other) => return Err(wrong(file, &format!("{path}.disabled"), "a boolean", other)),
    }
    Ok(Some(draft))
}

fn string_list(v: Option<&Value>, path: &str, file: &str) -> Result<Vec<String>, ImportError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                // A number or boolean in args is what the client would pass.
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(wrong(file, &format!("{path}[{i}]"), "a string", other)),
            })
            .collect(),
        Some(other) => Err(wrong(file, path, "a list of strings", other)),
    }
}

fn external(
    d: &mut Draft,
    url: &str,
    entry: &Map<String, Value>,
    inputs: &BTreeMap<String, Input>,
    path: &str,
    file: &str,
) -> Result<(), ImportError> {
    let url = external_url(d, url);
    let mut headers = Vec::new();
    for (header, value) in object(entry.get("headers"), &format!("{path}.headers"), file)? {
        if !header_allowed(d, header) {
            continue;
        }
        let text = scalar(value);
        let v = classify(d, header, &text, inputs, true);
        headers.push((header.clone(), v));
    }
    d.workload = DraftWorkload::External { url, headers };
    Ok(())
}

/// The URL as the format takes it: absolute http(s), with no credential.
/// Anything else is left for the user, with the reason.
pub(super) fn external_url(d: &mut Draft, url: &str) -> String {
    const STAND_IN: &str = "https://replace-me.invalid/mcp";
    let p = map::pieces(url);
    if p.iter().any(Piece::is_ref) {
        d.todos.push(format!(
            "the URL `{}` has references its client fills in: write the URL out in `external.url`",
            short(&map::show_pieces(&p))
        ));
        return STAND_IN.into();
    }
    match url::Url::parse(url) {
        Ok(mut u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                d.todos.push(
                    "the URL carried a credential before `@`; it was left out: send it in a header"
                        .into(),
                );
            }
            let pairs: Vec<(String, String)> = u.query_pairs().into_owned().collect();
            let secret: Vec<&str> = pairs
                .iter()
                .filter(|(k, _)| crate::model::urls::is_secret_param(k))
                .map(|(k, _)| k.as_str())
                .collect();
            if !secret.is_empty() {
                d.todos.push(format!(
                    "the URL carried a credential in the query parameter `{}`; it was left out: \
                     mcpctl sends credentials only in headers",
                    short(&secret.join("`, `"))
                ));
                let kept: Vec<&(String, String)> = pairs
                    .iter()
                    .filter(|(k, _)| !crate::model::urls::is_secret_param(k))
                    .collect();
                if kept.is_empty() {
                    u.set_query(None);
                } else {
                    u.query_pairs_mut()
                        .clear()
                        .extend_pairs(kept.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                }
            }
            u.to_string()
        }
        _ => {
            d.todos.push(format!(
                "`{}` is not an absolute http(s) URL: write the server's URL in `external.url`",
                short(&crate::model::urls::redact(url))
            ));
            STAND_IN.into()
        }
    }
}

/// Whether the spec takes a header of this name; says why not.
pub(super) fn header_allowed(d: &mut Draft, header: &str) -> bool {
    let lower = header.to_ascii_lowercase();
    let why = if !crate::model::HttpHeader::is_valid_name(header) {
        "is not a valid header name"
    } else if crate::model::PROBE_HEADERS.contains(&lower.as_str()) {
        "is set by mcpctl itself, as MCP requires"
    } else {
        return true;
    };
    d.warnings.push(format!(
        "the header `{}` {why}: not carried over",
        short(header)
    ));
    false
}

/// A JSON value as the text a client would use.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn env_var(
    d: &mut Draft,
    var: &str,
    value: &Value,
    inputs: &BTreeMap<String, Input>,
    warnings: &mut Vec<String>,
) {
    if !map::is_env_name(var) {
        warnings.push(format!(
            "the environment variable name `{}` is not one a container can take: not carried over",
            short(var)
        ));
        return;
    }
    let text = scalar(value);
    let v = classify(d, var, &text, inputs, false);
    d.env.push((var.to_owned(), v));
}

/// What an env or header value becomes. Secrets are recorded in the draft
/// with where their value is; their text is never kept.
fn classify(
    d: &mut Draft,
    name: &str,
    value: &str,
    inputs: &BTreeMap<String, Input>,
    header: bool,
) -> DraftValue {
    let what = if header {
        format!("header {name}")
    } else {
        format!("env {name}")
    };
    let named_secret = is_credential_name(name);
    let mut pieces = map::pieces(value);
    // `Bearer ${input:x}`, `Bearer ghp_...`: the scheme is the prefix.
    let mut prefix = String::new();
    if header && let [Piece::Text(t), ..] = pieces.as_slice() {
        let scheme = t.split_once(' ').map(|(s, _)| s).unwrap_or_default();
        if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphabetic()) {
            let rest = t[scheme.len() + 1..].to_owned();
            let rest_secret = rest.is_empty() || looks_like_credential(&rest) || named_secret;
            if rest_secret
                && (pieces.len() == 1 && !rest.is_empty() || pieces.len() == 2 && rest.is_empty())
            {
                prefix = format!("{scheme} ");
                if rest.is_empty() {
                    pieces.remove(0);
                } else {
                    pieces[0] = Piece::Text(rest);
                }
            }
        }
    }
    let key = if header && name.eq_ignore_ascii_case("authorization") {
        "token".to_owned()
    } else {
        map::secret_key(name)
    };
    let shown = map::show_pieces(&pieces);
    let secret = |d: &mut Draft, from: String, prefix: String| {
        let secret = secret_ref(d, &key);
        d.secrets.push(NeededSecret {
            secret: secret.clone(),
            used_by: what.clone(),
            from,
        });
        DraftValue::Secret { secret, prefix }
    };
    match pieces.as_slice() {
        [] => DraftValue::Plain(String::new()),
        [Piece::Text(t)] => {
            if named_secret || !prefix.is_empty() {
                let from = if prefix.is_empty() {
                    "copy its value from the imported file".to_owned()
                } else {
                    format!(
                        "copy what follows `{}` from the imported file",
                        prefix.trim_end()
                    )
                };
                secret(d, from, prefix)
            } else if looks_like_credential(t) {
                secret(
                    d,
                    "copy the whole value from the imported file: it holds a credential".into(),
                    prefix,
                )
            } else {
                DraftValue::Plain(t.clone())
            }
        }
        [Piece::Input(id)] => match inputs.get(id) {
            Some(input) if input.password || named_secret => secret(
                d,
                format!("the value VS Code prompts for as the input `{}`", short(id)),
                prefix,
            ),
            Some(Input {
                default: Some(v), ..
            }) if prefix.is_empty() => DraftValue::Plain(v.clone()),
            found => missing(
                d,
                &what,
                format!(
                    "VS Code prompts for the input `{}`{}",
                    short(id),
                    found
                        .and_then(|i| i.description.as_deref())
                        .map(|t| format!(" ({})", short(t)))
                        .unwrap_or_default()
                ),
            ),
        },
        [Piece::Env { name: var, default }] => {
            if named_secret || !prefix.is_empty() {
                secret(
                    d,
                    format!(
                        "the value of the client's environment variable `{}`",
                        short(var)
                    ),
                    prefix,
                )
            } else if let Some(v) = default {
                DraftValue::Plain(v.clone())
            } else {
                missing(
                    d,
                    &what,
                    format!(
                        "the client took it from its environment variable `{}`",
                        short(var)
                    ),
                )
            }
        }
        _ => {
            let secret_ref_inside = pieces.iter().any(|p| match p {
                Piece::Input(id) => inputs.get(id).is_some_and(|i| i.password),
                Piece::Env { name, .. } => is_credential_name(name),
                Piece::Text(t) => looks_like_credential(t),
                Piece::Other(_) => false,
            });
            if named_secret || secret_ref_inside {
                d.todos.push(format!(
                    "{what} is `{}` filled in by the client: the secret must hold the whole value",
                    short(&prefix_then(&prefix, &hide_text(&pieces)))
                ));
                secret(
                    d,
                    format!(
                        "the whole of `{}`, with its references filled in",
                        short(&hide_text(&pieces))
                    ),
                    prefix,
                )
            } else {
                missing(
                    d,
                    &what,
                    format!("the client filled in `{}`", short(&shown)),
                )
            }
        }
    }
}

fn prefix_then(prefix: &str, rest: &str) -> String {
    format!("{prefix}{rest}")
}

/// The template with literal text that may be a credential hidden.
fn hide_text(pieces: &[Piece]) -> String {
    let hidden: Vec<Piece> = pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) if looks_like_credential(t) => Piece::Text("(credential)".into()),
            other => other.clone(),
        })
        .collect();
    map::show_pieces(&hidden)
}

fn missing(d: &mut Draft, what: &str, why: String) -> DraftValue {
    d.todos.push(format!("{what} has no value here: {why}"));
    DraftValue::Missing {
        note: why,
        required: true,
    }
}

/// `{name: <server>, key}`, with the key made unique within the server.
pub(super) fn secret_ref(d: &Draft, key: &str) -> SecretRef {
    let taken: BTreeSet<&str> = d.secrets.iter().map(|s| s.secret.key.as_str()).collect();
    let mut candidate = key.to_owned();
    let mut n = 2;
    while taken.contains(candidate.as_str()) {
        candidate = format!("{key}-{n}");
        n += 1;
    }
    SecretRef {
        name: d.name.clone(),
        key: candidate,
    }
}
