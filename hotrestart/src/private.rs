//! What the macros' generated code calls. Not public API: no stability promise.

pub use linkme;

pub use crate::hooks::{BoxFuture, Hook, HookContext, HookOutput, HOOKS};
pub use crate::lifecycle::{run_main, MainOptions};
pub use crate::snapshot::{SnapshotReader, SnapshotWriter, State};
pub use crate::Error;

/// Named by `#[derive(State)]` with the span of a `#[persist]` field's type, so a type that
/// serde cannot handle is reported on that field.
pub fn assert_persist<T: serde::Serialize + serde::de::DeserializeOwned>() {}

/// Decoder entry points for the fuzz targets (`fuzz/`) and the decoder property tests.
pub mod fuzz {
    pub use crate::handoff::fuzz_channel;
    pub use crate::snapshot::{fuzz_seed, fuzz_snapshot};
}
