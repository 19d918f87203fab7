//! hrbench: hotrestart against its peers, under load, in one run on one machine.
//!
//! `bench/run.sh` builds everything in release mode and runs this. It prints markdown tables:
//! restarts under load (both client modes), restart latency without load, steady-state
//! throughput against a plain axum server, and state handoff at scale against a raw
//! socketpair copy.

mod client;
mod longlived;
mod precopy;
mod procs;

use std::net::SocketAddr;
use std::sync::Arc;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use client::{Mode, Outcome, Sample};

struct Args {
    restarts: usize,
    duration: Duration,
    connections: usize,
    idle_restarts: usize,
    only: Option<Vec<String>>,
    state_only: bool,
    state_sizes: Vec<usize>,
    map_entries: usize,
    /// Entries and restarts of the pre-copy table.
    precopy_entries: usize,
    precopy_restarts: usize,
    /// Idle keep-alive connection counts for the connection hand-over table.
    idle_conns: Vec<usize>,
    /// Long-lived connection counts (of each kind) for the long-lived table.
    long_lived: Vec<usize>,
    /// Restarts under gRPC unary load.
    grpc_restarts: usize,
    root: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        restarts: 100,
        duration: Duration::from_secs(40),
        connections: 50,
        idle_restarts: 30,
        only: None,
        state_only: false,
        state_sizes: vec![1 << 20, 64 << 20, 512 << 20],
        map_entries: 1_000_000,
        precopy_entries: 1_000_000,
        precopy_restarts: 20,
        idle_conns: vec![0, 100, 10_000],
        long_lived: vec![0, 100, 1_000],
        grpc_restarts: 100,
        root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = |i: usize| args.get(i + 1).cloned().unwrap_or_else(|| panic!("{} needs a value", args[i]));
        match args[i].as_str() {
            "--quick" => {
                a.restarts = 10;
                a.duration = Duration::from_secs(8);
                a.idle_restarts = 10;
                a.state_sizes = vec![1 << 20, 64 << 20];
                a.map_entries = 100_000;
                a.precopy_entries = 100_000;
                a.precopy_restarts = 5;
                a.idle_conns = vec![0, 100, 1_000];
                a.long_lived = vec![0, 100];
                a.grpc_restarts = 20;
            }
            "--long-lived" => a.long_lived = value(i).split(',').map(|n| n.parse().unwrap()).collect(),
            "--grpc-restarts" => a.grpc_restarts = value(i).parse().unwrap(),
            "--idle-conns" => a.idle_conns = value(i).split(',').map(|n| n.parse().unwrap()).collect(),
            "--restarts" => a.restarts = value(i).parse().unwrap(),
            "--duration" => a.duration = Duration::from_secs(value(i).parse().unwrap()),
            "--connections" => a.connections = value(i).parse().unwrap(),
            "--only" => a.only = Some(value(i).split(',').map(str::to_owned).collect()),
            "--no-state" => a.state_sizes.clear(),
            "--state-only" => a.state_only = true,
            other => panic!("unknown argument {other}"),
        }
        i += if ["--quick", "--no-state", "--state-only"].contains(&args[i].as_str()) { 1 } else { 2 };
    }
    a
}

#[derive(Clone)]
enum Trigger {
    Signal(i32, &'static str),
    /// A signal to the main process (hotrestart's supervisor), which passes it on.
    Main(i32, &'static str),
    Naive,
    None,
}

#[derive(Clone)]
struct Target {
    name: &'static str,
    bin: PathBuf,
    trigger: Trigger,
    /// Whether the target hands its counter to the next process.
    keeps_state: bool,
    /// Environment the server starts with.
    env: &'static [(&'static str, &'static str)],
}

fn targets(root: &Path) -> Vec<Target> {
    let peers = root.join("bench/peers/target/release");
    vec![
        Target { name: "hotrestart", bin: root.join("target/release/examples/counter"), trigger: Trigger::Signal(libc::SIGHUP, "SIGHUP"), keeps_state: true, env: &[("HOTRESTART_SUPERVISOR", "0")] },
        // The same beneath its supervisor (as in a container, under systemd, in a terminal):
        // the trigger goes to the main process, which forwards it.
        Target { name: "hotrestart, supervised", bin: root.join("target/release/examples/counter"), trigger: Trigger::Main(libc::SIGHUP, "SIGHUP to the main pid"), keeps_state: true, env: &[("HOTRESTART_SUPERVISOR", "1")] },
        // The same, closing idle connections at a handover (`connection: close`) instead of
        // handing them over: what every peer does.
        Target { name: "hotrestart, hand-over off", bin: root.join("target/release/examples/counter"), trigger: Trigger::Signal(libc::SIGHUP, "SIGHUP"), keeps_state: true, env: &[("HOTRESTART_HAND_OVER_CONNECTIONS", "0")] },
        // Hands over the counter's value at spawn time (its only hook for data): approximate.
        Target { name: "shellflip", bin: peers.join("shellflip_counter"), trigger: Trigger::Signal(libc::SIGUSR1, "SIGUSR1"), keeps_state: true, env: &[] },
        Target { name: "ecdysis", bin: peers.join("ecdysis_counter"), trigger: Trigger::Signal(libc::SIGHUP, "SIGHUP"), keeps_state: false, env: &[] },
        Target { name: "naive stop+start", bin: peers.join("plain_axum"), trigger: Trigger::Naive, keeps_state: false, env: &[] },
    ]
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Server {
    target: Target,
    addr: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    /// The pid this benchmark started (the supervisor, when there is one).
    main: std::sync::atomic::AtomicU32,
}

impl Server {
    async fn start(target: &Target, extra: &[(&str, String)]) -> Server {
        let port = free_port();
        let dir = procs::temp_dir(&format!("{}-{port}", target.name.replace(' ', "_")));
        let log = dir.join("server.log");
        let mut env = vec![
            ("PORT".to_owned(), port.to_string()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
            ("HOTRESTART_STATE_FILE".to_owned(), dir.join("state").display().to_string()),
        ];
        env.extend(target.env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let server = Server { target: target.clone(), addr: SocketAddr::from(([127, 0, 0, 1], port)), dir, log, env, main: Default::default() };
        server.spawn().await;
        server
    }

    async fn spawn(&self) {
        let pid = procs::spawn(&self.target.bin, &self.env, &self.log);
        self.main.store(pid, std::sync::atomic::Ordering::Relaxed);
        let start = Instant::now();
        while self.pid().await.is_none() {
            assert!(start.elapsed() < Duration::from_secs(120), "{} did not start; log {}", self.target.name, self.log.display());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn pid(&self) -> Option<u32> {
        client::once(self.addr, "GET", "/").await.ok().map(|r| r.pid)
    }

    /// Triggers one restart; returns (trigger instant, time until a new pid answered).
    async fn restart(&self) -> Option<(Instant, Duration)> {
        let old = self.pid().await?;
        let t = Instant::now();
        match self.target.trigger {
            Trigger::Signal(sig, _) => procs::signal(old, sig),
            Trigger::Main(sig, _) => procs::signal(self.main.load(std::sync::atomic::Ordering::Relaxed), sig),
            Trigger::Naive => {
                procs::signal(old, libc::SIGTERM);
                while !procs::exited(old) {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                procs::spawn(&self.target.bin, &self.env, &self.log);
            }
            Trigger::None => return None,
        }
        let took = loop {
            if let Some(pid) = self.pid().await {
                if pid != old {
                    break t.elapsed();
                }
            }
            if t.elapsed() > Duration::from_secs(20) {
                return None;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        // Not timed: the old generation finishes draining. The next restart must be sent to the
        // new one (ecdysis, for one, keeps the old process accepting for ~0.5 s).
        let drained = Instant::now();
        while !procs::exited(old) && drained.elapsed() < Duration::from_secs(15) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Some((t, took))
    }

    fn stop(&self) {
        procs::kill_all(&self.target.bin);
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// `key=value` figures from hotrestart's "handed over" log lines.
    fn handover_figures(&self, key: &str) -> Vec<f64> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("handed over to pid"))
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}=")).and_then(|v| v.parse().ok())))
            .collect()
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct RunResult {
    samples: Vec<Sample>,
    reconnects: u64,
    connects: u64,
    moves: u64,
    restarts_done: usize,
    windows: Vec<(u64, u64)>,
    ready_ms: Vec<f64>,
    gap_ms: Vec<f64>,
    final_count: Option<u64>,
    wall: Duration,
}

async fn run_load(target: &Target, mode: Mode, restarts: usize, args: &Args) -> RunResult {
    let server = Server::start(target, &[]).await;
    let t0 = Instant::now();
    let until = t0 + args.duration;
    let conns: Vec<_> = (0..args.connections).map(|_| tokio::spawn(client::drive(server.addr, mode, t0, until))).collect();
    let mut windows = Vec::new();
    let mut ready_ms = Vec::new();
    let interval = args.duration / (restarts as u32 + 1);
    for i in 0..restarts {
        tokio::time::sleep_until((t0 + interval * (i as u32 + 1)).into()).await;
        if let Some((t, took)) = server.restart().await {
            let start = t.duration_since(t0).as_micros() as u64;
            windows.push((start, start + took.as_micros() as u64 + 200_000));
            ready_ms.push(took.as_secs_f64() * 1e3);
        }
    }
    let mut samples = Vec::new();
    let (mut reconnects, mut connects, mut moves) = (0, 0, 0);
    for c in conns {
        let s = c.await.unwrap();
        samples.extend(s.samples);
        reconnects += s.reconnects;
        connects += s.connects;
        moves += s.moves;
    }
    let wall = t0.elapsed();
    let final_count = client::once(server.addr, "GET", "/count").await.ok().and_then(|r| r.body.trim().parse().ok());
    let pids: std::collections::HashSet<u32> = samples.iter().filter(|s| s.pid != 0).map(|s| s.pid).collect();
    let gap_ms = server.handover_figures("accept_gap_ms");
    server.stop();
    RunResult { samples, reconnects, connects, moves, restarts_done: pids.len().saturating_sub(1), windows, ready_ms, gap_ms, final_count, wall }
}

fn in_window(s: &Sample, windows: &[(u64, u64)]) -> bool {
    windows.iter().any(|&(a, b)| s.start_us >= a && s.start_us <= b)
}

fn load_row(name: &str, mode: Mode, r: &RunResult, keeps_state: bool) -> String {
    let count = |o: Outcome| r.samples.iter().filter(|s| s.outcome == o).count();
    let ok = count(Outcome::Ok) as u64;
    let mut steady: Vec<u64> = r.samples.iter().filter(|s| s.outcome == Outcome::Ok && !in_window(s, &r.windows)).map(|s| s.latency_us).collect();
    let mut win: Vec<u64> = r.samples.iter().filter(|s| s.outcome == Outcome::Ok && in_window(s, &r.windows)).map(|s| s.latency_us).collect();
    steady.sort_unstable();
    win.sort_unstable();
    let conservation = match (r.final_count, keeps_state) {
        (Some(c), true) if c == ok => "exact".to_owned(),
        (Some(c), true) => format!("{:+}", c as i64 - ok as i64),
        (Some(c), false) => format!("n/a (lost {})", ok.saturating_sub(c)),
        (None, _) => "no answer".to_owned(),
    };
    let mut ready = r.ready_ms.clone();
    let mut gap = r.gap_ms.clone();
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {:.2} / {:.2} / {:.1} | {:.2} / {:.2} / {:.1} | {} | {:.1} | {} |",
        mode.name(),
        r.samples.len(),
        count(Outcome::Refused),
        count(Outcome::Reset),
        count(Outcome::Timeout),
        count(Outcome::Non2xx),
        r.reconnects,
        r.connects,
        r.moves,
        r.restarts_done,
        pct(&steady, 0.5),
        pct(&steady, 0.99),
        pct(&steady, 1.0),
        pct(&win, 0.5),
        pct(&win, 0.99),
        pct(&win, 1.0),
        if gap.is_empty() { "—".to_owned() } else { format!("{:.2} / {:.2}", median(&mut gap), gap.iter().cloned().fold(0.0, f64::max)) },
        median(&mut ready),
        conservation,
    )
}

async fn idle_restart_latency(target: &Target, n: usize) -> (f64, f64, Vec<f64>) {
    let server = Server::start(target, &[]).await;
    let mut took = Vec::new();
    for _ in 0..n {
        if let Some((_, d)) = server.restart().await {
            took.push(d.as_secs_f64() * 1e3);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let internal = server.handover_figures("elapsed_ms");
    server.stop();
    let max = took.iter().cloned().fold(0.0, f64::max);
    (median(&mut took), max, internal)
}

async fn throughput(target: &Target, mode: Mode, args: &Args) -> f64 {
    let short = Args { duration: args.duration.min(Duration::from_secs(10)), only: None, state_sizes: Vec::new(), idle_conns: Vec::new(), long_lived: Vec::new(), root: args.root.clone(), ..*args };
    let r = run_load(target, mode, 0, &short).await;
    r.samples.iter().filter(|s| s.outcome == Outcome::Ok).count() as f64 / r.wall.as_secs_f64()
}

/// Copies `bytes` through a Unix socketpair, writer and reader on two threads.
fn raw_socketpair_copy(bytes: usize) -> Duration {
    use std::io::{Read, Write};
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let data = vec![7u8; bytes];
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        for chunk in data.chunks(1 << 20) {
            a.write_all(chunk).unwrap();
        }
    });
    let mut got = Vec::with_capacity(1 << 20);
    let mut buf = vec![0u8; 1 << 20];
    while got.len() < bytes {
        let n = b.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    writer.join().unwrap();
    start.elapsed()
}

async fn state_row(args: &Args, label: &str, env: &[(&str, String)], pokes_per_sec: u32) -> String {
    let target = Target {
        name: "state",
        bin: args.root.join("bench/load/target/release/state_service"),
        trigger: Trigger::Signal(libc::SIGHUP, "SIGHUP"),
        keeps_state: true,
        env: &[],
    };
    let server = Server::start(&target, env).await;
    let old = server.pid().await.unwrap();
    let base_old = procs::rss(old).unwrap_or(0);
    let sampler = precopy::sample_peaks(old);
    // A small write rate into the tracked fields while they are pre-copied.
    let poking = Arc::new(std::sync::atomic::AtomicBool::new(pokes_per_sec > 0));
    let poker = {
        let (poking, addr) = (poking.clone(), server.addr);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / pokes_per_sec.max(1));
            let mut i = 0u64;
            while poking.load(std::sync::atomic::Ordering::Relaxed) && i < 100_000 {
                tick.tick().await;
                let _ = client::once(addr, "POST", &format!("/poke?i={i}")).await;
                i += 1;
            }
        })
    };
    let (_, took) = server.restart().await.expect("state handover");
    poking.store(false, std::sync::atomic::Ordering::Relaxed);
    poker.await.unwrap();
    // Let the old process exit, so the sampler sees the end.
    let (peak_old, peak_new, new_pid) = sampler.await.unwrap();
    let settled_new = procs::rss(new_pid).unwrap_or(0);
    // What was copied after the quiesce: the snapshot, and the last round of pre-copy (all of
    // a tracked map when pre-copy is off).
    let bytes = server.handover_figures("state_bytes").first().cloned().unwrap_or(0.0)
        + server.handover_figures("last_delta_bytes").first().cloned().unwrap_or(0.0);
    let precopied = server.handover_figures("precopy_bytes").first().cloned().unwrap_or(0.0);
    let gap = server.handover_figures("accept_gap_ms").first().cloned().unwrap_or(f64::NAN);
    server.stop();
    let state = bytes.max(precopied);
    let raw = raw_socketpair_copy(state as usize);
    let mib = bytes / (1 << 20) as f64;
    let raw_tput = state / (1 << 20) as f64 / raw.as_secs_f64();
    // The copy after the quiesce against a raw copy of the whole state: only meaningful when
    // that copy is the whole state (no pre-copy).
    let (tput, ratio) = if precopied > 0.0 {
        ("—".to_owned(), "—".to_owned())
    } else {
        let tput = mib / (gap / 1e3);
        (format!("{tput:.0}"), format!("{:.2}", tput / raw_tput))
    };
    format!(
        "| {label} | {:.1} | {:.1} | {:.1} | {:.1} | {tput} | {raw_tput:.0} | {ratio} | {:.2} | {:.2} |",
        mib,
        precopied / (1 << 20) as f64,
        gap,
        took.as_secs_f64() * 1e3,
        (peak_old.saturating_sub(base_old)) as f64 / state,
        (peak_new.saturating_sub(settled_new)) as f64 / state,
    )
}

/// Opens `n` keep-alive connections (one request each, then idle), restarts `restarts` times,
/// and after each restart sends one request on every connection: it must be answered by the
/// new pid, on the same connection.
async fn idle_connections_row(args: &Args, n: usize, restarts: usize) -> String {
    let target = &targets(&args.root)[0];
    let server = Server::start(target, &[]).await;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = client::connect(server.addr).await.unwrap_or_else(|o| panic!("connect: {o:?}"));
        client::exchange(&mut c, "GET", "/", false).await.unwrap_or_else(|o| panic!("first request: {o:?}"));
        conns.push(c);
    }
    let (mut took, mut answered, mut failed) = (Vec::new(), 0usize, 0usize);
    for _ in 0..restarts {
        let Some((_, d)) = server.restart().await else {
            failed += n;
            continue;
        };
        took.push(d.as_secs_f64() * 1e3);
        let new = server.pid().await.unwrap_or(0);
        for c in conns.iter_mut() {
            match client::exchange(c, "GET", "/", false).await {
                Ok(r) if r.status == 200 && r.pid == new && !r.close => answered += 1,
                _ => failed += 1,
            }
        }
    }
    let mut moved = server.handover_figures("connections");
    let mut elapsed = server.handover_figures("elapsed_ms");
    let mut gap = server.handover_figures("accept_gap_ms");
    server.stop();
    format!(
        "| {n} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {answered} / {failed} |",
        took.len(),
        median(&mut moved),
        median(&mut elapsed),
        median(&mut gap),
        median(&mut took),
    )
}

fn streams_target(args: &Args) -> Target {
    Target { name: "streams", bin: args.root.join("target/release/examples/streams"), trigger: Trigger::Signal(libc::SIGHUP, "SIGHUP"), keeps_state: false, env: &[("HOTRESTART_SUPERVISOR", "0")] }
}

/// Opens `n` connections of `kind` before each of `restarts` restarts of the streams example;
/// after each, checks how each ended, and reads the handover's figures from its log.
async fn long_lived_row(args: &Args, kind: longlived::Kind, n: usize, restarts: usize) -> String {
    let target = streams_target(args);
    let echo_port = free_port();
    let server = Server::start(&target, &[("ECHO_PORT", echo_port.to_string())]).await;
    let echo = SocketAddr::from(([127, 0, 0, 1], echo_port));
    let (mut took, mut clean, mut unclean, mut unopened) = (Vec::new(), 0usize, 0usize, 0usize);
    for _ in 0..restarts {
        let mut open = Vec::with_capacity(n);
        for _ in 0..n {
            match longlived::open(kind, server.addr, echo).await {
                Some(o) => open.push(o),
                None => unopened += 1,
            }
        }
        let Some((_, d)) = server.restart().await else {
            unclean += open.len();
            continue;
        };
        took.push(d.as_secs_f64() * 1e3);
        let new = server.pid().await.unwrap_or(0);
        for o in open {
            if o.ended_cleanly(new).await {
                clean += 1;
            } else {
                unclean += 1;
            }
        }
    }
    let mut gap = server.handover_figures("accept_gap_ms");
    let mut elapsed = server.handover_figures("elapsed_ms");
    let max_gap = gap.iter().cloned().fold(0.0, f64::max);
    server.stop();
    format!(
        "| {} | {n} | {} | {clean} / {unclean} / {unopened} | {:.2} / {max_gap:.2} | {:.2} | {:.2} |",
        kind.name(),
        took.len(),
        median(&mut gap),
        median(&mut elapsed),
        median(&mut took),
    )
}

/// Unary gRPC calls without pause through `restarts` restarts of the streams example.
async fn grpc_unary_row(args: &Args, restarts: usize) -> String {
    let target = streams_target(args);
    let server = Server::start(&target, &[("ECHO_PORT", free_port().to_string())]).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(longlived::unary_load(server.addr, stop_rx));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut done = 0;
    for _ in 0..restarts {
        if server.restart().await.is_some() {
            done += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(true);
    let load = load.await.unwrap();
    let mut gap = server.handover_figures("accept_gap_ms");
    server.stop();
    let shown: Vec<&String> = load.failures.iter().take(3).collect();
    format!("| {done} | {} | {} | {} | {} | {:.2} | {shown:?} |", load.calls, load.failures.len(), load.retried, load.pids.len(), median(&mut gap))
}

fn wanted(args: &Args, name: &str) -> bool {
    args.only.as_ref().is_none_or(|o| o.iter().any(|n| name.starts_with(n.as_str())))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse_args();
    procs::become_subreaper();
    // 10,000 connections need 10,000 fds here and in each server generation (which inherit it).
    procs::raise_nofile();
    let reaper = tokio::spawn(async {
        loop {
            procs::reap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let all = targets(&args.root);
    for t in all.iter().filter(|t| wanted(&args, t.name)) {
        assert!(t.bin.exists(), "{} missing: run bench/run.sh, which builds it", t.bin.display());
    }
    println!(
        "# hrbench — {} restarts in {}s under {} connections, per target and client mode\n",
        args.restarts,
        args.duration.as_secs(),
        args.connections
    );
    if !args.state_only {
    println!("## Restarts under load\n");
    println!("| target | client | requests | refused | reset | timeout | non-2xx | server-asked reconnects | connections opened / moved to a successor | restarts | steady p50/p99/max ms | restart-window p50/p99/max ms | accept gap med/max ms | trigger→new pid ms (median) | counter |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for t in all.iter().filter(|t| wanted(&args, t.name)) {
        for mode in [Mode::KeepAlive, Mode::Close] {
            let r = run_load(t, mode, args.restarts, &args).await;
            println!("{}", load_row(t.name, mode, &r, t.keeps_state));
        }
    }

    println!("\n## Restart latency, no load ({} restarts each)\n", args.idle_restarts);
    println!("| target | trigger | trigger→new pid answering, median ms | max ms | internal trigger→READY median ms |");
    println!("|---|---|---|---|---|");
    for t in all.iter().filter(|t| wanted(&args, t.name)) {
        let (med, max, mut internal) = idle_restart_latency(t, args.idle_restarts).await;
        let trig = match t.trigger {
            Trigger::Signal(_, n) | Trigger::Main(_, n) => n,
            Trigger::Naive => "SIGTERM + start",
            Trigger::None => "-",
        };
        let internal = if internal.is_empty() { "—".to_owned() } else { format!("{:.2}", median(&mut internal)) };
        println!("| {} | {trig} | {med:.2} | {max:.2} | {internal} |", t.name);
    }

    if wanted(&args, "hotrestart") {
    println!(
        "\n## Steady-state throughput, no restart (median of 4 alternating runs of {}s, {} connections)\n",
        args.duration.min(Duration::from_secs(10)).as_secs(),
        args.connections
    );
    println!("| client | plain axum req/s | hotrestart req/s | ratio |");
    println!("|---|---|---|---|");
    let plain = Target { name: "plain axum", bin: args.root.join("bench/peers/target/release/plain_axum"), trigger: Trigger::None, keeps_state: false, env: &[] };
    for mode in [Mode::KeepAlive, Mode::Close].into_iter().filter(|_| plain.bin.exists()) {
        // Alternate the two, four times, and compare medians: the machine is noisy.
        let mut ps = Vec::new();
        let mut hs = Vec::new();
        for _ in 0..4 {
            ps.push(throughput(&plain, mode, &args).await);
            hs.push(throughput(&all[0], mode, &args).await);
        }
        let (p, h) = (median(&mut ps), median(&mut hs));
        println!("| {} | {p:.0} | {h:.0} | {:.3} |", mode.name(), h / p);
    }
    // The supervisor is off the data path (sockets go straight to the generations): the same
    // comparison, supervised, in the same alternating way.
    if let Some(supervised) = all.iter().find(|t| t.name == "hotrestart, supervised").filter(|_| plain.bin.exists()) {
        for mode in [Mode::KeepAlive, Mode::Close] {
            let (mut ps, mut hs) = (Vec::new(), Vec::new());
            for _ in 0..4 {
                ps.push(throughput(&plain, mode, &args).await);
                hs.push(throughput(supervised, mode, &args).await);
            }
            let (p, h) = (median(&mut ps), median(&mut hs));
            println!("| {}, supervised | {p:.0} | {h:.0} | {:.3} |", mode.name(), h / p);
        }
        let server = Server::start(supervised, &[]).await;
        let main = server.main.load(std::sync::atomic::Ordering::Relaxed);
        let generation = server.pid().await.unwrap_or(0);
        for _ in 0..5 {
            server.restart().await;
        }
        let kib = |pid| procs::rss(pid).map_or("—".to_owned(), |b| format!("{} KiB", b / 1024));
        let current = server.pid().await.unwrap_or(0);
        println!("\n## Supervisor memory\n");
        println!("| process | resident (VmRSS) |");
        println!("|---|---|");
        println!("| supervisor (main pid {main}), after 5 restarts | {} |", kib(main));
        println!("| serving generation (pid {current}; generation 0 was {generation}) | {} |", kib(current));
        server.stop();
    }
    }

    }
    if !args.idle_conns.is_empty() && wanted(&args, "hotrestart") {
        println!("\n## Handing idle keep-alive connections over (5 restarts each; 0 is the baseline)\n");
        println!("| idle connections | restarts | moved per restart (median) | internal trigger→READY median ms | accept gap median ms | trigger→new pid answering median ms | requests on the moved connections: answered by the new pid / failed |");
        println!("|---|---|---|---|---|---|---|");
        for &n in &args.idle_conns {
            println!("{}", idle_connections_row(&args, n, 5).await);
        }
    }
    if !args.long_lived.is_empty() && wanted(&args, "streams") {
        println!("\n## Long-lived connections at a restart (examples/streams.rs, 5 restarts each; 0 is the baseline)\n");
        let kinds = [longlived::Kind::WebSocket, longlived::Kind::EventStream, longlived::Kind::GrpcWatch, longlived::Kind::Echo];
        let ends: Vec<String> = kinds.iter().map(|k| format!("{}: {}", k.name(), k.clean_end())).collect();
        println!("A clean end — {}.\n", ends.join("; "));
        println!("| kind | open | restarts | ended cleanly / not / could not open | accept gap median / max ms | internal trigger→READY median ms | trigger→new pid answering median ms |");
        println!("|---|---|---|---|---|---|---|");
        for kind in kinds {
            for &n in &args.long_lived {
                if n == 0 && kind != longlived::Kind::WebSocket {
                    continue; // one baseline is enough
                }
                println!("{}", long_lived_row(&args, kind, n, 5).await);
            }
        }
        println!("\n## gRPC unary calls through restarts (examples/streams.rs)\n");
        println!("| restarts | unary calls answered | failed | unprocessed (cancelled above a GOAWAY's last stream id), retried | pids that answered | accept gap median ms | first failures |");
        println!("|---|---|---|---|---|---|---|");
        println!("{}", grpc_unary_row(&args, args.grpc_restarts).await);
    }
    if !args.state_sizes.is_empty() {
        println!("\n## State handoff at scale\n");
        println!("| state | copied after the quiesce MiB | pre-copied while serving MiB | accept gap ms | trigger→new pid ms | handoff MiB/s | raw socketpair MiB/s | ratio | old process peak extra / state | successor peak extra / state |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let off = ("HOTRESTART_PRECOPY", "0".to_owned());
        for &size in &args.state_sizes {
            let label = format!("blob {} MiB (`Vec<u8>`)", size >> 20);
            println!("{}", state_row(&args, &label, &[("BIG_BLOB_BYTES", size.to_string())], 0).await);
            let label = format!("blob {} MiB (`TrackedBytes`), pre-copy, 100 writes/s", size >> 20);
            println!("{}", state_row(&args, &label, &[("TRACKED_BLOB_BYTES", size.to_string())], 100).await);
            let label = format!("blob {} MiB (`TrackedBytes`), pre-copy off", size >> 20);
            println!("{}", state_row(&args, &label, &[("TRACKED_BLOB_BYTES", size.to_string()), off.clone()], 0).await);
        }
        let n = args.map_entries.to_string();
        let label = format!("map {} short strings (`HashMap`)", args.map_entries);
        println!("{}", state_row(&args, &label, &[("BIG_MAP_ENTRIES", n.clone())], 0).await);
        let label = format!("map {} short strings (`TrackedMap`), pre-copy, 100 writes/s", args.map_entries);
        println!("{}", state_row(&args, &label, &[("TRACKED_MAP_ENTRIES", n.clone())], 100).await);
        let label = format!("map {} short strings (`TrackedMap`), pre-copy off", args.map_entries);
        println!("{}", state_row(&args, &label, &[("TRACKED_MAP_ENTRIES", n), off], 0).await);

        println!("\n## Pre-copy under writes (examples/cache.rs, {} restarts each, same run)\n", args.precopy_restarts);
        println!("Every acknowledged PUT is read back after the last restart. Memory: the largest peak over the restarts, above the process's RSS before the trigger (old) or after the old one exited (successor), against the RSS the map added to the first process.\n");
        println!("| state and load | restarts | PUTs acknowledged / missing after / failed | PUT latency p50 / p99 / max ms (whole run) | accept gap median / max ms | internal trigger→READY median ms | trigger→new pid median ms | pre-copy rounds (median) | pre-copied MiB | last delta KiB | snapshot MiB | map RSS MiB | old peak extra / map | successor peak extra / map |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for on in [true, false] {
            println!("{}", precopy::cache_row(&args.root, args.precopy_entries, args.precopy_restarts, 1000, on).await);
        }
        println!("\n## What a tracked insert costs ({} new keys of 16-byte values, pre-sized, one thread; median of 5 alternating runs)\n", args.precopy_entries);
        println!("| map | ns per insert | vs `HashMap` | vs `Mutex<HashMap>` |");
        println!("|---|---|---|---|");
        for row in precopy::insert_overhead_rows(args.precopy_entries) {
            println!("{row}");
        }
    }
    reaper.abort();
}
