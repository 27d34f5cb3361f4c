//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while configuring or running a daemon.
///
/// Configuration errors ([`SpareRange`](Error::SpareRange),
/// [`AboveMaxChildren`](Error::AboveMaxChildren), [`Zero`](Error::Zero),
/// [`WrongMode`](Error::WrongMode), [`OutOfRange`](Error::OutOfRange),
/// [`DetachWithoutLogfile`](Error::DetachWithoutLogfile),
/// [`KeepFd`](Error::KeepFd)) are returned by
/// [`DaemonBuilder::build`](crate::DaemonBuilder::build) before any process
/// is forked. Start-up errors are returned by [`Daemon::run`](crate::Daemon::run)
/// before the daemon is ready; when the daemon detaches, the launching
/// process prints them on its own stderr and exits with status 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `max_spare` is below `min_spare`.
    #[error("max_spare ({max_spare}) is below min_spare ({min_spare})")]
    SpareRange {
        /// The configured or derived `min_spare`.
        min_spare: usize,
        /// The configured or derived `max_spare`.
        max_spare: usize,
    },
    /// More children would be started, or kept spare, than `max_children` allows.
    #[error("{what} ({value}) is above max_children ({max_children})")]
    AboveMaxChildren {
        /// The parameter that is too large (`start_children` or `min_spare`).
        what: &'static str,
        /// Its value.
        value: usize,
        /// The configured or derived `max_children`.
        max_children: usize,
    },
    /// A parameter is zero where zero means nothing.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A parameter only makes sense in another mode.
    #[error("{param} only applies to {mode}")]
    WrongMode {
        /// The parameter.
        param: &'static str,
        /// The mode it needs.
        mode: &'static str,
    },
    /// A parameter that means nothing without another one.
    #[error("{param} needs {needs}")]
    Needs {
        /// The parameter that was set.
        param: &'static str,
        /// What it needs, and why.
        needs: &'static str,
    },
    /// A parameter is outside the values it can take.
    #[error("{param} is {value}, expected {range}")]
    OutOfRange {
        /// The parameter.
        param: &'static str,
        /// Its value, as given.
        value: String,
        /// What it may be.
        range: &'static str,
    },
    /// The path of a status endpoint (`web::StatusEndpoint`, the `web`
    /// feature) is not an absolute path of visible ASCII characters.
    #[error("status path {path:?}: {reason}")]
    StatusPath {
        /// The path, as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An entry of a status endpoint's peer allowlist is neither an IP
    /// address nor a CIDR prefix (the `web` feature).
    #[error("status allowlist entry {entry:?}: {reason}")]
    StatusAllow {
        /// The entry, as given.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A descriptor named with
    /// [`DaemonBuilder::keep_fd`](crate::DaemonBuilder::keep_fd) is negative
    /// or not open (checked by `build`, and again by `run` before anything
    /// forks).
    #[error("keep_fd: descriptor {fd} {problem}")]
    KeepFd {
        /// The descriptor as given.
        fd: i32,
        /// `is negative` or `is not open`.
        problem: &'static str,
    },
    /// [`spawn_foreign_child`](crate::spawn_foreign_child) was called on a
    /// thread that does not belong to the daemon's actix `System` (so there
    /// is no `DaemonActor` to register the child with); nothing was started.
    #[error(
        "spawn_foreign_child was called outside the daemon's actix System: call it from init, an actor or a handler"
    )]
    OutsideSystem,
    /// `detach` was asked for without a log file.
    #[error("detach needs a logfile: a detached daemon has no terminal to write to")]
    DetachWithoutLogfile,
    /// The log file could not be opened or created.
    #[error("cannot open log file {}", path.display())]
    OpenLogfile {
        /// The log file's path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The working directory of a detached daemon is not a usable directory.
    #[error("cannot use working directory {}", path.display())]
    Workdir {
        /// The configured working directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The pidfile could not be opened, locked or written.
    #[error("cannot use pidfile {}", path.display())]
    Pidfile {
        /// The pidfile's path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// Another daemon holds the pidfile's lock: it is running.
    #[error("another instance is running: pidfile {} is locked{}", path.display(),
        pid.map(|p| format!(" by pid {p}")).unwrap_or_default())]
    PidfileLocked {
        /// The pidfile's path.
        path: PathBuf,
        /// The pid written in it, if readable.
        pid: Option<i32>,
    },
    /// A file root would open (`what`: `log file`, `pidfile`) or execute
    /// (`upgrade binary`) is one another user could control: a symbolic
    /// link, not a regular file, more than one link, the wrong owner, or
    /// writable by group or others (see the book's Security chapter).
    #[error("refusing {what} {}: {reason}", path.display())]
    UnsafePath {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The user to drop privileges to does not exist.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// The group to drop privileges to does not exist.
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    /// A user or group to drop to was given, but the daemon does not run as
    /// root and so cannot change them.
    #[error("user and group can only be changed when started as root")]
    NeedRoot,
    /// After dropping privileges, root could be regained.
    #[error("privileges were not dropped: setuid(0) still succeeds")]
    PrivilegesKept,
    /// `run` was called from inside a tokio runtime (such as `#[actix_rt::main]`).
    #[error(
        "run was called inside a tokio runtime: call it from a plain main, a process that has used tokio must not fork"
    )]
    InsideRuntime,
    /// `run` was called from a process that already has more than one thread.
    #[error(
        "run was called with {threads} threads in the process: call it before starting any thread, a fork copies only the calling thread"
    )]
    Threaded {
        /// How many threads `/proc/self/task` listed.
        threads: usize,
    },
    /// A system call failed while setting the daemon up.
    #[error("{op} failed")]
    Sys {
        /// The operation that failed, for example `fork spawner` or `mmap scoreboard`.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Workers kept dying young: more than `max_restarts` within the window.
    #[error("{crashes} workers died young within {window:?} (max_restarts {max}); last: {last}")]
    CrashLoop {
        /// Crashes counted within the window.
        crashes: usize,
        /// The configured limit.
        max: u32,
        /// The window.
        window: std::time::Duration,
        /// How the last one ended.
        last: String,
    },
    /// The spawner process died; the supervisor shut down because it can no longer fork workers.
    #[error("the spawner process {pid} died ({status}); the daemon shut down")]
    SpawnerDied {
        /// The spawner's pid.
        pid: i32,
        /// How it ended.
        status: String,
    },
    /// The spawner did not answer a spawn request within `spawn_timeout`
    /// (stopped, or stuck in a fork); the supervisor ended it and shut down.
    #[error("the spawner (pid {pid}) left a spawn request unanswered for {waited:?}")]
    SpawnerStuck {
        /// The spawner's pid.
        pid: i32,
        /// How long the oldest request had waited.
        waited: std::time::Duration,
    },
    /// The kernel does not offer pidfds (Linux 5.3 or later is needed), or
    /// a seccomp filter forbids them: the supervisor would have no safe way
    /// to signal its children.
    #[error("{call} is not available: Linux 5.3 or later is needed")]
    PidfdUnsupported {
        /// `pidfd_open` or `pidfd_send_signal`.
        call: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A payload's data or file descriptors are over the limits of the
    /// socket that carries requests to workers.
    #[error("payload too large: {what} is {size}, at most {limit}")]
    PayloadTooLarge {
        /// `data` (bytes) or `fds` (count).
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Payload data could not be serialised or deserialised.
    #[error("payload data")]
    PayloadData(#[source] serde_json::Error),
}

impl Error {
    pub(crate) fn sys(op: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Sys {
            op,
            source: source.into(),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
