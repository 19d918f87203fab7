//! The rounds on a real socketpair, both sides this module's own: bounded under concurrent
//! writes, and exact once the last round is applied.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UnixStream;

use super::*;
use crate::snapshot::SnapshotWriter;
use crate::TrackedMap;

#[derive(Default)]
struct Cache {
    map: TrackedMap<u64, u64>,
}

impl State for Cache {
    fn save<'a>(&'a self, w: &mut SnapshotWriter<'a>) -> Result<()> {
        w.field("map", &self.map)
    }
    fn restore(&mut self, r: &mut SnapshotReader) -> Result<()> {
        if let Some(map) = r.take("map")? {
            self.map = map;
        }
        Ok(())
    }
    fn tracked<'a>(&'a self, visit: &mut dyn FnMut(&'static str, &'a dyn Tracked)) {
        visit("map", &self.map);
    }
}

/// The successor's loop: answers the offer and every PRECOPY_SYNC, applies the pieces, until
/// the channel ends; returns the map it received.
async fn successor(mut chan: UnixStream) -> TrackedMap<u64, u64> {
    let mut state = Cache::default();
    let mut receiving = Receiving::default();
    while let Ok(frame) = handoff::read_frame(&mut chan, handoff::MAX_SNAPSHOT).await {
        match frame.tag {
            handoff::TAG_PRECOPY => {
                if receiving
                    .offered(&state, &frame.payload, &mut chan)
                    .await
                    .is_err()
                {
                    panic!("offer refused");
                }
            }
            handoff::TAG_PIECE => receiving.piece(&frame.payload).unwrap(),
            handoff::TAG_PRECOPY_SYNC => {
                handoff::write_frame(&mut chan, handoff::TAG_PRECOPY_SYNC, &[])
                    .await
                    .unwrap();
            }
            tag => panic!("unexpected {}", handoff::tag_name(tag)),
        }
    }
    let empty = crate::snapshot::encode_with(&(), |_| Ok(()))
        .unwrap()
        .to_vec();
    let mut reader = SnapshotReader::new(empty).unwrap();
    receiving.stage(&mut reader).unwrap();
    state.restore(&mut reader).unwrap();
    state.map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_under_concurrent_writes_are_bounded_and_the_last_round_makes_the_copy_exact() {
    let old = Arc::new(Cache::default());
    for i in 0..50_000 {
        old.map.insert(i, i);
    }
    // Two writers, as fast as they go: new keys, overwrites and removals all over the map.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2u64)
        .map(|t| {
            let (old, stop, written) = (old.clone(), stop.clone(), written.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && i < 50_000_000 {
                    let k = (i * 2_654_435_761 + t) % 200_000;
                    if i % 4 == 0 {
                        old.map.remove(&k);
                    } else {
                        old.map.insert(k, i);
                    }
                    i += 1;
                }
                written.fetch_add(i, Ordering::Relaxed);
            })
        })
        .collect();
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let receiver = tokio::spawn(successor(theirs));
    let mut p = PreCopy::offer(&mut ours, tracked(&*old))
        .await
        .unwrap()
        .expect("the successor takes the map");
    let left = p.rounds(&mut ours).await.unwrap();
    assert!((1..=MAX_ROUNDS).contains(&p.rounds), "{} rounds", p.rounds);
    // The quiesce: nothing writes any more; the last round carries the rest.
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let last = p.last_round(&mut ours).await.unwrap();
    let rounds = p.rounds;
    drop(p);
    drop(ours);
    let got = receiver.await.unwrap();
    eprintln!(
        "{rounds} round(s) while {} writes went on ({left} bytes estimated left, the last round sent {last})",
        written.load(Ordering::Relaxed),
    );
    assert_eq!(got.to_hash_map(), old.map.to_hash_map());
    // Recording stopped with the pre-copy.
    old.map.insert(1, 1);
    assert_eq!(old.map.pending(), 0);
}

/// A field whose changes never shrink, and one that shrinks by one byte a round: the rounds
/// stop when a round left as much as the one before, else at `MAX_ROUNDS`.
struct Stubborn {
    pending: AtomicU64,
    shrinks: bool,
}

impl Tracked for Stubborn {
    fn tracked_type(&self) -> &'static str {
        "Stubborn"
    }
    fn len_hint(&self) -> u64 {
        0
    }
    fn start(&self) {}
    fn piece(&self, out: &mut Vec<u8>, _: usize) -> Result<bool> {
        out.push(0);
        if self.shrinks {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(false)
    }
    fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }
    fn next_round(&self) {}
    fn stop(&self) {}
    fn receiver(&self, _: u64) -> Box<dyn Receiver> {
        unreachable!()
    }
}

#[tokio::test]
async fn rounds_stop_when_they_do_not_shrink_or_at_the_bound() {
    for (shrinks, want) in [(false, 2), (true, MAX_ROUNDS)] {
        let field = Stubborn {
            pending: AtomicU64::new(10 << 20),
            shrinks,
        };
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        // The successor's part: takes the field, answers the sync.
        let answer = tokio::spawn(async move {
            loop {
                let frame = handoff::read_frame(&mut theirs, handoff::MAX_SNAPSHOT)
                    .await
                    .unwrap();
                let reply = match frame.tag {
                    handoff::TAG_PRECOPY => handoff::TAG_PRECOPY_ACCEPT,
                    handoff::TAG_PRECOPY_SYNC => handoff::TAG_PRECOPY_SYNC,
                    _ => continue,
                };
                let payload = postcard::to_stdvec(&vec![0u16]).unwrap();
                handoff::write_frame(&mut theirs, reply, &payload)
                    .await
                    .unwrap();
                if reply == handoff::TAG_PRECOPY_SYNC {
                    return;
                }
            }
        });
        let mut p = PreCopy::offer(&mut ours, vec![("stubborn", &field as &dyn Tracked)])
            .await
            .unwrap()
            .unwrap();
        p.rounds(&mut ours).await.unwrap();
        assert_eq!(p.rounds, want, "shrinking: {shrinks}");
        answer.await.unwrap();
    }
}

#[tokio::test]
async fn a_reject_in_answer_to_the_offer_carries_the_successors_reason() {
    let map: TrackedMap<u64, u64> = [(1, 1)].into_iter().collect();
    let (mut ours, mut theirs) = UnixStream::pair().unwrap();
    let successor = tokio::spawn(async move {
        let offer = handoff::read_frame(&mut theirs, handoff::MAX_CONTROL)
            .await
            .unwrap();
        assert_eq!(offer.tag, handoff::TAG_PRECOPY);
        handoff::write_frame(&mut theirs, handoff::TAG_REJECT, b"no room")
            .await
            .unwrap();
    });
    let e = match PreCopy::offer(&mut ours, vec![("map", &map as &dyn Tracked)]).await {
        Err(e) => e,
        Ok(_) => panic!("a REJECT is not an answer"),
    };
    let why = e.get_ref().and_then(|e| e.downcast_ref::<Stopped>());
    assert!(
        matches!(why, Some(Stopped::Rejected(reason)) if reason == "no room"),
        "{why:?}"
    );
    successor.await.unwrap();
}

#[tokio::test]
async fn the_start_up_reader_keeps_at_most_its_bound_then_leaves_the_rest_in_the_channel() {
    let (reader_end, mut old) = UnixStream::pair().unwrap();
    let (hand_back, handed) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(receive_early(reader_end, handed));
    let early = handoff::read_frame(&mut old, handoff::MAX_CONTROL)
        .await
        .unwrap();
    assert_eq!(early.tag, handoff::TAG_EARLY);
    // Pieces of 16 MiB: the reader stops keeping them once 64 MiB are kept; the writer of the
    // sixth waits on the full channel.
    let writer = tokio::spawn(async move {
        let piece = vec![0u8; 16 << 20];
        for _ in 0..6 {
            handoff::write_frame(&mut old, handoff::TAG_PIECE, &piece).await?;
        }
        handoff::write_frame(&mut old, handoff::TAG_EARLY_END, &[]).await?;
        Ok::<_, std::io::Error>(old)
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !writer.is_finished(),
        "the channel pushes back on the writer"
    );
    hand_back.send(()).unwrap();
    let early = reader.await.unwrap();
    let kept: usize = early.frames.iter().map(|f| f.payload.len()).sum();
    assert_eq!(kept, EARLY_KEPT, "{} frames kept", early.frames.len());
    assert!(!early.ended && early.cut.is_none() && early.corrupt.is_none());
    // The rest is read from the channel, as `take_over` does.
    let mut chan = early.chan;
    for _ in 0..2 {
        let frame = handoff::read_frame(&mut chan, handoff::MAX_SNAPSHOT)
            .await
            .unwrap();
        assert_eq!(frame.tag, handoff::TAG_PIECE);
    }
    let end = handoff::read_frame(&mut chan, handoff::MAX_SNAPSHOT)
        .await
        .unwrap();
    assert_eq!(end.tag, handoff::TAG_EARLY_END);
    writer.await.unwrap().unwrap();
}
