//! The macro benchmark runner of issue 5: real daemons (the release-built
//! `forking` and `preforking` examples), one table, the same numbers as JSON.
//!
//! ```text
//! cargo bench --bench processes
//! ```
//!
//! The bench builds the examples itself (`cargo build --release --examples`,
//! with the cargo that runs the bench, into the same target directory); if
//! that build fails it measures the existing binaries and says so. The same
//! bench binary also plays two reference servers written with std and nix
//! only, each a fresh single-threaded process (it re-executes itself with
//! `ACTIX_DAEMON_BENCH_ROLE`):
//!
//! - `reference-server`: fork per connection, at most 3 children at once
//!   (it stops accepting while 3 run), reaps them;
//! - `reference-respawn`: one child at a time; the child accepts one
//!   connection on the inherited listener, serves it and exits; the parent
//!   waits for it and forks the next (pre-fork with requests 1 and one
//!   worker, without a daemon).
//!
//! Sections, all in one run:
//!
//! 1. Throughput. The same client (connect, `PING` -> `PONG`, `DONE` ->
//!    `OK`, read until the server closes) at 1 and 3 concurrent clients
//!    against the forking example (max_children 3), the preforking example
//!    as it ships (start 1, min_spare 2, max_children 10, requests 1) and
//!    the fork-per-connection reference. Cells run interleaved, two rounds
//!    in opposite orders, so the machine's noise falls on all alike; the
//!    ratios (example / reference) are the result.
//! 2. Spawn-to-ready. The log's timestamps have millisecond resolution,
//!    too coarse for a sub-millisecond target, so the client measures it: a
//!    preforking pool of exactly one worker with requests 1 (`--start-children
//!    1 --min-spare 1 --max-spare 1 --max-children 1 --requests 1`), where
//!    every connection must wait for a fresh worker. One sample is the time
//!    from the client seeing the previous connection closed (the previous
//!    worker is about to exit) to the `PONG` of the next connection, served by
//!    the new worker: exit, reap, spawn, the worker's start and first `Wait`,
//!    its accept, and one loopback round trip. Beside it: the same client
//!    against `reference-respawn`, a bare `fork` + `_exit` + `waitpid` loop
//!    in the bench, and the log's view (worker's `stopping` line to the next
//!    worker's first `state: .` line, millisecond timestamps).
//! 3. Scale. The preforking example with `--start-children 1000
//!    --max-children 1000 --min-spare 1000 --max-spare 1000 --requests 0`:
//!    time from starting it until 1,000 workers have logged their first
//!    `Wait` (`state: .`) and 1,000 live worker processes are its children in
//!    /proc; supervisor, spawner and worker CPU over 5 s while they idle
//!    (every thread's `/proc/PID/task/TID/schedstat`, in nanoseconds);
//!    memory; then kill -9 of every worker and the time until 1,000 new ones
//!    are ready again; zombies and killed workers left over.
//! 4. Memory. Supervisor and spawner RSS (`VmRSS`), a worker's unique
//!    (`Private_Clean + Private_Dirty`) and proportional (`Pss`) memory from
//!    `/proc/PID/smaps_rollup`, in the 1,000-worker pool and in the idle
//!    seed pools of section 1.
//! 5. actix-web prefork vs threads (with the `web` feature, on by default;
//!    without it the section is skipped with a note). The bench builds the
//!    `web` bench (`cargo bench --bench web --no-run`, same cargo, same
//!    target directory), runs it with `ACTIX_DAEMON_BENCH_WEB_QUICK=1`
//!    (fewer rounds, about a minute in all) under a deadline, and reads the
//!    `target/bench/web.json` it writes: the best req/s of an actix-daemon
//!    pool of 2 workers running actix-web against actix-web's `HttpServer`
//!    with 2 threads, keep-alive and close (target: at least 0.95), the
//!    median ratio per round, the pool without the scoreboard middleware,
//!    server CPU per request, and the middleware's cost per request (target:
//!    under 1 us). See `benches/web.rs`; its own output goes to
//!    `target/bench/processes-logs/web-bench.*`.
//!
//! The header gives the share of the machine's CPU that other processes
//! used during each section (from `/proc/stat` minus this bench's own
//! `getrusage`): on a shared machine, compare ratios within one run.
//!
//! All traffic goes to 127.0.0.1; every loop is bounded in count and time.
//! The bench raises its `RLIMIT_NOFILE` soft limit to the hard limit, is a
//! child subreaper, and at the end kills (by pid) and reaps every process
//! still below it; servers get `PR_SET_PDEATHSIG`. Logs go to
//! `target/bench/processes-logs/`, numbers to
//! `target/bench/processes.json`.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
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
/// Workers at once in the fork-per-request servers.
const MAX_CHILDREN: usize = 3;
/// Client threads per throughput cell.
const CONCURRENCY: [usize; 2] = [1, 3];
/// Each cell runs this many times, in alternating server order.
const ROUNDS: usize = 2;
/// Duration of one throughput cell in one round.
const CELL: Duration = Duration::from_millis(1500);
/// At most this many connections per cell and round.
const CELL_CAP: usize = 20_000;
/// Duration of one spawn-to-ready cell in one round.
const RESPAWN_CELL: Duration = Duration::from_millis(2000);
/// At most this many connections per spawn-to-ready cell and round.
const RESPAWN_CAP: usize = 5_000;
/// Iterations of the bare fork-and-exit loop.
const FORK_LOOP: usize = 2_000;
/// Pause between cells, so that the last cell's workers are gone.
const SETTLE: Duration = Duration::from_millis(200);
/// Connect, read and write timeout of the client.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a server may take to print its port, and to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(15);
/// How long a server may take to exit once told to.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// How long the examples' build may take.
const BUILD_DEADLINE: Duration = Duration::from_secs(300);
/// Workers in the scale pool.
const SCALE: usize = 1000;
/// Bound on the scale pool's fill and refill.
const SCALE_DEADLINE: Duration = Duration::from_secs(30);
/// How long the supervisor's CPU is measured while the pool idles.
const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// Workers of the scale pool whose memory is read.
const MEMORY_SAMPLE: usize = 50;
/// How long the quick run of the web bench may take.
const WEB_DEADLINE: Duration = Duration::from_secs(240);

fn main() -> ExitCode {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("reference-server") => reference::fork_per_connection(),
        Ok("reference-respawn") => reference::respawn(),
        Ok(other) => {
            eprintln!("{ROLE_ENV}={other:?}: unknown role");
            ExitCode::from(2)
        }
        Err(_) => match bench::main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("processes bench: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

mod common;

use common::{Conn, reference};

/// The client, the measurements and the report.
mod bench {
    use super::*;
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use serde_json::{Value, json};

    // -- statistics ---------------------------------------------------------

    fn sorted(v: &[u64]) -> Vec<u64> {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    }

    /// Nearest-rank percentile of sorted values.
    fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
        if sorted.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        Some(sorted[rank.clamp(1, sorted.len()) - 1] as f64)
    }

    fn mean(v: &[u64]) -> Option<f64> {
        (!v.is_empty()).then(|| v.iter().sum::<u64>() as f64 / v.len() as f64)
    }

    /// p50 and p99 of nanosecond samples, in milliseconds.
    fn p50_p99_ms(ns: &[u64]) -> (Option<f64>, Option<f64>) {
        let s = sorted(ns);
        (
            percentile(&s, 50.0).map(|v| v / 1e6),
            percentile(&s, 99.0).map(|v| v / 1e6),
        )
    }

    fn f(v: Option<f64>, digits: usize) -> String {
        v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
    }

    fn pair_ms(p: (Option<f64>, Option<f64>)) -> String {
        if p.0.is_none() {
            return "-".to_owned();
        }
        format!("{} / {}", f(p.0, 3), f(p.1, 3))
    }

    fn mib(kib: Option<u64>) -> Option<f64> {
        kib.map(|k| k as f64 / 1024.0)
    }

    // -- /proc --------------------------------------------------------------

    /// What the bench reads of one process's `stat`.
    #[derive(Clone, Debug)]
    struct Proc {
        pid: i32,
        ppid: i32,
        state: char,
        comm: String,
    }

    fn scan() -> Vec<Proc> {
        let Ok(all) = procfs::process::all_processes() else {
            return Vec::new();
        };
        all.filter_map(|p| p.ok()?.stat().ok())
            .map(|s| Proc {
                pid: s.pid,
                ppid: s.ppid,
                state: s.state,
                comm: s.comm,
            })
            .collect()
    }

    fn stat(pid: i32) -> Option<Proc> {
        let s = procfs::process::Process::new(pid).ok()?.stat().ok()?;
        Some(Proc {
            pid: s.pid,
            ppid: s.ppid,
            state: s.state,
            comm: s.comm,
        })
    }

    /// Live (not zombie) children of `parent` whose name ends with `suffix`.
    fn children_named(all: &[Proc], parent: i32, suffix: &str) -> Vec<Proc> {
        all.iter()
            .filter(|p| p.ppid == parent && p.state != 'Z' && p.comm.ends_with(suffix))
            .cloned()
            .collect()
    }

    fn zombies_of(all: &[Proc], parents: &[i32]) -> Vec<i32> {
        all.iter()
            .filter(|p| p.state == 'Z' && parents.contains(&p.ppid))
            .map(|p| p.pid)
            .collect()
    }

    /// CPU time of every thread of `pid` in nanoseconds
    /// (`/proc/PID/task/*/schedstat`, first field).
    fn cpu_ns(pid: i32) -> Option<u64> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        let mut total = 0;
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Some(total)
    }

    fn vm_rss_kib(pid: i32) -> Option<u64> {
        procfs::process::Process::new(pid)
            .ok()?
            .status()
            .ok()?
            .vmrss
    }

    /// `smaps_rollup` of one process, in KiB.
    #[derive(Clone, Copy, Debug, Default)]
    struct Smaps {
        rss: u64,
        pss: u64,
        private: u64,
    }

    fn smaps_rollup(pid: i32) -> Option<Smaps> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        let mut m = Smaps::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(key), Some(value)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(kib) = value.parse::<u64>() else {
                continue;
            };
            match key {
                "Rss:" => m.rss = kib,
                "Pss:" => m.pss = kib,
                "Private_Clean:" | "Private_Dirty:" => m.private += kib,
                _ => {}
            }
        }
        Some(m)
    }

    /// Memory of one daemon: supervisor, spawner, workers (a sample).
    #[derive(Debug, Default)]
    struct Memory {
        workers: usize,
        supervisor_rss_kib: Option<u64>,
        spawner_rss_kib: Option<u64>,
        worker_private_kib: Vec<u64>,
        worker_pss_kib: Vec<u64>,
        worker_rss_kib: Vec<u64>,
    }

    impl Memory {
        fn read(supervisor: i32, sample: usize) -> Memory {
            let all = scan();
            let spawner = children_named(&all, supervisor, "-spawner")
                .first()
                .map(|p| p.pid);
            let workers = children_named(&all, supervisor, "-worker");
            let step = (workers.len() / sample.max(1)).max(1);
            let mut m = Memory {
                workers: workers.len(),
                supervisor_rss_kib: vm_rss_kib(supervisor),
                spawner_rss_kib: spawner.and_then(vm_rss_kib),
                ..Memory::default()
            };
            for w in workers.iter().step_by(step).take(sample) {
                if let Some(s) = smaps_rollup(w.pid) {
                    m.worker_private_kib.push(s.private);
                    m.worker_pss_kib.push(s.pss);
                    m.worker_rss_kib.push(s.rss);
                }
            }
            m
        }

        fn p50(v: &[u64]) -> Option<u64> {
            percentile(&sorted(v), 50.0).map(|x| x as u64)
        }

        fn max(v: &[u64]) -> Option<u64> {
            v.iter().copied().max()
        }

        fn to_json(&self) -> Value {
            json!({
                "workers": self.workers,
                "workers_sampled": self.worker_private_kib.len(),
                "supervisor_rss_kib": self.supervisor_rss_kib,
                "spawner_rss_kib": self.spawner_rss_kib,
                "worker_unique_kib_p50": Memory::p50(&self.worker_private_kib),
                "worker_unique_kib_max": Memory::max(&self.worker_private_kib),
                "worker_pss_kib_p50": Memory::p50(&self.worker_pss_kib),
                "worker_pss_kib_max": Memory::max(&self.worker_pss_kib),
                "worker_rss_kib_p50": Memory::p50(&self.worker_rss_kib),
            })
        }
    }

    // -- the client -----------------------------------------------------------

    /// A connection read line by line.
    /// One connection; its latency in nanoseconds.
    fn one_conn(addr: SocketAddr) -> Result<u64, String> {
        let t0 = Instant::now();
        let mut conn = Conn::open(addr, IO_TIMEOUT)?;
        conn.expect("PING\n", "PONG\r\n")?;
        conn.expect("DONE\n", "OK\r\n")?;
        conn.eof()?;
        Ok(t0.elapsed().as_nanos() as u64)
    }

    /// What one (server, concurrency) cell gathered over all rounds.
    #[derive(Default)]
    struct Cell {
        conns: usize,
        errors: usize,
        elapsed: Duration,
        latency_ns: Vec<u64>,
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

        fn error(&mut self, err: String) {
            self.errors += 1;
            if self.error_samples.len() < 5 {
                self.error_samples.push(err);
            }
        }

        fn to_json(&self) -> Value {
            let (p50, p99) = p50_p99_ms(&self.latency_ns);
            json!({
                "connections": self.conns,
                "errors": self.errors,
                "error_samples": self.error_samples,
                "seconds": self.elapsed.as_secs_f64(),
                "conn_per_s": self.rate(),
                "latency_p50_ms": p50,
                "latency_p99_ms": p99,
            })
        }
    }

    /// Runs `threads` clients against `addr` for one round of a cell.
    fn run_cell(addr: SocketAddr, threads: usize, cell: &mut Cell) {
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
                            match one_conn(addr) {
                                Ok(ns) => {
                                    part.conns += 1;
                                    part.latency_ns.push(ns);
                                }
                                Err(err) => {
                                    part.error(err);
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
            cell.latency_ns.extend(part.latency_ns);
            cell.errors += part.errors;
            for e in part.error_samples {
                if cell.error_samples.len() < 5 {
                    cell.error_samples.push(e);
                }
            }
        }
    }

    /// Spawn-to-ready samples of one server.
    #[derive(Default)]
    struct Respawn {
        /// Previous connection closed -> next connection's PONG.
        close_to_served_ns: Vec<u64>,
        /// A second PING on an already served connection: the client's floor.
        ping_rtt_ns: Vec<u64>,
        conns: usize,
        errors: usize,
        error_samples: Vec<String>,
        elapsed: Duration,
    }

    impl Respawn {
        fn to_json(&self) -> Value {
            let (p50, p99) = p50_p99_ms(&self.close_to_served_ns);
            let (rtt50, rtt99) = p50_p99_ms(&self.ping_rtt_ns);
            json!({
                "samples": self.close_to_served_ns.len(),
                "connections": self.conns,
                "errors": self.errors,
                "error_samples": self.error_samples,
                "seconds": self.elapsed.as_secs_f64(),
                "close_to_served_p50_ms": p50,
                "close_to_served_p99_ms": p99,
                "close_to_served_mean_ms": mean(&self.close_to_served_ns).map(|v| v / 1e6),
                "ping_rtt_p50_ms": rtt50,
                "ping_rtt_p99_ms": rtt99,
            })
        }
    }

    /// One client, one connection at a time, for one round.
    fn run_respawn(addr: SocketAddr, out: &mut Respawn) {
        let start = Instant::now();
        let end = start + RESPAWN_CELL;
        let mut last_close: Option<Instant> = None;
        let mut n = 0;
        while Instant::now() < end && n < RESPAWN_CAP {
            n += 1;
            let one = || -> Result<(Instant, u64, Instant), String> {
                let mut conn = Conn::open(addr, IO_TIMEOUT)?;
                conn.expect("PING\n", "PONG\r\n")?;
                let served = Instant::now();
                conn.expect("PING\n", "PONG\r\n")?;
                let rtt = served.elapsed().as_nanos() as u64;
                conn.expect("DONE\n", "OK\r\n")?;
                conn.eof()?;
                Ok((served, rtt, Instant::now()))
            };
            match one() {
                Ok((served, rtt, closed)) => {
                    out.conns += 1;
                    if let Some(prev) = last_close {
                        out.close_to_served_ns
                            .push(served.duration_since(prev).as_nanos() as u64);
                    }
                    out.ping_rtt_ns.push(rtt);
                    last_close = Some(closed);
                }
                Err(err) => {
                    out.errors += 1;
                    if out.error_samples.len() < 5 {
                        out.error_samples.push(err);
                    }
                    last_close = None;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        out.elapsed += start.elapsed();
    }

    /// A bare fork + `_exit(0)` + `waitpid` loop in this process.
    fn fork_loop() -> Vec<u64> {
        use nix::unistd::{ForkResult, fork};
        let mut out = Vec::with_capacity(FORK_LOOP);
        for _ in 0..FORK_LOOP {
            let t = Instant::now();
            // SAFETY: the child calls only `_exit`, which is async-signal-safe,
            // so it is sound even if this process had other threads (it has
            // none now: the client threads are scoped and joined).
            match unsafe { fork() } {
                // SAFETY: ends the child at once, running nothing of ours.
                Ok(ForkResult::Child) => unsafe { libc::_exit(0) },
                Ok(ForkResult::Parent { child }) => {
                    let _ = waitpid(child, None);
                    out.push(t.elapsed().as_nanos() as u64);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        out
    }

    // -- servers --------------------------------------------------------------

    struct Server {
        label: &'static str,
        /// A daemon (told to stop with TERM) or a reference (stdin closed).
        daemon: bool,
        child: Child,
        addr: SocketAddr,
        stdin: Option<ChildStdin>,
        _stdout: ChildStdout,
        log: PathBuf,
    }

    impl Server {
        fn pid(&self) -> i32 {
            self.child.id() as i32
        }
    }

    /// Starts a server; `ready_check` makes one connection to see it serve.
    fn start(
        label: &'static str,
        mut cmd: Command,
        log: PathBuf,
        daemon: bool,
        ready_check: bool,
    ) -> Result<Server, String> {
        let stderr_path = log.with_extension("stderr");
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
                return Err(format!("{err}; see {}", stderr_path.display()));
            }
        };
        let mut server = Server {
            label,
            daemon,
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            stdin,
            _stdout: stdout,
            log,
        };
        if ready_check {
            let end = Instant::now() + START_DEADLINE;
            loop {
                let last = match one_conn(server.addr) {
                    Ok(_) => break,
                    Err(err) => err,
                };
                let exited = server.child.try_wait().ok().flatten();
                if exited.is_some() || Instant::now() > end {
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    return Err(format!(
                        "not ready: {last}; exited: {exited:?}; see {}",
                        server.log.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
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

    fn wait_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
                _ => return None,
            }
        }
    }

    /// Stops every server (stdin closed for a reference, TERM for a daemon),
    /// KILLs one that does not exit in time, and reaps it.
    fn stop_all(servers: &mut Vec<Server>, notes: &mut Vec<String>) -> Vec<Value> {
        for server in servers.iter_mut() {
            server.stdin = None;
            if server.daemon {
                let _ = kill(Pid::from_raw(server.pid()), Signal::SIGTERM);
            }
        }
        let mut stops = Vec::new();
        for mut server in servers.drain(..) {
            let t = Instant::now();
            let status = match wait_deadline(&mut server.child, STOP_DEADLINE) {
                Some(status) => format!("{status}"),
                None => {
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    notes.push(format!(
                        "{}: did not exit within {STOP_DEADLINE:?} of being told to; killed",
                        server.label
                    ));
                    "killed".to_owned()
                }
            };
            if status != "exit status: 0" && status != "killed" {
                notes.push(format!("{}: ended with {status}", server.label));
            }
            stops.push(json!({
                "server": server.label,
                "status": status,
                "stop_ms": t.elapsed().as_secs_f64() * 1e3,
            }));
        }
        stops
    }

    /// Kills (SIGKILL, by pid) every process below this one and reaps what
    /// is its child; reports what it found. The bench is a subreaper, so
    /// anything a server left behind is below it.
    fn kill_descendants() -> Vec<String> {
        let me = std::process::id() as i32;
        let mut found = Vec::new();
        for _ in 0..5 {
            // Reap whatever already exited.
            while let Ok(status) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                if status == WaitStatus::StillAlive {
                    break;
                }
            }
            let all = scan();
            let mut below: HashSet<i32> = HashSet::from([me]);
            let mut grew = true;
            while grew {
                grew = false;
                for p in &all {
                    if below.contains(&p.ppid) && below.insert(p.pid) {
                        grew = true;
                    }
                }
            }
            below.remove(&me);
            if below.is_empty() {
                break;
            }
            for p in all.iter().filter(|p| below.contains(&p.pid)) {
                found.push(format!("{} {} ({})", p.pid, p.comm, p.state));
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        while let Ok(status) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        found
    }

    // -- the log ------------------------------------------------------------

    /// Follows a log file as it grows, line by line.
    struct LogTail {
        path: PathBuf,
        offset: u64,
        partial: Vec<u8>,
    }

    impl LogTail {
        fn new(path: &Path) -> LogTail {
            LogTail {
                path: path.to_path_buf(),
                offset: 0,
                partial: Vec::new(),
            }
        }

        /// The complete lines written since the last call.
        fn lines(&mut self) -> Vec<String> {
            use std::io::{Seek, SeekFrom};
            let Ok(mut file) = std::fs::File::open(&self.path) else {
                return Vec::new();
            };
            if file.seek(SeekFrom::Start(self.offset)).is_err() {
                return Vec::new();
            }
            let mut buf = Vec::new();
            let Ok(n) = file.read_to_end(&mut buf) else {
                return Vec::new();
            };
            self.offset += n as u64;
            self.partial.extend_from_slice(&buf);
            let Some(last) = self.partial.iter().rposition(|&b| b == b'\n') else {
                return Vec::new();
            };
            let complete: Vec<u8> = self.partial.drain(..=last).collect();
            String::from_utf8_lossy(&complete)
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// The pid a log line names (`..., pid: N` at its end).
    fn line_pid(line: &str) -> Option<i32> {
        line.rsplit_once("pid: ")?.1.trim().parse().ok()
    }

    /// A worker's first `Wait` (pre-fork): `state, state: .`.
    fn is_first_wait(line: &str) -> bool {
        line.contains(" state, state: ., ") && line.contains("role: worker")
    }

    /// Milliseconds since midnight of a log line's timestamp
    /// (`Nov 23 22:22:46.441 ...`).
    fn line_ms(line: &str) -> Option<i64> {
        let time = line.split_whitespace().nth(2)?;
        let (hms, ms) = time.split_once('.')?;
        let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
        let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
        Some(((h * 60 + m) * 60 + s) * 1000 + ms.parse::<i64>().ok()?)
    }

    fn ms_diff(a: i64, b: i64) -> i64 {
        let d = b - a;
        // Across midnight.
        if d < -43_200_000 { d + 86_400_000 } else { d }
    }

    /// The log's view of spawn-to-ready in a one-worker pool: from a
    /// worker's `stopping` line to the next worker's `worker running` and
    /// first `state: .` lines (millisecond timestamps).
    #[derive(Default)]
    struct LogView {
        stopping_to_ready_ms: Vec<u64>,
        stopping_to_running_ms: Vec<u64>,
        running_to_ready_ms: Vec<u64>,
    }

    impl LogView {
        fn read(path: &Path) -> LogView {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let mut view = LogView::default();
            let mut stopping: Option<(i32, i64)> = None;
            let mut running: HashMap<i32, i64> = HashMap::new();
            for line in text.lines() {
                if !line.contains("role: worker") {
                    continue;
                }
                let (Some(pid), Some(ms)) = (line_pid(line), line_ms(line)) else {
                    continue;
                };
                if line.contains(" stopping, ") {
                    stopping = Some((pid, ms));
                } else if line.contains(" worker running, ") {
                    running.insert(pid, ms);
                    if let Some((_, t)) = stopping.filter(|(old, _)| *old != pid) {
                        view.stopping_to_running_ms
                            .push(ms_diff(t, ms).max(0) as u64);
                    }
                } else if is_first_wait(line) {
                    if let Some(&r) = running.get(&pid) {
                        view.running_to_ready_ms.push(ms_diff(r, ms).max(0) as u64);
                    }
                    if let Some((_, t)) = stopping.filter(|(old, _)| *old != pid) {
                        view.stopping_to_ready_ms.push(ms_diff(t, ms).max(0) as u64);
                        stopping = None;
                    }
                }
            }
            view
        }

        fn summary(v: &[u64]) -> Value {
            let s = sorted(v);
            let share = |pred: &dyn Fn(u64) -> bool| {
                (!v.is_empty())
                    .then(|| v.iter().filter(|&&x| pred(x)).count() as f64 / v.len() as f64)
            };
            json!({
                "samples": v.len(),
                "mean_ms": mean(v),
                "p50_ms": percentile(&s, 50.0),
                "p99_ms": percentile(&s, 99.0),
                "share_0ms": share(&|x| x == 0),
                "share_1ms": share(&|x| x == 1),
                "share_2ms_or_more": share(&|x| x >= 2),
            })
        }

        fn to_json(&self) -> Value {
            json!({
                "resolution_ms": 1,
                "stopping_to_first_wait": LogView::summary(&self.stopping_to_ready_ms),
                "stopping_to_worker_running": LogView::summary(&self.stopping_to_running_ms),
                "worker_running_to_first_wait": LogView::summary(&self.running_to_ready_ms),
            })
        }
    }

    /// WARN/ERRO/CRIT/panic lines of the logs (the scale log's expected
    /// `worker died` lines after kill -9 are counted, not listed).
    fn scan_logs(dir: &Path) -> (Vec<String>, usize) {
        let mut lines = Vec::new();
        let mut expected = 0;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return (lines, expected);
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.starts_with("cargo-build") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for line in text.lines() {
                if ![" WARN ", " ERRO ", " CRIT ", "panicked"]
                    .iter()
                    .any(|w| line.contains(w))
                {
                    continue;
                }
                if name.starts_with("scale")
                    && line.contains(" WARN worker died, ")
                    && line.contains("SIGKILL")
                {
                    expected += 1;
                } else {
                    lines.push(format!("{name}: {line}"));
                }
            }
        }
        (lines, expected)
    }

    // -- the build ------------------------------------------------------------

    struct Examples {
        forking: PathBuf,
        preforking: PathBuf,
    }

    /// Builds the examples with the cargo running this bench; falls back to
    /// existing binaries if the build fails.
    fn build_examples(
        target_dir: &Path,
        profile_dir: &Path,
        log_dir: &Path,
        notes: &mut Vec<String>,
    ) -> Result<Examples, String> {
        let ex = Examples {
            forking: profile_dir.join("examples").join("forking"),
            preforking: profile_dir.join("examples").join("preforking"),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let build_log = log_dir.join("cargo-build-examples.log");
        let file = std::fs::File::create(&build_log).map_err(|e| format!("{e}"))?;
        let spawned = Command::new(cargo)
            .args(["build", "--quiet", "--release", "--examples"])
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
            Ok(()) => Ok(ex),
            Err(err) if ex.forking.exists() && ex.preforking.exists() => {
                let note = format!(
                    "WARNING: `cargo build --release --examples` failed ({err}, see {}); measured the existing, possibly stale, binaries",
                    build_log.display()
                );
                eprintln!("{note}");
                notes.push(note);
                Ok(ex)
            }
            Err(err) => Err(format!(
                "`cargo build --release --examples` failed ({err}), see {}",
                build_log.display()
            )),
        }
    }

    fn example_cmd(bin: &Path, log: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("0")
            .arg("--foreground")
            .arg("--logfile")
            .arg(log)
            .args(args);
        cmd
    }

    fn reference_cmd(exe: &Path, role: &str) -> Command {
        let mut cmd = Command::new(exe);
        cmd.env(ROLE_ENV, role);
        cmd
    }

    // -- section 1: throughput --------------------------------------------------

    const FORKING: usize = 0;
    const PREFORKING: usize = 1;
    const REFERENCE: usize = 2;
    const THROUGHPUT_LABELS: [&str; 3] = [
        "forking example (max_children 3)",
        "preforking example (as shipped, requests 1)",
        "reference (std + nix, fork per connection)",
    ];
    const THROUGHPUT_KEYS: [&str; 3] = ["forking_example", "preforking_example", "reference"];

    struct Throughput {
        /// `[server][concurrency]`.
        cells: Vec<Vec<Cell>>,
        forking_memory: Memory,
        preforking_memory: Memory,
        idle: Vec<Value>,
        stops: Vec<Value>,
    }

    impl Throughput {
        fn ratio(&self, server: usize, ci: usize) -> Option<f64> {
            let base = self.cells[REFERENCE][ci].rate();
            (base > 0.0).then(|| self.cells[server][ci].rate() / base)
        }
    }

    fn throughput(
        exe: &Path,
        ex: &Examples,
        log_dir: &Path,
        notes: &mut Vec<String>,
    ) -> Result<Throughput, String> {
        let mut servers: Vec<Server> = Vec::new();
        for i in 0..3 {
            let log = log_dir.join(format!("{}.log", THROUGHPUT_KEYS[i]));
            let (cmd, daemon) = match i {
                FORKING => (
                    example_cmd(
                        &ex.forking,
                        &log,
                        &["--max-children", &MAX_CHILDREN.to_string()],
                    ),
                    true,
                ),
                PREFORKING => (example_cmd(&ex.preforking, &log, &[]), true),
                _ => (reference_cmd(exe, "reference-server"), false),
            };
            match start(THROUGHPUT_LABELS[i], cmd, log, daemon, true) {
                Ok(server) => servers.push(server),
                Err(err) => {
                    stop_all(&mut servers, notes);
                    return Err(format!("{}: {err}", THROUGHPUT_LABELS[i]));
                }
            }
        }
        let mut cells: Vec<Vec<Cell>> = (0..3)
            .map(|_| CONCURRENCY.iter().map(|_| Cell::default()).collect())
            .collect();
        for round in 0..ROUNDS {
            for (ci, &threads) in CONCURRENCY.iter().enumerate() {
                let mut order: Vec<usize> = (0..servers.len()).collect();
                if (round + ci) % 2 == 1 {
                    order.reverse();
                }
                for si in order {
                    run_cell(servers[si].addr, threads, &mut cells[si][ci]);
                    std::thread::sleep(SETTLE);
                }
            }
        }
        // Once the load is gone: in fork per request only the warm worker
        // left (the default: one), no zombie anywhere; then the idle pools'
        // memory.
        let mut idle = Vec::new();
        for (si, server) in servers.iter().enumerate() {
            let pid = server.pid();
            let end = Instant::now() + Duration::from_secs(3);
            let mut all = scan();
            let settled = |all: &[Proc]| {
                let workers = children_named(all, pid, "-worker").len();
                let zombies = zombies_of(all, &[pid]).len();
                zombies == 0 && (si != FORKING || workers == 1)
            };
            while !settled(&all) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
                all = scan();
            }
            let kids: Vec<String> = all
                .iter()
                .filter(|p| p.ppid == pid)
                .map(|p| format!("{} {} ({})", p.pid, p.comm, p.state))
                .collect();
            let zombies = zombies_of(&all, &[pid]).len();
            if !settled(&all) {
                notes.push(format!(
                    "{}: 3 s after the load: children {kids:?}, {zombies} zombies",
                    server.label
                ));
            }
            idle.push(json!({"server": THROUGHPUT_KEYS[si], "children": kids, "zombies": zombies}));
        }
        let forking_memory = Memory::read(servers[FORKING].pid(), MEMORY_SAMPLE);
        let preforking_memory = Memory::read(servers[PREFORKING].pid(), MEMORY_SAMPLE);
        let stops = stop_all(&mut servers, notes);
        Ok(Throughput {
            cells,
            forking_memory,
            preforking_memory,
            idle,
            stops,
        })
    }

    // -- section 2: spawn-to-ready --------------------------------------------

    struct SpawnReady {
        daemon: Respawn,
        reference: Respawn,
        log: LogView,
        fork_loop_ns: Vec<u64>,
        stops: Vec<Value>,
    }

    const ONE_WORKER: [&str; 10] = [
        "--start-children",
        "1",
        "--min-spare",
        "1",
        "--max-spare",
        "1",
        "--max-children",
        "1",
        "--requests",
        "1",
    ];

    fn spawn_ready(
        exe: &Path,
        ex: &Examples,
        log_dir: &Path,
        notes: &mut Vec<String>,
    ) -> Result<SpawnReady, String> {
        let log = log_dir.join("one_worker_pool.log");
        let daemon = start(
            "preforking example, one-worker pool, requests 1",
            example_cmd(&ex.preforking, &log, &ONE_WORKER),
            log.clone(),
            true,
            true,
        )
        .map_err(|e| format!("one-worker pool: {e}"))?;
        let mut servers = vec![daemon];
        match start(
            "reference respawn (std + nix)",
            reference_cmd(exe, "reference-respawn"),
            log_dir.join("reference_respawn.log"),
            false,
            true,
        ) {
            Ok(server) => servers.push(server),
            Err(err) => {
                stop_all(&mut servers, notes);
                return Err(format!("reference respawn: {err}"));
            }
        }
        let mut out = [Respawn::default(), Respawn::default()];
        for round in 0..ROUNDS {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for si in order {
                run_respawn(servers[si].addr, &mut out[si]);
                std::thread::sleep(SETTLE);
            }
        }
        let fork_loop_ns = fork_loop();
        let stops = stop_all(&mut servers, notes);
        let [daemon, reference] = out;
        Ok(SpawnReady {
            daemon,
            reference,
            log: LogView::read(&log),
            fork_loop_ns,
            stops,
        })
    }

    // -- section 3: scale -------------------------------------------------------

    #[derive(Default)]
    struct Scale {
        /// Start of the process -> 1,000 first `Wait`s in the log.
        full_log: Option<Duration>,
        /// Start of the process -> 1,000 live workers in /proc.
        full_proc: Option<Duration>,
        ready_seen: usize,
        workers_seen: usize,
        memory: Memory,
        idle_seconds: f64,
        supervisor_cpu_ms: Option<f64>,
        spawner_cpu_ms: Option<f64>,
        workers_cpu_ms: Option<f64>,
        killed: usize,
        refill_log: Option<Duration>,
        refill_proc: Option<Duration>,
        refill_ready_seen: usize,
        zombies_at_full: Option<usize>,
        zombies_after: Option<usize>,
        killed_left: Option<usize>,
        crash_lines: usize,
        stop: Vec<Value>,
        stop_ms: Option<f64>,
    }

    const SCALE_FLAGS: [&str; 10] = [
        "--start-children",
        "1000",
        "--max-children",
        "1000",
        "--min-spare",
        "1000",
        "--max-spare",
        "1000",
        "--requests",
        "0",
    ];

    /// Polls the log until `want` workers outside `exclude` logged their
    /// first `Wait`; returns when, and how many it saw.
    fn wait_ready(
        tail: &mut LogTail,
        exclude: &HashSet<i32>,
        want: usize,
        since: Instant,
        alive: &mut dyn FnMut() -> bool,
    ) -> (Option<Duration>, usize) {
        let mut ready: HashSet<i32> = HashSet::new();
        let end = since + SCALE_DEADLINE;
        loop {
            for line in tail.lines() {
                if is_first_wait(line.as_str())
                    && let Some(pid) = line_pid(&line)
                    && !exclude.contains(&pid)
                {
                    ready.insert(pid);
                }
            }
            if ready.len() >= want {
                return (Some(since.elapsed()), ready.len());
            }
            if Instant::now() > end || !alive() {
                return (None, ready.len());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Polls /proc until `want` live workers outside `exclude` are children
    /// of `supervisor`.
    fn wait_workers(
        supervisor: i32,
        exclude: &HashSet<i32>,
        want: usize,
        since: Instant,
    ) -> (Option<Duration>, Vec<Proc>) {
        let end = since + SCALE_DEADLINE;
        loop {
            let workers: Vec<Proc> = children_named(&scan(), supervisor, "-worker")
                .into_iter()
                .filter(|p| !exclude.contains(&p.pid))
                .collect();
            if workers.len() >= want {
                return (Some(since.elapsed()), workers);
            }
            if Instant::now() > end {
                return (None, workers);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn scale(ex: &Examples, log_dir: &Path, notes: &mut Vec<String>) -> Result<Scale, String> {
        let log = log_dir.join("scale.log");
        let mut sc = Scale::default();
        let t0 = Instant::now();
        let server = start(
            "preforking example, pool of 1000",
            example_cmd(&ex.preforking, &log, &SCALE_FLAGS),
            log.clone(),
            true,
            false,
        )
        .map_err(|e| format!("pool of {SCALE}: {e}"))?;
        let sup = server.pid();
        let mut tail = LogTail::new(&log);
        let none = HashSet::new();
        let mut alive = || stat(sup).is_some_and(|p| p.state != 'Z');
        (sc.full_log, sc.ready_seen) = wait_ready(&mut tail, &none, SCALE, t0, &mut alive);
        let (full_proc, workers) = wait_workers(sup, &none, SCALE, t0);
        sc.full_proc = full_proc;
        sc.workers_seen = workers.len();
        if sc.full_log.is_none() || sc.full_proc.is_none() {
            notes.push(format!(
                "pool of {SCALE}: not full within {SCALE_DEADLINE:?}: {} ready in the log, {} worker processes",
                sc.ready_seen, sc.workers_seen
            ));
        }
        sc.zombies_at_full = Some(zombies_of(&scan(), &[sup]).len());
        sc.memory = Memory::read(sup, MEMORY_SAMPLE);

        // CPU while the pool idles, from every thread's schedstat (ns).
        let all = scan();
        let spawner = children_named(&all, sup, "-spawner").first().map(|p| p.pid);
        let worker_pids: Vec<i32> = children_named(&all, sup, "-worker")
            .iter()
            .map(|p| p.pid)
            .collect();
        let cpu = || -> (Option<u64>, Option<u64>, u64) {
            let workers = worker_pids.iter().filter_map(|&p| cpu_ns(p)).sum();
            (cpu_ns(sup), spawner.and_then(cpu_ns), workers)
        };
        let before = cpu();
        let t_idle = Instant::now();
        std::thread::sleep(IDLE_WINDOW);
        let after = cpu();
        sc.idle_seconds = t_idle.elapsed().as_secs_f64();
        let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?) as f64 / 1e6);
        sc.supervisor_cpu_ms = delta(before.0, after.0);
        sc.spawner_cpu_ms = delta(before.1, after.1);
        sc.workers_cpu_ms = Some(after.2.saturating_sub(before.2) as f64 / 1e6);

        // kill -9 every worker; time until the pool is full again.
        let old: Vec<i32> = children_named(&scan(), sup, "-worker")
            .iter()
            .map(|p| p.pid)
            .collect();
        let old_set: HashSet<i32> = old.iter().copied().collect();
        let _ = tail.lines();
        let t1 = Instant::now();
        for &pid in &old {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                sc.killed += 1;
            }
        }
        (sc.refill_log, sc.refill_ready_seen) =
            wait_ready(&mut tail, &old_set, SCALE, t1, &mut alive);
        let (refill_proc, _) = wait_workers(sup, &old_set, SCALE, t1);
        sc.refill_proc = refill_proc;
        if sc.refill_log.is_none() || sc.refill_proc.is_none() {
            notes.push(format!(
                "pool of {SCALE}: not refilled within {SCALE_DEADLINE:?} of kill -9: {} new workers ready in the log",
                sc.refill_ready_seen
            ));
        }
        let all = scan();
        let mut parents = vec![sup];
        parents.extend(spawner);
        let zombies_now = zombies_of(&all, &parents).len();
        std::thread::sleep(Duration::from_millis(500));
        let all = scan();
        sc.zombies_after = Some(zombies_of(&all, &parents).len());
        sc.killed_left = Some(
            all.iter()
                .filter(|p| old_set.contains(&p.pid) && p.ppid == sup)
                .count(),
        );
        sc.zombies_at_full = sc.zombies_at_full.map(|z| z.max(zombies_now));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        sc.crash_lines = text.lines().filter(|l| l.contains("died young")).count();

        // Shut the pool down.
        let t2 = Instant::now();
        let mut servers = vec![server];
        sc.stop = stop_all(&mut servers, notes);
        sc.stop_ms = Some(t2.elapsed().as_secs_f64() * 1e3);
        Ok(sc)
    }

    // -- section 5: actix-web prefork vs threads ----------------------------------

    /// What the web bench wrote to `web.json`, and where it ran from.
    struct Web {
        exe: PathBuf,
        seconds: f64,
        json: Value,
    }

    /// Runs `cmd` with stdout and stderr to files, under `deadline`
    /// (killed if it overruns).
    fn run_logged(
        mut cmd: Command,
        stdout: &Path,
        stderr: &Path,
        deadline: Duration,
    ) -> Result<(), String> {
        let out =
            std::fs::File::create(stdout).map_err(|e| format!("{}: {e}", stdout.display()))?;
        let err =
            std::fs::File::create(stderr).map_err(|e| format!("{}: {e}", stderr.display()))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        match wait_deadline(&mut child, deadline) {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("exited with {status}; see {}", stderr.display())),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "took over {deadline:?}, killed; see {}",
                    stderr.display()
                ))
            }
        }
    }

    /// Builds the `web` bench with the cargo running this bench and returns
    /// its executable (from cargo's JSON messages).
    fn build_web(target_dir: &Path, log_dir: &Path) -> Result<PathBuf, String> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "bench",
            "--quiet",
            "--bench",
            "web",
            "--no-run",
            "--message-format=json",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        let messages = log_dir.join("cargo-build-web.json");
        let build_log = log_dir.join("cargo-build-web.log");
        run_logged(cmd, &messages, &build_log, BUILD_DEADLINE)
            .map_err(|e| format!("`cargo bench --bench web --no-run`: {e}"))?;
        let text = std::fs::read_to_string(&messages)
            .map_err(|e| format!("{}: {e}", messages.display()))?;
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| {
                m["reason"] == "compiler-artifact"
                    && m["target"]["name"] == "web"
                    && m["target"]["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "bench"))
            })
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .ok_or_else(|| format!("no executable for the web bench in {}", messages.display()))
    }

    fn web(target_dir: &Path, log_dir: &Path) -> Result<Web, String> {
        if !cfg!(feature = "web") {
            return Err("built without the `web` feature; skipped".to_owned());
        }
        let exe = build_web(target_dir, log_dir)?;
        let json_path = target_dir.join("bench").join("web.json");
        let _ = std::fs::remove_file(&json_path);
        let mut cmd = Command::new(&exe);
        cmd.env_remove(ROLE_ENV)
            .env("ACTIX_DAEMON_BENCH_WEB_QUICK", "1")
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        let t = Instant::now();
        run_logged(
            cmd,
            &log_dir.join("web-bench.stdout"),
            &log_dir.join("web-bench.stderr"),
            WEB_DEADLINE,
        )
        .map_err(|e| format!("web bench: {e}"))?;
        let seconds = t.elapsed().as_secs_f64();
        let text = std::fs::read_to_string(&json_path)
            .map_err(|e| format!("{}: {e}", json_path.display()))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json_path.display()))?;
        Ok(Web { exe, seconds, json })
    }

    fn web_rows(out: &mut Vec<Row>, web: &Web) {
        let j = &web.json;
        let n = j["n"].as_u64().unwrap_or(0);
        let s = format!(
            "actix-web prefork ({n} processes x 1 thread) vs threads ({n} threads), {} conns, {} rounds",
            j["connections"], j["rounds"]
        );
        let num = |v: &Value| v.as_f64();
        for m in j["modes"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let mode = m["mode"].as_str().unwrap_or("?");
            let (t, p) = (num(&m["threads_rps_best"]), num(&m["prefork_rps_best"]));
            let r = num(&m["ratio_of_best"]);
            let plain = num(&m["prefork_httpserver_rps_best"]);
            out.push(
                row(&s, format!("{mode}: req/s, best round"), f(p, 0))
                    .reference(format!("{} (threads)", f(t, 0)))
                    .ratio(r)
                    .target(">= 0.95", Some(r.is_some_and(|r| r >= 0.95))),
            );
            out.push(
                row(
                    &s,
                    format!("{mode}: failed requests (ratio: median of the rounds')"),
                    m["failed_requests"].to_string(),
                )
                .ratio(num(&m["median_ratio_per_round"])),
            );
            out.push(
                row(
                    &s,
                    format!(
                        "{mode}: the pool with a plain HttpServer per worker, req/s, best round"
                    ),
                    f(plain, 0),
                )
                .reference(format!("{} (threads)", f(t, 0)))
                .ratio(plain.zip(t).and_then(|(p, t)| (t > 0.0).then(|| p / t))),
            );
            let cpu = &m["cpu_us_per_request"];
            let (tc, pc) = (num(&cpu["threads"]), num(&cpu["prefork"]));
            out.push(
                row(
                    &s,
                    format!("{mode}: server CPU per request, us (supervisor + workers)"),
                    format!(
                        "{} ({} + {})",
                        f(pc, 1),
                        f(num(&cpu["prefork_supervisor"]), 1),
                        f(num(&cpu["prefork_workers"]), 1)
                    ),
                )
                .reference(format!("{} (threads)", f(tc, 1)))
                .ratio(tc.zip(pc).and_then(|(t, p)| (p > 0.0).then(|| t / p))),
            );
        }
        let mw = &j["middleware"];
        let cost = num(&mw["cost_ns"]);
        out.push(
            row(
                &s,
                "scoreboard middleware cost per request, ns (without / with)",
                format!(
                    "{} ({} / {})",
                    f(cost, 0),
                    f(num(&mw["without_ns"]), 0),
                    f(num(&mw["with_ns"]), 0)
                ),
            )
            .target("< 1 us", Some(cost.is_some_and(|c| c < 1000.0))),
        );
    }

    // -- the report -------------------------------------------------------------

    /// One row of the table (and of the JSON's `rows`).
    struct Row {
        section: String,
        measure: String,
        value: String,
        reference: String,
        ratio: String,
        target: String,
        met: Option<bool>,
    }

    fn row(section: &str, measure: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            section: section.to_owned(),
            measure: measure.into(),
            value: value.into(),
            reference: String::new(),
            ratio: String::new(),
            target: String::new(),
            met: None,
        }
    }

    impl Row {
        fn reference(mut self, r: impl Into<String>) -> Row {
            self.reference = r.into();
            self
        }
        fn ratio(mut self, r: Option<f64>) -> Row {
            self.ratio = f(r, 2);
            self
        }
        fn target(mut self, t: &str, met: Option<bool>) -> Row {
            self.target = t.to_owned();
            self.met = met;
            self
        }
        fn json(&self) -> Value {
            json!({
                "section": self.section,
                "measure": self.measure,
                "value": self.value,
                "reference": self.reference,
                "ratio": self.ratio,
                "target": self.target,
                "met": self.met,
            })
        }
    }

    fn rows(
        tp: Option<&Throughput>,
        sr: Option<&SpawnReady>,
        sc: Option<&Scale>,
        web: Option<&Web>,
    ) -> Vec<Row> {
        let mut out = Vec::new();
        if let Some(tp) = tp {
            for (si, section, goal) in [
                (
                    FORKING,
                    "fork per request: forking example (max_children 3) vs reference",
                    0.5,
                ),
                (
                    PREFORKING,
                    "pre-fork, requests 1: preforking example (as shipped) vs reference",
                    0.4,
                ),
            ] {
                for (ci, &threads) in CONCURRENCY.iter().enumerate() {
                    let cell = &tp.cells[si][ci];
                    let base = &tp.cells[REFERENCE][ci];
                    let r = tp.ratio(si, ci);
                    out.push(
                        row(
                            section,
                            format!("{threads} client(s): conn/s"),
                            format!("{:.0}", cell.rate()),
                        )
                        .reference(format!("{:.0}", base.rate()))
                        .ratio(r)
                        .target(&format!(">= {goal}"), r.map(|r| r >= goal)),
                    );
                    out.push(
                        row(
                            section,
                            format!("{threads} client(s): p50 / p99 ms"),
                            pair_ms(p50_p99_ms(&cell.latency_ns)),
                        )
                        .reference(pair_ms(p50_p99_ms(&base.latency_ns))),
                    );
                    out.push(
                        row(
                            section,
                            format!("{threads} client(s): connections / errors"),
                            format!("{} / {}", cell.conns, cell.errors),
                        )
                        .reference(format!("{} / {}", base.conns, base.errors)),
                    );
                }
            }
        }
        if let Some(sr) = sr {
            let s = "spawn-to-ready: one-worker pool, requests 1 (client side)";
            let (p50, p99) = p50_p99_ms(&sr.daemon.close_to_served_ns);
            let (r50, r99) = p50_p99_ms(&sr.reference.close_to_served_ns);
            out.push(
                row(
                    s,
                    "close -> next served by a fresh worker, p50 / p99 ms",
                    pair_ms((p50, p99)),
                )
                .reference(format!("{} (respawn ref.)", pair_ms((r50, r99))))
                .ratio(p50.zip(r50).map(|(a, b)| b / a))
                .target("p50 < 1 ms", p50.map(|p| p < 1.0)),
            );
            out.push(
                row(
                    s,
                    "samples / errors",
                    format!(
                        "{} / {}",
                        sr.daemon.close_to_served_ns.len(),
                        sr.daemon.errors
                    ),
                )
                .reference(format!(
                    "{} / {}",
                    sr.reference.close_to_served_ns.len(),
                    sr.reference.errors
                )),
            );
            out.push(
                row(
                    s,
                    "client floor: 2nd PING round trip p50 / p99 ms",
                    pair_ms(p50_p99_ms(&sr.daemon.ping_rtt_ns)),
                )
                .reference(pair_ms(p50_p99_ms(&sr.reference.ping_rtt_ns))),
            );
            out.push(row(
                s,
                "bare fork + _exit + waitpid loop p50 / p99 ms",
                pair_ms(p50_p99_ms(&sr.fork_loop_ns)),
            ));
            let l = "spawn-to-ready: the log's view (1 ms timestamps)";
            let mean_of = |v: &[u64]| f(mean(v), 2);
            out.push(row(
                l,
                "worker 'stopping' -> next worker's first '.', mean ms (n)",
                format!(
                    "{} ({})",
                    mean_of(&sr.log.stopping_to_ready_ms),
                    sr.log.stopping_to_ready_ms.len()
                ),
            ));
            out.push(row(
                l,
                "  of which 'stopping' -> 'worker running', mean ms",
                mean_of(&sr.log.stopping_to_running_ms),
            ));
            out.push(row(
                l,
                "  of which 'worker running' -> first '.', mean ms",
                mean_of(&sr.log.running_to_ready_ms),
            ));
        }
        if let Some(sc) = sc {
            let s =
                "scale: preforking pool of 1000 (start = min = max spare = max 1000, requests 0)";
            let secs = |d: Option<Duration>| f(d.map(|d| d.as_secs_f64()), 3);
            let both = |a: Option<Duration>, b: Option<Duration>| a.zip(b).map(|(a, b)| a.max(b));
            let full = both(sc.full_log, sc.full_proc);
            out.push(
                row(
                    s,
                    "start -> 1000 workers ready (log) and alive (/proc), s",
                    format!(
                        "{} ({} / {})",
                        secs(full),
                        secs(sc.full_log),
                        secs(sc.full_proc)
                    ),
                )
                .target(
                    "< 2 s",
                    Some(full.is_some_and(|d| d < Duration::from_secs(2))),
                ),
            );
            let refill = both(sc.refill_log, sc.refill_proc);
            out.push(
                row(
                    s,
                    format!("kill -9 of {} workers -> full again, s", sc.killed),
                    format!(
                        "{} ({} / {})",
                        secs(refill),
                        secs(sc.refill_log),
                        secs(sc.refill_proc)
                    ),
                )
                .target(
                    "< 2 s",
                    Some(refill.is_some_and(|d| d < Duration::from_secs(2))),
                ),
            );
            let z = sc.zombies_after.unwrap_or(usize::MAX);
            out.push(
                row(
                    s,
                    "zombies at full / 0.5 s later; killed workers left",
                    format!(
                        "{} / {}; {}",
                        sc.zombies_at_full.map_or("-".into(), |z| z.to_string()),
                        sc.zombies_after.map_or("-".into(), |z| z.to_string()),
                        sc.killed_left.map_or("-".into(), |z| z.to_string())
                    ),
                )
                .target("0", Some(z == 0 && sc.killed_left == Some(0))),
            );
            out.push(row(
                s,
                format!(
                    "supervisor CPU over {:.1} s idle, ms (% of a core)",
                    sc.idle_seconds
                ),
                format!(
                    "{} ({}%)",
                    f(sc.supervisor_cpu_ms, 2),
                    f(
                        sc.supervisor_cpu_ms.map(|ms| ms / sc.idle_seconds / 10.0),
                        2
                    )
                ),
            ));
            out.push(row(
                s,
                "spawner / all 1000 workers CPU over the same window, ms",
                format!("{} / {}", f(sc.spawner_cpu_ms, 2), f(sc.workers_cpu_ms, 1)),
            ));
            out.push(row(
                s,
                "'died young' lines after kill -9 (crash backoff)",
                sc.crash_lines.to_string(),
            ));
            out.push(row(s, "shutdown (TERM) of the pool, ms", f(sc.stop_ms, 0)));
        }
        let memory_rows = |out: &mut Vec<Row>, section: &str, m: &Memory, targets: bool| {
            let sup = mib(m.supervisor_rss_kib);
            out.push(row(section, "supervisor RSS MiB", f(sup, 2)).target(
                if targets { "< 8 MiB" } else { "" },
                targets.then(|| sup.is_some_and(|v| v < 8.0)),
            ));
            out.push(row(
                section,
                "spawner RSS MiB",
                f(mib(m.spawner_rss_kib), 2),
            ));
            if m.worker_private_kib.is_empty() {
                return;
            }
            let unique = mib(Memory::p50(&m.worker_private_kib));
            out.push(
                row(
                    section,
                    format!(
                        "worker unique (Private_Clean+Private_Dirty) MiB p50 / max (n={})",
                        m.worker_private_kib.len()
                    ),
                    format!(
                        "{} / {}",
                        f(unique, 2),
                        f(mib(Memory::max(&m.worker_private_kib)), 2)
                    ),
                )
                .target(
                    if targets { "< 2 MiB" } else { "" },
                    targets.then(|| unique.is_some_and(|v| v < 2.0)),
                ),
            );
            out.push(row(
                section,
                "worker Pss MiB p50 / max; Rss p50",
                format!(
                    "{} / {}; {}",
                    f(mib(Memory::p50(&m.worker_pss_kib)), 2),
                    f(mib(Memory::max(&m.worker_pss_kib)), 2),
                    f(mib(Memory::p50(&m.worker_rss_kib)), 2)
                ),
            ));
        };
        if let Some(sc) = sc {
            memory_rows(
                &mut out,
                &format!("memory: pool of 1000, idle ({} workers)", sc.memory.workers),
                &sc.memory,
                true,
            );
        }
        if let Some(tp) = tp {
            memory_rows(
                &mut out,
                &format!(
                    "memory: preforking example as shipped, idle ({} workers)",
                    tp.preforking_memory.workers
                ),
                &tp.preforking_memory,
                false,
            );
            memory_rows(
                &mut out,
                "memory: forking example, idle",
                &tp.forking_memory,
                false,
            );
        }
        if let Some(web) = web {
            web_rows(&mut out, web);
        }
        out
    }

    fn render(rows: &[Row], header: &str, notes: &[String]) -> String {
        let w =
            |f: &dyn Fn(&Row) -> usize, min: usize| rows.iter().map(f).max().unwrap_or(0).max(min);
        let wm = w(&|r| r.measure.len(), 7);
        let wv = w(&|r| r.value.len(), 5);
        let wr = w(&|r| r.reference.len(), 9);
        let mut out = format!(
            "\n{header}\nratio: daemon / reference for conn/s, reference / daemon for times (1.00 = as good as the reference)\n"
        );
        out += &format!(
            "{:<wm$}  {:>wv$}  {:>wr$}  {:>5}  {:<9} {}\n",
            "measure", "value", "reference", "ratio", "target", "met"
        );
        let mut section = "";
        for r in rows {
            if r.section != section {
                section = &r.section;
                out += &format!("-- {section}\n");
            }
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            out += &format!(
                "{:<wm$}  {:>wv$}  {:>wr$}  {:>5}  {:<9} {}\n",
                r.measure, r.value, r.reference, r.ratio, r.target, met
            );
        }
        for note in notes {
            out += &format!("note: {note}\n");
        }
        out
    }

    // -- main -----------------------------------------------------------------

    /// Busy CPU of the whole machine (user + nice + system, all CPUs) and
    /// of this process and its reaped descendants, in seconds: their
    /// difference over a section is what other processes used meanwhile
    /// (the machine may be shared; a noisy neighbour shows here).
    #[derive(Clone, Copy)]
    struct Busy {
        machine: f64,
        ours: f64,
        at: Instant,
    }

    impl Busy {
        fn now() -> Busy {
            use nix::sys::resource::{UsageWho, getrusage};
            let tick = procfs::ticks_per_second() as f64;
            let machine = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| {
                    let line = t.lines().find(|l| l.starts_with("cpu "))?.to_owned();
                    let v: Vec<f64> = line
                        .split_whitespace()
                        .skip(1)
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    Some((v.first()? + v.get(1)? + v.get(2)?) / tick)
                })
                .unwrap_or(0.0);
            let secs = |who| {
                getrusage(who).map_or(0.0, |u| {
                    let t = |tv: nix::sys::time::TimeVal| {
                        tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6
                    };
                    t(u.user_time()) + t(u.system_time())
                })
            };
            Busy {
                machine,
                ours: secs(UsageWho::RUSAGE_SELF) + secs(UsageWho::RUSAGE_CHILDREN),
                at: Instant::now(),
            }
        }

        /// Other processes' CPU since `self`, as a share of the machine.
        fn others_since(&self, cpus: usize) -> Value {
            let end = Busy::now();
            let wall = end.at.duration_since(self.at).as_secs_f64();
            let others = ((end.machine - self.machine) - (end.ours - self.ours)).max(0.0);
            json!({
                "seconds": wall,
                "our_cpu_s": end.ours - self.ours,
                "other_cpu_s": others,
                "other_share_of_machine": (wall > 0.0 && cpus > 0).then(|| others / (wall * cpus as f64)),
            })
        }
    }

    fn raise_nofile(notes: &mut Vec<String>) -> Value {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, hard)) => {
                if soft < hard {
                    if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                        notes.push(format!(
                            "cannot raise RLIMIT_NOFILE from {soft} to {hard}: {err}"
                        ));
                    }
                }
                let now = getrlimit(Resource::RLIMIT_NOFILE)
                    .map(|l| l.0)
                    .unwrap_or(soft);
                json!({"before": soft, "now": now, "hard": hard})
            }
            Err(err) => {
                notes.push(format!("getrlimit(RLIMIT_NOFILE): {err}"));
                Value::Null
            }
        }
    }

    pub fn main() -> Result<(), String> {
        let started = Instant::now();
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("subreaper: {e}"))?;
        let mut notes: Vec<String> = Vec::new();
        let nofile = raise_nofile(&mut notes);
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        // <target>/release/deps/processes-<hash>
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
        let log_dir = out_dir.join("processes-logs");
        let _ = std::fs::remove_dir_all(&log_dir);
        std::fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;

        let ex = build_examples(&target_dir, &profile_dir, &log_dir, &mut notes)?;

        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let loadavg_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let mut noise = Vec::new();
        eprintln!("processes bench: throughput ...");
        let busy = Busy::now();
        let tp = throughput(&exe, &ex, &log_dir, &mut notes)
            .map_err(|e| notes.push(format!("throughput section failed: {e}")))
            .ok();
        noise.push(("throughput", busy.others_since(cpus)));
        eprintln!("processes bench: spawn-to-ready ...");
        let busy = Busy::now();
        let sr = spawn_ready(&exe, &ex, &log_dir, &mut notes)
            .map_err(|e| notes.push(format!("spawn-to-ready section failed: {e}")))
            .ok();
        noise.push(("spawn_to_ready", busy.others_since(cpus)));
        eprintln!("processes bench: scale ...");
        let busy = Busy::now();
        let sc = scale(&ex, &log_dir, &mut notes)
            .map_err(|e| notes.push(format!("scale section failed: {e}")))
            .ok();
        noise.push(("scale", busy.others_since(cpus)));
        eprintln!("processes bench: actix-web prefork vs threads (the web bench, quick) ...");
        let busy = Busy::now();
        let web = web(&target_dir, &log_dir)
            .map_err(|e| notes.push(format!("actix-web prefork vs threads section failed: {e}")))
            .ok();
        noise.push(("web", busy.others_since(cpus)));

        let leftovers = kill_descendants();
        if !leftovers.is_empty() {
            notes.push(format!(
                "left behind after the servers exited (killed and reaped by the bench): {leftovers:?}"
            ));
        }
        let (log_lines, expected_died) = scan_logs(&log_dir);
        if !log_lines.is_empty() {
            notes.push(format!(
                "{} WARN/ERROR/panic lines in {}; first: {:?}",
                log_lines.len(),
                log_dir.display(),
                log_lines.iter().take(5).collect::<Vec<_>>()
            ));
        }
        if notes.is_empty() {
            notes.push(
                "checks: no unexpected WARN/ERROR in the logs; no process left behind".to_owned(),
            );
        }

        let shares: Vec<String> = noise
            .iter()
            .map(|(name, v)| {
                let share = v["other_share_of_machine"].as_f64().map(|s| s * 100.0);
                format!("{name} {}%", f(share, 0))
            })
            .collect();
        let header = format!(
            "actix-daemon processes bench: {cpus} cpus, release examples, all on 127.0.0.1, {ROUNDS} interleaved rounds; total {:.1} s\n\
             other processes' share of the machine's CPU meanwhile (a shared machine adds noise): {}; loadavg at start {}",
            started.elapsed().as_secs_f64(),
            shares.join(", "),
            loadavg_start
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        let table = rows(tp.as_ref(), sr.as_ref(), sc.as_ref(), web.as_ref());
        print!("{}", render(&table, &header, &notes));

        let json = json!({
            "bench": "processes",
            "cpus": cpus,
            "rounds": ROUNDS,
            "rlimit_nofile": nofile,
            "examples": {"forking": ex.forking.display().to_string(), "preforking": ex.preforking.display().to_string()},
            "rows": table.iter().map(Row::json).collect::<Vec<_>>(),
            "throughput": tp.as_ref().map(|tp| json!({
                "cell_seconds_per_round": CELL.as_secs_f64(),
                "cells": (0..3).map(|si| json!({
                    "server": THROUGHPUT_KEYS[si],
                    "label": THROUGHPUT_LABELS[si],
                    "by_concurrency": CONCURRENCY.iter().enumerate().map(|(ci, &c)| {
                        let mut v = tp.cells[si][ci].to_json();
                        v["concurrency"] = json!(c);
                        v["ratio_to_reference"] = json!(tp.ratio(si, ci));
                        v
                    }).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "idle": tp.idle,
                "stops": tp.stops,
                "memory_preforking": tp.preforking_memory.to_json(),
                "memory_forking": tp.forking_memory.to_json(),
            })),
            "spawn_to_ready": sr.as_ref().map(|sr| {
                let (p50, p99) = p50_p99_ms(&sr.fork_loop_ns);
                json!({
                    "pool": ONE_WORKER,
                    "cell_seconds_per_round": RESPAWN_CELL.as_secs_f64(),
                    "daemon": sr.daemon.to_json(),
                    "reference_respawn": sr.reference.to_json(),
                    "log": sr.log.to_json(),
                    "bare_fork_exit_wait": {"iterations": sr.fork_loop_ns.len(), "p50_ms": p50, "p99_ms": p99, "mean_ms": mean(&sr.fork_loop_ns).map(|v| v / 1e6)},
                    "stops": sr.stops,
                })
            }),
            "scale": sc.as_ref().map(|sc| json!({
                "flags": SCALE_FLAGS,
                "full_log_s": sc.full_log.map(|d| d.as_secs_f64()),
                "full_proc_s": sc.full_proc.map(|d| d.as_secs_f64()),
                "ready_seen": sc.ready_seen,
                "workers_seen": sc.workers_seen,
                "idle_seconds": sc.idle_seconds,
                "supervisor_cpu_ms": sc.supervisor_cpu_ms,
                "spawner_cpu_ms": sc.spawner_cpu_ms,
                "workers_cpu_ms": sc.workers_cpu_ms,
                "killed": sc.killed,
                "refill_log_s": sc.refill_log.map(|d| d.as_secs_f64()),
                "refill_proc_s": sc.refill_proc.map(|d| d.as_secs_f64()),
                "refill_ready_seen": sc.refill_ready_seen,
                "zombies_at_full": sc.zombies_at_full,
                "zombies_after_500ms": sc.zombies_after,
                "killed_workers_left": sc.killed_left,
                "died_young_lines": sc.crash_lines,
                "worker_died_sigkill_lines": expected_died,
                "memory": sc.memory.to_json(),
                "stop": sc.stop,
                "stop_ms": sc.stop_ms,
            })),
            "web": web.as_ref().map(|w| json!({
                "executable": w.exe.display().to_string(),
                "seconds": w.seconds,
                "quick": true,
                "results": w.json,
            })),
            "leftover_processes": leftovers,
            "log_problem_lines": log_lines,
            "notes": notes,
            "other_processes_cpu": noise.iter().map(|(k, v)| json!({"section": k, "usage": v})).collect::<Vec<_>>(),
            "loadavg_start": loadavg_start.trim(),
            "total_seconds": started.elapsed().as_secs_f64(),
        });
        let path = out_dir.join("processes.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&json).expect("JSON") + "\n",
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("numbers written to {}", path.display());
        Ok(())
    }
}
