//! Turning the global flags into a runtime handle.

use super::{Global, RuntimeKind};
use crate::runtime::docker::{DockerConfig, DockerRuntime};
use crate::runtime::kubernetes::{KubeSettings, KubernetesRuntime};
use crate::runtime::{AnyRuntime, Bounded, Deadlines, RuntimeError};

/// The runtime as every command uses it: each call bounded by
/// `--runtime-timeout`.
pub type Connected = Bounded<AnyRuntime>;

pub async fn runtime(global: &Global) -> Result<Connected, RuntimeError> {
    Settings::of(global).connect().await
}

/// What connecting takes, apart from the flags: for a long-running command
/// that connects (again) later.
#[derive(Debug, Clone)]
pub struct Settings {
    runtime: RuntimeKind,
    scope: String,
    namespace: Option<String>,
    runtime_timeout: std::time::Duration,
}

impl Settings {
    pub fn of(global: &Global) -> Settings {
        Settings {
            runtime: global.runtime,
            scope: global.scope.clone(),
            namespace: global.namespace.clone(),
            runtime_timeout: global.runtime_timeout,
        }
    }

    pub async fn connect(&self) -> Result<Connected, RuntimeError> {
        connect(self).await
    }
}

async fn connect(global: &Settings) -> Result<Connected, RuntimeError> {
    crate::runtime::validate_scope(&global.scope)?;
    let deadlines = Deadlines::from_call(global.runtime_timeout);
    let connect = async {
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
    };
    let name = match global.runtime {
        RuntimeKind::Docker => "docker",
        RuntimeKind::Kubernetes => "kubernetes",
    };
    // Connecting asks the engine for its API version: a hung engine must
    // not hang the command before its first call.
    let rt = match tokio::time::timeout(deadlines.call, connect).await {
        Ok(rt) => rt?,
        Err(_) => {
            return Err(RuntimeError::Unavailable {
                runtime: name,
                message: crate::runtime::did_not_answer(name, deadlines.call),
            });
        }
    };
    Ok(Bounded::new(rt, name, deadlines))
}
