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
//!
//! # Files
//!
//! Here: the mapping, its layout and the unsafe code that reads it.
//! `slot.rs`: the slot types and what reads and writes one slot.
//! `counters.rs`: the header's counters and pool state. Tests in `tests.rs`
//! and, with random operations, in `properties.rs`.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU32, AtomicU64};

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use nix::time::{ClockId, clock_gettime};

use crate::error::{Error, Result};

mod counters;
mod slot;

pub(crate) use self::counters::Counter;
pub use self::counters::Counters;
pub use self::slot::{SlotId, SlotSnapshot};

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
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
