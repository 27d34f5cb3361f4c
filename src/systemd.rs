//! systemd integration: the notify protocol and socket activation.
//!
//! When `NOTIFY_SOCKET` is set, the supervisor tells the service manager
//! `READY=1` once the pool is up, `RELOADING=1` (then `READY=1`) around a
//! graceful reload, `STOPPING=1` when shutdown begins, `STATUS=` with a
//! one-line pool summary as it changes, and, when `WATCHDOG_USEC` is set,
//! `WATCHDOG=1` at half that interval, but only while the supervisor's loop
//! runs and the pool is not degraded (workers dying young): a stuck or
//! crash-looping daemon is restarted by systemd. Workers never notify.
//!
//! A detached daemon changes pid: run it under systemd with `detach(false)`
//! and `Type=notify` (the recommended way), or give the unit
//! `NotifyAccess=all`.

use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The supervisor's connection to the service manager.
#[derive(Debug)]
pub(crate) struct Notify {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notify {
    /// From `NOTIFY_SOCKET`, if set (a path, or `@name` in the abstract
    /// namespace).
    pub(crate) fn from_env() -> Option<Notify> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_str()?;
        let addr = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
            None => SocketAddr::from_pathname(path).ok()?,
        };
        let sock = UnixDatagram::unbound().ok()?;
        sock.set_nonblocking(true).ok()?;
        Some(Notify { sock, addr })
    }

    /// Sends one notification (newline-separated assignments); never blocks.
    pub(crate) fn send(&self, message: &str) {
        let _ = self.sock.send_to_addr(message.as_bytes(), &self.addr);
    }
}

/// The watchdog interval asked for by the service manager, if any
/// (`WATCHDOG_USEC`, for this process if `WATCHDOG_PID` says so).
pub(crate) fn watchdog_interval() -> Option<Duration> {
    // systemd names the process it started; a detached daemon's supervisor
    // is that process's grandchild, and counts as it.
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        let pid = pid.to_str()?.parse::<u32>().ok()?;
        let launched_as = crate::process::LAUNCH_PID.get().copied();
        if pid != std::process::id() && Some(pid) != launched_as {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Socket activation: the listening sockets the service manager passed
/// (`LISTEN_FDS`, from descriptor 3, for this process per `LISTEN_PID`),
/// marked close-on-exec. The variables are removed, so that the sockets are
/// taken once. Empty without socket activation.
///
/// Call it before [`Daemon::run`](crate::Daemon::run), from `main`, and use
/// the sockets as you would use listeners you bound yourself: every worker
/// inherits them.
///
/// # Examples
///
/// ```no_run
/// let listener = actix_daemon::listen_fds()
///     .into_iter()
///     .next()
///     .map(std::net::TcpListener::from)
///     .unwrap_or_else(|| std::net::TcpListener::bind("127.0.0.1:8080").unwrap());
/// ```
pub fn listen_fds() -> Vec<OwnedFd> {
    crate::process::take_listen_fds()
}
