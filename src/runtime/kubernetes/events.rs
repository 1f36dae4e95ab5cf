//! The events stream: a watch of this scope's pods, each change a
//! [`Watched::Event`].

use super::*;

/// What a watch event of one pod says, in no runtime's dialect.
pub(super) fn event_of(ev: WatchEvent<Pod>) -> Option<Result<Watched, RuntimeError>> {
    let (pod, kind) = match ev {
        WatchEvent::Added(p) => (p, Some(EventKind::Created)),
        WatchEvent::Deleted(p) => (p, Some(EventKind::Removed)),
        WatchEvent::Modified(p) => (p, None),
        WatchEvent::Bookmark(_) => return None,
        WatchEvent::Error(status) => return Some(Err(unavailable(status.message))),
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let instance = InstanceId(labels.get(LABEL_INSTANCE)?.clone());
    let server = labels.get(LABEL_SERVER).cloned().unwrap_or_default();
    let kind = match kind {
        Some(k) => k,
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

pub(super) fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_core::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Lists once for the current resource version, then watches from it,
/// forwarding events until the receiver is dropped.
pub(super) async fn watch_loop(
    pods: Api<Pod>,
    selector: String,
    tx: tokio::sync::mpsc::Sender<Result<Watched, RuntimeError>>,
) {
    let mut version = String::new();
    loop {
        if version.is_empty() {
            match pods
                .list(&ListParams::default().labels(&selector).limit(1))
                .await
            {
                Ok(list) => version = list.metadata.resource_version.unwrap_or_default(),
                Err(e) => {
                    if tx.send(Err(unavailable(e))).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        () = tx.closed() => return,
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    }
                }
            }
        }
        let params = WatchParams::default().labels(&selector).timeout(290);
        let stream = match pods.watch(&params, &version).await {
            Ok(s) => s,
            Err(e) => {
                version.clear();
                if tx.send(Err(unavailable(e))).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                next = stream.next() => next,
            };
            match next {
                None => break,
                Some(Ok(ev)) => {
                    if let WatchEvent::Error(status) = &ev
                        && status.code == 410
                    {
                        // Too old: list again for a fresh version.
                        version.clear();
                        break;
                    }
                    if let Some(v) = resource_version(&ev) {
                        version = v;
                    }
                    if let Some(item) = event_of(ev)
                        && tx.send(item).await.is_err()
                    {
                        return;
                    }
                }
                Some(Err(e)) => {
                    version.clear();
                    if tx.send(Err(unavailable(e))).await.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
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
