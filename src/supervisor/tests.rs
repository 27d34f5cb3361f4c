//! The supervisor driven by events, with the OS behind a mock: each test
//! feeds signals, spawner reports, scoreboard writes, exits and the clock,
//! and reads back the spawn requests, the signals sent through the
//! children's handles, the effects and the log.

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::effects::mock::{MockOs, World};
use super::*;
use crate::process::wire::{FromSpawner, SpawnReply, SpawnRequest};
use crate::scoreboard::{Scoreboard, SlotId};
use crate::state::SlotState;
use crate::worker::tests::Capture;

const SPAWNER: i32 = 70_000;

/// A supervisor over a mock OS and a real (anonymous) scoreboard.
struct Rig {
    c: Common,
    s: Supervisor,
    w: Rc<RefCell<World>>,
    log: Capture,
    board: Scoreboard,
    next_pid: i32,
    /// The (mock) channel descriptor of the worker last reported in each slot.
    links: std::collections::HashMap<SlotId, std::os::fd::RawFd>,
}

fn prefork() -> crate::DaemonBuilder {
    crate::Daemon::builder().detach(false)
}

/// A pool of one, with room for its replacement.
fn small() -> crate::DaemonBuilder {
    prefork().start_children(1).min_spare(1).max_children(2)
}

impl Rig {
    fn new(builder: crate::DaemonBuilder) -> Rig {
        Rig::new_with(builder.build().expect("config").config().clone())
    }

    fn new_with(config: crate::config::Config) -> Rig {
        let config = Arc::new(config);
        let slots = match config.mode() {
            Mode::PreFork(p) => p.max_children,
            Mode::ForkPerRequest { max_children } => *max_children,
            Mode::Daemon => 1,
        };
        let board = Scoreboard::new(slots).expect("scoreboard");
        let log = Capture::default();
        let logger = slog::Logger::root(log.clone(), slog::o!());
        let (c, mut s) = Supervisor::new(SupervisorSetup {
            config,
            log: logger,
            board: Some(board.clone()),
            wake: None,
            spawner: None,
            notifier: None,
            outcome: Arc::new(Mutex::new(None)),
        });
        let w = Rc::new(RefCell::new(World::default()));
        s.os = Box::new(MockOs(w.clone()));
        s.systemd = None;
        let devnull = OwnedFd::from(File::open("/dev/null").unwrap());
        s.spawner = Some(Spawner {
            pidfd: Box::new(registry::tests::mock(SPAWNER, &w.borrow().signals)),
            sock: Some(Arc::new(devnull)),
            task: None,
        });
        Rig {
            c,
            s,
            w,
            log,
            board,
            next_pid: 1000,
            links: std::collections::HashMap::new(),
        }
    }

    fn advance(&self, by: Duration) {
        let mut w = self.w.borrow_mut();
        let now = w.now.unwrap_or_else(Instant::now);
        w.now = Some(now + by);
    }

    /// Spawn requests sent since the last call.
    fn spawns(&self) -> Vec<SlotId> {
        std::mem::take(&mut self.w.borrow_mut().sent)
            .into_iter()
            .filter_map(|r| match r {
                SpawnRequest::Spawn { slot } => Some(slot),
                SpawnRequest::Reopen => None,
            })
            .collect()
    }

    /// Signals sent since the last call.
    fn signals(&self) -> Vec<(i32, Signal)> {
        let w = self.w.borrow();
        let sent = std::mem::take(&mut *w.signals.borrow_mut());
        sent.into_iter().map(|(p, s)| (p.as_raw(), s)).collect()
    }

    fn effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.s.effects)
    }

    fn logged(&self, text: &str) -> bool {
        self.log.0.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// The spawner reports a worker forked in `slot`; returns its pid.
    fn report(&mut self, slot: SlotId) -> i32 {
        self.next_pid += 1;
        let pid = self.next_pid;
        let fd = OwnedFd::from(File::open("/dev/null").unwrap());
        let link = OwnedFd::from(File::open("/dev/null").unwrap());
        self.links.insert(slot, link.as_raw_fd());
        self.w
            .borrow_mut()
            .names
            .insert(fd.as_raw_fd(), Pid::from_raw(pid));
        let reply = SpawnReply::Spawned {
            slot,
            pid: Pid::from_raw(pid),
        };
        self.s
            .on_spawner(&mut self.c, FromSpawner::Reply(reply, vec![fd, link]));
        pid
    }

    /// The worker in `slot` writes `state`, and the supervisor looks.
    fn write(&mut self, slot: SlotId, state: SlotState) {
        self.board.set_state(slot, state);
        self.s.after_change(&mut self.c);
    }

    /// Every spawn asked for is reported and its worker gets ready.
    fn serve_spawns(&mut self) -> Vec<(SlotId, i32)> {
        let mut up = Vec::new();
        loop {
            let slots = self.spawns();
            if slots.is_empty() {
                return up;
            }
            for slot in slots {
                let pid = self.report(slot);
                self.board.set_state(slot, SlotState::Starting);
                self.write(slot, SlotState::FirstWait);
                up.push((slot, pid));
            }
        }
    }

    /// `pid` exits with `status` (SIGCHLD).
    fn exit(&mut self, pid: i32, status: WaitStatus) {
        self.w.borrow_mut().exits.push((Pid::from_raw(pid), status));
        self.s.reap(&mut self.c);
    }

    fn started(&mut self) -> Vec<(SlotId, i32)> {
        self.s.started(&mut self.c);
        self.serve_spawns()
    }
}

fn killed(pid: i32, sig: Signal) -> WaitStatus {
    WaitStatus::Signaled(Pid::from_raw(pid), sig, false)
}

fn exited(pid: i32, code: i32) -> WaitStatus {
    WaitStatus::Exited(Pid::from_raw(pid), code)
}

#[test]
fn the_pool_fills_to_its_start_and_is_ready_once_its_workers_wait() {
    let mut r = Rig::new(prefork().start_children(3).min_spare(2).max_children(6));
    r.s.started(&mut r.c);
    assert_eq!(r.spawns().len(), 3, "start_children requests");
    assert!(matches!(r.s.phase, Phase::Starting));
    r.w.borrow_mut().sent.clear();
    for slot in 0..3 {
        r.report(SlotId(slot));
    }
    assert!(matches!(r.s.phase, Phase::Starting), "forked is not ready");
    for slot in 0..3 {
        r.write(SlotId(slot), SlotState::FirstWait);
    }
    assert!(matches!(r.s.phase, Phase::Running));
    assert!(r.logged("daemon ready"));
}

#[test]
fn exits_are_replaced_at_once_or_backed_off_by_their_class() {
    struct Case {
        name: &'static str,
        ready: bool,
        status: fn(i32) -> WaitStatus,
        replaced_at_once: bool,
        logged: &'static str,
    }
    let cases = [
        Case {
            name: "SIGKILL from outside, after ready",
            ready: true,
            status: |p| killed(p, Signal::SIGKILL),
            replaced_at_once: true,
            logged: "worker killed by a signal we did not send",
        },
        Case {
            name: "one panic after ready (not a burst)",
            ready: true,
            status: |p| exited(p, 101),
            replaced_at_once: true,
            logged: "worker crashed",
        },
        Case {
            name: "exit 0 after ready",
            ready: true,
            status: |p| exited(p, 0),
            replaced_at_once: true,
            logged: "worker exited",
        },
        Case {
            name: "SIGSEGV before ready",
            ready: false,
            status: |p| killed(p, Signal::SIGSEGV),
            replaced_at_once: false,
            logged: "pool degraded: backing off",
        },
        Case {
            name: "exit 1 before ready",
            ready: false,
            status: |p| exited(p, 1),
            replaced_at_once: false,
            logged: "pool degraded: backing off",
        },
    ];
    for case in cases {
        let mut r = Rig::new(
            prefork()
                .start_children(2)
                .min_spare(2)
                .max_children(4)
                .verbose(true),
        );
        let up = r.started();
        assert_eq!(up.len(), 2, "{}", case.name);
        let (_, pid) = up[0];
        if !case.ready {
            // Its replacement's slot: a worker that never got ready.
            r.exit(pid, exited(pid, 0));
            r.s.after_change(&mut r.c);
            let slots = r.spawns();
            assert_eq!(slots.len(), 1, "{}", case.name);
            let young = r.report(slots[0]);
            r.effects();
            r.exit(young, (case.status)(young));
        } else {
            r.effects();
            r.exit(pid, (case.status)(pid));
        }
        let respawned = r.spawns();
        assert_eq!(
            !respawned.is_empty(),
            case.replaced_at_once,
            "{}: respawned {respawned:?}",
            case.name
        );
        assert!(r.logged(case.logged), "{}: {:?}", case.name, r.log.0);
        let waits = r
            .effects()
            .into_iter()
            .any(|e| matches!(e, Effect::LookAt(_)));
        if !case.replaced_at_once {
            assert!(waits, "{}: a backoff sets a timer", case.name);
        }
    }
}

#[test]
fn a_kill_storm_of_established_workers_never_backs_off() {
    let mut r = Rig::new(prefork().start_children(4).min_spare(4).max_children(8));
    let mut up = r.started();
    assert_eq!(up.len(), 4);
    for round in 0..40 {
        let (_, pid) = up.remove(0);
        r.exit(pid, killed(pid, Signal::SIGKILL));
        let fresh = r.serve_spawns();
        assert_eq!(fresh.len(), 1, "round {round}: replaced at once");
        up.extend(fresh);
        r.advance(Duration::from_millis(50));
    }
    assert!(!r.logged("backing off"));
    assert_eq!(r.board.counters().killed_externally, 40);
    assert_eq!(r.s.backoff.streak(), 0);
}

#[test]
fn term_drains_a_second_stop_changes_nothing_and_the_last_exit_stops_with_0() {
    let mut r = Rig::new(prefork().start_children(2).min_spare(2).max_children(4));
    let up = r.started();
    r.signals();
    r.effects();
    r.s.on_signal(&mut r.c, OsSignal::Term);
    let mut termed: Vec<i32> = r
        .signals()
        .into_iter()
        .filter(|(_, s)| *s == Signal::SIGTERM)
        .map(|(p, _)| p)
        .collect();
    termed.sort();
    assert_eq!(termed, vec![up[0].1, up[1].1]);
    assert!(
        r.effects()
            .iter()
            .any(|e| matches!(e, Effect::DrainDeadline(d) if *d == Duration::from_secs(10)))
    );
    for sig in [OsSignal::Int, OsSignal::Quit, OsSignal::Term] {
        r.s.on_signal(&mut r.c, sig);
    }
    assert!(r.signals().is_empty(), "a second stop sends nothing");
    assert!(r.effects().is_empty());
    r.exit(up[0].1, exited(up[0].1, 0));
    r.exit(up[1].1, exited(up[1].1, 0));
    assert!(r.spawns().is_empty(), "nothing is replaced while draining");
    // No spawn pending: the spawner's socket was closed; it exits.
    assert!(r.s.spawner.as_ref().is_some_and(|s| s.sock.is_none()));
    r.exit(SPAWNER, exited(SPAWNER, 0));
    assert!(r.effects().iter().any(|e| matches!(e, Effect::Stop(0))));
}

#[test]
fn the_drain_deadline_kills_what_is_left_and_the_grace_stops_anyway() {
    let mut r = Rig::new(small());
    let up = r.started();
    r.s.on_signal(&mut r.c, OsSignal::Term);
    r.signals();
    r.s.kill_remaining(&mut r.c);
    let sent = r.signals();
    assert!(sent.contains(&(up[0].1, Signal::SIGKILL)), "{sent:?}");
    assert!(
        r.effects()
            .iter()
            .any(|e| matches!(e, Effect::KillDeadline(_)))
    );
    // Nothing reaped (a child in D state): stop anyway, with an error code.
    r.s.kill_deadline(&mut r.c);
    assert!(r.logged("children survived SIGKILL"));
    assert!(r.effects().iter().any(|e| matches!(e, Effect::Stop(_))));
}

#[test]
fn a_spawner_that_does_not_answer_within_the_bound_is_ended_and_the_daemon_fails() {
    let mut r = Rig::new(small().spawn_timeout(Duration::from_secs(2)));
    let up = r.started();
    r.exit(up[0].1, exited(up[0].1, 0));
    assert_eq!(r.spawns().len(), 1, "a replacement is asked for");
    r.advance(Duration::from_millis(1900));
    r.s.sweep(&mut r.c);
    assert!(r.signals().is_empty(), "not stuck yet");
    r.advance(Duration::from_millis(200));
    r.s.sweep(&mut r.c);
    assert_eq!(r.signals(), vec![(SPAWNER, Signal::SIGKILL)]);
    assert!(r.logged("the spawner is stuck"));
    assert!(r.s.is_stopping());
    assert!(r.s.has_failed());
    assert_eq!(r.s.registry.pending_len(), 0, "the spawn is given up");
}

#[test]
fn a_stuck_spawner_with_upgrades_on_is_replaced_through_an_upgrade() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut r = Rig::new(
        small()
            .spawn_timeout(Duration::from_secs(1))
            .upgrade_with(&listener),
    );
    let up = r.started();
    r.exit(up[0].1, exited(up[0].1, 0));
    r.advance(Duration::from_secs(2));
    r.s.sweep(&mut r.c);
    assert_eq!(r.w.borrow().upgrades.len(), 1, "an upgrade started");
    assert!(matches!(r.s.phase, Phase::Upgrading { .. }));
    assert!(
        r.effects()
            .iter()
            .any(|e| matches!(e, Effect::AwaitVerdict(_)))
    );
    // It fails: nothing is left to fork workers, so the daemon stops.
    r.s.upgrade_verdict(&mut r.c, Err("refused".into()));
    assert!(r.logged("no spawner is left"));
    assert!(r.s.is_stopping());
    assert!(r.s.has_failed());
}

#[test]
fn term_during_an_upgrade_abandons_it_and_stops_a_new_supervisor_that_gets_ready() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut r = Rig::new(small().upgrade_with(&listener));
    r.started();
    r.s.on_signal(&mut r.c, OsSignal::Usr2);
    let new = r.w.borrow().upgrades[0];
    assert!(matches!(r.s.phase, Phase::Upgrading { .. }));
    r.s.on_signal(&mut r.c, OsSignal::Usr2);
    assert_eq!(r.w.borrow().upgrades.len(), 1, "one upgrade at a time");
    r.s.on_signal(&mut r.c, OsSignal::Term);
    assert!(r.logged("binary upgrade abandoned"));
    assert!(r.s.is_stopping());
    // The verdict comes anyway: the new supervisor, our child, gets TERM.
    r.w.borrow_mut().own.push(new);
    r.s.upgrade_verdict(&mut r.c, Ok(Some(new.as_raw())));
    assert_eq!(r.w.borrow().termed, vec![new]);
    // One that is not our child is not signalled.
    r.s.upgrade_verdict(&mut r.c, Ok(Some(4242)));
    assert_eq!(r.w.borrow().termed, vec![new]);
    assert!(r.logged("not our child"));
}

#[test]
fn hup_reaches_only_ready_workers_and_the_spawner_reopens() {
    let mut r = Rig::new(prefork().start_children(2).min_spare(2).max_children(4));
    let up = r.started();
    // A third worker, forked but not ready.
    r.s.spawn(&mut r.c, false, Instant::now());
    let slot = r.spawns()[0];
    let starting = r.report(slot);
    r.signals();
    r.w.borrow_mut().sent.clear();
    r.s.on_signal(&mut r.c, OsSignal::Hup);
    let mut got = r.signals();
    got.sort();
    let mut want = vec![(up[0].1, Signal::SIGHUP), (up[1].1, Signal::SIGHUP)];
    want.sort();
    assert_eq!(got, want, "not to {starting}, still starting");
    // No log file in this rig: nothing reopened, so nothing for the
    // spawner (it gets a descriptor only when the supervisor opened one).
    assert_eq!(r.w.borrow().sent, vec![]);
}

#[test]
fn a_forged_slot_retires_its_writer_and_signals_no_one_else() {
    let mut r = Rig::new(prefork().start_children(3).min_spare(3).max_children(6));
    let up = r.started();
    r.signals();
    let (slot, forger) = up[1];
    let victim = 4242;
    for (pid, state) in [(victim, 200u8), (up[0].1, SlotState::Wait as u8)] {
        r.board.forge(slot, pid, state);
        r.s.after_change(&mut r.c);
    }
    assert_eq!(r.signals(), vec![(forger, Signal::SIGTERM)]);
    assert!(r.logged("worker misbehaves"));
    assert_eq!(r.board.counters().misbehaved, 1, "counted once");
    assert_eq!(r.board.raw(slot).pid, forger, "the slot's pid put right");
    // Its exit is a retirement, and the babysitter's roster names the
    // registered pid only.
    assert!(r.s.roster(&r.c).iter().all(|s| s.pid != victim));
    r.exit(forger, exited(forger, 0));
    assert!(!r.logged("backing off"));
}

#[test]
fn a_slot_no_worker_owns_is_cleared() {
    let mut r = Rig::new(prefork().start_children(1).min_spare(1).max_children(4));
    r.started();
    r.board.forge(SlotId(3), 4242, SlotState::Req as u8);
    r.s.after_change(&mut r.c);
    assert!(r.logged("cleared a slot that no registered worker owns"));
    assert_eq!(r.board.raw(SlotId(3)).pid, 0);
    assert!(r.signals().is_empty());
}

#[test]
fn surplus_spares_go_one_a_second() {
    let mut r = Rig::new(
        prefork()
            .start_children(4)
            .min_spare(1)
            .max_spare(2)
            .max_children(4),
    );
    r.started();
    let termed = |r: &Rig| {
        r.signals()
            .into_iter()
            .filter(|(_, s)| *s == Signal::SIGTERM)
            .count()
    };
    r.s.after_change(&mut r.c);
    let first = termed(&r);
    assert_eq!(first, 1, "one of the two surplus spares at once");
    r.advance(Duration::from_millis(500));
    r.s.after_change(&mut r.c);
    assert_eq!(termed(&r), 0, "not within the second");
    r.advance(Duration::from_millis(600));
    r.s.after_change(&mut r.c);
    assert_eq!(termed(&r), 1, "the next after a second");
}

#[test]
fn a_worker_reported_after_the_stop_began_is_told_to_stop() {
    let mut r = Rig::new(prefork().start_children(1).min_spare(1).max_children(4));
    r.started();
    r.s.spawn(&mut r.c, false, Instant::now());
    let slot = r.spawns()[0];
    r.s.on_signal(&mut r.c, OsSignal::Term);
    r.signals();
    let late = r.report(slot);
    assert_eq!(r.signals(), vec![(late, Signal::SIGTERM)]);
}

#[test]
fn a_crash_loop_gives_up_by_draining_with_an_error() {
    let mut r = Rig::new(small().max_restarts(3, Duration::from_secs(60)));
    r.s.started(&mut r.c);
    for _ in 0..20 {
        if r.s.is_stopping() {
            break;
        }
        let slots = r.spawns();
        let Some(&slot) = slots.first() else {
            // Backing off: the timer fires.
            r.advance(Duration::from_secs(5));
            r.s.after_change(&mut r.c);
            continue;
        };
        let pid = r.report(slot);
        r.exit(pid, exited(pid, 1));
    }
    assert!(r.s.is_stopping(), "{:?}", r.log.0);
    assert!(r.s.has_failed());
    assert!(r.logged("giving up: workers keep failing"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

    /// Whatever `build` accepts, the supervisor runs without a panic: its
    /// start, a crash and its backoff, a reload, a resize, and a stop
    /// through its deadlines, the clock moved past each bound.
    #[test]
    fn every_config_that_builds_runs_the_supervisor_without_a_panic(
        i in crate::config::bounds::properties::input()
    ) {
        let Ok(daemon) = crate::config::bounds::properties::builder(&i).build() else {
            return Ok(());
        };
        let config = daemon.config().clone();
        let mut r = Rig::new_with(config);
        r.s.started(&mut r.c);
        let mut up = Vec::new();
        for _ in 0..4 {
            for slot in r.spawns().into_iter().take(64) {
                let pid = r.report(slot);
                r.write(slot, SlotState::FirstWait);
                up.push(pid);
            }
        }
        if let Some(&pid) = up.first() {
            r.exit(pid, killed(pid, Signal::SIGSEGV));
        }
        r.advance(r.c.config.crash_policy().max_backoff);
        r.s.after_change(&mut r.c);
        // (Not HUP: it reopens the configured log file onto this test
        // process's stderr.)
        for sig in [OsSignal::Usr1, OsSignal::Ttin, OsSignal::Ttou] {
            r.s.on_signal(&mut r.c, sig);
        }
        r.advance(r.c.config.spawn_timeout());
        r.s.sweep(&mut r.c);
        r.s.on_signal(&mut r.c, OsSignal::Term);
        r.advance(r.c.config.shutdown_timeout());
        r.s.kill_remaining(&mut r.c);
        r.advance(KILL_GRACE);
        r.s.kill_deadline(&mut r.c);
        proptest::prop_assert!(r.s.is_stopping());
    }
}

/// Fork per request, over the workers' own channels: what a worker given a
/// request says (or does) decides where the request goes, and anything out
/// of turn retires that worker alone.
#[test]
fn a_request_goes_to_one_worker_and_only_its_answer_counts() {
    use crate::process::{Heard, Told};
    #[derive(Clone, Copy, Debug)]
    enum Then {
        Says(Heard),
        SaysTwice(Heard),
        Exits,
        IdleOneSays(Heard),
    }
    // (what happens, the request is given again, the worker is retired)
    let claimed = Heard::Told(Told::Claimed);
    let back = Heard::Told(Told::HandedBack);
    let junk = Heard::Malformed { len: 15, fds: 1 };
    let table = [
        (Then::Says(claimed), false, false),
        (Then::Says(back), true, false),
        (Then::Exits, true, false),
        (Then::SaysTwice(claimed), false, true),
        (Then::SaysTwice(back), true, true),
        (Then::Says(junk), false, true),
        (Then::IdleOneSays(claimed), false, true),
    ];
    for (then, given_again, retired) in table {
        let mut r = Rig::new(crate::Daemon::builder().detach(false).max_children(4));
        let up = r.started();
        assert_eq!(up.len(), 1, "{then:?}: one warm worker");
        let (slot, pid) = up[0];
        r.s.update(&mut r.c, UpdateStatus::Req(crate::Payload::new()));
        let link = r.links[&slot];
        assert_eq!(
            r.w.borrow().given,
            vec![link],
            "{then:?}: given to the warm one"
        );
        // A new warm worker is forked meanwhile, and gets ready.
        let spare = r.serve_spawns();
        assert_eq!(spare.len(), 1, "{then:?}: a new warm worker");
        let (spare_slot, spare_pid) = spare[0];
        r.write(slot, SlotState::Req);
        let say = |r: &mut Rig, slot: SlotId, pid: i32, heard: Heard| {
            let fd = r.links[&slot];
            r.w.borrow_mut()
                .said
                .entry(fd)
                .or_default()
                .push_back(heard);
            r.s.hear_from(&mut r.c, Pid::from_raw(pid));
        };
        match then {
            Then::Says(h) => say(&mut r, slot, pid, h),
            Then::SaysTwice(h) => {
                say(&mut r, slot, pid, h);
                say(&mut r, slot, pid, h);
            }
            Then::Exits => r.exit(pid, exited(pid, 1)),
            Then::IdleOneSays(h) => say(&mut r, spare_slot, spare_pid, h),
        }
        let given = r.w.borrow().given.clone();
        let spare_link = r.links[&spare_slot];
        if given_again {
            assert_eq!(
                given,
                vec![link, spare_link],
                "{then:?}: given again, to the spare"
            );
        } else {
            assert_eq!(given, vec![link], "{then:?}: given once");
        }
        let who = if matches!(then, Then::IdleOneSays(_)) {
            spare_pid
        } else {
            pid
        };
        let termed = r.signals().contains(&(who, Signal::SIGTERM));
        assert_eq!(termed, retired, "{then:?}: retired");
        assert_eq!(r.logged("on its channel"), retired, "{then:?}: logged");
        assert_eq!(
            r.s.requests.queue.len(),
            0,
            "{then:?}: nothing left waiting"
        );
    }
}
