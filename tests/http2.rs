//! HTTP/2 (prior knowledge, cleartext) is served, and at a hot restart its connections are not
//! handed over (an HTTP/2 session's state cannot move) but get GOAWAY: the client's connection
//! ends cleanly and its next connection is answered by the new process.

use hotrestart_testkit as common;

use std::time::Duration;

use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};

async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (u16, u32, hyper::Version) {
    let request = hyper::Request::get(format!("http://test{path}"))
        .body(Empty::new())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("an answer within 10 s")
        .expect("an HTTP/2 response");
    let status = response.status().as_u16();
    let version = response.version();
    let pid = response.headers()["x-pid"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    response.into_body().collect().await.unwrap();
    (status, pid, version)
}

async fn h2_connect(
    svc: &Service,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = tokio::net::TcpStream::connect(svc.addr()).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    (sender, tokio::spawn(conn))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_get_goaway_and_the_next_one_reaches_the_successor() {
    let svc = Service::start(&[]);
    let old = svc.pid();
    let (mut sender, conn) = h2_connect(&svc).await;
    assert_eq!(
        h2_get(&mut sender, "/").await,
        (200, old, hyper::Version::HTTP_2)
    );

    let new = tokio::task::block_in_place(|| svc.hot_restart());
    assert_ne!(new, old);
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the old process ends the HTTP/2 connection (GOAWAY)")
        .unwrap();
    assert!(ended.is_ok(), "a clean end, not an error: {ended:?}");

    let (mut sender, _conn) = h2_connect(&svc).await;
    assert_eq!(
        h2_get(&mut sender, "/").await,
        (200, new, hyper::Version::HTTP_2)
    );
}

/// One HTTP/2 frame (type, stream, payload), read raw from the socket; `None` at its end.
fn read_h2_frame(stream: &mut std::net::TcpStream) -> Option<(u8, u32, Vec<u8>)> {
    use std::io::Read;
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream_id = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).ok()?;
    Some((head[3], stream_id, payload))
}

/// The frames of an HTTP/2 connection as they arrive, until it ends.
fn frames_until_eof(mut stream: std::net::TcpStream) -> Vec<(u8, u32, Vec<u8>)> {
    std::iter::from_fn(|| read_h2_frame(&mut stream)).collect()
}

#[test]
fn the_old_process_sends_a_goaway_frame_before_closing_an_http2_connection() {
    use std::io::Write;
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    let svc = Service::start(&[]);
    let old = svc.pid();
    let mut stream = std::net::TcpStream::connect(svc.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The client preface and an empty SETTINGS frame; the server answers with its SETTINGS.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    // The server's SETTINGS: the connection is established in the old process.
    let first = read_h2_frame(&mut stream).expect("the server's SETTINGS");
    assert_eq!(first.0, SETTINGS, "{first:?}");
    let reader = stream.try_clone().unwrap();
    let frames = std::thread::spawn(move || frames_until_eof(reader));
    let new = svc.hot_restart();
    assert_ne!(new, old);
    let frames = frames.join().unwrap();
    // A GOAWAY on stream 0, then the end: not a bare close.
    let goaway = frames.iter().position(|f| f.0 == GOAWAY && f.1 == 0);
    assert!(
        goaway.is_some(),
        "no GOAWAY before the connection ended: {frames:?}"
    );
}
