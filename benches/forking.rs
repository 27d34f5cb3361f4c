//! Fork-per-connection throughput of actix-daemon, side by side with a
//! minimal fork-per-connection server written with std and nix only, and the
//! supervisor-to-worker hand-off latency (`UpdateStatus::Req` in the
//! supervisor to `DaemonSignal::Child` in the worker).
//!
//! ```text
//! cargo bench --bench forking
//! ```
//!
//! The bench builds the `forking` example itself (`cargo build --release
//! --example forking`, with the cargo that runs the bench, into the same
//! target directory); if that build fails it falls back to an existing
//! `target/release/examples/forking` and says so. The same bench binary also
//! plays two servers, each started as a fresh, single-threaded process by
//! re-executing itself with `ACTIX_DAEMON_BENCH_ROLE`:
//!
//! - `reference-server`: accepts on 127.0.0.1, forks one child per
//!   connection (at most 3 at once; it stops accepting while 3 run) and reaps
//!   them; the child serves the protocol below and exits.
//! - `latency-server`: an actix-daemon fork-per-request server built with the
//!   public API (`max_children(3)`, not verbose). Its acceptor puts the
//!   CLOCK_MONOTONIC time into the `Req` payload; the worker answers the
//!   connection first with `now - t` in nanoseconds, then serves the protocol.
//!
//! Three servers, all with at most 3 workers, each driven by the same client:
//! connect, `PING` -> `PONG`, `DONE` -> `OK`, then read until the server
//! closes. Cells (server x 1 or 3 client threads) run interleaved, two rounds
//! in opposite orders, so that the machine's noise falls on all of them
//! alike; compare the ratios, not the absolute numbers.
//!
//! The example runs with `verbose(true)` (debug lines for every state
//! change, kept in release builds) and the bench server without; the two
//! measured the same, so logging is not what bounds the throughput.
//!
//! All traffic goes to 127.0.0.1. Every loop is bounded in count and time.
//! The bench is a child subreaper: whatever a server leaves behind becomes
//! its child, is reported, killed and reaped. Servers get `PR_SET_PDEATHSIG`
//! so that they go away if the bench dies. Logs go to
//! `target/bench/forking-logs/`, numbers to `target/bench/forking.json`.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Which role a re-executed bench binary plays.
const ROLE_ENV: &str = "ACTIX_DAEMON_BENCH_ROLE";
/// The latency server's log file.
const LOG_ENV: &str = "ACTIX_DAEMON_BENCH_LOG";
/// Workers at once, in every server.
const MAX_CHILDREN: usize = 3;
/// Client threads per cell.
const CONCURRENCY: [usize; 2] = [1, 3];
/// Each cell runs this many times, in alternating server order.
const ROUNDS: usize = 2;
/// Duration of one cell in one round.
const CELL: Duration = Duration::from_millis(1500);
/// At most this many connections per cell and round.
const CELL_CAP: usize = 20_000;
/// Pause between cells, so that the last cell's workers are gone.
const SETTLE: Duration = Duration::from_millis(200);
/// Connect, read and write timeout of the client.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a server may take to print its port, and to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(15);
/// How long a server may take to exit once told to.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// How long the example's build may take.
const BUILD_DEADLINE: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("reference-server") => reference::fork_per_connection(),
        Ok("latency-server") => latency::main(),
        Ok(other) => {
            eprintln!("{ROLE_ENV}={other:?}: unknown role");
            ExitCode::from(2)
        }
        Err(_) => match bench::main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("forking bench: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process.
fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

mod common;

use common::{Conn, answer, bind_and_announce, reference};

/// An actix-daemon fork-per-request server that measures the hand-off from
/// the supervisor's `Req` to the worker's `Child`.
mod latency {
    use super::*;
    use actix::prelude::*;
    use actix_daemon::{
        Daemon, DaemonActor, DaemonSignal, Payload, Process, Subscribe, UpdateStatus,
    };
    use std::io;
    use std::rc::Rc;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    pub fn main() -> ExitCode {
        let Some(logfile) = std::env::var_os(LOG_ENV) else {
            eprintln!("latency server: {LOG_ENV} is not set");
            return ExitCode::from(2);
        };
        let daemon = match Daemon::builder()
            .alias("bench-latency")
            .max_children(MAX_CHILDREN)
            .logfile(PathBuf::from(logfile))
            .build()
        {
            Ok(daemon) => daemon,
            Err(err) => {
                eprintln!("latency server: {err}");
                return ExitCode::from(2);
            }
        };
        let listener = match bind_and_announce().and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("latency server: cannot listen: {err}");
                return ExitCode::FAILURE;
            }
        };
        // A fresh process (exec), no thread started: `run` may fork.
        let result = daemon.run(move |process: &Process| {
            if process.is_supervisor() {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                Acceptor {
                    listener: Rc::new(listener),
                    accepting: None,
                }
                .start();
            } else {
                Worker.start();
            }
        });
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("latency server: {err}");
                ExitCode::FAILURE
            }
        }
    }

    /// Supervisor side: accepts while the daemon says `Accept`, and hands
    /// each connection over with `Req`, stamped with the time.
    struct Acceptor {
        listener: Rc<tokio::net::TcpListener>,
        accepting: Option<SpawnHandle>,
    }

    impl Actor for Acceptor {
        type Context = Context<Self>;

        fn started(&mut self, ctx: &mut Context<Self>) {
            DaemonActor::from_registry().do_send(Subscribe(ctx.address().recipient()));
        }
    }

    impl Acceptor {
        fn accept_one(&mut self, ctx: &mut Context<Self>) {
            let listener = self.listener.clone();
            let fut = async move { listener.accept().await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.accepting = None;
                    if let Ok((stream, _)) = res {
                        // The time is taken last, just before the Req is sent.
                        let payload = stream.into_std().map_err(|e| e.to_string()).and_then(|s| {
                            Payload::new()
                                .with_fd(OwnedFd::from(s))
                                .and_then(|p| p.with_data(&monotonic_ns()))
                                .map_err(|e| e.to_string())
                        });
                        match payload {
                            Ok(p) => DaemonActor::from_registry().do_send(UpdateStatus::Req(p)),
                            Err(err) => {
                                slog::warn!(actix_daemon::logger(), "connection dropped"; "error" => %err)
                            }
                        }
                    }
                    act.accept_one(ctx);
                });
            self.accepting = Some(ctx.spawn(fut));
        }
    }

    impl Handler<DaemonSignal> for Acceptor {
        type Result = ();

        fn handle(&mut self, signal: DaemonSignal, ctx: &mut Context<Self>) {
            match signal {
                DaemonSignal::Accept if self.accepting.is_none() => self.accept_one(ctx),
                DaemonSignal::Pause | DaemonSignal::Shutdown => {
                    if let Some(handle) = self.accepting.take() {
                        ctx.cancel_future(handle);
                    }
                }
                _ => {}
            }
        }
    }

    /// Worker side: answers with the hand-off time, serves, says `Done`.
    struct Worker;

    impl Actor for Worker {
        type Context = Context<Self>;

        fn started(&mut self, ctx: &mut Context<Self>) {
            DaemonActor::from_registry().do_send(Subscribe(ctx.address().recipient()));
        }
    }

    impl Handler<DaemonSignal> for Worker {
        type Result = ();

        fn handle(&mut self, signal: DaemonSignal, ctx: &mut Context<Self>) {
            let DaemonSignal::Child(Some(payload)) = signal else {
                return;
            };
            let now = monotonic_ns();
            let waited = payload.data::<u64>().ok().map(|t| now.saturating_sub(t));
            let stream = payload
                .take_fd(0)
                .map(std::net::TcpStream::from)
                .and_then(|s| tokio::net::TcpStream::from_std(s).ok());
            match (stream, waited) {
                (Some(stream), Some(waited)) => {
                    ctx.spawn(
                        async move {
                            let _ = serve(stream, waited).await;
                            DaemonActor::from_registry().do_send(UpdateStatus::Done);
                        }
                        .into_actor(self),
                    );
                }
                _ => DaemonActor::from_registry().do_send(UpdateStatus::Done),
            }
        }
    }

    async fn serve(stream: tokio::net::TcpStream, waited_ns: u64) -> io::Result<()> {
        let (read, mut write) = stream.into_split();
        write
            .write_all(format!("{waited_ns}\r\n").as_bytes())
            .await?;
        let mut lines = BufReader::new(read).lines();
        while let Some(line) = lines.next_line().await? {
            let (reply, done) = answer(&line);
            write.write_all(reply.as_bytes()).await?;
            if done {
                break;
            }
        }
        write.shutdown().await
    }
}

/// The client side, the measurements and the report.
mod bench {
    use super::*;
    use serde_json::{Value, json};

    /// One server under test.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Example,
        Reference,
        Latency,
    }

    impl Kind {
        const ALL: [Kind; 3] = [Kind::Example, Kind::Reference, Kind::Latency];

        fn key(self) -> &'static str {
            match self {
                Kind::Example => "forking_example",
                Kind::Reference => "reference",
                Kind::Latency => "latency_server",
            }
        }

        fn label(self) -> &'static str {
            match self {
                Kind::Example => "forking example (actix-daemon)",
                Kind::Reference => "reference (std + nix fork)",
                Kind::Latency => "bench server (actix-daemon API)",
            }
        }

        /// Whether the server answers first with the hand-off time.
        fn greeting(self) -> bool {
            self == Kind::Latency
        }

        /// Children the server keeps when idle (the spawner).
        fn idle_children(self) -> usize {
            match self {
                Kind::Reference => 0,
                // The spawner and the one warm worker (the default).
                Kind::Example | Kind::Latency => 2,
            }
        }
    }

    struct Server {
        kind: Kind,
        child: Child,
        addr: SocketAddr,
        stdin: Option<ChildStdin>,
        _stdout: ChildStdout,
        logs: Vec<PathBuf>,
    }

    /// What one (server, concurrency) cell gathered over all rounds.
    #[derive(Default)]
    struct Cell {
        conns: usize,
        errors: usize,
        elapsed: Duration,
        latency_ns: Vec<u64>,
        handoff_ns: Vec<u64>,
        error_samples: Vec<String>,
    }

    impl Cell {
        fn rate(&self) -> f64 {
            if self.elapsed.is_zero() {
                0.0
            } else {
                self.conns as f64 / self.elapsed.as_secs_f64()
            }
        }
    }

    pub fn main() -> Result<(), String> {
        let started = Instant::now();
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("subreaper: {e}"))?;
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        // <target>/release/deps/forking-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("bench binary is not in <target>/<profile>/deps")?
            .to_path_buf();
        let target_dir = profile_dir
            .parent()
            .ok_or("no target directory")?
            .to_path_buf();
        let out_dir = target_dir.join("bench");
        let log_dir = out_dir.join("forking-logs");
        let _ = std::fs::remove_dir_all(&log_dir);
        std::fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;

        let (example, build_note) = build_example(&target_dir, &profile_dir, &log_dir)?;
        let mut notes: Vec<String> = build_note.into_iter().collect();

        let mut servers = Vec::new();
        for kind in Kind::ALL {
            match start(kind, &exe, &example, &log_dir) {
                Ok(server) => servers.push(server),
                Err(err) => {
                    stop_all(&mut servers, &mut notes);
                    return Err(format!("{}: {err}", kind.label()));
                }
            }
        }

        let mut cells: Vec<Vec<Cell>> = Kind::ALL
            .iter()
            .map(|_| CONCURRENCY.iter().map(|_| Cell::default()).collect())
            .collect();
        for round in 0..ROUNDS {
            for (ci, &threads) in CONCURRENCY.iter().enumerate() {
                let mut order: Vec<usize> = (0..servers.len()).collect();
                if (round + ci) % 2 == 1 {
                    order.reverse();
                }
                for si in order {
                    let server = &servers[si];
                    run_cell(
                        server.addr,
                        server.kind.greeting(),
                        threads,
                        &mut cells[si][ci],
                    );
                    std::thread::sleep(SETTLE);
                }
            }
        }

        // No worker and no zombie should stay once the load is gone.
        let mut idle = Vec::new();
        for server in &servers {
            let pid = server.child.id() as i32;
            let expected = server.kind.idle_children();
            let end = Instant::now() + Duration::from_secs(3);
            let mut kids = children_of(pid);
            while kids.len() != expected && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
                kids = children_of(pid);
            }
            let zombies = kids.iter().filter(|k| k.1 == 'Z').count();
            if kids.len() != expected || zombies > 0 {
                notes.push(format!(
                    "{}: {} children 3 s after the load ended (expected {expected}), {zombies} zombies: {:?}",
                    server.kind.label(),
                    kids.len(),
                    kids
                ));
            }
            idle.push(json!({"server": server.kind.key(), "children": kids.len(), "expected": expected, "zombies": zombies}));
        }

        let stops = stop_all(&mut servers, &mut notes);
        let leftovers = reap_leftovers();
        if !leftovers.is_empty() {
            notes.push(format!(
                "left behind after the servers exited (killed and reaped by the bench): {leftovers:?}"
            ));
        }
        let log_lines = scan_logs(&log_dir);
        if !log_lines.is_empty() {
            notes.push(format!(
                "{} WARN/ERROR/panic lines in {}; first: {:?}",
                log_lines.len(),
                log_dir.display(),
                log_lines.iter().take(5).collect::<Vec<_>>()
            ));
        }

        let report = report(&cells, &notes);
        print!("{report}");
        let json = to_json(
            &cells, &notes, &idle, &stops, &leftovers, &log_lines, &example, started,
        );
        let path = out_dir.join("forking.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&json).expect("JSON") + "\n",
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("numbers written to {}", path.display());
        Ok(())
    }

    /// Builds the forking example with the cargo running this bench; falls
    /// back to an existing binary if the build fails.
    fn build_example(
        target_dir: &Path,
        profile_dir: &Path,
        log_dir: &Path,
    ) -> Result<(PathBuf, Option<String>), String> {
        let example = profile_dir.join("examples").join("forking");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let build_log = log_dir.join("cargo-build-example.log");
        let file = std::fs::File::create(&build_log).map_err(|e| format!("{e}"))?;
        let spawned = Command::new(cargo)
            .args(["build", "--quiet", "--release", "--example", "forking"])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn();
        let outcome = match spawned {
            Ok(mut child) => match wait_deadline(&mut child, BUILD_DEADLINE) {
                Some(status) if status.success() => Ok(()),
                Some(status) => Err(format!("exited with {status}")),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(format!("took over {BUILD_DEADLINE:?}"))
                }
            },
            Err(err) => Err(format!("cannot run cargo: {err}")),
        };
        match outcome {
            Ok(()) => Ok((example, None)),
            Err(err) if example.exists() => {
                let note = format!(
                    "WARNING: `cargo build --release --example forking` failed ({err}, see {}); measured the existing, possibly stale, {}",
                    build_log.display(),
                    example.display()
                );
                eprintln!("{note}");
                Ok((example, Some(note)))
            }
            Err(err) => Err(format!(
                "`cargo build --release --example forking` failed ({err}), see {}",
                build_log.display()
            )),
        }
    }

    fn start(kind: Kind, exe: &Path, example: &Path, log_dir: &Path) -> Result<Server, String> {
        let stderr_path = log_dir.join(format!("{}.stderr", kind.key()));
        let logfile = log_dir.join(format!("{}.log", kind.key()));
        let mut cmd = match kind {
            Kind::Example => {
                let mut cmd = Command::new(example);
                cmd.arg("0")
                    .arg("--foreground")
                    .arg("--logfile")
                    .arg(&logfile)
                    .arg("--max-children")
                    .arg(MAX_CHILDREN.to_string());
                cmd
            }
            Kind::Reference => {
                let mut cmd = Command::new(exe);
                cmd.env(ROLE_ENV, "reference-server");
                cmd
            }
            Kind::Latency => {
                let mut cmd = Command::new(exe);
                cmd.env(ROLE_ENV, "latency-server").env(LOG_ENV, &logfile);
                cmd
            }
        };
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| format!("{e}"))?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // SAFETY: the closure runs in the forked child before exec; it only
        // calls prctl(2), which is async-signal-safe, and allocates nothing
        // (an error becomes an io::Error from the raw errno).
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(io::Error::from)
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        let mut stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let port = match read_port(&mut stdout) {
            Ok(port) => port,
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err);
            }
        };
        let mut server = Server {
            kind,
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            stdin,
            _stdout: stdout,
            logs: vec![stderr_path, logfile],
        };
        // Ready once a PING on a connection answers PONG.
        let end = Instant::now() + START_DEADLINE;
        loop {
            let last = match one_conn(server.addr, kind.greeting()) {
                Ok(_) => break,
                Err(err) => err,
            };
            let exited = server.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > end {
                let _ = server.child.kill();
                let _ = server.child.wait();
                return Err(format!(
                    "not ready: {last}; exited: {exited:?}; logs: {:?}",
                    server.logs
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// Waits, with a deadline, for the `PORT=<n>` line.
    fn read_port(out: &mut ChildStdout) -> Result<u16, String> {
        let end = Instant::now() + START_DEADLINE;
        let mut got = Vec::new();
        loop {
            if let Some(i) = got.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&got[..i]).trim().to_owned();
                return line
                    .strip_prefix("PORT=")
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("unexpected first line {line:?}"));
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || got.len() > 4096 {
                return Err("no PORT=<n> line before the deadline".to_owned());
            }
            let ms = u16::try_from(left.as_millis().clamp(1, 1000)).unwrap_or(1000);
            let readable = {
                let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(n) => n > 0,
                    Err(Errno::EINTR) => false,
                    Err(err) => return Err(format!("poll: {err}")),
                }
            };
            if !readable {
                continue;
            }
            let mut buf = [0u8; 256];
            match out.read(&mut buf) {
                Ok(0) => return Err("stdout closed before PORT=<n>".to_owned()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(format!("read stdout: {err}")),
            }
        }
    }

    /// A connection read line by line.
    /// One connection: `(latency, hand-off)` in nanoseconds.
    fn one_conn(addr: SocketAddr, greeting: bool) -> Result<(u64, Option<u64>), String> {
        let t0 = Instant::now();
        let mut conn = Conn::open(addr, IO_TIMEOUT)?;
        let handoff = if greeting {
            let line = conn.line()?;
            let ns = line
                .strip_suffix("\r\n")
                .and_then(|l| l.parse::<u64>().ok())
                .ok_or_else(|| format!("bad hand-off line {line:?}"))?;
            Some(ns)
        } else {
            None
        };
        conn.expect("PING\n", "PONG\r\n")?;
        conn.expect("DONE\n", "OK\r\n")?;
        conn.eof()?;
        Ok((t0.elapsed().as_nanos() as u64, handoff))
    }

    /// Runs `threads` clients against `addr` for one round of a cell.
    fn run_cell(addr: SocketAddr, greeting: bool, threads: usize, cell: &mut Cell) {
        let issued = AtomicUsize::new(0);
        let start = Instant::now();
        let end = start + CELL;
        let parts: Vec<Cell> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut part = Cell::default();
                        while Instant::now() < end
                            && issued.fetch_add(1, Ordering::Relaxed) < CELL_CAP
                        {
                            match one_conn(addr, greeting) {
                                Ok((ns, handoff)) => {
                                    part.conns += 1;
                                    part.latency_ns.push(ns);
                                    part.handoff_ns.extend(handoff);
                                }
                                Err(err) => {
                                    part.errors += 1;
                                    if part.error_samples.len() < 3 {
                                        part.error_samples.push(err);
                                    }
                                    std::thread::sleep(Duration::from_millis(5));
                                }
                            }
                        }
                        part
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect()
        });
        cell.elapsed += start.elapsed();
        for part in parts {
            cell.conns += part.conns;
            cell.errors += part.errors;
            cell.latency_ns.extend(part.latency_ns);
            cell.handoff_ns.extend(part.handoff_ns);
            for e in part.error_samples {
                if cell.error_samples.len() < 5 {
                    cell.error_samples.push(e);
                }
            }
        }
    }

    fn wait_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
                _ => return None,
            }
        }
    }

    /// Stops every server (stdin closed for the reference, TERM for the
    /// daemons), KILLs one that does not exit in time, and reaps it.
    fn stop_all(servers: &mut Vec<Server>, notes: &mut Vec<String>) -> Vec<Value> {
        let mut stops = Vec::new();
        for server in servers.iter_mut() {
            let pid = server.child.id() as i32;
            server.stdin = None;
            if server.kind != Kind::Reference {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        for mut server in servers.drain(..) {
            let t = Instant::now();
            let status = match wait_deadline(&mut server.child, STOP_DEADLINE) {
                Some(status) => format!("{status}"),
                None => {
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    notes.push(format!(
                        "{}: did not exit within {STOP_DEADLINE:?} of being told to; killed",
                        server.kind.label()
                    ));
                    "killed".to_owned()
                }
            };
            if status != "exit status: 0" && status != "killed" {
                notes.push(format!("{}: ended with {status}", server.kind.label()));
            }
            stops.push(json!({
                "server": server.kind.key(),
                "status": status,
                "stop_ms": t.elapsed().as_secs_f64() * 1e3,
            }));
        }
        stops
    }

    /// `(pid, state, name)` of every child of `pid`.
    fn children_of(pid: i32) -> Vec<(i32, char, String)> {
        let Ok(all) = procfs::process::all_processes() else {
            return Vec::new();
        };
        all.filter_map(|p| p.ok()?.stat().ok())
            .filter(|s| s.ppid == pid)
            .map(|s| (s.pid, s.state, s.comm))
            .collect()
    }

    /// Whatever became this process's child (it is a subreaper) after every
    /// server was reaped: reported, killed and reaped.
    fn reap_leftovers() -> Vec<String> {
        use nix::sys::wait::waitpid;
        std::thread::sleep(Duration::from_millis(200));
        let me = std::process::id() as i32;
        let mut found = Vec::new();
        for _ in 0..3 {
            let kids = children_of(me);
            if kids.is_empty() {
                break;
            }
            for (pid, state, name) in kids {
                found.push(format!("{pid} {name} ({state})"));
                let pid = Pid::from_raw(pid);
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
        }
        found
    }

    fn scan_logs(dir: &Path) -> Vec<String> {
        let mut lines = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return lines;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            if path
                .file_name()
                .is_some_and(|n| n == "cargo-build-example.log")
            {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            for line in text.lines() {
                if [" WARN ", " ERRO ", " CRIT ", "panicked"]
                    .iter()
                    .any(|w| line.contains(w))
                {
                    lines.push(format!("{name}: {line}"));
                }
            }
        }
        lines
    }

    fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
        if sorted.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        Some(sorted[rank.clamp(1, sorted.len()) - 1] as f64)
    }

    fn ms(ns: Option<f64>) -> String {
        ns.map_or_else(|| "-".to_owned(), |v| format!("{:.3}", v / 1e6))
    }

    fn sorted(v: &[u64]) -> Vec<u64> {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    }

    fn ratio(cells: &[Vec<Cell>], of: Kind, ci: usize) -> Option<f64> {
        let i = |k: Kind| Kind::ALL.iter().position(|&x| x == k).expect("kind");
        let base = cells[i(Kind::Reference)][ci].rate();
        (base > 0.0).then(|| cells[i(of)][ci].rate() / base)
    }

    fn report(cells: &[Vec<Cell>], notes: &[String]) -> String {
        let mut out = String::new();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        out += &format!(
            "\nfork per connection, max_children {MAX_CHILDREN}, {cpus} cpus; {ROUNDS} interleaved rounds x {:.1} s per cell; all on 127.0.0.1\n",
            CELL.as_secs_f64()
        );
        out += &format!(
            "{:<40} {:>4} {:>7} {:>8} {:>8} {:>8} {:>6} {:>18}\n",
            "server", "conc", "conns", "conn/s", "p50 ms", "p99 ms", "errors", "Req->Child p50/p99"
        );
        for (ci, &threads) in CONCURRENCY.iter().enumerate() {
            for (si, kind) in Kind::ALL.iter().enumerate() {
                let cell = &cells[si][ci];
                let lat = sorted(&cell.latency_ns);
                let hand = sorted(&cell.handoff_ns);
                let handoff = if kind.greeting() {
                    format!(
                        "{} / {} ms",
                        ms(percentile(&hand, 50.0)),
                        ms(percentile(&hand, 99.0))
                    )
                } else {
                    "-".to_owned()
                };
                out += &format!(
                    "{:<40} {:>4} {:>7} {:>8.1} {:>8} {:>8} {:>6} {:>18}\n",
                    kind.label(),
                    threads,
                    cell.conns,
                    cell.rate(),
                    ms(percentile(&lat, 50.0)),
                    ms(percentile(&lat, 99.0)),
                    cell.errors,
                    handoff
                );
            }
        }
        for (ci, &threads) in CONCURRENCY.iter().enumerate() {
            let r = |k| ratio(cells, k, ci).map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
            out += &format!(
                "conn/s ratio at {threads} client(s): forking example / reference {} ; bench server / reference {} (target >= 0.5)\n",
                r(Kind::Example),
                r(Kind::Latency)
            );
        }
        for (si, kind) in Kind::ALL.iter().enumerate() {
            for (ci, &threads) in CONCURRENCY.iter().enumerate() {
                let cell = &cells[si][ci];
                if !cell.error_samples.is_empty() {
                    out += &format!(
                        "errors, {} at {threads}: {:?}\n",
                        kind.label(),
                        cell.error_samples
                    );
                }
            }
        }
        if notes.is_empty() {
            out += "checks: no errors in the logs, no leftover worker, zombie or process\n";
        }
        for note in notes {
            out += &format!("note: {note}\n");
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn to_json(
        cells: &[Vec<Cell>],
        notes: &[String],
        idle: &[Value],
        stops: &[Value],
        leftovers: &[String],
        log_lines: &[String],
        example: &Path,
        started: Instant,
    ) -> Value {
        let mut rows = Vec::new();
        for (si, kind) in Kind::ALL.iter().enumerate() {
            for (ci, &threads) in CONCURRENCY.iter().enumerate() {
                let cell = &cells[si][ci];
                let lat = sorted(&cell.latency_ns);
                let hand = sorted(&cell.handoff_ns);
                let us = |v: Option<f64>| v.map(|v| v / 1e3);
                rows.push(json!({
                    "server": kind.key(),
                    "label": kind.label(),
                    "concurrency": threads,
                    "connections": cell.conns,
                    "errors": cell.errors,
                    "error_samples": cell.error_samples,
                    "seconds": cell.elapsed.as_secs_f64(),
                    "conn_per_s": cell.rate(),
                    "latency_p50_us": us(percentile(&lat, 50.0)),
                    "latency_p99_us": us(percentile(&lat, 99.0)),
                    "req_to_child_p50_us": us(percentile(&hand, 50.0)),
                    "req_to_child_p99_us": us(percentile(&hand, 99.0)),
                }));
            }
        }
        let ratios: Vec<Value> = CONCURRENCY
            .iter()
            .enumerate()
            .map(|(ci, &threads)| {
                json!({
                    "concurrency": threads,
                    "forking_example_over_reference": ratio(cells, Kind::Example, ci),
                    "latency_server_over_reference": ratio(cells, Kind::Latency, ci),
                    "target": 0.5,
                })
            })
            .collect();
        json!({
            "bench": "forking",
            "max_children": MAX_CHILDREN,
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "rounds": ROUNDS,
            "cell_seconds_per_round": CELL.as_secs_f64(),
            "cell_cap_per_round": CELL_CAP,
            "example_binary": example.display().to_string(),
            "cells": rows,
            "ratios": ratios,
            "children_when_idle": idle,
            "stops": stops,
            "leftover_processes": leftovers,
            "log_problem_lines": log_lines,
            "notes": notes,
            "total_seconds": started.elapsed().as_secs_f64(),
        })
    }
}
