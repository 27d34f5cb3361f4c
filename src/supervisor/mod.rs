//! The supervisor's side of `DaemonActor`: the pool, its children and the
//! daemon's life.
//!
//! Where things live:
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the [`Supervisor`] role: start, signals, status, the babysitter's actions |
//! | `registry.rs` | the registry of children: slot, pid, pidfd, spawn and ready times, what was asked |
//! | `census.rs` | scoreboard readings checked against the registry |
//! | `effects.rs` | what the supervisor asks of the world ([`Effect`]), and the [`Os`] trait it asks through |
//! | `executor.rs` | the actor side: watchers, intervals, effects carried out |
//! | `pool.rs` | the census, the pool plans carried out, reaping and exits |
//! | `spawning.rs` | spawn requests, the spawner's replies, resends and its deadline |
//! | `links.rs` | each worker's own channel: requests given, claims and hand-backs heard, anything else retires the worker |
//! | `exits.rs` | exit classification and backoff (pure) |
//! | `prefork.rs` | the pre-fork plan (pure) |
//! | `dispatch.rs` | the fork-per-request plan (pure) |
//! | `pacing.rs` | spawn pacing (pure) |
//! | `phase.rs` | the phases |
//! | `stop.rs` | readiness, reload, upgrade, drain, kill, done |
//! | `panic.rs` | what a panic in the supervisor does |
//! | `tests.rs` | the supervisor driven event by event over a mock [`Os`] |

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use slog::{Logger, info, warn};

use crate::babysitter::Action;
use crate::config::{Config, Mode};
use crate::daemon::Common;
use crate::error::Error;
use crate::messages::{DaemonSignal, OsSignal, UpdateStatus};
use crate::payload::Payload;
use crate::process::{self, ReadyNotifier, SpawnerLink, Wake};
use crate::scoreboard::{Counter, SlotSnapshot};
use crate::state::UpdateKind;
use crate::status::{PeekReport, Role, StatusReport};

mod census;
pub(crate) mod dispatch;
pub(crate) mod effects;
pub(crate) mod executor;
pub(crate) mod exits;
mod links;
pub(crate) mod pacing;
pub(crate) mod panic;
mod phase;
mod pool;
pub(crate) mod prefork;
pub(crate) mod registry;
mod spawning;
mod stop;
#[cfg(test)]
mod tests;

use effects::{Effect, Os, RealOs};
use exits::Backoff;
use pacing::Pacer;
use phase::Phase;
use prefork::Prefork;
use registry::{Ask, Handle, Registry, Retire};

pub(crate) use executor::execute;

/// What `run` hands the supervisor's actor.
pub(crate) struct SupervisorSetup {
    pub(crate) config: Arc<Config>,
    pub(crate) log: Logger,
    pub(crate) board: Option<crate::scoreboard::Scoreboard>,
    pub(crate) wake: Option<Arc<Wake>>,
    pub(crate) spawner: Option<SpawnerLink>,
    pub(crate) notifier: Option<ReadyNotifier>,
    pub(crate) outcome: Arc<Mutex<Option<Error>>>,
}

/// The spawner, while its socket is open.
struct Spawner {
    pidfd: Box<dyn Handle>,
    sock: Option<Arc<OwnedFd>>,
    task: Option<actix_rt::task::JoinHandle<()>>,
}

/// Fork per request: the requests no worker has been given yet (each
/// given one is held by its worker's registry entry until claimed).
#[derive(Default)]
struct Requests {
    queue: VecDeque<Payload>,
    paused: bool,
}

/// The supervisor role.
pub(crate) struct Supervisor {
    phase: Phase,
    registry: Registry<Box<dyn Handle>>,
    /// The OS side (see [`effects`]).
    os: Box<dyn Os>,
    /// What the actor shell is to carry out after this event.
    effects: Vec<Effect>,
    /// The spawner, until it is reaped.
    spawner: Option<Spawner>,
    wake: Option<Arc<Wake>>,
    backoff: Backoff,
    pacer: Pacer,
    prefork: Prefork,
    /// The pool's spare targets now (TTIN/TTOU move them).
    spares: Option<(usize, usize)>,
    requests: Requests,
    /// Children reaped before the supervisor knew them (a spawn report
    /// that came after the exit, or a foreign child reported late).
    unclaimed: HashMap<Pid, (WaitStatus, Instant)>,
    notifier: Option<ReadyNotifier>,
    outcome: Arc<Mutex<Option<Error>>>,
    systemd: Option<crate::systemd::Notify>,
    last_summary: String,
    /// The earliest time a look at the pool is due (backoff, pacing,
    /// hysteresis), and whether a timer is set for it.
    wake_at: Option<Instant>,
    timer_for: Option<Instant>,
    /// A plain daemon: its subscribers handled `Shutdown`.
    acked: bool,
    resend_delay: Duration,
    resend_scheduled: bool,
    /// A stuck spawner ended while a binary upgrade replaces this
    /// supervisor: the daemon's error if that upgrade fails.
    spawner_lost: Option<Error>,
}

const SWEEP: Duration = Duration::from_secs(1);
const KILL_GRACE: Duration = Duration::from_secs(2);
const RESEND_MIN: Duration = Duration::from_millis(50);
const RESEND_MAX: Duration = Duration::from_secs(2);

impl Supervisor {
    pub(crate) fn new(setup: SupervisorSetup) -> (Common, Supervisor) {
        let pid = nix::unistd::getpid();
        let common = Common::new(setup.config, setup.log, pid, setup.board);
        let supervisor = Supervisor {
            phase: Phase::Starting,
            registry: Registry::default(),
            os: Box::new(RealOs::default()),
            effects: Vec::new(),
            spawner: setup.spawner.map(|link| Spawner {
                pidfd: Box::new(link.pidfd),
                sock: Some(Arc::new(link.sock)),
                task: None,
            }),
            wake: setup.wake,
            backoff: Backoff::default(),
            pacer: Pacer::new(),
            prefork: Prefork::default(),
            spares: None,
            requests: Requests::default(),
            unclaimed: HashMap::new(),
            notifier: setup.notifier,
            outcome: setup.outcome,
            systemd: crate::systemd::Notify::from_env(),
            last_summary: String::new(),
            wake_at: None,
            timer_for: None,
            acked: false,
            resend_delay: RESEND_MIN,
            resend_scheduled: false,
            spawner_lost: None,
        };
        (common, supervisor)
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.phase.is_stopping()
    }

    fn spawner_pid(&self) -> Option<Pid> {
        self.spawner.as_ref().map(|s| s.pidfd.pid())
    }

    /// The actor started: the shell has attached its watchers
    /// ([`executor::attach`]); tell the subscribers and fill the pool.
    pub(crate) fn started(&mut self, c: &mut Common) {
        info!(c.log, "daemon started"; "mode" => c.config.mode().describe(),
            "spawner" => self.spawner_pid().map(Pid::as_raw));
        match c.config.mode() {
            Mode::Daemon | Mode::ForkPerRequest { .. } => {
                c.broadcast(DaemonSignal::Parent);
                if matches!(c.config.mode(), Mode::ForkPerRequest { .. }) {
                    c.broadcast(DaemonSignal::Accept);
                }
                self.ready(c);
            }
            Mode::PreFork(_) => {}
        }
        self.after_change(c);
    }

    /// The one-second sweep: systemd status, the spawner's deadline,
    /// forgotten exits, a reap in case a SIGCHLD was merged, and a census
    /// (a worker that forges its slot does not wake the supervisor).
    pub(crate) fn sweep(&mut self, c: &mut Common) {
        self.notify_status(c);
        self.check_spawner(c);
        let now = self.os.now();
        self.unclaimed
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < Duration::from_secs(60));
        self.reap(c);
        self.after_change(c);
    }

    /// systemd's watchdog, every half interval: only while this loop runs
    /// and the pool is not degraded.
    pub(crate) fn watchdog(&self) {
        if self.backoff.streak() == 0
            && !self.is_stopping()
            && let Some(sd) = &self.systemd
        {
            sd.send("WATCHDOG=1");
        }
    }

    pub(crate) fn on_signal(&mut self, c: &mut Common, sig: OsSignal) {
        match sig {
            OsSignal::Term | OsSignal::Int | OsSignal::Quit => self.shutdown(c, sig.name()),
            OsSignal::Hup => self.hup(c),
            OsSignal::Usr2 if c.config.binary_upgrade() => self.upgrade(c),
            OsSignal::Usr2 => {
                let mut report = c.peek(true, Role::Supervisor, self.is_stopping());
                self.peek(&mut report);
                info!(c.log, "peek (SIGUSR2)\n{}", report);
            }
            OsSignal::Chld => self.reap(c),
            OsSignal::Usr1 => self.reload(c),
            OsSignal::Ttin => self.resize(c, 1),
            OsSignal::Ttou => self.resize(c, -1),
        }
    }

    /// HUP: reopen the log file, tell subscribers, the spawner (so that new
    /// workers start on the new file) and every ready worker. A worker
    /// still starting opens the current file itself.
    fn hup(&mut self, c: &mut Common) {
        // The spawner gets the new file's descriptor (it never opens the
        // log by path); if the supervisor refused it, the spawner keeps
        // the old file too.
        let log = c.reopen_log(true);
        if let (Some(sock), Some(log)) = (self.spawner.as_ref().and_then(|s| s.sock.as_ref()), &log)
        {
            let _ = self.os.send_reopen(sock.as_raw_fd(), log);
        }
        for slot in self.registry.slots() {
            if self
                .registry
                .get(slot)
                .is_some_and(|child| child.is_ready())
            {
                self.registry.signal(slot, Signal::SIGHUP, Ask::Nothing);
            }
        }
    }

    /// SIGTTIN (+1) / SIGTTOU (-1): move both spare targets, within
    /// 1..=max_children and keeping min_spare <= max_spare.
    fn resize(&mut self, c: &mut Common, by: isize) {
        let Mode::PreFork(pool) = *c.config.mode() else {
            warn!(c.log, "resize ignored: not a pre-forked pool");
            return;
        };
        let (min, max) = self.spares.unwrap_or((pool.min_spare, pool.max_spare));
        let clamp = |v: usize| v.clamp(1, pool.max_children);
        let (min, max) = (
            clamp(min.saturating_add_signed(by)),
            clamp(max.saturating_add_signed(by)),
        );
        let (min, max) = (min.min(max), max.max(min));
        self.spares = Some((min, max));
        if let Some(board) = &c.board {
            board.set_spares(min, max);
        }
        info!(c.log, "pool resized"; "min_spare" => min, "max_spare" => max,
            "signal" => if by > 0 { "SIGTTIN" } else { "SIGTTOU" });
        self.after_change(c);
    }

    pub(crate) fn update(&mut self, c: &mut Common, update: UpdateStatus) {
        match (update, c.config.mode()) {
            (UpdateStatus::Req(payload), Mode::ForkPerRequest { .. }) => {
                if self.is_stopping() {
                    warn!(c.log, "request refused: shutting down");
                    return;
                }
                self.requests.queue.push_back(payload);
                self.after_change(c);
            }
            (update, _) => {
                let place = format!("supervisor pid {}", c.pid);
                c.out_of_place(UpdateKind::of(&update).name(), &place, None);
            }
        }
    }

    pub(crate) fn foreign_child(&mut self, c: &mut Common, pid: Pid) {
        if self.unclaimed.remove(&pid).is_some() {
            info!(c.log, "foreign child had already exited"; "child" => pid.as_raw());
            return;
        }
        if self.registry.slot_of(pid).is_some() || Some(pid) == self.spawner_pid() {
            warn!(c.log, "foreign child refused"; "child" => pid.as_raw(), "why" => "one of the daemon's own");
            return;
        }
        match c.foreign.add(pid) {
            Ok(()) => {
                if self.is_stopping() {
                    c.foreign.signal_all(Signal::SIGTERM);
                }
            }
            Err(why) => {
                warn!(c.log, "foreign child refused"; "child" => pid.as_raw(), "why" => why)
            }
        }
        self.reap(c);
    }

    /// The babysitter's decisions, carried out through the registry: an
    /// action for a slot whose registered worker is not the pid the
    /// babysitter looked at is dropped.
    pub(crate) fn babysat(&mut self, c: &mut Common, actions: Vec<Action>) {
        let Some(board) = c.board.clone() else {
            return;
        };
        for action in actions {
            let (slot, pid) = action.target();
            if self.registry.get(slot).map(|child| child.pid()) != Some(pid) {
                continue;
            }
            match action {
                Action::Signal {
                    state,
                    signal,
                    step,
                    reason,
                    ..
                } => {
                    let (what, value, limit) = reason.describe();
                    warn!(c.log, "babysitter: {}", what;
                        "worker" => pid.as_raw(), "slot" => slot, "state" => %state.letter(),
                        "value" => value, "limit" => limit, "signal" => signal.as_str(), "step" => step);
                    if step == 1 {
                        board.count(reason.counter());
                    }
                    self.registry.signal(slot, signal, Ask::Escalated(signal));
                }
                Action::Retire {
                    state, rss, limit, ..
                } => {
                    warn!(c.log, "babysitter: resident memory over the limit, retiring";
                        "worker" => pid.as_raw(), "slot" => slot, "state" => %state.letter(),
                        "value" => format!("{} KiB", rss / 1024), "limit" => format!("{} KiB", limit / 1024),
                        "signal" => "SIGTERM");
                    board.count(Counter::Memory);
                    self.registry
                        .signal(slot, Signal::SIGTERM, Ask::Retire(Retire::Memory));
                }
                Action::Free { state, why, .. } => {
                    warn!(c.log, "babysitter: freeing the slot"; "why" => why,
                        "worker" => pid.as_raw(), "slot" => slot, "state" => %state.letter());
                    board.count(Counter::Vanished);
                    if self.registry.remove(pid).is_some() {
                        board.free(slot);
                        board.count(Counter::Exited);
                    }
                }
            }
        }
        self.after_change(c);
    }

    /// The registered workers, with their pids from the registry and the
    /// rest from the scoreboard: what the babysitter looks at.
    pub(crate) fn roster(&self, c: &Common) -> Vec<SlotSnapshot> {
        let Some(board) = &c.board else {
            return Vec::new();
        };
        self.registry
            .iter()
            .map(|child| SlotSnapshot {
                pid: child.pid().as_raw(),
                ..board.snapshot(child.slot)
            })
            .collect()
    }

    /// The supervisor's part of the status report: its own limits, queue
    /// and pids (never what a worker wrote).
    pub(crate) fn status(&self, c: &Common, report: &mut StatusReport) {
        report.limits = c.limits(self.spares);
        for slot in &mut report.slots {
            slot.pid = self
                .registry
                .get(slot.slot)
                .map_or(0, |child| child.pid().as_raw());
        }
        if matches!(c.config.mode(), Mode::ForkPerRequest { .. }) {
            report.queued_requests = Some(self.requests.queue.len());
            report.paused = Some(self.requests.paused);
        }
    }

    pub(crate) fn peek(&self, report: &mut PeekReport) {
        report.spawner_pid = self.spawner_pid().map(Pid::as_raw);
        report.queued_requests = self.requests.queue.len();
        report.pending_spawns = self.registry.pending_len();
        report.known_workers = self.registry.child_count();
        let phase = match &self.phase {
            Phase::Draining { deadline, .. } | Phase::Killing { deadline, .. } => format!(
                "phase: {}, {:?} left",
                self.phase.name(),
                deadline.saturating_duration_since(self.os.now())
            ),
            phase => format!("phase: {}", phase.name()),
        };
        report.keeps_running.push(phase);
        if self.registry.child_count() > 0 {
            report
                .keeps_running
                .push(format!("{} workers running", self.registry.child_count()));
        }
        if let Some(pid) = self.spawner_pid() {
            report
                .keeps_running
                .push(format!("spawner pid {pid} running"));
        }
        if self.registry.pending_len() > 0 {
            report.keeps_running.push(format!(
                "{} spawn requests pending",
                self.registry.pending_len()
            ));
        }
    }

    /// Records `err` as the outcome of `run` (the first one wins) and tells
    /// a launching process still waiting.
    fn fail(&mut self, err: Error) {
        if let Some(mut n) = self.notifier.take() {
            n.failed(&process::error_chain(&err));
        }
        let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        outcome.get_or_insert(err);
    }

    fn has_failed(&self) -> bool {
        self.outcome.lock().map(|o| o.is_some()).unwrap_or(true)
    }
}
