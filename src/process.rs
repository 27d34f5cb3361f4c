//! Processes: detaching, the log file, the spawner and its protocol, worker
//! bootstrap and reaping. Every `fork` of the crate is in this file.
//!
//! # Fork safety
//!
//! tokio (so actix-rt) does not support a child forked without `exec` from a
//! process that has used tokio. So the crate forks only from processes that
//! never did, and each fork site says which:
//!
//! | fork site | forking process | threads there | the child may |
//! |---|---|---|---|
//! | [`detach`] (twice) | the launching process, inside `run`, before any runtime | one (`run` checks `/proc/self/task`) | run anything: it is a plain single-threaded process |
//! | [`start_spawner`] | the supervisor, before it builds its runtime | one | run the spawner loop: no runtime, no thread, a synchronous logger |
//! | the spawner loop (twice: intermediate, then worker) | the spawner | one, never a runtime | build a fresh actix `System`: no process in its ancestry since the last exec ran tokio |
//!
//! The supervisor registers a `pthread_atfork` hook once its runtime runs, that
//! counts forks made by it afterwards; `Peek` reports the count, which must stay
//! 0 (the tests check it).
//!
//! # Zombie policy
//!
//! The supervisor is a child subreaper (`PR_SET_CHILD_SUBREAPER`): workers, the
//! spawner, foreign children and any orphaned descendant are its children, and
//! it reaps them all with `waitpid(-1, WNOHANG)` in a loop on every `SIGCHLD`
//! and on a one-second sweep. The spawner ignores `SIGCHLD`, so the kernel
//! reaps its short-lived intermediates as they exit. Workers reap only the
//! foreign children registered with them.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::prctl;
use nix::sys::signal::{SigHandler, Signal, kill, signal};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::stat::{Mode as FileMode, umask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, chdir, dup2_stderr, dup2_stdin, dup2_stdout, getppid, pipe2};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::payload::{MAX_PAYLOAD_DATA, MAX_PAYLOAD_FDS, Payload};
use crate::scoreboard::{Scoreboard, SlotId};

/// Exit status of a worker whose application panicked.
pub const EXIT_PANIC: i32 = 101;
/// Exit status of a worker that found its supervisor gone while starting.
pub const EXIT_ORPHAN: i32 = 102;
/// Exit status of a worker whose actix `System` could not be built.
pub const EXIT_RUNTIME: i32 = 103;

// ---------------------------------------------------------------------------
// Preconditions, log file, standard streams.

/// Refuses to go on inside a tokio runtime or with more than one thread.
pub(crate) fn check_preconditions() -> Result<()> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::InsideRuntime);
    }
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(|err| Error::sys("read /proc/self/task", err))?
        .count();
    if threads > 1 {
        return Err(Error::Threaded { threads });
    }
    Ok(())
}

/// Opens (appends to, or creates with mode 0640) the log file.
pub(crate) fn open_logfile(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| Error::OpenLogfile {
            path: path.to_owned(),
            source,
        })
}

/// Points stdout and stderr at `log`.
pub(crate) fn redirect_output(log: &File) -> io::Result<()> {
    let _ = io::stdout().flush();
    dup2_stdout(log.as_fd())?;
    dup2_stderr(log.as_fd())?;
    Ok(())
}

/// Who should own the log file when privileges are dropped (uid, gid).
pub(crate) static LOG_OWNER: std::sync::OnceLock<(Option<u32>, u32)> = std::sync::OnceLock::new();

/// Reopens the log file (after a rename, on HUP) and points stdout and
/// stderr at the new one. Every process of the daemon does this itself.
pub(crate) fn reopen_logfile(path: &Path) -> Result<()> {
    let file = open_logfile(path)?;
    // A new file created by a privileged supervisor must stay writable by
    // workers that dropped their privileges.
    if let Some((uid, gid)) = LOG_OWNER.get()
        && nix::unistd::geteuid().is_root()
    {
        let _ = nix::unistd::fchown(
            &file,
            uid.map(nix::unistd::Uid::from_raw),
            Some(nix::unistd::Gid::from_raw(*gid)),
        );
    }
    redirect_output(&file).map_err(|err| Error::sys("redirect output to log file", err))
}

// ---------------------------------------------------------------------------
// Detach.

/// The daemon's end of the readiness pipe: the launching process of a
/// detached daemon waits on it and exits with the daemon's verdict.
///
/// It also carries the pipe of a binary upgrade: the old supervisor that
/// started this one waits on it before it drains.
#[derive(Debug, Default)]
pub(crate) struct ReadyNotifier {
    fds: Vec<OwnedFd>,
}

/// Environment of a binary upgrade: how many listeners were passed (from
/// descriptor 3), and the descriptor of the readiness pipe.
pub(crate) const UPGRADE_FDS: &str = "ACTIX_DAEMON_UPGRADE_FDS";
pub(crate) const UPGRADE_READY_FD: &str = "ACTIX_DAEMON_UPGRADE_READY_FD";

impl ReadyNotifier {
    /// The readiness pipe of a binary upgrade, if this process was started
    /// by one (the variable is removed).
    pub(crate) fn from_upgrade() -> ReadyNotifier {
        let fd: Option<RawFd> = std::env::var(UPGRADE_READY_FD)
            .ok()
            .and_then(|v| v.parse().ok());
        // SAFETY: called from `run`, after check_preconditions: one thread.
        unsafe { std::env::remove_var(UPGRADE_READY_FD) };
        let fds = fd
            .filter(|&fd| fd > 2)
            .filter(|&fd| {
                // SAFETY: only borrowed for this call; EBADF if not open.
                let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                fcntl(b, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).is_ok()
            })
            // SAFETY: the old supervisor passed this pipe's write end to this
            // process at this number for it to own (see `spawn_upgrade`);
            // the variable is removed, so it is taken once.
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
            .into_iter()
            .collect();
        ReadyNotifier { fds }
    }

    /// Adds the detach pipe.
    pub(crate) fn join(&mut self, other: ReadyNotifier) {
        self.fds.extend(other.fds);
    }

    /// Whether anyone still waits for the verdict.
    pub(crate) fn is_pending(&self) -> bool {
        !self.fds.is_empty()
    }

    /// The pipes' descriptors, while open.
    pub(crate) fn raw_fds(&self) -> Vec<RawFd> {
        self.fds.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// The daemon is ready: the launching process exits 0.
    pub(crate) fn ready(&mut self) {
        for fd in self.fds.drain(..) {
            let _ = nix::unistd::write(&fd, b"R");
        }
    }

    /// The daemon failed to start: the launching process prints `message` and exits 1.
    pub(crate) fn failed(&mut self, message: &str) {
        let mut text = Vec::with_capacity(message.len() + 1);
        text.push(b'E');
        text.extend_from_slice(message.as_bytes());
        for fd in self.fds.drain(..) {
            let _ = nix::unistd::write(&fd, &text);
        }
    }
}

/// The listeners handed to a binary upgrade: the supervisor's own
/// duplicates, taken in `run` before anything forks, so that they stay open
/// whatever the application does with its copies.
pub(crate) static UPGRADE_LISTENERS: std::sync::OnceLock<Vec<OwnedFd>> = std::sync::OnceLock::new();

/// Duplicates the listeners named for binary upgrades.
pub(crate) fn keep_upgrade_listeners(fds: &[RawFd]) -> Result<()> {
    let mut kept = Vec::with_capacity(fds.len());
    for &fd in fds {
        // SAFETY: only borrowed to duplicate it; the caller named an open
        // descriptor (EBADF otherwise, returned as an error).
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        kept.push(
            borrowed
                .try_clone_to_owned()
                .map_err(|err| Error::sys("duplicate an upgrade listener", err))?,
        );
    }
    let _ = UPGRADE_LISTENERS.set(kept);
    Ok(())
}

/// The pid `run` was called in (before detaching).
pub(crate) static LAUNCH_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Where `run` was called from: a binary upgrade starts the new binary
/// there, so that relative paths in its arguments mean the same.
pub(crate) static LAUNCH_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Supervisor, binary upgrade: starts this program's binary again
/// (`/proc/self/exe`, same arguments, launch directory), with `listeners`
/// at descriptors 3.. and the write end of a readiness pipe after them.
/// Fork-safe: std's `Command` execs at once (exec is a clean start), and the
/// `pre_exec` hook only calls `fcntl` and `dup2`.
pub(crate) fn spawn_upgrade() -> io::Result<(std::process::Child, File)> {
    use std::os::unix::process::CommandExt;
    let listeners = UPGRADE_LISTENERS
        .get()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC)?;
    let mut sources: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    sources.push(write_end.as_raw_fd());
    let n = listeners.len();
    // The binary at the same path: after a deploy, that is the new one
    // (/proc/self/exe would run the old, replaced file again).
    let exe = std::env::current_exe()?;
    let exe = exe
        .to_str()
        .and_then(|p| p.strip_suffix(" (deleted)"))
        .map(std::path::PathBuf::from)
        .unwrap_or(exe);
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(UPGRADE_FDS, n.to_string())
        .env(UPGRADE_READY_FD, (3 + n).to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    if let Some(dir) = LAUNCH_DIR.get() {
        cmd.current_dir(dir);
    }
    // SAFETY: between fork and exec the hook only calls fcntl and dup2,
    // which are async-signal-safe, and allocates nothing (`sources` is
    // moved in and only read).
    unsafe {
        cmd.pre_exec(move || {
            // Move every source above the targets first, so that no dup2
            // overwrites a source not yet moved.
            let mut high = [0 as RawFd; 64];
            for (i, &fd) in sources.iter().enumerate().take(64) {
                let moved = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if moved < 0 {
                    return Err(io::Error::last_os_error());
                }
                high[i] = moved;
            }
            for (i, &fd) in high.iter().enumerate().take(sources.len().min(64)) {
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(write_end);
    Ok((child, File::from(read_end)))
}

/// Detaches: fork, `setsid`, fork again. The launching process waits until
/// the daemon reports ready (exit 0) or failed (its error on stderr, exit 1),
/// and never returns from here. The grandchild returns with the readiness
/// pipe, its working directory and umask set and stdin on `/dev/null`.
pub(crate) fn detach(config: &Config) -> Result<ReadyNotifier> {
    let (read_end, write_end) =
        pipe2(OFlag::O_CLOEXEC).map_err(|err| Error::sys("pipe for readiness", err))?;
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: fork site "detach", first fork: the process is single-threaded
    // (check_preconditions) and has never built a runtime, so the child may
    // run any code.
    match unsafe { nix::unistd::fork() }.map_err(|err| Error::sys("fork to detach", err))? {
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut verdict = Vec::new();
            let _ = File::from(read_end).read_to_end(&mut verdict);
            let _ = waitpid(child, None);
            match verdict.split_first() {
                Some((b'R', _)) => std::process::exit(0),
                Some((b'E', message)) => {
                    eprintln!("{}", String::from_utf8_lossy(message));
                    std::process::exit(1)
                }
                _ => {
                    let log = config
                        .logfile()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    eprintln!("daemon exited before it was ready; see {log}");
                    std::process::exit(1)
                }
            }
        }
        ForkResult::Child => {}
    }
    drop(read_end);
    let mut notifier = ReadyNotifier {
        fds: vec![write_end],
    };
    // From here on, a failure is reported through the pipe, so that the
    // launching process prints it, and this process ends.
    let give_up = |notifier: &mut ReadyNotifier, err: Error| -> ! {
        notifier.failed(&error_chain(&err));
        // SAFETY: _exit ends this intermediate process of the detach
        // without running the launching program's destructors.
        unsafe { libc::_exit(1) }
    };
    if let Err(err) = nix::unistd::setsid() {
        give_up(&mut notifier, Error::sys("setsid", err));
    }
    // SAFETY: fork site "detach", second fork: still single-threaded and
    // without a runtime (this is the child of the first fork).
    match unsafe { nix::unistd::fork() } {
        // The session leader exits so that the daemon can never reacquire a
        // controlling terminal.
        Ok(ForkResult::Parent { .. }) => {
            // SAFETY: _exit is always safe; it skips destructors and atexit
            // handlers that belong to the launching program.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Child) => {}
        Err(err) => give_up(&mut notifier, Error::sys("second fork to detach", err)),
    }
    if let Err(err) = chdir(config.workdir()) {
        give_up(&mut notifier, Error::sys("chdir to workdir", err));
    }
    umask(FileMode::from_bits_truncate(config.umask() as _));
    match File::open("/dev/null") {
        Ok(null) => {
            if let Err(err) = dup2_stdin(&null) {
                give_up(&mut notifier, Error::sys("stdin from /dev/null", err));
            }
        }
        Err(err) => give_up(&mut notifier, Error::sys("open /dev/null", err)),
    }
    Ok(notifier)
}

/// An error and its sources, for the launching process to print.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Checks, before anything forks, that the working directory of a
/// detached daemon exists.
pub(crate) fn check_workdir(config: &Config) -> Result<()> {
    if !config.detach() {
        return Ok(());
    }
    match std::fs::metadata(config.workdir()) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::Workdir {
            path: config.workdir().to_owned(),
            source: io::Error::from(io::ErrorKind::NotADirectory),
        }),
        Err(source) => Err(Error::Workdir {
            path: config.workdir().to_owned(),
            source,
        }),
    }
}

/// Takes the sockets of systemd socket activation (see
/// [`crate::listen_fds`]).
pub(crate) fn take_listen_fds() -> Vec<OwnedFd> {
    let systemd = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let var = if systemd { "LISTEN_FDS" } else { UPGRADE_FDS };
    // A binary upgrade passes its listeners the same way, without a pid.
    let mine = systemd || std::env::var_os(UPGRADE_FDS).is_some();
    let count: i32 = std::env::var(var)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // The variables are removed so that the sockets are taken once, but
    // only while no other thread can be reading the environment.
    if check_preconditions().is_ok() {
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", UPGRADE_FDS] {
            // SAFETY: this process has one thread (checked just above), so
            // nothing reads or writes the environment concurrently.
            unsafe { std::env::remove_var(var) };
        }
    }
    if !mine || count <= 0 {
        return Vec::new();
    }
    (3..3 + count)
        .filter(|&fd| {
            // SAFETY: the descriptor is only borrowed for this call; if it
            // is not open, fcntl fails with EBADF and it is skipped.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            fcntl(borrowed, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).is_ok()
        })
        // SAFETY: the service manager passed these open descriptors to this
        // process (LISTEN_PID matches) for it to own, starting at 3; nothing
        // else in the process owns them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

// ---------------------------------------------------------------------------
// Small process helpers.

/// Ends this process at once with `code`, running no destructor and no
/// atexit handler (a worker after a panic: nothing can be trusted to run
/// cleanly).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and has no precondition.
    unsafe { libc::_exit(code) }
}

/// Sets this process's name (`comm`, 15 characters) as `<alias prefix><suffix>`.
pub(crate) fn set_process_name(alias: &str, suffix: &str) {
    let keep = 15usize.saturating_sub(suffix.len());
    let prefix: String = alias.chars().filter(|c| *c != '\0').take(keep).collect();
    if let Ok(name) = CString::new(format!("{prefix}{suffix}")) {
        let _ = prctl::set_name(&name);
    }
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub(crate) fn send_signal(pid: i32, sig: Signal) -> bool {
    kill(Pid::from_raw(pid), sig).is_ok()
}

/// Reaps every child that has exited, without blocking.
pub(crate) fn reap_any() -> Vec<(i32, WaitStatus)> {
    let mut reaped = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    reaped.push((pid.as_raw(), status));
                }
            }
        }
    }
    reaped
}

/// Reaps `pid` if it has exited, without blocking.
pub(crate) fn reap_pid(pid: i32) -> Option<WaitStatus> {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => None,
        Ok(status) => Some(status),
        Err(Errno::ECHILD) => Some(WaitStatus::Exited(Pid::from_raw(pid), 0)),
        Err(_) => None,
    }
}

/// Describes a wait status for logs: `exit 0`, `SIGKILL`...
pub(crate) fn describe_status(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit {code}"),
        WaitStatus::Signaled(_, sig, core) => {
            format!(
                "{}{}",
                sig.as_str(),
                if *core { " (core dumped)" } else { "" }
            )
        }
        other => format!("{other:?}"),
    }
}

/// Whether a wait status is a clean exit.
pub(crate) fn is_clean_exit(status: &WaitStatus) -> bool {
    matches!(status, WaitStatus::Exited(_, 0))
}

/// Makes this process a child subreaper, so that double-forked workers are
/// re-parented to it.
pub(crate) fn become_subreaper() -> Result<()> {
    prctl::set_child_subreaper(true).map_err(|err| Error::sys("PR_SET_CHILD_SUBREAPER", err))
}

static FORKS_AFTER_RUNTIME: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_fork() {
    FORKS_AFTER_RUNTIME.fetch_add(1, Ordering::Relaxed);
}

/// Counts, from now on, every `fork()` this process makes (a supervisor
/// check: it must stay 0). Called once, in the supervisor, before its runtime.
pub(crate) fn watch_forks() {
    // SAFETY: `count_fork` is an `extern "C"` function that only performs an
    // atomic add, which is async-signal-safe and so valid in a prepare
    // handler; registering a handler has no other precondition.
    unsafe {
        libc::pthread_atfork(Some(count_fork), None, None);
    }
}

/// Forks made by this process since [`watch_forks`].
pub(crate) fn forks_after_runtime() -> u64 {
    FORKS_AFTER_RUNTIME.load(Ordering::Relaxed)
}

/// What the spawner ignores: a terminal's Ctrl-C or job control, and the
/// signals meant for the supervisor, must not end or stop it; SIGCHLD so
/// that the kernel reaps its intermediates.
const SPAWNER_IGNORES: [Signal; 9] = [
    Signal::SIGCHLD,
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGQUIT,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// Sets `handler` for `signals`.
fn set_signals(signals: &[Signal], handler: SigHandler) {
    for &sig in signals {
        // SAFETY: only SIG_DFL and SIG_IGN are passed, which install no
        // handler code; the caller is single-threaded (spawner, worker
        // before its runtime).
        let _ = unsafe { signal(sig, handler) };
    }
}

/// In a new worker: the default action again for what the spawner ignores,
/// except job control (SIGTTIN, SIGTTOU), which workers keep ignoring.
fn default_signals() {
    set_signals(&SPAWNER_IGNORES[..7], SigHandler::SigDfl);
}

fn ignore_signals() {
    set_signals(&SPAWNER_IGNORES, SigHandler::SigIgn);
}

// ---------------------------------------------------------------------------
// The wake-up channel: workers to supervisor.

/// An eventfd shared by every process: a worker writes to it after a state
/// change the supervisor acts on; the supervisor's `DaemonActor` reads it.
#[derive(Debug)]
pub(crate) struct Wake(EventFd);

impl Wake {
    pub(crate) fn new() -> Result<Wake> {
        EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map(Wake)
            .map_err(|err| Error::sys("eventfd", err))
    }

    /// Wakes the supervisor (never blocks).
    pub(crate) fn wake(&self) {
        let _ = self.0.write(1);
    }

    /// Drains pending wake-ups; whether there were any.
    pub(crate) fn drain(&self) -> bool {
        self.0.read().is_ok()
    }
}

impl AsRawFd for Wake {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A descriptor kept open by an `Arc` for as long as a reactor watches it.
#[derive(Debug)]
pub(crate) struct Held<T: AsRawFd>(pub(crate) Arc<T>);

impl<T: AsRawFd> AsRawFd for Held<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Registers a shared descriptor with the current tokio reactor.
pub(crate) fn watch<T: AsRawFd>(fd: Arc<T>) -> io::Result<tokio::io::unix::AsyncFd<Held<T>>> {
    // SAFETY: `Held` owns a strong reference to the object that owns the
    // descriptor (an `OwnedFd` or an `EventFd`), so the descriptor stays
    // open and refers to the same file description until the `AsyncFd`,
    // and with it `Held`, is dropped; `as_raw_fd` always returns it.
    unsafe { tokio::io::unix::AsyncFd::register(Held(fd)) }.map_err(io::Error::from)
}

// ---------------------------------------------------------------------------
// The spawner protocol.

const REQUEST: u8 = b'S';
const REOPEN: u8 = b'H';
const SPAWNED: u8 = b'P';
const FAILED: u8 = b'E';
const REPLY_LEN: usize = 17;
const REQUEST_HEADER: usize = 9;

/// What the spawner (or its intermediate) tells the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpawnReply {
    /// A worker for `slot` runs as `pid`.
    Spawned { slot: SlotId, pid: i32 },
    /// The fork for `slot` failed with `errno`.
    Failed { slot: SlotId, errno: Errno },
}

impl SpawnReply {
    fn encode(self) -> [u8; REPLY_LEN] {
        let (kind, slot, pid, errno) = match self {
            SpawnReply::Spawned { slot, pid } => (SPAWNED, slot, pid, 0),
            SpawnReply::Failed { slot, errno } => (FAILED, slot, 0, errno as i32),
        };
        let mut buf = [0u8; REPLY_LEN];
        buf[0] = kind;
        buf[1..9].copy_from_slice(&(slot.0 as u64).to_le_bytes());
        buf[9..13].copy_from_slice(&pid.to_le_bytes());
        buf[13..17].copy_from_slice(&errno.to_le_bytes());
        buf
    }

    pub(crate) fn decode(buf: &[u8]) -> Option<SpawnReply> {
        if buf.len() != REPLY_LEN {
            return None;
        }
        let slot = SlotId(u64::from_le_bytes(buf[1..9].try_into().ok()?) as usize);
        let pid = i32::from_le_bytes(buf[9..13].try_into().ok()?);
        let errno = i32::from_le_bytes(buf[13..17].try_into().ok()?);
        match buf[0] {
            SPAWNED => Some(SpawnReply::Spawned { slot, pid }),
            FAILED => Some(SpawnReply::Failed {
                slot,
                errno: Errno::from_raw(errno),
            }),
            _ => None,
        }
    }
}

/// Supervisor: asks the spawner for a worker in `slot`. Never blocks.
///
/// # Errors
///
/// `EAGAIN` if the socket is full (retry later), `EPIPE` and the like if the
/// spawner is gone.
pub(crate) fn request_spawn(sock: RawFd, slot: SlotId) -> nix::Result<()> {
    let mut header = [0u8; REQUEST_HEADER];
    header[0] = REQUEST;
    header[1..9].copy_from_slice(&(slot.0 as u64).to_le_bytes());
    sendmsg::<()>(
        sock,
        &[IoSlice::new(&header)],
        &[],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
}

// ---------------------------------------------------------------------------
// The dispatch socket: fork-per-request payloads, supervisor to workers.

/// The first byte of a dispatched payload (a payload may be empty, and an
/// empty SEQPACKET message would read as end of file).
const DISPATCH: u8 = b'Q';

/// Makes the dispatch socket pair: `(supervisor end, workers' end)`. A
/// fork-per-request request travels from the supervisor to whichever
/// worker waiting for one reads it first: its data as bytes, its
/// descriptors with `SCM_RIGHTS`.
pub(crate) fn dispatch_pair() -> Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|err| Error::sys("socketpair for requests", err))
}

/// Supervisor: hands `payload` to the next worker that reads the dispatch
/// socket. Never blocks. The supervisor's descriptors stay its own (drop the
/// payload to close them).
///
/// # Errors
///
/// `EAGAIN` if the socket is full; other errors if no worker end is open.
pub(crate) fn dispatch_send(sock: RawFd, payload: &Payload) -> nix::Result<()> {
    let fds = payload.raw_fds();
    let iov = [
        IoSlice::new(&[DISPATCH]),
        IoSlice::new(payload.data_bytes()),
    ];
    let rights = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        sock,
        &iov,
        cmsgs,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
}

/// Worker: takes one payload from the dispatch socket without blocking.
/// `Ok(None)` at end of file (the supervisor is gone).
///
/// # Errors
///
/// `EAGAIN` when another worker took it first (or nothing is there).
pub(crate) fn dispatch_recv(sock: RawFd) -> nix::Result<Option<Payload>> {
    let mut data = vec![0u8; 1 + MAX_PAYLOAD_DATA];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_PAYLOAD_FDS]);
    let (len, fds) = {
        let mut iov = [IoSliceMut::new(&mut data)];
        let msg = recvmsg::<()>(
            sock,
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        (msg.bytes, owned_rights(&msg))
    };
    if len == 0 {
        return Ok(None);
    }
    if data[0] != DISPATCH {
        return Err(Errno::EBADMSG);
    }
    data.truncate(len);
    data.remove(0);
    Ok(Some(Payload::from_parts(data, fds)))
}

/// The descriptors an `SCM_RIGHTS` message brought, owned.
fn owned_rights(msg: &nix::sys::socket::RecvMsg<'_, '_, ()>) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: SCM_RIGHTS gave this process a new descriptor.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
    }
    fds
}

/// Supervisor: asks the spawner to reopen the log file (on HUP), so that
/// workers forked from now on start on the new file.
pub(crate) fn request_reopen(sock: RawFd) -> nix::Result<()> {
    sendmsg::<()>(
        sock,
        &[IoSlice::new(&[REOPEN])],
        &[],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
}

/// Supervisor: reads one reply without blocking. `Ok(None)` on EOF (the
/// spawner is gone).
pub(crate) fn read_reply(sock: RawFd) -> nix::Result<Option<Option<SpawnReply>>> {
    let mut buf = [0u8; 64];
    let n = nix::sys::socket::recv(sock, &mut buf, MsgFlags::MSG_DONTWAIT)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(SpawnReply::decode(&buf[..n])))
}

/// The supervisor's handle on the spawner.
#[derive(Debug)]
pub(crate) struct SpawnerLink {
    pub(crate) pid: i32,
    pub(crate) sock: OwnedFd,
}

/// Everything a worker needs from before the fork, held by the spawner.
pub(crate) struct WorkerBoot {
    pub(crate) config: std::sync::Arc<Config>,
    pub(crate) board: Scoreboard,
    pub(crate) wake: std::sync::Arc<Wake>,
    pub(crate) supervisor: i32,
    pub(crate) privileges: Option<crate::ops::Privileges>,
    /// Fork per request: the workers' end of the dispatch socket.
    pub(crate) dispatch: Option<Arc<OwnedFd>>,
}

/// What a worker's process runs once it is set up: builds the worker's actix
/// `System`, calls the application, runs. Returns the exit status.
pub(crate) type WorkerMain<F> = fn(&WorkerBoot, SlotId, F) -> i32;

/// Forks the spawner. In the supervisor, returns the link; in the spawner,
/// never returns.
///
/// `close_in_spawner` are descriptors the spawner must not hold (the
/// readiness pipe, the pidfile). The supervisor
/// gets `init` back, to call its own copy.
pub(crate) fn start_spawner<F: FnOnce(&crate::Process)>(
    boot: WorkerBoot,
    close_in_spawner: Vec<RawFd>,
    worker_main: WorkerMain<F>,
    init: F,
) -> Result<(SpawnerLink, F)> {
    let (sup_end, spawner_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|err| Error::sys("socketpair for spawner", err))?;
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: fork site "start_spawner": the supervisor is single-threaded
    // (checked in `run`) and has not built its runtime yet.
    match unsafe { nix::unistd::fork() }.map_err(|err| Error::sys("fork spawner", err))? {
        ForkResult::Parent { child } => {
            drop(spawner_end);
            let flags = fcntl(&sup_end, FcntlArg::F_GETFL)
                .map_err(|err| Error::sys("fcntl spawner socket", err))?;
            fcntl(
                &sup_end,
                FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
            )
            .map_err(|err| Error::sys("fcntl spawner socket", err))?;
            Ok((
                SpawnerLink {
                    pid: child.as_raw(),
                    sock: sup_end,
                },
                init,
            ))
        }
        ForkResult::Child => {
            drop(sup_end);
            for fd in close_in_spawner {
                // SAFETY: this is the spawner's copy of the supervisor's
                // readiness pipe or pidfile; the value that owns the number
                // in this process's memory is never used or dropped here
                // (the spawner ends with `_exit`), so this is its only owner.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            let code = spawner_main(boot, spawner_end, worker_main, init);
            // SAFETY: _exit ends the spawner without running the
            // supervisor's atexit handlers or destructors.
            unsafe { libc::_exit(code) }
        }
    }
}

/// The spawner: a synchronous loop with one thread and no runtime. It forks
/// a worker per request, and ends when the supervisor's end of the socket
/// closes or the supervisor dies.
fn spawner_main<F: FnOnce(&crate::Process)>(
    boot: WorkerBoot,
    sock: OwnedFd,
    worker_main: WorkerMain<F>,
    init: F,
) -> i32 {
    // Privileges first: a credential change clears PR_SET_PDEATHSIG.
    if let Some(privileges) = &boot.privileges
        && let Err(err) = privileges.drop_now()
    {
        eprintln!("spawner: cannot drop privileges: {}", error_chain(&err));
        return 1;
    }
    // The spawner must not outlive the supervisor. PR_SET_PDEATHSIG set
    // after the parent died never fires, so check the parent after setting it.
    let _ = prctl::set_pdeathsig(Signal::SIGKILL);
    if getppid().as_raw() != boot.supervisor {
        return 0;
    }
    set_process_name(boot.config.alias(), "-spawner");
    // Ignoring SIGCHLD, among others, makes the kernel reap the
    // intermediates: the spawner never waits and never leaves a zombie.
    ignore_signals();
    let log = crate::logging::init(
        &boot.config,
        crate::logging::Drained::Sync,
        slog::o!("pid" => std::process::id(), "role" => "spawner"),
    );
    slog::debug!(log, "spawner started");
    let mut init = Some(init);
    let mut data = [0u8; 64];
    loop {
        let len = match nix::sys::socket::recv(sock.as_raw_fd(), &mut data, MsgFlags::empty()) {
            Ok(0) => break,
            Ok(len) => len,
            Err(Errno::EINTR) => continue,
            Err(err) => {
                slog::error!(log, "spawner socket failed"; "error" => %err);
                break;
            }
        };
        if len == 1 && data[0] == REOPEN {
            if let Some(path) = boot.config.logfile()
                && let Err(err) = reopen_logfile(path)
            {
                slog::error!(log, "cannot reopen log file"; "error" => %err);
            }
            continue;
        }
        if len != REQUEST_HEADER || data[0] != REQUEST {
            slog::error!(log, "malformed spawn request"; "bytes" => len);
            continue;
        }
        let slot = SlotId(u64::from_le_bytes(data[1..9].try_into().unwrap_or_default()) as usize);
        let reply = |reply: SpawnReply| {
            let _ = sendmsg::<()>(
                sock.as_raw_fd(),
                &[IoSlice::new(&reply.encode())],
                &[],
                MsgFlags::MSG_NOSIGNAL,
                None,
            );
        };
        let _ = io::stderr().flush();
        // SAFETY: fork site "spawner loop", first fork (the intermediate):
        // the spawner has one thread and never built a runtime.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Parent { .. }) => {
                // The intermediate exits right after its own fork; with
                // SIGCHLD ignored the kernel reaps it, and the spawner is
                // free for the next request at once (no wait4: about
                // 150 us less per request, benches/fork_shape.rs).
            }
            Ok(ForkResult::Child) => {
                // SAFETY: fork site "spawner loop", second fork (the worker):
                // the intermediate is a single-threaded copy of the spawner.
                let code = match unsafe { nix::unistd::fork() } {
                    Ok(ForkResult::Parent { child }) => {
                        reply(SpawnReply::Spawned {
                            slot,
                            pid: child.as_raw(),
                        });
                        0
                    }
                    Ok(ForkResult::Child) => {
                        drop(sock);
                        let init = init.take().expect("the spawner never calls init");
                        worker_process(&boot, slot, worker_main, init)
                    }
                    Err(errno) => {
                        reply(SpawnReply::Failed { slot, errno });
                        0
                    }
                };
                // SAFETY: ends the intermediate or the worker without
                // running destructors of the spawner's state.
                unsafe { libc::_exit(code) }
            }
            Err(errno) => {
                slog::warn!(log, "fork failed"; "slot" => slot, "error" => %errno);
                reply(SpawnReply::Failed { slot, errno });
            }
        }
    }
    slog::debug!(log, "spawner exits: supervisor closed its socket");
    0
}

/// A worker's set-up, in the worker process: wait to be re-parented to the
/// supervisor, ask for a signal when it dies, restore signal dispositions,
/// then run the worker.
fn worker_process<F: FnOnce(&crate::Process)>(
    boot: &WorkerBoot,
    slot: SlotId,
    worker_main: WorkerMain<F>,
    init: F,
) -> i32 {
    // The intermediate exits right after forking us; the kernel then
    // re-parents us to the nearest subreaper, the supervisor.
    let deadline = Instant::now() + Duration::from_secs(5);
    while getppid().as_raw() != boot.supervisor {
        if Instant::now() > deadline || getppid().as_raw() == 1 {
            return EXIT_ORPHAN;
        }
        std::thread::yield_now();
    }
    let _ = prctl::set_pdeathsig(Signal::SIGKILL);
    if getppid().as_raw() != boot.supervisor {
        return EXIT_ORPHAN;
    }
    set_process_name(boot.config.alias(), "-worker");
    default_signals();
    if boot.board.is_shutdown() {
        return 0;
    }
    worker_main(boot, slot, init)
}

/// Test helper: forks a child that runs `f` (which must be
/// async-signal-safe) and `_exit(0)`s, and waits for it. Returns its pid.
#[cfg(test)]
pub(crate) fn test_fork(f: impl FnOnce()) -> i32 {
    // SAFETY: test-only; the child runs only `f`, which callers keep to
    // atomic stores, then `_exit`s without touching any lock.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        ForkResult::Child => {
            f();
            // SAFETY: ends the test child at once.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            // ECHILD: another test's supervisor actor reaped it first.
            match waitpid(child, None) {
                Ok(_) | Err(Errno::ECHILD) => {}
                Err(err) => panic!("waitpid: {err}"),
            }
            child.as_raw()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        for reply in [
            SpawnReply::Spawned {
                slot: SlotId(3),
                pid: 1234,
            },
            SpawnReply::Failed {
                slot: SlotId(9),
                errno: Errno::EAGAIN,
            },
        ] {
            assert_eq!(SpawnReply::decode(&reply.encode()), Some(reply));
        }
        assert_eq!(SpawnReply::decode(b"short"), None);
    }
}
