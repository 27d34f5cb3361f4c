//! What a registered worker wrote in its slot, checked against the
//! registry: the scoreboard is a report, not a source of truth.
//!
//! A worker may write its state (`f`, `.`, `w`, `r`, `l`, `e`) and its
//! request count. Anything else is nonsense from that worker: a pid that is
//! not the one the registry holds for the slot, a state byte that is no
//! state, a state only the supervisor writes (`' '`, and `F` once the
//! worker has been seen running), a state that goes back in the worker's
//! life (`e` to `w`, `w` to `f`), a request count that shrinks.

use crate::state::SlotState;

/// What the supervisor read of one registered worker's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reading {
    pub(crate) state: u8,
    pub(crate) pid: i32,
    pub(crate) requests: u64,
}

/// What the supervisor knows of that worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Known {
    pub(crate) pid: i32,
    pub(crate) seen: SlotState,
    pub(crate) requests_seen: u64,
}

/// Why a reading is nonsense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nonsense {
    ForeignPid(i32),
    NoState(u8),
    SupervisorsState(SlotState),
    Backwards { from: SlotState, to: SlotState },
    FewerRequests { from: u64, to: u64 },
}

impl std::fmt::Display for Nonsense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Nonsense::ForeignPid(pid) => write!(f, "wrote pid {pid} into its slot"),
            Nonsense::NoState(byte) => write!(f, "wrote state byte {byte}, which is no state"),
            Nonsense::SupervisorsState(s) => {
                write!(
                    f,
                    "wrote state '{}', which only the supervisor writes",
                    s.letter()
                )
            }
            Nonsense::Backwards { from, to } => {
                write!(f, "went back from '{}' to '{}'", from.letter(), to.letter())
            }
            Nonsense::FewerRequests { from, to } => {
                write!(f, "lowered its request count from {from} to {to}")
            }
        }
    }
}

/// The stage of a worker's life a state belongs to; states only move on.
fn stage(state: SlotState) -> u8 {
    match state {
        SlotState::Empty => 0,
        SlotState::Forking => 1,
        SlotState::Starting => 2,
        SlotState::FirstWait | SlotState::Wait | SlotState::Req | SlotState::Long => 3,
        SlotState::Exit => 4,
    }
}

/// Checks one reading. `Ok` holds the state to count the worker by.
pub(crate) fn check(reading: Reading, known: Known) -> Result<SlotState, Nonsense> {
    let state = SlotState::from_u8(reading.state).ok_or(Nonsense::NoState(reading.state))?;
    // The supervisor writes the pid; 0 is a slot the worker has not been
    // reported in yet (the supervisor writes it at registration).
    if reading.pid != known.pid && reading.pid != 0 {
        return Err(Nonsense::ForeignPid(reading.pid));
    }
    if state == SlotState::Empty || (state == SlotState::Forking && stage(known.seen) > 1) {
        return Err(Nonsense::SupervisorsState(state));
    }
    if stage(state) < stage(known.seen) {
        return Err(Nonsense::Backwards {
            from: known.seen,
            to: state,
        });
    }
    if reading.requests < known.requests_seen {
        return Err(Nonsense::FewerRequests {
            from: known.requests_seen,
            to: reading.requests,
        });
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use SlotState::*;

    fn reading(state: SlotState, pid: i32, requests: u64) -> Reading {
        Reading {
            state: state as u8,
            pid,
            requests,
        }
    }

    fn known(seen: SlotState, requests_seen: u64) -> Known {
        Known {
            pid: 100,
            seen,
            requests_seen,
        }
    }

    #[test]
    fn readings_are_checked_against_what_the_supervisor_knows() {
        let table = [
            (reading(Starting, 100, 0), known(Forking, 0), Ok(Starting)),
            (reading(Forking, 0, 0), known(Forking, 0), Ok(Forking)),
            (reading(Req, 100, 3), known(Starting, 0), Ok(Req)),
            (reading(Wait, 100, 3), known(Req, 3), Ok(Wait)),
            (reading(FirstWait, 100, 3), known(Wait, 3), Ok(FirstWait)),
            (reading(Exit, 100, 9), known(Long, 3), Ok(Exit)),
            (
                reading(Wait, 4242, 3),
                known(Wait, 3),
                Err(Nonsense::ForeignPid(4242)),
            ),
            (
                reading(Wait, 1, 3),
                known(Wait, 3),
                Err(Nonsense::ForeignPid(1)),
            ),
            (
                reading(Empty, 100, 3),
                known(Wait, 3),
                Err(Nonsense::SupervisorsState(Empty)),
            ),
            (
                reading(Forking, 100, 3),
                known(Wait, 3),
                Err(Nonsense::SupervisorsState(Forking)),
            ),
            (
                reading(Wait, 100, 3),
                known(Exit, 3),
                Err(Nonsense::Backwards {
                    from: Exit,
                    to: Wait,
                }),
            ),
            (
                reading(Starting, 100, 3),
                known(Req, 3),
                Err(Nonsense::Backwards {
                    from: Req,
                    to: Starting,
                }),
            ),
            (
                reading(Req, 100, 2),
                known(Req, 3),
                Err(Nonsense::FewerRequests { from: 3, to: 2 }),
            ),
        ];
        for (i, (r, k, want)) in table.into_iter().enumerate() {
            assert_eq!(check(r, k), want, "row {i}");
        }
        let bad = Reading {
            state: 200,
            pid: 100,
            requests: 0,
        };
        assert_eq!(check(bad, known(Wait, 0)), Err(Nonsense::NoState(200)));
    }
}
