//! The canonical form of a server's spec and its hash.
//!
//! The canonical form is YAML with a fixed field order, holding exactly the
//! fields that change what runs (design §2): image, package (with its runner image), external, command,
//! transport, port, path, env and resources. Replicas, labels and readiness
//! are left out, so changing them never replaces an instance. Secret values
//! never appear: a secret contributes its reference and a keyed digest, so a
//! rotated secret changes the hash while the text stays safe to print.

use super::model::{EnvValue, External, Package, SecretRef, ServerSpec, Workload};
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
    external: Option<&'a External>,
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
        /// `(sensitive <digest>)`, or `(sensitive)` when the value is never seen.
        value: String,
    },
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
            Workload::External(e) => (None, None, Some(e)),
        };
        let env = spec
            .env
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    EnvValue::Plain(s) => FormEnv::Plain(s),
                    EnvValue::Secret(r) => FormEnv::Secret {
                        secret_ref: r,
                        value: match digests.get(r) {
                            Some(d) => format!("(sensitive {d})"),
                            None => "(sensitive)".to_owned(),
                        },
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
