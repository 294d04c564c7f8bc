//! The accept loop and the top-level dispatch: control API, or an Amazon host named by the first
//! path segment.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::hosts::{self, HostKind};
use crate::http::{ConnKill, Ctx, FaultMarker, response, set_header};
use crate::model::RecordedRequest;
use crate::state::{ApiKey, Shared};
use crate::{ads, consent, control, ids, lwa, sp_api};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 1024 * 1024;
/// An oversized body is read and discarded up to this size before the 413, so that the client
/// sees the answer instead of a reset connection.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// Reads a body of at most [`MAX_BODY`] bytes; `None` when it is larger (or broken).
async fn read_body(body: Body) -> Option<axum::body::Bytes> {
    use futures::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        total = total.saturating_add(chunk.len());
        if total <= MAX_BODY {
            buf.extend_from_slice(&chunk);
        } else if total > DRAIN_LIMIT {
            return None;
        }
    }
    (total <= MAX_BODY).then(|| buf.into())
}

/// Accepts connections until the task is aborted; aborting it drops every open connection.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves one connection; a drop fault fires `kill`, which drops the connection future and
/// with it the socket, without a response.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let kill = Arc::new(Notify::new());
    let conn_kill = ConnKill(kill.clone());
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let shared = shared.clone();
        req.extensions_mut().insert(conn_kill.clone());
        async move { Ok::<_, Infallible>(handle(shared, req.map(Body::new)).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        _ = kill.notified() => {}
    }
}

fn not_found_host(host: &str) -> Response {
    response(
        StatusCode::NOT_FOUND,
        "text/plain;charset=UTF-8",
        format!("fake-amazon: no Amazon host named {host:?} is served here\n"),
    )
}

/// Answers one request.
pub async fn handle(shared: Arc<Shared>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let full_path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();

    if full_path == "/__fake" || full_path.starts_with("/__fake/") {
        let Some(bytes) = read_body(body).await else {
            return response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "application/json",
                r#"{"error":"body too large"}"#,
            );
        };
        let host = parts
            .headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok());
        return control::handle(
            &shared,
            &control::Request {
                method: &parts.method,
                path: &full_path,
                query: &query,
                host,
                body: &bytes,
            },
        );
    }

    let trimmed = full_path.trim_start_matches('/');
    let (host, rest) = match trimmed.split_once('/') {
        Some((h, r)) => (h, format!("/{r}")),
        None => (trimmed, "/".to_owned()),
    };
    let host = crate::sandbox::percent_decode(host).to_ascii_lowercase();
    let newer = shared.inner.lock().settings.quirks.newer_seller_central_hosts;
    let Some(kind) = hosts::lookup(&host, newer) else {
        return not_found_host(&host);
    };
    let request_id = ids::uuid();
    let kill = parts.extensions.get::<ConnKill>().cloned();
    let body = match read_body(body).await {
        Some(b) => b,
        None => {
            let mut resp = response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "application/json",
                r#"{"errors":[{"code":"RequestEntityTooLarge","message":"The request size exceeded the maximum accepted size."}]}"#,
            );
            set_header(&mut resp, "x-amzn-RequestId", &request_id);
            return resp;
        }
    };

    let now = shared.now();
    {
        let mut headers = BTreeMap::new();
        for (name, value) in &parts.headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v: &mut String| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        shared.inner.lock().record_request(RecordedRequest {
            seq: 0,
            at_ms: now,
            method: parts.method.to_string(),
            host: host.clone(),
            path: rest.clone(),
            query: query.clone(),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }

    let ctx = Ctx {
        shared: shared.clone(),
        host: host.clone(),
        kind,
        method: parts.method.clone(),
        path: rest.clone(),
        query,
        headers: parts.headers,
        body,
        kill,
        request_id: request_id.clone(),
    };
    let mut resp = match kind {
        HostKind::Lwa(_) => return lwa::handle(ctx).await,
        HostKind::Central { .. } | HostKind::AdsConsent(_) => consent::handle(ctx).await,
        HostKind::SpApi(_) | HostKind::SpApiSandbox(_) => sp_api::handle(ctx).await,
        HostKind::Ads(_) => ads::handle(ctx).await,
    };
    if matches!(
        kind,
        HostKind::SpApi(_) | HostKind::SpApiSandbox(_) | HostKind::Ads(_)
    ) && !resp.headers().contains_key("x-amzn-requestid")
    {
        set_header(&mut resp, "x-amzn-RequestId", &request_id);
    }
    shared.inner.lock().count_api(ApiKey {
        host,
        method: parts.method.to_string(),
        path: rest,
        status: resp.status().as_u16(),
        fault: resp.extensions().get::<FaultMarker>().is_some(),
    });
    resp
}
