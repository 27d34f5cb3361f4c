//! Test harness: runs the example daemons as real processes, talks to them
//! over TCP, and makes sure no process outlives a test, even a failing one.
//!
//! The test process makes itself a child subreaper, so a detached daemon's
//! supervisor becomes its child once the launching process exits: the test
//! can wait for its exit status, and reaps whatever is left on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Sets its flag when dropped: client threads that loop until it is set
/// end when their test does, even a failing one.
pub struct StopOnDrop(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The default deadline of every wait.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Path of an example binary built by `cargo test` beside the test binary.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .expect("deps dir")
        .parent()
        .expect("profile dir");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} not built: run the tests with cargo test or cargo nextest run",
        path.display()
    );
    path
}

/// Polls `cond` every 5 ms until it holds or `deadline` passes.
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `pid` exists at all (a zombie counts).
pub fn exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A process's name (`comm`).
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A process's parent pid.
pub fn ppid(pid: i32) -> i32 {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .map(|s| s.ppid)
        .unwrap_or(0)
}

/// A process's state letter (`R`, `S`, `Z`...), or `None` if it is gone.
pub fn proc_state(pid: i32) -> Option<char> {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .ok()
        .map(|s| s.state)
}

/// Targets of a process's open descriptors.
pub fn fd_targets(pid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.display().to_string())
        .collect()
}

/// A process's resident memory in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    procfs::process::Process::new(pid)
        .and_then(|p| p.status())
        .ok()
        .and_then(|s| s.vmrss)
        .unwrap_or(0)
}

/// A process's thread count.
pub fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One client connection speaking the examples' line protocol.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    pub fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Conn {
            writer: stream.try_clone().expect("clone"),
            reader: BufReader::new(stream),
        }
    }

    pub fn set_timeout(&self, timeout: Duration) {
        self.writer
            .set_read_timeout(Some(timeout))
            .expect("timeout");
    }

    pub fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .expect("write");
    }

    /// Reads one answer line (without CR LF); an error on timeout or EOF.
    pub fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        assert!(
            line.ends_with("\r\n"),
            "answer {line:?} does not end in CR LF"
        );
        line.truncate(line.len() - 2);
        Ok(line)
    }

    /// Sends a command and reads its one-line answer.
    pub fn cmd(&mut self, command: &str) -> String {
        self.send(command);
        self.line()
            .unwrap_or_else(|err| panic!("no answer to {command}: {err}"))
    }

    /// Sends a command answered by lines ending with `DONE`.
    pub fn report(&mut self, command: &str) -> Vec<String> {
        self.send(command);
        let mut lines = Vec::new();
        loop {
            let line = self
                .line()
                .unwrap_or_else(|err| panic!("{command} report cut short: {err}; got {lines:?}"));
            if line == "DONE" {
                return lines;
            }
            lines.push(line);
        }
    }

    /// Sends `DONE`, expects `OK`, then the server's close.
    pub fn done(mut self) {
        assert_eq!(self.cmd("DONE"), "OK");
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        assert!(rest.is_empty(), "data after OK: {rest:?}");
    }
}

/// What [`Daemon::launch`] saw: the daemon's guard and its launcher's end.
pub struct Launch {
    pub daemon: Daemon,
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A running example daemon, killed (with everything it started) on drop.
pub struct Daemon {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub log: PathBuf,
    pub supervisor: i32,
    /// Every pid of this daemon ever seen, to kill and reap on drop.
    seen: std::cell::RefCell<Vec<i32>>,
}

/// Makes the test process a child subreaper (once is enough).
pub fn subreaper() {
    nix::sys::prctl::set_child_subreaper(true).expect("subreaper");
}

impl Daemon {
    /// Starts an example detached (its default) and waits until the
    /// launching process reports it ready.
    pub fn start(name: &str, args: &[&str]) -> Daemon {
        Daemon::start_with(name, args, |_, _| {})
    }

    /// Like [`start`](Self::start), with a hook to adjust the command (and
    /// its directory) before it runs.
    pub fn start_with(
        name: &str,
        args: &[&str],
        adjust: impl FnOnce(&mut Command, &Path),
    ) -> Daemon {
        Daemon::start_wrapped(name, &[], args, adjust)
    }

    /// Like [`start_with`](Self::start_with), run through `wrapper` (a
    /// program and its arguments, the example's path and arguments after).
    pub fn start_wrapped(
        name: &str,
        wrapper: &[&str],
        args: &[&str],
        adjust: impl FnOnce(&mut Command, &Path),
    ) -> Daemon {
        let Launch {
            mut daemon,
            status,
            stdout,
            stderr,
        } = Daemon::launch(name, wrapper, args, adjust);
        assert!(
            status.success(),
            "{name} launcher failed: {status:?}, stderr: {stderr}\n{}",
            daemon.report()
        );
        let mut lines = stdout.lines();
        let first = lines.next().unwrap_or_default();
        daemon.port = first
            .trim()
            .strip_prefix("PORT=")
            .unwrap_or_else(|| panic!("first line {first:?} is not PORT=<n>"))
            .parse()
            .expect("port number");
        assert_eq!(lines.next(), None, "only one line on stdout: {stdout:?}");
        assert!(
            wait_until(DEADLINE, || {
                daemon.supervisor = daemon.find_supervisor().unwrap_or(0);
                daemon.supervisor != 0
            }),
            "no supervisor found for {name}"
        );
        daemon
    }

    /// Runs an example's launcher to its end, whether or not it succeeds:
    /// the guard (which kills whatever the daemon left on drop), how the
    /// launcher exited, and what it wrote.
    pub fn launch(
        name: &str,
        wrapper: &[&str],
        args: &[&str],
        adjust: impl FnOnce(&mut Command, &Path),
    ) -> Launch {
        subreaper();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join(format!("{name}.log"));
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(example(name));
                c
            }
            None => Command::new(example(name)),
        };
        command
            .arg("0")
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        adjust(&mut command, dir.path());
        let mut child = command.spawn().expect("spawn example");
        // The launching process prints PORT= and exits once the daemon is
        // ready. Read its stdout on a thread so that every wait has a deadline.
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut all = String::new();
            let _ = BufReader::new(stdout).read_to_string(&mut all);
            let _ = tx.send(all);
        });
        let daemon = Daemon {
            name: name.to_owned(),
            dir,
            port: 0,
            log,
            supervisor: 0,
            seen: Default::default(),
        };
        let output = rx.recv_timeout(DEADLINE);
        let _ = daemon.pids();
        let stdout = output.unwrap_or_else(|_| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{name} launcher did not finish in time\n{}",
                daemon.report()
            )
        });
        let status = wait_child(&mut child, DEADLINE);
        let mut stderr = String::new();
        let _ = child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr);
        Launch {
            daemon,
            status,
            stdout,
            stderr,
        }
    }

    /// Every live process of this daemon: those whose stderr is our log
    /// file (supervisor, spawner, workers).
    pub fn pids(&self) -> Vec<i32> {
        let log = self.log.display().to_string();
        let mut pids = Vec::new();
        if let Ok(all) = procfs::process::all_processes() {
            for p in all.flatten() {
                let target = std::fs::read_link(format!("/proc/{}/fd/2", p.pid))
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                if target == log || target.starts_with(&format!("{}.", log)) {
                    pids.push(p.pid);
                }
            }
        }
        let mut seen = self.seen.borrow_mut();
        for &pid in &pids {
            if !seen.contains(&pid) {
                seen.push(pid);
            }
        }
        pids
    }

    fn find_supervisor(&self) -> Option<i32> {
        self.pids().into_iter().find(|&pid| comm(pid) == self.name)
    }

    /// The spawner's pid.
    pub fn spawner(&self) -> Option<i32> {
        self.pids()
            .into_iter()
            .find(|&pid| comm(pid).ends_with("-spawner"))
    }

    /// The workers' pids.
    pub fn workers(&self) -> Vec<i32> {
        self.pids()
            .into_iter()
            .filter(|&pid| comm(pid).ends_with("-worker"))
            .collect()
    }

    /// Waits until `n` workers run.
    pub fn wait_workers(&self, n: usize) -> Vec<i32> {
        let mut workers = Vec::new();
        assert!(
            wait_until(DEADLINE, || {
                workers = self.workers();
                workers.len() == n
            }),
            "expected {n} workers, have {workers:?}\n{}",
            self.report()
        );
        workers
    }

    pub fn conn(&self) -> Conn {
        Conn::open(self.port)
    }

    /// Waits until the pool's request counter (as a STATUS shows it)
    /// reaches `n`. A worker counts a request just after it closed the
    /// connection, so the last few may land a moment after the clients are
    /// done. Each STATUS is a request too: the counter may pass `n`.
    pub fn wait_requests(&self, n: u64) -> u64 {
        let mut seen = 0;
        let reached = wait_until(DEADLINE, || {
            let mut c = self.conn();
            let status = c.report("STATUS");
            c.done();
            seen = status
                .iter()
                .find_map(|l| l.trim().strip_prefix("Requests "))
                .and_then(|l| l.split([';', ',']).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            seen >= n
        });
        assert!(
            reached,
            "the pool counted {seen} requests, expected {n}\n{}",
            self.report()
        );
        seen
    }

    /// Sends `SIGUSR1` (a graceful reload) `reloads` times, each once
    /// `served` has grown by `per` since the last: the clients behind it
    /// must keep being served through every reload.
    pub fn reload_while_serving(
        &self,
        served: &std::sync::atomic::AtomicUsize,
        reloads: usize,
        per: usize,
    ) {
        use std::sync::atomic::Ordering;
        for _ in 0..reloads {
            let before = served.load(Ordering::Relaxed);
            self.signal(Signal::SIGUSR1);
            assert!(
                wait_until(DEADLINE, || served.load(Ordering::Relaxed) >= before + per),
                "clients stalled\n{}",
                self.report()
            );
        }
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.supervisor), sig).expect("signal supervisor");
    }

    /// Waits until the log holds `text`.
    pub fn wait_log(&self, text: &str) {
        assert!(
            wait_until(DEADLINE, || self.log_text().contains(text)),
            "{text:?} never logged\n{}",
            self.report()
        );
    }

    /// The log file's contents.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the supervisor to exit and returns how.
    pub fn wait_exit(&self) -> WaitStatus {
        wait_pid(self.supervisor, DEADLINE)
            .unwrap_or_else(|| panic!("supervisor did not exit\n{}", self.report()))
    }

    /// What a failing test prints: processes, their states, the log's tail.
    pub fn report(&self) -> String {
        let pids = self.pids();
        let procs: Vec<String> = pids
            .iter()
            .map(|&p| format!("{p} {} {:?} ppid {}", comm(p), proc_state(p), ppid(p)))
            .collect();
        let log = self.log_text();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        format!(
            "daemon {} port {} supervisor {}\nprocesses: {procs:#?}\nlog tail:\n{}",
            self.name,
            self.port,
            self.supervisor,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.pids();
        let seen: Vec<i32> = self.seen.borrow().clone();
        for pid in seen.iter().copied().chain([self.supervisor]) {
            if pid > 0 && exists(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // Reap what became our child (the supervisor, and anything it left).
        for pid in seen.iter().copied().chain([self.supervisor]) {
            if pid > 0 {
                let _ = wait_pid(pid, Duration::from_secs(5));
            }
        }
    }
}

/// Waits for a child process with a deadline.
pub fn wait_child(child: &mut std::process::Child, deadline: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("child {} did not exit in time", child.id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for `pid` (a child of the test process) with a deadline; `None` if
/// it did not exit in time or is not our child.
pub fn wait_pid(pid: i32, deadline: Duration) -> Option<WaitStatus> {
    let end = Instant::now() + deadline;
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return Some(status),
            Err(_) => return None,
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs an example that must fail before starting: returns (status, stderr).
pub fn run_failing(name: &str, args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(example(name))
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn example");
    let status = wait_child(&mut child, DEADLINE);
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    (status.code().unwrap_or(-1), stderr)
}

/// Clients of the line protocol that loop connect, PING, DONE until stopped; errors counted.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    errors: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16, clients: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let errors = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
                std::thread::spawn(move || {
                    // Bounded: at most 100,000 connections per client.
                    for _ in 0..100_000 {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        match one_round(port) {
                            Ok(()) => ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                            Err(_) => errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            errors,
            threads,
        }
    }

    /// Rounds completed so far.
    pub fn served(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Rounds failed so far.
    pub fn failed(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            t.join().expect("client thread");
        }
        (
            self.ok.load(std::sync::atomic::Ordering::Relaxed),
            self.errors.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

impl Drop for Load {
    /// Clients stop even when the test fails.
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub fn one_round(port: u16) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    w.write_all(b"PING\n")?;
    r.read_line(&mut line)?;
    if line != "PONG\r\n" {
        return Err(std::io::Error::other(format!("got {line:?}")));
    }
    line.clear();
    w.write_all(b"DONE\n")?;
    r.read_line(&mut line)?;
    if line != "OK\r\n" {
        return Err(std::io::Error::other(format!("got {line:?}")));
    }
    Ok(())
}

pub fn zombies_of(parent: i32) -> Vec<i32> {
    procfs::process::all_processes()
        .map(|all| {
            all.flatten()
                .filter_map(|p| p.stat().ok())
                .filter(|s| s.ppid == parent && s.state == 'Z')
                .map(|s| s.pid)
                .collect()
        })
        .unwrap_or_default()
}
