//! The listener: accepts TCP connections (and, with native TLS, completes the handshake) and
//! serves each with hyper, plain or TLS alike, under three limits that `axum::serve` does not
//! have and that an unauthenticated client could otherwise exploit to lock everyone out
//! (slowloris: many connections that send their headers a byte at a time, or nothing):
//!
//! - a header deadline: a connection must complete its TLS handshake and its first request's
//!   headers within `header_timeout` of being accepted, and every later request's headers
//!   within `header_timeout` of its first byte; a request's body gets the same time again;
//! - an idle deadline: a kept-alive connection with no request in flight is closed after
//!   `idle_timeout`;
//! - a connection cap: at `max_connections`, a connection without a request in flight is
//!   closed to make room for the new one — one still waiting for its first request before a
//!   kept-alive one, the longest-waiting first (a request in flight is never cut short by
//!   another client). When every connection is serving a request, a few more are let in
//!   (headroom for probes, closed first in turn when they wait); beyond those the new one
//!   waits, for at most `header_timeout`. Probes therefore keep answering under a flood of
//!   idle or dribbling connections.
//!
//! The deadlines are enforced by the connection's own task, for HTTP/1.1 and HTTP/2 alike, by
//! watching its reads and its requests: hyper's HTTP/1 header timer would also close idle
//! kept-alive connections at the header timeout, and it does not cover the TLS handshake or
//! the protocol detection that precedes HTTP/2.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{CloseReason, Metrics};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The listener's limits (from `HttpConfig`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// What one connection is doing, for its deadline and for the choice of whom to close at cap.
#[derive(Debug)]
struct Phase {
    /// Requests being served (HTTP/2 multiplexes several).
    in_flight: usize,
    /// Whether a request has been served on this connection.
    served: bool,
    /// When the connection was accepted or its last request ended.
    since: Instant,
    /// The first byte read since then, while no request was in flight: a request's headers
    /// (or a handshake) are on their way.
    reading_since: Option<Instant>,
}

struct Conn {
    id: u64,
    phase: Mutex<Phase>,
    /// Wakes the connection's task when its phase changes.
    changed: Notify,
    /// Cancelled to close the connection at once (the cap made room for a newer one).
    evict: CancellationToken,
}

impl Conn {
    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When this connection must be closed, if nothing changes; `None` while serving.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let p = self.phase();
        if p.in_flight > 0 {
            return None;
        }
        Some(match (p.served, p.reading_since) {
            // The first request: headers (and handshake) within the header timeout of accept.
            (false, _) => p.since + limits.header_timeout,
            (true, Some(first_byte)) => first_byte + limits.header_timeout,
            (true, None) => p.since + limits.idle_timeout,
        })
    }

    fn saw_bytes(&self) {
        let mut p = self.phase();
        if p.in_flight == 0 && p.reading_since.is_none() {
            p.reading_since = Some(Instant::now());
            drop(p);
            self.changed.notify_one();
        }
    }
}

/// Connections admitted beyond the cap while every connection is serving a request, so that a
/// probe (or any short request) still gets in while long requests (SSE streams) hold the cap.
/// They are closed first when they wait without a request, like any other.
const HEADROOM: usize = 16;

/// The open connections, for the cap.
struct Tracker {
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    /// Signalled when a connection closes or stops serving: room may be made.
    room: Notify,
    next_id: AtomicU64,
    /// Connection tasks still running (evicted ones included), for shutdown.
    tasks: AtomicUsize,
    tasks_done: Notify,
    metrics: Arc<Metrics>,
}

impl Tracker {
    fn new(metrics: Arc<Metrics>) -> Tracker {
        Tracker {
            metrics,
            conns: Mutex::new(BTreeMap::new()),
            room: Notify::new(),
            next_id: AtomicU64::new(1),
            tasks: AtomicUsize::new(0),
            tasks_done: Notify::new(),
        }
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection if there is room, closing one without a request in flight
    /// when there is not: one that has not completed a request yet (a slowloris holds only
    /// such) before a kept-alive one, the longest-waiting first. `None`: every connection is
    /// serving a request.
    fn try_admit(&self, max: usize) -> Option<Arc<Conn>> {
        let mut conns = self.conns();
        if conns.len() >= max {
            let open = conns.len();
            drop(conns);
            if self.evict_one() {
                tracing::debug!("connection cap reached: closed the longest-waiting idle one");
            } else if open >= max + HEADROOM {
                return None;
            }
            conns = self.conns();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            phase: Mutex::new(Phase {
                in_flight: 0,
                served: false,
                since: Instant::now(),
                reading_since: None,
            }),
            changed: Notify::new(),
            evict: CancellationToken::new(),
        });
        conns.insert(id, conn.clone());
        self.metrics.connections.set(conns.len() as i64);
        Some(conn)
    }

    /// Waits (at most `wait`) until a connection can be admitted.
    async fn admit(&self, limits: &Limits, stop: &CancellationToken) -> Option<Arc<Conn>> {
        let give_up = Instant::now() + limits.header_timeout;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(c) = self.try_admit(limits.max_connections) {
                return Some(c);
            }
            tokio::select! {
                _ = room => {}
                _ = tokio::time::sleep_until(give_up) => return None,
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// Closes the connection that has waited longest without a request in flight (out of
    /// file descriptors below the cap). Whether there was one.
    fn evict_one(&self) -> bool {
        let mut conns = self.conns();
        let victim = conns
            .values()
            .filter_map(|c| {
                let p = c.phase();
                (p.in_flight == 0).then_some((p.served, p.since, c.id))
            })
            .min()
            .map(|(_, _, id)| id);
        match victim.and_then(|id| conns.remove(&id)) {
            Some(c) => {
                c.evict.cancel();
                self.closed("cap");
                self.metrics.connections.set(conns.len() as i64);
                true
            }
            None => false,
        }
    }

    fn remove(&self, id: u64) {
        let mut conns = self.conns();
        conns.remove(&id);
        self.metrics.connections.set(conns.len() as i64);
        drop(conns);
        self.room.notify_waiters();
    }

    fn closed(&self, reason: &'static str) {
        self.metrics
            .connections_closed
            .get_or_create(&CloseReason { reason })
            .inc();
    }
}

/// Marks a request in flight on its connection until dropped (with the response body).
struct InFlight {
    conn: Arc<Conn>,
    tracker: Arc<Tracker>,
}

impl InFlight {
    fn begin(conn: &Arc<Conn>, tracker: &Arc<Tracker>) -> InFlight {
        {
            let mut p = conn.phase();
            p.in_flight += 1;
            p.served = true;
            p.reading_since = None;
        }
        conn.changed.notify_one();
        InFlight {
            conn: conn.clone(),
            tracker: tracker.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let idle = {
            let mut p = self.conn.phase();
            p.in_flight = p.in_flight.saturating_sub(1);
            if p.in_flight == 0 {
                p.since = Instant::now();
                p.reading_since = None;
            }
            p.in_flight == 0
        };
        self.conn.changed.notify_one();
        if idle {
            self.tracker.room.notify_waiters();
        }
    }
}

/// The socket, watched: bytes arriving while no request is in flight start the header clock.
struct Watched<S> {
    io: S,
    conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.saw_bytes();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A request body that must arrive by a deadline, so that a request whose headers came in time
/// cannot hold its connection (and the cap) by sending its body a byte at a time.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(BoxError::from))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(
                    "the request body did not arrive within the header timeout".into(),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The per-connection hyper service: the router, with the peer address and the in-flight mark.
#[derive(Clone)]
struct ConnService {
    app: Router,
    peer: SocketAddr,
    conn: Arc<Conn>,
    tracker: Arc<Tracker>,
    body_timeout: Duration,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = hyper::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<hyper::Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::begin(&self.conn, &self.tracker);
        let deadline = Box::pin(tokio::time::sleep(self.body_timeout));
        let mut req = req.map(|inner| Body::new(DeadlineBody { inner, deadline }));
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let mut app = self.app.clone();
        Box::pin(async move {
            let response = match tower_service::Service::call(&mut app, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            // The request stays in flight until its response (an SSE stream, say) is sent.
            Ok(response.map(move |body| {
                Body::new(body.map_frame(move |frame| {
                    let _in_flight = &in_flight;
                    frame
                }))
            }))
        })
    }
}

/// File descriptors kept for everything but connections (runs' pipes, audit and state files).
const RESERVED_FDS: u64 = 128;

/// The connection cap, lowered if the process may not open that many descriptors: a cap the
/// descriptor limit reaches first would never make room. The soft limit is raised to the hard
/// one first (terraform gets its own limit, `TERRARIUM_LIMIT_OPEN_FILES`).
fn fit_to_descriptors(max: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return max;
    };
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let fit =
        usize::try_from(soft.saturating_sub(RESERVED_FDS + HEADROOM as u64).max(16)).unwrap_or(max);
    if fit < max {
        tracing::warn!(
            configured = max,
            effective = fit,
            "TERRARIUM_HTTP_MAX_CONNECTIONS is above what the open-files limit allows; lowered"
        );
    }
    max.min(fit)
}

/// Serves `app` on `listener` until `stop` is cancelled, then lets the connections finish
/// (idle ones close at once) and returns when all have closed.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> io::Result<()> {
    let limits = Limits {
        max_connections: fit_to_descriptors(limits.max_connections),
        ..limits
    };
    let tracker = Arc::new(Tracker::new(metrics));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // hyper's own header timer is a backstop only, set past our latest deadline (idle, then
    // a request's headers): it would also cut kept-alive connections, since it starts when
    // hyper waits for the next request.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout + limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors below the cap (other files are open too): make room
                    // as the cap would. Otherwise (a connection reset before accept, say) go on.
                    let out_of_fds =
                        matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
                    if out_of_fds && tracker.evict_one() {
                        // Let the closed connection's task release its descriptor.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    } else {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let Some(conn) = tracker.admit(&limits, &stop).await else {
            // Every connection is serving a request: this one is closed unserved.
            drop(stream);
            continue;
        };
        tracker.tasks.fetch_add(1, Ordering::SeqCst);
        let task = Connection {
            conn,
            tracker: tracker.clone(),
            limits,
            stop: stop.clone(),
        };
        let app = app.clone();
        let tls = tls.clone();
        let builder = builder.clone();
        tokio::spawn(async move { task.run(stream, peer, app, tls, &builder).await });
    }
    // Stopped: wait for the connections to drain.
    loop {
        let done = tracker.tasks_done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if tracker.tasks.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        done.await;
    }
}

/// One connection's task.
struct Connection {
    conn: Arc<Conn>,
    tracker: Arc<Tracker>,
    limits: Limits,
    stop: CancellationToken,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.tracker.remove(self.conn.id);
        self.tracker.tasks.fetch_sub(1, Ordering::SeqCst);
        self.tracker.tasks_done.notify_waiters();
    }
}

impl Connection {
    async fn run(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        app: Router,
        tls: Option<tokio_rustls::TlsAcceptor>,
        builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
    ) {
        let _ = stream.set_nodelay(true);
        let io = Watched {
            io: stream,
            conn: self.conn.clone(),
        };
        let service = ConnService {
            app,
            peer,
            conn: self.conn.clone(),
            tracker: self.tracker.clone(),
            body_timeout: self.limits.header_timeout,
        };
        match tls {
            None => self.serve_io(io, service, builder).await,
            Some(acceptor) => {
                let handshake_deadline = self.conn.phase().since + self.limits.header_timeout;
                let io = tokio::select! {
                    r = acceptor.accept(io) => match r {
                        Ok(io) => io,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    },
                    _ = tokio::time::sleep_until(handshake_deadline) => {
                        self.tracker.closed("header_timeout");
                        return;
                    }
                    _ = self.conn.evict.cancelled() => return,
                    _ = self.stop.cancelled() => return,
                };
                self.serve_io(io, service, builder).await
            }
        }
    }

    async fn serve_io<I>(
        &self,
        io: I,
        service: ConnService,
        builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let serving = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(serving);
        let mut draining = false;
        loop {
            let changed = self.conn.changed.notified();
            let deadline = self.conn.deadline(&self.limits);
            // While serving, look again now and then (a phase change wakes us sooner).
            let wake = deadline.unwrap_or_else(|| Instant::now() + self.limits.idle_timeout);
            tokio::select! {
                r = serving.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = self.conn.evict.cancelled() => return,
                _ = self.stop.cancelled(), if !draining => {
                    serving.as_mut().graceful_shutdown();
                    draining = true;
                }
                _ = changed => {}
                _ = tokio::time::sleep_until(wake) => {
                    if self.conn.deadline(&self.limits).is_some_and(|d| d <= Instant::now()) {
                        let reason = {
                            let p = self.conn.phase();
                            if p.served && p.reading_since.is_none() { "idle_timeout" } else { "header_timeout" }
                        };
                        tracing::debug!(connection = self.conn.id, reason, "closing a connection past its deadline");
                        self.tracker.closed(reason);
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: max,
        }
    }

    #[tokio::test]
    async fn deadlines_follow_the_phase() {
        let tracker = Arc::new(Tracker::new(Arc::new(Metrics::new())));
        let l = limits(4);
        let c = tracker.try_admit(l.max_connections).unwrap();
        let t0 = c.phase().since;
        assert_eq!(c.deadline(&l), Some(t0 + l.header_timeout));
        // Bytes of the first request do not extend the deadline from accept.
        c.saw_bytes();
        assert_eq!(c.deadline(&l), Some(t0 + l.header_timeout));
        let req = InFlight::begin(&c, &tracker);
        assert_eq!(c.deadline(&l), None, "no deadline while serving");
        c.saw_bytes();
        assert_eq!(c.deadline(&l), None, "a body arriving is not a new request");
        drop(req);
        let t1 = c.phase().since;
        assert!(t1 >= t0);
        assert_eq!(c.deadline(&l), Some(t1 + l.idle_timeout));
        c.saw_bytes();
        let first_byte = c.phase().reading_since.unwrap();
        assert_eq!(
            c.deadline(&l),
            Some(first_byte + l.header_timeout),
            "a later request's headers get the header timeout from their first byte"
        );
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_waiting_idle_connection_makes_room() {
        let tracker = Arc::new(Tracker::new(Arc::new(Metrics::new())));
        let a = tracker.try_admit(2).unwrap();
        let b = tracker.try_admit(2).unwrap();
        b.phase().since -= Duration::from_secs(1);
        let busy = InFlight::begin(&a, &tracker);
        let c = tracker.try_admit(2).unwrap();
        assert!(b.evict.is_cancelled(), "b waited longest without a request");
        assert!(!a.evict.is_cancelled(), "a request in flight is never cut");
        let _busy_c = InFlight::begin(&c, &tracker);
        // Every connection serving: a little headroom, for probes.
        let mut extra = Vec::new();
        for _ in 0..HEADROOM {
            let e = tracker.try_admit(2).unwrap();
            extra.push(InFlight::begin(&e, &tracker));
        }
        assert!(
            tracker.try_admit(2).is_none(),
            "all serving, headroom used: wait"
        );
        drop(busy);
        assert!(tracker.try_admit(2).is_some());
        assert!(a.evict.is_cancelled());
    }

    #[tokio::test]
    async fn a_connection_that_never_completed_a_request_goes_before_a_kept_alive_one() {
        let tracker = Arc::new(Tracker::new(Arc::new(Metrics::new())));
        let kept = tracker.try_admit(2).unwrap();
        drop(InFlight::begin(&kept, &tracker));
        kept.phase().since -= Duration::from_secs(30);
        let silent = tracker.try_admit(2).unwrap();
        let _new = tracker.try_admit(2).unwrap();
        assert!(silent.evict.is_cancelled());
        assert!(!kept.evict.is_cancelled());
    }
}
