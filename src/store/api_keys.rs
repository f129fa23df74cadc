//! API keys (migration 8): one row per key, holding the SHA-256 of its secret and never the
//! secret itself; revocation and expiry are columns read on every use, so no cache can serve a
//! revoked key.

use std::collections::BTreeSet;

use super::sql::{Row, SqlValue};
use super::{corrupt, json, optional_int, Store, StoreError, SCHEMA_VERSION};
use crate::ids::TenantId;

/// How often `last_used_at` is written for one key, at most (seconds): the hot path reads the
/// row on every request but writes it at most once a minute.
pub const LAST_USED_GRANULARITY_SECS: i64 = 60;

/// An API key as stored: everything but the secret, which is not stored at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant: TenantId,
    pub label: String,
    pub roles: BTreeSet<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// A key's record and the SHA-256 of its secret, for the one comparison that authenticates it.
pub struct StoredApiKey {
    pub record: ApiKeyRecord,
    pub secret_sha256: [u8; 32],
}

const COLUMNS: &str = "id, tenant, label, roles, created_at, expires_at, revoked_at, last_used_at";

impl Store<'_> {
    /// Records a new key. `Exists` if the id is taken (128 random bits: never, in practice).
    pub fn create_api_key(&self, key: &ApiKeyRecord, secret_sha256: &[u8; 32]) -> Result<(), StoreError> {
        let roles = json(&key.roles)?;
        let params = [
            SqlValue::Text(key.id.clone()),
            SqlValue::Text(key.tenant.as_str().into()),
            SqlValue::Blob(secret_sha256.to_vec()),
            SqlValue::Text(key.label.clone()),
            SqlValue::Text(roles),
            SqlValue::Int(key.created_at),
            key.expires_at.map_or(SqlValue::Null, SqlValue::Int),
        ];
        let result = self.with_schema(|| {
            self.transaction(|| {
                self.conn.execute(
                    "INSERT INTO api_keys (id, tenant, secret_sha256, label, roles, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &params,
                )?;
                Ok(())
            })
        });
        match result {
            Err(StoreError::Conflict) => Err(StoreError::Exists),
            other => other,
        }
    }

    /// The key of this id with its secret's hash, whatever its tenant or state (the caller checks).
    pub fn api_key_for_auth(&self, id: &str) -> Result<Option<StoredApiKey>, StoreError> {
        let rows = self.read(
            &format!("SELECT {COLUMNS}, secret_sha256, {SCHEMA_VERSION} FROM api_keys WHERE id = $1"),
            &[SqlValue::Text(id.into())],
        )?;
        let Some(row) = rows.first() else { return Ok(None) };
        let r = Row(row);
        let record = record_from_row(&r)?;
        let secret_sha256 = r.blob(8)?.try_into().map_err(|_| corrupt("api_keys.secret_sha256"))?;
        Ok(Some(StoredApiKey { record, secret_sha256 }))
    }

    /// The tenant's keys, oldest first.
    pub fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = self.read(
            &format!(
                "SELECT {COLUMNS}, {SCHEMA_VERSION} FROM api_keys WHERE tenant = $1 ORDER BY created_at, id"
            ),
            &[SqlValue::Text(tenant.as_str().into())],
        )?;
        rows.iter().map(|r| record_from_row(&Row(r))).collect()
    }

    /// Revokes the tenant's key `id` (a key already revoked keeps its first `revoked_at`);
    /// `None` when the tenant has no such key.
    pub fn revoke_api_key(
        &self,
        tenant: &TenantId,
        id: &str,
        now: i64,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let t = SqlValue::Text(tenant.as_str().into());
        let i = SqlValue::Text(id.into());
        self.with_schema(|| {
            self.transaction(|| {
                self.conn.execute(
                    "UPDATE api_keys SET revoked_at = $1 WHERE tenant = $2 AND id = $3 AND revoked_at IS NULL",
                    &[SqlValue::Int(now), t.clone(), i.clone()],
                )?;
                Ok(())
            })
        })?;
        let rows = self.read(
            &format!("SELECT {COLUMNS}, {SCHEMA_VERSION} FROM api_keys WHERE tenant = $1 AND id = $2"),
            &[t, i],
        )?;
        rows.first().map(|r| record_from_row(&Row(r))).transpose()
    }

    /// Sets `last_used_at = now` unless it was set less than [`LAST_USED_GRANULARITY_SECS`] ago
    /// (one conditional statement, no transaction: a lost race only loses a timestamp).
    pub fn touch_api_key(&self, id: &str, now: i64) -> Result<(), StoreError> {
        self.with_schema(|| {
            self.conn.execute(
                "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 \
                 AND (last_used_at IS NULL OR last_used_at <= $3)",
                &[
                    SqlValue::Int(now),
                    SqlValue::Text(id.into()),
                    SqlValue::Int(now.saturating_sub(LAST_USED_GRANULARITY_SECS)),
                ],
            )?;
            Ok(())
        })
    }
}

fn record_from_row(r: &Row<'_>) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: r.text(0)?.to_owned(),
        tenant: TenantId::parse(r.text(1)?).map_err(|_| corrupt("api_keys.tenant"))?,
        label: r.text(2)?.to_owned(),
        roles: serde_json::from_str(r.text(3)?).map_err(|_| corrupt("api_keys.roles"))?,
        created_at: r.int(4)?,
        expires_at: optional_int(r, 5)?,
        revoked_at: optional_int(r, 6)?,
        last_used_at: optional_int(r, 7)?,
    })
}
