//! What the macros' generated code calls. Not public API: no stability promise.

pub use linkme;

pub use crate::hooks::{BoxFuture, Hook, HookContext, HookOutput, HookWhen, HOOKS};
pub use crate::lifecycle::{run_main, MainOptions};
pub use crate::snapshot::{SnapshotReader, SnapshotWriter, State};
pub use crate::Error;

/// What a `#[persist]` field's type must be: one bound, one error per field that lacks it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a `#[persist]` field: serde cannot serialize and deserialize it",
    label = "this type is not `serde::Serialize + serde::Deserialize`",
    note = "derive both for your own types (`#[derive(serde::Serialize, serde::Deserialize)]`), store a form serde has (an `Instant` as the milliseconds it measures, in a `u64`), or drop `#[persist]` and build the field in `main`"
)]
pub trait Persist: serde::Serialize + serde::de::DeserializeOwned + 'static {}

// `do_not_recommend`: a type that lacks the bound is reported as not `Persist` (the message
// above, once), not as lacking `Serialize` and, again, `Deserialize`.
#[diagnostic::do_not_recommend]
impl<T: serde::Serialize + serde::de::DeserializeOwned + 'static> Persist for T {}

/// Named by `#[derive(State)]` with the span of a `#[persist]` field's type: the one check of
/// that type, so a type serde cannot handle is reported once, on the field.
pub fn assert_persist<T: Persist>() {}

/// What `#[derive(State)]` saves and takes a field through. For a type that is not [`Persist`]
/// the inherent functions do not apply and [`NotPersist`]'s stand in, so that
/// [`assert_persist`]'s error is the only one.
pub struct Persisted<T>(core::marker::PhantomData<T>);

impl<T: Persist> Persisted<T> {
    /// Writes the field.
    pub fn save<'a>(w: &mut SnapshotWriter<'a>, name: &str, value: &'a T) -> Result<(), Error> {
        w.field(name, value)
    }

    /// Takes the field from the snapshot, if it has it.
    pub fn take(r: &mut SnapshotReader, name: &str) -> Result<Option<T>, Error> {
        r.take(name)
    }
}

/// Decoder entry points for the fuzz targets (`fuzz/`) and the decoder property tests.
pub mod fuzz {
    pub use crate::handoff::fuzz_channel;
    pub use crate::snapshot::{fuzz_seed, fuzz_snapshot};
}

/// Stand-ins for [`Persisted`]'s functions where the field's type is not [`Persist`]: the code
/// compiles no further than [`assert_persist`]'s error, so they never run.
pub trait NotPersist<T> {
    /// Never called: see the trait.
    fn save<'a>(_: &mut SnapshotWriter<'a>, _: &str, _: &'a T) -> Result<(), Error> {
        unreachable!("a #[persist] field that is not Persist does not compile")
    }
    /// Never called: see the trait.
    fn take(_: &mut SnapshotReader, _: &str) -> Result<Option<T>, Error> {
        unreachable!("a #[persist] field that is not Persist does not compile")
    }
}

impl<T> NotPersist<T> for Persisted<T> {}
