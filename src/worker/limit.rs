//! A pre-forked worker's request limit: `requests` plus its own jitter.

use crate::config::{Config, Mode};

/// This worker's `requests` limit, its jitter drawn once per process.
static WORKER_LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();

/// The number of requests after which this pre-forked worker retires:
/// `requests` plus a number drawn once per worker from
/// `0..=requests_jitter`; `None` when unlimited (or not in a pool).
pub(crate) fn worker_request_limit(config: &Config) -> Option<u64> {
    *WORKER_LIMIT.get_or_init(|| draw_limit(config))
}

/// Draws this worker's limit and publishes it for the application.
pub(super) fn draw_and_publish(config: &Config) -> Option<u64> {
    let limit = draw_limit(config);
    let _ = WORKER_LIMIT.set(limit);
    limit
}

/// `requests` plus a fresh draw of its jitter.
fn draw_limit(config: &Config) -> Option<u64> {
    match config.mode() {
        Mode::PreFork(p) => p
            .requests
            .map(|n| n.get().saturating_add(draw(p.requests_jitter))),
        _ => None,
    }
}

/// A number in `0..=max`, different in every process.
fn draw(max: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    if max == 0 {
        return 0;
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish() % max.saturating_add(1)
}
