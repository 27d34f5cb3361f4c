//! What the accept loop of each thread ([`Server::serve`]) works with: the
//! [`Acceptor`] it is built from, what the acceptors of a worker share, the
//! open connections it counts against its limit, and the accept errors it
//! passes over. An acceptor accepts on the shared listener only while it
//! can serve.
//!
//! [`Server::serve`]: super::Server::serve

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::prelude::*;
use slog::{Logger, error};

use super::Http;
use super::reporter::Reporter;
use super::tracker::Tracker;

/// What the acceptors of one worker share.
pub(super) struct Shared {
    /// Open connections (one [`ConnectionGuard`] each).
    pub(super) connections: AtomicUsize,
    /// Acceptors still accepting.
    pub(super) acceptors: AtomicUsize,
    /// Acceptors not yet accepting: the worker is ready at 0.
    pub(super) starting: AtomicUsize,
    /// The board and this worker's slot (its own counts go there).
    pub(super) board: Option<(crate::scoreboard::Scoreboard, crate::scoreboard::SlotId)>,
    pub(super) tracker: Arc<Tracker>,
    pub(super) log: Logger,
}

/// One thread's accept loop and HTTP service.
pub(super) struct Acceptor<F> {
    pub(super) factory: F,
    pub(super) reporter: Reporter,
    pub(super) http: Http,
    pub(super) max_connections: usize,
    pub(super) addr: SocketAddr,
    pub(super) shared: Arc<Shared>,
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
pub(super) enum Next {
    Stop,
    /// The service failed its readiness check.
    Broken(actix_http::error::DispatchError),
    Accepted(io::Result<(actix_rt::net::TcpStream, SocketAddr)>),
}

/// One thread's open connections, against its limit: an acceptor at the
/// limit leaves new connections in the listen queue, for other workers,
/// until one of its own closes.
#[derive(Default)]
pub(super) struct Local {
    pub(super) open: std::cell::Cell<usize>,
    /// The acceptor waiting for a connection to close.
    pub(super) waiting: std::cell::Cell<Option<std::task::Waker>>,
}

/// An acceptor still accepting (or starting), counted in
/// [`Shared::acceptors`] until dropped. One that ends other than by a stop
/// (it failed, or a panic in the application's factory or a middleware
/// ended its task) takes its worker down: a worker that looks like a spare
/// but accepts nothing would never be replaced.
pub(super) struct Running {
    pub(super) shared: Arc<Shared>,
    pub(super) stopped: bool,
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
pub(super) fn transient(err: &io::Error) -> bool {
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
pub(super) struct ConnectionGuard {
    shared: Arc<Shared>,
    local: Rc<Local>,
}

impl ConnectionGuard {
    pub(super) fn new(shared: Arc<Shared>, local: Rc<Local>) -> Self {
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

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use actix_web::{App, HttpRequest};
    use tokio::sync::watch;

    use super::*;
    use crate::web::tests::{take, tracker};
    use crate::web::tracker::Note;
    use crate::web::{CLIENT_DISCONNECT_TIMEOUT, CLIENT_REQUEST_TIMEOUT, MAX_CONNECTIONS, Server};

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
                status: None,
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
}
