//! The Vault/OpenBao Transit-compatible routes under `transit_mount` (docs/transit.md): the same
//! paths, bodies, envelope (`data`, `wrap_info`, `warnings`, ...) and `{"errors": [...]}` bodies as
//! Transit, over Veil's own operations. A Transit key is a scheme of the caller's tenant; its
//! ciphertexts are Veil tokens spelled `vault:v<N>:<base64>` ([`crate::crypto::transit`]).
//!
//! Statuses come from the one table in [`super::error`]; [`error_response`] renders them as
//! Transit does ([`super::error::transit_status`]).

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::Digest;
use zeroize::Zeroizing;

use super::error::{transit_status, ApiError};
use super::{ApiRequest, ApiResponse};
use crate::auth::Principal;
use crate::config::Config;
use crate::crypto::aead::Algorithm;
use crate::crypto::transit as format;
use crate::ids::{KeyVersion, SchemeName};
use crate::ops::{self, Ctx, ItemError, NewScheme, OpError, Spelling, VerifyItem};
use crate::scheme::{mask::MaskRule, AuditMode, RotationPeriod, Scheme};
use crate::store::{KeyState, KeyVersionRecord, SchemeChange};

/// A Transit route: the path after the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op<'p> {
    /// `LIST keys`, `GET keys?list=true`
    ListKeys,
    /// `GET` (read), `POST` (create), `DELETE` (refused) `keys/{name}`
    Key(&'p str),
    RotateKey(&'p str),
    ConfigKey(&'p str),
    /// `keys/{name}/trim`: destroys the versions below `min_available_version`.
    TrimKey(&'p str),
    Encrypt(&'p str),
    Decrypt(&'p str),
    Rewrap(&'p str),
    /// `datakey/{plaintext|wrapped}/{name}`: whether the plaintext key is returned.
    DataKey(bool, &'p str),
    /// `hmac/{name}[/{algorithm}]`
    Hmac(&'p str, Option<&'p str>),
    /// `verify/{name}[/{algorithm}]`
    Verify(&'p str, Option<&'p str>),
    /// `random[/{source}][/{bytes}]`
    Random(Option<&'p str>, Option<&'p str>),
    /// `hash[/{algorithm}]`
    Hash(Option<&'p str>),
}

/// Transit accepts `PUT` wherever it accepts `POST`.
const WRITE: &str = "POST, PUT";

/// The Transit route of `path`, if it is under the mount, with its allowed methods.
pub(super) fn route<'p>(config: &Config, path: &'p str) -> Result<Option<(Op<'p>, &'static str)>, ApiError> {
    let settings = config.transit.get().map_err(|e| ApiError::from(OpError::from(e)))?;
    let Some(rest) = settings.mount.as_deref().and_then(|m| path.strip_prefix(m)) else {
        return Ok(None);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let name = |n: &'p str| (!n.is_empty()).then_some(n);
    let r = match parts[..] {
        ["keys"] | ["keys", ""] => (Op::ListKeys, "GET, LIST"),
        ["keys", n] => (Op::Key(name(n).ok_or(not_found())?), "GET, POST, PUT, DELETE"),
        ["keys", n, "rotate"] => (Op::RotateKey(name(n).ok_or(not_found())?), WRITE),
        ["keys", n, "config"] => (Op::ConfigKey(name(n).ok_or(not_found())?), WRITE),
        ["keys", n, "trim"] => (Op::TrimKey(name(n).ok_or(not_found())?), WRITE),
        ["encrypt", n] => (Op::Encrypt(name(n).ok_or(not_found())?), WRITE),
        ["decrypt", n] => (Op::Decrypt(name(n).ok_or(not_found())?), WRITE),
        ["rewrap", n] => (Op::Rewrap(name(n).ok_or(not_found())?), WRITE),
        ["datakey", kind, n] => {
            let plaintext = match kind {
                "plaintext" => true,
                "wrapped" => false,
                _ => {
                    return Err(ApiError::new(
                        400,
                        "invalid_request",
                        "the datakey type is plaintext or wrapped",
                    ))
                }
            };
            (Op::DataKey(plaintext, name(n).ok_or(not_found())?), WRITE)
        }
        ["hmac", n] => (Op::Hmac(name(n).ok_or(not_found())?, None), WRITE),
        ["hmac", n, alg] => (Op::Hmac(name(n).ok_or(not_found())?, Some(alg)), WRITE),
        ["verify", n] => (Op::Verify(name(n).ok_or(not_found())?, None), WRITE),
        ["verify", n, alg] => (Op::Verify(name(n).ok_or(not_found())?, Some(alg)), WRITE),
        ["random"] => (Op::Random(None, None), WRITE),
        ["random", a] if a.bytes().all(|b| b.is_ascii_digit()) => (Op::Random(None, Some(a)), WRITE),
        ["random", a] => (Op::Random(Some(a), None), WRITE),
        ["random", a, b] => (Op::Random(Some(a), Some(b)), WRITE),
        ["hash"] => (Op::Hash(None), WRITE),
        ["hash", alg] => (Op::Hash(Some(alg)), WRITE),
        _ => return Err(not_found()),
    };
    Ok(Some(r))
}

/// The `Allow` header of a Transit route: the methods the OpenAPI document lists, without
/// Transit's aliases `PUT` (for `POST`) and `LIST` (for `GET ?list=true`), which are accepted too.
pub(super) fn documented_methods(allow: &str) -> String {
    allow.split(", ").filter(|m| !matches!(*m, "PUT" | "LIST")).collect::<Vec<_>>().join(", ")
}

/// True when `path` lies under the Transit mount (false when the mount is off or unreadable).
pub(super) fn under_mount(config: &Config, path: &str) -> bool {
    config.transit.get().is_ok_and(|s| s.mount.as_deref().is_some_and(|m| path.starts_with(m)))
}

fn not_found() -> ApiError {
    ApiError::new(
        404,
        "not_found",
        "unsupported path; see docs/transit.md for the Transit routes Veil serves",
    )
}

impl<'p> Op<'p> {
    /// The operation name of the audit entry (docs/audit.md) and whether it is a data operation.
    pub(super) fn audit_operation(&self, method: &str) -> (&'static str, ops::audit::Kind) {
        use ops::audit::Kind::{Admin, Data};
        match self {
            Op::ListKeys => ("transit.keys.list", Admin),
            Op::Key(_) if method == "GET" => ("transit.key.read", Admin),
            Op::Key(_) if method == "DELETE" => ("transit.key.delete", Admin),
            Op::Key(_) => ("transit.key.create", Admin),
            Op::RotateKey(_) => ("transit.key.rotate", Admin),
            Op::ConfigKey(_) => ("transit.key.config", Admin),
            Op::TrimKey(_) => ("transit.key.trim", Admin),
            Op::Encrypt(_) => ("transit.encrypt", Data),
            Op::Decrypt(_) => ("transit.decrypt", Data),
            Op::Rewrap(_) => ("transit.rewrap", Data),
            Op::DataKey(..) => ("transit.datakey", Data),
            Op::Hmac(..) => ("transit.hmac", Data),
            Op::Verify(..) => ("transit.verify", Data),
            Op::Random(..) => ("transit.random", Admin),
            Op::Hash(_) => ("transit.hash", Admin),
        }
    }

    /// The key (scheme) the path names, if any.
    pub(super) fn scheme(&self) -> Option<&'p str> {
        match *self {
            Op::Key(n)
            | Op::RotateKey(n)
            | Op::ConfigKey(n)
            | Op::TrimKey(n)
            | Op::Encrypt(n)
            | Op::Decrypt(n)
            | Op::Rewrap(n)
            | Op::DataKey(_, n)
            | Op::Hmac(n, _)
            | Op::Verify(n, _) => Some(n),
            Op::ListKeys | Op::Random(..) | Op::Hash(_) => None,
        }
    }
}

/// Refuses what Veil cannot honour before anything runs: a namespace (Veil has tenants, named by
/// the credential, not namespaces) and response wrapping.
pub(super) fn check_headers(req: &ApiRequest<'_>) -> Result<(), ApiError> {
    if req.header("x-vault-namespace").is_some_and(|v| !v.trim().is_empty()) {
        return Err(ApiError::new(
            400,
            "namespace_not_supported",
            "Veil has no namespaces: the credential names the tenant; send no X-Vault-Namespace",
        ));
    }
    if req.header("x-vault-wrap-ttl").is_some_and(|v| !v.trim().is_empty()) {
        return Err(ApiError::new(
            400,
            "response_wrapping_not_supported",
            "Veil does not wrap responses; send no X-Vault-Wrap-TTL",
        ));
    }
    Ok(())
}

/// The credential: `X-Vault-Token` read as a bearer token (a Veil API key or JWT), or
/// `Authorization` as everywhere in Veil (`None`: use that). Both at once are refused, as two
/// credentials are everywhere in Veil: which one decides would be a guess.
pub(super) fn authorization(req: &ApiRequest<'_>) -> Result<Option<String>, ApiError> {
    let Some(token) = req.header("x-vault-token") else {
        return Ok(None);
    };
    if req.authorization.is_some() || req.api_key.is_some() {
        return Err(crate::auth::AuthError::Invalid(
            "send one credential: X-Vault-Token or Authorization, not both",
        )
        .into());
    }
    Ok(Some(format!("Bearer {}", token.trim())))
}

/// A failure as Transit renders it: `{"errors": [message]}` (`{"errors": []}` for a missing
/// key or path, as Transit answers a read of either) with the status Transit uses.
pub(super) fn error_response(e: &ApiError) -> ApiResponse {
    let status = transit_status(e);
    let body = if status == 404 { json!({"errors": []}) } else { json!({"errors": [e.message]}) };
    ApiResponse { status, headers: Vec::new(), body: body.to_string().into_bytes() }
}

/// Transit's response envelope around `data`.
fn envelope<T: Serialize>(ctx: &mut Ctx<'_>, status: u16, data: &T, warnings: &[String]) -> ApiResponse {
    let mut id = [0u8; 16];
    ctx.rng.fill(&mut id);
    // an RFC 9562 version-4 layout, as Vault's request ids are
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    let h = to_hex(&id);
    let request_id = format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
    ApiResponse::json(
        status,
        &Envelope {
            request_id,
            lease_id: "",
            renewable: false,
            lease_duration: 0,
            data,
            wrap_info: None,
            warnings: (!warnings.is_empty()).then_some(warnings),
            auth: None,
        },
    )
}

/// Transit's envelope, serialised directly (no intermediate JSON tree: batches are the hot path).
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    request_id: String,
    lease_id: &'static str,
    renewable: bool,
    lease_duration: u32,
    data: &'a T,
    wrap_info: Option<()>,
    warnings: Option<&'a [String]>,
    auth: Option<()>,
}

/// Answers one Transit request (authenticated; its audit entry is written by `dispatch`).
pub(super) fn call(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    req: &ApiRequest<'_>,
    op: Op<'_>,
) -> Result<ApiResponse, ApiError> {
    let list = req.method == "LIST" || (req.method == "GET" && query_flag(req.query, "list"));
    match op {
        Op::ListKeys if list => list_keys(ctx, who),
        // Transit answers a plain GET of the key list as an unsupported path.
        Op::ListKeys => Err(not_found()),
        Op::Key(name) if req.method == "GET" => read_key(ctx, who, name, Vec::new()),
        Op::Key(_) if req.method == "DELETE" => Err(ApiError::new(
            400,
            "deletion_not_allowed",
            "deletion is not allowed for this key: Veil erases a key (crypto-shredding, with a \
             certificate) through POST /v1/schemes/{name}/erase",
        )),
        Op::Key(name) => create_key(ctx, who, name, req.body),
        Op::RotateKey(name) => {
            let _ = body_map(req.body)?;
            ops::rotate(ctx, who, name)?;
            read_key(ctx, who, name, Vec::new())
        }
        Op::ConfigKey(name) => config_key(ctx, who, name, req.body),
        Op::TrimKey(name) => trim_key(ctx, who, name, req.body),
        Op::Encrypt(name) => encrypt(ctx, who, name, req.body),
        Op::Decrypt(name) => decrypt(ctx, who, name, req.body),
        Op::Rewrap(name) => rewrap(ctx, who, name, req.body),
        Op::DataKey(plaintext, name) => datakey(ctx, who, name, plaintext, req.body),
        Op::Hmac(name, alg) => hmac(ctx, who, name, alg, req.body),
        Op::Verify(name, alg) => verify(ctx, who, name, alg, req.body),
        Op::Random(source, bytes) => random(ctx, source, bytes, req.body),
        Op::Hash(alg) => hash(ctx, alg, req.body),
    }
}

fn query_flag(query: &str, name: &str) -> bool {
    query.split('&').any(|kv| match kv.split_once('=') {
        Some((k, v)) => k == name && v == "true",
        None => false,
    })
}

// ---------------------------------------------------------------------------------------------
// Bodies: Transit's clients send numbers and booleans as JSON values or as strings (the CLI's
// `key=value` arguments), and Transit ignores fields it does not know (with a warning); so a
// body is read as a JSON object and each field taken from it by name.

/// A request body as a JSON object (an empty body, or `null`, is `{}`).
pub(super) fn body_map(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        // `bao write -f` sends `null` for "no data"
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(ApiError::new(400, "invalid_request", "the request body must be a JSON object")),
        Err(e) => Err(ApiError::new(
            400,
            "invalid_json",
            format!("the body is not valid JSON: {}", super::json_where(&e)),
        )),
    }
}

fn bad(field: &str, what: &str) -> ApiError {
    ApiError::new(400, "invalid_request", format!("`{field}` must be {what}"))
}

/// A string field (`null` is absent).
fn str_field<'m>(m: &'m Map<String, Value>, field: &str) -> Result<Option<&'m str>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(field, "a string")),
    }
}

/// A whole number from 0 to `max`, as a JSON number or a string of digits (`null`/`""` is absent).
fn uint_field(m: &Map<String, Value>, field: &str, max: u64) -> Result<Option<u64>, ApiError> {
    let n = match m.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        Some(_) => None,
    };
    // the message is written only when it is needed (this runs for every item of a batch)
    n.filter(|n| *n <= max).map(Some).ok_or_else(|| bad(field, &format!("a whole number from 0 to {max}")))
}

/// A boolean, as JSON or as the string `true`/`false` (`null` is absent).
fn bool_field(m: &Map<String, Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(_) => Err(bad(field, "true or false")),
    }
}

/// The warning Transit gives for fields it ignores; the names are not repeated (they are the
/// client's), only their number.
fn ignored(m: &Map<String, Value>, known: &[&str]) -> Vec<String> {
    let n = m.keys().filter(|k| !known.contains(&k.as_str())).count();
    if n == 0 {
        Vec::new()
    } else {
        vec![format!("Endpoint ignored {n} unrecognized parameter(s)")]
    }
}

/// `key_version`: absent or 0 is the latest.
fn key_version(m: &Map<String, Value>) -> Result<Option<KeyVersion>, ApiError> {
    Ok(uint_field(m, "key_version", u64::from(u32::MAX))?.and_then(|v| KeyVersion::new(v as u32).ok()))
}

/// A Transit `context` (base64) as Veil's context string: the standard base64 of its bytes.
fn context_of(m: &Map<String, Value>) -> Result<Option<String>, ItemError> {
    match m.get("context") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            format::decode_b64(s).map(|b| Some(format::canonical_b64(&b))).ok_or(ItemError::INVALID_ENCODING)
        }
        Some(_) => Err(ItemError::INVALID_ENCODING),
    }
}

fn b64_of(m: &Map<String, Value>, field: &str) -> Result<Vec<u8>, ItemError> {
    match m.get(field) {
        Some(Value::String(s)) => format::decode_b64(s).ok_or(ItemError::INVALID_ENCODING),
        None | Some(Value::Null) => Err(ItemError::MISSING_FIELD),
        Some(_) => Err(ItemError::INVALID_ENCODING),
    }
}

/// The items of a request: its `batch_input` (each item an object), or the body itself.
/// `batch` says which, because the answers differ (`batch_results` or the fields themselves).
pub(super) struct Items {
    pub(super) batch: bool,
    pub(super) items: Vec<Map<String, Value>>,
    pub(super) warnings: Vec<String>,
    /// `partial_failure_response_code`: the status of a batch in which some items failed.
    pub(super) partial_status: Option<u16>,
}

/// Reads a data route's body: its whole parsing, before any operation. `known` are the fields of
/// one item; `single` is the field a non-batch body must have (`plaintext`, ...).
pub(super) fn parse_items(body: &[u8], known: &[&str], single: &str) -> Result<Items, ApiError> {
    let mut m = body_map(body)?;
    let mut all: Vec<&str> = known.to_vec();
    all.extend([
        "batch_input",
        "partial_failure_response_code",
        "type",
        "convergent_encryption",
        "algorithm",
    ]);
    let warnings = ignored(&m, &all);
    if m.get("nonce").is_some_and(|n| !n.is_null() && n.as_str() != Some("")) {
        return Err(ApiError::new(
            400,
            "invalid_request",
            "`nonce` is not supported: Veil draws every nonce itself (no convergent encryption)",
        ));
    }
    let partial_status = uint_field(&m, "partial_failure_response_code", 599)?
        .map(|c| c as u16)
        .filter(|c| (200..=599).contains(c));
    let batch = match m.remove("batch_input") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(items),
        Some(_) => return Err(bad("batch_input", "an array of objects")),
    };
    let items = match batch {
        Some(items) => {
            if items.is_empty() {
                return Err(ApiError::new(400, "invalid_request", "missing batch input to process"));
            }
            let items = items
                .into_iter()
                .map(|i| match i {
                    Value::Object(o) => {
                        if o.get("nonce").is_some_and(|n| !n.is_null() && n.as_str() != Some("")) {
                            return Err(bad("batch_input[].nonce", "absent (Veil draws every nonce itself)"));
                        }
                        Ok(o)
                    }
                    _ => Err(bad("batch_input", "an array of objects")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Items { batch: true, items, warnings, partial_status });
        }
        None => vec![m],
    };
    if items[0].get(single).is_none_or(Value::is_null) {
        return Err(ApiError::new(400, "invalid_request", format!("missing `{single}` (or `batch_input`)")));
    }
    Ok(Items { batch: false, items, warnings, partial_status })
}

/// The answer of a data route: a single item's fields (or its error as a 400), or every item's
/// result in `batch_results` with `status`: 200 when every item succeeded (or `always_ok`, as
/// Transit answers rewrap, hmac and verify batches), else 400, or `partial_failure_response_code`
/// when some succeeded.
fn answer(
    ctx: &mut Ctx<'_>,
    items: &Items,
    results: Vec<Result<Out, String>>,
    empty_plaintext_on_error: bool,
    always_ok: bool,
) -> Result<ApiResponse, ApiError> {
    let failed = results.iter().filter(|r| r.is_err()).count();
    ctx.audit.items(results.len(), failed);
    if !items.batch {
        return match results.into_iter().next() {
            Some(Ok(data)) => Ok(envelope(ctx, 200, &data, &items.warnings)),
            Some(Err(message)) => Err(ApiError::new(400, "item_failed", message)),
            None => Err(ApiError::internal()),
        };
    }
    let n = results.len();
    let batch_results: Vec<BatchItem<'_>> = results
        .into_iter()
        .zip(&items.items)
        .map(|(r, item)| {
            let reference = match item.get("reference") {
                Some(Value::String(s)) => s.as_str(),
                _ => "",
            };
            match r {
                Ok(out) => BatchItem { out: Some(out), plaintext: None, error: None, reference },
                Err(message) => BatchItem {
                    out: None,
                    plaintext: empty_plaintext_on_error.then_some(""),
                    error: Some(message),
                    reference,
                },
            }
        })
        .collect();
    let status = match (failed, always_ok) {
        (0, _) | (_, true) => 200,
        (f, _) if f == n => 400,
        _ => items.partial_status.unwrap_or(400),
    };
    Ok(envelope(ctx, status, &Batch { batch_results }, &items.warnings))
}

/// What one item of a data route answers.
#[derive(Serialize)]
#[serde(untagged)]
enum Out {
    Cipher { ciphertext: String, key_version: u32 },
    Plain { plaintext: String },
    Hmac { hmac: String },
    Valid { valid: bool },
}

/// One entry of `batch_results`: the item's answer or its `error` (decrypt also sends an empty
/// `plaintext` then, as Transit does), and its `reference` echoed.
#[derive(Serialize)]
struct BatchItem<'a> {
    #[serde(flatten)]
    out: Option<Out>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    reference: &'a str,
}

#[derive(Serialize)]
struct Batch<'a> {
    batch_results: Vec<BatchItem<'a>>,
}

/// An item's failure as Transit shows it: the message only.
fn item_message(e: &ItemError) -> String {
    e.message.to_owned()
}

/// Runs `run` once per distinct context of `items`' entries (Veil binds one context per call),
/// putting each result back at its item's place.
fn by_context<T, F>(
    ctx: &mut Ctx<'_>,
    n: usize,
    contexts: &[Result<Option<String>, ItemError>],
    mut run: F,
) -> Result<Vec<Result<T, ItemError>>, ApiError>
where
    F: FnMut(&mut Ctx<'_>, &[usize], Option<&str>) -> Result<Vec<Result<T, ItemError>>, OpError>,
{
    // One context for every item (the usual case, and always the case without any): one run, in
    // order, with no grouping.
    if let Some(Ok(first)) = contexts.first() {
        if contexts.iter().all(|c| matches!(c, Ok(c) if c == first)) {
            let members: Vec<usize> = (0..n).collect();
            let results = run(ctx, &members, first.as_deref()).map_err(not_found_is_400)?;
            return Ok(results);
        }
    }
    let mut groups: Vec<(Option<String>, Vec<usize>)> = Vec::new();
    let mut index: HashMap<Option<String>, usize> = HashMap::new();
    let mut out: Vec<Option<Result<T, ItemError>>> = (0..n).map(|_| None).collect();
    for (i, c) in contexts.iter().enumerate() {
        match c {
            Err(e) => out[i] = Some(Err(e.clone())),
            Ok(c) => {
                let g = *index.entry(c.clone()).or_insert_with(|| {
                    groups.push((c.clone(), Vec::new()));
                    groups.len() - 1
                });
                groups[g].1.push(i);
            }
        }
    }
    for (c, members) in &groups {
        let results = run(ctx, members, c.as_deref()).map_err(not_found_is_400)?;
        for (i, r) in members.iter().zip(results) {
            out[*i] = Some(r);
        }
    }
    Ok(out.into_iter().map(|r| r.unwrap_or(Err(ItemError::DECRYPTION_FAILED))).collect())
}

/// Whether no item of the request carries a context. Transit refuses a batch in which some do and
/// some do not (an empty context counts as none).
fn no_context(items: &Items) -> Result<bool, ApiError> {
    let set = |m: &Map<String, Value>| match m.get("context") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    let with = items.items.iter().filter(|m| set(m)).count();
    if with != 0 && with != items.items.len() {
        return Err(ApiError::new(
            400,
            "invalid_request",
            "context should be set either in all the request blocks or in none",
        ));
    }
    Ok(with == 0)
}

/// On a key that requires a context (`derived`), a call without one fails item by item with
/// Transit's message, except the items that already failed on their own input (`failed(i)`),
/// which Transit reports first. The flag comes from the operation's own read of the key (noted
/// for its audit entry), so a call with no context costs no extra read; the refused items' work is
/// thrown away (their ciphertexts or plaintexts never leave).
fn require_context<T>(
    ctx: &Ctx<'_>,
    name: &str,
    no_context: bool,
    results: &mut [Result<T, ItemError>],
    failed: impl Fn(usize) -> bool,
) {
    if !no_context || !ctx.audit.context_required(name) {
        return;
    }
    for (i, r) in results.iter_mut().enumerate() {
        if !failed(i) {
            *r = Err(ItemError::CONTEXT_REQUIRED);
        }
    }
}

/// On the data routes Transit answers a missing key with 400 `encryption key not found`.
fn not_found_is_400(e: OpError) -> ApiError {
    match e {
        OpError::SchemeNotFound(_) => ApiError::new(400, "scheme_not_found", "encryption key not found"),
        e => ApiError::from(e),
    }
}

/// The latest version, when an item asks for a specific one (Veil encrypts with the latest only).
fn check_versions(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    items: &[Map<String, Value>],
) -> Result<Vec<Result<(), ItemError>>, ApiError> {
    let wanted: Vec<Option<KeyVersion>> = items.iter().map(key_version).collect::<Result<_, _>>()?;
    if wanted.iter().all(Option::is_none) {
        return Ok(wanted.iter().map(|_| Ok(())).collect());
    }
    let current = ops::get_scheme(ctx, who, name).map_err(not_found_is_400)?.current_version;
    Ok(wanted
        .iter()
        .map(|w| match w {
            Some(v) if *v != current => Err(ItemError::KEY_VERSION_UNSUPPORTED),
            _ => Ok(()),
        })
        .collect())
}

pub(super) const ENCRYPT_FIELDS: &[&str] = &["plaintext", "context", "key_version", "nonce", "reference"];

/// Transit creates a missing key on encrypt when the token may create it (an upsert); Veil does
/// not (docs/transit.md). A caller who may not create keys gets what Transit gives a token without
/// `create` rights on the path, 403; one who may still gets `400 encryption key not found`.
fn encrypt(ctx: &mut Ctx<'_>, who: &Principal, name: &str, body: &[u8]) -> Result<ApiResponse, ApiError> {
    encrypt_items(ctx, who, name, body).map_err(|e| {
        if e.code == "scheme_not_found" && !crate::policy::may_create_schemes(who) {
            OpError::forbidden("creating keys: Transit creates a missing key on encrypt; Veil never does")
                .into()
        } else {
            e
        }
    })
}

fn encrypt_items(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    body: &[u8],
) -> Result<ApiResponse, ApiError> {
    let items = parse_items(body, ENCRYPT_FIELDS, "plaintext")?;
    let none = no_context(&items)?;
    let versions = check_versions(ctx, who, name, &items.items)?;
    let plaintexts: Vec<Result<Vec<u8>, ItemError>> = items
        .items
        .iter()
        .zip(&versions)
        .map(|(m, v)| v.clone().and_then(|()| b64_of(m, "plaintext")))
        .collect();
    let contexts: Vec<Result<Option<String>, ItemError>> = items.items.iter().map(context_of).collect();
    let results = by_context(ctx, items.items.len(), &contexts, |ctx, members, c| {
        // one context for the whole batch (the usual case): no copy of the plaintexts
        let spelled = |ctx: &mut Ctx<'_>, values: &[Result<Vec<u8>, ItemError>]| {
            let (v, cts) = ops::protect_spelled(ctx, who, name, values, None, c, Spelling::Transit)?;
            Ok(cts.into_iter().map(|r| r.map(|ct| (ct, v))).collect())
        };
        if members.len() == plaintexts.len() {
            return spelled(ctx, &plaintexts);
        }
        let values: Vec<Result<Vec<u8>, ItemError>> =
            members.iter().map(|i| plaintexts[*i].clone()).collect();
        spelled(ctx, &values)
    })?;
    let mut results = results;
    require_context(ctx, name, none, &mut results, |i| plaintexts[i].is_err());
    let results = results
        .into_iter()
        .map(|r| match r {
            Ok((ciphertext, v)) => Ok(Out::Cipher { ciphertext, key_version: v.get() }),
            Err(e) => Err(item_message(&e)),
        })
        .collect();
    answer(ctx, &items, results, false, false)
}

/// The Veil token of each item's `ciphertext` field under key `name`.
fn tokens_of(name: &str, items: &[Map<String, Value>]) -> Result<Vec<Result<String, ItemError>>, ApiError> {
    let scheme = SchemeName::parse(name)
        .map_err(|e| ApiError::from(OpError::invalid_field(format!("key name: {e}"))))?;
    Ok(items
        .iter()
        .map(|m| match m.get("ciphertext") {
            Some(Value::String(s)) => format::to_token(&scheme, s).map_err(|_| ItemError::INVALID_CIPHERTEXT),
            None | Some(Value::Null) => Err(ItemError::MISSING_FIELD),
            Some(_) => Err(ItemError::INVALID_CIPHERTEXT),
        })
        .collect())
}

/// Runs an operation over the tokens of one context group, leaving unparsable items as they are.
fn on_tokens<T>(
    tokens: &[Result<String, ItemError>],
    members: &[usize],
    mut op: impl FnMut(&[&str]) -> Result<Vec<Result<T, ItemError>>, OpError>,
) -> Result<Vec<Result<T, ItemError>>, OpError> {
    let good: Vec<&str> = members.iter().filter_map(|i| tokens[*i].as_deref().ok()).collect();
    let mut done = if good.is_empty() { Vec::new() } else { op(&good)? }.into_iter();
    Ok(members
        .iter()
        .map(|i| match &tokens[*i] {
            Err(e) => Err(e.clone()),
            Ok(_) => done.next().unwrap_or(Err(ItemError::DECRYPTION_FAILED)),
        })
        .collect())
}

pub(super) const DECRYPT_FIELDS: &[&str] = &["ciphertext", "context", "nonce", "reference"];

fn decrypt(ctx: &mut Ctx<'_>, who: &Principal, name: &str, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let items = parse_items(body, DECRYPT_FIELDS, "ciphertext")?;
    let none = no_context(&items)?;
    let tokens = tokens_of(name, &items.items)?;
    let contexts: Vec<Result<Option<String>, ItemError>> = items.items.iter().map(context_of).collect();
    let mut results = by_context(ctx, items.items.len(), &contexts, |ctx, members, c| {
        on_tokens(&tokens, members, |good| ops::unprotect_in(ctx, who, Some(name), good, None, c))
    })?;
    require_context(ctx, name, none, &mut results, |i| tokens[i].is_err());
    let results = results
        .into_iter()
        .map(|r| match r {
            Ok(pt) => Ok(Out::Plain { plaintext: STANDARD.encode(&pt[..]) }),
            Err(e) => Err(item_message(&e)),
        })
        .collect();
    answer(ctx, &items, results, true, false)
}

pub(super) const REWRAP_FIELDS: &[&str] = &["ciphertext", "context", "key_version", "nonce", "reference"];

fn rewrap(ctx: &mut Ctx<'_>, who: &Principal, name: &str, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let items = parse_items(body, REWRAP_FIELDS, "ciphertext")?;
    let none = no_context(&items)?;
    let versions = check_versions(ctx, who, name, &items.items)?;
    let tokens: Vec<Result<String, ItemError>> =
        tokens_of(name, &items.items)?.into_iter().zip(versions).map(|(t, v)| v.and(t)).collect();
    let contexts: Vec<Result<Option<String>, ItemError>> = items.items.iter().map(context_of).collect();
    let mut results = by_context(ctx, items.items.len(), &contexts, |ctx, members, c| {
        on_tokens(&tokens, members, |good| ops::rewrap_in(ctx, who, Some(name), good, None, c))
    })?;
    require_context(ctx, name, none, &mut results, |i| tokens[i].is_err());
    let results = results
        .into_iter()
        .map(|r| match r.map(|t| format::from_token(&t)) {
            Ok(Some((ciphertext, v))) => Ok(Out::Cipher { ciphertext, key_version: v.get() }),
            Ok(None) => Err(item_message(&ItemError::DECRYPTION_FAILED)),
            Err(e) => Err(item_message(&e)),
        })
        .collect();
    // Transit answers a rewrap batch with 200 whatever its items did.
    answer(ctx, &items, results, false, true)
}

/// What `POST datakey/{type}/{name}` parsed to.
pub(super) struct DataKeyInput {
    pub(super) bits: u64,
    pub(super) context: Option<String>,
    body: Map<String, Value>,
    warnings: Vec<String>,
}

/// Reads the body of `POST datakey/{type}/{name}`: its whole parsing, before any operation.
pub(super) fn parse_datakey(body: &[u8]) -> Result<DataKeyInput, ApiError> {
    let m = body_map(body)?;
    let warnings = ignored(&m, &["context", "nonce", "bits", "key_version"]);
    if m.get("nonce").is_some_and(|n| !n.is_null() && n.as_str() != Some("")) {
        return Err(ApiError::new(
            400,
            "invalid_request",
            "`nonce` is not supported: Veil draws every nonce itself",
        ));
    }
    let bits = uint_field(&m, "bits", 4096)?.unwrap_or(256);
    if ![128, 256, 512].contains(&bits) {
        return Err(ApiError::new(400, "invalid_request", "invalid bits value: 128, 256 or 512"));
    }
    let context = context_of(&m).map_err(|e| ApiError::new(400, "invalid_request", e.message))?;
    key_version(&m)?;
    Ok(DataKeyInput { bits, context, body: m, warnings })
}

fn datakey(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    with_plaintext: bool,
    body: &[u8],
) -> Result<ApiResponse, ApiError> {
    let DataKeyInput { bits, context, body: m, warnings } = parse_datakey(body)?;
    let check = check_versions(ctx, who, name, std::slice::from_ref(&m))?;
    if let Some(Err(e)) = check.into_iter().next() {
        return Err(ApiError::new(400, "invalid_request", e.message));
    }
    let mut key = Zeroizing::new(vec![0u8; (bits / 8) as usize]);
    ctx.rng.fill(&mut key);
    let mut values = [Ok(key.to_vec())];
    let protected = ops::protect(ctx, who, name, &values, None, context.as_deref());
    // the copy handed to protect is key material too
    values.iter_mut().flatten().for_each(zeroize::Zeroize::zeroize);
    let (version, tokens) = protected.map_err(not_found_is_400)?;
    if context.is_none() && ctx.audit.context_required(name) {
        ctx.audit.items(1, 1);
        return Err(ApiError::new(
            400,
            ItemError::CONTEXT_REQUIRED.code,
            ItemError::CONTEXT_REQUIRED.message,
        ));
    }
    ctx.audit.items(1, 0);
    let token = tokens
        .into_iter()
        .next()
        .ok_or_else(ApiError::internal)?
        .map_err(|e| ApiError::new(400, e.code, e.message))?;
    let (ct, _) = format::from_token(&token).ok_or_else(ApiError::internal)?;
    let mut data = json!({"ciphertext": ct, "key_version": version.get()});
    if with_plaintext {
        data["plaintext"] = json!(STANDARD.encode(&key[..]));
    }
    Ok(envelope(ctx, 200, &data, &warnings))
}

/// The HMAC algorithm of a route: only `sha2-256` (Transit's default).
fn check_hmac_algorithm(path: Option<&str>, m: &Map<String, Value>) -> Result<(), ApiError> {
    let body = match str_field(m, "algorithm")? {
        Some(a) => Some(a),
        None => str_field(m, "hash_algorithm")?,
    };
    match path.or(body) {
        None | Some("sha2-256") => Ok(()),
        Some(_) => Err(ApiError::new(
            400,
            "invalid_request",
            "unsupported algorithm: Veil computes sha2-256 HMACs only",
        )),
    }
}

pub(super) const HMAC_FIELDS: &[&str] = &["input", "key_version", "reference", "hash_algorithm"];

fn hmac(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    alg: Option<&str>,
    body: &[u8],
) -> Result<ApiResponse, ApiError> {
    check_hmac_algorithm(alg, &body_map(body)?)?;
    let items = parse_items(body, HMAC_FIELDS, "input")?;
    let top = body_map(body)?;
    let version = key_version(&top)?;
    let inputs: Vec<Result<Vec<u8>, ItemError>> = items.items.iter().map(|m| b64_of(m, "input")).collect();
    let (version, macs) = ops::transit_hmac(ctx, who, name, version, &inputs).map_err(not_found_is_400)?;
    let results = macs
        .into_iter()
        .map(|r| match r {
            Ok(mac) => Ok(Out::Hmac { hmac: format::encode(version, &mac) }),
            Err(e) => Err(item_message(&e)),
        })
        .collect();
    answer(ctx, &items, results, false, true)
}

pub(super) const VERIFY_FIELDS: &[&str] =
    &["input", "hmac", "signature", "reference", "signature_algorithm", "hash_algorithm"];

fn verify(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    alg: Option<&str>,
    body: &[u8],
) -> Result<ApiResponse, ApiError> {
    check_hmac_algorithm(alg, &body_map(body)?)?;
    let items = parse_items(body, VERIFY_FIELDS, "input")?;
    let mut checks = Vec::with_capacity(items.items.len());
    for m in &items.items {
        if m.get("signature").is_some_and(|s| !s.is_null()) {
            return Err(ApiError::new(
                400,
                "invalid_request",
                "Veil's Transit keys do not sign: verify takes `hmac`",
            ));
        }
        let mac = match m.get("hmac") {
            Some(Value::String(s)) => format::parse_hmac(s).map_err(|_| ItemError::INVALID_HMAC),
            None | Some(Value::Null) => Err(ItemError::MISSING_FIELD),
            Some(_) => Err(ItemError::INVALID_HMAC),
        };
        checks.push(VerifyItem { input: b64_of(m, "input"), mac });
    }
    let valid = ops::transit_verify(ctx, who, name, &checks).map_err(not_found_is_400)?;
    let results = valid
        .into_iter()
        .map(|r| match r {
            Ok(valid) => Ok(Out::Valid { valid }),
            Err(e) => Err(item_message(&e)),
        })
        .collect();
    answer(ctx, &items, results, false, true)
}

/// The most random bytes one call returns.
const MAX_RANDOM_BYTES: u64 = 16 * 1024;

/// Reads `random[/{source}][/{bytes}]` and its body: the byte count, whether hex, the warnings.
pub(super) fn parse_random(
    source: Option<&str>,
    path_bytes: Option<&str>,
    body: &[u8],
) -> Result<(u64, bool, Vec<String>), ApiError> {
    let m = body_map(body)?;
    let warnings = ignored(&m, &["bytes", "format", "source"]);
    match source.or(str_field(&m, "source")?) {
        None | Some("platform") | Some("all") => {}
        Some(_) => return Err(ApiError::new(400, "invalid_request", "source is platform or all")),
    }
    let n = match path_bytes {
        Some(p) => p.parse::<u64>().ok().filter(|n| *n <= MAX_RANDOM_BYTES).ok_or_else(|| {
            ApiError::new(
                400,
                "invalid_request",
                format!("the byte count is a whole number from 1 to {MAX_RANDOM_BYTES}"),
            )
        })?,
        None => uint_field(&m, "bytes", MAX_RANDOM_BYTES)?.unwrap_or(32),
    };
    if n == 0 {
        return Err(ApiError::new(400, "invalid_request", "the byte count must be at least 1"));
    }
    Ok((n, output_format(&m)?, warnings))
}

fn random(
    ctx: &mut Ctx<'_>,
    source: Option<&str>,
    path_bytes: Option<&str>,
    body: &[u8],
) -> Result<ApiResponse, ApiError> {
    let (n, hex, warnings) = parse_random(source, path_bytes, body)?;
    let mut bytes = Zeroizing::new(vec![0u8; n as usize]);
    ctx.rng.fill(&mut bytes);
    let out = if hex { to_hex(&bytes) } else { STANDARD.encode(&bytes[..]) };
    Ok(envelope(ctx, 200, &json!({ "random_bytes": out }), &warnings))
}

/// `format`: `base64` (default; `hex` when `hex_default`) or `hex`. True for hex.
fn output_format_with(m: &Map<String, Value>, hex_default: bool) -> Result<bool, ApiError> {
    match str_field(m, "format")? {
        None => Ok(hex_default),
        Some("hex") => Ok(true),
        Some("base64") => Ok(false),
        Some(_) => Err(ApiError::new(400, "invalid_request", "unsupported encoding format: hex or base64")),
    }
}

fn output_format(m: &Map<String, Value>) -> Result<bool, ApiError> {
    output_format_with(m, false)
}

fn to_hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(char::from(DIGITS[usize::from(x >> 4)]));
        s.push(char::from(DIGITS[usize::from(x & 15)]));
    }
    s
}

/// Computes `hash[/{algorithm}]` of its body: the digest as sent back, and the warnings (no key
/// is involved, so the whole route is its parsing).
pub(super) fn parse_hash(
    path_alg: Option<&str>,
    body: &[u8],
    max_value_bytes: usize,
) -> Result<(String, Vec<String>), ApiError> {
    let m = body_map(body)?;
    let warnings = ignored(&m, &["input", "algorithm", "format"]);
    let input = match b64_of(&m, "input") {
        Ok(i) => i,
        Err(e) if e == ItemError::MISSING_FIELD => {
            return Err(ApiError::new(400, "invalid_request", "missing `input`"));
        }
        Err(e) => return Err(ApiError::new(400, "invalid_request", e.message)),
    };
    if input.len() > max_value_bytes {
        return Err(ApiError::new(400, "invalid_request", ItemError::VALUE_TOO_LARGE.message));
    }
    let sum: Vec<u8> = match path_alg.or(str_field(&m, "algorithm")?).unwrap_or("sha2-256") {
        "sha2-224" => sha2::Sha224::digest(&input).to_vec(),
        "sha2-256" => sha2::Sha256::digest(&input).to_vec(),
        "sha2-384" => sha2::Sha384::digest(&input).to_vec(),
        "sha2-512" => sha2::Sha512::digest(&input).to_vec(),
        _ => {
            return Err(ApiError::new(
                400,
                "invalid_request",
                "unsupported algorithm: sha2-224, sha2-256, sha2-384 or sha2-512",
            ))
        }
    };
    let hex = output_format_with(&m, true)?;
    let out = if hex { to_hex(&sum) } else { STANDARD.encode(&sum) };
    Ok((out, warnings))
}

fn hash(ctx: &mut Ctx<'_>, path_alg: Option<&str>, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let (sum, warnings) = parse_hash(path_alg, body, ctx.config.limits.max_value_bytes)?;
    Ok(envelope(ctx, 200, &json!({ "sum": sum }), &warnings))
}

// ---------------------------------------------------------------------------------------------
// Keys

/// The key types Veil serves, in Transit's names.
fn key_type(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Aes256Gcm => "aes256-gcm96",
        Algorithm::ChaCha20Poly1305 => "chacha20-poly1305",
        Algorithm::XChaCha20Poly1305 => "xchacha20-poly1305",
    }
}

/// A Transit duration: whole seconds (a number or digits), or `<n>s|m|h|d` parts (`"24h"`,
/// `"1h30m"`). `0` turns rotation off (`Ok(None)`); otherwise at least an hour, as Transit requires.
fn parse_period(m: &Map<String, Value>) -> Result<Option<Option<RotationPeriod>>, ApiError> {
    let wrong = || {
        ApiError::new(
            400,
            "invalid_request",
            "auto_rotate_period is 0 (off) or from 1h to 3650d: seconds, or parts such as 24h, 30d, 1h30m",
        )
    };
    let secs: u64 = match m.get("auto_rotate_period") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(wrong)?,
        Some(Value::String(s)) if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() && s.len() <= 12 => {
            s.parse().map_err(|_| wrong())?
        }
        Some(Value::String(s)) if s.len() <= 32 => {
            let mut total: u64 = 0;
            let mut digits = String::new();
            for c in s.chars() {
                if c.is_ascii_digit() {
                    digits.push(c);
                    continue;
                }
                let unit = match c {
                    's' => 1,
                    'm' => 60,
                    'h' => 3600,
                    'd' => 86_400,
                    _ => return Err(wrong()),
                };
                let n: u64 = digits.parse().map_err(|_| wrong())?;
                total = total.saturating_add(n.saturating_mul(unit));
                digits.clear();
            }
            if !digits.is_empty() {
                return Err(wrong());
            }
            total
        }
        Some(_) => return Err(wrong()),
    };
    if secs == 0 {
        return Ok(Some(None));
    }
    if secs < 3600 {
        return Err(wrong());
    }
    RotationPeriod::from_secs(secs).map(|p| Some(Some(p))).ok_or_else(wrong)
}

/// Refuses the options Veil never offers: exported keys and plaintext backups.
fn refuse_export(m: &Map<String, Value>) -> Result<(), ApiError> {
    for field in ["exportable", "allow_plaintext_backup"] {
        if bool_field(m, field)? == Some(true) {
            return Err(ApiError::new(
                400,
                "export_not_supported",
                format!("`{field}` cannot be true: Veil never exports key material"),
            ));
        }
    }
    Ok(())
}

/// What `POST keys/{name}` parsed to.
pub(super) struct NewKey {
    pub(super) algorithm: Algorithm,
    /// `derived`: every data call must carry a context (the scheme's `context_required`).
    pub(super) derived: bool,
    pub(super) rotation_period: Option<RotationPeriod>,
    pub(super) warnings: Vec<String>,
}

/// Reads the body of `POST keys/{name}`: its whole parsing, before any operation.
pub(super) fn parse_new_key(body: &[u8]) -> Result<NewKey, ApiError> {
    let m = body_map(body)?;
    let warnings = ignored(
        &m,
        &[
            "type",
            "derived",
            "convergent_encryption",
            "exportable",
            "allow_plaintext_backup",
            "auto_rotate_period",
        ],
    );
    let algorithm = match str_field(&m, "type")?.unwrap_or("aes256-gcm96") {
        "aes256-gcm96" => Algorithm::Aes256Gcm,
        "chacha20-poly1305" => Algorithm::ChaCha20Poly1305,
        "xchacha20-poly1305" => Algorithm::XChaCha20Poly1305,
        _ => {
            return Err(ApiError::new(
                400,
                "unsupported_key_type",
                "unsupported key type: Veil's Transit keys are aes256-gcm96, chacha20-poly1305 or xchacha20-poly1305",
            ))
        }
    };
    if bool_field(&m, "convergent_encryption")? == Some(true) {
        return Err(ApiError::new(
            400,
            "convergent_encryption_not_supported",
            "convergent encryption is not supported: every Veil ciphertext has a random nonce",
        ));
    }
    refuse_export(&m)?;
    let derived = bool_field(&m, "derived")? == Some(true);
    let rotation_period = parse_period(&m)?.flatten();
    Ok(NewKey { algorithm, derived, rotation_period, warnings })
}

fn create_key(ctx: &mut Ctx<'_>, who: &Principal, name: &str, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let new = parse_new_key(body)?;
    let settings = ctx.config.transit.get().map_err(|e| ApiError::from(OpError::from(e)))?;
    let scheme = SchemeName::parse(name)
        .map_err(|e| ApiError::from(OpError::invalid_field(format!("key name: {e}"))))?;
    let spec = NewScheme {
        name: scheme,
        algorithm: new.algorithm,
        kek: settings.kek.clone(),
        policy: settings.policy.clone(),
        mask: MaskRule::Redact,
        rotation_period: new.rotation_period,
        audit: AuditMode::All,
        mask_on_deny: false,
        context_required: new.derived,
    };
    match ops::create_scheme(ctx, who, spec) {
        // Transit answers the creation of an existing key with that key, unchanged.
        Ok(_) | Err(OpError::SchemeExists(_)) => read_key(ctx, who, name, new.warnings),
        Err(e) => Err(e.into()),
    }
}

/// What `POST keys/{name}/config` parsed to: the change, `min_encryption_version` (checked
/// against the key, never stored: Veil encrypts with the latest version only), the warnings.
pub(super) struct ConfigInput {
    pub(super) change: SchemeChange,
    pub(super) min_encryption_version: Option<u64>,
    pub(super) warnings: Vec<String>,
}

/// Reads the body of `POST keys/{name}/config`: its whole parsing, before any operation.
pub(super) fn parse_config(body: &[u8]) -> Result<ConfigInput, ApiError> {
    let m = body_map(body)?;
    let warnings = ignored(
        &m,
        &[
            "min_decryption_version",
            "min_encryption_version",
            "deletion_allowed",
            "exportable",
            "allow_plaintext_backup",
            "auto_rotate_period",
        ],
    );
    refuse_export(&m)?;
    if bool_field(&m, "deletion_allowed")? == Some(true) {
        return Err(ApiError::new(
            400,
            "deletion_not_allowed",
            "deletion_allowed cannot be true: Veil erases a key through POST /v1/schemes/{name}/erase",
        ));
    }
    let min_encryption_version = uint_field(&m, "min_encryption_version", u64::from(u32::MAX))?;
    let min = match uint_field(&m, "min_decryption_version", u64::from(u32::MAX))? {
        None | Some(0) => None,
        Some(v) => Some(KeyVersion::new(v as u32).map_err(|_| ApiError::internal())?),
    };
    let change = SchemeChange {
        min_decryption_version: min,
        rotation_period: parse_period(&m)?,
        mask_on_deny: None,
        audit: None,
    };
    Ok(ConfigInput { change, min_encryption_version, warnings })
}

/// Checks a `min_encryption_version` against the key as Transit does (from 0 to the latest
/// version; when not 0, not below the minimum decryption version after this change). Veil
/// encrypts with the latest version only, which meets any such minimum, so it is not stored.
fn check_min_encryption_version(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    min_encryption: u64,
    change: &SchemeChange,
) -> Result<(), ApiError> {
    if min_encryption == 0 {
        return Ok(());
    }
    let s = ops::get_scheme(ctx, who, name)?;
    if min_encryption > u64::from(s.current_version.get()) {
        return Err(ApiError::new(
            400,
            "key_version_not_found",
            "cannot set min_encryption_version above the latest key version",
        ));
    }
    let min_decryption = change.min_decryption_version.unwrap_or(s.min_decryption_version);
    if min_encryption < u64::from(min_decryption.get()) {
        return Err(ApiError::new(
            400,
            "invalid_request",
            "cannot set min encryption/decryption values; min encryption version must be greater than or \
             equal to min decryption version",
        ));
    }
    Ok(())
}

fn config_key(ctx: &mut Ctx<'_>, who: &Principal, name: &str, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let ConfigInput { change, min_encryption_version, warnings } = parse_config(body)?;
    if let Some(v) = min_encryption_version {
        check_min_encryption_version(ctx, who, name, v, &change)?;
    }
    if change.min_decryption_version.is_some() || change.rotation_period.is_some() {
        match ops::update_scheme(ctx, who, name, &change) {
            Ok(_) => {}
            Err(OpError::KeyVersionNotFound(_)) => {
                return Err(ApiError::new(
                    400,
                    "key_version_not_found",
                    "cannot set min_decryption_version above the latest key version",
                ))
            }
            // a version at or above the asked minimum is destroyed (trimmed)
            Err(OpError::KeyVersionDestroyed(_)) => {
                return Err(ApiError::new(
                    400,
                    "key_version_destroyed",
                    "min decryption version should not be less then min available version",
                ))
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        // Nothing to change: the caller must still be allowed to administer the key.
        let s = ops::get_scheme(ctx, who, name)?;
        if !crate::policy::allows(who, &s.policy, crate::scheme::Operation::Admin) {
            return Err(OpError::forbidden("administering this key").into());
        }
    }
    read_key(ctx, who, name, warnings)
}

/// Reads the body of `POST keys/{name}/trim`: `min_available_version` and the warnings.
pub(super) fn parse_trim(body: &[u8]) -> Result<(u64, Vec<String>), ApiError> {
    let m = body_map(body)?;
    let warnings = ignored(&m, &["min_available_version"]);
    match uint_field(&m, "min_available_version", u64::from(u32::MAX))? {
        Some(v) => Ok((v, warnings)),
        None => Err(ApiError::new(400, "invalid_request", "missing min_available_version")),
    }
}

/// `keys/{name}/trim`: destroys the versions below `min_available_version` (Veil's version
/// destroy; docs/transit.md), with Transit's rules and messages.
fn trim_key(ctx: &mut Ctx<'_>, who: &Principal, name: &str, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let (min_available, warnings) = parse_trim(body)?;
    let message = match ops::schemes::trim_versions(ctx, who, name, min_available)? {
        Ok(_) => return read_key(ctx, who, name, warnings),
        Err(ops::schemes::TrimRefusal::Decremented) => "minimum available version cannot be decremented",
        Err(ops::schemes::TrimRefusal::NotPositive) => "minimum available version should be positive",
        Err(ops::schemes::TrimRefusal::AboveMinDecryption) => {
            "minimum available version cannot be greater than minimum decryption version"
        }
    };
    Err(ApiError::new(400, "invalid_request", message))
}

fn list_keys(ctx: &mut Ctx<'_>, who: &Principal) -> Result<ApiResponse, ApiError> {
    let names: Vec<String> = ops::list_schemes(ctx, who)?
        .into_iter()
        .filter(|s| s.erased_at.is_none())
        .map(|s| s.name.as_str().to_owned())
        .collect();
    if names.is_empty() {
        return Err(ApiError::new(404, "not_found", "no keys"));
    }
    Ok(envelope(ctx, 200, &json!({ "keys": names }), &[]))
}

fn read_key(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    warnings: Vec<String>,
) -> Result<ApiResponse, ApiError> {
    let (scheme, versions) = ops::list_versions(ctx, who, name)?;
    if scheme.erased_at.is_some() {
        return Err(OpError::SchemeNotFound(scheme.name).into());
    }
    Ok(envelope(ctx, 200, &key_view(&scheme, &versions), &warnings))
}

/// A scheme as Transit shows a key. `keys` lists the versions that still decrypt (from
/// `min_decryption_version`, not destroyed) with their creation time, as Transit does.
fn key_view(s: &Scheme, versions: &[KeyVersionRecord]) -> Value {
    let min_available = ops::schemes::min_available_version(versions);
    let keys: Map<String, Value> = versions
        .iter()
        .filter(|r| r.key.version >= s.min_decryption_version && r.key.state == KeyState::Active)
        .map(|r| (r.key.version.get().to_string(), json!(r.key.created_at)))
        .collect();
    let mut view = json!({
        "allow_plaintext_backup": false,
        "auto_rotate_period": s.rotation_period.map_or(0, RotationPeriod::secs),
        "deletion_allowed": false,
        "derived": s.context_required,
        "exportable": false,
        "imported_key": false,
        "keys": keys,
        "latest_version": s.current_version.get(),
        "min_available_version": min_available,
        "min_decryption_version": s.min_decryption_version.get(),
        "min_encryption_version": 0,
        "name": s.name.as_str(),
        "soft_deleted": false,
        "supports_decryption": true,
        "supports_derivation": true,
        "supports_encryption": true,
        "supports_signing": false,
        "type": key_type(s.algorithm),
    });
    // Transit shows these two for derived keys only. Veil's key is HKDF-SHA256-derived from the
    // data key; the context is bound into each ciphertext (docs/transit.md, "Context").
    if let (true, Some(o)) = (s.context_required, view.as_object_mut()) {
        o.insert("convergent_encryption".into(), json!(false));
        o.insert("kdf".into(), json!("hkdf_sha256"));
    }
    view
}
