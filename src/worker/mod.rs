//! The worker's side of `DaemonActor`: its state in the scoreboard, what it
//! tells the application, and when it goes.
//!
//! A worker writes only its own slot (its state and request count); the
//! supervisor reads it as a report and checks it against its registry.
//! The state machine is [`crate::state::worker_step`]; the phases are
//! running and stopping.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use actix::prelude::*;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use slog::{Logger, debug, info, warn};

use crate::config::{Config, Mode};
use crate::daemon::{Claimed, Common, DaemonActor};
use crate::messages::{DaemonSignal, OsSignal, UpdateStatus};
use crate::payload::Payload;
use crate::process::{self, Told, Wake};
use crate::scoreboard::{Scoreboard, SlotCounter, SlotId};
use crate::state::{SlotState, Step, UpdateKind, worker_step};
use crate::status::PeekReport;

mod limit;

pub(crate) use limit::worker_request_limit;

/// What a worker's bootstrap hands the worker's actor.
pub(crate) struct WorkerSetup {
    pub(crate) config: Arc<Config>,
    pub(crate) log: Logger,
    pub(crate) board: Scoreboard,
    pub(crate) wake: Arc<Wake>,
    pub(crate) slot: SlotId,
    pub(crate) supervisor_pid: Pid,
    /// This worker's end of its own channel to the supervisor (`None` in
    /// benches that run a worker's actor without a supervisor).
    pub(crate) link: Option<Arc<OwnedFd>>,
}

/// A worker's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Told to go; `acked` once every subscriber handled `Shutdown`.
    Stopping {
        acked: bool,
    },
}

/// The worker role.
pub(crate) struct Worker {
    slot: SlotId,
    wake: Arc<Wake>,
    phase: Phase,
    /// Pre-fork: retire after this many requests (`requests` plus this
    /// worker's jitter).
    limit: Option<u64>,
    /// Requests accepted (`Req`, `Long`) and not yet `Done` after the stop
    /// began: the worker exits only once they are finished.
    in_flight: u32,
    /// Its own channel to the supervisor, and (fork per request) the task
    /// waiting on it for this worker's request.
    link: Option<Arc<OwnedFd>>,
    claim_task: Option<actix_rt::task::JoinHandle<()>>,
}

impl Worker {
    pub(crate) fn new(setup: WorkerSetup) -> (Common, Worker) {
        // Drawn here, once per worker process; published for the
        // application (`Process::requests_limit`, the web Reporter).
        let limit = limit::draw_and_publish(&setup.config);
        let mut common = Common::new(
            setup.config,
            setup.log,
            setup.supervisor_pid,
            Some(setup.board),
        );
        // A pre-forked worker is a child at once; a fork-per-request worker
        // once it has taken its request.
        if matches!(common.config.mode(), Mode::PreFork(_)) {
            common.life.child = Some(None);
        }
        let worker = Worker {
            slot: setup.slot,
            wake: setup.wake,
            phase: Phase::Running,
            limit,
            in_flight: 0,
            link: setup.link,
            claim_task: None,
        };
        (common, worker)
    }

    pub(crate) fn slot(&self) -> SlotId {
        self.slot
    }

    pub(crate) fn is_stopping(&self) -> bool {
        matches!(self.phase, Phase::Stopping { .. })
    }

    fn place(&self, c: &Common) -> String {
        format!("worker pid {} slot {}", c.pid, self.slot)
    }

    fn state(&self, c: &Common) -> SlotState {
        c.board
            .as_ref()
            .map_or(SlotState::Empty, |b| b.state(self.slot))
    }

    pub(crate) fn set_state(&mut self, c: &mut Common, state: SlotState) {
        if let Some(board) = &c.board {
            let old = board.state(self.slot);
            if old == state {
                return;
            }
            board.set_state(self.slot, state);
            debug!(c.log, "state"; "state" => %state.letter());
            // The supervisor counts spares (pre-fork) and workers waiting
            // for a request (fork per request), and exits: wake it only
            // when one of those changes (not for r <-> l).
            if old.is_idle() != state.is_idle() || state == SlotState::Exit {
                self.wake.wake();
            }
        }
        if state.is_busy() {
            // A subscriber that joins mid-request is not told to accept.
            c.life.accepting = None;
        }
    }

    pub(crate) fn started(&mut self, c: &mut Common, ctx: &mut Context<DaemonActor>) {
        if c.config.verbose() {
            debug!(c.log, "worker running");
        }
        if !matches!(c.config.mode(), Mode::ForkPerRequest { .. }) {
            c.broadcast(DaemonSignal::Child(None));
            return;
        }
        // Fork per request: ready (`.`), waiting for the request the
        // supervisor gives it on its own channel; `Child(payload)` once
        // it is taken.
        self.set_state(c, SlotState::FirstWait);
        let addr = ctx.address();
        let Some(sock) = self.link.clone() else {
            return;
        };
        self.claim_task = Some(actix_rt::spawn(async move {
            let Ok(fd) = process::watch(sock) else {
                addr.do_send(Claimed(None));
                return;
            };
            loop {
                let Ok(mut guard) = fd.readable().await else {
                    addr.do_send(Claimed(None));
                    return;
                };
                match process::take(fd.get_ref().as_raw_fd()) {
                    Ok(payload) => {
                        addr.do_send(Claimed(payload));
                        return;
                    }
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

    pub(crate) fn on_signal(
        &mut self,
        c: &mut Common,
        sig: OsSignal,
        ctx: &mut Context<DaemonActor>,
    ) {
        match sig {
            OsSignal::Term | OsSignal::Int | OsSignal::Quit => self.shutdown(c, sig.name(), ctx),
            OsSignal::Hup => drop(c.reopen_log(false)),
            OsSignal::Usr2 => {
                let mut report = c.peek(true, crate::status::Role::Worker, self.is_stopping());
                self.peek(c, &mut report);
                info!(c.log, "peek (SIGUSR2)\n{}", report);
            }
            OsSignal::Chld => {
                for (pid, status) in c.foreign.reap() {
                    info!(c.log, "foreign child exited"; "child" => pid.as_raw(),
                        "status" => process::describe_status(&status));
                }
            }
            // Not listened for in workers.
            OsSignal::Usr1 | OsSignal::Ttin | OsSignal::Ttou => {}
        }
    }

    pub(crate) fn peek(&self, c: &Common, report: &mut PeekReport) {
        if self.state(c).is_busy() || self.in_flight > 0 {
            report.keeps_running.push("handling a request".to_owned());
        }
    }

    pub(crate) fn foreign_child(&mut self, c: &mut Common, pid: Pid) {
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
    }

    pub(crate) fn shutdown(
        &mut self,
        c: &mut Common,
        reason: &str,
        ctx: &mut Context<DaemonActor>,
    ) {
        if self.is_stopping() {
            return;
        }
        self.phase = Phase::Stopping { acked: false };
        // A fork-per-request worker ends after every request: not news.
        if matches!(c.config.mode(), Mode::ForkPerRequest { .. }) {
            debug!(c.log, "shutting down"; "reason" => reason);
        } else {
            info!(c.log, "shutting down"; "reason" => reason);
        }
        // A worker still waiting for its request takes none now.
        if let Some(task) = self.claim_task.take() {
            task.abort();
        }
        let state = self.state(c);
        if state.is_busy() {
            self.in_flight = self.in_flight.max(1);
        } else {
            self.set_state(c, SlotState::Exit);
        }
        c.broadcast_shutdown_and_wait(ctx);
    }

    pub(crate) fn shutdown_acked(&mut self, c: &mut Common) {
        if let Phase::Stopping { acked } = &mut self.phase {
            *acked = true;
        }
        self.maybe_stop(c);
    }

    /// Stops the System once the subscribers handled `Shutdown` and no
    /// request it accepted is still being answered.
    fn maybe_stop(&mut self, c: &mut Common) {
        if self.phase == (Phase::Stopping { acked: true }) && self.in_flight == 0 {
            self.set_state(c, SlotState::Exit);
            c.foreign.signal_all(Signal::SIGTERM);
            c.stop_system(0);
        }
    }

    /// Fork per request: this worker took its request.
    pub(crate) fn claimed(
        &mut self,
        c: &mut Common,
        payload: Option<Payload>,
        ctx: &mut Context<DaemonActor>,
    ) {
        self.claim_task = None;
        let Some(payload) = payload else {
            if !self.is_stopping() {
                warn!(c.log, "the request socket closed: the supervisor is gone");
                self.shutdown(c, "supervisor gone", ctx);
            }
            return;
        };
        let answer = if self.is_stopping() {
            Told::HandedBack
        } else {
            Told::Claimed
        };
        // The supervisor holds its copy until it hears this: handed back,
        // it gives the request to another worker; if this worker died
        // before answering, it would too.
        let told = match &self.link {
            Some(sock) => process::tell(sock.as_raw_fd(), answer),
            None => Err(Errno::ENOTCONN),
        };
        if answer == Told::HandedBack {
            // Taken just as TERM came.
            match told {
                Ok(()) => debug!(c.log, "request handed back: shutting down"),
                Err(err) => {
                    warn!(c.log, "cannot hand the request back: shutting down"; "error" => %err)
                }
            }
            return;
        }
        if let Err(err) = told {
            // The supervisor is gone: the request is still served.
            warn!(c.log, "cannot tell the supervisor the request is claimed"; "error" => %err);
        }
        self.set_state(c, SlotState::Req);
        c.life.child = Some(Some(payload.clone()));
        c.broadcast(DaemonSignal::Child(Some(payload)));
    }

    pub(crate) fn update(
        &mut self,
        c: &mut Common,
        update: UpdateStatus,
        ctx: &mut Context<DaemonActor>,
    ) {
        let Some(board) = c.board.clone() else {
            return;
        };
        let state = board.state(self.slot);
        let prefork = matches!(c.config.mode(), Mode::PreFork(_));
        let kind = UpdateKind::of(&update);
        if self.is_stopping() {
            // On its way out a worker still finishes what it accepted,
            // even a connection accepted in the instant the stop came:
            // count it, and exit once it is done.
            match &update {
                UpdateStatus::Req(_) | UpdateStatus::Long if state == SlotState::Exit => {
                    self.in_flight = self.in_flight.saturating_add(1);
                }
                UpdateStatus::Done => {
                    board.count_request(self.slot);
                    self.in_flight = self.in_flight.saturating_sub(1);
                    self.maybe_stop(c);
                }
                UpdateStatus::Served(n) => {
                    board.count_requests(self.slot, *n);
                }
                _ => {}
            }
            return;
        }
        match worker_step(prefork, state, kind) {
            Step::To(SlotState::FirstWait) => {
                self.set_state(c, SlotState::FirstWait);
                c.broadcast(DaemonSignal::Accept);
            }
            Step::To(next) => self.set_state(c, next),
            Step::Finish => self.request_done(c, ctx),
            Step::Count => {
                if let UpdateStatus::Served(n) = update {
                    self.requests_served(c, n, state, ctx);
                }
            }
            Step::Stay => {}
            Step::Invalid => {
                let place = self.place(c);
                c.out_of_place(kind.name(), &place, Some(state.letter()));
            }
        }
    }

    fn request_done(&mut self, c: &mut Common, ctx: &mut Context<DaemonActor>) {
        let Some(board) = c.board.clone() else {
            return;
        };
        let served = board.count_request(self.slot);
        let limit = match c.config.mode() {
            Mode::PreFork(_) => self.limit,
            _ => Some(1),
        };
        if limit.is_some_and(|limit| served >= limit) {
            self.retire(c, served, ctx);
        } else {
            self.set_state(c, SlotState::Wait);
            c.broadcast(DaemonSignal::Accept);
        }
    }

    /// `Served(n)` while busy: count, stay busy; retire at the limit.
    fn requests_served(
        &mut self,
        c: &mut Common,
        n: u64,
        state: SlotState,
        ctx: &mut Context<DaemonActor>,
    ) {
        let Some(board) = c.board.clone() else {
            return;
        };
        if n == 0 {
            return;
        }
        let served = board.count_requests(self.slot, n);
        if state == SlotState::Req {
            board.touch(self.slot);
        }
        if self.limit.is_some_and(|limit| served >= limit) {
            self.retire(c, served, ctx);
        }
    }

    /// A pre-forked worker served its `requests` (a fork-per-request worker
    /// its one request): exit, by the shutdown of any worker.
    fn retire(&mut self, c: &mut Common, served: u64, ctx: &mut Context<DaemonActor>) {
        if let (Mode::PreFork(_), Some(board)) = (c.config.mode(), &c.board) {
            board.count_own(self.slot, SlotCounter::Retired);
        }
        self.set_state(c, SlotState::Exit);
        let reason = format!("served {served} requests");
        self.shutdown(c, &reason, ctx);
    }
}

#[cfg(test)]
pub(crate) mod tests;
