//! `fermyon:spin/key-value@2.0.0`: stores shared by every instance of this process, one per
//! label listed in the component's `key_value_stores`. By default they live in memory, as long
//! as the process (Veil keeps only caches there, which are rebuilt on demand); with
//! `veil serve --kv-file PATH` they live in one SQLite file instead, in the table layout of
//! Spin's own default key-value store (`spin_key_value (store, key, value)`), so that the
//! caches outlive a restart, several hosts can share them, and anything with write access to
//! the file can write entries there: which is what Veil's cache entries are sealed against.
//!
//! Each store holds at most [`Limits::max_entries`] keys and [`Limits::max_bytes`] of keys and
//! values (`veil serve --kv-max-entries`, `--kv-max-mib`). A `set` that would pass either evicts
//! the least recently used entries (read or written longest ago; in a file, written longest ago)
//! until it fits, so a store that filled up keeps accepting new entries: the interface carries no
//! expiry, and the entries nobody reads any more (expired tokens, old key versions) are the ones
//! that go first. Only a single entry larger than the whole store gets `store-table-full`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::OptionalExtension;

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

/// A store kept in a SQLite file, in Spin's layout. Eviction order is the order of last write
/// (`INSERT OR REPLACE` gives a rewritten entry a new rowid); reads do not reorder, so that a read
/// stays a read.
struct FileEntries {
    conn: rusqlite::Connection,
    label: String,
    /// Entries and bytes of this store, counted at open and kept up to date by this process
    /// (another writer of the file is counted again when an eviction is due).
    count: usize,
    bytes: usize,
    evicted: u64,
    last_log: Option<Instant>,
}

/// How long a key-value statement waits for another connection's lock on the file.
const KV_FILE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl FileEntries {
    fn open(path: &Path, label: &str) -> rusqlite::Result<FileEntries> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(KV_FILE_BUSY_TIMEOUT)?;
        // A cache: WAL so that readers never wait, and no sync per write (a lost entry is a miss).
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS spin_key_value (
                 store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (store, key));",
        )?;
        let mut f =
            FileEntries { conn, label: label.to_string(), count: 0, bytes: 0, evicted: 0, last_log: None };
        f.recount()?;
        Ok(f)
    }

    fn recount(&mut self) -> rusqlite::Result<()> {
        let (count, bytes): (i64, i64) = self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(key AS BLOB)) + LENGTH(value)), 0) \
             FROM spin_key_value WHERE store = ?1",
            [&self.label],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        self.count = usize::try_from(count).unwrap_or(0);
        self.bytes = usize::try_from(bytes).unwrap_or(0);
        Ok(())
    }

    fn get(&self, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
            .query_row(rusqlite::params![self.label, key], |r| r.get(0))
            .optional()
    }

    /// The size (key and value) of an entry, if it exists.
    fn size(&self, key: &str) -> rusqlite::Result<Option<usize>> {
        let n: Option<i64> = self
            .conn
            .prepare_cached("SELECT LENGTH(value) FROM spin_key_value WHERE store = ?1 AND key = ?2")?
            .query_row(rusqlite::params![self.label, key], |r| r.get(0))
            .optional()?;
        Ok(n.map(|n| key.len() + usize::try_from(n).unwrap_or(0)))
    }

    fn remove(&mut self, key: &str) -> rusqlite::Result<bool> {
        let Some(size) = self.size(key)? else { return Ok(false) };
        self.conn
            .prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?
            .execute(rusqlite::params![self.label, key])?;
        self.count = self.count.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(size);
        Ok(true)
    }

    fn set(&mut self, key: String, value: Vec<u8>, limits: Limits) -> rusqlite::Result<bool> {
        let size = key.len() + value.len();
        if size > limits.max_bytes {
            return Ok(false);
        }
        self.remove(&key)?;
        if self.count >= limits.max_entries.max(1) || self.bytes + size > limits.max_bytes {
            // Another writer may have changed the file: count again before evicting.
            self.recount()?;
        }
        let mut evicted = 0u64;
        while self.count > 0
            && (self.count >= limits.max_entries.max(1) || self.bytes + size > limits.max_bytes)
        {
            let oldest: Option<(String, i64)> = self
                .conn
                .prepare_cached(
                    "SELECT key, LENGTH(CAST(key AS BLOB)) + LENGTH(value) FROM spin_key_value \
                     WHERE store = ?1 ORDER BY rowid LIMIT 1",
                )?
                .query_row([&self.label], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((oldest, _)) = oldest else { break };
            self.remove(&oldest)?;
            evicted += 1;
        }
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)")?
            .execute(rusqlite::params![self.label, key, value])?;
        self.count += 1;
        self.bytes += size;
        if evicted > 0 {
            self.evicted += evicted;
            if self.last_log.is_none_or(|t| t.elapsed() >= EVICTION_LOG_EVERY) {
                self.last_log = Some(Instant::now());
                eprintln!(
                    "veil: key-value store `{}` full ({} entries, {} bytes; limits {} entries, {} bytes): \
                     {} least recently written entries evicted so far",
                    self.label, self.count, self.bytes, limits.max_entries, limits.max_bytes, self.evicted
                );
            }
        }
        Ok(true)
    }

    fn exists(&self, key: &str) -> rusqlite::Result<bool> {
        Ok(self.size(key)?.is_some())
    }

    fn keys(&self) -> rusqlite::Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")?;
        let keys = stmt.query_map([&self.label], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(keys)
    }
}

/// Where a labelled store keeps its entries.
enum Backend {
    Memory(Mutex<Entries>),
    File(Mutex<FileEntries>),
}

/// One labelled store.
pub struct Bucket {
    backend: Backend,
    limits: Limits,
}

fn kv_error(e: &rusqlite::Error) -> Error {
    Error::Other(format!("key-value file: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Bucket {
    fn new(limits: Limits) -> Self {
        Bucket { backend: Backend::Memory(Mutex::new(Entries::new())), limits }
    }

    #[cfg(test)]
    fn lock(&self) -> MutexGuard<'_, Entries> {
        match &self.backend {
            Backend::Memory(m) => lock(m),
            Backend::File(_) => unreachable!("tests look inside memory stores only"),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match &self.backend {
            Backend::Memory(m) => Ok(lock(m).get(key)),
            Backend::File(f) => lock(f).get(key).map_err(|e| kv_error(&e)),
        }
    }

    fn set(&self, key: String, value: Vec<u8>) -> Result<bool, Error> {
        match &self.backend {
            Backend::Memory(m) => Ok(lock(m).set(key, value, self.limits)),
            Backend::File(f) => lock(f).set(key, value, self.limits).map_err(|e| kv_error(&e)),
        }
    }

    fn remove(&self, key: &str) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(m) => {
                lock(m).remove(key);
                Ok(())
            }
            Backend::File(f) => lock(f).remove(key).map(|_| ()).map_err(|e| kv_error(&e)),
        }
    }

    fn exists(&self, key: &str) -> Result<bool, Error> {
        match &self.backend {
            Backend::Memory(m) => Ok(lock(m).map.contains_key(key)),
            Backend::File(f) => lock(f).exists(key).map_err(|e| kv_error(&e)),
        }
    }

    fn keys(&self) -> Result<Vec<String>, Error> {
        match &self.backend {
            Backend::Memory(m) => Ok(lock(m).map.keys().cloned().collect()),
            Backend::File(f) => lock(f).keys().map_err(|e| kv_error(&e)),
        }
    }
}

/// The stores a component may open, by label.
#[derive(Default)]
pub struct KeyValueStores {
    by_label: BTreeMap<String, Arc<Bucket>>,
    file: Option<PathBuf>,
}

impl KeyValueStores {
    /// Stores in memory.
    pub fn new(labels: &[String], limits: Limits) -> Self {
        KeyValueStores {
            by_label: labels.iter().map(|l| (l.clone(), Arc::new(Bucket::new(limits)))).collect(),
            file: None,
        }
    }

    /// Stores in one SQLite file (created if missing), in Spin's table layout.
    pub fn in_file(labels: &[String], limits: Limits, path: &Path) -> anyhow::Result<Self> {
        let mut by_label = BTreeMap::new();
        for label in labels {
            let entries = FileEntries::open(path, label).map_err(|e| {
                anyhow::anyhow!("cannot open the key-value file {} for store `{label}`: {e}", path.display())
            })?;
            by_label.insert(
                label.clone(),
                Arc::new(Bucket { backend: Backend::File(Mutex::new(entries)), limits }),
            );
        }
        Ok(KeyValueStores { by_label, file: Some(path.to_path_buf()) })
    }

    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.by_label.keys().map(String::as_str)
    }

    /// The file the stores live in, if not in memory.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
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
        self.bucket(&store)?.get(&key)
    }

    fn set(&mut self, store: Resource<Store>, key: String, value: Vec<u8>) -> Result<(), Error> {
        if key.len() > MAX_KEY_BYTES {
            return Err(Error::Other(format!("keys are at most {MAX_KEY_BYTES} bytes")));
        }
        if self.bucket(&store)?.set(key, value)? {
            Ok(())
        } else {
            Err(Error::StoreTableFull)
        }
    }

    fn delete(&mut self, store: Resource<Store>, key: String) -> Result<(), Error> {
        self.bucket(&store)?.remove(&key)
    }

    fn exists(&mut self, store: Resource<Store>, key: String) -> Result<bool, Error> {
        self.bucket(&store)?.exists(&key)
    }

    fn get_keys(&mut self, store: Resource<Store>) -> Result<Vec<String>, Error> {
        self.bucket(&store)?.keys()
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

    #[test]
    fn a_file_store_keeps_entries_in_spins_layout_and_evicts_the_oldest_writes() {
        let dir = std::env::temp_dir().join(format!("veil-kv-file-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("kv.db");
        let labels = ["default".to_string(), "other".to_string()];
        let limits = Limits { max_entries: 3, max_bytes: 1000 };
        {
            let stores = KeyValueStores::in_file(&labels, limits, &path).expect("open");
            let mut t = ResourceTable::new();
            let (mut kv, s) = view(&stores, &mut t);
            for k in ["a", "b", "c"] {
                kv.set(at(s), k.into(), vec![1]).expect("set");
            }
            kv.set(at(s), "a".into(), vec![2]).expect("rewrite: now the newest");
            kv.set(at(s), "d".into(), vec![3]).expect("set beyond the cap");
            let mut keys = kv.get_keys(at(s)).expect("keys");
            keys.sort();
            assert_eq!(keys, ["a", "c", "d"]);
            assert!(matches!(kv.set(at(s), "big".into(), vec![0; 1000]), Err(Error::StoreTableFull)));
            kv.delete(at(s), "c".into()).expect("delete");
            assert!(!kv.exists(at(s), "c".into()).expect("exists"));
        }
        // another process's view of the file: Spin's table, one row per (store, key)
        let db = rusqlite::Connection::open(&path).expect("open file");
        let mut rows: Vec<(String, String, Vec<u8>)> = db
            .prepare("SELECT store, key, value FROM spin_key_value")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        rows.sort();
        assert_eq!(rows, [("default".into(), "a".into(), vec![2]), ("default".into(), "d".into(), vec![3])]);
        db.execute("INSERT INTO spin_key_value (store, key, value) VALUES ('default', 'x', X'09')", [])
            .expect("an outside write");
        // entries outlive the process, and an outside write is seen
        let stores = KeyValueStores::in_file(&labels, limits, &path).expect("reopen");
        let mut t = ResourceTable::new();
        let (mut kv, s) = view(&stores, &mut t);
        assert_eq!(kv.get(at(s), "a".into()).expect("get"), Some(vec![2]));
        assert_eq!(kv.get(at(s), "x".into()).expect("get"), Some(vec![9]));
        kv.set(at(s), "y".into(), vec![4]).expect("set: evicts the oldest write");
        assert_eq!(kv.get(at(s), "a".into()).expect("get"), None);
        let other = kv.open("other".into()).expect("open other");
        assert_eq!(kv.get(at(other.rep()), "y".into()).expect("get"), None, "stores do not share keys");
        drop(stores);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
