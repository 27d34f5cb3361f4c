//! The status report (`Status`) and the peek report (`Peek`).

use std::fmt;

use serde::Serialize;

use crate::scoreboard::{Counters, SlotSnapshot};

/// Which kind of process answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The supervisor: the process that called `run` (the seed's parent).
    Supervisor,
    /// A worker (the seed's child).
    Worker,
}

impl Role {
    /// The seed's wording: `we are the parent` or `we are a child`.
    pub fn describe(self) -> &'static str {
        match self {
            Role::Supervisor => "we are the parent",
            Role::Worker => "we are a child",
        }
    }
}

/// The pool's parameters, as the report shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolLimits {
    /// Most workers at once.
    pub max_children: usize,
    /// Pre-fork: least spares wanted.
    pub min_spare: Option<usize>,
    /// Pre-fork: most spares kept.
    pub max_spare: Option<usize>,
    /// Pre-fork: requests per worker (`None`: unlimited).
    pub requests: Option<u64>,
    /// Pre-fork: each worker serves up to this many more than `requests`.
    pub requests_jitter: u64,
}

/// The daemon's status: `Display` in the seed's layout for people, `Serialize`
/// for machines.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The daemon's alias.
    pub alias: String,
    /// `Pre-forking server`, `Forking server` or `Daemon server`.
    pub mode: &'static str,
    /// Who answered.
    pub role: Role,
    /// The answering process.
    pub pid: u32,
    /// The supervisor's pid.
    pub supervisor_pid: u32,
    /// The answering worker's slot, if a worker answered.
    pub slot: Option<usize>,
    /// Pool parameters, if the mode has workers.
    pub limits: Option<PoolLimits>,
    /// Every slot of the scoreboard.
    pub slots: Vec<SlotSnapshot>,
    /// Pool counters.
    pub counters: Counters,
    /// Supervisor: fork-per-request requests not yet taken by a worker (in
    /// its queue, or handed to the workers' socket).
    pub queued_requests: Option<usize>,
    /// Supervisor: whether the acceptor is paused at `max_children`.
    pub paused: Option<bool>,
    /// Whether this process is shutting down.
    pub shutting_down: bool,
}

impl StatusReport {
    /// Whether workers keep dying young (spawns are backing off).
    pub fn is_degraded(&self) -> bool {
        self.counters.crash_streak > 0
    }

    /// The `Slots [ ... ]` line.
    pub fn slots_line(&self) -> String {
        let mut line = String::from("Slots [");
        for slot in &self.slots {
            line.push(' ');
            line.push(slot.state.letter());
        }
        line.push_str(" ]");
        line
    }

    /// Workers in each class: (waiting, busy, starting, exiting).
    pub fn tally(&self) -> (usize, usize, usize, usize) {
        self.slots.iter().fold((0, 0, 0, 0), |(i, b, s, e), slot| {
            let st = slot.state;
            (
                i + st.is_idle() as usize,
                b + st.is_busy() as usize,
                s + st.is_starting() as usize,
                e + (st == crate::SlotState::Exit) as usize,
            )
        })
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "actix_daemon::DaemonActor")?;
        writeln!(f, "    {}, {}", self.mode, self.role.describe())?;
        write!(
            f,
            "    Alias {}, PID {}, supervisor PID {}",
            self.alias, self.pid, self.supervisor_pid
        )?;
        if let Some(slot) = self.slot {
            write!(f, ", slot {slot}")?;
        }
        writeln!(f)?;
        if let Some(limits) = self.limits {
            let (idle, busy, starting, exiting) = self.tally();
            write!(
                f,
                "    Workers: {} waiting, {} busy, {} starting, {} exiting; max {}",
                idle, busy, starting, exiting, limits.max_children
            )?;
            if let (Some(min), Some(max)) = (limits.min_spare, limits.max_spare) {
                write!(f, ", spares {min} to {max}")?;
            }
            if limits.min_spare.is_some() {
                match limits.requests {
                    Some(n) if limits.requests_jitter > 0 => write!(
                        f,
                        ", {n} to {} requests per child",
                        n.saturating_add(limits.requests_jitter)
                    )?,
                    Some(n) => write!(f, ", {n} requests per child")?,
                    None => write!(f, ", unlimited requests per child")?,
                }
            }
            writeln!(f)?;
            writeln!(f, "    {}", self.slots_line())?;
            let c = &self.counters;
            write!(f, "    Requests {}", c.requests)?;
            if c.connections > 0 {
                write!(f, ", connections {}", c.connections)?;
            }
            writeln!(
                f,
                "; workers spawned {}, exited {}, retired {}, killed {}; fork failures {}",
                c.spawned, c.exited, c.retired, c.killed, c.fork_failed
            )?;
            if c.rogue + c.hung + c.memory + c.vanished > 0 {
                writeln!(
                    f,
                    "    Babysitter: {} rogue, {} hung, {} over memory, {} slots freed",
                    c.rogue, c.hung, c.memory, c.vanished
                )?;
            }
            if c.killed_externally + c.misbehaved > 0 {
                writeln!(
                    f,
                    "    Killed by a signal we did not send {}; retired for misbehaving {}",
                    c.killed_externally, c.misbehaved
                )?;
            }
            if let Some(last) = c.last_crash {
                let last = if last < 0 {
                    format!("signal {}", -last)
                } else {
                    format!("exit {last}")
                };
                if c.crash_streak > 0 {
                    writeln!(
                        f,
                        "    Pool degraded: {} workers died young in a row, last {last}; spawns back off",
                        c.crash_streak
                    )?;
                } else {
                    writeln!(
                        f,
                        "    Young deaths {} (last {last}); pool healthy",
                        c.crashed
                    )?;
                }
            }
            if let Some(queued) = self.queued_requests {
                writeln!(
                    f,
                    "    Queued requests {queued}{}",
                    if self.paused == Some(true) {
                        ", accepting paused"
                    } else {
                        ""
                    }
                )?;
            }
            for slot in self.slots.iter().filter(|s| s.pid != 0) {
                writeln!(
                    f,
                    "    Slot {}: pid {}, state '{}', {} requests, {:.1}s in state",
                    slot.slot,
                    slot.pid,
                    slot.state.letter(),
                    slot.requests,
                    slot.in_state_ms as f64 / 1000.0
                )?;
            }
        }
        if self.shutting_down {
            writeln!(f, "    Shutting down")?;
        }
        Ok(())
    }
}

/// One subscriber in a [`PeekReport`].
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberInfo {
    /// Its index in the subscription list.
    pub index: usize,
    /// Whether its actor is still alive (its mailbox is open).
    pub alive: bool,
}

/// What this process's actor system is doing, and why it would not exit: the
/// seed's `peek`, for an actix process.
#[derive(Debug, Clone, Serialize)]
pub struct PeekReport {
    /// Whether details were asked for.
    pub verbose: bool,
    /// Who answered.
    pub role: Role,
    /// The mode.
    pub mode: &'static str,
    /// This process.
    pub pid: u32,
    /// Its parent.
    pub parent_pid: u32,
    /// The supervisor.
    pub supervisor_pid: u32,
    /// The spawner, if this is a supervisor with workers.
    pub spawner_pid: Option<i32>,
    /// Subscribers to `DaemonSignal`.
    pub subscribers: Vec<SubscriberInfo>,
    /// Supervisor: fork-per-request requests waiting for a slot.
    pub queued_requests: usize,
    /// Supervisor: spawn requests the spawner has not answered yet.
    pub pending_spawns: usize,
    /// Supervisor: workers it knows by pid.
    pub known_workers: usize,
    /// Supervisor: foreign children it reaps.
    pub foreign_children: Vec<i32>,
    /// The scoreboard's `Slots [ ... ]` line (empty without workers).
    pub slots: String,
    /// Tasks alive in this process's tokio runtime. Actors and futures
    /// spawned on actix's arbiter run on a tokio `LocalSet`, which tokio's
    /// stable metrics do not count: this is the count of the rest (the
    /// daemon's signal and wake-up tasks, `actix_rt::spawn` outside actors).
    pub runtime_tasks: usize,
    /// Tasks waiting in the runtime's global queue (the same caveat).
    pub runtime_queue: usize,
    /// Open file descriptors.
    pub open_fds: usize,
    /// Threads of this process.
    pub threads: usize,
    /// Supervisor: `fork()` calls it made since its runtime started. Only a
    /// binary upgrade (a fork immediately followed by exec) may make one;
    /// otherwise it stays 0: workers come from the spawner.
    pub forks_since_runtime: u64,
    /// Whether shutdown has begun.
    pub shutting_down: bool,
    /// Why this process's `System` keeps running.
    pub keeps_running: Vec<String>,
    /// Verbose: targets of the open descriptors.
    pub fds: Vec<String>,
}

impl fmt::Display for PeekReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "actix_daemon peek ({})", self.role.describe())?;
        writeln!(
            f,
            "    {} PID {}, parent PID {}, supervisor PID {}{}",
            self.mode,
            self.pid,
            self.parent_pid,
            self.supervisor_pid,
            self.spawner_pid
                .map(|p| format!(", spawner PID {p}"))
                .unwrap_or_default()
        )?;
        writeln!(
            f,
            "    Runtime: {} tasks alive, {} queued; {} threads; {} open fds; {} forks since runtime start",
            self.runtime_tasks,
            self.runtime_queue,
            self.threads,
            self.open_fds,
            self.forks_since_runtime
        )?;
        let alive = self.subscribers.iter().filter(|s| s.alive).count();
        writeln!(
            f,
            "    Subscribers: {} ({} alive)",
            self.subscribers.len(),
            alive
        )?;
        if self.role == Role::Supervisor {
            writeln!(
                f,
                "    Queued requests {}, pending spawns {}, known workers {}, foreign children {:?}",
                self.queued_requests,
                self.pending_spawns,
                self.known_workers,
                self.foreign_children
            )?;
        }
        if !self.slots.is_empty() {
            writeln!(f, "    {}", self.slots)?;
        }
        writeln!(f, "    Keeps running because:")?;
        for reason in &self.keeps_running {
            writeln!(f, "        {reason}")?;
        }
        if self.verbose {
            for s in &self.subscribers {
                writeln!(
                    f,
                    "    Subscriber {}: {}",
                    s.index,
                    if s.alive { "alive" } else { "gone" }
                )?;
            }
            for fd in &self.fds {
                writeln!(f, "    fd {fd}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SlotId, SlotSnapshot, SlotState};

    fn report(counters: Counters) -> StatusReport {
        StatusReport {
            alias: "test".into(),
            mode: "Pre-forking server",
            role: Role::Worker,
            pid: 2,
            supervisor_pid: 1,
            slot: Some(1),
            limits: Some(PoolLimits {
                max_children: 3,
                min_spare: Some(1),
                max_spare: Some(2),
                requests: None,
                requests_jitter: 0,
            }),
            slots: [SlotState::Req, SlotState::Wait, SlotState::Empty]
                .into_iter()
                .enumerate()
                .map(|(i, state)| SlotSnapshot {
                    slot: SlotId(i),
                    state,
                    pid: if state == SlotState::Empty {
                        0
                    } else {
                        10 + i as i32
                    },
                    requests: 0,
                    in_state_ms: 1500,
                })
                .collect(),
            counters,
            queued_requests: None,
            paused: None,
            shutting_down: false,
        }
    }

    #[test]
    fn the_layout_of_the_examples_protocol() {
        let text = report(Counters::default()).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "actix_daemon::DaemonActor");
        assert_eq!(lines[1], "    Pre-forking server, we are a child");
        assert!(lines.contains(&"    Slots [ r w   ]"), "{text}");
        assert!(
            !text.contains("degraded") && !text.contains("Babysitter"),
            "{text}"
        );
    }

    #[test]
    fn a_degraded_pool_says_so_with_the_last_exit_status() {
        let degraded = report(Counters {
            crashed: 3,
            crash_streak: 3,
            last_crash: Some(101),
            hung: 1,
            ..Counters::default()
        });
        assert!(degraded.is_degraded());
        let text = degraded.to_string();
        assert!(
            text.contains(
                "    Pool degraded: 3 workers died young in a row, last exit 101; spawns back off"
            ),
            "{text}"
        );
        assert!(
            text.contains("    Babysitter: 0 rogue, 1 hung, 0 over memory, 0 slots freed"),
            "{text}"
        );
        let killed = report(Counters {
            crashed: 1,
            crash_streak: 0,
            last_crash: Some(-9),
            ..Counters::default()
        })
        .to_string();
        assert!(
            killed.contains("    Young deaths 1 (last signal 9); pool healthy"),
            "{killed}"
        );
    }

    #[test]
    fn workers_killed_from_outside_and_misbehaving_ones_are_counted_apart() {
        let quiet = report(Counters::default()).to_string();
        assert!(!quiet.contains("Killed by a signal"), "{quiet}");
        let text = report(Counters {
            killed_externally: 7,
            misbehaved: 2,
            ..Counters::default()
        })
        .to_string();
        assert!(
            text.contains("    Killed by a signal we did not send 7; retired for misbehaving 2"),
            "{text}"
        );
        let json = serde_json::to_value(report(Counters {
            killed_externally: 7,
            misbehaved: 2,
            ..Counters::default()
        }))
        .unwrap();
        assert_eq!(json["counters"]["killed_externally"], 7, "{json}");
        assert_eq!(json["counters"]["misbehaved"], 2, "{json}");
    }

    #[test]
    fn reports_serialise_for_machines() {
        let json = serde_json::to_value(report(Counters::default())).unwrap();
        assert_eq!(json["mode"], "Pre-forking server");
        assert_eq!(json["role"], "worker");
        assert_eq!(json["slots"][0]["state"], "req");
        assert_eq!(json["slots"][0]["pid"], 10);
        assert_eq!(json["counters"]["crash_streak"], 0);
    }
}
