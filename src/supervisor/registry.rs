//! The supervisor's registry of children: the only record that decides
//! whom the supervisor signals.
//!
//! Every worker the supervisor asked the spawner for is here from the
//! request on (pending, by slot), then with its pid and pidfd once the
//! spawner reports it, until it is reaped. What workers write in the
//! scoreboard is checked against this record, never the other way round.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::payload::Payload;
use crate::process::Pidfd;
use crate::scoreboard::SlotId;

/// Something through which one child, and only it, can be signalled: a
/// pidfd, or a mock in tests.
pub(crate) trait Handle {
    /// The child's pid, as the kernel names it.
    fn pid(&self) -> Pid;
    /// Sends `sig` to the child. `ESRCH` once it is gone.
    fn signal(&self, sig: Signal) -> io::Result<()>;
}

impl<T: Handle + ?Sized> Handle for Box<T> {
    fn pid(&self) -> Pid {
        (**self).pid()
    }
    fn signal(&self, sig: Signal) -> io::Result<()> {
        (**self).signal(sig)
    }
}

impl Handle for Pidfd {
    fn pid(&self) -> Pid {
        Pidfd::pid(self)
    }
    fn signal(&self, sig: Signal) -> io::Result<()> {
        Pidfd::signal(self, sig)
    }
}

/// What the supervisor has asked of a child; decides how its exit is
/// classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// Nothing: it runs.
    Nothing,
    /// Retire gracefully (TERM): a surplus spare, a reload, memory, a
    /// misbehaving worker, or the daemon stopping.
    Retire(Retire),
    /// The babysitter's escalation reached this signal (INT, TERM, KILL).
    Escalated(Signal),
    /// KILL at the end of the shutdown timeout.
    Kill,
}

/// Why a child is asked to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retire {
    /// One spare more than `max_spare`.
    Surplus,
    /// A graceful reload replaces it.
    Reload,
    /// Resident memory over `max_rss`.
    Memory,
    /// It wrote nonsense into the scoreboard.
    Misbehaved,
    /// The daemon stops.
    Shutdown,
}

impl Retire {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Retire::Surplus => "surplus spare",
            Retire::Reload => "reload",
            Retire::Memory => "over max_rss",
            Retire::Misbehaved => "misbehaving",
            Retire::Shutdown => "shutdown",
        }
    }
}

/// One registered worker.
#[derive(Debug)]
pub(crate) struct Child<H> {
    pub(crate) slot: SlotId,
    pub(crate) handle: H,
    pub(crate) spawned: Instant,
    /// When the supervisor first saw it waiting or busy.
    pub(crate) ready: Option<Instant>,
    pub(crate) ask: Ask,
    /// Its state as last read from the scoreboard and found sound.
    pub(crate) seen: crate::state::SlotState,
    /// Its request count as last read from the scoreboard (only grows).
    pub(crate) requests_seen: u64,
    /// The supervisor's end of its own channel (`None` in tests that need
    /// none).
    pub(crate) link: Option<Arc<OwnedFd>>,
    /// Fork per request: the request given to it and not yet claimed (the
    /// supervisor's copy, kept until the claim, so that a worker that dies
    /// first loses nothing).
    pub(crate) given: Option<Payload>,
    /// Messages it sent on its channel (a fork-per-request worker sends
    /// one in its life, anyone else none).
    pub(crate) heard: u32,
}

impl<H: Handle> Child<H> {
    pub(crate) fn pid(&self) -> Pid {
        self.handle.pid()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.is_some()
    }

    /// Whether it was asked to go (any way).
    pub(crate) fn is_leaving(&self) -> bool {
        self.ask != Ask::Nothing
    }
}

/// A slot the spawner was asked to fill and has not answered for yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) asked: Instant,
    /// The request is still to be (re)sent: the socket was full.
    pub(crate) unsent: bool,
}

/// The registry.
#[derive(Debug)]
pub(crate) struct Registry<H> {
    children: HashMap<SlotId, Child<H>>,
    by_pid: HashMap<Pid, SlotId>,
    pending: HashMap<SlotId, Pending>,
}

impl<H> Default for Registry<H> {
    fn default() -> Self {
        Registry {
            children: HashMap::new(),
            by_pid: HashMap::new(),
            pending: HashMap::new(),
        }
    }
}

/// Why a spawn report was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No spawn is pending for that slot.
    NotPending,
    /// The pid is already registered (in another slot).
    DuplicatePid,
}

impl<H: Handle> Registry<H> {
    /// A spawn request for `slot` was made at `now`.
    pub(crate) fn expect(&mut self, slot: SlotId, now: Instant, unsent: bool) {
        self.pending.insert(slot, Pending { asked: now, unsent });
    }

    pub(crate) fn pending(&self) -> impl Iterator<Item = (SlotId, Pending)> + '_ {
        self.pending.iter().map(|(s, p)| (*s, *p))
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn is_pending(&self, slot: SlotId) -> bool {
        self.pending.contains_key(&slot)
    }

    pub(crate) fn mark_sent(&mut self, slot: SlotId, now: Instant) {
        if let Some(p) = self.pending.get_mut(&slot) {
            p.unsent = false;
            p.asked = now;
        }
    }

    /// Gives up a pending spawn (failed, or no longer wanted).
    pub(crate) fn abandon(&mut self, slot: SlotId) -> bool {
        self.pending.remove(&slot).is_some()
    }

    /// The oldest spawn request still unanswered (sent, not just queued).
    pub(crate) fn oldest_unanswered(&self) -> Option<Instant> {
        self.pending
            .values()
            .filter(|p| !p.unsent)
            .map(|p| p.asked)
            .min()
    }

    /// The spawner reported the worker for `slot`.
    pub(crate) fn register(
        &mut self,
        slot: SlotId,
        handle: H,
        link: Option<Arc<OwnedFd>>,
        now: Instant,
    ) -> Result<(), Refused> {
        if !self.pending.contains_key(&slot) {
            return Err(Refused::NotPending);
        }
        let pid = handle.pid();
        if self.by_pid.contains_key(&pid) {
            return Err(Refused::DuplicatePid);
        }
        self.pending.remove(&slot);
        self.by_pid.insert(pid, slot);
        self.children.insert(
            slot,
            Child {
                slot,
                handle,
                spawned: now,
                ready: None,
                ask: Ask::Nothing,
                seen: crate::state::SlotState::Forking,
                requests_seen: 0,
                link,
                given: None,
                heard: 0,
            },
        );
        Ok(())
    }

    /// The child `pid` was reaped: it leaves the registry.
    pub(crate) fn remove(&mut self, pid: Pid) -> Option<Child<H>> {
        let slot = self.by_pid.remove(&pid)?;
        self.children.remove(&slot)
    }

    pub(crate) fn slot_of(&self, pid: Pid) -> Option<SlotId> {
        self.by_pid.get(&pid).copied()
    }

    pub(crate) fn get(&self, slot: SlotId) -> Option<&Child<H>> {
        self.children.get(&slot)
    }

    pub(crate) fn get_mut(&mut self, slot: SlotId) -> Option<&mut Child<H>> {
        self.children.get_mut(&slot)
    }

    pub(crate) fn child_count(&self) -> usize {
        self.children.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.children.is_empty() && self.pending.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Child<H>> + '_ {
        self.children.values()
    }

    pub(crate) fn slots(&self) -> Vec<SlotId> {
        let mut slots: Vec<SlotId> = self.children.keys().copied().collect();
        slots.sort();
        slots
    }

    /// Signals the child in `slot`, through its handle, and records what
    /// was asked (never downgrading a stronger ask). `false` if no child is
    /// registered there or it is already gone.
    pub(crate) fn signal(&mut self, slot: SlotId, sig: Signal, ask: Ask) -> bool {
        let Some(child) = self.children.get_mut(&slot) else {
            return false;
        };
        if rank(ask) >= rank(child.ask) {
            child.ask = ask;
        }
        child.handle.signal(sig).is_ok()
    }

    /// Marks the child in `slot` ready (first seen waiting or busy).
    pub(crate) fn mark_ready(&mut self, slot: SlotId, now: Instant) -> bool {
        match self.children.get_mut(&slot) {
            Some(child) if child.ready.is_none() => {
                child.ready = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Whether `slot` is owned: registered or pending.
    pub(crate) fn owns(&self, slot: SlotId) -> bool {
        self.children.contains_key(&slot) || self.pending.contains_key(&slot)
    }
}

fn rank(ask: Ask) -> u8 {
    match ask {
        Ask::Nothing => 0,
        Ask::Retire(_) => 1,
        Ask::Escalated(_) => 2,
        Ask::Kill => 3,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A child that records the signals sent to it.
    #[derive(Debug, Clone)]
    pub(crate) struct Mock {
        pub(crate) pid: Pid,
        pub(crate) sent: Rc<RefCell<Vec<(Pid, Signal)>>>,
        pub(crate) gone: bool,
    }

    impl Handle for Mock {
        fn pid(&self) -> Pid {
            self.pid
        }
        fn signal(&self, sig: Signal) -> io::Result<()> {
            if self.gone {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            self.sent.borrow_mut().push((self.pid, sig));
            Ok(())
        }
    }

    pub(crate) fn mock(pid: i32, sent: &Rc<RefCell<Vec<(Pid, Signal)>>>) -> Mock {
        Mock {
            pid: Pid::from_raw(pid),
            sent: sent.clone(),
            gone: false,
        }
    }

    #[test]
    fn only_pending_slots_register_and_pids_are_unique() {
        let sent = Rc::default();
        let now = Instant::now();
        let mut reg = Registry::default();
        assert_eq!(
            reg.register(SlotId(0), mock(10, &sent), None, now),
            Err(Refused::NotPending)
        );
        reg.expect(SlotId(0), now, false);
        reg.expect(SlotId(1), now, false);
        assert_eq!(reg.register(SlotId(0), mock(10, &sent), None, now), Ok(()));
        assert_eq!(
            reg.register(SlotId(1), mock(10, &sent), None, now),
            Err(Refused::DuplicatePid)
        );
        assert_eq!(
            reg.register(SlotId(0), mock(11, &sent), None, now),
            Err(Refused::NotPending),
            "a slot is reported once"
        );
        assert_eq!(reg.slot_of(Pid::from_raw(10)), Some(SlotId(0)));
        assert!(reg.is_pending(SlotId(1)));
        assert!(reg.remove(Pid::from_raw(10)).is_some());
        assert!(reg.remove(Pid::from_raw(10)).is_none());
        assert!(reg.get(SlotId(0)).is_none());
    }

    #[test]
    fn signals_reach_registered_children_only_and_asks_never_weaken() {
        let sent: Rc<RefCell<Vec<(Pid, Signal)>>> = Rc::default();
        let now = Instant::now();
        let mut reg = Registry::default();
        reg.expect(SlotId(2), now, false);
        reg.register(SlotId(2), mock(20, &sent), None, now).unwrap();
        // Nothing is registered in slot 3: no signal goes anywhere.
        assert!(!reg.signal(SlotId(3), Signal::SIGTERM, Ask::Retire(Retire::Surplus)));
        assert!(reg.signal(SlotId(2), Signal::SIGKILL, Ask::Kill));
        assert!(reg.signal(SlotId(2), Signal::SIGTERM, Ask::Retire(Retire::Reload)));
        assert_eq!(reg.get(SlotId(2)).unwrap().ask, Ask::Kill);
        assert_eq!(
            *sent.borrow(),
            [
                (Pid::from_raw(20), Signal::SIGKILL),
                (Pid::from_raw(20), Signal::SIGTERM)
            ]
        );
    }

    #[test]
    fn the_oldest_unanswered_request_ignores_unsent_ones() {
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(1);
        let mut reg: Registry<Mock> = Registry::default();
        reg.expect(SlotId(0), t1, false);
        reg.expect(SlotId(1), t0, true);
        assert_eq!(reg.oldest_unanswered(), Some(t1));
        reg.mark_sent(SlotId(1), t1 + std::time::Duration::from_secs(1));
        assert_eq!(reg.oldest_unanswered(), Some(t1));
        assert!(reg.abandon(SlotId(0)));
        assert_eq!(
            reg.oldest_unanswered(),
            Some(t1 + std::time::Duration::from_secs(1))
        );
    }
}
