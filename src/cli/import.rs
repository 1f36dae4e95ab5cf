//! `mcpctl import [FORMAT] FILE [-o DIR]`: another tool's MCP server
//! definitions as McpServer YAML (the mapping is `crate::import`'s). The
//! YAML goes to stdout, or to one file per server with `-o`; warnings and
//! the secrets to create go to stderr. What is written is checked by the
//! spec's own validation first, so the output always validates.

use super::{Outcome, write_stderr, write_stdout};
use crate::import::{Draft, Format, Imported};
use crate::source::SourceFile;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// [FORMAT] FILE: FORMAT is server-json, claude, vscode or cursor
    /// (detected from the content when left out); FILE is the file to read,
    /// or `-` for standard input.
    #[arg(value_name = "[FORMAT] FILE", num_args = 1..=2, required = true)]
    pub args: Vec<String>,
    /// Write one file per server, DIR/<name>.yaml, instead of printing.
    #[arg(short = 'o', long = "out-dir", value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// With -o, replace files that exist.
    #[arg(long, requires = "out_dir")]
    pub force: bool,
}

/// Why `import` wrote nothing.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ImportCliError {
    #[error("unknown format `{0}`")]
    #[diagnostic(
        code(mcpctl::import::format),
        help(
            "the formats are server-json, claude, vscode and cursor; leave FORMAT out to detect it"
        )
    )]
    UnknownFormat(String),
    #[error("`{0}` is a format: give the FILE to read after it")]
    #[diagnostic(code(mcpctl::import::no_file), help("mcpctl import {0} FILE"))]
    NoFile(String),
    #[error("cannot read {path}: {source}")]
    #[diagnostic(code(mcpctl::import::read))]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: no server to import")]
    #[diagnostic(
        code(mcpctl::import::empty),
        help("the file defines no servers, or none could be imported (see the warnings above)")
    )]
    Empty { file: String },
    #[error("{} already exist{}: {}", if .0.len() == 1 { "a file" } else { "files" }, if .0.len() == 1 { "s" } else { "" }, .0.join(", "))]
    #[diagnostic(
        code(mcpctl::import::exists),
        help("nothing was written; give --force to replace them, or another -o DIR")
    )]
    Exists(Vec<String>),
    #[error("cannot write {path}: {source}")]
    #[diagnostic(code(mcpctl::import::write))]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("import made YAML that does not validate: this is a bug in mcpctl")]
    #[diagnostic(
        code(mcpctl::import::invalid_output),
        help("nothing was written; please report it with the input's shape (not its secrets)")
    )]
    Invalid(#[related] Vec<crate::spec::SpecError>),
}

fn parse_format(text: &str) -> Option<Format> {
    Format::ALL.into_iter().find(|f| f.as_str() == text)
}

pub async fn run(args: Args) -> miette::Result<Outcome> {
    let (format, file) = match args.args.as_slice() {
        [format, file] => (
            Some(
                parse_format(format)
                    .ok_or_else(|| ImportCliError::UnknownFormat(format.clone()))?,
            ),
            file.clone(),
        ),
        [file] if !Path::new(file).exists() && parse_format(file).is_some() => {
            return Err(ImportCliError::NoFile(file.clone()).into());
        }
        [file] => (None, file.clone()),
        _ => unreachable!("clap takes one or two"),
    };
    let (shown, text) = if file == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
            ImportCliError::Read {
                path: "standard input".into(),
                source,
            }
        })?;
        ("<stdin>".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(&file).map_err(|source| ImportCliError::Read {
            path: file.clone(),
            source,
        })?;
        (file.clone(), text)
    };
    let imported = crate::import::import(&text, &shown, format)?;
    let rendered = render_checked(&imported)?;
    report(&imported, &shown);
    if imported.servers.is_empty() {
        return Err(ImportCliError::Empty { file: shown }.into());
    }
    match &args.out_dir {
        None => write_stdout(
            &rendered
                .iter()
                .map(|(_, y)| y.as_str())
                .collect::<Vec<_>>()
                .join("---\n"),
        )?,
        Some(dir) => {
            let written = write_files(dir, &rendered, args.force)?;
            write_stderr(&format!(
                "wrote {} file{} to {}: check them with `mcpctl validate {}`\n",
                written,
                if written == 1 { "" } else { "s" },
                dir.display(),
                dir.display()
            ));
        }
    }
    Ok(Outcome::Success)
}

/// Each draft's YAML, each checked by the spec's own validation.
fn render_checked(imported: &Imported) -> Result<Vec<(&Draft, String)>, ImportCliError> {
    let mut out = Vec::with_capacity(imported.servers.len());
    let mut errors = Vec::new();
    for d in &imported.servers {
        let yaml = crate::import::document(d, imported.format);
        let file = SourceFile {
            path: PathBuf::from(format!("{}.yaml", d.name)),
            text: yaml.clone(),
            at: None,
        };
        if let Err(e) = crate::spec::load(&[file]) {
            errors.extend(e.errors);
        }
        out.push((d, yaml));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ImportCliError::Invalid(errors))
    }
}

/// Warnings and the secrets to create, on stderr. Never a secret's value:
/// the drafts hold none.
fn report(imported: &Imported, file: &str) {
    let mut text = String::new();
    if imported.detected {
        let also = if imported.format == Format::Claude {
            " (Cursor's files read the same)"
        } else {
            ""
        };
        text.push_str(&format!("{file}: read as `{}`{also}\n", imported.format));
    }
    for w in imported.all_warnings() {
        text.push_str(&format!("warning: {w}\n"));
    }
    for (draft, s) in imported.secrets() {
        text.push_str(&format!(
            "{}: mcpctl expects the secret {} for {}: put it in $MCPCTL_SECRETS_DIR/{}/{} or {} ({})\n",
            draft.name,
            s.secret,
            s.used_by,
            s.secret.name,
            s.secret.key,
            crate::secrets::Resolver::<fn(&str) -> Option<String>>::env_name(&s.secret),
            s.from
        ));
    }
    let parked = imported
        .servers
        .iter()
        .filter(|d| !d.todos.is_empty())
        .count();
    if parked > 0 {
        text.push_str(&format!(
            "{parked} server{} left at `replicas: 0` until the TODOs in {} YAML are done\n",
            if parked == 1 { " is" } else { "s are" },
            if parked == 1 { "its" } else { "their" }
        ));
    }
    write_stderr(&text);
}

fn write_files(
    dir: &Path,
    rendered: &[(&Draft, String)],
    force: bool,
) -> Result<usize, ImportCliError> {
    let path_of = |d: &Draft| dir.join(format!("{}.yaml", d.name));
    if !force {
        let existing: Vec<String> = rendered
            .iter()
            .map(|(d, _)| path_of(d))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(ImportCliError::Exists(existing));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| ImportCliError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    for (d, yaml) in rendered {
        let path = path_of(d);
        let mut options = std::fs::OpenOptions::new();
        options.write(true);
        // Without --force, a file that appeared since the check is still
        // not overwritten.
        if force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        let written = options
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, yaml.as_bytes()));
        written.map_err(|source| ImportCliError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(rendered.len())
}
