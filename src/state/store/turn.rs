//! First come, first served access to a state file among the threads of one
//! process.
//!
//! redb refuses a second open of a file outright, so without this, threads
//! of one process (parallel apply steps, a `watch` serving requests) would
//! meet each other only through the sleep-and-retry loop meant for other
//! processes. That is slow, and unfair: a thread that releases the file and
//! reopens it at once wins nearly every time against one that sleeps, and
//! starves it. Here threads queue on a ticket lock instead and are woken the
//! moment the file is free, in the order they arrived. Only the first in
//! line goes on to compete with other processes.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

/// The queue of one state file.
#[derive(Default)]
struct Line {
    queue: Mutex<Queue>,
    turn_over: Condvar,
}

#[derive(Default)]
struct Queue {
    next_ticket: u64,
    serving: u64,
    /// Tickets whose holders gave up waiting; skipped when their turn comes.
    abandoned: BTreeSet<u64>,
}

/// This thread's turn on a state file; the next in line goes when it is dropped.
pub(super) struct Turn {
    line: Arc<Line>,
}

/// Waits for this thread's turn on `path` until `deadline`; `None` if it did not come.
pub(super) fn wait(path: &Path, deadline: Instant) -> Option<Turn> {
    let line = line_for(path);
    let mut queue = lock(&line.queue);
    let ticket = queue.next_ticket;
    queue.next_ticket += 1;
    while queue.serving != ticket {
        let now = Instant::now();
        if now >= deadline {
            queue.abandoned.insert(ticket);
            return None;
        }
        queue = line
            .turn_over
            .wait_timeout(queue, deadline - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    drop(queue);
    Some(Turn { line })
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut queue = lock(&self.line.queue);
        let mut next = queue.serving + 1;
        while queue.abandoned.remove(&next) {
            next += 1;
        }
        queue.serving = next;
        drop(queue);
        // Every waiter checks whether it is next; only one is.
        self.line.turn_over.notify_all();
    }
}

/// The guarded data stays consistent whatever a panicking holder was doing,
/// since no code here panics with the guard held.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn line_for(path: &Path) -> Arc<Line> {
    static LINES: OnceLock<Mutex<HashMap<PathBuf, Arc<Line>>>> = OnceLock::new();
    // Two spellings of one file get two lines; they still exclude each other
    // through redb's lock, only less fairly.
    let key = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut lines = lock(LINES.get_or_init(Default::default));
    lines.entry(key).or_default().clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn turns_are_taken_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let far = Instant::now() + Duration::from_secs(60);
        let first = wait(&path, far).unwrap();

        let (tx, rx) = mpsc::channel();
        let mut waiters = Vec::new();
        for n in 0..4 {
            let (mine, tx) = (path.clone(), tx.clone());
            waiters.push(std::thread::spawn(move || {
                let _turn = wait(&mine, far).unwrap();
                tx.send(n).unwrap();
            }));
            // Queue each waiter before starting the next, so arrival order is known.
            while lock(&line_for(&path).queue).next_ticket < n + 2 {
                std::thread::yield_now();
            }
        }
        drop(first);
        for w in waiters {
            w.join().unwrap();
        }
        let order: Vec<u64> = rx.try_iter().collect();
        assert_eq!(order, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_waiter_gives_up_at_its_deadline_without_blocking_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let first = wait(&path, Instant::now() + Duration::from_secs(60)).unwrap();

        assert!(wait(&path, Instant::now() + Duration::from_millis(20)).is_none());

        drop(first);
        // The abandoned ticket is skipped, so the next comer goes at once.
        assert!(wait(&path, Instant::now()).is_some());
    }
}
