//! The refresh step: ask the runtime (and the probes) what exists now. This
//! is the only I/O between reading the state and planning.

use super::{Global, RuntimeKind};
use crate::runtime::{Observation, RuntimeError};
use crate::state::Snapshot;

pub async fn observe(global: &Global, snapshot: &Snapshot) -> miette::Result<Observation> {
    let _ = snapshot;
    match global.runtime {
        RuntimeKind::Docker | RuntimeKind::Kubernetes => Err(RuntimeError::Unavailable {
            runtime: if global.runtime == RuntimeKind::Docker { "docker" } else { "kubernetes" },
            message: "this runtime is not implemented yet".into(),
        }
        .into()),
    }
}
