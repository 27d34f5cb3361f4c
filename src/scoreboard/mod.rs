//! The scoreboard: one shared memfd mapping, made before the first fork,
//! that every process of the daemon sees at the same address.
//!
//! # Layout
//!
//! A [`Header`] (pool counters, statistics only: nothing there steers the
//! supervisor or a worker) in the first page, then one page per possible
//! worker (`max_children` of them), each starting with its 64-byte
//! [`SlotCell`]. Everything in the mapping is an atomic integer: no
//! pointer, no lock, nothing whose validity depends on the process that
//! wrote it. The memfd is sealed against shrinking and growing.
//!
//! # Who writes what
//!
//! - The supervisor (and the spawner) map the board read-write. The
//!   supervisor takes a slot its registry does not own (`' '` to `F`),
//!   records the worker's pid once the spawner reports it, frees the slot
//!   after reaping the worker, and keeps the header's counters.
//! - Each worker, before anything else runs in it, remaps the board
//!   read-only but for its own slot's page and closes every descriptor of
//!   the memfd (`confine.rs`): it writes only its own slot, its state
//!   (`f`, `.`, `w`, `r`, `l`, `e`) and its own counts (start, requests,
//!   retirement, connections, claims: [`SlotCounter`]). A write anywhere
//!   else is a SIGSEGV in that worker. The supervisor still treats a slot
//!   as a report: it checks it against its registry of children (the pid
//!   it recorded, states that only move on, counts that only grow) and
//!   retires a worker that wrote nonsense. No pid read from here is ever
//!   signalled.
//! - Totals are the header's counts plus every slot's; the supervisor
//!   folds a slot's counts into the header when it frees or takes the
//!   slot, under a sequence lock (`counters.rs`), so a total survives its
//!   worker and no count is lost or doubled.
//! - A worker that crashes leaves its slot as it was; the supervisor frees
//!   it when it reaps the process, so a crashed worker never leaks a slot.
//!
//! # Atomic ordering
//!
//! A state store is `Release` and a state load `Acquire`, so a reader that
//! sees a state also sees the pid, request count and time written before it.
//! The counters are statistics and use `Relaxed` (inside the fold's
//! sequence lock, whose fences order them).
//!
//! # Files
//!
//! Here: the mapping, its layout and the unsafe code that reads it.
//! `confine.rs`: a worker's read-only view. `slot.rs`: the slot types and
//! what reads and writes one slot. `counters.rs`: the header's counters,
//! the slots' counts and their fold. Tests in `tests.rs` and, with random
//! operations, in `properties.rs`.

use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU32, AtomicU64, Ordering};

use nix::fcntl::{FcntlArg, OFlag, SealFlag, fcntl, open};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::sys::stat::Mode;
use nix::time::{ClockId, clock_gettime};
use nix::unistd::ftruncate;

use crate::error::{Error, Result};

mod confine;
mod counters;
mod slot;

pub use self::counters::Counters;
pub(crate) use self::counters::{Counter, SlotCounter};
pub use self::slot::{SlotId, SlotSnapshot};

const MAGIC: u64 = 0x6163_7469_785f_6462; // "actix_db"

/// Pool-wide counters, kept in shared memory so that any process can report
/// them and they survive worker recycling. Written by the supervisor only
/// (read-only in every worker).
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
    /// Odd while the supervisor folds a slot's counts into the header (a
    /// sequence lock: see `counters.rs`).
    fold_seq: AtomicU64,
}

/// One worker's slot, at the start of a page of its own. 64 bytes, aligned
/// to a cache line.
#[repr(C, align(64))]
struct SlotCell {
    state: AtomicU8,
    _pad: [u8; 3],
    pid: AtomicI32,
    /// Requests served by this worker (folded into the header's total when
    /// the slot is freed).
    requests: AtomicU64,
    changed_ms: AtomicU64,
    generation: AtomicU32,
    /// 1 once the worker started (folded into `spawned`).
    spawned: AtomicU32,
    /// The worker retired itself at its request limit.
    retired: AtomicU64,
    /// Connections the worker's server accepted.
    connections: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<SlotCell>() == 64);
const _: () = assert!(std::mem::size_of::<Header>() <= 4096);

/// The name the memfd shows in `/proc/<pid>/maps` and `/proc/<pid>/fd`.
pub(crate) const MEMFD_NAME: &str = "actix-scoreboard";

/// The system's page size (4096 where it cannot be read).
fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n >= 4096 && n.is_power_of_two())
        .unwrap_or(4096)
}

struct Mapping {
    base: NonNull<u8>,
    len: usize,
    /// The page size: the header's page, then one page per slot.
    page: usize,
    /// The memfd, read-write (-1 once closed: in a worker, see `confine`).
    rw: AtomicI32,
    /// The same file opened read-only (-1 once closed).
    ro: AtomicI32,
}

impl Mapping {
    /// Closes both descriptors of the memfd (the mapping stays).
    fn close_fds(&self) {
        for fd in [&self.rw, &self.ro] {
            let fd = fd.swap(-1, Ordering::AcqRel);
            if fd >= 0 {
                // SAFETY: `fd` was taken out of the atomic (swapped for -1),
                // so this is its only owner and it is closed once.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
}

// SAFETY: the mapping holds only atomics, which are safe to share between
// threads; the pointer itself is never written after creation (a worker's
// remap keeps the same address).
unsafe impl Send for Mapping {}
// SAFETY: as above: every access goes through atomic operations.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        self.close_fds();
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

/// Makes the board's memfd: `len` bytes, sealed against shrinking and
/// growing; returns it and a read-only descriptor of the same file.
fn board_file(len: usize) -> Result<(OwnedFd, OwnedFd)> {
    let rw = memfd_create(
        MEMFD_NAME,
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(|err| Error::sys("memfd_create scoreboard", err))?;
    let size =
        i64::try_from(len).map_err(|_| Error::sys("scoreboard size", nix::errno::Errno::EFBIG))?;
    ftruncate(&rw, size).map_err(|err| Error::sys("ftruncate scoreboard", err))?;
    // Nobody resizes the board: a shrink would make every process that
    // reads a slot past the end die of SIGBUS.
    fcntl(
        &rw,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
        ),
    )
    .map_err(|err| Error::sys("seal scoreboard", err))?;
    // A descriptor opened read-only gives mappings without VM_MAYWRITE:
    // mprotect(PROT_WRITE) on them is refused (EACCES).
    let ro = open(
        format!("/proc/self/fd/{}", rw.as_raw_fd()).as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|err| Error::sys("open scoreboard read-only through /proc/self/fd", err))?;
    Ok((rw, ro))
}

impl Scoreboard {
    /// Maps a scoreboard of `slots` slots, all empty: a memfd with the
    /// header in the first page and one page per slot, mapped shared and
    /// read-write.
    ///
    /// # Errors
    ///
    /// [`Error::Sys`] if the memfd or the mapping cannot be made.
    pub(crate) fn new(slots: usize) -> Result<Scoreboard> {
        let page = page_size();
        let len = slots
            .max(1)
            .checked_add(1)
            .and_then(|pages| pages.checked_mul(page))
            .ok_or_else(|| Error::sys("scoreboard size", nix::errno::Errno::EFBIG))?;
        let size = NonZeroUsize::new(len).expect("len is never zero");
        let (rw, ro) = board_file(len)?;
        // SAFETY: a new mapping of a new memfd aliases no existing memory;
        // the file is zero-filled, and all-zero bytes are a valid `Header`
        // and valid `SlotCell`s (every field is an integer or atomic
        // integer, zero is `SlotState::Empty`). The mapping is page aligned,
        // and each cell is at a page boundary (64-byte alignment holds).
        // The file is sealed against shrinking, so no access in range can
        // fault with SIGBUS.
        let base = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &rw,
                0,
            )
        }
        .map_err(|err| Error::sys("mmap scoreboard", err))?;
        let board = Scoreboard {
            map: Arc::new(Mapping {
                base: base.cast(),
                len,
                page,
                rw: AtomicI32::new(rw.into_raw_fd()),
                ro: AtomicI32::new(ro.into_raw_fd()),
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
        // a page, is valid for any bit pattern, and is shared only through
        // atomics (`magic` and `slots` are written once before any other
        // process exists).
        unsafe { &*self.map.base.as_ptr().cast::<Header>() }
    }

    /// The byte offset of `slot`'s page in the board.
    fn slot_offset(&self, slot: SlotId) -> usize {
        self.map.page * (1 + slot.0)
    }

    fn cell(&self, slot: SlotId) -> &SlotCell {
        assert!(slot.0 < self.slots, "slot {slot} out of range");
        // SAFETY: `slot` is in range (asserted above), so its page lies
        // inside the live mapping (`len` is a page per slot plus the
        // header's); a page boundary is 64-byte aligned; it holds only
        // atomics.
        unsafe {
            &*self
                .map
                .base
                .as_ptr()
                .add(self.slot_offset(slot))
                .cast::<SlotCell>()
        }
    }

    /// How many slots there are (`max_children`).
    pub fn len(&self) -> usize {
        self.slots
    }

    /// The descriptor `fd` names, borrowed (`None` once closed).
    fn fd(&self, fd: &AtomicI32) -> Option<BorrowedFd<'_>> {
        let raw: RawFd = fd.load(Ordering::Acquire);
        // SAFETY: a non-negative value is a descriptor this mapping owns; it
        // is closed only by `close_fds`, which the worker calls once, single
        // threaded, after its last use (`confine`).
        (raw >= 0).then(|| unsafe { BorrowedFd::borrow_raw(raw) })
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
