//! The diagnostics corpus: every file under `tests/corpus/invalid/` (and the
//! pair under `tests/corpus/dup/`) must fail to load, and its rendering is
//! snapshotted as a user would see it without colour.
//!
//! Snapshots alone would let a broken locator through if someone accepted
//! them blindly, so each case also states, in code, where its first error
//! must point and what it must say.

use mcpctl::source::SourceFile;
use mcpctl::spec::{SpecError, load};
use miette::{GraphicalReportHandler, GraphicalTheme};
use std::path::{Path, PathBuf};

/// (file stem, number of errors, `line:col` of the first, text the first must contain)
const CASES: &[(&str, usize, &str, &str)] = &[
    (
        "alias_bomb",
        1,
        "11:18",
        "document is too large: it expands to more than 250000 nodes",
    ),
    (
        "bad_duration",
        1,
        "7:14",
        "invalid duration 60 for `spec.readiness.timeout`",
    ),
    ("bad_indentation", 1, "7:13", "invalid YAML"),
    ("bad_memory", 1, "7:13", "invalid memory limit \"512MB\""),
    ("bad_url", 1, "6:10", "invalid URL \"mcp.linear.app/mcp\""),
    (
        "command_string",
        1,
        "6:12",
        "`spec.command` must be a list, found a string",
    ),
    (
        "cpus_too_many",
        1,
        "7:11",
        "CPU limit \"2048000m\" is more than 1024 CPUs",
    ),
    (
        "cpus_too_small",
        1,
        "6:36",
        "CPU limit 0.005 is below Docker's minimum of 0.01",
    ),
    ("duplicate_key", 1, "7:3", "duplicate key `image`"),
    (
        "duplicate_name_same_file",
        1,
        "8:18",
        "server name `github` is already used at tests/corpus/invalid/duplicate_name_same_file.yaml:3:18",
    ),
    (
        "env_not_string",
        2,
        "7:12",
        "`spec.env.DEBUG` must be a string, found a boolean",
    ),
    (
        "external_with_port",
        1,
        "6:3",
        "`spec.port` does not apply to an external server",
    ),
    (
        "header_bad_name",
        1,
        "8:7",
        "invalid header name \"X Team\"",
    ),
    (
        "header_duplicate_case",
        1,
        "9:7",
        "header `authorization` is set twice",
    ),
    (
        "header_not_string",
        1,
        "8:18",
        "`spec.external.headers.X-Retries` must be a string, found a number",
    ),
    (
        "header_prefix_unquoted",
        1,
        "10:17",
        "`spec.external.headers.Authorization.prefix` \"Bearer\" runs into the secret",
    ),
    (
        "header_reserved",
        1,
        "8:7",
        "header `Content-Type` is set by mcpctl",
    ),
    (
        "header_secret_missing_key",
        1,
        "9:9",
        "`spec.external.headers.Authorization.secretRef` needs a `key`",
    ),
    (
        "header_unknown_field",
        1,
        "8:62",
        "unknown field `prefx` in the header value",
    ),
    (
        "header_value_newline",
        1,
        "9:15",
        "`spec.external.headers.X-Team` contains a line break",
    ),
    (
        "image_and_package",
        1,
        "6:3",
        "`spec` sets both `image` and `package`",
    ),
    (
        "memory_too_large",
        1,
        "7:13",
        "memory limit 9223372036854775808 is too large",
    ),
    (
        "memory_too_small",
        1,
        "7:13",
        "memory limit \"4Mi\" is below Docker's minimum of 6Mi",
    ),
    ("missing_metadata", 1, "1:1", "missing `metadata`"),
    (
        "missing_port",
        1,
        "6:14",
        "`spec.port` is required with transport `streamable-http`",
    ),
    (
        "name_too_long",
        1,
        "4:9",
        "invalid server name \"a-very-long-server-name",
    ),
    (
        "name_underscore",
        1,
        "4:9",
        "invalid server name \"my_server\"",
    ),
    ("name_uppercase", 1, "4:9", "invalid server name \"GitHub\""),
    (
        "no_workload",
        1,
        "4:1",
        "`spec` needs one of `image`, `package` or `external`",
    ),
    (
        "not_a_mapping",
        1,
        "1:1",
        "a server document must be a mapping, found a list",
    ),
    (
        "port_string",
        1,
        "7:9",
        "`spec.port` must be a whole number from 1 to 65535, found a string (\"eighty\")",
    ),
    (
        "port_too_large",
        1,
        "7:9",
        "`spec.port` is out of range: 70000",
    ),
    ("port_zero", 1, "7:9", "`spec.port` is out of range: 0"),
    (
        "replicas_negative",
        1,
        "6:13",
        "`spec.replicas` cannot be negative",
    ),
    (
        "replicas_over_limit",
        1,
        "7:13",
        "`spec.replicas` is 3000, more than the limit of 100",
    ),
    (
        "replicas_past_hard_max",
        1,
        "6:13",
        "`spec.replicas` is 4000000000, more than the limit of 100",
    ),
    (
        "replicas_string",
        1,
        "5:13",
        "`spec.replicas` must be a whole number, 0 or more, found a string (\"two\")",
    ),
    (
        "secret_missing_key",
        1,
        "9:7",
        "`spec.env.GITHUB_TOKEN.secretRef` needs a `key`",
    ),
    (
        "spec_fields_at_top_level",
        1,
        "6:1",
        "`image`, `replicas`, `transport` and `port` are at the top level: indent them under `spec:`",
    ),
    (
        "spec_missing_fields_at_top_level",
        1,
        "4:1",
        "`package` is at the top level: put it under a `spec:` key",
    ),
    (
        "third_document",
        1,
        "20:14",
        "unknown transport \"streamable-htp\"",
    ),
    ("typo_field", 1, "6:3", "unknown field `imgae` in `spec`"),
    (
        "typo_replica",
        1,
        "5:3",
        "unknown field `replica` in `spec`",
    ),
    (
        "typo_top_level",
        1,
        "3:1",
        "unknown field `metdata` in the document",
    ),
    ("unclosed_flow", 1, "4:5", "invalid YAML"),
    (
        "unknown_runtime",
        1,
        "7:14",
        "unknown package runtime \"ruby\"",
    ),
    (
        "url_password",
        1,
        "6:10",
        "`spec.external.url` holds a secret: a password before `@`",
    ),
    (
        "url_query_access_token",
        1,
        "6:10",
        "`spec.external.url` holds a secret: the query parameter `access_token`",
    ),
    (
        "url_query_api_key",
        1,
        "6:10",
        "`spec.external.url` holds a secret: the query parameter `API_KEY`",
    ),
    (
        "url_query_apikey",
        1,
        "6:10",
        "`spec.external.url` holds a secret: the query parameter `apikey`",
    ),
    (
        "url_query_key",
        1,
        "6:10",
        "`spec.external.url` holds a secret: the query parameter `Key`",
    ),
    (
        "url_query_password",
        1,
        "6:10",
        "`spec.external.url` holds a secret: the query parameter `password`",
    ),
    (
        "url_query_secret",
        1,
        "6:10",
        "`spec.external.url` holds a secret: the query parameter `secret`",
    ),
    (
        "url_query_token",
        1,
        "6:10",
        "`spec.external.url` holds a secret: the query parameter `token`",
    ),
    (
        "url_username_token",
        1,
        "6:10",
        "`spec.external.url` holds a secret: a user name before `@`",
    ),
    (
        "version_number",
        1,
        "5:63",
        "`spec.package.version` must be a quoted string",
    ),
    (
        "wrong_api_version",
        1,
        "1:13",
        "unsupported apiVersion \"v1\"",
    ),
    ("wrong_kind", 1, "2:7", "unsupported kind \"ConfigMap\""),
];

/// Help text that must appear for a case, where the help is the point.
const HELP: &[(&str, &str)] = &[
    ("typo_field", "did you mean `image`?"),
    ("typo_replica", "did you mean `replicas`?"),
    ("typo_top_level", "did you mean `metadata`?"),
    ("name_underscore", "e.g. `my-server`"),
    ("unknown_runtime", "`node` runs `npx -y NAME@VERSION`"),
    ("version_number", "`version: \"1.10\"`"),
    ("bad_memory", "`512Mi`"),
    ("third_document", "did you mean `streamable-http`?"),
    ("spec_fields_at_top_level", "by two spaces"),
    (
        "spec_fields_at_top_level",
        "empty: nothing is indented under it",
    ),
    (
        "spec_missing_fields_at_top_level",
        "add a line `spec:` above it",
    ),
    ("wrong_api_version", "`apiVersion: mcpctl.io/v1`"),
    ("env_not_string", "`DEBUG: \"true\"`"),
    ("command_string", "`command: [\"server\", \"--http\"]`"),
    ("unclosed_flow", "opened here and never closed"),
    ("replicas_over_limit", "`--max-replicas 3000`"),
    ("replicas_over_limit", "`MCPCTL_MAX_REPLICAS=3000`"),
    (
        "replicas_past_hard_max",
        "at most 10000 instances of one server",
    ),
    (
        "memory_too_small",
        "Docker refuses memory limits under 6 MiB",
    ),
    ("memory_too_large", "e.g. `512Mi` or `4Gi`"),
    ("cpus_too_small", "less than 0.01 CPU (`10m`)"),
    ("cpus_too_many", "e.g. `cpus: 2`"),
    ("header_bad_name", "e.g. `Authorization` or `X-Api-Key`"),
    ("header_duplicate_case", "first set here"),
    ("header_not_string", "`X-Retries: \"3\"`"),
    ("header_prefix_unquoted", "`prefix: \"Bearer \"`"),
    ("header_unknown_field", "did you mean `prefix`?"),
    ("header_value_newline", "one line of text"),
    ("url_password", "send the secret in `headers`"),
    ("url_query_access_token", "send the secret in `headers`"),
    ("url_query_api_key", "send the secret in `headers`"),
    ("url_query_apikey", "send the secret in `headers`"),
    ("url_query_key", "send the secret in `headers`"),
    ("url_query_password", "send the secret in `headers`"),
    ("url_query_secret", "send the secret in `headers`"),
    ("url_query_token", "send the secret in `headers`"),
    ("url_username_token", "send the secret in `headers`"),
];

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Reads corpus files with the relative path a user would have typed, so
/// diagnostics (and snapshots) name `tests/corpus/...` on every machine.
fn read(relative: &str) -> SourceFile {
    let text = std::fs::read_to_string(manifest().join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"));
    SourceFile {
        path: PathBuf::from(relative),
        text,
        at: None,
    }
}

fn errors(files: &[SourceFile]) -> Vec<SpecError> {
    match load(files) {
        Ok(servers) => panic!("expected errors, loaded {servers:?}"),
        Err(e) => e.errors,
    }
}

fn render(errors: &[SpecError]) -> String {
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::none()).with_width(100);
    let mut out = String::new();
    for e in errors {
        handler
            .render_report(&mut out, e)
            .unwrap_or_else(|_| panic!("rendering {e}"));
        out.push('\n');
    }
    out
}

fn location(e: &SpecError) -> String {
    format!("{}:{}", e.line(), e.column())
}

#[test]
fn every_corpus_file_has_an_expectation() {
    let mut stems: Vec<String> = std::fs::read_dir(manifest().join("tests/corpus/invalid"))
        .expect("corpus directory")
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    stems.sort();
    let expected: Vec<&str> = CASES.iter().map(|c| c.0).collect();
    assert_eq!(
        stems, expected,
        "tests/corpus/invalid and CASES must list the same files"
    );
    assert!(CASES.len() >= 18);
}

#[test]
fn invalid_corpus() {
    let mut failures = Vec::new();
    for &(stem, count, at, text) in CASES {
        let relative = format!("tests/corpus/invalid/{stem}.yaml");
        let errors = errors(&[read(&relative)]);
        let first = &errors[0];
        let rendered = render(&errors);
        if errors.len() != count {
            failures.push(format!(
                "{stem}: expected {count} error(s), got {}:\n{rendered}",
                errors.len()
            ));
        }
        if location(first) != at || !first.message().contains(text) {
            failures.push(format!(
                "{stem}: expected {at} `{text}`, got {}: {}",
                location(first),
                first.message()
            ));
        }
        // The one-line form carries the location too, for logs.
        let line = first.to_string();
        if !line.starts_with(&format!("{relative}:{at}: ")) {
            failures.push(format!("{stem}: Display is `{line}`"));
        }
        if !rendered.contains(&format!("[{relative}:{at}]")) {
            failures.push(format!(
                "{stem}: the snippet header does not point at {at}:\n{rendered}"
            ));
        }
        for e in &errors {
            if e.help_text().is_none() {
                failures.push(format!("{stem}: no help for `{e}`"));
            }
        }
        for &(_, help) in HELP.iter().filter(|h| h.0 == stem) {
            if !rendered.contains(help) {
                failures.push(format!("{stem}: help should contain `{help}`:\n{rendered}"));
            }
        }
        insta::assert_snapshot!(stem, rendered);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn duplicate_names_across_files_name_both_places() {
    let files = [
        read("tests/corpus/dup/a.yaml"),
        read("tests/corpus/dup/b.yaml"),
    ];
    let errors = errors(&files);
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!(e.file(), Path::new("tests/corpus/dup/b.yaml"));
    assert_eq!(location(e), "5:9");
    assert_eq!(
        e.to_string(),
        "tests/corpus/dup/b.yaml:5:9: server name `github` is already used at tests/corpus/dup/a.yaml:4:9"
    );
    let rendered = render(&errors);
    assert!(
        rendered.contains("[tests/corpus/dup/b.yaml:5:9]"),
        "{rendered}"
    );
    assert!(
        rendered.contains("[tests/corpus/dup/a.yaml:4:9]"),
        "{rendered}"
    );
    insta::assert_snapshot!("duplicate_across_files", rendered);
}

#[test]
fn errors_come_in_file_then_line_order() {
    let files = [
        read("tests/corpus/invalid/wrong_kind.yaml"),
        read("tests/corpus/invalid/env_not_string.yaml"),
        read("tests/corpus/invalid/port_zero.yaml"),
    ];
    let order: Vec<String> = errors(&files)
        .iter()
        .map(|e| format!("{}:{}", e.file().display(), location(e)))
        .collect();
    assert_eq!(
        order,
        [
            "tests/corpus/invalid/wrong_kind.yaml:2:7",
            "tests/corpus/invalid/env_not_string.yaml:7:12",
            "tests/corpus/invalid/env_not_string.yaml:8:14",
            "tests/corpus/invalid/port_zero.yaml:7:9",
        ]
    );
}
