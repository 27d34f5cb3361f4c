//! Spawn pacing for pool refills.

use std::time::{Duration, Instant};

/// Spawn pacing: at most `rate` forks per 100 ms; the rate starts at
/// `PACE_START`, doubles every window in which the pool was still short, up
/// to the configured cap, and halves back in windows that used less than
/// half of it (and in every window without a fork). A steady demand keeps
/// its rate: halving after every window that merely did not run out made
/// a pool recycling 100 workers per 100 ms alternate between 128 and 64,
/// and wait for the next window every other one.
pub(crate) struct Pacer {
    window_start: Instant,
    used: usize,
    rate: usize,
    short: bool,
}

const PACE_WINDOW: Duration = Duration::from_millis(100);
const PACE_START: usize = 8;

impl Pacer {
    pub(crate) fn new() -> Pacer {
        Pacer {
            window_start: Instant::now(),
            used: 0,
            rate: PACE_START,
            short: false,
        }
    }

    /// Whether one more fork may happen now; if not, when to try again.
    pub(crate) fn allow(&mut self, now: Instant, cap: usize) -> Result<(), Instant> {
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= PACE_WINDOW {
            // The window just over: double if a fork had to wait, halve if
            // it used less than half the rate. Then halve once for every
            // later window, in which no fork was asked for.
            let windows = (elapsed.as_nanos() / PACE_WINDOW.as_nanos()).min(16) as u32;
            if self.short {
                self.rate = (self.rate * 2).min(cap);
            } else if self.used * 2 < self.rate {
                self.rate /= 2;
            }
            self.rate = (self.rate >> (windows - 1)).max(PACE_START).min(cap);
            self.window_start = now;
            self.used = 0;
            self.short = false;
        }
        if self.used < self.rate.min(cap) {
            self.used += 1;
            Ok(())
        } else {
            self.short = true;
            Err(self.window_start + PACE_WINDOW)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_are_paced_a_growing_number_per_window_up_to_the_cap() {
        let mut pacer = Pacer::new();
        let start = pacer.window_start;
        let window = |n: u32| start + PACE_WINDOW * n;
        let mut per_window = Vec::new();
        // A thousand missing workers: ask for a fork as often as allowed.
        let mut forked = 0;
        for n in 0..12u32 {
            let mut allowed = 0;
            while forked < 1000 && pacer.allow(window(n), 128).is_ok() {
                allowed += 1;
                forked += 1;
            }
            per_window.push(allowed);
        }
        assert_eq!(
            per_window,
            [8, 16, 32, 64, 128, 128, 128, 128, 128, 128, 112, 0],
            "never a thousand forks in one tick"
        );
        // Once the pool is whole, the rate falls back.
        let mut quiet = Pacer::new();
        let t = quiet.window_start;
        for _ in 0..9 {
            let _ = quiet.allow(t, 128);
        }
        assert!(quiet.allow(t, 128).is_err(), "9th in the first window");
        let next = t + PACE_WINDOW;
        assert!(quiet.allow(next, 128).is_ok());
        assert_eq!(quiet.rate, 16, "doubled after a short window");
        let calm = next + PACE_WINDOW;
        assert!(quiet.allow(calm, 128).is_ok());
        assert_eq!(quiet.rate, 8, "halved after a window that used little");
        // A steady demand near the rate keeps it: 100 forks per window at
        // a rate of 128 never wait, window after window.
        let mut steady = Pacer::new();
        steady.rate = 128;
        let t = steady.window_start;
        for n in 0..10u32 {
            for i in 0..100 {
                assert!(
                    steady.allow(t + PACE_WINDOW * n, 128).is_ok(),
                    "fork {i} of window {n} had to wait at rate {}",
                    steady.rate
                );
            }
        }
        assert_eq!(steady.rate, 128);
        // Idle for half a second: back down, one halving per quiet window.
        assert!(steady.allow(t + PACE_WINDOW * 15, 128).is_ok());
        assert_eq!(steady.rate, 8);
    }
}
