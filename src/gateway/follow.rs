//! Following the fleet from the state file: the snapshot is read again
//! every interval (off the async workers; a read-only transaction that
//! never waits on an applier's writes for long), and the routing table is
//! swapped whole when it changes. A busy or unreadable state keeps the last
//! table, so traffic carries on while the file is in trouble.
//!
//! Where the runtime's endpoints are the observing process's own (the
//! Kubernetes runtime outside the cluster), the gateway also asks its own
//! runtime where each unit is ([`Observe`]): at once when a RUNNING unit
//! has no endpoint of its own yet, and every [`OBSERVE_EVERY`] otherwise. A
//! runtime that fails to answer keeps the last endpoints, as a busy state
//! keeps the last table.

use super::table::{Seen, Table};
use crate::model::{Endpoint, Snapshot, Status};
use crate::runtime::RuntimeError;
use crate::state::Store;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the runtime is asked again with nothing missing: a pod's
/// address outlives it, so this only bounds how long a moved one is missed.
pub const OBSERVE_EVERY: Duration = Duration::from_secs(10);

/// The gateway's own view of where units listen.
pub trait Observe: Send + Sync {
    /// Each unit's HTTP endpoint, by instance; each call bounded by the
    /// runtime's deadline.
    fn endpoints(&self) -> BoxFuture<'_, Result<Seen, RuntimeError>>;
}

/// The table for `snapshot`, with the endpoints `seen` when the gateway
/// observes its own.
pub fn table_of(snapshot: &Snapshot, seen: Option<&Seen>) -> Table {
    match seen {
        Some(seen) => Table::from_snapshot_seen(snapshot, seen),
        None => Table::from_snapshot(snapshot),
    }
}

/// Whether a RUNNING unit with an HTTP endpoint is missing from `seen`:
/// a new instance the gateway's runtime has not been asked about.
fn missing(snapshot: &Snapshot, seen: &Seen) -> bool {
    snapshot.instances.values().any(|i| {
        i.status == Status::Running
            && i.handle.is_some()
            && matches!(i.endpoint, Some(Endpoint::Http(_)))
            && !seen.contains_key(&i.id)
    })
}

/// Re-reads `store` every `every`, forever, publishing each new table on
/// `tables`; with `observe`, endpoints come from it, starting from `seen`.
/// Ends when every receiver has gone.
pub async fn follow(
    store: Store,
    every: Duration,
    tables: watch::Sender<Arc<Table>>,
    observe: Option<(Arc<dyn Observe>, Seen)>,
) {
    let mut last_error: Option<String> = None;
    let mut last_observe_error: Option<String> = None;
    let mut observed = observe.map(|(o, seen)| (o, seen, tokio::time::Instant::now()));
    loop {
        tokio::select! {
            () = tables.closed() => return,
            () = tokio::time::sleep(every) => {}
        }
        let snapshot = match store.load_async().await {
            Ok(snapshot) => {
                if last_error.take().is_some() {
                    tracing::info!("the state file is readable again");
                }
                snapshot
            }
            Err(e) => {
                let text = e.to_string();
                // Once per distinct failure, not once a second.
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "cannot read the state file; keeping the last routing table");
                    last_error = Some(text);
                }
                continue;
            }
        };
        if let Some((observe, seen, at)) = observed.as_mut()
            && (missing(&snapshot, seen) || at.elapsed() >= OBSERVE_EVERY)
        {
            *at = tokio::time::Instant::now();
            match observe.endpoints().await {
                Ok(fresh) => {
                    if last_observe_error.take().is_some() {
                        tracing::info!("the runtime says where instances listen again");
                    }
                    *seen = fresh;
                }
                // Asked again every tick while a unit is missing: once per
                // distinct failure, as for the state file.
                Err(e) => {
                    let text = e.to_string();
                    if last_observe_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(error = %text, "cannot ask the runtime where instances listen; keeping the last endpoints");
                        last_observe_error = Some(text);
                    }
                }
            }
        }
        let table = table_of(&snapshot, observed.as_ref().map(|(_, seen, _)| seen));
        if **tables.borrow() != table {
            tracing::info!(
                servers = table.servers(),
                ready = table.ready_servers(),
                "routing table changed"
            );
            tables.send_replace(Arc::new(table));
        }
    }
}
