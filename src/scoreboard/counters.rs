//! The pool-wide counters and state in the scoreboard's header.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::Scoreboard;

/// The pool's counters, read from the scoreboard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Workers started since start (counted by each worker as it starts).
    pub spawned: u64,
    /// Workers reaped since start.
    pub exited: u64,
    /// Workers retired: served their `requests`, or surplus spares.
    pub retired: u64,
    /// Workers killed (SIGKILL at shutdown).
    pub killed: u64,
    /// Forks that failed and were retried.
    pub fork_failed: u64,
    /// Requests served by all workers.
    pub requests: u64,
    /// Babysitter: workers escalated for CPU use.
    pub rogue: u64,
    /// Babysitter: workers escalated for a hung request.
    pub hung: u64,
    /// Babysitter: workers retired for memory.
    pub memory: u64,
    /// Babysitter: slots freed for vanished, zombie or unkillable workers.
    pub vanished: u64,
    /// Workers that failed before they were ready, or crashed after (a
    /// crash signal or a non-zero exit).
    pub crashed: u64,
    /// Failures in a row that made spawns back off; above 0 the pool is
    /// degraded.
    pub crash_streak: u32,
    /// How the last young death ended: an exit code, or minus a signal number.
    pub last_crash: Option<i32>,
    /// Connections accepted by all workers (counted by servers that report
    /// them, such as `actix_daemon::web`).
    pub connections: u64,
    /// Workers ended by a signal the supervisor did not send (the OOM
    /// killer, an operator's `kill -9`): replaced at once, no backoff.
    pub killed_externally: u64,
    /// Workers retired for writing nonsense into the scoreboard.
    pub misbehaved: u64,
}

impl Scoreboard {
    /// The pool's counters.
    pub fn counters(&self) -> Counters {
        let h = self.header();
        Counters {
            spawned: h.spawned.load(Ordering::Relaxed),
            exited: h.exited.load(Ordering::Relaxed),
            retired: h.retired.load(Ordering::Relaxed),
            killed: h.killed.load(Ordering::Relaxed),
            fork_failed: h.fork_failed.load(Ordering::Relaxed),
            requests: h.requests.load(Ordering::Relaxed),
            rogue: h.rogue.load(Ordering::Relaxed),
            hung: h.hung.load(Ordering::Relaxed),
            memory: h.memory.load(Ordering::Relaxed),
            vanished: h.vanished.load(Ordering::Relaxed),
            crashed: h.crashed.load(Ordering::Relaxed),
            crash_streak: h.crash_streak.load(Ordering::Relaxed),
            last_crash: match h.crashed.load(Ordering::Relaxed) {
                0 => None,
                _ => Some(h.last_crash.load(Ordering::Relaxed)),
            },
            connections: h.connections.load(Ordering::Relaxed),
            killed_externally: h.killed_externally.load(Ordering::Relaxed),
            misbehaved: h.misbehaved.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn count(&self, counter: Counter) {
        let h = self.header();
        let c = match counter {
            Counter::Spawned => &h.spawned,
            Counter::Exited => &h.exited,
            Counter::Retired => &h.retired,
            Counter::Killed => &h.killed,
            Counter::ForkFailed => &h.fork_failed,
            Counter::Rogue => &h.rogue,
            Counter::Hung => &h.hung,
            Counter::Memory => &h.memory,
            Counter::Vanished => &h.vanished,
            Counter::Connections => &h.connections,
            Counter::KilledExternally => &h.killed_externally,
            Counter::Misbehaved => &h.misbehaved,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Supervisor: publishes the fork-per-request queue and pause state, so
    /// that any process can report them.
    pub(crate) fn set_queue(&self, queued: usize, paused: bool) {
        let h = self.header();
        h.queued.store(queued as u64, Ordering::Relaxed);
        h.paused.store(u32::from(paused), Ordering::Relaxed);
    }

    /// The fork-per-request queue length and pause state.
    pub(crate) fn queue(&self) -> (usize, bool) {
        let h = self.header();
        (
            h.queued.load(Ordering::Relaxed) as usize,
            h.paused.load(Ordering::Relaxed) != 0,
        )
    }

    /// Supervisor: records a young death (`status`: exit code, or minus the
    /// signal) and the current streak.
    pub(crate) fn record_crash(&self, status: i32, streak: u32) {
        let h = self.header();
        h.last_crash.store(status, Ordering::Relaxed);
        h.crashed.fetch_add(1, Ordering::Relaxed);
        h.crash_streak.store(streak, Ordering::Relaxed);
    }

    /// Supervisor: the pool recovered.
    pub(crate) fn clear_crash_streak(&self) {
        self.header().crash_streak.store(0, Ordering::Relaxed);
    }

    /// Supervisor: publishes the spare targets (they change with TTIN/TTOU).
    pub(crate) fn set_spares(&self, min: usize, max: usize) {
        let h = self.header();
        h.min_spare.store(min as u32, Ordering::Relaxed);
        h.max_spare.store(max as u32, Ordering::Relaxed);
    }

    /// The current spare targets, if published.
    pub(crate) fn spares(&self) -> Option<(usize, usize)> {
        let h = self.header();
        let max = h.max_spare.load(Ordering::Relaxed) as usize;
        (max > 0).then(|| (h.min_spare.load(Ordering::Relaxed) as usize, max))
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Spawned,
    Exited,
    Retired,
    Killed,
    ForkFailed,
    Rogue,
    Hung,
    Memory,
    Vanished,
    /// Counted by the `web` feature's servers.
    #[cfg_attr(not(feature = "web"), allow(dead_code))]
    Connections,
    /// A worker ended by a signal the supervisor did not send.
    KilledExternally,
    /// A worker retired for writing nonsense.
    Misbehaved,
}
