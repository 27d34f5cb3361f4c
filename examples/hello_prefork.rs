//! Hello world in actix-web, served by a pre-forked pool of processes, with
//! the pool's status page.
//!
//! ```text
//! cargo run --example hello_prefork                           # 127.0.0.1:8080, detached
//! curl http://127.0.0.1:8080/                                  # Hello, world!
//! curl http://127.0.0.1:8080/status                            # the pool, for people
//! curl 'http://127.0.0.1:8080/status?json'                     # ... for programs
//! curl 'http://127.0.0.1:8080/status?prometheus'               # ... for Prometheus
//! curl 'http://127.0.0.1:8080/slow?ms=3000' &                  # a long request (`l`)
//! kill -HUP $(pgrep -x hello_prefork)                          # reopen hello_prefork.log
//! kill -USR1 $(pgrep -x hello_prefork)                         # replace every worker
//! kill -TTIN $(pgrep -x hello_prefork)                         # one more spare (TTOU: one fewer)
//! kill -TERM $(pgrep -x hello_prefork)                         # graceful shutdown
//! ```
//!
//! Routes: `GET /` answers `Hello, world!`; `GET /pid` the serving worker's
//! pid; `GET /slow?ms=N` marks its request long (`l` on the status page) and
//! answers after N milliseconds (at most 60,000); `GET /status` the pool's
//! status (`?json`, `?prometheus`), served by whichever worker gets it.
//!
//! The status page: `--status-path PATH` (default `/status`; `off`: no
//! status page, the path is the application's like any other). By default
//! the built-in endpoint answers loopback peers only (127.0.0.1 and ::1);
//! `--status-allow ADDR[,ADDR...]` lists the peers it answers instead
//! (addresses and CIDR prefixes: `10.0.0.0/8,::1`). `--status-token TOKEN`
//! mounts the page inside the application instead, in a scope whose
//! middleware answers 401 unless the request carries
//! `Authorization: Bearer TOKEN`: the built-in endpoint is then off, and
//! any peer with the token gets the page.
//!
//! ```text
//! hello_prefork --status-allow 10.0.0.0/8,127.0.0.1
//! hello_prefork --status-token s3cret && curl -H 'Authorization: Bearer s3cret' http://127.0.0.1:8080/status
//! ```
//!
//! Flags: `--listen ADDR` (default `127.0.0.1:8080`; a bare port as the
//! first argument means `127.0.0.1:<port>`, and port 0 picks a free one),
//! `--start-children N`, `--min-spare N`, `--max-spare N`, `--max-children
//! N`, `--requests N` (recycle a worker after N requests; 0: never),
//! `--requests-jitter N`, `--threads N` (actix-web threads per worker,
//! default 1), `--shutdown-timeout SECS`, `--keep-alive SECS`,
//! `--foreground` (stay attached; the default is to detach), `--logfile PATH`
//! (default `hello_prefork.log` in the current directory), `--user NAME`
//! (run the workers as that user; needs root). A bad flag or
//! value prints an error and exits with status 2 before anything starts.
//! Under systemd it takes its listener from socket activation
//! (`LISTEN_FDS`) if there is one.
//!
//! Stdout protocol: exactly one line `PORT=<n>` once the listener is bound,
//! before detaching. The launching process exits 0 once the initial pool is
//! up (or 1 with the start-up error on stderr).

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_daemon::Daemon;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpRequest, HttpResponse, web};

const NAME: &str = "hello_prefork";

const USAGE: &str = "usage: hello_prefork [PORT] [--listen ADDR] [--start-children N] \
[--min-spare N] [--max-spare N] [--max-children N] [--requests N] [--requests-jitter N] \
[--threads N] [--shutdown-timeout SECS] [--keep-alive SECS] [--foreground] [--logfile PATH] \
[--status-path PATH|off] [--status-allow ADDR[,ADDR...]] [--status-token TOKEN] [--user NAME]";

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    start_children: Option<usize>,
    min_spare: Option<usize>,
    max_spare: Option<usize>,
    max_children: Option<usize>,
    requests: Option<u64>,
    requests_jitter: u64,
    threads: usize,
    shutdown_timeout: Option<u64>,
    keep_alive: Option<u64>,
    foreground: bool,
    logfile: PathBuf,
    /// `None`: `--status-path off`.
    status_path: Option<String>,
    status_allow: Option<Vec<String>>,
    status_token: Option<String>,
    user: Option<String>,
}

fn parse() -> Result<Args, String> {
    let cwd = std::env::current_dir().map_err(|err| format!("current directory: {err}"))?;
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        start_children: None,
        min_spare: None,
        max_spare: None,
        max_children: None,
        requests: None,
        requests_jitter: 0,
        threads: 1,
        shutdown_timeout: None,
        keep_alive: None,
        foreground: false,
        logfile: cwd.join(format!("{NAME}.log")),
        status_path: Some("/status".into()),
        status_allow: None,
        status_token: None,
        user: None,
    };
    let mut it = std::env::args().skip(1).peekable();
    // A bare port first: 127.0.0.1:<port> (what the test harness passes).
    if let Some(port) = it.next_if(|a| !a.starts_with('-')) {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{port:?} is not a port number"))?;
        args.listen.set_port(port);
    }
    while let Some(arg) = it.next() {
        let mut text = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |flag: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: {v:?} is not a whole number"))
        };
        match arg.as_str() {
            "--listen" => {
                let v = text(&arg)?;
                args.listen = v.parse().map_err(|_| {
                    format!("--listen: {v:?} is not an address like 127.0.0.1:8080")
                })?;
            }
            "--start-children" => args.start_children = Some(number(&arg, text(&arg)?)? as usize),
            "--min-spare" => args.min_spare = Some(number(&arg, text(&arg)?)? as usize),
            "--max-spare" => args.max_spare = Some(number(&arg, text(&arg)?)? as usize),
            "--max-children" => args.max_children = Some(number(&arg, text(&arg)?)? as usize),
            "--requests" => args.requests = Some(number(&arg, text(&arg)?)?).filter(|&n| n > 0),
            "--requests-jitter" => args.requests_jitter = number(&arg, text(&arg)?)?,
            "--threads" => {
                args.threads = number(&arg, text(&arg)?)? as usize;
                if args.threads == 0 {
                    return Err("--threads: at least 1".into());
                }
            }
            "--shutdown-timeout" => args.shutdown_timeout = Some(number(&arg, text(&arg)?)?),
            "--keep-alive" => args.keep_alive = Some(number(&arg, text(&arg)?)?),
            "--foreground" => args.foreground = true,
            "--user" => args.user = Some(text(&arg)?),
            "--logfile" => args.logfile = cwd.join(text(&arg)?),
            "--status-path" => args.status_path = Some(text(&arg)?).filter(|p| p != "off"),
            "--status-allow" => {
                let list = text(&arg)?;
                args.status_allow = Some(list.split(',').map(|a| a.trim().to_owned()).collect());
            }
            "--status-token" => {
                let token = text(&arg)?;
                // A header value's token68: nothing that needs quoting.
                let ok = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
                if token.is_empty() || !token.chars().all(ok) {
                    return Err("--status-token: letters, digits and -._~+/= only".into());
                }
                args.status_token = Some(token);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match (&args.status_path, &args.status_allow, &args.status_token) {
        (None, Some(_), _) => return Err("--status-allow: the status page is off".into()),
        (None, _, Some(_)) => return Err("--status-token: the status page is off".into()),
        (_, Some(_), Some(_)) => {
            return Err(
                "--status-allow restricts the built-in endpoint, --status-token mounts the \
                 page in the application instead: give one of them"
                    .into(),
            );
        }
        _ => {}
    }
    Ok(args)
}

/// Where the status page is served.
#[derive(Clone)]
enum StatusPage {
    Off,
    /// Built in, before the application, for the peers it lists.
    BuiltIn(actix_daemon::web::StatusEndpoint),
    /// In the application, at this path, behind a bearer token check.
    Mounted {
        path: String,
        token: Arc<str>,
    },
}

/// The status page the flags ask for; a bad path or address is an error
/// before anything starts.
fn status_page(args: &Args) -> Result<StatusPage, actix_daemon::Error> {
    let Some(path) = &args.status_path else {
        return Ok(StatusPage::Off);
    };
    let mut builder = actix_daemon::web::StatusEndpoint::builder(path.clone());
    for entry in args.status_allow.iter().flatten() {
        builder = builder.allow(entry.clone());
    }
    // Built (and so checked) even when mounted: the same path rules.
    let endpoint = builder.build()?;
    Ok(match &args.status_token {
        Some(token) => StatusPage::Mounted {
            path: path.clone(),
            token: Arc::from(token.as_str()),
        },
        None => StatusPage::BuiltIn(endpoint),
    })
}

fn app(
    status: StatusPage,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let mounted = match &status {
        StatusPage::Mounted { path, token } => Some((path.clone(), token.clone())),
        _ => None,
    };
    App::new()
        .configure(move |cfg| {
            if let Some((path, token)) = mounted {
                // The application's own middleware guards the page.
                cfg.service(
                    web::scope(&path)
                        .wrap(from_fn(move |req, next| {
                            require_token(token.clone(), req, next)
                        }))
                        .service(actix_daemon::web::status_resource("")),
                );
            }
        })
        .route("/", web::get().to(|| async { "Hello, world!\n" }))
        .route(
            "/pid",
            web::get().to(|| async { format!("{}\n", std::process::id()) }),
        )
        .route("/slow", web::get().to(slow))
}

/// The application's middleware of `--status-token`: 401 unless the
/// request carries `Authorization: Bearer <token>`.
async fn require_token(
    token: Arc<str>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let response = HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
        .finish();
    Ok(req.into_response(response))
}

/// Compares without stopping at the first difference, so that the time
/// taken does not tell how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A long request: `l` on the status page while it runs.
async fn slow(req: HttpRequest) -> HttpResponse {
    actix_daemon::web::mark_long(&req);
    let ms: u64 =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("ms").and_then(|v| v.parse().ok()))
            .unwrap_or(1000)
            .min(60_000);
    actix_rt::time::sleep(Duration::from_millis(ms)).await;
    HttpResponse::Ok().body(format!("slept {ms} ms\n"))
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("{NAME}: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut builder = Daemon::builder()
        .alias(NAME)
        .detach(!args.foreground)
        .logfile(&args.logfile);
    // Always a pre-forked pool: 2 workers to start unless told otherwise.
    let start = args
        .start_children
        .unwrap_or_else(|| args.max_children.map_or(2, |max| max.min(2)));
    builder = builder.start_children(start);
    if let Some(n) = args.min_spare {
        builder = builder.min_spare(n);
    }
    if let Some(n) = args.max_spare {
        builder = builder.max_spare(n);
    }
    if let Some(n) = args.max_children {
        builder = builder.max_children(n);
    }
    if let Some(n) = args.requests {
        builder = builder.requests(n);
    }
    if let Some(user) = &args.user {
        builder = builder.user(user);
    }
    if args.requests_jitter > 0 {
        builder = builder.requests_jitter(args.requests_jitter);
    }
    if let Some(secs) = args.shutdown_timeout {
        builder = builder.shutdown_timeout(Duration::from_secs(secs));
    }
    let daemon = match builder.build() {
        Ok(daemon) => daemon,
        Err(err) => {
            eprintln!("{NAME}: {err}");
            return ExitCode::from(2);
        }
    };
    let status = match status_page(&args) {
        Ok(status) => status,
        Err(err) => {
            eprintln!("{NAME}: {err}");
            return ExitCode::from(2);
        }
    };
    // systemd socket activation, else bind; once, before run: every worker
    // inherits the listener.
    let bound = match actix_daemon::listen_fds().into_iter().next() {
        Some(fd) => Ok(TcpListener::from(fd)),
        None => TcpListener::bind(args.listen),
    };
    let listener = match bound {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("{NAME}: cannot listen on {}: {err}", args.listen);
            return ExitCode::from(1);
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    println!("PORT={port}");
    let _ = std::io::stdout().flush();
    let (threads, keep_alive) = (args.threads, args.keep_alive);
    let result = daemon.run(move |process| {
        if !process.is_worker() {
            return;
        }
        let page = status.clone();
        let mut server = actix_daemon::web::Server::new(move || app(page.clone())).threads(threads);
        if let StatusPage::BuiltIn(endpoint) = &status {
            server = server.status(endpoint.clone());
        }
        if let Some(secs) = keep_alive {
            server = server.keep_alive(Duration::from_secs(secs));
        }
        // On error the worker logs it and exits with status 1.
        let _ = server.run(process, listener);
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{NAME}: {text}");
            ExitCode::from(1)
        }
    }
}
