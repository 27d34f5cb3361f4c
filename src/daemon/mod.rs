//! `DaemonActor`: the daemon's registry actor, one in every process.
//!
//! A thin shell: every message and OS signal it receives goes to the role
//! of its process, a [`Supervisor`] or a [`Worker`] (separate types, so no
//! role is checked at run time), which decides what to do. What both roles
//! share (configuration, logger, scoreboard, subscribers, foreign
//! children) is [`Common`].

use actix::prelude::*;
use nix::unistd::Pid;

use crate::config::Mode;
use crate::messages::{
    DaemonSignal, ForeignChild, OsSignal, Peek, Shutdown, Status, Subscribe, Unsubscribe,
    UpdateStatus,
};
use crate::status::{PeekReport, Role, StatusReport};
use crate::supervisor::Supervisor;
use crate::worker::Worker;

mod common;
mod foreign;
mod internal;

pub(crate) use crate::supervisor::SupervisorSetup;
pub(crate) use crate::worker::{WorkerSetup, worker_request_limit};
pub(crate) use common::Common;
pub(crate) use foreign::Foreign;
pub(crate) use internal::{
    Babysat, Claimed, FromSpawner, Roster, ShutdownAcked, UpgradeVerdict, Woken, WorkerSaid,
};

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
/// [`ForeignChild`], or started with
/// [`spawn_foreign_child`](crate::spawn_foreign_child), which also makes it
/// die with this process; its exit is then logged, and it gets TERM at
/// shutdown.
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

impl Handler<WorkerSaid> for DaemonActor {
    type Result = ();

    fn handle(&mut self, msg: WorkerSaid, ctx: &mut Context<Self>) {
        msg.1.store(false, std::sync::atomic::Ordering::Release);
        to_role!(self, ctx, |c| sup s => s.hear_from(c, msg.0), wrk _w => {});
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
