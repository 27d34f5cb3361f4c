//! `BabysitterActor`: the supervisor's watch over its workers.
//!
//! Every `babysit` interval it reads each worker's `/proc` data (through the
//! `procfs` crate) and the scoreboard, and acts:
//!
//! | rule | fires when | action |
//! |---|---|---|
//! | rogue CPU (the seed's) | total CPU time above `cpu_limit` (default 10 min) | escalation |
//! | CPU share | more than `cpu_share` % of a core over the last 3 intervals | escalation |
//! | hung request | in `r` longer than `request_timeout` | escalation |
//! | hung long request | in `l` longer than `long_request_timeout` | escalation |
//! | memory | resident memory above `max_rss` | graceful retirement: TERM, the worker finishes its request and exits |
//! | vanished | the pid is no longer in `/proc` | the slot is freed, the pool refilled |
//! | unreapable zombie | a zombie for two intervals | the slot is freed |
//!
//! Escalation is the seed's: SIGINT, then SIGTERM, then SIGKILL, one step
//! every two intervals, then the slot is freed as if the worker had exited.
//! A worker waiting in `.` or `w` is never escalated by a request timeout.
//!
//! The policy ([`Policy`]) is pure: it takes the time, the scoreboard and a
//! [`ProcSource`], and returns [`Action`]s; the actor carries them out. The
//! tests drive the policy with a mock source and clock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use slog::{Logger, debug};

use crate::daemon::{Babysat, DaemonActor, Roster};
use crate::scoreboard::{Counter, SlotId, SlotSnapshot};
use crate::state::SlotState;

/// The babysitter's limits, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BabysitLimits {
    /// How often the babysitter looks.
    pub interval: Duration,
    /// Total CPU time after which a worker is rogue (the seed: 10 minutes).
    pub cpu_limit: Duration,
    /// Share of one core (percent) over the last three intervals above
    /// which a worker is rogue.
    pub cpu_share: Option<f64>,
    /// Longest time in `r`.
    pub request_timeout: Option<Duration>,
    /// Longest time in `l`.
    pub long_request_timeout: Option<Duration>,
    /// Most resident memory, in bytes.
    pub max_rss: Option<u64>,
}

/// What `/proc` says of one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// User plus system CPU time.
    pub(crate) cpu: Duration,
    /// Resident memory in bytes.
    pub(crate) rss: u64,
    /// Whether it is a zombie.
    pub(crate) zombie: bool,
}

/// Where samples come from: `/proc`, or a mock in tests.
pub(crate) trait ProcSource {
    /// `None` if the process no longer exists.
    fn sample(&self, pid: i32) -> Option<Sample>;
}

/// The real source: `/proc/<pid>/stat` through procfs.
#[derive(Debug, Default)]
pub(crate) struct Procfs;

impl ProcSource for Procfs {
    fn sample(&self, pid: i32) -> Option<Sample> {
        let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
        let ticks = procfs::ticks_per_second().max(1);
        let cpu_ticks = stat.utime + stat.stime;
        Some(Sample {
            cpu: Duration::from_micros(cpu_ticks * 1_000_000 / ticks),
            rss: stat.rss * procfs::page_size(),
            zombie: stat.state == 'Z',
        })
    }
}

/// Why a worker is escalated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Reason {
    CpuTotal { used: Duration, limit: Duration },
    CpuShare { percent: f64, limit: f64 },
    HungRequest { time: Duration, limit: Duration },
    HungLong { time: Duration, limit: Duration },
}

impl Reason {
    pub(crate) fn describe(&self) -> (&'static str, String, String) {
        match *self {
            Reason::CpuTotal { used, limit } => (
                "rogue: total CPU time over the limit",
                format!("{:.1}s", used.as_secs_f64()),
                format!("{:.1}s", limit.as_secs_f64()),
            ),
            Reason::CpuShare { percent, limit } => (
                "rogue: CPU share over the limit",
                format!("{percent:.0}%"),
                format!("{limit:.0}%"),
            ),
            Reason::HungRequest { time, limit } => (
                "hung request",
                format!("{:.1}s in r", time.as_secs_f64()),
                format!("{:.1}s", limit.as_secs_f64()),
            ),
            Reason::HungLong { time, limit } => (
                "hung long request",
                format!("{:.1}s in l", time.as_secs_f64()),
                format!("{:.1}s", limit.as_secs_f64()),
            ),
        }
    }

    pub(crate) fn counter(&self) -> Counter {
        match self {
            Reason::CpuTotal { .. } | Reason::CpuShare { .. } => Counter::Rogue,
            Reason::HungRequest { .. } | Reason::HungLong { .. } => Counter::Hung,
        }
    }
}

/// What the babysitter does about a worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Action {
    /// One escalation step: send `signal` (step 1 INT, 2 TERM, 3 KILL).
    Signal {
        pid: i32,
        slot: SlotId,
        state: SlotState,
        signal: Signal,
        step: u8,
        reason: Reason,
    },
    /// Retire gracefully: over its memory limit.
    Retire {
        pid: i32,
        slot: SlotId,
        state: SlotState,
        rss: u64,
        limit: u64,
    },
    /// Free the slot as if the worker had exited.
    Free {
        pid: i32,
        slot: SlotId,
        state: SlotState,
        why: &'static str,
    },
}

#[derive(Debug, Default)]
struct Watch {
    history: VecDeque<(Instant, Duration)>,
    escalation: Option<(u8, Instant, Reason)>,
    retiring: bool,
    zombie_since: Option<Instant>,
}

/// The babysitting rules, without side effects.
#[derive(Debug)]
pub(crate) struct Policy {
    limits: BabysitLimits,
    watched: HashMap<i32, Watch>,
}

const SHARE_INTERVALS: usize = 3;

impl Policy {
    pub(crate) fn new(limits: BabysitLimits) -> Policy {
        Policy {
            limits,
            watched: HashMap::new(),
        }
    }

    /// One look at every worker.
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        slots: &[SlotSnapshot],
        source: &dyn ProcSource,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        // Two intervals per step, with half an interval of slack so that a
        // look landing a hair early does not push the step a whole interval.
        let step_every = self.limits.interval * 2 - self.limits.interval / 2;
        let live: Vec<&SlotSnapshot> = slots
            .iter()
            .filter(|s| s.pid > 0 && !matches!(s.state, SlotState::Empty | SlotState::Forking))
            .collect();
        self.watched
            .retain(|pid, _| live.iter().any(|s| s.pid == *pid));
        for s in live {
            let (pid, slot, state) = (s.pid, s.slot, s.state);
            let Some(sample) = source.sample(pid) else {
                self.watched.remove(&pid);
                actions.push(Action::Free {
                    pid,
                    slot,
                    state,
                    why: "vanished: no longer in /proc",
                });
                continue;
            };
            let watch = self.watched.entry(pid).or_default();
            if sample.zombie {
                let since = *watch.zombie_since.get_or_insert(now);
                if now.duration_since(since) >= step_every {
                    self.watched.remove(&pid);
                    actions.push(Action::Free {
                        pid,
                        slot,
                        state,
                        why: "unreapable zombie",
                    });
                }
                continue;
            }
            watch.history.push_back((now, sample.cpu));
            while watch.history.len() > SHARE_INTERVALS + 1 {
                watch.history.pop_front();
            }
            if let Some((step, at, reason)) = watch.escalation {
                if now >= at {
                    let next = step + 1;
                    let signal = match next {
                        2 => Some(Signal::SIGTERM),
                        3 => Some(Signal::SIGKILL),
                        _ => None,
                    };
                    match signal {
                        Some(signal) => {
                            watch.escalation = Some((next, now + step_every, reason));
                            actions.push(Action::Signal {
                                pid,
                                slot,
                                state,
                                signal,
                                step: next,
                                reason,
                            });
                        }
                        None => {
                            self.watched.remove(&pid);
                            actions.push(Action::Free {
                                pid,
                                slot,
                                state,
                                why: "survived the escalation",
                            });
                        }
                    }
                }
                continue;
            }
            if let Some(reason) = Policy::verdict(&self.limits, s, &sample, watch) {
                watch.escalation = Some((1, now + step_every, reason));
                actions.push(Action::Signal {
                    pid,
                    slot,
                    state,
                    signal: Signal::SIGINT,
                    step: 1,
                    reason,
                });
                continue;
            }
            if let Some(limit) = self.limits.max_rss
                && sample.rss > limit
                && !watch.retiring
            {
                watch.retiring = true;
                actions.push(Action::Retire {
                    pid,
                    slot,
                    state,
                    rss: sample.rss,
                    limit,
                });
            }
        }
        actions
    }

    fn verdict(
        l: &BabysitLimits,
        s: &SlotSnapshot,
        sample: &Sample,
        watch: &Watch,
    ) -> Option<Reason> {
        if sample.cpu > l.cpu_limit {
            return Some(Reason::CpuTotal {
                used: sample.cpu,
                limit: l.cpu_limit,
            });
        }
        if let Some(limit) = l.cpu_share
            && watch.history.len() > SHARE_INTERVALS
        {
            let (t0, c0) = watch.history[0];
            let (t1, c1) = watch.history[watch.history.len() - 1];
            let wall = t1.duration_since(t0).as_secs_f64();
            if wall > 0.0 {
                let percent = (c1.saturating_sub(c0)).as_secs_f64() / wall * 100.0;
                if percent > limit {
                    return Some(Reason::CpuShare { percent, limit });
                }
            }
        }
        let time = Duration::from_millis(s.in_state_ms);
        match (s.state, l.request_timeout, l.long_request_timeout) {
            (SlotState::Req, Some(limit), _) if time > limit => {
                Some(Reason::HungRequest { time, limit })
            }
            (SlotState::Long, _, Some(limit)) if time > limit => {
                Some(Reason::HungLong { time, limit })
            }
            _ => None,
        }
    }
}

/// The supervisor's babysitter: started by its `DaemonActor` when `babysit`
/// is set, runs the babysitting rules (see the module docs and the book)
/// every interval. It looks at the workers the supervisor's registry holds
/// (their pids from the registry, never from the scoreboard) and sends its
/// decisions back to the `DaemonActor`, which carries them out through each
/// worker's pidfd.
pub struct BabysitterActor {
    policy: Policy,
    log: Logger,
    daemon: Addr<DaemonActor>,
    looking: bool,
}

impl std::fmt::Debug for BabysitterActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BabysitterActor")
            .field("limits", &self.policy.limits)
            .finish()
    }
}

impl BabysitterActor {
    pub(crate) fn new(
        limits: BabysitLimits,
        log: Logger,
        daemon: Addr<DaemonActor>,
    ) -> BabysitterActor {
        BabysitterActor {
            policy: Policy::new(limits),
            log,
            daemon,
            looking: false,
        }
    }

    fn look(&mut self, ctx: &mut Context<Self>) {
        if self.looking {
            return;
        }
        self.looking = true;
        let roster = self.daemon.send(Roster);
        ctx.spawn(
            async move { roster.await.unwrap_or_default() }
                .into_actor(self)
                .map(|slots, act, _ctx| {
                    act.looking = false;
                    let actions = act.policy.tick(Instant::now(), &slots, &Procfs);
                    if !actions.is_empty() {
                        act.daemon.do_send(Babysat(actions));
                    }
                }),
        );
    }
}

impl Action {
    /// The slot and the pid the action is about.
    pub(crate) fn target(&self) -> (SlotId, Pid) {
        let (slot, pid) = match *self {
            Action::Signal { slot, pid, .. }
            | Action::Retire { slot, pid, .. }
            | Action::Free { slot, pid, .. } => (slot, pid),
        };
        (slot, Pid::from_raw(pid))
    }
}

impl Actor for BabysitterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        debug!(self.log, "babysitter started";
            "interval" => format!("{:?}", self.policy.limits.interval));
        ctx.run_interval(self.policy.limits.interval, |act, ctx| act.look(ctx));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Mock(RefCell<HashMap<i32, Sample>>);

    impl ProcSource for Mock {
        fn sample(&self, pid: i32) -> Option<Sample> {
            self.0.borrow().get(&pid).copied()
        }
    }

    fn limits() -> BabysitLimits {
        BabysitLimits {
            interval: Duration::from_secs(1),
            cpu_limit: Duration::from_secs(600),
            cpu_share: Some(50.0),
            request_timeout: Some(Duration::from_secs(5)),
            long_request_timeout: Some(Duration::from_secs(60)),
            max_rss: Some(100 << 20),
        }
    }

    fn slot(pid: i32, state: SlotState, in_state_ms: u64) -> SlotSnapshot {
        SlotSnapshot {
            slot: SlotId(pid as usize % 10),
            state,
            pid,
            requests: 0,
            in_state_ms,
        }
    }

    fn sample(cpu_ms: u64, rss: u64) -> Sample {
        Sample {
            cpu: Duration::from_millis(cpu_ms),
            rss,
            zombie: false,
        }
    }

    fn signals(actions: &[Action]) -> Vec<(i32, Signal)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Signal { pid, signal, .. } => Some((*pid, *signal)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_hung_request_escalates_int_term_kill_then_frees_the_slot() {
        let mut p = Policy::new(limits());
        let source = Mock::default();
        source.0.borrow_mut().insert(1, sample(0, 1 << 20));
        source.0.borrow_mut().insert(2, sample(0, 1 << 20));
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let at = |n: u32| t0 + sec * n;
        // Worker 2 waits forever: never touched by a request timeout.
        let slots = |ms| vec![slot(1, SlotState::Req, ms), slot(2, SlotState::Wait, ms)];
        assert!(p.tick(at(0), &slots(1000), &source).is_empty());
        assert_eq!(
            signals(&p.tick(at(1), &slots(6000), &source)),
            [(1, Signal::SIGINT)]
        );
        assert!(
            p.tick(at(2), &slots(7000), &source).is_empty(),
            "one step per two intervals"
        );
        assert_eq!(
            signals(&p.tick(at(3), &slots(8000), &source)),
            [(1, Signal::SIGTERM)]
        );
        assert!(p.tick(at(4), &slots(9000), &source).is_empty());
        assert_eq!(
            signals(&p.tick(at(5), &slots(10000), &source)),
            [(1, Signal::SIGKILL)]
        );
        assert!(p.tick(at(6), &slots(11000), &source).is_empty());
        let last = p.tick(at(7), &slots(12000), &source);
        assert!(
            matches!(
                last.as_slice(),
                [Action::Free {
                    pid: 1,
                    why: "survived the escalation",
                    ..
                }]
            ),
            "{last:?}"
        );
    }

    #[test]
    fn rogue_cpu_total_and_share() {
        let mut p = Policy::new(BabysitLimits {
            cpu_limit: Duration::from_secs(10),
            ..limits()
        });
        let source = Mock::default();
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        // Worker 3: over the total. Worker 4: 80% of a core, over 50%.
        // Worker 5: 10% of a core.
        for i in 0..5u32 {
            let mut m = source.0.borrow_mut();
            m.insert(3, sample(11_000, 0));
            m.insert(4, sample(800 * u64::from(i), 0));
            m.insert(5, sample(100 * u64::from(i), 0));
            drop(m);
            let slots = [3, 4, 5].map(|pid| slot(pid, SlotState::Wait, 0));
            let got = signals(&p.tick(t0 + sec * i, &slots, &source));
            match i {
                0 => assert_eq!(got, [(3, Signal::SIGINT)]),
                3 => assert_eq!(got, [(4, Signal::SIGINT)], "share needs three intervals"),
                _ => assert!(!got.iter().any(|(pid, _)| *pid == 5), "{got:?}"),
            }
        }
    }

    #[test]
    fn memory_retires_once_and_vanished_or_zombie_workers_are_freed() {
        let mut p = Policy::new(limits());
        let source = Mock::default();
        source.0.borrow_mut().insert(6, sample(0, 200 << 20));
        source.0.borrow_mut().insert(
            7,
            Sample {
                zombie: true,
                ..sample(0, 0)
            },
        );
        let t0 = Instant::now();
        let slots = [
            slot(6, SlotState::Req, 0),
            slot(7, SlotState::Wait, 0),
            slot(8, SlotState::Wait, 0),
        ];
        let first = p.tick(t0, &slots, &source);
        assert!(
            first
                .iter()
                .any(|a| matches!(a, Action::Retire { pid: 6, .. }))
        );
        assert!(
            first
                .iter()
                .any(|a| matches!(a, Action::Free { pid: 8, .. })),
            "pid 8 vanished"
        );
        assert!(
            !first
                .iter()
                .any(|a| matches!(a, Action::Free { pid: 7, .. })),
            "a zombie gets time to be reaped"
        );
        let later = p.tick(t0 + Duration::from_secs(2), &slots[..2], &source);
        assert!(
            !later.iter().any(|a| matches!(a, Action::Retire { .. })),
            "retired once"
        );
        assert!(later.iter().any(|a| matches!(
            a,
            Action::Free {
                pid: 7,
                why: "unreapable zombie",
                ..
            }
        )));
    }
}
