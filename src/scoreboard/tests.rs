use super::*;
use crate::state::SlotState;

#[test]
fn allocate_free_and_states() {
    let board = Scoreboard::new(3).unwrap();
    assert_eq!(board.slots_line(), "Slots [       ]");
    let a = board.allocate().unwrap();
    let b = board.allocate().unwrap();
    assert_eq!((a, b), (SlotId(0), SlotId(1)));
    board.set_pid(a, 42);
    board.set_state(a, SlotState::Req);
    board.set_state(b, SlotState::Wait);
    assert_eq!(board.slots_line(), "Slots [ r w   ]");
    assert_eq!(board.count_request(a), 1);
    assert_eq!(board.snapshot(a).pid, 42);
    board.free(a);
    assert_eq!(board.state(a), SlotState::Empty);
    assert_eq!(board.pid(a), 0);
    let c = board.allocate().unwrap();
    assert_eq!(c, a, "a freed slot is reused");
    assert_eq!(
        board.requests(c),
        0,
        "a reused slot starts at zero requests"
    );
    board.allocate().unwrap();
    assert_eq!(board.allocate(), None, "full");
    let tally = board.tally();
    assert_eq!(tally[SlotState::Forking as usize], 2);
    assert_eq!(tally[SlotState::Wait as usize], 1);
    assert_eq!(board.counters().requests, 1);
}

#[test]
fn shared_across_fork() {
    // The mapping must be shared, not copied, across fork. The child
    // does nothing but atomic stores and _exit (async-signal-safe).
    let board = Scoreboard::new(2).unwrap();
    let slot = board.allocate().unwrap();
    let pid = crate::process::test_fork(|| {
        board.set_pid(slot, 7);
        board.set_state(slot, SlotState::Long);
    });
    assert!(pid > 0);
    assert_eq!(board.state(slot), SlotState::Long);
    assert_eq!(board.pid(slot), 7);
}

/// Forks a child that confines itself to slot 1 of `board`, writes its own
/// slot, checks that `mprotect(PROT_WRITE)` on the header is refused, then
/// does `then`; returns how the child ended. The child only makes system
/// calls and atomic stores, then `_exit`s.
fn confined_child(board: &Scoreboard, then: fn(&Scoreboard)) -> nix::sys::wait::WaitStatus {
    use nix::sys::mman::{ProtFlags, mprotect};
    use nix::unistd::ForkResult;
    // SAFETY: test-only; the child makes system calls and atomic stores
    // (no lock, no allocation on the success path) and `_exit`s.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        ForkResult::Child => {
            let code = (|| {
                if board.confine_to(SlotId(1)).is_err() {
                    return 10;
                }
                board.set_state(SlotId(1), SlotState::Long);
                board.count_own(SlotId(1), SlotCounter::Retired);
                // SAFETY: asks only for a protection change of the board's
                // first page; the kernel refuses it (no VM_MAYWRITE).
                let refused = unsafe {
                    mprotect(
                        board.map.base.cast(),
                        board.map.page,
                        ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                    )
                };
                if refused != Err(nix::errno::Errno::EACCES) {
                    return 11;
                }
                if board.fd(&board.map.rw).is_some() || board.fd(&board.map.ro).is_some() {
                    return 12;
                }
                then(board);
                0
            })();
            // SAFETY: ends the test child at once.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => nix::sys::wait::waitpid(child, None).expect("waitpid"),
    }
}

#[test]
fn a_confined_worker_writes_its_own_slot_and_faults_on_any_other_page() {
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    let board = Scoreboard::new(3).unwrap();
    board.init(SlotId(1));
    match confined_child(&board, |_| {}) {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("own slot: {other:?}"),
    }
    assert_eq!(
        board.state(SlotId(1)),
        SlotState::Long,
        "its own write is seen"
    );
    assert_eq!(board.counters().retired, 1);
    match confined_child(&board, |b| b.set_state(SlotId(0), SlotState::Req)) {
        WaitStatus::Signaled(_, Signal::SIGSEGV, _) => {}
        other => panic!("another slot: {other:?}"),
    }
    assert_eq!(
        board.state(SlotId(0)),
        SlotState::Empty,
        "another slot unchanged"
    );
    match confined_child(&board, |b| b.count(Counter::Exited)) {
        WaitStatus::Signaled(_, Signal::SIGSEGV, _) => {}
        other => panic!("header: {other:?}"),
    }
    assert_eq!(board.counters().exited, 0, "header unchanged");
    // The parent's own view stays writable everywhere.
    board.set_state(SlotId(0), SlotState::Wait);
    board.count(Counter::Exited);
    assert_eq!(board.counters().exited, 1);
}

#[test]
fn counts_survive_the_fold_of_a_freed_slot_once() {
    let board = Scoreboard::new(2).unwrap();
    let a = board.allocate().unwrap();
    board.count_own(a, SlotCounter::Spawned);
    board.count_requests(a, 5);
    board.count_own(a, SlotCounter::Connections);
    board.count_own(a, SlotCounter::Retired);
    let before = board.counters();
    assert_eq!(
        (
            before.spawned,
            before.requests,
            before.connections,
            before.retired
        ),
        (1, 5, 1, 1)
    );
    board.free(a);
    assert_eq!(
        board.counters(),
        before,
        "free folds, loses and doubles nothing"
    );
    board.free(a);
    let again = board.allocate().unwrap();
    assert_eq!(again, a);
    assert_eq!(
        board.counters(),
        before,
        "a second fold and a reuse add nothing"
    );
    assert_eq!(board.requests(a), 0);
}

#[test]
fn totals_never_go_back_while_slots_are_folded() {
    let board = Scoreboard::new(4).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (board, stop) = (board.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = board.counters().requests;
                assert!(now >= last, "total went from {last} to {now}");
                last = now;
            }
            last
        })
    };
    for round in 0..20_000u64 {
        let slot = SlotId((round % 4) as usize);
        board.init(slot);
        board.count_requests(slot, 1);
        board.free(slot);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert!(seen <= 20_000);
    assert_eq!(board.counters().requests, 20_000);
}

/// Measures (run by hand, see book/src/security.md): what `confine_to`
/// costs in a new child, and the RssShmem a census of every slot adds.
/// `cargo test --release --lib scoreboard::tests::measure -- --ignored --nocapture`
#[test]
#[ignore]
fn measure_confine_and_census() {
    fn shmem_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssShmem:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
    for slots in [64usize, 2_000, 5_000, 10_000] {
        let board = Scoreboard::new(slots).unwrap();
        let (rx, tx) = nix::unistd::pipe().unwrap();
        let mut ns = Vec::new();
        for _ in 0..200 {
            use nix::unistd::ForkResult;
            // SAFETY: test-only; the child reads the clock, remaps, writes
            // 8 bytes to a pipe and `_exit`s.
            match unsafe { nix::unistd::fork() }.unwrap() {
                ForkResult::Child => {
                    let t = std::time::Instant::now();
                    let ok = board.confine_to(SlotId(slots / 2)).is_ok();
                    let d = if ok {
                        t.elapsed().as_nanos() as u64
                    } else {
                        u64::MAX
                    };
                    let _ = nix::unistd::write(&tx, &d.to_ne_bytes());
                    // SAFETY: ends the test child.
                    unsafe { libc::_exit(0) }
                }
                ForkResult::Parent { child } => {
                    let mut b = [0u8; 8];
                    nix::unistd::read(&rx, &mut b).unwrap();
                    nix::sys::wait::waitpid(child, None).unwrap();
                    ns.push(u64::from_ne_bytes(b));
                }
            }
        }
        ns.sort_unstable();
        let before = shmem_kib();
        let t = std::time::Instant::now();
        let census = board.snapshots().len() + board.counters().requests as usize;
        let first = t.elapsed();
        let t = std::time::Instant::now();
        let _ = board.snapshots().len() + board.counters().requests as usize;
        let again = t.elapsed();
        println!(
            "slots {slots}: confine p50 {} us p99 {} us; census RssShmem +{} KiB (old layout {} KiB); first census {:?}, next {:?} ({census})",
            ns[ns.len() / 2] as f64 / 1000.0,
            ns[ns.len() * 99 / 100] as f64 / 1000.0,
            shmem_kib() - before,
            (192 + 64 * slots).div_ceil(1024),
            first,
            again,
        );
    }
}
