//! A slot: its index, what reading it gives, and the scoreboard's
//! operations on one slot.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{Scoreboard, now_ms};
use crate::state::SlotState;

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

impl Scoreboard {
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

    /// Counts `n` requests served in `slot` (the pool's total is the sum
    /// of the slots' and what the header folded); returns the slot's new
    /// total.
    pub(crate) fn count_requests(&self, slot: SlotId, n: u64) -> u64 {
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
    /// no pid and no requests (whatever the slot still counted is folded
    /// into the header first).
    pub(crate) fn init(&self, slot: SlotId) {
        self.fold(slot);
        let cell = self.cell(slot);
        cell.pid.store(0, Ordering::Relaxed);
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
    /// state byte, as a compromised worker could into its own slot (into
    /// any other slot, in a confined worker, it faults).
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

    /// Supervisor: frees a slot after its worker was reaped, folding the
    /// worker's counts into the header.
    pub(crate) fn free(&self, slot: SlotId) {
        self.fold(slot);
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
