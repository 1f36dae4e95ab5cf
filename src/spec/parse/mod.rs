//! Parsing and validation: YAML text in, [`Server`]s or located diagnostics out.
//!
//! Each file is read with serde-saphyr's document iterator, which enforces its
//! budget (events, nodes, depth, alias expansion) per document and recovers at
//! the next `---` after a bad document, so one pass finds the problems of
//! every document and a fleet of 20,000 documents in one file is fine. Its
//! positions are relative to the file, not to the document.
//!
//! - `raw`: the lenient serde types, which are also the JSON Schema.
//! - `validate`: the format's rules, raw document to [`Server`].
//! - `units`: memory quantities, CPU counts, durations.
//! - `diag`: [`SpecError`], [`SpecErrors`] and positions to byte spans.

mod diag;
mod raw;
mod units;
mod validate;

pub use validate::is_env_name;

pub use diag::{SpecError, SpecErrors, clip};

use super::model::Server;
use crate::source::SourceFile;
use diag::{FileText, Issue, code};
use raw::{At, MapOf, Pos, RawServer};
use std::collections::HashMap;

/// Bounds on values that parse but would harm the rest of mcpctl if
/// believed: the caller chooses them (the CLI from its flags), so that `spec`
/// reads no flags or environment itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_replicas: u32,
}

impl Limits {
    /// More instances of one server than anyone runs on purpose on one
    /// engine; a stray digit (`replicas: 30000`) stops here.
    pub const DEFAULT_MAX_REPLICAS: u32 = 100;
    /// The most any setting allows: the planner and apply hold every
    /// instance in memory, so the bound must be one they can afford.
    pub const HARD_MAX_REPLICAS: u32 = 10_000;

    /// `max_replicas` above [`Limits::HARD_MAX_REPLICAS`] is lowered to it.
    pub fn new(max_replicas: u32) -> Limits {
        Limits {
            max_replicas: max_replicas.min(Self::HARD_MAX_REPLICAS),
        }
    }

    pub fn max_replicas(&self) -> u32 {
        self.max_replicas
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new(Limits::DEFAULT_MAX_REPLICAS)
    }
}

/// [`load_with`] under the default [`Limits`].
pub fn load(files: &[SourceFile]) -> Result<Vec<Server>, SpecErrors> {
    load_with(files, Limits::default())
}

/// Parses and validates every document of every file, and checks that server
/// names are unique across files. Servers come back sorted by name; errors in
/// the order of `files`, then by line.
pub fn load_with(files: &[SourceFile], limits: Limits) -> Result<Vec<Server>, SpecErrors> {
    let mut servers = Vec::new();
    // Issues per file, so duplicate names can be added to the right file.
    let mut issues: Vec<Vec<Issue>> = Vec::with_capacity(files.len());
    let mut names: Vec<(String, usize, Pos)> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let text = content(file);
        let mut checker = validate::Checker::new(&file.path, file.at.as_deref(), text, limits);
        let mut input = text.as_bytes();
        for doc in serde_saphyr::read_with_options::<_, At<MapOf<RawServer>>>(&mut input, options())
        {
            match doc {
                Ok(doc) => {
                    let outcome = checker.document(doc);
                    if let Some((name, pos)) = outcome.name {
                        names.push((name, i, pos));
                    }
                    servers.extend(outcome.server);
                }
                Err(e) => checker.yaml_error(&e),
            }
        }
        issues.push(checker.issues);
    }

    // The first definition in (file, line) order keeps the name; every later
    // one is an error that points back at it.
    let mut first: HashMap<&str, (usize, Pos)> = HashMap::with_capacity(names.len());
    let mut duplicates = Vec::new();
    for (name, file, pos) in &names {
        match first.get(name.as_str()) {
            None => {
                first.insert(name, (*file, *pos));
            }
            Some(&(first_file, first_pos)) => {
                duplicates.push((name.as_str(), *file, *pos, first_file, first_pos))
            }
        }
    }

    if duplicates.is_empty() && issues.iter().all(Vec::is_empty) {
        servers.sort_by(|a, b| a.name.cmp(&b.name));
        return Ok(servers);
    }

    // Only files that have something to show get their text indexed and
    // shared, and only as far as their last diagnostic.
    let mut last_line: Vec<u32> = issues
        .iter()
        .map(|i| i.iter().map(Issue::last_line).max().unwrap_or(0))
        .collect();
    for &(_, file, pos, first_file, first_pos) in &duplicates {
        last_line[file] = last_line[file].max(pos.line);
        last_line[first_file] = last_line[first_file].max(first_pos.line);
    }
    let mut texts: Vec<Option<FileText>> = files.iter().map(|_| None).collect();
    let mut errors: Vec<Vec<(Pos, SpecError)>> = files.iter().map(|_| Vec::new()).collect();
    for (name, file, pos, first_file, first_pos) in duplicates {
        let first_at = diag::place(
            &files[first_file].path,
            first_pos.line as usize,
            first_pos.col as usize,
            files[first_file].at.as_deref(),
        );
        let mut issue = Issue::new(code::DUPLICATE_NAME, pos, format!("server name `{name}` is already used at {first_at}"))
            .label("second definition")
            .help("server names must be unique within a source: rename one of the two, or delete the copy");
        let error = if first_file == file {
            issue = issue.also(first_pos, "first defined here");
            text_of(&mut texts, files, &last_line, file).error(issue)
        } else {
            let note = text_of(&mut texts, files, &last_line, first_file).note(
                first_pos,
                format!("`{name}` is first defined here"),
                "first definition",
            );
            text_of(&mut texts, files, &last_line, file)
                .error(issue)
                .with_related(note)
        };
        errors[file].push((pos, error));
    }
    for (i, file_issues) in issues.into_iter().enumerate() {
        for issue in file_issues {
            let pos = issue.pos;
            let error = text_of(&mut texts, files, &last_line, i).error(issue);
            errors[i].push((pos, error));
        }
    }
    let errors = errors
        .into_iter()
        .flat_map(|mut file_errors| {
            // Stable, so problems found at one place keep the order they were found in.
            file_errors.sort_by_key(|(pos, _)| (pos.line, pos.col));
            file_errors.into_iter().map(|(_, e)| e)
        })
        .collect();
    Err(SpecErrors { errors })
}

/// The file's text for diagnostics, made on first use: valid files never pay for it.
fn text_of<'t>(
    texts: &'t mut [Option<FileText>],
    files: &[SourceFile],
    last_line: &[u32],
    i: usize,
) -> &'t FileText {
    texts[i].get_or_insert_with(|| {
        let file = &files[i];
        FileText::new(&file.path, file.at.as_deref(), content(file), last_line[i])
    })
}

/// The text that positions are counted in: a byte-order mark is encoding,
/// not content, and must not shift the columns of the first line.
fn content(file: &SourceFile) -> &str {
    file.text.strip_prefix('\u{feff}').unwrap_or(&file.text)
}

/// serde-saphyr's defaults, with two changes. Duplicate keys are errors
/// (the default, stated because the format depends on it), and booleans are
/// YAML 1.2's `true`/`false` only, so `DEBUG: yes` or `y` is a string as in
/// editors and Kubernetes rather than silently a boolean. The budget stays at
/// its defaults: the document iterator applies it per document, which caps
/// hostile documents (alias bombs, deep nesting) without capping how many
/// documents a fleet file may hold.
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        strict_booleans: true,
        with_snippet: false,
    }
}

/// The JSON Schema of one `McpServer` document, generated from the serde types.
pub fn json_schema() -> serde_json::Value {
    // Draft 7 is the newest draft that editors' YAML plugins fully support.
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    generator.into_root_schema_for::<RawServer>().to_value()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::{
        EnvValue, HeaderValue, PackageRuntime, Readiness, SecretRef, Transport, Workload,
    };
    use std::path::PathBuf;
    use std::time::Duration;

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile {
            path: PathBuf::from(path),
            text: text.to_owned(),
            at: None,
        }
    }

    fn one(spec: &str) -> Server {
        let text = format!(
            "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: s}}\nspec:\n{spec}"
        );
        match load(&[file("t.yaml", &text)]) {
            Ok(mut servers) if servers.len() == 1 => servers.remove(0),
            other => panic!("expected one server from\n{text}\ngot {other:?}"),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match load(&[file("t.yaml", text)]) {
            Ok(s) => panic!("expected errors, got {s:?}"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn defaults() {
        let s = one("  image: srv:1\n");
        assert_eq!(s.spec.replicas, 1);
        assert_eq!(s.spec.transport, Transport::Stdio);
        assert_eq!(s.spec.path, None);
        assert_eq!(s.spec.port, None);
        assert_eq!(
            s.spec.readiness,
            Readiness {
                timeout: Duration::from_secs(60),
                period: Duration::from_secs(15),
                min_ready: Duration::from_secs(2),
                max_restarts: 3,
            }
        );
        let s = one("  image: srv:1
  readiness: {minReady: 0s, maxRestarts: 5}
");
        assert_eq!(s.spec.readiness.min_ready, Duration::ZERO);
        assert_eq!(s.spec.readiness.max_restarts, 5);
        assert!(s.spec.env.is_empty() && s.spec.command.is_empty());

        let s = one("  image: srv:1\n  transport: streamable-http\n  port: 8080\n");
        assert_eq!(s.spec.path.as_deref(), Some("/mcp"));
        let s = one("  image: srv:1\n  transport: sse\n  port: 8080\n");
        assert_eq!(s.spec.path.as_deref(), Some("/sse"));
        let s = one("  image: srv:1\n  transport: sse\n  port: 8080\n  path: /events\n");
        assert_eq!(s.spec.path.as_deref(), Some("/events"));

        let s = one("  external: {url: https://mcp.example.com/mcp}\n");
        assert_eq!(s.spec.transport, Transport::StreamableHttp);
        assert_eq!((s.spec.port, s.spec.path), (None, None));
        assert_eq!(
            s.spec.workload,
            Workload::External(crate::spec::External {
                url: "https://mcp.example.com/mcp".into(),
                headers: Default::default(),
            })
        );
    }

    #[test]
    fn external_headers() {
        let s = one(concat!(
            "  external:\n",
            "    url: https://mcp.linear.app/mcp\n",
            "    headers:\n",
            "      Authorization: {secretRef: {name: linear, key: token}, prefix: \"Bearer \"}\n",
            "      X-Api-Key: {secretRef: {name: linear, key: key}}\n",
            "      X-Team: platform\n",
            "      X-Empty: \"\"\n",
        ));
        let Workload::External(e) = &s.spec.workload else {
            panic!("{:?}", s.spec.workload)
        };
        let secret = |key: &str, prefix: &str| HeaderValue::Secret {
            secret_ref: SecretRef {
                name: "linear".into(),
                key: key.into(),
            },
            prefix: prefix.into(),
        };
        assert_eq!(
            e.headers,
            std::collections::BTreeMap::from([
                ("Authorization".to_owned(), secret("token", "Bearer ")),
                ("X-Api-Key".to_owned(), secret("key", "")),
                ("X-Team".to_owned(), HeaderValue::Plain("platform".into())),
                ("X-Empty".to_owned(), HeaderValue::Plain(String::new())),
            ])
        );
    }

    #[test]
    fn credentials_in_an_external_url_are_refused() {
        let doc = |url: &str| spec_doc(&format!("  external: {{url: \"{url}\"}}\n"));
        for (url, what) in [
            ("https://me:hunter2@mcp.example.com/mcp", "a password"),
            ("https://ghp_abc123@mcp.example.com/mcp", "a user name"),
            ("https://mcp.example.com/mcp?token=abc", "`token`"),
            ("https://mcp.example.com/mcp?x=1&key=abc", "`key`"),
            ("https://mcp.example.com/mcp?apikey=abc", "`apikey`"),
            ("https://mcp.example.com/mcp?apiKey=abc", "`apiKey`"),
            ("https://mcp.example.com/mcp?api_key=abc", "`api_key`"),
            ("https://mcp.example.com/mcp?API-KEY=abc", "`API-KEY`"),
            (
                "https://mcp.example.com/mcp?Access_Token=abc",
                "`Access_Token`",
            ),
            ("https://mcp.example.com/mcp?password=abc", "`password`"),
            ("https://mcp.example.com/mcp?secret=abc", "`secret`"),
            // Named even when empty: the spelling is the mistake.
            ("https://mcp.example.com/mcp?token=", "`token`"),
        ] {
            let errors = errors(&doc(url));
            assert_eq!(errors.len(), 1, "{url}: {errors:?}");
            let e = &errors[0];
            assert!(
                e.starts_with("t.yaml:5:19: `spec.external.url` holds a secret"),
                "{e}"
            );
            assert!(e.contains(what), "{url}: {e}");
            assert!(!e.contains("abc") && !e.contains("hunter2"), "{e}");
        }
        for fine in [
            "https://mcp.example.com/mcp?session=abc",
            "https://mcp.example.com/mcp?keyword=abc&tokens=2",
            "https://mcp.example.com/token/key?monkey=1",
        ] {
            one(&format!("  external: {{url: \"{fine}\"}}\n"));
        }
    }

    #[test]
    fn full_spec() {
        let s = one(concat!(
            "  replicas: 0\n",
            "  package: {name: mcp-server-fetch, runtime: python, version: \"2025.4.7\"}\n",
            "  command: [\"--verbose\"]\n",
            "  env:\n    LOG: info\n    DEBUG: \"true\"\n    TOKEN: {secretRef: {name: gh, key: token}}\n",
            "  resources: {memory: 512Mi, cpus: 0.5}\n",
            "  readiness: {timeout: 5m, period: 30s}\n",
        ));
        assert_eq!(s.spec.replicas, 0);
        let Workload::Package(p) = &s.spec.workload else {
            panic!("{:?}", s.spec.workload)
        };
        assert_eq!(
            (p.name.as_str(), p.runtime, p.version.as_deref()),
            ("mcp-server-fetch", PackageRuntime::Python, Some("2025.4.7"))
        );
        assert_eq!(s.spec.command, ["--verbose"]);
        assert_eq!(s.spec.env["LOG"], EnvValue::Plain("info".into()));
        assert_eq!(s.spec.env["DEBUG"], EnvValue::Plain("true".into()));
        assert_eq!(
            s.spec.env["TOKEN"],
            EnvValue::Secret(SecretRef {
                name: "gh".into(),
                key: "token".into()
            })
        );
        assert_eq!(s.spec.resources.memory_bytes, Some(512 << 20));
        assert_eq!(s.spec.resources.memory.as_deref(), Some("512Mi"));
        assert_eq!(s.spec.resources.millicpus, Some(500));
        assert_eq!(s.spec.readiness.timeout, Duration::from_secs(300));
        assert_eq!(s.spec.readiness.period, Duration::from_secs(30));
    }

    #[test]
    fn quantities_as_numbers() {
        let s = one("  image: x\n  resources: {memory: 10000000, cpus: 2}\n");
        assert_eq!(s.spec.resources.memory_bytes, Some(10_000_000));
        assert_eq!(s.spec.resources.millicpus, Some(2000));
        let s = one("  image: x\n  resources: {memory: 1Gi, cpus: \"250m\"}\n");
        assert_eq!(s.spec.resources.memory_bytes, Some(1 << 30));
        assert_eq!(s.spec.resources.millicpus, Some(250));
    }

    fn spec_doc(spec: &str) -> String {
        format!("apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {{name: s}}\nspec:\n{spec}")
    }

    /// The one error of `spec` under `limits`, as `(line form, help)`.
    fn error_with(spec: &str, limits: Limits) -> (String, String) {
        match load_with(&[file("t.yaml", &spec_doc(spec))], limits) {
            Err(e) if e.len() == 1 => {
                let e = &e.errors[0];
                (e.to_string(), e.help_text().unwrap_or_default().to_owned())
            }
            other => panic!("expected one error for\n{spec}\ngot {other:?}"),
        }
    }

    #[test]
    fn replicas_are_capped_by_the_given_limit() {
        assert_eq!(one("  image: x\n  replicas: 100\n").spec.replicas, 100);
        let (line, help) = error_with("  image: x\n  replicas: 101\n", Limits::default());
        assert_eq!(
            line,
            "t.yaml:6:13: `spec.replicas` is 101, more than the limit of 100"
        );
        assert!(help.contains("`--max-replicas 101`"), "{help}");

        let servers = load_with(
            &[file("t.yaml", &spec_doc("  image: x\n  replicas: 150\n"))],
            Limits::new(200),
        );
        assert_eq!(
            servers.expect("within a raised limit")[0].spec.replicas,
            150
        );
        let (line, _) = error_with("  image: x\n  replicas: 201\n", Limits::new(200));
        assert!(
            line.ends_with("is 201, more than the limit of 200"),
            "{line}"
        );

        // Past the hard maximum no setting helps, and the help says so.
        assert_eq!(
            Limits::new(u32::MAX).max_replicas(),
            Limits::HARD_MAX_REPLICAS
        );
        for huge in ["10001", "4000000000", "18446744073709551615"] {
            let (line, help) = error_with(
                &format!("  image: x\n  replicas: {huge}\n"),
                Limits::new(u32::MAX),
            );
            assert!(line.contains("more than the limit of 10000"), "{line}");
            assert!(help.contains("at most 10000"), "{help}");
        }
    }

    #[test]
    fn resources_must_be_limits_docker_accepts() {
        for ok in [
            "{memory: 6Mi}",
            "{memory: 6291456}",
            "{memory: 9223372036854775807}",
            "{memory: 8388607Ti}",
            "{cpus: 0.01}",
            "{cpus: \"10m\"}",
            "{cpus: 1024}",
            "{cpus: \"1024000m\"}",
        ] {
            one(&format!("  image: x\n  resources: {ok}\n"));
        }
        for (bad, message, help) in [
            (
                "{memory: 6291455}",
                "below Docker's minimum of 6Mi",
                "at least `6Mi`",
            ),
            (
                "{memory: 5Mi}",
                "below Docker's minimum of 6Mi",
                "at least `6Mi`",
            ),
            ("{memory: 9223372036854775808}", "is too large", "`4Gi`"),
            ("{memory: 8388608Ti}", "is too large", "`4Gi`"),
            (
                "{cpus: 0.005}",
                "below Docker's minimum of 0.01",
                "`cpus: 0.01`",
            ),
            (
                "{cpus: \"9m\"}",
                "below Docker's minimum of 0.01",
                "`cpus: 0.01`",
            ),
            ("{cpus: 1024.001}", "more than 1024 CPUs", "`cpus: 2`"),
            ("{cpus: \"1024001m\"}", "more than 1024 CPUs", "`cpus: 2`"),
            ("{cpus: 1e300}", "invalid CPU limit", "`cpus: 0.5`"),
        ] {
            let (line, got) = error_with(
                &format!("  image: x\n  resources: {bad}\n"),
                Limits::default(),
            );
            assert!(line.starts_with("t.yaml:6:"), "{bad}: {line}");
            assert!(line.contains(message), "{bad}: {line}");
            assert!(got.contains(help), "{bad}: {got}");
        }
    }

    #[test]
    fn multi_document_file_with_empty_documents_and_file_relative_origins() {
        let text = "# fleet\n---\n---\n# only a comment\n---\napiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: b}\nspec: {image: b}\n---\napiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata:\n  name: a\nspec:\n  image: a\n...\n";
        let servers = load(&[file("f.yaml", text)]).expect("valid");
        let names: Vec<_> = servers
            .iter()
            .map(|s| (s.name.as_str(), s.origin.line))
            .collect();
        assert_eq!(names, [("a", 11), ("b", 6)]);
        assert_eq!(servers[0].origin.to_string(), "f.yaml:11:1");
    }

    #[test]
    fn comment_only_and_empty_files_hold_no_servers() {
        let files = [
            file("a.yaml", ""),
            file("b.yaml", "# nothing\n"),
            file("c.yaml", "---\n...\n---\n"),
        ];
        assert_eq!(load(&files).expect("valid"), []);
    }

    #[test]
    fn a_byte_order_mark_does_not_shift_columns() {
        let errs = errors(
            "\u{feff}apiVersion: v2\nkind: McpServer\nmetadata: {name: s}\nspec: {image: x}\n",
        );
        assert!(
            errs[0].starts_with("t.yaml:1:13: unsupported apiVersion"),
            "{errs:#?}"
        );
    }

    #[test]
    fn labels_are_kept_but_change_nothing_else() {
        let a = one("  image: x\n");
        let text = "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata:\n  name: s\n  labels: {team: platform, tier: \"1\"}\nspec:\n  image: x\n";
        let b = load(&[file("t.yaml", text)]).expect("valid").remove(0);
        assert_eq!(b.labels.get("team").map(String::as_str), Some("platform"));
        assert_eq!(a.spec, b.spec);
        assert_eq!(a.name, b.name);
    }

    #[test]
    fn every_problem_of_every_document_is_reported() {
        let text = "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: a}\nspec:\n  imgae: x\n  replicas: -1\n---\napiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: B}\nspec: {image: x, port: 0, transport: sse}\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(
            errs[0].starts_with("t.yaml:5:3: unknown field `imgae`"),
            "{errs:#?}"
        );
        assert!(
            errs[1].starts_with("t.yaml:6:13: `spec.replicas` cannot be negative"),
            "{errs:#?}"
        );
        assert!(
            errs[2].starts_with("t.yaml:10:18: invalid server name"),
            "{errs:#?}"
        );
        assert!(
            errs[3].starts_with("t.yaml:11:24: `spec.port` is out of range"),
            "{errs:#?}"
        );
    }

    #[test]
    fn yes_and_no_are_strings() {
        let s = one("  image: x\n  env: {A: \"yes\"}\n");
        assert_eq!(s.spec.env["A"], EnvValue::Plain("yes".into()));
        let errs = errors(
            "apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: s}\nspec: {image: x, env: {A: true}}\n",
        );
        assert!(
            errs[0].contains("must be a string, found a boolean"),
            "{errs:#?}"
        );
    }

    #[test]
    fn schema_denies_unknown_fields_and_lists_enums() {
        let schema = json_schema();
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["title"], "McpServer");
        let text = schema.to_string();
        assert!(
            text.contains("streamable-http") && text.contains("\"python\""),
            "{text}"
        );
    }
}
