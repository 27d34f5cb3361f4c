//! The [`Reporter`] middleware: it reports every request in flight to the
//! scoreboard (through the [`Tracker`]), lets a handler [`mark_long`] its
//! request, and serves the built-in status endpoint to the peers it lists.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use actix::prelude::*;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{ConnectionType, Method};
use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpRequest};

use super::endpoint::{Admission, StatusEndpoint};
use super::tracker::{FLUSH_AFTER, Sink, Tracker};
use crate::config::Config;
use crate::daemon::DaemonActor;

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
/// the built-in [`StatusEndpoint`] (to the peers it lists, before the
/// application); [`Server`] wraps it around the application.
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
///
/// [`Server`]: super::Server
/// [`UpdateStatus::Served`]: crate::UpdateStatus::Served
/// [`UpdateStatus::Done`]: crate::UpdateStatus::Done
/// [`UpdateStatus::Wait`]: crate::UpdateStatus::Wait
/// [`DaemonSignal::Shutdown`]: crate::DaemonSignal::Shutdown
#[derive(Clone)]
pub struct Reporter {
    pub(super) tracker: Arc<Tracker>,
    pub(super) status: Option<Arc<StatusEndpoint>>,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field("status", &self.status)
            .field("state", &*self.tracker.lock())
            .finish()
    }
}

impl Reporter {
    /// A reporter for this process, which must run an actix `System`; the
    /// worker's `requests` limit (with its jitter, see
    /// [`Process::requests_limit`](crate::Process::requests_limit)) comes
    /// from `config`.
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
            status: None,
        }
    }

    /// Serve the built-in status endpoint; see
    /// [`Server::status`](super::Server::status).
    pub fn status(mut self, endpoint: StatusEndpoint) -> Self {
        self.status = Some(Arc::new(endpoint));
        self
    }

    /// The server is listening: sends
    /// [`UpdateStatus::Wait`](crate::UpdateStatus::Wait) (once). Before
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
            status: self.status.clone(),
        }))
    }
}

/// The service of a [`Reporter`], one per actix-web worker thread.
pub struct ReporterService<S> {
    service: Rc<S>,
    tracker: Arc<Tracker>,
    status: Option<Arc<StatusEndpoint>>,
}

impl<S> fmt::Debug for ReporterService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReporterService")
            .field("status", &self.status)
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
        if self.answers_status(&req) {
            let tracker = self.tracker.clone();
            return Box::pin(async move {
                let response = match &tracker.sink {
                    Sink::Daemon(addr) => super::endpoint::respond(addr, req.query_string()).await,
                    #[cfg(test)]
                    Sink::Record(_) => actix_web::HttpResponse::Ok().body("status page"),
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

impl<S> ReporterService<S> {
    /// Whether the built-in endpoint answers `req`: its path, `GET` or
    /// `HEAD`, and a peer it admits. A refused request goes on to the
    /// application, as if there were no endpoint.
    fn answers_status(&self, req: &ServiceRequest) -> bool {
        let Some(endpoint) = self.status.as_deref() else {
            return false;
        };
        if endpoint.path() != req.path() || !matches!(*req.method(), Method::GET | Method::HEAD) {
            return false;
        }
        // The TCP peer of the connection, as actix-http recorded it; not
        // `connection_info()`, which believes `Forwarded` headers.
        match endpoint.admits(req.peer_addr(), req.headers()) {
            Admission::Admitted => true,
            refused => {
                slog::debug!(crate::logger(), "status endpoint refused"; "why" => ?refused);
                false
            }
        }
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
