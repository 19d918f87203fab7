//! HTTP/2 (prior knowledge, cleartext) is served, and at a hot restart its connections are not
//! handed over (an HTTP/2 session's state cannot move) but get GOAWAY: the client's connection
//! ends cleanly and its next connection is answered by the new process.

mod common;

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
