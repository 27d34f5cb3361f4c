//! The supervisor's phases, each with the data it needs.
//!
//! | phase | entered | signals and messages |
//! |---|---|---|
//! | `Starting` | at start | TERM, INT, QUIT, `Shutdown`: drain; USR1, USR2 (upgrade): refused until ready |
//! | `Running` | the initial pool is ready | everything |
//! | `Reloading` | USR1 | like running; a second USR1 replaces the workers started since too |
//! | `Upgrading` | USR2 with binary upgrades on | TERM: the upgrade is abandoned (the new supervisor stops) and the old one drains |
//! | `Draining` | TERM, INT, QUIT, `Shutdown`, a give-up, a dead or stuck spawner, an upgrade's success | more stop signals change nothing |
//! | `Killing` | the shutdown timeout passed | KILL to what is left |
//! | `Done` | every child reaped | the System stops with the code |

use std::collections::HashSet;
use std::time::Instant;

use nix::unistd::Pid;

/// Where the supervisor is in its life.
#[derive(Debug)]
pub(crate) enum Phase {
    /// The initial pool is on its way.
    Starting,
    /// Serving.
    Running,
    /// A graceful reload replaces these workers.
    Reloading { old: HashSet<Pid> },
    /// A binary upgrade: the new supervisor is starting; its verdict comes
    /// through `verdict`, a task that owns the pipe (aborting it closes the
    /// pipe, which tells the new supervisor to stop), which the actor shell
    /// starts when it carries out `Effect::AwaitVerdict`.
    Upgrading {
        new: Pid,
        verdict: Option<actix_rt::task::JoinHandle<()>>,
    },
    /// Stopping gracefully until `deadline`, then killing.
    Draining { deadline: Instant, code: i32 },
    /// Killed what was left; waiting to reap it until `deadline`.
    Killing { deadline: Instant, code: i32 },
    /// Everything reaped: the System stops with `code`.
    Done { code: i32 },
}

impl Phase {
    /// Whether the supervisor is stopping (draining, killing or done).
    pub(crate) fn is_stopping(&self) -> bool {
        matches!(
            self,
            Phase::Draining { .. } | Phase::Killing { .. } | Phase::Done { .. }
        )
    }

    /// Whether the pool is serving (not starting and not stopping).
    pub(crate) fn is_serving(&self) -> bool {
        matches!(
            self,
            Phase::Running | Phase::Reloading { .. } | Phase::Upgrading { .. }
        )
    }

    /// The exit code decided when stopping began.
    pub(crate) fn code(&self) -> Option<i32> {
        match self {
            Phase::Draining { code, .. } | Phase::Killing { code, .. } | Phase::Done { code } => {
                Some(*code)
            }
            _ => None,
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Reloading { .. } => "reloading",
            Phase::Upgrading { .. } => "upgrading",
            Phase::Draining { .. } => "draining",
            Phase::Killing { .. } => "killing",
            Phase::Done { .. } => "done",
        }
    }
}
