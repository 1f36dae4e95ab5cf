//! The reconciler's HTTP endpoints, on `--listen`, and the limits that keep
//! them up under hostile or broken clients:
//! - `GET /healthz`: 200 when healthy, 503 when degraded, with the reasons
//!   (an invalid revision and its file and line, an unreachable runtime, a
//!   failing fetch) as JSON;
//! - `GET /livez`: 200 while the reconcile loop turns, 503 once it has not
//!   turned for longer than [`Limits::stale_after`], whatever the health of
//!   the runtime or the source;
//! - `GET /metrics`: the Prometheus text format;
//! - `POST /hooks/sync`: fetch the source now. The body must be signed the way
//!   GitHub signs webhooks (`X-Hub-Signature-256: sha256=<HMAC-SHA256 of the
//!   body, hex>`) with `MCPCTL_WEBHOOK_SECRET`; anything else gets 401, and
//!   accepted syncs are limited to one a second.
//!
//! The listener is open to anyone who can reach it, so nobody may hold it:
//! every wait has a deadline and every buffer a bound ([`Limits`]). A
//! request's head must arrive in time, a connection lives a bounded time, the
//! number of connections is capped (the accept loop that keeps those is
//! [`crate::listen`], shared with the gateway), and the webhook's signature
//! header is checked before any of its body is read, which then streams into
//! the HMAC under a size and a time limit.

use super::status::Shared;
use crate::model::SecretValue;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Accepted syncs at most this often: each one is a fetch.
const SYNC_GAP: Duration = Duration::from_secs(1);
const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// How much a client may take of the listener, and for how long.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request's head must arrive whole within this, counted from the
    /// connection's opening or from the end of the previous response: hyper
    /// restarts the timer when a keep-alive connection goes idle, so an idle
    /// connection is closed after this too.
    pub header_read: Duration,
    /// The largest request head (request line and headers); larger gets 431.
    /// At least 8 KiB, hyper's smallest buffer.
    pub head_bytes: usize,
    /// A connection is asked to close after this long, whatever it is doing
    /// (a client trickling requests, or reading a response slowly), and is
    /// dropped [`Limits::grace`] later if it has not.
    pub connection: Duration,
    /// Connections served at once. Beyond them, new connections wait in the
    /// kernel's accept queue, unaccepted, until one ends: they cost the
    /// process no file descriptor and no memory, a legitimate client behind a
    /// burst is served late rather than refused, and once the queue is full
    /// the kernel refuses the rest.
    pub max_connections: usize,
    /// The largest webhook body: GitHub's push payloads are far smaller.
    pub webhook_body: usize,
    /// The webhook's whole body must arrive within this, from the moment the
    /// handler starts reading it; else 408.
    pub webhook_read: Duration,
    /// On shutdown (and at the end of [`Limits::connection`]), requests in
    /// progress get this long to finish before their connection is dropped.
    pub grace: Duration,
    /// `/livez` says 503 once the loop has not turned for longer than this.
    /// It must be longer than the loop's longest quiet wait.
    pub stale_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(5),
            head_bytes: 16 << 10,
            connection: Duration::from_secs(60),
            // Far below the usual 1024 descriptors a process may open, and
            // well above what probes, a scraper and a webhook ever need.
            max_connections: 512,
            webhook_body: 1 << 20,
            webhook_read: Duration::from_secs(10),
            grace: Duration::from_secs(5),
            stale_after: Duration::from_secs(120),
        }
    }
}

impl Limits {
    /// The limits the accept loop keeps.
    fn listen(&self) -> crate::listen::Limits {
        crate::listen::Limits {
            header_read: self.header_read,
            head_bytes: self.head_bytes,
            connection: self.connection,
            max_connections: self.max_connections,
            grace: self.grace,
        }
    }
}

struct Server {
    shared: Arc<Shared>,
    secret: Option<SecretValue>,
    limits: Limits,
    last_sync: Mutex<Option<Instant>>,
}

/// Serves until `shutdown` resolves; then stops accepting, lets requests in
/// progress finish for at most [`Limits::grace`], drops what is left, and
/// returns.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    secret: Option<SecretValue>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let listen = limits.listen();
    let server = Arc::new(Server {
        shared,
        secret,
        limits,
        last_sync: Mutex::new(None),
    });
    let service = move |req| {
        let server = server.clone();
        async move { server.handle(req).await }
    };
    crate::listen::serve("watch", listener, listen, service, shutdown).await;
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", format!("{body}\n"))
}

fn json(ok: bool, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(status, "application/json", format!("{body:#}\n"))
}

/// Why a webhook body was not read to its end.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    /// The body outgrew [`Limits::webhook_body`].
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The body did not arrive within [`Limits::webhook_read`].
    #[error("the body did not arrive within {0:?}")]
    TooSlow(Duration),
    /// The client broke the body off, or sent a malformed one.
    #[error("the body was cut short: {0}")]
    Cut(#[from] hyper::Error),
}

impl BodyError {
    fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Cut(_) => StatusCode::BAD_REQUEST,
        }
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The signature a header carries: `sha256=` and 64 hex digits, else none.
fn signature_of(header: Option<&hyper::header::HeaderValue>) -> Option<[u8; 32]> {
    let hex_sig = header?.to_str().ok()?.strip_prefix("sha256=")?;
    let mut sig = [0u8; 32];
    hex::decode_to_slice(hex_sig, &mut sig).ok()?;
    Some(sig)
}

/// Feeds `body` into `mac` frame by frame, holding no more than one frame,
/// within `limits`' size and time.
async fn digest(
    mut body: Incoming,
    mac: &mut HmacSha256,
    limits: &Limits,
) -> Result<(), BodyError> {
    use hmac::Mac;
    let limit = limits.webhook_body;
    // A declared length over the limit is refused before a byte is read.
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge { limit });
    }
    let read = async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                seen = seen.saturating_add(data.len());
                if seen > limit {
                    return Err(BodyError::TooLarge { limit });
                }
                mac.update(&data);
            }
        }
        Ok(())
    };
    tokio::time::timeout(limits.webhook_read, read)
        .await
        .map_err(|_| BodyError::TooSlow(limits.webhook_read))?
}

impl Server {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => self.healthz(),
            (&Method::GET, "/livez") => self.livez(),
            (&Method::GET, "/metrics") => reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.shared.metrics.encode(),
            ),
            (&Method::POST, "/hooks/sync") => self.sync(req).await,
            (_, "/healthz" | "/livez" | "/metrics" | "/hooks/sync") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }

    fn healthz(&self) -> Response<Full<Bytes>> {
        let h = self.shared.health();
        json(h.ok(), &healthz_body(&h))
    }

    fn livez(&self) -> Response<Full<Bytes>> {
        let stale_after = self.limits.stale_after;
        let since = self.shared.since_turn();
        let ok = since <= stale_after;
        let body = serde_json::json!({
            "status": if ok { "ok" } else { "stalled" },
            "since_last_turn_seconds": since.as_secs(),
            "stale_after_seconds": stale_after.as_secs(),
        });
        json(ok, &body)
    }

    async fn sync(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        use hmac::Mac;
        let Some(secret) = &self.secret else {
            return text(
                StatusCode::UNAUTHORIZED,
                "the webhook is off: set MCPCTL_WEBHOOK_SECRET to sign calls with",
            );
        };
        // Before any of the body: an unsigned call costs no read at all.
        let Some(signature) = signature_of(req.headers().get(SIGNATURE_HEADER)) else {
            return text(
                StatusCode::UNAUTHORIZED,
                "missing or malformed X-Hub-Signature-256",
            );
        };
        let Ok(mut mac) = HmacSha256::new_from_slice(secret.expose().as_bytes()) else {
            return text(StatusCode::UNAUTHORIZED, "bad signature");
        };
        if let Err(e) = digest(req.into_body(), &mut mac, &self.limits).await {
            return text(e.status(), &e.to_string());
        }
        if mac.verify_slice(&signature).is_err() {
            return text(StatusCode::UNAUTHORIZED, "bad signature");
        }
        {
            let mut last = self.last_sync.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < SYNC_GAP) {
                return text(StatusCode::TOO_MANY_REQUESTS, "a sync is already under way");
            }
            *last = Some(now);
        }
        tracing::info!("webhook: syncing now");
        self.shared.sync.notify_one();
        text(StatusCode::ACCEPTED, "syncing")
    }
}

/// What `/healthz` answers: the status, and each reason to be degraded as
/// one string of one line (a refused revision's problems one each, with
/// their help).
pub(super) fn healthz_body(h: &super::status::Health) -> serde_json::Value {
    serde_json::json!({
        "status": if h.ok() { "ok" } else { "degraded" },
        "reasons": h.reasons(),
        "revision": h.revision,
        "drift": h.drift,
        "dry_run": h.dry_run,
    })
}

#[cfg(test)]
mod tests {
    //! Real sockets on 127.0.0.1:0. The limits under test are set short and
    //! every other one long, so that only the limit under test can end what
    //! each test waits for; waits are polls with a deadline ([`PATIENCE`]),
    //! far longer than the limit, so a removed limit fails the test.

    use super::*;
    use futures_util::stream::poll_fn;
    use http_body_util::{Empty, StreamBody};
    use hyper::body::Frame;
    use hyper::client::conn::http1::SendRequest;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::{mpsc, oneshot};
    use tokio::task::JoinHandle;

    const SECRET: &str = "s3cret";
    const PATIENCE: Duration = Duration::from_secs(10);
    const LONG: Duration = Duration::from_secs(120);

    /// Limits under which nothing ends by itself within a test, to shorten
    /// the one under test.
    fn lax() -> Limits {
        Limits {
            header_read: LONG,
            head_bytes: 16 << 10,
            connection: LONG,
            max_connections: 1024,
            webhook_body: 1 << 20,
            webhook_read: LONG,
            grace: LONG,
            stale_after: LONG,
        }
    }

    struct Running {
        addr: SocketAddr,
        shared: Arc<Shared>,
        stop: Option<oneshot::Sender<()>>,
        served: JoinHandle<()>,
    }

    async fn start(limits: Limits) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(
            listener,
            shared.clone(),
            Some(SecretValue::new(SECRET.to_owned())),
            limits,
            async {
                let _ = stopped.await;
            },
        ));
        Running {
            addr,
            shared,
            stop: Some(stop),
            served,
        }
    }

    struct Client<B> {
        send: SendRequest<B>,
        /// Ends when the connection does.
        conn: JoinHandle<Result<(), hyper::Error>>,
    }

    async fn client<B>(addr: SocketAddr) -> Client<B>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        Client {
            send,
            conn: tokio::spawn(conn),
        }
    }

    async fn answer(r: Response<Incoming>) -> (StatusCode, String) {
        let status = r.status();
        let body = r.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn get_on(c: &mut Client<Empty<Bytes>>, path: &str) -> (StatusCode, String) {
        let req = Request::get(path).body(Empty::new()).expect("request");
        let r = tokio::time::timeout(PATIENCE, c.send.send_request(req))
            .await
            .unwrap_or_else(|_| panic!("no answer to GET {path} within {PATIENCE:?}"))
            .expect("response");
        answer(r).await
    }

    async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
        get_on(&mut client(addr).await, path).await
    }

    /// A body sent frame by frame, when the test says.
    fn trickle() -> (
        mpsc::Sender<Bytes>,
        impl Body<Data = Bytes, Error = Infallible> + Send + 'static,
    ) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(1);
        let frames = poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|b| b.map(|b| Ok::<_, Infallible>(Frame::data(b))))
        });
        (tx, StreamBody::new(frames))
    }

    fn sign(body: &[u8]) -> String {
        use hmac::Mac;
        let mut mac = HmacSha256::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn hook<B>(signature: Option<&str>, length: Option<usize>, body: B) -> Request<B> {
        let mut r = Request::post("/hooks/sync");
        if let Some(s) = signature {
            r = r.header(SIGNATURE_HEADER, s);
        }
        if let Some(n) = length {
            r = r.header(hyper::header::CONTENT_LENGTH, n);
        }
        r.body(body).expect("request")
    }

    /// How long until the peer closes `stream`, if it does within [`PATIENCE`].
    async fn closed(stream: &mut TcpStream) -> Option<Duration> {
        let started = tokio::time::Instant::now();
        let mut buf = [0u8; 1024];
        let to_end = async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::time::timeout(PATIENCE, to_end)
            .await
            .ok()
            .map(|()| started.elapsed())
    }

    #[tokio::test]
    async fn half_a_request_line_is_cut_off_after_the_header_timeout() {
        let header_read = Duration::from_millis(300);
        let s = start(Limits {
            header_read,
            ..lax()
        })
        .await;
        let mut stream = TcpStream::connect(s.addr).await.expect("connect");
        stream.write_all(b"GET /heal").await.expect("write");
        let after = closed(&mut stream)
            .await
            .expect("a stalled request head is cut off");
        assert!(after >= header_read, "closed after {after:?}");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
        let s = start(Limits {
            header_read: Duration::from_millis(300),
            ..lax()
        })
        .await;
        let mut c = client(s.addr).await;
        assert_eq!(get_on(&mut c, "/healthz").await.0, 503);
        let ended = tokio::time::timeout(PATIENCE, c.conn).await;
        assert!(ended.is_ok(), "the idle connection is still open");
    }

    #[tokio::test]
    async fn a_connection_busy_for_too_long_is_closed() {
        // Requests back to back keep the header timer from ever firing: only
        // the connection's lifetime ends it.
        let s = start(Limits {
            connection: Duration::from_millis(300),
            grace: Duration::from_millis(300),
            ..lax()
        })
        .await;
        let mut c = client::<Empty<Bytes>>(s.addr).await;
        let started = tokio::time::Instant::now();
        let mut answered = 0;
        while started.elapsed() < PATIENCE {
            let req = Request::get("/livez").body(Empty::new()).expect("request");
            match c.send.send_request(req).await {
                Ok(r) => {
                    answer(r).await;
                    answered += 1;
                }
                Err(_) => break,
            }
        }
        assert!(
            started.elapsed() < PATIENCE,
            "still open after {answered} requests"
        );
        assert!(answered > 0);
    }

    #[tokio::test]
    async fn a_head_over_the_limit_is_refused() {
        let s = start(Limits {
            head_bytes: 16 << 10,
            ..lax()
        })
        .await;
        let mut c = client::<Empty<Bytes>>(s.addr).await;
        let req = Request::get("/healthz")
            .header("x-padding", "a".repeat(64 << 10))
            .body(Empty::new())
            .expect("request");
        let r = tokio::time::timeout(PATIENCE, c.send.send_request(req))
            .await
            .expect("an answer");
        assert_eq!(
            r.expect("response").status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[tokio::test]
    async fn healthz_answers_with_300_idle_connections_open() {
        let s = start(Limits::default()).await;
        let time_healthz = || async {
            let mut worst = Duration::ZERO;
            for _ in 0..20 {
                let t = tokio::time::Instant::now();
                assert_eq!(get(s.addr, "/healthz").await.0, 503);
                worst = worst.max(t.elapsed());
            }
            worst
        };
        let quiet = time_healthz().await;
        // Half say nothing, half are stuck in the middle of a request head.
        let mut idle = Vec::new();
        for i in 0..300 {
            let mut stream = TcpStream::connect(s.addr).await.expect("connect");
            if i % 2 == 1 {
                stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .expect("write");
            }
            idle.push(stream);
        }
        let crowded = time_healthz().await;
        println!(
            "/healthz, slowest of 20: {quiet:?} with no other connection, {crowded:?} with 300 idle ones"
        );
        assert!(
            crowded < Duration::from_secs(2),
            "/healthz took {crowded:?} with 300 idle connections"
        );
        drop(idle);
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_until_one_ends() {
        let s = start(Limits {
            max_connections: 4,
            ..lax()
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut c = client(s.addr).await;
            // Answered, so served: the connection holds a slot, idle.
            assert_eq!(get_on(&mut c, "/livez").await.0, 200);
            held.push(c);
        }
        let mut fifth = client::<Empty<Bytes>>(s.addr).await;
        let req = Request::get("/livez").body(Empty::new()).expect("request");
        let waiting = fifth.send.send_request(req);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut waiting)
                .await
                .is_err(),
            "a fifth connection was served while four held the cap"
        );
        let freed = held.pop().expect("a held connection");
        freed.conn.abort();
        drop(freed.send);
        let r = tokio::time::timeout(PATIENCE, waiting)
            .await
            .expect("served once a slot is free")
            .expect("response");
        assert_eq!(r.status(), 200);
    }

    #[tokio::test]
    async fn an_unsigned_or_malformed_webhook_is_refused_before_its_body_is_read() {
        let s = start(lax()).await;
        for signature in [
            None,
            Some("sha1=0123"),
            Some("sha256=not-hex"),
            Some("sha256=abcd"),
        ] {
            let mut c = client(s.addr).await;
            // The body is announced and never sent.
            let (_tx, body) = trickle();
            let r = tokio::time::timeout(
                PATIENCE,
                c.send.send_request(hook(signature, Some(1000), body)),
            )
            .await
            .unwrap_or_else(|_| panic!("{signature:?}: the server waited for the body"))
            .expect("response");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{signature:?}");
        }
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_unread() {
        let s = start(lax()).await;
        let mut c = client(s.addr).await;
        let (_tx, body) = trickle();
        let r = tokio::time::timeout(
            PATIENCE,
            c.send
                .send_request(hook(Some(&sign(b"")), Some(4 << 20), body)),
        )
        .await
        .expect("refused without waiting for the body")
        .expect("response");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_slow_body_over_the_limit_is_refused_at_the_limit() {
        let limit = 1 << 20;
        let s = start(Limits {
            webhook_body: limit,
            ..lax()
        })
        .await;
        let mut c = client(s.addr).await;
        // Chunked: the server cannot know the size until it has counted.
        let (tx, body) = trickle();
        let total = 8 << 20;
        let frame = Bytes::from(vec![b'x'; 64 << 10]);
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sender = {
            let sent = sent.clone();
            tokio::spawn(async move {
                while sent.load(std::sync::atomic::Ordering::SeqCst) < total {
                    // Slow on purpose: 64 KiB every 10 ms.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if tx.send(frame.clone()).await.is_err() {
                        return;
                    }
                    sent.fetch_add(frame.len(), std::sync::atomic::Ordering::SeqCst);
                }
            })
        };
        let r = tokio::time::timeout(
            PATIENCE,
            c.send.send_request(hook(Some(&sign(b"")), None, body)),
        )
        .await
        .expect("an answer")
        .expect("response");
        let at = sent.load(std::sync::atomic::Ordering::SeqCst);
        sender.abort();
        println!("413 after {at} bytes sent of {total}");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            at < 3 * limit,
            "refused only after {at} bytes, the limit is {limit}"
        );
    }

    #[tokio::test]
    async fn a_body_too_slow_gets_408() {
        let s = start(Limits {
            webhook_read: Duration::from_millis(300),
            ..lax()
        })
        .await;
        let mut c = client(s.addr).await;
        let (tx, body) = trickle();
        tx.send(Bytes::from_static(b"{\"ref\":"))
            .await
            .expect("send");
        let r = tokio::time::timeout(
            PATIENCE,
            c.send.send_request(hook(Some(&sign(b"")), Some(100), body)),
        )
        .await
        .expect("an answer")
        .expect("response");
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
    }

    #[tokio::test]
    async fn a_well_signed_body_up_to_the_limit_syncs_and_a_wrong_one_does_not() {
        let limit = 1024;
        let s = start(Limits {
            webhook_body: limit,
            ..lax()
        })
        .await;
        let body = Bytes::from(vec![b'{'; limit]);
        let post = |signature: String, body: Bytes| async move {
            let mut c = client(s.addr).await;
            let r = c
                .send
                .send_request(hook(Some(&signature), None, Full::new(body)))
                .await
                .expect("response");
            answer(r).await
        };
        let other = sign(b"another body");
        assert_eq!(post(other, body.clone()).await.0, 401);
        let over = Bytes::from(vec![b'{'; limit + 1]);
        assert_eq!(post(sign(&over), over).await.0, 413);
        let (status, text) = post(sign(&body), body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{text}");
        tokio::time::timeout(PATIENCE, s.shared.sync.notified())
            .await
            .expect("the loop is told to sync");
    }

    #[tokio::test]
    async fn livez_follows_the_loop_not_the_health() {
        let stale_after = Duration::from_millis(300);
        let s = start(Limits {
            stale_after,
            ..lax()
        })
        .await;
        s.shared
            .update(|h| h.runtime = Some("connection refused".to_owned()));
        let started = tokio::time::Instant::now();
        s.shared.turned();
        assert_eq!(get(s.addr, "/healthz").await.0, 503);
        let (status, body) = get(s.addr, "/livez").await;
        assert_eq!(status, 200, "{body}");
        loop {
            let (status, body) = get(s.addr, "/livez").await;
            if status == 503 {
                assert!(body.contains("\"stalled\""), "{body}");
                break;
            }
            assert!(started.elapsed() < PATIENCE, "/livez never went stale");
            tokio::task::yield_now().await;
        }
        assert!(started.elapsed() > stale_after, "stale too early");
        s.shared.turned();
        assert_eq!(get(s.addr, "/livez").await.0, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn livez_is_503_once_the_loop_has_not_turned_for_longer_than_the_bound() {
        let server = Server {
            shared: Arc::new(Shared::default()),
            secret: None,
            limits: Limits {
                stale_after: Duration::from_secs(120),
                ..lax()
            },
            last_sync: Mutex::new(None),
        };
        server.shared.turned();
        assert_eq!(server.livez().status(), 200);
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(server.livez().status(), 200);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(server.livez().status(), 503);
        server.shared.turned();
        assert_eq!(server.livez().status(), 200);
    }

    /// Asks the server to say when its handler starts reading the body (a
    /// `100 Continue`), so a test knows the request is in progress.
    fn when_read<B>(req: &mut Request<B>) -> Arc<tokio::sync::Notify> {
        let reading = Arc::new(tokio::sync::Notify::new());
        req.headers_mut().insert(
            hyper::header::EXPECT,
            hyper::header::HeaderValue::from_static("100-continue"),
        );
        let r = reading.clone();
        hyper::ext::on_informational(req, move |_| r.notify_one());
        reading
    }

    #[tokio::test]
    async fn shutdown_lets_a_request_in_progress_finish() {
        let mut s = start(lax()).await;
        let body = b"{\"ref\":\"refs/heads/main\"}";
        let mut c = client(s.addr).await;
        let (tx, stream) = trickle();
        let mut req = hook(Some(&sign(body)), Some(body.len()), stream);
        let reading = when_read(&mut req);
        let answer = tokio::spawn(c.send.send_request(req));
        tokio::time::timeout(PATIENCE, reading.notified())
            .await
            .expect("the handler reads the body");
        let _ = s.stop.take().map(|stop| stop.send(()));
        // No new connection once stopping.
        let refused = async {
            while TcpStream::connect(s.addr).await.is_ok() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(PATIENCE, refused)
            .await
            .expect("the listener closes on shutdown");
        tx.send(Bytes::from_static(body)).await.expect("send");
        let r = tokio::time::timeout(PATIENCE, answer)
            .await
            .expect("the request in progress finishes")
            .expect("task")
            .expect("response");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        tokio::time::timeout(PATIENCE, s.served)
            .await
            .expect("serve returns once the last request is done")
            .expect("task");
    }

    #[tokio::test]
    async fn shutdown_with_a_request_held_open_returns_within_the_grace() {
        let grace = Duration::from_millis(300);
        let mut s = start(Limits { grace, ..lax() }).await;
        // A request whose body never comes.
        let mut c = client(s.addr).await;
        let (_tx, body) = trickle();
        let mut req = hook(Some(&sign(b"")), Some(10), body);
        let reading = when_read(&mut req);
        let _pending = tokio::spawn(c.send.send_request(req));
        tokio::time::timeout(PATIENCE, reading.notified())
            .await
            .expect("the handler reads the body");
        let started = tokio::time::Instant::now();
        let _ = s.stop.take().map(|stop| stop.send(()));
        tokio::time::timeout(PATIENCE, s.served)
            .await
            .expect("serve returns after the grace")
            .expect("task");
        let took = started.elapsed();
        println!("serve returned {took:?} after the stop, grace {grace:?}");
        assert!(took >= grace, "returned before the grace: {took:?}");
        tokio::time::timeout(PATIENCE, c.conn)
            .await
            .expect("the held connection is dropped")
            .expect("task")
            .ok();
    }

    #[test]
    fn signatures_must_be_sha256_and_64_hex_digits() {
        let h = |s: &str| hyper::header::HeaderValue::from_str(s).expect("header");
        let good = format!("sha256={}", "ab".repeat(32));
        assert_eq!(signature_of(Some(&h(&good))), Some([0xab; 32]));
        for bad in [
            "sha1=abab",
            "sha256=",
            &format!("sha256={}", "ab".repeat(31)),
            &format!("sha256={}", "ab".repeat(33)),
            &format!("sha256={}", "zz".repeat(32)),
            &format!("SHA256={}", "ab".repeat(32)),
        ] {
            assert_eq!(signature_of(Some(&h(bad))), None, "{bad}");
        }
        assert_eq!(signature_of(None), None);
    }
}
