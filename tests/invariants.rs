//! DESIGN.md section 3: every invariant of the process model, pinned on
//! real processes.

mod support;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use support::{DEADLINE, Daemon, comm, exists, fd_targets, ppid, threads, wait_until};

#[test]
fn the_supervisor_never_forks_and_every_worker_is_its_child() {
    let d = Daemon::start("preforking", &[]);
    // Ten connections: ten workers retired and replaced.
    for _ in 0..10 {
        let mut c = d.conn();
        let worker: i32 = c.cmd("PID").parse().unwrap();
        assert_eq!(
            ppid(worker),
            d.supervisor,
            "a worker's parent is the supervisor"
        );
        assert!(comm(worker).ends_with("-worker"), "{}", comm(worker));
        c.done();
    }
    // A worker listed may have served its request and been reaped since
    // (ppid 0: gone); every one still there is the supervisor's child.
    for worker in d.workers() {
        let parent = ppid(worker);
        assert!(
            parent == d.supervisor || (parent == 0 && !exists(worker)),
            "worker {worker} has parent {parent}"
        );
    }
    d.signal(Signal::SIGUSR2);
    let peek_line = || {
        let log = d.log_text();
        let start = log.find("actix_daemon peek (we are the parent)")?;
        log[start..]
            .lines()
            .find(|l| l.contains("forks since runtime start"))
            .map(str::to_owned)
    };
    assert!(
        wait_until(DEADLINE, || peek_line().is_some()),
        "no supervisor peek in the log after SIGUSR2\n{}",
        d.report()
    );
    let line = peek_line().unwrap();
    assert!(line.ends_with(" 0 forks since runtime start"), "{line}");
}

#[test]
fn the_spawner_is_single_threaded_without_a_runtime_and_named() {
    let d = Daemon::start("preforking", &[]);
    let spawner = d.spawner().expect("a spawner");
    assert_eq!(ppid(spawner), d.supervisor);
    assert_eq!(comm(spawner), "prefork-spawner");
    assert_eq!(threads(spawner), 1, "the spawner has one thread");
    let fds = fd_targets(spawner);
    assert!(
        !fds.iter().any(|t| t.contains("eventpoll")),
        "an epoll instance in the spawner means a runtime: {fds:?}"
    );
    for worker in d.wait_workers(2) {
        assert!(threads(worker) >= 1);
        assert!(
            fd_targets(worker).iter().any(|t| t.contains("eventpoll")),
            "a worker runs its own runtime"
        );
    }
}

#[test]
fn each_worker_runs_its_own_actor_system() {
    let d = Daemon::start("preforking", &["--requests", "0", "--start-children", "3"]);
    let mut conns: Vec<_> = (0..3).map(|_| d.conn()).collect();
    let kernels: std::collections::HashSet<String> =
        conns.iter_mut().map(|c| c.cmd("KERNEL")).collect();
    assert_eq!(kernels.len(), 3, "{kernels:?}");
    for c in conns {
        c.done();
    }
}

#[test]
fn the_supervisor_keeps_no_copy_of_a_forwarded_connection() {
    let d = Daemon::start("forking", &[]);
    // TCP sockets only: the supervisor also holds each worker's own
    // channel (a Unix socket pair), one per worker.
    let sockets = |pid: i32| {
        let mut tcp = std::collections::HashSet::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            for line in std::fs::read_to_string(table)
                .unwrap_or_default()
                .lines()
                .skip(1)
            {
                if let Some(inode) = line.split_whitespace().nth(9) {
                    tcp.insert(format!("socket:[{inode}]"));
                }
            }
        }
        fd_targets(pid).iter().filter(|t| tcp.contains(*t)).count()
    };
    let baseline = sockets(d.supervisor);
    assert!(
        baseline >= 1,
        "the listener is a TCP socket of the supervisor"
    );
    let mut conns: Vec<_> = (0..3).map(|_| d.conn()).collect();
    for c in &mut conns {
        assert_eq!(c.cmd("PING"), "PONG");
    }
    assert_eq!(
        sockets(d.supervisor),
        baseline,
        "the supervisor holds a served connection: {:?}",
        fd_targets(d.supervisor)
    );
    for c in conns {
        c.done();
    }
}

#[test]
fn no_worker_or_spawner_survives_sigkill_of_the_supervisor() {
    let d = Daemon::start("preforking", &[]);
    let mut busy = d.conn();
    assert_eq!(busy.cmd("PING"), "PONG");
    let children: Vec<i32> = d
        .pids()
        .into_iter()
        .filter(|&p| p != d.supervisor)
        .collect();
    assert!(children.len() >= 3, "{children:?}");
    kill(Pid::from_raw(d.supervisor), Signal::SIGKILL).unwrap();
    assert!(matches!(
        d.wait_exit(),
        WaitStatus::Signaled(_, Signal::SIGKILL, _)
    ));
    // They are re-parented to the test (a subreaper) and must die by
    // themselves; reap them as they go.
    assert!(
        wait_until(std::time::Duration::from_secs(5), || {
            children.iter().all(|&p| {
                let _ = support::wait_pid(p, std::time::Duration::ZERO);
                !exists(p)
            })
        }),
        "survivors: {:?}",
        children.iter().filter(|&&p| exists(p)).collect::<Vec<_>>()
    );
}

#[test]
fn the_supervisor_shuts_down_with_an_error_when_the_spawner_dies() {
    let d = Daemon::start("preforking", &["--requests", "0"]);
    let workers = d.wait_workers(2);
    let spawner = d.spawner().unwrap();
    kill(Pid::from_raw(spawner), Signal::SIGKILL).unwrap();
    match d.wait_exit() {
        WaitStatus::Exited(_, 1) => {}
        other => panic!("supervisor ended with {other:?}\n{}", d.report()),
    }
    let log = d.log_text();
    assert!(log.contains("the spawner died"), "{log}");
    for w in workers {
        assert!(!exists(w), "worker {w} outlived the shutdown");
    }
}
