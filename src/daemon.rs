//! `DaemonActor`: the daemon's registry actor, one in every process.
//!
//! In the supervisor it keeps the pool (asks the spawner for workers, reaps
//! them, keeps spares between the limits, queues fork-per-request requests at
//! `max_children`), and shuts everything down. In a worker it tracks that
//! worker's state in the scoreboard and tells the application when to accept
//! and when to go. In both it turns OS signals into [`DaemonSignal`]s.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use slog::{Logger, debug, error, info, warn};

use crate::config::{Config, Mode};
use crate::error::Error;
use crate::messages::{
    DaemonSignal, ForeignChild, OsSignal, Peek, Shutdown, Status, Subscribe, Unsubscribe,
    UpdateStatus,
};
use crate::payload::Payload;
use crate::process::{self, ReadyNotifier, SpawnReply, SpawnerLink, Wake};
use crate::scoreboard::{self, Counter, Scoreboard, SlotId};
use crate::state::{SlotState, Step, UpdateKind, worker_step};
use crate::status::{PeekReport, PoolLimits, Role, StatusReport, SubscriberInfo};

/// The daemon's actor: `DaemonActor::from_registry()` in any process of the
/// daemon (supervisor or worker) reaches the one that [`Daemon::run`]
/// installed.
///
/// It handles [`UpdateStatus`], [`Subscribe`], [`Unsubscribe`], [`Status`],
/// [`Peek`], [`ForeignChild`] and [`Shutdown`], and sends [`DaemonSignal`]s to
/// its subscribers.
///
/// In the supervisor it reaps **every** child process (it is a child
/// subreaper and calls `waitpid(-1)`): a process the application starts
/// there (with `std::process::Command`, say) must be reported with
/// [`ForeignChild`]; its exit is then logged, and it gets TERM at shutdown.
/// Do not wait on it yourself: the daemon may have reaped it first (ECHILD).
/// In a worker only registered foreign children are reaped.
///
/// Outside a daemon (`from_registry()` in a program that never called `run`)
/// it answers `Status` and `Peek` for a plain process and logs every update as
/// out of place.
///
/// [`Daemon::run`]: crate::Daemon::run
#[derive(Default)]
pub struct DaemonActor {
    core: Option<Box<Core>>,
}

impl std::fmt::Debug for DaemonActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("DaemonActor");
        if let Some(core) = &self.core {
            d.field("role", &core.role)
                .field("mode", &core.config.mode().describe())
                .field("subscribers", &core.subscribers.len());
        }
        d.finish()
    }
}

struct Core {
    config: Arc<Config>,
    log: Logger,
    role: Role,
    pid: u32,
    supervisor_pid: u32,
    board: Option<Scoreboard>,
    subscribers: Vec<Recipient<DaemonSignal>>,
    life: Lifecycle,
    shutting_down: bool,
    foreign: HashSet<i32>,
    kind: Kind,
}

#[derive(Default)]
struct Lifecycle {
    started: bool,
    parent: bool,
    child: Option<Option<Payload>>,
    accepting: Option<bool>,
}

enum Kind {
    Supervisor(Box<Sup>),
    Worker(Wrk),
}

struct Sup {
    spawner: Option<Arc<OwnedFd>>,
    spawner_task: Option<actix_rt::task::JoinHandle<()>>,
    spawner_pid: Option<i32>,
    wake: Option<Arc<Wake>>,
    workers: HashMap<i32, SlotId>,
    /// Slots whose worker was asked of the spawner and not yet reported.
    pending: HashSet<SlotId>,
    to_resend: VecDeque<SlotId>,
    retry_scheduled: bool,
    retry_delay: Duration,
    queue: VecDeque<Payload>,
    /// Fork per request: the supervisor's end of the dispatch socket.
    dispatch: Option<Arc<OwnedFd>>,
    /// Requests handed to the dispatch socket since start (workers count
    /// those they took in the scoreboard).
    dispatched: u64,
    paused: bool,
    unclaimed: HashMap<i32, (WaitStatus, Instant)>,
    retiring: HashSet<i32>,
    notifier: Option<ReadyNotifier>,
    outcome: Arc<Mutex<Option<Error>>>,
    spawned_at: HashMap<i32, Instant>,
    crash: CrashState,
    pacer: Pacer,
    wake_at: Option<Instant>,
    acked: bool,
    /// The pool's spare targets now (TTIN/TTOU move them).
    spares: Option<(usize, usize)>,
    /// Workers of before a graceful reload, still to be replaced.
    reloading: Option<HashSet<i32>>,
    systemd: Option<crate::systemd::Notify>,
    last_summary: String,
    /// A binary upgrade under way: the new process's pid.
    upgrading: Option<i32>,
}

/// Young deaths: backoff and give-up.
#[derive(Default)]
struct CrashState {
    streak: u32,
    last_at: Option<Instant>,
    recent: VecDeque<Instant>,
    hold_until: Option<Instant>,
}

/// Spawn pacing: at most `rate` forks per 100 ms; the rate starts at
/// `PACE_START`, doubles every window in which the pool was still short, up
/// to the configured cap, and halves back in windows that used less than
/// half of it (and in every window without a fork). A steady demand keeps
/// its rate: halving after every window that merely did not run out made
/// a pool recycling 100 workers per 100 ms alternate between 128 and 64,
/// and wait for the next window every other one.
struct Pacer {
    window_start: Instant,
    used: usize,
    rate: usize,
    short: bool,
}

const PACE_WINDOW: Duration = Duration::from_millis(100);
const PACE_START: usize = 8;
const CRASH_BACKOFF_MIN: Duration = Duration::from_millis(100);
const YOUNG: Duration = Duration::from_secs(1);

impl Pacer {
    fn new() -> Pacer {
        Pacer {
            window_start: Instant::now(),
            used: 0,
            rate: PACE_START,
            short: false,
        }
    }

    /// Whether one more fork may happen now; if not, when to try again.
    fn allow(&mut self, now: Instant, cap: usize) -> Result<(), Instant> {
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= PACE_WINDOW {
            // The window just over: double if a fork had to wait, halve if
            // it used less than half the rate. Then halve once for every
            // later window, in which no fork was asked for.
            let windows = (elapsed.as_nanos() / PACE_WINDOW.as_nanos()).min(16) as u32;
            if self.short {
                self.rate = (self.rate * 2).min(cap);
            } else if self.used * 2 < self.rate {
                self.rate /= 2;
            }
            self.rate = (self.rate >> (windows - 1)).max(PACE_START).min(cap);
            self.window_start = now;
            self.used = 0;
            self.short = false;
        }
        if self.used < self.rate.min(cap) {
            self.used += 1;
            Ok(())
        } else {
            self.short = true;
            Err(self.window_start + PACE_WINDOW)
        }
    }
}

struct Wrk {
    slot: SlotId,
    wake: Arc<Wake>,
    acked: bool,
    /// Pre-fork: retire after this many requests (`requests` plus this
    /// worker's jitter).
    limit: Option<u64>,
    /// Fork per request: the dispatch socket, and the task waiting on it
    /// for this worker's request.
    dispatch: Option<Arc<OwnedFd>>,
    claim_task: Option<actix_rt::task::JoinHandle<()>>,
}

/// This worker's `requests` limit, its jitter drawn once per process.
static WORKER_LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();

/// The number of requests after which this pre-forked worker retires:
/// `requests` plus a number drawn once per worker from
/// `0..=requests_jitter`; `None` when unlimited (or not in a pool).
pub(crate) fn worker_request_limit(config: &Config) -> Option<u64> {
    *WORKER_LIMIT.get_or_init(|| draw_limit(config))
}

/// `requests` plus a fresh draw of its jitter.
fn draw_limit(config: &Config) -> Option<u64> {
    match config.mode() {
        Mode::PreFork(p) => p
            .requests
            .map(|n| n.get().saturating_add(draw(p.requests_jitter))),
        _ => None,
    }
}

/// A number in `0..=max`, different in every process.
fn draw(max: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    if max == 0 {
        return 0;
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish() % max.saturating_add(1)
}

/// What `run` hands the supervisor's actor.
pub(crate) struct SupervisorSetup {
    pub(crate) config: Arc<Config>,
    pub(crate) log: Logger,
    pub(crate) board: Option<Scoreboard>,
    pub(crate) wake: Option<Arc<Wake>>,
    pub(crate) spawner: Option<SpawnerLink>,
    pub(crate) dispatch: Option<OwnedFd>,
    pub(crate) notifier: Option<ReadyNotifier>,
    pub(crate) outcome: Arc<Mutex<Option<Error>>>,
}

/// What a worker's bootstrap hands the worker's actor.
pub(crate) struct WorkerSetup {
    pub(crate) config: Arc<Config>,
    pub(crate) log: Logger,
    pub(crate) board: Scoreboard,
    pub(crate) wake: Arc<Wake>,
    pub(crate) slot: SlotId,
    pub(crate) supervisor_pid: u32,
    /// Fork per request: the workers' end of the dispatch socket.
    pub(crate) dispatch: Option<Arc<OwnedFd>>,
}

/// A fork-per-request worker took its request from the dispatch socket
/// (`None`: the supervisor is gone).
#[derive(Message)]
#[rtype(result = "()")]
struct Claimed(Option<Payload>);

#[derive(Message)]
#[rtype(result = "()")]
struct Woken;

#[derive(Message)]
#[rtype(result = "()")]
struct FromSpawner(Option<SpawnReply>);

/// Fork per request: a request a worker took but could not serve (it was
/// told to shut down meanwhile), handed back to the supervisor.
#[derive(Message)]
#[rtype(result = "()")]
struct Returned(Payload);

#[derive(Message)]
#[rtype(result = "()")]
struct ShutdownAcked;

/// The verdict of a binary upgrade's new supervisor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct UpgradeVerdict(Result<(), String>);

/// From the babysitter: free a slot as if its worker had exited (`free`),
/// or note that the worker is being retired for memory.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct BabysitFree {
    pub(crate) pid: i32,
    pub(crate) slot: SlotId,
    pub(crate) free: bool,
}

impl DaemonActor {
    pub(crate) fn supervisor(setup: SupervisorSetup) -> DaemonActor {
        let pid = std::process::id();
        DaemonActor {
            core: Some(Box::new(Core {
                config: setup.config,
                log: setup.log,
                role: Role::Supervisor,
                pid,
                supervisor_pid: pid,
                board: setup.board,
                subscribers: Vec::new(),
                life: Lifecycle::default(),
                shutting_down: false,
                foreign: HashSet::new(),
                kind: Kind::Supervisor(Box::new(Sup {
                    spawner_pid: setup.spawner.as_ref().map(|s| s.pid),
                    spawner: setup.spawner.map(|s| Arc::new(s.sock)),
                    spawner_task: None,
                    wake: setup.wake,
                    workers: HashMap::new(),
                    pending: HashSet::new(),
                    to_resend: VecDeque::new(),
                    retry_scheduled: false,
                    retry_delay: RETRY_MIN,
                    queue: VecDeque::new(),
                    dispatch: setup.dispatch.map(Arc::new),
                    dispatched: 0,
                    paused: false,
                    unclaimed: HashMap::new(),
                    retiring: HashSet::new(),
                    notifier: setup.notifier,
                    outcome: setup.outcome,
                    spawned_at: HashMap::new(),
                    crash: CrashState::default(),
                    pacer: Pacer::new(),
                    wake_at: None,
                    acked: false,
                    spares: None,
                    reloading: None,
                    systemd: crate::systemd::Notify::from_env(),
                    last_summary: String::new(),
                    upgrading: None,
                })),
            })),
        }
    }

    pub(crate) fn worker(setup: WorkerSetup) -> DaemonActor {
        // Drawn here, once per worker process; published for the
        // application (`Process::requests_limit`, the web Reporter).
        let limit = draw_limit(&setup.config);
        let _ = WORKER_LIMIT.set(limit);
        // A pre-forked worker is a child at once; a fork-per-request worker
        // once it has taken its request.
        let prefork = matches!(setup.config.mode(), Mode::PreFork(_));
        let life = Lifecycle {
            child: prefork.then_some(None),
            ..Lifecycle::default()
        };
        DaemonActor {
            core: Some(Box::new(Core {
                config: setup.config,
                log: setup.log,
                role: Role::Worker,
                pid: std::process::id(),
                supervisor_pid: setup.supervisor_pid,
                board: Some(setup.board),
                subscribers: Vec::new(),
                life,
                shutting_down: false,
                foreign: HashSet::new(),
                kind: Kind::Worker(Wrk {
                    slot: setup.slot,
                    wake: setup.wake,
                    acked: false,
                    limit,
                    dispatch: setup.dispatch,
                    claim_task: None,
                }),
            })),
        }
    }
}

const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);
const SWEEP: Duration = Duration::from_secs(1);
const KILL_GRACE: Duration = Duration::from_secs(2);

impl Actor for DaemonActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(core) = self.core.as_deref_mut() else {
            return;
        };
        let supervisor = matches!(core.kind, Kind::Supervisor(_));
        crate::signals::listen(ctx.address(), &core.log, supervisor);
        core.life.started = true;
        core.broadcast(DaemonSignal::Start);
        match &core.kind {
            Kind::Supervisor(_) => core.supervisor_started(ctx),
            Kind::Worker(_) => core.worker_started(ctx),
        }
    }
}

impl actix::Supervised for DaemonActor {}
impl SystemService for DaemonActor {}

impl Core {
    // -- common ------------------------------------------------------------

    fn place(&self) -> String {
        match &self.kind {
            Kind::Supervisor(_) => format!("supervisor pid {}", self.pid),
            Kind::Worker(w) => format!("worker pid {} slot {}", self.pid, w.slot),
        }
    }

    fn broadcast(&mut self, signal: DaemonSignal) {
        self.subscribers.retain(|s| s.connected());
        match &signal {
            DaemonSignal::Accept => self.life.accepting = Some(true),
            DaemonSignal::Pause => self.life.accepting = Some(false),
            DaemonSignal::Parent => self.life.parent = true,
            _ => {}
        }
        for s in &self.subscribers {
            s.do_send(signal.clone());
        }
    }

    fn replay(&self, to: &Recipient<DaemonSignal>) {
        if self.life.started {
            to.do_send(DaemonSignal::Start);
        }
        if self.life.parent {
            to.do_send(DaemonSignal::Parent);
        }
        if let Some(payload) = &self.life.child {
            to.do_send(DaemonSignal::Child(payload.clone()));
        }
        match self.life.accepting {
            Some(true) => to.do_send(DaemonSignal::Accept),
            Some(false) => to.do_send(DaemonSignal::Pause),
            None => {}
        }
        if self.shutting_down {
            to.do_send(DaemonSignal::Shutdown);
        }
    }

    fn state(&self) -> Option<SlotState> {
        match (&self.kind, &self.board) {
            (Kind::Worker(w), Some(board)) => Some(board.state(w.slot)),
            _ => None,
        }
    }

    fn set_state(&mut self, state: SlotState) {
        if let (Kind::Worker(w), Some(board)) = (&self.kind, &self.board) {
            let old = board.state(w.slot);
            if old == state {
                return;
            }
            board.set_state(w.slot, state);
            debug!(self.log, "state"; "state" => %state.letter());
            // The supervisor counts spares (pre-fork) and workers waiting
            // for a request (fork per request), and exits: wake it only
            // when one of those changes (not for r <-> l).
            if old.is_idle() != state.is_idle() || state == SlotState::Exit {
                w.wake.wake();
            }
        }
        if state.is_busy() {
            // A subscriber that joins mid-request is not told to accept.
            self.life.accepting = None;
        }
    }

    fn out_of_place(&self, what: &str) {
        warn!(self.log, "status update ignored: it makes no sense here";
            "update" => what, "from" => self.place(),
            "state" => self.state().map(|s| s.letter().to_string()).unwrap_or_else(|| "-".into()),
            "mode" => self.config.mode().describe());
    }

    fn status(&self) -> StatusReport {
        let mode = self.config.mode();
        let limits = match mode {
            Mode::Daemon => None,
            Mode::ForkPerRequest { max_children } => Some(PoolLimits {
                max_children: *max_children,
                min_spare: None,
                max_spare: None,
                requests: None,
                requests_jitter: 0,
            }),
            Mode::PreFork(p) => Some(PoolLimits {
                max_children: p.max_children,
                min_spare: Some(
                    self.board
                        .as_ref()
                        .and_then(Scoreboard::spares)
                        .map_or(p.min_spare, |s| s.0),
                ),
                max_spare: Some(
                    self.board
                        .as_ref()
                        .and_then(Scoreboard::spares)
                        .map_or(p.max_spare, |s| s.1),
                ),
                requests: p.requests.map(|n| n.get()),
                requests_jitter: p.requests_jitter,
            }),
        };
        let slot = match &self.kind {
            Kind::Supervisor(_) => None,
            Kind::Worker(w) => Some(w.slot.0),
        };
        let (queued, paused) = match (&self.board, mode) {
            (Some(board), Mode::ForkPerRequest { .. }) => {
                let (queued, paused) = board.queue();
                (Some(queued), Some(paused))
            }
            _ => (None, None),
        };
        StatusReport {
            alias: self.config.alias().to_owned(),
            mode: mode.describe(),
            role: self.role,
            pid: self.pid,
            supervisor_pid: self.supervisor_pid,
            slot,
            limits,
            slots: self
                .board
                .as_ref()
                .map(|b| b.snapshots())
                .unwrap_or_default(),
            counters: self
                .board
                .as_ref()
                .map(|b| b.counters())
                .unwrap_or_default(),
            queued_requests: queued,
            paused,
            shutting_down: self.shutting_down,
        }
    }

    fn peek(&self, verbose: bool) -> PeekReport {
        let me = procfs::process::Process::myself().ok();
        let open_fds = me.as_ref().and_then(|p| p.fd_count().ok()).unwrap_or(0);
        let threads = me
            .as_ref()
            .and_then(|p| p.tasks().ok())
            .map(|t| t.count())
            .unwrap_or(0);
        let fds = if verbose {
            me.as_ref()
                .and_then(|p| p.fd().ok())
                .map(|it| {
                    it.flatten()
                        .map(|fd| format!("{}: {:?}", fd.fd, fd.target))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let (runtime_tasks, runtime_queue) = tokio::runtime::Handle::try_current()
            .map(|h| {
                let m = h.metrics();
                (m.num_alive_tasks(), m.global_queue_depth())
            })
            .unwrap_or((0, 0));
        let subscribers: Vec<SubscriberInfo> = self
            .subscribers
            .iter()
            .enumerate()
            .map(|(index, s)| SubscriberInfo {
                index,
                alive: s.connected(),
            })
            .collect();
        let mut keeps_running = vec![if self.shutting_down {
            "shutdown has begun and waits for what is listed below".to_owned()
        } else {
            "the System runs until Shutdown, TERM or INT".to_owned()
        }];
        let alive = subscribers.iter().filter(|s| s.alive).count();
        if alive > 0 {
            keeps_running.push(format!("{alive} subscribers alive"));
        }
        let mut report = PeekReport {
            verbose,
            role: self.role,
            mode: self.config.mode().describe(),
            pid: self.pid,
            parent_pid: nix::unistd::getppid().as_raw() as u32,
            supervisor_pid: self.supervisor_pid,
            spawner_pid: None,
            subscribers,
            queued_requests: 0,
            pending_spawns: 0,
            known_workers: 0,
            foreign_children: self.foreign.iter().copied().collect(),
            slots: self
                .board
                .as_ref()
                .map(Scoreboard::slots_line)
                .unwrap_or_default(),
            runtime_tasks,
            runtime_queue,
            open_fds,
            threads,
            forks_since_runtime: process::forks_after_runtime(),
            shutting_down: self.shutting_down,
            keeps_running,
            fds,
        };
        match &self.kind {
            Kind::Supervisor(s) => {
                report.spawner_pid = s.spawner_pid;
                report.queued_requests = s.queue.len();
                report.pending_spawns = s.pending.len();
                report.known_workers = s.workers.len();
                if !s.workers.is_empty() {
                    report
                        .keeps_running
                        .push(format!("{} workers running", s.workers.len()));
                }
                if let Some(pid) = s.spawner_pid {
                    report
                        .keeps_running
                        .push(format!("spawner pid {pid} running"));
                }
                if !s.pending.is_empty() {
                    report
                        .keeps_running
                        .push(format!("{} spawn requests pending", s.pending.len()));
                }
            }
            Kind::Worker(_) => {
                if self.state().is_some_and(SlotState::is_busy) {
                    report.keeps_running.push("handling a request".to_owned());
                }
            }
        }
        if !self.foreign.is_empty() {
            report
                .keeps_running
                .push(format!("{} foreign children", self.foreign.len()));
        }
        report
    }

    fn on_signal(&mut self, sig: OsSignal, ctx: &mut Context<DaemonActor>) {
        match sig {
            OsSignal::Term | OsSignal::Int => {
                let name = if sig == OsSignal::Term {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                self.shutdown(ctx, name);
            }
            OsSignal::Hup => {
                if let Some(path) = self.config.logfile() {
                    match process::reopen_logfile(path) {
                        Ok(()) => info!(self.log, "log file reopened"; "signal" => "SIGHUP"),
                        Err(err) => error!(self.log, "cannot reopen log file"; "error" => %err),
                    }
                }
                self.broadcast(DaemonSignal::Hup);
                if let Kind::Supervisor(s) = &self.kind {
                    if let Some(sock) = &s.spawner {
                        let _ = process::request_reopen(sock.as_raw_fd());
                    }
                    for &pid in s.workers.keys() {
                        process::send_signal(pid, Signal::SIGHUP);
                    }
                }
            }
            OsSignal::Usr2 if self.config.binary_upgrade() && self.role == Role::Supervisor => {
                self.upgrade(ctx)
            }
            OsSignal::Usr2 => {
                let report = self.peek(true);
                info!(self.log, "peek (SIGUSR2)\n{}", report);
            }
            OsSignal::Chld => self.reap(ctx),
            OsSignal::Usr1 => self.reload(ctx),
            OsSignal::Ttin => self.resize(1),
            OsSignal::Ttou => self.resize(-1),
        }
    }

    fn shutdown(&mut self, ctx: &mut Context<DaemonActor>, reason: &str) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        // A fork-per-request worker ends after every request: not news.
        if matches!(self.kind, Kind::Worker(_))
            && matches!(self.config.mode(), Mode::ForkPerRequest { .. })
        {
            debug!(self.log, "shutting down"; "reason" => reason);
        } else {
            info!(self.log, "shutting down"; "reason" => reason);
        }
        match self.kind {
            Kind::Supervisor(_) => self.supervisor_shutdown(ctx, reason),
            Kind::Worker(ref mut w) => {
                // A worker still waiting for its request takes none now.
                if let Some(task) = w.claim_task.take() {
                    task.abort();
                }
                if !self.state().is_some_and(SlotState::is_busy) {
                    self.set_state(SlotState::Exit);
                }
                self.broadcast_and_wait_shutdown(ctx);
            }
        }
    }

    /// Sends `Shutdown` to every subscriber and tells the actor once all have
    /// handled it (or the shutdown timeout passed), so that an acceptor has
    /// stopped accepting before the process decides to stop.
    fn broadcast_and_wait_shutdown(&mut self, ctx: &mut Context<DaemonActor>) {
        self.subscribers.retain(|s| s.connected());
        let sends: Vec<_> = self
            .subscribers
            .iter()
            .map(|s| s.send(DaemonSignal::Shutdown))
            .collect();
        let addr = ctx.address();
        let timeout = self.config.shutdown_timeout();
        actix_rt::spawn(async move {
            let all = async {
                for send in sends {
                    let _ = send.await;
                }
            };
            let _ = actix_rt::time::timeout(timeout, all).await;
            addr.do_send(ShutdownAcked);
        });
    }

    fn stop_system(&self, code: i32) {
        debug!(self.log, "stopping"; "code" => code);
        System::current().stop_with_code(code);
    }

    fn term_foreign(&self, sig: Signal) {
        for &pid in &self.foreign {
            process::send_signal(pid, sig);
        }
    }

    // -- worker ------------------------------------------------------------

    fn worker_started(&mut self, ctx: &mut Context<DaemonActor>) {
        if self.config.verbose() {
            debug!(self.log, "worker running");
        }
        if !matches!(self.config.mode(), Mode::ForkPerRequest { .. }) {
            self.broadcast(DaemonSignal::Child(None));
            return;
        }
        // Fork per request: ready (`.`), waiting for a request on the
        // dispatch socket; `Child(payload)` once one is taken.
        self.set_state(SlotState::FirstWait);
        let addr = ctx.address();
        let Kind::Worker(w) = &mut self.kind else {
            return;
        };
        let Some(sock) = w.dispatch.clone() else {
            return;
        };
        let board = self.board.clone();
        w.claim_task = Some(actix_rt::spawn(async move {
            let Ok(fd) = process::watch(sock) else {
                addr.do_send(Claimed(None));
                return;
            };
            loop {
                let Ok(mut guard) = fd.readable().await else {
                    addr.do_send(Claimed(None));
                    return;
                };
                match process::dispatch_recv(fd.get_ref().as_raw_fd()) {
                    Ok(payload) => {
                        // Counted at once: the supervisor's count of
                        // requests in the socket must not wait for the
                        // actor.
                        if let (Some(_), Some(board)) = (&payload, &board) {
                            board.count(Counter::Claimed);
                        }
                        addr.do_send(Claimed(payload));
                        return;
                    }
                    // Another worker took it, or a spurious wake-up.
                    Err(Errno::EAGAIN) => guard.clear_ready(),
                    Err(Errno::EINTR) => {}
                    Err(_) => {
                        addr.do_send(Claimed(None));
                        return;
                    }
                }
            }
        }));
    }

    /// Fork per request: this worker took its request.
    fn claimed(&mut self, payload: Option<Payload>, ctx: &mut Context<DaemonActor>) {
        if let Kind::Worker(w) = &mut self.kind {
            w.claim_task = None;
        }
        let Some(payload) = payload else {
            if !self.shutting_down {
                warn!(
                    self.log,
                    "the request socket closed: the supervisor is gone"
                );
                self.shutdown(ctx, "supervisor gone");
            }
            return;
        };
        if self.shutting_down {
            // Taken just as TERM came: give it back to the supervisor,
            // which hands it to another worker.
            let returned = match &self.kind {
                Kind::Worker(Wrk {
                    dispatch: Some(sock),
                    ..
                }) => process::dispatch_send(sock.as_raw_fd(), &payload),
                _ => Err(Errno::ENOTCONN),
            };
            match returned {
                Ok(()) => debug!(self.log, "request handed back: shutting down"),
                Err(err) => {
                    warn!(self.log, "request closed unserved: shutting down"; "error" => %err)
                }
            }
            return;
        }
        self.set_state(SlotState::Req);
        self.life.child = Some(Some(payload.clone()));
        self.broadcast(DaemonSignal::Child(Some(payload)));
    }

    fn worker_update(&mut self, update: UpdateStatus, ctx: &mut Context<DaemonActor>) {
        let Some(state) = self.state() else { return };
        let prefork = matches!(self.config.mode(), Mode::PreFork(_));
        let kind = UpdateKind::of(&update);
        if state == SlotState::Exit {
            // A worker on its way out may still finish requests it had
            // accepted (an HTTP server draining its connections): count
            // them, expect nothing else, and warn about nothing.
            if let (Kind::Worker(w), Some(board)) = (&self.kind, &self.board) {
                match &update {
                    UpdateStatus::Done => {
                        board.count_request(w.slot);
                    }
                    UpdateStatus::Served(n) => {
                        board.count_requests(w.slot, *n);
                    }
                    _ => {}
                }
            }
            return;
        }
        match worker_step(prefork, state, kind) {
            Step::To(SlotState::FirstWait) => {
                self.set_state(SlotState::FirstWait);
                self.accept_if_running();
            }
            Step::To(next) => self.set_state(next),
            Step::Finish => self.request_done(ctx),
            Step::Count => {
                if let UpdateStatus::Served(n) = update {
                    self.requests_served(n, state, ctx);
                }
            }
            Step::Stay => {}
            Step::Invalid => self.out_of_place(kind.name()),
        }
    }

    fn accept_if_running(&mut self) {
        if !self.shutting_down {
            self.broadcast(DaemonSignal::Accept);
        }
    }

    fn request_done(&mut self, ctx: &mut Context<DaemonActor>) {
        let (Kind::Worker(w), Some(board)) = (&self.kind, &self.board) else {
            return;
        };
        let served = board.count_request(w.slot);
        let limit = match self.config.mode() {
            Mode::PreFork(_) => w.limit,
            _ => Some(1),
        };
        if self.shutting_down {
            self.set_state(SlotState::Exit);
            self.maybe_stop_worker();
        } else if limit.is_some_and(|limit| served >= limit) {
            self.retire(served, ctx);
        } else {
            self.set_state(SlotState::Wait);
            self.accept_if_running();
        }
    }

    /// `Served(n)` while busy: count, stay busy; retire at the limit.
    fn requests_served(&mut self, n: u64, state: SlotState, ctx: &mut Context<DaemonActor>) {
        let (Kind::Worker(w), Some(board)) = (&self.kind, &self.board) else {
            return;
        };
        if n == 0 {
            return;
        }
        let served = board.count_requests(w.slot, n);
        if state == SlotState::Req {
            board.touch(w.slot);
        }
        if !self.shutting_down && w.limit.is_some_and(|limit| served >= limit) {
            self.retire(served, ctx);
        }
    }

    /// A pre-forked worker served its `requests` (a fork-per-request worker
    /// its one request): exit, by the shutdown of any worker.
    fn retire(&mut self, served: u64, ctx: &mut Context<DaemonActor>) {
        if let (Mode::PreFork(_), Some(board)) = (self.config.mode(), &self.board) {
            board.count(Counter::Retired);
        }
        self.set_state(SlotState::Exit);
        let reason = format!("served {served} requests");
        self.shutdown(ctx, &reason);
    }

    fn maybe_stop_worker(&mut self) {
        let busy = self.state().is_some_and(SlotState::is_busy);
        if let Kind::Worker(w) = &self.kind {
            if w.acked && !busy {
                self.set_state(SlotState::Exit);
                self.term_foreign(Signal::SIGTERM);
                self.stop_system(0);
            }
        }
    }

    // -- supervisor --------------------------------------------------------

    fn sup(&mut self) -> &mut Sup {
        match &mut self.kind {
            Kind::Supervisor(s) => s,
            Kind::Worker(_) => unreachable!("supervisor method in a worker"),
        }
    }

    fn supervisor_started(&mut self, ctx: &mut Context<DaemonActor>) {
        let addr = ctx.address();
        let s = self.sup();
        if let Some(wake) = s.wake.clone() {
            let addr = addr.clone();
            actix_rt::spawn(async move {
                let Ok(fd) = process::watch(wake) else {
                    return;
                };
                loop {
                    let Ok(mut guard) = fd.readable().await else {
                        return;
                    };
                    guard.clear_ready();
                    if fd.get_ref().0.drain() {
                        addr.do_send(Woken);
                    }
                }
            });
        }
        if let Some(sock) = s.dispatch.clone() {
            let addr = addr.clone();
            actix_rt::spawn(async move {
                let Ok(fd) = process::watch(sock) else {
                    return;
                };
                loop {
                    let Ok(mut guard) = fd.readable().await else {
                        return;
                    };
                    match process::dispatch_recv(fd.get_ref().as_raw_fd()) {
                        Ok(Some(payload)) => addr.do_send(Returned(payload)),
                        Ok(None) => return,
                        Err(Errno::EAGAIN) => guard.clear_ready(),
                        Err(Errno::EINTR) => {}
                        Err(_) => return,
                    }
                }
            });
        }
        if let Some(sock) = s.spawner.clone() {
            let addr = addr.clone();
            s.spawner_task = Some(actix_rt::spawn(async move {
                let Ok(fd) = process::watch(sock) else {
                    addr.do_send(FromSpawner(None));
                    return;
                };
                loop {
                    let Ok(mut guard) = fd.readable().await else {
                        return;
                    };
                    loop {
                        match process::read_reply(fd.get_ref().as_raw_fd()) {
                            Ok(Some(Some(reply))) => addr.do_send(FromSpawner(Some(reply))),
                            Ok(Some(None)) => {}
                            Ok(None) => {
                                addr.do_send(FromSpawner(None));
                                return;
                            }
                            Err(Errno::EAGAIN) => {
                                guard.clear_ready();
                                break;
                            }
                            Err(Errno::EINTR) => {}
                            Err(_) => {
                                addr.do_send(FromSpawner(None));
                                return;
                            }
                        }
                    }
                }
            }));
        }
        if let Some(interval) = crate::systemd::watchdog_interval()
            && self.sup().systemd.is_some()
        {
            // Only while this loop runs and the pool is not degraded.
            ctx.run_interval(interval / 2, |act, _ctx| {
                if let Some(core) = act.core.as_deref_mut() {
                    let degraded = core
                        .board
                        .as_ref()
                        .is_some_and(|b| b.counters().crash_streak > 0);
                    if !degraded && !core.shutting_down {
                        if let Some(sd) = &core.sup().systemd {
                            sd.send("WATCHDOG=1");
                        }
                    }
                }
            });
        }
        ctx.run_interval(SWEEP, |act, ctx| {
            if let Some(core) = act.core.as_deref_mut() {
                core.notify_status();
                core.reap(ctx);
                core.sup()
                    .unclaimed
                    .retain(|_, (_, at)| at.elapsed() < Duration::from_secs(60));
            }
        });
        if let (Some(limits), Some(board)) = (self.config.babysit_limits(), self.board.clone()) {
            crate::babysitter::BabysitterActor::new(limits, board, self.log.clone(), addr.clone())
                .start();
        }
        let spawner = self.sup().spawner_pid;
        info!(self.log, "daemon started"; "mode" => self.config.mode().describe(),
            "spawner" => spawner);
        match self.config.mode().clone() {
            Mode::Daemon | Mode::ForkPerRequest { .. } => {
                self.broadcast(DaemonSignal::Parent);
                if matches!(self.config.mode(), Mode::ForkPerRequest { .. }) {
                    self.broadcast(DaemonSignal::Accept);
                }
                self.ready();
                // Fork per request: the warm workers.
                self.after_change(ctx);
            }
            Mode::PreFork(_) => self.after_change(ctx),
        }
    }

    fn ready(&mut self) {
        // systemd first: a detached launcher exits once told, and the
        // service manager must know the new MAINPID before that.
        let summary = self.summary();
        let pid = self.pid;
        if let Some(sd) = &self.sup().systemd {
            sd.send(&format!("READY=1\nSTATUS={summary}\nMAINPID={pid}"));
        }
        self.sup().last_summary = summary;
        if let Some(mut n) = self.sup().notifier.take() {
            n.ready();
        }
        info!(self.log, "daemon ready");
    }

    /// One line for systemd's STATUS=.
    fn summary(&mut self) -> String {
        let mode = self.config.mode().describe();
        let Some(board) = self.board.clone() else {
            return format!("{mode}, running");
        };
        let tally = board.tally();
        let idle = tally[SlotState::FirstWait as usize] + tally[SlotState::Wait as usize];
        let busy = tally[SlotState::Req as usize] + tally[SlotState::Long as usize];
        let workers = board.len() - tally[SlotState::Empty as usize];
        let c = board.counters();
        let mut line = format!(
            "{mode}: {workers} workers ({idle} waiting, {busy} busy), {} requests",
            c.requests
        );
        if c.crash_streak > 0 {
            line.push_str(&format!(
                ", degraded ({} young deaths in a row)",
                c.crash_streak
            ));
        }
        if self.sup().reloading.is_some() {
            line.push_str(", reloading");
        }
        line
    }

    /// Sends STATUS= when the summary changed (on the sweep).
    fn notify_status(&mut self) {
        if self.sup().systemd.is_none() || !self.life.parent {
            return;
        }
        let summary = self.summary();
        let s = self.sup();
        if summary != s.last_summary {
            if let Some(sd) = &s.systemd {
                sd.send(&format!("STATUS={summary}"));
            }
            s.last_summary = summary;
        }
    }

    /// SIGUSR1: replace every worker by a fresh one. Old workers get TERM:
    /// each finishes its request and exits; they stop counting as spares at
    /// once, so the pool forks their replacements meanwhile. Connections
    /// wait in the listen queue; none is dropped.
    fn reload(&mut self, ctx: &mut Context<DaemonActor>) {
        if !matches!(self.kind, Kind::Supervisor(_)) || self.shutting_down {
            return;
        }
        if let Some(sd) = &self.sup().systemd {
            let now = scoreboard::now_ms() * 1000;
            sd.send(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
        }
        let old: HashSet<i32> = self.sup().workers.keys().copied().collect();
        info!(self.log, "graceful reload: replacing every worker"; "workers" => old.len());
        for &pid in &old {
            self.sup().retiring.insert(pid);
            process::send_signal(pid, Signal::SIGTERM);
        }
        self.sup().reloading = Some(old);
        self.after_change(ctx);
    }

    fn check_reloaded(&mut self) {
        let s = self.sup();
        let Some(old) = &mut s.reloading else {
            return;
        };
        old.retain(|pid| s.workers.contains_key(pid));
        if old.is_empty() {
            s.reloading = None;
            info!(self.log, "graceful reload complete");
            let summary = self.summary();
            if let Some(sd) = &self.sup().systemd {
                sd.send(&format!("READY=1\nSTATUS={summary}"));
            }
        }
    }

    /// SIGUSR2 with binary upgrades on: start the new binary with the
    /// listeners and wait, on a thread, for its readiness verdict.
    fn upgrade(&mut self, ctx: &mut Context<DaemonActor>) {
        if self.shutting_down || self.sup().upgrading.is_some() {
            warn!(
                self.log,
                "binary upgrade ignored: one is under way or shutting down"
            );
            return;
        }
        let pidfile = self
            .config
            .pidfile()
            .map(|p| (p.to_owned(), crate::ops::Pidfile::oldbin(p)));
        if let Some((path, old)) = &pidfile {
            let _ = std::fs::rename(path, old);
        }
        match process::spawn_upgrade() {
            Ok((child, mut verdict)) => {
                let pid = child.id() as i32;
                // The child is reaped by the supervisor's reaper (waitpid(-1)).
                drop(child);
                info!(self.log, "binary upgrade: new supervisor starting"; "new" => pid);
                self.sup().upgrading = Some(pid);
                let addr = ctx.address();
                std::thread::spawn(move || {
                    use std::io::Read;
                    let mut text = Vec::new();
                    let _ = verdict.read_to_end(&mut text);
                    let result = match text.split_first() {
                        Some((b'R', _)) => Ok(()),
                        Some((b'E', message)) => Err(String::from_utf8_lossy(message).into_owned()),
                        _ => Err("the new binary exited before it was ready".to_owned()),
                    };
                    addr.do_send(UpgradeVerdict(result));
                });
            }
            Err(err) => {
                if let Some((path, old)) = &pidfile {
                    let _ = std::fs::rename(old, path);
                }
                error!(self.log, "binary upgrade failed, still serving"; "error" => %err);
            }
        }
    }

    fn upgrade_done(&mut self, verdict: Result<(), String>, ctx: &mut Context<DaemonActor>) {
        let Some(new) = self.sup().upgrading.take() else {
            return;
        };
        match verdict {
            Ok(()) => {
                info!(self.log, "binary upgrade: the new supervisor is ready, draining"; "new" => new);
                self.shutdown(ctx, "binary upgrade");
            }
            Err(why) => {
                if let Some(path) = self.config.pidfile() {
                    let _ = std::fs::rename(crate::ops::Pidfile::oldbin(path), path);
                }
                error!(self.log, "binary upgrade failed, still serving"; "new" => new, "error" => why);
            }
        }
    }

    /// SIGTTIN (+1) / SIGTTOU (-1): move both spare targets, within
    /// 1..=max_children and keeping min_spare <= max_spare.
    fn resize(&mut self, by: isize) {
        let Mode::PreFork(pool) = *self.config.mode() else {
            warn!(self.log, "resize ignored: not a pre-forked pool");
            return;
        };
        let (min, max) = self
            .sup()
            .spares
            .unwrap_or((pool.min_spare, pool.max_spare));
        let clamp = |v: usize| v.clamp(1, pool.max_children);
        let (min, max) = (
            clamp(min.saturating_add_signed(by)),
            clamp(max.saturating_add_signed(by)),
        );
        let (min, max) = (min.min(max), max.max(min));
        self.sup().spares = Some((min, max));
        if let Some(board) = &self.board {
            board.set_spares(min, max);
        }
        info!(self.log, "pool resized"; "min_spare" => min, "max_spare" => max,
            "signal" => if by > 0 { "SIGTTIN" } else { "SIGTTOU" });
        self.manage_pool();
    }

    /// Whether a fork may happen now (crash backoff, and pacing for pool
    /// refills); if not, arranges to look again when it may. Fork-per-request
    /// forks are not paced: `max_children` bounds them, and each answers a
    /// waiting client.
    fn may_spawn(&mut self, paced: bool) -> bool {
        let now = Instant::now();
        let cap = self.config.crash_policy().max_spawn_rate;
        let s = self.sup();
        let later = match s.crash.hold_until {
            Some(until) if now < until => Some(until),
            _ if paced => s.pacer.allow(now, cap).err(),
            _ => None,
        };
        match later {
            None => true,
            Some(at) => {
                if s.wake_at.is_none_or(|w| w > at || w < now) {
                    s.wake_at = Some(at);
                }
                false
            }
        }
    }

    /// Allocates a slot and asks the spawner for a worker. `false` when no
    /// slot is free or no fork may happen now. `paced`: within the spawn
    /// rate (pool refills); requests waiting are not paced.
    fn spawn(&mut self, paced: bool) -> bool {
        let Some(board) = self.board.clone() else {
            return false;
        };
        if !self.may_spawn(paced) {
            return false;
        }
        let Some(slot) = board.allocate() else {
            return false;
        };
        self.sup().pending.insert(slot);
        self.send_spawn(slot);
        true
    }

    fn send_spawn(&mut self, slot: SlotId) {
        let s = self.sup();
        let Some(sock) = s.spawner.clone() else {
            return;
        };
        match process::request_spawn(sock.as_raw_fd(), slot) {
            Ok(()) => {}
            Err(Errno::EAGAIN) | Err(Errno::ENOBUFS) => self.retry_later(slot),
            Err(err) => {
                error!(self.log, "cannot reach the spawner"; "slot" => slot, "error" => %err);
                self.retry_later(slot);
            }
        }
    }

    fn retry_later(&mut self, slot: SlotId) {
        let s = self.sup();
        s.to_resend.push_back(slot);
        s.retry_scheduled = true;
    }

    fn schedule_retry(&mut self, ctx: &mut Context<DaemonActor>) {
        let s = self.sup();
        if !s.retry_scheduled || s.to_resend.is_empty() {
            return;
        }
        s.retry_scheduled = false;
        let delay = s.retry_delay;
        s.retry_delay = (s.retry_delay * 2).min(RETRY_MAX);
        ctx.run_later(delay, |act, _ctx| {
            let Some(core) = act.core.as_deref_mut() else {
                return;
            };
            let slots: Vec<SlotId> = core.sup().to_resend.drain(..).collect();
            for slot in slots {
                if core.shutting_down {
                    core.abandon_spawn(slot);
                } else {
                    core.send_spawn(slot);
                }
            }
            // A retry that fails again sets retry_scheduled; the next event
            // (sweep, wake-up) schedules it.
        });
    }

    fn abandon_spawn(&mut self, slot: SlotId) {
        if self.sup().pending.remove(&slot)
            && let Some(board) = &self.board
        {
            board.free(slot);
        }
    }

    fn on_spawner(&mut self, reply: Option<SpawnReply>, ctx: &mut Context<DaemonActor>) {
        match reply {
            Some(SpawnReply::Spawned { slot, pid }) => {
                let board = self.board.clone();
                let s = self.sup();
                s.pending.remove(&slot);
                s.retry_delay = RETRY_MIN;
                if let Some(board) = &board {
                    board.set_pid(slot, pid);
                }
                debug!(self.log, "worker forked"; "slot" => slot, "worker" => pid);
                let s = self.sup();
                s.spawned_at.insert(pid, Instant::now());
                if let Some((status, _)) = s.unclaimed.remove(&pid) {
                    self.worker_exited(pid, slot, status);
                } else {
                    s.workers.insert(pid, slot);
                    if self.shutting_down {
                        process::send_signal(pid, Signal::SIGTERM);
                    }
                }
            }
            Some(SpawnReply::Failed { slot, errno }) => {
                if let Some(board) = &self.board {
                    board.count(Counter::ForkFailed);
                }
                warn!(self.log, "fork failed, will retry"; "slot" => slot, "error" => %errno);
                if self.shutting_down {
                    self.abandon_spawn(slot);
                } else {
                    self.retry_later(slot);
                }
            }
            None => {
                let s = self.sup();
                s.spawner = None;
                s.spawner_task = None;
                // The spawner's exit status says more than its socket's EOF.
                self.reap(ctx);
                if !self.shutting_down {
                    error!(
                        self.log,
                        "the spawner died: no worker can be forked, shutting down"
                    );
                    let pid = self.sup().spawner_pid.unwrap_or(0);
                    self.fail(Error::SpawnerDied {
                        pid,
                        status: "closed its socket".into(),
                    });
                    self.shutdown(ctx, "spawner gone");
                }
            }
        }
        self.after_change(ctx);
    }

    fn fail(&mut self, err: Error) {
        let s = self.sup();
        if let Some(mut n) = s.notifier.take() {
            n.failed(&process::error_chain(&err));
        }
        let mut outcome = s.outcome.lock().unwrap_or_else(|p| p.into_inner());
        outcome.get_or_insert(err);
    }

    fn reap(&mut self, ctx: &mut Context<DaemonActor>) {
        if !matches!(self.kind, Kind::Supervisor(_)) {
            // Workers reap only the children they were told about.
            let done: Vec<i32> = self
                .foreign
                .iter()
                .copied()
                .filter(|&pid| process::reap_pid(pid).is_some())
                .collect();
            for pid in done {
                self.foreign.remove(&pid);
            }
            return;
        }
        for (pid, status) in process::reap_any() {
            let s = self.sup();
            if Some(pid) == s.spawner_pid {
                s.spawner_pid = None;
                s.spawner = None;
                if let Some(task) = s.spawner_task.take() {
                    task.abort();
                }
                if self.shutting_down {
                    debug!(self.log, "spawner exited"; "status" => process::describe_status(&status));
                } else {
                    let status = process::describe_status(&status);
                    error!(self.log, "the spawner died: no worker can be forked, shutting down";
                        "spawner" => pid, "status" => &status);
                    self.fail(Error::SpawnerDied { pid, status });
                    self.shutdown(ctx, "spawner died");
                }
            } else if let Some(slot) = s.workers.remove(&pid) {
                self.worker_exited(pid, slot, status);
            } else if self.foreign.contains(&pid) {
                self.foreign.remove(&pid);
                info!(self.log, "foreign child exited"; "child" => pid,
                    "status" => process::describe_status(&status));
            } else {
                self.sup().unclaimed.insert(pid, (status, Instant::now()));
            }
        }
        self.after_change(ctx);
    }

    fn worker_exited(&mut self, pid: i32, slot: SlotId, status: WaitStatus) {
        let retiring = self.sup().retiring.remove(&pid);
        let born = self.sup().spawned_at.remove(&pid);
        if let Some(board) = &self.board {
            let state = board.state(slot);
            let before_ready = matches!(state, SlotState::Forking | SlotState::Starting);
            let young = born.is_some_and(|b| b.elapsed() < YOUNG);
            if !self.shutting_down
                && !retiring
                && !process::is_clean_exit(&status)
                && (before_ready || young)
            {
                self.crashed(&status);
            }
        }
        if let Some(board) = &self.board {
            let state = board.state(slot);
            board.free(slot);
            board.count(Counter::Exited);
            let clean = process::is_clean_exit(&status);
            if clean || retiring || self.shutting_down {
                debug!(self.log, "worker exited"; "worker" => pid, "slot" => slot,
                    "status" => process::describe_status(&status));
            } else {
                warn!(self.log, "worker died"; "worker" => pid, "slot" => slot,
                    "state" => %state.letter(), "status" => process::describe_status(&status));
            }
        }
    }

    /// A worker died young: back off the next spawns, maybe give up.
    fn crashed(&mut self, status: &WaitStatus) {
        let now = Instant::now();
        let policy = self.config.crash_policy();
        let code = match status {
            WaitStatus::Exited(_, code) => *code,
            WaitStatus::Signaled(_, sig, _) => -(*sig as i32),
            _ => -1,
        };
        let c = &mut self.sup().crash;
        c.streak += 1;
        c.last_at = Some(now);
        let backoff = CRASH_BACKOFF_MIN
            .saturating_mul(1u32 << (c.streak - 1).min(16))
            .min(policy.max_backoff);
        c.hold_until = Some(now + backoff);
        c.recent.push_back(now);
        let streak = c.streak;
        if let Some(board) = &self.board {
            board.record_crash(code, streak);
        }
        warn!(self.log, "a worker died young: pool degraded, backing off";
            "status" => process::describe_status(status), "in_a_row" => streak,
            "next_spawn_in" => format!("{backoff:?}"));
        if let Some((max, window)) = policy.max_restarts {
            let c = &mut self.sup().crash;
            while c
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > window)
            {
                c.recent.pop_front();
            }
            let crashes = c.recent.len();
            if crashes > max as usize {
                let err = Error::CrashLoop {
                    crashes,
                    max,
                    window,
                    last: process::describe_status(status),
                };
                error!(self.log, "giving up: workers keep dying"; "error" => %err);
                self.fail(err);
            }
        }
    }

    /// The pool is healthy again once a worker spawned after the last crash
    /// reached a waiting or busy state.
    fn check_recovered(&mut self) {
        let Some(board) = self.board.clone() else {
            return;
        };
        let s = self.sup();
        let Some(last) = s.crash.last_at.filter(|_| s.crash.streak > 0) else {
            return;
        };
        let recovered = board.snapshots().iter().any(|slot| {
            (slot.state.is_idle() || slot.state.is_busy())
                && s.spawned_at.get(&slot.pid).is_some_and(|b| *b > last)
        });
        if recovered {
            s.crash.streak = 0;
            s.crash.hold_until = None;
            board.clear_crash_streak();
            info!(self.log, "pool recovered: a new worker is ready");
        }
    }

    /// After anything that changes the pool: keep it within its limits,
    /// fork queued requests, resume accepting, or finish a shutdown.
    fn after_change(&mut self, ctx: &mut Context<DaemonActor>) {
        if !matches!(self.kind, Kind::Supervisor(_)) {
            return;
        }
        let gave_up = self
            .sup()
            .outcome
            .lock()
            .map(|o| matches!(*o, Some(Error::CrashLoop { .. })))
            .unwrap_or(false);
        if gave_up && !self.shutting_down {
            self.shutdown(ctx, "crash loop");
        }
        if self.shutting_down {
            self.check_finished(ctx);
            return;
        }
        self.check_recovered();
        self.check_reloaded();
        match self.config.mode() {
            Mode::PreFork(_) => self.manage_pool(),
            Mode::ForkPerRequest { .. } => self.drain_queue(),
            Mode::Daemon => {}
        }
        self.schedule_retry(ctx);
        if let Some(at) = self.sup().wake_at.take() {
            let delay = at.saturating_duration_since(Instant::now());
            ctx.run_later(delay, |act, ctx| {
                if let Some(core) = act.core.as_deref_mut() {
                    core.after_change(ctx);
                }
            });
        }
    }

    fn manage_pool(&mut self) {
        let Mode::PreFork(mut pool) = *self.config.mode() else {
            return;
        };
        let Some(board) = self.board.clone() else {
            return;
        };
        if self.shutting_down {
            return;
        }
        if let Some((min, max)) = self.sup().spares {
            pool.min_spare = min;
            pool.max_spare = max;
        }
        // One reading of the scoreboard for every count below: workers
        // change their states meanwhile, and counts from two readings can
        // disagree (a retiring spare seen idle in one and exiting in the
        // other made one spare too many look surplus).
        let snaps = board.snapshots();
        let mut tally = [0usize; 8];
        for s in &snaps {
            tally[s.state as usize] += 1;
        }
        // Spares already told to retire are not spares any more, even
        // before they have marked themselves exiting.
        let retiring = &self.sup().retiring;
        let retiring_idle = snaps
            .iter()
            .filter(|s| s.state.is_idle() && retiring.contains(&s.pid))
            .count();
        let idle = (tally[SlotState::FirstWait as usize] + tally[SlotState::Wait as usize])
            .saturating_sub(retiring_idle);
        let starting = tally[SlotState::Forking as usize] + tally[SlotState::Starting as usize];
        let busy = tally[SlotState::Req as usize] + tally[SlotState::Long as usize];
        let used = board.len() - tally[SlotState::Empty as usize];
        if !self.life.parent && idle + busy >= pool.start_children {
            self.broadcast(DaemonSignal::Parent);
            self.ready();
        }
        // Until the initial children are up, start_children is the target;
        // after that, min_spare waiting workers.
        let initial = if self.life.parent {
            0
        } else {
            pool.start_children.saturating_sub(idle + busy + starting)
        };
        let short = pool.min_spare.saturating_sub(idle + starting);
        if initial > 0 || short > 0 {
            let want = initial
                .max(short)
                .min(pool.max_children.saturating_sub(used));
            for _ in 0..want {
                if !self.spawn(true) {
                    break;
                }
            }
        } else if idle > pool.max_spare && self.life.parent {
            // Surplus spares are retired only once the initial children are
            // up, so that start_children above max_spare still gets ready.
            let retiring = &self.sup().retiring;
            let surplus = idle - pool.max_spare;
            let victims: Vec<(i32, SlotId)> = snaps
                .into_iter()
                .filter(|s| s.state.is_idle() && s.pid > 0 && !retiring.contains(&s.pid))
                .take(surplus)
                .map(|s| (s.pid, s.slot))
                .collect();
            for (pid, slot) in victims {
                debug!(self.log, "retiring a surplus spare"; "worker" => pid, "slot" => slot);
                board.count(Counter::Retired);
                self.sup().retiring.insert(pid);
                process::send_signal(pid, Signal::SIGTERM);
            }
        }
    }

    fn supervisor_update(&mut self, update: UpdateStatus, ctx: &mut Context<DaemonActor>) {
        match (update, self.config.mode()) {
            (UpdateStatus::Req(payload), Mode::ForkPerRequest { .. }) => {
                if self.shutting_down {
                    warn!(self.log, "request refused: shutting down");
                    return;
                }
                self.sup().queue.push_back(payload);
                self.drain_queue();
                self.schedule_retry(ctx);
            }
            (update, _) => self.out_of_place(UpdateKind::of(&update).name()),
        }
    }

    /// Fork per request: hands waiting requests to workers that wait for
    /// one, forks workers for the requests left and for the warm spares,
    /// and pauses or resumes the acceptor.
    ///
    /// A request goes into the dispatch socket only while more workers wait
    /// for a request (`F`, `f`, `.`) than requests are in the socket, so
    /// every request there has a worker on its way; the rest wait in the
    /// queue. The acceptor is paused while no worker could take another
    /// request: every slot busy, and none waiting or free.
    fn drain_queue(&mut self) {
        let Mode::ForkPerRequest { .. } = *self.config.mode() else {
            return;
        };
        let Some(board) = self.board.clone() else {
            return;
        };
        let warm = if self.shutting_down {
            0
        } else {
            self.config.warm_workers()
        };
        loop {
            let tally = board.tally();
            let waiting = tally[SlotState::Forking as usize]
                + tally[SlotState::Starting as usize]
                + tally[SlotState::FirstWait as usize];
            let free = tally[SlotState::Empty as usize];
            let claimed = board.claimed();
            let s = self.sup();
            let mut in_socket = s.dispatched.saturating_sub(claimed) as usize;
            // Hand requests to workers on their way.
            while in_socket < waiting && !s.queue.is_empty() {
                let Some(sock) = s.dispatch.as_ref() else {
                    break;
                };
                let payload = s.queue.pop_front().expect("not empty");
                match process::dispatch_send(sock.as_raw_fd(), &payload) {
                    Ok(()) => {
                        // The worker has its own copies of the descriptors.
                        drop(payload);
                        s.dispatched += 1;
                        in_socket += 1;
                    }
                    Err(err) => {
                        s.queue.push_front(payload);
                        if err != Errno::EAGAIN && err != Errno::ENOBUFS {
                            error!(self.log, "cannot hand a request to a worker"; "error" => %err);
                        }
                        // Try again at the next event (a sweep at the latest).
                        break;
                    }
                }
            }
            // Fork for the requests left, and the warm spares.
            let s = self.sup();
            let want = (in_socket + s.queue.len() + warm).saturating_sub(waiting);
            let mut forked = 0;
            for _ in 0..want.min(free) {
                if !self.spawn(false) {
                    break;
                }
                forked += 1;
            }
            if forked == 0 || self.sup().queue.is_empty() {
                break;
            }
        }
        let tally = board.tally();
        let waiting = tally[SlotState::Forking as usize]
            + tally[SlotState::Starting as usize]
            + tally[SlotState::FirstWait as usize];
        let free = tally[SlotState::Empty as usize];
        let s = self.sup();
        let in_socket = s.dispatched.saturating_sub(board.claimed()) as usize;
        let queued = s.queue.len();
        let full = waiting + free <= in_socket;
        let hold = full || queued > 0;
        board.set_queue(queued + in_socket, hold);
        if hold && !s.paused {
            s.paused = true;
            debug!(self.log, "pausing the acceptor: max_children reached");
            self.broadcast(DaemonSignal::Pause);
        } else if !hold && s.paused {
            s.paused = false;
            debug!(self.log, "resuming the acceptor");
            self.broadcast(DaemonSignal::Accept);
        }
    }

    fn supervisor_shutdown(&mut self, ctx: &mut Context<DaemonActor>, reason: &str) {
        if let Some(board) = &self.board {
            board.set_shutdown();
        }
        if let Some(sd) = &self.sup().systemd {
            sd.send(&format!("STOPPING=1\nSTATUS=stopping: {reason}"));
        }
        if self
            .sup()
            .notifier
            .as_ref()
            .is_some_and(ReadyNotifier::is_pending)
        {
            let message = format!("daemon shut down before it was ready ({reason})");
            if let Some(mut n) = self.sup().notifier.take() {
                n.failed(&message);
            }
        }
        if self.config.mode() == &Mode::Daemon {
            // Sent by broadcast_and_wait_shutdown below.
            self.life.accepting = None;
        } else {
            self.broadcast(DaemonSignal::Shutdown);
        }
        let dropped = self.sup().queue.len();
        if dropped > 0 {
            warn!(self.log, "queued requests closed unserved at shutdown"; "count" => dropped);
            self.sup().queue.clear();
        }
        // Requests handed to the workers' socket and not yet taken: a
        // worker that is up may still take them before its TERM; the rest
        // close with the socket.
        let claimed = self.board.as_ref().map_or(0, Scoreboard::claimed);
        let handed = self.sup().dispatched.saturating_sub(claimed);
        if handed > 0 {
            warn!(self.log, "requests not yet taken by a worker at shutdown"; "count" => handed);
        }
        for &pid in self.sup().workers.keys() {
            process::send_signal(pid, Signal::SIGTERM);
        }
        self.term_foreign(Signal::SIGTERM);
        if self.config.mode() == &Mode::Daemon {
            self.broadcast_and_wait_shutdown(ctx);
        }
        ctx.run_later(self.config.shutdown_timeout(), |act, ctx| {
            if let Some(core) = act.core.as_deref_mut() {
                core.kill_remaining(ctx);
            }
        });
        self.check_finished(ctx);
    }

    fn kill_remaining(&mut self, ctx: &mut Context<DaemonActor>) {
        let board = self.board.clone();
        let s = self.sup();
        let mut victims: Vec<i32> = s.workers.keys().copied().collect();
        victims.extend(s.spawner_pid);
        victims.extend(self.foreign.iter().copied());
        if !victims.is_empty() {
            warn!(self.log, "shutdown timeout: killing what is left"; "pids" => ?victims);
        }
        for pid in victims {
            if process::send_signal(pid, Signal::SIGKILL)
                && let Some(board) = &board
            {
                board.count(Counter::Killed);
            }
        }
        let s = self.sup();
        s.spawner = None;
        if let Some(task) = s.spawner_task.take() {
            task.abort();
        }
        s.pending.clear();
        ctx.run_later(KILL_GRACE, |act, ctx| {
            if let Some(core) = act.core.as_deref_mut() {
                core.reap(ctx);
                let s = core.sup();
                let left: Vec<i32> = s.workers.keys().copied().chain(s.spawner_pid).collect();
                if !left.is_empty() {
                    error!(core.log, "children survived SIGKILL; exiting anyway";
                        "pids" => ?left);
                    let code = core.exit_code();
                    core.stop_system(code);
                }
            }
        });
    }

    fn exit_code(&mut self) -> i32 {
        let failed = self
            .sup()
            .outcome
            .lock()
            .map(|o| o.is_some())
            .unwrap_or(true);
        i32::from(failed)
    }

    fn check_finished(&mut self, _ctx: &mut Context<DaemonActor>) {
        let plain = self.config.mode() == &Mode::Daemon;
        let s = self.sup();
        // Close the spawner once nothing is pending, so that it exits and
        // can be reaped; a spawn still in flight gets TERM once reported.
        if s.pending.is_empty() && s.spawner.is_some() {
            s.spawner = None;
            if let Some(task) = s.spawner_task.take() {
                task.abort();
            }
        }
        let done = s.workers.is_empty() && s.pending.is_empty() && s.spawner_pid.is_none();
        let acked = s.acked || !plain;
        if done && self.foreign.is_empty() && acked {
            info!(self.log, "every child reaped; exiting");
            let code = self.exit_code();
            self.stop_system(code);
        }
    }
}

// -- handlers --------------------------------------------------------------

impl Handler<UpdateStatus> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateStatus, ctx: &mut Context<Self>) {
        let Some(core) = self.core.as_deref_mut() else {
            return;
        };
        match core.kind {
            Kind::Supervisor(_) => core.supervisor_update(msg, ctx),
            Kind::Worker(_) => core.worker_update(msg, ctx),
        }
    }
}

impl Handler<Returned> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: Returned, ctx: &mut Context<Self>) {
        let Some(core) = self.core.as_deref_mut() else {
            return;
        };
        if core.shutting_down {
            warn!(core.log, "request closed unserved: shutting down");
            return;
        }
        debug!(core.log, "a worker handed a request back; it goes first");
        core.sup().queue.push_front(msg.0);
        core.after_change(ctx);
    }
}

impl Handler<Claimed> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: Claimed, ctx: &mut Context<Self>) {
        if let Some(core) = self.core.as_deref_mut() {
            core.claimed(msg.0, ctx);
        }
    }
}

impl Handler<Subscribe> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) {
        let Some(core) = self.core.as_deref_mut() else {
            return;
        };
        core.replay(&msg.0);
        core.subscribers.push(msg.0);
    }
}

impl Handler<Unsubscribe> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Context<Self>) {
        if let Some(core) = self.core.as_deref_mut() {
            core.subscribers.retain(|s| s != &msg.0);
        }
    }
}

impl Handler<Status> for DaemonActor {
    type Result = MessageResult<Status>;

    fn handle(&mut self, _msg: Status, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(match self.core.as_deref() {
            Some(core) => core.status(),
            None => StatusReport {
                alias: "Daemon".into(),
                mode: Mode::Daemon.describe(),
                role: Role::Supervisor,
                pid: std::process::id(),
                supervisor_pid: std::process::id(),
                slot: None,
                limits: None,
                slots: Vec::new(),
                counters: Default::default(),
                queued_requests: None,
                paused: None,
                shutting_down: false,
            },
        })
    }
}

impl Handler<Peek> for DaemonActor {
    type Result = MessageResult<Peek>;

    fn handle(&mut self, msg: Peek, _ctx: &mut Context<Self>) -> Self::Result {
        let core = match self.core.as_deref() {
            Some(core) => core,
            None => {
                return MessageResult(PeekReport {
                    verbose: msg.verbose,
                    role: Role::Supervisor,
                    mode: Mode::Daemon.describe(),
                    pid: std::process::id(),
                    parent_pid: nix::unistd::getppid().as_raw() as u32,
                    supervisor_pid: std::process::id(),
                    spawner_pid: None,
                    subscribers: Vec::new(),
                    queued_requests: 0,
                    pending_spawns: 0,
                    known_workers: 0,
                    foreign_children: Vec::new(),
                    slots: String::new(),
                    runtime_tasks: 0,
                    runtime_queue: 0,
                    open_fds: 0,
                    threads: 0,
                    forks_since_runtime: 0,
                    shutting_down: false,
                    keeps_running: vec!["no daemon runs in this process".into()],
                    fds: Vec::new(),
                });
            }
        };
        MessageResult(core.peek(msg.verbose))
    }
}

impl Handler<ForeignChild> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: ForeignChild, ctx: &mut Context<Self>) {
        let Some(core) = self.core.as_deref_mut() else {
            return;
        };
        let pid = msg.0;
        if let Kind::Supervisor(s) = &mut core.kind
            && s.unclaimed.remove(&pid).is_some()
        {
            info!(core.log, "foreign child had already exited"; "child" => pid);
            return;
        }
        core.foreign.insert(pid);
        if core.shutting_down {
            process::send_signal(pid, Signal::SIGTERM);
        }
        core.reap(ctx);
    }
}

impl Handler<Shutdown> for DaemonActor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        if let Some(core) = self.core.as_deref_mut() {
            core.shutdown(ctx, "Shutdown message");
        }
    }
}

impl Handler<OsSignal> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: OsSignal, ctx: &mut Context<Self>) {
        if let Some(core) = self.core.as_deref_mut() {
            core.on_signal(msg, ctx);
        }
    }
}

impl Handler<Woken> for DaemonActor {
    type Result = ();

    fn handle(&mut self, _msg: Woken, ctx: &mut Context<Self>) {
        if let Some(core) = self.core.as_deref_mut() {
            core.after_change(ctx);
        }
    }
}

impl Handler<FromSpawner> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: FromSpawner, ctx: &mut Context<Self>) {
        if let Some(core) = self.core.as_deref_mut() {
            core.on_spawner(msg.0, ctx);
        }
    }
}

impl Handler<BabysitFree> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: BabysitFree, ctx: &mut Context<Self>) {
        let Some(core) = self.core.as_deref_mut() else {
            return;
        };
        let board = core.board.clone();
        let s = core.sup();
        if !msg.free {
            s.retiring.insert(msg.pid);
            return;
        }
        if s.workers.get(&msg.pid) == Some(&msg.slot) {
            s.workers.remove(&msg.pid);
            s.spawned_at.remove(&msg.pid);
            s.retiring.remove(&msg.pid);
            if let Some(board) = board {
                board.free(msg.slot);
                board.count(Counter::Exited);
            }
            core.after_change(ctx);
        }
    }
}

impl Handler<UpgradeVerdict> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: UpgradeVerdict, ctx: &mut Context<Self>) {
        if let Some(core) = self.core.as_deref_mut() {
            core.upgrade_done(msg.0, ctx);
        }
    }
}

impl Handler<ShutdownAcked> for DaemonActor {
    type Result = ();

    fn handle(&mut self, _msg: ShutdownAcked, ctx: &mut Context<Self>) {
        let Some(core) = self.core.as_deref_mut() else {
            return;
        };
        match &mut core.kind {
            Kind::Worker(w) => {
                w.acked = true;
                core.maybe_stop_worker();
            }
            Kind::Supervisor(_) => {
                // A plain daemon stops once its subscribers handled Shutdown
                // and its foreign children are gone.
                core.sup().acked = true;
                core.check_finished(ctx);
            }
        }
    }
}

// -- hooks for benches/micro.rs (see `crate::bench_support`) ----------------

impl DaemonActor {
    /// A worker's own state change, exactly as its status updates make it
    /// (`Core::set_state`: the scoreboard write and, when the supervisor
    /// cares, the wake-up), without going through the mailbox.
    pub(crate) fn bench_set_state(&mut self, state: SlotState) {
        if let Some(core) = self.core.as_deref_mut() {
            core.set_state(state);
        }
    }

    /// The report `Status` answers, built by `Core::status` without going
    /// through the mailbox (`None` outside a daemon).
    pub(crate) fn bench_status(&self) -> Option<StatusReport> {
        self.core.as_deref().map(Core::status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Daemon;

    /// A drain that keeps each record's message and key-values.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl slog::Drain for Capture {
        type Ok = ();
        type Err = slog::Never;
        fn log(
            &self,
            record: &slog::Record<'_>,
            values: &slog::OwnedKVList,
        ) -> Result<(), slog::Never> {
            struct Kv(String);
            impl slog::Serializer for Kv {
                fn emit_arguments(
                    &mut self,
                    key: slog::Key,
                    val: &std::fmt::Arguments<'_>,
                ) -> slog::Result {
                    self.0.push_str(&format!(" {key}={val}"));
                    Ok(())
                }
            }
            let mut kv = Kv(record.msg().to_string());
            let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
            let _ = slog::KV::serialize(values, record, &mut kv);
            self.0.lock().unwrap().push(kv.0);
            Ok(())
        }
    }

    fn config(builder: crate::DaemonBuilder) -> Arc<Config> {
        Arc::new(builder.build().unwrap().config().clone())
    }

    /// A worker's actor over `board`'s `slot`, in this test process.
    fn test_worker(
        builder: crate::DaemonBuilder,
        log: &Logger,
        board: &Scoreboard,
        slot: SlotId,
        dispatch: Option<OwnedFd>,
    ) -> DaemonActor {
        DaemonActor::worker(WorkerSetup {
            config: config(builder),
            log: log.clone(),
            board: board.clone(),
            wake: Arc::new(Wake::new().unwrap()),
            slot,
            supervisor_pid: std::process::id(),
            dispatch: dispatch.map(Arc::new),
        })
    }

    #[test]
    fn refills_are_paced_a_growing_number_per_window_up_to_the_cap() {
        let mut pacer = Pacer::new();
        let start = pacer.window_start;
        let window = |n: u32| start + PACE_WINDOW * n;
        let mut per_window = Vec::new();
        // A thousand missing workers: ask for a fork as often as allowed.
        let mut forked = 0;
        for n in 0..12u32 {
            let mut allowed = 0;
            while forked < 1000 && pacer.allow(window(n), 128).is_ok() {
                allowed += 1;
                forked += 1;
            }
            per_window.push(allowed);
        }
        assert_eq!(
            per_window,
            [8, 16, 32, 64, 128, 128, 128, 128, 128, 128, 112, 0],
            "never a thousand forks in one tick"
        );
        // Once the pool is whole, the rate falls back.
        let mut quiet = Pacer::new();
        let t = quiet.window_start;
        for _ in 0..9 {
            let _ = quiet.allow(t, 128);
        }
        assert!(quiet.allow(t, 128).is_err(), "9th in the first window");
        let next = t + PACE_WINDOW;
        assert!(quiet.allow(next, 128).is_ok());
        assert_eq!(quiet.rate, 16, "doubled after a short window");
        let calm = next + PACE_WINDOW;
        assert!(quiet.allow(calm, 128).is_ok());
        assert_eq!(quiet.rate, 8, "halved after a window that used little");
        // A steady demand near the rate keeps it: 100 forks per window at
        // a rate of 128 never wait, window after window.
        let mut steady = Pacer::new();
        steady.rate = 128;
        let t = steady.window_start;
        for n in 0..10u32 {
            for i in 0..100 {
                assert!(
                    steady.allow(t + PACE_WINDOW * n, 128).is_ok(),
                    "fork {i} of window {n} had to wait at rate {}",
                    steady.rate
                );
            }
        }
        assert_eq!(steady.rate, 128);
        // Idle for half a second: back down, one halving per quiet window.
        assert!(steady.allow(t + PACE_WINDOW * 15, 128).is_ok());
        assert_eq!(steady.rate, 8);
    }

    #[test]
    fn nonsense_updates_are_logged_with_their_place_and_change_nothing() {
        let capture = Capture::default();
        let log = Logger::root(slog::Drain::fuse(capture.clone()), slog::o!());
        let board = Scoreboard::new(2).unwrap();
        let system = actix_rt::System::new();
        let (before, after, worker_state) = system.block_on(async {
            // A fork-per-request supervisor without a spawner, and a
            // pre-forked worker in slot 1: both in this test process.
            let sup = DaemonActor::supervisor(SupervisorSetup {
                config: config(Daemon::builder().max_children(2)),
                log: log.clone(),
                board: Some(board.clone()),
                wake: None,
                spawner: None,
                dispatch: None,
                notifier: None,
                outcome: Arc::new(Mutex::new(None)),
            })
            .start();
            let slot = SlotId(1);
            board.allocate();
            board.allocate();
            board.set_state(slot, SlotState::Starting);
            let worker = test_worker(
                Daemon::builder().start_children(1),
                &log,
                &board,
                slot,
                None,
            )
            .start();
            let before = board.snapshots();
            sup.send(UpdateStatus::Wait).await.unwrap();
            sup.send(UpdateStatus::Done).await.unwrap();
            worker.send(UpdateStatus::Done).await.unwrap();
            worker
                .send(UpdateStatus::Req(Payload::new()))
                .await
                .unwrap();
            let after = board.snapshots();
            worker.send(UpdateStatus::Wait).await.unwrap();
            let worker_state = board.state(slot);
            (before, after, worker_state)
        });
        let states = |s: &[crate::SlotSnapshot]| s.iter().map(|s| s.state).collect::<Vec<_>>();
        assert_eq!(
            states(&before),
            states(&after),
            "nonsense changed the scoreboard"
        );
        assert_eq!(
            worker_state,
            SlotState::FirstWait,
            "a valid update still works"
        );
        let lines = capture.0.lock().unwrap().clone();
        let ignored: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("status update ignored"))
            .collect();
        assert_eq!(ignored.len(), 4, "{lines:#?}");
        assert!(
            ignored[0].contains("update=wait") && ignored[0].contains("from=supervisor pid"),
            "{}",
            ignored[0]
        );
        assert!(
            ignored[2].contains("update=done")
                && ignored[2].contains("slot 1")
                && ignored[2].contains("state=f"),
            "{}",
            ignored[2]
        );
    }

    #[test]
    fn served_counts_while_busy_and_retires_at_the_drawn_limit() {
        let capture = Capture::default();
        let log = Logger::root(slog::Drain::fuse(capture.clone()), slog::o!());
        let board = Scoreboard::new(1).unwrap();
        let slot = board.allocate().unwrap();
        board.set_state(slot, SlotState::Starting);
        let system = actix_rt::System::new();
        let seen = system.block_on(async {
            let worker = test_worker(
                Daemon::builder().start_children(1).requests(4),
                &log,
                &board,
                slot,
                None,
            )
            .start();
            let mut seen = Vec::new();
            let step = |update: UpdateStatus| {
                let worker = worker.clone();
                let board = board.clone();
                async move {
                    worker.send(update).await.unwrap();
                    (board.state(slot), board.snapshot(slot).requests)
                }
            };
            seen.push(step(UpdateStatus::Wait).await);
            seen.push(step(UpdateStatus::Served(1)).await);
            seen.push(step(UpdateStatus::Req(Payload::new())).await);
            seen.push(step(UpdateStatus::Served(2)).await);
            seen.push(step(UpdateStatus::Served(0)).await);
            seen.push(step(UpdateStatus::Long).await);
            seen.push(step(UpdateStatus::Served(2)).await);
            seen
        });
        use SlotState::*;
        assert_eq!(
            seen,
            [
                (FirstWait, 0),
                (FirstWait, 0), // Served while waiting: out of place
                (Req, 0),
                (Req, 2), // counted, still busy
                (Req, 2),
                (Long, 2),
                (Exit, 4), // the limit reached while busy: the worker retires
            ]
        );
        let counters = board.counters();
        assert_eq!((counters.requests, counters.retired), (4, 1));
        let lines = capture.0.lock().unwrap().clone();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("status update ignored") && l.contains("update=served")),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_request_taken_while_shutting_down_is_handed_back() {
        let log = Logger::root(slog::Discard, slog::o!());
        let board = Scoreboard::new(1).unwrap();
        let slot = board.allocate().unwrap();
        board.set_state(slot, SlotState::Starting);
        let (supervisor_end, workers_end) = process::dispatch_pair().unwrap();
        let system = actix_rt::System::new();
        let state_at_claim = system.block_on(async {
            let worker = test_worker(
                Daemon::builder().max_children(1),
                &log,
                &board,
                slot,
                Some(workers_end),
            )
            .start();
            worker.send(Shutdown).await.unwrap();
            let payload = Payload::new().with_data(&"GET /").unwrap();
            worker.send(Claimed(Some(payload))).await.unwrap();
            board.state(slot)
        });
        assert_eq!(state_at_claim, SlotState::Exit, "not served: exiting");
        let back = process::dispatch_recv(supervisor_end.as_raw_fd())
            .expect("handed back")
            .expect("a payload");
        assert_eq!(back.data::<String>().unwrap(), "GET /");
    }
}
