//! Fault injection on the process tree: killed workers, a killed
//! supervisor, signal storms, log rotation under load, a process limit,
//! foreign children, and recycling under load.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use support::{
    Conn, DEADLINE, Daemon, Load, exists, one_round, proc_state, wait_until, zombies_of,
};

#[test]
fn killing_random_workers_under_load_restores_the_pool_with_no_zombie() {
    let d = Daemon::start("preforking", &["--requests", "0", "--start-children", "4"]);
    d.wait_workers(4);
    let load = Load::start(d.port, 2);
    for round in 0..10usize {
        let workers = d.workers();
        let victim = workers[round % workers.len()];
        kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
        assert!(
            wait_until(DEADLINE, || !exists(victim) && d.workers().len() >= 2),
            "pool not restored after killing {victim}\n{}",
            d.report()
        );
    }
    let (ok, _errors) = load.stop();
    assert!(ok > 0);
    assert!(
        wait_until(DEADLINE, || zombies_of(d.supervisor).is_empty()),
        "zombies: {:?}",
        zombies_of(d.supervisor)
    );
    let mut c = d.conn();
    assert_eq!(c.cmd("PING"), "PONG");
    c.done();
}

#[test]
fn no_worker_or_spawner_is_alive_one_second_after_sigkill_of_the_supervisor() {
    let d = Daemon::start("preforking", &["--requests", "0", "--start-children", "4"]);
    let children: Vec<i32> = d
        .pids()
        .into_iter()
        .filter(|&p| p != d.supervisor)
        .collect();
    kill(Pid::from_raw(d.supervisor), Signal::SIGKILL).unwrap();
    let _ = d.wait_exit();
    // Within one second every one is dead (a zombie of ours at most).
    assert!(
        wait_until(Duration::from_secs(1), || children
            .iter()
            .all(|&p| matches!(proc_state(p), None | Some('Z')))),
        "alive after 1 s: {:?}",
        children
            .iter()
            .filter(|&&p| !matches!(proc_state(p), None | Some('Z')))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_storm_of_1000_hups_crashes_nothing() {
    let d = Daemon::start("preforking", &["--requests", "0"]);
    let workers = d.wait_workers(2);
    for _ in 0..1000 {
        d.signal(Signal::SIGHUP);
    }
    let mut c = d.conn();
    assert_eq!(c.cmd("PING"), "PONG");
    c.done();
    assert!(exists(d.supervisor));
    for w in workers {
        assert!(exists(w), "worker {w} died in the storm\n{}", d.report());
    }
    assert!(!d.log_text().contains("panicked"));
}

#[test]
fn log_rotation_under_load_loses_and_doubles_no_line() {
    let d = Daemon::start("preforking", &["--requests", "0", "--fault-commands"]);
    const LINES: u64 = 3000;
    let port = d.port;
    let writer = std::thread::spawn(move || {
        let mut c = Conn::open(port);
        c.set_timeout(Duration::from_secs(60));
        let answer = c.cmd(&format!("LOG {LINES}"));
        c.done();
        answer
    });
    // Ten renames and HUPs while the worker logs 1,000 lines a second.
    let mut files = vec![d.log.clone()];
    for i in 1..=10 {
        let seen = |d: &Daemon| d.log_text().matches("fault log line").count();
        let before = seen(&d);
        assert!(
            wait_until(DEADLINE, || seen(&d) > before + 50),
            "the worker stopped logging\n{}",
            d.report()
        );
        let rotated = d.log.with_extension(format!("log.{i}"));
        std::fs::rename(&d.log, &rotated).unwrap();
        files.push(rotated);
        d.signal(Signal::SIGHUP);
        assert!(wait_until(DEADLINE, || d.log.exists()), "no new log");
    }
    assert_eq!(writer.join().unwrap(), format!("OK {LINES}"));
    // Every line in exactly one file.
    assert!(wait_until(DEADLINE, || {
        let mut count: HashMap<u64, usize> = HashMap::new();
        for f in &files {
            for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
                if let Some(seq) = line
                    .contains("fault log line")
                    .then(|| line.split("seq: ").nth(1))
                    .flatten()
                {
                    let seq: u64 = seq.split(',').next().unwrap().trim().parse().unwrap();
                    *count.entry(seq).or_default() += 1;
                }
            }
        }
        count.len() as u64 == LINES && count.values().all(|&n| n == 1)
    }));
    let spread = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .contains("fault log line")
        })
        .count();
    assert!(spread >= 5, "lines landed in only {spread} files");
}

#[test]
fn foreign_children_are_reaped_and_terminated_at_shutdown() {
    let d = Daemon::start("forking", &["--foreign-child", "exec sleep 1000"]);
    let sleeper = || {
        procfs::process::all_processes()
            .unwrap()
            .flatten()
            .filter_map(|p| p.stat().ok())
            .find(|s| s.ppid == d.supervisor && s.comm == "sleep")
            .map(|s| s.pid)
    };
    assert!(
        wait_until(DEADLINE, || sleeper().is_some()),
        "{}",
        d.report()
    );
    let pid = sleeper().unwrap();
    d.signal(Signal::SIGTERM);
    assert!(
        matches!(d.wait_exit(), WaitStatus::Exited(_, 0)),
        "{}",
        d.report()
    );
    assert!(!exists(pid), "the foreign child outlived the daemon");
    assert!(
        d.log_text().contains("foreign child exited"),
        "{}",
        d.report()
    );
}

#[test]
fn a_foreign_child_that_ignores_term_is_killed_after_the_timeout() {
    // The child says when it ignores TERM: a TERM before that would end it
    // at once, and the timeout would not be tested.
    let dir = tempfile::tempdir().expect("tempdir");
    let trapped = dir.path().join("trapped");
    let command = format!("trap '' TERM; : > '{}'; exec sleep 1000", trapped.display());
    let d = Daemon::start(
        "forking",
        &["--foreign-child", &command, "--shutdown-timeout", "1"],
    );
    assert!(
        wait_until(DEADLINE, || trapped.exists()),
        "the foreign child never ignored TERM\n{}",
        d.report()
    );
    d.signal(Signal::SIGTERM);
    assert!(
        matches!(d.wait_exit(), WaitStatus::Exited(_, 0)),
        "{}",
        d.report()
    );
    assert!(
        d.log_text().contains("killing what is left"),
        "{}",
        d.report()
    );
}

#[test]
fn a_foreign_child_that_exits_is_reaped_while_running() {
    let d = Daemon::start("forking", &["--foreign-child", "exit 3"]);
    assert!(
        wait_until(DEADLINE, || {
            d.log_text()
                .lines()
                .any(|l| l.contains("foreign child exited") && l.contains("exit 3"))
        }),
        "{}",
        d.report()
    );
    assert!(zombies_of(d.supervisor).is_empty());
}

#[test]
fn fork_failures_at_the_process_limit_are_retried_without_losing_a_request() {
    // RLIMIT_NPROC is not enforced for root: run the daemon as nobody.
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        eprintln!("skipped: no user nobody");
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to switch to nobody");
        return;
    }
    let d = Daemon::start_with("forking", &["--max-children", "8"], |cmd, dir| {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (uid, gid) = (nobody.uid, nobody.gid);
        // SAFETY: between fork and exec the closure only makes
        // async-signal-safe system calls (setrlimit, setgroups, setgid,
        // setuid) and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // Launcher, supervisor, spawner, and about two workers
                // with their intermediates: forks fail beyond that.
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NPROC, 6, 6)?;
                nix::unistd::setgroups(&[])?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
                Ok(())
            });
        }
    });
    // Eight connections at once: more workers than the limit allows.
    let port = d.port;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                c.set_timeout(Duration::from_secs(60));
                assert_eq!(c.cmd("PING"), "PONG");
                c.done();
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a request was lost");
    }
    let log = d.log_text();
    assert!(log.contains("fork failed, will retry"), "{log}");
}

fn recycle(requests: &str) {
    let d = Daemon::start("preforking", &["--requests", requests]);
    let port = d.port;
    let clients: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let n = if i == 0 { 6668 } else { 6666 };
                let mut errors = Vec::new();
                for _ in 0..n {
                    if let Err(err) = one_round(port) {
                        errors.push(err.to_string());
                    }
                }
                errors
            })
        })
        .collect();
    let errors: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    d.wait_requests(20_000);
}

#[test]
fn recycling_after_every_request_loses_none_of_20000() {
    recycle("1");
}

#[test]
fn recycling_after_ten_requests_loses_none_of_20000() {
    recycle("10");
}
