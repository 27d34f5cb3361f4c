//! Process file descriptors: how the supervisor names its children.
//!
//! A pid is only a number: once its process is reaped, the kernel may give
//! it to any other process. A pidfd refers to one process for as long as it
//! is open, so a signal sent through it (`pidfd_send_signal`) can only reach
//! that process, or fail with `ESRCH` once it is gone. Every signal the
//! supervisor sends to a child goes through a pidfd opened while the pid
//! could not have been reused: by the child's parent before it could reap
//! the child (the spawner's intermediate, for a worker), or by the
//! supervisor for a child of its own that it has not reaped yet.
//!
//! Linux 5.3 or later (`pidfd_open` and `pidfd_send_signal`);
//! [`check_support`] refuses to start elsewhere.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// A pidfd with the pid it was opened for.
#[derive(Debug)]
pub(crate) struct Pidfd {
    fd: OwnedFd,
    pid: Pid,
}

impl Pidfd {
    /// Opens a pidfd for `pid`. Race-free only while `pid` is an unreaped
    /// child of this process (or of the caller's process tree in a way the
    /// caller states at the call site).
    pub(crate) fn open(pid: Pid) -> io::Result<Pidfd> {
        // SAFETY: pidfd_open takes a pid and a flags word and returns a new
        // descriptor or -1; it reads and writes no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this new descriptor; nothing else
        // owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Pidfd { fd, pid })
    }

    /// Takes a pidfd received over a socket (`SCM_RIGHTS`), and reads the
    /// pid it refers to from the kernel (`/proc/self/fdinfo`), not from the
    /// sender's words.
    pub(crate) fn from_received(fd: OwnedFd) -> io::Result<Pidfd> {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
        let pid = info
            .lines()
            .find_map(|line| line.strip_prefix("Pid:"))
            .and_then(|v| v.trim().parse::<i32>().ok())
            .filter(|&pid| pid > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a live pidfd"))?;
        Ok(Pidfd {
            fd,
            pid: Pid::from_raw(pid),
        })
    }

    /// The pid this pidfd was opened for.
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// Sends `sig` to the process, and only to it. `ESRCH` once it has
    /// exited.
    pub(crate) fn signal(&self, sig: Signal) -> io::Result<()> {
        // SAFETY: pidfd_send_signal reads only its arguments: our open
        // pidfd, a signal number, a null siginfo (the kernel fills in the
        // same as kill(2)) and zero flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Refuses to start where pidfds are missing (Linux before 5.3, or a
/// seccomp filter that forbids them): the supervisor would have no safe
/// way to signal its children.
pub(crate) fn check_support() -> Result<()> {
    let me = Pidfd::open(nix::unistd::getpid()).map_err(|source| Error::PidfdUnsupported {
        call: "pidfd_open",
        source,
    })?;
    // Signal 0 checks that the call exists and is allowed, and sends nothing.
    // SAFETY: as in `Pidfd::signal`, with signal 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            me.fd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(Error::PidfdUnsupported {
            call: "pidfd_send_signal",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_signals_its_process_and_reads_its_pid_from_the_kernel() {
        check_support().expect("pidfd on this kernel");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = Pid::from_raw(child.id() as i32);
        let pidfd = Pidfd::open(pid).expect("open");
        // A copy as if received over a socket: the pid comes from fdinfo.
        let copy = Pidfd::from_received(pidfd.fd.try_clone().unwrap()).unwrap();
        assert_eq!(copy.pid(), pid);
        copy.signal(Signal::SIGKILL).expect("signal");
        // Another test's in-process supervisor may reap it first (ECHILD).
        if let Ok(status) = child.wait() {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(libc::SIGKILL));
        }
        // Reaped: the pidfd now refers to no process, and never to another.
        let err = pidfd.signal(Signal::SIGTERM).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }
}
