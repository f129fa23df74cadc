//! Auditing operations (docs/audit.md): what an operation notes for its entry ([`Note`]), the
//! one call every door makes after an operation ([`record`]), and reading a tenant's log
//! ([`list_audit`], [`verify_audit`]).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{Ctx, OpError};
use crate::audit::{self, Actor, Entry, Outcome, TenantKey, Verdict, Verifier};
use crate::auth::Principal;
use crate::clock::rfc3339;
use crate::ids::KeyVersion;
use crate::policy;
use crate::scheme::{AuditMode, Scheme};
use crate::store::{StoreError, MAX_AUDIT_PAGE};

/// What an operation tells its audit entry while it runs: the schemes it read (with their
/// `audit` setting), the key versions it used or made, its item counts.
#[derive(Debug, Default)]
pub struct Note {
    schemes: Vec<(String, AuditMode)>,
    /// The schemes read that require a context on every Transit call (`context_required`).
    context_required: Vec<String>,
    key_versions: BTreeSet<u32>,
    items: Option<u64>,
    failed_items: Option<u64>,
}

impl Note {
    pub fn scheme(&mut self, s: &Scheme) {
        if !self.schemes.iter().any(|(n, _)| n == s.name.as_str()) {
            self.schemes.push((s.name.as_str().to_owned(), s.audit));
        }
        if s.context_required && !self.context_required(s.name.as_str()) {
            self.context_required.push(s.name.as_str().to_owned());
        }
    }
    /// Whether the operation read scheme `name` and found it `context_required`: how the Transit
    /// routes learn the flag from the operation's own scheme read, without a read of their own.
    pub fn context_required(&self, name: &str) -> bool {
        self.context_required.iter().any(|n| n == name)
    }
    /// A scheme named by the route (its settings unknown unless an operation reads it).
    pub fn scheme_name(&mut self, name: &str) {
        if !self.schemes.iter().any(|(n, _)| n == name) && crate::ids::SchemeName::parse(name).is_ok() {
            self.schemes.push((name.to_owned(), AuditMode::All));
        }
    }
    pub fn version(&mut self, v: KeyVersion) {
        self.key_versions.insert(v.get());
    }
    pub fn items(&mut self, total: usize, failed: usize) {
        self.items = Some(total as u64);
        self.failed_items = Some(failed as u64);
    }
    /// The most inclusive `audit` setting of the schemes read: a batch over several schemes is
    /// recorded if any of them asks for it. No scheme read (the request failed before): `all`.
    fn mode(&self) -> AuditMode {
        let modes = self.schemes.iter().map(|(_, m)| *m);
        if self.schemes.is_empty() || modes.clone().any(|m| m == AuditMode::All) {
            AuditMode::All
        } else if modes.clone().any(|m| m == AuditMode::Denied) {
            AuditMode::Denied
        } else {
            AuditMode::None
        }
    }
}

/// Whether an operation is administrative (always audited) or a data operation (audited as its
/// schemes' `audit` setting says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Admin,
    Data,
}

/// The audit entry's principal: `jwt` with the token's `sub`, or `api_key` with the key's id
/// (never its secret).
pub fn actor(who: &Principal) -> Actor {
    Actor { kind: who.kind.as_str().into(), id: who.subject.clone() }
}

/// Begins an audited request, before its operation runs: the tenant's audit key (without
/// `audit_master_key` no operation runs at all, `500 misconfigured`, so none goes unaudited),
/// and the request's write transaction armed, so that whatever the operation writes is
/// committed only with its entry by [`record`] (docs/audit.md, "One transaction").
pub fn begin(ctx: &Ctx<'_>, who: &Principal) -> Result<TenantKey, OpError> {
    let key = ctx.config.audit.tenant_key(&who.tenant)?;
    ctx.store.join_writes();
    Ok(key)
}

/// Appends the entry of one finished request (`status`, and `code` if it failed) to the tenant's
/// chain, unless the schemes' `audit` setting excludes it, in the same transaction as the
/// request's own writes (the doors arm it with [`crate::store::Store::join_writes`] before the
/// operation runs) and commits them together. An append that fails fails the request
/// (`store_unavailable` when the database did not answer, [`OpError::AuditUnavailable`]
/// otherwise) and rolls its writes back: its answer is not given.
pub fn record(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    key: &TenantKey,
    operation: &str,
    kind: Kind,
    status: u16,
    code: Option<&str>,
) -> Result<(), OpError> {
    let note = std::mem::take(&mut ctx.audit);
    let outcome = match status {
        200..=299 => Outcome::Ok,
        403 => Outcome::Denied,
        _ => Outcome::Failed,
    };
    if kind == Kind::Data {
        match note.mode() {
            AuditMode::All => {}
            AuditMode::Denied if outcome != Outcome::Ok => {}
            // No entry: the request's writes (a subject's first secret, a due rotation) are
            // committed on their own.
            AuditMode::Denied | AuditMode::None => return ctx.store.finish_writes().map_err(OpError::Store),
        }
    }
    let mut entry = Entry {
        sequence: 0,
        time: ctx.now,
        tenant: who.tenant.as_str().to_owned(),
        principal: actor(who),
        operation: operation.to_owned(),
        schemes: note.schemes.into_iter().map(|(n, _)| n).collect(),
        key_versions: note.key_versions.into_iter().collect(),
        items: note.items,
        failed_items: note.failed_items,
        outcome,
        status,
        code: code.map(str::to_owned),
    };
    let rng = &mut ctx.rng;
    let appended = ctx.store.append_audit(&who.tenant, &mut |sequence, prev| {
        entry.sequence = sequence;
        key.seal(rng, prev, &entry)
    });
    match appended {
        Ok(_) => Ok(()),
        Err(e) => {
            eprintln!(
                "veil: tenant {}: the audit entry of {operation} could not be written: {e}",
                who.tenant
            );
            // The database that did not answer is named as such (`store_unavailable`, as for any
            // other request it could not serve); any other failure of the append is the audit's.
            Err(match e {
                StoreError::Unavailable(_) | StoreError::SchemaTooNew { .. } => OpError::Store(e),
                _ => OpError::AuditUnavailable,
            })
        }
    }
}

/// May this principal read its tenant's audit log? Tenant role `admin` or `auditor`.
fn check_reader(who: &Principal) -> Result<(), OpError> {
    if policy::may_read_audit(who) {
        Ok(())
    } else {
        Err(OpError::forbidden("reading the audit log (tenant role \"admin\" or \"auditor\" needed)"))
    }
}

/// The filters of `GET /v1/audit`.
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub operation: Option<String>,
    pub limit: Option<u64>,
    pub cursor: Option<u64>,
}

/// Entries shown per page by default, and at most.
pub const DEFAULT_AUDIT_LIMIT: u64 = 100;
pub const MAX_AUDIT_LIMIT: u64 = 1000;
/// Rows read (and opened) by one list request at most, matching or not: a filter that matches
/// rarely answers with fewer entries and a `next_cursor` rather than scanning the whole log.
pub const MAX_AUDIT_SCAN: u64 = 5000;

/// The tenant's entries after `cursor`, oldest first, decrypted, filtered; `next_cursor` when more
/// rows may follow. A row that does not open is shown as `{"sequence", "broken": true}`.
pub fn list_audit(ctx: &Ctx<'_>, who: &Principal, key: &TenantKey, q: &AuditQuery) -> Result<Value, OpError> {
    check_reader(who)?;
    let limit = q.limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
    let mut after = q.cursor.unwrap_or(0);
    let mut scanned = 0u64;
    let mut out = Vec::new();
    let mut more = true;
    while out.len() < limit as usize && scanned < MAX_AUDIT_SCAN {
        let page = ctx.store.audit_rows(&who.tenant, after, MAX_AUDIT_PAGE.min(MAX_AUDIT_SCAN - scanned))?;
        if page.is_empty() {
            more = false;
            break;
        }
        for row in &page {
            scanned += 1;
            after = row.sequence;
            match key.open(&row.prev, &row.sealed) {
                None => out.push(json!({"sequence": row.sequence, "broken": true})),
                Some(e) => {
                    let keep = q.since.is_none_or(|s| e.time >= s)
                        && q.until.is_none_or(|u| e.time < u)
                        && q.operation.as_deref().is_none_or(|o| o == e.operation);
                    if keep {
                        out.push(entry_view(&e));
                    }
                }
            }
            if out.len() >= limit as usize {
                break;
            }
        }
    }
    let mut body = json!({ "entries": out });
    if more {
        body["next_cursor"] = json!(after.to_string());
    }
    Ok(body)
}

fn entry_view(e: &Entry) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    v["time"] = json!(rfc3339(e.time));
    v
}

/// Verifies the tenant's whole chain. `entries` and `head` (from an earlier answer): entry
/// `entries` must still hash to `head`; either alone: the chain must still have that many
/// entries, or still pass through that head.
pub fn verify_audit(
    ctx: &Ctx<'_>,
    who: &Principal,
    key: &TenantKey,
    entries: Option<u64>,
    head: Option<[u8; 32]>,
) -> Result<Value, OpError> {
    check_reader(who)?;
    let mut v = Verifier::new(key);
    match (entries, head) {
        (Some(n), Some(h)) => v.checkpoint(n, h),
        (Some(n), None) => v.at_least(n),
        (None, Some(h)) => v.reaches(h),
        (None, None) => {}
    }
    let head_sequence = ctx.store.audit_head(&who.tenant)?;
    let mut after = 0;
    loop {
        let page = ctx.store.audit_rows(&who.tenant, after, MAX_AUDIT_PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.sequence;
        if !page.iter().all(|r| v.feed(r)) {
            break;
        }
    }
    Ok(match v.finish(head_sequence) {
        Verdict::Ok { entries, head } => {
            json!({"ok": true, "entries": entries, "head": audit::to_hex(&head)})
        }
        Verdict::Broken { sequence, what, verified } => json!({
            "ok": false,
            "entries": verified,
            "broken": {"sequence": sequence, "what": what},
        }),
    })
}
