//! Validation: one raw document in, a [`Server`] or located [`Issue`]s out.
//!
//! Every rule of the format (design §2) lives here. The checker does not stop
//! at the first problem in a document: it records each one and carries on
//! with a stand-in value, and only a document without problems becomes a
//! [`Server`]. Messages name the field by its path (`spec.port`), and the
//! help says what to write instead.

use super::diag::{Issue, LineIndex, code, did_you_mean, list, short, show_leaf, unclosed_opener};
use super::raw::{
    API_VERSION, At, Entries, Entry, EnvRaw, HeaderRaw, KIND, Leaf, LeafList, MapOf, Pos, RUNTIMES,
    RawExternal, RawHeaderSecret, RawMetadata, RawPackage, RawReadiness, RawResources,
    RawSecretHolder, RawSecretRef, RawServer, RawSpec, Slot, Sub, TRANSPORTS,
};
use super::{Limits, units};
use crate::model::{HttpHeader, PROBE_HEADERS};
use crate::spec::model::{
    EnvValue, External, HeaderValue, Origin, Package, PackageRuntime, Readiness, Resources,
    SecretRef, Server, ServerSpec, Transport, Workload,
};
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

/// What one document yielded. The name is kept even when the document has
/// other problems, so duplicate names are still reported.
pub(crate) struct Outcome {
    pub server: Option<Server>,
    pub name: Option<(String, Pos)>,
}

/// Validates the documents of one file and collects their issues.
pub(crate) struct Checker<'a> {
    file: &'a Path,
    at: Option<&'a str>,
    text: &'a str,
    index: OnceCell<LineIndex>,
    limits: Limits,
    pub issues: Vec<Issue>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(
        file: &'a Path,
        at: Option<&'a str>,
        text: &'a str,
        limits: Limits,
    ) -> Checker<'a> {
        Checker {
            file,
            at,
            text,
            index: OnceCell::new(),
            limits,
            issues: Vec::new(),
        }
    }

    fn push(&mut self, issue: Issue) {
        self.issues.push(issue);
    }

    /// A document that serde-saphyr could not read.
    pub(crate) fn yaml_error(&mut self, err: &serde_saphyr::Error) {
        let mut issue = Issue::from_yaml(err);
        let about_flow = issue.message.contains("flow") || issue.message.contains("bracket");
        if issue.code == code::SYNTAX
            && about_flow
            && let Some(open) = unclosed_opener(self.text, issue.pos)
            && (open.line, open.col) != (issue.pos.line, issue.pos.col)
        {
            issue = issue.also(open, "opened here and never closed");
        }
        self.push(issue);
    }

    /// The text at `pos` as written, for help that quotes it (`"1.10"`, not `1.1`).
    /// A number or boolean where a string value belongs (an env var's, a
    /// header's): YAML changed what was typed, so the help quotes it back
    /// exactly as written.
    fn unquoted_scalar(&mut self, path: &str, name: &str, leaf: &Leaf, at: Pos, so: &str) {
        let written = self
            .written(at)
            .map_or_else(|| show_leaf(leaf), str::to_owned);
        self.push(
            Issue::new(
                code::WRONG_TYPE,
                at,
                format!("`{path}` must be a string, found {}", leaf.kind()),
            )
            .label(format!("YAML reads this as {}", leaf.kind()))
            .help(format!(
                "quote it, so {so}: `{}: \"{written}\"`",
                short(name)
            )),
        );
    }

    fn written(&self, pos: Pos) -> Option<&'a str> {
        let text = self.text;
        let span = self
            .index
            .get_or_init(|| LineIndex::new(text))
            .span(text, pos)?;
        let written = text.get(span.offset()..span.offset() + span.len())?;
        (!written.is_empty() && !written.contains('\n')).then_some(written)
    }

    pub(crate) fn document(&mut self, doc: At<MapOf<RawServer>>) -> Outcome {
        let before = self.issues.len();
        let start = doc.pos;
        let mut outcome = Outcome {
            server: None,
            name: None,
        };
        let raw = match doc.value {
            MapOf::Map(raw) => raw,
            MapOf::Not(leaf) => {
                self.push(
                    Issue::new(
                        code::WRONG_TYPE,
                        start,
                        format!("a server document must be a mapping, found {}", leaf.kind()),
                    )
                    .label("expected `apiVersion`, `kind`, `metadata` and `spec` here")
                    .help(format!(
                        "start each document with `apiVersion: {API_VERSION}` and `kind: {KIND}`"
                    )),
                );
                return outcome;
            }
        };

        // Fields of `spec` at column 0 under an empty `spec:` (or with no
        // `spec:` at all) are one slip of indentation. Reported as unknown
        // top-level fields beside "`spec` is empty", the fix was hidden.
        let spec_empty = match raw.spec.get() {
            None => Some(None),
            Some(e) if matches!(e.value, MapOf::Not(Leaf::Null)) => Some(Some(e.key)),
            Some(_) => None,
        };
        let (misplaced, unknown): (Vec<&At<String>>, Vec<&At<String>>) = raw
            .unknown
            .iter()
            .partition(|k| spec_empty.is_some() && RawSpec::FIELDS.contains(&k.value.as_str()));
        let suggested = self.unknown_fields(unknown, RawServer::FIELDS, RawServer::CONTEXT);
        let missing = |field: &str| !suggested.contains(&field);
        let misplaced_spec = match (spec_empty, misplaced.as_slice()) {
            (Some(spec_key), [first, rest @ ..]) => {
                self.misplaced_spec_fields(first, rest, spec_key);
                true
            }
            _ => false,
        };

        match self.text_of(&raw.api_version, "apiVersion", API_VERSION) {
            Some((v, _)) if v == API_VERSION => {}
            Some((v, at)) => self.push(
                Issue::new(
                    code::API_VERSION,
                    at,
                    format!("unsupported apiVersion \"{}\"", short(v)),
                )
                .label(format!("expected `{API_VERSION}`"))
                .help(format!(
                    "set `apiVersion: {API_VERSION}`, the only version this mcpctl reads"
                )),
            ),
            None if raw.api_version.get().is_none() && missing("apiVersion") => self.push(
                Issue::new(code::MISSING_FIELD, start, "missing `apiVersion`")
                    .label("this document has no `apiVersion`")
                    .help(format!(
                        "add `apiVersion: {API_VERSION}` at the top of the document"
                    )),
            ),
            None => {}
        }
        match self.text_of(&raw.kind, "kind", KIND) {
            Some((v, _)) if v == KIND => {}
            Some((v, at)) => {
                let help = if v.eq_ignore_ascii_case(KIND) {
                    format!("did you mean `{KIND}`? `kind` is case-sensitive")
                } else {
                    format!(
                        "mcpctl reads only `kind: {KIND}` documents; keep other manifests out of the spec paths"
                    )
                };
                // Some other kind of manifest: its fields are not ours to
                // judge, so the kind is the only problem worth reporting.
                let issue =
                    Issue::new(code::KIND, at, format!("unsupported kind \"{}\"", short(v)))
                        .label(format!("expected `{KIND}`"))
                        .help(help);
                self.issues.truncate(before);
                self.push(issue);
                return outcome;
            }
            None if raw.kind.get().is_none() && missing("kind") => self.push(
                Issue::new(code::MISSING_FIELD, start, "missing `kind`")
                    .label("this document has no `kind`")
                    .help(format!("add `kind: {KIND}` after `apiVersion`")),
            ),
            None => {}
        }

        let mut name = None;
        let mut labels = BTreeMap::new();
        match self.mapping(&raw.metadata, "metadata") {
            Some((meta, entry)) => {
                name = self.metadata(meta, entry.key, &mut labels);
                outcome.name = name.clone();
            }
            None if raw.metadata.get().is_none() && missing("metadata") => self.push(
                Issue::new(code::MISSING_FIELD, start, "missing `metadata`")
                    .label("this document has no `metadata`")
                    .help("add `metadata: {name: my-server}` to name the server"),
            ),
            None => {}
        }

        // Misplaced fields already say why `spec` is empty or absent.
        let spec_map = (!misplaced_spec)
            .then(|| self.mapping(&raw.spec, "spec"))
            .flatten();
        let spec = match spec_map {
            Some((spec, entry)) => self.spec(spec, entry.key),
            None => {
                if raw.spec.get().is_none() && missing("spec") && !misplaced_spec {
                    self.push(
                        Issue::new(code::MISSING_FIELD, start, "missing `spec`")
                            .label("this document has no `spec`")
                            .help("add a `spec` with one of `image`, `package` or `external`"),
                    );
                }
                None
            }
        };

        if let (Some((name, _)), Some(spec), true) = (name, spec, self.issues.len() == before) {
            outcome.server = Some(Server {
                name,
                labels,
                spec,
                origin: Origin {
                    file: self.file.to_owned(),
                    at: self.at.map(str::to_owned),
                    line: start.line as usize,
                    column: start.col as usize,
                },
            });
        }
        outcome
    }

    /// One issue for every field of `spec` written at the top level, at
    /// the first of them, when `spec` is empty (`spec_key`) or absent.
    fn misplaced_spec_fields(
        &mut self,
        first: &At<String>,
        rest: &[&At<String>],
        spec_key: Option<Pos>,
    ) {
        let names: Vec<&str> = std::iter::once(first)
            .chain(rest.iter().copied())
            .map(|k| k.value.as_str())
            .collect();
        let (verb, them) = if names.len() == 1 {
            ("is", "it")
        } else {
            ("are", "them")
        };
        let names = list(&names);
        let mut issue = match spec_key {
            Some(_) => Issue::new(
                code::MISPLACED_FIELD,
                first.pos,
                format!("{names} {verb} at the top level: indent {them} under `spec:`"),
            )
            .help(format!(
                "`spec:` is empty because the lines after it are not indented: indent {names} (and each line that belongs to the spec) by two spaces"
            )),
            None => Issue::new(
                code::MISPLACED_FIELD,
                first.pos,
                format!("{names} {verb} at the top level: put {them} under a `spec:` key"),
            )
            .help(format!(
                "add a line `spec:` above {them}, and indent {names} (and each line that belongs to the spec) by two spaces"
            )),
        }
        .label("a field of `spec`");
        for k in rest {
            issue = issue.also(k.pos, "a field of `spec` too");
        }
        if let Some(key) = spec_key {
            issue = issue.also(key, "empty: nothing is indented under it");
        }
        self.push(issue);
    }

    fn metadata(
        &mut self,
        meta: &RawMetadata,
        key: Pos,
        labels: &mut BTreeMap<String, String>,
    ) -> Option<(String, Pos)> {
        let suggested =
            self.unknown_fields(&meta.unknown, RawMetadata::FIELDS, RawMetadata::CONTEXT);
        if let Some((map, _)) = self.mapping(&meta.labels, "metadata.labels") {
            for (k, v) in &map.0 {
                if let Some((value, _)) = self.string_leaf(
                    &v.value,
                    v.pos,
                    &format!("metadata.labels.{}", k.value),
                    "team: platform",
                ) {
                    labels.insert(k.value.clone(), value.to_owned());
                }
            }
        }
        let Some((name, at)) = self.text_of(&meta.name, "metadata.name", "name: github") else {
            if meta.name.get().is_none() && !suggested.contains(&"name") {
                self.push(
                    Issue::new(code::MISSING_FIELD, key, "missing `metadata.name`")
                        .label("`metadata` has no `name`")
                        .help("every server needs a name that is unique within the source, e.g. `name: github`"),
                );
            }
            return None;
        };
        match dns_label(name) {
            Ok(()) => Some((name.to_owned(), at)),
            Err(why) => {
                let fixed = suggest_dns_label(name);
                let example = match fixed.as_deref() {
                    Some(fixed) if fixed != name => format!(", e.g. `{fixed}`"),
                    _ => String::new(),
                };
                self.push(
                    Issue::new(code::NAME, at, format!("invalid server name \"{}\"", short(name)))
                        .label(why)
                        .help(format!(
                            "a name is a DNS label: lowercase letters, digits and `-`, starting and ending \
                             with a letter or digit, at most 63 characters{example}"
                        )),
                );
                // The name is still this document's, for duplicate detection.
                Some((name.to_owned(), at))
            }
        }
    }

    fn spec(&mut self, s: &RawSpec, spec_key: Pos) -> Option<ServerSpec> {
        let before = self.issues.len();
        let suggested = self.unknown_fields(&s.unknown, RawSpec::FIELDS, RawSpec::CONTEXT);

        // Exactly one workload. The others are still checked on their own.
        let present: Vec<(&str, Pos)> = [
            ("image", s.image.get().map(|e| e.key)),
            ("package", s.package.get().map(|e| e.key)),
            ("external", s.external.get().map(|e| e.key)),
        ]
        .into_iter()
        .filter_map(|(n, k)| Some((n, k?)))
        .collect();
        let image = self.image(&s.image);
        let package = self.package(&s.package);
        let external = self.external(&s.external);
        let workload = match present.as_slice() {
            [] => {
                if !suggested
                    .iter()
                    .any(|f| ["image", "package", "external"].contains(f))
                {
                    self.push(
                        Issue::new(code::WORKLOAD, spec_key, "`spec` needs one of `image`, `package` or `external`")
                            .label("nothing to run")
                            .help(
                                "set `image` to run a container image, `package: {name, runtime}` to run an npm \
                                 or PyPI package, or `external: {url}` for a server that runs elsewhere",
                            ),
                    );
                }
                None
            }
            [_] => image
                .map(Workload::Image)
                .or(package.map(Workload::Package))
                .or(external.map(Workload::External)),
            [(first, first_at), (second, second_at), ..] => {
                let names: Vec<&str> = present.iter().map(|(n, _)| *n).collect();
                let second_at = *second_at;
                self.push(
                    Issue::new(code::WORKLOAD, second_at, format!("`spec` sets both {}", list(&names)))
                        .label(format!("`{second}` conflicts with `{first}`"))
                        .also(*first_at, format!("`{first}` set here"))
                        .help("a server runs exactly one thing: keep one of `image`, `package` and `external`"),
                );
                None
            }
        };
        let is_external = s.external.get().is_some();

        // Any size is read here, so that a huge count gets the limit's help
        // below rather than a bare "out of range".
        let replicas = self.whole(&s.replicas, "spec.replicas", 0..=i128::MAX, "replicas: 2");
        let replicas = replicas.and_then(|(n, at)| self.replica_count(n, at));
        if let (true, Some((n, at))) = (is_external, replicas)
            && n > 1
        {
            self.push(
                Issue::new(
                    code::INVALID_VALUE,
                    at,
                    format!("an external server has one instance, not {n}"),
                )
                .label("more than one")
                .help("remove `replicas` (or use `replicas: 0` to keep it defined but unused)"),
            );
        }

        let command = self.command(&s.command);

        let transport_entry = s.transport.get();
        let parsed = self.transport(&s.transport);
        // An unreadable transport has been reported; checks that depend on it would only add noise.
        let transport_ok = transport_entry.is_none() || parsed.is_some();
        let transport = parsed.unwrap_or(if is_external {
            Transport::StreamableHttp
        } else {
            Transport::Stdio
        });
        if let (true, Some(e), Transport::Stdio) = (is_external, transport_entry, transport) {
            self.push(
                Issue::new(
                    code::NOT_APPLICABLE,
                    e.at,
                    "an external server cannot use the stdio transport",
                )
                .label("stdio needs a process mcpctl runs")
                .help(
                    "use `transport: streamable-http` (the default for external servers) or `sse`",
                ),
            );
        }

        let port = self.whole(&s.port, "spec.port", 1..=65535, "port: 8080");
        let port = port.and_then(|(p, at)| Some((u16::try_from(p).ok()?, at)));
        let path = self.path(&s.path);
        if is_external {
            self.not_for_external(s.port.get().map(|e| e.key), "port");
            self.not_for_external(s.path.get().map(|e| e.key), "path");
            self.not_for_external(s.command.get().map(|e| e.key), "command");
            self.not_for_external(s.env.get().map(|e| e.key), "env");
            self.not_for_external(s.resources.get().map(|e| e.key), "resources");
        } else if transport.is_http() {
            if s.port.get().is_none() && transport_ok {
                let at = transport_entry.map_or(spec_key, |e| e.at);
                self.push(
                    Issue::new(
                        code::MISSING_FIELD,
                        at,
                        format!("`spec.port` is required with transport `{}`", transport.as_str()),
                    )
                    .label("an HTTP transport needs a port")
                    .help("add the port the server listens on inside the container, e.g. `port: 8080`"),
                );
            }
        } else if transport_ok {
            for (entry, field) in [
                (s.port.get().map(|e| e.key), "port"),
                (s.path.get().map(|e| e.key), "path"),
            ] {
                if let Some(at) = entry {
                    self.push(
                        Issue::new(code::NOT_APPLICABLE, at, format!("`spec.{field}` is only used with an HTTP transport"))
                            .label("the transport is stdio")
                            .help(format!(
                                "set `transport: streamable-http` (or `sse`) if the server speaks HTTP, or remove `{field}`"
                            )),
                    );
                }
            }
        }
        let path = match (is_external, transport) {
            (true, _) | (false, Transport::Stdio) => None,
            (false, Transport::Sse) => Some(path.unwrap_or_else(|| "/sse".into())),
            (false, Transport::StreamableHttp) => Some(path.unwrap_or_else(|| "/mcp".into())),
        };

        let env = self.env(&s.env);
        let resources = self.resources(&s.resources);
        let readiness = self.readiness(&s.readiness);

        if self.issues.len() != before {
            return None;
        }
        Some(ServerSpec {
            replicas: replicas.map_or(1, |(n, _)| n),
            workload: workload?,
            command,
            transport,
            port: if is_external {
                None
            } else {
                port.map(|(p, _)| p)
            },
            path,
            env,
            resources,
            readiness,
        })
    }

    /// A count within the limit. The planner makes one action per missing
    /// instance, so an absurd count is refused here, before anything allocates.
    fn replica_count(&mut self, n: i128, at: Pos) -> Option<(u32, Pos)> {
        let max = self.limits.max_replicas();
        if n <= i128::from(max) {
            return u32::try_from(n).ok().map(|n| (n, at));
        }
        let hard = Limits::HARD_MAX_REPLICAS;
        let help = if n <= i128::from(hard) {
            format!(
                "if {n} instances are meant, raise the limit with `--max-replicas {n}` \
                 (or `MCPCTL_MAX_REPLICAS={n}`); it goes up to {hard}"
            )
        } else {
            format!(
                "mcpctl runs at most {hard} instances of one server, the most `--max-replicas` \
                 (or `MCPCTL_MAX_REPLICAS`) allows; check for a typo, or split the server"
            )
        };
        self.push(
            Issue::new(
                code::INVALID_VALUE,
                at,
                format!("`spec.replicas` is {n}, more than the limit of {max}"),
            )
            .label(format!("more than {max} instances"))
            .help(help),
        );
        None
    }

    fn image(&mut self, slot: &Slot<Leaf, String>) -> Option<String> {
        let (image, at) = self.text_of(slot, "spec.image", "image: ghcr.io/org/server:1.0")?;
        if image.chars().any(char::is_whitespace) {
            self.push(
                Issue::new(code::INVALID_VALUE, at, "`spec.image` contains whitespace")
                    .label("not an image reference")
                    .help("put the image reference alone in `image` and its arguments in `command: [...]`"),
            );
            return None;
        }
        Some(image.to_owned())
    }

    fn package(&mut self, slot: &Sub<RawPackage>) -> Option<Package> {
        let (p, entry) = self.mapping(slot, "spec.package")?;
        let suggested = self.unknown_fields(&p.unknown, RawPackage::FIELDS, RawPackage::CONTEXT);
        let example = "package: {name: mcp-server-fetch, runtime: python}";
        let name = self.text_of(&p.name, "spec.package.name", "name: mcp-server-fetch");
        if p.name.get().is_none() && !suggested.contains(&"name") {
            self.push(
                Issue::new(
                    code::MISSING_FIELD,
                    entry.key,
                    "`spec.package` needs a `name`",
                )
                .label("no package name")
                .help(format!("name the npm or PyPI package: `{example}`")),
            );
        }
        if let Some((name, at)) = name
            && name.chars().any(char::is_whitespace)
        {
            self.push(
                Issue::new(code::INVALID_VALUE, at, "`spec.package.name` contains whitespace")
                    .label("not a package name")
                    .help("put the package name alone in `name`, its version in `version` and arguments in `command`"),
            );
        }
        let runtime = match self.text_of(&p.runtime, "spec.package.runtime", "runtime: node") {
            Some(("node", _)) => Some(PackageRuntime::Node),
            Some(("python", _)) => Some(PackageRuntime::Python),
            Some((other, at)) => {
                let guess = did_you_mean(other, RUNTIMES)
                    .map(|g| format!("did you mean `{g}`? "))
                    .unwrap_or_default();
                self.push(
                    Issue::new(code::INVALID_VALUE, at, format!("unknown package runtime \"{}\"", short(other)))
                        .label(format!("expected {}", list(RUNTIMES).replace(" and ", " or ")))
                        .help(format!(
                            "{guess}`node` runs `npx -y NAME@VERSION` and `python` runs `uvx NAME==VERSION`; \
                             for anything else, build an image and use `image`"
                        )),
                );
                None
            }
            None => {
                if p.runtime.get().is_none() && !suggested.contains(&"runtime") {
                    self.push(
                        Issue::new(
                            code::MISSING_FIELD,
                            entry.key,
                            "`spec.package` needs a `runtime`",
                        )
                        .label("no runtime")
                        .help("add `runtime: node` (runs `npx`) or `runtime: python` (runs `uvx`)"),
                    );
                }
                None
            }
        };
        let version = match p.version.get() {
            None => None,
            Some(e) => match &e.value {
                Leaf::Int(_) | Leaf::Float(_) => {
                    let written = self.written(e.at).unwrap_or("1.0");
                    self.push(
                        Issue::new(code::WRONG_TYPE, e.at, "`spec.package.version` must be a quoted string")
                            .label("YAML reads this as a number")
                            .help(format!(
                                "quote it, so that YAML keeps it exactly as written: `version: \"{written}\"`"
                            )),
                    );
                    None
                }
                _ => self
                    .text_of(&p.version, "spec.package.version", "version: \"1.2.0\"")
                    .map(|(v, _)| v.to_owned()),
            },
        };
        Some(Package {
            name: name?.0.to_owned(),
            runtime: runtime?,
            version,
        })
    }

    fn external(&mut self, slot: &Sub<RawExternal>) -> Option<External> {
        let (x, entry) = self.mapping(slot, "spec.external")?;
        let suggested = self.unknown_fields(&x.unknown, RawExternal::FIELDS, RawExternal::CONTEXT);
        // Checked whatever the URL's fate, so a bad header is not hidden by a bad URL.
        let headers = self.headers(&x.headers);
        let Some((url, at)) = self.text_of(
            &x.url,
            "spec.external.url",
            "url: https://mcp.example.com/mcp",
        ) else {
            if x.url.get().is_none() && !suggested.contains(&"url") {
                self.push(
                    Issue::new(
                        code::MISSING_FIELD,
                        entry.key,
                        "`spec.external` needs a `url`",
                    )
                    .label("no URL")
                    .help(
                        "add the server's address: `external: {url: https://mcp.example.com/mcp}`",
                    ),
                );
            }
            return None;
        };
        let help = "use an absolute http(s) URL, e.g. `https://mcp.example.com/mcp`";
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                if let Some(what) = secret_in_url(&u) {
                    self.push(
                        Issue::new(
                            code::SECRET_IN_URL,
                            at,
                            format!("`spec.external.url` holds a secret: {what}"),
                        )
                        .label("a credential in the URL")
                        .help(
                            "the URL is shown in plans, the state and error messages: send the secret in \
                             `headers` instead, e.g. `headers: {Authorization: {secretRef: {name: NAME, key: KEY}, \
                             prefix: \"Bearer \"}}`",
                        ),
                    );
                    return None;
                }
                Some(External {
                    url: u.to_string(),
                    headers,
                })
            }
            Ok(u) => {
                self.push(
                    Issue::new(
                        code::INVALID_VALUE,
                        at,
                        format!(
                            "`spec.external.url` must be http or https, not `{}`",
                            short(u.scheme())
                        ),
                    )
                    .label("unsupported scheme")
                    .help(help),
                );
                None
            }
            Err(e) => {
                self.push(
                    Issue::new(
                        code::INVALID_VALUE,
                        at,
                        format!("invalid URL \"{}\": {e}", short(url)),
                    )
                    .label("not a URL")
                    .help(help),
                );
                None
            }
        }
    }

    fn headers(&mut self, slot: &Sub<Entries<HeaderRaw>>) -> BTreeMap<String, HeaderValue> {
        let mut out = BTreeMap::new();
        let Some((entries, _)) = self.mapping(slot, "spec.external.headers") else {
            return out;
        };
        // By lowercased name: HTTP names ignore case, YAML keys do not.
        let mut seen: BTreeMap<String, Pos> = BTreeMap::new();
        for (key, value) in &entries.0 {
            let name = &key.value;
            let path = format!("spec.external.headers.{}", short(name));
            let lower = name.to_ascii_lowercase();
            if !HttpHeader::is_valid_name(name) {
                let why = match name
                    .chars()
                    .find(|c| !HttpHeader::is_valid_name(&c.to_string()))
                {
                    Some(' ') => "a space is not allowed".to_owned(),
                    Some(':') => {
                        "`:` is not allowed; the value goes after the key's colon".to_owned()
                    }
                    Some(c) => format!("`{}` is not allowed", c.escape_default()),
                    None => "empty".to_owned(),
                };
                self.push(
                    Issue::new(
                        code::INVALID_VALUE,
                        key.pos,
                        format!("invalid header name \"{}\"", short(name)),
                    )
                    .label(why)
                    .help(
                        "a header name is letters, digits and `-` (and a few symbols such as `_` and `.`), \
                         with no spaces or colons, e.g. `Authorization` or `X-Api-Key`",
                    ),
                );
            } else if PROBE_HEADERS.contains(&lower.as_str()) {
                self.push(
                    Issue::new(
                        code::INVALID_VALUE,
                        key.pos,
                        format!("header `{}` is set by mcpctl", short(name)),
                    )
                    .label("the probe sets this header on each request")
                    .help(format!(
                        "remove it: MCP decides {}, and mcpctl sends them as the protocol requires",
                        list(&[
                            "Accept",
                            "Content-Type",
                            "Mcp-Session-Id",
                            "MCP-Protocol-Version"
                        ])
                    )),
                );
            } else if let Some(first) = seen.get(&lower) {
                self.push(
                    Issue::new(
                        code::DUPLICATE_KEY,
                        key.pos,
                        format!("header `{}` is set twice", short(name)),
                    )
                    .label("the same header as an earlier key")
                    .also(*first, "first set here")
                    .help("HTTP header names ignore case: keep one of the two"),
                );
            }
            seen.entry(lower).or_insert(key.pos);
            let example = format!(
                "{}: {{secretRef: {{name: NAME, key: KEY}}, prefix: \"Bearer \"}}",
                short(name)
            );
            let parsed = match &value.value {
                HeaderRaw::Value(Leaf::Str(v)) => self
                    .field_text(v, value.pos, &path)
                    .then(|| HeaderValue::Plain(v.clone())),
                HeaderRaw::Value(Leaf::Null) => {
                    self.push(
                        Issue::new(
                            code::WRONG_TYPE,
                            value.pos,
                            format!("`{path}` has no value"),
                        )
                        .label("empty")
                        .help(format!(
                            "give the header a value, or remove it; a secret is written `{example}`"
                        )),
                    );
                    None
                }
                HeaderRaw::Value(leaf @ (Leaf::Int(_) | Leaf::Float(_) | Leaf::Bool(_))) => {
                    self.unquoted_scalar(
                        &path,
                        name,
                        leaf,
                        value.pos,
                        "the header carries exactly what is written",
                    );
                    None
                }
                HeaderRaw::Value(leaf) => {
                    self.push(
                        Issue::new(
                            code::WRONG_TYPE,
                            value.pos,
                            format!("`{path}` must be a string, found {}", leaf.kind()),
                        )
                        .label("expected a string or a secretRef")
                        .help(format!(
                            "write `{}: value`, or `{example}` for a secret",
                            short(name)
                        )),
                    );
                    None
                }
                HeaderRaw::Secret(holder) => self.header_secret(holder, value.pos, &path, &example),
            };
            if let Some(v) = parsed {
                out.insert(name.clone(), v);
            }
        }
        out
    }

    fn header_secret(
        &mut self,
        holder: &RawHeaderSecret,
        at: Pos,
        path: &str,
        example: &str,
    ) -> Option<HeaderValue> {
        let suggested = self.unknown_fields(
            &holder.unknown,
            RawHeaderSecret::FIELDS,
            RawHeaderSecret::CONTEXT,
        );
        let secret_ref = self.secret_ref(
            &holder.secret_ref,
            suggested.contains(&"secretRef"),
            at,
            path,
            example,
        );
        let prefix = match holder.prefix.get() {
            None => Some(String::new()),
            Some(e) => match &e.value {
                Leaf::Str(p) if !p.is_empty() && p.chars().all(|c| c.is_ascii_alphabetic()) => {
                    // `prefix: Bearer ` unquoted loses its space in YAML, and
                    // `Bearerabc123` fails only at the server, as a 401. No
                    // scheme is a bare word glued to its credential.
                    self.push(
                        Issue::new(
                            code::INVALID_VALUE,
                            e.at,
                            format!("`{path}.prefix` \"{}\" runs into the secret", short(p)),
                        )
                        .label("no space between the prefix and the secret")
                        .help(format!(
                            "quote the prefix to keep its trailing space: `prefix: \"{} \"`",
                            short(p)
                        )),
                    );
                    None
                }
                Leaf::Str(p) => self
                    .field_text(p, e.at, &format!("{path}.prefix"))
                    .then(|| p.clone()),
                other => {
                    self.push(
                        Issue::new(
                            code::WRONG_TYPE,
                            e.at,
                            format!("`{path}.prefix` must be a string, found {}", other.kind()),
                        )
                        .label("expected text to send before the secret")
                        .help("write the prefix in quotes, e.g. `prefix: \"Bearer \"`"),
                    );
                    None
                }
            },
        };
        Some(HeaderValue::Secret {
            secret_ref: secret_ref?,
            prefix: prefix?,
        })
    }

    /// Whether `text` can go in an HTTP header; reports why not.
    fn field_text(&mut self, text: &str, at: Pos, path: &str) -> bool {
        let Some(c) = HttpHeader::invalid_value_char(text) else {
            return true;
        };
        let (message, label) = match c {
            '\r' | '\n' => (
                format!("`{path}` contains a line break"),
                "CR or LF would end the header and start another",
            ),
            _ => (
                format!(
                    "`{path}` contains the control character `{}`",
                    c.escape_default()
                ),
                "not allowed in an HTTP header",
            ),
        };
        self.push(
            Issue::new(code::INVALID_VALUE, at, message)
                .label(label)
                .help("a header value is one line of text: remove the control characters"),
        );
        false
    }

    fn command(&mut self, slot: &Slot<LeafList, Vec<String>>) -> Vec<String> {
        let Some(e) = slot.get() else {
            return Vec::new();
        };
        match &e.value {
            LeafList::List(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let path = format!("spec.command[{i}]");
                    self.string_leaf(
                        &item.value,
                        item.pos,
                        &path,
                        "command: [\"--port\", \"8080\"]",
                    )
                    .map(|(s, _)| s.to_owned())
                })
                .collect(),
            LeafList::Not(leaf) => {
                let help = match leaf {
                    Leaf::Str(s) => {
                        let words: Vec<String> = s
                            .split_whitespace()
                            .map(|w| format!("\"{}\"", short(w)))
                            .collect();
                        format!(
                            "write one list item per argument: `command: [{}]`",
                            words.join(", ")
                        )
                    }
                    _ => "write the arguments as a list, e.g. `command: [\"server\", \"--http\"]`"
                        .into(),
                };
                self.push(
                    Issue::new(
                        code::WRONG_TYPE,
                        e.at,
                        format!("`spec.command` must be a list, found {}", leaf.kind()),
                    )
                    .label("expected a list of arguments")
                    .help(help),
                );
                Vec::new()
            }
        }
    }

    fn transport<S>(&mut self, slot: &Slot<Leaf, S>) -> Option<Transport> {
        let (t, at) = self.text_of(slot, "spec.transport", "transport: streamable-http")?;
        match t {
            "stdio" => Some(Transport::Stdio),
            "sse" => Some(Transport::Sse),
            "streamable-http" => Some(Transport::StreamableHttp),
            other => {
                let guess = did_you_mean(other, TRANSPORTS)
                    .or_else(|| {
                        other
                            .to_ascii_lowercase()
                            .contains("http")
                            .then_some("streamable-http")
                    })
                    .map(|g| format!("did you mean `{g}`? "))
                    .unwrap_or_default();
                self.push(
                    Issue::new(code::INVALID_VALUE, at, format!("unknown transport \"{}\"", short(other)))
                        .label(format!("expected {}", list(TRANSPORTS).replace(" and ", " or ")))
                        .help(format!(
                            "{guess}`stdio` talks over stdin/stdout (the default), `streamable-http` and `sse` over \
                             HTTP on `port`"
                        )),
                );
                None
            }
        }
    }

    fn path(&mut self, slot: &Slot<Leaf, String>) -> Option<String> {
        let (path, at) = self.text_of(slot, "spec.path", "path: /mcp")?;
        if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
            self.push(
                Issue::new(code::INVALID_VALUE, at, format!("invalid path \"{}\"", short(path)))
                    .label("expected an absolute URL path")
                    .help("write the HTTP path the server answers on, starting with `/`, e.g. `path: /mcp`"),
            );
            return None;
        }
        Some(path.to_owned())
    }

    fn not_for_external(&mut self, key: Option<Pos>, field: &str) {
        if let Some(at) = key {
            self.push(
                Issue::new(code::NOT_APPLICABLE, at, format!("`spec.{field}` does not apply to an external server"))
                    .label("not used for external servers")
                    .help(format!(
                        "mcpctl does not run external servers, it only probes `external.url`; remove `{field}`, \
                         or use `image` or `package` to run the server yourself"
                    )),
            );
        }
    }

    fn env(&mut self, slot: &Sub<Entries<EnvRaw>>) -> BTreeMap<String, EnvValue> {
        let mut env = BTreeMap::new();
        let Some((entries, _)) = self.mapping(slot, "spec.env") else {
            return env;
        };
        for (key, value) in &entries.0 {
            let name = &key.value;
            let path = format!("spec.env.{}", short(name));
            if !is_env_name(name) {
                self.push(
                    Issue::new(
                        code::INVALID_VALUE,
                        key.pos,
                        format!("invalid environment variable name \"{}\"", short(name)),
                    )
                    .label("not a variable name")
                    .help(
                        "use letters, digits and `_`, not starting with a digit, e.g. `LOG_LEVEL`",
                    ),
                );
            }
            let parsed = match &value.value {
                EnvRaw::Value(Leaf::Str(s)) => Some(EnvValue::Plain(s.clone())),
                EnvRaw::Value(Leaf::Null) => {
                    self.push(
                        Issue::new(
                            code::WRONG_TYPE,
                            value.pos,
                            format!("`{path}` has no value"),
                        )
                        .label("empty")
                        .help(format!(
                            "write `{}: \"\"` for an empty value, or remove it",
                            short(name)
                        )),
                    );
                    None
                }
                EnvRaw::Value(leaf @ (Leaf::Int(_) | Leaf::Float(_) | Leaf::Bool(_))) => {
                    self.unquoted_scalar(
                        &path,
                        name,
                        leaf,
                        value.pos,
                        "every tool reads the same text",
                    );
                    None
                }
                EnvRaw::Value(leaf) => {
                    self.push(
                        Issue::new(code::WRONG_TYPE, value.pos, format!("`{path}` must be a string, found {}", leaf.kind()))
                            .label("expected a string or a secretRef")
                            .help(format!(
                                "write `{0}: value`, or `{0}: {{secretRef: {{name: NAME, key: KEY}}}}` for a secret",
                                short(name)
                            )),
                    );
                    None
                }
                EnvRaw::Secret(holder) => self
                    .secret(holder, value.pos, &path, name)
                    .map(EnvValue::Secret),
            };
            if let Some(v) = parsed {
                env.insert(name.clone(), v);
            }
        }
        env
    }

    fn secret(
        &mut self,
        holder: &RawSecretHolder,
        at: Pos,
        path: &str,
        var: &str,
    ) -> Option<SecretRef> {
        let example = format!(
            "{}: {{secretRef: {{name: github, key: token}}}}",
            short(var)
        );
        let suggested = self.unknown_fields(
            &holder.unknown,
            RawSecretHolder::FIELDS,
            RawSecretHolder::CONTEXT,
        );
        self.secret_ref(
            &holder.secret_ref,
            suggested.contains(&"secretRef"),
            at,
            path,
            &example,
        )
    }

    /// The `secretRef` of the value at `path` (an env var or a header);
    /// `misspelt` when an unknown key was already offered as `secretRef`.
    fn secret_ref(
        &mut self,
        slot: &Sub<RawSecretRef>,
        misspelt: bool,
        at: Pos,
        path: &str,
        example: &str,
    ) -> Option<SecretRef> {
        let Some((r, entry)) = self.mapping(slot, &format!("{path}.secretRef")) else {
            if slot.get().is_none() && !misspelt {
                self.push(
                    Issue::new(
                        code::MISSING_FIELD,
                        at,
                        format!("`{path}` is a mapping without `secretRef`"),
                    )
                    .label("expected a string or a secretRef")
                    .help(format!(
                        "write a plain string, or refer to a secret: `{example}`"
                    )),
                );
            }
            return None;
        };
        let suggested =
            self.unknown_fields(&r.unknown, RawSecretRef::FIELDS, RawSecretRef::CONTEXT);
        let part = |this: &mut Self, slot: &Slot<Leaf, String>, field: &str| {
            let found = this.text_of(slot, &format!("{path}.secretRef.{field}"), example);
            match found {
                Some((v, at)) if !is_secret_part(v) => {
                    this.push(
                        Issue::new(code::INVALID_VALUE, at, format!("invalid secret {field} \"{}\"", short(v)))
                            .label("not a valid secret reference")
                            .help(
                                "secret names and keys use letters, digits, `-`, `_` and `.`, and do not start \
                                 with `.` or `-`: they name a file under the secrets directory",
                            ),
                    );
                    None
                }
                Some((v, _)) => Some(v.to_owned()),
                None => {
                    if slot.get().is_none() && !suggested.contains(&field) {
                        this.push(
                            Issue::new(code::MISSING_FIELD, entry.key, format!("`{path}.secretRef` needs a `{field}`"))
                                .label(format!("no `{field}`"))
                                .help(format!("a secret reference names the secret and the key within it: `{example}`")),
                        );
                    }
                    None
                }
            }
        };
        let name = part(self, &r.name, "name");
        let key = part(self, &r.key, "key");
        Some(SecretRef {
            name: name?,
            key: key?,
        })
    }

    fn resources(&mut self, slot: &Sub<RawResources>) -> Resources {
        let mut out = Resources::default();
        let Some((r, _)) = self.mapping(slot, "spec.resources") else {
            return out;
        };
        self.unknown_fields(&r.unknown, RawResources::FIELDS, RawResources::CONTEXT);
        if let Some(e) = r.memory.get() {
            let parsed = match &e.value {
                Leaf::Str(s) => units::memory_bytes(s).map(|b| (b, s.clone())),
                Leaf::Int(i) => u64::try_from(*i)
                    .ok()
                    .filter(|b| *b > 0)
                    .map(|b| (b, b.to_string()))
                    .ok_or_else(|| "a memory limit must be more than 0".to_owned()),
                other => Err(format!(
                    "expected a quantity such as `512Mi`, found {}",
                    other.kind()
                )),
            };
            match parsed {
                Ok((bytes, _)) if bytes < units::MIN_MEMORY => self.push(
                    Issue::new(
                        code::INVALID_VALUE,
                        e.at,
                        format!("memory limit {} is below Docker's minimum of 6Mi", show_leaf(&e.value)),
                    )
                    .label(format!("{bytes} bytes"))
                    .help("Docker refuses memory limits under 6 MiB: write at least `6Mi`, or remove `memory` for no limit"),
                ),
                Ok((bytes, _)) if bytes > units::MAX_MEMORY => self.push(
                    Issue::new(code::INVALID_VALUE, e.at, format!("memory limit {} is too large", show_leaf(&e.value)))
                        .label("more than 8 EiB, the most Docker can take")
                        .help("write a limit the host can give, e.g. `512Mi` or `4Gi`, or remove `memory` for no limit"),
                ),
                Ok((bytes, written)) => {
                    out.memory_bytes = Some(bytes);
                    out.memory = Some(written);
                }
                Err(why) => self.push(
                    Issue::new(code::INVALID_VALUE, e.at, format!("invalid memory limit {}", show_leaf(&e.value)))
                        .label(why)
                        .help("write bytes or a quantity with a unit: `512Mi`, `1Gi` (binary) or `500M` (decimal)"),
                ),
            }
        }
        if let Some(e) = r.cpus.get() {
            let parsed = match &e.value {
                Leaf::Int(i) => units::millicpus_from_number(*i as f64),
                Leaf::Float(f) => units::millicpus_from_number(*f),
                Leaf::Str(s) => units::millicpus_from_text(s),
                other => Err(format!("expected a number of CPUs, found {}", other.kind())),
            };
            match parsed {
                Ok(m) if m < units::MIN_MILLICPUS => self.push(
                    Issue::new(
                        code::INVALID_VALUE,
                        e.at,
                        format!("CPU limit {} is below Docker's minimum of 0.01", show_leaf(&e.value)),
                    )
                    .label(format!("{m} millicpus"))
                    .help(
                        "Docker cannot limit a container to less than 0.01 CPU (`10m`): the container would \
                         fail to start; write at least `cpus: 0.01`, or remove `cpus` for no limit",
                    ),
                ),
                Ok(m) if m > units::MAX_MILLICPUS => self.push(
                    Issue::new(
                        code::INVALID_VALUE,
                        e.at,
                        format!("CPU limit {} is more than 1024 CPUs", show_leaf(&e.value)),
                    )
                    .label("more CPUs than any one host has")
                    .help("write the CPUs the server may use, e.g. `cpus: 2`, or remove `cpus` for no limit"),
                ),
                Ok(m) => out.millicpus = Some(m),
                Err(why) => self.push(
                    Issue::new(code::INVALID_VALUE, e.at, format!("invalid CPU limit {}", show_leaf(&e.value)))
                        .label(why)
                        .help("write a number of CPUs, e.g. `cpus: 0.5`, or millicpus, e.g. `cpus: \"500m\"`"),
                ),
            }
        }
        out
    }

    fn readiness(&mut self, slot: &Sub<RawReadiness>) -> Readiness {
        let mut out = Readiness::default();
        let Some((r, _)) = self.mapping(slot, "spec.readiness") else {
            return out;
        };
        self.unknown_fields(&r.unknown, RawReadiness::FIELDS, RawReadiness::CONTEXT);
        if let Some((n, _)) = self.whole(
            &r.max_restarts,
            "spec.readiness.maxRestarts",
            1..=1000,
            "maxRestarts: 3",
        ) {
            out.max_restarts = n as u32;
        }
        for (slot, field, target) in [
            (&r.timeout, "timeout", &mut out.timeout),
            (&r.period, "period", &mut out.period),
            (&r.min_ready, "minReady", &mut out.min_ready),
        ] {
            let Some(e) = slot.get() else { continue };
            let parsed = match &e.value {
                // Only the stability window may be zero: "promote at once".
                Leaf::Str(s)
                    if field == "minReady"
                        && humantime::parse_duration(s).is_ok_and(|d| d.is_zero()) =>
                {
                    Ok(Duration::ZERO)
                }
                Leaf::Str(s) => units::duration(s),
                Leaf::Int(i) => Err(format!("a number needs a unit, e.g. `{i}s`")),
                other => Err(format!(
                    "expected a duration such as `60s`, found {}",
                    other.kind()
                )),
            };
            match parsed {
                Ok(d) => *target = d,
                Err(why) => self.push(
                    Issue::new(
                        code::INVALID_VALUE,
                        e.at,
                        format!(
                            "invalid duration {} for `spec.readiness.{field}`",
                            show_leaf(&e.value)
                        ),
                    )
                    .label(why)
                    .help("write a number and a unit: `90s`, `5m`, `1h 30m`"),
                ),
            }
        }
        out
    }

    // ---- shared checks -------------------------------------------------

    /// Reports unknown keys, and returns the known fields they look like, so
    /// that a misspelt field is not also reported as missing.
    fn unknown_fields<'k>(
        &mut self,
        unknown: impl IntoIterator<Item = &'k At<String>>,
        fields: &'static [&'static str],
        context: &str,
    ) -> Vec<&'static str> {
        let mut suggested = Vec::new();
        let place = if context.starts_with("the ") {
            context.to_owned()
        } else {
            format!("`{context}`")
        };
        for key in unknown {
            let guess = did_you_mean(&key.value, fields);
            let help = match guess {
                Some(g) => format!("did you mean `{g}`?"),
                None => format!("{place} accepts {}", list(fields)),
            };
            suggested.extend(guess);
            self.push(
                Issue::new(
                    code::UNKNOWN_FIELD,
                    key.pos,
                    format!("unknown field `{}` in {place}", short(&key.value)),
                )
                .label("unknown field")
                .help(help),
            );
        }
        suggested
    }

    /// A mapping field, or an issue saying what was there instead.
    fn mapping<'r, T>(
        &mut self,
        slot: &'r Sub<T>,
        path: &str,
    ) -> Option<(&'r T, &'r Entry<MapOf<T>>)> {
        let e = slot.get()?;
        match &e.value {
            MapOf::Map(m) => Some((m, e)),
            MapOf::Not(Leaf::Null) => {
                self.push(
                    Issue::new(code::WRONG_TYPE, e.key, format!("`{path}` is empty"))
                        .label("no value")
                        .help(format!(
                            "write the fields of `{path}` indented under it, or remove the key"
                        )),
                );
                None
            }
            MapOf::Not(leaf) => {
                self.push(
                    Issue::new(code::WRONG_TYPE, e.at, format!("`{path}` must be a mapping, found {}", leaf.kind()))
                        .label("expected `key: value` pairs")
                        .help(format!(
                            "write the fields of `{path}` as `key: value` pairs indented under it, or in braces: \
                             `{{key: value}}`"
                        )),
                );
                None
            }
        }
    }

    /// A non-empty string field.
    fn text_of<'r, S>(
        &mut self,
        slot: &'r Slot<Leaf, S>,
        path: &str,
        example: &str,
    ) -> Option<(&'r str, Pos)> {
        let e = slot.get()?;
        self.string_leaf(&e.value, e.at, path, example)
    }

    fn string_leaf<'r>(
        &mut self,
        leaf: &'r Leaf,
        at: Pos,
        path: &str,
        example: &str,
    ) -> Option<(&'r str, Pos)> {
        let issue = match leaf {
            Leaf::Str(s) if !s.is_empty() => return Some((s, at)),
            Leaf::Str(_) | Leaf::Null => {
                Issue::new(code::WRONG_TYPE, at, format!("`{path}` is empty"))
                    .label("no value")
                    .help(format!("give it a value, e.g. `{example}`"))
            }
            Leaf::Int(_) | Leaf::Float(_) | Leaf::Bool(_) => {
                let written = self
                    .written(at)
                    .map_or_else(|| show_leaf(leaf), str::to_owned);
                Issue::new(
                    code::WRONG_TYPE,
                    at,
                    format!("`{path}` must be a string, found {}", leaf.kind()),
                )
                .label(format!("YAML reads this as {}", leaf.kind()))
                .help(format!("quote it to make it a string: \"{written}\""))
            }
            Leaf::List | Leaf::Map => Issue::new(
                code::WRONG_TYPE,
                at,
                format!("`{path}` must be a string, found {}", leaf.kind()),
            )
            .label("expected a single value")
            .help(format!("write one value, e.g. `{example}`")),
        };
        self.push(issue);
        None
    }

    /// A whole number within `range`.
    fn whole<S>(
        &mut self,
        slot: &Slot<Leaf, S>,
        path: &str,
        range: RangeInclusive<i128>,
        example: &str,
    ) -> Option<(i128, Pos)> {
        let e = slot.get()?;
        let (lo, hi) = (*range.start(), *range.end());
        let expected = if hi >= i128::from(u32::MAX) {
            format!("a whole number, {lo} or more")
        } else {
            format!("a whole number from {lo} to {hi}")
        };
        let issue = match &e.value {
            Leaf::Int(n) if range.contains(n) => return Some((*n, e.at)),
            Leaf::Int(n) if *n < 0 && lo == 0 => Issue::new(
                code::INVALID_VALUE,
                e.at,
                format!("`{path}` cannot be negative"),
            )
            .label(format!("expected {expected}"))
            .help(format!("use a count of 0 or more, e.g. `{example}`")),
            Leaf::Int(n) => Issue::new(
                code::INVALID_VALUE,
                e.at,
                format!("`{path}` is out of range: {n}"),
            )
            .label(format!("expected {expected}"))
            .help(format!("use {expected}, e.g. `{example}`")),
            Leaf::Str(s) if s.trim().parse::<i128>().is_ok() => Issue::new(
                code::WRONG_TYPE,
                e.at,
                format!("`{path}` must be a number, not a quoted string"),
            )
            .label("a string, because it is quoted")
            .help(format!(
                "remove the quotes: `{}: {}`",
                path.rsplit('.').next().unwrap_or(path),
                s.trim()
            )),
            other => Issue::new(
                code::WRONG_TYPE,
                e.at,
                format!("`{path}` must be {expected}, found {}", describe(other)),
            )
            .label("not a whole number")
            .help(format!("write digits without quotes, e.g. `{example}`")),
        };
        self.push(issue);
        None
    }
}

/// A leaf in a sentence, with its value when short: `the string "two"`.
fn describe(leaf: &Leaf) -> String {
    match leaf {
        Leaf::Str(_) | Leaf::Float(_) | Leaf::Bool(_) => {
            format!("{} ({})", leaf.kind(), show_leaf(leaf))
        }
        _ => leaf.kind().to_owned(),
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters. Returns why not.
fn dns_label(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if len > 63 {
        return Err(format!("{len} characters long; the limit is 63"));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("uppercase letters are not allowed".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!("`{}` is not allowed", c.escape_default()));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// The nearest valid name, to offer in help: lowercased, other characters
/// turned into `-`, trimmed and cut to 63.
fn suggest_dns_label(name: &str) -> Option<String> {
    let mapped: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    // Cutting a long name short would only invent a name; let the user choose.
    let fixed = mapped.trim_matches('-').to_owned();
    (!fixed.is_empty() && dns_label(&fixed).is_ok()).then_some(fixed)
}

/// Whether `name` is a portable environment variable name: a letter or
/// `_`, then letters, digits and `_`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What in `url` looks like a credential, in words that do not repeat it.
fn secret_in_url(url: &url::Url) -> Option<String> {
    if url.password().is_some() {
        return Some("a password before `@`".into());
    }
    // A user name alone is how many services take a token (`https://TOKEN@host`);
    // the probe never sends it, so it can only leak.
    if !url.username().is_empty() {
        return Some("a user name before `@`, where services put tokens".into());
    }
    url.query_pairs().find_map(|(name, _)| {
        crate::model::urls::is_secret_param(&name)
            .then(|| format!("the query parameter `{}`", short(&name)))
    })
}

/// Secret names and keys become path components (`DIR/NAME/KEY`), so they
/// must not be able to climb out of the secrets directory.
fn is_secret_part(part: &str) -> bool {
    let mut chars = part.chars();
    part.len() <= 253
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(dns_label("github").is_ok());
        assert!(dns_label("a").is_ok());
        assert!(dns_label("a-1").is_ok());
        assert!(dns_label(&"a".repeat(63)).is_ok());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns_label("GitHub").is_err());
        assert!(dns_label("my_server").is_err());
        assert!(dns_label("-a").is_err());
        assert!(dns_label("a-").is_err());
        assert_eq!(suggest_dns_label("My_Server").as_deref(), Some("my-server"));
        assert_eq!(suggest_dns_label("___"), None);
    }

    #[test]
    fn secret_parts_cannot_escape_the_directory() {
        assert!(is_secret_part("github"));
        assert!(is_secret_part("tls.crt"));
        assert!(!is_secret_part(".."));
        assert!(!is_secret_part("a/b"));
        assert!(!is_secret_part(".hidden"));
        assert!(!is_secret_part(""));
    }
}
