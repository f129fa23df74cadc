//! `/v1/jobs…`: bulk re-encryption jobs over customer tables (docs/api.md "Jobs",
//! docs/rotation.md "Converting a table"). Tenant role `admin` only.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{non_null, parse, ApiResponse};

use crate::auth::Principal;
use crate::ops::{self, Ctx, JobView, NewJob};
use crate::store::JobState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    scheme: String,
    database: String,
    table: String,
    key_column: String,
    token_column: String,
    #[serde(default, deserialize_with = "non_null")]
    subject_column: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    context: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    batch_size: Option<i64>,
    #[serde(default, deserialize_with = "whole_number")]
    target_version: Option<i64>,
}

/// A JSON integer, also when written with a zero fraction (`500.0`), as JSON Schema's `integer`
/// allows; anything else (a fraction, a string, `null`) is the wrong type (400 `invalid_request`).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
        _ => Err(serde::de::Error::custom("expected a whole number")),
    }
}

/// A step or cancel takes no fields: an empty body or `{}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

pub(super) fn no_fields(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let _: EmptyBody = parse(body)?;
    Ok(())
}

fn rfc3339(t: Option<i64>) -> Value {
    t.map_or(Value::Null, |t| Value::String(crate::clock::rfc3339(t)))
}

fn show(v: &JobView) -> Value {
    let j = &v.job;
    let mut out = json!({
        "id": j.id,
        "state": j.state.as_str(),
        "scheme": j.scheme,
        "target_version": j.target_version,
        "database": j.database,
        "table": j.table,
        "key_column": j.key_column,
        "token_column": j.token_column,
        "batch_size": j.batch_size,
        "total": j.total,
        "done": j.done,
        "failed": j.failed,
        "remaining": v.remaining,
        "rows_per_second": (v.rows_per_second * 10.0).round() / 10.0,
        "eta_seconds": v.eta_seconds,
        "created_at": rfc3339(Some(j.created_at)),
        "started_at": rfc3339(j.started_at),
        "finished_at": rfc3339(j.finished_at),
    });
    if let Some(s) = &j.subject_column {
        out["subject_column"] = json!(s);
    }
    if let Some(c) = &j.context {
        out["context"] = json!(c);
    }
    if j.state == JobState::Finished {
        let below = j.rows_below_target.unwrap_or(0);
        out["report"] = json!({"rows_below_target": below, "safe_to_retire": below == 0});
    }
    out
}

/// The body of `POST /v1/jobs` as the job it asks for.
pub(super) fn parse_create(body: &[u8]) -> Result<NewJob, ApiError> {
    let b: CreateBody = parse(body)?;
    Ok(NewJob {
        scheme: b.scheme,
        database: b.database,
        table: b.table,
        key_column: b.key_column,
        token_column: b.token_column,
        subject_column: b.subject_column,
        context: b.context,
        batch_size: b.batch_size,
        target_version: b.target_version,
    })
}

pub(super) fn create(ctx: &mut Ctx<'_>, who: &Principal, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let new = parse_create(body)?;
    let v = ops::create_job(ctx, who, new)?;
    Ok(ApiResponse::json(201, &show(&v)))
}

pub(super) fn get(ctx: &mut Ctx<'_>, who: &Principal, id: &str) -> Result<ApiResponse, ApiError> {
    let v = ops::get_job(ctx, who, id)?;
    Ok(ApiResponse::json(200, &show(&v)))
}

pub(super) fn step(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    id: &str,
    body: &[u8],
) -> Result<ApiResponse, ApiError> {
    no_fields(body)?;
    let s = ops::step_job(ctx, who, id)?;
    Ok(ApiResponse::json(
        200,
        &json!({"done": s.done, "failed": s.failed, "remaining": s.remaining, "state": s.state.as_str()}),
    ))
}

pub(super) fn cancel(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    id: &str,
    body: &[u8],
) -> Result<ApiResponse, ApiError> {
    no_fields(body)?;
    let v = ops::cancel_job(ctx, who, id)?;
    Ok(ApiResponse::json(200, &show(&v)))
}

pub(super) fn failures(ctx: &mut Ctx<'_>, who: &Principal, id: &str) -> Result<ApiResponse, ApiError> {
    let rows = ops::job_failures(ctx, who, id, None)?;
    let truncated = rows.len() as i64 >= ops::jobs::FAILURES_PAGE;
    let failures: Vec<Value> =
        rows.into_iter().map(|(key, code)| json!({"key": key, "code": code})).collect();
    Ok(ApiResponse::json(200, &json!({"failures": failures, "truncated": truncated})))
}
