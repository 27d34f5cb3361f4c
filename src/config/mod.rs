//! The builder, its validation and the derived defaults.
//!
//! Here: what `build` makes, the `Config`, its `Mode` (a pre-forked pool's
//! `PreFork`) and its `CrashPolicy`. `builder.rs`: `DaemonBuilder`, its
//! defaults and its setters. `bounds.rs`: `MAX_CHILDREN` and the other
//! bounds, and `build`, which validates and derives the defaults (tested
//! in `bounds/tests.rs`, and with random inputs in `bounds/properties.rs`).

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::babysitter::BabysitLimits;
#[cfg(doc)]
use crate::error::Error;
use crate::ops::PrivilegeScope;

mod builder;
// After `builder`, so that the docs list `build` after the setters.
pub(crate) mod bounds;

pub use self::bounds::MAX_CHILDREN;
pub use self::builder::DaemonBuilder;

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
    pub(crate) keep_fds: Vec<std::os::fd::RawFd>,
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
    /// The descriptors named with
    /// [`keep_fd`](DaemonBuilder::keep_fd), kept open through `run`'s close
    /// of inherited descriptors.
    pub fn kept_fds(&self) -> &[std::os::fd::RawFd] {
        &self.keep_fds
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
