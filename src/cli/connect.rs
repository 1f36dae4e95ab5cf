//! Turning the global flags into a runtime handle.

use super::{Global, RuntimeKind};
use crate::runtime::docker::{DockerConfig, DockerRuntime};
use crate::runtime::{AnyRuntime, RuntimeError};

pub async fn runtime(global: &Global) -> Result<AnyRuntime, RuntimeError> {
    match global.runtime {
        RuntimeKind::Docker => Ok(AnyRuntime::Docker(
            DockerRuntime::connect(DockerConfig::from_env(
                &global.scope,
                crate::runtime::runners_from_env(),
            ))
            .await?,
        )),
        RuntimeKind::Kubernetes => Err(RuntimeError::Unavailable {
            runtime: "kubernetes",
            message: "the Kubernetes runtime is not available in this build yet".into(),
        }),
    }
}
