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
//! | [`spawn_upgrade`] (std's `Command`) | the supervisor, running | many | only `fcntl` and `dup2` in `pre_exec`, then exec |
//! | [`spawn_foreign_child`] (std's `Command`, `foreign.rs`) | the supervisor or a worker, running, on its `foreign-forker` thread | many | only `prctl` and `getppid` in `pre_exec`, then exec |
//!
//! The supervisor registers a `pthread_atfork` hook once its runtime runs, that
//! counts forks made by it afterwards; `Peek` reports the count, which must stay
//! 0 (the tests check it). Forks of the `foreign-forker` thread are left out:
//! each execs at once (see [`exec_forks_only`]).
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
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::prctl;
use nix::sys::stat::{Mode as FileMode, umask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, chdir, dup2_stderr, dup2_stdin, dup2_stdout, pipe2};

use crate::config::Config;
use crate::error::{Error, Result};

mod channel;
mod fds;
mod foreign;
pub(crate) mod pidfd;
mod spawner;
pub(crate) mod wire;

pub(crate) use channel::{Heard, Told, Wake, give, hear, read_to_end, take, tell, watch};

/// Tests: a worker channel's pair, `(supervisor end, worker end)`.
#[cfg(test)]
pub(crate) fn channel_pair_for_tests() -> (OwnedFd, OwnedFd) {
    channel::link_pair().expect("socketpair")
}
pub(crate) use fds::{CLOSED as CLOSED_FDS, KeepSet, check_declared as check_declared_fds};
pub use foreign::spawn_foreign_child;
pub(crate) use pidfd::Pidfd;
#[cfg(test)]
pub(crate) use spawner::test_fork;
pub(crate) use spawner::{SpawnerLink, WorkerBoot, start_spawner, unblock_held_signals};

/// Exit status of a worker whose application panicked.
pub const EXIT_PANIC: i32 = 101;
/// Exit status of a worker that found its supervisor gone while starting.
pub const EXIT_ORPHAN: i32 = 102;
/// Exit status of a worker whose actix `System` could not be built.
pub const EXIT_RUNTIME: i32 = 103;
/// Exit status of a worker that could not confine its view of the
/// scoreboard to its own slot (it never runs the application then).
pub const EXIT_BOARD: i32 = 104;

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

/// Opens the log file as [`open_log_checked`] does, as an [`Error`].
pub(crate) fn open_logfile(path: &Path, create: bool) -> Result<File> {
    open_log_checked(path, create).map_err(|why| match why {
        // A failed open is not a refusal.
        crate::trust::Refusal::Io(text) => Error::OpenLogfile {
            path: path.to_owned(),
            source: io::Error::other(text),
        },
        why => Error::UnsafePath {
            what: "log file",
            path: path.to_owned(),
            reason: why.to_string(),
        },
    })
}

/// Opens the log file for appending without following a symlink, and
/// checks it through the descriptor (`crate::trust::check_file`): a regular
/// file with one link, owned by this process's euid or the service user
/// ([`LOG_OWNER`]), not writable by group or others. With `create` (the
/// supervisor) a missing file is created (`O_EXCL`, mode 0640) and, only
/// then, chowned by descriptor to the service user so that workers can
/// reopen it; workers and the spawner never create it.
///
/// This is the one function a worker calls to reopen its log by path, as
/// its own user: the per-worker channel may later hand it a descriptor
/// instead ([`apply_log_fd`]).
pub(crate) fn open_log_checked(path: &Path, create: bool) -> Result<File, crate::trust::Refusal> {
    let euid = nix::unistd::geteuid().as_raw();
    let owner = LOG_OWNER.get().copied();
    let mut owners = vec![euid];
    if let Some((Some(uid), _)) = owner {
        owners.push(uid);
    }
    let how = crate::trust::Opening {
        owners: &owners,
        create: create.then_some(0o640),
        pid_dir: false,
        access: OFlag::O_WRONLY | OFlag::O_APPEND,
    };
    let (file, created) = crate::trust::open_checked(path, &how)?;
    if created
        && let Some((uid, gid)) = owner
        && nix::unistd::geteuid().is_root()
    {
        nix::unistd::fchown(
            &file,
            uid.map(nix::unistd::Uid::from_raw),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| crate::trust::Refusal::Io(format!("fchown: {e}")))?;
    }
    Ok(file)
}

/// Points stdout and stderr at `log`.
pub(crate) fn redirect_output(log: &File) -> io::Result<()> {
    apply_log_fd(log)
}

/// Points stdout and stderr at a log descriptor received from the
/// supervisor (the spawner on HUP; the per-worker channel may call it too).
pub(crate) fn apply_log_fd(fd: &impl AsFd) -> io::Result<()> {
    let _ = io::stdout().flush();
    dup2_stdout(fd.as_fd())?;
    dup2_stderr(fd.as_fd())?;
    Ok(())
}

/// Who should own the log file when privileges are dropped (uid, gid).
pub(crate) static LOG_OWNER: std::sync::OnceLock<(Option<u32>, u32)> = std::sync::OnceLock::new();

/// Reopens the log file (after a rename, on HUP) and points stdout and
/// stderr at the new one; returns it (the supervisor hands it to the
/// spawner). On a refusal nothing changes: the old file stays.
pub(crate) fn reopen_logfile(path: &Path, create: bool) -> Result<File> {
    let file = open_logfile(path, create)?;
    redirect_output(&file).map_err(|err| Error::sys("redirect output to log file", err))?;
    Ok(file)
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
    /// The detach pipe, to the launching process.
    launcher: Option<OwnedFd>,
    /// The pipe of a binary upgrade, to the old supervisor.
    upgrade: Option<OwnedFd>,
}

/// Environment of a binary upgrade: how many listeners were passed (from
/// descriptor 3), and the descriptor of the readiness pipe.
pub(crate) const UPGRADE_FDS: &str = "ACTIX_DAEMON_UPGRADE_FDS";
pub(crate) const UPGRADE_READY_FD: &str = "ACTIX_DAEMON_UPGRADE_READY_FD";

/// The old supervisor of a binary upgrade closed its end of the readiness
/// pipe: it stopped before this one was ready.
#[derive(Debug)]
pub(crate) struct Abandoned;

impl ReadyNotifier {
    /// The readiness pipe of a binary upgrade, if this process was started
    /// by one (the variable is removed).
    pub(crate) fn from_upgrade() -> ReadyNotifier {
        let fd: Option<RawFd> = std::env::var(UPGRADE_READY_FD)
            .ok()
            .and_then(|v| v.parse().ok());
        // SAFETY: called from `run`, after check_preconditions: one thread.
        unsafe { std::env::remove_var(UPGRADE_READY_FD) };
        let upgrade = fd
            .filter(|&fd| fd > 2)
            .filter(|&fd| {
                // SAFETY: only borrowed for this call; EBADF if not open.
                let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                fcntl(b, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).is_ok()
            })
            // SAFETY: the old supervisor passed this pipe's write end to this
            // process at this number for it to own (see `spawn_upgrade`);
            // the variable is removed, so it is taken once.
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
        let notifier = ReadyNotifier {
            launcher: None,
            upgrade,
        };
        notifier.publish();
        notifier
    }

    /// Adds the detach pipe.
    pub(crate) fn join(&mut self, other: ReadyNotifier) {
        if let Some(fd) = other.launcher {
            self.launcher = Some(fd);
        }
        self.publish();
    }

    /// Lets a panic in the supervisor reach whoever waits.
    fn publish(&self) {
        use std::sync::atomic::Ordering;
        let fds = crate::supervisor::panic::LAUNCHER_FDS.each_ref();
        fds[0].store(
            self.launcher.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            Ordering::Release,
        );
        fds[1].store(
            self.upgrade.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            Ordering::Release,
        );
    }

    /// Whether anyone still waits for the verdict.
    pub(crate) fn is_pending(&self) -> bool {
        self.launcher.is_some() || self.upgrade.is_some()
    }

    /// The pipes' descriptors, while open.
    pub(crate) fn raw_fds(&self) -> Vec<RawFd> {
        self.launcher
            .iter()
            .chain(self.upgrade.iter())
            .map(AsRawFd::as_raw_fd)
            .collect()
    }

    fn take_all(&mut self) -> Vec<OwnedFd> {
        let fds = self
            .launcher
            .take()
            .into_iter()
            .chain(self.upgrade.take())
            .collect();
        self.publish();
        fds
    }

    /// The daemon is ready: the launching process exits 0, and the old
    /// supervisor of a binary upgrade learns this one's pid. `Err` if that
    /// old supervisor has closed its end (it stopped first).
    pub(crate) fn ready(&mut self) -> Result<(), Abandoned> {
        let text = format!("R{}", std::process::id());
        let upgrade = self.upgrade.take();
        for fd in self.take_all() {
            let _ = nix::unistd::write(&fd, text.as_bytes());
        }
        match upgrade {
            Some(fd) => nix::unistd::write(&fd, text.as_bytes())
                .map(drop)
                .map_err(|_| Abandoned),
            None => Ok(()),
        }
    }

    /// The daemon failed to start: the launching process prints `message` and exits 1.
    pub(crate) fn failed(&mut self, message: &str) {
        let mut text = Vec::with_capacity(message.len() + 1);
        text.push(b'E');
        text.extend_from_slice(message.as_bytes());
        for fd in self.take_all() {
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
    // StrictModes: the file and every directory up to `/` owned by root or
    // this euid, not writable by group or others, an ELF file. Then exec
    // that very file (through its descriptor), not whatever the path names
    // by then. The descriptor is close-on-exec: fine for an ELF binary
    // (a script would need it open; scripts are refused).
    let checked = crate::trust::open_exec_checked(&exe).map_err(|why| {
        io::Error::other(Error::UnsafePath {
            what: "upgrade binary",
            path: exe.clone(),
            reason: why.to_string(),
        })
    })?;
    // Above every descriptor number the hook below moves sources to.
    let exe_fd = nix::fcntl::fcntl(&checked, FcntlArg::F_DUPFD_CLOEXEC(3 + 64 + 1))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    let exe_fd = unsafe { OwnedFd::from_raw_fd(exe_fd) };
    drop(checked);
    let mut cmd = std::process::Command::new(format!("/proc/self/fd/{}", exe_fd.as_raw_fd()));
    std::os::unix::process::CommandExt::arg0(&mut cmd, &exe);
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
    drop(exe_fd);
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
        launcher: Some(write_end),
        upgrade: None,
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

/// Closes the descriptors this process inherited from its launcher that
/// nothing declared (see `fds.rs`): after the preconditions, before the
/// crate opens anything of its own and before anything forks.
pub(crate) fn close_inherited_fds(config: &Config) -> Result<()> {
    let declared: Vec<RawFd> = config
        .keep_fds
        .iter()
        .chain(&config.upgrade_fds)
        .copied()
        .collect();
    check_declared_fds(&config.keep_fds)?;
    let keep = KeepSet::new(
        &declared,
        |name| std::env::var(name).ok(),
        std::process::id(),
    );
    fds::close_inherited(&keep).map(drop)
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

/// Reaps every child that has exited, without blocking.
pub(crate) fn reap_any() -> Vec<(Pid, WaitStatus)> {
    let mut reaped = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    reaped.push((pid, status));
                }
            }
        }
    }
    reaped
}

/// Reaps `pid` if it has exited, without blocking.
pub(crate) fn reap_pid(pid: Pid) -> Option<WaitStatus> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => None,
        Ok(status) => Some(status),
        Err(Errno::ECHILD) => Some(WaitStatus::Exited(pid, 0)),
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

/// Makes this process a child subreaper, so that double-forked workers are
/// re-parented to it.
pub(crate) fn become_subreaper() -> Result<()> {
    prctl::set_child_subreaper(true).map_err(|err| Error::sys("PR_SET_CHILD_SUBREAPER", err))
}

static FORKS_AFTER_RUNTIME: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on a thread whose every fork is std's `Command`, which execs at
    /// once: the `foreign-forker` thread.
    static EXEC_FORKS_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as one that forks only to exec at once (a
/// clean start, DESIGN.md invariant 1): [`forks_after_runtime`] leaves its
/// forks out.
pub(crate) fn exec_forks_only() {
    EXEC_FORKS_ONLY.with(|flag| flag.set(true));
}

extern "C" fn count_fork() {
    // A const-initialised thread-local without a destructor: reading it
    // takes no lock and allocates nothing.
    if !EXEC_FORKS_ONLY.with(std::cell::Cell::get) {
        FORKS_AFTER_RUNTIME.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts, from now on, every `fork()` this process makes (a supervisor
/// check: it must stay 0). Called once, in the supervisor, before its runtime.
pub(crate) fn watch_forks() {
    // SAFETY: `count_fork` is an `extern "C"` function that only reads a
    // const-initialised thread-local `Cell<bool>` and performs an atomic
    // add, which take no lock and allocate nothing, and so are valid in a
    // prepare handler; registering a handler has no other precondition.
    unsafe {
        libc::pthread_atfork(Some(count_fork), None, None);
    }
}

/// Forks made by this process since [`watch_forks`].
pub(crate) fn forks_after_runtime() -> u64 {
    FORKS_AFTER_RUNTIME.load(Ordering::Relaxed)
}
