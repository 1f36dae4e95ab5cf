//! The snapshot's storage: a redb file holding the instances, the last
//! applied spec of each server, meta (schema version, last applied source
//! revision, a cache of the secret-digest key, the fleet the file belongs
//! to), the intents that make apply crash-safe,
//! per-server back-off, and the apply history. The records themselves are
//! values in [`crate::model`]; this module only keeps them.
//!
//! [`Store`] reads and writes the file; [`ApplyLock`] makes sure only one
//! applier works on a state file at a time.

mod store;

pub use store::{ApplyLock, HISTORY_KEPT, StateError, Store, Txn};

use crate::model::{FleetId, HistoryEntry, Snapshot};

/// Async callers reach the file through these: every call opens the file
/// and commits with `fsync`, and a busy file is retried for up to the busy
/// timeout, so the work runs on tokio's blocking pool, never on an async
/// worker that other tasks (probes, runtime calls, signals) are waiting for.
impl Store {
    /// [`Store::load`], off the async workers.
    pub async fn load_async(&self) -> Result<Snapshot, StateError> {
        let store = self.clone();
        self.blocking(move || store.load()).await
    }

    /// [`Store::update`], off the async workers.
    pub async fn update_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let store = self.clone();
        self.blocking(move || store.update(f)).await
    }

    /// [`Store::digest_key`], off the async workers.
    pub async fn digest_key_async(&self) -> Result<[u8; 32], StateError> {
        let store = self.clone();
        self.blocking(move || store.digest_key()).await
    }

    /// [`Store::history`], off the async workers.
    pub async fn history_async(&self) -> Result<Vec<HistoryEntry>, StateError> {
        let store = self.clone();
        self.blocking(move || store.history()).await
    }

    /// [`Store::cached_digest_key`], off the async workers.
    pub async fn cached_digest_key_async(&self) -> Result<Option<[u8; 32]>, StateError> {
        let store = self.clone();
        self.blocking(move || store.cached_digest_key()).await
    }

    /// [`Store::set_digest_key`], off the async workers.
    pub async fn set_digest_key_async(&self, key: [u8; 32]) -> Result<(), StateError> {
        let store = self.clone();
        self.blocking(move || store.set_digest_key(&key)).await
    }

    /// [`Store::check_fleet`], off the async workers.
    pub async fn check_fleet_async(&self, fleet: &FleetId) -> Result<(), StateError> {
        let (store, fleet) = (self.clone(), fleet.clone());
        self.blocking(move || store.check_fleet(&fleet)).await
    }

    /// [`Store::claim_fleet`], off the async workers.
    pub async fn claim_fleet_async(&self, fleet: &FleetId) -> Result<(), StateError> {
        let (store, fleet) = (self.clone(), fleet.clone());
        self.blocking(move || store.claim_fleet(&fleet)).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
            // The closure panicked (a bug) or the runtime is shutting down.
            Err(StateError::Other {
                path: self.path().to_path_buf(),
                message: format!("the state operation did not finish: {e}"),
            })
        })
    }
}
