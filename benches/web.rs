//! actix-web on a pre-forked pool against actix-web's own multi-threaded
//! server, and the cost of the scoreboard middleware per request.
//!
//! ```text
//! cargo bench --features web --bench web
//! ```
//!
//! Three servers with the same handler (`GET /` answers `Hello, world!`),
//! each started as a fresh process by re-executing this bench binary with
//! `ACTIX_DAEMON_BENCH_ROLE`:
//!
//! - `prefork-server`: an actix-daemon pre-forked pool of N worker processes
//!   (`start_children = max_children = max_spare = N`, no `requests` limit,
//!   in the foreground), each running `actix_daemon::web::Server` with one
//!   thread, the scoreboard middleware and the status endpoint.
//! - `threads-server`: one process, `HttpServer` with N worker threads.
//! - `prefork-httpserver-server`: the same pool with a plain `HttpServer`
//!   of one worker thread in each worker (an accept thread handing each
//!   connection to the worker thread), no middleware: what `web::Server`
//!   does better by accepting on the thread that serves.
//!
//! N = 2. One client, inside the bench, on one thread (a current-thread
//! tokio runtime): `CONNECTIONS` concurrent HTTP/1.1 connections to
//! 127.0.0.1, each sending `GET /` and reading the whole answer, again and
//! again, in two modes: keep-alive (one connection per client task for the
//! whole cell) and close (`Connection: close`, a new connection per
//! request). Cells run interleaved for `ROUNDS` rounds in alternating server
//! order, so that the machine's noise falls on both servers alike; each
//! cell's figure is its best round. The ratio is prefork / threads (target:
//! at least 0.95). Every cell is bounded in time and in requests; a failed
//! request is counted and reported.
//!
//! The middleware cost is measured in this process on actix-web's test
//! service: the same one-route `App` with and without
//! `actix_daemon::web::Reporter` (reporting to a `DaemonActor` outside a
//! daemon, which drops the updates), `MW_CALLS` calls each, alternating,
//! best of `MW_ROUNDS`; the difference per request is the cost (target:
//! under 1 microsecond). It includes the two `UpdateStatus` sends of each
//! request and the actor handling them on the same thread.
//!
//! Logs go to `target/bench/web-logs/`. Servers get `PR_SET_PDEATHSIG`, so
//! they go away with the bench. Besides the tables it prints, the bench
//! writes its numbers to `target/bench/web.json` (per connection mode: each
//! server's best req/s, the ratios, failed requests, server CPU per request;
//! the middleware's cost), which `cargo bench --bench processes` reads for
//! its "actix-web prefork vs threads" section.
//!
//! `ACTIX_DAEMON_BENCH_WEB_QUICK=1` runs `QUICK_ROUNDS` rounds instead of
//! `ROUNDS` (about half a minute of throughput cells instead of a minute);
//! the `processes` runner sets it.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use actix_web::{App, HttpServer, web};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which role a re-executed bench binary plays.
const ROLE_ENV: &str = "ACTIX_DAEMON_BENCH_ROLE";
/// The pid the server must have as its parent (the bench).
const PARENT_ENV: &str = "ACTIX_DAEMON_BENCH_PARENT";
/// The prefork server's log file.
const LOG_ENV: &str = "ACTIX_DAEMON_BENCH_LOG";
/// Processes (prefork) or threads (actix-web) per server.
const N: usize = 2;
/// Concurrent client connections.
const CONNECTIONS: usize = 32;
/// Duration of one cell in one round.
const CELL: Duration = Duration::from_millis(1500);
/// At most this many requests per cell and round.
const CELL_CAP: u64 = 2_000_000;
/// Rounds, alternating the order of the servers.
const ROUNDS: usize = 5;
/// Rounds with `QUICK_ENV` set (still enough for a median per round).
const QUICK_ROUNDS: usize = 3;
/// Set to `1` for `QUICK_ROUNDS`.
const QUICK_ENV: &str = "ACTIX_DAEMON_BENCH_WEB_QUICK";
/// Pause between cells.
const SETTLE: Duration = Duration::from_millis(300);
/// Client I/O timeout.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server may take to answer its first request.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a server may take to exit once told to.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Middleware calls per measurement, and measurements per variant.
const MW_CALLS: u32 = 100_000;
const MW_ROUNDS: usize = 5;

fn main() -> ExitCode {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("prefork-server") => prefork_server(),
        Ok("threads-server") => threads_server(),
        Ok("prefork-httpserver-server") => prefork_httpserver_server(),
        Ok(other) => {
            eprintln!("{ROLE_ENV}={other:?}: unknown role");
            ExitCode::from(2)
        }
        Err(_) => match bench() {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("web bench: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The application both servers run.
fn app() -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new().route("/", web::get().to(|| async { "Hello, world!\n" }))
}

// ---------------------------------------------------------------------------
// Servers.

/// Dies with the bench; binds 127.0.0.1:0 and prints `PORT=<n>`.
fn server_setup() -> io::Result<TcpListener> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
    let parent: u32 = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    if std::os::unix::process::parent_id() != parent {
        return Err(io::Error::other("the bench is gone"));
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let mut out = io::stdout().lock();
    writeln!(out, "PORT={}", listener.local_addr()?.port())?;
    out.flush()?;
    Ok(listener)
}

fn prefork_server() -> ExitCode {
    let listener = match server_setup() {
        Ok(l) => l,
        Err(err) => {
            eprintln!("prefork server: {err}");
            return ExitCode::FAILURE;
        }
    };
    let log = std::env::var_os(LOG_ENV).map(PathBuf::from);
    let mut builder = actix_daemon::Daemon::builder()
        .alias("web-bench")
        .detach(false)
        .start_children(N)
        .max_children(N)
        .min_spare(1)
        .max_spare(N);
    if let Some(log) = log {
        builder = builder.logfile(log);
    }
    let daemon = match builder.build() {
        Ok(d) => d,
        Err(err) => {
            eprintln!("prefork server: {err}");
            return ExitCode::FAILURE;
        }
    };
    let status = actix_daemon::web::StatusEndpoint::new("/status").expect("status path");
    let result = daemon.run(move |process| {
        if process.is_worker() {
            let _ = actix_daemon::web::Server::new(app)
                .threads(1)
                .status(status.clone())
                .run(process, listener);
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("prefork server: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The pool of `prefork_server` with a plain `HttpServer` in each worker
/// instead of `web::Server`: no middleware, no status, no graceful stop
/// (only `Wait` once started). What the pool does with actix-web's own
/// server, an accept thread handing connections to a worker thread.
fn prefork_httpserver_server() -> ExitCode {
    use actix::SystemService;
    let listener = match server_setup() {
        Ok(l) => l,
        Err(err) => {
            eprintln!("prefork httpserver server: {err}");
            return ExitCode::FAILURE;
        }
    };
    let log = std::env::var_os(LOG_ENV).map(PathBuf::from);
    let mut builder = actix_daemon::Daemon::builder()
        .alias("web-bench")
        .detach(false)
        .start_children(N)
        .max_children(N)
        .min_spare(1)
        .max_spare(N);
    if let Some(log) = log {
        builder = builder.logfile(log);
    }
    let daemon = match builder.build() {
        Ok(d) => d,
        Err(err) => {
            eprintln!("prefork httpserver server: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = daemon.run(move |process| {
        if process.is_worker() {
            match HttpServer::new(app)
                .workers(1)
                .disable_signals()
                .listen(listener)
            {
                Ok(server) => {
                    actix_rt::spawn(server.run());
                    actix_daemon::DaemonActor::from_registry()
                        .do_send(actix_daemon::UpdateStatus::Wait);
                }
                Err(err) => eprintln!("prefork httpserver server: {err}"),
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("prefork httpserver server: {err}");
            ExitCode::FAILURE
        }
    }
}

fn threads_server() -> ExitCode {
    let listener = match server_setup() {
        Ok(l) => l,
        Err(err) => {
            eprintln!("threads server: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = actix_rt::System::new().block_on(async move {
        HttpServer::new(app)
            .workers(N)
            .listen(listener)?
            .run()
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("threads server: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A server process, stopped (then killed) on drop.
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(
        role: &'static str,
        name: &'static str,
        logs: &std::path::Path,
    ) -> Result<Server, String> {
        let exe = std::env::current_exe().map_err(|err| format!("current_exe: {err}"))?;
        let stderr = std::fs::File::create(logs.join(format!("{role}.stderr")))
            .map_err(|err| format!("log: {err}"))?;
        let mut child = Command::new(exe)
            .env(ROLE_ENV, role)
            .env(PARENT_ENV, std::process::id().to_string())
            .env(LOG_ENV, logs.join(format!("{role}.log")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|err| format!("spawn {role}: {err}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START_DEADLINE).unwrap_or_default();
        let port: u16 = match line
            .trim()
            .strip_prefix("PORT=")
            .and_then(|p| p.parse().ok())
        {
            Some(port) => port,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{role}: no PORT= line (got {line:?})"));
            }
        };
        let server = Server {
            name,
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        };
        let end = Instant::now() + START_DEADLINE;
        while blocking_get(server.addr, "/").is_err() {
            if Instant::now() > end {
                return Err(format!("{role}: no answer on {}", server.addr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let end = Instant::now() + STOP_DEADLINE;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("{} did not stop in time: killed", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a new connection, blocking (for readiness).
fn blocking_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if answer.starts_with("HTTP/1.1 200") {
        Ok(answer)
    } else {
        Err(io::Error::other(format!("answer {answer:?}")))
    }
}

// ---------------------------------------------------------------------------
// The client.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    KeepAlive,
    Close,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keep-alive",
            Mode::Close => "close",
        }
    }
    fn request(self) -> &'static [u8] {
        match self {
            Mode::KeepAlive => b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            Mode::Close => b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ok: u64,
    failed: u64,
}

/// Reads one response on `stream` (status 200, a `content-length` body).
async fn read_response(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(io::Error::other)?;
            if !head.starts_with("HTTP/1.1 200") {
                return Err(io::Error::other(format!("status line {head:?}")));
            }
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .ok_or_else(|| io::Error::other("no content-length"))?;
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn client_task(addr: SocketAddr, mode: Mode, until: Instant, cap: u64) -> Tally {
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(1024);
    let mut conn: Option<tokio::net::TcpStream> = None;
    while Instant::now() < until && tally.ok + tally.failed < cap {
        let one = async {
            let stream = match conn.as_mut() {
                Some(stream) => stream,
                None => {
                    let stream = tokio::net::TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    conn.insert(stream)
                }
            };
            stream.write_all(mode.request()).await?;
            read_response(stream, &mut buf).await
        };
        match tokio::time::timeout(IO_TIMEOUT, one).await {
            Ok(Ok(())) => tally.ok += 1,
            _ => {
                tally.failed += 1;
                conn = None;
            }
        }
        if mode == Mode::Close {
            conn = None;
        }
    }
    tally
}

/// Drives `addr` for one cell: requests per second and failures.
fn drive(addr: SocketAddr, mode: Mode) -> (f64, u64, u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let local = tokio::task::LocalSet::new();
    let start = Instant::now();
    let until = start + CELL;
    let cap = CELL_CAP / CONNECTIONS as u64;
    let tallies = local.block_on(&runtime, async move {
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|_| tokio::task::spawn_local(client_task(addr, mode, until, cap)))
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.push(task.await.unwrap_or_default());
        }
        all
    });
    let elapsed = start.elapsed().as_secs_f64();
    let ok: u64 = tallies.iter().map(|t| t.ok).sum();
    let failed: u64 = tallies.iter().map(|t| t.failed).sum();
    (ok as f64 / elapsed, ok, failed)
}

// ---------------------------------------------------------------------------
// The middleware's cost.

/// Nanoseconds per request through the test service, best of `MW_ROUNDS`:
/// (without the middleware, with it).
fn middleware_cost() -> (f64, f64) {
    use actix_web::test;
    actix_rt::System::new().block_on(async {
        let config = actix_daemon::Daemon::builder()
            .start_children(1)
            .build()
            .expect("config")
            .config()
            .clone();
        let reporter = actix_daemon::web::Reporter::new(&config);
        // Reporting starts once the server would be listening.
        reporter.ready();
        let plain = test::init_service(app()).await;
        let wrapped = test::init_service(app().wrap(reporter)).await;
        let mut best = (f64::MAX, f64::MAX);
        for _ in 0..MW_ROUNDS {
            let start = Instant::now();
            for _ in 0..MW_CALLS {
                let res =
                    test::call_service(&plain, test::TestRequest::get().uri("/").to_request())
                        .await;
                assert!(res.status().is_success());
            }
            best.0 = best
                .0
                .min(start.elapsed().as_nanos() as f64 / f64::from(MW_CALLS));
            let start = Instant::now();
            for _ in 0..MW_CALLS {
                let res =
                    test::call_service(&wrapped, test::TestRequest::get().uri("/").to_request())
                        .await;
                assert!(res.status().is_success());
            }
            best.1 = best
                .1
                .min(start.elapsed().as_nanos() as f64 / f64::from(MW_CALLS));
            // Let the DaemonActor drain its mailbox between rounds.
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        best
    })
}

/// CPU seconds (user + system) of `pid`, of its children named `*-spawner`,
/// and of its other children: (process, spawner, workers).
fn cpu_seconds(pid: i32) -> (f64, f64, f64) {
    let ticks = procfs::ticks_per_second() as f64;
    let cpu = |s: &procfs::process::Stat| (s.utime + s.stime) as f64 / ticks;
    let own = procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .map(|s| cpu(&s))
        .unwrap_or(0.0);
    let (mut spawner, mut workers) = (0.0, 0.0);
    if let Ok(all) = procfs::process::all_processes() {
        for stat in all.flatten().filter_map(|p| p.stat().ok()) {
            if stat.ppid == pid {
                if stat.comm.ends_with("-spawner") {
                    spawner += cpu(&stat);
                } else {
                    workers += cpu(&stat);
                }
            }
        }
    }
    (own, spawner, workers)
}

// ---------------------------------------------------------------------------

fn bench() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|err| format!("current_exe: {err}"))?;
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let logs = target.join("bench").join("web-logs");
    std::fs::create_dir_all(&logs).map_err(|err| format!("{}: {err}", logs.display()))?;

    let quick = std::env::var(QUICK_ENV).is_ok_and(|v| v == "1");
    let rounds = if quick { QUICK_ROUNDS } else { ROUNDS };
    println!("middleware: {MW_ROUNDS} rounds of {MW_CALLS} calls on actix-web's test service");
    let (plain, wrapped) = middleware_cost();
    let cost = wrapped - plain;

    // servers[0] is the reference; the others are compared with it.
    let servers = [
        Server::start("threads-server", "actix-web", &logs)?,
        Server::start("prefork-server", "prefork", &logs)?,
        Server::start("prefork-httpserver-server", "HttpServer", &logs)?,
    ];
    let k = servers.len();
    println!(
        "throughput: N = {N}; {CONNECTIONS} connections from one client thread; {rounds} rounds x {:.1} s per cell{}",
        CELL.as_secs_f64(),
        if quick { " (quick)" } else { "" }
    );
    let modes = [Mode::KeepAlive, Mode::Close];
    // best[mode][server]: best requests/s; ratios[mode][server]: server /
    // reference in each round (cells of a round are adjacent in time).
    let mut best = vec![vec![0.0f64; k]; modes.len()];
    let mut ratios = vec![vec![Vec::new(); k]; modes.len()];
    // cpu[mode][server]: (main process, its children, requests)
    let mut cpu = vec![vec![(0.0f64, 0.0f64, 0u64); k]; modes.len()];
    let mut failed = vec![0u64; modes.len()];
    for round in 0..rounds {
        for (m, &mode) in modes.iter().enumerate() {
            let mut rps_of = vec![0.0; k];
            // A different order every round.
            for i in 0..k {
                let s = (i + round) % k;
                let server = &servers[s];
                let pid = server.child.id() as i32;
                let before = cpu_seconds(pid);
                let (rps, ok, bad) = drive(server.addr, mode);
                let after = cpu_seconds(pid);
                let c = &mut cpu[m][s];
                c.0 += after.0 - before.0;
                c.1 += after.2 - before.2;
                c.2 += ok;
                eprintln!(
                    "  round {round} {:<10} {:<9} {rps:>9.0} req/s, {bad} failed",
                    mode.name(),
                    server.name
                );
                rps_of[s] = rps;
                best[m][s] = best[m][s].max(rps);
                failed[m] += bad;
                std::thread::sleep(SETTLE);
            }
            for s in 1..k {
                ratios[m][s].push(rps_of[s] / rps_of[0]);
            }
        }
    }
    let status = blocking_get(servers[1].addr, "/status").unwrap_or_default();
    drop(servers);

    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!();
    println!(
        "| connection | actix-web, {N} threads | prefork, {N} processes x 1 thread | ratio of best | median ratio per round | pool of plain HttpServers | its median ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut worst = f64::MAX;
    for (m, mode) in modes.iter().enumerate() {
        let (t, p, plain) = (best[m][0], best[m][1], best[m][2]);
        let med = median(&ratios[m][1]);
        worst = worst.min(p / t).min(med);
        println!(
            "| {} | {t:.0} req/s | {p:.0} req/s | {:.3} | {med:.3} | {plain:.0} req/s | {:.3} |",
            mode.name(),
            p / t,
            median(&ratios[m][2]),
        );
    }
    let failed_total: u64 = failed.iter().sum();
    println!("failed requests: {failed_total}");
    println!();
    println!(
        "middleware: {plain:.0} ns per request without, {wrapped:.0} ns with: {cost:.0} ns per request (target < 1000 ns)"
    );
    println!(
        "ratio target >= 0.95: {}; middleware target: {}",
        if worst >= 0.95 { "met" } else { "NOT met" },
        if cost < 1000.0 { "met" } else { "NOT met" }
    );
    println!();
    println!(
        "| connection | server CPU per request: actix-web | prefork (supervisor + workers) | ratio | pool of plain HttpServers |"
    );
    println!("|---|---:|---:|---:|---:|");
    let per = |(main, children, n): (f64, f64, u64)| {
        let n = n.max(1) as f64;
        (main * 1e6 / n, children * 1e6 / n)
    };
    for (m, mode) in modes.iter().enumerate() {
        let t = per(cpu[m][0]);
        let p = per(cpu[m][1]);
        let q = per(cpu[m][2]);
        println!(
            "| {} | {:.1} us | {:.1} us ({:.1} + {:.1}) | {:.3} | {:.1} us ({:.1} + {:.1}) |",
            mode.name(),
            t.0,
            p.0 + p.1,
            p.0,
            p.1,
            t.0 / (p.0 + p.1),
            q.0 + q.1,
            q.0,
            q.1
        );
    }
    let scoreboard = status
        .lines()
        .find(|l| l.trim_start().starts_with("Requests "))
        .map(str::trim);
    if let Some(line) = scoreboard {
        println!("prefork scoreboard at the end: {line}");
    }
    println!("logs: {}", logs.display());

    let by_mode: Vec<serde_json::Value> = modes
        .iter()
        .enumerate()
        .map(|(m, mode)| {
            let (t, p, plain) = (best[m][0], best[m][1], best[m][2]);
            let (tc, pc, qc) = (per(cpu[m][0]), per(cpu[m][1]), per(cpu[m][2]));
            serde_json::json!({
                "mode": mode.name(),
                "threads_rps_best": t,
                "prefork_rps_best": p,
                "ratio_of_best": p / t,
                "median_ratio_per_round": median(&ratios[m][1]),
                "ratios_per_round": ratios[m][1],
                "prefork_httpserver_rps_best": plain,
                "prefork_httpserver_median_ratio": median(&ratios[m][2]),
                "failed_requests": failed[m],
                "cpu_us_per_request": {
                    "threads": tc.0,
                    "prefork": pc.0 + pc.1,
                    "prefork_supervisor": pc.0,
                    "prefork_workers": pc.1,
                    "prefork_httpserver": qc.0 + qc.1,
                },
            })
        })
        .collect();
    let json = serde_json::json!({
        "bench": "web",
        "n": N,
        "connections": CONNECTIONS,
        "rounds": rounds,
        "quick": quick,
        "cell_seconds": CELL.as_secs_f64(),
        "modes": by_mode,
        "failed_requests": failed_total,
        "middleware": {
            "calls": MW_CALLS,
            "rounds": MW_ROUNDS,
            "without_ns": plain,
            "with_ns": wrapped,
            "cost_ns": cost,
        },
        "targets": {
            "ratio_min": 0.95,
            "ratio_met": worst >= 0.95,
            "middleware_ns_max": 1000,
            "middleware_met": cost < 1000.0,
        },
        "scoreboard_at_end": scoreboard,
    });
    let path = target.join("bench").join("web.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).expect("JSON") + "\n",
    )
    .map_err(|err| format!("{}: {err}", path.display()))?;
    println!("numbers written to {}", path.display());
    Ok(())
}
