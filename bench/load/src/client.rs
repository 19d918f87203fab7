//! The load: a fixed number of connections sending `POST /hit`, keep-alive or one connection
//! per request, every request timed and classified.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused,
    Reset,
    Timeout,
    Non2xx,
}

#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Start, in µs since the run began.
    pub start_us: u64,
    pub latency_us: u64,
    pub outcome: Outcome,
    pub pid: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    KeepAlive,
    Close,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keep-alive",
            Mode::Close => "new conn/req",
        }
    }
}

pub struct Response {
    pub status: u16,
    pub pid: u32,
    pub close: bool,
    pub body: String,
}

fn classify(e: &std::io::Error) -> Outcome {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        std::io::ErrorKind::TimedOut => Outcome::Timeout,
        _ => Outcome::Reset,
    }
}

pub async fn connect(addr: SocketAddr) -> Result<BufReader<TcpStream>, Outcome> {
    match tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(BufReader::new(s))
        }
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(Outcome::Timeout),
    }
}

/// One request/response on `conn`. EOF or a reset before the whole response is `Reset`.
pub async fn exchange(conn: &mut BufReader<TcpStream>, method: &str, path: &str, close: bool) -> Result<Response, Outcome> {
    exchange_with_body(conn, method, path, b"", close).await
}

/// [`exchange`], with a request body.
pub async fn exchange_with_body(conn: &mut BufReader<TcpStream>, method: &str, path: &str, body: &[u8], close: bool) -> Result<Response, Outcome> {
    let fut = async {
        let head = if close { "connection: close\r\n" } else { "" };
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-length: {}\r\n{head}\r\n", body.len()).into_bytes();
        req.extend_from_slice(body);
        conn.get_mut().write_all(&req).await.map_err(|e| classify(&e))?;
        let mut line = String::new();
        if conn.read_line(&mut line).await.map_err(|e| classify(&e))? == 0 {
            return Err(Outcome::Reset);
        }
        let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(Outcome::Reset)?;
        let (mut length, mut pid, mut close) = (0usize, 0u32, false);
        loop {
            line.clear();
            if conn.read_line(&mut line).await.map_err(|e| classify(&e))? == 0 {
                return Err(Outcome::Reset);
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("x-pid") {
                    pid = v.parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await.map_err(|e| classify(&e))?;
        Ok(Response { status, pid, close, body: String::from_utf8_lossy(&body).into_owned() })
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(Outcome::Timeout),
    }
}

/// One request on a new connection.
pub async fn once(addr: SocketAddr, method: &str, path: &str) -> Result<Response, Outcome> {
    let mut conn = connect(addr).await?;
    exchange(&mut conn, method, path, true).await
}

/// Counts of a connection's life.
#[derive(Default)]
pub struct ConnStats {
    pub samples: Vec<Sample>,
    pub reconnects: u64,
    /// TCP connections opened (the first included).
    pub connects: u64,
    /// Responses from another pid than the previous one on the same connection: the
    /// connection moved to a successor.
    pub moves: u64,
}

/// Runs one load connection until `until`.
pub async fn drive(addr: SocketAddr, mode: Mode, t0: Instant, until: Instant) -> ConnStats {
    let mut stats = ConnStats::default();
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut last_pid = 0;
    while Instant::now() < until {
        let start = Instant::now();
        let result = async {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => {
                    stats.connects += 1;
                    last_pid = 0;
                    conn.insert(connect(addr).await?)
                }
            };
            exchange(c, "POST", "/hit", mode == Mode::Close).await
        }
        .await;
        let latency_us = start.elapsed().as_micros() as u64;
        let start_us = start.duration_since(t0).as_micros() as u64;
        let (outcome, pid) = match result {
            Ok(r) if (200..300).contains(&r.status) => {
                if last_pid != 0 && r.pid != last_pid {
                    stats.moves += 1;
                }
                last_pid = r.pid;
                if mode == Mode::Close || r.close {
                    if mode == Mode::KeepAlive {
                        stats.reconnects += 1;
                    }
                    conn = None;
                }
                (Outcome::Ok, r.pid)
            }
            Ok(r) => {
                conn = None;
                (Outcome::Non2xx, r.pid)
            }
            Err(o) => {
                conn = None;
                (o, 0)
            }
        };
        stats.samples.push(Sample { start_us, latency_us, outcome, pid });
        if outcome != Outcome::Ok {
            // Do not spin on a dead port.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    stats
}
