//! OS signals turned into actor messages, in each process.
//!
//! Every process of the daemon that runs an actix `System` (the supervisor
//! and each worker) listens with actix-rt's (tokio's) signal streams, which
//! install a handler that only writes to a self-pipe; the stream then sends
//! an [`OsSignal`] message to that process's `DaemonActor`.
//!
//! | signal | supervisor | worker |
//! |---|---|---|
//! | `SIGTERM`, `SIGINT`, `SIGQUIT` | graceful shutdown of the daemon | finish the current request, exit |
//! | `SIGHUP` | reopen the log file, `Hup` to subscribers, HUP to every ready worker | reopen the log file, `Hup` to subscribers |
//! | `SIGUSR2` | the verbose peek report goes to the log | the same, for the worker |
//! | `SIGCHLD` | reap every exited child | reap registered foreign children |
//! | `SIGUSR1` | graceful reload: every worker is replaced by a fresh one (pre-fork) | ignored |
//! | `SIGTTIN`, `SIGTTOU` | one more, one fewer spare: `min_spare` and `max_spare` up or down by one, within `max_children` (pre-fork) | ignored |
//!
//! Caveats, as for any tokio signal stream: signals of one kind that arrive
//! close together may be coalesced into one message; and once a process
//! listens for a signal, its default action (such as termination) is gone for
//! the rest of that process's life.
//!
//! The spawner ignores `SIGINT`, `SIGTERM`, `SIGHUP`, `SIGQUIT`, `SIGUSR1` and
//! `SIGUSR2` (a terminal's Ctrl-C must not kill it under the supervisor); it
//! ends when the supervisor closes its socket or dies. A new worker is
//! born with `SIGINT`, `SIGTERM`, `SIGQUIT`, `SIGHUP`, `SIGUSR1` and
//! `SIGUSR2` blocked, and unblocks them once its runtime has installed its
//! handlers: a HUP from log rotation cannot kill a worker that is still
//! starting, and a TERM sent while it starts (a shutdown that began just as
//! it was forked) is not lost but handled, as a graceful stop, once the
//! worker can.

use actix::Addr;
use actix_rt::signal::unix::{SignalKind, signal};
use slog::{Logger, error};

use crate::daemon::DaemonActor;
use crate::messages::OsSignal;

/// Starts one task per signal that forwards it to `addr`.
pub(crate) fn listen(addr: Addr<DaemonActor>, log: &Logger, supervisor: bool) {
    let supervisor_only = [
        (SignalKind::user_defined1(), OsSignal::Usr1),
        (SignalKind::from_raw(libc::SIGTTIN), OsSignal::Ttin),
        (SignalKind::from_raw(libc::SIGTTOU), OsSignal::Ttou),
    ];
    let extra = if supervisor {
        &supervisor_only[..]
    } else {
        &[]
    };
    for (kind, msg) in [
        (SignalKind::terminate(), OsSignal::Term),
        (SignalKind::interrupt(), OsSignal::Int),
        (SignalKind::quit(), OsSignal::Quit),
        (SignalKind::hangup(), OsSignal::Hup),
        (SignalKind::user_defined2(), OsSignal::Usr2),
        (SignalKind::child(), OsSignal::Chld),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        match signal(kind) {
            Ok(mut stream) => {
                let addr = addr.clone();
                actix_rt::spawn(async move {
                    while stream.recv().await.is_some() {
                        addr.do_send(msg);
                    }
                });
            }
            Err(err) => {
                error!(log, "cannot listen for a signal"; "signal" => ?msg, "error" => %err)
            }
        }
    }
}
