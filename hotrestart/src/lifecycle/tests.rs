//! A handover inside one process, as tableflip tests its upgrades: the successor is a real
//! `Hot` going through `Hot::tcp` and `Hot::ready`; the old side is played, frame by frame, on
//! the other end of the handoff channel. What the real-process tests cannot isolate: exactly
//! what the successor reads, answers and adopts.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream as StdUnixStream;

use tokio::net::UnixStream;

use super::inherit::Adopted;
use super::Hot;
use crate::handoff::{self, Frame};
use crate::options::Options;
use crate::snapshot::{self, SnapshotReader, SnapshotWriter, State};
use crate::Result;

#[derive(Default, Debug, PartialEq)]
struct Counter {
    hits: u64,
    name: String,
}

impl State for Counter {
    fn save<'a>(&'a self, w: &mut SnapshotWriter<'a>) -> Result<()> {
        w.field("hits", &self.hits)?;
        w.field("name", &self.name)
    }
    fn restore(&mut self, r: &mut SnapshotReader) -> Result<()> {
        let hits = r.take("hits")?;
        let name = r.take("name")?;
        if let Some(hits) = hits {
            self.hits = hits;
        }
        if let Some(name) = name {
            self.name = name;
        }
        Ok(())
    }
}

/// The inode of a socket: the same socket in two places has the same one.
fn inode(fd: &impl AsRawFd) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap()
        .ino()
}

/// A successor of generation 1 whose predecessor is played on the returned end of its channel,
/// given one listening socket named `http`.
fn successor(listener: &std::net::TcpListener) -> (Hot, UnixStream) {
    let (theirs, ours) = StdUnixStream::pair().unwrap();
    let fd: OwnedFd = listener.try_clone().unwrap().into();
    let adopted = Adopted::successor_in_process(1, theirs, vec![("http".to_owned(), fd)]);
    let hot = Hot::start(Options::default(), adopted);
    ours.set_nonblocking(true).unwrap();
    (hot, UnixStream::from_std(ours).unwrap())
}

async fn expect(chan: &mut UnixStream, tag: u8) -> Vec<u8> {
    let Frame { tag: got, payload } = handoff::read_frame(chan, handoff::MAX_CONTROL)
        .await
        .unwrap();
    assert_eq!(
        handoff::tag_name(got),
        handoff::tag_name(tag),
        "{:?}",
        String::from_utf8_lossy(&payload)
    );
    payload
}

#[tokio::test]
async fn a_successor_adopts_the_socket_restores_the_state_and_says_ready() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (hot, mut chan) = successor(&listener);
    let old = tokio::spawn(async move {
        // PREPARED, then the old process's snapshot (no PLAN: no connections follow), READY.
        let offered = expect(&mut chan, handoff::TAG_PREPARED).await;
        let state = Counter {
            hits: 41,
            name: "kept".into(),
        };
        let frame = snapshot::encode(&state).unwrap();
        handoff::write_frame(&mut chan, handoff::TAG_SNAPSHOT, &frame.to_vec())
            .await
            .unwrap();
        expect(&mut chan, handoff::TAG_READY).await;
        offered
    });
    let adopted = hot.tcp("http", ("127.0.0.1", 1)).unwrap();
    assert_eq!(
        inode(&adopted),
        inode(&listener),
        "the same socket, adopted"
    );
    let state = hot.ready(Counter::default()).await.unwrap();
    assert_eq!(
        *state,
        Counter {
            hits: 41,
            name: "kept".into()
        }
    );
    let offered = old.await.unwrap();
    assert_eq!(offered.len(), 1, "PREPARED carries the capabilities byte");
    assert_eq!(
        offered[0] & handoff::CAP_ANNOUNCES,
        0,
        "no supervisor: nothing to announce"
    );
}

#[tokio::test]
async fn a_successor_refuses_a_snapshot_whose_field_changed_type_and_says_why() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (hot, mut chan) = successor(&listener);
    let old = tokio::spawn(async move {
        expect(&mut chan, handoff::TAG_PREPARED).await;
        // `hits` written as a String: the successor's u64 must not reinterpret it.
        let mut w = SnapshotWriter::default();
        let text = "forty-one".to_owned();
        w.field("hits", &text).unwrap();
        let frame = w.finish().to_vec();
        handoff::write_frame(&mut chan, handoff::TAG_SNAPSHOT, &frame)
            .await
            .unwrap();
        String::from_utf8(expect(&mut chan, handoff::TAG_REJECT).await).unwrap()
    });
    let _adopted = hot.tcp("http", ("127.0.0.1", 1)).unwrap();
    let err = hot.ready(Counter::default()).await.unwrap_err();
    let reason = old.await.unwrap();
    assert!(reason.contains("hits"), "REJECT names the field: {reason}");
    assert!(
        matches!(err, crate::Error::TypeChanged { .. }),
        "ready fails with the kind: {err:?}"
    );
}
