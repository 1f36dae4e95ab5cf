//! The layering rules of `docs/ARCHITECTURE.md` ("Layers"), checked against
//! the source: which top-level module may import which, and no cycles.
//! Run `cargo test --test architecture -- --nocapture` to see the module
//! graph as it stands.
//!
//! It reads imports as text: every `crate::name` path outside comments
//! (grouped `use crate::{a, b}` included), and `super::` paths that climb to
//! the crate root. That is enough for a crate that imports by path, which
//! this one does throughout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Who may import whom. A module missing here is an error: a new module
/// needs a deliberate place in the layers.
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("source", &["model"]),
    ("spec", &["model", "source"]),
    ("secrets", &["model", "spec"]),
    ("plan", &["model", "spec", "source"]),
    ("import", &["model", "source", "spec"]),
    ("state", &["model"]),
    ("runtime", &["model"]),
    ("probe", &["model"]),
    ("listen", &["model"]),
    ("bridge", &["model", "runtime", "probe"]),
    (
        "apply",
        &[
            "model", "source", "spec", "secrets", "plan", "state", "runtime", "probe", "listen",
            "bridge",
        ],
    ),
    (
        "gateway",
        &[
            "model", "source", "spec", "secrets", "plan", "state", "runtime", "probe", "listen",
            "bridge",
        ],
    ),
    (
        "reconcile",
        &[
            "model", "source", "spec", "secrets", "plan", "state", "runtime", "probe", "listen",
            "bridge", "apply", "gateway",
        ],
    ),
    (
        "cli",
        &[
            "model",
            "source",
            "spec",
            "secrets",
            "plan",
            "state",
            "runtime",
            "probe",
            "listen",
            "bridge",
            "apply",
            "gateway",
            "reconcile",
            "import",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments, so doc links and prose never count.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else if rest.starts_with('"') {
            // Skip string literals: `"crate::x"` in a message is not an import.
            let bytes = rest.as_bytes();
            let mut i = 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            rest = rest.get(i + 1..).unwrap_or("");
        } else {
            let c = rest.chars().next().expect("non-empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Top-level modules named by the paths in `code`; `depth` is how many
/// `super::` it takes from this file to reach the crate root.
fn imports(code: &str, depth: usize) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        // Not part of a longer name (`mcpctl_crate::`, say).
        if code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group only: `{plan::{self, X}, state}`
            // names `plan` and `state`.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        let name = ident_at(&group[j..]);
                        if !name.is_empty() && name != "self" {
                            found.insert(name.to_owned());
                        }
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident_at(rest).to_owned());
        }
    }
    if depth > 0 {
        let climb = "super::".repeat(depth);
        for (i, _) in code.match_indices(&climb) {
            let rest = &code[i + climb.len()..];
            if !rest.starts_with("super::") {
                let name = ident_at(rest);
                if !name.is_empty() {
                    found.insert(name.to_owned());
                }
            }
        }
    }
    found
}

/// The module graph: top-level module → the modules it imports, with one
/// place each import was seen, for error messages.
fn graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let parts: Vec<&str> = rel
            .iter()
            .map(|p| p.to_str().expect("utf-8 path"))
            .collect();
        let module = parts[0].trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        // src/a.rs and src/a/mod.rs sit one `super` below the root; every
        // other file one more per directory it is in.
        let depth = match parts.last() {
            Some(&"mod.rs") => parts.len() - 1,
            _ => parts.len(),
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        let code = strip_comments(&text);
        let deps = g.entry(module.clone()).or_default();
        for name in imports(&code, depth) {
            if name != module {
                deps.entry(name)
                    .or_insert_with(|| rel.display().to_string());
            }
        }
    }
    g
}

fn print(g: &BTreeMap<String, BTreeMap<String, String>>) {
    eprintln!("module graph (module -> what it imports):");
    for (m, deps) in g {
        let names: Vec<&str> = deps.keys().map(String::as_str).collect();
        eprintln!("  {m:<8} -> {}", names.join(", "));
    }
}

#[test]
fn modules_import_only_what_the_layers_allow() {
    let g = graph();
    print(&g);
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (m, deps) in &g {
        let Some(ok) = allowed.get(m.as_str()) else {
            wrong.push(format!(
                "module `{m}` has no place in the layers: add it to ALLOWED here and to docs/ARCHITECTURE.md"
            ));
            continue;
        };
        for (dep, at) in deps {
            if !ok.contains(&dep.as_str()) {
                wrong.push(format!("`{m}` imports `{dep}` (in src/{at})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn the_module_graph_has_no_cycles() {
    let g = graph();
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit<'a>(
        g: &'a BTreeMap<String, BTreeMap<String, String>>,
        m: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|p| *p == m) {
            let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for dep in g.get(m).into_iter().flat_map(|d| d.keys()) {
            if let Some(c) = visit(g, dep, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(cycle) = visit(&g, m, &mut Vec::new(), &mut done) {
            panic!("module cycle: {}", cycle.join(" -> "));
        }
    }
}

/// The checker itself must see what it is meant to see.
#[test]
fn the_import_reader_finds_grouped_nested_and_climbing_paths() {
    let code = strip_comments(
        "use crate::{plan::{self, Desired}, state};\n// use crate::cli;\nfn f() { crate::runtime::x(); let s = \"crate::probe\"; }\nuse super::super::apply::X;\n",
    );
    let found = imports(&code, 2);
    let expected: BTreeSet<String> = ["plan", "state", "runtime", "apply"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, expected);
}
