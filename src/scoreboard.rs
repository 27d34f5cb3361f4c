//! The scoreboard: one shared anonymous mapping, made before the first fork,
//! that every process of the daemon sees at the same address.
//!
//! # Layout
//!
//! A [`Header`] (pool counters, statistics only: nothing there steers the
//! supervisor or a worker), then one 64-byte
//! [`SlotCell`] per possible worker (`max_children` of them). Everything in
//! the mapping is an atomic integer: no pointer, no lock, nothing whose
//! validity depends on the process that wrote it.
//!
//! # Who writes what
//!
//! - The supervisor takes a slot its registry does not own (`' '` to `F`),
//!   records the worker's pid once the spawner reports it, frees the slot
//!   after reaping the worker, and keeps the header's counters.
//! - A worker writes its own slot: its state (`f`, `.`, `w`, `r`, `l`, `e`)
//!   and its request count. Today every worker could write every slot
//!   (one shared mapping); the supervisor therefore treats the whole board
//!   as a report: it checks each slot against its registry of children
//!   (the pid it recorded, states that only move on, counts that only
//!   grow), retires a worker that wrote nonsense and clears a slot no
//!   registered worker owns. No pid read from here is ever signalled.
//! - A worker that crashes leaves its slot as it was; the supervisor frees
//!   it when it reaps the process, so a crashed worker never leaks a slot.
//!
//! # Atomic ordering
//!
//! A state store is `Release` and a state load `Acquire`, so a reader that
//! sees a state also sees the pid, request count and time written before it.
//! The counters are statistics and use `Relaxed`.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU32, AtomicU64, Ordering};

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use nix::time::{ClockId, clock_gettime};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::state::SlotState;

const MAGIC: u64 = 0x6163_7469_785f_6462; // "actix_db"

/// Pool-wide counters, kept in shared memory so that any process can report
/// them and they survive worker recycling.
#[repr(C)]
struct Header {
    magic: u64,
    slots: u64,
    killed_externally: AtomicU64,
    misbehaved: AtomicU64,
    spawned: AtomicU64,
    exited: AtomicU64,
    retired: AtomicU64,
    killed: AtomicU64,
    fork_failed: AtomicU64,
    requests: AtomicU64,
    queued: AtomicU64,
    paused: AtomicU32,
    crash_streak: AtomicU32,
    rogue: AtomicU64,
    hung: AtomicU64,
    memory: AtomicU64,
    vanished: AtomicU64,
    crashed: AtomicU64,
    last_crash: AtomicI32,
    min_spare: AtomicU32,
    max_spare: AtomicU32,
    connections: AtomicU64,
    claimed: AtomicU64,
}

/// One worker's slot. 64 bytes and aligned to a cache line, so that workers
/// writing their own slots never contend.
#[repr(C, align(64))]
struct SlotCell {
    state: AtomicU8,
    _pad: [u8; 3],
    pid: AtomicI32,
    requests: AtomicU64,
    changed_ms: AtomicU64,
    generation: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<SlotCell>() == 64);
const HEADER_SPACE: usize = 192;
const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SPACE);

/// The index of a scoreboard slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SlotId(pub usize);

impl std::fmt::Display for SlotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl slog::Value for SlotId {
    fn serialize(
        &self,
        _record: &slog::Record<'_>,
        key: slog::Key,
        serializer: &mut dyn slog::Serializer,
    ) -> slog::Result {
        serializer.emit_usize(key, self.0)
    }
}

/// What a slot held when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SlotSnapshot {
    /// The slot's index.
    pub slot: SlotId,
    /// Its state.
    pub state: SlotState,
    /// The worker's pid (0 while none is known).
    pub pid: i32,
    /// Requests this worker has served.
    pub requests: u64,
    /// Milliseconds since the last state change.
    pub in_state_ms: u64,
}

/// One slot's words, unchecked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawSlot {
    pub(crate) state: u8,
    pub(crate) pid: i32,
    pub(crate) requests: u64,
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

struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping holds only atomics, which are safe to share between
// threads; the pointer itself is never written after creation.
unsafe impl Send for Mapping {}
// SAFETY: as above: every access goes through atomic operations.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are exactly what mmap returned, and no
        // reference into the mapping outlives `Mapping` (every accessor
        // borrows `self`). Unmapping affects only this process.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

/// The shared scoreboard. Cloning is cheap and refers to the same mapping.
#[derive(Clone)]
pub struct Scoreboard {
    map: Arc<Mapping>,
    slots: usize,
}

impl std::fmt::Debug for Scoreboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoreboard")
            .field("slots", &self.slots)
            .finish()
    }
}

pub(crate) fn now_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|ts| ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

impl Scoreboard {
    /// Maps a scoreboard of `slots` slots, all empty.
    ///
    /// # Errors
    ///
    /// [`Error::Sys`] if the mapping cannot be made.
    pub(crate) fn new(slots: usize) -> Result<Scoreboard> {
        let len = HEADER_SPACE + slots.max(1) * std::mem::size_of::<SlotCell>();
        let size = NonZeroUsize::new(len).expect("len is never zero");
        // SAFETY: an anonymous mapping aliases no existing memory; the kernel
        // zero-fills it, and all-zero bytes are a valid `Header` and valid
        // `SlotCell`s (every field is an integer or atomic integer, zero is
        // `SlotState::Empty`). The mapping is page aligned, which satisfies
        // the 64-byte alignment of `SlotCell` at offset `HEADER_SPACE`.
        let base = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(|err| Error::sys("mmap scoreboard", err))?;
        let board = Scoreboard {
            map: Arc::new(Mapping {
                base: base.cast(),
                len,
            }),
            slots,
        };
        // SAFETY: nothing else has seen the mapping yet; these are plain
        // initialising writes to memory we own exclusively.
        unsafe {
            let header = board.map.base.as_ptr().cast::<Header>();
            (*header).magic = MAGIC;
            (*header).slots = slots as u64;
        }
        Ok(board)
    }

    fn header(&self) -> &Header {
        // SAFETY: the header lies at the start of a live mapping of at least
        // `HEADER_SPACE` bytes, is valid for any bit pattern, and is shared
        // only through atomics (`magic` and `slots` are written once before
        // any other process exists).
        unsafe { &*self.map.base.as_ptr().cast::<Header>() }
    }

    fn cell(&self, slot: SlotId) -> &SlotCell {
        assert!(slot.0 < self.slots, "slot {slot} out of range");
        // SAFETY: `slot` is in range (asserted above), so the cell lies inside
        // the live mapping, aligned to 64 bytes; it holds only atomics.
        unsafe {
            &*self
                .map
                .base
                .as_ptr()
                .add(HEADER_SPACE)
                .cast::<SlotCell>()
                .add(slot.0)
        }
    }

    /// How many slots there are (`max_children`).
    pub fn len(&self) -> usize {
        self.slots
    }

    /// A slot's state.
    pub fn state(&self, slot: SlotId) -> SlotState {
        SlotState::from_u8(self.cell(slot).state.load(Ordering::Acquire))
            .unwrap_or(SlotState::Empty)
    }

    /// A slot's pid (0 while none is known).
    #[cfg(test)]
    pub fn pid(&self, slot: SlotId) -> i32 {
        self.cell(slot).pid.load(Ordering::Acquire)
    }

    /// Requests served by the worker in `slot`.
    #[cfg(test)]
    pub fn requests(&self, slot: SlotId) -> u64 {
        self.cell(slot).requests.load(Ordering::Relaxed)
    }

    /// Sets a slot's state and the time of the change.
    pub(crate) fn set_state(&self, slot: SlotId, state: SlotState) {
        let cell = self.cell(slot);
        cell.changed_ms.store(now_ms(), Ordering::Relaxed);
        cell.state.store(state as u8, Ordering::Release);
    }

    pub(crate) fn set_pid(&self, slot: SlotId, pid: i32) {
        self.cell(slot).pid.store(pid, Ordering::Release);
    }

    /// Counts one request served in `slot` and in the pool.
    pub(crate) fn count_request(&self, slot: SlotId) -> u64 {
        self.count_requests(slot, 1)
    }

    /// Counts `n` requests served in `slot` and in the pool; returns the
    /// slot's new total.
    pub(crate) fn count_requests(&self, slot: SlotId, n: u64) -> u64 {
        self.header().requests.fetch_add(n, Ordering::Relaxed);
        self.cell(slot).requests.fetch_add(n, Ordering::Relaxed) + n
    }

    /// Restarts a slot's time in state without changing the state (a busy
    /// worker that made progress).
    pub(crate) fn touch(&self, slot: SlotId) {
        self.cell(slot)
            .changed_ms
            .store(now_ms(), Ordering::Relaxed);
    }

    /// Supervisor: marks `slot` (one its registry does not own) `F`, with
    /// no pid and no requests.
    pub(crate) fn init(&self, slot: SlotId) {
        let cell = self.cell(slot);
        cell.pid.store(0, Ordering::Relaxed);
        cell.requests.store(0, Ordering::Relaxed);
        cell.generation.fetch_add(1, Ordering::Relaxed);
        self.set_state(slot, SlotState::Forking);
    }

    /// Tests and benches: takes the first empty slot and marks it `F` (the
    /// supervisor takes slots by its registry, not by what the board says).
    pub(crate) fn allocate(&self) -> Option<SlotId> {
        let slot = (0..self.slots)
            .map(SlotId)
            .find(|&slot| self.state(slot) == SlotState::Empty)?;
        self.init(slot);
        Some(slot)
    }

    /// Test aid (see `bench_support::SlotForger`): writes any pid and any
    /// state byte, as a compromised worker could.
    pub(crate) fn forge(&self, slot: SlotId, pid: i32, state: u8) {
        let cell = self.cell(slot);
        cell.pid.store(pid, Ordering::Release);
        cell.state.store(state, Ordering::Release);
    }

    /// What a slot holds, as raw as it was written (the supervisor checks
    /// it against its registry).
    pub(crate) fn raw(&self, slot: SlotId) -> RawSlot {
        let cell = self.cell(slot);
        RawSlot {
            state: cell.state.load(Ordering::Acquire),
            pid: cell.pid.load(Ordering::Relaxed),
            requests: cell.requests.load(Ordering::Relaxed),
        }
    }

    /// Supervisor: frees a slot after its worker was reaped.
    pub(crate) fn free(&self, slot: SlotId) {
        let cell = self.cell(slot);
        cell.pid.store(0, Ordering::Relaxed);
        self.set_state(slot, SlotState::Empty);
    }

    /// Reads one slot.
    pub fn snapshot(&self, slot: SlotId) -> SlotSnapshot {
        self.snapshot_at(slot, now_ms())
    }

    fn snapshot_at(&self, slot: SlotId, now: u64) -> SlotSnapshot {
        let cell = self.cell(slot);
        let state = self.state(slot);
        SlotSnapshot {
            slot,
            state,
            pid: cell.pid.load(Ordering::Relaxed),
            requests: cell.requests.load(Ordering::Relaxed),
            in_state_ms: match cell.changed_ms.load(Ordering::Relaxed) {
                0 => 0,
                changed => now.saturating_sub(changed),
            },
        }
    }

    /// Reads every slot (with one reading of the clock).
    pub fn snapshots(&self) -> Vec<SlotSnapshot> {
        let now = now_ms();
        (0..self.slots)
            .map(|i| self.snapshot_at(SlotId(i), now))
            .collect()
    }

    /// How many slots are in each state, indexed by `SlotState as usize`.
    #[cfg(test)]
    pub(crate) fn tally(&self) -> [usize; 8] {
        let mut tally = [0; 8];
        for i in 0..self.slots {
            tally[self.state(SlotId(i)) as usize] += 1;
        }
        tally
    }

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
            Counter::Claimed => &h.claimed,
            Counter::KilledExternally => &h.killed_externally,
            Counter::Misbehaved => &h.misbehaved,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Fork per request: requests workers have taken from the dispatch
    /// socket since start.
    pub(crate) fn claimed(&self) -> u64 {
        self.header().claimed.load(Ordering::Acquire)
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

    /// The `Slots [ ... ]` line of the status report.
    pub fn slots_line(&self) -> String {
        let mut line = String::with_capacity(8 + 2 * self.slots);
        line.push_str("Slots [");
        for i in 0..self.slots {
            line.push(' ');
            line.push(self.state(SlotId(i)).letter());
        }
        line.push_str(" ]");
        line
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
    /// Fork per request: requests taken from the dispatch socket.
    Claimed,
    /// A worker ended by a signal the supervisor did not send.
    KilledExternally,
    /// A worker retired for writing nonsense.
    Misbehaved,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_free_and_states() {
        let board = Scoreboard::new(3).unwrap();
        assert_eq!(board.slots_line(), "Slots [       ]");
        let a = board.allocate().unwrap();
        let b = board.allocate().unwrap();
        assert_eq!((a, b), (SlotId(0), SlotId(1)));
        board.set_pid(a, 42);
        board.set_state(a, SlotState::Req);
        board.set_state(b, SlotState::Wait);
        assert_eq!(board.slots_line(), "Slots [ r w   ]");
        assert_eq!(board.count_request(a), 1);
        assert_eq!(board.snapshot(a).pid, 42);
        board.free(a);
        assert_eq!(board.state(a), SlotState::Empty);
        assert_eq!(board.pid(a), 0);
        let c = board.allocate().unwrap();
        assert_eq!(c, a, "a freed slot is reused");
        assert_eq!(
            board.requests(c),
            0,
            "a reused slot starts at zero requests"
        );
        board.allocate().unwrap();
        assert_eq!(board.allocate(), None, "full");
        let tally = board.tally();
        assert_eq!(tally[SlotState::Forking as usize], 2);
        assert_eq!(tally[SlotState::Wait as usize], 1);
        assert_eq!(board.counters().requests, 1);
    }

    #[test]
    fn shared_across_fork() {
        // The mapping must be shared, not copied, across fork. The child
        // does nothing but atomic stores and _exit (async-signal-safe).
        let board = Scoreboard::new(2).unwrap();
        let slot = board.allocate().unwrap();
        let pid = crate::process::test_fork(|| {
            board.set_pid(slot, 7);
            board.set_state(slot, SlotState::Long);
        });
        assert!(pid > 0);
        assert_eq!(board.state(slot), SlotState::Long);
        assert_eq!(board.pid(slot), 7);
    }
}

#[cfg(test)]
mod properties {
    //! Random sequences of spawns, status updates, exits and signals driven
    //! through the scoreboard and the worker transition table: no slot is
    //! lost or doubled, and every letter keeps the manual's meaning.

    use super::*;
    use crate::state::{Step, UpdateKind, worker_step};
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// The supervisor wants a worker.
        Spawn,
        /// The spawner reports the worker for the n-th used slot.
        Started(usize),
        /// A worker sends an update.
        Update(usize, UpdateKind),
        /// SIGTERM to a worker: it exits once idle (at once if not busy).
        Term(usize),
        /// A worker process ends (any state: crash, kill, normal exit) and is reaped.
        Exit(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let kind = prop_oneof![
            Just(UpdateKind::Req),
            Just(UpdateKind::Long),
            Just(UpdateKind::Wait),
            Just(UpdateKind::Done),
            Just(UpdateKind::Served),
        ];
        prop_oneof![
            2 => Just(Op::Spawn),
            2 => (0..8usize).prop_map(Op::Started),
            6 => ((0..8usize), kind).prop_map(|(n, k)| Op::Update(n, k)),
            1 => (0..8usize).prop_map(Op::Term),
            2 => (0..8usize).prop_map(Op::Exit),
        ]
    }

    proptest! {
        #[test]
        fn no_slot_is_lost_or_doubled(ops in proptest::collection::vec(op(), 1..200), prefork: bool, limit in 1u64..4) {
            let slots = 6;
            let board = Scoreboard::new(slots).unwrap();
            // The model: which slots hold a worker, and its pid.
            let mut used: Vec<Option<i32>> = vec![None; slots];
            let mut next_pid = 100;
            let mut served = vec![0u64; slots];
            for op in ops {
                let nth_used = |n: usize, used: &[Option<i32>]| {
                    let live: Vec<usize> = (0..slots).filter(|&i| used[i].is_some()).collect();
                    (!live.is_empty()).then(|| live[n % live.len()])
                };
                match op {
                    Op::Spawn => {
                        let free = used.iter().filter(|u| u.is_none()).count();
                        match board.allocate() {
                            Some(slot) => {
                                prop_assert!(used[slot.0].is_none(), "slot {} doubled", slot.0);
                                prop_assert_eq!(board.state(slot), SlotState::Forking);
                                used[slot.0] = Some(0);
                                served[slot.0] = 0;
                            }
                            None => prop_assert_eq!(free, 0, "a free slot was lost"),
                        }
                    }
                    Op::Started(n) => {
                        if let Some(i) = nth_used(n, &used) {
                            let slot = SlotId(i);
                            if board.state(slot) == SlotState::Forking {
                                next_pid += 1;
                                used[i] = Some(next_pid);
                                board.set_pid(slot, next_pid);
                                board.set_state(slot, if prefork { SlotState::Starting } else { SlotState::Req });
                            }
                        }
                    }
                    Op::Update(n, kind) => {
                        if let Some(i) = nth_used(n, &used) {
                            let slot = SlotId(i);
                            let before = board.state(slot);
                            match worker_step(prefork, before, kind) {
                                Step::To(next) => board.set_state(slot, next),
                                Step::Finish => {
                                    served[i] = board.count_request(slot);
                                    let done = !prefork || served[i] >= limit;
                                    board.set_state(slot, if done { SlotState::Exit } else { SlotState::Wait });
                                }
                                Step::Count => {
                                    // Served(1) while busy: counted, and the
                                    // state stays unless the limit is reached.
                                    served[i] = board.count_requests(slot, 1);
                                    if prefork && served[i] >= limit {
                                        board.set_state(slot, SlotState::Exit);
                                    } else {
                                        board.touch(slot);
                                        prop_assert_eq!(board.state(slot), before, "Served changed the state");
                                    }
                                }
                                Step::Stay | Step::Invalid => {
                                    prop_assert_eq!(board.state(slot), before, "an ignored update changed the slot");
                                }
                            }
                        }
                    }
                    Op::Term(n) => {
                        if let Some(i) = nth_used(n, &used) {
                            let slot = SlotId(i);
                            let state = board.state(slot);
                            if !state.is_busy() && !matches!(state, SlotState::Forking) {
                                board.set_state(slot, SlotState::Exit);
                            }
                        }
                    }
                    Op::Exit(n) => {
                        if let Some(i) = nth_used(n, &used) {
                            board.free(SlotId(i));
                            used[i] = None;
                        }
                    }
                }
                // Invariants, after every step.
                for (i, held) in used.iter().enumerate() {
                    let slot = SlotId(i);
                    let state = board.state(slot);
                    prop_assert_eq!(state == SlotState::Empty, held.is_none(), "slot {} out of step", i);
                    prop_assert!(" Ff.wrle".contains(state.letter()));
                    match state {
                        // The parent side of a fork: no worker pid yet.
                        SlotState::Forking => prop_assert_eq!(board.snapshot(slot).pid, 0),
                        SlotState::Empty => prop_assert_eq!(board.snapshot(slot).pid, 0),
                        // Any other letter is a live worker with its pid.
                        _ => prop_assert_eq!(Some(board.snapshot(slot).pid), *held),
                    }
                    if !prefork {
                        prop_assert!(!state.is_idle(), "a fork-per-request worker never waits");
                    }
                    if state == SlotState::FirstWait {
                        prop_assert_eq!(board.snapshot(slot).requests, 0, "'.' means before the first request");
                    }
                }
                let tally = board.tally();
                prop_assert_eq!(tally.iter().sum::<usize>(), slots);
                prop_assert_eq!(slots - tally[SlotState::Empty as usize], used.iter().filter(|u| u.is_some()).count());
            }
        }
    }
}
