//! The committed JSON Schema (`schemas/mcpserver.schema.json`) must match the
//! one generated from the Rust types, and must agree with `spec::load`: the
//! examples pass both, and typical mistakes fail both.
//!
//! Regenerate the file with `UPDATE_SCHEMA=1 cargo test --test schema`.

use mcpctl::source::SourceFile;
use mcpctl::spec::{json_schema, load};
use std::path::{Path, PathBuf};

const SCHEMA_PATH: &str = "schemas/mcpserver.schema.json";

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn generated() -> String {
    let mut text = serde_json::to_string_pretty(&json_schema()).expect("a JSON value serialises");
    text.push('\n');
    text
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&json_schema()).expect("the generated schema is a valid JSON Schema")
}

/// Every document of a YAML file as JSON, read the way `load` reads YAML
/// (YAML 1.2 booleans), so both sides judge the same values.
fn documents(text: &str) -> Vec<serde_json::Value> {
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_multiple_with_options(text, options).expect("the file is YAML")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn committed_schema_is_up_to_date() {
    let path = manifest().join(SCHEMA_PATH);
    let expected = generated();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &expected).expect("write the schema");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == expected,
        "{SCHEMA_PATH} is out of date with the Rust types; regenerate it with\n\n    \
         UPDATE_SCHEMA=1 cargo test --test schema\n"
    );
}

#[test]
fn examples_are_valid_for_the_schema_and_for_load() {
    let validator = validator();
    // examples/kubernetes holds Kubernetes manifests that run mcpctl, not
    // specs; tests/kubernetes.rs checks those against k8s-openapi's types.
    // examples/ci holds a GitHub Actions workflow (tests/ci_example.rs).
    let kubernetes = manifest().join("examples").join("kubernetes");
    let ci = manifest().join("examples").join("ci");
    let files: Vec<PathBuf> = yaml_files(&manifest().join("examples"))
        .into_iter()
        .filter(|p| !p.starts_with(&kubernetes) && !p.starts_with(&ci))
        .collect();
    assert!(files.len() >= 2, "expected example files, found {files:?}");
    let mut sources = Vec::new();
    let mut documents_seen = 0;
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable example");
        let relative = path
            .strip_prefix(manifest())
            .expect("under the crate")
            .to_owned();
        let schema_line = text.lines().next().unwrap_or_default();
        let parent = relative.parent().expect("in a directory");
        let depth = parent.components().count();
        let expected = format!(
            "# yaml-language-server: $schema={}{SCHEMA_PATH}",
            "../".repeat(depth)
        );
        assert_eq!(
            schema_line,
            expected,
            "{} should start with the schema modeline",
            relative.display()
        );
        for (i, doc) in documents(&text).iter().enumerate() {
            let errors: Vec<String> = validator
                .iter_errors(doc)
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{} document {}: {errors:#?}",
                relative.display(),
                i + 1
            );
            documents_seen += 1;
        }
        sources.push(SourceFile {
            path: relative,
            text,
            at: None,
        });
    }
    let servers = load(&sources).unwrap_or_else(|e| panic!("examples must load: {e:?}"));
    assert_eq!(servers.len(), documents_seen);
}

#[test]
fn typical_mistakes_fail_the_schema_too() {
    let validator = validator();
    for stem in [
        "typo_field",
        "typo_top_level",
        "image_and_package",
        "no_workload",
        "port_zero",
        "port_too_large",
        "replicas_negative",
        "name_uppercase",
        "name_underscore",
        "unknown_runtime",
        "wrong_kind",
        "wrong_api_version",
        "secret_missing_key",
        "env_not_string",
        "version_number",
        "missing_metadata",
        "header_bad_name",
        "header_value_newline",
        "header_unknown_field",
        "header_not_string",
    ] {
        let path = manifest().join(format!("tests/corpus/invalid/{stem}.yaml"));
        let text = std::fs::read_to_string(&path).expect("corpus file");
        let docs = documents(&text);
        assert!(
            docs.iter().any(|d| !validator.is_valid(d)),
            "{stem} passes the schema but not `load`"
        );
    }
}
