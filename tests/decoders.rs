//! Property test of the decoders that read untrusted bytes (the snapshot, every message of the
//! handoff channel): random and mutated inputs never panic, never hang, and never hold more
//! memory at once (the peak of live bytes) than a small multiple of their own size plus a
//! constant, nor make one allocation beyond its bound, however hostile a length prefix.
//! The same entry points are the fuzz targets in `fuzz/`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use hotrestart::__private::fuzz::{fuzz_channel, fuzz_seed, fuzz_snapshot};
use hotrestart::__private::Tracked;

/// Records, for the current thread, the largest single allocation, the bytes live now (allocated
/// and not yet freed) and their peak.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, -(layout.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size, new_size as isize - layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note(size: usize, delta: isize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    let _ = LIVE.try_with(|live| {
        live.set(live.get() + delta);
        let _ = PEAK.try_with(|p| p.set(p.get().max(live.get())));
    });
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// xorshift64*: deterministic, so a failure names its seed and iteration.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A frame of the handoff channel: tag, u64 LE length, payload.
fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// Valid inputs to mutate: a snapshot, and a channel's worth of every message (HELLO, PREPARED
/// with its capability, PLAN, SNAPSHOT, CONNECTIONS, READY, REJECT).
fn seeds() -> Vec<Vec<u8>> {
    let snapshot = fuzz_seed();
    let mut hello = 7u64.to_le_bytes().to_vec();
    hello.extend_from_slice(&2u16.to_le_bytes());
    for name in ["http", "admin"] {
        hello.extend_from_slice(&(name.len() as u16).to_le_bytes());
        hello.extend_from_slice(name.as_bytes());
    }
    // CONNECTIONS: last flag, count, then per connection its listener and unparsed bytes.
    let mut connections = vec![1u8];
    connections.extend_from_slice(&2u32.to_le_bytes());
    for (key, prefix) in [
        ("tcp:127.0.0.1:3000", &b"GET / HT"[..]),
        ("unix:/run/a.sock", b""),
    ] {
        connections.extend_from_slice(&(key.len() as u16).to_le_bytes());
        connections.extend_from_slice(key.as_bytes());
        connections.extend_from_slice(&(prefix.len() as u32).to_le_bytes());
        connections.extend_from_slice(prefix);
    }
    let mut channel = frame(1, &hello);
    channel.extend(frame(2, &[1]));
    channel.extend(frame(7, &[1]));
    channel.extend(frame(3, &snapshot));
    channel.extend(frame(6, &connections));
    channel.extend(frame(4, b""));
    channel.extend(frame(5, b"#[persist] field `hits` changed type"));
    // Pre-copy: the offer, its answer, and a piece of a map (field 0) and of a byte buffer
    // (field 1), as the old process writes them.
    let offer = [(
        "entries",
        "hotrestart::tracked::map::TrackedMap<String, Vec<u8>>",
        2u64,
    )];
    let mut precopy = frame(8, &postcard::to_stdvec(&offer).unwrap());
    precopy.extend(frame(9, &postcard::to_stdvec(&vec![0u16, 1]).unwrap()));
    let map: hotrestart::TrackedMap<String, Vec<u8>> =
        [("a".to_owned(), vec![1]), ("bb".to_owned(), vec![2, 3])]
            .into_iter()
            .collect();
    let blob = hotrestart::TrackedBytes::from(vec![7u8; 300]);
    for (index, field) in [(0u16, &map as &dyn Tracked), (1, &blob)] {
        field.start();
        let mut piece = index.to_le_bytes().to_vec();
        while field.piece(&mut piece, usize::MAX).unwrap() {}
        precopy.extend(frame(10, &piece));
    }
    precopy.extend(frame(11, b""));
    channel.extend(precopy);
    vec![snapshot, channel]
}

/// Mutates `input` in place: bit flips, byte sets, hostile lengths, cuts and splices.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        if input.is_empty() {
            input.push(rng.next() as u8);
        }
        let at = rng.below(input.len());
        match rng.below(6) {
            0 => input[at] ^= 1 << rng.below(8),
            1 => input[at] = rng.next() as u8,
            2 => {
                // A hostile length prefix: u16, u32 or u64 of all ones or a huge value.
                let width = [2, 4, 8][rng.below(3)];
                let value = if rng.below(2) == 0 {
                    u64::MAX
                } else {
                    rng.next()
                };
                for (i, b) in value.to_le_bytes()[..width].iter().enumerate() {
                    if let Some(slot) = input.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            3 => input.truncate(at),
            4 => {
                let len = rng.below(16);
                let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                input.splice(at..at, junk);
            }
            _ => {
                let from = rng.below(input.len());
                let len = rng.below(32).min(input.len() - from);
                let copy = input[from..from + len].to_vec();
                input.splice(at..at, copy);
            }
        }
    }
}

/// Runs `check` on a worker thread and fails if it takes longer than `limit`: a hang.
fn within(limit: Duration, check: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        check();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => worker.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The worker panicked: surface its message.
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("a decoder hung for {limit:?}"),
    }
}

/// Decodes `input` with `decoder`; fails on a panic, on more bytes live at once than
/// [`peak_bound`] above what was live before, or on one allocation larger than
/// [`single_bound`].
fn decode_bounded(decoder: fn(&[u8]), input: &[u8], what: &str) {
    LARGEST.with(|l| l.set(0));
    let before = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(before));
    decoder(input);
    let largest = LARGEST.with(Cell::get);
    let peak = (PEAK.with(Cell::get) - before) as usize;
    assert!(
        largest <= single_bound(input.len()),
        "{what}: one allocation of {largest} bytes for {} bytes of input",
        input.len()
    );
    assert!(
        peak <= peak_bound(input.len()),
        "{what}: {peak} bytes live at once for {} bytes of input",
        input.len()
    );
    MOST.with(|m| m.set(m.get().max(peak.saturating_sub(8 * input.len()))));
}

/// One allocation: the decoder's own copies of the input, plus a constant. The constant covers
/// the 1 MiB read-ahead of a frame and serde's cautious preallocation for a collection whose
/// length prefix lies: at most 1 MiB of elements, which for a `HashMap<String, u64>` is a
/// table of 2 MiB + 64 KiB (65 536 buckets of 32 bytes and their control bytes).
fn single_bound(input: usize) -> usize {
    4 * input + (5 << 19)
}

/// Everything held at once: every copy of the input the decoders make (the snapshot read into
/// fields, each field decoded as several types, the frame fixed up and decoded again), plus the
/// read-ahead and one cautious preallocation alive together. Hostile lengths must not be able to
/// push it further.
fn peak_bound(input: usize) -> usize {
    8 * input + (4 << 20)
}

thread_local! {
    /// The largest peak seen beyond the input's copies, for the figure a test prints.
    static MOST: Cell<usize> = const { Cell::new(0) };
}

fn property(seed: u64, iterations: usize) {
    MOST.with(|m| m.set(0));
    let mut rng = Rng(seed);
    let seeds = seeds();
    for i in 0..iterations {
        let mut input = if rng.below(4) == 0 {
            let len = rng.below(256);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        mutate(&mut rng, &mut input);
        let what = format!("seed {seed:#x}, iteration {i}");
        decode_bounded(fuzz_snapshot, &input, &what);
        decode_bounded(fuzz_channel, &input, &what);
    }
    eprintln!(
        "seed {seed:#x}: at most {} bytes live beyond 8x the input (bound {})",
        MOST.with(Cell::get),
        4 << 20
    );
}

#[test]
fn seeds_decode_without_error_paths_allocating_too_much() {
    for seed in seeds() {
        decode_bounded(fuzz_snapshot, &seed, "seed");
        // The snapshot decoder copies its input: the allocation counter must have seen it.
        assert!(LARGEST.with(|l| l.get()) >= seed.len(), "the counter works");
        decode_bounded(fuzz_channel, &seed, "seed");
    }
}

#[test]
fn random_and_mutated_bytes_never_panic_hang_or_overallocate() {
    for seed in [0x9e37_79b9_7f4a_7c15, 0xdead_beef_cafe_f00d] {
        within(Duration::from_secs(60), move || property(seed, 20_000));
    }
}

#[test]
fn hostile_length_prefixes_are_refused_without_allocating() {
    within(Duration::from_secs(10), || {
        // A SNAPSHOT frame announcing 16 GiB, and one announcing u64::MAX, with 3 bytes behind.
        for len in [16u64 << 30, u64::MAX] {
            let mut f = vec![3u8];
            f.extend_from_slice(&len.to_le_bytes());
            f.extend_from_slice(b"abc");
            decode_bounded(fuzz_channel, &f, "hostile frame length");
        }
        // A snapshot whose header announces a huge body, and one whose field announces one.
        let mut snap = fuzz_seed();
        snap[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        decode_bounded(fuzz_snapshot, &snap, "hostile body length");
        let snap = fuzz_seed();
        for at in 24..snap.len().saturating_sub(8) {
            let mut s = snap.clone();
            s[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
            decode_bounded(fuzz_snapshot, &s, "hostile field length");
        }
    });
}

#[test]
#[ignore = "tool, not a test: writes the fuzz seeds to fuzz/corpus/ (cargo test --test decoders -- --ignored)"]
fn write_fuzz_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let seeds = seeds();
    for (target, seed) in [("snapshot", &seeds[0]), ("channel", &seeds[1])] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("seed"), seed).unwrap();
    }
    // The snapshot also travels inside the channel: a SNAPSHOT frame alone.
    std::fs::write(root.join("channel/snapshot-frame"), frame(3, &seeds[0])).unwrap();
}
