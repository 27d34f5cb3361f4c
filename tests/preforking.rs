//! The seed's pre-forking example, as its own tests check it, and more.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use support::{DEADLINE, Daemon, exists, wait_until};

#[test]
fn pid_is_the_same_within_a_connection_and_differs_across_children() {
    let d = Daemon::start("preforking", &[]);
    let mut a = d.conn();
    let mut b = d.conn();
    let pid_a = a.cmd("PID");
    assert_eq!(
        a.cmd("pid"),
        pid_a,
        "commands are case-insensitive, same child"
    );
    let pid_b = b.cmd("PID");
    assert_eq!(b.cmd("PID"), pid_b);
    assert_ne!(pid_a, pid_b, "two connections, two children");
    assert_eq!(a.cmd("PING"), "PONG");
    assert_eq!(a.cmd("PARENT"), d.supervisor.to_string());
    assert_eq!(a.cmd("what"), "???");
    assert_ne!(a.cmd("KERNEL"), b.cmd("KERNEL"), "a System per process");
    assert_eq!(a.cmd("LOGFILE"), d.log.display().to_string());
    a.done();
    b.done();
    // requests 1: each of those children exits after its connection.
    for pid in [pid_a, pid_b] {
        let pid: i32 = pid.parse().unwrap();
        assert!(
            wait_until(DEADLINE, || !exists(pid)),
            "child {pid} did not retire\n{}",
            d.report()
        );
    }
}

#[test]
fn status_from_a_child_shows_the_mode_and_two_busy_slots() {
    let d = Daemon::start("preforking", &[]);
    let mut a = d.conn();
    assert_eq!(a.cmd("PING"), "PONG");
    let mut b = d.conn();
    // Each worker reports `Req` as it takes its connection; a's may reach
    // the scoreboard a moment after a has answered (its DaemonActor handles
    // it in turn), so b asks again until both show.
    let mut status = Vec::new();
    let mut slots = String::new();
    let both = wait_until(DEADLINE, || {
        status = b.report("STATUS");
        slots = status
            .iter()
            .find(|l| l.trim_start().starts_with("Slots ["))
            .unwrap_or_else(|| panic!("no slots line in {status:#?}"))
            .clone();
        slots.matches(" r").count() == 2
    });
    assert!(both, "not two busy slots: {slots}\n{}", d.report());
    assert_eq!(status[0], "actix_daemon::DaemonActor");
    assert_eq!(status[1], "    Pre-forking server, we are a child");
    assert!(slots.ends_with(" ]"), "{slots}");
    let peek = b.report("PEEK");
    assert!(peek[0].starts_with("actix_daemon peek"), "{peek:#?}");
    assert!(
        peek.iter().any(|l| l.contains("Keeps running because")),
        "{peek:#?}"
    );
    a.done();
    b.done();
}

#[test]
fn hup_reopens_the_log_file_everywhere_and_lets_the_old_one_go() {
    let d = Daemon::start("preforking", &["--requests", "0"]);
    let workers = d.wait_workers(2);
    let old = d.log.with_extension("log.old");
    std::fs::rename(&d.log, &old).unwrap();
    d.signal(Signal::SIGHUP);
    assert!(
        wait_until(DEADLINE, || d.log.exists()),
        "log file not re-created"
    );
    let old_name = old.display().to_string();
    let holders = || -> Vec<i32> {
        d.pids()
            .into_iter()
            .chain(workers.iter().copied())
            .filter(|&p| support::fd_targets(p).iter().any(|t| t == &old_name))
            .collect()
    };
    assert!(
        wait_until(DEADLINE, || holders().is_empty()),
        "processes still hold the old log: {:?}\n{}",
        holders(),
        d.report()
    );
    // New lines land in the new file, from a worker too.
    let mut c = d.conn();
    assert_eq!(c.cmd("PING"), "PONG");
    c.done();
    assert!(
        wait_until(DEADLINE, || d.log_text().contains("role: worker")),
        "no worker line in the new log\n{}",
        d.report()
    );
    assert!(d.log_text().contains("log file reopened"));
}

#[test]
fn sigterm_ends_every_process_with_no_zombie() {
    let d = Daemon::start("preforking", &[]);
    let mut busy = d.conn();
    assert_eq!(busy.cmd("PING"), "PONG");
    let all = d.pids();
    assert!(all.len() >= 4, "supervisor, spawner, two workers: {all:?}");
    d.signal(Signal::SIGTERM);
    // The busy worker finishes its request before it exits.
    assert_eq!(busy.cmd("PING"), "PONG");
    busy.done();
    match d.wait_exit() {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("supervisor ended with {other:?}\n{}", d.report()),
    }
    for pid in all {
        assert!(
            !exists(pid),
            "{pid} outlived the supervisor (zombie or alive)"
        );
    }
    assert!(d.log_text().contains("every child reaped"));
}

#[test]
fn every_connection_is_served_while_workers_recycle() {
    // requests 1: each connection retires its worker; connections waiting in
    // the listen queue meanwhile must not be lost.
    let d = Daemon::start("preforking", &[]);
    let port = d.port;
    let clients: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..40 {
                    let mut c = support::Conn::open(port);
                    c.set_timeout(Duration::from_secs(10));
                    assert_eq!(c.cmd("PING"), "PONG");
                    c.done();
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client failed");
    }
    d.wait_requests(120);
    let pids: HashSet<i32> = d.workers().into_iter().collect();
    assert!(pids.len() <= 10, "never more than max_children: {pids:?}");
}

#[test]
fn spare_workers_stay_between_min_and_max_spare() {
    // start 1, min_spare 2: the pool grows to two spares at once.
    let d = Daemon::start("preforking", &["--requests", "0"]);
    d.wait_workers(2);
    // Four busy connections: the pool forks spares to keep two waiting.
    let mut conns: Vec<_> = (0..4).map(|_| d.conn()).collect();
    for c in &mut conns {
        assert_eq!(c.cmd("PING"), "PONG");
    }
    d.wait_workers(6);
    for c in conns {
        c.done();
    }
    // Six idle now; max_spare is 8 so they stay. Shrink: a pool with
    // max_spare 2 retires the surplus.
    let d2 = Daemon::start(
        "preforking",
        &[
            "--requests",
            "0",
            "--start-children",
            "5",
            "--min-spare",
            "1",
            "--max-spare",
            "2",
        ],
    );
    d2.wait_workers(2);
}

#[test]
fn requests_jitter_retires_each_worker_after_requests_plus_its_draw() {
    // requests 2, jitter 4: every worker serves between 2 and 6 connections
    // (one request each), the number drawn in each worker.
    let d = Daemon::start("preforking", &["--requests", "2", "--requests-jitter", "4"]);
    let mut status = support::Conn::open(d.port);
    let report = status.report("STATUS").join("\n");
    assert!(
        report.contains("2 to 6 requests per child"),
        "the status shows the range:\n{report}"
    );
    status.done();
    let mut served = std::collections::HashMap::<i32, u32>::new();
    for _ in 0..80 {
        let mut c = support::Conn::open(d.port);
        c.set_timeout(Duration::from_secs(10));
        let pid: i32 = c.cmd("PID").parse().expect("a pid");
        c.done();
        *served.entry(pid).or_default() += 1;
    }
    d.wait_requests(81);
    // A worker that reached its limit exits; give each its moment.
    let retired: Vec<(i32, u32)> = served
        .iter()
        .filter(|&(&pid, &n)| n >= 2 && wait_until(Duration::from_secs(2), || !exists(pid)))
        .map(|(&pid, &n)| (pid, n))
        .collect();
    for (&pid, &n) in &served {
        assert!(
            n <= 6,
            "worker {pid} served {n} > requests + jitter: {served:?}"
        );
    }
    assert!(
        retired.len() >= 8,
        "80 connections at most 6 each: at least 8 workers retired: {served:?}"
    );
    for &(pid, n) in &retired {
        assert!(n >= 2, "worker {pid} retired after {n} < requests");
    }
    // The draws differ: not every worker retired at the same count (the
    // chance that 8 or more uniform draws from 0..=4 are all equal is below
    // one in 75,000).
    let counts: HashSet<u32> = retired.iter().map(|&(_, n)| n).collect();
    assert!(counts.len() > 1, "every worker drew the same: {served:?}");
    assert!(
        retired.iter().any(|&(_, n)| n > 2),
        "jitter adds to requests: {served:?}"
    );
}
