//! Serving HTTP on threads of its own (`LWA_BROKER_HTTP_THREADS`, default two per core).
//!
//! Each thread runs a current-thread runtime; one acceptor hands the accepted connections to the
//! threads in turn, and a connection then lives on its thread until it closes. On a multi-thread
//! runtime a request's wake-ups cross cores (a worker that gets work wakes an idle one to steal
//! it), which on a small machine costs about as much as the vend itself; here a request wakes
//! only the thread that owns its connection.
//!
//! The threads end last, in [`HttpThreads::finish`]: the database and HTTP client connections a
//! request opened belong to its thread's runtime, and the background tasks' last writes (the
//! audit trail's) may use them.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use tower::ServiceExt;

/// The serving threads, started by [`HttpThreads::start`].
#[derive(Debug)]
pub struct HttpThreads {
    handles: Vec<Handle>,
    releases: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl HttpThreads {
    /// Starts `count` threads (at least one), each with a current-thread runtime that waits for
    /// connections.
    pub fn start(count: usize) -> std::io::Result<HttpThreads> {
        let mut started = HttpThreads {
            handles: Vec::new(),
            releases: Vec::new(),
            threads: Vec::new(),
        };
        for n in 0..count.max(1) {
            let (handle_tx, handle_rx) = std::sync::mpsc::channel();
            let (release_tx, release_rx) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("lwa-http-{n}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = handle_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(runtime.handle().clone()));
                    // Parked here, the runtime runs its connections until released.
                    runtime.block_on(async move {
                        let _ = release_rx.await;
                    });
                })?;
            let handle = handle_rx
                .recv()
                .map_err(|_| std::io::Error::other("a serving thread ended before it started"))??;
            started.handles.push(handle);
            started.releases.push(release_tx);
            started.threads.push(thread);
        }
        Ok(started)
    }

    /// Accepts on `listener` until `shutdown` completes, then lets every open connection finish
    /// its request in flight and returns once all have closed.
    pub async fn serve(
        &self,
        listener: TcpListener,
        app: Router,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        // Dropping `signal_rx` tells the connections to close; each holds a `close_rx` until
        // it has.
        let (signal_tx, signal_rx) = watch::channel(());
        let (close_tx, close_rx) = watch::channel(());
        let mut shutdown = std::pin::pin!(shutdown);
        let mut turn = 0usize;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let (stream, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tokio::select! {
                        () = accept_failed(e) => continue,
                        () = &mut shutdown => break,
                    }
                }
            };
            // An answer whose body streams (the proxy's) goes out in several writes; with
            // Nagle's algorithm on, a write after the first waits for the client's delayed ACK
            // (40 ms on Linux).
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY could not be set on a connection");
            }
            // Handed over as a plain socket: it registers with the runtime of the thread that
            // serves it.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "an accepted connection could not be handed over");
                    continue;
                }
            };
            let handle = &self.handles[turn % self.handles.len()];
            turn = turn.wrapping_add(1);
            let (app, signal_tx, close_rx) = (app.clone(), signal_tx.clone(), close_rx.clone());
            handle.spawn(async move {
                match TcpStream::from_std(stream) {
                    Ok(stream) => connection(stream, remote, app, signal_tx).await,
                    Err(e) => tracing::debug!(error = %e, "an accepted connection was lost"),
                }
                drop(close_rx);
            });
        }
        drop(listener);
        drop(signal_rx);
        drop(close_rx);
        close_tx.closed().await;
        Ok(())
    }

    /// Ends the threads: connections and tasks still on them are dropped.
    pub async fn finish(self) {
        for release in self.releases {
            let _ = release.send(());
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// One connection, HTTP/1.1 with keep-alive, until the client closes it or shutdown asks.
async fn connection(stream: TcpStream, remote: SocketAddr, app: Router, signal_tx: watch::Sender<()>) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(remote));
        app.clone().oneshot(request)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut signalled = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "a connection ended with an error");
                }
                break;
            }
            () = signal_tx.closed(), if !signalled => {
                signalled = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What `axum::serve` does on a failed accept: a client that went away is nothing; anything
/// else (out of file descriptors) is logged and waited out for a second.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; trying again in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
