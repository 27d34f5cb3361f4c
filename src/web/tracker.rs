//! The process's in-flight requests, mirrored to the scoreboard: the
//! [`Tracker`] that the [`Reporter`](super::Reporter) feeds, and what it
//! tells the daemon.

#[cfg(test)]
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::Addr;

use crate::daemon::DaemonActor;
use crate::messages::UpdateStatus;
use crate::payload::Payload;

/// Where the tracker's updates go: the daemon, or a test's record.
pub(super) enum Sink {
    Daemon(Addr<DaemonActor>),
    #[cfg(test)]
    Record(Arc<Mutex<Vec<Note>>>),
}

/// What the tracker tells the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Note {
    Req,
    Long,
    Wait,
    Done,
    Served(u64),
}

impl Sink {
    fn send(&self, note: Note) {
        match self {
            Sink::Daemon(addr) => match note {
                Note::Req => addr.do_send(UpdateStatus::Req(Payload::new())),
                Note::Long => addr.do_send(UpdateStatus::Long),
                Note::Wait => addr.do_send(UpdateStatus::Wait),
                Note::Done => addr.do_send(UpdateStatus::Done),
                Note::Served(n) => addr.do_send(UpdateStatus::Served(n)),
            },
            #[cfg(test)]
            Sink::Record(notes) => notes.lock().unwrap().push(note),
        }
    }
}

/// The process's request state, changed and sent under one lock so that the
/// daemon sees the updates of every actix-web thread in a consistent order.
#[derive(Debug, Default)]
pub(super) struct TrackState {
    /// Requests in flight in this process.
    in_flight: u32,
    /// Of those, marked long.
    long: u32,
    /// The daemon was told `Long` (the slot is `l`).
    told_long: bool,
    /// The daemon was told `Req` (and maybe `Long`) and not yet `Done`.
    open: bool,
    /// Requests that ended while others were still in flight, not yet told
    /// to the daemon.
    pending: u64,
    /// A flush of `pending` is scheduled.
    flush_scheduled: bool,
    /// When the last request ended: the worker shows `w` only once none
    /// has ended (and none is in flight) for `FLUSH_AFTER`.
    last_end: Option<Instant>,
    /// The server is listening and `Wait` was sent.
    ready: bool,
    /// Shutting down: nothing more is reported, responses close.
    draining: bool,
    /// Requests counted by the daemon (one `Done` each).
    served: u64,
    /// This worker's `requests` limit (with its jitter): the daemon
    /// retires it at the `Done` or `Served` that reaches it.
    pub(super) limit: Option<u64>,
}

/// How long ended requests wait before they are told to the daemon, so
/// that a busy worker tells it (and it the supervisor) in batches rather
/// than one by one; also how long a worker stays `r` after its last
/// request.
pub(super) const FLUSH_AFTER: Duration = Duration::from_millis(5);

pub(super) struct Tracker {
    state: Mutex<TrackState>,
    /// `state.draining`, readable without the lock.
    draining: AtomicBool,
    pub(super) sink: Sink,
}

impl Tracker {
    pub(super) fn new(sink: Sink, limit: Option<u64>) -> Tracker {
        Tracker {
            state: Mutex::new(TrackState {
                limit,
                ..TrackState::default()
            }),
            draining: AtomicBool::new(false),
            sink,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, TrackState> {
        // The state stays consistent even if a holder panicked (each
        // change is a few integer writes), and a worker that panics exits.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a busy period: `Req`, and `Long` if a long request is in
    /// flight.
    fn open(&self, s: &mut TrackState) {
        self.sink.send(Note::Req);
        if s.long > 0 {
            self.sink.send(Note::Long);
        }
        s.told_long = s.long > 0;
        s.open = true;
    }

    /// The server listens: the worker is a spare from now on.
    pub(super) fn ready(&self) {
        let mut s = self.lock();
        if s.ready || s.draining {
            return;
        }
        s.ready = true;
        self.sink.send(Note::Wait);
        if s.in_flight > 0 {
            self.open(&mut s);
        }
    }

    pub(super) fn start(&self) {
        let mut s = self.lock();
        s.in_flight += 1;
        if !s.open && s.ready && !s.draining {
            self.open(&mut s);
        }
    }

    /// A request ended; returns whether the caller must call
    /// [`flush`](Self::flush) after [`FLUSH_AFTER`].
    ///
    /// Ended requests are told in batches: at most `FLUSH_AFTER` after the
    /// first of them ended, at once when they reach the worker's limit, and
    /// at once when the last request ends while shutting down. A batch of
    /// `k` while requests are still in flight is one `Served(k)`: the slot
    /// stays `r` (no state change, no wake-up of the supervisor) and its
    /// time in `r`, what the babysitter's hung-request limit measures,
    /// restarts. A batch that leaves nothing in flight is `Served(k - 1)`
    /// and `Done`: the worker shows `w` only once it has had no request in
    /// flight for a moment. The count is exact.
    pub(super) fn end(&self, long: bool) -> bool {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if long {
            s.long = s.long.saturating_sub(1);
        }
        s.last_end = Some(Instant::now());
        if !s.open {
            if s.draining && s.ready {
                // A request a draining worker still answered (on a
                // keep-alive connection) after its last busy period: the
                // daemon counts it while the worker exits.
                self.sink.send(Note::Served(1));
                s.served += 1;
            }
            return false;
        }
        s.pending += 1;
        let now = if s.draining {
            s.in_flight == 0
        } else {
            s.limit.is_some_and(|q| s.served + s.pending >= q)
        };
        if now {
            self.flush_locked(&mut s);
            false
        } else {
            !s.draining && !std::mem::replace(&mut s.flush_scheduled, true)
        }
    }

    /// Tells the daemon the requests that ended meanwhile (the scheduled
    /// flush, `FLUSH_AFTER` after an end). Returns when to look again:
    /// with nothing in flight but a request ended less than `FLUSH_AFTER`
    /// ago, the worker is between requests rather than idle, so it counts
    /// all but one of them (kept for the `Done` that will end the busy
    /// period) and stays `r`. Under steady load a worker then never flips
    /// to `w` and back, and never wakes the supervisor.
    pub(super) fn flush(&self, now: Instant) -> Option<Duration> {
        let mut s = self.lock();
        if s.in_flight == 0 && s.open && !s.draining && s.pending > 0 {
            let idle = s
                .last_end
                .map_or(FLUSH_AFTER, |t| now.saturating_duration_since(t));
            if idle < FLUSH_AFTER {
                // The limit cannot be reached here: `end` flushes at once
                // when it is.
                if s.pending > 1 {
                    let n = s.pending - 1;
                    self.sink.send(Note::Served(n));
                    s.served += n;
                    s.pending = 1;
                }
                return Some(FLUSH_AFTER - idle);
            }
        }
        s.flush_scheduled = false;
        self.flush_locked(&mut s);
        None
    }

    /// Tells the daemon everything pending, whatever the time.
    pub(super) fn flush_all(&self) {
        let mut s = self.lock();
        s.flush_scheduled = false;
        self.flush_locked(&mut s);
    }

    fn flush_locked(&self, s: &mut TrackState) {
        let n = std::mem::take(&mut s.pending);
        if n == 0 || !s.open {
            return;
        }
        if s.in_flight > 0 {
            self.sink.send(Note::Served(n));
            if s.told_long && s.long == 0 && !s.draining {
                // The long request ended; the others are not long: `l` -> `r`.
                self.sink.send(Note::Req);
                s.told_long = false;
            }
        } else {
            if n > 1 {
                self.sink.send(Note::Served(n - 1));
            }
            self.sink.send(Note::Done);
            s.open = false;
            s.told_long = false;
        }
        s.served += n;
        if s.limit.is_some_and(|limit| s.served >= limit) {
            // The daemon retires the worker at this batch.
            self.set_draining(s);
        }
    }

    /// One more request in flight is long.
    pub(super) fn long(&self) {
        let mut s = self.lock();
        s.long += 1;
        if s.open && !s.told_long && !s.draining {
            self.sink.send(Note::Long);
            s.told_long = true;
        }
    }

    /// Shutdown: report nothing more (the slot is exiting), close
    /// connections after their current response.
    pub(super) fn drain(&self) {
        let mut s = self.lock();
        self.set_draining(&mut s);
        if s.in_flight == 0 {
            // Idle but not yet told: the daemon ends the worker once idle.
            self.flush_locked(&mut s);
        }
    }

    fn set_draining(&self, s: &mut TrackState) {
        s.draining = true;
        self.draining.store(true, Ordering::Release);
    }

    pub(super) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::tests::{take, tracker};

    /// The scheduled flush, once the moment after the last end has passed.
    fn flush(t: &Tracker) {
        let later = t
            .lock()
            .last_end
            .map_or_else(Instant::now, |e| e + FLUSH_AFTER);
        assert_eq!(t.flush(later), None, "a flush after the moment is final");
    }

    /// Requests the notes count: one per `Done`, `n` per `Served(n)`.
    fn counted(notes: &[Note]) -> u64 {
        notes
            .iter()
            .map(|n| match n {
                Note::Done => 1,
                Note::Served(n) => *n,
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn a_request_is_req_then_done_a_moment_later() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.ready();
        t.start();
        assert!(t.end(false), "a flush is scheduled");
        assert_eq!(take(&notes), [Wait, Req]);
        flush(&t);
        assert_eq!(take(&notes), [Done]);
        t.start();
        assert!(t.end(false));
        flush(&t);
        assert_eq!(take(&notes), [Req, Done]);
        assert_eq!(t.lock().served, 2);
    }

    #[test]
    fn requests_in_a_row_are_one_busy_period_and_each_is_counted() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.ready();
        take(&notes);
        for _ in 0..3 {
            t.start();
            t.end(false);
        }
        assert_eq!(take(&notes), [Req], "busy until the flush");
        flush(&t);
        assert_eq!(take(&notes), [Served(2), Done]);
        assert_eq!(t.lock().served, 3);
    }

    #[test]
    fn overlapping_requests_are_counted_without_leaving_r() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.ready();
        take(&notes);
        t.start();
        t.start();
        t.start();
        assert_eq!(take(&notes), [Req], "one busy period");
        assert!(t.end(false), "the first end schedules a flush");
        assert!(!t.end(false), "one flush at a time");
        assert_eq!(take(&notes), [], "batched");
        flush(&t);
        // Counted; one is still in flight, so the slot stays r: no Done,
        // no Req, no state change.
        assert_eq!(take(&notes), [Served(2)]);
        t.start();
        assert!(t.end(false));
        t.end(false);
        flush(&t);
        assert_eq!(take(&notes), [Served(1), Done]);
        flush(&t);
        assert_eq!(take(&notes), [], "nothing left to flush");
        assert_eq!(t.lock().served, 4);
        assert_eq!(t.lock().in_flight, 0);
    }

    #[test]
    fn a_worker_between_requests_stays_r_until_idle_for_a_moment() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.ready();
        take(&notes);
        for _ in 0..3 {
            t.start();
            t.end(false);
        }
        // The scheduled flush comes while the last request ended just now:
        // counted but one, still `r`, look again when the moment is over.
        let ended = t.lock().last_end.unwrap();
        let again = t.flush(ended + FLUSH_AFTER / 2);
        assert_eq!(again, Some(FLUSH_AFTER / 2));
        assert_eq!(take(&notes), [Req, Served(2)]);
        // Another request meanwhile: still between requests.
        t.start();
        t.end(false);
        let ended = t.lock().last_end.unwrap();
        assert!(t.flush(ended + FLUSH_AFTER / 4).is_some());
        assert_eq!(take(&notes), [Served(1)]);
        // Quiet for the whole moment: the busy period ends with the one
        // held back.
        assert_eq!(t.flush(ended + FLUSH_AFTER), None);
        assert_eq!(take(&notes), [Done]);
        assert_eq!(t.lock().served, 4);
    }

    #[test]
    fn requests_before_ready_are_reported_once_ready() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.start();
        assert_eq!(take(&notes), []);
        t.ready();
        t.end(false);
        flush(&t);
        assert_eq!(take(&notes), [Wait, Req, Done]);
    }

    #[test]
    fn long_is_kept_while_a_long_request_is_in_flight() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.ready();
        take(&notes);
        t.start();
        t.start();
        t.long();
        assert_eq!(take(&notes), [Req, Long]);
        // The short one ends: the long one keeps the process in l.
        t.end(false);
        flush(&t);
        assert_eq!(take(&notes), [Served(1)]);
        t.end(true);
        flush(&t);
        assert_eq!(take(&notes), [Done]);
        assert_eq!(t.lock().long, 0);
        // The long one ends first: back to r while the short one runs.
        t.start();
        t.long();
        t.start();
        assert_eq!(take(&notes), [Req, Long]);
        t.end(true);
        flush(&t);
        assert_eq!(take(&notes), [Served(1), Req]);
        t.end(false);
        flush(&t);
        assert_eq!(take(&notes), [Done]);
    }

    #[test]
    fn the_limit_is_told_at_once_and_nothing_is_lost_after_it() {
        use Note::*;
        let (t, notes) = tracker(Some(3));
        t.ready();
        take(&notes);
        for _ in 0..4 {
            t.start();
        }
        t.end(false);
        t.end(false);
        assert_eq!(take(&notes), [Req]);
        // The third reaches the limit: counted at once, not batched.
        assert!(!t.end(false));
        assert_eq!(take(&notes), [Served(3)]);
        assert!(t.is_draining(), "the daemon retires at the third");
        // The fourth was already in flight: still counted (the daemon
        // counts requests that end while the worker exits).
        assert!(!t.end(false));
        assert_eq!(take(&notes), [Done]);
        // One answered while draining is counted, as the worker exits.
        t.start();
        t.end(false);
        flush(&t);
        assert_eq!(take(&notes), [Served(1)]);
        assert_eq!(t.lock().served, 5);
    }

    #[test]
    fn the_limit_reached_by_the_last_request_in_flight_ends_with_done() {
        use Note::*;
        let (t, notes) = tracker(Some(2));
        t.ready();
        take(&notes);
        t.start();
        t.end(false);
        t.start();
        t.end(false);
        let notes = take(&notes);
        assert_eq!(notes, [Req, Served(1), Done]);
        assert_eq!(counted(&notes), 2);
        assert!(t.is_draining());
    }

    #[test]
    fn draining_keeps_the_process_busy_until_the_last_request() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.ready();
        take(&notes);
        t.start();
        t.start();
        assert!(t.end(false));
        t.drain();
        t.ready();
        flush(&t);
        assert_eq!(
            take(&notes),
            [Req, Served(1)],
            "still busy: one is in flight"
        );
        t.start();
        assert!(!t.end(false), "no batching while draining");
        t.end(false);
        assert_eq!(
            take(&notes),
            [Served(1), Done],
            "at once, every one counted"
        );
        t.start();
        t.end(false);
        assert_eq!(take(&notes), [Served(1)], "counted while exiting");
    }

    #[test]
    fn draining_an_idle_worker_ends_its_busy_period_at_once() {
        use Note::*;
        let (t, notes) = tracker(None);
        t.ready();
        t.start();
        assert!(t.end(false));
        t.drain();
        assert_eq!(take(&notes), [Wait, Req, Done]);
        flush(&t);
        assert_eq!(take(&notes), []);
    }

    #[test]
    fn every_request_is_counted_whatever_the_interleaving() {
        // A small random walk of starts, ends and flushes: what the notes
        // count is what ended while reported, exactly.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let (t, notes) = tracker(None);
            t.ready();
            let mut ended = 0u64;
            for _ in 0..50 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                match seed % 3 {
                    0 => t.start(),
                    1 if t.lock().in_flight > 0 => {
                        t.end(false);
                        ended += 1;
                    }
                    _ => flush(&t),
                }
            }
            while t.lock().in_flight > 0 {
                t.end(false);
                ended += 1;
            }
            flush(&t);
            let notes = take(&notes);
            assert_eq!(counted(&notes), ended, "{notes:?}");
            assert_eq!(
                notes.last(),
                if ended > 0 {
                    Some(&Note::Done)
                } else {
                    Some(&Note::Wait)
                }
            );
        }
    }
}
