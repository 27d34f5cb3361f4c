//! The scoreboard states of a slot, with the seed's letters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What the process in a scoreboard slot is doing.
///
/// The letters are those of POE::Component::Daemon's manual; they appear only
/// in [`Display`](fmt::Display) and [`FromStr`], and in the `Slots [ ... ]` line
/// of the status report.
///
/// | state | letter | meaning |
/// |---|---|---|
/// | [`Empty`](Self::Empty) | `' '` | slot is empty |
/// | [`Forking`](Self::Forking) | `F` | the supervisor asked for a worker; no worker runs yet |
/// | [`Starting`](Self::Starting) | `f` | the worker exists and is setting itself up |
/// | [`FirstWait`](Self::FirstWait) | `.` | waiting for its first request |
/// | [`Wait`](Self::Wait) | `w` | waiting for its next request |
/// | [`Req`](Self::Req) | `r` | handling a request |
/// | [`Long`](Self::Long) | `l` | handling a long request |
/// | [`Exit`](Self::Exit) | `e` | exiting |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum SlotState {
    /// The slot is free.
    Empty = 0,
    /// The supervisor asked the spawner for a worker for this slot (the seed's `F`).
    Forking = 1,
    /// The worker process exists and is setting up (the seed's `f`).
    Starting = 2,
    /// The worker waits for its first request (`.`).
    FirstWait = 3,
    /// The worker waits for its next request (`w`).
    Wait = 4,
    /// The worker handles a request (`r`).
    Req = 5,
    /// The worker handles a long request (`l`).
    Long = 6,
    /// The worker is exiting (`e`).
    Exit = 7,
}

impl SlotState {
    /// All states, in their numeric order.
    pub const ALL: [SlotState; 8] = [
        SlotState::Empty,
        SlotState::Forking,
        SlotState::Starting,
        SlotState::FirstWait,
        SlotState::Wait,
        SlotState::Req,
        SlotState::Long,
        SlotState::Exit,
    ];

    /// The seed's letter for this state.
    pub const fn letter(self) -> char {
        match self {
            SlotState::Empty => ' ',
            SlotState::Forking => 'F',
            SlotState::Starting => 'f',
            SlotState::FirstWait => '.',
            SlotState::Wait => 'w',
            SlotState::Req => 'r',
            SlotState::Long => 'l',
            SlotState::Exit => 'e',
        }
    }

    pub(crate) const fn from_u8(value: u8) -> Option<SlotState> {
        match value {
            0 => Some(SlotState::Empty),
            1 => Some(SlotState::Forking),
            2 => Some(SlotState::Starting),
            3 => Some(SlotState::FirstWait),
            4 => Some(SlotState::Wait),
            5 => Some(SlotState::Req),
            6 => Some(SlotState::Long),
            7 => Some(SlotState::Exit),
            _ => None,
        }
    }

    /// A worker waiting for a request (`.` or `w`): a spare, in pre-fork terms.
    pub const fn is_idle(self) -> bool {
        matches!(self, SlotState::FirstWait | SlotState::Wait)
    }

    /// A worker handling a request (`r` or `l`).
    pub const fn is_busy(self) -> bool {
        matches!(self, SlotState::Req | SlotState::Long)
    }

    /// A worker on its way up (`F` or `f`): it will be a spare soon.
    pub const fn is_starting(self) -> bool {
        matches!(self, SlotState::Forking | SlotState::Starting)
    }
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// The error of parsing a [`SlotState`] from a letter that is not one of the seed's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown slot state {0:?}: expected one of ' ', F, f, ., w, r, l, e")]
pub struct ParseSlotStateError(String);

impl FromStr for SlotState {
    type Err = ParseSlotStateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => SlotState::ALL
                .into_iter()
                .find(|state| state.letter() == c)
                .ok_or_else(|| ParseSlotStateError(s.to_owned())),
            _ => Err(ParseSlotStateError(s.to_owned())),
        }
    }
}

/// A status update without its payload: what the transition table needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpdateKind {
    Req,
    Long,
    Wait,
    Done,
    Served,
}

impl UpdateKind {
    pub(crate) fn of(update: &crate::UpdateStatus) -> UpdateKind {
        match update {
            crate::UpdateStatus::Req(_) => UpdateKind::Req,
            crate::UpdateStatus::Long => UpdateKind::Long,
            crate::UpdateStatus::Wait => UpdateKind::Wait,
            crate::UpdateStatus::Done => UpdateKind::Done,
            crate::UpdateStatus::Served(_) => UpdateKind::Served,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            UpdateKind::Req => "req",
            UpdateKind::Long => "long",
            UpdateKind::Wait => "wait",
            UpdateKind::Done => "done",
            UpdateKind::Served => "served",
        }
    }
}

/// What a status update does to a worker's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Move to this state.
    To(SlotState),
    /// The request ended: count it, then wait, or exit at the `requests` limit.
    Finish,
    /// Requests ended while others are in flight: count them, stay busy (or
    /// exit at the `requests` limit).
    Count,
    /// Already there: nothing to do.
    Stay,
    /// Makes no sense here: log it, change nothing.
    Invalid,
}

/// The worker's transition table: the seed's manual, made exact.
///
/// Pre-fork: `f` -Wait-> `.`; `.`/`w` -Req-> `r`, -Long-> `l`; `r`/`l`
/// -Done or Wait-> finished; `r`/`l` -Served-> counted, staying; `r`
/// -Long-> `l`, `l` -Req-> `r`. Fork per
/// request: the worker starts in `r`; `r` -Long-> `l`; `r`/`l` -Done->
/// finished. Anything else is invalid (or a repeat, which stays).
pub(crate) fn worker_step(prefork: bool, state: SlotState, update: UpdateKind) -> Step {
    use SlotState::*;
    match (update, state) {
        (UpdateKind::Wait, Starting) if prefork => Step::To(FirstWait),
        (UpdateKind::Wait, Req | Long) if prefork => Step::Finish,
        (UpdateKind::Wait, FirstWait | Wait) if prefork => Step::Stay,
        (UpdateKind::Req, FirstWait | Wait | Long) if prefork => Step::To(Req),
        (UpdateKind::Req, Req) if prefork => Step::Stay,
        (UpdateKind::Long, Req) => Step::To(Long),
        (UpdateKind::Long, FirstWait | Wait) if prefork => Step::To(Long),
        (UpdateKind::Long, Long) => Step::Stay,
        (UpdateKind::Done, Req | Long) => Step::Finish,
        (UpdateKind::Served, Req | Long) if prefork => Step::Count,
        _ => Step::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_round_trip_and_match_the_manual() {
        let letters: String = SlotState::ALL.iter().map(|s| s.letter()).collect();
        assert_eq!(letters, " Ff.wrle");
        for state in SlotState::ALL {
            assert_eq!(state.to_string().parse::<SlotState>(), Ok(state));
            assert_eq!(SlotState::from_u8(state as u8), Some(state));
        }
        assert!("x".parse::<SlotState>().is_err());
        assert!("rw".parse::<SlotState>().is_err());
        assert_eq!(SlotState::from_u8(8), None);
    }

    #[test]
    fn worker_transitions_follow_the_manual() {
        use SlotState::*;
        let updates = [
            UpdateKind::Req,
            UpdateKind::Long,
            UpdateKind::Wait,
            UpdateKind::Done,
            UpdateKind::Served,
        ];
        for prefork in [true, false] {
            for state in SlotState::ALL {
                for update in updates {
                    let step = worker_step(prefork, state, update);
                    match step {
                        // A worker only ever writes r, l or the first wait;
                        // `w` comes from Finish, `e`, `F` and ` ` from the daemon.
                        Step::To(next) => assert!(
                            matches!(next, Req | Long | FirstWait),
                            "{prefork} {state:?} {update:?} -> {next:?}"
                        ),
                        Step::Finish | Step::Count => {
                            assert!(state.is_busy(), "{state:?} {update:?}")
                        }
                        Step::Stay | Step::Invalid => {}
                    }
                    // Nothing a worker says touches a slot that is empty,
                    // forking in the parent, or exiting.
                    if matches!(state, Empty | Forking | Exit) {
                        assert_eq!(step, Step::Invalid, "{state:?} {update:?}");
                    }
                }
            }
        }
        // The pre-fork lifecycle of the manual.
        assert_eq!(
            worker_step(true, Starting, UpdateKind::Wait),
            Step::To(FirstWait)
        );
        assert_eq!(worker_step(true, FirstWait, UpdateKind::Req), Step::To(Req));
        assert_eq!(worker_step(true, Req, UpdateKind::Long), Step::To(Long));
        assert_eq!(worker_step(true, Long, UpdateKind::Done), Step::Finish);
        assert_eq!(worker_step(true, Req, UpdateKind::Wait), Step::Finish);
        assert_eq!(worker_step(true, Wait, UpdateKind::Done), Step::Invalid);
        assert_eq!(worker_step(true, Starting, UpdateKind::Req), Step::Invalid);
        // Fork per request: no waiting, no new request in a worker.
        assert_eq!(worker_step(false, Req, UpdateKind::Done), Step::Finish);
        assert_eq!(worker_step(false, Req, UpdateKind::Wait), Step::Invalid);
        assert_eq!(worker_step(false, Req, UpdateKind::Req), Step::Invalid);
        assert_eq!(worker_step(false, Req, UpdateKind::Long), Step::To(Long));
        // Served counts while busy, in a pool only.
        assert_eq!(worker_step(true, Req, UpdateKind::Served), Step::Count);
        assert_eq!(worker_step(true, Long, UpdateKind::Served), Step::Count);
        assert_eq!(worker_step(true, Wait, UpdateKind::Served), Step::Invalid);
        assert_eq!(
            worker_step(true, FirstWait, UpdateKind::Served),
            Step::Invalid
        );
        assert_eq!(worker_step(false, Req, UpdateKind::Served), Step::Invalid);
    }

    #[test]
    fn classes() {
        assert!(SlotState::Wait.is_idle() && SlotState::FirstWait.is_idle());
        assert!(SlotState::Req.is_busy() && SlotState::Long.is_busy());
        assert!(SlotState::Forking.is_starting() && SlotState::Starting.is_starting());
        assert!(!SlotState::Exit.is_idle() && !SlotState::Empty.is_busy());
    }
}
