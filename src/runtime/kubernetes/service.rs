//! The Service of an HTTP server: one per server, selecting its pods by
//! label, so clients in the cluster reach only instances whose readiness
//! gate says they speak MCP. Made with a server's first pod, deleted with
//! its last, under a per-server lock.

use super::*;

impl KubernetesRuntime {
    /// The Service of `server`: `mcpctl-<server>` in the default scope;
    /// in any other, `mcpctl-<scope>-<server>-<digest>`, the digest of
    /// scope and server together, so two pairs that join to the same text
    /// (`a` + `b-c`, `a-b` + `c`) still differ. A Service name is a DNS
    /// label (63 characters, lowercase letters, digits and `-`); a longer
    /// name keeps its start and the digest, and a scope's other characters
    /// (a label value may hold `_`, `.` and capitals) become `-`.
    pub fn service_name(&self, server: &str) -> String {
        service_name(&self.scope, server)
    }

    pub(super) fn service_lock(&self, server: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.service_locks.lock() {
            Ok(mut locks) => {
                // Locks nobody holds are dropped, so the map is bounded by
                // the calls in flight, not by every server ever seen.
                locks.retain(|_, l| Arc::strong_count(l) > 1);
                locks.entry(server.to_owned()).or_default().clone()
            }
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
        let ports = service.spec.as_ref().and_then(|s| s.ports.clone());
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
                Err(e) if api_code(&e) == Some(409) => {}
                Err(e) => return Err(op_error("create service", &name, &e)),
            }
            // Made by an earlier create, or by someone else: only ours is
            // touched. Its port follows the spec's, which a changed port
            // rolls, so the ports are made to match.
            let existing = match self.services().get_opt(&name).await {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => return Err(op_error("read service", &name, &e)),
            };
            if !self.owns(&existing.metadata, &spec.server) {
                return Err(not_ours(
                    "create service",
                    "Service",
                    &name,
                    &self.scope,
                    &spec.server,
                ));
            }
            // The version read is a precondition: a Service replaced since
            // is refused (409) rather than patched blind.
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": existing.metadata.resource_version},
                "spec": {"ports": ports},
            });
            match self
                .services()
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if matches!(api_code(&e), Some(404 | 409)) => last = Some(e),
                Err(e) => return Err(op_error("update service", &name, &e)),
            }
        }
        Err(match last {
            Some(e) => op_error("update service", &name, &e),
            None => unavailable("the service kept vanishing"),
        })
    }

    /// Notes this scope's Services that no pod among `pods` (this scope's,
    /// just listed) needs: their server has no live HTTP pod (it turned to
    /// stdio, or its pods went out of band), or they carry a name this
    /// version does not give their server. One list call.
    pub(super) async fn find_orphans(&self, pods: &[Pod]) -> Result<(), RuntimeError> {
        let needed: std::collections::HashSet<&str> = pods
            .iter()
            .filter(|p| needs_service(p))
            .filter_map(|p| p.metadata.labels.as_ref()?.get(LABEL_SERVER))
            .map(String::as_str)
            .collect();
        let services = self
            .services()
            .list_metadata(&ListParams::default().labels(&self.selector()))
            .await
            .map_err(unavailable)?;
        let orphans = services
            .items
            .iter()
            .filter_map(|s| {
                let name = s.metadata.name.clone()?;
                let server = s.metadata.labels.as_ref()?.get(LABEL_SERVER)?.clone();
                let orphan =
                    !needed.contains(server.as_str()) || name != self.service_name(&server);
                orphan.then_some((name, server))
            })
            .collect();
        if let Ok(mut o) = self.orphans.lock() {
            *o = orphans;
        }
        Ok(())
    }

    /// Deletes the Services [`Self::find_orphans`] noted, each after
    /// checking again, under its server's lock, that no pod needs it (a
    /// start may have begun since). Failures only log: the next look finds
    /// them again.
    pub(super) async fn prune_orphans(&self) {
        let orphans = match self.orphans.lock() {
            Ok(mut o) => std::mem::take(&mut *o),
            Err(_) => return,
        };
        for (name, server) in orphans {
            let lock = self.service_lock(&server);
            let _held = lock.lock().await;
            let result = if name == self.service_name(&server) {
                self.drop_service_if_unused(&server).await
            } else {
                self.delete_service(&name, &server).await
            };
            match result {
                Ok(()) => {
                    tracing::info!(service = %name, server = %server, "pruned a Service no pod needs")
                }
                Err(e) => {
                    tracing::warn!(service = %name, error = %e, "cannot prune a Service no pod needs")
                }
            }
        }
    }

    /// Deletes `server`'s Service once no pod of it needs it.
    pub(super) async fn drop_service_if_unused(&self, server: &str) -> Result<(), RuntimeError> {
        let selector = format!("{},{LABEL_SERVER}={server}", self.selector());
        let left = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| op_error("list pods", server, &e))?;
        if left.items.iter().any(needs_service) {
            return Ok(());
        }
        let name = self.service_name(server);
        self.delete_service(&name, server).await
    }

    /// Deletes the Service `name` of `server` if it is ours; one that is
    /// gone already is fine, and one that is someone else's is an error.
    pub(super) async fn delete_service(
        &self,
        name: &str,
        server: &str,
    ) -> Result<(), RuntimeError> {
        let existing = match self.services().get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(()),
            Err(e) => return Err(op_error("read service", name, &e)),
        };
        if !self.owns(&existing.metadata, server) {
            return Err(not_ours(
                "delete service",
                "Service",
                name,
                &self.scope,
                server,
            ));
        }
        // The uid read is a precondition: a Service made anew since is not
        // the one that was checked.
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: existing.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.services().delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(op_error("delete service", name, &e)),
        }
    }
}

/// Whether a pod needs its server's Service: it is not being deleted, and
/// serves HTTP (it carries the port annotation).
fn needs_service(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_PORT))
}

/// `c` as it stands in an object name: lowercased, and `-` for anything a
/// DNS label may not hold (a scope's `_` and `.`, say).
pub(super) fn dns_char(c: char) -> char {
    match c.to_ascii_lowercase() {
        c @ ('a'..='z' | '0'..='9' | '-') => c,
        _ => '-',
    }
}

/// [`KubernetesRuntime::service_name`], for a scope and server.
pub fn service_name(scope: &str, server: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = || {
        let mut h = Sha256::new();
        // A separator no scope or server holds keeps the pair unambiguous.
        h.update(scope.as_bytes());
        h.update(b"/");
        h.update(server.as_bytes());
        hex::encode(&h.finalize()[..4])
    };
    let plain = format!("mcpctl-{server}");
    if scope == "default" && plain.len() <= 63 {
        return plain;
    }
    let head: String = if scope == "default" {
        plain
    } else {
        format!("mcpctl-{scope}-{server}")
    }
    .chars()
    .map(dns_char)
    .take(63 - 9)
    .collect();
    format!("{}-{}", head.trim_end_matches('-'), digest())
}

#[cfg(test)]
mod tests {
    use super::service_name;

    fn dns_label(name: &str) -> bool {
        name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }

    #[test]
    fn service_names_are_dns_labels_that_no_two_scopes_share() {
        assert_eq!(service_name("default", "github"), "mcpctl-github");
        // The same text joined two ways.
        assert_ne!(service_name("a", "b-c"), service_name("a-b", "c"));
        assert_ne!(service_name("default", "a-b"), service_name("a", "b"));
        let long = "a".repeat(63);
        let names = [
            service_name("default", &long),
            service_name("default", &"a".repeat(62)),
            service_name("team-a", "github"),
            service_name("Team_A.x", "github"),
            service_name(&"s".repeat(63), &long),
            service_name(&format!("{}é", "s".repeat(46)), &long),
        ];
        for name in &names {
            assert!(dns_label(name), "{name}");
        }
        assert_eq!(names[0].len(), 63, "{}", names[0]);
        assert!(names[0].starts_with("mcpctl-aaaa"));
        assert_ne!(names[0], names[1]);
        assert!(
            names[2].starts_with("mcpctl-team-a-github-"),
            "{}",
            names[2]
        );
        assert_ne!(
            service_name("team_a", "x"),
            service_name("team.a", "x"),
            "scopes that read alike once made DNS-safe"
        );
    }
}
