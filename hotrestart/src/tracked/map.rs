//! [`TrackedMap`]: a concurrent hash map that records which keys changed during a pre-copy.

use std::any::Any;
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, RandomState};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Receiver, Tracked};
use crate::error::{Error, Result};

/// How many parts a map is cut into: each is locked on its own (writers to other parts go on),
/// and copied whole under its lock in the first round of a pre-copy (at a million entries, about
/// 8,000 entries, a fraction of a millisecond).
const SHARDS: usize = 128;

/// The parts of a map, each behind its lock.
type Parts<K, V> = Box<[Mutex<Shard<K, V>>]>;

struct Shard<K, V> {
    map: HashMap<K, V>,
    /// The keys changed since this part was last copied; `None` while no pre-copy runs, or
    /// before this part's first copy (which will include every change).
    changed: Option<HashSet<K>>,
}

/// Where a pre-copy is: the next part to copy, and whether this round copies parts whole.
#[derive(Default)]
struct Cursor {
    next: usize,
    whole: bool,
}

/// A hash map for `#[persist]` state that a restart copies while the service still serves.
///
/// The usual map operations, taking `&self` (it locks inside, one of 128 parts at a time, so it
/// goes in the state as it is: no `Mutex` around it). While a restart pre-copies the state,
/// every write also records its key (a clone of it) so that the next round sends the key's
/// value again (or its removal); otherwise a write costs one more hash than a `HashMap`'s, to
/// pick the part. Reads and writes of one key are atomic; operations over the whole map
/// ([`len`](Self::len), [`for_each`](Self::for_each), [`retain`](Self::retain)) go part by
/// part, not at one instant. The closures given to [`get_with`](Self::get_with),
/// [`update`](Self::update), [`upsert`](Self::upsert), [`retain`](Self::retain) and
/// [`for_each`](Self::for_each) run under a part's lock: they must not call the same map.
///
/// Change values through [`insert`](Self::insert), [`update`](Self::update),
/// [`upsert`](Self::upsert) or [`retain`](Self::retain): a value changed through interior
/// mutability (an atomic inside it, reached with `get_with` or `for_each`) is not recorded, and a
/// restart under way would miss that change.
///
/// Iteration order is unspecified, as a `HashMap`'s. Keys are spread over the parts by a hash
/// with its own random keys, and each part is a `HashMap` with std's DoS-resistant hasher.
///
/// ```
/// let sessions: hotrestart::TrackedMap<String, u64> = hotrestart::TrackedMap::new();
/// sessions.insert("alice".to_owned(), 1);
/// sessions.update("alice", |n| *n += 1);
/// assert_eq!(sessions.get("alice"), Some(2));
/// assert_eq!(sessions.remove("alice"), Some(2));
/// assert!(sessions.is_empty());
/// ```
pub struct TrackedMap<K, V> {
    /// Made at the first insert (or `with_capacity`): an empty map costs no allocation.
    shards: OnceLock<Parts<K, V>>,
    /// Picks the part of a key; independent of the parts' own hashers.
    router: RandomState,
    len: AtomicUsize,
    cursor: Mutex<Cursor>,
    /// Keys recorded as changed and not sent yet.
    changed: AtomicU64,
    /// Bytes an entry took in the last piece: the estimate of a round's size.
    entry_bytes: AtomicU64,
}

impl<K, V> Default for TrackedMap<K, V> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<K, V> std::fmt::Debug for TrackedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedMap")
            .field("len", &self.len.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K, V> TrackedMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map with room for `capacity` entries without growing.
    pub fn with_capacity(capacity: usize) -> Self {
        let shards = OnceLock::new();
        if capacity > 0 {
            let _ = shards.set(parts(capacity / SHARDS + capacity / SHARDS / 16 + 8));
        }
        TrackedMap {
            shards,
            router: RandomState::new(),
            len: AtomicUsize::new(0),
            cursor: Mutex::new(Cursor::default()),
            changed: AtomicU64::new(0),
            entry_bytes: AtomicU64::new(16),
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many entries the map holds without growing (all its parts together).
    pub fn capacity(&self) -> usize {
        self.parts_if_any()
            .iter()
            .map(|s| lock(s).map.capacity())
            .sum()
    }

    /// The parts, made now if they were not.
    fn parts(&self) -> &[Mutex<Shard<K, V>>] {
        self.shards.get_or_init(|| parts(0))
    }

    /// The parts, none if the map never had an entry.
    fn parts_if_any(&self) -> &[Mutex<Shard<K, V>>] {
        self.shards.get().map_or(&[], |p| p)
    }
}

/// `SHARDS` empty parts with room for `per` entries each.
fn parts<K, V>(per: usize) -> Parts<K, V> {
    (0..SHARDS)
        .map(|_| {
            Mutex::new(Shard {
                map: HashMap::with_capacity(per),
                changed: None,
            })
        })
        .collect()
}

impl<K: Eq + Hash + Clone, V> TrackedMap<K, V> {
    /// The part of `key`, for a write that may add it.
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, Shard<K, V>> {
        let h = self.router.hash_one(key);
        lock(&self.parts()[(h % SHARDS as u64) as usize])
    }

    /// The part of `key`, if the map has parts (an empty map has none to look in).
    fn shard_if_any<Q: Hash + ?Sized>(&self, key: &Q) -> Option<MutexGuard<'_, Shard<K, V>>> {
        let parts = self.shards.get()?;
        let h = self.router.hash_one(key);
        Some(lock(&parts[(h % SHARDS as u64) as usize]))
    }

    fn record(&self, shard: &mut Shard<K, V>, key: impl FnOnce() -> K) {
        if let Some(changed) = &mut shard.changed {
            if changed.insert(key()) {
                self.changed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Inserts `value` under `key`; returns the value it replaces.
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        let mut shard = self.shard(&key);
        self.record(&mut shard, || key.clone());
        let old = shard.map.insert(key, value);
        if old.is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        old
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut shard = self.shard_if_any(key)?;
        let (k, v) = shard.map.remove_entry(key)?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        self.record(&mut shard, || k);
        Some(v)
    }

    /// A clone of the value under `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        self.shard_if_any(key)?.map.get(key).cloned()
    }

    /// Calls `read` with the value under `key`, under the lock of its part.
    pub fn get_with<Q, R>(&self, key: &Q, read: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard_if_any(key)?.map.get(key).map(read)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard_if_any(key)
            .is_some_and(|shard| shard.map.contains_key(key))
    }

    /// Changes the value under `key` in place, if there is one.
    pub fn update<Q, R>(&self, key: &Q, change: impl FnOnce(&mut V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut shard = self.shard_if_any(key)?;
        if shard.changed.is_some() {
            let k = shard.map.get_key_value(key)?.0.clone();
            self.record(&mut shard, || k);
        }
        shard.map.get_mut(key).map(change)
    }

    /// Changes the value under `key` in place, inserting `default()` first if there is none:
    /// what `HashMap::entry(key).or_insert_with(default)` followed by a change does.
    pub fn upsert<R>(
        &self,
        key: K,
        default: impl FnOnce() -> V,
        change: impl FnOnce(&mut V) -> R,
    ) -> R {
        let mut shard = self.shard(&key);
        self.record(&mut shard, || key.clone());
        // Counted when inserted, so that a `change` that panics leaves `len` right.
        let value = match shard.map.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let value = e.insert(default());
                self.len.fetch_add(1, Ordering::Relaxed);
                value
            }
        };
        change(value)
    }

    /// Keeps the entries for which `keep` returns `true`, part by part. `keep` may change the
    /// values it keeps: while a pre-copy runs, every entry it visits is recorded (kept and
    /// changed, or removed).
    pub fn retain(&self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for s in self.parts_if_any() {
            let mut shard = lock(s);
            let Shard { map, changed } = &mut *shard;
            map.retain(|k, v| {
                let kept = keep(k, v);
                if let Some(changed) = changed {
                    if changed.insert(k.clone()) {
                        self.changed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if !kept {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
                kept
            });
        }
    }

    /// Removes every entry.
    pub fn clear(&self) {
        self.retain(|_, _| false);
    }

    /// Calls `visit` with every entry, part by part (each part under its lock).
    pub fn for_each(&self, mut visit: impl FnMut(&K, &V)) {
        for s in self.parts_if_any() {
            for (k, v) in &lock(s).map {
                visit(k, v);
            }
        }
    }

    /// A copy of the entries in a `HashMap`.
    pub fn to_hash_map(&self) -> HashMap<K, V>
    where
        V: Clone,
    {
        let mut out = HashMap::with_capacity(self.len());
        self.for_each(|k, v| {
            out.insert(k.clone(), v.clone());
        });
        out
    }

    /// Makes room for `additional` more entries, spread over the parts.
    pub fn reserve(&self, additional: usize) {
        let per = additional / SHARDS + additional / SHARDS / 16 + 8;
        for s in self.parts() {
            lock(s).map.reserve(per);
        }
    }
}

impl<K: Eq + Hash + Clone, V> FromIterator<(K, V)> for TrackedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let map = Self::with_capacity(iter.size_hint().0);
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl<K: Eq + Hash + Clone, V> From<HashMap<K, V>> for TrackedMap<K, V> {
    fn from(map: HashMap<K, V>) -> Self {
        map.into_iter().collect()
    }
}

// ---------------------------------------------------------------------------------------------
// serde: a map, written part by part with every part locked (a consistent image).

impl<K: Serialize, V: Serialize> Serialize for TrackedMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        // In order, one after the other: a writer holds at most one, so this cannot deadlock.
        let shards: Vec<_> = self.parts_if_any().iter().map(lock).collect();
        let len = shards.iter().map(|s| s.map.len()).sum();
        let mut out = serializer.serialize_map(Some(len))?;
        for shard in &shards {
            for (k, v) in &shard.map {
                out.serialize_entry(k, v)?;
            }
        }
        out.end()
    }
}

impl<'de, K, V> Deserialize<'de> for TrackedMap<K, V>
where
    K: Deserialize<'de> + Eq + Hash + Clone,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct MapVisitor<K, V>(PhantomData<fn() -> (K, V)>);
        impl<'de, K, V> Visitor<'de> for MapVisitor<K, V>
        where
            K: Deserialize<'de> + Eq + Hash + Clone,
            V: Deserialize<'de>,
        {
            type Value = TrackedMap<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut access: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                // Pre-sized once, so a million entries are not rehashed twenty times; from a
                // length bounded by the input (see `presize`).
                let declared = access.size_hint().unwrap_or(0);
                let map = TrackedMap::with_capacity(super::presize::<(K, V)>(declared));
                while let Some((k, v)) = access.next_entry()? {
                    map.insert(k, v);
                }
                Ok(map)
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}

// ---------------------------------------------------------------------------------------------
// Pre-copy. A piece is a run of `(key, Option<value>)` in postcard; `None` is a removal.

impl<K, V> Tracked for TrackedMap<K, V>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn tracked_type(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    fn len_hint(&self) -> u64 {
        self.len() as u64
    }

    fn start(&self) {
        // Made now: a part made after the first round passed it would never be recorded.
        self.parts();
        self.stop();
        *lock(&self.cursor) = Cursor {
            next: 0,
            whole: true,
        };
    }

    fn piece(&self, out: &mut Vec<u8>, budget: usize) -> Result<bool> {
        let mut cursor = lock(&self.cursor);
        let start = out.len();
        let mut entries = 0u64;
        while cursor.next < SHARDS && out.len() - start < budget.max(1) {
            let mut shard = lock(&self.parts_if_any()[cursor.next]);
            cursor.next += 1;
            let Shard { map, changed } = &mut *shard;
            if cursor.whole {
                // From now on this part's changes are recorded: they are not in this copy
                // only if they come after it.
                *changed = Some(HashSet::new());
                for (k, v) in map.iter() {
                    encode(out, k, Some(v))?;
                }
                entries += map.len() as u64;
            } else if let Some(keys) = changed {
                let keys = std::mem::take(keys);
                self.changed.fetch_sub(keys.len() as u64, Ordering::Relaxed);
                entries += keys.len() as u64;
                for k in keys {
                    encode(out, &k, map.get(&k))?;
                }
            }
        }
        if let Some(each) = ((out.len() - start) as u64).checked_div(entries) {
            self.entry_bytes.store(each.max(1), Ordering::Relaxed);
        }
        Ok(cursor.next < SHARDS)
    }

    fn pending(&self) -> u64 {
        self.changed.load(Ordering::Relaxed) * self.entry_bytes.load(Ordering::Relaxed)
    }

    fn next_round(&self) {
        *lock(&self.cursor) = Cursor {
            next: 0,
            whole: false,
        };
    }

    fn stop(&self) {
        for s in self.parts_if_any() {
            lock(s).changed = None;
        }
        self.changed.store(0, Ordering::Relaxed);
    }

    fn receiver(&self, len_hint: u64) -> Box<dyn Receiver> {
        Box::new(MapReceiver {
            map: TrackedMap::<K, V>::new(),
            declared: len_hint,
            received: 0,
            reserved: 0,
        })
    }
}

fn encode<K: Serialize, V: Serialize>(out: &mut Vec<u8>, k: &K, v: Option<&V>) -> Result<()> {
    let buf = std::mem::take(out);
    *out = postcard::to_extend(&(k, v), buf).map_err(|e| Error::Field {
        field: "(pre-copy)".into(),
        reason: format!("cannot serialize an entry: {e}"),
    })?;
    Ok(())
}

struct MapReceiver<K, V> {
    map: TrackedMap<K, V>,
    /// The entries the old process had when the pre-copy began.
    declared: u64,
    /// Bytes received so far.
    received: u64,
    /// The entries room was made for.
    reserved: u64,
}

impl<K, V> Receiver for MapReceiver<K, V>
where
    K: DeserializeOwned + Eq + Hash + Clone + Send + Sync + 'static,
    V: DeserializeOwned + Send + Sync + 'static,
{
    fn apply(&mut self, mut piece: &[u8]) -> Result<()> {
        // Room for the declared entries, but never for more than three times the bytes
        // received would take in memory: a lying length cannot make it allocate much more
        // than what arrived.
        self.received += piece.len() as u64;
        let entry = std::mem::size_of::<(K, V)>().max(1) as u64;
        let room = self.declared.min(self.received.saturating_mul(3) / entry);
        if room > self.reserved {
            let have = self.map.len() as u64;
            self.map.reserve(room.saturating_sub(have) as usize);
            self.reserved = room;
        }
        while !piece.is_empty() {
            let ((k, v), rest) =
                postcard::take_from_bytes::<(K, Option<V>)>(piece).map_err(|e| {
                    Error::snapshot(format!("a pre-copied map entry does not decode: {e}"))
                })?;
            piece = rest;
            match v {
                Some(v) => {
                    self.map.insert(k, v);
                }
                None => {
                    self.map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Box<dyn Any + Send>> {
        Ok(Box::new(self.map))
    }
}
