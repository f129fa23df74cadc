//! Entry points for the fuzz targets (`fuzz/`, docs/testing.md "Fuzzing"): the body parsing of
//! every route that takes a JSON body, exactly as its handler runs it (the same functions), and
//! nothing after it (no authentication, store or key). Compiled only with the `fuzzing` feature,
//! which nothing but `fuzz/` turns on, and for the unit tests (which hold [`BodyRoute::ALL`] to
//! the OpenAPI document); it is not part of Veil's interface.

use super::data::{self, RewrapBody, UnprotectBody};
use super::error::ApiError;
use super::rows::{OnError, RowOp};
use super::{bigquery, jobs, keys, parse, schemes, snowflake, subjects, transit};
use crate::ops::{NewJob, NewScheme};
use crate::scheme::KekRef;

/// A route that reads a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRoute {
    /// `POST /v1/schemes`
    CreateScheme,
    /// `POST /v1/protect`
    Protect,
    /// `POST /v1/unprotect`
    Unprotect,
    /// `POST /v1/mask`
    Mask,
    /// `POST /v1/rewrap`
    Rewrap,
    /// `PATCH /v1/schemes/{name}`
    UpdateScheme,
    /// `POST /v1/schemes/{name}/rekey`
    Rekey,
    /// `POST /v1/schemes/{name}/erase`
    EraseScheme,
    /// `POST /v1/tenant/erase`
    EraseTenant,
    /// `POST /v1/subjects/erase`
    EraseSubjects,
    /// `POST /v1/jobs`
    CreateJob,
    /// `POST /v1/jobs/{id}/step`
    JobStep,
    /// `POST /v1/jobs/{id}/cancel`
    JobCancel,
    /// `POST /v1/snowflake/{operation}`
    Snowflake,
    /// `POST /v1/snowflake/{operation}/{scheme}` (the same body as [`BodyRoute::Snowflake`])
    SnowflakeScheme,
    /// `POST /v1/bigquery`
    BigQuery,
    /// `POST /v1/api-keys`
    CreateApiKey,
    /// `POST /v1/transit/keys/{name}` (docs/transit.md; the default mount)
    TransitCreateKey,
    /// `POST /v1/transit/keys/{name}/config`
    TransitConfigKey,
    /// `POST /v1/transit/encrypt/{name}`
    TransitEncrypt,
    /// `POST /v1/transit/decrypt/{name}`
    TransitDecrypt,
    /// `POST /v1/transit/rewrap/{name}`
    TransitRewrap,
    /// `POST /v1/transit/datakey/{type}/{name}`
    TransitDataKey,
    /// `POST /v1/transit/hmac/{name}`
    TransitHmac,
    /// `POST /v1/transit/verify/{name}`
    TransitVerify,
    /// `POST /v1/transit/random`
    TransitRandom,
    /// `POST /v1/transit/hash`
    TransitHash,
    /// `POST /v1/transit/keys/{name}/trim`
    TransitTrimKey,
}

impl BodyRoute {
    /// Every route with a JSON body (`rotate`, `versions/{v}/destroy` and
    /// `subjects/{id}/erase` read none); the unit test `fuzzing_covers_every_body_route` holds
    /// this to src/api/openapi.json. New routes go last, so that a seed's first byte keeps its route.
    pub const ALL: [BodyRoute; 28] = [
        BodyRoute::CreateScheme,
        BodyRoute::Protect,
        BodyRoute::Unprotect,
        BodyRoute::Mask,
        BodyRoute::Rewrap,
        BodyRoute::UpdateScheme,
        BodyRoute::Rekey,
        BodyRoute::EraseScheme,
        BodyRoute::EraseTenant,
        BodyRoute::EraseSubjects,
        BodyRoute::CreateJob,
        BodyRoute::JobStep,
        BodyRoute::JobCancel,
        BodyRoute::Snowflake,
        BodyRoute::SnowflakeScheme,
        BodyRoute::BigQuery,
        BodyRoute::CreateApiKey,
        BodyRoute::TransitCreateKey,
        BodyRoute::TransitConfigKey,
        BodyRoute::TransitEncrypt,
        BodyRoute::TransitDecrypt,
        BodyRoute::TransitRewrap,
        BodyRoute::TransitDataKey,
        BodyRoute::TransitHmac,
        BodyRoute::TransitVerify,
        BodyRoute::TransitRandom,
        BodyRoute::TransitHash,
        BodyRoute::TransitTrimKey,
    ];

    /// The method and path, as in docs/api.md.
    pub fn name(self) -> &'static str {
        match self {
            BodyRoute::CreateScheme => "POST /v1/schemes",
            BodyRoute::Protect => "POST /v1/protect",
            BodyRoute::Unprotect => "POST /v1/unprotect",
            BodyRoute::Mask => "POST /v1/mask",
            BodyRoute::Rewrap => "POST /v1/rewrap",
            BodyRoute::UpdateScheme => "PATCH /v1/schemes/{name}",
            BodyRoute::Rekey => "POST /v1/schemes/{name}/rekey",
            BodyRoute::EraseScheme => "POST /v1/schemes/{name}/erase",
            BodyRoute::EraseTenant => "POST /v1/tenant/erase",
            BodyRoute::EraseSubjects => "POST /v1/subjects/erase",
            BodyRoute::CreateJob => "POST /v1/jobs",
            BodyRoute::JobStep => "POST /v1/jobs/{id}/step",
            BodyRoute::JobCancel => "POST /v1/jobs/{id}/cancel",
            BodyRoute::Snowflake => "POST /v1/snowflake/{operation}",
            BodyRoute::SnowflakeScheme => "POST /v1/snowflake/{operation}/{scheme}",
            BodyRoute::BigQuery => "POST /v1/bigquery",
            BodyRoute::CreateApiKey => "POST /v1/api-keys",
            BodyRoute::TransitCreateKey => "POST /v1/transit/keys/{name}",
            BodyRoute::TransitConfigKey => "POST /v1/transit/keys/{name}/config",
            BodyRoute::TransitEncrypt => "POST /v1/transit/encrypt/{name}",
            BodyRoute::TransitDecrypt => "POST /v1/transit/decrypt/{name}",
            BodyRoute::TransitRewrap => "POST /v1/transit/rewrap/{name}",
            BodyRoute::TransitDataKey => "POST /v1/transit/datakey/{type}/{name}",
            BodyRoute::TransitHmac => "POST /v1/transit/hmac/{name}",
            BodyRoute::TransitVerify => "POST /v1/transit/verify/{name}",
            BodyRoute::TransitRandom => "POST /v1/transit/random",
            BodyRoute::TransitHash => "POST /v1/transit/hash",
            BodyRoute::TransitTrimKey => "POST /v1/transit/keys/{name}/trim",
        }
    }
}

/// What a body parsed to: what the handler hands to the operation.
pub enum Parsed {
    Scheme(NewScheme),
    /// Each value decoded, or the item error code of one that does not decode.
    Protect {
        scheme: String,
        values: Vec<Result<Vec<u8>, &'static str>>,
        subject: Option<String>,
        context: Option<String>,
    },
    Unprotect {
        scheme: Option<String>,
        values: Vec<String>,
        subject: Option<String>,
        context: Option<String>,
        base64: bool,
    },
    Mask {
        scheme: String,
        values: Vec<String>,
    },
    Rewrap {
        scheme: Option<String>,
        values: Vec<String>,
        subject: Option<String>,
        context: Option<String>,
    },
    /// A valid change (what it changes is the operation's business).
    UpdateScheme,
    Rekey(Option<KekRef>),
    /// The `confirm` of a scheme or tenant erasure (`None`: none given, or an empty body).
    Confirm(Option<String>),
    EraseSubjects(Vec<String>),
    Job(NewJob),
    /// A job step or cancel: no fields.
    NoFields,
    /// Snowflake's rows: each row number as sent and its value (`None` for `NULL`).
    Snowflake(Vec<(serde_json::Number, Option<String>)>),
    /// An API key's label, roles and expiry (Unix seconds).
    ApiKey {
        label: String,
        roles: Vec<String>,
        expires_at: Option<i64>,
    },
    BigQuery {
        /// The operation's name as `user_defined_context.operation` spells it.
        operation: &'static str,
        scheme: String,
        fail: bool,
        values: Vec<Option<String>>,
    },
    /// A Transit body: how many items it holds (1 unless it has `batch_input`).
    Transit(usize),
}

/// Parses `body` as `route`'s handler does.
pub fn parse_body(route: BodyRoute, body: &[u8]) -> Result<Parsed, ApiError> {
    Ok(match route {
        BodyRoute::CreateScheme => Parsed::Scheme(schemes::parse_new_scheme(body)?),
        BodyRoute::Protect => {
            let p = data::protect_input(body)?;
            let values = p.values.into_iter().map(|v| v.map_err(|e| e.code)).collect();
            Parsed::Protect { scheme: p.scheme, values, subject: p.subject, context: p.context }
        }
        BodyRoute::Unprotect => {
            let b: UnprotectBody = parse(body)?;
            let base64 = b.encoding == data::Encoding::Base64;
            Parsed::Unprotect {
                scheme: b.scheme,
                values: b.values,
                subject: b.subject,
                context: b.context,
                base64,
            }
        }
        BodyRoute::Mask => {
            let b: data::MaskBody = parse(body)?;
            Parsed::Mask { scheme: b.scheme, values: b.values }
        }
        BodyRoute::Rewrap => {
            let b: RewrapBody = parse(body)?;
            Parsed::Rewrap { scheme: b.scheme, values: b.values, subject: b.subject, context: b.context }
        }
        BodyRoute::UpdateScheme => {
            schemes::parse_change(body)?;
            Parsed::UpdateScheme
        }
        BodyRoute::Rekey => Parsed::Rekey(schemes::rekey_kek(body)?),
        BodyRoute::EraseScheme | BodyRoute::EraseTenant => Parsed::Confirm(subjects::confirm(body)?),
        BodyRoute::EraseSubjects => Parsed::EraseSubjects(subjects::bulk_subjects(body)?),
        BodyRoute::CreateJob => Parsed::Job(jobs::parse_create(body)?),
        BodyRoute::CreateApiKey => {
            let (label, roles, expires_at) = keys::parse_create(body)?;
            Parsed::ApiKey { label, roles: roles.into_iter().collect(), expires_at }
        }
        BodyRoute::JobStep | BodyRoute::JobCancel => {
            jobs::no_fields(body)?;
            Parsed::NoFields
        }
        BodyRoute::TransitCreateKey => {
            transit::parse_new_key(body)?;
            Parsed::Transit(1)
        }
        BodyRoute::TransitConfigKey => {
            transit::parse_config(body)?;
            Parsed::Transit(1)
        }
        BodyRoute::TransitTrimKey => {
            transit::parse_trim(body)?;
            Parsed::Transit(1)
        }
        BodyRoute::TransitEncrypt => {
            Parsed::Transit(transit::parse_items(body, transit::ENCRYPT_FIELDS, "plaintext")?.items.len())
        }
        BodyRoute::TransitDecrypt => {
            Parsed::Transit(transit::parse_items(body, transit::DECRYPT_FIELDS, "ciphertext")?.items.len())
        }
        BodyRoute::TransitRewrap => {
            Parsed::Transit(transit::parse_items(body, transit::REWRAP_FIELDS, "ciphertext")?.items.len())
        }
        BodyRoute::TransitDataKey => {
            transit::parse_datakey(body)?;
            Parsed::Transit(1)
        }
        BodyRoute::TransitHmac => {
            Parsed::Transit(transit::parse_items(body, transit::HMAC_FIELDS, "input")?.items.len())
        }
        BodyRoute::TransitVerify => {
            Parsed::Transit(transit::parse_items(body, transit::VERIFY_FIELDS, "input")?.items.len())
        }
        BodyRoute::TransitRandom => {
            transit::parse_random(None, None, body)?;
            Parsed::Transit(1)
        }
        BodyRoute::TransitHash => {
            transit::parse_hash(None, body, crate::config::Limits::default().max_value_bytes)?;
            Parsed::Transit(1)
        }
        BodyRoute::Snowflake | BodyRoute::SnowflakeScheme => Parsed::Snowflake(snowflake::parse_rows(body)?),
        BodyRoute::BigQuery => {
            let b = bigquery::parse_batch(body)?;
            let operation = match b.op {
                RowOp::Protect => "protect",
                RowOp::Unprotect => "unprotect",
                RowOp::Rewrap => "rewrap",
                RowOp::Mask => "mask",
            };
            Parsed::BigQuery {
                operation,
                scheme: b.scheme,
                fail: b.on_error == OnError::Fail,
                values: b.values,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::BodyRoute;
    use serde_json::Value;
    use std::collections::BTreeSet;

    /// Every POST or PATCH of openapi.json that declares a request body is a [`BodyRoute`], and
    /// every [`BodyRoute`] is a POST or PATCH of the document (step and cancel read an optional
    /// `{}` that the document does not declare, so they are only held to the second half).
    #[test]
    fn fuzzing_covers_every_body_route() {
        let doc: Value = serde_json::from_str(crate::api::OPENAPI).expect("openapi is JSON");
        let paths = doc["paths"].as_object().expect("paths");
        let mut with_body = BTreeSet::new();
        let mut operations = BTreeSet::new();
        for (path, item) in paths {
            for method in ["post", "patch"] {
                if let Some(op) = item.get(method) {
                    let name = format!("{} {path}", method.to_uppercase());
                    if op.get("requestBody").is_some() {
                        with_body.insert(name.clone());
                    }
                    operations.insert(name);
                }
            }
        }
        let covered: BTreeSet<String> = BodyRoute::ALL.iter().map(|r| r.name().to_owned()).collect();
        assert_eq!(covered.len(), BodyRoute::ALL.len(), "a route is listed twice");
        let missing: Vec<&String> = with_body.difference(&covered).collect();
        assert!(missing.is_empty(), "body routes the fuzz target does not reach: {missing:?}");
        let unknown: Vec<&String> = covered.difference(&operations).collect();
        assert!(unknown.is_empty(), "BodyRoute names not in openapi.json: {unknown:?}");
        // the document's own count, so that an empty reading cannot pass
        assert_eq!(with_body.len(), 26, "{with_body:?}");
    }
}
