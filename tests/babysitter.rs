//! Fault injection: the babysitter and crash-loop handling on real
//! processes. Each test starts a daemon, injects one fault, asserts the
//! outcome, and leaves no process behind.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{DEADLINE, Daemon, exists, wait_until};

const FAULTS: &[&str] = &["--requests", "0", "--babysit", "1", "--fault-commands"];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    FAULTS
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

/// The log lines (in order) that mention `pid` and contain `text`.
fn lines_about(d: &Daemon, pid: i32, text: &str) -> Vec<String> {
    let worker = format!("worker: {pid},");
    d.log_text()
        .lines()
        .filter(|l| l.contains(text) && l.contains(&worker))
        .map(str::to_owned)
        .collect()
}

fn wait_gone(d: &Daemon, pid: i32) {
    assert!(
        wait_until(DEADLINE, || !exists(pid)),
        "worker {pid} still there\n{}",
        d.report()
    );
}

#[test]
fn a_stopped_worker_in_r_is_escalated_int_term_kill_and_replaced() {
    let d = Daemon::start("preforking", &args(&["--request-timeout", "1"]));
    let idle_before = d.wait_workers(2);
    let mut c = d.conn();
    let victim: i32 = c.cmd("PID").parse().unwrap();
    let idle: Vec<i32> = idle_before.into_iter().filter(|&p| p != victim).collect();
    // The worker answers before its DaemonActor may have recorded `r`: stop
    // it only once the scoreboard says it serves.
    let serving = format!("pid: {victim}");
    assert!(
        wait_until(DEADLINE, || d
            .log_text()
            .lines()
            .any(|l| l.contains("state, state: r") && l.ends_with(&serving))),
        "{}",
        d.report()
    );
    kill(Pid::from_raw(victim), Signal::SIGSTOP).unwrap();
    wait_gone(&d, victim);
    let steps = lines_about(&d, victim, "babysitter: hung request");
    let signals: Vec<&str> = steps
        .iter()
        .map(|l| {
            ["SIGINT", "SIGTERM", "SIGKILL"]
                .into_iter()
                .find(|s| l.contains(&format!("signal: {s}")))
                .unwrap_or("?")
        })
        .collect();
    assert_eq!(signals, ["SIGINT", "SIGTERM", "SIGKILL"], "{steps:#?}");
    assert!(
        steps[0].contains("limit: 1.0s") && steps[0].contains("state: r"),
        "{}",
        steps[0]
    );
    // Idle workers are never touched by a request timeout.
    for pid in idle {
        assert!(exists(pid), "idle worker {pid} was killed\n{}", d.report());
    }
    // The pool is refilled and answers.
    let mut c2 = d.conn();
    assert_eq!(c2.cmd("PING"), "PONG");
    let status = c2.report("STATUS");
    assert!(
        status
            .iter()
            .any(|l| l.contains("Babysitter: 0 rogue, 1 hung")),
        "{status:#?}"
    );
    c2.done();
}

#[test]
fn a_long_request_has_its_own_timeout() {
    let d = Daemon::start(
        "preforking",
        &args(&["--request-timeout", "1", "--long-request-timeout", "2"]),
    );
    let mut c = d.conn();
    let victim: i32 = c.cmd("PID").parse().unwrap();
    assert_eq!(c.cmd("LONG"), "OK");
    c.send("HANG");
    wait_gone(&d, victim);
    let steps = lines_about(&d, victim, "babysitter:");
    assert!(!steps.is_empty(), "{}", d.report());
    for l in &steps {
        assert!(
            l.contains("hung long request") && l.contains("state: l"),
            "{l}"
        );
    }
}

#[test]
fn a_spinning_worker_is_rogue_and_killed() {
    let d = Daemon::start("preforking", &args(&["--cpu-limit", "1"]));
    let mut c = d.conn();
    let victim: i32 = c.cmd("PID").parse().unwrap();
    c.send("SPIN");
    wait_gone(&d, victim);
    let steps = lines_about(&d, victim, "rogue: total CPU time over the limit");
    // SPIN blocks the worker's event loop: only SIGKILL ends it.
    assert!(
        steps.iter().any(|l| l.contains("signal: SIGKILL")),
        "{steps:#?}"
    );
}

#[test]
fn a_worker_over_its_cpu_share_is_rogue() {
    let d = Daemon::start("preforking", &args(&["--cpu-share", "50"]));
    let mut c = d.conn();
    let victim: i32 = c.cmd("PID").parse().unwrap();
    c.send("SPIN");
    wait_gone(&d, victim);
    let steps = lines_about(&d, victim, "rogue: CPU share over the limit");
    assert!(!steps.is_empty(), "{}", d.report());
}

#[test]
fn a_worker_over_max_rss_finishes_its_request_then_retires() {
    let d = Daemon::start("preforking", &args(&["--max-rss", "64"]));
    let mut c = d.conn();
    let victim: i32 = c.cmd("PID").parse().unwrap();
    assert_eq!(c.cmd("ALLOC 100"), "OK 100");
    assert!(
        wait_until(DEADLINE, || !lines_about(
            &d,
            victim,
            "resident memory over the limit"
        )
        .is_empty()),
        "{}",
        d.report()
    );
    // Graceful: the request in progress goes on.
    assert_eq!(c.cmd("PING"), "PONG");
    c.done();
    wait_gone(&d, victim);
    let mut c2 = d.conn();
    assert_eq!(c2.cmd("PING"), "PONG");
    c2.done();
}

#[test]
fn workers_that_panic_at_start_back_off_and_the_pool_recovers() {
    let started = Instant::now();
    let d = Daemon::start(
        "preforking",
        &[
            "--fault-panic-at-start",
            "4",
            "--start-children",
            "1",
            "--min-spare",
            "1",
        ],
    );
    // Four young deaths back off 100, 200, 400, 800 ms: at least 1.5 s
    // before a fifth worker can be ready.
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    // Recovery is noticed on the supervisor's next look after the new
    // worker's pid is known, which may come just after readiness.
    assert!(
        wait_until(DEADLINE, || d.log_text().contains("pool recovered")),
        "{}",
        d.report()
    );
    let log = d.log_text();
    let degraded = log.matches("worker failed before it was ready").count();
    assert!(log.contains("pool degraded: backing off"), "{log}");
    assert!(degraded >= 4, "{degraded}\n{log}");
    let forks = log.matches("worker forked").count();
    assert!(forks <= 8, "a fork storm: {forks} forks\n{log}");
    let mut c = d.conn();
    let status = c.report("STATUS");
    assert!(
        status
            .iter()
            .any(|l| l.contains("Young deaths 4 (last exit 101); pool healthy")),
        "{status:#?}"
    );
    c.done();
}

#[test]
fn a_crash_loop_gives_up_with_a_clear_error() {
    let (code, stderr) = support::run_failing(
        "preforking",
        &["0", "--fault-panic-at-start", "1000", "--max-restarts", "3"],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("workers died young"), "{stderr}");
}

#[test]
fn a_panicking_worker_is_replaced() {
    let d = Daemon::start("preforking", &args(&[]));
    let mut c = d.conn();
    let victim: i32 = c.cmd("PID").parse().unwrap();
    c.send("PANIC");
    assert!(c.line().is_err(), "the connection dies with the worker");
    wait_gone(&d, victim);
    assert!(d.log_text().contains("panicked"), "{}", d.report());
    let mut c2 = d.conn();
    assert_eq!(c2.cmd("PING"), "PONG");
    c2.done();
}

#[test]
fn fault_commands_are_unknown_without_the_flag() {
    let d = Daemon::start("preforking", &[]);
    let mut c = d.conn();
    for cmd in ["SPIN", "HANG", "LONG", "ALLOC 10", "PANIC", "LOG 3"] {
        assert_eq!(c.cmd(cmd), "???", "{cmd}");
    }
    c.done();
}
