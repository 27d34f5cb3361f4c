//! # actix-daemon
//!
//! All the housework of a forking Unix daemon for actix applications: the
//! actix answer to Perl's POE::Component::Daemon. It detaches from the
//! terminal, sends output to a log file that it reopens on HUP, runs a
//! pre-forked pool of worker processes (like Apache's prefork MPM) or forks
//! one worker per request, keeps a shared-memory scoreboard of what every
//! worker does, reaps and replaces workers, and shuts everything down
//! cleanly. It does not listen on sockets: the application does, and tells
//! the daemon what it is doing.
//!
//! ```no_run
//! use actix::prelude::*;
//! use actix_daemon::{Daemon, DaemonActor, DaemonSignal, Subscribe, UpdateStatus};
//!
//! struct App;
//! impl Actor for App {
//!     type Context = Context<Self>;
//!     fn started(&mut self, ctx: &mut Context<Self>) {
//!         DaemonActor::from_registry().do_send(Subscribe(ctx.address().recipient()));
//!     }
//! }
//! impl Handler<DaemonSignal> for App {
//!     type Result = ();
//!     fn handle(&mut self, signal: DaemonSignal, _: &mut Context<Self>) {
//!         let daemon = DaemonActor::from_registry();
//!         match signal {
//!             // A pre-forked worker is ready: say so, and wait for Accept.
//!             DaemonSignal::Child(_) => daemon.do_send(UpdateStatus::Wait),
//!             // Accept one connection, then send Req, serve it, send Done.
//!             DaemonSignal::Accept => { /* ... */ }
//!             _ => {}
//!         }
//!     }
//! }
//!
//! fn main() -> Result<(), actix_daemon::Error> {
//!     let daemon = Daemon::builder().start_children(4).requests(1000).build()?;
//!     // Called once in the supervisor and once in every worker, inside that
//!     // process's own actix System.
//!     daemon.run(|_process| {
//!         App.start();
//!     })
//! }
//! ```
//!
//! # Processes
//!
//! `run` turns the calling process into the **supervisor**. Before it builds
//! any runtime it forks a **spawner**: a small single-threaded process with
//! no runtime, holding the application exactly as it was built. Every
//! **worker** is forked by the spawner (a double fork, so the supervisor, a
//! child subreaper, becomes its parent) and builds a fresh actix `System`.
//! This keeps every process inside what tokio supports: no process that has
//! used tokio ever forks without exec. See the book's "process model"
//! chapter.
//!
//! # Fork safety
//!
//! [`Daemon::run`] forks: to detach (before any runtime), the spawner
//! (before any runtime), and, from the spawner, every worker. Call it from a
//! plain `main`, not inside `#[actix_rt::main]` or any tokio runtime, and
//! before the application starts threads; it checks both and returns
//! [`Error::InsideRuntime`] or [`Error::Threaded`] instead of forking. What
//! the application builds before `run` (listening sockets, configuration) is
//! what every worker inherits.
//!
//! # Signals
//!
//! | signal | supervisor | worker |
//! |---|---|---|
//! | `SIGTERM`, `SIGINT`, `SIGQUIT` | graceful shutdown: `Shutdown` to subscribers, TERM to every worker and foreign child, KILL after the shutdown timeout, reap, `run` returns | finish the current request, exit |
//! | `SIGHUP` | reopen the log file, `Hup` to subscribers, HUP to every ready worker | reopen the log file, `Hup` to subscribers |
//! | `SIGUSR2` | the verbose peek report goes to the log; with [`DaemonBuilder::upgrade_with`], a zero-downtime binary upgrade instead | the peek report |
//! | `SIGUSR1` | graceful reload: every worker replaced by a fresh one (pre-fork) | ignored |
//! | `SIGTTIN`, `SIGTTOU` | one more, one fewer spare (pre-fork) | ignored |
//! | `SIGCHLD` | reap every exited child | reap registered foreign children |
//!
//! The spawner ignores `SIGINT`, `SIGTERM`, `SIGHUP`, `SIGQUIT`, `SIGUSR1`,
//! `SIGUSR2` and `SIGCHLD`: it ends with the supervisor.
//!
//! # Operations
//!
//! A pidfile ([`DaemonBuilder::pidfile`]), a privilege drop
//! ([`DaemonBuilder::user`], [`PrivilegeScope`]), the babysitter
//! ([`DaemonBuilder::babysit`] and its limits), crash-loop backoff, systemd's
//! notify protocol (when `NOTIFY_SOCKET` is set) and socket activation
//! ([`listen_fds`]).
//!
//! # Features
//!
//! - `web` (default): run actix-web applications on a pre-forked pool
//!   (`actix_daemon::web`).
//!
//! Linux only (`/proc`, `prctl`, child subreaper).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

mod babysitter;
#[doc(hidden)]
pub mod bench_support;
mod config;
mod daemon;
#[cfg(doctest)]
mod doctests;

/// The README's code, compiled as a doctest (it uses the `web` feature).
#[cfg(all(doctest, feature = "web"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
mod error;
mod logging;
mod messages;
mod ops;
mod payload;
mod process;
mod scoreboard;
mod signals;
mod state;
mod status;
mod supervisor;
mod systemd;
mod trust;
#[cfg(feature = "web")]
pub mod web;
mod worker;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use actix::Actor;
use actix::registry::SystemRegistry;
use slog::{Logger, error, o};

pub use crate::babysitter::{BabysitLimits, BabysitterActor};
pub use crate::config::{Config, CrashPolicy, DaemonBuilder, MAX_CHILDREN, Mode, PreFork};
pub use crate::daemon::DaemonActor;
pub use crate::error::{Error, Result};
pub use crate::logging::logger;
pub use crate::messages::{
    DaemonSignal, ForeignChild, Peek, Shutdown, Status, Subscribe, Unsubscribe, UpdateStatus,
};
pub use crate::ops::PrivilegeScope;
pub use crate::payload::{MAX_PAYLOAD_DATA, MAX_PAYLOAD_FDS, Payload};
pub use crate::process::{EXIT_BOARD, EXIT_ORPHAN, EXIT_PANIC, EXIT_RUNTIME, spawn_foreign_child};
pub use crate::scoreboard::{Counters, SlotId, SlotSnapshot};
pub use crate::state::{ParseSlotStateError, SlotState};
pub use crate::status::{PeekReport, PoolLimits, Role, StatusReport, SubscriberInfo};
pub use crate::systemd::listen_fds;

use crate::daemon::{SupervisorSetup, WorkerSetup};
use crate::process::{ReadyNotifier, Wake, WorkerBoot};
use crate::scoreboard::{Scoreboard, SlotCounter};

/// A configured daemon, ready to [`run`](Self::run). Made by
/// [`Daemon::builder`].
#[derive(Debug)]
pub struct Daemon {
    config: Config,
}

/// What the application's set-up closure learns about the process it runs in.
#[derive(Debug, Clone)]
pub struct Process {
    role: Role,
    slot: Option<SlotId>,
    config: Arc<Config>,
    logger: Logger,
    board: Option<scoreboard::Scoreboard>,
}

impl Process {
    /// Supervisor or worker.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Whether this is the supervisor (the seed's parent).
    pub fn is_supervisor(&self) -> bool {
        self.role == Role::Supervisor
    }
    /// Whether this is a worker (the seed's child).
    pub fn is_worker(&self) -> bool {
        self.role == Role::Worker
    }
    /// The worker's scoreboard slot.
    pub fn slot(&self) -> Option<SlotId> {
        self.slot
    }
    /// The daemon's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// This process's logger (also [`logger()`]).
    pub fn logger(&self) -> &Logger {
        &self.logger
    }
    /// In a pre-forked worker: the number of requests after which it
    /// retires, `requests` plus its draw of
    /// [`requests_jitter`](DaemonBuilder::requests_jitter). `None` when
    /// unlimited, and outside a pre-forked worker.
    pub fn requests_limit(&self) -> Option<u64> {
        match self.role {
            Role::Worker => daemon::worker_request_limit(&self.config),
            Role::Supervisor => None,
        }
    }
    /// The scoreboard (shared by every process of the daemon).
    #[cfg_attr(not(feature = "web"), allow(dead_code))]
    pub(crate) fn board(&self) -> Option<&scoreboard::Scoreboard> {
        self.board.as_ref()
    }
}

impl Daemon {
    /// Starts configuring a daemon.
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder::default()
    }

    pub(crate) fn new(config: Config) -> Daemon {
        Daemon { config }
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs the daemon: checks the process, opens the log file, detaches (if
    /// asked), forks the spawner (if the mode has workers), then runs the
    /// supervisor's actix `System` until shutdown.
    ///
    /// `init` is called once in the supervisor and once in every worker,
    /// inside that process's own `System`, after `DaemonActor` is in the
    /// registry: start the application's actors there. Each process calls
    /// its own copy of `init`, with what was captured before `run` (a
    /// listening socket, say) inherited across the fork.
    ///
    /// This function forks; see the crate's "Fork safety" section.
    ///
    /// # Inherited descriptors
    ///
    /// Before anything forks, `run` closes every descriptor above stderr
    /// that is not close-on-exec, that is, that this program inherited from
    /// whoever launched it (a shell's `7<file`, a leaked pipe), unless it is
    /// named with [`DaemonBuilder::keep_fd`] or
    /// [`DaemonBuilder::upgrade_with`], or is a systemd socket-activation
    /// descriptor or a binary upgrade's hand-over. The supervisor logs each
    /// one it closed. Descriptors the program opened through Rust's
    /// standard library (listeners bound before `run`, files) are
    /// close-on-exec and are not touched; one the program made inheritable
    /// (`dup2`, a C library) must be declared with `keep_fd`, or it is
    /// closed under the value that holds it.
    ///
    /// # Errors
    ///
    /// Before anything forks: [`Error::InsideRuntime`], [`Error::Threaded`],
    /// [`Error::Workdir`], [`Error::KeepFd`], [`Error::OpenLogfile`], [`Error::UnsafePath`] (a log file or
    /// pidfile another user could control), [`Error::PidfileLocked`]. Later: [`Error::Sys`] for a failed system call
    /// while setting up, [`Error::SpawnerDied`] if the spawner died (after a
    /// clean shutdown of everything else). A detached daemon's launching
    /// process never returns: it exits 0 once the daemon is ready (the
    /// initial pool waits for requests), or prints the start-up error and
    /// exits 1.
    pub fn run<F>(self, init: F) -> Result<()>
    where
        F: FnOnce(&Process) + 'static,
    {
        process::check_preconditions()?;
        process::pidfd::check_support()?;
        process::check_workdir(&self.config)?;
        // Before the crate opens anything of its own: what is closed here
        // can only be what the launching process passed.
        process::close_inherited_fds(&self.config)?;
        // A binary upgrade execs `/proc/self/fd/N` (the checked file), which
        // names the process `N`: take the binary's own name back.
        if let Some(name) = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        {
            process::set_process_name(&name, "");
        }
        if let Ok(dir) = std::env::current_dir() {
            let _ = process::LAUNCH_DIR.set(dir);
        }
        let _ = process::LAUNCH_PID.set(std::process::id());
        process::keep_upgrade_listeners(&self.config.upgrade_fds)?;
        let mut config = self.config;
        // A relative log file is relative to where `run` was called, also
        // when a detached daemon reopens it on HUP from its own workdir.
        if let Some(path) = config.logfile.as_mut()
            && path.is_relative()
        {
            let cwd =
                std::env::current_dir().map_err(|err| Error::sys("current directory", err))?;
            *path = cwd.join(&*path);
        }
        if let Some(path) = config.pidfile.as_mut()
            && path.is_relative()
        {
            let cwd =
                std::env::current_dir().map_err(|err| Error::sys("current directory", err))?;
            *path = cwd.join(&*path);
        }
        let privileges =
            ops::Privileges::resolve(config.user(), config.group(), config.privilege_scope())?;
        if let Some(p) = &privileges {
            let (uid, gid) = p.owner();
            let _ = process::LOG_OWNER.set((uid.map(|u| u.as_raw()), gid.as_raw()));
        }
        // Opened without following symlinks and checked through the
        // descriptor; chowned (by descriptor) only when created here.
        let mut pidfile = config
            .pidfile()
            .map(|p| ops::Pidfile::lock(p, privileges.as_ref()))
            .transpose()?;
        let log_file = config
            .logfile()
            .map(|p| process::open_logfile(p, true))
            .transpose()?;
        let config = Arc::new(config);
        // An old supervisor that started this one (binary upgrade) waits
        // for the same verdict as a launching process.
        let mut notifier = Some(ReadyNotifier::from_upgrade());
        if config.detach() {
            let detached = process::detach(&config)?;
            if let Some(n) = notifier.as_mut() {
                n.join(detached);
            }
        }
        let result = match pidfile.as_mut().map(ops::Pidfile::write_pid) {
            Some(Err(err)) => Err(err),
            _ => run_supervisor(
                &config,
                log_file,
                &mut notifier,
                pidfile.as_ref().and_then(ops::Pidfile::raw_fd),
                privileges,
                init,
            ),
        };
        if let (Err(err), Some(n)) = (&result, notifier.as_mut()) {
            n.failed(&process::error_chain(err));
        }
        result
    }
}

fn run_supervisor<F>(
    config: &Arc<Config>,
    log_file: Option<std::fs::File>,
    notifier: &mut Option<ReadyNotifier>,
    pidfile_fd: Option<std::os::fd::RawFd>,
    privileges: Option<ops::Privileges>,
    init: F,
) -> Result<()>
where
    F: FnOnce(&Process) + 'static,
{
    if let Some(file) = &log_file {
        process::redirect_output(file)
            .map_err(|err| Error::sys("redirect output to log file", err))?;
    }
    drop(log_file);
    let spawner_privileges = match privileges {
        Some(p) if p.scope == PrivilegeScope::All => {
            p.drop_now()?;
            None
        }
        other => other,
    };
    let mode = config.mode().clone();
    let supervisor = nix::unistd::getpid();
    let (board, wake, spawner, init) = if mode.has_workers() {
        let board = Scoreboard::new(mode.max_children())?;
        let wake = Arc::new(Wake::new()?);
        process::become_subreaper()?;
        // Each worker gets its own channel to the supervisor at its fork
        // (the spawner's intermediate makes it): nothing to make here.
        let boot = WorkerBoot {
            config: config.clone(),
            board: board.clone(),
            wake: wake.clone(),
            supervisor,
            privileges: spawner_privileges,
        };
        // The spawner must not hold the readiness pipe, or the launching
        // process would not see the supervisor die; nor the pidfile, whose
        // lock only the supervisor's life should keep.
        let close: Vec<_> = notifier
            .as_ref()
            .map(ReadyNotifier::raw_fds)
            .unwrap_or_default()
            .into_iter()
            .chain(pidfile_fd)
            .collect();
        let (link, init) = process::start_spawner(boot, close, worker_main::<F>, init)?;
        (Some(board), Some(wake), Some(link), init)
    } else {
        (None, None, None, init)
    };
    process::watch_forks();
    let log = logging::init(
        config,
        logging::Drained::Async,
        o!("pid" => supervisor.as_raw(), "role" => "supervisor"),
    );
    log_closed_fds(&log);
    // A panic in the supervisor ends every child and reaches the launcher
    // (see `supervisor::panic`), instead of leaving a deaf supervisor.
    supervisor::panic::install(
        config.pidfile().map(std::path::Path::to_owned),
        config.shutdown_timeout(),
        spawner.as_ref().map(|link| link.pidfd.pid()),
    );
    let outcome = Arc::new(Mutex::new(None));
    let setup = SupervisorSetup {
        config: config.clone(),
        log: log.clone(),
        board,
        wake,
        spawner,
        notifier: notifier.take(),
        outcome: outcome.clone(),
    };
    let process = Process {
        role: Role::Supervisor,
        slot: None,
        config: config.clone(),
        logger: log.clone(),
        board: setup.board.clone(),
    };
    let system = actix_rt::System::new();
    system.block_on(async move {
        SystemRegistry::set(DaemonActor::supervisor(setup).start());
        init(&process);
    });
    let code = system.run_with_code();
    drop(log);
    logging::flush();
    if let Some(err) = outcome.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(err);
    }
    match code {
        Ok(_) => Ok(()),
        Err(err) => Err(Error::sys("supervisor runtime", err)),
    }
}

/// Says which inherited descriptors `run` closed, so that an operator can
/// see what was dropped (and declare it with `keep_fd` if it was needed).
fn log_closed_fds(log: &Logger) {
    let Some(closed) = process::CLOSED_FDS.get().filter(|c| !c.is_empty()) else {
        return;
    };
    let list: Vec<String> = closed
        .iter()
        .map(|c| format!("{} ({})", c.fd, c.target))
        .collect();
    slog::info!(log, "closed descriptors inherited from the launching process (declare one with keep_fd to keep it)";
        "count" => closed.len(), "fds" => list.join(", "));
}

/// A worker's life after its process is set up (see `process::worker_process`).
fn worker_main<F>(boot: &WorkerBoot, slot: SlotId, link: std::os::fd::OwnedFd, init: F) -> i32
where
    F: FnOnce(&Process) + 'static,
{
    let pid = std::process::id();
    // The log file may have been renamed and reopened (HUP) since the
    // spawner last reopened it: start on the current one.
    if let Some(path) = boot.config.logfile() {
        let _ = process::reopen_logfile(path, false);
    }
    boot.board.count_own(slot, SlotCounter::Spawned);
    boot.board.set_state(slot, SlotState::Starting);
    // A panic anywhere in a worker (tokio would otherwise swallow a panic in
    // an actor and leave the worker half alive) ends the worker with
    // EXIT_PANIC; the supervisor reaps and replaces it.
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("worker {pid} panicked: {info}");
        logging::flush();
        process::exit_now(EXIT_PANIC)
    }));
    let log = logging::init(
        &boot.config,
        logging::Drained::Sync,
        o!("pid" => pid, "role" => "worker", "slot" => slot),
    );
    let process = Process {
        role: Role::Worker,
        slot: Some(slot),
        config: boot.config.clone(),
        logger: log.clone(),
        board: Some(boot.board.clone()),
    };
    let setup = WorkerSetup {
        config: boot.config.clone(),
        log: log.clone(),
        board: boot.board.clone(),
        wake: boot.wake.clone(),
        slot,
        supervisor_pid: boot.supervisor,
        link: Some(Arc::new(link)),
    };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let system = actix_rt::System::new();
        system.block_on(async move {
            SystemRegistry::set(DaemonActor::worker(setup).start());
            init(&process);
        });
        system.run_with_code()
    }));
    let code = match result {
        Ok(Ok(code)) => code,
        Ok(Err(err)) => {
            error!(log, "worker runtime failed"; "error" => %err);
            EXIT_RUNTIME
        }
        Err(_) => EXIT_PANIC,
    };
    boot.board.set_state(slot, SlotState::Exit);
    drop(log);
    logging::flush();
    code
}
