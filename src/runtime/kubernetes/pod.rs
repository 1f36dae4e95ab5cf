//! The pod manifest mcpctl makes from a [`RunSpec`]: labels, the lowered
//! program, secrets as `secretKeyRef`s, resources, stdin for stdio servers
//! and the readiness gate.

use super::*;

impl KubernetesRuntime {
    /// The pod manifest for `spec`.
    pub fn pod_for(&self, spec: &RunSpec) -> Pod {
        let (image, args) = crate::runtime::lower(&spec.program, &spec.args, &self.runners);
        let labels = BTreeMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_SCOPE.to_owned(), self.scope.clone()),
            (LABEL_SERVER.to_owned(), spec.server.clone()),
            (LABEL_INSTANCE.to_owned(), spec.instance.to_string()),
            (LABEL_SPEC_HASH.to_owned(), spec.spec_hash.to_string()),
        ]);
        let http_port = spec.port.filter(|_| spec.transport.is_http());
        let annotations = http_port.map(|port| {
            BTreeMap::from([
                (ANNOTATION_PORT.to_owned(), port.to_string()),
                (
                    ANNOTATION_PATH.to_owned(),
                    spec.path.clone().unwrap_or_else(|| "/mcp".into()),
                ),
            ])
        });
        let env = spec
            .env
            .iter()
            .map(|v| match &v.value {
                EnvSource::Plain(value) => EnvVar {
                    name: v.name.clone(),
                    value: Some(value.clone()),
                    value_from: None,
                },
                // The Secret's own key, read by the kubelet: whatever value
                // a caller resolved stays out of the pod spec.
                EnvSource::Secret { name, key, .. } | EnvSource::Reference { name, key } => {
                    EnvVar {
                        name: v.name.clone(),
                        value: None,
                        value_from: Some(EnvVarSource {
                            secret_key_ref: Some(SecretKeySelector {
                                name: name.clone(),
                                key: key.clone(),
                                optional: Some(false),
                            }),
                            ..Default::default()
                        }),
                    }
                }
            })
            .collect::<Vec<_>>();
        let mut amounts = BTreeMap::new();
        if let Some(bytes) = spec.memory_bytes {
            amounts.insert("memory".to_owned(), Quantity(bytes.to_string()));
        }
        if let Some(m) = spec.millicpus {
            amounts.insert("cpu".to_owned(), Quantity(format!("{m}m")));
        }
        let resources = (!amounts.is_empty()).then(|| ResourceRequirements {
            limits: Some(amounts.clone()),
            requests: Some(amounts),
            ..Default::default()
        });
        let stdio = spec.transport == Transport::Stdio;
        Pod {
            metadata: ObjectMeta {
                name: Some(pod_name(&spec.server, &spec.instance)),
                labels: Some(labels),
                annotations,
                ..Default::default()
            },
            spec: Some(PodSpec {
                restart_policy: Some("Always".into()),
                // An MCP server has no business with the Kubernetes API: a
                // compromised one finds no token to try.
                automount_service_account_token: Some(false),
                // Service links would put every Service of the namespace into the env.
                enable_service_links: Some(false),
                readiness_gates: Some(vec![PodReadinessGate {
                    condition_type: READY_CONDITION.into(),
                }]),
                containers: vec![Container {
                    name: CONTAINER.into(),
                    image: Some(image),
                    args: (!args.is_empty()).then_some(args),
                    env: (!env.is_empty()).then_some(env),
                    ports: http_port.map(|p| {
                        vec![ContainerPort {
                            name: Some("mcp".into()),
                            container_port: i32::from(p),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        }]
                    }),
                    resources,
                    stdin: Some(stdio),
                    stdin_once: Some(false),
                    tty: Some(false),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }
}

/// Pod name: `mcpctl-<server>-<instance>`, like Docker's container name.
pub fn pod_name(server: &str, instance: &InstanceId) -> String {
    crate::runtime::unit_name(server, instance)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::{EnvVar as ModelEnvVar, Program, SecretValue};

    pub(in crate::runtime::kubernetes) fn settings() -> KubeSettings {
        KubeSettings {
            namespace: Some("ns".into()),
            scope: "default".into(),
            runners: Runners::default(),
        }
    }

    pub(in crate::runtime::kubernetes) fn spec() -> RunSpec {
        RunSpec {
            instance: InstanceId("01abc".into()),
            server: "beta".into(),
            spec_hash: SpecHash("h1".into()),
            program: Program::Image("img:1".into()),
            args: vec!["--transport".into(), "http".into()],
            transport: Transport::StreamableHttp,
            port: Some(8080),
            path: None,
            env: vec![
                ModelEnvVar {
                    name: "PLAIN".into(),
                    value: EnvSource::Plain("p".into()),
                },
                ModelEnvVar {
                    name: "TOKEN".into(),
                    value: EnvSource::Secret {
                        name: "gh".into(),
                        key: "token".into(),
                        value: SecretValue::new("s3cr3t-value".into()),
                    },
                },
            ],
            memory_bytes: Some(64 * 1024 * 1024),
            millicpus: Some(250),
        }
    }

    #[tokio::test]
    async fn the_pod_spec_references_secrets_and_never_holds_their_value() {
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:1".parse().expect("uri"),
        ))
        .expect("client");
        let rt = KubernetesRuntime::new(client, settings(), Reach::ApiProxy);
        let pod = rt.pod_for(&spec());
        let text = serde_json::to_string(&pod).expect("json");
        assert!(!text.contains("s3cr3t-value"), "{text}");
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        let env = c.env.as_ref().expect("env");
        let token = env.iter().find(|e| e.name == "TOKEN").expect("TOKEN");
        let r = token
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secretKeyRef");
        assert_eq!((r.name.as_str(), r.key.as_str()), ("gh", "token"));
        let res = c.resources.as_ref().expect("resources");
        assert_eq!(res.limits, res.requests);
        assert_eq!(res.limits.as_ref().expect("limits")["cpu"].0, "250m");
        assert_eq!(res.limits.as_ref().expect("limits")["memory"].0, "67108864");
        let gates = pod.spec.as_ref().and_then(|s| s.readiness_gates.clone());
        assert_eq!(gates.expect("gates")[0].condition_type, READY_CONDITION);
        assert_eq!(c.stdin, Some(false), "an HTTP server needs no stdin");
        assert_eq!(
            pod.spec
                .as_ref()
                .and_then(|s| s.automount_service_account_token),
            Some(false),
            "no API token in a fleet pod"
        );
        assert_eq!(
            c.args.as_deref(),
            Some(&["--transport".to_owned(), "http".to_owned()][..])
        );
        let mut stdio = spec();
        stdio.transport = Transport::Stdio;
        let pod = rt.pod_for(&stdio);
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        assert_eq!((c.stdin, c.stdin_once), (Some(true), Some(false)));
        assert!(pod.metadata.annotations.is_none());
    }
}
