//! The worker's state machine in a real actix System, with a supervisor
//! actor in the same test process.

use std::sync::Mutex;

use super::*;
use crate::Daemon;
use crate::daemon::SupervisorSetup;
use crate::messages::Shutdown;

/// A drain that keeps each record's message and key-values.
#[derive(Clone, Default)]
pub(crate) struct Capture(pub(crate) Arc<Mutex<Vec<String>>>);

impl slog::Drain for Capture {
    type Ok = ();
    type Err = slog::Never;
    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        struct Kv(String);
        impl slog::Serializer for Kv {
            fn emit_arguments(
                &mut self,
                key: slog::Key,
                val: &std::fmt::Arguments<'_>,
            ) -> slog::Result {
                self.0.push_str(&format!(" {key}={val}"));
                Ok(())
            }
        }
        let mut kv = Kv(record.msg().to_string());
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let _ = slog::KV::serialize(values, record, &mut kv);
        self.0.lock().unwrap().push(kv.0);
        Ok(())
    }
}

fn config(builder: crate::DaemonBuilder) -> Arc<Config> {
    Arc::new(builder.build().unwrap().config().clone())
}

/// A worker's actor over `board`'s `slot`, in this test process.
fn test_worker(
    builder: crate::DaemonBuilder,
    log: &Logger,
    board: &Scoreboard,
    slot: SlotId,
    link: Option<OwnedFd>,
) -> DaemonActor {
    DaemonActor::worker(WorkerSetup {
        config: config(builder),
        log: log.clone(),
        board: board.clone(),
        wake: Arc::new(Wake::new().unwrap()),
        slot,
        supervisor_pid: nix::unistd::getpid(),
        link: link.map(Arc::new),
    })
}

#[test]
fn nonsense_updates_are_logged_with_their_place_and_change_nothing() {
    let capture = Capture::default();
    let log = Logger::root(slog::Drain::fuse(capture.clone()), slog::o!());
    let board = Scoreboard::new(2).unwrap();
    let system = actix_rt::System::new();
    let (before, after, worker_state) = system.block_on(async {
        // A fork-per-request supervisor without a spawner (over a board of
        // its own: it would clear slots no registered worker owns), and a
        // pre-forked worker in slot 1: both in this test process.
        let sup = DaemonActor::supervisor(SupervisorSetup {
            config: config(Daemon::builder().max_children(2)),
            log: log.clone(),
            board: Some(Scoreboard::new(2).unwrap()),
            wake: None,
            spawner: None,
            notifier: None,
            outcome: Arc::new(Mutex::new(None)),
        })
        .start();
        let slot = SlotId(1);
        board.allocate();
        board.allocate();
        board.set_state(slot, SlotState::Starting);
        let worker = test_worker(
            Daemon::builder().start_children(1),
            &log,
            &board,
            slot,
            None,
        )
        .start();
        let before = board.snapshots();
        sup.send(UpdateStatus::Wait).await.unwrap();
        sup.send(UpdateStatus::Done).await.unwrap();
        worker.send(UpdateStatus::Done).await.unwrap();
        worker
            .send(UpdateStatus::Req(Payload::new()))
            .await
            .unwrap();
        let after = board.snapshots();
        worker.send(UpdateStatus::Wait).await.unwrap();
        let worker_state = board.state(slot);
        (before, after, worker_state)
    });
    let states = |s: &[crate::SlotSnapshot]| s.iter().map(|s| s.state).collect::<Vec<_>>();
    assert_eq!(
        states(&before),
        states(&after),
        "nonsense changed the scoreboard"
    );
    assert_eq!(
        worker_state,
        SlotState::FirstWait,
        "a valid update still works"
    );
    let lines = capture.0.lock().unwrap().clone();
    let ignored: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("status update ignored"))
        .collect();
    assert_eq!(ignored.len(), 4, "{lines:#?}");
    assert!(
        ignored[0].contains("update=wait") && ignored[0].contains("from=supervisor pid"),
        "{}",
        ignored[0]
    );
    assert!(
        ignored[2].contains("update=done")
            && ignored[2].contains("slot 1")
            && ignored[2].contains("state=f"),
        "{}",
        ignored[2]
    );
}

#[test]
fn served_counts_while_busy_and_retires_at_the_drawn_limit() {
    let capture = Capture::default();
    let log = Logger::root(slog::Drain::fuse(capture.clone()), slog::o!());
    let board = Scoreboard::new(1).unwrap();
    let slot = board.allocate().unwrap();
    board.set_state(slot, SlotState::Starting);
    let system = actix_rt::System::new();
    let seen = system.block_on(async {
        let worker = test_worker(
            Daemon::builder().start_children(1).requests(4),
            &log,
            &board,
            slot,
            None,
        )
        .start();
        let mut seen = Vec::new();
        let step = |update: UpdateStatus| {
            let worker = worker.clone();
            let board = board.clone();
            async move {
                worker.send(update).await.unwrap();
                (board.state(slot), board.snapshot(slot).requests)
            }
        };
        seen.push(step(UpdateStatus::Wait).await);
        seen.push(step(UpdateStatus::Served(1)).await);
        seen.push(step(UpdateStatus::Req(Payload::new())).await);
        seen.push(step(UpdateStatus::Served(2)).await);
        seen.push(step(UpdateStatus::Served(0)).await);
        seen.push(step(UpdateStatus::Long).await);
        seen.push(step(UpdateStatus::Served(2)).await);
        seen
    });
    use SlotState::*;
    assert_eq!(
        seen,
        [
            (FirstWait, 0),
            (FirstWait, 0), // Served while waiting: out of place
            (Req, 0),
            (Req, 2), // counted, still busy
            (Req, 2),
            (Long, 2),
            (Exit, 4), // the limit reached while busy: the worker retires
        ]
    );
    let counters = board.counters();
    assert_eq!((counters.requests, counters.retired), (4, 1));
    let lines = capture.0.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("status update ignored") && l.contains("update=served")),
        "{lines:#?}"
    );
}

#[test]
fn a_request_taken_while_shutting_down_is_handed_back() {
    let log = Logger::root(slog::Discard, slog::o!());
    let board = Scoreboard::new(1).unwrap();
    let slot = board.allocate().unwrap();
    board.set_state(slot, SlotState::Starting);
    let (supervisor_end, workers_end) = crate::process::channel_pair_for_tests();
    let system = actix_rt::System::new();
    let state_at_claim = system.block_on(async {
        let worker = test_worker(
            Daemon::builder().max_children(1),
            &log,
            &board,
            slot,
            Some(workers_end),
        )
        .start();
        worker.send(Shutdown).await.unwrap();
        let payload = Payload::new().with_data(&"GET /").unwrap();
        worker.send(Claimed(Some(payload))).await.unwrap();
        board.state(slot)
    });
    assert_eq!(state_at_claim, SlotState::Exit, "not served: exiting");
    // The supervisor keeps its own copy: the worker only says so.
    assert_eq!(
        process::hear(supervisor_end.as_raw_fd()).expect("an answer"),
        process::Heard::Told(process::Told::HandedBack)
    );
}
