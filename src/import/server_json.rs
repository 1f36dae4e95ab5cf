//! A registry `server.json` (schemas 2025-09-29, 2025-10-17, 2025-12-11):
//! one server, offered as packages to run (`packages[]`: npm, pypi, oci,
//! nuget, mcpb) and as hosted endpoints (`remotes[]`). Values are inputs
//! the client asks the user for (`isRequired`, `isSecret`, `default`,
//! `value` with `{variables}`).
//!
//! One server.json gives one McpServer: its packages and remotes are the
//! same server packaged different ways, and running several would start
//! the same tools twice. The first package mcpctl can run (npm, pypi, oci,
//! in the file's order) wins; without one, the first remote; the others
//! are named in a warning.

use super::client::{external_url, header_allowed, secret_ref};
use super::map::{self, is_credential_name, short};
use super::{Draft, DraftValue, DraftWorkload, ImportError, Imported, NeededSecret};
use crate::spec::{PackageRuntime, Transport};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The schema versions this reader was written against.
const SCHEMAS: &[&str] = &["2025-09-29", "2025-10-11", "2025-10-17", "2025-12-11"];

/// Top-level fields that describe the server rather than configure it.
const METADATA: &[&str] = &[
    "$schema",
    "name",
    "title",
    "description",
    "version",
    "repository",
    "websiteUrl",
    "icons",
    "status",
    "_meta",
    "packages",
    "remotes",
];

const PACKAGE_FIELDS: &[&str] = &[
    "registryType",
    "registryBaseUrl",
    "identifier",
    "version",
    "fileSha256",
    "runtimeHint",
    "transport",
    "runtimeArguments",
    "packageArguments",
    "environmentVariables",
];

pub(super) fn import(
    root: &Map<String, Value>,
    out: &mut Imported,
    file: &str,
) -> Result<(), ImportError> {
    let text = |k: &str| root.get(k).and_then(Value::as_str);
    let full_name = text("name").unwrap_or("server");
    let name = map::dns_label(full_name.rsplit('/').next().unwrap_or(full_name));
    let mut warnings = Vec::new();
    if let Some(schema) = text("$schema")
        && !SCHEMAS.iter().any(|v| schema.contains(v))
    {
        warnings.push(format!(
            "the schema `{}` is not one import was written for ({}); it was read as 2025-12-11",
            short(schema),
            SCHEMAS.join(", ")
        ));
    }
    let unknown: Vec<String> = root
        .keys()
        .filter(|k| !METADATA.contains(&k.as_str()))
        .map(|k| format!("`{}`", short(k)))
        .collect();
    if !unknown.is_empty() {
        warnings.push(format!("fields not carried over: {}", unknown.join(", ")));
    }
    let packages = list(root.get("packages"), "packages", file)?;
    let remotes = list(root.get("remotes"), "remotes", file)?;

    let runnable = |p: &Value| {
        matches!(
            p.get("registryType").and_then(Value::as_str),
            Some("npm" | "pypi" | "oci")
        )
    };
    let chosen = packages.iter().position(runnable);
    let mut others: Vec<String> = Vec::new();
    for (i, p) in packages.iter().enumerate() {
        if Some(i) != chosen {
            others.push(format!(
                "the {} package `{}`",
                p.get("registryType")
                    .and_then(Value::as_str)
                    .unwrap_or("untyped"),
                short(p.get("identifier").and_then(Value::as_str).unwrap_or("?"))
            ));
        }
    }
    let remote_chosen = chosen.is_none() && !remotes.is_empty();
    for (i, r) in remotes.iter().enumerate() {
        if !(remote_chosen && i == 0) {
            others.push(format!(
                "the hosted endpoint {}",
                short(&crate::model::urls::redact(
                    r.get("url").and_then(Value::as_str).unwrap_or("?")
                ))
            ));
        }
    }

    let origin = full_name.to_owned();
    let mut draft = if let Some(i) = chosen {
        package(&name, origin, &packages[i], &format!("packages[{i}]"), file)?
    } else if remote_chosen {
        remote(&name, origin, &remotes[0], "remotes[0]", file)?
    } else {
        let mut d = Draft::new(
            name.clone(),
            origin,
            DraftWorkload::Placeholder {
                original: "no package mcpctl can run".into(),
            },
        );
        d.todos.push(format!(
            "the server.json offers no npm, pypi or oci package and no remote: build an image for \
             it, and put that in place of `image: {}`",
            super::placeholder_image(&name)
        ));
        d
    };
    if !others.is_empty() {
        let used = if chosen.is_some() {
            "the first package mcpctl can run"
        } else {
            "the first remote"
        };
        warnings.push(format!(
            "imported {used}; not imported: {} (one server.json is one server: edit the YAML to \
             use another)",
            others.join(", ")
        ));
    }
    for (k, label) in [
        ("title", "title"),
        ("description", "description"),
        ("version", "version"),
    ] {
        if let Some(v) = text(k) {
            draft.notes.push(format!("{label}: {}", map::clip(v, 200)));
        }
    }
    if let Some(url) = root
        .get("repository")
        .and_then(|r| r.get("url"))
        .and_then(Value::as_str)
    {
        draft
            .notes
            .push(format!("repository: {}", map::clip(url, 200)));
    }
    warnings.append(&mut draft.warnings);
    draft.warnings = warnings;
    out.servers.push(draft);
    Ok(())
}

fn list<'a>(v: Option<&'a Value>, path: &str, file: &str) -> Result<&'a [Value], ImportError> {
    match v {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(ImportError::WrongType {
            file: file.to_owned(),
            path: path.to_owned(),
            expected: "a list",
            found: map::kind(other),
        }),
    }
}

fn str_of<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn flag(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

/// Values for `{name}` in templates: an input's `variables`, then what the
/// package's own arguments and variables give (for a transport URL).
type Vars = BTreeMap<String, String>;

fn variables_of(input: &Value) -> Vars {
    let mut vars = Vars::new();
    if let Some(m) = input.get("variables").and_then(Value::as_object) {
        for (k, v) in m {
            if flag(v, "isSecret") {
                continue;
            }
            if let Some(val) = str_of(v, "value").or_else(|| str_of(v, "default")) {
                vars.insert(k.clone(), val.to_owned());
            }
        }
    }
    vars
}

/// `text` with `{name}` replaced from `vars`; the names left unresolved.
fn fill(text: &str, vars: &Vars) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        out.push_str(&rest[..open]);
        match vars.get(name) {
            Some(v) if !name.is_empty() => out.push_str(v),
            _ => {
                out.push_str(&rest[open..=open + close]);
                missing.push(name.to_owned());
            }
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    (out, missing)
}

/// An input's value as the client would set it without asking: `value`,
/// else `default`, with its variables filled in.
fn preset(input: &Value) -> Option<(String, Vec<String>)> {
    let raw = str_of(input, "value").or_else(|| str_of(input, "default"))?;
    Some(fill(raw, &variables_of(input)))
}

fn describe(input: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(d) = str_of(input, "description") {
        parts.push(short(d));
    }
    if let Some(c) = input.get("choices").and_then(Value::as_array) {
        let c: Vec<&str> = c.iter().filter_map(Value::as_str).collect();
        if !c.is_empty() {
            parts.push(format!("one of: {}", short(&c.join(", "))));
        }
    }
    parts.join("; ")
}

fn package(
    name: &str,
    origin: String,
    p: &Value,
    path: &str,
    file: &str,
) -> Result<Draft, ImportError> {
    let kind = str_of(p, "registryType").unwrap_or_default();
    let identifier = str_of(p, "identifier").unwrap_or_default().to_owned();
    let version = str_of(p, "version").map(str::to_owned);
    let mut warnings = Vec::new();
    let unknown: Vec<String> = p
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .filter(|k| !PACKAGE_FIELDS.contains(&k.as_str()))
        .map(|k| format!("`{}`", short(k)))
        .collect();
    if !unknown.is_empty() {
        warnings.push(format!(
            "package fields not carried over: {}",
            unknown.join(", ")
        ));
    }
    let workload = match kind {
        "npm" | "pypi" => {
            let (runtime, public, hints) = if kind == "npm" {
                (
                    PackageRuntime::Node,
                    "registry.npmjs.org",
                    &["npx", "npm"][..],
                )
            } else {
                (
                    PackageRuntime::Python,
                    "pypi.org",
                    &["uvx", "uv", "pip", "python"][..],
                )
            };
            if let Some(base) = str_of(p, "registryBaseUrl")
                && !base.contains(public)
            {
                warnings.push(format!(
                    "the package comes from `{}`; the runner image installs from the public registry",
                    short(base)
                ));
            }
            if let Some(hint) = str_of(p, "runtimeHint")
                && !hints.contains(&hint)
            {
                warnings.push(format!(
                    "runtimeHint `{}` was not carried over: mcpctl runs {kind} packages with {}",
                    short(hint),
                    hints[0]
                ));
            }
            if version.is_none() {
                warnings.push(format!(
                    "the package `{}` has no version: it runs the latest each time an instance starts",
                    short(&identifier)
                ));
            }
            DraftWorkload::Package {
                name: identifier.clone(),
                runtime,
                version: version.clone().filter(|v| v != "latest"),
            }
        }
        _ => DraftWorkload::Image(oci_image(p, &identifier, version.as_deref(), &mut warnings)),
    };
    if str_of(p, "fileSha256").is_some() {
        warnings.push(
            "`fileSha256` is not checked: the runner fetches the package from its registry".into(),
        );
    }
    let mut d = Draft::new(name.to_owned(), origin, workload);
    d.warnings = warnings;

    for (i, e) in list(
        p.get("environmentVariables"),
        &format!("{path}.environmentVariables"),
        file,
    )?
    .iter()
    .enumerate()
    {
        let Some(var) = str_of(e, "name") else {
            d.warnings
                .push(format!("environment variable {i} has no `name`: skipped"));
            continue;
        };
        if !map::is_env_name(var) {
            d.warnings.push(format!(
                "`{}` is not an environment variable name: skipped",
                short(var)
            ));
            continue;
        }
        let v = input_value(&mut d, var, e, false);
        d.env.push((var.to_owned(), v));
    }

    let runtime_args = list(
        p.get("runtimeArguments"),
        &format!("{path}.runtimeArguments"),
        file,
    )?;
    let mut not_carried = Vec::new();
    for a in runtime_args {
        let flag_name = str_of(a, "name").unwrap_or_default();
        // `docker run -e NAME=VALUE` is an env var mcpctl can carry.
        if kind == "oci"
            && matches!(flag_name, "-e" | "--env")
            && let Some((text, missing)) = preset(a)
            && let Some((var, value)) = text.split_once('=')
            && map::is_env_name(var)
        {
            let v = if flag(a, "isSecret") || is_credential_name(var) || !missing.is_empty() {
                let mut input = a.clone();
                let described = one_description(a);
                if let Some(m) = input.as_object_mut() {
                    m.remove("value");
                    m.remove("default");
                    if !m.contains_key("description")
                        && let Some(text) = described
                    {
                        m.insert("description".into(), text.into());
                    }
                }
                input_value(&mut d, var, &input, false)
            } else {
                DraftValue::Plain(value.to_owned())
            };
            d.env.push((var.to_owned(), v));
            continue;
        }
        not_carried.push(argument_label(a));
    }
    if !not_carried.is_empty() {
        let runner = str_of(p, "runtimeHint").unwrap_or(match kind {
            "npm" => "npx",
            "pypi" => "uvx",
            _ => "docker",
        });
        d.warnings.push(format!(
            "{runner} arguments not carried over: {} (mcpctl starts the {} itself)",
            not_carried.join(", "),
            if kind == "oci" { "container" } else { "runner" }
        ));
    }

    let mut vars = Vars::new();
    let package_args = list(
        p.get("packageArguments"),
        &format!("{path}.packageArguments"),
        file,
    )?;
    d.command = arguments(&mut d, package_args, &mut vars);
    for (var, value) in &d.env {
        if let DraftValue::Plain(v) = value {
            vars.entry(var.clone()).or_insert_with(|| v.clone());
        }
    }
    if let Some(t) = p.get("transport") {
        package_transport(&mut d, t, &vars);
    }
    Ok(d)
}

/// The image reference: the identifier, pinned by `version` when it has
/// no tag of its own (2025-09-29 kept the version apart), under the
/// registry of `registryBaseUrl` when the identifier names none.
fn oci_image(
    p: &Value,
    identifier: &str,
    version: Option<&str>,
    warnings: &mut Vec<String>,
) -> String {
    let mut image = identifier.to_owned();
    let first = image.split('/').next().unwrap_or_default();
    let has_registry = image.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    if !has_registry
        && let Some(base) = str_of(p, "registryBaseUrl")
        && let Ok(u) = url::Url::parse(base)
        && let Some(host) = u.host_str()
        && !matches!(
            host,
            "docker.io" | "registry-1.docker.io" | "index.docker.io"
        )
    {
        image = format!("{host}/{image}");
    }
    let last = image.rsplit('/').next().unwrap_or_default();
    let tagged = last.contains(':') || image.contains('@');
    match version {
        Some(v) if !tagged => image = format!("{image}:{v}"),
        None if !tagged => warnings.push(format!(
            "the image `{}` has no tag: it runs whatever `latest` is when an instance starts",
            short(&image)
        )),
        _ => {}
    }
    image
}

/// The description of an input's only variable, for an input that has
/// none of its own (`-e TOKEN={token}`).
fn one_description(a: &Value) -> Option<String> {
    let vars = a.get("variables")?.as_object()?;
    match vars.values().collect::<Vec<_>>().as_slice() {
        [only] => str_of(only, "description").map(str::to_owned),
        _ => None,
    }
}

fn argument_label(a: &Value) -> String {
    let n = str_of(a, "name")
        .or_else(|| str_of(a, "valueHint"))
        .unwrap_or("?");
    match str_of(a, "value") {
        Some(v) if !flag(a, "isSecret") => format!("`{} {}`", short(n), map::shown_arg(v)),
        _ => format!("`{}`", short(n)),
    }
}

/// `packageArguments` as a command line. A required argument with no
/// value becomes `<hint>` and a TODO; an optional one is left out, and
/// named in a warning.
fn arguments(d: &mut Draft, args: &[Value], vars: &mut Vars) -> Vec<String> {
    let mut command = Vec::new();
    let mut optional = Vec::new();
    for a in args {
        let named = str_of(a, "type") == Some("named");
        let flag_name = str_of(a, "name").unwrap_or_default();
        let hint = str_of(a, "valueHint").unwrap_or(if named {
            flag_name.trim_start_matches('-')
        } else {
            "value"
        });
        let boolean = named && str_of(a, "format") == Some("boolean");
        let secret = flag(a, "isSecret") || (named && is_credential_name(flag_name));
        let value = preset(a);
        if secret {
            d.todos.push(format!(
                "the argument `{}` is a secret; arguments are shown in plans and kept in the state, \
                 so it was left out: if the server can read it from an environment variable, set \
                 that to a secretRef in `env`",
                short(if named { flag_name } else { hint })
            ));
            continue;
        }
        let value = match value {
            // A boolean flag is given by its name alone, or not at all.
            Some((text, _)) if boolean => {
                if text != "true" {
                    continue;
                }
                None
            }
            None if boolean && flag(a, "isRequired") => None,
            Some((text, missing)) => {
                if !missing.is_empty() {
                    d.todos.push(format!(
                        "the argument `{}` needs {}: fill it in in `command`",
                        short(&text),
                        missing
                            .iter()
                            .map(|m| format!("`{{{}}}`", short(m)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                Some(text)
            }
            None if flag(a, "isRequired") => {
                d.todos.push(format!(
                    "the required argument `{}` has no value{}: replace `<{}>` in `command`",
                    short(if named { flag_name } else { hint }),
                    Some(describe(a))
                        .filter(|s| !s.is_empty())
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default(),
                    short(hint)
                ));
                Some(format!("<{hint}>"))
            }
            None => {
                optional.push(format!("`{}`", short(if named { flag_name } else { hint })));
                continue;
            }
        };
        if let Some(v) = &value {
            vars.insert(hint.to_owned(), v.clone());
        }
        if named {
            command.push(flag_name.to_owned());
        }
        command.extend(value);
    }
    if !optional.is_empty() {
        d.warnings.push(format!(
            "optional arguments with no value left out of `command`: {}",
            optional.join(", ")
        ));
    }
    command
}

/// An env var or header from a `KeyValueInput`.
fn input_value(d: &mut Draft, name: &str, input: &Value, header: bool) -> DraftValue {
    let required = flag(input, "isRequired");
    let what = if header {
        format!("header {name}")
    } else {
        format!("env {name}")
    };
    let secret = flag(input, "isSecret") || is_credential_name(name);
    let about = describe(input);
    if secret {
        let raw = str_of(input, "value").unwrap_or_default();
        // `Bearer {token}`: the scheme before the secret is the prefix.
        let prefix = match raw.split_once(' ') {
            Some((scheme, rest))
                if header
                    && scheme.chars().all(|c| c.is_ascii_alphabetic())
                    && !scheme.is_empty()
                    && rest.starts_with('{')
                    && rest.ends_with('}') =>
            {
                format!("{scheme} ")
            }
            _ => String::new(),
        };
        if !required && str_of(input, "value").is_none() {
            return DraftValue::Missing {
                note: format!("optional secret{}", parenthesised(&about)),
                required: false,
            };
        }
        let key = if header && name.eq_ignore_ascii_case("authorization") {
            "token".to_owned()
        } else {
            map::secret_key(name)
        };
        let secret = secret_ref(d, &key);
        d.secrets.push(NeededSecret {
            secret: secret.clone(),
            used_by: what,
            from: if about.is_empty() {
                "the credential the server's publisher asks for".into()
            } else {
                format!("the server's publisher describes it as: {about}")
            },
        });
        return DraftValue::Secret { secret, prefix };
    }
    match preset(input) {
        Some((text, missing)) if missing.is_empty() => DraftValue::Plain(text),
        Some((text, missing)) => {
            d.todos.push(format!(
                "{what} is `{}`, which needs {}",
                short(&text),
                missing
                    .iter()
                    .map(|m| format!("`{{{}}}`", short(m)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            DraftValue::Missing {
                note: format!(
                    "`{}` with its variables filled in{}",
                    short(&text),
                    parenthesised(&about)
                ),
                required: true,
            }
        }
        None if required => {
            d.todos.push(format!(
                "{what} is required and has no value{}",
                parenthesised(&about)
            ));
            DraftValue::Missing {
                note: format!("required{}", parenthesised(&about)),
                required: true,
            }
        }
        None => DraftValue::Missing {
            note: format!("optional{}", parenthesised(&about)),
            required: false,
        },
    }
}

fn parenthesised(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// A package that serves HTTP: its transport's URL template names the
/// port and path, from the package's own arguments and variables.
fn package_transport(d: &mut Draft, t: &Value, vars: &Vars) {
    let transport = match str_of(t, "type") {
        None | Some("stdio") => return,
        Some("streamable-http") => Transport::StreamableHttp,
        Some("sse") => Transport::Sse,
        Some(other) => {
            d.todos.push(format!(
                "the transport `{}` is not one mcpctl speaks: set `transport`",
                short(other)
            ));
            return;
        }
    };
    d.transport = Some(transport);
    let template = str_of(t, "url").unwrap_or_default();
    let (url, missing) = fill(template, vars);
    match url::Url::parse(&url) {
        Ok(u) if missing.is_empty() && u.port_or_known_default().is_some() => {
            d.port = u.port_or_known_default();
            let default = if transport == Transport::Sse {
                "/sse"
            } else {
                "/mcp"
            };
            if u.path() != default && u.path() != "/" {
                d.path = Some(u.path().to_owned());
            }
        }
        _ => {
            d.port = Some(8080);
            d.todos.push(format!(
                "the server listens at `{}`, which import could not resolve: set `port` (and `path`)",
                short(template)
            ));
        }
    }
    if let Some(headers) = t.get("headers").and_then(Value::as_array)
        && !headers.is_empty()
    {
        d.warnings.push(
            "the transport's `headers` were not carried over: mcpctl sends headers only to external servers"
                .into(),
        );
    }
}

fn remote(
    name: &str,
    origin: String,
    r: &Value,
    path: &str,
    file: &str,
) -> Result<Draft, ImportError> {
    let mut d = Draft::new(
        name.to_owned(),
        origin,
        DraftWorkload::External {
            url: String::new(),
            headers: Vec::new(),
        },
    );
    match str_of(r, "type") {
        Some("sse") => d.transport = Some(Transport::Sse),
        Some("streamable-http") | None => {}
        Some(other) => d.warnings.push(format!(
            "the remote type `{}` is not one mcpctl knows; read as streamable-http",
            short(other)
        )),
    }
    let (url, missing) = fill(str_of(r, "url").unwrap_or_default(), &variables_of(r));
    let url = if missing.is_empty() {
        external_url(&mut d, &url)
    } else {
        let needs: Vec<String> = missing
            .iter()
            .map(|m| {
                let about = r
                    .get("variables")
                    .and_then(|v| v.get(m))
                    .map(describe)
                    .unwrap_or_default();
                format!("`{{{}}}`{}", short(m), parenthesised(&about))
            })
            .collect();
        d.todos.push(format!(
            "the URL `{}` needs {}: write it out in `external.url`",
            short(&url),
            needs.join(", ")
        ));
        "https://replace-me.invalid/mcp".into()
    };
    let mut headers = Vec::new();
    for (i, h) in list(r.get("headers"), &format!("{path}.headers"), file)?
        .iter()
        .enumerate()
    {
        let Some(header) = str_of(h, "name") else {
            d.warnings
                .push(format!("header {i} has no `name`: skipped"));
            continue;
        };
        if !header_allowed(&mut d, header) {
            continue;
        }
        let v = input_value(&mut d, header, h, true);
        headers.push((header.to_owned(), v));
    }
    d.workload = DraftWorkload::External { url, headers };
    Ok(d)
}
