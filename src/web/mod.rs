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
//! - **Status**: any worker answers for the whole pool (the scoreboard is
//!   shared memory): the human-readable report, JSON (`?json`) or
//!   Prometheus text (`?prometheus`); see [`StatusFormat`]. Off by
//!   default. Either the application mounts [`status_resource`] (or
//!   [`status_handler`]) in its own routing, behind its own middleware
//!   (its authentication applies), or [`Server::status`] turns on the
//!   built-in [`StatusEndpoint`], answered before the application to the
//!   peers on its allowlist only (by default loopback: `127.0.0.1` and
//!   `::1`).
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
//!     // The built-in status page, for loopback peers only; a bad path or
//!     // address is an error here, before anything forks.
//!     let status = actix_daemon::web::StatusEndpoint::new("/status")?;
//!     daemon.run(move |process| {
//!         if process.is_worker() {
//!             let app = || {
//!                 App::new().route("/", web::get().to(|| async { HttpResponse::Ok().body("hello\n") }))
//!             };
//!             // On error the worker exits with status 1; the error is logged.
//!             let _ = actix_daemon::web::Server::new(app)
//!                 .threads(1)
//!                 .status(status.clone())
//!                 .run(process, listener);
//!         }
//!     })?;
//!     Ok(())
//! }
//! ```
//!
//! [`Daemon::run`]: crate::Daemon::run
//! [`UpdateStatus::Wait`]: crate::UpdateStatus::Wait

mod accept;
mod allow;
mod endpoint;
mod reporter;
mod status;
#[cfg(test)]
mod tests;
mod tracker;
mod worker;

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::net::TcpListener;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use actix::prelude::*;
use actix_http::HttpService;
use actix_service::{IntoServiceFactory, ServiceFactoryExt as _, map_config};
use actix_web::App;
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::KeepAlive;
use slog::{debug, error, warn};
use tokio::sync::watch;

use crate::config::Mode;
use crate::scoreboard::SlotCounter;
use crate::{Process, Role};

use accept::{Acceptor, ConnectionGuard, Local, Next, Running, Shared, transient};
pub use endpoint::{StatusEndpoint, StatusEndpointBuilder, status_handler, status_resource};
pub use reporter::{ReportedBody, Reporter, ReporterService, mark_long};
pub use status::StatusFormat;
use worker::WebWorker;

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
    status: Option<StatusEndpoint>,
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
            .field("status", &self.status)
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
            status: None,
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

    /// Serve the pool's status at the endpoint's path (`GET` or `HEAD`),
    /// before the application's own middleware and routes, to the peers on
    /// the endpoint's allowlist only (loopback unless it says otherwise):
    /// the text report, `?json` or `?prometheus` (see [`StatusFormat`]).
    /// Other peers' requests go to the application. Default: no built-in
    /// endpoint. To put the status page behind the application's own
    /// middleware instead, route [`status_resource`] in the application
    /// and do not call this.
    pub fn status(mut self, endpoint: StatusEndpoint) -> Self {
        self.status = Some(endpoint);
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
        if let Some(endpoint) = self.status {
            reporter = reporter.status(endpoint);
        }
        let tracker = reporter.tracker.clone();
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            connections: AtomicUsize::new(0),
            acceptors: AtomicUsize::new(self.threads),
            starting: AtomicUsize::new(self.threads),
            board: process.board().cloned().zip(process.slot()),
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
            if let Some((board, slot)) = &shared.board {
                board.count_own(*slot, SlotCounter::Connections);
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
