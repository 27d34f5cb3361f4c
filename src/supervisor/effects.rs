//! Events in, effects out: what the supervisor asks of the world, and the
//! small OS trait it asks through.
//!
//! The [`Supervisor`](super::Supervisor) never touches the actor's context:
//! each of its methods takes an event (a signal, a spawner reply, a reaped
//! exit, a timer) and the current time from [`Os::now`], changes its own
//! state, does its OS calls through [`Os`] (the spawner's socket, the
//! workers' own channels, reaping, the upgrade's process) and through the
//! registry's [`Handle`]s (signals), and queues [`Effect`]s for the actor
//! shell: timers, the subscribers' shutdown, the upgrade's verdict, the
//! System's stop. [`execute`](super::executor::execute) carries them out
//! after every event. Tests put a mock behind [`Os`] and the handles, and
//! read the effects and the OS calls back (`supervisor/tests.rs`), as
//! tokio's `process/unix/orphan.rs` does with its `Wait` trait.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::Addr;

use super::registry::Handle;
use crate::daemon::{DaemonActor, WorkerSaid};
use crate::payload::Payload;
use crate::process::Heard;
use crate::process::wire::SpawnRequest;
use crate::process::{self, Pidfd};

/// What the supervisor asks the actor shell to do, in order.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Look at the pool again at this time (backoff, pacing, hysteresis).
    LookAt(Instant),
    /// Send again, after this delay, the spawn requests the spawner's
    /// socket had no room for.
    ResendAfter(Duration),
    /// The drain's deadline: kill what is left after this long.
    DrainDeadline(Duration),
    /// After the KILLs: stop after this long even if a child survived.
    KillDeadline(Duration),
    /// A plain daemon stops: `Shutdown` to every subscriber, and
    /// `ShutdownAcked` once all handled it (or the shutdown timeout).
    ShutdownSubscribers,
    /// Wait for the new supervisor's readiness verdict on this pipe.
    AwaitVerdict(File),
    /// Stop the System with this exit code.
    Stop(i32),
}

/// The OS side of the supervisor, besides the children's handles.
pub(crate) trait Os {
    /// The current time.
    fn now(&self) -> Instant;
    /// Sends a request on the spawner's socket.
    fn send(&mut self, sock: RawFd, request: SpawnRequest) -> nix::Result<()>;
    /// Sends the spawner the log file's new descriptor (after HUP).
    fn send_reopen(&mut self, sock: RawFd, log: &File) -> nix::Result<()>;
    /// Hands a fork-per-request payload to one worker, on its own channel.
    fn give(&mut self, link: RawFd, payload: &Payload) -> nix::Result<()>;
    /// Reads one message from a worker's channel, without blocking.
    fn hear(&mut self, link: RawFd) -> nix::Result<Heard>;
    /// Starts watching the channel of worker `pid`: each time it becomes
    /// readable, the supervisor gets a [`WorkerSaid`] event.
    fn watch(&mut self, pid: Pid, link: Arc<OwnedFd>);
    /// Where watchers report (the real OS needs the actor's address).
    fn attach(&mut self, _addr: Addr<DaemonActor>) {}
    /// Stops watching the channel of worker `pid` (it is gone, or it
    /// misbehaved: what it sends is no longer read).
    fn unwatch(&mut self, pid: Pid);
    /// Reaps every child that has exited.
    fn reap(&mut self) -> Vec<(Pid, WaitStatus)>;
    /// Starts the new binary of an upgrade: its pid and the pipe its
    /// verdict comes on.
    fn start_upgrade(&mut self) -> io::Result<(Pid, File)>;
    /// The handle of a worker from the pidfd the spawner sent; its pid is
    /// the kernel's (`/proc/self/fdinfo`), not what the message said.
    fn child_handle(&mut self, pidfd: OwnedFd) -> io::Result<Box<dyn Handle>>;
    /// TERMs `pid` if it is this process's own unreaped child (a new
    /// supervisor re-parented to this subreaper); `false` otherwise.
    fn term_own_child(&mut self, pid: Pid) -> bool;
}

/// The real OS.
#[derive(Default)]
pub(crate) struct RealOs {
    /// Where a worker channel's watcher reports (set by the executor).
    pub(crate) addr: Option<Addr<DaemonActor>>,
    watchers: HashMap<Pid, actix_rt::task::JoinHandle<()>>,
}

impl Os for RealOs {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn send(&mut self, sock: RawFd, request: SpawnRequest) -> nix::Result<()> {
        process::wire::send_request(sock, request)
    }

    fn send_reopen(&mut self, sock: RawFd, log: &File) -> nix::Result<()> {
        process::wire::send_reopen(sock, log.as_fd())
    }

    fn give(&mut self, link: RawFd, payload: &Payload) -> nix::Result<()> {
        process::give(link, payload)
    }

    fn hear(&mut self, link: RawFd) -> nix::Result<Heard> {
        process::hear(link)
    }

    fn watch(&mut self, pid: Pid, link: Arc<OwnedFd>) {
        let Some(addr) = self.addr.clone() else {
            return;
        };
        // One event waits in the mailbox at most, however much the worker
        // writes: the supervisor reads the channel itself, on the event.
        let queued = Arc::new(AtomicBool::new(false));
        let task = actix_rt::spawn(async move {
            let Ok(fd) = process::watch(link) else {
                return;
            };
            loop {
                let Ok(mut guard) = fd.readable().await else {
                    return;
                };
                // Safe to clear before the read: the supervisor reads the
                // channel until EAGAIN after the event, and anything that
                // arrives later is a new readiness event.
                // End of file stays ready for good: the last event is
                // sent, and the supervisor reads to the end.
                let closed = guard.ready().is_read_closed();
                guard.clear_ready();
                if !queued.swap(true, Ordering::AcqRel) {
                    addr.do_send(WorkerSaid(pid, queued.clone()));
                }
                if closed {
                    return;
                }
            }
        });
        if let Some(old) = self.watchers.insert(pid, task) {
            old.abort();
        }
    }

    fn attach(&mut self, addr: Addr<DaemonActor>) {
        self.addr = Some(addr);
    }

    fn unwatch(&mut self, pid: Pid) {
        if let Some(task) = self.watchers.remove(&pid) {
            task.abort();
        }
    }

    fn reap(&mut self) -> Vec<(Pid, WaitStatus)> {
        process::reap_any()
    }

    fn start_upgrade(&mut self) -> io::Result<(Pid, File)> {
        let (child, verdict) = process::spawn_upgrade()?;
        // The child is reaped by the supervisor's reaper (waitpid(-1)).
        Ok((Pid::from_raw(child.id() as i32), verdict))
    }

    fn child_handle(&mut self, pidfd: OwnedFd) -> io::Result<Box<dyn Handle>> {
        Ok(Box::new(Pidfd::from_received(pidfd)?))
    }

    fn term_own_child(&mut self, pid: Pid) -> bool {
        // waitid on the pidfd answers only for our own children; WNOWAIT
        // leaves it to be reaped as usual. The pidfd then names it alone.
        Pidfd::open(pid).ok().is_some_and(|fd| {
            waitid(
                Id::PIDFd(fd.as_fd()),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
            )
            .is_ok()
                && fd.signal(Signal::SIGTERM).is_ok()
        })
    }
}

/// A mock OS for the supervisor's tests: a clock moved by hand, and a
/// record of every call.
#[cfg(test)]
pub(crate) mod mock {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// What the mock saw and what it answers, shared with the test.
    #[derive(Default)]
    pub(crate) struct World {
        pub(crate) now: Option<Instant>,
        pub(crate) sent: Vec<SpawnRequest>,
        /// The next answer of `send` (`Ok` when `None`).
        pub(crate) send_fails: Option<nix::errno::Errno>,
        /// The channel each request was given on, in order.
        pub(crate) given: Vec<RawFd>,
        /// What each worker channel has to say, by descriptor.
        pub(crate) said: std::collections::HashMap<RawFd, std::collections::VecDeque<Heard>>,
        /// Workers whose channel is watched.
        pub(crate) watched: Vec<Pid>,
        pub(crate) exits: Vec<(Pid, WaitStatus)>,
        pub(crate) upgrades: Vec<Pid>,
        pub(crate) termed: Vec<Pid>,
        /// Pids `term_own_child` finds to be our children.
        pub(crate) own: Vec<Pid>,
        /// The pid each descriptor a test sends as a pidfd names.
        pub(crate) names: std::collections::HashMap<RawFd, Pid>,
        /// Every signal sent through a handle the mock made.
        pub(crate) signals: Rc<RefCell<Vec<(Pid, Signal)>>>,
    }

    pub(crate) struct MockOs(pub(crate) Rc<RefCell<World>>);

    impl Os for MockOs {
        fn now(&self) -> Instant {
            let mut w = self.0.borrow_mut();
            *w.now.get_or_insert_with(Instant::now)
        }

        fn send(&mut self, _sock: RawFd, request: SpawnRequest) -> nix::Result<()> {
            let mut w = self.0.borrow_mut();
            match w.send_fails.take() {
                Some(err) => Err(err),
                None => {
                    w.sent.push(request);
                    Ok(())
                }
            }
        }

        fn send_reopen(&mut self, _sock: RawFd, _log: &File) -> nix::Result<()> {
            self.0.borrow_mut().sent.push(SpawnRequest::Reopen);
            Ok(())
        }

        fn give(&mut self, link: RawFd, _payload: &Payload) -> nix::Result<()> {
            self.0.borrow_mut().given.push(link);
            Ok(())
        }

        fn hear(&mut self, link: RawFd) -> nix::Result<Heard> {
            let mut w = self.0.borrow_mut();
            match w.said.get_mut(&link).and_then(|q| q.pop_front()) {
                Some(heard) => Ok(heard),
                None => Err(nix::errno::Errno::EAGAIN),
            }
        }

        fn watch(&mut self, pid: Pid, _link: Arc<OwnedFd>) {
            self.0.borrow_mut().watched.push(pid);
        }

        fn unwatch(&mut self, pid: Pid) {
            self.0.borrow_mut().watched.retain(|p| *p != pid);
        }

        fn reap(&mut self) -> Vec<(Pid, WaitStatus)> {
            std::mem::take(&mut self.0.borrow_mut().exits)
        }

        fn start_upgrade(&mut self) -> io::Result<(Pid, File)> {
            let pid = Pid::from_raw(90_000 + self.0.borrow().upgrades.len() as i32);
            self.0.borrow_mut().upgrades.push(pid);
            Ok((pid, File::open("/dev/null")?))
        }

        fn child_handle(&mut self, pidfd: OwnedFd) -> io::Result<Box<dyn Handle>> {
            use std::os::fd::AsRawFd;
            let w = self.0.borrow();
            let pid = w
                .names
                .get(&pidfd.as_raw_fd())
                .copied()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
            Ok(Box::new(crate::supervisor::registry::tests::mock(
                pid.as_raw(),
                &w.signals,
            )))
        }

        fn term_own_child(&mut self, pid: Pid) -> bool {
            let mut w = self.0.borrow_mut();
            if w.own.contains(&pid) {
                w.termed.push(pid);
                true
            } else {
                false
            }
        }
    }
}
