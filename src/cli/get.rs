//! `mcpctl get servers|instances`: what the state says, beside what the
//! runtime says now, as a table, JSON or YAML. The runtime is asked once
//! (one list call, no probes), so `get` stays cheap at any fleet size and
//! works while an applier runs; `--refresh=false` reads the state alone.

use super::export::GatewayUrl;
use super::{Global, Outcome};
use crate::model::{Instance, InstanceId, Snapshot, Status, Unit, UnitState};
use crate::model::{Timestamp, short_duration};
use crate::runtime::Runtime;
use miette::IntoDiagnostic;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    Servers,
    Instances,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    pub what: What,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Ask the runtime what runs now; `--refresh=false` shows the recorded state alone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub refresh: bool,
    #[command(flatten)]
    pub gateway: super::export::GatewayUrlArgs,
}

/// One row of `get instances`, and the contract of its JSON (design §3).
#[derive(Debug, Serialize)]
pub struct InstanceRow {
    pub id: String,
    pub server: String,
    pub status: &'static str,
    /// `None` (JSON null) when there is nothing to say.
    pub reason: Option<String>,
    pub endpoint: String,
    pub restarts: u32,
    pub created_at: String,
    pub spec_hash: String,
    pub transitioned_at: String,
    /// The MCP identity the instance proved in its last handshake.
    pub mcp: Option<crate::model::McpIdentity>,
    /// What the runtime says now; `None` with `--refresh=false`, for an
    /// external server (it has no container), or when the runtime did not answer.
    pub live: Option<Live>,
}

/// An instance's unit as the runtime reports it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Live {
    /// `running`, `restarting`, `exited`, `created`, `dead`, or `gone`.
    pub state: &'static str,
    pub exit_code: Option<i64>,
    /// `None` when the runtime's listing does not say (a healthy container).
    pub restarts: Option<u32>,
    /// How the runtime disagrees with the recorded status, e.g.
    /// `container restarting, 7 restarts`; `None` when it agrees.
    pub drift: Option<String>,
}

/// The live view of `i`, given what the runtime listed (`None`: not listed).
pub fn live(i: &Instance, unit: Option<&Unit>) -> Live {
    let Some(u) = unit else {
        let drift = (i.status != Status::Error).then(|| "container gone".to_owned());
        return Live {
            state: "gone",
            exit_code: None,
            restarts: None,
            drift,
        };
    };
    let state = match u.state {
        UnitState::Created => "created",
        UnitState::Running => "running",
        UnitState::Restarting => "restarting",
        UnitState::Exited(_) => "exited",
        UnitState::Dead => "dead",
    };
    let restarted = u.restarts.is_some_and(|r| r > i.restarts);
    let counted = |what: String| match u.restarts {
        Some(n) => format!("{what}, {n} restarts"),
        None => what,
    };
    let drift = match (i.status, u.state) {
        (Status::Error, _) => None,
        (_, UnitState::Running) if restarted => Some(counted("container restarted".into())),
        (_, UnitState::Running | UnitState::Created) => None,
        (_, other) => Some(counted(format!("container {}", other.describe()))),
    };
    Live {
        state,
        exit_code: u.exit_code,
        restarts: u.restarts,
        drift,
    }
}

#[derive(Debug, Serialize)]
pub struct ServerRow {
    pub name: String,
    pub desired: u32,
    /// RUNNING instances of the applied spec whose unit the runtime agrees
    /// about (see [`live`]); with `--refresh=false`, as recorded.
    pub ready: usize,
    /// Where clients reach it through `mcpctl gateway`.
    pub gateway_url: String,
    /// Back-off, when the server is in one; or that it is suspended; then
    /// any live drift of its instances.
    pub status: Option<String>,
    /// Reconciling leaves it exactly as it is until `mcpctl resume`.
    pub suspended: bool,
}

/// The reason an instance shows: its own, or its server's back-off for an ERROR.
pub fn reason(i: &Instance, snapshot: &Snapshot, now: Timestamp) -> Option<String> {
    if i.status == Status::Error
        && let Some(left) = snapshot.backoff_left(&i.server, now)
    {
        return Some(format!("{left}: {}", i.reason));
    }
    // A RUNNING instance has nothing to explain; why it got there is in its history.
    (i.status != Status::Running && !i.reason.is_empty()).then(|| i.reason.clone())
}

pub fn instance_rows(
    snapshot: &Snapshot,
    units: Option<&BTreeMap<InstanceId, Unit>>,
    now: Timestamp,
) -> Vec<InstanceRow> {
    let mut rows: Vec<&Instance> = snapshot.instances.values().collect();
    rows.sort_by(|a, b| (&a.server, a.created_at, &a.id).cmp(&(&b.server, b.created_at, &b.id)));
    rows.into_iter()
        .map(|i| InstanceRow {
            id: i.id.to_string(),
            server: i.server.clone(),
            status: i.status.as_str(),
            reason: reason(i, snapshot, now),
            endpoint: i
                .endpoint
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            restarts: units
                .and_then(|u| u.get(&i.id))
                .and_then(|u| u.restarts)
                .unwrap_or(i.restarts)
                .max(i.restarts),
            created_at: i.created_at.rfc3339(),
            spec_hash: i.spec_hash.to_string(),
            transitioned_at: i.transitioned_at.rfc3339(),
            mcp: i.mcp.clone(),
            // External servers have no container to look at.
            live: units
                .filter(|_| i.handle.is_some())
                .map(|u| live(i, u.get(&i.id))),
        })
        .collect()
}

/// One row per applied server. With `units` (what the runtime listed),
/// an instance counts as ready only if `get instances` shows no drift for
/// it: a RUNNING record whose container is gone or restarting is not
/// serving, whatever the state file says.
pub fn server_rows(
    snapshot: &Snapshot,
    units: Option<&BTreeMap<InstanceId, Unit>>,
    gateway: &GatewayUrl,
    now: Timestamp,
) -> Vec<ServerRow> {
    snapshot
        .servers
        .iter()
        .map(|(name, applied)| {
            let mut ready = 0;
            let mut drifts = Vec::new();
            for i in snapshot.instances.values().filter(|i| &i.server == name) {
                // The same rule as `instance_rows`: external servers have no unit.
                let drift = units
                    .filter(|_| i.handle.is_some())
                    .and_then(|u| live(i, u.get(&i.id)).drift);
                if i.status == Status::Running && i.spec_hash == applied.hash && drift.is_none() {
                    ready += 1;
                }
                drifts.extend(drift);
            }
            let held = match snapshot.suspended.get(name) {
                Some(s) => Some(format!("suspended {} ago", short_duration(now.since(s.at)))),
                None => snapshot
                    .backoff_left(name, now)
                    .map(|left| format!("{left}: {}", snapshot.backoff[name].reason)),
            };
            let drift = (!drifts.is_empty()).then(|| format!("drift: {}", drifts.join("; ")));
            let status = match (held, drift) {
                (Some(h), Some(d)) => Some(format!("{h}; {d}")),
                (h, d) => h.or(d),
            };
            ServerRow {
                name: name.clone(),
                desired: applied.replicas,
                ready,
                gateway_url: gateway.server(name),
                status,
                suspended: snapshot.suspended.contains_key(name),
            }
        })
        .collect()
}

/// One look at the runtime, for `get` and `describe`: every unit by
/// instance, or `None` (with a warning) when the runtime does not answer,
/// so the recorded state is still shown.
pub async fn observe_units(global: &Global) -> Option<BTreeMap<InstanceId, Unit>> {
    let observed = async {
        let rt = super::connect::runtime(global).await?;
        rt.observe().await
    }
    .await;
    match observed {
        Ok(units) => Some(
            units
                .into_iter()
                .map(|mut u| {
                    // No secrets are known here: the line is not shown, only the state.
                    u.last_log = None;
                    (u.instance.clone(), u)
                })
                .collect(),
        ),
        Err(e) => {
            super::write_stderr(&format!(
                "warning: showing the recorded state only: {e} (--refresh=false skips the runtime)\n"
            ));
            None
        }
    }
}

pub async fn run(global: &Global, args: Args) -> miette::Result<Outcome> {
    let snapshot = super::load_own_state(global).await?;
    // Both views count from the same one look, so `get servers` never
    // calls ready what `get instances` shows as drifted.
    let units = if args.refresh {
        observe_units(global).await
    } else {
        None
    };
    let now = Timestamp::now();
    let text = match args.what {
        What::Instances => {
            let rows = instance_rows(&snapshot, units.as_ref(), now);
            match args.output {
                Format::Table => instances_table(&snapshot, &rows, now),
                Format::Json => serde_json::to_string_pretty(&rows).into_diagnostic()? + "\n",
                Format::Yaml => serde_saphyr::to_string(&rows).into_diagnostic()?,
            }
        }
        What::Servers => {
            // Checked here only: a bad MCPCTL_GATEWAY_URL does not stop `get instances`.
            let gateway = args.gateway.resolve()?;
            let rows = server_rows(&snapshot, units.as_ref(), &gateway, now);
            match args.output {
                Format::Table => servers_table(&rows),
                Format::Json => serde_json::to_string_pretty(&rows).into_diagnostic()? + "\n",
                Format::Yaml => serde_saphyr::to_string(&rows).into_diagnostic()?,
            }
        }
    };
    super::write_stdout(&text)?;
    Ok(Outcome::Success)
}

/// Left-aligned columns, two spaces apart, the last column unpadded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let n = cells.len();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == n {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
    out
}

fn instances_table(snapshot: &Snapshot, rows: &[InstanceRow], now: Timestamp) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let age = snapshot
                .instances
                .get(&crate::model::InstanceId(r.id.clone()))
                .map(|i| short_duration(now.since(i.created_at)))
                .unwrap_or_default();
            let status = match r.live.as_ref().and_then(|l| l.drift.as_ref()) {
                Some(drift) => format!("{} ({drift})", r.status),
                None => r.status.to_owned(),
            };
            vec![
                r.server.clone(),
                r.id.clone(),
                status,
                age,
                r.restarts.to_string(),
                r.endpoint.clone(),
                r.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "SERVER", "INSTANCE", "STATUS", "AGE", "RESTARTS", "ENDPOINT", "REASON",
        ],
        &body,
    )
}

fn servers_table(rows: &[ServerRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                format!("{}/{}", r.ready, r.desired),
                r.gateway_url.clone(),
                r.status.clone().unwrap_or_default(),
            ]
        })
        .collect();
    // The status last: it is the one cell that can run long.
    table(&["NAME", "READY", "GATEWAY URL", "STATUS"], &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SpecHash, Timestamp};

    fn instance(status: Status, restarts: u32) -> Instance {
        let mut i = Instance::starting(
            InstanceId("i1".into()),
            "gh",
            SpecHash("h".into()),
            "created",
            Timestamp(0),
        );
        i.handle = Some("c1".into());
        i.status = status;
        i.restarts = restarts;
        i
    }

    fn unit(state: UnitState, restarts: Option<u32>) -> Unit {
        Unit {
            instance: InstanceId("i1".into()),
            server: "gh".into(),
            spec_hash: SpecHash("h".into()),
            handle: "c1".into(),
            state,
            restarts,
            exit_code: None,
            last_log: None,
            endpoint: None,
            started_at: None,
        }
    }

    /// A fleet of three servers, each with one RUNNING instance of its
    /// applied spec: alpha suspended, beta in a back-off, gamma external.
    fn fleet() -> Snapshot {
        let mut snapshot = Snapshot::default();
        for (id, server) in [("a1", "alpha"), ("b1", "beta"), ("g1", "gamma")] {
            let mut i = instance(Status::Running, 0);
            i.id = InstanceId(id.into());
            i.server = server.into();
            if server == "gamma" {
                i.handle = None;
            }
            snapshot.instances.insert(i.id.clone(), i);
            snapshot.servers.insert(
                server.into(),
                crate::model::AppliedSpec {
                    hash: SpecHash("h".into()),
                    canonical: String::new(),
                    replicas: 1,
                    applied_at: Timestamp(0),
                    previous: None,
                },
            );
        }
        snapshot.suspended.insert(
            "alpha".into(),
            crate::model::Suspension {
                at: Timestamp(0),
                by: "mcpctl suspend alpha".into(),
            },
        );
        snapshot.backoff.insert(
            "beta".into(),
            crate::model::Backoff {
                spec_hash: None,
                failures: 1,
                until: Timestamp(40_000),
                reason: "crash loop: exit 3, 3 restarts".into(),
            },
        );
        snapshot
    }

    fn listed(units: &[(&str, UnitState, Option<u32>)]) -> BTreeMap<InstanceId, Unit> {
        units
            .iter()
            .map(|(id, state, restarts)| {
                let mut u = unit(*state, *restarts);
                u.instance = InstanceId((*id).into());
                (u.instance.clone(), u)
            })
            .collect()
    }

    #[test]
    fn get_servers_counts_ready_from_the_same_live_view_as_get_instances() {
        let snapshot = fleet();
        let gateway = GatewayUrl::parse("http://127.0.0.1:8765").expect("url");
        let now = Timestamp(10_000);
        let ready = |units: Option<&BTreeMap<InstanceId, Unit>>| -> Vec<(String, usize)> {
            server_rows(&snapshot, units, &gateway, now)
                .into_iter()
                .map(|r| (r.name, r.ready))
                .collect()
        };
        let all = |n: usize| -> Vec<(String, usize)> {
            vec![("alpha".into(), n), ("beta".into(), n), ("gamma".into(), 1)]
        };
        // The record alone, and a runtime that agrees with it.
        assert_eq!(ready(None), all(1));
        let agrees = listed(&[
            ("a1", UnitState::Running, None),
            ("b1", UnitState::Running, Some(0)),
        ]);
        assert_eq!(ready(Some(&agrees)), all(1));
        // alpha's container is gone and beta's restarting: not ready, as
        // `get instances` says; the external gamma has no container to lose.
        let drifted = listed(&[("b1", UnitState::Restarting, Some(4))]);
        assert_eq!(ready(Some(&drifted)), all(0));
        let rows = instance_rows(&snapshot, Some(&drifted), now);
        let drift: Vec<Option<&str>> = rows
            .iter()
            .map(|r| r.live.as_ref().and_then(|l| l.drift.as_deref()))
            .collect();
        assert_eq!(
            drift,
            [
                Some("container gone"),
                Some("container restarting, 4 restarts"),
                None
            ]
        );
        insta::assert_snapshot!(servers_table(&server_rows(
            &snapshot,
            Some(&drifted),
            &gateway,
            now
        )));
    }

    #[test]
    fn live_state_flags_how_the_runtime_disagrees_with_the_record() {
        let running = instance(Status::Running, 2);
        let drift = |i: &Instance, u: Option<Unit>| live(i, u.as_ref()).drift;
        assert_eq!(drift(&running, Some(unit(UnitState::Running, None))), None);
        assert_eq!(
            drift(&running, Some(unit(UnitState::Running, Some(2)))),
            None
        );
        assert_eq!(
            drift(&running, Some(unit(UnitState::Running, Some(3)))).as_deref(),
            Some("container restarted, 3 restarts")
        );
        assert_eq!(
            drift(&running, Some(unit(UnitState::Restarting, Some(7)))).as_deref(),
            Some("container restarting, 7 restarts")
        );
        assert_eq!(
            drift(&running, Some(unit(UnitState::Exited(3), Some(0)))).as_deref(),
            Some("container exited (3), 0 restarts")
        );
        assert_eq!(drift(&running, None).as_deref(), Some("container gone"));
        assert_eq!(live(&running, None).state, "gone");
        // An ERROR instance's container being gone or dead is no news.
        let failed = instance(Status::Error, 0);
        assert_eq!(drift(&failed, None), None);
        assert_eq!(drift(&failed, Some(unit(UnitState::Exited(1), None))), None);
    }
}
