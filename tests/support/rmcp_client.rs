//! Test support: rmcp's own MCP client (the official Rust SDK) over
//! streamable HTTP, for the tests that want a real client of each era.
//! rmcp's client transport is generic over its HTTP stack; its stock one is
//! reqwest, which would bring reqwest and new features of tokio, hyper-util
//! and tower into the test build (a rebuild of most of the tree). This
//! module gives it the hyper client the crate already builds instead: the
//! protocol (handshake or discovery, sessions, headers, SSE) stays rmcp's.
//! Include it with `#[path = "support/rmcp_client.rs"] mod rmcp_client;`.
#![allow(dead_code)] // Each including test binary uses a different subset.

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_client::{
    HttpStatusError, SseError, StreamableHttpClient, StreamableHttpError,
    StreamableHttpPostResponse,
};
use sse_stream::{Sse, SseStream};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

const SESSION: &str = "mcp-session-id";
const LAST_EVENT: &str = "last-event-id";

/// A hyper client (HTTP/1.1, plain TCP) that rmcp's streamable-HTTP
/// transport can drive.
#[derive(Clone)]
pub struct HyperHttp {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HyperHttp {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        HyperHttp {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HyperHttpError {
    #[error("request failed: {0}")]
    Client(#[from] hyper_util::client::legacy::Error),
    #[error("bad request: {0}")]
    Http(#[from] hyper::http::Error),
    #[error("body: {0}")]
    Body(#[from] hyper::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

type Failed = StreamableHttpError<HyperHttpError>;

impl HyperHttp {
    // The parts of one request as rmcp's client trait hands them over, one
    // argument each, as its own methods take them.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        method: Method,
        uri: &str,
        session: Option<&str>,
        auth: Option<String>,
        headers: HashMap<HeaderName, HeaderValue>,
        extra: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response<Incoming>, Failed> {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        if let Some(session) = session {
            request = request.header(SESSION, session);
        }
        if let Some(token) = auth {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| StreamableHttpError::Client(e.into()))?;
        self.client
            .request(request)
            .await
            .map_err(|e| StreamableHttpError::Client(e.into()))
    }
}

fn content_type(response: &Response<Incoming>) -> Option<String> {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn events(body: Incoming) -> BoxStream<'static, Result<Sse, SseError>> {
    SseStream::new(body).boxed()
}

async fn read(body: Incoming) -> Result<Bytes, Failed> {
    body.collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| StreamableHttpError::Client(e.into()))
}

impl StreamableHttpClient for HyperHttp {
    type Error = HyperHttpError;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, Failed> {
        let body =
            serde_json::to_vec(&message).map_err(|e| StreamableHttpError::Client(e.into()))?;
        let response = self
            .send(
                Method::POST,
                &uri,
                session_id.as_deref(),
                auth_header,
                custom_headers,
                &[
                    ("content-type", "application/json"),
                    ("accept", "application/json, text/event-stream"),
                ],
                Bytes::from(body),
            )
            .await?;
        let status = response.status();
        if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == StatusCode::NOT_FOUND && session_id.is_some() {
            return Err(StreamableHttpError::SessionExpired);
        }
        let session = response
            .headers()
            .get(SESSION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let kind = content_type(&response).unwrap_or_default();
        if !status.is_success() {
            // A JSON-RPC error in the body (the gateway's 502 and 503, a
            // server's refusal) is the answer rmcp hands to the caller.
            let body = read(response.into_body()).await?;
            if let Ok(error @ ServerJsonRpcMessage::Error(_)) = serde_json::from_slice(&body) {
                return Ok(StreamableHttpPostResponse::Json(error, session));
            }
            return Err(StreamableHttpError::HttpStatus(HttpStatusError::new(
                status.as_u16(),
                None,
            )));
        }
        if kind.starts_with("text/event-stream") {
            return Ok(StreamableHttpPostResponse::Sse(
                events(response.into_body()),
                session,
            ));
        }
        let body = read(response.into_body()).await?;
        let awaits_nothing = !matches!(message, ClientJsonRpcMessage::Request(_));
        if awaits_nothing && body.is_empty() {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        match serde_json::from_slice(&body) {
            Ok(answer) => Ok(StreamableHttpPostResponse::Json(answer, session)),
            Err(e) => Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                format!("HTTP {status} ({kind}): {e}"),
            ))),
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), Failed> {
        let response = self
            .send(
                Method::DELETE,
                &uri,
                Some(&session_id),
                auth_header,
                custom_headers,
                &[],
                Bytes::new(),
            )
            .await?;
        let status = response.status();
        let _ = read(response.into_body()).await;
        if status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED {
            Ok(())
        } else {
            Err(StreamableHttpError::HttpStatus(HttpStatusError::new(
                status.as_u16(),
                None,
            )))
        }
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Failed> {
        let mut extra = vec![(ACCEPT.as_str(), "text/event-stream")];
        if let Some(id) = last_event_id.as_deref() {
            extra.push((LAST_EVENT, id));
        }
        let response = self
            .send(
                Method::GET,
                &uri,
                session_id.as_deref(),
                auth_header,
                custom_headers,
                &extra,
                Bytes::new(),
            )
            .await?;
        let status = response.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        if status == StatusCode::NOT_FOUND && session_id.is_some() {
            return Err(StreamableHttpError::SessionExpired);
        }
        if !status.is_success() {
            return Err(StreamableHttpError::HttpStatus(HttpStatusError::new(
                status.as_u16(),
                None,
            )));
        }
        let kind = content_type(&response);
        if !kind
            .as_deref()
            .is_some_and(|k| k.starts_with("text/event-stream"))
        {
            return Err(StreamableHttpError::UnexpectedContentType(kind));
        }
        Ok(events(response.into_body()))
    }
}
