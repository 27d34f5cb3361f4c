//! Micro benchmarks (criterion) of the paths a busy pool takes for every
//! request, all in this one process (nothing is forked):
//!
//! - `scoreboard_update`: a worker's state change `r` -> `w` -> `r` written
//!   to the shared scoreboard mapping, with the supervisor's wake-up (an
//!   eventfd write) that a pre-forked worker makes on both changes.
//!   - `write_only`: the bare scoreboard stores (no wake-up), for scale;
//!   - `set_state`: the worker's own state change (`Core::set_state`: the
//!     stores and the eventfd write), nobody waiting on the eventfd;
//!   - `set_state+drain`: the same, and the supervisor's read of the eventfd
//!     after each change, on the same thread (the syscall cost of both
//!     sides, without a context switch);
//!   - `set_state/watched`: the writer's side while a thread waits on the
//!     eventfd as the supervisor does (tokio's reactor in an actix
//!     `System`), so that every write wakes it; the writer does not wait;
//!   - `set_state/round_trip`: the writer waits after each change until that
//!     thread has drained the wake-up: the latency from a worker's change to
//!     the supervisor having consumed it (two per iteration).
//! - `update_status`: `UpdateStatus::Req` then `UpdateStatus::Done` to a
//!   pre-forked worker's `DaemonActor`; the slot goes `w` -> `r` -> `w` and
//!   the request is counted.
//!   - `send_await`: through the mailbox, `send(..).await` on each (two round
//!     trips per iteration), the actor started in an actix `System` on this
//!     thread;
//!   - `handle_direct`: the same handler called without the mailbox, for
//!     the mailbox's share;
//!   - `served_direct`: `UpdateStatus::Served(2)` to a busy worker (what the
//!     web middleware sends for requests that end while others are in
//!     flight): two requests counted, no state change, no wake-up.
//! - `status_report`: a 1,000-slot scoreboard with every slot held by a
//!   worker (a mix of `.`, `w`, `r`, `l`, `f`):
//!   - `build`: the `StatusReport` the supervisor answers to `Status`;
//!   - `text`: rendering it with `Display` (one line per worker);
//!   - `json`: `serde_json::to_string`.
//!
//! ```text
//! cargo bench --bench micro                # about 30 s
//! cargo bench --bench micro -- --quick     # a few seconds
//! cargo bench --bench micro -- status      # one group
//! ```
//!
//! The machine's noise matters at this scale: compare numbers of one run.
//! The `update_status` group starts the worker's `DaemonActor`, which listens
//! for signals as a worker does; that group runs last, and from then on the
//! bench process catches SIGINT and SIGTERM instead of dying of them.

use std::hint::black_box;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler};
use actix_daemon::bench_support::{Pool, set_worker_state, status_report};
use actix_daemon::{Payload, SlotId, SlotState, UpdateStatus};
use criterion::{Criterion, criterion_group, criterion_main};

/// Short runs: the machine is small and shared.
fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

/// A pool of 8 slots with one pre-forked worker in `r`.
fn busy_worker() -> (Pool, SlotId, actix_daemon::DaemonActor) {
    let pool = Pool::new(8).expect("scoreboard and eventfd");
    let slot = pool.add_worker().expect("a free slot");
    let mut worker = pool.worker(slot);
    set_worker_state(&mut worker, SlotState::Req);
    assert_eq!(pool.state(slot), SlotState::Req);
    (pool, slot, worker)
}

fn scoreboard_update(c: &mut Criterion) {
    let (pool, slot, mut worker) = busy_worker();
    let mut group = c.benchmark_group("scoreboard_update");
    group.bench_function("write_only", |b| {
        b.iter(|| {
            pool.set_state(slot, SlotState::Wait);
            pool.set_state(slot, SlotState::Req);
        })
    });
    group.bench_function("set_state", |b| {
        b.iter(|| {
            set_worker_state(&mut worker, SlotState::Wait);
            set_worker_state(&mut worker, SlotState::Req);
        })
    });
    // A change writes a wake-up: check it, as the supervisor would see it
    // (here, not after the benchmark above: a filter may skip it).
    set_worker_state(&mut worker, SlotState::Wait);
    set_worker_state(&mut worker, SlotState::Req);
    assert!(pool.drain(), "set_state wrote no wake-up");
    group.bench_function("set_state+drain", |b| {
        b.iter(|| {
            set_worker_state(&mut worker, SlotState::Wait);
            assert!(pool.drain());
            set_worker_state(&mut worker, SlotState::Req);
            assert!(pool.drain());
        })
    });
    {
        let watcher = pool.watch_wakeups().expect("a watcher thread");
        group.bench_function("set_state/watched", |b| {
            b.iter(|| {
                set_worker_state(&mut worker, SlotState::Wait);
                set_worker_state(&mut worker, SlotState::Req);
            })
        });
        group.bench_function("set_state/round_trip", |b| {
            b.iter(|| {
                let seen = watcher.seen();
                set_worker_state(&mut worker, SlotState::Wait);
                watcher.wait_past(seen);
                let seen = watcher.seen();
                set_worker_state(&mut worker, SlotState::Req);
                watcher.wait_past(seen);
            })
        });
    }
    group.finish();
    assert_eq!(pool.state(slot), SlotState::Req);
}

fn update_status(c: &mut Criterion) {
    let mut group = c.benchmark_group("update_status");

    // Without the mailbox: the handler on an actor that is not started.
    {
        let pool = Pool::new(8).expect("scoreboard and eventfd");
        let slot = pool.add_worker().expect("a free slot");
        let mut worker = pool.worker(slot);
        let mut ctx = Context::new();
        worker.handle(UpdateStatus::Wait, &mut ctx);
        assert_eq!(pool.state(slot), SlotState::FirstWait);
        // One request first, so that the checks below hold even when a
        // filter skips the benchmark.
        worker.handle(UpdateStatus::Req(Payload::new()), &mut ctx);
        worker.handle(UpdateStatus::Done, &mut ctx);
        group.bench_function("handle_direct", |b| {
            b.iter(|| {
                worker.handle(UpdateStatus::Req(Payload::new()), &mut ctx);
                worker.handle(UpdateStatus::Done, &mut ctx);
            })
        });
        assert_eq!(pool.state(slot), SlotState::Wait);
        assert!(pool.requests(slot) > 0, "no request was counted");
        // What a busy web worker sends instead: two requests counted while
        // it stays `r` (no state change, no wake-up).
        worker.handle(UpdateStatus::Req(Payload::new()), &mut ctx);
        let before = pool.requests(slot);
        worker.handle(UpdateStatus::Served(2), &mut ctx);
        group.bench_function("served_direct", |b| {
            b.iter(|| {
                worker.handle(UpdateStatus::Served(2), &mut ctx);
            })
        });
        assert_eq!(pool.state(slot), SlotState::Req);
        assert!(pool.requests(slot) > before, "Served counted nothing");
    }

    // Through the mailbox, the worker's actor running in an actix System.
    let pool = Pool::new(8).expect("scoreboard and eventfd");
    let slot = pool.add_worker().expect("a free slot");
    let system = actix_rt::System::new();
    let worker = pool.worker(slot);
    let addr = system.block_on(async move {
        let addr = worker.start();
        // `f` -> `.`: ready, as a worker's application says once set up.
        addr.send(UpdateStatus::Wait).await.expect("actor alive");
        addr
    });
    assert_eq!(pool.state(slot), SlotState::FirstWait);
    system.block_on(async {
        addr.send(UpdateStatus::Req(Payload::new()))
            .await
            .expect("actor alive");
        addr.send(UpdateStatus::Done).await.expect("actor alive");
    });
    group.bench_function("send_await", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    addr.send(UpdateStatus::Req(Payload::new()))
                        .await
                        .expect("actor alive");
                    addr.send(UpdateStatus::Done).await.expect("actor alive");
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    assert_eq!(pool.state(slot), SlotState::Wait);
    assert!(pool.requests(slot) > 0, "no request was counted");
    drop(addr);
    drop(system);
}

/// States of a busy 1,000-worker pool, repeated over the slots.
const MIX: [SlotState; 10] = [
    SlotState::Req,
    SlotState::Wait,
    SlotState::Req,
    SlotState::Long,
    SlotState::Wait,
    SlotState::Req,
    SlotState::FirstWait,
    SlotState::Req,
    SlotState::Wait,
    SlotState::Starting,
];

fn status(c: &mut Criterion) {
    const SLOTS: usize = 1000;
    let pool = Pool::new(SLOTS).expect("scoreboard and eventfd");
    for i in 0..SLOTS {
        let slot = pool.add_worker().expect("a free slot");
        pool.set_pid(slot, 10_000 + i as i32);
        for _ in 0..i % 7 {
            pool.count_request(slot);
        }
        pool.set_state(slot, MIX[i % MIX.len()]);
    }
    assert!(pool.add_worker().is_none(), "every slot is taken");
    let supervisor = pool.supervisor();
    let report = status_report(&supervisor).expect("a daemon's report");
    assert_eq!(report.slots.len(), SLOTS);
    let text = report.to_string();
    let json = serde_json::to_string(&report).expect("serialisable");
    println!(
        "status_report: {} slots, text {} bytes, json {} bytes",
        SLOTS,
        text.len(),
        json.len()
    );

    let mut group = c.benchmark_group("status_report");
    group.bench_function("build", |b| {
        b.iter(|| status_report(black_box(&supervisor)))
    });
    group.bench_function("text", |b| b.iter(|| black_box(&report).to_string()));
    group.bench_function("json", |b| {
        b.iter(|| serde_json::to_string(black_box(&report)).expect("serialisable"))
    });
    group.finish();
}

criterion_group! {
    name = micro;
    config = short();
    // `update_status` last: it leaves signal handlers installed.
    targets = scoreboard_update, status, update_status
}
criterion_main!(micro);
