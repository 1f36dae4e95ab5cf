//! A fault-injecting proxy for the Docker engine's API socket: it listens on
//! a unix socket of its own and relays bytes, unchanged, to the real engine
//! (the `unix://` path in `DOCKER_HOST`, else `/var/run/docker.sock`), so a
//! client pointed at it (`DOCKER_HOST=unix://…/proxy.sock`) sees the engine
//! misbehave on demand:
//! - [`EngineProxy::cut`] closes every open connection at once, as a
//!   daemon restart looks to its clients;
//! - [`EngineProxy::refuse`] / [`EngineProxy::refuse_for`] close the
//!   listening socket, so connects fail with `ECONNREFUSED`, as with a
//!   stopped daemon;
//! - [`EngineProxy::stall`] keeps accepting connections but moves no byte
//!   either way, on new and open connections alike, as with a hung engine;
//!   what was held moves once the stall ends.
//!
//! It runs on a thread and a tokio runtime of its own, so synchronous tests,
//! async tests and the `fault-proxy` example (for `scripts/soak`) drive it
//! alike. Include it with `#[path = "support/proxy.rs"] mod proxy;`.
#![allow(dead_code)] // Each including binary uses a different subset.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// How long a control call waits for the proxy to have done what it asked.
const CONTROL_DEADLINE: Duration = Duration::from_secs(5);

/// The faults in force. Each control call changes it, and every task of the
/// proxy follows it through a `watch` channel.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    refusing: bool,
    /// Bumped by every call that sets `refusing`, so that a `refuse_for`
    /// timer lifts only the refusal it made.
    refusals: u64,
    stalled: bool,
    /// Bumped by every cut: a connection ends when it sees a new value.
    cuts: u64,
    stopping: bool,
}

/// What the proxy has done, for tests to poll with a deadline.
#[derive(Default)]
struct Counters {
    accepted: AtomicUsize,
    /// The serial numbers (order of acceptance) of the connections open now.
    open: Mutex<BTreeSet<usize>>,
    listening: AtomicBool,
}

impl Counters {
    fn open(&self) -> std::sync::MutexGuard<'_, BTreeSet<usize>> {
        // A relay never panics holding it; a poisoned set is still right.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub struct EngineProxy {
    socket: PathBuf,
    faults: Arc<watch::Sender<Faults>>,
    counters: Arc<Counters>,
    runtime: tokio::runtime::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Holds the socket's directory when the proxy made it.
    _dir: Option<tempfile::TempDir>,
}

/// The engine's socket, as the docker CLI and bollard find it.
pub fn engine_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

impl EngineProxy {
    /// A proxy on `proxy.sock` in a new temporary directory, in front of
    /// the engine's socket.
    pub fn start() -> EngineProxy {
        let dir = tempfile::tempdir().expect("a temporary directory for the proxy");
        let mut proxy = EngineProxy::start_at(&dir.path().join("proxy.sock"), &engine_socket())
            .expect("the proxy starts");
        proxy._dir = Some(dir);
        proxy
    }

    /// A proxy listening on `socket` (replaced if it exists) in front of
    /// `upstream`.
    pub fn start_at(socket: &Path, upstream: &Path) -> io::Result<EngineProxy> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (faults, _) = watch::channel(Faults::default());
        let faults = Arc::new(faults);
        let counters = Arc::new(Counters::default());
        let listener = bind(socket, &handle)?;
        counters.listening.store(true, Ordering::SeqCst);
        let serve = serve(
            listener,
            socket.to_owned(),
            upstream.to_owned(),
            faults.clone(),
            counters.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("engine-proxy".into())
            // Dropping the runtime when `serve` returns ends every relay.
            .spawn(move || runtime.block_on(serve))?;
        Ok(EngineProxy {
            socket: socket.to_owned(),
            faults,
            counters,
            runtime: handle,
            thread: Some(thread),
            _dir: None,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The `DOCKER_HOST` value that points a client at the proxy.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counters.open().len()
    }

    /// Closes every open connection at once; returns once all of them are
    /// closed. New connections are accepted as before (unless refused),
    /// and clients may well make some at once.
    pub fn cut(&self) {
        let before = self.counters.open().clone();
        self.faults.send_modify(|f| f.cuts += 1);
        self.until("every connection to close", || {
            self.counters.open().is_disjoint(&before)
        });
    }

    /// Refuses new connections (`ECONNREFUSED`) while `on`; returns once
    /// the listening socket is closed or open again.
    pub fn refuse(&self, on: bool) {
        self.faults.send_modify(|f| {
            f.refusing = on;
            f.refusals += 1;
        });
        self.until("the listener to follow", || self.listening() != on);
    }

    /// Refuses new connections for `d` from now, then accepts them again.
    pub fn refuse_for(&self, d: Duration) {
        self.refuse(true);
        let mine = self.faults.borrow().refusals;
        let faults = self.faults.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(d).await;
            faults.send_if_modified(|f| {
                let lift = f.refusals == mine;
                if lift {
                    f.refusing = false;
                }
                lift
            });
        });
    }

    /// While `on`, connections are accepted but no byte moves either way.
    pub fn stall(&self, on: bool) {
        self.faults.send_modify(|f| f.stalled = on);
    }

    /// Whether the proxy's socket is listening.
    pub fn listening(&self) -> bool {
        self.counters.listening.load(Ordering::SeqCst)
    }

    fn until(&self, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + CONTROL_DEADLINE;
        while !done() {
            assert!(Instant::now() < deadline, "the proxy failed to get {what}");
            // Polling the proxy's thread against a deadline.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.faults.send_modify(|f| f.stopping = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Binds `socket`, in place of whatever file (a stale socket) is there.
fn bind(socket: &Path, runtime: &tokio::runtime::Handle) -> io::Result<UnixListener> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let _entered = runtime.enter();
    UnixListener::bind(socket)
}

/// Accepts connections and hands each to a relay, closing the listener
/// while refusing, until the proxy stops.
async fn serve(
    listener: UnixListener,
    socket: PathBuf,
    upstream: PathBuf,
    faults: Arc<watch::Sender<Faults>>,
    counters: Arc<Counters>,
) {
    let mut rx = faults.subscribe();
    let mut listener = Some(listener);
    loop {
        let now = *rx.borrow_and_update();
        if now.stopping {
            return;
        }
        if now.refusing {
            // No listener at all: connects are refused, as with a stopped daemon.
            listener = None;
            counters.listening.store(false, Ordering::SeqCst);
        } else if listener.is_none() {
            match bind(&socket, &tokio::runtime::Handle::current()) {
                Ok(l) => {
                    listener = Some(l);
                    counters.listening.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    eprintln!("engine proxy: cannot listen on {}: {e}", socket.display());
                    return;
                }
            }
        }
        let accept = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            accepted = accept => match accepted {
                Ok((client, _)) => {
                    // The cut count is read before the connection is listed
                    // as open, so any cut that lists it also ends it.
                    let cuts = faults.borrow().cuts;
                    let serial = counters.accepted.fetch_add(1, Ordering::SeqCst);
                    counters.open().insert(serial);
                    let (upstream, rx, counters) = (upstream.clone(), faults.subscribe(), counters.clone());
                    tokio::spawn(async move {
                        relay(client, &upstream, cuts, rx).await;
                        counters.open().remove(&serial);
                    });
                }
                Err(e) => eprintln!("engine proxy: accept failed: {e}"),
            },
        }
    }
}

/// One client connection, relayed to its own connection to the engine
/// until either side closes, or a cut.
async fn relay(
    client: UnixStream,
    upstream: &Path,
    cuts: u64,
    mut faults: watch::Receiver<Faults>,
) {
    let stalls = faults.clone();
    let cut = async {
        loop {
            let f = *faults.borrow_and_update();
            if f.cuts != cuts || f.stopping {
                return;
            }
            if faults.changed().await.is_err() {
                return;
            }
        }
    };
    let relayed = async {
        let Ok(engine) = UnixStream::connect(upstream).await else {
            return;
        };
        let (client_r, client_w) = client.into_split();
        let (engine_r, engine_w) = engine.into_split();
        let _ = tokio::try_join!(
            pump(client_r, engine_w, stalls.clone()),
            pump(engine_r, client_w, stalls),
        );
    };
    // Dropping both halves of both sockets is the cut.
    tokio::select! {
        () = cut => {}
        () = relayed => {}
    }
}

/// Copies one direction, holding what it read while stalled; an end of
/// stream is passed on as a half-close.
async fn pump(
    mut from: tokio::net::unix::OwnedReadHalf,
    mut to: tokio::net::unix::OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        unstalled(&mut faults).await;
        let n = from.read(&mut buf).await?;
        unstalled(&mut faults).await;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
    }
}

async fn unstalled(faults: &mut watch::Receiver<Faults>) {
    // A closed channel means the proxy is stopping: the relay ends anyway.
    let _ = faults.wait_for(|f| !f.stalled || f.stopping).await;
}
