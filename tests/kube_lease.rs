//! The Kubernetes runtime's applier lease and secret-digest key, against the
//! fake API server of `support/fake_kube.rs`: the compare-and-swap a Lease's
//! `resourceVersion` gives (first write wins, racing writers after one
//! version: exactly one wins, a stale version loses), release and take-over,
//! a Lease mcpctl did not write read as an error rather than as free, racing
//! digest-key proposals agreeing, and scopes that are no object names mapped
//! to distinct valid ones. Each runtime here stands for one applier process,
//! with its own client, as two `mcpctl` processes would have.

#[path = "support/fake_kube.rs"]
mod fake_kube;

use fake_kube::FakeKube;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use mcpctl::model::{Holder, Timestamp};
use mcpctl::runtime::Runtime;
use mcpctl::runtime::kubernetes::{ANNOTATION_HOLDER, KubeSettings, KubernetesRuntime, Reach};
use std::time::Duration;

const NS: &str = "mcp";

/// One applier of `scope` on the fake, with a client of its own.
fn applier(fake: &FakeKube, scope: &str) -> KubernetesRuntime {
    let _ = rustls::crypto::ring::default_provider().install_default();
    KubernetesRuntime::new(
        fake.client(NS),
        KubeSettings {
            namespace: None,
            scope: scope.into(),
            runners: Default::default(),
        },
        Reach::ApiProxy,
    )
}

fn holder(command: &str) -> Holder {
    mcpctl::apply::lease::this_process(command)
}

/// The fake's Lease called `name`.
fn stored_lease(fake: &FakeKube, name: &str) -> Lease {
    fake.leases()
        .into_iter()
        .find(|l| l.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Lease {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lease_reads_none_the_first_write_wins_and_reads_back() {
    let fake = FakeKube::start();
    let (a, b) = (applier(&fake, "default"), applier(&fake, "default"));
    assert_eq!(a.lease().await.expect("read"), None);

    let (ha, hb) = (holder("mcpctl watch"), holder("mcpctl apply"));
    let before = Timestamp::now();
    let v1 = a
        .write_lease(None, Some(&ha), Duration::from_millis(1500))
        .await
        .expect("write")
        .expect("the first write wins");
    let after = Timestamp::now();
    assert_eq!(
        b.write_lease(None, Some(&hb), Duration::from_secs(5))
            .await
            .expect("write"),
        None,
        "a second first write loses"
    );

    let read = b.lease().await.expect("read").expect("a lease");
    assert_eq!(read.holder.as_ref(), Some(&ha));
    assert_eq!(
        read.ttl,
        Duration::from_secs(2),
        "rounded up to whole seconds"
    );
    assert_eq!(read.version, v1);
    assert!(
        before <= read.renewed_at && read.renewed_at <= after,
        "{before:?} <= {:?} <= {after:?}",
        read.renewed_at
    );

    // As the API server stores it.
    let name = a.lease_name();
    assert_eq!(name, "mcpctl-lease-default");
    let lease = stored_lease(&fake, &name);
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(ha.id.as_str()));
    assert_eq!(spec.lease_duration_seconds, Some(2));
    assert_eq!(spec.lease_transitions, Some(0));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());
    let labels = lease.metadata.labels.expect("labels");
    assert_eq!(
        labels.get("io.mcpctl.scope").map(String::as_str),
        Some("default")
    );
    let note = &lease.metadata.annotations.expect("annotations")[ANNOTATION_HOLDER];
    assert_eq!(
        serde_json::from_str::<Holder>(note).expect("holder json"),
        ha
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_writers_racing_after_one_version_exactly_one_wins() {
    let fake = FakeKube::start();
    let first = applier(&fake, "default");
    let v1 = first
        .write_lease(None, Some(&holder("mcpctl watch")), Duration::from_secs(10))
        .await
        .expect("write")
        .expect("won");
    for round in 0..3 {
        let v = first.lease().await.expect("read").expect("lease").version;
        // Every racer has read version `v` before any writes, as appliers
        // that all saw the lease expire would have: the API server's
        // precondition, not the order of the reads, must pick the winner.
        let mut racers = Vec::new();
        for _ in 0..6 {
            let rt = applier(&fake, "default");
            let read = rt.lease().await.expect("read").expect("lease");
            assert_eq!(read.version, v);
            racers.push(rt);
        }
        let tasks: Vec<_> = racers
            .into_iter()
            .enumerate()
            .map(|(i, rt)| {
                let v = v.clone();
                tokio::spawn(async move {
                    let h = holder(&format!("racer {i}"));
                    let won = rt
                        .write_lease(Some(&v), Some(&h), Duration::from_secs(10))
                        .await
                        .expect("write");
                    (h, won)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (h, won) = t.await.expect("task");
            if let Some(version) = won {
                winners.push((h, version));
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let read = first.lease().await.expect("read").expect("lease");
        assert_eq!(read.holder.as_ref(), Some(&winners[0].0));
        assert_eq!(read.version, winners[0].1);
        assert_ne!(read.version, v1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_version_loses_a_released_lease_has_no_holder_and_a_write_after_it_wins() {
    let fake = FakeKube::start();
    let (a, b) = (applier(&fake, "default"), applier(&fake, "default"));
    let (ha, hb) = (holder("mcpctl watch"), holder("mcpctl apply"));
    let ttl = Duration::from_secs(9);
    let v1 = a.write_lease(None, Some(&ha), ttl).await.unwrap().unwrap();
    let acquired = stored_lease(&fake, &a.lease_name())
        .spec
        .and_then(|s| s.acquire_time);
    // A renewal by the holder keeps when it acquired the lease.
    let v2 = a
        .write_lease(Some(&v1), Some(&ha), ttl)
        .await
        .unwrap()
        .expect("renewed");
    assert_ne!(v1, v2);
    let spec = stored_lease(&fake, &a.lease_name()).spec.expect("spec");
    assert_eq!(spec.acquire_time, acquired);
    assert_eq!(spec.lease_transitions, Some(0));
    // b read v1 before the renewal: its write is stale.
    assert_eq!(
        b.write_lease(Some(&v1), Some(&hb), ttl).await.unwrap(),
        None
    );
    assert_eq!(
        b.lease().await.unwrap().expect("lease").holder.as_ref(),
        Some(&ha)
    );

    let v3 = a
        .write_lease(Some(&v2), None, ttl)
        .await
        .unwrap()
        .expect("released");
    let read = b.lease().await.unwrap().expect("lease");
    assert_eq!((read.holder, read.version.as_str()), (None, v3.as_str()));
    let lease = stored_lease(&fake, &a.lease_name());
    assert_eq!(
        lease.spec.as_ref().and_then(|s| s.holder_identity.clone()),
        None
    );
    assert!(
        lease
            .metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key(ANNOTATION_HOLDER)),
        "{:?}",
        lease.metadata.annotations
    );

    let v4 = b
        .write_lease(Some(&v3), Some(&hb), ttl)
        .await
        .unwrap()
        .expect("a write after the release wins");
    let read = a.lease().await.unwrap().expect("lease");
    assert_eq!(
        (read.holder.as_ref(), read.version.as_str()),
        (Some(&hb), v4.as_str())
    );
    let spec = stored_lease(&fake, &a.lease_name()).spec.expect("spec");
    assert_eq!(
        spec.lease_transitions,
        Some(1),
        "a new holder is a transition"
    );
    assert_ne!(spec.acquire_time, acquired);

    // A lease deleted since the version was read: the write loses too.
    let leases: Api<Lease> = Api::namespaced(fake.client(NS), NS);
    leases
        .delete(&a.lease_name(), &Default::default())
        .await
        .expect("delete");
    assert_eq!(
        a.write_lease(Some(&v4), Some(&ha), ttl).await.unwrap(),
        None
    );
    assert_eq!(a.lease().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_mcpctl_did_not_write_is_an_error_naming_it_never_free() {
    let fake = FakeKube::start();
    let rt = applier(&fake, "default");
    let name = rt.lease_name();
    let leases: Api<Lease> = Api::namespaced(fake.client(NS), NS);
    let foreign: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"holderIdentity": "some-controller", "leaseDurationSeconds": 15},
    }))
    .expect("lease");
    leases
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create");
    let e = rt
        .lease()
        .await
        .expect_err("no holder annotation")
        .to_string();
    assert!(
        e.contains(&name) && e.contains(ANNOTATION_HOLDER) && e.contains("not treat it as free"),
        "{e}"
    );

    let mut garbled = leases.get(&name).await.expect("get");
    garbled.metadata.annotations = Some([(ANNOTATION_HOLDER.into(), "{not json".into())].into());
    leases
        .replace(&name, &PostParams::default(), &garbled)
        .await
        .expect("replace");
    let e = rt
        .lease()
        .await
        .expect_err("a garbled annotation")
        .to_string();
    assert!(e.contains(&name) && e.contains("not a holder"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_digest_key_proposals_agree_and_each_scope_has_its_own() {
    let fake = FakeKube::start();
    let tasks: Vec<_> = (0..6u8)
        .map(|i| {
            let rt = applier(&fake, "default");
            tokio::spawn(async move {
                rt.digest_key(Some([i; 32]))
                    .await
                    .expect("key")
                    .expect("stored")
            })
        })
        .collect();
    let mut keys = Vec::new();
    for t in tasks {
        keys.push(t.await.expect("task"));
    }
    assert!(keys.iter().all(|k| *k == keys[0]), "they disagree");
    assert!((0..6u8).any(|i| keys[0] == [i; 32]), "one of the proposals");
    // A later caller gets the stored one, not its own.
    let rt = applier(&fake, "default");
    assert_eq!(
        rt.digest_key(Some([99; 32])).await.expect("key"),
        Some(keys[0])
    );
    assert_eq!(rt.digest_key(None).await.expect("read"), Some(keys[0]));

    let other = applier(&fake, "team-b");
    assert_eq!(
        other.digest_key(None).await.expect("read"),
        None,
        "reading stores nothing"
    );
    assert_eq!(
        other.digest_key(Some([77; 32])).await.expect("key"),
        Some([77; 32])
    );

    let secret = fake
        .secrets()
        .into_iter()
        .find(|s| s.metadata.name.as_deref() == Some("mcpctl-digest-key-default"))
        .expect("the default scope's key Secret");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        secret.data.as_ref().map(|d| d["key"].0.clone()),
        Some(keys[0].to_vec())
    );
    assert_eq!(
        secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("io.mcpctl.scope"))
            .map(String::as_str),
        Some("default")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_key_secret_of_the_wrong_length_is_a_clear_error() {
    let fake = FakeKube::start();
    let rt = applier(&fake, "team-c");
    let name = rt.digest_key_name();
    let secrets: Api<Secret> = Api::namespaced(fake.client(NS), NS);
    let short: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {"key": "c2hvcnQga2V5IDE2IGJ5dA=="},
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &short)
        .await
        .expect("create");
    let e = rt
        .digest_key(Some([1; 32]))
        .await
        .expect_err("16 bytes is no key")
        .to_string();
    assert!(e.contains(&name) && e.contains("16 bytes, not 32"), "{e}");
    assert!(
        !e.contains("short key") && !e.contains("c2hvcnQga2V5"),
        "the stored bytes never reach a message: {e}"
    );
}

/// A DNS subdomain, as Lease and Secret names must be.
fn dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
                && part.ends_with(|c: char| c.is_ascii_alphanumeric())
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_that_are_no_object_names_get_valid_distinct_ones() {
    let fake = FakeKube::start();
    let long = format!("{}_Z", "s".repeat(61));
    let scopes = [
        "team-a",
        "Team_A",
        "team_a",
        "team.a",
        "TEAM-A",
        long.as_str(),
    ];
    let mut holders = Vec::new();
    for scope in scopes {
        let rt = applier(&fake, scope);
        let h = holder(scope);
        rt.write_lease(None, Some(&h), Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{scope}: {e}"))
            .unwrap_or_else(|| panic!("{scope}: its own lease, not another's"));
        rt.digest_key(Some([0; 32])).await.expect("key");
        holders.push((rt, h));
    }
    let names: std::collections::BTreeSet<String> = fake
        .leases()
        .iter()
        .filter_map(|l| l.metadata.name.clone())
        .collect();
    let keys: std::collections::BTreeSet<String> = fake
        .secrets()
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(
        (names.len(), keys.len()),
        (scopes.len(), scopes.len()),
        "{names:?} {keys:?}"
    );
    for name in names.iter().chain(&keys) {
        assert!(dns_subdomain(name), "{name}");
    }
    assert!(names.contains("mcpctl-lease-team-a"), "{names:?}");
    for (rt, h) in &holders {
        let read = rt.lease().await.expect("read").expect("lease");
        assert_eq!(read.holder.as_ref(), Some(h), "each scope reads its own");
    }
}
