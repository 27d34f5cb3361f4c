//! A panic in the supervisor: the daemon ends cleanly instead of leaving
//! a deaf supervisor behind.
//!
//! tokio catches a panic in a task and drops the task, so a panicking
//! actor would leave a supervisor that holds the port and the pidfile lock
//! and answers no signal. The panic hook installed here instead:
//!
//! 1. logs the panic with where it happened;
//! 2. sends TERM to every child of the supervisor (workers, foreign
//!    children) and KILL to the spawner (which ignores TERM and has nothing
//!    to finish), each through a pidfd opened while it is an unreaped
//!    child, waits for them up to the shutdown timeout, then KILLs and
//!    reaps what is left;
//! 3. removes the pidfile (if it holds this pid);
//! 4. tells a launching process still waiting (`E` and the message);
//! 5. exits with [`EXIT_PANIC`](crate::EXIT_PANIC).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::process::{EXIT_PANIC, Pidfd};

/// Descriptors of the readiness pipes while a launcher waits (-1: none).
pub(crate) static LAUNCHER_FDS: [AtomicI32; 2] = [AtomicI32::new(-1), AtomicI32::new(-1)];

struct Settings {
    pidfile: Option<PathBuf>,
    shutdown_timeout: Duration,
    spawner: Option<Pid>,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Installs the hook, in the supervisor, before its runtime starts.
pub(crate) fn install(pidfile: Option<PathBuf>, shutdown_timeout: Duration, spawner: Option<Pid>) {
    let _ = SETTINGS.set(Settings {
        pidfile,
        shutdown_timeout,
        spawner,
    });
    let me = std::process::id();
    std::panic::set_hook(Box::new(move |info| {
        // A worker inherits no hook from here (it installs its own), but a
        // thread of a forked process would: act only in the supervisor.
        if std::process::id() != me {
            eprintln!("{info}");
            return;
        }
        let message = format!("supervisor panicked: {info}");
        eprintln!("{message}; stopping every child");
        end_children();
        if let Some(settings) = SETTINGS.get()
            && let Some(path) = &settings.pidfile
        {
            remove_if_ours(path);
        }
        tell_launcher(&message);
        crate::logging::flush();
        crate::process::exit_now(EXIT_PANIC)
    }));
}

/// This process's children, read from `/proc` (every thread's list: a
/// re-parented child may be listed under any of them).
fn children() -> Vec<Pid> {
    let mut pids = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                pids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok())
                        .map(Pid::from_raw),
                );
            }
        }
    }
    pids.sort();
    pids.dedup();
    pids
}

fn end_children() {
    let timeout = SETTINGS
        .get()
        .map_or(Duration::from_secs(10), |s| s.shutdown_timeout);
    let spawner = SETTINGS.get().and_then(|s| s.spawner);
    // Each pid is an unreaped child of ours: its pidfd cannot name another
    // process.
    let pidfds: Vec<Pidfd> = children()
        .into_iter()
        .filter_map(|pid| Pidfd::open(pid).ok())
        .collect();
    for pidfd in &pidfds {
        let sig = if Some(pidfd.pid()) == spawner {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        let _ = pidfd.signal(sig);
    }
    let deadline = Instant::now() + timeout;
    let mut left = pidfds.len();
    while left > 0 && Instant::now() < deadline {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
            Ok(_) => left = left.saturating_sub(1),
            Err(_) => break,
        }
    }
    if left > 0 {
        for pidfd in &pidfds {
            let _ = pidfd.signal(Signal::SIGKILL);
        }
        let grace = Instant::now() + Duration::from_secs(2);
        while Instant::now() < grace {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}

fn remove_if_ours(path: &std::path::Path) {
    let me = std::process::id().to_string();
    for p in [path.to_owned(), crate::ops::Pidfile::oldbin(path)] {
        if std::fs::read_to_string(&p).is_ok_and(|t| t.trim() == me) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

fn tell_launcher(message: &str) {
    let mut text = Vec::with_capacity(message.len() + 1);
    text.push(b'E');
    text.extend_from_slice(message.as_bytes());
    for slot in &LAUNCHER_FDS {
        let fd = slot.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: the notifier registered this descriptor while it owns
            // it and unregisters it (swap to -1) before closing it; the swap
            // above makes this the only user from now on, and the process
            // exits right after without closing it.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let _ = nix::unistd::write(fd, &text);
        }
    }
}
