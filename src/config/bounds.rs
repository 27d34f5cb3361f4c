//! The bounds of every count and duration, and `DaemonBuilder::build`,
//! which checks them, derives the defaults and makes the `Config`.

use std::num::NonZeroU64;
use std::time::Duration;

use super::{Config, DaemonBuilder, Mode, PreFork};
use crate::babysitter::BabysitLimits;
use crate::error::{Error, Result};

/// The most workers a daemon can have: the upper bound of
/// [`DaemonBuilder::max_children`], and so of `start_children`, `min_spare`,
/// `max_spare` and `warm_workers`, and of `max_spawn_rate`.
///
/// The scoreboard maps 64 bytes per worker slot plus a header, made before
/// the first fork: 4 MiB at this limit. A larger value, set or derived
/// (`start_children + max_spare`), is refused by
/// [`build`](DaemonBuilder::build) with [`Error::OutOfRange`].
pub const MAX_CHILDREN: usize = 65_536;

/// The range of the worker counts, as errors and docs give it.
const CHILDREN_RANGE: &str = "1 to 65536 (MAX_CHILDREN)";

/// Fork per request: warm workers unless configured.
const DEFAULT_WARM: usize = 1;

/// The seed's rogue limit: ten minutes of CPU.
const DEFAULT_CPU_LIMIT: Duration = Duration::from_secs(600);

/// The bound of the timeouts, intervals and the backoff: one day.
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const DAY_RANGE: &str = "at most 1 day (86400 s)";

/// The bound of `cpu_limit` and of the `max_restarts` window: one year
/// (365 days), far from where `Instant + Duration` could overflow.
const YEAR: Duration = Duration::from_secs(365 * 24 * 60 * 60);
const YEAR_RANGE: &str = "at most 1 year (31536000 s)";

/// The bound of `requests` and of `requests_jitter`: 2^53, so that their sum
/// fits a `u64` (and is exact as a JSON number).
const MAX_REQUESTS: u64 = 1 << 53;

/// The bound of `max_rss`: 2^50 bytes (1 PiB).
const MAX_RSS: u64 = 1 << 50;

/// The bound of the `max_restarts` count.
const MAX_RESTARTS: u32 = 1_000_000;

/// The bound of `cpu_share`: every core of a 4096-core machine, in percent
/// of one core.
const MAX_CPU_SHARE: f64 = 100.0 * 4096.0;

/// The bound of `spawn_timeout`.
const MAX_SPAWN_TIMEOUT: Duration = Duration::from_secs(60);

/// The bounds of `crash_burst`.
const MAX_CRASH_BURST: u32 = 1_000;
const MAX_CRASH_BURST_WINDOW: Duration = Duration::from_secs(60 * 60);

impl DaemonBuilder {
    /// Derives the defaults and validates the parameters.
    ///
    /// Every count and duration has a bound (each setter gives it), so that
    /// nothing derived from a valid configuration can overflow: no sum of
    /// counts, no `Instant::now() + duration`.
    ///
    /// # Errors
    ///
    /// A typed [`Error`] for every parameter that makes no sense: a zero where
    /// zero means nothing ([`Error::Zero`]), a value above its bound, set or
    /// derived ([`Error::OutOfRange`]), `max_spare` below `min_spare`
    /// ([`Error::SpareRange`]), `start_children` or `min_spare` above
    /// `max_children` ([`Error::AboveMaxChildren`]), a pool parameter outside
    /// pre-fork ([`Error::WrongMode`]), `detach` without a log file
    /// ([`Error::DetachWithoutLogfile`]), or a [`keep_fd`](Self::keep_fd)
    /// descriptor that is negative or not open ([`Error::KeepFd`]). Nothing
    /// is forked or opened.
    pub fn build(self) -> Result<crate::Daemon> {
        let mode = self.resolve_mode()?;
        if self.detach && self.logfile.is_none() {
            return Err(Error::DetachWithoutLogfile);
        }
        let babysit = self.resolve_babysit(&mode)?;
        let warm = match (&mode, self.warm_workers) {
            (Mode::ForkPerRequest { max_children }, Some(n)) if n > *max_children => {
                return Err(Error::AboveMaxChildren {
                    what: "warm_workers",
                    value: n,
                    max_children: *max_children,
                });
            }
            (Mode::ForkPerRequest { .. }, n) => n.unwrap_or(DEFAULT_WARM),
            (_, None) => 0,
            (_, Some(_)) => {
                return Err(Error::WrongMode {
                    param: "warm_workers",
                    mode: "fork per request (max_children without start_children)",
                });
            }
        };
        self.check_crash_policy()?;
        nonzero_at_most("shutdown_timeout", self.shutdown_timeout, DAY, DAY_RANGE)?;
        nonzero_at_most(
            "spawn_timeout",
            self.spawn_timeout,
            MAX_SPAWN_TIMEOUT,
            "at most 1 minute",
        )?;
        if self.umask > 0o777 {
            return Err(Error::OutOfRange {
                param: "umask",
                value: format!("{:o}", self.umask),
                range: "0 to 0o777",
            });
        }
        crate::process::check_declared_fds(&self.keep_fds)?;
        Ok(crate::Daemon::new(Config {
            alias: self.alias,
            detach: self.detach,
            logfile: self.logfile,
            verbose: self.verbose,
            mode,
            warm,
            babysit,
            shutdown_timeout: self.shutdown_timeout,
            spawn_timeout: self.spawn_timeout,
            workdir: self.workdir,
            umask: self.umask,
            crash: self.crash,
            pidfile: self.pidfile,
            user: self.user,
            group: self.group,
            privileges: self.privileges,
            upgrade_fds: self.upgrade_fds,
            keep_fds: self.keep_fds,
        }))
    }

    fn check_crash_policy(&self) -> Result<()> {
        let crash = &self.crash;
        nonzero_at_most("max_backoff", crash.max_backoff, DAY, DAY_RANGE)?;
        nonzero_at_most(
            "max_spawn_rate",
            crash.max_spawn_rate,
            MAX_CHILDREN,
            CHILDREN_RANGE,
        )?;
        if let Some((restarts, window)) = crash.max_restarts {
            nonzero_at_most(
                "max_restarts",
                restarts,
                MAX_RESTARTS,
                "1 to 1000000 crashes",
            )?;
            nonzero_at_most("max_restarts window", window, YEAR, YEAR_RANGE)?;
        }
        let (count, window) = crash.crash_burst;
        nonzero_at_most("crash_burst", count, MAX_CRASH_BURST, "1 to 1000 crashes")?;
        nonzero_at_most(
            "crash_burst window",
            window,
            MAX_CRASH_BURST_WINDOW,
            "at most 1 hour",
        )
    }

    fn resolve_babysit(&self, mode: &Mode) -> Result<Option<BabysitLimits>> {
        let Some(interval) = self.babysit else {
            for (param, set) in [
                ("cpu_limit", self.cpu_limit.is_some()),
                ("cpu_share", self.cpu_share.is_some()),
                ("request_timeout", self.request_timeout.is_some()),
                ("long_request_timeout", self.long_request_timeout.is_some()),
                ("max_rss", self.max_rss.is_some()),
            ] {
                if set {
                    return Err(Error::WrongMode {
                        param,
                        mode: "babysitting (set babysit)",
                    });
                }
            }
            return Ok(None);
        };
        nonzero_at_most("babysit", interval, DAY, DAY_RANGE)?;
        if !mode.has_workers() {
            return Err(Error::WrongMode {
                param: "babysit",
                mode: "a daemon with workers (set start_children or max_children)",
            });
        }
        for (name, value, max, range) in [
            ("cpu_limit", self.cpu_limit, YEAR, YEAR_RANGE),
            ("request_timeout", self.request_timeout, DAY, DAY_RANGE),
            (
                "long_request_timeout",
                self.long_request_timeout,
                DAY,
                DAY_RANGE,
            ),
        ] {
            if let Some(value) = value {
                nonzero_at_most(name, value, max, range)?;
            }
        }
        if let Some(bytes) = self.max_rss {
            nonzero_at_most("max_rss", bytes, MAX_RSS, "at most 2^50 bytes (1 PiB)")?;
        }
        if let Some(share) = self.cpu_share {
            // Infinity is above the bound, NaN is neither above nor below.
            let range = if share > MAX_CPU_SHARE {
                Some("at most 409600 (percent of one core: 4096 cores)")
            } else if share.is_nan() || share <= 0.0 {
                Some("above 0 (percent of one core)")
            } else {
                None
            };
            if let Some(range) = range {
                return Err(Error::OutOfRange {
                    param: "cpu_share",
                    value: share.to_string(),
                    range,
                });
            }
        }
        Ok(Some(BabysitLimits {
            interval,
            cpu_limit: self.cpu_limit.unwrap_or(DEFAULT_CPU_LIMIT),
            cpu_share: self.cpu_share,
            request_timeout: self.request_timeout,
            long_request_timeout: self.long_request_timeout,
            max_rss: self.max_rss,
        }))
    }

    fn resolve_mode(&self) -> Result<Mode> {
        for (name, value) in [
            ("start_children", self.start_children),
            ("min_spare", self.min_spare),
            ("max_spare", self.max_spare),
            ("max_children", self.max_children),
        ] {
            if value == Some(0) {
                return Err(Error::Zero(name));
            }
        }
        if self.requests == Some(0) {
            return Err(Error::Zero("requests"));
        }
        for (name, value) in [
            ("start_children", self.start_children),
            ("min_spare", self.min_spare),
            ("max_spare", self.max_spare),
            ("max_children", self.max_children),
            ("warm_workers", self.warm_workers),
        ] {
            if let Some(value) = value {
                at_most(name, value, MAX_CHILDREN, CHILDREN_RANGE)?;
            }
        }
        for (name, value) in [
            ("requests", self.requests),
            ("requests_jitter", self.requests_jitter),
        ] {
            if let Some(value) = value {
                at_most(name, value, MAX_REQUESTS, "at most 2^53")?;
            }
        }
        let Some(start) = self.start_children else {
            for (param, set) in [
                ("min_spare", self.min_spare.is_some()),
                ("max_spare", self.max_spare.is_some()),
                ("requests", self.requests.is_some()),
                ("requests_jitter", self.requests_jitter.is_some()),
            ] {
                if set {
                    return Err(Error::WrongMode {
                        param,
                        mode: "a pre-forked pool (set start_children)",
                    });
                }
            }
            return Ok(match self.max_children {
                Some(max_children) => Mode::ForkPerRequest { max_children },
                None => Mode::Daemon,
            });
        };
        if self.requests_jitter.is_some_and(|j| j > 0) && self.requests.is_none() {
            return Err(Error::Needs {
                param: "requests_jitter",
                needs: "requests (without a requests limit there is nothing to jitter)",
            });
        }
        // Every value is at most MAX_CHILDREN here, so the arithmetic cannot
        // saturate; it saturates anyway rather than trust that.
        let (min_spare, max_spare, max_children) = match self.max_children {
            Some(max) => {
                let min_spare = self.min_spare.unwrap_or((max / 5).max(1));
                let max_spare = self
                    .max_spare
                    .unwrap_or((max.saturating_mul(4) / 5).max(min_spare));
                (min_spare, max_spare, max)
            }
            None => {
                let min_spare = self.min_spare.unwrap_or(start);
                let max_spare = self
                    .max_spare
                    .unwrap_or(start.saturating_mul(2).max(min_spare));
                let max_children = start.saturating_add(max_spare);
                if max_children > MAX_CHILDREN {
                    return Err(Error::OutOfRange {
                        param: "max_children",
                        value: format!("{max_children} (start_children + max_spare)"),
                        range: "1 to 65536 (MAX_CHILDREN): set max_children",
                    });
                }
                (min_spare, max_spare, max_children)
            }
        };
        if max_spare < min_spare {
            return Err(Error::SpareRange {
                min_spare,
                max_spare,
            });
        }
        for (what, value) in [("start_children", start), ("min_spare", min_spare)] {
            if value > max_children {
                return Err(Error::AboveMaxChildren {
                    what,
                    value,
                    max_children,
                });
            }
        }
        Ok(Mode::PreFork(PreFork {
            start_children: start,
            min_spare,
            max_spare,
            max_children,
            requests: self.requests.and_then(NonZeroU64::new),
            requests_jitter: self.requests_jitter.unwrap_or(0),
        }))
    }
}

/// A count or duration and its bound, as the checks of `build` take them.
trait Bounded: PartialOrd + Copy {
    fn is_zero(self) -> bool;
    fn show(self) -> String;
}

impl Bounded for usize {
    fn is_zero(self) -> bool {
        self == 0
    }
    fn show(self) -> String {
        self.to_string()
    }
}

impl Bounded for u32 {
    fn is_zero(self) -> bool {
        self == 0
    }
    fn show(self) -> String {
        self.to_string()
    }
}

impl Bounded for u64 {
    fn is_zero(self) -> bool {
        self == 0
    }
    fn show(self) -> String {
        self.to_string()
    }
}

impl Bounded for Duration {
    fn is_zero(self) -> bool {
        Duration::is_zero(&self)
    }
    fn show(self) -> String {
        format!("{self:?}")
    }
}

/// `Error::OutOfRange` if `value` is above `max`.
fn at_most<T: Bounded>(param: &'static str, value: T, max: T, range: &'static str) -> Result<()> {
    if value > max {
        return Err(Error::OutOfRange {
            param,
            value: value.show(),
            range,
        });
    }
    Ok(())
}

/// `Error::Zero` if `value` is zero, else `Error::OutOfRange` if it is above `max`.
fn nonzero_at_most<T: Bounded>(
    param: &'static str,
    value: T,
    max: T,
    range: &'static str,
) -> Result<()> {
    if value.is_zero() {
        return Err(Error::Zero(param));
    }
    at_most(param, value, max, range)
}

#[cfg(test)]
pub(crate) mod properties;
#[cfg(test)]
mod tests;
