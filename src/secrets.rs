//! Secret references, resolved at plan time through a chain of providers
//! (design §2): a file `DIR/NAME/KEY`, then the environment variable
//! `MCPCTL_SECRET_<NAME>_<KEY>`. On a runtime with secrets of its own
//! (Kubernetes), env secrets are not read at all: they stay references,
//! which the runtime hands to its own store (a `secretKeyRef`), and only the
//! headers mcpctl itself sends are resolved. Values are held in [`SecretValue`], which
//! never prints its content; everything that leaves this module for output or
//! state is a keyed digest.

pub use crate::model::SecretValue;
use crate::spec::{EnvValue, HeaderValue, SecretDigests, SecretRef, Server, Workload};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A secret that no provider could supply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[error("server {server}: {used_by}: secret {secret} not found (looked in {})", tried.join(", "))]
#[diagnostic(
    code(mcpctl::secret::missing),
    help("create the file or set the environment variable, or fix the secretRef in {origin}")
)]
pub struct MissingSecret {
    pub server: String,
    /// What wanted it: `env GITHUB_TOKEN`, `header Authorization`.
    pub used_by: UsedBy,
    pub secret: SecretRef,
    /// The places looked at, in order.
    pub tried: Vec<String>,
    /// Where the server was declared, `file:line:column`.
    pub origin: String,
}

/// Where a server uses a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsedBy {
    Env(String),
    Header(String),
}

impl std::fmt::Display for UsedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UsedBy::Env(var) => write!(f, "env {var}"),
            UsedBy::Header(name) => write!(f, "header {name}"),
        }
    }
}

/// Every secret `server` uses, with where: env vars, then headers.
fn uses(server: &Server) -> impl Iterator<Item = (UsedBy, &SecretRef)> {
    let env = server.spec.env.iter().filter_map(|(var, v)| match v {
        EnvValue::Secret(r) => Some((UsedBy::Env(var.clone()), r)),
        EnvValue::Plain(_) => None,
    });
    let headers = match &server.spec.workload {
        Workload::External(e) => Some(e.headers.iter().filter_map(|(name, v)| match v {
            HeaderValue::Secret { secret_ref, .. } => {
                Some((UsedBy::Header(name.clone()), secret_ref))
            }
            HeaderValue::Plain(_) => None,
        })),
        _ => None,
    };
    env.chain(headers.into_iter().flatten())
}

/// Errors resolving secrets: all the missing ones, so a user fixes them in one go.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{} secret reference(s) could not be resolved; nothing was planned", missing.len())]
pub struct SecretErrors {
    #[related]
    pub missing: Vec<MissingSecret>,
}

/// The provider chain.
pub struct Resolver<E = fn(&str) -> Option<String>> {
    dir: Option<PathBuf>,
    env: E,
    native_env: bool,
}

impl Resolver {
    /// Files under `dir` (if any), then the process environment.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Resolver {
            dir,
            env: |k| std::env::var(k).ok(),
            native_env: false,
        }
    }
}

impl<E: Fn(&str) -> Option<String>> Resolver<E> {
    /// With an injected environment, for tests.
    pub fn with_env(dir: Option<PathBuf>, env: E) -> Self {
        Resolver {
            dir,
            env,
            native_env: false,
        }
    }

    /// Leaves env secrets as references for the runtime's own secret store
    /// (Kubernetes `secretKeyRef`), reading none of their values. Header
    /// secrets, which mcpctl sends itself, are still resolved.
    pub fn native_env_refs(mut self, native: bool) -> Self {
        self.native_env = native;
        self
    }

    /// The environment variable that supplies `r`.
    pub fn env_name(r: &SecretRef) -> String {
        let clean = |s: &str| s.to_ascii_uppercase().replace(['-', '.'], "_");
        format!("MCPCTL_SECRET_{}_{}", clean(&r.name), clean(&r.key))
    }

    fn lookup(&self, r: &SecretRef) -> Result<SecretValue, Vec<String>> {
        let mut tried = Vec::new();
        if let Some(dir) = &self.dir {
            let path = dir.join(&r.name).join(&r.key);
            // A ref like `../x` must not escape the secrets directory.
            if is_plain_component(&r.name)
                && is_plain_component(&r.key)
                && let Ok(v) = std::fs::read_to_string(&path)
            {
                // Mounted secrets often end in a newline the author never meant.
                return Ok(SecretValue::new(
                    v.strip_suffix('\n').unwrap_or(&v).to_owned(),
                ));
            }
            tried.push(format!("file {}", path.display()));
        }
        let var = Self::env_name(r);
        if let Some(v) = (self.env)(&var) {
            return Ok(SecretValue::new(v));
        }
        tried.push(format!("env {var}"));
        Err(tried)
    }

    /// Resolves every secret of every server. All failures are reported at once.
    pub fn resolve(&self, servers: &[Server]) -> Result<Secrets, SecretErrors> {
        let mut values = BTreeMap::new();
        let mut native = std::collections::BTreeSet::new();
        let mut missing = Vec::new();
        for server in servers {
            for (used_by, r) in uses(server) {
                if self.native_env && matches!(used_by, UsedBy::Env(_)) {
                    native.insert(r.clone());
                    continue;
                }
                if values.contains_key(r) {
                    continue;
                }
                match self.lookup(r) {
                    Ok(v) => {
                        values.insert(r.clone(), v);
                    }
                    Err(tried) => missing.push(MissingSecret {
                        server: server.name.clone(),
                        used_by,
                        secret: r.clone(),
                        tried,
                        origin: server.origin.to_string(),
                    }),
                }
            }
        }
        if missing.is_empty() {
            Ok(Secrets { values, native })
        } else {
            Err(SecretErrors { missing })
        }
    }
}

fn is_plain_component(s: &str) -> bool {
    let p = Path::new(s);
    !s.is_empty() && p.components().count() == 1 && !matches!(s, "." | "..") && !s.contains('/')
}

/// Resolved secret values.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: BTreeMap<SecretRef, SecretValue>,
    /// Env secrets left to the runtime's own store, values unread.
    native: std::collections::BTreeSet<SecretRef>,
}

impl Secrets {
    /// Whether `r` is left to the runtime (a Kubernetes `secretKeyRef`).
    pub fn is_native(&self, r: &SecretRef) -> bool {
        self.native.contains(r)
    }

    pub fn get(&self, r: &SecretRef) -> Option<&SecretValue> {
        self.values.get(r)
    }

    /// Whether any value was read: without one, no digest is made and no
    /// key is needed.
    pub fn has_values(&self) -> bool {
        !self.values.is_empty()
    }

    /// The values of every secret `server` uses: what must never appear in
    /// text that server supplies (see `model::text`).
    pub fn values_of(&self, server: &Server) -> Vec<&str> {
        uses(server)
            .filter_map(|(_, r)| self.get(r).map(SecretValue::expose))
            .collect()
    }

    /// HMAC-SHA256 of each value under `key`, shortened to 16 hex digits: enough
    /// to notice a rotation, useless for guessing the value without the key.
    pub fn digests(&self, key: &[u8; 32]) -> SecretDigests {
        self.values
            .iter()
            .map(|(r, v)| {
                // HMAC accepts keys of any length, so this cannot fail.
                let mut mac =
                    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac takes any key length");
                mac.update(v.expose().as_bytes());
                let out = mac.finalize().into_bytes();
                (r.clone(), hex::encode(&out[..8]))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Origin, Readiness, Resources, ServerSpec, Transport, Workload};

    fn server(env: &[(&str, &str, &str)]) -> Server {
        Server {
            name: "github".into(),
            labels: Default::default(),
            spec: ServerSpec {
                replicas: 1,
                workload: Workload::Image("img".into()),
                command: vec![],
                transport: Transport::Stdio,
                port: None,
                path: None,
                env: env
                    .iter()
                    .map(|(var, name, key)| {
                        (
                            var.to_string(),
                            EnvValue::Secret(SecretRef {
                                name: name.to_string(),
                                key: key.to_string(),
                            }),
                        )
                    })
                    .collect(),
                resources: Resources::default(),
                readiness: Readiness::default(),
            },
            origin: Origin {
                file: "fleet/github.yaml".into(),
                line: 4,
                column: 9,
                at: None,
            },
        }
    }

    #[test]
    fn files_win_over_env_and_trailing_newline_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("github")).unwrap();
        std::fs::write(dir.path().join("github/token"), "from-file\n").unwrap();
        let r = Resolver::with_env(Some(dir.path().into()), |_| Some("from-env".to_owned()));
        let s = r
            .resolve(&[server(&[("GITHUB_TOKEN", "github", "token")])])
            .unwrap();
        let key = SecretRef {
            name: "github".into(),
            key: "token".into(),
        };
        assert_eq!(s.get(&key).unwrap().expose(), "from-file");
    }

    #[test]
    fn env_names_are_upper_cased_with_dashes_and_dots_replaced() {
        let r = SecretRef {
            name: "my-app.prod".into(),
            key: "api.key".into(),
        };
        assert_eq!(
            Resolver::<fn(&str) -> Option<String>>::env_name(&r),
            "MCPCTL_SECRET_MY_APP_PROD_API_KEY"
        );
        let res = Resolver::with_env(None, |k| {
            (k == "MCPCTL_SECRET_MY_APP_PROD_API_KEY").then(|| "v".to_owned())
        });
        let s = res
            .resolve(&[server(&[("X", "my-app.prod", "api.key")])])
            .unwrap();
        assert_eq!(s.get(&r).unwrap().expose(), "v");
    }

    #[test]
    fn missing_secrets_name_server_var_and_secret_and_never_the_value() {
        let res = Resolver::with_env(Some("/nonexistent".into()), |_| None);
        let err = res
            .resolve(&[server(&[
                ("GITHUB_TOKEN", "github", "token"),
                ("OTHER", "x", "y"),
            ])])
            .unwrap_err();
        assert_eq!(err.missing.len(), 2);
        let msg = err.missing[0].to_string();
        assert!(msg.contains("server github"), "{msg}");
        assert!(msg.contains("env GITHUB_TOKEN"), "{msg}");
        assert!(msg.contains("secret github/token"), "{msg}");
        assert!(msg.contains("MCPCTL_SECRET_GITHUB_TOKEN"), "{msg}");
    }

    /// An external server with `Authorization: Bearer <linear/token>` and a
    /// plain `X-Team`.
    fn linear() -> Server {
        let mut s = server(&[]);
        s.name = "linear".into();
        s.spec.transport = Transport::StreamableHttp;
        s.spec.workload = Workload::External(crate::spec::External {
            url: "https://mcp.linear.app/mcp".into(),
            headers: BTreeMap::from([
                (
                    "Authorization".to_owned(),
                    HeaderValue::Secret {
                        secret_ref: SecretRef {
                            name: "linear".into(),
                            key: "token".into(),
                        },
                        prefix: "Bearer ".into(),
                    },
                ),
                ("X-Team".to_owned(), HeaderValue::Plain("platform".into())),
            ]),
        });
        s
    }

    #[test]
    fn header_secrets_resolve_through_the_same_chain_and_are_redacted_like_env() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("linear")).unwrap();
        std::fs::write(dir.path().join("linear/token"), "lin_api_s3cret\n").unwrap();
        let res = Resolver::with_env(Some(dir.path().into()), |_| None);
        let secrets = res.resolve(&[linear()]).unwrap();
        let r = SecretRef {
            name: "linear".into(),
            key: "token".into(),
        };
        assert_eq!(secrets.get(&r).unwrap().expose(), "lin_api_s3cret");
        // Text the server supplies is redacted of it, and only of secrets.
        assert_eq!(secrets.values_of(&linear()), ["lin_api_s3cret"]);

        let digests = secrets.digests(&[7; 32]);
        let spec = &linear().spec;
        let canonical = crate::spec::Canonical::of(spec, &digests, &Default::default());
        assert!(
            canonical
                .yaml
                .contains(&format!("(sensitive {})", digests[&r])),
            "{}",
            canonical.yaml
        );
        assert!(!canonical.yaml.contains("s3cret"), "{}", canonical.yaml);
        // A rotation is a new spec hash.
        std::fs::write(dir.path().join("linear/token"), "lin_api_rotated").unwrap();
        let rotated = res.resolve(&[linear()]).unwrap().digests(&[7; 32]);
        let after = crate::spec::Canonical::of(spec, &rotated, &Default::default());
        assert_ne!(after.hash, canonical.hash);
    }

    #[test]
    fn a_missing_header_secret_names_the_header() {
        let res = Resolver::with_env(None, |_| None);
        let err = res.resolve(&[linear()]).unwrap_err();
        assert_eq!(err.missing.len(), 1);
        assert_eq!(
            err.missing[0].to_string(),
            "server linear: header Authorization: secret linear/token not found \
             (looked in env MCPCTL_SECRET_LINEAR_TOKEN)"
        );
        assert_eq!(
            err.missing[0].used_by,
            UsedBy::Header("Authorization".into())
        );
    }

    #[test]
    fn refs_cannot_escape_the_secrets_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("outside"), "leak").unwrap();
        let inner = dir.path().join("secrets");
        std::fs::create_dir_all(&inner).unwrap();
        let res = Resolver::with_env(Some(inner), |_| None);
        assert!(res.resolve(&[server(&[("X", "..", "outside")])]).is_err());
    }

    #[test]
    fn native_env_refs_read_no_env_secret_but_still_resolve_headers() {
        use crate::spec::{External, HeaderValue};
        let mut srv = server(&[("GITHUB_TOKEN", "github", "token")]);
        srv.spec.workload = Workload::External(External {
            url: "https://example.com/mcp".into(),
            headers: BTreeMap::from([(
                "Authorization".to_owned(),
                HeaderValue::Secret {
                    secret_ref: SecretRef {
                        name: "linear".into(),
                        key: "token".into(),
                    },
                    prefix: "Bearer ".into(),
                },
            )]),
        });
        let asked = std::cell::RefCell::new(Vec::new());
        let r = Resolver::with_env(None, |k: &str| {
            asked.borrow_mut().push(k.to_owned());
            Some("v".to_owned())
        })
        .native_env_refs(true);
        let s = r.resolve(&[srv]).expect("resolves");
        let github = SecretRef {
            name: "github".into(),
            key: "token".into(),
        };
        assert!(s.is_native(&github));
        assert!(s.get(&github).is_none(), "an env secret's value was read");
        assert!(
            s.get(&SecretRef {
                name: "linear".into(),
                key: "token".into()
            })
            .is_some()
        );
        assert_eq!(*asked.borrow(), ["MCPCTL_SECRET_LINEAR_TOKEN"]);
        assert!(!s.digests(&[1; 32]).contains_key(&github));
    }

    #[test]
    fn values_are_redacted_and_digests_are_keyed() {
        let v = SecretValue::new("hunter2".into());
        assert_eq!(format!("{v:?} {v}"), "(sensitive) (sensitive)");
        let r = SecretRef {
            name: "a".into(),
            key: "b".into(),
        };
        let s = Secrets {
            values: BTreeMap::from([(r.clone(), v)]),
            native: Default::default(),
        };
        // The reference HMAC itself, against RFC 4231 test case 1.
        assert_eq!(
            hmac_sha256_prefix(&[0x0b; 20], "Hi There"),
            "b0344c61d8db3853"
        );

        let d1 = s.digests(&[1; 32]);
        let d2 = s.digests(&[2; 32]);
        assert_eq!(d1[&r], hmac_sha256_prefix(&[1; 32], "hunter2"));
        assert_eq!(d2[&r], hmac_sha256_prefix(&[2; 32], "hunter2"));
        assert_ne!(d1[&r], d2[&r]);

        // A rotation must show, under the same key.
        let rotated = Secrets {
            values: BTreeMap::from([(r.clone(), SecretValue::new("hunter3".into()))]),
            native: Default::default(),
        };
        assert_ne!(rotated.digests(&[1; 32])[&r], d1[&r]);
    }

    /// HMAC-SHA256 (RFC 2104) built from plain SHA-256 rather than the `hmac`
    /// crate, so a misuse of that crate in `digests` cannot hide here; the
    /// first 8 bytes, in hex. Keys up to one block (64 bytes) only.
    fn hmac_sha256_prefix(key: &[u8], message: &str) -> String {
        use sha2::Digest;
        let pad = |byte: u8| -> Vec<u8> {
            let mut block = [0u8; 64];
            block[..key.len()].copy_from_slice(key);
            block.iter().map(|b| b ^ byte).collect()
        };
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(message.as_bytes())
            .finalize();
        let outer = Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize();
        hex::encode(&outer[..8])
    }
}
