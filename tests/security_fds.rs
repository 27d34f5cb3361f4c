//! Issue 11, point 5: descriptor hygiene. What the launching process had
//! open reaches no process of the daemon unless the application declared
//! it, and a foreign child started through `spawn_foreign_child` does not
//! outlive a SIGKILLed supervisor.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{
    DEADLINE, Daemon, comm, exists, ppid, proc_state, run_failing, wait_pid, wait_until,
};

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

/// The daemon's directory must be reachable by `nobody` (its log file).
fn open_dir(_: &mut std::process::Command, dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A root-owned file with mode 0600 and known content.
fn root_only_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A process's descriptors: (number, target).
fn fds_of(pid: i32) -> Vec<(i32, String)> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|err| panic!("read /proc/{pid}/fd: {err}"));
    dir.flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect()
}

/// Kills and reaps, on drop, a process the test found (a foreign child,
/// which the test process inherits as subreaper once the daemon is gone),
/// if it still is the program it was.
struct Leftover {
    pid: i32,
    comm: String,
}

impl Drop for Leftover {
    fn drop(&mut self) {
        if exists(self.pid) && comm(self.pid) == self.comm {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        let _ = wait_pid(self.pid, std::time::Duration::from_secs(5));
    }
}

/// Gone, or a zombie waiting for whoever inherited it.
fn dead(pid: i32) -> bool {
    matches!(proc_state(pid), None | Some('Z'))
}

/// The child of `parent` whose command line is `cmdline` (NUL-separated
/// arguments joined by spaces).
fn child_running(parent: i32, cmdline: &str) -> Option<i32> {
    procfs::process::all_processes()
        .ok()?
        .flatten()
        .filter(|p| p.stat().is_ok_and(|s| s.ppid == parent && s.state != 'Z'))
        .find(|p| p.cmdline().is_ok_and(|c| c.join(" ") == cmdline))
        .map(|p| p.pid)
}

#[test]
fn a_descriptor_the_launcher_held_reaches_no_process_and_a_declared_one_every_process() {
    if !as_root_with_nobody() {
        return;
    }
    let decoys = tempfile::tempdir().unwrap();
    let decoy = root_only_file(decoys.path(), "decoy", "root only\n");
    let declared = root_only_file(decoys.path(), "declared", "kept\n");
    // The launching shell holds the decoy on 7 and the declared file on 9,
    // both inheritable, as `7<file` in a shell script would.
    let wrapper = format!(
        "exec \"$0\" \"$@\" 7<'{}' 9<'{}'",
        decoy.display(),
        declared.display()
    );
    let d = Daemon::start_wrapped(
        "preforking",
        &["sh", "-c", &wrapper],
        &[
            "--user",
            "nobody",
            "--keep-fd",
            "9",
            "--start-children",
            "2",
        ],
        open_dir,
    );
    let workers = d.wait_workers(2);
    let spawner = d.spawner().expect("a spawner");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let decoy_text = decoy.display().to_string();
    let declared_text = declared.display().to_string();
    let processes = [("supervisor", d.supervisor), ("spawner", spawner)]
        .into_iter()
        .chain(workers.iter().map(|&w| ("worker", w)));
    for (role, pid) in processes {
        // The number 7 itself is free once closed, and the crate's own
        // descriptors (a pidfd, say) take it: what must not be there is any
        // descriptor to the decoy.
        let fds = fds_of(pid);
        assert!(
            !fds.iter().any(|(_, t)| *t == decoy_text),
            "the {role} {pid} holds the launcher's descriptor: {fds:?}\n{}",
            d.report()
        );
        assert!(
            fds.contains(&(9, declared_text.clone())),
            "the {role} {pid} lost the declared descriptor 9: {fds:?}\n{}",
            d.report()
        );
        if role == "worker" {
            let uid = procfs::process::Process::new(pid).unwrap().uid().unwrap();
            assert_eq!(uid, nobody.uid.as_raw(), "worker {pid} runs as nobody");
        }
    }
    // The operator can see what was dropped, and which file it was.
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("closed descriptors inherited from the launching process"))
        .unwrap_or_else(|| panic!("nothing logged about the closed descriptor\n{log}"));
    assert!(line.contains(&format!("7 ({decoy_text})")), "{line}");
    assert!(!line.contains(&declared_text), "{line}");
    // And the pool still serves.
    let mut c = d.conn();
    assert_eq!(c.cmd("PING"), "PONG");
    c.done();
    let meta = std::fs::metadata(&decoy).unwrap();
    assert_eq!(
        (
            meta.permissions().mode() & 0o777,
            std::os::unix::fs::MetadataExt::uid(&meta)
        ),
        (0o600, 0)
    );
    assert_eq!(std::fs::read_to_string(&decoy).unwrap(), "root only\n");
}

#[test]
fn a_keep_fd_that_is_negative_or_not_open_is_refused_before_anything_starts() {
    for (fd, message) in [
        ("-1", "keep_fd: descriptor -1 is negative"),
        ("77", "keep_fd: descriptor 77 is not open"),
    ] {
        let (code, stderr) = run_failing("preforking", &["0", "--keep-fd", fd]);
        assert_eq!(code, 2, "--keep-fd {fd}: {stderr}");
        assert!(stderr.contains(message), "--keep-fd {fd}: {stderr}");
    }
}

#[test]
fn a_supervisors_foreign_child_dies_when_the_supervisor_is_killed() {
    let d = Daemon::start("forking", &["--foreign-child", "exec sleep 1000"]);
    let mut found = None;
    assert!(
        wait_until(DEADLINE, || {
            found = child_running(d.supervisor, "sleep 1000");
            found.is_some()
        }),
        "no foreign child\n{}",
        d.report()
    );
    let pid = found.unwrap();
    let _guard = Leftover {
        pid,
        comm: "sleep".to_owned(),
    };
    // Its fork execs at once: not a fork of the supervisor's runtime.
    d.signal(Signal::SIGUSR2);
    let peek = || {
        d.log_text()
            .lines()
            .find(|l| l.contains("forks since runtime start"))
            .map(str::to_owned)
    };
    assert!(wait_until(DEADLINE, || peek().is_some()), "{}", d.report());
    let line = peek().unwrap();
    assert!(line.ends_with(" 0 forks since runtime start"), "{line}");
    d.signal(Signal::SIGKILL);
    assert!(
        wait_until(DEADLINE, || dead(pid)),
        "the foreign child {pid} outlived the SIGKILLed supervisor\n{}",
        d.report()
    );
}

#[test]
fn a_workers_foreign_child_dies_with_its_worker_when_the_supervisor_is_killed() {
    let d = Daemon::start(
        "preforking",
        &[
            "--start-children",
            "1",
            "--worker-foreign-child",
            "exec sleep 1001",
        ],
    );
    let mut found = None;
    assert!(
        wait_until(DEADLINE, || {
            found = d
                .workers()
                .into_iter()
                .find_map(|w| child_running(w, "sleep 1001").map(|pid| (w, pid)));
            found.is_some()
        }),
        "no worker's foreign child\n{}",
        d.report()
    );
    let (worker, pid) = found.unwrap();
    let _guard = Leftover {
        pid,
        comm: "sleep".to_owned(),
    };
    assert_eq!(ppid(pid), worker);
    d.signal(Signal::SIGKILL);
    assert!(
        wait_until(DEADLINE, || dead(worker) && dead(pid)),
        "worker {worker} ({:?}) or its foreign child {pid} ({:?}) outlived the supervisor\n{}",
        proc_state(worker),
        proc_state(pid),
        d.report()
    );
}
