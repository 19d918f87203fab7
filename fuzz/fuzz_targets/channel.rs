//! Every message of the handoff channel: HELLO, PREPARED, SNAPSHOT, READY, REJECT.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hotrestart::__private::fuzz::fuzz_channel(data);
});
