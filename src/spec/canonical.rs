//! The canonical form of a server's spec and its hash.
//!
//! The canonical form is YAML with a fixed field order, holding exactly the
//! fields that change what runs (design §2): image, package (with its runner image), external
//! (URL and headers), command, transport, port, path, env and resources.
//! Replicas, labels and readiness are left out, so changing them never
//! replaces an instance. Secret values never appear: a secret (in env or in
//! a header) contributes its reference and a keyed digest, so a rotated
//! secret changes the hash while the text stays safe to print.

use super::model::{EnvValue, HeaderValue, Package, SecretRef, ServerSpec, Workload};
use crate::model::{Runners, SpecHash};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Keyed digests of secret values, by reference (computed by `secrets`). A
/// reference missing here is one whose value mcpctl never sees, such as a
/// native Kubernetes `secretKeyRef`.
pub type SecretDigests = BTreeMap<SecretRef, String>;

/// A spec's canonical YAML and the hash of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canonical {
    pub yaml: String,
    pub hash: SpecHash,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Form<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    package: Option<&'a Package>,
    /// The runner image a package runs on: changing it changes what runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    runner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    external: Option<FormExternal<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    command: &'a [String],
    transport: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<&'a str, FormEnv<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<FormResources>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum FormEnv<'a> {
    Plain(&'a str),
    Secret {
        #[serde(rename = "secretRef")]
        secret_ref: &'a SecretRef,
        /// See [`sensitive`].
        value: String,
    },
}

/// With no headers this is `{url}` alone, as before headers existed, so
/// adding the feature changed no existing hash.
#[derive(Serialize)]
struct FormExternal<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<&'a str, FormHeader<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum FormHeader<'a> {
    Plain(&'a str),
    Secret {
        #[serde(rename = "secretRef")]
        secret_ref: &'a SecretRef,
        /// Not secret, and part of what is sent: shown as written.
        #[serde(skip_serializing_if = "str::is_empty")]
        prefix: &'a str,
        value: String,
    },
}

/// `(sensitive <digest>)`, or `(sensitive)` when the value is never seen.
fn sensitive(r: &SecretRef, digests: &SecretDigests) -> String {
    match digests.get(r) {
        Some(d) => format!("(sensitive {d})"),
        None => "(sensitive)".to_owned(),
    }
}

#[derive(Serialize)]
struct FormResources {
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<String>,
}

impl Canonical {
    pub fn of(spec: &ServerSpec, digests: &SecretDigests, runners: &Runners) -> Canonical {
        let (image, package, external) = match &spec.workload {
            Workload::Image(i) => (Some(i.as_str()), None, None),
            Workload::Package(p) => (None, Some(p), None),
            Workload::External(e) => (
                None,
                None,
                Some(FormExternal {
                    url: &e.url,
                    headers: e
                        .headers
                        .iter()
                        .map(|(name, v)| {
                            let v = match v {
                                HeaderValue::Plain(s) => FormHeader::Plain(s),
                                HeaderValue::Secret { secret_ref, prefix } => FormHeader::Secret {
                                    secret_ref,
                                    prefix,
                                    value: sensitive(secret_ref, digests),
                                },
                            };
                            (name.as_str(), v)
                        })
                        .collect(),
                }),
            ),
        };
        let env = spec
            .env
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    EnvValue::Plain(s) => FormEnv::Plain(s),
                    EnvValue::Secret(r) => FormEnv::Secret {
                        secret_ref: r,
                        value: sensitive(r, digests),
                    },
                };
                (k.as_str(), v)
            })
            .collect();
        let resources = (spec.resources.memory_bytes.is_some()
            || spec.resources.millicpus.is_some())
        .then(|| FormResources {
            memory: spec.resources.memory_bytes.map(memory_quantity),
            cpus: spec.resources.millicpus.map(cpus_quantity),
        });
        let form = Form {
            image,
            package,
            runner: match &spec.workload {
                Workload::Package(p) => Some(runners.image(p.runtime)),
                _ => None,
            },
            external,
            command: &spec.command,
            transport: spec.transport.as_str(),
            port: spec.port,
            path: spec.path.as_deref(),
            env,
            resources,
        };
        // Serialising plain strings, maps and numbers cannot fail; an error
        // here would be a bug in this module, so it must not be swallowed.
        let yaml = serde_saphyr::to_string(&form).expect("canonical form serialises");
        let digest = Sha256::digest(yaml.as_bytes());
        let hash = SpecHash(hex::encode(&digest[..8]));
        Canonical { yaml, hash }
    }
}

/// `536870912` → `512Mi`: one spelling per byte count, so `512Mi` and
/// `536870912` hash alike.
fn memory_quantity(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

fn cpus_quantity(millicpus: u32) -> String {
    if millicpus.is_multiple_of(1000) {
        (millicpus / 1000).to_string()
    } else {
        let s = format!("{}.{:03}", millicpus / 1000, millicpus % 1000);
        s.trim_end_matches('0').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::{Readiness, Resources, Transport};

    fn spec() -> ServerSpec {
        ServerSpec {
            replicas: 1,
            workload: Workload::Image("ghcr.io/example/srv:1".into()),
            command: vec![],
            transport: Transport::StreamableHttp,
            port: Some(8080),
            path: Some("/mcp".into()),
            env: BTreeMap::new(),
            resources: Resources::default(),
            readiness: Readiness::default(),
        }
    }

    #[test]
    fn replicas_and_readiness_do_not_change_the_hash() {
        let a = spec();
        let mut b = spec();
        b.replicas = 5;
        b.readiness.timeout = std::time::Duration::from_secs(1);
        assert_eq!(
            Canonical::of(&a, &BTreeMap::new(), &Runners::default()),
            Canonical::of(&b, &BTreeMap::new(), &Runners::default())
        );
    }

    #[test]
    fn a_rotated_secret_changes_the_hash_but_not_the_plaintext() {
        let mut s = spec();
        let r = SecretRef {
            name: "gh".into(),
            key: "token".into(),
        };
        s.env.insert("TOKEN".into(), EnvValue::Secret(r.clone()));
        let a = Canonical::of(
            &s,
            &BTreeMap::from([(r.clone(), "aaaa".to_owned())]),
            &Runners::default(),
        );
        let b = Canonical::of(
            &s,
            &BTreeMap::from([(r, "bbbb".to_owned())]),
            &Runners::default(),
        );
        assert_ne!(a.hash, b.hash);
        assert!(a.yaml.contains("(sensitive aaaa)"), "{}", a.yaml);
    }

    #[test]
    fn a_packages_runner_image_is_part_of_its_hash_and_text() {
        let mut s = spec();
        s.workload = Workload::Package(Package {
            name: "mcp-server-fetch".into(),
            runtime: crate::model::PackageRuntime::Python,
            version: Some("1.0".into()),
        });
        let other = Runners {
            python: "registry.example/py:2".into(),
            ..Runners::default()
        };
        let a = Canonical::of(&s, &BTreeMap::new(), &Runners::default());
        let b = Canonical::of(&s, &BTreeMap::new(), &other);
        assert_ne!(a.hash, b.hash);
        assert!(
            a.yaml.contains("runner: mcpctl/python-runner"),
            "{}",
            a.yaml
        );
        assert!(
            b.yaml.contains("runner: registry.example/py:2"),
            "{}",
            b.yaml
        );
        // An image server has no runner: runner settings never roll it.
        let image = spec();
        assert_eq!(
            Canonical::of(&image, &BTreeMap::new(), &Runners::default()),
            Canonical::of(&image, &BTreeMap::new(), &other)
        );
    }

    fn external(headers: &[(&str, HeaderValue)]) -> ServerSpec {
        ServerSpec {
            workload: Workload::External(crate::spec::model::External {
                url: "https://mcp.linear.app/mcp".into(),
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.clone()))
                    .collect(),
            }),
            port: None,
            path: None,
            ..spec()
        }
    }

    fn linear_token() -> SecretRef {
        SecretRef {
            name: "linear".into(),
            key: "token".into(),
        }
    }

    /// The hash is of this text, so servers applied before headers existed
    /// are not replaced by the upgrade.
    #[test]
    fn an_external_server_without_headers_hashes_as_before_headers_existed() {
        let c = Canonical::of(&external(&[]), &BTreeMap::new(), &Runners::default());
        assert_eq!(
            c.yaml,
            "external:\n  url: https://mcp.linear.app/mcp\ntransport: streamable-http\n"
        );
        // SHA-256 of that text, as mcpctl before headers computed it.
        assert_eq!(c.hash.0, "5e5ba1fe06acd09c");
    }

    #[test]
    fn header_secrets_show_as_digests_and_a_rotation_changes_the_hash() {
        let s = external(&[
            (
                "Authorization",
                HeaderValue::Secret {
                    secret_ref: linear_token(),
                    prefix: "Bearer ".into(),
                },
            ),
            ("X-Team", HeaderValue::Plain("platform".into())),
        ]);
        let of = |digest: &str| {
            Canonical::of(
                &s,
                &BTreeMap::from([(linear_token(), digest.to_owned())]),
                &Runners::default(),
            )
        };
        let (a, b) = (of("aaaa"), of("bbbb"));
        assert_ne!(a.hash, b.hash);
        assert!(a.yaml.contains("value: (sensitive aaaa)"), "{}", a.yaml);
        // The prefix and plain values are not secret, and are part of what is sent.
        assert!(a.yaml.contains("prefix: \"Bearer \""), "{}", a.yaml);
        assert!(a.yaml.contains("X-Team: platform"), "{}", a.yaml);

        let mut other_prefix = s.clone();
        if let Workload::External(e) = &mut other_prefix.workload {
            e.headers.insert(
                "Authorization".into(),
                HeaderValue::Secret {
                    secret_ref: linear_token(),
                    prefix: "Token ".into(),
                },
            );
        }
        let c = Canonical::of(
            &other_prefix,
            &BTreeMap::from([(linear_token(), "aaaa".to_owned())]),
            &Runners::default(),
        );
        assert_ne!(c.hash, a.hash, "the prefix is part of what is sent");
        insta::assert_snapshot!(a.yaml);
    }

    #[test]
    fn quantities_have_one_spelling() {
        assert_eq!(memory_quantity(512 << 20), "512Mi");
        assert_eq!(memory_quantity(1 << 30), "1Gi");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(cpus_quantity(500), "0.5");
        assert_eq!(cpus_quantity(2000), "2");
        assert_eq!(cpus_quantity(1250), "1.25");
    }

    #[test]
    fn canonical_yaml_is_stable() {
        let mut s = spec();
        s.env.insert("LOG".into(), EnvValue::Plain("info".into()));
        s.resources.memory_bytes = Some(512 << 20);
        s.resources.millicpus = Some(500);
        insta::assert_snapshot!(Canonical::of(&s, &BTreeMap::new(), &Runners::default()).yaml);
    }
}
