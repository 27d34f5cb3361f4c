//! The shape of the spawner's fork (DESIGN.md section 3): the double fork the
//! crate uses today against one raw `clone(CLONE_PARENT)`.
//!
//! ```text
//! cargo bench --bench fork_shape
//! ```
//!
//! The bench's `main` plays the supervisor: it makes itself a child
//! subreaper, then, while it still has one thread, forks a spawner. The
//! spawner (one thread, no runtime, as in the crate) runs `N` iterations of
//! each shape, in blocks of `BLOCK`, rotating the order of the shapes from
//! block to block so that the machine's noise falls on all of them alike:
//!
//! - floor: `fork`, the child `_exit`s, the spawner `waitpid`s it;
//! - (a) double fork: the spawner forks an intermediate, which forks the
//!   worker and `_exit`s; the spawner `waitpid`s the intermediate; the worker
//!   spins on `getppid()` until it is the supervisor (re-parenting), then
//!   writes one byte to a pipe and `_exit`s;
//! - (b) `clone(CLONE_PARENT | SIGCHLD)` with stack 0 (fork-like): the worker
//!   checks that `getppid()` is the supervisor, writes one byte, `_exit`s.
//!
//! Two times per iteration, CLOCK_MONOTONIC, from just before the first fork
//! call: "spawner free" (the fork call(s), and for (a) the `waitpid` of the
//! intermediate, have returned: the spawner could serve the next request)
//! and "end to end" (the spawner has read the worker's byte; for the floor,
//! `waitpid` has returned). The supervisor reaps every worker in a
//! `waitpid(-1, WNOHANG)` loop woken by SIGCHLD.
//!
//! Then the spawner runs a set of probes in a glibc-`fork` child and in a
//! raw-`clone(CLONE_PARENT)` child, to show what a raw clone leaves behind
//! (no atfork handlers, glibc's cached TID still the spawner's, no robust
//! futex list) and whether ordinary Rust and tokio code still works there.
//! One probe pins the child's own thread with `pthread_setaffinity_np`; the
//! spawner then checks (and restores) its own CPU affinity.
//!
//! Everything is bounded: the supervisor kills whatever is still alive
//! `DEADLINE` after start, and reaps until it has no child left.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::prctl;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::{ForkResult, Pid, getpid, getppid, pipe2};

/// Iterations of each shape.
const N: usize = 2000;
/// Iterations of one shape in a row.
const BLOCK: usize = 100;
/// Discarded iterations of each shape before measuring.
const WARMUP: usize = 50;
/// The supervisor kills every child still alive this long after start.
const DEADLINE: Duration = Duration::from_secs(25);
/// How long the spawner waits for one probe child's report.
const PROBE_TIMEOUT: Duration = Duration::from_secs(6);

/// Set by the `pthread_atfork` child handler the spawner registers.
static ATFORK_CHILD_RAN: AtomicBool = AtomicBool::new(false);
/// Set by the SIGUSR1 handler of the `raise` probe.
static USR1_SEEN: AtomicBool = AtomicBool::new(false);

extern "C" fn atfork_child() {
    ATFORK_CHILD_RAN.store(true, Ordering::SeqCst);
}

extern "C" fn on_usr1(_: libc::c_int) {
    USR1_SEEN.store(true, Ordering::SeqCst);
}

fn main() {
    // The supervisor: it must still have one thread when it forks the
    // spawner, as `run` requires in the crate.
    prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let supervisor = getpid();
    // Blocked, SIGCHLD stays pending (even with the default disposition), so
    // the reaping loop below can wait for it with `sigtimedwait`.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), None).expect("block SIGCHLD");
    let start = Instant::now();
    let _ = std::io::stdout().flush();
    // SAFETY: the bench has one thread here and has built no runtime; the
    // child is a single-threaded copy that only runs `spawner`.
    match unsafe { nix::unistd::fork() }.expect("fork the spawner") {
        ForkResult::Child => {
            let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&chld), None);
            let _ = prctl::set_pdeathsig(Signal::SIGKILL);
            let code = if getppid() == supervisor {
                spawner(supervisor.as_raw())
            } else {
                1
            };
            let _ = std::io::stdout().flush();
            // SAFETY: ends the spawner without running the supervisor's
            // destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => supervise(child, start, &chld),
    }
}

/// Reaps every child until none is left; kills what is alive at `DEADLINE`.
fn supervise(spawner: Pid, start: Instant, chld: &SigSet) {
    let (mut reaped, mut abnormal, mut killed) = (0u64, 0u64, 0u64);
    let mut spawner_status = None;
    let mut deadline_passed = false;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => {
                reaped += 1;
                if status.pid() == Some(spawner) {
                    spawner_status = Some(status);
                } else if !matches!(status, WaitStatus::Exited(_, 0)) {
                    abnormal += 1;
                }
                continue;
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => break,
            Err(err) => panic!("waitpid: {err}"),
        }
        if !deadline_passed && start.elapsed() > DEADLINE {
            deadline_passed = true;
            killed = kill_children();
            eprintln!("supervisor: deadline passed, killed {killed} children");
        }
        let timeout = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        // SAFETY: `chld` is a valid signal set, the info pointer may be null
        // and `timeout` outlives the call.
        unsafe { libc::sigtimedwait(chld.as_ref(), std::ptr::null_mut(), &timeout) };
    }
    println!(
        "\nsupervisor: reaped {reaped} processes (spawner: {spawner_status:?}), \
         {abnormal} other abnormal exits, {killed} killed at the deadline, none left \
         (waitpid: ECHILD); total {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// SIGKILLs every child of this (single-threaded) process.
fn kill_children() -> u64 {
    let me = std::process::id();
    let list =
        std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap_or_default();
    let mut n = 0;
    for pid in list
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        if nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            n += 1;
        }
    }
    n
}

/// CLOCK_MONOTONIC in nanoseconds.
fn now() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// `clone` without a new stack: like `fork`, but skipping everything glibc's
/// `fork` does around the system call. x86_64 and aarch64 argument order:
/// flags, stack, parent_tid, child_tid, tls (all but flags 0 here).
fn raw_clone(flags: libc::c_int) -> Result<Option<Pid>, Errno> {
    let flags = (flags | libc::SIGCHLD) as libc::c_long;
    // SAFETY: without CLONE_VM the child gets a copy of the address space and
    // goes on, on its copy of the stack, from this return, as after `fork`;
    // no pointer is passed to the kernel.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// Ends a forked or cloned child at once.
fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` runs no destructor or atexit handler of the state the
    // child copied from the spawner.
    unsafe { libc::_exit(code) }
}

fn write_byte(fd: RawFd, byte: u8) {
    // SAFETY: writes one byte from a live local to an open descriptor.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Floor,
    Double,
    Clone,
}

const SHAPES: [Shape; 3] = [Shape::Floor, Shape::Double, Shape::Clone];

/// One iteration: (spawner free, end to end) in ns, and the worker's byte.
fn iteration(shape: Shape, supervisor: i32, rd: &mut std::fs::File, wr: RawFd) -> (u64, u64, u8) {
    let t0 = now();
    let free;
    match shape {
        Shape::Floor => {
            // SAFETY: the spawner has one thread and no runtime; the child
            // only `_exit`s.
            let child = match unsafe { nix::unistd::fork() }.expect("fork") {
                ForkResult::Child => exit_now(0),
                ForkResult::Parent { child } => child,
            };
            free = now();
            while let Err(Errno::EINTR) = waitpid(child, None) {}
            return (free - t0, now() - t0, 1);
        }
        Shape::Double => {
            // SAFETY: the spawner has one thread and no runtime; the
            // intermediate only forks again and `_exit`s.
            match unsafe { nix::unistd::fork() }.expect("fork") {
                ForkResult::Child => {
                    // SAFETY: the intermediate is a single-threaded copy of
                    // the spawner; the worker runs only `double_fork_worker`.
                    match unsafe { nix::unistd::fork() } {
                        Ok(ForkResult::Child) => double_fork_worker(supervisor, wr),
                        Ok(ForkResult::Parent { .. }) => exit_now(0),
                        Err(_) => {
                            write_byte(wr, 0);
                            exit_now(1)
                        }
                    }
                }
                ForkResult::Parent { child } => {
                    while let Err(Errno::EINTR) = waitpid(child, None) {}
                }
            }
        }
        Shape::Clone => {
            if raw_clone(libc::CLONE_PARENT).expect("clone").is_none() {
                write_byte(wr, u8::from(getppid().as_raw() == supervisor));
                exit_now(0)
            }
        }
    }
    free = now();
    let mut byte = [0u8];
    rd.read_exact(&mut byte).expect("read the worker's byte");
    (free - t0, now() - t0, byte[0])
}

/// The worker of the double fork: waits until it has been re-parented to the
/// supervisor, then reports `1 + spins` (at most 255), or 0 if it never was.
fn double_fork_worker(supervisor: i32, wr: RawFd) -> ! {
    let mut spins = 0u64;
    while getppid().as_raw() != supervisor {
        if spins > 10_000_000 || getppid().as_raw() == 1 {
            write_byte(wr, 0);
            exit_now(1);
        }
        spins += 1;
        std::thread::yield_now();
    }
    write_byte(wr, (1 + spins.min(254)) as u8);
    exit_now(0)
}

struct Samples {
    free: Vec<u64>,
    done: Vec<u64>,
    bytes: Vec<u8>,
}

fn spawner(supervisor: i32) -> i32 {
    let (rd, wr) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
    let mut rd = std::fs::File::from(rd);
    let wr_fd = wr.as_raw_fd();
    let mut samples: Vec<Samples> = SHAPES
        .iter()
        .map(|_| Samples {
            free: Vec::with_capacity(N),
            done: Vec::with_capacity(N),
            bytes: Vec::with_capacity(N),
        })
        .collect();
    for _ in 0..WARMUP {
        for shape in SHAPES {
            iteration(shape, supervisor, &mut rd, wr_fd);
        }
    }
    let started = Instant::now();
    for block in 0..N / BLOCK {
        for k in 0..SHAPES.len() {
            let i = (block + k) % SHAPES.len();
            for _ in 0..BLOCK {
                let (free, done, byte) = iteration(SHAPES[i], supervisor, &mut rd, wr_fd);
                samples[i].free.push(free);
                samples[i].done.push(done);
                samples[i].bytes.push(byte);
            }
        }
    }
    drop(wr);
    report(&mut samples, started.elapsed());
    probes(supervisor);
    0
}

fn stats(v: &mut [u64]) -> [f64; 4] {
    v.sort_unstable();
    let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0;
    [pct(0.5), pct(0.9), pct(0.99), mean]
}

fn report(samples: &mut [Samples], took: Duration) {
    let names = [
        "floor fork+_exit+waitpid",
        "(a) double fork",
        "(b) clone CLONE_PARENT",
    ];
    println!(
        "fork_shape: N={N} per shape, blocks of {BLOCK}, rotated; {:.1} s; times in us",
        took.as_secs_f64()
    );
    for (title, pick) in [
        (
            "end to end (fork call -> spawner has the worker's byte / floor: reaped)",
            0,
        ),
        (
            "spawner side (fork call -> spawner free for the next request)",
            1,
        ),
    ] {
        println!("\n{title}");
        println!(
            "{:<26} {:>8} {:>8} {:>8} {:>8}",
            "shape", "p50", "p90", "p99", "mean"
        );
        let mut rows = Vec::new();
        for (s, name) in samples.iter_mut().zip(names) {
            let v = if pick == 0 { &mut s.done } else { &mut s.free };
            let r = stats(v);
            println!(
                "{name:<26} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                r[0], r[1], r[2], r[3]
            );
            rows.push(r);
        }
        let ratio: Vec<f64> = (0..4).map(|j| rows[1][j] / rows[2][j]).collect();
        println!(
            "{:<26} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            "ratio (a)/(b)", ratio[0], ratio[1], ratio[2], ratio[3]
        );
    }
    let double = &samples[1].bytes;
    let failed = double.iter().filter(|&&b| b == 0).count();
    let spun: Vec<u64> = double
        .iter()
        .filter(|&&b| b > 1)
        .map(|&b| u64::from(b - 1))
        .collect();
    println!(
        "\n(a) workers: {failed} never saw the supervisor as parent; {} of {} had to spin on \
         getppid() (mean {:.1} yields when they did)",
        spun.len(),
        double.len(),
        spun.iter().sum::<u64>() as f64 / spun.len().max(1) as f64
    );
    let wrong = samples[2].bytes.iter().filter(|&&b| b != 1).count();
    println!("(b) workers: {wrong} saw a parent other than the supervisor");
    let _ = std::io::stdout().flush();
}

// ---------------------------------------------------------------------------
// Probes: what a child made by glibc `fork` and one made by a raw `clone` get.

/// The TID glibc cached in the calling thread's descriptor, decoded from
/// `pthread_getcpuclockid` (`MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)`).
fn cached_tid() -> (i32, libc::clockid_t) {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `pthread_self()` is the calling thread; `clock` is a valid out
    // pointer.
    unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    (!(clock >> 3), clock)
}

fn gettid() -> i32 {
    // SAFETY: `gettid` has no preconditions.
    unsafe { libc::gettid() }
}

fn affinity() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
    (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

fn effective_gid(tid: i32) -> String {
    let status =
        std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Gid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Runs in the probe child; one line per probe, written unbuffered to `out`
/// so that what ran before a hang is still reported.
fn run_probes(out: RawFd, parent_expected: i32) {
    let say = |name: &str, result: String| {
        let line = format!("{name}\t{result}\n");
        // SAFETY: writes a live buffer to an open descriptor.
        unsafe { libc::write(out, line.as_ptr().cast(), line.len()) };
    };
    let ppid = getppid().as_raw();
    say(
        "getppid() is the expected parent",
        format!("{} ({ppid})", ppid == parent_expected),
    );
    let (cached, clock) = cached_tid();
    let real = gettid();
    say(
        "glibc cached TID == gettid()",
        format!("{} ({cached} vs {real})", cached == real),
    );
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    say(
        "own thread CPU clock (pthread_getcpuclockid)",
        if rc == 0 {
            "ok".into()
        } else {
            format!("fails: {}", Errno::last())
        },
    );
    let (mut head, mut len): (usize, usize) = (0, 0);
    // SAFETY: pid 0 is the calling thread; both out pointers are valid.
    unsafe { libc::syscall(libc::SYS_get_robust_list, 0, &mut head, &mut len) };
    say("robust futex list registered", (head != 0).to_string());
    say(
        "pthread_atfork child handler ran",
        ATFORK_CHILD_RAN.load(Ordering::SeqCst).to_string(),
    );
    println!("    (println! from probe child {})", std::process::id());
    say("println!", "ok".into());

    let counter = Arc::new(Mutex::new(0u64));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    *counter.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    let joined = handles.into_iter().all(|h| h.join().is_ok());
    say(
        "4 std threads on a Mutex",
        format!(
            "{} ({})",
            joined && *counter.lock().unwrap() == 40_000,
            counter.lock().unwrap()
        ),
    );

    // SAFETY: `pthread_self()` of the main thread, used only while it lives.
    let main_thread = unsafe { libc::pthread_self() };
    let main_thread = main_thread as usize;
    let rc = std::thread::spawn(move || {
        // SAFETY: signal 0 only checks that the thread can be signalled; the
        // main thread is blocked in `join` below.
        unsafe { libc::pthread_kill(main_thread as libc::pthread_t, 0) }
    })
    .join()
    .unwrap_or(-1);
    say(
        "pthread_kill(main thread, 0) from another thread",
        if rc == 0 {
            "ok".into()
        } else {
            format!("fails: {}", Errno::from_raw(rc))
        },
    );

    let cpus = affinity();
    if cpus.len() >= 2 {
        // SAFETY: an all-zero `cpu_set_t` is valid and CPU_SET writes inside
        // it (`cpus[0]` is below CPU_SETSIZE).
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::CPU_SET(cpus[0], &mut set) };
        // SAFETY: `set` is a valid cpu_set_t of the given size.
        let rc = unsafe {
            libc::pthread_setaffinity_np(
                libc::pthread_self(),
                std::mem::size_of::<libc::cpu_set_t>(),
                &set,
            )
        };
        let after = affinity();
        say(
            "pthread_setaffinity_np(self) pins this thread",
            format!(
                "{} (rc {rc}, own CPUs {cpus:?} -> {after:?})",
                after == [cpus[0]]
            ),
        );
    }

    if nix::unistd::geteuid().is_root() {
        let main_tid = gettid();
        let thread_view = std::thread::spawn(move || {
            // SAFETY: changes the effective gid of the process (glibc
            // broadcasts it to every thread); restored below.
            let rc = unsafe { libc::setegid(65534) };
            let mine = effective_gid(gettid());
            let main = effective_gid(main_tid);
            // SAFETY: back to root's group; the effective uid is still 0.
            unsafe { libc::setegid(0) };
            format!("rc {rc}, calling thread egid {mine}, main thread egid {main}")
        })
        .join()
        .unwrap_or_default();
        say("setegid(65534) from a 2nd thread reaches main", thread_view);
    }

    let action = SigAction::new(
        SigHandler::Handler(on_usr1),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: `on_usr1` only stores to an atomic.
    let _ = unsafe { nix::sys::signal::sigaction(Signal::SIGUSR1, &action) };
    let _ = nix::sys::signal::raise(Signal::SIGUSR1);
    say(
        "raise(SIGUSR1) reaches own handler",
        USR1_SEEN.load(Ordering::SeqCst).to_string(),
    );

    std::panic::set_hook(Box::new(|_| {}));
    let caught = std::panic::catch_unwind(|| panic!("probe")).is_err();
    say("panic! caught by catch_unwind", caught.to_string());

    let tokio_ok = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| {
            rt.block_on(async {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let task = tokio::spawn(async { 21u32 * 2 });
                tokio::time::sleep(Duration::from_millis(2)).await;
                let (mut a, mut b) = tokio::net::UnixStream::pair().ok()?;
                a.write_all(b"x").await.ok()?;
                let mut buf = [0u8];
                b.read_exact(&mut buf).await.ok()?;
                (task.await.ok()? == 42 && buf == *b"x").then_some(())
            })
            .is_some()
        })
        .unwrap_or(false);
    say(
        "tokio current_thread: spawn, sleep, UnixStream",
        tokio_ok.to_string(),
    );

    let actix_ok = actix_rt::System::new().block_on(async {
        use actix_rt::signal::unix::{SignalKind, signal};
        let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
            return false;
        };
        let _ = nix::sys::signal::raise(Signal::SIGUSR2);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), usr2.recv()).await,
            Ok(Some(()))
        )
    });
    say(
        "actix-rt System: raise(SIGUSR2) -> signal stream",
        actix_ok.to_string(),
    );

    let spawned = std::process::Command::new("true").status();
    say(
        "std::process::Command (posix_spawn)",
        format!("{}", matches!(spawned, Ok(s) if s.success())),
    );
}

/// Runs the probes in a child made by `make` and returns their lines.
fn probe_child(raw: bool, supervisor: i32) -> Vec<(String, String)> {
    let (rd, wr) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
    let _ = std::io::stdout().flush();
    let child = if raw {
        raw_clone(libc::CLONE_PARENT).expect("clone")
    } else {
        // SAFETY: the spawner has one thread and no runtime.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            ForkResult::Child => None,
            ForkResult::Parent { child } => Some(child),
        }
    };
    let Some(child) = child else {
        drop(rd);
        let expected = if raw { supervisor } else { getppid().as_raw() };
        run_probes(wr.as_raw_fd(), expected);
        let _ = std::io::stdout().flush();
        exit_now(0)
    };
    drop(wr);
    let (text, complete) = read_until_eof(rd, PROBE_TIMEOUT);
    if !complete {
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
    }
    if !raw {
        while let Err(Errno::EINTR) = waitpid(child, None) {}
    }
    let mut lines: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    if !complete {
        lines.push(("(child timed out after this, killed)".into(), "HANG".into()));
    }
    lines
}

fn read_until_eof(rd: OwnedFd, timeout: Duration) -> (String, bool) {
    let deadline = Instant::now() + timeout;
    let mut file = std::fs::File::from(rd);
    let mut text = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&file),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, ms) {
            Ok(0) => return (String::from_utf8_lossy(&text).into_owned(), false),
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => return (String::from_utf8_lossy(&text).into_owned(), false),
        }
        let mut buf = [0u8; 4096];
        match file.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&text).into_owned(), true),
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return (String::from_utf8_lossy(&text).into_owned(), false),
        }
    }
}

/// `abort()` in a child made by `make`: the status its parent sees.
fn abort_status(raw: bool) -> String {
    let _ = std::io::stdout().flush();
    let child = if raw {
        // Not CLONE_PARENT here, so that the spawner can wait for it; the
        // glibc state of the child is the same.
        raw_clone(0).expect("clone")
    } else {
        // SAFETY: the spawner has one thread and no runtime.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            ForkResult::Child => None,
            ForkResult::Parent { child } => Some(child),
        }
    };
    let Some(child) = child else {
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
        std::process::abort()
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(WaitStatus::StillAlive) => {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return "HANG (killed)".into();
            }
            Ok(status) => return format!("{status:?}").replace(&child.to_string(), "pid"),
            Err(Errno::EINTR) => {}
            Err(e) => return format!("waitpid: {e}"),
        }
    }
}

fn probes(supervisor: i32) {
    // As a library might (rand 0.8's fork protection, the crate's own fork
    // counter in the supervisor): glibc's fork runs it, a raw clone cannot.
    // SAFETY: `atfork_child` only stores to an atomic.
    unsafe { libc::pthread_atfork(None, None, Some(atfork_child)) };
    let before = affinity();
    println!(
        "\nprobes (spawner pid {}, CPUs {before:?})",
        std::process::id()
    );
    let forked = probe_child(false, supervisor);
    let after_fork = affinity();
    let cloned = probe_child(true, supervisor);
    let after_clone = affinity();
    if after_clone != before {
        let mut set = nix::sched::CpuSet::new();
        for &c in &before {
            let _ = set.set(c);
        }
        let _ = nix::sched::sched_setaffinity(Pid::from_raw(0), &set);
    }
    println!(
        "\n{:<50} | {:<56} | raw clone(CLONE_PARENT) child",
        "probe", "glibc fork child"
    );
    let mut names: Vec<&String> = forked.iter().map(|(n, _)| n).collect();
    for (n, _) in &cloned {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let find = |v: &[(String, String)], n: &str| {
        v.iter()
            .find(|(k, _)| k == n)
            .map_or("-".to_owned(), |(_, r)| r.clone())
    };
    for n in names {
        println!("{n:<50} | {:<56} | {}", find(&forked, n), find(&cloned, n));
    }
    let restored = if after_clone != before {
        " (restored)"
    } else {
        ""
    };
    println!(
        "{:<50} | {:<56} | {after_clone:?}{restored}",
        "spawner's own CPU affinity afterwards",
        format!("{after_fork:?}").as_str(),
    );
    println!(
        "{:<50} | {:<56} | {}",
        "abort() (status seen by its parent)",
        abort_status(false),
        abort_status(true)
    );
}
