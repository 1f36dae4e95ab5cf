//! The loopback relay to the API server's pod proxy: a request for
//! `/<pod>/<port>/<path>` goes to
//! `/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/<path>` through the
//! kube client, which adds the cluster URL and credentials. Responses
//! stream back as they come, so SSE works.
//!
//! The relay forwards with the operator's credentials, so it must not be a
//! door for any other local user: every path starts with a random token
//! (256 bits, from the OS, checked in constant time), and only the pods and
//! ports this runtime has handed out as endpoints are reached; anything
//! else is refused before the API server is asked.

use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A running relay: where it listens and what it lets through.
pub struct Relay {
    pub port: u16,
    token: String,
    guard: Arc<Guard>,
}

/// What a request must show to be forwarded.
struct Guard {
    /// A per-relay MAC key, so the token is compared as MAC tags, in
    /// constant time.
    key: [u8; 32],
    tag: Vec<u8>,
    /// `(pod, port)` pairs handed out as endpoints.
    allowed: Mutex<HashSet<(String, u16)>>,
}

type Mac = hmac::Hmac<sha2::Sha256>;

impl Guard {
    fn mac(key: &[u8; 32], token: &[u8]) -> Mac {
        use hmac::Mac as _;
        let mut mac = Mac::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(token);
        mac
    }

    fn token_ok(&self, presented: &str) -> bool {
        use hmac::Mac as _;
        Self::mac(&self.key, presented.as_bytes())
            .verify_slice(&self.tag)
            .is_ok()
    }

    fn allows(&self, pod: &str, port: u16) -> bool {
        self.allowed
            .lock()
            .is_ok_and(|a| a.contains(&(pod.to_owned(), port)))
    }
}

impl Relay {
    /// Stops forwarding to pods not in `live` (gone since they were handed
    /// out), so the allow-list is bounded by the fleet, not by uptime.
    pub fn forget_all_but(&self, live: &HashSet<&str>) {
        if let Ok(mut a) = self.guard.allowed.lock() {
            a.retain(|(pod, _)| live.contains(pod.as_str()));
        }
    }

    /// The URL through which a probe reaches `pod` on `port` at `path`;
    /// from now on the relay forwards to that pod and port.
    pub fn endpoint(&self, pod: &str, port: u16, path: &str) -> String {
        if let Ok(mut a) = self.guard.allowed.lock() {
            a.insert((pod.to_owned(), port));
        }
        format!(
            "http://127.0.0.1:{}/{}/{pod}/{port}{path}",
            self.port, self.token
        )
    }
}

pub async fn start(client: kube::Client, namespace: String) -> std::io::Result<Relay> {
    let mut secret = [0u8; 64];
    getrandom::fill(&mut secret).map_err(std::io::Error::other)?;
    let token = hex::encode(&secret[..32]);
    let mut key = [0u8; 32];
    key.copy_from_slice(&secret[32..]);
    let tag = {
        use hmac::Mac as _;
        Guard::mac(&key, token.as_bytes())
            .finalize()
            .into_bytes()
            .to_vec()
    };
    let guard = Arc::new(Guard {
        key,
        tag,
        allowed: Mutex::new(HashSet::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let shared = guard.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let client = client.clone();
            let namespace = namespace.clone();
            let guard = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let client = client.clone();
                    let namespace = namespace.clone();
                    let guard = guard.clone();
                    async move { Ok::<_, Infallible>(forward(&client, &namespace, &guard, req).await) }
                });
                // A probe hanging up mid-stream is routine.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Relay { port, token, guard })
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

/// `/<pod>/<port>/<rest>` → the pod, the port and the pod proxy path, or `None`.
pub fn proxy_path(namespace: &str, path_and_query: &str) -> Option<(String, u16, String)> {
    let rest = path_and_query.strip_prefix('/')?;
    let (pod, rest) = rest.split_once('/')?;
    let (port, rest) = match rest.split_once('/') {
        Some((port, rest)) => (port, format!("/{rest}")),
        None => match rest.split_once('?') {
            Some((port, q)) => (port, format!("/?{q}")),
            None => (rest, "/".to_owned()),
        },
    };
    // A DNS-1123 name: no `..`, nothing that climbs out of the pod path.
    let valid = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    let port = port.parse::<u16>().ok()?;
    if !valid(pod) {
        return None;
    }
    Some((
        pod.to_owned(),
        port,
        format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy{rest}"),
    ))
}

async fn forward(
    client: &kube::Client,
    namespace: &str,
    guard: &Guard,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let (token, rest) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", ""));
    if !guard.token_ok(token) {
        return plain(StatusCode::FORBIDDEN, "forbidden".into());
    }
    let Some((pod, port, target)) = proxy_path(namespace, &format!("/{rest}")) else {
        return plain(StatusCode::NOT_FOUND, "not a pod proxy path".into());
    };
    if !guard.allows(&pod, port) {
        return plain(
            StatusCode::FORBIDDEN,
            format!("{pod}:{port} is not an endpoint this relay handed out"),
        );
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut out = Request::builder().method(parts.method).uri(target);
    for (name, value) in &parts.headers {
        // The API server's host, and the client's own credentials.
        if name != hyper::header::HOST && name != hyper::header::AUTHORIZATION {
            out = out.header(name, value);
        }
    }
    let out = match out.body(kube::client::Body::from(body)) {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match client.send(out).await {
        Ok(resp) => resp.map(|b| b.map_err(Into::into).boxed_unsync()),
        Err(e) => plain(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn relay_paths_name_a_pod_and_port() {
        let target = |p: &str| super::proxy_path("ns", p).map(|(_, _, t)| t);
        assert_eq!(
            target("/mcpctl-a-01x/8080/mcp?x=1").as_deref(),
            Some("/api/v1/namespaces/ns/pods/mcpctl-a-01x:8080/proxy/mcp?x=1")
        );
        assert_eq!(
            super::proxy_path("ns", "/p/80"),
            Some((
                "p".into(),
                80,
                "/api/v1/namespaces/ns/pods/p:80/proxy/".into()
            ))
        );
        assert_eq!(super::proxy_path("ns", "/../80/x"), None);
        assert_eq!(super::proxy_path("ns", "/p/notaport/x"), None);
        assert_eq!(super::proxy_path("ns", "/p"), None);
    }
}
