//! Hostile and broken input: `spec::load` must never panic, and must end
//! quickly with an error rather than hang or run out of memory. Large but
//! legitimate fleets must still load.
//!
//! Time bounds are generous (debug build, shared CI machines); they exist to
//! catch hangs and quadratic behaviour, not to benchmark.

use mcpctl::source::SourceFile;
use mcpctl::spec::{Server, SpecErrors, load};
use proptest::prelude::*;
use proptest::sample::Index;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const VALID: &str = r#"apiVersion: mcpctl.io/v1
kind: McpServer
metadata:
  name: github
  labels: {team: platform}
spec:
  replicas: 2
  image: ghcr.io/github/github-mcp-server:v0.20.1
  command: ["server", "--http"]
  transport: streamable-http
  port: 8080
  path: /mcp
  env:
    LOG_LEVEL: info
    GITHUB_TOKEN:
      secretRef: {name: github, key: token}
  resources: {memory: 512Mi, cpus: 0.5}
  readiness: {timeout: 60s}
---
apiVersion: mcpctl.io/v1
kind: McpServer
metadata: {name: fetch}
spec:
  package: {name: mcp-server-fetch, runtime: python, version: "2025.4.7"}
---
apiVersion: mcpctl.io/v1
kind: McpServer
metadata: {name: linear}
spec:
  external: {url: https://mcp.linear.app/mcp}
"#;

/// Loads `text` as one file and fails the test if that takes longer than `limit`.
fn timed_load(text: &str, limit: Duration) -> Result<Vec<Server>, SpecErrors> {
    let files = [SourceFile {
        path: PathBuf::from("input.yaml"),
        text: text.to_owned(),
        at: None,
    }];
    let start = Instant::now();
    let result = load(&files);
    let elapsed = start.elapsed();
    assert!(
        elapsed < limit,
        "load took {elapsed:?} (limit {limit:?}) on {} bytes",
        text.len()
    );
    result
}

fn expect_error(text: &str, limit: Duration, what: &str) -> SpecErrors {
    match timed_load(text, limit) {
        Ok(servers) => panic!(
            "{what}: expected an error, loaded {} servers",
            servers.len()
        ),
        Err(errors) => {
            assert!(!errors.is_empty());
            errors
        }
    }
}

#[derive(Debug, Clone)]
enum Edit {
    DeleteChar(Index),
    InsertChar(Index, char),
    ReplaceChar(Index, char),
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    Indent(Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    // YAML's structural characters are the interesting ones to insert.
    let special = prop::sample::select(vec![
        ':', '-', ' ', '\n', '\t', '{', '}', '[', ']', '"', '\'', '#', '&', '*', '!', '|', '>',
        '?', ',', '%', '@', '`',
    ]);
    let ch = prop_oneof![special, any::<char>()];
    prop_oneof![
        any::<Index>().prop_map(Edit::DeleteChar),
        (any::<Index>(), ch.clone()).prop_map(|(i, c)| Edit::InsertChar(i, c)),
        (any::<Index>(), ch).prop_map(|(i, c)| Edit::ReplaceChar(i, c)),
        any::<Index>().prop_map(Edit::DeleteLine),
        any::<Index>().prop_map(Edit::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (any::<Index>(), 0..6usize).prop_map(|(i, n)| Edit::Indent(i, n)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        match e {
            Edit::DeleteChar(i) if !chars.is_empty() => {
                chars.remove(i.index(chars.len()));
            }
            Edit::InsertChar(i, c) => chars.insert(i.index(chars.len() + 1), *c),
            Edit::ReplaceChar(i, c) if !chars.is_empty() => {
                let at = i.index(chars.len());
                chars[at] = *c;
            }
            Edit::DeleteLine(_)
            | Edit::DuplicateLine(_)
            | Edit::SwapLines(..)
            | Edit::Indent(..) => {
                let joined: String = chars.iter().collect();
                let mut lines: Vec<String> = joined.split('\n').map(str::to_owned).collect();
                let n = lines.len();
                match e {
                    Edit::DeleteLine(i) => {
                        lines.remove(i.index(n));
                    }
                    Edit::DuplicateLine(i) => {
                        let line = lines[i.index(n)].clone();
                        lines.insert(i.index(n), line);
                    }
                    Edit::SwapLines(a, b) => lines.swap(a.index(n), b.index(n)),
                    Edit::Indent(i, by) => {
                        let at = i.index(n);
                        lines[at] = format!("{}{}", " ".repeat(*by), lines[at]);
                    }
                    _ => {}
                }
                chars = lines.join("\n").chars().collect();
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = timed_load(&text, Duration::from_secs(2));
    }

    #[test]
    fn arbitrary_yamlish_text_never_panics(text in r#"([a-z]{0,6}|[-:{}\[\],&*!|>#'"? \n]){0,200}"#) {
        let _ = timed_load(&text, Duration::from_secs(2));
    }

    #[test]
    fn mutated_specs_never_panic(edits in prop::collection::vec(edit(), 1..8)) {
        let text = apply(VALID, &edits);
        if let Err(errors) = timed_load(&text, Duration::from_secs(2)) {
            // Whatever went wrong, each error says where, inside the file.
            let lines = text.split('\n').count();
            for e in &errors {
                prop_assert!(e.line() <= lines + 1, "{e} is past the end of a {lines}-line file");
                prop_assert!(e.help_text().is_some(), "{e} has no help");
            }
        }
    }
}

#[test]
fn the_unmutated_spec_loads() {
    let servers = timed_load(VALID, Duration::from_secs(2)).expect("valid");
    assert_eq!(servers.len(), 3);
}

#[test]
fn billion_laughs_is_refused_quickly() {
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
        .windows(2)
        .map(|w| (w[0], w[1]))
    {
        let refs = vec![format!("*{prev}"); 9].join(",");
        text.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    let errors = expect_error(&text, Duration::from_secs(3), "billion laughs");
    assert!(
        errors.iter().any(|e| e.message().contains("too large")),
        "{errors:?}"
    );
}

#[test]
fn deep_flow_nesting_is_refused_quickly() {
    let text = "[".repeat(10_000);
    expect_error(&text, Duration::from_secs(3), "deep flow nesting");
    let text = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    expect_error(&text, Duration::from_secs(3), "deep balanced flow nesting");
}

#[test]
fn deep_block_nesting_is_refused_quickly() {
    let mut text = String::new();
    for depth in 0..10_000 {
        text.push_str(&" ".repeat(depth));
        text.push_str("a:\n");
    }
    expect_error(&text, Duration::from_secs(5), "deep block nesting");
    // The same depth inside a real document, where the fields are known.
    let mut text =
        String::from("apiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata:\n  labels:\n");
    for depth in 2..10_000 {
        text.push_str(&" ".repeat(depth * 2));
        text.push_str("a:\n");
    }
    expect_error(&text, Duration::from_secs(5), "deep nesting inside a spec");
}

#[test]
fn twenty_megabytes_of_junk_end_quickly() {
    const SIZE: usize = 20 << 20;
    // One huge scalar, a huge list, a huge mapping, and line noise.
    let scalar = "x".repeat(SIZE);
    let list = "- item\n".repeat(SIZE / 7);
    let mapping: String = (0..SIZE / 16).map(|i| format!("key{i:09}: v\n")).collect();
    let mut noise = String::with_capacity(SIZE);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    while noise.len() < SIZE {
        // xorshift: cheap, deterministic printable noise with YAML punctuation.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        const ALPHABET: &[u8] = b" -:{}[],&*!|>#'\"?\nabcxyz019";
        let c = ALPHABET[(seed % ALPHABET.len() as u64) as usize];
        noise.push(char::from(c));
    }
    for (what, text) in [
        ("scalar", &scalar),
        ("list", &list),
        ("mapping", &mapping),
        ("noise", &noise),
    ] {
        expect_error(text, Duration::from_secs(10), what);
    }
}

#[test]
fn many_empty_documents_are_fine() {
    let text = "---\n# nothing here\n".repeat(50_000);
    let servers = timed_load(&text, Duration::from_secs(5)).expect("empty documents are valid");
    assert!(servers.is_empty());
}

fn fleet(n: usize) -> String {
    let mut text = String::with_capacity(n * 300);
    for i in 0..n {
        text.push_str(&format!(
            "---\napiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata:\n  name: srv-{i}\n  labels: {{team: t{}}}\nspec:\n  replicas: 2\n  image: ghcr.io/example/srv:{i}\n  transport: streamable-http\n  port: 8080\n  env:\n    LOG_LEVEL: info\n    TOKEN: {{secretRef: {{name: s{i}, key: token}}}}\n  resources: {{memory: 512Mi, cpus: 0.5}}\n",
            i % 7
        ));
    }
    text
}

#[test]
fn a_fleet_of_twenty_thousand_documents_loads() {
    let text = fleet(20_000);
    let servers = timed_load(&text, Duration::from_secs(20)).expect("a large fleet is valid");
    assert_eq!(servers.len(), 20_000);
    // Sorted by name, and origins are lines of the file, not of each document.
    assert!(servers.windows(2).all(|w| w[0].name < w[1].name));
    let last = servers
        .iter()
        .find(|s| s.name == "srv-19999")
        .expect("last server");
    assert_eq!(last.origin.line, 19_999 * 15 + 2);
}

#[test]
fn an_error_deep_in_a_large_fleet_is_found_and_located() {
    let mut text = fleet(5_000);
    text.push_str("---\napiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata: {name: srv-0}\nspec: {image: x, transport: sse, port: 0}\n");
    let errors = expect_error(&text, Duration::from_secs(10), "large fleet with errors");
    let found: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let base = 5_000 * 15;
    assert_eq!(
        found,
        [
            format!(
                "input.yaml:{}:18: server name `srv-0` is already used at input.yaml:5:9",
                base + 4
            ),
            format!("input.yaml:{}:40: `spec.port` is out of range: 0", base + 5),
        ]
    );
}
