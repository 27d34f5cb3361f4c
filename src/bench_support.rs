//! Hooks for the criterion micro benchmarks in `benches/micro.rs`.
//!
//! **Not a stable API.** This module is hidden from the documentation and
//! exists only so that `benches/micro.rs` can drive the crate's private
//! machinery (the scoreboard mapping, the wake-up eventfd, a worker's and a
//! supervisor's `DaemonActor` core) in one process, without forking. It may
//! change or go away in any release; applications must not use it.
//!
//! Everything here calls the code the daemon runs: [`Pool::new`] maps the
//! scoreboard and opens the eventfd as `run` does, [`Pool::add_worker`] does
//! what the supervisor and `worker_main` do to a slot, [`Pool::worker`] and
//! [`Pool::supervisor`] build the same `DaemonActor`s, [`set_worker_state`]
//! is the worker's own state change and [`status_report`] the report that
//! `Status` answers. Only [`WakeWatcher`]'s loop is a copy: it is the
//! supervisor's wake-up task without the `Woken` message to its actor.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use slog::o;

use crate::config::Config;
use crate::daemon::{DaemonActor, SupervisorSetup, WorkerSetup};
use crate::error::{Error, Result};
use crate::logging::{self, Drained};
use crate::process::{self, Wake};
use crate::scoreboard::{Scoreboard, SlotCounter, SlotId};
use crate::state::SlotState;
use crate::status::StatusReport;

/// A pre-forked pool's shared state as `run` makes it before the first fork:
/// the scoreboard mapping and the workers' wake-up eventfd. Nothing is
/// forked: the "workers" and the "supervisor" are this process.
#[derive(Debug)]
pub struct Pool {
    config: Arc<Config>,
    board: Scoreboard,
    wake: Arc<Wake>,
}

impl Pool {
    /// A pre-forked pool of `max_children` slots (`start_children(1)`, the
    /// derived spares, unlimited requests per worker, not verbose).
    ///
    /// # Errors
    ///
    /// The configuration's error for `max_children == 0`, or [`Error::Sys`]
    /// if the mapping or the eventfd cannot be made.
    pub fn new(max_children: usize) -> Result<Pool> {
        let daemon = crate::Daemon::builder()
            .start_children(1)
            .max_children(max_children)
            .build()?;
        let config = Arc::new(daemon.config().clone());
        Ok(Pool {
            board: Scoreboard::new(config.mode().max_children())?,
            wake: Arc::new(Wake::new()?),
            config,
        })
    }

    /// Takes a slot for a worker as the supervisor does (`F`), then records
    /// it as the new worker does in `worker_main`: this process's pid, one
    /// more spawned, `f`. `None` when every slot is taken.
    pub fn add_worker(&self) -> Option<SlotId> {
        let slot = self.board.allocate()?;
        self.board.set_pid(slot, std::process::id() as i32);
        self.board.count_own(slot, SlotCounter::Spawned);
        self.board.set_state(slot, SlotState::Starting);
        Some(slot)
    }

    /// The bare scoreboard write of a state change (no wake-up).
    pub fn set_state(&self, slot: SlotId, state: SlotState) {
        self.board.set_state(slot, state);
    }

    /// Sets a slot's pid (to make a report's worker lines distinct).
    pub fn set_pid(&self, slot: SlotId, pid: i32) {
        self.board.set_pid(slot, pid);
    }

    /// Counts one request served in `slot`, as a worker does at `Done`.
    pub fn count_request(&self, slot: SlotId) -> u64 {
        self.board.count_request(slot)
    }

    /// A slot's state, as the supervisor reads it.
    pub fn state(&self, slot: SlotId) -> SlotState {
        self.board.state(slot)
    }

    /// Requests served by the worker in `slot`.
    pub fn requests(&self, slot: SlotId) -> u64 {
        self.board.snapshot(slot).requests
    }

    /// The supervisor's read of the eventfd: drains pending wake-ups;
    /// whether there were any.
    pub fn drain(&self) -> bool {
        self.wake.drain()
    }

    /// The `DaemonActor` of a worker in `slot`, built as `worker_main` builds
    /// it (with a worker's synchronous logger on stderr, which logs nothing
    /// below info when not verbose). Not started: start it in an actix
    /// `System`, or use [`set_worker_state`] on it as it is.
    pub fn worker(&self, slot: SlotId) -> DaemonActor {
        let pid = std::process::id();
        let log = logging::init(
            &self.config,
            Drained::Sync,
            o!("pid" => pid, "role" => "worker", "slot" => slot),
        );
        DaemonActor::worker(WorkerSetup {
            config: self.config.clone(),
            log,
            board: self.board.clone(),
            wake: self.wake.clone(),
            slot,
            supervisor_pid: nix::unistd::Pid::from_raw(pid as i32),
            link: None,
        })
    }

    /// The supervisor's `DaemonActor` over this pool (no spawner, a
    /// discarding logger). Not started: meant for [`status_report`].
    pub fn supervisor(&self) -> DaemonActor {
        DaemonActor::supervisor(SupervisorSetup {
            config: self.config.clone(),
            log: slog::Logger::root(slog::Discard, o!()),
            board: Some(self.board.clone()),
            wake: Some(self.wake.clone()),
            spawner: None,
            notifier: None,
            outcome: Arc::new(Mutex::new(None)),
        })
    }

    /// Starts a thread that waits for wake-ups as the supervisor does: an
    /// actix `System` whose task watches the eventfd with tokio's reactor
    /// and drains it whenever it is readable. It counts the drains that
    /// found wake-ups (the supervisor would send itself `Woken` there).
    ///
    /// # Errors
    ///
    /// [`Error::Sys`] if the eventfd cannot be registered with the reactor
    /// or the thread cannot start.
    pub fn watch_wakeups(&self) -> Result<WakeWatcher> {
        let seen = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let (wake, seen, stop) = (self.wake.clone(), seen.clone(), stop.clone());
            std::thread::Builder::new()
                .name("bench-supervisor".into())
                .spawn(move || {
                    let system = actix_rt::System::new();
                    system.block_on(async move {
                        // The loop of the supervisor's wake-up task
                        // (`Core::supervisor_started`).
                        let fd = match process::watch(wake) {
                            Ok(fd) => fd,
                            Err(err) => {
                                let _ = ready_tx.send(Err(err));
                                return;
                            }
                        };
                        let _ = ready_tx.send(Ok(()));
                        loop {
                            let Ok(mut guard) = fd.readable().await else {
                                return;
                            };
                            guard.clear_ready();
                            if fd.get_ref().0.drain() {
                                seen.fetch_add(1, Ordering::Release);
                            }
                            if stop.load(Ordering::Acquire) {
                                return;
                            }
                        }
                    });
                })
                .map_err(|err| Error::sys("start the wake-up watcher", err))?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(WakeWatcher {
                seen,
                stop,
                wake: self.wake.clone(),
                thread: Some(thread),
            }),
            Ok(Err(err)) => {
                let _ = thread.join();
                Err(Error::sys("watch the wake-up eventfd", err))
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::sys(
                    "watch the wake-up eventfd",
                    std::io::Error::other("the watcher thread ended"),
                ))
            }
        }
    }
}

/// A worker's own state change, exactly as its status updates make it: the
/// scoreboard write and, in a pre-forked pool when the worker becomes idle
/// or busy or exits, the supervisor's wake-up. Does nothing to a
/// `DaemonActor` that is not a worker's.
pub fn set_worker_state(actor: &mut DaemonActor, state: SlotState) {
    actor.bench_set_state(state);
}

/// The report that `Status` answers, built from the scoreboard (`None` for
/// a `DaemonActor` outside a daemon).
pub fn status_report(actor: &DaemonActor) -> Option<StatusReport> {
    actor.bench_status()
}

/// A thread waiting for wake-ups as the supervisor does; see
/// [`Pool::watch_wakeups`]. Dropping it stops and joins the thread.
#[derive(Debug)]
pub struct WakeWatcher {
    seen: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    wake: Arc<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl WakeWatcher {
    /// How many drains found wake-ups so far.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Acquire)
    }

    /// Waits (spinning, yielding the core) until more than `before` drains
    /// found wake-ups.
    ///
    /// # Panics
    ///
    /// If that takes more than 10 seconds: the watcher is stuck or gone.
    pub fn wait_past(&self, before: u64) {
        let start = Instant::now();
        while self.seen() <= before {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no wake-up seen in 10 s"
            );
            std::thread::yield_now();
        }
    }
}

impl Drop for WakeWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.wake.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Test aid: what an attacker with code in a worker can do to the
/// scoreboard (only its own slot's page is writable in a worker): write any
/// pid and any state byte into this worker's own slot, or try to write
/// another slot or the header (a SIGSEGV). The examples' `FORGE`
/// fault command uses it; the supervisor must retire the worker and signal
/// nobody else.
#[derive(Debug, Clone)]
pub struct SlotForger {
    board: Scoreboard,
    slot: SlotId,
}

impl SlotForger {
    /// The forger of `process`'s slot (`None` outside a worker).
    pub fn of(process: &crate::Process) -> Option<SlotForger> {
        Some(SlotForger {
            board: process.board()?.clone(),
            slot: process.slot()?,
        })
    }

    /// Writes `pid` and the raw `state` byte into the slot.
    pub fn forge(&self, pid: i32, state: u8) {
        self.board.forge(self.slot, pid, state);
    }

    /// This worker's slot.
    pub fn slot(&self) -> SlotId {
        self.slot
    }

    /// Writes a state byte into `slot` (another worker's, as an attacker
    /// would): in a worker, where only its own slot is writable, anything
    /// but its own slot dies by SIGSEGV. Out of range: does nothing.
    pub fn scribble(&self, slot: SlotId) {
        if slot.0 < self.board.len() {
            self.board.forge(slot, 1, SlotState::Req as u8);
        }
    }

    /// Writes a header counter (the supervisor's): in a worker, SIGSEGV.
    pub fn scribble_header(&self) {
        self.board.count(crate::scoreboard::Counter::Exited);
    }
}
