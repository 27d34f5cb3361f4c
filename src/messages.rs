//! Every message `DaemonActor` handles, and the signals it sends.

use actix::prelude::*;

use crate::payload::Payload;
use crate::status::{PeekReport, StatusReport};

/// Tell the daemon what this process is doing: the seed's `update_status`.
///
/// Send it to [`DaemonActor`](crate::DaemonActor):
/// `DaemonActor::from_registry().do_send(UpdateStatus::Wait)`.
///
/// | update | in a pre-forked worker | in a fork-per-request supervisor | in a fork-per-request worker |
/// |---|---|---|---|
/// | `Req(payload)` | a request started (`r`); the payload is ignored | hand the payload to a worker of its own (a warm one, or one forked for it); it gets `Child(Some(payload))` | — |
/// | `Long` | a long request started or the current one is long (`l`) | — | the request is long (`l`) |
/// | `Wait` | first time (from `f`): ready (`.`), the daemon answers `Accept`; while busy: the same as `Done`; while waiting: nothing | — | — |
/// | `Done` | the request ended (`w`); `Accept` again, or `Shutdown` once `requests` are served | — | the request ended: the worker exits |
/// | `Served(n)` | while busy (`r`, `l`): `n` requests ended and others are still in flight; counted, the state stays, `Shutdown` once `requests` are served | — | — |
///
/// An update marked — or one that does not follow from the current state
/// (`Done` while waiting, say) is logged with the process's role, pid and slot
/// and changes nothing.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum UpdateStatus {
    /// Handling a request (`r`). In a fork-per-request supervisor this forks
    /// a worker that receives the payload.
    Req(Payload),
    /// Handling a long request (`l`).
    Long,
    /// Waiting for a request (`w`, or `.` before the first).
    Wait,
    /// The request is done.
    Done,
    /// `n` requests ended while the worker stays busy with others: for a
    /// worker that serves requests concurrently (an HTTP server with
    /// keep-alive connections, say), so that it need not leave `r` and come
    /// back for every request. They count toward `requests` and the pool's
    /// request counter, and restart the time a worker has been `r` (the
    /// babysitter's hung-request clock: the worker makes progress); the time
    /// in `l` runs on. `Served(0)` does nothing.
    Served(u64),
}

/// Subscribe an actor to [`DaemonSignal`]s.
///
/// A subscriber always sees the lifecycle in order, even if it subscribes
/// late: `Start`, then `Parent` or `Child`, then the current `Accept` or
/// `Pause`, then (if it has begun) `Shutdown`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<DaemonSignal>);

/// Stop sending [`DaemonSignal`]s to this recipient.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Unsubscribe(pub Recipient<DaemonSignal>);

/// Ask for the daemon's status report (the seed's `status`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "StatusReport")]
pub struct Status;

/// Ask what this process's actor system is doing and why it would not exit
/// (the seed's `peek`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "PeekReport")]
pub struct Peek {
    /// Add per-subscriber, per-slot and per-descriptor details.
    pub verbose: bool,
}

/// Report a child process the application started itself (the seed's
/// `foreign_child`): the daemon reaps it, and TERMs it (then KILLs it after
/// the shutdown timeout) when it shuts down.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ForeignChild(pub i32);

/// Shut the daemon down, as TERM or INT would.
///
/// In the supervisor: subscribers get `Shutdown`, every worker and foreign
/// child gets TERM, then KILL after the shutdown timeout, everything is
/// reaped, and `run` returns. In a worker: that worker finishes its request
/// and exits.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// What the daemon tells its subscribers: the seed's `daemon_*` signals.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum DaemonSignal {
    /// The daemon started in this process (first, in every process).
    Start,
    /// This process is the supervisor. Pre-fork: sent once the initial
    /// workers are up.
    Parent,
    /// This process is a worker. Fork per request: carries the payload of
    /// the `Req` that forked it; handle that request. Pre-fork: `None`; set
    /// `Wait` when ready.
    Child(Option<Payload>),
    /// Accept a request now. Pre-fork worker: after `Wait` (and after each
    /// `Done`). Fork per request supervisor: at start, and when the number of
    /// workers falls below `max_children` after a `Pause`.
    Accept,
    /// Fork per request supervisor: `max_children` workers run; stop
    /// accepting until `Accept`.
    Pause,
    /// Time to go: TERM, INT or [`Shutdown`], or a pre-forked worker that has
    /// served its `requests`. Stop accepting; finish the current request.
    Shutdown,
    /// The process got HUP and has reopened the log file; reopen your own.
    Hup,
}

/// OS signals, delivered to `DaemonActor` by its signal tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub(crate) enum OsSignal {
    Term,
    Int,
    Quit,
    Hup,
    Usr2,
    Chld,
    Usr1,
    Ttin,
    Ttou,
}

impl OsSignal {
    /// The signal's name, as logs show it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            OsSignal::Term => "SIGTERM",
            OsSignal::Int => "SIGINT",
            OsSignal::Quit => "SIGQUIT",
            OsSignal::Hup => "SIGHUP",
            OsSignal::Usr2 => "SIGUSR2",
            OsSignal::Chld => "SIGCHLD",
            OsSignal::Usr1 => "SIGUSR1",
            OsSignal::Ttin => "SIGTTIN",
            OsSignal::Ttou => "SIGTTOU",
        }
    }
}
