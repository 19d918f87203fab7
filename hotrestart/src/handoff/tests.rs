use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;

use super::connections::*;
use super::hello::*;
use super::*;
use crate::conns::Parcel;

#[test]
fn hello_round_trip_and_garbage() {
    let hello = Hello {
        generation: 7,
        names: vec!["http".into(), "admin".into()],
        draining: vec![41, 42],
    };
    let bytes = encode_hello(&hello);
    assert_eq!(decode_hello(&bytes).unwrap(), hello);
    for cut in 0..bytes.len() {
        assert!(
            decode_hello(&bytes[..cut]).is_err(),
            "prefix of {cut} bytes accepted"
        );
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(decode_hello(&long).is_err());
}

#[test]
fn hello_carries_fds_over_a_socketpair() {
    let (a, b) = StdUnixStream::pair().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd: OwnedFd = listener.into();
    send_hello(&a, 3, &[("http".to_owned(), fd)], &[7]).unwrap();
    let (hello, fds) = recv_hello(&b).unwrap();
    assert_eq!(
        hello,
        Hello {
            generation: 3,
            names: vec!["http".into()],
            draining: vec![7],
        }
    );
    let got = std::net::TcpListener::from(fds.into_iter().next().unwrap());
    assert_eq!(got.local_addr().unwrap(), addr);
}

#[tokio::test]
async fn frames_refuse_oversized_lengths() {
    let (a, b) = StdUnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let (mut a, mut b) = (
        UnixStream::from_std(a).unwrap(),
        UnixStream::from_std(b).unwrap(),
    );
    a.write_all(&header(TAG_SNAPSHOT, u64::MAX)).await.unwrap();
    let err = read_frame(&mut b, MAX_CONTROL).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    write_frame(&mut a, TAG_READY, b"").await.unwrap();
}

#[test]
fn connections_round_trip_and_garbage() {
    let parcels = [
        Parcel {
            fd: -1,
            key: "tcp:127.0.0.1:3000".into(),
            prefix: b"GET / HT".to_vec(),
        },
        Parcel {
            fd: -1,
            key: "unix:/run/app.sock".into(),
            prefix: Vec::new(),
        },
    ];
    let p = encode_connections(true, &parcels);
    let (last, entries) = decode_connections(&p).unwrap();
    assert!(last);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].key, "tcp:127.0.0.1:3000");
    assert_eq!(entries[0].prefix, b"GET / HT");
    assert_eq!(entries[1].prefix, b"");
    for cut in 0..p.len() {
        assert!(decode_connections(&p[..cut]).is_err(), "cut at {cut}");
    }
    let mut bad = p.clone();
    bad[0] = 7;
    assert!(decode_connections(&bad).is_err());
    let mut many = encode_connections(false, &[]);
    many[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_connections(&many).is_err());
}

/// 300 real sockets (more than one frame can carry) and two 700 KB prefixes (more than one
/// batch's bytes) cross a socketpair; each received fd is the very socket that was sent.
#[tokio::test]
async fn connections_cross_a_socketpair_in_batches() {
    use std::io::Write;
    let (a, b) = UnixStream::pair().unwrap();
    let (mut a, mut b) = (a, b);
    let pairs: Vec<(StdUnixStream, StdUnixStream)> =
        (0..300).map(|_| StdUnixStream::pair().unwrap()).collect();
    let prefix = |i: usize| vec![i as u8; if i < 2 { 700_000 } else { i % 7 }];
    let parcels: Vec<Parcel> = pairs
        .iter()
        .enumerate()
        .map(|(i, (ours, _))| Parcel {
            fd: ours.as_raw_fd(),
            key: format!("tcp:{i}").into(),
            prefix: prefix(i),
        })
        .collect();
    let send = async { send_connections(&mut a, &parcels).await.unwrap() };
    let receive = async {
        let (mut all, mut frames) = (Vec::new(), 0);
        loop {
            let (last, batch) = recv_connections(&mut b).await.unwrap();
            frames += 1;
            all.extend(batch);
            if last {
                break (all, frames);
            }
        }
    };
    let ((), (got, frames)) = tokio::join!(send, receive);
    assert!(frames >= 3, "{frames} frames");
    assert_eq!(got.len(), 300);
    for (i, (entry, fd)) in got.into_iter().enumerate() {
        assert_eq!(entry.key, format!("tcp:{i}"));
        assert_eq!(entry.prefix, prefix(i));
        let sent = StdUnixStream::from(fd);
        (&sent).write_all(&[i as u8]).unwrap();
        let mut byte = [0u8];
        (&pairs[i].1).read_exact(&mut byte).unwrap();
        assert_eq!(byte[0], i as u8);
    }
}

/// A HELLO read interrupted by a signal (what a SIGSTOP/SIGCONT of the successor does to a read
/// with a timeout) is retried, not taken for the end of the handover.
#[test]
fn an_interrupted_hello_read_is_retried() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    extern "C" fn nothing(_: libc::c_int) {}
    // SAFETY: the handler does nothing (async-signal-safe), and SIGURG is not used otherwise by
    // this test binary.
    unsafe {
        sigaction(
            Signal::SIGURG,
            &SigAction::new(
                SigHandler::Handler(nothing),
                SaFlags::empty(),
                SigSet::empty(),
            ),
        )
        .unwrap();
    }
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tx.send(unsafe { libc::pthread_self() }).unwrap();
        recv_hello(&theirs).map(|(hello, fds)| (hello.generation, fds.len()))
    });
    let thread = rx.recv().unwrap();
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(40));
        // SAFETY: `thread` is alive: it waits for the HELLO sent below.
        unsafe { libc::pthread_kill(thread, libc::SIGURG) };
    }
    let listener: OwnedFd = std::net::TcpListener::bind("127.0.0.1:0").unwrap().into();
    send_hello(&ours, 3, &[("http".to_owned(), listener)], &[]).unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), (3, 1));
}
