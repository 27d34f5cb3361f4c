//! The seed's forking example (one worker per connection), as its own tests
//! check it, and more.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use support::{DEADLINE, Daemon, exists, wait_until};

#[test]
fn each_connection_gets_its_own_worker() {
    let d = Daemon::start("forking", &[]);
    let mut a = d.conn();
    let mut b = d.conn();
    let pid_a = a.cmd("PID");
    assert_eq!(a.cmd("PID"), pid_a);
    let pid_b = b.cmd("PID");
    assert_ne!(pid_a, pid_b);
    assert_ne!(pid_a, d.supervisor.to_string(), "served by a worker");
    assert_eq!(a.cmd("PARENT"), d.supervisor.to_string());
    let status = a.report("STATUS");
    assert_eq!(status[1], "    Forking server, we are a child");
    a.done();
    b.done();
    let pid_a: i32 = pid_a.parse().unwrap();
    assert!(
        wait_until(DEADLINE, || !exists(pid_a)),
        "a worker exits after DONE, and is reaped\n{}",
        d.report()
    );
}

#[test]
fn at_most_three_workers_and_a_waiting_connection_is_served_when_one_ends() {
    let d = Daemon::start("forking", &[]);
    let mut conns: Vec<_> = (0..3).map(|_| d.conn()).collect();
    for c in &mut conns {
        assert_eq!(c.cmd("PING"), "PONG");
    }
    let mut fourth = d.conn();
    fourth.send("PING");
    fourth.set_timeout(Duration::from_millis(700));
    assert!(
        fourth.line().is_err(),
        "a fourth connection was served while three workers ran"
    );
    assert_eq!(d.workers().len(), 3, "{}", d.report());
    let status = conns[0].report("STATUS");
    let slots = status.iter().find(|l| l.contains("Slots [")).unwrap();
    assert_eq!(slots.trim(), "Slots [ r r r ]");
    assert!(
        status
            .iter()
            .any(|l| l.contains("accepting paused") || l.contains("Queued")),
        "{status:#?}"
    );
    conns.pop().unwrap().done();
    fourth.set_timeout(DEADLINE);
    assert_eq!(fourth.line().expect("served once a worker ended"), "PONG");
    fourth.done();
    for c in conns {
        c.done();
    }
}

#[test]
fn sigterm_ends_every_process_with_no_zombie() {
    let d = Daemon::start("forking", &[]);
    let mut busy = d.conn();
    assert_eq!(busy.cmd("PING"), "PONG");
    // Supervisor, spawner, the busy worker and one warm worker, once the
    // replacement's spawn is over (its short-lived intermediate, a copy of
    // the spawner, holds the log too).
    let mut all = Vec::new();
    assert!(
        wait_until(DEADLINE, || {
            all = d.pids();
            all.len() == 4
        }),
        "supervisor, spawner, the busy worker, one warm worker: {all:?}\n{}",
        d.report()
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(busy.cmd("PING"), "PONG", "the request in progress finishes");
    busy.done();
    match d.wait_exit() {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("supervisor ended with {other:?}\n{}", d.report()),
    }
    for pid in all {
        assert!(!exists(pid), "{pid} outlived the supervisor");
    }
}

#[test]
fn shutdown_kills_a_worker_that_overstays_the_timeout() {
    let d = Daemon::start("forking", &["--shutdown-timeout", "1"]);
    let mut busy = d.conn();
    assert_eq!(busy.cmd("PING"), "PONG");
    let worker: i32 = busy.cmd("PID").parse().unwrap();
    d.signal(Signal::SIGTERM);
    // The client never says DONE: the worker is killed after 1 s.
    match d.wait_exit() {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("supervisor ended with {other:?}\n{}", d.report()),
    }
    assert!(!exists(worker));
    assert!(
        d.log_text().contains("killing what is left"),
        "{}",
        d.report()
    );
}

#[test]
fn no_descriptor_or_memory_growth_in_the_supervisor_over_1000_workers() {
    let d = Daemon::start("forking", &[]);
    let port = d.port;
    let run = |n: usize| {
        let clients: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..n {
                        let mut c = support::Conn::open(port);
                        assert_eq!(c.cmd("PING"), "PONG");
                        c.done();
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().expect("client");
        }
    };
    // Settled: only the warm worker left, waiting for a request, and the
    // supervisor holds its pidfd (the spawn report may come a moment after
    // the worker runs; an exited worker's pidfd closes once reaped).
    let pidfds = |d: &Daemon| {
        support::fd_targets(d.supervisor)
            .iter()
            .filter(|t| t.contains("[pidfd]"))
            .count()
    };
    let settled = |d: &Daemon| {
        assert!(
            wait_until(DEADLINE, || d.workers().len() == 1 && pidfds(d) == 2),
            "workers left (pidfds {})\n{}",
            pidfds(d),
            d.report()
        );
    };
    run(34);
    settled(&d);
    let fds = support::fd_targets(d.supervisor).len();
    let rss = support::rss_kib(d.supervisor);
    run(334);
    settled(&d);
    let fds_after = support::fd_targets(d.supervisor).len();
    let rss_after = support::rss_kib(d.supervisor);
    assert_eq!(fds, fds_after, "descriptors leaked over 1,002 workers");
    assert!(
        rss_after <= rss + 1024,
        "supervisor RSS grew from {rss} KiB to {rss_after} KiB over 1,002 workers"
    );
    let mut c = d.conn();
    let status = c.report("STATUS");
    c.done();
    let counters = status.iter().find(|l| l.contains("Requests")).unwrap();
    // One worker per request (1,104 and the one answering), and the warm
    // worker forked once that one took its request (it may not have
    // counted itself yet).
    let spawned: u64 = counters
        .split("spawned ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no spawned count in {counters}"));
    assert!((1105..=1106).contains(&spawned), "{counters}");
}

#[test]
fn a_request_at_the_cap_is_queued_not_dropped_or_over_forked() {
    // The acceptor ignores Pause: every connection reaches the daemon as a
    // Req, beyond max_children. The daemon must queue them.
    let d = Daemon::start("forking", &["--max-children", "2", "--ignore-pause"]);
    let mut first: Vec<_> = (0..2).map(|_| d.conn()).collect();
    for c in &mut first {
        assert_eq!(c.cmd("PING"), "PONG");
    }
    let waiting: Vec<_> = (0..3).map(|_| d.conn()).collect();
    assert!(
        wait_until(DEADLINE, || first[0]
            .report("STATUS")
            .iter()
            .any(|l| l.contains("Queued requests 3"))),
        "three requests never queued\n{}",
        d.report()
    );
    assert_eq!(d.workers().len(), 2, "never more than max_children");
    for c in first {
        c.done();
    }
    // Each queued connection is served in turn, as slots free up.
    for mut c in waiting {
        c.set_timeout(DEADLINE);
        assert_eq!(c.cmd("PING"), "PONG");
        c.done();
    }
}

#[test]
fn a_missing_workdir_is_an_error_before_anything_starts() {
    let (code, stderr) =
        support::run_failing("forking", &["0", "--workdir", "/nonexistent/workdir"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot use working directory /nonexistent/workdir"),
        "{stderr}"
    );
}

#[test]
fn a_warm_worker_is_ready_before_the_request_and_serves_only_it() {
    // Default: one worker forked ahead, waiting (`.`) for a request.
    let d = Daemon::start("forking", &[]);
    // Ready: its `.` is in the (verbose) log. A request that came while it
    // was still starting could go to a worker forked meanwhile.
    let wait_ready = |worker: i32| {
        let pid = format!("role: worker, pid: {worker}");
        let is_ready = |l: &str| l.contains("state, state: .,") && l.ends_with(&pid);
        assert!(
            wait_until(DEADLINE, || d.log_text().lines().any(is_ready)),
            "worker {worker} never got ready\n{}",
            d.report()
        );
    };
    let warm = d.wait_workers(1)[0];
    wait_ready(warm);
    let mut c = d.conn();
    let pid: i32 = c.cmd("PID").parse().unwrap();
    let status = c.report("STATUS").join("\n");
    assert!(status.contains(" r ") || status.contains("[ r"), "{status}");
    // Another one is forked ahead while this one serves.
    assert!(
        wait_until(DEADLINE, || d.workers().len() == 2),
        "no new warm worker\n{}",
        d.report()
    );
    // The warm worker takes the connection. On a loaded machine the one
    // forked ahead (for the next request) may take it first: both wait on
    // the same socket. Then the warm one is still waiting, for the next.
    let workers = d.workers();
    assert!(
        pid == warm || (workers.contains(&warm) && workers.contains(&pid)),
        "served by {pid}, warm {warm}, workers {workers:?}\n{}",
        d.report()
    );
    c.done();
    // The served worker exits (each serves one request); the one waiting
    // serves the next.
    assert!(wait_until(DEADLINE, || !exists(pid)), "{}", d.report());
    let next = d.wait_workers(1)[0];
    assert_ne!(next, pid);
    wait_ready(next);
    let mut c = d.conn();
    let second: i32 = c.cmd("PID").parse().unwrap();
    assert_ne!(second, pid, "a worker served twice");
    let workers = d.workers();
    assert!(
        second == next || (workers.contains(&next) && workers.contains(&second)),
        "served by {second}, warm {next}, workers {workers:?}\n{}",
        d.report()
    );
    c.done();
}

#[test]
fn without_warm_workers_each_worker_is_forked_for_its_request() {
    let d = Daemon::start("forking", &["--warm-workers", "0"]);
    let mut c = d.conn();
    assert_eq!(c.cmd("PING"), "PONG");
    let pid: i32 = c.cmd("PID").parse().unwrap();
    assert_eq!(d.workers(), vec![pid], "only the worker serving");
    c.done();
    assert!(
        wait_until(DEADLINE, || d.workers().is_empty()),
        "a worker stayed\n{}",
        d.report()
    );
}

#[test]
fn reloads_under_load_lose_no_request() {
    // SIGUSR1 replaces every worker, warm ones included, while clients
    // keep connecting: a request that a worker took just as it was told to
    // go is handed back and served by another.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let d = Daemon::start("forking", &["--warm-workers", "2"]);
    let port = d.port;
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let served = std::sync::Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (done, served) = (done.clone(), served.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let mut c = support::Conn::open(port);
                    c.set_timeout(Duration::from_secs(10));
                    assert_eq!(c.cmd("PING"), "PONG");
                    c.done();
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let stop = support::StopOnDrop(done.clone());
    // 40 reloads, each once the clients have been served 5 more times.
    d.reload_while_serving(&served, 40, 5);
    drop(stop);
    for c in clients {
        c.join().expect("every connection was served");
    }
    let log = d.log_text();
    assert!(
        !log.contains("closed unserved"),
        "a request was dropped:\n{}",
        d.report()
    );
    eprintln!(
        "{} connections over 40 reloads; {} handed back",
        served.load(Ordering::Relaxed),
        log.matches("request handed back").count()
    );
}
