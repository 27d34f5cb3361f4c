//! Descriptor hygiene: the descriptors this process inherited from whoever
//! launched it, and that the application did not declare, are closed in
//! `run` before anything forks, so that neither the supervisor, the spawner
//! nor any worker holds them (DESIGN.md invariant 8).
//!
//! # Which descriptors are "inherited"
//!
//! A descriptor that crossed the `execve` that started this program has its
//! close-on-exec flag clear: `execve` closes every descriptor that has it.
//! Everything Rust's standard library, tokio, socket2 and nix open is
//! opened close-on-exec, and so is everything this crate opens. So at the
//! start of `run`, a descriptor (above stderr) **without** `FD_CLOEXEC` is
//! one the launching process passed (a shell's `7<secret`, a leaked pipe, a
//! jobserver) or one the program deliberately made inheritable (`dup2`,
//! `fcntl`, a C library that opens without `O_CLOEXEC`). It is closed,
//! unless:
//!
//! - the application named it ([`DaemonBuilder::keep_fd`]), or as a
//!   listener for binary upgrades ([`DaemonBuilder::upgrade_with`]);
//! - it is one of systemd's socket-activation descriptors (`LISTEN_FDS`,
//!   from 3, when `LISTEN_PID` is this process) not yet taken with
//!   [`listen_fds`](crate::listen_fds);
//! - it is a binary upgrade's hand-over: its listeners
//!   (`ACTIX_DAEMON_UPGRADE_FDS`, from 3) or its readiness pipe
//!   (`ACTIX_DAEMON_UPGRADE_READY_FD`).
//!
//! Descriptors with `FD_CLOEXEC` set are the program's own (opened, or
//! adopted as [`listen_fds`](crate::listen_fds) adopts systemd's), and are
//! left alone: an application's listener bound before `run` stays open
//! without being declared.
//!
//! [`DaemonBuilder::keep_fd`]: crate::DaemonBuilder::keep_fd
//! [`DaemonBuilder::upgrade_with`]: crate::DaemonBuilder::upgrade_with

use std::ops::Range;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

use super::{UPGRADE_FDS, UPGRADE_READY_FD};
use crate::error::{Error, Result};

/// Why a descriptor stays open through the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// stdin, stdout or stderr.
    Stdio,
    /// Close-on-exec: the program's own.
    Own,
    /// Named by the application (`keep_fd`, `upgrade_with`).
    Declared,
    /// systemd socket activation, not yet taken.
    Activation,
    /// A binary upgrade's listener, not yet taken.
    UpgradeListener,
    /// A binary upgrade's readiness pipe.
    UpgradeReady,
}

/// What the sweep keeps besides stdio and close-on-exec descriptors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeepSet {
    declared: Vec<RawFd>,
    activation: Range<RawFd>,
    upgrade: Range<RawFd>,
    upgrade_ready: Option<RawFd>,
}

/// `3..3 + n` for a count read from the environment; empty if it is not a
/// positive number. Saturates: a huge count keeps everything above 2,
/// which is what the service manager asked for.
fn from_three(count: Option<&str>) -> Range<RawFd> {
    match count.and_then(|n| n.trim().parse::<RawFd>().ok()) {
        Some(n) if n > 0 => 3..n.saturating_add(3),
        _ => 3..3,
    }
}

impl KeepSet {
    /// From the declared descriptors and the environment (`var` reads a
    /// variable; `pid` is this process's id, for `LISTEN_PID`).
    pub(crate) fn new(
        declared: &[RawFd],
        var: impl Fn(&str) -> Option<String>,
        pid: u32,
    ) -> KeepSet {
        let activated = var("LISTEN_PID")
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|p| p == pid);
        let activation = if activated {
            from_three(var("LISTEN_FDS").as_deref())
        } else {
            3..3
        };
        KeepSet {
            declared: declared.to_vec(),
            activation,
            upgrade: from_three(var(UPGRADE_FDS).as_deref()),
            upgrade_ready: var(UPGRADE_READY_FD)
                .and_then(|v| v.trim().parse::<RawFd>().ok())
                .filter(|&fd| fd > 2),
        }
    }

    /// Whether `fd`, with its close-on-exec flag as given, stays open, and
    /// why; `None`: close it.
    pub(crate) fn verdict(&self, fd: RawFd, cloexec: bool) -> Option<Kept> {
        if (0..=2).contains(&fd) {
            Some(Kept::Stdio)
        } else if self.declared.contains(&fd) {
            Some(Kept::Declared)
        } else if cloexec {
            Some(Kept::Own)
        } else if self.activation.contains(&fd) {
            Some(Kept::Activation)
        } else if self.upgrade.contains(&fd) {
            Some(Kept::UpgradeListener)
        } else if self.upgrade_ready == Some(fd) {
            Some(Kept::UpgradeReady)
        } else {
            None
        }
    }
}

/// A descriptor the sweep closed: its number and what `/proc/self/fd` said
/// it was (a path, `pipe:[…]`, `socket:[…]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Closed {
    pub(crate) fd: RawFd,
    pub(crate) target: String,
}

/// What the sweep closed in this process, for the supervisor's log once it
/// has one.
pub(crate) static CLOSED: std::sync::OnceLock<Vec<Closed>> = std::sync::OnceLock::new();

/// `Ok(true)` if `fd` is open and close-on-exec, `Ok(false)` if open
/// without it, `Err` if not open.
fn cloexec(fd: RawFd) -> nix::Result<bool> {
    // SAFETY: only borrowed for one fcntl(F_GETFD), which fails with EBADF
    // if the number is not open; nothing is read or written through it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_GETFD)
        .map(|flags| FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC))
}

/// Checks the descriptors named with `keep_fd`: each must be 0 or more and
/// open. Called by `build` and again by `run`, before anything forks.
pub(crate) fn check_declared(fds: &[RawFd]) -> Result<()> {
    for &fd in fds {
        if fd < 0 {
            return Err(Error::KeepFd {
                fd,
                problem: "is negative",
            });
        }
        if cloexec(fd).is_err() {
            return Err(Error::KeepFd {
                fd,
                problem: "is not open",
            });
        }
    }
    Ok(())
}

/// The descriptors of this process, from `/proc/self/fd` (the directory's
/// own descriptor is listed too; it is closed again by the time the caller
/// looks at the list, and then fails `F_GETFD`).
fn open_fds() -> Result<Vec<RawFd>> {
    let dir =
        std::fs::read_dir("/proc/self/fd").map_err(|err| Error::sys("list /proc/self/fd", err))?;
    let mut fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    Ok(fds)
}

/// Closes every inherited descriptor `keep` does not keep, and records
/// which (see [`CLOSED`]). Called once, from `run`, single-threaded.
pub(crate) fn close_inherited(keep: &KeepSet) -> Result<Vec<Closed>> {
    let mut closed = Vec::new();
    for fd in open_fds()? {
        let Ok(cloexec) = cloexec(fd) else { continue };
        if keep.verdict(fd, cloexec).is_some() {
            continue;
        }
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        // SAFETY: the descriptor is open, above stderr, not close-on-exec
        // and not declared: it crossed the exec that started this program
        // (or the program made it inheritable on purpose without declaring
        // it, which the documented contract of `run` rules out). No Rust
        // value of this crate owns it; the application's own objects are
        // close-on-exec. Taking ownership here and dropping it closes it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        closed.push(Closed { fd, target });
    }
    let _ = CLOSED.set(closed.clone());
    Ok(closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    const PID: u32 = 4242;

    #[test]
    fn which_descriptors_are_kept() {
        use Kept::*;
        type Row = (
            &'static str,
            &'static [RawFd],
            &'static [(&'static str, &'static str)],
            RawFd,
            bool,
            Option<Kept>,
        );
        let table: &[Row] = &[
            ("stdin", &[], &[], 0, false, Some(Stdio)),
            ("stderr", &[], &[], 2, false, Some(Stdio)),
            ("a launcher's fd 7", &[], &[], 7, false, None),
            ("the program's own", &[], &[], 7, true, Some(Own)),
            ("declared, inheritable", &[7], &[], 7, false, Some(Declared)),
            ("declared, own", &[7], &[], 7, true, Some(Declared)),
            ("another declared", &[9], &[], 7, false, None),
            (
                "activated, first",
                &[],
                &[("LISTEN_PID", "4242"), ("LISTEN_FDS", "2")],
                3,
                false,
                Some(Activation),
            ),
            (
                "activated, last",
                &[],
                &[("LISTEN_PID", "4242"), ("LISTEN_FDS", "2")],
                4,
                false,
                Some(Activation),
            ),
            (
                "past the activated ones",
                &[],
                &[("LISTEN_PID", "4242"), ("LISTEN_FDS", "2")],
                5,
                false,
                None,
            ),
            (
                "activation for another pid",
                &[],
                &[("LISTEN_PID", "1"), ("LISTEN_FDS", "2")],
                3,
                false,
                None,
            ),
            (
                "activation without a pid",
                &[],
                &[("LISTEN_FDS", "2")],
                3,
                false,
                None,
            ),
            (
                "activation, count not a number",
                &[],
                &[("LISTEN_PID", "4242"), ("LISTEN_FDS", "x")],
                3,
                false,
                None,
            ),
            (
                "activation, negative count",
                &[],
                &[("LISTEN_PID", "4242"), ("LISTEN_FDS", "-3")],
                3,
                false,
                None,
            ),
            (
                "activation, huge count saturates",
                &[],
                &[("LISTEN_PID", "4242"), ("LISTEN_FDS", "2147483647")],
                1_000_000,
                false,
                Some(Activation),
            ),
            (
                "upgrade listener",
                &[],
                &[(UPGRADE_FDS, "1"), (UPGRADE_READY_FD, "4")],
                3,
                false,
                Some(UpgradeListener),
            ),
            (
                "upgrade readiness pipe",
                &[],
                &[(UPGRADE_FDS, "1"), (UPGRADE_READY_FD, "4")],
                4,
                false,
                Some(UpgradeReady),
            ),
            (
                "past the upgrade's",
                &[],
                &[(UPGRADE_FDS, "1"), (UPGRADE_READY_FD, "4")],
                5,
                false,
                None,
            ),
            (
                "upgrade pipe named as stdin is not a pipe",
                &[],
                &[(UPGRADE_READY_FD, "0")],
                0,
                false,
                Some(Stdio),
            ),
            (
                "upgrade pipe, garbage",
                &[],
                &[(UPGRADE_READY_FD, "7x")],
                7,
                false,
                None,
            ),
        ];
        for &(name, declared, vars, fd, cloexec, want) in table {
            let keep = KeepSet::new(declared, env(vars), PID);
            assert_eq!(keep.verdict(fd, cloexec), want, "{name}");
        }
    }

    #[test]
    fn declared_descriptors_are_checked() {
        let open = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&open);
        type Row = (&'static [RawFd], Option<(RawFd, &'static str)>);
        let table: &[Row] = &[
            (&[], None),
            (&[0, 1, 2], None),
            (&[-1], Some((-1, "is negative"))),
            (&[i32::MIN], Some((i32::MIN, "is negative"))),
            // Far above any open descriptor (the limit is far lower).
            (&[1 << 30], Some((1 << 30, "is not open"))),
        ];
        for &(fds, want) in table {
            let got = check_declared(fds).err().map(|err| match err {
                Error::KeepFd { fd, problem } => (fd, problem),
                other => panic!("{other}"),
            });
            assert_eq!(got, want, "{fds:?}");
        }
        assert!(check_declared(&[fd]).is_ok());
    }
}
