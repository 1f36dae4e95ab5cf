//! The Service of an HTTP server: one per server, selecting its pods by
//! label, so clients in the cluster reach only instances whose readiness
//! gate says they speak MCP. Made with a server's first pod, deleted with
//! its last, under a per-server lock.

use super::*;

impl KubernetesRuntime {
    /// The Service of `server`: `mcpctl-<server>`, with the scope in the
    /// name unless it is the default one.
    pub fn service_name(&self, server: &str) -> String {
        let full = if self.scope == "default" {
            format!("mcpctl-{server}")
        } else {
            format!("mcpctl-{}-{server}", self.scope)
        };
        // A Service name is a DNS label: 63 characters at most. A longer
        // one keeps its start and a digest of the whole, so it stays unique.
        if full.len() <= 63 {
            return full;
        }
        use sha2::{Digest, Sha256};
        let digest = hex::encode(&Sha256::digest(full.as_bytes())[..4]);
        // The scope is the user's to choose: cut on a character boundary.
        let cut = (0..=54)
            .rev()
            .find(|&i| full.is_char_boundary(i))
            .unwrap_or(0);
        let head = full[..cut].trim_end_matches('-');
        format!("{head}-{digest}")
    }

    pub(super) fn service_lock(&self, server: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.service_locks.lock() {
            Ok(mut locks) => locks.entry(server.to_owned()).or_default().clone(),
            // A poisoned map only loses the serialisation, not correctness of
            // each call; a fresh lock keeps going.
            Err(_) => Arc::default(),
        }
    }

    /// Makes `server`'s Service unless it exists.
    pub(super) async fn ensure_service(
        &self,
        spec: &RunSpec,
        port: u16,
    ) -> Result<(), RuntimeError> {
        let name = self.service_name(&spec.server);
        let service = Service {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    (LABEL_MANAGED.to_owned(), "true".to_owned()),
                    (LABEL_SCOPE.to_owned(), self.scope.clone()),
                    (LABEL_SERVER.to_owned(), spec.server.clone()),
                ])),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([
                    (LABEL_MANAGED.to_owned(), "true".to_owned()),
                    (LABEL_SCOPE.to_owned(), self.scope.clone()),
                    (LABEL_SERVER.to_owned(), spec.server.clone()),
                ])),
                ports: Some(vec![ServicePort {
                    name: Some("mcp".into()),
                    port: i32::from(port),
                    target_port: Some(IntOrString::Int(i32::from(port))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let patch = serde_json::json!({"spec": {"ports": service.spec.as_ref().and_then(|s| s.ports.clone())}});
        // Someone else may delete it between our create and patch (a
        // `kubectl delete`); a few rounds settle it.
        let mut last = None;
        for _ in 0..3 {
            match self
                .services()
                .create(&PostParams::default(), &service)
                .await
            {
                Ok(_) => return Ok(()),
                // Made by an earlier create; its port follows the spec's,
                // which a changed port rolls, so the ports are made to match.
                Err(e) if api_code(&e) == Some(409) => match self
                    .services()
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(e) if api_code(&e) == Some(404) => last = Some(e),
                    Err(e) => return Err(op_error("update service", &name, &e)),
                },
                Err(e) => return Err(op_error("create service", &name, &e)),
            }
        }
        Err(match last {
            Some(e) => op_error("update service", &name, &e),
            None => unavailable("the service kept vanishing"),
        })
    }

    /// Deletes `server`'s Service once no pod of it is left (or leaving).
    pub(super) async fn drop_service_if_unused(&self, server: &str) -> Result<(), RuntimeError> {
        let selector = format!("{},{LABEL_SERVER}={server}", self.selector());
        let left = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| op_error("list pods", server, &e))?;
        if left
            .items
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_none())
        {
            return Ok(());
        }
        let name = self.service_name(server);
        match self
            .services()
            .delete(&name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(op_error("delete service", &name, &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pod::tests::settings;
    use super::*;

    #[tokio::test]
    async fn service_names_are_dns_labels() {
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:1".parse().expect("uri"),
        ))
        .expect("client");
        let rt = KubernetesRuntime::new(client, settings(), Reach::ApiProxy);
        assert_eq!(rt.service_name("github"), "mcpctl-github");
        let long = "a".repeat(63);
        let name = rt.service_name(&long);
        assert_eq!(name.len(), 63, "{name}");
        assert!(name.starts_with("mcpctl-aaaa"));
        assert_ne!(name, rt.service_name(&"a".repeat(62)));
        // A multi-byte character across the cut does not panic.
        let scope = format!("{}é", "s".repeat(46));
        let settings = KubeSettings {
            scope,
            ..settings()
        };
        let odd = KubernetesRuntime::new(rt.client.clone(), settings, Reach::ApiProxy);
        assert!(odd.service_name(&long).len() <= 63);
    }
}
