//! HTTP/1.1 over loopback: one-shot requests and a background load of them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::keepalive;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub pid: u32,
    /// Every header, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The value of header `name` (lowercase), if the response has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Result<Response, String> {
    request(addr, "GET", path)
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), every step bounded.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Result<Response, String> {
    request_with_body(addr, method, path, b"")
}

/// The same, with a request body.
pub fn request_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Response, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .and_then(|()| stream.write_all(body))
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    parse_response(&raw)
}

/// A whole response read to the end of its connection, parsed by the one HTTP/1.1 reader
/// of the tests ([`keepalive::read_reply`]).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let reply = keepalive::read_reply(&mut &raw[..])?;
    Ok(Response {
        status: reply.status,
        pid: reply.pid,
        headers: reply.headers,
        body: reply.body,
    })
}

/// Background load: `POST /hit` in a loop on new connections, until stopped (or a hard cap of
/// requests and time). Counts acknowledged hits and failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, a, f) = (stop.clone(), acked.clone(), failures.clone());
        let thread = thread::spawn(move || {
            let start = Instant::now();
            for _ in 0..200_000 {
                if s.load(Ordering::SeqCst) || start.elapsed() > Duration::from_secs(120) {
                    break;
                }
                match request(addr, "POST", "/hit") {
                    Ok(r) if r.status == 200 => {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => f.lock().unwrap().push(format!("status {}", r.status)),
                    Err(e) => f.lock().unwrap().push(e),
                }
            }
        });
        Load {
            stop,
            acked,
            failures,
            thread: Some(thread),
        }
    }

    /// Hits acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until `more` hits beyond those acknowledged now are acknowledged: the load ran
    /// through whatever happened just before.
    pub fn wait_more(&self, more: u64) {
        let target = self.acked() + more;
        let start = Instant::now();
        while self.acked() < target {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the load stalled at {} acknowledged hits: {:?}",
                self.acked(),
                self.failures.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the load; returns (acknowledged hits, failures).
    pub fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        (
            self.acked.load(Ordering::SeqCst),
            self.failures.lock().unwrap().clone(),
        )
    }
}
