//! What the side-by-side benchmarks share: the request lines they answer,
//! the client connection that speaks them, and the reference servers written with std and nix only, the baseline
//! every ratio is taken against. Each bench uses a part of it.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The reference fork-per-connection server runs at most this many
/// children at once (the forking example's max_children).
const MAX_CHILDREN: usize = 3;

/// A reference child gives up on a silent client after this long.
const CHILD_TIMEOUT: Duration = Duration::from_secs(5);

/// The servers' answer to one request line (the subset of
/// EXAMPLES-PROTOCOL.md the client uses), and whether to close afterwards.
pub fn answer(line: &str) -> (&'static str, bool) {
    let command = line.trim_end_matches(['\r', '\n']).trim();
    if command.eq_ignore_ascii_case("PING") {
        ("PONG\r\n", false)
    } else if command.eq_ignore_ascii_case("DONE") {
        ("OK\r\n", true)
    } else {
        ("???\r\n", false)
    }
}

/// Binds 127.0.0.1 on a port the system chooses and prints `PORT=<n>`.
pub fn bind_and_announce() -> io::Result<TcpListener> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = listener.local_addr()?.port();
    let mut out = io::stdout().lock();
    writeln!(out, "PORT={port}")?;
    out.flush()?;
    Ok(listener)
}

/// The reference servers, std and nix only.
pub mod reference {
    use super::*;
    use nix::fcntl::OFlag;
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork, getpid, getppid, pipe2};

    /// Fork per connection, at most `MAX_CHILDREN` at once.
    pub fn fork_per_connection() -> ExitCode {
        let listener = match bind_and_announce() {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("reference server: cannot listen: {err}");
                return ExitCode::FAILURE;
            }
        };
        let me = getpid();
        let stdin = io::stdin();
        let mut live: Vec<Pid> = Vec::with_capacity(MAX_CHILDREN);
        // Ends when the bench closes our stdin (or kills us).
        loop {
            reap(&mut live, false);
            // At max_children: accept nothing until a child ends.
            while live.len() >= MAX_CHILDREN && reap(&mut live, true) {}
            let (ready, stop) = {
                let mut fds = [
                    PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                    PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::from(1000u16)) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(err) => {
                        eprintln!("reference server: poll: {err}");
                        break;
                    }
                }
                let ready = fds[0]
                    .revents()
                    .is_some_and(|r| r.contains(PollFlags::POLLIN));
                let stop = fds[1].revents().is_some_and(|r| !r.is_empty());
                (ready, stop)
            };
            if stop {
                break;
            }
            if !ready {
                continue;
            }
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(err) => {
                    eprintln!("reference server: accept: {err}");
                    continue;
                }
            };
            // SAFETY: this process was started by exec for this role and runs
            // this loop on its only thread: it never started a thread, never
            // built a tokio runtime or any other process-global state that a
            // fork could leave inconsistent, so no lock can be held by a thread
            // missing in the child. The child only serves `stream` with
            // blocking std I/O and leaves with `_exit`.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => child(stream, me, None),
                Ok(ForkResult::Parent { child }) => live.push(child),
                Err(err) => {
                    eprintln!("reference server: fork: {err}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            // The parent's copy of the connection closes here.
        }
        for &pid in &live {
            let _ = kill(pid, Signal::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(2);
        while !live.is_empty() && Instant::now() < end {
            reap(&mut live, false);
            std::thread::sleep(Duration::from_millis(10));
        }
        for pid in live.drain(..) {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        ExitCode::SUCCESS
    }

    /// One child at a time: it accepts one connection, serves it and exits;
    /// then the next is forked (pre-fork, requests 1, one worker).
    pub fn respawn() -> ExitCode {
        let listener = match bind_and_announce() {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("reference respawn: cannot listen: {err}");
                return ExitCode::FAILURE;
            }
        };
        let me = getpid();
        let stdin = io::stdin();
        loop {
            // The child holds the write end until it exits: its end shows as
            // a hang-up on the read end, which `poll` can wait for together
            // with stdin.
            let (rd, wr) = match pipe2(OFlag::O_CLOEXEC) {
                Ok(pair) => pair,
                Err(err) => {
                    eprintln!("reference respawn: pipe: {err}");
                    return ExitCode::FAILURE;
                }
            };
            // SAFETY: as in `fork_per_connection`: a fresh single-threaded
            // process that never built a runtime; the child only accepts and
            // serves one connection with blocking std I/O, then `_exit`s.
            let pid = match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    drop(rd);
                    let stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        // SAFETY: `_exit` ends this forked child at once.
                        Err(_) => unsafe { libc::_exit(1) },
                    };
                    child(stream, me, Some(wr))
                }
                Ok(ForkResult::Parent { child }) => child,
                Err(err) => {
                    eprintln!("reference respawn: fork: {err}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            drop(wr);
            let stop = loop {
                let mut fds = [
                    PollFd::new(rd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::from(1000u16)) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(err) => {
                        eprintln!("reference respawn: poll: {err}");
                        break true;
                    }
                }
                if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                    break true;
                }
                if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                    break false;
                }
            };
            if stop {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return ExitCode::SUCCESS;
            }
            let _ = waitpid(pid, None);
        }
    }

    /// Reaps exited children: every one that has exited, or (`block`) waits
    /// for one. False once there is no child left to wait for.
    fn reap(live: &mut Vec<Pid>, block: bool) -> bool {
        let flags = if block {
            None
        } else {
            Some(WaitPidFlag::WNOHANG)
        };
        loop {
            match waitpid(None::<Pid>, flags) {
                Ok(WaitStatus::StillAlive) => return true,
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        live.retain(|&p| p != pid);
                    }
                    if block {
                        return true;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => {
                    live.clear();
                    return false;
                }
            }
        }
    }

    /// A forked child: serves `stream` and exits (`_keep` closes with it).
    fn child(stream: TcpStream, parent: Pid, _keep: Option<OwnedFd>) -> ! {
        let orphan =
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != parent;
        let code = if orphan || serve(&stream).is_err() {
            1
        } else {
            0
        };
        drop(stream);
        // SAFETY: `_exit` ends this forked child at once; it is always sound
        // to call, and it skips the atexit handlers and stdio buffers copied
        // from the parent, which must not run twice.
        unsafe { libc::_exit(code) }
    }

    fn serve(stream: &TcpStream) -> io::Result<()> {
        stream.set_read_timeout(Some(CHILD_TIMEOUT))?;
        stream.set_write_timeout(Some(CHILD_TIMEOUT))?;
        let mut reader = io::BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            if io::BufRead::read_line(&mut reader, &mut line)? == 0 {
                break;
            }
            let (reply, done) = answer(&line);
            (&mut &*stream).write_all(reply.as_bytes())?;
            if done {
                break;
            }
        }
        stream.shutdown(Shutdown::Write)
    }
}

/// The benches' client side of one connection: the line protocol of
/// EXAMPLES-PROTOCOL.md, with timeouts on every read and write.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr` (within `timeout`, which also bounds every read
    /// and write), without Nagle's delay.
    pub fn open(addr: SocketAddr, timeout: Duration) -> Result<Conn, String> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("connect: {}", e.kind()))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| format!("setsockopt: {e}"))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64),
        })
    }

    /// The next line, with its line end.
    pub fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if self.buf.len() > 4096 {
                return Err("line too long".to_owned());
            }
            let mut chunk = [0u8; 512];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("closed before a full line".to_owned()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(format!("read: {}", err.kind())),
            }
        }
    }

    /// Sends `send` and expects the line `want` back.
    pub fn expect(&mut self, send: &str, want: &str) -> Result<(), String> {
        self.stream
            .write_all(send.as_bytes())
            .map_err(|e| format!("write: {}", e.kind()))?;
        let got = self.line()?;
        if got == want {
            Ok(())
        } else {
            Err(format!("sent {send:?}, wanted {want:?}, got {got:?}"))
        }
    }

    /// Reads until the server closes the connection.
    pub fn eof(&mut self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!("unexpected data {:?}", self.buf));
        }
        let mut chunk = [0u8; 64];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => return Err(format!("unexpected data {:?}", &chunk[..n])),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(format!("waiting for close: {}", err.kind())),
            }
        }
    }
}
