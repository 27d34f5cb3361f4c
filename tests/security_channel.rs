//! Issue #11, point 1: a channel per worker. An attacker with code in a
//! fork-per-request worker running as `nobody` under a root supervisor
//! reads or floods the only channel it holds, its own: no other worker's
//! request is harmed, the flooding worker is retired (logged with pid and
//! slot), and the supervisor's memory and forks stay bounded.
//!
//! These tests need root (to run the workers as `nobody`) and skip,
//! saying so, otherwise.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use support::*;

const DEADLINE: Duration = Duration::from_secs(20);

/// An example daemon started as root with workers as `nobody` and the
/// fault commands on, or `None` (and why, printed) when that cannot be
/// done here.
fn as_nobody(example: &str, extra: &[&str]) -> Option<Daemon> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a root supervisor with workers as nobody");
        return None;
    }
    if !matches!(nix::unistd::User::from_name("nobody"), Ok(Some(_))) {
        eprintln!("skipped: no user nobody");
        return None;
    }
    let mut args = vec!["--fault-commands", "--user", "nobody"];
    args.extend_from_slice(extra);
    Some(Daemon::start_with(example, &args, |_, dir| {
        use std::os::unix::fs::PermissionsExt;
        // The workers (as nobody) reopen the log file in this directory.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }))
}

/// A fork-per-request daemon of up to 8 workers, as [`as_nobody`].
fn forking_as_nobody(extra: &[&str]) -> Option<Daemon> {
    let mut args = vec!["--max-children", "8"];
    args.extend_from_slice(extra);
    as_nobody("forking", &args)
}

fn uid_of(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `n` clients at once, each PING then DONE; how many were served.
fn clients(port: u16, n: usize) -> usize {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                c.set_timeout(Duration::from_secs(30));
                let ok = c.cmd("PING") == "PONG";
                c.done();
                ok
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap_or(false))
        .filter(|ok| *ok)
        .count()
}

fn forks_logged(d: &Daemon) -> usize {
    d.log_text()
        .lines()
        .filter(|l| l.contains("worker forked"))
        .count()
}

#[test]
fn a_worker_reading_its_channel_steals_no_request_of_another() {
    let Some(d) = forking_as_nobody(&["--warm-workers", "2"]) else {
        return;
    };
    let mut thief = d.conn();
    let thief_pid: i32 = thief.cmd("PID").parse().unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(
        uid_of(thief_pid),
        Some(nobody.uid.as_raw()),
        "worker not as nobody"
    );
    assert_eq!(uid_of(d.supervisor), Some(0), "supervisor not root");
    // The thief reads every SOCK_SEQPACKET socket it holds for 3 s while
    // 20 other clients come, each needing a worker of its own.
    thief.set_timeout(Duration::from_secs(30));
    thief.send("STEAL 3000");
    let served = clients(d.port, 20);
    let stolen = thief.line().expect("the thief's answer");
    assert_eq!(served, 20, "requests lost to the thief\n{}", d.report());
    assert_eq!(stolen, "OK 0", "the thief read something\n{}", d.report());
    thief.done();
    // Nothing wedged: 20 more, after the attack.
    assert_eq!(clients(d.port, 20), 20, "{}", d.report());
    d.signal(Signal::SIGTERM);
    assert!(
        matches!(d.wait_exit(), WaitStatus::Exited(_, 0)),
        "{}",
        d.report()
    );
}

#[test]
fn a_worker_flooding_its_channel_is_retired_and_the_supervisor_stays_bounded() {
    let Some(d) = forking_as_nobody(&[]) else {
        return;
    };
    // Warm up, so that the supervisor's RSS is measured at its working size.
    assert_eq!(clients(d.port, 20), 20, "{}", d.report());
    let rss_before = rss_kib(d.supervisor);
    let forks_before = forks_logged(&d);
    let mut attacker = d.conn();
    let pid: i32 = attacker.cmd("PID").parse().unwrap();
    // 4,000 forged messages, claims and "requests", each with a descriptor.
    let answer = attacker.cmd("FLOOD 4000");
    assert!(answer.starts_with("OK "), "{answer}");
    d.wait_log("worker misbehaves");
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("worker misbehaves"))
        .unwrap()
        .to_owned();
    assert!(line.contains(&format!("worker: {pid}")), "{line}");
    assert!(line.contains("slot:"), "{line}");
    assert!(line.contains("on its channel"), "{line}");
    drop(attacker);
    assert!(
        wait_until(DEADLINE, || !exists(pid)),
        "the flooding worker {pid} was not retired\n{}",
        d.report()
    );
    // Logged once, however many messages it sent.
    assert_eq!(
        d.log_text().matches("worker misbehaves").count(),
        1,
        "{}",
        d.report()
    );
    // Every client after the attack is served; the forks are those of the
    // clients (and the warm spares), not of the forged messages.
    assert_eq!(clients(d.port, 20), 20, "{}", d.report());
    let forks = forks_logged(&d) - forks_before;
    assert!(
        forks <= 20 + 4,
        "{forks} forks for 21 connections\n{}",
        d.report()
    );
    let rss_after = rss_kib(d.supervisor);
    assert!(
        rss_after <= rss_before + 4 * 1024,
        "supervisor grew from {rss_before} KiB to {rss_after} KiB"
    );
    d.signal(Signal::SIGTERM);
    assert!(
        matches!(d.wait_exit(), WaitStatus::Exited(_, 0)),
        "{}",
        d.report()
    );
}

#[test]
fn a_preforked_worker_that_writes_on_its_channel_is_retired_and_the_pool_goes_on() {
    let Some(d) = as_nobody("preforking", &["--start-children", "2"]) else {
        return;
    };
    d.wait_workers(2);
    let mut c = d.conn();
    let pid: i32 = c.cmd("PID").parse().unwrap();
    assert!(c.cmd("FLOOD 10").starts_with("OK "));
    d.wait_log("worker misbehaves");
    drop(c);
    assert!(wait_until(DEADLINE, || !exists(pid)), "{}", d.report());
    assert_eq!(clients(d.port, 20), 20, "{}", d.report());
    d.signal(Signal::SIGTERM);
    assert!(
        matches!(d.wait_exit(), WaitStatus::Exited(_, 0)),
        "{}",
        d.report()
    );
}
