//! Turning the global flags into a runtime handle.

use super::{Global, RuntimeKind};
use crate::runtime::docker::{DockerConfig, DockerRuntime};
use crate::runtime::kubernetes::{KubeSettings, KubernetesRuntime};
use crate::runtime::{AnyRuntime, RuntimeError};

pub async fn runtime(global: &Global) -> Result<AnyRuntime, RuntimeError> {
    crate::runtime::validate_scope(&global.scope)?;
    match global.runtime {
        RuntimeKind::Docker => Ok(AnyRuntime::Docker(
            DockerRuntime::connect(DockerConfig::from_env(
                &global.scope,
                crate::runtime::runners_from_env(),
            ))
            .await?,
        )),
        RuntimeKind::Kubernetes => Ok(AnyRuntime::Kubernetes(
            KubernetesRuntime::connect(KubeSettings {
                namespace: global.namespace.clone().filter(|n| !n.is_empty()),
                scope: global.scope.clone(),
                runners: crate::runtime::runners_from_env(),
            })
            .await?,
        )),
    }
}
