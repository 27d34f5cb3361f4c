//! A worker's view of the board: everything read-only but its own slot.
//!
//! Called once in each new worker, single-threaded, before its runtime and
//! before the application runs ([`Scoreboard::confine_to`]). After it:
//!
//! - the whole board is mapped `PROT_READ` from a descriptor opened
//!   `O_RDONLY`, at the same address as before (`MAP_FIXED`), so the
//!   mapping has no `VM_MAYWRITE` and `mprotect(PROT_WRITE)` on it fails
//!   with `EACCES`;
//! - the worker's own slot page is mapped `PROT_READ | PROT_WRITE` from the
//!   read-write descriptor, at its place in the board;
//! - both descriptors of the memfd are closed: the worker holds nothing
//!   through which it could map the board writable again. (The memfd is
//!   sealed against resizing besides.)
//!
//! A write anywhere else in the board (another slot, the header) is a
//! `SIGSEGV` in that worker alone.

use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags, mmap};

use super::{Scoreboard, SlotId};
use crate::error::{Error, Result};

impl Scoreboard {
    /// Worker, before anything else runs in it: remaps the board read-only
    /// at its address, maps `slot`'s page writable, and closes every
    /// descriptor of the memfd. Every accessor keeps working; writes
    /// outside `slot` fault.
    ///
    /// Allocates nothing on success, so it may run right after a fork.
    ///
    /// # Errors
    ///
    /// [`Error::Sys`] if `slot` is out of range, the descriptors are gone
    /// (confined already) or a mapping fails. The worker must not run then:
    /// on a failed remap the board may be partly unmapped.
    pub(crate) fn confine_to(&self, slot: SlotId) -> Result<()> {
        if slot.0 >= self.slots {
            return Err(Error::sys("confine scoreboard: slot", Errno::EINVAL));
        }
        let (Some(rw), Some(ro)) = (self.fd(&self.map.rw), self.fd(&self.map.ro)) else {
            return Err(Error::sys("confine scoreboard: descriptors", Errno::EBADF));
        };
        let whole = NonZeroUsize::new(self.map.len).expect("len is never zero");
        let page = NonZeroUsize::new(self.map.page).expect("page is never zero");
        let base = self.map.base.as_ptr();
        let offset = self.slot_offset(slot);
        // SAFETY: MAP_FIXED over exactly the board's own mapping (same
        // address, same length, same file, offset 0): the memory it
        // replaces is ours, and every reference into it sees the same
        // bytes after (the same shared file pages), only read-only. This
        // process is single-threaded here (a new worker before its
        // runtime), so no other thread writes the board between the two
        // mappings.
        unsafe { remap(base, whole, ProtFlags::PROT_READ, ro, 0)? };
        // SAFETY: `offset` is the start of `slot`'s page, inside the board
        // (the slot is in range, checked above), page aligned; the same
        // file page as before, made writable again for this worker alone.
        unsafe {
            remap(
                base.add(offset),
                page,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                rw,
                offset,
            )?;
        }
        self.map.close_fds();
        Ok(())
    }
}

/// `mmap(addr, len, prot, MAP_SHARED | MAP_FIXED, fd, offset)`, checked to
/// land at `addr`.
///
/// # Safety
///
/// `addr..addr + len` must lie inside the board's mapping, and `fd` at
/// `offset` must be the board's file at that same place, so that the
/// memory keeps its contents and only its protection changes.
unsafe fn remap(
    addr: *mut u8,
    len: NonZeroUsize,
    prot: ProtFlags,
    fd: BorrowedFd<'_>,
    offset: usize,
) -> Result<()> {
    let at = NonZeroUsize::new(addr as usize).expect("the board is mapped");
    let offset =
        i64::try_from(offset).map_err(|_| Error::sys("remap scoreboard", Errno::EINVAL))?;
    // SAFETY: per this function's contract the range is the board's own,
    // replaced by the same file's pages; no Rust object other than the
    // board's atomics lives there.
    let got = unsafe {
        mmap(
            Some(at),
            len,
            prot,
            MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
            fd,
            offset,
        )
    }
    .map_err(|err| Error::sys("remap scoreboard", err))?;
    if got.as_ptr().cast::<u8>() != addr {
        return Err(Error::sys("remap scoreboard: address moved", Errno::EFAULT));
    }
    Ok(())
}
