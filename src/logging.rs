//! Each process builds its own logger after it comes into being (an async
//! drain's thread does not survive a fork):
//!
//! - the supervisor: an async drain (slog-async, blocking when its queue is
//!   full, so that no line is dropped), flushed before `run` returns;
//! - the spawner and every worker: a synchronous drain. The spawner must not
//!   start a thread (DESIGN.md invariant 3); a worker must not need one to
//!   log, because threads count against `RLIMIT_NPROC` (at the process
//!   limit a worker that could not start its log thread would die with its
//!   request), and because a short-lived worker would pay a thread start and
//!   join per request.
//!
//! Every drain writes each record with one `write(2)` to stderr, which is the
//! log file once redirected, so reopening the log file on HUP moves every
//! later line to the new file and lines of different processes never
//! interleave. Timestamps are UTC (`Nov 23 22:22:46.441`: no year, no zone,
//! milliseconds), the same in every process and
//! without reading the time zone database per line. The supervisor's
//! records are timestamped when its log thread writes them, so they can
//! appear a little after a worker's line about the same moment.

use std::sync::{Mutex, RwLock};

use slog::{Drain, Logger, o};

use crate::config::Config;

static CURRENT: RwLock<Option<Logger>> = RwLock::new(None);
static GUARD: Mutex<Option<slog_async::AsyncGuard>> = Mutex::new(None);

/// This process's logger, as the daemon built it (a discarding logger
/// outside a daemon). Records carry `pid` and `role` (and `slot` in workers).
pub fn logger() -> Logger {
    CURRENT
        .read()
        .ok()
        .and_then(|l| l.clone())
        .unwrap_or_else(|| Logger::root(slog::Discard, o!()))
}

/// Whether the drain runs on its own thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    Async,
    Sync,
}

fn level(config: &Config) -> slog::Level {
    if config.verbose() {
        slog::Level::Debug
    } else {
        slog::Level::Info
    }
}

/// Builds this process's logger and makes it [`logger`]'s answer. With an
/// async drain, [`flush`] writes every queued record and stops its thread.
pub(crate) fn init(
    config: &Config,
    drained: Drained,
    values: slog::OwnedKV<impl slog::SendSyncRefUnwindSafeKV + 'static>,
) -> Logger {
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let format = slog_term::FullFormat::new(decorator)
        .use_utc_timestamp()
        .build()
        .fuse();
    let log = match drained {
        Drained::Sync => {
            let drain = slog::LevelFilter::new(format, level(config)).fuse();
            Logger::root(drain, values)
        }
        Drained::Async => {
            let (drain, guard) = slog_async::Async::new(format)
                .chan_size(4096)
                .overflow_strategy(slog_async::OverflowStrategy::Block)
                .thread_name("actix-daemon-log".into())
                .build_with_guard();
            if let Ok(mut slot) = GUARD.lock() {
                *slot = Some(guard);
            }
            let drain = slog::LevelFilter::new(drain.fuse(), level(config)).fuse();
            Logger::root(drain, values)
        }
    };
    if let Ok(mut current) = CURRENT.write() {
        *current = Some(log.clone());
    }
    log
}

/// Writes every queued record to the log and stops the async drain, if
/// there is one. Called before a process ends, including from a worker's
/// panic hook (hence `try_lock`: a panic inside the logger must not
/// deadlock here).
pub(crate) fn flush() {
    let guard = GUARD.try_lock().ok().and_then(|mut g| g.take());
    drop(guard);
}
