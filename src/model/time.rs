//! Wall-clock time as the rest of mcpctl sees it: milliseconds since the Unix
//! epoch. The planner never reads the clock; callers pass `now` in, which is
//! what keeps planning pure and replayable in tests. Also the one exponential
//! back-off schedule ([`Doubling`]) every retry in mcpctl uses.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        #[cfg(test)]
        {
            test_clock::now()
        }
        #[cfg(not(test))]
        {
            wall_ms()
        }
    }

    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_millis() as i64))
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// RFC 3339 in UTC, for JSON output and humans.
    pub fn rfc3339(self) -> String {
        let t = UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64);
        humantime::format_rfc3339_seconds(t).to_string()
    }
}

fn wall_ms() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp(ms)
}

/// In unit tests the wall clock follows tokio's clock, so that a test on a
/// paused clock (`start_paused`) runs hours of back-offs, requeues and
/// retries in milliseconds and counts exactly what happened in them. It is
/// anchored to the wall clock once per thread (each `#[tokio::test]` has
/// its own), and moves only as tokio's clock does.
#[cfg(test)]
mod test_clock {
    use super::Timestamp;
    use std::cell::Cell;

    thread_local! {
        static ANCHOR: Cell<Option<(Timestamp, tokio::time::Instant)>> = const { Cell::new(None) };
    }

    pub fn now() -> Timestamp {
        let (wall, at) = ANCHOR.with(|a| {
            a.get().unwrap_or_else(|| {
                let anchor = (super::wall_ms(), tokio::time::Instant::now());
                a.set(Some(anchor));
                anchor
            })
        });
        wall.plus(tokio::time::Instant::now().saturating_duration_since(at))
    }
}

/// An exponential back-off: `first`, doubling after each failure in a row,
/// never more than `max`. Every retry in mcpctl (a crashing server, a failed
/// pass, a probe, a runtime's events stream) takes its pause from one of
/// these, so the rule is written once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doubling {
    pub first: Duration,
    pub max: Duration,
}

impl Doubling {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Doubling { first, max }
    }

    /// The pause after `failures` failures in a row (the first failure
    /// waits `first`; none waits nothing).
    pub fn after(self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exp = (failures - 1).min(31);
        self.first
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// Formats a duration the way `kubectl` shows ages: the two largest units.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60).replace("m0s", "m"),
        3600..=86399 => format!("{}h{}m", s / 3600, (s % 3600) / 60).replace("h0m", "h"),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600).replace("d0h", "d"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_starts_at_first_and_stops_at_max() {
        let d = Doubling::new(Duration::from_secs(10), Duration::from_secs(300));
        let pauses: Vec<u64> = (0..8).map(|n| d.after(n).as_secs()).collect();
        assert_eq!(pauses, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(d.after(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn short_durations() {
        assert_eq!(short_duration(Duration::from_secs(5)), "5s");
        assert_eq!(short_duration(Duration::from_secs(60)), "1m");
        assert_eq!(short_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(short_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(short_duration(Duration::from_secs(90000)), "1d1h");
    }
}
