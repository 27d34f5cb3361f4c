//! The supervisor's life: readiness, reload, binary upgrade, drain, kill,
//! done. Each is a change of [`Phase`].

use std::collections::HashSet;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use slog::{debug, error, info, warn};

use super::effects::Effect;
use super::phase::Phase;
use super::registry::{Ask, Retire};
use super::{KILL_GRACE, Supervisor};
use crate::config::Mode;
use crate::daemon::Common;
use crate::messages::DaemonSignal;

use crate::scoreboard::Counter;

impl Supervisor {
    /// The initial pool is up: tell systemd and the launching process.
    pub(crate) fn ready(&mut self, c: &mut Common) {
        if matches!(self.phase, Phase::Starting) {
            self.phase = Phase::Running;
        }
        // systemd first: a detached launcher exits once told, and the
        // service manager must know the new MAINPID before that.
        let summary = self.summary(c);
        if let Some(sd) = &self.systemd {
            sd.send(&format!("READY=1\nSTATUS={summary}\nMAINPID={}", c.pid));
        }
        self.last_summary = summary;
        if let Some(mut n) = self.notifier.take()
            && n.ready().is_err()
        {
            // The old supervisor of a binary upgrade closed its end: it
            // was told to stop before this one was ready, so this one
            // stops too rather than serve beside nobody's plan.
            warn!(
                c.log,
                "the binary upgrade was abandoned by the old supervisor: stopping"
            );
            self.shutdown(c, "binary upgrade abandoned");
            return;
        }
        info!(c.log, "daemon ready");
    }

    /// One line for systemd's STATUS=.
    pub(crate) fn summary(&self, c: &Common) -> String {
        let mode = c.config.mode().describe();
        let Some(board) = &c.board else {
            return format!("{mode}, running");
        };
        let (mut idle, mut busy) = (0, 0);
        for child in self.registry.iter() {
            if child.seen.is_idle() {
                idle += 1;
            } else if child.seen.is_busy() {
                busy += 1;
            }
        }
        let counters = board.counters();
        let mut line = format!(
            "{mode}: {} workers ({idle} waiting, {busy} busy), {} requests",
            self.registry.child_count() + self.registry.pending_len(),
            counters.requests
        );
        if self.backoff.streak() > 0 {
            line.push_str(&format!(
                ", degraded ({} failures in a row)",
                self.backoff.streak()
            ));
        }
        if matches!(self.phase, Phase::Reloading { .. }) {
            line.push_str(", reloading");
        }
        line
    }

    /// Sends STATUS= when the summary changed (on the sweep).
    pub(crate) fn notify_status(&mut self, c: &Common) {
        if self.systemd.is_none() || !c.life.parent {
            return;
        }
        let summary = self.summary(c);
        if summary != self.last_summary {
            if let Some(sd) = &self.systemd {
                sd.send(&format!("STATUS={summary}"));
            }
            self.last_summary = summary;
        }
    }

    /// SIGUSR1: replace every worker by a fresh one. Old workers get TERM:
    /// each finishes its request and exits; they stop counting as spares at
    /// once, so the pool forks their replacements meanwhile. Connections
    /// wait in the listen queue; none is dropped.
    pub(crate) fn reload(&mut self, c: &mut Common) {
        match self.phase {
            Phase::Running | Phase::Reloading { .. } => {}
            _ => {
                warn!(c.log, "reload ignored"; "phase" => self.phase.name());
                return;
            }
        }
        if let Some(sd) = &self.systemd {
            let now = crate::scoreboard::now_ms() * 1000;
            sd.send(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
        }
        let mut old: HashSet<Pid> = match &mut self.phase {
            Phase::Reloading { old } => std::mem::take(old),
            _ => HashSet::new(),
        };
        for slot in self.registry.slots() {
            let Some(child) = self.registry.get(slot) else {
                continue;
            };
            if child.is_leaving() {
                continue;
            }
            old.insert(child.pid());
            self.registry
                .signal(slot, Signal::SIGTERM, Ask::Retire(Retire::Reload));
        }
        info!(c.log, "graceful reload: replacing every worker"; "workers" => old.len());
        self.phase = Phase::Reloading { old };
        self.check_reloaded(c);
        self.after_change(c);
    }

    /// A worker that was to be replaced by the reload is gone.
    pub(crate) fn left_reload(&mut self, c: &Common, pid: Pid) {
        if let Phase::Reloading { old } = &mut self.phase {
            old.remove(&pid);
        }
        self.check_reloaded(c);
    }

    fn check_reloaded(&mut self, c: &Common) {
        if let Phase::Reloading { old } = &self.phase
            && old.is_empty()
        {
            self.phase = Phase::Running;
            info!(c.log, "graceful reload complete");
            let summary = self.summary(c);
            if let Some(sd) = &self.systemd {
                sd.send(&format!("READY=1\nSTATUS={summary}"));
            }
        }
    }

    pub(crate) fn upgrading(&self) -> bool {
        matches!(self.phase, Phase::Upgrading { .. })
    }

    /// SIGUSR2 with binary upgrades on: start the new binary with the
    /// listeners and wait for its readiness verdict on a pipe, which a task
    /// owns: aborting the task closes the pipe, and a new supervisor that
    /// finds it closed when it is ready stops instead.
    pub(crate) fn upgrade(&mut self, c: &mut Common) {
        if !self.phase.is_serving() || self.upgrading() {
            warn!(c.log, "binary upgrade ignored"; "phase" => self.phase.name());
            return;
        }
        let pidfile = c
            .config
            .pidfile()
            .map(|p| (p.to_owned(), crate::ops::Pidfile::oldbin(p)));
        if let Some((path, old)) = &pidfile {
            let _ = std::fs::rename(path, old);
        }
        let (new, verdict) = match self.os.start_upgrade() {
            Ok(started) => started,
            Err(err) => {
                if let Some((path, old)) = &pidfile {
                    let _ = std::fs::rename(old, path);
                }
                error!(c.log, "binary upgrade failed, still serving"; "error" => %err);
                return;
            }
        };
        info!(c.log, "binary upgrade: new supervisor starting"; "new" => new.as_raw());
        self.phase = Phase::Upgrading { new, verdict: None };
        self.effects.push(Effect::AwaitVerdict(verdict));
    }

    pub(crate) fn upgrade_verdict(&mut self, c: &mut Common, verdict: Result<Option<i32>, String>) {
        let Phase::Upgrading { new, .. } = self.phase else {
            if let Ok(Some(pid)) = verdict {
                // It got ready after this one began to stop: stop it too.
                self.stop_new_supervisor(c, Pid::from_raw(pid));
            }
            return;
        };
        match verdict {
            Ok(_) => {
                info!(c.log, "binary upgrade: the new supervisor is ready, draining"; "new" => new.as_raw());
                self.phase = Phase::Running;
                self.shutdown(c, "binary upgrade");
            }
            Err(why) => {
                if let Some(path) = c.config.pidfile() {
                    let _ = std::fs::rename(crate::ops::Pidfile::oldbin(path), path);
                }
                self.phase = Phase::Running;
                if self.spawner_lost.is_some() {
                    self.upgrade_failed_without_spawner(c, &why);
                    return;
                }
                error!(c.log, "binary upgrade failed, still serving"; "new" => new.as_raw(), "error" => why);
            }
        }
    }

    /// The upgrade was the way out of a stuck spawner and failed: without
    /// a spawner this supervisor cannot keep its pool, so it stops, with
    /// the stuck spawner as its error.
    pub(crate) fn upgrade_failed_without_spawner(&mut self, c: &mut Common, why: &str) {
        error!(c.log, "binary upgrade failed, and no spawner is left: stopping"; "error" => why);
        if let Some(err) = self.spawner_lost.take() {
            self.fail(err);
        }
        self.shutdown(c, "binary upgrade failed without a spawner");
    }

    /// TERMs a new supervisor that came up after this one began to stop,
    /// if it is this process's own child (a detached one is re-parented to
    /// this subreaper).
    fn stop_new_supervisor(&mut self, c: &Common, pid: Pid) {
        if self.os.term_own_child(pid) {
            warn!(c.log, "binary upgrade: stopping the new supervisor too"; "new" => pid.as_raw());
        } else {
            warn!(c.log, "binary upgrade: the new supervisor is not our child; not signalled"; "new" => pid.as_raw())
        }
    }

    /// TERM, INT, QUIT, `Shutdown`, a give-up or a dead spawner: drain.
    /// A second stop changes nothing.
    pub(crate) fn shutdown(&mut self, c: &mut Common, reason: &str) {
        if self.phase.is_stopping() {
            debug!(c.log, "already stopping"; "reason" => reason, "phase" => self.phase.name());
            return;
        }
        if let Phase::Upgrading { new, verdict } = &self.phase {
            warn!(c.log, "binary upgrade abandoned: stopping"; "new" => new.as_raw());
            if let Some(task) = verdict {
                task.abort();
            }
            if let Some(path) = c.config.pidfile() {
                let _ = std::fs::rename(crate::ops::Pidfile::oldbin(path), path);
            }
        }
        info!(c.log, "shutting down"; "reason" => reason);
        let code = i32::from(self.has_failed());
        let timeout = c.config.shutdown_timeout();
        self.phase = Phase::Draining {
            deadline: self.os.now() + timeout,
            code,
        };
        if let Some(sd) = &self.systemd {
            sd.send(&format!("STOPPING=1\nSTATUS=stopping: {reason}"));
        }
        if self.notifier.as_ref().is_some_and(|n| n.is_pending()) {
            let message = format!("daemon shut down before it was ready ({reason})");
            if let Some(mut n) = self.notifier.take() {
                n.failed(&message);
            }
        }
        if c.config.mode() == &Mode::Daemon {
            c.life.accepting = None;
            self.effects.push(Effect::ShutdownSubscribers);
        } else {
            c.broadcast(DaemonSignal::Shutdown);
        }
        let dropped = self.requests.queue.len();
        if dropped > 0 {
            warn!(c.log, "queued requests closed unserved at shutdown"; "count" => dropped);
            self.requests.queue.clear();
        }
        // Requests given to workers and not yet claimed: a worker that is
        // up may still claim its own before its TERM; the rest close when
        // their workers exit.
        let given = self.given_count();
        if given > 0 {
            warn!(c.log, "requests not yet claimed by their workers at shutdown"; "count" => given);
        }
        for slot in self.registry.slots() {
            self.registry
                .signal(slot, Signal::SIGTERM, Ask::Retire(Retire::Shutdown));
        }
        c.foreign.signal_all(Signal::SIGTERM);
        self.effects.push(Effect::DrainDeadline(timeout));
        self.check_finished(c);
    }

    pub(crate) fn shutdown_acked(&mut self, c: &mut Common) {
        // A plain daemon stops once its subscribers handled Shutdown and its
        // foreign children are gone.
        self.acked = true;
        self.check_finished(c);
    }

    /// The drain's deadline passed: KILL what is left.
    pub(crate) fn kill_remaining(&mut self, c: &mut Common) {
        let Phase::Draining { code, .. } = self.phase else {
            return;
        };
        self.phase = Phase::Killing {
            deadline: self.os.now() + KILL_GRACE,
            code,
        };
        let left: Vec<i32> = self
            .registry
            .iter()
            .map(|child| child.pid().as_raw())
            .chain(self.spawner_pid().map(Pid::as_raw))
            .chain(c.foreign.pids().map(Pid::as_raw))
            .collect();
        if !left.is_empty() {
            warn!(c.log, "shutdown timeout: killing what is left"; "pids" => ?left);
        }
        for slot in self.registry.slots() {
            if self.registry.signal(slot, Signal::SIGKILL, Ask::Kill)
                && let Some(board) = &c.board
            {
                board.count(Counter::Killed);
            }
        }
        if let Some(spawner) = &mut self.spawner {
            let _ = spawner.pidfd.signal(Signal::SIGKILL);
            spawner.sock = None;
            if let Some(task) = spawner.task.take() {
                task.abort();
            }
        }
        c.foreign.signal_all(Signal::SIGKILL);
        let pending: Vec<_> = self.registry.pending().map(|(slot, _)| slot).collect();
        for slot in pending {
            self.abandon_spawn(c, slot);
        }
        self.effects.push(Effect::KillDeadline(KILL_GRACE));
    }

    /// The grace after the KILLs passed: stop even if a child survived.
    pub(crate) fn kill_deadline(&mut self, c: &mut Common) {
        self.reap(c);
        if !matches!(self.phase, Phase::Done { .. }) {
            let left: Vec<i32> = self
                .registry
                .iter()
                .map(|child| child.pid().as_raw())
                .chain(self.spawner_pid().map(Pid::as_raw))
                .collect();
            error!(c.log, "children survived SIGKILL; exiting anyway"; "pids" => ?left);
            let code = self.phase.code().unwrap_or(1);
            self.phase = Phase::Done { code };
            self.effects.push(Effect::Stop(code));
        }
    }

    /// Stops the System once every child is reaped.
    pub(crate) fn check_finished(&mut self, c: &mut Common) {
        let Some(code) = self.phase.code() else {
            return;
        };
        if matches!(self.phase, Phase::Done { .. }) {
            return;
        }
        // Close the spawner once nothing is pending, so that it exits and
        // can be reaped; a spawn still in flight gets TERM once reported.
        if self.registry.pending_len() == 0
            && let Some(spawner) = &mut self.spawner
            && spawner.sock.take().is_some()
            && let Some(task) = spawner.task.take()
        {
            task.abort();
        }
        let plain = c.config.mode() == &Mode::Daemon;
        let done = self.registry.is_empty() && self.spawner.is_none();
        if done && c.foreign.is_empty() && (self.acked || !plain) {
            info!(c.log, "every child reaped; exiting");
            // A failure found while draining (a crash loop) still counts.
            let code = code.max(i32::from(self.has_failed()));
            self.phase = Phase::Done { code };
            self.effects.push(Effect::Stop(code));
        }
    }
}
