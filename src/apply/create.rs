//! From a server spec to a runtime's create request: image or package runner,
//! command, and environment with secrets filled in.

use crate::runtime::CreateRequest;
use crate::secrets::{SecretValue, Secrets};
use crate::spec::{EnvValue, PackageRuntime, Server, SpecHash, Workload};
use crate::state::InstanceId;

pub const NODE_RUNNER: &str = "mcpctl/node-runner";
pub const PYTHON_RUNNER: &str = "mcpctl/python-runner";

/// The runner image for a package runtime, overridable by environment.
pub fn runner_image(runtime: PackageRuntime) -> String {
    let (var, default) = match runtime {
        PackageRuntime::Node => ("MCPCTL_NODE_RUNNER_IMAGE", NODE_RUNNER),
        PackageRuntime::Python => ("MCPCTL_PYTHON_RUNNER_IMAGE", PYTHON_RUNNER),
    };
    std::env::var(var)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

pub fn request(
    server: &Server,
    hash: &SpecHash,
    id: &InstanceId,
    secrets: &Secrets,
) -> CreateRequest {
    let spec = &server.spec;
    let (image, command) = match &spec.workload {
        Workload::Image(image) => (image.clone(), spec.command.clone()),
        Workload::Package(p) => {
            let mut cmd = match p.runtime {
                PackageRuntime::Node => {
                    let pkg = p
                        .version
                        .as_ref()
                        .map_or(p.name.clone(), |v| format!("{}@{v}", p.name));
                    vec!["npx".to_owned(), "-y".to_owned(), pkg]
                }
                PackageRuntime::Python => {
                    let pkg = p
                        .version
                        .as_ref()
                        .map_or(p.name.clone(), |v| format!("{}=={v}", p.name));
                    vec!["uvx".to_owned(), pkg]
                }
            };
            cmd.extend(spec.command.iter().cloned());
            (runner_image(p.runtime), cmd)
        }
        // External servers never reach a runtime.
        Workload::External(e) => (String::new(), vec![e.url.clone()]),
    };
    let env = spec
        .env
        .iter()
        .filter_map(|(k, v)| match v {
            EnvValue::Plain(s) => Some((k.clone(), SecretValue::plain(s))),
            // Resolution happened at plan time; a miss here cannot occur for a
            // plan that got this far, and skipping is safer than a panic.
            EnvValue::Secret(r) => secrets.get(r).map(|s| (k.clone(), s.clone())),
        })
        .collect();
    CreateRequest {
        instance: id.clone(),
        server: server.name.clone(),
        spec_hash: hash.clone(),
        image,
        command,
        transport: spec.transport,
        port: spec.port,
        path: spec.path.clone(),
        env,
        memory_bytes: spec.resources.memory_bytes,
        millicpus: spec.resources.millicpus,
    }
}
