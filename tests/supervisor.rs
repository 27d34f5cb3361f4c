//! The supervisor under attack and under operators: a `kill -9` storm, a
//! worker that forges its scoreboard slot, HUP storms on a recycling pool,
//! a churning pool under reloads, a panicking supervisor, a stopped
//! spawner, TERM during a binary upgrade, and SIGQUIT.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use support::{DEADLINE, Daemon, Launch, Load, exists, wait_until, zombies_of};

/// No process of `d` (supervisor, spawner, worker, new supervisor of an
/// upgrade: all write its log) is left within `within`.
fn nothing_left(d: &Daemon, within: Duration) {
    assert!(
        wait_until(within, || d.pids().is_empty()),
        "processes left after {within:?}\n{}",
        d.report()
    );
}

/// A process of our own that no signal from the daemon may reach; killed
/// and reaped on drop.
struct Victim(std::process::Child);

impl Victim {
    fn start() -> Victim {
        Victim(
            Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("start sleep"),
        )
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Still running: not exited, not stopped, not a zombie.
    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
            && matches!(support::proc_state(self.pid()), Some('S' | 'R'))
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_kill_storm_under_load_is_not_a_crash_loop() {
    let d = Daemon::start("preforking", &["--requests", "0", "--start-children", "4"]);
    d.wait_workers(4);
    let load = Load::start(d.port, 3);
    let mut kills = 0u64;
    let mut previous: Vec<i32> = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        // An established worker: one that was already running 50 ms ago.
        let now = d.workers();
        let established: Vec<i32> = now
            .iter()
            .copied()
            .filter(|w| previous.contains(w))
            .collect();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if !established.is_empty() {
            let victim = established[(seed % established.len() as u64) as usize];
            if kill(Pid::from_raw(victim), Signal::SIGKILL).is_ok() {
                kills += 1;
            }
        }
        previous = now;
        std::thread::sleep(Duration::from_millis(50));
    }
    let last_kill = Instant::now();
    assert!(
        wait_until(Duration::from_millis(500), || d.workers().len() >= 2),
        "fewer than 2 workers {:?} after the last kill\n{}",
        last_kill.elapsed(),
        d.report()
    );
    let (ok, errors) = load.stop();
    assert!(kills > 100, "only {kills} kills: the pool was not there");
    assert!(ok > 0, "nothing served");
    assert!(
        errors <= kills,
        "{errors} failed requests for {kills} kills\n{}",
        d.report()
    );
    let log = d.log_text();
    assert!(
        !log.contains("backing off"),
        "backoff logged\n{}",
        d.report()
    );
    assert!(
        log.contains("worker killed by a signal we did not send"),
        "kills not logged as such\n{}",
        d.report()
    );
    assert!(
        wait_until(DEADLINE, || zombies_of(d.supervisor).is_empty()),
        "zombies: {:?}",
        zombies_of(d.supervisor)
    );
    // The status counts the kills apart.
    let mut c = d.conn();
    let status = c.report("STATUS").join("\n");
    c.done();
    assert!(
        status.contains("Killed by a signal we did not send"),
        "{status}"
    );
}

#[test]
fn a_worker_forging_its_slot_is_retired_and_no_signal_reaches_the_forged_pid() {
    let mut victim = Victim::start();
    let d = Daemon::start(
        "preforking",
        &[
            "--requests",
            "0",
            "--start-children",
            "3",
            "--fault-commands",
            "--babysit",
            "1",
            "--request-timeout",
            "1",
        ],
    );
    d.wait_workers(3);
    let mut c = d.conn();
    let forger: i32 = c.cmd("PID").parse().unwrap();
    assert_eq!(c.cmd(&format!("FORGE {}", victim.pid())), "OK");
    d.wait_log("worker misbehaves");
    assert!(
        wait_until(DEADLINE, || !exists(forger)),
        "the forging worker {forger} was not retired\n{}",
        d.report()
    );
    drop(c);
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("worker misbehaves"))
        .unwrap();
    assert!(line.contains(&format!("worker: {forger}")), "{line}");
    assert!(line.contains("slot:"), "{line}");
    // The pool still serves, and its report no longer names the victim.
    let mut c = d.conn();
    assert_eq!(c.cmd("PING"), "PONG");
    let status = c.report("STATUS").join("\n");
    c.done();
    assert!(!status.contains(&victim.pid().to_string()), "{status}");
    assert!(victim.alive(), "the victim was signalled\n{}", d.report());
    // A reload and the shutdown signal every worker: never the victim.
    d.signal(Signal::SIGUSR1);
    d.wait_log("graceful reload complete");
    assert!(victim.alive(), "the victim was signalled by the reload");
    d.signal(Signal::SIGTERM);
    assert!(
        matches!(d.wait_exit(), WaitStatus::Exited(_, 0)),
        "{}",
        d.report()
    );
    assert!(victim.alive(), "the victim was signalled by the shutdown");
}

#[test]
fn three_hundred_hups_on_a_recycling_pool_kill_no_worker() {
    // requests 1 (the example's default): a worker per connection, so the
    // HUPs land on workers in every stage of their life.
    let d = Daemon::start("preforking", &[]);
    d.wait_workers(2);
    let load = Load::start(d.port, 3);
    for _ in 0..300 {
        d.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = load.served();
    assert!(
        wait_until(DEADLINE, || load.served() > before + 50),
        "clients stalled after the HUPs\n{}",
        d.report()
    );
    let (ok, errors) = load.stop();
    assert!(ok > 300, "{ok}");
    assert_eq!(errors, 0, "{}", d.report());
    let log = d.log_text();
    for bad in [
        "killed by a signal we did not send",
        "failed before it was ready",
        "backing off",
    ] {
        assert!(!log.contains(bad), "{bad:?} logged\n{}", d.report());
    }
    assert!(exists(d.supervisor));
}

#[test]
fn a_pool_at_close_spare_limits_loses_nothing_through_40000_connections_and_100_reloads() {
    let d = Daemon::start(
        "preforking",
        &[
            "--requests",
            "0",
            "--start-children",
            "1",
            "--min-spare",
            "1",
            "--max-spare",
            "2",
            "--max-children",
            "4",
        ],
    );
    let load = Load::start(d.port, 3);
    let start = Instant::now();
    for _ in 0..100 {
        let before = load.served();
        d.signal(Signal::SIGUSR1);
        assert!(
            wait_until(DEADLINE, || load.served() >= before + 200),
            "clients stalled\n{}",
            d.report()
        );
    }
    assert!(
        wait_until(Duration::from_secs(120), || load.served() >= 40_000),
        "only {} served\n{}",
        load.served(),
        d.report()
    );
    let (ok, errors) = load.stop();
    let elapsed = start.elapsed();
    assert!(ok >= 40_000);
    assert_eq!(errors, 0, "{errors} lost of {ok}\n{}", d.report());
    // Surplus spares go at most one a second, however the load swings.
    let surplus = d.log_text().matches("retiring a surplus spare").count();
    assert!(
        surplus as u64 <= elapsed.as_secs() + 1,
        "{surplus} surplus retirements in {elapsed:?}"
    );
}

#[test]
fn a_supervisor_panic_at_start_fails_the_launcher_and_leaves_nothing() {
    let Launch {
        daemon: d,
        status,
        stderr,
        ..
    } = Daemon::launch(
        "preforking",
        &[],
        &[
            "--fault-supervisor-panic",
            "start",
            "--pidfile",
            "p.pid",
            "--shutdown-timeout",
            "5",
        ],
        |_, _| {},
    );
    assert!(!status.success(), "launcher succeeded: {stderr}");
    assert!(stderr.contains("supervisor panicked"), "{stderr}");
    assert!(stderr.contains("panics at start"), "{stderr}");
    nothing_left(&d, Duration::from_secs(5));
    assert!(!d.dir.path().join("p.pid").exists(), "pidfile left");
    assert!(
        d.log_text().contains("supervisor panicked"),
        "{}",
        d.report()
    );
}

#[test]
fn a_supervisor_panic_on_hup_ends_every_worker_and_exits_101() {
    let d = Daemon::start(
        "preforking",
        &[
            "--fault-supervisor-panic",
            "hup",
            "--pidfile",
            "p.pid",
            "--shutdown-timeout",
            "5",
        ],
    );
    let workers = d.wait_workers(2);
    assert!(d.dir.path().join("p.pid").exists());
    d.signal(Signal::SIGHUP);
    let sent = Instant::now();
    assert!(
        matches!(d.wait_exit(), WaitStatus::Exited(_, 101)),
        "{}",
        d.report()
    );
    // Within the shutdown timeout, everything included.
    nothing_left(&d, Duration::from_secs(5).saturating_sub(sent.elapsed()));
    for w in workers {
        assert!(!exists(w), "worker {w} left");
    }
    assert!(!d.dir.path().join("p.pid").exists(), "pidfile left");
    let log = d.log_text();
    assert!(log.contains("supervisor panicked"), "{log}");
    assert!(log.contains("panics on HUP"), "{log}");
    if std::env::var_os("DBG").is_some() {
        panic!("{log}");
    }
}

/// The supervisor that replaced `d`'s, by the pidfile `p.pid`.
fn new_supervisor(d: &Daemon) -> i32 {
    let new: i32 = std::fs::read_to_string(d.dir.path().join("p.pid"))
        .expect("pidfile")
        .trim()
        .parse()
        .expect("a pid in the pidfile");
    assert_ne!(new, d.supervisor, "the pidfile still names the old one");
    new
}

/// SIGSTOPs the spawner, then has a worker retire (requests 1): the
/// supervisor asks the stopped spawner for a replacement.
fn stop_the_spawner_and_retire_a_worker(d: &Daemon) {
    d.wait_workers(2);
    let spawner = d.spawner().expect("spawner");
    kill(Pid::from_raw(spawner), Signal::SIGSTOP).unwrap();
    let mut c = d.conn();
    assert_eq!(c.cmd("PING"), "PONG");
    c.done();
}

#[test]
fn a_stopped_spawner_is_logged_as_stuck_and_the_daemon_stops_non_zero() {
    // requests 1: the first connection retires its worker, so the
    // supervisor asks the (stopped) spawner for another.
    let d = Daemon::start("preforking", &["--spawn-timeout", "1"]);
    stop_the_spawner_and_retire_a_worker(&d);
    let asked = Instant::now();
    let status = d.wait_exit();
    assert!(
        matches!(status, WaitStatus::Exited(_, code) if code != 0),
        "{status:?}\n{}",
        d.report()
    );
    // Within the bound, plus the drain.
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
    let log = d.log_text();
    assert!(log.contains("the spawner is stuck"), "{}", d.report());
    nothing_left(&d, Duration::from_secs(10));
}

#[test]
fn a_stopped_spawner_with_binary_upgrade_is_replaced_by_a_new_supervisor() {
    let d = Daemon::start(
        "preforking",
        &[
            "--spawn-timeout",
            "1",
            "--binary-upgrade",
            "--pidfile",
            "p.pid",
        ],
    );
    stop_the_spawner_and_retire_a_worker(&d);
    let asked = Instant::now();
    assert!(
        matches!(d.wait_exit(), WaitStatus::Exited(_, 0)),
        "{}",
        d.report()
    );
    // The old supervisor's drain is not held up by the spawn it asked for.
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}\n{}",
        asked.elapsed(),
        d.report()
    );
    let log = d.log_text();
    assert!(log.contains("the spawner is stuck"), "{log}");
    assert!(log.contains("for a fresh spawner"), "{log}");
    let new = new_supervisor(&d);
    assert!(exists(new));
    // The new supervisor serves, with a spawner that works.
    for _ in 0..5 {
        let mut c = d.conn();
        assert_eq!(c.cmd("PING"), "PONG");
        c.done();
    }
    kill(Pid::from_raw(new), Signal::SIGTERM).unwrap();
    nothing_left(&d, DEADLINE);
}

#[test]
fn a_stopped_spawner_whose_replacement_upgrade_fails_stops_the_daemon_non_zero() {
    let d = Daemon::start(
        "preforking",
        &[
            "--spawn-timeout",
            "1",
            "--binary-upgrade",
            "--fault-fail-upgrade",
        ],
    );
    stop_the_spawner_and_retire_a_worker(&d);
    let status = d.wait_exit();
    assert!(
        matches!(status, WaitStatus::Exited(_, code) if code != 0),
        "{status:?}\n{}",
        d.report()
    );
    let log = d.log_text();
    assert!(log.contains("no spawner is left"), "{}", d.report());
    nothing_left(&d, DEADLINE);
}

#[test]
fn term_during_a_binary_upgrade_leaves_nothing_running() {
    // The new binary takes 1.5 s to start: TERM lands before it is ready,
    // at once or once the old supervisor has started it.
    for started in [false, true] {
        let d = Daemon::start(
            "preforking",
            &[
                "--binary-upgrade",
                "--fault-slow-upgrade",
                "1500",
                "--pidfile",
                "p.pid",
            ],
        );
        d.wait_workers(2);
        d.signal(Signal::SIGUSR2);
        if started {
            d.wait_log("binary upgrade: new supervisor starting");
        }
        d.signal(Signal::SIGTERM);
        assert!(
            matches!(d.wait_exit(), WaitStatus::Exited(_, 0)),
            "{}",
            d.report()
        );
        nothing_left(&d, DEADLINE);
        assert!(!d.dir.path().join("p.pid").exists(), "pidfile left");
        assert!(!d.dir.path().join("p.pid.oldbin").exists(), "oldbin left");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", d.port)).is_err(),
            "still listening after TERM (new one started: {started})\n{}",
            d.report()
        );
        let log = d.log_text();
        assert!(log.contains("binary upgrade abandoned"), "{log}");
    }
}

#[test]
fn term_to_the_old_supervisor_after_the_handover_leaves_the_new_one_serving() {
    let d = Daemon::start("preforking", &["--binary-upgrade", "--pidfile", "p.pid"]);
    d.wait_workers(2);
    d.signal(Signal::SIGUSR2);
    d.wait_log("the new supervisor is ready, draining");
    // The old one is draining (or gone): a TERM to it changes nothing.
    let _ = kill(Pid::from_raw(d.supervisor), Signal::SIGTERM);
    assert!(
        matches!(d.wait_exit(), WaitStatus::Exited(_, 0)),
        "{}",
        d.report()
    );
    let new = new_supervisor(&d);
    let mut c = d.conn();
    assert_eq!(c.cmd("PARENT"), new.to_string());
    c.done();
    kill(Pid::from_raw(new), Signal::SIGTERM).unwrap();
    nothing_left(&d, DEADLINE);
}

#[test]
fn sigquit_stops_gracefully_and_finishes_what_was_accepted() {
    let d = Daemon::start("preforking", &["--requests", "0"]);
    d.wait_workers(2);
    let mut c = d.conn();
    assert_eq!(c.cmd("PING"), "PONG");
    d.signal(Signal::SIGQUIT);
    // The connection accepted before the stop is served to its end.
    assert_eq!(c.cmd("PING"), "PONG");
    c.done();
    assert!(
        matches!(d.wait_exit(), WaitStatus::Exited(_, 0)),
        "{}",
        d.report()
    );
    nothing_left(&d, DEADLINE);
    let log = d.log_text();
    assert!(!log.contains("killing"), "{log}");
}
