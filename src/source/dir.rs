//! Directory and file sources: a recursive walk over `*.yaml` and `*.yml`,
//! in a stable order, with a content hash as the revision.
//!
//! Paths are shown as the user gave them: a file argument as typed, a file
//! found under a directory argument as that argument joined with the path
//! below it (`specs/` → `specs/team/github.yaml`). Entries whose names start
//! with `.` are skipped, which also skips the `..data` directories of
//! Kubernetes-mounted ConfigMaps while still reading their symlinked files.

use super::{Snapshot, SourceError, SourceFile, SourceInfo};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

/// Reads every spec file under `paths` (files are taken as given, directories
/// are walked recursively; hidden entries are skipped).
pub fn read(paths: &[PathBuf]) -> Result<Snapshot, SourceError> {
    let mut files = Vec::new();
    let mut hasher = Sha256::new();
    let mut seen = HashSet::new();
    for arg in paths {
        let meta = std::fs::metadata(arg).map_err(|e| io_error(arg, e))?;
        let found = if meta.is_dir() {
            let mut found = Vec::new();
            let mut visited = HashSet::new();
            walk(arg, Path::new(""), &mut visited, &mut found)?;
            found
        } else {
            let name = arg.file_name().map_or_else(|| arg.clone(), PathBuf::from);
            vec![(arg.clone(), name)]
        };
        for (path, relative) in found {
            let shown = shown_path(arg, &path, &relative, meta.is_dir());
            if !seen.insert(shown.clone()) {
                continue;
            }
            let text = read_text(&path, &shown)?;
            // The revision names content, not where the user happens to stand:
            // paths enter it relative to their argument, with `/` separators.
            hasher.update(slash_path(&relative).as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
            files.push(SourceFile::new(shown, text));
        }
    }
    let digest = hasher.finalize();
    let location = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Snapshot {
        info: SourceInfo {
            kind: "dir".into(),
            location,
            revision: format!("sha256:{}", hex::encode(&digest[..8])),
        },
        files,
    })
}

/// Collects `(path to read, path relative to the walk root)` of spec files
/// under `dir`, sorted by name at every level.
fn walk(
    dir: &Path,
    relative: &Path,
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<(), SourceError> {
    // Symlinked directories are followed, but each real directory is read
    // once, so a link back to a parent cannot loop.
    let real = std::fs::canonicalize(dir).map_err(|e| io_error(dir, e))?;
    if !visited.insert(real) {
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        entries.push((name, entry.path()));
    }
    entries.sort();
    for (name, path) in entries {
        let below = relative.join(&name);
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            // A dangling symlink is not a spec file; it should not stop the walk.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(&path, e)),
        };
        if meta.is_dir() {
            walk(&path, &below, visited, out)?;
        } else if is_spec_file(&path) {
            out.push((path, below));
        }
    }
    Ok(())
}

fn is_spec_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// The path diagnostics show. For a directory `.`, files show without `./`.
fn shown_path(arg: &Path, path: &Path, relative: &Path, is_dir: bool) -> PathBuf {
    if !is_dir {
        return path.to_owned();
    }
    let bare = arg.components().all(|c| c == Component::CurDir);
    if bare {
        relative.to_owned()
    } else {
        arg.join(relative)
    }
}

fn slash_path(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn read_text(path: &Path, shown: &Path) -> Result<String, SourceError> {
    let bytes = std::fs::read(path).map_err(|e| io_error(shown, e))?;
    String::from_utf8(bytes).map_err(|_| SourceError::NotUtf8 {
        path: shown.to_owned(),
    })
}

fn io_error(path: &Path, source: std::io::Error) -> SourceError {
    match source.kind() {
        ErrorKind::NotFound => SourceError::NotFound {
            path: path.to_owned(),
        },
        _ => SourceError::Io {
            path: path.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, text).expect("write");
        }
        dir
    }

    fn shown(snapshot: &Snapshot, root: &Path) -> Vec<String> {
        snapshot
            .files
            .iter()
            .map(|f| slash_path(f.path.strip_prefix(root).unwrap_or(&f.path)))
            .collect()
    }

    #[test]
    fn walks_spec_files_in_order_and_skips_hidden_entries() {
        let dir = tree(&[
            ("b.yaml", "b"),
            ("a.yml", "a"),
            ("sub/z.yaml", "z"),
            ("sub/deeper/c.yaml", "c"),
            ("notes.txt", "not a spec"),
            (".hidden.yaml", "hidden"),
            (".git/config.yaml", "hidden"),
            ("sub/.cache/x.yaml", "hidden"),
        ]);
        let snapshot = read(&[dir.path().to_owned()]).expect("read");
        assert_eq!(
            shown(&snapshot, dir.path()),
            ["a.yml", "b.yaml", "sub/deeper/c.yaml", "sub/z.yaml"]
        );
        assert_eq!(snapshot.files[0].text, "a");
        assert_eq!(snapshot.info.kind, "dir");
        assert_eq!(snapshot.info.location, dir.path().display().to_string());
    }

    #[test]
    fn paths_are_the_argument_joined_with_the_path_below_it() {
        let dir = tree(&[("specs/team/github.yaml", "x"), ("one.conf", "y")]);
        let specs = dir.path().join("specs");
        let file = dir.path().join("one.conf");
        let snapshot = read(&[specs.clone(), file.clone()]).expect("read");
        let paths: Vec<_> = snapshot.files.iter().map(|f| f.path.clone()).collect();
        // A file given explicitly is read whatever its extension.
        assert_eq!(paths, [specs.join("team/github.yaml"), file]);
        assert_eq!(
            shown_path(
                Path::new("."),
                Path::new("./a.yaml"),
                Path::new("a.yaml"),
                true
            ),
            Path::new("a.yaml")
        );
        assert_eq!(
            shown_path(
                Path::new("specs/"),
                Path::new("specs/a.yaml"),
                Path::new("a.yaml"),
                true
            ),
            Path::new("specs/a.yaml")
        );
    }

    #[test]
    fn the_same_file_is_read_once() {
        let dir = tree(&[("a.yaml", "a")]);
        let snapshot = read(&[dir.path().to_owned(), dir.path().join("a.yaml")]).expect("read");
        assert_eq!(snapshot.files.len(), 1);
    }

    #[test]
    fn revision_follows_content_and_names_but_not_location() {
        let one = tree(&[("a.yaml", "a"), ("sub/b.yaml", "b")]);
        let two = tree(&[("a.yaml", "a"), ("sub/b.yaml", "b")]);
        let rev = |d: &Path| read(&[d.to_owned()]).expect("read").info.revision;
        let base = rev(one.path());
        assert!(
            base.starts_with("sha256:") && base.len() == "sha256:".len() + 16,
            "{base}"
        );
        assert_eq!(base, rev(two.path()));
        fs::write(two.path().join("sub/b.yaml"), "changed").expect("write");
        assert_ne!(base, rev(two.path()));
        fs::write(two.path().join("sub/b.yaml"), "b").expect("write");
        fs::rename(two.path().join("sub/b.yaml"), two.path().join("sub/c.yaml")).expect("rename");
        assert_ne!(base, rev(two.path()));
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tree(&[("bad.yaml", "")]);
        fs::write(dir.path().join("bad.yaml"), [0x61, 0xff, 0xfe]).expect("write");
        let missing = dir.path().join("missing");
        assert!(
            matches!(read(std::slice::from_ref(&missing)), Err(SourceError::NotFound { path }) if path == missing)
        );
        match read(&[dir.path().to_owned()]) {
            Err(SourceError::NotUtf8 { path }) => assert_eq!(path, dir.path().join("bad.yaml")),
            other => panic!("{other:?}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_followed_without_looping() {
        let dir = tree(&[("real/a.yaml", "a"), ("..data/b.yaml", "b")]);
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("real/loop"))
            .expect("symlink");
        std::os::unix::fs::symlink(dir.path().join("..data/b.yaml"), dir.path().join("b.yaml"))
            .expect("symlink");
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling.yaml"))
            .expect("symlink");
        let snapshot = read(&[dir.path().to_owned()]).expect("read");
        assert_eq!(shown(&snapshot, dir.path()), ["b.yaml", "real/a.yaml"]);
    }
}
