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
