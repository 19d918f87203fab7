//! What the macros' generated code calls. Not public API: no stability promise.

pub use linkme;

pub use crate::hooks::{BoxFuture, Hook, HookContext, HookOutput, HookWhen, HOOKS};
pub use crate::lifecycle::{run_main, MainOptions};
pub use crate::snapshot::{SnapshotReader, SnapshotWriter, State};
pub use crate::tracked::{Receiver, Tracked};
pub use crate::Error;

/// Runs a plain `fn` hook on a blocking thread, so that its time limit holds even if it blocks
/// (the thread is left to finish; the restart goes on without it).
pub async fn run_blocking(
    hook: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<(), String> {
    match tokio::task::spawn_blocking(hook).await {
        Ok(result) => result,
        Err(e) => Err(format!("the hook panicked: {e}")),
    }
}

/// What a `#[persist]` field's type must be, for the one error a field that is not gets.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a `#[persist]` field: it is neither a serde type nor a lock around one",
    label = "not `serde::Serialize + serde::Deserialize`, nor a `Mutex`/`RwLock` (std, tokio or parking_lot) around such a type",
    note = "derive both for your own types (`#[derive(serde::Serialize, serde::Deserialize)]`), store a form serde has (an `Instant` as the milliseconds it measures, in a `u64`), or drop `#[persist]` and build the field in `main`"
)]
pub trait Persist: serde::Serialize + serde::de::DeserializeOwned + 'static {}

// `do_not_recommend`: a type that lacks the bound is reported as not `Persist` (the message
// above, once), not as lacking `Serialize` and, again, `Deserialize`.
#[diagnostic::do_not_recommend]
impl<T: serde::Serialize + serde::de::DeserializeOwned + 'static> Persist for T {}

/// What `#[derive(State)]` checks, saves and takes a `#[persist]` field of type `T` through,
/// as `(&&&&Field::<T>::NEW).persist_save(..)`: autoref specialization picks, by depth, the
/// first of [`ViaSerde`] (serde types, `std` locks included), [`ViaLock`] (a tokio or
/// parking_lot lock around a serde type, which serde does not implement) and [`Unsupported`]
/// (anything else: its `persist_check` requires [`Persist`], the one error the field gets; its
/// other methods only stand in so that nothing else fails).
pub struct Field<T>(core::marker::PhantomData<fn() -> T>);

impl<T> Field<T> {
    /// The only value.
    pub const NEW: Self = Field(core::marker::PhantomData);
}

/// A serde type, stored as it is.
pub trait ViaSerde<T> {
    /// Nothing to check.
    fn persist_check(&self) {}
    /// Writes the field.
    fn persist_save<'a>(
        &self,
        w: &mut SnapshotWriter<'a>,
        name: &str,
        v: &'a T,
    ) -> Result<(), Error>;
    /// Takes the field, if the snapshot has it.
    fn persist_take(&self, r: &mut SnapshotReader, name: &str) -> Result<Option<T>, Error>;
}

impl<T: Persist> ViaSerde<T> for &&&Field<T> {
    fn persist_save<'a>(
        &self,
        w: &mut SnapshotWriter<'a>,
        name: &str,
        v: &'a T,
    ) -> Result<(), Error> {
        w.field(name, v)
    }
    fn persist_take(&self, r: &mut SnapshotReader, name: &str) -> Result<Option<T>, Error> {
        r.take(name)
    }
}

/// A lock whose guard serde cannot take: the inner value is stored under the lock's type name
/// (so changing the lock is a type change, reported, never reinterpreted). The snapshot runs
/// after the old process quiesced, when no request holds the lock; a task that still does (a
/// long-lived connection, a background refresher) is waited for up to 200 ms, past which the
/// snapshot fails and the restart rolls back.
pub trait ViaLock<L> {
    /// Nothing to check.
    fn persist_check(&self) {}
    /// Writes the field's inner value.
    fn persist_save(&self, w: &mut SnapshotWriter<'_>, name: &str, v: &L) -> Result<(), Error>;
    /// Takes the field, if the snapshot has it, in a new lock.
    fn persist_take(&self, r: &mut SnapshotReader, name: &str) -> Result<Option<L>, Error>;
}

/// How long the snapshot retries a lock held (or, for tokio's fair `RwLock`, waited for by a
/// writer) when it is taken: the lock's holder is a task the snapshot does not wait for, which
/// usually lets go within microseconds. The snapshot runs while nobody is accepted, so the wait
/// is bounded; past it the snapshot fails and the restart rolls back (or, at an exit, the state
/// file is not written, with a line saying so).
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(200);

/// `attempt` until it gives a guard, for up to [`LOCK_PATIENCE`]. The snapshot is synchronous
/// (encoded in one go): a short sleep between attempts, not an `.await`.
fn patiently<G>(mut attempt: impl FnMut() -> Option<G>) -> Option<G> {
    let start = std::time::Instant::now();
    loop {
        if let Some(guard) = attempt() {
            return Some(guard);
        }
        if start.elapsed() >= LOCK_PATIENCE {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn locked(name: &str) -> Error {
    Error::Field {
        field: name.to_owned(),
        reason: "its lock is held at the snapshot (by a task the snapshot does not wait for)"
            .into(),
    }
}

macro_rules! via_lock {
    ($lock:ty, $inner:ident, |$v:ident| $guard:expr, $wrap:expr) => {
        impl<$inner: Persist> ViaLock<$lock> for &&Field<$lock> {
            fn persist_save(
                &self,
                w: &mut SnapshotWriter<'_>,
                name: &str,
                $v: &$lock,
            ) -> Result<(), Error> {
                let guard = patiently(|| $guard).ok_or_else(|| locked(name))?;
                w.field_as(name, core::any::type_name::<$lock>(), &*guard)
            }
            fn persist_take(
                &self,
                r: &mut SnapshotReader,
                name: &str,
            ) -> Result<Option<$lock>, Error> {
                Ok(r.take_as::<$inner>(name, core::any::type_name::<$lock>())?
                    .map($wrap))
            }
        }
    };
}

via_lock!(
    tokio::sync::Mutex<T>,
    T,
    |v| v.try_lock().ok(),
    tokio::sync::Mutex::new
);
via_lock!(
    tokio::sync::RwLock<T>,
    T,
    |v| v.try_read().ok(),
    tokio::sync::RwLock::new
);
#[cfg(feature = "parking_lot")]
via_lock!(
    parking_lot::Mutex<T>,
    T,
    |v| v.try_lock(),
    parking_lot::Mutex::new
);
#[cfg(feature = "parking_lot")]
via_lock!(
    parking_lot::RwLock<T>,
    T,
    |v| v.try_read(),
    parking_lot::RwLock::new
);

/// What a [`TrackedMap`](crate::TrackedMap) or [`TrackedBytes`](crate::TrackedBytes) inside a
/// lock is not: it would persist (serde sees through std's locks) but never pre-copy, since the
/// derive cannot see through the lock; refused, with the fix.
#[diagnostic::on_unimplemented(
    message = "`{Self}` locks inside: as a `#[persist]` field it goes without a `Mutex` or `RwLock` around it",
    label = "a lock around a tracked container",
    note = "write the field as `{Self}` itself (its methods take `&self`); behind a lock it would be copied whole after the quiesce instead of pre-copied while the service still serves"
)]
pub trait NotBehindALock {}

/// A tracked container behind a lock: its `persist_check` requires [`NotBehindALock`], which
/// nothing implements (the one error this field gets). The derive's check is
/// `(&&&&&Field::<T>::NEW).persist_check()`, one level above the others, so this comes first.
pub trait TrackedBehindALock<T> {
    /// The error.
    fn persist_check(&self)
    where
        T: NotBehindALock,
    {
    }
}

macro_rules! tracked_behind_a_lock {
    ($($lock:ident)::+) => {
        impl<K, V> TrackedBehindALock<crate::TrackedMap<K, V>>
            for &&&&Field<$($lock)::+<crate::TrackedMap<K, V>>>
        {
        }
        impl TrackedBehindALock<crate::TrackedBytes> for &&&&Field<$($lock)::+<crate::TrackedBytes>> {}
    };
}

tracked_behind_a_lock!(std::sync::Mutex);
tracked_behind_a_lock!(std::sync::RwLock);
tracked_behind_a_lock!(tokio::sync::Mutex);
tracked_behind_a_lock!(tokio::sync::RwLock);
#[cfg(feature = "parking_lot")]
tracked_behind_a_lock!(parking_lot::Mutex);
#[cfg(feature = "parking_lot")]
tracked_behind_a_lock!(parking_lot::RwLock);

/// A field that can be copied while it changes ([`Tracked`]): handed to the pre-copy.
pub trait ViaTracked<T> {
    /// Gives the field to `visit`.
    fn persist_tracked<'a>(
        &self,
        visit: &mut dyn FnMut(&'static str, &'a dyn Tracked),
        name: &'static str,
        v: &'a T,
    );
}

impl<T: Tracked> ViaTracked<T> for &&&Field<T> {
    fn persist_tracked<'a>(
        &self,
        visit: &mut dyn FnMut(&'static str, &'a dyn Tracked),
        name: &'static str,
        v: &'a T,
    ) {
        visit(name, v)
    }
}

/// Any other field: copied whole in the snapshot, after the quiesce.
pub trait NotTracked<T> {
    /// Nothing to give.
    fn persist_tracked<'a>(
        &self,
        _: &mut dyn FnMut(&'static str, &'a dyn Tracked),
        _: &'static str,
        _: &'a T,
    ) {
    }
}

impl<T> NotTracked<T> for &&Field<T> {}

/// Anything else: the check fails (once, with [`Persist`]'s message); the rest never runs.
pub trait Unsupported<T> {
    /// The one error of a field that cannot persist.
    fn persist_check(&self)
    where
        T: Persist,
    {
    }
    /// Never called: see the trait.
    fn persist_save(&self, _: &mut SnapshotWriter<'_>, _: &str, _: &T) -> Result<(), Error> {
        unreachable!("a #[persist] field that cannot persist does not compile")
    }
    /// Never called: see the trait.
    fn persist_take(&self, _: &mut SnapshotReader, _: &str) -> Result<Option<T>, Error> {
        unreachable!("a #[persist] field that cannot persist does not compile")
    }
}

impl<T> Unsupported<T> for &Field<T> {}

/// Decoder entry points for the fuzz targets (`fuzz/`) and the decoder property tests.
pub mod fuzz {
    pub use crate::handoff::fuzz_channel;
    pub use crate::snapshot::{fuzz_seed, fuzz_snapshot};
}
