//! The successor's side of a hot restart: PREPARED, the snapshot, the connections, READY.

use std::time::{Duration, Instant};

use tokio::net::UnixStream;

use crate::conns::Arrival;
use crate::error::{Error, Result};
use crate::handoff::{self};
use crate::notify::Notifier;
use crate::options::Options;
use crate::snapshot::{ReadFailure, SnapshotReader, State};

use super::precopy::{self, Refused};
use super::{millis, Hot};
use crate::handoff::MAX_SNAPSHOT;

/// What a successor offers in PREPARED: it takes open connections if it can serve them (and
/// its operator did not turn that off); it announces itself to its supervisor if it has one.
fn capabilities(options: &Options, notifier: &Notifier) -> u8 {
    // Receiving pieces of tracked fields: whether they come while the previous process
    // still serves is its own setting (`Options::precopy`).
    let precopy = handoff::CAP_PRECOPY;
    let connections = match (options.hand_over_connections, cfg!(feature = "http")) {
        (false, _) => 0,
        (true, true) => handoff::CAP_CONNECTIONS | handoff::CAP_CUSTOM,
        (true, false) => handoff::CAP_CUSTOM,
    };
    let announces = if notifier.supervised() {
        handoff::CAP_ANNOUNCES
    } else {
        0
    };
    connections | announces | precopy
}

/// How long handed-over connections wait for a `serve` on their listener before being closed.
pub(super) const UNCLAIMED_CONNECTIONS: Duration = Duration::from_secs(5);

impl Hot {
    pub(super) async fn take_over<S: State>(
        &self,
        handoff: precopy::Early,
        state: &mut S,
    ) -> Result<()> {
        let precopy::Early {
            mut chan,
            frames: early,
            cut: early_cut,
            corrupt: early_corrupt,
            ended: early_ended,
        } = handoff;
        let offered = capabilities(&self.inner.options, &self.inner.notifier);
        // Whether CONNECTIONS frames follow the snapshot: the previous process says so in a
        // PLAN frame before it. One that sends none (an older version, or hand-over turned off
        // there) sends SNAPSHOT right away, and no connections.
        let mut planned = 0u8;
        // Tracked fields pre-copied while the previous process still serves (if it offers).
        let mut receiving = precopy::Receiving::default();
        // No deadline of its own: the previous process has one (its ready timeout), and kills
        // this process when it passes; a channel that ends means it died (see below).
        let header = async {
            let cut = |e: std::io::Error| Refused::Cut(e.to_string());
            if let Some(why) = early_corrupt {
                return Err(Refused::Corrupt(Error::handoff(why)));
            }
            if let Some(why) = early_cut {
                return Err(Refused::Cut(why));
            }
            // The first round, received while this process initialised: typed now; the rest
            // of it, if it is still coming, applied as it arrives.
            let mut early_accept = None;
            let mut early_frames = early.into_iter();
            let mut ended = early_ended;
            loop {
                let frame = match early_frames.next() {
                    Some(frame) => frame,
                    None if ended => break,
                    None => handoff::read_frame(&mut chan, MAX_SNAPSHOT)
                        .await
                        .map_err(cut)?,
                };
                match frame.tag {
                    handoff::TAG_PRECOPY => {
                        let taken = receiving
                            .accept_offer(&*state, &frame.payload)
                            .map_err(Refused::Corrupt)?;
                        early_accept = Some(taken);
                    }
                    handoff::TAG_PIECE => receiving
                        .early_piece(&frame.payload)
                        .map_err(Refused::Corrupt)?,
                    handoff::TAG_EARLY_END => ended = true,
                    tag => {
                        return Err(Refused::Corrupt(Error::handoff(format!(
                            "{} during the first pre-copy round",
                            handoff::tag_name(tag)
                        ))))
                    }
                }
            }
            handoff::write_frame(&mut chan, handoff::TAG_PREPARED, &[offered])
                .await
                .map_err(cut)?;
            if let Some(taken) = early_accept {
                precopy::send_accept(&mut chan, &taken).await.map_err(cut)?;
            }
            let mut header = handoff::read_frame_header(&mut chan, MAX_SNAPSHOT)
                .await
                .map_err(cut)?;
            while matches!(
                header.0,
                handoff::TAG_PRECOPY | handoff::TAG_PIECE | handoff::TAG_PRECOPY_SYNC
            ) {
                let payload = handoff::read_frame_payload(&mut chan, header.1, MAX_SNAPSHOT)
                    .await
                    .map_err(cut)?;
                match header.0 {
                    handoff::TAG_PRECOPY => receiving.offered(&*state, &payload, &mut chan).await?,
                    handoff::TAG_PIECE => receiving.piece(&payload).map_err(Refused::Corrupt)?,
                    _ => handoff::write_frame(&mut chan, handoff::TAG_PRECOPY_SYNC, &[])
                        .await
                        .map_err(cut)?,
                }
                header = handoff::read_frame_header(&mut chan, MAX_SNAPSHOT)
                    .await
                    .map_err(cut)?;
            }
            if header.0 != handoff::TAG_PLAN {
                return Ok(header);
            }
            let plan = handoff::read_frame_payload(&mut chan, header.1, handoff::MAX_CONTROL)
                .await
                .map_err(cut)?;
            planned = plan.first().copied().unwrap_or(0) & offered & handoff::CAPS_WITH_CONNECTIONS;
            handoff::read_frame_header(&mut chan, MAX_SNAPSHOT)
                .await
                .map_err(cut)
        }
        .await;
        let vanished = match header {
            Ok((handoff::TAG_SNAPSHOT, len)) => {
                let receiving_since = Instant::now();
                let (back, received) = receive_snapshot(chan, len).await?;
                chan = back;
                let receive_ms = millis(receiving_since.elapsed());
                match received {
                    Received::Snapshot(mut reader) => {
                        let restoring = Instant::now();
                        let restored = std::mem::take(&mut receiving)
                            .stage(&mut reader)
                            .and_then(|()| state.restore(&mut reader))
                            .and_then(|()| self.inner.restore_internal(&mut reader));
                        if let Err(e) = restored {
                            return Err(reject(&mut chan, "snapshot", e).await);
                        }
                        reader.log_ignored();
                        tracing::info!(
                            state_bytes = len,
                            receive_ms,
                            restore_ms = millis(restoring.elapsed()),
                            "state received from the previous process"
                        );
                        if planned != 0 {
                            if let Err(e) = self.receive_connections(&mut chan).await {
                                return Err(reject(&mut chan, "connections", e).await);
                            }
                        }
                        None
                    }
                    Received::Corrupt(e) => return Err(reject(&mut chan, "snapshot", e).await),
                    Received::Cut(why) => Some(why),
                }
            }
            Ok((tag, _)) => {
                let e =
                    Error::handoff(format!("expected SNAPSHOT, got {}", handoff::tag_name(tag)));
                return Err(reject(&mut chan, "snapshot", e).await);
            }
            Err(Refused::Corrupt(e)) => return Err(reject(&mut chan, "pre-copied state", e).await),
            Err(Refused::Cut(why)) => Some(why),
        };
        // The channel ended before the state came. If the previous process died (it is no
        // longer this process's parent), the state file is the best state left: serve on it.
        // If it is alive, it holds the live state and does not hand it over (it rolls back):
        // serving would make two processes accept, one with a stale state; refuse.
        if vanished.is_some() && !self.predecessor_gone_soon().await {
            let e = Error::handoff(
                "the channel ended before the snapshot while the previous process is alive (it keeps its state)",
            );
            return Err(reject(&mut chan, "handover", e).await);
        }
        // What was pre-copied is dropped before the state file is read: never both at once.
        drop(receiving);
        let vanished = vanished.is_some_and(|why| {
            tracing::warn!("the previous process went away before handing over its state ({why}): falling back to the state file, else the initial state");
            self.cold_restore(state);
            true
        });
        self.close_unclaimed();
        // Announced before READY reaches the previous process, which may exit right after:
        // whoever follows the service (the supervisor, systemd) learns of this process first.
        if !self.inner.notifier.ready() && self.inner.notifier.supervised() && !vanished {
            // Its predecessor would exit on READY and the supervisor, not knowing of this
            // process, would take that for the end of the service: refuse instead.
            let e = Error::handoff(
                "could not announce this process to the supervisor (it does not read its socket)",
            );
            return Err(reject(&mut chan, "handover", e).await);
        }
        if let Err(e) = handoff::write_frame(&mut chan, handoff::TAG_READY, &[]).await {
            tracing::warn!("could not report READY to the previous process ({e}); serving anyway");
        }
        Ok(())
    }

    /// Reads the CONNECTIONS frames that follow the snapshot into the inbox.
    async fn receive_connections(&self, chan: &mut UnixStream) -> Result<()> {
        let started = Instant::now();
        let limit = self.inner.options.ready_timeout;
        let mut count = 0usize;
        loop {
            let frame = tokio::time::timeout(limit, handoff::recv_connections(chan))
                .await
                .map_err(|_| Error::handoff(format!("no CONNECTIONS within {limit:?}")))?;
            let (last, batch) = match frame {
                Ok(frame) => frame,
                Err(handoff::ConnectionsError::Refused(why)) => return Err(Error::handoff(why)),
                Err(handoff::ConnectionsError::Gone(why)) => {
                    // The state is restored and the listeners are ours: serve, with the
                    // connections that arrived (the others died with the previous process).
                    tracing::warn!(
                        received = count,
                        "the previous process went away while handing over its connections ({why}): serving those received"
                    );
                    break;
                }
            };
            count += batch.len();
            for (entry, fd) in batch {
                self.inner.handover.inbox.put(
                    entry.key,
                    Arrival {
                        fd,
                        prefix: entry.prefix,
                    },
                );
            }
            if last {
                break;
            }
        }
        if count > 0 {
            tracing::info!(
                connections = count,
                elapsed_ms = millis(started.elapsed()),
                "open connections received from the previous process"
            );
        }
        Ok(())
    }
}

enum Received {
    Snapshot(SnapshotReader),
    /// The data is wrong: the successor must refuse it.
    Corrupt(Error),
    /// The channel ended before the snapshot did.
    Cut(String),
}

/// Snapshots up to this size are read whole and decoded in place: cheaper than a blocking thread.
const SMALL_SNAPSHOT: u64 = 256 << 10;

/// Reads a snapshot of `len` bytes from the channel. A small one is read whole; a large one is
/// read field by field on a blocking thread (the decoder is synchronous; no frame-sized buffer
/// is ever allocated). Gives the channel back.
async fn receive_snapshot(mut chan: UnixStream, len: u64) -> Result<(UnixStream, Received)> {
    if len <= SMALL_SNAPSHOT {
        use tokio::io::AsyncReadExt;
        let mut frame = vec![0u8; len as usize];
        let received = match chan.read_exact(&mut frame).await {
            Ok(_) => match SnapshotReader::new(frame) {
                Ok(reader) => Received::Snapshot(reader),
                Err(e) => Received::Corrupt(e),
            },
            Err(e) => Received::Cut(format!("SNAPSHOT frame truncated: {e}")),
        };
        return Ok((chan, received));
    }
    let std = chan
        .into_std()
        .map_err(|e| Error::io("handoff channel", e))?;
    std.set_nonblocking(false)
        .map_err(|e| Error::io("handoff channel", e))?;
    std.set_read_timeout(None)
        .map_err(|e| Error::io("handoff channel", e))?;
    let (std, received) = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut frame = (&std).take(len);
        let parsed = SnapshotReader::read_stream(&mut frame);
        let left = frame.limit();
        let received = match parsed {
            Ok(reader) if left == 0 => Received::Snapshot(reader),
            Ok(_) => Received::Corrupt(Error::snapshot(format!(
                "{left} bytes left in the SNAPSHOT frame after the snapshot"
            ))),
            // Cut short before the frame's own length: the channel closed (or stalled).
            Err(ReadFailure::Cut(e)) if left > 0 => Received::Cut(format!(
                "SNAPSHOT frame truncated: the channel closed after {} of {len} bytes ({e})",
                len - left
            )),
            // The snapshot runs past the frame that carries it, or is wrong in itself.
            Err(ReadFailure::Cut(e) | ReadFailure::Corrupt(e)) => Received::Corrupt(e),
        };
        (std, received)
    })
    .await
    .map_err(|e| Error::handoff(format!("snapshot reader: {e}")))?;
    std.set_nonblocking(true)
        .map_err(|e| Error::io("handoff channel", e))?;
    let chan = UnixStream::from_std(std).map_err(|e| Error::io("handoff channel", e))?;
    Ok((chan, received))
}

/// Refuses what the previous process sent: one log line, a REJECT with the reason (so the old
/// process can say why it rolls back), and the error to return.
async fn reject(chan: &mut UnixStream, what: &str, e: Error) -> Error {
    tracing::error!("refusing the previous process's {what}: {e}");
    let _ = handoff::write_frame(chan, handoff::TAG_REJECT, e.to_string().as_bytes()).await;
    e
}

impl Hot {
    /// The previous generation has exited: this process was re-parented (to the supervisor,
    /// a subreaper or init).
    fn predecessor_gone(&self) -> bool {
        self.inner
            .predecessor_pid
            .is_some_and(|pid| nix::unistd::getppid().as_raw() as u32 != pid)
    }

    /// [`predecessor_gone`](Self::predecessor_gone), allowing a dying predecessor up to 2 s to
    /// finish: the kernel closes a dying process's fds (the channel ends) before it
    /// re-parents its children.
    async fn predecessor_gone_soon(&self) -> bool {
        for _ in 0..400 {
            if self.predecessor_gone() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }
}
