//! The HTTP server of the API: the axum router on hyper HTTP/1.1 connections, with the limits
//! a server that faces the internet needs (`axum::serve` has none of them):
//!
//! - at most [`HttpConfig::max_connections`] connections; at the limit a new connection closes
//!   the connection that has been idle longest (no request in flight: a keep-alive client, or
//!   one that never finished its headers), so idle and slow clients cannot lock others out;
//!   when every connection is busy the new one is closed. When the process runs out of file
//!   descriptors, an idle connection is closed the same way, and accepting goes on.
//! - a header-read timeout ([`HttpConfig::header_read_timeout`]), which also closes keep-alive
//!   connections idle that long;
//! - a request timeout ([`HttpConfig::request_timeout`], 408 `request_timeout`);
//! - a graceful shutdown that stops accepting, lets requests in flight finish for
//!   [`HttpConfig::shutdown_grace`], then closes what is left.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::api::ApiError;
use crate::config::HttpConfig;

/// How long the accept loop pauses after an accept error (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// Serves `app` on `listener` until `shutdown` completes, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: HttpConfig,
    shutdown: impl Future<Output = ()>,
) {
    let started = Instant::now();
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut accept_errors = 0u64;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                accept_errors += 1;
                let out_of_descriptors = matches!(error.raw_os_error(), Some(23 | 24));
                if out_of_descriptors {
                    registry.evict_idlest();
                }
                if accept_errors.is_power_of_two() {
                    tracing::warn!(%error, errors = accept_errors, "HTTP accept failed");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if registry.len() >= config.max_connections && !registry.evict_idlest() {
            tracing::warn!(%peer, limit = config.max_connections,
                "HTTP connection refused: every connection is busy");
            drop(stream);
            continue;
        }
        let slot = registry.open(started);
        let connection = Connection {
            app: app.clone(),
            config: config.clone(),
            slot,
            registry: Arc::clone(&registry),
            started,
            stop: stop_rx.clone(),
        };
        tasks.spawn(connection.run(stream, peer));
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let open = registry.len();
    if open > 0 {
        tracing::info!(open, grace = ?config.shutdown_grace(), "HTTP: finishing open connections");
    }
    let drained = tokio::time::timeout(config.shutdown_grace(), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "HTTP: connections still open after the shutdown grace period are closed"
        );
        tasks.shutdown().await;
    }
}

/// The open connections, for the limit and for evicting the idlest.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Slot>>>,
}

/// What the registry knows of one connection.
struct Slot {
    id: u64,
    /// Requests in flight on it.
    busy: AtomicUsize,
    /// Milliseconds after the server started when it was last active.
    last_active_ms: AtomicU64,
    /// Notified to close it at once.
    close: Notify,
}

impl Slot {
    fn touch(&self, started: Instant) {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }
}

impl Registry {
    fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn open(&self, started: Instant) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            busy: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            close: Notify::new(),
        });
        slot.touch(started);
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(slot.id, Arc::clone(&slot));
        slot
    }

    fn close(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// Closes the connection idle longest (none in flight); false when all are busy.
    fn evict_idlest(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let idlest = open
            .values()
            .filter(|slot| slot.busy.load(Ordering::Relaxed) == 0)
            .min_by_key(|slot| slot.last_active_ms.load(Ordering::Relaxed))
            .map(|slot| slot.id);
        let Some(id) = idlest else {
            return false;
        };
        if let Some(slot) = open.remove(&id) {
            // `notify_one` keeps the permit if the task is not waiting yet.
            slot.close.notify_one();
        }
        true
    }
}

/// One client connection and what it needs to serve it.
struct Connection {
    app: Router,
    config: HttpConfig,
    slot: Arc<Slot>,
    registry: Arc<Registry>,
    started: Instant,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, peer: SocketAddr) {
        let slot = Arc::clone(&self.slot);
        let app = self.app.clone();
        let request_timeout = self.config.request_timeout();
        let started = self.started;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_flight = InFlight::start(Arc::clone(&slot), started);
            let app = app.clone();
            async move {
                let response =
                    tokio::time::timeout(request_timeout, app.oneshot(request.map(Body::new)))
                        .await;
                let response = match response {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => ApiError::RequestTimeout {
                        limit: request_timeout,
                    }
                    .into_response(),
                };
                // Busy until the body is sent: a download in progress is not idle.
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    _in_flight: in_flight,
                }))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_read_timeout())
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut stopping = *self.stop.borrow();
        if stopping {
            connection.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "HTTP connection ended with an error");
                    }
                    break;
                }
                () = self.slot.close.notified() => {
                    tracing::debug!(%peer, "idle HTTP connection closed to make room");
                    break;
                }
                changed = self.stop.changed(), if !stopping => {
                    stopping = true;
                    if changed.is_ok() {
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
        self.registry.close(self.slot.id);
    }
}

/// Marks a request in flight on its connection for as long as it lives.
struct InFlight {
    slot: Arc<Slot>,
    started: Instant,
}

impl InFlight {
    fn start(slot: Arc<Slot>, started: Instant) -> InFlight {
        slot.busy.fetch_add(1, Ordering::Relaxed);
        slot.touch(started);
        InFlight { slot, started }
    }
}

/// A response body that keeps its request in flight until it is sent (or dropped).
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.slot.touch(self.started);
        self.slot.busy.fetch_sub(1, Ordering::Relaxed);
    }
}
