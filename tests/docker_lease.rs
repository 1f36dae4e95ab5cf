//! The applier lease and the digest key on the real Docker Engine, through
//! the library: a first claim, racing writers after one version, stale
//! versions (superseded, removed by hand, or left behind by a cleanup that
//! failed), release, the chain's cleanup, unreadable lease volumes, racing
//! digest key proposals, and scopes that never see each other.
//!
//! Each test has a scope of its own, whose volumes a drop guard removes.
//! No Docker, no pass: connecting fails the test.

#[path = "support/fixture.rs"]
mod fixture;

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::RemoveVolumeOptions;
use mcpctl::model::{Holder, Runners, Timestamp};
use mcpctl::runtime::Runtime;
use mcpctl::runtime::docker::{DockerConfig, DockerRuntime};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(30);

/// A scope of this test's own; its lease and digest key volumes are removed
/// on drop, even after a failed assert.
struct Scope {
    name: String,
}

impl Scope {
    fn new(test: &str) -> Scope {
        Scope {
            name: format!("t{}-{test}", std::process::id()),
        }
    }

    async fn runtime(&self) -> DockerRuntime {
        DockerRuntime::connect(DockerConfig::from_env(&self.name, Runners::default()))
            .await
            .expect("docker")
    }

    /// The names of this scope's lease volumes, as the docker CLI lists them.
    fn lease_volumes(&self) -> Vec<String> {
        let filter = format!("label=io.mcpctl.lease={}", self.name);
        let out = fixture::docker(&["volume", "ls", "-q", "--filter", &filter]).expect("volume ls");
        let mut names: Vec<String> = out.lines().map(str::to_owned).collect();
        names.sort();
        names
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let mut names = self.lease_volumes();
        names.push(format!("mcpctl-digest-key-{}", self.name));
        for name in names {
            let _ = fixture::docker(&["volume", "rm", &name]);
        }
    }
}

fn holder(command: &str) -> Holder {
    mcpctl::apply::lease::this_process(command)
}

/// Removes a volume through the engine API, as an operator would by hand.
async fn remove_volume(rt: &DockerRuntime, name: &str) {
    rt.client()
        .remove_volume(name, None::<RemoveVolumeOptions>)
        .await
        .expect("remove volume");
}

fn generation(version: &str) -> u64 {
    let (generation, _) = version.split_once('-').expect("<generation>-<nonce>");
    generation.parse().expect("a decimal generation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_write_to_a_free_scope_wins_and_is_read_back() {
    let scope = Scope::new("lease-first");
    let rt = scope.runtime().await;
    assert_eq!(rt.lease().await.expect("lease"), None);

    let me = holder("mcpctl apply");
    let before = Timestamp::now();
    let version = rt
        .write_lease(None, Some(&me), TTL)
        .await
        .expect("write")
        .expect("the first claim of a free scope wins");
    let after = Timestamp::now();
    let lease = rt.lease().await.expect("lease").expect("a lease");
    assert_eq!(lease.holder, Some(me));
    assert_eq!(lease.ttl, TTL);
    assert_eq!(lease.version, version);
    assert!(
        before <= lease.renewed_at && lease.renewed_at <= after,
        "written at {:?}, between {before:?} and {after:?}",
        lease.renewed_at
    );

    // A second first claim finds the lease taken.
    let late = rt
        .write_lease(None, Some(&holder("mcpctl watch")), TTL)
        .await
        .expect("write");
    assert_eq!(late, None);
    assert_eq!(rt.lease().await.expect("lease").expect("a lease"), lease);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_eight_writers_after_one_version_exactly_one_wins() {
    let scope = Scope::new("lease-race");
    let rt = Arc::new(scope.runtime().await);
    let first = rt
        .write_lease(None, Some(&holder("first")), TTL)
        .await
        .expect("write")
        .expect("first claim");
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let (rt, after) = (Arc::clone(&rt), first.clone());
            let me = holder(&format!("writer {i}"));
            tokio::spawn(async move {
                let won = rt.write_lease(Some(&after), Some(&me), TTL).await;
                (me, won)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for writer in writers {
        let (me, won) = writer.await.expect("writer task");
        if let Some(version) = won.expect("write") {
            winners.push((me, version));
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let (me, version) = winners.remove(0);
    let lease = rt.lease().await.expect("lease").expect("a lease");
    assert_eq!((lease.holder, lease.version), (Some(me), version));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_a_version_no_longer_the_latest_loses() {
    let scope = Scope::new("lease-stale");
    let rt = scope.runtime().await;
    let me = holder("mcpctl apply");
    let v1 = rt.write_lease(None, Some(&me), TTL).await.expect("write");
    let v1 = v1.expect("first claim");
    // The first generation's labels, to put it back later as a cleanup
    // that failed would have left it.
    let first_volume = rt
        .client()
        .inspect_volume(&format!("mcpctl-lease-{}-1", scope.name))
        .await
        .expect("inspect the first generation");
    let v2 = rt.write_lease(Some(&v1), Some(&me), TTL).await;
    let v2 = v2.expect("write").expect("renewal");

    // Superseded.
    let stale = rt.write_lease(Some(&v1), Some(&holder("stale")), TTL).await;
    assert_eq!(
        stale.expect("write"),
        None,
        "a write after a superseded version"
    );
    // A first claim when the lease has moved past its first generation.
    let first = rt.write_lease(None, Some(&holder("late")), TTL).await;
    assert_eq!(first.expect("write"), None, "a first claim of a held scope");

    let v3 = rt.write_lease(Some(&v2), Some(&me), TTL).await;
    let v3 = v3.expect("write").expect("renewal");
    // A cleanup that failed left the first generation behind: its version
    // still checks out, but the next generation's name is free again.
    rt.client()
        .create_volume(VolumeCreateRequest {
            name: Some(first_volume.name.clone()),
            labels: Some(first_volume.labels.clone()),
            ..Default::default()
        })
        .await
        .expect("put the first generation back");
    let behind = rt
        .write_lease(Some(&v1), Some(&holder("behind")), TTL)
        .await;
    assert_eq!(
        behind.expect("write"),
        None,
        "a write after a version left behind"
    );
    let lease = rt.lease().await.expect("lease").expect("a lease");
    assert_eq!(
        (lease.version, lease.holder),
        (v3.clone(), Some(me.clone()))
    );

    // Removed by hand: the caller has lost it, even with nothing above it.
    remove_volume(
        &rt,
        &format!("mcpctl-lease-{}-{}", scope.name, generation(&v3)),
    )
    .await;
    let gone = rt.write_lease(Some(&v3), Some(&me), TTL).await;
    assert_eq!(
        gone.expect("write"),
        None,
        "a write after a removed version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_has_no_holder_and_goes_to_the_next_writer() {
    let scope = Scope::new("lease-release");
    let rt = scope.runtime().await;
    let v1 = rt
        .write_lease(None, Some(&holder("mcpctl watch")), TTL)
        .await;
    let v1 = v1.expect("write").expect("first claim");
    let released = rt.write_lease(Some(&v1), None, TTL).await;
    let released = released.expect("write").expect("release");
    let lease = rt.lease().await.expect("lease").expect("a released lease");
    assert_eq!((lease.holder, &lease.version), (None, &released));

    let next = holder("mcpctl apply");
    let v3 = rt.write_lease(Some(&released), Some(&next), TTL).await;
    let v3 = v3.expect("write").expect("a claim after the release");
    let lease = rt.lease().await.expect("lease").expect("a lease");
    assert_eq!((lease.holder, lease.version), (Some(next), v3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_leave_one_lease_volume() {
    let scope = Scope::new("lease-chain");
    let rt = scope.runtime().await;
    let me = holder("mcpctl watch");
    let first = rt.write_lease(None, Some(&me), TTL).await;
    let mut version = first.expect("write").expect("first claim");
    for _ in 0..5 {
        let renewed = rt.write_lease(Some(&version), Some(&me), TTL).await;
        version = renewed.expect("write").expect("renewal");
    }
    assert_eq!(generation(&version), 6);
    assert_eq!(
        scope.lease_volumes(),
        vec![format!("mcpctl-lease-{}-6", scope.name)]
    );
    let lease = rt.lease().await.expect("lease").expect("a lease");
    assert_eq!(lease.version, version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_lease_volume_is_an_error_naming_it() {
    let scope = Scope::new("lease-unreadable");
    let rt = scope.runtime().await;
    let name = format!("mcpctl-lease-{}-1", scope.name);
    rt.client()
        .create_volume(VolumeCreateRequest {
            name: Some(name.clone()),
            labels: Some(HashMap::from([
                ("io.mcpctl.lease".to_owned(), scope.name.clone()),
                ("io.mcpctl.lease.generation".to_owned(), "one".to_owned()),
            ])),
            ..Default::default()
        })
        .await
        .expect("create a volume by hand");
    let e = rt
        .lease()
        .await
        .expect_err("an unreadable lease")
        .to_string();
    assert!(
        e.contains(&name) && e.contains(&format!("docker volume rm {name}")),
        "{e}"
    );
    // Never taken for a free scope.
    let claim = rt.write_lease(None, Some(&holder("x")), TTL).await;
    assert!(
        !matches!(claim, Ok(Some(_))),
        "a claim won past an unreadable lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_digest_key_proposals_all_get_the_first_stored() {
    let scope = Scope::new("digest-key");
    let other = Scope::new("digest-key-other");
    let rt = Arc::new(scope.runtime().await);
    // Reading stores nothing (a `plan` may have read-only rights).
    assert_eq!(rt.digest_key(None).await.expect("read"), None);
    assert_eq!(rt.digest_key(None).await.expect("read"), None);
    let proposals: Vec<[u8; 32]> = (0..8u8).map(|i| [i + 1; 32]).collect();
    let tasks: Vec<_> = proposals
        .iter()
        .map(|&proposed| {
            let rt = Arc::clone(&rt);
            tokio::spawn(async move { rt.digest_key(Some(proposed)).await })
        })
        .collect();
    let mut keys = Vec::new();
    for task in tasks {
        keys.push(
            task.await
                .expect("task")
                .expect("digest key")
                .expect("stored"),
        );
    }
    let key = keys[0];
    assert!(keys.iter().all(|k| *k == key), "keys differ: {keys:?}");
    assert!(proposals.contains(&key), "a key nobody proposed");

    let again = scope.runtime().await.digest_key(Some([0xee; 32])).await;
    assert_eq!(
        again.expect("digest key"),
        Some(key),
        "a new connection's key"
    );
    let read = scope.runtime().await.digest_key(None).await;
    assert_eq!(read.expect("digest key"), Some(key), "read only");
    let theirs = other.runtime().await.digest_key(Some([0xee; 32])).await;
    assert_eq!(
        theirs.expect("digest key"),
        Some([0xee; 32]),
        "another scope's key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_scopes_lease_is_invisible() {
    let mine = Scope::new("lease-mine");
    let theirs = Scope::new("lease-theirs");
    let rt = mine.runtime().await;
    let other = theirs.runtime().await;
    let them = holder("theirs");
    let v = other.write_lease(None, Some(&them), TTL).await;
    v.expect("write").expect("their claim");

    assert_eq!(rt.lease().await.expect("lease"), None);
    let me = holder("mine");
    let v = rt.write_lease(None, Some(&me), TTL).await;
    v.expect("write").expect("a claim of my own scope");
    let lease = rt.lease().await.expect("lease").expect("a lease");
    assert_eq!(lease.holder, Some(me));
    let lease = other.lease().await.expect("lease").expect("a lease");
    assert_eq!(lease.holder, Some(them));
}
