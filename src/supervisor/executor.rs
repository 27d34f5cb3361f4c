//! The actor side of the supervisor: the watchers that turn descriptors
//! into events, the intervals, and the executor that carries out the
//! [`Effect`]s the supervisor queued.
//!
//! Everything here needs the actor's `Context`; nothing here decides
//! anything.

use std::os::fd::AsRawFd;

use actix::prelude::*;
use nix::errno::Errno;

use super::effects::Effect;
use super::phase::Phase;
use super::{SWEEP, Supervisor};
use crate::daemon::{Common, DaemonActor, FromSpawner, UpgradeVerdict, Woken};
use crate::process;

/// Starts the tasks that watch the wake-up eventfd and the spawner's socket
/// (each worker's channel is watched from its spawn report on), the sweep and the
/// systemd watchdog, and the babysitter.
pub(crate) fn attach(s: &mut Supervisor, c: &Common, ctx: &mut Context<DaemonActor>) {
    let addr = ctx.address();
    if let Some(wake) = s.wake.clone() {
        let addr = addr.clone();
        actix_rt::spawn(async move {
            let Ok(fd) = process::watch(wake) else {
                return;
            };
            loop {
                let Ok(mut guard) = fd.readable().await else {
                    return;
                };
                guard.clear_ready();
                if fd.get_ref().0.drain() {
                    addr.do_send(Woken);
                }
            }
        });
    }
    s.attach_os(addr.clone());
    if let Some(spawner) = &mut s.spawner
        && let Some(sock) = spawner.sock.clone()
    {
        let addr = addr.clone();
        spawner.task = Some(actix_rt::spawn(async move {
            use process::wire::FromSpawner as Msg;
            let Ok(fd) = process::watch(sock) else {
                addr.do_send(FromSpawner(Msg::Closed));
                return;
            };
            loop {
                let Ok(mut guard) = fd.readable().await else {
                    return;
                };
                loop {
                    match process::wire::recv_reply(fd.get_ref().as_raw_fd()) {
                        Ok(Msg::Closed) => {
                            addr.do_send(FromSpawner(Msg::Closed));
                            return;
                        }
                        Ok(msg) => addr.do_send(FromSpawner(msg)),
                        Err(Errno::EAGAIN) => {
                            guard.clear_ready();
                            break;
                        }
                        Err(Errno::EINTR) => {}
                        Err(_) => {
                            addr.do_send(FromSpawner(Msg::Closed));
                            return;
                        }
                    }
                }
            }
        }));
    }
    if let Some(interval) = crate::systemd::watchdog_interval()
        && s.systemd.is_some()
    {
        ctx.run_interval(interval / 2, |act, _ctx| {
            if let Some((_, s)) = act.supervisor_mut() {
                s.watchdog();
            }
        });
    }
    ctx.run_interval(SWEEP, |act, ctx| {
        if let Some((c, s)) = act.supervisor_mut() {
            s.sweep(c);
        }
        execute(act, ctx);
    });
    if let (Some(limits), Some(_)) = (c.config.babysit_limits(), c.board.as_ref()) {
        crate::babysitter::BabysitterActor::new(limits, c.log.clone(), addr).start();
    }
}

/// Carries out, in order, every effect the supervisor queued (and those
/// that carrying them out queues in turn).
pub(crate) fn execute(act: &mut DaemonActor, ctx: &mut Context<DaemonActor>) {
    loop {
        let Some((c, s)) = act.supervisor_mut() else {
            return;
        };
        if s.effects.is_empty() {
            return;
        }
        let effects = std::mem::take(&mut s.effects);
        for effect in effects {
            carry_out(c, s, effect, ctx);
        }
    }
}

/// Runs `f` on the supervisor after `delay`, then carries out its effects.
fn later(
    ctx: &mut Context<DaemonActor>,
    delay: std::time::Duration,
    f: fn(&mut Supervisor, &mut Common),
) {
    ctx.run_later(delay, move |act, ctx| {
        if let Some((c, s)) = act.supervisor_mut() {
            f(s, c);
        }
        execute(act, ctx);
    });
}

fn carry_out(c: &mut Common, s: &mut Supervisor, effect: Effect, ctx: &mut Context<DaemonActor>) {
    match effect {
        Effect::LookAt(at) => {
            let delay = at.saturating_duration_since(s.os.now());
            later(ctx, delay, |s, c| {
                s.timer_for = None;
                s.after_change(c);
            });
        }
        Effect::ResendAfter(delay) => later(ctx, delay, Supervisor::resend_unsent),
        Effect::DrainDeadline(after) => later(ctx, after, Supervisor::kill_remaining),
        Effect::KillDeadline(after) => later(ctx, after, Supervisor::kill_deadline),
        Effect::ShutdownSubscribers => c.broadcast_shutdown_and_wait(ctx),
        Effect::AwaitVerdict(pipe) => {
            // The task owns the pipe: aborting it (a TERM during the
            // upgrade) closes the pipe, which tells the new supervisor to
            // stop. If the upgrade is over already, dropping the pipe here
            // does the same.
            if let Phase::Upgrading { verdict, .. } = &mut s.phase {
                let addr = ctx.address();
                *verdict = Some(actix_rt::spawn(async move {
                    let text = process::read_to_end(pipe).await;
                    let result = match text.split_first() {
                        Some((b'R', pid)) => Ok(String::from_utf8_lossy(pid).into_owned()),
                        Some((b'E', message)) => Err(String::from_utf8_lossy(message).into_owned()),
                        _ => Err("the new binary exited before it was ready".to_owned()),
                    };
                    addr.do_send(UpgradeVerdict(result.map(|pid| pid.trim().parse().ok())));
                }));
            }
        }
        Effect::Stop(code) => c.stop_system(code),
    }
}
