//! Issue 11, point 2: a worker can write only its own scoreboard slot.
//! A real pre-forking daemon (as root with `--user nobody`, and as plain
//! root): each worker maps the board read-only but for its own slot page
//! and holds no descriptor of the board's memfd; a worker that writes
//! another slot or the header dies by SIGSEGV, the supervisor logs it, the
//! other workers keep serving and 20 clients after are all served.

mod support;

use support::{DEADLINE, Daemon, exists, fd_targets, one_round, wait_until};

const MEMFD: &str = "memfd:actix-scoreboard";

fn page() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .unwrap()
        .unwrap() as u64
}

/// The board's lines of `/proc/<pid>/maps`: (start, end, perms, offset).
fn board_maps(pid: i32) -> Vec<(u64, u64, String, u64)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter(|l| l.contains(MEMFD))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, b) = f[0].split_once('-').unwrap();
            (
                u64::from_str_radix(a, 16).unwrap(),
                u64::from_str_radix(b, 16).unwrap(),
                f[1].to_owned(),
                u64::from_str_radix(f[2], 16).unwrap(),
            )
        })
        .collect()
}

fn as_root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (the daemon runs as root, workers as nobody)");
        return false;
    }
    if nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .is_none()
    {
        eprintln!("skipped: no user nobody");
        return false;
    }
    true
}

/// Starts the daemon, checks the workers' view of the board, has one
/// worker write `target` (a slot number, or HEADER), and checks the
/// aftermath.
fn attack(user: bool, target: impl Fn(usize) -> String) {
    let mut args = vec![
        "--requests",
        "0",
        "--start-children",
        "3",
        "--fault-commands",
    ];
    if user {
        args.extend(["--user", "nobody"]);
    }
    let d = Daemon::start("preforking", &args);
    let workers = d.wait_workers(3);
    // The supervisor maps the whole board read-write.
    let sup = board_maps(d.supervisor);
    assert!(
        !sup.is_empty() && sup.iter().all(|m| m.2 == "rw-s"),
        "supervisor: {sup:?}"
    );
    let mut c = d.conn();
    let pid: i32 = c.cmd("PID").parse().unwrap();
    let slot: usize = c.cmd("SLOT").parse().unwrap();
    // Every worker: one writable page, its own slot's; the rest read-only,
    // covering the same range as the supervisor's; no memfd descriptor.
    for &w in &workers {
        let maps = board_maps(w);
        let rw: Vec<_> = maps.iter().filter(|m| m.2 != "r--s").collect();
        assert_eq!(rw.len(), 1, "worker {w}: {maps:?}");
        assert_eq!(rw[0].2, "rw-s", "worker {w}: {maps:?}");
        assert_eq!(rw[0].1 - rw[0].0, page(), "worker {w}: {maps:?}");
        assert_ne!(rw[0].3, 0, "worker {w} can write the header: {maps:?}");
        assert_eq!(
            maps.first().map(|m| m.0),
            sup.first().map(|m| m.0),
            "same address"
        );
        assert_eq!(maps.last().map(|m| m.1), sup.last().map(|m| m.1));
        let fds: Vec<_> = fd_targets(w)
            .into_iter()
            .filter(|t| t.contains("actix-scoreboard"))
            .collect();
        assert!(fds.is_empty(), "worker {w} holds {fds:?}");
    }
    let own = board_maps(pid).into_iter().find(|m| m.2 == "rw-s").unwrap();
    assert_eq!(
        own.3,
        (1 + slot as u64) * page(),
        "the own page is its slot's"
    );
    // The attack: the connection dies with the worker.
    c.set_timeout(DEADLINE);
    c.send(&format!("SCRIBBLE {}", target(slot)));
    assert!(
        !matches!(c.line().as_deref(), Ok("OK")),
        "the write went through"
    );
    assert!(
        wait_until(DEADLINE, || !exists(pid)),
        "worker {pid} survived\n{}",
        d.report()
    );
    d.wait_log("SIGSEGV");
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("SIGSEGV"))
        .unwrap_or_default();
    assert!(line.contains(&format!("{pid}")), "{line}");
    // The other workers live on and serve (the pool refills only below
    // min_spare).
    for &w in workers.iter().filter(|&&w| w != pid) {
        assert!(exists(w), "worker {w} died too\n{}", d.report());
    }
    for i in 0..20 {
        one_round(d.port).unwrap_or_else(|err| panic!("client {i}: {err}\n{}", d.report()));
    }
    for &w in workers.iter().filter(|&&w| w != pid) {
        assert!(exists(w), "worker {w} died\n{}", d.report());
    }
}

#[test]
fn as_nobody_a_worker_writing_another_slot_dies_by_sigsegv_and_the_pool_goes_on() {
    if !as_root() {
        return;
    }
    attack(true, |own| ((own + 1) % 3).to_string());
}

#[test]
fn as_root_a_worker_writing_another_slot_dies_by_sigsegv_and_the_pool_goes_on() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    attack(false, |own| ((own + 2) % 3).to_string());
}

#[test]
fn a_worker_writing_the_header_dies_by_sigsegv_and_the_pool_goes_on() {
    if !as_root() {
        return;
    }
    attack(true, |_| "HEADER".to_owned());
}
