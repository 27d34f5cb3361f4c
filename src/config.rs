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

/// How long a spawn request waits for the spawner's answer, unless configured.
const DEFAULT_SPAWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Crashes of ready workers within a window that make a burst, unless configured.
const DEFAULT_CRASH_BURST: (u32, Duration) = (5, Duration::from_secs(10));

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
    pub(crate) spawn_timeout: Duration,
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
    /// `(count, window)`: workers that crash after they were ready cause a
    /// spawn backoff only when `count` of them crash within `window` (see
    /// [`DaemonBuilder::crash_burst`]). Default 5 crashes within 10 seconds.
    pub crash_burst: (u32, Duration),
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
    /// How long a spawn request may wait for the spawner's answer before
    /// the spawner is declared stuck.
    pub fn spawn_timeout(&self) -> Duration {
        self.spawn_timeout
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
    spawn_timeout: Duration,
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
            spawn_timeout: DEFAULT_SPAWN_TIMEOUT,
            workdir: PathBuf::from("/"),
            umask: 0o027,
            crash: CrashPolicy {
                max_backoff: Duration::from_secs(30),
                max_restarts: None,
                max_spawn_rate: 512,
                crash_burst: DEFAULT_CRASH_BURST,
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
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses 0 ([`Error::Zero`]), more than 65,536,
    /// the `MAX_CHILDREN` limit ([`Error::OutOfRange`]), and more than
    /// `max_children` ([`Error::AboveMaxChildren`]).
    pub fn start_children(mut self, n: usize) -> Self {
        self.start_children = Some(n);
        self
    }

    /// Pre-fork: fork more workers when fewer than this many wait. Default:
    /// 20% of `max_children` if that is set, else `start_children`.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses 0 ([`Error::Zero`]), more than 65,536,
    /// the `MAX_CHILDREN` limit ([`Error::OutOfRange`]), more than
    /// `max_spare` ([`Error::SpareRange`]) or `max_children`
    /// ([`Error::AboveMaxChildren`]), and any value outside a pool
    /// ([`Error::WrongMode`]).
    pub fn min_spare(mut self, n: usize) -> Self {
        self.min_spare = Some(n);
        self
    }

    /// Pre-fork: retire waiting workers (with TERM) when more than this many
    /// wait. Default: 80% of `max_children` if that is set, else twice
    /// `start_children`.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses 0 ([`Error::Zero`]), more than 65,536,
    /// the `MAX_CHILDREN` limit ([`Error::OutOfRange`]), less than
    /// `min_spare` ([`Error::SpareRange`]), and any value outside a pool
    /// ([`Error::WrongMode`]).
    pub fn max_spare(mut self, n: usize) -> Self {
        self.max_spare = Some(n);
        self
    }

    /// At most this many workers at once. Without `start_children` this makes
    /// the daemon fork one worker per request. Pre-fork default:
    /// `start_children + max_spare`.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses 0 ([`Error::Zero`]) and more than
    /// 65,536, the `MAX_CHILDREN` limit ([`Error::OutOfRange`]), set or
    /// derived: without `max_children`, `start_children` plus the derived
    /// `max_spare` (twice `start_children`) must fit, so a larger pool needs
    /// `max_children` set.
    pub fn max_children(mut self, n: usize) -> Self {
        self.max_children = Some(n);
        self
    }

    /// Pre-fork: a worker exits after this many requests and is replaced.
    /// Default: unlimited (the seed's default was 1).
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses 0 ([`Error::Zero`]; leave it unset for
    /// unlimited), more than 2^53 ([`Error::OutOfRange`]), and any value
    /// outside a pool ([`Error::WrongMode`]).
    pub fn requests(mut self, n: u64) -> Self {
        self.requests = Some(n);
        self
    }

    /// Pre-fork: each worker serves `requests` plus a number drawn once per
    /// worker from `0..=jitter`, so that workers started together do not all
    /// retire together (gunicorn's `max_requests_jitter`). Needs
    /// [`requests`](Self::requests). Default 0.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses more than 2^53
    /// ([`Error::OutOfRange`]; with `requests` bounded alike, the sum cannot
    /// overflow), a non-zero jitter without `requests` ([`Error::Needs`]),
    /// and any value outside a pool ([`Error::WrongMode`]).
    pub fn requests_jitter(mut self, jitter: u64) -> Self {
        self.requests_jitter = Some(jitter);
        self
    }

    /// Fork per request: keep this many workers forked ahead, each ready
    /// and waiting (`.`) for one request, so that a request does not wait
    /// for a fork and a runtime start. Each still serves exactly one
    /// request and exits; they count toward `max_children`. 0 forks each
    /// worker when its request arrives, as the seed did. Default 1.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses more than 65,536, the `MAX_CHILDREN`
    /// limit ([`Error::OutOfRange`]), more than `max_children`
    /// ([`Error::AboveMaxChildren`]), and any value outside fork per request
    /// ([`Error::WrongMode`]).
    pub fn warm_workers(mut self, n: usize) -> Self {
        self.warm_workers = Some(n);
        self
    }

    /// Turns the babysitter on, looking at every worker at this interval.
    /// Default: no babysitting. See the `babysitter` rules in the book.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses zero ([`Error::Zero`]), more than one
    /// day ([`Error::OutOfRange`]), and a plain daemon, which has no workers
    /// ([`Error::WrongMode`]).
    pub fn babysit(mut self, interval: Duration) -> Self {
        self.babysit = Some(interval);
        self
    }

    /// Babysitter: a worker whose total CPU time passes this is rogue and is
    /// escalated (INT, TERM, KILL). Default 10 minutes, as the seed.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses zero ([`Error::Zero`]), more than one
    /// year (365 days, [`Error::OutOfRange`]), and any value without
    /// [`babysit`](Self::babysit) ([`Error::WrongMode`]).
    pub fn cpu_limit(mut self, limit: Duration) -> Self {
        self.cpu_limit = Some(limit);
        self
    }

    /// Babysitter: a worker using more than this share of one core
    /// (percent, over the last three intervals) is rogue. Default: off.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses anything but a finite share above 0
    /// and at most 409,600 (100% of each of 4096 cores)
    /// ([`Error::OutOfRange`]), and any value without
    /// [`babysit`](Self::babysit) ([`Error::WrongMode`]).
    pub fn cpu_share(mut self, percent: f64) -> Self {
        self.cpu_share = Some(percent);
        self
    }

    /// Babysitter: a worker in `r` longer than this is hung and escalated.
    /// Default: off.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses zero ([`Error::Zero`]), more than one
    /// day ([`Error::OutOfRange`]), and any value without
    /// [`babysit`](Self::babysit) ([`Error::WrongMode`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Babysitter: a worker in `l` longer than this is hung and escalated.
    /// Default: off.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses zero ([`Error::Zero`]), more than one
    /// day ([`Error::OutOfRange`]), and any value without
    /// [`babysit`](Self::babysit) ([`Error::WrongMode`]).
    pub fn long_request_timeout(mut self, timeout: Duration) -> Self {
        self.long_request_timeout = Some(timeout);
        self
    }

    /// Babysitter: a worker whose resident memory passes this many bytes is
    /// retired gracefully (it finishes its request, exits, is replaced).
    /// Default: off.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses 0 ([`Error::Zero`]), more than 2^50
    /// bytes (1 PiB, [`Error::OutOfRange`]), and any value without
    /// [`babysit`](Self::babysit) ([`Error::WrongMode`]).
    pub fn max_rss(mut self, bytes: u64) -> Self {
        self.max_rss = Some(bytes);
        self
    }

    /// The longest pause between spawns while workers keep dying young.
    /// Default 30 seconds.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses zero ([`Error::Zero`]) and more than
    /// one day ([`Error::OutOfRange`]).
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.crash.max_backoff = max;
        self
    }

    /// Give up after more than `restarts` workers died young within
    /// `window`: the supervisor shuts down and `run` returns
    /// [`Error::CrashLoop`]. Default: never give up, keep backing off.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses a count of 0 or a zero window
    /// ([`Error::Zero`], `max_restarts` and `max_restarts window`), a count
    /// above 1,000,000 or a window above one year (365 days)
    /// ([`Error::OutOfRange`], same names).
    pub fn max_restarts(mut self, restarts: u32, window: Duration) -> Self {
        self.crash.max_restarts = Some((restarts, window));
        self
    }

    /// A burst of crashes: workers that crash after they were ready cause a
    /// spawn backoff only when `count` of them crash within `window`, so
    /// that a rare crash of a long-lived worker does not pause the forks.
    /// Workers that die before they are ready back off as before. Default
    /// 5 crashes within 10 seconds.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses a count of 0 or a zero window
    /// ([`Error::Zero`], `crash_burst` and `crash_burst window`), a count
    /// above 1,000 or a window above one hour ([`Error::OutOfRange`], same
    /// names).
    pub fn crash_burst(mut self, count: u32, window: Duration) -> Self {
        self.crash.crash_burst = (count, window);
        self
    }

    /// At most this many forks per 100 ms, however many workers are missing.
    /// Default 512 (5,120 a second: a pool that recycles a worker per request
    /// forks one per request, and this must not cap its throughput).
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses 0 ([`Error::Zero`]) and more than
    /// 65,536, the `MAX_CHILDREN` limit ([`Error::OutOfRange`]).
    pub fn max_spawn_rate(mut self, per_100ms: usize) -> Self {
        self.crash.max_spawn_rate = per_100ms;
        self
    }

    /// How long a shutdown waits for workers and foreign children after TERM
    /// before it KILLs them. Default 10 seconds.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses zero ([`Error::Zero`]) and more than
    /// one day ([`Error::OutOfRange`]).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long a request to the spawner (fork a worker) may wait for its
    /// answer before the supervisor declares the spawner stuck. Default 5
    /// seconds.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses zero ([`Error::Zero`]) and more than
    /// one minute ([`Error::OutOfRange`]).
    pub fn spawn_timeout(mut self, timeout: Duration) -> Self {
        self.spawn_timeout = timeout;
        self
    }

    /// The working directory of a detached daemon. Default `/`.
    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workdir = dir.into();
        self
    }

    /// The umask of a detached daemon. Default `0o027` (the log file is then
    /// created 0640).
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses a value above `0o777`
    /// ([`Error::OutOfRange`]).
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
            (
                Daemon::builder().spawn_timeout(Duration::ZERO),
                "spawn_timeout",
            ),
            (
                Daemon::builder().crash_burst(0, Duration::from_secs(1)),
                "crash_burst",
            ),
            (
                Daemon::builder().crash_burst(1, Duration::ZERO),
                "crash_burst window",
            ),
            (
                Daemon::builder().max_restarts(0, Duration::from_secs(1)),
                "max_restarts",
            ),
            (
                Daemon::builder().max_restarts(1, Duration::ZERO),
                "max_restarts window",
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

    const NS: Duration = Duration::from_nanos(1);
    const SEC: Duration = Duration::from_secs(1);

    /// The `param` of an `OutOfRange`, or a panic naming what came instead.
    fn out_of_range(builder: DaemonBuilder) -> &'static str {
        match builder.build() {
            Err(Error::OutOfRange { param, .. }) => param,
            Err(other) => panic!("expected OutOfRange, got {other:?}"),
            Ok(_) => panic!("expected OutOfRange, got Ok"),
        }
    }

    #[test]
    fn new_settings_have_their_defaults() {
        let d = Daemon::builder().build().unwrap();
        assert_eq!(d.config().spawn_timeout(), Duration::from_secs(5));
        assert_eq!(
            d.config().crash_policy().crash_burst,
            (5, Duration::from_secs(10))
        );
        let d = Daemon::builder()
            .spawn_timeout(Duration::from_millis(1500))
            .crash_burst(3, Duration::from_secs(60))
            .build()
            .unwrap();
        assert_eq!(d.config().spawn_timeout(), Duration::from_millis(1500));
        assert_eq!(
            d.config().crash_policy().crash_burst,
            (3, Duration::from_secs(60))
        );
    }

    /// Each bound: the largest value allowed builds, one more is refused
    /// with `OutOfRange` naming the parameter.
    #[test]
    fn every_bound_is_inclusive_and_named() {
        const M: usize = MAX_CHILDREN;
        let pool = || Daemon::builder().start_children(1);
        let sit = || Daemon::builder().max_children(2).babysit(SEC);
        let cases: Vec<(&str, DaemonBuilder, DaemonBuilder)> = vec![
            (
                "max_children",
                Daemon::builder().max_children(M),
                Daemon::builder().max_children(M + 1),
            ),
            (
                "max_children",
                pool().max_children(M),
                pool().max_children(M + 1),
            ),
            (
                "start_children",
                Daemon::builder().start_children(M).max_children(M),
                Daemon::builder().start_children(M + 1).max_children(M),
            ),
            (
                "min_spare",
                pool().min_spare(M).max_spare(M).max_children(M),
                pool().min_spare(M + 1).max_spare(M).max_children(M),
            ),
            (
                "max_spare",
                pool().max_spare(M).max_children(M),
                pool().max_spare(M + 1).max_children(M),
            ),
            (
                "warm_workers",
                Daemon::builder().max_children(M).warm_workers(M),
                Daemon::builder().max_children(M).warm_workers(M + 1),
            ),
            // Derived max_children: start_children + max_spare.
            ("max_children", pool().max_spare(M - 1), pool().max_spare(M)),
            (
                "max_children",
                Daemon::builder().start_children(M / 3),
                Daemon::builder().start_children(M / 3 + 1),
            ),
            (
                "requests",
                pool().requests(1 << 53),
                pool().requests((1 << 53) + 1),
            ),
            (
                "requests_jitter",
                pool().requests(1 << 53).requests_jitter(1 << 53),
                pool().requests(1).requests_jitter((1 << 53) + 1),
            ),
            (
                "max_spawn_rate",
                Daemon::builder().max_spawn_rate(M),
                Daemon::builder().max_spawn_rate(M + 1),
            ),
            (
                "max_restarts",
                Daemon::builder().max_restarts(1_000_000, SEC),
                Daemon::builder().max_restarts(1_000_001, SEC),
            ),
            (
                "max_restarts window",
                Daemon::builder().max_restarts(1, YEAR),
                Daemon::builder().max_restarts(1, YEAR + NS),
            ),
            (
                "crash_burst",
                Daemon::builder().crash_burst(1000, SEC),
                Daemon::builder().crash_burst(1001, SEC),
            ),
            (
                "crash_burst window",
                Daemon::builder().crash_burst(5, Duration::from_secs(3600)),
                Daemon::builder().crash_burst(5, Duration::from_secs(3600) + NS),
            ),
            (
                "spawn_timeout",
                Daemon::builder().spawn_timeout(Duration::from_secs(60)),
                Daemon::builder().spawn_timeout(Duration::from_secs(60) + NS),
            ),
            (
                "shutdown_timeout",
                Daemon::builder().shutdown_timeout(DAY),
                Daemon::builder().shutdown_timeout(DAY + NS),
            ),
            (
                "max_backoff",
                Daemon::builder().max_backoff(DAY),
                Daemon::builder().max_backoff(DAY + NS),
            ),
            (
                "babysit",
                Daemon::builder().max_children(2).babysit(DAY),
                Daemon::builder().max_children(2).babysit(DAY + NS),
            ),
            (
                "cpu_limit",
                sit().cpu_limit(YEAR),
                sit().cpu_limit(YEAR + NS),
            ),
            (
                "request_timeout",
                sit().request_timeout(DAY),
                sit().request_timeout(DAY + NS),
            ),
            (
                "long_request_timeout",
                sit().long_request_timeout(DAY),
                sit().long_request_timeout(DAY + NS),
            ),
            (
                "max_rss",
                sit().max_rss(1 << 50),
                sit().max_rss((1 << 50) + 1),
            ),
            (
                "cpu_share",
                sit().cpu_share(409_600.0),
                sit().cpu_share(409_600.1),
            ),
            (
                "umask",
                Daemon::builder().umask(0o777),
                Daemon::builder().umask(0o1000),
            ),
        ];
        for (param, inside, outside) in cases {
            if let Err(err) = inside.build() {
                panic!("{param} at its bound: {err}");
            }
            assert_eq!(out_of_range(outside), param);
        }
        let share = |p: f64| out_of_range(sit().cpu_share(p));
        for p in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -1.0] {
            assert_eq!(share(p), "cpu_share", "{p}");
        }
        // The bounds the docs and messages state are the constants.
        assert_eq!(
            CHILDREN_RANGE,
            format!("1 to {MAX_CHILDREN} (MAX_CHILDREN)")
        );
        assert_eq!(DAY_RANGE, format!("at most 1 day ({} s)", DAY.as_secs()));
        assert_eq!(YEAR_RANGE, format!("at most 1 year ({} s)", YEAR.as_secs()));
        assert_eq!(
            (MAX_REQUESTS, MAX_RSS, MAX_CPU_SHARE),
            (1 << 53, 1 << 50, 409_600.0)
        );
    }

    /// The values of the issue: huge counts are typed errors, not panics
    /// or overflows (`max * 4`, `2 * start`, `start + max_spare`).
    #[test]
    fn huge_counts_are_typed_errors() {
        let huge = [usize::MAX, 1 << 58, MAX_CHILDREN + 1];
        for n in huge {
            assert_eq!(
                out_of_range(Daemon::builder().max_children(n)),
                "max_children"
            );
            assert_eq!(
                out_of_range(Daemon::builder().start_children(1).max_children(n)),
                "max_children"
            );
            assert_eq!(
                out_of_range(Daemon::builder().start_children(n)),
                "start_children"
            );
            assert_eq!(
                out_of_range(Daemon::builder().start_children(1).min_spare(n)),
                "min_spare"
            );
            assert_eq!(
                out_of_range(Daemon::builder().start_children(1).max_spare(n)),
                "max_spare"
            );
            assert_eq!(
                out_of_range(Daemon::builder().max_children(1).warm_workers(n)),
                "warm_workers"
            );
            assert_eq!(
                out_of_range(Daemon::builder().max_spawn_rate(n)),
                "max_spawn_rate"
            );
        }
        assert_eq!(
            Daemon::builder()
                .max_children(usize::MAX)
                .build()
                .unwrap_err()
                .to_string(),
            "max_children is 18446744073709551615, expected 1 to 65536 (MAX_CHILDREN)"
        );
        assert_eq!(
            Daemon::builder()
                .start_children(40_000)
                .build()
                .unwrap_err()
                .to_string(),
            "max_children is 120000 (start_children + max_spare), \
             expected 1 to 65536 (MAX_CHILDREN): set max_children"
        );
        let sit = || Daemon::builder().max_children(2).babysit(SEC);
        assert_eq!(
            out_of_range(sit().requests_jitter(u64::MAX)),
            "requests_jitter",
            "the bound comes before the mode"
        );
        assert_eq!(out_of_range(sit().max_rss(u64::MAX)), "max_rss");
        assert_eq!(
            out_of_range(Daemon::builder().start_children(1).requests(u64::MAX)),
            "requests"
        );
        assert_eq!(
            out_of_range(Daemon::builder().max_restarts(u32::MAX, Duration::MAX)),
            "max_restarts"
        );
        assert_eq!(
            out_of_range(Daemon::builder().shutdown_timeout(Duration::MAX)),
            "shutdown_timeout"
        );
        assert_eq!(out_of_range(sit().cpu_limit(Duration::MAX)), "cpu_limit");
    }
}

#[cfg(test)]
mod properties {
    //! Random builder inputs, huge values included: `build` never panics,
    //! and what it accepts is consistent and cannot overflow later.

    use std::time::Instant;

    use super::*;
    use crate::Daemon;
    use proptest::prelude::*;

    /// Mostly `fine` values (most of which build), sometimes one at or next
    /// to its bound, sometimes anything at all; unset a fifth of the time.
    fn pick<T: std::fmt::Debug + Clone + 'static>(
        fine: impl Strategy<Value = T> + 'static,
        edge: impl Strategy<Value = T> + 'static,
        wild: impl Strategy<Value = T> + 'static,
    ) -> BoxedStrategy<Option<T>> {
        prop_oneof![
            4 => Just(None),
            12 => fine.prop_map(Some),
            1 => edge.prop_map(Some),
            1 => wild.prop_map(Some),
        ]
        .boxed()
    }

    /// `bound` and the values next to it, on both sides.
    fn around(bound: u64) -> impl Strategy<Value = u64> {
        (bound - 2)..=(bound + 2)
    }

    fn count(fine: std::ops::RangeInclusive<usize>) -> BoxedStrategy<Option<usize>> {
        pick(
            fine,
            prop_oneof![
                (MAX_CHILDREN - 2)..=(MAX_CHILDREN + 2),
                (MAX_CHILDREN / 3 - 2)..=(MAX_CHILDREN / 3 + 2),
            ],
            prop_oneof![any::<usize>(), Just(usize::MAX), Just(1usize << 58)],
        )
    }

    fn big(bound: u64) -> BoxedStrategy<Option<u64>> {
        pick(
            1..=1000u64,
            around(bound),
            prop_oneof![any::<u64>(), Just(u64::MAX), Just(0)],
        )
    }

    fn duration(bound: Duration) -> BoxedStrategy<Option<Duration>> {
        let ns = Duration::from_nanos;
        pick(
            (1..bound.as_millis().min(120_000) as u64).prop_map(Duration::from_millis),
            (0..5u64).prop_map(move |n| bound + ns(n) - ns(2)),
            prop_oneof![
                Just(Duration::ZERO),
                Just(Duration::MAX),
                (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
            ],
        )
    }

    fn crashes(bound: u32, window: Duration) -> BoxedStrategy<Option<(u32, Duration)>> {
        let count = pick(
            1..=5u32,
            around(u64::from(bound)).prop_map(|n| n as u32),
            prop_oneof![any::<u32>(), Just(u32::MAX), Just(0)],
        );
        (count, duration(window))
            .prop_map(|(n, w)| Some((n?, w?)))
            .boxed()
    }

    /// Every numeric setting of the builder, each possibly unset.
    #[derive(Debug, Clone)]
    struct Input {
        start_children: Option<usize>,
        min_spare: Option<usize>,
        max_spare: Option<usize>,
        max_children: Option<usize>,
        warm_workers: Option<usize>,
        max_spawn_rate: Option<usize>,
        requests: Option<u64>,
        requests_jitter: Option<u64>,
        max_rss: Option<u64>,
        cpu_share: Option<f64>,
        babysit: Option<Duration>,
        cpu_limit: Option<Duration>,
        request_timeout: Option<Duration>,
        long_request_timeout: Option<Duration>,
        shutdown_timeout: Option<Duration>,
        spawn_timeout: Option<Duration>,
        max_backoff: Option<Duration>,
        max_restarts: Option<(u32, Duration)>,
        crash_burst: Option<(u32, Duration)>,
        umask: Option<u32>,
    }

    impl Input {
        /// Unsets what does not apply to the mode of `mode` (0: a plain
        /// daemon, 1: fork per request, 2: a pool), so that many inputs
        /// build; without it nearly every input is a `WrongMode`.
        fn fit(mut self, mode: u8) -> Input {
            if mode == 0 {
                self.max_children = None;
            }
            if mode < 2 {
                self.start_children = None;
                self.min_spare = None;
                self.max_spare = None;
                self.requests = None;
                self.requests_jitter = None;
            }
            if mode != 1 {
                self.warm_workers = None;
            }
            if mode == 2 && self.requests.is_none() {
                self.requests_jitter = None;
            }
            if mode == 0 || self.babysit.is_none() {
                self.babysit = None;
                self.cpu_limit = None;
                self.cpu_share = None;
                self.request_timeout = None;
                self.long_request_timeout = None;
                self.max_rss = None;
            }
            self
        }
    }

    fn input() -> impl Strategy<Value = Input> {
        let pool = (
            count(1..=64),
            count(1..=64),
            count(1..=128),
            count(1..=256),
            count(0..=8),
            count(1..=1024),
        );
        let share = pick(
            0.1..400.0f64,
            prop_oneof![Just(MAX_CPU_SHARE), Just(409_600.001), Just(0.0)],
            prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(-1.0)
            ],
        );
        let requests = (big(MAX_REQUESTS), big(MAX_REQUESTS), big(MAX_RSS), share);
        let babysit = (duration(DAY), duration(YEAR), duration(DAY), duration(DAY));
        let rest = (
            duration(DAY),
            duration(MAX_SPAWN_TIMEOUT),
            duration(DAY),
            crashes(MAX_RESTARTS, YEAR),
            crashes(MAX_CRASH_BURST, MAX_CRASH_BURST_WINDOW),
            pick(0..=0o777u32, 0o776..=0o1001u32, any::<u32>()),
        );
        // Most inputs are fitted to their mode; the others keep everything.
        let fit = (0..3u8, proptest::bool::weighted(0.85));
        (pool, requests, babysit, rest, fit).prop_map(
            |(
                (start_children, min_spare, max_spare, max_children, warm_workers, max_spawn_rate),
                (requests, requests_jitter, max_rss, cpu_share),
                (babysit, cpu_limit, request_timeout, long_request_timeout),
                (shutdown_timeout, spawn_timeout, max_backoff, max_restarts, crash_burst, umask),
                (mode, fitted),
            )| {
                let input = Input {
                    start_children,
                    min_spare,
                    max_spare,
                    max_children,
                    warm_workers,
                    max_spawn_rate,
                    requests,
                    requests_jitter,
                    max_rss,
                    cpu_share,
                    babysit,
                    cpu_limit,
                    request_timeout,
                    long_request_timeout,
                    shutdown_timeout,
                    spawn_timeout,
                    max_backoff,
                    max_restarts,
                    crash_burst,
                    umask,
                };
                if fitted { input.fit(mode) } else { input }
            },
        )
    }

    fn builder(i: &Input) -> DaemonBuilder {
        let mut b = Daemon::builder();
        macro_rules! set {
            ($($name:ident),*) => {$(
                if let Some(v) = i.$name {
                    b = b.$name(v);
                }
            )*};
        }
        set!(
            start_children,
            min_spare,
            max_spare,
            max_children,
            warm_workers,
            max_spawn_rate,
            requests,
            requests_jitter,
            max_rss,
            cpu_share,
            babysit,
            cpu_limit,
            request_timeout,
            long_request_timeout,
            shutdown_timeout,
            spawn_timeout,
            max_backoff,
            umask
        );
        if let Some((n, window)) = i.max_restarts {
            b = b.max_restarts(n, window);
        }
        if let Some((n, window)) = i.crash_burst {
            b = b.crash_burst(n, window);
        }
        b
    }

    /// Whether `Instant::now() + d` (and twice `d`, as the babysitter's
    /// steps take it) cannot overflow.
    fn addable(d: Duration) -> bool {
        let now = Instant::now();
        now.checked_add(d).is_some()
            && d.checked_mul(2)
                .and_then(|d2| now.checked_add(d2))
                .is_some()
    }

    fn check(config: &Config) -> Result<(), TestCaseError> {
        match config.mode() {
            Mode::Daemon => prop_assert_eq!(config.warm_workers(), 0),
            Mode::ForkPerRequest { max_children } => {
                prop_assert!((1..=MAX_CHILDREN).contains(max_children));
                prop_assert!(config.warm_workers() <= *max_children);
            }
            Mode::PreFork(p) => {
                prop_assert!(1 <= p.min_spare && p.min_spare <= p.max_spare, "{p:?}");
                prop_assert!(p.max_spare <= MAX_CHILDREN, "{p:?}");
                prop_assert!(
                    1 <= p.start_children && p.start_children <= p.max_children,
                    "{p:?}"
                );
                prop_assert!(p.min_spare <= p.max_children, "{p:?}");
                prop_assert!(p.max_children <= MAX_CHILDREN, "{p:?}");
                let requests = p.requests.map_or(0, NonZeroU64::get);
                prop_assert!(requests.checked_add(p.requests_jitter).is_some(), "{p:?}");
                prop_assert!(p.requests_jitter.checked_add(1).is_some(), "{p:?}");
                prop_assert_eq!(config.warm_workers(), 0);
            }
        }
        let crash = config.crash_policy();
        prop_assert!((1..=MAX_CHILDREN).contains(&crash.max_spawn_rate));
        let mut durations = vec![
            config.shutdown_timeout(),
            config.spawn_timeout(),
            crash.max_backoff,
            crash.crash_burst.1,
        ];
        prop_assert!((1..=MAX_CRASH_BURST).contains(&crash.crash_burst.0));
        if let Some((n, window)) = crash.max_restarts {
            prop_assert!((1..=MAX_RESTARTS).contains(&n));
            durations.push(window);
        }
        if let Some(limits) = config.babysit_limits() {
            durations.extend([limits.interval, limits.cpu_limit]);
            durations.extend(limits.request_timeout);
            durations.extend(limits.long_request_timeout);
            if let Some(rss) = limits.max_rss {
                prop_assert!((1..=MAX_RSS).contains(&rss));
            }
            if let Some(share) = limits.cpu_share {
                prop_assert!(share.is_finite() && share > 0.0 && share <= MAX_CPU_SHARE);
            }
        }
        for d in durations {
            prop_assert!(!d.is_zero(), "zero duration in {config:?}");
            prop_assert!(addable(d), "{d:?} in {config:?}");
        }
        prop_assert!(config.umask() <= 0o777);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn build_never_panics_and_what_it_accepts_is_consistent(i in input()) {
            match builder(&i).build() {
                Ok(daemon) => check(daemon.config())?,
                Err(err) => {
                    // A typed configuration error, with a message.
                    prop_assert!(!err.to_string().is_empty());
                    prop_assert!(
                        matches!(
                            err,
                            Error::Zero(_)
                                | Error::OutOfRange { .. }
                                | Error::SpareRange { .. }
                                | Error::AboveMaxChildren { .. }
                                | Error::WrongMode { .. }
                                | Error::Needs { .. }
                        ),
                        "{err:?}"
                    );
                }
            }
        }

        /// Small pools are never refused for a bound: only for a conflict
        /// between their counts, and what builds holds the invariants.
        #[test]
        fn small_pools_build(
            start in 1..=64usize,
            min in proptest::option::of(1..=64usize),
            max_spare in proptest::option::of(1..=128usize),
            max in proptest::option::of(1..=256usize),
        ) {
            let mut b = Daemon::builder().start_children(start);
            if let Some(n) = min { b = b.min_spare(n); }
            if let Some(n) = max_spare { b = b.max_spare(n); }
            if let Some(n) = max { b = b.max_children(n); }
            match b.build() {
                Ok(daemon) => check(daemon.config())?,
                Err(err) => prop_assert!(
                    matches!(err, Error::SpareRange { .. } | Error::AboveMaxChildren { .. }),
                    "{err:?}"
                ),
            }
        }
    }
}
