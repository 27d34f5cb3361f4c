//! What both roles share: configuration, logger, scoreboard, subscribers,
//! what they were told, foreign children; and the reports built from it.

use std::sync::Arc;

use actix::prelude::*;
use nix::unistd::Pid;
use slog::{Logger, warn};

use super::{DaemonActor, Foreign, ShutdownAcked};
use crate::config::{Config, Mode};
use crate::messages::DaemonSignal;
use crate::payload::Payload;
use crate::process;
use crate::scoreboard::Scoreboard;
use crate::status::{PeekReport, PoolLimits, Role, StatusReport, SubscriberInfo};

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

    pub(super) fn replay(&self, to: &Recipient<DaemonSignal>, stopping: bool) {
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
    /// `create`: the supervisor creates a missing file, a worker does not.
    /// A refused file is logged loudly and the old file kept; the new file
    /// is returned, for the supervisor to hand to the spawner.
    pub(crate) fn reopen_log(&mut self, create: bool) -> Option<std::fs::File> {
        let mut opened = None;
        if let Some(path) = self.config.logfile() {
            match process::reopen_logfile(path, create) {
                Ok(file) => {
                    slog::info!(self.log, "log file reopened"; "signal" => "SIGHUP");
                    opened = Some(file);
                }
                Err(err) => slog::error!(self.log, "cannot reopen log file, keeping the old one";
                    "error" => %err, "path" => %path.display()),
            }
        }
        self.broadcast(DaemonSignal::Hup);
        opened
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

    pub(super) fn status(&self, role: Role, stopping: bool) -> StatusReport {
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
