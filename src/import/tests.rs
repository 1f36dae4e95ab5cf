//! Each fixture of `tests/corpus/import/` through one helper: import it,
//! render it, load the YAML with the spec's own parser and validator, and
//! snapshot the YAML beside the warnings and the secrets asked for. Every
//! fake credential in the fixtures has `fake` in it, and none may come out.

use super::*;
use crate::source::SourceFile;
use std::path::PathBuf;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus/import")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Imports `name`, checks that every document validates and that no
/// credential leaked, and returns the import and its full report.
fn check(name: &str, format: Option<Format>) -> (Imported, String) {
    let imported = import(&fixture(name), name, format).unwrap_or_else(|e| panic!("{name}: {e}"));
    let yaml = documents(&imported.servers, imported.format);
    let servers = crate::spec::load(&[SourceFile {
        path: PathBuf::from("imported.yaml"),
        text: yaml.clone(),
        at: None,
    }])
    .unwrap_or_else(|e| panic!("{name}: the output does not validate: {e}\n{yaml}"));
    assert_eq!(servers.len(), imported.servers.len(), "{name}");
    // Parked drafts run nothing; the others run as declared.
    for d in &imported.servers {
        let s = servers.iter().find(|s| s.name == d.name).expect("loaded");
        assert_eq!(s.spec.replicas == 0, d.is_parked(), "{name}: {}", d.name);
    }
    let mut report = format!(
        "format: {} (detected: {})\n",
        imported.format, imported.detected
    );
    report.push_str("--- warnings\n");
    for w in imported.all_warnings() {
        report.push_str(&format!("{w}\n"));
    }
    report.push_str("--- secrets\n");
    for (d, s) in imported.secrets() {
        report.push_str(&format!(
            "{}: {} for {} ({})\n",
            d.name, s.secret, s.used_by, s.from
        ));
    }
    report.push_str("--- yaml\n");
    report.push_str(&yaml);
    assert!(
        !report.to_lowercase().contains("fake"),
        "{name}: a credential leaked:\n{report}"
    );
    (imported, report)
}

fn draft<'a>(imported: &'a Imported, name: &str) -> &'a Draft {
    imported
        .servers
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no draft {name}: {:?}",
                imported.servers.iter().map(|d| &d.name).collect::<Vec<_>>()
            )
        })
}

fn env<'a>(d: &'a Draft, var: &str) -> &'a DraftValue {
    &d.env
        .iter()
        .find(|(n, _)| n == var)
        .unwrap_or_else(|| panic!("{}: no env {var}", d.name))
        .1
}

fn secret(name: &str, key: &str) -> SecretRef {
    SecretRef {
        name: name.into(),
        key: key.into(),
    }
}

#[test]
fn server_json_2025_09_29_takes_the_npm_package_and_names_the_oci_one() {
    let (imported, report) = check("server-2025-09-29-npm-oci.json", None);
    assert_eq!(
        (imported.format, imported.detected),
        (Format::ServerJson, true)
    );
    let d = draft(&imported, "brave-search");
    assert_eq!(
        d.workload,
        DraftWorkload::Package {
            name: "@modelcontextprotocol/server-brave-search".into(),
            runtime: PackageRuntime::Node,
            version: Some("0.6.2".into()),
        }
    );
    assert_eq!(
        env(d, "BRAVE_API_KEY"),
        &DraftValue::Secret {
            secret: secret("brave-search", "brave-api-key"),
            prefix: String::new()
        }
    );
    assert_eq!(env(d, "LOG_LEVEL"), &DraftValue::Plain("info".into()));
    assert!(matches!(
        env(d, "BRAVE_COUNTRY"),
        DraftValue::Missing {
            required: false,
            ..
        }
    ));
    assert!(!d.is_parked(), "{report}");
    assert!(
        report.contains("the oci package `mcp/brave-search`"),
        "{report}"
    );
    insta::assert_snapshot!(report);
}

#[test]
fn server_json_2025_10_17_pypi_with_required_values_is_parked_with_todos() {
    let (imported, report) = check(
        "server-2025-10-17-pypi-remote.json",
        Some(Format::ServerJson),
    );
    let d = draft(&imported, "warehouse-mcp");
    assert!(
        matches!(&d.workload, DraftWorkload::Package { runtime: PackageRuntime::Python, version: Some(v), .. } if v == "1.4.0")
    );
    assert_eq!(
        d.command,
        ["serve", "--warehouse", "<warehouse>", "--max-rows", "500"]
    );
    assert_eq!(
        env(d, "ACME_REGION"),
        &DraftValue::Plain("eu-west-1".into())
    );
    assert!(matches!(
        env(d, "ACME_DB_USER"),
        DraftValue::Missing { required: true, .. }
    ));
    assert!(matches!(
        env(d, "ACME_DB_PASSWORD"),
        DraftValue::Secret { .. }
    ));
    assert!(d.is_parked());
    assert!(
        report.contains("left out of `command`: `--read-only`, `--schema`"),
        "optional arguments are named: {report}"
    );
    assert!(
        report.contains("the hosted endpoint https://mcp.acme-data.example.com/mcp"),
        "{report}"
    );
    insta::assert_snapshot!(report);
}

#[test]
fn server_json_2025_12_11_oci_over_http_gets_port_env_and_secret_from_runtime_arguments() {
    let (imported, report) = check("server-2025-12-11-oci-http.json", None);
    let d = draft(&imported, "github-mcp-server");
    assert_eq!(
        d.workload,
        DraftWorkload::Image("ghcr.io/github/github-mcp-server:v0.20.1".into())
    );
    assert_eq!(d.command, ["http", "--port", "8080"]);
    assert_eq!(
        (d.transport, d.port, d.path.as_deref()),
        (Some(Transport::StreamableHttp), Some(8080), None)
    );
    assert!(matches!(
        env(d, "GITHUB_PERSONAL_ACCESS_TOKEN"),
        DraftValue::Secret { .. }
    ));
    assert_eq!(
        env(d, "GITHUB_TOOLSETS"),
        &DraftValue::Plain("repos,issues,pull_requests".into())
    );
    assert!(report.contains("`--network host`"), "{report}");
    assert!(report.contains("the mcpb package"), "{report}");
    insta::assert_snapshot!(report);
}

#[test]
fn server_json_remote_fills_url_variables_and_makes_secret_headers() {
    let (imported, report) = check("server-2025-12-11-remote.json", None);
    let d = draft(&imported, "tickets");
    let DraftWorkload::External { url, headers } = &d.workload else {
        panic!("{:?}", d.workload)
    };
    assert_eq!(url, "https://eu.mcp.example.com/mcp");
    assert_eq!(
        headers[0],
        (
            "X-Api-Key".to_owned(),
            DraftValue::Secret {
                secret: secret("tickets", "x-api-key"),
                prefix: String::new()
            }
        )
    );
    assert!(matches!(
        &headers[1].1,
        DraftValue::Missing { required: true, .. }
    ));
    assert_eq!(headers[2].1, DraftValue::Plain("mcpctl".into()));
    insta::assert_snapshot!(report);
}

#[test]
fn a_bearer_template_becomes_a_prefix() {
    let (imported, _) = check("server-2025-10-17-pypi-remote.json", None);
    // The package won; the remote's header mapping is checked on its own.
    let remote = &fixture("server-2025-10-17-pypi-remote.json");
    let root: serde_json::Value = serde_json::from_str(remote).expect("json");
    let d = server_json_remote(&root["remotes"][0]);
    let DraftWorkload::External { headers, .. } = &d.workload else {
        panic!("{:?}", d.workload)
    };
    assert_eq!(
        headers[0].1,
        DraftValue::Secret {
            secret: secret("x", "token"),
            prefix: "Bearer ".into()
        }
    );
    assert_eq!(imported.servers.len(), 1);
}

fn server_json_remote(r: &serde_json::Value) -> Draft {
    let mut root = serde_json::Map::new();
    root.insert("name".into(), "io.example/x".into());
    root.insert("remotes".into(), serde_json::Value::Array(vec![r.clone()]));
    let text = serde_json::Value::Object(root).to_string();
    import(&text, "x.json", None)
        .expect("imports")
        .servers
        .remove(0)
}

#[test]
fn claude_desktop_config_maps_docker_npx_uvx_and_parks_local_commands() {
    let (imported, report) = check("claude_desktop_config.json", None);
    assert_eq!(imported.format, Format::Claude);
    let gh = draft(&imported, "github");
    assert_eq!(
        gh.workload,
        DraftWorkload::Image("ghcr.io/github/github-mcp-server:v0.20.1".into())
    );
    assert_eq!(
        env(gh, "GITHUB_PERSONAL_ACCESS_TOKEN"),
        &DraftValue::Secret {
            secret: secret("github", "github-personal-access-token"),
            prefix: String::new()
        }
    );
    assert_eq!(
        env(gh, "GITHUB_TOOLSETS"),
        &DraftValue::Plain("repos,issues".into())
    );
    assert!(!gh.is_parked());
    let fs = draft(&imported, "filesystem");
    assert_eq!(
        fs.command,
        ["/Users/alice/Desktop", "/Users/alice/Downloads"]
    );
    assert!(
        report.contains("`@modelcontextprotocol/server-filesystem` has no version"),
        "{report}"
    );
    let fetch = draft(&imported, "fetch");
    assert!(matches!(
        &fetch.workload,
        DraftWorkload::Package {
            runtime: PackageRuntime::Python,
            ..
        }
    ));
    assert!(
        report.contains("fetch: fields not carried over: `autoApprove`, `timeout`"),
        "{report}"
    );
    let pg = draft(&imported, "postgres");
    assert!(pg.command.is_empty() && pg.is_parked(), "{pg:?}");
    let weather = draft(&imported, "weather-tool");
    assert!(matches!(
        weather.workload,
        DraftWorkload::Placeholder { .. }
    ));
    assert!(weather.is_parked());
    assert!(matches!(
        env(weather, "OPENWEATHER_API_KEY"),
        DraftValue::Secret { .. }
    ));
    assert!(draft(&imported, "sqlite").disabled);
    insta::assert_snapshot!(report);
}

#[test]
fn claude_code_references_become_secrets_defaults_or_todos() {
    let (imported, report) = check("claude-code.mcp.json", Some(Format::Claude));
    let sentry = draft(&imported, "sentry");
    let DraftWorkload::External { headers, .. } = &sentry.workload else {
        panic!("{:?}", sentry.workload)
    };
    assert_eq!(
        headers[0].1,
        DraftValue::Secret {
            secret: secret("sentry", "token"),
            prefix: "Bearer ".into()
        }
    );
    let notes = draft(&imported, "notes");
    assert_eq!(
        env(notes, "NOTES_MODE"),
        &DraftValue::Plain("readonly".into())
    );
    assert!(matches!(
        env(notes, "NOTES_API_TOKEN"),
        DraftValue::Secret { .. }
    ));
    assert!(
        notes.is_parked(),
        "`${{NOTES_DIR}}` in args is left to the user"
    );
    assert!(
        draft(&imported, "docs").is_parked(),
        "a URL made of references"
    );
    insta::assert_snapshot!(report);
}

#[test]
fn vscode_inputs_marked_password_become_secrets() {
    let (imported, report) = check("vscode-mcp.json", None);
    assert_eq!(imported.format, Format::Vscode);
    let gh = draft(&imported, "github");
    let DraftWorkload::External { headers, .. } = &gh.workload else {
        panic!("{:?}", gh.workload)
    };
    assert_eq!(
        headers[0].1,
        DraftValue::Secret {
            secret: secret("github", "token"),
            prefix: "Bearer ".into()
        }
    );
    let p = draft(&imported, "perplexity");
    assert!(matches!(
        env(p, "PERPLEXITY_API_KEY"),
        DraftValue::Secret { .. }
    ));
    assert_eq!(env(p, "LOG_LEVEL"), &DraftValue::Plain("info".into()));
    assert!(matches!(
        env(p, "WORKSPACE"),
        DraftValue::Missing { required: true, .. }
    ));
    let memory = draft(&imported, "memory");
    assert_eq!(
        env(memory, "MEMORY_FILE_PATH"),
        &DraftValue::Plain("/data/memory.json".into())
    );
    assert!(
        report.contains("`-v ${workspaceFolder}/.memory:/data`"),
        "{report}"
    );
    assert!(
        report.contains("memory: fields not carried over: `envFile`"),
        "{report}"
    );
    assert!(matches!(
        &draft(&imported, "playwright").workload,
        DraftWorkload::Package { version: None, .. }
    ));
    assert!(draft(&imported, "local-dev").is_parked());
    insta::assert_snapshot!(report);
}

#[test]
fn cursor_urls_headers_and_credentials_inside_values() {
    let (imported, report) = check("cursor-mcp.json", Some(Format::Cursor));
    assert_eq!(imported.format, Format::Cursor);
    let stripe = draft(&imported, "stripe");
    let DraftWorkload::External { headers, .. } = &stripe.workload else {
        panic!("{:?}", stripe.workload)
    };
    assert_eq!(
        headers[0].1,
        DraftValue::Secret {
            secret: secret("stripe", "token"),
            prefix: "Bearer ".into()
        }
    );
    assert_eq!(headers[1].1, DraftValue::Plain("2025-09-30.clover".into()));
    let sentry = draft(&imported, "sentry");
    let DraftWorkload::External { url, .. } = &sentry.workload else {
        panic!("{:?}", sentry.workload)
    };
    assert_eq!(url, "https://mcp.sentry.dev/mcp?org=acme");
    assert!(sentry.is_parked());
    // A token inside a JSON-valued variable is still a token.
    assert!(matches!(
        env(draft(&imported, "notion"), "OPENAPI_MCP_HEADERS"),
        DraftValue::Secret { .. }
    ));
    insta::assert_snapshot!(report);
}

#[test]
fn malformed_json_is_located_and_its_snippet_hides_credentials() {
    let text = fixture("malformed-claude.json");
    let err = import(&text, "malformed-claude.json", None).expect_err("malformed");
    let line = err.to_string();
    assert!(
        line.starts_with("malformed-claude.json:8:9: expected `,` or `}`"),
        "{line}"
    );
    assert!(line.contains("at `\"LOG_LEVEL\"`"), "{line}");
    let mut rendered = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut rendered, &err)
        .expect("renders");
    assert!(rendered.contains("\"LOG_LEVEL\": \"debug\""), "{rendered}");
    assert!(!rendered.to_lowercase().contains("fake"), "{rendered}");
    insta::assert_snapshot!(rendered);
}

#[test]
fn an_unquoted_token_at_the_error_is_not_quoted_back() {
    let err = import(
        "{\"mcpServers\": {\"a\": {\"env\": {\"API_KEY\": sk-FAKEbare0123456789}}}}",
        "x.json",
        None,
    )
    .expect_err("malformed");
    let text = format!("{err:?} {err}");
    assert!(!text.contains("FAKE"), "{text}");
    assert!(
        err.to_string()
            .contains("looks like a credential (not shown)"),
        "{err}"
    );
}

#[test]
fn formats_and_shapes_are_checked() {
    let e = import("{\"version\": 1}", "x.json", None).expect_err("unknown");
    assert!(matches!(e, ImportError::Unrecognised { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "x.json: not a format import reads (its top-level keys: `version`)"
    );
    let e = import("{\"mcpServers\": {}}", "x.json", Some(Format::Vscode)).expect_err("wrong");
    assert!(
        e.to_string()
            .contains("not a vscode file: it has no `servers`"),
        "{e}"
    );
    let help = miette::Diagnostic::help(&e)
        .map(|h| h.to_string())
        .unwrap_or_default();
    assert!(help.contains("it reads as `claude`"), "{help}");
    let e = import("[1]", "x.json", None).expect_err("array");
    assert_eq!(
        e.to_string(),
        "x.json: the file holds a list, not a JSON object"
    );
    let e = import(
        "{\"mcpServers\": {\"a\": {\"command\": \"npx\", \"args\": \"-y pkg\"}}}",
        "x.json",
        None,
    )
    .expect_err("type");
    assert_eq!(
        e.to_string(),
        "x.json: `mcpServers.a.args` must be a list of strings, found a string"
    );
    // VS Code's settings.json holds the same under `mcp`.
    let ok = import(
        "{\"mcp\": {\"servers\": {\"a\": {\"command\": \"uvx\", \"args\": [\"x==1\"]}}}}",
        "s.json",
        None,
    )
    .expect("settings");
    assert_eq!((ok.format, ok.servers.len()), (Format::Vscode, 1));
}

#[test]
fn names_are_dns_labels_and_unique() {
    let text = "{\"mcpServers\": {\"My Server\": {\"command\": \"uvx\", \"args\": [\"a==1\"]}, \"my_server\": {\"command\": \"uvx\", \"args\": [\"b==1\"]}}}";
    let (names, warnings): (Vec<String>, Vec<String>) = {
        let i = import(text, "x.json", None).expect("imports");
        (
            i.servers.iter().map(|d| d.name.clone()).collect(),
            i.all_warnings().iter().map(ToString::to_string).collect(),
        )
    };
    assert_eq!(names, ["my-server", "my-server-2"]);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("named `my-server-2` after `my_server`")),
        "{warnings:?}"
    );
}

#[test]
fn rendered_values_cannot_break_out_of_their_line() {
    let text = "{\"mcpServers\": {\"a\": {\"command\": \"uvx\", \"args\": [\"a==1\", \"x\\n# injected: true\\u0085\"], \"env\": {\"true\": \"1\", \"NOTE\": \"line\\nbreak\"}}}}";
    let i = import(text, "x.json", None).expect("imports");
    let yaml = documents(&i.servers, i.format);
    let servers = crate::spec::load(&[SourceFile {
        path: "a.yaml".into(),
        text: yaml.clone(),
        at: None,
    }])
    .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(servers[0].spec.command, ["x\n# injected: true\u{85}"]);
    assert_eq!(servers[0].spec.env.len(), 2, "{yaml}");
}
