//! From a server spec to what a runtime starts: the program (image or
//! package; the runtime lowers packages onto its runner images), arguments,
//! transport, and environment with secrets filled in.

use crate::model::{EnvSource, EnvVar, InstanceId, Program, RunSpec, SpecHash};
use crate::secrets::Secrets;
use crate::spec::{EnvValue, Server, Workload};

/// `None` for an external server, which no runtime runs.
pub fn run_spec(
    server: &Server,
    hash: &SpecHash,
    id: &InstanceId,
    secrets: &Secrets,
) -> Option<RunSpec> {
    let spec = &server.spec;
    let program = match &spec.workload {
        Workload::Image(image) => Program::Image(image.clone()),
        Workload::Package(p) => Program::Package {
            runtime: p.runtime,
            name: p.name.clone(),
            version: p.version.clone(),
        },
        Workload::External(_) => return None,
    };
    let env = spec
        .env
        .iter()
        .filter_map(|(k, v)| {
            let value = match v {
                EnvValue::Plain(s) => EnvSource::Plain(s.clone()),
                // Resolution happened at plan time; a miss here cannot occur
                // for a plan that got this far, and skipping is safer than a panic.
                EnvValue::Secret(r) if secrets.is_native(r) => EnvSource::Reference {
                    name: r.name.clone(),
                    key: r.key.clone(),
                },
                EnvValue::Secret(r) => EnvSource::Secret {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    value: secrets.get(r)?.clone(),
                },
            };
            Some(EnvVar {
                name: k.clone(),
                value,
            })
        })
        .collect();
    Some(RunSpec {
        instance: id.clone(),
        server: server.name.clone(),
        spec_hash: hash.clone(),
        program,
        args: spec.command.clone(),
        transport: spec.transport,
        port: spec.port,
        path: spec.path.clone(),
        env,
        memory_bytes: spec.resources.memory_bytes,
        millicpus: spec.resources.millicpus,
    })
}
