//! The builder, its validation and the derived defaults.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::babysitter::BabysitLimits;
use crate::error::{Error, Result};
use crate::ops::PrivilegeScope;

/// How the daemon runs its work: one process, one worker per request, or a
/// pre-forked pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
#[non_exhaustive]
pub enum Mode {
    /// A plain daemon: one process, no workers (the seed without
    /// `max_children` or `start_children`).
    Daemon,
    /// Fork per request (the seed's post-forking): every `UpdateStatus::Req`
    /// in the supervisor goes to a worker of its own, forked for it or ahead
    /// of it ([`DaemonBuilder::warm_workers`]), that gets the payload and
    /// exits after it.
    ForkPerRequest {
        /// At most this many workers at once.
        max_children: usize,
    },
    /// A pre-forked pool of workers (the seed's pre-forking, Apache's prefork).
    PreFork(PreFork),
}

impl Mode {
    /// The mode's name as the status report gives it.
    pub fn describe(&self) -> &'static str {
        match self {
            Mode::Daemon => "Daemon server",
            Mode::ForkPerRequest { .. } => "Forking server",
            Mode::PreFork(_) => "Pre-forking server",
        }
    }

    /// How many workers may exist at once (0 for a plain daemon).
    pub fn max_children(&self) -> usize {
        match self {
            Mode::Daemon => 0,
            Mode::ForkPerRequest { max_children } => *max_children,
            Mode::PreFork(pool) => pool.max_children,
        }
    }

    /// Whether this mode has workers, and so a spawner and a scoreboard.
    pub fn has_workers(&self) -> bool {
        !matches!(self, Mode::Daemon)
    }
}

/// Fork per request: warm workers unless configured.
const DEFAULT_WARM: usize = 1;

/// The seed's rogue limit: ten minutes of CPU.
const DEFAULT_CPU_LIMIT: Duration = Duration::from_secs(600);

/// The pool parameters of [`Mode::PreFork`], after defaults were derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PreFork {
    /// Workers forked at start-up.
    pub start_children: usize,
    /// Fewer waiting workers than this, and the supervisor forks more.
    pub min_spare: usize,
    /// More waiting workers than this, and the supervisor retires some.
    pub max_spare: usize,
    /// Never more workers than this.
    pub max_children: usize,
    /// A worker exits after serving this many requests; `None` is unlimited.
    pub requests: Option<NonZeroU64>,
    /// Each worker serves `requests` plus a number drawn from
    /// `0..=requests_jitter` (0: no jitter).
    pub requests_jitter: u64,
}

/// The validated configuration of a daemon; see [`DaemonBuilder`] for each
/// parameter's meaning and default.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub(crate) alias: String,
    pub(crate) detach: bool,
    pub(crate) logfile: Option<PathBuf>,
    pub(crate) verbose: bool,
    pub(crate) mode: Mode,
    pub(crate) warm: usize,
    pub(crate) babysit: Option<BabysitLimits>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) workdir: PathBuf,
    pub(crate) umask: u32,
    pub(crate) crash: CrashPolicy,
    pub(crate) pidfile: Option<PathBuf>,
    pub(crate) user: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) privileges: PrivilegeScope,
    pub(crate) upgrade_fds: Vec<std::os::fd::RawFd>,
}

/// How the supervisor reacts to workers that die young, and how fast it forks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CrashPolicy {
    /// The longest pause between spawns after workers keep dying young
    /// (the pause starts at 100 ms and doubles per crash).
    pub max_backoff: Duration,
    /// Give up (shut down, `run` returns [`Error::CrashLoop`]) after more
    /// than this many crashes within the window.
    pub max_restarts: Option<(u32, Duration)>,
    /// At most this many forks per 100 ms; the rate starts at 8 and doubles
    /// every 100 ms while the pool is short, up to this cap.
    pub max_spawn_rate: usize,
}

impl Config {
    /// The name used in logs, process names and the status report.
    pub fn alias(&self) -> &str {
        &self.alias
    }
    /// Whether the daemon detaches from the terminal.
    pub fn detach(&self) -> bool {
        self.detach
    }
    /// The log file that stdout and stderr go to, if any.
    pub fn logfile(&self) -> Option<&Path> {
        self.logfile.as_deref()
    }
    /// Whether process creation and state changes are logged.
    pub fn verbose(&self) -> bool {
        self.verbose
    }
    /// The mode, with every derived default filled in.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }
    /// Fork per request: workers kept forked and ready, each waiting for
    /// one request (0 in other modes).
    pub fn warm_workers(&self) -> usize {
        self.warm
    }
    /// The babysitter's interval, if babysitting is on.
    pub fn babysit(&self) -> Option<Duration> {
        self.babysit.map(|l| l.interval)
    }
    /// The babysitter's limits, if babysitting is on.
    pub fn babysit_limits(&self) -> Option<BabysitLimits> {
        self.babysit
    }
    /// Crash-loop backoff and spawn pacing.
    pub fn crash_policy(&self) -> CrashPolicy {
        self.crash
    }
    /// The pidfile, if any.
    pub fn pidfile(&self) -> Option<&Path> {
        self.pidfile.as_deref()
    }
    /// The user to drop privileges to, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    /// The group to drop privileges to, if any.
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }
    /// Which processes drop privileges.
    pub fn privilege_scope(&self) -> PrivilegeScope {
        self.privileges
    }
    /// Whether SIGUSR2 upgrades the binary (else it logs the peek report).
    pub fn binary_upgrade(&self) -> bool {
        !self.upgrade_fds.is_empty()
    }
    /// How long shutdown waits after TERM before it KILLs.
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }
    /// The working directory a detached daemon changes to.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }
    /// The umask a detached daemon sets.
    pub fn umask(&self) -> u32 {
        self.umask
    }
}

/// Builds a [`Daemon`](crate::Daemon): the seed's `spawn(%params)`.
///
/// The mode follows from the parameters, as in the seed: `start_children`
/// makes a pre-forked pool, `max_children` alone makes a fork-per-request
/// daemon, neither makes a plain daemon. [`build`](Self::build) derives the
/// defaults and validates everything before anything forks.
///
/// # Examples
///
/// ```
/// use actix_daemon::{Daemon, Mode};
///
/// let daemon = Daemon::builder().start_children(10).build()?;
/// let Mode::PreFork(pool) = daemon.config().mode() else { unreachable!() };
/// assert_eq!((pool.min_spare, pool.max_spare, pool.max_children), (10, 20, 30));
/// # Ok::<(), actix_daemon::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct DaemonBuilder {
    alias: String,
    detach: bool,
    logfile: Option<PathBuf>,
    verbose: bool,
    start_children: Option<usize>,
    min_spare: Option<usize>,
    max_spare: Option<usize>,
    max_children: Option<usize>,
    requests: Option<u64>,
    requests_jitter: Option<u64>,
    warm_workers: Option<usize>,
    babysit: Option<Duration>,
    cpu_limit: Option<Duration>,
    cpu_share: Option<f64>,
    request_timeout: Option<Duration>,
    long_request_timeout: Option<Duration>,
    max_rss: Option<u64>,
    shutdown_timeout: Duration,
    workdir: PathBuf,
    umask: u32,
    crash: CrashPolicy,
    pidfile: Option<PathBuf>,
    user: Option<String>,
    group: Option<String>,
    privileges: PrivilegeScope,
    upgrade_fds: Vec<std::os::fd::RawFd>,
}

impl Default for DaemonBuilder {
    fn default() -> Self {
        DaemonBuilder {
            alias: "Daemon".to_owned(),
            detach: false,
            logfile: None,
            verbose: false,
            start_children: None,
            min_spare: None,
            max_spare: None,
            max_children: None,
            requests: None,
            requests_jitter: None,
            warm_workers: None,
            babysit: None,
            cpu_limit: None,
            cpu_share: None,
            request_timeout: None,
            long_request_timeout: None,
            max_rss: None,
            shutdown_timeout: Duration::from_secs(10),
            workdir: PathBuf::from("/"),
            umask: 0o027,
            crash: CrashPolicy {
                max_backoff: Duration::from_secs(30),
                max_restarts: None,
                max_spawn_rate: 512,
            },
            pidfile: None,
            user: None,
            group: None,
            privileges: PrivilegeScope::Workers,
            upgrade_fds: Vec::new(),
        }
    }
}

impl DaemonBuilder {
    /// A name for logs, process names (`<alias>-spawner`, `<alias>-worker`,
    /// cut to the kernel's 15 characters) and the status report.
    /// Default `"Daemon"`, as the seed's session alias. The registry makes it
    /// unnecessary for finding the actor.
    pub fn alias(mut self, alias: impl Into<String>) -> Self {
        self.alias = alias.into();
        self
    }

    /// Detach from the terminal: double fork, `setsid`, stdin from
    /// `/dev/null`, working directory and umask as set. Needs a
    /// [`logfile`](Self::logfile). Default `false`.
    pub fn detach(mut self, detach: bool) -> Self {
        self.detach = detach;
        self
    }

    /// Redirect stdout and stderr to this file (appended, created with mode
    /// 0640), reopened on HUP. Default: none, output stays where it is.
    pub fn logfile(mut self, path: impl Into<PathBuf>) -> Self {
        self.logfile = Some(path.into());
        self
    }

    /// Log process creation and every state change. Default `false`.
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Pre-fork this many workers at start-up; makes the daemon a pre-forked pool.
    pub fn start_children(mut self, n: usize) -> Self {
        self.start_children = Some(n);
        self
    }

    /// Pre-fork: fork more workers when fewer than this many wait. Default:
    /// 20% of `max_children` if that is set, else `start_children`.
    pub fn min_spare(mut self, n: usize) -> Self {
        self.min_spare = Some(n);
        self
    }

    /// Pre-fork: retire waiting workers (with TERM) when more than this many
    /// wait. Default: 80% of `max_children` if that is set, else twice
    /// `start_children`.
    pub fn max_spare(mut self, n: usize) -> Self {
        self.max_spare = Some(n);
        self
    }

    /// At most this many workers at once. Without `start_children` this makes
    /// the daemon fork one worker per request. Pre-fork default:
    /// `start_children + max_spare`.
    pub fn max_children(mut self, n: usize) -> Self {
        self.max_children = Some(n);
        self
    }

    /// Pre-fork: a worker exits after this many requests and is replaced.
    /// Default: unlimited (the seed's default was 1).
    pub fn requests(mut self, n: u64) -> Self {
        self.requests = Some(n);
        self
    }

    /// Pre-fork: each worker serves `requests` plus a number drawn once per
    /// worker from `0..=jitter`, so that workers started together do not all
    /// retire together (gunicorn's `max_requests_jitter`). Needs
    /// [`requests`](Self::requests). Default 0.
    pub fn requests_jitter(mut self, jitter: u64) -> Self {
        self.requests_jitter = Some(jitter);
        self
    }

    /// Fork per request: keep this many workers forked ahead, each ready
    /// and waiting (`.`) for one request, so that a request does not wait
    /// for a fork and a runtime start. Each still serves exactly one
    /// request and exits; they count toward `max_children`. 0 forks each
    /// worker when its request arrives, as the seed did. Default 1.
    pub fn warm_workers(mut self, n: usize) -> Self {
        self.warm_workers = Some(n);
        self
    }

    /// Turns the babysitter on, looking at every worker at this interval.
    /// Default: no babysitting. See the `babysitter` rules in the book.
    pub fn babysit(mut self, interval: Duration) -> Self {
        self.babysit = Some(interval);
        self
    }

    /// Babysitter: a worker whose total CPU time passes this is rogue and is
    /// escalated (INT, TERM, KILL). Default 10 minutes, as the seed.
    pub fn cpu_limit(mut self, limit: Duration) -> Self {
        self.cpu_limit = Some(limit);
        self
    }

    /// Babysitter: a worker using more than this share of one core
    /// (percent, over the last three intervals) is rogue. Default: off.
    pub fn cpu_share(mut self, percent: f64) -> Self {
        self.cpu_share = Some(percent);
        self
    }

    /// Babysitter: a worker in `r` longer than this is hung and escalated.
    /// Default: off.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Babysitter: a worker in `l` longer than this is hung and escalated.
    /// Default: off.
    pub fn long_request_timeout(mut self, timeout: Duration) -> Self {
        self.long_request_timeout = Some(timeout);
        self
    }

    /// Babysitter: a worker whose resident memory passes this many bytes is
    /// retired gracefully (it finishes its request, exits, is replaced).
    /// Default: off.
    pub fn max_rss(mut self, bytes: u64) -> Self {
        self.max_rss = Some(bytes);
        self
    }

    /// The longest pause between spawns while workers keep dying young.
    /// Default 30 seconds.
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.crash.max_backoff = max;
        self
    }

    /// Give up after more than `restarts` workers died young within
    /// `window`: the supervisor shuts down and `run` returns
    /// [`Error::CrashLoop`]. Default: never give up, keep backing off.
    pub fn max_restarts(mut self, restarts: u32, window: Duration) -> Self {
        self.crash.max_restarts = Some((restarts, window));
        self
    }

    /// At most this many forks per 100 ms, however many workers are missing.
    /// Default 512 (5,120 a second: a pool that recycles a worker per request
    /// forks one per request, and this must not cap its throughput).
    pub fn max_spawn_rate(mut self, per_100ms: usize) -> Self {
        self.crash.max_spawn_rate = per_100ms;
        self
    }

    /// How long a shutdown waits for workers and foreign children after TERM
    /// before it KILLs them. Default 10 seconds.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The working directory of a detached daemon. Default `/`.
    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workdir = dir.into();
        self
    }

    /// The umask of a detached daemon. Default `0o027` (the log file is then
    /// created 0640).
    pub fn umask(mut self, umask: u32) -> Self {
        self.umask = umask;
        self
    }

    /// A pidfile: locked for the daemon's life (a second instance refuses to
    /// start), written with the supervisor's pid after detaching, removed at
    /// exit. Default: none.
    pub fn pidfile(mut self, path: impl Into<PathBuf>) -> Self {
        self.pidfile = Some(path.into());
        self
    }

    /// Drop privileges to this user (and its groups). Names are resolved
    /// before anything forks; the log file and pidfile are given to the user
    /// so that they stay reopenable. Default: keep the privileges.
    pub fn user(mut self, name: impl Into<String>) -> Self {
        self.user = Some(name.into());
        self
    }

    /// Drop privileges to this group (default: the user's group).
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.group = Some(name.into());
        self
    }

    /// Which processes drop privileges. Default
    /// [`PrivilegeScope::Workers`]: the spawner and the workers.
    pub fn privileges(mut self, scope: PrivilegeScope) -> Self {
        self.privileges = scope;
        self
    }

    /// Turns on zero-downtime binary upgrades and names a listening socket
    /// to hand over (call once per listener).
    ///
    /// With it, SIGUSR2 to the supervisor starts the program's binary again
    /// (same arguments, same launch directory) with these sockets as
    /// descriptors 3.. (the new binary takes them with
    /// [`listen_fds`](crate::listen_fds)); once the new supervisor reports its
    /// pool ready, the old one drains and exits. If the new one fails to
    /// start, the old one keeps serving and logs why. The pidfile moves to
    /// `<pidfile>.oldbin` meanwhile. Without it, SIGUSR2 logs the peek
    /// report. Default: off.
    pub fn upgrade_with(mut self, listener: &impl std::os::fd::AsRawFd) -> Self {
        self.upgrade_fds.push(listener.as_raw_fd());
        self
    }

    /// Derives the defaults and validates the parameters.
    ///
    /// # Errors
    ///
    /// A typed [`Error`] for every parameter that makes no sense: a zero where
    /// zero means nothing ([`Error::Zero`]), `max_spare` below `min_spare`
    /// ([`Error::SpareRange`]), `start_children` or `min_spare` above
    /// `max_children` ([`Error::AboveMaxChildren`]), a pool parameter outside
    /// pre-fork ([`Error::WrongMode`]), or `detach` without a log file
    /// ([`Error::DetachWithoutLogfile`]). Nothing is forked or opened.
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
        if self.crash.max_backoff.is_zero() {
            return Err(Error::Zero("max_backoff"));
        }
        if self.crash.max_spawn_rate == 0 {
            return Err(Error::Zero("max_spawn_rate"));
        }
        if let Some((restarts, window)) = self.crash.max_restarts {
            if restarts == 0 {
                return Err(Error::Zero("max_restarts"));
            }
            if window.is_zero() {
                return Err(Error::Zero("max_restarts window"));
            }
        }
        if self.shutdown_timeout.is_zero() {
            return Err(Error::Zero("shutdown_timeout"));
        }
        if self.umask > 0o777 {
            return Err(Error::OutOfRange {
                param: "umask",
                value: format!("{:o}", self.umask),
                range: "0 to 0o777",
            });
        }
        Ok(crate::Daemon::new(Config {
            alias: self.alias,
            detach: self.detach,
            logfile: self.logfile,
            verbose: self.verbose,
            mode,
            warm,
            babysit,
            shutdown_timeout: self.shutdown_timeout,
            workdir: self.workdir,
            umask: self.umask,
            crash: self.crash,
            pidfile: self.pidfile,
            user: self.user,
            group: self.group,
            privileges: self.privileges,
            upgrade_fds: self.upgrade_fds,
        }))
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
        if interval.is_zero() {
            return Err(Error::Zero("babysit"));
        }
        if !mode.has_workers() {
            return Err(Error::WrongMode {
                param: "babysit",
                mode: "a daemon with workers (set start_children or max_children)",
            });
        }
        for (name, value) in [
            ("cpu_limit", self.cpu_limit),
            ("request_timeout", self.request_timeout),
            ("long_request_timeout", self.long_request_timeout),
        ] {
            if value == Some(Duration::ZERO) {
                return Err(Error::Zero(name));
            }
        }
        if self.max_rss == Some(0) {
            return Err(Error::Zero("max_rss"));
        }
        if let Some(share) = self.cpu_share
            && !(share > 0.0 && share.is_finite())
        {
            return Err(Error::OutOfRange {
                param: "cpu_share",
                value: share.to_string(),
                range: "above 0 (percent of one core)",
            });
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
        let (min_spare, max_spare, max_children) = match self.max_children {
            Some(max) => {
                let min_spare = self.min_spare.unwrap_or((max / 5).max(1));
                let max_spare = self.max_spare.unwrap_or((max * 4 / 5).max(min_spare));
                (min_spare, max_spare, max)
            }
            None => {
                let min_spare = self.min_spare.unwrap_or(start);
                let max_spare = self.max_spare.unwrap_or((2 * start).max(min_spare));
                (min_spare, max_spare, start + max_spare)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Daemon;

    fn pool(builder: DaemonBuilder) -> PreFork {
        match builder.build().expect("valid").config().mode() {
            Mode::PreFork(pool) => *pool,
            other => panic!("not a pool: {other:?}"),
        }
    }

    #[test]
    fn start_children_alone_derives_the_seeds_defaults() {
        let p = pool(Daemon::builder().start_children(10));
        assert_eq!((p.min_spare, p.max_spare, p.max_children), (10, 20, 30));
        assert_eq!(
            p.requests, None,
            "unlike the seed, requests unset is unlimited"
        );
    }

    #[test]
    fn max_children_with_start_derives_percentages() {
        let p = pool(Daemon::builder().start_children(1).max_children(10));
        assert_eq!((p.min_spare, p.max_spare), (2, 8));
        let p = pool(Daemon::builder().start_children(2).max_children(100));
        assert_eq!((p.min_spare, p.max_spare), (20, 80));
        let p = pool(Daemon::builder().start_children(1).max_children(2));
        assert_eq!((p.min_spare, p.max_spare), (1, 1));
    }

    #[test]
    fn the_preforking_examples_pool() {
        let p = pool(
            Daemon::builder()
                .start_children(1)
                .min_spare(2)
                .max_children(10)
                .requests(1),
        );
        assert_eq!(
            (p.start_children, p.min_spare, p.max_spare, p.max_children),
            (1, 2, 8, 10)
        );
        assert_eq!(p.requests.map(NonZeroU64::get), Some(1));
    }

    #[test]
    fn modes() {
        let d = Daemon::builder().max_children(3).build().unwrap();
        assert_eq!(d.config().mode(), &Mode::ForkPerRequest { max_children: 3 });
        let d = Daemon::builder().build().unwrap();
        assert_eq!(d.config().mode(), &Mode::Daemon);
        assert_eq!(d.config().mode().describe(), "Daemon server");
    }

    #[test]
    fn errors() {
        let err = |b: DaemonBuilder| b.build().unwrap_err().to_string();
        assert_eq!(
            err(Daemon::builder()
                .start_children(2)
                .min_spare(5)
                .max_spare(3)),
            "max_spare (3) is below min_spare (5)"
        );
        assert_eq!(
            err(Daemon::builder().start_children(20).max_children(10)),
            "start_children (20) is above max_children (10)"
        );
        assert_eq!(
            err(Daemon::builder()
                .start_children(1)
                .min_spare(11)
                .max_spare(12)
                .max_children(10)),
            "min_spare (11) is above max_children (10)"
        );
        assert_eq!(
            err(Daemon::builder().start_children(2).requests_jitter(5)),
            "requests_jitter needs requests (without a requests limit there is nothing to jitter)"
        );
        assert_eq!(
            err(Daemon::builder().max_children(2).requests_jitter(5)),
            "requests_jitter only applies to a pre-forked pool (set start_children)"
        );
        assert_eq!(
            err(Daemon::builder().max_children(2).warm_workers(3)),
            "warm_workers (3) is above max_children (2)"
        );
        assert_eq!(
            err(Daemon::builder().start_children(2).warm_workers(1)),
            "warm_workers only applies to fork per request (max_children without start_children)"
        );
        let warm = |b: DaemonBuilder| b.build().unwrap().config().warm_workers();
        assert_eq!(warm(Daemon::builder().max_children(3)), 1);
        assert_eq!(warm(Daemon::builder().max_children(3).warm_workers(0)), 0);
        assert_eq!(warm(Daemon::builder().start_children(3)), 0);
        let p = pool(
            Daemon::builder()
                .start_children(2)
                .requests(100)
                .requests_jitter(10),
        );
        assert_eq!(
            (p.requests.map(NonZeroU64::get), p.requests_jitter),
            (Some(100), 10)
        );
        for (b, name) in [
            (Daemon::builder().start_children(0), "start_children"),
            (Daemon::builder().max_children(0), "max_children"),
            (
                Daemon::builder().start_children(1).min_spare(0),
                "min_spare",
            ),
            (
                Daemon::builder().start_children(1).max_spare(0),
                "max_spare",
            ),
            (Daemon::builder().start_children(1).requests(0), "requests"),
            (
                Daemon::builder().max_children(1).babysit(Duration::ZERO),
                "babysit",
            ),
            (
                Daemon::builder()
                    .max_children(1)
                    .babysit(Duration::from_secs(1))
                    .max_rss(0),
                "max_rss",
            ),
            (
                Daemon::builder().shutdown_timeout(Duration::ZERO),
                "shutdown_timeout",
            ),
        ] {
            assert_eq!(err(b), format!("{name} must be greater than zero"));
        }
        assert!(matches!(
            Daemon::builder().detach(true).build(),
            Err(Error::DetachWithoutLogfile)
        ));
        assert!(matches!(
            Daemon::builder().max_children(3).requests(1).build(),
            Err(Error::WrongMode {
                param: "requests",
                ..
            })
        ));
        assert!(matches!(
            Daemon::builder()
                .max_children(2)
                .request_timeout(Duration::from_secs(1))
                .build(),
            Err(Error::WrongMode {
                param: "request_timeout",
                ..
            })
        ));
        assert!(matches!(
            Daemon::builder().babysit(Duration::from_secs(1)).build(),
            Err(Error::WrongMode {
                param: "babysit",
                ..
            })
        ));
        assert!(matches!(
            Daemon::builder()
                .max_children(2)
                .babysit(Duration::from_secs(1))
                .cpu_share(-3.0)
                .build(),
            Err(Error::OutOfRange {
                param: "cpu_share",
                ..
            })
        ));
        assert!(matches!(
            Daemon::builder().min_spare(3).build(),
            Err(Error::WrongMode {
                param: "min_spare",
                ..
            })
        ));
    }
}
