//! Issue 11, points 3 and 4: root touches no path another user controls,
//! and executes only what only root could have written. Real daemons run
//! as root with `--user nobody`, with root-owned decoy files in a
//! temporary directory; skipped (saying so) when not root.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::signal::Signal;
use support::{DEADLINE, Daemon, wait_until};

fn nobody() -> Option<nix::unistd::User> {
    let user = nix::unistd::User::from_name("nobody").ok().flatten();
    if !nix::unistd::geteuid().is_root() || user.is_none() {
        eprintln!("skipped: needs root and a user nobody");
        return None;
    }
    user
}

/// A root-only decoy: its content, owner and mode.
fn decoy(dir: &Path) -> (std::path::PathBuf, (Vec<u8>, u32, u32)) {
    let path = dir.join("decoy");
    std::fs::write(&path, b"root only\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let facts = facts(&path);
    (path, facts)
}

fn facts(path: &Path) -> (Vec<u8>, u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (std::fs::read(path).unwrap(), m.uid(), m.mode())
}

fn open_dir(_: &mut std::process::Command, dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `forking` as root with `--user nobody` and `args`, in a fresh
/// directory prepared by `prepare`, expecting it to fail at start.
fn refused(args: &[&str], prepare: impl FnOnce(&Path)) -> String {
    let launch = Daemon::launch(
        "forking",
        &[],
        &[&["--user", "nobody"], args].concat(),
        |cmd, dir| {
            open_dir(cmd, dir);
            prepare(dir);
        },
    );
    assert!(!launch.status.success(), "started: {}", launch.stdout);
    assert!(launch.daemon.pids().is_empty());
    launch.stderr
}

#[test]
fn a_log_path_that_is_a_symlink_is_refused_at_start_and_the_decoy_kept() {
    let Some(_) = nobody() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (target, before) = decoy(dir.path());
    let log = dir.path().join("x.log");
    std::os::unix::fs::symlink(&target, &log).unwrap();
    let stderr = refused(&["--logfile", log.to_str().unwrap()], |_| {});
    assert!(
        stderr.contains(&format!(
            "refusing log file {}: it is a symbolic link",
            log.display()
        )),
        "{stderr}"
    );
    assert_eq!(facts(&target), before);
}

#[test]
fn a_pidfile_that_is_a_symlink_is_refused_and_the_decoy_kept() {
    let Some(_) = nobody() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (target, before) = decoy(dir.path());
    let pid = dir.path().join("x.pid");
    std::os::unix::fs::symlink(&target, &pid).unwrap();
    let stderr = refused(&["--pidfile", pid.to_str().unwrap()], |_| {});
    assert!(
        stderr.contains(&format!(
            "refusing pidfile {}: it is a symbolic link",
            pid.display()
        )),
        "{stderr}"
    );
    assert_eq!(facts(&target), before);
}

#[test]
fn a_pidfile_precreated_by_another_user_in_a_sticky_dir_is_not_adopted() {
    let Some(nobody) = nobody() else { return };
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let pid = shared.join("x.pid");
    std::fs::write(&pid, "1\n").unwrap();
    std::os::unix::fs::chown(&pid, Some(nobody.uid.as_raw()), None).unwrap();
    let stderr = refused(&["--pidfile", pid.to_str().unwrap()], |_| {});
    assert!(
        stderr.contains(&format!(
            "refusing pidfile {}: it is owned by uid {}",
            pid.display(),
            nobody.uid
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&pid).unwrap(), "1\n");
}

#[test]
fn a_pidfile_in_a_directory_writable_by_others_without_sticky_is_refused() {
    let Some(_) = nobody() else { return };
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let pid = open.join("x.pid");
    let stderr = refused(&["--pidfile", pid.to_str().unwrap()], |_| {});
    assert!(
        stderr.contains("writable by others and not sticky"),
        "{stderr}"
    );
    assert!(!pid.exists());
}

#[test]
fn a_log_file_swapped_for_a_symlink_before_hup_is_refused_and_the_old_kept() {
    let Some(nobody) = nobody() else { return };
    let d = Daemon::start_with(
        "preforking",
        &["--user", "nobody", "--pidfile", "x.pid"],
        open_dir,
    );
    d.wait_workers(2);
    let (target, before) = decoy(d.dir.path());
    // The service user's move: its log file becomes a symlink to the decoy.
    let moved = d.dir.path().join("moved.log");
    std::fs::rename(&d.log, &moved).unwrap();
    std::os::unix::fs::symlink(&target, &d.log).unwrap();
    let _ = std::os::unix::fs::lchown(&d.log, Some(nobody.uid.as_raw()), None);
    d.signal(Signal::SIGHUP);
    let logged = wait_until(DEADLINE, || {
        std::fs::read_to_string(&moved)
            .unwrap_or_default()
            .contains("cannot reopen log file, keeping the old one")
    });
    let text = std::fs::read_to_string(&moved).unwrap_or_default();
    assert!(logged, "{text}");
    assert!(text.contains("it is a symbolic link"), "{text}");
    assert_eq!(facts(&target), before);
    // Still serving.
    let mut c = support::Conn::open(d.port);
    assert_eq!(c.cmd("PING"), "PONG");
    c.done();
    assert_eq!(facts(&target), before);
}

#[test]
fn root_with_user_nobody_starts_rotates_on_hup_and_upgrades() {
    let Some(nobody) = nobody() else { return };
    let d = Daemon::start_with(
        "preforking",
        &["--user", "nobody", "--pidfile", "x.pid", "--binary-upgrade"],
        open_dir,
    );
    d.wait_workers(2);
    let pidfile = d.dir.path().join("x.pid");
    assert_eq!(
        std::fs::metadata(&pidfile).unwrap().uid(),
        0,
        "the pidfile stays root's"
    );
    assert_eq!(
        std::fs::metadata(&d.log).unwrap().uid(),
        nobody.uid.as_raw()
    );
    // Found before the rename: the harness knows processes by their log.
    let spawner = d.spawner().expect("spawner");
    let old = d.dir.path().join("old.log");
    std::fs::rename(&d.log, &old).unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_log("log file reopened");
    assert_eq!(
        std::fs::metadata(&d.log).unwrap().uid(),
        nobody.uid.as_raw()
    );
    // The spawner switched to the new file through the descriptor it was sent.
    assert!(wait_until(DEADLINE, || std::fs::read_link(format!(
        "/proc/{spawner}/fd/2"
    ))
    .is_ok_and(|t| t == d.log)));
    d.signal(Signal::SIGUSR2);
    d.wait_log("binary upgrade: the new supervisor is ready, draining");
    let mut c = support::Conn::open(d.port);
    assert_eq!(c.cmd("PING"), "PONG");
    c.done();
    let _ = d.pids();
}

#[test]
fn an_upgrade_binary_replaced_by_a_script_of_nobody_is_refused_and_never_runs() {
    let Some(nobody) = nobody() else { return };
    // Not under /tmp: a world-writable directory on the way is a refusal
    // of its own; this test is about the file.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("preforking");
    std::fs::copy(support::example("preforking"), &bin).unwrap();
    let marker = dir.path().join("ran");
    let run_copy = format!("shift; exec {} \"$@\"", bin.display());
    let d = Daemon::start_wrapped(
        "preforking",
        &["/bin/sh", "-c", &run_copy, "sh"],
        &["--user", "nobody", "--binary-upgrade"],
        open_dir,
    );
    d.wait_workers(2);
    // The service user's move: a script of its own at the binary's path.
    let script = dir.path().join("script");
    std::fs::write(&script, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&script, Some(nobody.uid.as_raw()), None).unwrap();
    std::fs::rename(&script, &bin).unwrap();
    d.signal(Signal::SIGUSR2);
    d.wait_log("binary upgrade failed, still serving");
    let text = d.log_text();
    assert!(
        text.contains(&format!(
            "refusing upgrade binary {}: it is owned by uid {}, not by a user allowed",
            bin.display(),
            nobody.uid
        )),
        "{text}"
    );
    let mut c = support::Conn::open(d.port);
    assert_eq!(c.cmd("PING"), "PONG");
    c.done();
    assert!(support::exists(d.supervisor));
    assert!(!marker.exists(), "the script ran");
}
