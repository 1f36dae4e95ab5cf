//! Following the fleet from the state file: the snapshot is read again
//! every interval (off the async workers; a read-only transaction that
//! never waits on an applier's writes for long), and the routing table is
//! swapped whole when it changes. A busy or unreadable state keeps the last
//! table, so traffic carries on while the file is in trouble.

use super::table::Table;
use crate::state::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Re-reads `store` every `every`, forever, publishing each new table on
/// `tables`. Ends when every receiver has gone.
pub async fn follow(store: Store, every: Duration, tables: watch::Sender<Arc<Table>>) {
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            () = tables.closed() => return,
            () = tokio::time::sleep(every) => {}
        }
        match store.load_async().await {
            Ok(snapshot) => {
                if last_error.take().is_some() {
                    tracing::info!("the state file is readable again");
                }
                let table = Table::from_snapshot(&snapshot);
                if **tables.borrow() != table {
                    tracing::info!(
                        servers = table.servers(),
                        ready = table.ready_servers(),
                        "routing table changed"
                    );
                    tables.send_replace(Arc::new(table));
                }
            }
            Err(e) => {
                let text = e.to_string();
                // Once per distinct failure, not once a second.
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "cannot read the state file; keeping the last routing table");
                    last_error = Some(text);
                }
            }
        }
    }
}
