//! The status mapping: a pod, as the API server lists it, becomes a
//! [`Unit`], as a pure function (see the module documentation of the
//! runtime for the table).

use super::*;

/// A pod as mcpctl sees it, before any log is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub unit: Unit,
    /// Whether the last log line is worth reading, and of which run
    /// (`Some(true)`: the previous one, for a restarted container).
    pub log: Option<bool>,
}

fn millis(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Timestamp {
    Timestamp(t.0.as_millisecond())
}

/// Waiting reasons that mean the kubelet cannot start the container until
/// something outside it changes: the pod is dead, with the kubelet's message.
const STUCK: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The status mapping of the module documentation, as a pure function of
/// the pod. `endpoint` builds an HTTP endpoint from the port and path.
pub fn view(pod: &Pod, endpoint: impl Fn(u16, &str) -> Option<Endpoint>) -> Option<PodView> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let labels = pod.metadata.labels.as_ref()?;
    let instance = InstanceId(labels.get(LABEL_INSTANCE)?.clone());
    let server = labels.get(LABEL_SERVER)?.clone();
    let spec_hash = SpecHash(labels.get(LABEL_SPEC_HASH)?.clone());
    let handle = pod.metadata.name.clone()?;
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let unit_endpoint = match annotations
        .get(ANNOTATION_PORT)
        .and_then(|p| p.parse::<u16>().ok())
    {
        None => Some(Endpoint::Stdio),
        Some(port) => endpoint(
            port,
            annotations
                .get(ANNOTATION_PATH)
                .map_or("/mcp", String::as_str),
        ),
    };
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let container: Option<&ContainerStatus> = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER));
    let restarts = container.map_or(0, |c| c.restart_count.max(0) as u32);
    let state = container.and_then(|c| c.state.clone()).unwrap_or_default();
    let last_exit = container
        .and_then(|c| c.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| i64::from(t.exit_code));
    let mut unit = Unit {
        instance,
        server,
        spec_hash,
        handle,
        state: UnitState::Created,
        restarts: Some(restarts),
        exit_code: None,
        last_log: None,
        endpoint: unit_endpoint,
        started_at: None,
    };
    let mut log = None;
    if matches!(phase, "Failed" | "Succeeded") {
        match &state.terminated {
            Some(t) => {
                unit.state = UnitState::Exited(i64::from(t.exit_code));
                unit.exit_code = Some(i64::from(t.exit_code));
                log = Some(false);
            }
            None => {
                unit.state = UnitState::Dead;
                unit.last_log = status.message.clone().or(status.reason.clone());
            }
        }
    } else if let Some(running) = &state.running {
        unit.state = UnitState::Running;
        unit.started_at = running.started_at.as_ref().map(millis);
        if restarts > 0 {
            unit.exit_code = last_exit;
            log = Some(true);
        }
    } else if let Some(t) = &state.terminated {
        // The kubelet restarts it: between two runs.
        unit.state = UnitState::Restarting;
        unit.exit_code = Some(i64::from(t.exit_code));
        log = Some(false);
    } else if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.as_deref().unwrap_or("");
        if STUCK.contains(&reason) {
            unit.state = UnitState::Dead;
            unit.last_log = Some(match &waiting.message {
                Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                _ => reason.to_owned(),
            });
        } else if reason == "CrashLoopBackOff" || restarts > 0 {
            unit.state = UnitState::Restarting;
            unit.exit_code = last_exit;
            log = Some(true);
        }
    } else if let Some(unscheduled) = status
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .filter(|c| c.status == "False")
    {
        unit.last_log = Some(match (&unscheduled.reason, &unscheduled.message) {
            (Some(r), Some(m)) => format!("{r}: {m}"),
            (Some(r), None) => r.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => "not scheduled".into(),
        });
    }
    Some(PodView { unit, log })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_json(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "mcpctl-beta-01abc",
                "labels": {
                    LABEL_MANAGED: "true", LABEL_SCOPE: "default", LABEL_SERVER: "beta",
                    LABEL_INSTANCE: "01abc", LABEL_SPEC_HASH: "h1"
                },
                "annotations": {ANNOTATION_PORT: "8080", ANNOTATION_PATH: "/mcp"}
            },
            "status": status
        }))
        .expect("pod json")
    }

    fn at(port: u16, path: &str) -> Option<Endpoint> {
        Some(Endpoint::Http(format!("http://pod:{port}{path}")))
    }
    #[test]
    fn pod_states_map_to_unit_states() {
        let running = pod_json(serde_json::json!({
            "phase": "Running",
            "containerStatuses": [{"name": "server", "image": "i", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {"startedAt": "2026-11-30T01:00:00Z"}}}]
        }));
        let v = view(&running, at).expect("unit");
        assert_eq!(v.unit.state, UnitState::Running);
        assert_eq!(v.unit.restarts, Some(0));
        assert!(v.unit.started_at.is_some());
        assert_eq!(v.unit.endpoint, at(8080, "/mcp"));
        assert_eq!(v.log, None);

        let crash = pod_json(serde_json::json!({
            "phase": "Running",
            "containerStatuses": [{"name": "server", "image": "i", "imageID": "", "ready": false,
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 3}}}]
        }));
        let v = view(&crash, at).expect("unit");
        assert_eq!(v.unit.state, UnitState::Restarting);
        assert_eq!((v.unit.restarts, v.unit.exit_code), (Some(4), Some(3)));
        assert_eq!(v.log, Some(true), "the crashed run's log");

        let pull = pod_json(serde_json::json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "server", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImagePull", "message": "manifest unknown"}}}]
        }));
        let v = view(&pull, at).expect("unit");
        assert_eq!(v.unit.state, UnitState::Dead);
        assert_eq!(
            v.unit.last_log.as_deref(),
            Some("ErrImagePull: manifest unknown")
        );

        let failed = pod_json(serde_json::json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "server", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 2}}}]
        }));
        let v = view(&failed, at).expect("unit");
        assert_eq!(v.unit.state, UnitState::Exited(2));
        assert_eq!(v.log, Some(false));

        let pending = pod_json(serde_json::json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient memory."}]
        }));
        let v = view(&pending, at).expect("unit");
        assert_eq!(v.unit.state, UnitState::Created);
        assert_eq!(
            v.unit.last_log.as_deref(),
            Some("Unschedulable: 0/1 nodes are available: 1 Insufficient memory.")
        );

        let mut leaving = running.clone();
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert_eq!(view(&leaving, at), None, "a pod being deleted is gone");
    }
}
