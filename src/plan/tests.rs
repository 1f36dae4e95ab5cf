//! Table-driven planner tests: one row per rule of design §4, all through
//! [`check`], so a change to the planner's API touches one function.

use super::*;
use crate::model::{
    AppliedSpec, Backoff, Endpoint, Instance, InstanceId, Intent, IntentOp, Observation,
    PreviousSpec, Probe, Snapshot, SpecHash, Status, Timestamp, Unit, UnitState,
};
use crate::source::SourceInfo;
use crate::spec::Canonical;
use std::time::Duration;

const NOW: Timestamp = Timestamp(1_000_000);

fn desired(name: &str, replicas: u32, image: &str) -> Desired {
    Desired {
        name: name.into(),
        replicas,
        canonical: canonical(image),
        external: false,
        readiness_timeout: Duration::from_secs(60),
        liveness_period: Duration::from_secs(15),
        min_ready: Duration::from_secs(2),
        max_restarts: 3,
        port: None,
    }
}

fn external(name: &str) -> Desired {
    Desired {
        external: true,
        ..desired(name, 1, "url")
    }
}

fn canonical(image: &str) -> Canonical {
    Canonical {
        yaml: format!("image: {image}\ntransport: stdio\n"),
        hash: SpecHash(format!("h-{image}")),
    }
}

/// A world: what is wanted, what the snapshot says, what the runtime says.
#[derive(Debug, Clone, Default)]
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
        self.snapshot.servers.insert(
            name.into(),
            AppliedSpec {
                hash: c.hash,
                canonical: c.yaml,
                replicas,
                applied_at: Timestamp(0),
                previous: None,
            },
        );
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
                handle: Some(format!("c-{id}")),
                endpoint: Some(Endpoint::Stdio),
                spec_hash: canonical(image).hash,
                created_at: at,
                transitioned_at: at,
                restarts: 0,
                restarts_at_start: 0,
                reason: String::new(),
                history: vec![],
                mcp: None,
                // Checked just now, so no liveness check is due in these tables.
                liveness: crate::model::Liveness {
                    failures: 0,
                    checked_at: NOW,
                },
                replaces: None,
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
                restarts: None,
                exit_code: None,
                last_log: None,
                endpoint: None,
                // Up for long enough that the stability window has passed.
                started_at: Some(Timestamp(NOW.0 - 100_000)),
            },
        );
        self
    }

    fn with_unit(mut self, id: &str, f: impl FnOnce(&mut Unit)) -> Self {
        f(self
            .obs
            .units
            .get_mut(&InstanceId(id.into()))
            .expect("unit exists"));
        self
    }

    fn probe(mut self, id: &str, p: Probe) -> Self {
        self.obs.probes.insert(InstanceId(id.into()), p);
        self
    }

    /// Instance `id` plus a running unit for it: the common healthy case.
    fn running(self, id: &str, server: &str, image: &str, age: i64) -> Self {
        self.inst(id, server, image, Status::Running, age).unit(
            id,
            server,
            image,
            UnitState::Running,
        )
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
                replaces: None,
            },
        );
        self
    }

    fn backoff(mut self, server: &str, until_in_secs: i64) -> Self {
        self.snapshot.backoff.insert(
            server.into(),
            Backoff {
                failures: 1,
                until: Timestamp(NOW.0 + until_in_secs * 1000),
                reason: "crashed".into(),
                spec_hash: None,
            },
        );
        self
    }

    /// A back-off recorded for the spec of `image`, as apply records it.
    fn backoff_of(mut self, server: &str, until_in_secs: i64, image: &str) -> Self {
        self = self.backoff(server, until_in_secs);
        if let Some(b) = self.snapshot.backoff.get_mut(server) {
            b.spec_hash = Some(canonical(image).hash);
        }
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

/// What each runtime fills in when it observes a unit: the planner must
/// give the same plan whichever one reported it.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// As the tables write them: Docker's list, plus the inspect it makes
    /// of units whose status is in question (`restarts` only when known,
    /// container ids as handles).
    Docker,
    /// A pod list: every unit carries its restart count, pods are named
    /// `mcpctl-<server>-<instance>`.
    Kubernetes,
}

impl Shape {
    fn observe(self, mut world: World) -> World {
        if let Shape::Kubernetes = self {
            for (id, unit) in world.obs.units.iter_mut() {
                // The kubelet's count, which has not moved unless a table says so.
                let recorded = world.snapshot.instances.get(id).map_or(0, |i| i.restarts);
                unit.restarts = unit.restarts.or(Some(recorded));
                unit.handle = format!("mcpctl-{}-{id}", unit.server);
            }
            for (id, inst) in world.snapshot.instances.iter_mut() {
                if inst.handle.is_some() {
                    inst.handle = Some(format!("mcpctl-{}-{id}", inst.server));
                }
            }
        }
        world
    }
}

/// Plans `world` with units shaped like each runtime's, and compares a
/// compact line per action: `kind server instance reason`, and `[waiting:
/// ...]` for an action a pass leaves for later.
fn check(world: World, expected: &[&str]) {
    for shape in [Shape::Docker, Shape::Kubernetes] {
        check_shaped(shape, shape.observe(world.clone()), expected);
    }
}

fn check_shaped(shape: Shape, world: World, expected: &[&str]) {
    let plan = world.run().expect("plan succeeds");
    let got: Vec<String> = plan
        .actions
        .iter()
        .map(|a| {
            let inst = a.instance.as_ref().map_or("-".to_owned(), |i| i.0.clone());
            let waiting = a
                .waiting
                .as_ref()
                .map(|w| format!(" [waiting: {w}]"))
                .unwrap_or_default();
            format!(
                "{} {} {} {}{waiting}",
                a.kind.as_str(),
                a.server,
                inst,
                a.reason
            )
        })
        .collect();
    assert_eq!(
        got,
        expected,
        "\nunits shaped like {shape:?}'s; plan was:\n{}",
        render_text(&plan, false)
    );
}

#[test]
fn new_server_starts_replicas() {
    check(
        World::default().want(desired("gh", 2, "v1")),
        &["start gh - new server", "start gh - new server"],
    );
}

#[test]
fn converged_fleet_plans_nothing() {
    for shape in [Shape::Docker, Shape::Kubernetes] {
        let w = World::default()
            .want(desired("gh", 1, "v1"))
            .applied("gh", "v1", 1)
            .running("a", "gh", "v1", 100);
        let plan = shape.observe(w).run().unwrap();
        assert!(plan.is_empty(), "{shape:?}");
        assert_eq!(plan.unchanged, 1, "{shape:?}");
    }
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
            u.restarts = Some(4);
            u.last_log = Some("panic: boom\n".into());
        });
    check(
        w,
        &["demote gh a restarting (exit 3, restarts 4): panic: boom"],
    );
}

#[test]
fn a_restart_between_observations_demotes() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .running("a", "gh", "v1", 100)
        .with_unit("a", |u| u.restarts = Some(1));
    check(w, &["demote gh a restarting (restarts 1)"]);
}

#[test]
fn failing_liveness_probe_demotes_on_the_third_failure_in_a_row() {
    let build = |failures_before: u32| {
        let mut w = World::default()
            .want(desired("gh", 1, "v1"))
            .running("a", "gh", "v1", 100)
            .probe("a", Probe::NotReady("HTTP 503 from /mcp".into()));
        if let Some(i) = w.snapshot.instances.get_mut(&InstanceId("a".into())) {
            i.liveness.failures = failures_before;
        }
        w
    };
    check(build(0), &[]);
    check(build(1), &[]);
    check(
        build(2),
        &["demote gh a liveness probe failed 3 times in a row: HTTP 503 from /mcp"],
    );
}

#[test]
fn a_stopped_container_fails_with_its_last_line_and_is_replaced_at_once() {
    // Exited: our runtimes restart whatever exits on its own, so somebody
    // stopped it. Not the server's failure: no back-off.
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .applied("gh", "v1", 1)
        .running("a", "gh", "v1", 100)
        .with_unit("a", |u| {
            u.state = UnitState::Exited(1);
            u.last_log = Some("fatal: bad token".into());
        });
    check(
        w,
        &[
            "fail gh a exited (1): fatal: bad token",
            "remove gh a clean up failed instance",
            "start gh - replace failed instance",
        ],
    );
}

#[test]
fn a_dead_container_fails_and_waits_for_the_backoff() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .applied("gh", "v1", 1)
        .running("a", "gh", "v1", 100)
        .with_unit("a", |u| u.state = UnitState::Dead);
    check(w, &["fail gh a dead"]);
}

#[test]
fn dead_starting_instance_fails() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .inst("a", "gh", "v1", Status::Starting, 5)
        .unit("a", "gh", "v1", UnitState::Dead);
    check(w, &["fail gh a dead"]);
}

#[test]
fn vanished_container_fails_as_not_found_and_is_replaced_at_once() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .applied("gh", "v1", 1)
        .inst("a", "gh", "v1", Status::Running, 100);
    check(
        w,
        &[
            "fail gh a container not found",
            "remove gh a clean up failed instance",
            "start gh - replace failed instance",
        ],
    );
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
fn a_unit_never_started_past_the_timeout_fails_with_the_runtimes_reason() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .inst("a", "gh", "v1", Status::Starting, 61)
        .unit("a", "gh", "v1", UnitState::Created)
        .with_unit("a", |u| u.started_at = None);
    check(
        w.clone(),
        &["fail gh a not ready after 1m: container created but never started"],
    );
    // A pod the scheduler could not place says why.
    let w = w.with_unit("a", |u| {
        u.last_log = Some("Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.".into())
    });
    check(
        w,
        &[
            "fail gh a not ready after 1m: container created but never started: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.",
        ],
    );
}

#[test]
fn restarts_while_starting_become_a_crash_loop_at_max_restarts() {
    let build = |restarts: u32| {
        World::default()
            .want(desired("gh", 1, "v1"))
            .inst("a", "gh", "v1", Status::Starting, 5)
            .unit("a", "gh", "v1", UnitState::Running)
            .with_unit("a", |u| {
                u.exit_code = Some(3);
                u.restarts = Some(restarts);
                u.last_log = Some("crashing on purpose".into());
                u.started_at = Some(NOW);
            })
            .probe("a", Probe::Ready("srv 1.0".into()))
    };
    // Answering, but restarted and not up for the window: still STARTING.
    check(build(2), &[]);
    check(
        build(3),
        &["fail gh a crash loop: exit 3, 3 restarts: crashing on purpose"],
    );
}

#[test]
fn a_demoted_instance_counts_restarts_from_its_demotion() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .inst("a", "gh", "v1", Status::Starting, 5)
        .unit("a", "gh", "v1", UnitState::Restarting)
        .with_unit("a", |u| u.restarts = Some(9));
    let mut w = w;
    let inst = w
        .snapshot
        .instances
        .get_mut(&InstanceId("a".into()))
        .expect("a");
    inst.restarts = 7;
    inst.restarts_at_start = 7;
    check(w.clone(), &[]);
    w.obs
        .units
        .get_mut(&InstanceId("a".into()))
        .expect("unit")
        .restarts = Some(10);
    check(w, &["fail gh a crash loop: 10 restarts"]);
}

#[test]
fn an_instance_that_answers_is_promoted_only_once_up_for_min_ready() {
    let build = |up_ms: i64| {
        World::default()
            .want(desired("gh", 1, "v1"))
            .inst("a", "gh", "v1", Status::Starting, 5)
            .unit("a", "gh", "v1", UnitState::Running)
            .with_unit("a", |u| u.started_at = Some(Timestamp(NOW.0 - up_ms)))
            .probe("a", Probe::Ready("srv 1.0".into()))
    };
    let young = build(500);
    check(young.clone(), &[]);
    assert_eq!(
        young.run().unwrap().requeue_at,
        Some(Timestamp(NOW.0 + 1_500)),
        "looked at again when the 2 s window ends"
    );
    check(build(2_000), &["promote gh a ready: srv 1.0"]);
    // minReady: 0s promotes the moment it answers.
    let mut now = build(0);
    now.desired[0].min_ready = Duration::ZERO;
    check(now, &["promote gh a ready: srv 1.0"]);
}

#[test]
fn an_answer_that_never_stays_up_times_out_saying_so() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .inst("a", "gh", "v1", Status::Starting, 61)
        .unit("a", "gh", "v1", UnitState::Running)
        .with_unit("a", |u| u.started_at = Some(Timestamp(NOW.0 - 500)))
        .probe("a", Probe::Ready("srv 1.0".into()));
    check(
        w,
        &["fail gh a not ready after 1m: answered but not up for 2s without a restart"],
    );
}

#[test]
fn a_restart_loop_slower_than_max_restarts_times_out_with_its_crash() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .inst("a", "gh", "v1", Status::Starting, 61)
        .unit("a", "gh", "v1", UnitState::Restarting)
        .with_unit("a", |u| {
            u.exit_code = Some(2);
            u.restarts = Some(2);
            u.last_log = Some("cannot bind".into());
        });
    check(
        w,
        &["fail gh a not ready after 1m: restarting (exit 2, restarts 2): cannot bind"],
    );
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
fn a_back_off_holds_only_the_spec_that_failed() {
    let failed = || {
        World::default()
            .applied("gh", "v1", 1)
            .inst("a", "gh", "v1", Status::Error, 100)
            .unit("a", "gh", "v1", UnitState::Exited(1))
            .backoff_of("gh", 30, "v1")
    };
    // The same spec waits out its back-off...
    check(failed().want(desired("gh", 1, "v1")), &[]);
    // ...but the fix for it (an image typo corrected, say) starts at once,
    // and `plan` says so instead of "No changes".
    check(
        failed().want(desired("gh", 1, "v2")),
        &[
            "remove gh a clean up failed instance",
            "start gh - replace failed instance",
        ],
    );
}

#[test]
fn a_crash_of_an_outdated_spec_holds_back_no_start_of_the_new_one() {
    let w = World::default()
        .want(desired("gh", 1, "v2"))
        .applied("gh", "v1", 1)
        .running("a", "gh", "v1", 100)
        .with_unit("a", |u| u.state = UnitState::Dead);
    check(
        w,
        &[
            "fail gh a dead",
            "remove gh a clean up failed instance",
            "start gh - replace failed instance",
        ],
    );
}

#[test]
fn error_instance_is_removed_and_replaced_after_backoff() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .applied("gh", "v1", 1)
        .inst("a", "gh", "v1", Status::Error, 100)
        .unit("a", "gh", "v1", UnitState::Exited(1))
        .backoff("gh", -1);
    check(
        w,
        &[
            "remove gh a clean up failed instance",
            "start gh - replace failed instance",
        ],
    );
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
    let w = World::default()
        .want(desired("gh", 3, "v1"))
        .applied("gh", "v1", 1)
        .running("a", "gh", "v1", 100);
    check(
        w,
        &["start gh - scale up 1 -> 3", "start gh - scale up 1 -> 3"],
    );
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
    check(
        w,
        &[
            "remove gh mid scale down 4 -> 1",
            "remove gh old scale down 4 -> 1",
            "remove gh starting scale down 4 -> 1",
        ],
    );
}

#[test]
fn changed_spec_replaces_one_instance_at_a_time_with_a_diff() {
    let w = World::default()
        .want(desired("gh", 2, "v2"))
        .applied("gh", "v1", 2)
        .running("a", "gh", "v1", 100)
        .running("b", "gh", "v1", 100);
    let plan = w.run().unwrap();
    assert_eq!(plan.count(ActionKind::Replace), 2);
    assert_eq!(plan.runnable().count(), 1, "one replace at a time");
    let diff = plan.actions[0]
        .diff
        .as_deref()
        .expect("replace carries a diff");
    assert!(
        diff.contains("-image: v1") && diff.contains("+image: v2"),
        "{diff}"
    );
    check(
        w,
        &[
            "replace gh a spec changed",
            "replace gh b spec changed [waiting: queued: one replace at a time]",
        ],
    );
}

/// A world mid-way through a rolling replace of `gh` (v1 -> v2, 2 replicas):
/// `n` was started to replace `a` and is in `n_status`; `b` waits its turn.
fn rolling(n_status: Status) -> World {
    let d = desired("gh", 2, "v2");
    let mut w = World::default()
        .want(d)
        .applied("gh", "v2", 2)
        .running("a", "gh", "v1", 300)
        .running("b", "gh", "v1", 200)
        .inst("n", "gh", "v2", n_status, 5)
        .unit("n", "gh", "v2", UnitState::Running);
    w.snapshot.servers.get_mut("gh").expect("applied").previous = Some(PreviousSpec {
        hash: canonical("v1").hash,
        canonical: canonical("v1").yaml,
    });
    w.snapshot
        .instances
        .get_mut(&InstanceId("n".into()))
        .expect("n")
        .replaces = Some(InstanceId("a".into()));
    w
}

#[test]
fn a_replace_in_flight_keeps_the_old_instance_while_the_new_one_starts() {
    let w = rolling(Status::Starting).probe("n", Probe::NotReady("connection refused".into()));
    check(
        w.clone(),
        &[
            "replace gh a spec changed [waiting: new instance n is starting]",
            "replace gh b spec changed [waiting: queued: one replace at a time]",
        ],
    );
    // The diff stays readable although the applied spec moved on to v2.
    let plan = w.run().unwrap();
    assert!(plan.actions[0].diff.is_some(), "{:?}", plan.actions[0]);
    // Looked at again when the new instance's readiness deadline passes.
    let deadline = Timestamp(NOW.0 - 5_000).plus(Duration::from_secs(60));
    assert_eq!(
        plan.requeue_at,
        Some(deadline.plus(Duration::from_millis(1)))
    );
}

#[test]
fn a_new_instance_that_answers_is_promoted_and_the_old_one_removed() {
    let w = rolling(Status::Starting).probe("n", Probe::Ready("srv 1.0".into()));
    check(
        w,
        &[
            "promote gh n ready: srv 1.0",
            "remove gh a replaced by n",
            "replace gh b spec changed",
        ],
    );
}

#[test]
fn a_running_replacement_finishes_its_replace() {
    check(
        rolling(Status::Running),
        &["remove gh a replaced by n", "replace gh b spec changed"],
    );
}

#[test]
fn a_failed_replacement_keeps_the_old_instance_until_the_backoff_ends() {
    let w = rolling(Status::Error)
        .with_unit("n", |u| u.state = UnitState::Exited(1))
        .backoff("gh", 30);
    check(
        w.clone(),
        &[
            "replace gh a spec changed [waiting: back-off 30s]",
            "replace gh b spec changed [waiting: back-off 30s]",
        ],
    );
    assert_eq!(w.run().unwrap().requeue_at, Some(Timestamp(NOW.0 + 30_000)));
    let mut later = w;
    later.snapshot.backoff.get_mut("gh").expect("backoff").until = Timestamp(NOW.0 - 1);
    check(
        later,
        &[
            "remove gh n clean up failed instance",
            "replace gh a spec changed",
            "replace gh b spec changed [waiting: queued: one replace at a time]",
        ],
    );
}

#[test]
fn a_spec_reverted_mid_replace_drops_the_replacement() {
    // Back to v1: `n` (v2) is now the outdated one, and surplus.
    let mut w = rolling(Status::Starting);
    w.desired = vec![desired("gh", 2, "v1")];
    check(w, &["remove gh n scale down 3 -> 2"]);
}

#[test]
fn scaling_down_mid_replace_removes_the_pair_first() {
    let mut w = rolling(Status::Starting);
    w.desired = vec![desired("gh", 1, "v2")];
    check(
        w,
        &[
            "remove gh a scale down 2 -> 1",
            "remove gh n scale down 2 -> 1",
            "replace gh b spec changed",
        ],
    );
}

#[test]
fn an_adopted_replacement_keeps_its_place_in_the_replace() {
    let mut w = World::default()
        .want(desired("gh", 1, "v2"))
        .applied("gh", "v2", 1)
        .running("a", "gh", "v1", 300)
        .unit("x", "gh", "v2", UnitState::Running)
        .intent("x", "gh", "v2");
    w.snapshot
        .intents
        .get_mut(&InstanceId("x".into()))
        .expect("intent")
        .replaces = Some(InstanceId("a".into()));
    check(
        w,
        &[
            "adopt gh x created by an interrupted apply",
            "replace gh a spec hash h-v1 -> h-v2 [waiting: new instance x is starting]",
        ],
    );
}

#[test]
fn requeue_is_the_earliest_deadline_or_backoff_never_a_liveness_check() {
    for shape in [Shape::Docker, Shape::Kubernetes] {
        requeue_is_the_earliest_deadline(shape);
    }
}

fn requeue_is_the_earliest_deadline(shape: Shape) {
    let converged = World::default()
        .want(desired("gh", 1, "v1"))
        .applied("gh", "v1", 1)
        .running("a", "gh", "v1", 100);
    // Converged: nothing to look at again. Its liveness checks are the
    // prober's timers, and one that passes needs no pass.
    assert_eq!(
        shape.observe(converged.clone()).run().unwrap().requeue_at,
        None
    );
    let starting = converged
        .clone()
        .inst("s", "gh", "v1", Status::Starting, 50)
        .unit("s", "gh", "v1", UnitState::Running);
    assert_eq!(
        shape.observe(starting).run().unwrap().requeue_at,
        Some(Timestamp(NOW.0 + 10_001)),
        "60 s readiness timeout, 50 s in"
    );
    let backing_off = World::default()
        .want(desired("gh", 1, "v1"))
        .applied("gh", "v1", 1)
        .inst("e", "gh", "v1", Status::Error, 100)
        .backoff("gh", 7);
    assert_eq!(
        shape.observe(backing_off).run().unwrap().requeue_at,
        Some(Timestamp(NOW.0 + 7_000))
    );
    let nothing = World::default().want(desired("gh", 0, "v1"));
    assert_eq!(nothing.run().unwrap().requeue_at, None);
}

#[test]
fn replace_without_known_old_spec_names_hashes() {
    let w = World::default()
        .want(desired("gh", 1, "v2"))
        .running("a", "gh", "v1", 100);
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
    check(
        w,
        &[
            "remove gone g1 server gone removed from source",
            "remove gone g2 server gone removed from source",
        ],
    );
}

#[test]
fn replicas_zero_removes_every_instance() {
    let w = World::default()
        .want(desired("gh", 0, "v1"))
        .applied("gh", "v1", 1)
        .running("a", "gh", "v1", 100);
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
fn a_unit_an_interrupted_apply_created_but_never_started_is_replaced() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .applied("gh", "v1", 1)
        .unit("x", "gh", "v1", UnitState::Created)
        .intent("x", "gh", "v1");
    check(
        w,
        &[
            "remove gh x left by an interrupted apply, never started (created)",
            "start gh - scale up 0 -> 1",
        ],
    );
}

#[test]
fn a_running_unit_the_state_does_not_know_is_adopted_then_counted() {
    // Two state files took turns: the unit is adopted, not torn down, and
    // the count rules trim the surplus (the one not yet proven ready).
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .applied("gh", "v1", 1)
        .running("a", "gh", "v1", 100)
        .unit("x", "gh", "v1", UnitState::Running);
    check(
        w,
        &[
            "adopt gh x found running, not in the state",
            "remove gh x scale down 2 -> 1",
        ],
    );
}

#[test]
fn a_fresh_state_adopts_the_running_fleet_and_starts_nothing() {
    let w = World::default()
        .want(desired("gh", 2, "v1"))
        .want(desired("fs", 1, "v1"))
        .unit("a", "gh", "v1", UnitState::Running)
        .unit("b", "gh", "v1", UnitState::Restarting)
        .unit("c", "fs", "v1", UnitState::Running);
    check(
        w,
        &[
            "adopt fs c found running, not in the state",
            "adopt gh a found running, not in the state",
            "adopt gh b found running, not in the state",
        ],
    );
}

#[test]
fn a_fresh_state_rolls_an_outdated_unit_instead_of_removing_it() {
    let w = World::default()
        .want(desired("gh", 1, "v2"))
        .unit("a", "gh", "v1", UnitState::Running);
    check(
        w,
        &[
            "adopt gh a found running an older spec, not in the state",
            "replace gh a spec hash h-v1 -> h-v2",
        ],
    );
}

#[test]
fn a_fresh_state_prunes_units_of_servers_the_source_no_longer_has() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .unit("a", "gh", "v1", UnitState::Running)
        .unit("o", "old", "v1", UnitState::Running);
    check(
        w,
        &[
            "adopt gh a found running, not in the state",
            "remove old o server old not in the source (running)",
        ],
    );
}

#[test]
fn a_fresh_state_replaces_a_unit_that_does_not_run() {
    let w =
        World::default()
            .want(desired("gh", 1, "v1"))
            .unit("a", "gh", "v1", UnitState::Exited(0));
    check(
        w,
        &[
            "remove gh a not in the state and not running (exited (0))",
            "start gh - new server",
        ],
    );
}

#[test]
fn a_fresh_state_with_surplus_units_adopts_them_all_and_trims_the_oldest() {
    let w = World::default()
        .want(desired("gh", 1, "v1"))
        .unit("a", "gh", "v1", UnitState::Running)
        .with_unit("a", |u| u.started_at = Some(Timestamp(NOW.0 - 50_000)))
        .unit("b", "gh", "v1", UnitState::Running);
    // b has run longer (100 s against 50 s): design §4 removes the oldest.
    check(
        w,
        &[
            "adopt gh a found running, not in the state",
            "adopt gh b found running, not in the state",
            "remove gh b scale down 2 -> 1",
        ],
    );
}

#[test]
fn interrupted_removal_is_finished() {
    let mut w = World::default()
        .want(desired("gh", 2, "v1"))
        .applied("gh", "v1", 2)
        .running("a", "gh", "v1", 100);
    w.snapshot.intents.insert(
        InstanceId("a".into()),
        Intent {
            instance: InstanceId("a".into()),
            server: "gh".into(),
            spec_hash: canonical("v1").hash,
            op: IntentOp::Remove,
            at: NOW,
            replaces: None,
        },
    );
    check(
        w,
        &[
            "remove gh a finish interrupted removal",
            "start gh - scale up 0 -> 2",
            "start gh - scale up 0 -> 2",
        ],
    );
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
    check(
        w,
        &[
            "adopt gh x created by an interrupted apply",
            "remove gh x scale down 2 -> 1",
        ],
    );
}

#[test]
fn external_server_starts_one_instance_and_promotes_on_probe() {
    check(
        World::default().want(Desired {
            replicas: 3,
            ..external("linear")
        }),
        &["start linear - new server"],
    );
    let w = World::default()
        .want(external("linear"))
        .applied("linear", "url", 1)
        .inst("e", "linear", "url", Status::Starting, 1)
        .probe("e", Probe::Ready("2026-07-28 linear".into()));
    check(w, &["promote linear e ready: 2026-07-28 linear"]);
}

#[test]
fn external_server_has_no_container_to_lose() {
    let w = World::default()
        .want(external("linear"))
        .applied("linear", "url", 1)
        .inst("e", "linear", "url", Status::Running, 100);
    check(w, &[]);
}

#[test]
fn refresh_off_trusts_the_snapshot() {
    let mut w = World::default()
        .want(desired("gh", 2, "v1"))
        .applied("gh", "v1", 1)
        .inst("a", "gh", "v1", Status::Running, 100);
    w.refresh_off = true;
    check(w, &["start gh - scale up 1 -> 2"]);
}

#[test]
fn empty_source_facing_a_fleet_is_refused_unless_allowed() {
    let w = World::default()
        .applied("gh", "v1", 1)
        .running("a", "gh", "v1", 100);
    let err = w.run().unwrap_err();
    assert!(
        err.to_string().contains("refusing to remove them all"),
        "{err}"
    );
    let mut w = w;
    w.allow_empty = true;
    check(w, &["remove gh a server gh removed from source"]);
}

#[test]
fn empty_source_facing_a_running_fleet_is_refused_even_with_a_fresh_state() {
    // The state was lost, so only the runtime knows the fleet: a wrong
    // path must not prune it.
    let w = World::default().unit("a", "gh", "v1", UnitState::Running);
    let err = w.run().unwrap_err();
    assert!(
        err.to_string()
            .contains("the state or the runtime has 1 (gh)"),
        "{err}"
    );
    let mut w = w;
    w.allow_empty = true;
    check(w, &["remove gh a server gh not in the source (running)"]);
}

#[test]
fn a_suspended_server_is_left_exactly_as_it_is() {
    let mut w = World::default()
        .want(desired("gh", 3, "v2"))
        .want(desired("other", 1, "v1"))
        .applied("gh", "v1", 1)
        .running("a", "gh", "v1", 100)
        .with_unit("a", |u| u.state = UnitState::Restarting)
        .inst("b", "gh", "v1", Status::Starting, 100)
        .unit("stray", "gh", "v1", UnitState::Running)
        .applied("gone", "v1", 1)
        .running("g", "gone", "v1", 100)
        .applied("other", "v1", 1)
        .running("o", "other", "v1", 100);
    for server in ["gh", "gone"] {
        w.snapshot.suspended.insert(
            server.into(),
            crate::model::Suspension {
                at: NOW,
                by: "test".into(),
            },
        );
    }
    // A demotion, a readiness timeout, a replace, a scale-up, an orphan and
    // a prune are all due, and none is planned.
    check(w.clone(), &[]);
    let plan = w.run().unwrap();
    assert_eq!(plan.suspended, ["gh", "gone"]);
    assert_eq!(plan.unchanged, 1);
    assert!(
        render_text(&plan, false).contains("Suspended, left as they are: gh, gone."),
        "{}",
        render_text(&plan, false)
    );
    w.snapshot.suspended.clear();
    assert!(!w.run().unwrap().is_empty(), "resumed, it all comes due");
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
    check(
        w,
        &[
            "replace a a1 spec changed",
            "start a - scale up 1 -> 2",
            "start b - new server",
        ],
    );
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
        .inst(
            "01jno0000000000000000000c1",
            "notes",
            "v1",
            Status::Starting,
            5,
        )
        .unit(
            "01jno0000000000000000000c1",
            "notes",
            "v1",
            UnitState::Running,
        )
        .probe(
            "01jno0000000000000000000c1",
            Probe::Ready("2025-11-25 notes 0.3.1".into()),
        )
        .applied("quiet", "v1", 1)
        .running("01jqu0000000000000000000d1", "quiet", "v1", 100)
        .applied("old", "v1", 1)
        .running("01jol0000000000000000000e1", "old", "v1", 100);
    let plan = Shape::Docker.observe(w.clone()).run().unwrap();
    // The same plan, to the byte, from units shaped like pods.
    assert_eq!(Shape::Kubernetes.observe(w).run().unwrap(), plan);
    insta::assert_snapshot!("mixed_plan_text", render_text(&plan, false));
    let source = SourceInfo {
        kind: "dir".into(),
        location: "fleet/".into(),
        revision: "sha256:0123456789abcdef".into(),
    };
    insta::assert_json_snapshot!("mixed_plan_json", render_json(&plan, &source));
    insta::assert_snapshot!("mixed_plan_markdown", render_markdown(&plan, &source));
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
    for shape in [Shape::Docker, Shape::Kubernetes] {
        let (p1, p2) = (
            shape.observe(build()).run().unwrap(),
            shape.observe(build()).run().unwrap(),
        );
        assert_eq!(p1, p2);
        assert_eq!(render_text(&p1, false), render_text(&p2, false));
    }
}

/// Property tests: random fleets, snapshots and observations, against a
/// hand-written model of apply. The real pass runs the same convergence
/// property against the fake runtime (see `apply`'s tests).
mod props {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Applies a plan's runnable actions to a model world the way a pass and
    /// its probes would: starts are healthy and answer at once, a replace
    /// starts the new instance beside the old, fails start a back-off, and at
    /// the end every STARTING instance whose unit runs and answers is
    /// promoted. Ids come from a counter, so runs repeat.
    fn apply(w: &mut World, plan: &Plan, now: Timestamp, next_id: &mut u32) {
        let wanted: BTreeMap<String, Desired> = w
            .desired
            .iter()
            .map(|d| (d.name.clone(), d.clone()))
            .collect();
        let mut start = |w: &mut World, server: &str, replaces: Option<InstanceId>| {
            let d = &wanted[server];
            *next_id += 1;
            let id = InstanceId(format!("n{next_id:04}"));
            let img = d.canonical.hash.0.trim_start_matches("h-").to_owned();
            let image = img.as_str();
            let mut nw = std::mem::take(w).inst(
                &id.0,
                server,
                image,
                Status::Starting,
                (NOW.0 - now.0) / 1000,
            );
            nw.snapshot
                .instances
                .get_mut(&id)
                .expect("just added")
                .replaces = replaces;
            if !d.external {
                nw = nw.unit(&id.0, server, image, UnitState::Running);
            }
            *w = nw.probe(&id.0, Probe::Ready("fake".into()));
        };
        for a in plan.runnable() {
            let id = a.instance.clone();
            match a.kind {
                ActionKind::Start => start(w, &a.server, None),
                ActionKind::Replace => start(w, &a.server, id),
                ActionKind::Remove => {
                    let id = id.expect("remove names an instance");
                    w.snapshot.instances.remove(&id);
                    w.obs.units.remove(&id);
                    w.obs.probes.remove(&id);
                }
                ActionKind::Promote | ActionKind::Demote | ActionKind::Fail => {
                    let id = id.expect("status actions name an instance");
                    let restarts = w.obs.units.get(&id).and_then(|u| u.restarts);
                    let inst = w.snapshot.instances.get_mut(&id).expect("instance exists");
                    let status = match a.kind {
                        ActionKind::Promote => Status::Running,
                        ActionKind::Demote => Status::Starting,
                        _ => Status::Error,
                    };
                    inst.transition(status, a.reason.clone(), now);
                    inst.restarts = restarts.unwrap_or(inst.restarts);
                    if status == Status::Error
                        && (w.obs.units.contains_key(&id) || wanted[&a.server].external)
                    {
                        let failures =
                            w.snapshot.backoff.get(&a.server).map_or(0, |b| b.failures) + 1;
                        let until = now.plus(backoff_delay(failures));
                        w.snapshot.backoff.insert(
                            a.server.clone(),
                            Backoff {
                                failures,
                                until,
                                reason: a.reason.clone(),
                                spec_hash: None,
                            },
                        );
                    }
                }
                ActionKind::Adopt => {
                    let id = id.expect("adopt names an instance");
                    let unit = w.obs.units[&id].clone();
                    let mut nw =
                        std::mem::take(w).inst(&id.0, &unit.server, "x", Status::Starting, 0);
                    let inst = nw.snapshot.instances.get_mut(&id).expect("just added");
                    inst.spec_hash = unit.spec_hash.clone();
                    inst.created_at = now;
                    inst.transitioned_at = now;
                    inst.restarts = unit.restarts.unwrap_or(0);
                    inst.replaces = nw
                        .snapshot
                        .intents
                        .get(&id)
                        .and_then(|i| i.replaces.clone());
                    nw.snapshot.intents.remove(&id);
                    *w = nw;
                }
            }
        }
        // The probes that ran beside the pass: promote what answers.
        for inst in w.snapshot.instances.values_mut() {
            let ready = matches!(w.obs.probes.get(&inst.id), Some(Probe::Ready(_)));
            let runs = wanted.get(&inst.server).is_some_and(|d| d.external)
                || w.obs
                    .units
                    .get(&inst.id)
                    .is_some_and(|u| u.state == UnitState::Running);
            if inst.status == Status::Starting && ready && runs {
                inst.transition(Status::Running, "ready", now);
                inst.restarts = w
                    .obs
                    .units
                    .get(&inst.id)
                    .and_then(|u| u.restarts)
                    .unwrap_or(0);
            }
        }
        for d in wanted.values() {
            let previous = w.snapshot.servers.get(&d.name).map(|o| PreviousSpec {
                hash: o.hash.clone(),
                canonical: o.canonical.clone(),
            });
            w.snapshot.servers.insert(
                d.name.clone(),
                AppliedSpec {
                    hash: d.canonical.hash.clone(),
                    canonical: d.canonical.yaml.clone(),
                    replicas: d.replicas,
                    applied_at: now,
                    previous,
                },
            );
        }
        w.snapshot
            .servers
            .retain(|name, _| wanted.contains_key(name));
    }

    fn plan_at(w: &World, now: Timestamp) -> Plan {
        let mut obs = w.obs.clone();
        obs.at = now;
        plan(Inputs {
            desired: &w.desired,
            snapshot: &w.snapshot,
            observation: Some(&obs),
            now,
            allow_empty: true,
        })
        .expect("allow_empty plans never fail")
    }

    fn unit_state() -> impl Strategy<Value = UnitState> {
        prop_oneof![
            1 => Just(UnitState::Created),
            4 => Just(UnitState::Running),
            1 => Just(UnitState::Restarting),
            1 => (0i64..3).prop_map(UnitState::Exited),
            1 => Just(UnitState::Dead),
        ]
    }

    fn status() -> impl Strategy<Value = Status> {
        prop_oneof![1 => Just(Status::Starting), 3 => Just(Status::Running), 1 => Just(Status::Error)]
    }

    prop_compose! {
        fn world()(
            servers in proptest::collection::vec((0u32..4, 0usize..2, proptest::bool::weighted(0.15)), 0..5),
            insts in proptest::collection::vec(
                (0usize..6, 0usize..2, status(), 0i64..200, proptest::option::weighted(0.8, unit_state()), 0u32..3,
                 proptest::option::of(proptest::bool::ANY), proptest::option::weighted(0.2, 0usize..12)),
                0..12),
            strays in proptest::collection::vec((0usize..6, 0usize..2, unit_state(), proptest::bool::ANY), 0..3),
            applied in proptest::collection::vec((0usize..6, 0usize..2), 0..4),
            backoffs in proptest::collection::vec((0usize..6, -30i64..30), 0..3),
            kubernetes in proptest::bool::ANY,
        ) -> World {
            let names = ["a", "b", "c", "d", "e", "gone"];
            let images = ["v1", "v2"];
            let mut w = World::default();
            for (i, (replicas, img, ext)) in servers.iter().enumerate() {
                let d = desired(names[i], *replicas, images[*img]);
                w = w.want(Desired { external: *ext, ..d });
            }
            for (s, img) in applied {
                w = w.applied(names[s], images[img], 1);
            }
            for (n, (s, img, st, age, unit, restarts, probe, replaces)) in insts.into_iter().enumerate() {
                let id = format!("i{n:02}");
                w = w.inst(&id, names[s], images[img], st, age);
                // Some instances claim to replace another (which may or may not exist).
                w.snapshot.instances.get_mut(&InstanceId(id.clone())).expect("just added").replaces =
                    replaces.map(|r| InstanceId(format!("i{r:02}")));
                if let Some(state) = unit {
                    w = w.unit(&id, names[s], images[img], state).with_unit(&id, |u| u.restarts = Some(restarts));
                }
                if let Some(ok) = probe {
                    w = w.probe(&id, if ok { Probe::Ready("ok".into()) } else { Probe::NotReady("refused".into()) });
                }
            }
            for (n, (s, img, state, intent)) in strays.into_iter().enumerate() {
                let id = format!("s{n:02}");
                w = w.unit(&id, names[s], images[img], state);
                if intent {
                    w = w.intent(&id, names[s], images[img]);
                }
            }
            for (s, secs) in backoffs {
                w = w.backoff(names[s], secs);
            }
            // Half the worlds are observed the way a pod list reports them.
            if kubernetes { Shape::Kubernetes.observe(w) } else { Shape::Docker.observe(w) }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// After a pass's actions, what is left at the same moment is only
        /// the rolling replace carrying on: its next step, and what waits.
        #[test]
        fn after_a_pass_only_rolling_replaces_remain(mut w in world()) {
            let mut next_id = 0;
            let p1 = plan_at(&w, NOW);
            apply(&mut w, &p1, NOW, &mut next_id);
            let p2 = plan_at(&w, NOW);
            let leftover: Vec<&Action> = p2.actions.iter().filter(|a| {
                let continues = a.kind == ActionKind::Replace
                    || (a.kind == ActionKind::Remove && a.reason.starts_with("replaced by "));
                !continues
            }).collect();
            prop_assert!(leftover.is_empty(), "second plan:\n{}\nafter:\n{}", render_text(&p2, false), render_text(&p1, false));
        }

        /// Same inputs, same plan, same text.
        #[test]
        fn planning_twice_gives_identical_output(w in world()) {
            let (a, b) = (plan_at(&w, NOW), plan_at(&w, NOW));
            prop_assert_eq!(render_text(&a, false), render_text(&b, false));
            prop_assert_eq!(a, b);
        }

        /// A rolling replace never leaves a server with fewer RUNNING
        /// instances than before a pass (up to its replicas), unless the
        /// pass itself demoted or failed them, or scaled the server down.
        #[test]
        fn a_pass_never_drops_running_instances_it_did_not_lose(mut w in world()) {
            let mut next_id = 0;
            let p = plan_at(&w, NOW);
            let running = |w: &World, server: &str| w.snapshot.instances.values()
                .filter(|i| i.server == server && i.status == Status::Running).count();
            // RUNNING beyond the replicas (an old instance beside the new one
            // that replaced it) is surplus, not capacity.
            let before: Vec<(String, usize)> = w.desired.iter().map(|d| (d.name.clone(), running(&w, &d.name).min(d.target()))).collect();
            apply(&mut w, &p, NOW, &mut next_id);
            for (server, was) in before {
                let lost = p.actions.iter().any(|a| a.server == server
                    && (matches!(a.kind, ActionKind::Demote | ActionKind::Fail) || a.reason.starts_with("scale down")));
                if !lost {
                    prop_assert!(running(&w, &server) >= was, "server {server}: {was} RUNNING before, {} after\n{}", running(&w, &server), render_text(&p, false));
                }
            }
        }

        /// Once the world heals and back-offs expire, the fleet converges to
        /// exactly the wanted replicas, all RUNNING, with nothing stray. A
        /// rolling replace takes a round per instance.
        #[test]
        fn a_healed_world_converges_to_exact_replicas(mut w in world()) {
            let mut next_id = 0;
            let p = plan_at(&w, NOW);
            apply(&mut w, &p, NOW, &mut next_id);
            for u in w.obs.units.values_mut() {
                u.state = UnitState::Running;
            }
            let ids: Vec<InstanceId> = w.snapshot.instances.keys().cloned().collect();
            for id in ids {
                w.obs.probes.insert(id, Probe::Ready("healed".into()));
            }
            let later = NOW.plus(Duration::from_secs(600));
            let mut rounds = 0;
            loop {
                let p = plan_at(&w, later);
                if p.is_empty() { break; }
                rounds += 1;
                prop_assert!(rounds <= 8, "no convergence after 8 rounds:\n{}", render_text(&p, false));
                apply(&mut w, &p, later, &mut next_id);
            }
            for d in &w.desired {
                let insts: Vec<&Instance> = w.snapshot.instances.values().filter(|i| i.server == d.name).collect();
                prop_assert_eq!(insts.len(), d.target(), "server {}", d.name);
                prop_assert!(insts.iter().all(|i| i.status == Status::Running && i.spec_hash == d.canonical.hash));
            }
            let wanted: Vec<&str> = w.desired.iter().map(|d| d.name.as_str()).collect();
            prop_assert!(w.snapshot.instances.values().all(|i| wanted.contains(&i.server.as_str())));
            prop_assert!(w.obs.units.keys().all(|id| w.snapshot.instances.contains_key(id)), "stray units remain");
        }
    }
}
