//! Pre-copy of the tracked containers under concurrent writes: whatever the interleaving, the
//! receiver ends with exactly the source's content once the last round is applied.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;

/// Sends rounds (as the old process does while serving) until `writing` is done, then the
/// last round; returns the receiver's value.
fn precopy<T: Tracked + 'static>(field: &T, writing: impl FnOnce()) -> Box<dyn Any + Send> {
    let mut rx = field.receiver(field.len_hint());
    field.start();
    let apply_round = |rx: &mut Box<dyn Receiver>| loop {
        let mut piece = Vec::new();
        let more = field.piece(&mut piece, 4096).unwrap();
        rx.apply(&piece).unwrap();
        if !more {
            break;
        }
    };
    apply_round(&mut rx);
    field.next_round();
    apply_round(&mut rx);
    writing();
    // Quiesced: nothing writes any more; the last round carries what changed.
    field.next_round();
    apply_round(&mut rx);
    field.stop();
    rx.finish().unwrap()
}

#[test]
fn a_map_pre_copied_under_writes_ends_equal_to_the_source() {
    let map: Arc<TrackedMap<String, u64>> =
        Arc::new((0..20_000).map(|i| (format!("k{i}"), i)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (map, stop) = (map.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) || i < 50_000 {
                let k = format!("k{}", (i * 7919) % 30_000);
                match i % 5 {
                    0 => {
                        map.remove(&k);
                    }
                    1 => {
                        map.update(&k, |v| *v += 1);
                    }
                    2 => map.upsert(k, || 0, |v| *v += 10),
                    _ => {
                        map.insert(k, i);
                    }
                }
                if i % 10_000 == 0 {
                    // Changes the values it keeps, too.
                    map.retain(|_, v| {
                        *v += 1;
                        *v % 97 != 0
                    });
                }
                i += 1;
            }
        })
    };
    let got = precopy(&*map, || {
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    });
    let got = got.downcast::<TrackedMap<String, u64>>().unwrap();
    assert_eq!(got.to_hash_map(), map.to_hash_map());
    assert_eq!(got.len(), map.len());
}

#[test]
fn a_byte_buffer_pre_copied_under_writes_ends_equal_to_the_source() {
    let blob = Arc::new(TrackedBytes::from(vec![1u8; 3 * bytes::PAGE + 100]));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (blob, stop) = (blob.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) || i < 2_000 {
                match i % 7 {
                    0 => blob.extend_from_slice(&[i as u8; 1000]),
                    1 if blob.len() > 2 * bytes::PAGE => blob.truncate(blob.len() - 5000),
                    _ => {
                        let at = (i * 4099) % blob.len().max(1);
                        blob.write(at, &[i as u8; 300]);
                    }
                }
                i += 1;
            }
        })
    };
    let got = precopy(&*blob, || {
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    });
    let got = got.downcast::<TrackedBytes>().unwrap();
    assert_eq!(got.to_vec(), blob.to_vec());
}

#[test]
fn stopping_a_pre_copy_stops_the_recording() {
    let map: TrackedMap<u32, u32> = (0..1000).map(|i| (i, i)).collect();
    let blob = TrackedBytes::from(vec![0u8; 3 * bytes::PAGE]);
    for field in [&map as &dyn Tracked, &blob] {
        field.start();
        let mut piece = Vec::new();
        while field.piece(&mut piece, usize::MAX).unwrap() {}
        field.stop();
    }
    map.insert(1, 2);
    blob.write(10, b"x");
    assert_eq!((map.pending(), blob.pending()), (0, 0));
    // And a new pre-copy records from its own start.
    map.start();
    let mut piece = Vec::new();
    while map.piece(&mut piece, usize::MAX).unwrap() {}
    map.insert(1, 3);
    assert!(map.pending() > 0);
}

#[test]
fn a_piece_that_skips_pages_is_refused_without_allocating_for_them() {
    let blob = TrackedBytes::new();
    let mut rx = blob.receiver(0);
    // Declares 1 TiB and sends a page far beyond anything received.
    let mut piece = Vec::new();
    put_varint(&mut piece, 1 << 40);
    put_varint(&mut piece, 1 << 20);
    piece.extend_from_slice(&[0; 16]);
    let e = rx.apply(&piece).unwrap_err().to_string();
    assert!(e.contains("skips a page"), "{e}");
    // A length the pages never reach is refused at the end.
    let mut rx = blob.receiver(0);
    let mut piece = Vec::new();
    put_varint(&mut piece, 10);
    rx.apply(&piece).unwrap();
    let e = rx.finish().err().unwrap().to_string();
    assert!(e.contains("0 of its 10 bytes"), "{e}");
}

#[test]
fn a_map_receiver_sizes_from_the_bytes_that_arrived_not_the_declared_length() {
    let map: TrackedMap<String, String> = TrackedMap::new();
    let mut rx = map.receiver(u64::MAX);
    let piece = postcard::to_stdvec(&("k".to_owned(), Some("v".to_owned()))).unwrap();
    rx.apply(&piece).unwrap();
    let got = rx
        .finish()
        .unwrap()
        .downcast::<TrackedMap<String, String>>()
        .unwrap();
    assert_eq!(got.get("k").as_deref(), Some("v"));
    let capacity = got.capacity();
    assert!(
        capacity < 10_000,
        "room for {capacity} entries after 6 bytes"
    );
}

#[test]
fn a_map_decodes_pre_sized_and_refuses_nothing_it_wrote() {
    let map: TrackedMap<u32, String> = (0..5000).map(|i| (i, i.to_string())).collect();
    let bytes = postcard::to_stdvec(&map).unwrap();
    let back: TrackedMap<u32, String> =
        with_input_len(bytes.len(), || postcard::from_bytes(&bytes)).unwrap();
    assert_eq!(back.to_hash_map(), map.to_hash_map());
    // A declared length of 2^60 entries in 12 bytes pre-sizes for at most 6.
    let mut lying = Vec::new();
    put_varint(&mut lying, 1 << 60);
    lying.extend_from_slice(&[1, 0, 2, 0]);
    let r: std::result::Result<TrackedMap<u8, u8>, _> =
        with_input_len(lying.len(), || postcard::from_bytes(&lying));
    assert!(r.is_err());
}
