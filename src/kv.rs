//! The host's key-value store, as the caches see it (Spin's `key-value` in the component, a
//! map in tests). Caches treat every failure of it as a miss.

use std::rc::Rc;

pub trait KeyValue {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    fn delete(&self, key: &str) -> Result<(), String>;
}

impl<T: KeyValue + ?Sized> KeyValue for Rc<T> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        (**self).get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        (**self).set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), String> {
        (**self).delete(key)
    }
}

#[cfg(test)]
pub(crate) mod mem {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    /// An in-memory store; clones share their contents (like instances of one host).
    #[derive(Clone, Default)]
    pub struct MemKv(pub Rc<RefCell<HashMap<String, Vec<u8>>>>);

    impl super::KeyValue for MemKv {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.borrow().get(key).cloned())
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            self.0.borrow_mut().insert(key.into(), value.to_vec());
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<(), String> {
            self.0.borrow_mut().remove(key);
            Ok(())
        }
    }
}
