//! The accept loop that mcpctl's HTTP listeners share (`watch`'s
//! `/healthz`, `/metrics` and webhook, and the gateway): each brings its
//! own service and limits, and [`serve`] keeps the rest the same for both.
//! Whoever can reach a listener may connect to it, so nobody may hold it:
//! connections are capped (beyond the cap they wait, unaccepted, in the
//! kernel's queue), a request's head must arrive in time, a connection
//! lives a bounded time, a failing `accept` backs off instead of spinning,
//! and a shutdown gives requests in progress a grace, then drops them.
//!
//! It imports only `model`: the layers above it decide what is served.

use crate::model::Doubling;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// hyper refuses a smaller read buffer.
const MIN_HEAD_BYTES: usize = 8192;
/// Pauses after failed accepts (out of file descriptors, say), so a failing
/// `accept` does not spin.
const ACCEPT_BACKOFF: Doubling = Doubling::new(Duration::from_millis(10), Duration::from_secs(1));

/// How much a client may take of a listener, and for how long.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request's head must arrive whole within this, counted from the
    /// connection's opening or from the end of the previous response: hyper
    /// restarts the timer when a keep-alive connection goes idle, so an idle
    /// connection is closed after this too.
    pub header_read: Duration,
    /// The largest request head (request line and headers); larger gets 431.
    /// Raised to 8 KiB, hyper's smallest buffer.
    pub head_bytes: usize,
    /// A connection is asked to close after this long, whatever it is doing,
    /// and is dropped [`Limits::grace`] later if it has not.
    pub connection: Duration,
    /// Connections served at once. Beyond them, new connections wait in the
    /// kernel's accept queue, unaccepted, until one ends: they cost the
    /// process no file descriptor and no memory, a legitimate client behind a
    /// burst is served late rather than refused, and once the queue is full
    /// the kernel refuses the rest.
    pub max_connections: usize,
    /// On shutdown (and at the end of [`Limits::connection`]), requests in
    /// progress get this long to finish before their connection is dropped.
    pub grace: Duration,
}

/// Serves `service` on `listener` until `shutdown` resolves; then stops
/// accepting, lets requests in progress finish for at most
/// [`Limits::grace`], drops what is left, and returns. `name` tells the
/// listeners apart in the logs.
pub async fn serve<S, F, B>(
    name: &'static str,
    listener: TcpListener,
    limits: Limits,
    service: S,
    shutdown: impl Future<Output = ()>,
) where
    S: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let cap = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(cap));
    let (stop, stopped) = watch::channel(());
    let mut failures = 0;
    tokio::pin!(shutdown);
    loop {
        // A slot first, then a connection: beyond the cap, connections stay
        // in the kernel's queue (see `Limits::max_connections`).
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(listener = name, error = %e, "cannot accept a connection");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF.after(failures)) => continue,
                    }
                }
            },
        };
        failures = 0;
        // Answers and SSE events go out in small writes; Nagle would hold
        // each until the client's delayed ACK, some 40 ms.
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            name,
            limits.clone(),
            service.clone(),
            stream,
            stopped.clone(),
            slot,
        ));
    }
    drop(listener);
    stop.send_replace(());
    // Each connection ends itself within the grace; all slots back means the
    // last one has.
    let _ = slots.acquire_many(cap as u32).await;
}

/// Serves one connection until it ends, its time is up, or the listener
/// stops; then gives what is in progress the grace to finish.
async fn connection<S, F, B>(
    name: &'static str,
    limits: Limits,
    service: S,
    stream: TcpStream,
    mut stopped: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
) where
    S: Fn(Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = hyper::service::service_fn(move |req| {
        let answer = service(req);
        async move { Ok::<_, std::convert::Infallible>(answer.await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(limits.head_bytes.max(MIN_HEAD_BYTES))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let why = tokio::select! {
        ended = conn.as_mut() => return log_end(name, ended),
        () = tokio::time::sleep(limits.connection) => "held for too long",
        _ = stopped.changed() => "shutting down",
    };
    conn.as_mut().graceful_shutdown();
    match tokio::time::timeout(limits.grace, conn).await {
        Ok(ended) => log_end(name, ended),
        Err(_) => tracing::debug!(listener = name, why, "dropped a connection after the grace"),
    }
}

fn log_end(name: &'static str, ended: Result<(), hyper::Error>) {
    if let Err(e) = ended {
        tracing::debug!(listener = name, error = %e, "connection ended with an error");
    }
}
