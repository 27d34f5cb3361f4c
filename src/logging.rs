//! Each process builds its own logger after it comes into being: an async
//! drain (slog-async, blocking when full so that no line is dropped) in the
//! supervisor and workers, a synchronous one in the spawner. Every drain
//! writes whole records to stderr, which is the log file once redirected, so
//! reopening the log file on HUP moves every later line to the new file.

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

/// Builds this process's async logger and makes it [`logger`]'s answer.
/// [`flush`] writes every queued record and stops the drain's thread.
pub(crate) fn init(
    config: &Config,
    values: slog::OwnedKV<impl slog::SendSyncRefUnwindSafeKV + 'static>,
) -> Logger {
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let (drain, guard) = slog_async::Async::new(drain)
        .chan_size(4096)
        .overflow_strategy(slog_async::OverflowStrategy::Block)
        .thread_name("actix-daemon-log".into())
        .build_with_guard();
    let level = if config.verbose() {
        slog::Level::Debug
    } else {
        slog::Level::Info
    };
    let drain = slog::LevelFilter::new(drain.fuse(), level).fuse();
    let log = Logger::root(drain, values);
    if let Ok(mut current) = CURRENT.write() {
        *current = Some(log.clone());
    }
    if let Ok(mut slot) = GUARD.lock() {
        *slot = Some(guard);
    }
    log
}

/// Writes every queued record to the log and stops the async drain. Called
/// before a process ends, including from a worker's panic hook (hence
/// `try_lock`: a panic inside the logger must not deadlock here).
pub(crate) fn flush() {
    let guard = GUARD.try_lock().ok().and_then(|mut g| g.take());
    drop(guard);
}
