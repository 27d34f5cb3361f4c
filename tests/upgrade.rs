//! Zero-downtime binary upgrade on SIGUSR2.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use support::{DEADLINE, Daemon, exists, wait_until};

fn pid_in(path: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn round(port: u16) -> Result<(), String> {
    let mut c = support::Conn::open(port);
    c.set_timeout(Duration::from_secs(10));
    c.send("PING");
    match c.line() {
        Ok(l) if l == "PONG" => {}
        other => return Err(format!("{other:?}")),
    }
    c.send("DONE");
    match c.line() {
        Ok(l) if l == "OK" => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

#[test]
fn usr2_hands_over_to_a_new_binary_under_load_without_a_failed_request() {
    let d = Daemon::start("preforking", &["--binary-upgrade", "--pidfile", "up.pid"]);
    let pidfile = d.dir.path().join("up.pid");
    let old = d.supervisor;
    assert_eq!(pid_in(&pidfile), Some(old));
    let port = d.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                let mut ok = 0;
                for _ in 0..50_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    match round(port) {
                        Ok(()) => ok += 1,
                        Err(e) => errors.push(e),
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    d.signal(Signal::SIGUSR2);
    // The old supervisor drains and exits cleanly once the new one is ready.
    match d.wait_exit() {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("old supervisor ended with {other:?}\n{}", d.report()),
    }
    let new = pid_in(&pidfile).expect("the new supervisor's pid");
    assert_ne!(new, old);
    assert!(exists(new), "{}", d.report());
    assert!(!d.dir.path().join("up.pid.oldbin").exists());
    // Keep the load on the new pool for a moment: count its connections.
    let served_before = d.log_text().matches("served 1 requests").count();
    assert!(wait_until(DEADLINE, || d
        .log_text()
        .matches("served 1 requests")
        .count()
        > served_before + 20));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (ok, errors) = c.join().unwrap();
        assert!(
            errors.is_empty(),
            "{} failed requests: {:?}",
            errors.len(),
            &errors[..errors.len().min(3)]
        );
        total += ok;
    }
    assert!(total > 20, "{total}");
    let log = d.log_text();
    assert!(
        log.contains("binary upgrade: the new supervisor is ready, draining"),
        "{log}"
    );
    // The new daemon is cleaned up by the guard (it writes the same log).
    let _ = d.pids();
}

#[test]
fn a_failed_upgrade_leaves_the_old_daemon_serving() {
    let d = Daemon::start(
        "preforking",
        &[
            "--binary-upgrade",
            "--fault-fail-upgrade",
            "--pidfile",
            "up.pid",
        ],
    );
    let pidfile = d.dir.path().join("up.pid");
    d.signal(Signal::SIGUSR2);
    assert!(
        wait_until(DEADLINE, || d
            .log_text()
            .contains("binary upgrade failed, still serving")),
        "{}",
        d.report()
    );
    assert!(exists(d.supervisor));
    assert_eq!(pid_in(&pidfile), Some(d.supervisor), "pidfile moved back");
    assert!(round(d.port).is_ok());
}
