//! `DaemonActor`: the daemon's registry actor, one in every process.
//!
//! A thin shell: every message and OS signal it receives goes to the role
//! of its process, a [`Supervisor`] or a [`Worker`] (separate types, so no
//! role is checked at run time), which decides what to do. What both roles
//! share (configuration, logger, scoreboard, subscribers, foreign
//! children) is [`Common`].

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use slog::{Logger, warn};

use crate::config::{Config, Mode};
use crate::messages::{
    DaemonSignal, ForeignChild, OsSignal, Peek, Shutdown, Status, Subscribe, Unsubscribe,
    UpdateStatus,
};
use crate::payload::Payload;
use crate::process::{self, Pidfd};
use crate::scoreboard::{Scoreboard, SlotSnapshot};
use crate::status::{PeekReport, PoolLimits, Role, StatusReport, SubscriberInfo};
use crate::supervisor::Supervisor;
use crate::worker::Worker;

pub(crate) use crate::supervisor::SupervisorSetup;
pub(crate) use crate::worker::{WorkerSetup, worker_request_limit};

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
            d.field("role", &core.role())
                .field("mode", &core.common.config.mode().describe())
                .field("subscribers", &core.common.subscribers.len());
        }
        d.finish()
    }
}

struct Core {
    common: Common,
    role: RoleState,
}

enum RoleState {
    Supervisor(Box<Supervisor>),
    Worker(Box<Worker>),
}

impl Core {
    fn role(&self) -> Role {
        match self.role {
            RoleState::Supervisor(_) => Role::Supervisor,
            RoleState::Worker(_) => Role::Worker,
        }
    }

    fn is_stopping(&self) -> bool {
        match &self.role {
            RoleState::Supervisor(s) => s.is_stopping(),
            RoleState::Worker(w) => w.is_stopping(),
        }
    }
}

/// What both roles share.
pub(crate) struct Common {
    pub(crate) config: Arc<Config>,
    pub(crate) log: Logger,
    pub(crate) pid: Pid,
    pub(crate) supervisor_pid: Pid,
    pub(crate) board: Option<Scoreboard>,
    pub(crate) subscribers: Vec<Recipient<DaemonSignal>>,
    pub(crate) life: Lifecycle,
    pub(crate) foreign: Foreign,
}

/// What subscribers have been told, replayed to a late subscriber.
#[derive(Default)]
pub(crate) struct Lifecycle {
    pub(crate) started: bool,
    pub(crate) parent: bool,
    pub(crate) child: Option<Option<Payload>>,
    pub(crate) accepting: Option<bool>,
}

impl Common {
    pub(crate) fn new(
        config: Arc<Config>,
        log: Logger,
        supervisor_pid: Pid,
        board: Option<Scoreboard>,
    ) -> Common {
        Common {
            config,
            log,
            pid: nix::unistd::getpid(),
            supervisor_pid,
            board,
            subscribers: Vec::new(),
            life: Lifecycle::default(),
            foreign: Foreign::default(),
        }
    }

    pub(crate) fn broadcast(&mut self, signal: DaemonSignal) {
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

    /// Sends `Shutdown` to every subscriber and `ShutdownAcked` to the
    /// actor once all have handled it (or the shutdown timeout passed), so
    /// that an acceptor has stopped accepting before the process decides
    /// to stop.
    pub(crate) fn broadcast_shutdown_and_wait(&mut self, ctx: &mut Context<DaemonActor>) {
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

    fn replay(&self, to: &Recipient<DaemonSignal>, stopping: bool) {
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
        if stopping {
            to.do_send(DaemonSignal::Shutdown);
        }
    }

    /// Logs an update that makes no sense where it arrived.
    pub(crate) fn out_of_place(&self, what: &str, place: &str, state: Option<char>) {
        warn!(self.log, "status update ignored: it makes no sense here";
            "update" => what, "from" => place,
            "state" => state.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            "mode" => self.config.mode().describe());
    }

    /// HUP: reopens the log file (if there is one) and tells subscribers.
    pub(crate) fn reopen_log(&mut self) {
        if let Some(path) = self.config.logfile() {
            match process::reopen_logfile(path) {
                Ok(()) => slog::info!(self.log, "log file reopened"; "signal" => "SIGHUP"),
                Err(err) => slog::error!(self.log, "cannot reopen log file"; "error" => %err),
            }
        }
        self.broadcast(DaemonSignal::Hup);
    }

    pub(crate) fn stop_system(&self, code: i32) {
        slog::debug!(self.log, "stopping"; "code" => code);
        System::current().stop_with_code(code);
    }

    /// The pool limits as configured (the supervisor overrides the spares).
    pub(crate) fn limits(&self, spares: Option<(usize, usize)>) -> Option<PoolLimits> {
        match self.config.mode() {
            Mode::Daemon => None,
            Mode::ForkPerRequest { max_children } => Some(PoolLimits {
                max_children: *max_children,
                min_spare: None,
                max_spare: None,
                requests: None,
                requests_jitter: 0,
            }),
            Mode::PreFork(p) => {
                let (min, max) = spares.unwrap_or((p.min_spare, p.max_spare));
                Some(PoolLimits {
                    max_children: p.max_children,
                    min_spare: Some(min),
                    max_spare: Some(max),
                    requests: p.requests.map(|n| n.get()),
                    requests_jitter: p.requests_jitter,
                })
            }
        }
    }

    fn status(&self, role: Role, stopping: bool) -> StatusReport {
        let mode = self.config.mode();
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
            role,
            pid: self.pid.as_raw() as u32,
            supervisor_pid: self.supervisor_pid.as_raw() as u32,
            slot: None,
            limits: self.limits(self.board.as_ref().and_then(Scoreboard::spares)),
            slots: self
                .board
                .as_ref()
                .map(Scoreboard::snapshots)
                .unwrap_or_default(),
            counters: self
                .board
                .as_ref()
                .map(Scoreboard::counters)
                .unwrap_or_default(),
            queued_requests: queued,
            paused,
            shutting_down: stopping,
        }
    }

    pub(crate) fn peek(&self, verbose: bool, role: Role, stopping: bool) -> PeekReport {
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
        let mut keeps_running = vec![if stopping {
            "shutdown has begun and waits for what is listed below".to_owned()
        } else {
            "the System runs until Shutdown, TERM, INT or QUIT".to_owned()
        }];
        let alive = subscribers.iter().filter(|s| s.alive).count();
        if alive > 0 {
            keeps_running.push(format!("{alive} subscribers alive"));
        }
        if !self.foreign.is_empty() {
            keeps_running.push(format!("{} foreign children", self.foreign.len()));
        }
        PeekReport {
            verbose,
            role,
            mode: self.config.mode().describe(),
            pid: self.pid.as_raw() as u32,
            parent_pid: nix::unistd::getppid().as_raw() as u32,
            supervisor_pid: self.supervisor_pid.as_raw() as u32,
            spawner_pid: None,
            subscribers,
            queued_requests: 0,
            pending_spawns: 0,
            known_workers: 0,
            foreign_children: self.foreign.pids().map(Pid::as_raw).collect(),
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
            shutting_down: stopping,
            keeps_running,
            fds,
        }
    }
}

/// Processes the application reported with [`ForeignChild`], each named by
/// a pidfd opened while it was known to be this process's own unreaped
/// child.
#[derive(Default)]
pub(crate) struct Foreign {
    children: HashMap<Pid, Pidfd>,
}

impl Foreign {
    /// Registers `pid`, which must be this process's child and not yet
    /// reaped (checked through the pidfd, so race-free).
    pub(crate) fn add(&mut self, pid: Pid) -> Result<(), &'static str> {
        if pid.as_raw() <= 0 {
            return Err("not a process id");
        }
        let pidfd = Pidfd::open(pid).map_err(|_| "no such process")?;
        // waitid on the pidfd answers only for our own children; WNOWAIT
        // leaves an exited one to be reaped as usual.
        match waitid(
            Id::PIDFd(std::os::fd::AsFd::as_fd(&pidfd)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(_) => {
                self.children.insert(pid, pidfd);
                Ok(())
            }
            Err(_) => Err("not a child of this process"),
        }
    }

    pub(crate) fn remove(&mut self, pid: Pid) -> bool {
        self.children.remove(&pid).is_some()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }

    pub(crate) fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.children.keys().copied()
    }

    pub(crate) fn signal_all(&self, sig: Signal) -> usize {
        self.children
            .values()
            .filter(|p| p.signal(sig).is_ok())
            .count()
    }

    /// A worker reaps only these: each one that has exited.
    pub(crate) fn reap(&mut self) -> Vec<(Pid, WaitStatus)> {
        let done: Vec<(Pid, WaitStatus)> = self
            .children
            .keys()
            .filter_map(|&pid| process::reap_pid(pid).map(|status| (pid, status)))
            .collect();
        for (pid, _) in &done {
            self.children.remove(pid);
        }
        done
    }
}

// -- messages inside the daemon ---------------------------------------------

/// A fork-per-request worker took its request from the dispatch socket
/// (`None`: the supervisor is gone).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Claimed(pub(crate) Option<Payload>);

/// Workers changed a state the supervisor acts on (the eventfd).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Woken;

/// A message from the spawner.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FromSpawner(pub(crate) process::wire::FromSpawner);

/// Fork per request: a request a worker took but could not serve (it was
/// told to shut down meanwhile), handed back to the supervisor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Returned(pub(crate) Payload);

/// Every subscriber handled `Shutdown` (or the timeout passed).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ShutdownAcked;

/// The verdict of a binary upgrade's new supervisor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct UpgradeVerdict(pub(crate) Result<Option<i32>, String>);

/// From the babysitter: what it decided, for the supervisor to carry out
/// through its registry.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Babysat(pub(crate) Vec<crate::babysitter::Action>);

/// From the babysitter: the registered workers, with their pids from the
/// registry and their states from the scoreboard.
#[derive(Debug, Message)]
#[rtype(result = "Vec<SlotSnapshot>")]
pub(crate) struct Roster;

impl DaemonActor {
    pub(crate) fn supervisor(setup: SupervisorSetup) -> DaemonActor {
        let (common, supervisor) = Supervisor::new(setup);
        DaemonActor {
            core: Some(Box::new(Core {
                common,
                role: RoleState::Supervisor(Box::new(supervisor)),
            })),
        }
    }

    pub(crate) fn worker(setup: WorkerSetup) -> DaemonActor {
        let (common, worker) = Worker::new(setup);
        DaemonActor {
            core: Some(Box::new(Core {
                common,
                role: RoleState::Worker(Box::new(worker)),
            })),
        }
    }
}

impl Actor for DaemonActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(core) = self.core.as_deref_mut() else {
            return;
        };
        let supervisor = matches!(core.role, RoleState::Supervisor(_));
        crate::signals::listen(ctx.address(), &core.common.log, supervisor);
        // A worker held its stop and HUP signals since its fork: the
        // handlers exist now, so what came meanwhile is delivered to them.
        crate::process::unblock_held_signals();
        core.common.life.started = true;
        core.common.broadcast(DaemonSignal::Start);
        match &mut core.role {
            RoleState::Supervisor(s) => {
                crate::supervisor::executor::attach(s, &core.common, ctx);
                s.started(&mut core.common);
            }
            RoleState::Worker(w) => w.started(&mut core.common, ctx),
        }
        crate::supervisor::execute(self, ctx);
    }
}

impl DaemonActor {
    /// The supervisor role and the shared part, in timers and intervals.
    pub(crate) fn supervisor_mut(&mut self) -> Option<(&mut Common, &mut Supervisor)> {
        let core = self.core.as_deref_mut()?;
        match &mut core.role {
            RoleState::Supervisor(s) => Some((&mut core.common, s)),
            RoleState::Worker(_) => None,
        }
    }
}

impl actix::Supervised for DaemonActor {}
impl SystemService for DaemonActor {}

/// Hands a message to the role of this process; `$sup` and `$wrk` are
/// called with the role, the shared part and the context.
/// The supervisor's effects are then carried out (see
/// [`crate::supervisor::execute`]).
macro_rules! to_role {
    ($self:ident, $ctx:ident, |$c:ident| sup $s:ident => $sup:expr, wrk $w:ident => $wrk:expr) => {
        if let Some(core) = $self.core.as_deref_mut() {
            let $c = &mut core.common;
            match &mut core.role {
                RoleState::Supervisor($s) => $sup,
                RoleState::Worker($w) => $wrk,
            }
        }
        crate::supervisor::execute($self, $ctx);
    };
}

impl Handler<UpdateStatus> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateStatus, ctx: &mut Context<Self>) {
        to_role!(self, ctx, |c| sup s => s.update(c, msg), wrk w => w.update(c, msg, ctx));
    }
}

impl Handler<OsSignal> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: OsSignal, ctx: &mut Context<Self>) {
        to_role!(self, ctx, |c| sup s => s.on_signal(c, msg), wrk w => w.on_signal(c, msg, ctx));
    }
}

impl Handler<Shutdown> for DaemonActor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        to_role!(self, ctx, |c| sup s => s.shutdown(c, "Shutdown message"),
            wrk w => w.shutdown(c, "Shutdown message", ctx));
    }
}

impl Handler<ShutdownAcked> for DaemonActor {
    type Result = ();

    fn handle(&mut self, _msg: ShutdownAcked, ctx: &mut Context<Self>) {
        to_role!(self, ctx, |c| sup s => s.shutdown_acked(c), wrk w => w.shutdown_acked(c));
    }
}

impl Handler<ForeignChild> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: ForeignChild, ctx: &mut Context<Self>) {
        let pid = Pid::from_raw(msg.0);
        to_role!(self, ctx, |c| sup s => s.foreign_child(c, pid), wrk w => w.foreign_child(c, pid));
    }
}

impl Handler<Woken> for DaemonActor {
    type Result = ();

    fn handle(&mut self, _msg: Woken, ctx: &mut Context<Self>) {
        to_role!(self, ctx, |c| sup s => s.after_change(c), wrk _w => {});
    }
}

impl Handler<FromSpawner> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: FromSpawner, ctx: &mut Context<Self>) {
        to_role!(self, ctx, |c| sup s => s.on_spawner(c, msg.0), wrk _w => {});
    }
}

impl Handler<Returned> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: Returned, ctx: &mut Context<Self>) {
        to_role!(self, ctx, |c| sup s => s.returned(c, msg.0), wrk _w => {});
    }
}

impl Handler<Claimed> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: Claimed, ctx: &mut Context<Self>) {
        to_role!(self, ctx, |c| sup _s => {}, wrk w => w.claimed(c, msg.0, ctx));
    }
}

impl Handler<UpgradeVerdict> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: UpgradeVerdict, ctx: &mut Context<Self>) {
        to_role!(self, ctx, |c| sup s => s.upgrade_verdict(c, msg.0), wrk _w => {});
    }
}

impl Handler<Babysat> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: Babysat, ctx: &mut Context<Self>) {
        to_role!(self, ctx, |c| sup s => s.babysat(c, msg.0), wrk _w => {});
    }
}

impl Handler<Roster> for DaemonActor {
    type Result = MessageResult<Roster>;

    fn handle(&mut self, _msg: Roster, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(match self.core.as_deref() {
            Some(Core {
                common,
                role: RoleState::Supervisor(s),
            }) => s.roster(common),
            _ => Vec::new(),
        })
    }
}

impl Handler<Subscribe> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) {
        let Some(core) = self.core.as_deref_mut() else {
            return;
        };
        let stopping = core.is_stopping();
        core.common.replay(&msg.0, stopping);
        core.common.subscribers.push(msg.0);
    }
}

impl Handler<Unsubscribe> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Context<Self>) {
        if let Some(core) = self.core.as_deref_mut() {
            core.common.subscribers.retain(|s| s != &msg.0);
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

impl Core {
    fn status(&self) -> StatusReport {
        let mut report = self.common.status(self.role(), self.is_stopping());
        match &self.role {
            RoleState::Supervisor(s) => s.status(&self.common, &mut report),
            RoleState::Worker(w) => report.slot = Some(w.slot().0),
        }
        report
    }
}

impl Handler<Peek> for DaemonActor {
    type Result = MessageResult<Peek>;

    fn handle(&mut self, msg: Peek, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(core) = self.core.as_deref() else {
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
        };
        MessageResult(core.peek(msg.verbose))
    }
}

impl Core {
    fn peek(&self, verbose: bool) -> PeekReport {
        let mut report = self.common.peek(verbose, self.role(), self.is_stopping());
        match &self.role {
            RoleState::Supervisor(s) => s.peek(&mut report),
            RoleState::Worker(w) => w.peek(&self.common, &mut report),
        }
        report
    }
}

// -- hooks for benches/micro.rs (see `crate::bench_support`) ----------------

impl DaemonActor {
    /// A worker's own state change, exactly as its status updates make it
    /// (the scoreboard write and, when the supervisor cares, the wake-up),
    /// without going through the mailbox.
    pub(crate) fn bench_set_state(&mut self, state: crate::state::SlotState) {
        if let Some(core) = self.core.as_deref_mut()
            && let RoleState::Worker(w) = &mut core.role
        {
            w.set_state(&mut core.common, state);
        }
    }

    /// The report `Status` answers, built without going through the
    /// mailbox (`None` outside a daemon).
    pub(crate) fn bench_status(&self) -> Option<StatusReport> {
        self.core.as_deref().map(Core::status)
    }
}
