//! The fuzz target's entry point: the channel read the way both ends read it.

use super::connections::decode_connections;
use super::hello::{check_hello_header, decode_hello};
use super::*;

/// Decodes `bytes` the way both ends read the channel, for fuzzing and property tests: first
/// as a HELLO (header and payload, as the successor reads it before anything else), then as a
/// stream of frames read by the successor (SNAPSHOT allowed up to 16 GiB) and by the old
/// process (control frames only), each payload decoded by its tag. Whatever the bytes, it must
/// return: no panic, no hang, no allocation beyond a small multiple of `bytes.len()`.
#[doc(hidden)]
pub fn fuzz_channel(bytes: &[u8]) {
    if let Some(head) = bytes.get(..FRAME_HEADER) {
        let head: &[u8; FRAME_HEADER] = head.try_into().unwrap();
        if let Ok(len) = check_hello_header(head) {
            let rest = &bytes[FRAME_HEADER..];
            if let Some(payload) = usize::try_from(len).ok().and_then(|n| rest.get(..n)) {
                let _ = decode_hello(payload);
            }
        }
    }
    for limit in [MAX_SNAPSHOT, MAX_CONTROL] {
        // Pieces of field 0 go to a map's receiver, of field 1 to a byte buffer's, each told
        // the largest length there is.
        use crate::tracked::Tracked;
        let mut receivers = [
            crate::TrackedMap::<String, Vec<u8>>::new().receiver(u64::MAX),
            crate::TrackedBytes::new().receiver(u64::MAX),
        ];
        let mut reader = bytes;
        // Reading from a slice never waits: each poll completes.
        while let Some(Ok(frame)) = poll_now(read_frame(&mut reader, limit)) {
            match frame.tag {
                TAG_HELLO => {
                    let _ = decode_hello(&frame.payload);
                }
                TAG_SNAPSHOT => crate::snapshot::fuzz_snapshot(&frame.payload),
                TAG_CONNECTIONS => {
                    let _ = decode_connections(&frame.payload);
                }
                TAG_REJECT => {
                    let _ = String::from_utf8_lossy(&frame.payload);
                }
                TAG_PRECOPY => {
                    let _ = crate::lifecycle::precopy::decode_offer(&frame.payload);
                }
                TAG_PRECOPY_ACCEPT => {
                    let _ = postcard::from_bytes::<Vec<u16>>(&frame.payload);
                }
                TAG_PIECE => {
                    if let Some((index, piece)) = frame.payload.split_first_chunk::<2>() {
                        let index = usize::from(u16::from_le_bytes(*index) % 2);
                        let _ = receivers[index].apply(piece);
                    }
                }
                _ => {}
            }
        }
        for receiver in receivers {
            let _ = receiver.finish();
        }
    }
}

/// Polls `fut` once; `None` if it is not ready (never, for reads from a slice).
fn poll_now<F: std::future::Future>(fut: F) -> Option<F::Output> {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: std::sync::Arc<Self>) {}
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Noop));
    let mut cx = std::task::Context::from_waker(&waker);
    let fut = std::pin::pin!(fut);
    match fut.poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}
