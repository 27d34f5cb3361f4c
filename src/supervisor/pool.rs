//! The pool: spawning and the spawner's replies, reaping and exits, the
//! scoreboard census, and the pre-fork and fork-per-request plans carried
//! out.

use std::time::Instant;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use slog::{debug, error, info, warn};

use super::Supervisor;
use super::census::{self, Known, Reading};
use super::dispatch::{self, Census};
use super::effects::Effect;
use super::exits::{self, ExitClass, Verdict};
use super::prefork::{Count, Limits};
use super::registry::{Ask, Child, Retire};
use crate::config::Mode;
use crate::daemon::Common;
use crate::error::Error;
use crate::process;
use crate::scoreboard::{Counter, SlotId};
use crate::state::SlotState;

impl Supervisor {
    /// After anything that changes the pool: keep it within its limits,
    /// hand queued requests to workers, or finish a stop.
    pub(crate) fn after_change(&mut self, c: &mut Common) {
        if self.phase.is_stopping() {
            self.check_finished(c);
            return;
        }
        let now = self.os.now();
        let count = self.census(c, now);
        match c.config.mode() {
            Mode::PreFork(_) => self.manage_pool(c, count, now),
            Mode::ForkPerRequest { .. } => self.drain_queue(c, now),
            Mode::Daemon => {}
        }
        self.schedule_resend();
        self.arm_timer();
    }

    /// Reads every slot, checks it against the registry, retires workers
    /// that wrote nonsense and clears slots nobody owns. Returns the pool's
    /// count, by the registry.
    fn census(&mut self, c: &mut Common, now: Instant) -> Count {
        let Some(board) = c.board.clone() else {
            return Count::default();
        };
        let mut count = Count::default();
        for i in 0..board.len() {
            let slot = SlotId(i);
            let raw = board.raw(slot);
            if self.registry.is_pending(slot) {
                count.used += 1;
                count.starting += 1;
                continue;
            }
            let Some(child) = self.registry.get(slot) else {
                if raw.state != SlotState::Empty as u8 || raw.pid != 0 {
                    warn!(c.log, "cleared a slot that no registered worker owns";
                        "slot" => slot, "pid_written" => raw.pid, "state_written" => raw.state);
                    board.free(slot);
                }
                continue;
            };
            count.used += 1;
            let known = Known {
                pid: child.pid().as_raw(),
                seen: child.seen,
                requests_seen: child.requests_seen,
            };
            let reading = Reading {
                state: raw.state,
                pid: raw.pid,
                requests: raw.requests,
            };
            let state = match census::check(reading, known) {
                Ok(state) => state,
                Err(nonsense) => {
                    self.misbehaved(c, slot, &nonsense.to_string());
                    continue;
                }
            };
            let leaving = child.is_leaving();
            let spawned = child.spawned;
            if let Some(child) = self.registry.get_mut(slot) {
                child.seen = state;
                child.requests_seen = raw.requests;
            }
            if (state.is_idle() || state.is_busy()) && self.registry.mark_ready(slot, now) {
                if c.config.verbose() {
                    debug!(c.log, "worker ready"; "slot" => slot, "worker" => known.pid);
                }
                if self.backoff.on_ready(spawned) {
                    board.clear_crash_streak();
                    info!(c.log, "pool recovered: a new worker is ready");
                }
            }
            if leaving {
                continue;
            }
            match state {
                SlotState::Forking | SlotState::Starting => count.starting += 1,
                s if s.is_idle() => count.idle += 1,
                s if s.is_busy() => count.busy += 1,
                _ => {}
            }
        }
        count
    }

    /// A worker wrote nonsense: logged with its slot and pid, retired,
    /// and its slot's pid put right. Nothing else changes.
    pub(super) fn misbehaved(&mut self, c: &mut Common, slot: SlotId, what: &str) {
        let Some(child) = self.registry.get(slot) else {
            return;
        };
        let pid = child.pid();
        if let Some(board) = &c.board {
            board.set_pid(slot, pid.as_raw());
        }
        // Logged and counted once: a worker already told to go for its
        // nonsense, or already being escalated or killed, is only put right.
        if matches!(
            child.ask,
            Ask::Retire(Retire::Misbehaved) | Ask::Escalated(_) | Ask::Kill
        ) {
            return;
        }
        error!(c.log, "worker misbehaves: retiring it"; "slot" => slot, "worker" => pid.as_raw(),
            "what" => what);
        if let Some(board) = &c.board {
            board.count(Counter::Misbehaved);
        }
        self.registry
            .signal(slot, Signal::SIGTERM, Ask::Retire(Retire::Misbehaved));
    }

    fn limits(&self, c: &Common) -> Option<Limits> {
        let Mode::PreFork(pool) = *c.config.mode() else {
            return None;
        };
        let (min_spare, max_spare) = self.spares.unwrap_or((pool.min_spare, pool.max_spare));
        Some(Limits {
            start_children: pool.start_children,
            min_spare,
            max_spare,
            max_children: pool.max_children,
        })
    }

    fn manage_pool(&mut self, c: &mut Common, count: Count, now: Instant) {
        let Some(limits) = self.limits(c) else {
            return;
        };
        let plan = self.prefork.plan(count, limits, now);
        if plan.ready {
            c.broadcast(crate::messages::DaemonSignal::Parent);
            self.ready(c);
        }
        for _ in 0..plan.spawn {
            if !self.spawn(c, true, now) {
                break;
            }
        }
        if plan.retire > 0 {
            // The idle worker that has waited longest goes.
            let victim = c.board.as_ref().and_then(|board| {
                self.registry
                    .iter()
                    .filter(|child| !child.is_leaving() && child.seen.is_idle())
                    .map(|child| (board.snapshot(child.slot).in_state_ms, child.slot))
                    .max()
                    .map(|(_, slot)| slot)
            });
            if let Some(slot) = victim {
                debug!(c.log, "retiring a surplus spare"; "slot" => slot);
                if let Some(board) = &c.board {
                    board.count(Counter::Retired);
                }
                self.registry
                    .signal(slot, Signal::SIGTERM, Ask::Retire(Retire::Surplus));
            }
        }
        self.wake_at_least(plan.wake_at);
    }

    /// Fork per request: hands waiting requests to workers that wait for
    /// one, forks workers for the rest and the warm spares, and pauses or
    /// resumes the acceptor (see [`dispatch`]).
    fn drain_queue(&mut self, c: &mut Common, now: Instant) {
        let Some(board) = c.board.clone() else {
            return;
        };
        let Mode::ForkPerRequest { max_children } = *c.config.mode() else {
            return;
        };
        let warm_workers = c.config.warm_workers();
        let census = |s: &Supervisor| {
            let used = s.registry.child_count() + s.registry.pending_len();
            Census {
                takers: s.takers().len(),
                pending: s.registry.pending_len(),
                free: max_children.saturating_sub(used),
                queued: s.requests.queue.len(),
                warm: if s.phase.is_stopping() {
                    0
                } else {
                    warm_workers
                },
            }
        };
        let plan = dispatch::plan(census(self));
        let takers = self.takers();
        for slot in takers.into_iter().take(plan.send) {
            self.give(c, slot);
        }
        for _ in 0..plan.fork {
            if !self.spawn(c, false, now) {
                break;
            }
        }
        let after = census(self);
        let hold = dispatch::hold(after);
        board.set_queue(after.queued + self.given_count(), hold);
        if hold && !self.requests.paused {
            self.requests.paused = true;
            debug!(c.log, "pausing the acceptor: max_children reached");
            c.broadcast(crate::messages::DaemonSignal::Pause);
        } else if !hold && self.requests.paused {
            self.requests.paused = false;
            debug!(c.log, "resuming the acceptor");
            c.broadcast(crate::messages::DaemonSignal::Accept);
        }
    }

    /// Reaps every child that has exited, in a loop.
    pub(crate) fn reap(&mut self, c: &mut Common) {
        let reaped = self.os.reap();
        if reaped.is_empty() {
            if self.phase.is_stopping() {
                self.check_finished(c);
            }
            return;
        }
        for (pid, status) in reaped {
            if Some(pid) == self.spawner_pid() {
                // Replies still buffered in its socket come before its EOF:
                // pending spawns are given up only once the socket is done.
                if self.spawner.take().is_some_and(|s| s.sock.is_none()) {
                    self.abandon_all_spawns(c);
                }
                let status = process::describe_status(&status);
                if self.phase.is_stopping() || c.config.binary_upgrade() && self.upgrading() {
                    debug!(c.log, "spawner exited"; "status" => &status);
                } else {
                    error!(c.log, "the spawner died: no worker can be forked, shutting down";
                        "spawner" => pid.as_raw(), "status" => &status);
                    self.fail(Error::SpawnerDied {
                        pid: pid.as_raw(),
                        status,
                    });
                    self.shutdown(c, "spawner died");
                }
            } else if self.registry.slot_of(pid).is_some() {
                self.worker_exited(c, pid, status);
            } else if c.foreign.remove(pid) {
                info!(c.log, "foreign child exited"; "child" => pid.as_raw(),
                    "status" => process::describe_status(&status));
            } else {
                let now = self.os.now();
                self.unclaimed.insert(pid, (status, now));
            }
        }
        self.after_change(c);
    }

    pub(super) fn worker_exited(&mut self, c: &mut Common, pid: Pid, status: WaitStatus) {
        self.link_closing(c, pid);
        let Some(child) = self.registry.remove(pid) else {
            return;
        };
        let now = self.os.now();
        let Some(board) = c.board.clone() else {
            return;
        };
        let served = board.raw(child.slot).requests > 0;
        let class = exits::classify(&status, child.is_ready() || served, child.ask);
        let state = board.state(child.slot);
        board.free(child.slot);
        board.count(Counter::Exited);
        self.left_reload(c, pid);
        let describe = process::describe_status(&status);
        let stopping = self.phase.is_stopping();
        match class {
            ExitClass::Retired => {
                debug!(c.log, "worker exited"; "worker" => pid.as_raw(), "slot" => child.slot, "status" => describe)
            }
            ExitClass::Killed => {
                board.count(Counter::KilledExternally);
                warn!(c.log, "worker killed by a signal we did not send: replacing it";
                    "worker" => pid.as_raw(), "slot" => child.slot, "state" => %state.letter(),
                    "status" => describe, "ran" => format!("{:?}", now - child.spawned));
            }
            ExitClass::Crash | ExitClass::BootFailure => {
                let what = if class == ExitClass::Crash {
                    "worker crashed"
                } else {
                    "worker failed before it was ready"
                };
                warn!(c.log, "{}", what; "worker" => pid.as_raw(), "slot" => child.slot,
                    "state" => %state.letter(), "status" => describe, "asked" => ask_name(&child));
            }
        }
        if !stopping {
            self.exit_verdict(c, class, &status, now);
        }
    }

    /// What the pool does after an exit of `class`: replace it, back off,
    /// or give up.
    pub(super) fn exit_verdict(
        &mut self,
        c: &mut Common,
        class: ExitClass,
        status: &WaitStatus,
        now: Instant,
    ) {
        if !matches!(class, ExitClass::Crash | ExitClass::BootFailure) {
            return;
        }
        let code = match status {
            WaitStatus::Exited(_, code) => *code,
            WaitStatus::Signaled(_, sig, _) => -(*sig as i32),
            _ => -1,
        };
        let policy = c.config.crash_policy();
        let verdict = self.backoff.on_exit(class, now, &policy);
        if let Some(board) = &c.board {
            board.record_crash(code, self.backoff.streak());
        }
        match verdict {
            Verdict::Replace => {}
            Verdict::HoldUntil(until) => {
                warn!(c.log, "pool degraded: backing off";
                    "in_a_row" => self.backoff.streak(),
                    "next_spawn_in" => format!("{:?}", until.saturating_duration_since(now)));
                self.wake_at_least(Some(until));
            }
            Verdict::GiveUp { failures } => {
                let (max, window) = policy.max_restarts.unwrap_or((0, Default::default()));
                let err = Error::CrashLoop {
                    crashes: failures,
                    max,
                    window,
                    last: process::describe_status(status),
                };
                error!(c.log, "giving up: workers keep failing"; "error" => %err);
                self.fail(err);
                self.shutdown(c, "crash loop");
            }
        }
    }

    /// Asks for a look at the pool no later than `at`.
    pub(crate) fn wake_at_least(&mut self, at: Option<Instant>) {
        if let Some(at) = at
            && self.wake_at.is_none_or(|w| at < w)
        {
            self.wake_at = Some(at);
        }
    }

    /// Sets a timer for the next look that is due, unless one is set for
    /// that time or earlier.
    fn arm_timer(&mut self) {
        let Some(at) = self.wake_at.take() else {
            return;
        };
        let now = self.os.now();
        if self.timer_for.is_some_and(|t| t <= at && t > now) {
            return;
        }
        self.timer_for = Some(at);
        self.effects.push(Effect::LookAt(at));
    }
}

fn ask_name<H>(child: &Child<H>) -> &'static str {
    match child.ask {
        Ask::Nothing => "nothing",
        Ask::Retire(why) => why.describe(),
        Ask::Escalated(_) => "babysitter escalation",
        Ask::Kill => "kill",
    }
}
