//! Compile-time behaviour of the macros: what they accept (`ui/pass`, built and run) and where
//! their errors point (`ui/fail`, one case per mistake, with the expected `.stderr`).
//!
//! Refresh the snapshots after a deliberate change with `TRYBUILD=overwrite cargo test --test ui`,
//! then read every changed `.stderr`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.pass("tests/ui/pass/*/*.rs");
    t.compile_fail("tests/ui/fail/*/*.rs");
}
