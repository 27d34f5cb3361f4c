use super::*;
use crate::Daemon;

fn pool(builder: DaemonBuilder) -> PreFork {
    match builder.build().expect("valid").config().mode() {
        Mode::PreFork(pool) => *pool,
        other => panic!("not a pool: {other:?}"),
    }
}

#[test]
fn start_children_alone_derives_the_seeds_defaults() {
    let p = pool(Daemon::builder().start_children(10));
    assert_eq!((p.min_spare, p.max_spare, p.max_children), (10, 20, 30));
    assert_eq!(
        p.requests, None,
        "unlike the seed, requests unset is unlimited"
    );
}

#[test]
fn max_children_with_start_derives_percentages() {
    let p = pool(Daemon::builder().start_children(1).max_children(10));
    assert_eq!((p.min_spare, p.max_spare), (2, 8));
    let p = pool(Daemon::builder().start_children(2).max_children(100));
    assert_eq!((p.min_spare, p.max_spare), (20, 80));
    let p = pool(Daemon::builder().start_children(1).max_children(2));
    assert_eq!((p.min_spare, p.max_spare), (1, 1));
}

#[test]
fn the_preforking_examples_pool() {
    let p = pool(
        Daemon::builder()
            .start_children(1)
            .min_spare(2)
            .max_children(10)
            .requests(1),
    );
    assert_eq!(
        (p.start_children, p.min_spare, p.max_spare, p.max_children),
        (1, 2, 8, 10)
    );
    assert_eq!(p.requests.map(NonZeroU64::get), Some(1));
}

#[test]
fn modes() {
    let d = Daemon::builder().max_children(3).build().unwrap();
    assert_eq!(d.config().mode(), &Mode::ForkPerRequest { max_children: 3 });
    let d = Daemon::builder().build().unwrap();
    assert_eq!(d.config().mode(), &Mode::Daemon);
    assert_eq!(d.config().mode().describe(), "Daemon server");
}

#[test]
fn errors() {
    let err = |b: DaemonBuilder| b.build().unwrap_err().to_string();
    assert_eq!(
        err(Daemon::builder()
            .start_children(2)
            .min_spare(5)
            .max_spare(3)),
        "max_spare (3) is below min_spare (5)"
    );
    assert_eq!(
        err(Daemon::builder().start_children(20).max_children(10)),
        "start_children (20) is above max_children (10)"
    );
    assert_eq!(
        err(Daemon::builder()
            .start_children(1)
            .min_spare(11)
            .max_spare(12)
            .max_children(10)),
        "min_spare (11) is above max_children (10)"
    );
    assert_eq!(
        err(Daemon::builder().start_children(2).requests_jitter(5)),
        "requests_jitter needs requests (without a requests limit there is nothing to jitter)"
    );
    assert_eq!(
        err(Daemon::builder().max_children(2).requests_jitter(5)),
        "requests_jitter only applies to a pre-forked pool (set start_children)"
    );
    assert_eq!(
        err(Daemon::builder().max_children(2).warm_workers(3)),
        "warm_workers (3) is above max_children (2)"
    );
    assert_eq!(
        err(Daemon::builder().start_children(2).warm_workers(1)),
        "warm_workers only applies to fork per request (max_children without start_children)"
    );
    let warm = |b: DaemonBuilder| b.build().unwrap().config().warm_workers();
    assert_eq!(warm(Daemon::builder().max_children(3)), 1);
    assert_eq!(warm(Daemon::builder().max_children(3).warm_workers(0)), 0);
    assert_eq!(warm(Daemon::builder().start_children(3)), 0);
    let p = pool(
        Daemon::builder()
            .start_children(2)
            .requests(100)
            .requests_jitter(10),
    );
    assert_eq!(
        (p.requests.map(NonZeroU64::get), p.requests_jitter),
        (Some(100), 10)
    );
    for (b, name) in [
        (Daemon::builder().start_children(0), "start_children"),
        (Daemon::builder().max_children(0), "max_children"),
        (
            Daemon::builder().start_children(1).min_spare(0),
            "min_spare",
        ),
        (
            Daemon::builder().start_children(1).max_spare(0),
            "max_spare",
        ),
        (Daemon::builder().start_children(1).requests(0), "requests"),
        (
            Daemon::builder().max_children(1).babysit(Duration::ZERO),
            "babysit",
        ),
        (
            Daemon::builder()
                .max_children(1)
                .babysit(Duration::from_secs(1))
                .max_rss(0),
            "max_rss",
        ),
        (
            Daemon::builder().shutdown_timeout(Duration::ZERO),
            "shutdown_timeout",
        ),
        (
            Daemon::builder().spawn_timeout(Duration::ZERO),
            "spawn_timeout",
        ),
        (
            Daemon::builder().crash_burst(0, Duration::from_secs(1)),
            "crash_burst",
        ),
        (
            Daemon::builder().crash_burst(1, Duration::ZERO),
            "crash_burst window",
        ),
        (
            Daemon::builder().max_restarts(0, Duration::from_secs(1)),
            "max_restarts",
        ),
        (
            Daemon::builder().max_restarts(1, Duration::ZERO),
            "max_restarts window",
        ),
    ] {
        assert_eq!(err(b), format!("{name} must be greater than zero"));
    }
    assert!(matches!(
        Daemon::builder().detach(true).build(),
        Err(Error::DetachWithoutLogfile)
    ));
    assert!(matches!(
        Daemon::builder().max_children(3).requests(1).build(),
        Err(Error::WrongMode {
            param: "requests",
            ..
        })
    ));
    assert!(matches!(
        Daemon::builder()
            .max_children(2)
            .request_timeout(Duration::from_secs(1))
            .build(),
        Err(Error::WrongMode {
            param: "request_timeout",
            ..
        })
    ));
    assert!(matches!(
        Daemon::builder().babysit(Duration::from_secs(1)).build(),
        Err(Error::WrongMode {
            param: "babysit",
            ..
        })
    ));
    assert!(matches!(
        Daemon::builder()
            .max_children(2)
            .babysit(Duration::from_secs(1))
            .cpu_share(-3.0)
            .build(),
        Err(Error::OutOfRange {
            param: "cpu_share",
            ..
        })
    ));
    assert!(matches!(
        Daemon::builder().min_spare(3).build(),
        Err(Error::WrongMode {
            param: "min_spare",
            ..
        })
    ));
}

const NS: Duration = Duration::from_nanos(1);
const SEC: Duration = Duration::from_secs(1);

/// The `param` of an `OutOfRange`, or a panic naming what came instead.
fn out_of_range(builder: DaemonBuilder) -> &'static str {
    match builder.build() {
        Err(Error::OutOfRange { param, .. }) => param,
        Err(other) => panic!("expected OutOfRange, got {other:?}"),
        Ok(_) => panic!("expected OutOfRange, got Ok"),
    }
}

#[test]
fn new_settings_have_their_defaults() {
    let d = Daemon::builder().build().unwrap();
    assert_eq!(d.config().spawn_timeout(), Duration::from_secs(5));
    assert_eq!(
        d.config().crash_policy().crash_burst,
        (5, Duration::from_secs(10))
    );
    let d = Daemon::builder()
        .spawn_timeout(Duration::from_millis(1500))
        .crash_burst(3, Duration::from_secs(60))
        .build()
        .unwrap();
    assert_eq!(d.config().spawn_timeout(), Duration::from_millis(1500));
    assert_eq!(
        d.config().crash_policy().crash_burst,
        (3, Duration::from_secs(60))
    );
}

/// Each bound: the largest value allowed builds, one more is refused
/// with `OutOfRange` naming the parameter.
#[test]
fn every_bound_is_inclusive_and_named() {
    const M: usize = MAX_CHILDREN;
    let pool = || Daemon::builder().start_children(1);
    let sit = || Daemon::builder().max_children(2).babysit(SEC);
    let cases: Vec<(&str, DaemonBuilder, DaemonBuilder)> = vec![
        (
            "max_children",
            Daemon::builder().max_children(M),
            Daemon::builder().max_children(M + 1),
        ),
        (
            "max_children",
            pool().max_children(M),
            pool().max_children(M + 1),
        ),
        (
            "start_children",
            Daemon::builder().start_children(M).max_children(M),
            Daemon::builder().start_children(M + 1).max_children(M),
        ),
        (
            "min_spare",
            pool().min_spare(M).max_spare(M).max_children(M),
            pool().min_spare(M + 1).max_spare(M).max_children(M),
        ),
        (
            "max_spare",
            pool().max_spare(M).max_children(M),
            pool().max_spare(M + 1).max_children(M),
        ),
        (
            "warm_workers",
            Daemon::builder().max_children(M).warm_workers(M),
            Daemon::builder().max_children(M).warm_workers(M + 1),
        ),
        // Derived max_children: start_children + max_spare.
        ("max_children", pool().max_spare(M - 1), pool().max_spare(M)),
        (
            "max_children",
            Daemon::builder().start_children(M / 3),
            Daemon::builder().start_children(M / 3 + 1),
        ),
        (
            "requests",
            pool().requests(1 << 53),
            pool().requests((1 << 53) + 1),
        ),
        (
            "requests_jitter",
            pool().requests(1 << 53).requests_jitter(1 << 53),
            pool().requests(1).requests_jitter((1 << 53) + 1),
        ),
        (
            "max_spawn_rate",
            Daemon::builder().max_spawn_rate(M),
            Daemon::builder().max_spawn_rate(M + 1),
        ),
        (
            "max_restarts",
            Daemon::builder().max_restarts(1_000_000, SEC),
            Daemon::builder().max_restarts(1_000_001, SEC),
        ),
        (
            "max_restarts window",
            Daemon::builder().max_restarts(1, YEAR),
            Daemon::builder().max_restarts(1, YEAR + NS),
        ),
        (
            "crash_burst",
            Daemon::builder().crash_burst(1000, SEC),
            Daemon::builder().crash_burst(1001, SEC),
        ),
        (
            "crash_burst window",
            Daemon::builder().crash_burst(5, Duration::from_secs(3600)),
            Daemon::builder().crash_burst(5, Duration::from_secs(3600) + NS),
        ),
        (
            "spawn_timeout",
            Daemon::builder().spawn_timeout(Duration::from_secs(60)),
            Daemon::builder().spawn_timeout(Duration::from_secs(60) + NS),
        ),
        (
            "shutdown_timeout",
            Daemon::builder().shutdown_timeout(DAY),
            Daemon::builder().shutdown_timeout(DAY + NS),
        ),
        (
            "max_backoff",
            Daemon::builder().max_backoff(DAY),
            Daemon::builder().max_backoff(DAY + NS),
        ),
        (
            "babysit",
            Daemon::builder().max_children(2).babysit(DAY),
            Daemon::builder().max_children(2).babysit(DAY + NS),
        ),
        (
            "cpu_limit",
            sit().cpu_limit(YEAR),
            sit().cpu_limit(YEAR + NS),
        ),
        (
            "request_timeout",
            sit().request_timeout(DAY),
            sit().request_timeout(DAY + NS),
        ),
        (
            "long_request_timeout",
            sit().long_request_timeout(DAY),
            sit().long_request_timeout(DAY + NS),
        ),
        (
            "max_rss",
            sit().max_rss(1 << 50),
            sit().max_rss((1 << 50) + 1),
        ),
        (
            "cpu_share",
            sit().cpu_share(409_600.0),
            sit().cpu_share(409_600.1),
        ),
        (
            "umask",
            Daemon::builder().umask(0o777),
            Daemon::builder().umask(0o1000),
        ),
    ];
    for (param, inside, outside) in cases {
        if let Err(err) = inside.build() {
            panic!("{param} at its bound: {err}");
        }
        assert_eq!(out_of_range(outside), param);
    }
    let share = |p: f64| out_of_range(sit().cpu_share(p));
    for p in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -1.0] {
        assert_eq!(share(p), "cpu_share", "{p}");
    }
    // The bounds the docs and messages state are the constants.
    assert_eq!(
        CHILDREN_RANGE,
        format!("1 to {MAX_CHILDREN} (MAX_CHILDREN)")
    );
    assert_eq!(DAY_RANGE, format!("at most 1 day ({} s)", DAY.as_secs()));
    assert_eq!(YEAR_RANGE, format!("at most 1 year ({} s)", YEAR.as_secs()));
    assert_eq!(
        (MAX_REQUESTS, MAX_RSS, MAX_CPU_SHARE),
        (1 << 53, 1 << 50, 409_600.0)
    );
}

/// The values of the issue: huge counts are typed errors, not panics
/// or overflows (`max * 4`, `2 * start`, `start + max_spare`).
#[test]
fn huge_counts_are_typed_errors() {
    let huge = [usize::MAX, 1 << 58, MAX_CHILDREN + 1];
    for n in huge {
        assert_eq!(
            out_of_range(Daemon::builder().max_children(n)),
            "max_children"
        );
        assert_eq!(
            out_of_range(Daemon::builder().start_children(1).max_children(n)),
            "max_children"
        );
        assert_eq!(
            out_of_range(Daemon::builder().start_children(n)),
            "start_children"
        );
        assert_eq!(
            out_of_range(Daemon::builder().start_children(1).min_spare(n)),
            "min_spare"
        );
        assert_eq!(
            out_of_range(Daemon::builder().start_children(1).max_spare(n)),
            "max_spare"
        );
        assert_eq!(
            out_of_range(Daemon::builder().max_children(1).warm_workers(n)),
            "warm_workers"
        );
        assert_eq!(
            out_of_range(Daemon::builder().max_spawn_rate(n)),
            "max_spawn_rate"
        );
    }
    assert_eq!(
        Daemon::builder()
            .max_children(usize::MAX)
            .build()
            .unwrap_err()
            .to_string(),
        "max_children is 18446744073709551615, expected 1 to 65536 (MAX_CHILDREN)"
    );
    assert_eq!(
        Daemon::builder()
            .start_children(40_000)
            .build()
            .unwrap_err()
            .to_string(),
        "max_children is 120000 (start_children + max_spare), \
         expected 1 to 65536 (MAX_CHILDREN): set max_children"
    );
    let sit = || Daemon::builder().max_children(2).babysit(SEC);
    assert_eq!(
        out_of_range(sit().requests_jitter(u64::MAX)),
        "requests_jitter",
        "the bound comes before the mode"
    );
    assert_eq!(out_of_range(sit().max_rss(u64::MAX)), "max_rss");
    assert_eq!(
        out_of_range(Daemon::builder().start_children(1).requests(u64::MAX)),
        "requests"
    );
    assert_eq!(
        out_of_range(Daemon::builder().max_restarts(u32::MAX, Duration::MAX)),
        "max_restarts"
    );
    assert_eq!(
        out_of_range(Daemon::builder().shutdown_timeout(Duration::MAX)),
        "shutdown_timeout"
    );
    assert_eq!(out_of_range(sit().cpu_limit(Duration::MAX)), "cpu_limit");
}
