//! The door on wasm32: Spin SDK adapters (SQLite, variables, outbound HTTP), the HTTP entry
//! point and the exported `veil:gateway/protection` interface. Nothing else touches the host.

mod http_entry;
mod outbound;
mod postgres;
mod sqlite;
mod wit_export;

use crate::api::error::ApiError;
use crate::auth::{AuthConfig, Authenticator};
use crate::config::{Config, Variables};
use crate::crypto::rng::Csprng;
use crate::kms::cache::{DekCache, KeyValue};
use crate::ops::Ctx;
use crate::store::sql::SqlConn;

/// Spin component variables; empty values count as unset.
pub(crate) struct SpinVariables;

impl Variables for SpinVariables {
    fn get(&self, name: &str) -> Option<String> {
        spin_sdk::variables::get(name).ok().filter(|v| !v.trim().is_empty())
    }
}

/// The host's key-value store `default` (manifest `key_value_stores`), for the DEK cache.
struct SpinKeyValue(spin_sdk::key_value::Store);

impl KeyValue for SpinKeyValue {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get(key).map_err(|e| e.to_string())
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.0.set(key, value).map_err(|e| e.to_string())
    }
    fn delete(&self, key: &str) -> Result<(), String> {
        self.0.delete(key).map_err(|e| e.to_string())
    }
}

/// Runs `f` with everything one request needs, built from the host: configuration, a lazily
/// opened database connection, a CSPRNG seeded once, the authenticator and the JWKS fetcher.
pub(crate) fn with_request<T>(
    config: &Config,
    auth_config: AuthConfig,
    f: impl FnOnce(&mut Ctx<'_>, Result<&Authenticator, ApiError>, &outbound::Outbound) -> T,
) -> Result<T, ApiError> {
    let rng = Csprng::from_os().map_err(|_| {
        eprintln!("veil: the host gave no randomness");
        ApiError::internal()
    })?;
    let conn: Box<dyn SqlConn> = match config.database_url.as_ref() {
        None => Box::new(sqlite::LazySqlite::default()),
        Some(url) => Box::new(postgres::LazyPostgres::new(url.clone())),
    };
    let mut ctx = Ctx::new(config, conn.as_ref(), rng, crate::clock::now_unix());
    ctx.keks = crate::kms::Keks::new(
        std::rc::Rc::new(outbound::Outbound),
        std::rc::Rc::new(crate::kms::transport::SystemClock),
    );
    if let Some(settings) = &config.dek_cache {
        match spin_sdk::key_value::Store::open_default() {
            Ok(store) => {
                ctx.dek_cache =
                    Some(DekCache::new(Box::new(SpinKeyValue(store)), &settings.key, settings.limits));
            }
            Err(e) => {
                eprintln!("veil: dek_cache is on but the key-value store `default` is unavailable: {e}")
            }
        }
    }
    let auth = Authenticator::new(auth_config).map_err(ApiError::from);
    Ok(f(&mut ctx, auth.as_ref().map_err(Clone::clone), &outbound::Outbound))
}
