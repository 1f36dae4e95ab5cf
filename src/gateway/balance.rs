//! Which instance takes a request: the least outstanding requests for a
//! request outside any session, and the pinned instance for one inside a
//! 2025-era session. Both tables are bounded by the fleet, not by uptime:
//! counters exist only while requests are outstanding, and the pin table
//! holds at most its cap, forgetting the least recently used session first.

use super::table::Backend;
use crate::model::InstanceId;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

/// Requests in flight per instance, and instances that lately refused a
/// connection.
#[derive(Debug, Default)]
pub struct Outstanding {
    counts: Mutex<HashMap<InstanceId, usize>>,
    /// When each instance last refused a connection. An instance that is
    /// going away refuses at once, so by outstanding requests alone it
    /// would look the least busy and draw every request until the table
    /// drops it. Entries older than [`SHUNNED_FOR`] are dropped on the next
    /// choice, so the map holds at most the instances that refused lately.
    refused: Mutex<HashMap<InstanceId, std::time::Instant>>,
}

/// How long an instance that refused a connection is passed over while
/// another can take the request.
pub const SHUNNED_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// One request counted against its instance until dropped (when its
/// response body has ended, or been abandoned).
#[derive(Debug)]
pub struct InFlight {
    owner: Arc<Outstanding>,
    instance: InstanceId,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut counts = self
            .owner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.instance) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.instance);
            }
        }
    }
}

impl Outstanding {
    /// The backend with the fewest requests in flight (the first of them on
    /// a tie), counted as taking one more; one that refused a connection in
    /// the last [`SHUNNED_FOR`] only if no other can. `None` when there is none.
    pub fn choose(self: &Arc<Self>, backends: &[Backend]) -> Option<(Backend, InFlight)> {
        self.choose_except(backends, &[])
    }

    /// [`Outstanding::choose`] among the backends not in `except`.
    pub fn choose_except(
        self: &Arc<Self>,
        backends: &[Backend],
        except: &[InstanceId],
    ) -> Option<(Backend, InFlight)> {
        let shunned: Vec<InstanceId> = {
            let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
            refused.retain(|_, at| at.elapsed() < SHUNNED_FOR);
            refused.keys().cloned().collect()
        };
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let chosen = backends
            .iter()
            .filter(|b| !except.contains(&b.instance))
            .min_by_key(|b| {
                (
                    shunned.contains(&b.instance),
                    counts.get(&b.instance).copied().unwrap_or(0),
                )
            })?
            .clone();
        *counts.entry(chosen.instance.clone()).or_default() += 1;
        let guard = InFlight {
            owner: self.clone(),
            instance: chosen.instance.clone(),
        };
        Some((chosen, guard))
    }

    /// Counts one more request against `backend`, chosen by a pin.
    pub fn take(self: &Arc<Self>, backend: &Backend) -> InFlight {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *counts.entry(backend.instance.clone()).or_default() += 1;
        InFlight {
            owner: self.clone(),
            instance: backend.instance.clone(),
        }
    }

    /// Requests in flight per instance that has any.
    pub fn all(&self) -> HashMap<InstanceId, usize> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records that `instance` refused a connection just now.
    pub fn refused(&self, instance: &InstanceId) {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(instance.clone(), std::time::Instant::now());
    }

    pub fn of(&self, instance: &InstanceId) -> usize {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(instance).copied().unwrap_or(0)
    }
}

/// A pinned session: which server and instance it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub server: String,
    pub instance: InstanceId,
}

/// Session id → instance, at most `cap` of them.
#[derive(Debug)]
pub struct Pins {
    cap: usize,
    inner: Mutex<PinsInner>,
}

#[derive(Debug, Default)]
struct PinsInner {
    /// Session → its pin and the tick of its last use.
    sessions: HashMap<String, (Pin, u64)>,
    /// Tick of last use → session: the oldest is first to go.
    by_use: BTreeMap<u64, String>,
    tick: u64,
}

impl PinsInner {
    fn touch(&mut self, session: &str) -> Option<Pin> {
        self.tick += 1;
        let tick = self.tick;
        let (pin, used) = self.sessions.get_mut(session)?;
        self.by_use.remove(used);
        *used = tick;
        self.by_use.insert(tick, session.to_owned());
        Some(pin.clone())
    }
}

impl Pins {
    pub fn new(cap: usize) -> Pins {
        Pins {
            cap: cap.max(1),
            inner: Mutex::default(),
        }
    }

    /// Pins `session` to `pin` (again), evicting the least recently used
    /// session beyond the cap.
    pub fn pin(&self, session: &str, pin: Pin) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((_, used)) = inner.sessions.insert(session.to_owned(), (pin, tick)) {
            inner.by_use.remove(&used);
        }
        inner.by_use.insert(tick, session.to_owned());
        while inner.sessions.len() > self.cap {
            let Some((_, oldest)) = inner.by_use.pop_first() else {
                break;
            };
            inner.sessions.remove(&oldest);
        }
    }

    /// The pin of `session`, marked as used now.
    pub fn get(&self, session: &str) -> Option<Pin> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.touch(session)
    }

    pub fn forget(&self, session: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, used)) = inner.sessions.remove(session) {
            inner.by_use.remove(&used);
        }
    }

    /// Pinned sessions per (server, instance) that has any.
    pub fn per_instance(&self) -> HashMap<(String, InstanceId), usize> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = HashMap::new();
        for (pin, _) in inner.sessions.values() {
            *out.entry((pin.server.clone(), pin.instance.clone()))
                .or_default() += 1;
        }
        out
    }

    pub fn len(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
