//! `fermyon:spin/key-value@2.0.0`: in-memory stores shared by every instance of this process,
//! one per label listed in the component's `key_value_stores`. Contents live as long as the
//! process (Veil keeps only caches there, which are rebuilt on demand). Each store holds at most
//! [`MAX_ENTRIES`] keys and [`MAX_BYTES`] of data; beyond that a `set` gets `store-table-full`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::component::{HasData, Resource, ResourceTable};

use super::bindings::fermyon::spin::key_value::{Error, Host, HostStore};

pub const MAX_ENTRIES: usize = 100_000;
pub const MAX_BYTES: usize = 64 << 20;
const MAX_KEY_BYTES: usize = 256;

#[derive(Default)]
struct Entries {
    map: HashMap<String, Vec<u8>>,
    bytes: usize,
}

/// One labelled store.
#[derive(Default)]
pub struct Bucket(Mutex<Entries>);

impl Bucket {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The stores a component may open, by label.
#[derive(Default)]
pub struct KeyValueStores {
    by_label: BTreeMap<String, Arc<Bucket>>,
}

impl KeyValueStores {
    pub fn new(labels: &[String]) -> Self {
        KeyValueStores { by_label: labels.iter().map(|l| (l.clone(), Arc::default())).collect() }
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
        Ok(self.bucket(&store)?.lock().map.get(&key).cloned())
    }

    fn set(&mut self, store: Resource<Store>, key: String, value: Vec<u8>) -> Result<(), Error> {
        if key.len() > MAX_KEY_BYTES {
            return Err(Error::Other(format!("keys are at most {MAX_KEY_BYTES} bytes")));
        }
        let bucket = self.bucket(&store)?;
        let mut e = bucket.lock();
        let old = e.map.get(&key).map_or(0, |v| v.len() + key.len());
        let new_bytes = e.bytes - old + value.len() + key.len();
        if new_bytes > MAX_BYTES || (old == 0 && e.map.len() >= MAX_ENTRIES) {
            return Err(Error::StoreTableFull);
        }
        e.bytes = new_bytes;
        e.map.insert(key, value);
        Ok(())
    }

    fn delete(&mut self, store: Resource<Store>, key: String) -> Result<(), Error> {
        let bucket = self.bucket(&store)?;
        let mut e = bucket.lock();
        if let Some(v) = e.map.remove(&key) {
            e.bytes -= v.len() + key.len();
        }
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

    #[test]
    fn labels_sizes_and_sharing() {
        let stores = KeyValueStores::new(&["default".to_string()]);
        let mut t1 = ResourceTable::new();
        let mut t2 = ResourceTable::new();
        let mut a = KeyValueView { stores: &stores, table: &mut t1 };
        assert!(matches!(a.open("other".into()), Err(Error::AccessDenied)));
        let s = a.open("default".into()).expect("open");
        a.set(Resource::new_borrow(s.rep()), "k".into(), b"v1".to_vec()).expect("set");
        let mut b = KeyValueView { stores: &stores, table: &mut t2 };
        let s2 = b.open("default".into()).expect("open");
        // another instance sees the same store
        assert_eq!(b.get(Resource::new_borrow(s2.rep()), "k".into()).expect("get"), Some(b"v1".to_vec()));
        b.delete(Resource::new_borrow(s2.rep()), "k".into()).expect("delete");
        assert!(!b.exists(Resource::new_borrow(s2.rep()), "k".into()).expect("exists"));
        let big = vec![0u8; MAX_BYTES];
        assert!(matches!(
            b.set(Resource::new_borrow(s2.rep()), "big".into(), big),
            Err(Error::StoreTableFull)
        ));
        assert!(b.set(Resource::new_borrow(s2.rep()), "x".repeat(300), vec![]).is_err());
    }
}
