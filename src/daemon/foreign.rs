//! Foreign children: processes the application reported with
//! [`ForeignChild`](crate::ForeignChild).

use std::collections::HashMap;

use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use crate::process::{self, Pidfd};

/// Processes the application reported with [`ForeignChild`], each named by
/// a pidfd opened while it was known to be this process's own unreaped
/// child.
#[derive(Default)]
pub(crate) struct Foreign {
    children: HashMap<Pid, Pidfd>,
}

impl Foreign {
    /// Registers `pid`, which must be this process's child and not yet
    /// reaped (checked through the pidfd, so race-free).
    pub(crate) fn add(&mut self, pid: Pid) -> Result<(), &'static str> {
        if pid.as_raw() <= 0 {
            return Err("not a process id");
        }
        let pidfd = Pidfd::open(pid).map_err(|_| "no such process")?;
        // waitid on the pidfd answers only for our own children; WNOWAIT
        // leaves an exited one to be reaped as usual.
        match waitid(
            Id::PIDFd(std::os::fd::AsFd::as_fd(&pidfd)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(_) => {
                self.children.insert(pid, pidfd);
                Ok(())
            }
            Err(_) => Err("not a child of this process"),
        }
    }

    pub(crate) fn remove(&mut self, pid: Pid) -> bool {
        self.children.remove(&pid).is_some()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }

    pub(crate) fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.children.keys().copied()
    }

    pub(crate) fn signal_all(&self, sig: Signal) -> usize {
        self.children
            .values()
            .filter(|p| p.signal(sig).is_ok())
            .count()
    }

    /// A worker reaps only these: each one that has exited.
    pub(crate) fn reap(&mut self) -> Vec<(Pid, WaitStatus)> {
        let done: Vec<(Pid, WaitStatus)> = self
            .children
            .keys()
            .filter_map(|&pid| process::reap_pid(pid).map(|status| (pid, status)))
            .collect();
        for (pid, _) in &done {
            self.children.remove(pid);
        }
        done
    }
}
