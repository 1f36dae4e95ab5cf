//! Deadlines on our side of every runtime call. An engine that stops
//! answering (a hung dockerd, an API server behind a dead load balancer)
//! must cost a pass a bounded wait, never the whole loop: a client library's
//! own timeouts are long or absent, and an open socket that nobody answers
//! waits forever. [`Bounded`] wraps any [`Runtime`] and gives each call its
//! deadline, turning a call that outlives it into an error that says so.

use super::{Attached, Created, LogLine, Runtime, RuntimeError};
use crate::model::{Holder, Lease, RunSpec, Unit, Watched};
use std::future::Future;
use std::time::Duration;

/// How long the runtime may take to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Every call but `create`: a list, an inspect, a remove, an attach,
    /// a readiness gate, a page of logs.
    pub call: Duration,
    /// `create`, which pulls a missing image first: a large image on a slow
    /// link takes minutes, and only the engine knows it is making progress.
    pub create: Duration,
}

impl Deadlines {
    /// `call` for every call, and ten times it for a create (5 min with
    /// the default 30 s), which may pull.
    pub fn from_call(call: Duration) -> Self {
        Deadlines {
            call,
            create: call.saturating_mul(10),
        }
    }
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines::from_call(Duration::from_secs(30))
    }
}

/// The message of a call to the runtime `name` that outlived `limit`.
pub fn did_not_answer(name: &str, limit: Duration) -> String {
    format!(
        "the {name} runtime did not answer within {}",
        humantime::format_duration(limit)
    )
}

/// A runtime whose every call has a deadline. `events` has none of its own
/// (a quiet stream is a healthy one); the runtimes bound the calls they make
/// to reopen it. `logs` with `follow` runs until the unit stops, so only the
/// wait for the first line is bounded then.
pub struct Bounded<R> {
    inner: R,
    deadlines: Deadlines,
    /// `docker` or `kubernetes`, for messages.
    name: &'static str,
}

impl<R> Bounded<R> {
    pub fn new(inner: R, name: &'static str, deadlines: Deadlines) -> Self {
        Bounded {
            inner,
            deadlines,
            name,
        }
    }

    pub fn inner(&self) -> &R {
        &self.inner
    }

    pub fn deadlines(&self) -> Deadlines {
        self.deadlines
    }

    fn late(&self, limit: Duration) -> String {
        did_not_answer(self.name, limit)
    }

    /// A call about the runtime as a whole: a late answer means it is
    /// unavailable, and the pass is retried.
    async fn whole<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = Result<T, RuntimeError>>,
    ) -> Result<T, RuntimeError> {
        match tokio::time::timeout(limit, call).await {
            Ok(r) => r,
            Err(_) => Err(RuntimeError::Unavailable {
                runtime: self.name,
                message: self.late(limit),
            }),
        }
    }

    /// A call about one unit: a late answer fails that unit's action.
    async fn one<T>(
        &self,
        op: &'static str,
        handle: &str,
        limit: Duration,
        call: impl Future<Output = Result<T, RuntimeError>>,
    ) -> Result<T, RuntimeError> {
        match tokio::time::timeout(limit, call).await {
            Ok(r) => r,
            Err(_) => Err(RuntimeError::Operation {
                op,
                instance: handle.to_owned(),
                message: self.late(limit),
            }),
        }
    }
}

impl<R: Runtime + Sync> Runtime for Bounded<R> {
    async fn observe(&self) -> Result<Vec<Unit>, RuntimeError> {
        self.whole(self.deadlines.call, self.inner.observe()).await
    }

    async fn inspect(&self, handle: &str) -> Result<Option<Unit>, RuntimeError> {
        self.one(
            "inspect",
            handle,
            self.deadlines.call,
            self.inner.inspect(handle),
        )
        .await
    }

    async fn create(&self, spec: &RunSpec) -> Result<Created, RuntimeError> {
        let name = super::unit_name(&spec.server, &spec.instance);
        self.one(
            "create",
            &name,
            self.deadlines.create,
            self.inner.create(spec),
        )
        .await
    }

    async fn remove(&self, handle: &str) -> Result<(), RuntimeError> {
        self.one(
            "remove",
            handle,
            self.deadlines.call,
            self.inner.remove(handle),
        )
        .await
    }

    fn events(
        &self,
    ) -> impl futures_core::Stream<Item = Result<Watched, RuntimeError>> + Send + '_ {
        self.inner.events()
    }

    async fn set_ready(&self, handle: &str, ready: bool) -> Result<(), RuntimeError> {
        self.one(
            "set readiness of",
            handle,
            self.deadlines.call,
            self.inner.set_ready(handle, ready),
        )
        .await
    }

    async fn attach(&self, handle: &str) -> Result<Attached, RuntimeError> {
        self.one(
            "attach",
            handle,
            self.deadlines.call,
            self.inner.attach(handle),
        )
        .await
    }

    async fn logs(
        &self,
        handle: &str,
        tail: Option<usize>,
        follow: bool,
        on_line: &mut (dyn FnMut(LogLine) + Send),
    ) -> Result<(), RuntimeError> {
        if follow {
            return self.inner.logs(handle, tail, follow, on_line).await;
        }
        self.one(
            "logs",
            handle,
            self.deadlines.call,
            self.inner.logs(handle, tail, follow, on_line),
        )
        .await
    }

    async fn lease(&self) -> Result<Option<Lease>, RuntimeError> {
        self.whole(self.deadlines.call, self.inner.lease()).await
    }

    async fn write_lease(
        &self,
        after: Option<&str>,
        holder: Option<&Holder>,
        ttl: Duration,
    ) -> Result<Option<String>, RuntimeError> {
        self.whole(
            self.deadlines.call,
            self.inner.write_lease(after, holder, ttl),
        )
        .await
    }

    async fn digest_key(
        &self,
        proposed: Option<[u8; 32]>,
    ) -> Result<Option<[u8; 32]>, RuntimeError> {
        self.whole(self.deadlines.call, self.inner.digest_key(proposed))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;

    /// A runtime that answers nothing, ever: a hung engine.
    struct Hung;

    impl Runtime for Hung {
        async fn lease(&self) -> Result<Option<crate::model::Lease>, RuntimeError> {
            std::future::pending().await
        }
        async fn write_lease(
            &self,
            _: Option<&str>,
            _: Option<&crate::model::Holder>,
            _: Duration,
        ) -> Result<Option<String>, RuntimeError> {
            std::future::pending().await
        }
        async fn digest_key(&self, _: Option<[u8; 32]>) -> Result<Option<[u8; 32]>, RuntimeError> {
            std::future::pending().await
        }
        async fn observe(&self) -> Result<Vec<Unit>, RuntimeError> {
            std::future::pending().await
        }
        async fn inspect(&self, _: &str) -> Result<Option<Unit>, RuntimeError> {
            std::future::pending().await
        }
        async fn create(&self, _: &RunSpec) -> Result<Created, RuntimeError> {
            std::future::pending().await
        }
        async fn remove(&self, _: &str) -> Result<(), RuntimeError> {
            std::future::pending().await
        }
        fn events(
            &self,
        ) -> impl futures_core::Stream<Item = Result<Watched, RuntimeError>> + Send + '_ {
            futures_util::stream::pending()
        }
        async fn set_ready(&self, _: &str, _: bool) -> Result<(), RuntimeError> {
            std::future::pending().await
        }
        async fn attach(&self, _: &str) -> Result<Attached, RuntimeError> {
            std::future::pending().await
        }
        async fn logs(
            &self,
            _: &str,
            _: Option<usize>,
            _: bool,
            _: &mut (dyn FnMut(LogLine) + Send),
        ) -> Result<(), RuntimeError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_call_to_a_hung_runtime_ends_at_its_deadline() {
        let rt = Bounded::new(Hung, "docker", Deadlines::from_call(Duration::from_secs(5)));
        let began = tokio::time::Instant::now();
        let e = rt.observe().await.expect_err("a hung list fails");
        assert_eq!(
            e.to_string(),
            "cannot reach the docker runtime: the docker runtime did not answer within 5s"
        );
        assert_eq!(began.elapsed(), Duration::from_secs(5));
        let e = rt.remove("c1").await.expect_err("a hung remove fails");
        assert_eq!(
            e.to_string(),
            "remove c1: the docker runtime did not answer within 5s"
        );
        assert!(rt.inspect("c1").await.is_err());
        assert!(rt.attach("c1").await.is_err());
        assert!(rt.set_ready("c1", true).await.is_err());
        assert!(rt.logs("c1", Some(1), false, &mut |_| {}).await.is_err());
        let began = tokio::time::Instant::now();
        let spec = RunSpec {
            instance: crate::model::InstanceId("01abc".into()),
            server: "alpha".into(),
            spec_hash: crate::model::SpecHash("h1".into()),
            program: crate::model::Program::Image("img:1".into()),
            args: vec![],
            transport: crate::model::Transport::Stdio,
            port: None,
            path: None,
            env: vec![],
            memory_bytes: None,
            millicpus: None,
        };
        let e = rt.create(&spec).await.expect_err("a hung create fails");
        assert_eq!(
            e.to_string(),
            "create mcpctl-alpha-01abc: the docker runtime did not answer within 50s"
        );
        assert_eq!(began.elapsed(), Duration::from_secs(50));
    }

    #[tokio::test(start_paused = true)]
    async fn a_runtime_that_answers_is_passed_through() {
        let rt = Bounded::new(FakeRuntime::new(), "docker", Deadlines::default());
        assert_eq!(rt.observe().await.expect("observe").len(), 0);
        assert!(rt.inspect("none").await.expect("inspect").is_none());
    }
}
