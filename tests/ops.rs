//! Operations: the pidfile and the privilege drop.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use support::{DEADLINE, Daemon, run_failing, wait_until};

fn uid_of(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap() // effective uid
}

#[test]
fn the_pidfile_holds_the_supervisor_refuses_a_second_instance_and_goes_at_exit() {
    let d = Daemon::start("forking", &["--pidfile", "daemon.pid"]);
    let pidfile = d.dir.path().join("daemon.pid");
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap(),
        format!("{}\n", d.supervisor)
    );
    let path = pidfile.to_str().unwrap();
    let (code, stderr) = run_failing(
        "forking",
        &["0", "--pidfile", path, "--logfile", "/tmp/ignored.log"],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another instance is running: pidfile {path} is locked by pid {}",
            d.supervisor
        )),
        "{stderr}"
    );
    // The second instance did not truncate it.
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap(),
        format!("{}\n", d.supervisor)
    );
    d.signal(Signal::SIGTERM);
    assert!(matches!(d.wait_exit(), WaitStatus::Exited(_, 0)));
    assert!(!pidfile.exists(), "pidfile left behind");
}

#[test]
fn a_stale_pidfile_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.pid");
    std::fs::write(&stale, "999999\n").unwrap();
    let d = Daemon::start("forking", &["--pidfile", stale.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&stale).unwrap(),
        format!("{}\n", d.supervisor)
    );
}

fn as_root_with_nobody() -> bool {
    let ok = nix::unistd::geteuid().is_root()
        && nix::unistd::User::from_name("nobody")
            .ok()
            .flatten()
            .is_some();
    if !ok {
        eprintln!("skipped: needs root and a user nobody");
    }
    ok
}

fn open_dir(cmd: &mut std::process::Command, dir: &std::path::Path) {
    let _ = cmd;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn workers_drop_privileges_and_the_supervisor_keeps_them_by_default() {
    if !as_root_with_nobody() {
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let d = Daemon::start_with(
        "preforking",
        &["--user", "nobody", "--requests", "0"],
        open_dir,
    );
    let workers = d.wait_workers(2);
    assert_eq!(uid_of(d.supervisor), 0);
    assert_eq!(uid_of(d.spawner().unwrap()), nobody.uid.as_raw());
    for w in &workers {
        assert_eq!(uid_of(*w), nobody.uid.as_raw(), "worker {w}");
        let groups = std::fs::read_to_string(format!("/proc/{w}/status")).unwrap();
        assert!(
            !groups
                .lines()
                .any(|l| l.starts_with("Groups:") && l.split_whitespace().any(|g| g == "0")),
            "{groups}"
        );
    }
    // The log file belongs to the user: workers reopen it on HUP.
    assert_eq!(
        std::fs::metadata(&d.log).unwrap().uid(),
        nobody.uid.as_raw()
    );
    let old = d.log.with_extension("log.old");
    std::fs::rename(&d.log, &old).unwrap();
    d.signal(Signal::SIGHUP);
    let mut c = d.conn();
    assert_eq!(c.cmd("PING"), "PONG");
    c.done();
    assert!(
        wait_until(DEADLINE, || d.log_text().contains("role: worker")),
        "a worker could not write the reopened log\n{}",
        d.report()
    );
}

#[test]
fn every_process_drops_privileges_with_scope_all() {
    if !as_root_with_nobody() {
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let d = Daemon::start_with(
        "forking",
        &["--user", "nobody", "--privileges", "all"],
        open_dir,
    );
    assert_eq!(uid_of(d.supervisor), nobody.uid.as_raw());
    let mut c = d.conn();
    assert_eq!(
        c.cmd("PID").parse::<i32>().map(uid_of).unwrap(),
        nobody.uid.as_raw()
    );
    c.done();
}

#[test]
fn an_unknown_user_or_group_fails_before_anything_starts() {
    let (code, stderr) = run_failing("forking", &["0", "--user", "no-such-user-here"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("unknown user \"no-such-user-here\""),
        "{stderr}"
    );
    let (code, stderr) = run_failing("forking", &["0", "--group", "no-such-group-here"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("unknown group \"no-such-group-here\""),
        "{stderr}"
    );
}

#[test]
fn a_non_root_daemon_may_name_itself_but_not_another_user() {
    if !as_root_with_nobody() {
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let group = nix::unistd::Group::from_gid(nobody.gid)
        .unwrap()
        .expect("nobody's group")
        .name;
    let as_nobody = |cmd: &mut std::process::Command, dir: &std::path::Path| {
        use std::os::unix::process::CommandExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        cmd.uid(nobody.uid.as_raw()).gid(nobody.gid.as_raw());
    };
    // Already the user and group asked for: nothing to drop, it runs.
    let d = Daemon::start_with(
        "preforking",
        &["--user", "nobody", "--group", &group, "--requests", "0"],
        as_nobody,
    );
    let workers = d.wait_workers(2);
    assert_eq!(uid_of(d.supervisor), nobody.uid.as_raw());
    for w in &workers {
        assert_eq!(uid_of(*w), nobody.uid.as_raw(), "worker {w}");
    }
    drop(d);
    // Another user: refused before anything starts. In the foreground, so
    // that a daemon started by mistake cannot detach: it is killed at the
    // deadline (its workers die with it).
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(support::example("preforking"));
    cmd.args(["0", "--foreground", "--user", "root"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    as_nobody(&mut cmd, dir.path());
    let mut child = cmd.spawn().expect("run the example");
    let status = support::wait_child(&mut child, DEADLINE);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_ne!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("user and group can only be changed when started as root"),
        "{stderr}"
    );
}
