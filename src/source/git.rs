//! Git sources: a bare mirror of the remote, kept in a cache directory and
//! fetched on demand, from which spec files are read straight out of a
//! commit's tree objects. There is never a working tree, so nothing on disk
//! can drift from the commit that names the revision.
//!
//! The mirror holds the remote's branches and tags under their own names,
//! fetched with forced refspecs and pruned, so a force-push or a deleted
//! branch is followed rather than refused. Fetches are full: shallow fetches
//! fail on `file://` and local paths, and the history is what tells a
//! force-push from a fast-forward ([`Mirror::descends`]).
//!
//! Credentials come from the environment ([`Auth::from_env`]): a token
//! (`MCPCTL_GIT_TOKEN`, with `MCPCTL_GIT_USERNAME` for hosts that want a
//! particular user) for HTTPS, and for SSH an agent or a key file
//! (`MCPCTL_GIT_SSH_KEY`), never from the URL, which is shown and kept in
//! many places ([`GitSource::check`]). Each kind is offered once per fetch,
//! so wrong credentials fail the fetch instead of looping.

use super::{Snapshot, SourceFile, SourceInfo};
use git2::{CredentialType, ObjectType, Oid, Repository};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A git repository at a ref and subdirectory: `--git URL [--ref REF] [--path SUBDIR]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitSource {
    /// What `git clone` would take: `https://`, `ssh://`, `git@host:path`,
    /// `file://` or a local path.
    pub url: String,
    /// A branch, a tag, or a commit SHA; the remote's HEAD branch when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The subdirectory holding the specs; the repository's root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl GitSource {
    /// The URL as it may be shown: in plans, errors, the state and
    /// `/healthz`. Credentials are refused up front ([`GitSource::check`]);
    /// this hides any that got past that all the same.
    pub fn display_url(&self) -> String {
        crate::model::urls::redact(&self.url)
    }

    /// Refuses a URL that holds a credential: an HTTPS user name (where
    /// hosts take tokens) or password, an SSH password, or a secret query
    /// parameter. It would be kept in the mirror's config, saved plans and
    /// logs; the token belongs in `MCPCTL_GIT_TOKEN`. An SSH user name
    /// (`git@host:org/repo`) is the login, not a secret, and is kept.
    pub fn check(&self) -> Result<(), GitError> {
        match crate::model::urls::credential(&self.url) {
            None => Ok(()),
            Some(what) => Err(GitError::Credential {
                url: self.display_url(),
                what,
            }),
        }
    }

    /// `URL`, or `URL#REF:PATH` when a ref or path was given (`HEAD` stands
    /// for the remote's default branch).
    pub fn location(&self) -> String {
        let url = self.display_url();
        match (&self.reference, self.subdir()) {
            (None, None) => url,
            (reference, path) => format!(
                "{url}#{}{}",
                reference.as_deref().unwrap_or("HEAD"),
                path.map(|p| format!(":{p}")).unwrap_or_default()
            ),
        }
    }

    fn reference_name(&self) -> &str {
        self.reference.as_deref().unwrap_or("HEAD")
    }

    /// The subdirectory without leading, trailing or doubled slashes and
    /// `.` segments; `None` for the root.
    fn subdir(&self) -> Option<String> {
        let parts: Vec<&str> = self
            .path
            .as_deref()
            .unwrap_or("")
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        (!parts.is_empty()).then(|| parts.join("/"))
    }
}

/// Credentials for fetching, read once from the environment.
#[derive(Clone, Default)]
pub struct Auth {
    /// `MCPCTL_GIT_TOKEN`: the password for HTTPS basic auth (a personal
    /// access or deploy token).
    pub token: Option<String>,
    /// `MCPCTL_GIT_USERNAME`: the user name sent with the token, for hosts
    /// that check it (Bitbucket); [`TOKEN_USERNAME`] when unset.
    pub username: Option<String>,
    /// `MCPCTL_GIT_SSH_KEY`: a private key file for SSH; without it the
    /// SSH agent is asked.
    pub ssh_key: Option<PathBuf>,
}

impl Auth {
    pub fn from_env() -> Auth {
        let non_empty = |v: std::ffi::OsString| (!v.is_empty()).then_some(v);
        Auth {
            token: std::env::var("MCPCTL_GIT_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            username: std::env::var("MCPCTL_GIT_USERNAME")
                .ok()
                .filter(|u| !u.is_empty()),
            ssh_key: std::env::var_os("MCPCTL_GIT_SSH_KEY")
                .and_then(non_empty)
                .map(PathBuf::from),
        }
    }
}

// Hand-written so that the token never reaches a log line.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "(sensitive)"))
            .field("username", &self.username)
            .field("ssh_key", &self.ssh_key)
            .finish()
    }
}

/// The username HTTPS hosts accept with a token when `MCPCTL_GIT_USERNAME`
/// names none (GitHub, GitLab and Gitea take any name; Bitbucket wants the
/// user's).
const TOKEN_USERNAME: &str = "x-access-token";
/// The username SSH hosts expect when the URL names none.
const SSH_USERNAME: &str = "git";

/// One credential to offer the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Offer {
    Token { username: String },
    Username(String),
    SshKey { username: String, key: PathBuf },
    SshAgent { username: String },
}

/// What has been offered during one fetch. libgit2 asks again after every
/// rejection, so offering each kind at most once is what ends the asking.
#[derive(Debug, Default)]
struct Offered {
    token: bool,
    username: bool,
    ssh: bool,
}

/// The next credential to offer, given what the remote accepts, or `None`
/// when there is nothing (left) to try.
fn next_offer(
    auth: &Auth,
    url: &str,
    url_user: Option<&str>,
    allowed: CredentialType,
    offered: &mut Offered,
) -> Option<Offer> {
    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
        && auth.token.is_some()
        && !offered.token
        && token_may_go_to(url)
    {
        offered.token = true;
        return Some(Offer::Token {
            username: url_user
                .or(auth.username.as_deref())
                .unwrap_or(TOKEN_USERNAME)
                .to_owned(),
        });
    }
    // Over SSH, libgit2 first asks who to log in as when the URL says nobody.
    if allowed.contains(CredentialType::USERNAME) && !offered.username {
        offered.username = true;
        return Some(Offer::Username(url_user.unwrap_or(SSH_USERNAME).to_owned()));
    }
    if allowed.contains(CredentialType::SSH_KEY) && !offered.ssh {
        offered.ssh = true;
        let username = url_user.unwrap_or(SSH_USERNAME).to_owned();
        return Some(match &auth.ssh_key {
            Some(key) => Offer::SshKey {
                username,
                key: key.clone(),
            },
            None => Offer::SshAgent { username },
        });
    }
    None
}

/// A token is a password: it is sent over HTTPS, or over plain HTTP only to
/// this machine, never in clear text across a network.
fn token_may_go_to(url: &str) -> bool {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => true,
        Ok(u) if u.scheme() == "http" => match u.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// The credentials callback for one fetch.
fn credentials(
    auth: &Auth,
) -> impl FnMut(&str, Option<&str>, CredentialType) -> Result<git2::Cred, git2::Error> + '_ {
    let mut offered = Offered::default();
    move |url, url_user, allowed| {
        let offer = next_offer(auth, url, url_user, allowed, &mut offered).ok_or_else(|| {
            // An authentication error, so that the fetch error's help says
            // which variables to set.
            git2::Error::new(
                git2::ErrorCode::Auth,
                git2::ErrorClass::Callback,
                if offered.token || offered.ssh {
                    "the remote refused the credentials"
                } else {
                    "the remote asks for credentials and none are set"
                },
            )
        })?;
        match offer {
            Offer::Token { username } => {
                git2::Cred::userpass_plaintext(&username, auth.token.as_deref().unwrap_or(""))
            }
            Offer::Username(name) => git2::Cred::username(&name),
            Offer::SshKey { username, key } => git2::Cred::ssh_key(&username, None, &key, None),
            Offer::SshAgent { username } => git2::Cred::ssh_key_from_agent(&username),
        }
    }
}

/// The mirror's refs: every branch and tag under its own name. `+` makes
/// each update forced, so a force-pushed branch or a moved tag is taken.
const REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// A bare mirror of one remote in the cache, for one [`GitSource`].
pub struct Mirror {
    repo: Repository,
    source: GitSource,
    dir: PathBuf,
    /// The remote's HEAD branch as of the last fetch (`refs/heads/main`).
    default_branch: Option<String>,
}

impl Mirror {
    /// Opens the mirror of `source.url` under `cache`, creating an empty
    /// bare repository the first time. Nothing is fetched yet. A URL that
    /// holds a credential is refused ([`GitSource::check`]).
    pub fn open(source: &GitSource, cache: &Path) -> Result<Mirror, GitError> {
        source.check()?;
        let dir = cache.join(cache_name(&source.url));
        let cache_error = |source_err: git2::Error| GitError::Cache {
            url: source.display_url(),
            dir: dir.clone(),
            source: source_err,
        };
        let repo = match Repository::open_bare(&dir) {
            Ok(repo) => repo,
            Err(e) if e.code() == git2::ErrorCode::NotFound => {
                std::fs::create_dir_all(cache).map_err(|e| {
                    cache_error(git2::Error::from_str(&format!(
                        "cannot create {}: {e}",
                        cache.display()
                    )))
                })?;
                Repository::init_bare(&dir).map_err(cache_error)?
            }
            Err(e) => return Err(cache_error(e)),
        };
        Ok(Mirror {
            repo,
            source: source.clone(),
            dir,
            default_branch: None,
        })
    }

    /// The mirror's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Brings the mirror up to date with the remote: every branch and tag,
    /// force-pushes and deletions included, and the remote's HEAD branch.
    pub fn fetch(&mut self, auth: &Auth) -> Result<(), GitError> {
        let fetch_error = |e: git2::Error| GitError::Fetch {
            url: self.source.display_url(),
            reference: self.source.reference_name().to_owned(),
            hint: fetch_hint(&self.source.url, &e),
            source: redacted(&e),
        };
        // Another mcpctl (a `plan` beside `watch`) may fetch into the same
        // mirror; libgit2 would fail on its ref lock files instead of waiting.
        let _lock = lock(&self.dir).map_err(|e| {
            fetch_error(git2::Error::from_str(&format!(
                "cannot lock {}: {e}",
                self.dir.display()
            )))
        })?;
        let mut remote = self
            .repo
            .remote_anonymous(&self.source.url)
            .map_err(fetch_error)?;
        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks.credentials(credentials(auth));
        let mut opts = git2::FetchOptions::new();
        opts.remote_callbacks(callbacks)
            .prune(git2::FetchPrune::On)
            .download_tags(git2::AutotagOption::None)
            .update_fetchhead(false);
        remote
            .fetch(&REFSPECS, Some(&mut opts), None)
            .map_err(fetch_error)?;
        // The ref list of the connection outlives it, so the remote's HEAD
        // is known without a second round trip.
        self.default_branch = remote
            .default_branch()
            .ok()
            .and_then(|b| b.as_str().ok().map(str::to_owned));
        Ok(())
    }

    /// The commit the source's ref names in the mirror: a branch, then a
    /// tag, then a commit SHA (full, or a unique prefix); the remote's HEAD
    /// branch when no ref was given.
    pub fn resolve(&self) -> Result<Oid, GitError> {
        let not_found = || GitError::RefNotFound {
            url: self.source.display_url(),
            reference: self.source.reference_name().to_owned(),
        };
        let Some(name) = &self.source.reference else {
            let branch =
                self.default_branch
                    .as_deref()
                    .ok_or_else(|| GitError::NoDefaultBranch {
                        url: self.source.display_url(),
                    })?;
            return self
                .repo
                .find_reference(branch)
                .and_then(|r| r.peel_to_commit())
                .map(|c| c.id())
                .map_err(|_| GitError::NoDefaultBranch {
                    url: self.source.display_url(),
                });
        };
        let candidates = if name.starts_with("refs/") {
            vec![name.clone()]
        } else {
            vec![format!("refs/heads/{name}"), format!("refs/tags/{name}")]
        };
        for candidate in &candidates {
            if let Ok(reference) = self.repo.find_reference(candidate) {
                return reference
                    .peel_to_commit()
                    .map(|c| c.id())
                    .map_err(|_| not_found());
            }
        }
        let is_sha = (4..=40).contains(&name.len()) && name.chars().all(|c| c.is_ascii_hexdigit());
        if is_sha && let Ok(commit) = self.repo.find_commit_by_prefix(name) {
            return Ok(commit.id());
        }
        Err(not_found())
    }

    /// Whether `commit` descends from `previous` (a full SHA), as a
    /// fast-forward does. `false` for a force-push to an unrelated or older
    /// commit, and when `previous` is not in the mirror at all.
    pub fn descends(&self, commit: Oid, previous: &str) -> bool {
        let Ok(previous) = Oid::from_str(previous) else {
            return false;
        };
        commit == previous
            || self
                .repo
                .graph_descendant_of(commit, previous)
                .unwrap_or(false)
    }

    /// The spec files under the source's path at `commit`, read from its
    /// tree objects. Paths are relative to the repository's root, and each
    /// file carries the short commit for diagnostics.
    pub fn read(&self, commit: Oid) -> Result<Snapshot, GitError> {
        let read_error = |e: git2::Error| GitError::Read {
            url: self.source.display_url(),
            commit: commit.to_string(),
            source: e,
        };
        let commit_obj = self.repo.find_commit(commit).map_err(read_error)?;
        let short = commit_obj
            .as_object()
            .short_id()
            .ok()
            .and_then(|b| b.as_str().ok().map(str::to_owned))
            .unwrap_or_else(|| commit.to_string()[..7].to_owned());
        let root = commit_obj.tree().map_err(read_error)?;
        let subdir = self.source.subdir();
        let path_not_found = || GitError::PathNotFound {
            url: self.source.display_url(),
            reference: self.source.reference_name().to_owned(),
            path: subdir.clone().unwrap_or_default(),
            commit: short.clone(),
        };
        let mut found = Vec::new();
        match &subdir {
            None => self.walk(&root, "", &mut found).map_err(read_error)?,
            // `..` would name nothing inside a tree; it must not be taken as
            // a way out of it either.
            Some(p) if p.split('/').any(|s| s == "..") => return Err(path_not_found()),
            Some(p) => {
                let entry = root.get_path(Path::new(p)).map_err(|_| path_not_found())?;
                match entry.kind() {
                    Some(ObjectType::Tree) => {
                        let tree = self.repo.find_tree(entry.id()).map_err(read_error)?;
                        self.walk(&tree, p, &mut found).map_err(read_error)?;
                    }
                    // A single file is read whatever its name, as a file
                    // argument is for directory sources.
                    Some(ObjectType::Blob) if entry.filemode() != SYMLINK => {
                        found.push((p.clone(), entry.id()));
                    }
                    _ => return Err(path_not_found()),
                }
            }
        }
        let mut files = Vec::with_capacity(found.len());
        for (path, id) in found {
            let blob = self.repo.find_blob(id).map_err(read_error)?;
            let text =
                String::from_utf8(blob.content().to_vec()).map_err(|_| GitError::NotUtf8 {
                    url: self.source.display_url(),
                    path: path.clone(),
                    commit: short.clone(),
                })?;
            files.push(SourceFile {
                path: PathBuf::from(path),
                text,
                at: Some(short.clone()),
            });
        }
        Ok(Snapshot {
            info: SourceInfo {
                kind: "git".into(),
                location: self.source.location(),
                revision: commit.to_string(),
            },
            files,
        })
    }

    /// Collects `(path from the root, blob)` of spec files under `tree`, in
    /// tree order, skipping hidden entries as directory sources do.
    /// Symlinks and submodules are skipped: they name things outside the
    /// commit's own trees.
    fn walk(
        &self,
        tree: &git2::Tree<'_>,
        prefix: &str,
        out: &mut Vec<(String, Oid)>,
    ) -> Result<(), git2::Error> {
        for entry in tree.iter() {
            let name = String::from_utf8_lossy(entry.name_bytes());
            if name.starts_with('.') {
                continue;
            }
            let path = if prefix.is_empty() {
                name.into_owned()
            } else {
                format!("{prefix}/{name}")
            };
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let sub = self.repo.find_tree(entry.id())?;
                    self.walk(&sub, &path, out)?;
                }
                Some(ObjectType::Blob)
                    if entry.filemode() != SYMLINK
                        && (path.ends_with(".yaml") || path.ends_with(".yml")) =>
                {
                    out.push((path, entry.id()));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The file mode git gives a symbolic link.
const SYMLINK: i32 = 0o120000;

/// `e` with any credential in a URL its message names hidden: libgit2
/// quotes URLs in some of its messages.
fn redacted(e: &git2::Error) -> git2::Error {
    git2::Error::new(e.code(), e.class(), crate::model::urls::redact(e.message()))
}

/// The mirror's directory name: the same URL always maps to the same
/// mirror, and the name says nothing about the URL (which may hold a user).
fn cache_name(url: &str) -> String {
    hex::encode(&Sha256::digest(url.as_bytes())[..8])
}

/// An exclusive lock beside the mirror (`<dir>.lock`), released when the
/// returned file is dropped or the process dies.
fn lock(dir: &Path) -> std::io::Result<std::fs::File> {
    let mut name = dir.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(name))?;
    file.lock()?;
    Ok(file)
}

/// What to check, by what went wrong.
fn fetch_hint(url: &str, e: &git2::Error) -> String {
    // libgit2 calls a missing local repository an "unsupported URL protocol".
    if let Some(path) = local_path(url)
        && !path.exists()
    {
        return format!("there is no repository at {}", path.display());
    }
    match (e.code(), e.class()) {
        (git2::ErrorCode::Auth, _) => {
            "set MCPCTL_GIT_TOKEN to a token that can read the repository (HTTPS), or MCPCTL_GIT_SSH_KEY to a key file or load the key into an ssh-agent (SSH)"
        }
        (git2::ErrorCode::Certificate, _) | (_, git2::ErrorClass::Ssl) => {
            "the server's TLS certificate was not accepted; check the system's CA certificates (SSL_CERT_FILE)"
        }
        (_, git2::ErrorClass::Http | git2::ErrorClass::Net | git2::ErrorClass::Ssh) => {
            "check the URL and that the server can be reached from here"
        }
        _ => "check the URL; a local repository is given as file:///path or a plain path",
    }
    .to_owned()
}

/// The directory a `file://` URL or a plain path names; `None` for remotes.
fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Some(PathBuf::from(rest));
    }
    // `host:path` and `user@host:path` are SSH; anything else without a
    // scheme is a path.
    let scp_like = url
        .find(':')
        .is_some_and(|colon| !url[..colon].contains('/'));
    (!url.contains("://") && !scp_like).then(|| PathBuf::from(url))
}

/// Errors of a git source. Each names the URL (credentials hidden), and
/// the ref or path it concerns.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GitError {
    /// The URL holds a credential; nothing was fetched.
    #[error("the --git URL {url} holds a credential: {what}")]
    #[diagnostic(
        code(mcpctl::source::git::credential),
        help(
            "take it out of the URL: put the token in MCPCTL_GIT_TOKEN (and the user name, for a host that wants one, in MCPCTL_GIT_USERNAME); an SSH key goes in MCPCTL_GIT_SSH_KEY or an ssh-agent"
        )
    )]
    Credential { url: String, what: String },
    /// The cache directory could not hold a bare mirror.
    #[error("cannot open the git cache {dir} for {url}")]
    #[diagnostic(
        code(mcpctl::source::git::cache),
        help("the cache is only a copy of the remote: delete {} and mcpctl fetches it again", dir.display())
    )]
    Cache {
        url: String,
        dir: PathBuf,
        #[source]
        source: git2::Error,
    },
    /// Fetching from the remote failed; nothing in the mirror changed.
    #[error("fetch failed: {url} (ref {reference})")]
    #[diagnostic(code(mcpctl::source::git::fetch), help("{hint}"))]
    Fetch {
        url: String,
        reference: String,
        hint: String,
        #[source]
        source: git2::Error,
    },
    /// The ref is neither a branch, nor a tag, nor a commit of the remote.
    #[error("ref `{reference}` not found in {url}")]
    #[diagnostic(
        code(mcpctl::source::git::ref_not_found),
        help(
            "give a branch, a tag, or a commit SHA reachable from one of them (`git ls-remote {url}` lists them)"
        )
    )]
    RefNotFound { url: String, reference: String },
    /// No ref was given and the remote's HEAD names no branch.
    #[error("{url} has no default branch")]
    #[diagnostic(
        code(mcpctl::source::git::no_default_branch),
        help("the repository is empty or its HEAD is detached: give the branch with --ref")
    )]
    NoDefaultBranch { url: String },
    /// The path is not in the commit the ref names.
    #[error("path `{path}` not found in {commit} ({url}, ref {reference})")]
    #[diagnostic(
        code(mcpctl::source::git::path_not_found),
        help(
            "--path is a directory (or file) relative to the repository's root, e.g. `fleet` or `deploy/mcp`"
        )
    )]
    PathNotFound {
        url: String,
        reference: String,
        path: String,
        commit: String,
    },
    /// A spec file is not UTF-8.
    #[error("{path} @ {commit} is not valid UTF-8 ({url})")]
    #[diagnostic(code(mcpctl::source::git::not_utf8), help("commit the file as UTF-8"))]
    NotUtf8 {
        url: String,
        path: String,
        commit: String,
    },
    /// An object the commit names could not be read from the mirror.
    #[error("cannot read commit {commit} of {url} from the git cache")]
    #[diagnostic(code(mcpctl::source::git::read))]
    Read {
        url: String,
        commit: String,
        #[source]
        source: git2::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(token: Option<&str>, key: Option<&str>) -> Auth {
        Auth {
            token: token.map(str::to_owned),
            username: None,
            ssh_key: key.map(PathBuf::from),
        }
    }

    #[test]
    fn a_token_is_offered_once_for_https_with_the_url_user_or_a_default() {
        let a = auth(Some("t0ken"), None);
        let mut offered = Offered::default();
        let url = "https://git.example.com/fleet.git";
        let allowed = CredentialType::USER_PASS_PLAINTEXT;
        assert_eq!(
            next_offer(&a, url, None, allowed, &mut offered),
            Some(Offer::Token {
                username: TOKEN_USERNAME.into()
            })
        );
        assert_eq!(
            next_offer(&a, url, None, allowed, &mut offered),
            None,
            "a rejected token is not offered again"
        );
        let named = Auth {
            username: Some("ci-bot".into()),
            ..a
        };
        assert_eq!(
            next_offer(&named, url, None, allowed, &mut Offered::default()),
            Some(Offer::Token {
                username: "ci-bot".into()
            })
        );
    }

    #[test]
    fn a_credential_in_the_url_is_refused_naming_the_flag_without_repeating_it() {
        let src = |url: &str| GitSource {
            url: url.into(),
            reference: None,
            path: None,
        };
        for (url, shown) in [
            (
                "https://ghp_t0ken@h/org/r.git",
                "https://(sensitive)@h/org/r.git",
            ),
            ("http://u:t0ken@h/r.git", "http://(sensitive)@h/r.git"),
            ("ssh://git:t0ken@h/r.git", "ssh://git:(sensitive)@h/r.git"),
            (
                "https://h/r.git?token=t0ken",
                "https://h/r.git?token=(sensitive)",
            ),
        ] {
            let err = src(url).check().expect_err(url);
            let text = format!(
                "{err} {:?}",
                miette::Diagnostic::help(&err).map(|h| h.to_string())
            );
            assert!(
                text.starts_with(&format!("the --git URL {shown} holds a credential")),
                "{text}"
            );
            assert!(!text.contains("t0ken"), "{text}");
            assert!(text.contains("MCPCTL_GIT_TOKEN"), "{text}");
        }
        for url in [
            "https://h/org/r.git",
            "ssh://git@h/org/r.git",
            "git@h:org/r.git",
            "file:///srv/r.git",
            "/srv/r.git",
        ] {
            assert!(src(url).check().is_ok(), "{url}");
        }
    }

    #[test]
    fn the_callback_hands_libgit2_the_token_as_user_and_password() {
        let a = auth(Some("t0ken"), None);
        let mut callback = credentials(&a);
        let cred = callback(
            "https://git.example.com/fleet.git",
            None,
            CredentialType::USER_PASS_PLAINTEXT,
        )
        .expect("a credential");
        assert_eq!(
            cred.credtype(),
            CredentialType::USER_PASS_PLAINTEXT.bits(),
            "user and password"
        );
        let again = callback(
            "https://git.example.com/fleet.git",
            None,
            CredentialType::USER_PASS_PLAINTEXT,
        );
        let message = again.err().expect("no second offer").message().to_owned();
        assert_eq!(message, "the remote refused the credentials");
    }

    #[test]
    fn no_token_or_a_clear_text_remote_gets_no_password() {
        let allowed = CredentialType::USER_PASS_PLAINTEXT;
        let none = auth(None, None);
        assert_eq!(
            next_offer(&none, "https://h/r", None, allowed, &mut Offered::default()),
            None
        );
        let a = auth(Some("t0ken"), None);
        for url in ["http://git.example.com/r", "git://h/r", "ftp://h/r"] {
            assert_eq!(
                next_offer(&a, url, None, allowed, &mut Offered::default()),
                None,
                "{url}"
            );
        }
        for url in [
            "http://127.0.0.1:8080/r",
            "http://[::1]/r",
            "http://localhost/r",
        ] {
            assert!(
                next_offer(&a, url, None, allowed, &mut Offered::default()).is_some(),
                "{url}"
            );
        }
    }

    #[test]
    fn ssh_takes_the_key_file_when_set_and_the_agent_otherwise() {
        let url = "ssh://git@git.example.com/fleet.git";
        let allowed = CredentialType::SSH_KEY | CredentialType::USERNAME;
        let mut offered = Offered::default();
        let keyed = auth(None, Some("/keys/deploy"));
        assert_eq!(
            next_offer(&keyed, url, None, allowed, &mut offered),
            Some(Offer::Username(SSH_USERNAME.into()))
        );
        assert_eq!(
            next_offer(&keyed, url, Some("deploy"), allowed, &mut offered),
            Some(Offer::SshKey {
                username: "deploy".into(),
                key: "/keys/deploy".into()
            })
        );
        assert_eq!(next_offer(&keyed, url, None, allowed, &mut offered), None);
        assert_eq!(
            next_offer(
                &auth(None, None),
                url,
                Some("git"),
                CredentialType::SSH_KEY,
                &mut Offered::default()
            ),
            Some(Offer::SshAgent {
                username: "git".into()
            })
        );
    }

    #[test]
    fn locations_show_ref_and_path_but_never_a_password() {
        let src = |url: &str, r: Option<&str>, p: Option<&str>| GitSource {
            url: url.into(),
            reference: r.map(str::to_owned),
            path: p.map(str::to_owned),
        };
        assert_eq!(src("file:///r", None, None).location(), "file:///r");
        assert_eq!(
            src("file:///r", Some("v1"), Some("/fleet/")).location(),
            "file:///r#v1:fleet"
        );
        assert_eq!(
            src("https://h/r", None, Some("./a//b")).location(),
            "https://h/r#HEAD:a/b"
        );
        assert_eq!(
            src("https://bot:s3cret@h/r.git", None, None).location(),
            "https://(sensitive)@h/r.git"
        );
        assert_eq!(
            src("https://ghp_t0ken@h/r.git", Some("main"), None).location(),
            "https://(sensitive)@h/r.git#main"
        );
        assert_eq!(
            src("git@h:org/r.git", Some("main"), None).location(),
            "git@h:org/r.git#main"
        );
    }

    #[test]
    fn libgit2_messages_lose_the_credentials_of_urls_they_quote() {
        let e = git2::Error::new(
            git2::ErrorCode::Auth,
            git2::ErrorClass::Http,
            "too many redirects or authentication replays for https://bot:t0ken@h/r.git",
        );
        let shown = redacted(&e);
        assert_eq!(
            shown.message(),
            "too many redirects or authentication replays for https://(sensitive)@h/r.git"
        );
        assert_eq!(
            (shown.code(), shown.class()),
            (git2::ErrorCode::Auth, git2::ErrorClass::Http),
            "the hint is chosen by code and class"
        );
    }

    #[test]
    fn local_paths_are_told_from_remotes() {
        assert_eq!(
            local_path("file:///srv/fleet.git"),
            Some("/srv/fleet.git".into())
        );
        assert_eq!(local_path("/srv/fleet.git"), Some("/srv/fleet.git".into()));
        assert_eq!(local_path("../fleet"), Some("../fleet".into()));
        assert_eq!(local_path("git@github.com:org/fleet.git"), None);
        assert_eq!(local_path("https://github.com/org/fleet"), None);
        assert_eq!(local_path("ssh://git@host/fleet"), None);
    }

    #[test]
    fn auth_debug_hides_the_token() {
        let shown = format!("{:?}", auth(Some("t0ken"), None));
        assert!(
            !shown.contains("t0ken") && shown.contains("(sensitive)"),
            "{shown}"
        );
    }
}
