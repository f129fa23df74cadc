//! The door on wasm32: Spin SDK adapters (SQLite, variables, outbound HTTP), the HTTP entry
//! point and the exported `veil:gateway/protection` interface. Nothing else touches the host.

mod http_entry;
mod outbound;
mod postgres;
mod sqlite;
mod wit_export;

use std::rc::Rc;

use crate::auth::{AuthConfig, Authenticator};
use crate::config::Config;
use crate::crypto::rng::Csprng;
use crate::kms::cache::DekCache;
use crate::kms::transport::SystemClock;
use crate::kms::Keks;
use crate::kv::KeyValue;
use crate::ops::{Ctx, OpError};
use crate::store::sql::SqlConn;
use crate::vars::Variables;

/// Spin component variables; empty values count as unset. Each variable is read with one host
/// call (`variables.get`) the first time an instance needs it, and kept for the instance's life:
/// the deployment's variables are the same for every request and tenant, and a host resolves them
/// when it starts (our host) or per component instance (Spin), so nothing of a request is kept. A
/// fresh instance reads only the variables its request needs (about twenty for a protect); a
/// reused one reads none it has read before. (`wasi:config/store.get-all` would be one call, but
/// it copies every variable of the manifest into every instance, most of them unused: measured
/// slower per fresh request, docs/architecture.md "Variables".)
pub(crate) struct SpinVariables;

/// What this instance has read so far: a name, and its value (`None`: unset or empty).
static READ: std::sync::Mutex<VariableMap> = std::sync::Mutex::new(std::collections::BTreeMap::new());

type VariableMap = std::collections::BTreeMap<String, Option<zeroize::Zeroizing<String>>>;

impl Variables for SpinVariables {
    fn get(&self, name: &str) -> Option<String> {
        let mut read = READ.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(value) = read.get(name) {
            return value.as_ref().map(|v| v.as_str().to_string());
        }
        let value = spin_sdk::variables::get(name).ok().filter(|v| !v.trim().is_empty());
        let shown = value.clone();
        read.insert(name.to_string(), value.map(zeroize::Zeroizing::new));
        shown
    }
}

/// The host's key-value store `default` (manifest `key_value_stores`), opened on first use;
/// shared by the DEK cache and the verified-token cache. Unavailable → every call fails (a miss).
#[derive(Default)]
struct SpinKeyValue(std::cell::OnceCell<Option<spin_sdk::key_value::Store>>);

impl SpinKeyValue {
    fn store(&self) -> Result<&spin_sdk::key_value::Store, String> {
        self.0
            .get_or_init(|| match spin_sdk::key_value::Store::open_default() {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("veil: the key-value store `default` is unavailable (caches off): {e}");
                    None
                }
            })
            .as_ref()
            .ok_or_else(|| "no key-value store".to_string())
    }
}

impl KeyValue for SpinKeyValue {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.store()?.get(key).map_err(|e| e.to_string())
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.store()?.set(key, value).map_err(|e| e.to_string())
    }
    fn delete(&self, key: &str) -> Result<(), String> {
        self.store()?.delete(key).map_err(|e| e.to_string())
    }
}

/// Customer databases for re-encryption jobs: the Spin variables that name them, and a
/// `spin:postgres` connection opened on first use.
struct SpinJobDatabases;

impl crate::ops::JobDatabases for SpinJobDatabases {
    fn variables(&self) -> &dyn Variables {
        &SpinVariables
    }
    fn open(&self, url: zeroize::Zeroizing<String>) -> Box<dyn SqlConn> {
        Box::new(postgres::LazyPostgres::new(url))
    }
}

static JOB_DATABASES: SpinJobDatabases = SpinJobDatabases;

/// A CSPRNG seeded with 32 bytes of `wasi:random` (straight from the host's generator).
pub(crate) fn seeded_rng() -> Option<Csprng> {
    let bytes = zeroize::Zeroizing::new(wasi::random::random::get_random_bytes(32));
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    if bytes.len() != seed.len() || bytes.iter().all(|b| *b == 0) {
        return None;
    }
    seed.copy_from_slice(&bytes);
    Some(Csprng::from_entropy(seed))
}

/// Runs `f` with everything one request needs, built from the host: configuration, a lazily
/// opened database connection, a CSPRNG seeded once, the authenticator and the JWKS fetcher.
pub(crate) fn with_request<T>(
    config: &Config,
    mut auth_config: AuthConfig,
    f: impl FnOnce(&mut Ctx<'_>, Result<&Authenticator, OpError>, &outbound::Outbound) -> T,
) -> Result<T, OpError> {
    let mut rng = seeded_rng().ok_or_else(|| {
        eprintln!("veil: the host gave no randomness");
        OpError::Internal
    })?;
    let conn: Box<dyn SqlConn> = match config.database_url.as_ref() {
        None => Box::new(sqlite::LazySqlite::default()),
        Some(url) => Box::new(postgres::LazyPostgres::new(url.clone())),
    };
    let kv = Rc::new(SpinKeyValue::default());
    let keks = Keks::new(config.kek_settings(), Rc::new(outbound::Outbound), Rc::new(SystemClock))
        .with_shared_store(kv.clone());
    let auth_rng = rng.fork();
    let jwks_rng = rng.fork();
    let mut ctx = Ctx::with_keks(config, conn.as_ref(), rng, crate::clock::now_unix(), keks);
    ctx.job_databases = Some(&JOB_DATABASES);
    if let Some(settings) = &config.dek_cache {
        ctx.dek_cache = Some(DekCache::new(Box::new(kv.clone()), &settings.key, settings.limits));
    }
    let token_cache_age = auth_config.token_cache_max_age_secs;
    let token_cache_key = auth_config.token_cache_key.take();
    let auth = Authenticator::new(auth_config)
        .map(|a| match &token_cache_key {
            Some(key) => a.with_jwks_cache(Box::new(kv.clone()), key, jwks_rng).with_token_cache(
                Box::new(kv),
                token_cache_age,
                key,
                auth_rng,
            ),
            None => a,
        })
        .map_err(OpError::from);
    Ok(f(&mut ctx, auth.as_ref().map_err(Clone::clone), &outbound::Outbound))
}
