//! Fork per request: how many queued requests go to workers, how many
//! workers to fork, and whether the acceptor pauses.
//!
//! A request is given to one worker on its own channel, and only to a
//! worker that has never had one (`F`, `f` or `.`, ready ones first); the
//! rest wait in the supervisor's queue. Workers are forked for the
//! requests left and for `warm_workers` spares, within the free slots. The
//! acceptor is paused while requests wait in the queue, or no worker could
//! take another (no taker, none on its way, no free slot), and resumed
//! when one could. So the queue holds at most what the acceptor accepted
//! before it saw the pause.

/// The fork-per-request pool as counted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Census {
    /// Workers a request can be given to now (`F`, `f`, `.`, never given one).
    pub(crate) takers: usize,
    /// Spawns asked for and not reported yet.
    pub(crate) pending: usize,
    /// Free slots.
    pub(crate) free: usize,
    /// Requests in the supervisor's queue.
    pub(crate) queued: usize,
    /// Warm workers wanted (0 while stopping).
    pub(crate) warm: usize,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Plan {
    /// Give this many queued requests to takers.
    pub(crate) send: usize,
    /// Then fork this many workers.
    pub(crate) fork: usize,
}

/// The plan for a census.
pub(crate) fn plan(c: Census) -> Plan {
    let send = c.queued.min(c.takers);
    let left = c.queued - send;
    let coming = c.takers - send + c.pending;
    let fork = c.free.min((left + c.warm).saturating_sub(coming));
    Plan { send, fork }
}

/// Whether the acceptor must hold (pause) for a census.
pub(crate) fn hold(c: Census) -> bool {
    c.queued > 0 || c.takers + c.pending + c.free == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census(takers: usize, pending: usize, free: usize, queued: usize, warm: usize) -> Census {
        Census {
            takers,
            pending,
            free,
            queued,
            warm,
        }
    }

    #[test]
    fn the_dispatch_follows_the_table() {
        // (census, send, fork, hold after the plan is carried out)
        let table = [
            (census(0, 0, 4, 0, 1), 0, 1, false), // warm spare at start
            (census(0, 1, 3, 0, 1), 0, 0, false), // the spare is on its way
            (census(1, 0, 3, 1, 1), 1, 1, false), // a request: to the warm one, fork a new warm
            (census(0, 1, 3, 1, 1), 0, 1, true),  // no taker yet: it waits, one more fork
            (census(0, 0, 0, 2, 1), 0, 0, true),  // every slot busy: queue and pause
            (census(1, 0, 0, 3, 1), 1, 0, true),  // one slot freed: one goes, two wait
            (census(2, 0, 2, 5, 1), 2, 2, true),  // forks for the rest within the slots
            (census(0, 0, 1, 0, 0), 0, 0, false), // stopping: no warm, not full
            (census(3, 0, 5, 0, 0), 0, 0, false), // stopping, takers idle
            (census(0, 0, 0, 0, 1), 0, 0, true),  // full, nothing queued: hold
        ];
        for (i, (c, send, fork, hold_after)) in table.into_iter().enumerate() {
            let p = plan(c);
            assert_eq!((p.send, p.fork), (send, fork), "row {i}: {c:?}");
            let after = Census {
                takers: c.takers - p.send,
                pending: c.pending + p.fork,
                free: c.free - p.fork,
                queued: c.queued - p.send,
                warm: c.warm,
            };
            assert_eq!(hold(after), hold_after, "row {i}: {after:?}");
            assert!(p.send <= c.takers, "row {i}: a request without a worker");
        }
    }
}
