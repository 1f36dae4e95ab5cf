//! Readiness and liveness checks as a reconciler runs them: which instances
//! are due for a handshake, how to reach each one (its URL, or a runtime
//! attach for stdio), and [`Prober`], which keeps the latest result of each
//! so that probing runs beside the passes instead of inside them.
//!
//! A STARTING instance is probed at once, then again with back-off (100 ms
//! doubling to 2 s) until it answers or its readiness timeout fails it. A
//! RUNNING one is probed every `readiness.period` (liveness).
//!
//! An external server's probes send its `headers`, secrets resolved from
//! the target's [`Secrets`] when the probe is spawned: they live in the
//! probe's memory only, never in a [`ProbeTarget`], the plan or the state.

use super::Target;
use crate::bridge::Bridges;
use crate::model::{
    Endpoint, HttpHeader, HttpHeaderValue, InstanceId, Observation, Snapshot, Status, Timestamp,
    UnitState,
};
use crate::plan::Desired;
use crate::probe::{self, HttpTransport, ProbeError, Readiness};
use crate::runtime::{LogLine, Runtime};
use crate::secrets::Secrets;
use crate::spec::{HeaderValue, Server, Workload};
use std::collections::BTreeMap;
use std::time::Duration;

/// One handshake attempt per probe; a slow server is retried, not waited on.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

pub type Result = Readiness;

/// Whom to probe, and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub instance: InstanceId,
    pub server: String,
    /// Container id or pod name, for an attach; `None` for external servers.
    pub handle: Option<String>,
    pub endpoint: Endpoint,
    /// The container port its spec gives, when the instance runs the spec
    /// of the source (an older one may listen elsewhere): named when a
    /// connection to it fails.
    pub port: Option<u16>,
}

/// The headers of each external server that has any, by server name.
pub type ProbeHeaders = BTreeMap<String, Vec<HttpHeader>>;

/// What an external server's probes send: its headers, secrets filled in
/// (after their prefix). Empty for other servers.
pub fn headers_of(server: &Server, secrets: &Secrets) -> Vec<HttpHeader> {
    let Workload::External(e) = &server.spec.workload else {
        return Vec::new();
    };
    e.headers
        .iter()
        .filter_map(|(name, v)| {
            let value = match v {
                HeaderValue::Plain(s) => HttpHeaderValue::Plain(s.clone()),
                // Resolution happened at plan time, so a miss cannot occur
                // here; leaving the header out shows up as a 401, not a panic.
                HeaderValue::Secret { secret_ref, prefix } => {
                    let secret = secrets.get(secret_ref)?.expose();
                    HttpHeaderValue::Sensitive(crate::model::SecretValue::new(format!(
                        "{prefix}{secret}"
                    )))
                }
            };
            Some(HttpHeader {
                name: name.clone(),
                value,
            })
        })
        .collect()
}

/// [`headers_of`] every server that has headers, for a one-shot refresh.
pub fn probe_headers(servers: &[Server], secrets: &Secrets) -> ProbeHeaders {
    servers
        .iter()
        .map(|s| (s.name.clone(), headers_of(s, secrets)))
        .filter(|(_, h)| !h.is_empty())
        .collect()
}

impl Target {
    /// What probes of `server`'s instances send.
    pub(crate) fn headers_for(&self, server: &str) -> Vec<HttpHeader> {
        self.server(server)
            .map(|(s, _)| headers_of(s, &self.secrets))
            .unwrap_or_default()
    }
}

/// One handshake with `target`: over its URL (with `headers`), or over its
/// stdio bridge in `bridges`, attaching first if it has none.
pub async fn run<R: Runtime + Sync>(
    rt: &R,
    target: &ProbeTarget,
    headers: &[HttpHeader],
    bridges: &Bridges,
) -> Readiness {
    match &target.endpoint {
        Endpoint::Http(url) => {
            let result = probe::probe_url(url, headers, HttpTransport::Auto, ATTEMPT_TIMEOUT).await;
            match (result, &target.handle) {
                // Nothing answers where the spec says: a wrong `port` more
                // often than not, and the server's own log usually says
                // where it does listen.
                (Err(e), Some(handle)) if unreachable(&e) => {
                    let lines = recent_log(rt, handle).await;
                    Readiness::not_ready(port_reason(&e.to_string(), target.port, url, &lines))
                }
                (result, _) => probe::readiness_of(result),
            }
        }
        // The attach counts against the attempt: an engine that never
        // answers it must not hold a probe (or a one-shot refresh) forever.
        Endpoint::Stdio => {
            let Some(handle) = target.handle.as_deref() else {
                return Readiness::not_ready("a stdio server with no unit to attach to");
            };
            let opened = tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                bridges.open(&target.instance, || rt.attach(handle)),
            )
            .await;
            match opened {
                // The same attach carries the gateway's clients: a check is
                // one more request on it, never a new attach.
                Ok(Ok(bridge)) => probe::readiness_of(bridge.check(ATTEMPT_TIMEOUT).await),
                Ok(Err(e)) => Readiness::not_ready(format!("cannot attach to stdio: {e}")),
                Err(_) => Readiness::not_ready(format!(
                    "cannot attach to stdio: no answer within {}",
                    crate::model::short_duration(ATTEMPT_TIMEOUT)
                )),
            }
        }
    }
}

/// Whether a failed handshake never reached a server at all: refused, or
/// cut off before any answer (a published port with nothing behind it).
fn unreachable(e: &ProbeError) -> bool {
    matches!(
        e,
        ProbeError::ConnectionRefused | ProbeError::Connect(_) | ProbeError::Closed
    )
}

/// Log lines read for a port hint: a server says where it listens when it
/// starts, and a wrong port leaves it idle after that.
const HINT_LINES: usize = 20;

/// The unit's last [`HINT_LINES`] log lines (both streams, oldest first);
/// none when the runtime cannot say in time, since they only feed a hint.
async fn recent_log<R: Runtime + Sync>(rt: &R, handle: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut keep = |l: LogLine| lines.push(l.text);
    let read = rt.logs(handle, Some(HINT_LINES), false, &mut keep);
    match tokio::time::timeout(ATTEMPT_TIMEOUT, read).await {
        Ok(Ok(())) => lines,
        Ok(Err(e)) => {
            tracing::debug!(unit = handle, error = %e, "no log lines for a port hint");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

/// The longest log line quoted in a reason, so the hint after it survives
/// the reason's cap.
const QUOTED: usize = 160;

/// Why a connection to `url` failed (`error`), with the port the spec
/// gave (`port`) and where it was reached; and, when the newest of `lines`
/// that names a listening port names another one, that line and the fix.
/// Pure, so the wording is tested without a server.
fn port_reason(error: &str, port: Option<u16>, url: &str, lines: &[String]) -> String {
    let reached = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let mut out = match port {
        Some(p) => format!("{error} on port {p} (the spec's `port`, reached at {reached})"),
        None => format!("{error} at {reached}"),
    };
    let Some(port) = port else {
        return out;
    };
    let Some((line, named, host)) = lines
        .iter()
        .rev()
        .find_map(|l| listening_port(l).map(|(p, h)| (l, p, h)))
    else {
        return out;
    };
    let mut quoted = crate::model::text::untrusted(line, &[]);
    if quoted.chars().count() > QUOTED {
        quoted = quoted.chars().take(QUOTED - 1).collect();
        quoted.push('…');
    }
    let loopback = matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1");
    if named != port {
        out.push_str(&format!(
            ", but its log says \"{quoted}\": set `port: {named}`"
        ));
    } else if loopback {
        out.push_str(&format!(
            ", but its log says \"{quoted}\": it listens on loopback only, which nothing \
             outside its container reaches; have it listen on 0.0.0.0"
        ));
    }
    out
}

/// The port a log line says the server listens on, and the host written
/// before it (empty if none): the last `host:PORT`, `port PORT` or
/// `on PORT` in a line that speaks of listening or serving. Clock times
/// (`08:15:30`) and leading zeros are not ports.
fn listening_port(line: &str) -> Option<(u16, &str)> {
    const SAYS_WHERE: [&str; 10] = [
        "listen",
        "serving",
        "running on",
        "running at",
        "started on",
        "started at",
        "bound to",
        "available on",
        "available at",
        " on port",
    ];
    let lower = line.to_ascii_lowercase();
    if !SAYS_WHERE.iter().any(|w| lower.contains(w)) {
        return None;
    }
    let bytes = line.as_bytes();
    let mut found = None;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        let end = (i..bytes.len())
            .find(|&j| !bytes[j].is_ascii_digit())
            .unwrap_or(bytes.len());
        let digits = &line[i..end];
        let number = digits
            .parse::<u16>()
            .ok()
            .filter(|&n| n > 0 && !digits.starts_with('0'));
        // More of an address, a version, a clock or a unit follows: not a
        // port. A full stop that ends a sentence does not count.
        let continues = match bytes.get(end) {
            Some(b':' | b'-') => true,
            Some(b'.') => bytes.get(end + 1).is_some_and(|b| !b.is_ascii_whitespace()),
            Some(b) => b.is_ascii_alphabetic(),
            None => false,
        };
        if let (Some(n), false) = (number, continues) {
            let before = &line[..i];
            if let Some(host_end) = before.strip_suffix(':') {
                let host_start = host_end
                    .rfind(|c: char| c.is_whitespace() || matches!(c, '/' | '(' | '"' | '\'' | '='))
                    .map_or(0, |k| k + 1);
                let host = &host_end[host_start..];
                let clock = digits.len() <= 2 && n <= 60;
                if !clock {
                    found = Some((n, host));
                }
            } else {
                let word = before
                    .trim_end_matches([' ', ':', '=', '#'])
                    .to_ascii_lowercase();
                if word.ends_with("port") || word.ends_with(" on") {
                    found = Some((n, ""));
                }
            }
        }
        i = end;
    }
    found
}

/// Every check due at `now`, ignoring what may already be in flight: for
/// one-shot commands.
pub fn due(
    snapshot: &Snapshot,
    obs: &Observation,
    desired: &[Desired],
    liveness: bool,
    now: Timestamp,
) -> Vec<ProbeTarget> {
    Prober::default().schedule(snapshot, obs, desired, liveness, now)
}

/// Whether `result`, a liveness check of the RUNNING instance `inst`,
/// leaves everything a pass decides as it is: it passed, and no failure
/// before it is waiting to be reset. Such a result brings no pass; with 25
/// stdio instances checked every 15 s, a pass per check (a list of the
/// engine's containers and a state write) was most of an idle watch's CPU.
pub fn passed_unchanged(inst: &crate::model::Instance, result: &Readiness) -> bool {
    inst.status == Status::Running
        && inst.liveness.failures == 0
        && matches!(result.probe, crate::model::Probe::Ready(_))
}

/// The delay before attempt `n + 1` of a readiness probe, after `n` failed.
/// The same schedule as one probe's own attempts: 100 ms doubling to 2 s.
fn retry_delay(failed: u32) -> Duration {
    crate::probe::BACKOFF.after(failed)
}

/// The latest result for one instance.
#[derive(Debug, Clone)]
struct Seen {
    at: Timestamp,
    result: Readiness,
    /// The status change the attempts are counted from: a demotion starts
    /// readiness probing afresh.
    since: Timestamp,
    attempts: u32,
}

/// Background probing for a reconciler: the latest result of each instance,
/// the attempts in flight, and when the next one falls due.
#[derive(Debug, Default)]
pub struct Prober {
    latest: BTreeMap<InstanceId, Seen>,
    /// In flight, with the status change they were started under.
    in_flight: BTreeMap<InstanceId, Timestamp>,
    next_due: Option<Timestamp>,
}

impl Prober {
    /// Whether the STARTING instance `inst` has answered since it became
    /// STARTING.
    pub fn answered(&self, inst: &crate::model::Instance) -> bool {
        inst.status == Status::Starting
            && self.latest.get(&inst.id).is_some_and(|s| {
                s.at >= inst.transitioned_at
                    && matches!(s.result.probe, crate::model::Probe::Ready(_))
            })
    }

    /// Puts the results the planner may act on into `obs`: for a STARTING
    /// instance, a result taken since it became STARTING; for a RUNNING
    /// one, a liveness result not yet counted.
    pub fn fill(&self, snapshot: &Snapshot, obs: &mut Observation) {
        for (id, seen) in &self.latest {
            let Some(inst) = snapshot.instances.get(id) else {
                continue;
            };
            let fresh = match inst.status {
                Status::Starting => seen.at >= inst.transitioned_at,
                Status::Running => seen.at > inst.liveness.checked_at,
                Status::Error => false,
            };
            if fresh {
                obs.probes.insert(id.clone(), seen.result.probe.clone());
                if let Some(identity) = &seen.result.identity {
                    obs.identities.insert(id.clone(), identity.clone());
                }
            }
        }
    }

    /// The checks to start now, which it then counts as in flight; and
    /// remembers when the next one not yet due falls due.
    pub fn schedule(
        &mut self,
        snapshot: &Snapshot,
        obs: &Observation,
        desired: &[Desired],
        liveness: bool,
        now: Timestamp,
    ) -> Vec<ProbeTarget> {
        let by_name: BTreeMap<&str, &Desired> =
            desired.iter().map(|d| (d.name.as_str(), d)).collect();
        self.latest
            .retain(|id, _| snapshot.instances.contains_key(id));
        self.next_due = None;
        let mut start = Vec::new();
        for inst in snapshot.instances.values() {
            if self.in_flight.contains_key(&inst.id) {
                continue;
            }
            let Some(d) = by_name.get(inst.server.as_str()) else {
                continue;
            };
            let (handle, endpoint) = if d.external {
                match &inst.endpoint {
                    Some(e) => (None, e.clone()),
                    None => continue,
                }
            } else {
                match obs.units.get(&inst.id) {
                    Some(u) if u.state == UnitState::Running => match &u.endpoint {
                        Some(e) => (Some(u.handle.clone()), e.clone()),
                        None => continue,
                    },
                    _ => continue,
                }
            };
            let seen = self.latest.get(&inst.id);
            let due_at = match inst.status {
                Status::Starting => match seen.filter(|s| s.since == inst.transitioned_at) {
                    Some(s) if matches!(s.result.probe, crate::model::Probe::Ready(_)) => {
                        // It answered; the next pass promotes it.
                        continue;
                    }
                    Some(s) => s.at.plus(retry_delay(s.attempts)),
                    None => now,
                },
                Status::Running if liveness => {
                    let last = match seen.filter(|s| s.at > inst.liveness.checked_at) {
                        // A pass that changes nothing is not waited for: the
                        // next pass records it, whenever something else
                        // brings one.
                        Some(s) if passed_unchanged(inst, &s.result) => s.at,
                        // A failure waits for the pass that counts it.
                        Some(_) => continue,
                        None => inst.liveness.checked_at,
                    };
                    last.plus(d.liveness_period)
                }
                _ => continue,
            };
            if due_at <= now {
                self.in_flight.insert(inst.id.clone(), inst.transitioned_at);
                start.push(ProbeTarget {
                    instance: inst.id.clone(),
                    server: inst.server.clone(),
                    handle,
                    endpoint,
                    port: d.port.filter(|_| inst.spec_hash == d.canonical.hash),
                });
            } else {
                self.next_due = Some(self.next_due.map_or(due_at, |n| n.min(due_at)));
            }
        }
        start
    }

    /// Records the result of a check that [`Prober::schedule`] started.
    pub fn finished(&mut self, id: InstanceId, at: Timestamp, result: Readiness) {
        let since = self.in_flight.remove(&id).unwrap_or(at);
        let attempts = match self.latest.get(&id) {
            Some(s) if s.since == since => s.attempts + 1,
            _ => 1,
        };
        self.latest.insert(
            id,
            Seen {
                at,
                result,
                since,
                attempts,
            },
        );
    }

    /// When the next check not yet started falls due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.next_due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_that_say_where_a_server_listens_give_the_port() {
        let cases: &[(&str, Option<(u16, &str)>)] = &[
            (
                "mcp-fixture: listening on 0.0.0.0:3000/mcp",
                Some((3000, "0.0.0.0")),
            ),
            (
                "Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)",
                Some((8000, "0.0.0.0")),
            ),
            ("Server started on port 9000.", Some((9000, ""))),
            ("listening on :8000", Some((8000, ""))),
            ("Listening on [::]:7070", Some((7070, "[::]"))),
            ("Example app listening on 3000", Some((3000, ""))),
            (
                "serving MCP at http://localhost:4000/mcp",
                Some((4000, "localhost")),
            ),
            ("INFO listening PORT=5050", Some((5050, ""))),
            // The clock before the address is not a port; the address is.
            (
                "2026-12-06T08:15:30.123Z INFO listening on 127.0.0.1:8080",
                Some((8080, "127.0.0.1")),
            ),
            ("2026-12-06 08:15:30 listening", None),
            // No word of listening: a client's address is not where it serves.
            ("connecting to db:5432", None),
            ("listening after 1500ms", None),
            ("listening on port 0", None),
            ("listening on port 99999", None),
            ("", None),
        ];
        for (line, want) in cases {
            assert_eq!(listening_port(line), *want, "{line:?}");
        }
    }

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn a_failed_connection_names_the_port_tried_and_the_one_the_log_names() {
        let url = "http://127.0.0.1:49153/mcp";
        let closed = "server closed the connection mid-handshake";
        let reasons = [
            // The log names another port, after an older line naming none.
            port_reason(
                closed,
                Some(8080),
                url,
                &lines(&[
                    "mcp-fixture: starting",
                    "mcp-fixture: listening on 0.0.0.0:3000/mcp",
                ]),
            ),
            // Right port, but bound to loopback inside the container.
            port_reason(
                "connection refused",
                Some(8080),
                url,
                &lines(&["INFO listening on 127.0.0.1:8080"]),
            ),
            // The log says nothing of ports, or names the right one.
            port_reason(closed, Some(8080), url, &lines(&["warming up"])),
            port_reason(
                closed,
                Some(8080),
                url,
                &lines(&["listening on 0.0.0.0:8080"]),
            ),
            // An instance of an older spec: its port is not known.
            port_reason(closed, None, url, &lines(&["listening on 0.0.0.0:3000"])),
        ];
        insta::assert_snapshot!(reasons.join("\n"));
    }

    #[test]
    fn a_quoted_log_line_is_cleaned_and_cut() {
        let long = format!(
            "\x1b[31mlistening\x1b[0m on 0.0.0.0:3000 {}",
            "x".repeat(400)
        );
        let reason = port_reason("connection refused", Some(8080), "http://h:1/mcp", &[long]);
        assert!(!reason.contains('\x1b'), "{reason}");
        assert!(
            reason.contains("\"listening on 0.0.0.0:3000 xxx"),
            "{reason}"
        );
        assert!(reason.ends_with("…\": set `port: 3000`"), "{reason}");
        assert!(reason.chars().count() < crate::model::text::CAP, "{reason}");
    }

    /// The whole path: a real probe against a port nothing listens on, and
    /// the unit's log read through the runtime.
    #[tokio::test]
    async fn a_probe_of_a_closed_port_quotes_the_port_the_log_names() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let rt = crate::runtime::fake::FakeRuntime::new();
        rt.log("c1", "mcp-fixture: listening on 0.0.0.0:3000/mcp");
        let url = format!("http://{addr}/mcp");
        let mut target = ProbeTarget {
            instance: InstanceId("i1".into()),
            server: "gh".into(),
            handle: Some("c1".into()),
            endpoint: Endpoint::Http(url),
            port: Some(8080),
        };
        let bridges = Bridges::default();
        let result = run(&rt, &target, &[], &bridges).await;
        let crate::model::Probe::NotReady(why) = &result.probe else {
            panic!("a closed port passed: {result:?}");
        };
        assert!(
            why.starts_with(
                "connection refused on port 8080 (the spec's `port`, reached at 127.0.0.1:"
            ),
            "{why}"
        );
        assert!(
            why.ends_with(
                "its log says \"mcp-fixture: listening on 0.0.0.0:3000/mcp\": set `port: 3000`"
            ),
            "{why}"
        );
        // An external server is not ours to read logs of, nor to advise on.
        target.handle = None;
        let result = run(&rt, &target, &[], &bridges).await;
        assert_eq!(
            result.probe,
            crate::model::Probe::NotReady("connection refused".into())
        );
    }

    #[test]
    fn readiness_retries_back_off_from_100_ms_to_2_s() {
        let ms: Vec<u128> = (1..=7).map(|n| retry_delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
    }
}
