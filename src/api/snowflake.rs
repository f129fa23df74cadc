//! Snowflake external functions (docs/snowflake.md): `POST /v1/snowflake/{operation}[/{scheme}]`
//! with Snowflake's batch format, `{"data": [[row_number, value], ...]}` in and
//! `{"data": [[row_number, result], ...]}` out, row numbers and order kept.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::rows::{self, OnError, RowOp};
use super::{parse, ApiRequest, ApiResponse};
use crate::auth::Principal;
use crate::ops::Ctx;

/// The header Snowflake sends for `HEADERS = ('scheme' = '...')` in `CREATE EXTERNAL FUNCTION`.
pub(super) const SCHEME_HEADER: &str = "sf-custom-scheme";
/// The header for `HEADERS = ('on-error' = 'fail')`.
pub(super) const ON_ERROR_HEADER: &str = "sf-custom-on-error";

/// Snowflake's request body; other top-level fields are tolerated.
#[derive(Debug, Deserialize)]
struct Body {
    /// Each row: its row number and the function's one argument (`null` for SQL `NULL`).
    data: Vec<(RowNumber, Option<String>)>,
}

/// A row number, 0 to 4294967295, answered exactly as it was sent. JSON Schema's `integer` also
/// admits an integral number written with a fraction (`3.0`), so that is read too.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "serde_json::Number")]
struct RowNumber(serde_json::Number);

impl TryFrom<serde_json::Number> for RowNumber {
    type Error = &'static str;
    fn try_from(n: serde_json::Number) -> Result<Self, Self::Error> {
        const MAX: u64 = u32::MAX as u64;
        let ok = match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u <= MAX,
            (None, Some(f)) => f.fract() == 0.0 && (0.0..=MAX as f64).contains(&f),
            (None, None) => false,
        };
        if ok {
            Ok(RowNumber(n))
        } else {
            Err("a row number from 0 to 4294967295")
        }
    }
}

/// The rows of a Snowflake batch: each row number as sent and its value (`None` for `NULL`).
pub(super) fn parse_rows(body: &[u8]) -> Result<Vec<(serde_json::Number, Option<String>)>, ApiError> {
    let b: Body = parse(body)?;
    Ok(b.data.into_iter().map(|(n, v)| (n.0, v)).collect())
}

pub(super) fn call(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    req: &ApiRequest<'_>,
    op: RowOp,
    path_scheme: Option<&str>,
) -> Result<ApiResponse, ApiError> {
    let scheme = match (path_scheme, req.header(SCHEME_HEADER)) {
        (Some(p), Some(h)) if p != h => {
            return Err(ApiError::new(
                400,
                "invalid_request",
                format!("the path and the {SCHEME_HEADER} header name different schemes"),
            ))
        }
        (Some(p), _) => p,
        (None, Some(h)) => h,
        (None, None) => {
            return Err(ApiError::new(
                400,
                "invalid_request",
                format!(
                "name the scheme in the path or the {SCHEME_HEADER} header (HEADERS = ('scheme' = '...'))"
            ),
            ))
        }
    };
    let on_error = OnError::parse(req.header(ON_ERROR_HEADER), ON_ERROR_HEADER)?;
    let data = parse_rows(req.body)?;
    let values: Vec<Option<String>> = data.iter().map(|(_, v)| v.clone()).collect();
    let results = rows::finish(rows::run(ctx, who, op, scheme, &values)?, on_error)?;
    let data: Vec<Value> = data.iter().zip(results).map(|((n, _), r)| json!([n, r])).collect();
    Ok(ApiResponse::json(200, &json!({ "data": data })))
}
