//! The loopback relay to the API server's pod proxy: a request for
//! `/<pod>/<port>/<path>` goes to
//! `/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/<path>` through the
//! kube client, which adds the cluster URL and credentials. Responses
//! stream back as they come, so SSE works.

use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub async fn start(client: kube::Client, namespace: String) -> std::io::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let client = client.clone();
            let namespace = namespace.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let client = client.clone();
                    let namespace = namespace.clone();
                    async move { Ok::<_, Infallible>(forward(&client, &namespace, req).await) }
                });
                // A probe hanging up mid-stream is routine.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(port)
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

/// `/<pod>/<port>/<rest>` → the pod proxy path, or `None`.
pub fn proxy_path(namespace: &str, path_and_query: &str) -> Option<String> {
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
    if !valid(pod) || port.parse::<u16>().is_err() {
        return None;
    }
    Some(format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy{rest}"
    ))
}

async fn forward(client: &kube::Client, namespace: &str, req: Request<Incoming>) -> Response<Body> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .and_then(|p| proxy_path(namespace, p));
    let Some(target) = target else {
        return plain(StatusCode::NOT_FOUND, "not a pod proxy path".into());
    };
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
        assert_eq!(
            super::proxy_path("ns", "/mcpctl-a-01x/8080/mcp?x=1").as_deref(),
            Some("/api/v1/namespaces/ns/pods/mcpctl-a-01x:8080/proxy/mcp?x=1")
        );
        assert_eq!(
            super::proxy_path("ns", "/p/80").as_deref(),
            Some("/api/v1/namespaces/ns/pods/p:80/proxy/")
        );
        assert_eq!(super::proxy_path("ns", "/../80/x"), None);
        assert_eq!(super::proxy_path("ns", "/p/notaport/x"), None);
        assert_eq!(super::proxy_path("ns", "/p"), None);
    }
}
