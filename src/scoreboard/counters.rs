//! The pool-wide counters and state in the scoreboard's header, and the
//! counts each worker keeps in its own slot.
//!
//! The header is the supervisor's alone (read-only in workers). What a
//! worker counts (its start, its requests, its own retirement, the
//! connections it accepted) goes into its own
//! slot; a total is the header's count plus every slot's. When the
//! supervisor frees a slot (after reaping its worker) or takes it for a
//! new worker, it folds the slot's counts into the header and zeroes them,
//! inside a sequence lock (`fold_seq`, odd while folding): a reader that
//! saw the lock move reads again, so no count is lost or seen twice across
//! a fold.

use std::sync::atomic::{AtomicU64, Ordering, fence};

use serde::Serialize;

use super::{Scoreboard, SlotId};

/// Reads of the totals a reader retries while folds go on, before it takes
/// one that may be off by the fold in progress (a supervisor that died in
/// the middle of one must not hang a reporting worker).
const FOLD_RETRIES: usize = 1000;

/// The counts that live in the slots, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SlotTotals {
    pub(crate) spawned: u64,
    pub(crate) requests: u64,
    pub(crate) retired: u64,
    pub(crate) connections: u64,
}

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
        let t = self.totals();
        Counters {
            spawned: t.spawned,
            exited: h.exited.load(Ordering::Relaxed),
            retired: t.retired,
            killed: h.killed.load(Ordering::Relaxed),
            fork_failed: h.fork_failed.load(Ordering::Relaxed),
            requests: t.requests,
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
            connections: t.connections,
            killed_externally: h.killed_externally.load(Ordering::Relaxed),
            misbehaved: h.misbehaved.load(Ordering::Relaxed),
        }
    }

    /// Supervisor: counts one in a header counter.
    pub(crate) fn count(&self, counter: Counter) {
        let h = self.header();
        let c = match counter {
            Counter::Exited => &h.exited,
            Counter::Retired => &h.retired,
            Counter::Killed => &h.killed,
            Counter::ForkFailed => &h.fork_failed,
            Counter::Rogue => &h.rogue,
            Counter::Hung => &h.hung,
            Counter::Memory => &h.memory,
            Counter::Vanished => &h.vanished,
            Counter::KilledExternally => &h.killed_externally,
            Counter::Misbehaved => &h.misbehaved,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Worker: counts one in its own slot (the only part of the board it
    /// can write).
    pub(crate) fn count_own(&self, slot: SlotId, counter: SlotCounter) {
        let cell = self.cell(slot);
        match counter {
            SlotCounter::Spawned => {
                cell.spawned.fetch_add(1, Ordering::Relaxed);
            }
            SlotCounter::Retired => {
                cell.retired.fetch_add(1, Ordering::Relaxed);
            }
            SlotCounter::Connections => {
                cell.connections.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The header's part and every slot's part of the worker-written
    /// counts, summed at one point of the fold sequence.
    pub(crate) fn totals(&self) -> SlotTotals {
        let seq = &self.header().fold_seq;
        for _ in 0..FOLD_RETRIES {
            let before = seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let totals = self.read_totals();
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == before {
                return totals;
            }
        }
        self.read_totals()
    }

    fn read_totals(&self) -> SlotTotals {
        let h = self.header();
        let mut t = SlotTotals {
            spawned: h.spawned.load(Ordering::Relaxed),
            requests: h.requests.load(Ordering::Relaxed),
            retired: h.retired.load(Ordering::Relaxed),
            connections: h.connections.load(Ordering::Relaxed),
        };
        for i in 0..self.slots {
            let cell = self.cell(SlotId(i));
            t.spawned += u64::from(cell.spawned.load(Ordering::Relaxed));
            t.requests += cell.requests.load(Ordering::Relaxed);
            t.retired += cell.retired.load(Ordering::Relaxed);
            t.connections += cell.connections.load(Ordering::Relaxed);
        }
        t
    }

    /// Supervisor, for a slot no live worker writes (its worker was reaped,
    /// or it is being taken for a new one): moves the slot's counts into
    /// the header, inside the fold sequence. Only the supervisor calls it,
    /// from one thread.
    pub(crate) fn fold(&self, slot: SlotId) {
        let h = self.header();
        let cell = self.cell(slot);
        let seq = h.fold_seq.load(Ordering::Relaxed);
        h.fold_seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        let moves: [(&AtomicU64, &AtomicU64); 3] = [
            (&cell.requests, &h.requests),
            (&cell.retired, &h.retired),
            (&cell.connections, &h.connections),
        ];
        for (from, to) in moves {
            let n = from.swap(0, Ordering::Relaxed);
            to.fetch_add(n, Ordering::Relaxed);
        }
        let started = cell.spawned.swap(0, Ordering::Relaxed);
        h.spawned.fetch_add(u64::from(started), Ordering::Relaxed);
        h.fold_seq.store(seq.wrapping_add(2), Ordering::Release);
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

/// The header's counters: the supervisor's to write.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Exited,
    Retired,
    Killed,
    ForkFailed,
    Rogue,
    Hung,
    Memory,
    Vanished,
    /// A worker ended by a signal the supervisor did not send.
    KilledExternally,
    /// A worker retired for writing nonsense.
    Misbehaved,
}

/// What a worker counts, in its own slot.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SlotCounter {
    /// The worker started (once).
    Spawned,
    /// The worker retired itself at its request limit.
    Retired,
    /// Counted by the `web` feature's servers.
    #[cfg_attr(not(feature = "web"), allow(dead_code))]
    Connections,
}
