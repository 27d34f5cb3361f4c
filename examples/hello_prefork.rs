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
//! Flags: `--listen ADDR` (default `127.0.0.1:8080`; a bare port as the
//! first argument means `127.0.0.1:<port>`, and port 0 picks a free one),
//! `--start-children N`, `--min-spare N`, `--max-spare N`, `--max-children
//! N`, `--requests N` (recycle a worker after N requests; 0: never),
//! `--requests-jitter N`, `--threads N` (actix-web threads per worker,
//! default 1), `--shutdown-timeout SECS`, `--keep-alive SECS`,
//! `--foreground` (stay attached; the default is to detach), `--logfile PATH`
//! (default `hello_prefork.log` in the current directory). A bad flag or
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
use std::time::Duration;

use actix_daemon::Daemon;
use actix_web::{App, HttpRequest, HttpResponse, web};

const NAME: &str = "hello_prefork";

const USAGE: &str = "usage: hello_prefork [PORT] [--listen ADDR] [--start-children N] \
[--min-spare N] [--max-spare N] [--max-children N] [--requests N] [--requests-jitter N] \
[--threads N] [--shutdown-timeout SECS] [--keep-alive SECS] [--foreground] [--logfile PATH]";

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
            "--logfile" => args.logfile = cwd.join(text(&arg)?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn app() -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .route("/", web::get().to(|| async { "Hello, world!\n" }))
        .route(
            "/pid",
            web::get().to(|| async { format!("{}\n", std::process::id()) }),
        )
        .route("/slow", web::get().to(slow))
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
        let mut server = actix_daemon::web::Server::new(app)
            .threads(threads)
            .status_path("/status");
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
