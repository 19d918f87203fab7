//! The snapshot decoder: what a state file or a SNAPSHOT frame holds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hotrestart::__private::fuzz::fuzz_snapshot(data);
});
