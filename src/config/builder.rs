//! `DaemonBuilder`: its defaults and its setters. `build` and its checks
//! are in `bounds.rs`.

use std::path::PathBuf;
use std::time::Duration;

use super::CrashPolicy;
#[cfg(doc)]
use crate::error::Error;
use crate::ops::PrivilegeScope;

/// How long a spawn request waits for the spawner's answer, unless configured.
const DEFAULT_SPAWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Crashes of ready workers within a window that make a burst, unless configured.
const DEFAULT_CRASH_BURST: (u32, Duration) = (5, Duration::from_secs(10));

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
    pub(super) alias: String,
    pub(super) detach: bool,
    pub(super) logfile: Option<PathBuf>,
    pub(super) verbose: bool,
    pub(super) start_children: Option<usize>,
    pub(super) min_spare: Option<usize>,
    pub(super) max_spare: Option<usize>,
    pub(super) max_children: Option<usize>,
    pub(super) requests: Option<u64>,
    pub(super) requests_jitter: Option<u64>,
    pub(super) warm_workers: Option<usize>,
    pub(super) babysit: Option<Duration>,
    pub(super) cpu_limit: Option<Duration>,
    pub(super) cpu_share: Option<f64>,
    pub(super) request_timeout: Option<Duration>,
    pub(super) long_request_timeout: Option<Duration>,
    pub(super) max_rss: Option<u64>,
    pub(super) shutdown_timeout: Duration,
    pub(super) spawn_timeout: Duration,
    pub(super) workdir: PathBuf,
    pub(super) umask: u32,
    pub(super) crash: CrashPolicy,
    pub(super) pidfile: Option<PathBuf>,
    pub(super) user: Option<String>,
    pub(super) group: Option<String>,
    pub(super) privileges: PrivilegeScope,
    pub(super) upgrade_fds: Vec<std::os::fd::RawFd>,
    pub(super) keep_fds: Vec<std::os::fd::RawFd>,
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
            keep_fds: Vec::new(),
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

    /// Keeps open a descriptor that is not close-on-exec, in every process
    /// of the daemon (the supervisor, the spawner, every worker).
    ///
    /// `run` closes, before anything forks, every descriptor the process
    /// inherited from whoever launched it: every descriptor above stderr
    /// whose close-on-exec flag is clear, except systemd's socket-activation
    /// descriptors and a binary upgrade's hand-over (see the book's
    /// "Security" chapter, "Inherited descriptors"). Descriptors the
    /// program opened itself through Rust's standard library, tokio,
    /// socket2 or nix are close-on-exec and stay open without this: a
    /// listener bound before `run` needs nothing.
    ///
    /// Name here each descriptor the application means to keep that is not
    /// close-on-exec: one passed by a wrapper or a service manager under
    /// another convention (`--fd 5`, s6's notification descriptor), one made
    /// with `dup2` (which clears the flag), one opened by a C library
    /// without `O_CLOEXEC`. An undeclared one is closed even if a Rust value
    /// still holds its number: that value then fails with `EBADF`, or,
    /// worse, reaches whatever the number is reused for next. So declare
    /// it, or mark it close-on-exec yourself, before `run`.
    ///
    /// Every process of the daemon keeps it, workers included, as they keep
    /// a listener: a descriptor only the supervisor should hold must be
    /// closed by the application in its workers (in `init`, when
    /// [`Process::is_worker`](crate::Process::is_worker)). Call once per
    /// descriptor; 0, 1 and 2 are always kept. Default: none.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) (and `run`, before anything forks) return
    /// [`Error::KeepFd`] for a negative descriptor or one that is not open.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::fd::AsRawFd;
    ///
    /// let file = std::fs::File::open("/dev/null")?;
    /// let daemon = actix_daemon::Daemon::builder().keep_fd(file.as_raw_fd()).build()?;
    /// assert_eq!(daemon.config().kept_fds(), [file.as_raw_fd()]);
    ///
    /// let err = actix_daemon::Daemon::builder().keep_fd(-1).build().unwrap_err();
    /// assert_eq!(err.to_string(), "keep_fd: descriptor -1 is negative");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn keep_fd(mut self, fd: std::os::fd::RawFd) -> Self {
        if !self.keep_fds.contains(&fd) {
            self.keep_fds.push(fd);
        }
        self
    }

    /// [`keep_fd`](Self::keep_fd) for each descriptor.
    pub fn keep_fds(self, fds: impl IntoIterator<Item = std::os::fd::RawFd>) -> Self {
        fds.into_iter().fold(self, Self::keep_fd)
    }
}
