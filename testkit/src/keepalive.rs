//! A keep-alive HTTP/1.1 load: persistent connections that send `POST /hit` back to back and
//! reconnect only when the server says `connection: close`. Any other end of a connection
//! under a request is a failure. It also counts connects, and how often a connection's
//! responses switched to another `x-pid` (a connection handed to a successor).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub struct KeepAliveLoad {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
    connects: Arc<AtomicU64>,
    moves: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// What a keep-alive load saw.
#[derive(Debug)]
pub struct Report {
    /// Acknowledged hits.
    pub acked: u64,
    /// Reconnects the server asked for (`connection: close`).
    pub reconnects: u64,
    /// TCP connections opened, the first ones included.
    pub connects: u64,
    /// Responses that came from another pid than the previous one on the same connection.
    pub moves: u64,
    pub failures: Vec<String>,
}

/// One HTTP/1.1 response read from a persistent connection.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// `x-pid`: the process that answered.
    pub pid: u32,
    /// The server said `connection: close`.
    pub close: bool,
    /// Every header, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Reads one response (`content-length` or chunked body). EOF before the status line is
/// "the connection was closed".
pub fn read_reply<R: BufRead>(reader: &mut R) -> Result<Reply, String> {
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("the connection was closed".into());
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad status line {line:?}"))?;
    let (mut length, mut pid, mut close, mut chunked) = (0usize, 0u32, false, false);
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?
            == 0
        {
            return Err("EOF in the headers".into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (k, v) = header.split_once(':').ok_or("bad header")?;
        let v = v.trim();
        headers.push((k.to_ascii_lowercase(), v.to_owned()));
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse().map_err(|_| "bad content-length")?;
        } else if k.eq_ignore_ascii_case("x-pid") {
            pid = v.parse().map_err(|_| "bad x-pid")?;
        } else if k.eq_ignore_ascii_case("connection") {
            close = v.eq_ignore_ascii_case("close");
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.eq_ignore_ascii_case("chunked");
        }
    }
    if chunked {
        let mut body = Vec::new();
        loop {
            line.clear();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("read chunk size: {e}"))?;
            let size = usize::from_str_radix(line.trim_end(), 16)
                .map_err(|_| format!("bad chunk size {line:?}"))?;
            let mut chunk = vec![0; size + 2];
            reader
                .read_exact(&mut chunk)
                .map_err(|e| format!("read chunk: {e}"))?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
        return Ok(Reply {
            status,
            pid,
            close,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("read body: {e}"))?;
    Ok(Reply {
        status,
        pid,
        close,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// One `POST /hit` on a persistent connection.
fn exchange(reader: &mut BufReader<TcpStream>) -> Result<Reply, String> {
    reader
        .get_mut()
        .write_all(b"POST /hit HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    read_reply(reader)
}

fn connect(addr: SocketAddr) -> Result<BufReader<TcpStream>, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    Ok(BufReader::new(s))
}

impl KeepAliveLoad {
    pub fn start(addr: SocketAddr, connections: usize) -> KeepAliveLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let reconnects = Arc::new(AtomicU64::new(0));
        let connects = Arc::new(AtomicU64::new(0));
        let moves = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..connections)
            .map(|_| {
                let (stop, acked, reconnects, failures) = (
                    stop.clone(),
                    acked.clone(),
                    reconnects.clone(),
                    failures.clone(),
                );
                let (connects, moves) = (connects.clone(), moves.clone());
                thread::spawn(move || {
                    let start = Instant::now();
                    let mut conn = None;
                    let mut last_pid = 0;
                    for _ in 0..100_000 {
                        if stop.load(Ordering::SeqCst) || start.elapsed() > Duration::from_secs(120)
                        {
                            return;
                        }
                        let reader = match conn.as_mut() {
                            Some(r) => r,
                            None => match connect(addr) {
                                Ok(r) => {
                                    connects.fetch_add(1, Ordering::SeqCst);
                                    last_pid = 0;
                                    conn.insert(r)
                                }
                                Err(e) => {
                                    failures.lock().unwrap().push(e);
                                    thread::sleep(Duration::from_millis(5));
                                    continue;
                                }
                            },
                        };
                        match exchange(reader) {
                            Ok(Reply {
                                status: 200,
                                close,
                                pid,
                                ..
                            }) => {
                                acked.fetch_add(1, Ordering::SeqCst);
                                if last_pid != 0 && pid != last_pid {
                                    moves.fetch_add(1, Ordering::SeqCst);
                                }
                                last_pid = pid;
                                if close {
                                    conn = None;
                                    reconnects.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            Ok(Reply { status, .. }) => {
                                failures.lock().unwrap().push(format!("status {status}"));
                                conn = None;
                            }
                            Err(e) => {
                                failures.lock().unwrap().push(e);
                                conn = None;
                            }
                        }
                    }
                })
            })
            .collect();
        KeepAliveLoad {
            stop,
            acked,
            reconnects,
            connects,
            moves,
            failures,
            threads,
        }
    }

    /// Waits until `more` hits beyond those acknowledged now are acknowledged (all
    /// connections together): the clients ran through whatever happened just before.
    pub fn wait_more(&self, more: u64) {
        let target = self.acked.load(Ordering::SeqCst) + more;
        let start = Instant::now();
        while self.acked.load(Ordering::SeqCst) < target {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the keep-alive load stalled: {:?}",
                self.failures.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the load and says what it saw.
    pub fn finish(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        Report {
            acked: self.acked.load(Ordering::SeqCst),
            reconnects: self.reconnects.load(Ordering::SeqCst),
            connects: self.connects.load(Ordering::SeqCst),
            moves: self.moves.load(Ordering::SeqCst),
            failures: self.failures.lock().unwrap().clone(),
        }
    }
}
