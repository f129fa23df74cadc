//! API keys (docs/auth.md § API keys): create (the key is shown once), list, revoke, and the
//! authentication of a presented key against its stored SHA-256, on every request (no cache).

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{Ctx, OpError};
use crate::auth::{
    self, api_key_secret_sha256, ApiKeyCredential, AuthError, Authenticator, Credential, JwksFetcher,
    Principal, PrincipalKind, API_KEY_PREFIX,
};
use crate::policy;
use crate::store::{ApiKeyRecord, StoreError, LAST_USED_GRANULARITY_SECS};

/// Longest label, in characters.
pub const MAX_LABEL_CHARS: usize = 128;
/// Most roles one key may carry.
pub const MAX_KEY_ROLES: usize = 64;
/// Longest role name (as in scheme policies).
const MAX_ROLE_LEN: usize = 64;

/// A key just created: its record and the key itself, `veil_<id>.<secret>`, which exists only
/// in this value (and the response made from it).
pub struct NewApiKey {
    pub record: ApiKeyRecord,
    pub key: Zeroizing<String>,
}

/// Who is calling: a JWT through the authenticator, or an API key checked against the store.
/// Both doors (HTTP, WIT) call this.
pub fn authenticate(
    ctx: &mut Ctx<'_>,
    auth: Result<&Authenticator, OpError>,
    authorization: Option<&str>,
    x_api_key: Option<&str>,
    fetcher: &dyn JwksFetcher,
) -> Result<Principal, OpError> {
    match auth::presented(authorization, x_api_key)? {
        Credential::Jwt(token) => Ok(auth?.authenticate_jwt(token, fetcher)?),
        Credential::ApiKey(key) => api_key_principal(ctx, &key),
    }
}

/// The principal of an API key: found by id, its secret's SHA-256 compared in constant time
/// with the stored one, refused when revoked or expired. Every refusal reads the same, so the
/// answer tells nothing about which check failed.
fn api_key_principal(ctx: &mut Ctx<'_>, key: &ApiKeyCredential) -> Result<Principal, OpError> {
    let refused = || OpError::Auth(AuthError::Invalid("invalid api key"));
    let presented = key.secret_sha256();
    let Some(stored) = ctx.store.api_key_for_auth(&key.id)? else {
        // Compare anyway, so an unknown id costs what a known one does.
        let _ = presented.ct_eq(&[0u8; 32]);
        return Err(refused());
    };
    let matches: bool = presented.ct_eq(&stored.secret_sha256).into();
    let r = stored.record;
    if !matches || r.revoked_at.is_some() || r.expires_at.is_some_and(|at| at <= ctx.now) {
        return Err(refused());
    }
    if r.last_used_at.is_none_or(|at| at <= ctx.now.saturating_sub(LAST_USED_GRANULARITY_SECS)) {
        // Coarse by design: a failed write loses a timestamp, never the request.
        if let Err(e) = ctx.store.touch_api_key(&r.id, ctx.now) {
            eprintln!("veil: api key last_used_at not updated: {e}");
        }
    }
    Ok(Principal { tenant: r.tenant, roles: r.roles, subject: r.id, kind: PrincipalKind::ApiKey })
}

/// Creates a key for the caller's tenant (tenant role `admin`), with roles the caller holds
/// itself: asking for any other is `403 forbidden`.
pub fn create_api_key(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    label: &str,
    roles: BTreeSet<String>,
    expires_at: Option<i64>,
) -> Result<NewApiKey, OpError> {
    if !policy::may_create_schemes(who) {
        return Err(OpError::forbidden("managing API keys (tenant role \"admin\" needed)"));
    }
    let label_chars = label.chars().count();
    if label_chars == 0 || label_chars > MAX_LABEL_CHARS {
        return Err(OpError::invalid_field(format!("label: 1-{MAX_LABEL_CHARS} characters")));
    }
    if roles.is_empty() || roles.len() > MAX_KEY_ROLES {
        return Err(OpError::invalid_field(format!("roles: 1-{MAX_KEY_ROLES} roles")));
    }
    if !roles
        .iter()
        .all(|r| !r.is_empty() && r.len() <= MAX_ROLE_LEN && r.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(OpError::invalid_field(
            "roles: a role is 1-64 printable ASCII characters without spaces",
        ));
    }
    if !roles.is_subset(&who.roles) {
        return Err(OpError::forbidden("granting an API key roles you do not hold yourself"));
    }
    if expires_at.is_some_and(|at| at <= ctx.now) {
        return Err(OpError::invalid_field("expires_at must be in the future"));
    }
    let mut id_bytes = [0u8; 16];
    ctx.rng.fill(&mut id_bytes);
    let id: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut secret_bytes = Zeroizing::new([0u8; 32]);
    ctx.rng.fill(&mut secret_bytes[..]);
    let secret = Zeroizing::new(URL_SAFE_NO_PAD.encode(&secret_bytes[..]));
    drop(secret_bytes);
    let record = ApiKeyRecord {
        id: id.clone(),
        tenant: who.tenant.clone(),
        label: label.to_owned(),
        roles,
        created_at: ctx.now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    match ctx.store.create_api_key(&record, &api_key_secret_sha256(&secret)) {
        Ok(()) => {}
        Err(StoreError::Exists) => return Err(OpError::Conflict),
        Err(e) => return Err(e.into()),
    }
    let key = Zeroizing::new(format!("{API_KEY_PREFIX}{id}.{}", secret.as_str()));
    Ok(NewApiKey { record, key })
}

/// The tenant's keys (tenant role `admin`): never a secret or its hash.
pub fn list_api_keys(ctx: &Ctx<'_>, who: &Principal) -> Result<Vec<ApiKeyRecord>, OpError> {
    if !policy::may_create_schemes(who) {
        return Err(OpError::forbidden("managing API keys (tenant role \"admin\" needed)"));
    }
    Ok(ctx.store.list_api_keys(&who.tenant)?)
}

/// Revokes one of the tenant's keys (tenant role `admin`); the next request with it is refused.
/// Revoking a revoked key again is not an error and keeps its first `revoked_at`.
pub fn revoke_api_key(ctx: &Ctx<'_>, who: &Principal, id: &str) -> Result<ApiKeyRecord, OpError> {
    if !policy::may_create_schemes(who) {
        return Err(OpError::forbidden("managing API keys (tenant role \"admin\" needed)"));
    }
    let well_formed =
        id.len() == auth::API_KEY_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !well_formed {
        return Err(OpError::ApiKeyNotFound);
    }
    ctx.store.revoke_api_key(&who.tenant, id, ctx.now)?.ok_or(OpError::ApiKeyNotFound)
}
