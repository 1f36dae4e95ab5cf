//! An in-memory runtime: a plainly fake world for planner and apply tests.
//! Units live in a map; tests reach in to crash, restart or delete them, the
//! way `docker kill` or `docker rm -f` would out of band.

use super::{CreateRequest, Created, Runtime, RuntimeError, Unit, UnitState};
use crate::state::InstanceId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The fake world. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct FakeRuntime {
    units: Arc<Mutex<BTreeMap<InstanceId, Unit>>>,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// Direct access to the world, for tests that play the part of the outside.
    pub fn units(&self) -> MutexGuard<'_, BTreeMap<InstanceId, Unit>> {
        // A poisoned lock means another test thread panicked; its world is
        // still the best evidence we have.
        self.units.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Runtime for FakeRuntime {
    async fn observe(
        &self,
        _since: Option<crate::time::Timestamp>,
    ) -> Result<Vec<Unit>, RuntimeError> {
        Ok(self.units().values().cloned().collect())
    }

    async fn create(&self, req: &CreateRequest) -> Result<Created, RuntimeError> {
        let handle = format!("fake-{}", req.instance);
        let endpoint = match req.port {
            Some(p) => format!(
                "http://127.0.0.1:{p}{}",
                req.path.as_deref().unwrap_or("/mcp")
            ),
            None => "stdio".to_owned(),
        };
        self.units().insert(
            req.instance.clone(),
            Unit {
                instance: req.instance.clone(),
                server: req.server.clone(),
                spec_hash: req.spec_hash.clone(),
                handle: handle.clone(),
                state: UnitState::Running,
                restarts: 0,
                exit_code: None,
                last_log: None,
                endpoint: Some(endpoint.clone()),
                started_at: Some(crate::time::Timestamp::now()),
            },
        );
        Ok(Created { handle, endpoint })
    }

    async fn inspect(&self, unit: &mut Unit) -> Result<bool, RuntimeError> {
        match self.units().get(&unit.instance) {
            Some(u) => {
                *unit = u.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn events(
        &self,
    ) -> impl futures_core::Stream<Item = Result<super::RuntimeEvent, RuntimeError>> + Send + '_
    {
        // The fake world changes only when a test changes it; nothing to announce.
        futures_util::stream::empty()
    }

    async fn attach(&self, handle: &str) -> Result<super::Attached, RuntimeError> {
        Err(RuntimeError::Operation {
            op: "attach",
            instance: handle.to_owned(),
            message: "the fake runtime's units do not speak MCP".into(),
        })
    }

    async fn remove(&self, handle: &str) -> Result<(), RuntimeError> {
        self.units().retain(|_, u| u.handle != handle);
        Ok(())
    }

    async fn logs(
        &self,
        handle: &str,
        tail: usize,
        _follow: bool,
        on_line: &mut (dyn FnMut(String) + Send),
    ) -> Result<(), RuntimeError> {
        let lines: Vec<String> = self
            .units()
            .values()
            .filter(|u| u.handle == handle)
            .filter_map(|u| u.last_log.clone())
            .collect();
        for line in lines.into_iter().rev().take(tail).rev() {
            on_line(line);
        }
        Ok(())
    }
}
