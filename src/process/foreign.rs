//! [`spawn_foreign_child`]: start a process that dies with the one that
//! started it, and register it with the daemon.
//!
//! `PR_SET_PDEATHSIG` is tied to the **thread** that forked the child, not
//! to its process: the child gets the signal when that thread exits, even
//! while the rest of the process runs on. A child forked from a tokio
//! blocking-pool thread (reaped after 10 s idle), an actix `Arbiter` that is
//! stopped, or an actix-web worker thread that is restarted would be killed
//! for no reason. So every child is forked by one thread of this process
//! that never exits (started on first use, named `foreign-forker`): the
//! signal then comes exactly when the process ends, however it ends.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::mpsc::{Sender, SyncSender, sync_channel};

use actix::SystemService;

use crate::DaemonActor;
use crate::error::{Error, Result};
use crate::messages::ForeignChild;

/// A command to start and where to send the result.
type Job = (Command, SyncSender<io::Result<Child>>);

/// The forking thread of this process: its pid (a forked copy of this
/// process has no such thread, and starts its own) and its queue.
static FORKER: Mutex<Option<(u32, Sender<Job>)>> = Mutex::new(None);

/// The queue of this process's forking thread, started if needed.
fn forker() -> io::Result<Sender<Job>> {
    let mut forker = FORKER.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if let Some((owner, tx)) = forker.as_ref()
        && *owner == pid
    {
        return Ok(tx.clone());
    }
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("foreign-forker".to_owned())
        .spawn(move || {
            // Every fork of this thread execs at once (std's Command): the
            // supervisor's fork counter leaves them out.
            super::exec_forks_only();
            // Ends only with the process: `FORKER` keeps a sender forever.
            while let Ok((command, reply)) = rx.recv() {
                let _ = reply.send(spawn_dying_with_parent(command));
            }
        })?;
    *forker = Some((pid, tx.clone()));
    Ok(tx)
}

/// Forks and execs `command` from the calling thread, with
/// `PR_SET_PDEATHSIG` = `SIGKILL` in the child.
fn spawn_dying_with_parent(mut command: Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec the hook calls only prctl and getppid,
    // which are async-signal-safe, and builds its errors without
    // allocating (`last_os_error`, `from_raw_os_error`).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // Set after the parent died, the signal never comes: if the
            // parent is already gone, do not run the command at all.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Starts `command` as a **foreign child** of this process (the supervisor
/// or a worker) that cannot outlive it, and registers it with
/// [`DaemonActor`] as [`ForeignChild`] does: the daemon reaps it, logs its
/// exit, and TERMs it (then KILLs it after the shutdown timeout) when it
/// shuts down.
///
/// The child asks the kernel for `SIGKILL` when this process dies
/// (`PR_SET_PDEATHSIG`, set between fork and exec, then a check that the
/// parent is still this process, since a request made after the parent
/// died is never answered). So a foreign child no longer outlives a
/// supervisor that is SIGKILLed or crashes. A worker's foreign child dies
/// with its worker, and a worker dies with its supervisor: nothing of the
/// daemon is left either way.
///
/// The kernel ties that signal to the *thread* that forked, so the fork is
/// made by one thread of this process that never exits, started on first
/// use (`foreign-forker`), whichever thread calls this: an actor, `init`,
/// an actix-web handler, an `Arbiter`. The call blocks until the child has
/// exec'd (as [`Command::spawn`] does).
///
/// Use the returned [`Child`] for its pipes, and its id, but do not `wait`
/// on it: the daemon reaps it (a `wait` of yours would race and may see
/// `ECHILD`).
///
/// # What it cannot do
///
/// - The kernel clears the request when the child execs a set-user-ID or
///   set-group-ID program, or changes its credentials: such a child can
///   outlive the daemon. Start it through a wrapper that stays its parent
///   if that matters.
/// - The signal goes to the child only, not to the processes it starts:
///   have it `exec` the long-running program (`sh -c "exec …"`), or give
///   its own children the same care.
/// - Because the child is forked by this process (not spawned with
///   `posix_spawn`), a fork copies the page tables of the calling process:
///   about 40 us per MiB of its memory (DESIGN.md, section 3).
///
/// Every fork made here execs at once, so it is allowed in the supervisor
/// (DESIGN.md invariant 1) and is not counted by the supervisor's "forks
/// since runtime start".
///
/// # Errors
///
/// [`Error::OutsideSystem`] if the calling thread does not belong to an
/// actix `System` (there is no `DaemonActor` to register with); nothing is
/// started. [`Error::Sys`] (`spawn foreign child`) if the thread cannot be
/// started or the command cannot be spawned.
///
/// # Examples
///
/// ```no_run
/// # fn init(process: &actix_daemon::Process) -> actix_daemon::Result<()> {
/// if process.is_supervisor() {
///     let mut command = std::process::Command::new("sh");
///     command.arg("-c").arg("exec my-sidecar --port 9000");
///     let child = actix_daemon::spawn_foreign_child(command)?;
///     slog::info!(process.logger(), "sidecar started"; "pid" => child.id());
/// }
/// # Ok(())
/// # }
/// ```
pub fn spawn_foreign_child(command: Command) -> Result<Child> {
    if actix::System::try_current().is_none() {
        return Err(Error::OutsideSystem);
    }
    let spawn_err = |err| Error::sys("spawn foreign child", err);
    let (reply, answer) = sync_channel(1);
    forker()
        .map_err(spawn_err)?
        .send((command, reply))
        .map_err(|_| spawn_err(io::Error::other("the forking thread has ended")))?;
    let child = answer
        .recv()
        .map_err(|_| spawn_err(io::Error::other("the forking thread has ended")))?
        .map_err(spawn_err)?;
    DaemonActor::from_registry().do_send(ForeignChild(child.id() as i32));
    Ok(child)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    /// The child is forked by the long-lived thread: the short-lived thread
    /// that asked for it can exit without the kernel killing the child (it
    /// would, were the child forked by that thread).
    #[test]
    fn a_child_outlives_the_thread_that_asked_for_it() {
        let asker = std::thread::spawn(|| {
            let mut sleep = Command::new("sleep");
            sleep.arg("1002");
            let (reply, answer) = sync_channel(1);
            forker().unwrap().send((sleep, reply)).unwrap();
            answer.recv().unwrap().unwrap()
        });
        let mut child = asker.join().unwrap();
        let pid = child.id();
        // The death signal of an exited thread comes within microseconds;
        // watch for half a second.
        let end = Instant::now() + Duration::from_millis(500);
        let mut alive = true;
        while alive && Instant::now() < end {
            alive = !matches!(state(pid), None | Some('Z'));
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        // ECHILD if another test's reaping loop took it first.
        let _ = child.wait();
        assert!(alive, "the child died with the thread that asked for it");
    }

    #[test]
    fn outside_a_system_nothing_is_started() {
        let err = spawn_foreign_child(Command::new("/nonexistent")).unwrap_err();
        assert!(matches!(err, Error::OutsideSystem), "{err}");
    }
}
