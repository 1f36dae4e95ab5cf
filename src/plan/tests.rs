//! Table-driven planner tests: one row per rule of design §4, all through
//! [`check`], so a change to the planner's API touches one function.

use super::*;
use crate::runtime::{Observation, Probe, Unit, UnitState};
use crate::spec::{Canonical, SpecHash};
use crate::state::{AppliedSpec, Backoff, Instance, InstanceId, Intent, IntentOp, Snapshot, Status};
use crate::source::SourceInfo;
use crate::time::Timestamp;
use std::time::Duration;

const NOW: Timestamp = Timestamp(1_000_000);

fn desired(name: &str, replicas: u32, image: &str) -> Desired {
    Desired {
        name: name.into(),
        replicas,
        canonical: canonical(image),
        external: false,
        readiness_timeout: Duration::from_secs(60),
    }
}

fn external(name: &str) -> Desired {
    Desired { external: true, ..desired(name, 1, "url") }
}

fn canonical(image: &str) -> Canonical {
    Canonical { yaml: format!("image: {image}\ntransport: stdio\n"), hash: SpecHash(format!("h-{image}")) }
}

/// A world: what is wanted, what the snapshot says, what the runtime says.
#[derive(Default)]
struct World {
    desired: Vec<Desired>,
    snapshot: Snapshot,
    obs: Observation,
    refresh_off: bool,
    allow_empty: bool,
}

impl World {
    fn want(mut self, d: Desired) -> Self {
        self.desired.push(d);
        self
    }

    /// A server whose last applied spec was `image`.
    fn applied(mut self, name: &str, image: &str, replicas: u32) -> Self {
        let c = canonical(image);
        self.snapshot
            .servers
            .insert(name.into(), AppliedSpec { hash: c.hash, canonical: c.yaml, replicas, applied_at: Timestamp(0) });
        self
    }

    /// An instance in the snapshot, created `age` seconds ago, in `status` since then.
    fn inst(mut self, id: &str, server: &str, image: &str, status: Status, age: i64) -> Self {
        let at = Timestamp(NOW.0 - age * 1000);
        self.snapshot.instances.insert(
            InstanceId(id.into()),
            Instance {
                id: InstanceId(id.into()),
                server: server.into(),
                status,
                handle: format!("c-{id}"),
                endpoint: "stdio".into(),
                spec_hash: canonical(image).hash,
                created_at: at,
                transitioned_at: at,
                restarts: 0,
                reason: String::new(),
                history: vec![],
            },
        );
        self
    }

    /// A labelled unit in the runtime.
    fn unit(mut self, id: &str, server: &str, image: &str, state: UnitState) -> Self {
        self.obs.units.insert(
            InstanceId(id.into()),
            Unit {
                instance: InstanceId(id.into()),
                server: server.into(),
                spec_hash: canonical(image).hash,
                handle: format!("c-{id}"),
                state,
                restarts: 0,
                exit_code: None,
                last_log: None,
                endpoint: None,
            },
        );
        self
    }

    fn with_unit(mut self, id: &str, f: impl FnOnce(&mut Unit)) -> Self {
        f(self.obs.units.get_mut(&InstanceId(id.into())).expect("unit exists"));
        self
    }

    fn probe(mut self, id: &str, p: Probe) -> Self {
        self.obs.probes.insert(InstanceId(id.into()), p);
        self
    }

    /// Instance `id` plus a running unit for it: the common healthy case.
    fn running(self, id: &str, server: &str, image: &str, age: i64) -> Self {
        self.inst(id, server, image, Status::Running, age).unit(id, server, image, UnitState::Running)
    }

    fn intent(mut self, id: &str, server: &str, image: &str) -> Self {
        self.snapshot.intents.insert(
            InstanceId(id.into()),
            Intent {
                instance: InstanceId(id.into()),
                server: server.into(),
                spec_hash: canonical(image).hash,
                op: IntentOp::Create,
                at: NOW,
            },
        );
        self
    }

    fn backoff(mut self, server: &str, until_in_secs: i64) -> Self {
        self.snapshot.backoff.insert(
            server.into(),
            Backoff { failures: 1, until: Timestamp(NOW.0 + until_in_secs * 1000), reason: "crashed".into() },
        );
        self
    }

    fn run(&self) -> Result<Plan, PlanError> {
        plan(Inputs {
            desired: &self.desired,
            snapshot: &self.snapshot,
            observation: (!self.refresh_off).then_some(&self.obs),
            now: NOW,
            allow_empty: self.allow_empty,
        })
    }
}

/// Plans `world` and compares a compact line per action: `kind server instance reason`.
fn check(world: World, expected: &[&str]) {
    let plan = world.run().expect("plan succeeds");
    let got: Vec<String> = plan
        .actions
        .iter()
        .map(|a| {
            let inst = a.instance.as_ref().map_or("-".to_owned(), |i| i.0.clone());
            format!("{} {} {} {}", a.kind.as_str(), a.server, inst, a.reason)
        })
        .collect();
    assert_eq!(got, expected, "\nplan was:\n{}", render_text(&plan, false));
}

#[test]
fn new_server_starts_replicas() {
    check(World::default().want(desired("gh", 2, "v1")), &["start gh - new server", "start gh - new server"]);
}

#[test]
fn converged_fleet_plans_nothing() {
    let w = World::default().want(desired("gh", 1, "v1")).applied("gh", "v1", 1).running("a", "gh", "v1", 100);
    let plan = w.run().unwrap();
    assert!(plan.is_empty());
    assert_eq!(plan.unchanged, 1);
}

#[test]
fn created_not_ready_stays_starting() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .inst("a", "gh", "v1", Status::Starting, 5)
        .unit("a", "gh", "v1", UnitState::Running)
        .probe("a", Probe::NotReady("connection refused".into()));
    check(w, &[]);
}

#[test]
fn running_and_probe_passes_promotes() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .inst("a", "gh", "v1", Status::Starting, 5)
        .unit("a", "gh", "v1", UnitState::Running)
        .probe("a", Probe::Ready("2025-11-25 srv 1.0".into()));
    check(w, &["promote gh a ready: 2025-11-25 srv 1.0"]);
}

#[test]
fn restarting_running_instance_is_demoted_with_exit_and_log() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .running("a", "gh", "v1", 100)
        .with_unit("a", |u| {
            u.state = UnitState::Restarting;
            u.exit_code = Some(3);
            u.restarts = 4;
            u.last_log = Some("panic: boom\n".into());
        });
    check(w, &["demote gh a restarting (exit 3, restarts 4): panic: boom"]);
}

#[test]
fn a_restart_between_observations_demotes() {
    let w = World::default().want(desired("gh", 1, "v1")).running("a", "gh", "v1", 100).with_unit("a", |u| u.restarts = 1);
    check(w, &["demote gh a restarted (restarts 1)"]);
}

#[test]
fn failing_liveness_probe_demotes() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .running("a", "gh", "v1", 100)
        .probe("a", Probe::NotReady("HTTP 503 from /mcp".into()));
    check(w, &["demote gh a probe failing: HTTP 503 from /mcp"]);
}

#[test]
fn exited_instance_fails_with_last_log_line_and_waits_for_backoff() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .running("a", "gh", "v1", 100)
        .with_unit("a", |u| {
            u.state = UnitState::Exited(1);
            u.last_log = Some("fatal: bad token".into());
        });
    check(w, &["fail gh a exited (1): fatal: bad token"]);
}

#[test]
fn dead_starting_instance_fails() {
    let w = World::default().want(desired("gh", 1, "v1")).inst("a", "gh", "v1", Status::Starting, 5).unit(
        "a",
        "gh",
        "v1",
        UnitState::Dead,
    );
    check(w, &["fail gh a dead"]);
}

#[test]
fn vanished_container_fails_as_not_found() {
    let w = World::default().want(desired("gh", 1, "v1")).inst("a", "gh", "v1", Status::Running, 100);
    check(w, &["fail gh a container not found"]);
}

#[test]
fn starting_past_readiness_timeout_fails_with_probe_cause() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .inst("a", "gh", "v1", Status::Starting, 61)
        .unit("a", "gh", "v1", UnitState::Running)
        .probe("a", Probe::NotReady("HTTP 503 from /mcp".into()));
    check(w, &["fail gh a not ready after 1m: HTTP 503 from /mcp"]);
}

#[test]
fn crash_looping_starting_instance_times_out_with_exit_and_log() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .inst("a", "gh", "v1", Status::Starting, 61)
        .unit("a", "gh", "v1", UnitState::Restarting)
        .with_unit("a", |u| {
            u.exit_code = Some(2);
            u.restarts = 7;
            u.last_log = Some("cannot bind".into());
        });
    check(w, &["fail gh a not ready after 1m: restarting (exit 2, restarts 7): cannot bind"]);
}

#[test]
fn error_instance_waits_during_backoff() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .applied("gh", "v1", 1)
        .inst("a", "gh", "v1", Status::Error, 100)
        .unit("a", "gh", "v1", UnitState::Exited(1))
        .backoff("gh", 30);
    check(w, &[]);
}

#[test]
fn error_instance_is_removed_and_replaced_after_backoff() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .applied("gh", "v1", 1)
        .inst("a", "gh", "v1", Status::Error, 100)
        .unit("a", "gh", "v1", UnitState::Exited(1))
        .backoff("gh", -1);
    check(w, &["remove gh a clean up failed instance", "start gh - replace failed instance"]);
}

#[test]
fn error_instance_of_a_server_scaled_to_zero_is_removed_even_in_backoff() {
    let w = World::default()
        .want(desired("gh", 0, "v1"))
        .applied("gh", "v1", 1)
        .inst("a", "gh", "v1", Status::Error, 100)
        .backoff("gh", 30);
    check(w, &["remove gh a clean up failed instance"]);
}

#[test]
fn fewer_active_than_replicas_starts_the_missing() {
    let w = World::default().want(desired("gh", 3, "v1")).applied("gh", "v1", 1).running("a", "gh", "v1", 100);
    check(w, &["start gh - scale up 1 -> 3", "start gh - scale up 1 -> 3"]);
}

#[test]
fn surplus_removes_starting_before_running_then_oldest() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .applied("gh", "v1", 4)
        .running("old", "gh", "v1", 300)
        .running("mid", "gh", "v1", 200)
        .running("new", "gh", "v1", 100)
        .inst("starting", "gh", "v1", Status::Starting, 10)
        .unit("starting", "gh", "v1", UnitState::Running);
    check(w, &["remove gh mid scale down 4 -> 1", "remove gh old scale down 4 -> 1", "remove gh starting scale down 4 -> 1"]);
}

#[test]
fn changed_spec_replaces_every_instance_with_a_diff() {
    let w = World::default()
        .want(desired("gh", 2, "v2"))
        .applied("gh", "v1", 2)
        .running("a", "gh", "v1", 100)
        .running("b", "gh", "v1", 100);
    let plan = w.run().unwrap();
    assert_eq!(plan.count(ActionKind::Replace), 2);
    let diff = plan.actions[0].diff.as_deref().expect("replace carries a diff");
    assert!(diff.contains("-image: v1") && diff.contains("+image: v2"), "{diff}");
    check(w, &["replace gh a spec changed", "replace gh b spec changed"]);
}

#[test]
fn replace_without_known_old_spec_names_hashes() {
    let w = World::default().want(desired("gh", 1, "v2")).running("a", "gh", "v1", 100);
    check(w, &["replace gh a spec hash h-v1 -> h-v2"]);
}

#[test]
fn scale_down_and_spec_change_removes_outdated_first() {
    let w = World::default()
        .want(desired("gh", 1, "v2"))
        .applied("gh", "v1", 2)
        .running("a", "gh", "v1", 100)
        .running("b", "gh", "v2", 200);
    check(w, &["remove gh a scale down 2 -> 1"]);
}

#[test]
fn server_deleted_from_source_is_pruned() {
    let w = World::default()
        .want(desired("keep", 1, "v1"))
        .applied("keep", "v1", 1)
        .running("k", "keep", "v1", 100)
        .applied("gone", "v1", 2)
        .running("g1", "gone", "v1", 100)
        .inst("g2", "gone", "v1", Status::Error, 100);
    check(w, &["remove gone g1 server gone removed from source", "remove gone g2 server gone removed from source"]);
}

#[test]
fn replicas_zero_removes_every_instance() {
    let w = World::default().want(desired("gh", 0, "v1")).applied("gh", "v1", 1).running("a", "gh", "v1", 100);
    check(w, &["remove gh a scale down 1 -> 0"]);
}

#[test]
fn unknown_unit_with_recorded_intent_is_adopted() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .applied("gh", "v1", 1)
        .unit("x", "gh", "v1", UnitState::Running)
        .intent("x", "gh", "v1");
    check(w, &["adopt gh x created by an interrupted apply"]);
}

#[test]
fn unknown_unit_without_intent_is_removed_as_orphan() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .applied("gh", "v1", 1)
        .running("a", "gh", "v1", 100)
        .unit("x", "gh", "v1", UnitState::Running);
    check(w, &["remove gh x orphan: not in the state (running)"]);
}

#[test]
fn adopted_surplus_is_removed_not_kept() {
    // A crash after create but before the record: the retried apply also made
    // one, so the adopted one is surplus and is trimmed in the same plan.
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .applied("gh", "v1", 1)
        .running("a", "gh", "v1", 100)
        .unit("x", "gh", "v1", UnitState::Running)
        .intent("x", "gh", "v1");
    check(w, &["adopt gh x created by an interrupted apply", "remove gh x scale down 2 -> 1"]);
}

#[test]
fn external_server_starts_one_instance_and_promotes_on_probe() {
    check(World::default().want(Desired { replicas: 3, ..external("linear") }), &["start linear - new server"]);
    let w = World::default()
        .want(external("linear"))
        .applied("linear", "url", 1)
        .inst("e", "linear", "url", Status::Starting, 1)
        .probe("e", Probe::Ready("2026-07-28 linear".into()));
    check(w, &["promote linear e ready: 2026-07-28 linear"]);
}

#[test]
fn external_server_has_no_container_to_lose() {
    let w = World::default().want(external("linear")).applied("linear", "url", 1).inst("e", "linear", "url", Status::Running, 100);
    check(w, &[]);
}

#[test]
fn refresh_off_trusts_the_snapshot() {
    let mut w = World::default().want(desired("gh", 2, "v1")).applied("gh", "v1", 1).inst("a", "gh", "v1", Status::Running, 100);
    w.refresh_off = true;
    check(w, &["start gh - scale up 1 -> 2"]);
}

#[test]
fn empty_source_facing_a_fleet_is_refused_unless_allowed() {
    let w = World::default().applied("gh", "v1", 1).running("a", "gh", "v1", 100);
    let err = w.run().unwrap_err();
    assert!(err.to_string().contains("refusing to remove them all"), "{err}");
    let mut w = w;
    w.allow_empty = true;
    check(w, &["remove gh a server gh removed from source"]);
}

#[test]
fn backoff_doubles_from_ten_seconds_to_five_minutes() {
    let secs: Vec<u64> = (1..=7).map(|n| backoff_delay(n).as_secs()).collect();
    assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(backoff_delay(1000).as_secs(), 300);
}

#[test]
fn actions_are_ordered_by_server_then_kind() {
    let w = World::default()
        .want(desired("b", 1, "v1"))
        .want(desired("a", 2, "v2"))
        .applied("a", "v1", 1)
        .running("a1", "a", "v1", 100);
    check(w, &["replace a a1 spec changed", "start a - scale up 1 -> 2", "start b - new server"]);
}

#[test]
fn mixed_plan_renders_as_text_and_json() {
    let w = World::default()
        .want(desired("fetch", 2, "v1"))
        .want(desired("github", 2, "v2"))
        .want(desired("linear", 1, "v1"))
        .want(desired("notes", 1, "v1"))
        .want(desired("quiet", 1, "v1"))
        .applied("github", "v1", 2)
        .running("01jgh0000000000000000000a1", "github", "v1", 300)
        .running("01jgh0000000000000000000a2", "github", "v1", 200)
        .applied("fetch", "v1", 3)
        .running("01jfe0000000000000000000b1", "fetch", "v1", 500)
        .running("01jfe0000000000000000000b2", "fetch", "v1", 400)
        .running("01jfe0000000000000000000b3", "fetch", "v1", 300)
        .applied("notes", "v1", 1)
        .inst("01jno0000000000000000000c1", "notes", "v1", Status::Starting, 5)
        .unit("01jno0000000000000000000c1", "notes", "v1", UnitState::Running)
        .probe("01jno0000000000000000000c1", Probe::Ready("2025-11-25 notes 0.3.1".into()))
        .applied("quiet", "v1", 1)
        .running("01jqu0000000000000000000d1", "quiet", "v1", 100)
        .applied("old", "v1", 1)
        .running("01jol0000000000000000000e1", "old", "v1", 100);
    let plan = w.run().unwrap();
    insta::assert_snapshot!("mixed_plan_text", render_text(&plan, false));
    let source = SourceInfo { kind: "dir".into(), location: "fleet/".into(), revision: "sha256:0123456789abcdef".into() };
    insta::assert_json_snapshot!("mixed_plan_json", render_json(&plan, &source));
}

#[test]
fn planning_is_deterministic() {
    let build = || {
        World::default()
            .want(desired("a", 3, "v2"))
            .want(desired("b", 1, "v1"))
            .applied("a", "v1", 2)
            .running("x", "a", "v1", 10)
            .running("y", "a", "v1", 10)
            .unit("z", "b", "v1", UnitState::Running)
    };
    let (p1, p2) = (build().run().unwrap(), build().run().unwrap());
    assert_eq!(p1, p2);
    assert_eq!(render_text(&p1, false), render_text(&p2, false));
}

