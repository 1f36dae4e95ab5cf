//! Plan at fleet scale (design §9): generates N servers with 3 replicas each
//! as YAML, a snapshot and an observation that match them, then times
//! parse + validate + plan and reports peak RSS.
//!
//! Run one size per process so peak RSS belongs to that size alone:
//! `cargo bench --bench plan_scale -- 1000` (see `scripts/bench-plan`).

use mcpctl::model::{
    AppliedSpec, Endpoint, Instance, InstanceId, Observation, Probe, Runners, Snapshot, Status,
    Timestamp, Unit, UnitState,
};
use mcpctl::plan::{self, Desired, Inputs};
use mcpctl::source::SourceFile;
use mcpctl::spec::SecretDigests;
use std::time::Instant;

fn fleet_yaml(n: usize) -> String {
    let mut s = String::with_capacity(n * 400);
    for i in 0..n {
        s.push_str(&format!(
            "---\napiVersion: mcpctl.io/v1\nkind: McpServer\nmetadata:\n  name: server-{i:05}\n  labels: {{team: t{}}}\n\
             spec:\n  replicas: 3\n  image: registry.example/mcp/server-{i:05}:v1\n  transport: streamable-http\n  port: 8080\n\
             \x20 env:\n    LOG_LEVEL: info\n    REGION: eu-{}\n  resources: {{memory: 256Mi, cpus: 0.5}}\n",
            i % 7,
            i % 3
        ));
    }
    s
}

fn matching_world(desired: &[Desired], now: Timestamp) -> (Snapshot, Observation) {
    let mut snap = Snapshot::default();
    let mut obs = Observation {
        at: now,
        ..Default::default()
    };
    for d in desired {
        snap.servers.insert(
            d.name.clone(),
            AppliedSpec {
                hash: d.canonical.hash.clone(),
                canonical: d.canonical.yaml.clone(),
                replicas: 3,
                applied_at: now,
                previous: None,
            },
        );
        for r in 0..3 {
            let id = InstanceId(format!("{}-{r}", d.name));
            snap.instances.insert(
                id.clone(),
                Instance {
                    id: id.clone(),
                    server: d.name.clone(),
                    status: Status::Running,
                    handle: Some(format!("c{}", id)),
                    endpoint: Some(Endpoint::Http("http://127.0.0.1:1/mcp".into())),
                    spec_hash: d.canonical.hash.clone(),
                    created_at: now,
                    transitioned_at: now,
                    restarts: 0,
                    restarts_at_start: 0,
                    reason: String::new(),
                    history: vec![],
                    mcp: None,
                    liveness: Default::default(),
                    replaces: None,
                },
            );
            obs.units.insert(
                id.clone(),
                Unit {
                    instance: id.clone(),
                    server: d.name.clone(),
                    spec_hash: d.canonical.hash.clone(),
                    handle: format!("c{}", id),
                    state: UnitState::Running,
                    restarts: None,
                    exit_code: None,
                    last_log: None,
                    endpoint: None,
                    started_at: None,
                },
            );
            obs.probes.insert(id, Probe::Ready("bench".into()));
        }
    }
    (snap, obs)
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect::<Vec<_>>();
    let sizes = if sizes.is_empty() { vec![1000] } else { sizes };
    for n in sizes {
        let files = vec![SourceFile {
            path: "fleet.yaml".into(),
            text: fleet_yaml(n),
            at: None,
        }];
        let now = Timestamp::now();
        // Build a matching world from one untimed pass, as the state would hold after apply.
        let servers = mcpctl::spec::load(&files).expect("generated fleet is valid");
        let desired = Desired::from_servers(&servers, &SecretDigests::new(), &Runners::default());
        let (snapshot, observation) = matching_world(&desired, now);
        drop((servers, desired));

        let mut best = f64::MAX;
        let runs = 5;
        for _ in 0..runs {
            let t = Instant::now();
            let servers = mcpctl::spec::load(&files).expect("valid");
            let parsed = t.elapsed();
            let desired =
                Desired::from_servers(&servers, &SecretDigests::new(), &Runners::default());
            let p = plan::plan(Inputs {
                desired: &desired,
                snapshot: &snapshot,
                observation: Some(&observation),
                now,
                allow_empty: false,
            })
            .expect("plan");
            let total = t.elapsed();
            assert!(p.is_empty(), "a matching world must plan no changes");
            assert_eq!(p.unchanged, n);
            best = best.min(total.as_secs_f64() * 1000.0);
            eprintln!(
                "  run: parse+validate {:.1} ms, total {:.1} ms",
                parsed.as_secs_f64() * 1000.0,
                total.as_secs_f64() * 1000.0
            );
        }
        println!(
            "plan_scale servers={n} replicas=3 instances={} yaml_bytes={} best_of_{runs}_ms={best:.1} peak_rss_mb={:.1}",
            n * 3,
            files[0].text.len(),
            peak_rss_mb()
        );
    }
}
