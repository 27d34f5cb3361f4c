//! How a worker's exit is classified, and when spawning backs off.
//!
//! | exit | class | what follows |
//! |---|---|---|
//! | a crash signal or a non-zero exit before the worker was ready | boot failure | spawns back off: 100 ms, doubling per failure in a row, up to `max_backoff` |
//! | SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS or a non-zero exit (a panic's 101 among them) after ready | crash | replaced at once; spawns back off only when `crash_burst` crashes come within its window |
//! | a signal the supervisor did not send (SIGKILL from the OOM killer or an operator) | killed | replaced at once, counted apart |
//! | exit 0 (a worker may end itself: its `requests` served), or the signal the supervisor sent | retired | replaced at once |
//!
//! A worker counts as ready once the supervisor saw it waiting or busy in
//! the scoreboard, or once it counted a request (a worker that serves one
//! request and exits between two looks was ready all the same).
//!
//! The give-up (`max_restarts`) counts boot failures and crashes within its
//! window; its memory, like the burst's, holds at most as many instants as
//! the limit, so it stays bounded whatever the workers do.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

use super::registry::Ask;
use crate::config::CrashPolicy;

/// What kind of end a worker came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitClass {
    /// It ended before it was ready.
    BootFailure,
    /// It crashed after it was ready.
    Crash,
    /// A signal the supervisor did not send ended it.
    Killed,
    /// It finished (its requests, or what the supervisor asked).
    Retired,
}

const CRASH_SIGNALS: [Signal; 6] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGILL,
    Signal::SIGFPE,
    Signal::SIGABRT,
    Signal::SIGSYS,
];

/// Classifies an exit from its wait status, whether the worker had been
/// ready, and what the supervisor had asked of it.
pub(crate) fn classify(status: &WaitStatus, ready: bool, ask: Ask) -> ExitClass {
    let broke = match status {
        WaitStatus::Signaled(_, sig, _) => CRASH_SIGNALS.contains(sig),
        WaitStatus::Exited(_, code) => *code != 0,
        _ => false,
    };
    let failed = if ready {
        ExitClass::Crash
    } else {
        ExitClass::BootFailure
    };
    match (status, ask) {
        _ if broke => failed,
        (WaitStatus::Signaled(..), Ask::Nothing) => ExitClass::Killed,
        _ => ExitClass::Retired,
    }
}

/// What the pool does after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Replace it, within the normal pacing.
    Replace,
    /// Hold spawns until then (the pool is degraded).
    HoldUntil(Instant),
    /// Too many failures within the window: give up.
    GiveUp { failures: usize },
}

/// Backoff and give-up state, bounded.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    streak: u32,
    last_failure: Option<Instant>,
    hold_until: Option<Instant>,
    crashes: VecDeque<Instant>,
    failures: VecDeque<Instant>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);

impl Backoff {
    /// Failures in a row that backed off; above 0 the pool is degraded.
    pub(crate) fn streak(&self) -> u32 {
        self.streak
    }

    /// Until when spawns wait, if they do.
    pub(crate) fn hold(&self, now: Instant) -> Option<Instant> {
        self.hold_until.filter(|&until| until > now)
    }

    /// Takes one exit into account.
    pub(crate) fn on_exit(
        &mut self,
        class: ExitClass,
        now: Instant,
        policy: &CrashPolicy,
    ) -> Verdict {
        let back_off = match class {
            ExitClass::Killed | ExitClass::Retired => return Verdict::Replace,
            ExitClass::BootFailure => true,
            ExitClass::Crash => {
                let (count, window) = policy.crash_burst;
                push_bounded(&mut self.crashes, now, window, count as usize);
                self.crashes.len() >= count as usize
            }
        };
        if let Some((max, window)) = policy.max_restarts {
            push_bounded(&mut self.failures, now, window, max as usize + 1);
            if self.failures.len() > max as usize {
                return Verdict::GiveUp {
                    failures: self.failures.len(),
                };
            }
        }
        if !back_off {
            return Verdict::Replace;
        }
        self.streak = self.streak.saturating_add(1);
        self.last_failure = Some(now);
        let backoff = BACKOFF_MIN
            .saturating_mul(1u32 << (self.streak - 1).min(16))
            .min(policy.max_backoff);
        let until = now.checked_add(backoff).unwrap_or(now);
        self.hold_until = Some(until);
        Verdict::HoldUntil(until)
    }

    /// A worker spawned at `spawned` became ready: if it was spawned after
    /// the last failure, the pool has recovered. Returns whether it just did.
    pub(crate) fn on_ready(&mut self, spawned: Instant) -> bool {
        if self.streak == 0 || self.last_failure.is_some_and(|at| spawned < at) {
            return false;
        }
        self.streak = 0;
        self.hold_until = None;
        self.crashes.clear();
        true
    }
}

/// Keeps the instants within `window` of `now`, at most `cap` of them.
fn push_bounded(q: &mut VecDeque<Instant>, now: Instant, window: Duration, cap: usize) {
    while q
        .front()
        .is_some_and(|&t| now.saturating_duration_since(t) > window)
    {
        q.pop_front();
    }
    q.push_back(now);
    while q.len() > cap.max(1) {
        q.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::registry::Retire;
    use nix::unistd::Pid;

    fn exited(code: i32) -> WaitStatus {
        WaitStatus::Exited(Pid::from_raw(9), code)
    }
    fn signaled(sig: Signal) -> WaitStatus {
        WaitStatus::Signaled(Pid::from_raw(9), sig, false)
    }

    #[test]
    fn exits_are_classified_by_status_readiness_and_ask() {
        use ExitClass::*;
        let retire = Ask::Retire(Retire::Surplus);
        let table = [
            // (status, ready, ask, class)
            (signaled(Signal::SIGKILL), true, Ask::Nothing, Killed),
            (signaled(Signal::SIGKILL), false, Ask::Nothing, Killed),
            (signaled(Signal::SIGTERM), true, Ask::Nothing, Killed),
            (signaled(Signal::SIGKILL), true, Ask::Kill, Retired),
            (signaled(Signal::SIGTERM), false, retire, Retired),
            (
                signaled(Signal::SIGINT),
                true,
                Ask::Escalated(Signal::SIGINT),
                Retired,
            ),
            (signaled(Signal::SIGSEGV), true, Ask::Nothing, Crash),
            (signaled(Signal::SIGABRT), true, retire, Crash),
            (signaled(Signal::SIGBUS), false, Ask::Nothing, BootFailure),
            (exited(101), true, Ask::Nothing, Crash),
            (exited(101), false, Ask::Nothing, BootFailure),
            (exited(1), false, retire, BootFailure),
            (exited(0), true, Ask::Nothing, Retired),
            (exited(0), false, retire, Retired),
            (exited(0), false, Ask::Nothing, Retired),
        ];
        for (status, ready, ask, class) in table {
            assert_eq!(
                classify(&status, ready, ask),
                class,
                "{status:?} ready={ready} {ask:?}"
            );
        }
    }

    fn policy(burst: u32, restarts: Option<(u32, Duration)>) -> CrashPolicy {
        CrashPolicy {
            max_backoff: Duration::from_secs(3),
            max_restarts: restarts,
            max_spawn_rate: 128,
            crash_burst: (burst, Duration::from_secs(10)),
        }
    }

    #[test]
    fn kills_and_retirements_never_back_off() {
        let mut b = Backoff::default();
        let t = Instant::now();
        let p = policy(3, Some((2, Duration::from_secs(60))));
        // A kill storm: 300 SIGKILLs, one every 50 ms.
        for i in 0..300u32 {
            let now = t + Duration::from_millis(50) * i;
            assert_eq!(b.on_exit(ExitClass::Killed, now, &p), Verdict::Replace);
            assert_eq!(b.on_exit(ExitClass::Retired, now, &p), Verdict::Replace);
            assert_eq!(b.hold(now), None);
        }
        assert_eq!(b.streak(), 0);
    }

    #[test]
    fn boot_failures_back_off_doubling_to_the_cap_and_recover_on_a_new_ready_worker() {
        let mut b = Backoff::default();
        let t = Instant::now();
        let p = policy(3, None);
        let mut holds = Vec::new();
        for i in 0..8u32 {
            let now = t + Duration::from_secs(i.into());
            match b.on_exit(ExitClass::BootFailure, now, &p) {
                Verdict::HoldUntil(until) => holds.push(until - now),
                other => panic!("{other:?}"),
            }
        }
        let ms: Vec<u128> = holds.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3000, 3000, 3000]);
        assert_eq!(b.streak(), 8);
        let last = t + Duration::from_secs(7);
        assert!(
            !b.on_ready(last - Duration::from_millis(1)),
            "spawned before the last failure"
        );
        assert!(b.on_ready(last + Duration::from_millis(1)));
        assert_eq!((b.streak(), b.hold(last)), (0, None));
    }

    #[test]
    fn crashes_back_off_only_in_a_burst() {
        let mut b = Backoff::default();
        let t = Instant::now();
        let p = policy(3, None);
        // Two crashes 6 s apart, then a third 11 s after the first: the
        // window of 10 s never holds three.
        for s in [0u64, 6, 11, 17, 22] {
            let now = t + Duration::from_secs(s);
            assert_eq!(
                b.on_exit(ExitClass::Crash, now, &p),
                Verdict::Replace,
                "at {s} s"
            );
        }
        // Three within a second: back off.
        let now = t + Duration::from_secs(40);
        assert_eq!(b.on_exit(ExitClass::Crash, now, &p), Verdict::Replace);
        assert_eq!(b.on_exit(ExitClass::Crash, now, &p), Verdict::Replace);
        assert!(matches!(
            b.on_exit(ExitClass::Crash, now, &p),
            Verdict::HoldUntil(_)
        ));
        assert!(b.crashes.len() <= 3, "bounded memory");
    }

    #[test]
    fn max_restarts_gives_up_past_the_limit_within_the_window_with_bounded_memory() {
        let mut b = Backoff::default();
        let t = Instant::now();
        let p = policy(1000, Some((3, Duration::from_secs(10))));
        // Failures 4 s apart never exceed 3 in 10 s.
        for i in 0..50u32 {
            let now = t + Duration::from_secs(4) * i;
            assert!(!matches!(
                b.on_exit(ExitClass::Crash, now, &p),
                Verdict::GiveUp { .. }
            ));
            assert!(b.failures.len() <= 4);
        }
        let now = t + Duration::from_secs(1000);
        for _ in 0..3 {
            assert!(!matches!(
                b.on_exit(ExitClass::BootFailure, now, &p),
                Verdict::GiveUp { .. }
            ));
        }
        assert_eq!(
            b.on_exit(ExitClass::BootFailure, now, &p),
            Verdict::GiveUp { failures: 4 }
        );
    }
}
