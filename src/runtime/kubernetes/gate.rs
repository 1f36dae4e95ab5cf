//! The readiness gate: the pod condition mcpctl sets after a real MCP
//! handshake, so the kubelet reports a pod Ready (and its Service routes to
//! it) only once it answers MCP. Only a change is written.

use super::*;

/// The readiness gate mcpctl sets after a successful MCP handshake.
pub const READY_CONDITION: &str = "mcpctl.io/mcp-ready";

/// The readiness gate's value on `pod`, when it has been set.
pub(super) fn gate_of(pod: &Pod) -> Option<bool> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == READY_CONDITION)
        .map(|c| c.status == "True")
}

impl KubernetesRuntime {
    pub(super) fn remember_gate(&self, pod: &str, value: bool) {
        if let Ok(mut gates) = self.gates.lock() {
            gates.insert(pod.to_owned(), value);
        }
    }

    /// Sets the pod's readiness gate: `true` after a passing MCP probe,
    /// `false` after a failing one. Only a change is written.
    pub(super) async fn write_gate(&self, pod: &str, ready: bool) -> Result<(), RuntimeError> {
        let known = self.gates.lock().ok().and_then(|g| g.get(pod).copied());
        if known == Some(ready) {
            return Ok(());
        }
        // A gate is known only for a pod seen as ours; any other is checked.
        if known.is_none() {
            match self.pods().get_opt(pod).await {
                Ok(Some(p)) if self.our_server(&p).is_some() => {}
                Ok(Some(_)) => {
                    return Err(not_ours(
                        "set readiness gate",
                        "pod",
                        pod,
                        &self.scope,
                        "(any)",
                    ));
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(op_error("set readiness gate", pod, &e)),
            }
        }
        let (status, reason, message) = if ready {
            ("True", "McpHandshake", "the MCP handshake succeeded")
        } else {
            ("False", "McpProbeFailed", "the MCP handshake failed")
        };
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let patch = serde_json::json!({
            "status": {"conditions": [{
                "type": READY_CONDITION,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
            }]}
        });
        match self
            .pods()
            .patch_status(pod, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {
                self.remember_gate(pod, ready);
                Ok(())
            }
            // A pod that went away has no gate to set.
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(op_error("set readiness gate", pod, &e)),
        }
    }
}
