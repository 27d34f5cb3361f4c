//! The pre-fork plan: how many workers to fork, how many spares to retire.
//!
//! Pure: it takes a count of the pool (from the registry, with states read
//! from the scoreboard) and the time, and says what to do. The rules:
//!
//! - Until the initial workers are ready, the target is `start_children`;
//!   once `start_children` workers wait or work, the daemon is ready.
//! - Then at least `min_spare` workers wait (starting ones count, since
//!   they will), never more than `max_children` in all.
//! - Above `max_spare` waiting workers, one spare is retired, and at most
//!   one per [`RETIRE_EVERY`] (Apache's idle maintenance): a pool at its
//!   limits does not churn, and a burst of traffic that just ended does not
//!   empty the pool at once.

use std::time::{Duration, Instant};

/// At most one surplus spare is retired per this interval.
pub(crate) const RETIRE_EVERY: Duration = Duration::from_secs(1);

/// The pool's limits now (TTIN and TTOU move the spares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) start_children: usize,
    pub(crate) min_spare: usize,
    pub(crate) max_spare: usize,
    pub(crate) max_children: usize,
}

/// The pool as counted now. Workers asked to go are in none of the first
/// three counts, but in `used`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Count {
    /// Waiting for a request (`.`, `w`).
    pub(crate) idle: usize,
    /// Asked of the spawner, or setting up (`F`, `f`).
    pub(crate) starting: usize,
    /// Serving (`r`, `l`).
    pub(crate) busy: usize,
    /// Slots in use, whatever their state (leaving workers included).
    pub(crate) used: usize,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Plan {
    /// Fork this many workers.
    pub(crate) spawn: usize,
    /// Retire this many surplus spares.
    pub(crate) retire: usize,
    /// The initial pool just became ready.
    pub(crate) ready: bool,
    /// Look again then (a retirement held back by the interval).
    pub(crate) wake_at: Option<Instant>,
}

/// The plan's memory between looks.
#[derive(Debug, Default)]
pub(crate) struct Prefork {
    ready: bool,
    last_retire: Option<Instant>,
}

impl Prefork {
    /// One look at the pool.
    pub(crate) fn plan(&mut self, count: Count, limits: Limits, now: Instant) -> Plan {
        let mut plan = Plan::default();
        let up = count.idle + count.busy;
        if !self.ready && up >= limits.start_children {
            self.ready = true;
            plan.ready = true;
        }
        let room = limits.max_children.saturating_sub(count.used);
        let initial = if self.ready {
            0
        } else {
            limits.start_children.saturating_sub(up + count.starting)
        };
        let short = limits.min_spare.saturating_sub(count.idle + count.starting);
        let want = initial.max(short);
        if want > 0 {
            plan.spawn = want.min(room);
            return plan;
        }
        if self.ready && count.idle > limits.max_spare {
            match self.last_retire {
                Some(at) if now.saturating_duration_since(at) < RETIRE_EVERY => {
                    plan.wake_at = Some(at + RETIRE_EVERY);
                }
                _ => {
                    self.last_retire = Some(now);
                    plan.retire = 1;
                }
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        start_children: 3,
        min_spare: 2,
        max_spare: 4,
        max_children: 6,
    };

    fn count(idle: usize, starting: usize, busy: usize, leaving: usize) -> Count {
        Count {
            idle,
            starting,
            busy,
            used: idle + starting + busy + leaving,
        }
    }

    #[test]
    fn the_plan_follows_the_table() {
        let t = Instant::now();
        // (count, spawn, retire, ready), looked at in this order, 10 ms apart.
        let table = [
            (count(0, 0, 0, 0), 3, 0, false), // start: start_children
            (count(0, 3, 0, 0), 0, 0, false), // all on their way
            (count(2, 1, 0, 0), 0, 0, false), // not yet start_children up
            (count(3, 0, 0, 0), 0, 0, true),  // ready
            (count(1, 0, 2, 0), 1, 0, false), // below min_spare: refill
            (count(0, 0, 6, 0), 0, 0, false), // at max_children: no room
            (count(0, 0, 5, 1), 0, 0, false), // a leaving worker holds its slot
            (count(0, 0, 4, 0), 2, 0, false), // room for two
            (count(5, 0, 1, 0), 0, 1, false), // surplus: one retired
            (count(5, 0, 1, 0), 0, 0, false), // not again within the second
        ];
        let mut p = Prefork::default();
        for (i, (c, spawn, retire, ready)) in table.into_iter().enumerate() {
            let plan = p.plan(c, LIMITS, t + Duration::from_millis(10) * i as u32);
            assert_eq!(
                (plan.spawn, plan.retire, plan.ready),
                (spawn, retire, ready),
                "row {i}: {c:?}"
            );
        }
    }

    #[test]
    fn surplus_spares_go_one_per_second() {
        let t = Instant::now();
        let mut p = Prefork::default();
        assert!(p.plan(count(3, 0, 0, 0), LIMITS, t).ready);
        // Ten surplus spares, looked at every 100 ms for 3 s: three retired.
        let mut retired = 0;
        let mut idle = 14;
        for i in 0..30u32 {
            let plan = p.plan(
                count(idle, 0, 0, retired),
                LIMITS,
                t + Duration::from_millis(100) * i,
            );
            if plan.retire == 0 {
                assert!(plan.wake_at.is_some(), "look {i}: a wake-up is set");
            }
            retired += plan.retire;
            idle -= plan.retire;
        }
        assert_eq!(retired, 3);
    }

    #[test]
    fn start_children_above_max_spare_gets_ready_before_any_retirement() {
        let limits = Limits {
            start_children: 8,
            min_spare: 1,
            max_spare: 2,
            max_children: 10,
        };
        let t = Instant::now();
        let mut p = Prefork::default();
        assert_eq!(p.plan(count(0, 0, 0, 0), limits, t).spawn, 8);
        assert_eq!(p.plan(count(7, 1, 0, 0), limits, t).retire, 0);
        let plan = p.plan(count(8, 0, 0, 0), limits, t);
        assert!(plan.ready);
        assert_eq!(plan.retire, 1);
    }

    #[test]
    fn the_churn_configuration_does_not_churn() {
        // min_spare 1, max_spare 2, max_children 4, traffic that swings
        // between 0 and 3 busy workers every 10 ms for 10 s.
        let limits = Limits {
            start_children: 1,
            min_spare: 1,
            max_spare: 2,
            max_children: 4,
        };
        let t = Instant::now();
        let mut p = Prefork::default();
        let mut workers = 1usize;
        let mut retired = 0;
        for i in 0..1000u32 {
            let busy = (i as usize % 4).min(workers);
            let c = count(workers - busy, 0, busy, 0);
            let plan = p.plan(c, limits, t + Duration::from_millis(10) * i);
            workers += plan.spawn;
            workers -= plan.retire;
            retired += plan.retire;
        }
        assert!(retired <= 10, "{retired} retirements in 10 s");
    }
}
