//! A keep-alive HTTP/1.1 load: persistent connections that send `POST /hit` back to back and
//! reconnect only when the server says `connection: close`. Any other end of a connection
//! under a request is a failure. It also counts connects, and how often a connection's
//! responses switched to another `x-pid` (a connection handed to a successor).

use std::io::{BufRead, BufReader, Read, Write};
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

/// One response on a persistent connection: (status, wants close, x-pid).
fn exchange(reader: &mut BufReader<TcpStream>) -> Result<(u16, bool, u32), String> {
    reader
        .get_mut()
        .write_all(b"POST /hit HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    if reader
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?
        == 0
    {
        return Err("EOF before the response".into());
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad status line {line:?}"))?;
    let (mut length, mut close, mut pid) = (0usize, false, 0);
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
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().map_err(|_| "bad content-length")?;
            } else if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
            {
                close = true;
            } else if k.eq_ignore_ascii_case("x-pid") {
                pid = v.trim().parse().map_err(|_| "bad x-pid")?;
            }
        }
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("read body: {e}"))?;
    Ok((status, close, pid))
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
                            Ok((200, close, pid)) => {
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
                            Ok((status, _, _)) => {
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
