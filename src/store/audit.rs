//! The audit log (migration 9, docs/audit.md): per-tenant chains of sealed entries, appended
//! compare-and-set against the tenant's head row so that concurrent instances keep each chain's
//! sequence gapless and unique.

use std::cell::RefCell;

use super::sql::{Row, SqlError, SqlValue};
use super::{RequestTx, Store, StoreError, SCHEMA_VERSION};
use crate::audit;
use crate::ids::TenantId;

/// How many times an append is tried when a concurrent one won the race for the head.
const APPEND_ATTEMPTS: u32 = 16;

/// Largest page of rows read at once.
pub const MAX_AUDIT_PAGE: u64 = 1000;

impl Store<'_> {
    /// Appends one entry to the tenant's chain: `seal(sequence, prev)` seals it for its place
    /// (called again, with a fresh nonce, if a concurrent append won the head first). Returns the
    /// new sequence. The head row and the entry are written in one transaction: the request's
    /// own when it holds writes ([`Store::join_writes`]), which this commits with the entry, or
    /// the entry's alone. Ends the request's transaction either way: when the append fails,
    /// the request's writes are rolled back with it.
    pub fn append_audit(
        &self,
        tenant: &TenantId,
        seal: &mut dyn FnMut(u64, &[u8; 32]) -> Vec<u8>,
    ) -> Result<u64, StoreError> {
        if self.request.get() == RequestTx::Armed {
            // No write to join: the entry is a transaction of its own.
            self.request.set(RequestTx::Off);
        }
        let appended = self.append_in_transaction(tenant, seal);
        match appended {
            Ok(sequence) => {
                self.finish_writes()?;
                Ok(sequence)
            }
            Err(e) => {
                self.abandon_writes();
                Err(e)
            }
        }
    }

    fn append_in_transaction(
        &self,
        tenant: &TenantId,
        seal: &mut dyn FnMut(u64, &[u8; 32]) -> Vec<u8>,
    ) -> Result<u64, StoreError> {
        let t = SqlValue::Text(tenant.as_str().into());
        let seal = RefCell::new(seal);
        let mut last = StoreError::Conflict;
        for _ in 0..APPEND_ATTEMPTS {
            let r = self.with_schema(|| {
                self.transaction(|| {
                    // The head row made sure of, locked and read in one statement: a no-op
                    // update of an existing head locks it as `SELECT … FOR UPDATE` would (the
                    // write lock on SQLite), and returns it.
                    let rows = self.conn.query(
                        "INSERT INTO audit_heads (tenant, sequence, hash) VALUES ($1, 0, $2) \
                         ON CONFLICT (tenant) DO UPDATE SET sequence = audit_heads.sequence \
                         RETURNING sequence, hash",
                        &[t.clone(), SqlValue::Blob(audit::GENESIS.to_vec())],
                    )?;
                    let row = rows.first().ok_or_else(|| SqlError::Other("audit head missing".into()))?;
                    let r = Row(row);
                    let (seq, head) = (r.int(0)?, r.blob(1)?);
                    let prev: [u8; 32] = head
                        .try_into()
                        .map_err(|_| SqlError::Other("stored audit head does not decode".into()))?;
                    let next = seq + 1;
                    let sealed = (*seal.borrow_mut())(next as u64, &prev);
                    let hash = audit::hash(&sealed);
                    self.conn.execute(
                        "INSERT INTO audit_log (tenant, sequence, prev, sealed) VALUES ($1, $2, $3, $4)",
                        &[
                            t.clone(),
                            SqlValue::Int(next),
                            SqlValue::Blob(prev.to_vec()),
                            SqlValue::Blob(sealed),
                        ],
                    )?;
                    let moved = self.conn.execute(
                        "UPDATE audit_heads SET sequence = $2, hash = $3 WHERE tenant = $1 AND sequence = $4",
                        &[t.clone(), SqlValue::Int(next), SqlValue::Blob(hash.to_vec()), SqlValue::Int(seq)],
                    )?;
                    if moved != 1 {
                        return Err(SqlError::Constraint("audit head moved on".into()));
                    }
                    Ok(next as u64)
                })
            });
            match r {
                Err(StoreError::Conflict) => last = StoreError::Conflict,
                other => return other,
            }
        }
        Err(last)
    }

    /// Up to `limit` rows of the tenant's chain after sequence `after`, in order.
    pub fn audit_rows(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: u64,
    ) -> Result<Vec<audit::Row>, StoreError> {
        let rows = self.read(
            &format!(
                "SELECT sequence, prev, sealed, {SCHEMA_VERSION} FROM audit_log WHERE tenant = $1 \
                 AND sequence > $2 ORDER BY sequence LIMIT $3"
            ),
            &[
                SqlValue::Text(tenant.as_str().into()),
                SqlValue::Int(i64::try_from(after).unwrap_or(i64::MAX)),
                SqlValue::Int(i64::try_from(limit.min(MAX_AUDIT_PAGE)).unwrap_or(1)),
            ],
        )?;
        rows.iter()
            .map(|r| {
                let r = Row(r);
                Ok(audit::Row {
                    sequence: u64::try_from(r.int(0)?).map_err(|_| super::corrupt("audit_log.sequence"))?,
                    prev: r.blob(1)?.to_vec(),
                    sealed: r.blob(2)?.to_vec(),
                })
            })
            .collect()
    }

    /// The tenant's head: its last sequence (0 when it has no entry).
    pub fn audit_head(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let rows = self.read(
            &format!("SELECT sequence, {SCHEMA_VERSION} FROM audit_heads WHERE tenant = $1"),
            &[SqlValue::Text(tenant.as_str().into())],
        )?;
        match rows.first() {
            None => Ok(0),
            Some(r) => u64::try_from(Row(r).int(0)?).map_err(|_| super::corrupt("audit_heads.sequence")),
        }
    }
}
