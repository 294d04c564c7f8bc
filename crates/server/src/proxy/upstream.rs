//! The proxy's HTTP client: hyper's pooled keep-alive client over TCP (rustls for `https`, with
//! the platform's certificate verifier), HTTP/1.1, no proxies, no redirects, no added headers
//! but `accept: */*` when the caller sent none.
//!
//! It is hyper directly rather than reqwest because the proxy is a pipe: the request goes out
//! with a URI built from a prebuilt origin (no URL parsing per call), Amazon's body comes back
//! as the very `Incoming` hyper read (boxed once, not re-wrapped per chunk), and the exchange
//! costs one timer, not two. The whole-exchange timeout covers the answer's head with that
//! timer; the body's share of it arms a timer only if the body has to wait for the network.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, Sleep};

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The proxy's client to Amazon (or the fake).
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    timeout: Duration,
}

/// Why a call got no answer.
#[derive(Debug)]
pub enum UpstreamError {
    /// The connection or the whole exchange took longer than allowed.
    Timeout,
    /// Amazon could not be reached (or broke the connection); the cause, for the log.
    Failed(hyper_util::client::legacy::Error),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Timeout => f.write_str("timed out"),
            UpstreamError::Failed(e) => {
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
        }
    }
}

impl Upstream {
    /// A client with these timeouts (connecting; the whole exchange, body included).
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Upstream {
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
            .expect("the platform's certificate verifier loads");
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .expect("the TLS versions are supported")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        // `http` or `https` (the fake is plain HTTP), ALPN offering HTTP/1.1 only.
        let https = HttpsConnector::from((http, tls));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(https);
        Upstream { client, timeout }
    }

    /// Sends a request and waits for the answer's head; the body then streams within what is
    /// left of the timeout.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<UpstreamBody>, UpstreamError> {
        let deadline = Instant::now() + self.timeout;
        match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Err(e)) if timed_out(&e) => Err(UpstreamError::Timeout),
            Ok(Err(e)) => Err(UpstreamError::Failed(e)),
            Ok(Ok(response)) => Ok(response.map(|inner| UpstreamBody {
                inner,
                deadline,
                sleep: None,
            })),
        }
    }
}

/// Whether the cause is a timeout (the connect timeout among them).
fn timed_out(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Amazon's answer body, failing once the exchange's deadline passes. The timer is armed only
/// when the body has to wait (a small answer read with its head never arms one).
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl UpstreamBody {
    /// As an axum body (boxed once).
    pub fn into_body(self) -> Body {
        Body::new(self)
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(std::io::Error::other)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "Amazon's answer did not finish in time",
        ))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `accept` reqwest (the proxy's earlier client) sent when the caller named none; kept so
/// Amazon sees the same request.
pub const DEFAULT_ACCEPT: HeaderValue = HeaderValue::from_static("*/*");
