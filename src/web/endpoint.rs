//! Where the pool's status is served: the built-in endpoint
//! ([`StatusEndpoint`], answered by the [`Reporter`](super::Reporter)
//! before the application, to listed peers only), or the application's own
//! routing ([`status_handler`], [`status_resource`]), behind its own
//! middleware.

use std::net::{IpAddr, SocketAddr};

use actix::prelude::*;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, Resource, web};

use super::allow::Allowlist;
use super::status::StatusFormat;
use crate::daemon::DaemonActor;
use crate::error::{Error, Result};
use crate::messages::Status;

/// The built-in status endpoint: its path and the peers it answers.
///
/// Given to [`Server::status`](super::Server::status) (or
/// [`Reporter::status`](super::Reporter::status)), it is answered by the
/// [`Reporter`](super::Reporter) middleware, **before** any middleware or
/// route of the application: the application's authentication does not
/// apply. So it answers only the peers on its allowlist, by default the
/// loopback addresses `127.0.0.1` and `::1`. To protect the status page
/// with the application's own middleware instead, mount
/// [`status_resource`] (or [`status_handler`]) in the application and
/// give the server no `StatusEndpoint`.
///
/// - **The peer** is the TCP peer of the connection
///   (`ServiceRequest::peer_addr`), never a header: anyone can send
///   `X-Forwarded-For: 127.0.0.1`. A request with no TCP peer (a Unix
///   socket) is refused.
/// - **Proxied requests are refused**: a request that carries `Forwarded`,
///   `X-Forwarded-For` or `X-Real-IP` came through a proxy, whose address
///   is the TCP peer, so the allowlist cannot judge it. This only ever
///   refuses more. A proxy that adds none of them is not detected: behind a
///   reverse proxy on the same host, do not proxy the status path.
/// - **A refused request goes to the application**, as if the endpoint did
///   not exist (usually the application's 404): a peer that is not listed
///   cannot tell it is there. The refusal is logged at debug level.
///
/// Built with [`StatusEndpoint::builder`]; every mistake is an [`Error`]
/// from [`build`](StatusEndpointBuilder::build), so build it before
/// [`Daemon::run`](crate::Daemon::run), in the launching process.
///
/// ```
/// use actix_daemon::web::StatusEndpoint;
///
/// // Loopback only (the default).
/// let local = StatusEndpoint::new("/status")?;
/// // The monitoring network and one host.
/// let monitored = StatusEndpoint::builder("/status")
///     .allow("10.20.0.0/16")
///     .allow("2001:db8::7")
///     .build()?;
/// assert!(StatusEndpoint::new("status").is_err());
/// assert!(StatusEndpoint::builder("/status").allow("10.0.0.1/8").build().is_err());
/// # let _ = (local, monitored);
/// # Ok::<(), actix_daemon::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct StatusEndpoint {
    path: String,
    allow: Allowlist,
}

/// Builds a [`StatusEndpoint`]; see [`StatusEndpoint::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct StatusEndpointBuilder {
    path: String,
    allow: Vec<String>,
}

/// Whether the built-in endpoint answers a request, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The peer is listed.
    Admitted,
    /// No TCP peer (not a TCP connection).
    NoPeer,
    /// The peer is not listed.
    NotListed(IpAddr),
    /// The request says it was forwarded by a proxy.
    Forwarded(IpAddr),
}

/// Headers that say a proxy forwarded the request.
const FORWARDED: [HeaderName; 3] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-real-ip"),
];

impl StatusEndpoint {
    /// The endpoint at `path` for loopback peers only (`127.0.0.1`, `::1`).
    ///
    /// # Errors
    ///
    /// [`Error::StatusPath`] if `path` is not absolute (see
    /// [`StatusEndpointBuilder::build`]).
    pub fn new(path: impl Into<String>) -> Result<StatusEndpoint> {
        StatusEndpoint::builder(path).build()
    }

    /// A builder for the endpoint at `path` (`GET` and `HEAD`, the exact
    /// path: no prefix match).
    pub fn builder(path: impl Into<String>) -> StatusEndpointBuilder {
        StatusEndpointBuilder {
            path: path.into(),
            allow: Vec::new(),
        }
    }

    /// The endpoint's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the endpoint answers a request from `peer` with `headers`.
    pub(crate) fn admits(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Admission {
        let Some(peer) = peer.map(|p| p.ip()) else {
            return Admission::NoPeer;
        };
        if !self.allow.contains(peer) {
            Admission::NotListed(peer)
        } else if FORWARDED.iter().any(|h| headers.contains_key(h)) {
            Admission::Forwarded(peer)
        } else {
            Admission::Admitted
        }
    }
}

impl StatusEndpointBuilder {
    /// Answers peers matching `entry`: an address (`10.1.2.3`, `fd00::1`)
    /// or a CIDR prefix (`10.0.0.0/8`, `fd00::/8`, `0.0.0.0/0` for every
    /// IPv4 peer). Call it once per entry; the first call replaces the
    /// default (loopback only). IPv4-mapped IPv6 addresses are matched as
    /// the IPv4 address they carry; `::/0` covers IPv6 peers only.
    pub fn allow(mut self, entry: impl Into<String>) -> Self {
        self.allow.push(entry.into());
        self
    }

    /// The endpoint.
    ///
    /// # Errors
    ///
    /// - [`Error::StatusPath`]: the path does not start with `/`, or holds
    ///   a character other than visible ASCII, or a `?` or `#` (the path
    ///   is compared with the request's path exactly, as it came, so it
    ///   would never match).
    /// - [`Error::StatusAllow`]: an entry is neither an IP address nor a
    ///   CIDR prefix, or a prefix has host bits set (`10.0.0.1/8`: a typo
    ///   for `10.0.0.1` or for `10.0.0.0/8`?).
    pub fn build(self) -> Result<StatusEndpoint> {
        check_path(&self.path).map_err(|reason| Error::StatusPath {
            path: self.path.clone(),
            reason,
        })?;
        let allow = if self.allow.is_empty() {
            Allowlist::loopback()
        } else {
            Allowlist::of(&self.allow)
                .map_err(|(entry, reason)| Error::StatusAllow { entry, reason })?
        };
        Ok(StatusEndpoint {
            path: self.path,
            allow,
        })
    }
}

/// An absolute request path of visible ASCII, without query or fragment.
fn check_path(path: &str) -> std::result::Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("not an absolute path: it must start with /");
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("only visible ASCII characters (percent-encode the others)");
    }
    if path.contains(['?', '#']) {
        return Err("a path has no query (?) or fragment (#)");
    }
    Ok(())
}

/// The pool's status in the format the query asks for (see
/// [`StatusFormat`]), from the worker's [`DaemonActor`] at `addr`.
pub(super) async fn respond(addr: &Addr<DaemonActor>, query: &str) -> HttpResponse {
    let format = StatusFormat::from_query(query);
    match addr.send(Status).await {
        Ok(report) => HttpResponse::Ok()
            .insert_header((
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            ))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(format.render(&report)),
        Err(err) => {
            HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE).body(format!("no status: {err}\n"))
        }
    }
}

/// The pool's status as an actix-web handler, for the application to route
/// itself, behind its own middleware: the same report, formats and query
/// (`?json`, `?prometheus`; see [`StatusFormat`]) as the built-in
/// endpoint, with no allowlist of its own: whatever wraps the route
/// decides who sees it. [`status_resource`] routes it for `GET` and
/// `HEAD`.
///
/// ```no_run
/// use actix_web::{App, web};
///
/// let app = App::new().route("/admin/status", web::get().to(actix_daemon::web::status_handler));
/// # let _ = app;
/// ```
pub async fn status_handler(req: HttpRequest) -> HttpResponse {
    respond(&DaemonActor::from_registry(), req.query_string()).await
}

/// A resource at `path` that answers `GET` and `HEAD` with
/// [`status_handler`], to register in the application, typically in a
/// scope wrapped by its authentication middleware. Then give the
/// [`Server`](super::Server) no [`StatusEndpoint`].
///
/// ```no_run
/// use actix_web::{App, web, middleware::from_fn};
/// # async fn require_admin(
/// #     req: actix_web::dev::ServiceRequest,
/// #     next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
/// # ) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
/// #     next.call(req).await
/// # }
///
/// let app = App::new().service(
///     web::scope("/admin")
///         .wrap(from_fn(require_admin))
///         .service(actix_daemon::web::status_resource("/status")),
/// );
/// # let _ = app;
/// ```
pub fn status_resource(path: &str) -> Resource {
    web::resource(path)
        .route(web::get().to(status_handler))
        .route(web::head().to(status_handler))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_paths_are_typed_errors() {
        for path in [
            "",
            "status",
            "status/",
            " /status",
            "/st atus",
            "/status?json",
            "/a#b",
            "/é",
        ] {
            match StatusEndpoint::new(path) {
                Err(Error::StatusPath { path: p, .. }) => assert_eq!(p, path),
                other => panic!("{path:?}: {other:?}"),
            }
        }
        for path in ["/", "/status", "/-/status.txt", "/%C3%A9"] {
            assert_eq!(StatusEndpoint::new(path).unwrap().path(), path);
        }
    }

    #[test]
    fn bad_entries_are_typed_errors_naming_the_entry() {
        let err = StatusEndpoint::builder("/status")
            .allow("10.0.0.0/8")
            .allow("10.0.0.300")
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, Error::StatusAllow { entry, .. } if entry == "10.0.0.300"),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"10.0.0.300\""), "{err}");
        // A path error comes first, whatever the entries.
        let err = StatusEndpoint::builder("x")
            .allow("bad")
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::StatusPath { .. }), "{err:?}");
    }

    #[test]
    fn admission_uses_the_tcp_peer_and_refuses_forwarded_requests() {
        let local = StatusEndpoint::new("/status").unwrap();
        let listed = StatusEndpoint::builder("/status")
            .allow("127.0.0.2")
            .build()
            .unwrap();
        let peer = |ip: &str| Some(SocketAddr::new(ip.parse().unwrap(), 40000));
        let none = HeaderMap::new();
        let with = |name: &'static str, value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
            h
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // (endpoint, peer, headers, admission)
        let table = [
            (&local, peer("127.0.0.1"), none.clone(), Admission::Admitted),
            (&local, peer("::1"), none.clone(), Admission::Admitted),
            (
                &local,
                peer("::ffff:127.0.0.1"),
                none.clone(),
                Admission::Admitted,
            ),
            (
                &local,
                peer("127.0.0.2"),
                none.clone(),
                Admission::NotListed(ip("127.0.0.2")),
            ),
            (
                &listed,
                peer("127.0.0.1"),
                none.clone(),
                Admission::NotListed(ip("127.0.0.1")),
            ),
            (
                &listed,
                peer("127.0.0.2"),
                none.clone(),
                Admission::Admitted,
            ),
            // No TCP peer (a Unix socket): refused.
            (&local, None, none.clone(), Admission::NoPeer),
            // A header never admits: the unlisted peer stays unlisted ...
            (
                &local,
                peer("127.0.0.2"),
                with("x-forwarded-for", "127.0.0.1"),
                Admission::NotListed(ip("127.0.0.2")),
            ),
            // ... and a listed peer that forwards for someone is refused.
            (
                &local,
                peer("127.0.0.1"),
                with("x-forwarded-for", "203.0.113.1"),
                Admission::Forwarded(ip("127.0.0.1")),
            ),
            (
                &local,
                peer("127.0.0.1"),
                with("forwarded", "for=203.0.113.1"),
                Admission::Forwarded(ip("127.0.0.1")),
            ),
            (
                &local,
                peer("127.0.0.1"),
                with("x-real-ip", "203.0.113.1"),
                Admission::Forwarded(ip("127.0.0.1")),
            ),
        ];
        for (endpoint, peer, headers, want) in table {
            assert_eq!(
                endpoint.admits(peer, &headers),
                want,
                "{peer:?} {headers:?}"
            );
        }
    }

    /// The Reporter answers its endpoint to listed TCP peers only; every
    /// other request reaches the application.
    #[actix_rt::test]
    async fn the_reporter_answers_listed_peers_and_passes_the_rest_on() {
        use actix_web::{App, test};
        let (tracker, _notes) = super::super::tests::tracker(None);
        let reporter = super::super::Reporter {
            tracker: std::sync::Arc::new(tracker),
            status: Some(std::sync::Arc::new(
                StatusEndpoint::builder("/status")
                    .allow("10.0.0.0/8")
                    .build()
                    .unwrap(),
            )),
        };
        let app = test::init_service(
            App::new()
                .wrap(reporter)
                .route("/", web::get().to(|| async { "app" })),
        )
        .await;
        let ask = |peer: Option<&str>, method: actix_web::http::Method, header: Option<&str>| {
            let mut req = test::TestRequest::default().method(method).uri("/status");
            if let Some(peer) = peer {
                req = req.peer_addr(peer.parse().unwrap());
            }
            if let Some(value) = header {
                req = req.insert_header(("x-forwarded-for", value));
            }
            req.to_request()
        };
        use actix_web::http::Method;
        for (peer, method, header, want) in [
            (Some("10.1.2.3:5000"), Method::GET, None, 200),
            (Some("10.1.2.3:5000"), Method::HEAD, None, 200),
            (Some("[::ffff:10.1.2.3]:5000"), Method::GET, None, 200),
            (Some("10.1.2.3:5000"), Method::POST, None, 404),
            (Some("11.1.2.3:5000"), Method::GET, None, 404),
            (Some("11.1.2.3:5000"), Method::GET, Some("10.1.2.3"), 404),
            (Some("10.1.2.3:5000"), Method::GET, Some("203.0.113.1"), 404),
            (None, Method::GET, None, 404),
        ] {
            let res = test::call_service(&app, ask(peer, method.clone(), header)).await;
            let status = res.status().as_u16();
            let body = test::read_body(res).await;
            assert_eq!(status, want, "{peer:?} {method} {header:?}: {body:?}");
            if want == 200 && method == Method::GET {
                assert_eq!(body, "status page");
            }
        }
    }

    /// The handler mounted in the application renders the report in the
    /// format the query asks for, as the built-in endpoint does.
    #[actix_rt::test]
    async fn the_mounted_handler_serves_every_format() {
        use actix_web::{App, test};
        let app = test::init_service(
            App::new().service(web::scope("/admin").service(status_resource("/status"))),
        )
        .await;
        for (query, content_type) in [
            ("", "text/plain; charset=utf-8"),
            ("?json", "application/json"),
            ("?prometheus", "text/plain; version=0.0.4; charset=utf-8"),
        ] {
            let req = test::TestRequest::get()
                .uri(&format!("/admin/status{query}"))
                .to_request();
            let res = test::call_service(&app, req).await;
            assert_eq!(res.status(), StatusCode::OK, "{query}");
            assert_eq!(
                res.headers().get(header::CONTENT_TYPE).unwrap(),
                content_type,
                "{query}"
            );
            assert_eq!(
                res.headers().get(header::CACHE_CONTROL).unwrap(),
                "no-store"
            );
            let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
            match query {
                "?json" => {
                    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                    assert_eq!(json["alias"], "Daemon", "{body}");
                }
                "?prometheus" => assert!(body.contains("actix_daemon_requests_total 0"), "{body}"),
                _ => assert!(body.contains("Daemon"), "{body}"),
            }
        }
        let head = test::TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/admin/status")
            .to_request();
        assert_eq!(
            test::call_service(&app, head).await.status(),
            StatusCode::OK
        );
        let post = test::TestRequest::post().uri("/admin/status").to_request();
        assert_eq!(
            test::call_service(&app, post).await.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
