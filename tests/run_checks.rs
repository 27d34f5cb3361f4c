//! `run` refuses to fork from a process where forking is unsafe.

use actix_daemon::{Daemon, Error};

#[test]
fn run_refuses_inside_a_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        Daemon::builder()
            .max_children(1)
            .build()
            .unwrap()
            .run(|_| unreachable!("must not start"))
    });
    assert!(matches!(result, Err(Error::InsideRuntime)), "{result:?}");
}

#[test]
fn run_refuses_with_other_threads() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    let result = Daemon::builder()
        .start_children(1)
        .build()
        .unwrap()
        .run(|_| unreachable!("must not start"));
    drop(tx);
    other.join().unwrap();
    match result {
        Err(Error::Threaded { threads }) => assert!(threads >= 2),
        other => panic!("{other:?}"),
    }
}
