//! The spawner: its fork, its loop, and the set-up of each worker.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::prctl;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
#[cfg(test)]
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, getppid};

use super::channel::Wake;
use super::pidfd::Pidfd;
use super::wire::{self, SpawnReply, SpawnRequest};
use super::{EXIT_BOARD, EXIT_ORPHAN, apply_log_fd, error_chain, set_process_name};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::scoreboard::{Scoreboard, SlotId};

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

/// What a new worker gets back at once: the default action of SIGCHLD,
/// SIGINT and SIGTERM (held blocked until its handlers exist, see
/// [`HELD_WHILE_STARTING`]). SIGHUP, SIGUSR1, SIGUSR2 and SIGQUIT stay
/// ignored and blocked until the worker's runtime installs its handlers (a
/// HUP sent by log rotation while a worker starts must not kill it), and
/// job control (SIGTTIN, SIGTTOU) stays ignored for good.
const WORKER_DEFAULTS: [Signal; 3] = [Signal::SIGCHLD, Signal::SIGINT, Signal::SIGTERM];

/// What a new worker holds blocked from its birth until its runtime has
/// installed its handlers ([`unblock_held_signals`]): a TERM or a HUP sent
/// while it starts (while it waits to be re-parented, say) is kept pending,
/// not lost to the spawner's SIG_IGN nor acted on by a default action, and
/// reaches the worker's handler once it exists. (A blocked signal is never
/// discarded as ignored on Linux: it stays pending until unblocked.)
const HELD_WHILE_STARTING: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGQUIT,
];

fn held_while_starting() -> SigSet {
    let mut set = SigSet::empty();
    for sig in HELD_WHILE_STARTING {
        set.add(sig);
    }
    set
}

/// In a worker, once its signal handlers exist: delivers what was held
/// since its fork. A no-op in the supervisor, which holds nothing.
pub(crate) fn unblock_held_signals() {
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&held_while_starting()), None);
}

/// Sets `handler` for `signals`.
fn set_signals(signals: &[Signal], handler: SigHandler) {
    for &sig in signals {
        // SAFETY: only SIG_DFL and SIG_IGN are passed, which install no
        // handler code; the caller is single-threaded (spawner, worker
        // before its runtime).
        let _ = unsafe { signal(sig, handler) };
    }
}

/// The supervisor's handle on the spawner.
#[derive(Debug)]
pub(crate) struct SpawnerLink {
    pub(crate) pidfd: Pidfd,
    pub(crate) sock: OwnedFd,
}

/// Everything a worker needs from before the fork, held by the spawner.
pub(crate) struct WorkerBoot {
    pub(crate) config: Arc<Config>,
    pub(crate) board: Scoreboard,
    pub(crate) wake: Arc<Wake>,
    pub(crate) supervisor: Pid,
    pub(crate) privileges: Option<crate::ops::Privileges>,
}

/// What a worker's process runs once it is set up: builds the worker's actix
/// `System`, calls the application, runs. Returns the exit status. The
/// descriptor is the worker's end of its own channel to the supervisor.
pub(crate) type WorkerMain<F> = fn(&WorkerBoot, SlotId, OwnedFd, F) -> i32;

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
            // Race-free: the spawner is our child and nobody has reaped it.
            let pidfd = Pidfd::open(child).map_err(|err| Error::sys("pidfd_open spawner", err))?;
            let flags = fcntl(&sup_end, FcntlArg::F_GETFL)
                .map_err(|err| Error::sys("fcntl spawner socket", err))?;
            fcntl(
                &sup_end,
                FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
            )
            .map_err(|err| Error::sys("fcntl spawner socket", err))?;
            Ok((
                SpawnerLink {
                    pidfd,
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
    if getppid() != boot.supervisor {
        return 0;
    }
    set_process_name(boot.config.alias(), "-spawner");
    // Ignoring SIGCHLD, among others, makes the kernel reap the
    // intermediates: the spawner never waits and never leaves a zombie.
    set_signals(&SPAWNER_IGNORES, SigHandler::SigIgn);
    let log = crate::logging::init(
        &boot.config,
        crate::logging::Drained::Sync,
        slog::o!("pid" => std::process::id(), "role" => "spawner"),
    );
    slog::debug!(log, "spawner started");
    let mut init = Some(init);
    loop {
        let slot = match wire::recv_request(sock.as_raw_fd()) {
            Ok(None) => break,
            Ok(Some(Ok((SpawnRequest::Reopen, fd)))) => {
                // The supervisor opened and checked the new log file; the
                // spawner never opens it by path.
                if let Some(fd) = fd
                    && let Err(err) = apply_log_fd(&fd)
                {
                    slog::error!(log, "cannot switch to the new log file"; "error" => %err);
                }
                continue;
            }
            Ok(Some(Ok((SpawnRequest::Spawn { slot }, _)))) if slot.0 < boot.board.len() => slot,
            Ok(Some(Ok((SpawnRequest::Spawn { slot }, _)))) => {
                slog::error!(log, "spawn request for a slot out of range"; "slot" => slot);
                continue;
            }
            Ok(Some(Err(len))) => {
                slog::error!(log, "malformed spawn request"; "bytes" => len);
                continue;
            }
            Err(Errno::EINTR) => continue,
            Err(err) => {
                slog::error!(log, "spawner socket failed"; "error" => %err);
                break;
            }
        };
        let reply = |reply: SpawnReply, fds: &[std::os::fd::BorrowedFd<'_>]| {
            let _ = wire::send_reply(sock.as_raw_fd(), reply, fds);
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
                // The worker must stay a zombie, not be reaped by the
                // kernel, if it dies before this intermediate exits: its
                // pid then cannot be reused before its pidfd is open.
                set_signals(&[Signal::SIGCHLD], SigHandler::SigDfl);
                // The worker inherits this mask; see HELD_WHILE_STARTING.
                let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&held_while_starting()), None);
                // The worker's own channel to the supervisor: made here, so
                // that only this worker and the supervisor ever hold it.
                let (link, worker_end) = match super::channel::link_pair() {
                    Ok(pair) => pair,
                    Err(errno) => {
                        reply(SpawnReply::Failed { slot, errno }, &[]);
                        // SAFETY: ends the intermediate without running
                        // destructors of the spawner's state.
                        unsafe { libc::_exit(0) }
                    }
                };
                // SAFETY: fork site "spawner loop", second fork (the worker):
                // the intermediate is a single-threaded copy of the spawner.
                let code = match unsafe { nix::unistd::fork() } {
                    Ok(ForkResult::Parent { child }) => match Pidfd::open(child) {
                        // Race-free: the worker is this process's unreaped child.
                        Ok(pidfd) => {
                            drop(worker_end);
                            let spawned = SpawnReply::Spawned { slot, pid: child };
                            reply(spawned, &[pidfd.as_fd(), link.as_fd()]);
                            0
                        }
                        Err(err) => {
                            // A worker the supervisor could not name must not run.
                            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                            let errno = Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO));
                            reply(SpawnReply::Failed { slot, errno }, &[]);
                            0
                        }
                    },
                    Ok(ForkResult::Child) => {
                        drop(sock);
                        drop(link);
                        let init = init.take().expect("the spawner never calls init");
                        worker_process(&boot, slot, worker_end, worker_main, init)
                    }
                    Err(errno) => {
                        reply(SpawnReply::Failed { slot, errno }, &[]);
                        0
                    }
                };
                // SAFETY: ends the intermediate or the worker without
                // running destructors of the spawner's state.
                unsafe { libc::_exit(code) }
            }
            Err(errno) => {
                slog::warn!(log, "fork failed"; "slot" => slot, "error" => %errno);
                reply(SpawnReply::Failed { slot, errno }, &[]);
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
    link: OwnedFd,
    worker_main: WorkerMain<F>,
    init: F,
) -> i32 {
    // Before anything else: the board read-only but for this worker's own
    // slot, and no descriptor left to map it writable (scoreboard/confine.rs).
    if let Err(err) = boot.board.confine_to(slot) {
        eprintln!("worker: {}", error_chain(&err));
        return EXIT_BOARD;
    }
    // The intermediate exits right after forking us; the kernel then
    // re-parents us to the nearest subreaper, the supervisor.
    let deadline = Instant::now() + Duration::from_secs(5);
    while getppid() != boot.supervisor {
        if Instant::now() > deadline || getppid().as_raw() == 1 {
            return EXIT_ORPHAN;
        }
        std::thread::yield_now();
    }
    let _ = prctl::set_pdeathsig(Signal::SIGKILL);
    if getppid() != boot.supervisor {
        return EXIT_ORPHAN;
    }
    set_process_name(boot.config.alias(), "-worker");
    set_signals(&WORKER_DEFAULTS, SigHandler::SigDfl);
    worker_main(boot, slot, link, init)
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
