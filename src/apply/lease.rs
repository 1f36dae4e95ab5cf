//! One applier per scope, whatever its state file: the lease that `apply`
//! and `watch` hold in the runtime while they act. The per-file lock (see
//! `state`) keeps two processes off one state file; this keeps two state
//! files off one fleet, which the file lock cannot see.
//!
//! The runtime offers a compare-and-swap record ([`Runtime::lease`],
//! [`Runtime::write_lease`]); this module turns it into a lease the way
//! Kubernetes leader election does. The holder rewrites the record every
//! third of its time to live. A contender that sees the same version for a
//! whole time to live, measured on its own monotonic clock from when it first
//! saw it, takes the lease over with a write after that version, so a holder
//! that died (`kill -9`, a lost host) never blocks the scope for longer than
//! that, and clocks that disagree never matter. Of racing contenders the
//! compare-and-swap lets exactly one win. A holder whose renewal loses that
//! race has lost the lease and must stop acting: [`Keeper`] says so.
//!
//! The record's own time of writing only helps a contender say early that
//! the holder is alive, never take over: see [`Busy::looks_alive`]. What
//! does allow an early take-over is proof that the holder is dead: a holder
//! in this kernel and pid namespace whose process is gone (`kill -9`, a
//! crashed CI step on the same runner); see [`is_gone`].

use crate::model::{Holder, Process, Timestamp};
use crate::runtime::{Runtime, RuntimeError};
use std::time::Duration;
use tokio::time::Instant;

/// How long a holder may go without renewing before another applier may
/// take the lease over. `MCPCTL_LEASE_TTL` (a duration such as `5s`) changes
/// it, for tests of a dead holder that should not wait half a minute.
pub const TTL: Duration = Duration::from_secs(30);

/// The time to live from `MCPCTL_LEASE_TTL`, else [`TTL`]; at least a second.
pub fn ttl_from_env() -> Duration {
    std::env::var("MCPCTL_LEASE_TTL")
        .ok()
        .and_then(|s| humantime::parse_duration(&s).ok())
        .unwrap_or(TTL)
        .max(Duration::from_secs(1))
}

/// This process, holding for `command`.
pub fn this_process(command: &str) -> Holder {
    let mut id = [0u8; 8];
    // A failed random source leaves zeros; the pid and time still tell holders apart.
    let _ = getrandom::fill(&mut id);
    let pid = std::process::id();
    Holder {
        id: hex::encode(id),
        host: host_name(),
        pid,
        command: command.to_owned(),
        started_at: Timestamp::now(),
        process: kernel().and_then(|kernel| {
            Some(Process {
                kernel,
                start: start_time(pid)?,
            })
        }),
    }
}

/// The host name, for the holder's description: the kernel's on Linux, else
/// `$HOSTNAME`, else `unknown`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// This kernel's boot id and this process's pid namespace (Linux only).
fn kernel() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), ns.display()))
}

/// A process's start time from `/proc/<pid>/stat`; `None` when there is no
/// such process (or no `/proc`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, field 2, is in parentheses and may hold spaces or
    // parentheses itself: count fields from the last `)`, which ends it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `holder` is a process of this kernel and pid namespace that no
/// longer runs: then its lease may be taken over at once. `false` when that
/// cannot be told (another host, a container's own namespace).
pub fn is_gone(holder: &Holder) -> bool {
    let Some(p) = &holder.process else {
        return false;
    };
    if kernel().as_deref() != Some(p.kernel.as_str()) {
        return false;
    }
    start_time(holder.pid) != Some(p.start)
}

/// How long a release may take on the way out.
pub const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// Someone else holds the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// `None` when the holder could not be read (it had just written).
    pub holder: Option<Holder>,
    /// When its holder last wrote it, by the holder's clock.
    pub renewed_at: Option<Timestamp>,
    /// The record changed while this contender watched it: its holder is
    /// alive, whatever the clocks say.
    pub renewed_while_watched: bool,
    /// By this process's clock the holder renewed within the time to live.
    /// Clocks may disagree, so this only ever refuses sooner: taking over
    /// waits for a whole time to live with no write seen.
    pub looks_alive: bool,
    /// How long until this contender may take over if nothing is written meanwhile.
    pub takeover_in: Duration,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.holder {
            Some(h) => write!(f, "{h}")?,
            None => f.write_str("another applier")?,
        }
        if let Some(at) = self.renewed_at {
            write!(
                f,
                ", last renewed {} ago",
                crate::model::short_duration(Timestamp::now().since(at))
            )?;
        }
        Ok(())
    }
}

/// What one attempt to take the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours, at this version.
    Held(String),
    Busy(Busy),
}

/// Takes a scope's lease for one holder, attempt by attempt, remembering
/// what it saw between attempts so that it can tell a dead holder (a
/// record that stays the same) from a live one.
#[derive(Debug)]
pub struct Claimer {
    me: Holder,
    ttl: Duration,
    /// The version last seen held by another, when it was first seen, and
    /// whether an earlier version was seen before it.
    seen: Option<(String, Instant, bool)>,
}

impl Claimer {
    pub fn new(me: Holder, ttl: Duration) -> Claimer {
        Claimer {
            me,
            ttl,
            seen: None,
        }
    }

    pub fn holder(&self) -> &Holder {
        &self.me
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// One attempt: reads the lease and writes it when it is free, ours
    /// from before (an outage made us stop renewing), or left unrenewed for
    /// its time to live since this claimer first saw it.
    pub async fn attempt<R: Runtime>(&mut self, rt: &R) -> Result<Claim, RuntimeError> {
        let lease = rt.lease().await?;
        let after = match &lease {
            None => None,
            Some(l) => match &l.holder {
                Some(h) if h.id != self.me.id => {
                    let now = Instant::now();
                    let busy = |since: Instant, changed: bool| {
                        Claim::Busy(Busy {
                            holder: Some(h.clone()),
                            renewed_at: Some(l.renewed_at),
                            renewed_while_watched: changed,
                            looks_alive: Timestamp::now().since(l.renewed_at) < l.ttl,
                            takeover_in: l.ttl.saturating_sub(now - since),
                        })
                    };
                    match &self.seen {
                        _ if is_gone(h) => {
                            tracing::warn!(holder = %h, "taking over an applier lease whose holder no longer runs");
                        }
                        Some((v, since, _)) if *v == l.version => {
                            if now - *since < l.ttl {
                                return Ok(busy(*since, self.changed()));
                            }
                            // Unrenewed for a whole time to live: its holder is gone.
                            tracing::warn!(holder = %h, "taking over an applier lease its holder stopped renewing");
                        }
                        _ => {
                            let changed = self.seen.is_some();
                            self.seen = Some((l.version.clone(), now, changed));
                            return Ok(busy(now, changed));
                        }
                    }
                    Some(l.version.as_str())
                }
                // Released, or ours from before.
                _ => Some(l.version.as_str()),
            },
        };
        match rt.write_lease(after, Some(&self.me), self.ttl).await? {
            Some(version) => {
                self.seen = None;
                Ok(Claim::Held(version))
            }
            // Another contender wrote first: it holds it now, and the next
            // attempt reads who.
            None => Ok(Claim::Busy(Busy {
                holder: None,
                renewed_at: None,
                renewed_while_watched: true,
                looks_alive: true,
                takeover_in: self.ttl,
            })),
        }
    }

    fn changed(&self) -> bool {
        self.seen.as_ref().is_some_and(|(_, _, changed)| *changed)
    }
}

/// The lease as its holder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Ours, at this version.
    Held(String),
    /// Not ours (yet, or any more); the text says why, for `/healthz`.
    Waiting(String),
}

/// Keeps a lease: renews it every third of its time to live while it is
/// held, and claims it again when it is lost, publishing every change of
/// [`Standing`]. Renewal that fails on a passing fault (an engine restart)
/// keeps trying; only a renewal that cannot have succeeded for two thirds of
/// the time to live, or a write that another holder won, gives it up, so
/// that we stop acting before anyone may take over.
pub struct Keeper {
    claimer: Claimer,
    standing: tokio::sync::watch::Sender<Standing>,
}

impl Keeper {
    /// A keeper for a lease already held at `version`.
    pub fn new(claimer: Claimer, version: String) -> Keeper {
        Keeper {
            claimer,
            standing: tokio::sync::watch::Sender::new(Standing::Held(version)),
        }
    }

    /// Follows the standing.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Standing> {
        self.standing.subscribe()
    }

    pub fn standing(&self) -> Standing {
        self.standing.borrow().clone()
    }

    /// Renews and reclaims until dropped. Never returns.
    pub async fn keep<R: Runtime>(&mut self, rt: &R) -> std::convert::Infallible {
        let ttl = self.claimer.ttl;
        let every = ttl / 3;
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(match self.standing() {
                Standing::Held(_) => every,
                // A contender looks often enough to notice a release at once
                // and a dead holder within a pause of its time to live.
                Standing::Waiting(_) => every.min(Duration::from_secs(1)),
            })
            .await;
            match self.standing() {
                Standing::Held(version) => {
                    match rt
                        .write_lease(Some(&version), Some(&self.claimer.me), ttl)
                        .await
                    {
                        Ok(Some(v)) => {
                            renewed = Instant::now();
                            self.standing.send_replace(Standing::Held(v));
                        }
                        Ok(None) => {
                            tracing::error!("lost the applier lease: another applier took it over");
                            self.standing.send_replace(Standing::Waiting(
                                "another applier took the applier lease over; waiting to take it back"
                                    .into(),
                            ));
                        }
                        Err(e) if renewed.elapsed() >= ttl * 2 / 3 => {
                            tracing::error!(error = %e, "cannot renew the applier lease; stopping work until it is ours again");
                            self.standing.send_replace(Standing::Waiting(format!(
                                "cannot renew the applier lease: {e}"
                            )));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot renew the applier lease; retrying")
                        }
                    }
                }
                Standing::Waiting(_) => match self.claimer.attempt(rt).await {
                    Ok(Claim::Held(v)) => {
                        renewed = Instant::now();
                        tracing::info!("holding the applier lease again");
                        self.standing.send_replace(Standing::Held(v));
                    }
                    Ok(Claim::Busy(b)) => {
                        self.standing.send_replace(Standing::Waiting(format!(
                            "the applier lease is held by {b}"
                        )));
                    }
                    Err(e) => {
                        self.standing.send_replace(Standing::Waiting(format!(
                            "cannot read the applier lease: {e}"
                        )));
                    }
                },
            }
        }
    }

    /// Gives the lease up, so that the next applier need not wait out its
    /// time to live. Best effort, and brief ([`RELEASE_WAIT`]): it runs on
    /// the way out, when a hung engine must not hold the exit; a lease left
    /// behind expires, or is seen gone with its process.
    pub async fn release<R: Runtime>(&self, rt: &R) {
        if let Standing::Held(version) = self.standing() {
            let write = rt.write_lease(Some(&version), None, self.claimer.ttl);
            match tokio::time::timeout(RELEASE_WAIT, write).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot release the applier lease; it expires on its own")
                }
                Err(_) => tracing::warn!(
                    "the runtime did not take the lease's release in time; it expires on its own"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;

    fn claimer(command: &str) -> Claimer {
        Claimer::new(this_process(command), Duration::from_secs(30))
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_lease_is_taken_and_a_held_one_refused_naming_its_holder() {
        let rt = FakeRuntime::new();
        let mut a = claimer("mcpctl watch");
        let mut b = claimer("mcpctl apply");
        assert!(matches!(a.attempt(&rt).await.unwrap(), Claim::Held(_)));
        let Claim::Busy(busy) = b.attempt(&rt).await.unwrap() else {
            panic!("a held lease was taken");
        };
        assert!(busy.looks_alive);
        assert!(!busy.renewed_while_watched);
        assert_eq!(
            busy.holder.as_ref().map(|h| h.id.as_str()),
            Some(a.holder().id.as_str())
        );
        assert!(busy.to_string().starts_with("mcpctl watch (pid "), "{busy}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_left_unrenewed_for_its_ttl_is_taken_over_and_not_before() {
        let rt = FakeRuntime::new();
        let mut dead = claimer("mcpctl watch");
        assert!(matches!(dead.attempt(&rt).await.unwrap(), Claim::Held(_)));
        let mut b = claimer("mcpctl apply");
        assert!(matches!(b.attempt(&rt).await.unwrap(), Claim::Busy(_)));
        tokio::time::advance(Duration::from_secs(29)).await;
        let Claim::Busy(busy) = b.attempt(&rt).await.unwrap() else {
            panic!("taken over before its time to live");
        };
        assert_eq!(busy.takeover_in, Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(b.attempt(&rt).await.unwrap(), Claim::Held(_)));
        let lease = rt.lease().await.unwrap().unwrap();
        assert_eq!(lease.holder.unwrap().id, b.holder().id);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewing_holder_is_never_taken_over_and_its_contender_learns_it_is_alive() {
        let rt = FakeRuntime::new();
        let mut a = claimer("mcpctl watch");
        let Claim::Held(v) = a.attempt(&rt).await.unwrap() else {
            panic!("free lease refused");
        };
        let mut keeper = Keeper::new(a, v);
        let mut b = claimer("mcpctl apply");
        let contender = async {
            for _ in 0..20 {
                let claim = b.attempt(&rt).await.unwrap();
                let Claim::Busy(busy) = claim else {
                    return Err("taken over from a live holder");
                };
                if busy.renewed_while_watched {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err("never saw a renewal")
        };
        let seen = tokio::select! {
            r = contender => r,
            never = keeper.keep(&rt) => match never {},
        };
        assert_eq!(seen, Ok(()));
        assert!(matches!(keeper.standing(), Standing::Held(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_was_taken_over_stops_and_waits_to_take_it_back() {
        let rt = FakeRuntime::new();
        let mut a = claimer("mcpctl watch");
        let Claim::Held(v) = a.attempt(&rt).await.unwrap() else {
            panic!("free lease refused");
        };
        let mut keeper = Keeper::new(a, v.clone());
        let mut standing = keeper.subscribe();
        // Someone else writes after our version, as a take-over does.
        let other = this_process("mcpctl apply");
        rt.write_lease(Some(&v), Some(&other), Duration::from_secs(30))
            .await
            .unwrap()
            .expect("the write after the current version wins");
        let lost = async {
            standing
                .wait_for(|s| matches!(s, Standing::Waiting(_)))
                .await
                .map(|s| s.clone())
        };
        let lost = tokio::select! {
            s = lost => s.expect("standing published"),
            never = keeper.keep(&rt) => match never {},
        };
        let Standing::Waiting(why) = lost else {
            unreachable!()
        };
        assert!(why.contains("took the applier lease over"), "{why}");
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_survives_a_short_outage_and_gives_up_before_anyone_may_take_over() {
        let rt = FakeRuntime::new();
        let mut a = claimer("mcpctl watch");
        let Claim::Held(v) = a.attempt(&rt).await.unwrap() else {
            panic!("free lease refused");
        };
        let mut keeper = Keeper::new(a, v);
        let mut standing = keeper.subscribe();
        rt.set_down(true);
        let began = Instant::now();
        let gave_up = async {
            standing
                .wait_for(|s| matches!(s, Standing::Waiting(_)))
                .await
                .map(|_| began.elapsed())
        };
        let after = tokio::select! {
            t = gave_up => t.expect("standing published"),
            never = keeper.keep(&rt) => match never {},
        };
        // Renewals every 10 s; the one at 20 s is the first past two thirds.
        assert_eq!(after, Duration::from_secs(20));
        assert!(
            after < Duration::from_secs(30),
            "stops before a take-over is allowed"
        );
        // Back up: ours again, with no other applier in between.
        rt.set_down(false);
        let back = async {
            standing
                .wait_for(|s| matches!(s, Standing::Held(_)))
                .await
                .map(|_| ())
        };
        tokio::select! {
            r = back => r.expect("standing published"),
            never = keeper.keep(&rt) => match never {},
        }
    }

    #[test]
    fn a_holder_in_this_kernel_is_alive_while_its_process_runs() {
        let me = this_process("mcpctl apply");
        assert!(me.process.is_some(), "Linux: /proc tells");
        assert!(!is_gone(&me), "this very process runs");
        // A process that has exited: same kernel, its pid now unused.
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        let start = start_time(pid);
        child.wait().expect("wait");
        let gone = Holder {
            pid,
            process: Some(Process {
                kernel: kernel().expect("kernel"),
                start: start.unwrap_or(1),
            }),
            ..me.clone()
        };
        assert!(is_gone(&gone));
        // Another kernel or namespace: cannot tell, so not gone.
        let elsewhere = Holder {
            process: Some(Process {
                kernel: "another-boot/pid:[1]".into(),
                start: 1,
            }),
            ..gone.clone()
        };
        assert!(!is_gone(&elsewhere));
        assert!(!is_gone(&Holder {
            process: None,
            ..gone
        }));
        // A recycled pid: the same pid, another start time.
        let recycled = Holder {
            pid: std::process::id(),
            process: Some(Process {
                kernel: kernel().expect("kernel"),
                start: start_time(std::process::id()).expect("own start") + 1,
            }),
            ..me
        };
        assert!(is_gone(&recycled));
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_of_a_holder_that_no_longer_runs_is_taken_over_at_once() {
        let rt = FakeRuntime::new();
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        let start = start_time(pid);
        child.wait().expect("wait");
        let dead = Holder {
            pid,
            process: Some(Process {
                kernel: kernel().expect("kernel"),
                start: start.unwrap_or(1),
            }),
            ..this_process("mcpctl apply")
        };
        rt.write_lease(None, Some(&dead), Duration::from_secs(30))
            .await
            .unwrap()
            .expect("first write");
        let mut b = claimer("mcpctl apply");
        assert!(matches!(b.attempt(&rt).await.unwrap(), Claim::Held(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_lease_is_free_at_once() {
        let rt = FakeRuntime::new();
        let mut a = claimer("mcpctl apply");
        let Claim::Held(v) = a.attempt(&rt).await.unwrap() else {
            panic!("free lease refused");
        };
        let keeper = Keeper::new(a, v);
        keeper.release(&rt).await;
        let mut b = claimer("mcpctl watch");
        assert!(matches!(b.attempt(&rt).await.unwrap(), Claim::Held(_)));
    }
}
