//! Pre-copy figures: `examples/cache.rs` holding a million entries under a paced PUT load,
//! restarted again and again with pre-copy on and off in the same run; and what a tracked
//! insert costs against a `HashMap`'s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{client, median, procs, Server, Target, Trigger};

/// The value every PUT `i` writes: 16 bytes.
fn value(i: u64) -> String {
    format!("{i:016}")
}

/// PUTs `/kv/p{i}` at `rate` per second on new connections until stopped (or 10 minutes);
/// records the acknowledged ones.
fn start_puts(addr: SocketAddr, rate: u32, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<(u64, u64)>>>, failed: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = Instant::now();
        for i in 0..u64::from(rate) * 600 {
            if stop.load(Ordering::Relaxed) || start.elapsed() > Duration::from_secs(600) {
                break;
            }
            tick.tick().await;
            let sent = Instant::now();
            let put = async {
                let mut conn = client::connect(addr).await?;
                client::exchange_with_body(&mut conn, "PUT", &format!("/kv/p{i}"), value(i).as_bytes(), true).await
            };
            match put.await {
                Ok(r) if r.status == 200 => acked.lock().unwrap().push((i, sent.elapsed().as_micros() as u64)),
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
}

/// Peak RSS of `old` and of its successor while `old` hands over, sampled every millisecond.
pub fn sample_peaks(old: u32) -> tokio::task::JoinHandle<(u64, u64, u32)> {
    tokio::spawn(async move {
        let (mut peak_old, mut peak_new, mut new_pid) = (0u64, 0u64, 0u32);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(120) {
            match procs::rss(old) {
                Some(r) => peak_old = peak_old.max(r),
                None if new_pid != 0 => break,
                None => {}
            }
            if new_pid == 0 {
                new_pid = procs::children(old).into_iter().next().unwrap_or(0);
            }
            if new_pid != 0 {
                peak_new = peak_new.max(procs::rss(new_pid).unwrap_or(0));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (peak_old, peak_new, new_pid)
    })
}

/// `examples/cache.rs` with `entries` 16-byte values, `restarts` restarts under `rate` PUT/s.
pub async fn cache_row(root: &Path, entries: usize, restarts: usize, rate: u32, precopy: bool) -> String {
    let target = Target { name: "cache", bin: root.join("target/release/examples/cache"), trigger: Trigger::Signal(libc::SIGHUP, "SIGHUP"), keeps_state: true, env: &[("HOTRESTART_SUPERVISOR", "0")] };
    let server = Server::start(&target, &[("HOTRESTART_PRECOPY", if precopy { "1" } else { "0" }.to_owned())]).await;
    let first = server.pid().await.unwrap();
    let empty = procs::rss(first).unwrap_or(0);
    let mut conn = client::connect(server.addr).await.unwrap_or_else(|o| panic!("connect: {o:?}"));
    let filled = tokio::time::timeout(Duration::from_secs(120), client::exchange(&mut conn, "POST", &format!("/fill?n={entries}&bytes=16"), true)).await;
    assert!(matches!(filled, Ok(Ok(ref r)) if r.status == 200), "fill failed");
    // The map's own memory: what the fill added to the process.
    let state = procs::rss(first).unwrap_or(0).saturating_sub(empty).max(1);

    let (stop, acked, failed) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicU64::new(0)));
    let writer = start_puts(server.addr, rate, stop.clone(), acked.clone(), failed.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut old_extra, mut new_extra, mut took) = (0f64, 0f64, Vec::new());
    for _ in 0..restarts {
        let Some(old) = server.pid().await else { break };
        let base = procs::rss(old).unwrap_or(0);
        let sampler = sample_peaks(old);
        let Some((_, d)) = server.restart().await else { break };
        took.push(d.as_secs_f64() * 1e3);
        let (peak_old, peak_new, new) = sampler.await.unwrap();
        let settled = procs::rss(new).unwrap_or(0);
        old_extra = old_extra.max(peak_old.saturating_sub(base) as f64 / state as f64);
        new_extra = new_extra.max(peak_new.saturating_sub(settled) as f64 / state as f64);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    // Every acknowledged PUT, read back on one keep-alive connection.
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let mut latency: Vec<u64> = acked.iter().map(|&(_, us)| us).collect();
    latency.sort_unstable();
    let acked: Vec<u64> = acked.into_iter().map(|(i, _)| i).collect();
    let mut missing = 0usize;
    let mut conn = client::connect(server.addr).await.unwrap_or_else(|o| panic!("connect: {o:?}"));
    for &i in &acked {
        match client::exchange(&mut conn, "GET", &format!("/kv/p{i}"), false).await {
            Ok(r) if r.status == 200 && r.body == value(i) => {}
            Ok(r) if r.close => {
                missing += 1;
                conn = client::connect(server.addr).await.unwrap_or_else(|o| panic!("connect: {o:?}"));
            }
            _ => missing += 1,
        }
    }
    let mut gap = server.handover_figures("accept_gap_ms");
    let max_gap = gap.iter().cloned().fold(0f64, f64::max);
    let mut rounds = server.handover_figures("precopy_rounds");
    let mut precopied = server.handover_figures("precopy_bytes");
    let mut delta = server.handover_figures("last_delta_bytes");
    let mut snapshot = server.handover_figures("state_bytes");
    let mut elapsed = server.handover_figures("elapsed_ms");
    server.stop();
    format!(
        "| {entries} × 16 B, {rate} PUT/s, pre-copy {} | {} | {} / {missing} / {} | {:.2} / {:.2} / {:.1} | {:.2} / {:.2} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} | {:.2} |",
        if precopy { "on" } else { "off (full copy after the quiesce)" },
        took.len(),
        acked.len(),
        failed.load(Ordering::Relaxed),
        crate::pct(&latency, 0.5),
        crate::pct(&latency, 0.99),
        crate::pct(&latency, 1.0),
        median(&mut gap),
        max_gap,
        median(&mut elapsed),
        median(&mut took),
        median(&mut rounds),
        median(&mut precopied) / (1 << 20) as f64,
        median(&mut delta) / 1024.0,
        median(&mut snapshot) / (1 << 20) as f64,
        state as f64 / (1 << 20) as f64,
        old_extra,
        new_extra,
    )
}

/// Nanoseconds per insert of `n` new keys, the median of 5 alternating runs of each way.
pub fn insert_overhead_rows(n: usize) -> Vec<String> {
    use hotrestart::__private::Tracked;
    let keys: Vec<String> = (0..n).map(|i| format!("key-{i}")).collect();
    let v = vec![7u8; 16];
    let ways: [(&str, &dyn Fn() -> Duration); 4] = [
        ("`HashMap` (`&mut`, no lock)", &|| {
            let mut m: HashMap<String, Vec<u8>> = HashMap::with_capacity(n);
            let t = Instant::now();
            for k in &keys {
                m.insert(k.clone(), v.clone());
            }
            t.elapsed()
        }),
        ("`Mutex<HashMap>`", &|| {
            let m: Mutex<HashMap<String, Vec<u8>>> = Mutex::new(HashMap::with_capacity(n));
            let t = Instant::now();
            for k in &keys {
                m.lock().unwrap().insert(k.clone(), v.clone());
            }
            t.elapsed()
        }),
        ("`TrackedMap`, no restart under way", &|| {
            let m = hotrestart::TrackedMap::with_capacity(n);
            let t = Instant::now();
            for k in &keys {
                m.insert(k.clone(), v.clone());
            }
            t.elapsed()
        }),
        ("`TrackedMap`, recording (a pre-copy under way)", &|| {
            let m = hotrestart::TrackedMap::with_capacity(n);
            m.start();
            let mut piece = Vec::new();
            while m.piece(&mut piece, usize::MAX).unwrap() {}
            let t = Instant::now();
            for k in &keys {
                m.insert(k.clone(), v.clone());
            }
            let took = t.elapsed();
            m.stop();
            took
        }),
    ];
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    for _ in 0..5 {
        for (i, (_, way)) in ways.iter().enumerate() {
            runs[i].push(way().as_nanos() as f64 / n as f64);
        }
    }
    let medians: Vec<f64> = runs.iter_mut().map(|r| median(r)).collect();
    ways.iter()
        .zip(&medians)
        .map(|((name, _), ns)| format!("| {name} | {ns:.0} | {:.2} | {:.2} |", ns / medians[0], ns / medians[1]))
        .collect()
}

