//! Detaching: the launching process, the daemon's session, streams, working
//! directory, umask and log file.

mod support;

use std::os::unix::fs::PermissionsExt;

use support::{Daemon, fd_targets};

#[test]
fn the_launcher_exits_only_once_the_initial_pool_is_up() {
    let d = Daemon::start("preforking", &["--start-children", "4", "--requests", "0"]);
    // No waiting here: the launcher's exit already means ready.
    let workers = d.workers();
    assert!(workers.len() >= 4, "{workers:?}\n{}", d.report());
    assert!(d.log_text().contains("daemon ready"));
}

#[test]
fn the_daemon_runs_in_its_own_session_with_its_streams_set() {
    let d = Daemon::start("forking", &[]);
    let stat = procfs::process::Process::new(d.supervisor)
        .and_then(|p| p.stat())
        .unwrap();
    assert_eq!(stat.session, stat.pgrp, "a session of its own");
    assert_ne!(
        stat.session, d.supervisor,
        "not a session leader: it cannot get a terminal back"
    );
    assert_ne!(stat.session, nix::unistd::getsid(None).unwrap().as_raw());
    assert_eq!(stat.tty_nr, 0, "no controlling terminal");
    let fds = fd_targets(d.supervisor);
    let log = d.log.display().to_string();
    let fd = |n: usize| {
        std::fs::read_link(format!("/proc/{}/fd/{n}", d.supervisor))
            .unwrap()
            .display()
            .to_string()
    };
    assert_eq!(fd(0), "/dev/null", "{fds:?}");
    assert_eq!(fd(1), log);
    assert_eq!(fd(2), log);
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", d.supervisor)).unwrap();
    assert_eq!(cwd, std::path::Path::new("/"));
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.supervisor)).unwrap();
    assert!(status.lines().any(|l| l == "Umask:\t0027"), "{status}");
    let mode = std::fs::metadata(&d.log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

#[test]
fn workdir_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let d = Daemon::start("forking", &["--workdir", path]);
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", d.supervisor)).unwrap();
    assert_eq!(cwd, dir.path());
}
