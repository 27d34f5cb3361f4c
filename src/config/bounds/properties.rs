//! Random builder inputs, huge values included: `build` never panics,
//! and what it accepts is consistent and cannot overflow later.

use std::time::Instant;

use super::*;
use crate::Daemon;
use proptest::prelude::*;

/// Mostly `fine` values (most of which build), sometimes one at or next
/// to its bound, sometimes anything at all; unset a fifth of the time.
fn pick<T: std::fmt::Debug + Clone + 'static>(
    fine: impl Strategy<Value = T> + 'static,
    edge: impl Strategy<Value = T> + 'static,
    wild: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![
        4 => Just(None),
        12 => fine.prop_map(Some),
        1 => edge.prop_map(Some),
        1 => wild.prop_map(Some),
    ]
    .boxed()
}

/// `bound` and the values next to it, on both sides.
fn around(bound: u64) -> impl Strategy<Value = u64> {
    (bound - 2)..=(bound + 2)
}

fn count(fine: std::ops::RangeInclusive<usize>) -> BoxedStrategy<Option<usize>> {
    pick(
        fine,
        prop_oneof![
            (MAX_CHILDREN - 2)..=(MAX_CHILDREN + 2),
            (MAX_CHILDREN / 3 - 2)..=(MAX_CHILDREN / 3 + 2),
        ],
        prop_oneof![any::<usize>(), Just(usize::MAX), Just(1usize << 58)],
    )
}

fn big(bound: u64) -> BoxedStrategy<Option<u64>> {
    pick(
        1..=1000u64,
        around(bound),
        prop_oneof![any::<u64>(), Just(u64::MAX), Just(0)],
    )
}

fn duration(bound: Duration) -> BoxedStrategy<Option<Duration>> {
    let ns = Duration::from_nanos;
    pick(
        (1..bound.as_millis().min(120_000) as u64).prop_map(Duration::from_millis),
        (0..5u64).prop_map(move |n| bound + ns(n) - ns(2)),
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
        ],
    )
}

fn crashes(bound: u32, window: Duration) -> BoxedStrategy<Option<(u32, Duration)>> {
    let count = pick(
        1..=5u32,
        around(u64::from(bound)).prop_map(|n| n as u32),
        prop_oneof![any::<u32>(), Just(u32::MAX), Just(0)],
    );
    (count, duration(window))
        .prop_map(|(n, w)| Some((n?, w?)))
        .boxed()
}

/// Every numeric setting of the builder, each possibly unset.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    start_children: Option<usize>,
    min_spare: Option<usize>,
    max_spare: Option<usize>,
    max_children: Option<usize>,
    warm_workers: Option<usize>,
    max_spawn_rate: Option<usize>,
    requests: Option<u64>,
    requests_jitter: Option<u64>,
    max_rss: Option<u64>,
    cpu_share: Option<f64>,
    babysit: Option<Duration>,
    cpu_limit: Option<Duration>,
    request_timeout: Option<Duration>,
    long_request_timeout: Option<Duration>,
    shutdown_timeout: Option<Duration>,
    spawn_timeout: Option<Duration>,
    max_backoff: Option<Duration>,
    max_restarts: Option<(u32, Duration)>,
    crash_burst: Option<(u32, Duration)>,
    umask: Option<u32>,
}

impl Input {
    /// Unsets what does not apply to the mode of `mode` (0: a plain
    /// daemon, 1: fork per request, 2: a pool), so that many inputs
    /// build; without it nearly every input is a `WrongMode`.
    fn fit(mut self, mode: u8) -> Input {
        if mode == 0 {
            self.max_children = None;
        }
        if mode < 2 {
            self.start_children = None;
            self.min_spare = None;
            self.max_spare = None;
            self.requests = None;
            self.requests_jitter = None;
        }
        if mode != 1 {
            self.warm_workers = None;
        }
        if mode == 2 && self.requests.is_none() {
            self.requests_jitter = None;
        }
        if mode == 0 || self.babysit.is_none() {
            self.babysit = None;
            self.cpu_limit = None;
            self.cpu_share = None;
            self.request_timeout = None;
            self.long_request_timeout = None;
            self.max_rss = None;
        }
        self
    }
}

pub(crate) fn input() -> impl Strategy<Value = Input> {
    let pool = (
        count(1..=64),
        count(1..=64),
        count(1..=128),
        count(1..=256),
        count(0..=8),
        count(1..=1024),
    );
    let share = pick(
        0.1..400.0f64,
        prop_oneof![Just(MAX_CPU_SHARE), Just(409_600.001), Just(0.0)],
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-1.0)
        ],
    );
    let requests = (big(MAX_REQUESTS), big(MAX_REQUESTS), big(MAX_RSS), share);
    let babysit = (duration(DAY), duration(YEAR), duration(DAY), duration(DAY));
    let rest = (
        duration(DAY),
        duration(MAX_SPAWN_TIMEOUT),
        duration(DAY),
        crashes(MAX_RESTARTS, YEAR),
        crashes(MAX_CRASH_BURST, MAX_CRASH_BURST_WINDOW),
        pick(0..=0o777u32, 0o776..=0o1001u32, any::<u32>()),
    );
    // Most inputs are fitted to their mode; the others keep everything.
    let fit = (0..3u8, proptest::bool::weighted(0.85));
    (pool, requests, babysit, rest, fit).prop_map(
        |(
            (start_children, min_spare, max_spare, max_children, warm_workers, max_spawn_rate),
            (requests, requests_jitter, max_rss, cpu_share),
            (babysit, cpu_limit, request_timeout, long_request_timeout),
            (shutdown_timeout, spawn_timeout, max_backoff, max_restarts, crash_burst, umask),
            (mode, fitted),
        )| {
            let input = Input {
                start_children,
                min_spare,
                max_spare,
                max_children,
                warm_workers,
                max_spawn_rate,
                requests,
                requests_jitter,
                max_rss,
                cpu_share,
                babysit,
                cpu_limit,
                request_timeout,
                long_request_timeout,
                shutdown_timeout,
                spawn_timeout,
                max_backoff,
                max_restarts,
                crash_burst,
                umask,
            };
            if fitted { input.fit(mode) } else { input }
        },
    )
}

pub(crate) fn builder(i: &Input) -> DaemonBuilder {
    let mut b = Daemon::builder();
    macro_rules! set {
        ($($name:ident),*) => {$(
            if let Some(v) = i.$name {
                b = b.$name(v);
            }
        )*};
    }
    set!(
        start_children,
        min_spare,
        max_spare,
        max_children,
        warm_workers,
        max_spawn_rate,
        requests,
        requests_jitter,
        max_rss,
        cpu_share,
        babysit,
        cpu_limit,
        request_timeout,
        long_request_timeout,
        shutdown_timeout,
        spawn_timeout,
        max_backoff,
        umask
    );
    if let Some((n, window)) = i.max_restarts {
        b = b.max_restarts(n, window);
    }
    if let Some((n, window)) = i.crash_burst {
        b = b.crash_burst(n, window);
    }
    b
}

/// Whether `Instant::now() + d` (and twice `d`, as the babysitter's
/// steps take it) cannot overflow.
fn addable(d: Duration) -> bool {
    let now = Instant::now();
    now.checked_add(d).is_some()
        && d.checked_mul(2)
            .and_then(|d2| now.checked_add(d2))
            .is_some()
}

fn check(config: &Config) -> Result<(), TestCaseError> {
    match config.mode() {
        Mode::Daemon => prop_assert_eq!(config.warm_workers(), 0),
        Mode::ForkPerRequest { max_children } => {
            prop_assert!((1..=MAX_CHILDREN).contains(max_children));
            prop_assert!(config.warm_workers() <= *max_children);
        }
        Mode::PreFork(p) => {
            prop_assert!(1 <= p.min_spare && p.min_spare <= p.max_spare, "{p:?}");
            prop_assert!(p.max_spare <= MAX_CHILDREN, "{p:?}");
            prop_assert!(
                1 <= p.start_children && p.start_children <= p.max_children,
                "{p:?}"
            );
            prop_assert!(p.min_spare <= p.max_children, "{p:?}");
            prop_assert!(p.max_children <= MAX_CHILDREN, "{p:?}");
            let requests = p.requests.map_or(0, NonZeroU64::get);
            prop_assert!(requests.checked_add(p.requests_jitter).is_some(), "{p:?}");
            prop_assert!(p.requests_jitter.checked_add(1).is_some(), "{p:?}");
            prop_assert_eq!(config.warm_workers(), 0);
        }
    }
    let crash = config.crash_policy();
    prop_assert!((1..=MAX_CHILDREN).contains(&crash.max_spawn_rate));
    let mut durations = vec![
        config.shutdown_timeout(),
        config.spawn_timeout(),
        crash.max_backoff,
        crash.crash_burst.1,
    ];
    prop_assert!((1..=MAX_CRASH_BURST).contains(&crash.crash_burst.0));
    if let Some((n, window)) = crash.max_restarts {
        prop_assert!((1..=MAX_RESTARTS).contains(&n));
        durations.push(window);
    }
    if let Some(limits) = config.babysit_limits() {
        durations.extend([limits.interval, limits.cpu_limit]);
        durations.extend(limits.request_timeout);
        durations.extend(limits.long_request_timeout);
        if let Some(rss) = limits.max_rss {
            prop_assert!((1..=MAX_RSS).contains(&rss));
        }
        if let Some(share) = limits.cpu_share {
            prop_assert!(share.is_finite() && share > 0.0 && share <= MAX_CPU_SHARE);
        }
    }
    for d in durations {
        prop_assert!(!d.is_zero(), "zero duration in {config:?}");
        prop_assert!(addable(d), "{d:?} in {config:?}");
    }
    prop_assert!(config.umask() <= 0o777);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn build_never_panics_and_what_it_accepts_is_consistent(i in input()) {
        match builder(&i).build() {
            Ok(daemon) => check(daemon.config())?,
            Err(err) => {
                // A typed configuration error, with a message.
                prop_assert!(!err.to_string().is_empty());
                prop_assert!(
                    matches!(
                        err,
                        Error::Zero(_)
                            | Error::OutOfRange { .. }
                            | Error::SpareRange { .. }
                            | Error::AboveMaxChildren { .. }
                            | Error::WrongMode { .. }
                            | Error::Needs { .. }
                    ),
                    "{err:?}"
                );
            }
        }
    }

    /// Small pools are never refused for a bound: only for a conflict
    /// between their counts, and what builds holds the invariants.
    #[test]
    fn small_pools_build(
        start in 1..=64usize,
        min in proptest::option::of(1..=64usize),
        max_spare in proptest::option::of(1..=128usize),
        max in proptest::option::of(1..=256usize),
    ) {
        let mut b = Daemon::builder().start_children(start);
        if let Some(n) = min { b = b.min_spare(n); }
        if let Some(n) = max_spare { b = b.max_spare(n); }
        if let Some(n) = max { b = b.max_children(n); }
        match b.build() {
            Ok(daemon) => check(daemon.config())?,
            Err(err) => prop_assert!(
                matches!(err, Error::SpareRange { .. } | Error::AboveMaxChildren { .. }),
                "{err:?}"
            ),
        }
    }
}
