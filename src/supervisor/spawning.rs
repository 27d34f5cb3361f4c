//! Spawning: asking the spawner for workers, its replies and their
//! pidfds, resending what its socket had no room for, and its deadline.

use std::os::fd::AsRawFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use slog::{debug, error, warn};

use super::effects::Effect;
use super::exits;
use super::registry::{Ask, Refused, Retire};
use super::{RESEND_MAX, RESEND_MIN, Supervisor};
use crate::daemon::Common;
use crate::error::Error;
use crate::process;
use crate::process::wire::{FromSpawner, SpawnReply, SpawnRequest};
use crate::scoreboard::{Counter, SlotId};

impl Supervisor {
    /// Takes a slot the registry does not own and asks the spawner for a
    /// worker there. `false` when no slot is free or no fork may happen now
    /// (backoff, or pacing for `paced` pool refills).
    pub(crate) fn spawn(&mut self, c: &mut Common, paced: bool, now: Instant) -> bool {
        let Some(board) = c.board.clone() else {
            return false;
        };
        // No spawner to ask (it died, or was ended as stuck): a request
        // would stay pending for good and hold up the drain.
        if self
            .spawner
            .as_ref()
            .and_then(|s| s.sock.as_ref())
            .is_none()
        {
            return false;
        }
        if let Some(until) = self.backoff.hold(now) {
            self.wake_at_least(Some(until));
            return false;
        }
        if paced
            && let Err(at) = self
                .pacer
                .allow(now, c.config.crash_policy().max_spawn_rate)
        {
            self.wake_at_least(Some(at));
            return false;
        }
        let Some(slot) = (0..board.len())
            .map(SlotId)
            .find(|&s| !self.registry.owns(s))
        else {
            return false;
        };
        board.init(slot);
        self.registry.expect(slot, now, true);
        self.send_spawn(c, slot, now);
        true
    }

    fn send_spawn(&mut self, c: &mut Common, slot: SlotId, now: Instant) {
        let Some(sock) = self.spawner.as_ref().and_then(|s| s.sock.clone()) else {
            return;
        };
        match self.os.send(sock.as_raw_fd(), SpawnRequest::Spawn { slot }) {
            Ok(()) => self.registry.mark_sent(slot, now),
            Err(Errno::EAGAIN) | Err(Errno::ENOBUFS) => self.resend_scheduled = true,
            Err(err) => {
                error!(c.log, "cannot reach the spawner"; "slot" => slot, "error" => %err);
                self.resend_scheduled = true;
            }
        }
    }

    /// Requests the spawner's socket had no room for go again, with a
    /// doubling delay.
    pub(super) fn schedule_resend(&mut self) {
        if !self.resend_scheduled {
            return;
        }
        self.resend_scheduled = false;
        let delay = self.resend_delay;
        self.resend_delay = (self.resend_delay * 2).min(RESEND_MAX);
        self.effects.push(Effect::ResendAfter(delay));
    }

    /// The resend delay passed: the requests not sent yet go again (or
    /// are given up, when stopping).
    pub(crate) fn resend_unsent(&mut self, c: &mut Common) {
        let unsent: Vec<SlotId> = self
            .registry
            .pending()
            .filter(|(_, p)| p.unsent)
            .map(|(slot, _)| slot)
            .collect();
        let now = self.os.now();
        for slot in unsent {
            if self.phase.is_stopping() {
                self.abandon_spawn(c, slot);
            } else {
                self.send_spawn(c, slot, now);
            }
        }
        self.schedule_resend();
    }

    pub(crate) fn abandon_spawn(&mut self, c: &mut Common, slot: SlotId) {
        if self.registry.abandon(slot)
            && let Some(board) = &c.board
        {
            board.free(slot);
        }
    }

    /// Gives up every spawn still pending: the spawner will answer none.
    pub(super) fn abandon_all_spawns(&mut self, c: &mut Common) {
        let pending: Vec<SlotId> = self.registry.pending().map(|(slot, _)| slot).collect();
        for slot in pending {
            self.abandon_spawn(c, slot);
        }
    }

    pub(crate) fn on_spawner(&mut self, c: &mut Common, msg: FromSpawner) {
        match msg {
            FromSpawner::Reply(SpawnReply::Spawned { slot, pid }, fd) => {
                self.resend_delay = RESEND_MIN;
                self.spawned(c, slot, pid, fd);
            }
            FromSpawner::Reply(SpawnReply::Failed { slot, errno }, _) => {
                if let Some(board) = &c.board {
                    board.count(Counter::ForkFailed);
                }
                warn!(c.log, "fork failed, will retry"; "slot" => slot, "error" => %errno);
                // The slot is given up; the plan asks again, within the
                // backoff and pacing.
                self.abandon_spawn(c, slot);
            }
            FromSpawner::Malformed(len) => {
                error!(c.log, "malformed message from the spawner"; "bytes" => len);
            }
            FromSpawner::Closed => {
                if let Some(spawner) = &mut self.spawner {
                    spawner.sock = None;
                    spawner.task = None;
                }
                // Every reply it sent has been read: what is still pending
                // will never come.
                self.abandon_all_spawns(c);
                // The spawner's exit status says more than its socket's EOF.
                self.reap(c);
                if !self.phase.is_stopping() && self.spawner.is_some() {
                    error!(
                        c.log,
                        "the spawner died (it closed its socket): no worker can be forked, shutting down"
                    );
                    let pid = self.spawner_pid().map_or(0, Pid::as_raw);
                    self.fail(Error::SpawnerDied {
                        pid,
                        status: "closed its socket".into(),
                    });
                    self.shutdown(c, "spawner gone");
                }
            }
        }
        self.after_change(c);
    }

    fn spawned(&mut self, c: &mut Common, slot: SlotId, pid: Pid, fds: Vec<std::os::fd::OwnedFd>) {
        let now = self.os.now();
        let mut fds = fds.into_iter();
        let (fd, link) = (fds.next(), fds.next().map(std::sync::Arc::new));
        let pidfd = match fd.map(|fd| self.os.child_handle(fd)) {
            Some(Ok(pidfd)) if pidfd.pid() == pid => pidfd,
            other => {
                // Reaped already (the pidfd names no process any more), or
                // no pidfd came: the exit, if we reaped it, is in unclaimed.
                let why = match other {
                    Some(Ok(p)) => format!("pidfd names pid {}", p.pid()),
                    Some(Err(err)) => err.to_string(),
                    None => "no pidfd".to_owned(),
                };
                if let Some((status, _)) = self.unclaimed.remove(&pid) {
                    debug!(c.log, "worker exited before its report"; "slot" => slot,
                        "worker" => pid.as_raw(), "status" => process::describe_status(&status));
                    if let Some(board) = &c.board {
                        board.count(Counter::Exited);
                    }
                    let class = exits::classify(&status, false, Ask::Nothing);
                    self.abandon_spawn(c, slot);
                    self.exit_verdict(c, class, &status, now);
                } else {
                    error!(c.log, "spawn report without a usable pidfd"; "slot" => slot,
                        "worker" => pid.as_raw(), "why" => why);
                    self.abandon_spawn(c, slot);
                }
                return;
            }
        };
        match self.registry.register(slot, pidfd, link.clone(), now) {
            Ok(()) => {
                if let Some(link) = link {
                    self.os.watch(pid, link);
                }
            }
            Err(refused) => {
                error!(c.log, "spawn report refused"; "slot" => slot, "worker" => pid.as_raw(),
                    "why" => match refused { Refused::NotPending => "no spawn pending there", Refused::DuplicatePid => "pid already registered" });
                return;
            }
        }
        if let Some(board) = &c.board {
            board.set_pid(slot, pid.as_raw());
        }
        debug!(c.log, "worker forked"; "slot" => slot, "worker" => pid.as_raw());
        if let Some((status, _)) = self.unclaimed.remove(&pid) {
            self.worker_exited(c, pid, status);
        } else if self.phase.is_stopping() {
            self.registry
                .signal(slot, Signal::SIGTERM, Ask::Retire(Retire::Shutdown));
        }
    }

    /// The spawner must answer every request within `spawn_timeout`; one
    /// that does not (stopped, stuck in a fork) is ended, and the daemon
    /// shuts down, or replaces itself through the binary upgrade.
    pub(crate) fn check_spawner(&mut self, c: &mut Common) {
        let Some(asked) = self.registry.oldest_unanswered() else {
            return;
        };
        let timeout = c.config.spawn_timeout();
        let waited = self.os.now().saturating_duration_since(asked);
        if waited < timeout || self.phase.is_stopping() {
            return;
        }
        let Some(spawner) = &mut self.spawner else {
            return;
        };
        if spawner.sock.is_none() {
            return;
        }
        let pid = spawner.pidfd.pid();
        error!(c.log, "the spawner is stuck: a spawn request went unanswered";
            "spawner" => pid.as_raw(), "waited" => format!("{waited:?}"),
            "spawn_timeout" => format!("{timeout:?}"));
        let _ = spawner.pidfd.signal(Signal::SIGKILL);
        spawner.sock = None;
        if let Some(task) = spawner.task.take() {
            task.abort();
        }
        self.abandon_all_spawns(c);
        let stuck = Error::SpawnerStuck {
            pid: pid.as_raw(),
            waited,
        };
        if c.config.binary_upgrade() && self.phase.is_serving() {
            warn!(
                c.log,
                "replacing this supervisor through the binary upgrade, for a fresh spawner"
            );
            self.spawner_lost = Some(stuck);
            if !self.upgrading() {
                self.upgrade(c);
            }
            // Could not even start: nothing will replace this supervisor.
            if !self.upgrading() {
                self.upgrade_failed_without_spawner(c, "the upgrade did not start");
            }
        } else {
            self.fail(stuck);
            self.shutdown(c, "spawner stuck");
        }
    }
}
