//! Test helpers shared by the tests of `accept` and `tracker`.

use std::sync::{Arc, Mutex};

use super::tracker::{Note, Sink, Tracker};

pub(super) fn tracker(limit: Option<u64>) -> (Tracker, Arc<Mutex<Vec<Note>>>) {
    let notes = Arc::new(Mutex::new(Vec::new()));
    (Tracker::new(Sink::Record(notes.clone()), limit), notes)
}

pub(super) fn take(notes: &Mutex<Vec<Note>>) -> Vec<Note> {
    std::mem::take(&mut *notes.lock().unwrap())
}
