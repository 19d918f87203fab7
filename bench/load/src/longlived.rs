//! Long-lived connections at a restart (examples/streams.rs): the accept gap and trigger→READY
//! with 0 / 100 / 1,000 connections of each kind open, each connection's end, and gRPC unary
//! calls through restarts. Clients written here on raw sockets (WebSocket, SSE, echo) and
//! hyper's HTTP/2 client (gRPC), every wait bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    WebSocket,
    EventStream,
    GrpcWatch,
    Echo,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::WebSocket => "WebSocket",
            Kind::EventStream => "SSE",
            Kind::GrpcWatch => "gRPC Watch",
            Kind::Echo => "echo (moved)",
        }
    }

    /// What a clean end is for this kind.
    pub fn clean_end(self) -> &'static str {
        match self {
            Kind::WebSocket => "close 1012",
            Kind::EventStream => "complete response",
            Kind::GrpcWatch => "UNAVAILABLE",
            Kind::Echo => "answered by the new pid",
        }
    }
}

async fn read_head(stream: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some(head);
        }
        head.push_str(&line);
    }
}

/// One open long-lived connection: a task that resolves to whether it ended cleanly.
pub struct Open {
    task: JoinHandle<bool>,
    /// The echo connection, kept to ask it again after the restart.
    echo: Option<BufReader<TcpStream>>,
}

pub async fn open(kind: Kind, http: SocketAddr, echo: SocketAddr) -> Option<Open> {
    match kind {
        Kind::WebSocket => {
            let mut s = BufReader::new(TcpStream::connect(http).await.ok()?);
            s.get_mut()
                .write_all(b"GET /ws HTTP/1.1\r\nhost: b\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n")
                .await
                .ok()?;
            let head = read_head(&mut s).await?;
            if !head.starts_with("HTTP/1.1 101") {
                return None;
            }
            Some(Open {
                task: tokio::spawn(async move {
                    // The server sends nothing until it closes: an unmasked close frame, then
                    // the 2-byte code.
                    let mut frame = [0u8; 4];
                    let read =
                        tokio::time::timeout(Duration::from_secs(60), s.read_exact(&mut frame))
                            .await;
                    matches!(read, Ok(Ok(_)))
                        && frame[0] == 0x88
                        && u16::from_be_bytes([frame[2], frame[3]]) == 1012
                }),
                echo: None,
            })
        }
        Kind::EventStream => {
            let mut s = BufReader::new(TcpStream::connect(http).await.ok()?);
            s.get_mut()
                .write_all(b"GET /sse HTTP/1.1\r\nhost: b\r\n\r\n")
                .await
                .ok()?;
            let head = read_head(&mut s).await?;
            if !head.starts_with("HTTP/1.1 200") {
                return None;
            }
            Some(Open {
                task: tokio::spawn(async move {
                    // Read to the end: a clean end is the last chunk (`0\r\n\r\n`).
                    let mut all = Vec::new();
                    let read =
                        tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut all))
                            .await;
                    matches!(read, Ok(Ok(_))) && all.ends_with(b"0\r\n\r\n")
                }),
                echo: None,
            })
        }
        Kind::GrpcWatch => {
            let tcp = nodelay(TcpStream::connect(http).await.ok()?);
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .ok()?;
            tokio::spawn(conn);
            let request = grpc_request(
                "/grpc.health.v1.Health/Watch",
                Bytes::from_static(&[0, 0, 0, 0, 0]),
            );
            let response = sender.send_request(request).await.ok()?;
            let mut body = response.into_body();
            // The first message: SERVING.
            let first = tokio::time::timeout(LIMIT, body.frame())
                .await
                .ok()??
                .ok()?;
            if !first.is_data() {
                return None;
            }
            Some(Open {
                task: tokio::spawn(async move {
                    let _sender = sender;
                    loop {
                        match tokio::time::timeout(Duration::from_secs(60), body.frame()).await {
                            Ok(Some(Ok(frame))) => {
                                if let Ok(trailers) = frame.into_trailers() {
                                    return trailers.get("grpc-status").is_some_and(|s| s == "14");
                                }
                            }
                            _ => return false,
                        }
                    }
                }),
                echo: None,
            })
        }
        Kind::Echo => {
            let mut s = BufReader::new(TcpStream::connect(echo).await.ok()?);
            s.get_mut().write_all(b"first\n").await.ok()?;
            let mut line = String::new();
            s.read_line(&mut line).await.ok()?;
            Some(Open {
                task: tokio::spawn(async { true }),
                echo: Some(s),
            })
        }
    }
}

impl Open {
    /// Whether the connection ended cleanly (or, for echo, goes on with `new_pid`).
    pub async fn ended_cleanly(self, new_pid: u32) -> bool {
        if let Some(mut s) = self.echo {
            if s.get_mut().write_all(b"again\n").await.is_err() {
                return false;
            }
            let mut line = String::new();
            return matches!(tokio::time::timeout(LIMIT, s.read_line(&mut line)).await, Ok(Ok(n)) if n > 0)
                && line.starts_with(&format!("{new_pid} "));
        }
        matches!(tokio::time::timeout(LIMIT, self.task).await, Ok(Ok(true)))
    }
}

/// Small HTTP/2 frames go out at once (no Nagle delay against the peer's delayed ACK).
fn nodelay(tcp: TcpStream) -> TcpStream {
    let _ = tcp.set_nodelay(true);
    tcp
}

fn grpc_request(path: &str, body: Bytes) -> hyper::Request<http_body_util::Full<Bytes>> {
    hyper::Request::builder()
        .method("POST")
        .uri(format!("http://bench{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(body))
        .unwrap()
}

/// A unary `hotrestart.Echo/Echo` call's request body: a gRPC frame around `EchoRequest`.
fn echo_message(text: &str) -> Bytes {
    let mut message = vec![0x0a, text.len() as u8];
    message.extend_from_slice(text.as_bytes());
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    Bytes::from(frame)
}

/// What the unary load saw.
#[derive(Default)]
pub struct UnaryLoad {
    pub calls: u64,
    /// Calls that were processed and did not end `grpc-status: 0`, or got no answer.
    pub failures: Vec<String>,
    /// Calls the client found cancelled before the server processed them (above a GOAWAY's
    /// last stream id): retried on a new connection, as gRPC clients do transparently
    /// (RFC 9113 §6.8 says they are safe to retry).
    pub retried: u64,
    pub pids: std::collections::HashSet<u32>,
}

/// Unary gRPC calls without pause until `stop`, on one HTTP/2 connection at a time: a
/// connection that is going away (GOAWAY) is replaced before the next call, as gRPC clients
/// do. Bounded in calls and time.
pub async fn unary_load(http: SocketAddr, stop: tokio::sync::watch::Receiver<bool>) -> UnaryLoad {
    let mut load = UnaryLoad::default();
    let mut sender: Option<hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>> =
        None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !*stop.borrow() && Instant::now() < deadline && load.calls < 1_000_000 {
        let ready = match sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            sender = match TcpStream::connect(http).await {
                Ok(tcp) => match hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(nodelay(tcp)),
                )
                .await
                {
                    Ok((s, conn)) => {
                        tokio::spawn(conn);
                        Some(s)
                    }
                    Err(e) => {
                        load.failures.push(format!("handshake: {e}"));
                        None
                    }
                },
                Err(e) => {
                    load.failures.push(format!("connect: {e}"));
                    None
                }
            };
            continue;
        }
        let s = sender.as_mut().unwrap();
        let call = async {
            let response = s
                .send_request(grpc_request("/hotrestart.Echo/Echo", echo_message("u")))
                .await
                .map_err(|e| (e.is_canceled(), format!("send: {e}")))?;
            let pid = response
                .headers()
                .get("x-pid")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0u32);
            let collected = response
                .into_body()
                .collect()
                .await
                .map_err(|e| (false, format!("body: {e}")))?;
            let status = collected
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .map(|v| v.to_str().unwrap_or("?").to_owned());
            match status.as_deref() {
                Some("0") => Ok(pid),
                other => Err((false, format!("grpc-status {other:?}"))),
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(pid)) => {
                load.calls += 1;
                load.pids.insert(pid);
            }
            Ok(Err((true, _))) => {
                load.retried += 1;
                sender = None;
            }
            Ok(Err((false, e))) => {
                load.calls += 1;
                load.failures.push(e);
            }
            Err(_) => {
                load.calls += 1;
                load.failures.push("timeout".into());
            }
        }
    }
    load
}
