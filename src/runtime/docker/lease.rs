//! The scope's applier lease and its digest key, kept in the engine as
//! labelled volumes. Docker has no object to compare-and-swap, but a volume
//! create is an atomic get-or-create by name: of racing creates of one name
//! exactly one makes it, and every one of them is answered with the labels
//! of the volume that exists. Volume labels never change, so the lease is a
//! chain of volumes, one a version: `mcpctl-lease-<scope>-<generation>`, its
//! generation, a nonce fresh to each write, the time to live, the writer's
//! time and the holder all in labels. A write after generation `n` first
//! checks that `n` still carries the nonce it was read with, then creates
//! `n + 1` with a nonce of its own: it won if the answer carries that nonce
//! and no later generation exists (one made after a version that has since
//! been removed and remade). The winner then removes the generations below
//! its own. The highest generation is the lease.
//!
//! The digest key is one volume, `mcpctl-digest-key-<scope>`, whose label
//! holds the key in hex: created proposing ours, it answers with the first
//! one stored. A label is no secret, and need not be: anyone who can read a
//! volume's labels can `docker inspect` every container's environment, the
//! secret values themselves, so the key is no more exposed than what it
//! protects. It only stops offline guessing of secrets from the digests in
//! a state file or a plan. It is never logged nor put in a message.

use super::{DockerRuntime, engine_message, is_not_found, unavailable};
use crate::model::{Holder, Lease, Timestamp};
use crate::runtime::{LABEL_SCOPE, RuntimeError};
use bollard::errors::Error as DockerError;
use bollard::models::{Volume, VolumeCreateRequest};
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptions};
use std::collections::HashMap;
use std::time::Duration;

/// The scope a lease volume belongs to: the list filter. Lease volumes do
/// not carry `io.mcpctl.managed`: they are not units.
const LABEL_LEASE: &str = "io.mcpctl.lease";
const LABEL_GENERATION: &str = "io.mcpctl.lease.generation";
const LABEL_NONCE: &str = "io.mcpctl.lease.nonce";
const LABEL_TTL_MS: &str = "io.mcpctl.lease.ttl-ms";
const LABEL_RENEWED_AT: &str = "io.mcpctl.lease.renewed-at";
/// The holder as JSON; absent once released.
const LABEL_HOLDER: &str = "io.mcpctl.lease.holder";
const LABEL_DIGEST_KEY: &str = "io.mcpctl.digest-key";

/// One version of the lease, as its volume's labels tell it.
struct Link {
    name: String,
    generation: u64,
    lease: Lease,
}

impl DockerRuntime {
    fn lease_volume(&self, generation: u64) -> String {
        format!("mcpctl-lease-{}-{generation}", self.config.scope)
    }

    /// Every version of this scope's lease still stored, lowest first.
    async fn lease_chain(&self) -> Result<Vec<Link>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_LEASE}={}", self.config.scope)],
        )]);
        let opts = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let listed = self.docker.list_volumes(Some(opts)).await.map_err(|e| {
            engine_error(
                "list",
                &format!("the lease volumes of scope {}", self.config.scope),
                &e,
            )
        })?;
        let mut chain = listed
            .volumes
            .unwrap_or_default()
            .iter()
            .map(|v| self.link(v))
            .collect::<Result<Vec<_>, _>>()?;
        chain.sort_by_key(|l| l.generation);
        Ok(chain)
    }

    /// A lease volume's labels read back. One that carries our lease label
    /// but cannot be read is an error, never a free lease: whoever made it
    /// meant something by it, and the operator must decide.
    fn link(&self, volume: &Volume) -> Result<Link, RuntimeError> {
        let name = &volume.name;
        let label = |key: &'static str| {
            volume
                .labels
                .get(key)
                .ok_or_else(|| unreadable(name, key, "it is missing"))
        };
        let number = |key: &'static str| {
            label(key)?
                .parse::<u64>()
                .map_err(|e| unreadable(name, key, &e.to_string()))
        };
        let generation = number(LABEL_GENERATION)?;
        if *name != self.lease_volume(generation) {
            return Err(unreadable(
                name,
                LABEL_GENERATION,
                &format!("generation {generation} is not the one its name says"),
            ));
        }
        let nonce = label(LABEL_NONCE)?;
        if !is_nonce(nonce) {
            return Err(unreadable(name, LABEL_NONCE, "it is not hex digits"));
        }
        let ttl = Duration::from_millis(number(LABEL_TTL_MS)?);
        let renewed_at = Timestamp(
            i64::try_from(number(LABEL_RENEWED_AT)?)
                .map_err(|e| unreadable(name, LABEL_RENEWED_AT, &e.to_string()))?,
        );
        let holder = match volume.labels.get(LABEL_HOLDER) {
            None => None,
            Some(json) => Some(
                serde_json::from_str::<Holder>(json)
                    .map_err(|e| unreadable(name, LABEL_HOLDER, &e.to_string()))?,
            ),
        };
        Ok(Link {
            name: name.clone(),
            generation,
            lease: Lease {
                holder,
                ttl,
                renewed_at,
                version: format!("{generation}-{nonce}"),
            },
        })
    }

    /// This scope's lease: the highest generation stored.
    pub(super) async fn read_lease(&self) -> Result<Option<Lease>, RuntimeError> {
        Ok(self.lease_chain().await?.pop().map(|l| l.lease))
    }

    /// The compare-and-swap of [`Runtime::write_lease`](crate::runtime::Runtime::write_lease).
    pub(super) async fn swap_lease(
        &self,
        after: Option<&str>,
        holder: Option<&Holder>,
        ttl: Duration,
    ) -> Result<Option<String>, RuntimeError> {
        let generation = match after {
            None => 1,
            Some(version) => {
                let (previous, nonce) = parse_version(version)?;
                // Gone (taken over and cleaned up, removed by hand, pruned)
                // or remade by another writer: the caller no longer holds
                // the version it writes after.
                if !self.is_current(previous, nonce).await? {
                    return Ok(None);
                }
                previous
                    .checked_add(1)
                    .ok_or_else(|| RuntimeError::Operation {
                        op: "write",
                        instance: "the applier lease".into(),
                        message: format!("version {version:?} is the last generation there can be"),
                    })?
            }
        };
        let name = self.lease_volume(generation);
        let nonce = fresh_nonce()?;
        let mut labels = HashMap::from([
            (LABEL_LEASE.to_owned(), self.config.scope.clone()),
            (LABEL_GENERATION.to_owned(), generation.to_string()),
            (LABEL_NONCE.to_owned(), nonce.clone()),
            (LABEL_TTL_MS.to_owned(), ttl.as_millis().to_string()),
            (LABEL_RENEWED_AT.to_owned(), Timestamp::now().0.to_string()),
        ]);
        if let Some(holder) = holder {
            let json = serde_json::to_string(holder).map_err(|e| RuntimeError::Operation {
                op: "write",
                instance: format!("volume {name}"),
                message: format!("the holder cannot be written as JSON: {e}"),
            })?;
            labels.insert(LABEL_HOLDER.to_owned(), json);
        }
        let made = self
            .docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(|e| engine_error("create", &format!("volume {name}"), &e))?;
        if made.labels.get(LABEL_NONCE) != Some(&nonce) {
            return Ok(None);
        }
        // Our create made the volume, but the name may have been free only
        // because its earlier owner was superseded and cleaned up: a writer
        // that checked `after` just before that. A later generation then
        // still exists, since one is only removed once a higher one does.
        let chain = self.lease_chain().await?;
        if chain.iter().any(|l| l.generation > generation) {
            self.remove_link(&name).await;
            return Ok(None);
        }
        for link in chain.iter().filter(|l| l.generation < generation) {
            self.remove_link(&link.name).await;
        }
        Ok(Some(format!("{generation}-{nonce}")))
    }

    /// Whether `generation` is still stored with `nonce`.
    async fn is_current(&self, generation: u64, nonce: &str) -> Result<bool, RuntimeError> {
        let name = self.lease_volume(generation);
        match self.docker.inspect_volume(&name).await {
            Ok(volume) => Ok(volume.labels.get(LABEL_LEASE) == Some(&self.config.scope)
                && volume.labels.get(LABEL_NONCE).map(String::as_str) == Some(nonce)),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(engine_error("inspect", &format!("volume {name}"), &e)),
        }
    }

    /// Removes a superseded version. Best effort: one left behind is below
    /// the lease and harmless, and the next winner removes it.
    async fn remove_link(&self, name: &str) {
        if let Err(e) = self
            .docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
        {
            tracing::debug!(volume = name, error = %e, "old lease version left behind");
        }
    }

    /// The key of [`Runtime::digest_key`](crate::runtime::Runtime::digest_key):
    /// the stored one, or `proposed`, stored now; with no proposal, only read.
    pub(super) async fn stored_digest_key(
        &self,
        proposed: Option<[u8; 32]>,
    ) -> Result<Option<[u8; 32]>, RuntimeError> {
        let name = format!("mcpctl-digest-key-{}", self.config.scope);
        let Some(proposed) = proposed else {
            return match self.docker.inspect_volume(&name).await {
                Ok(volume) => decode_key(&name, &volume.labels).map(Some),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(None),
                Err(e) => Err(engine_error("inspect", &format!("volume {name}"), &e)),
            };
        };
        let labels = HashMap::from([
            (LABEL_DIGEST_KEY.to_owned(), hex::encode(proposed)),
            (LABEL_SCOPE.to_owned(), self.config.scope.clone()),
        ]);
        let volume = self
            .docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(|e| engine_error("create", &format!("volume {name}"), &e))?;
        decode_key(&name, &volume.labels).map(Some)
    }
}

/// The key a digest-key volume holds in its label.
fn decode_key(name: &str, labels: &HashMap<String, String>) -> Result<[u8; 32], RuntimeError> {
    let mut key = [0u8; 32];
    // The label's value stays out of the message: it may be the key.
    match labels.get(LABEL_DIGEST_KEY) {
        Some(stored) if hex::decode_to_slice(stored, &mut key).is_ok() => Ok(key),
        _ => Err(RuntimeError::Operation {
            op: "read",
            instance: format!("volume {name}"),
            message: format!(
                "its label {LABEL_DIGEST_KEY} is missing or not 64 hex digits, so it is \
                     not a digest key mcpctl stored; remove it (`docker volume rm {name}`) \
                     and the next apply stores a new key (the spec hash of every server \
                     with a secret then changes once, and its units are replaced)"
            ),
        }),
    }
}

/// A lease volume whose label `key` cannot be read, as an error that names
/// the volume and says how to get past it.
fn unreadable(volume: &str, key: &str, why: &str) -> RuntimeError {
    RuntimeError::Operation {
        op: "read",
        instance: format!("volume {volume}"),
        message: format!(
            "it carries the applier lease label {LABEL_LEASE}, but its label {key} cannot be \
             read ({why}), so the scope's lease cannot be read past it; remove it \
             (`docker volume rm {volume}`)"
        ),
    }
}

/// An engine call that failed: `Unavailable` when the engine could not be
/// reached, else the engine's own words about `what`.
fn engine_error(op: &'static str, what: &str, e: &DockerError) -> RuntimeError {
    match e {
        DockerError::IOError { .. }
        | DockerError::HyperResponseError { .. }
        | DockerError::HyperLegacyError { .. }
        | DockerError::RequestTimeoutError
        | DockerError::SocketNotFoundError(_) => unavailable(e),
        _ => RuntimeError::Operation {
            op,
            instance: what.to_owned(),
            message: engine_message(e),
        },
    }
}

/// `<generation>-<nonce>` → (generation, nonce).
fn parse_version(version: &str) -> Result<(u64, &str), RuntimeError> {
    version
        .split_once('-')
        .and_then(|(generation, nonce)| Some((generation.parse().ok()?, nonce)))
        .filter(|(_, nonce)| is_nonce(nonce))
        .ok_or_else(|| RuntimeError::Operation {
            op: "write",
            instance: "the applier lease".into(),
            message: format!(
                "{version:?} is not a version of a Docker lease (<generation>-<nonce>)"
            ),
        })
}

fn is_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// 128 random bits in hex: what tells this write from every other one of
/// the same generation. Without a random source there is no safe write.
fn fresh_nonce() -> Result<String, RuntimeError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| RuntimeError::Operation {
        op: "write",
        instance: "the applier lease".into(),
        message: format!("no random source for the write's nonce: {e}"),
    })?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_a_generation_and_a_hex_nonce() {
        assert_eq!(parse_version("7-00ff").ok(), Some((7, "00ff")));
        for bad in [
            "",
            "7",
            "7-",
            "-ab",
            "x-ab",
            "7-zz",
            "18446744073709551616-ab",
        ] {
            let e = parse_version(bad).expect_err(bad).to_string();
            assert!(e.contains("<generation>-<nonce>"), "{e}");
        }
    }
}
