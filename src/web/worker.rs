//! The worker's subscriber to the daemon: on `Shutdown` it stops the
//! acceptors and waits (at most the shutdown timeout) for the connections
//! to close.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{info, warn};
use tokio::sync::watch;

use super::accept::Shared;
use crate::daemon::DaemonActor;
use crate::messages::{DaemonSignal, Subscribe};

/// How often a stopping worker looks at its acceptors and connections.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// The worker's subscriber: stops the server gracefully on `Shutdown`.
pub(super) struct WebWorker {
    pub(super) stop: watch::Sender<bool>,
    pub(super) shared: Arc<Shared>,
    /// The threads of the other acceptors; they end with the worker's
    /// `System`.
    pub(super) _arbiters: Vec<Arbiter>,
    pub(super) drain_for: Duration,
}

impl Actor for WebWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        DaemonActor::from_registry().do_send(Subscribe(ctx.address().recipient()));
    }
}

impl Handler<DaemonSignal> for WebWorker {
    // `Accept` comes after every `Done`: answered without a future.
    type Result = Response<()>;

    fn handle(&mut self, signal: DaemonSignal, _: &mut Context<Self>) -> Self::Result {
        if !matches!(signal, DaemonSignal::Shutdown) {
            return Response::reply(());
        }
        // The daemon waits for this future (up to its shutdown timeout)
        // before it ends the worker.
        self.shared.tracker.drain();
        let _ = self.stop.send(true);
        let shared = self.shared.clone();
        let deadline = Instant::now() + self.drain_for;
        Response::fut(async move {
            let log = shared.log.clone();
            // Every acceptor stops at its next poll, having counted what it
            // accepted; the other workers accept from then on.
            while shared.acceptors.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                actix_rt::time::sleep(DRAIN_POLL).await;
            }
            let open = shared.connections.load(Ordering::Acquire);
            if open > 0 {
                info!(log, "draining connections"; "open" => open);
            }
            while shared.connections.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                actix_rt::time::sleep(DRAIN_POLL).await;
            }
            let left = shared.connections.load(Ordering::Acquire);
            if left > 0 {
                warn!(log, "shutdown timeout: closing connections"; "open" => left);
            }
        })
    }
}
