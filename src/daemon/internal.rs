//! Messages inside the daemon: from its own tasks, the spawner, the
//! babysitter and the upgrade, to `DaemonActor`.

use actix::prelude::*;

use crate::payload::Payload;
use crate::process;
use crate::scoreboard::SlotSnapshot;

/// A fork-per-request worker took its request from its own channel
/// (`None`: the supervisor is gone).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Claimed(pub(crate) Option<Payload>);

/// Workers changed a state the supervisor acts on (the eventfd).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Woken;

/// A message from the spawner.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FromSpawner(pub(crate) process::wire::FromSpawner);

/// A worker's own channel became readable; the flag is cleared by the
/// supervisor before it reads, so that one such event at most waits.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WorkerSaid(
    pub(crate) nix::unistd::Pid,
    pub(crate) std::sync::Arc<std::sync::atomic::AtomicBool>,
);

/// Every subscriber handled `Shutdown` (or the timeout passed).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ShutdownAcked;

/// The verdict of a binary upgrade's new supervisor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct UpgradeVerdict(pub(crate) Result<Option<i32>, String>);

/// From the babysitter: what it decided, for the supervisor to carry out
/// through its registry.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Babysat(pub(crate) Vec<crate::babysitter::Action>);

/// From the babysitter: the registered workers, with their pids from the
/// registry and their states from the scoreboard.
#[derive(Debug, Message)]
#[rtype(result = "Vec<SlotSnapshot>")]
pub(crate) struct Roster;
