//! Watching a source: one thread per [`Watch`] reads the source when it may
//! have changed, and announces a new revision (or a failure) on a tokio
//! channel. Reading blocks (git2, file I/O), so it never runs on an async
//! worker.
//!
//! A git source is fetched every `interval` and on [`Watch::sync_now`]. A
//! directory source is re-read when inotify (through notify's debouncer)
//! reports a change, on `sync_now`, and every `interval` as a safety net
//! for changes inotify cannot see (network file systems, a dropped event
//! queue, a watched directory replaced wholesale).
//!
//! Only changes are announced: a read that yields the revision last
//! announced sends nothing, so an editor touching a file without changing
//! it, or a fetch with nothing new, costs the caller nothing.

use super::git::{Auth, Mirror};
use super::{Location, Snapshot, SourceError, dir};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::Duration;
use tokio::sync::mpsc;

/// What a [`Watch`] announces.
#[derive(Debug, Clone)]
pub enum Update {
    /// A revision not announced before; the first update is the current one.
    Revision {
        snapshot: Snapshot,
        /// The previous revision, when the new one does not descend from it:
        /// a git branch was force-pushed (or reset) to another line of history.
        forced_from: Option<String>,
    },
    /// Reading or fetching failed; the caller keeps its last good revision.
    /// Sent when a failure starts or its message changes; once reading works
    /// again, the current revision is announced even if it is the last one.
    Failed { error: String },
}

/// A source that announces new revisions until dropped. Dropping it stops
/// the file watcher at once (each holds one of the user's few inotify
/// instances) and the reading thread after its current read.
pub struct Watch {
    kick: SyncSender<Kick>,
    // Held for its Drop, which stops the inotify watcher.
    _debouncer: Option<Debouncer<notify::RecommendedWatcher, RecommendedCache>>,
}

/// Why the reading thread should look at the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kick {
    /// The file system reported a change: read once it has gone quiet.
    Changed,
    /// Someone asked: read now.
    Now,
}

/// How long notify's debouncer holds an event, and then how long the reading
/// thread waits for the reports to stop: a burst (an editor's save, a `git
/// checkout` rewriting many files) is read once, after it ends, rather than
/// half-way through. Together about 200 ms after the last change.
const DEBOUNCE: Duration = Duration::from_millis(100);
const QUIET: Duration = Duration::from_millis(100);

/// Updates that may wait for the caller before the reading thread waits too.
const BACKLOG: usize = 16;

impl Watch {
    /// Starts watching `loc`; the first [`Update`] is the current revision
    /// (or the failure to read it). `cache` is as for [`super::read`].
    /// Fails only when a directory source cannot be watched at all.
    pub fn start(
        loc: Location,
        cache: PathBuf,
        interval: Duration,
    ) -> Result<(Watch, mpsc::Receiver<Update>), SourceError> {
        let (updates, rx) = mpsc::channel(BACKLOG);
        // Room for a few kicks: the thread drains them all on waking, so a
        // full queue only means it is already due to look.
        let (kick, kicks) = std::sync::mpsc::sync_channel(8);
        let (reader, debouncer) = match loc {
            Location::Paths(paths) => {
                let debouncer = watch_paths(&paths, kick.clone())?;
                (Reader::Dir(paths), Some(debouncer))
            }
            Location::Git(source) => (
                Reader::Git(Box::new(GitReader {
                    source,
                    cache,
                    auth: Auth::from_env(),
                    mirror: None,
                })),
                None,
            ),
        };
        std::thread::Builder::new()
            .name("mcpctl-source".into())
            .spawn(move || run(reader, kicks, updates, interval))
            .map_err(|e| SourceError::Io {
                path: PathBuf::from("(source thread)"),
                source: e,
            })?;
        Ok((
            Watch {
                kick,
                _debouncer: debouncer,
            },
            rx,
        ))
    }

    /// Reads the source now (fetches, for git), e.g. for a webhook. Calls
    /// that arrive while a read is under way cause one more read after it.
    pub fn sync_now(&self) {
        let _ = self.kick.try_send(Kick::Now);
    }
}

/// Watches each path for changes, kicking the reading thread. A file is
/// watched through its parent directory: editors save by writing a new file
/// and renaming it over the old one, and an inotify watch on the old file
/// dies with it at the first save.
fn watch_paths(
    paths: &[PathBuf],
    kick: SyncSender<Kick>,
) -> Result<Debouncer<notify::RecommendedWatcher, RecommendedCache>, SourceError> {
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        let changed = match result {
            Ok(events) => events.iter().any(|e| may_change_specs(&e.kind)),
            // The kernel's queue overflowed, or a watch broke: what changed
            // is unknown, so look.
            Err(errors) => {
                tracing::warn!(?errors, "file watcher errors; re-reading the source");
                true
            }
        };
        if changed {
            let _ = kick.try_send(Kick::Changed);
        }
    })
    .map_err(|e| watch_error(paths.first().map_or(Path::new("."), PathBuf::as_path), e))?;
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SourceError::NotFound { path: path.clone() },
            _ => SourceError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        let (target, mode) = if meta.is_dir() {
            // Recursive: notify adds a watch to each new subdirectory.
            (path.clone(), RecursiveMode::Recursive)
        } else {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            };
            (parent, RecursiveMode::NonRecursive)
        };
        debouncer
            .watch(&target, mode)
            .map_err(|e| watch_error(&target, e))?;
    }
    Ok(debouncer)
}

/// Whether an event may mean the specs changed. Opening and closing files
/// is what reading does, ours included: counting those would have each read
/// trigger the next. A write reports a modification besides its close
/// (`Access(Close(Write))`), so no change is lost by ignoring them all.
fn may_change_specs(kind: &EventKind) -> bool {
    !matches!(kind, EventKind::Access(_))
}

fn watch_error(path: &Path, source: notify::Error) -> SourceError {
    SourceError::Watch {
        path: path.to_owned(),
        source,
    }
}

/// The blocking half: how to read the source.
enum Reader {
    Dir(Vec<PathBuf>),
    Git(Box<GitReader>),
}

struct GitReader {
    source: super::GitSource,
    cache: PathBuf,
    auth: Auth,
    /// Opened on first use, so a cache that cannot be created is a failure
    /// to report and retry rather than a reason not to start.
    mirror: Option<Mirror>,
}

/// One read's outcome.
enum Read {
    /// The revision is the one given as known: nothing to announce.
    Unchanged,
    New {
        snapshot: Snapshot,
        forced_from: Option<String>,
    },
}

impl Reader {
    /// Reads the source. `known` is a revision that need not be read again
    /// (the files are not even looked at for git); `previous` is the last
    /// revision announced, to tell a force-push from a fast-forward.
    fn read(&mut self, known: Option<&str>, previous: Option<&str>) -> Result<Read, SourceError> {
        match self {
            Reader::Dir(paths) => {
                let snapshot = dir::read(paths)?;
                if known == Some(snapshot.info.revision.as_str()) {
                    return Ok(Read::Unchanged);
                }
                Ok(Read::New {
                    snapshot,
                    forced_from: None,
                })
            }
            Reader::Git(git) => {
                let GitReader {
                    source,
                    cache,
                    auth,
                    mirror,
                } = &mut **git;
                let mirror = match mirror {
                    Some(m) => m,
                    None => mirror.insert(Mirror::open(source, cache)?),
                };
                mirror.fetch(auth)?;
                let commit = mirror.resolve()?;
                if known == Some(commit.to_string().as_str()) {
                    return Ok(Read::Unchanged);
                }
                let snapshot = mirror.read(commit)?;
                let forced_from = previous
                    .filter(|p| *p != snapshot.info.revision && !mirror.descends(commit, p))
                    .map(str::to_owned);
                Ok(Read::New {
                    snapshot,
                    forced_from,
                })
            }
        }
    }
}

/// The reading thread: read, announce what changed, wait for a reason to
/// read again. Ends when the [`Watch`] or the receiver is dropped.
fn run(
    mut reader: Reader,
    kicks: Receiver<Kick>,
    updates: mpsc::Sender<Update>,
    interval: Duration,
) {
    let mut announced: Option<String> = None;
    let mut failing: Option<String> = None;
    loop {
        // Reads start every `interval`, however long each takes: with
        // `--interval 1s` a commit waits half a second on average, not half
        // a second plus a fetch.
        let began = std::time::Instant::now();
        // After a failure the current revision is announced even if it is
        // the one before the failure: the caller learns it has recovered.
        let known = if failing.is_some() {
            None
        } else {
            announced.as_deref()
        };
        let update = match reader.read(known, announced.as_deref()) {
            Ok(Read::Unchanged) => None,
            Ok(Read::New {
                snapshot,
                forced_from,
            }) => {
                failing = None;
                announced = Some(snapshot.info.revision.clone());
                Some(Update::Revision {
                    snapshot,
                    forced_from,
                })
            }
            Err(e) => {
                let error = error_text(&e);
                (failing.as_ref() != Some(&error)).then(|| {
                    failing = Some(error.clone());
                    Update::Failed { error }
                })
            }
        };
        if let Some(update) = update
            && updates.blocking_send(update).is_err()
        {
            return;
        }
        // A read slower than the interval still leaves the remote a rest.
        let rest = interval.saturating_sub(began.elapsed()).max(interval / 4);
        if updates.is_closed() || !wait(&kicks, rest) {
            return;
        }
    }
}

/// Waits until the source should be read again: a kick or the interval.
/// A change report waits for the reports to stop first. `false` when the
/// [`Watch`] is gone.
fn wait(kicks: &Receiver<Kick>, interval: Duration) -> bool {
    let first = match kicks.recv_timeout(interval) {
        Ok(kick) => kick,
        Err(RecvTimeoutError::Timeout) => return true,
        Err(RecvTimeoutError::Disconnected) => return false,
    };
    let mut now = first == Kick::Now;
    while !now {
        match kicks.recv_timeout(QUIET) {
            Ok(kick) => now = kick == Kick::Now,
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
    // Whatever else is queued is answered by the read about to happen.
    loop {
        match kicks.try_recv() {
            Ok(_) => {}
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
}

/// The error with its causes and its help, on one line, for a log or a
/// status page: `watch` must say as much as a one-shot read would.
fn error_text(e: &SourceError) -> String {
    crate::model::text::diagnostic_line(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode,
    };

    #[test]
    fn a_watch_can_be_held_across_awaits_and_shared() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Watch>();
        send_sync::<Update>();
    }

    #[test]
    fn reads_are_not_changes_but_writes_renames_and_removals_are() {
        let noise = [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Access(AccessKind::Read),
        ];
        for kind in noise {
            assert!(!may_change_specs(&kind), "{kind:?}");
        }
        let changes = [
            EventKind::Create(CreateKind::File),
            EventKind::Create(CreateKind::Folder),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
        ];
        for kind in changes {
            assert!(may_change_specs(&kind), "{kind:?}");
        }
    }
}
