//! The scope's applier lease and its secret-digest key, kept in the cluster
//! so that every applier of a scope sees them, whatever its state file. The
//! lease is a `coordination.k8s.io/v1` Lease, `mcpctl-lease-<scope>`: its
//! `holderIdentity` is the holder's id, the `mcpctl.io/holder` annotation
//! the whole [`Holder`], and its `resourceVersion` the compare-and-swap
//! token (a PUT carrying a stale one is refused by the API server). The key
//! is an Opaque Secret, `mcpctl-digest-key-<scope>`, holding 32 raw bytes
//! under `key`: created by the first applier that asks, read by the rest.
//! Only the primitives live here; claiming, renewing and taking over are the
//! applier's.

use super::service::dns_char;
use super::*;
use crate::model::{Holder, Lease as LeaseRecord};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use std::time::Duration;

/// The annotation that carries the holder in full, as JSON: the
/// `holderIdentity` alone could not say whom a refused applier waits for.
pub const ANNOTATION_HOLDER: &str = "mcpctl.io/holder";
/// The data key of the digest-key Secret.
const KEY: &str = "key";

/// The name of one of a scope's objects: `<prefix>-<scope>`. A scope may
/// hold capitals, `_` and `.`, which become lowercase and `-`; then the
/// name also carries a digest of the raw scope after a `.`, a character no
/// name left unchanged holds, so two scopes never share a name (`Team_A`,
/// `team.a` and `team-a` included). Leases and Secrets are named by DNS
/// subdomains (253 characters, `.` allowed), so a 63-character scope fits.
pub fn scoped_name(prefix: &str, scope: &str) -> String {
    use sha2::{Digest, Sha256};
    let safe: String = scope.chars().map(dns_char).collect();
    if safe == scope {
        return format!("{prefix}-{scope}");
    }
    let digest = hex::encode(&Sha256::digest(scope.as_bytes())[..4]);
    format!("{prefix}-{safe}.{digest}")
}

impl KubernetesRuntime {
    /// This scope's Lease: `mcpctl-lease-<scope>` (see [`scoped_name`]).
    pub fn lease_name(&self) -> String {
        scoped_name("mcpctl-lease", &self.scope)
    }

    /// This scope's digest-key Secret: `mcpctl-digest-key-<scope>`.
    pub fn digest_key_name(&self) -> String {
        scoped_name("mcpctl-digest-key", &self.scope)
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The labels of this scope's lease and key: they are no units (no
    /// server, no instance), but a selector finds them with the units.
    fn scope_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_SCOPE.to_owned(), self.scope.clone()),
        ])
    }

    /// Keeps the Lease last read or written: a renewal needs the holder,
    /// acquire time and transitions it follows, and when its version is
    /// still the one the caller names, it costs no GET.
    fn remember_lease(&self, lease: &Lease) {
        if let Ok(mut last) = self.last_lease.lock() {
            *last = Some(lease.clone());
        }
    }

    pub(super) async fn read_lease(&self) -> Result<Option<LeaseRecord>, RuntimeError> {
        let name = self.lease_name();
        match self.leases().get_opt(&name).await {
            Ok(Some(lease)) => {
                let record = record_of(&lease, &name, &self.namespace)?;
                self.remember_lease(&lease);
                Ok(Some(record))
            }
            Ok(None) => Ok(None),
            Err(e) if is_transport(&e) => Err(unavailable(e)),
            Err(e) => Err(op_error("read lease", &name, &e)),
        }
    }

    pub(super) async fn put_lease(
        &self,
        after: Option<&str>,
        holder: Option<&Holder>,
        ttl: Duration,
    ) -> Result<Option<String>, RuntimeError> {
        let name = self.lease_name();
        let Some(after) = after else {
            let lease = self.lease_object(&name, None, holder, ttl)?;
            return match self.leases().create(&PostParams::default(), &lease).await {
                Ok(made) => self.won(&made, &name).map(Some),
                // Someone made it first: this write lost.
                Err(e) if api_code(&e) == Some(409) => Ok(None),
                Err(e) if is_transport(&e) => Err(unavailable(e)),
                Err(e) => Err(op_error("create lease", &name, &e)),
            };
        };
        let cached = self
            .last_lease
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .filter(|l| l.metadata.resource_version.as_deref() == Some(after));
        let previous = match cached {
            Some(l) => l,
            None => match self.leases().get_opt(&name).await {
                Ok(Some(l)) if l.metadata.resource_version.as_deref() == Some(after) => l,
                // Written since, or gone: a PUT would be refused anyway.
                Ok(_) => return Ok(None),
                Err(e) if is_transport(&e) => return Err(unavailable(e)),
                Err(e) => return Err(op_error("read lease", &name, &e)),
            },
        };
        let lease = self.lease_object(&name, Some(&previous), holder, ttl)?;
        match self
            .leases()
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => self.won(&written, &name).map(Some),
            // 409: another writer's version came between; 404: the lease
            // was deleted since `after`. Either way `after` is not the latest.
            Err(e) if matches!(api_code(&e), Some(404 | 409)) => Ok(None),
            Err(e) if is_transport(&e) => Err(unavailable(e)),
            Err(e) => Err(op_error("update lease", &name, &e)),
        }
    }

    /// The version of a Lease this process has just written.
    fn won(&self, lease: &Lease, name: &str) -> Result<String, RuntimeError> {
        self.remember_lease(lease);
        lease
            .metadata
            .resource_version
            .clone()
            .ok_or_else(|| RuntimeError::Operation {
                op: "write lease",
                instance: name.to_owned(),
                message: "the API server answered without a resourceVersion".into(),
            })
    }

    /// The Lease to write after `previous` (`None`: a first one), keeping
    /// labels and annotations others put on it. `resourceVersion` is
    /// `previous`'s, the precondition of the PUT.
    fn lease_object(
        &self,
        name: &str,
        previous: Option<&Lease>,
        holder: Option<&Holder>,
        ttl: Duration,
    ) -> Result<Lease, RuntimeError> {
        let fail = |message: String| RuntimeError::Operation {
            op: "write lease",
            instance: name.to_owned(),
            message,
        };
        let now = micro_time(Timestamp::now()).map_err(fail)?;
        let before = previous.and_then(|p| p.spec.as_ref());
        let same_holder = holder.is_some_and(|h| {
            before.and_then(|s| s.holder_identity.as_deref()) == Some(h.id.as_str())
        });
        let transitions = before.and_then(|s| s.lease_transitions).unwrap_or(0);
        let (acquire_time, lease_transitions) = match holder {
            None => (None, transitions),
            Some(_) if same_holder => (before.and_then(|s| s.acquire_time.clone()), transitions),
            Some(_) if previous.is_none() => (Some(now.clone()), 0),
            Some(_) => (Some(now.clone()), transitions.saturating_add(1)),
        };
        let mut meta = previous.map(|p| p.metadata.clone()).unwrap_or_default();
        meta.name = Some(name.to_owned());
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .extend(self.scope_labels());
        let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
        match holder {
            Some(h) => {
                let text = serde_json::to_string(h)
                    .map_err(|e| fail(format!("cannot encode the holder: {e}")))?;
                annotations.insert(ANNOTATION_HOLDER.to_owned(), text);
            }
            None => {
                annotations.remove(ANNOTATION_HOLDER);
            }
        }
        if annotations.is_empty() {
            meta.annotations = None;
        }
        // Whole seconds, rounded up, and at least one: the API server
        // refuses zero, and a holder must never get less than it asked for.
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let lease_duration_seconds = i32::try_from(secs.max(1)).unwrap_or(i32::MAX);
        Ok(Lease {
            metadata: meta,
            spec: Some(LeaseSpec {
                holder_identity: holder.map(|h| h.id.clone()),
                lease_duration_seconds: Some(lease_duration_seconds),
                acquire_time,
                renew_time: Some(now),
                lease_transitions: Some(lease_transitions),
                ..before.cloned().unwrap_or_default()
            }),
        })
    }

    pub(super) async fn shared_digest_key(
        &self,
        proposed: Option<[u8; 32]>,
    ) -> Result<Option<[u8; 32]>, RuntimeError> {
        let name = self.digest_key_name();
        let Some(proposed) = proposed else {
            return match self.secrets().get_opt(&name).await {
                Ok(Some(stored)) => key_of(&stored, &name, &self.namespace).map(Some),
                Ok(None) => Ok(None),
                Err(e) if is_transport(&e) => Err(unavailable(e)),
                Err(e) => Err(op_error("read digest key", &name, &e)),
            };
        };
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(self.scope_labels()),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                KEY.to_owned(),
                ByteString(proposed.to_vec()),
            )])),
            ..Default::default()
        };
        // Someone may delete it between our create and read (a `kubectl
        // delete`); a few rounds settle it.
        for _ in 0..3 {
            match self.secrets().create(&PostParams::default(), &secret).await {
                Ok(_) => return Ok(Some(proposed)),
                Err(e) if api_code(&e) == Some(409) => {}
                Err(e) if is_transport(&e) => return Err(unavailable(e)),
                Err(e) => return Err(op_error("create digest key", &name, &e)),
            }
            match self.secrets().get_opt(&name).await {
                Ok(Some(stored)) => return key_of(&stored, &name, &self.namespace).map(Some),
                Ok(None) => continue,
                Err(e) if is_transport(&e) => return Err(unavailable(e)),
                Err(e) => return Err(op_error("read digest key", &name, &e)),
            }
        }
        Err(RuntimeError::Operation {
            op: "read digest key",
            instance: name,
            message: "the Secret kept vanishing between its create and its read".into(),
        })
    }
}

fn micro_time(t: Timestamp) -> Result<MicroTime, String> {
    k8s_openapi::jiff::Timestamp::from_millisecond(t.0)
        .map(MicroTime)
        .map_err(|e| format!("the time {} cannot be written: {e}", t.0))
}

/// A Lease as the applier reads it. One mcpctl did not write in full (a
/// holder id without the holder annotation, an annotation that is no
/// holder, or that disagrees with the id) is an error naming it, never a
/// free lease: taking it could start a second applier.
fn record_of(lease: &Lease, name: &str, namespace: &str) -> Result<LeaseRecord, RuntimeError> {
    let bad = |why: String| RuntimeError::Operation {
        op: "read lease",
        instance: name.to_owned(),
        message: format!(
            "{why}; mcpctl will not treat it as free. If no applier of this scope runs, \
             delete it (kubectl -n {namespace} delete lease {name})"
        ),
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let note = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_HOLDER));
    let id = spec.holder_identity.as_deref().filter(|id| !id.is_empty());
    let holder = match (id, note) {
        (None, None) => None,
        (Some(id), Some(text)) => {
            let holder: Holder = serde_json::from_str(text).map_err(|e| {
                bad(format!(
                    "its {ANNOTATION_HOLDER} annotation is not a holder ({e})"
                ))
            })?;
            if holder.id != id {
                return Err(bad(format!(
                    "its {ANNOTATION_HOLDER} annotation names holder {:?} but spec.holderIdentity is {id:?}",
                    holder.id
                )));
            }
            Some(holder)
        }
        (Some(id), None) => {
            return Err(bad(format!(
                "it is held by {id:?} but has no {ANNOTATION_HOLDER} annotation, so mcpctl did not write it"
            )));
        }
        (None, Some(_)) => {
            return Err(bad(format!(
                "it has a {ANNOTATION_HOLDER} annotation but no spec.holderIdentity"
            )));
        }
    };
    let ttl = match spec.lease_duration_seconds {
        Some(s) if s > 0 => Duration::from_secs(u64::from(s.unsigned_abs())),
        _ if holder.is_none() => Duration::ZERO,
        other => {
            return Err(bad(format!(
                "it is held but its spec.leaseDurationSeconds is {other:?}"
            )));
        }
    };
    let renewed_at = match &spec.renew_time {
        Some(t) => Timestamp(t.0.as_millisecond()),
        None if holder.is_none() => Timestamp::default(),
        None => return Err(bad("it is held but has no spec.renewTime".into())),
    };
    let version = lease
        .metadata
        .resource_version
        .clone()
        .ok_or_else(|| bad("the API server gave it no resourceVersion".into()))?;
    Ok(LeaseRecord {
        holder,
        ttl,
        renewed_at,
        version,
    })
}

/// The key a digest-key Secret holds. Its bytes never reach a message.
fn key_of(secret: &Secret, name: &str, namespace: &str) -> Result<[u8; 32], RuntimeError> {
    let bad = |why: String| RuntimeError::Operation {
        op: "read digest key",
        instance: name.to_owned(),
        message: format!(
            "{why}, so it is no secret-digest key. Deleting it \
             (kubectl -n {namespace} delete secret {name}) lets the next applier store \
             its own, which changes the spec hash of every server with secrets, \
             so they roll"
        ),
    };
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(KEY)) else {
        return Err(bad(format!("it has no data key {KEY:?}")));
    };
    <[u8; 32]>::try_from(bytes.0.as_slice())
        .map_err(|_| bad(format!("its {KEY:?} is {} bytes, not 32", bytes.0.len())))
}

#[cfg(test)]
mod tests {
    use super::scoped_name;

    #[test]
    fn a_scope_that_is_a_name_already_is_kept_and_any_other_gets_a_digest() {
        assert_eq!(scoped_name("mcpctl-lease", "team-a"), "mcpctl-lease-team-a");
        let changed = scoped_name("mcpctl-lease", "Team_A");
        assert!(changed.starts_with("mcpctl-lease-team-a."), "{changed}");
        assert_ne!(changed, scoped_name("mcpctl-lease", "team_a"));
        assert_ne!(changed, scoped_name("mcpctl-lease", "team.a"));
    }
}
