//! The HTTP server loop: a connection cap, per-connection header, body and idle timeouts,
//! and a shutdown bounded by a grace period (the bounds are in `docs/decisions.md`).
//!
//! hyper's own header timeout also runs while a keep-alive connection waits for its next
//! request, so it cannot be short against slow clients and long for load balancers at
//! once. Each connection here keeps its own phase (waiting for a head, busy, idle), and a
//! watchdog closes it when that phase's deadline passes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use http::{Request, StatusCode, Version};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::settings_source::{Fields, Key, SettingError, SettingsErrors, Source};

/// Limits on clients and on shutdown (`GRAPHAGENT_*`; see the README's configuration table).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Time a client has to send a whole request head, counted from the connection's
    /// start or from the first byte of a later request (`GRAPHAGENT_HEADER_READ_TIMEOUT_SECS`,
    /// default 10 s). The connection is closed without an answer when it passes.
    pub header_read_timeout: Duration,
    /// Time a client has to send a whole request body, counted from the end of its head
    /// (`GRAPHAGENT_BODY_TIMEOUT_SECS`, default 30 s). Answered 408 when it passes.
    pub body_timeout: Duration,
    /// How long a keep-alive connection may sit with no request before it is closed
    /// (`GRAPHAGENT_IDLE_TIMEOUT_SECS`, default 75 s; longer than a load balancer's own).
    pub idle_timeout: Duration,
    /// Connections served at once (`GRAPHAGENT_MAX_CONNECTIONS`, default 512). At the cap
    /// the connection idle longest is closed to make room for a new one; with none idle,
    /// new connections wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// After a shutdown request, how long in-flight requests and webhook attempts may take
    /// to finish before their connections are closed (`GRAPHAGENT_SHUTDOWN_GRACE_SECS`,
    /// default 20 s; 0 closes them at once).
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// The longest any of the durations may be: a day is already far past any sane value,
/// and a bound keeps deadline arithmetic clear of overflow.
const MAX_DURATION: Duration = Duration::from_secs(86_400);

impl ServerSettings {
    /// The settings these are read from.
    pub const KEYS: &'static [Key] = &[
        Key::plain("header_read_timeout_secs"),
        Key::plain("body_timeout_secs"),
        Key::plain("idle_timeout_secs"),
        Key::plain("max_connections"),
        Key::plain("shutdown_grace_secs"),
    ];

    /// Settings from `source` over the defaults, checked; every problem, not just the
    /// first.
    pub fn from_source(source: &Source) -> Result<Self, SettingsErrors> {
        let mut f = Fields::new(source, Self::KEYS);
        let d = Self::default();
        let mut secs = |key: &str, default: Duration| {
            f.whole(key, "seconds").map_or(default, Duration::from_secs)
        };
        let s = Self {
            header_read_timeout: secs("header_read_timeout_secs", d.header_read_timeout),
            body_timeout: secs("body_timeout_secs", d.body_timeout),
            idle_timeout: secs("idle_timeout_secs", d.idle_timeout),
            shutdown_grace: secs("shutdown_grace_secs", d.shutdown_grace),
            max_connections: f
                .whole("max_connections", "connections")
                .unwrap_or(d.max_connections),
        };
        f.checked(s, |s| s.validate(source))
    }

    /// Range checks; every problem, not just the first, named as `source` has them.
    pub fn validate(&self, source: &Source) -> Vec<SettingError> {
        let mut problems = Vec::new();
        let max = MAX_DURATION.as_secs();
        for (key, value) in [
            ("header_read_timeout_secs", self.header_read_timeout),
            ("body_timeout_secs", self.body_timeout),
            ("idle_timeout_secs", self.idle_timeout),
        ] {
            // Zero, not "under a second": code (tests) may set sub-second timeouts.
            if value.is_zero() || value > MAX_DURATION {
                problems.push(source.error(
                    key,
                    format!("expected 1 to {max} seconds, got {}", value.as_secs()),
                ));
            }
        }
        if self.shutdown_grace > MAX_DURATION {
            problems.push(source.error(
                "shutdown_grace_secs",
                format!(
                    "expected 0 to {max} seconds, got {}",
                    self.shutdown_grace.as_secs()
                ),
            ));
        }
        if self.max_connections == 0 {
            problems.push(source.error("max_connections", "expected at least 1, got 0"));
        }
        problems
    }
}

/// Serve `router` on `listener` until `stop` is cancelled; then stop accepting, let open
/// connections finish what they are doing for up to the grace period, and close the rest.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &ServerSettings,
    stop: CancellationToken,
) {
    let limits = Arc::new(settings.clone());
    // Ends HTTP/2 streams, which hyper runs as tasks of their own, with their connection.
    let streams_stop = CancellationToken::new();
    let mut open = Open::default();
    // Under a flood the cap is hit again each time a slot frees: say so once a minute.
    let mut warned_at: Option<Instant> = None;
    'serve: loop {
        open.reap();
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            true = open.next_closed(), if !open.is_empty() => continue,
            () = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(connection) => connection,
            Err(e) => {
                accept_failed(e, &stop).await;
                continue;
            }
        };
        // At the cap, make room for the connection just taken, or let it wait for a
        // slot; either way no other is accepted meanwhile (the rest wait in the backlog).
        if open.len() >= limits.max_connections
            && !open.evict_idlest()
            && warned_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(
                limit = limits.max_connections,
                "connection limit reached with no idle connection to close; new \
                 connections wait until one closes"
            );
            warned_at = Some(Instant::now());
        }
        while open.len() >= limits.max_connections {
            tokio::select! {
                _ = open.next_closed() => {}
                () = stop.cancelled() => break 'serve,
            }
        }
        let phase = Arc::new(Phases::new());
        let task = connection(
            stream,
            peer,
            router.clone(),
            phase.clone(),
            limits.clone(),
            stop.clone(),
            streams_stop.clone(),
        );
        open.spawn(phase, task);
    }
    // Refuse new connections from here on.
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while open.next_closed().await {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = open.len(),
            grace = ?limits.shutdown_grace,
            "shutdown grace period over; closing the remaining connections"
        );
        open.tasks.abort_all();
        while open.next_closed().await {}
    }
    streams_stop.cancel();
}

/// The open connections: their tasks, and their phases by task, to find an idle one.
#[derive(Default)]
struct Open {
    tasks: JoinSet<()>,
    phases: HashMap<tokio::task::Id, Arc<Phases>>,
}

impl Open {
    fn len(&self) -> usize {
        self.tasks.len()
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    fn spawn(&mut self, phase: Arc<Phases>, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.tasks.spawn(task);
        self.phases.insert(handle.id(), phase);
    }

    /// Forget the connections that have ended.
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.ended(done);
        }
    }

    /// Wait for a connection to end; false when none is open.
    async fn next_closed(&mut self) -> bool {
        match self.tasks.join_next_with_id().await {
            Some(done) => {
                self.ended(done);
                true
            }
            None => false,
        }
    }

    fn ended(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => {
                if e.is_panic() {
                    tracing::error!("a connection task panicked");
                }
                e.id()
            }
        };
        self.phases.remove(&id);
    }

    /// Close the connection that has been idle longest, as nginx does at its limit: a
    /// kept-alive connection costs its client only a reconnect, while a new client would
    /// otherwise wait up to the idle timeout. False when none is idle.
    fn evict_idlest(&self) -> bool {
        let idlest = self
            .phases
            .values()
            .filter_map(|p| p.idle_since().map(|since| (since, p)))
            .min_by_key(|(since, _)| *since);
        idlest.is_some_and(|(_, p)| p.evict_if_idle())
    }
}

/// What the listener's `accept` error means: the peer gave up (nothing to do), or the
/// process is out of something (descriptors, memory), when retrying at once would spin.
async fn accept_failed(e: std::io::Error, stop: &CancellationToken) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
        () = stop.cancelled() => {}
    }
}

/// Serve one connection until it ends, its watchdog closes it, or shutdown: on `stop` it
/// is asked to finish gracefully (the serve loop aborts it when the grace period ends).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    phase: Arc<Phases>,
    limits: Arc<ServerSettings>,
    stop: CancellationToken,
    streams_stop: CancellationToken,
) {
    let io = TokioIo::new(Watched {
        inner: stream,
        phase: phase.clone(),
    });
    let service = ConnService {
        router,
        peer,
        phase: phase.clone(),
        body_timeout: limits.body_timeout,
    };
    let builder = Builder::new(StreamExecutor(streams_stop));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            why = phase.expired(limits.header_read_timeout, limits.idle_timeout) => {
                tracing::debug!(%peer, reason = why.as_str(), "closing connection");
                return;
            }
            () = stop.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request head since this instant.
    Head(Instant),
    /// This many requests in flight (HTTP/2 may have several): no deadline.
    Busy(usize),
    /// No request in flight since this instant.
    Idle(Instant),
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Head,
    Idle,
    Evicted,
}

impl Expiry {
    fn as_str(self) -> &'static str {
        match self {
            Self::Head => "request head not received within the header read timeout",
            Self::Idle => "idle for longer than the idle timeout",
            Self::Evicted => "idle, closed to make room at the connection limit",
        }
    }
}

/// One connection's phase, moved on by its IO and its requests, watched by
/// [`expired`](Self::expired).
struct Phases {
    state: Mutex<PhaseState>,
    changed: Notify,
}

struct PhaseState {
    phase: Phase,
    /// HTTP/2 reads between requests are frames (pings, window updates), not request
    /// heads, so they do not start the header clock.
    http2: bool,
    /// Picked to be closed to make room for a new connection.
    evicted: bool,
}

impl Phases {
    fn new() -> Self {
        Self {
            state: Mutex::new(PhaseState {
                phase: Phase::Head(Instant::now()),
                http2: false,
                evicted: false,
            }),
            changed: Notify::new(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut PhaseState) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    /// Bytes arrived: on an idle HTTP/1 connection they begin the next request head.
    fn bytes_read(&self) {
        let started = self.with(|s| match s.phase {
            Phase::Idle(_) if !s.http2 => {
                s.phase = Phase::Head(Instant::now());
                true
            }
            _ => false,
        });
        if started {
            self.changed.notify_one();
        }
    }

    fn request_started(&self, version: Version) {
        self.with(|s| {
            s.http2 |= version == Version::HTTP_2;
            s.phase = match s.phase {
                Phase::Busy(n) => Phase::Busy(n.saturating_add(1)),
                Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
            };
        });
    }

    fn request_finished(&self) {
        let idle = self.with(|s| match s.phase {
            Phase::Busy(n) if n > 1 => {
                s.phase = Phase::Busy(n - 1);
                false
            }
            _ => {
                s.phase = Phase::Idle(Instant::now());
                true
            }
        });
        if idle {
            self.changed.notify_one();
        }
    }

    /// Since when the connection has been idle, unless it is busy, waiting for a head, or
    /// already evicted.
    fn idle_since(&self) -> Option<Instant> {
        self.with(|s| match s.phase {
            Phase::Idle(since) if !s.evicted => Some(since),
            _ => None,
        })
    }

    /// Have the watchdog close the connection, if it is still idle.
    fn evict_if_idle(&self) -> bool {
        let evicted = self.with(|s| {
            s.evicted |= matches!(s.phase, Phase::Idle(_));
            s.evicted
        });
        if evicted {
            self.changed.notify_one();
        }
        evicted
    }

    /// Resolves when the connection has waited for a request head longer than `header`,
    /// sat idle longer than `idle`, or was evicted.
    async fn expired(&self, header: Duration, idle: Duration) -> Expiry {
        loop {
            // Created before the phase is read: a change in between stores a permit, so
            // it is not missed.
            let changed = self.changed.notified();
            let (phase, evicted) = self.with(|s| (s.phase, s.evicted));
            if evicted {
                return Expiry::Evicted;
            }
            let due = match phase {
                Phase::Head(since) => since.checked_add(header).map(|at| (at, Expiry::Head)),
                Phase::Idle(since) => since.checked_add(idle).map(|at| (at, Expiry::Idle)),
                Phase::Busy(_) => None,
            };
            match due {
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// The socket, reporting to the connection's phase when bytes arrive.
struct Watched {
    inner: TcpStream,
    phase: Arc<Phases>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.phase.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Runs HTTP/2 streams as tasks that end when the server's last connections are closed.
#[derive(Clone)]
struct StreamExecutor(CancellationToken);

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let stop = self.0.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stream => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// The router as one connection's hyper service: adds the peer address
/// (`ConnectInfo<SocketAddr>`), times the request body, and keeps the connection busy
/// until the response has been sent.
struct ConnService {
    router: Router,
    peer: SocketAddr,
    phase: Arc<Phases>,
    body_timeout: Duration,
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.phase.request_started(request.version());
        let in_flight = InFlight(self.phase.clone());
        let timed_out = Arc::new(AtomicBool::new(false));
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let body = TimedBody {
            inner: body,
            deadline: Instant::now().checked_add(self.body_timeout),
            sleep: None,
            timed_out: timed_out.clone(),
        };
        let request = Request::from_parts(parts, Body::new(body));
        let router = self.router.clone();
        let timeout = self.body_timeout;
        Box::pin(async move {
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            // Whatever the handler made of the failed body read, the cause is the timeout.
            let response = if timed_out.load(Ordering::Acquire) {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!("the request body did not arrive within {timeout:?}"),
                )
                .into_response()
            } else {
                response
            };
            Ok(response.map(|inner| ResponseBody {
                inner,
                _in_flight: in_flight,
            }))
        })
    }
}

/// Marks a request finished when dropped: with its response body once that is sent, or
/// with the handler's future when the connection goes first.
struct InFlight(Arc<Phases>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that keeps its request in flight until hyper is done with it.
struct ResponseBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("request body timed out")]
struct BodyTimedOut;

/// A request body that fails with [`BodyTimedOut`] once its deadline passes with data
/// still missing. The timer is only created when a read would wait, so bodies that came
/// with their head cost nothing.
struct TimedBody {
    inner: Incoming,
    deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some(deadline) = this.deadline else {
            return Poll::Pending;
        };
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.timed_out.store(true, Ordering::Release);
                Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(errors: &[SettingError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert!(
            ServerSettings::default()
                .validate(&Source::new())
                .is_empty()
        );
    }

    #[test]
    fn values_are_read_and_bad_ones_named() {
        let mut source = Source::new();
        source.set_env("header_read_timeout_secs", "5");
        source.set_env("idle_timeout_secs", " 620 ");
        source.set_env("shutdown_grace_secs", "0");
        source.set_env("body_timeout_secs", "");
        let s = ServerSettings::from_source(&source).expect("valid");
        assert_eq!(s.header_read_timeout, Duration::from_secs(5));
        assert_eq!(s.idle_timeout, Duration::from_secs(620));
        assert_eq!(s.shutdown_grace, Duration::ZERO);
        // Unset and empty keep the defaults.
        assert_eq!(s.body_timeout, Duration::from_secs(30));
        assert_eq!(s.max_connections, 512);

        source.set_env("max_connections", "lots");
        let errors = ServerSettings::from_source(&source).expect_err("refused");
        assert_eq!(
            shown(&errors.0),
            ["GRAPHAGENT_MAX_CONNECTIONS: expected a whole number of connections, got `lots`"]
        );
    }

    #[test]
    fn out_of_range_values_are_each_reported() {
        let s = ServerSettings {
            header_read_timeout: Duration::ZERO,
            body_timeout: Duration::from_secs(86_401),
            idle_timeout: Duration::from_millis(1),
            max_connections: 0,
            shutdown_grace: Duration::from_secs(86_401),
        };
        assert_eq!(
            shown(&s.validate(&Source::new())),
            [
                "GRAPHAGENT_HEADER_READ_TIMEOUT_SECS: expected 1 to 86400 seconds, got 0",
                "GRAPHAGENT_BODY_TIMEOUT_SECS: expected 1 to 86400 seconds, got 86401",
                "GRAPHAGENT_SHUTDOWN_GRACE_SECS: expected 0 to 86400 seconds, got 86401",
                "GRAPHAGENT_MAX_CONNECTIONS: expected at least 1, got 0",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn phases_expire_on_their_own_clocks() {
        let header = Duration::from_secs(10);
        let idle = Duration::from_secs(75);
        let p = Phases::new();
        let start = Instant::now();
        // A new connection must send its head within the header timeout.
        assert_eq!(p.expired(header, idle).await, Expiry::Head);
        assert_eq!(start.elapsed(), header);

        // Busy: no deadline, however long; idle after the response, on the idle clock.
        let p = Arc::new(Phases::new());
        p.request_started(Version::HTTP_11);
        let watch = tokio::spawn({
            let p = p.clone();
            async move { p.expired(header, idle).await }
        });
        tokio::time::sleep(Duration::from_secs(1000)).await;
        assert!(!watch.is_finished());
        let finished = Instant::now();
        p.request_finished();
        assert_eq!(watch.await.ok(), Some(Expiry::Idle));
        assert_eq!(finished.elapsed(), idle);

        // A byte on an idle HTTP/1 connection starts the header clock.
        let p = Phases::new();
        p.request_started(Version::HTTP_11);
        p.request_finished();
        tokio::time::sleep(Duration::from_secs(30)).await;
        let first_byte = Instant::now();
        p.bytes_read();
        assert_eq!(p.expired(header, idle).await, Expiry::Head);
        assert_eq!(first_byte.elapsed(), header);

        // On HTTP/2, frames between requests do not.
        let p = Phases::new();
        p.request_started(Version::HTTP_2);
        p.request_finished();
        let finished = Instant::now();
        p.bytes_read();
        assert_eq!(p.expired(header, idle).await, Expiry::Idle);
        assert_eq!(finished.elapsed(), idle);
    }

    #[tokio::test(start_paused = true)]
    async fn only_an_idle_connection_is_evicted() {
        let header = Duration::from_secs(10);
        let idle = Duration::from_secs(75);
        let p = Phases::new();
        assert!(!p.evict_if_idle(), "waiting for its first head");
        p.request_started(Version::HTTP_11);
        assert!(!p.evict_if_idle(), "busy");
        p.request_finished();
        assert!(p.idle_since().is_some());
        let evicted = Instant::now();
        assert!(p.evict_if_idle());
        assert_eq!(p.idle_since(), None, "not picked twice");
        assert_eq!(p.expired(header, idle).await, Expiry::Evicted);
        assert_eq!(evicted.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_busy_until_its_last_request_finishes() {
        let p = Phases::new();
        p.request_started(Version::HTTP_2);
        p.request_started(Version::HTTP_2);
        p.request_finished();
        assert!(matches!(p.with(|s| s.phase), Phase::Busy(1)));
        p.request_finished();
        assert!(matches!(p.with(|s| s.phase), Phase::Idle(_)));
    }
}
