//! Fork per request: how many queued requests go to workers, how many
//! workers to fork, and whether the acceptor pauses.
//!
//! A request goes into the dispatch socket only while more workers wait for
//! one (`F`, `f`, `.`) than requests are in the socket, so every request
//! there has a worker on its way; the rest wait in the supervisor's queue.
//! Workers are forked for the requests left and for `warm_workers` spares,
//! within the free slots. The acceptor is paused while no worker could take
//! another request (every slot busy, none waiting or free) or requests
//! wait in the queue, and resumed when one could.

/// The fork-per-request pool as counted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Census {
    /// Workers asked for or waiting for their request (`F`, `f`, `.`).
    pub(crate) waiting: usize,
    /// Free slots.
    pub(crate) free: usize,
    /// Requests in the dispatch socket, not yet claimed.
    pub(crate) in_socket: usize,
    /// Requests in the supervisor's queue.
    pub(crate) queued: usize,
    /// Warm workers wanted (0 while stopping).
    pub(crate) warm: usize,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Plan {
    /// Fork this many workers (first).
    pub(crate) fork: usize,
    /// Then hand this many queued requests to the socket.
    pub(crate) send: usize,
}

/// The plan for a census.
pub(crate) fn plan(c: Census) -> Plan {
    let first = c.queued.min(c.waiting.saturating_sub(c.in_socket));
    let in_socket = c.in_socket + first;
    let queued = c.queued - first;
    let fork = c
        .free
        .min((in_socket + queued + c.warm).saturating_sub(c.waiting));
    let then = queued.min((c.waiting + fork).saturating_sub(in_socket));
    Plan {
        fork,
        send: first + then,
    }
}

/// Whether the acceptor must hold (pause) for a census.
pub(crate) fn hold(c: Census) -> bool {
    c.waiting + c.free <= c.in_socket || c.queued > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census(waiting: usize, free: usize, in_socket: usize, queued: usize, warm: usize) -> Census {
        Census {
            waiting,
            free,
            in_socket,
            queued,
            warm,
        }
    }

    #[test]
    fn the_dispatch_follows_the_table() {
        // (census, fork, send, hold after the plan is carried out)
        let table = [
            (census(0, 4, 0, 0, 1), 1, 0, false), // warm spare at start
            (census(1, 3, 0, 1, 1), 1, 1, false), // a request: to the warm one, fork a new warm
            (census(1, 3, 1, 0, 1), 1, 0, false), // its worker has not claimed yet: one more warm
            (census(0, 0, 0, 2, 1), 0, 0, true),  // every slot busy: queue and pause
            (census(1, 0, 0, 3, 1), 0, 1, true),  // one slot freed: one goes, two wait
            (census(2, 2, 0, 5, 1), 2, 4, true),  // forks for the rest within the slots
            (census(3, 5, 3, 0, 0), 0, 0, false), // stopping: no warm
        ];
        for (i, (c, fork, send, hold_after)) in table.into_iter().enumerate() {
            let p = plan(c);
            assert_eq!((p.fork, p.send), (fork, send), "row {i}: {c:?}");
            let after = Census {
                waiting: c.waiting + p.fork,
                free: c.free - p.fork,
                in_socket: c.in_socket + p.send,
                queued: c.queued - p.send,
                warm: c.warm,
            };
            assert_eq!(hold(after), hold_after, "row {i}: {after:?}");
            assert!(
                after.in_socket <= after.waiting,
                "row {i}: a request without a worker"
            );
        }
    }
}
