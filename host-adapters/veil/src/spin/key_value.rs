//! `fermyon:spin/key-value@2.0.0`: in-memory stores shared by every instance of this process,
//! one per label listed in the component's `key_value_stores`. Contents live as long as the
//! process (Veil keeps only caches there, which are rebuilt on demand).
//!
//! Each store holds at most [`Limits::max_entries`] keys and [`Limits::max_bytes`] of keys and
//! values (`veil serve --kv-max-entries`, `--kv-max-mib`). A `set` that would pass either evicts
//! the least recently used entries (read or written longest ago) until it fits, so a store that
//! filled up keeps accepting new entries: the interface carries no expiry, and the entries
//! nobody reads any more (expired tokens, old key versions) are the ones that go first. Only a
//! single entry larger than the whole store gets `store-table-full`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Resource, ResourceTable};

use super::bindings::fermyon::spin::key_value::{Error, Host, HostStore};

const MAX_KEY_BYTES: usize = 256;
/// How often, at most, a store says again that it is evicting.
const EVICTION_LOG_EVERY: Duration = Duration::from_secs(60);

/// The size of each store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_entries: 100_000, max_bytes: 64 << 20 }
    }
}

struct Entry {
    value: Vec<u8>,
    /// When it was last read or written: its key in [`Entries::by_use`].
    used: u64,
}

struct Entries {
    map: HashMap<String, Entry>,
    /// Keys by last use, least recent first.
    by_use: BTreeMap<u64, String>,
    clock: u64,
    /// Bytes of keys and values held.
    bytes: usize,
    evicted: u64,
    last_log: Option<Instant>,
}

impl Entries {
    fn new() -> Self {
        Entries {
            map: HashMap::new(),
            by_use: BTreeMap::new(),
            clock: 0,
            bytes: 0,
            evicted: 0,
            last_log: None,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        let now = self.tick();
        let entry = self.map.get_mut(key)?;
        let before = std::mem::replace(&mut entry.used, now);
        let value = entry.value.clone();
        if let Some(k) = self.by_use.remove(&before) {
            self.by_use.insert(now, k);
        }
        Some(value)
    }

    fn remove(&mut self, key: &str) -> bool {
        match self.map.remove(key) {
            Some(entry) => {
                self.by_use.remove(&entry.used);
                self.bytes -= key.len() + entry.value.len();
                true
            }
            None => false,
        }
    }

    /// Stores `value`, evicting the least recently used entries as needed; `false` if it could
    /// never fit.
    fn set(&mut self, key: String, value: Vec<u8>, limits: Limits) -> bool {
        let size = key.len() + value.len();
        if size > limits.max_bytes {
            return false;
        }
        self.remove(&key);
        let mut evicted = 0u64;
        while self.map.len() >= limits.max_entries.max(1) || self.bytes + size > limits.max_bytes {
            let Some((_, oldest)) = self.by_use.pop_first() else { break };
            if let Some(entry) = self.map.remove(&oldest) {
                self.bytes -= oldest.len() + entry.value.len();
                evicted += 1;
            }
        }
        let now = self.tick();
        self.bytes += size;
        self.by_use.insert(now, key.clone());
        self.map.insert(key, Entry { value, used: now });
        if evicted > 0 {
            self.evicted += evicted;
            self.log_eviction(limits);
        }
        true
    }

    fn log_eviction(&mut self, limits: Limits) {
        if self.last_log.is_some_and(|t| t.elapsed() < EVICTION_LOG_EVERY) {
            return;
        }
        self.last_log = Some(Instant::now());
        eprintln!(
            "veil: key-value store full ({} entries, {} bytes; limits {} entries, {} bytes): {} least \
             recently used entries evicted so far",
            self.map.len(),
            self.bytes,
            limits.max_entries,
            limits.max_bytes,
            self.evicted
        );
    }
}

/// One labelled store.
pub struct Bucket {
    entries: Mutex<Entries>,
    limits: Limits,
}

impl Bucket {
    fn new(limits: Limits) -> Self {
        Bucket { entries: Mutex::new(Entries::new()), limits }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The stores a component may open, by label.
#[derive(Default)]
pub struct KeyValueStores {
    by_label: BTreeMap<String, Arc<Bucket>>,
}

impl KeyValueStores {
    pub fn new(labels: &[String], limits: Limits) -> Self {
        KeyValueStores {
            by_label: labels.iter().map(|l| (l.clone(), Arc::new(Bucket::new(limits)))).collect(),
        }
    }
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.by_label.keys().map(String::as_str)
    }
}

/// An open store: the guest's `store` resource.
pub struct Store(Arc<Bucket>);

/// The `HasData` marker for the key-value interface.
pub struct KeyValue;

impl HasData for KeyValue {
    type Data<'a> = KeyValueView<'a>;
}

/// What the key-value interface needs from the instance.
pub struct KeyValueView<'a> {
    pub stores: &'a KeyValueStores,
    pub table: &'a mut ResourceTable,
}

impl KeyValueView<'_> {
    fn bucket(&self, store: &Resource<Store>) -> Result<Arc<Bucket>, Error> {
        self.table.get(store).map(|s| s.0.clone()).map_err(|e| Error::Other(e.to_string()))
    }
}

impl Host for KeyValueView<'_> {}

impl HostStore for KeyValueView<'_> {
    fn open(&mut self, label: String) -> Result<Resource<Store>, Error> {
        let bucket = self.stores.by_label.get(&label).ok_or(Error::AccessDenied)?.clone();
        self.table.push(Store(bucket)).map_err(|e| Error::Other(e.to_string()))
    }

    fn get(&mut self, store: Resource<Store>, key: String) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.bucket(&store)?.lock().get(&key))
    }

    fn set(&mut self, store: Resource<Store>, key: String, value: Vec<u8>) -> Result<(), Error> {
        if key.len() > MAX_KEY_BYTES {
            return Err(Error::Other(format!("keys are at most {MAX_KEY_BYTES} bytes")));
        }
        let bucket = self.bucket(&store)?;
        let limits = bucket.limits;
        if bucket.lock().set(key, value, limits) {
            Ok(())
        } else {
            Err(Error::StoreTableFull)
        }
    }

    fn delete(&mut self, store: Resource<Store>, key: String) -> Result<(), Error> {
        self.bucket(&store)?.lock().remove(&key);
        Ok(())
    }

    fn exists(&mut self, store: Resource<Store>, key: String) -> Result<bool, Error> {
        Ok(self.bucket(&store)?.lock().map.contains_key(&key))
    }

    fn get_keys(&mut self, store: Resource<Store>) -> Result<Vec<String>, Error> {
        Ok(self.bucket(&store)?.lock().map.keys().cloned().collect())
    }

    fn drop(&mut self, store: Resource<Store>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(stores: &'a KeyValueStores, table: &'a mut ResourceTable) -> (KeyValueView<'a>, u32) {
        let mut v = KeyValueView { stores, table };
        let s = v.open("default".into()).expect("open");
        (v, s.rep())
    }

    fn at(rep: u32) -> Resource<Store> {
        Resource::new_borrow(rep)
    }

    #[test]
    fn labels_sizes_and_sharing() {
        let stores = KeyValueStores::new(&["default".to_string()], Limits::default());
        let mut t1 = ResourceTable::new();
        let mut t2 = ResourceTable::new();
        let mut a = KeyValueView { stores: &stores, table: &mut t1 };
        assert!(matches!(a.open("other".into()), Err(Error::AccessDenied)));
        let s = a.open("default".into()).expect("open");
        a.set(at(s.rep()), "k".into(), b"v1".to_vec()).expect("set");
        let (mut b, s2) = view(&stores, &mut t2);
        // another instance sees the same store
        assert_eq!(b.get(at(s2), "k".into()).expect("get"), Some(b"v1".to_vec()));
        b.delete(at(s2), "k".into()).expect("delete");
        assert!(!b.exists(at(s2), "k".into()).expect("exists"));
        // only an entry larger than the whole store is refused
        let big = vec![0u8; Limits::default().max_bytes];
        assert!(matches!(b.set(at(s2), "big".into(), big), Err(Error::StoreTableFull)));
        assert!(b.set(at(s2), "x".repeat(300), vec![]).is_err());
    }

    #[test]
    fn a_full_store_evicts_the_least_recently_used() {
        let stores =
            KeyValueStores::new(&["default".to_string()], Limits { max_entries: 3, max_bytes: 1000 });
        let mut t = ResourceTable::new();
        let (mut kv, s) = view(&stores, &mut t);
        for k in ["a", "b", "c"] {
            kv.set(at(s), k.into(), vec![1]).expect("set");
        }
        // reading `a` makes `b` the least recently used
        assert_eq!(kv.get(at(s), "a".into()).expect("get"), Some(vec![1]));
        kv.set(at(s), "d".into(), vec![2]).expect("set beyond the cap");
        let mut keys = kv.get_keys(at(s)).expect("keys");
        keys.sort();
        assert_eq!(keys, ["a", "c", "d"]);
        // overwriting needs no room
        kv.set(at(s), "c".into(), vec![3]).expect("overwrite");
        assert_eq!(kv.get_keys(at(s)).expect("keys").len(), 3);
        // thousands of distinct keys later, the store still takes new ones and keeps the hot one
        assert_eq!(kv.get(at(s), "a".into()).expect("get"), Some(vec![1]));
        for i in 0..5000 {
            kv.set(at(s), format!("k{i}"), vec![0; 8]).expect("set");
            assert_eq!(kv.get(at(s), "a".into()).expect("get"), Some(vec![1]), "{i}");
        }
        assert_eq!(kv.get(at(s), "k4998".into()).expect("get"), Some(vec![0; 8]));
        assert_eq!(kv.get(at(s), "k4997".into()).expect("get"), None);
        assert_eq!(kv.get_keys(at(s)).expect("keys").len(), 3);
        let e = stores.by_label["default"].lock();
        assert_eq!(e.map.len(), e.by_use.len());
        assert_eq!(e.bytes, e.map.iter().map(|(k, v)| k.len() + v.value.len()).sum::<usize>());
    }

    #[test]
    fn the_byte_limit_evicts_too() {
        let stores =
            KeyValueStores::new(&["default".to_string()], Limits { max_entries: 100, max_bytes: 30 });
        let mut t = ResourceTable::new();
        let (mut kv, s) = view(&stores, &mut t);
        kv.set(at(s), "a".into(), vec![0; 9]).expect("set"); // 10 bytes
        kv.set(at(s), "b".into(), vec![0; 9]).expect("set"); // 20
        kv.set(at(s), "c".into(), vec![0; 19]).expect("set"); // 40 > 30: `a` goes
        let mut keys = kv.get_keys(at(s)).expect("keys");
        keys.sort();
        assert_eq!(keys, ["b", "c"]);
        assert!(matches!(kv.set(at(s), "d".into(), vec![0; 30]), Err(Error::StoreTableFull)));
        // a refused entry evicts nothing
        assert_eq!(kv.get_keys(at(s)).expect("keys").len(), 2);
        kv.delete(at(s), "c".into()).expect("delete");
        assert_eq!(stores.by_label["default"].lock().bytes, 10);
    }
}
