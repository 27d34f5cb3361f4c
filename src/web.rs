//! actix-web applications on a pre-forked pool (the `web` feature).
//!
//! actix-web runs one process: an accept thread and a few worker threads.
//! This module runs the same application in every worker of a pre-forked
//! pool, so that it is operated like nginx or PHP-FPM: a supervisor keeps
//! between `min_spare` and `max_spare` idle processes, recycles each after
//! `requests` requests, babysits them, and reports the whole pool.
//!
//! # How it works
//!
//! The application binds its listener once, before [`Daemon::run`] (or takes
//! it from systemd with [`listen_fds`](crate::listen_fds)); every worker
//! inherits it. In each worker, [`Server::run`] runs the application on
//! actix-web's HTTP service (what `HttpServer` runs) in
//! [`threads`](Server::threads) threads (default 1: the worker's own
//! thread). Each thread accepts on the shared listener itself and serves
//! the connections it accepted, with no accept thread and no hand-over
//! between threads. A new connection wakes the threads of the pool that
//! wait for one; the first to ask gets it, the others find nothing and wait
//! again. A thread accepts only while it can serve: below its
//! [`max_connections`](Server::max_connections) and with the application
//! ready. actix-web's own signal handling is
//! not involved: the daemon's signals stop the worker.
//!
//! - **Ready**: once the server is listening, the worker sends
//!   [`UpdateStatus::Wait`]: only then does the pool count it as a spare.
//! - **Requests**: the [`Reporter`] middleware, wrapped around the
//!   application by [`Server`], marks the process `r` while at least one
//!   request is in flight and `w` once none has been in flight or ended
//!   for a moment (5 ms), so that it does not flip between back-to-back
//!   requests. A
//!   request lasts until its response body has been sent (or the client
//!   went away). Every finished request is counted in the scoreboard (in
//!   batches, at most 5 ms late, and never past the worker's quota), so the
//!   pool's `requests` limit, the status report and the babysitter's
//!   hung-request limit see HTTP requests. A handler marks its request long
//!   with [`mark_long`] (`l`).
//! - **Recycling**: after `requests` requests (plus a random jitter of up
//!   to [`requests_jitter`](crate::DaemonBuilder::requests_jitter), so that
//!   workers started together do not all restart together) the worker
//!   retires gracefully.
//! - **Shutdown** (TERM to the pool, the `requests` limit, a surplus spare,
//!   a reload): the worker stops accepting (every connection it accepted is
//!   counted and served), answers what its connections still ask with
//!   `Connection: close`, waits until every connection has closed (at most
//!   the daemon's `shutdown_timeout`), then exits. Other workers keep
//!   accepting on the shared listener meanwhile, so neither a connection
//!   nor a request in flight is lost.
//! - **Status**: with [`status_path`](Server::status_path), any worker
//!   answers for the whole pool (the scoreboard is shared memory): the
//!   human-readable report, JSON (`?json`) or Prometheus text
//!   (`?prometheus`). See [`StatusFormat`].
//!
//! # Example
//!
//! ```no_run
//! use actix_daemon::Daemon;
//! use actix_web::{App, HttpResponse, web};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Bind once; every worker inherits the listener.
//!     let listener = std::net::TcpListener::bind("127.0.0.1:8080")?;
//!     let daemon = Daemon::builder()
//!         .start_children(4)
//!         .requests(10_000)
//!         .requests_jitter(1_000)
//!         .logfile("hello.log")
//!         .build()?;
//!     daemon.run(move |process| {
//!         if process.is_worker() {
//!             let app = || {
//!                 App::new().route("/", web::get().to(|| async { HttpResponse::Ok().body("hello\n") }))
//!             };
//!             // On error the worker exits with status 1; the error is logged.
//!             let _ = actix_daemon::web::Server::new(app)
//!                 .threads(1)
//!                 .status_path("/status")
//!                 .run(process, listener);
//!         }
//!     })?;
//!     Ok(())
//! }
//! ```
//!
//! [`Daemon::run`]: crate::Daemon::run

use std::fmt::{self, Write as _};
use std::future::{Future, poll_fn};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::HttpService;
use actix_service::{IntoServiceFactory, ServiceFactoryExt as _, map_config};
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{
    AppConfig, Service, ServiceFactory, ServiceRequest, ServiceResponse, Transform,
};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{ConnectionType, KeepAlive, Method, StatusCode};
use actix_web::web::Bytes;
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse};
use slog::{Logger, debug, error, info, warn};
use tokio::sync::watch;

use crate::config::{Config, Mode};
use crate::daemon::DaemonActor;
use crate::messages::{DaemonSignal, Status, Subscribe, UpdateStatus};
use crate::payload::Payload;
use crate::scoreboard::Counter;
use crate::status::StatusReport;
use crate::{Process, Role};

/// How often a stopping worker looks at its acceptors and connections.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// How long an acceptor waits after an accept error that is not about one
/// connection (no file descriptor left, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connections a thread serves at once by default (actix-server's).
const MAX_CONNECTIONS: usize = 25_600;

/// How long a client has to send a request's head, as `HttpServer` sets it.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may take to close after its response, as
/// `HttpServer` sets it.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Server

/// Runs an actix-web application in a worker of a pre-forked pool.
///
/// Build it in the worker side of the [`Daemon::run`](crate::Daemon::run)
/// closure with the application factory (as for `HttpServer::new`), then
/// [`run`](Self::run) it on the listener the application bound before
/// `run`. See the [module documentation](self) for what it does.
///
/// Each thread builds the application, wraps it in the [`Reporter`] and
/// serves it with actix-web's HTTP/1.x service, configured as
/// `HttpServer` configures it: the listener's address as the application's
/// host and local address (`HttpRequest::app_config`), the same
/// keep-alive, request and disconnect timeouts by default. Defaults: 1
/// thread per process, no status endpoint.
pub struct Server<F> {
    factory: F,
    threads: usize,
    status_path: Option<String>,
    http: Http,
    max_connections: usize,
}

/// The HTTP settings of every thread's service.
#[derive(Debug, Clone, Copy)]
struct Http {
    keep_alive: Option<KeepAlive>,
    client_request_timeout: Duration,
    client_disconnect_timeout: Duration,
}

impl<F> fmt::Debug for Server<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("threads", &self.threads)
            .field("status_path", &self.status_path)
            .field("http", &self.http)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl<F, T, B> Server<F>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    /// A server for the application that `factory` builds (once per
    /// thread, as `HttpServer::new` does).
    pub fn new(factory: F) -> Self {
        Server {
            factory,
            threads: 1,
            status_path: None,
            http: Http {
                keep_alive: None,
                client_request_timeout: CLIENT_REQUEST_TIMEOUT,
                client_disconnect_timeout: CLIENT_DISCONNECT_TIMEOUT,
            },
            max_connections: MAX_CONNECTIONS,
        }
    }

    /// Threads in each process (default 1), each accepting and serving on
    /// its own. A pre-forked pool scales with processes; more threads per
    /// process only help handlers that block. The scoreboard has one state
    /// per process, whatever the number of threads.
    ///
    /// # Panics
    ///
    /// If `threads` is 0.
    pub fn threads(mut self, threads: usize) -> Self {
        assert!(threads > 0, "actix_daemon::web::Server::threads: 0 threads");
        self.threads = threads;
        self
    }

    /// Serve the pool's status at `path` (`GET` or `HEAD`), before the
    /// application's own routes: the text report, `?json` or `?prometheus`
    /// (see [`StatusFormat`]). Default: no status endpoint.
    pub fn status_path(mut self, path: impl Into<String>) -> Self {
        self.status_path = Some(path.into());
        self
    }

    /// actix-web's keep-alive for idle connections (default 5 s). A
    /// retiring worker waits for its idle connections to time out, so this
    /// is also about how long a retired worker lingers.
    pub fn keep_alive(mut self, keep_alive: impl Into<KeepAlive>) -> Self {
        self.http.keep_alive = Some(keep_alive.into());
        self
    }

    /// How long a client has, once connected, to send its first request's
    /// head (default 5 s, as `HttpServer`); a slower client gets
    /// `408 Request Timeout` and its connection is closed, so that a
    /// connection that says nothing does not hold a worker's place. Zero
    /// turns the timeout off.
    pub fn client_request_timeout(mut self, timeout: Duration) -> Self {
        self.http.client_request_timeout = timeout;
        self
    }

    /// How long a connection may take to shut down after its last response
    /// (default 1 s, as `HttpServer`). Zero turns the timeout off.
    pub fn client_disconnect_timeout(mut self, timeout: Duration) -> Self {
        self.http.client_disconnect_timeout = timeout;
        self
    }

    /// Open connections each thread serves at most (default 25,600, as
    /// actix-web's `HttpServer::max_connections`). A thread at its limit
    /// accepts nothing until one of its connections closes: new connections
    /// wait in the listen queue, where other workers take them.
    ///
    /// # Panics
    ///
    /// If `max` is 0.
    pub fn max_connections(mut self, max: usize) -> Self {
        assert!(
            max > 0,
            "actix_daemon::web::Server::max_connections: 0 connections"
        );
        self.max_connections = max;
        self
    }

    /// Starts serving on `listener` in this worker and returns at once; the
    /// server runs in the worker's actix `System` until the daemon shuts the
    /// worker down. Call it from the worker side of the `run` closure.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if this process is not a pre-forked
    /// worker (nothing was started); the error of reading the listener's
    /// address, of making it non-blocking, of copying it for a thread or of
    /// starting a thread. In every case the worker has been told to exit
    /// with status 1 (the supervisor counts a young death and replaces it).
    /// If the application's factory fails, a thread cannot register the
    /// listener, or a thread's accept loop ends for any other reason than a
    /// stop (a panic in the application's factory, say), the worker logs
    /// why and exits the same way: a later error, so not returned.
    pub fn run(self, process: &Process, listener: TcpListener) -> io::Result<()> {
        let log = process.logger().clone();
        let result = self.start(process, listener);
        if let Err(err) = &result {
            error!(log, "web server not started"; "error" => %err);
            System::current().stop_with_code(1);
        }
        result
    }

    fn start(self, process: &Process, listener: TcpListener) -> io::Result<()> {
        let config = process.config();
        if process.role() != Role::Worker || !matches!(config.mode(), Mode::PreFork(_)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "actix_daemon::web::Server runs in a worker of a pre-forked pool",
            ));
        }
        let log = process.logger().clone();
        let addr = listener.local_addr()?;
        // The listener's file description is shared by every worker: all of
        // them set it non-blocking, as each accepts from its own runtime.
        listener.set_nonblocking(true)?;
        let mut reporter = Reporter::new(config);
        if let Some(path) = &self.status_path {
            reporter = reporter.status_path(path.clone());
        }
        let tracker = reporter.tracker.clone();
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            connections: AtomicUsize::new(0),
            acceptors: AtomicUsize::new(self.threads),
            starting: AtomicUsize::new(self.threads),
            board: process.board().cloned(),
            tracker: tracker.clone(),
            log: log.clone(),
        });
        let acceptor = Acceptor {
            factory: self.factory,
            reporter,
            http: self.http,
            max_connections: self.max_connections,
            addr,
            shared: shared.clone(),
        };
        // Every thread accepts on its own copy of the listener and serves
        // the connections it accepted: no connection changes threads. The
        // copies first, so that an error starts nothing.
        let copies = (1..self.threads)
            .map(|_| listener.try_clone())
            .collect::<io::Result<Vec<_>>>()?;
        let mut arbiters = Vec::with_capacity(copies.len());
        for copy in copies {
            let arbiter = Arbiter::new();
            let (acceptor, stopped) = (acceptor.clone(), stopped.clone());
            // The accept loop is not `Send`: it is built on the thread.
            let started = arbiter.spawn_fn(move || {
                actix_rt::spawn(Self::serve(acceptor, copy, stopped));
            });
            if !started {
                // Its thread is gone: the worker cannot serve as asked.
                return Err(io::Error::other("cannot start a web server thread"));
            }
            arbiters.push(arbiter);
        }
        debug!(log, "web server starting"; "threads" => self.threads, "addr" => %addr,
            "limit" => ?tracker.lock().limit);
        actix_rt::spawn(Self::serve(acceptor, listener, stopped));
        WebWorker {
            stop,
            shared,
            _arbiters: arbiters,
            drain_for: config
                .shutdown_timeout()
                .saturating_sub(Duration::from_millis(100)),
        }
        .start();
        Ok(())
    }

    /// Builds this thread's application and accepts on `listener` until
    /// `stopped` changes, serving each connection on this thread. If the
    /// application cannot be built, the listener cannot be registered, the
    /// service fails its readiness check or this task panics, the worker
    /// exits with status 1 (and the supervisor replaces it).
    async fn serve(
        acceptor: Acceptor<F>,
        listener: TcpListener,
        mut stopped: watch::Receiver<bool>,
    ) {
        let Acceptor {
            factory,
            reporter,
            http: settings,
            max_connections,
            addr,
            shared,
        } = acceptor;
        let log = shared.log.clone();
        // However this ends, the worker's drain no longer waits for it; if
        // it ends other than by a stop, the worker exits.
        let mut running = Running {
            shared: shared.clone(),
            stopped: false,
        };
        let app = factory()
            .wrap(reporter)
            .into_factory()
            .map_err(|err: actix_web::Error| err.error_response());
        // What `HttpServer` gives an application: the listener's address,
        // as host and local address. `AppConfig` has no public constructor
        // with them; this is the one actix-web keeps for actix-test.
        let app_config = AppConfig::__priv_test_new(false, addr.to_string(), addr);
        let mut http = HttpService::build()
            .client_request_timeout(settings.client_request_timeout)
            .client_disconnect_timeout(settings.client_disconnect_timeout)
            .local_addr(addr);
        if let Some(keep_alive) = settings.keep_alive {
            http = http.keep_alive(keep_alive);
        }
        let factory = http
            .finish(map_config(app, move |()| app_config.clone()))
            .tcp();
        let Ok(service) = factory.new_service(()).await else {
            error!(
                log,
                "web server not started: the application's factory failed"
            );
            return;
        };
        let listener = match actix_rt::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                error!(log, "web server not started"; "error" => %err);
                return;
            }
        };
        if shared.starting.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.tracker.ready();
        }
        let local = Rc::new(Local::default());
        let mut stop = pin!(stopped.changed());
        loop {
            // A connection is accepted only when this thread can serve it
            // (below its limit, the service ready); otherwise it stays in
            // the listen queue for another worker.
            let next = poll_fn(|cx| {
                if stop.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Next::Stop);
                }
                if local.open.get() >= max_connections {
                    local.waiting.set(Some(cx.waker().clone()));
                    return Poll::Pending;
                }
                match service.poll_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(err)) => return Poll::Ready(Next::Broken(err)),
                    Poll::Ready(Ok(())) => {}
                }
                listener.poll_accept(cx).map(Next::Accepted)
            })
            .await;
            let io = match next {
                Next::Stop => {
                    running.stopped = true;
                    return;
                }
                Next::Broken(err) => {
                    error!(log, "web server failed: the service is not ready"; "error" => ?err);
                    return;
                }
                Next::Accepted(Ok((io, _))) => io,
                Next::Accepted(Err(err)) => {
                    if !transient(&err) {
                        // Out of file descriptors or memory: back off, as
                        // actix-server does, instead of spinning; the
                        // connections wait in the queue for other workers.
                        warn!(log, "accept failed"; "error" => %err);
                        actix_rt::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            };
            // Counted before the next poll: an acceptor that stopped has
            // counted every connection it accepted.
            if let Some(board) = &shared.board {
                board.count(Counter::Connections);
            }
            let guard = ConnectionGuard::new(shared.clone(), local.clone());
            let connection = service.call(io);
            actix_rt::spawn(async move {
                // The dispatcher's errors (a client that went away, a
                // malformed request) are answered or logged by actix-http.
                let _ = connection.await;
                drop(guard);
            });
        }
    }
}

/// What the acceptors of one worker share.
struct Shared {
    /// Open connections (one [`ConnectionGuard`] each).
    connections: AtomicUsize,
    /// Acceptors still accepting.
    acceptors: AtomicUsize,
    /// Acceptors not yet accepting: the worker is ready at 0.
    starting: AtomicUsize,
    board: Option<crate::scoreboard::Scoreboard>,
    tracker: Arc<Tracker>,
    log: Logger,
}

/// One thread's accept loop and HTTP service.
struct Acceptor<F> {
    factory: F,
    reporter: Reporter,
    http: Http,
    max_connections: usize,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl<F: Clone> Clone for Acceptor<F> {
    fn clone(&self) -> Self {
        Acceptor {
            factory: self.factory.clone(),
            reporter: self.reporter.clone(),
            http: self.http,
            max_connections: self.max_connections,
            addr: self.addr,
            shared: self.shared.clone(),
        }
    }
}

/// What an accept loop waits for.
enum Next {
    Stop,
    /// The service failed its readiness check.
    Broken(actix_http::error::DispatchError),
    Accepted(io::Result<(actix_rt::net::TcpStream, SocketAddr)>),
}

/// One thread's open connections, against its limit: an acceptor at the
/// limit leaves new connections in the listen queue, for other workers,
/// until one of its own closes.
#[derive(Default)]
struct Local {
    open: std::cell::Cell<usize>,
    /// The acceptor waiting for a connection to close.
    waiting: std::cell::Cell<Option<std::task::Waker>>,
}

/// An acceptor still accepting (or starting), counted in
/// [`Shared::acceptors`] until dropped. One that ends other than by a stop
/// (it failed, or a panic in the application's factory or a middleware
/// ended its task) takes its worker down: a worker that looks like a spare
/// but accepts nothing would never be replaced.
struct Running {
    shared: Arc<Shared>,
    stopped: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.acceptors.fetch_sub(1, Ordering::AcqRel);
        if !self.stopped && !self.shared.tracker.is_draining() {
            error!(self.shared.log, "web server thread ended: the worker exits");
            if let Some(system) = System::try_current() {
                system.stop_with_code(1);
            }
        }
    }
}

/// Accept errors that concern one connection, not the listener: accept(2)
/// on Linux passes pending network errors of the new connection on, and
/// they are to be treated like `EAGAIN`.
fn transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || err.raw_os_error().is_some_and(|code| {
        [
            libc::EPROTO,
            libc::ENETDOWN,
            libc::ENOPROTOOPT,
            libc::EHOSTDOWN,
            libc::ENONET,
            libc::EHOSTUNREACH,
            libc::EOPNOTSUPP,
            libc::ENETUNREACH,
            libc::EPERM,
        ]
        .contains(&code)
    })
}

/// Counts a worker's and a thread's open connections: one lives in each
/// connection's task, so it drops when the connection closes.
struct ConnectionGuard {
    shared: Arc<Shared>,
    local: Rc<Local>,
}

impl ConnectionGuard {
    fn new(shared: Arc<Shared>, local: Rc<Local>) -> Self {
        shared.connections.fetch_add(1, Ordering::AcqRel);
        local.open.set(local.open.get() + 1);
        ConnectionGuard { shared, local }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::AcqRel);
        self.local.open.set(self.local.open.get() - 1);
        if let Some(acceptor) = self.local.waiting.take() {
            acceptor.wake();
        }
    }
}

/// The worker's subscriber: stops the server gracefully on `Shutdown`.
struct WebWorker {
    stop: watch::Sender<bool>,
    shared: Arc<Shared>,
    /// The threads of the other acceptors; they end with the worker's
    /// `System`.
    _arbiters: Vec<Arbiter>,
    drain_for: Duration,
}

impl Actor for WebWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        DaemonActor::from_registry().do_send(Subscribe(ctx.address().recipient()));
    }
}

impl Handler<DaemonSignal> for WebWorker {
    // `Accept` comes after every `Done`: answered without a future.
    type Result = Response<()>;

    fn handle(&mut self, signal: DaemonSignal, _: &mut Context<Self>) -> Self::Result {
        if !matches!(signal, DaemonSignal::Shutdown) {
            return Response::reply(());
        }
        // The daemon waits for this future (up to its shutdown timeout)
        // before it ends the worker.
        self.shared.tracker.drain();
        let _ = self.stop.send(true);
        let shared = self.shared.clone();
        let deadline = Instant::now() + self.drain_for;
        Response::fut(async move {
            let log = shared.log.clone();
            // Every acceptor stops at its next poll, having counted what it
            // accepted; the other workers accept from then on.
            while shared.acceptors.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                actix_rt::time::sleep(DRAIN_POLL).await;
            }
            let open = shared.connections.load(Ordering::Acquire);
            if open > 0 {
                info!(log, "draining connections"; "open" => open);
            }
            while shared.connections.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                actix_rt::time::sleep(DRAIN_POLL).await;
            }
            let left = shared.connections.load(Ordering::Acquire);
            if left > 0 {
                warn!(log, "shutdown timeout: closing connections"; "open" => left);
            }
        })
    }
}

// ---------------------------------------------------------------------------
// Tracker: the process's in-flight requests, mirrored to the scoreboard.

/// Where the tracker's updates go: the daemon, or a test's record.
enum Sink {
    Daemon(Addr<DaemonActor>),
    #[cfg(test)]
    Record(Arc<Mutex<Vec<Note>>>),
}

/// What the tracker tells the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Note {
    Req,
    Long,
    Wait,
    Done,
    Served(u64),
}

impl Sink {
    fn send(&self, note: Note) {
        match self {
            Sink::Daemon(addr) => match note {
                Note::Req => addr.do_send(UpdateStatus::Req(Payload::new())),
                Note::Long => addr.do_send(UpdateStatus::Long),
                Note::Wait => addr.do_send(UpdateStatus::Wait),
                Note::Done => addr.do_send(UpdateStatus::Done),
                Note::Served(n) => addr.do_send(UpdateStatus::Served(n)),
            },
            #[cfg(test)]
            Sink::Record(notes) => notes.lock().unwrap().push(note),
        }
    }
}

/// The process's request state, changed and sent under one lock so that the
/// daemon sees the updates of every actix-web thread in a consistent order.
#[derive(Debug, Default)]
struct TrackState {
    /// Requests in flight in this process.
    in_flight: u32,
    /// Of those, marked long.
    long: u32,
    /// The daemon was told `Long` (the slot is `l`).
    told_long: bool,
    /// The daemon was told `Req` (and maybe `Long`) and not yet `Done`.
    open: bool,
    /// Requests that ended while others were still in flight, not yet told
    /// to the daemon.
    pending: u64,
    /// A flush of `pending` is scheduled.
    flush_scheduled: bool,
    /// When the last request ended: the worker shows `w` only once none
    /// has ended (and none is in flight) for `FLUSH_AFTER`.
    last_end: Option<Instant>,
    /// The server is listening and `Wait` was sent.
    ready: bool,
    /// Shutting down: nothing more is reported, responses close.
    draining: bool,
    /// Requests counted by the daemon (one `Done` each).
    served: u64,
    /// This worker's `requests` limit (with its jitter): the daemon
    /// retires it at the `Done` or `Served` that reaches it.
    limit: Option<u64>,
}

/// How long ended requests wait before they are told to the daemon, so
/// that a busy worker tells it (and it the supervisor) in batches rather
/// than one by one; also how long a worker stays `r` after its last
/// request.
const FLUSH_AFTER: Duration = Duration::from_millis(5);

struct Tracker {
    state: Mutex<TrackState>,
    /// `state.draining`, readable without the lock.
    draining: AtomicBool,
    sink: Sink,
}

impl Tracker {
    fn new(sink: Sink, limit: Option<u64>) -> Tracker {
        Tracker {
            state: Mutex::new(TrackState {
                limit,
                ..TrackState::default()
            }),
            draining: AtomicBool::new(false),
            sink,
        }
    }

    fn lock(&self) -> MutexGuard<'_, TrackState> {
        // The state stays consistent even if a holder panicked (each
        // change is a few integer writes), and a worker that panics exits.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a busy period: `Req`, and `Long` if a long request is in
    /// flight.
    fn open(&self, s: &mut TrackState) {
        self.sink.send(Note::Req);
        if s.long > 0 {
            self.sink.send(Note::Long);
        }
        s.told_long = s.long > 0;
        s.open = true;
    }

    /// The server listens: the worker is a spare from now on.
    fn ready(&self) {
        let mut s = self.lock();
        if s.ready || s.draining {
            return;
        }
        s.ready = true;
        self.sink.send(Note::Wait);
        if s.in_flight > 0 {
            self.open(&mut s);
        }
    }

    fn start(&self) {
        let mut s = self.lock();
        s.in_flight += 1;
        if !s.open && s.ready && !s.draining {
            self.open(&mut s);
        }
    }

    /// A request ended; returns whether the caller must call
    /// [`flush`](Self::flush) after [`FLUSH_AFTER`].
    ///
    /// Ended requests are told in batches: at most `FLUSH_AFTER` after the
    /// first of them ended, at once when they reach the worker's limit, and
    /// at once when the last request ends while shutting down. A batch of
    /// `k` while requests are still in flight is one `Served(k)`: the slot
    /// stays `r` (no state change, no wake-up of the supervisor) and its
    /// time in `r`, what the babysitter's hung-request limit measures,
    /// restarts. A batch that leaves nothing in flight is `Served(k - 1)`
    /// and `Done`: the worker shows `w` only once it has had no request in
    /// flight for a moment. The count is exact.
    fn end(&self, long: bool) -> bool {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if long {
            s.long = s.long.saturating_sub(1);
        }
        s.last_end = Some(Instant::now());
        if !s.open {
            if s.draining && s.ready {
                // A request a draining worker still answered (on a
                // keep-alive connection) after its last busy period: the
                // daemon counts it while the worker exits.
                self.sink.send(Note::Served(1));
                s.served += 1;
            }
            return false;
        }
        s.pending += 1;
        let now = if s.draining {
            s.in_flight == 0
        } else {
            s.limit.is_some_and(|q| s.served + s.pending >= q)
        };
        if now {
            self.flush_locked(&mut s);
            false
        } else {
            !s.draining && !std::mem::replace(&mut s.flush_scheduled, true)
        }
    }

    /// Tells the daemon the requests that ended meanwhile (the scheduled
    /// flush, `FLUSH_AFTER` after an end). Returns when to look again:
    /// with nothing in flight but a request ended less than `FLUSH_AFTER`
    /// ago, the worker is between requests rather than idle, so it counts
    /// all but one of them (kept for the `Done` that will end the busy
    /// period) and stays `r`. Under steady load a worker then never flips
    /// to `w` and back, and never wakes the supervisor.
    fn flush(&self, now: Instant) -> Option<Duration> {
        let mut s = self.lock();
        if s.in_flight == 0 && s.open && !s.draining && s.pending > 0 {
            let idle = s
                .last_end
                .map_or(FLUSH_AFTER, |t| now.saturating_duration_since(t));
            if idle < FLUSH_AFTER {
                // The limit cannot be reached here: `end` flushes at once
                // when it is.
                if s.pending > 1 {
                    let n = s.pending - 1;
                    self.sink.send(Note::Served(n));
                    s.served += n;
                    s.pending = 1;
                }
                return Some(FLUSH_AFTER - idle);
            }
        }
        s.flush_scheduled = false;
        self.flush_locked(&mut s);
        None
    }

    /// Tells the daemon everything pending, whatever the time.
    fn flush_all(&self) {
        let mut s = self.lock();
        s.flush_scheduled = false;
        self.flush_locked(&mut s);
    }

    fn flush_locked(&self, s: &mut TrackState) {
        let n = std::mem::take(&mut s.pending);
        if n == 0 || !s.open {
            return;
        }
        if s.in_flight > 0 {
            self.sink.send(Note::Served(n));
            if s.told_long && s.long == 0 && !s.draining {
                // The long request ended; the others are not long: `l` -> `r`.
                self.sink.send(Note::Req);
                s.told_long = false;
            }
        } else {
            if n > 1 {
                self.sink.send(Note::Served(n - 1));
            }
            self.sink.send(Note::Done);
            s.open = false;
            s.told_long = false;
        }
        s.served += n;
        if s.limit.is_some_and(|limit| s.served >= limit) {
            // The daemon retires the worker at this batch.
            self.set_draining(s);
        }
    }

    /// One more request in flight is long.
    fn long(&self) {
        let mut s = self.lock();
        s.long += 1;
        if s.open && !s.told_long && !s.draining {
            self.sink.send(Note::Long);
            s.told_long = true;
        }
    }

    /// Shutdown: report nothing more (the slot is exiting), close
    /// connections after their current response.
    fn drain(&self) {
        let mut s = self.lock();
        self.set_draining(&mut s);
        if s.in_flight == 0 {
            // Idle but not yet told: the daemon ends the worker once idle.
            self.flush_locked(&mut s);
        }
    }

    fn set_draining(&self, s: &mut TrackState) {
        s.draining = true;
        self.draining.store(true, Ordering::Release);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

thread_local! {
    /// The tracker of the `Reporter` running on this thread, for `mark_long`.
    static CURRENT: std::cell::RefCell<Option<Arc<Tracker>>> = const { std::cell::RefCell::new(None) };
}

/// Marks the request `req` long: the worker shows `l` instead of `r` while
/// it is in flight (the babysitter applies its long-request limit, if any,
/// instead of the request limit). Returns whether it was marked: `false`
/// outside a [`Reporter`], or if it was already.
///
/// ```no_run
/// use actix_web::{HttpRequest, HttpResponse};
///
/// async fn report(req: HttpRequest) -> HttpResponse {
///     actix_daemon::web::mark_long(&req);
///     // ... minutes of work ...
///     HttpResponse::Ok().finish()
/// }
/// ```
pub fn mark_long(req: &HttpRequest) -> bool {
    let Some(mark) = req.extensions().get::<LongMark>().cloned() else {
        return false;
    };
    if mark.0.replace(true) {
        return false;
    }
    match CURRENT.with(|c| c.borrow().clone()) {
        Some(tracker) => {
            tracker.long();
            true
        }
        None => false,
    }
}

/// Whether a request was marked long; shared by its extensions and its
/// guard.
#[derive(Debug, Clone, Default)]
struct LongMark(Rc<std::cell::Cell<bool>>);

/// One request in flight; dropping it ends the request.
struct RequestGuard {
    tracker: Arc<Tracker>,
    long: LongMark,
}

impl RequestGuard {
    fn start(tracker: &Arc<Tracker>, req: &ServiceRequest) -> RequestGuard {
        let long = LongMark::default();
        req.extensions_mut().insert(long.clone());
        tracker.start();
        RequestGuard {
            tracker: tracker.clone(),
            long,
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.tracker.end(self.long.0.get()) {
            let tracker = self.tracker.clone();
            let flush = async move {
                let mut wait = FLUSH_AFTER;
                loop {
                    actix_rt::time::sleep(wait).await;
                    match tracker.flush(Instant::now()) {
                        Some(again) => wait = again,
                        None => break,
                    }
                }
            };
            // Outside an arbiter (a runtime being torn down), flush now.
            let spawned = Arbiter::try_current().is_some_and(|arbiter| arbiter.spawn(flush));
            if !spawned {
                self.tracker.flush_all();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The middleware.

/// The middleware that reports every request to the scoreboard and serves
/// the status endpoint; [`Server`] wraps it around the application.
///
/// A request is in flight from the moment it reaches the middleware until
/// its response body is sent (or dropped, when the client goes away); the
/// process is `r` (or `l`, see [`mark_long`]) while any request is in flight
/// and `w` once none has been in flight or ended for 5 ms. Every finished
/// request is counted in the scoreboard and toward the daemon's `requests`
/// limit, in batches: [`UpdateStatus::Served`] while the worker stays busy,
/// [`UpdateStatus::Done`] for the last one of a busy period.
/// Once the worker is shutting down, responses carry `Connection: close`.
/// Responses have a [`BoxBody`] inside [`ReportedBody`]. Its cost is a few
/// hundred nanoseconds per request (`benches/web.rs`).
///
/// Use it directly only with your own `HttpServer` in a worker; then you
/// also send [`UpdateStatus::Wait`] once listening (see [`Reporter::ready`])
/// and stop the server on [`DaemonSignal::Shutdown`].
#[derive(Clone)]
pub struct Reporter {
    tracker: Arc<Tracker>,
    status_path: Option<String>,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field("status_path", &self.status_path)
            .field("state", &*self.tracker.lock())
            .finish()
    }
}

impl Reporter {
    /// A reporter for this process, which must run an actix `System`; the
    /// worker's `requests` limit (with its jitter, see
    /// [`Process::requests_limit`]) comes from `config`.
    ///
    /// # Panics
    ///
    /// Outside an actix `System` (it looks up [`DaemonActor`]).
    pub fn new(config: &Config) -> Reporter {
        let limit = crate::daemon::worker_request_limit(config);
        Reporter {
            tracker: Arc::new(Tracker::new(
                Sink::Daemon(DaemonActor::from_registry()),
                limit,
            )),
            status_path: None,
        }
    }

    /// See [`Server::status_path`].
    pub fn status_path(mut self, path: impl Into<String>) -> Self {
        self.status_path = Some(path.into());
        self
    }

    /// The server is listening: sends [`UpdateStatus::Wait`] (once). Before
    /// that, requests are not reported.
    pub fn ready(&self) {
        self.tracker.ready();
    }

    /// The worker is shutting down: report nothing more, and close each
    /// connection after its current response.
    pub fn drain(&self) {
        self.tracker.drain();
    }
}

impl<S, B> Transform<S, ServiceRequest> for Reporter
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<ReportedBody>;
    type Error = actix_web::Error;
    type Transform = ReporterService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.tracker.clone()));
        std::future::ready(Ok(ReporterService {
            service: Rc::new(service),
            tracker: self.tracker.clone(),
            status_path: self.status_path.as_deref().map(Rc::from),
        }))
    }
}

/// The service of a [`Reporter`], one per actix-web worker thread.
pub struct ReporterService<S> {
    service: Rc<S>,
    tracker: Arc<Tracker>,
    status_path: Option<Rc<str>>,
}

impl<S> fmt::Debug for ReporterService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReporterService")
            .field("status_path", &self.status_path)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for ReporterService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<ReportedBody>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let guard = RequestGuard::start(&self.tracker, &req);
        let is_status = self.status_path.as_deref() == Some(req.path())
            && matches!(*req.method(), Method::GET | Method::HEAD);
        if is_status {
            let format = StatusFormat::from_query(req.query_string());
            let tracker = self.tracker.clone();
            return Box::pin(async move {
                let response = match &tracker.sink {
                    Sink::Daemon(addr) => match addr.send(Status).await {
                        Ok(report) => HttpResponse::Ok()
                            .insert_header((
                                header::CONTENT_TYPE,
                                HeaderValue::from_static(format.content_type()),
                            ))
                            .insert_header((header::CACHE_CONTROL, "no-store"))
                            .body(format.render(&report)),
                        Err(err) => HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE)
                            .body(format!("no status: {err}\n")),
                    },
                    #[cfg(test)]
                    Sink::Record(_) => HttpResponse::Ok().finish(),
                };
                let (req, _) = req.into_parts();
                Ok(finish(ServiceResponse::new(req, response), guard, &tracker))
            });
        }
        let fut = self.service.call(req);
        let tracker = self.tracker.clone();
        Box::pin(async move {
            let res = fut.await?;
            Ok(finish(res.map_into_boxed_body(), guard, &tracker))
        })
    }
}

fn finish(
    mut res: ServiceResponse<BoxBody>,
    guard: RequestGuard,
    tracker: &Tracker,
) -> ServiceResponse<ReportedBody> {
    if tracker.is_draining() {
        res.response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    res.map_body(|_, body| ReportedBody {
        body,
        _guard: Some(guard),
    })
}

/// A response body that ends its request (for the scoreboard) once it has
/// been sent or dropped. The body of every response of a [`Reporter`].
pub struct ReportedBody {
    body: BoxBody,
    _guard: Option<RequestGuard>,
}

impl fmt::Debug for ReportedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportedBody")
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl MessageBody for ReportedBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.body).poll_next(cx);
        if matches!(poll, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            // Sent: the request is over, even if the connection lingers.
            this._guard = None;
        }
        poll
    }

    fn try_into_bytes(self) -> Result<Bytes, Self> {
        let ReportedBody { body, _guard } = self;
        body.try_into_bytes()
            .map_err(|body| ReportedBody { body, _guard })
    }
}

// ---------------------------------------------------------------------------
// Status formats.

/// The formats of the status endpoint, chosen by the query string.
///
/// | query | format | content type |
/// |---|---|---|
/// | (none) | [`Text`](Self::Text): the [`StatusReport`]'s `Display` | `text/plain` |
/// | `?json` or `?format=json` | [`Json`](Self::Json): the report's serde form | `application/json` |
/// | `?prometheus` or `?format=prometheus` | [`Prometheus`](Self::Prometheus): text exposition format 0.0.4 | `text/plain; version=0.0.4` |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    /// The human-readable report.
    Text,
    /// JSON, as [`StatusReport`] serialises.
    Json,
    /// Prometheus text exposition format.
    Prometheus,
}

impl StatusFormat {
    /// The format a query string asks for (text unless it names another).
    pub fn from_query(query: &str) -> StatusFormat {
        let mut format = StatusFormat::Text;
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = if key == "format" { value } else { key };
            match name {
                "json" => format = StatusFormat::Json,
                "prometheus" | "metrics" => format = StatusFormat::Prometheus,
                _ => {}
            }
        }
        format
    }

    /// The response's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            StatusFormat::Text => "text/plain; charset=utf-8",
            StatusFormat::Json => "application/json",
            StatusFormat::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// Renders `report` in this format.
    pub fn render(self, report: &StatusReport) -> String {
        match self {
            StatusFormat::Text => report.to_string(),
            StatusFormat::Json => {
                let mut json = serde_json::to_string_pretty(report)
                    .unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"));
                json.push('\n');
                json
            }
            StatusFormat::Prometheus => prometheus(report),
        }
    }
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The report in Prometheus text format: pool totals (counters survive
/// worker recycling: they live in the shared scoreboard), pool limits, and
/// per worker its state, requests and time in state, labelled by slot and
/// pid.
fn prometheus(report: &StatusReport) -> String {
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP actix_daemon_{name} {help}");
        let _ = writeln!(out, "# TYPE actix_daemon_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "actix_daemon_{name}{labels} {value}");
        }
    };
    let one = |value: f64| vec![(String::new(), value)];
    let c = &report.counters;
    metric(
        "info",
        "gauge",
        "The daemon: alias, mode, supervisor pid, answering pid.",
        &[(
            format!(
                "{{alias=\"{}\",mode=\"{}\",supervisor_pid=\"{}\",pid=\"{}\"}}",
                label(&report.alias),
                label(report.mode),
                report.supervisor_pid,
                report.pid
            ),
            1.0,
        )],
    );
    metric(
        "requests_total",
        "counter",
        "Requests served by all workers since start.",
        &one(c.requests as f64),
    );
    metric(
        "connections_total",
        "counter",
        "Connections accepted by all workers since start.",
        &one(c.connections as f64),
    );
    let (idle, busy, starting, exiting) = report.tally();
    metric(
        "workers",
        "gauge",
        "Workers by what they do: idle (spares), active (busy), starting, exiting.",
        &[
            ("{state=\"idle\"}".into(), idle as f64),
            ("{state=\"active\"}".into(), busy as f64),
            ("{state=\"starting\"}".into(), starting as f64),
            ("{state=\"exiting\"}".into(), exiting as f64),
        ],
    );
    for (name, help, value) in [
        ("workers_spawned_total", "Workers started.", c.spawned),
        ("workers_exited_total", "Workers reaped.", c.exited),
        (
            "workers_retired_total",
            "Workers recycled: served their requests, or surplus spares.",
            c.retired,
        ),
        (
            "workers_killed_total",
            "Workers killed (SIGKILL at shutdown).",
            c.killed,
        ),
        (
            "fork_failures_total",
            "Forks that failed and were retried.",
            c.fork_failed,
        ),
        (
            "workers_crashed_total",
            "Workers that died young (before ready, or within a second, with an error).",
            c.crashed,
        ),
    ] {
        metric(name, "counter", help, &one(value as f64));
    }
    metric(
        "babysitter_actions_total",
        "counter",
        "Babysitter interventions by reason.",
        &[
            ("{reason=\"rogue\"}".into(), c.rogue as f64),
            ("{reason=\"hung\"}".into(), c.hung as f64),
            ("{reason=\"memory\"}".into(), c.memory as f64),
            ("{reason=\"vanished\"}".into(), c.vanished as f64),
        ],
    );
    metric(
        "crash_streak",
        "gauge",
        "Young deaths in a row; above 0 the pool is degraded and spawns back off.",
        &one(c.crash_streak as f64),
    );
    metric(
        "degraded",
        "gauge",
        "1 while workers keep dying young.",
        &one(f64::from(u8::from(report.is_degraded()))),
    );
    if let Some(last) = c.last_crash {
        metric(
            "last_crash_status",
            "gauge",
            "How the last young death ended: an exit code, or minus a signal number.",
            &one(last as f64),
        );
    }
    if let Some(limits) = report.limits {
        metric(
            "max_children",
            "gauge",
            "Most workers at once.",
            &one(limits.max_children as f64),
        );
        if let (Some(min), Some(max)) = (limits.min_spare, limits.max_spare) {
            metric(
                "min_spare",
                "gauge",
                "Least idle workers wanted.",
                &one(min as f64),
            );
            metric(
                "max_spare",
                "gauge",
                "Most idle workers kept.",
                &one(max as f64),
            );
        }
        if let Some(n) = limits.requests {
            metric(
                "requests_per_worker",
                "gauge",
                "Requests after which a worker is recycled.",
                &one(n as f64),
            );
        }
    }
    if let Some(queued) = report.queued_requests {
        metric(
            "queued_requests",
            "gauge",
            "Fork per request: requests waiting for a worker.",
            &one(queued as f64),
        );
    }
    metric(
        "shutting_down",
        "gauge",
        "1 while the answering process shuts down.",
        &one(f64::from(u8::from(report.shutting_down))),
    );
    let workers: Vec<_> = report.slots.iter().filter(|s| s.pid != 0).collect();
    let labels = |s: &crate::SlotSnapshot| format!("slot=\"{}\",pid=\"{}\"", s.slot, s.pid);
    metric(
        "worker_state",
        "gauge",
        "Each worker's scoreboard state (its letter: . w r l f e); always 1.",
        &workers
            .iter()
            .map(|s| {
                (
                    format!(
                        "{{{},state=\"{}\"}}",
                        labels(s),
                        label(&s.state.letter().to_string())
                    ),
                    1.0,
                )
            })
            .collect::<Vec<_>>(),
    );
    metric(
        "worker_requests_total",
        "counter",
        "Requests served by each worker.",
        &workers
            .iter()
            .map(|s| (format!("{{{}}}", labels(s)), s.requests as f64))
            .collect::<Vec<_>>(),
    );
    metric(
        "worker_state_seconds",
        "gauge",
        "Time each worker has been in its state.",
        &workers
            .iter()
            .map(|s| (format!("{{{}}}", labels(s)), s.in_state_ms as f64 / 1000.0))
            .collect::<Vec<_>>(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SlotState;

    fn tracker(limit: Option<u64>) -> (Tracker, Arc<Mutex<Vec<Note>>>) {
        let notes = Arc::new(Mutex::new(Vec::new()));
        (Tracker::new(Sink::Record(notes.clone()), limit), notes)
    }

    /// Waits (in the runtime) until `cond` holds, at most 10 seconds.
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// An acceptor of `factory`'s application on a fresh listener, with
    /// the notes its tracker sends.
    #[allow(clippy::type_complexity)]
    fn acceptor<F>(
        factory: F,
        max_connections: usize,
    ) -> (Acceptor<F>, TcpListener, Arc<Shared>, Arc<Mutex<Vec<Note>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (tracker, notes) = tracker(None);
        let tracker = Arc::new(tracker);
        let shared = Arc::new(Shared {
            connections: AtomicUsize::new(0),
            acceptors: AtomicUsize::new(1),
            starting: AtomicUsize::new(1),
            board: None,
            tracker: tracker.clone(),
            log: Logger::root(slog::Discard, slog::o!()),
        });
        let acceptor = Acceptor {
            factory,
            reporter: Reporter {
                tracker,
                status_path: None,
            },
            http: Http {
                keep_alive: None,
                client_request_timeout: CLIENT_REQUEST_TIMEOUT,
                client_disconnect_timeout: CLIENT_DISCONNECT_TIMEOUT,
            },
            max_connections,
            addr,
            shared: shared.clone(),
        };
        (acceptor, listener, shared, notes)
    }

    /// `GET path` on a new connection (blocking): the whole answer.
    fn get(addr: SocketAddr, request: &'static [u8]) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn an_acceptor_serves_the_app_at_its_address_counts_connections_and_stops() {
        let (acceptor, listener, shared, notes) = acceptor(
            || {
                App::new().route(
                    "/",
                    actix_web::web::get().to(|req: HttpRequest| async move {
                        let host = req.connection_info().host().to_owned();
                        format!("{} {host}", req.app_config().local_addr())
                    }),
                )
            },
            MAX_CONNECTIONS,
        );
        let addr = acceptor.addr;
        let (stop, stopped) = watch::channel(false);
        let system = actix_rt::System::new();
        system.block_on(async move {
            actix_rt::spawn(Server::serve(acceptor, listener, stopped));
            eventually("ready", || take(&notes).contains(&Note::Wait)).await;
            // HTTP/1.0 without a Host header: the host is the listener's,
            // as `HttpServer` gives it.
            let answer =
                actix_rt::task::spawn_blocking(move || get(addr, b"GET / HTTP/1.0\r\n\r\n"))
                    .await
                    .unwrap();
            assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
            assert!(
                answer.ends_with(&format!("\r\n\r\n{addr} {addr}")),
                "{answer}"
            );
            eventually("the connection to close", || {
                shared.connections.load(Ordering::Acquire) == 0
            })
            .await;
            stop.send(true).unwrap();
            eventually("the acceptor to stop", || {
                shared.acceptors.load(Ordering::Acquire) == 0
            })
            .await;
            // It let go of its listener (here the only copy).
            let refused = std::net::TcpStream::connect(addr).unwrap_err();
            assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
            // A stopped acceptor leaves the worker running: it has ended
            // (its drop ran), and the first stop the system sees is this one.
            System::current().stop_with_code(0);
        });
        assert_eq!(system.run_with_code().unwrap(), 0);
    }

    #[test]
    fn an_acceptor_at_its_limit_leaves_connections_in_the_queue() {
        use std::io::{Read, Write};
        let (acceptor, listener, shared, _notes) = acceptor(
            || App::new().route("/", actix_web::web::get().to(|| async { "hi" })),
            1,
        );
        let addr = acceptor.addr;
        let (_stop, stopped) = watch::channel(false);
        actix_rt::System::new().block_on(async move {
            actix_rt::spawn(Server::serve(acceptor, listener, stopped));
            // One keep-alive connection, answered and left open: the
            // acceptor is at its limit.
            let (first, answer) = actix_rt::task::spawn_blocking(move || {
                let mut first = std::net::TcpStream::connect(addr).unwrap();
                first
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                first
                    .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                let mut buf = [0u8; 512];
                let n = first.read(&mut buf).unwrap();
                (first, String::from_utf8_lossy(&buf[..n]).into_owned())
            })
            .await
            .unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert_eq!(shared.connections.load(Ordering::Acquire), 1);
            // A second connection waits in the queue, not accepted...
            let second = actix_rt::task::spawn_blocking(move || {
                get(
                    addr,
                    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
            });
            actix_rt::time::sleep(Duration::from_millis(300)).await;
            assert!(!second.is_finished(), "served beyond the limit");
            assert_eq!(
                shared.connections.load(Ordering::Acquire),
                1,
                "accepted beyond the limit"
            );
            // ...until the first closes.
            drop(first);
            let answer = second.await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        });
    }

    #[test]
    fn a_client_that_sends_no_request_is_timed_out() {
        use std::io::Read;
        let (mut acceptor, listener, shared, _notes) = acceptor(
            || App::new().route("/", actix_web::web::get().to(|| async { "hi" })),
            MAX_CONNECTIONS,
        );
        acceptor.http.client_request_timeout = Duration::from_millis(200);
        let addr = acceptor.addr;
        let (_stop, stopped) = watch::channel(false);
        actix_rt::System::new().block_on(async move {
            actix_rt::spawn(Server::serve(acceptor, listener, stopped));
            let (answer, waited) = actix_rt::task::spawn_blocking(move || {
                let started = Instant::now();
                let mut idle = std::net::TcpStream::connect(addr).unwrap();
                idle.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut answer = String::new();
                // Sends nothing; reads until the server closes.
                let _ = idle.read_to_string(&mut answer);
                (answer, started.elapsed())
            })
            .await
            .unwrap();
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
            assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
            eventually("the connection to be let go", || {
                shared.connections.load(Ordering::Acquire) == 0
            })
            .await;
        });
    }

    #[test]
    fn an_acceptor_whose_application_panics_takes_its_worker_down() {
        let (acceptor, listener, shared, notes) = acceptor(
            || {
                if std::hint::black_box(true) {
                    panic!("the application's factory failed (on purpose)");
                }
                App::new()
            },
            MAX_CONNECTIONS,
        );
        let (_stop, stopped) = watch::channel(false);
        let system = actix_rt::System::new();
        system.block_on(async move {
            actix_rt::spawn(Server::serve(acceptor, listener, stopped));
            // A bound on the test, not a result: 99 fails it.
            actix_rt::spawn(async {
                actix_rt::time::sleep(Duration::from_secs(10)).await;
                System::current().stop_with_code(99);
            });
        });
        assert_eq!(system.run_with_code().unwrap(), 1);
        assert_eq!(shared.acceptors.load(Ordering::Acquire), 0);
        assert!(
            !take(&notes).contains(&Note::Wait),
            "a worker that cannot serve never shows as a spare"
        );
    }

    /// The scheduled flush, once the moment after the last end has passed.
    fn flush(t: &Tracker) {
        let later = t
            .lock()
            .last_end
            .map_or_else(Instant::now, |e| e + FLUSH_AFTER);
        assert_eq!(t.flush(later), None, "a flush after the moment is final");
    }

    fn take(notes: &Mutex<Vec<Note>>) -> Vec<Note> {
        std::mem::take(&mut *notes.lock().unwrap())
    }

    /// Requests the notes count: one per `Done`, `n` per `Served(n)`.
    fn counted(notes: &[Note]) -> u64 {
        notes
            .iter()
            .map(|n| match n {
                Note::Done => 1,
                Note::Served(n) => *n,
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn a_request_is_req_then_done_a_moment_later() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.ready();
        t.start();
        assert!(t.end(false), "a flush is scheduled");
        assert_eq!(take(&notes), [Wait, Req]);
        flush(&t);
        assert_eq!(take(&notes), [Done]);
        t.start();
        assert!(t.end(false));
        flush(&t);
        assert_eq!(take(&notes), [Req, Done]);
        assert_eq!(t.lock().served, 2);
    }

    #[test]
    fn requests_in_a_row_are_one_busy_period_and_each_is_counted() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.ready();
        take(&notes);
        for _ in 0..3 {
            t.start();
            t.end(false);
        }
        assert_eq!(take(&notes), [Req], "busy until the flush");
        flush(&t);
        assert_eq!(take(&notes), [Served(2), Done]);
        assert_eq!(t.lock().served, 3);
    }

    #[test]
    fn overlapping_requests_are_counted_without_leaving_r() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.ready();
        take(&notes);
        t.start();
        t.start();
        t.start();
        assert_eq!(take(&notes), [Req], "one busy period");
        assert!(t.end(false), "the first end schedules a flush");
        assert!(!t.end(false), "one flush at a time");
        assert_eq!(take(&notes), [], "batched");
        flush(&t);
        // Counted; one is still in flight, so the slot stays r: no Done,
        // no Req, no state change.
        assert_eq!(take(&notes), [Served(2)]);
        t.start();
        assert!(t.end(false));
        t.end(false);
        flush(&t);
        assert_eq!(take(&notes), [Served(1), Done]);
        flush(&t);
        assert_eq!(take(&notes), [], "nothing left to flush");
        assert_eq!(t.lock().served, 4);
        assert_eq!(t.lock().in_flight, 0);
    }

    #[test]
    fn a_worker_between_requests_stays_r_until_idle_for_a_moment() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.ready();
        take(&notes);
        for _ in 0..3 {
            t.start();
            t.end(false);
        }
        // The scheduled flush comes while the last request ended just now:
        // counted but one, still `r`, look again when the moment is over.
        let ended = t.lock().last_end.unwrap();
        let again = t.flush(ended + FLUSH_AFTER / 2);
        assert_eq!(again, Some(FLUSH_AFTER / 2));
        assert_eq!(take(&notes), [Req, Served(2)]);
        // Another request meanwhile: still between requests.
        t.start();
        t.end(false);
        let ended = t.lock().last_end.unwrap();
        assert!(t.flush(ended + FLUSH_AFTER / 4).is_some());
        assert_eq!(take(&notes), [Served(1)]);
        // Quiet for the whole moment: the busy period ends with the one
        // held back.
        assert_eq!(t.flush(ended + FLUSH_AFTER), None);
        assert_eq!(take(&notes), [Done]);
        assert_eq!(t.lock().served, 4);
    }

    #[test]
    fn requests_before_ready_are_reported_once_ready() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.start();
        assert_eq!(take(&notes), []);
        t.ready();
        t.end(false);
        flush(&t);
        assert_eq!(take(&notes), [Wait, Req, Done]);
    }

    #[test]
    fn long_is_kept_while_a_long_request_is_in_flight() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.ready();
        take(&notes);
        t.start();
        t.start();
        t.long();
        assert_eq!(take(&notes), [Req, Long]);
        // The short one ends: the long one keeps the process in l.
        t.end(false);
        flush(&t);
        assert_eq!(take(&notes), [Served(1)]);
        t.end(true);
        flush(&t);
        assert_eq!(take(&notes), [Done]);
        assert_eq!(t.lock().long, 0);
        // The long one ends first: back to r while the short one runs.
        t.start();
        t.long();
        t.start();
        assert_eq!(take(&notes), [Req, Long]);
        t.end(true);
        flush(&t);
        assert_eq!(take(&notes), [Served(1), Req]);
        t.end(false);
        flush(&t);
        assert_eq!(take(&notes), [Done]);
    }

    #[test]
    fn the_limit_is_told_at_once_and_nothing_is_lost_after_it() {
        use Note::*;
        let (t, notes) = tracker(Some(3));
        t.ready();
        take(&notes);
        for _ in 0..4 {
            t.start();
        }
        t.end(false);
        t.end(false);
        assert_eq!(take(&notes), [Req]);
        // The third reaches the limit: counted at once, not batched.
        assert!(!t.end(false));
        assert_eq!(take(&notes), [Served(3)]);
        assert!(t.is_draining(), "the daemon retires at the third");
        // The fourth was already in flight: still counted (the daemon
        // counts requests that end while the worker exits).
        assert!(!t.end(false));
        assert_eq!(take(&notes), [Done]);
        // One answered while draining is counted, as the worker exits.
        t.start();
        t.end(false);
        flush(&t);
        assert_eq!(take(&notes), [Served(1)]);
        assert_eq!(t.lock().served, 5);
    }

    #[test]
    fn the_limit_reached_by_the_last_request_in_flight_ends_with_done() {
        use Note::*;
        let (t, notes) = tracker(Some(2));
        t.ready();
        take(&notes);
        t.start();
        t.end(false);
        t.start();
        t.end(false);
        let notes = take(&notes);
        assert_eq!(notes, [Req, Served(1), Done]);
        assert_eq!(counted(&notes), 2);
        assert!(t.is_draining());
    }

    #[test]
    fn draining_keeps_the_process_busy_until_the_last_request() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.ready();
        take(&notes);
        t.start();
        t.start();
        assert!(t.end(false));
        t.drain();
        t.ready();
        flush(&t);
        assert_eq!(
            take(&notes),
            [Req, Served(1)],
            "still busy: one is in flight"
        );
        t.start();
        assert!(!t.end(false), "no batching while draining");
        t.end(false);
        assert_eq!(
            take(&notes),
            [Served(1), Done],
            "at once, every one counted"
        );
        t.start();
        t.end(false);
        assert_eq!(take(&notes), [Served(1)], "counted while exiting");
    }

    #[test]
    fn draining_an_idle_worker_ends_its_busy_period_at_once() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.ready();
        t.start();
        assert!(t.end(false));
        t.drain();
        assert_eq!(take(&notes), [Wait, Req, Done]);
        flush(&t);
        assert_eq!(take(&notes), []);
    }

    #[test]
    fn every_request_is_counted_whatever_the_interleaving() {
        // A small random walk of starts, ends and flushes: what the notes
        // count is what ended while reported, exactly.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let (t, notes) = tracker(None);
            t.ready();
            let mut ended = 0u64;
            for _ in 0..50 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                match seed % 3 {
                    0 => t.start(),
                    1 if t.lock().in_flight > 0 => {
                        t.end(false);
                        ended += 1;
                    }
                    _ => flush(&t),
                }
            }
            while t.lock().in_flight > 0 {
                t.end(false);
                ended += 1;
            }
            flush(&t);
            let notes = take(&notes);
            assert_eq!(counted(&notes), ended, "{notes:?}");
            assert_eq!(
                notes.last(),
                if ended > 0 {
                    Some(&Note::Done)
                } else {
                    Some(&Note::Wait)
                }
            );
        }
    }

    #[test]
    fn status_formats_come_from_the_query() {
        assert_eq!(StatusFormat::from_query(""), StatusFormat::Text);
        assert_eq!(StatusFormat::from_query("json"), StatusFormat::Json);
        assert_eq!(StatusFormat::from_query("format=json"), StatusFormat::Json);
        assert_eq!(
            StatusFormat::from_query("prometheus"),
            StatusFormat::Prometheus
        );
        assert_eq!(
            StatusFormat::from_query("x=1&prometheus="),
            StatusFormat::Prometheus
        );
        assert_eq!(StatusFormat::from_query("verbose"), StatusFormat::Text);
    }

    fn report() -> StatusReport {
        use crate::{Counters, PoolLimits, SlotId, SlotSnapshot};
        StatusReport {
            alias: "web \"test\"".into(),
            mode: "Pre-forking server",
            role: Role::Worker,
            pid: 11,
            supervisor_pid: 10,
            slot: Some(1),
            limits: Some(PoolLimits {
                max_children: 3,
                min_spare: Some(1),
                max_spare: Some(2),
                requests: Some(50),
                requests_jitter: 0,
            }),
            slots: vec![
                SlotSnapshot {
                    slot: SlotId(0),
                    state: SlotState::Wait,
                    pid: 12,
                    requests: 7,
                    in_state_ms: 1500,
                },
                SlotSnapshot {
                    slot: SlotId(1),
                    state: SlotState::Req,
                    pid: 11,
                    requests: 3,
                    in_state_ms: 2,
                },
                SlotSnapshot {
                    slot: SlotId(2),
                    state: SlotState::Empty,
                    pid: 0,
                    requests: 0,
                    in_state_ms: 0,
                },
            ],
            counters: Counters {
                spawned: 5,
                exited: 3,
                retired: 2,
                requests: 160,
                crashed: 1,
                last_crash: Some(-9),
                ..Counters::default()
            },
            queued_requests: None,
            paused: None,
            shutting_down: false,
        }
    }

    #[test]
    fn prometheus_text_has_totals_limits_and_workers() {
        let text = prometheus(&report());
        for line in [
            "actix_daemon_requests_total 160",
            "actix_daemon_workers{state=\"idle\"} 1",
            "actix_daemon_workers{state=\"active\"} 1",
            "actix_daemon_workers_spawned_total 5",
            "actix_daemon_workers_retired_total 2",
            "actix_daemon_workers_crashed_total 1",
            "actix_daemon_last_crash_status -9",
            "actix_daemon_degraded 0",
            "actix_daemon_requests_per_worker 50",
            "actix_daemon_worker_state{slot=\"1\",pid=\"11\",state=\"r\"} 1",
            "actix_daemon_worker_requests_total{slot=\"0\",pid=\"12\"} 7",
            "actix_daemon_worker_state_seconds{slot=\"0\",pid=\"12\"} 1.5",
            "# TYPE actix_daemon_requests_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.contains("alias=\"web \\\"test\\\"\""), "{text}");
        assert!(!text.contains("pid=\"0\""), "empty slots are not workers");
        // Every sample line is `name{labels} number`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        }
    }

    #[test]
    fn json_and_text_are_the_report_s_own() {
        let r = report();
        let json: serde_json::Value = serde_json::from_str(&StatusFormat::Json.render(&r)).unwrap();
        assert_eq!(json["counters"]["requests"], 160);
        assert_eq!(json["slots"][1]["state"], "req");
        assert_eq!(StatusFormat::Text.render(&r), r.to_string());
    }
}
