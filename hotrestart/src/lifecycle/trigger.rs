//! The trigger loop: signals and `Hot::restart` calls, one restart at a time, and stopping.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::conns::Verdict;
use crate::error::Error;

use super::handover::restart;
use super::{Exit, Inner, RestartReply, MAX_GENERATIONS};

pub(super) struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn install() -> Signals {
        let install = |kind| signal(kind).expect("installing a signal handler");
        Signals {
            hup: install(SignalKind::hangup()),
            term: install(SignalKind::terminate()),
            int: install(SignalKind::interrupt()),
        }
    }
}

enum Trigger {
    Signal,
    Call(RestartReply),
    Stop(&'static str),
}

async fn next_trigger(signals: &mut Signals, calls: &mut mpsc::Receiver<RestartReply>) -> Trigger {
    tokio::select! {
        _ = signals.hup.recv() => Trigger::Signal,
        Some(reply) = calls.recv() => Trigger::Call(reply),
        _ = signals.term.recv() => Trigger::Stop("SIGTERM"),
        _ = signals.int.recv() => Trigger::Stop("SIGINT"),
    }
}

/// Owns the restart triggers: one restart at a time; triggers during one are coalesced
/// (signals) or refused (calls).
pub(super) async fn run_triggers(
    inner: Arc<Inner>,
    mut signals: Signals,
    mut calls: mpsc::Receiver<RestartReply>,
) {
    let mut ready = inner.ready_tx.subscribe();
    let early_stop = tokio::select! {
        _ = ready.wait_for(|r| *r) => None,
        _ = signals.term.recv() => Some("SIGTERM"),
        _ = signals.int.recv() => Some("SIGINT"),
    };
    if let Some(why) = early_stop {
        if inner.predecessor.lock().unwrap().is_some() || inner.generation == 0 {
            stop_before_ready(why);
        }
        // A successor taking over holds state that exists nowhere else once its predecessor
        // has let go: it finishes the take-over (or fails it, and exits), then stops as asked,
        // saving that state.
        tracing::info!("{why} while taking over: stopping once ready");
        let _ = ready.wait_for(|r| *r).await;
        tracing::info!("{why}: draining and exiting");
        stop(&inner, Exit::Terminated);
        return;
    }
    loop {
        let reply = match next_trigger(&mut signals, &mut calls).await {
            Trigger::Signal => {
                tracing::info!(generation = inner.generation, "SIGHUP: hot restart");
                None
            }
            Trigger::Call(reply) => Some(reply),
            Trigger::Stop(why) => {
                tracing::info!("{why}: draining and exiting");
                stop(&inner, Exit::Terminated);
                return;
            }
        };
        let live = inner.live_ancestors();
        if live.len() + 2 > MAX_GENERATIONS {
            let reason = format!(
                "restart refused: {} older generation(s) still draining (pids {live:?}); at most {MAX_GENERATIONS} generations may be alive at once, try again when they have exited",
                live.len()
            );
            tracing::warn!("{reason}");
            if let Some(reply) = reply {
                let _ = reply.send((Err(Error::Refused { reason }), inner.handover.work.enter()));
            }
            continue;
        }
        let restart = tracing::Instrument::instrument(
            restart(&inner),
            tracing::info_span!(
                "restart",
                from_generation = inner.generation,
                old_pid = std::process::id()
            ),
        );
        let mut restart = Box::pin(restart);
        // A stop asked for once the successor may already be serving the connections: the
        // restart's outcome (READY, or a failure within the ready timeout) is awaited first.
        let mut stop_after: Option<&'static str> = None;
        let outcome = loop {
            tokio::select! {
                // An outcome that is already there (READY received) wins over a trigger.
                biased;
                outcome = &mut restart => break outcome,
                trigger = next_trigger(&mut signals, &mut calls) => match trigger {
                    Trigger::Signal => tracing::info!("SIGHUP during a restart: coalesced into the running one"),
                    Trigger::Call(reply) => {
                        tracing::info!("restart requested during a restart: refused");
                        let _ = reply.send((Err(Error::RestartInProgress), inner.handover.work.enter()));
                    }
                    Trigger::Stop(why) if inner.handover.outbox.in_successor_hands() => {
                        tracing::warn!("{why} during a restart whose connections were already sent: finishing the handover first");
                        stop_after = Some(why);
                    }
                    Trigger::Stop(why) => {
                        tracing::warn!("{why} during a restart: abandoning it, draining and exiting");
                        // The successor is killed first, before its channel closes: seeing
                        // the channel end it would fall back to the state file and announce
                        // itself as the serving process. Only then are the parked
                        // connections given back, so no two processes read them.
                        inner.kill_successor();
                        drop(restart);
                        // If the successor had announced itself to a supervisor, this
                        // process serves (and now stops) again.
                        inner.notifier.ready();
                        stop(&inner, Exit::Terminated);
                        return;
                    }
                },
            }
        };
        if let Some(why) = stop_after {
            let committed = outcome.is_ok();
            if let Some(reply) = reply {
                let _ = reply.send((outcome, inner.handover.work.enter()));
            }
            if committed {
                tracing::info!("{why}: handed over, exiting");
                stop(&inner, Exit::HandedOver);
            } else {
                tracing::info!("{why}: draining and exiting");
                stop(&inner, Exit::Terminated);
            }
            return;
        }
        let committed = outcome.is_ok();
        if let Some(reply) = reply {
            let _ = reply.send((outcome, inner.handover.work.enter()));
        }
        if committed {
            stop(&inner, Exit::HandedOver);
            return;
        }
    }
}

fn stop_before_ready(why: &str) -> ! {
    tracing::info!("{why} before the service was ready: exiting");
    std::process::exit(0)
}

fn stop(inner: &Inner, exit: Exit) {
    if exit == Exit::Terminated {
        inner.notifier.stopping();
    }
    *inner.exit.lock().unwrap() = exit;
    if exit == Exit::Terminated {
        // A handover abandoned midway: parked connections are served (and drained) here.
        inner.handover.outbox.decide(Verdict::Kept);
    }
    inner.stop();
}
