//! Each worker's own channel to the supervisor.
//!
//! The spawner's intermediate makes a socket pair for every worker it
//! forks and sends the supervisor's end with the worker's pidfd; the
//! registry keeps it with the child. No other worker holds either end.
//!
//! In fork per request the supervisor gives a request to one worker it
//! chose, on that worker's channel, and keeps its own copy of the
//! request's descriptors until the worker answers: `Claimed` (it serves
//! it: the copy is closed) or `HandedBack` (it was told to stop in that
//! instant: the request goes first in the queue). A worker that dies
//! before it answered loses nothing: its request goes back to the queue.
//!
//! A worker is untrusted (DESIGN.md, invariant 7). The supervisor reads a
//! few bytes per message, closes any descriptor a worker sends, and accepts
//! exactly one answer, only from a worker it gave a request to. Anything
//! else (a message out of order, a second one, bytes or descriptors that
//! are not an answer, a flood) retires that worker, logged with its pid
//! and slot, and its channel is no longer read: what it writes then fills
//! its own socket buffer, not the supervisor's memory.

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::unistd::Pid;
use slog::{debug, warn};

use super::Supervisor;
use crate::daemon::Common;
use crate::process::{Heard, Told};
use crate::scoreboard::SlotId;
use crate::state::SlotState;

/// A worker that answers sends one message; the supervisor reads at most
/// this many from a channel per event before it calls it a flood.
const READS_PER_EVENT: usize = 2;

impl Supervisor {
    /// Lets the OS side's watchers report to the actor.
    pub(crate) fn attach_os(&mut self, addr: actix::Addr<crate::daemon::DaemonActor>) {
        self.os.attach(addr);
    }

    /// The channel of worker `pid` is readable: reads what it said.
    pub(crate) fn hear_from(&mut self, c: &mut Common, pid: Pid) {
        if self.read_link(c, pid) {
            self.after_change(c);
        }
    }

    /// Reads worker `pid`'s channel until it is empty, closed, or the
    /// worker misbehaved. Whether anything changed for the pool.
    fn read_link(&mut self, c: &mut Common, pid: Pid) -> bool {
        let Some(slot) = self.registry.slot_of(pid) else {
            self.os.unwatch(pid);
            return false;
        };
        let mut changed = false;
        for _ in 0..READS_PER_EVENT + 1 {
            let Some(link) = self.registry.get(slot).and_then(|ch| ch.link.clone()) else {
                return changed;
            };
            let heard = match self.os.hear(link.as_raw_fd()) {
                Ok(heard) => heard,
                Err(Errno::EAGAIN) => return changed,
                Err(Errno::EINTR) => continue,
                Err(_) => Heard::Closed,
            };
            match heard {
                Heard::Closed => {
                    // The worker is gone (or closed its end): its exit is
                    // reaped as usual; nothing more comes.
                    self.os.unwatch(pid);
                    return changed;
                }
                Heard::Told(what) => match self.answer(c, slot, what) {
                    Ok(()) => changed = true,
                    Err(why) => {
                        self.link_misbehaved(c, slot, pid, why);
                        return true;
                    }
                },
                Heard::Malformed { len, fds } => {
                    let why = format!("sent {len} bytes and {fds} descriptors that are no answer");
                    self.link_misbehaved(c, slot, pid, why);
                    return true;
                }
            }
        }
        self.link_misbehaved(c, slot, pid, "floods its channel".to_owned());
        true
    }

    /// A well-formed answer from the worker in `slot`: accepted once, and
    /// only from a worker that was given a request.
    fn answer(&mut self, c: &mut Common, slot: SlotId, what: Told) -> Result<(), String> {
        let stopping = self.phase.is_stopping();
        let Some(child) = self.registry.get_mut(slot) else {
            return Ok(());
        };
        child.heard = child.heard.saturating_add(1);
        if child.heard > 1 {
            return Err(format!("{what:?} after its answer"));
        }
        let Some(payload) = child.given.take() else {
            return Err(format!("{what:?} without a request"));
        };
        match what {
            // The worker has its own copies: ours close here.
            Told::Claimed => drop(payload),
            Told::HandedBack if stopping => {
                warn!(c.log, "request closed unserved: shutting down"; "slot" => slot);
            }
            Told::HandedBack => {
                debug!(c.log, "a worker handed its request back; it goes first"; "slot" => slot);
                self.requests.queue.push_front(payload);
            }
        }
        Ok(())
    }

    /// The worker in `slot` wrote something it must not on its channel:
    /// retired (logged once, with pid and slot), and its channel no longer
    /// read. A request it was given and did not claim is closed: it may
    /// hold the descriptors already, and no request is served twice.
    fn link_misbehaved(&mut self, c: &mut Common, slot: SlotId, pid: Pid, why: String) {
        self.os.unwatch(pid);
        if let Some(child) = self.registry.get_mut(slot)
            && child.given.take().is_some()
        {
            warn!(c.log, "the request given to a misbehaving worker is closed";
                "slot" => slot, "worker" => pid.as_raw());
        }
        self.misbehaved(c, slot, &format!("on its channel: {why}"));
    }

    /// Before an exit of worker `pid` is handled: what it said last, and
    /// its request back to the queue if it never answered for it.
    pub(super) fn link_closing(&mut self, c: &mut Common, pid: Pid) {
        self.read_link(c, pid);
        self.os.unwatch(pid);
        let Some(slot) = self.registry.slot_of(pid) else {
            return;
        };
        let Some(payload) = self.registry.get_mut(slot).and_then(|ch| ch.given.take()) else {
            return;
        };
        if self.phase.is_stopping() {
            warn!(c.log, "request closed unserved: its worker exited at shutdown";
                "slot" => slot, "worker" => pid.as_raw());
        } else {
            debug!(c.log, "a worker exited before it claimed its request; it goes first";
                "slot" => slot, "worker" => pid.as_raw());
            self.requests.queue.push_front(payload);
        }
    }

    /// Fork per request: workers a request can be given to now, ready ones
    /// (`.`) first: registered, not leaving, with a channel, never given one.
    pub(super) fn takers(&self) -> Vec<SlotId> {
        let mut takers: Vec<(bool, SlotId)> = self
            .registry
            .iter()
            .filter(|ch| {
                !ch.is_leaving()
                    && ch.link.is_some()
                    && ch.given.is_none()
                    && ch.heard == 0
                    && matches!(
                        ch.seen,
                        SlotState::Forking | SlotState::Starting | SlotState::FirstWait
                    )
            })
            .map(|ch| (ch.seen != SlotState::FirstWait, ch.slot))
            .collect();
        takers.sort();
        takers.into_iter().map(|(_, slot)| slot).collect()
    }

    /// Requests given to workers and not yet answered for.
    pub(super) fn given_count(&self) -> usize {
        self.registry.iter().filter(|ch| ch.given.is_some()).count()
    }

    /// Gives the next queued request to the worker in `slot`. `false` if
    /// none could be given (the queue is empty, or the worker is gone).
    pub(super) fn give(&mut self, c: &mut Common, slot: SlotId) -> bool {
        let Some(link) = self.registry.get(slot).and_then(|ch| ch.link.clone()) else {
            return false;
        };
        let Some(payload) = self.requests.queue.pop_front() else {
            return false;
        };
        match self.os.give(link.as_raw_fd(), &payload) {
            Ok(()) => {
                if let Some(child) = self.registry.get_mut(slot) {
                    child.given = Some(payload);
                }
                true
            }
            Err(err) => {
                self.requests.queue.push_front(payload);
                if let Some(child) = self.registry.get_mut(slot) {
                    // Never a taker again: its channel is full or gone.
                    child.heard = child.heard.max(1);
                }
                debug!(c.log, "cannot give a request to a worker"; "slot" => slot, "error" => %err);
                false
            }
        }
    }
}
