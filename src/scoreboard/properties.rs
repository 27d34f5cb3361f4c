//! Random sequences of spawns, status updates, exits and signals driven
//! through the scoreboard and the worker transition table: no slot is
//! lost or doubled, and every letter keeps the manual's meaning.

use super::*;
use crate::state::{SlotState, Step, UpdateKind, worker_step};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// The supervisor wants a worker.
    Spawn,
    /// The spawner reports the worker for the n-th used slot.
    Started(usize),
    /// A worker sends an update.
    Update(usize, UpdateKind),
    /// SIGTERM to a worker: it exits once idle (at once if not busy).
    Term(usize),
    /// A worker process ends (any state: crash, kill, normal exit) and is reaped.
    Exit(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(UpdateKind::Req),
        Just(UpdateKind::Long),
        Just(UpdateKind::Wait),
        Just(UpdateKind::Done),
        Just(UpdateKind::Served),
    ];
    prop_oneof![
        2 => Just(Op::Spawn),
        2 => (0..8usize).prop_map(Op::Started),
        6 => ((0..8usize), kind).prop_map(|(n, k)| Op::Update(n, k)),
        1 => (0..8usize).prop_map(Op::Term),
        2 => (0..8usize).prop_map(Op::Exit),
    ]
}

proptest! {
    #[test]
    fn no_slot_is_lost_or_doubled(ops in proptest::collection::vec(op(), 1..200), prefork: bool, limit in 1u64..4) {
        let slots = 6;
        let board = Scoreboard::new(slots).unwrap();
        // The model: which slots hold a worker, and its pid.
        let mut used: Vec<Option<i32>> = vec![None; slots];
        let mut next_pid = 100;
        let mut served = vec![0u64; slots];
        // Requests counted since start: survives every fold.
        let mut total = 0u64;
        for op in ops {
            let nth_used = |n: usize, used: &[Option<i32>]| {
                let live: Vec<usize> = (0..slots).filter(|&i| used[i].is_some()).collect();
                (!live.is_empty()).then(|| live[n % live.len()])
            };
            match op {
                Op::Spawn => {
                    let free = used.iter().filter(|u| u.is_none()).count();
                    match board.allocate() {
                        Some(slot) => {
                            prop_assert!(used[slot.0].is_none(), "slot {} doubled", slot.0);
                            prop_assert_eq!(board.state(slot), SlotState::Forking);
                            used[slot.0] = Some(0);
                            served[slot.0] = 0;
                        }
                        None => prop_assert_eq!(free, 0, "a free slot was lost"),
                    }
                }
                Op::Started(n) => {
                    if let Some(i) = nth_used(n, &used) {
                        let slot = SlotId(i);
                        if board.state(slot) == SlotState::Forking {
                            next_pid += 1;
                            used[i] = Some(next_pid);
                            board.set_pid(slot, next_pid);
                            board.set_state(slot, if prefork { SlotState::Starting } else { SlotState::Req });
                        }
                    }
                }
                Op::Update(n, kind) => {
                    if let Some(i) = nth_used(n, &used) {
                        let slot = SlotId(i);
                        let before = board.state(slot);
                        match worker_step(prefork, before, kind) {
                            Step::To(next) => board.set_state(slot, next),
                            Step::Finish => {
                                served[i] = board.count_request(slot);
                                total += 1;
                                let done = !prefork || served[i] >= limit;
                                board.set_state(slot, if done { SlotState::Exit } else { SlotState::Wait });
                            }
                            Step::Count => {
                                // Served(1) while busy: counted, and the
                                // state stays unless the limit is reached.
                                served[i] = board.count_requests(slot, 1);
                                total += 1;
                                if prefork && served[i] >= limit {
                                    board.set_state(slot, SlotState::Exit);
                                } else {
                                    board.touch(slot);
                                    prop_assert_eq!(board.state(slot), before, "Served changed the state");
                                }
                            }
                            Step::Stay | Step::Invalid => {
                                prop_assert_eq!(board.state(slot), before, "an ignored update changed the slot");
                            }
                        }
                    }
                }
                Op::Term(n) => {
                    if let Some(i) = nth_used(n, &used) {
                        let slot = SlotId(i);
                        let state = board.state(slot);
                        if !state.is_busy() && !matches!(state, SlotState::Forking) {
                            board.set_state(slot, SlotState::Exit);
                        }
                    }
                }
                Op::Exit(n) => {
                    if let Some(i) = nth_used(n, &used) {
                        board.free(SlotId(i));
                        used[i] = None;
                    }
                }
            }
            // Invariants, after every step.
            for (i, held) in used.iter().enumerate() {
                let slot = SlotId(i);
                let state = board.state(slot);
                prop_assert_eq!(state == SlotState::Empty, held.is_none(), "slot {} out of step", i);
                prop_assert!(" Ff.wrle".contains(state.letter()));
                match state {
                    // The parent side of a fork: no worker pid yet.
                    SlotState::Forking => prop_assert_eq!(board.snapshot(slot).pid, 0),
                    SlotState::Empty => prop_assert_eq!(board.snapshot(slot).pid, 0),
                    // Any other letter is a live worker with its pid.
                    _ => prop_assert_eq!(Some(board.snapshot(slot).pid), *held),
                }
                if !prefork {
                    prop_assert!(!state.is_idle(), "a fork-per-request worker never waits");
                }
                if state == SlotState::FirstWait {
                    prop_assert_eq!(board.snapshot(slot).requests, 0, "'.' means before the first request");
                }
            }
            prop_assert_eq!(board.counters().requests, total, "a request count was lost or doubled by a fold");
            let tally = board.tally();
            prop_assert_eq!(tally.iter().sum::<usize>(), slots);
            prop_assert_eq!(slots - tally[SlotState::Empty as usize], used.iter().filter(|u| u.is_some()).count());
        }
    }
}
