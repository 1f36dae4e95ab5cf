//! The events stream: a watch of this scope's pods, each change a
//! [`Watched::Event`], that never ends on its own. The API server ends every
//! watch after `timeoutSeconds`, expires old resource versions (410 Gone),
//! and may drop the connection; each time, the watch is opened again from
//! the last version seen (kept fresh by bookmarks), or from a new list when
//! that version is gone, with back-off after failures, and the stream says
//! [`Watched::Resumed`] once it is open again.

use super::*;
use crate::model::Doubling;
use std::time::Duration;

/// What a watch event of one pod says, in no runtime's dialect.
pub(super) fn event_of(ev: WatchEvent<Pod>) -> Option<Result<Watched, RuntimeError>> {
    let (pod, kind) = match ev {
        WatchEvent::Added(p) => (p, Some(EventKind::Created)),
        WatchEvent::Deleted(p) => (p, Some(EventKind::Removed)),
        WatchEvent::Modified(p) => (p, None),
        WatchEvent::Bookmark(_) => return None,
        WatchEvent::Error(status) => {
            return Some(Err(unavailable(format!(
                "watch error {}: {}",
                status.code, status.message
            ))));
        }
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let instance = InstanceId(labels.get(LABEL_INSTANCE)?.clone());
    let server = labels.get(LABEL_SERVER).cloned().unwrap_or_default();
    let kind = match kind {
        Some(k) => k,
        // A pod being deleted is as good as gone, as `observe` sees it.
        None if pod.metadata.deletion_timestamp.is_some() => EventKind::Removed,
        None => {
            let state = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER))
                .and_then(|c| c.state.clone())
                .unwrap_or_default();
            if let Some(t) = state.terminated {
                EventKind::Died {
                    exit_code: Some(i64::from(t.exit_code)),
                }
            } else if state.running.is_some() {
                EventKind::Started
            } else if state.waiting.is_some() {
                EventKind::Died { exit_code: None }
            } else {
                EventKind::Created
            }
        }
    };
    Some(Ok(Watched::Event(RuntimeEvent {
        instance,
        server,
        kind,
    })))
}

/// How long the API server keeps a watch open before it ends it; the
/// API server's own limit is higher, and a shorter one bounds how long a
/// half-dead connection can go unnoticed.
const WATCH_SECONDS: u32 = 290;
/// The pause after the first failure in a row, doubling to the second.
const BACKOFF: Doubling = Doubling::new(Duration::from_millis(100), Duration::from_secs(10));
/// A watch that stayed open this long was healthy, even if it said nothing.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// Where the watch stands between two items of the stream.
struct Watch {
    pods: Api<Pod>,
    selector: String,
    /// The version to watch from; `None` when it must be listed (first, or
    /// after it expired).
    version: Option<String>,
    /// Whether a watch was ever open: the first opening is no resumption.
    opened_before: bool,
    /// Failures in a row, for the back-off; reset once a watch is healthy.
    failures: u32,
    open: Option<Open>,
}

struct Open {
    stream: futures_util::stream::BoxStream<'static, kube::Result<WatchEvent<Pod>>>,
    since: tokio::time::Instant,
    /// Whether anything arrived on it, which proves it healthy.
    heard: bool,
}

/// The stream of the module documentation.
pub(super) fn watch(
    pods: Api<Pod>,
    selector: String,
) -> impl futures_core::Stream<Item = Result<Watched, RuntimeError>> + Send {
    let state = Watch {
        pods,
        selector,
        version: None,
        opened_before: false,
        failures: 0,
        open: None,
    };
    futures_util::stream::unfold(state, |mut w| async move {
        let item = w.next().await;
        Some((item, w))
    })
}

impl Watch {
    async fn next(&mut self) -> Result<Watched, RuntimeError> {
        loop {
            let Some(open) = self.open.as_mut() else {
                match self.reopen().await {
                    Ok(true) => return Ok(Watched::Resumed),
                    Ok(false) => continue,
                    Err(e) => return Err(e),
                }
            };
            match open.stream.next().await {
                // An error the API server sent as an event (a refused or
                // expired watch) ends the watch and proves nothing healthy.
                Some(Ok(WatchEvent::Error(status))) => {
                    self.closed(false);
                    if status.code == 410 {
                        // The version expired: only a new list says where to go on.
                        self.version = None;
                        return Err(unavailable(format!(
                            "watch expired (410 Gone: {}); listing again",
                            status.message
                        )));
                    }
                    return Err(unavailable(format!(
                        "watch error {}: {}",
                        status.code, status.message
                    )));
                }
                Some(Ok(ev)) => {
                    open.heard = true;
                    self.failures = 0;
                    if let Some(v) = resource_version(&ev) {
                        self.version = Some(v);
                    }
                    if let Some(item) = event_of(ev) {
                        return item;
                    }
                }
                Some(Err(e)) => {
                    // A broken body; the last version seen still stands.
                    self.closed(false);
                    return Err(unavailable(format!("watch broke: {e}")));
                }
                // The API server ended it, as it does after timeoutSeconds.
                None => self.closed(true),
            }
        }
    }

    /// Forgets the open watch; a clean end of a watch that had been
    /// healthy is no failure.
    fn closed(&mut self, clean: bool) {
        let healthy = self
            .open
            .take()
            .is_some_and(|o| o.heard || o.since.elapsed() >= HEALTHY_AFTER);
        if !(clean && healthy) {
            self.failures = self.failures.saturating_add(1);
        }
    }

    /// Lists if need be and opens a watch, after the back-off the failures
    /// so far ask for. `Ok(true)` when the stream should say it resumed:
    /// every opening but the first, since whatever happened while no watch
    /// was open may be missing (a watch resumed from its version misses
    /// nothing in principle, but one more look at each reopening, every few
    /// minutes, is cheap, and the contract promises it).
    async fn reopen(&mut self) -> Result<bool, RuntimeError> {
        tokio::time::sleep(BACKOFF.after(self.failures)).await;
        let version = match self.version.clone() {
            Some(v) => v,
            None => {
                let list = self
                    .pods
                    .list_metadata(&ListParams::default().labels(&self.selector).limit(1))
                    .await
                    .map_err(|e| self.failed(format!("cannot list pods to watch: {e}")))?;
                list.metadata.resource_version.unwrap_or_default()
            }
        };
        let params = WatchParams::default()
            .labels(&self.selector)
            .timeout(WATCH_SECONDS);
        match self.pods.watch(&params, &version).await {
            Ok(stream) => {
                self.version = Some(version);
                self.open = Some(Open {
                    stream: stream.boxed(),
                    since: tokio::time::Instant::now(),
                    heard: false,
                });
                Ok(std::mem::replace(&mut self.opened_before, true))
            }
            Err(e) => {
                if api_code(&e) == Some(410) {
                    self.version = None;
                }
                Err(self.failed(format!("cannot watch pods: {e}")))
            }
        }
    }

    fn failed(&mut self, message: String) -> RuntimeError {
        self.failures = self.failures.saturating_add(1);
        unavailable(message)
    }
}

fn resource_version(ev: &WatchEvent<Pod>) -> Option<String> {
    match ev {
        WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) => {
            p.metadata.resource_version.clone()
        }
        WatchEvent::Bookmark(b) => Some(b.metadata.resource_version.clone()),
        WatchEvent::Error(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_marked_for_deletion_is_removed() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "mcpctl-a-01x", "deletionTimestamp": "2026-11-30T01:00:00Z",
                "labels": {LABEL_INSTANCE: "01x", LABEL_SERVER: "a"}
            },
            "status": {"containerStatuses": [{"name": "server", "image": "i", "imageID": "",
                "ready": true, "restartCount": 0, "state": {"running": {}}}]}
        }))
        .expect("pod");
        let Some(Ok(Watched::Event(ev))) = event_of(WatchEvent::Modified(pod)) else {
            panic!("an event");
        };
        assert_eq!(ev.kind, EventKind::Removed);
    }
}
